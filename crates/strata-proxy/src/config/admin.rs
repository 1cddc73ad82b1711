//! `[admin]`: the admin listener's credentials, and who may read the node's health
//! report.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::names::parse_network;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Bearer token every admin request must carry (`Authorization: Bearer <token>`).
    /// Required when `listen.admin` is not a loopback address. At least 16 characters.
    pub token: Option<String>,
    /// A file holding the token (trailing whitespace ignored), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Networks allowed to read `/.well-known/strata/health` on the HTTP listeners (node
    /// name, role, error counts, load). Others get 404; the admin listener serves it too.
    pub health_allow: Vec<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            token: None,
            token_file: None,
            health_allow: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl AdminSection {
    /// The token, read from `token_file` when that is how it is given.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "admin.token_file",
                "give either admin.token or admin.token_file, not both",
            )),
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim_end().to_string()))
                .map_err(|e| {
                    ConfigError::new("admin.token_file", format!("{}: {e}", path.display()))
                }),
            (None, None) => Ok(None),
        }
    }

    pub fn health_networks(&self) -> Vec<ipnet::IpNet> {
        self.health_allow
            .iter()
            .filter_map(|a| parse_network(a).ok())
            .collect()
    }

    /// `listen`: the admin listener, which needs a token unless it is on loopback.
    pub(super) fn check(&self, listen: Option<SocketAddr>) -> Result<(), ConfigError> {
        for (i, a) in self.health_allow.iter().enumerate() {
            parse_network(a)
                .map_err(|m| ConfigError::new(format!("admin.health_allow[{i}]"), m))?;
        }
        let token = self.token()?;
        let key = if self.token_file.is_some() {
            "admin.token_file"
        } else {
            "admin.token"
        };
        if let Some(t) = &token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::new(
                    key,
                    "must be at least 16 characters, without spaces",
                ));
            }
        }
        if let Some(addr) = listen {
            if !addr.ip().is_loopback() && token.is_none() {
                return Err(ConfigError::new(
                    "admin.token",
                    format!(
                        "required when the admin listener ({addr}) is not on a loopback address"
                    ),
                ));
            }
        }
        Ok(())
    }
}
