// Plays an HLS stream with hls.js (lowLatencyMode) in headless Chromium and measures it.
//
//   node bench/player/play.mjs URL SECONDS OUT.json
//
// Needs puppeteer-core and hls.js (bench/player/package.json) installed in $PLAYER_NPM
// (default target/test-tools/player-npm; bench/player.sh installs them) and Chromium
// ($CHROMIUM, default /usr/bin/chromium). A page served from 127.0.0.1 by this script holds a
// <video muted autoplay> and hls.js; the media comes from URL (CORS: the origin sends
// Access-Control-Allow-Origin: *).
//
// Written to OUT.json (and printed): seconds played (currentTime advanced), stalls (`waiting`
// after playback started) and the time spent in them, hls.js BUFFER_STALLED_ERRORs, fatal and
// other errors, live latency sampled every second both by PROGRAM-DATE-TIME (Date.now() -
// hls.playingDate: from the frame's production at the origin to its display, latency_*) and
// as hls.js sees it (hls.latency, hls_latency_*), how late each LL-HLS part and playlist
// reached the player after the media it carries was produced (part_delivery_*,
// playlist_delivery_*), loads by kind, every HTTP status seen by kind, Cache-Status and Age
// of the answers, and the non-200 answers.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';

const [url, secondsArg, outPath] = process.argv.slice(2);
if (!url || !secondsArg || !outPath) {
  console.error('usage: node play.mjs URL SECONDS OUT.json');
  process.exit(2);
}
const seconds = Number(secondsArg);
const here = dirname(fileURLToPath(import.meta.url));
const npmDir = resolve(process.env.PLAYER_NPM || join(here, '../../target/test-tools/player-npm'));
const require = createRequire(join(npmDir, 'package.json'));
const puppeteer = require('puppeteer-core');
const hlsJs = readFileSync(require.resolve('hls.js/dist/hls.min.js'));
const hlsVersion = JSON.parse(readFileSync(require.resolve('hls.js/package.json'))).version;

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>strata player bench</title>
<script src="/hls.min.js"></script></head>
<body><video id="v" muted autoplay playsinline width="640" height="360"></video>
<script>
const m = window.__m = {
  started_at: null, first_frame_s: null, stalls: [], waiting_at: null, buffer_stalled: 0,
  fatal: [], errors: {}, loads: { playlist: 0, part: 0, segment: 0, init: 0 },
  part_delivery: [], playlist_delivery: [], start_ct: null, events: [],
};
const t0 = performance.now();
const video = document.getElementById('v');
const hls = window.__hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
hls.on(Hls.Events.ERROR, (_, d) => {
  const key = d.type + ':' + d.details;
  m.errors[key] = (m.errors[key] || 0) + 1;
  if (d.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) m.buffer_stalled++;
  if (d.fatal) {
    m.fatal.push({ at_s: (performance.now() - t0) / 1000, type: d.type, details: d.details,
      reason: String(d.reason || d.error || ''), url: d.frag ? d.frag.url : (d.url || (d.context && d.context.url) || '') });
  }
});
hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
  m.loads.playlist++;
  const parts = d.details.partList;
  if (parts && parts.length) {
    const p = parts[parts.length - 1];
    const f = p.fragment;
    if (f.programDateTime) {
      m.playlist_delivery.push((Date.now() - (f.programDateTime + (p.start - f.start + p.duration) * 1000)) / 1000);
    }
  }
});
hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
  const now = Date.now();
  if (d.part) {
    m.loads.part++;
    const f = d.frag;
    if (f.programDateTime) {
      m.part_delivery.push((now - (f.programDateTime + (d.part.start - f.start + d.part.duration) * 1000)) / 1000);
    }
  } else if (d.frag.sn === 'initSegment') m.loads.init++;
  else m.loads.segment++;
});
video.addEventListener('playing', () => {
  const now = performance.now();
  if (m.started_at === null) {
    m.started_at = now;
    m.first_frame_s = (now - t0) / 1000;
    m.start_ct = video.currentTime;
  }
  if (m.waiting_at !== null) {
    m.stalls[m.stalls.length - 1].duration_s = (now - m.waiting_at) / 1000;
    m.waiting_at = null;
  }
});
video.addEventListener('waiting', () => {
  if (m.started_at === null || m.waiting_at !== null) return;
  m.waiting_at = performance.now();
  m.stalls.push({ at_s: (m.waiting_at - t0) / 1000, current_time: video.currentTime, duration_s: null });
});
hls.loadSource(${JSON.stringify(url)});
hls.attachMedia(video);
</script></body></html>`;

function serve() {
  const server = http.createServer((req, res) => {
    if (req.url === '/hls.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(hlsJs);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(PAGE);
    }
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

function kind(u) {
  const path = new URL(u).pathname;
  if (path.endsWith('.m3u8')) return 'playlist';
  if (/init[^/]*\.mp4$/.test(path)) return 'init';
  if (/\/part[^/]*\.m4s$/.test(path)) return 'part';
  if (/\.(m4s|mp4|ts|aac|vtt)$/.test(path)) return 'segment';
  return 'other';
}

function stats(xs) {
  if (!xs.length) return { p50: null, p95: null, mean: null, max: null, n: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  const r = (x) => Math.round(x * 1000) / 1000;
  return { p50: r(q(0.5)), p95: r(q(0.95)), mean: r(s.reduce((a, b) => a + b, 0) / s.length), max: r(s[s.length - 1]), n: s.length };
}

const server = await serve();
const userDataDir = mkdtempSync(join(tmpdir(), 'strata-player-'));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  userDataDir,
  args: [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required', '--disable-dev-shm-usage',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  ],
});
const out = { url, seconds, hls_js: hlsVersion, browser: await browser.version() };
try {
  const page = await browser.newPage();
  const responses = {}; // kind -> status -> count
  const cacheStatus = {}; // kind -> first Cache-Status member -> count
  const ages = {}; // kind -> [Age]
  const non200 = [];
  const failed = [];
  page.on('response', (r) => {
    const u = r.url();
    if (!u.startsWith('http') || u.startsWith(`http://127.0.0.1:${server.address().port}/`)) return;
    const k = kind(u);
    const st = r.status();
    responses[k] ??= {};
    responses[k][st] = (responses[k][st] || 0) + 1;
    const h = r.headers();
    if (h['cache-status']) {
      // The outermost cache's entry is the first; hit or the fwd reason.
      const first = h['cache-status'].split(',')[0];
      const what = /;\s*hit/.test(first) ? 'hit' : ((first.match(/fwd=([\w-]+)/) || [])[1] || 'other');
      cacheStatus[k] ??= {};
      cacheStatus[k][what] = (cacheStatus[k][what] || 0) + 1;
    }
    if (h.age !== undefined) (ages[k] ??= []).push(Number(h.age));
    if (st !== 200 && non200.length < 50) {
      non200.push({ status: st, url: u, cache_status: h['cache-status'] || null, at: new Date().toISOString() });
    }
  });
  page.on('requestfailed', (r) => {
    if (failed.length < 50) failed.push({ url: r.url(), error: r.failure()?.errorText });
  });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  out.mse_supported = await page.evaluate(() =>
    MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001e,mp4a.40.2"'));

  const latency = [];
  const hlsLatency = [];
  const rates = [];
  const buffered = [];
  const deadline = Date.now() + seconds * 1000;
  const startWall = Date.now();
  let last = null;
  // Sample once a second until `seconds` of wall time have passed since the page loaded
  // (bounded: at most seconds + 1 iterations).
  for (let i = 0; i <= seconds && Date.now() < deadline; i++) {
    await new Promise((ok) => setTimeout(ok, Math.min(1000, Math.max(0, deadline - Date.now()))));
    last = await page.evaluate(() => {
      const v = document.getElementById('v');
      const h = window.__hls;
      const pd = h.playingDate;
      const b = v.buffered;
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
      return {
        started: window.__m.started_at !== null, paused: v.paused, ct: v.currentTime,
        pdt_latency: pd ? (Date.now() - pd.getTime()) / 1000 : null,
        hls_latency: h.latency, target: h.targetLatency, rate: v.playbackRate,
        ahead: b.length ? b.end(b.length - 1) - v.currentTime : 0,
        dropped: q.droppedVideoFrames, frames: q.totalVideoFrames,
        waiting: window.__m.waiting_at !== null,
      };
    });
    if (process.env.PLAYER_DEBUG) console.error(JSON.stringify(last));
    if (last.started && !last.waiting && !last.paused) {
      if (last.pdt_latency !== null) latency.push(last.pdt_latency);
      if (Number.isFinite(last.hls_latency)) hlsLatency.push(last.hls_latency);
      rates.push(last.rate);
      buffered.push(last.ahead);
    }
  }
  const m = await page.evaluate(() => {
    const m = window.__m;
    if (m.waiting_at !== null) m.stalls[m.stalls.length - 1].duration_s = (performance.now() - m.waiting_at) / 1000;
    return m;
  });
  const played = m.start_ct === null ? 0 : last.ct - m.start_ct;
  const lat = stats(latency);
  const hl = stats(hlsLatency);
  Object.assign(out, {
    wall_s: (Date.now() - startWall) / 1000,
    first_frame_s: m.first_frame_s,
    played_s: Math.round(played * 1000) / 1000,
    stalls: m.stalls.length,
    stall_time_s: Math.round(m.stalls.reduce((a, s) => a + (s.duration_s || 0), 0) * 1000) / 1000,
    stall_list: m.stalls.slice(0, 50),
    buffer_stalled_errors: m.buffer_stalled,
    fatal_errors: m.fatal.length,
    fatal: m.fatal,
    errors: m.errors,
    latency_p50_s: lat.p50, latency_p95_s: lat.p95, latency_mean_s: lat.mean, latency_max_s: lat.max,
    latency_samples: lat.n,
    hls_latency_p50_s: hl.p50, hls_latency_p95_s: hl.p95, hls_latency_mean_s: hl.mean,
    target_latency_s: last.target,
    part_delivery: stats(m.part_delivery),
    playlist_delivery: stats(m.playlist_delivery),
    buffer_ahead: stats(buffered),
    playback_rate: stats(rates),
    dropped_frames: last.dropped, total_frames: last.frames,
    loads: m.loads,
    responses, cache_status: cacheStatus,
    age: Object.fromEntries(Object.entries(ages).map(([k, v]) => [k, stats(v)])),
    non_200: non200, failed_requests: failed,
  });
} finally {
  await browser.close();
  server.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
writeFileSync(outPath, JSON.stringify(out, null, 1) + '\n');
const brief = { ...out };
for (const k of ['stall_list', 'fatal', 'non_200', 'failed_requests', 'errors']) delete brief[k];
console.log(JSON.stringify(brief));
