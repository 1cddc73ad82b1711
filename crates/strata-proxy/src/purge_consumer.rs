//! A node's side of cluster purges: read purge events from the bus through this node's
//! durable consumer, apply each, acknowledge it, and report the ack to the control plane.
//!
//! Because the consumer is durable, a node that was disconnected (or restarted) receives
//! every event it had not acknowledged, in order, when it comes back.
//!
//! A node with a disk tier kept objects while it was away, and some of them may be covered
//! by purges it missed. Its disk stays closed to lookups ([`TieredStorage`]) until it has
//! applied every event the stream held when the node came back ([`Replay`]); a disk that
//! cannot prove which purges it has seen (the stream discarded events it never applied, or
//! the stream was recreated) is wiped instead.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use strata_bus::{Bus, PurgeConsumer, StreamPosition};
use strata_storage::TieredStorage;
use tokio::sync::watch;

use crate::proxy::Proxy;
use crate::purge::{PurgeAck, PurgeEvent};

/// How long the consumer waits for an event before asking the stream where it stands again,
/// while a replay is still under way.
const REPLAY_POLL: Duration = Duration::from_millis(250);
/// Ack batches being published at once (each may be retried for a while).
const ACKS_IN_FLIGHT: usize = 64;

/// The bus a node joins: one it was given (the embedded bus of a single process), or a
/// NATS server it connects to.
pub enum BusLink {
    Ready(Bus),
    Nats {
        url: String,
        auth: Box<strata_wire::config::NatsAuth>,
    },
}

impl BusLink {
    /// The bus, once joined. A NATS server that is down or refuses this node's credentials
    /// does not stop the node: it serves from its cache, says it is cut off (the log, and
    /// `strata_bus_connected 0`), and tries again ([`Bus::join_nats`]). `None` when
    /// shutdown comes first.
    async fn join(self, shutdown: &mut watch::Receiver<bool>) -> Option<Bus> {
        let (url, auth) = match self {
            BusLink::Ready(bus) => return Some(bus),
            BusLink::Nats { url, auth } => (url, auth),
        };
        tokio::select! {
            bus = Bus::join_nats(&url, &auth, "purges cannot reach this node; serving from cache") => Some(bus),
            _ = shutdown.changed() => None,
        }
    }
}

