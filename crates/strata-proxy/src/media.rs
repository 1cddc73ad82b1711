//! Video-aware caching at run time (`[service.media]`): what the node learns from the
//! playlists it fills (which segment comes after which, how long a live playlist may be
//! kept, how far a blocking reload may ask), and which segments it fetched ahead of
//! players. The class defaults (segment, playlist and error lifetimes) are applied in
//! `Service::resolve`; what a path or a playlist is comes from `strata-media`; prefetches
//! are started in `request/prefetch.rs`, directives checked in `request/llhls.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_http_cache::freshness::FreshnessSource;
use strata_http_cache::key::CacheKey;
use strata_http_cache::CachePolicy;
use strata_media::dash;
use strata_media::hls::{self, Playlist};
use strata_media::MediaClass;
use strata_storage::StoredObject;

use crate::budget::Budget;
use crate::metrics::Metrics;
use crate::service::Service;

/// Bytes the successor table may hold (keys and targets), across every playlist.
const SUCCESSOR_BYTES: u64 = 64 << 20;
/// Segments of one playlist remembered (its last ones): a 4 MiB VOD playlist must not
/// cost a worker seconds of key-making.
const SEGMENTS_PER_PLAYLIST: usize = 20_000;
/// A segment URI longer than this is not remembered (an origin controls their length).
const MAX_URI: usize = 2048;
/// Playlists whose state is kept, and for how long after it was filled.
const PLAYLISTS_KNOWN: u64 = 10_000;
const PLAYLIST_STATE_TTL: Duration = Duration::from_secs(600);
/// How long a prefetched segment waits for a player before it counts as wasted.
const PREFETCH_WAIT: Duration = Duration::from_secs(300);
const PREFETCHES_KNOWN: u64 = 100_000;

/// A segment that comes after another in some playlist.
#[derive(Debug, Clone)]
pub struct Successor {
    pub key: CacheKey,
    /// `path?query`, as the playlist names it, resolved against the playlist.
    pub target: String,
}

/// What the last filled copy of a media playlist said, for requests that block on it.
#[derive(Debug, Clone, Copy)]
pub struct PlaylistState {
    pub last_msn: Option<u64>,
    pub target_duration: Duration,
    /// How long a blocking reload is held (`MediaPlaylist::hold`).
    pub hold: Duration,
    /// The freshness a stored copy may have (live playlists), if capped.
    pub max_fresh: Option<Duration>,
    /// When it was filled, on the node clock.
    pub at: Instant,
}

impl PlaylistState {
    /// The highest `_HLS_msn` a player may ask for `now` (RFC 8216bis §6.2.5.2: two past
    /// the last segment), counting the segments that may have appeared since this copy.
    pub fn highest_msn(&self, now: Instant) -> Option<u64> {
        let since = now.saturating_duration_since(self.at).as_secs_f64();
        let target = self.target_duration.as_secs_f64().max(0.1);
        // Whole target durations since: a segment appears once one has passed.
        let more = (since / target).floor() as u64;
        self.last_msn
            .map(|last| last.saturating_add(2).saturating_add(more))
    }
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
                .max_capacity(SUCCESSOR_BYTES)
                .weigher(|key: &CacheKey, next: &Arc<[Successor]>| {
                    let bytes: usize = next
                        .iter()
                        .map(|s| s.key.as_str().len() + s.target.len() + 64)
                        .sum::<usize>()
                        + key.as_str().len()
                        + 64;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            playlists: moka::sync::Cache::builder()
                .max_capacity(PLAYLISTS_KNOWN)
                .time_to_live(PLAYLIST_STATE_TTL)
                .build(),
            prefetched: moka::sync::Cache::builder()
                .max_capacity(PREFETCHES_KNOWN)
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

    /// A fill of `key` for `service` ended with `obj`, about to be stored. A playlist (by
    /// path, or by type) is read: which segment follows which is remembered, the state
    /// blocking reloads are checked against is kept, and for a live media playlist a copy
    /// whose freshness is capped is returned, to be stored instead. Anything that does not
    /// parse is left as it is (and counted).
    pub fn playlist_filled(
        &self,
        service: &Service,
        key: &CacheKey,
        obj: &Arc<StoredObject>,
        now: Instant,
    ) -> Option<Arc<StoredObject>> {
        let media = service.media.as_ref()?;
        let path_key = key.as_str().split('?').next().unwrap_or_default();
        let by_path = strata_media::class::of_path(path_key);
        let by_type = obj
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(strata_media::class::of_content_type);
        let is = |class| by_path == Some(class) || by_type == Some(class);
        if is(MediaClass::Manifest) {
            return self.manifest_filled(service, key, obj, media.prefetch, now);
        }
        if !is(MediaClass::Playlist) {
            return None;
        }
        let playlist = match hls::parse(&self.read(obj)?) {
            Ok(Playlist::Media(p)) => p,
            Ok(Playlist::Multivariant) => return None,
            Err(e) => {
                tracing::debug!(key = %key.as_str(), error = %e, "a playlist that does not parse");
                self.metrics.playlist_unreadable();
                return None;
            }
        };
        let max_fresh = playlist.max_fresh();
        self.playlists.insert(
            path_key.to_string(),
            PlaylistState {
                last_msn: playlist.last_msn(),
                target_duration: playlist.target_duration,
                hold: playlist.hold(),
                max_fresh,
                at: now,
            },
        );
        if media.prefetch > 0 {
            let all = playlist.successors(key.as_str(), media.prefetch);
            self.remember_successors(service, key, all);
        }
        capped_copy(obj, max_fresh?)
    }

    /// A DASH manifest was filled: the segments its templates name are remembered in
    /// order, and a live one is capped like a live playlist (half its update period).
    fn manifest_filled(
        &self,
        service: &Service,
        key: &CacheKey,
        obj: &Arc<StoredObject>,
        prefetch: usize,
        now: Instant,
    ) -> Option<Arc<StoredObject>> {
        let manifest = match dash::parse(&self.read(obj)?) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(key = %key.as_str(), error = %e, "a manifest that does not parse");
                self.metrics.playlist_unreadable();
                return None;
            }
        };
        if prefetch > 0 {
            self.remember_successors(service, key, manifest.successors(key.as_str(), prefetch));
        }
        let max_fresh = manifest.max_fresh();
        // Kept so a 304 re-caps it (no blocking reloads: those are HLS's).
        let path_key = key.as_str().split('?').next().unwrap_or_default();
        self.playlists.insert(
            path_key.to_string(),
            PlaylistState {
                last_msn: None,
                target_duration: Duration::ZERO,
                hold: Duration::ZERO,
                max_fresh,
                at: now,
            },
        );
        capped_copy(obj, max_fresh?)
    }

