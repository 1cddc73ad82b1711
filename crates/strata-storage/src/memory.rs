//! The memory tier: bounded in bytes, with a scan-resistant admission and eviction policy.
//!
//! Backed by `moka` (W-TinyLFU: a frequency sketch decides admission, so one-hit wonders do
//! not flush popular objects). It was chosen with the Zipf benchmark in `bench/hit-ratio`
//! against quick_cache (S3-FIFO-like), TinyUFO (Pingora) and LRU: it had the best request
//! hit ratio at every size tried (+8..+15 points at small capacities) with a byte hit ratio
//! within 1..3 points of the best. Request hit ratio is what a memory tier is for; bytes
//! are the disk tier's job. See `bench/README.md` for the table.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use moka::ops::compute::Op;
use moka::sync::Cache;
use strata_http_cache::CacheKey;

use crate::object::{StoredObject, Variants};
use crate::purge::{Index, Purge};
use crate::{Storage, StorageStats};

/// How long purges are remembered to catch fills that were in flight when they landed.
const PURGE_MEMORY: Duration = Duration::from_secs(600);
/// Inserts between two prunes of index entries for evicted objects.
const PRUNE_EVERY: u64 = 1 << 16;

/// A byte-bounded in-memory tier.
pub struct MemoryStorage {
    cache: Cache<CacheKey, Arc<Variants>>,
    /// Keys that entered the tier, and keys we removed ourselves. What is neither still
    /// held nor removed by us was evicted: counting this way avoids moka's eviction
    /// listener, which costs about 5 µs per removal (a third of a large purge).
    keys_added: AtomicU64,
    keys_removed: AtomicU64,
    capacity: u64,
    /// Never held while calling into `cache`: its eviction listener runs on the caller.
    index: Mutex<Index>,
    recent_purges: Mutex<VecDeque<Purge>>,
    inserts: AtomicU64,
}

impl MemoryStorage {
    /// `capacity` bytes. Objects weigh their body, headers and a fixed overhead.
    pub fn new(capacity: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            // Weights are u32; objects are limited far below 4 GiB by configuration.
            .weigher(|_k: &CacheKey, v: &Arc<Variants>| v.weight().min(u64::from(u32::MAX)) as u32)
            .build();
        Self {
            cache,
            keys_added: AtomicU64::new(0),
            keys_removed: AtomicU64::new(0),
            capacity,
            index: Mutex::default(),
            recent_purges: Mutex::default(),
            inserts: AtomicU64::new(0),
        }
    }
}

