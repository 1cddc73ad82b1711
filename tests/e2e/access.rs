//! The access phase against the real proxy: EdgeAuth tokens made by Akamai's own
//! generators (PyPI and npm, installed by scripts/test.sh), signed URLs made by
//! `strata sign`, network/method/referrer rules, countries from a MaxMind DB written by
//! `mmdb-writer` (PyPI), and rate limits.

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use strata_proxy::config::{
    AccessConfig, RateLimitConfig, RuleConfig, Seconds, SignedUrlConfig, TokenConfig,
};

use crate::support::binary::strata_bin;
use crate::support::{Edge, EdgeBuilder, Reply, TestOrigin};

const KEY: &str = "52a152a152a152a152a152a152a152a1";

/// Where scripts/test.sh installs Akamai's generators.
fn tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `script` with the Python of the virtual environment `venv` that scripts/test.sh
/// made under target/test-tools; its standard output.
fn python(venv: &str, script: &str) -> String {
    let python = tools().join(venv).join("bin/python");
    let out = Command::new(&python)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/test.sh, which installs it)",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A token from Akamai's Python generator (`akamai-edgeauth`): `args` are Python keyword
/// arguments of `EdgeAuth`, `call` the method call.
fn python_token(args: &str, call: &str) -> String {
    let script = format!(
        "from akamai.edgeauth import EdgeAuth\nprint(EdgeAuth(key='{KEY}', {args}).{call})"
    );
    python("edgeauth-py", &script).trim().to_string()
}

/// A token from Akamai's Node generator (`akamai-edgeauth` on npm).
fn node_token(options: &str, call: &str) -> String {
    let module = tools().join("edgeauth-node/node_modules/akamai-edgeauth");
    assert!(
        module.exists(),
        "{} (run scripts/test.sh, which installs it)",
        module.display()
    );
    let script = format!(
        "const EdgeAuth = require(process.argv[1]);\n\
         console.log(new EdgeAuth({{key: '{KEY}', {options}}}).{call})"
    );
    let out = Command::new("node")
        .args(["-e", &script])
        .arg(&module)
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn token_config() -> TokenConfig {
    TokenConfig {
        keys: vec![KEY.into()],
        name: "__token__".into(),
        from: vec!["query".into(), "cookie".into(), "header".into()],
        algorithm: "sha256".into(),
        salt: None,
        leeway: Seconds(std::time::Duration::from_secs(5)),
        max_lifetime: None,
        escape_early: false,
    }
}

/// An origin that names the target it was asked for.
async fn echo_origin() -> TestOrigin {
    TestOrigin::start(|seen, _| Reply::ok(seen.path_and_query.clone()).cc("max-age=300")).await
}

async fn edge_with(origin: &TestOrigin, access: AccessConfig) -> Edge {
    EdgeBuilder::new(&origin.url())
        .config(move |c| c.services[0].access = Some(access.clone()))
        .start()
        .await
}

#[tokio::test]
async fn tokens_from_akamais_python_and_node_generators_open_what_they_name() {
    let origin = echo_origin().await;
    let edge = edge_with(
        &origin,
        AccessConfig {
            token: Some(token_config()),
            ..AccessConfig::default()
        },
    )
    .await;

    // An ACL token (Python) in the query: served, the origin asked without it.
    let acl = python_token("window_seconds=300", "generate_acl_token('/video/*')");
    let got = edge
        .get(&format!("/video/a.ts?q=1&__token__={acl}"))
        .send()
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.cache_status());
    assert_eq!(got.text(), "/video/a.ts?q=1");
    // A URL token for the same path (Node), in a cookie: the same cached copy.
    let url = node_token("windowSeconds: 300", "generateURLToken('/video/a.ts')");
    let got = edge
        .get("/video/a.ts?q=1")
        .header("cookie", &format!("__token__={url}"))
        .send()
        .await;
    assert!(got.is_hit(), "{}", got.cache_status());
    assert_eq!(origin.count(), 1);
    // The same token in the header, and an ACL token from Node with two patterns.
    let got = edge
        .get("/video/a.ts?q=1")
        .header("__token__", &url)
        .send()
        .await;
    assert_eq!(got.status, StatusCode::OK);
    let two = node_token(
        "windowSeconds: 300",
        "generateACLToken(['/img/*', '/video/*'])",
    );
    let got = edge
        .get(&format!("/img/x.png?__token__={two}"))
        .send()
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.cache_status());

    // Refusals say why, and nothing reaches the origin.
    let before = origin.count();
    let refused = |got: &crate::support::edge::Got, why: &str| {
        assert_eq!(got.status, StatusCode::FORBIDDEN, "{}", got.cache_status());
        assert!(got.cache_status().contains(why), "{}", got.cache_status());
    };
    refused(&edge.get("/video/b.ts").send().await, "token-missing");
    refused(
        &edge
            .get(&format!("/audio/a.aac?__token__={acl}"))
            .send()
            .await,
        "token-wrong-path",
    );
    // A URL token is for its path alone: elsewhere its signature does not hold.
    refused(
        &edge
            .get(&format!("/video/b.ts?__token__={url}"))
            .send()
            .await,
        "token-bad-signature",
    );
    let expired = python_token(
        &format!("start_time={}, end_time={}", now() - 600, now() - 300),
        "generate_acl_token('/video/*')",
    );
    refused(
        &edge
            .get(&format!("/video/a.ts?__token__={expired}"))
            .send()
            .await,
        "token-expired",
    );
    let other_key = python_token("window_seconds=300", "generate_acl_token('/*')")
        .replace("acl=/*", "acl=/video/*");
    refused(
        &edge
            .get(&format!("/video/a.ts?__token__={other_key}"))
            .send()
            .await,
        "token-bad-signature",
    );
    // Bound to another address.
    let elsewhere = python_token(
        "window_seconds=300, ip='192.0.2.7'",
        "generate_acl_token('/*')",
    );
    refused(
        &edge
            .get(&format!("/video/a.ts?__token__={elsewhere}"))
            .send()
            .await,
        "token-wrong-ip",
    );
    let here = python_token(
        "window_seconds=300, ip='127.0.0.1'",
        "generate_acl_token('/*')",
    );
    assert_eq!(
        edge.get(&format!("/video/c.ts?__token__={here}"))
            .send()
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(origin.count(), before + 1);
}

