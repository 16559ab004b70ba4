#!/usr/bin/env bash
# The local demo: a three-node overwatch cluster (examples/cluster/overwatch-{1,2,3}.yaml)
# and three agents (examples/cluster/agent-{1,2,3}.yaml) in front of three tiny HTTP
# backends on 127.0.0.1-3. Loopback, high ports, no root. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "scripts/demo.sh: python3 is needed for the demo backends" >&2; exit 1; }
command -v dig >/dev/null || { echo "scripts/demo.sh: dig is needed to check the answers (apt-get install dnsutils)" >&2; exit 1; }
# OPENGSLB_DEMO_BIN=target/debug uses binaries already built (the tests do); the state
# directory is fixed by the example configs.
if [ -n "${OPENGSLB_DEMO_BIN:-}" ]; then
  bin=$OPENGSLB_DEMO_BIN
else
  cargo build --release --bins
  bin=./target/release
fi
state=/tmp/opengslb-demo
pids=()
names=()
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "demo stopped (state kept in $state; rm -rf $state to start afresh)"
}
fail() {
  echo "scripts/demo.sh: $*" >&2
  echo "scripts/demo.sh: the demo did NOT start; stopping what it started" >&2
  exit 1
}

# Every address the demo listens on must be free: a second demo (or anything else) on
# them would answer for this one, and the success banner would be a lie.
busy=$(python3 - examples/cluster/*.yaml <<'PY'
import re, socket, sys
addrs = set()
for path in sys.argv[1:]:
    addrs.update(re.findall(r'"(127\.0\.0\.\d+):(\d+)"', open(path).read()))
addrs.update((f"127.0.0.{i}", str(18080 + i)) for i in (1, 2, 3))
for host, port in sorted(addrs):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        if kind == socket.SOCK_STREAM:  # as the servers do: TIME_WAIT is not "in use"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            print(f"{host}:{port} ({'tcp' if kind == socket.SOCK_STREAM else 'udp'}: {e.strerror})")
            break
        finally:
            s.close()
PY
)
if [ -n "$busy" ]; then
  echo "scripts/demo.sh: these demo addresses are already in use; is another demo running? Stop it first:" >&2
  echo "$busy" | sed 's/^/  /' >&2
  exit 1
fi
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$state/www"
rm -f "$state"/drain-*
# Mutual TLS between the overwatch nodes: a cluster CA and one certificate per node, made
# once (as an operator would, with the CLI) and kept with the demo's state.
[ -f "$state/certs/node-3.key" ] || "$bin/opengslb-cli" cluster certs --out "$state/certs" --node 1 --node 2 --node 3 >/dev/null

started() { pids+=("$1"); names+=("$2"); }
# Every process the demo started must still be running.
check_alive() {
  local dead=() n
  for n in "${!pids[@]}"; do
    kill -0 "${pids[$n]}" 2>/dev/null || dead+=("${names[$n]}")
  done
  [ ${#dead[@]} -eq 0 ] || fail "exited: ${dead[*]}; see their output above"
}
wait_tcp() { # host port what
  for _ in $(seq 1 100); do
    check_alive
    python3 -c "import socket; socket.create_connection(('$1', $2), 0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$3 did not start listening on $1:$2; see the output above"
}

for i in 1 2 3; do
  python3 -m http.server "1808$i" --bind "127.0.0.$i" --directory "$state/www" >/dev/null 2>&1 &
  started $! "backend-$i"
done
for i in 1 2 3; do wait_tcp "127.0.0.$i" "1808$i" "backend $i"; done
for i in 1 2 3; do
  RUST_LOG=warn "$bin/opengslb-overwatch" --config "examples/cluster/overwatch-$i.yaml" &
  started $! "overwatch-$i"
done
for i in 1 2 3; do wait_tcp 127.0.0.1 "80$(printf %02d "$i")" "overwatch-$i's API"; done
for i in 1 2 3; do
  RUST_LOG=warn "$bin/opengslb-agent" --config "examples/cluster/agent-$i.yaml" &
  started $! "agent-$i"
done
for i in 1 2 3; do wait_tcp 127.0.0.1 "777$i" "agent-$i's agent-check"; done
# Ready means: every node has a quorum-backed view and answers all three backends.
for i in 1 2 3; do
  answered=""
  for _ in $(seq 1 150); do
    check_alive
    answered=$(dig @127.0.0.1 -p "530$i" app.gslb.test A +short +time=1 +tries=1 2>/dev/null | grep -E '^[0-9.]+$' | sort | tr '\n' ' ' || true)
    [ "$answered" = "127.0.0.1 127.0.0.2 127.0.0.3 " ] && break
    sleep 0.1
  done
  [ "$answered" = "127.0.0.1 127.0.0.2 127.0.0.3 " ] ||
    fail "overwatch-$i answers app.gslb.test with [${answered% }], not the three backends, after 15 s"
  ready=$(python3 - "http://127.0.0.1:80$(printf %02d "$i")/api/v1/ready" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError as e:
    print(f"{e.code} {e.read().decode(errors='replace')}")
except OSError as e:
    print(e)
PY
)
  [ -z "$ready" ] || fail "overwatch-$i is not ready (GET /api/v1/ready): $ready"
done
check_alive
cat <<TXT

OpenGSLB demo: 3 overwatch nodes, 3 agents, 3 backends (Ctrl-C stops everything)

  dig @127.0.0.1 -p 5301 app.gslb.test A +short      # nodes answer on 5301, 5302, 5303
  export OPENGSLB_API=http://127.0.0.1:8001 OPENGSLB_TOKEN=demo-api-token-0123456789
  Status page: http://127.0.0.1:8001/   (8002, 8003; paste the token to set overrides)
  $bin/opengslb-cli cluster status             # leader, term, members
  $bin/opengslb-cli servers                    # backends with every status layer

  Drain a backend (out of every node's DNS and HAProxy at once):
    touch $state/drain-2        # ready again: rm $state/drain-2
  Override one (replicated; outranks the agent):
    $bin/opengslb-cli overrides set app.gslb.test 127.0.0.3:18083 --healthy=false --reason "try it"
    $bin/opengslb-cli overrides clear app.gslb.test 127.0.0.3:18083
  Lose a node: kill -9 the leader's process (ps -ef | grep opengslb-overwatch);
    the others elect a new leader and keep answering and taking writes.
  The HAProxy face: bash -c 'cat < /dev/tcp/127.0.0.1/7771'   (7772, 7773)
TXT
wait
