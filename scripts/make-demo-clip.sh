#!/usr/bin/env bash
# Encodes the demo's media clip (crates/strata/src/demo/media/assets/clip.mp4): 8 s of
# ffmpeg's test pattern with a beeping tone, H.264 Main 426x240 at 30 fps with a keyframe
# every 2 s, AAC-LC 48 kHz stereo, as CMAF fragments of 1/3 s (10 frames each). The demo
# loops it into a live LL-HLS channel (each fragment a part, six a segment) and a VOD
# asset, re-timing every loop; the audio is cut 1,024 samples short so that with the
# encoder's priming frame it lasts exactly 8 s too (375 frames) and loops without a gap.
#
#   scripts/make-demo-clip.sh            (needs ffmpeg: apt-get install ffmpeg)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=crates/strata/src/demo/media/assets/clip.mp4
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i testsrc=size=426x240:rate=30 \
    -f lavfi -i "sine=frequency=440:sample_rate=48000:beep_factor=4" \
    -filter_complex "[1:a]atrim=end_sample=382976[a]" -t 8 \
    -map 0:v -map "[a]" \
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
    -b:v 250k -maxrate 300k -bufsize 300k -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -b:a 64k -ac 2 \
    -movflags cmaf+frag_keyframe+empty_moov+default_base_moof+delay_moov \
    -frag_duration 333333 -f mp4 "$OUT"
ls -l "$OUT"
