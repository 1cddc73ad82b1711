//! Interim (1xx) responses to a client, before its final response: `103 Early Hints`
//! configured per rule, and the 1xx an origin sends (RFC 9110 §15.2).
//!
//! hyper's server has no way to send one, so each connection kind that can carry them
//! brings its own [`Interim`] in the request's extensions:
//! - HTTP/1.1: the head is written into the connection's cork ([`super::cork`]) while the
//!   final response is still being made. hyper writes nothing on an HTTP/1.1 connection
//!   between the end of one response and the start of the next (it reads the next request
//!   only once the last response is written), so the bytes land between the two.
//! - HTTP/3: a HEADERS frame on the request's stream, before the final one (RFC 9114
//!   §4.1), sent by the task that owns the stream.
//! - h2: a HEADERS frame on the request's stream, before the final one (RFC 9113 §8.1),
//!   queued on the connection at once by whichever task has the head ([`H2Sink`]). hyper's
//!   h2 server cannot send one (hyperium/hyper#4114), so h2 is served with the `h2` crate
//!   directly ([`super::h2`]).
//!
//! HTTP/1.0 clients never get one (RFC 9110 §15.2). An [`Interim`] goes quiet once its
//! request has been answered, so a 1xx that arrives late (an origin's, for a fill the
//! client stopped waiting for) never lands in front of another request's response. The
//! per-request state lives in the connection's sink ([`Gate`]), and a request opens it
//! only when it goes upstream ([`Opener`]): a hit costs nothing (numbering every
//! HTTP/1.1 request cost 4-5% of hot-hit throughput).

use std::sync::{Arc, Mutex};

use http::{HeaderMap, StatusCode};

/// Where a connection sends a request's interim responses. Requests are numbered by the
/// sink ([`Sink::begin`]); a head for a request that is not the one in progress, or that
/// has its final response, or past [`MAX_PER_REQUEST`], is dropped ([`Gate`]).
pub(crate) trait Sink: Send + Sync {
    fn begin(&self) -> u64;
    fn end(&self, request: u64);
    fn send(&self, request: u64, status: StatusCode, headers: &HeaderMap);
}

/// Which request of a connection may still get interim responses, and how many it got.
/// Kept by each sink, so a request costs no allocation of its own.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    request: u64,
    open: bool,
    sent: u32,
}

impl Gate {
    pub(crate) fn begin(&mut self) -> u64 {
        self.request += 1;
        self.open = true;
        self.sent = 0;
        self.request
    }

    pub(crate) fn end(&mut self, request: u64) {
        if request == self.request {
            self.open = false;
        }
    }

    /// Whether one more head may go to `request`.
    pub(crate) fn admit(&mut self, request: u64) -> bool {
        let ok = self.open && request == self.request && self.sent < MAX_PER_REQUEST;
        self.sent += u32::from(ok);
        ok
    }
}

/// A request's way to send interim responses, while it is being answered.
#[derive(Clone)]
pub struct Interim {
    sink: Arc<dyn Sink>,
    request: u64,
}

impl std::fmt::Debug for Interim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interim")
    }
}

/// Interim responses one request may get, and the largest passed on: an origin that
/// sends thousands, or huge ones, costs the client connection nothing beyond these.
const MAX_PER_REQUEST: u32 = 8;
const MAX_BYTES: usize = 16 * 1024;

/// A request's way to its connection's sink, opened the first time something may send
/// an interim response, and closed when the request is done with (dropped: it has its
/// final response).
pub(crate) struct Opener {
    sink: Option<Arc<dyn Sink>>,
    open: Option<(Interim, Answered)>,
}

impl Opener {
    /// `sink`: the connection's, when it carries interim responses.
    pub(crate) fn new(sink: Option<Arc<dyn Sink>>) -> Self {
        Self { sink, open: None }
    }

    /// The request's [`Interim`], opened now if it was not.
    pub(crate) fn get(&mut self) -> Option<Interim> {
        if self.open.is_none() {
            self.open = self.sink.as_ref().map(Interim::new);
        }
        self.open.as_ref().map(|(interim, _)| interim.clone())
    }
}

