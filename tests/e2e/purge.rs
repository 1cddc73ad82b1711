//! Purge on one node through the admin listener (`POST /v1/purge`): every scope, soft purge,
//! "stored before issued_at" semantics, and the race with a fill in flight.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::support::origin::Piece;
use crate::support::{EdgeBuilder, Reply, TestOrigin};

/// An origin whose answers carry tags from the path (`/t/<tag>/...`) and change each time.
async fn tagged_origin() -> TestOrigin {
    TestOrigin::start(|req, n| {
        let tag = req.path().split('/').nth(2).unwrap_or("none").to_string();
        Reply::ok(format!("v{n}"))
            .cc("max-age=600")
            .header("surrogate-key", &format!("{tag} all-pages"))
            .header("etag", &format!("\"{n}\""))
    })
    .await
}

#[tokio::test]
async fn tag_purge_removes_every_object_carrying_the_tag_and_nothing_else() {
    let origin = tagged_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    for p in ["/t/red/1", "/t/red/2", "/t/blue/1"] {
        edge.get(p).send().await;
    }
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 3)
        .await;
    assert_eq!(edge.purge(r#"{"tags": ["red"]}"#).await, 2);
    assert!(!edge.get("/t/red/1").send().await.is_hit());
    assert!(!edge.get("/t/red/2").send().await.is_hit());
    assert!(edge.get("/t/blue/1").send().await.is_hit());
}

#[tokio::test]
async fn cache_tag_header_is_a_surrogate_key_too() {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("x")
            .cc("max-age=600")
            .header("cache-tag", "product-123,listing")
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/p").send().await;
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    assert_eq!(edge.purge(r#"{"tags": ["product-123"]}"#).await, 1);
    assert!(!edge.get("/p").send().await.is_hit());
}

#[tokio::test]
async fn url_purge_removes_all_variants_and_uses_the_key_rules() {
    let origin = TestOrigin::start(|req, _| {
        Reply::ok(req.header("accept-language").unwrap_or("-").to_string())
            .cc("max-age=600")
            .header("vary", "accept-language")
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.services[0].strip_query = vec!["utm_*".into()])
        .start()
        .await;
    edge.get("/doc?a=1")
        .header("accept-language", "en")
        .send()
        .await;
    edge.get("/doc?a=1")
        .header("accept-language", "fr")
        .send()
        .await;
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    // Same object: query order and stripped parameters do not matter.
    assert_eq!(
        edge.purge(r#"{"urls": ["http://example.com/doc?utm_source=x&a=1"]}"#)
            .await,
        2
    );
    assert!(!edge
        .get("/doc?a=1")
        .header("accept-language", "fr")
        .send()
        .await
        .is_hit());
}

#[tokio::test]
async fn prefix_purge_removes_only_under_the_prefix() {
    let origin = tagged_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    for p in ["/t/a/x", "/t/a/y", "/t/ab", "/u/1"] {
        edge.get(p).send().await;
    }
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 4)
        .await;
    assert_eq!(
        edge.purge(r#"{"prefixes": ["http://EXAMPLE.com:80/t/a/"]}"#)
            .await,
        2
    );
    assert!(edge.get("/t/ab").send().await.is_hit());
    assert!(edge.get("/u/1").send().await.is_hit());
    assert!(!edge.get("/t/a/x").send().await.is_hit());
}

#[tokio::test]
async fn purge_all() {
    let origin = tagged_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    for p in ["/t/a/1", "/t/b/2"] {
        edge.get(p).send().await;
    }
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 2)
        .await;
    assert_eq!(edge.purge(r#"{"all": true}"#).await, 2);
    assert_eq!(
        edge.purge(r#"{"all": true}"#).await,
        0,
        "replaying a purge is harmless"
    );
}

#[tokio::test]
async fn soft_purge_marks_stale_and_the_next_request_revalidates() {
    let origin = TestOrigin::start(|req, n| {
        if req.header("if-none-match").is_some() {
            Reply::status(304).header("etag", "\"1\"").cc("max-age=600")
        } else {
            Reply::ok(format!("v{n}"))
                .cc("max-age=600")
                .header("etag", "\"1\"")
                .header("surrogate-key", "page")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/p").send().await;
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    assert_eq!(edge.purge(r#"{"tags": ["page"], "soft": true}"#).await, 1);
    let r = edge.get("/p").send().await;
    assert_eq!(
        r.text(),
        "v1",
        "the body is kept and revalidated, not refetched"
    );
    assert!(
        r.cache_status().contains("fwd=stale"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.last().header("if-none-match"), Some("\"1\""));
    assert!(
        edge.get("/p").send().await.is_hit(),
        "fresh again after the 304"
    );
}

#[tokio::test]
async fn soft_purge_still_lets_stale_if_error_protect_the_origin() {
    let origin = TestOrigin::start(|_, n| {
        if n == 1 {
            Reply::ok("good")
                .cc("max-age=600, stale-if-error=600")
                .header("surrogate-key", "k")
                .header("etag", "\"g\"")
        } else {
            Reply::status(503)
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/p").send().await;
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    edge.purge(r#"{"tags": ["k"], "soft": true}"#).await;
    let r = edge.get("/p").send().await;
    assert_eq!(r.text(), "good");
    assert!(
        r.cache_status().contains("stale-if-error"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test]
async fn fill_in_flight_when_the_purge_lands_is_not_served_as_fresh_afterwards() {
    let gate = Arc::new(Notify::new());
    let g = Arc::clone(&gate);
    let origin = TestOrigin::start(move |_, n| {
        Reply::ok("")
            .cc("max-age=600")
            .header("surrogate-key", "live")
            .pieces(vec![
                Piece {
                    data: Bytes::from(format!("v{n}-")),
                    delay: Duration::ZERO,
                    gate: None,
                },
                Piece {
                    data: Bytes::from_static(b"end"),
                    delay: Duration::ZERO,
                    gate: if n == 1 { Some(Arc::clone(&g)) } else { None },
                },
            ])
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    // The fill has its response head (so its object exists) but not its whole body.
    let head = edge.get("/x").send_head().await;
    assert_eq!(
        edge.purge(r#"{"tags": ["live"]}"#).await,
        0,
        "nothing stored yet"
    );
    gate.notify_one();
    let body = http_body_util::BodyExt::collect(head.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "v1-end");
    let after = edge.get("/x").send().await;
    assert!(!after.is_hit(), "{}", after.cache_status());
    assert!(
        !after.cache_status().contains("collapsed"),
        "a new request must not join the purged fill"
    );
    assert_eq!(after.text(), "v2-end");
}

#[tokio::test]
async fn bad_purge_requests_get_400_with_the_reason_and_change_nothing() {
    let origin = tagged_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/t/a/1").send().await;
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    for (body, needle) in [
        (r#"{"tagz": ["a"]}"#, "unknown field"),
        (r#"{}"#, "nothing to purge"),
        (r#"{"urls": ["not a url"]}"#, "urls[0]"),
        (r#"{"prefixes": ["ftp://x/"]}"#, "prefixes[0]"),
        (r#"{"tags": ["a"], "patterns": ["t/*"]}"#, "patterns[0]"),
        ("not json", "invalid purge request"),
    ] {
        let r = edge.admin_post("/v1/purge", body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().contains(needle), "{body}: {}", r.text());
    }
    assert!(
        edge.get("/t/a/1").send().await.is_hit(),
        "nothing was applied"
    );
}

#[tokio::test]
async fn pattern_purge_applies_at_once_and_is_swept() {
    let origin = tagged_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    for p in ["/t/a/x.jpg", "/t/a/y.png", "/t/b/z.jpg"] {
        edge.get(p).send().await;
    }
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 3)
        .await;
    let r = edge
        .admin_post(
            "/v1/purge",
            r#"{"patterns": ["/t/a/*.jpg", "http://other.test/t/b/*"]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"sweeping\":true"), "{}", r.text());
    // In force immediately, before or after the sweep.
    assert!(!edge.get("/t/a/x.jpg").send().await.is_hit());
    assert!(edge.get("/t/a/y.png").send().await.is_hit());
    assert!(
        edge.get("/t/b/z.jpg").send().await.is_hit(),
        "the second pattern names another host"
    );
}

fn purge_method(allow: &[&str]) -> impl FnOnce(&mut strata_proxy::config::NodeConfig) {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    move |c| {
        c.purge.http_method = true;
        c.purge.allow = allow;
    }
}

#[tokio::test]
async fn purge_method_is_off_by_default() {
    let origin = tagged_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/t/a/1").send().await;
    let r = edge
        .request(http::Method::from_bytes(b"PURGE").unwrap(), "/t/a/1")
        .send()
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(origin.count(), 1, "never forwarded to the origin");
}

#[tokio::test]
async fn purge_method_from_an_allowed_network_purges_the_url_or_tags() {
    let origin = tagged_origin().await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(purge_method(&["127.0.0.0/8"]))
        .start()
        .await;
    for p in ["/t/a/1", "/t/b/2"] {
        edge.get(p).send().await;
    }
    edge.eventually("stored", || edge.proxy().storage().stats().keys == 2)
        .await;
    let purge = http::Method::from_bytes(b"PURGE").unwrap();
    let r = edge.request(purge.clone(), "/t/a/1").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"objects\":1"), "{}", r.text());
    assert!(!edge.get("/t/a/1").send().await.is_hit());
    let r = edge
        .request(purge, "/")
        .header("surrogate-key", "b")
        .send()
        .await;
    assert!(r.text().contains("\"objects\":1"), "{}", r.text());
    assert!(!edge.get("/t/b/2").send().await.is_hit());
}

#[tokio::test]
async fn purge_method_from_other_networks_is_403() {
    let origin = tagged_origin().await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(purge_method(&["10.0.0.0/8"]))
        .start()
        .await;
    edge.get("/t/a/1").send().await;
    let r = edge
        .request(http::Method::from_bytes(b"PURGE").unwrap(), "/t/a/1")
        .send()
        .await;
    assert_eq!(r.status, 403);
    assert!(edge.get("/t/a/1").send().await.is_hit());
}
