//! The memory tier: bounded in bytes, with a scan-resistant admission and eviction policy.
//!
//! Backed by `moka` (W-TinyLFU: a frequency sketch decides admission, so one-hit wonders do
//! not flush popular objects). It was chosen with the Zipf benchmark in `bench/hit-ratio`
//! against quick_cache (S3-FIFO-like), TinyUFO (Pingora) and LRU: it had the best request
//! hit ratio at every size tried (+8..+15 points at small capacities) with a byte hit ratio
//! within 1..3 points of the best. Request hit ratio is what a memory tier is for; bytes
//! are the disk tier's job. See `bench/README.md` for the table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use moka::ops::compute::Op;
use moka::sync::Cache;
use strata_http_cache::CacheKey;

use crate::object::{StoredObject, Variants};
use crate::purge::{Index, Purge, RecentPurges};
use crate::{Storage, StorageStats};

/// Bytes over capacity the memory tier may hold until moka's buffered writes are
/// applied: a `1 / SETTLE_FRACTION` share of the capacity.
const SETTLE_FRACTION: u64 = 16;

/// Inserts between two looks at how many index entries outlived their objects (and two
/// steps of a prune under way).
const PRUNE_CHECK: u64 = 1 << 10;

/// Keys one prune step looks at.
const PRUNE_STEP: usize = 4 << 10;

/// What one key costs besides its objects: moka's entry and its queues, the variant list,
/// the key text (held by the table and by the purge index) and its index entries.
/// Measured with heaptrack on small objects (see bench/README.md, "Memory").
pub const KEY_OVERHEAD: u64 = 448;

fn key_weight(key: &CacheKey) -> u64 {
    KEY_OVERHEAD + 2 * key.as_str().len() as u64
}

/// A byte-bounded in-memory tier.
pub struct MemoryStorage {
    cache: Cache<CacheKey, Arc<Variants>>,
    /// Keys that entered the tier, and keys we removed ourselves. What is neither still
    /// held nor removed by us was evicted: counting this way avoids moka's eviction
    /// listener, which costs about 5 µs per removal (a third of a large purge).
    keys_added: AtomicU64,
    keys_removed: AtomicU64,
    capacity: u64,
    /// Held while asking `cache` whether it holds a key (pruning); `cache` has no
    /// eviction listener, so it never calls back into this lock.
    index: Mutex<Index>,
    recent_purges: Mutex<RecentPurges>,
    /// Pattern purges not yet applied by a sweep: checked at every lookup.
    bans: Mutex<Vec<Purge>>,
    inserts: AtomicU64,
    /// Bytes inserted since moka last applied its buffered writes (and evictions).
    unsettled: AtomicU64,
    /// A prune under way: `Some(where it goes on from)`.
    prune_cursor: Mutex<Option<Option<Arc<str>>>>,
}

impl MemoryStorage {
    /// `capacity` bytes of what objects really hold: bodies, fields, bookkeeping, and
    /// each key's cost in the table and the purge index ([`KEY_OVERHEAD`]).
    pub fn new(capacity: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            // Weights are u32; objects are limited far below 4 GiB by configuration.
            .weigher(|k: &CacheKey, v: &Arc<Variants>| {
                key_weight(k)
                    .saturating_add(v.weight())
                    .min(u64::from(u32::MAX)) as u32
            })
            .build();
        Self {
            cache,
            keys_added: AtomicU64::new(0),
            keys_removed: AtomicU64::new(0),
            capacity,
            index: Mutex::default(),
            recent_purges: Mutex::default(),
            bans: Mutex::default(),
            inserts: AtomicU64::new(0),
            unsettled: AtomicU64::new(0),
            prune_cursor: Mutex::default(),
        }
    }
}

