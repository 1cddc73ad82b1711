//! A cache fill: the task that copies an upstream body into a [`ChunkedBody`] and stores
//! the object when it is complete.
//!
//! The fill runs on its own task, not on the client's, and every reader (the first client
//! now, coalesced waiters later) streams from the same chunks as they arrive. When no
//! client is left (every waiter and reader gone: resets, closed connections), the fill
//! goes on only within the node's background budget (`limits.max_background_fills`, and
//! per client address): a cacheable body is then still stored for the next request.
//! Without budget it is abandoned and its origin connection closed, so abandoned requests
//! cannot hold every origin slot.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use strata_http_cache::CacheKey;
use strata_storage::{ChunkedBody, Storage, StoredObject};
use strata_wire::clock::Clock;

use crate::body::{BoxError, IdleTimeout};
use crate::budget::{Budget, Permit};
use crate::coalesce::Inflight;
use crate::compress::Encoder;

/// How far the writer may run ahead of the slowest reader once a body is too large to keep.
const STREAM_WINDOW: u64 = 4 << 20;

/// Largest chunk assembled from pieces that arrived together.
const MAX_CHUNK: usize = 256 << 10;

/// How a fill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillEnd {
    /// The object is in the cache.
    Stored,
    /// Complete, but not kept: invalidated (purge, unsafe method) while it ran, or refused
    /// by the storage.
    Discarded,
    /// Streamed to its readers but larger than the object size limit.
    TooLarge,
    /// The upstream body failed or went silent.
    Failed,
    /// No client was left and the background budget was spent.
    Abandoned,
}

/// Who still wants a fill's body, and the budget it may run on without them.
pub struct Interest {
    /// Clients waiting for the fill's outcome (`None`: a fill nobody else can join).
    pub inflight: Option<Arc<Inflight>>,
    pub budget: Arc<Budget>,
    /// The client the fill was started for: its share of the budget is used.
    pub client: IpAddr,
    /// Held from the start by fills that are background work by design (refreshes):
    /// they never look for clients.
    pub permit: Option<Permit>,
    /// Called once when the fill is about to give up for lack of interest: takes it out of
    /// the coalescer, so nobody new joins a fill that is ending.
    pub on_abandon: Option<Box<dyn FnOnce() + Send>>,
}

/// What runs once a fill's body is complete, before it is stored; `Some`: store this.
pub type BeforeStore = Box<dyn FnOnce(&Arc<StoredObject>) -> Option<Arc<StoredObject>> + Send>;

pub struct Fill {
    pub key: CacheKey,
    pub object: Arc<StoredObject>,
    pub storage: Arc<dyn Storage>,
    pub max_object_size: u64,
    pub idle: Duration,
    /// Called once if the body outgrows `max_object_size` and stops being kept.
    pub on_too_large: Option<Box<dyn FnOnce() + Send>>,
    /// Called once the whole body is in, before it is stored (and before its readers see
    /// it end): may return the object to store instead (a live playlist's freshness capped:
    /// `media`).
    pub before_store: Option<BeforeStore>,
    /// The origin connection slot, released when the fill ends.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Set when the object was invalidated (unsafe method, purge) while the fill ran: the
    /// body still reaches its readers but is not stored.
    pub discard: Arc<AtomicBool>,
    pub interest: Interest,
    /// The node's clock: the object is stored as of its reading when the body ends.
    pub clock: Clock,
    /// Set when the object is the compressed variant of an uncompressed upstream body.
    pub encoder: Option<Box<Encoder>>,
}

impl Drop for Fill {
    /// A fill that ends before its body does (task aborted, panic) must not leave readers
    /// waiting for bytes that will never come.
    fn drop(&mut self) {
        self.object.body.abandon("fill ended early");
    }
}

