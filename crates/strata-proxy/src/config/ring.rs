//! `[ring]`: the consistent-hash ring of this node's PoP. Every key has one owner among
//! `peers`, and other nodes forward to it, so each object is stored once per PoP.

use std::time::Duration;

use serde::Deserialize;

use super::names::is_token;
use super::{ConfigError, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RingSection {
    /// Every node of the PoP, this one included (matched by `node.name`). Empty: no ring.
    pub peers: Vec<PeerConfig>,
    /// Points per peer (times its weight).
    pub vnodes: u32,
    /// How often peers are probed (`/.well-known/strata/health` on their HTTP listener).
    /// A down owner is skipped within one interval; requests that find it down first move
    /// on at once.
    pub probe_interval: Seconds,
}

impl Default for RingSection {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            vnodes: 160,
            probe_interval: Seconds(Duration::from_secs(1)),
        }
    }
}

/// One node of the ring. `name` and `url` are required.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its `node.name`.
    pub name: String,
    /// Its HTTP listener, `http://host:port`.
    pub url: String,
    /// Share of keys relative to the others; 0 drains it.
    #[serde(default = "super::one")]
    pub weight: u32,
}

impl RingSection {
    /// `node`: this node's name, which must be among the peers.
    pub(super) fn check(&self, node: &str) -> Result<(), ConfigError> {
        let mut names: Vec<&str> = Vec::new();
        for (i, peer) in self.peers.iter().enumerate() {
            peer.check(i, &names)?;
            names.push(&peer.name);
        }
        if !self.peers.is_empty() {
            if !names.contains(&node) {
                return Err(ConfigError::new(
                    "ring.peers",
                    format!("must include this node ('{node}', from node.name)"),
                ));
            }
            if self.peers.iter().all(|p| p.weight == 0) {
                return Err(ConfigError::new(
                    "ring.peers",
                    "at least one peer needs a weight above 0",
                ));
            }
        }
        if !(1..=4096).contains(&self.vnodes) {
            return Err(ConfigError::new(
                "ring.vnodes",
                "must be between 1 and 4096",
            ));
        }
        if self.probe_interval.0.is_zero() {
            return Err(ConfigError::new(
                "ring.probe_interval",
                "must be more than 0",
            ));
        }
        Ok(())
    }
}

impl PeerConfig {
    /// `i`: its place in `ring.peers`; `before`: the names listed before it.
    fn check(&self, i: usize, before: &[&str]) -> Result<(), ConfigError> {
        if !is_token(&self.name) {
            return Err(ConfigError::new(
                format!("ring.peers[{i}].name"),
                "must be a node name",
            ));
        }
        if before.contains(&self.name.as_str()) {
            return Err(ConfigError::new(
                format!("ring.peers[{i}].name"),
                format!("'{}' is listed twice", self.name),
            ));
        }
        let origin = crate::upstream::Origin::parse(&self.url)
            .map_err(|why| ConfigError::new(format!("ring.peers[{i}].url"), why))?;
        // Peers are recognised by the address they connect from: only a peer may ask a
        // node to serve a key it does not own (`strata-ring`).
        let host = origin.authority.host();
        if host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            return Err(ConfigError::new(
                format!("ring.peers[{i}].url"),
                format!(
                    "'{}': a peer is named by its IP address, not a host name",
                    self.url
                ),
            ));
        }
        Ok(())
    }
}
