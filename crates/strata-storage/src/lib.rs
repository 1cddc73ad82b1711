//! Strata's object store.
//!
//! - [`body::ChunkedBody`]: a body kept as the chunks it arrived in, readable while it is
//!   still being written (read-while-write) and sliceable for `Range` without copying.
//! - [`object::StoredObject`] / [`object::Variants`]: one response and the `Vary` variants
//!   stored under a primary key.
//! - [`Storage`]: the small trait every tier implements; [`memory::MemoryStorage`] is the
//!   byte-bounded memory tier and also the fake used in tests; [`disk::DiskStorage`] keeps
//!   objects in files and survives restarts; [`tiered::TieredStorage`] puts memory over disk.
//!
//! The trait keeps lookups synchronous (an index lookup) and body reads asynchronous, so a
//! disk tier fits beside memory: its index lives in memory, its chunks come from files.

pub mod body;
pub mod disk;
#[cfg(test)]
mod fixtures;
pub mod memory;
pub mod object;
pub mod purge;
pub mod tiered;

use std::sync::Arc;

use strata_http_cache::CacheKey;

pub use body::{BodyError, BodyReader, ChunkedBody};
pub use disk::DiskStorage;
pub use memory::MemoryStorage;
pub use object::{owned_headers, StoredObject, Variants};
pub use purge::{Purge, Scope};
pub use tiered::TieredStorage;

/// Counters a tier reports for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes accounted against the capacity.
    pub bytes: u64,
    pub capacity: u64,
    /// Primary keys held.
    pub keys: u64,
    pub evictions: u64,
}

/// A disk tier's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskReport {
    pub stats: StorageStats,
    /// Whether lookups read it yet.
    pub open: bool,
    /// Journaled purges not yet applied to its index.
    pub pending_purges: usize,
    pub counters: disk::DiskCounters,
}

/// A cache tier.
pub trait Storage: Send + Sync + 'static {
    /// The variants stored under a primary key, as of `now` (a soft purge not yet applied
    /// to them makes them stale as of then).
    fn lookup(&self, key: &CacheKey, now: std::time::SystemTime) -> Option<Arc<Variants>>;

    /// Stores a complete object, replacing the variant with the same `Vary` selection.
    /// Returns false when the tier declined it (too large, or covered by a hard purge
    /// that landed while it was filled; a soft one makes it stale as of `now`).
    fn insert(&self, key: &CacheKey, object: Arc<StoredObject>, now: std::time::SystemTime)
        -> bool;

    /// Replaces one stored variant with a refreshed copy (after a 304), if it is still
    /// there. Returns whether it was (a purge or an eviction may have come first).
    fn replace(&self, key: &CacheKey, old: &Arc<StoredObject>, new: Arc<StoredObject>) -> bool;

    /// Removes every variant under a key (stored before `now`). Returns whether anything
    /// was removed.
    fn remove(&self, key: &CacheKey, now: std::time::SystemTime) -> bool;

    /// Applies a purge to what is stored, and remembers it for a while so objects being
    /// filled when it landed are caught when stored. Returns the objects affected.
    fn purge(&self, purge: &Purge, now: std::time::SystemTime) -> u64;

    /// Applies outstanding pattern purges to everything stored, then retires them. Until
    /// then they are applied lazily at lookup. Returns the objects affected.
    fn sweep(&self, now: std::time::SystemTime) -> u64;

    fn stats(&self) -> StorageStats;

    /// The disk tier's figures, when there is one.
    fn disk_report(&self) -> Option<DiskReport> {
        None
    }
}
