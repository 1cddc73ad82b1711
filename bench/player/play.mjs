// Plays an HLS stream with hls.js (lowLatencyMode) in headless Chromium and measures it.
//
//   node bench/player/play.mjs URL SECONDS OUT.json
//
// Needs puppeteer-core and hls.js (bench/player/package.json) installed in $PLAYER_NPM
// (default target/test-tools/player-npm; bench/player.sh installs them) and Chromium
// ($CHROMIUM, default /usr/bin/chromium). A page served from 127.0.0.1 by this script holds a
// <video muted autoplay> and hls.js per player; the media comes from URL (CORS: the origin
// sends Access-Control-Allow-Origin: *).
//
// Written to OUT.json (and printed, without the lists; each stall comes with the player's
// events before and during it and its buffered ranges): seconds played (currentTime advanced
// since the first frame), stalls (`waiting` after playback started) and the time spent in
// them, hls.js BUFFER_STALLED_ERRORs, fatal and other errors, live latency sampled every second
// by PROGRAM-DATE-TIME (Date.now() - hls.playingDate: from a frame's production at the origin
// to its display, latency_*) and as hls.js sees it (hls.latency, hls_latency_*), both leaving
// out the first 10 s of playback (the player converging on its target), how late each
// LL-HLS part (from 3 s after the first frame on) and playlist reached the player after the
// media it carries was produced (part_delivery, playlist_delivery), loads by kind, every HTTP
// status seen by kind, Cache-Status (per tier) and Age of the answers, the non-200 answers.
//
// Environment: PLAYERS (default 1) players, each a browser context of its own (own cache and
// connections, like separate viewers) with one page, one <video> and one hls.js; the top-level
// figures cover them all (latency percentiles over every sample, stalls added up, played_s
// the least played), per_player has each one's. PLAYER_CATCHUP (default 1.5): hls.js
// maxLiveSyncPlaybackRate, how fast it may play to get back to its target latency
// (PART-HOLD-BACK) when behind; 1 turns that off (hls.js's default). PLAYER_BACK_BUFFER:
// hls.js backBufferLength in seconds (default: hls.js's, Infinity; see below why). PLAYER_DEBUG=1
// prints each one-second sample on stderr.
//
// PLAYER_KIND=dash plays an MPD with dash.js instead (dashjs in $PLAYER_NPM; low-latency mode,
// which dash.js 4 turns on from the MPD's availabilityTimeComplete="false" and
// ServiceDescription; live catch-up on, playback rate up to PLAYER_CATCHUP and down to 0.8;
// PLAYER_DASH_DELAY overrides the live delay target in seconds). The same figures, with:
// latency_* and hls_latency_* both dash.js's getCurrentLiveLatency() (its UTCTiming-synced
// wall clock less the presentation time shown, which the origin's availabilityStartTime ties
// to the frame's production), loads.playlist the MPD loads, loads.segment the media segments,
// buffer_stalled_errors dash.js PLAYBACK_STALLED events, fatal every dash.js ERROR event,
// part_delivery how late each video segment's last byte came after the segment's end was
// produced, hls_js the dash.js version; no playlist_delivery.
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
const catchup = Number(process.env.PLAYER_CATCHUP || '1.5');
const nPlayers = Math.max(1, Math.min(16, Number(process.env.PLAYERS || '1')));
const backBuffer = process.env.PLAYER_BACK_BUFFER ? `backBufferLength: ${Number(process.env.PLAYER_BACK_BUFFER)}` : '';
const here = dirname(fileURLToPath(import.meta.url));
const npmDir = resolve(process.env.PLAYER_NPM || join(here, '../../target/test-tools/player-npm'));
const require = createRequire(join(npmDir, 'package.json'));
const puppeteer = require('puppeteer-core');
const dash = process.env.PLAYER_KIND === 'dash';
const hlsJs = readFileSync(require.resolve(dash ? 'dashjs/dist/dash.all.min.js' : 'hls.js/dist/hls.min.js'));
const hlsVersion = JSON.parse(readFileSync(require.resolve(dash ? 'dashjs/package.json' : 'hls.js/package.json'))).version;
// PLAYER_KIND=dash: dash.js's live delay target in seconds (PLAYER_DASH_DELAY, default: the
// MPD's ServiceDescription / suggestedPresentationDelay).
const dashDelay = process.env.PLAYER_DASH_DELAY ? Number(process.env.PLAYER_DASH_DELAY) : null;

