//! The disk tier's index, in memory: each key's stored copies (by file id and metadata),
//! bounded by the bytes their files take, and the tag and key index purges look up.
//!
//! No file IO here. What a change means for the files comes back to the caller: the ids
//! of copies an insert replaced, the [`Effects`] of a purge, and the ids of copies evicted
//! (through the callback given to [`DiskIndex::new`]). The file layer (`files.rs`) carries
//! them out, on the file thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::sync::Cache;
use strata_http_cache::CacheKey;

use super::record::Meta;
use crate::object::MAX_VARIANTS;
use crate::purge::{stale_policy, Index, Purge, Scope};

/// Space a file costs beyond its bytes (a filesystem block, on average half wasted).
const FILE_OVERHEAD: u64 = 4096;

/// One stored copy on disk.
#[derive(Debug)]
pub(super) struct Entry {
    pub id: String,
    pub meta: Meta,
}

impl Entry {
    fn weight(&self) -> u64 {
        self.meta.body_len + 2 * FILE_OVERHEAD
    }
}

/// The copies under one primary key, newest first.
#[derive(Debug, Default)]
pub(super) struct EntrySet {
    pub entries: Vec<Arc<Entry>>,
}

impl EntrySet {
    /// A new set with `entry` replacing the copy with the same variant, and the copies it
    /// pushed out (whose files must go).
    fn with(&self, entry: Arc<Entry>) -> (Self, Vec<Arc<Entry>>) {
        let mut entries = vec![Arc::clone(&entry)];
        let mut dropped = Vec::new();
        for e in &self.entries {
            if e.meta.variant == entry.meta.variant || entries.len() >= MAX_VARIANTS {
                dropped.push(Arc::clone(e));
            } else {
                entries.push(Arc::clone(e));
            }
        }
        (Self { entries }, dropped)
    }

    fn weight(&self) -> u64 {
        self.entries.iter().map(|e| e.weight()).sum()
    }
}

/// The file work a purge leaves: copies to delete, metadata to rewrite (soft purges).
#[derive(Debug, Default)]
pub(super) struct Effects {
    pub deletes: Vec<String>,
    pub rewrites: Vec<(String, Meta)>,
}

/// The index. Lock order inside it: `tags` is never held while calling into `index`
/// (moka runs the eviction callback on the caller's thread).
pub(super) struct DiskIndex {
    index: Cache<CacheKey, Arc<EntrySet>>,
    /// Tags and keys, for purges by scope. May list keys `index` has evicted (pruned in
    /// steps by [`DiskIndex::prune_tags`]).
    tags: Mutex<Index>,
    evictions: Arc<AtomicU64>,
}

// === impl DiskIndex ===

impl DiskIndex {
    /// An index of at most `capacity` bytes of files. `on_evict` gets the ids of copies
    /// evicted for room (their files must go); copies replaced or purged are reported by
    /// the call that changed them.
    pub fn new(capacity: u64, on_evict: impl Fn(Vec<String>) + Send + Sync + 'static) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let index = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_k: &CacheKey, v: &Arc<EntrySet>| v.weight().min(u64::from(u32::MAX)) as u32)
            .eviction_listener(move |_key, set: Arc<EntrySet>, cause| {
                // Replaced and explicit removals report their own files (the new set may
                // keep some of the old one's).
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    counted.fetch_add(1, Ordering::Relaxed);
                    on_evict(set.entries.iter().map(|e| e.id.clone()).collect());
                }
            })
            .build();
        Self {
            index,
            tags: Mutex::default(),
            evictions,
        }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<EntrySet>> {
        self.index.get(key)
    }

    pub fn contains_key(&self, key: &CacheKey) -> bool {
        self.index.contains_key(key)
    }

