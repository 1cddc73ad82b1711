//! Purge fan-out through NATS JetStream: 20 edge nodes (in this process, each with its own
//! NATS connection and durable consumer) and the control plane, on loopback.
//!
//! `cargo bench -p strata-control --bench purge_fanout` (needs `nats-server` on PATH or in
//! /usr/sbin; `scripts/test.sh` installs it). Prints:
//! 1. latency: purges sent one at a time with `wait`: accept -> last node's ack, p50/p99;
//! 2. throughput: purges sent by 64 concurrent clients without `wait`, then the time until
//!    every node acked every one: sustained purges/s, and how many (purge, node) acks are
//!    missing (must be zero).
//!
//! `-- --disk` gives every node a disk tier (in the system's temporary directory), so each
//! purge is also journaled and each batch's sequence recorded.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use strata_bus::Bus;
use strata_control::config::NodeEntry;
use strata_control::{Control, ControlConfig};
use strata_proxy::config::NodeConfig;
use strata_proxy::Node;
use tokio::net::TcpStream;

const NODES: usize = 20;
const LATENCY_PURGES: usize = 500;
const THROUGHPUT_PURGES: usize = 10_000;
const TOKEN: &str = "bench-token-0123456789";
const CLIENTS: usize = 64;

fn nats() -> (std::process::Child, String) {
    let bin = ["nats-server", "/usr/sbin/nats-server"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect("nats-server");
    let dir = std::env::temp_dir().join(format!("strata-purge-bench-{}", std::process::id()));
    let mut child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
        .arg(&dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("nats-server output").expect("line");
        if let Some(a) = line.split("Listening for client connections on ").nth(1) {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, format!("nats://{addr}"))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}

/// POST on a kept-alive connection.
async fn post(tx: &mut Sender, body: String) -> serde_json::Value {
    tx.ready().await.expect("ready");
    let req = http::Request::post("/v1/purge")
        .header("host", "control")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = tx.send_request(req).await.expect("response");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("json")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut server, url) = nats();
    let disk_root = std::env::args().any(|a| a == "--disk").then(|| {
        std::env::temp_dir().join(format!("strata-purge-bench-disk-{}", std::process::id()))
    });
    rt.block_on(async {
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        for i in 0..NODES {
            let mut c = NodeConfig::single_origin("http://127.0.0.1:9");
            c.node.name = format!("edge-{i:02}");
            c.listen.http = vec!["127.0.0.1:0".parse().expect("addr")];
            c.log.access = "off".into();
            c.bus.nats = Some(url.clone());
            if let Some(root) = &disk_root {
                c.cache.disk = Some(strata_proxy::config::DiskSection { path: root.join(&c.node.name), size: strata_proxy::config::ByteSize(256 << 20) });
            }
            names.push(c.node.name.clone());
            nodes.push(Node::start(&c).await.expect("node"));
        }
        let config = ControlConfig { listen: "127.0.0.1:0".parse().expect("addr"), token: Some(TOKEN.into()), tokens: Vec::new(), node_ttl: strata_wire::config::Seconds(Duration::from_secs(30)), stream_replicas: 1, nats: url.clone(), nats_auth: Default::default(), nodes: names.into_iter().map(NodeEntry::Name).collect(), health: Default::default() };
        let control = Control::start(&config, Bus::nats(&url, &Default::default()).await.expect("bus")).await.expect("control");
        let addr = control.addr;

        // 1. Latency, one purge at a time.
        let mut last_ack = Vec::with_capacity(LATENCY_PURGES);
        let started = Instant::now();
        let mut tx = connect(addr).await;
        for i in 0..LATENCY_PURGES {
            let r = post(&mut tx, format!(r#"{{"tags": ["lat-{i}"], "wait": 10}}"#)).await;
            assert_eq!(r["complete"], true, "{r}");
            let worst = r["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["ms"].as_f64()).fold(0.0, f64::max);
            last_ack.push(worst);
        }
        let elapsed = started.elapsed();
        last_ack.sort_by(f64::total_cmp);
        println!("nodes: {NODES}, purge latency (accept -> last ack), {LATENCY_PURGES} purges one at a time:");
        println!("  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({:.1} s)", percentile(&last_ack, 0.5), percentile(&last_ack, 0.99), last_ack[last_ack.len() - 1], elapsed.as_secs_f64());

        // 2. Throughput: 16 concurrent clients, no wait, then until every node acked every purge.
        let ids = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(THROUGHPUT_PURGES)));
        let started = Instant::now();
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let ids = Arc::clone(&ids);
            clients.push(tokio::spawn(async move {
                let mut tx = connect(addr).await;
                for i in (c..THROUGHPUT_PURGES).step_by(CLIENTS) {
                    let r = post(&mut tx, format!(r#"{{"tags": ["tp-{i}"]}}"#)).await;
                    ids.lock().await.push(r["id"].as_str().expect("id").to_string());
                }
            }));
        }
        for c in clients {
            c.await.expect("client");
        }
        let accepted = started.elapsed();
        let ids = ids.lock().await.clone();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut missing = usize::MAX;
        while Instant::now() < deadline {
            missing = 0;
            for id in &ids {
                let s = control.status(id).await.expect("known purge");
                missing += s.nodes.iter().filter(|n| n.status != "applied").count();
            }
            if missing == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all_acked = started.elapsed();
        println!("throughput: {THROUGHPUT_PURGES} purges from {CLIENTS} clients: accepted in {:.2} s ({:.0}/s); every node acked in {:.2} s: {:.0} purges/s sustained; missing acks: {missing}",
            accepted.as_secs_f64(), THROUGHPUT_PURGES as f64 / accepted.as_secs_f64(), all_acked.as_secs_f64(), THROUGHPUT_PURGES as f64 / all_acked.as_secs_f64());
        control.shutdown().await;
        for n in nodes {
            n.shutdown().await;
        }
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Some(root) = disk_root {
        let _ = std::fs::remove_dir_all(root);
    }
}
