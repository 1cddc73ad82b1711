//! The control plane's health monitor against real nodes on loopback: PoP states from
//! probes (with hysteresis), a snapshot on the bus every round, `GET /v1/health`, metrics,
//! and the report each node serves at its health endpoint.

use std::time::Duration;

use strata_bus::{Bus, Subscription, HEALTH_SUBJECT};
use strata_control::config::{HealthSection, NodeEntry, ProbedNode};
use strata_control::{Control, ControlConfig};
use strata_health::{HealthReport, HealthSnapshot, NodeState};
use strata_proxy::config::Seconds;

use crate::support::control::{call, TOKEN};
use crate::support::{Edge, PopBuilder, Reply, TestOrigin};

async fn start_pop(origin: &TestOrigin, pop: &'static str, names: &[&str]) -> Vec<Edge> {
    PopBuilder::new(&origin.url(), names)
        .config(move |c, _| c.node.pop = Some(pop.into()))
        .start()
        .await
}

async fn monitor(nodes: &[&Edge], bus: &Bus, health: HealthSection) -> Control {
    let config = ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.into()),
        tokens: Vec::new(),
        node_ttl: strata_proxy::config::Seconds(std::time::Duration::from_secs(30)),
        stream_replicas: 1,
        nats: "nats://embedded".into(),
        nats_auth: Default::default(),
        nodes: nodes
            .iter()
            .map(|e| {
                let report = e.proxy().health_report();
                NodeEntry::Probed(ProbedNode {
                    name: report.node,
                    pop: report.pop,
                    url: e.url(),
                })
            })
            .collect(),
        health,
    };
    Control::start(&config, bus.clone()).await.unwrap()
}

fn every(ms: u64) -> HealthSection {
    HealthSection {
        interval: Seconds(Duration::from_millis(ms)),
        ..HealthSection::default()
    }
}

/// The next snapshot published on the bus (bounded wait).
async fn next(sub: &mut Subscription) -> HealthSnapshot {
    let bytes = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a snapshot within 10 s")
        .expect("bus open");
    serde_json::from_slice(&bytes).expect("snapshot JSON")
}

/// Snapshots until `cond` holds (at most `rounds`); returns it and the rounds it took.
async fn until(
    sub: &mut Subscription,
    rounds: usize,
    cond: impl Fn(&HealthSnapshot) -> bool,
) -> (HealthSnapshot, usize) {
    for i in 1..=rounds {
        let s = next(sub).await;
        if cond(&s) {
            return (s, i);
        }
    }
    panic!("no snapshot satisfied the condition in {rounds} rounds");
}

fn state(s: &HealthSnapshot, pop: &str) -> Option<NodeState> {
    s.state_of(pop)
}

