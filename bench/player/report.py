#!/usr/bin/env python3
"""Summarises a bench/player.sh run from the files it kept (stdlib only).

    python3 bench/player/report.py [--dash] DIR [SECONDS]

With --dash, the DASH pair (DASH=1 bench/player.sh: dash.js on /live/manifest.mpd) from the
same files with a dash- prefix. DIR holds player-{direct,edge}.json (play.mjs), origin-{direct,edge}.json (the origin's /stats
after each run), {edge,shield}-1-access.log and {edge,shield}-1.metrics (run B) and load.txt.
Prints the figures, then markdown rows for bench/README.md.
"""

import json
import os
import re
import sys
from collections import Counter

PART = re.compile(r"^/live/part(\d+)\.(\d+)\.m4s$")
SEG = re.compile(r"^/live/seg(\d+)\.m4s$")
DASH_SEG = re.compile(r"^/live/(video|audio)-seg(\d+)\.m4s$")


def load(d, name):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def origin_summary(o):
    """What the origin was asked for, from its request counts by path and query."""
    parts, blocking, segs = Counter(), Counter(), Counter()
    plain = init = master = 0
    for target, n in o["requests"].items():
        path, _, query = target.partition("?")
        if PART.match(path):
            parts[path] += n
        elif SEG.match(path):
            segs[path] += n
        elif path == "/live/index.m3u8":
            if "_HLS_msn" in query:
                blocking[query] += n
            else:
                plain += n
        elif path == "/live/init.mp4":
            init += n
        elif path == "/live/master.m3u8":
            master += n
    versions = Counter(o["playlist_versions"])
    non200 = {k: v for k, v in o["statuses"].items() if not k.startswith("200 ")}
    return {
        "parts_published": o["parts_published"],
        "part_requests": sum(parts.values()),
        "parts_requested": len(parts),
        "per_part": sum(parts.values()) / len(parts) if parts else 0,
        "per_part_max": max(parts.values(), default=0),
        "parts_asked_more_than_once": sorted((p for p, n in parts.items() if n > 1), key=part_key)[:10],
        "playlist_plain": plain,
        "playlist_blocking": sum(blocking.values()),
        "blocking_keys": len(blocking),
        "per_blocking_key_max": max(blocking.values(), default=0),
        "versions": len(versions),
        "versions_served": sum(versions.values()),
        "per_version": sum(versions.values()) / len(versions) if versions else 0,
        "per_version_max": max(versions.values(), default=0),
        "versions_served_more_than_once": {v: n for v, n in versions.items() if n > 1},
        "segment_requests": sum(segs.values()),
        "segments_requested": len(segs),
        "init": init,
        "master": master,
        "non_200": non200,
        "lag_p50": o.get("part_lag_p50_s"),
        "lag_max": o.get("part_lag_max_s"),
        "not_independent": o.get("segments_not_starting_independent"),
    }


