//! Large objects in slices (`slice` on a service or rule): each slice is asked of the
//! origin with `Range` and stored on its own, so a seek fetches only what it covers, and
//! no answer is ever spliced from two versions of an object.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::support::edge::{Edge, EdgeBuilder};
use crate::support::origin::{Reply, Seen, TestOrigin};

const MIB: usize = 1 << 20;

/// The object an origin serves: its bytes and its entity tag.
type Version = Arc<Mutex<(Bytes, String)>>;

/// Bytes whose value says where they are (and which version: `seed`).
fn object(len: usize, seed: u32) -> Bytes {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(7).wrapping_add(seed) % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

/// An origin that answers ranges as RFC 9110 §14 says (206 with `Content-Range`, 416
/// past the end), a day of freshness, a strong `ETag`.
async fn ranged_origin(version: &Version) -> TestOrigin {
    let version = Arc::clone(version);
    TestOrigin::start(move |seen, _| {
        let (body, etag) = version.lock().unwrap().clone();
        ranged_reply(seen, &body, &etag)
    })
    .await
}

/// The answer of an origin that serves `body` and answers ranges.
pub(crate) fn ranged_reply(seen: &Seen, body: &Bytes, etag: &str) -> Reply {
    let len = body.len();
    let Some(range) = seen.header("range") else {
        return Reply::ok(body.clone())
            .cc("max-age=86400")
            .header("etag", etag);
    };
    let (first, last) = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .expect("a single range");
    let start: usize = first.parse().expect("first byte");
    if start >= len {
        return Reply::status(416).header("content-range", &format!("bytes */{len}"));
    }
    let end = last.parse::<usize>().map_or(len - 1, |e| e.min(len - 1));
    Reply::status(206)
        .body(body.slice(start..=end))
        .cc("max-age=86400")
        .header("etag", etag)
        .header("content-range", &format!("bytes {start}-{end}/{len}"))
}

async fn sliced_edge(origin: &TestOrigin) -> Edge {
    EdgeBuilder::new(&origin.url())
        .config(|c| c.services[0].slice = Some(strata_proxy::config::ByteSize(MIB as u64)))
        .start()
        .await
}

fn ranges_asked(origin: &TestOrigin) -> Vec<String> {
    origin
        .seen()
        .iter()
        .map(|s| s.header("range").unwrap_or("none").to_string())
        .collect()
}

#[tokio::test]
async fn a_seek_into_a_sliced_object_fetches_only_the_slice_it_covers() {
    let big = object(10 * MIB, 0);
    let version: Version = Arc::new(Mutex::new((big.clone(), "\"v1\"".into())));
    let origin = ranged_origin(&version).await;
    let edge = sliced_edge(&origin).await;

    let seek = edge
        .get("/movie.mp4")
        .header("range", "bytes=5500000-5600000")
        .send()
        .await;
    assert_eq!(seek.status, 206, "{}", seek.cache_status());
    assert_eq!(
        seek.header("content-range"),
        Some("bytes 5500000-5600000/10485760")
    );
    assert_eq!(seek.body, big.slice(5_500_000..=5_600_000));
    assert_eq!(seek.header("etag"), Some("\"v1\""));
    assert!(
        seek.cache_status().contains("fwd=uri-miss"),
        "{}",
        seek.cache_status()
    );
    assert_eq!(ranges_asked(&origin), ["bytes=5242880-6291455"]);

    // Another seek into the same slice is a hit; one into another slice asks for that one.
    let again = edge
        .get("/movie.mp4")
        .header("range", "bytes=6000000-6000009")
        .send()
        .await;
    assert_eq!(again.body, big.slice(6_000_000..6_000_010));
    assert!(again.is_hit(), "{}", again.cache_status());
    assert_eq!(origin.count(), 1);
    let later = edge
        .get("/movie.mp4")
        .header("range", "bytes=9000000-")
        .send()
        .await;
    assert_eq!(later.body, big.slice(9_000_000..));
    assert_eq!(
        ranges_asked(&origin),
        [
            "bytes=5242880-6291455",
            "bytes=8388608-9437183",
            "bytes=9437184-10485759"
        ]
    );
}

#[tokio::test]
async fn a_full_request_streams_every_slice_in_order_and_then_hits() {
    let big = object(5 * MIB + 12_345, 1);
    let version: Version = Arc::new(Mutex::new((big.clone(), "\"v1\"".into())));
    let origin = ranged_origin(&version).await;
    let edge = sliced_edge(&origin).await;

    let whole = edge.get("/movie.mp4").send().await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), Some("5255225"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-range"), None);
    assert!(whole.body == big, "the body is the object, byte for byte");
    assert_eq!(origin.count(), 6, "{:?}", ranges_asked(&origin));
    assert!(ranges_asked(&origin)
        .iter()
        .all(|r| r.starts_with("bytes=")));

    let again = edge.get("/movie.mp4").send().await;
    assert!(again.body == big);
    assert!(again.is_hit(), "{}", again.cache_status());
    assert_eq!(origin.count(), 6);
    // HEAD knows the length from one slice.
    let head = edge.head("/movie.mp4").send().await;
    assert_eq!(head.header("content-length"), Some("5255225"));
    assert_eq!(origin.count(), 6);
}

/// RFC 9110 §14: ranges across slices, from the end, past the end, and conditionals
/// answered against the object's validators.
#[tokio::test]
async fn rfc9110_14_ranges_and_conditionals_are_answered_for_the_object_not_its_slices() {
    let big = object(3 * MIB + 100, 2);
    let version: Version = Arc::new(Mutex::new((big.clone(), "\"v1\"".into())));
    let origin = ranged_origin(&version).await;
    let edge = sliced_edge(&origin).await;

    let across = edge
        .get("/a.bin")
        .header("range", "bytes=1048000-3145000")
        .send()
        .await;
    assert_eq!(across.status, 206);
    assert_eq!(across.body, big.slice(1_048_000..=3_145_000));
    let suffix = edge
        .get("/a.bin")
        .header("range", "bytes=-150")
        .send()
        .await;
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.body, big.slice(big.len() - 150..));
    assert_eq!(
        suffix.header("content-range"),
        Some(format!("bytes {}-{}/{}", big.len() - 150, big.len() - 1, big.len()).as_str())
    );
    let past = edge
        .get("/a.bin")
        .header("range", "bytes=99999999-")
        .send()
        .await;
    assert_eq!(past.status, 416);
    let not_modified = edge
        .get("/a.bin")
        .header("if-none-match", "\"v1\"")
        .send()
        .await;
    assert_eq!(not_modified.status, 304);
    let changed = edge
        .get("/a.bin")
        .header("range", "bytes=0-9")
        .header("if-range", "\"v0\"")
        .send()
        .await;
    assert_eq!(
        changed.status, 200,
        "If-Range that does not match: the whole object"
    );
    assert!(changed.body == big);
}

