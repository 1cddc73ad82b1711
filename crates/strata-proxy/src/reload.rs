//! Reloading a running node: the configuration is read again from where it came (the
//! same file and flags: the caller says how), checked whole, and what can change in place
//! is applied (the certificates of `[tls]`). A configuration that does not validate, or
//! certificates that do not load, are refused whole and the running ones stay. Changes to
//! other sections are reported as needing a restart.
//!
//! Triggered by `SIGHUP` (the CLI), `POST /v1/reload` on the admin listener, or
//! `strata reload --admin ADDR`.

use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use crate::config::{ConfigError, NodeConfig};
use crate::tls::ServerTls;

/// Reads the node's configuration again.
pub type ConfigSource = Box<dyn Fn() -> Result<NodeConfig, ConfigError> + Send + Sync>;

/// What a reload did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reloaded {
    /// Sections whose new values wait for a restart.
    pub restart_needed: Vec<&'static str>,
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this node was not started from a configuration it can read again")]
    NoSource,
    #[error("{0}")]
    Config(#[from] ConfigError),
}

pub struct Reloader {
    source: OnceLock<ConfigSource>,
    running: Mutex<NodeConfig>,
    tls: Option<ServerTls>,
}

impl Reloader {
    pub fn new(running: NodeConfig, tls: Option<ServerTls>) -> Self {
        Self {
            source: OnceLock::new(),
            running: Mutex::new(running),
            tls,
        }
    }

    /// Where reloads read the configuration from (set once; later calls are ignored).
    pub fn set_source(&self, source: ConfigSource) {
        let _ = self.source.set(source);
    }

    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let source = self.source.get().ok_or(ReloadError::NoSource)?;
        let new = source()?;
        if let Some(tls) = &self.tls {
            tls.reload(&new.tls)?;
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut restart_needed: Vec<&'static str> = new
            .sections_differing(&running)
            .into_iter()
            .filter(|s| *s != "tls")
            .collect();
        // The cluster identity is read at start (listeners' client verification, the
        // upstream client); only the served certificates change in place.
        let cluster = |c: &NodeConfig| {
            (
                c.tls.client_ca.clone(),
                c.tls.client_cert.clone(),
                c.tls.client_key.clone(),
            )
        };
        if cluster(&new) != cluster(&running) {
            restart_needed.push("tls.client_ca, tls.client_cert, tls.client_key");
        }
        // The ACME manager and the listeners' ALPN are set up at start.
        if new.tls.acme != running.tls.acme {
            restart_needed.push("tls.acme");
        }
        running.tls = new.tls;
        Ok(Reloaded { restart_needed })
    }

    /// Certificates only, from a `[tls]` section given directly (tests, tools).
    pub fn reload_tls(&self, section: &crate::config::TlsSection) -> Result<(), ConfigError> {
        match &self.tls {
            Some(tls) => tls.reload(section),
            None => Ok(()),
        }
    }
}
