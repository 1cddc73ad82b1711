//! `[purge]`: the HTTP `PURGE` method on the edge listener (the admin API's
//! `POST /v1/purge` is always available on the admin listener).

use serde::Deserialize;

use super::names::parse_network;
use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PurgeSection {
    /// Accept `PURGE <url>` on the edge listener. Off by default: 405.
    pub http_method: bool,
    /// Client addresses or networks allowed to send it (`"10.0.0.0/8"`, `"127.0.0.1"`);
    /// others get 403.
    pub allow: Vec<String>,
}

impl PurgeSection {
    /// The allow list, parsed (validation has checked every entry).
    pub fn allowed_networks(&self) -> Vec<ipnet::IpNet> {
        self.allow
            .iter()
            .filter_map(|a| parse_network(a).ok())
            .collect()
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (i, a) in self.allow.iter().enumerate() {
            parse_network(a).map_err(|m| ConfigError::new(format!("purge.allow[{i}]"), m))?;
        }
        if self.http_method && self.allow.is_empty() {
            return Err(ConfigError::new(
                "purge.allow",
                "http_method needs at least one allowed network",
            ));
        }
        Ok(())
    }
}
