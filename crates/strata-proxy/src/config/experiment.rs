//! `[[service.experiment]]`: A/B tests built in (docs/experiments.md).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Names the experiment in metrics, the origin's header and the cookie's default name.
    pub name: String,
    /// Two or more variants and their weights (`{ name = "new", weight = 10 }`).
    pub variants: Vec<VariantConfig>,
    /// The cookie that keeps a client in its variant (set when absent):
    /// `strata-exp-<name>` by default.
    #[serde(default)]
    pub cookie: Option<String>,
    /// A request header whose value picks the variant (by hash) for clients without the
    /// cookie, e.g. a user id a login layer sets: the same value always gets the same
    /// variant, on every node, and no cookie is needed.
    #[serde(default)]
    pub hash_header: Option<String>,
    /// How long the cookie lasts.
    #[serde(default = "default_max_age")]
    pub cookie_max_age: Seconds,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    pub name: String,
    #[serde(default = "super::one")]
    pub weight: u32,
}

fn default_max_age() -> Seconds {
    Seconds(Duration::from_secs(30 * 86_400))
}

fn label_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ExperimentConfig {
    /// The cookie's name.
    pub fn cookie_name(&self) -> String {
        self.cookie
            .clone()
            .unwrap_or_else(|| format!("strata-exp-{}", self.name))
    }

    pub fn check(&self, at: &str) -> Result<(), ConfigError> {
        if !label_safe(&self.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                "1 to 32 letters, digits, '-' or '_'",
            ));
        }
        if self.variants.len() < 2 {
            return Err(ConfigError::new(
                format!("{at}.variants"),
                "at least two variants",
            ));
        }
        for (v, variant) in self.variants.iter().enumerate() {
            if !label_safe(&variant.name) {
                return Err(ConfigError::new(
                    format!("{at}.variants[{v}].name"),
                    "1 to 32 letters, digits, '-' or '_'",
                ));
            }
            if self.variants[..v].iter().any(|o| o.name == variant.name) {
                return Err(ConfigError::new(
                    format!("{at}.variants[{v}].name"),
                    format!("'{}' names another variant", variant.name),
                ));
            }
            if variant.weight == 0 || variant.weight > 1_000_000 {
                return Err(ConfigError::new(
                    format!("{at}.variants[{v}].weight"),
                    "between 1 and 1000000",
                ));
            }
        }
        let cookie = self.cookie_name();
        if cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError::new(
                format!("{at}.cookie"),
                "letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(h) = &self.hash_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ConfigError::new(
                    format!("{at}.hash_header"),
                    "not a header name",
                ));
            }
        }
        Ok(())
    }
}
