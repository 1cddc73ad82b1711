//! Test helpers: a programmable origin and an in-process edge, both on 127.0.0.1:0.

#![allow(dead_code)]

pub mod control;
pub mod edge;
pub mod nats;
pub mod origin;
pub mod pop;

pub use edge::{Edge, EdgeBuilder};
pub use origin::{Reply, TestOrigin};
pub use pop::PopBuilder;

/// An origin with a fixed reply, and an edge in front of it.
pub async fn edge_for(reply: impl Fn() -> Reply + Send + Sync + 'static) -> (TestOrigin, Edge) {
    let origin = TestOrigin::fixed(reply).await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    (origin, edge)
}
