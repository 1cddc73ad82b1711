//! HLS playlists from an origin (a live one is read on every refresh): no panic, and what
//! is read stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(strata_media::hls::Playlist::Media(p)) = strata_media::hls::parse(data) {
        let _ = p.max_fresh();
        let next = p.successors("http://cdn.test/live/a/index.m3u8", 3);
        assert!(next.len() <= p.segments.len());
        assert!(next.iter().all(|(_, after)| after.len() <= 3));
    }
});
