//! The control plane's configuration (TOML).

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use strata_proxy::config::{parse_toml, ConfigError};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// API listen address.
    pub listen: SocketAddr,
    /// Bearer token the API requires.
    pub token: String,
    /// NATS server URL (JetStream enabled).
    pub nats: String,
    /// Names (`node.name`) of every node expected to ack purges.
    pub nodes: Vec<String>,
}

impl ControlConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: ControlConfig = parse_toml(text)?;
        let err = ConfigError::new;
        if c.token.len() < 16 {
            return Err(err("token", "must be at least 16 characters"));
        }
        if !c.nats.starts_with("nats://") {
            return Err(err("nats", "must be a nats:// URL"));
        }
        if c.nodes.is_empty() {
            return Err(err("nodes", "at least one node is required"));
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
        assert_eq!(
            ControlConfig::from_toml(&ok.replace("[\"a\"]", "[]"))
                .unwrap_err()
                .path,
            "nodes"
        );
        assert_eq!(
            ControlConfig::from_toml(&format!("{ok}extra = 1\n"))
                .unwrap_err()
                .path,
            "extra"
        );
    }
}
