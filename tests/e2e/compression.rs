//! Compression at the edge: what is compressed, how variants are stored and selected, and
//! what the fields say (RFC 9110 §8.4, §8.8.1, §12.5.3; RFC 9111 §4.1, §5.2.2.6).

use std::io::Read;

use http::StatusCode;

use crate::support::{EdgeBuilder, Reply, TestOrigin};

/// 20 KB of text: worth compressing.
fn page() -> String {
    (0..1000)
        .map(|i| format!("line {i:05} of the page\n"))
        .collect()
}

async fn text_origin() -> TestOrigin {
    TestOrigin::start(|seen, _| {
        let reply = match seen.path() {
            "/small" => Reply::ok("tiny").header("content-type", "text/plain"),
            "/png" => Reply::ok(page()).header("content-type", "image/png"),
            "/no-transform" => Reply::ok(page())
                .header("content-type", "text/plain")
                .header("cache-control", "max-age=60, no-transform"),
            _ => Reply::ok(page())
                .header("content-type", "text/html; charset=utf-8")
                .header("etag", "\"v1\""),
        };
        if seen.path() == "/no-transform" {
            reply
        } else {
            reply.cc("max-age=60")
        }
    })
    .await
}

fn decode(coding: &str, body: &[u8]) -> String {
    let mut out = Vec::new();
    match coding {
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::stream::decode_all(body).unwrap(),
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        other => panic!("unexpected coding {other}"),
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn rfc9110_12_5_3_each_coding_is_one_stored_variant_whatever_the_spelling() {
    let origin = text_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;

    let br = edge
        .get("/page")
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await;
    assert_eq!(br.status, StatusCode::OK);
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(br.header("vary"), Some("accept-encoding"));
    assert!(br.body.len() < page().len() / 4);
    assert_eq!(decode("br", &br.body), page());
    // The origin was asked for the coding chosen, not the client's spelling.
    assert_eq!(origin.last().header("accept-encoding"), Some("br"));

    // Another spelling of the same choice: the stored br variant, compressed once.
    let again = edge
        .get("/page")
        .header("accept-encoding", "br;q=1.0, gzip;q=0.5, *;q=0.1")
        .send()
        .await;
    assert!(again.is_hit(), "{:?}", again.cache_status());
    assert_eq!(again.body, br.body);
    // Complete in the cache: its length is known again.
    assert_eq!(
        again.header("content-length"),
        Some(br.body.len().to_string().as_str())
    );
    assert_eq!(origin.count(), 1);

    for coding in ["gzip", "zstd"] {
        let got = edge
            .get("/page")
            .header("accept-encoding", coding)
            .send()
            .await;
        assert_eq!(got.header("content-encoding"), Some(coding));
        assert_eq!(decode(coding, &got.body), page());
    }
    // No Accept-Encoding: the identity variant, with its length.
    let plain = edge.get("/page").send().await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.text(), page());
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    assert_eq!(origin.count(), 4);
    // Each is a hit from now on.
    for coding in ["br", "gzip", "zstd", ""] {
        let mut req = edge.get("/page");
        if !coding.is_empty() {
            req = req.header("accept-encoding", coding);
        }
        assert!(req.send().await.is_hit());
    }
    assert_eq!(origin.count(), 4);
}

#[tokio::test]
async fn rfc9110_8_8_1_the_compressed_variant_has_a_weak_validator_that_still_validates() {
    let origin = text_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    let got = edge
        .get("/page")
        .header("accept-encoding", "br")
        .send()
        .await;
    assert_eq!(got.header("etag"), Some("W/\"v1\""));
    // If-None-Match uses the weak comparison (RFC 9110 §13.1.2).
    let cond = edge
        .get("/page")
        .header("accept-encoding", "br")
        .header("if-none-match", "W/\"v1\"")
        .send()
        .await;
    assert_eq!(cond.status, StatusCode::NOT_MODIFIED);
    // The identity variant keeps the origin's strong validator.
    let plain = edge.get("/page").send().await;
    assert_eq!(plain.header("etag"), Some("\"v1\""));
}

#[tokio::test]
async fn rfc9110_14_ranges_of_the_compressed_variant_are_ranges_of_its_bytes() {
    let origin = text_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    let full = edge
        .get("/page")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    let part = edge
        .get("/page")
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-99")
        .send()
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("content-encoding"), Some("gzip"));
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 0-99/{}", full.body.len()).as_str())
    );
    assert_eq!(part.body, full.body.slice(0..100));
}

#[tokio::test]
async fn rfc9111_5_2_2_6_no_transform_binary_and_tiny_bodies_are_sent_as_they_came() {
    let origin = text_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    for path in ["/no-transform", "/png", "/small"] {
        let got = edge.get(path).header("accept-encoding", "br").send().await;
        assert_eq!(got.header("content-encoding"), None, "{path}");
        assert!(got.header("content-length").is_some(), "{path}");
    }
    // Tiny text is still stored under Vary: a larger version later gets its variants.
    let tiny = edge
        .get("/small")
        .header("accept-encoding", "br")
        .send()
        .await;
    assert_eq!(tiny.header("vary"), Some("accept-encoding"));
}

#[tokio::test]
async fn compression_off_stores_what_the_origin_sent() {
    let origin = text_origin().await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.cache.compression = false)
        .start()
        .await;
    let got = edge
        .get("/page")
        .header("accept-encoding", "br")
        .send()
        .await;
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.text(), page());
}

#[tokio::test]
async fn rfc9111_5_2_1_6_a_request_with_no_transform_gets_what_the_origin_sent() {
    let origin = text_origin().await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    // The compressed variant exists...
    let br = edge
        .get("/page")
        .header("accept-encoding", "br")
        .send()
        .await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    // ...and is not what a client that forbids transformation gets.
    let got = edge
        .get("/page")
        .header("accept-encoding", "br")
        .header("cache-control", "no-transform")
        .send()
        .await;
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.text(), page());
}

#[tokio::test]
async fn rfc9111_4_3_4_a_revalidated_compressed_variant_keeps_its_weak_validator_and_vary() {
    // Stale at once, so the next request revalidates; the origin answers 304 with its
    // strong ETag and a Vary without Accept-Encoding.
    let origin = TestOrigin::start(|seen, _| {
        if seen.header("if-none-match").is_some() {
            return Reply::status(304)
                .header("etag", "\"v1\"")
                .header("vary", "origin")
                .cc("max-age=0");
        }
        Reply::ok(page())
            .header("content-type", "text/plain")
            .header("etag", "\"v1\"")
            .cc("max-age=0")
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    let first = edge
        .get("/p")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    assert_eq!(first.header("etag"), Some("W/\"v1\""));
    let again = edge
        .get("/p")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    // The 304 selects the compressed variant: no full fetch after it.
    assert_eq!(origin.count(), 2, "{:?}", again.cache_status());
    assert_eq!(again.header("content-encoding"), Some("gzip"));
    assert_eq!(again.header("etag"), Some("W/\"v1\""));
    let vary: Vec<&str> = again
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        vary.iter().any(|v| v.contains("accept-encoding")),
        "{vary:?}"
    );
    assert_eq!(decode("gzip", &again.body), page());
}
