//! DASH manifests from an origin (a live one is read on every refresh): no panic, what is
//! listed stays bounded, and successors stay within their representation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = strata_media::dash::parse(data) {
        let _ = m.max_fresh();
        let listed: usize = m.representations.iter().map(Vec::len).sum();
        assert!(listed <= 20_000);
        let next = m.successors("http://cdn.test/live/manifest.mpd", 3);
        assert!(next.len() <= listed);
        assert!(next.iter().all(|(_, after)| after.len() <= 3));
    }
});
