//! Writes gathered for the length of one poll of a connection, then sent together.
//!
//! The h2 server flushes every time it accepts a stream: with the streams of a
//! connection answered in its own poll ([`super::executor`]), ten requests read together
//! still went out as ten `writev`s, each a trip through the TCP stack (a third of the CPU
//! of hot h2 hits). [`Cork`] is the connection's socket as the server sees it: writes go to a
//! buffer and a flush is remembered, not done; [`Corked`] polls the connection and then
//! sends what the poll wrote, in one write where the socket takes it. Nothing waits for a
//! later event: every poll ends by sending. A large write with nothing gathered before it
//! goes straight to the socket (no copy), and a full buffer pushes back on hyper as a full
//! socket would, so a client that stops reading is still seen as one. Only h2 connections
//! gather (known from the client's first bytes, the h2 preface): HTTP/1.1 writes go
//! straight through, after any interim response put here ([`super::interim`]).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::interim::{Gate, Sink};

/// Bytes gathered before hyper has to wait for the socket.
const GATHER: usize = 64 * 1024;
/// A write at least this large, with nothing gathered, goes to the socket as it is.
const DIRECT: usize = 16 * 1024;

struct Inner<S> {
    io: S,
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
    /// A flush was asked for since the last one done.
    flush: bool,
    /// The connection's task, for bytes put here from elsewhere (an interim response
    /// from the upstream connection's task).
    waker: Option<std::task::Waker>,
    /// What the client speaks, from its first bytes.
    mode: Mode,
    /// Which HTTP/1.1 request may get interim responses.
    gate: Gate,
}

/// Only h2 gains from gathering (hyper flushes it per stream); HTTP/1.1 writes one response
/// at a time, and its writes go straight through (no copy), after any interim response
/// waiting here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fewer than four bytes read yet: gathered.
    Unknown {
        seen: [u8; 4],
        len: usize,
    },
    Gather,
    Through,
}

/// The start of the h2 connection preface (RFC 9113 §3.4), over TLS or not.
const H2_PREFACE: &[u8; 4] = b"PRI ";

impl Mode {
    /// Looks at bytes read, until four are known.
    fn saw(&mut self, bytes: &[u8]) {
        let Mode::Unknown { seen, len } = self else {
            return;
        };
        for &b in bytes.iter().take(4 - *len) {
            seen[*len] = b;
            *len += 1;
        }
        if *len == 4 {
            *self = if seen == H2_PREFACE {
                Mode::Gather
            } else {
                Mode::Through
            };
        }
    }
}

impl<S: AsyncWrite + Unpin> Inner<S> {
    /// Sends what is gathered, then flushes if one was asked for.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The common case on every socket operation of an HTTP/1.1 connection.
        if self.out.is_empty() && !self.flush {
            return Poll::Ready(Ok(()));
        }
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // Freed, not kept: an idle connection holds no buffer (20,000 idle sockets must
        // not keep 64 KiB each).
        self.out = Vec::new();
        self.sent = 0;
        if self.flush {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Room for `len` more bytes: sends first when the buffer is full.
    fn room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.out.len() + len > GATHER && !self.out.is_empty() {
            ready!(self.drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// The socket half hyper is given.
pub struct Cork<S>(Arc<Mutex<Inner<S>>>);

/// The connection future, sending what each of its polls wrote.
pub struct Corked<S, F: Future> {
    inner: Arc<Mutex<Inner<S>>>,
    conn: Pin<Box<F>>,
    /// The connection ended with this; sent what was left, then returned.
    ended: Option<F::Output>,
}

/// Wraps `io` for a connection made by `make` from the wrapped socket and the way to put
/// HTTP/1.1 interim responses on it ([`super::interim`]).
pub fn cork<S, F>(io: S, make: impl FnOnce(Cork<S>, Arc<dyn Sink>) -> F) -> Corked<S, F>
where
    S: Send + 'static,
    F: Future,
{
    let inner = Arc::new(Mutex::new(Inner {
        io,
        out: Vec::new(),
        sent: 0,
        flush: false,
        waker: None,
        mode: Mode::Unknown {
            seen: [0; 4],
            len: 0,
        },
        gate: Gate::default(),
    }));
    Corked {
        conn: Box::pin(make(
            Cork(Arc::clone(&inner)),
            Arc::clone(&inner) as Arc<dyn Sink>,
        )),
        inner,
        ended: None,
    }
}

/// An interim response head goes where the connection's next bytes go: after the last
/// response (hyper wrote all of it before reading this request) and before this one's;
/// the connection's task is woken to send it.
impl<S: Send> Sink for Mutex<Inner<S>> {
    fn begin(&self) -> u64 {
        lock(self).gate.begin()
    }

    fn end(&self, request: u64) {
        lock(self).gate.end(request);
    }

    fn send(&self, request: u64, status: http::StatusCode, headers: &http::HeaderMap) {
        let mut inner = lock(self);
        if !inner.gate.admit(request) {
            return;
        }
        inner
            .out
            .extend_from_slice(&super::interim::h1_head(status, headers));
        // From another task (an upstream connection's), nothing else would send it now.
        if let Some(waker) = &inner.waker {
            waker.wake_by_ref();
        }
    }
}

fn lock<S>(inner: &Mutex<Inner<S>>) -> MutexGuard<'_, Inner<S>> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S, F> Future for Corked<S, F>
where
    S: AsyncWrite + Unpin,
    F: Future,
    F::Output: Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if this.ended.is_none() {
            if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
                this.ended = Some(out);
            }
        }
        // Whatever the poll wrote goes out now; a socket that takes no more wakes this
        // task when it does. A connection that ended returns once its last bytes are sent
        // (or cannot be).
        let drained = {
            let mut inner = lock(&this.inner);
            if !inner
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.waker = Some(cx.waker().clone());
            }
            inner.drain(cx)
        };
        match (this.ended.take(), drained) {
            (Some(out), Poll::Ready(_)) => Poll::Ready(out),
            (ended, _) => {
                this.ended = ended;
                Poll::Pending
            }
        }
    }
}

