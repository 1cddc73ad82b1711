//! The demo's video: a live LL-HLS channel and a VOD asset made from the embedded clip
//! (`clip.rs`), and a player page (hls.js, vendored) that shows the `Cache-Status` of the
//! requests it makes. Served by the demo's origin, so the page and the media reach a
//! browser through the CDN.
//!
//! The live channel is a pure function of the time since the origin started: part `p` is
//! published `(p + 1)` part durations after the start, so nothing runs in the background.
//! Playlists follow RFC 8216bis: parts of the last two segments and the one in progress,
//! a preload hint for the next part, blocking reloads (`_HLS_msn`, `_HLS_part`) held until
//! the part exists, hinted parts held until they are published.

mod clip;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use self::clip::Clip;

/// A part lasts 10 frames at 30 fps.
const PART: Duration = Duration::from_nanos(1_000_000_000 / 3);

/// Segments listed in a live playlist.
const WINDOW: u64 = 6;

/// Segments in the VOD asset (the clip four times: 32 s).
const VOD_SEGMENTS: u64 = 16;

/// How far ahead a blocking reload may ask (RFC 8216bis §6.2.5.2: two segments).
const AHEAD: u64 = 2;

const PLAYER: &str = include_str!("assets/player.html");
const HLS_JS: &str = include_str!("assets/hls.light.min.js");

/// The channel: the clip and when it started.
pub struct Channel {
    clip: Clip,
    started: SystemTime,
}

impl Channel {
    pub fn new(started: SystemTime) -> Result<Self, String> {
        Ok(Self {
            clip: Clip::embedded()?,
            started,
        })
    }

    /// Answers paths under `/media/` and `/player/`; `None` for any other path.
    pub async fn answer(&self, path: &str, query: Option<&str>) -> Option<Response<Full<Bytes>>> {
        if let Some(page) = path.strip_prefix("/player/") {
            return Some(match page {
                "" | "index.html" => reply(PLAYER, "text/html; charset=utf-8", "max-age=60"),
                "hls.js" => reply(HLS_JS, "text/javascript", "max-age=86400"),
                _ => not_found(),
            });
        }
        let (kind, file) = path.strip_prefix("/media/")?.split_once('/')?;
        let live = match kind {
            "live" => true,
            "vod" => false,
            _ => return Some(not_found()),
        };
        Some(self.media(live, file, query).await)
    }

