//! TLS to clients (`listen.https`, `[tls]`) and to origins (`https://` origins): what the
//! handshake chooses, which certificate is presented, resumption, reload, and the
//! certificate checks `check-config` makes.

use std::process::Command;
use std::time::Duration;

use http::{StatusCode, Version};
use strata_proxy::config::{
    CertificateConfig, OriginConfig, OriginEntry, PeerConfig, TlsSection, UnknownSni,
};

use crate::support::binary::strata_bin;
use crate::support::tls::{https_node, CertFiles, TestPki};
use crate::support::{EdgeBuilder, Reply, TestOrigin};

fn section(certs: &[&CertFiles]) -> TlsSection {
    TlsSection {
        certificates: certs
            .iter()
            .map(|c| CertificateConfig {
                cert: c.cert.clone(),
                key: c.key.clone(),
                names: Vec::new(),
                default: false,
            })
            .collect(),
        ..TlsSection::default()
    }
}

async fn proto_origin() -> TestOrigin {
    TestOrigin::start(|seen, _| {
        Reply::ok(format!(
            "proto={}",
            seen.header("x-forwarded-proto").unwrap_or("-")
        ))
        .cc("max-age=60")
    })
    .await
}

/// An edge with an https listener presenting `site.test` (from a test CA) in front of
/// `proto_origin`: the origin, the CA, the edge and its https address.
async fn site_edge() -> (
    TestOrigin,
    TestPki,
    crate::support::Edge,
    std::net::SocketAddr,
) {
    let origin = proto_origin().await;
    let pki = TestPki::new();
    let site = pki.issue("site", &["site.test"]);
    let edge = EdgeBuilder::new(&origin.url())
        .https(&[&site])
        .start()
        .await;
    let https = edge.https.expect("https listener");
    (origin, pki, edge, https)
}

#[tokio::test]
async fn https_serves_h2_and_http1_by_alpn_and_keys_copies_by_scheme() {
    let (origin, pki, edge, https) = site_edge().await;

    let h2 = pki.client().get(https, "site.test", "/a").await;
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.http_version, Version::HTTP_2);
    assert_eq!(h2.status, StatusCode::OK);
    assert_eq!(h2.body, "proto=https");

    let h1 = pki
        .client()
        .alpn(&["http/1.1"])
        .get(https, "site.test", "/a")
        .await;
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.http_version, Version::HTTP_11);
    assert!(h1.header("cache-status").unwrap().contains("hit"), "{h1:?}");
    assert_eq!(h1.body, "proto=https");

    // The plain listener has its own copy: an origin may answer http differently (a
    // redirect to https, stored and served to https clients, would loop).
    let plain = edge.get("/a").header("host", "site.test").send().await;
    assert_eq!(plain.text(), "proto=http");
    assert_eq!(origin.count(), 2);

    // A purge by URL removes both.
    edge.purge(r#"{"urls":["http://site.test/a"]}"#).await;
    let again = pki.client().get(https, "site.test", "/a").await;
    assert!(!again.header("cache-status").unwrap().contains("hit"));
    let plain = edge.get("/a").header("host", "site.test").send().await;
    assert!(!plain.is_hit());
    assert_eq!(origin.count(), 4);
}

#[tokio::test]
async fn sni_picks_the_exact_name_then_the_wildcard_then_the_default() {
    let origin = proto_origin().await;
    let pki = TestPki::new();
    let default = pki.issue("default", &["default.test"]);
    let site = pki.issue("site", &["site.test", "*.wild.test"]);
    let edge = EdgeBuilder::new(&origin.url())
        .https(&[&default, &site])
        .start()
        .await;
    let https = edge.https.unwrap();
    let names = |got: &crate::support::tls::TlsGot| got.cert_names.clone();

    let exact = pki.client().get(https, "site.test", "/").await;
    assert_eq!(names(&exact), ["site.test", "*.wild.test"]);
    let wild = pki.client().get(https, "a.wild.test", "/").await;
    assert_eq!(names(&wild), ["site.test", "*.wild.test"]);
    // One label only: `a.b.wild.test` is not covered, so the default answers (and this
    // client, checking the name, refuses it).
    let deep = pki.client().handshake(https, "a.b.wild.test").await;
    assert!(deep.is_err());
    let unknown = pki.client().handshake(https, "default.test").await;
    assert!(unknown.is_ok());
    // No SNI at all: the default certificate.
    let no_sni = pki.client().no_sni().get(https, "default.test", "/").await;
    assert_eq!(names(&no_sni), ["default.test"]);
}

