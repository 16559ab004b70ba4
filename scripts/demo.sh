#!/usr/bin/env bash
# The local demo: one overwatch node (examples/overwatch.yaml) in front of three tiny
# HTTP backends on 127.0.0.1-3, plus an opengslb-agent for HAProxy. All on loopback,
# high ports, no root. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
command -v python3 >/dev/null || { echo "scripts/demo.sh: python3 is needed for the demo backends" >&2; exit 1; }
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; echo "demo stopped"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p /tmp/opengslb-demo
for i in 1 2 3; do
  python3 -m http.server "1808$i" --bind "127.0.0.$i" --directory /tmp/opengslb-demo >/dev/null 2>&1 &
  pids+=($!)
done
# Start checking only once the backends listen, so the demo starts all green.
for i in 1 2 3; do
  for _ in $(seq 1 50); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.$i', 1808$i), 0.2)" 2>/dev/null && break
    sleep 0.1
  done
done
./target/release/opengslb-agent -port 7777 -drain-file /tmp/opengslb-demo/drain -maint-file /tmp/opengslb-demo/maint &
pids+=($!)
./target/release/opengslb-overwatch --config examples/overwatch.yaml &
pids+=($!)
sleep 1
cat <<TXT

OpenGSLB demo running (Ctrl-C to stop):
  dig @127.0.0.1 -p 5353 app.gslb.test A +short        # round-robin over healthy backends
  dig @127.0.0.1 -p 5353 geo.gslb.test A +subnet=10.1.0.0/16   # geolocation with ECS
  ./target/release/opengslb-cli servers                 # backends and why (API on :8080)
  curl -s 127.0.0.1:9090/metrics | grep opengslb_dns    # metrics
  kill one backend (e.g. pkill -f 'http.server 18082') and watch it leave the answers
  nc 127.0.0.1 7777; touch /tmp/opengslb-demo/drain; nc 127.0.0.1 7777   # the HAProxy agent
TXT
wait
