//! A client's request body on its way upstream, watched so that a failure it causes is
//! blamed on the client: an invalid chunked body is a 400 (not a 502), a body the client
//! sends too slowly for the origin to answer in time is a 408 (not a 504), and neither
//! counts against the origin's circuit breaker. A body held up because the origin does not
//! read it is the origin's doing, not the client's: the watch tells the two apart by whom
//! the last read was waiting for.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::body::{BoxError, RequestBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::UpstreamBody;

/// 0: the origin's turn (not asked for more yet, or the last piece handed over).
const DONE: u8 = 1;
const FAILED: u8 = 2;
/// Asked for more, and the client has not sent it yet.
const WAITING_FOR_CLIENT: u8 = 3;

/// How far the client's body got. Shared between the body (in hyper's client) and the
/// request path that judges the exchange.
#[derive(Debug, Clone, Default)]
pub struct BodyProgress(Arc<AtomicU8>);

impl BodyProgress {
    /// Reading the client's body failed (invalid framing, connection cut).
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire) == FAILED
    }

    /// The last read of the body is waiting for the client to send more.
    pub fn waiting_for_client(&self) -> bool {
        self.0.load(Ordering::Acquire) == WAITING_FOR_CLIENT
    }
}

/// Wraps a client body for sending upstream; returns it with its progress.
pub fn watched(body: RequestBody) -> (UpstreamBody, BodyProgress) {
    let progress = BodyProgress::default();
    if body.is_end_stream() {
        progress.0.store(DONE, Ordering::Release);
    }
    let body = Watched {
        inner: body,
        progress: progress.clone(),
    };
    (body.boxed(), progress)
}

struct Watched {
    inner: RequestBody,
    progress: BodyProgress,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let state = match &polled {
            Poll::Ready(None) => DONE,
            Poll::Ready(Some(Err(_))) => FAILED,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => DONE,
            Poll::Ready(Some(Ok(_))) => 0,
            Poll::Pending => WAITING_FOR_CLIENT,
        };
        self.progress.0.store(state, Ordering::Release);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
