//! LL-HLS blocking reloads under load (`bench/llhls.sh`): an in-process live origin and N
//! simulated players following it part by part, straight or through a node.
//!
//! ```text
//! llhls <origin-listen-addr> <target-addr> <clients> <seconds>
//! ```
//!
//! The origin publishes a part every 250 ms (four per 1 s segment, a window of six
//! segments), answers `/live/index.m3u8?_HLS_msn=M&_HLS_part=P` once that part exists
//! (RFC 8216bis §6.2.5.2: blocking reload; at most 3 s, then 503), and counts the requests
//! it gets for each part. Each player asks the target (the origin itself, or a node in front
//! of it) for the next part as soon as it has the previous one, on its own keep-alive
//! connection, and notes how long after the part's publication the playlist reached it
//! (origin and players share one clock: this process). Prints one JSON object: parts
//! published, origin requests per part (mean and max), publication-to-player latency p50 /
//! p99 (µs), and errors (failed exchanges and 503s).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::handshake;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use strata_bench_tools::percentile;

const PART: Duration = Duration::from_millis(250);
const PARTS_PER_SEGMENT: u64 = 4;
const WINDOW: u64 = 6;

/// The live stream: parts published so far, when, and the requests each got.
struct Live {
    started: Instant,
    /// The latest published part, as (msn, part).
    latest: watch::Receiver<(u64, u64)>,
    published: Mutex<HashMap<(u64, u64), Instant>>,
    requests: Mutex<HashMap<(u64, u64), u64>>,
}

impl Live {
    fn playlist(&self, (msn, part): (u64, u64)) -> String {
        let first = msn.saturating_sub(WINDOW);
        let mut p = format!(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.75\n\
             #EXT-X-PART-INF:PART-TARGET=0.25\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n"
        );
        for s in first..msn {
            p.push_str(&format!("#EXTINF:1.0,\nseg{s}.m4s\n"));
        }
        for q in 0..=part {
            p.push_str(&format!(
                "#EXT-X-PART:DURATION=0.25,URI=\"seg{msn}.{q}.m4s\"{}\n",
                if q == 0 { ",INDEPENDENT=YES" } else { "" }
            ));
        }
        p.push_str(&format!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg{msn}.{}.m4s\"\n",
            part + 1
        ));
        p
    }
}

fn directive(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

async fn origin(
    req: Request<Incoming>,
    live: Arc<Live>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let query = req.uri().query().unwrap_or("");
    let wanted =
        directive(query, "_HLS_msn").map(|m| (m, directive(query, "_HLS_part").unwrap_or(0)));
    let mut latest = live.latest.clone();
    let at = match wanted {
        None => *latest.borrow(),
        Some(want) => {
            *live.requests.lock().unwrap().entry(want).or_default() += 1;
            let ready =
                tokio::time::timeout(Duration::from_secs(3), latest.wait_for(|now| *now >= want))
                    .await;
            match ready {
                Ok(Ok(_)) => want,
                _ => {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"not yet")));
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    return Ok(r);
                }
            }
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(live.playlist(at))));
    let h = r.headers_mut();
    h.insert(
        "content-type",
        "application/vnd.apple.mpegurl".parse().unwrap(),
    );
    h.insert("cache-control", "max-age=6".parse().unwrap());
    Ok(r)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: llhls <origin-listen-addr> <target-addr> <clients> <seconds>");
        std::process::exit(2);
    }
    let origin_addr: SocketAddr = args[1].parse().expect("origin address");
    let target: SocketAddr = args[2].parse().expect("target address");
    let clients: usize = args[3].parse().expect("clients");
    let seconds: u64 = args[4].parse().expect("seconds");

    let (publish, latest) = watch::channel((10, 0));
    let live = Arc::new(Live {
        started: Instant::now(),
        latest,
        published: Mutex::new(HashMap::from([((10, 0), Instant::now())])),
        requests: Mutex::new(HashMap::new()),
    });
    let listener = TcpListener::bind(origin_addr)
        .await
        .expect("bind the origin");
    let served = Arc::clone(&live);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let live = Arc::clone(&served);
            tokio::spawn(async move {
                let svc = service_fn(move |req| origin(req, Arc::clone(&live)));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let publisher = Arc::clone(&live);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PART);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (msn, part) = *publisher.latest.borrow();
            let next = if part + 1 == PARTS_PER_SEGMENT {
                (msn + 1, 0)
            } else {
                (msn, part + 1)
            };
            publisher
                .published
                .lock()
                .unwrap()
                .insert(next, Instant::now());
            let _ = publish.send(next);
        }
    });
    // Let the node see the playlist once, as a player's first load would.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let live = Arc::clone(&live);
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            let Ok(stream) = TcpStream::connect(target).await else {
                return (lat, 1);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut send, conn)) = handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
            else {
                return (lat, 1);
            };
            tokio::spawn(conn);
            let (msn, part) = *live.latest.borrow();
            let mut want = if part + 1 == PARTS_PER_SEGMENT {
                (msn + 1, 0)
            } else {
                (msn, part + 1)
            };
            while Instant::now() < until {
                if send.ready().await.is_err() {
                    return (lat, errors + 1);
                }
                let req = Request::get(format!(
                    "/live/index.m3u8?_HLS_msn={}&_HLS_part={}",
                    want.0, want.1
                ))
                .header("host", "live.test")
                .body(Empty::new())
                .unwrap();
                let got = match send.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status() == StatusCode::OK;
                        let body = resp.into_body().collect().await;
                        ok && body.is_ok()
                    }
                    Err(_) => false,
                };
                if !got {
                    errors += 1;
                    continue;
                }
                if let Some(at) = live.published.lock().unwrap().get(&want) {
                    lat.push(at.elapsed().as_micros() as u64);
                }
                want = if want.1 + 1 == PARTS_PER_SEGMENT {
                    (want.0 + 1, 0)
                } else {
                    (want.0, want.1 + 1)
                };
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (lat, e) = t.await.expect("player");
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let requests = live.requests.lock().unwrap();
    let parts = requests.len().max(1);
    let total: u64 = requests.values().sum();
    let max = requests.values().copied().max().unwrap_or(0);
    println!(
        "{{\"clients\":{clients},\"seconds\":{seconds},\"parts\":{},\"origin_requests_per_part\":{:.2},\"origin_requests_per_part_max\":{max},\"playlists\":{},\"p50_us\":{},\"p99_us\":{},\"errors\":{errors},\"run_s\":{:.1}}}",
        requests.len(),
        total as f64 / parts as f64,
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        live.started.elapsed().as_secs_f64(),
    );
}
