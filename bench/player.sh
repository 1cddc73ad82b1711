#!/usr/bin/env bash
# A real player through the edge: hls.js (lowLatencyMode) in headless Chromium plays a live
# LL-HLS stream that ffmpeg encodes in real time (bench/player/origin.py), once straight from
# the origin and once through a Strata edge and shield (both with [service.media]), each run
# against a fresh origin.
#
#   bench/player.sh [seconds]      (default 120 s of playback per run)
#   PLAYERS=4 (default) players per run, each its own browser context, <video> and hls.js
#   DASH=1 also runs the same pair with dash.js (low-latency mode) on the origin's LL-DASH
#          MPD (/live/manifest.mpd: video and audio AdaptationSets, $Number$ 2 s segments
#          sent chunked as they are produced) after the HLS runs, through the same edge and
#          shield config; its files are kept with a dash- prefix and reported after the HLS
#          figures (bench/player/report.py)
#
# Reports: seconds played, stalls, live latency (PROGRAM-DATE-TIME: from a frame's production
# at the origin to its display) straight and through edge+shield and the difference, how late
# parts reach the player, origin requests per part and per playlist version through the CDN,
# segment and init requests, non-200 answers the player saw; then the same as markdown rows for
# bench/README.md (bench/player/report.py, which can be run again on the kept files). Raw
# results, access logs and metrics: $KEEP (default target/player-bench/).
#
# Installs what is missing (Debian ffmpeg and chromium; puppeteer-core, hls.js and dash.js from npm into
# target/test-tools/player-npm, pinned by bench/player/package-lock.json). Does not build
# Strata: uses $STRATA, else target/release/strata, else target/debug/strata.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN="${1:-120}"
export PLAYERS="${PLAYERS:-4}"
ROOT="$PWD"
KEEP="${KEEP:-$ROOT/target/player-bench}"
WORK="$(mktemp -d /tmp/strata-player-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need ffmpeg ffmpeg
need chromium chromium
need node nodejs
need npm npm
need curl curl

