//! Load generator for `bench/compare.sh`. Prints one JSON object per run.
//!
//! ```text
//! loadgen keepalive <addr> <path-template> <keys> <connections> <seconds>
//!     Keep-alive connections, each sending requests back to back for <seconds>. `{i}` in the
//!     template is replaced with a random key in 0..<keys>. Reports requests/s and latency.
//! loadgen warm <addr> <path-template> <keys>
//!     Requests every key once (8 connections), so later runs are all hits.
//! loadgen rate <addr> <path-template> <keys> <requests-per-second> <seconds> <max-connections>
//!     Open loop: a request every 1/<rate> s whatever the answers do (a keep-alive connection
//!     from a pool, a new one when none is free, up to <max-connections>; past that the
//!     request counts as dropped). `{i}` takes the request's number modulo <keys> (distinct
//!     keys: misses). Latency runs from when the request was due. Reports counts by status
//!     (200, 503, other, failed, dropped) and p50/p99 of the 200s and of everything answered.
//! loadgen herd <addr> <path> <clients> <read-bytes>
//!     Opens <clients> connections first, then sends one request on each at the same moment.
//!     Reads up to <read-bytes> of each body. Reports latency to the full read and the unix
//!     time (ns) of every client's first body byte.
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use strata_bench_tools::{percentile, report};

type Sender = SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (sender, conn) = handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// Sends one GET and reads up to `limit` body bytes. Returns (status, first byte time).
async fn get(
    sender: &mut Sender,
    path: &str,
    limit: usize,
) -> Result<(u16, Option<SystemTime>), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(path)
        .header("host", "bench.test")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut first = None;
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(d) = frame.data_ref() {
            if first.is_none() && !d.is_empty() {
                first = Some(SystemTime::now());
            }
            read += d.len();
            if read >= limit {
                break;
            }
        }
    }
    Ok((status, first))
}

fn path_for(template: &str, key: u64) -> String {
    template.replace("{i}", &key.to_string())
}

async fn keepalive(
    addr: SocketAddr,
    template: String,
    keys: u64,
    connections: usize,
    seconds: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let template = Arc::new(template);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let template = Arc::clone(&template);
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let mut rng = SmallRng::seed_from_u64(c as u64);
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let key = if keys > 1 {
                    rng.random_range(0..keys)
                } else {
                    0
                };
                let started = Instant::now();
                match get(&mut sender, &path_for(&template, key), usize::MAX).await {
                    Ok((200, _)) => lat.push(started.elapsed().as_micros() as u64),
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        sender = connect(addr).await;
                    }
                }
            }
            (lat, errors)
        }));
    }
    report(tasks, Instant::now(), seconds).await;
}

async fn warm(addr: SocketAddr, template: String, keys: u64) {
    let template = Arc::new(template);
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let template = Arc::clone(&template);
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let mut k = w;
            while k < keys {
                if get(&mut sender, &path_for(&template, k), usize::MAX)
                    .await
                    .is_err()
                {
                    sender = connect(addr).await;
                }
                k += 8;
            }
        }));
    }
    for t in tasks {
        t.await.expect("warm worker");
    }
    println!("{{\"warmed\":{keys}}}");
}

async fn herd(addr: SocketAddr, path: String, clients: usize, read_bytes: usize) {
    let barrier = Arc::new(Barrier::new(clients));
    let path = Arc::new(path);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (barrier, path) = (Arc::clone(&barrier), Arc::clone(&path));
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            barrier.wait().await;
            let started = Instant::now();
            let result = get(&mut sender, &path, read_bytes).await;
            (started.elapsed(), result)
        }));
    }
    let mut lat = Vec::new();
    let mut firsts = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (elapsed, result) = t.await.expect("herd client");
        match result {
            Ok((200, first)) => {
                lat.push(elapsed.as_micros() as u64);
                if let Some(f) = first {
                    firsts.push(f.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
                }
            }
            _ => errors += 1,
        }
    }
    lat.sort_unstable();
    firsts.sort_unstable();
    println!(
        "{{\"clients\":{},\"ok\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"first_byte_min_ns\":{},\"first_byte_max_ns\":{}}}",
        clients,
        lat.len(),
        errors,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        firsts.first().copied().unwrap_or(0),
        firsts.last().copied().unwrap_or(0),
    );
}

