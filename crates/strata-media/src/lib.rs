//! What the edge knows about video, as pure functions: which responses are playlists,
//! manifests, init segments and media segments ([`class`]), what an HLS playlist says:
//! live or on demand, its target and part durations, which segments come after which
//! ([`hls`]), and the same of a DASH manifest ([`dash`]). No IO and no clock: the proxy
//! decides what to do with the answers.

pub mod class;
pub mod dash;
pub mod hls;

pub use class::MediaClass;

use url::Url;

/// For each of `segments` (in order, as a playlist or manifest names them) on the same
/// site as the document at `base` (an absolute URL), the `path?query` of the up to `k`
/// segments after it. Segments elsewhere are left out (the edge prefetches only what it
/// would serve).
pub fn successors(base: &str, segments: &[String], k: usize) -> Vec<(String, Vec<String>)> {
    let Ok(base) = Url::parse(base) else {
        return Vec::new();
    };
    let local: Vec<Option<String>> = segments
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
