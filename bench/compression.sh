#!/usr/bin/env bash
# Compression: what a compressed hit costs next to an identity hit, and how fast Strata
# compresses (one core).
#
#   bench/compression.sh
#
# Strata alone on CPU 0 (one worker thread), the origin and h2load on CPU 1.
#   hits:       h2load (HTTP/1.1, 64 connections, 200,000 requests) on one 64 KiB text/html
#               object, stored compressed (br, zstd, gzip) and identity: requests/s, p99,
#               bytes per response;
#   throughput: a cold 64 MiB text/html object fetched once per coding (curl, the origin on
#               loopback): the fill compresses as it streams, so the transfer time over the
#               identity fill's is the compression's; reported as MB/s of input per core.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-compression-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
command -v h2load >/dev/null || { echo "needs h2load (Debian nghttp2-client)"; exit 1; }
cargo build --release -q -p strata
(cd bench/tools && cargo build --release -q)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ORIGIN_PORT=$(free_port)
taskset -c 1 "$ROOT/bench/tools/target/release/bench-origin" "127.0.0.1:$ORIGIN_PORT" 2>/dev/null &
PIDS+=($!)
PORT=$(free_port)
{
    cat <<TOML
[listen]
http = ["127.0.0.1:$PORT"]
[cache]
size = "1GiB"
max_object_size = "128MiB"
TOML
    strata_config_tail "$ORIGIN_PORT"
} >"$WORK/strata.toml"
TOKIO_WORKER_THREADS=1 taskset -c 0 "$ROOT/target/release/strata" edge --config "$WORK/strata.toml" 2>"$WORK/strata.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"; wait_port "$PORT"

echo "| hits on a 64 KiB text object | requests/s | p99 µs | bytes per response |"
echo "|---|---:|---:|---:|"
for coding in identity br zstd gzip; do
    header=()
    [ "$coding" != identity ] && header=(-H "accept-encoding: $coding")
    url="http://127.0.0.1:$PORT/text/64k/hits"
    curl -s -o /dev/null "${header[@]}" "$url"
    bytes=$(curl -s "${header[@]}" "$url" | wc -c)
    rm -f "$WORK/lat.log"
    out=$(taskset -c 1 h2load --h1 -n 200000 -c 64 -t 1 "${header[@]}" --log-file="$WORK/lat.log" "$url" 2>&1)
    rps=$(echo "$out" | grep -oE '[0-9.]+ req/s' | head -1 | cut -d' ' -f1)
    p99=$(python3 -c 'import sys; l=sorted(int(x.split()[2]) for x in open(sys.argv[1]) if x.strip()); print(l[len(l)*99//100])' "$WORK/lat.log")
    echo "| $coding | ${rps%.*} | $p99 | $bytes |"
done

echo
echo "| 64 MiB text, cold (one fill) | seconds | output bytes | compression MB/s of input |"
echo "|---|---:|---:|---:|"
base=""
for coding in identity br zstd gzip; do
    header=()
    [ "$coding" != identity ] && header=(-H "accept-encoding: $coding")
    read -r secs size < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "${header[@]}" \
        "http://127.0.0.1:$PORT/text/64m/cold-$coding")
    if [ "$coding" = identity ]; then
        base=$secs
        echo "| identity | $secs | $size | - |"
    else
        rate=$(python3 -c "import sys; d=float(sys.argv[1])-float(sys.argv[2]); print(f'{64*1.048576/d:.0f}' if d > 0 else 'n/a')" "$secs" "$base")
        echo "| $coding | $secs | $size | $rate |"
    fi
done
