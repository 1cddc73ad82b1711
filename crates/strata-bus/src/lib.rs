//! The bus Strata's roles share for purge events and their acknowledgements.
//!
//! Two implementations behind one type:
//! - **embedded**: in-process, for `strata demo` and single-process deployments;
//! - **NATS JetStream**: for several processes or machines. Purge events go to a stream;
//!   each node reads them through its own *durable* consumer, so a node that was cut off
//!   gets every event it missed when it comes back, and acknowledges each after applying it.
//!
//! Payloads are opaque bytes: the message types belong to the roles that exchange them.

mod embedded;
pub mod kv;
mod nats;

use bytes::Bytes;

pub use embedded::EmbeddedBus;
pub use kv::{Expect, KvEntry, KvError, KvWatch};
pub use nats::NatsBus;
pub use strata_wire::config::redacted;

/// Subject of purge events (a JetStream stream on NATS).
pub const PURGE_SUBJECT: &str = "strata.purge.events";
/// Prefix of the purge acknowledgements' subjects: a node publishes on
/// `strata.purge.acks.<node>` ([`ack_subject`]), so NATS permissions bind each node to its
/// own subject and the control plane believes the subject, never the body. A stream keeps
/// them for a control plane that was away.
pub const ACK_SUBJECT_PREFIX: &str = "strata.purge.acks";
/// Purge records (the control plane's reports), by purge id (a JetStream KV bucket).
pub const PURGES_BUCKET: &str = "STRATA_PURGES";
/// How long purge events, acknowledgements and records are kept on the bus.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Subject of the health monitor's snapshots, one per probe round (core NATS; not
/// persisted: the next round replaces it).
pub const HEALTH_SUBJECT: &str = "strata.health.snapshot";
/// The node registry: a key per node (its `node.name`), refreshed while it runs and gone
/// a TTL after its last refresh (a JetStream KV bucket on NATS).
pub const NODES_BUCKET: &str = "STRATA_NODES";

/// The subject `node` publishes its purge acknowledgements on.
pub fn ack_subject(node: &str) -> String {
    format!("{ACK_SUBJECT_PREFIX}.{}", name_token(node))
}

/// A node name as one NATS subject token and consumer name: letters, digits and `-`
/// kept, anything else `_`.
pub fn name_token(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Longest wait between two attempts to join NATS ([`Bus::join_nats`]).
const MAX_JOIN_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus connection: {0}")]
    Connect(String),
    #[error("publishing: {0}")]
    Publish(String),
    #[error("subscribing: {0}")]
    Subscribe(String),
    #[error("acknowledging: {0}")]
    Ack(String),
}

/// A bus, embedded or NATS.
#[derive(Clone)]
pub enum Bus {
    Embedded(EmbeddedBus),
    Nats(Box<NatsBus>),
}

/// One purge event delivered to a node's durable consumer.
pub struct Delivery {
    pub seq: u64,
    pub payload: Bytes,
    acker: Acker,
}

enum Acker {
    Embedded(EmbeddedBus, String, u64),
    Nats(Box<async_nats::jetstream::Message>),
}

impl Delivery {
    /// Marks the event applied: the node's consumer will not deliver it again.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker {
            Acker::Embedded(bus, consumer, seq) => {
                bus.ack(&consumer, seq);
                Ok(())
            }
            Acker::Nats(msg) => msg.ack().await.map_err(|e| BusError::Ack(e.to_string())),
        }
    }
}

/// Where a node's consumer stands in the purge stream: what a node with a persistent cache
/// needs to know before it serves from that cache again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPosition {
    /// Lowest sequence the stream still holds (`last + 1` when it holds none: older events
    /// were discarded by retention).
    pub first: u64,
    /// Last sequence the stream assigned.
    pub last: u64,
    /// Every event up to this sequence was acknowledged by this consumer.
    pub acked: u64,
    /// Whether sequences outlive this process (NATS). The embedded log starts again at 1
    /// with every process, so its positions say nothing about an earlier run.
    pub durable: bool,
}

/// A node's durable view of the purge stream.
pub enum PurgeConsumer {
    Embedded(embedded::Consumer),
    Nats(Box<nats::Consumer>),
}

impl PurgeConsumer {
    /// The next event, waiting for one. `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        match self {
            PurgeConsumer::Embedded(c) => c.next().await.map(Ok),
            PurgeConsumer::Nats(c) => c.next().await,
        }
    }

    /// The stream's extent and this consumer's acknowledged position, asked now.
    pub async fn position(&mut self) -> Result<StreamPosition, BusError> {
        match self {
            PurgeConsumer::Embedded(c) => Ok(c.position()),
            PurgeConsumer::Nats(c) => c.position().await,
        }
    }
}

