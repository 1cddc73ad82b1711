//! The memory tier: bounded in bytes, with a scan-resistant eviction policy.
//!
//! Backed by `quick_cache`, whose S3-FIFO-like CLOCK-Pro policy keeps one-hit wonders from
//! flushing popular objects. It was chosen by the Zipf hit-ratio benchmark in
//! `bench/hit-ratio` against TinyUFO, moka (W-TinyLFU) and LRU; see `bench/README.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use strata_http_cache::CacheKey;

use crate::object::{StoredObject, Variants};
use crate::{Storage, StorageStats};

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<CacheKey, Arc<Variants>> for ByteWeighter {
    fn weight(&self, _key: &CacheKey, val: &Arc<Variants>) -> u64 {
        // Zero would make the entry unevictable; every object costs something.
        val.weight().max(1)
    }
}

#[derive(Clone, Default)]
struct EvictionCounter(Arc<AtomicU64>);

impl Lifecycle<CacheKey, Arc<Variants>> for EvictionCounter {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: CacheKey, _val: Arc<Variants>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A byte-bounded in-memory tier.
pub struct MemoryStorage {
    cache: Cache<CacheKey, Arc<Variants>, ByteWeighter, DefaultHashBuilder, EvictionCounter>,
    evictions: Arc<AtomicU64>,
    capacity: u64,
}

impl MemoryStorage {
    /// `capacity` bytes; `typical_object` is a sizing hint for the index.
    pub fn new(capacity: u64, typical_object: u64) -> Self {
        let counter = EvictionCounter::default();
        let evictions = Arc::clone(&counter.0);
        let items = (capacity / typical_object.max(1)).clamp(16, 50_000_000) as usize;
        Self {
            cache: Cache::with(items, capacity, ByteWeighter, DefaultHashBuilder::default(), counter),
            evictions,
            capacity,
        }
    }
}

impl Storage for MemoryStorage {
    fn lookup(&self, key: &CacheKey) -> Option<Arc<Variants>> {
        self.cache.get(key)
    }

    fn insert(&self, key: &CacheKey, object: Arc<StoredObject>) -> bool {
        if object.weight() > self.capacity {
            return false;
        }
        let set = match self.cache.peek(key) {
            Some(current) => current.with(object),
            None => Variants { objects: vec![object] },
        };
        self.cache.insert(key.clone(), Arc::new(set));
        true
    }

    fn replace(&self, key: &CacheKey, old: &Arc<StoredObject>, new: Arc<StoredObject>) {
        if let Some(set) = self.cache.peek(key).and_then(|cur| cur.replacing(old, new)) {
            self.cache.insert(key.clone(), Arc::new(set));
        }
    }

    fn remove(&self, key: &CacheKey) -> bool {
        self.cache.remove(key).is_some()
    }

    fn stats(&self) -> StorageStats {
        StorageStats {
            bytes: self.cache.weight(),
            capacity: self.capacity,
            keys: self.cache.len() as u64,
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::ChunkedBody;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode};
    use strata_http_cache::vary::{VariantKey, Vary};
    use strata_http_cache::{KeyRules, PolicyConfig, ResponseTimes};
    use std::time::SystemTime;

    fn object(size: usize, vary_value: Option<&str>) -> Arc<StoredObject> {
        let now = SystemTime::now();
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        let policy = strata_http_cache::CachePolicy::for_response(
            &http::Method::GET, &HeaderMap::new(), StatusCode::OK, &headers,
            ResponseTimes { request_time: now, response_time: now }, &PolicyConfig::default(),
        ).unwrap();
        let mut req = HeaderMap::new();
        if let Some(v) = vary_value {
            req.insert("accept-language", HeaderValue::from_str(v).unwrap());
        }
        let vary = Vary::Fields(vec![http::header::ACCEPT_LANGUAGE]);
        Arc::new(StoredObject {
            status: StatusCode::OK,
            headers,
            policy,
            variant: VariantKey::for_request(&vary, &req),
            body: ChunkedBody::complete(Bytes::from(vec![b'x'; size])),
            stored_at: now,
        })
    }

    fn key(i: usize) -> CacheKey {
        CacheKey::new("http", "h", &format!("/{i}"), None, &KeyRules::default())
    }

    #[test]
    fn bounded_in_bytes() {
        let store = MemoryStorage::new(1 << 20, 10_000);
        for i in 0..1000 {
            store.insert(&key(i), object(10_000, None));
        }
        let stats = store.stats();
        assert!(stats.bytes <= 1 << 20, "{stats:?}");
        assert!(stats.evictions > 0);
        assert!(stats.keys < 1000);
    }

    #[test]
    fn larger_than_capacity_is_declined() {
        let store = MemoryStorage::new(1000, 100);
        assert!(!store.insert(&key(1), object(5000, None)));
        assert!(store.lookup(&key(1)).is_none());
    }

    #[test]
    fn variants_live_side_by_side_and_replace_by_selection() {
        let store = MemoryStorage::new(1 << 20, 1000);
        store.insert(&key(1), object(10, Some("en")));
        store.insert(&key(1), object(20, Some("fr")));
        store.insert(&key(1), object(30, Some("en")));
        let set = store.lookup(&key(1)).unwrap();
        assert_eq!(set.objects.len(), 2);
        let mut req = HeaderMap::new();
        req.insert("accept-language", HeaderValue::from_static("en"));
        assert_eq!(set.select(&req).unwrap().body.len(), 30);
    }
}
