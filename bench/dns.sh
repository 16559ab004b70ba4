#!/usr/bin/env bash
# DNS benchmark: overwatch vs gdnsd (GSLB plugin) in one run, same zone, three backends.
# Uses ../shared/bench/dns_anchor.sh (dnsperf on loopback; installs dnsperf and gdnsd).
#   bench/dns.sh            # 10 s per run; DUR=20 bench/dns.sh for longer runs
set -euo pipefail
cd "$(dirname "$0")/.."
ANCHOR=${ANCHOR:-../shared/bench/dns_anchor.sh}
[[ -x $ANCHOR ]] || { echo "bench/dns.sh: $ANCHOR not found (it lives in the project's shared/ folder)" >&2; exit 2; }
DUR=${DUR:-10}
cargo build --release --bin opengslb-overwatch >&2
BIN=$PWD/target/release/opengslb-overwatch
CFG=$PWD/bench/overwatch-dns.yaml
OUT=$(mktemp -d /tmp/overwatch-dns-bench.XXXXXX)

# Our backends: the same three TCP listeners gdnsd-gslb's checks use.
pids=()
for a in 127.0.0.21 127.0.0.22 127.0.0.23; do
  python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9201)); s.listen(64)
while True:
    c, _ = s.accept(); c.close()
' "$a" & pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

run() { # label server-args...
  local label=$1; shift
  echo "== $label" >&2
  "$ANCHOR" "$@" -l "$DUR" -r 1 2>"$OUT/$label.err" | tee "$OUT/$label.out" | grep '^ANCHOR' >&2 || { cat "$OUT/$label.err" >&2; exit 1; }
}
# Pinned: each server on CPU 1, dnsperf on CPU 0.
run gdnsd-a gdnsd-gslb -m a
run overwatch-a cmd -p 5300 -m a --cmd "$BIN --config $CFG"
run gdnsd-mix gdnsd-gslb -m mix
run overwatch-mix cmd -p 5300 -m mix --cmd "$BIN --config $CFG"
# Fixed offered load (server CPU per query) and unpinned (both cores shared).
run gdnsd-q150k gdnsd-gslb -m a -Q 150000
run overwatch-q150k cmd -p 5300 -m a -Q 150000 --cmd "$BIN --config $CFG"
run gdnsd-unpinned gdnsd-gslb -m a --no-pin
run overwatch-unpinned cmd -p 5300 -m a --no-pin --cmd "$BIN --config $CFG"

field() { grep '^ANCHOR' "$OUT/$1.out" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
printf '\n%-22s %14s %14s %8s %12s %12s\n' "run" "gdnsd q/s" "overwatch q/s" "ratio" "gdnsd µs/q" "ours µs/q"
for r in a mix q150k unpinned; do
  g=$(field gdnsd-$r qps); o=$(field overwatch-$r qps)
  gu=$(field gdnsd-$r server_us_per_query); ou=$(field overwatch-$r server_us_per_query)
  printf '%-22s %14.0f %14.0f %8.2f %12s %12s\n' "$r" "$g" "$o" "$(awk -v a="$o" -v b="$g" 'BEGIN{print a/b}')" "$gu" "$ou"
done
printf '\n%-22s %14s %14s\n' "latency avg / max (s)" "gdnsd" "overwatch"
for r in a mix; do
  printf '%-22s %14s %14s\n' "$r" "$(field gdnsd-$r avg_lat_s)/$(field gdnsd-$r max_lat_s)" "$(field overwatch-$r avg_lat_s)/$(field overwatch-$r max_lat_s)"
done
echo "(raw dnsperf output in $OUT)"