    /// The document's bytes (decoded when the stored variant is compressed). `None`: not
    /// readable as a whole (streaming, too large, an unknown coding).
    fn read(&self, obj: &StoredObject) -> Option<Vec<u8>> {
        let max = hls::MAX_PLAYLIST_BYTES.max(dash::MAX_MANIFEST_BYTES);
        if obj.body.len() > max as u64 {
            return None;
        }
        let bytes = obj.body.snapshot()?.concat();
        let coding = obj
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        crate::compress::decode_bounded(coding, &bytes, max)
    }

    fn remember_successors(
        &self,
        service: &Service,
        key: &CacheKey,
        all: Vec<(String, Vec<String>)>,
    ) {
        let base = key.as_str();
        let scheme = base.split("://").next().unwrap_or("http");
        let host = base
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        let skip = all.len().saturating_sub(SEGMENTS_PER_PLAYLIST);
        let key_of = |target: &str| {
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target, None),
            };
            CacheKey::new(scheme, host, path, query, &service.resolve(path).key_rules)
        };
        for (segment, after) in all.into_iter().skip(skip) {
            if segment.len() > MAX_URI || after.iter().any(|t| t.len() > MAX_URI) {
                continue;
            }
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

    /// What the last filled copy of the playlist at `path_key` (`scheme://host/path`) said.
    pub fn playlist(&self, path_key: &str) -> Option<PlaylistState> {
        self.playlists.get(path_key)
    }

    /// Caps `policy` (a playlist's, refreshed by a 304) as its last filled copy allows.
    pub fn cap_refreshed(&self, key: &CacheKey, policy: &mut CachePolicy) {
        let path_key = key.as_str().split('?').next().unwrap_or_default();
        if let Some(max) = self.playlists.get(path_key).and_then(|p| p.max_fresh) {
            capped(policy, max);
        }
    }

    /// The segments after the one under `key`, in the last playlist filled that lists it.
    pub fn after(&self, key: &CacheKey) -> Option<Arc<[Successor]>> {
        self.next.get(key)
    }

    /// A prefetch of `key` started.
    pub fn started(&self, key: &CacheKey) {
        self.prefetched.insert(key.clone(), ());
        self.metrics.prefetch("started");
    }

    /// Whether `key` was fetched ahead (in the last few minutes) and not asked for yet.
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

/// A copy of `obj` with its freshness capped to `max` from receipt (see [`capped`]);
/// `None` when it needs none.
fn capped_copy(obj: &Arc<StoredObject>, max: Duration) -> Option<Arc<StoredObject>> {
    let mut policy = obj.policy.clone();
    capped(&mut policy, max).then(|| {
        Arc::new(StoredObject {
            status: obj.status,
            headers: obj.headers.clone(),
            policy,
            variant: obj.variant.clone(),
            body: Arc::clone(&obj.body),
            stored_at: obj.stored_at,
        })
    })
}

/// Lowers `policy`'s freshness so the copy stays fresh at most `max` after it was
/// received, unless a rule's `ttl` set it; whether it did. Counted from the age it arrived
/// with: `Date` and `Age` have whole seconds, so a playlist made 0.2 s ago can arrive
/// looking 0.99 s old, and a cap of a third of a second from its `Date` would store it
/// already stale (every player asking after it would go upstream again).
fn capped(policy: &mut CachePolicy, max: Duration) -> bool {
    let max = policy.initial_age.saturating_add(max);
    let lower =
        policy.freshness.lifetime > max && policy.freshness.source != FreshnessSource::Override;
    if lower {
        policy.freshness.lifetime = max;
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Method, StatusCode};
    use strata_http_cache::{PolicyConfig, ResponseTimes};

    fn media_service() -> Arc<Service> {
        let mut c = crate::config::NodeConfig::single_origin("http://127.0.0.1:1");
        c.services[0].media = Some(crate::config::MediaConfig::default());
        let services =
            crate::service::Services::from_config(&c, &strata_wire::clock::Clock::system())
                .unwrap();
        Arc::clone(services.for_host("any.test").unwrap())
    }

    fn playlist_object(body: String) -> Arc<StoredObject> {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        let now = std::time::SystemTime::now();
        let times = ResponseTimes {
            request_time: now,
            response_time: now,
        };
        let policy = CachePolicy::for_response(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &headers,
            times,
            &PolicyConfig::default(),
        )
        .unwrap();
        Arc::new(StoredObject {
            status: StatusCode::OK,
            headers,
            policy,
            variant: Default::default(),
            body: strata_storage::ChunkedBody::complete(body.into()),
            stored_at: now,
        })
    }

    /// An origin's playlist decides how much the successor table holds: no more than the
    /// last 20,000 segments of one playlist, and no URI over 2 KiB.
    /// A live playlist whose `Date` is most of a second behind (whole seconds), or that
    /// was held upstream (a blocking reload: RFC 9111 §4.2.3 counts the wait as age), is
    /// still fresh for its cap after it arrives, not stored stale.
    #[test]
    fn a_live_cap_counts_from_receipt_not_from_a_date_in_whole_seconds() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_800);
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=6"));
        let date = httpdate::fmt_http_date(now - Duration::from_millis(800));
        headers.insert("date", HeaderValue::from_str(&date).unwrap());
        let times = ResponseTimes {
            request_time: now,
            response_time: now,
        };
        let policy_of = |headers: &HeaderMap| {
            let none = HeaderMap::new();
            let config = PolicyConfig::default();
            CachePolicy::for_response(&Method::GET, &none, StatusCode::OK, headers, times, &config)
                .unwrap()
        };
        let mut policy = policy_of(&headers);
        assert_eq!(policy.initial_age, Duration::from_millis(800));
        assert!(capped(&mut policy, Duration::from_millis(333)));
        assert!(policy.is_fresh(now + Duration::from_millis(300)));
        assert!(!policy.is_fresh(now + Duration::from_millis(340)));
        // Never fresher than the origin says: max-age=1 and 0.8 s old leaves 0.2 s.
        headers.insert("cache-control", HeaderValue::from_static("max-age=1"));
        let mut policy = policy_of(&headers);
        capped(&mut policy, Duration::from_millis(333));
        assert!(!policy.is_fresh(now + Duration::from_millis(210)));
    }

    #[test]
    fn what_a_hostile_playlist_can_make_the_node_remember_is_bounded() {
        let media = Media::new(Budget::new(1, 1), Arc::new(Metrics::new()));
        let service = media_service();
        let long = "x".repeat(3000);
        let mut body = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
        for n in 0..30_000 {
            body.push_str(&format!("#EXTINF:2.0,\ns{n}.ts\n"));
        }
        body.push_str(&format!("#EXTINF:2.0,\n{long}.ts\n#EXTINF:2.0,\nlast.ts\n"));
        let key = CacheKey::new(
            "http",
            "any.test",
            "/v/index.m3u8",
            None,
            &Default::default(),
        );
        let capped = media.playlist_filled(&service, &key, &playlist_object(body), Instant::now());
        let capped = capped.expect("a live playlist is capped");
        assert_eq!(capped.policy.freshness.lifetime, Duration::from_secs(1));
        media.next.run_pending_tasks();
        assert!(media.next.entry_count() <= SEGMENTS_PER_PLAYLIST as u64);
        let key_of =
            |path: &str| CacheKey::new("http", "any.test", path, None, &Default::default());
        assert!(
            media.after(&key_of("/v/s0.ts")).is_none(),
            "the first ones are dropped"
        );
        assert!(media.after(&key_of("/v/s29990.ts")).is_some());
        // The segment before the long URI names it: not remembered.
        assert!(media.after(&key_of("/v/s29999.ts")).is_none());
    }

    #[test]
    fn a_blocking_reload_may_ask_two_segments_ahead_and_one_more_per_target_since() {
        let at = Instant::now();
        let state = PlaylistState {
            last_msn: Some(44),
            target_duration: Duration::from_secs(4),
            hold: Duration::from_secs(3),
            max_fresh: Some(Duration::from_secs(2)),
            at,
        };
        assert_eq!(state.highest_msn(at), Some(46));
        assert_eq!(state.highest_msn(at + Duration::from_secs(1)), Some(46));
        assert_eq!(state.highest_msn(at + Duration::from_secs(4)), Some(47));
        assert_eq!(state.highest_msn(at + Duration::from_secs(9)), Some(48));
        let unknown = PlaylistState {
            last_msn: None,
            ..state
        };
        assert_eq!(unknown.highest_msn(at), None);
    }
}
