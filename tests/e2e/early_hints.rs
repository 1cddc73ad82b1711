//! Interim responses (RFC 9110 §15.2, RFC 8297 `103 Early Hints`): an origin's 103 reaches
//! the client before the final response and is never stored; a rule's configured hints
//! go out before a miss goes upstream; HTTP/1.0 clients get none; h2 and HTTP/3 clients get
//! them as HEADERS frames before the final one.

use std::time::Duration;

use strata_proxy::config::RuleConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::support::tls::TestPki;
use crate::support::{EdgeBuilder, Reply, TestOrigin};

const LINK: &str = "</style.css>; rel=preload; as=style";

/// An origin that answers every request with `103 Early Hints` (a `Link`), then, once
/// `release` is notified (or at once without one), `200` with `hello`. Raw bytes: hyper's
/// server cannot send a 103. Serves `max` connections, then stops.
async fn hinting_origin(release: Option<std::sync::Arc<Notify>>, max: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..max {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let release = release.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let hints = format!("HTTP/1.1 103 Early Hints\r\nlink: {LINK}\r\n\r\n");
                s.write_all(hints.as_bytes()).await.unwrap();
                if let Some(release) = release {
                    release.notified().await;
                }
                s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncache-control: max-age=60\r\n\
                      content-length: 5\r\nconnection: close\r\n\r\nhello",
                )
                .await
                .unwrap();
            });
        }
    });
    format!("http://{addr}")
}

/// An edge with an https listener (a certificate for `site.test` from a test CA) in front
/// of a hinting origin: the CA, the edge, its https address.
async fn hinting_https_edge() -> (TestPki, crate::support::Edge, std::net::SocketAddr) {
    let origin = hinting_origin(None, 8).await;
    let pki = TestPki::new();
    let site = pki.issue("site", &["site.test"]);
    let edge = EdgeBuilder::new(&origin).https(&[&site]).start().await;
    let https = edge.https.expect("https listener");
    (pki, edge, https)
}

/// The origin's one `103` (its `Link`), then the final `200 hello`.
fn one_hint_then_hello(got: &crate::support::tls::Got) {
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "hello");
    assert_eq!(got.interim.len(), 1, "{got:?}");
    let (status, headers) = &got.interim[0];
    assert_eq!(status.as_u16(), 103);
    assert_eq!(headers.get("link").unwrap(), LINK);
}

/// Sends `request` on a new connection and reads until the server closes.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the response within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, version: &str) -> String {
    format!("GET {path} {version}\r\nhost: site.test\r\nconnection: close\r\n\r\n")
}

#[tokio::test]
async fn rfc9110_15_2_an_origins_103_reaches_the_http11_client_first_and_is_never_stored() {
    let origin = hinting_origin(None, 8).await;
    let edge = EdgeBuilder::new(&origin).start().await;

    let first = raw(edge.addr, &get("/page", "HTTP/1.1")).await;
    let interim = first.find("HTTP/1.1 103 Early Hints\r\n").expect(&first);
    let last = first.find("HTTP/1.1 200 OK\r\n").expect(&first);
    assert!(
        interim < last,
        "the 103 comes before the final response: {first}"
    );
    assert!(
        first[interim..last].contains(&format!("link: {LINK}")),
        "{first}"
    );
    assert!(first.ends_with("hello"), "{first}");
    // The hint is the interim response's, not the stored response's.
    assert!(
        !first[last..].to_ascii_lowercase().contains("link:"),
        "{first}"
    );

    // A hit: the stored response, with no interim response (none was stored).
    let hit = raw(edge.addr, &get("/page", "HTTP/1.1")).await;
    assert!(hit.starts_with("HTTP/1.1 200 OK\r\n"), "{hit}");
    assert!(hit.contains("; hit"), "{hit}");
    assert!(!hit.to_ascii_lowercase().contains("link:"), "{hit}");
}

#[tokio::test]
async fn rfc9110_15_2_no_interim_response_to_an_http10_client() {
    let origin = hinting_origin(None, 8).await;
    let edge = EdgeBuilder::new(&origin).start().await;
    let got = raw(edge.addr, &get("/old", "HTTP/1.0")).await;
    assert!(
        got.starts_with("HTTP/1.0 200 OK\r\n") || got.starts_with("HTTP/1.1 200 OK\r\n"),
        "{got}"
    );
    assert!(!got.contains(" 103 "), "{got}");
    assert!(got.ends_with("hello"), "{got}");
}