/// Ends an [`Interim`] when dropped: the request has its final response.
pub(crate) struct Answered {
    sink: Arc<dyn Sink>,
    request: u64,
}

impl Drop for Answered {
    fn drop(&mut self) {
        self.sink.end(self.request);
    }
}

impl Interim {
    /// The next request on `sink`'s connection.
    pub(crate) fn new(sink: &Arc<dyn Sink>) -> (Self, Answered) {
        let request = sink.begin();
        (
            Self {
                sink: Arc::clone(sink),
                request,
            },
            Answered {
                sink: Arc::clone(sink),
                request,
            },
        )
    }

    /// Sends `status` (a 1xx other than `100 Continue`, which is the connection's own
    /// business, and `101`, which changes protocols) with `headers`, minus the
    /// connection's own fields. Past [`MAX_PER_REQUEST`] for this request, or larger than
    /// [`MAX_BYTES`], it is dropped.
    pub fn send(&self, status: StatusCode, headers: &HeaderMap) {
        if !forwardable(status) {
            return;
        }
        let size: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if size > MAX_BYTES {
            return;
        }
        let mut headers = headers.clone();
        strata_http_cache::hop_by_hop::strip_hop_by_hop(&mut headers);
        headers.remove(http::header::CONTENT_LENGTH);
        self.sink.send(self.request, status, &headers);
    }
}

/// The 1xx responses passed to a client.
pub fn forwardable(status: StatusCode) -> bool {
    status.is_informational()
        && status != StatusCode::CONTINUE
        && status != StatusCode::SWITCHING_PROTOCOLS
}

/// An HTTP/1.1 interim response head.
pub(crate) fn h1_head(status: StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + headers.len() * 64);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Interim").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// HTTP/3: interim heads go to the request's task, which writes them on its stream (one
/// sink per request stream).
pub(crate) struct H3Sink {
    heads: tokio::sync::mpsc::Sender<http::Response<()>>,
    gate: Mutex<Gate>,
}

impl H3Sink {
    pub(crate) fn new(heads: tokio::sync::mpsc::Sender<http::Response<()>>) -> Self {
        Self {
            heads,
            gate: Mutex::default(),
        }
    }
}

impl Sink for H3Sink {
    fn begin(&self) -> u64 {
        lock(&self.gate).begin()
    }

    fn end(&self, request: u64) {
        lock(&self.gate).end(request);
    }

    fn send(&self, request: u64, status: StatusCode, headers: &HeaderMap) {
        if !lock(&self.gate).admit(request) {
            return;
        }
        let mut head = http::Response::new(());
        *head.status_mut() = status;
        *head.headers_mut() = headers.clone();
        // A client that does not read them loses hints, never the response.
        let _ = self.heads.try_send(head);
    }
}

/// h2: the request stream's response half, shared by the stream's task (which sends the
/// final response with it) and whoever has an interim head (queued on the connection at
/// once, by h2's `send_informational`). One per request stream.
pub(crate) struct H2Sink {
    stream: Mutex<H2Stream>,
}

struct H2Stream {
    gate: Gate,
    /// Taken for the final response; nothing is sent after it.
    respond: Option<::h2::server::SendResponse<bytes::Bytes>>,
}

impl H2Sink {
    pub(crate) fn new(respond: ::h2::server::SendResponse<bytes::Bytes>) -> Self {
        Self {
            stream: Mutex::new(H2Stream {
                gate: Gate::default(),
                respond: Some(respond),
            }),
        }
    }

    /// The response half, for the final response.
    pub(crate) fn take(&self) -> Option<::h2::server::SendResponse<bytes::Bytes>> {
        lock(&self.stream).respond.take()
    }

    /// Ready once the client has reset the stream.
    pub(crate) fn poll_reset(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match lock(&self.stream).respond.as_mut() {
            Some(respond) => respond.poll_reset(cx).map(|_| ()),
            None => std::task::Poll::Pending,
        }
    }

