//! `[bus]`: how this node joins the others.

use serde::Deserialize;
use strata_wire::config::NatsAuth;

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusSection {
    /// NATS server URL (`nats://127.0.0.1:4222`) with JetStream enabled. Purge events reach
    /// this node through a durable consumer named after `node.name`.
    pub nats: Option<String>,
    /// Credentials and TLS for the NATS server (`[bus.auth]`).
    pub auth: NatsAuth,
}

impl BusSection {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.nats {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) || url.len() <= 7 {
                return Err(ConfigError::new(
                    "bus.nats",
                    format!("'{url}' is not a nats:// URL"),
                ));
            }
        }
        self.auth.check("bus.auth")
    }
}
