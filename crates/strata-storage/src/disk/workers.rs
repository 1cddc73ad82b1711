//! The disk tier's three threads and what they are sent.
//!
//! - the *writer* writes and commits copies ([`Job`]), one at a time, off the request
//!   path (a bounded queue: when it is full, the copy stays in memory only);
//! - the *purger* applies journaled purges to the index, in journal order ([`Purging`]);
//! - the *file* thread carries out file work the index already reflects ([`Chore`]):
//!   deletions, metadata rewrites, journal segments whose purges are written. Separate
//!   from the purger so that slow unlinks never hold back the next purge's index work.
//!
//! Each ends when the tier is dropped: its queue's senders go with it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use bytes::Bytes;
use strata_http_cache::CacheKey;

use super::files::Files;
use super::index::Effects;
use super::journal;
use super::record::Meta;
use super::Inner;
use crate::object::StoredObject;
use crate::purge::Purge;

/// Work for the writer thread.
pub(super) enum Job {
    Write {
        key: CacheKey,
        object: Arc<StoredObject>,
        chunks: Vec<Bytes>,
        /// When it was handed over: a soft purge found at commit makes it stale as of then.
        now: SystemTime,
    },
    /// Answers once every job queued before it is done.
    Flush(mpsc::Sender<()>),
    /// Done by the writer so that no write is under way meanwhile.
    Wipe(mpsc::Sender<io::Result<()>>),
}

/// Work for the purger thread, in journal order.
pub(super) enum Purging {
    /// Apply a journaled purge to the index, drop it from the pending list, and hand its
    /// file work (then the journal segment it closed, if any) to the file thread.
    Apply {
        purge: Arc<Purge>,
        now: SystemTime,
        closed: Option<u64>,
    },
    Flush(mpsc::Sender<()>),
}

/// File work the index already reflects, for the file thread, in order.
pub(super) enum Chore {
    Delete(Vec<String>),
    /// Metadata rewritten (soft purges).
    Rewrite(Vec<(String, Meta)>),
    /// Journal segments up to this one: the chores of their purges were queued before.
    DropSegments(u64),
    /// A wiped objects directory, renamed aside.
    RemoveDir(PathBuf),
    Flush(mpsc::Sender<()>),
    /// The directory's lock, let go once every chore queued before it is done.
    Release(fs::File, mpsc::Sender<()>),
}

impl Chore {
    /// The chores a purge's effects make (none for none).
    pub fn of(effects: Effects) -> impl Iterator<Item = Chore> {
        let deletes = (!effects.deletes.is_empty()).then(|| Chore::Delete(effects.deletes));
        let rewrites = (!effects.rewrites.is_empty()).then(|| Chore::Rewrite(effects.rewrites));
        deletes.into_iter().chain(rewrites)
    }
}

/// The writer thread: copies written and committed, in the order they were queued.
pub(super) fn run_writer(tier: &Inner, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Write {
                key,
                object,
                chunks,
                now,
            } => tier.write(&key, &object, &chunks, now),
            Job::Flush(done) => {
                let _ = done.send(());
            }
            Job::Wipe(done) => {
                let _ = done.send(tier.wipe());
            }
        }
    }
}

/// The purger thread: journaled purges applied to the index, in order.
pub(super) fn run_purger(tier: &Weak<Inner>, purgings: mpsc::Receiver<Purging>) {
    for purging in purgings {
        match purging {
            Purging::Apply { purge, now, closed } => {
                // A weak reference: the tier's senders live in it, so this thread ends
                // once the tier is dropped.
                let Some(tier) = tier.upgrade() else {
                    return;
                };
                let mut effects = Effects::default();
                tier.index.apply(&purge, now, &mut effects);
                // The index reflects it now: lookups need not check it any more.
                tier.pending().retain(|p| !Arc::ptr_eq(p, &purge));
                tier.queue(effects);
                if let Some(n) = closed {
                    tier.chore(Chore::DropSegments(n));
                }
            }
            Purging::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// The file thread: file work in the order it was queued. `dir`: the tier's directory
/// (journal segments).
pub(super) fn run_files(files: &Files, dir: &Path, chores: mpsc::Receiver<Chore>) {
    for chore in chores {
        match chore {
            Chore::Delete(ids) => {
                for id in &ids {
                    files.delete(id);
                }
            }
            Chore::Rewrite(list) => {
                for (id, meta) in &list {
                    files.rewrite_meta(id, meta);
                }
            }
            Chore::DropSegments(n) => journal::remove_through(dir, n),
            Chore::RemoveDir(path) => {
                if fs::remove_dir_all(&path).is_err() {
                    files.failed();
                }
            }
            Chore::Flush(done) => {
                let _ = done.send(());
            }
            Chore::Release(lock, done) => {
                drop(lock);
                let _ = done.send(());
            }
        }
    }
}
