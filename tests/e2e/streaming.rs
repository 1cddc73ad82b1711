//! Bodies: streamed to the client as they arrive, stored in chunks, large objects passed
//! through, HTTP/2 clients.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::Notify;

use crate::support::origin::Piece;
use crate::support::{edge_for, EdgeBuilder, Reply, TestOrigin};
use strata_proxy::config::Seconds;

#[tokio::test]
async fn client_receives_bytes_before_the_origin_finishes() {
    let gate = Arc::new(Notify::new());
    let g = Arc::clone(&gate);
    let origin = TestOrigin::fixed(move || {
        Reply::ok("").cc("max-age=60").pieces(vec![
            Piece {
                data: Bytes::from_static(b"first;"),
                delay: Duration::ZERO,
                gate: None,
            },
            Piece {
                data: Bytes::from_static(b"second"),
                delay: Duration::ZERO,
                gate: Some(Arc::clone(&g)),
            },
        ])
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    let resp = edge.get("/live").send_head().await;
    let mut body = resp.into_body();
    // The origin holds its second piece until we release it: the first must already be here.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first piece streamed")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    edge.eventually("stored after the fill", || {
        edge.proxy().storage().stats().keys == 1
    })
    .await;
    assert_eq!(edge.get("/live").send().await.text(), "first;second");
}

