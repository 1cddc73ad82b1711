//! The DNS request router on real sockets: answers checked with `dig` (Debian dnsutils)
//! and with hickory's message types over UDP; health from a real control plane probing
//! real nodes over the embedded bus.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_server::proto::rr::{Name, RData, RecordType};
use strata_bus::{Bus, HEALTH_SUBJECT};
use strata_control::config::{HealthSection, NodeEntry, ProbedNode};
use strata_control::{Control, ControlConfig};
use strata_proxy::config::Seconds;
use strata_router::{Router, RouterConfig};
use tokio::net::UdpSocket;

use crate::support::{Edge, PopBuilder, Reply, TestOrigin};

const ZONE: &str = r#"
listen = "127.0.0.1:0"
zone = "cdn.test"
hosts = ["@", "www", "video"]
[[nameserver]]
name = "ns1.cdn.test"
addresses = ["127.0.0.1"]
[[pop]]
name = "pop-a"
addresses = ["192.0.2.1", "2001:db8::1"]
[[pop]]
name = "pop-b"
addresses = ["198.51.100.1"]
[[location]]
name = "here"
prefixes = ["127.0.0.0/8", "10.0.0.0/8"]
latency = { pop-a = 5, pop-b = 40 }
[[location]]
name = "there"
prefixes = ["172.16.0.0/12"]
latency = { pop-a = 40, pop-b = 5 }
"#;

async fn router(toml: &str, bus: Option<Bus>) -> Router {
    Router::start(&RouterConfig::from_toml(toml).unwrap(), bus)
        .await
        .unwrap()
}

/// `dig @127.0.0.1 -p PORT args…` (one try, 2 s): its whole output.
fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig (Debian dnsutils; scripts/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn short(addr: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    dig(addr, &all).lines().map(str::to_string).collect()
}

// dig blocks its thread: the router needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_follow_the_client_subnet_with_the_ecs_scope_rfc7871() {
    let r = router(ZONE, None).await;
    let a = r.udp_addr;
    // No ECS: the resolver's address (127.0.0.1) places the client.
    assert_eq!(short(a, &["www.cdn.test"]), vec!["192.0.2.1"]);
    let out = dig(a, &["www.cdn.test", "+subnet=172.16.9.0/24"]);
    assert!(
        out.contains("www.cdn.test.\t\t30\tIN\tA\t198.51.100.1"),
        "{out}"
    );
    // Scope 12: the answer holds for the whole 172.16.0.0/12 the table matched.
    assert!(out.contains("CLIENT-SUBNET: 172.16.9.0/24/12"), "{out}");
    assert!(out.contains("flags: qr aa"), "authoritative: {out}");
    assert_eq!(
        short(a, &["cdn.test", "AAAA", "+subnet=10.0.0.0/8"]),
        vec!["2001:db8::1"]
    );
    // ECS source 0: the client opts out; the resolver's address is used, scope 0.
    let out = dig(a, &["www.cdn.test", "+subnet=0.0.0.0/0"]);
    assert!(
        out.contains("192.0.2.1") && out.contains("CLIENT-SUBNET: 0.0.0.0/0/0"),
        "{out}"
    );
    r.shutdown().await;
}