#[tokio::test]
async fn the_103_is_sent_while_the_origin_is_still_working() {
    // The origin answers only once the test has read the 103: the hint cannot have waited
    // for the final response.
    let release = std::sync::Arc::new(Notify::new());
    let origin = hinting_origin(Some(std::sync::Arc::clone(&release)), 4).await;
    // The connection's own timers look at it only every 30 s here: the 103 must not wait
    // for one of them (it comes from the upstream connection's task).
    let edge = EdgeBuilder::new(&origin)
        .config(|c| {
            c.limits.client_send_timeout.0 = Duration::from_secs(120);
            c.limits.client_idle_timeout.0 = Duration::from_secs(120);
        })
        .start()
        .await;
    let mut s = TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(get("/slow", "HTTP/1.1").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the 103 before the origin answers")
            .unwrap();
        assert!(n > 0, "closed before the 103");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 103 Early Hints\r\n"));
    release.notify_one();
    s.read_to_end(&mut got).await.unwrap();
    assert!(String::from_utf8_lossy(&got).ends_with("hello"));
}

#[tokio::test]
async fn a_rules_early_hints_go_out_before_a_miss_goes_upstream_not_on_hits() {
    let origin = TestOrigin::fixed(|| Reply::ok("app").cc("max-age=60")).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            let mut rule = RuleConfig::prefix("/app/");
            rule.early_hints = vec![
                "</app.css>; rel=preload; as=style".into(),
                "</app.js>; rel=preload; as=script".into(),
            ];
            c.services[0].rules.push(rule);
        })
        .start()
        .await;
    let miss = raw(edge.addr, &get("/app/index.html", "HTTP/1.1")).await;
    assert!(miss.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{miss}");
    let interim = &miss[..miss.find("HTTP/1.1 200").expect(&miss)];
    assert!(
        interim.contains("link: </app.css>; rel=preload; as=style\r\n"),
        "{miss}"
    );
    assert!(
        interim.contains("link: </app.js>; rel=preload; as=script\r\n"),
        "{miss}"
    );

    let hit = raw(edge.addr, &get("/app/index.html", "HTTP/1.1")).await;
    assert!(hit.starts_with("HTTP/1.1 200 OK"), "{hit}");
    // Other paths have no hints.
    let other = raw(edge.addr, &get("/other", "HTTP/1.1")).await;
    assert!(other.starts_with("HTTP/1.1 200 OK"), "{other}");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn http3_clients_get_the_103_as_a_headers_frame_before_the_response() {
    let (pki, _edge, https) = hinting_https_edge().await;
    let got = pki.h3_get(https, "site.test", &["/h3"]).await;
    one_hint_then_hello(&got[0]);
}

/// RFC 9113 §8.1: an interim response is a HEADERS frame on the request's stream before the
/// final one; over TLS (ALPN `h2`), and a hit afterwards gets none.
#[tokio::test]
async fn rfc9113_8_1_h2_clients_get_the_103_as_a_headers_frame_before_the_response() {
    let (pki, _edge, https) = hinting_https_edge().await;
    let got = pki.h2_get(https, "site.test", &["/h2", "/h2"]).await;
    one_hint_then_hello(&got[0]);
    assert!(got[0].headers.get("link").is_none(), "{got:?}");
    // The second request of the connection is a hit: nothing interim was stored.
    assert!(
        got[1].header("cache-status").unwrap().contains("hit"),
        "{got:?}"
    );
    assert!(got[1].interim.is_empty(), "{got:?}");
}

/// The same with prior knowledge (h2 over plain TCP, RFC 9113 §3.3), and a rule's own
/// hints before the miss goes upstream.
#[tokio::test]
async fn h2_with_prior_knowledge_gets_a_rules_hints_and_the_origins() {
    let origin = hinting_origin(None, 8).await;
    let edge = EdgeBuilder::new(&origin)
        .config(|c| {
            c.services[0].rules.push(RuleConfig {
                early_hints: vec!["</rule.js>; rel=preload; as=script".into()],
                ..RuleConfig::prefix("/ruled")
            })
        })
        .start()
        .await;
    let tcp = TcpStream::connect(edge.addr).await.unwrap();
    let got = crate::support::tls::h2_get(tcp, "http://site.test", &["/ruled/a"]).await;
    assert_eq!(got[0].status, 200);
    assert_eq!(got[0].body, "hello");
    let links: Vec<_> = got[0]
        .interim
        .iter()
        .map(|(status, h)| (status.as_u16(), h.get("link").unwrap().to_str().unwrap()))
        .collect();
    assert_eq!(
        links,
        [(103, "</rule.js>; rel=preload; as=script"), (103, LINK)],
        "the rule's hint first, then the origin's"
    );
}

/// A client we did not write: curl (nghttp2) over TLS with ALPN h2 shows the 103 and its
/// `Link` before the final response.
#[tokio::test]
async fn curl_over_h2_shows_the_103_before_the_200() {
    let (pki, _edge, https) = hinting_https_edge().await;
    let out = tokio::process::Command::new("curl")
        .args(["-sv", "--http2", "--max-time", "10", "--cacert"])
        .arg(&pki.ca_pem)
        .arg("--resolve")
        .arg(format!("site.test:{}:127.0.0.1", https.port()))
        .arg(format!("https://site.test:{}/curl", https.port()))
        .output()
        .await
        .expect("curl (scripts/test.sh installs it)");
    let trace = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello", "{trace}");
    let hints = trace.find("< HTTP/2 103").expect(&trace);
    let last = trace.find("< HTTP/2 200").expect(&trace);
    assert!(hints < last, "{trace}");
    assert!(
        trace[hints..last].contains(&format!("< link: {LINK}")),
        "{trace}"
    );
}