impl MemoryStorage {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn purges(&self) -> MutexGuard<'_, VecDeque<Purge>> {
        self.recent_purges.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Index entries (for tests and metrics).
    pub fn indexed_keys(&self) -> usize {
        self.index().len()
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
        // A purge that landed while this object was being filled still applies to it.
        let mut object = object;
        {
            let purges = self.purges();
            for p in purges.iter() {
                if !p.covers(key, &object) {
                    continue;
                }
                match p.apply(&object, SystemTime::now()) {
                    Some(stale) => object = stale,
                    None => return false,
                }
            }
        }
        // Atomic per key, so concurrent fills of two variants do not lose one.
        let indexed = Arc::clone(&object);
        self.cache.entry(key.clone()).and_upsert_with(|current| {
            Arc::new(match current {
                Some(entry) => entry.value().with(object),
                None => {
                    self.keys_added.fetch_add(1, Ordering::Relaxed);
                    Variants {
                        objects: vec![object],
                    }
                }
            })
        });
        self.index().add(key, &indexed);
        if self.inserts.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            let live: Vec<CacheKey> = self.index().candidates(&crate::purge::Scope::All);
            let gone: std::collections::HashSet<CacheKey> = live
                .into_iter()
                .filter(|k| !self.cache.contains_key(k))
                .collect();
            self.index().retain(|k| !gone.contains(k));
        }
        true
    }

    fn replace(&self, key: &CacheKey, old: &Arc<StoredObject>, new: Arc<StoredObject>) {
        self.cache.entry(key.clone()).and_compute_with(|current| {
            match current.and_then(|e| e.value().replacing(old, new)) {
                Some(set) => Op::Put(Arc::new(set)),
                None => Op::Nop,
            }
        });
    }

    fn remove(&self, key: &CacheKey) -> bool {
        let removed = self.cache.remove(key).is_some();
        if removed {
            self.keys_removed.fetch_add(1, Ordering::Relaxed);
        }
        self.index().remove_key(key);
        removed
    }

    fn purge(&self, purge: &Purge, now: SystemTime) -> u64 {
        {
            let mut purges = self.purges();
            purges.push_back(purge.clone());
            while purges
                .front()
                .is_some_and(|p| now.duration_since(p.issued_at).unwrap_or_default() > PURGE_MEMORY)
                || purges.len() > 10_000
            {
                purges.pop_front();
            }
        }
        let candidates = self.index().candidates(&purge.scope);
        let mut affected = 0u64;
        for key in candidates {
            // Read, decide, then write. A variant inserted concurrently may be dropped with
            // the rest (a later miss); an old one cannot come back, because every insert is
            // checked against recent purges.
            let Some(set) = self.cache.get(&key) else {
                continue;
            };
            let mut kept = Vec::with_capacity(set.objects.len());
            let mut changed = false;
            for obj in &set.objects {
                if purge.covers(&key, obj) {
                    changed = true;
                    affected += 1;
                    if let Some(stale) = purge.apply(obj, now) {
                        kept.push(stale);
                    }
                } else {
                    kept.push(Arc::clone(obj));
                }
            }
            if !changed {
                continue;
            }
            if kept.is_empty() {
                // Index entries for the key are left for the periodic prune: removing them
                // one by one here would cost a third of the purge.
                if self.cache.remove(&key).is_some() {
                    self.keys_removed.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                self.cache.insert(key, Arc::new(Variants { objects: kept }));
            }
        }
        affected
    }

    fn stats(&self) -> StorageStats {
        // Apply buffered writes and evictions so the figures are current.
        self.cache.run_pending_tasks();
        StorageStats {
            bytes: self.cache.weighted_size(),
            capacity: self.capacity,
            keys: self.cache.entry_count(),
            evictions: self
                .keys_added
                .load(Ordering::Relaxed)
                .saturating_sub(self.keys_removed.load(Ordering::Relaxed))
                .saturating_sub(self.cache.entry_count()),
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

    fn object(size: usize, vary_value: Option<&str>) -> Arc<StoredObject> {
        let now = SystemTime::now();
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        let policy = strata_http_cache::CachePolicy::for_response(
            &http::Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &headers,
            ResponseTimes {
                request_time: now,
                response_time: now,
            },
            &PolicyConfig::default(),
        )
        .unwrap();
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
        let store = MemoryStorage::new(1 << 20);
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
        let store = MemoryStorage::new(1000);
        assert!(!store.insert(&key(1), object(5000, None)));
        assert!(store.lookup(&key(1)).is_none());
    }

    #[test]
    fn variants_live_side_by_side_and_replace_by_selection() {
        let store = MemoryStorage::new(1 << 20);
        store.insert(&key(1), object(10, Some("en")));
        store.insert(&key(1), object(20, Some("fr")));
        store.insert(&key(1), object(30, Some("en")));
        let set = store.lookup(&key(1)).unwrap();
        assert_eq!(set.objects.len(), 2);
        let mut req = HeaderMap::new();
        req.insert("accept-language", HeaderValue::from_static("en"));
        assert_eq!(set.select(&req).unwrap().body.len(), 30);
    }

    fn tagged(tags: &str, stored_at: SystemTime) -> Arc<StoredObject> {
        let o = object(10, None);
        let mut headers = o.headers.clone();
        headers.insert("surrogate-key", HeaderValue::from_str(tags).unwrap());
        Arc::new(StoredObject {
            status: o.status,
            headers,
            policy: o.policy.clone(),
            variant: o.variant.clone(),
            body: Arc::clone(&o.body),
            stored_at,
        })
    }

    fn purge(scope: crate::Scope, soft: bool, issued_at: SystemTime) -> Purge {
        Purge {
            scope,
            soft,
            issued_at,
        }
    }

    #[test]
    fn tag_purge_touches_only_tagged_objects() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        store.insert(&key(1), tagged("a b", t0));
        store.insert(&key(2), tagged("b", t0));
        store.insert(&key(3), tagged("c", t0));
        let n = store.purge(
            &purge(
                crate::Scope::Tags(vec!["b".into()]),
                false,
                t0 + Duration::from_secs(1),
            ),
            t0,
        );
        assert_eq!(n, 2);
        assert!(store.lookup(&key(1)).is_none());
        assert!(store.lookup(&key(2)).is_none());
        assert!(store.lookup(&key(3)).is_some());
    }

    #[test]
    fn purge_spares_objects_stored_after_it_was_issued_and_replay_is_harmless() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        let p = purge(crate::Scope::Tags(vec!["a".into()]), false, t0);
        store.insert(&key(1), tagged("a", t0 + Duration::from_secs(1)));
        assert_eq!(store.purge(&p, t0), 0);
        assert_eq!(store.purge(&p, t0), 0);
        assert!(store.lookup(&key(1)).is_some());
    }

    #[test]
    fn object_filled_across_a_purge_is_caught_when_stored() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        // The fill's response arrived at t0; the purge landed at t0+1 while its body streamed.
        store.purge(
            &purge(
                crate::Scope::Tags(vec!["a".into()]),
                false,
                t0 + Duration::from_secs(1),
            ),
            t0,
        );
        assert!(!store.insert(&key(1), tagged("a", t0)));
        assert!(store.lookup(&key(1)).is_none());
    }

    #[test]
    fn prefix_purge_uses_the_key_order() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        let k = |p: &str| CacheKey::new("http", "h", p, None, &KeyRules::default());
        for p in ["/a/1", "/a/2", "/ab", "/b/1"] {
            store.insert(&k(p), tagged("x", t0));
        }
        let n = store.purge(
            &purge(
                crate::Scope::Prefixes(vec!["http://h/a/".into()]),
                false,
                t0 + Duration::from_secs(1),
            ),
            t0,
        );
        assert_eq!(n, 2);
        assert!(store.lookup(&k("/ab")).is_some());
        assert!(store.lookup(&k("/b/1")).is_some());
    }

    #[test]
    fn soft_purge_marks_stale_and_keeps_the_body() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        store.insert(&key(1), tagged("a", t0));
        store.purge(
            &purge(crate::Scope::All, true, t0 + Duration::from_secs(1)),
            t0 + Duration::from_secs(1),
        );
        let set = store.lookup(&key(1)).expect("kept");
        let obj = &set.objects[0];
        assert!(!obj.policy.is_fresh(t0 + Duration::from_secs(2)));
        assert_eq!(obj.body.len(), 10);
    }
}
