//! The hit path without IO: build the cache key, look it up, select the variant, evaluate
//! freshness. Run with `cargo bench -p strata-storage --bench hot_path`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use strata_http_cache::policy::Decision;
use strata_http_cache::{CacheKey, KeyRules, RequestCacheControl};
use strata_storage::{MemoryStorage, Purge, Scope, Storage, StoredObject};

mod common;

/// Half the objects vary on `Accept-Encoding`.
fn object(now: SystemTime, vary: bool) -> Arc<StoredObject> {
    let extra: &[(&str, &str)] = if vary {
        &[("vary", "accept-encoding")]
    } else {
        &[]
    };
    common::object(now, extra, Bytes::from(vec![0u8; 4096]))
}

fn hot_path(c: &mut Criterion) {
    let now = SystemTime::now();
    let rules = KeyRules {
        strip_query: vec!["utm_*".into(), "sid".into()],
        ignore_query: false,
        only_query: &[],
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
        store.insert(&key, object(now, i % 2 == 0), now);
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
            let set = store.lookup(&key, now).expect("present");
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
        common::object(now, &[("surrogate-key", tag)], Bytes::from(vec![0u8; 4096]))
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
                        now,
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
