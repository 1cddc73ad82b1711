//! Segment prefetch (`[service.media] prefetch`): when a player asks for a media segment
//! that a stored playlist lists, the segments after it are fetched in the background, each
//! through the coalescer (a player that asks for one meanwhile joins that fill rather than
//! asking again), within `limits.max_prefetches` (node) and
//! `limits.max_prefetches_per_client`: past either, none are started, and a player's own
//! misses never wait for a prefetch. Only keys this node owns in its ring are fetched ahead
//! (the owner prefetches its own when the request reaches it).

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{
    AUTHORIZATION, CACHE_CONTROL, COOKIE, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, PRAGMA, RANGE,
};
use http::{Method, Uri};
use strata_http_cache::RequestCacheControl;
use strata_media::MediaClass;

use super::Cacheable;
use crate::coalesce::Join;
use crate::proxy::Proxy;

impl Proxy {
    /// `req` is for a media segment: counts a prefetch of it as used, and fetches ahead
    /// the segments after it that are not stored or on their way.
    pub(super) fn prefetch_after(self: &Arc<Self>, req: &Cacheable, now: SystemTime) {
        self.media.asked(&req.key);
        let Some(next) = self.media.after(&req.key) else {
            return;
        };
        for successor in next.iter() {
            let key = &successor.key;
            // Fetched ahead lately (stored or not: a 404 is not asked for again and again),
            // known uncacheable, or another node's: not here.
            if self.media.is_prefetched(key)
                || self.hit_for_pass.contains_key(key)
                || !self.tier.owners_before_self(key).is_empty()
                || self.storage.lookup(key, now).is_some()
            {
                continue;
            }
            let Ok(uri) = successor.target.parse::<Uri>() else {
                continue;
            };
            // Only media (a playlist can name any path of the site), and not what a rule
            // keeps out of the cache.
            let resolved = req.service.resolve(uri.path());
            if !matches!(resolved.media, Some(MediaClass::Segment | MediaClass::Init))
                || resolved.bypass
            {
                continue;
            }
            // The budget before the coalescer: a prefetch that cannot run is never
            // registered, so no player joins it and sees it fail.
            let Ok(permit) = self.media.budget.admit(req.head.client.ip()) else {
                self.media.skipped("budget");
                return;
            };
            // Someone is fetching it already: that fill serves.
            let Join::Leader(inflight) = self.coalescer.join(key, |_| false, || None) else {
                continue;
            };
            let mut ahead = req.clone();
            ahead.head.method = Method::GET;
            ahead.resolved = resolved;
            ahead.head.uri = uri;
            // For every player: not with this one's credentials, directives or range.
            for name in [
                AUTHORIZATION,
                COOKIE,
                CACHE_CONTROL,
                PRAGMA,
                RANGE,
                IF_RANGE,
                IF_MATCH,
                IF_NONE_MATCH,
                IF_MODIFIED_SINCE,
                IF_UNMODIFIED_SINCE,
            ] {
                ahead.head.headers.remove(name);
            }
            ahead.req_cc = RequestCacheControl::default();
            ahead.stored = None;
            ahead.interim = None;
            ahead.key = key.clone();
            self.media.started(key);
            self.spawn_fill(&inflight, ahead, Some(permit));
        }
    }
}
