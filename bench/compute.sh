#!/usr/bin/env bash
# Edge compute: what a proxy-wasm filter costs on hot 1 KiB hits, side by side in one run:
#   strata          no filter
#   strata-noop     the header-rewrite example filter with an empty configuration (the SDK's
#                   dispatch, both phases, nothing changed)
#   strata-rewrite  the same filter setting two request and two response headers and
#                   removing one response header
#   nginx           proxy_cache with the same response header changes done by its own
#                   config (add_header / proxy_hide_header): the reference, no compute
# and the host's own figures: instantiation p50/p99 and memory per warm instance
# (crates/strata-compute/examples/instantiate.rs).
#
#   bench/compute.sh [rounds]     (default 3; needs root or sudo for apt-get)
#
# Pinning as in compare.sh: proxies on CPU 0 (Strata one worker thread, nginx one worker),
# origin and load generator on CPU 1. Interleaved rounds, order rotating; medians printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-compute-bench.XXXXXX)"
SHM="$(mktemp -d /dev/shm/strata-compute-bench.XXXXXX)"
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
need taskset util-linux
command -v nginx >/dev/null || export PATH="$PATH:/usr/sbin"

echo "building Strata, the example filters and the bench tools (release)"
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
cargo build --release -q -p strata
cargo build --release -q -p strata-compute --example instantiate
cargo build --release -q --target wasm32-wasip1 --manifest-path examples/filters/Cargo.toml
(cd bench/tools && cargo build --release -q)
STRATA="$ROOT/target/release/strata"
FILTER="$ROOT/examples/filters/target/wasm32-wasip1/release/header_rewrite.wasm"
LOADGEN="$ROOT/bench/tools/target/release/loadgen"
ulimit -n 65536 2>/dev/null || true

echo "== the host alone: instantiation and warm instances"
taskset -c 0 "$ROOT/target/release/examples/instantiate" "$FILTER" 5000 | tee "$WORK/host.txt"

ORIGIN_PORT=$(free_port)
taskset -c 1 "$ROOT/bench/tools/target/release/bench-origin" "127.0.0.1:$ORIGIN_PORT" 2>"$WORK/origin.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

declare -A PORT
start_strata() { # name filter-toml
    local port; port=$(free_port)
    PORT[$1]=$port
    {
        printf '[node]\nname = "%s"\n[listen]\nhttp = ["127.0.0.1:%s"]\n[cache]\nsize = "1GiB"\n' "$1" "$port"
        strata_config_tail "$ORIGIN_PORT"
        printf '%s\n' "$2"
    } >"$WORK/$1.toml"
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$STRATA" edge --config "$WORK/$1.toml" 2>"$WORK/$1.log" &
    PIDS+=($!)
}
start_strata strata ""
start_strata strata-noop "$(printf '[[service.filter]]\nname = "noop"\nmodule = "%s"\n' "$FILTER")"
start_strata strata-rewrite "$(printf '[[service.filter]]\nname = "rewrite"\nmodule = "%s"\nconfig = """\nrequest.set x-edge yes\nrequest.set x-tier edge\nresponse.set x-frame-options DENY\nresponse.set x-content-type-options nosniff\nresponse.remove server\n"""\n' "$FILTER")"

NGINX_PORT=$(free_port)
PORT[nginx]=$NGINX_PORT
mkdir -p "$SHM/nginx-cache" "$WORK/nginx"
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
    proxy_cache_path $SHM/nginx-cache levels=1:2 keys_zone=bench:64m max_size=1g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Edge yes;
            proxy_set_header X-Tier edge;
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_hide_header Server;
            add_header X-Frame-Options DENY;
            add_header X-Content-Type-Options nosniff;
        }
    }
}
CONF
taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
PIDS+=($!)
for p in "${!PORT[@]}"; do wait_port "${PORT[$p]}"; done

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
record() { python3 -c 'import json,sys; d=json.loads(sys.argv[3]); d.update(proxy=sys.argv[1], round=int(sys.argv[2])); print(json.dumps(d))' "$@" >>"$RESULTS"; }
load() { taskset -c 1 "$LOADGEN" "$@"; }
PROXIES=(strata strata-noop strata-rewrite nginx)
N=${#PROXIES[@]}
for round in $(seq 1 "$ROUNDS"); do
    shift_by=$(( (round - 1) % N ))
    order=("${PROXIES[@]:$shift_by}" "${PROXIES[@]:0:$shift_by}")
    for p in "${order[@]}"; do
        addr="127.0.0.1:${PORT[$p]}"
        path="/obj/1k/compute-r$round"
        load warm "$addr" "$path" 1 >/dev/null
        echo "round $round: $p"
        record "$p" "$round" "$(load keepalive "$addr" "$path" 1 64 5)"
    done
done
# The filtered nodes really ran their filter (and rewrote).
curl -sI "http://127.0.0.1:${PORT[strata-rewrite]}/obj/1k/compute-r1" | grep -qi '^x-frame-options: DENY' \
    || { echo "the rewrite filter did not run" >&2; exit 1; }

python3 - "$RESULTS" "$ROUNDS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = ("strata", "strata-noop", "strata-rewrite", "nginx")
def med(p, f):
    v = [r[f] for r in rows if r["proxy"] == p and f in r]
    return statistics.median(v) if v else float("nan")
print(f"\nhot 1 KiB hits, 64 keep-alive connections, 5 s, {sys.argv[2]} rounds (medians)\n")
print("| | " + " | ".join(names) + " | noop/strata | rewrite/strata | rewrite/nginx |")
print("|---|" + "---:|" * (len(names) + 3))
for f, label in (("rps", "requests/s"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("errors", "errors")):
    v = {p: med(p, f) for p in names}
    r = lambda a, b: f"{v[a] / v[b]:.2f}x" if v[b] else "-"
    print(f"| {label} | " + " | ".join(f"{v[p]:.0f}" for p in names) + f" | {r('strata-noop', 'strata')} | {r('strata-rewrite', 'strata')} | {r('strata-rewrite', 'nginx')} |")
PY
