//! Memory over disk: lookups try memory, then disk; a disk hit is promoted to memory;
//! every stored object goes to both (the disk write off the request path).
//!
//! The disk half starts *closed* when the node must first prove it has seen every purge it
//! missed while it was down: until [`TieredStorage::open_disk`], lookups skip the disk (a
//! miss goes upstream) while purges and writes still reach it. The purge consumer opens it
//! once it has replayed the bus up to where the stream stood when the node came back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use strata_http_cache::CacheKey;

use crate::disk::DiskStorage;
use crate::memory::MemoryStorage;
use crate::object::{StoredObject, Variants};
use crate::purge::Purge;
use crate::{DiskReport, Storage, StorageStats};

pub struct TieredStorage {
    memory: Arc<MemoryStorage>,
    disk: DiskStorage,
    open: AtomicBool,
}

// === impl TieredStorage ===

impl TieredStorage {
    /// `open`: whether lookups may read the disk from the start (no purge can have been
    /// missed: no bus, or a bus whose history ends with the process).
    pub fn new(memory: MemoryStorage, disk: DiskStorage, open: bool) -> Self {
        Self {
            memory: Arc::new(memory),
            disk,
            open: AtomicBool::new(open),
        }
    }

    /// Lets lookups read the disk: every purge the node missed has been applied.
    pub fn open_disk(&self) {
        if !self.open.swap(true, Ordering::AcqRel) {
            tracing::info!("disk cache open for lookups");
        }
    }

    pub fn is_disk_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn disk(&self) -> &DiskStorage {
        &self.disk
    }

    /// Puts a disk hit into memory so the next lookup does not read the file again. Its
    /// body is still loading: once complete the entry is re-stored so memory weighs it
    /// with its bytes; if the read fails, the key leaves memory (it would serve an error).
    fn promote(
        &self,
        key: &CacheKey,
        from_disk: &Variants,
        now: SystemTime,
    ) -> Option<Arc<Variants>> {
        // A large body read on demand is read from its file by each lookup's response
        // (only the range it needs): memory never holds it.
        if from_disk.objects.iter().any(|o| o.body.is_on_demand()) {
            return Some(Arc::new(Variants {
                objects: from_disk.objects.clone(),
            }));
        }
        // Oldest first, so the newest ends first in memory's set. An object a purge has
        // covered since the disk was read is refused by memory and not served either.
        let mut accepted: Vec<Arc<StoredObject>> = from_disk
            .objects
            .iter()
            .rev()
            .filter(|o| self.memory.insert(key, Arc::clone(o), now))
            .cloned()
            .collect();
        if accepted.is_empty() {
            return None;
        }
        accepted.reverse();
        // What memory now holds, which a purge that landed meanwhile may have made stale.
        let promoted = self
            .memory
            .lookup(key, now)
            .unwrap_or_else(|| Arc::new(Variants { objects: accepted }));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (memory, key) = (Arc::clone(&self.memory), key.clone());
            let objects = promoted.objects.clone();
            runtime.spawn(async move {
                for o in objects {
                    match o.body.wait_finished().await {
                        Ok(()) => {
                            memory.replace(&key, &o, Arc::clone(&o));
                        }
                        Err(_) => {
                            memory.remove(&key, now);
                            return;
                        }
                    }
                }
            });
        }
        Some(promoted)
    }
}

