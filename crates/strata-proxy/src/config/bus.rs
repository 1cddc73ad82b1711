//! `[bus]`: how this node joins the others.

use serde::Deserialize;
use strata_wire::config::NatsAuth;

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusSection {
    /// NATS server URL (`nats://127.0.0.1:4222`), or the servers of a cluster separated by
    /// commas, with JetStream enabled. Purge events reach
    /// this node through a durable consumer named after `node.name`.
    pub nats: Option<String>,
    /// Credentials and TLS for the NATS server (`[bus.auth]`).
    pub auth: NatsAuth,
}

impl BusSection {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.nats {
            strata_wire::config::check_nats_urls(url, "bus.nats")?;
        }
        self.auth.check("bus.auth")
    }
}