#[tokio::test]
async fn a_pop_whose_nodes_stop_answering_is_published_unhealthy_within_two_rounds() {
    let origin = TestOrigin::fixed(|| Reply::ok("x").cc("max-age=60")).await;
    let a = start_pop(&origin, "pop-a", &["a1", "a2"]).await;
    let mut b = start_pop(&origin, "pop-b", &["b1"]).await;
    let bus = Bus::embedded();
    let mut sub = bus.subscribe_notices(HEALTH_SUBJECT).await.unwrap();
    let control = monitor(&[&a[0], &a[1], &b[0]], &bus, every(100)).await;

    // New nodes prove themselves first: `rise` (3) good probes.
    let (first, rounds) = until(&mut sub, 50, |s| {
        state(s, "pop-a") == Some(NodeState::Healthy)
            && state(s, "pop-b") == Some(NodeState::Healthy)
    })
    .await;
    assert!(rounds >= 3, "healthy after {rounds} rounds: rise is 3");
    assert_eq!(first.interval_ms, 100);

    b.remove(0).stop().await;
    // Rounds are counted from the first that ended after the stop (snapshots published
    // before it may still be queued); the first round that starts after the stop sees the
    // failure, so at most one round in flight passes it by.
    let stopped_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut rounds = 0;
    let down = loop {
        let s = next(&mut sub).await;
        if s.at_ms <= stopped_ms {
            continue;
        }
        rounds += 1;
        if state(&s, "pop-b") == Some(NodeState::Unhealthy) || rounds > 10 {
            break s;
        }
    };
    assert!(rounds <= 2, "unhealthy after {rounds} rounds");
    assert_eq!(state(&down, "pop-a"), Some(NodeState::Healthy));
    let b1 = &down.pops.iter().find(|p| p.pop == "pop-b").unwrap().nodes[0];
    assert!(b1.reason.contains("no answer"), "{}", b1.reason);

    let (status, api) = call(control.addr, "GET", "/v1/health", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    let pops = api["pops"].as_array().unwrap();
    let pop_b = pops.iter().find(|p| p["pop"] == "pop-b").unwrap();
    assert_eq!(pop_b["state"], "unhealthy");
    assert_eq!(pop_b["nodes"][0]["node"], "b1");
    let (status, _) = call(control.addr, "GET", "/v1/health", None, "").await;
    assert_eq!(status, 401, "the health API takes the token too");

    let metrics = metrics_text(&control).await;
    assert!(
        metrics.contains("strata_pop_state{pop=\"pop-b\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_pop_state{pop=\"pop-a\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_pop_state_changes_total{pop=\"pop-b\",state=\"unhealthy\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_health_probes_total{node=\"b1\",outcome=\"failed\"}"),
        "{metrics}"
    );
    control.shutdown().await;
}

async fn metrics_text(control: &Control) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(control.addr).await.unwrap();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn a_node_over_one_percent_5xx_is_degraded_and_recovers_only_under_half_a_percent() {
    let origin = TestOrigin::start(|seen, _| {
        if seen.path().starts_with("/fail") {
            Reply::status(503).body("down")
        } else {
            Reply::ok("fine").cc("max-age=60")
        }
    })
    .await;
    // The failures must count against the node, not open its origin's breaker (that is a
    // reason of its own, tested below).
    let edge = PopBuilder::new(&origin.url(), &["a1"])
        .config(|c, _| {
            c.node.pop = Some("pop-a".into());
            c.services[0].health.failures = 1000;
        })
        .start()
        .await
        .remove(0);
    let bus = Bus::embedded();
    let mut sub = bus.subscribe_notices(HEALTH_SUBJECT).await.unwrap();
    // One long window: the whole test's traffic is judged together, whatever the rounds.
    let mut health = every(100);
    health.thresholds.window = Duration::from_secs(600);
    health.thresholds.min_responses = 100;
    let control = monitor(&[&edge], &bus, health).await;
    until(&mut sub, 50, |s| {
        state(s, "pop-a") == Some(NodeState::Healthy)
    })
    .await;

    let send = |n: usize, path: &'static str| {
        let edge = &edge;
        async move {
            for i in 0..n {
                edge.get(&format!("{path}{}", i % 7)).send().await;
            }
        }
    };
    let responses = |s: &HealthSnapshot| s.pops[0].nodes[0].figures.responses;

    send(200, "/ok").await;
    send(5, "/fail").await; // 5 of 205: 2.4%
    let (s, _) = until(&mut sub, 50, |s| responses(s) >= 205).await;
    assert_eq!(state(&s, "pop-a"), Some(NodeState::Degraded));
    assert!(
        s.pops[0].nodes[0].reason.starts_with("5xx"),
        "{:?}",
        s.pops[0]
    );

    send(400, "/ok").await; // 5 of 605: 0.83%, under the failure threshold but not the recovery one
    let (s, _) = until(&mut sub, 50, |s| responses(s) >= 605).await;
    assert_eq!(state(&s, "pop-a"), Some(NodeState::Degraded), "hysteresis");
    for _ in 0..3 {
        assert_eq!(
            state(&next(&mut sub).await, "pop-a"),
            Some(NodeState::Degraded)
        );
    }

    send(600, "/ok").await; // 5 of 1,205: 0.41%
    let (s, _) = until(&mut sub, 50, |s| responses(s) >= 1205).await;
    assert_eq!(
        state(&s, "pop-a"),
        Some(NodeState::Healthy),
        "{:?}",
        s.pops[0]
    );
    control.shutdown().await;
}