    pub fn tags(&self) -> MutexGuard<'_, Index> {
        self.tags.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a copy. Returns the ids of the copies it replaced (same variant, or past the
    /// most variants a key keeps), whose files must go.
    pub fn insert(&self, entry: Arc<Entry>) -> Vec<String> {
        let key = entry.meta.key.clone();
        self.tags().add(&key, &entry.meta.headers);
        let mut dropped = Vec::new();
        self.index.entry(key).and_upsert_with(|current| {
            let (set, out) = match current {
                Some(e) => e.value().with(Arc::clone(&entry)),
                None => EntrySet::default().with(Arc::clone(&entry)),
            };
            dropped = out;
            Arc::new(set)
        });
        dropped.iter().map(|e| e.id.clone()).collect()
    }

    /// Applies a purge to the index (patterns: by a scan of every key); the file work goes
    /// to `effects`. Returns the copies affected.
    pub fn apply(&self, purge: &Purge, now: SystemTime, effects: &mut Effects) -> u64 {
        let scope = match &purge.scope {
            Scope::Patterns(_) => &Scope::All,
            other => other,
        };
        let candidates = self.tags().candidates(scope);
        candidates
            .iter()
            .map(|key| self.apply_to_key(key, purge, now, effects))
            .sum()
    }

    /// Applies one purge to the copies under `key`, leaving the file work in `effects`.
    /// Per key atomic with inserts (moka's entry lock). Returns the copies affected.
    fn apply_to_key(
        &self,
        key: &CacheKey,
        purge: &Purge,
        now: SystemTime,
        effects: &mut Effects,
    ) -> u64 {
        let mut affected = 0;
        self.index.entry(key.clone()).and_compute_with(|current| {
            let Some(current) = current else {
                return Op::Nop;
            };
            let mut kept = Vec::with_capacity(current.value().entries.len());
            for e in &current.value().entries {
                if !purge.covers_stored(key, e.meta.stored_at, &e.meta.headers) {
                    kept.push(Arc::clone(e));
                    continue;
                }
                affected += 1;
                if purge.soft {
                    let mut meta = e.meta.clone();
                    meta.policy = stale_policy(&meta.policy, now);
                    effects.rewrites.push((e.id.clone(), meta.clone()));
                    kept.push(Arc::new(Entry {
                        id: e.id.clone(),
                        meta,
                    }));
                } else {
                    effects.deletes.push(e.id.clone());
                }
            }
            match (affected, kept.is_empty()) {
                (0, _) => Op::Nop,
                (_, true) => Op::Remove,
                (_, false) => Op::Put(Arc::new(EntrySet { entries: kept })),
            }
        });
        affected
    }

    /// Drops tag and key index entries for keys the index no longer holds (evicted).
    pub fn prune_tags(&self) {
        let listed = self.tags().candidates(&Scope::All);
        let gone: std::collections::HashSet<CacheKey> = listed
            .into_iter()
            .filter(|k| !self.index.contains_key(k))
            .collect();
        if !gone.is_empty() {
            self.tags().retain(|k| !gone.contains(k));
        }
    }

    /// Forgets every copy (their files are the caller's to remove).
    pub fn clear(&self) {
        self.index.invalidate_all();
        self.index.run_pending_tasks();
        *self.tags() = Index::default();
    }

    /// Bytes of files held, keys, and copies evicted so far.
    pub fn size(&self) -> (u64, u64, u64) {
        self.index.run_pending_tasks();
        (
            self.index.weighted_size(),
            self.index.entry_count(),
            self.evictions.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fixtures::{key, object, purge, tagged};

    fn entry(id: &str, k: usize, object: &crate::StoredObject) -> Arc<Entry> {
        Arc::new(Entry {
            id: id.to_string(),
            meta: Meta::of(&key(k), object, object.body.len()),
        })
    }

    /// The ids an index reports evicted.
    type Seen = Arc<Mutex<Vec<String>>>;

    fn evicted() -> (Seen, impl Fn(Vec<String>) + Send + Sync) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        (seen, move |ids| sink.lock().unwrap().extend(ids))
    }

    #[test]
    fn a_copy_of_the_same_variant_replaces_the_old_one_whose_files_must_go() {
        let (_, on_evict) = evicted();
        let index = DiskIndex::new(64 << 20, on_evict);
        let fr = object(10, Some("fr"));
        let de = object(10, Some("de"));
        assert!(index.insert(entry("a", 1, &fr)).is_empty());
        assert!(index.insert(entry("b", 1, &de)).is_empty());
        assert_eq!(index.insert(entry("c", 1, &fr)), vec!["a".to_string()]);
        let ids: Vec<_> = index
            .get(&key(1))
            .unwrap()
            .entries
            .iter()
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(ids, ["c", "b"]);
    }

    #[test]
    fn purges_leave_their_file_work_as_effects() {
        let (_, on_evict) = evicted();
        let index = DiskIndex::new(64 << 20, on_evict);
        let t0 = SystemTime::now();
        index.insert(entry("hard", 1, &tagged("a", t0)));
        index.insert(entry("soft", 2, &tagged("b", t0)));
        index.insert(entry("kept", 3, &tagged("c", t0)));
        let later = t0 + Duration::from_secs(1);

        let mut effects = Effects::default();
        let hard = purge(Scope::Tags(vec!["a".into()]), false, later);
        assert_eq!(index.apply(&hard, later, &mut effects), 1);
        let soft = purge(Scope::Tags(vec!["b".into()]), true, later);
        assert_eq!(index.apply(&soft, later, &mut effects), 1);

        assert_eq!(effects.deletes, ["hard"]);
        assert_eq!(effects.rewrites.len(), 1);
        let (id, meta) = &effects.rewrites[0];
        assert_eq!(id, "soft");
        assert!(!meta.policy.is_fresh(later));
        assert!(index.get(&key(1)).is_none());
        assert!(!index.get(&key(2)).unwrap().entries[0]
            .meta
            .policy
            .is_fresh(later));
        assert!(index.get(&key(3)).unwrap().entries[0]
            .meta
            .policy
            .is_fresh(later));
    }

    #[test]
    fn copies_evicted_for_room_are_reported_and_pruned_from_the_tags() {
        let (seen, on_evict) = evicted();
        // Room for about three copies of 100 KB (each also costs two file blocks).
        let index = DiskIndex::new(330_000, on_evict);
        for k in 0..10 {
            index.insert(entry(&format!("id{k}"), k, &object(100_000, None)));
            index.size();
        }
        let (bytes, keys, evictions) = index.size();
        assert!(bytes <= 330_000 && keys <= 3, "{bytes} bytes, {keys} keys");
        assert_eq!(evictions as usize, seen.lock().unwrap().len());
        assert!(evictions >= 7);
        index.prune_tags();
        assert_eq!(index.tags().len() as u64, keys);
    }
}
