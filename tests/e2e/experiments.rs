//! Experiments (A/B tests) built in: weighted variants, sticky by cookie or by a hashed
//! header, the variant in the cache key and in a header to the origin, results per variant
//! in the metrics (docs/experiments.md).

use std::collections::HashMap;

use crate::support::binary::{exchange, Strata};
use crate::support::{Reply, TestOrigin};

/// An origin whose page depends on the variant it is told.
async fn variant_origin() -> TestOrigin {
    TestOrigin::start(|req, _| {
        let variant = req.header("x-experiment-checkout").unwrap_or("none");
        Reply::ok(format!("page for {variant}")).cc("max-age=600")
    })
    .await
}

fn node(origin: &TestOrigin, experiment_extra: &str) -> Strata {
    Strata::edge(&format!(
        r#"
[node]
name = "edge-x"
[listen]
http = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[log]
access = "off"
[[service]]
name = "shop"
hosts = ["*"]
origins = ["{}"]
[[service.experiment]]
name = "checkout"
variants = [{{ name = "control", weight = 1 }}, {{ name = "new", weight = 1 }}]
{experiment_extra}
"#,
        origin.url()
    ))
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn new_clients_are_split_and_stay_in_their_variant_by_cookie() {
    let origin = variant_origin().await;
    let node = node(&origin, "");
    let mut by_variant: HashMap<String, u32> = HashMap::new();
    let mut cookies = Vec::new();
    for _ in 0..60 {
        let r = exchange(node.http, &get("/checkout", "")).await;
        assert_eq!(r.status, 200);
        let cookie = r
            .header("set-cookie")
            .expect("a new client gets a cookie")
            .to_string();
        let pair = cookie.split(';').next().unwrap().to_string();
        let variant = pair
            .strip_prefix("strata-exp-checkout=")
            .unwrap()
            .to_string();
        // The page is the one for the client's variant, whether a miss or a hit.
        assert_eq!(r.text(), format!("page for {variant}"));
        *by_variant.entry(variant).or_default() += 1;
        cookies.push(pair);
    }
    assert_eq!(by_variant.len(), 2, "{by_variant:?}");
    assert!(by_variant.values().all(|n| *n >= 10), "{by_variant:?}");
    // Each variant's page was fetched once and stored apart.
    assert_eq!(origin.count(), 2);
    // A client with its cookie stays, and gets no new cookie.
    for pair in cookies.iter().take(10) {
        let variant = pair.split('=').nth(1).unwrap();
        let r = exchange(node.http, &get("/checkout", &format!("Cookie: {pair}\r\n"))).await;
        assert_eq!(r.text(), format!("page for {variant}"));
        assert_eq!(r.header("set-cookie"), None);
    }
    let control = node
        .metric("strata_experiment_responses_total{experiment=\"checkout\",variant=\"control\",status=\"2xx\"}")
        .await
        .unwrap_or(0.0);
    let new = node
        .metric("strata_experiment_responses_total{experiment=\"checkout\",variant=\"new\",status=\"2xx\"}")
        .await
        .unwrap_or(0.0);
    assert_eq!(control + new, 70.0);
    assert_eq!(
        new,
        f64::from(by_variant["new"])
            + cookies
                .iter()
                .take(10)
                .filter(|c| c.ends_with("=new"))
                .count() as f64
    );
}

#[tokio::test]
async fn a_client_cannot_pick_a_variant_by_header_only_by_its_cookie() {
    let origin = variant_origin().await;
    let node = node(&origin, "");
    // The header is the CDN's to set: a client's is replaced by the variant it is put in.
    for _ in 0..20 {
        let r = exchange(node.http, &get("/p", "X-Experiment-Checkout: admin\r\n")).await;
        assert!(
            r.text() == "page for control" || r.text() == "page for new",
            "{}",
            r.text()
        );
    }
    assert!(origin
        .seen()
        .iter()
        .all(|s| s.header("x-experiment-checkout") != Some("admin")));
    // A cookie naming no variant is ignored (and replaced).
    let r = exchange(
        node.http,
        &get("/p", "Cookie: strata-exp-checkout=admin\r\n"),
    )
    .await;
    assert!(r.header("set-cookie").is_some());
}

#[tokio::test]
async fn a_hashed_header_places_a_user_in_the_same_variant_without_a_cookie() {
    let origin = variant_origin().await;
    let node = node(&origin, "hash_header = \"x-user-id\"");
    let mut seen = std::collections::HashSet::new();
    for user in 0..20 {
        let header = format!("X-User-Id: user-{user}\r\n");
        let first = exchange(node.http, &get("/home", &header)).await;
        assert_eq!(first.header("set-cookie"), None);
        for _ in 0..3 {
            let again = exchange(node.http, &get("/home", &header)).await;
            assert_eq!(again.text(), first.text());
        }
        seen.insert(first.text());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn a_url_purge_takes_every_variant() {
    let origin = variant_origin().await;
    let node = node(&origin, "");
    for variant in ["control", "new"] {
        let cookie = format!("Cookie: strata-exp-checkout={variant}\r\n");
        exchange(node.http, &get("/sale", &cookie)).await;
        let hit = exchange(node.http, &get("/sale", &cookie)).await;
        assert!(hit.header("cache-status").unwrap().contains("hit"));
    }
    assert_eq!(origin.count(), 2);
    let json = r#"{"urls": ["http://shop.test/sale"]}"#;
    let request = format!(
        "POST /v1/purge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    let purge = exchange(node.admin.unwrap(), request.as_bytes()).await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    assert!(purge.text().contains("\"objects\":2"), "{}", purge.text());
    for variant in ["control", "new"] {
        let cookie = format!("Cookie: strata-exp-checkout={variant}\r\n");
        let r = exchange(node.http, &get("/sale", &cookie)).await;
        assert!(
            !r.header("cache-status").unwrap().contains("hit"),
            "{variant}"
        );
    }
    assert_eq!(origin.count(), 4);
}