// The page: window.__start(n, url) starts n players; window.__m[i] is what player i saw.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>strata player bench</title>
<style>body{margin:0} video{width:640px;height:360px}</style>
<script src="/hls.min.js"></script></head>
<body><script>
const t0 = performance.now();
window.__m = [];
window.__hls = [];
window.__start = (n, url) => {
  for (let i = 0; i < n; i++) {
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.id = 'v' + i;
    document.body.appendChild(video);
    const m = window.__m[i] = {
      started_at: null, first_frame_s: null, start_ct: null, stalls: [], waiting_at: null,
      buffer_stalled: 0, fatal: [], errors: {}, loads: { playlist: 0, part: 0, segment: 0 },
      part_delivery: [], playlist_delivery: [], ring: [],
    };
    // hls.js's own log lines, the last 150, kept with each stall too.
    const logs = m.logs = [];
    const keep = (level) => (...a) => {
      logs.push(Math.round(performance.now() - t0) / 1000 + ' ' + level + ' ' + a.join(' ').slice(0, 400));
      if (logs.length > 150) logs.shift();
    };
    const logger = { trace: () => {}, debug: keep('debug'), log: keep('log'), info: keep('info'), warn: keep('warn'), error: keep('error') };
    // hls.js's defaults but for lowLatencyMode and catching up. backBufferLength stays
    // Infinity: with a finite one (PLAYER_BACK_BUFFER), hls.js 1.7.4 stalls for ~2.8 s at some
    // segment boundaries: a back-buffer flush that completes while a segment's parts are
    // loading drops that segment from its fragment tracker, its parts count as not loaded,
    // and at the segment's end it waits for them to leave the playlist instead of loading
    // the next part (seen straight from the origin as much as through Strata).
    const hls = window.__hls[i] = new Hls({ lowLatencyMode: true,
      maxLiveSyncPlaybackRate: ${catchup}, debug: logger, ${backBuffer} });
    // The last hls.js and media events, kept with each stall (what led to it, what ended it).
    const note = (e, x) => {
      m.ring.push({ t: Math.round(performance.now() - t0) / 1000, e, ...x });
      if (m.ring.length > 80) m.ring.shift();
    };
    const fragName = (d) => d.part ? d.frag.sn + '.' + d.part.index : String(d.frag.sn);
    hls.on(Hls.Events.LEVEL_LOADING, (_, d) => note('level-loading', { url: d.url.split('/').pop() }));
    hls.on(Hls.Events.LEVEL_LOADED, (_, d) => note('level-loaded', {
      end: d.details.endSN + '.' + d.details.endPart, ms: Math.round(d.stats.loading.end - d.stats.loading.start) }));
    hls.on(Hls.Events.FRAG_LOADING, (_, d) => note('frag-loading', { f: fragName(d) }));
    hls.on(Hls.Events.FRAG_LOADED, (_, d) => note('frag-loaded', {
      f: fragName(d), ms: Math.round((d.part || d.frag).stats.loading.end - (d.part || d.frag).stats.loading.start) }));
    hls.on(Hls.Events.FRAG_BUFFERED, (_, d) => note('frag-buffered', { f: fragName(d), ct: video.currentTime }));
    hls.on(Hls.Events.ERROR, (_, d) => note('error', { details: d.details, fatal: d.fatal }));
    const ranges = () => {
      const r = [];
      for (let k = 0; k < video.buffered.length; k++) r.push([video.buffered.start(k), video.buffered.end(k)]);
      return r;
    };
    // hls.js's stream controller at a stall: what it has loaded and where it looks next.
    const internals = () => {
      try {
        const sc = hls.streamController;
        const d = hls.levels[hls.currentLevel >= 0 ? hls.currentLevel : 0].details;
        const f = (x) => x && { sn: x.sn, start: x.start, end: x.end, duration: x.duration, endDTS: x.endDTS, endPTS: x.endPTS };
        return {
          t: Math.round(performance.now() - t0) / 1000, ct: video.currentTime, buffered: ranges(),
          state: sc.state, loadingParts: sc.loadingParts, nextLoadPosition: sc.nextLoadPosition,
          fragPrevious: f(sc.fragPrevious), fragCurrent: f(sc.fragCurrent),
          fragmentEnd: d.fragmentEnd, partEnd: d.partEnd, edge: d.edge, endSN: d.endSN,
          fragmentHint: f(d.fragmentHint), last: f(d.fragments[d.fragments.length - 1]),
          parts: d.partList && d.partList.slice(-8).map((p) => [p.fragment.sn, p.index, p.start, p.duration, p.loaded, p.fragment === d.fragmentHint]),
        };
      } catch (e) {
        return { error: String(e) };
      }
    };
    for (const ev of ['seeking', 'seeked', 'stalled', 'ratechange']) {
      video.addEventListener(ev, () => note(ev, { ct: video.currentTime, rate: video.playbackRate }));
    }
    hls.on(Hls.Events.ERROR, (_, d) => {
      const key = d.type + ':' + d.details;
      m.errors[key] = (m.errors[key] || 0) + 1;
      if (d.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) m.buffer_stalled++;
      if (d.fatal) {
        m.fatal.push({ at_s: (performance.now() - t0) / 1000, type: d.type, details: d.details,
          reason: String(d.reason || d.error || ''),
          url: d.frag ? d.frag.url : (d.url || (d.context && d.context.url) || '') });
      }
    });
    // How late a playlist came: now less the end of the newest part it lists.
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
        // Parts loaded while the player fills its buffer at the start are old; count the rest.
        if (f.programDateTime && m.started_at !== null && performance.now() - m.started_at > 3000) {
          m.part_delivery.push((now - (f.programDateTime + (d.part.start - f.start + d.part.duration) * 1000)) / 1000);
        }
      } else if (d.frag.sn !== 'initSegment') m.loads.segment++;
    });
    video.addEventListener('playing', () => {
      const now = performance.now();
      if (m.started_at === null) {
        m.started_at = now;
        m.first_frame_s = (now - t0) / 1000;
        m.start_ct = video.currentTime;
      }
      if (m.waiting_at !== null) {
        const st = m.stalls[m.stalls.length - 1];
        st.duration_s = (now - m.waiting_at) / 1000;
        st.buffered_after = ranges();
        st.during = m.ring.filter((x) => x.t >= st.at_s);
        st.hls_log = m.logs.slice();
        m.waiting_at = null;
      }
    });
    video.addEventListener('waiting', () => {
      if (m.started_at === null || m.waiting_at !== null) return;
      m.waiting_at = performance.now();
      m.stalls.push({ at_s: (m.waiting_at - t0) / 1000, current_time: video.currentTime, duration_s: null,
        buffered: ranges(), before: m.ring.slice(-30), hls_log_before: m.logs.slice(-100), state: [internals()] });
      const st = m.stalls[m.stalls.length - 1];
      setTimeout(() => st.state.push(internals()), 1000);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  }
};
window.__sample = () => window.__hls.map((h, i) => {
  const v = document.getElementById('v' + i);
  const pd = h.playingDate;
  const b = v.buffered;
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
  return {
    started: window.__m[i].started_at !== null, paused: v.paused, ct: v.currentTime,
    pdt_latency: pd ? (Date.now() - pd.getTime()) / 1000 : null,
    hls_latency: h.latency, target: h.targetLatency, rate: v.playbackRate,
    ahead: b.length ? b.end(b.length - 1) - v.currentTime : 0,
    dropped: q.droppedVideoFrames, frames: q.totalVideoFrames,
    waiting: window.__m[i].waiting_at !== null,
  };
});
window.__finish = () => window.__m.map((m) => {
  if (m.waiting_at !== null) m.stalls[m.stalls.length - 1].duration_s = (performance.now() - m.waiting_at) / 1000;
  return m;
});
</script></body></html>`;

// PLAYER_KIND=dash: the same counters from dash.js (low-latency mode, which dash.js turns on
// from the MPD: availabilityTimeComplete="false" and a ServiceDescription), with catch-up.
// Latency is dash.js's getCurrentLiveLatency() (wall clock, synchronised by the MPD's
// UTCTiming, less the presentation time shown), in both pdt_latency and hls_latency.
const DASH_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>strata player bench (dash.js)</title>
<style>body{margin:0} video{width:640px;height:360px}</style>
<script src="/hls.min.js"></script></head>
<body><script>
const t0 = performance.now();
window.__m = [];
window.__hls = [];
window.__start = (n, url) => {
  for (let i = 0; i < n; i++) {
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.id = 'v' + i;
    document.body.appendChild(video);
    const m = window.__m[i] = {
      started_at: null, first_frame_s: null, start_ct: null, stalls: [], waiting_at: null,
      buffer_stalled: 0, fatal: [], errors: {}, loads: { playlist: 0, part: 0, segment: 0 },
      part_delivery: [], playlist_delivery: [], ring: [], logs: [],
    };
    const note = (e, x) => {
      m.ring.push({ t: Math.round(performance.now() - t0) / 1000, e, ...x });
      if (m.ring.length > 80) m.ring.shift();
    };
    const ranges = () => {
      const r = [];
      for (let k = 0; k < video.buffered.length; k++) r.push([video.buffered.start(k), video.buffered.end(k)]);
      return r;
    };
    const player = window.__hls[i] = dashjs.MediaPlayer().create();
    const streaming = {
      liveCatchup: { enabled: true, mode: 'liveCatchupModeDefault',
        playbackRate: { min: -0.2, max: ${Math.max(0, catchup - 1)} } },
    };
    ${dashDelay !== null ? `streaming.delay = { liveDelay: ${dashDelay} };` : ''}
    player.updateSettings({ debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING }, streaming });
    const E = dashjs.MediaPlayer.events;
    player.on(E.MANIFEST_LOADED, () => { m.loads.playlist++; note('manifest'); });
    player.on(E.FRAGMENT_LOADING_STARTED, (e) => note('frag-loading', { t: e.request && e.request.mediaType, n: e.request && e.request.index }));
    player.on(E.FRAGMENT_LOADING_COMPLETED, (e) => {
      const r = e.request || {};
      if (r.type === 'InitializationSegment') return;
      m.loads.segment++;
      note('frag-loaded', { t: r.mediaType, n: r.index, ms: r.requestEndDate && r.requestStartDate ? r.requestEndDate - r.requestStartDate : null });
      // How late a segment's last byte came after its end was produced at the origin.
      if (r.mediaType === 'video' && r.startTime !== undefined && r.duration && m.ast) {
        m.part_delivery.push((Date.now() - (m.ast + (r.startTime + r.duration) * 1000)) / 1000);
      }
    });
    player.on(E.STREAM_INITIALIZED, () => {
      try { m.ast = player.getDashAdapter().getMpd().availabilityStartTime.getTime(); } catch (e) { m.ast = null; }
      try { m.settings = player.getSettings().streaming.delay; m.low_latency = player.getLowLatencyModeEnabled && player.getLowLatencyModeEnabled(); } catch (e) {}
    });
    player.on(E.ERROR, (e) => {
      const key = 'error:' + ((e.error && (e.error.code + ' ' + e.error.message)) || String(e.error)).slice(0, 120);
      m.errors[key] = (m.errors[key] || 0) + 1;
      m.fatal.push({ at_s: (performance.now() - t0) / 1000, type: 'dash', details: key });
      note('error', { key });
    });
    player.on(E.PLAYBACK_STALLED, () => { m.buffer_stalled++; note('stalled', { ct: video.currentTime }); });
    for (const ev of ['seeking', 'seeked', 'ratechange']) {
      video.addEventListener(ev, () => note(ev, { ct: video.currentTime, rate: video.playbackRate }));
    }
    video.addEventListener('playing', () => {
      const now = performance.now();
      if (m.started_at === null) {
        m.started_at = now;
        m.first_frame_s = (now - t0) / 1000;
        m.start_ct = video.currentTime;
      }
      if (m.waiting_at !== null) {
        const st = m.stalls[m.stalls.length - 1];
        st.duration_s = (now - m.waiting_at) / 1000;
        st.buffered_after = ranges();
        st.during = m.ring.filter((x) => x.t >= st.at_s);
        m.waiting_at = null;
      }
    });
    video.addEventListener('waiting', () => {
      if (m.started_at === null || m.waiting_at !== null) return;
      m.waiting_at = performance.now();
      m.stalls.push({ at_s: (m.waiting_at - t0) / 1000, current_time: video.currentTime, duration_s: null,
        buffered: ranges(), before: m.ring.slice(-30) });
    });
    player.initialize(video, url, true);
  }
};
window.__sample = () => window.__hls.map((p, i) => {
  const v = document.getElementById('v' + i);
  const b = v.buffered;
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
  let lat = null, target = null;
  try { lat = p.getCurrentLiveLatency(); } catch (e) {}
  try { target = p.getTargetLiveDelay(); } catch (e) {}
  return {
    started: window.__m[i].started_at !== null, paused: v.paused, ct: v.currentTime,
    pdt_latency: Number.isFinite(lat) && lat > 0 ? lat : null,
    hls_latency: Number.isFinite(lat) && lat > 0 ? lat : null, target, rate: v.playbackRate,
    ahead: b.length ? b.end(b.length - 1) - v.currentTime : 0,
    dropped: q.droppedVideoFrames, frames: q.totalVideoFrames,
    waiting: window.__m[i].waiting_at !== null,
  };
});
window.__finish = () => window.__m.map((m) => {
  if (m.waiting_at !== null) m.stalls[m.stalls.length - 1].duration_s = (performance.now() - m.waiting_at) / 1000;
  return m;
});
</script></body></html>`;