#[tokio::test]
async fn unknown_sni_reject_ends_the_handshake_and_the_listener_keeps_serving() {
    let origin = proto_origin().await;
    let pki = TestPki::new();
    let site = pki.issue("site", &["site.test"]);
    let edge = EdgeBuilder::new(&origin.url())
        .https(&[&site])
        .config(|c| c.tls.unknown_sni = UnknownSni::Reject)
        .start()
        .await;
    let https = edge.https.unwrap();
    let err = pki
        .client()
        .handshake(https, "other.test")
        .await
        .expect_err("an unknown name is refused");
    assert!(err.to_string().contains("alert"), "{err}");
    let ok = pki.client().get(https, "site.test", "/").await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn rsa_and_ecdsa_certificates_are_both_served() {
    let origin = proto_origin().await;
    let pki = TestPki::new();
    let ecdsa = pki.issue("ecdsa", &["ec.test"]);
    let rsa = pki.issue_with("rsa", &["rsa.test"], pki.rsa_key(), |_| {});
    let edge = EdgeBuilder::new(&origin.url())
        .https(&[&ecdsa, &rsa])
        .start()
        .await;
    let https = edge.https.unwrap();
    for name in ["ec.test", "rsa.test"] {
        for client in [pki.client(), pki.client().tls12_only()] {
            let got = client.get(https, name, "/").await;
            assert_eq!(got.cert_names, [name]);
            assert_eq!(got.status, StatusCode::OK);
        }
    }
}

#[tokio::test]
async fn sessions_resume_on_tls13_and_tls12() {
    let (_origin, pki, _edge, https) = site_edge().await;
    for (client, version) in [
        (pki.client().remembering(), rustls::ProtocolVersion::TLSv1_3),
        (
            pki.client().tls12_only().remembering(),
            rustls::ProtocolVersion::TLSv1_2,
        ),
    ] {
        let first = client.get(https, "site.test", "/").await;
        assert_eq!(first.version, version);
        assert!(!first.resumed);
        let second = client.get(https, "site.test", "/").await;
        assert!(second.resumed, "{version:?} did not resume");
    }
}

#[tokio::test]
async fn only_tls12_and_tls13_are_spoken() {
    let origin = proto_origin().await;
    let pki = TestPki::new();
    let site = pki.issue("site", &["site.test"]);
    let edge = EdgeBuilder::new(&origin.url())
        .https(&[&site])
        .start()
        .await;
    let https = edge.https.unwrap().to_string();
    // OpenSSL, told to allow what it would otherwise refuse itself (SECLEVEL=0). Run
    // as a child the runtime awaits: the node answers on this test's runtime.
    let s_client = |version: &'static str| {
        let https = https.clone();
        async move {
            let out = tokio::process::Command::new("timeout")
                .args(["10", "openssl", "s_client", "-connect", &https])
                .args(["-servername", "site.test", version])
                .args(["-cipher", "DEFAULT@SECLEVEL=0"])
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .expect("openssl");
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(old).await;
        assert!(
            !out.contains("BEGIN CERTIFICATE") && !out.contains("Cipher is ECDHE"),
            "{old} negotiated:\n{out}"
        );
    }
    let out = s_client("-tls1_2").await;
    assert!(out.contains("Protocol  : TLSv1.2"), "{out}");
}

#[tokio::test]
async fn certificates_reload_in_place_and_a_bad_file_leaves_the_old_in_service() {
    let origin = proto_origin().await;
    let pki = TestPki::new();
    let first = pki.issue("first", &["site.test", "old.test"]);
    let edge = EdgeBuilder::new(&origin.url())
        .https(&[&first])
        .start()
        .await;
    let https = edge.https.unwrap();
    let got = pki.client().get(https, "site.test", "/").await;
    assert_eq!(got.cert_names, ["site.test", "old.test"]);

    let second = pki.issue("second", &["site.test", "new.test"]);
    edge.node().reload_tls(&section(&[&second])).unwrap();
    let got = pki.client().get(https, "site.test", "/").await;
    assert_eq!(got.cert_names, ["site.test", "new.test"]);

    std::fs::write(&second.cert, "garbage").unwrap();
    let err = edge.node().reload_tls(&section(&[&second])).unwrap_err();
    assert_eq!(err.path, "tls.certificate[0].cert");
    let got = pki.client().get(https, "site.test", "/").await;
    assert_eq!(got.cert_names, ["site.test", "new.test"]);
}

fn https_origin_entry(url: String, verify: bool, ca: Option<&std::path::Path>) -> OriginEntry {
    OriginEntry::Detailed(OriginConfig {
        url,
        priority: 1,
        weight: 1,
        max_connections: None,
        tls_verify: verify,
        ca_file: ca.map(|p| p.to_path_buf()),
        http2: true,
    })
}

#[tokio::test]
async fn https_origins_are_verified_by_name_and_reached_over_h2_when_offered() {
    let pki = TestPki::new();
    let cert = pki.issue("origin", &["origin.test"]);
    let origin = TestOrigin::start_tls(pki.acceptor(&cert), |seen, _| {
        Reply::ok(format!("{:?}", seen.version)).cc("max-age=60")
    })
    .await;
    let url = format!("https://{}", origin.addr);

    // The service's origin_host is the name asked for and checked, though the origin
    // is addressed by IP; the CA comes from ca_file.
    let edge = EdgeBuilder::new(&url)
        .config(|c| {
            c.services[0].origin_host = Some("origin.test".into());
            c.services[0].origins = vec![https_origin_entry(url.clone(), true, Some(&pki.ca_pem))];
        })
        .start()
        .await;
    let got = edge.get("/v").send().await;
    assert_eq!(got.status, StatusCode::OK);
    // The origin offers h2 and gets it, with `:authority` naming the site as `Host`
    // does (RFC 9113 §8.3.1), not the address connected to.
    assert_eq!(got.text(), "HTTP/2.0");
    let seen = origin.last();
    assert_eq!(seen.authority.as_deref(), Some("origin.test"));
    assert_eq!(seen.header("host"), Some("origin.test"));
    // Several misses, one connection (h2 multiplexes; a second TLS name would show).
    for i in 0..5 {
        assert_eq!(
            edge.get(&format!("/m{i}")).send().await.status,
            StatusCode::OK
        );
    }
    assert_eq!(origin.count(), 6);

    // `http2 = false`: the same origin, reached over HTTP/1.1.
    let h1 = EdgeBuilder::new(&url)
        .config(|c| {
            c.services[0].origin_host = Some("origin.test".into());
            let mut entry = https_origin_entry(url.clone(), true, Some(&pki.ca_pem));
            if let OriginEntry::Detailed(d) = &mut entry {
                d.http2 = false;
            }
            c.services[0].origins = vec![entry];
        })
        .start()
        .await;
    assert_eq!(h1.get("/v1").send().await.text(), "HTTP/1.1");

    // Asked as a name the certificate does not carry: refused, a 502 that says why.
    let wrong = EdgeBuilder::new(&url)
        .config(|c| {
            c.services[0].origin_host = Some("other.test".into());
            c.services[0].origins = vec![https_origin_entry(url.clone(), true, Some(&pki.ca_pem))];
        })
        .start()
        .await;
    let got = wrong.get("/v").send().await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(got.cache_status().contains("connect-failed"), "{got:?}");

    // Not trusted by the system's roots either.
    let untrusted = EdgeBuilder::new(&url)
        .config(|c| c.services[0].origin_host = Some("origin.test".into()))
        .start()
        .await;
    let got = untrusted.get("/v").send().await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);

    // Verification off, explicitly: accepted.
    let unverified = EdgeBuilder::new(&url)
        .config(|c| c.services[0].origins = vec![https_origin_entry(url.clone(), false, None)])
        .start()
        .await;
    assert_eq!(unverified.get("/v").send().await.status, StatusCode::OK);
}

