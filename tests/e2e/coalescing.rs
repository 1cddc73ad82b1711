//! Request coalescing with read-while-write: one upstream request per object however many
//! clients miss at once, and no client stuck behind a fill that cannot serve it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use strata_proxy::config::Seconds;
use tokio::sync::Notify;

use crate::support::origin::Piece;
use crate::support::{Edge, EdgeBuilder, Reply, TestOrigin};

async fn concurrent_gets(
    edge: &Arc<Edge>,
    path: &str,
    n: usize,
    header: Option<(&str, &str)>,
) -> Vec<crate::support::edge::Got> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let edge = Arc::clone(edge);
        let path = path.to_string();
        let header = header.map(|(k, v)| (k.to_string(), v.to_string()));
        tasks.push(tokio::spawn(async move {
            let mut req = edge.get(&path);
            if let Some((k, v)) = &header {
                req = req.header(k, v);
            }
            req.send().await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn concurrent_misses_make_exactly_one_upstream_request() {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("shared")
            .cc("max-age=60")
            .delay(Duration::from_millis(300))
    })
    .await;
    let edge = Arc::new(EdgeBuilder::new(&origin.url()).start().await);
    let got = concurrent_gets(&edge, "/herd", 50, None).await;
    assert!(got.iter().all(|g| g.status == 200 && g.text() == "shared"));
    assert_eq!(origin.count(), 1);
    let collapsed = got
        .iter()
        .filter(|g| g.cache_status().contains("collapsed"))
        .count();
    // Every request either waited on the one fill or (arriving after it, on a loaded
    // machine) hit what it stored.
    let hits = got.iter().filter(|g| g.is_hit()).count();
    assert!(collapsed >= 1, "requests waited on the fill");
    assert_eq!(
        collapsed + hits,
        49,
        "all but the leader were collapsed or hits"
    );
}

#[tokio::test]
async fn followers_receive_bytes_as_they_arrive_from_upstream() {
    let gate = Arc::new(Notify::new());
    let g = Arc::clone(&gate);
    let origin = TestOrigin::fixed(move || {
        Reply::ok("").cc("max-age=60").pieces(vec![
            Piece {
                data: Bytes::from_static(b"head;"),
                delay: Duration::ZERO,
                gate: None,
            },
            Piece {
                data: Bytes::from_static(b"tail"),
                delay: Duration::ZERO,
                gate: Some(Arc::clone(&g)),
            },
        ])
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    let mut leader = edge.get("/stream").send_head().await.into_body();
    let first = leader.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "head;");
    // The fill is half done and held at the origin: a new client attaches to it and gets
    // the bytes already there without waiting for the rest.
    let follower = edge.get("/stream").send_head().await;
    assert!(follower.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("collapsed"));
    let mut follower = follower.into_body();
    let f_first = tokio::time::timeout(Duration::from_secs(10), follower.frame())
        .await
        .expect("streamed")
        .unwrap()
        .unwrap();
    assert_eq!(f_first.into_data().unwrap(), "head;");
    gate.notify_one();
    assert_eq!(leader.collect().await.unwrap().to_bytes(), "tail");
    assert_eq!(follower.collect().await.unwrap().to_bytes(), "tail");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn uncacheable_answer_releases_waiters_and_is_remembered_as_pass() {
    let origin = TestOrigin::start(|_, n| {
        Reply::ok(format!("private {n}"))
            .cc("private")
            .delay(Duration::from_millis(200))
    })
    .await;
    let edge = Arc::new(EdgeBuilder::new(&origin.url()).start().await);
    let got = concurrent_gets(&edge, "/me", 10, None).await;
    assert!(got
        .iter()
        .all(|g| g.status == 200 && g.text().starts_with("private ")));
    assert_eq!(origin.count(), 10, "each waiter fetched on its own");
    let later = edge.get("/me").send().await;
    assert!(
        later
            .cache_status()
            .contains("detail=\"hit-for-pass: private\""),
        "{}",
        later.cache_status()
    );
    assert!(!later.cache_status().contains("collapsed"));
}

#[tokio::test]
async fn failed_fill_hands_over_to_a_waiter() {
    // The first upstream exchange times out; the waiters' retry succeeds.
    let origin = TestOrigin::start(|_, n| {
        let r = Reply::ok(format!("v{n}")).cc("max-age=60");
        if n == 1 {
            r.delay(Duration::from_secs(3))
        } else {
            r
        }
    })
    .await;
    let edge = Arc::new(
        EdgeBuilder::new(&origin.url())
            .config(|c| c.limits.upstream_first_byte_timeout = Seconds(Duration::from_millis(400)))
            .start()
            .await,
    );
    let leader = {
        let edge = Arc::clone(&edge);
        tokio::spawn(async move { edge.get("/x").send().await })
    };
    edge.eventually("the first fill is registered", || {
        edge.proxy().fills_in_progress() == 1
    })
    .await;
    let followers = concurrent_gets(&edge, "/x", 5, None).await;
    let leader = leader.await.unwrap();
    assert_eq!(leader.status, 504, "the leader reports its own failure");
    assert!(
        followers
            .iter()
            .all(|g| g.status == 200 && g.text() == "v2"),
        "{:?}",
        followers.iter().map(|g| g.status).collect::<Vec<_>>()
    );
    assert_eq!(origin.count(), 2, "one retry for all waiters");
}

#[tokio::test]
async fn leader_disconnecting_does_not_abort_the_fill_for_followers() {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("kept")
            .cc("max-age=60")
            .delay(Duration::from_millis(300))
    })
    .await;
    let edge = Arc::new(EdgeBuilder::new(&origin.url()).start().await);
    let leader = {
        let edge = Arc::clone(&edge);
        tokio::spawn(async move { edge.get("/y").send().await })
    };
    edge.eventually("fill registered", || edge.proxy().fills_in_progress() == 1)
        .await;
    let follower = {
        let edge = Arc::clone(&edge);
        tokio::spawn(async move { edge.get("/y").send().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    let got = follower.await.unwrap();
    assert_eq!(got.text(), "kept");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn lock_wait_is_bounded() {
    let origin = TestOrigin::start(|_, n| {
        let r = Reply::ok(format!("v{n}")).cc("max-age=60");
        if n == 1 {
            r.delay(Duration::from_secs(3))
        } else {
            r
        }
    })
    .await;
    let edge = Arc::new(
        EdgeBuilder::new(&origin.url())
            .config(|c| c.services[0].lock_timeout = Seconds(Duration::from_millis(200)))
            .start()
            .await,
    );
    let _leader = {
        let edge = Arc::clone(&edge);
        tokio::spawn(async move { edge.get("/slow").send().await })
    };
    edge.eventually("fill registered", || edge.proxy().fills_in_progress() == 1)
        .await;
    let r = edge.get("/slow").send().await;
    assert_eq!(r.status, 200);
    assert!(
        r.cache_status().contains("detail=lock-timeout"),
        "{}",
        r.cache_status()
    );
}

#[tokio::test]
async fn waiters_for_another_variant_get_their_own_variant() {
    let origin = TestOrigin::start(|req, _| {
        let lang = req.header("accept-language").unwrap_or("none").to_string();
        Reply::ok(lang)
            .cc("max-age=60")
            .header("vary", "accept-language")
            .delay(Duration::from_millis(200))
    })
    .await;
    let edge = Arc::new(EdgeBuilder::new(&origin.url()).start().await);
    let en = {
        let edge = Arc::clone(&edge);
        tokio::spawn(async move {
            concurrent_gets(&edge, "/v", 5, Some(("accept-language", "en"))).await
        })
    };
    let fr = concurrent_gets(&edge, "/v", 5, Some(("accept-language", "fr"))).await;
    let en = en.await.unwrap();
    assert!(en.iter().all(|g| g.text() == "en"));
    assert!(fr.iter().all(|g| g.text() == "fr"));
    assert!(
        origin.count() <= 3,
        "one fill per variant (plus at most one retry), got {}",
        origin.count()
    );
}

#[tokio::test]
async fn micro_cache_absorbs_a_flash_crowd_on_a_dynamic_endpoint() {
    let origin = TestOrigin::start(|_, n| {
        Reply::ok(format!("live {n}"))
            .cc("private, no-store")
            .delay(Duration::from_millis(100))
    })
    .await;
    let edge = Arc::new(
        EdgeBuilder::new(&origin.url())
            .config(|c| {
                c.services[0].rules.push(strata_proxy::config::RuleConfig {
                    micro_cache: Some(Seconds(Duration::from_secs(5))),
                    ..strata_proxy::config::RuleConfig::prefix("/live")
                })
            })
            .start()
            .await,
    );
    let got = concurrent_gets(&edge, "/live/score", 30, None).await;
    assert!(got.iter().all(|g| g.text() == "live 1"));
    assert!(edge.get("/live/score").send().await.is_hit());
    assert_eq!(origin.count(), 1);
    // Clients still see the origin's directives.
    assert_eq!(got[0].header("cache-control"), Some("private, no-store"));
}
