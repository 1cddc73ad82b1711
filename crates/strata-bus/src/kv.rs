//! Edge KV on the bus: keys and values every node shares, each write a new revision.
//!
//! On NATS it is a JetStream KV bucket (`strata-edge`): a write is acknowledged once the
//! stream has it (on every replica the stream has), and a write that names the revision it
//! expects is refused if another came first, by the server (compare-and-set, strongly
//! consistent for one key). Nodes keep a replica, fed by a watch of the whole bucket: reads
//! are local and eventually consistent. Embedded, the same in one process.
//!
//! Keys are any UTF-8 text (they are base64url-encoded into KV keys on NATS, which allow
//! few characters).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;

use crate::BusError;

/// The JetStream KV bucket of Edge KV.
pub const EDGE_BUCKET: &str = "strata-edge";

/// What a write expects of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing: the write wins whatever the key holds.
    Any,
    /// The key does not exist.
    Absent,
    /// The key's current revision is this one.
    Revision(u64),
}

/// A key's value at a revision; `None` for a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Option<Bytes>,
    pub revision: u64,
}

/// A write was refused because the key was not as expected.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("the key's revision is not the one expected")]
    Conflict,
    #[error(transparent)]
    Bus(#[from] BusError),
}

// === embedded ===

/// Edge KV held in this process.
#[derive(Clone)]
pub struct MemoryKv {
    shared: Arc<MemoryKvShared>,
}

/// The last revision given, and each key's value and revision.
type Entries = (u64, HashMap<String, (Bytes, u64)>);

struct MemoryKvShared {
    entries: Mutex<Entries>,
    changes: broadcast::Sender<KvEntry>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        MemoryKv {
            shared: Arc::new(MemoryKvShared {
                entries: Mutex::default(),
                changes: broadcast::channel(4096).0,
            }),
        }
    }
}

impl MemoryKv {
    pub fn put(&self, key: &str, value: Bytes, expect: Expect) -> Result<u64, KvError> {
        let mut guard = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (last, entries) = &mut *guard;
        let current = entries.get(key).map(|(_, r)| *r);
        match (expect, current) {
            (Expect::Any, _) | (Expect::Absent, None) => {}
            (Expect::Revision(want), Some(have)) if want == have => {}
            _ => return Err(KvError::Conflict),
        }
        *last += 1;
        entries.insert(key.to_owned(), (value.clone(), *last));
        let _ = self.shared.changes.send(KvEntry {
            key: key.to_owned(),
            value: Some(value),
            revision: *last,
        });
        Ok(*last)
    }

    pub fn get(&self, key: &str) -> Option<(Bytes, u64)> {
        let guard = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        guard.1.get(key).cloned()
    }

    /// Every entry now, then every change.
    pub fn watch(&self) -> KvWatch {
        let changes = self.shared.changes.subscribe();
        let guard = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = guard
            .1
            .iter()
            .map(|(k, (v, r))| KvEntry {
                key: k.clone(),
                value: Some(v.clone()),
                revision: *r,
            })
            .collect::<Vec<_>>();
        KvWatch::Memory(now.into_iter(), changes)
    }
}

// === NATS ===

/// The bucket's stream, made as JetStream KV lays one out (as the node registry's is:
/// async-nats's `create_key_value` cannot read the answers of nats-server 2.9).
pub(crate) async fn provision(js: &jetstream::Context) -> Result<(), BusError> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{EDGE_BUCKET}"),
        subjects: vec![format!("$KV.{EDGE_BUCKET}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map(drop)
    .map_err(|e| BusError::Connect(format!("edge KV bucket: {e}")))
}

fn nats_key(key: &str) -> String {
    BASE64URL_NOPAD.encode(key.as_bytes())
}

fn from_nats_key(key: &str) -> Option<String> {
    let bytes = BASE64URL_NOPAD.decode(key.as_bytes()).ok()?;
    String::from_utf8(bytes).ok()
}

pub(crate) async fn nats_put(
    store: &kv::Store,
    key: &str,
    value: Bytes,
    expect: Expect,
) -> Result<u64, KvError> {
    let key = nats_key(key);
    let publish = |e: String| KvError::Bus(BusError::Publish(format!("edge KV: {e}")));
    match expect {
        Expect::Any => store
            .put(&key, value)
            .await
            .map_err(|e| publish(e.to_string())),
        Expect::Absent => store.create(&key, value).await.map_err(|e| match e.kind() {
            kv::CreateErrorKind::AlreadyExists => KvError::Conflict,
            _ => publish(e.to_string()),
        }),
        Expect::Revision(r) => store
            .update(&key, value, r)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => KvError::Conflict,
                _ => publish(e.to_string()),
            }),
    }
}

pub(crate) async fn nats_get(
    store: &kv::Store,
    key: &str,
) -> Result<Option<(Bytes, u64)>, BusError> {
    let entry = store
        .entry(nats_key(key))
        .await
        .map_err(|e| BusError::Subscribe(format!("edge KV: {e}")))?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .map(|e| (e.value, e.revision)))
}

pub(crate) async fn nats_watch(store: &kv::Store) -> Result<KvWatch, BusError> {
    store
        .watch_with_history(">")
        .await
        .map(|w| KvWatch::Nats(Box::new(w)))
        .map_err(|e| BusError::Subscribe(format!("edge KV watch: {e}")))
}

/// Every entry of the bucket, then every change, as they come.
pub enum KvWatch {
    Memory(std::vec::IntoIter<KvEntry>, broadcast::Receiver<KvEntry>),
    Nats(Box<kv::Watch>),
}

impl KvWatch {
    /// The next entry; `None` when the watch ended (the bus went away: watch again). A
    /// watcher too slow for the embedded bus's buffer ends too, and starts over.
    pub async fn next(&mut self) -> Option<KvEntry> {
        match self {
            KvWatch::Memory(now, changes) => match now.next() {
                Some(e) => Some(e),
                None => changes.recv().await.ok(),
            },
            KvWatch::Nats(watch) => loop {
                let entry = watch.next().await?.ok()?;
                let Some(key) = from_nats_key(&entry.key) else {
                    // Not written by Strata: not a key of ours.
                    continue;
                };
                return Some(KvEntry {
                    key,
                    value: (entry.operation == kv::Operation::Put).then_some(entry.value),
                    revision: entry.revision,
                });
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_any_text_survive_the_nats_encoding() {
        for key in ["hits:/a b", "ns/ü", "a.b.>*", ""] {
            let encoded = nats_key(key);
            assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(from_nats_key(&encoded).as_deref(), Some(key));
        }
    }

    #[tokio::test]
    async fn memory_kv_compares_and_sets_and_watchers_see_every_write() {
        let kv = MemoryKv::default();
        let mut watch = kv.watch();
        let r1 = kv.put("k", Bytes::from("1"), Expect::Absent).unwrap();
        assert!(matches!(
            kv.put("k", Bytes::from("x"), Expect::Absent),
            Err(KvError::Conflict)
        ));
        let r2 = kv.put("k", Bytes::from("2"), Expect::Revision(r1)).unwrap();
        assert!(matches!(
            kv.put("k", Bytes::from("3"), Expect::Revision(r1)),
            Err(KvError::Conflict)
        ));
        assert_eq!(kv.get("k"), Some((Bytes::from("2"), r2)));
        assert_eq!(watch.next().await.unwrap().revision, r1);
        assert_eq!(watch.next().await.unwrap().value, Some(Bytes::from("2")));
        // A late watcher starts with what is there.
        let mut late = kv.watch();
        assert_eq!(late.next().await.unwrap().revision, r2);
    }
}
