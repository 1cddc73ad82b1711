//! HLS playlists (RFC 8216, and the low-latency tags of RFC 8216bis): what the edge needs
//! from one. Parsed by m3u8-rs; the LL-HLS tags it does not know (`EXT-X-PART-INF`) arrive
//! as unknown tags and are read here.

use std::time::Duration;

/// What a playlist is.
#[derive(Debug, PartialEq)]
pub enum Playlist {
    /// A multivariant playlist: the renditions are elsewhere.
    Multivariant,
    Media(MediaPlaylist),
}

/// What the edge needs from a media playlist.
#[derive(Debug, PartialEq)]
pub struct MediaPlaylist {
    /// Segments are still being added: no `EXT-X-ENDLIST` and not `PLAYLIST-TYPE:VOD`.
    pub live: bool,
    pub target_duration: Duration,
    /// `EXT-X-PART-INF:PART-TARGET`: a low-latency playlist, with parts this long.
    pub part_target: Option<Duration>,
    /// `EXT-X-MEDIA-SEQUENCE`: the number of the first segment.
    pub media_sequence: u64,
    /// `EXT-X-SKIP:SKIPPED-SEGMENTS`: segments a delta update left out after the first.
    pub skipped: u64,
    /// Segment URIs in playlist order, as written (relative to the playlist's URL, or not).
    pub segments: Vec<String>,
}

/// Why a body is not a playlist the edge can use.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAPlaylist;

impl std::fmt::Display for NotAPlaylist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not an HLS playlist")
    }
}

impl std::error::Error for NotAPlaylist {}

/// Longest playlist read: a VOD playlist of 20,000 two-second segments is about 1 MiB.
pub const MAX_PLAYLIST_BYTES: usize = 4 << 20;

/// Longest target duration believed (RFC 8216 allows any; an absurd one would make a
/// live playlist cacheable for hours).
const MAX_TARGET: Duration = Duration::from_secs(60);

pub fn parse(body: &[u8]) -> Result<Playlist, NotAPlaylist> {
    if body.len() > MAX_PLAYLIST_BYTES || !body.starts_with(b"#EXTM3U") {
        return Err(NotAPlaylist);
    }
    match m3u8_rs::parse_playlist_res(body).map_err(|_| NotAPlaylist)? {
        m3u8_rs::Playlist::MasterPlaylist(_) => Ok(Playlist::Multivariant),
        m3u8_rs::Playlist::MediaPlaylist(p) => {
            let vod = matches!(p.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
            // m3u8-rs files the playlist's unknown tags under the first segment (and knows
            // neither LL-HLS's part tags nor delta updates' EXT-X-SKIP).
            let tag = |name: &str, attr: &str| {
                p.unknown_tags
                    .iter()
                    .chain(p.segments.iter().flat_map(|s| s.unknown_tags.iter()))
                    .find(|t| t.tag == name)
                    .and_then(|t| attribute(t.rest.as_deref()?, attr).map(str::to_string))
            };
            let part_target = tag("X-PART-INF", "PART-TARGET").and_then(|v| seconds(&v));
            let skipped = tag("X-SKIP", "SKIPPED-SEGMENTS")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            Ok(Playlist::Media(MediaPlaylist {
                live: !(p.end_list || vod),
                target_duration: Duration::from_secs(p.target_duration).min(MAX_TARGET),
                part_target: part_target.map(|d| d.min(MAX_TARGET)),
                media_sequence: p.media_sequence,
                skipped,
                segments: p.segments.into_iter().map(|s| s.uri).collect(),
            }))
        }
    }
}

/// An attribute's value in an attribute list (RFC 8216 §4.2), unquoted.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    list.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// Positive seconds, at most [`MAX_TARGET`] (an origin's number: `1e20` must not panic).
fn seconds(text: &str) -> Option<Duration> {
    let s: f64 = text.parse().ok()?;
    if s.is_nan() || s <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(s.min(MAX_TARGET.as_secs_f64())).ok()
}

impl MediaPlaylist {
    /// How long an edge may serve this playlist without asking again: a live playlist gains
    /// a segment every target duration (a part every part target with LL-HLS), so half a
    /// target duration (LL-HLS: a part target, at most 1 s). `None` once it no longer
    /// changes: then the origin's lifetime stands.
    pub fn max_fresh(&self) -> Option<Duration> {
        if !self.live {
            return None;
        }
        Some(match self.part_target {
            Some(part) => part.min(Duration::from_secs(1)),
            None => self.target_duration / 2,
        })
    }

    /// The media sequence number of its last complete segment (a delta update counts the
    /// segments it skipped).
    pub fn last_msn(&self) -> Option<u64> {
        let n = (self.segments.len() as u64).saturating_add(self.skipped);
        n.checked_sub(1)
            .and_then(|last| self.media_sequence.checked_add(last))
    }

    /// How long a blocking reload of this playlist may be held before a player gives up:
    /// hls.js aborts after max(3 × part target, 0.8 × target duration); four fifths of
    /// that, so the player gets an answer (a 503 it retries) rather than a timeout.
    pub fn hold(&self) -> Duration {
        let part = self.part_target.unwrap_or_default() * 3;
        let target = self.target_duration.mul_f64(0.8);
        part.max(target).mul_f64(0.8)
    }

    /// For each segment on the same site as the playlist at `base` (an absolute URL), the
    /// `path?query` of the up to `k` segments after it, in order. Segments elsewhere are
    /// left out (the edge prefetches only what it would serve).
    pub fn successors(&self, base: &str, k: usize) -> Vec<(String, Vec<String>)> {
        crate::successors(base, &self.segments, k)
    }
}

/// The delivery directives of a playlist request (RFC 8216bis §6.2.5).
pub const DIRECTIVES: &[&str] = &["_HLS_msn", "_HLS_part", "_HLS_skip"];

/// What a playlist request asks of the server (RFC 8216bis §6.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directives {
    /// `_HLS_msn`: answer once the playlist has this segment (a blocking reload).
    pub msn: Option<u64>,
    /// `_HLS_part`: and this part of it.
    pub part: Option<u64>,
    /// `_HLS_skip=YES|v2`: a delta update.
    pub skip: bool,
}

