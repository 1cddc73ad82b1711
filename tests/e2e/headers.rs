//! Fields every response carries (RFC 9211 Cache-Status, Via), hop-by-hop handling
//! (RFC 9110 §7.6.1), loop prevention (RFC 8586), RFC 5861 stale serving.

use std::time::Duration;

use crate::support::{edge_for, EdgeBuilder, Reply, TestOrigin};

#[tokio::test]
async fn rfc9211_2_cache_status_names_this_node_on_every_response() {
    let (_origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=60")).await;
    // The origin's Date has whole-second resolution, so the age (and the ttl) may be off by 1.
    let miss = edge.get("/a").send().await;
    let ttl = miss.ttl().expect("ttl");
    assert!((59..=60).contains(&ttl), "{}", miss.cache_status());
    assert_eq!(
        miss.cache_status(),
        format!("edge-test; fwd=uri-miss; fwd-status=200; ttl={ttl}; stored")
    );
    let hit = edge.get("/a").send().await;
    let ttl = hit.ttl().expect("ttl");
    assert!((59..=60).contains(&ttl), "{}", hit.cache_status());
    assert_eq!(hit.cache_status(), format!("edge-test; hit; ttl={ttl}"));
    // Errors too.
    let err = edge.get("/a").header("cdn-loop", "edge-test").send().await;
    assert!(
        err.cache_status().starts_with("edge-test"),
        "{}",
        err.cache_status()
    );
}

#[tokio::test]
async fn rfc9211_2_upstream_cache_status_is_kept_and_ours_appended() {
    let (_origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("max-age=60")
            .header("cache-status", "origin-cache; hit")
    })
    .await;
    let r = edge.get("/a").send().await;
    let all: Vec<_> = r
        .headers
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(all.first().map(String::as_str), Some("origin-cache; hit"));
    assert!(all.last().unwrap().starts_with("edge-test"));
}

#[tokio::test]
async fn rfc9110_7_6_3_via_is_added_both_ways() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=60")).await;
    let r = edge
        .get("/a")
        .header("via", "1.1 client-proxy")
        .send()
        .await;
    assert_eq!(r.header("via"), Some("1.1 edge-test"));
    assert_eq!(
        origin.last().header("via"),
        Some("1.1 client-proxy, 1.1 edge-test")
    );
}

#[tokio::test]
async fn rfc9110_7_6_1_hop_by_hop_fields_are_not_forwarded_upstream() {
    let (origin, edge) = edge_for(|| Reply::ok("x")).await;
    edge.get("/a")
        .header("connection", "x-private-hop")
        .header("x-private-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .send()
        .await;
    let seen = origin.last();
    assert_eq!(seen.header("x-private-hop"), None);
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(seen.header("te"), None);
}

#[tokio::test]
async fn rfc9110_7_6_1_hop_by_hop_fields_are_not_returned_or_stored() {
    let (_origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("max-age=60")
            .header("connection", "x-origin-hop")
            .header("x-origin-hop", "1")
            .header("keep-alive", "timeout=9")
    })
    .await;
    for _ in 0..2 {
        let r = edge.get("/a").send().await;
        assert_eq!(r.header("x-origin-hop"), None);
        assert_eq!(r.header("keep-alive"), None);
    }
}

#[tokio::test]
async fn rfc8586_2_cdn_loop_is_added_to_upstream_requests() {
    let (origin, edge) = edge_for(|| Reply::ok("x")).await;
    edge.get("/a").header("cdn-loop", "other-cdn").send().await;
    assert_eq!(
        origin.last().header("cdn-loop"),
        Some("other-cdn, edge-test")
    );
}

#[tokio::test]
async fn rfc8586_2_request_that_already_passed_this_node_is_refused_508() {
    let (origin, edge) = edge_for(|| Reply::ok("x")).await;
    let r = edge
        .get("/a")
        .header("cdn-loop", "other, edge-test; v=1")
        .send()
        .await;
    assert_eq!(r.status, 508);
    assert!(r.cache_status().contains("loop-detected"));
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn rfc8586_misconfigured_self_origin_answers_508_not_recursion() {
    // An edge whose origin is itself: the second hop sees its own CDN-Loop entry.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let edge = EdgeBuilder::new(&format!("http://{addr}"))
        .config(|c| c.listen.http = vec![addr])
        .start()
        .await;
    let r = edge.get("/a").send().await;
    assert_eq!(r.status, 508);
}

#[tokio::test]
async fn rfc5861_3_stale_while_revalidate_serves_stale_and_refreshes_once() {
    // The first copy arrives stale (age 5 > max-age 1); the refreshed one is fresh.
    let origin = TestOrigin::start(|_, n| {
        if n == 1 {
            Reply::ok("v1")
                .cc("max-age=1, stale-while-revalidate=60")
                .header("age", "5")
        } else {
            Reply::ok(format!("v{n}")).cc("max-age=60")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    assert_eq!(edge.get("/a").send().await.text(), "v1");
    // Stale (age 5 > 1) but within the window: served at once, from the cache.
    let mut stale = Vec::new();
    for _ in 0..10 {
        stale.push(edge.get("/a").send().await);
    }
    assert!(stale.iter().all(|r| r.is_hit()));
    assert!(
        stale[0].cache_status().contains("stale-while-revalidate"),
        "{}",
        stale[0].cache_status()
    );
    assert_eq!(stale[0].text(), "v1");
    // The background revalidation replaces the object, and no request waited for it.
    edge.eventually("background refresh", || origin.count() >= 2)
        .await;
    let mut refreshed = edge.get("/a").send().await;
    for _ in 0..200 {
        if refreshed.text() == "v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        refreshed = edge.get("/a").send().await;
    }
    assert_eq!(refreshed.text(), "v2");
    assert!(refreshed.is_hit());
    assert_eq!(origin.count(), 2, "exactly one background revalidation");
}

#[tokio::test]
async fn rfc5861_4_stale_if_error_serves_stale_when_origin_fails() {
    let origin = TestOrigin::start(|_, n| {
        if n == 1 {
            Reply::ok("good")
                .cc("max-age=1, stale-if-error=600")
                .header("age", "5")
                .header("etag", "\"g\"")
        } else {
            Reply::status(503)
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/a").send().await;
    let r = edge.get("/a").send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "good");
    assert!(
        r.cache_status().contains("stale-if-error"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test]
async fn rfc5861_4_without_stale_if_error_the_error_is_returned() {
    let origin = TestOrigin::start(|_, n| {
        if n == 1 {
            Reply::ok("good")
                .cc("max-age=1")
                .header("age", "5")
                .header("etag", "\"g\"")
        } else {
            Reply::status(503)
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/a").send().await;
    assert_eq!(edge.get("/a").send().await.status, 503);
}

#[tokio::test]
async fn service_stale_if_error_grace_applies_to_connection_failures() {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("good")
            .cc("max-age=1")
            .header("age", "5")
            .header("etag", "\"g\"")
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            c.services[0].stale_if_error =
                Some(strata_proxy::config::Seconds(Duration::from_secs(300)))
        })
        .start()
        .await;
    edge.get("/a").send().await;
    drop(origin);
    // The origin is gone: connect fails, the stale copy answers.
    let r = edge.get("/a").send().await;
    assert_eq!(r.status, 200);
    assert!(
        r.cache_status().contains("stale-if-error"),
        "{}",
        r.cache_status()
    );
}
