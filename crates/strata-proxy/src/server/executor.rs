//! How each h2 stream and HTTP/3 request is run.
//!
//! Every stream runs as its own task and the connection task writes what the streams
//! queue. With tokio's LIFO slot, a stream that finishes wakes the connection task and it
//! runs next: every response was flushed alone, one `writev` (and one trip through the
//! loopback or NIC path) per response, even when ten requests of a connection arrived
//! together. A cache hit needs no waiting at all, so [`poll_then_spawn`] polls each stream
//! once inside the connection's own poll: a hit queues its response there, and the
//! connection writes the responses of every request it read in one flush. A stream that
//! has to wait (a miss, a large body) is spawned as before; the spawned task polls it
//! again, registering its real waker (the first poll's waker does nothing, and every
//! future re-registers interest when polled).

use std::future::Future;
use std::task::{Context, Waker};

/// Polls `fut` once here and spawns it only if it has to wait. HTTP/3 requests go
/// through it too, so a hit is answered before quinn's connection driver next sends.
pub fn poll_then_spawn<F>(fut: F)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(fut);
    }
}
