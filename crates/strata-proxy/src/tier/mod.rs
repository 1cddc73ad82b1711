//! A node's place in the topology: its role, its PoP's ring, its parent shields, and the
//! hot objects it keeps besides the ring.
//!
//! Upstream order on a miss (docs/architecture.md, "The request phases"; upstream
//! selection in `upstream::send`):
//! 1. the key's owner in this PoP (the ring), unless this node is the owner;
//! 2. the parent shields, primary first, then failover;
//! 3. the service's origins.
//!
//! A request forwarded by a peer carries [`RING_HOP`]; the receiving node serves it itself
//! whatever its own view of the ring, so a request crosses the ring at most once even
//! while two nodes disagree about who is up. Loops through misconfigured parents are
//! caught by `CDN-Loop` (508).
//!
//! - [`hot`]: per-node request rates and the hot-object decision.

pub mod hot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderName;
use http::StatusCode;
use strata_http_cache::CacheKey;

use crate::config::{NodeConfig, Role};
use crate::upstream::breaker::BreakerConfig;
use crate::upstream::health::Probe;
use crate::upstream::origins::{OriginSet, OriginState};
use crate::upstream::ring::{Member, Ring};
use crate::upstream::Origin;
use hot::{HotConfig, HotTracker};

/// Marks a request forwarded to its owner by a peer (value: the sender's name).
pub const RING_HOP: HeaderName = HeaderName::from_static("strata-ring");

pub use strata_wire::health::HEALTH_PATH;

/// What kind of upstream a hop is: it decides the `Host` sent and what counts as failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopKind {
    /// The key's owner in this PoP.
    Peer,
    /// A parent shield.
    Parent,
    /// One of the service's origins.
    Origin,
}

impl HopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HopKind::Peer => "peer",
            HopKind::Parent => "parent",
            HopKind::Origin => "origin",
        }
    }
}

/// One upstream to try.
#[derive(Clone)]
pub struct Hop {
    pub kind: HopKind,
    pub name: String,
    pub state: Arc<OriginState>,
}

/// This node's topology.
pub struct Tier {
    node: String,
    role: Role,
    pop: Option<String>,
    ring: Option<Ring>,
    /// Every other peer of the ring, by name.
    peers: Vec<Hop>,
    peer_set: Arc<OriginSet>,
    parents: Vec<Hop>,
    parent_set: Arc<OriginSet>,
    hot: Option<HotTracker>,
    probe: Probe,
    /// The peers' IP addresses (their URLs name them by address; see `config`).
    peer_ips: Vec<std::net::IpAddr>,
}

