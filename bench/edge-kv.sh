#!/usr/bin/env bash
# Edge KV: write latency through JetStream and how far behind another node's replica is.
# One nats-server (JetStream), two Strata nodes on it, release build; see bench/edge-kv/lag.py.
#
#   bench/edge-kv.sh [writes]      (default 500; needs nats-server: scripts/test.sh installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
WRITES="${1:-500}"
ROOT="$PWD"
WORK="$(mktemp -d /tmp/strata-kv-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
cargo build --release -q -p strata
STRATA="$ROOT/target/release/strata"

NATS_PORT=$(free_port)
"$NATS" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
wait_port "$NATS_PORT"
declare -A ADMIN
for n in a b; do
    http=$(free_port); admin=$(free_port)
    ADMIN[$n]="127.0.0.1:$admin"
    cat >"$WORK/$n.toml" <<TOML
[node]
name = "kv-$n"
[listen]
http = ["127.0.0.1:$http"]
admin = "127.0.0.1:$admin"
[bus]
nats = "nats://127.0.0.1:$NATS_PORT"
$(strata_config_tail 9)
TOML
    "$STRATA" edge --config "$WORK/$n.toml" 2>"$WORK/$n.log" &
    PIDS+=($!)
    wait_port "$admin"
done
# Both have joined the bus once a write through each is acknowledged.
for n in a b; do
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
            -d '{"value":"x"}' "http://${ADMIN[$n]}/v1/kv/bench/ready-$n") || true
        [ "$code" = 200 ] && break
        sleep 0.1
    done
done
python3 bench/edge-kv/lag.py "${ADMIN[a]}" "${ADMIN[b]}" "$WRITES"
