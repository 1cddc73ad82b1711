//! `[service.health]`: health checking and circuit breaking for a service's origins.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Path probed with GET; no active probes when absent (passive detection still runs).
    pub path: Option<String>,
    pub interval: Seconds,
    pub timeout: Seconds,
    pub expected_status: u16,
    /// Transport failures in a row (failed probes; connections refused, reset or timed
    /// out; requests with no response head in time) that open an origin's breaker.
    /// Failures of sent requests count only when they span `distinct_urls` URLs.
    pub failures: u32,
    /// Successes in half-open that close it again.
    pub successes: u32,
    /// Time an open breaker waits before letting a test request through.
    pub cooldown: Seconds,
    /// Share of 5xx answers over `error_window` that opens the breaker (0 < rate <= 1).
    pub error_rate: f64,
    pub error_window: Seconds,
    /// Answers in the window before the 5xx share is judged.
    pub error_min_responses: u32,
    /// Different URLs the 5xx answers, or a run of failed requests, must span: one URL
    /// that fails cannot open the breaker for a whole site.
    pub distinct_urls: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let secs = |s| Seconds(Duration::from_secs(s));
        Self {
            path: None,
            interval: secs(5),
            timeout: secs(2),
            expected_status: 200,
            failures: 5,
            successes: 2,
            cooldown: secs(10),
            error_rate: 0.5,
            error_window: secs(10),
            error_min_responses: 20,
            distinct_urls: 3,
        }
    }
}

impl HealthConfig {
    /// `at`: the key path of one of this table's keys (`service[0].health.path`).
    pub(super) fn check(&self, at: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        if let Some(p) = &self.path {
            if !p.starts_with('/') {
                return Err(ConfigError::new(at("health.path"), "must start with '/'"));
            }
        }
        if http::StatusCode::from_u16(self.expected_status).is_err() {
            return Err(ConfigError::new(
                at("health.expected_status"),
                "not an HTTP status",
            ));
        }
        if self.failures == 0 || self.successes == 0 {
            return Err(ConfigError::new(
                at("health"),
                "failures and successes must be at least 1",
            ));
        }
        if !(self.error_rate > 0.0 && self.error_rate <= 1.0) {
            return Err(ConfigError::new(
                at("health.error_rate"),
                "must be more than 0 and at most 1",
            ));
        }
        if self.error_window.0.is_zero() {
            return Err(ConfigError::new(
                at("health.error_window"),
                "must be more than 0",
            ));
        }
        if self.error_min_responses == 0 || self.distinct_urls == 0 {
            return Err(ConfigError::new(
                at("health"),
                "error_min_responses and distinct_urls must be at least 1",
            ));
        }
        if self.interval.0.is_zero() {
            return Err(ConfigError::new(
                at("health.interval"),
                "must be more than 0",
            ));
        }
        Ok(())
    }
}
