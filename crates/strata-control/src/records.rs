//! Purge records: what the control plane reports for each purge (the nodes it waits for,
//! which acked, when, with what). Held in memory while a purge is young or incomplete,
//! and written to the bus (`strata_bus::PURGES_BUCKET`, a JetStream KV bucket on NATS) so
//! a restarted control plane still reports it, and an acknowledgement that arrives for a
//! purge no longer in memory finds its record there.

use std::collections::{BTreeMap, HashMap};
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
            complete: nodes.iter().all(|n| n.status == "applied"),
            nodes,
        }
    }
}

/// The records in memory (with whether each changed since it was last written) over the
/// bus's.
pub struct Records {
    bus: Bus,
    memory: Mutex<HashMap<String, (Record, bool)>>,
}

impl Records {
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            memory: Mutex::default(),
        }
    }

    fn memory(&self) -> MutexGuard<'_, HashMap<String, (Record, bool)>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: &str, record: Record) {
        self.memory().insert(id.to_string(), (record, true));
    }

    pub fn remove(&self, id: &str) {
        self.memory().remove(id);
    }

    pub fn set_seq(&self, id: &str, seq: u64) {
        if let Some((r, dirty)) = self.memory().get_mut(id) {
            r.seq = seq;
            *dirty = true;
        }
    }

    /// The report of `id` from memory only (what a request waiting for acks polls).
    pub fn report_in_memory(&self, id: &str) -> Option<PurgeStatus> {
        self.memory().get(id).map(|(r, _)| r.report(id))
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

    /// Records `node`'s acknowledgements (the node named by the subject they came on: a
    /// body naming another node changes nothing). A purge not in memory is read back
    /// from the bus first; one that is nowhere (older than the records kept, or not
    /// ours) is ignored.
    pub async fn apply(&self, node: &str, acks: Vec<PurgeAck>, received_us: u64) {
        for ack in acks {
            let known = self.memory().contains_key(&ack.id);
            if !known {
                match self.load(&ack.id).await {
                    Ok(Some(r)) => {
                        self.memory().entry(ack.id.clone()).or_insert((r, false));
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(id = %ack.id, error = %e, "purge record unreadable; ack dropped");
                        continue;
                    }
                }
            }
            if let Some((r, dirty)) = self.memory().get_mut(&ack.id) {
                if !r.acks.contains_key(node) {
                    let ack = Ack {
                        us: received_us.saturating_sub(r.accepted_us),
                        objects: ack.objects,
                        error: ack.error,
                    };
                    r.acks.insert(node.to_string(), ack);
                    *dirty = true;
                }
            }
        }
    }

    /// Writes the records that changed to the bus, and lets go of those memory no longer
    /// needs (complete ones after 10 minutes, any after a day: the bus has them).
    pub async fn flush(&self) {
        let now = now_us();
        let dirty: Vec<(String, Bytes)> = {
            let mut memory = self.memory();
            // Unwritten ones stay whatever their age.
            memory.retain(|_, (r, dirty)| {
                let age = Duration::from_micros(now.saturating_sub(r.accepted_us));
                let keep = if r.complete() {
                    KEEP_COMPLETE
                } else {
                    KEEP_PENDING
                };
                *dirty || age < keep
            });
            let mut out = Vec::new();
            for (id, (r, dirty)) in memory.iter_mut() {
                // Not yet published (seq 0): written once it is.
                if *dirty && r.seq != 0 {
                    match serde_json::to_vec(r) {
                        Ok(bytes) => out.push((id.clone(), Bytes::from(bytes))),
                        Err(e) => tracing::warn!(%id, error = %e, "encoding a purge record"),
                    }
                    *dirty = false;
                }
            }
            out
        };
        for (id, bytes) in dirty {
            if let Err(e) = self.bus.put_record(&id, bytes).await {
                tracing::warn!(%id, error = %e, "writing a purge record; kept in memory");
                if let Some((_, dirty)) = self.memory().get_mut(&id) {
                    *dirty = true;
                }
            }
        }
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
        // Written, complete and old: only on the bus after the next flush.
        assert!(records.report_in_memory("old").is_some());
        records.flush().await;
        assert!(records.report_in_memory("old").is_none());
        assert!(records.report("old").await.unwrap().is_some());
    }
}