/// `check-config` on a node config with this `[tls]` table; its exit code and stderr.
fn check_config(pki: &TestPki, tls: &str) -> (i32, String) {
    let path = pki.dir.join("node.toml");
    let text = format!(
        "[listen]\nhttp = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\n{tls}\n\
         [[service]]\nname = \"s\"\nhosts = [\"*\"]\norigins = [\"http://127.0.0.1:9\"]\n"
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(strata_bin())
        .args(["check-config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn check_config_refuses_expired_mismatched_and_unreadable_certificates_by_key() {
    let pki = TestPki::new();
    let good = pki.issue("good", &["site.test"]);
    assert_eq!(check_config(&pki, &CertFiles::toml(&good)).0, 0);

    let expired = pki.issue_with(
        "expired",
        &["site.test"],
        rcgen::KeyPair::generate().unwrap(),
        |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        },
    );
    let (code, err) = check_config(&pki, &CertFiles::toml(&expired));
    assert_eq!(code, 2);
    assert!(
        err.contains("tls.certificate[0].cert") && err.contains("expired"),
        "{err}"
    );

    let other = pki.issue("other", &["other.test"]);
    let mismatched = CertFiles {
        cert: good.cert.clone(),
        key: other.key.clone(),
    };
    let (code, err) = check_config(&pki, &CertFiles::toml(&mismatched));
    assert_eq!(code, 2);
    assert!(
        err.contains("tls.certificate[0].key") && err.contains("does not match"),
        "{err}"
    );

    let missing = CertFiles {
        cert: pki.dir.join("nowhere.pem"),
        key: good.key.clone(),
    };
    let (code, err) = check_config(&pki, &CertFiles::toml(&missing));
    assert_eq!(code, 2);
    assert!(err.contains("tls.certificate[0].cert"), "{err}");

    let (code, err) = check_config(&pki, "");
    assert_eq!(code, 2);
    assert!(err.contains("tls.certificate"), "{err}");
}

/// An origin that offers only HTTP/1.1 over TLS: named by its own address.
async fn http1_tls_origin(pki: &TestPki, name: &str) -> TestOrigin {
    let cert = pki.issue(name, &["site.test"]);
    let mut config = (**pki.acceptor(&cert).config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let who = name.to_string();
    TestOrigin::start_tls(
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        move |seen, _| {
            Reply::ok(format!(
                "{who} {:?} {}",
                seen.version,
                seen.header("host").unwrap_or("-")
            ))
            .cc("no-store")
        },
    )
    .await
}

#[tokio::test]
async fn two_https_origins_of_one_site_never_share_a_connection() {
    // Both origins serve `site.test`: requests name the site, so only the per-origin
    // clients keep a request for one from riding a connection to the other.
    let pki = TestPki::new();
    let first = http1_tls_origin(&pki, "first").await;
    let h2 = {
        let cert = pki.issue("second", &["site.test"]);
        TestOrigin::start_tls(pki.acceptor(&cert), |seen, _| {
            Reply::ok(format!(
                "second {:?} {}",
                seen.version,
                seen.authority.as_deref().unwrap_or("-")
            ))
            .cc("no-store")
        })
        .await
    };
    let (a, b) = (
        format!("https://{}", first.addr),
        format!("https://{}", h2.addr),
    );
    let edge = EdgeBuilder::new(&a)
        .config(|c| {
            c.services[0].origin_host = Some("site.test".into());
            c.services[0].origins = vec![
                https_origin_entry(a.clone(), true, Some(&pki.ca_pem)),
                https_origin_entry(b.clone(), true, Some(&pki.ca_pem)),
            ];
        })
        .start()
        .await;
    let mut answers = Vec::new();
    for i in 0..8 {
        let got = edge.get(&format!("/r{i}")).send().await;
        assert_eq!(got.status, StatusCode::OK);
        answers.push(got.text());
    }
    // Round-robin between the two, each over its own protocol, the site named in each.
    assert_eq!(first.count(), 4, "{answers:?}");
    assert_eq!(h2.count(), 4, "{answers:?}");
    assert!(
        answers.contains(&"first HTTP/1.1 site.test".to_string()),
        "{answers:?}"
    );
    assert!(
        answers.contains(&"second HTTP/2.0 site.test".to_string()),
        "{answers:?}"
    );
    for answer in &answers {
        assert!(
            answer == "first HTTP/1.1 site.test" || answer == "second HTTP/2.0 site.test",
            "{answers:?}"
        );
    }
}

#[tokio::test]
async fn sighup_reloads_certificates_and_refuses_a_broken_file() {
    let origin = proto_origin().await;
    let pki = TestPki::new();
    let cert = pki.issue("live", &["site.test", "old.test"]);
    let toml = https_node(&cert, &origin.url(), false, "");
    let node = crate::support::binary::Strata::edge(&toml);
    let https = node.https.expect("https listener");
    let got = pki.client().get(https, "site.test", "/").await;
    assert_eq!(got.cert_names, ["site.test", "old.test"]);

    // Renewed in place (as certbot does), then SIGHUP.
    let renewed = pki.issue("renewed", &["site.test", "new.test"]);
    std::fs::copy(&renewed.cert, &cert.cert).unwrap();
    std::fs::copy(&renewed.key, &cert.key).unwrap();
    node.signal("HUP");
    let mut names = Vec::new();
    for _ in 0..50 {
        names = pki.client().get(https, "site.test", "/").await.cert_names;
        if names.contains(&"new.test".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names, ["site.test", "new.test"]);

    // Garbage: refused, logged, the renewed one stays.
    std::fs::write(&cert.cert, "not a certificate").unwrap();
    node.signal("HUP");
    for _ in 0..50 {
        if node.stderr_lines_with("reload refused") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.stderr_lines_with("reload refused"), 1);
    let got = pki.client().get(https, "site.test", "/").await;
    assert_eq!(got.cert_names, ["site.test", "new.test"]);
}

#[tokio::test]
async fn http3_serves_the_same_cache_as_h2_and_alt_svc_announces_it() {
    let (origin, pki, edge, https) = site_edge().await;

    let h2 = pki.client().get(https, "site.test", "/a").await;
    let alt_svc = format!("h3=\":{}\"; ma=86400", https.port());
    assert_eq!(h2.header("alt-svc"), Some(alt_svc.as_str()));
    // Not on the plain listener: Alt-Svc there could not name an https service.
    let plain = edge.get("/a").header("host", "site.test").send().await;
    assert_eq!(plain.header("alt-svc"), None);

    // Over HTTP/3: the copy h2 stored (one code path, one cache), several requests on one
    // connection, and a miss that goes to the origin like any other.
    let got = pki.h3_get(https, "site.test", &["/a", "/a", "/b"]).await;
    assert!(got.iter().all(|g| g.status == StatusCode::OK));
    assert!(
        got[0].header("cache-status").unwrap().contains("hit"),
        "{got:?}"
    );
    assert_eq!(got[0].body, "proto=https");
    assert!(!got[2].header("cache-status").unwrap().contains("hit"));
    assert_eq!(got[2].body, "proto=https");
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn an_http3_client_we_did_not_write_fetches_from_the_cache() {
    let (origin, _pki, _edge, https) = site_edge().await;
    let dir = crate::support::scratch_dir("ngtcp2");
    // ngtcp2's example client (GnuTLS), from Debian's ngtcp2-client.
    let out = tokio::process::Command::new("timeout")
        .args([
            "20",
            "gtlsclient",
            "--quiet",
            "--no-quic-dump",
            "--exit-on-all-streams-close",
        ])
        .arg(format!("--download={}", dir.display()))
        .args(["--sni=site.test", "127.0.0.1", &https.port().to_string()])
        .arg(format!("https://site.test:{}/ngtcp2", https.port()))
        .output()
        .await
        .expect("gtlsclient (scripts/test.sh installs ngtcp2-client)");
    let dump =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{dump}");
    assert_eq!(
        std::fs::read_to_string(dir.join("ngtcp2")).expect("downloaded body"),
        "proto=https"
    );
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn strata_reload_goes_through_the_admin_api_and_reports_a_refusal() {
    let origin = proto_origin().await;
    let pki = TestPki::new();
    let cert = pki.issue("live", &["site.test", "old.test"]);
    let toml = https_node(&cert, &origin.url(), true, "");
    let node = crate::support::binary::Strata::edge(&toml);
    let https = node.https.expect("https listener");
    let admin = format!("http://{}", node.admin.expect("admin listener"));
    let reload = || {
        let admin = admin.clone();
        async move {
            let out = tokio::process::Command::new(strata_bin())
                .args(["reload", "--admin", &admin])
                .output()
                .await
                .expect("strata reload");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };

    let renewed = pki.issue("renewed", &["site.test", "new.test"]);
    std::fs::copy(&renewed.cert, &cert.cert).unwrap();
    std::fs::copy(&renewed.key, &cert.key).unwrap();
    let (code, out) = reload().await;
    assert_eq!((code, out.trim()), (0, "reloaded"));
    let got = pki.client().get(https, "site.test", "/").await;
    assert_eq!(got.cert_names, ["site.test", "new.test"]);

    // A key that no longer matches: refused, exit 2, the reason named, nothing changes.
    let other = pki.issue("other", &["other.test"]);
    std::fs::copy(&other.key, &cert.key).unwrap();
    let (code, out) = reload().await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("tls.certificate[0].key") && out.contains("does not match"),
        "{out}"
    );
    let got = pki.client().get(https, "site.test", "/").await;
    assert_eq!(got.cert_names, ["site.test", "new.test"]);
}

#[tokio::test]
async fn ring_hops_use_mutual_tls_and_strata_ring_needs_a_cluster_certificate() {
    let pki = TestPki::new(); // the cluster CA
    let origin =
        TestOrigin::start(|seen, _| Reply::ok(format!("origin {}", seen.path())).cc("max-age=600"))
            .await;
    // The ring's other member: a stand-in on 127.0.0.2 that refuses any client without a
    // certificate from the cluster CA, and records what reaches it.
    let other_cert = pki.issue_with(
        "other",
        &["other.cluster"],
        rcgen::KeyPair::generate().unwrap(),
        |p| {
            p.subject_alt_names
                .push(rcgen::SanType::IpAddress([127, 0, 0, 2].into()))
        },
    );
    let other = TestOrigin::start_tls_on(
        "127.0.0.2:0",
        pki.acceptor_requiring_clients(&other_cert),
        |seen, _| Reply::ok(format!("from the owner: {}", seen.path())).cc("max-age=600"),
    )
    .await;
    let node_cert = pki.issue("edge", &["edge.cluster"]);
    let ca = pki.ca_pem.clone();
    let (cert, key) = (node_cert.cert.clone(), node_cert.key.clone());
    let other_url = format!("https://{}", other.addr);
    let edge = EdgeBuilder::new(&origin.url())
        .https(&[&node_cert])
        .config(move |c| {
            c.node.name = "edge-m".into();
            c.tls.client_ca = Some(ca);
            c.tls.client_cert = Some(cert);
            c.tls.client_key = Some(key);
            c.hot.threshold = 0.0;
            c.ring.peers = vec![
                PeerConfig {
                    name: "edge-m".into(),
                    url: "https://127.0.0.1:1".into(),
                    weight: 1,
                },
                PeerConfig {
                    name: "other".into(),
                    url: other_url,
                    weight: 1,
                },
            ];
        })
        .start()
        .await;
    let https = edge.https.unwrap();
    let reached = |prefix: &str| {
        other
            .seen()
            .iter()
            .filter(|s| s.path().starts_with(prefix))
            .count()
    };

    // From a peer's address (127.0.0.2, "other"'s) but without a certificate:
    // `strata-ring` is not believed, so the keys "other" owns go to it, over mutual TLS
    // (it refuses anyone without a cluster certificate).
    let peer_ip = std::net::IpAddr::from([127, 0, 0, 2]);
    let anonymous = pki.client().connecting_from(peer_ip);
    for i in 0..16 {
        let got = anonymous
            .get_with(
                https,
                "edge.cluster",
                &format!("/a{i}"),
                &[("strata-ring", "other")],
            )
            .await;
        assert_eq!(got.status, StatusCode::OK);
    }
    assert!(
        reached("/a") > 0,
        "the field was believed without a certificate"
    );

    // A peer that proves itself with a cluster certificate is believed: served here.
    let peer = pki
        .client()
        .connecting_from(peer_ip)
        .client_cert(&node_cert);
    for i in 0..16 {
        let got = peer
            .get_with(
                https,
                "edge.cluster",
                &format!("/b{i}"),
                &[("strata-ring", "other")],
            )
            .await;
        assert_eq!(got.status, StatusCode::OK);
    }
    assert_eq!(reached("/b"), 0);
}

#[test]
fn check_config_keeps_ring_hops_and_the_cluster_ca_together() {
    let pki = TestPki::new();
    let node = pki.issue("node", &["node.cluster"]);
    let ring = |scheme: &str| {
        format!(
            "[node]\nname = \"a\"\n[ring]\npeers = [{{ name = \"a\", url = \"{scheme}://127.0.0.1:1\" }}, \
             {{ name = \"b\", url = \"{scheme}://127.0.0.2:1\" }}]\n"
        )
    };
    let cluster = format!(
        "client_ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        pki.ca_pem.display(),
        node.cert.display(),
        node.key.display()
    );
    let run = |text: String| {
        let path = pki.dir.join("ring.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(strata_bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let service =
        "[[service]]\nname = \"s\"\nhosts = [\"*\"]\norigins = [\"http://127.0.0.1:9\"]\n";
    let (code, err) = run(format!("{}{service}", ring("https")));
    assert_eq!(code, 2);
    assert!(
        err.contains("ring.peers[1].url") && err.contains("tls.client_ca"),
        "{err}"
    );
    let (code, err) = run(format!("{}[tls]\n{cluster}{service}", ring("http")));
    assert_eq!(code, 2);
    assert!(
        err.contains("ring.peers[1].url") && err.contains("https://"),
        "{err}"
    );
    let (code, err) = run(format!("{}[tls]\n{cluster}{service}", ring("https")));
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn an_edge_reaches_its_shield_over_tls_verified_by_the_cluster_ca() {
    let pki = TestPki::new(); // the cluster CA
    let origin = proto_origin().await;
    let shield_cert = pki.issue("shield", &["shield.cluster"]);
    let ca = pki.ca_pem.clone();
    let shield = EdgeBuilder::new(&origin.url())
        .https(&[&shield_cert])
        .config({
            let ca = ca.clone();
            move |c| {
                c.node.name = "shield-t".into();
                c.node.role = strata_proxy::config::Role::Shield;
                c.tls.client_ca = Some(ca);
                // Edges on loopback carry every user's misses (and their scheme).
                c.forwarding.trusted_proxies = vec!["127.0.0.0/8".into()];
            }
        })
        .start()
        .await;
    let edge_cert = pki.issue("edge", &["edge.cluster"]);
    let (cert, key) = (edge_cert.cert.clone(), edge_cert.key.clone());
    let parent = format!("https://{}", shield.https.unwrap());
    let edge = EdgeBuilder::new(&origin.url())
        .config(move |c| {
            c.node.name = "edge-t".into();
            c.parents.shields = vec![parent];
            c.tls.client_ca = Some(ca);
            c.tls.client_cert = Some(cert);
            c.tls.client_key = Some(key);
        })
        .start()
        .await;
    let got = edge.get("/via-shield").send().await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.cache_statuses());
    assert!(
        got.status_of("shield-t").is_some(),
        "{:?}",
        got.cache_statuses()
    );
    // (The shield asks for a client certificate, the edge presents its own: a certificate
    // that did not chain to the cluster CA would have failed the handshake.)
    let again = edge.get("/via-shield").send().await;
    assert!(again.is_hit());
}
