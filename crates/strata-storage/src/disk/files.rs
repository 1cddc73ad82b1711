//! The disk tier's files: `objects/<hh>/<id>.body` (the body, raw) and
//! `objects/<hh>/<id>.meta` (everything else, [`Meta`]).
//!
//! Writing a copy is the body, then the metadata under a temporary name, then a rename:
//! the rename commits, so a crash leaves at most a body or a temporary file without
//! metadata, which [`Files::scan`] removes at the next open, never a half copy. Deleting
//! goes the other way (metadata first). Failures are counted, not raised, where the caller
//! could do nothing about them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::index::{Effects, Entry};
use super::record::{Meta, RecordError};
use crate::body::ChunkedBody;

/// Size of the pieces a body is written and read back in.
const CHUNK: usize = 256 << 10;

/// The objects directory, and the tier's error counter.
#[derive(Clone)]
pub(super) struct Files {
    objects: PathBuf,
    errors: Arc<AtomicU64>,
}

// === impl Files ===

impl Files {
    pub fn new(objects: PathBuf, errors: Arc<AtomicU64>) -> Self {
        Self { objects, errors }
    }

    pub fn objects(&self) -> &Path {
        &self.objects
    }

    /// Counts a failure the caller has handled (or could not).
    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn body_path(&self, id: &str) -> PathBuf {
        self.path(id, "body")
    }

    fn path(&self, id: &str, ext: &str) -> PathBuf {
        self.shard(id).join(format!("{id}.{ext}"))
    }

    fn shard(&self, id: &str) -> PathBuf {
        self.objects.join(id.get(..2).unwrap_or("00"))
    }

    pub fn write_body(&self, id: &str, chunks: &[Bytes]) -> io::Result<()> {
        fs::create_dir_all(self.shard(id))?;
        let mut body =
            io::BufWriter::with_capacity(CHUNK, fs::File::create(self.path(id, "body"))?);
        for c in chunks {
            body.write_all(c)?;
        }
        body.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    }

    /// Commits a copy whose body is written.
    pub fn write_meta(&self, id: &str, meta: &Meta) -> io::Result<()> {
        write_atomically(&self.path(id, "meta"), &meta.encode())
    }

    /// Rewrites a copy's metadata, unless the copy was deleted meanwhile (evicted,
    /// replaced): metadata without a body would only be garbage for the next open.
    pub fn rewrite_meta(&self, id: &str, meta: &Meta) {
        if !self.path(id, "body").exists() {
            return;
        }
        if self.write_meta(id, meta).is_err() {
            self.failed();
        }
    }

    pub fn delete(&self, id: &str) {
        // Metadata first: a body without metadata is garbage the next open removes;
        // metadata without a body would be an entry that cannot be served.
        for ext in ["meta", "body"] {
            match fs::remove_file(self.path(id, ext)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => self.failed(),
            }
        }
    }

    /// Does a purge's file work here and now.
    pub fn run(&self, effects: Effects) {
        for id in &effects.deletes {
            self.delete(id);
        }
        for (id, meta) in &effects.rewrites {
            self.rewrite_meta(id, meta);
        }
    }

    /// The copies the directory holds, oldest first, after removing what cannot be served:
    /// metadata that does not parse or whose body is missing or short, bodies without
    /// metadata, temporaries.
    pub fn scan(&self) -> io::Result<Vec<Entry>> {
        let mut found: Vec<(String, Meta)> = Vec::new();
        let mut bodies: HashMap<String, u64> = HashMap::new();
        let mut metas: HashSet<String> = HashSet::new();
        for shard in fs::read_dir(&self.objects)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for file in fs::read_dir(&shard)? {
                let path = file?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some(id) = name.strip_suffix(".body") {
                    bodies.insert(id.to_string(), fs::metadata(&path)?.len());
                } else if let Some(id) = name.strip_suffix(".meta") {
                    metas.insert(id.to_string());
                    match fs::read(&path)
                        .map_err(RecordError::from)
                        .and_then(|b| Meta::decode(&b))
                    {
                        Ok(meta) => found.push((id.to_string(), meta)),
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "dropping unreadable cache metadata");
                            self.delete(id);
                        }
                    }
                } else {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        for id in bodies.keys().filter(|id| !metas.contains(*id)) {
            self.delete(id);
        }
        // Oldest first, so each key's newest copy ends up first in its set.
        found.sort_by_key(|(_, meta)| meta.stored_at);
        let mut entries = Vec::with_capacity(found.len());
        for (id, meta) in found {
            if bodies.get(&id) != Some(&meta.body_len) {
                self.delete(&id);
                continue;
            }
            entries.push(Entry { id, meta });
        }
        Ok(entries)
    }
}

/// Streams a body file into `body`, in pieces readers follow as they arrive. An error if
/// it cannot be read or is not `expected` bytes long.
pub(super) fn read_body(path: &Path, expected: u64, body: &ChunkedBody) -> io::Result<()> {
    let mut file = fs::File::open(path)?;
    let mut total = 0u64;
    loop {
        let mut buf = BytesMut::zeroed(CHUNK);
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        total += n as u64;
        body.push(buf.freeze());
    }
    if total != expected {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("body has {total} bytes, metadata says {expected}"),
        ));
    }
    body.finish();
    Ok(())
}

/// How far a ranged read may be ahead of its reader.
const READ_AHEAD: u64 = 4 * CHUNK as u64;

/// A reader that takes nothing for this long is dropped, and the read stops.
const READER_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Streams bytes `from..to` (exclusive) of a body file of `expected` bytes into `body` (a
/// body read on demand), a piece at a time on the blocking pool, never more than
/// [`READ_AHEAD`] ahead of its reader, and stops when the reader leaves. An error if the
/// file cannot be read or is shorter than it should be.
pub(super) async fn read_range(
    path: PathBuf,
    from: u64,
    to: u64,
    expected: u64,
    body: Arc<ChunkedBody>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = tokio::task::spawn_blocking(move || fs::File::open(path))
        .await
        .map_err(io::Error::other)??;
    let file = Arc::new(file);
    let to = to.min(expected);
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK as u64) as usize;
        let reading = Arc::clone(&file);
        let piece = tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(n);
            reading.read_exact_at(&mut buf, at).map(|()| buf.freeze())
        })
        .await
        .map_err(io::Error::other)??;
        at += n as u64;
        body.push(piece);
        if at < to && !body.wait_for_readers(READ_AHEAD, READER_STALL).await {
            // The reader left (or stalled): nobody needs the rest.
            body.abandon("reader gone");
            return Ok(());
        }
    }
    body.finish();
    Ok(())
}

/// Writes `path` whole or not at all: a temporary file, then a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}
