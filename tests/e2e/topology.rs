//! Tiers: shields coalesce misses from every edge, a PoP's ring stores each object once,
//! a down owner is skipped, hot objects are cached where they are requested, parent
//! cycles are refused, and `Cache-Status` names every tier (RFC 9211).

use std::sync::Arc;
use std::time::Duration;

use strata_http_cache::CacheKey;
use strata_proxy::config::Seconds;

use crate::support::edge::Got;
use crate::support::{Edge, PopBuilder, Reply, TestOrigin};

fn cacheable(body: &'static str) -> impl Fn() -> Reply + Send + Sync + 'static {
    move || Reply::ok(body).cc("max-age=300")
}

/// A URL on a port nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", l.local_addr().expect("addr"))
}

/// The node of `ring` that owns `path` (the one that answers it without forwarding).
async fn owner_of<'a>(ring: &'a [Edge], path: &str) -> &'a Edge {
    let got = ring[0].get(path).send().await;
    let owner = got.cache_statuses()[0]
        .split(';')
        .next()
        .expect("a member")
        .to_string();
    ring.iter()
        .find(|e| e.proxy().tier().name() == owner)
        .expect("owner is in the ring")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shield_coalesces_misses_from_four_edges_into_one_origin_request() {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("flash crowd")
            .cc("max-age=300")
            .delay(Duration::from_millis(300))
    })
    .await;
    let shield = PopBuilder::new(&origin.url(), &["shield-1"])
        .no_ring()
        .shields()
        .start()
        .await;
    let edges: Vec<Arc<Edge>> = PopBuilder::new(&origin.url(), &["e1", "e2", "e3", "e4"])
        .no_ring()
        .parents(&[shield[0].url()])
        .start()
        .await
        .into_iter()
        .map(Arc::new)
        .collect();

    let mut tasks = Vec::new();
    for edge in &edges {
        for _ in 0..250 {
            let edge = Arc::clone(edge);
            tasks.push(tokio::spawn(async move { edge.get("/cold").send().await }));
        }
    }
    let mut from_shield = 0;
    for t in tasks {
        let got = t.await.expect("task");
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "flash crowd");
        if got.status_of("shield-1").is_some() {
            from_shield += 1;
        }
    }
    assert_eq!(origin.count(), 1, "one origin request for 4 x 250 clients");
    // Each edge's leader saw the shield's member; followers see their edge's only.
    assert!(from_shield >= 4, "{from_shield} responses named the shield");
}

#[tokio::test]
async fn rfc9211_2_cache_status_lists_every_tier_closest_to_origin_first() {
    let origin = TestOrigin::fixed(cacheable("tiered")).await;
    let shield = PopBuilder::new(&origin.url(), &["shield-1"])
        .no_ring()
        .shields()
        .start()
        .await;
    let pop_a = PopBuilder::new(&origin.url(), &["a1", "a2"])
        .parents(&[shield[0].url()])
        .start()
        .await;
    let pop_b = PopBuilder::new(&origin.url(), &["b1"])
        .parents(&[shield[0].url()])
        .start()
        .await;

    // Find a path that a2 owns, and ask a1 for it: a1 → a2 (owner) → shield → origin.
    let mut path = String::new();
    for i in 0..64 {
        let p = format!("/tiered/{i}");
        let got = pop_a[0].get(&p).send().await;
        if got.cache_statuses().len() == 3 {
            path = p;
            let members = got.cache_statuses();
            assert!(members[0].starts_with("shield-1;"), "{members:?}");
            assert!(members[0].contains("fwd=uri-miss"), "{members:?}");
            assert!(members[1].starts_with("a2;"), "{members:?}");
            assert!(members[1].contains("stored"), "{members:?}");
            assert!(members[2].starts_with("a1;"), "{members:?}");
            assert!(members[2].contains("detail=\"owner=a2\""), "{members:?}");
            break;
        }
    }
    assert!(!path.is_empty(), "some key of 64 is owned by a2");

    // Again through a1: the owner's hit, forwarded.
    let again = pop_a[0].get(&path).send().await;
    let members = again.cache_statuses();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members[0].starts_with("a2; hit"), "{members:?}");

    // Another PoP under the same shield: a shield hit.
    let other = pop_b[0].get(&path).send().await;
    let members = other.cache_statuses();
    assert!(members[0].starts_with("shield-1; hit"), "{members:?}");
    assert!(members[1].starts_with("b1; fwd=uri-miss"), "{members:?}");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn ring_stores_each_object_once_per_pop_whichever_node_is_asked() {
    let origin = TestOrigin::fixed(cacheable("x")).await;
    let ring = PopBuilder::new(&origin.url(), &["r1", "r2", "r3"])
        .start()
        .await;
    for i in 0..60 {
        for node in &ring {
            let got = node.get(&format!("/obj/{i}")).send().await;
            assert_eq!(got.status, 200);
        }
    }
    assert_eq!(
        origin.count(),
        60,
        "each object fetched once for the whole PoP"
    );
    let stored: u64 = ring.iter().map(|n| n.proxy().storage().stats().keys).sum();
    assert_eq!(stored, 60, "each object stored on exactly one node");
    // Every node holds some: the ring spreads keys.
    for n in &ring {
        assert!(n.proxy().storage().stats().keys > 0);
    }
    // A second round is served from the owners' caches.
    for i in 0..60 {
        let got = ring[i % 3].get(&format!("/obj/{i}")).send().await;
        assert!(got.cache_statuses()[0].contains("; hit"), "{got:?}");
    }
}

