//! Origin selection and protection: priorities, weights, failover, circuit breakers,
//! active probes, connection limits.

use std::sync::Arc;
use std::time::Duration;

use strata_proxy::config::{OriginConfig, OriginEntry, Seconds};

use crate::support::{Edge, EdgeBuilder, Reply, TestOrigin};

fn entry(origin: &TestOrigin, priority: u32, weight: u32) -> OriginEntry {
    OriginEntry::Detailed(OriginConfig {
        url: origin.url(),
        priority,
        weight,
        max_connections: None,
        tls_verify: true,
        ca_file: None,
        http2: true,
    })
}

fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test]
async fn lower_priority_number_is_preferred_and_higher_is_failover() {
    let primary = TestOrigin::fixed(|| Reply::ok("primary")).await;
    let backup = TestOrigin::fixed(|| Reply::ok("backup")).await;
    let edge = EdgeBuilder::new(&primary.url())
        .config(|c| c.services[0].origins = vec![entry(&backup, 2, 1), entry(&primary, 1, 1)])
        .start()
        .await;
    for _ in 0..5 {
        assert_eq!(edge.get("/p").send().await.text(), "primary");
    }
    assert_eq!(backup.count(), 0);
}

#[tokio::test]
async fn weights_split_traffic_within_a_priority() {
    let a = TestOrigin::fixed(|| Reply::ok("a")).await;
    let b = TestOrigin::fixed(|| Reply::ok("b")).await;
    let edge = EdgeBuilder::new(&a.url())
        .config(|c| c.services[0].origins = vec![entry(&a, 1, 3), entry(&b, 1, 1)])
        .start()
        .await;
    for i in 0..40 {
        edge.get(&format!("/w{i}")).send().await;
    }
    assert_eq!((a.count(), b.count()), (30, 10));
}

#[tokio::test]
async fn server_error_fails_over_to_the_next_origin_for_fills() {
    let broken = TestOrigin::fixed(|| Reply::status(503).body("down")).await;
    let good = TestOrigin::fixed(|| Reply::ok("good").cc("max-age=60")).await;
    let edge = EdgeBuilder::new(&good.url())
        .config(|c| c.services[0].origins = vec![entry(&broken, 1, 1), entry(&good, 2, 1)])
        .start()
        .await;
    let r = edge.get("/f").send().await;
    assert_eq!(r.text(), "good");
    assert_eq!(broken.count(), 1);
}

#[tokio::test]
async fn last_server_error_is_answered_when_every_origin_fails() {
    let a = TestOrigin::fixed(|| Reply::status(500).body("a-broke")).await;
    let b = TestOrigin::fixed(|| Reply::status(502).body("b-broke")).await;
    let edge = EdgeBuilder::new(&a.url())
        .config(|c| c.services[0].origins = vec![entry(&a, 1, 1), entry(&b, 2, 1)])
        .start()
        .await;
    let r = edge.get("/f").send().await;
    assert_eq!(r.status, 502, "the last origin's error answer is returned");
    assert_eq!((a.count(), b.count()), (1, 1));
}

#[tokio::test]
async fn non_idempotent_request_is_never_retried_on_another_origin() {
    let broken = TestOrigin::fixed(|| Reply::status(503)).await;
    let good = TestOrigin::fixed(|| Reply::ok("good")).await;
    let edge = EdgeBuilder::new(&good.url())
        .config(|c| c.services[0].origins = vec![entry(&broken, 1, 1), entry(&good, 2, 1)])
        .start()
        .await;
    let r = edge
        .request(http::Method::POST, "/order")
        .body("once")
        .send()
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        good.count(),
        0,
        "a POST that reached an origin is not sent again"
    );
}

