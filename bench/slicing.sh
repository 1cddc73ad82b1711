#!/usr/bin/env bash
# Large objects in slices: a 2 GiB file, N random 1 MiB ranges (a player seeking), through
# Strata with `slice` and through nginx with its own slice module (`slice 1m` +
# proxy_cache), in one run. Also Strata without slicing (the file is over
# max_object_size: each range is passed to the origin as it is, nothing cached).
#
#   bench/slicing.sh [ranges] [slice]      (defaults: 1000, 1MiB; slice in MiB)
#
# Reports, per proxy: bytes fetched from the origin (its access log) vs bytes served,
# origin requests, and time to first byte of the seeks that missed (a seek on a cold
# object) and of those that hit. The origin is nginx serving a sparse 2 GiB file from
# disk (sendfile, ETag, ranges). One client, one range at a time, same seeded offsets for
# every proxy. Each proxy starts cold.
set -euo pipefail
cd "$(dirname "$0")/.."
RANGES="${1:-1000}"
SLICE_MIB="${2:-1}"
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-slicing-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need nginx nginx
command -v nginx >/dev/null || export PATH="$PATH:/usr/sbin"

echo "building Strata (release)"
cargo build --release -q -p strata
STRATA="$ROOT/target/release/strata"

mkdir -p "$WORK/www" "$WORK/origin" "$WORK/nginx" "$WORK/nginx-cache"
truncate -s 2G "$WORK/www/movie.mp4"
ORIGIN_PORT=$(free_port)
NGINX_PORT=$(free_port)
cat >"$WORK/origin/nginx.conf" <<CONF
user $(id -un);
worker_processes 1;
daemon off;
pid $WORK/origin/nginx.pid;
error_log $WORK/origin/error.log warn;
events { worker_connections 1024; }
http {
    log_format bytes '\$server_port \$status \$body_bytes_sent "\$http_range"';
    access_log $WORK/origin/access.log bytes;
    client_body_temp_path $WORK/origin/body;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $WORK/www;
        location / { add_header Cache-Control "max-age=86400"; }
    }
}
CONF
nginx -c "$WORK/origin/nginx.conf" -e "$WORK/origin/error.log" &
PIDS+=($!)
cat >"$WORK/nginx/nginx.conf" <<CONF
user $(id -un);
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/temp;
    proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=bench:64m max_size=4g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 16; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            slice ${SLICE_MIB}m;
            proxy_cache bench;
            proxy_cache_key \$uri\$slice_range;
            proxy_set_header Range \$slice_range;
            proxy_cache_valid 200 206 1h;
            proxy_cache_lock on;
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"
wait_port "$NGINX_PORT"

# A Strata node in front of the origin; $1: its name, $2: the [[service]] extra line.
# Sets PORT.
start_strata() {
    PORT=$(free_port)
    {
        printf '[node]\nname = "%s"\n[listen]\nhttp = ["127.0.0.1:%s"]\n' "$1" "$PORT"
        printf '[cache]\nsize = "3GiB"\nmax_object_size = "16MiB"\n'
        strata_config_tail "$ORIGIN_PORT"
        echo "$2"
    } >"$WORK/$1.toml"
    "$STRATA" edge --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    wait_port "$PORT"
}
start_strata strata-sliced "slice = \"${SLICE_MIB}MiB\""
SLICED_PORT=$PORT
start_strata strata-unsliced ""
WHOLE_PORT=$PORT

# The client: N seeded random 1 MiB ranges, one at a time; prints a JSON summary.
seek() {
    python3 - "$1" "$RANGES" <<'PY'
import http.client, json, random, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
total, size = 2 << 30, 1 << 20
rng = random.Random(16)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
served, miss, hit, errors = 0, [], [], 0
for _ in range(n):
    start = rng.randrange(0, total - size)
    t0 = time.perf_counter()
    conn.request("GET", "/movie.mp4", headers={"Host": "bench", "Range": f"bytes={start}-{start + size - 1}"})
    resp = conn.getresponse()
    first = resp.read(1)
    ttfb = time.perf_counter() - t0
    body = first + resp.read()
    if resp.status != 206 or len(body) != size:
        errors += 1
    served += len(body)
    status = (resp.getheader("Cache-Status") or "") + (resp.getheader("X-Cache") or "")
    (hit if ("hit" in status.lower() and "fwd=" not in status.lower()) else miss).append(ttfb)
def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 2) if xs else None
print(json.dumps({"served": served, "errors": errors, "misses": len(miss), "hits": len(hit),
    "miss_p50_ms": pct(miss, 0.5), "miss_p99_ms": pct(miss, 0.99),
    "hit_p50_ms": pct(hit, 0.5), "hit_p99_ms": pct(hit, 0.99)}))
PY
}

# Origin bytes and requests since the log had $2 lines.
origin_since() {
    tail -n +"$(( $1 + 1 ))" "$WORK/origin/access.log" | awk '{b += $3; n += 1} END {printf "{\"origin_bytes\": %d, \"origin_requests\": %d}", b, n}'
}

RESULTS=()
for proxy in strata-sliced nginx-slice strata-unsliced; do
    case $proxy in
        strata-sliced) port=$SLICED_PORT ;;
        nginx-slice) port=$NGINX_PORT ;;
        strata-unsliced) port=$WHOLE_PORT ;;
    esac
    before=$(wc -l <"$WORK/origin/access.log")
    echo "$proxy: $RANGES random 1 MiB ranges of a 2 GiB object (slice ${SLICE_MIB} MiB)"
    client=$(seek "$port")
    origin=$(origin_since "$before")
    RESULTS+=("{\"proxy\": \"$proxy\", \"client\": $client, \"origin\": $origin}")
done

python3 - "${RESULTS[@]}" <<'PY'
import json, sys
print("| proxy | served | from origin | origin/served | origin requests | miss TTFB p50/p99 | hit TTFB p50/p99 | misses/hits | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for r in map(json.loads, sys.argv[1:]):
    c, o = r["client"], r["origin"]
    mib = lambda b: f"{b / (1 << 20):,.0f} MiB"
    ms = lambda a, b: f"{a} / {b} ms" if a is not None else "-"
    print(f"| {r['proxy']} | {mib(c['served'])} | {mib(o['origin_bytes'])} | {o['origin_bytes'] / max(c['served'], 1):.2f} | "
          f"{o['origin_requests']} | {ms(c['miss_p50_ms'], c['miss_p99_ms'])} | {ms(c['hit_p50_ms'], c['hit_p99_ms'])} | "
          f"{c['misses']}/{c['hits']} | {c['errors']} |")
PY
