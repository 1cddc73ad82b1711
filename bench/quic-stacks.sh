#!/usr/bin/env bash
# The QUIC stack decision, measured: the same minimal HTTP/3 server (200 + a 1 KiB body for
# every request) on quinn + h3 (what Strata uses) and on tokio-quiche (Cloudflare's quiche on
# BoringSSL), one tokio thread each pinned to CPU 0, loaded by bench/tools' h3load on CPU 1
# (64 connections x 10 streams, 5 s), in interleaved rounds.
#
#   bench/quic-stacks.sh [rounds]     (default 3; needs root or sudo for apt-get)
#
# Reports requests/s, p50/p99 and requests per server CPU-second (user + system time from
# /proc: what one core of each stack serves, whether or not the client keeps it busy).
# tokio-quiche builds BoringSSL: cmake and libclang (bindgen) are installed from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-quic-stacks.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need openssl openssl
need taskset util-linux
need cmake cmake
[ -n "$(ls /usr/lib/llvm-*/lib/libclang*.so 2>/dev/null)" ] || need clang-not-a-command libclang-dev

echo "building the two servers and h3load (release)"
(cd bench/quic-stacks && cargo build --release -q)
(cd bench/tools && cargo build --release -q --bin h3load)
H3LOAD="$ROOT/bench/tools/target/release/h3load"

(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key 2>/dev/null
    openssl req -new -key leaf.key -subj "/CN=bench.test" -out leaf.csr 2>/dev/null
    printf 'subjectAltName=DNS:bench.test,IP:127.0.0.1\n' >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile leaf.ext -out leaf.pem 2>/dev/null
    # tokio-quiche (BoringSSL) reads a PKCS#8 key.
    openssl pkcs8 -topk8 -nocrypt -in leaf.key -out leaf.p8.key
)

cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }

for round in $(seq 1 "$ROUNDS"); do
    order="quinn quiche"; [ $((round % 2)) -eq 0 ] && order="quiche quinn"
    for stack in $order; do
        port=$(free_port)
        taskset -c 0 "$ROOT/bench/quic-stacks/target/release/$stack-h3" "127.0.0.1:$port" \
            "$WORK/leaf.pem" "$WORK/leaf.p8.key" 2>"$WORK/$stack.log" &
        pid=$!
        PIDS+=("$pid")
        sleep 0.5
        before=$(cpu_ticks "$pid")
        result=$(taskset -c 1 "$H3LOAD" "127.0.0.1:$port" bench.test "$WORK/ca.pem" /1k 64 10 5)
        after=$(cpu_ticks "$pid")
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "$stack $result $((after - before)) $(getconf CLK_TCK)" >>"$WORK/runs"
        echo "round $round: $stack $result"
    done
done

python3 - "$WORK/runs" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    stack, rest = line.split(" ", 1)
    blob, ticks, hz = rest.rsplit(" ", 2)
    r = json.loads(blob)
    r["per_cpu_s"] = r["requests"] / (int(ticks) / int(hz)) if int(ticks) else float("nan")
    runs.setdefault(stack, []).append(r)
med = lambda s, k: statistics.median(x[k] for x in runs[s])
print("| metric | quinn + h3 | tokio-quiche | quinn / quiche |")
print("|---|---:|---:|---:|")
for key, label in [("rps", "requests/s"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs"),
                   ("per_cpu_s", "requests per server CPU-second"), ("errors", "errors")]:
    q, c = med("quinn", key), med("quiche", key)
    ratio = f"{q / c:.2f}x" if c else "n/a"
    print(f"| {label} | {q:.0f} | {c:.0f} | {ratio} |")
PY