/// Notices on one subject (acknowledgements, health snapshots), from now on.
pub enum Subscription {
    Embedded(tokio::sync::broadcast::Receiver<Bytes>),
    Nats(async_nats::Subscriber),
}

impl Subscription {
    pub async fn next(&mut self) -> Option<Bytes> {
        match self {
            Subscription::Embedded(rx) => loop {
                match rx.recv().await {
                    Ok(b) => return Some(b),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "notice subscriber lagged");
                    }
                    Err(_) => return None,
                }
            },
            Subscription::Nats(sub) => tokio_stream::StreamExt::next(sub).await.map(|m| m.payload),
        }
    }
}

/// Acknowledgements as the control plane reads them: (the node, from the subject; the
/// payload).
pub enum AckReader {
    Embedded(tokio::sync::broadcast::Receiver<(String, Bytes)>),
    Nats(Box<nats::AckReader>),
}

impl AckReader {
    pub async fn next(&mut self) -> Option<(String, Bytes)> {
        match self {
            AckReader::Embedded(rx) => loop {
                match rx.recv().await {
                    Ok(ack) => return Some(ack),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "ack reader lagged");
                    }
                    Err(_) => return None,
                }
            },
            AckReader::Nats(r) => r.next().await,
        }
    }
}

impl Bus {
    /// Whether this process is on the bus now (the embedded bus always is).
    pub fn is_connected(&self) -> bool {
        match self {
            Bus::Embedded(_) => true,
            Bus::Nats(b) => b.is_connected(),
        }
    }

    /// Lays out what the bus keeps (the control plane does, at start: nodes may not create
    /// streams): the node registry with entries living `ttl` after their last refresh, and
    /// the purge stream and the registry each on `replicas` servers of a NATS cluster (an
    /// existing one is moved to that number; the embedded bus has one copy).
    pub async fn provision(
        &self,
        ttl: std::time::Duration,
        replicas: usize,
    ) -> Result<(), BusError> {
        match self {
            Bus::Embedded(b) => {
                b.set_registry_ttl(ttl);
                Ok(())
            }
            Bus::Nats(b) => b.provision(ttl, replicas).await,
        }
    }

    /// Announces `node` in the registry (`payload`: what the caller says of it); returns
    /// the registry's TTL, which the caller refreshes well within.
    pub async fn announce(
        &self,
        node: &str,
        payload: Bytes,
    ) -> Result<std::time::Duration, BusError> {
        match self {
            Bus::Embedded(b) => Ok(b.announce(node, payload)),
            Bus::Nats(b) => b.announce(node, payload).await,
        }
    }

    /// The nodes announced within the registry's TTL, and what each said.
    pub async fn announced(&self) -> Result<Vec<(String, Bytes)>, BusError> {
        match self {
            Bus::Embedded(b) => Ok(b.announced()),
            Bus::Nats(b) => b.announced().await,
        }
    }

    pub fn embedded() -> Self {
        Bus::Embedded(EmbeddedBus::default())
    }

    /// Connects to NATS with `auth` and makes sure the purge stream exists.
    pub async fn nats(url: &str, auth: &strata_wire::config::NatsAuth) -> Result<Self, BusError> {
        Ok(Bus::Nats(Box::new(NatsBus::connect(url, auth).await?)))
    }

    /// Connects like [`Bus::nats`], trying until it succeeds: a server that is down, a
    /// cluster whose JetStream has no leader yet or refused credentials are logged as an
    /// error saying what is `cut_off` meanwhile, and tried again, backing off from 1 s to
    /// 30 s. Race it against shutdown.
    pub async fn join_nats(url: &str, auth: &strata_wire::config::NatsAuth, cut_off: &str) -> Self {
        let mut wait = std::time::Duration::from_secs(1);
        loop {
            match Bus::nats(url, auth).await {
                Ok(bus) => {
                    tracing::info!(url = %redacted(url), "joined the bus");
                    return bus;
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?wait, "cut off from the bus: {cut_off}");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_JOIN_BACKOFF);
        }
    }

    /// Publishes a purge event durably; returns its sequence number.
    ///
    /// On NATS, a publish that fails (the server this process was on went down, the
    /// stream is electing a new leader) is tried again for up to 15 s under the same
    /// message id (`id`: the purge's), which JetStream stores once however often it came.
    pub async fn publish_purge(&self, id: &str, payload: Bytes) -> Result<u64, BusError> {
        match self {
            Bus::Embedded(b) => Ok(b.publish(payload)),
            Bus::Nats(b) => b.publish(id, payload).await,
        }
    }

