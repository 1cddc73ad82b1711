//! Automatic certificates against a real ACME CA (Pebble): TLS-ALPN-01 and HTTP-01
//! answered by the node's own listeners, renewal at two thirds of the lifetime on the node
//! clock, the old certificate kept in service while the CA is down, and certificates kept
//! on disk across a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::CertificateDer;
use strata_proxy::clock::Clock;
use strata_proxy::config::{AcmeCertificate, AcmeSection, ChallengeKind, Seconds};

use crate::support::binary::Strata;
use crate::support::pebble::{free_port, Pebble};
use crate::support::tls::{TestPki, TlsClient};
use crate::support::{metric_value, scratch_dir, EdgeBuilder, Reply, TestOrigin};

const NAME: &str = "shop.strata.test";

fn acme_section(directory: String, ca: &Path, storage: &Path, kind: ChallengeKind) -> AcmeSection {
    AcmeSection {
        directory,
        contact: vec!["mailto:ops@strata.test".into()],
        ca_file: Some(ca.to_path_buf()),
        storage: storage.to_path_buf(),
        challenge: kind,
        retry: Seconds(Duration::from_millis(200)),
        certificates: vec![AcmeCertificate {
            names: vec![NAME.into()],
        }],
    }
}

/// The certificate `addr` presents for `name`, verified against `root` (None: the
/// handshake failed, or the certificate does not chain to `root`).
async fn presented(addr: SocketAddr, name: &str, root: &Path) -> Option<CertificateDer<'static>> {
    let tls = TlsClient::new(root)
        .alpn(&["http/1.1"])
        .handshake(addr, name)
        .await
        .ok()?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

