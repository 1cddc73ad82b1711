//! Listeners: accept loops for the HTTP and admin ports, and the life of each connection.
//!
//! Every resource a client can hold is bounded here:
//! - **connections**: `limits.max_connections` in all (kept below the descriptor limit)
//!   and `limits.max_connections_per_client` per client address (IPv6: per /64). Past
//!   either, the connection gets a `503` with `Connection: close` and `Retry-After` and is
//!   closed at once: the client knows why, and the descriptor comes back.
//! - **idle time**: a connection with no request in progress for
//!   `limits.client_idle_timeout` is closed (gracefully: HTTP/1 closes, h2 gets GOAWAY),
//!   whether it has sent nothing at all, stopped inside the h2 preface, gone quiet after
//!   SETTINGS, or sits between keep-alive requests. Idle time is counted from the end of
//!   the last request, not from the last byte, so PINGs or empty frames do not keep a
//!   connection alive.
//! - **a client that stops reading**: a piece of a response handed out and not taken for
//!   `limits.client_send_timeout` (a full socket on HTTP/1, no flow-control window on h2)
//!   closes the connection.
//! - **a slow request head**: `limits.client_header_timeout` (HTTP/1, hyper's timer).
//! - **a slow TLS handshake**: `limits.client_header_timeout` too, from accept to the end
//!   of the handshake.
//! - **accept errors** (out of descriptors): exponential back-off up to 1 s; the warning
//!   is rate-limited.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::body::{BoxError, RequestBody};
use crate::budget::{Budget, Exhausted};
use crate::config::LimitsSection;
use crate::metrics::Metrics;
use crate::warn_throttled;

mod cork;
mod date;
mod detect;
pub(crate) mod executor;
mod h2;
pub mod interim;
pub mod quic;

use self::detect::Proto;
pub use self::interim::Interim;

/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection closed for idleness gets to say goodbye (h2 GOAWAY) before its
/// socket is dropped: a client that never answers cannot hold it open.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Longest wait between two accept attempts after errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What a handler learns about the connection a request came on.
#[derive(Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Arrived over TLS (an `https` listener).
    pub secure: bool,
    /// The client presented a certificate that chains to the cluster CA (`tls.client_ca`).
    pub authenticated: bool,
    /// Where interim responses to this request's client go, when its connection carries
    /// them (see [`interim`]). Here rather than in the request's extensions: an extension
    /// costs every HTTP/1.1 request an allocation.
    pub(crate) interim: Option<Arc<dyn interim::Sink>>,
}

/// How a listener treats its connections.
#[derive(Clone)]
pub struct ServeConfig {
    /// Named in refusals' `Cache-Status`.
    pub node: String,
    pub protocols: Arc<Protocols>,
    pub limits: Arc<Budget>,
    /// Refusals written at once (each holds its descriptor up to a second); past this,
    /// refused sockets are closed without an answer. Part of the descriptors kept beside
    /// the connection cap.
    pub refusals: usize,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    /// How long a TLS client has from accept to the end of its handshake.
    pub handshake_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Set on `https` listeners: connections start with a TLS handshake.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// `Alt-Svc` on every response (the HTTP/3 listener on the same port number).
    pub alt_svc: Option<http::HeaderValue>,
    /// Largest request head (HTTP/3's field section; hyper's own limits for the others).
    pub max_header_bytes: u64,
}

/// How connections speak each HTTP version, with the node's limits: HTTP/1.1 by hyper, h2
/// (over TLS by ALPN, or with prior knowledge) by [`h2`].
pub struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    h2: ::h2::server::Builder,
}

pub fn protocols(limits: &LimitsSection) -> Protocols {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.client_header_timeout.0)
        .max_buf_size(limits.max_header_bytes.0.max(8192) as usize)
        .max_headers(limits.max_headers);
    Protocols {
        http1,
        h2: h2::settings(limits),
    }
}