NPM_DIR="$ROOT/target/test-tools/player-npm"
if ! cmp -s bench/player/package-lock.json "$NPM_DIR/package-lock.json" || [ ! -d "$NPM_DIR/node_modules/hls.js" ] || [ ! -d "$NPM_DIR/node_modules/dashjs" ]; then
    echo "installing puppeteer-core, hls.js and dash.js into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    cp bench/player/package.json bench/player/package-lock.json "$NPM_DIR/"
    (cd "$NPM_DIR" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
export PLAYER_NPM="$NPM_DIR"

if [ -n "${STRATA:-}" ]; then :
elif [ -x target/release/strata ]; then STRATA="$ROOT/target/release/strata"
elif [ -x target/debug/strata ]; then STRATA="$ROOT/target/debug/strata"
else
    echo "no Strata binary: build one (cargo build --release -p strata) or set STRATA" >&2
    exit 1
fi
echo "Strata: $STRATA ($("$STRATA" --version))"
mkdir -p "$KEEP"

ORIGIN_PID=""
# Starts a fresh origin; sets ORIGIN_PORT. Waits (up to 20 s) until its playlist lists three
# complete segments, so a player starts with a live edge to hold back from.
start_origin() {
    python3 bench/player/origin.py --port 0 >"$WORK/origin-$1.out" 2>"$WORK/origin-$1.log" &
    ORIGIN_PID=$!
    PIDS+=("$ORIGIN_PID")
    ORIGIN_PORT=""
    for _ in $(seq 1 100); do
        ORIGIN_PORT=$(sed -n 's/^listening 127.0.0.1:\([0-9]*\)$/\1/p' "$WORK/origin-$1.out")
        [ -n "$ORIGIN_PORT" ] && break
        sleep 0.1
    done
    [ -n "$ORIGIN_PORT" ] || { echo "origin did not start" >&2; cat "$WORK/origin-$1.log" >&2; exit 1; }
    for _ in $(seq 1 200); do
        # (/stats, not the playlist: the origin counts the requests the run makes)
        if curl -s "http://127.0.0.1:$ORIGIN_PORT/stats" | grep -Eq '"segments_published": ([3-9]|[1-9][0-9])'; then
            return 0
        fi
        sleep 0.1
    done
    echo "origin published no stream in 20 s" >&2; cat "$WORK/origin-$1.log" >&2; exit 1
}
stop_origin() {
    curl -s "http://127.0.0.1:$ORIGIN_PORT/stats" >"$KEEP/origin-$1.json"
    kill "$ORIGIN_PID"
    wait "$ORIGIN_PID" || true
    cp "$WORK/origin-$1.log" "$KEEP/origin-$1.log"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# One pair of runs (A straight, B through edge+shield): $1 a label, $KIND hls or dash, $MANIFEST
# the URL under /live/, files kept in $KEEP with the prefix $P.
run_pair() {
    echo "run A$1: straight from the origin, $PLAYERS $KIND players, ${SECONDS_RUN}s"
    start_origin "${P}direct"
    LOAD_A0=$(loadavg)
    PLAYER_KIND=$KIND node bench/player/play.mjs "http://127.0.0.1:$ORIGIN_PORT/live/$MANIFEST" "$SECONDS_RUN" "$KEEP/${P}player-direct.json" >/dev/null
    LOAD_A1=$(loadavg)
    stop_origin "${P}direct"

    echo "run B$1: through a Strata edge and shield, $PLAYERS $KIND players, ${SECONDS_RUN}s"
    start_origin "${P}edge"
    SHIELD_PORT=$(free_port)
    SHIELD_ADMIN=$(free_port)
    EDGE_PORT=$(free_port)
    EDGE_ADMIN=$(free_port)
    node_config() { # name role port admin parent
        printf '[node]\nname = "%s"\nrole = "%s"\n' "$1" "$2"
        printf '[listen]\nhttp = ["127.0.0.1:%s"]\nadmin = "127.0.0.1:%s"\n' "$3" "$4"
        [ -n "$5" ] && printf '[parents]\nshields = ["http://127.0.0.1:%s"]\n' "$5"
        printf '[log]\naccess = "%s"\n' "$WORK/$1-access.log"
        printf '[[service]]\nname = "live"\nhosts = ["*"]\norigins = ["http://127.0.0.1:%s"]\n' "$ORIGIN_PORT"
        printf '[service.media]\n'
    }
    node_config shield-1 shield "$SHIELD_PORT" "$SHIELD_ADMIN" "" >"$WORK/shield.toml"
    node_config edge-1 edge "$EDGE_PORT" "$EDGE_ADMIN" "$SHIELD_PORT" >"$WORK/edge.toml"
    rm -f "$WORK/edge-1-access.log" "$WORK/shield-1-access.log"
    "$STRATA" check-config "$WORK/shield.toml" >/dev/null
    "$STRATA" check-config "$WORK/edge.toml" >/dev/null
    "$STRATA" shield --config "$WORK/shield.toml" 2>"$WORK/shield-1.log" &
    PIDS+=($!)
    SHIELD_PID=$!
    "$STRATA" edge --config "$WORK/edge.toml" 2>"$WORK/edge-1.log" &
    PIDS+=($!)
    EDGE_PID=$!
    wait_port "$SHIELD_PORT"
    wait_port "$EDGE_PORT"
    LOAD_B0=$(loadavg)
    PLAYER_KIND=$KIND node bench/player/play.mjs "http://127.0.0.1:$EDGE_PORT/live/$MANIFEST" "$SECONDS_RUN" "$KEEP/${P}player-edge.json" >/dev/null
    LOAD_B1=$(loadavg)
    curl -s "http://127.0.0.1:$EDGE_ADMIN/metrics" >"$KEEP/${P}edge-1.metrics"
    curl -s "http://127.0.0.1:$SHIELD_ADMIN/metrics" >"$KEEP/${P}shield-1.metrics"
    stop_origin "${P}edge"
    kill "$EDGE_PID" "$SHIELD_PID"
    wait "$EDGE_PID" "$SHIELD_PID" 2>/dev/null || true
    for f in edge-1-access.log shield-1-access.log edge-1.log shield-1.log edge.toml shield.toml; do
        cp "$WORK/$f" "$KEEP/$P$f" 2>/dev/null || true
    done
    printf 'load average (1/5/15 min) before/after: direct %s / %s; through Strata %s / %s\n' \
        "$LOAD_A0" "$LOAD_A1" "$LOAD_B0" "$LOAD_B1" >"$KEEP/${P}load.txt"
}

KIND=hls MANIFEST=master.m3u8 P="" run_pair ""
if [ -n "${DASH:-}" ] && [ "${DASH}" != 0 ]; then
    rm -f "$KEEP"/dash-*
    KIND=dash MANIFEST=manifest.mpd P="dash-" run_pair " (DASH)"
fi

python3 bench/player/report.py "$KEEP" "$SECONDS_RUN"
if [ -n "${DASH:-}" ] && [ "${DASH}" != 0 ]; then
    python3 bench/player/report.py --dash "$KEEP" "$SECONDS_RUN"
fi
