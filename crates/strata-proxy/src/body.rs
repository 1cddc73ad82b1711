//! Response bodies the proxy sends to clients, and the upstream idle timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use strata_storage::BodyReader;
use tokio::time::{Instant, Sleep};

use crate::access_log::{AccessLog, AccessRecord};
use crate::metrics::Metrics;

use crate::upstream::UpstreamError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body, whichever protocol brought it (hyper's for HTTP/1.1 and h2,
/// the QUIC stream's for HTTP/3): the request phases are one code path for all three.
pub type RequestBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// An empty request body (a request sent upstream without the client's).
pub fn empty_request() -> RequestBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Reads a request body whole, refusing more than `limit` bytes. (Written out rather than
/// `Limited` + `collect`: their generic error bounds defeat rustc's `Send` proof for the
/// handler's future.)
pub async fn read_to_limit(mut body: RequestBody, limit: usize) -> Result<Bytes, String> {
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > limit {
                return Err(format!("reading the body: longer than {limit} bytes"));
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(read.freeze())
}

/// Where a response's bytes come from.
pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    /// From the cache (or a fill in progress), possibly a byte range of it.
    Cached {
        reader: BodyReader,
        remaining: Option<u64>,
    },
    /// Straight from upstream, for responses we do not store.
    Upstream(IdleTimeout<Incoming>),
    /// Pieces handed over by a task assembling them (an object stored in slices); an
    /// error ends the response unfinished.
    Channel {
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
        remaining: u64,
    },
}

impl ProxyBody {
    pub fn full(data: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(data.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Cached { reader, remaining } => match ready!(reader.poll_next(cx)) {
                Some(Ok(b)) => {
                    if let Some(r) = remaining {
                        *r = r.saturating_sub(b.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                None => Poll::Ready(None),
            },
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ProxyBody::Channel { rx, remaining } => match ready!(rx.poll_recv(cx)) {
                Some(Ok(b)) => {
                    *remaining = remaining.saturating_sub(b.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Some(Err(e)) => Poll::Ready(Some(Err(e))),
                // The task ended: with everything sent, or it would have sent an error.
                None if *remaining == 0 => Poll::Ready(None),
                None => Poll::Ready(Some(Err("the pieces of the body ended early".into()))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(d) => d.is_none(),
            ProxyBody::Cached { remaining, .. } => *remaining == Some(0),
            ProxyBody::Upstream(b) => b.inner.is_end_stream(),
            ProxyBody::Channel { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            ProxyBody::Cached {
                remaining: Some(r), ..
            } => SizeHint::with_exact(*r),
            ProxyBody::Cached {
                remaining: None, ..
            } => SizeHint::default(),
            ProxyBody::Upstream(b) => b.inner.size_hint(),
            ProxyBody::Channel { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// Fails a body that stays silent longer than `idle` while we wait on it. The clock starts
/// when we ask for the next piece, so time spent not polling (backpressure from a slow
/// client) does not count. Holds the origin's connection slot (if any) until the body is
/// done or dropped.
pub struct IdleTimeout<B> {
    pub(crate) inner: B,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration, slot: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        Self {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            armed: false,
            _slot: slot,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.armed {
                    // Start the clock now that we are waiting on upstream.
                    this.armed = true;
                    let deadline = Instant::now() + this.idle;
                    this.sleep.as_mut().reset(deadline);
                }
                ready!(this.sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(UpstreamError::IdleTimeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body handed to hyper: counts bytes and, when the exchange ends (completed or cut
/// off), writes the access log line and byte metrics.
pub struct ClientBody {
    inner: ProxyBody,
    done: Option<Completion>,
}

struct Completion {
    record: Option<AccessRecord>,
    started: std::time::Instant,
    bytes: u64,
    log: AccessLog,
    metrics: Arc<Metrics>,
}

impl ProxyBody {
    pub fn logged(
        self,
        record: Option<AccessRecord>,
        started: std::time::Instant,
        log: AccessLog,
        metrics: Arc<Metrics>,
    ) -> ClientBody {
        ClientBody {
            inner: self,
            done: Some(Completion {
                record,
                started,
                bytes: 0,
                log,
                metrics,
            }),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (Some(data), Some(done)) = (frame.data_ref(), this.done.as_mut()) {
                done.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        if let Some(mut done) = self.done.take() {
            done.metrics.response_bytes(done.bytes);
            if let Some(mut record) = done.record.take() {
                record.bytes = done.bytes;
                // Whole microseconds, so the log shows 0.16, not 0.16042800000000002.
                record.duration_ms = done.started.elapsed().as_micros() as f64 / 1000.0;
                done.log.log(record);
            }
        }
    }
}
