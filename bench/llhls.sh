#!/usr/bin/env bash
# LL-HLS blocking reloads under load: N simulated players following a live stream part by
# part (a part every 250 ms), straight from the origin and through a Strata node with
# [service.media], in one run (bench/tools llhls: the origin and the players in one process,
# so publication-to-player latency is on one clock).
#
#   bench/llhls.sh [clients] [seconds]      (defaults: 1000, 20)
#
# Reports, per mode: origin requests per part (the node should send one per part however
# many players wait), and p50/p99 from a part's publication to a player having the playlist
# that lists it. Pinning: the node on CPU 0 (one worker), origin and players on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${1:-1000}"
SECONDS_RUN="${2:-20}"
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-llhls-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
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
LLHLS="$ROOT/bench/tools/target/release/llhls"
ulimit -n 65536 2>/dev/null || true

echo "straight from the origin, $CLIENTS players, ${SECONDS_RUN}s"
ORIGIN_PORT=$(free_port)
DIRECT=$(taskset -c 1 "$LLHLS" "127.0.0.1:$ORIGIN_PORT" "127.0.0.1:$ORIGIN_PORT" "$CLIENTS" "$SECONDS_RUN")
echo "$DIRECT"

echo "through a Strata node, $CLIENTS players, ${SECONDS_RUN}s"
ORIGIN_PORT=$(free_port)
NODE_PORT=$(free_port)
{
    printf '[node]\nname = "llhls"\n[listen]\nhttp = ["127.0.0.1:%s"]\n' "$NODE_PORT"
    strata_config_tail "$ORIGIN_PORT"
    echo "[service.media]"
} >"$WORK/node.toml"
TOKIO_WORKER_THREADS=1 taskset -c 0 "$STRATA" edge --config "$WORK/node.toml" 2>"$WORK/node.log" &
PIDS+=($!)
wait_port "$NODE_PORT"
EDGE=$(taskset -c 1 "$LLHLS" "127.0.0.1:$ORIGIN_PORT" "127.0.0.1:$NODE_PORT" "$CLIENTS" "$SECONDS_RUN")
echo "$EDGE"

python3 - "$DIRECT" "$EDGE" <<'PY'
import json, sys
d, e = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"origin requests per part: direct {d['origin_requests_per_part']:.1f}, through Strata {e['origin_requests_per_part']:.2f} (max {e['origin_requests_per_part_max']})")
print(f"publication to player p50/p99: direct {d['p50_us']/1000:.1f}/{d['p99_us']/1000:.1f} ms, through Strata {e['p50_us']/1000:.1f}/{e['p99_us']/1000:.1f} ms (+{(e['p99_us']-d['p99_us'])/1000:.1f} ms at p99)")
print(f"errors: direct {d['errors']}, through Strata {e['errors']}; playlists delivered: {d['playlists']} / {e['playlists']}")
PY
