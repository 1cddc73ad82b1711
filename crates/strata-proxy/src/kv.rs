//! Edge KV on a node: a replica of the bus's key/value bucket, fed by a watch, that filters
//! read locally (`get_shared_data`) and write through the bus (`set_shared_data`, with
//! compare-and-set decided by the bus: JetStream on NATS). A node without a bus keeps the
//! store to itself. See docs/compute.md.
//!
//! Reads are eventually consistent: a write on another node reaches this replica when the
//! watch delivers it. A node's own write is in its replica as soon as the bus acknowledges
//! it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use strata_bus::{Bus, Expect, KvError};
use strata_compute::{SetError, SharedData};
use tokio::sync::watch;

/// How long a filter's write may wait for the bus.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A node's Edge KV.
#[derive(Default)]
pub struct EdgeKv {
    /// Key → value and revision. Revisions only move forward: a late watch delivery never
    /// replaces a newer write.
    replica: RwLock<HashMap<String, (Bytes, u64)>>,
    /// The bus, once joined; without one the replica is the store.
    bus: OnceLock<Bus>,
    /// A bus is configured: until it is joined, writes fail rather than go to a store
    /// no other node sees.
    bus_expected: std::sync::atomic::AtomicBool,
    /// The last revision written locally when there is no bus.
    local_revision: std::sync::atomic::AtomicU64,
}

// === impl EdgeKv ===

impl EdgeKv {
    /// The node has a bus (joined later): writes wait for it (see `attach`).
    pub fn expect_bus(&self) {
        self.bus_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether writes are this node's own (no bus configured).
    fn local(&self) -> bool {
        !self.bus_expected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Joins the bus: writes go through it from now on, and the replica follows it until
    /// shutdown (a watch that ends is made again).
    pub fn attach(self: &Arc<Self>, bus: Bus, mut shutdown: watch::Receiver<bool>) {
        if self.bus.set(bus.clone()).is_err() {
            return;
        }
        let kv = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match bus.kv_watch().await {
                    Ok(mut w) => loop {
                        tokio::select! {
                            entry = w.next() => match entry {
                                Some(e) => kv.apply(&e.key, e.value, e.revision),
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "edge KV watch unavailable; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    fn apply(&self, key: &str, value: Option<Bytes>, revision: u64) {
        let mut replica = self.replica.write().unwrap_or_else(|e| e.into_inner());
        if replica.get(key).is_some_and(|(_, r)| *r >= revision) {
            return;
        }
        match value {
            Some(v) => replica.insert(key.to_owned(), (v, revision)),
            None => replica.remove(key),
        };
    }

    /// The replica's value and revision.
    pub fn get(&self, key: &str) -> Option<(Bytes, u64)> {
        let replica = self.replica.read().unwrap_or_else(|e| e.into_inner());
        replica.get(key).cloned()
    }

    /// A key as the bus has it now (the replica without a bus).
    pub async fn read(&self, key: &str) -> Result<Option<(Bytes, u64)>, strata_bus::BusError> {
        match self.bus.get() {
            Some(bus) => bus.kv_get(key).await,
            None if self.local() => Ok(self.get(key)),
            None => Err(strata_bus::BusError::Connect(
                "the bus is not joined yet".into(),
            )),
        }
    }

    /// Writes through the bus (or here, without one); the new revision.
    pub async fn put(&self, key: &str, value: Bytes, expect: Expect) -> Result<u64, KvError> {
        let revision = match self.bus.get() {
            Some(bus) => match bus.kv_put(key, value.clone(), expect).await {
                Ok(revision) => revision,
                Err(KvError::Conflict) => {
                    // The replica was behind the bus on this key (the watch has not brought
                    // the write that won yet): take it now, so the writer's next try reads
                    // what it must compare against.
                    if let Ok(Some((v, r))) = bus.kv_get(key).await {
                        self.apply(key, Some(v), r);
                    }
                    return Err(KvError::Conflict);
                }
                Err(e) => return Err(e),
            },
            None if self.local() => return self.put_local(key, value, expect),
            None => {
                return Err(KvError::Bus(strata_bus::BusError::Connect(
                    "the bus is not joined yet".into(),
                )))
            }
        };
        self.apply(key, Some(value), revision);
        Ok(revision)
    }

    fn put_local(&self, key: &str, value: Bytes, expect: Expect) -> Result<u64, KvError> {
        let mut replica = self.replica.write().unwrap_or_else(|e| e.into_inner());
        let current = replica.get(key).map(|(_, r)| *r);
        match (expect, current) {
            (Expect::Any, _) | (Expect::Absent, None) => {}
            (Expect::Revision(want), Some(have)) if want == have => {}
            _ => return Err(KvError::Conflict),
        }
        let revision = self
            .local_revision
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        replica.insert(key.to_owned(), (value, revision));
        Ok(revision)
    }

    /// The view a filter's shared data has: keys under `namespace/`.
    pub fn namespace(self: &Arc<Self>, namespace: &str) -> Arc<dyn SharedData> {
        Arc::new(Namespaced {
            kv: Arc::clone(self),
            prefix: format!("{namespace}/"),
        })
    }
}

/// A filter's shared data: one namespace of the node's Edge KV.
struct Namespaced {
    kv: Arc<EdgeKv>,
    prefix: String,
}

// The ABI's cas is 32 bits; revisions are 64. The filter read its cas from this replica,
// so the revision it means is the replica's (a later one there means a write came in
// between: a mismatch without asking the bus).
impl SharedData for Namespaced {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let (value, revision) = self.kv.get(&format!("{}{key}", self.prefix))?;
        Some((value.to_vec(), cas_of(revision)))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let key = format!("{}{key}", self.prefix);
        let expect = match cas {
            0 => Expect::Any,
            cas => match self.kv.get(&key) {
                Some((_, revision)) if cas_of(revision) == cas => Expect::Revision(revision),
                _ => return Err(SetError::CasMismatch),
            },
        };
        self.write(key, value, expect)
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<(), SetError> {
        self.write(format!("{}{key}", self.prefix), value, Expect::Absent)
    }
}

impl Namespaced {
    fn write(&self, key: String, value: &[u8], expect: Expect) -> Result<(), SetError> {
        let value = Bytes::copy_from_slice(value);
        if self.kv.bus.get().is_none() {
            if !self.kv.local() {
                return Err(SetError::Unavailable("the bus is not joined yet".into()));
            }
            return self
                .kv
                .put_local(&key, value, expect)
                .map(drop)
                .map_err(set_error);
        }
        // The ABI's calls are synchronous: the write's round trip blocks this thread,
        // which tokio hands the runtime's other work away from first.
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| SetError::Unavailable("no runtime".into()))?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(SetError::Unavailable(
                "a bus write needs the multi-threaded runtime".into(),
            ));
        }
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                tokio::time::timeout(WRITE_TIMEOUT, self.kv.put(&key, value, expect))
                    .await
                    .unwrap_or_else(|_| {
                        Err(KvError::Bus(strata_bus::BusError::Publish(
                            "timed out".into(),
                        )))
                    })
            })
        })
        .map(drop)
        .map_err(set_error)
    }
}