/// Keeps this node in the registry (`strata_bus::NODES_BUCKET`): announced every third
/// of the registry's TTL, so the control plane counts it among the nodes a purge waits
/// for, and forgets it a TTL after it stops. A registry that cannot be written (not
/// created yet, no permission) is retried every 5 s, with a warning.
async fn announce(bus: Bus, node: String, payload: Bytes, mut shutdown: watch::Receiver<bool>) {
    loop {
        let next = match bus.announce(&node, payload.clone()).await {
            Ok(ttl) => (ttl / 3).max(Duration::from_millis(200)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot announce this node in the registry");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Keeps `strata_bus_connected` true to the client's state once joined: the client
/// reconnects by itself, and purges missed meanwhile are replayed by the durable consumer.
async fn watch_connection(bus: Bus, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let mut was = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        let now = bus.is_connected();
        if now != was {
            if now {
                tracing::info!("back on the bus");
            } else {
                tracing::error!(
                    "cut off from the bus: purges cannot reach this node; serving from cache"
                );
            }
            proxy.metrics().bus_connected(now);
            was = now;
        }
    }
}

/// Runs until `shutdown` flips. `tiers`: the node's memory-over-disk storage, when it has
/// a disk tier (it stays closed until the purges it missed are applied).
pub async fn run(
    proxy: Arc<Proxy>,
    link: BusLink,
    node: String,
    announcement: Bytes,
    tiers: Option<Arc<TieredStorage>>,
    mut shutdown: watch::Receiver<bool>,
) {
    proxy.metrics().bus_connected(false);
    let Some(bus) = link.join(&mut shutdown).await else {
        return;
    };
    proxy.kv().attach(bus.clone(), shutdown.clone());
    tokio::spawn(announce(
        bus.clone(),
        node.clone(),
        announcement,
        shutdown.clone(),
    ));
    let mut consumer = loop {
        match bus.purge_consumer(&node).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "purge consumer unavailable; retrying");
                proxy.metrics().bus_connected(false);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    proxy.metrics().bus_connected(true);
    tokio::spawn(watch_connection(
        bus.clone(),
        Arc::clone(&proxy),
        shutdown.clone(),
    ));
    let acks_in_flight = Arc::new(tokio::sync::Semaphore::new(ACKS_IN_FLIGHT));
    let mut replay = match tiers {
        Some(tiers) => {
            let Some(r) = Replay::start(tiers, &mut consumer, &mut shutdown).await else {
                return;
            };
            Some(r)
        }
        None => None,
    };
    loop {
        let waiting = replay.as_ref().is_some_and(|r| r.target.is_some());
        let first = tokio::select! {
            d = consumer.next() => d,
            _ = tokio::time::sleep(REPLAY_POLL), if waiting => {
                // Nothing came: our last acks may not have reached the stream's ack floor
                // yet, or events we were handed before a crash are still to come back.
                if let (Some(r), Ok(position)) = (replay.as_mut(), consumer.position().await) {
                    r.on_position(position);
                }
                continue;
            }
            _ = shutdown.changed() => return,
        };
        // Take whatever else is already here: one ack message to the control plane covers
        // the whole batch, which halves the bus traffic under a burst of purges.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout(Duration::ZERO, consumer.next()).await {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        let mut acks = Vec::with_capacity(batch.len());
        let mut applied = Vec::with_capacity(batch.len());
        for delivery in batch {
            let delivery = match delivery {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "purge stream error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Some(Ok(d)) => d,
            };
            acks.push(apply(&proxy, &node, &delivery));
            applied.push(delivery);
        }
        if acks.is_empty() {
            continue;
        }
        // Recorded beside the disk before the stream hears of it: the consumer's ack floor
        // then never runs ahead of what this disk has seen.
        if let (Some(r), Some(seq)) = (replay.as_mut(), acks.iter().map(|a| a.seq).max()) {
            r.record(seq);
        }
        for delivery in applied {
            let seq = delivery.seq;
            if let Err(e) = delivery.ack().await {
                tracing::warn!(error = %e, seq, "purge ack to the stream failed");
            }
        }
        if let Some(r) = replay.as_mut().filter(|r| r.target.is_some()) {
            if let Ok(position) = consumer.position().await {
                r.on_position(position);
            }
        }
        if let Ok(json) = serde_json::to_vec(&acks) {
            // The batch's last event names it: a batch sent twice is stored once.
            let last = acks.iter().map(|a| a.seq).max().unwrap_or(0);
            let batch = format!("{node}-{last}");
            // Sent beside the purge loop: an ack retried while the cluster elects leaders
            // must not hold back the next purges. At most ACKS_IN_FLIGHT at once; past
            // that, this loop waits (it cannot outrun the bus for long).
            let Ok(permit) = Arc::clone(&acks_in_flight).acquire_owned().await else {
                return;
            };
            let (bus, node) = (bus.clone(), node.clone());
            tokio::spawn(async move {
                if let Err(e) = bus.publish_ack(&node, &batch, Bytes::from(json)).await {
                    tracing::warn!(error = %e, "publishing purge acks failed");
                }
                drop(permit);
            });
        }
    }
}

/// A disk tier's way back after the node was away: closed to lookups until this node's
/// consumer has acknowledged every event the stream held when the node came back, and the
/// bus sequence applied so far kept beside the files.
///
/// The consumer's *ack floor* decides, not the highest sequence seen: after a crash, events
/// the old process was handed but never acknowledged come back only after the ack wait,
/// behind later ones. Sequences are recorded before they are acknowledged, so the ack floor
/// never runs ahead of what the disk has seen unless the consumer was used without this
/// disk (then the disk is wiped).
struct Replay {
    tiers: Arc<TieredStorage>,
    /// The stream's last sequence when the node came back; `None` once acknowledged.
    target: Option<u64>,
    /// Whether sequences outlive processes (NATS): only then are they recorded.
    durable: bool,
    recorded: u64,
}

impl Replay {
    /// Checks the disk against the stream (wiping it if it cannot prove which purges it
    /// has seen) and sets the target. `None` when shut down meanwhile.
    async fn start(
        tiers: Arc<TieredStorage>,
        consumer: &mut PurgeConsumer,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Self> {
        let position = loop {
            match consumer.position().await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::warn!(error = %e, "purge stream position unavailable; disk cache stays closed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return None,
                    }
                }
            }
        };
        let mut replay = Self {
            tiers,
            target: Some(position.last),
            durable: position.durable,
            recorded: 0,
        };
        if position.durable {
            replay.check_continuity(position).await;
        }
        replay.on_position(position);
        Some(replay)
    }

    /// Wipes the disk tier when purges it never applied may be gone from the stream, or
    /// were acknowledged by this consumer without it.
    async fn check_continuity(&mut self, position: StreamPosition) {
        let tiers = Arc::clone(&self.tiers);
        let verdict = tokio::task::spawn_blocking(move || {
            let disk = tiers.disk();
            let applied = disk.applied_through();
            let why = wipe_reason(applied, disk.was_empty_at_open(), position);
            if let Some(why) = &why {
                tracing::warn!(reason = %why, "wiping the disk cache: it cannot prove which purges it has seen");
                if let Err(e) = disk.wipe() {
                    tracing::error!(error = %e, "wiping the disk cache failed; it stays closed");
                    return Err(());
                }
            }
            // An empty disk reflects every purge so far.
            let recorded = match (&why, applied) {
                (None, Some(a)) => a,
                _ => position.last,
            };
            if let Err(e) = disk.record_applied(recorded) {
                tracing::error!(error = %e, "recording the purge sequence failed; the disk stays closed");
                return Err(());
            }
            Ok(recorded)
        })
        .await;
        match verdict {
            Ok(Ok(recorded)) => self.recorded = recorded,
            // The disk stays closed: never reached.
            _ => self.target = Some(u64::MAX),
        }
    }

    /// Opens the disk once the consumer's ack floor reaches the target.
    fn on_position(&mut self, position: StreamPosition) {
        if self.target.is_some_and(|t| position.acked >= t) {
            self.target = None;
            self.tiers.open_disk();
        }
    }

    /// Records, before they are acknowledged, that events up to `seq` were applied.
    fn record(&mut self, seq: u64) {
        if !self.durable || seq <= self.recorded {
            return;
        }
        self.recorded = seq;
        // One 21-byte write to a file kept open: cheaper inline than a hop to the blocking
        // pool, once per batch.
        if self.tiers.disk().record_applied(seq).is_err() {
            // The next start will find the ack floor ahead of the record and wipe.
            tracing::error!(seq, "recording the purge sequence failed");
        }
    }
}

/// Why a disk must be wiped before it is trusted, if it must: `applied` is the sequence it
/// recorded, `position` the stream and this node's consumer now.
fn wipe_reason(applied: Option<u64>, empty: bool, position: StreamPosition) -> Option<String> {
    match applied {
        None if !empty => Some("it holds objects but no record of the purges applied to them".into()),
        None => None,
        Some(a) if a > position.last => Some(format!(
            "it applied purges up to #{a} but the stream ends at #{} (recreated?)",
            position.last
        )),
        Some(a) if position.acked > a => Some(format!(
            "this node acknowledged purges up to #{} but the disk recorded only #{a} (run without this disk?)",
            position.acked
        )),
        Some(_) if position.acked.saturating_add(1) < position.first => Some(format!(
            "the stream now starts at #{} but this node acknowledged only up to #{} (events it missed were discarded)",
            position.first, position.acked
        )),
        Some(_) => None,
    }
}

/// Most events applied before one ack message is sent.
const MAX_BATCH: usize = 256;

/// Applies one event (the caller acknowledges it to the stream).
fn apply(proxy: &Arc<Proxy>, node: &str, delivery: &strata_bus::Delivery) -> PurgeAck {
    let seq = delivery.seq;
    let (id, objects, error) = match serde_json::from_slice::<PurgeEvent>(&delivery.payload) {
        Ok(event) => {
            let issued_at = UNIX_EPOCH + Duration::from_millis(event.issued_at_ms);
            match proxy.purge_at(&event.request, issued_at, event.id.clone()) {
                Ok(report) => (event.id, report.objects, None),
                Err(why) => (event.id, 0, Some(why)),
            }
        }
        Err(e) => (
            String::new(),
            0,
            Some(format!("malformed purge event: {e}")),
        ),
    };
    PurgeAck {
        id,
        node: node.to_string(),
        seq,
        objects,
        applied_at_ms: proxy
            .clock
            .wall()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(first: u64, last: u64, acked: u64) -> StreamPosition {
        StreamPosition {
            first,
            last,
            acked,
            durable: true,
        }
    }

    #[test]
    fn a_disk_is_trusted_only_when_the_stream_vouches_for_it() {
        // A new, empty disk; a disk that saw everything; one behind but with the events
        // still in the stream (the replay brings it up to date).
        assert_eq!(wipe_reason(None, true, at(1, 10, 10)), None);
        assert_eq!(wipe_reason(Some(10), false, at(1, 10, 10)), None);
        assert_eq!(wipe_reason(Some(7), false, at(5, 10, 7)), None);
        // Retention emptied the stream after everything was acknowledged.
        assert_eq!(wipe_reason(Some(10), false, at(11, 10, 10)), None);
        // Objects but no record; stream recreated; consumer used without this disk;
        // unacknowledged events discarded.
        assert!(wipe_reason(None, false, at(1, 10, 0)).is_some());
        assert!(wipe_reason(Some(10), false, at(1, 3, 3)).is_some());
        assert!(wipe_reason(Some(5), false, at(1, 10, 8)).is_some());
        assert!(wipe_reason(Some(5), false, at(9, 10, 5)).is_some());
    }
}
