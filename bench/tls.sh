#!/usr/bin/env bash
# TLS side by side: Strata and nginx (proxy_cache, ssl, http2) in front of one fixed
# origin, on loopback, in interleaved rounds.
#
#   bench/tls.sh [rounds]          (default 3; needs root or sudo for apt-get)
#
# Scenarios:
#   h2-hot-1k    h2load (nghttp2), 64 connections x 10 streams, one 1 KiB hot object:
#                requests/s, p50 and p99 (from h2load's per-request log);
#   h3-hot-1k    Strata only (Debian's nginx has no QUIC): the same object over HTTP/3,
#                64 QUIC connections x 10 streams (bench/tools h3load, quinn + h3), beside
#                Strata's own h2 figure;
#   handshake-*  new TLS connections per second, one request each (`openssl s_time -www`,
#                8 clients at once): full handshakes (`-new`) and resumed ones (`-reuse`),
#                with an ECDSA P-256 and an RSA 2048 certificate. Also per CPU-second of
#                the proxy (its user + system time over the run, from /proc): what one
#                core can take, whether or not the clients could keep it busy.
#
# Pinning as in compare.sh: the proxy on CPU 0 (one Strata worker thread, one nginx
# worker), the origin and the clients on CPU 1. A full handshake costs the client more
# than the server with ECDSA (verifying is dearer than signing), so those figures are
# bounded by the client core; with RSA the server's signature dominates.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-tls-bench.XXXXXX)"
SHM="$(mktemp -d /dev/shm/strata-tls-bench.XXXXXX)"
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
need h2load nghttp2-client
need openssl openssl
need taskset util-linux
command -v nginx >/dev/null || export PATH="$PATH:/usr/sbin"

echo "building Strata and the bench origin (release)"
cargo build --release -q -p strata
(cd bench/tools && cargo build --release -q)
STRATA="$ROOT/target/release/strata"
ORIGIN_BIN="$ROOT/bench/tools/target/release/bench-origin"
H3LOAD="$ROOT/bench/tools/target/release/h3load"

ulimit -n 65536 2>/dev/null || true

# A CA and two leaf certificates for bench.test and 127.0.0.1: ECDSA P-256 and RSA 2048.
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
    for kind in ecdsa rsa; do
        if [ "$kind" = ecdsa ]; then
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$kind.key" 2>/dev/null
        else
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$kind.key" 2>/dev/null
        fi
        openssl req -new -key "$kind.key" -subj "/CN=bench.test" -out "$kind.csr" 2>/dev/null
        printf 'subjectAltName=DNS:bench.test,IP:127.0.0.1\n' >"$kind.ext"
        openssl x509 -req -in "$kind.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile "$kind.ext" -out "$kind.pem" 2>/dev/null
    done
)

ORIGIN_PORT=$(free_port)
taskset -c 1 "$ORIGIN_BIN" "127.0.0.1:$ORIGIN_PORT" 2>"$WORK/origin.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

declare -A PORT PID
start_pair() { # kind: starts Strata and nginx with that certificate
    local kind=$1
    local sp np
    sp=$(free_port); np=$(free_port)
    {
        cat <<EOF
[node]
name = "strata"
[listen]
http = ["127.0.0.1:$(free_port)"]
https = ["127.0.0.1:$sp"]
[cache]
size = "1GiB"
[[tls.certificate]]
cert = "$WORK/$kind.pem"
key = "$WORK/$kind.key"
EOF
        strata_config_tail "$ORIGIN_PORT"
    } >"$WORK/strata-$kind.toml"
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$STRATA" edge --config "$WORK/strata-$kind.toml" \
        2>"$WORK/strata-$kind.log" &
    PIDS+=($!)
    PID[strata-$kind]=$!
    mkdir -p "$SHM/nginx-$kind" "$WORK/nginx-$kind"
    cat >"$WORK/nginx-$kind/nginx.conf" <<CONF
user $(id -un);
worker_processes 1;
daemon off;
pid $WORK/nginx-$kind/nginx.pid;
error_log $WORK/nginx-$kind/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-$kind/body;
    proxy_temp_path $SHM/nginx-$kind-temp;
    proxy_cache_path $SHM/nginx-$kind levels=1:2 keys_zone=bench$kind:64m max_size=1g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$np ssl http2 backlog=4096;
        ssl_certificate $WORK/$kind.pem;
        ssl_certificate_key $WORK/$kind.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        keepalive_requests 100000;
        http2_max_concurrent_streams 256;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_cache bench$kind;
            proxy_cache_lock on;
        }
    }
}
CONF
    taskset -c 0 nginx -c "$WORK/nginx-$kind/nginx.conf" -e "$WORK/nginx-$kind/error.log" &
    PIDS+=($!)
    PID[nginx-$kind]=$!
    wait_port "$sp"; wait_port "$np"
    PORT[strata-$kind]=$sp
    PORT[nginx-$kind]=$np
}
start_pair ecdsa
start_pair rsa

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
record() { # proxy round scenario json
    python3 -c 'import json,sys; d=json.loads(sys.argv[4]); d.update(proxy=sys.argv[1], round=int(sys.argv[2]), scenario=sys.argv[3]); print(json.dumps(d))' "$@" >>"$RESULTS"
}

