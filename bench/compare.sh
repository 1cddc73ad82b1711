#!/usr/bin/env bash
# Side-by-side benchmark: Strata, nginx (proxy_cache + proxy_cache_lock) and Varnish
# (malloc storage) in front of one fixed origin, on loopback, in interleaved rounds.
#
#   bench/compare.sh [rounds]          (default 3; needs root or sudo for apt-get)
#   STRATA_BASELINE=/path/to/strata bench/compare.sh
#                                      also runs that build of Strata ("baseline"), with
#                                      the same configuration, in the same rounds: a change's
#                                      before and after side by side
#
# Pinning: every proxy runs on CPU 0 (Strata with one worker thread, nginx with one worker
# process, Varnish with one thread pool); the origin and the load generator share CPU 1.
# Results: a table of medians over the rounds, with ratios to nginx, printed and written to
# bench/results/compare-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-bench.XXXXXX)"
SHM="$(mktemp -d /dev/shm/strata-bench.XXXXXX)"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need nginx nginx
need varnishd varnish
need taskset util-linux
command -v nginx >/dev/null || export PATH="$PATH:/usr/sbin"

echo "building Strata and the bench tools (release)"
cargo build --release -q -p strata
(cd bench/tools && cargo build --release -q)
STRATA="$ROOT/target/release/strata"
ORIGIN_BIN="$ROOT/bench/tools/target/release/bench-origin"
LOADGEN="$ROOT/bench/tools/target/release/loadgen"

ulimit -n 65536 2>/dev/null || true

ORIGIN_PORT=$(free_port)
taskset -c 1 "$ORIGIN_BIN" "127.0.0.1:$ORIGIN_PORT" 2>"$WORK/origin.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

STRATA_PORT=$(free_port)
# Every benchmark client comes from 127.0.0.1: the per-client connection cap (256 by
# default) would refuse most of the 1,000-client herd. nginx and Varnish have no such cap.
{
    cat <<EOF
[node]
name = "strata"
[listen]
http = ["127.0.0.1:$STRATA_PORT"]
[cache]
size = "2GiB"
EOF
    strata_config_tail "$ORIGIN_PORT"
} >"$WORK/strata.toml"
TOKIO_WORKER_THREADS=1 taskset -c 0 "$STRATA" edge --config "$WORK/strata.toml" \
    2>"$WORK/strata.log" &
PIDS+=($!)
BASELINE="${STRATA_BASELINE:-}"
if [ -n "$BASELINE" ]; then
    BASELINE_PORT=$(free_port)
    sed "s/127.0.0.1:$STRATA_PORT/127.0.0.1:$BASELINE_PORT/" "$WORK/strata.toml" >"$WORK/baseline.toml"
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$BASELINE" edge --config "$WORK/baseline.toml" \
        2>"$WORK/baseline.log" &
    PIDS+=($!)
fi

NGINX_PORT=$(free_port)
mkdir -p "$SHM/nginx-cache" "$WORK/nginx"
# nginx workers drop to an unprivileged user unless told otherwise; the cache and temp
# directories here belong to whoever runs the script.
cat >"$WORK/nginx/nginx.conf" <<CONF
user $(id -un);
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $SHM/nginx-temp;
    proxy_cache_path $SHM/nginx-cache levels=1:2 keys_zone=bench:64m max_size=2g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
        }
    }
}
CONF
taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=($!)

VARNISH_PORT=$(free_port)
taskset -c 0 varnishd -F -a "127.0.0.1:$VARNISH_PORT" -b "127.0.0.1:$ORIGIN_PORT" -s malloc,2G \
    -n "$WORK/varnish" -p thread_pools=1 -p thread_pool_min=100 -p thread_pool_max=2000 \
    >"$WORK/varnish.log" 2>&1 &
PIDS+=($!)

wait_port "$STRATA_PORT"; wait_port "$NGINX_PORT"; wait_port "$VARNISH_PORT"
declare -A PORT=([strata]=$STRATA_PORT [nginx]=$NGINX_PORT [varnish]=$VARNISH_PORT)
PROXIES=(strata nginx varnish)
if [ -n "$BASELINE" ]; then
    wait_port "$BASELINE_PORT"
    PORT[baseline]=$BASELINE_PORT
    PROXIES=(strata baseline nginx varnish)
fi
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

record() { # proxy round scenario json
    python3 -c 'import json,sys; d=json.loads(sys.argv[4]); d.update(proxy=sys.argv[1], round=int(sys.argv[2]), scenario=sys.argv[3]); print(json.dumps(d))' "$@" >>"$RESULTS"
}
load() { taskset -c 1 "$LOADGEN" "$@"; }
origin_q() { curl -s "http://127.0.0.1:$ORIGIN_PORT/$1?$2"; }

