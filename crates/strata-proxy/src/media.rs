//! Video-aware caching at run time (`[service.media]`): what the node learns from the
//! playlists it stores (which segment comes after which, how long a live playlist may be
//! kept), and which segments it fetched ahead of players. The class defaults (segment,
//! playlist and error lifetimes) are applied in `Service::resolve`; what a path or a
//! playlist is comes from `strata-media`; prefetches are started in
//! `request/prefetch.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_http_cache::key::CacheKey;
use strata_media::hls::{self, Playlist};
use strata_media::MediaClass;
use strata_storage::{Storage, StoredObject};

use crate::budget::Budget;
use crate::metrics::Metrics;
use crate::service::Service;

/// Segments remembered with their successors, across every playlist the node stores.
const SEGMENTS_KNOWN: u64 = 100_000;
/// How long a prefetched segment waits for a player before it counts as wasted.
const PREFETCH_WAIT: Duration = Duration::from_secs(300);

/// A segment that comes after another in some playlist.
#[derive(Debug, Clone)]
pub struct Successor {
    pub key: CacheKey,
    /// `path?query`, as the playlist names it, resolved against the playlist.
    pub target: String,
}

/// What the last stored copy of a media playlist said, for requests that block on it.
#[derive(Debug, Clone, Copy)]
pub struct PlaylistState {
    pub last_msn: Option<u64>,
    /// How long a blocking reload is held (`MediaPlaylist::hold`).
    pub hold: Duration,
}

pub struct Media {
    next: moka::sync::Cache<CacheKey, Arc<[Successor]>>,
    /// By the playlist's key without its query (`scheme://host/path`).
    playlists: moka::sync::Cache<String, PlaylistState>,
    /// Fetched ahead and not asked for yet.
    prefetched: moka::sync::Cache<CacheKey, ()>,
    pub(crate) budget: Arc<Budget>,
    metrics: Arc<Metrics>,
}

// === impl Media ===

impl Media {
    pub fn new(budget: Arc<Budget>, metrics: Arc<Metrics>) -> Self {
        let wasted = Arc::clone(&metrics);
        Self {
            next: moka::sync::Cache::builder()
                .max_capacity(SEGMENTS_KNOWN)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            playlists: moka::sync::Cache::builder()
                .max_capacity(SEGMENTS_KNOWN / 10)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            prefetched: moka::sync::Cache::builder()
                .max_capacity(SEGMENTS_KNOWN)
                .time_to_live(PREFETCH_WAIT)
                .eviction_listener(move |_, (), cause| {
                    if cause.was_evicted() {
                        wasted.prefetch("wasted");
                    }
                })
                .build(),
            budget,
            metrics,
        }
    }

    /// A playlist was stored under `key` (the fill just ended): remembers which segment
    /// follows which (keys as `service` makes them, for `scheme` and `key_host`), and caps
    /// a live media playlist's freshness (replacing the stored copy) at what its target
    /// duration allows. Anything that does not parse as a playlist is left as it is.
    pub fn playlist_stored(
        &self,
        storage: &dyn Storage,
        service: &Service,
        key: &CacheKey,
        obj: &Arc<StoredObject>,
    ) {
        let Some(media) = &service.media else {
            return;
        };
        let is_playlist =
            strata_media::class::of_path(key.as_str().split('?').next().unwrap_or(""))
                == Some(MediaClass::Playlist)
                || obj
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(strata_media::class::of_content_type)
                    == Some(MediaClass::Playlist);
        if !is_playlist || obj.body.len() > hls::MAX_PLAYLIST_BYTES as u64 {
            return;
        }
        let Some(chunks) = obj.body.snapshot() else {
            return;
        };
        let body: Bytes = chunks.concat().into();
        let playlist = match hls::parse(&body) {
            Ok(Playlist::Media(p)) => p,
            Ok(Playlist::Multivariant) => return,
            Err(e) => {
                tracing::debug!(key = %key.as_str(), error = %e, "a playlist path that does not parse");
                self.metrics.playlist_unreadable();
                return;
            }
        };
        let path_key = key.as_str().split('?').next().unwrap_or_default();
        self.playlists.insert(
            path_key.to_string(),
            PlaylistState {
                last_msn: playlist.last_msn(),
                hold: playlist.hold(),
            },
        );
        if let Some(max) = playlist.max_fresh() {
            let overridden = obj.policy.freshness.source
                == strata_http_cache::freshness::FreshnessSource::Override;
            if obj.policy.freshness.lifetime > max && !overridden {
                let mut policy = obj.policy.clone();
                policy.freshness.lifetime = max;
                let capped = Arc::new(StoredObject {
                    status: obj.status,
                    headers: obj.headers.clone(),
                    policy,
                    variant: obj.variant.clone(),
                    body: Arc::clone(&obj.body),
                    stored_at: obj.stored_at,
                });
                storage.replace(key, obj, capped);
            }
        }
        if media.prefetch == 0 {
            return;
        }
        let base = key.as_str();
        let scheme = base.split("://").next().unwrap_or("http");
        let host = base
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        for (segment, after) in playlist.successors(base, media.prefetch) {
            let key_of = |target: &str| {
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (target, None),
                };
                CacheKey::new(scheme, host, path, query, &service.resolve(path).key_rules)
            };
            let successors: Arc<[Successor]> = after
                .iter()
                .map(|target| Successor {
                    key: key_of(target),
                    target: target.clone(),
                })
                .collect();
            self.next.insert(key_of(&segment), successors);
        }
    }

    /// What the last stored copy of the playlist at `path_key` (`scheme://host/path`) said.
    pub fn playlist(&self, path_key: &str) -> Option<PlaylistState> {
        self.playlists.get(path_key)
    }

    /// The segments after the one under `key`, in the last playlist stored that lists it.
    pub fn after(&self, key: &CacheKey) -> Option<Arc<[Successor]>> {
        self.next.get(key)
    }

    /// A prefetch of `key` started.
    pub fn started(&self, key: &CacheKey) {
        self.prefetched.insert(key.clone(), ());
        self.metrics.prefetch("started");
    }

    /// Whether `key` is being (or was) fetched ahead and not asked for yet.
    pub fn is_prefetched(&self, key: &CacheKey) -> bool {
        self.prefetched.contains_key(key)
    }

    /// A player asked for `key`: a prefetch of it, if any, was worth it.
    pub fn asked(&self, key: &CacheKey) {
        if self.prefetched.remove(key).is_some() {
            self.metrics.prefetch("hit");
        }
    }

    /// Bytes a prefetch stored.
    pub fn stored(&self, bytes: u64) {
        self.metrics.prefetched_bytes(bytes);
    }

    pub fn skipped(&self, reason: &'static str) {
        self.metrics.prefetch(reason);
    }
}
