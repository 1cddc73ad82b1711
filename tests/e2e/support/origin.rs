//! A programmable origin for tests: a real hyper server on 127.0.0.1:0 that answers with
//! whatever the test's handler returns, counts requests and records their headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub version: http::Version,
    /// The request target's authority (h2's `:authority`), when it had one.
    pub authority: Option<String>,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the origin answers.
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: ReplyBody,
    /// Wait this long before sending the response head.
    pub delay: Duration,
}

pub enum ReplyBody {
    Bytes(Bytes),
    /// Sent piece by piece: each piece waits for its gate (if any) and then its delay.
    Pieces(Vec<Piece>),
}

pub struct Piece {
    pub data: Bytes,
    pub delay: Duration,
    pub gate: Option<Arc<tokio::sync::Notify>>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("test status"),
            headers: Vec::new(),
            body: ReplyBody::Bytes(Bytes::new()),
            delay: Duration::ZERO,
        }
    }

    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self::status(200).body(body)
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = ReplyBody::Bytes(body.into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        ));
        self
    }

    pub fn cc(self, value: &str) -> Self {
        self.header("cache-control", value)
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn pieces(mut self, pieces: Vec<Piece>) -> Self {
        self.body = ReplyBody::Pieces(pieces);
        self
    }
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A running test origin.
pub struct TestOrigin {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
    /// Per-connection tasks, aborted with the origin so kept-alive connections die too.
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TestOrigin {
    /// Starts an origin; `handler` gets each request and its 1-based sequence number.
    pub async fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", handler).await
    }

    /// An origin listening on `addr` (another loopback address, to stand for another host).
    pub async fn start_on(
        addr: &str,
        handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(addr, None, handler).await
    }

    /// An https origin: TLS with `tls`'s certificate, HTTP/1.1 or h2 as ALPN agrees.
    pub async fn start_tls(
        tls: tokio_rustls::TlsAcceptor,
        handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with("127.0.0.1:0", Some(tls), handler).await
    }

    /// An https origin on `addr`.
    pub async fn start_tls_on(
        addr: &str,
        tls: tokio_rustls::TlsAcceptor,
        handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(addr, Some(tls), handler).await
    }

    async fn start_with(
        addr: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (c, s) = (Arc::clone(&count), Arc::clone(&seen));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let conns_in = Arc::clone(&conns);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (c, s, h) = (Arc::clone(&c), Arc::clone(&s), Arc::clone(&handler));
                let tls = tls.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (c, s, h) = (Arc::clone(&c), Arc::clone(&s), Arc::clone(&h));
                        async move { Ok::<_, Infallible>(answer(req, &c, &s, &*h).await) }
                    });
                    match tls {
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                        }
                    }
                });
                conns_in
                    .lock()
                    .expect("conns lock")
                    .push(conn.abort_handle());
            }
        });
        Self {
            addr,
            count,
            seen,
            task,
            conns,
        }
    }

    /// A fixed reply for every request.
    pub async fn fixed(make: impl Fn() -> Reply + Send + Sync + 'static) -> Self {
        Self::start(move |_, _| make()).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("origin saw a request")
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
        for c in self.conns.lock().expect("conns lock").drain(..) {
            c.abort();
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    count: &AtomicUsize,
    seen: &Mutex<Vec<Seen>>,
    handler: &Handler,
) -> Response<PieceBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = Seen {
        method: parts.method,
        version: parts.version,
        authority: parts.uri.authority().map(|a| a.to_string()),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    };
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    seen.lock().expect("seen lock").push(request.clone());
    let reply = handler(&request, n);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let body = match reply.body {
        ReplyBody::Bytes(b) => PieceBody::once(b),
        ReplyBody::Pieces(pieces) => PieceBody::stream(pieces),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = reply.status;
    for (k, v) in reply.headers {
        resp.headers_mut().append(k, v);
    }
    resp
}

/// A body fed from a channel, so pieces can be delayed or gated.
pub struct PieceBody {
    rx: mpsc::Receiver<Bytes>,
    len: Option<u64>,
}

impl PieceBody {
    fn once(b: Bytes) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let len = b.len() as u64;
        if !b.is_empty() {
            let _ = tx.try_send(b);
        }
        Self { rx, len: Some(len) }
    }

    fn stream(pieces: Vec<Piece>) -> Self {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for p in pieces {
                if let Some(g) = p.gate {
                    g.notified().await;
                }
                if !p.delay.is_zero() {
                    tokio::time::sleep(p.delay).await;
                }
                if tx.send(p.data).await.is_err() {
                    return;
                }
            }
        });
        Self { rx, len: None }
    }
}

impl Body for PieceBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.len {
            Some(l) => http_body::SizeHint::with_exact(l),
            None => http_body::SizeHint::default(),
        }
    }
}
