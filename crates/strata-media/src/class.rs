//! Which kind of media object a response is, from its path and its content type.

/// What a response is to a player.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaClass {
    /// An HLS playlist (`.m3u8`): a multivariant one or a media one (only its body says).
    Playlist,
    /// A DASH manifest (`.mpd`).
    Manifest,
    /// An initialisation segment (`EXT-X-MAP`, the DASH `Initialization`): fMP4 headers.
    Init,
    /// A media segment or part: `.ts`, `.m4s`, `.mp4`, `.aac`, `.vtt`…
    Segment,
}

impl MediaClass {
    /// Playlists and manifests change (live); init and media segments do not, once
    /// published.
    pub fn is_index(self) -> bool {
        matches!(self, MediaClass::Playlist | MediaClass::Manifest)
    }
}

/// The class of a request path (its last segment's extension; the query is not looked at).
pub fn of_path(path: &str) -> Option<MediaClass> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let (stem, ext) = name.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    match ext.as_str() {
        "m3u8" | "m3u" => Some(MediaClass::Playlist),
        "mpd" => Some(MediaClass::Manifest),
        "mp4" | "m4s" | "m4v" | "m4a" | "cmfv" | "cmfa" | "cmft" | "mp4a" | "mp4v"
            if stem.to_ascii_lowercase().contains("init") =>
        {
            Some(MediaClass::Init)
        }
        "ts" | "m4s" | "mp4" | "m4v" | "m4a" | "cmfv" | "cmfa" | "cmft" | "aac" | "ac3" | "ec3"
        | "mp3" | "vtt" | "webvtt" => Some(MediaClass::Segment),
        _ => None,
    }
}

/// The class a response's `Content-Type` names, when it names one.
pub fn of_content_type(content_type: &str) -> Option<MediaClass> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/vnd.apple.mpegurl"
        | "application/x-mpegurl"
        | "audio/mpegurl"
        | "audio/x-mpegurl" => Some(MediaClass::Playlist),
        "application/dash+xml" => Some(MediaClass::Manifest),
        "video/mp2t" | "video/iso.segment" | "audio/aac" | "text/vtt" => Some(MediaClass::Segment),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_class_by_extension() {
        for (path, class) in [
            ("/live/720p/index.m3u8", Some(MediaClass::Playlist)),
            ("/live/MASTER.M3U8", Some(MediaClass::Playlist)),
            ("/vod/stream.mpd", Some(MediaClass::Manifest)),
            ("/live/720p/init.mp4", Some(MediaClass::Init)),
            ("/live/720p/video_init_1.m4s", Some(MediaClass::Init)),
            ("/live/720p/seg_00042.m4s", Some(MediaClass::Segment)),
            ("/live/720p/part42.3.mp4", Some(MediaClass::Segment)),
            ("/hls/a/00001.ts", Some(MediaClass::Segment)),
            ("/subs/en/seg1.vtt", Some(MediaClass::Segment)),
            ("/index.html", None),
            ("/live/noext", None),
            ("/", None),
            ("", None),
        ] {
            assert_eq!(of_path(path), class, "{path}");
        }
    }

    #[test]
    fn content_types_name_their_class() {
        assert_eq!(
            of_content_type("application/vnd.apple.mpegURL; charset=utf-8"),
            Some(MediaClass::Playlist)
        );
        assert_eq!(
            of_content_type("application/dash+xml"),
            Some(MediaClass::Manifest)
        );
        assert_eq!(of_content_type("video/MP2T"), Some(MediaClass::Segment));
        assert_eq!(of_content_type("text/html"), None);
        assert_eq!(of_content_type(""), None);
    }
}
