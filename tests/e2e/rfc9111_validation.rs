//! RFC 9111 §4.3 (validation), RFC 9110 §13 (conditional requests), §14 (ranges), HEAD.

use crate::support::{edge_for, EdgeBuilder, Reply, TestOrigin};

#[tokio::test]
async fn rfc9111_4_3_1_expired_entry_is_revalidated_with_its_validators() {
    let origin = TestOrigin::start(|req, _| {
        if req.header("if-none-match") == Some("\"v1\"") {
            Reply::status(304).header("etag", "\"v1\"")
        } else {
            Reply::ok("body")
                .cc("max-age=0")
                .header("etag", "\"v1\"")
                .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/a").send().await;
    let second = edge.get("/a").send().await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "body");
    assert!(
        second.cache_status().contains("fwd=stale"),
        "{}",
        second.cache_status()
    );
    assert!(
        second.cache_status().contains("fwd-status=304"),
        "{}",
        second.cache_status()
    );
    let seen = origin.last();
    assert_eq!(seen.header("if-none-match"), Some("\"v1\""));
    assert_eq!(
        seen.header("if-modified-since"),
        Some("Mon, 01 Jan 2024 00:00:00 GMT")
    );
}

#[tokio::test]
async fn rfc9111_4_3_4_not_modified_refreshes_stored_headers_and_freshness() {
    let origin = TestOrigin::start(|req, _| {
        if req.header("if-none-match").is_some() {
            Reply::status(304)
                .header("etag", "\"v1\"")
                .cc("max-age=60")
                .header("x-version", "2")
        } else {
            Reply::ok("body")
                .cc("max-age=0")
                .header("etag", "\"v1\"")
                .header("x-version", "1")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    assert_eq!(edge.get("/a").send().await.header("x-version"), Some("1"));
    let refreshed = edge.get("/a").send().await;
    assert_eq!(refreshed.header("x-version"), Some("2"));
    assert_eq!(refreshed.text(), "body");
    assert_eq!(refreshed.header("content-length"), Some("4"));
    let hit = edge.get("/a").send().await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("x-version"), Some("2"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_4_3_4_not_modified_that_selects_nothing_is_retried_unconditionally() {
    let origin = TestOrigin::start(|req, n| {
        if req.header("if-none-match").is_some() {
            Reply::status(304).header("etag", "\"other\"")
        } else {
            Reply::ok(format!("body{n}"))
                .cc("max-age=0")
                .header("etag", "\"v1\"")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/a").send().await;
    let r = edge.get("/a").send().await;
    // The 304 does not select our stored response; the client did not ask for a 304.
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body3");
    assert_eq!(origin.last().header("if-none-match"), None);
}

#[tokio::test]
async fn rfc9111_4_3_4_refresh_computes_age_from_the_304() {
    let origin = TestOrigin::start(|req, _| {
        if req.header("if-none-match").is_some() {
            Reply::status(304).header("etag", "\"v\"").cc("max-age=60")
        } else {
            Reply::ok("b")
                .cc("max-age=60")
                .header("etag", "\"v\"")
                .header("age", "100")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/a").send().await;
    let refreshed = edge.get("/a").send().await;
    assert!(
        matches!(refreshed.header("age"), Some("0") | Some("1")),
        "the old Age: 100 must not survive the refresh: {:?}",
        refreshed.header("age")
    );
    assert!(edge.get("/a").send().await.is_hit());
}

#[tokio::test]
async fn request_no_store_revalidation_does_not_evict_the_stored_copy() {
    let origin = TestOrigin::start(|req, _| {
        if req.header("if-none-match").is_some() {
            Reply::status(304).header("etag", "\"v\"")
        } else {
            Reply::ok("b").cc("max-age=60").header("etag", "\"v\"")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/a").send().await;
    let r = edge
        .get("/a")
        .header("cache-control", "no-cache, no-store")
        .send()
        .await;
    assert_eq!(r.text(), "b");
    assert!(
        edge.get("/a").send().await.is_hit(),
        "a client's no-store must not evict the object for others"
    );
}

#[tokio::test]
async fn authorized_request_does_not_evict_or_mark_hit_for_pass() {
    let (origin, edge) = crate::support::edge_for(|| Reply::ok("shared").cc("max-age=60")).await;
    edge.get("/a").send().await;
    edge.get("/a")
        .header("authorization", "Bearer x")
        .header("cache-control", "no-cache")
        .send()
        .await;
    let r = edge.get("/a").send().await;
    assert!(r.is_hit(), "{}", r.cache_status());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9110_8_6_stored_204_has_no_content_length() {
    let (_origin, edge) = crate::support::edge_for(|| Reply::status(204).cc("max-age=60")).await;
    edge.get("/a").send().await;
    let r = edge.get("/a").send().await;
    assert!(r.is_hit());
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-length"), None);
}

#[tokio::test]
async fn rfc9111_4_3_3_changed_representation_replaces_stored_one() {
    let origin = TestOrigin::start(|_, n| {
        Reply::ok(format!("v{n}"))
            .cc("max-age=0")
            .header("etag", &format!("\"{n}\""))
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    assert_eq!(edge.get("/a").send().await.text(), "v1");
    let r = edge.get("/a").send().await;
    assert_eq!(r.text(), "v2");
    assert!(r.cache_status().contains("stored"));
}

#[tokio::test]
async fn rfc9111_5_2_2_4_no_cache_response_is_validated_every_time() {
    let origin = TestOrigin::start(|req, _| {
        if req.header("if-none-match").is_some() {
            Reply::status(304).header("etag", "\"v\"")
        } else {
            Reply::ok("b").cc("no-cache").header("etag", "\"v\"")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    for _ in 0..3 {
        assert_eq!(edge.get("/a").send().await.text(), "b");
    }
    assert_eq!(origin.count(), 3);
    assert!(origin.seen()[1..]
        .iter()
        .all(|s| s.header("if-none-match") == Some("\"v\"")));
}

#[tokio::test]
async fn rfc9110_13_1_2_client_if_none_match_answered_304_from_cache() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("body")
            .cc("max-age=60")
            .header("etag", "W/\"abc\"")
    })
    .await;
    edge.get("/a").send().await;
    let r = edge
        .get("/a")
        .header("if-none-match", "\"abc\"")
        .send()
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("W/\"abc\""));
    assert!(r.is_hit());
    let r = edge
        .get("/a")
        .header("if-none-match", "\"zzz\"")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9110_13_1_3_client_if_modified_since_answered_304_from_cache() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("body")
            .cc("max-age=60")
            .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
    })
    .await;
    edge.get("/a").send().await;
    let r = edge
        .get("/a")
        .header("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")
        .send()
        .await;
    assert_eq!(r.status, 304);
    let r = edge
        .get("/a")
        .header("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9110_13_1_2_client_conditional_on_a_miss_is_not_forwarded() {
    let (origin, edge) =
        edge_for(|| Reply::ok("body").cc("max-age=60").header("etag", "\"abc\"")).await;
    let r = edge
        .get("/a")
        .header("if-none-match", "\"abc\"")
        .send()
        .await;
    assert_eq!(r.status, 304, "answered from the object we just fetched");
    assert_eq!(
        origin.last().header("if-none-match"),
        None,
        "the fill fetched the full object"
    );
    assert!(edge.get("/a").send().await.is_hit());
}

#[tokio::test]
async fn rfc9110_9_3_2_head_is_served_from_cached_get() {
    let (origin, edge) = edge_for(|| Reply::ok("0123456789").cc("max-age=60")).await;
    edge.get("/a").send().await;
    let r = edge.head("/a").send().await;
    assert!(r.is_hit());
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9110_9_3_2_head_miss_fills_the_cache_for_get() {
    let (origin, edge) = edge_for(|| Reply::ok("0123456789").cc("max-age=60")).await;
    let r = edge.head("/a").send().await;
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(origin.last().method, http::Method::GET);
    edge.eventually("fill stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    let r = edge.get("/a").send().await;
    assert!(r.is_hit());
    assert_eq!(r.text(), "0123456789");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9110_14_2_range_is_served_from_the_cache() {
    let (origin, edge) = edge_for(|| Reply::ok("0123456789").cc("max-age=60")).await;
    edge.get("/a").send().await;
    let r = edge.get("/a").header("range", "bytes=2-5").send().await;
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("content-length"), Some("4"));
    let r = edge.get("/a").header("range", "bytes=-3").send().await;
    assert_eq!(r.text(), "789");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9110_14_2_range_on_a_miss_fetches_the_whole_object() {
    let (origin, edge) = edge_for(|| Reply::ok("0123456789").cc("max-age=60")).await;
    let r = edge.get("/a").header("range", "bytes=0-1").send().await;
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "01");
    assert_eq!(origin.last().header("range"), None);
    edge.eventually("fill stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    assert_eq!(edge.get("/a").send().await.text(), "0123456789");
}

#[tokio::test]
async fn rfc9110_15_5_17_unsatisfiable_range_is_416() {
    let (_origin, edge) = edge_for(|| Reply::ok("0123456789").cc("max-age=60")).await;
    edge.get("/a").send().await;
    let r = edge.get("/a").header("range", "bytes=10-").send().await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
}

#[tokio::test]
async fn rfc9110_13_1_5_if_range_mismatch_gets_the_whole_object() {
    let (_origin, edge) = edge_for(|| {
        Reply::ok("0123456789")
            .cc("max-age=60")
            .header("etag", "\"v1\"")
    })
    .await;
    edge.get("/a").send().await;
    let r = edge
        .get("/a")
        .header("range", "bytes=0-1")
        .header("if-range", "\"v0\"")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 10);
    let r = edge
        .get("/a")
        .header("range", "bytes=0-1")
        .header("if-range", "\"v1\"")
        .send()
        .await;
    assert_eq!(r.status, 206);
}