    /// The durable consumer named `node`: resumes after the last event it acknowledged.
    pub async fn purge_consumer(&self, node: &str) -> Result<PurgeConsumer, BusError> {
        match self {
            Bus::Embedded(b) => Ok(PurgeConsumer::Embedded(b.consumer(node))),
            Bus::Nats(b) => Ok(PurgeConsumer::Nats(Box::new(b.consumer(node).await?))),
        }
    }

    /// Publishes a notice: delivered to current subscribers, not kept.
    pub async fn publish_notice(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        match self {
            Bus::Embedded(b) => {
                b.publish_notice(subject, payload);
                Ok(())
            }
            Bus::Nats(b) => b.publish_notice(subject, payload).await,
        }
    }

    pub async fn subscribe_notices(&self, subject: &str) -> Result<Subscription, BusError> {
        match self {
            Bus::Embedded(b) => Ok(Subscription::Embedded(b.subscribe_notices(subject))),
            Bus::Nats(b) => b.subscribe_notices(subject).await.map(Subscription::Nats),
        }
    }

    /// Publishes `node`'s acknowledgements (on its own subject). On NATS they are stored
    /// in the acks' stream and retried like purges ([`Bus::publish_purge`]) under `batch`
    /// as message id: a plain publish would be dropped while the stream elects a leader.
    pub async fn publish_ack(
        &self,
        node: &str,
        batch: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        match self {
            Bus::Embedded(b) => {
                // Named as on NATS's subjects, so both buses read the same.
                b.publish_ack(&name_token(node), payload);
                Ok(())
            }
            Bus::Nats(b) => b
                .publish_durably(&ack_subject(node), batch, payload)
                .await
                .map(drop),
        }
    }

    /// The control plane's reader of acknowledgements: on NATS a durable consumer of the
    /// acknowledgement stream, so those sent while it was away still arrive.
    pub async fn ack_reader(&self) -> Result<AckReader, BusError> {
        match self {
            Bus::Embedded(b) => Ok(AckReader::Embedded(b.subscribe_acks())),
            Bus::Nats(b) => Ok(AckReader::Nats(Box::new(b.ack_reader().await?))),
        }
    }

    /// Stores a purge record under `id` (kept [`RETENTION`]).
    pub async fn put_record(&self, id: &str, payload: Bytes) -> Result<(), BusError> {
        match self {
            Bus::Embedded(b) => {
                b.put_record(id, payload);
                Ok(())
            }
            Bus::Nats(b) => b.put_record(id, payload).await,
        }
    }

    /// The purge record stored under `id`, if any.
    pub async fn get_record(&self, id: &str) -> Result<Option<Bytes>, BusError> {
        match self {
            Bus::Embedded(b) => Ok(b.get_record(id)),
            Bus::Nats(b) => b.get_record(id).await,
        }
    }

    /// Writes an Edge KV key (see [`kv`]); its new revision.
    pub async fn kv_put(&self, key: &str, value: Bytes, expect: Expect) -> Result<u64, KvError> {
        match self {
            Bus::Embedded(b) => b.kv().put(key, value, expect),
            Bus::Nats(b) => kv::nats_put(b.edge_kv().await?, key, value, expect).await,
        }
    }

    /// An Edge KV key's value and revision, read from the bus itself (not a replica).
    pub async fn kv_get(&self, key: &str) -> Result<Option<(Bytes, u64)>, BusError> {
        match self {
            Bus::Embedded(b) => Ok(b.kv().get(key)),
            Bus::Nats(b) => kv::nats_get(b.edge_kv().await?, key).await,
        }
    }

    /// Every Edge KV entry, then every change: what a node's replica is fed from.
    pub async fn kv_watch(&self) -> Result<KvWatch, BusError> {
        match self {
            Bus::Embedded(b) => Ok(b.kv().watch()),
            Bus::Nats(b) => kv::nats_watch(b.edge_kv().await?).await,
        }
    }
}

impl Delivery {
    fn embedded(bus: EmbeddedBus, consumer: String, seq: u64, payload: Bytes) -> Self {
        Self {
            seq,
            payload,
            acker: Acker::Embedded(bus, consumer, seq),
        }
    }

    fn nats(seq: u64, msg: async_nats::jetstream::Message) -> Self {
        Self {
            seq,
            payload: msg.payload.clone(),
            acker: Acker::Nats(Box::new(msg)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_logs_carry_no_password() {
        assert_eq!(
            redacted("nats://u:secret@10.0.0.1:4222"),
            "nats://10.0.0.1:4222"
        );
        assert_eq!(
            redacted("tls://a:4222,nats://u:p@b:4222"),
            "tls://a:4222,nats://b:4222"
        );
        assert_eq!(redacted("nats://a:4222"), "nats://a:4222");
    }
}
