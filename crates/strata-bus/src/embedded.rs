//! The in-process bus: an append-only event log with durable per-name cursors, and a
//! broadcast channel per subject for notices (acknowledgements, health). Same semantics as the NATS one, minus the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, Notify};

use crate::{Delivery, StreamPosition};

#[derive(Default)]
struct State {
    log: Vec<Bytes>,
    /// Per consumer: events before this index are acknowledged.
    acked: HashMap<String, u64>,
}

struct Shared {
    state: Mutex<State>,
    appended: Notify,
    notices: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
    acks: broadcast::Sender<(String, Bytes)>,
    registry: Mutex<Registry>,
    /// Purge records, with when each was stored.
    records: Mutex<HashMap<String, (Instant, Bytes)>>,
    record_puts: std::sync::atomic::AtomicU64,
    /// Edge KV.
    kv: crate::kv::MemoryKv,
}

/// The node registry: entries live `ttl` after their last announcement.
struct Registry {
    ttl: Duration,
    nodes: HashMap<String, (Instant, Bytes)>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            nodes: HashMap::new(),
        }
    }
}

#[derive(Clone)]
pub struct EmbeddedBus {
    shared: Arc<Shared>,
}

impl Default for EmbeddedBus {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                appended: Notify::new(),
                notices: Mutex::default(),
                acks: broadcast::channel(4096).0,
                registry: Mutex::default(),
                records: Mutex::default(),
                record_puts: Default::default(),
                kv: Default::default(),
            }),
        }
    }
}

impl EmbeddedBus {
    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event; sequence numbers start at 1, as on JetStream.
    pub fn publish(&self, payload: Bytes) -> u64 {
        let seq = {
            let mut s = self.state();
            s.log.push(payload);
            s.log.len() as u64
        };
        self.shared.appended.notify_waiters();
        seq
    }

    pub fn consumer(&self, name: &str) -> Consumer {
        let from = *self.state().acked.entry(name.to_string()).or_insert(0);
        Consumer {
            bus: self.clone(),
            name: name.to_string(),
            next: from,
        }
    }

    pub(crate) fn ack(&self, consumer: &str, seq: u64) {
        let mut s = self.state();
        let cursor = s.acked.entry(consumer.to_string()).or_insert(0);
        *cursor = (*cursor).max(seq);
    }

    /// The log's extent and `consumer`'s acknowledged position. Not durable: the log
    /// lives and dies with the process.
    pub fn position(&self, consumer: &str) -> StreamPosition {
        let s = self.state();
        StreamPosition {
            first: 1,
            last: s.log.len() as u64,
            acked: s.acked.get(consumer).copied().unwrap_or(0),
            durable: false,
        }
    }

    fn notices(&self, subject: &str) -> broadcast::Sender<Bytes> {
        let mut map = self
            .shared
            .notices
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(subject.to_string())
            .or_insert_with(|| broadcast::channel(4096).0)
            .clone()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_registry_ttl(&self, ttl: Duration) {
        self.registry().ttl = ttl;
    }

    pub fn announce(&self, node: &str, payload: Bytes) -> Duration {
        let mut registry = self.registry();
        registry
            .nodes
            .insert(node.to_string(), (Instant::now(), payload));
        registry.ttl
    }

    pub fn announced(&self) -> Vec<(String, Bytes)> {
        let mut registry = self.registry();
        let ttl = registry.ttl;
        registry.nodes.retain(|_, (at, _)| at.elapsed() < ttl);
        let mut nodes: Vec<(String, Bytes)> = registry
            .nodes
            .iter()
            .map(|(name, (_, payload))| (name.clone(), payload.clone()))
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        nodes
    }

    /// Sends to whoever subscribes to `subject` now (nothing is kept).
    pub fn publish_notice(&self, subject: &str, payload: Bytes) {
        let _ = self.notices(subject).send(payload);
    }

    pub fn subscribe_notices(&self, subject: &str) -> broadcast::Receiver<Bytes> {
        self.notices(subject).subscribe()
    }

    pub fn publish_ack(&self, node: &str, payload: Bytes) {
        let _ = self.shared.acks.send((node.to_string(), payload));
    }

    pub fn subscribe_acks(&self) -> broadcast::Receiver<(String, Bytes)> {
        self.shared.acks.subscribe()
    }

    fn records(&self) -> MutexGuard<'_, HashMap<String, (Instant, Bytes)>> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a record; those older than [`crate::RETENTION`] go, as on JetStream.
    pub fn put_record(&self, id: &str, payload: Bytes) {
        let mut records = self.records();
        // Swept every 1024th record stored: the cost spread over the puts.
        let puts = self
            .shared
            .record_puts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if puts % 1024 == 1023 {
            records.retain(|_, (at, _)| at.elapsed() < crate::RETENTION);
        }
        records.insert(id.to_string(), (Instant::now(), payload));
    }

    pub fn kv(&self) -> &crate::kv::MemoryKv {
        &self.shared.kv
    }

    pub fn get_record(&self, id: &str) -> Option<Bytes> {
        self.records()
            .get(id)
            .filter(|(at, _)| at.elapsed() < crate::RETENTION)
            .map(|(_, payload)| payload.clone())
    }
}

/// A durable consumer: starts after the last acknowledged event of its name.
pub struct Consumer {
    bus: EmbeddedBus,
    name: String,
    /// Index of the next event to deliver.
    next: u64,
}

impl Consumer {
    pub fn position(&self) -> StreamPosition {
        self.bus.position(&self.name)
    }

    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            let notified = self.bus.shared.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.bus.state();
                if let Some(payload) = s.log.get(self.next as usize) {
                    self.next += 1;
                    return Some(Delivery::embedded(
                        self.bus.clone(),
                        self.name.clone(),
                        self.next,
                        payload.clone(),
                    ));
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn durable_consumer_resumes_after_its_last_ack() {
        let bus = EmbeddedBus::default();
        assert_eq!(bus.publish(Bytes::from_static(b"1")), 1);
        bus.publish(Bytes::from_static(b"2"));
        let mut c = bus.consumer("edge-1");
        let d = c.next().await.unwrap();
        assert_eq!((d.seq, &d.payload[..]), (1, &b"1"[..]));
        d.ack().await.unwrap();
        // Reconnect: event 2 was delivered but never acknowledged, so it comes again.
        let _unacked = c.next().await.unwrap();
        drop(c);
        bus.publish(Bytes::from_static(b"3"));
        let mut c = bus.consumer("edge-1");
        assert_eq!(&c.next().await.unwrap().payload[..], b"2");
        assert_eq!(&c.next().await.unwrap().payload[..], b"3");
        assert_eq!(
            c.position(),
            StreamPosition {
                first: 1,
                last: 3,
                acked: 1,
                durable: false
            }
        );
        // Another node has its own cursor.
        assert_eq!(
            &bus.consumer("edge-2").next().await.unwrap().payload[..],
            b"1"
        );
    }
}
