//! Purge records: what the control plane reports for each purge (the nodes it waits for,
//! which acked, when, with what). Held in memory while a purge is young or incomplete,
//! and written to the bus (`strata_bus::PURGES_BUCKET`, a JetStream KV bucket on NATS) so
//! a restarted control plane still reports it, and an acknowledgement that arrives for a
//! purge no longer in memory finds its record there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_bus::Bus;
use strata_wire::purge::PurgeAck;

use crate::{NodeStatus, PurgeStatus};

/// How long a complete record stays in memory after its purge was accepted (later reports
/// are read from the bus).
const KEEP_COMPLETE: Duration = Duration::from_secs(600);
/// How long an incomplete one does (a node that never acks must not hold memory forever).
const KEEP_PENDING: Duration = Duration::from_secs(24 * 3600);

/// One purge's record, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub seq: u64,
    /// When the purge was accepted, microseconds since the Unix epoch.
    pub accepted_us: u64,
    /// The nodes this purge waits for: the configured ones and those announced when it
    /// was accepted.
    pub expected: Vec<String>,
    /// By node (the name its acknowledgement subject carries).
    pub acks: BTreeMap<String, Ack>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ack {
    /// Acceptance to acknowledgement, microseconds.
    pub us: u64,
    pub objects: u64,
    pub error: Option<String>,
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

impl Record {
    pub fn new(accepted_us: u64, expected: Vec<String>) -> Self {
        Self {
            seq: 0,
            accepted_us,
            expected,
            acks: BTreeMap::new(),
        }
    }

    fn complete(&self) -> bool {
        self.expected.iter().all(|n| self.acks.contains_key(n))
    }

    /// The report of purge `id`.
    pub fn report(&self, id: &str) -> PurgeStatus {
        let nodes: Vec<NodeStatus> = self
            .expected
            .iter()
            .map(|n| match self.acks.get(n) {
                Some(ack) => NodeStatus {
                    node: n.clone(),
                    status: "applied",
                    // Whole microseconds: 1.607, not 1.6076860000000002.
                    ms: Some(ack.us as f64 / 1000.0),
                    objects: Some(ack.objects),
                    error: ack.error.clone(),
                },
                None => NodeStatus {
                    node: n.clone(),
                    status: "pending",
                    ms: None,
                    objects: None,
                    error: None,
                },
            })
            .collect();
        PurgeStatus {
            id: id.to_string(),
            seq: self.seq,
            complete: self.complete(),
            nodes,
        }
    }
}

/// The records in memory over the bus's, and which changed since they were written.
pub struct Records {
    bus: Bus,
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    records: HashMap<String, Record>,
    /// Changed since last written (or never written).
    dirty: HashSet<String>,
}

impl Records {
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            memory: Mutex::default(),
        }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: &str, record: Record) {
        let mut m = self.memory();
        m.records.insert(id.to_string(), record);
        m.dirty.insert(id.to_string());
    }

    pub fn remove(&self, id: &str) {
        let mut m = self.memory();
        m.records.remove(id);
        m.dirty.remove(id);
    }

    pub fn set_seq(&self, id: &str, seq: u64) {
        let mut m = self.memory();
        if let Some(r) = m.records.get_mut(id) {
            r.seq = seq;
            m.dirty.insert(id.to_string());
        }
    }

    /// The report of `id` from memory only (what a request waiting for acks polls).
    pub fn report_in_memory(&self, id: &str) -> Option<PurgeStatus> {
        self.memory().records.get(id).map(|r| r.report(id))
    }

    /// The report of `id`: from memory, else from the bus.
    pub async fn report(&self, id: &str) -> Result<Option<PurgeStatus>, strata_bus::BusError> {
        if let Some(report) = self.report_in_memory(id) {
            return Ok(Some(report));
        }
        Ok(self.load(id).await?.map(|r| r.report(id)))
    }

    async fn load(&self, id: &str) -> Result<Option<Record>, strata_bus::BusError> {
        let Some(bytes) = self.bus.get_record(id).await? else {
            return Ok(None);
        };
        match serde_json::from_slice(&bytes) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(%id, error = %e, "unreadable purge record");
                Ok(None)
            }
        }
    }

    /// Records `node`'s acknowledgements (the node named by the subject they came on, as
    /// [`strata_bus::name_token`] writes names: a body naming another node changes
    /// nothing). A purge not in memory is read back from the bus first; one that is
    /// nowhere (older than the records kept, or not ours) is ignored, and so is an ack
    /// from a node the purge does not wait for (a node that joined later replays old
    /// purges: nothing to write).
    pub async fn apply(&self, node: &str, acks: Vec<PurgeAck>, received_us: u64) {
        for ack in acks {
            let known = self.memory().records.contains_key(&ack.id);
            if !known {
                match self.load(&ack.id).await {
                    Ok(Some(r)) => {
                        self.memory().records.entry(ack.id.clone()).or_insert(r);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(id = %ack.id, error = %e, "purge record unreadable; ack dropped");
                        continue;
                    }
                }
            }
            let mut m = self.memory();
            let Some(r) = m.records.get_mut(&ack.id) else {
                continue;
            };
            let Some(name) = r
                .expected
                .iter()
                .find(|n| strata_bus::name_token(n) == node)
                .cloned()
            else {
                continue;
            };
            if !r.acks.contains_key(&name) {
                let us = received_us.saturating_sub(r.accepted_us);
                r.acks.insert(
                    name,
                    Ack {
                        us,
                        objects: ack.objects,
                        error: ack.error,
                    },
                );
                m.dirty.insert(ack.id);
            }
        }
    }

    /// Writes the records that changed to the bus (those published; one still being
    /// published waits for its sequence number). One that cannot be written stays
    /// changed, for the next flush.
    pub async fn flush(&self) {
        let out: Vec<(String, Bytes)> = {
            let mut m = self.memory();
            let Memory { records, dirty } = &mut *m;
            let mut out = Vec::new();
            dirty.retain(|id| match records.get(id) {
                None => false,
                Some(r) if r.seq == 0 => true,
                Some(r) => {
                    match serde_json::to_vec(r) {
                        Ok(bytes) => out.push((id.clone(), Bytes::from(bytes))),
                        Err(e) => tracing::warn!(%id, error = %e, "encoding a purge record"),
                    }
                    false
                }
            });
            out
        };
        for (id, bytes) in out {
            if let Err(e) = self.bus.put_record(&id, bytes).await {
                tracing::warn!(%id, error = %e, "writing a purge record; kept in memory");
                self.memory().dirty.insert(id);
            }
        }
    }

    /// Lets go of what memory no longer needs (complete records 10 minutes after their
    /// purge was accepted, any after a day: the bus has them); changed ones stay until
    /// written.
    pub fn prune(&self, now_us: u64) {
        let mut m = self.memory();
        let Memory { records, dirty } = &mut *m;
        records.retain(|id, r| {
            let age = Duration::from_micros(now_us.saturating_sub(r.accepted_us));
            let keep = if r.complete() {
                KEEP_COMPLETE
            } else {
                KEEP_PENDING
            };
            dirty.contains(id) || age < keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: &str, node: &str, objects: u64) -> PurgeAck {
        PurgeAck {
            id: id.into(),
            node: node.into(),
            seq: 1,
            objects,
            applied_at_ms: 0,
            error: None,
        }
    }

    #[tokio::test]
    async fn the_subject_names_the_node_not_the_body() {
        let records = Records::new(Bus::embedded());
        records.insert("p", Record::new(1_000, vec!["a".into(), "b".into()]));
        records.set_seq("p", 1);
        // Sent on b's subject, claiming to be a.
        records.apply("b", vec![ack("p", "a", 3)], 3_000).await;
        let report = records.report_in_memory("p").unwrap();
        assert_eq!(report.nodes[0].status, "pending");
        assert_eq!(report.nodes[1].status, "applied");
        assert_eq!(report.nodes[1].ms, Some(2.0));
    }

    #[tokio::test]
    async fn node_names_match_as_subject_tokens_and_strangers_are_ignored() {
        let records = Records::new(Bus::embedded());
        records.insert("p", Record::new(1_000, vec!["edge.a1".into()]));
        records.set_seq("p", 1);
        records
            .apply("stranger", vec![ack("p", "stranger", 1)], 2_000)
            .await;
        assert!(records
            .memory()
            .records
            .get("p")
            .is_some_and(|r| r.acks.is_empty()));
        // `edge.a1` acks on strata.purge.acks.edge_a1.
        records
            .apply("edge_a1", vec![ack("p", "edge.a1", 1)], 2_000)
            .await;
        let report = records.report_in_memory("p").unwrap();
        assert!(report.complete);
        assert_eq!(report.nodes[0].node, "edge.a1");
    }

    #[tokio::test]
    async fn a_record_written_to_the_bus_outlives_the_memory_that_held_it() {
        let bus = Bus::embedded();
        let first = Records::new(bus.clone());
        first.insert("p", Record::new(now_us(), vec!["a".into(), "b".into()]));
        first.set_seq("p", 7);
        first.apply("a", vec![ack("p", "a", 1)], now_us()).await;
        first.flush().await;
        drop(first);

        // A restarted control plane: the report from the bus, and a late ack applied to it.
        let second = Records::new(bus);
        let report = second.report("p").await.unwrap().unwrap();
        assert_eq!((report.seq, report.complete), (7, false));
        second.apply("b", vec![ack("p", "b", 2)], now_us()).await;
        assert!(second.report("p").await.unwrap().unwrap().complete);
        assert!(second.report("unknown").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn unpublished_records_are_not_written_and_old_complete_ones_leave_memory() {
        let bus = Bus::embedded();
        let records = Records::new(bus.clone());
        records.insert("unpublished", Record::new(now_us(), vec![]));
        let old = now_us() - KEEP_COMPLETE.as_micros() as u64 - 1;
        records.insert("old", Record::new(old, vec![]));
        records.set_seq("old", 2);
        records.flush().await;
        assert!(bus.get_record("unpublished").await.unwrap().is_none());
        assert!(bus.get_record("old").await.unwrap().is_some());
        assert!(records.report_in_memory("unpublished").is_some());
        // Written, complete and old: only on the bus once pruned.
        assert!(records.report_in_memory("old").is_some());
        records.prune(now_us());
        assert!(records.report_in_memory("old").is_none());
        assert!(records.report("old").await.unwrap().is_some());
    }
}
