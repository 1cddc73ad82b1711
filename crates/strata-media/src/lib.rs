//! What the edge knows about video, as pure functions: which responses are playlists,
//! manifests, init segments and media segments ([`class`]), and what an HLS playlist says:
//! live or on demand, its target and part durations, which segments come after which
//! ([`hls`]). No IO and no clock: the proxy decides what to do with the answers.

pub mod class;
pub mod hls;

pub use class::MediaClass;