#[tokio::test]
async fn the_health_endpoint_reports_counters_but_not_probes() {
    let origin = TestOrigin::start(|seen, _| {
        if seen.path() == "/bad" {
            Reply::status(502)
        } else {
            Reply::ok("x").cc("max-age=60")
        }
    })
    .await;
    let edge = start_pop(&origin, "pop-z", &["z1"]).await.remove(0);
    edge.get("/good").send().await;
    edge.get("/bad").send().await;
    for _ in 0..3 {
        edge.get("/.well-known/strata/health").send().await;
    }
    let got = edge.get("/.well-known/strata/health").send().await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/json"));
    let report: HealthReport = serde_json::from_slice(&got.body).unwrap();
    assert_eq!((report.node.as_str(), report.pop.as_str()), ("z1", "pop-z"));
    assert_eq!(report.role, "edge");
    assert_eq!((report.responses, report.responses_5xx), (2, 1));
    assert_eq!(report.latency_buckets.iter().sum::<u64>(), 2);
    // The probe itself is in flight while it is answered.
    assert_eq!(report.in_flight, 1);
    assert!(report.unreachable.is_empty());
}

#[tokio::test]
async fn a_node_that_cannot_reach_any_origin_reports_the_service_unreachable() {
    let origin = TestOrigin::fixed(|| Reply::status(503)).await;
    let edge = PopBuilder::new(&origin.url(), &["u1"])
        .config(|c, _| {
            // Two 503s from two URLs are enough to call the origin down.
            let h = &mut c.services[0].health;
            h.error_min_responses = 2;
            h.distinct_urls = 2;
            h.cooldown = Seconds(Duration::from_secs(600));
        })
        .start()
        .await
        .remove(0);
    assert!(edge.proxy().health_report().unreachable.is_empty());
    edge.get("/a").send().await;
    edge.get("/b").send().await;
    assert_eq!(edge.proxy().health_report().unreachable, vec!["default"]);
}

/// Nodes that announce a URL (`node.url`) are probed without being configured: a control
/// plane with an empty `nodes` list reports their PoP healthy once they prove themselves,
/// and unhealthy when they stop answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_nodes_are_probed_without_a_node_list() {
    let nats = crate::support::nats::NatsServer::start();
    let control = crate::support::control::control_from_toml(
        &nats,
        &format!(
            "listen = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nnats = \"{}\"\nnodes = []\n\
             [health]\ninterval = \"100ms\"\n",
            nats.url
        ),
    )
    .await;
    let origin = TestOrigin::fixed(|| Reply::ok("x").cc("max-age=60")).await;
    let port = crate::support::pebble::free_port();
    let url = nats.url.clone();
    let edge = crate::support::EdgeBuilder::new(&origin.url())
        .config(move |c| {
            c.bus.nats = Some(url);
            c.node.name = "edge-u".into();
            c.node.pop = Some("pop-u".into());
            c.node.url = Some(format!("http://127.0.0.1:{port}"));
            c.listen.http = vec![format!("127.0.0.1:{port}").parse().unwrap()];
        })
        .start()
        .await;
    let pop_state = |api: &serde_json::Value| {
        api["pops"]
            .as_array()
            .and_then(|pops| pops.iter().find(|p| p["pop"] == "pop-u"))
            .map(|p| (p["state"].clone(), p["nodes"][0]["node"].clone()))
    };
    let mut seen = None;
    for _ in 0..100 {
        let (_, api) = call(control.addr, "GET", "/v1/health", Some(TOKEN), "").await;
        seen = pop_state(&api);
        if seen.as_ref().is_some_and(|(s, _)| s == "healthy") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (state, node) = seen.clone().expect("pop-u in the health report");
    assert_eq!(
        (state.as_str(), node.as_str()),
        (Some("healthy"), Some("edge-u"))
    );

    edge.stop().await;
    for _ in 0..100 {
        let (_, api) = call(control.addr, "GET", "/v1/health", Some(TOKEN), "").await;
        seen = pop_state(&api);
        if seen.as_ref().is_some_and(|(s, _)| s == "unhealthy") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.map(|(s, _)| s), Some(serde_json::json!("unhealthy")));
    control.shutdown().await;
}
