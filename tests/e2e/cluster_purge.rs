//! Purges across processes through a real NATS JetStream: every node applies and acks, and
//! a node that was down gets the purges it missed when it comes back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_bus::{Bus, Subscription};
use strata_proxy::purge::{PurgeAck, PurgeEvent, PurgeRequest};

use crate::support::nats::{edge_on_bus, NatsServer};
use crate::support::{Reply, TestOrigin};

fn event(id: &str, tags: &[&str]) -> Bytes {
    let e = PurgeEvent {
        id: id.into(),
        // Rounded up, as the control plane does: an object stored earlier in the same
        // millisecond must not escape.
        issued_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 1,
        request: PurgeRequest {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        },
    };
    Bytes::from(serde_json::to_vec(&e).unwrap())
}

/// The bus as the control plane has it: connected, with its streams and buckets made.
async fn control_bus(nats: &NatsServer) -> Bus {
    let bus = Bus::nats(&nats.url, &Default::default()).await.unwrap();
    bus.provision(Duration::from_secs(30), 1).await.unwrap();
    bus
}

/// An ack batch as `node` sends it, for purge `id`.
fn ack_bytes(id: &str, node: &str) -> Bytes {
    let ack = PurgeAck {
        id: id.into(),
        node: node.into(),
        seq: 1,
        objects: 0,
        applied_at_ms: 0,
        error: None,
    };
    Bytes::from(serde_json::to_vec(&[ack]).unwrap())
}

