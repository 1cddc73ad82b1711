#!/usr/bin/env bash
# Runs every check and test. Installs what the tests need first (nothing external yet:
# the suite starts its own origins and proxies on 127.0.0.1:0). CI's .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
# One build serves every test binary; nextest runs them in parallel processes.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
