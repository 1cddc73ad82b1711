//! Which HTTP version a connection speaks.
//!
//! Over TLS, ALPN says (`h2` or `http/1.1`). Without it (plain TCP, or a TLS client that
//! named no protocol) the client's first bytes say: the h2 connection preface (RFC 9113
//! §3.4) means h2 with prior knowledge, anything else HTTP/1.x. The bytes read to find out
//! are handed back first by [`Rewind`], so the protocol's own parser sees the stream whole.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The h2 connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Http1,
    H2,
}

impl Proto {
    /// What ALPN chose, when it chose.
    pub(crate) fn from_alpn(alpn: Option<&[u8]>) -> Option<Self> {
        match alpn {
            Some(b"h2") => Some(Proto::H2),
            Some(b"http/1.1") | Some(b"http/1.0") => Some(Proto::Http1),
            _ => None,
        }
    }
}

/// Reads until the bytes can no longer be the h2 preface, or are all of it (or the client
/// closed). A client that sends nothing waits here; the caller's idle timeout ends it.
pub(crate) async fn sniff<S: AsyncRead + Unpin>(mut io: S) -> io::Result<(Proto, Rewind<S>)> {
    let mut pre = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    let proto = loop {
        let n = io.read(&mut pre[len..]).await?;
        if n == 0 || pre[len..len + n] != H2_PREFACE[len..len + n] {
            len += n;
            break Proto::Http1;
        }
        len += n;
        if len == H2_PREFACE.len() {
            break Proto::H2;
        }
    };
    Ok((
        proto,
        Rewind {
            pre,
            pos: 0,
            len: len as u8,
            io,
        },
    ))
}

/// A stream whose first bytes, already read, are read again first.
pub(crate) struct Rewind<S> {
    pre: [u8; H2_PREFACE.len()],
    pos: u8,
    len: u8,
    io: S,
}

// === impl Rewind ===

impl<S> Rewind<S> {
    /// `io` as it is: nothing read from it yet.
    pub(crate) fn new(io: S) -> Self {
        Self {
            pre: [0; H2_PREFACE.len()],
            pos: 0,
            len: 0,
            io,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.len {
            let (pos, len) = (self.pos as usize, self.len as usize);
            let n = (len - pos).min(buf.remaining());
            buf.put_slice(&self.pre[pos..pos + n]);
            self.pos += n as u8;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// RFC 9113 §3.4: the preface, even a byte at a time, is h2; anything else is HTTP/1,
    /// and either way the protocol reads every byte the client sent, in order.
    #[tokio::test]
    async fn rfc9113_3_4_the_preface_means_h2_and_no_byte_is_lost() {
        let h2 = [H2_PREFACE.as_slice(), b"\x00\x00\x00\x04"].concat();
        let cases: [(&[u8], bool, Proto); 5] = [
            (&h2, false, Proto::H2),
            (&h2, true, Proto::H2),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false, Proto::Http1),
            (b"PRI * HTTP/1.1\r\n\r\n", true, Proto::Http1),
            (b"PR", false, Proto::Http1),
        ];
        for (sent, bytewise, want) in cases {
            let (ours, mut theirs) = tokio::io::duplex(1024);
            let send = sent.to_vec();
            let writer = tokio::spawn(async move {
                if bytewise {
                    for b in send {
                        theirs.write_all(&[b]).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                } else {
                    theirs.write_all(&send).await.unwrap();
                }
                // Closed: the short one ends the sniff with what it has.
            });
            let (proto, mut rewound) = sniff(ours).await.unwrap();
            writer.await.unwrap();
            assert_eq!(proto, want, "{:?}", String::from_utf8_lossy(sent));
            let mut read = Vec::new();
            rewound.read_to_end(&mut read).await.unwrap();
            assert_eq!(read, sent);
        }
    }

    #[test]
    fn alpn_decides_when_it_was_used() {
        assert_eq!(Proto::from_alpn(Some(b"h2")), Some(Proto::H2));
        assert_eq!(Proto::from_alpn(Some(b"http/1.1")), Some(Proto::Http1));
        assert_eq!(Proto::from_alpn(None), None);
    }
}
