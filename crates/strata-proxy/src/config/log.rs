//! `[log]`: where access log lines go.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `"stdout"`, `"off"`, or a file path.
    pub access: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            access: "stdout".to_string(),
        }
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

impl LogSection {
    pub fn target(&self) -> AccessLogTarget {
        match self.access.as_str() {
            "off" | "" => AccessLogTarget::Off,
            "stdout" | "-" => AccessLogTarget::Stdout,
            path => AccessLogTarget::File(PathBuf::from(path)),
        }
    }
}
