//! Limits and upstream failures: clear 4xx for bad requests, 502/504 with a reason.

use std::time::Duration;

use crate::support::{edge_for, EdgeBuilder, Reply, TestOrigin};
use strata_proxy::config::Seconds;

#[tokio::test]
async fn uri_longer_than_limit_is_414() {
    let (origin, edge) = edge_for(|| Reply::ok("x")).await;
    let long = format!("/{}", "a".repeat(9000));
    let r = edge.get(&long).send().await;
    assert_eq!(r.status, 414);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn header_section_larger_than_limit_is_431() {
    let (origin, edge) = edge_for(|| Reply::ok("x")).await;
    let r = edge
        .get("/a")
        .header("x-big", &"b".repeat(40 * 1024))
        .send()
        .await;
    assert_eq!(r.status, 431);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn too_many_header_fields_is_431() {
    let (origin, edge) = edge_for(|| Reply::ok("x")).await;
    let mut req = edge.get("/a");
    for i in 0..150 {
        req = req.header(&format!("x-h{i}"), "1");
    }
    assert_eq!(req.send().await.status, 431);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn unknown_host_is_421() {
    let origin = TestOrigin::fixed(|| Reply::ok("x")).await;
    let edge = EdgeBuilder::from_toml(&format!(
        "[[service]]\nname = \"s\"\nhosts = [\"known.test\"]\norigins = [\"{}\"]\n[log]\naccess = \"off\"\n",
        origin.url()
    ))
    .start()
    .await;
    assert_eq!(
        edge.get("/")
            .header("host", "known.test")
            .send()
            .await
            .status,
        200
    );
    let r = edge.get("/").header("host", "unknown.test").send().await;
    assert_eq!(r.status, 421);
    assert!(r.cache_status().contains("unknown-host"));
}

#[tokio::test]
async fn refused_origin_connection_is_502_with_reason() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let edge = EdgeBuilder::new(&format!("http://{dead}")).start().await;
    let r = edge.get("/a").send().await;
    assert_eq!(r.status, 502);
    assert!(
        r.cache_status().contains("detail=connect-failed"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test]
async fn origin_slower_than_first_byte_timeout_is_504_with_reason() {
    let origin = TestOrigin::fixed(|| Reply::ok("late").delay(Duration::from_secs(5))).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.limits.upstream_first_byte_timeout = Seconds(Duration::from_millis(200)))
        .start()
        .await;
    let r = edge.get("/a").send().await;
    assert_eq!(r.status, 504);
    assert!(
        r.cache_status().contains("detail=first-byte-timeout"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test]
async fn failover_to_second_origin_when_first_refuses() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let origin = TestOrigin::fixed(|| Reply::ok("from-second")).await;
    let edge = EdgeBuilder::new(&format!("http://{dead}"))
        .config(|c| {
            c.services[0]
                .origins
                .push(strata_proxy::config::OriginEntry::Url(origin.url()))
        })
        .start()
        .await;
    assert_eq!(edge.get("/a").send().await.text(), "from-second");
}