#[tokio::test]
async fn ring_owner_down_is_skipped_without_errors_to_clients() {
    let origin = TestOrigin::fixed(cacheable("still here")).await;
    let mut ring = PopBuilder::new(&origin.url(), &["o1", "o2", "o3"])
        .start()
        .await;
    // Paths owned by o3.
    let mut owned = Vec::new();
    for i in 0..100 {
        let p = format!("/k/{i}");
        if owner_of(&ring, &p).await.proxy().tier().name() == "o3" {
            owned.push(p);
        }
    }
    assert!(!owned.is_empty());
    ring.pop().expect("o3").stop().await;

    // At once (before any probe notices): the first request finds o3 refusing and moves
    // on to the next node on the ring.
    for p in &owned {
        for node in &ring {
            let got = node.get(p).send().await;
            assert_eq!(got.status, 200, "{p} via {}: {got:?}", node.addr);
            assert_eq!(got.text(), "still here");
        }
    }
    // The keys moved to the survivors only once each.
    let stored: u64 = ring.iter().map(|n| n.proxy().storage().stats().keys).sum();
    assert!(stored >= owned.len() as u64);
}

#[tokio::test]
async fn hot_object_is_cached_where_it_is_requested_then_cools_down() {
    let origin = TestOrigin::fixed(cacheable("hot")).await;
    let ring = PopBuilder::new(&origin.url(), &["h1", "h2"])
        .config(|c, _| {
            c.hot.threshold = 20.0;
            c.hot.window = Seconds(Duration::from_secs(1));
            c.hot.cooldown = Seconds(Duration::from_secs(1));
        })
        .start()
        .await;
    // A path h2 owns, requested through h1.
    let mut path = String::new();
    for i in 0..64 {
        let p = format!("/hot/{i}");
        if owner_of(&ring, &p).await.proxy().tier().name() == "h2" {
            path = p;
            break;
        }
    }
    assert!(!path.is_empty());
    let h1 = &ring[0];

    let forwarded = |g: &Got| g.status_of("h2").is_some();
    let fetched = origin.count();
    let mut local_hits = 0;
    for _ in 0..60 {
        let got = h1.get(&path).send().await;
        assert_eq!(got.status, 200);
        if !forwarded(&got) && got.is_hit() {
            local_hits += 1;
        }
    }
    assert!(local_hits > 0, "h1 served the hot key from its own cache");
    assert_eq!(origin.count(), fetched, "h1 filled its copy from the owner");
    let metrics = h1.admin("/metrics").await.text();
    assert!(metrics.contains("strata_hot_objects 1"), "{metrics}");
    assert!(
        metrics.contains(&format!("key=\"http://example.com{path}\"")),
        "{metrics}"
    );

    // Below the threshold for the cool-down, h1 goes back to the owner. Poll slowly
    // (about 3 requests/s, below the threshold), bounded.
    let mut back = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if forwarded(&h1.get(&path).send().await) {
            back = true;
            break;
        }
    }
    assert!(back, "the key cooled down and h1 forwards it again");
    let metrics = h1.admin("/metrics").await.text();
    assert!(metrics.contains("strata_hot_objects 0"), "{metrics}");
    let key = CacheKey::new("http", "example.com", &path, None, &Default::default());
    assert!(
        h1.proxy()
            .storage()
            .lookup(&key, std::time::SystemTime::now())
            .is_none(),
        "the local copy is dropped"
    );
}