impl MemoryStorage {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn purges(&self) -> MutexGuard<'_, RecentPurges> {
        self.recent_purges.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryStorage {
    fn bans(&self) -> MutexGuard<'_, Vec<Purge>> {
        self.bans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops index entries of evicted objects once they are as many as the live ones, so
    /// the index costs at most about twice what the cache holds. The walk is spread over
    /// calls ([`PRUNE_STEP`] keys each), so no insert holds the index for long.
    fn prune_index(&self) {
        let live = self.cache.entry_count();
        let mut cursor = self.prune_cursor.lock().unwrap_or_else(|e| e.into_inner());
        let mut index = self.index();
        let from = match cursor.take() {
            Some(from) => from,
            None if (index.len() as u64) > 2 * live + PRUNE_CHECK => None,
            None => return,
        };
        if let Some(next) = index.prune_step(from, PRUNE_STEP, |k| self.cache.contains_key(k)) {
            *cursor = Some(Some(next));
        }
    }

    /// Applies purges to the variants under one key. Returns the objects affected and what
    /// is left. Reads, decides, then writes: a variant inserted concurrently may be dropped
    /// with the rest (a later miss); an old one cannot come back, because every insert is
    /// checked against recent purges.
    fn apply_to_key(
        &self,
        key: &CacheKey,
        purges: &[&Purge],
        now: SystemTime,
    ) -> (u64, Option<Arc<Variants>>) {
        let Some(set) = self.cache.get(key) else {
            return (0, None);
        };
        let mut kept = Vec::with_capacity(set.objects.len());
        let mut affected = 0;
        for obj in &set.objects {
            let mut current = Some(Arc::clone(obj));
            for p in purges {
                if let Some(o) = current.as_ref().filter(|o| p.covers(key, o)) {
                    current = p.apply(o, now);
                    affected += 1;
                }
            }
            kept.extend(current);
        }
        if affected == 0 {
            return (0, Some(set));
        }
        if kept.is_empty() {
            // Index entries for the key are left for the periodic prune: removing them one
            // by one here would cost a third of a large purge.
            if self.cache.remove(key).is_some() {
                self.keys_removed.fetch_add(1, Ordering::Relaxed);
            }
            (affected, None)
        } else {
            let set = Arc::new(Variants { objects: kept });
            self.cache.insert(key.clone(), Arc::clone(&set));
            (affected, Some(set))
        }
    }
}

impl Storage for MemoryStorage {
    fn lookup(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<Variants>> {
        let set = self.cache.get(key)?;
        let bans = self.bans();
        if bans.is_empty() {
            return Some(set);
        }
        let covering: Vec<Purge> = bans
            .iter()
            .filter(|b| set.objects.iter().any(|o| b.covers(key, o)))
            .cloned()
            .collect();
        drop(bans);
        if covering.is_empty() {
            return Some(set);
        }
        let refs: Vec<&Purge> = covering.iter().collect();
        self.apply_to_key(key, &refs, now).1
    }

    fn insert(&self, key: &CacheKey, object: Arc<StoredObject>, now: SystemTime) -> bool {
        let weight = object.weight() + key_weight(key);
        if weight > self.capacity {
            return false;
        }
        // A purge that landed while this object was being filled still applies to it. The
        // purge log stays locked until the object is stored and indexed: a purge recorded
        // after this check then finds the object in the index (no gap between the two).
        let mut object = object;
        let purges = self.purges();
        for p in purges.iter() {
            if !p.covers(key, &object) {
                continue;
            }
            match p.apply(&object, now) {
                Some(stale) => object = stale,
                None => return false,
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
        self.index().add(key, &indexed.headers);
        drop(purges);
        if self.inserts.fetch_add(1, Ordering::Relaxed) % PRUNE_CHECK == PRUNE_CHECK - 1 {
            self.prune_index();
        }
        // moka applies writes (and the evictions they cause) in batches: with large
        // objects a batch is a lot of memory over capacity. Settle once the bytes inserted
        // since the last batch reach a sixteenth of the capacity.
        let unsettled = self.unsettled.fetch_add(weight, Ordering::Relaxed) + weight;
        if unsettled >= self.capacity / SETTLE_FRACTION {
            self.unsettled.store(0, Ordering::Relaxed);
            self.cache.run_pending_tasks();
        }
        true
    }

    fn replace(&self, key: &CacheKey, old: &Arc<StoredObject>, new: Arc<StoredObject>) -> bool {
        let mut replaced = false;
        self.cache.entry(key.clone()).and_compute_with(|current| {
            match current.and_then(|e| e.value().replacing(old, new)) {
                Some(set) => {
                    replaced = true;
                    Op::Put(Arc::new(set))
                }
                None => Op::Nop,
            }
        });
        replaced
    }

    fn remove(&self, key: &CacheKey, _now: SystemTime) -> bool {
        let removed = self.cache.remove(key).is_some();
        if removed {
            self.keys_removed.fetch_add(1, Ordering::Relaxed);
        }
        self.index().remove_key(key);
        removed
    }

    fn purge(&self, purge: &Purge, now: SystemTime) -> u64 {
        self.purges().record(purge, now);
        if matches!(purge.scope, crate::Scope::Patterns(_)) {
            // Checked at every lookup from now on, and applied to everything by `sweep`.
            self.bans().push(purge.clone());
            return 0;
        }
        let candidates = self.index().candidates(&purge.scope);
        candidates
            .iter()
            .map(|key| self.apply_to_key(key, &[purge], now).0)
            .sum()
    }

    fn sweep(&self, now: SystemTime) -> u64 {
        let bans: Vec<Purge> = self.bans().clone();
        if bans.is_empty() {
            return 0;
        }
        let refs: Vec<&Purge> = bans.iter().collect();
        let candidates = self.index().candidates(&crate::Scope::All);
        let affected = candidates
            .iter()
            .map(|key| self.apply_to_key(key, &refs, now).0)
            .sum();
        // Everything stored before these bans has been checked; later inserts are checked
        // against recent purges, so the bans can retire.
        self.bans().retain(|b| !bans.contains(b));
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
    use crate::fixtures::{key, object, purge, tagged};
    use http::{HeaderMap, HeaderValue};
    use std::time::Duration;
    use strata_http_cache::KeyRules;

    #[test]
    fn bounded_in_bytes() {
        let store = MemoryStorage::new(1 << 20);
        for i in 0..1000 {
            store.insert(&key(i), object(10_000, None), SystemTime::now());
        }
        let stats = store.stats();
        assert!(stats.bytes <= 1 << 20, "{stats:?}");
        assert!(stats.evictions > 0);
        assert!(stats.keys < 1000);
    }

    #[test]
    fn larger_than_capacity_is_declined() {
        let store = MemoryStorage::new(1000);
        assert!(!store.insert(&key(1), object(5000, None), SystemTime::now()));
        assert!(store.lookup(&key(1), SystemTime::now()).is_none());
    }

    #[test]
    fn variants_live_side_by_side_and_replace_by_selection() {
        let store = MemoryStorage::new(1 << 20);
        store.insert(&key(1), object(10, Some("en")), SystemTime::now());
        store.insert(&key(1), object(20, Some("fr")), SystemTime::now());
        store.insert(&key(1), object(30, Some("en")), SystemTime::now());
        let set = store.lookup(&key(1), SystemTime::now()).unwrap();
        assert_eq!(set.objects.len(), 2);
        let mut req = HeaderMap::new();
        req.insert("accept-language", HeaderValue::from_static("en"));
        assert_eq!(set.select(&req).unwrap().body.len(), 30);
    }

    #[test]
    fn a_purge_racing_inserts_leaves_nothing_it_covers() {
        // Every object is stored before the purge's issued_at, so whichever way inserts and
        // the purge interleave, none may survive: either the purge finds it in the index,
        // or the insert finds the purge in the log.
        let store = Arc::new(MemoryStorage::new(64 << 20));
        let t0 = SystemTime::now();
        let n = 3000;
        let inserter = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..n {
                    store.insert(&key(i), tagged("t", t0), SystemTime::now());
                }
            })
        };
        while store.index().candidates(&crate::Scope::All).len() < n / 2 {
            std::thread::yield_now();
        }
        store.purge(
            &purge(
                crate::Scope::Tags(vec!["t".into()]),
                false,
                t0 + Duration::from_secs(1),
            ),
            t0,
        );
        inserter.join().unwrap();
        let left = (0..n)
            .filter(|i| store.lookup(&key(*i), SystemTime::now()).is_some())
            .count();
        assert_eq!(left, 0);
    }

    #[test]
    fn tag_purge_touches_only_tagged_objects() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        store.insert(&key(1), tagged("a b", t0), SystemTime::now());
        store.insert(&key(2), tagged("b", t0), SystemTime::now());
        store.insert(&key(3), tagged("c", t0), SystemTime::now());
        let n = store.purge(
            &purge(
                crate::Scope::Tags(vec!["b".into()]),
                false,
                t0 + Duration::from_secs(1),
            ),
            t0,
        );
        assert_eq!(n, 2);
        assert!(store.lookup(&key(1), SystemTime::now()).is_none());
        assert!(store.lookup(&key(2), SystemTime::now()).is_none());
        assert!(store.lookup(&key(3), SystemTime::now()).is_some());
    }

