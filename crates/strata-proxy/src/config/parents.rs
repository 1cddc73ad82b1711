//! `[parents]`: where misses go before the origin: shields, in order (primary, then
//! failover). When every shield fails, the origin is asked directly.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ParentsSection {
    /// Shield HTTP listeners, `http://host:port`, primary first.
    pub shields: Vec<String>,
    /// Most connections to one parent (or peer).
    pub max_connections: usize,
}

impl Default for ParentsSection {
    fn default() -> Self {
        Self {
            shields: Vec::new(),
            max_connections: 1024,
        }
    }
}

impl ParentsSection {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (i, url) in self.shields.iter().enumerate() {
            crate::upstream::Origin::parse(url)
                .map_err(|why| ConfigError::new(format!("parents.shields[{i}]"), why))?;
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "parents.max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
