//! A client socket that remembers since when a write has been blocked: a client that
//! stops reading its response (a zero TCP window) is found by this, not by idleness.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Shared with the connection's driver.
pub struct Stall {
    started: Instant,
    /// Milliseconds from `started` (plus one) to the first write that found the socket
    /// full, while it still is; 0 when writes go through.
    blocked: AtomicU64,
}

impl Stall {
    /// Since when writes have been blocked, if they are.
    pub fn blocked_since(&self) -> Option<Instant> {
        match self.blocked.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.started + Duration::from_millis(ms - 1)),
        }
    }

    fn note<T>(&self, polled: &Poll<T>) {
        match polled {
            Poll::Pending => {
                let ms = self.started.elapsed().as_millis() as u64 + 1;
                let _ = self
                    .blocked
                    .compare_exchange(0, ms, Ordering::AcqRel, Ordering::Relaxed);
            }
            Poll::Ready(_) => self.blocked.store(0, Ordering::Release),
        }
    }
}

pub struct WatchedIo {
    inner: TcpStream,
    stall: Arc<Stall>,
}

impl WatchedIo {
    pub fn new(inner: TcpStream) -> (Self, Arc<Stall>) {
        let stall = Arc::new(Stall {
            started: Instant::now(),
            blocked: AtomicU64::new(0),
        });
        (
            Self {
                inner,
                stall: Arc::clone(&stall),
            },
            stall,
        )
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stall.note(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stall.note(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