def part_key(path):
    m = PART.match(path)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def access_summary(path):
    """Requests a node served, by kind: count, statuses, cache statuses, duration p50/p95."""
    if not os.path.exists(path):
        return {}
    kinds = {}
    with open(path) as f:
        for line in f:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            p = d["path"]
            if p.startswith("/.well-known"):
                continue
            k = "part" if PART.match(p) else "segment" if SEG.match(p) or DASH_SEG.match(p) else "playlist" if p.endswith(".m3u8") else p
            s = kinds.setdefault(k, {"n": 0, "status": Counter(), "cache": Counter(), "ms": [], "paths": Counter()})
            s["n"] += 1
            s["status"][d["status"]] += 1
            s["cache"][d["cache_status"]] += 1
            s["ms"].append(d["duration_ms"])
            s["paths"][p] += 1
    for s in kinds.values():
        ms = sorted(s.pop("ms"))
        s["ms_p50"] = ms[len(ms) // 2]
        s["ms_p95"] = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        paths = s.pop("paths")
        s["per_path_max"] = max(paths.values())
        s["distinct"] = len(paths)
    return kinds


def metrics(path, names):
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            for n in names:
                if line.startswith(n):
                    key, _, value = line.rpartition(" ")
                    if float(value):
                        out[key] = float(value)
    return out


def fmt(x, unit="s", digits=2):
    if x is None:
        return "n/a"
    if unit == "ms":
        return f"{x * 1000:.0f} ms"
    return f"{x:.{digits}f} {unit}".strip()


def main():
    d = sys.argv[1]
    a, b = load(d, "player-direct.json"), load(d, "player-edge.json")
    oa, ob = origin_summary(load(d, "origin-direct.json")), origin_summary(load(d, "origin-edge.json"))
    edge = access_summary(os.path.join(d, "edge-1-access.log"))
    shield = access_summary(os.path.join(d, "shield-1-access.log"))
    names = ("strata_requests_total", "strata_prefetches_total", "strata_prefetched_bytes_total")
    me, ms = metrics(os.path.join(d, "edge-1.metrics"), names), metrics(os.path.join(d, "shield-1.metrics"), names)

    def row(label, x, y):
        print(f"  {label:<44} {x:>24}   {y:>24}")

    print()
    print(f"players: {a['players']} per run, hls.js {a['hls_js']}, {a['browser']}, "
          f"maxLiveSyncPlaybackRate {a['max_live_sync_playback_rate']}")
    row("", "straight from the origin", "through edge + shield")
    row("played (least of the players)", fmt(a["played_s"], "s", 1) + f" of {a['seconds']}", fmt(b["played_s"], "s", 1) + f" of {b['seconds']}")
    row("first frame after start", fmt(a["first_frame_s"]), fmt(b["first_frame_s"]))
    row("stalls (time stalled)", f"{a['stalls']} ({a['stall_time_s']:.2f} s)", f"{b['stalls']} ({b['stall_time_s']:.2f} s)")
    row("hls.js BUFFER_STALLED_ERROR / fatal", f"{a['buffer_stalled_errors']} / {a['fatal_errors']}", f"{b['buffer_stalled_errors']} / {b['fatal_errors']}")
    row("latency p50 / p95 (PROGRAM-DATE-TIME)", f"{fmt(a['latency_p50_s'])} / {fmt(a['latency_p95_s'])}", f"{fmt(b['latency_p50_s'])} / {fmt(b['latency_p95_s'])}")
    dl50 = b["latency_p50_s"] - a["latency_p50_s"] if a["latency_p50_s"] and b["latency_p50_s"] else None
    dl95 = b["latency_p95_s"] - a["latency_p95_s"] if a["latency_p95_s"] and b["latency_p95_s"] else None
    row("  edge + shield adds (p50 / p95)", "", f"{fmt(dl50, 'ms')} / {fmt(dl95, 'ms')}")
    row("hls.js latency p50 / p95", f"{fmt(a['hls_latency_p50_s'])} / {fmt(a['hls_latency_p95_s'])}", f"{fmt(b['hls_latency_p50_s'])} / {fmt(b['hls_latency_p95_s'])}")
    pa, pb = a["part_delivery"], b["part_delivery"]
    row("part produced -> at player p50 / p95", f"{fmt(pa['p50'], 'ms')} / {fmt(pa['p95'], 'ms')}", f"{fmt(pb['p50'], 'ms')} / {fmt(pb['p95'], 'ms')}")
    la, lb = a["playlist_delivery"], b["playlist_delivery"]
    row("playlist (newest part) -> player p50 / p95", f"{fmt(la['p50'], 'ms')} / {fmt(la['p95'], 'ms')}", f"{fmt(lb['p50'], 'ms')} / {fmt(lb['p95'], 'ms')}")
    row("player loads: playlists / parts / segments", f"{a['loads']['playlist']} / {a['loads']['part']} / {a['loads']['segment']}", f"{b['loads']['playlist']} / {b['loads']['part']} / {b['loads']['segment']}")
    n2a = Counter(f"{x['status']} {x['url'].rsplit('/', 1)[-1].split('?')[0]}" for x in a["non_200"])
    n2b = Counter(f"{x['status']} {x['url'].rsplit('/', 1)[-1].split('?')[0]}" for x in b["non_200"])
    row("non-200 answers seen by players", str(len(a["non_200"])), str(len(b["non_200"])))
    row("dropped / decoded frames", f"{a['dropped_frames']} / {a['total_frames']}", f"{b['dropped_frames']} / {b['total_frames']}")
    print("  origin:")
    row("parts published", str(oa["parts_published"]), str(ob["parts_published"]))
    row("requests per part (max)", f"{oa['per_part']:.2f} ({oa['per_part_max']})", f"{ob['per_part']:.2f} ({ob['per_part_max']})")
    row("part requests / distinct parts", f"{oa['part_requests']} / {oa['parts_requested']}", f"{ob['part_requests']} / {ob['parts_requested']}")
    row("blocking playlist requests / distinct", f"{oa['playlist_blocking']} / {oa['blocking_keys']}", f"{ob['playlist_blocking']} / {ob['blocking_keys']}")
    row("playlist answers per version (max)", f"{oa['per_version']:.2f} ({oa['per_version_max']})", f"{ob['per_version']:.2f} ({ob['per_version_max']})")
    row("plain playlist / master / init requests", f"{oa['playlist_plain']} / {oa['master']} / {oa['init']}", f"{ob['playlist_plain']} / {ob['master']} / {ob['init']}")
    row("segment requests (distinct)", f"{oa['segment_requests']} ({oa['segments_requested']})", f"{ob['segment_requests']} ({ob['segments_requested']})")
    row("non-200 answers", str(sum(oa["non_200"].values())), str(sum(ob["non_200"].values())))
    row("ffmpeg part lag p50 / max", f"{fmt(oa['lag_p50'], 'ms')} / {fmt(oa['lag_max'], 'ms')}", f"{fmt(ob['lag_p50'], 'ms')} / {fmt(ob['lag_max'], 'ms')}")
    if n2a or n2b:
        print("  non-200 seen by players (status, file):", dict(n2a), "|", dict(n2b))
    if oa["non_200"] or ob["non_200"]:
        print("  non-200 at the origin:", oa["non_200"], "|", ob["non_200"])
    if ob["parts_asked_more_than_once"]:
        print("  parts the origin was asked for more than once (through Strata):", ob["parts_asked_more_than_once"])
    if ob["per_version_max"] > 1:
        many = sorted(ob["versions_served_more_than_once"].items())[:10]
        print("  playlist versions the origin served more than once (through Strata):", many)
    print("  Cache-Status seen by players (through Strata):", json.dumps(b.get("cache_status", {})))
    print("  Age seen by players (through Strata):", json.dumps({k: (v["p50"], v["max"]) for k, v in b.get("age", {}).items()}))
    for name, acc in (("edge-1", edge), ("shield-1", shield)):
        for k, s in sorted(acc.items()):
            print(f"  {name} served {k}: {s['n']} ({s['distinct']} distinct, max {s['per_path_max']} per path), "
                  f"status {dict(s['status'])}, {dict(s['cache'])}, {s['ms_p50']:.1f}/{s['ms_p95']:.1f} ms p50/p95")
    print("  edge-1 metrics:", me)
    print("  shield-1 metrics:", ms)
    if os.path.exists(os.path.join(d, "load.txt")):
        print(" ", open(os.path.join(d, "load.txt")).read().strip())

    ok = lambda c: "met" if c else "MISSED"  # noqa: E731
    print("  issue targets: 0 stalls through Strata:", ok(b["stalls"] == 0 and b["fatal_errors"] == 0),
          "| edge adds <= 200 ms latency (p50):", ok(dl50 is not None and dl50 <= 0.2),
          "| each part once per shield:", ok(ob["per_part_max"] == 1),
          "| each playlist version once per shield:", ok(ob["per_version_max"] == 1))

    print()
    print("markdown (bench/README.md):")
    print()
    print(f"| {a['players']} hls.js players, {a['seconds']} s | straight from the origin | through edge + shield |")
    print("|---|---:|---:|")
    print(f"| played (least of the players) | {a['played_s']:.1f} s | {b['played_s']:.1f} s |")
    print(f"| stalls (time stalled) | {a['stalls']} ({a['stall_time_s']:.2f} s) | {b['stalls']} ({b['stall_time_s']:.2f} s) |")
    print(f"| live latency p50 / p95 (PROGRAM-DATE-TIME) | {fmt(a['latency_p50_s'])} / {fmt(a['latency_p95_s'])} | "
          f"{fmt(b['latency_p50_s'])} / {fmt(b['latency_p95_s'])} (**{'+' if (dl50 or 0) >= 0 else ''}{fmt(dl50, 'ms')}** at p50) |")
    print(f"| part produced → at player p50 / p95 | {fmt(pa['p50'], 'ms')} / {fmt(pa['p95'], 'ms')} | {fmt(pb['p50'], 'ms')} / {fmt(pb['p95'], 'ms')} |")
    print(f"| origin requests per part (max) | {oa['per_part']:.2f} ({oa['per_part_max']}) | **{ob['per_part']:.2f}** ({ob['per_part_max']}) |")
    print(f"| origin answers per playlist version (max) | {oa['per_version']:.2f} ({oa['per_version_max']}) | **{ob['per_version']:.2f}** ({ob['per_version_max']}) |")
    print(f"| origin segment / init requests | {oa['segment_requests']} / {oa['init']} | {ob['segment_requests']} / {ob['init']} |")
    print(f"| non-200 answers seen by players | {len(a['non_200'])} | {len(b['non_200'])} |")


def dash_origin_summary(o):
    """What the origin was asked for in a DASH run: segments per track, MPD, init, time."""
    segs = {"video": Counter(), "audio": Counter()}
    mpd = init = timing = other = 0
    for target, n in o["requests"].items():
        path = target.partition("?")[0]
        m = DASH_SEG.match(path)
        if m:
            segs[m.group(1)][path] += n
        elif path == "/live/manifest.mpd":
            mpd += n
        elif path.endswith("-init.mp4"):
            init += n
        elif path in ("/time", "/live/time"):
            timing += n
        elif path != "/stats":
            other += n
    allsegs = segs["video"] + segs["audio"]
    return {
        "segments_published": o["segments_published"],
        "segment_requests": sum(allsegs.values()),
        "segments_requested": len(allsegs),
        "per_segment": sum(allsegs.values()) / len(allsegs) if allsegs else 0,
        "per_segment_max": max(allsegs.values(), default=0),
        "asked_more_than_once": sorted(p for p, n in allsegs.items() if n > 1)[:10],
        "video": len(segs["video"]),
        "audio": len(segs["audio"]),
        "mpd": mpd,
        "init": init,
        "time": timing,
        "other": other,
        "non_200": {k: v for k, v in o["statuses"].items() if not k.startswith("200 ")},
    }


def dash_main(d):
    a, b = load(d, "dash-player-direct.json"), load(d, "dash-player-edge.json")
    oa, ob = dash_origin_summary(load(d, "origin-dash-direct.json")), dash_origin_summary(load(d, "origin-dash-edge.json"))
    edge = access_summary(os.path.join(d, "dash-edge-1-access.log"))
    shield = access_summary(os.path.join(d, "dash-shield-1-access.log"))

    def row(label, x, y):
        print(f"  {label:<44} {x:>24}   {y:>24}")

    print()
    print(f"LL-DASH: players: {a['players']} per run, dash.js {a['hls_js']}, {a['browser']}")
    row("", "straight from the origin", "through edge + shield")
    row("played (least of the players)", fmt(a["played_s"], "s", 1) + f" of {a['seconds']}", fmt(b["played_s"], "s", 1) + f" of {b['seconds']}")
    row("first frame after start", fmt(a["first_frame_s"]), fmt(b["first_frame_s"]))
    row("stalls (time stalled)", f"{a['stalls']} ({a['stall_time_s']:.2f} s)", f"{b['stalls']} ({b['stall_time_s']:.2f} s)")
    row("dash.js PLAYBACK_STALLED / errors", f"{a['buffer_stalled_errors']} / {a['fatal_errors']}", f"{b['buffer_stalled_errors']} / {b['fatal_errors']}")
    row("live latency p50 / p95 (dash.js)", f"{fmt(a['latency_p50_s'])} / {fmt(a['latency_p95_s'])}", f"{fmt(b['latency_p50_s'])} / {fmt(b['latency_p95_s'])}")
    dl50 = b["latency_p50_s"] - a["latency_p50_s"] if a["latency_p50_s"] and b["latency_p50_s"] else None
    row("  edge + shield adds (p50)", "", fmt(dl50, "ms"))
    row("target latency", fmt(a["target_latency_s"]), fmt(b["target_latency_s"]))
    sa, sb = a["part_delivery"], b["part_delivery"]
    row("video segment end -> loaded p50 / p95", f"{fmt(sa['p50'], 'ms')} / {fmt(sa['p95'], 'ms')}", f"{fmt(sb['p50'], 'ms')} / {fmt(sb['p95'], 'ms')}")
    row("player loads: MPD / segments", f"{a['loads']['playlist']} / {a['loads']['segment']}", f"{b['loads']['playlist']} / {b['loads']['segment']}")
    row("non-200 answers seen by players", str(len(a["non_200"])), str(len(b["non_200"])))
    row("dropped / decoded frames", f"{a['dropped_frames']} / {a['total_frames']}", f"{b['dropped_frames']} / {b['total_frames']}")
    print("  origin:")
    row("segments published (each: video + audio)", str(oa["segments_published"]), str(ob["segments_published"]))
    row("requests per segment (max)", f"{oa['per_segment']:.2f} ({oa['per_segment_max']})", f"{ob['per_segment']:.2f} ({ob['per_segment_max']})")
    row("segment requests / distinct (video, audio)", f"{oa['segment_requests']} / {oa['segments_requested']} ({oa['video']}, {oa['audio']})",
        f"{ob['segment_requests']} / {ob['segments_requested']} ({ob['video']}, {ob['audio']})")
    row("MPD / init / UTCTiming requests", f"{oa['mpd']} / {oa['init']} / {oa['time']}", f"{ob['mpd']} / {ob['init']} / {ob['time']}")
    row("non-200 answers", str(sum(oa["non_200"].values())), str(sum(ob["non_200"].values())))
    if oa["non_200"] or ob["non_200"]:
        print("  non-200 at the origin:", oa["non_200"], "|", ob["non_200"])
    n2b = Counter(f"{x['status']} {x['url'].rsplit('/', 1)[-1].split('?')[0]}" for x in b["non_200"])
    if n2b:
        print("  non-200 seen by players through Strata:", dict(n2b))
    if ob["asked_more_than_once"]:
        print("  segments the origin was asked for more than once (through Strata):", ob["asked_more_than_once"])
    print("  Cache-Status seen by players (through Strata):", json.dumps(b.get("cache_status", {})))
    print("  Age seen by players (through Strata):", json.dumps({k: (v["p50"], v["max"]) for k, v in b.get("age", {}).items()}))
    for name, acc in (("edge-1", edge), ("shield-1", shield)):
        for k, s in sorted(acc.items()):
            print(f"  {name} served {k}: {s['n']} ({s['distinct']} distinct, max {s['per_path_max']} per path), "
                  f"status {dict(s['status'])}, {dict(s['cache'])}, {s['ms_p50']:.1f}/{s['ms_p95']:.1f} ms p50/p95")
    if os.path.exists(os.path.join(d, "dash-load.txt")):
        print(" ", open(os.path.join(d, "dash-load.txt")).read().strip())
    print()
    print("markdown (bench/README.md):")
    print()
    print(f"| {a['players']} dash.js players (LL-DASH), {a['seconds']} s | straight from the origin | through edge + shield |")
    print("|---|---:|---:|")
    print(f"| played (least of the players) | {a['played_s']:.1f} s | {b['played_s']:.1f} s |")
    print(f"| stalls (time stalled) | {a['stalls']} ({a['stall_time_s']:.2f} s) | {b['stalls']} ({b['stall_time_s']:.2f} s) |")
    print(f"| live latency p50 / p95 (dash.js) | {fmt(a['latency_p50_s'])} / {fmt(a['latency_p95_s'])} | {fmt(b['latency_p50_s'])} / {fmt(b['latency_p95_s'])} |")
    print(f"| origin requests per segment (max) | {oa['per_segment']:.2f} ({oa['per_segment_max']}) | **{ob['per_segment']:.2f}** ({ob['per_segment_max']}) |")
    print(f"| origin MPD / init requests | {oa['mpd']} / {oa['init']} | {ob['mpd']} / {ob['init']} |")
    print(f"| non-200 answers seen by players | {len(a['non_200'])} | {len(b['non_200'])} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--dash":
        dash_main(sys.argv[2])
    else:
        main()