/// Waits (bounded) until `addr` presents a certificate for `name` from `root` other than
/// `not`.
async fn served_from(
    addr: SocketAddr,
    name: &str,
    root: &Path,
    not: Option<&CertificateDer<'static>>,
) -> CertificateDer<'static> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(cert) = presented(addr, name, root).await {
            if Some(&cert) != not {
                return cert;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from the ACME CA for {name} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter in Prometheus text (0 until it first counts).
fn counter(metrics: &str, line_start: &str) -> u64 {
    metric_value(metrics, line_start).map_or(0, |v| v as u64)
}

const FAILED: &str = "strata_acme_orders_total{outcome=\"failed\"}";
const ISSUED: &str = "strata_acme_orders_total{outcome=\"issued\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_obtains_renews_at_two_thirds_and_keeps_the_old_certificate_while_the_ca_is_down(
) {
    let origin = TestOrigin::fixed(|| Reply::ok("behind acme").cc("max-age=60")).await;
    let pki = TestPki::new();
    let storage = scratch_dir("acme-alpn");
    let ca_port = free_port();
    let (clock, time) = Clock::manual(SystemTime::now());
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            c.listen.https = vec!["127.0.0.1:0".parse().unwrap()];
            c.tls.acme = acme_section(
                format!("https://127.0.0.1:{ca_port}/dir"),
                &pki.ca_pem,
                &storage,
                ChallengeKind::TlsAlpn01,
            );
        })
        .clock(clock)
        .start()
        .await;
    let https = edge.https.expect("https listener");

    // The CA is not there yet: orders fail, nothing is presented for the name, and the
    // node serves as before.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&edge.admin("/metrics").await.text(), FAILED) == 0 {
        assert!(Instant::now() < deadline, "no failed order counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(edge.get("/plain").send().await.status, 200);
    assert!(presented(https, NAME, &pki.ca_pem).await.is_none());

    // The CA comes up; the retry wait passes on the node clock.
    let pebble = Pebble::start(&pki, ca_port, edge.addr.port(), https.port());
    let root = pebble.root().await;
    time.advance(Duration::from_secs(3600));
    let first = served_from(https, NAME, &root, None).await;
    let got = TlsClient::new(&root).get(https, NAME, "/page").await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"behind acme");
    assert_eq!(got.cert_names, vec![NAME.to_string()]);
    let stored = storage.join(NAME);
    assert!(stored.join("cert.pem").exists() && stored.join("key.pem").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(stored.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
    let metrics = edge.admin("/metrics").await.text();
    assert_eq!(counter(&metrics, ISSUED), 1, "{metrics}");
    assert!(metrics.contains(
        "strata_acme_certificate_expiry_timestamp_seconds{certificate=\"shop.strata.test\"}"
    ));

    // Just before two thirds of its lifetime nothing is ordered; the CA goes away, and
    // at two thirds the renewal fails: the certificate in service stays.
    let info = strata_proxy::tls::certs::inspect(&first).unwrap();
    let lifetime = info.not_after.duration_since(info.not_before).unwrap();
    drop(pebble);
    let failed_before = counter(&edge.admin("/metrics").await.text(), FAILED);
    time.advance(lifetime * 2 / 3 - Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        counter(&edge.admin("/metrics").await.text(), FAILED),
        failed_before,
        "an order before two thirds of the lifetime"
    );
    time.advance(Duration::from_secs(3600 + 60));
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter(&edge.admin("/metrics").await.text(), FAILED) == failed_before {
        assert!(
            Instant::now() < deadline,
            "no renewal attempted at two thirds of the lifetime"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        presented(https, NAME, &root).await.as_ref(),
        Some(&first),
        "the certificate in service changed while the CA was down"
    );
    assert_eq!(
        TlsClient::new(&root).get(https, NAME, "/page").await.status,
        200
    );

    // The CA is back (a new instance: a new root, the account made again): the renewal
    // goes through and the new certificate replaces the old one.
    let pebble = Pebble::start(&pki, ca_port, edge.addr.port(), https.port());
    let new_root = pebble.root().await;
    time.advance(Duration::from_secs(3600));
    let renewed = served_from(https, NAME, &new_root, Some(&first)).await;
    assert_ne!(renewed, first);
    assert_eq!(counter(&edge.admin("/metrics").await.text(), ISSUED), 2);
    edge.stop().await;
    drop(pebble);
}

/// The node's configuration for the binary: fixed ports (Pebble must know them before it
/// starts), HTTP-01, two names on one certificate.
fn http01_node(http: u16, https: u16, pebble: &Pebble, storage: &Path, origin: &str) -> String {
    format!(
        "[listen]\nhttp = [\"127.0.0.1:{http}\"]\nhttps = [\"127.0.0.1:{https}\"]\n\
         admin = \"127.0.0.1:0\"\n\
         [log]\naccess = \"off\"\n\
         [tls.acme]\ndirectory = \"{}\"\nca_file = \"{}\"\nstorage = \"{}\"\n\
         challenge = \"http-01\"\nretry = \"200ms\"\n\
         [[tls.acme.certificate]]\nnames = [\"www.strata.test\", \"static.strata.test\"]\n\
         [[service]]\nname = \"site\"\nhosts = [\"*\"]\norigins = [\"{origin}\"]\n",
        pebble.directory,
        pebble.https_ca.display(),
        storage.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_with_the_binary_and_a_restart_serves_the_stored_certificate_without_the_ca() {
    let origin = TestOrigin::fixed(|| Reply::ok("www")).await;
    let pki = TestPki::new();
    let storage = scratch_dir("acme-http01");
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(&pki, 0, http, https);
    let root = pebble.root().await;
    let toml = http01_node(http, https, &pebble, &storage, &origin.url());
    let addr: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();

    let strata = Strata::edge(&toml);
    let cert = served_from(addr, "www.strata.test", &root, None).await;
    assert_eq!(
        presented(addr, "static.strata.test", &root).await.as_ref(),
        Some(&cert),
        "both names on one certificate"
    );
    let got = TlsClient::new(&root)
        .get(addr, "www.strata.test", "/")
        .await;
    assert_eq!((got.status.as_u16(), &got.body[..]), (200, &b"www"[..]));
    // A token nobody is validating is not answered by the node: it goes to the service.
    let probe = crate::support::binary::exchange(
        strata.http,
        b"GET /.well-known/acme-challenge/unknown HTTP/1.1\r\nhost: www.strata.test\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(probe.text(), "www");
    drop(strata);

    // Restarted with the CA gone: the stored certificate is in service at once.
    drop(pebble);
    let strata = Strata::edge(&toml);
    assert_eq!(
        presented(addr, "www.strata.test", &root).await.as_ref(),
        Some(&cert)
    );
    // And it orders nothing: it is not due (an order would fail, the CA being gone).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expiry = "strata_acme_certificate_expiry_timestamp_seconds";
    assert!(strata.metric(expiry).await.is_some(), "no {expiry}");
    assert_eq!(
        strata.metric(FAILED).await,
        None,
        "an order after the restart"
    );
    assert_eq!(
        strata.metric(ISSUED).await,
        None,
        "an order after the restart"
    );
    drop(strata);
}