#[tokio::test]
async fn players_seeking_to_one_cold_slice_share_one_origin_request() {
    let big = object(4 * MIB, 3);
    let b = big.clone();
    let origin = TestOrigin::start(move |seen, _| {
        ranged_reply(seen, &b, "\"v1\"").delay(Duration::from_millis(300))
    })
    .await;
    let edge = Arc::new(sliced_edge(&origin).await);
    let mut seeks = Vec::new();
    for i in 0..20 {
        let edge = Arc::clone(&edge);
        seeks.push(tokio::spawn(async move {
            let start = 2 * MIB + i * 1000;
            edge.get("/m.mp4")
                .header("range", &format!("bytes={start}-{}", start + 99))
                .send()
                .await
        }));
    }
    for (i, seek) in seeks.into_iter().enumerate() {
        let start = 2 * MIB + i * 1000;
        assert_eq!(seek.await.unwrap().body, big.slice(start..start + 100));
    }
    assert_eq!(ranges_asked(&origin), ["bytes=2097152-3145727"]);
}

/// An origin that replaces a file while a client reads it: the answer is cut short, never
/// spliced from two versions, and the next one is the new version whole.
#[tokio::test]
async fn an_object_that_changes_between_slices_is_never_spliced() {
    let (v1, v2) = (object(3 * MIB, 4), object(3 * MIB, 5));
    let version: Version = Arc::new(Mutex::new((v1.clone(), "\"v1\"".into())));
    let origin = ranged_origin(&version).await;
    let edge = sliced_edge(&origin).await;
    // The first slice is stored from version 1.
    let start = edge.get("/f.bin").header("range", "bytes=0-9").send().await;
    assert_eq!(start.body, v1.slice(0..10));
    *version.lock().unwrap() = (v2.clone(), "\"v2\"".into());

    let resp = edge.get("/f.bin").send_head().await;
    assert_eq!(resp.status(), 200);
    let read = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
        .await
        .expect("ends");
    assert!(read.is_err(), "a body from two versions must not complete");

    let whole = edge.get("/f.bin").send().await;
    assert_eq!(whole.header("etag"), Some("\"v2\""));
    assert!(whole.body == v2, "the new version, whole");
}

