//! The demo's sample origin: static objects of several sizes, a slowly changing JSON
//! endpoint, a `Vary` example, a page with tagged assets, a catalog of 1,000 objects
//! for the load generator, and video (a live channel, a VOD asset, a player page: see
//! `media`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, LAST_MODIFIED, VARY};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::media::Channel;

/// Requests the live endpoint has answered, shown in its body.
static LIVE_HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Objects under `/catalog/{n}.bin`, `n` in `0..CATALOG_SIZE`.
pub const CATALOG_SIZE: usize = 1000;

pub struct SampleOrigin {
    pub addr: SocketAddr,
    /// Requests answered (the load generator's origin offload).
    pub served: Arc<AtomicU64>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SampleOrigin {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

pub async fn start() -> std::io::Result<SampleOrigin> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = oneshot::channel();
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let channel = Arc::new(Channel::new(SystemTime::now()).map_err(std::io::Error::other)?);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let counter = Arc::clone(&counter);
                    let channel = Arc::clone(&channel);
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            counter.fetch_add(1, Ordering::Relaxed);
                            handle(req, Arc::clone(&channel))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                _ = &mut stopped => break,
            }
        }
    });
    Ok(SampleOrigin {
        addr,
        served,
        stop,
        task,
    })
}

async fn handle(
    req: Request<Incoming>,
    channel: Arc<Channel>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let path = req.uri().path();
    if let Some(resp) = channel.answer(path, req.uri().query()).await {
        return Ok(resp);
    }
    if let Some(n) = path
        .strip_prefix("/catalog/")
        .and_then(|rest| rest.strip_suffix(".bin"))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < CATALOG_SIZE)
    {
        // 1 KiB to 64 KiB, varied but fixed per object.
        let size = 1024 * (1 + (n * 7919) % 64);
        let mut r = static_object(vec![b'c'; size], "application/octet-stream", started);
        r.headers_mut()
            .insert("surrogate-key", HeaderValue::from_static("catalog"));
        return Ok(r);
    }
    let resp = match path {
        "/" => page(),
        "/static/small.txt" => static_object(vec![b'a'; 1024], "text/plain", started),
        "/static/medium.bin" => {
            static_object(vec![b'm'; 64 * 1024], "application/octet-stream", started)
        }
        "/static/large.bin" => {
            static_object(vec![b'L'; 1024 * 1024], "application/octet-stream", started)
        }
        "/api/time" => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let body = format!(
                "{{\"unix\":{},\"note\":\"cached for 2s\"}}\n",
                now.as_secs()
            );
            with(
                StatusCode::OK,
                body.into_bytes(),
                &[
                    (CACHE_CONTROL, "max-age=2"),
                    (CONTENT_TYPE, "application/json"),
                ],
            )
        }
        "/api/live/score" => {
            // A dynamic endpoint that forbids caching; the demo's micro-cache rule shares it
            // for one second anyway.
            let n = LIVE_HITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let body = format!("{{\"origin_requests\":{n}}}\n");
            with(
                StatusCode::OK,
                body.into_bytes(),
                &[
                    (CACHE_CONTROL, "private, no-store"),
                    (CONTENT_TYPE, "application/json"),
                ],
            )
        }
        "/api/nocache" => with(
            StatusCode::OK,
            b"never cached (bypass rule)\n".to_vec(),
            &[(CONTENT_TYPE, "text/plain")],
        ),
        "/hello" => {
            let fr = req
                .headers()
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("fr"));
            let text = if fr { "Bonjour\n" } else { "Hello\n" };
            with(
                StatusCode::OK,
                text.as_bytes().to_vec(),
                &[
                    (CACHE_CONTROL, "max-age=60"),
                    (VARY, "Accept-Language"),
                    (CONTENT_TYPE, "text/plain"),
                ],
            )
        }
        _ => with(
            StatusCode::NOT_FOUND,
            b"not found\n".to_vec(),
            &[(CONTENT_TYPE, "text/plain")],
        ),
    };
    Ok(resp)
}

fn page() -> Response<Full<Bytes>> {
    let html = "<!doctype html><title>Strata demo</title>\n<link rel=stylesheet href=/static/small.txt>\n<img src=/static/medium.bin>\n";
    let mut r = with(
        StatusCode::OK,
        html.as_bytes().to_vec(),
        &[(CACHE_CONTROL, "max-age=30"), (CONTENT_TYPE, "text/html")],
    );
    r.headers_mut()
        .insert("surrogate-key", HeaderValue::from_static("page home"));
    r
}

fn static_object(
    body: Vec<u8>,
    content_type: &'static str,
    modified: SystemTime,
) -> Response<Full<Bytes>> {
    let etag = format!("\"{}-{}\"", content_type.len(), body.len());
    let mut r = with(
        StatusCode::OK,
        body,
        &[
            (CACHE_CONTROL, "public, max-age=3600"),
            (CONTENT_TYPE, content_type),
        ],
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        r.headers_mut().insert(LAST_MODIFIED, v);
    }
    r.headers_mut()
        .insert("surrogate-key", HeaderValue::from_static("static"));
    r
}

fn with(
    status: StatusCode,
    body: Vec<u8>,
    headers: &[(http::HeaderName, &'static str)],
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut()
            .insert(k.clone(), HeaderValue::from_static(v));
    }
    r
}
