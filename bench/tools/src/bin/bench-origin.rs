//! A fixed origin for benchmarks.
//!
//! - `GET /obj/<size>/<id>`: `size` bytes (`1k`, `4k`, `64k`, `1m`), cacheable for an hour;
//! - `GET /text/<size>/<id>`: `size` bytes of HTML-like text (`text/html`), cacheable: what
//!   Strata compresses (bench/compression.sh);
//! - `GET /herd/<id>`: 4 KiB after 200 ms;
//! - `GET /slow/<id>`: 50 MiB streamed at about 20 MiB/s (2.5 s), first byte at once;
//! - `GET /__count?<path>`: requests seen for that path;
//! - `GET /__first_byte?<path>`: unix time (ns) the first body byte for that path was sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Default)]
struct Stats {
    counts: HashMap<String, u64>,
    first_byte: HashMap<String, u128>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn size_of(s: &str) -> Option<usize> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1024),
        b'm' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mult)
}

fn cacheable(body: Body, etag: &str) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("cache-control", "public, max-age=3600".parse().unwrap());
    if let Ok(v) = format!("\"{etag}\"").parse() {
        r.headers_mut().insert("etag", v);
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    stats: Arc<Mutex<Stats>>,
    blobs: Arc<HashMap<usize, Bytes>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/__count" {
        let n = stats
            .lock()
            .unwrap()
            .counts
            .get(&query)
            .copied()
            .unwrap_or(0);
        return Ok(Response::new(full(n.to_string())));
    }
    if path == "/__first_byte" {
        let t = stats
            .lock()
            .unwrap()
            .first_byte
            .get(&query)
            .copied()
            .unwrap_or(0);
        return Ok(Response::new(full(t.to_string())));
    }
    *stats
        .lock()
        .unwrap()
        .counts
        .entry(path.clone())
        .or_default() += 1;
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "obj", size, id] => {
            let Some(n) = size_of(size) else {
                return Ok(status(StatusCode::BAD_REQUEST));
            };
            let body = blobs
                .get(&n)
                .cloned()
                .unwrap_or_else(|| Bytes::from(vec![b'x'; n]));
            Ok(cacheable(full(body), &format!("{size}-{id}")))
        }
        ["", "text", size, id] => {
            let Some(n) = size_of(size) else {
                return Ok(status(StatusCode::BAD_REQUEST));
            };
            let mut r = cacheable(full(text(n)), &format!("text-{size}-{id}"));
            r.headers_mut()
                .insert("content-type", "text/html; charset=utf-8".parse().unwrap());
            Ok(r)
        }
        ["", "herd", id] => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(cacheable(full(vec![b'h'; 4096]), &format!("herd-{id}")))
        }
        ["", "slow", id] => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            let chunk = Bytes::from(vec![b's'; 256 * 1024]);
            let (stats, path) = (Arc::clone(&stats), path.clone());
            tokio::spawn(async move {
                // 200 chunks of 256 KiB = 50 MiB, one every 12.5 ms = 20 MiB/s.
                let mut tick = tokio::time::interval(Duration::from_micros(12_500));
                for i in 0..200 {
                    tick.tick().await;
                    if i == 0 {
                        stats
                            .lock()
                            .unwrap()
                            .first_byte
                            .insert(path.clone(), now_ns());
                    }
                    if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                        return;
                    }
                }
            });
            let mut r = cacheable(BodyExt::boxed(ChannelBody(rx)), &format!("slow-{id}"));
            r.headers_mut().insert(
                "content-length",
                (200 * 256 * 1024).to_string().parse().unwrap(),
            );
            Ok(r)
        }
        _ => Ok(status(StatusCode::NOT_FOUND)),
    }
}

/// `n` bytes of markup with numbers that change line to line: compresses about as well as
/// real pages (4-6x with gzip), not as well as one repeated byte.
fn text(n: usize) -> Bytes {
    let mut out = String::with_capacity(n + 128);
    let mut i: u64 = 0;
    while out.len() < n {
        let x = i.wrapping_mul(2_654_435_761) % 1_000_003;
        out.push_str(&format!(
            "<li class=\"item-{}\"><a href=\"/catalog/{x}/item-{i}\">Item {i}: {} units at {}.{:02}</a></li>\n",
            i % 7,
            x % 977,
            x % 300,
            x % 100
        ));
        i += 1;
    }
    out.truncate(n);
    Bytes::from(out)
}

/// A body fed by a channel, so the origin can pace it.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx)
    }
}

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = s;
    r
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:19000".into())
        .parse()
        .expect("listen address");
    let listener = TcpListener::bind(addr).await.expect("bind");
    let stats = Arc::new(Mutex::new(Stats::default()));
    let blobs: Arc<HashMap<usize, Bytes>> = Arc::new(
        [1024, 4096, 64 * 1024, 1024 * 1024]
            .into_iter()
            .map(|n| (n, Bytes::from(vec![b'x'; n])))
            .collect(),
    );
    eprintln!("bench-origin listening on {addr}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (stats, blobs) = (Arc::clone(&stats), Arc::clone(&blobs));
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, Arc::clone(&stats), Arc::clone(&blobs)));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