impl Tier {
    pub fn new(config: &NodeConfig) -> Result<Self, String> {
        let interval = config.ring.probe_interval.0;
        // A peer or shield that refuses a connection is down: one failure opens its
        // breaker, and one good probe (every interval) closes it again.
        let breaker = BreakerConfig::transport_only(1, 1, interval);
        let max = config.parents.max_connections;
        let mut peer_states = Vec::new();
        let mut peers = Vec::new();
        for (i, p) in config.ring.peers.iter().enumerate() {
            if p.name == config.node.name {
                continue;
            }
            let origin = Origin::parse(&p.url)?;
            let state = OriginState::new(origin, i as u32, 1, max, breaker);
            peer_states.push(state);
        }
        let peer_set = Arc::new(OriginSet::new(peer_states));
        let others = config
            .ring
            .peers
            .iter()
            .filter(|p| p.name != config.node.name);
        for (p, state) in others.zip(peer_set.all()) {
            peers.push(Hop {
                kind: HopKind::Peer,
                name: p.name.clone(),
                state: Arc::clone(state),
            });
        }
        let ring = (!config.ring.peers.is_empty()).then(|| {
            Ring::new(
                config
                    .ring
                    .peers
                    .iter()
                    .map(|p| Member {
                        name: p.name.clone(),
                        weight: p.weight,
                    })
                    .collect(),
                config.ring.vnodes,
            )
        });

        let mut parent_states = Vec::new();
        for (i, url) in config.parents.shields.iter().enumerate() {
            parent_states.push(OriginState::new(
                Origin::parse(url)?,
                i as u32,
                1,
                max,
                breaker,
            ));
        }
        let parent_set = Arc::new(OriginSet::new(parent_states));
        let parents = parent_set
            .all()
            .iter()
            .map(|state| Hop {
                kind: HopKind::Parent,
                name: state.name(),
                state: Arc::clone(state),
            })
            .collect();

        let hot = (ring.is_some() && config.hot.threshold > 0.0).then(|| {
            HotTracker::new(HotConfig {
                threshold: config.hot.threshold,
                window: config.hot.window.0,
                cooldown: config.hot.cooldown.0,
                max_bytes: 16 << 20,
            })
        });
        let peer_ips = peers
            .iter()
            .filter_map(|p: &Hop| {
                let host = p.state.origin.authority.host();
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .ok()
            })
            .collect();
        Ok(Self {
            peer_ips,
            node: config.node.name.clone(),
            role: config.node.role,
            pop: config.node.pop.clone(),
            ring,
            peers,
            peer_set,
            parents,
            parent_set,
            hot,
            probe: Probe {
                path: HEALTH_PATH.to_string(),
                interval,
                timeout: interval.max(Duration::from_millis(500)),
                expected_status: StatusCode::OK,
                host: None,
            },
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.node
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn pop(&self) -> Option<&str> {
        self.pop.as_deref()
    }

    /// The addresses of the ring's peers: their forwarding fields are trusted (a peer
    /// forwards its clients' requests), and only they may send [`RING_HOP`].
    pub fn peer_addresses(&self) -> &[std::net::IpAddr] {
        &self.peer_ips
    }

    /// Whether `ip` is one of the ring's peers.
    pub fn is_peer(&self, ip: std::net::IpAddr) -> bool {
        self.peer_ips.contains(&ip)
    }

    /// The peers to try, in ring order, before this node serves `key` itself: empty when
    /// this node owns it (or there is no ring).
    pub fn owners_before_self(&self, key: &CacheKey) -> Vec<Hop> {
        let Some(ring) = &self.ring else {
            return Vec::new();
        };
        ring.owners(key.as_str())
            .take_while(|m| m.name != self.node)
            .filter_map(|m| self.peers.iter().find(|p| p.name == m.name).cloned())
            .collect()
    }

    /// Counts a request for `key` on this node; true when the key is hot here.
    pub fn record_hot(&self, key: &CacheKey, now: Instant) -> bool {
        self.hot.as_ref().is_some_and(|h| h.record(key, now))
    }

    /// Keys hot on this node, highest rate first.
    pub fn hot_keys(&self, now: Instant, limit: usize) -> Vec<(String, f64)> {
        self.hot
            .as_ref()
            .map(|h| h.hot_keys(now, limit))
            .unwrap_or_default()
    }

    pub fn parents(&self) -> &[Hop] {
        &self.parents
    }

    /// Peers and parents with their breaker states, for metrics.
    pub fn upstreams(&self) -> impl Iterator<Item = &Hop> {
        self.peers.iter().chain(&self.parents)
    }

    /// The sets to probe and how.
    pub fn probes(&self) -> Vec<(Arc<OriginSet>, Probe)> {
        [&self.peer_set, &self.parent_set]
            .into_iter()
            .filter(|set| !set.all().is_empty())
            .map(|set| (Arc::clone(set), self.probe.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerConfig;

    fn config(me: &str) -> NodeConfig {
        let mut c = NodeConfig::single_origin("http://127.0.0.1:9");
        c.node.name = me.into();
        c.ring.peers = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| PeerConfig {
                name: n.to_string(),
                url: format!("http://127.0.0.1:{}", 10 + i),
                weight: 1,
            })
            .collect();
        c
    }

    #[test]
    fn exactly_one_node_serves_each_key_itself_and_the_others_agree_on_it() {
        let tiers: Vec<Tier> = ["a", "b", "c"]
            .iter()
            .map(|n| Tier::new(&config(n)).unwrap())
            .collect();
        for i in 0..1000 {
            let key = CacheKey::new("http", "x", &format!("/{i}"), None, &Default::default());
            let owners: Vec<&str> = tiers
                .iter()
                .filter(|t| t.owners_before_self(&key).is_empty())
                .map(|t| t.node.as_str())
                .collect();
            assert_eq!(owners.len(), 1, "{key}");
            for t in tiers.iter().filter(|t| t.node != owners[0]) {
                assert_eq!(t.owners_before_self(&key)[0].name, owners[0]);
            }
        }
    }

    #[test]
    fn parents_keep_their_configured_order() {
        let mut c = config("a");
        c.parents.shields = vec!["http://127.0.0.1:20".into(), "http://127.0.0.1:21".into()];
        let t = Tier::new(&c).unwrap();
        let names: Vec<_> = t.parents().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:20", "127.0.0.1:21"]);
        assert_eq!(t.probes().len(), 2);
    }
}