/// The directives in `query`: `None` when it has none (an ordinary request), an error
/// (answered 400, RFC 8216bis §6.2.5.2) when one is malformed, repeated, or `_HLS_part`
/// comes without `_HLS_msn`.
pub fn directives(query: Option<&str>) -> Result<Option<Directives>, &'static str> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut d = Directives::default();
    let mut any = false;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || value.parse::<u64>().map_err(|_| "not a decimal integer");
        match name {
            "_HLS_msn" if d.msn.is_none() => {
                d.msn = Some(number().map_err(|_| "_HLS_msn is not a decimal integer")?)
            }
            "_HLS_part" if d.part.is_none() => {
                d.part = Some(number().map_err(|_| "_HLS_part is not a decimal integer")?)
            }
            "_HLS_skip" if !d.skip => {
                if value != "YES" && value != "v2" {
                    return Err("_HLS_skip is neither YES nor v2");
                }
                d.skip = true;
            }
            "_HLS_msn" | "_HLS_part" | "_HLS_skip" => {
                return Err("a delivery directive is repeated")
            }
            _ => continue,
        }
        any = true;
    }
    if d.part.is_some() && d.msn.is_none() {
        return Err("_HLS_part without _HLS_msn");
    }
    Ok(any.then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n\
        #EXT-X-MEDIA-SEQUENCE:40\n#EXTINF:4.0,\nseg40.m4s\n#EXTINF:4.0,\nseg41.m4s\n\
        #EXTINF:4.0,\n/other/seg42.m4s?t=1\n#EXTINF:4.0,\nhttps://elsewhere.test/seg43.m4s\n\
        #EXTINF:4.0,\nseg44.m4s\n";

    const LL: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:4\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n\
        #EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXTINF:4.0,\nseg7.m4s\n#EXT-X-PART:DURATION=0.333,URI=\"seg8.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg8.1.m4s\"\n";

    #[test]
    fn rfc8216_4_3_3_4_a_playlist_without_endlist_is_live_and_fresh_for_half_a_target() {
        let Playlist::Media(p) = parse(LIVE.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        assert!(p.live);
        assert_eq!(p.target_duration, Duration::from_secs(4));
        assert_eq!(p.max_fresh(), Some(Duration::from_secs(2)));
        assert_eq!(p.segments.len(), 5);
    }

    #[test]
    fn rfc8216bis_4_4_3_7_ll_hls_playlists_are_fresh_for_a_part_at_most_a_second() {
        let Playlist::Media(p) = parse(LL.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        assert_eq!(p.part_target, Some(Duration::from_millis(333)));
        assert_eq!(p.max_fresh(), Some(Duration::from_millis(333)));
    }

    #[test]
    fn rfc8216_4_3_3_4_endlist_or_vod_means_the_origins_lifetime_stands() {
        let ended = format!("{LIVE}#EXT-X-ENDLIST\n");
        let Playlist::Media(p) = parse(ended.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        assert!(!p.live);
        assert_eq!(p.max_fresh(), None);
        let vod = LIVE.replace(
            "#EXT-X-VERSION:6\n",
            "#EXT-X-VERSION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n",
        );
        let Playlist::Media(p) = parse(vod.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        assert!(!p.live);
    }

    #[test]
    fn successors_are_the_next_segments_on_the_same_site_resolved_against_the_playlist() {
        let Playlist::Media(p) = parse(LIVE.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        let next = p.successors("http://cdn.test/live/720p/index.m3u8?token=x", 2);
        assert_eq!(
            next,
            vec![
                (
                    "/live/720p/seg40.m4s".to_string(),
                    vec![
                        "/live/720p/seg41.m4s".to_string(),
                        "/other/seg42.m4s?t=1".to_string()
                    ]
                ),
                (
                    "/live/720p/seg41.m4s".to_string(),
                    vec!["/other/seg42.m4s?t=1".to_string()]
                ),
                (
                    "/other/seg42.m4s?t=1".to_string(),
                    vec!["/live/720p/seg44.m4s".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn multivariant_playlists_and_garbage_are_told_apart() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n720p/index.m3u8\n";
        assert_eq!(parse(master.as_bytes()), Ok(Playlist::Multivariant));
        for garbage in [
            &b""[..],
            b"<html>",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:abc\n\xff\xfe",
        ] {
            let _ = parse(garbage);
        }
        assert_eq!(parse(b"<html>"), Err(NotAPlaylist));
        let huge = vec![b'#'; MAX_PLAYLIST_BYTES + 1];
        assert_eq!(parse(&huge), Err(NotAPlaylist));
    }

    #[test]
    fn an_absurd_target_duration_is_not_believed() {
        let long = LIVE.replace("TARGETDURATION:4", "TARGETDURATION:86400");
        let Playlist::Media(p) = parse(long.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        assert_eq!(p.max_fresh(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn rfc8216bis_6_2_5_2_malformed_directives_are_refused() {
        assert_eq!(directives(None), Ok(None));
        assert_eq!(directives(Some("token=1")), Ok(None));
        assert_eq!(
            directives(Some("_HLS_msn=41&_HLS_part=2&token=x")),
            Ok(Some(Directives {
                msn: Some(41),
                part: Some(2),
                skip: false
            }))
        );
        assert_eq!(
            directives(Some("_HLS_skip=YES")),
            Ok(Some(Directives {
                skip: true,
                ..Directives::default()
            }))
        );
        for bad in [
            "_HLS_msn=abc",
            "_HLS_msn=-1",
            "_HLS_part=1",
            "_HLS_msn=1&_HLS_msn=2",
            "_HLS_msn=1&_HLS_part=x",
            "_HLS_skip=no",
        ] {
            assert!(directives(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_blocking_reload_is_held_less_than_a_player_waits() {
        let Playlist::Media(p) = parse(LL.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        // hls.js: max(3 x 0.333, 0.8 x 4) = 3.2 s; held 2.56 s.
        assert_eq!(p.hold(), Duration::from_secs_f64(3.2 * 0.8));
        assert_eq!(p.last_msn(), Some(7));
        let Playlist::Media(live) = parse(LIVE.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        assert_eq!(live.last_msn(), Some(44));
    }

    #[test]
    fn rfc8216bis_4_4_5_2_a_delta_update_counts_the_segments_it_skipped() {
        let delta = LIVE.replace(
            "#EXT-X-MEDIA-SEQUENCE:40\n",
            "#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-SKIP:SKIPPED-SEGMENTS=10\n",
        );
        let Playlist::Media(p) = parse(delta.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        assert_eq!(p.skipped, 10);
        assert_eq!(p.last_msn(), Some(54));
    }

    #[test]
    fn huge_durations_from_an_origin_do_not_panic() {
        let huge = LL.replace("PART-TARGET=0.333", "PART-TARGET=1e20");
        let Playlist::Media(p) = parse(huge.as_bytes()).unwrap() else {
            panic!("a media playlist");
        };
        assert_eq!(p.part_target, Some(Duration::from_secs(60)));
        for bad in ["PART-TARGET=NaN", "PART-TARGET=-1", "PART-TARGET=inf"] {
            let odd = LL.replace("PART-TARGET=0.333", bad);
            let _ = parse(odd.as_bytes());
        }
    }
}