/// The 32-bit cas a revision is to a filter (never 0, which means "no cas").
fn cas_of(revision: u64) -> u32 {
    match revision as u32 {
        0 => u32::MAX,
        cas => cas,
    }
}

fn set_error(e: KvError) -> SetError {
    match e {
        KvError::Conflict => SetError::CasMismatch,
        KvError::Bus(e) => SetError::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_bus_the_node_keeps_the_store_with_compare_and_set() {
        let kv = Arc::new(EdgeKv::default());
        let shared = kv.namespace("shop");
        assert_eq!(shared.get("n"), None);
        shared.set("n", b"1", 0).unwrap();
        let (v, cas) = shared.get("n").unwrap();
        assert_eq!(v, b"1");
        assert_eq!(
            shared.set("n", b"2", cas.wrapping_add(1)),
            Err(SetError::CasMismatch)
        );
        shared.set("n", b"2", cas).unwrap();
        assert_eq!(shared.set("n", b"3", cas), Err(SetError::CasMismatch));
        // Namespaces do not see each other's keys.
        assert_eq!(kv.namespace("other").get("n"), None);
        assert_eq!(kv.get("shop/n").unwrap().0, Bytes::from("2"));
    }

    #[test]
    fn a_node_whose_bus_is_not_joined_yet_refuses_writes_rather_than_keep_them() {
        let kv = Arc::new(EdgeKv::default());
        kv.expect_bus();
        let shared = kv.namespace("shop");
        assert!(matches!(
            shared.set("n", b"1", 0),
            Err(SetError::Unavailable(_))
        ));
        assert!(matches!(
            shared.create("n", b"1"),
            Err(SetError::Unavailable(_))
        ));
        assert_eq!(kv.get("shop/n"), None);
    }

    #[test]
    fn a_late_delivery_never_replaces_a_newer_revision() {
        let kv = EdgeKv::default();
        kv.apply("k", Some(Bytes::from("new")), 7);
        kv.apply("k", Some(Bytes::from("old")), 5);
        assert_eq!(kv.get("k"), Some((Bytes::from("new"), 7)));
        kv.apply("k", None, 8);
        assert_eq!(kv.get("k"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_bus_a_filters_write_goes_through_it_and_a_stale_cas_is_refused_by_it() {
        let bus = Bus::embedded();
        let (_tx, rx) = watch::channel(false);
        let a = Arc::new(EdgeKv::default());
        let b = Arc::new(EdgeKv::default());
        a.attach(bus.clone(), rx.clone());
        b.attach(bus.clone(), rx);
        let (sa, sb) = (a.namespace("s"), b.namespace("s"));
        tokio::task::spawn_blocking(move || sa.set("k", b"1", 0))
            .await
            .unwrap()
            .unwrap();
        // b's replica follows the bus.
        for _ in 0..200 {
            if b.get("s/k").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_, cas) = sb.get("k").expect("replicated");
        // a read "1" too: its cas is the one b is about to make stale.
        let stale = a.get("s/k").map(|(_, r)| cas_of(r)).unwrap();
        let sb2 = b.namespace("s");
        tokio::task::spawn_blocking(move || sb2.set("k", b"2", cas))
            .await
            .unwrap()
            .unwrap();
        // a's write with the old cas is refused (by its replica once the watch brought b's
        // write, by the bus before).
        let sa2 = a.namespace("s");
        let refused = tokio::task::spawn_blocking(move || sa2.set("k", b"3", stale))
            .await
            .unwrap();
        assert_eq!(refused, Err(SetError::CasMismatch));
        assert_eq!(
            bus.kv_get("s/k").await.unwrap().unwrap().0,
            Bytes::from("2")
        );
    }
}