function serve() {
  const server = http.createServer((req, res) => {
    if (req.url === '/hls.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(hlsJs);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(dash ? DASH_PAGE : PAGE);
    }
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

function kind(u) {
  const path = new URL(u).pathname;
  if (path.endsWith('.m3u8') || path.endsWith('.mpd')) return 'playlist';
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

const round3 = (x) => Math.round(x * 1000) / 1000;

// What one player's page counters and one-second samples come to.
function result(m, samples) {
  const ok = samples.filter((x) => x.started && !x.waiting && !x.paused);
  // Latency from the steady state: not while the player converges on its target after the
  // start (the first 10 s, less in a short run).
  const steady = ok.slice(Math.min(10, Math.floor(ok.length / 3)));
  const last = samples[samples.length - 1];
  const latency = steady.map((x) => x.pdt_latency).filter((x) => x !== null);
  const hlsLatency = steady.map((x) => x.hls_latency).filter(Number.isFinite);
  const lat = stats(latency);
  const hl = stats(hlsLatency);
  return {
    first_frame_s: m.first_frame_s === null ? null : round3(m.first_frame_s),
    played_s: m.start_ct === null ? 0 : round3(last.ct - m.start_ct),
    stalls: m.stalls.length,
    stall_time_s: round3(m.stalls.reduce((a, s) => a + (s.duration_s || 0), 0)),
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
    buffer_ahead: stats(ok.map((x) => x.ahead)),
    playback_rate: stats(ok.map((x) => x.rate)),
    dropped_frames: last.dropped, total_frames: last.frames,
    loads: m.loads,
    _raw: { latency, hlsLatency, part_delivery: m.part_delivery, playlist_delivery: m.playlist_delivery },
  };
}

const server = await serve();
const pagePort = server.address().port;
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
const out = {
  url, seconds, players: nPlayers, player_kind: dash ? 'dash.js' : 'hls.js', hls_js: hlsVersion, browser: await browser.version(),
  max_live_sync_playback_rate: catchup,
};
// One player: a browser context of its own (its own cache and connections, as a separate
// viewer has; its page is the active tab of its own window, so it is not hidden and paused)
// with one page, and what the network showed it.
async function openPlayer() {
  const p = { responses: {}, cacheStatus: {}, ages: {}, non200: [], failed: [] };
  const context = await browser.createBrowserContext();
  p.page = await context.newPage();
  await p.page.setViewport({ width: 640, height: 360 });
  p.page.on('response', (r) => {
    const u = r.url();
    if (!u.startsWith('http') || u.startsWith(`http://127.0.0.1:${pagePort}/`)) return;
    const k = kind(u);
    const st = r.status();
    p.responses[k] ??= {};
    p.responses[k][st] = (p.responses[k][st] || 0) + 1;
    const h = r.headers();
    if (h['cache-status']) {
      // RFC 9211: one member per cache, the one nearest the origin first (repeated fields
      // come joined by newlines here).
      const what = h['cache-status'].split(/[,\n]/).map((m) => {
        const name = m.split(';')[0].trim();
        return name + ' ' + (/;\s*hit/.test(m) ? 'hit' : ((m.match(/fwd=([\w-]+)/) || [])[1] || 'other'));
      }).join(' > ');
      p.cacheStatus[k] ??= {};
      p.cacheStatus[k][what] = (p.cacheStatus[k][what] || 0) + 1;
    }
    if (h.age !== undefined) (p.ages[k] ??= []).push(Number(h.age));
    if (st !== 200 && p.non200.length < 50) {
      p.non200.push({ status: st, url: u, cache_status: h['cache-status'] || null, at: new Date().toISOString() });
    }
  });
  p.page.on('requestfailed', (r) => {
    if (p.failed.length < 50) p.failed.push({ url: r.url(), error: r.failure()?.errorText });
  });
  p.page.on('pageerror', (e) => console.error('page error:', e.message));
  await p.page.goto(`http://127.0.0.1:${pagePort}/`);
  return p;
}

// {kind: {key: n}} added up over the players.
function addCounts(list) {
  const total = {};
  for (const c of list) {
    for (const [k, v] of Object.entries(c)) {
      total[k] ??= {};
      for (const [kk, n] of Object.entries(v)) total[k][kk] = (total[k][kk] || 0) + n;
    }
  }
  return total;
}

try {
  const players = [];
  for (let i = 0; i < nPlayers; i++) players.push(await openPlayer());
  out.mse_supported = await players[0].page.evaluate(() =>
    MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001e,mp4a.40.2"'));
  for (const p of players) await p.page.evaluate((u) => window.__start(1, u), url);

  const samples = Array.from({ length: nPlayers }, () => []);
  const deadline = Date.now() + seconds * 1000;
  const startWall = Date.now();
  // Sample every player once a second until `seconds` of wall time have passed since the
  // players started (bounded: at most seconds + 1 rounds).
  for (let i = 0; i <= seconds && Date.now() < deadline; i++) {
    await new Promise((ok) => setTimeout(ok, Math.min(1000, Math.max(0, deadline - Date.now()))));
    for (let j = 0; j < nPlayers; j++) {
      const [x] = await players[j].page.evaluate(() => window.__sample());
      samples[j].push(x);
      if (process.env.PLAYER_DEBUG) console.error(`player ${j}`, JSON.stringify(x));
    }
  }
  out.wall_s = round3((Date.now() - startWall) / 1000);
  const each = [];
  for (let j = 0; j < nPlayers; j++) {
    const [m] = await players[j].page.evaluate(() => window.__finish());
    const p = players[j];
    each.push({
      ...result(m, samples[j]), responses: p.responses, cache_status: p.cacheStatus,
      non_200: p.non200, failed_requests: p.failed,
    });
  }
  const all = (k) => each.flatMap((r) => r._raw[k]);
  const lat = stats(all('latency'));
  const hl = stats(all('hlsLatency'));
  const sum = (k) => each.reduce((a, r) => a + r[k], 0);
  const ages = {};
  for (const p of players) for (const [k, v] of Object.entries(p.ages)) (ages[k] ??= []).push(...v);
  Object.assign(out, {
    first_frame_s: Math.max(...each.map((r) => r.first_frame_s ?? Infinity)),
    played_s: Math.min(...each.map((r) => r.played_s)),
    stalls: sum('stalls'),
    stall_time_s: round3(sum('stall_time_s')),
    buffer_stalled_errors: sum('buffer_stalled_errors'),
    fatal_errors: sum('fatal_errors'),
    latency_p50_s: lat.p50, latency_p95_s: lat.p95, latency_mean_s: lat.mean, latency_max_s: lat.max,
    latency_samples: lat.n,
    hls_latency_p50_s: hl.p50, hls_latency_p95_s: hl.p95, hls_latency_mean_s: hl.mean,
    target_latency_s: each[0].target_latency_s,
    part_delivery: stats(all('part_delivery')),
    playlist_delivery: stats(all('playlist_delivery')),
    dropped_frames: sum('dropped_frames'), total_frames: sum('total_frames'),
    loads: addCounts(each.map((r) => ({ loads: r.loads }))).loads,
    responses: addCounts(each.map((r) => r.responses)),
    cache_status: addCounts(each.map((r) => r.cache_status)),
    age: Object.fromEntries(Object.entries(ages).map(([k, v]) => [k, stats(v)])),
    non_200: each.flatMap((r) => r.non_200).slice(0, 50),
    failed_requests: each.flatMap((r) => r.failed_requests).slice(0, 50),
  });
  for (const r of each) delete r._raw;
  out.per_player = each;
} finally {
  await browser.close();
  server.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
writeFileSync(outPath, JSON.stringify(out, null, 1) + '\n');
const brief = { ...out };
for (const k of ['per_player', 'non_200', 'failed_requests']) delete brief[k];
console.log(JSON.stringify(brief));