#[tokio::test]
async fn open_breaker_lets_stale_if_error_answer_and_never_fails_closed() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Arc::clone(&failing);
    let origin = TestOrigin::start(move |_, _| {
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::status(503)
        } else {
            Reply::ok("cached")
                .cc("max-age=1, stale-if-error=600")
                .header("age", "5")
                .header("etag", "\"c\"")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            // Two 503 answers from two URLs call the origin down.
            let h = &mut c.services[0].health;
            h.error_min_responses = 2;
            h.distinct_urls = 2;
            h.cooldown = Seconds(Duration::from_secs(60));
        })
        .start()
        .await;
    edge.get("/s").send().await;
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        edge.get("/s").send().await.text(),
        "cached",
        "stale-if-error"
    );
    assert_eq!(edge.get("/t").send().await.status, 503);
    let state = edge.proxy().services().all()[0].origins.all()[0].breaker_state();
    assert_eq!(state, "open");
    // Open, with a stale copy that may stand in: the origin is not asked.
    let before = origin.count();
    let r = edge.get("/s").send().await;
    assert_eq!(r.text(), "cached");
    assert_eq!(
        origin.count(),
        before,
        "open breaker and a stale copy: not asked"
    );
    // Open, and nothing to stand in: the origin is still asked (never fail closed), and
    // its own answer goes back.
    let r = edge.get("/other").send().await;
    assert_eq!(origin.count(), before + 1, "the least-bad origin is tried");
    assert_eq!(r.status, 503);
    assert!(
        !r.cache_status().contains("origin-unavailable"),
        "{}",
        r.cache_status()
    );
    let metrics = edge.admin("/metrics").await.text();
    assert!(metrics.contains("strata_origin_breaker_open{"), "{metrics}");
}

#[tokio::test]
async fn active_probes_open_and_close_the_breaker() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = Arc::clone(&healthy);
    let origin = TestOrigin::start(move |req, _| {
        if req.path() == "/health" {
            if h.load(std::sync::atomic::Ordering::SeqCst) {
                Reply::ok("up")
            } else {
                Reply::status(500)
            }
        } else {
            Reply::ok("content")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            let h = &mut c.services[0].health;
            h.path = Some("/health".into());
            h.interval = Seconds(Duration::from_millis(50));
            h.failures = 2;
            h.successes = 1;
            h.cooldown = Seconds(Duration::from_millis(100));
        })
        .start()
        .await;
    let state = |edge: &Edge| edge.proxy().services().all()[0].origins.all()[0].breaker_state();
    edge.eventually("probes open the breaker", || state(&edge) == "open")
        .await;
    // Open, but the only origin: requests still go to it rather than fail closed.
    assert_eq!(edge.get("/x").send().await.text(), "content");
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    edge.eventually("probes close the breaker", || state(&edge) == "closed")
        .await;
    assert_eq!(edge.get("/x").send().await.text(), "content");
}

#[tokio::test]
async fn connection_limit_queues_a_flood_of_misses() {
    let origin =
        TestOrigin::start(|_, n| Reply::ok(format!("o{n}")).delay(Duration::from_millis(50))).await;
    let edge = Arc::new(
        EdgeBuilder::new(&origin.url())
            .config(|c| c.services[0].origin_max_connections = 2)
            .start()
            .await,
    );
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let (edge, peak) = (Arc::clone(&edge), Arc::clone(&peak));
        tokio::spawn(async move {
            for _ in 0..400 {
                let busy = edge.proxy().services().all()[0].origins.all()[0].busy();
                peak.fetch_max(busy, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let edge = Arc::clone(&edge);
        tasks.push(tokio::spawn(async move {
            edge.get(&format!("/uncached/{i}")).send().await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    watcher.abort();
    assert_eq!(origin.count(), 20);
    assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 2);
}

#[tokio::test]
async fn all_origins_dead_is_502_connect_failed() {
    let edge = EdgeBuilder::new(&dead_url())
        .config(|c| c.services[0].origins.push(OriginEntry::Url(dead_url())))
        .start()
        .await;
    let r = edge.get("/").send().await;
    assert_eq!(r.status, 502);
    assert!(
        r.cache_status().contains("connect-failed"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test]
async fn a_500_for_one_url_does_not_open_the_breaker() {
    let origin = TestOrigin::start(|req, _| {
        if req.path() == "/bad" {
            Reply::status(500)
        } else {
            Reply::ok("good")
        }
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.services[0].health.failures = 2)
        .start()
        .await;
    for _ in 0..5 {
        assert_eq!(edge.get("/bad").send().await.status, 500);
    }
    assert_eq!(edge.get("/good").send().await.text(), "good");
}
