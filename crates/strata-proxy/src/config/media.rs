//! `[service.media]`: video-aware caching for a service (HLS playlists, DASH manifests,
//! init and media segments recognised by path), and segment prefetch.

use std::time::Duration;

use serde::Deserialize;
use strata_wire::config::{ConfigError, Seconds};

/// Turned on by the table's presence; every key has a default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Segments fetched ahead of a player, in the background, when it asks for one that a
    /// playlist the node has seen lists: the next `prefetch` of that playlist. 0: none.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Freshness of init and media segments whose origin says nothing (they do not change
    /// once published).
    #[serde(default = "default_segment_ttl")]
    pub segment_ttl: Seconds,
    /// Freshness of playlists and manifests whose origin says nothing. A live media
    /// playlist is never kept longer than half its target duration (LL-HLS: a part
    /// target, at most 1 s), whatever its origin says.
    #[serde(default = "default_playlist_ttl")]
    pub playlist_ttl: Seconds,
    /// The longest an error for a media path is kept (a 404 for a segment that is about
    /// to be published).
    #[serde(default = "default_error_ttl")]
    pub error_ttl: Seconds,
}

/// The most segments prefetched ahead of one request.
const MAX_PREFETCH: usize = 16;

fn default_prefetch() -> usize {
    2
}

fn default_segment_ttl() -> Seconds {
    Seconds(Duration::from_secs(86_400))
}

fn default_playlist_ttl() -> Seconds {
    Seconds(Duration::from_secs(1))
}

fn default_error_ttl() -> Seconds {
    Seconds(Duration::from_secs(1))
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            prefetch: default_prefetch(),
            segment_ttl: default_segment_ttl(),
            playlist_ttl: default_playlist_ttl(),
            error_ttl: default_error_ttl(),
        }
    }
}

impl MediaConfig {
    pub(super) fn check(&self, at: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.prefetch > MAX_PREFETCH {
            return Err(ConfigError::new(
                at("media.prefetch"),
                format!("at most {MAX_PREFETCH}"),
            ));
        }
        for (key, ttl) in [
            ("media.segment_ttl", self.segment_ttl),
            ("media.playlist_ttl", self.playlist_ttl),
            ("media.error_ttl", self.error_ttl),
        ] {
            if ttl.0.is_zero() {
                return Err(ConfigError::new(at(key), "must be more than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let at = |k: &str| format!("service[0].{k}");
        let many = MediaConfig {
            prefetch: 17,
            ..MediaConfig::default()
        };
        assert_eq!(
            many.check(at).unwrap_err().path,
            "service[0].media.prefetch"
        );
        let zero = MediaConfig {
            error_ttl: Seconds(Duration::ZERO),
            ..MediaConfig::default()
        };
        assert_eq!(
            zero.check(at).unwrap_err().path,
            "service[0].media.error_ttl"
        );
        assert!(MediaConfig::default().check(at).is_ok());
    }
}
