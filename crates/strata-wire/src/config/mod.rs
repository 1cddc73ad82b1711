//! Configuration files: TOML parsed with errors that name the key path at fault
//! (`service[0].origins[1]`), and the human-friendly units they use (`"30s"`, `"512MiB"`).
//! Every role's configuration (node, control plane, DNS router, anycast announcer) is read
//! with these.

mod nats;
mod units;

pub use nats::{check_nats_urls, redacted, NatsAuth};
pub use units::{duration, parse_size, ByteSize, Seconds};

/// A configuration error and the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Deserializes TOML into any configuration type; errors name the key path (or
/// `(document)` for syntax errors). Shared by every role's configuration.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::new("(document)", e.to_string().trim().replace('\n', " ")))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // toml's message repeats position details on several lines; keep the first.
        let msg = e
            .into_inner()
            .message()
            .lines()
            .next()
            .unwrap_or("invalid value")
            .to_string();
        let path = if path == "." || path.is_empty() {
            "(document)".to_string()
        } else {
            path
        };
        ConfigError::new(path, msg)
    })
}