    async fn media(&self, live: bool, file: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        let params: HashMap<&str, &str> = query
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .collect();
        match file {
            "master.m3u8" => reply(self.master(), "application/vnd.apple.mpegurl", "max-age=60"),
            "init.mp4" => reply(self.clip.init.clone(), "video/mp4", "max-age=86400"),
            "index.m3u8" if live => self.live_playlist(&params).await,
            "index.m3u8" => reply(
                self.vod_playlist(),
                "application/vnd.apple.mpegurl",
                "max-age=600",
            ),
            _ => {
                let Some(name) = file.strip_suffix(".m4s") else {
                    return not_found();
                };
                if let Some(n) = name.strip_prefix("seg").and_then(|n| n.parse::<u64>().ok()) {
                    let published = match live {
                        true => n < self.published() / self.clip.parts_per_segment,
                        false => n < VOD_SEGMENTS,
                    };
                    if !published {
                        return not_found();
                    }
                    return reply(self.clip.segment(n), "video/iso.segment", "max-age=86400");
                }
                let part = name
                    .strip_prefix("part")
                    .and_then(|rest| rest.split_once('.'));
                match part.and_then(|(m, i)| Some((m.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
                {
                    Some((msn, i)) if live && i < self.clip.parts_per_segment => {
                        self.live_part(
                            msn.saturating_mul(self.clip.parts_per_segment)
                                .saturating_add(i),
                        )
                        .await
                    }
                    _ => not_found(),
                }
            }
        }
    }

    /// Parts published so far.
    fn published(&self) -> u64 {
        let since = SystemTime::now()
            .duration_since(self.started)
            .unwrap_or_default();
        (since.as_nanos() / PART.as_nanos()) as u64
    }

    /// Waits until part `p` (counted from the start) is published, if that is soon.
    async fn until_published(&self, p: u64, longest: Duration) -> bool {
        let at = self.started + PART * (p as u32 + 1);
        match at.duration_since(SystemTime::now()) {
            Err(_) => true,
            Ok(wait) if wait <= longest => {
                tokio::time::sleep(wait).await;
                true
            }
            Ok(_) => false,
        }
    }

    /// A part: at once when published, held (as a hinted part is) when it is the next
    /// one, 404 otherwise.
    async fn live_part(&self, p: u64) -> Response<Full<Bytes>> {
        let published = self.published();
        if p > published || !self.until_published(p, PART * 2).await {
            return not_found();
        }
        reply(self.clip.part(p), "video/iso.segment", "max-age=86400")
    }

    fn master(&self) -> String {
        format!(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=400000,CODECS=\"{}\",RESOLUTION=426x240,FRAME-RATE=30.000\n\
             index.m3u8\n",
            self.clip.codecs
        )
    }

    /// The live media playlist, after any blocking reload asked for is satisfied.
    async fn live_playlist(&self, params: &HashMap<&str, &str>) -> Response<Full<Bytes>> {
        let pps = self.clip.parts_per_segment;
        let msn = params.get("_HLS_msn");
        let part = params.get("_HLS_part");
        if msn.is_none() && part.is_some() {
            return status(StatusCode::BAD_REQUEST, "_HLS_part without _HLS_msn\n");
        }
        if let Some(msn) = msn {
            let Ok(msn) = msn.parse::<u64>() else {
                return status(StatusCode::BAD_REQUEST, "_HLS_msn is not a number\n");
            };
            let part = match part.map(|p| p.parse::<u64>()) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(_)) => {
                    return status(StatusCode::BAD_REQUEST, "_HLS_part is not a number\n")
                }
            };
            let last = (self.published() / pps).saturating_sub(1);
            if msn > last + AHEAD {
                return status(StatusCode::BAD_REQUEST, "_HLS_msn is too far ahead\n");
            }
            // The part asked for (or the segment's last), counted from the start.
            let wanted = match part {
                Some(i) => msn * pps + i,
                None => msn * pps + pps - 1,
            };
            if !self.until_published(wanted, PART * 3 * (pps as u32)).await {
                return status(StatusCode::SERVICE_UNAVAILABLE, "not yet\n");
            }
        }
        // A blocking reload's answer is one playlist version under its own URL: caches may
        // keep it (Apple's LL-HLS guidance); the plain URL changes every part.
        let cache_control = match msn {
            Some(_) => "max-age=6",
            None => "max-age=1",
        };
        reply(
            self.live_text(self.published()),
            "application/vnd.apple.mpegurl",
            cache_control,
        )
    }

    /// The playlist once `published` parts exist.
    fn live_text(&self, published: u64) -> String {
        let pps = self.clip.parts_per_segment;
        let part_s = PART.as_secs_f64();
        let segment_s = part_s * pps as f64;
        let complete = published / pps;
        let first = complete.saturating_sub(WINDOW);
        let mut out = String::new();
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
             #EXT-X-PART-INF:PART-TARGET={:.5}\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n",
            segment_s.ceil() as u64,
            part_s * 3.0 + 0.001,
            part_s + 0.00001,
        );
        let date = |n: u64| {
            let at = self.started + PART * (n * pps) as u32;
            humantime::format_rfc3339_millis(at).to_string()
        };
        let parts = |out: &mut String, n: u64, upto: u64| {
            for i in 0..upto {
                let independent = if self.clip.independent(n * pps + i) {
                    ",INDEPENDENT=YES"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={part_s:.5},URI=\"part{n}.{i}.m4s\"{independent}"
                );
            }
        };
        for n in first..complete {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", date(n));
            if n + 2 >= complete {
                parts(&mut out, n, pps);
            }
            let _ = writeln!(out, "#EXTINF:{segment_s:.5},\nseg{n}.m4s");
        }
        let in_progress = published % pps;
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", date(complete));
        parts(&mut out, complete, in_progress);
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{complete}.{in_progress}.m4s\""
        );
        out
    }

    fn vod_playlist(&self) -> String {
        let segment_s = PART.as_secs_f64() * self.clip.parts_per_segment as f64;
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n",
            segment_s.ceil() as u64
        );
        for n in 0..VOD_SEGMENTS {
            let _ = writeln!(out, "#EXTINF:{segment_s:.5},\nseg{n}.m4s");
        }
        out.push_str("#EXT-X-ENDLIST\n");
        out
    }
}