/// One open-loop run's outcomes.
#[derive(Default)]
struct Outcomes {
    ok: Vec<u64>,
    answered: Vec<u64>,
    shed: u64,
    other: u64,
    failed: u64,
    dropped: u64,
}

async fn rate(
    addr: SocketAddr,
    template: String,
    keys: u64,
    per_second: f64,
    seconds: u64,
    max_connections: usize,
) {
    let period = Duration::from_secs_f64(1.0 / per_second);
    let pool: Arc<std::sync::Mutex<Vec<Sender>>> = Arc::default();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let outcomes: Arc<std::sync::Mutex<Outcomes>> = Arc::default();
    let started = Instant::now();
    let total = (per_second * seconds as f64) as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + period.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (pool, open, outcomes) = (Arc::clone(&pool), Arc::clone(&open), Arc::clone(&outcomes));
        let path = path_for(&template, n % keys.max(1));
        tasks.spawn(async move {
            let pooled = pool.lock().unwrap().pop();
            let mut sender = match pooled {
                Some(s) => s,
                None if open.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    < max_connections =>
                {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            match handshake(TokioIo::new(stream)).await {
                                Ok((sender, conn)) => {
                                    tokio::spawn(async move {
                                        let _ = conn.await;
                                    });
                                    sender
                                }
                                Err(_) => {
                                    open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                                    outcomes.lock().unwrap().failed += 1;
                                    return;
                                }
                            }
                        }
                        Err(_) => {
                            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                            outcomes.lock().unwrap().failed += 1;
                            return;
                        }
                    }
                }
                None => {
                    open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    outcomes.lock().unwrap().dropped += 1;
                    return;
                }
            };
            let result = get(&mut sender, &path, usize::MAX).await;
            let took = due.elapsed().as_micros() as u64;
            let mut o = outcomes.lock().unwrap();
            match result {
                Ok((status, _)) => {
                    o.answered.push(took);
                    match status {
                        200 => o.ok.push(took),
                        503 => o.shed += 1,
                        _ => o.other += 1,
                    }
                    drop(o);
                    pool.lock().unwrap().push(sender);
                }
                Err(_) => {
                    o.failed += 1;
                    open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    // Stragglers get up to a minute after the last request was due.
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let unanswered = tasks.len() as u64;
    let mut o = outcomes.lock().unwrap();
    o.ok.sort_unstable();
    o.answered.sort_unstable();
    println!(
        "{{\"sent\":{total},\"ok\":{},\"shed\":{},\"other\":{},\"failed\":{},\"dropped\":{},\"unanswered\":{unanswered},\"ok_p50_us\":{},\"ok_p99_us\":{},\"all_p99_us\":{},\"connections\":{}}}",
        o.ok.len(),
        o.shed,
        o.other,
        o.failed,
        o.dropped,
        percentile(&o.ok, 0.50),
        percentile(&o.ok, 0.99),
        percentile(&o.answered, 0.99),
        open.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| panic!("missing argument {i}; see the file's doc comment"))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr: SocketAddr = arg(2).parse().expect("address");
    match arg(1).as_str() {
        "keepalive" => rt.block_on(keepalive(
            addr,
            arg(3),
            arg(4).parse().unwrap(),
            arg(5).parse().unwrap(),
            arg(6).parse().unwrap(),
        )),
        "warm" => rt.block_on(warm(addr, arg(3), arg(4).parse().unwrap())),
        "herd" => rt.block_on(herd(
            addr,
            arg(3),
            arg(4).parse().unwrap(),
            arg(5).parse().unwrap(),
        )),
        "rate" => rt.block_on(rate(
            addr,
            arg(3),
            arg(4).parse().unwrap(),
            arg(5).parse().unwrap(),
            arg(6).parse().unwrap(),
            arg(7).parse().unwrap(),
        )),
        other => panic!("unknown mode {other}"),
    }
}