    /// `100 Continue`, for a request that asked for it (RFC 9110 §10.1.1), when its body
    /// is first read.
    pub(crate) fn send_continue(&self) {
        if let Some(respond) = lock(&self.stream).respond.as_mut() {
            let mut head = http::Response::new(());
            *head.status_mut() = StatusCode::CONTINUE;
            let _ = respond.send_informational(head);
        }
    }
}

impl Sink for H2Sink {
    fn begin(&self) -> u64 {
        lock(&self.stream).gate.begin()
    }

    fn end(&self, request: u64) {
        lock(&self.stream).gate.end(request);
    }

    fn send(&self, request: u64, status: StatusCode, headers: &HeaderMap) {
        let mut stream = lock(&self.stream);
        if !stream.gate.admit(request) {
            return;
        }
        if let Some(respond) = stream.respond.as_mut() {
            let mut head = http::Response::new(());
            *head.status_mut() = status;
            *head.headers_mut() = headers.clone();
            // Fails only once the stream is gone: then no one is waiting for it.
            let _ = respond.send_informational(head);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen {
        gate: Mutex<Gate>,
        heads: Mutex<Vec<(StatusCode, HeaderMap)>>,
    }

    impl Sink for Seen {
        fn begin(&self) -> u64 {
            lock(&self.gate).begin()
        }
        fn end(&self, request: u64) {
            lock(&self.gate).end(request);
        }
        fn send(&self, request: u64, status: StatusCode, headers: &HeaderMap) {
            if lock(&self.gate).admit(request) {
                self.heads.lock().unwrap().push((status, headers.clone()));
            }
        }
    }

    #[test]
    fn rfc9110_15_2_interim_heads() {
        let mut h = HeaderMap::new();
        h.insert("link", "</a.css>; rel=preload; as=style".parse().unwrap());
        assert_eq!(
            h1_head(StatusCode::from_u16(103).unwrap(), &h),
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload; as=style\r\n\r\n"
        );
        assert!(forwardable(StatusCode::from_u16(103).unwrap()));
        assert!(forwardable(StatusCode::PROCESSING));
        assert!(!forwardable(StatusCode::CONTINUE));
        assert!(!forwardable(StatusCode::SWITCHING_PROTOCOLS));
        assert!(!forwardable(StatusCode::OK));
    }

    #[test]
    fn nothing_is_sent_once_the_request_is_answered_nor_the_connections_fields() {
        let seen = Arc::new(Seen::default());
        let sink = Arc::clone(&seen) as Arc<dyn Sink>;
        let (interim, answered) = Interim::new(&sink);
        let mut h = HeaderMap::new();
        h.insert("link", "</a.js>; rel=preload".parse().unwrap());
        h.insert("connection", "close".parse().unwrap());
        interim.send(StatusCode::from_u16(103).unwrap(), &h);
        drop(answered);
        interim.send(StatusCode::from_u16(103).unwrap(), &h);
        // Nor to the connection's next request, late.
        let (_next, _answered) = Interim::new(&sink);
        interim.send(StatusCode::from_u16(103).unwrap(), &h);
        let seen = seen.heads.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].1.get("connection").is_none());
        assert!(seen[0].1.get("link").is_some());
    }

    #[test]
    fn an_origin_cannot_flood_a_client_with_interim_responses() {
        let seen = Arc::new(Seen::default());
        let sink = Arc::clone(&seen) as Arc<dyn Sink>;
        let (interim, _answered) = Interim::new(&sink);
        let mut h = HeaderMap::new();
        h.insert("link", "</a.js>; rel=preload".parse().unwrap());
        for _ in 0..1000 {
            interim.send(StatusCode::from_u16(103).unwrap(), &h);
        }
        let mut huge = HeaderMap::new();
        huge.insert("link", "x".repeat(MAX_BYTES).parse().unwrap());
        let (big, _answered) = Interim::new(&sink);
        big.send(StatusCode::from_u16(103).unwrap(), &huge);
        assert_eq!(seen.heads.lock().unwrap().len(), MAX_PER_REQUEST as usize);
    }
}
