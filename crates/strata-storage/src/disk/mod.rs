//! The disk tier: capacity beyond memory, and a cache that survives a restart.
//!
//! Layout under the configured directory:
//! - `objects/<hh>/<id>.body` and `objects/<hh>/<id>.meta` ([`files`], [`record`]): one
//!   stored copy. `<id>` is the key's hash and a number unique to this copy, so deleting a
//!   replaced copy's files never touches its successor's.
//! - `journal-<n>` ([`journal`]): purges, appended before they change anything.
//! - `purge-seq`: the bus sequence through which every purge is reflected in these files
//!   (see [`DiskStorage::applied_through`]).
//!
//! The parts: the [`index`] (in memory, no file IO: moka bounded by bytes on disk with
//! TinyLFU admission, plus the tag and key index), the [`files`] layer (write, commit,
//! read, delete, scan), and the [`workers`] (writer, purger and file threads). This file
//! ties them together: [`DiskStorage`] is the tier, `Inner` the state its threads share.
//!
//! Writes leave the request path: [`Storage::insert`] queues the object for the writer.
//! The index is rebuilt at open from the metadata files. A purge is appended to the
//! journal and put on a pending list that lookups apply (they stop seeing what it covers
//! before [`Storage::purge`] returns); the purger then applies it to the index, and the
//! file thread changes the files (hard: unlink; soft: rewrite the metadata as stale). At
//! open the journal is applied again, so a purge a node acknowledged still holds after it
//! crashes, whatever the background threads had done. Pattern purges are applied at once
//! by a scan of the in-memory index: nothing lazy would survive a restart. Evicted and
//! replaced copies are deleted by the file thread too, off the request path.
//!
//! Lookups answer from the index and read bodies on the blocking pool, streaming chunks
//! into a [`ChunkedBody`] that readers follow while it loads.

mod files;
mod index;
pub mod journal;
pub mod record;
mod workers;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH};
use http::StatusCode;
use strata_http_cache::{CacheKey, CachePolicy};

use crate::body::ChunkedBody;
use crate::object::{StoredObject, Variants};
use crate::purge::{stale_policy, Index, Purge, RecentPurges, Scope};
use crate::{Storage, StorageStats};
use files::Files;
use index::{DiskIndex, Effects, Entry};
use journal::Journal;
use workers::{Chore, Job, Purging};

pub use record::{Meta, RecordError};

/// Objects waiting for the writer; beyond this, new objects are not written.
const WRITE_QUEUE: usize = 1024;

/// Bodies up to this size are read whole at lookup (and promoted to memory by a tiered
/// store); larger ones are read on demand, only the range a response reads.
pub const READ_WHOLE_MAX: u64 = 4 << 20;
const APPLIED_FILE: &str = "purge-seq";
/// Writes between two prunes of tag index entries for evicted keys.
#[cfg(not(test))]
const PRUNE_EVERY: u64 = 1 << 14;
#[cfg(test)]
const PRUNE_EVERY: u64 = 64;

/// Counters beyond [`StorageStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// Objects written.
    pub writes: u64,
    /// Objects not written: the queue was full.
    pub dropped_writes: u64,
    /// Writes, reads and deletions that failed.
    pub errors: u64,
}

/// What the tier and its threads share.
///
/// **Lock order.** `recent` and `journal` are never held together. Either may be held
/// while taking `pending`, then the index's `tags`, then `applied`; nothing is taken in
/// the other direction. `tags` is never held while calling into the index's moka cache
/// (its eviction callback runs on the caller and sends to the file thread). Channel sends
/// never block (`purger` and `chores` are unbounded; the writer's queue is the tier's).
///
/// Why those nestings: an insert holds `recent` from its purge check until the copy is
/// indexed, so a purge recorded meanwhile finds it; a purge holds `journal` while it puts
/// itself on `pending` and hands itself to the purger, so the purger sees purges in
/// journal order; a wipe holds `journal` while it empties everything else.
struct Inner {
    dir: PathBuf,
    capacity: u64,
    index: DiskIndex,
    files: Files,
    /// Purges of the last while, which a copy is checked against when it commits.
    recent: Mutex<RecentPurges>,
    next_id: AtomicU64,
    writes: AtomicU64,
    dropped_writes: AtomicU64,
    errors: Arc<AtomicU64>,
    /// Also serialises purges: a segment may be dropped only once the chores of every
    /// purge in it are queued.
    journal: Mutex<Journal>,
    purger: mpsc::Sender<Purging>,
    chores: mpsc::Sender<Chore>,
    /// `purge-seq`, kept open.
    applied: Mutex<fs::File>,
    /// Journaled purges the purger thread has not applied to the index yet.
    pending: Mutex<Vec<Arc<Purge>>>,
}

