//! A body stored as the chunks it arrived in, readable while it is being written.
//!
//! Chunks are kept exactly as upstream delivered them (`Bytes`, no copy). A cumulative
//! offset index lets a reader start at any byte with a binary search, so a `Range` is served
//! from the chunks it touches. Writers append; readers wait on a `watch` channel that ticks
//! on every append and on completion.
//!
//! A body that turns out too large to keep (no `Content-Length`, then past the object size
//! limit) switches to *streaming only*: chunks every live reader has passed are released,
//! and the writer waits for the slowest reader ([`ChunkedBody::wait_for_readers`]) so memory
//! stays bounded by a window instead of by the object size.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::Stream;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the fill was abandoned: {0}")]
    Abandoned(&'static str),
    #[error("the requested bytes were already released (streaming-only body)")]
    Released,
}

#[derive(Debug, Default)]
struct State {
    chunks: Vec<Bytes>,
    /// `ends[i]` = total bytes through chunk `i`.
    ends: Vec<u64>,
    len: u64,
    finished: bool,
    error: Option<BodyError>,
    /// Streaming-only: chunks before `released` have been dropped.
    streaming_only: bool,
    released: usize,
    /// Positions of live readers, by reader id.
    readers: HashMap<u64, u64>,
    /// Some reader was dropped for stalling (its reads now fail).
    evicted: bool,
    next_reader: u64,
    /// Ticks on every append and at the end; dropped once the body is complete, so a
    /// stored object does not carry a channel (about 350 bytes) nobody will wait on.
    ticks: Option<watch::Sender<u64>>,
    /// The reading of a body read on demand ([`ChunkedBody::on_demand`]) holds nothing
    /// before this byte.
    base: u64,
}

impl State {
    fn tick(&self) {
        if let Some(t) = &self.ticks {
            t.send_modify(|t| *t = t.wrapping_add(1));
        }
    }

    /// No more writes: readers waiting are woken a last time and the channel goes.
    fn close(&mut self) {
        self.chunks.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.tick();
        self.ticks = None;
    }

    fn min_reader_pos(&self) -> Option<u64> {
        self.readers.values().copied().min()
    }

    /// Whether a reader was ever made (ids count from 0).
    fn ever_read(&self) -> bool {
        self.next_reader > 0
    }

    /// Drops chunks every live reader has passed. Before the first reader arrives nothing
    /// is dropped: it reads from the start (the client a fill was started for attaches
    /// only once the fill runs, and an upstream faster than it must not take its start).
    fn release_consumed(&mut self) {
        let floor = match self.min_reader_pos() {
            Some(p) => p,
            None if !self.ever_read() => 0,
            None => self.len,
        };
        while self.released < self.chunks.len() && self.ends[self.released] <= floor {
            self.chunks[self.released] = Bytes::new();
            self.released += 1;
        }
    }
}

/// Reads a stored body from byte `from` through `to` (inclusive; `None`: to its end)
/// into the body it is given, as [`ChunkedBody::on_demand`] asks.
pub type Loader = Arc<dyn Fn(Arc<ChunkedBody>, u64, Option<u64>) + Send + Sync>;

/// A shared, append-only body.
pub struct ChunkedBody {
    state: Mutex<State>,
    consumed: Notify,
    /// For a body read on demand: what reads a range of it for a reader.
    loader: Option<Loader>,
}

impl std::fmt::Debug for ChunkedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

// === impl ChunkedBody ===