fn reply(
    body: impl Into<Bytes>,
    content_type: &'static str,
    cache_control: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = reply(text, "text/plain", "max-age=1");
    *r.status_mut() = code;
    r
}

fn not_found() -> Response<Full<Bytes>> {
    status(StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(ago: Duration) -> Channel {
        Channel::new(SystemTime::now() - ago).expect("the clip parses")
    }

    #[test]
    fn the_live_playlist_lists_published_parts_and_hints_the_next() {
        let c = channel(Duration::ZERO);
        // 40 parts: six complete segments and four parts of the seventh.
        let text = c.live_text(40);
        let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("valid");
        assert_eq!(playlist.media_sequence, 0);
        assert_eq!(playlist.segments.len(), 6);
        assert!(text.contains("#EXT-X-PART:DURATION=0.33333,URI=\"part6.3.m4s\"\n"));
        assert!(!text.contains("part6.4.m4s\"\n#"), "{text}");
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part6.4.m4s\"\n"));
        assert!(text.contains("URI=\"part4.0.m4s\",INDEPENDENT=YES"));
        assert!(
            !text.contains("part3.0.m4s"),
            "parts of the last two segments only"
        );
        // Later, the window slides.
        let later = c.live_text(600);
        assert!(later.contains("#EXT-X-MEDIA-SEQUENCE:94\n"), "{later}");
    }

    #[tokio::test]
    async fn blocking_reloads_are_checked_and_held_until_the_part_exists() {
        let c = channel(Duration::from_secs(4));
        let ask = |q: &'static str| {
            let c = &c;
            async move { c.answer("/media/live/index.m3u8", Some(q)).await.unwrap() }
        };
        assert_eq!(ask("_HLS_part=1").await.status(), 400);
        assert_eq!(ask("_HLS_msn=abc").await.status(), 400);
        assert_eq!(ask("_HLS_msn=9").await.status(), 400, "more than two ahead");
        // The next part: held a part duration at most, then listed.
        let published = c.published();
        let (msn, i) = (published / 6, published % 6);
        let q: &'static str = Box::leak(format!("_HLS_msn={msn}&_HLS_part={i}").into_boxed_str());
        let resp = ask(q).await;
        assert_eq!(resp.status(), 200);
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains(&format!("URI=\"part{msn}.{i}.m4s\"")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn parts_and_segments_exist_once_published_and_the_page_is_served() {
        let c = channel(Duration::from_secs(3));
        let get = |p: &'static str| c.answer(p, None);
        assert_eq!(get("/media/live/seg0.m4s").await.unwrap().status(), 200);
        assert_eq!(get("/media/live/seg5.m4s").await.unwrap().status(), 404);
        assert_eq!(get("/media/live/part0.2.m4s").await.unwrap().status(), 200);
        assert_eq!(get("/media/live/part9.0.m4s").await.unwrap().status(), 404);
        assert_eq!(get("/media/vod/seg15.m4s").await.unwrap().status(), 200);
        assert_eq!(get("/media/vod/seg16.m4s").await.unwrap().status(), 404);
        assert_eq!(get("/player/").await.unwrap().status(), 200);
        assert_eq!(get("/player/hls.js").await.unwrap().status(), 200);
        assert!(get("/static/small.txt").await.is_none());
        let vod = c.vod_playlist();
        let playlist = m3u8_rs::parse_media_playlist_res(vod.as_bytes()).expect("valid");
        assert!(playlist.end_list);
        assert_eq!(playlist.segments.len(), 16);
    }
}