    #[test]
    fn purge_spares_objects_stored_after_it_was_issued_and_replay_is_harmless() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        let p = purge(crate::Scope::Tags(vec!["a".into()]), false, t0);
        store.insert(
            &key(1),
            tagged("a", t0 + Duration::from_secs(1)),
            SystemTime::now(),
        );
        assert_eq!(store.purge(&p, t0), 0);
        assert_eq!(store.purge(&p, t0), 0);
        assert!(store.lookup(&key(1), SystemTime::now()).is_some());
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
        assert!(!store.insert(&key(1), tagged("a", t0), SystemTime::now()));
        assert!(store.lookup(&key(1), SystemTime::now()).is_none());
    }

    #[test]
    fn prefix_purge_uses_the_key_order() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        let k = |p: &str| CacheKey::new("http", "h", p, None, &KeyRules::default());
        for p in ["/a/1", "/a/2", "/ab", "/b/1"] {
            store.insert(&k(p), tagged("x", t0), SystemTime::now());
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
        assert!(store.lookup(&k("/ab"), SystemTime::now()).is_some());
        assert!(store.lookup(&k("/b/1"), SystemTime::now()).is_some());
    }

    #[test]
    fn soft_purge_marks_stale_and_keeps_the_body() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        store.insert(&key(1), tagged("a", t0), SystemTime::now());
        store.purge(
            &purge(crate::Scope::All, true, t0 + Duration::from_secs(1)),
            t0 + Duration::from_secs(1),
        );
        let set = store.lookup(&key(1), SystemTime::now()).expect("kept");
        let obj = &set.objects[0];
        assert!(!obj.policy.is_fresh(t0 + Duration::from_secs(2)));
        assert_eq!(obj.body.len(), 10);
    }

    #[test]
    fn pattern_purge_applies_at_lookup_then_sweep_retires_it() {
        let store = MemoryStorage::new(1 << 20);
        let t0 = SystemTime::now();
        let k = |p: &str| CacheKey::new("http", "h", p, None, &KeyRules::default());
        for p in ["/img/a.jpg", "/img/b.png", "/css/c.jpg"] {
            store.insert(&k(p), tagged("x", t0), SystemTime::now());
        }
        let scope =
            crate::Scope::Patterns(vec![crate::purge::PathPattern::new(None, "/img/*.jpg")]);
        assert_eq!(
            store.purge(&purge(scope, false, t0 + Duration::from_secs(1)), t0),
            0
        );
        // Lazily: the lookup sees the ban before any sweep.
        assert!(store.lookup(&k("/img/a.jpg"), SystemTime::now()).is_none());
        assert!(store.lookup(&k("/img/b.png"), SystemTime::now()).is_some());
        assert!(store.lookup(&k("/css/c.jpg"), SystemTime::now()).is_some());
        assert_eq!(store.sweep(t0), 0, "already applied at lookup");
        assert!(store.bans().is_empty(), "the sweep retires the ban");
        // An object stored after the ban's time is not affected.
        store.insert(
            &k("/img/d.jpg"),
            tagged("x", t0 + Duration::from_secs(2)),
            SystemTime::now(),
        );
        assert!(store.lookup(&k("/img/d.jpg"), SystemTime::now()).is_some());
    }
}
