//! The multi-machine deployment of docs/deploy.md, from `deploy/compose`'s own files: every
//! host of the compose file is a network namespace holding that host's address
//! (172.28.0.x/24) on a veth to one bridge (in a namespace of its own: the switch), so
//! nothing between them goes over loopback. Three clustered NATS servers, the control
//! plane, the DNS router, the stand-in origin (Python's `http.server`, as in the compose
//! file), the shield and two PoPs of two edges, plus a client host (curl, dig). Only the
//! paths of the configuration change (NATS's store, the shield's disk cache).
//!
//! One test walks through what an operator relies on, in order: a request through edge →
//! shield → origin; a signed URL accepted at both PoPs and fetched from the origin once,
//! without its signature, a forged or missing one refused; a purge confirmed by all five
//! nodes; each NATS server in turn killed and a purge made while it is down still
//! confirmed by all five; DNS answers moving from pop-a to pop-b when pop-a's edges stop.
//!
//! Needs root (namespaces), nats-server, python3, curl and dig: `scripts/test.sh` installs
//! them. Everything started here is stopped by PID and the namespaces deleted when the
//! test ends, passing or not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::binary::stop_within;

/// The hosts of `deploy/compose/docker-compose.yml` (and the client), with the last octet
/// of their address.
const HOSTS: &[(&str, u8)] = &[
    ("client", 2),
    ("nats-1", 11),
    ("nats-2", 12),
    ("nats-3", 13),
    ("control", 20),
    ("dns", 21),
    ("origin", 30),
    ("shield-1", 40),
    ("edge-a1", 51),
    ("edge-a2", 52),
    ("edge-b1", 61),
    ("edge-b2", 62),
];
const NODES: [&str; 5] = ["shield-1", "edge-a1", "edge-a2", "edge-b1", "edge-b2"];
/// The tokens whose hashes `deploy/compose/control.toml` lists.
const PURGE_TOKEN: &str = "change-me-purge-token";
const READ_TOKEN: &str = "change-me-read-token";
const SITE: &str = "www.example.test";

fn compose() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose")
}

fn ip(host: &str) -> String {
    let octet = HOSTS.iter().find(|h| h.0 == host).expect("a host").1;
    format!("172.28.0.{octet}")
}

fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect(cmd[0]);
    assert!(
        out.status.success(),
        "{cmd:?} failed (the deployment test needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One process of the lab (its output in `<host>.log`).
struct Proc {
    host: String,
    child: Child,
}

/// The namespaces, bridge and processes of one test; torn down on drop.
struct Lab {
    id: u32,
    dir: crate::support::Scratch,
    procs: Vec<Proc>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            stop_within(&mut p.child, "TERM", Duration::from_secs(5));
        }
        for ns in HOSTS.iter().map(|h| h.0).chain(["switch"]) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(ns)])
                .status();
        }
    }
}

