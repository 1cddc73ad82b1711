//! h2 (RFC 9113) to clients, with the `h2` crate and the same handler as HTTP/1.1 and
//! HTTP/3.
//!
//! hyper's h2 server is this same crate with a body adapter around it, but it cannot send
//! interim responses (hyperium/hyper#4114), and `103 Early Hints` matter most to the
//! browsers that speak h2. So this is the part of hyper's server we need, and no more:
//! - each stream is answered on its own task, polled once in the connection's own poll
//!   first ([`super::executor`]), so hits of one read go out in one write;
//! - a client's `RST_STREAM` while the answer is being made drops the handler's future
//!   (a miss only it waited for is abandoned, as with hyper);
//! - the response body is handed to h2 only as the client's flow-control window allows
//!   (a piece is cut to the window, zero-copy), so h2 never queues more than the window for
//!   a stream; each part sent counts as progress for the connection's stall watch, and a
//!   client that opens no window is cut off after `limits.client_send_timeout`;
//! - request bodies give their window back as they are read.
//!
//! Limits: streams, header list size and resets before a stream is accepted are the `h2`
//! crate's own, set in [`settings`]. A client that resets streams *after* they were accepted
//! (each one a cache lookup, perhaps an origin request, and nothing to the client) is
//! counted here ([`Resets`]) and cut off with GOAWAY `ENHANCE_YOUR_CALM` (CVE-2023-44487).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use ::h2::server::{Builder, SendResponse};
use ::h2::{Reason, RecvStream, SendStream};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use strata_http_cache::hop_by_hop::strip_hop_by_hop;
use tokio::io::{AsyncRead, AsyncWrite};

use super::interim::{H2Sink, Sink};
use super::{Activity, Conn, Tracked};
use crate::body::{BoxError, RequestBody};
use crate::config::LimitsSection;

/// The h2 settings and limits a node's connections get.
pub(crate) fn settings(limits: &LimitsSection) -> Builder {
    let mut builder = Builder::new();
    builder
        // hyper's defaults, measured with: a 1 MiB window per stream and per connection,
        // 16 KiB frames, 400 KiB of response queued per stream.
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 20)
        .max_frame_size(16 * 1024)
        .max_send_buffer_size(400 * 1024)
        .max_header_list_size(limits.max_header_bytes.0.min(u64::from(u32::MAX)) as u32)
        .max_concurrent_streams(limits.max_streams_per_connection)
        // Clients that reset streams as fast as they open them (CVE-2023-44487), or make
        // us reset theirs, are cut off with GOAWAY.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(256));
    builder
}

/// What every stream of a connection shares.
pub(crate) struct Streams<F> {
    pub(crate) conn: Conn,
    pub(crate) handler: F,
    pub(crate) activity: Arc<Activity>,
    pub(crate) alt_svc: Option<HeaderValue>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) resets: Arc<Resets>,
}

/// Streams the client reset before their answer's head was sent (Envoy's "premature
/// resets", without Envoy's one-second bound: reading the clock for every stream cost 0.3%
/// of hot h2 hits). Like Envoy's rule, a client that mixes in as many streams it lets
/// finish (hits) is not cut off: each of those cost it a full exchange. Past [`MAX_EARLY_RESETS`], when they are more than half of the streams the
/// connection opened, the client is cut off: browsers cancel a few requests on navigation,
/// players a segment download on a seek; an attack cancels nearly all.
#[derive(Default)]
pub(crate) struct Resets {
    early: AtomicU32,
}

const MAX_EARLY_RESETS: u32 = 100;

impl Resets {
    fn reset(&self) {
        self.early.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a connection that opened `streams` streams should be cut off.
    fn abusive(&self, streams: u32) -> bool {
        let early = self.early.load(Ordering::Relaxed);
        early >= MAX_EARLY_RESETS && early > streams / 2
    }
}

/// Serves one h2 connection until the client ends it or `close` is set: then GOAWAY, and
/// the streams already open finish. (`close` is set by the task that polls this, which
/// polls it again right after: no waker needed.)
pub(crate) async fn serve<S, F, Fut, B>(
    io: S,
    settings: &Builder,
    streams: Streams<F>,
    close: Arc<AtomicBool>,
) -> Result<(), ::h2::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<RequestBody>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut handshake = std::pin::pin!(settings.handshake::<_, Bytes>(io));
    let handshaken = poll_fn(|cx| {
        if close.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        handshake.as_mut().poll(cx).map(Some)
    })
    .await;
    let Some(conn) = handshaken else {
        return Ok(());
    };
    let mut conn = conn?;
    let mut closing = false;
    let mut opened: u32 = 0;
    loop {
        let next = poll_fn(|cx| {
            if !closing && close.load(Ordering::Relaxed) {
                return Poll::Ready(None);
            }
            conn.poll_accept(cx).map(Some)
        })
        .await;
        match next {
            None => {
                conn.graceful_shutdown();
                closing = true;
            }
            Some(None) => return Ok(()),
            Some(Some(Err(e))) => return Err(e),
            Some(Some(Ok((req, respond)))) => {
                opened = opened.saturating_add(1);
                if streams.resets.abusive(opened) {
                    streams.metrics.connection_cut_off("h2-resets");
                    tracing::debug!(peer = %streams.conn.peer, opened, "h2 client resetting its streams: cut off");
                    conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    closing = true;
                    continue;
                }
                super::executor::poll_then_spawn(stream(req, respond, &streams));
            }
        }
    }
}