#[tokio::test]
async fn purging_the_url_removes_every_slice() {
    let big = object(3 * MIB, 6);
    let version: Version = Arc::new(Mutex::new((big.clone(), "\"v1\"".into())));
    let origin = ranged_origin(&version).await;
    let edge = sliced_edge(&origin).await;
    assert!(edge.get("/p.bin").send().await.body == big);
    assert_eq!(origin.count(), 3);
    let purged = edge
        .purge(r#"{"urls": ["http://example.com/p.bin"]}"#)
        .await;
    assert_eq!(purged, 3, "the three slices");
    let seek = edge
        .get("/p.bin")
        .header("range", "bytes=2100000-2100009")
        .send()
        .await;
    assert!(!seek.is_hit(), "{}", seek.cache_status());
    assert_eq!(origin.count(), 4);
}

/// An origin that ignores `Range` sends the whole object: the client gets it as it is,
/// and it is never stored as a slice.
#[tokio::test]
async fn an_origin_that_ignores_ranges_is_answered_through_and_nothing_is_stored_as_a_slice() {
    let big = object(2 * MIB, 7);
    let b = big.clone();
    let origin = TestOrigin::start(move |_, _| {
        Reply::ok(b.clone())
            .cc("max-age=600")
            .header("etag", "\"x\"")
    })
    .await;
    let edge = sliced_edge(&origin).await;
    for _ in 0..2 {
        let got = edge.get("/whole.bin").send().await;
        assert_eq!(got.status, 200);
        assert!(got.body == big);
        assert!(!got.is_hit(), "{}", got.cache_status());
    }
    let seek = edge
        .get("/whole.bin")
        .header("range", "bytes=1500000-1500009")
        .send()
        .await;
    // The origin's answer to the slice's range, as it is: the whole file (a 200 answers any
    // range, RFC 9110 §14.2).
    assert_eq!(seek.status, 200);
    assert!(seek.body == big);
    assert!(
        seek.cache_status()
            .contains("slice: upstream ignored the range"),
        "{}",
        seek.cache_status()
    );
    assert_eq!(origin.count(), 3);
}

/// A rule turns slicing off under its path (`slice = "0"`): those objects are fetched
/// whole, as before.
#[tokio::test]
async fn a_rule_with_slice_0_fetches_whole_objects() {
    let big = object(3 * MIB, 8);
    let version: Version = Arc::new(Mutex::new((big.clone(), "\"v1\"".into())));
    let origin = ranged_origin(&version).await;
    let edge = EdgeBuilder::new(&origin.url())
        .config(|c| {
            c.services[0].slice = Some(strata_proxy::config::ByteSize(MIB as u64));
            let mut rule = strata_proxy::config::RuleConfig::prefix("/small/");
            rule.slice = Some(strata_proxy::config::ByteSize(0));
            c.services[0].rules.push(rule);
        })
        .start()
        .await;
    let got = edge
        .get("/small/x.bin")
        .header("range", "bytes=10-19")
        .send()
        .await;
    assert_eq!(got.body, big.slice(10..20));
    assert_eq!(ranges_asked(&origin), ["none"]);
}

/// Through the tiers: an edge's slice request reaches the shield as a range, the shield
/// (sliced too) asks the origin for that slice only, and a second edge's seek into it is a
/// hit at the shield.
#[tokio::test]
async fn slices_travel_edge_to_shield_to_origin_as_ranges() {
    use crate::support::PopBuilder;
    let big = object(6 * MIB, 9);
    let version: Version = Arc::new(Mutex::new((big.clone(), "\"v1\"".into())));
    let origin = ranged_origin(&version).await;
    let sliced = |c: &mut strata_proxy::config::NodeConfig, _: &[String]| {
        c.services[0].slice = Some(strata_proxy::config::ByteSize(MIB as u64));
    };
    let shield = PopBuilder::new(&origin.url(), &["shield-1"])
        .no_ring()
        .shields()
        .config(sliced)
        .start()
        .await;
    let edges = PopBuilder::new(&origin.url(), &["e1", "e2"])
        .no_ring()
        .parents(&[shield[0].url()])
        .config(sliced)
        .start()
        .await;
    let seek = edges[0]
        .get("/v.mp4")
        .header("range", "bytes=4200000-4200099")
        .send()
        .await;
    assert_eq!(seek.status, 206, "{}", seek.cache_status());
    assert_eq!(seek.body, big.slice(4_200_000..4_200_100));
    assert_eq!(ranges_asked(&origin), ["bytes=4194304-5242879"]);
    let other = edges[1]
        .get("/v.mp4")
        .header("range", "bytes=4300000-4300099")
        .send()
        .await;
    assert_eq!(other.body, big.slice(4_300_000..4_300_100));
    assert!(
        other
            .status_of("shield-1")
            .is_some_and(|s| s.contains("hit")),
        "{}",
        other.cache_status()
    );
    assert_eq!(origin.count(), 1);
}

/// An empty file: its first slice is a 416 (`bytes */0`, RFC 9110 §14.1.1), and a client
/// that asked for no range gets a 200 with nothing in it, not the 416.
#[tokio::test]
async fn an_empty_object_is_an_empty_200_not_a_416() {
    let version: Version = Arc::new(Mutex::new((Bytes::new(), "\"e\"".into())));
    let origin = ranged_origin(&version).await;
    let edge = sliced_edge(&origin).await;
    let got = edge.get("/empty.bin").send().await;
    assert_eq!(got.status, 200, "{}", got.cache_status());
    assert_eq!(got.header("content-length"), Some("0"));
    assert!(got.body.is_empty());
}

/// A small object an origin sends whole (a 200 to a range covering all of it) is stored as
/// the first slice: the next request is a hit.
#[tokio::test]
async fn a_small_object_sent_whole_is_its_first_slice() {
    let small = object(5000, 10);
    let s = small.clone();
    let origin = TestOrigin::start(move |_, _| {
        Reply::ok(s.clone())
            .cc("max-age=600")
            .header("etag", "\"s\"")
    })
    .await;
    let edge = sliced_edge(&origin).await;
    assert_eq!(edge.get("/s.bin").send().await.body, small);
    let again = edge
        .get("/s.bin")
        .header("range", "bytes=10-19")
        .send()
        .await;
    assert_eq!(again.status, 206);
    assert_eq!(again.body, small.slice(10..20));
    assert!(again.is_hit(), "{}", again.cache_status());
    assert_eq!(origin.count(), 1);
}

/// Upstream failing on one slice (a 503 while the others are stored) fails that answer and
/// leaves the stored slices alone.
#[tokio::test]
async fn an_upstream_error_on_one_slice_keeps_the_others() {
    let big = object(3 * MIB, 11);
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b, f) = (big.clone(), Arc::clone(&failing));
    let origin = TestOrigin::start(move |seen, _| {
        let last = seen.header("range") == Some("bytes=2097152-3145727");
        if last && f.load(std::sync::atomic::Ordering::SeqCst) {
            return Reply::status(503).cc("no-store");
        }
        ranged_reply(seen, &b, "\"v1\"")
    })
    .await;
    let edge = sliced_edge(&origin).await;
    // The first two slices are stored.
    let start = edge
        .get("/t.bin")
        .header("range", "bytes=0-2097151")
        .send()
        .await;
    assert_eq!(start.body, big.slice(0..2 * MIB));
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let resp = edge.get("/t.bin").send_head().await;
    let read = resp.into_body().collect().await;
    assert!(read.is_err(), "the answer is cut short, not completed");
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let kept = edge
        .get("/t.bin")
        .header("range", "bytes=1048576-1048585")
        .send()
        .await;
    assert!(kept.is_hit(), "{}", kept.cache_status());
}