// === impl Cork ===

impl<S: AsyncRead + Unpin> AsyncRead for Cork<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = lock(&self.0);
        let before = buf.filled().len();
        let read = Pin::new(&mut inner.io).poll_read(cx, buf);
        if matches!(inner.mode, Mode::Unknown { .. }) {
            inner.mode.saw(&buf.filled()[before..]);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cork<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = lock(&self.0);
        if inner.mode == Mode::Through {
            ready!(inner.drain(cx))?;
            return Pin::new(&mut inner.io).poll_write(cx, buf);
        }
        ready!(inner.room(cx, buf.len()))?;
        if inner.out.is_empty() && buf.len() >= DIRECT {
            return Pin::new(&mut inner.io).poll_write(cx, buf);
        }
        inner.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut inner = lock(&self.0);
        if inner.mode == Mode::Through {
            ready!(inner.drain(cx))?;
            return Pin::new(&mut inner.io).poll_write_vectored(cx, bufs);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        ready!(inner.room(cx, len))?;
        if inner.out.is_empty() && len >= DIRECT {
            return Pin::new(&mut inner.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            inner.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = lock(&self.0);
        if inner.mode == Mode::Through {
            ready!(inner.drain(cx))?;
            return Pin::new(&mut inner.io).poll_flush(cx);
        }
        // Done at the end of this poll of the connection (see `Corked`).
        inner.flush = true;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = lock(&self.0);
        ready!(inner.drain(cx))?;
        Pin::new(&mut inner.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes made in one poll reach the peer together, after the poll; a flush is not
    /// lost; shutdown sends what is left.
    #[tokio::test]
    async fn writes_of_one_poll_go_out_together() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let corked = cork(
            ours,
            |mut io: Cork<tokio::io::DuplexStream>, _| async move {
                io.write_all(b"one ").await.unwrap();
                io.flush().await.unwrap();
                io.write_all(b"two").await.unwrap();
                io.flush().await.unwrap();
                tokio::task::yield_now().await;
                io.write_all(b" three").await.unwrap();
                io.shutdown().await.unwrap();
            },
        );
        corked.await;
        let mut got = String::new();
        theirs.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "one two three");
    }

    /// An HTTP/1.1 client's connection writes straight through: the bytes are out before
    /// the poll ends. An h2 client's are gathered.
    #[tokio::test]
    async fn only_h2_connections_gather() {
        for (first, gathers) in [
            (&b"GET / HTTP/1.1\r\n"[..], false),
            (b"PRI * HTTP/2.0\r\n", true),
        ] {
            let (ours, mut theirs) = tokio::io::duplex(1 << 20);
            theirs.write_all(first).await.unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<bool>();
            let corked = cork(
                ours,
                move |mut io: Cork<tokio::io::DuplexStream>, _| async move {
                    let mut head = [0u8; 4];
                    io.read_exact(&mut head).await.unwrap();
                    io.write_all(b"reply").await.unwrap();
                    io.flush().await.unwrap();
                    // Still inside the connection's poll: has anything reached the peer?
                    let mut probe = [0u8; 5];
                    let arrived = futures_probe(&mut theirs, &mut probe);
                    let _ = tx.send(arrived);
                },
            );
            corked.await;
            assert_eq!(
                rx.await.unwrap(),
                !gathers,
                "{:?}",
                String::from_utf8_lossy(first)
            );
        }
    }

    /// Whether bytes are readable from `peer` right now (one poll, no waiting).
    fn futures_probe(peer: &mut tokio::io::DuplexStream, into: &mut [u8]) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut buf = ReadBuf::new(into);
        matches!(
            Pin::new(peer).poll_read(&mut cx, &mut buf),
            Poll::Ready(Ok(())) if !buf.filled().is_empty()
        )
    }

    /// A peer that stops reading fills the buffer, and then writes wait: hyper sees a
    /// full socket as it would without the cork.
    #[tokio::test]
    async fn a_full_socket_pushes_back() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let corked = cork(
            ours,
            |mut io: Cork<tokio::io::DuplexStream>, _| async move {
                let chunk = [7u8; 1000];
                for _ in 0..200 {
                    io.write_all(&chunk).await.unwrap();
                }
            },
        );
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), corked).await;
        assert!(waited.is_err(), "200 KB went into a socket that takes 1 KB");
    }

    /// A large write with nothing gathered before it goes to the socket directly; bytes
    /// keep their order when gathered bytes are waiting.
    #[tokio::test]
    async fn order_is_kept_around_direct_writes() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let big = vec![b'b'; DIRECT];
        let expect = [b"a".as_slice(), &big, b"c"].concat();
        let corked = cork(
            ours,
            move |mut io: Cork<tokio::io::DuplexStream>, _| async move {
                io.write_all(b"a").await.unwrap();
                io.write_all(&big).await.unwrap();
                io.write_all(b"c").await.unwrap();
                io.shutdown().await.unwrap();
            },
        );
        corked.await;
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expect);
    }
}
