//! The health monitor: probes every node's health endpoint each interval, judges nodes and
//! PoPs with `strata-health` (hysteresis included), publishes a [`HealthSnapshot`] on the
//! bus after every round (the DNS router steers by it), logs and counts state changes.
//!
//! The nodes probed: those configured with a `url`, and those that announce one in the
//! registry (`node.url`), looked up before every round: a node that joins is probed from
//! the next round, one that leaves the registry (a TTL after it stopped) is no longer.
//!
//! A PoP's state is published the round its nodes' probes decide it, so a PoP that goes
//! down leaves DNS answers within one interval plus the probe timeout (less than two).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Uri;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strata_bus::{Bus, HEALTH_SUBJECT};
use strata_health::node::Probe;
use strata_health::pop::pop_state;
use strata_health::{HealthSnapshot, NodeHealth, NodeState, NodeView, PopHealth};
use strata_wire::health::{health_url, HealthProber};
use tokio::sync::watch;

use crate::config::{HealthSection, NodeEntry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PopLabel {
    pop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabel {
    pop: String,
    /// The state entered.
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabel {
    node: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
    pop: String,
}

/// The monitor's metrics, registered in the control plane's registry.
#[derive(Clone, Default)]
pub struct HealthMetrics {
    pop_state: Family<PopLabel, Gauge>,
    node_state: Family<NodeLabel, Gauge>,
    changes: Family<ChangeLabel, Counter>,
    probes: Family<ProbeLabel, Counter>,
}

impl HealthMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pop_state",
            "PoP health: 0 healthy, 1 degraded, 2 unhealthy",
            self.pop_state.clone(),
        );
        registry.register(
            "node_state",
            "Node health: 0 healthy, 1 degraded, 2 unhealthy",
            self.node_state.clone(),
        );
        registry.register(
            "pop_state_changes",
            "PoP state changes, by the state entered",
            self.changes.clone(),
        );
        registry.register(
            "health_probes",
            "Health probes by node and outcome",
            self.probes.clone(),
        );
    }
}

struct Target {
    name: String,
    pop: String,
    url: Uri,
    health: NodeHealth,
    /// Found in the registry rather than the configuration.
    announced: bool,
}

/// What a node says of itself in the registry (the fields the monitor reads).
#[derive(serde::Deserialize)]
struct Announcement {
    pop: Option<String>,
    url: Option<String>,
}

/// The latest snapshot, shared with the API.
#[derive(Clone, Default)]
pub struct Latest(Arc<RwLock<HealthSnapshot>>);

impl Latest {
    pub fn get(&self) -> HealthSnapshot {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, s: HealthSnapshot) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

pub struct Monitor {
    targets: Vec<Target>,
    config: HealthSection,
    prober: HealthProber,
    metrics: HealthMetrics,
    latest: Latest,
    bus: Bus,
    /// Per PoP: state and since when (ms).
    pops: BTreeMap<String, (NodeState, u64)>,
}

impl Monitor {
    /// A monitor of the configured nodes that have a URL, and of announced ones.
    pub fn new(
        nodes: &[NodeEntry],
        config: HealthSection,
        metrics: HealthMetrics,
        latest: Latest,
        bus: Bus,
    ) -> Self {
        let targets: Vec<Target> = nodes
            .iter()
            .filter_map(|n| match n {
                NodeEntry::Probed(p) => Some(Target {
                    name: p.name.clone(),
                    pop: p.pop.clone(),
                    url: health_url(&p.url)?,
                    health: NodeHealth::default(),
                    announced: false,
                }),
                NodeEntry::Name(_) => None,
            })
            .collect();
        Self {
            targets,
            prober: HealthProber::new(config.timeout()),
            config,
            metrics,
            latest,
            bus,
            pops: BTreeMap::new(),
        }
    }

