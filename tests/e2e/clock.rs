//! Nodes on a manual clock: freshness, breaker cool-downs and hot-object decay follow the
//! node's clock alone (no wall time passes in these tests beyond the requests themselves;
//! every interval is far longer than the test runs).

use std::time::{Duration, SystemTime};

use strata_proxy::clock::Clock;
use strata_proxy::config::Seconds;

use crate::support::edge::{EdgeBuilder, Got};
use crate::support::origin::{Reply, TestOrigin};
use crate::support::pop::PopBuilder;

#[tokio::test]
async fn freshness_and_age_follow_the_node_clock() {
    let origin = TestOrigin::start(|_, n| Reply::ok(format!("v{n}")).cc("max-age=60")).await;
    let (clock, hand) = Clock::manual(SystemTime::now());
    let edge = EdgeBuilder::new(&origin.url()).clock(clock).start().await;

    assert_eq!(edge.get("/e").send().await.text(), "v1");
    hand.advance(Duration::from_secs(59));
    let got = edge.get("/e").send().await;
    assert!(got.is_hit(), "{}", got.cache_status());
    assert_eq!(got.header("age"), Some("59"), "Age is the node clock's");
    assert_eq!(origin.count(), 1);

    hand.advance(Duration::from_secs(2));
    let got = edge.get("/e").send().await;
    assert!(!got.is_hit(), "expired at 61 s: {}", got.cache_status());
    assert_eq!(got.text(), "v2");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn breaker_cools_down_on_the_node_clock() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = std::sync::Arc::clone(&failing);
    let origin = TestOrigin::start(move |_, _| {
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::status(503)
        } else {
            Reply::ok("cached").cc("max-age=10, stale-if-error=600")
        }
    })
    .await;
    let (clock, hand) = Clock::manual(SystemTime::now());
    let edge = EdgeBuilder::new(&origin.url())
        .clock(clock)
        .config(|c| {
            // Two 503 answers from two URLs call the origin down, for a minute.
            let h = &mut c.services[0].health;
            h.error_min_responses = 2;
            h.distinct_urls = 2;
            h.cooldown = Seconds(Duration::from_secs(60));
            h.successes = 1;
        })
        .start()
        .await;
    let state = || edge.proxy().services().all()[0].origins.all()[0].breaker_state();

    assert_eq!(edge.get("/s").send().await.text(), "cached");
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(edge.get("/a").send().await.status, 503);
    assert_eq!(edge.get("/b").send().await.status, 503);
    assert_eq!(state(), "open");
    failing.store(false, std::sync::atomic::Ordering::SeqCst);

    // 11 s on: the copy is stale, the breaker still open; the stale copy answers and the
    // origin is not asked.
    hand.advance(Duration::from_secs(11));
    let asked = origin.count();
    let got = edge.get("/s").send().await;
    assert_eq!(got.text(), "cached");
    assert!(
        got.cache_status().contains("stale-if-error"),
        "{}",
        got.cache_status()
    );
    assert_eq!(origin.count(), asked, "open breaker: not asked");
    assert_eq!(state(), "open");

    // Past the cool-down on the node clock: the next request is the trial, and the
    // origin's answer closes the breaker.
    hand.advance(Duration::from_secs(60));
    let got = edge.get("/s").send().await;
    assert_eq!(got.text(), "cached");
    assert_eq!(
        origin.count(),
        asked + 1,
        "the trial request reached the origin"
    );
    assert_eq!(state(), "closed");
}

#[tokio::test]
async fn hot_objects_decay_on_the_node_clock() {
    let origin = TestOrigin::fixed(|| Reply::ok("hot").cc("max-age=3600")).await;
    let (clock, hand) = Clock::manual(SystemTime::now());
    // 2 requests/s over 10 s (20 requests) make a key hot; it stays so 10 s after.
    let ring = PopBuilder::new(&origin.url(), &["h1", "h2"])
        .clock(clock)
        .config(|c, _| {
            c.hot.threshold = 2.0;
            c.hot.window = Seconds(Duration::from_secs(10));
            c.hot.cooldown = Seconds(Duration::from_secs(10));
        })
        .start()
        .await;
    let h1 = &ring[0];
    let forwarded = |g: &Got| g.status_of("h2").is_some();
    // A path h2 owns: h1 forwards it.
    let mut path = None;
    for i in 0..64 {
        let p = format!("/hot/{i}");
        if forwarded(&h1.get(&p).send().await) {
            path = Some(p);
            break;
        }
    }
    let path = path.expect("a path h2 owns");

    // 30 requests at one instant: hot, and then served from h1's own copy.
    let mut local = 0;
    for _ in 0..30 {
        let got = h1.get(&path).send().await;
        if !forwarded(&got) && got.is_hit() {
            local += 1;
        }
    }
    assert!(local > 0, "h1 serves the hot key itself");

    // Two windows and the cool-down later, on the node clock only: back to the owner.
    hand.advance(Duration::from_secs(35));
    let got = h1.get(&path).send().await;
    assert!(forwarded(&got), "cooled down: {:?}", got.cache_statuses());
    let metrics = h1.admin("/metrics").await.text();
    assert!(metrics.contains("strata_hot_objects 0"), "{metrics}");
}
