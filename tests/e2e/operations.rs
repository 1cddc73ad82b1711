//! Admin listener, metrics, access log.

use std::time::Duration;

use crate::support::{edge_for, EdgeBuilder, Reply, TestOrigin};

#[tokio::test]
async fn healthz_answers_ok() {
    let (_origin, edge) = edge_for(|| Reply::ok("x")).await;
    let r = edge.admin("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
    assert_eq!(edge.admin("/nope").await.status, 404);
}

#[tokio::test]
async fn metrics_count_requests_bytes_origin_and_cache() {
    let (_origin, edge) = edge_for(|| Reply::ok("0123456789").cc("max-age=60")).await;
    edge.get("/a").send().await;
    edge.get("/a").send().await;
    edge.eventually("fill stored", || edge.proxy().storage().stats().keys == 1)
        .await;
    let text = edge.admin("/metrics").await.text();
    for needle in [
        "strata_requests_total{cache_status=\"hit\"} 1",
        "strata_requests_total{cache_status=\"uri-miss\"} 1",
        "strata_origin_requests_total{outcome=\"ok\"} 1",
        "strata_response_bytes_total 20",
        "strata_cache_objects 1",
        "strata_request_duration_seconds_bucket",
        "strata_origin_first_byte_seconds_count 1",
        "strata_cache_evictions_total 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let dir = crate::support::scratch_dir("access-log");
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let origin = TestOrigin::fixed(|| Reply::ok("hello").cc("max-age=60")).await;
    let p = path.clone();
    let edge = EdgeBuilder::new(&origin.url())
        .config(move |c| c.log.access = p.display().to_string())
        .start()
        .await;
    edge.get("/one?q=1").send().await;
    edge.get("/one?q=1").send().await;
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["path"], "/one");
    assert_eq!(first["host"], "example.com");
    assert_eq!(first["status"], 200);
    assert_eq!(first["cache_status"], "uri-miss");
    assert_eq!(first["bytes"], 5);
    assert_eq!(first["upstream"], origin.addr.to_string());
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["cache_status"], "hit");
    assert!(second["upstream"].is_null());
}

#[tokio::test]
async fn memory_tier_stays_within_its_byte_budget() {
    let origin = TestOrigin::fixed(|| Reply::ok(vec![b'z'; 100 * 1024]).cc("max-age=600")).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            c.cache.size.0 = 2 << 20;
            c.cache.max_object_size.0 = 1 << 20;
        })
        .start()
        .await;
    for i in 0..60 {
        edge.get(&format!("/obj/{i}")).send().await;
    }
    edge.eventually("fills done", || origin.count() == 60).await;
    let stats = edge.proxy().storage().stats();
    assert!(stats.bytes <= 2 << 20, "{stats:?}");
    assert!(stats.evictions > 0, "{stats:?}");
}
