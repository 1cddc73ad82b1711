#!/usr/bin/env bash
# Runs every check and test. Installs what the tests need first (Debian packages):
# nats-server for the cluster purge and control tests, dnsutils (dig) for the DNS router
# tests, exabgp and bird2 for the anycast test (BGP between network namespaces, as root),
# curl, openssl and ngtcp2-client (gtlsclient) as TLS and HTTP/3 clients we did not write,
# pebble (Let's Encrypt's test ACME CA, with pebble-challtestsrv) for automatic certificates;
# Akamai's EdgeAuth token generators from PyPI and npm (into target/test-tools) so token
# tests check tokens made by the code customers run; mmdb-writer from PyPI (same place) writes
# the MaxMind DB files the country access tests read. The wasm32-wasip1 target (rustup) for
# the example proxy-wasm filters (examples/filters) the edge compute tests load, and
# AssemblyScript from npm for the one written in it.
# The deployment test (tests/e2e/deploy.rs, as root) runs deploy/compose's topology in network
# namespaces with these same nats-server, curl, dig and python3.
# Everything else (origins, nodes) the suite starts itself on 127.0.0.1:0. CI's .ci/run
# calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
{ command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; } || missing+=(nats-server)
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v gtlsclient >/dev/null 2>&1 || missing+=(ngtcp2-client)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
[ -x /usr/sbin/exabgp ] || missing+=(exabgp)
[ -x /usr/sbin/bird ] || missing+=(bird2)
command -v npm >/dev/null 2>&1 || missing+=(npm)
python3 -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} (Debian)"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
    # The Debian packages start their daemons; the tests run their own.
    $SUDO systemctl stop bird exabgp >/dev/null 2>&1 || true
fi

TOOLS="$PWD/target/test-tools"
if ! "$TOOLS/edgeauth-py/bin/python" -c "import akamai.edgeauth" >/dev/null 2>&1; then
    echo "== installing akamai-edgeauth (PyPI) into $TOOLS"
    python3 -m venv "$TOOLS/edgeauth-py"
    "$TOOLS/edgeauth-py/bin/pip" install -q akamai-edgeauth==0.3.2
fi
if ! "$TOOLS/mmdb-py/bin/python" -c "import mmdb_writer" >/dev/null 2>&1; then
    echo "== installing mmdb-writer (PyPI) into $TOOLS"
    python3 -m venv "$TOOLS/mmdb-py"
    "$TOOLS/mmdb-py/bin/pip" install -q mmdb-writer==0.2.7
fi
if [ ! -f "$TOOLS/edgeauth-node/node_modules/akamai-edgeauth/package.json" ]; then
    echo "== installing akamai-edgeauth (npm) into $TOOLS"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/edgeauth-node" akamai-edgeauth@0.2.0
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A one-off build gains nothing from incremental state, which is a third of target/debug
# (about 1.5 GB of a 4 GB build): left off so the run fits a small disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free where the build goes"

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== fuzz and bench workspaces (type check)"
# Separate workspaces (the fuzzers need their own instrumentation; the bench tools their
# own dependencies): checked here so they cannot rot unnoticed.
for manifest in fuzz/Cargo.toml bench/tools/Cargo.toml bench/hit-ratio/Cargo.toml; do
    cargo check --locked --quiet --manifest-path "$manifest" --all-targets
done

echo "== example filters (proxy-wasm Rust SDK, wasm32-wasip1)"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
cargo build --locked --quiet --release --target wasm32-wasip1 --manifest-path examples/filters/Cargo.toml
cargo clippy --locked --quiet --target wasm32-wasip1 --manifest-path examples/filters/Cargo.toml -- -D warnings
echo "== example filter (AssemblyScript, npm)"
(cd examples/filters/assemblyscript && npm ci --silent --no-audit --no-fund && npm run --silent build >/dev/null)

echo "== tests"
# One build serves every test binary; nextest runs them in parallel processes.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