impl Storage for TieredStorage {
    fn lookup(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<Variants>> {
        if let Some(hit) = self.memory.lookup(key, now) {
            return Some(hit);
        }
        if !self.is_disk_open() {
            return None;
        }
        let from_disk = self.disk.lookup(key, now)?;
        self.promote(key, &from_disk, now)
    }

    fn insert(&self, key: &CacheKey, object: Arc<StoredObject>, now: SystemTime) -> bool {
        let in_memory = self.memory.insert(key, Arc::clone(&object), now);
        let on_disk = self.disk.insert(key, object, now);
        in_memory || on_disk
    }

    fn replace(&self, key: &CacheKey, old: &Arc<StoredObject>, new: Arc<StoredObject>) -> bool {
        let in_memory = self.memory.replace(key, old, Arc::clone(&new));
        let on_disk = self.disk.replace(key, old, new);
        in_memory || on_disk
    }

    fn remove(&self, key: &CacheKey, now: SystemTime) -> bool {
        let in_memory = self.memory.remove(key, now);
        let on_disk = self.disk.remove(key, now);
        in_memory || on_disk
    }

    /// Nearly every object is in both tiers, so the affected count is the larger of the
    /// two tiers' counts (an object held by one tier only may go uncounted).
    fn purge(&self, purge: &Purge, now: SystemTime) -> u64 {
        self.memory
            .purge(purge, now)
            .max(self.disk.purge(purge, now))
    }

    fn sweep(&self, now: SystemTime) -> u64 {
        self.memory.sweep(now).max(self.disk.sweep(now))
    }

    fn stats(&self) -> StorageStats {
        self.memory.stats()
    }

    fn disk_report(&self) -> Option<DiskReport> {
        Some(DiskReport {
            stats: self.disk.stats(),
            open: self.is_disk_open(),
            pending_purges: self.disk.pending_purges(),
            counters: self.disk.counters(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fixtures::{key, purge, tagged, TempDir};
    use crate::Scope;

    /// A disk tier holding tagged objects for keys 1..=n, written by an earlier run.
    fn earlier_run(dir: &TempDir, n: usize, stored_at: SystemTime) {
        let disk = DiskStorage::open(&dir.0, 64 << 20).unwrap();
        for i in 1..=n {
            disk.insert(
                &key(i),
                tagged(&format!("k{i} all"), stored_at),
                SystemTime::now(),
            );
        }
        disk.flush();
    }

    fn reopened(dir: &TempDir, open: bool) -> TieredStorage {
        TieredStorage::new(
            MemoryStorage::new(16 << 20),
            DiskStorage::open(&dir.0, 64 << 20).unwrap(),
            open,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_disk_is_not_read_until_opened() {
        let dir = TempDir::new("closed");
        earlier_run(&dir, 1, SystemTime::now());
        let tiers = reopened(&dir, false);
        assert!(tiers.lookup(&key(1), SystemTime::now()).is_none());
        tiers.open_disk();
        let set = tiers
            .lookup(&key(1), SystemTime::now())
            .expect("disk hit once open");
        set.objects[0].body.wait_finished().await.unwrap();
        // Promoted: memory answers the next lookup, weighed with its bytes.
        assert!(tiers.memory.lookup(&key(1), SystemTime::now()).is_some());
        for _ in 0..100 {
            if tiers.memory.stats().bytes > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(tiers.memory.stats().bytes >= 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purges_applied_while_closed_hold_once_opened() {
        let dir = TempDir::new("replay");
        let t0 = SystemTime::now() - Duration::from_secs(10);
        earlier_run(&dir, 3, t0);
        let tiers = reopened(&dir, false);
        let missed = t0 + Duration::from_secs(1);
        tiers.purge(
            &purge(Scope::Tags(vec!["k1".into()]), false, missed),
            missed,
        );
        tiers.purge(&purge(Scope::Tags(vec!["k2".into()]), true, missed), missed);
        tiers.open_disk();
        assert!(tiers.lookup(&key(1), SystemTime::now()).is_none());
        let soft = tiers.lookup(&key(2), SystemTime::now()).unwrap();
        assert!(!soft.objects[0].policy.is_fresh(SystemTime::now()));
        assert!(tiers.lookup(&key(3), SystemTime::now()).unwrap().objects[0]
            .policy
            .is_fresh(t0 + Duration::from_secs(2)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_objects_reach_both_tiers_and_purges_both() {
        let dir = TempDir::new("both");
        let tiers = reopened(&dir, true);
        let t0 = SystemTime::now();
        assert!(tiers.insert(&key(1), tagged("a", t0), SystemTime::now()));
        tiers.disk().flush();
        assert!(tiers.disk().lookup(&key(1), SystemTime::now()).is_some());
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            tiers.purge(&purge(Scope::Tags(vec!["a".into()]), false, later), later),
            1
        );
        assert!(tiers.lookup(&key(1), SystemTime::now()).is_none());
        tiers.disk().flush();
        assert_eq!(dir.count("meta"), 0);
    }
}