impl ChunkedBody {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                ticks: Some(watch::Sender::new(0)),
                ..State::default()
            }),
            consumed: Notify::new(),
            loader: None,
        })
    }

    /// A body whose bytes are read only when a reader comes, from the reader's first byte
    /// through its last, into a body of the reader's own (a disk tier's large file: a range
    /// is read, not the object). That one is streaming-only: what the reader has passed is
    /// released, and the loader is expected to wait for it
    /// ([`ChunkedBody::wait_for_readers`]), so a whole read of a large file holds a window
    /// of it. This body itself never holds bytes (never finished, length 0): its object
    /// says its length in `Content-Length`.
    pub fn on_demand(loader: Loader) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            consumed: Notify::new(),
            loader: Some(loader),
        })
    }

    pub fn is_on_demand(&self) -> bool {
        self.loader.is_some()
    }

    /// A complete body from one buffer (synthetic answers, tests).
    pub fn complete(data: Bytes) -> Arc<Self> {
        let body = Self::new();
        body.push(data);
        body.finish();
        body
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a single push or flag, so a panic elsewhere
        // cannot leave it half-done; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let mut s = self.lock();
        if s.finished || s.error.is_some() {
            return;
        }
        s.len += chunk.len() as u64;
        let end = s.len;
        s.ends.push(end);
        s.chunks.push(chunk);
        s.tick();
    }

    pub fn finish(&self) {
        let mut s = self.lock();
        if s.finished || s.error.is_some() {
            return;
        }
        s.finished = true;
        s.close();
    }

    /// Ends the body with an error: readers that reach the end see it.
    pub fn abandon(&self, why: &'static str) {
        let mut s = self.lock();
        if s.finished || s.error.is_some() {
            return;
        }
        s.error = Some(BodyError::Abandoned(why));
        s.close();
    }

    /// Stops keeping the whole body: from now on only what readers still need is held.
    pub fn stream_only(&self) {
        let mut s = self.lock();
        s.streaming_only = true;
        s.release_consumed();
    }

    /// Writer side of streaming-only mode: waits until the slowest reader is within
    /// `window` bytes of the end. Returns false when no reader is left, or when none came
    /// within `stall` (before the first reader, the writer waits for it).
    ///
    /// A reader that makes no progress for `stall` is dropped from the body (its next read
    /// fails), so one stalled client cannot hold the fill, and every other reader, forever.
    pub async fn wait_for_readers(&self, window: u64, stall: Duration) -> bool {
        loop {
            let notified = self.consumed.notified();
            tokio::pin!(notified);
            // Register before looking, so a read that lands in between wakes us.
            notified.as_mut().enable();
            {
                let s = self.lock();
                match s.min_reader_pos() {
                    None if s.ever_read() => return false,
                    None => {}
                    Some(p) if s.len - p.min(s.len) <= window => return true,
                    Some(_) => {}
                }
            }
            if tokio::time::timeout(stall, notified).await.is_err() {
                let mut s = self.lock();
                if s.readers.is_empty() {
                    return false;
                }
                let floor = s.len.saturating_sub(window);
                s.readers.retain(|_, pos| *pos >= floor);
                s.evicted = true;
                s.release_consumed();
            }
        }
    }

    /// The chunks written so far, when the body keeps all of them (not streaming-only, not
    /// abandoned): what a disk tier copies once the fill has pushed its last chunk.
    pub fn snapshot(&self) -> Option<Vec<Bytes>> {
        let s = self.lock();
        (!s.streaming_only && s.error.is_none()).then(|| s.chunks.clone())
    }

    /// Waits until the body is complete, or fails with why it never will be.
    pub async fn wait_finished(&self) -> Result<(), BodyError> {
        let outcome = |s: &State| match (&s.error, s.finished) {
            (Some(err), _) => Some(Err(err.clone())),
            (None, true) => Some(Ok(())),
            (None, false) => None,
        };
        let mut ticks = {
            let s = self.lock();
            if let Some(done) = outcome(&s) {
                return done;
            }
            match &s.ticks {
                Some(t) => t.subscribe(),
                None => return Err(BodyError::Abandoned("writer dropped")),
            }
        };
        loop {
            let closed = ticks.changed().await.is_err();
            if let Some(done) = outcome(&self.lock()) {
                return done;
            }
            if closed {
                return Err(BodyError::Abandoned("writer dropped"));
            }
        }
    }

    /// Readers of this body now.
    pub fn readers(&self) -> usize {
        self.lock().readers.len()
    }

    /// Resolves once no reader is left.
    pub async fn readers_gone(&self) {
        loop {
            let notified = self.consumed.notified();
            tokio::pin!(notified);
            // Register before looking, so a reader dropped in between wakes us.
            notified.as_mut().enable();
            if self.readers() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    pub fn chunk_count(&self) -> usize {
        self.lock().chunks.len()
    }

    /// A reader of `[start, end]` (inclusive); `None` reads to the end of the body.
    pub fn reader(self: &Arc<Self>, start: u64, end: Option<u64>) -> BodyReader {
        if let Some(load) = &self.loader {
            let reading = Self::new();
            {
                let mut s = reading.lock();
                s.streaming_only = true;
                s.base = start;
                s.len = start;
            }
            let reader = reading.reader(start, end);
            load(Arc::clone(&reading), start, end);
            return reader;
        }
        let (id, ticks, tracked) = {
            let mut s = self.lock();
            let id = s.next_reader;
            s.next_reader += 1;
            // Positions matter while the body is written (the fill counts its readers, and
            // a streaming-only body releases what all have passed). A complete body is
            // read by every hit: no bookkeeping, no channel.
            let tracked = !s.finished || s.streaming_only;
            if tracked {
                s.readers.insert(id, start);
            }
            // A writer waiting for its first reader goes on.
            self.consumed.notify_waiters();
            (
                id,
                s.ticks.as_ref().map(|t| WatchStream::new(t.subscribe())),
                tracked,
            )
        };
        BodyReader {
            body: Arc::clone(self),
            ticks,
            tracked,
            id,
            pos: start,
            end_exclusive: end.map(|e| e.saturating_add(1)),
        }
    }

    /// The slice at `pos`, or what the reader must do instead.
    fn step(&self, id: u64, pos: u64, end_exclusive: Option<u64>) -> Step {
        let mut s = self.lock();
        if end_exclusive.is_some_and(|e| pos >= e) {
            return Step::Done;
        }
        if s.evicted && !s.readers.contains_key(&id) {
            return Step::Error(BodyError::Released);
        }
        if pos < s.base {
            return Step::Error(BodyError::Released);
        }
        if pos < s.len {
            // First chunk whose end is past `pos`.
            let i = s.ends.partition_point(|&e| e <= pos);
            if i < s.released {
                return Step::Error(BodyError::Released);
            }
            let chunk_start = s.ends[i] - s.chunks[i].len() as u64;
            let from = (pos - chunk_start) as usize;
            let mut to = s.chunks[i].len();
            if let Some(e) = end_exclusive {
                to = to.min((e - chunk_start) as usize);
            }
            let data = s.chunks[i].slice(from..to);
            let new_pos = pos + data.len() as u64;
            if let Some(p) = s.readers.get_mut(&id) {
                *p = new_pos;
            }
            if s.streaming_only {
                s.release_consumed();
                self.consumed.notify_waiters();
            }
            return Step::Data(data);
        }
        if let Some(err) = &s.error {
            return Step::Error(err.clone());
        }
        if s.finished {
            return Step::Done;
        }
        Step::Wait
    }

    fn drop_reader(&self, id: u64) {
        let mut s = self.lock();
        s.readers.remove(&id);
        if s.readers.is_empty() {
            // A stored object is read by many clients over its life: do not keep the
            // table of the busiest moment.
            s.readers = HashMap::new();
        }
        if s.streaming_only {
            s.release_consumed();
        }
        drop(s);
        self.consumed.notify_waiters();
    }
}

enum Step {
    Data(Bytes),
    Wait,
    Done,
    Error(BodyError),
}

/// Reads a [`ChunkedBody`] from a position, waiting for the writer when it catches up.
pub struct BodyReader {
    body: Arc<ChunkedBody>,
    ticks: Option<WatchStream<u64>>,
    id: u64,
    /// Registered with the body (it was still being written when this reader started).
    tracked: bool,
    pos: u64,
    end_exclusive: Option<u64>,
}

// === impl BodyReader ===

impl BodyReader {
    /// Polls for the next piece of the body; `None` at the end.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            match self.body.step(self.id, self.pos, self.end_exclusive) {
                Step::Data(b) => {
                    self.pos += b.len() as u64;
                    return Poll::Ready(Some(Ok(b)));
                }
                Step::Done => return Poll::Ready(None),
                Step::Error(e) => return Poll::Ready(Some(Err(e))),
                // The watch stream yields once per change it has not shown us yet, so a
                // chunk pushed after `step` looked makes this ready and we look again.
                Step::Wait => match self.ticks.as_mut().map(|t| Pin::new(t).poll_next(cx)) {
                    Some(Poll::Pending) => return Poll::Pending,
                    Some(Poll::Ready(Some(_))) => continue,
                    // The channel closes only after the last tick: look once more.
                    Some(Poll::Ready(None)) => {
                        self.ticks = None;
                        continue;
                    }
                    None => return Poll::Ready(Some(Err(BodyError::Abandoned("writer dropped")))),
                },
            }
        }
    }

    /// The next piece of the body; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, BodyError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        if self.tracked {
            self.body.drop_reader(self.id);
        }
    }
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("pos", &self.pos)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(mut r: BodyReader) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        while let Some(chunk) = r.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn body_of(parts: &[&'static [u8]]) -> Arc<ChunkedBody> {
        let b = ChunkedBody::new();
        for p in parts {
            b.push(Bytes::from_static(p));
        }
        b.finish();
        b
    }

    #[tokio::test]
    async fn reads_whole_body_across_chunks() {
        let b = body_of(&[b"hello ", b"chunked ", b"world"]);
        assert_eq!(
            read_all(b.reader(0, None)).await.unwrap(),
            b"hello chunked world"
        );
        assert_eq!(b.chunk_count(), 3);
    }

    #[tokio::test]
    async fn range_touches_only_the_chunks_it_covers() {
        let b = body_of(&[b"0123", b"4567", b"89ab"]);
        assert_eq!(read_all(b.reader(3, Some(8))).await.unwrap(), b"345678");
        assert_eq!(read_all(b.reader(11, Some(11))).await.unwrap(), b"b");
        assert_eq!(read_all(b.reader(4, Some(7))).await.unwrap(), b"4567");
    }

    #[tokio::test]
    async fn reader_sees_bytes_while_they_are_written() {
        let b = ChunkedBody::new();
        let mut r = b.reader(0, None);
        b.push(Bytes::from_static(b"first"));
        assert_eq!(r.next().await.unwrap().unwrap(), "first");
        let writer = Arc::clone(&b);
        let handle = tokio::spawn(async move {
            tokio::task::yield_now().await;
            writer.push(Bytes::from_static(b"second"));
            writer.finish();
        });
        assert_eq!(r.next().await.unwrap().unwrap(), "second");
        assert!(r.next().await.is_none());
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn abandoned_body_fails_waiting_readers() {
        let b = ChunkedBody::new();
        let r = b.reader(0, None);
        b.push(Bytes::from_static(b"x"));
        b.abandon("too large");
        assert_eq!(read_all(r).await, Err(BodyError::Abandoned("too large")));
    }

    #[tokio::test]
    async fn streaming_only_releases_consumed_chunks_and_waits_for_readers() {
        let b = ChunkedBody::new();
        let mut r = b.reader(0, None);
        b.stream_only();
        b.push(Bytes::from_static(b"aaaa"));
        b.push(Bytes::from_static(b"bbbb"));
        // The reader is 8 bytes behind: a 4-byte window must wait.
        let writer = Arc::clone(&b);
        let waiter =
            tokio::spawn(async move { writer.wait_for_readers(4, Duration::from_secs(10)).await });
        assert_eq!(r.next().await.unwrap().unwrap(), "aaaa");
        assert!(waiter.await.unwrap());
        // The first chunk is released; a new reader from 0 cannot get it.
        let mut late = b.reader(0, None);
        assert_eq!(late.next().await, Some(Err(BodyError::Released)));
        drop(late);
        drop(r);
        assert!(
            !b.wait_for_readers(0, Duration::from_secs(10)).await,
            "no reader left"
        );
    }

    /// The client a fill is started for attaches once the fill runs; an upstream faster
    /// than it outgrew the size limit first. It still reads from the start (it used to find
    /// the start released and get nothing at all).
    #[tokio::test]
    async fn the_first_reader_of_a_streaming_only_body_reads_it_from_the_start() {
        let b = ChunkedBody::new();
        b.push(Bytes::from_static(b"aaaa"));
        b.stream_only();
        b.push(Bytes::from_static(b"bbbb"));
        let writer = Arc::clone(&b);
        let waiter =
            tokio::spawn(async move { writer.wait_for_readers(4, Duration::from_secs(10)).await });
        tokio::task::yield_now().await;
        let mut r = b.reader(0, None);
        assert_eq!(r.next().await.unwrap().unwrap(), "aaaa");
        assert!(
            waiter.await.unwrap(),
            "the writer goes on once its reader came"
        );
        assert_eq!(r.next().await.unwrap().unwrap(), "bbbb");
        // With nobody coming at all, the writer gives up after the stall period.
        let lonely = ChunkedBody::new();
        lonely.stream_only();
        lonely.push(Bytes::from_static(b"cccc"));
        assert!(!lonely.wait_for_readers(0, Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn stalled_reader_is_dropped_so_the_writer_goes_on() {
        let b = ChunkedBody::new();
        let mut stalled = b.reader(0, None);
        let mut live = b.reader(0, None);
        b.stream_only();
        b.push(Bytes::from_static(b"aaaa"));
        b.push(Bytes::from_static(b"bbbb"));
        assert_eq!(live.next().await.unwrap().unwrap(), "aaaa");
        assert_eq!(live.next().await.unwrap().unwrap(), "bbbb");
        // `stalled` never reads: after the stall period it is dropped and the writer moves on.
        assert!(b.wait_for_readers(0, Duration::from_millis(20)).await);
        assert_eq!(stalled.next().await, Some(Err(BodyError::Released)));
    }
}