    /// Adds the nodes announced with a URL and PoP since the last round, and drops those no
    /// longer announced. An unreadable registry changes nothing.
    async fn refresh(&mut self) {
        let announced = match self.bus.announced().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "node registry unreadable; probing the nodes known");
                return;
            }
        };
        let mut present = Vec::new();
        for (name, payload) in announced {
            let Ok(Announcement {
                pop: Some(pop),
                url: Some(url),
            }) = serde_json::from_slice(&payload)
            else {
                continue;
            };
            let Some(url) = health_url(&url) else {
                continue;
            };
            present.push(name.clone());
            match self.targets.iter_mut().find(|t| t.name == name) {
                // A configured entry wins over what the node says.
                Some(t) if !t.announced => {}
                Some(t) => {
                    t.pop = pop;
                    t.url = url;
                }
                None => {
                    tracing::info!(node = %name, %pop, %url, "probing an announced node");
                    self.targets.push(Target {
                        name,
                        pop,
                        url,
                        health: NodeHealth::default(),
                        announced: true,
                    });
                }
            }
        }
        self.targets.retain(|t| {
            let keep = !t.announced || present.contains(&t.name);
            if !keep {
                tracing::info!(node = %t.name, "announced node left the registry; no longer probed");
            }
            keep
        });
    }

    /// Probes every interval until `stop` changes.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = tick.tick() => {}, _ = stop.changed() => return }
            self.round().await;
        }
    }

    /// One round: probe all nodes at once, judge, publish (nothing while there are none).
    pub async fn round(&mut self) {
        self.refresh().await;
        if self.targets.is_empty() {
            return;
        }
        let mut running = tokio::task::JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let (prober, url) = (self.prober.clone(), t.url.clone());
            running.spawn(async move { (i, prober.probe(url).await) });
        }
        let mut results: Vec<Probe> = (0..self.targets.len())
            .map(|_| Probe::Failed("probe task failed".into()))
            .collect();
        while let Some(done) = running.join_next().await {
            if let Ok((i, p)) = done {
                results[i] = p;
            }
        }
        let now = Instant::now();
        for (target, result) in self.targets.iter_mut().zip(results) {
            let outcome = if matches!(result, Probe::Answered(_)) {
                "ok"
            } else {
                "failed"
            };
            self.metrics
                .probes
                .get_or_create(&ProbeLabel {
                    node: target.name.clone(),
                    outcome: outcome.into(),
                })
                .inc();
            if let Some(state) = target.health.observe(result, now, &self.config.thresholds) {
                tracing::info!(node = %target.name, pop = %target.pop, state = state.as_str(),
                    reason = target.health.reason(), "node health changed");
            }
            self.metrics
                .node_state
                .get_or_create(&NodeLabel {
                    node: target.name.clone(),
                    pop: target.pop.clone(),
                })
                .set(target.health.state().level());
        }
        let snapshot = self.snapshot();
        self.latest.set(snapshot.clone());
        match serde_json::to_vec(&snapshot) {
            Ok(payload) => {
                if let Err(e) = self
                    .bus
                    .publish_notice(HEALTH_SUBJECT, Bytes::from(payload))
                    .await
                {
                    tracing::warn!(error = %e, "publishing the health snapshot");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding the health snapshot"),
        }
    }

    fn snapshot(&mut self) -> HealthSnapshot {
        let at_ms = now_ms();
        let mut by_pop: BTreeMap<&str, Vec<&Target>> = BTreeMap::new();
        for t in &self.targets {
            by_pop.entry(&t.pop).or_default().push(t);
        }
        let mut pops = Vec::new();
        for (pop, nodes) in by_pop {
            let states: Vec<NodeState> = nodes.iter().map(|t| t.health.state()).collect();
            let state = pop_state(&states, self.config.min_up);
            let entry = self.pops.entry(pop.to_string()).or_insert((state, at_ms));
            if entry.0 != state {
                tracing::warn!(%pop, from = entry.0.as_str(), to = state.as_str(), "PoP health changed");
                *entry = (state, at_ms);
                self.metrics
                    .changes
                    .get_or_create(&ChangeLabel {
                        pop: pop.to_string(),
                        state: state.as_str().into(),
                    })
                    .inc();
            }
            self.metrics
                .pop_state
                .get_or_create(&PopLabel {
                    pop: pop.to_string(),
                })
                .set(state.level());
            pops.push(PopHealth {
                pop: pop.to_string(),
                state,
                since_ms: entry.1,
                nodes: nodes
                    .iter()
                    .map(|t| NodeView {
                        node: t.name.clone(),
                        state: t.health.state(),
                        reason: t.health.reason().to_string(),
                        figures: t.health.figures().clone(),
                    })
                    .collect(),
            });
        }
        HealthSnapshot {
            at_ms,
            interval_ms: self.config.interval.0.as_millis() as u64,
            pops,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
