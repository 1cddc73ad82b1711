//! The control plane's configuration (TOML).

use std::net::SocketAddr;
use std::path::Path;

use std::time::Duration;

use serde::Deserialize;
use strata_health::Thresholds;
use strata_wire::config::{parse_toml, ConfigError, NatsAuth, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// API listen address.
    pub listen: SocketAddr,
    /// A bearer token with every scope (kept for existing setups; prefer `[[tokens]]`).
    #[serde(default)]
    pub token: Option<String>,
    /// Hashed tokens with scopes; several at once so they can rotate.
    #[serde(default)]
    pub tokens: Vec<crate::tokens::TokenConfig>,
    /// NATS server URL (JetStream enabled): `nats://` or `tls://`.
    pub nats: String,
    /// Credentials and TLS for the NATS server (`[nats_auth]`).
    #[serde(default)]
    pub nats_auth: NatsAuth,
    /// Nodes expected to ack purges (and probed by the health monitor when their URL is
    /// given): a plain name (`"edge-a1"`) or `{ name, pop, url }`. Nodes on NATS also
    /// announce themselves in the registry and are expected while they do; this list may
    /// then be empty.
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// How long a node stays in the registry after its last announcement.
    #[serde(default = "default_node_ttl")]
    pub node_ttl: Seconds,
    /// On how many servers of the NATS cluster the purge stream and the node registry are
    /// kept (JetStream replicas, 1 to 5): 3 on a 3-server cluster survives one down.
    #[serde(default = "default_stream_replicas")]
    pub stream_replicas: usize,
    #[serde(default)]
    pub health: HealthSection,
}

/// One node of the cluster.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum NodeEntry {
    Name(String),
    Probed(ProbedNode),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbedNode {
    pub name: String,
    pub pop: String,
    /// The node's HTTP listener (its health endpoint is `/.well-known/strata/health`).
    pub url: String,
}

impl NodeEntry {
    pub fn name(&self) -> &str {
        match self {
            NodeEntry::Name(n) => n,
            NodeEntry::Probed(p) => &p.name,
        }
    }
}

/// The health monitor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// Time between probe rounds.
    pub interval: Seconds,
    /// How long a probe may take (default: half the interval).
    pub timeout: Option<Seconds>,
    /// Share of a PoP's nodes that must answer for it to stay in service.
    pub min_up: f64,
    /// `[health.thresholds]`: when a node is degraded or unhealthy, and when it is back.
    pub thresholds: Thresholds,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            interval: Seconds(Duration::from_secs(1)),
            timeout: None,
            min_up: 0.5,
            thresholds: Thresholds::default(),
        }
    }
}

impl HealthSection {
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(self.interval.0 / 2, |t| t.0)
    }
}

fn default_stream_replicas() -> usize {
    1
}

fn default_node_ttl() -> Seconds {
    Seconds(Duration::from_secs(30))
}

impl ControlConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: ControlConfig = parse_toml(text)?;
        let err = |k: &str, m: &str| ConfigError::new(k, m);
        crate::tokens::Tokens::from_config(c.token.as_deref(), &c.tokens)?;
        strata_wire::config::check_nats_urls(&c.nats, "nats")?;
        c.nats_auth.check("nats_auth")?;
        if c.node_ttl.0 < Duration::from_secs(1) {
            return Err(err("node_ttl", "must be at least 1s"));
        }
        if !(1..=5).contains(&c.stream_replicas) {
            return Err(err("stream_replicas", "must be between 1 and 5"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, n) in c.nodes.iter().enumerate() {
            if n.name().is_empty() || !names.insert(n.name()) {
                return Err(err(
                    &format!("nodes[{i}]"),
                    "names must be unique and not empty",
                ));
            }
            if let NodeEntry::Probed(p) = n {
                let ok = p
                    .url
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
                if !ok {
                    return Err(err(&format!("nodes[{i}].url"), "must be an http:// URL"));
                }
                if p.pop.is_empty() {
                    return Err(err(&format!("nodes[{i}].pop"), "must name the node's PoP"));
                }
            }
        }
        let h = &c.health;
        if h.interval.0 < Duration::from_millis(50) {
            return Err(err("health.interval", "must be at least 50ms"));
        }
        if h.timeout() >= h.interval.0 || h.timeout().is_zero() {
            return Err(err(
                "health.timeout",
                "must be shorter than health.interval",
            ));
        }
        if !(0.0..=1.0).contains(&h.min_up) {
            return Err(err("health.min_up", "must be between 0 and 1"));
        }
        if let Err((key, why)) = h.thresholds.check() {
            return Err(ConfigError::new(format!("health.thresholds.{key}"), why));
        }
        Ok(c)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Self::from_toml(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let ok = "listen = \"127.0.0.1:0\"\ntoken = \"0123456789abcdef\"\nnats = \"nats://127.0.0.1:4222\"\nnodes = [\"a\"]\n";
        assert!(ControlConfig::from_toml(ok).is_ok());
        assert_eq!(
            ControlConfig::from_toml(&ok.replace("0123456789abcdef", "short"))
                .unwrap_err()
                .path,
            "token"
        );
        // No node in the file: they announce themselves.
        assert!(ControlConfig::from_toml(&ok.replace("[\"a\"]", "[]")).is_ok());
        assert_eq!(
            ControlConfig::from_toml(&format!("{ok}node_ttl = \"100ms\"\n"))
                .unwrap_err()
                .path,
            "node_ttl"
        );
        assert_eq!(
            ControlConfig::from_toml(&format!("{ok}extra = 1\n"))
                .unwrap_err()
                .path,
            "extra"
        );
        let probed = ok.replace(
            "[\"a\"]",
            "[\"a\", { name = \"b\", pop = \"p\", url = \"http://127.0.0.1:1\" }]",
        );
        let c = ControlConfig::from_toml(&probed).unwrap();
        assert_eq!(c.nodes[1].name(), "b");
        assert_eq!(
            ControlConfig::from_toml(&probed.replace("http://127", "ftp://127"))
                .unwrap_err()
                .path,
            "nodes[1].url"
        );
        assert_eq!(
            ControlConfig::from_toml(&probed.replace("name = \"b\"", "name = \"a\""))
                .unwrap_err()
                .path,
            "nodes[1]"
        );
        let health = |extra: &str| ControlConfig::from_toml(&format!("{ok}[health]\n{extra}\n"));
        assert_eq!(
            health("timeout = \"2s\"").unwrap_err().path,
            "health.timeout"
        );
        assert_eq!(
            health("[health.thresholds]\nrecover_p99 = \"900ms\"")
                .unwrap_err()
                .path,
            "health.thresholds.recover_p99"
        );
        assert_eq!(health("bogus = 1").unwrap_err().path, "health.bogus");
        assert_eq!(
            health("[health.thresholds]\nbogus = 1").unwrap_err().path,
            "health.thresholds.bogus"
        );
        assert_eq!(health("min_up = 2.0").unwrap_err().path, "health.min_up");
        let c = health("interval = \"2s\"\n[health.thresholds]\nfail_p99 = \"800ms\"").unwrap();
        assert_eq!(c.health.timeout(), Duration::from_secs(1));
        assert_eq!(c.health.thresholds.fail_p99, Duration::from_millis(800));
    }
}