async fn acks(sub: &mut Subscription, n: usize) -> Vec<PurgeAck> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("ack within 20s")
            .expect("ack");
        // A node sends the acks of a batch of events in one message (a JSON array).
        out.extend(serde_json::from_slice::<Vec<PurgeAck>>(&next).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_published_on_nats_is_applied_and_acked_by_every_node() {
    let nats = NatsServer::start();
    let origin = TestOrigin::fixed(|| {
        Reply::ok("x")
            .cc("max-age=600")
            .header("surrogate-key", "red")
    })
    .await;
    let (a, b) = (
        edge_on_bus(&origin, &nats, "edge-a").await,
        edge_on_bus(&origin, &nats, "edge-b").await,
    );
    for e in [&a, &b] {
        e.get("/p").send().await;
        e.eventually("stored", || e.proxy().storage().stats().keys == 1)
            .await;
    }
    let control = control_bus(&nats).await;
    let mut sub = control
        .subscribe_notices("strata.purge.acks.>")
        .await
        .unwrap();
    let seq = control
        .publish_purge("p1", event("p1", &["red"]))
        .await
        .unwrap();
    let mut got = acks(&mut sub, 2).await;
    got.sort_by(|x, y| x.node.cmp(&y.node));
    assert_eq!(
        got.iter().map(|a| a.node.as_str()).collect::<Vec<_>>(),
        ["edge-a", "edge-b"]
    );
    assert!(
        got.iter()
            .all(|a| a.id == "p1" && a.seq == seq && a.objects == 1 && a.error.is_none()),
        "{got:?}"
    );
    assert!(!a.get("/p").send().await.is_hit());
    assert!(!b.get("/p").send().await.is_hit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_was_down_replays_the_purges_it_missed() {
    let nats = NatsServer::start();
    let origin = TestOrigin::fixed(|| {
        Reply::ok("x")
            .cc("max-age=600")
            .header("surrogate-key", "k")
    })
    .await;
    let control = control_bus(&nats).await;
    let mut sub = control
        .subscribe_notices("strata.purge.acks.>")
        .await
        .unwrap();
    let first = edge_on_bus(&origin, &nats, "edge-r").await;
    control
        .publish_purge("before", event("before", &["k"]))
        .await
        .unwrap();
    assert_eq!(acks(&mut sub, 1).await[0].id, "before");
    first.stop().await;
    // Two purges while the node is down.
    control
        .publish_purge("missed-1", event("missed-1", &["k"]))
        .await
        .unwrap();
    control
        .publish_purge("missed-2", event("missed-2", &["k"]))
        .await
        .unwrap();
    let _back = edge_on_bus(&origin, &nats, "edge-r").await;
    // An event the server had already handed to the departing node's pull comes back after
    // the ack wait, so the order of the two may differ; both must arrive, at this node.
    let got = acks(&mut sub, 2).await;
    let mut ids: Vec<_> = got.iter().map(|a| a.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["missed-1", "missed-2"]);
    assert!(got.iter().all(|a| a.node == "edge-r"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_event_is_acked_with_the_error_and_does_not_stop_the_consumer() {
    let nats = NatsServer::start();
    let origin = TestOrigin::fixed(|| {
        Reply::ok("x")
            .cc("max-age=600")
            .header("surrogate-key", "k")
    })
    .await;
    let control = control_bus(&nats).await;
    let mut sub = control
        .subscribe_notices("strata.purge.acks.>")
        .await
        .unwrap();
    let _node = edge_on_bus(&origin, &nats, "edge-m").await;
    control
        .publish_purge("not-json", Bytes::from_static(b"not json"))
        .await
        .unwrap();
    control
        .publish_purge("good", event("good", &["k"]))
        .await
        .unwrap();
    let got = acks(&mut sub, 2).await;
    assert!(
        got[0].error.as_deref().unwrap_or("").contains("malformed"),
        "{got:?}"
    );
    assert_eq!(got[1].id, "good");
    assert!(got[1].error.is_none());
}

/// A NATS server with TLS (a certificate from `pki`), a control user who may do anything
/// and a user for the node `edge-s` who may only read its own purge consumer and send
/// acks (docs/deploy.md's per-node permissions).
fn secured_nats(pki: &crate::support::tls::TestPki) -> NatsServer {
    let cert = pki.issue("nats", &["nats.test"]);
    NatsServer::start_with(&format!(
        r#"
tls {{
  cert_file: "{}"
  key_file: "{}"
}}
authorization {{
  users = [
    {{ user: control, password: "control-secret" }}
    {{ user: edge-s, password: "edge-secret", permissions: {{
        publish: {{ allow: [
          "$JS.API.STREAM.INFO.STRATA_PURGE",
          "$JS.API.CONSUMER.INFO.STRATA_PURGE.edge-s",
          "$JS.API.CONSUMER.CREATE.STRATA_PURGE.edge-s",
          "$JS.API.CONSUMER.DURABLE.CREATE.STRATA_PURGE.edge-s",
          "$JS.API.CONSUMER.MSG.NEXT.STRATA_PURGE.edge-s",
          "$JS.ACK.STRATA_PURGE.edge-s.>",
          "strata.purge.acks.edge-s",
          "$JS.API.STREAM.INFO.KV_STRATA_NODES",
          "$KV.STRATA_NODES.edge-s"
        ] }}
        subscribe: {{ allow: ["_INBOX.>"] }}
    }} }}
  ]
}}
"#,
        cert.cert.display(),
        cert.key.display()
    ))
}

fn auth(
    user: &str,
    password: &str,
    ca: Option<&std::path::Path>,
) -> strata_proxy::config::NatsAuth {
    strata_proxy::config::NatsAuth {
        user: Some(user.into()),
        password: Some(password.into()),
        ca_file: ca.map(|p| p.to_path_buf()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_reach_nodes_over_tls_with_passwords_and_an_edge_cannot_publish_them() {
    let pki = crate::support::tls::TestPki::new();
    let nats = secured_nats(&pki);
    assert!(nats.url.starts_with("tls://"), "{}", nats.url);
    let origin = TestOrigin::fixed(|| {
        Reply::ok("x")
            .cc("max-age=600")
            .header("surrogate-key", "red")
    })
    .await;
    // The control plane creates the purge stream (an edge may not).
    let control = Bus::nats(
        &nats.url,
        &auth("control", "control-secret", Some(&pki.ca_pem)),
    )
    .await
    .unwrap();
    control.provision(Duration::from_secs(30), 1).await.unwrap();
    let edge_auth = auth("edge-s", "edge-secret", Some(&pki.ca_pem));
    let (url, node_auth) = (nats.url.clone(), edge_auth.clone());
    let edge = crate::support::EdgeBuilder::new(&origin.url())
        .config(move |c| {
            c.bus.nats = Some(url);
            c.bus.auth = node_auth;
            c.node.name = "edge-s".into();
        })
        .start()
        .await;
    edge.get("/p").send().await;
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    let mut sub = control
        .subscribe_notices("strata.purge.acks.>")
        .await
        .unwrap();
    control
        .publish_purge("s1", event("s1", &["red"]))
        .await
        .unwrap();
    let got = acks(&mut sub, 1).await;
    assert_eq!(got[0].node, "edge-s", "{got:?}");
    edge.eventually("purged", || edge.proxy().storage().stats().keys == 0)
        .await;
    // It announced itself in the registry (the control plane created it).
    let mut names = Vec::new();
    for _ in 0..100 {
        names = control.announced().await.unwrap();
        if !names.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names.first().map(|(n, _)| n.as_str()), Some("edge-s"));

    // With the edge's credentials, a purge (or anything else) cannot be published: the
    // stream still holds one event.
    let client = async_nats::ConnectOptions::new()
        .user_and_password("edge-s".into(), "edge-secret".into())
        .add_root_certificates(pki.ca_pem.clone())
        .require_tls(true)
        .connect(&nats.url)
        .await
        .unwrap();
    client
        .publish("strata.purge.events", event("forged", &["red"]))
        .await
        .unwrap();
    let _ = client.flush().await;
    let js = async_nats::jetstream::new(
        async_nats::ConnectOptions::new()
            .user_and_password("control".into(), "control-secret".into())
            .add_root_certificates(pki.ca_pem.clone())
            .connect(&nats.url)
            .await
            .unwrap(),
    );
    // Nor an ack in another node's name: its subject names the node, and the edge may
    // publish only on its own (a permission violation: nothing reaches the control plane).
    client
        .publish("strata.purge.acks.edge-t", ack_bytes("s1", "edge-t"))
        .await
        .unwrap();
    let _ = client.flush().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stream = js.get_stream("STRATA_PURGE").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let forged = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
    assert!(forged.is_err(), "an ack on another node's subject arrived");

    // A wrong password, or a server certificate nobody vouched for: the node starts
    // anyway, serves from its cache, and says it is cut off (and keeps trying).
    for bad in [
        auth("edge-s", "wrong", Some(&pki.ca_pem)),
        auth("edge-s", "edge-secret", None),
    ] {
        let url = nats.url.clone();
        let cut_off = crate::support::EdgeBuilder::new(&origin.url())
            .config(move |c| {
                c.bus.nats = Some(url);
                c.bus.auth = bad;
            })
            .start()
            .await;
        assert_eq!(cut_off.get("/p").send().await.status, http::StatusCode::OK);
        // Long enough for a join that went through (milliseconds here) to show as 1.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let metrics = cut_off.admin("/metrics").await.text();
        assert_eq!(
            crate::support::metric_value(&metrics, "strata_bus_connected"),
            Some(0.0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_nats_is_down_serves_and_joins_when_it_comes_up() {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("x")
            .cc("max-age=600")
            .header("surrogate-key", "late")
    })
    .await;
    // A port with nothing on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    // A cluster's seed list, one of which never answers.
    let node_url = format!("nats://127.0.0.1:1,{url}");
    let edge = crate::support::EdgeBuilder::new(&origin.url())
        .config(move |c| {
            c.bus.nats = Some(node_url);
            c.node.name = "edge-late".into();
        })
        .start()
        .await;
    assert_eq!(edge.get("/p").send().await.status, http::StatusCode::OK);
    let metrics = edge.admin("/metrics").await.text();
    assert_eq!(
        crate::support::metric_value(&metrics, "strata_bus_connected"),
        Some(0.0)
    );
    // NATS comes up; a purge is published before the node is back on the bus.
    let nats = NatsServer::start_on(port);
    assert_eq!(nats.url, url);
    let control = control_bus(&nats).await;
    let mut sub = control
        .subscribe_notices("strata.purge.acks.>")
        .await
        .unwrap();
    control
        .publish_purge("late-1", event("late-1", &["late"]))
        .await
        .unwrap();
    let got = acks(&mut sub, 1).await;
    assert_eq!((got[0].node.as_str(), got[0].objects), ("edge-late", 1));
    let metrics = edge.admin("/metrics").await.text();
    assert_eq!(
        crate::support::metric_value(&metrics, "strata_bus_connected"),
        Some(1.0)
    );
    assert!(!edge.get("/p").send().await.is_hit());
}