#[tokio::test]
async fn client_disconnect_does_not_abort_a_cacheable_fill() {
    let gate = Arc::new(Notify::new());
    let g = Arc::clone(&gate);
    let origin = TestOrigin::fixed(move || {
        Reply::ok("").cc("max-age=60").pieces(vec![
            Piece {
                data: Bytes::from_static(b"a"),
                delay: Duration::ZERO,
                gate: None,
            },
            Piece {
                data: Bytes::from_static(b"b"),
                delay: Duration::ZERO,
                gate: Some(Arc::clone(&g)),
            },
        ])
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    let resp = edge.get("/x").send_head().await;
    drop(resp);
    gate.notify_one();
    edge.eventually("fill completes without its client", || {
        edge.proxy().storage().stats().keys == 1
    })
    .await;
    let r = edge.get("/x").send().await;
    assert!(r.is_hit());
    assert_eq!(r.text(), "ab");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn object_larger_than_max_object_size_streams_through_uncached() {
    let big = Bytes::from(vec![7u8; 3 << 20]);
    let b = big.clone();
    let origin = TestOrigin::fixed(move || Reply::ok(b.clone()).cc("max-age=60")).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.cache.max_object_size.0 = 1 << 20)
        .start()
        .await;
    let r = edge.get("/big").send().await;
    assert_eq!(r.body.len(), big.len());
    assert!(
        r.cache_status().contains("detail=too-large"),
        "{}",
        r.cache_status()
    );
    edge.get("/big").send().await;
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn chunked_object_that_outgrows_the_limit_is_delivered_whole_and_not_stored() {
    let origin = TestOrigin::fixed(|| {
        let pieces = (0..8)
            .map(|_| Piece {
                data: Bytes::from(vec![1u8; 512 * 1024]),
                delay: Duration::ZERO,
                gate: None,
            })
            .collect();
        Reply::ok("").cc("max-age=60").pieces(pieces)
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.cache.max_object_size.0 = 1 << 20)
        .start()
        .await;
    let r = edge.get("/chunked").send().await;
    assert_eq!(r.body.len(), 4 << 20);
    let r = edge.get("/chunked").send().await;
    assert_eq!(r.body.len(), 4 << 20);
    assert!(!r.is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn upstream_idle_timeout_cuts_a_stalled_body() {
    let origin = TestOrigin::fixed(|| {
        Reply::ok("").cc("max-age=60").pieces(vec![
            Piece {
                data: Bytes::from_static(b"start"),
                delay: Duration::ZERO,
                gate: None,
            },
            Piece {
                data: Bytes::from_static(b"never"),
                delay: Duration::from_secs(30),
                gate: None,
            },
        ])
    })
    .await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.limits.upstream_idle_timeout = Seconds(Duration::from_millis(200)))
        .start()
        .await;
    let resp = edge.get("/stall").send_head().await;
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("cut within bound");
    assert!(
        collected.is_err(),
        "the client sees a broken body, not a short success"
    );
    assert_eq!(
        edge.proxy().storage().stats().keys,
        0,
        "a broken fill is not stored"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let (origin, edge) = edge_for(|| Reply::ok("over h2").cc("max-age=60")).await;
    let r = edge.get("/a").h2().send().await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.text(), "over h2");
    let hit = edge.get("/a").h2().send().await;
    assert!(hit.is_hit());
    assert_eq!(origin.count(), 1);
    // The origin got HTTP/1.1 with a Host field built from :authority.
    assert!(origin.last().header("host").is_some());
}

/// An h2 request body reaches the origin whole, its window given back as it is read (a
/// body four times the client's initial window), with `100 Continue` first when the client
/// asked for it (RFC 9110 §10.1.1) and the `Date` the node adds (RFC 9110 §6.6.1).
#[tokio::test]
async fn an_h2_request_body_reaches_the_origin_after_100_continue() {
    let origin = TestOrigin::start(|_, _| Reply::ok("posted")).await;
    let edge = EdgeBuilder::new(&origin.url()).start().await;
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let req = http::Request::post("http://site.test/upload")
        .header("expect", "100-continue")
        .header("content-length", (256 * 1024).to_string())
        .body(())
        .unwrap();
    let (mut resp, mut send) = client.send_request(req, false).unwrap();
    let go = std::future::poll_fn(|cx| resp.poll_informational(cx))
        .await
        .expect("an interim response")
        .unwrap();
    assert_eq!(go.status(), 100);
    for piece in 0..16u8 {
        let mut data = bytes::Bytes::from(vec![piece; 16 * 1024]);
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let room = std::future::poll_fn(|cx| send.poll_capacity(cx))
                .await
                .unwrap()
                .unwrap();
            let part = data.split_to(room.min(data.len()));
            send.send_data(part, false).unwrap();
        }
    }
    send.send_data(bytes::Bytes::new(), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("date"));
    let seen = origin.last();
    assert_eq!(seen.body.len(), 256 * 1024);
    assert!(seen
        .body
        .chunks(16 * 1024)
        .enumerate()
        .all(|(i, c)| c.iter().all(|b| *b == i as u8)));
    driver.abort();
}

/// RFC 9110 §14.2: a seek into an object too large to keep is asked of the origin as a
/// range (the pass forwards `Range`), not fetched whole again: a player seeking in a 3 MiB
/// file with a 1 MiB limit gets its 206 from 1,000 bytes of origin traffic, a minute later
/// too (objects too large to keep stay marked 10 minutes, not the service's 10 s).
#[tokio::test]
async fn rfc9110_14_2_a_range_of_an_object_too_large_to_keep_is_asked_of_the_origin() {
    let big: Bytes = (0..(3u32 << 20))
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let b = big.clone();
    let origin = TestOrigin::start(move |seen, _| {
        let Some(range) = seen.header("range") else {
            return Reply::ok(b.clone()).cc("max-age=60");
        };
        let (start, end) = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .map(|(a, z)| (a.parse::<usize>().unwrap(), z.parse::<usize>().unwrap()))
            .unwrap();
        Reply::status(206)
            .body(b.slice(start..=end))
            .cc("max-age=60")
            .header("content-range", &format!("bytes {start}-{end}/{}", b.len()))
    })
    .await;
    let (clock, hand) = strata_proxy::clock::Clock::manual(std::time::SystemTime::now());
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| c.cache.max_object_size.0 = 1 << 20)
        .clock(clock)
        .start()
        .await;
    // The first request finds out it is too large (and is sent whole).
    let whole = edge.get("/movie.mp4").send().await;
    assert_eq!(whole.body.len(), big.len());
    // Long past the service's hit_for_pass (10 s): the size is still remembered.
    hand.advance(Duration::from_secs(60));
    let seek = edge
        .get("/movie.mp4")
        .header("range", "bytes=1000000-1000999")
        .send()
        .await;
    assert_eq!(seek.status, 206, "{}", seek.cache_status());
    assert_eq!(seek.body, big.slice(1_000_000..1_001_000));
    assert!(
        seek.cache_status().contains("hit-for-pass: range"),
        "{}",
        seek.cache_status()
    );
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.last().header("range"), Some("bytes=1000000-1000999"));
}
