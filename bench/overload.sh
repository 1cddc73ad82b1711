#!/usr/bin/env bash
# Load shedding at 5x capacity: what happens to misses, hits, health checks and the admin
# API when misses arrive five times faster than the node may send them upstream.
#
#   bench/overload.sh [seconds]        (default 10)
#
# Capacity: the service's origin takes 200 ms per miss (bench-origin /herd/<id>) and the
# node keeps 64 requests in flight to it, so 320 misses/s. Offered, open loop (bench/tools
# loadgen `rate`: a request when due, whatever the answers do): 1,600 distinct misses/s
# (5x), 2,000 hits/s on one warm 1 KiB object, 20 health checks/s on the HTTP listener and
# 5 /metrics/s on the admin listener, for [seconds]. Two runs:
#   shedding  limits.max_upstream_requests = 64, shed_queue_timeout = 1s (misses past
#             the 64 wait up to 1 s, then 503);
#   queueing  max_upstream_requests = 1,000,000: misses wait for the origin's connection
#             slots until the first-byte timeout (30 s), then 504.
# Pinning: Strata on CPU 0 (one worker), origin and load generators on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN="${1:-10}"
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-overload.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need taskset util-linux

echo "building Strata and the bench tools (release)"
cargo build --release -q -p strata
(cd bench/tools && cargo build --release -q)
STRATA="$ROOT/target/release/strata"
TOOLS="$ROOT/bench/tools/target/release"
ulimit -n 65536 2>/dev/null || true

ORIGIN_PORT=$(free_port)
taskset -c 1 "$TOOLS/bench-origin" "127.0.0.1:$ORIGIN_PORT" 2>"$WORK/origin.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

run() { # name max_upstream_requests
    local name=$1 max=$2 port admin
    port=$(free_port); admin=$(free_port)
    cat >"$WORK/$name.toml" <<EOF
[node]
name = "strata"
[listen]
http = ["127.0.0.1:$port"]
admin = "127.0.0.1:$admin"
[log]
access = "off"
[limits]
max_connections_per_client = 100000
max_upstream_requests = $max
shed_queue_timeout = "1s"
[[service]]
name = "bench"
hosts = ["*"]
origins = ["http://127.0.0.1:$ORIGIN_PORT"]
origin_max_connections = 64
EOF
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$STRATA" edge --config "$WORK/$name.toml" 2>"$WORK/$name.log" &
    local pid=$!
    PIDS+=($pid)
    wait_port "$port"; wait_port "$admin"
    taskset -c 1 "$TOOLS/loadgen" warm "127.0.0.1:$port" /obj/1k/hot 1 >/dev/null
    local tag="$name-$(date +%s%N)"
    taskset -c 1 "$TOOLS/loadgen" rate "127.0.0.1:$port" "/herd/$tag-{i}" 1000000000 1600 "$SECONDS_RUN" 30000 >"$WORK/$name.miss" &
    local m=$!
    taskset -c 1 "$TOOLS/loadgen" rate "127.0.0.1:$port" /obj/1k/hot 1 2000 "$SECONDS_RUN" 2000 >"$WORK/$name.hit" &
    local h=$!
    taskset -c 1 "$TOOLS/loadgen" rate "127.0.0.1:$port" /.well-known/strata/health 1 20 "$SECONDS_RUN" 50 >"$WORK/$name.health" &
    local c=$!
    taskset -c 1 "$TOOLS/loadgen" rate "127.0.0.1:$admin" /metrics 1 5 "$SECONDS_RUN" 20 >"$WORK/$name.admin" &
    local a=$!
    wait $m $h $c $a
    kill "$pid" 2>/dev/null || true
    for kind in miss hit health admin; do
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.update(run=sys.argv[2], kind=sys.argv[3]); print(json.dumps(d))' \
            "$WORK/$name.$kind" "$name" "$kind" >>"$WORK/results.jsonl"
    done
}

echo "run: shedding"; run shedding 64
echo "run: queueing"; run queueing 1000000

mkdir -p bench/results
OUT="bench/results/overload-$(date -u +%Y-%m-%d).md"
python3 - "$WORK/results.jsonl" "$SECONDS_RUN" >"$OUT" <<'PY'
import json, sys, platform, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print(f"Machine: {cpu}; {platform.platform()}. {sys.argv[2]} s per run; Strata on CPU 0 (1 worker), origin and generators on CPU 1.")
print()
print("| run | traffic | sent | 200 | 503 | other | failed+dropped | unanswered | 200 p50 ms | 200 p99 ms | all p99 ms |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['run']} | {r['kind']} | {r['sent']} | {r['ok']} | {r['shed']} | {r['other']} | {r['failed'] + r['dropped']} | {r['unanswered']} | {r['ok_p50_us']/1000:.1f} | {r['ok_p99_us']/1000:.1f} | {r['all_p99_us']/1000:.1f} |")
PY
cat "$OUT"
echo
echo "table: $OUT"
