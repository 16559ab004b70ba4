#!/usr/bin/env bash
# The local demo: a three-node overwatch cluster (examples/cluster/overwatch-{1,2,3}.yaml)
# and three agents (examples/cluster/agent-{1,2,3}.yaml) in front of three tiny HTTP
# backends on 127.0.0.1-3. Loopback, high ports, no root. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "scripts/demo.sh: python3 is needed for the demo backends" >&2; exit 1; }
cargo build --release --bins
bin=./target/release
state=/tmp/opengslb-demo
pids=()
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "demo stopped (state kept in $state; rm -rf $state to start afresh)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$state/www"
rm -f "$state"/drain-*
# Mutual TLS between the overwatch nodes: a cluster CA and one certificate per node, made
# once (as an operator would, with the CLI) and kept with the demo's state.
[ -f "$state/certs/node-3.key" ] || "$bin/opengslb-cli" cluster certs --out "$state/certs" --node 1 --node 2 --node 3 >/dev/null

wait_tcp() { # host port what
  for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('$1', $2), 0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "scripts/demo.sh: $3 did not start listening on $1:$2; see the output above" >&2
  exit 1
}

for i in 1 2 3; do
  python3 -m http.server "1808$i" --bind "127.0.0.$i" --directory "$state/www" >/dev/null 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do wait_tcp "127.0.0.$i" "1808$i" "backend $i"; done
for i in 1 2 3; do
  RUST_LOG=warn,openraft=off "$bin/opengslb-overwatch" --config "examples/cluster/overwatch-$i.yaml" &
  pids+=($!)
done
for i in 1 2 3; do wait_tcp 127.0.0.1 "80$(printf %02d "$i")" "overwatch-$i's API"; done
for i in 1 2 3; do
  RUST_LOG=warn "$bin/opengslb-agent" --config "examples/cluster/agent-$i.yaml" &
  pids+=($!)
done
for _ in $(seq 1 100); do
  [ "$(dig @127.0.0.1 -p 5301 app.gslb.test A +short 2>/dev/null | wc -l)" = 3 ] && break
  sleep 0.1
done
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
    $bin/opengslb-cli overrides set app 127.0.0.3:18083 --healthy=false --reason "try it"
    $bin/opengslb-cli overrides clear app 127.0.0.3:18083
  Lose a node: kill -9 the leader's process (ps -ef | grep opengslb-overwatch);
    the others elect a new leader and keep answering and taking writes.
  The HAProxy face: bash -c 'cat < /dev/tcp/127.0.0.1/7771'   (7772, 7773)
TXT
wait
