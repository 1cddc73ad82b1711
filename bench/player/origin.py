#!/usr/bin/env python3
"""A live LL-HLS origin fed by ffmpeg in real time (Python 3.11, standard library only).

    python3 bench/player/origin.py [--port 0] [--vod DIR] [--preset veryfast]
                                   [--fps 30 --part-frames 10] [--skip-until 12] [--verbose]

ffmpeg encodes a test pattern (testsrc2, 640x360, 30 fps) with a sine tone in real time (`-re`)
into fragmented MP4 (CMAF) on a pipe: H.264 with a keyframe every 2 s exactly, AAC, one
`moof`+`mdat` fragment every 333 ms (10 frames). This server reads the top-level boxes as they
arrive: `ftyp`+`moov` is the init segment, each `moof`+`mdat` is one LL-HLS part, and the parts of
one GOP (6 parts, 2 s) make one segment, which starts with a keyframe (checked from the `trun`
sample flags; parts that start with one are INDEPENDENT=YES). `EXT-X-PROGRAM-DATE-TIME` is the
wall clock when the segment's first frame was produced (its first part's arrival less its
duration), so players can measure their latency. The first GOP only sets the real-time clock that
tells how late later parts come out of ffmpeg (`part_lag_*` in /stats) and is not published.

HTTP (HTTP/1.1 keep-alive, ThreadingHTTPServer), everything under `/live/`:

  init.mp4, seg<N>.m4s, part<N>.<i>.m4s   media (max-age=3600); the segment being produced is
                                         streamed with chunked transfer as its parts arrive
  index.m3u8                             LL-HLS media playlist (RFC 8216bis): a 30-segment
                                         window, parts of the last 3 segments, a preload hint;
                                         blocking reloads (_HLS_msn/_HLS_part, held up to
                                         3 target durations, then 503) and delta updates
                                         (_HLS_skip=YES)
  master.m3u8                            multivariant playlist, CODECS read from the stream
  manifest.mpd                           low-latency DASH (dash.js plays it) on the same
                                         stream: type="dynamic", a video and an audio
                                         AdaptationSet, SegmentTemplate $Number$ on the 2 s
                                         segments, availabilityTimeOffset (a segment can be
                                         asked for once its first part exists) with
                                         availabilityTimeComplete="false", a ServiceDescription
                                         latency target of 2 s, UTCTiming http-iso on /time
                                         (also /live/time; no-store); the MPD is max-age=1
  video-init.mp4, audio-init.mp4,        one-track init segments and segments for DASH, split
  video-seg<N>.m4s, audio-seg<N>.m4s     from the muxed fragments (each part's moof+mdat is
                                         rewritten into one per track); the segment being
                                         produced (or the next) is streamed chunked a part at a
                                         time like seg<N>.m4s; others not there: 404 max-age=1

`/vod/...` serves a VOD HLS asset generated once into DIR with `--vod DIR` (two renditions, two
audio languages, WebVTT subtitles), and `GET /stats` answers JSON: every request counted by
path and query, the status of every answer, the parts and segments published, and how late the
parts came out of ffmpeg.

The first line on stdout is `listening 127.0.0.1:PORT`. SIGTERM or SIGINT stops the server and
ffmpeg. Nothing is written to disk except the VOD asset in the DIR given.

`--fps 25 --part-frames 8` makes parts of 320 ms that hold exactly 15 AAC frames (at 30 fps
audio and video part boundaries differ by up to one AAC frame, 21 ms); `--skip-until 0` turns
delta updates off.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Set by configure() from the command line (defaults: 30 fps, parts of 10 frames).
FPS = 30
PART_FRAMES = 10  # 333 ms
PARTS_PER_SEGMENT = 6
SEG_FRAMES = PART_FRAMES * PARTS_PER_SEGMENT  # the GOP: a segment is one GOP
SEGMENT_DUR = SEG_FRAMES / FPS  # 2 s
SEGMENT_S = 2  # EXT-X-TARGETDURATION: the segment duration rounded up
PART_TARGET = 0.33334  # >= every part (10 frames at 30 fps = 0.33333 s)
WINDOW = 30  # complete segments in the playlist
PART_SEGMENTS = 3  # the last N segments (the one being produced included) list their parts
KEEP_PARTS = 6  # segments whose parts can still be fetched after leaving the playlist
KEEP_SEGMENTS = WINDOW + 6  # segments that can still be fetched after leaving the playlist
PART_HOLD_BACK = 1.0
SKIP_UNTIL = 12.0  # CAN-SKIP-UNTIL (0: no delta updates)
BLOCK_S = 3 * SEGMENT_S  # the longest a blocking reload is held
HINT_WAIT_S = 3.0  # the longest a request for a part not yet produced is held
DASH_DELAY_S = 2.0  # the DASH latency target (ServiceDescription, suggestedPresentationDelay)
VIDEO_KBPS = 1000
AUDIO_KBPS = 96


def log(*args):
    print("origin:", *args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- ISO BMFF (MP4) boxes


def boxes(buf, start=0, end=None):
    """Yields (type, payload start, box end) for the boxes in buf[start:end]."""
    end = len(buf) if end is None else end
    i = start
    while i + 8 <= end:
        size, typ = struct.unpack(">I4s", buf[i : i + 8])
        head = 8
        if size == 1:
            size = struct.unpack(">Q", buf[i + 8 : i + 16])[0]
            head = 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            return
        yield typ.decode("latin-1"), i + head, i + size
        i += size


def child(buf, start, end, typ):
    for t, s, e in boxes(buf, start, end):
        if t == typ:
            return s, e
    return None


def full_box_version(buf, s):
    return buf[s], int.from_bytes(buf[s + 1 : s + 4], "big")


def read_descriptor(buf, i):
    """An MPEG-4 descriptor (ISO 14496-1) at i: (tag, payload start, payload end)."""
    tag = buf[i]
    i += 1
    size = 0
    for _ in range(4):
        b = buf[i]
        i += 1
        size = (size << 7) | (b & 0x7F)
        if not b & 0x80:
            break
    return tag, i, i + size


def aac_object_type(buf, s, e):
    """The audio object type from an esds box payload, or 2 (AAC-LC)."""
    try:
        tag, p, pe = read_descriptor(buf, s + 4)  # ES_Descriptor after version/flags
        if tag != 3:
            return 2
        flags = buf[p + 2]
        p += 3
        if flags & 0x80:
            p += 2
        if flags & 0x40:
            p += 1 + buf[p]
        if flags & 0x20:
            p += 2
        tag, p, pe = read_descriptor(buf, p)  # DecoderConfigDescriptor
        if tag != 4:
            return 2
        tag, p, _ = read_descriptor(buf, p + 13)  # DecoderSpecificInfo
        if tag != 5:
            return 2
        return buf[p] >> 3
    except IndexError:
        return 2


def parse_moov(buf):
    """Tracks of an init segment: {track_id: {...}}, plus the CODECS string."""
    tracks = {}
    moov = child(buf, 0, len(buf), "moov")
    if not moov:
        raise ValueError("no moov")
    trex = {}
    mvex = child(buf, *moov, "mvex")
    if mvex:
        for t, s, e in boxes(buf, *mvex):
            if t == "trex":
                tid, _desc, dur, _size, flags = struct.unpack(">IIIII", buf[s + 4 : s + 24])
                trex[tid] = (dur, flags)
    codecs = []
    for t, s, e in boxes(buf, *moov):
        if t != "trak":
            continue
        tkhd = child(buf, s, e, "tkhd")
        v, _ = full_box_version(buf, tkhd[0])
        tid = struct.unpack(">I", buf[tkhd[0] + (20 if v == 1 else 12) : tkhd[0] + (24 if v == 1 else 16)])[0]
        mdia = child(buf, s, e, "mdia")
        mdhd = child(buf, *mdia, "mdhd")
        v, _ = full_box_version(buf, mdhd[0])
        ts = struct.unpack(">I", buf[mdhd[0] + (20 if v == 1 else 12) : mdhd[0] + (24 if v == 1 else 16)])[0]
        hdlr = child(buf, *mdia, "hdlr")
        handler = buf[hdlr[0] + 8 : hdlr[0] + 12].decode("latin-1")
        trak = buf[s:e]
        codec = None
        i = trak.find(b"avcC")
        if handler == "vide" and i >= 0:
            codec = "avc1.%02x%02x%02x" % (trak[i + 5], trak[i + 6], trak[i + 7])
        i = trak.find(b"esds")
        if handler == "soun" and i >= 0:
            size = struct.unpack(">I", trak[i - 4 : i])[0]
            codec = "mp4a.40.%d" % aac_object_type(trak, i + 4, i - 4 + size)
        if codec:
            codecs.append(codec)
        dur, flags = trex.get(tid, (0, 0))
        tracks[tid] = {"timescale": ts, "handler": handler, "codec": codec, "trex_duration": dur, "trex_flags": flags}
    return tracks, ",".join(codecs)


def parse_moof(buf, tracks, video_tid):
    """(base media decode time, duration, first sample is a sync sample) of the video track."""
    moof = child(buf, 0, len(buf), "moof")
    for t, s, e in boxes(buf, *moof):
        if t != "traf":
            continue
        info = {"tfdt": None, "dur": 0, "sync": False}
        tid = None
        default_dur = default_flags = None
        for t3, s3, e3 in boxes(buf, s, e):
            v, fl = full_box_version(buf, s3)
            if t3 == "tfhd":
                tid = struct.unpack(">I", buf[s3 + 4 : s3 + 8])[0]
                p = s3 + 8
                if fl & 0x01:
                    p += 8
                if fl & 0x02:
                    p += 4
                if fl & 0x08:
                    default_dur = struct.unpack(">I", buf[p : p + 4])[0]
                    p += 4
                if fl & 0x10:
                    p += 4
                if fl & 0x20:
                    default_flags = struct.unpack(">I", buf[p : p + 4])[0]
            elif t3 == "tfdt":
                fmt, n = (">Q", 8) if v == 1 else (">I", 4)
                info["tfdt"] = struct.unpack(fmt, buf[s3 + 4 : s3 + 4 + n])[0]
            elif t3 == "trun" and tid == video_tid:
                track = tracks[tid]
                if default_dur is None:
                    default_dur = track["trex_duration"]
                if default_flags is None:
                    default_flags = track["trex_flags"]
                count = struct.unpack(">I", buf[s3 + 4 : s3 + 8])[0]
                p = s3 + 8
                if fl & 0x01:
                    p += 4
                first_flags = None
                if fl & 0x04:
                    first_flags = struct.unpack(">I", buf[p : p + 4])[0]
                    p += 4
                for k in range(count):
                    dur, flags = default_dur, default_flags
                    if fl & 0x100:
                        dur = struct.unpack(">I", buf[p : p + 4])[0]
                        p += 4
                    if fl & 0x200:
                        p += 4
                    if fl & 0x400:
                        flags = struct.unpack(">I", buf[p : p + 4])[0]
                        p += 4
                    if fl & 0x800:
                        p += 4
                    if k == 0:
                        flags = first_flags if first_flags is not None else flags
                        info["sync"] = not flags & 0x00010000  # sample_is_non_sync_sample
                    info["dur"] += dur
        if tid == video_tid:
            return info
    raise ValueError("moof without the video track")


def box(typ, payload):
    return struct.pack(">I4s", 8 + len(payload), typ.encode("latin-1")) + payload


def split_init(buf, tid):
    """A one-track init segment (ftyp + moov with only track `tid`'s trak and trex)."""
    out = b""
    for t, s, e in boxes(buf):
        if t != "moov":
            out += buf[s - 8 : e]
            continue
        moov = b""
        for t2, s2, e2 in boxes(buf, s, e):
            if t2 == "trak":
                tkhd = child(buf, s2, e2, "tkhd")
                v, _ = full_box_version(buf, tkhd[0])
                o = tkhd[0] + (20 if v == 1 else 12)
                if struct.unpack(">I", buf[o : o + 4])[0] != tid:
                    continue
                moov += buf[s2 - 8 : e2]
            elif t2 == "mvex":
                mvex = b""
                for t3, s3, e3 in boxes(buf, s2, e2):
                    if t3 == "trex" and struct.unpack(">I", buf[s3 + 4 : s3 + 8])[0] != tid:
                        continue
                    mvex += buf[s3 - 8 : e3]
                moov += box("mvex", mvex)
            else:
                moov += buf[s2 - 8 : e2]
        out += box("moov", moov)
    return out


def split_fragment(buf):
    """{track_id: a one-track moof+mdat} from a muxed fragment (default_base_moof, one trun
    per traf with a data offset, each track's samples contiguous in the mdat as ffmpeg
    writes them)."""
    moof = child(buf, 0, len(buf), "moof")
    mdat = child(buf, 0, len(buf), "mdat")
    base = moof[0] - 8  # offsets are from the moof's first byte
    mfhd = None
    trafs = []  # (tid, traf start, traf end, trun data_offset position, data start)
    for t, s, e in boxes(buf, *moof):
        if t == "mfhd":
            mfhd = buf[s - 8 : e]
        elif t == "traf":
            tid = pos = None
            for t3, s3, e3 in boxes(buf, s, e):
                if t3 == "tfhd":
                    tid = struct.unpack(">I", buf[s3 + 4 : s3 + 8])[0]
                elif t3 == "trun":
                    if pos is not None or not buf[s3 + 3] & 0x01:
                        raise ValueError("traf without one trun with a data offset")
                    pos = s3 + 8
            off = struct.unpack(">i", buf[pos : pos + 4])[0]
            trafs.append((tid, s - 8, e, pos, base + off))
    out = {}
    ordered = sorted(trafs, key=lambda x: x[4])
    for k, (tid, ts_, te, pos, ds) in enumerate(ordered):
        de = ordered[k + 1][4] if k + 1 < len(ordered) else mdat[1]
        if not mdat[0] <= ds <= de <= mdat[1]:
            raise ValueError("sample data outside the mdat")
        traf = bytearray(buf[ts_:te])
        moof_len = 8 + len(mfhd) + len(traf)
        p = pos - ts_
        traf[p : p + 4] = struct.pack(">i", moof_len + 8)
        out[tid] = box("moof", mfhd + bytes(traf)) + box("mdat", buf[ds:de])
    return out


# ---------------------------------------------------------------- the live stream


class Segment:
    def __init__(self, msn, start):
        self.msn = msn
        self.start = start  # media time (video timescale) of its first frame
        self.parts = []  # [Part]
        self.ticks = 0
        self.complete = False
        self.pdt = None  # wall clock (s) of its first frame
        self.parts_dropped = False  # only the whole segment can still be fetched
        self._data = None
        self._track_data = {}

    def data(self, track=None):
        if track is not None:
            if track not in self._track_data and self.complete:
                self._track_data[track] = b"".join(p.tracks.get(track, b"") for p in self.parts)
            return self._track_data.get(track)
        if self._data is None and self.complete:
            self._data = b"".join(p.data for p in self.parts)
        return self._data


class Part:
    def __init__(self, data, ticks, independent, tracks=None):
        self.data = data
        self.ticks = ticks
        self.independent = independent
        self.tracks = tracks or {}  # "video"/"audio" -> the part's one-track fragment (DASH)


class Live:
    """The stream's state; every change notifies `cv`."""

    def __init__(self):
        self.cv = threading.Condition()
        self.init = None
        self.track_inits = {}  # "video"/"audio" -> one-track init segment (DASH)
        self.track_ids = {}
        self.audio_tid = None
        self.dash_ast = None  # the MPD's availabilityStartTime (wall clock of media time 0)
        self.codecs = None
        self.tracks = None
        self.video_tid = None
        self.ts = None  # video timescale
        self.segments = {}  # msn -> Segment (complete ones and the one being produced)
        self.current = None  # the Segment being produced (may have no parts yet)
        self.anchor = None  # monotonic clock of media time 0 (to see ffmpeg fall behind)
        self.warmup = None  # media time of the first GOP, which only sets the clock
        self.parts_published = 0
        self.segments_published = 0
        self.not_independent = 0  # segments whose first part did not start with a keyframe
        self.part_over_target = 0
        self.lags = []  # how late each part came out of ffmpeg (s, real time), last 10,000
        self.ended = False

    # -- producer side (the reader thread)

    def on_init(self, data):
        tracks, codecs = parse_moov(data)
        with self.cv:
            self.init, self.tracks, self.codecs = data, tracks, codecs
            self.video_tid = next(t for t, v in tracks.items() if v["handler"] == "vide")
            self.ts = tracks[self.video_tid]["timescale"]
            self.audio_tid = next((t for t, v in tracks.items() if v["handler"] == "soun"), None)
            self.track_ids = {"video": self.video_tid, "audio": self.audio_tid}
            self.track_inits = {k: split_init(data, t) for k, t in self.track_ids.items() if t is not None}
            self.cv.notify_all()
        log("init segment", len(data), "bytes, codecs", codecs)

    def on_fragment(self, data):
        wall, now = time.time(), time.monotonic()
        info = parse_moof(data, self.tracks, self.video_tid)
        by_tid = split_fragment(data)
        per_track = {k: by_tid[t] for k, t in self.track_ids.items() if t in by_tid}
        start, ticks, sync = info["tfdt"], info["dur"], info["sync"]
        ts = self.ts
        end_s = (start + ticks) / ts
        with self.cv:
            if self.current is None:
                # The first GOP only sets the clock: media time 0 was produced at the earliest
                # arrival minus the media end (ffmpeg may start late and catch up, never early),
                # and later parts that come out later than that were late (CPU starved).
                if self.warmup is None:
                    if not sync:
                        return
                    self.warmup = start
                elif sync:
                    msn = round(start / (SEGMENT_DUR * ts))
                    self.current = Segment(msn, start)
                    self.segments[msn] = self.current
                    log(f"clock set, publishing from segment {msn}")
                if self.current is None:
                    self.anchor = min(self.anchor or now, now - end_s)
                    return
            cur = self.current
            if not cur.parts:
                # The wall clock when its first frame was produced: ffmpeg writes a part out
                # when the frame after it comes (-re paces frames on the monotonic clock,
                # which the wall clock here drifts from, so the wall clock is read per segment).
                cur.pdt = wall - ticks / ts
                if not sync:
                    self.not_independent += 1
                    log(f"segment {cur.msn} does not start with a keyframe")
            cur.parts.append(Part(data, ticks, sync, per_track))
            cur.ticks += ticks
            self.parts_published += 1
            if ticks / ts > PART_TARGET:
                self.part_over_target += 1
            self.lags.append(now - (self.anchor + end_s))
            del self.lags[:-10000]
            if cur.ticks >= SEGMENT_DUR * ts - ts // 1000:
                cur.complete = True
                self.segments_published += 1
                nxt = Segment(cur.msn + 1, cur.start + cur.ticks)
                self.segments[nxt.msn] = nxt
                self.current = nxt
                for old in [m for m in self.segments if m < nxt.msn - KEEP_SEGMENTS]:
                    del self.segments[old]
                for m, seg in self.segments.items():
                    if m < nxt.msn - KEEP_PARTS and seg.parts and seg.complete:
                        seg.data()
                        seg.parts_dropped = True
            self.cv.notify_all()

    def end(self):
        with self.cv:
            self.ended = True
            self.cv.notify_all()

    # -- queries (call with cv held)

    def last_complete(self):
        return self.current.msn - 1 if self.current else None

    def first_listed(self):
        lc = self.last_complete()
        first = max(lc - WINDOW + 1, min(self.segments))
        return first

    def has_part(self, msn, part):
        """Is part `part` of segment `msn` in the playlist, or a later one (RFC 8216bis 6.2.5.2:
        an index past the segment's last part means part 0 of the next segment)?"""
        cur = self.current
        if cur is None:
            return False
        if msn < cur.msn:
            seg = self.segments.get(msn)
            if seg is None or part < len(seg.parts):
                return True
            return self.has_part(msn + 1, 0)
        if msn == cur.msn:
            return part < len(cur.parts)
        return False

    def part_settled(self, msn, i):
        """Part i of segment msn exists, or never will (its segment ended with fewer parts)."""
        seg = self.segments.get(msn)
        if seg is None:
            return msn < self.current.msn
        return i < len(seg.parts) or seg.complete

    def has_segment(self, msn):
        lc = self.last_complete()
        return lc is not None and msn <= lc

    def playlist(self, skip=False):
        cur = self.current
        lc = cur.msn - 1
        first = self.first_listed()
        listed = [self.segments[m] for m in range(first, lc + 1)]
        out = [
            "#EXTM3U",
            "#EXT-X-VERSION:9",
            f"#EXT-X-TARGETDURATION:{SEGMENT_S}",
            f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={PART_HOLD_BACK:.1f}"
            + (f",CAN-SKIP-UNTIL={SKIP_UNTIL:.1f}" if SKIP_UNTIL else ""),
            f"#EXT-X-PART-INF:PART-TARGET={PART_TARGET}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            '#EXT-X-MAP:URI="init.mp4"',
        ]
        skipped = 0
        if skip:
            # Segments that end at least CAN-SKIP-UNTIL before the end of the playlist.
            total = sum(s.ticks for s in listed) + cur.ticks
            acc = 0
            for s in listed:
                acc += s.ticks
                if (total - acc) / self.ts >= SKIP_UNTIL:
                    skipped += 1
                else:
                    break
            if skipped:
                out.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        for seg in listed[skipped:]:
            out.append("#EXT-X-PROGRAM-DATE-TIME:" + iso(seg.pdt))
            if seg.msn > cur.msn - PART_SEGMENTS:
                out.extend(part_lines(seg, self.ts))
            out.append(f"#EXTINF:{seg.ticks / self.ts:.5f},")
            out.append(f"seg{seg.msn}.m4s")
        if cur.parts:
            out.append("#EXT-X-PROGRAM-DATE-TIME:" + iso(cur.pdt))
            out.extend(part_lines(cur, self.ts))
        out.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part{cur.msn}.{len(cur.parts)}.m4s"')
        version = f"{cur.msn}.{len(cur.parts)}" + (f"-skip{skipped}" if skip else "")
        return "\n".join(out) + "\n", version

    def mpd(self):
        """Low-latency DASH (ISO 23009-1, DASH-IF IOP low-latency): a video and an audio
        AdaptationSet, each a SegmentTemplate $Number$ on the 2 s segments (one-track
        fragments split from the muxed stream), each segment available
        availabilityTimeOffset before its end: once its first part exists, then sent with
        chunked transfer as its parts arrive. Segment N starts at media time N * 2 s, so at
        availabilityStartTime + N * 2 s of wall clock."""
        if self.dash_ast is None:
            # Set once: availabilityStartTime must not move between MPD updates (each
            # segment's wall clock is read anew and jitters). The earliest estimate over the
            # segments so far: a segment whose first part came out of ffmpeg late (CPU
            # starved at the start) reads as produced later than it was, never earlier.
            self.dash_ast = min(s.pdt - s.start / self.ts for s in self.segments.values() if s.pdt is not None)
        start = datetime.fromtimestamp(self.dash_ast, timezone.utc)
        ato = SEGMENT_DUR - PART_TARGET  # a segment can be asked for once its first part exists
        sets = []
        for k, name in enumerate(("video", "audio")):
            tid = self.track_ids.get(name)
            if tid is None:
                continue
            tr = self.tracks[tid]
            ts = tr["timescale"]
            if name == "video":
                kbps = VIDEO_KBPS
                head = f'contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" maxWidth="640" maxHeight="360" frameRate="{FPS}"'
                rep = f'id="video" codecs="{tr["codec"]}" bandwidth="{kbps * 1000}" width="640" height="360" sar="1:1"'
                extra = ""
            else:
                kbps = AUDIO_KBPS
                head = 'contentType="audio" mimeType="audio/mp4" segmentAlignment="true" lang="en"'
                rep = f'id="audio" codecs="{tr["codec"]}" bandwidth="{kbps * 1000}" audioSamplingRate="{ts}"'
                extra = '\n        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>'
            sets.append(f"""    <AdaptationSet id="{k}" {head}>
      <Representation {rep}>{extra}
        <SegmentTemplate timescale="{ts}" duration="{round(SEGMENT_DUR * ts)}" startNumber="0" initialization="{name}-init.mp4" media="{name}-seg$Number$.m4s" availabilityTimeOffset="{ato:.3f}" availabilityTimeComplete="false"/>
      </Representation>
    </AdaptationSet>""")
        sets = "\n".join(sets)
        return f"""<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011,http://www.dashif.org/guidelines/low-latency-live-v5" type="dynamic" availabilityStartTime="{iso_dt(start)}" publishTime="{iso(time.time())}" minimumUpdatePeriod="PT{SEGMENT_S}S" minBufferTime="PT1S" timeShiftBufferDepth="PT{WINDOW * SEGMENT_S}S" maxSegmentDuration="PT{SEGMENT_S}S" suggestedPresentationDelay="PT{DASH_DELAY_S:g}S">
  <ServiceDescription id="0">
    <Latency target="{round(DASH_DELAY_S * 1000)}" max="{round(DASH_DELAY_S * 2000 + 1000)}" min="{round(DASH_DELAY_S * 500)}" referenceId="0"/>
    <PlaybackRate max="1.04" min="0.96"/>
  </ServiceDescription>
  <Period id="0" start="PT0S">
{sets}
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="/time"/>
</MPD>
"""


def part_lines(seg, ts):
    lines = []
    for i, p in enumerate(seg.parts):
        ind = ",INDEPENDENT=YES" if p.independent else ""
        lines.append(f'#EXT-X-PART:DURATION={p.ticks / ts:.5f},URI="part{seg.msn}.{i}.m4s"{ind}')
    return lines


def iso(t):
    return iso_dt(datetime.fromtimestamp(t, timezone.utc))


def iso_dt(d):
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_boxes(stream, live, stop):
    """Reads top-level boxes from ffmpeg's stdout until EOF."""
    pending = b""
    ftyp = b""

    def exact(n):
        data = stream.read(n)
        if len(data) != n:
            raise EOFError
        return data

    try:
        while not stop.is_set():
            head = exact(8)
            size, typ = struct.unpack(">I4s", head)
            if size == 1:
                ext = exact(8)
                head += ext
                size = struct.unpack(">Q", ext)[0]
            if size < len(head):
                raise ValueError(f"box {typ!r} of size {size}")
            box = head + exact(size - len(head))
            if typ == b"ftyp":
                ftyp = box
            elif typ == b"moov":
                live.on_init(ftyp + box)
            elif typ == b"mdat":
                live.on_fragment(pending + box)
                pending = b""
            elif typ == b"mfra":
                pass
            else:  # moof, and styp/prft/sidx if any: they go with the next mdat
                pending += box
    except EOFError:
        pass
    except Exception as e:  # a parse error ends the stream; the server says so
        log("stream error:", repr(e))
    live.end()
    stop.set()


# ---------------------------------------------------------------- statistics


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}
        self.statuses = {}
        self.playlist_versions = {}

    def request(self, target):
        with self.lock:
            self.requests[target] = self.requests.get(target, 0) + 1

    def status(self, target, code):
        key = f"{code} {target}"
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + 1

    def version(self, v):
        with self.lock:
            self.playlist_versions[v] = self.playlist_versions.get(v, 0) + 1

    def snapshot(self, live):
        with live.cv:
            lags = sorted(live.lags)
            extra = {
                "parts_published": live.parts_published,
                "segments_published": live.segments_published,
                "live_edge": f"{live.current.msn}.{len(live.current.parts)}" if live.current else None,
                "segments_not_starting_independent": live.not_independent,
                "parts_over_part_target": live.part_over_target,
                "part_lag_p50_s": round(lags[len(lags) // 2], 4) if lags else None,
                "part_lag_max_s": round(lags[-1], 4) if lags else None,
                "ended": live.ended,
            }
        with self.lock:
            return {
                "requests": dict(self.requests),
                "statuses": dict(self.statuses),
                "playlist_versions": dict(self.playlist_versions),
                **extra,
            }


# ---------------------------------------------------------------- HTTP


SEG_RE = re.compile(r"^/live/seg(\d+)\.m4s$")
PART_RE = re.compile(r"^/live/part(\d+)\.(\d+)\.m4s$")
DASH_SEG_RE = re.compile(r"^/live/(video|audio)-seg(\d+)\.m4s$")
DASH_INIT_RE = re.compile(r"^/live/(video|audio)-init\.mp4$")
CTYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".vtt": "text/vtt",
    ".ts": "video/mp2t",
    ".aac": "audio/aac",
    ".mpd": "application/dash+xml",
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "strata-bench-origin"
    timeout = 120  # idle keep-alive connections

    def log_message(self, fmt, *args):
        if self.server.verbose:
            log(self.address_string(), fmt % args)

    def send(self, code, body=b"", ctype="text/plain", cache="no-store", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.server.stats.status(self.path, code)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("Access-Control-Allow-Origin", "*")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def not_found(self, why="not found"):
        self.send(404, why + "\n", cache="max-age=1")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        stats, live = self.server.stats, self.server.live
        stats.request(self.path)
        url = urlsplit(self.path)
        path = url.path
        try:
            if path == "/stats":
                return self.send(200, json.dumps(stats.snapshot(live), indent=1), "application/json")
            if path in ("/live/time", "/time"):
                return self.send(200, iso(time.time()), "text/plain")
            if path.startswith("/vod/") and self.server.vod:
                return self.vod(path[len("/vod/") :])
            if path == "/live/index.m3u8":
                return self.media_playlist(url.query)
            if path == "/live/master.m3u8":
                return self.master()
            if path == "/live/manifest.mpd":
                if not self.wait(lambda: live.current is not None, 5):
                    return self.send(503, "not started\n", headers={"Retry-After": "1"})
                with live.cv:
                    body = live.mpd()
                return self.send(200, body, CTYPES[".mpd"], "max-age=1")
            if path == "/live/init.mp4":
                if not self.wait(lambda: live.init is not None, 5):
                    return self.send(503, "not started\n", headers={"Retry-After": "1"})
                return self.send(200, live.init, "video/mp4", "max-age=3600")
            m = DASH_INIT_RE.match(path)
            if m:
                if not self.wait(lambda: m.group(1) in live.track_inits, 5):
                    return self.send(503, "not started\n", headers={"Retry-After": "1"})
                return self.send(200, live.track_inits[m.group(1)], "video/mp4", "max-age=3600")
            m = PART_RE.match(path)
            if m:
                return self.part(int(m.group(1)), int(m.group(2)))
            m = SEG_RE.match(path)
            if m:
                return self.segment(int(m.group(1)))
            m = DASH_SEG_RE.match(path)
            if m:
                return self.segment(int(m.group(2)), m.group(1))
            self.not_found()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def wait(self, predicate, timeout):
        live = self.server.live
        with live.cv:
            return live.cv.wait_for(lambda: predicate() or live.ended, timeout) and not live.ended

    def master(self):
        live = self.server.live
        if not self.wait(lambda: live.current is not None, 8):
            return self.send(503, "not started\n", headers={"Retry-After": "1"})
        body = (
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n"
            f'#EXT-X-STREAM-INF:BANDWIDTH={int((VIDEO_KBPS + AUDIO_KBPS) * 1100)},'
            f'AVERAGE-BANDWIDTH={(VIDEO_KBPS + AUDIO_KBPS) * 1000},CODECS="{live.codecs}",'
            f"RESOLUTION=640x360,FRAME-RATE={FPS:.3f}\nindex.m3u8\n"
        )
        self.send(200, body, CTYPES[".m3u8"], "max-age=1")

    def media_playlist(self, query):
        live = self.server.live
        try:
            q = parse_qs(query, keep_blank_values=True, strict_parsing=False)
        except ValueError:
            return self.send(400, "bad query\n")
        directives = {}
        for k in ("_HLS_msn", "_HLS_part", "_HLS_skip"):
            if k in q:
                if len(q[k]) != 1:
                    return self.send(400, f"{k} repeated\n")
                directives[k] = q[k][0]
        msn = part = None
        try:
            if "_HLS_msn" in directives:
                msn = int(directives["_HLS_msn"])
            if "_HLS_part" in directives:
                part = int(directives["_HLS_part"])
        except ValueError:
            return self.send(400, "_HLS_msn and _HLS_part are integers\n")
        if (msn is not None and msn < 0) or (part is not None and part < 0):
            return self.send(400, "negative directive\n")
        if part is not None and msn is None:
            return self.send(400, "_HLS_part without _HLS_msn\n")
        skip = directives.get("_HLS_skip")
        if skip is not None and skip not in ("YES", "v2"):
            return self.send(400, "_HLS_skip is YES or v2\n")
        if not self.wait(lambda: live.current is not None and live.current.msn > min(live.segments), 8):
            return self.send(503, "not started\n", headers={"Retry-After": "1"})
        if msn is not None:
            with live.cv:
                if msn > live.last_complete() + 2:
                    body = f"_HLS_msn={msn} is more than two segments past {live.last_complete()}\n"
                    return self.send(400, body, cache="max-age=1")
            ready = (lambda: live.has_part(msn, part)) if part is not None else (lambda: live.has_segment(msn))
            if not self.wait(ready, BLOCK_S):
                return self.send(503, "playlist not ready\n", headers={"Retry-After": "1"})
        with live.cv:
            body, version = live.playlist(skip=skip is not None)
        self.server.stats.version(version)
        # A blocking reload's answer is one playlist version under its own URL (Apple's
        # LL-HLS guidance lets caches keep it); the plain URL changes every part.
        self.send(200, body, CTYPES[".m3u8"], "max-age=6" if msn is not None else "max-age=1")

    def part(self, msn, i):
        live = self.server.live
        with live.cv:
            cur = live.current
            if cur is None:
                return self.send(503, "not started\n", headers={"Retry-After": "1"})
            seg = live.segments.get(msn)
            # Not yet produced: the hinted part, or a few parts past it (players and
            # caches ask ahead); anything further is not held.
            ahead = (msn == cur.msn and i < 12) or (msn == cur.msn + 1 and i < 6)
        if ahead:
            self.wait(lambda: live.part_settled(msn, i), HINT_WAIT_S)
        with live.cv:
            seg = live.segments.get(msn)
            if seg is None or getattr(seg, "parts_dropped", False) or i >= len(seg.parts):
                return self.not_found("no such part")
            data = seg.parts[i].data
        self.send(200, data, "video/mp4", "max-age=3600")

    def segment(self, msn, track=None):
        live = self.server.live
        with live.cv:
            cur = live.current
            if cur is None:
                return self.send(503, "not started\n", headers={"Retry-After": "1"})
            seg = live.segments.get(msn)
            if seg is not None and seg.complete:
                data = seg.data(track)
            elif msn in (cur.msn, cur.msn + 1):
                data = None
            else:
                return self.not_found("no such segment")
        if data is not None:
            return self.send(200, data, "video/mp4", "max-age=3600")
        self.stream_segment(msn, track)

    def stream_segment(self, msn, track=None):
        """The segment being produced (or the next one): chunked transfer, a part at a time,
        as low-latency DASH players and CDNs ask for it before it is complete."""
        live = self.server.live
        if not self.wait(lambda: live.has_part(msn, 0), SEGMENT_S + HINT_WAIT_S):
            return self.not_found("segment not started")
        self.server.stats.status(self.path, 200)
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "max-age=3600")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        sent = 0
        deadline = time.monotonic() + 3 * SEGMENT_S
        while time.monotonic() < deadline:
            with live.cv:
                live.cv.wait_for(
                    lambda: live.ended or msn not in live.segments or len(live.segments[msn].parts) > sent or live.segments[msn].complete,
                    max(0.0, deadline - time.monotonic()),
                )
                seg = live.segments.get(msn)
                new = [(p.data if track is None else p.tracks.get(track, b"")) for p in seg.parts[sent:]] if seg else []
                done = seg is None or (seg.complete and sent + len(new) == len(seg.parts)) or live.ended
            for chunk in new:
                if not chunk:
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            sent += len(new)
            if done:
                break
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def vod(self, rel):
        root = os.path.realpath(self.server.vod)
        full = os.path.realpath(os.path.join(root, rel))
        if not full.startswith(root + os.sep) or not os.path.isfile(full):
            return self.not_found()
        with open(full, "rb") as f:
            body = f.read()
        ext = os.path.splitext(full)[1]
        cache = "max-age=60" if ext == ".m3u8" else "max-age=86400"
        self.send(200, body, CTYPES.get(ext, "application/octet-stream"), cache)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


# ---------------------------------------------------------------- ffmpeg


def ffmpeg_live(preset):
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning",
        "-re", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", preset, "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-profile:v", "high", "-level", "3.0",
        "-g", str(SEG_FRAMES), "-keyint_min", str(SEG_FRAMES), "-sc_threshold", "0",
        "-b:v", f"{VIDEO_KBPS}k", "-maxrate", f"{VIDEO_KBPS}k", "-bufsize", f"{VIDEO_KBPS}k",
        "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ac", "2",
        "-f", "mp4", "-movflags", "cmaf+frag_keyframe+empty_moov+default_base_moof+delay_moov",
        "-frag_duration", str(int(PART_FRAMES * 1_000_000 / FPS)),
        "pipe:1",
    ]  # fmt: skip


VTT_CUES = 15


def make_vod(out, seconds=30):
    """A VOD HLS asset in `out` (once): 640x360 and 320x180 video, English and German audio
    (sine tones of 440 and 660 Hz), WebVTT subtitles; out/master.m3u8 names them all."""
    if os.path.exists(os.path.join(out, "master.m3u8")):
        return
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="vod.", dir=out)
    try:
        gop = ["-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-preset", "veryfast"]
        hls = ["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4"]
        src = ["-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}"]
        for name, size, rate in (("360p", "640x360", "800k"), ("180p", "320x180", "300k")):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *src, "-an", "-s", size,
                   "-c:v", "libx264", "-b:v", rate, *gop, *hls,
                   "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", f"{d}/seg%d.m4s",
                   f"{d}/index.m3u8"]  # fmt: skip
            subprocess.run(cmd, check=True)
        for lang, freq in (("eng", 440), ("deu", 660)):
            d = os.path.join(tmp, "audio-" + lang)
            os.makedirs(d)
            cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                   "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=48000:duration={seconds}",
                   "-c:a", "aac", "-b:a", "96k", "-ac", "2", "-metadata:s:a:0", f"language={lang}", *hls,
                   "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", f"{d}/seg%d.m4s",
                   f"{d}/index.m3u8"]  # fmt: skip
            subprocess.run(cmd, check=True)
        d = os.path.join(tmp, "subs-eng")
        os.makedirs(d)
        cues = ["WEBVTT", ""]
        step = seconds / VTT_CUES
        for k in range(VTT_CUES):
            a, b = k * step, (k + 1) * step - 0.1
            cues += [f"{vtt_time(a)} --> {vtt_time(b)}", f"Subtitle {k + 1}: {a:.0f} s", ""]
        with open(os.path.join(d, "subs.vtt"), "w") as f:
            f.write("\n".join(cues))
        with open(os.path.join(d, "index.m3u8"), "w") as f:
            f.write(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{seconds}\n#EXT-X-MEDIA-SEQUENCE:0\n"
                    f"#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{seconds:.3f},\nsubs.vtt\n#EXT-X-ENDLIST\n")  # fmt: skip
        codecs = {}
        for name in ("360p", "180p"):
            with open(os.path.join(tmp, name, "init.mp4"), "rb") as f:
                codecs[name] = parse_moov(f.read())[1]
        with open(os.path.join(tmp, "audio-eng", "init.mp4"), "rb") as f:
            acodec = parse_moov(f.read())[1]
        master = [
            "#EXTM3U",
            "#EXT-X-VERSION:6",
            "#EXT-X-INDEPENDENT-SEGMENTS",
            '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",LANGUAGE="en",NAME="English",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio-eng/index.m3u8"',
            '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",LANGUAGE="de",NAME="Deutsch",DEFAULT=NO,AUTOSELECT=YES,CHANNELS="2",URI="audio-deu/index.m3u8"',
            '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",LANGUAGE="en",NAME="English",DEFAULT=YES,AUTOSELECT=YES,URI="subs-eng/index.m3u8"',
        ]
        for name, res, bw in (("360p", "640x360", 1_000_000), ("180p", "320x180", 450_000)):
            master.append(
                f'#EXT-X-STREAM-INF:BANDWIDTH={bw},CODECS="{codecs[name]},{acodec}",RESOLUTION={res},'
                'FRAME-RATE=30.000,AUDIO="aud",SUBTITLES="subs"'
            )
            master.append(f"{name}/index.m3u8")
        with open(os.path.join(tmp, "master.m3u8"), "w") as f:
            f.write("\n".join(master) + "\n")
        for entry in os.listdir(tmp):
            os.replace(os.path.join(tmp, entry), os.path.join(out, entry))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def vtt_time(t):
    return "%02d:%02d:%06.3f" % (t // 3600, t % 3600 // 60, t % 60)


def configure(fps, part_frames, skip_until):
    global FPS, PART_FRAMES, SEG_FRAMES, SEGMENT_DUR, SEGMENT_S, PART_TARGET, SKIP_UNTIL, BLOCK_S
    FPS, PART_FRAMES, SKIP_UNTIL = fps, part_frames, skip_until
    SEG_FRAMES = PART_FRAMES * PARTS_PER_SEGMENT
    SEGMENT_DUR = SEG_FRAMES / FPS
    SEGMENT_S = math.ceil(SEGMENT_DUR - 1e-9)
    PART_TARGET = math.ceil(PART_FRAMES / FPS * 100000 - 1e-6) / 100000
    BLOCK_S = 3 * SEGMENT_S
    if SKIP_UNTIL and SKIP_UNTIL < 6 * SEGMENT_S:
        raise SystemExit("--skip-until must be 0 or at least six target durations")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--preset", default="veryfast", help="x264 preset")
    ap.add_argument("--vod", metavar="DIR", help="generate (once) and serve a VOD asset under /vod/")
    ap.add_argument("--fps", type=int, default=30, help="frame rate (25 with --part-frames 8 aligns AAC frames to parts)")
    ap.add_argument("--part-frames", type=int, default=10, help="video frames per part; a segment is 6 parts")
    ap.add_argument("--skip-until", type=float, default=12.0, help="CAN-SKIP-UNTIL seconds, 0 for no delta updates")
    ap.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = ap.parse_args()
    configure(args.fps, args.part_frames, args.skip_until)

    if args.vod:
        make_vod(args.vod)

    stop = threading.Event()
    live = Live()
    server = Server((args.bind, args.port), Handler)
    server.live, server.stats, server.verbose = live, Stats(), args.verbose
    server.vod = args.vod
    host, port = server.server_address[:2]
    print(f"listening {host}:{port}", flush=True)

    ff = subprocess.Popen(ffmpeg_live(args.preset), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    reader = threading.Thread(target=read_boxes, args=(ff.stdout, live, stop), daemon=True)
    reader.start()
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    serving.start()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    code = 0
    if ff.poll() is not None:
        log(f"ffmpeg exited with {ff.returncode}")
        code = 1
    ff.terminate()
    try:
        ff.wait(5)
    except subprocess.TimeoutExpired:
        ff.kill()
        ff.wait()
    live.end()
    server.shutdown()
    server.server_close()
    sys.exit(code)


if __name__ == "__main__":
    main()
