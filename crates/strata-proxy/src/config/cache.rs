//! `[cache]` and `[cache.disk]`: the tiers' sizes and what may be stored.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ByteSize, ConfigError, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Memory tier capacity.
    pub size: ByteSize,
    /// Larger responses are streamed through without being stored.
    pub max_object_size: ByteSize,
    /// Heuristic freshness: this fraction of the time since `Last-Modified`.
    pub heuristic_fraction: f64,
    /// Cap on heuristic freshness.
    pub heuristic_max: Seconds,
    /// A disk tier under the memory tier: capacity, and a cache that survives restarts.
    pub disk: Option<DiskSection>,
    /// Remove `CDN-Cache-Control` from responses. Off by default: the field is for every
    /// CDN cache on the way (RFC 9213), so a Strata edge behind a Strata shield, or another
    /// CDN in front of this one, applies the same policy; browsers ignore it.
    /// `Surrogate-Control` is always removed (Edge Architecture 1.0: it is for the
    /// surrogate that acts on it).
    pub strip_cdn_cache_control: bool,
    /// Compress what origins send uncompressed (br, zstd or gzip, as the client asks) and
    /// store the compressed variant. See docs/compression.md.
    pub compression: bool,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            size: ByteSize(512 << 20),
            max_object_size: ByteSize(64 << 20),
            heuristic_fraction: 0.1,
            heuristic_max: Seconds(Duration::from_secs(86_400)),
            disk: None,
            strip_cdn_cache_control: false,
            compression: true,
        }
    }
}

/// `[cache.disk]`. Both keys are required.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskSection {
    /// Directory of the tier (created if missing). One node per directory.
    pub path: PathBuf,
    /// Bytes the tier may hold on disk.
    pub size: ByteSize,
}

impl CacheSection {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.size.0 < 1 << 20 {
            return Err(ConfigError::new("cache.size", "must be at least 1MiB"));
        }
        if self.max_object_size.0 == 0 || self.max_object_size.0 > self.size.0 {
            return Err(ConfigError::new(
                "cache.max_object_size",
                "must be more than 0 and at most cache.size",
            ));
        }
        if self.max_object_size.0 > 4 << 30 {
            return Err(ConfigError::new(
                "cache.max_object_size",
                "must be at most 4GiB for the memory tier",
            ));
        }
        if let Some(disk) = &self.disk {
            if disk.path.as_os_str().is_empty() {
                return Err(ConfigError::new("cache.disk.path", "must name a directory"));
            }
            if disk.size.0 < self.max_object_size.0.max(1 << 20) {
                return Err(ConfigError::new(
                    "cache.disk.size",
                    "must be at least 1MiB and at least cache.max_object_size",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.heuristic_fraction) {
            return Err(ConfigError::new(
                "cache.heuristic_fraction",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }
}