/// RFC 9111 §4.4: a successful PUT invalidates the URI, slices included.
#[tokio::test]
async fn rfc9111_4_4_an_unsafe_method_invalidates_every_slice() {
    let big = object(2 * MIB, 12);
    let b = big.clone();
    let origin = TestOrigin::start(move |seen, _| match seen.method {
        http::Method::PUT => Reply::status(204),
        _ => ranged_reply(seen, &b, "\"v1\""),
    })
    .await;
    let edge = sliced_edge(&origin).await;
    assert!(edge.get("/u.bin").send().await.body == big);
    let put = edge
        .request(http::Method::PUT, "/u.bin")
        .body("new")
        .send()
        .await;
    assert_eq!(put.status, 204);
    let after = edge
        .get("/u.bin")
        .header("range", "bytes=1048576-1048585")
        .send()
        .await;
    assert!(!after.is_hit(), "{}", after.cache_status());
}

/// A 206 whose body is shorter than its `Content-Range` says is never stored as the slice.
#[tokio::test]
async fn a_206_shorter_than_its_range_is_not_stored() {
    let origin = TestOrigin::start(|_, _| {
        Reply::status(206)
            .body(vec![b'x'; 10])
            .cc("max-age=600")
            .header("etag", "\"x\"")
            .header("content-range", "bytes 0-1048575/5000000")
    })
    .await;
    let edge = sliced_edge(&origin).await;
    for _ in 0..2 {
        let resp = edge
            .get("/short.bin")
            .header("range", "bytes=0-99")
            .send_head()
            .await;
        let _ = resp.into_body().collect().await;
    }
    // Each request: the slice (refused: not stored), then the client's own request passed
    // upstream (the 206 was for another range than the client's). Nothing stored.
    assert_eq!(origin.count(), 4);
    assert_eq!(origin.last().header("range"), Some("bytes=0-99"));
}
