//! Test helpers: a programmable origin and an in-process edge, both on 127.0.0.1:0.

#![allow(dead_code)]

pub mod binary;
pub mod control;
pub mod edge;
pub mod nats;
pub mod origin;
pub mod pebble;
pub mod pop;
pub mod tls;

pub use edge::{Edge, EdgeBuilder};
pub use origin::{Reply, TestOrigin};
pub use pop::PopBuilder;

/// An origin with a fixed reply, and an edge in front of it.
pub async fn edge_for(reply: impl Fn() -> Reply + Send + Sync + 'static) -> (TestOrigin, Edge) {
    let origin = TestOrigin::fixed(reply).await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    (origin, edge)
}

/// A new, empty directory under the system's temporary directory, unique to this call.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "strata-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A metric's value in Prometheus text: the first line starting with `prefix` (a name, or
/// a name with its labels).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
