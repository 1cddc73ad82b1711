//! RFC 9111 §4.2 (freshness, age) and §5.2.1 (request directives), RFC 9213 targeted fields.

use std::time::Duration;

use crate::support::{edge_for, EdgeBuilder, Reply, TestOrigin};

fn http_date(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    httpdate::fmt_http_date(t)
}

#[tokio::test]
async fn rfc9111_4_2_1_s_maxage_takes_precedence_over_max_age() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=0, s-maxage=60")).await;
    edge.get("/a").send().await;
    let hit = edge.get("/a").send().await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9111_4_2_1_expires_gives_freshness_without_max_age() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .header("date", &http_date(0))
            .header("expires", &http_date(120))
    })
    .await;
    edge.get("/a").send().await;
    let hit = edge.get("/a").send().await;
    assert!(hit.is_hit());
    let ttl = hit.ttl().expect("ttl");
    assert!((100..=120).contains(&ttl), "ttl {ttl}");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9111_5_3_invalid_expires_means_already_expired() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .header("expires", "0")
            .header("etag", "\"e\"")
    })
    .await;
    edge.get("/a").send().await;
    assert!(!edge.get("/a").send().await.is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_4_2_2_heuristic_freshness_from_last_modified() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .header("date", &http_date(0))
            .header("last-modified", &http_date(-10 * 86_400))
    })
    .await;
    edge.get("/a").send().await;
    let hit = edge.get("/a").send().await;
    assert!(hit.is_hit());
    let ttl = hit.ttl().expect("ttl");
    // 10% of 10 days = 1 day, the default cap.
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9111_4_2_2_no_heuristic_freshness_for_non_heuristic_status() {
    let (origin, edge) = edge_for(|| {
        Reply::status(307)
            .header("location", "/x")
            .header("last-modified", &http_date(-86_400))
    })
    .await;
    edge.get("/a").send().await;
    edge.get("/a").send().await;
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_4_2_3_age_includes_upstream_age() {
    let (_origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=1000").header("age", "100")).await;
    let first = edge.get("/a").send().await;
    let age: u64 = first.header("age").unwrap().parse().unwrap();
    assert!((100..=102).contains(&age), "age {age}");
    let hit = edge.get("/a").send().await;
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(age >= 100);
    assert!(
        hit.cache_status().contains("ttl=9"),
        "{}",
        hit.cache_status()
    );
}

#[tokio::test]
async fn rfc9111_5_1_age_header_is_set_on_every_cached_response() {
    let (_origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=60")).await;
    edge.get("/a").send().await;
    let hit = edge.get("/a").send().await;
    // Whole-second Date resolution: 0 or 1.
    assert!(
        matches!(hit.header("age"), Some("0") | Some("1")),
        "{:?}",
        hit.header("age")
    );
}

#[tokio::test]
async fn rfc9111_4_2_arriving_stale_is_not_served_without_validation() {
    // max-age 10 but already 15 s old: stale on arrival.
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("max-age=10")
            .header("age", "15")
            .header("etag", "\"v\"")
    })
    .await;
    edge.get("/a").send().await;
    let second = edge.get("/a").send().await;
    assert!(
        second.cache_status().contains("fwd=stale"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_1_2_max_stale_accepts_stale_response() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=10").header("age", "15")).await;
    edge.get("/a").send().await;
    let stale_ok = edge
        .get("/a")
        .header("cache-control", "max-stale=60")
        .send()
        .await;
    assert!(stale_ok.is_hit(), "{}", stale_ok.cache_status());
    assert!(
        stale_ok.cache_status().contains("ttl=-"),
        "{}",
        stale_ok.cache_status()
    );
    let too_stale = edge
        .get("/a")
        .header("cache-control", "max-stale=2")
        .send()
        .await;
    assert!(!too_stale.is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_2_2_must_revalidate_overrides_max_stale() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("max-age=10, must-revalidate")
            .header("age", "15")
            .header("etag", "\"v\"")
    })
    .await;
    edge.get("/a").send().await;
    let r = edge
        .get("/a")
        .header("cache-control", "max-stale")
        .send()
        .await;
    assert!(!r.is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_2_8_proxy_revalidate_overrides_max_stale_in_shared_cache() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("max-age=10, proxy-revalidate")
            .header("age", "15")
            .header("etag", "\"v\"")
    })
    .await;
    edge.get("/a").send().await;
    edge.get("/a")
        .header("cache-control", "max-stale")
        .send()
        .await;
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_1_3_min_fresh() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=100").header("age", "50")).await;
    edge.get("/a").send().await;
    assert!(edge
        .get("/a")
        .header("cache-control", "min-fresh=10")
        .send()
        .await
        .is_hit());
    let r = edge
        .get("/a")
        .header("cache-control", "min-fresh=80")
        .send()
        .await;
    assert!(
        r.cache_status().contains("fwd=request"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_1_1_request_max_age() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=100").header("age", "50")).await;
    edge.get("/a").send().await;
    assert!(edge
        .get("/a")
        .header("cache-control", "max-age=60")
        .send()
        .await
        .is_hit());
    let r = edge
        .get("/a")
        .header("cache-control", "max-age=10")
        .send()
        .await;
    assert!(!r.is_hit());
    assert!(
        r.cache_status().contains("fwd=request"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_1_4_request_no_cache_forces_validation() {
    let (origin, edge) =
        edge_for(|| Reply::ok("x").cc("max-age=100").header("etag", "\"v\"")).await;
    edge.get("/a").send().await;
    let r = edge
        .get("/a")
        .header("cache-control", "no-cache")
        .send()
        .await;
    assert!(
        r.cache_status().contains("fwd=request"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.last().header("if-none-match"), Some("\"v\""));
}

#[tokio::test]
async fn rfc9111_5_4_pragma_no_cache_without_cache_control() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=100")).await;
    edge.get("/a").send().await;
    edge.get("/a").header("pragma", "no-cache").send().await;
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9111_5_2_1_7_only_if_cached_answers_504_when_absent() {
    let (origin, edge) = edge_for(|| Reply::ok("x").cc("max-age=100")).await;
    let r = edge
        .get("/a")
        .header("cache-control", "only-if-cached")
        .send()
        .await;
    assert_eq!(r.status, 504);
    assert!(r.cache_status().contains("only-if-cached"));
    assert_eq!(origin.count(), 0);
    edge.get("/a").send().await;
    let r = edge
        .get("/a")
        .header("cache-control", "only-if-cached")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert!(r.is_hit());
}

#[tokio::test]
async fn rfc9213_cdn_cache_control_overrides_cache_control_and_goes_on_to_the_next_cdn() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("no-store")
            .header("cdn-cache-control", "max-age=60")
    })
    .await;
    let first = edge.get("/a").send().await;
    assert_eq!(first.header("cdn-cache-control"), Some("max-age=60"));
    assert_eq!(
        first.header("cache-control"),
        Some("no-store"),
        "Cache-Control still reaches clients"
    );
    let hit = edge.get("/a").send().await;
    assert!(hit.is_hit());
    assert_eq!(hit.header("cdn-cache-control"), Some("max-age=60"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rfc9213_cdn_cache_control_is_removed_when_configured() {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("x")
            .cc("no-store")
            .header("cdn-cache-control", "max-age=60")
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.cache.strip_cdn_cache_control = true)
        .start()
        .await;
    edge.get("/a").send().await;
    let hit = edge.get("/a").send().await;
    assert!(hit.is_hit());
    assert_eq!(hit.header("cdn-cache-control"), None);
}

#[tokio::test]
async fn rfc9213_cdn_cache_control_can_forbid_what_cache_control_allows() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("max-age=60")
            .header("cdn-cache-control", "no-store")
    })
    .await;
    edge.get("/a").send().await;
    edge.get("/a").send().await;
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rfc9213_invalid_cdn_cache_control_is_ignored() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("max-age=60")
            .header("cdn-cache-control", "max-age=\"broken")
    })
    .await;
    edge.get("/a").send().await;
    let hit = edge.get("/a").send().await;
    assert!(hit.is_hit());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn surrogate_control_overrides_cache_control_and_is_removed() {
    let (origin, edge) = edge_for(|| {
        Reply::ok("x")
            .cc("private")
            .header("surrogate-control", "max-age=60")
    })
    .await;
    edge.get("/a").send().await;
    let hit = edge.get("/a").send().await;
    assert!(hit.is_hit());
    assert_eq!(hit.header("surrogate-control"), None);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn rule_ttl_override_replaces_origin_freshness() {
    let origin = TestOrigin::fixed(|| Reply::ok("x").cc("max-age=0")).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            c.services[0].rules.push(strata_proxy::config::RuleConfig {
                ttl: Some(strata_proxy::config::Seconds(Duration::from_secs(300))),
                bypass: false,
                ..strata_proxy::config::RuleConfig::prefix("/static/")
            })
        })
        .start()
        .await;
    edge.get("/static/a.css").send().await;
    let hit = edge.get("/static/a.css").send().await;
    assert!(hit.is_hit());
    let ttl = hit.ttl().expect("ttl");
    assert!((299..=300).contains(&ttl), "{}", hit.cache_status());
    edge.get("/dynamic").send().await;
    assert!(!edge.get("/dynamic").send().await.is_hit());
}

#[tokio::test]
async fn rule_bypass_never_uses_the_cache() {
    let origin = TestOrigin::fixed(|| Reply::ok("x").cc("max-age=60")).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            c.services[0].rules.push(strata_proxy::config::RuleConfig {
                ttl: None,
                bypass: true,
                ..strata_proxy::config::RuleConfig::prefix("/api/")
            })
        })
        .start()
        .await;
    edge.get("/api/x").send().await;
    let r = edge.get("/api/x").send().await;
    assert!(
        r.cache_status().contains("fwd=bypass"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.count(), 2);
}
