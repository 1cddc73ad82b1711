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
        issued_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        request: PurgeRequest {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        },
    };
    Bytes::from(serde_json::to_vec(&e).unwrap())
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
    let control = Bus::nats(&nats.url).await.unwrap();
    let mut sub = control.subscribe_acks().await.unwrap();
    let seq = control.publish_purge(event("p1", &["red"])).await.unwrap();
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
    let control = Bus::nats(&nats.url).await.unwrap();
    let mut sub = control.subscribe_acks().await.unwrap();
    let first = edge_on_bus(&origin, &nats, "edge-r").await;
    control
        .publish_purge(event("before", &["k"]))
        .await
        .unwrap();
    assert_eq!(acks(&mut sub, 1).await[0].id, "before");
    first.stop().await;
    // Two purges while the node is down.
    control
        .publish_purge(event("missed-1", &["k"]))
        .await
        .unwrap();
    control
        .publish_purge(event("missed-2", &["k"]))
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
    let control = Bus::nats(&nats.url).await.unwrap();
    let mut sub = control.subscribe_acks().await.unwrap();
    let _node = edge_on_bus(&origin, &nats, "edge-m").await;
    control
        .publish_purge(Bytes::from_static(b"not json"))
        .await
        .unwrap();
    control.publish_purge(event("good", &["k"])).await.unwrap();
    let got = acks(&mut sub, 2).await;
    assert!(
        got[0].error.as_deref().unwrap_or("").contains("malformed"),
        "{got:?}"
    );
    assert_eq!(got[1].id, "good");
    assert!(got[1].error.is_none());
}