/// A directory-backed tier.
pub struct DiskStorage {
    inner: Arc<Inner>,
    /// `None` only while dropping.
    writer: Option<SyncSender<Job>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    empty_at_open: bool,
    /// The directory's lock (one node per directory), held here rather than by the
    /// shared state a thread may still hold for a moment, so that dropping the tier
    /// releases it before `drop` returns.
    lock: Option<fs::File>,
}

// === impl DiskStorage ===

impl DiskStorage {
    /// Opens (creating it if needed) the tier in `dir`, holding at most `capacity` bytes,
    /// and rebuilds the index from the files there.
    pub fn open(dir: &Path, capacity: u64) -> io::Result<Self> {
        fs::create_dir_all(dir.join("objects"))?;
        let lock = lock_dir(dir)?;
        let errors = Arc::new(AtomicU64::new(0));
        let files = Files::new(dir.join("objects"), Arc::clone(&errors));
        let (chores, chores_rx) = mpsc::channel();
        {
            let (files, dir) = (files.clone(), dir.to_path_buf());
            std::thread::Builder::new()
                .name("strata-disk-files".into())
                // Ends when the tier is dropped (every sender goes with it).
                .spawn(move || workers::run_files(&files, &dir, chores_rx))?;
        }
        let (purger, purgings) = mpsc::channel();
        let (journal, replay, replayed_through) = Journal::open(dir)?;
        let evicted = chores.clone();
        let index = DiskIndex::new(capacity, move |ids| {
            let _ = evicted.send(Chore::Delete(ids));
        });
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            capacity,
            index,
            files,
            recent: Mutex::default(),
            next_id: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            dropped_writes: AtomicU64::new(0),
            errors,
            journal: Mutex::new(journal),
            purger,
            chores,
            applied: Mutex::new(
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(dir.join(APPLIED_FILE))?,
            ),
            pending: Mutex::default(),
        });
        inner.load(&replay, replayed_through)?;
        {
            let tier = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("strata-disk-purger".into())
                .spawn(move || workers::run_purger(&tier, purgings))?;
        }
        let (writer, jobs) = mpsc::sync_channel(WRITE_QUEUE);
        let worker = Arc::clone(&inner);
        let writer_thread = std::thread::Builder::new()
            .name("strata-disk-writer".into())
            // Ends when the tier is dropped (the sender goes with it).
            .spawn(move || workers::run_writer(&worker, jobs))?;
        let empty_at_open = inner.index.size().1 == 0;
        Ok(Self {
            inner,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
            empty_at_open,
            lock: Some(lock),
        })
    }

    fn send(&self, job: Job) -> Result<(), ()> {
        match &self.writer {
            Some(writer) => writer.send(job).map_err(drop),
            None => Err(()),
        }
    }

    /// Blocks until every object queued so far is written and every file chore queued so
    /// far is done (tests, benchmarks, orderly shutdown).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
        let (done, wait) = mpsc::channel();
        if self.inner.purger.send(Purging::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
        let (done, wait) = mpsc::channel();
        self.inner.chore(Chore::Flush(done));
        let _ = wait.recv();
    }

    /// Journaled purges not yet applied to the index (lookups apply them meanwhile).
    pub fn pending_purges(&self) -> usize {
        self.inner.pending().len()
    }

    pub fn counters(&self) -> DiskCounters {
        DiskCounters {
            writes: self.inner.writes.load(Ordering::Relaxed),
            dropped_writes: self.inner.dropped_writes.load(Ordering::Relaxed),
            errors: self.inner.errors.load(Ordering::Relaxed),
        }
    }

    /// The bus sequence through which every purge is reflected in the files: `None` when
    /// never recorded (a new directory, or one written without a durable bus).
    pub fn applied_through(&self) -> Option<u64> {
        fs::read_to_string(self.inner.dir.join(APPLIED_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records that every purge up to bus sequence `seq` is reflected in the files (or the
    /// journal). Written in place through a handle kept open, always 21 bytes: it is called
    /// for every batch of purges (one small `pwrite`, no file created).
    pub fn record_applied(&self, seq: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = self.inner.applied.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all_at(format!("{seq:020}\n").as_bytes(), 0)
    }

    /// Forgets everything stored: the index and every file. For a cache that can no
    /// longer prove which purges it has seen. Quick: the objects directory is renamed
    /// aside and deleted in the background. Blocks until done.
    pub fn wipe(&self) -> io::Result<()> {
        let (done, wait) = mpsc::channel();
        self.send(Job::Wipe(done))
            .map_err(|_| io::Error::other("the disk writer has stopped"))?;
        wait.recv()
            .map_err(|_| io::Error::other("the disk writer has stopped"))?
    }

    /// Whether the tier held nothing when it was opened (objects written since do not
    /// count: they were stored after every purge the node could have missed).
    pub fn was_empty_at_open(&self) -> bool {
        self.empty_at_open
    }
}

impl Drop for DiskStorage {
    /// Writes what is queued (an orderly shutdown keeps it), lets the purger finish what
    /// it was given, then hands the directory's lock to the file thread, which lets it go
    /// once the file work queued before is done: a tier reopened right after finds the
    /// directory free and nobody else working in it. Each wait is bounded by
    /// [`DROP_WAIT`]; past it, the directory stays locked until the file thread is done.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
        let (done, wait) = mpsc::channel();
        if self.inner.purger.send(Purging::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(DROP_WAIT);
        }
        if let Some(lock) = self.lock.take() {
            let (done, wait) = mpsc::channel();
            self.inner.chore(Chore::Release(lock, done));
            if wait.recv_timeout(DROP_WAIT).is_err() {
                tracing::warn!(dir = %self.inner.dir.display(), "disk tier closed with file work still queued: the directory stays locked until it is done");
            }
        }
    }
}

/// Longest a dropped tier waits for each of its threads.
const DROP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Storage for DiskStorage {
    fn lookup(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<Variants>> {
        // Purges the purger has not applied yet apply to what this lookup returns. Copied
        // before the index is read: a purge leaves the list only after the index has it, so
        // one of the two shows it.
        let pending = self.inner.pending().clone();
        let set = self.inner.index.get(key)?;
        // Bodies are read on the blocking pool; without a runtime there is nothing to read
        // them with, and a miss is the honest answer.
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let objects: Vec<Arc<StoredObject>> = set
            .entries
            .iter()
            .filter_map(|e| {
                let mut policy = e.meta.policy.clone();
                for p in pending
                    .iter()
                    .filter(|p| p.covers_stored(key, e.meta.stored_at, &e.meta.headers))
                {
                    if !p.soft {
                        return None;
                    }
                    policy = stale_policy(&policy, now);
                }
                Some(Arc::new(self.inner.object(e, policy, &runtime)))
            })
            .collect();
        (!objects.is_empty()).then(|| Arc::new(Variants { objects }))
    }

    fn insert(&self, key: &CacheKey, object: Arc<StoredObject>, now: SystemTime) -> bool {
        if object.weight() > self.inner.capacity {
            return false;
        }
        let Some(chunks) = object.body.snapshot() else {
            return false;
        };
        let job = Job::Write {
            key: key.clone(),
            object,
            chunks,
            now,
        };
        let Some(writer) = &self.writer else {
            return false;
        };
        match writer.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.inner.dropped_writes.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// A refreshed copy (after a 304) is not written: the disk keeps the older one, which
    /// revalidates again if it is ever read back.
    fn replace(&self, _key: &CacheKey, _old: &Arc<StoredObject>, _new: Arc<StoredObject>) -> bool {
        false
    }

    /// A hard purge of the key as of now, journaled like any other: a write of an older
    /// copy still queued is caught when it commits, and the removal holds after a crash.
    fn remove(&self, key: &CacheKey, now: SystemTime) -> bool {
        let held = self.inner.index.contains_key(key);
        let purge = Purge {
            scope: Scope::Keys(vec![key.clone()]),
            soft: false,
            issued_at: now,
        };
        self.purge(&purge, now);
        held
    }

    /// Journals the purge and leaves the work to the purger thread; until it is done, lookups
    /// apply the purge to what they return. Returns the objects the index lists under the
    /// scope (it may still list some evicted ones; 0 for patterns, as for memory).
    fn purge(&self, purge: &Purge, now: SystemTime) -> u64 {
        self.inner.recent().record(purge, now);
        let listed = self.inner.tags().count(&purge.scope);
        if listed == 0 && !matches!(purge.scope, Scope::Patterns(_)) {
            // Nothing stored is covered, and a copy committed from now on is checked against
            // the purge log first: no journal line, no work (most purges, on most nodes).
            return 0;
        }
        let mut journal = self.inner.journal();
        let logged = journal.append(purge);
        match logged {
            Ok(closed) => {
                let purge = Arc::new(purge.clone());
                self.inner.pending().push(Arc::clone(&purge));
                // Sent under the journal lock: chores come in the journal's order.
                let _ = self
                    .inner
                    .purger
                    .send(Purging::Apply { purge, now, closed });
                listed
            }
            Err(e) => {
                // Without the journal, only the files themselves can make the purge last.
                tracing::warn!(error = %e, "purge journal append failed; changing the files now");
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                let mut effects = Effects::default();
                let affected = self.inner.index.apply(purge, now, &mut effects);
                self.inner.files.run(effects);
                affected
            }
        }
    }

    /// Patterns were applied when they arrived.
    fn sweep(&self, _now: SystemTime) -> u64 {
        0
    }

    fn stats(&self) -> StorageStats {
        let (bytes, keys, evictions) = self.inner.index.size();
        StorageStats {
            bytes,
            capacity: self.inner.capacity,
            keys,
            evictions,
        }
    }
}

// === impl Inner ===

impl Inner {
    fn tags(&self) -> MutexGuard<'_, Index> {
        self.index.tags()
    }

    fn pending(&self) -> MutexGuard<'_, Vec<Arc<Purge>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recent(&self) -> MutexGuard<'_, RecentPurges> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn chore(&self, chore: Chore) {
        // The file thread lives as long as the tier; a send fails only while it is dropped.
        let _ = self.chores.send(chore);
    }

    fn queue(&self, effects: Effects) {
        for chore in Chore::of(effects) {
            self.chore(chore);
        }
    }

    /// Rebuilds the index from the files, then redoes what the purger and file threads
    /// had not done before the process ended: the journal's purges (`replay`), and wipes
    /// a crash interrupted. `replayed_through`: the last journal segment replayed.
    fn load(&self, replay: &[Purge], replayed_through: Option<u64>) -> io::Result<()> {
        for entry in self.files.scan()? {
            self.index_entry(Arc::new(entry));
        }
        for entry in fs::read_dir(&self.dir)?.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("objects.wiped-")
            {
                self.chore(Chore::RemoveDir(entry.path()));
            }
        }
        for p in replay {
            let mut effects = Effects::default();
            self.index.apply(p, p.issued_at, &mut effects);
            self.queue(effects);
        }
        if let Some(n) = replayed_through {
            self.chore(Chore::DropSegments(n));
        }
        Ok(())
    }

    /// Adds an entry to the index; the files of copies it replaces go.
    fn index_entry(&self, entry: Arc<Entry>) {
        let dropped = self.index.insert(entry);
        if !dropped.is_empty() {
            self.chore(Chore::Delete(dropped));
        }
    }

    /// The writer thread's work for one object.
    fn write(&self, key: &CacheKey, object: &StoredObject, chunks: &[Bytes], now: SystemTime) {
        let unique = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Part of a file name, unique across restarts: the system's time, not the node's.
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let id = format!("{:016x}-{started:x}-{unique:x}", key.hash64());
        let meta = Meta::of(key, object, chunks.iter().map(|c| c.len() as u64).sum());
        let failed = |e: io::Error| {
            tracing::warn!(key = %key.as_str(), error = %e, "disk cache write failed");
            self.files.failed();
            self.files.delete(&id);
        };
        if let Err(e) = self.files.write_body(&id, chunks) {
            return failed(e);
        }
        // Purges that landed since the object was filled still apply to it. The purge log
        // stays locked from this check until the metadata is committed and indexed: a purge
        // recorded later finds the entry in the index, so its journal segment cannot be
        // dropped while a copy it covers sits on disk unindexed.
        let recent = self.recent();
        let mut meta = meta;
        let mut removed = false;
        for p in recent.iter() {
            if !p.covers_stored(key, meta.stored_at, &meta.headers) {
                continue;
            }
            if !p.soft {
                removed = true;
                break;
            }
            meta.policy = stale_policy(&meta.policy, now);
        }
        if removed {
            drop(recent);
            self.files.delete(&id);
            return;
        }
        if let Err(e) = self.files.write_meta(&id, &meta) {
            drop(recent);
            return failed(e);
        }
        self.index_entry(Arc::new(Entry { id, meta }));
        if self.writes.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            // Under the purge log's lock, like every insert: no entry is added meanwhile.
            self.index.prune_tags();
        }
        drop(recent);
    }

    /// The writer thread's side of [`DiskStorage::wipe`].
    fn wipe(&self) -> io::Result<()> {
        let journal = &mut *self.journal();
        let objects = self.files.objects();
        let aside = self.dir.join(format!(
            "objects.wiped-{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        fs::rename(objects, &aside)?;
        fs::create_dir_all(objects)?;
        journal.reset()?;
        self.pending().clear();
        self.index.clear();
        // Emptied, not removed: the handle `record_applied` writes through stays valid.
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_len(0)?;
        self.chore(Chore::RemoveDir(aside));
        Ok(())
    }

    /// A stored object whose body streams in from its file.
    fn object(
        &self,
        entry: &Entry,
        policy: CachePolicy,
        runtime: &tokio::runtime::Handle,
    ) -> StoredObject {
        let meta = &entry.meta;
        let path = self.files.body_path(&entry.id);
        let (expected, files) = (meta.body_len, self.files.clone());
        let body = if expected > READ_WHOLE_MAX {
            // Large: only what the response reads, when it reads it (a range of a large
            // file reads that range; HEAD and 304 read nothing).
            let runtime = runtime.clone();
            ChunkedBody::on_demand(Arc::new(move |body, from, to| {
                let to = to.map_or(expected, |t| t.saturating_add(1));
                let (path, files) = (path.clone(), files.clone());
                runtime.spawn(async move {
                    let reading = Arc::clone(&body);
                    if let Err(e) = files::read_range(path.clone(), from, to, expected, reading).await {
                        tracing::warn!(file = %path.display(), error = %e, "disk cache read failed");
                        files.failed();
                        body.abandon("disk read failed");
                    }
                });
            }))
        } else {
            let body = ChunkedBody::new();
            let reading = Arc::clone(&body);
            runtime.spawn_blocking(move || {
                if let Err(e) = files::read_body(&path, expected, &reading) {
                    tracing::warn!(file = %path.display(), error = %e, "disk cache read failed");
                    files.failed();
                    reading.abandon("disk read failed");
                }
            });
            body
        };
        let mut headers = meta.headers.clone();
        // The length is known before the body is: ranges and Content-Length need not wait.
        if !headers.contains_key(CONTENT_LENGTH) && meta.status != StatusCode::NO_CONTENT {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(meta.body_len));
        }
        StoredObject {
            status: meta.status,
            headers,
            policy,
            variant: meta.variant.clone(),
            body,
            stored_at: meta.stored_at,
        }
    }
}

/// Takes the directory's lock: one node per directory.
fn lock_dir(dir: &Path) -> io::Result<fs::File> {
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    if let Err(e) = lock.try_lock() {
        return Err(match e {
            fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::WouldBlock,
                "another process has this directory open (one node per directory)",
            ),
            fs::TryLockError::Error(e) => e,
        });
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fixtures::{key, object, purge, tagged, TempDir};
    use crate::purge::PathPattern;

    async fn body_of(set: &Variants) -> Vec<u8> {
        let o = &set.objects[0];
        o.body.wait_finished().await.unwrap();
        let mut r = o.body.reader(0, None);
        let mut out = Vec::new();
        while let Some(c) = r.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    fn stored(dir: &TempDir, objects: &[(CacheKey, Arc<StoredObject>)]) -> DiskStorage {
        let disk = DiskStorage::open(&dir.0, 64 << 20).unwrap();
        for (k, o) in objects {
            assert!(disk.insert(k, Arc::clone(o), SystemTime::now()));
        }
        disk.flush();
        disk
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_survive_a_reopen_whole() {
        let dir = TempDir::new("reopen");
        let o = object(300_000, Some("fr"));
        drop(stored(&dir, &[(key(1), Arc::clone(&o))]));
        assert_eq!((dir.count("meta"), dir.count("body")), (1, 1));

        let disk = DiskStorage::open(&dir.0, 64 << 20).unwrap();
        assert!(!disk.was_empty_at_open());
        let set = disk
            .lookup(&key(1), SystemTime::now())
            .expect("found after reopen");
        let back = &set.objects[0];
        assert_eq!(back.status, o.status);
        assert_eq!(back.policy, o.policy);
        assert_eq!(back.variant, o.variant);
        assert_eq!(back.stored_at, o.stored_at);
        // The length is announced before the body has loaded.
        assert_eq!(back.headers[CONTENT_LENGTH], "300000");
        assert_eq!(body_of(&set).await, vec![b'x'; 300_000]);
        assert!(disk.lookup(&key(2), SystemTime::now()).is_none());
    }

    /// A range of a large stored object is read from its file, not the object: the
    /// body holds from the range's first byte to its last, and nothing is promoted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_of_a_large_object_reads_only_that_range_from_the_file() {
        let dir = TempDir::new("ranged");
        let len = 6usize << 20;
        let data: Bytes = (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
        let template = object(0, None);
        let o = Arc::new(StoredObject {
            status: template.status,
            headers: template.headers.clone(),
            policy: template.policy.clone(),
            variant: template.variant.clone(),
            body: ChunkedBody::complete(data.clone()),
            stored_at: template.stored_at,
        });
        let disk = stored(&dir, &[(key(1), o)]);
        let set = disk.lookup(&key(1), SystemTime::now()).expect("stored");
        let body = &set.objects[0].body;
        assert!(body.is_on_demand());
        assert_eq!(set.objects[0].headers[CONTENT_LENGTH], "6291456");
        let (start, end) = (5_000_000u64, 5_000_099u64);
        let mut r = body.reader(start, Some(end));
        let mut got = Vec::new();
        while let Some(c) = r.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, data[start as usize..=end as usize]);
        // The object's body holds nothing itself: each reader reads its own range.
        assert_eq!((body.len(), body.is_finished()), (0, false));
        let mut early = body.reader(10, Some(19));
        assert_eq!(early.next().await.unwrap().unwrap(), data.slice(10..20));
        assert!(
            early.next().await.is_none(),
            "read up to the range's end, not the file's"
        );

        // A whole read streams every byte, in order; so does a second one of the same object
        // at once (a revalidated object handed to every waiter).
        let set = disk.lookup(&key(1), SystemTime::now()).expect("stored");
        let (one, two) = tokio::join!(body_of_reader(&set), body_of_reader(&set));
        assert!(one == data && two == data);
    }

    async fn body_of_reader(set: &Variants) -> Bytes {
        let mut r = set.objects[0].body.reader(0, None);
        let mut out = Vec::new();
        while let Some(c) = r.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out.into()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hard_purge_hides_copies_at_once_and_their_files_follow() {
        let dir = TempDir::new("hard");
        let t0 = SystemTime::now();
        let disk = stored(
            &dir,
            &[
                (key(1), tagged("p1 shared", t0)),
                (key(2), tagged("p2 shared", t0)),
                (key(3), tagged("p3", t0)),
            ],
        );
        let later = t0 + Duration::from_secs(1);
        let n = disk.purge(
            &purge(Scope::Tags(vec!["shared".into()]), false, later),
            later,
        );
        assert_eq!(n, 2);
        assert!(disk.lookup(&key(1), SystemTime::now()).is_none());
        disk.flush();
        assert_eq!(dir.count("meta"), 1);
        assert_eq!(dir.count("body"), 1);
        drop(disk);
        let disk = DiskStorage::open(&dir.0, 64 << 20).unwrap();
        assert!(disk.lookup(&key(1), SystemTime::now()).is_none());
        assert!(disk.lookup(&key(2), SystemTime::now()).is_none());
        assert!(disk.lookup(&key(3), SystemTime::now()).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journaled_purge_whose_files_were_never_changed_holds_after_a_crash() {
        let dir = TempDir::new("crash");
        let t0 = SystemTime::now();
        drop(stored(
            &dir,
            &[
                (key(1), tagged("gone", t0)),
                (key(2), tagged("stale", t0)),
                (key(3), tagged("kept", t0)),
            ],
        ));
        // What a crash right after the journal append leaves: the purges logged, every file
        // as it was.
        let later = t0 + Duration::from_secs(1);
        let (mut j, _, _) = Journal::open(&dir.0).unwrap();
        j.append(&purge(Scope::Tags(vec!["gone".into()]), false, later))
            .unwrap();
        j.append(&purge(Scope::Tags(vec!["stale".into()]), true, later))
            .unwrap();
        drop(j);
        assert_eq!(dir.count("meta"), 3);

        let disk = DiskStorage::open(&dir.0, 64 << 20).unwrap();
        assert!(disk.lookup(&key(1), SystemTime::now()).is_none());
        assert!(!disk.lookup(&key(2), SystemTime::now()).unwrap().objects[0]
            .policy
            .is_fresh(later));
        assert!(disk.lookup(&key(3), SystemTime::now()).unwrap().objects[0]
            .policy
            .is_fresh(later));
        disk.flush();
        assert_eq!(dir.count("meta"), 2, "the replay's file work was done");
        // ... and the replayed segments were dropped: a third open replays nothing.
        drop(disk);
        let (_j, replay, _) = Journal::open(&dir.0).unwrap();
        assert!(replay.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn soft_purge_is_written_so_the_copy_is_stale_after_a_reopen() {
        let dir = TempDir::new("soft");
        let t0 = SystemTime::now();
        let disk = stored(&dir, &[(key(1), tagged("a", t0))]);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            disk.purge(&purge(Scope::Tags(vec!["a".into()]), true, later), later),
            1
        );
        // Stale at once, whether or not the purger got to it.
        let set = disk.lookup(&key(1), SystemTime::now()).unwrap();
        assert!(!set.objects[0].policy.is_fresh(later));
        drop(disk);
        let disk = DiskStorage::open(&dir.0, 64 << 20).unwrap();
        let set = disk
            .lookup(&key(1), SystemTime::now())
            .expect("soft purge keeps the copy");
        let o = &set.objects[0];
        assert_eq!(
            o.policy.freshness.source,
            strata_http_cache::freshness::FreshnessSource::Purged
        );
        assert!(!o.policy.is_fresh(later));
        assert_eq!(body_of(&set).await.len(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_tier_releases_its_directory_before_drop_returns() {
        // A purge leaves work on the purger and file threads; the tier is dropped and
        // reopened at once. It used to fail about 4 times in 100 ("another process has
        // this directory open") while a thread still held the shared state and the lock.
        let dir = TempDir::new("reopen");
        let t0 = SystemTime::now();
        drop(stored(&dir, &[(key(1), tagged("a", t0))]));
        for i in 0..50u64 {
            let disk =
                DiskStorage::open(&dir.0, 64 << 20).unwrap_or_else(|e| panic!("reopen {i}: {e}"));
            let at = t0 + Duration::from_millis(i + 1);
            disk.purge(&purge(Scope::Tags(vec!["a".into()]), true, at), at);
            drop(disk);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pattern_and_prefix_purges_apply_at_once() {
        let dir = TempDir::new("pattern");
        let t0 = SystemTime::now();
        let k = |p: &str| {
            CacheKey::new(
                "http",
                "h",
                p,
                None,
                &strata_http_cache::KeyRules::default(),
            )
        };
        let disk = stored(
            &dir,
            &[
                (k("/img/a.jpg"), tagged("x", t0)),
                (k("/img/b.png"), tagged("x", t0)),
                (k("/css/c.css"), tagged("x", t0)),
            ],
        );
        let later = t0 + Duration::from_secs(1);
        let glob = Scope::Patterns(vec![PathPattern::new(None, "/img/*.jpg")]);
        // Patterns are not counted (only a scan could); the index lists the prefix's key.
        assert_eq!(disk.purge(&purge(glob, false, later), later), 0);
        let prefix = Scope::Prefixes(vec!["http://h/css/".into()]);
        assert_eq!(disk.purge(&purge(prefix, false, later), later), 1);
        // Before the purger has applied them, lookups do.
        assert!(disk.lookup(&k("/img/a.jpg"), SystemTime::now()).is_none());
        assert!(disk.lookup(&k("/css/c.css"), SystemTime::now()).is_none());
        assert!(disk.lookup(&k("/img/b.png"), SystemTime::now()).is_some());
        disk.flush();
        assert_eq!(dir.count("meta"), 1);
        // A replay of an older purge leaves the rest alone.
        disk.purge(&purge(Scope::All, false, t0), later);
        disk.flush();
        assert!(disk.lookup(&k("/img/b.png"), SystemTime::now()).is_some());
        assert_eq!(dir.count("meta"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_lands_after_a_purge_it_predates_is_not_kept() {
        let dir = TempDir::new("race");
        let disk = DiskStorage::open(&dir.0, 64 << 20).unwrap();
        let filled_at = SystemTime::now() - Duration::from_secs(5);
        let now = SystemTime::now();
        // The purge is applied while the object is still on its way to the writer.
        disk.purge(&purge(Scope::Tags(vec!["t".into()]), false, now), now);
        disk.insert(&key(1), tagged("t", filled_at), SystemTime::now());
        // Soft: kept, but stale.
        disk.purge(&purge(Scope::Tags(vec!["s".into()]), true, now), now);
        disk.insert(&key(2), tagged("s", filled_at), SystemTime::now());
        disk.flush();
        assert!(disk.lookup(&key(1), SystemTime::now()).is_none());
        assert_eq!(dir.count("meta"), 1);
        let set = disk.lookup(&key(2), SystemTime::now()).unwrap();
        assert!(!set.objects[0]
            .policy
            .is_fresh(SystemTime::now() + Duration::from_secs(1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn torn_orphan_and_foreign_files_are_removed_at_open() {
        let dir = TempDir::new("torn");
        drop(stored(
            &dir,
            &[(key(1), object(100, None)), (key(2), object(100, None))],
        ));
        let shard = |id: &str| dir.0.join("objects").join(&id[..2]);
        // A body cut short, a body without metadata, unparsable metadata, a temporary.
        let ids: Vec<String> = std::fs::read_dir(dir.0.join("objects"))
            .unwrap()
            .flatten()
            .flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten())
            .filter_map(|f| {
                f.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".meta"))
                    .map(str::to_string)
            })
            .collect();
        let short = ids
            .iter()
            .find(|id| id.starts_with(&format!("{:016x}", key(1).hash64())))
            .unwrap();
        std::fs::write(shard(short).join(format!("{short}.body")), b"cut").unwrap();
        std::fs::create_dir_all(shard("ab")).unwrap();
        std::fs::write(shard("ab").join("ab-orphan.body"), b"x").unwrap();
        std::fs::write(shard("ab").join("ab-junk.meta"), b"{not json").unwrap();
        std::fs::write(shard("ab").join("ab-junk.body"), b"").unwrap();
        std::fs::write(shard("ab").join("ab-half.tmp"), b"{").unwrap();

        let disk = DiskStorage::open(&dir.0, 64 << 20).unwrap();
        assert!(
            disk.lookup(&key(1), SystemTime::now()).is_none(),
            "short body is not served"
        );
        assert!(disk.lookup(&key(2), SystemTime::now()).is_some());
        assert_eq!(disk.stats().keys, 1);
        assert_eq!(dir.count("meta"), 1, "only key 2's files remain");
        assert_eq!(dir.count("body"), 1);
        assert_eq!(dir.count("tmp"), 0);
    }

    #[test]
    fn bounded_in_bytes_and_evicted_files_are_deleted() {
        let dir = TempDir::new("bounded");
        let disk = DiskStorage::open(&dir.0, 1 << 20).unwrap();
        for i in 0..200 {
            disk.insert(&key(i), object(20_000, None), SystemTime::now());
        }
        disk.flush();
        // Settling the index queues the evictions' deletions; the file thread does them.
        let stats = disk.stats();
        disk.flush();
        assert!(stats.bytes <= 1 << 20, "{stats:?}");
        // The tag index forgets evicted keys as it goes.
        assert!(disk.inner.tags().len() < 200, "{}", disk.inner.tags().len());
        assert!(stats.evictions > 0);
        assert_eq!(dir.count("meta") as u64, stats.keys);
        assert_eq!(dir.count("body") as u64, stats.keys);
    }

    #[test]
    fn a_removed_key_stays_removed_even_if_an_older_write_commits_later() {
        let dir = TempDir::new("remove");
        let disk = DiskStorage::open(&dir.0, 1 << 20).unwrap();
        let filled_at = SystemTime::now() - Duration::from_secs(1);
        disk.insert(&key(1), tagged("t", filled_at), SystemTime::now());
        disk.flush();
        // Invalidated (an unsafe method) while an older copy is still on its way.
        assert!(disk.remove(&key(1), SystemTime::now()));
        disk.insert(&key(1), tagged("t", filled_at), SystemTime::now());
        disk.flush();
        assert!(disk.stats().keys == 0);
        assert_eq!(dir.count("meta"), 0);
        assert!(!disk.remove(&key(2), SystemTime::now()));
    }

    #[test]
    fn a_replaced_copy_leaves_no_files_behind() {
        let dir = TempDir::new("replace");
        let disk = DiskStorage::open(&dir.0, 1 << 20).unwrap();
        disk.insert(&key(1), object(10, Some("en")), SystemTime::now());
        disk.insert(&key(1), object(20, Some("fr")), SystemTime::now());
        disk.insert(&key(1), object(30, Some("en")), SystemTime::now());
        disk.flush();
        assert_eq!(dir.count("meta"), 2);
        assert_eq!(dir.count("body"), 2);
        assert!(disk.remove(&key(1), SystemTime::now()));
        disk.flush();
        assert_eq!(dir.count("meta") + dir.count("body"), 0);
    }

    #[test]
    fn a_purge_that_covers_nothing_stored_costs_no_journal_line() {
        let dir = TempDir::new("noop");
        let disk = DiskStorage::open(&dir.0, 1 << 20).unwrap();
        let t0 = SystemTime::now();
        disk.insert(&key(1), tagged("a", t0), SystemTime::now());
        disk.flush();
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            disk.purge(&purge(Scope::Tags(vec!["b".into()]), false, later), later),
            0
        );
        assert_eq!(disk.pending_purges(), 0);
        // Still recorded: an older copy of a "b" object committed now is caught.
        disk.insert(&key(2), tagged("b", t0), SystemTime::now());
        disk.flush();
        assert!(disk.stats().keys == 1);
        drop(disk);
        let (_j, replay, _) = Journal::open(&dir.0).unwrap();
        assert!(replay.is_empty());
    }

    #[test]
    fn one_tier_per_directory() {
        let dir = TempDir::new("lock");
        let disk = DiskStorage::open(&dir.0, 1 << 20).unwrap();
        let second = DiskStorage::open(&dir.0, 1 << 20).err().unwrap();
        assert_eq!(second.kind(), io::ErrorKind::WouldBlock);
        drop(disk);
        assert!(DiskStorage::open(&dir.0, 1 << 20).is_ok());
    }

    #[test]
    fn applied_sequence_and_wipe() {
        let dir = TempDir::new("wipe");
        let disk = DiskStorage::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(disk.applied_through(), None);
        disk.record_applied(123_456).unwrap();
        disk.record_applied(42).unwrap();
        assert_eq!(
            disk.applied_through(),
            Some(42),
            "a shorter number overwrites a longer one"
        );
        disk.insert(&key(1), object(10, None), SystemTime::now());
        disk.flush();
        assert_eq!(disk.stats().keys, 1);
        disk.wipe().unwrap();
        assert_eq!(disk.stats().keys, 0);
        assert_eq!(disk.applied_through(), None);
        assert_eq!(dir.count("meta"), 0);
        drop(disk);
        assert!(DiskStorage::open(&dir.0, 1 << 20)
            .unwrap()
            .was_empty_at_open());
    }
}
