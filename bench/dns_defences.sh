#!/usr/bin/env bash
# What DNS cookies and response rate limiting cost (issue 16): server CPU time per answered
# query at a fixed offered load, in one run, for
#   gdnsd                 the reference (no cookies, no rate limiting);
#   overwatch off         dns.cookies: false, no dns.rate_limit;
#   overwatch on          cookies on and rate limiting on (at a rate dnsperf stays under),
#                         queries without a cookie;
#   overwatch on+cookie   the same, every query carrying a client cookie (dnsperf -E), so
#                         every answer computes a server cookie (SipHash-2-4).
# The server runs on CPU 1 and dnsperf on CPU 0; CPU time is the server's utime+stime
# from /proc over the run. Rounds alternate between the servers; medians are printed.
#   bench/dns_defences.sh            # DUR=8 ROUNDS=3 QPS=100000, about 4 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-8}
ROUNDS=${ROUNDS:-3}
QPS=${QPS:-100000}
for cmd in gdnsd dnsperf taskset; do
  command -v "$cmd" >/dev/null || { echo "bench/dns_defences.sh: $cmd missing (apt-get install gdnsd dnsperf util-linux)" >&2; exit 2; }
done
cargo build --release -p opengslb-overwatch --bin opengslb-overwatch >&2
OUT=$(mktemp -d /tmp/overwatch-defences-bench.XXXXXX)
TICK=$(getconf CLK_TCK)

mkdir -p "$OUT/gdnsd/etc/zones" "$OUT/gdnsd/run" "$OUT/gdnsd/state"
echo "options => { listen => [ 127.0.0.1:5398 ], run_dir => $OUT/gdnsd/run, state_dir => $OUT/gdnsd/state }" > "$OUT/gdnsd/etc/config"
cat > "$OUT/gdnsd/etc/zones/demo.local" <<'EOF'
$ORIGIN demo.local.
$TTL 30
@    IN SOA ns1.demo.local. hostmaster.demo.local. 1 3600 600 86400 30
@    IN NS  ns1.demo.local.
app  30 IN A 127.0.0.21
app  30 IN A 127.0.0.22
app  30 IN A 127.0.0.23
EOF
overwatch_config() { # PORT COOKIES RATE_LIMIT_YAML
  cat <<EOF
overwatch:
  validation: {enabled: false}
  data_dir: $OUT/data-$1
dns:
  listen_address: "127.0.0.1:$1"
  zones: [demo.local]
  udp_workers: 1
  cookies: $2
$3regions:
  - name: dc1
    servers: [{address: 127.0.0.21}, {address: 127.0.0.22}, {address: 127.0.0.23}]
domains:
  - {name: app.demo.local, routing_algorithm: round-robin, regions: [dc1], ttl: 30}
api: {enabled: false}
metrics: {enabled: false}
EOF
}
overwatch_config 5397 false "" > "$OUT/off.yaml"
overwatch_config 5396 true "  rate_limit: {responses_per_second: 100000000, slip: 2}
" > "$OUT/on.yaml"
echo "app.demo.local A" > "$OUT/queries.txt"

# measure LABEL PORT DNSPERF-EXTRA... -- SERVER COMMAND...: prints "µs-per-query qps"
measure() {
  local label=$1 port=$2; shift 2
  local extra=()
  while [[ $1 != -- ]]; do extra+=("$1"); shift; done
  shift
  taskset -c 1 "$@" >"$OUT/$label.server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$port" app.demo.local A 2>/dev/null | grep -q 'status: NOERROR' && break
    sleep 0.1
  done
  local before after
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$OUT/queries.txt" -l "$DUR" -Q "$QPS" -c 4 -T 2 -q 200 "${extra[@]}" >"$OUT/$label.dnsperf" 2>&1
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local completed qps
  completed=$(awk '/Queries completed:/ {print $3}' "$OUT/$label.dnsperf")
  qps=$(awk '/Queries per second:/ {print $4}' "$OUT/$label.dnsperf")
  awk -v t=$((after - before)) -v hz="$TICK" -v c="$completed" -v q="$qps" 'BEGIN{ printf "%.2f %d\n", t / hz * 1e6 / c, q }'
}

COOKIE=(-E 10:0102030405060708)
for r in $(seq 1 "$ROUNDS"); do
  measure "gdnsd-$r" 5398 -- gdnsd -c "$OUT/gdnsd/etc" start > "$OUT/gdnsd-$r.result"
  measure "off-$r" 5397 -- target/release/opengslb-overwatch --config "$OUT/off.yaml" > "$OUT/off-$r.result"
  measure "on-$r" 5396 -- target/release/opengslb-overwatch --config "$OUT/on.yaml" > "$OUT/on-$r.result"
  measure "cookie-$r" 5396 "${COOKIE[@]}" -- target/release/opengslb-overwatch --config "$OUT/on.yaml" > "$OUT/cookie-$r.result"
  echo "round $r: gdnsd $(cat "$OUT/gdnsd-$r.result"), off $(cat "$OUT/off-$r.result"), on $(cat "$OUT/on-$r.result"), on+cookie $(cat "$OUT/cookie-$r.result")" >&2
done
median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
med() { for r in $(seq 1 "$ROUNDS"); do awk -v f="$2" '{print $f}' "$OUT/$1-$r.result"; done | median; }
echo
echo "server CPU µs per answered query at $QPS q/s offered (median of $ROUNDS runs of ${DUR}s; server on CPU 1, dnsperf on CPU 0)"
printf '%-44s %10s %10s %10s\n' "server" "µs/query" "q/s" "vs off"
off=$(med off 1)
for s in gdnsd off on cookie; do
  name=$(case $s in gdnsd) echo "gdnsd 3.8 (no cookies, no RRL)";; off) echo "overwatch, cookies and RRL off";; on) echo "overwatch, cookies and RRL on";; cookie) echo "overwatch, on, every query with a client cookie";; esac)
  us=$(med "$s" 1); q=$(med "$s" 2)
  printf '%-44s %10s %10s %10s\n' "$name" "$us" "$q" "$(awk -v a="$us" -v b="$off" 'BEGIN{printf "%.2f", a/b}')"
done