impl Lab {
    /// The switch (a bridge) and one namespace per host, each with its address on a veth
    /// to the bridge.
    fn new() -> Self {
        let lab = Lab {
            id: std::process::id() % 10_000,
            dir: crate::support::scratch_dir("deploy"),
            procs: Vec::new(),
        };
        let sw = lab.ns("switch");
        for ns in HOSTS.iter().map(|h| h.0).chain(["switch"]) {
            // Left by an earlier run that was killed before its cleanup.
            let _ = Command::new("ip")
                .args(["netns", "del", &lab.ns(ns)])
                .stderr(Stdio::null())
                .status();
        }
        run(&["ip", "netns", "add", &sw]);
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for (host, octet) in HOSTS {
            let ns = lab.ns(host);
            let (inside, port) = (
                format!("h{}-{octet}", lab.id),
                format!("s{}-{octet}", lab.id),
            );
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip", "link", "add", &inside, "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0"]);
            run(&["ip", "-n", &sw, "link", "set", &port, "up"]);
            let addr = format!("{}/24", ip(host));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inside]);
            run(&["ip", "-n", &ns, "link", "set", &inside, "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("sd{}-{host}", self.id)
    }

    /// Starts `program args` on `host`; its stdout and stderr go to `<host>.log`.
    fn start(&mut self, host: &str, program: &str, args: &[&str]) {
        let log = self.dir.join(format!("{host}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // `ip netns exec` execs the program: the PID is the program's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("ip netns exec");
        self.procs.push(Proc {
            host: host.to_string(),
            child,
        });
    }

    fn strata(&mut self, host: &str, role: &str, config: &Path) {
        let bin = crate::support::binary::strata_bin();
        let config = config.display().to_string();
        self.start(host, &bin, &[role, "--config", &config]);
    }

    fn nats(&mut self, name: &str) {
        let conf = self.dir.join(format!("{name}.conf"));
        if !conf.exists() {
            let store = self.dir.join(name);
            let text = std::fs::read_to_string(compose().join("nats.conf")).unwrap();
            assert!(text.contains("store_dir: /data"));
            let text = text.replace("store_dir: /data", &format!("store_dir: {store:?}"));
            std::fs::write(&conf, text).unwrap();
        }
        let conf = conf.display().to_string();
        // The monitoring port, for the test to see the streams' replicas.
        self.start(
            name,
            &crate::support::nats::binary(),
            &["-c", &conf, "-n", name, "-m", "8222"],
        );
    }

    /// Stops `host`'s process (SIGTERM, or SIGKILL with `kill`) and forgets it.
    fn stop(&mut self, host: &str, kill: bool) {
        let i = self
            .procs
            .iter()
            .position(|p| p.host == host)
            .expect("a running host");
        let mut p = self.procs.remove(i);
        if kill {
            let _ = p.child.kill();
            let _ = p.child.wait();
        } else {
            stop_within(&mut p.child, "TERM", Duration::from_secs(5));
        }
    }

    fn log(&self, host: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{host}.log"))).unwrap_or_default()
    }

    /// The last lines of every log: what a failure message needs.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (host, _) in HOSTS {
            let text = self.log(host);
            // Not the access log: what the processes said.
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("{\"time\""))
                .collect();
            out.push_str(&format!("--- {host}\n"));
            for line in &lines[lines.len().saturating_sub(8)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// A command on the client host; its stdout.
    fn client(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("client"), program])
            .args(args)
            .output()
            .expect("ip netns exec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `curl` from the client: (status, headers, body).
    fn curl(&self, args: &[&str]) -> (u16, String, String) {
        let out = self.client(
            "curl",
            &[
                &["-sS", "-m", "75", "-D", "-", "-w", "\n%{http_code}"],
                args,
            ]
            .concat(),
        );
        let (rest, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        (
            code.trim().parse().unwrap_or(0),
            headers.to_string(),
            body.to_string(),
        )
    }

    /// GET `path` of the site through `edge`.
    fn get(&self, edge: &str, path: &str) -> (u16, String, String) {
        let url = format!("http://{}:8080{path}", ip(edge));
        self.curl(&["-H", &format!("Host: {SITE}"), &url])
    }

    /// A control plane API call from the client: (status, JSON).
    fn api(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("http://{}:9100{path}", ip("control"));
        let auth = format!("Authorization: Bearer {token}");
        let mut args = vec!["-X", method, "-H", &auth, &url];
        if let Some(body) = body {
            args.extend(["-d", body]);
        }
        let (status, _, body) = self.curl(&args);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// How many `GET <path>` lines the origin logged (Python's `http.server`).
    fn origin_gets(&self, path: &str) -> usize {
        let needle = format!("\"GET {path} HTTP/1.1\"");
        self.log("origin").matches(&needle).count()
    }

    /// Polls `check` every 250 ms until it holds or `limit` passes.
    fn eventually(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A purge of the site's `path` that must be confirmed by all five nodes.
    fn purge_everywhere(&self, path: &str) {
        let body = format!(r#"{{"urls":["http://{SITE}{path}"],"wait":60}}"#);
        let (status, report) = self.api("POST", "/v1/purge", PURGE_TOKEN, Some(&body));
        assert_eq!(status, 200, "purge of {path}: {report}\n{}", self.logs());
        let applied: Vec<&str> = report["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["status"] == "applied")
            .filter_map(|n| n["node"].as_str())
            .collect();
        for node in NODES {
            assert!(applied.contains(&node), "{node} did not apply: {report}");
        }
        eprintln!("deploy: purge {path}: {report}");
    }

    /// What `nats` knows of the purge stream (its monitoring endpoint): (replicas, last
    /// sequence).
    fn purge_stream(&self, nats: &str) -> Option<(u64, u64)> {
        let url = format!(
            "http://{}:8222/jsz?accounts=true&streams=true&config=true",
            ip(nats)
        );
        let (_, _, body) = self.curl(&[&url]);
        let jsz: Value = serde_json::from_str(&body).ok()?;
        let stream = find_stream(&jsz, "STRATA_PURGE")?;
        let replicas = stream["config"]["num_replicas"].as_u64()?;
        let last = stream["state"]["last_seq"].as_u64()?;
        Some((replicas, last))
    }

    /// The A records the router gives the client for `www.cdn.test`, sorted.
    fn dns_answers(&self) -> Vec<String> {
        let server = format!("@{}", ip("dns"));
        let out = self.client(
            "dig",
            &[
                &server,
                "-p",
                "5353",
                "+short",
                "+time=2",
                "+tries=1",
                "www.cdn.test",
                "A",
            ],
        );
        let mut answers: Vec<String> = out
            .lines()
            .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
            .map(String::from)
            .collect();
        answers.sort();
        answers
    }
}

/// The stream named `name` anywhere in a `/jsz` answer.
fn find_stream<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Object(map) => {
            if map.get("name").and_then(Value::as_str) == Some(name) && map.contains_key("state") {
                return Some(v);
            }
            map.values().find_map(|x| find_stream(x, name))
        }
        Value::Array(items) => items.iter().find_map(|x| find_stream(x, name)),
        _ => None,
    }
}

#[test]
fn the_compose_topology_in_network_namespaces_purges_survives_a_nats_server_and_follows_health() {
    for tool in ["curl", "dig", "python3"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} missing: scripts/test.sh installs it"
        );
    }
    let mut lab = Lab::new();
    let dir = lab.dir.to_path_buf();
    let started = Instant::now();
    let phase = |what: &str| eprintln!("deploy: {what} at {:.1?}", started.elapsed());

    // === the hosts, in the order of docs/deploy.md ===
    for nats in ["nats-1", "nats-2", "nats-3"] {
        lab.nats(nats);
    }
    lab.strata("control", "control", &compose().join("control.toml"));
    lab.strata("dns", "dns", &compose().join("dns.toml"));
    let origin_dir = compose().join("origin").display().to_string();
    lab.start(
        "origin",
        "python3",
        &[
            "-u",
            "-m",
            "http.server",
            "9000",
            "--directory",
            &origin_dir,
        ],
    );
    let shield = std::fs::read_to_string(compose().join("shield-1.toml"))
        .unwrap()
        .replace(
            "/var/lib/strata/cache",
            &dir.join("shield-cache").display().to_string(),
        );
    std::fs::write(dir.join("shield-1.toml"), shield).unwrap();
    lab.strata("shield-1", "shield", &dir.join("shield-1.toml"));
    for edge in ["edge-a1", "edge-a2", "edge-b1", "edge-b2"] {
        lab.strata(edge, "edge", &compose().join(format!("{edge}.toml")));
    }

    // Every node on the bus, announced in the registry the control plane made.
    lab.eventually("all five nodes announced", Duration::from_secs(60), || {
        let (status, nodes) = lab.api("GET", "/v1/nodes", READ_TOKEN, None);
        let announced: Vec<&str> = nodes["announced"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["name"].as_str())
            .collect();
        status == 200 && NODES.iter().all(|n| announced.contains(n))
    });
    // `stream_replicas = 3` in control.toml: the purge stream is on every server.
    for nats in ["nats-1", "nats-2", "nats-3"] {
        lab.eventually(
            &format!("{nats} holds a replica of the purge stream"),
            Duration::from_secs(30),
            || {
                lab.purge_stream(nats)
                    .is_some_and(|(replicas, _)| replicas == 3)
            },
        );
    }

    phase("cluster up, five nodes announced");

    // === edge -> shield -> origin ===
    let (status, headers, body) = lab.get("edge-a1", "/hello");
    assert_eq!(status, 200, "{headers}\n{}", lab.logs());
    assert_eq!(body, "hello from the origin\n");
    let (_, headers, _) = lab.get("edge-b1", "/hello");
    assert!(
        headers.to_ascii_lowercase().contains("cache-status"),
        "{headers}"
    );
    assert_eq!(
        lab.origin_gets("/hello"),
        1,
        "the shield answers the second PoP"
    );

    // === signed URLs (the edges' /private/ rule), checked at both PoPs ===
    let signed = Command::new(crate::support::binary::strata_bin())
        .arg("sign")
        .arg("--config")
        .arg(compose().join("edge-a1.toml"))
        .args(["--host", SITE, "--ttl", "1h", "/private/clip.txt"])
        .output()
        .unwrap();
    assert!(signed.status.success(), "{signed:?}");
    let signed = String::from_utf8(signed.stdout).unwrap();
    let path_and_query = &signed.trim()[signed.find("/private/").unwrap()..];
    assert!(path_and_query.contains("signature="), "{signed}");
    for edge in ["edge-a2", "edge-b2", "edge-a1"] {
        let (status, headers, body) = lab.get(edge, path_and_query);
        assert_eq!(
            (status, body.as_str()),
            (200, "members only\n"),
            "{edge}: {headers}"
        );
    }
    let (status, headers, _) = lab.get("edge-b1", "/private/clip.txt");
    assert_eq!(status, 403, "unsigned: {headers}");
    let forged = path_and_query.replace("signature=", "signature=A");
    let (status, headers, _) = lab.get("edge-a2", &forged);
    assert_eq!(status, 403, "forged: {headers}");
    assert!(headers.contains("detail=token-"), "{headers}");
    assert_eq!(
        lab.origin_gets("/private/clip.txt"),
        1,
        "one origin fetch for both PoPs, without the signature:\n{}",
        lab.log("origin")
    );

    phase("signed URLs checked");

    // === a purge reaches all five nodes ===
    lab.purge_everywhere("/hello");
    lab.get("edge-a1", "/hello");
    assert_eq!(
        lab.origin_gets("/hello"),
        2,
        "purged at the edges and the shield"
    );
    phase("purged with every server up");

    // === each NATS server in turn down: no purge lost ===
    for (round, nats) in ["nats-1", "nats-2", "nats-3"].into_iter().enumerate() {
        lab.stop(nats, true);
        lab.purge_everywhere("/hello");
        phase(&format!("purged with {nats} down"));
        let (status, _, _) = lab.get("edge-b2", "/hello");
        assert_eq!(status, 200);
        assert_eq!(
            lab.origin_gets("/hello"),
            3 + round,
            "purge with {nats} down"
        );
        lab.nats(nats);
        // Back in the cluster, and caught up, before the next one goes down.
        lab.eventually(
            &format!("{nats} caught up"),
            Duration::from_secs(60),
            || {
                let last = lab.purge_stream("nats-1").zip(lab.purge_stream("nats-2"));
                let third = lab.purge_stream("nats-3");
                matches!((last, third), (Some((a, b)), Some(c)) if a.1 == b.1 && b.1 == c.1)
            },
        );
        phase(&format!("{nats} back and caught up"));
    }

    // === DNS follows health: pop-a's edges stop, answers move to pop-b ===
    lab.eventually(
        "pop-a answers a client of its region",
        Duration::from_secs(30),
        || lab.dns_answers() == [ip("edge-a1"), ip("edge-a2")],
    );
    lab.stop("edge-a1", false);
    lab.stop("edge-a2", false);
    lab.eventually(
        "pop-b answers once pop-a is down",
        Duration::from_secs(60),
        || lab.dns_answers() == [ip("edge-b1"), ip("edge-b2")],
    );
    phase("DNS moved to pop-b");
    let (status, _, body) = lab.get("edge-b1", "/hello");
    assert_eq!((status, body.as_str()), (200, "hello from the origin\n"));
}
