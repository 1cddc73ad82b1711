//! RFC 9111 §3 (storing responses), §4.1 (Vary), §4.4 (invalidation).

use http::Method;

use crate::support::{edge_for, EdgeBuilder, Reply, TestOrigin};

#[tokio::test]
async fn rfc9111_3_cacheable_response_is_stored_and_hit() {
    let (origin, edge) = edge_for(|| Reply::ok("hello").cc("max-age=60")).await;
    let first = edge.get("/a").send().await;
    assert_eq!(first.text(), "hello");
    assert!(
        first.cache_status().contains("fwd=uri-miss"),
        "{}",
        first.cache_status()
    );
    assert!(first.cache_status().contains("stored"));
    let second = edge.get("/a").send().await;
    assert!(second.is_hit(), "{}", second.cache_status());
    assert_eq!(second.text(), "hello");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9111_5_2_2_5_no_store_response_is_not_stored() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("no-store, max-age=60")).await;
    edge.get("/a").send().await;
    let second = edge.get("/a").send().await;
    assert!(!second.is_hit());
    assert!(
        second.cache_status().contains("no-store"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_2_7_private_response_is_not_stored_by_shared_cache() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("private, max-age=60")).await;
    edge.get("/a").send().await;
    edge.get("/a").send().await;
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_2_7_qualified_private_fields_are_not_stored() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("private=\"x-user\", max-age=60")
            .header("x-user", "alice")
    })
    .await;
    let first = edge.get("/a").send().await;
    assert_eq!(
        first.header("x-user"),
        Some("alice"),
        "the first client still gets it"
    );
    let second = edge.get("/a").send().await;
    assert!(second.is_hit());
    assert_eq!(second.header("x-user"), None);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9111_3_5_authorization_response_not_stored_without_permission() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=60")).await;
    edge.get("/a")
        .header("authorization", "Bearer t")
        .send()
        .await;
    let second = edge
        .get("/a")
        .header("authorization", "Bearer t")
        .send()
        .await;
    assert!(
        second.cache_status().contains("authorization"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_3_5_authorization_response_stored_with_s_maxage() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("s-maxage=60")).await;
    edge.get("/a")
        .header("authorization", "Bearer t")
        .send()
        .await;
    assert!(edge
        .get("/a")
        .header("authorization", "Bearer t")
        .send()
        .await
        .is_hit());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9111_5_2_1_5_request_no_store_prevents_storing() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=60")).await;
    edge.get("/a")
        .header("cache-control", "no-store")
        .send()
        .await;
    edge.get("/a").send().await;
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9110_15_1_non_heuristic_status_without_freshness_is_not_stored() {
    let (origin, edge) = edge_for(|| {
        Reply::status(302)
            .header("location", "/b")
            .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
    })
    .await;
    edge.get("/a").send().await;
    edge.get("/a").send().await;
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9110_15_1_explicitly_fresh_redirect_is_stored() {
    let (origin, edge) =
        edge_for(|| Reply::status(302).header("location", "/b").cc("max-age=60")).await;
    edge.get("/a").send().await;
    let second = edge.get("/a").send().await;
    assert_eq!(second.status, 302);
    assert!(second.is_hit());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn negative_caching_stores_404_for_configured_ttl() {
    let origin = TestOrigin::fixed(|| Reply::status(404).body("nope")).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            c.services[0].negative_ttl = Some(strata_proxy::config::Seconds(
                std::time::Duration::from_secs(30),
            ))
        })
        .start()
        .await;
    edge.get("/missing").send().await;
    let second = edge.get("/missing").send().await;
    assert_eq!(second.status, 404);
    assert!(second.is_hit(), "{}", second.cache_status());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn negative_caching_is_off_for_5xx_by_default() {
    let (origin, edge) = edge_for(|| Reply::status(503).body("down")).await;
    edge.get("/a").send().await;
    let second = edge.get("/a").send().await;
    assert_eq!(second.status, 503);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn set_cookie_response_is_not_stored_by_default() {
    let (origin, edge) =
        edge_for(|| Reply::ok("x").cc("max-age=60").header("set-cookie", "s=1")).await;
    edge.get("/a").send().await;
    let second = edge.get("/a").send().await;
    assert!(second.cache_status().contains("set-cookie"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_4_1_vary_stores_a_variant_per_selected_header() {
    let origin = TestOrigin::start(|req, _| {
        let lang = req.header("accept-language").unwrap_or("none").to_string();
        Reply::ok(lang)
            .cc("max-age=60")
            .header("vary", "Accept-Language")
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    assert_eq!(
        edge.get("/a")
            .header("accept-language", "en")
            .send()
            .await
            .text(),
        "en"
    );
    let fr = edge.get("/a").header("accept-language", "fr").send().await;
    assert_eq!(fr.text(), "fr");
    assert!(
        fr.cache_status().contains("fwd=vary-miss"),
        "{}",
        fr.cache_status()
    );
    let en = edge.get("/a").header("accept-language", "en").send().await;
    assert!(en.is_hit());
    assert_eq!(en.text(), "en");
    assert!(edge
        .get("/a")
        .header("accept-language", "fr")
        .send()
        .await
        .is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_4_1_vary_matches_normalised_accept_encoding() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("max-age=60")
            .header("vary", "accept-encoding")
    })
    .await;
    edge.get("/a")
        .header("accept-encoding", "gzip, br")
        .send()
        .await;
    assert!(edge
        .get("/a")
        .header("accept-encoding", "br,gzip")
        .send()
        .await
        .is_hit());
    assert!(edge
        .get("/a")
        .header("accept-encoding", "GZIP;q=1.0, br, identity;q=0")
        .send()
        .await
        .is_hit());
    assert!(!edge
        .get("/a")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_4_1_vary_star_is_never_reused() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=60").header("vary", "*")).await;
    edge.get("/a").send().await;
    let second = edge.get("/a").send().await;
    assert!(second.cache_status().contains("vary-star"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_4_4_successful_unsafe_method_invalidates_target_uri() {
    let origin = TestOrigin::start(|req, n| {
        if req.method == Method::POST {
            Reply::status(204)
        } else {
            Reply::ok(format!("v{n}")).cc("max-age=600")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    assert_eq!(edge.get("/doc").send().await.text(), "v1");
    assert!(edge.get("/doc").send().await.is_hit());
    let post = edge
        .request(Method::POST, "/doc")
        .body("update")
        .send()
        .await;
    assert_eq!(post.status, 204);
    assert!(
        post.cache_status().contains("fwd=method"),
        "{}",
        post.cache_status()
    );
    assert_eq!(origin.last().body, "update");
    let after = edge.get("/doc").send().await;
    assert!(!after.is_hit());
    assert_eq!(after.text(), "v3");
}

#[tokio::test]
async fn rfc9111_4_4_unsafe_method_invalidates_same_host_location() {
    let origin = TestOrigin::start(|req, n| {
        if req.method == Method::PUT {
            Reply::status(201)
                .header("location", "/other")
                .header("content-location", "http://elsewhere.test/x")
        } else {
            Reply::ok(format!("v{n}")).cc("max-age=600")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/other").send().await;
    assert!(edge.get("/other").send().await.is_hit());
    edge.request(Method::PUT, "/doc").send().await;
    assert!(!edge.get("/other").send().await.is_hit());
}

#[tokio::test]
async fn rfc9111_4_4_failed_unsafe_method_does_not_invalidate() {
    let origin = TestOrigin::start(|req, n| {
        if req.method == Method::DELETE {
            Reply::status(500)
        } else {
            Reply::ok(format!("v{n}")).cc("max-age=600")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    edge.get("/doc").send().await;
    edge.request(Method::DELETE, "/doc").send().await;
    assert!(edge.get("/doc").send().await.is_hit());
}

#[tokio::test]
async fn cache_key_normalises_query_and_strips_configured_parameters() {
    let origin = TestOrigin::fixed(|| Reply::ok("x").cc("max-age=60")).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.services[0].strip_query = vec!["utm_*".into(), "session".into()])
        .start()
        .await;
    edge.get("/p?b=2&a=1&utm_source=x").send().await;
    assert!(edge.get("/p?a=1&b=2").send().await.is_hit());
    assert!(edge
        .get("/p?a=1&session=zz&b=2&utm_medium=y")
        .send()
        .await
        .is_hit());
    assert!(!edge.get("/p?a=1&b=3").send().await.is_hit());
    assert_eq!(origin.count(), 2);
    // The origin is asked for what the key names: what is stored under `/p?a=1&b=2` must
    // be the answer to that, not to parameters the key leaves out.
    assert_eq!(origin.seen()[0].path_and_query, "/p?a=1&b=2");
}

#[tokio::test]
async fn host_is_part_of_the_cache_key() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=60")).await;
    edge.get("/a").header("host", "one.test").send().await;
    assert!(!edge
        .get("/a")
        .header("host", "two.test")
        .send()
        .await
        .is_hit());
    assert!(edge
        .get("/a")
        .header("host", "ONE.test")
        .send()
        .await
        .is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_4_4_unsafe_method_during_a_fill_keeps_the_old_body_out_of_the_cache() {
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let g = std::sync::Arc::clone(&gate);
    let origin = TestOrigin::start(move |req, n| {
        if req.method == Method::POST {
            return Reply::status(204);
        }
        let pieces = vec![
            crate::support::origin::Piece {
                data: bytes::Bytes::from(format!("v{n}-")),
                delay: std::time::Duration::ZERO,
                gate: None,
            },
            crate::support::origin::Piece {
                data: bytes::Bytes::from_static(b"end"),
                delay: std::time::Duration::ZERO,
                gate: Some(std::sync::Arc::clone(&g)),
            },
        ];
        Reply::ok("").cc("max-age=600").pieces(pieces)
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    let head = edge.get("/doc").send_head().await;
    // The GET's fill is in progress when the POST succeeds.
    assert_eq!(edge.request(Method::POST, "/doc").send().await.status, 204);
    gate.notify_one();
    let body = http_body_util::BodyExt::collect(head.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        body, "v1-end",
        "the client that asked still gets its answer"
    );
    gate.notify_one();
    let after = edge.get("/doc").send().await;
    assert!(
        !after.is_hit(),
        "the pre-POST body was not stored: {}",
        after.cache_status()
    );
}
