//! `[forwarding]`: what this node believes of the forwarding fields clients send, and
//! which of the fields it drops by default it forwards anyway.

use serde::Deserialize;

use super::names::parse_network;
use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingSection {
    /// Networks of proxies in front of this node (a load balancer; a shield's edges):
    /// their `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto` and client-address fields
    /// are kept and extended. Anyone else's are replaced with what the connection says.
    /// The ring's peers are trusted without being listed.
    pub trusted_proxies: Vec<String>,
    /// Fields Strata drops from client requests because origins read them as the real
    /// host, URL or method (`X-Forwarded-Host`, `X-Original-URL`, `X-Rewrite-URL`,
    /// `X-HTTP-Method-Override`, ...) that this node forwards anyway.
    pub allow_request_headers: Vec<String>,
}

impl ForwardingSection {
    /// The trusted networks, parsed (validation has checked every entry).
    pub fn trusted_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|a| parse_network(a).ok())
            .collect()
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (i, a) in self.trusted_proxies.iter().enumerate() {
            parse_network(a)
                .map_err(|m| ConfigError::new(format!("forwarding.trusted_proxies[{i}]"), m))?;
        }
        for (i, name) in self.allow_request_headers.iter().enumerate() {
            let known = http::HeaderName::from_bytes(name.as_bytes())
                .ok()
                .filter(|n| crate::forward::OVERRIDES.contains(n));
            if known.is_none() {
                let list: Vec<&str> = crate::forward::OVERRIDES
                    .iter()
                    .map(|n| n.as_str())
                    .collect();
                return Err(ConfigError::new(
                    format!("forwarding.allow_request_headers[{i}]"),
                    format!(
                        "'{name}' is not a field Strata drops (every other end-to-end field is forwarded): one of {}",
                        list.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
