//! A cache fill: the task that copies an upstream body into a [`ChunkedBody`] and stores
//! the object when it is complete.
//!
//! The fill runs on its own task, not on the client's: a client that goes away does not
//! abort it, and every reader (the first client now, coalesced waiters later) streams from
//! the same chunks as they arrive.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use strata_http_cache::CacheKey;
use strata_storage::{Storage, StoredObject};

use crate::body::IdleTimeout;

/// How far the writer may run ahead of the slowest reader once a body is too large to keep.
const STREAM_WINDOW: u64 = 4 << 20;

/// Largest chunk assembled from pieces that arrived together.
const MAX_CHUNK: usize = 256 << 10;

pub struct Fill {
    pub key: CacheKey,
    pub object: Arc<StoredObject>,
    pub storage: Arc<dyn Storage>,
    pub max_object_size: u64,
    pub idle: Duration,
    /// Called once if the body outgrows `max_object_size` and stops being kept.
    pub on_too_large: Option<Box<dyn FnOnce() + Send>>,
    /// The origin connection slot, released when the fill ends.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Set when the object was invalidated (unsafe method, purge) while the fill ran: the
    /// body still reaches its readers but is not stored.
    pub discard: Arc<AtomicBool>,
}

impl Drop for Fill {
    /// A fill that ends before its body does (task aborted, panic) must not leave readers
    /// waiting for bytes that will never come.
    fn drop(&mut self) {
        self.object.body.abandon("fill ended early");
    }
}

impl Fill {
    pub async fn run(mut self, upstream: Incoming) {
        let body = Arc::clone(&self.object.body);
        let mut upstream = IdleTimeout::new(upstream, self.idle, self.slot.take());
        let mut size: u64 = 0;
        let mut storing = true;
        loop {
            // Wait for the next piece, then take whatever else has already arrived: stored
            // chunks come out large (fewer, cheaper reads on every hit) without holding back
            // a byte that is here.
            let mut batch: Vec<Bytes> = Vec::new();
            let mut batch_len = 0;
            let mut ended = false;
            let mut next = upstream.frame().await;
            loop {
                match next {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(key = %self.key, error = %e, "fill aborted by upstream");
                        body.abandon("upstream body failed");
                        return;
                    }
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            batch_len += data.len();
                            batch.push(data);
                        }
                    }
                }
                if batch_len >= MAX_CHUNK {
                    break;
                }
                match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut upstream).poll_frame(cx)))
                    .await
                {
                    Poll::Ready(frame) => next = frame,
                    Poll::Pending => break,
                }
            }
            let chunk = match batch.len() {
                0 => Bytes::new(),
                1 => batch.pop().unwrap_or_default(),
                _ => {
                    let mut joined = BytesMut::with_capacity(batch_len);
                    for b in &batch {
                        joined.extend_from_slice(b);
                    }
                    joined.freeze()
                }
            };
            if !chunk.is_empty() {
                size += chunk.len() as u64;
                if storing && size > self.max_object_size {
                    // Too large to keep: serve the readers we have, hold only a window.
                    storing = false;
                    body.stream_only();
                    if let Some(f) = self.on_too_large.take() {
                        f();
                    }
                }
                body.push(chunk);
                if !storing && !body.wait_for_readers(STREAM_WINDOW, self.idle).await {
                    body.abandon("no reader left for an uncacheable body");
                    return;
                }
            }
            if ended {
                break;
            }
        }
        // Store before announcing the end, so whoever sees the body finish also finds the
        // object in the cache.
        if storing && !self.discard.load(Ordering::Acquire) {
            self.storage.insert(&self.key, Arc::clone(&self.object));
        }
        body.finish();
    }
}
