//! The disk tier end to end, with the real binary killed by SIGKILL: what it stored comes
//! back after a restart, except what purges issued while it was down cover (replayed from
//! its durable NATS consumer before its disk is read), and a disk whose purge history
//! cannot be proved against the stream is wiped rather than trusted. And a node without a
//! bus reads its disk at once after a restart, with its admin purges kept.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::control::{post_purge, purge_control, purge_status};
use crate::support::nats::NatsServer;
use crate::support::{scratch_dir, Reply, TestOrigin};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const NODE: &str = "edge-disk";

/// A `strata edge` process, killed (SIGKILL, by PID) when dropped.
struct NodeProcess {
    child: Child,
    http: String,
    admin: String,
}

impl NodeProcess {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["edge", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .spawn()
            .expect("start strata edge");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            // Drains to the end so the child never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut http, mut admin) = (None, None);
        while http.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("node logs its listeners within 30s");
            let addr = || {
                line.split("addr=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_string)
            };
            if line.contains("edge listening") {
                http = addr();
            } else if line.contains("admin listening") {
                admin = addr();
            }
        }
        Self {
            child,
            http: http.unwrap_or_default(),
            admin: admin.unwrap_or_default(),
        }
    }

    /// SIGKILL: no orderly shutdown, no flush.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn get(&self, path: &str) -> (String, String) {
        let (head, body) = exchange(&self.http, path).await;
        let status = head
            .lines()
            .find_map(|l| l.strip_prefix("cache-status: "))
            .unwrap_or("")
            .to_string();
        (status, body)
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = exchange(&self.admin, "/metrics").await;
        crate::support::metric_value(&text, &format!("{name} "))
    }

    /// Polls a metric (bounded: 10 s) until `want` holds.
    async fn wait_metric(&self, name: &str, want: impl Fn(f64) -> bool) {
        for _ in 0..200 {
            if self.metric(name).await.is_some_and(&want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name} never reached the expected value");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange with `Connection: close`; the head lower-cased.
async fn exchange(addr: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: disk.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer within 10s")
        .expect("read");
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

/// One node's configuration and cache directory.
struct NodeDir(crate::support::Scratch);

impl NodeDir {
    fn new(name: &str) -> Self {
        Self(scratch_dir(&format!("disk-{name}")))
    }

    fn config(&self, nats: &str, origin: &str) -> PathBuf {
        let path = self.0.join("edge.toml");
        let cache = self.0.join("cache");
        std::fs::write(
            &path,
            format!(
                r#"
[node]
name = "{NODE}"
[listen]
http = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[log]
access = "off"
[cache]
size = "32MiB"
max_object_size = "4MiB"
[cache.disk]
path = "{}"
size = "64MiB"
[bus]
nats = "{nats}"
[[service]]
name = "site"
hosts = ["*"]
origins = ["{origin}"]
"#,
                cache.display()
            ),
        )
        .unwrap();
        path
    }
}

/// Bodies name the path and the origin's request number, so a refetch shows.
async fn origin() -> TestOrigin {
    TestOrigin::start(|seen, n| {
        let tag = if seen.path().starts_with("/red") {
            "red"
        } else {
            "blue"
        };
        Reply::ok(format!("{} #{n}", seen.path()))
            .cc("max-age=600")
            .header("surrogate-key", tag)
    })
    .await
}

/// Fills /red and /blue and waits until both are on disk.
async fn warm(node: &NodeProcess) -> (String, String) {
    let (status, red) = node.get("/red").await;
    assert!(status.contains("fwd=uri-miss"), "{status}");
    let (_, blue) = node.get("/blue").await;
    node.wait_metric("strata_disk_cache_objects", |n| n == 2.0)
        .await;
    (red, blue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_then_purged_does_not_serve_what_the_purge_covers_after_restart() {
    let nats = NatsServer::start();
    let origin = origin().await;
    let control = purge_control(&nats, &[NODE]).await;
    let scratch = NodeDir::new("replay");
    let config = scratch.config(&nats.url, &origin.url());

    let node = NodeProcess::start(&config);
    node.wait_metric("strata_disk_cache_open", |v| v == 1.0)
        .await;
    let (red, blue) = warm(&node).await;
    assert_eq!(origin.count(), 2);
    node.kill();

    // Issued while the node is down: the control plane reports it pending.
    let (status, accepted) = post_purge(&control, r#"{"tags": ["red"], "wait": 1}"#).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();

    let node = NodeProcess::start(&config);
    // Asked at once, before or during the replay: never the purged copy.
    let (status, body) = node.get("/red").await;
    assert_ne!(
        body, red,
        "served an object a missed purge covers ({status})"
    );
    assert!(status.contains("fwd="), "{status}");
    node.wait_metric("strata_disk_cache_open", |v| v == 1.0)
        .await;
    // What the purge did not cover comes back from disk, untouched by the origin.
    let before = origin.count();
    let (status, body) = node.get("/blue").await;
    assert_eq!(body, blue);
    assert!(status.contains("hit"), "{status}");
    assert_eq!(origin.count(), before);
    // The control plane saw the node apply the purge it missed.
    for _ in 0..100 {
        let (_, report) = purge_status(&control, &id).await;
        if report["complete"] == true {
            assert_eq!(report["nodes"][0]["status"], "applied", "{report}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the restarted node never acknowledged the purge it missed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_whose_purge_history_the_stream_cannot_vouch_for_is_wiped() {
    let first_bus = NatsServer::start();
    let origin = origin().await;
    let scratch = NodeDir::new("wipe");
    let node = NodeProcess::start(&scratch.config(&first_bus.url, &origin.url()));
    node.wait_metric("strata_disk_cache_open", |v| v == 1.0)
        .await;
    let (_, blue) = warm(&node).await;
    // A purge the node applies and records (sequence 1 of this stream).
    let control = purge_control(&first_bus, &[NODE]).await;
    let (status, report) = post_purge(
        &control,
        r#"{"tags": ["nothing-carries-this"], "wait": 10}"#,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    node.kill();
    drop(control);
    drop(first_bus);

    // Another stream (the bus was rebuilt): it cannot say which purges the disk missed.
    let second_bus = NatsServer::start();
    let node = NodeProcess::start(&scratch.config(&second_bus.url, &origin.url()));
    node.wait_metric("strata_disk_cache_open", |v| v == 1.0)
        .await;
    assert_eq!(node.metric("strata_disk_cache_objects").await, Some(0.0));
    let before = origin.count();
    let (status, body) = node.get("/blue").await;
    assert_ne!(body, blue, "{status}");
    assert_eq!(origin.count(), before + 1);
}

/// A node without a bus, purged through its own admin listener: nothing can be missed
/// while it is down, so its disk is read at once after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_restarts_with_its_disk_and_keeps_admin_purges() {
    use crate::support::EdgeBuilder;
    let origin = origin().await;
    let scratch = NodeDir::new("single");
    let cache = scratch.0.join("cache");
    let build = || {
        let cache = cache.clone();
        EdgeBuilder::new(&origin.url()).config(move |c| {
            c.cache.disk = Some(strata_proxy::config::DiskSection {
                path: cache,
                size: strata_proxy::config::ByteSize(64 << 20),
            });
        })
    };
    let edge = build().start().await;
    for path in ["/red", "/blue"] {
        assert!(!edge.get(path).send().await.is_hit());
    }
    edge.eventually("both on disk", || {
        edge.proxy()
            .storage()
            .disk_report()
            .is_some_and(|d| d.stats.keys == 2)
    })
    .await;
    assert_eq!(edge.purge(r#"{"tags": ["red"]}"#).await, 1);
    edge.stop().await;

    let edge = build().start().await;
    assert!(edge.proxy().storage().disk_report().unwrap().open);
    let before = origin.count();
    let blue = edge.get("/blue").send().await;
    assert!(blue.is_hit(), "{}", blue.cache_status());
    assert_eq!(blue.text(), "/blue #2");
    assert_eq!(origin.count(), before);
    let red = edge.get("/red").send().await;
    assert!(!red.is_hit(), "{}", red.cache_status());
    assert_eq!(origin.count(), before + 1);
}
