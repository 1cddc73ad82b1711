//! `[hot]`: hot objects. Above `threshold` requests/s on this node, a key is also cached
//! here, not only on its ring owner, until its rate stays below the threshold for
//! `cooldown`.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HotSection {
    /// Requests per second over `window`; 0 turns hot-object caching off.
    pub threshold: f64,
    pub window: Seconds,
    pub cooldown: Seconds,
}

impl Default for HotSection {
    fn default() -> Self {
        Self {
            threshold: 50.0,
            window: Seconds(Duration::from_secs(10)),
            cooldown: Seconds(Duration::from_secs(60)),
        }
    }
}

impl HotSection {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            return Err(ConfigError::new(
                "hot.threshold",
                "must be a number of requests per second, 0 or more",
            ));
        }
        if self.window.0.is_zero() {
            return Err(ConfigError::new("hot.window", "must be more than 0"));
        }
        Ok(())
    }
}
