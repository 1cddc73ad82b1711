//! The hit path without IO: build the cache key, look it up, select the variant, evaluate
//! freshness. Run with `cargo bench -p strata-storage --bench hot_path`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use strata_http_cache::policy::Decision;
use strata_http_cache::vary::{vary_of, VariantKey};
use strata_http_cache::{
    CacheKey, CachePolicy, KeyRules, PolicyConfig, RequestCacheControl, ResponseTimes,
};
use strata_storage::{ChunkedBody, MemoryStorage, Purge, Scope, Storage, StoredObject};

fn object(now: SystemTime, vary: bool) -> Arc<StoredObject> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("etag", HeaderValue::from_static("\"abc\""));
    if vary {
        headers.insert("vary", HeaderValue::from_static("accept-encoding"));
    }
    let times = ResponseTimes {
        request_time: now,
        response_time: now,
    };
    let policy = CachePolicy::for_response(
        &Method::GET,
        &HeaderMap::new(),
        StatusCode::OK,
        &headers,
        times,
        &PolicyConfig::default(),
    )
    .expect("storable");
    let mut req = HeaderMap::new();
    req.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
    Arc::new(StoredObject {
        status: StatusCode::OK,
        variant: VariantKey::for_request(&vary_of(&headers), &req),
        headers,
        policy,
        body: ChunkedBody::complete(Bytes::from(vec![0u8; 4096])),
        stored_at: now,
    })
}

fn hot_path(c: &mut Criterion) {
    let now = SystemTime::now();
    let rules = KeyRules {
        strip_query: vec!["utm_*".into(), "sid".into()],
        ignore_query: false,
    };
    let store = MemoryStorage::new(1 << 30);
    for i in 0..100_000 {
        let key = CacheKey::new(
            "http",
            "example.com",
            &format!("/assets/{i}.js"),
            Some("v=3"),
            &rules,
        );
        store.insert(&key, object(now, i % 2 == 0));
    }
    let mut req = HeaderMap::new();
    req.insert("accept-encoding", HeaderValue::from_static("br, gzip"));
    req.insert("user-agent", HeaderValue::from_static("bench"));
    let req_cc = RequestCacheControl::from_headers(&req);

    c.bench_function("cache_key", |b| {
        b.iter(|| {
            CacheKey::new(
                "http",
                black_box("Example.com:80"),
                black_box("/assets/4242.js"),
                Some(black_box("utm_source=x&v=3")),
                &rules,
            )
        })
    });
    c.bench_function("key_lookup_select_evaluate", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = (i + 7919) % 100_000;
            let key = CacheKey::new(
                "http",
                "example.com",
                &format!("/assets/{i}.js"),
                Some("v=3&utm_source=x"),
                &rules,
            );
            let set = store.lookup(&key).expect("present");
            let obj = set.select(&req).expect("variant");
            let d = obj.policy.evaluate(&req_cc, now, None);
            assert_eq!(d, Decision::Fresh);
            black_box(obj.policy.ttl(now))
        })
    });
}

/// Purging a tag carried by 100,000 objects (of 200,000 stored): the tag index means only
/// those are touched.
fn purge_tag_100k(c: &mut Criterion) {
    let now = SystemTime::now();
    let rules = KeyRules::default();
    let tagged = |tag: &'static str| {
        let o = object(now, false);
        let mut headers = o.headers.clone();
        headers.insert("surrogate-key", HeaderValue::from_static(tag));
        Arc::new(StoredObject {
            status: o.status,
            headers,
            policy: o.policy.clone(),
            variant: o.variant.clone(),
            body: Arc::clone(&o.body),
            stored_at: now,
        })
    };
    let mut group = c.benchmark_group("purge");
    group.sample_size(10);
    group.bench_function("tag_on_100k_of_200k_objects", |b| {
        b.iter_batched(
            || {
                let store = MemoryStorage::new(4 << 30);
                for i in 0..200_000 {
                    let key =
                        CacheKey::new("http", "example.com", &format!("/p/{i}"), None, &rules);
                    store.insert(
                        &key,
                        tagged(if i % 2 == 0 { "product-123" } else { "other" }),
                    );
                }
                // Settle the tier's deferred bookkeeping for the 200k inserts, so the purge
                // is not charged for it.
                let _ = store.stats();
                store
            },
            |store| {
                let purge = Purge {
                    scope: Scope::Tags(vec!["product-123".into()]),
                    soft: false,
                    issued_at: now + std::time::Duration::from_secs(1),
                };
                assert_eq!(store.purge(&purge, now), 100_000);
                store
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, hot_path, purge_tag_100k);
criterion_main!(benches);