#[tokio::test]
async fn rfc8586_2_a_parent_cycle_is_refused_with_508() {
    let origin = TestOrigin::fixed(cacheable("never")).await;
    // Two shields, each the other's parent.
    let shields = PopBuilder::new(&origin.url(), &["s1", "s2"])
        .no_ring()
        .shields()
        .config(|c, urls| {
            let other = if c.node.name == "s1" { 1 } else { 0 };
            c.parents.shields = vec![urls[other].clone()];
        })
        .start()
        .await;
    let got = shields[0].get("/loop").send().await;
    assert_eq!(got.status, 508, "{got:?}");
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn misses_fail_over_to_the_second_shield_then_to_the_origin() {
    let origin = TestOrigin::fixed(cacheable("via")).await;
    let shield = PopBuilder::new(&origin.url(), &["backup-shield"])
        .no_ring()
        .shields()
        .start()
        .await;
    let edges = PopBuilder::new(&origin.url(), &["f1"])
        .no_ring()
        .parents(&[dead_url(), shield[0].url()])
        .start()
        .await;
    let got = edges[0].get("/a").send().await;
    assert_eq!(got.status, 200);
    assert!(got.status_of("backup-shield").is_some(), "{got:?}");

    let alone = PopBuilder::new(&origin.url(), &["f2"])
        .no_ring()
        .parents(&[dead_url(), dead_url()])
        .start()
        .await;
    let got = alone[0].get("/b").send().await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.cache_statuses().len(), 1, "straight from the origin");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn nodes_answer_the_health_path_for_their_peers() {
    let origin = TestOrigin::fixed(cacheable("x")).await;
    let ring = PopBuilder::new(&origin.url(), &["p1"]).start().await;
    let got = ring[0].get("/.well-known/strata/health").send().await;
    assert_eq!(got.status, 200);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn cache_key_host_lets_every_host_name_of_a_service_share_one_copy() {
    let origin = TestOrigin::fixed(cacheable("shared")).await;
    let nodes = PopBuilder::new(&origin.url(), &["k1"])
        .config(|c, _| c.services[0].cache_key_host = Some("www.example.com".into()))
        .start()
        .await;
    let first = nodes[0]
        .get("/x")
        .header("host", "a.example.com")
        .send()
        .await;
    assert!(!first.is_hit());
    let second = nodes[0]
        .get("/x")
        .header("host", "b.example.com")
        .send()
        .await;
    assert!(second.is_hit(), "{second:?}");
    assert_eq!(origin.count(), 1);
    // Purges name the key host.
    assert_eq!(
        nodes[0]
            .purge(r#"{"urls": ["http://www.example.com/x"]}"#)
            .await,
        1
    );
}

#[tokio::test]
async fn rfc9213_an_edge_behind_a_shield_applies_the_origins_cdn_cache_control_too() {
    // Browsers must not keep it (no-store); every CDN cache may, for a minute. The shield
    // passes the targeted field on, so the edge caches it as the shield does.
    let origin = TestOrigin::fixed(|| {
        Reply::ok("targeted")
            .cc("no-store")
            .header("cdn-cache-control", "max-age=60")
    })
    .await;
    let shield = PopBuilder::new(&origin.url(), &["shield-1"])
        .no_ring()
        .shields()
        .start()
        .await;
    let edge = PopBuilder::new(&origin.url(), &["e1"])
        .no_ring()
        .parents(&[shield[0].url()])
        .start()
        .await
        .remove(0);
    edge.get("/t").send().await;
    let again = edge.get("/t").send().await;
    assert!(again.is_hit(), "{}", again.cache_status());
    assert_eq!(again.header("cache-control"), Some("no-store"));
    assert_eq!(origin.count(), 1);
}