/// Accepts connections until `shutdown` flips, then drains for a bounded time.
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    config: ServeConfig,
    handler: F,
    shutdown: watch::Receiver<bool>,
) where
    F: Fn(Request<RequestBody>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let refusals = Arc::new(Semaphore::new(config.refusals.max(1)));
    let mut backoff = Duration::ZERO;
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`: one
                // form for every allow list, trust check and budget.
                (
                    stream,
                    SocketAddr::new(peer.ip().to_canonical(), peer.port()),
                )
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and say so once in a
                // while rather than once per attempt.
                backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                warn_throttled!(Duration::from_secs(10), error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        let permit = match admit(&config, peer) {
            Ok(p) => p,
            Err(reason) => {
                if let Ok(slot) = Arc::clone(&refusals).try_acquire_owned() {
                    let node = config.node.clone();
                    tokio::spawn(async move {
                        refuse(stream, &node, reason).await;
                        drop(slot);
                    });
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let config = config.clone();
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        tokio::spawn(async move {
            config.metrics.connection_opened();
            match config.tls.clone() {
                None => {
                    let conn = Conn {
                        peer,
                        secure: false,
                        authenticated: false,
                        interim: None,
                    };
                    connection(stream, None, conn, &config, handler, shutdown).await;
                }
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(config.handshake_timeout, tls.accept(stream)).await;
                    match handshake {
                        // An ACME TLS-ALPN-01 validation ends with its handshake (RFC
                        // 8737 §3): nothing is served on it.
                        Ok(Ok(stream))
                            if stream.get_ref().1.alpn_protocol()
                                == Some(crate::tls::ACME_TLS_ALPN) => {}
                        Ok(Ok(stream)) => {
                            // rustls keeps a client certificate only once it verified it.
                            let authenticated = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            let proto = Proto::from_alpn(stream.get_ref().1.alpn_protocol());
                            let conn = Conn {
                                peer,
                                secure: true,
                                authenticated,
                                interim: None,
                            };
                            connection(stream, proto, conn, &config, handler, shutdown).await;
                        }
                        Ok(Err(e)) => {
                            config.metrics.tls_handshake_failed("error");
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        }
                        Err(_) => config.metrics.tls_handshake_failed("timeout"),
                    }
                }
            }
            config.metrics.connection_closed();
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT + CLOSE_GRACE, config.limits.drained())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
}

/// A connection slot for `peer`, or the reason it is refused (counted and logged, at
/// most one line per 10 s).
fn admit(config: &ServeConfig, peer: SocketAddr) -> Result<crate::budget::Permit, &'static str> {
    config.limits.admit(peer.ip()).map_err(|exhausted| {
        let reason = match exhausted {
            Exhausted::Node => "connection-limit",
            Exhausted::Client => "client-connection-limit",
        };
        config.metrics.connection_refused(reason);
        warn_throttled!(Duration::from_secs(10), client = %peer.ip(), reason, "connection refused");
        reason
    })
}

/// Answers a connection over the limits: a short 503, then close.
async fn refuse(mut stream: TcpStream, node: &str, reason: &str) {
    let body = "503 Service Unavailable: too many connections\n";
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\ncache-status: {node}; detail={}\r\n\r\n{body}",
        body.len(),
        reason,
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Lingering close: read what the client already sent before closing, or the
        // kernel answers it with a reset that can destroy the 503 before it is read.
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Requests in progress on one connection, when the last one ended, and whether the client
/// is taking what it is given.
struct Activity {
    started: Instant,
    active: AtomicUsize,
    /// Milliseconds from `started` to the end of the last request.
    last_end_ms: AtomicU64,
    /// Response bodies that handed out a piece and have not been asked for the next yet.
    handed: AtomicUsize,
    /// Counts every time a response body is asked for more: unchanged for the send
    /// timeout while pieces wait, and the client is not reading.
    polls: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// When the connection falls idle, or `None` while a request is in progress.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        (self.active.load(Ordering::Acquire) == 0).then(|| {
            self.started + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire)) + idle
        })
    }

    fn in_progress(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }
}

/// One request in progress: from the moment hyper hands it over until its response body
/// is done (or the request is dropped, on a reset).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.started.elapsed().as_millis() as u64;
        a.last_end_ms.store(ms, Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress until it is done, and
/// tells the connection when a piece it handed out is not taken (the client stopped
/// reading: a full socket on HTTP/1, no flow-control window on h2).
struct Tracked<B> {
    inner: B,
    in_flight: InFlight,
    handed: bool,
}

impl<B> Tracked<B> {
    /// Part of a piece went out (h2 sends as the client's window allows): the client is
    /// reading, though the body was not asked for more.
    fn sent_some(&self) {
        self.in_flight.0.polls.fetch_add(1, Ordering::Relaxed);
    }

    fn taken(&mut self) {
        if std::mem::take(&mut self.handed) {
            self.in_flight.0.handed.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.taken();
        self.in_flight.0.polls.fetch_add(1, Ordering::Relaxed);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(Some(Ok(_)))) && !self.inner.is_end_stream() {
            self.handed = true;
            self.in_flight.0.handed.fetch_add(1, Ordering::AcqRel);
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

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.taken();
    }
}

/// How a connection's driver watches for a client that stopped reading.
#[derive(Default)]
struct StallWatch {
    polls: u64,
    /// Since when pieces have waited with no body asked for more.
    since: Option<Instant>,
}

impl StallWatch {
    /// Whether the client has taken nothing for `limit`, looking at `activity` now.
    fn stalled(&mut self, activity: &Activity, now: Instant, limit: Duration) -> bool {
        let polls = activity.polls.load(Ordering::Relaxed);
        if activity.handed.load(Ordering::Acquire) == 0 || polls != self.polls {
            self.polls = polls;
            self.since = None;
            return false;
        }
        now.duration_since(*self.since.get_or_insert(now)) >= limit
    }
}

/// Serves one connection until it ends, idles out, stalls, or the node shuts down. `proto`:
/// the HTTP version when ALPN chose one; otherwise the client's first bytes tell.
async fn connection<S, F, Fut, B>(
    stream: S,
    proto: Option<Proto>,
    conn_info: Conn,
    config: &ServeConfig,
    handler: F,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<RequestBody>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let peer = conn_info.peer;
    let activity = Arc::new(Activity {
        started: Instant::now(),
        active: AtomicUsize::new(0),
        last_end_ms: AtomicU64::new(0),
        handed: AtomicUsize::new(0),
        polls: AtomicU64::new(0),
    });
    // Set here and looked at by the connection's own future, which this task polls right
    // after setting it: an atomic suffices (a `Notify` locked a mutex on every poll).
    let close = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut conn = cork::cork(stream, |io, interim_sink| {
        let (protocols, close) = (Arc::clone(&config.protocols), Arc::clone(&close));
        let alt_svc = config.alt_svc.clone();
        let activity = Arc::clone(&activity);
        let metrics = Arc::clone(&config.metrics);
        async move {
            let (proto, io) = match proto {
                Some(proto) => (proto, detect::Rewind::new(io)),
                None => detect::sniff(io).await?,
            };
            match proto {
                Proto::H2 => {
                    let streams = h2::Streams {
                        conn: conn_info,
                        handler,
                        activity,
                        alt_svc,
                        metrics,
                        resets: Arc::default(),
                    };
                    h2::serve(io, &protocols.h2, streams, close).await?;
                }
                Proto::Http1 => {
                    let svc = http1_service(conn_info, handler, activity, alt_svc, interim_sink);
                    let conn = protocols.http1.serve_connection(TokioIo::new(io), svc);
                    let mut conn = std::pin::pin!(conn);
                    let mut closing = false;
                    std::future::poll_fn(|cx| {
                        if !closing && close.load(Ordering::Relaxed) {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        conn.as_mut().poll(cx)
                    })
                    .await?;
                }
            }
            Ok::<(), BoxError>(())
        }
    });
    // How often a connection with a request in progress is looked at for a stalled client.
    let look = (config.send_timeout.min(config.idle_timeout) / 4).max(Duration::from_millis(250));
    let mut stall = StallWatch::default();
    // Set once the connection is told to close: then it has until this instant.
    let mut closing: Option<Instant> = None;
    let mut draining = false;
    loop {
        let now = Instant::now();
        // Looked at every `look` in any case: a request that starts after this sleep began
        // must not leave its stall unseen until the idle deadline.
        let check = closing.unwrap_or_else(|| {
            activity
                .idle_deadline(config.idle_timeout)
                .map_or(now + look, |idle| idle.min(now + look))
        });
        tokio::select! {
            ended = &mut conn => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, %peer, "connection ended with error");
                }
                return;
            }
            _ = tokio::time::sleep_until(check) => {
                let now = Instant::now();
                if closing.is_some() {
                    // A stream that raced in after the GOAWAY gets the drain time to finish.
                    if activity.in_progress() && !draining {
                        draining = true;
                        closing = Some(now + DRAIN_TIMEOUT);
                        continue;
                    }
                    // It had its chance to finish: drop the socket.
                    return;
                }
                if stall.stalled(&activity, now, config.send_timeout) {
                    config.metrics.connection_timed_out("send");
                    return;
                }
                if activity.idle_deadline(config.idle_timeout).is_some_and(|d| now >= d) {
                    config.metrics.connection_timed_out("idle");
                    close.store(true, Ordering::Relaxed);
                    closing = Some(now + CLOSE_GRACE);
                }
            }
            _ = shutdown.changed(), if closing.is_none() || !draining => {
                close.store(true, Ordering::Relaxed);
                draining = true;
                closing = Some(Instant::now() + DRAIN_TIMEOUT);
            }
        }
    }
}

/// The HTTP/1.x service of a connection: the handler, with each request counted in
/// progress until its response body is done.
fn http1_service<F, Fut, B>(
    conn_info: Conn,
    handler: F,
    activity: Arc<Activity>,
    alt_svc: Option<http::HeaderValue>,
    interim_sink: Arc<dyn interim::Sink>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<B>>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<Tracked<B>>, std::convert::Infallible>> + Send,
> + Send
where
    F: Fn(Request<RequestBody>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    service_fn(move |req: Request<Incoming>| {
        let in_flight = activity.begin();
        // HTTP/1.1 requests may get interim responses (not 1.0: RFC 9110 §15.2).
        let mut conn = conn_info.clone();
        if req.version() == http::Version::HTTP_11 {
            conn.interim = Some(Arc::clone(&interim_sink));
        }
        let req = req.map(|body| body.map_err(BoxError::from).boxed());
        // Boxed: the handler's future is large, and wrapping it unboxed would copy it
        // once more per request (measured: ~5% of hot-hit throughput).
        let fut = Box::pin(handler(req, conn));
        let alt_svc = alt_svc.clone();
        async move {
            let mut resp = fut.await?;
            if let Some(v) = alt_svc {
                resp.headers_mut().insert(http::header::ALT_SVC, v);
            }
            Ok::<_, std::convert::Infallible>(resp.map(|inner| Tracked {
                inner,
                in_flight,
                handed: false,
            }))
        }
    })
}