// dig blocks its thread: the router needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soa_ns_nxdomain_nodata_and_refused_follow_rfc1034_and_rfc2308() {
    let r = router(ZONE, None).await;
    let a = r.udp_addr;
    let soa = dig(a, &["cdn.test", "SOA"]);
    assert!(
        soa.contains("status: NOERROR")
            && soa.contains("IN\tSOA\tns1.cdn.test. hostmaster.cdn.test."),
        "{soa}"
    );
    let ns = dig(a, &["cdn.test", "NS"]);
    assert!(
        ns.contains("IN\tNS\tns1.cdn.test.")
            && ns.contains("ns1.cdn.test.\t\t30\tIN\tA\t127.0.0.1"),
        "{ns}"
    );
    let nx = dig(a, &["nope.cdn.test"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("AUTHORITY: 1"),
        "{nx}"
    );
    assert!(
        nx.contains("IN\tSOA"),
        "negative answers carry the SOA: {nx}"
    );
    let nodata = dig(a, &["www.cdn.test", "MX"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    assert!(nodata.contains("IN\tSOA"), "{nodata}");
    let refused = dig(a, &["example.com"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
    let tcp = dig(a, &["www.cdn.test", "+tcp"]);
    assert!(tcp.contains("IN\tA\t192.0.2.1"), "TCP too: {tcp}");
    r.shutdown().await;
}

/// A query built with hickory's message types.
fn query(name: &str, subnet: Option<&str>) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    if let Some(s) = subnet {
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(s.parse::<ClientSubnet>().unwrap()));
        m.set_edns(edns);
    }
    m.to_vec().unwrap()
}

async fn ask(sock: &UdpSocket, to: SocketAddr, packet: &[u8]) -> Option<Message> {
    sock.send_to(packet, to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn first_a(m: &Message) -> String {
    m.answers
        .iter()
        .find_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_pop_at_weight_25_gets_a_quarter_of_its_clients_within_statistical_bounds() {
    let r = router(
        &ZONE
            .replace(
                "addresses = [\"198.51.100.1\"]",
                "addresses = [\"198.51.100.1\"]\nweight = 25",
            )
            .replace(
                "latency = { pop-a = 40, pop-b = 5 }",
                "latency = { pop-a = 6, pop-b = 5 }",
            ),
        None,
    )
    .await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let n = 2000;
    let mut to_b = 0;
    for i in 0..n {
        let subnet = format!("172.{}.{}.0/24", 16 + (i / 256) % 16, i % 256);
        let m = ask(&sock, r.udp_addr, &query("www.cdn.test.", Some(&subnet)))
            .await
            .expect("an answer");
        if first_a(&m) == "198.51.100.1" {
            to_b += 1;
        }
    }
    let share = to_b as f64 / n as f64 * 100.0;
    // Binomial: sd = sqrt(2000 * .25 * .75) ≈ 19.4 answers ≈ 1 point; allow 4 sd.
    assert!((21.0..=29.0).contains(&share), "pop-b took {share:.1}%");
    // A subnet keeps its PoP from one query to the next.
    let again = ask(
        &sock,
        r.udp_addr,
        &query("www.cdn.test.", Some("172.16.0.0/24")),
    )
    .await
    .unwrap();
    let once = ask(
        &sock,
        r.udp_addr,
        &query("www.cdn.test.", Some("172.16.0.0/24")),
    )
    .await
    .unwrap();
    assert_eq!(first_a(&again), first_a(&once));
    r.shutdown().await;
}

#[tokio::test]
async fn malformed_queries_get_formerr_and_garbage_never_stops_the_server() {
    let r = router(ZONE, None).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A header that decodes, a body that does not: FORMERR with the same id.
    let mut bad = query("www.cdn.test.", None);
    bad.truncate(bad.len() - 3);
    let m = ask(&sock, r.udp_addr, &bad).await.expect("an answer");
    assert_eq!(
        (m.metadata.id, m.metadata.response_code.low()),
        (7, 1),
        "{m:?}"
    );
    // Two questions: FORMERR from the router.
    let mut two = Message::new(9, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii("www.cdn.test.").unwrap(),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("cdn.test.").unwrap(),
        RecordType::A,
    ));
    let m = ask(&sock, r.udp_addr, &two.to_vec().unwrap())
        .await
        .expect("an answer");
    assert_eq!(m.metadata.response_code.low(), 1);
    // Pseudo-random garbage, bounded: whatever comes back, the server keeps answering.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..500 {
        let len = 1 + (i * 7) % 300;
        let packet: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        sock.send_to(&packet, r.udp_addr).await.unwrap();
    }
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let m = ask(&probe, r.udp_addr, &query("www.cdn.test.", None))
        .await
        .expect("still answering");
    assert_eq!(first_a(&m), "192.0.2.1");
    r.shutdown().await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn next(s: &mut strata_bus::Subscription) -> strata_health::HealthSnapshot {
    let b = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a snapshot within 10 s")
        .expect("bus open");
    serde_json::from_slice(&b).expect("snapshot JSON")
}

async fn start_pop(origin: &TestOrigin, pop: &'static str, name: &str) -> Edge {
    PopBuilder::new(&origin.url(), &[name])
        .config(move |c, _| c.node.pop = Some(pop.into()))
        .start()
        .await
        .remove(0)
}

// dig blocks its thread: the router needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_pop_leaves_the_answers_within_two_probe_intervals_and_all_down_fails_open() {
    let origin = TestOrigin::fixed(|| Reply::ok("x").cc("max-age=60")).await;
    let a1 = start_pop(&origin, "pop-a", "a1").await;
    let b1 = start_pop(&origin, "pop-b", "b1").await;
    let bus = Bus::embedded();
    let mut snapshots = bus.subscribe_notices(HEALTH_SUBJECT).await.unwrap();
    let control = Control::start(
        &ControlConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: Some("test-token-0123456789".into()),
            tokens: Vec::new(),
            node_ttl: strata_proxy::config::Seconds(std::time::Duration::from_secs(30)),
            stream_replicas: 1,
            nats: "nats://embedded".into(),
            nats_auth: Default::default(),
            nodes: [(&a1, "a1", "pop-a"), (&b1, "b1", "pop-b")]
                .iter()
                .map(|(e, n, p)| {
                    NodeEntry::Probed(ProbedNode {
                        name: n.to_string(),
                        pop: p.to_string(),
                        url: e.url(),
                    })
                })
                .collect(),
            health: HealthSection {
                interval: Seconds(Duration::from_millis(100)),
                ..HealthSection::default()
            },
        },
        bus.clone(),
    )
    .await
    .unwrap();
    let r = router(ZONE, Some(bus.clone())).await;
    // Both PoPs proven healthy.
    for _ in 0..50 {
        let s = next(&mut snapshots).await;
        if s.pops
            .iter()
            .all(|p| p.state == strata_health::NodeState::Healthy)
        {
            break;
        }
    }
    assert_eq!(short(r.udp_addr, &["www.cdn.test"]), vec!["192.0.2.1"]);

    a1.stop().await;
    // Rounds are counted from the first that ended after the stop (snapshots published
    // before it may still be queued here).
    let stopped_ms = now_ms();
    let mut rounds = 0;
    loop {
        let s = next(&mut snapshots).await;
        if s.at_ms <= stopped_ms {
            continue;
        }
        rounds += 1;
        if s.state_of("pop-a") == Some(strata_health::NodeState::Unhealthy) {
            break;
        }
        assert!(
            rounds < 2,
            "pop-a still not unhealthy after {rounds} rounds"
        );
    }
    // The router applies the same snapshot: the next answers name pop-b.
    let mut answer = Vec::new();
    for _ in 0..100 {
        answer = short(r.udp_addr, &["www.cdn.test"]);
        if answer == ["198.51.100.1"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer, vec!["198.51.100.1"], "the next nearest PoP");

    // Every PoP down: answers fall back to the nearest by latency rather than nothing.
    b1.stop().await;
    for _ in 0..20 {
        if next(&mut snapshots).await.state_of("pop-b") == Some(strata_health::NodeState::Unhealthy)
        {
            break;
        }
    }
    let mut answer = Vec::new();
    for _ in 0..100 {
        answer = short(r.udp_addr, &["www.cdn.test"]);
        if answer == ["192.0.2.1"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer, vec!["192.0.2.1"], "fail open to the nearest");
    r.shutdown().await;
    control.shutdown().await;
}