N=${#PROXIES[@]}
for round in $(seq 1 "$ROUNDS"); do
    # The measurement floor: the same herd straight at the origin (no proxy). The load
    # generator and the origin share CPU 1, so this is not 200 ms even without a proxy.
    direct="/herd/r$round-direct"
    record direct "$round" "herd" "$(load herd "127.0.0.1:$ORIGIN_PORT" "$direct" 1000 100000000)"
    # Rotate the order every round so no proxy always goes first.
    shift_by=$(( (round - 1) % N ))
    order=("${PROXIES[@]:$shift_by}" "${PROXIES[@]:0:$shift_by}")
    for p in "${order[@]}"; do
        addr="127.0.0.1:${PORT[$p]}"
        echo "round $round: $p"
        for size in 1k 64k 1m; do
            path="/obj/$size/hot-r$round"
            load warm "$addr" "$path" 1 >/dev/null
            record "$p" "$round" "hot-$size" "$(load keepalive "$addr" "$path" 1 64 5)"
        done
        tmpl="/obj/4k/r$round-{i}"
        load warm "$addr" "$tmpl" 10000 >/dev/null
        record "$p" "$round" "distinct-4k" "$(load keepalive "$addr" "$tmpl" 10000 64 5)"

        herd="/herd/r$round-$p"
        out=$(load herd "$addr" "$herd" 1000 100000000)
        out=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["origin_requests"]=int(sys.argv[2]); print(json.dumps(d))' "$out" "$(origin_q __count "$herd")")
        record "$p" "$round" "herd" "$out"

        slow="/slow/r$round-$p"
        out=$(load herd "$addr" "$slow" 100 1048576)
        out=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); o=int(sys.argv[2]); d["origin_first_byte_ns"]=o; d["ttfb_spread_ms"]=(d["first_byte_max_ns"]-o)/1e6; d["origin_requests"]=int(sys.argv[3]); print(json.dumps(d))' "$out" "$(origin_q __first_byte "$slow")" "$(origin_q __count "$slow")")
        record "$p" "$round" "slow-herd" "$out"
    done
done

mkdir -p bench/results
NAME="compare-$(date -u +%Y-%m-%d)${BASELINE:+-vs-baseline}"
OUT="bench/results/$NAME.md"
python3 - "$RESULTS" "$ROUNDS" "$BASELINE" >"$OUT" <<'PY'
import json, statistics, sys, platform, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
rounds = sys.argv[2]
baseline = sys.argv[3] if len(sys.argv) > 3 else ""
names = ("strata", "baseline", "nginx", "varnish") if baseline else ("strata", "nginx", "varnish")
def med(proxy, scenario, field):
    vals = [r[field] for r in rows if r["proxy"] == proxy and r["scenario"] == scenario and field in r]
    return statistics.median(vals) if vals else float("nan")
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print(f"Machine: {cpu}, {subprocess.run(['nproc'],capture_output=True,text=True).stdout.strip()} cores; {platform.platform()}")
print(f"Rounds: {rounds} (medians shown). Proxies pinned to CPU 0 (Strata 1 worker thread, nginx 1 worker, Varnish 1 thread pool); origin and load generator on CPU 1.")
if baseline:
    print(f"baseline: another build of Strata ({baseline}), same configuration, same rounds.")
print()
ratios = [("strata", "nginx")] + ([("baseline", "nginx")] if baseline else []) + [("varnish", "nginx")] + ([("strata", "baseline")] if baseline else [])
print("| scenario | metric | " + " | ".join(names) + " | " + " | ".join(f"{a}/{b}" for a, b in ratios) + " |")
print("|---|---|" + "---:|" * (len(names) + len(ratios)))
def line(scenario, field, label, higher_better=True, fmt="{:.0f}"):
    v = {p: med(p, scenario, field) for p in names}
    ratio = lambda a, b: (v[a] / v[b]) if v[b] else float("nan")
    cells = [fmt.format(v[p]) for p in names] + [f"{ratio(a, b):.2f}x" for a, b in ratios]
    print(f"| {scenario} | {label} | " + " | ".join(cells) + " |")
for sc in ("hot-1k", "hot-64k", "hot-1m", "distinct-4k"):
    line(sc, "rps", "requests/s")
    line(sc, "p50_us", "p50 µs", False)
    line(sc, "p99_us", "p99 µs", False)
    line(sc, "errors", "errors", False)
line("herd", "origin_requests", "origin requests (1000 clients)", False)
line("herd", "p50_us", "p50 µs", False)
line("herd", "p99_us", "p99 µs (origin delay 200 ms)", False)
line("herd", "errors", "errors", False)
d50, d99 = med("direct", "herd", "p50_us"), med("direct", "herd", "p99_us")
blank = " |" * (len(names) + len(ratios) - 1)
print(f"| herd | same herd straight to the origin (floor): p50 / p99 µs | {d50:.0f} / {d99:.0f} |{blank}")
above = " | ".join(f"{med(p, 'herd', 'p99_us') - d99:.0f}" for p in names)
print(f"| herd | p99 above the floor, µs | {above} |" + " |" * len(ratios))
line("slow-herd", "origin_requests", "origin requests (100 clients, 50 MiB)", False)
line("slow-herd", "ttfb_spread_ms", "last client's first byte after origin's first byte, ms", False, "{:.1f}")
line("slow-herd", "errors", "errors", False)
PY
cat "$OUT"
echo
echo "raw results: $RESULTS (removed on exit); table: $OUT"
cp "$RESULTS" "bench/results/$NAME.jsonl"