/// Answers one stream.
fn stream<F, Fut, B>(
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    streams: &Streams<F>,
) -> impl Future<Output = ()> + Send + 'static
where
    F: Fn(Request<RequestBody>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let in_flight = streams.activity.begin();
    let resets = Arc::clone(&streams.resets);
    let sink = Arc::new(H2Sink::new(respond));
    let expects_continue = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let length = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let req = req.map(|stream| {
        RecvBody {
            stream,
            length,
            data_done: false,
            on_first_read: expects_continue.then(|| Arc::clone(&sink)),
        }
        .boxed()
    });
    let conn = Conn {
        interim: Some(Arc::clone(&sink) as Arc<dyn Sink>),
        ..streams.conn.clone()
    };
    // Boxed: the handler's future is large (see the HTTP/1.1 service).
    let mut answer = Box::pin((streams.handler)(req, conn));
    let alt_svc = streams.alt_svc.clone();
    async move {
        // The answer, unless the client resets the stream first.
        let answered = poll_fn(|cx| {
            if let Poll::Ready(resp) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(resp));
            }
            sink.poll_reset(cx).map(|()| None)
        })
        .await;
        drop(answer);
        let Some(Ok(resp)) = answered else {
            resets.reset();
            return;
        };
        let Some(mut respond) = sink.take() else {
            return;
        };
        let (mut parts, body) = resp.into_parts();
        // Connection-specific fields are malformed in h2 (RFC 9113 §8.2.2).
        strip_hop_by_hop(&mut parts.headers);
        super::date::insert_if_missing(&mut parts.headers);
        if let Some(v) = alt_svc {
            parts.headers.insert(http::header::ALT_SVC, v);
        }
        let body = Tracked {
            inner: body,
            in_flight,
            handed: false,
        };
        if body.is_end_stream() {
            let _ = respond.send_response(Response::from_parts(parts, ()), true);
            return;
        }
        if let Some(len) = body.size_hint().exact() {
            parts
                .headers
                .entry(http::header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
        if let Ok(send) = respond.send_response(Response::from_parts(parts, ()), false) {
            // A reset once the answer is under way (a seek, a rendition switch) is the
            // client's right: not counted.
            pipe(body, send).await;
        }
    }
}

/// The most a stream asks of the connection's window at once: enough for a 64 KiB piece,
/// without making every waiting stream claim a whole body (hyperium/hyper#4003).
const CLAIM: usize = 64 * 1024;

/// Sends `body` on `send` as the client's window allows, until it ends, the client resets
/// the stream, or the stream is gone; a body that fails midway resets the stream, so the
/// client never takes a truncated body for a whole one.
async fn pipe<B>(mut body: Tracked<B>, mut send: SendStream<Bytes>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        // The next piece, unless the client resets the stream while it is awaited.
        let next = poll_fn(|cx| {
            // The error is dropped here: why the body failed is the body's to log.
            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Some(frame.map(|r| r.map_err(drop))));
            }
            send.poll_reset(cx).map(|_| None)
        })
        .await;
        let frame = match next {
            None => return,
            Some(None) => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Some(Err(()))) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                return;
            }
            Some(Some(Ok(frame))) => frame,
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.reserve_capacity(0);
                    let _ = send.send_trailers(trailers);
                    return;
                }
                continue;
            }
        };
        let end = body.is_end_stream();
        if data.is_empty() && end {
            let _ = send.send_data(data, true);
            return;
        }
        // Cut to the window: h2 holds no more of it than the client may take now.
        while !data.is_empty() {
            send.reserve_capacity(data.len().min(CLAIM));
            let window = poll_fn(|cx| loop {
                let capacity = send.capacity();
                if capacity > 0 {
                    return Poll::Ready(Some(capacity));
                }
                match send.poll_capacity(cx) {
                    // Waiting for the client's window: unless it reset the stream.
                    Poll::Pending => return send.poll_reset(cx).map(|_| None),
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(None),
                }
            })
            .await;
            let Some(capacity) = window else {
                return;
            };
            let part = data.split_to(capacity.min(data.len()));
            if send.send_data(part, end && data.is_empty()).is_err() {
                return;
            }
            body.sent_some();
        }
        if end {
            return;
        }
    }
}

/// A request body read from its h2 stream, giving the client its window back as it goes.
struct RecvBody {
    stream: RecvStream,
    /// What `Content-Length` says is left (h2 checks the body against it).
    length: Option<u64>,
    data_done: bool,
    /// Told to send `100 Continue` when the body is first read.
    on_first_read: Option<Arc<H2Sink>>,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(sink) = self.on_first_read.take() {
            sink.send_continue();
        }
        if !self.data_done {
            match self.stream.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    if let Some(left) = self.length.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => self.data_done = true,
            }
        }
        match self.stream.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.stream.is_end_stream() {
            return SizeHint::with_exact(0);
        }
        self.length.map(SizeHint::with_exact).unwrap_or_default()
    }
}
