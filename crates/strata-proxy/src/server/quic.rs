//! HTTP/3: QUIC (quinn) on the UDP port of each `https` listener, HTTP/3 framing (h3),
//! and the same handler, request phases and cache as HTTP/1.1 and h2.
//!
//! The limits mirror the TCP listeners': a QUIC connection takes a slot of the same
//! connection budget (per node and per client address), the handshake has
//! `limits.client_header_timeout`, idle connections end after `limits.client_idle_timeout`
//! (QUIC's idle timeout), and streams per connection are `limits.max_streams_per_connection`.
//! 0-RTT is off: the TLS config accepts no early data.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::{Body, Frame};

use super::interim::H3Sink;
use http_body_util::BodyExt;
use strata_http_cache::hop_by_hop::strip_hop_by_hop;
use tokio::sync::watch;

use super::{Conn, ServeConfig, DRAIN_TIMEOUT};
use crate::body::{BoxError, RequestBody};

type RecvStream = ::h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;
type SendStream = ::h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Accepts QUIC connections until `shutdown` flips, then closes the endpoint after a
/// bounded drain.
pub async fn serve<F, Fut, B>(
    endpoint: quinn::Endpoint,
    config: ServeConfig,
    handler: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn(Request<RequestBody>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        let remote = incoming.remote_address();
        let peer = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        let Ok(permit) = super::admit(&config, peer) else {
            incoming.refuse();
            continue;
        };
        let config = config.clone();
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        tokio::spawn(async move {
            config.metrics.connection_opened();
            match incoming.accept() {
                Ok(connecting) => {
                    match tokio::time::timeout(config.handshake_timeout, connecting).await {
                        Ok(Ok(conn)) => connection(conn, peer, &config, handler, shutdown).await,
                        Ok(Err(e)) => {
                            config.metrics.tls_handshake_failed("error");
                            tracing::debug!(error = %e, %peer, "QUIC handshake failed");
                        }
                        Err(_) => config.metrics.tls_handshake_failed("timeout"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, %peer, "QUIC connection not accepted"),
            }
            config.metrics.connection_closed();
            drop(permit);
        });
    }
    // New connections are refused from here; open ones get the drain time.
    endpoint.set_server_config(None);
    if tokio::time::timeout(DRAIN_TIMEOUT, config.limits.drained())
        .await
        .is_err()
    {
        tracing::warn!("QUIC connections still open after the drain timeout");
    }
    endpoint.close(0u32.into(), b"shutting down");
}

/// Serves one HTTP/3 connection: each request stream on its own task.
async fn connection<F, Fut, B>(
    conn: quinn::Connection,
    peer: SocketAddr,
    config: &ServeConfig,
    handler: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn(Request<RequestBody>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    let conn_info = Conn {
        peer,
        secure: true,
        // quinn keeps the client's certificates only once rustls verified them.
        authenticated: conn.peer_identity().is_some(),
        interim: None,
    };
    let built = ::h3::server::builder()
        .max_field_section_size(config.max_header_bytes)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(error = %e, %peer, "HTTP/3 connection setup failed");
            return;
        }
    };
    loop {
        let resolver = tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => resolver,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "HTTP/3 connection ended with error");
                    return;
                }
            },
            _ = shutdown.changed() => {
                // GOAWAY; requests in progress finish on their own tasks.
                let _ = h3.shutdown(0).await;
                return;
            }
        };
        let handler = handler.clone();
        let conn_info = conn_info.clone();
        super::executor::poll_then_spawn(async move {
            let (req, stream) = match resolver.resolve_request().await {
                Ok(resolved) => resolved,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "HTTP/3 request refused");
                    return;
                }
            };
            let (mut send, recv) = stream.split();
            let req = req.map(|()| {
                RecvBody {
                    stream: Mutex::new(recv),
                }
                .boxed()
            });
            let (heads, mut interim) = tokio::sync::mpsc::channel(INTERIM_QUEUE);
            let sink: Arc<dyn super::interim::Sink> = Arc::new(H3Sink::new(heads));
            let conn = Conn {
                interim: Some(sink),
                ..conn_info
            };
            // Interim responses go out as they come, until the final one is ready.
            let mut answer = std::pin::pin!(handler(req, conn));
            let Ok(resp) = loop {
                tokio::select! {
                    biased;
                    resp = &mut answer => break resp,
                    Some(head) = interim.recv() => {
                        if send.send_response(head).await.is_err() {
                            return;
                        }
                    }
                }
            };
            respond(send, resp).await;
        });
    }
}

/// Interim responses waiting for a request's task to write them (more are dropped).
const INTERIM_QUEUE: usize = 8;

/// Writes a response on its stream: the head, the body as it comes, trailers, the end.
async fn respond<B>(mut send: SendStream, resp: Response<B>)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    let (mut parts, mut body) = resp.into_parts();
    // Connection-specific fields have no meaning in HTTP/3 (RFC 9114 §4.2).
    strip_hop_by_hop(&mut parts.headers);
    super::date::insert_if_missing(&mut parts.headers);
    if send
        .send_response(Response::from_parts(parts, ()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(frame) = body.frame().await {
        let sent = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => send.send_data(data).await,
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => send.send_trailers(trailers).await,
                    Err(_) => Ok(()),
                },
            },
            Err(_) => {
                // The body failed midway (the origin cut it): the client must not take a
                // truncated body for a whole one.
                send.stop_stream(::h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = send.finish().await;
}

/// A request body read from its QUIC stream. (In a mutex only to be `Sync`, as boxed
/// request bodies are; one task polls it.)
struct RecvBody {
    stream: Mutex<RecvStream>,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        match stream.poll_recv_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Ok(Some(mut buf))) => {
                let data = buf.copy_to_bytes(buf.remaining());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }
}

/// The QUIC endpoint config: TLS 1.3 with ALPN `h3` and the node's certificates, and the
/// transport limits.
pub fn endpoint_config(
    tls: rustls::ServerConfig,
    streams: u32,
    idle: Duration,
) -> Result<quinn::ServerConfig, String> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| format!("QUIC TLS config: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(streams))
        // HTTP/3 needs three of the client's: control and the two QPACK streams.
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(8))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle).map_err(|e| format!("idle timeout: {e}"))?,
        ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
