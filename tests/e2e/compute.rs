//! Edge compute: proxy-wasm filters built with the proxy-wasm Rust SDK (`examples/filters`),
//! unmodified, in the real binary's request path (docs/compute.md).

use std::path::Path;
use std::process::Command;

use crate::support::binary::{exchange, strata_bin, Strata};
use crate::support::nats::NatsServer;
use crate::support::{example_filter, scratch_dir, wat_filter, Reply, TestOrigin};

/// A node in front of `origin` whose service has `filters` (TOML of
/// `[[service.filter]]` tables), with `extra` TOML before the service.
fn node(origin: &TestOrigin, filters: &str, extra: &str) -> Strata {
    Strata::edge(&config(&origin.url(), filters, extra))
}

fn config(origin: &str, filters: &str, extra: &str) -> String {
    format!(
        r#"
[node]
name = "edge-c"
[listen]
http = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[log]
access = "off"
{extra}
[[service]]
name = "site"
hosts = ["*"]
origins = ["{origin}"]
{filters}
"#
    )
}

fn filter(name: &str, module: &Path, config: &str, more: &str) -> String {
    format!(
        "[[service.filter]]\nname = \"{name}\"\nmodule = \"{}\"\nconfig = \"\"\"\n{config}\"\"\"\n{more}\n",
        module.display()
    )
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\nCookie: session=secret\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

async fn cacheable_origin() -> TestOrigin {
    TestOrigin::start(|req, _| {
        Reply::ok(format!("body of {}", req.path()))
            .cc("max-age=600")
            .header("server", "origin/1.0")
    })
    .await
}

#[tokio::test]
async fn a_header_rewriting_filter_changes_what_the_origin_and_the_client_see() {
    let origin = cacheable_origin().await;
    let rules = "request.set x-from-edge yes\nrequest.remove cookie\n\
                 response.set x-frame-options DENY\nresponse.remove server\n";
    let node = node(
        &origin,
        &filter("rewrite", &example_filter("header_rewrite"), rules, ""),
        "",
    );
    let miss = exchange(node.http, &get("/a.css")).await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.header("x-frame-options"), Some("DENY"));
    assert_eq!(miss.header("server"), None);
    let seen = origin.last();
    assert_eq!(seen.header("x-from-edge"), Some("yes"));
    assert_eq!(seen.header("cookie"), None, "the filter removed it");
    // A hit runs the response phase again: what a filter changes is never stored.
    let hit = exchange(node.http, &get("/a.css")).await;
    assert!(
        hit.header("cache-status").unwrap().contains("hit"),
        "{:?}",
        hit.header("cache-status")
    );
    assert_eq!(hit.header("x-frame-options"), Some("DENY"));
    assert_eq!(hit.header("server"), None);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_filter_that_rewrites_the_path_changes_the_cache_key() {
    let origin = cacheable_origin().await;
    let node = node(
        &origin,
        &filter(
            "paths",
            &example_filter("header_rewrite"),
            "request.path /old/ /new/\n",
            "",
        ),
        "",
    );
    let r = exchange(node.http, &get("/old/page?x=1")).await;
    assert_eq!(r.text(), "body of /new/page");
    assert_eq!(origin.last().path(), "/new/page");
    // The new path's key: the object the rewrite fetched answers it.
    let r = exchange(node.http, &get("/new/page?x=1")).await;
    assert!(r.header("cache-status").unwrap().contains("hit"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_geo_filter_redirects_by_the_country_the_node_knows() {
    let origin = cacheable_origin().await;
    let geo = "[geo]\nnetworks = { \"127.0.0.1/32\" = \"DE\" }\n";
    let node = node(
        &origin,
        &filter(
            "geo",
            &example_filter("geo_redirect"),
            "DE https://de.shop.test\n",
            "",
        ),
        geo,
    );
    let r = exchange(node.http, &get("/products?id=7")).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://de.shop.test/products?id=7")
    );
    assert!(
        r.header("cache-status").unwrap().contains("geo"),
        "{:?}",
        r.header("cache-status")
    );
    assert_eq!(origin.count(), 0);
    // Clients from elsewhere go on to the content.
    let other = node_for_country(&origin, "FR");
    let r = exchange(other.http, &get("/products?id=7")).await;
    assert_eq!(r.status, 200);
}

fn node_for_country(origin: &TestOrigin, cc: &str) -> Strata {
    node(
        origin,
        &filter(
            "geo",
            &example_filter("geo_redirect"),
            "DE https://de.shop.test\n",
            "",
        ),
        &format!("[geo]\nnetworks = {{ \"127.0.0.1/32\" = \"{cc}\" }}\n"),
    )
}

#[tokio::test]
async fn a_counting_filter_loses_no_increment_under_concurrent_requests() {
    let origin = cacheable_origin().await;
    let node = node(
        &origin,
        &filter("count", &example_filter("kv_counter"), "", ""),
        "",
    );
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let addr = node.http;
        tasks.push(tokio::spawn(async move {
            let r = exchange(addr, &get("/counted")).await;
            r.header("x-hits").expect("x-hits").parse::<u64>().unwrap()
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=40).collect::<Vec<u64>>());
    // Cached after the first: the count runs before the cache, on every request.
    assert_eq!(origin.count(), 1);
}

#[test]
fn check_config_refuses_modules_that_cannot_be_filters_naming_the_key() {
    let dir = scratch_dir("compute");
    let not_wasm = dir.path().join("script.wasm");
    std::fs::write(&not_wasm, "#!/bin/sh\n").unwrap();
    let thief = wat_filter(
        dir.path(),
        "thief",
        r#"(import "env" "proxy_read_private_keys" (func))"#,
        "i32.const 0",
    );
    let good = wat_filter(dir.path(), "good", "", "i32.const 0");
    let cases = [
        (filter("f", &not_wasm, "", ""), "not a WebAssembly module"),
        (filter("f", &thief, "", ""), "proxy_read_private_keys"),
        (
            filter("f", &good, "", &format!("sha256 = \"{}\"", "0".repeat(64))),
            "SHA-256",
        ),
        (
            filter(
                "f",
                &example_filter("header_rewrite"),
                "request.frobnicate x\n",
                "",
            ),
            "proxy_on_configure",
        ),
        (
            filter("f", &dir.path().join("missing.wasm"), "", ""),
            "missing.wasm",
        ),
    ];
    for (filters, why) in cases {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, config("http://127.0.0.1:9", &filters, "")).unwrap();
        let out = Command::new(strata_bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{why}: {stderr}");
        assert!(stderr.contains("service[0].filter[0].module"), "{stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
    }
}

// === Edge KV: filters' shared data across nodes ===

/// A node on `nats` (none: on its own) running the counter filter.
fn counting_node(origin: &TestOrigin, name: &str, nats: Option<&NatsServer>) -> Strata {
    let bus = nats.map_or(String::new(), |n| format!("[bus]\nnats = \"{}\"\n", n.url));
    Strata::edge(
        &config(
            &origin.url(),
            &filter("count", &example_filter("kv_counter"), "", ""),
            &bus,
        )
        .replace("name = \"edge-c\"", &format!("name = \"{name}\"")),
    )
}

/// `method` on the admin listener's `/v1/kv/<key>`, a JSON body for a PUT.
async fn kv(
    node: &Strata,
    method: &str,
    key: &str,
    json: &str,
) -> crate::support::binary::RawResponse {
    let request = format!(
        "{method} /v1/kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    exchange(node.admin.expect("admin"), request.as_bytes()).await
}

/// Waits (bounded) until `node` has joined its bus: its Edge KV takes writes.
async fn joined(node: &Strata) {
    for _ in 0..200 {
        if kv(node, "PUT", "probe/ready", r#"{"value": "yes"}"#)
            .await
            .status
            == 200
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the node did not join its bus");
}

#[tokio::test]
async fn counters_on_two_nodes_sharing_nats_lose_no_increment() {
    let nats = NatsServer::start();
    let origin = cacheable_origin().await;
    let a = counting_node(&origin, "edge-ka", Some(&nats));
    let b = counting_node(&origin, "edge-kb", Some(&nats));
    // Both joined (writes answer 503 until a node has joined its bus).
    for node in [&a, &b] {
        joined(node).await;
    }
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = if i % 2 == 0 { a.http } else { b.http };
        tasks.push(tokio::spawn(async move {
            let r = exchange(addr, &get("/shared")).await;
            r.header("x-hits").map(|h| h.parse::<u64>().unwrap())
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(
            t.await
                .unwrap()
                .expect("every increment lands (x-hits, not x-hits-lost)"),
        );
    }
    counts.sort_unstable();
    // Compare-and-set on the bus: forty increments from two nodes, each count once.
    assert_eq!(counts, (1..=40).collect::<Vec<u64>>());
    let r = kv(&b, "GET", "site/hits:%2Fshared", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"value\":\"40\""), "{}", r.text());
    // The filter's own metrics, on each node's /metrics: the increments it won.
    let mut won = 0.0;
    for node in [&a, &b] {
        won += node
            .metric("strata_filter_metric{filter=\"count\",metric=\"increments\"}")
            .await
            .unwrap_or(0.0);
        assert!(
            node.metric("strata_filter_instantiated{filter=\"count\"}")
                .await
                >= Some(1.0)
        );
    }
    assert_eq!(won, 40.0);
}

#[tokio::test]
async fn a_value_written_through_the_admin_api_reaches_other_nodes_filters() {
    let nats = NatsServer::start();
    let origin = cacheable_origin().await;
    let a = counting_node(&origin, "edge-kc", Some(&nats));
    let b = counting_node(&origin, "edge-kd", Some(&nats));
    for node in [&a, &b] {
        joined(node).await;
    }
    let put = kv(
        &a,
        "PUT",
        "site/hits:%2Fpromo",
        r#"{"value": "100", "revision": 0}"#,
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    // b's replica follows the bucket: its filter counts on from 100 once the write is there.
    let mut last = 0;
    for _ in 0..100 {
        let r = exchange(b.http, &get("/promo")).await;
        let hits = r.header("x-hits");
        assert!(hits.is_some(), "{} {:?} {}", r.status, r.headers, r.text());
        last = hits.unwrap_or_default().parse::<u64>().unwrap();
        if last > 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        last > 100,
        "b never saw the admin's write (last count {last})"
    );
    // A write naming a revision that is no longer the key's is refused.
    let stale = kv(
        &a,
        "PUT",
        "site/hits:%2Fpromo",
        r#"{"value": "0", "revision": 1}"#,
    )
    .await;
    assert_eq!(stale.status, 409, "{}", stale.text());
    let absent = kv(
        &a,
        "PUT",
        "site/hits:%2Fpromo",
        r#"{"value": "0", "revision": 0}"#,
    )
    .await;
    assert_eq!(absent.status, 409, "{}", absent.text());
}

#[tokio::test]
async fn a_node_without_a_bus_keeps_its_own_store() {
    let origin = cacheable_origin().await;
    let node = counting_node(&origin, "edge-ke", None);
    for n in 1..=3 {
        let r = exchange(node.http, &get("/solo")).await;
        assert_eq!(r.header("x-hits"), Some(n.to_string().as_str()));
    }
    let r = kv(&node, "GET", "site/hits:%2Fsolo", "").await;
    assert!(r.text().contains("\"value\":\"3\""), "{}", r.text());
    let not_json = exchange(
        node.admin.unwrap(),
        b"PUT /v1/kv/site/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    )
    .await;
    assert_eq!(not_json.status, 415);
    let missing = kv(&node, "GET", "site/nothing", "").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn a_filter_written_in_assemblyscript_runs_too() {
    // solo-io's proxy-runtime (ABI 0.2.0, WASI `wasi_unstable`), built by scripts/test.sh.
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/filters/assemblyscript/build/add_header.wasm");
    assert!(module.exists(), "{}: run scripts/test.sh", module.display());
    let origin = cacheable_origin().await;
    // Its root context registers as "add_header": the filter's name is its root id.
    let node = node(&origin, &filter("add_header", &module, "", ""), "");
    let r = exchange(node.http, &get("/as")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-filter-language"), Some("assemblyscript"));
}

#[tokio::test]
async fn a_filter_asks_an_auth_service_by_callout_before_the_request_goes_on() {
    let origin = TestOrigin::start(|req, _| {
        Reply::ok(format!(
            "hello {}",
            req.header("x-user").unwrap_or("nobody")
        ))
        .cc("no-store")
    })
    .await;
    let auth = TestOrigin::start(|req, _| match req.header("authorization") {
        Some("Bearer good") if req.path() == "/check" => Reply::ok("").header("x-user", "alice"),
        _ => Reply::status(401),
    })
    .await;
    let filters = filter("auth", &example_filter("auth_callout"), "auth-service", "");
    let toml = format!(
        "{}\n[[service]]\nname = \"auth-service\"\nhosts = [\"auth.internal\"]\norigins = [\"{}\"]\n",
        config(&origin.url(), &filters, "").replace("hosts = [\"*\"]", "hosts = [\"shop.test\"]"),
        auth.url()
    );
    let node = Strata::edge(&toml);
    let request = |token: &str| {
        format!(
            "GET /account HTTP/1.1\r\nHost: shop.test\r\nAuthorization: Bearer {token}\r\n\
             X-User: mallory\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let ok = exchange(node.http, &request("good")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The user is the auth service's word, never the client's.
    assert_eq!(ok.text(), "hello alice");
    assert_eq!(auth.last().header("authorization"), Some("Bearer good"));
    let refused = exchange(node.http, &request("bad")).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        origin.count(),
        1,
        "a refused request never reaches the origin"
    );
    // With the auth service gone, the callout fails and the filter refuses.
    drop(auth);
    let down = exchange(node.http, &request("good")).await;
    assert_eq!(down.status, 403);
    assert_eq!(origin.count(), 1);
}
