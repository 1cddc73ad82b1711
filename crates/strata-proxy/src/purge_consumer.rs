//! A node's side of cluster purges: read purge events from the bus through this node's
//! durable consumer, apply each, acknowledge it, and report the ack to the control plane.
//!
//! Because the consumer is durable, a node that was disconnected (or restarted) receives
//! every event it had not acknowledged, in order, when it comes back.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_bus::Bus;
use tokio::sync::watch;

use crate::proxy::Proxy;
use crate::purge::{PurgeAck, PurgeEvent};

/// Runs until `shutdown` flips.
pub async fn run(proxy: Arc<Proxy>, bus: Bus, node: String, mut shutdown: watch::Receiver<bool>) {
    let mut consumer = loop {
        match bus.purge_consumer(&node).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "purge consumer unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    loop {
        let first = tokio::select! {
            d = consumer.next() => d,
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
            acks.push(apply(&proxy, &node, delivery).await);
        }
        if acks.is_empty() {
            continue;
        }
        if let Ok(json) = serde_json::to_vec(&acks) {
            if let Err(e) = bus.publish_ack(Bytes::from(json)).await {
                tracing::warn!(error = %e, "publishing purge acks failed");
            }
        }
    }
}

/// Most events applied before one ack message is sent.
const MAX_BATCH: usize = 256;

/// Applies one event and acknowledges it to the stream.
async fn apply(proxy: &Arc<Proxy>, node: &str, delivery: strata_bus::Delivery) -> PurgeAck {
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
    if let Err(e) = delivery.ack().await {
        tracing::warn!(error = %e, seq, "purge ack to the stream failed");
    }
    PurgeAck {
        id,
        node: node.to_string(),
        seq,
        objects,
        applied_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64,
        error,
    }
}
