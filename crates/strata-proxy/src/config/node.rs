//! `[node]`: who this node is.

use serde::Deserialize;

use super::names::is_token;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Names this node in `Cache-Status`, `Via`, `CDN-Loop`, the ring and purge acks.
    pub name: String,
    /// `edge` (serves clients) or `shield` (regional mid-tier that edges use as parent).
    pub role: Role,
    /// The PoP this node belongs to (reported in metrics; the ring is this PoP's nodes).
    pub pop: Option<String>,
    /// Where other machines reach this node's HTTP listener (`http://10.0.3.51:8080`):
    /// announced on the bus with `pop`, so the control plane probes its health without
    /// being told of it.
    pub url: Option<String>,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: "strata".to_string(),
            role: Role::default(),
            pop: None,
            url: None,
        }
    }
}

impl NodeSection {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !is_token(&self.name) {
            return Err(ConfigError::new(
                "node.name",
                "must be a non-empty token (letters, digits, '-', '_', '.')",
            ));
        }
        if let Some(pop) = &self.pop {
            if !is_token(pop) {
                return Err(ConfigError::new("node.pop", "must be a non-empty token"));
            }
        }
        if let Some(url) = &self.url {
            let ok = url
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
            if !ok {
                return Err(ConfigError::new("node.url", "must be an http:// URL"));
            }
            if self.pop.is_none() {
                return Err(ConfigError::new(
                    "node.url",
                    "needs node.pop (health is judged per PoP)",
                ));
            }
        }
        Ok(())
    }
}

/// A node's place in the topology.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Edge,
    Shield,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Shield => "shield",
        }
    }
}
