//! `[compute]`: what edge compute filters may use on this node, and `[[service.filter]]`:
//! the filters a service's requests go through (docs/compute.md).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ByteSize, ConfigError, Seconds};

/// Limits for every filter on the node (read at start).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeSection {
    /// Linear memory one filter instance may grow to.
    pub memory: ByteSize,
    /// CPU time one call into a filter may use before it is stopped.
    pub cpu: Seconds,
    /// Instance slots on the node (in-flight filtered requests plus warm instances):
    /// past it, a filtered request is answered `503`.
    pub instances: u32,
    /// Longest an HTTP callout of a filter may take.
    pub callout_timeout: Seconds,
}

impl Default for ComputeSection {
    fn default() -> Self {
        let limits = strata_compute::Limits::default();
        ComputeSection {
            memory: ByteSize(limits.memory),
            cpu: Seconds(limits.cpu),
            instances: limits.instances,
            callout_timeout: Seconds(limits.callout_timeout),
        }
    }
}

impl ComputeSection {
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(64 << 10..=4 << 30).contains(&self.memory.0) {
            return Err(ConfigError::new(
                "compute.memory",
                "must be between 64KiB and 4GiB",
            ));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(10)).contains(&self.cpu.0) {
            return Err(ConfigError::new(
                "compute.cpu",
                "must be between 1ms and 10s",
            ));
        }
        if !(2..=100_000).contains(&self.instances) {
            return Err(ConfigError::new(
                "compute.instances",
                "must be between 2 and 100000",
            ));
        }
        if self.callout_timeout.0.is_zero() {
            return Err(ConfigError::new(
                "compute.callout_timeout",
                "must be more than 0s",
            ));
        }
        Ok(())
    }

    pub fn limits(&self) -> strata_compute::Limits {
        strata_compute::Limits {
            memory: self.memory.0,
            cpu: self.cpu.0,
            instances: self.instances,
            callout_timeout: self.callout_timeout.0,
        }
    }
}

/// One filter of a service's (or a rule's) chain. Requests go through the chain in order
/// before the cache; responses in reverse order on their way to the client.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Names the filter in logs, metrics and `Cache-Status` details.
    pub name: String,
    /// A proxy-wasm module (`.wasm`, ABI 0.2.1).
    pub module: PathBuf,
    /// The module's SHA-256 (hex): a file that does not match is refused.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The filter's configuration (`proxy_on_configure`), as the filter reads it.
    #[serde(default)]
    pub config: String,
    /// When the filter faults (traps, runs out of CPU or memory, has no free instance),
    /// go on as if it were not there, instead of answering `500`.
    #[serde(default)]
    pub fail_open: bool,
    /// The Edge KV namespace the filter's shared data is (its service's name by default):
    /// filters of several services share data by naming one namespace.
    #[serde(default)]
    pub kv_namespace: Option<String>,
}

impl FilterConfig {
    /// The name is usable as a metric label, the module reads, its hash is hex.
    pub fn check(&self, at: &str) -> Result<(), ConfigError> {
        let label_safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(label_safe) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                "1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if let Some(ns) = &self.kv_namespace {
            if ns.is_empty() || ns.contains('/') || ns.len() > 64 {
                return Err(ConfigError::new(
                    format!("{at}.kv_namespace"),
                    "1 to 64 characters, no '/'",
                ));
            }
        }
        if let Some(h) = &self.sha256 {
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ConfigError::new(
                    format!("{at}.sha256"),
                    "64 hexadecimal digits",
                ));
            }
        }
        std::fs::metadata(&self.module).map_err(|e| {
            ConfigError::new(
                format!("{at}.module"),
                format!("{}: {e}", self.module.display()),
            )
        })?;
        Ok(())
    }
}
