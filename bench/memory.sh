#!/usr/bin/env bash
# Resident memory against the configured cache size (`--cache-size`), for small, medium
# and large objects: fills the cache through the real binary with far more distinct
# objects than fit, then reads the process's RSS and the memory tier's own figures, and
# again 2 s after purging everything.
#
#   bench/memory.sh
#   STRATA_BIN=/path/to/other/strata bench/memory.sh     (another build, e.g. an older commit)
#
# Needs nothing but Rust (builds Strata and bench/tools in release mode). Prints a
# markdown table; bench/README.md ("Memory") has the latest one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "building Strata and the bench tools (release)" >&2
[ -n "${STRATA_BIN:-}" ] || cargo build --release -q -p strata
(cd bench/tools && cargo build --release -q)
STRATA="${STRATA_BIN:-$ROOT/target/release/strata}"
ORIGIN_BIN="$ROOT/bench/tools/target/release/bench-origin"
LOADGEN="$ROOT/bench/tools/target/release/loadgen"

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
to_bytes() { python3 -c "import sys; s=sys.argv[1]; u={'KiB':1<<10,'MiB':1<<20,'GiB':1<<30}; print(int(s[:-3])*u[s[-3:]])" "$1"; }

ORIGIN_PORT=$(free_port)
"$ORIGIN_BIN" "127.0.0.1:$ORIGIN_PORT" 2>/dev/null &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

echo "| cache size | object | requested | held | counted (MB) | RSS idle (MB) | RSS full (MB) | RSS − idle − counted (MB) | RSS − idle − size (MB) | RSS 2 s after purge (MB) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"

# cache-size  object-size  distinct-keys
for scenario in "16MiB 150 90000" "16MiB 4k 20000" "16MiB 64k 2000" "64MiB 1m 300" "256MiB 4k 200000" "512MiB 150 40000"; do
    read -r size obj keys <<<"$scenario"
    HTTP=$(free_port); ADMIN=$(free_port)
    "$STRATA" edge --listen "127.0.0.1:$HTTP" --admin "127.0.0.1:$ADMIN" \
        --origin "http://127.0.0.1:$ORIGIN_PORT" --cache-size "$size" --access-log off 2>/dev/null &
    pid=$!
    PIDS+=($pid)
    wait_port "$HTTP"
    rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$pid/status"; }
    idle=$(rss)
    "$LOADGEN" warm "127.0.0.1:$HTTP" "/obj/$obj/{i}" "$keys" >/dev/null
    sleep 1
    full=$(rss)
    metrics=$(curl -s "127.0.0.1:$ADMIN/metrics")
    counted=$(echo "$metrics" | awk '/^strata_cache_bytes / {print $2}')
    held=$(echo "$metrics" | awk '/^strata_cache_objects / {print $2}')
    curl -s -X POST -H 'content-type: application/json' "127.0.0.1:$ADMIN/v1/purge" -d '{"all":true}' >/dev/null
    sleep 2
    purged=$(rss)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    configured=$(to_bytes "$size")
    python3 - "$size" "$obj" "$keys" "$held" "$counted" "$idle" "$full" "$configured" "$purged" <<'EOF'
import sys
size, obj, keys, held, counted, idle, full, configured, purged = sys.argv[1:]
held, counted, idle, full, configured, purged = map(int, (held, counted, idle, full, configured, purged))
mb = lambda b: f"{b / 1e6:.1f}"
beyond_counted = full - idle - counted
beyond_size = full - idle - configured
print(f"| {size} | {obj} | {int(keys):,} | {held:,} | {mb(counted)} | {mb(idle)} | {mb(full)} | {mb(beyond_counted)} | {mb(beyond_size)} | {mb(purged)} |")
EOF
done