#[tokio::test]
async fn strata_sign_makes_urls_the_edge_accepts_and_either_key_of_two_works() {
    let origin = echo_origin().await;
    let signed = |keys: &[&str]| AccessConfig {
        signed_urls: Some(SignedUrlConfig {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            expires_param: "expires".into(),
            signature_param: "signature".into(),
            leeway: Seconds(std::time::Duration::from_secs(5)),
            max_lifetime: Some(Seconds(std::time::Duration::from_secs(86400))),
        }),
        ..AccessConfig::default()
    };
    // The node after rotation: the new key first, the old one still accepted.
    let edge = edge_with(
        &origin,
        signed(&["new-secret-0123456789", "old-secret-0123456789"]),
    )
    .await;
    let dir = crate::support::scratch_dir("sign");
    let sign = |keys: &str, path: &str, ttl: &str| {
        let file = dir.join(format!("{}.toml", keys.len()));
        std::fs::write(
            &file,
            format!(
                "[listen]\nhttp = [\"127.0.0.1:0\"]\n[[service]]\nname = \"s\"\nhosts = [\"*\"]\n\
                 origins = [\"http://127.0.0.1:9\"]\n[service.access.signed_urls]\nkeys = [{keys}]\n"
            ),
        )
        .unwrap();
        let out = Command::new(strata_bin())
            .args(["sign", "--config"])
            .arg(&file)
            .args([
                "--host",
                "files.test",
                "--scheme",
                "http",
                "--ttl",
                ttl,
                path,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        url.strip_prefix("http://files.test").unwrap().to_string()
    };
    let by_new = sign("\"new-secret-0123456789\"", "/f/a.bin?v=2", "1h");
    let got = edge.get(&by_new).send().await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "{} {by_new}",
        got.cache_status()
    );
    assert_eq!(got.text(), "/f/a.bin?v=2");
    let by_old = sign("\"old-secret-0123456789\"", "/f/a.bin?v=2", "10m");
    assert!(edge.get(&by_old).send().await.is_hit());
    assert_eq!(origin.count(), 1);

    let by_other = sign("\"someone-else-0123456789\"", "/f/a.bin?v=2", "1h");
    let got = edge.get(&by_other).send().await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert!(
        got.cache_status().contains("token-bad-signature"),
        "{}",
        got.cache_status()
    );
    let moved = by_new.replace("/f/a.bin", "/f/b.bin");
    assert!(edge
        .get(&moved)
        .send()
        .await
        .cache_status()
        .contains("token-bad-signature"));
    // Signed for longer than the node accepts (max_lifetime: a day).
    let forever = sign("\"new-secret-0123456789\"", "/f/a.bin", "400d");
    let got = edge.get(&forever).send().await;
    assert!(
        got.cache_status().contains("token-too-long-lived"),
        "{}",
        got.cache_status()
    );
    assert_eq!(origin.count(), 1);

    // No access settings for the path: `strata sign` says so and exits 2.
    let file = dir.join("plain.toml");
    std::fs::write(
        &file,
        "[listen]\nhttp = [\"127.0.0.1:0\"]\n[[service]]\nname = \"s\"\nhosts = [\"*\"]\n\
         origins = [\"http://127.0.0.1:9\"]\n",
    )
    .unwrap();
    let out = Command::new(strata_bin())
        .args(["sign", "--config"])
        .arg(&file)
        .args(["--host", "files.test", "/f"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no access settings"));
}

#[tokio::test]
async fn access_rules_refuse_networks_methods_and_hotlinks_per_rule() {
    let origin = echo_origin().await;
    let mut internal = RuleConfig::prefix("/internal/");
    internal.access = Some(AccessConfig {
        allow: vec!["10.0.0.0/8".into()],
        ..AccessConfig::default()
    });
    let mut open = RuleConfig::prefix("/open/");
    // A rule's access replaces the service's: an empty one lifts it.
    open.access = Some(AccessConfig::default());
    let edge = EdgeBuilder::new(&origin.url())
        .config(move |c| {
            c.services[0].access = Some(AccessConfig {
                deny: vec!["192.0.2.0/24".into()],
                methods: vec!["GET".into(), "HEAD".into()],
                referrers: vec!["example.com".into(), "*.example.com".into()],
                allow_no_referrer: false,
                ..AccessConfig::default()
            });
            c.services[0].rules = vec![internal.clone(), open.clone()];
        })
        .start()
        .await;
    let got = edge.get("/internal/x").send().await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert!(got.cache_status().contains("access-denied-network"));

    let got = edge
        .get("/a")
        .header("referer", "https://evil.test/page")
        .send()
        .await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert!(got.cache_status().contains("access-denied-referrer"));
    assert!(edge
        .get("/a")
        .send()
        .await
        .cache_status()
        .contains("access-denied-referrer"));
    let got = edge
        .get("/a")
        .header("referer", "https://www.example.com/p")
        .send()
        .await;
    assert_eq!(got.status, StatusCode::OK);

    let got = edge
        .request(Method::POST, "/a")
        .header("referer", "https://example.com/")
        .body("x")
        .send()
        .await;
    assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(got.headers["allow"], "GET, HEAD");

    let metrics = edge.admin("/metrics").await.text();
    assert_eq!(
        crate::support::metric_value(
            &metrics,
            "strata_access_refused_total{reason=\"access-denied-referrer\"}"
        ),
        Some(2.0)
    );
    // Under /open/ nothing applies.
    assert_eq!(
        edge.request(Method::POST, "/open/x")
            .body("x")
            .send()
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_bucket() {
    let origin = echo_origin().await;
    let edge = edge_with(
        &origin,
        AccessConfig {
            rate_limit: Some(RateLimitConfig {
                requests_per_second: 0.2,
                burst: Some(3),
                key: "header:x-api-key".into(),
            }),
            ..AccessConfig::default()
        },
    )
    .await;
    for _ in 0..3 {
        let got = edge.get("/r").header("x-api-key", "a").send().await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let got = edge.get("/r").header("x-api-key", "a").send().await;
    assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(got.cache_status().contains("rate-limited"));
    // One request every 5 s: the bucket has one again within 5 s.
    let retry: u64 = got.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    // Hits are limited too (the limit is on asking, not on origin load)...
    assert_eq!(
        edge.get("/r").header("x-api-key", "a").send().await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...while another key, and requests without one (the address's bucket), go on.
    assert_eq!(
        edge.get("/r").header("x-api-key", "b").send().await.status,
        StatusCode::OK
    );
    assert_eq!(edge.get("/r").send().await.status, StatusCode::OK);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_checks_are_about_the_client_it_forwarded_for() {
    let origin = echo_origin().await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            c.forwarding.trusted_proxies = vec!["127.0.0.0/8".into()];
            c.services[0].access = Some(AccessConfig {
                deny: vec!["192.0.2.0/24".into()],
                rate_limit: Some(RateLimitConfig {
                    requests_per_second: 0.1,
                    burst: Some(1),
                    key: "client".into(),
                }),
                ..AccessConfig::default()
            });
        })
        .start()
        .await;
    // The load balancer (127.0.0.1) says which client it forwards for.
    let got = edge
        .get("/a")
        .header("x-forwarded-for", "192.0.2.9")
        .send()
        .await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert!(got.cache_status().contains("access-denied-network"));
    // Two clients behind it have a bucket each; the proxy is not one client.
    let first = edge
        .get("/a")
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let again = edge
        .get("/a")
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    let other = edge
        .get("/a")
        .header("x-forwarded-for", "203.0.113.5, 198.51.100.2")
        .send()
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

/// A GeoIP2-Country database written by `mmdb-writer` (PyPI, installed by scripts/test.sh
/// into target/test-tools): a MaxMind DB file as MaxMind's own readers read it.
fn country_database(dir: &std::path::Path, networks: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("countries.mmdb");
    let inserts: String = networks
        .iter()
        .map(|(net, code)| {
            format!("w.insert_network(IPSet(['{net}']), {{'country': {{'iso_code': '{code}'}}}})\n")
        })
        .collect();
    let script = format!(
        "from mmdb_writer import MMDBWriter\nfrom netaddr import IPSet\n\
         w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type='GeoIP2-Country')\n\
         {inserts}w.to_db_file('{}')\n",
        path.display()
    );
    python("mmdb-py", &script);
    path
}

#[tokio::test]
async fn countries_come_from_a_maxmind_database_and_the_geo_networks_override_it() {
    let dir = crate::support::scratch_dir("geo");
    let database = country_database(
        &dir,
        &[
            ("198.51.100.0/24", "DE"),
            ("203.0.113.0/24", "FR"),
            ("2001:db8::/32", "DE"),
        ],
    );
    let origin = echo_origin().await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(move |c| {
            c.forwarding.trusted_proxies = vec!["127.0.0.0/8".into()];
            c.geo.database = Some(database);
            // The database says FR; the operator knows better for this /28.
            c.geo.networks.insert("203.0.113.16/28".into(), "DE".into());
            c.services[0].access = Some(AccessConfig {
                countries: vec!["DE".into(), "XX".into()],
                deny_countries: vec!["xx".into()],
                ..AccessConfig::default()
            });
            let mut open = RuleConfig::prefix("/open/");
            open.access = Some(AccessConfig {
                countries: vec!["fr".into()],
                ..AccessConfig::default()
            });
            c.services[0].rules.push(open);
        })
        .start()
        .await;
    let from = |client: &'static str, path: &'static str| {
        let edge = &edge;
        async move {
            edge.get(path)
                .header("x-forwarded-for", client)
                .send()
                .await
        }
    };
    assert_eq!(from("198.51.100.7", "/a").await.status, StatusCode::OK);
    assert_eq!(from("2001:db8::1", "/a").await.status, StatusCode::OK);
    let france = from("203.0.113.7", "/a").await;
    assert_eq!(france.status, StatusCode::FORBIDDEN);
    assert!(
        france.cache_status().contains("access-denied-country"),
        "{}",
        france.cache_status()
    );
    assert_eq!(
        from("203.0.113.20", "/a").await.status,
        StatusCode::OK,
        "overridden to DE"
    );
    // Unknown to both sources: XX, denied here even though `countries` lists it.
    assert_eq!(from("192.0.2.1", "/a").await.status, StatusCode::FORBIDDEN);
    // The rule's own list replaces the service's.
    assert_eq!(from("203.0.113.7", "/open/x").await.status, StatusCode::OK);
    assert_eq!(
        from("198.51.100.7", "/open/x").await.status,
        StatusCode::FORBIDDEN
    );
    let metrics = edge.admin("/metrics").await.text();
    assert!(
        metrics.contains("strata_access_refused_total{reason=\"access-denied-country\"} 3"),
        "{metrics}"
    );
}

#[test]
fn check_config_names_a_geo_database_that_is_not_one_and_countries_without_geo() {
    let dir = crate::support::scratch_dir("geo-check");
    let garbage = dir.join("countries.mmdb");
    std::fs::write(&garbage, b"not a database").unwrap();
    let base = "[[service]]\nname = \"s\"\nhosts = [\"*\"]\norigins = [\"http://127.0.0.1:9\"]\n\
                [service.access]\ncountries = [\"DE\"]\n";
    for (config, key) in [
        (
            format!("[geo]\ndatabase = \"{}\"\n{base}", garbage.display()),
            "geo.database",
        ),
        (base.to_string(), "service[0].access.countries"),
    ] {
        let path = dir.join("node.toml");
        std::fs::write(&path, config).unwrap();
        let out = Command::new(strata_bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(key), "{stderr}");
    }
}
