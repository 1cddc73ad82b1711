//! `[listen]`: the node's sockets.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    /// Plain HTTP listeners (HTTP/1.1 and h2c with prior knowledge).
    pub http: Vec<SocketAddr>,
    /// TLS listeners (HTTP/1.1 and h2 by ALPN), with the certificates of `[tls]`.
    pub https: Vec<SocketAddr>,
    /// HTTP/3 (QUIC, UDP) on the port number of each `https` listener, announced by
    /// `Alt-Svc` on their responses.
    pub http3: bool,
    /// Admin listener (`/metrics`, `/healthz`); off when absent.
    pub admin: Option<SocketAddr>,
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            http: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            https: Vec::new(),
            http3: true,
            admin: None,
        }
    }
}

impl ListenSection {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.http.is_empty() && self.https.is_empty() {
            return Err(ConfigError::new(
                "listen.http",
                "at least one listener (listen.http or listen.https) is required",
            ));
        }
        Ok(())
    }
}