impl Fill {
    pub async fn run(mut self, upstream: Incoming) -> FillEnd {
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
            let Some(mut next) = next_frame(&mut upstream, &mut self.interest, &body).await else {
                tracing::debug!(key = %self.key, "fill abandoned: no client left, no background budget");
                body.abandon("no client left");
                return FillEnd::Abandoned;
            };
            loop {
                match next {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(key = %self.key, error = %e, "fill aborted by upstream");
                        body.abandon("upstream body failed");
                        return FillEnd::Failed;
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
            // Always a copy of exactly the bytes received: the pieces are slices of the
            // upstream connection's read buffer, and a stored slice would keep the whole
            // buffer alive (an 8 KiB or larger allocation behind a 150-byte object). An
            // encoder's output is its own buffer already.
            let chunk = match self.encode(&batch, ended) {
                Ok(Some(encoded)) => encoded,
                Ok(None) if batch.is_empty() => Bytes::new(),
                Ok(None) => {
                    let mut joined = BytesMut::with_capacity(batch_len);
                    for b in &batch {
                        joined.extend_from_slice(b);
                    }
                    joined.freeze()
                }
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "compression failed");
                    body.abandon("compression failed");
                    return FillEnd::Failed;
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
                    return FillEnd::TooLarge;
                }
            }
            if ended {
                break;
            }
        }
        // Store before announcing the end, so whoever sees the body finish also finds the
        // object in the cache.
        let end = if !storing {
            FillEnd::TooLarge
        } else if self.discard.load(Ordering::Acquire) {
            FillEnd::Discarded
        } else if self.storage.insert(
            &self.key,
            match self.before_store.take() {
                Some(read) => read(&self.object).unwrap_or_else(|| Arc::clone(&self.object)),
                None => Arc::clone(&self.object),
            },
            self.clock.wall(),
        ) {
            FillEnd::Stored
        } else {
            FillEnd::Discarded
        };
        body.finish();
        end
    }
}

impl Fill {
    /// Compresses a batch when the fill has an encoder (`None` when it has not); the last
    /// batch also ends the coding's stream.
    fn encode(&mut self, batch: &[Bytes], ended: bool) -> std::io::Result<Option<Bytes>> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(None);
        };
        for piece in batch {
            encoder.write(piece)?;
        }
        // The coding's own buffer becomes the chunk: no copy.
        if !ended {
            return Ok(Some(encoder.take()));
        }
        self.encoder.take().map(|e| e.finish()).transpose()
    }
}

type Polled = Option<Result<Frame<Bytes>, BoxError>>;

/// The next frame of the upstream body, or `None` when the fill should stop: no client
/// is left (no waiter, no reader) and the background budget has no room for it.
async fn next_frame(
    upstream: &mut IdleTimeout<Incoming>,
    interest: &mut Interest,
    body: &ChunkedBody,
) -> Option<Polled> {
    loop {
        if interest.permit.is_some() {
            return Some(upstream.frame().await);
        }
        tokio::select! {
            biased;
            frame = upstream.frame() => return Some(frame),
            _ = lost(interest.inflight.as_deref(), body) => {
                match interest.budget.admit(interest.client) {
                    Ok(permit) => interest.permit = Some(permit),
                    Err(_) => {
                        if let Some(leave) = interest.on_abandon.take() {
                            leave();
                        }
                        // Someone may have joined just before it left the coalescer.
                        let waiting = interest.inflight.as_ref().map_or(0, |i| i.waiting());
                        if waiting == 0 && body.readers() == 0 {
                            return None;
                        }
                    }
                }
            }
        }
    }
}

/// Resolves when no client waits for the fill's outcome and none reads its body.
pub async fn lost(inflight: Option<&Inflight>, body: &ChunkedBody) {
    loop {
        if let Some(i) = inflight {
            i.abandoned().await;
        }
        body.readers_gone().await;
        // A waiter becomes a reader before it stops waiting: both at zero means nobody.
        if inflight.is_none_or(|i| i.waiting() == 0) {
            return;
        }
    }
}