h2_hot() { # port path -> json {rps, p50_us, p99_us, errors}
    local port=$1 path=$2 log="$WORK/h2load.log"
    rm -f "$log"
    local out
    out=$(taskset -c 1 h2load -n 300000 -c 64 -m 10 -t 1 --log-file="$log" \
        "https://127.0.0.1:$port$path" 2>&1)
    python3 - "$log" "$out" <<'PY'
import json, sys
lat = sorted(int(l.split()[2]) for l in open(sys.argv[1]) if l.strip())
out = sys.argv[2]
rps = float(out.split(" req/s")[0].rsplit(" ", 1)[-1])
failed = int(out.split(" failed, ")[0].rsplit(" ", 1)[-1])
errored = int(out.split(" errored, ")[0].rsplit(" ", 1)[-1])
print(json.dumps({"rps": rps, "p50_us": lat[len(lat) // 2], "p99_us": lat[len(lat) * 99 // 100], "errors": failed + errored}))
PY
}

# CPU time (user + system, clock ticks) of a process and its children (nginx's worker).
cpu_ticks() { # pid
    local total=0 pid
    for pid in $1 $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        total=$((total + $(awk '{print $14 + $15}' /proc/"$pid"/stat 2>/dev/null || echo 0)))
    done
    echo "$total"
}

handshakes() { # port mode(-new|-reuse) pid -> json {cps, per_cpu_s}
    local port=$1 mode=$2 pid=$3 before after
    before=$(cpu_ticks "$pid")
    for i in $(seq 1 8); do
        taskset -c 1 openssl s_time -connect "127.0.0.1:$port" "$mode" -time 5 \
            -www /obj/1k/hs >"$WORK/s_time.$i" 2>&1 &
    done
    wait
    after=$(cpu_ticks "$pid")
    python3 - "$((after - before))" "$(getconf CLK_TCK)" "$WORK"/s_time.* <<'PY'
import json, re, sys
total, connections = 0.0, 0
for f in sys.argv[3:]:
    m = re.search(r"(\d+) connections in (\d+) real seconds", open(f).read())
    if m:
        connections += int(m.group(1))
        total += int(m.group(1)) / max(int(m.group(2)), 1)
cpu_s = int(sys.argv[1]) / int(sys.argv[2])
print(json.dumps({"cps": total, "per_cpu_s": connections / cpu_s if cpu_s else float("nan")}))
PY
    rm -f "$WORK"/s_time.*
}

curl_warm() { curl -s --cacert "$WORK/ca.pem" -o /dev/null "https://127.0.0.1:$1$2"; }

for round in $(seq 1 "$ROUNDS"); do
    order=(strata nginx)
    [ $((round % 2)) -eq 0 ] && order=(nginx strata)
    for p in "${order[@]}"; do
        echo "round $round: $p"
        path="/obj/1k/hot-r$round"
        curl_warm "${PORT[$p-ecdsa]}" "$path"
        record "$p" "$round" "h2-hot-1k" "$(h2_hot "${PORT[$p-ecdsa]}" "$path")"
        if [ "$p" = strata ]; then
            record "$p" "$round" "h3-hot-1k" "$(taskset -c 1 "$H3LOAD" "127.0.0.1:${PORT[$p-ecdsa]}" \
                bench.test "$WORK/ca.pem" "$path" 64 10 5)"
        fi
        for kind in ecdsa rsa; do
            curl_warm "${PORT[$p-$kind]}" /obj/1k/hs
            record "$p" "$round" "handshake-full-$kind" \
                "$(handshakes "${PORT[$p-$kind]}" -new "${PID[$p-$kind]}")"
            record "$p" "$round" "handshake-resumed-$kind" \
                "$(handshakes "${PORT[$p-$kind]}" -reuse "${PID[$p-$kind]}")"
        done
    done
done

mkdir -p bench/results
OUT="bench/results/tls-$(date -u +%Y-%m-%d).md"
python3 - "$RESULTS" "$ROUNDS" >"$OUT" <<'PY'
import json, statistics, sys, platform, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(proxy, scenario, field):
    vals = [r[field] for r in rows if r["proxy"] == proxy and r["scenario"] == scenario]
    return statistics.median(vals) if vals else float("nan")
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print(f"Machine: {cpu}; {platform.platform()}")
print(f"Rounds: {sys.argv[2]} (medians). Proxy on CPU 0 (Strata 1 worker thread, nginx 1 worker); origin and clients on CPU 1.")
print()
print("| scenario | metric | strata | nginx | strata/nginx |")
print("|---|---|---:|---:|---:|")
metrics = [(s, f, l) for s in ("h2-hot-1k", "h3-hot-1k") for f, l in (("rps", "requests/s"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("errors", "errors"))]
for kind in ("ecdsa", "rsa"):
    for mode in ("full", "resumed"):
        metrics.append((f"handshake-{mode}-{kind}", "cps", "connections/s (one request each)"))
        metrics.append((f"handshake-{mode}-{kind}", "per_cpu_s", "connections per proxy CPU-second"))
for scenario, field, label in metrics:
    s, n = med("strata", scenario, field), med("nginx", scenario, field)
    ratio = f"{s / n:.2f}x" if n and n == n else "n/a"
    print(f"| {scenario} | {label} | {s:.0f} | {n:.0f} | {ratio} |")
print()
for field, label in (("rps", "requests/s"), ("p99_us", "p99")):
    h3, h2 = med("strata", "h3-hot-1k", field), med("strata", "h2-hot-1k", field)
    print(f"Strata HTTP/3 / Strata h2 over TLS, {label}: {h3 / h2:.2f}x (different load generators: h3load and h2load)")
PY
cat "$OUT"
echo
echo "table: $OUT"
