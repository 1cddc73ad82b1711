//! HLS playlists (RFC 8216, and the low-latency tags of RFC 8216bis): what the edge needs
//! from one. Parsed by m3u8-rs; the LL-HLS tags it does not know (`EXT-X-PART-INF`) arrive
//! as unknown tags and are read here.

use std::time::Duration;

use url::Url;

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
            // m3u8-rs files the playlist's unknown tags under the first segment.
            let part_target = p
                .unknown_tags
                .iter()
                .chain(p.segments.iter().flat_map(|s| s.unknown_tags.iter()))
                .find(|t| t.tag == "X-PART-INF")
                .and_then(|t| attribute(t.rest.as_deref()?, "PART-TARGET"))
                .and_then(seconds);
            Ok(Playlist::Media(MediaPlaylist {
                live: !(p.end_list || vod),
                target_duration: Duration::from_secs(p.target_duration).min(MAX_TARGET),
                part_target: part_target.map(|d| d.min(MAX_TARGET)),
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

fn seconds(text: &str) -> Option<Duration> {
    let s: f64 = text.parse().ok()?;
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s))
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

    /// For each segment on the same site as the playlist at `base` (an absolute URL), the
    /// `path?query` of the up to `k` segments after it, in order. Segments elsewhere are
    /// left out (the edge prefetches only what it would serve).
    pub fn successors(&self, base: &str, k: usize) -> Vec<(String, Vec<String>)> {
        let Ok(base) = Url::parse(base) else {
            return Vec::new();
        };
        let local: Vec<Option<String>> = self
            .segments
            .iter()
            .map(|uri| {
                let url = base.join(uri).ok()?;
                let same = url.scheme() == base.scheme()
                    && url.host_str() == base.host_str()
                    && url.port_or_known_default() == base.port_or_known_default();
                same.then(|| match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                })
            })
            .collect();
        local
            .iter()
            .enumerate()
            .filter_map(|(i, this)| {
                let next: Vec<String> = local[i + 1..].iter().take(k).flatten().cloned().collect();
                Some((this.clone()?, next)).filter(|(_, next)| !next.is_empty())
            })
            .collect()
    }
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
}
