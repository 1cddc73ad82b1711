//! The ring and lookup phases: which node of the PoP serves the key, then what the
//! stored copy (if any) and its freshness allow: a hit, stale-while-revalidate (answer,
//! and one background refresh within the budget), or on to the coalescer.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{AUTHORIZATION, CACHE_CONTROL, PRAGMA};
use http::{Method, Response};
use strata_http_cache::cache_status::Fwd;
use strata_http_cache::policy::Decision;
use strata_http_cache::{CacheKey, RequestCacheControl};
use strata_storage::StoredObject;
use strata_wire::clock::Now;

use crate::body::ProxyBody;
use crate::coalesce::Join;
use crate::proxy::Proxy;
use crate::request::parse::Head;
use crate::request::respond;
use crate::request::{Cacheable, Ctx};
use crate::tier::RING_HOP;

// === impl Proxy ===

impl Proxy {
    /// The ring phase: a key another node of the PoP owns (and that is not hot here) is
    /// forwarded to it. `None`: this node serves the key.
    pub(super) async fn ring(
        &self,
        key: &CacheKey,
        head: &Head,
        now: Now,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        if head.headers.contains_key(RING_HOP) {
            return None;
        }
        let owners = self.tier.owners_before_self(key);
        if owners.is_empty() || self.tier.record_hot(key, now.mono) {
            return None;
        }
        // A copy kept while the key was hot is no longer used: free it.
        if self.storage.lookup(key, now.wall).is_some() {
            self.storage.remove(key, now.wall);
        }
        // `None` when every node before us on the ring is down: we are the owner now.
        self.forward_to_owner(&owners, head, ctx).await
    }

    /// The lookup phase: the stored variant, if any, and what its freshness allows. An
    /// answer from storage, or `None`: go upstream, through the coalescer.
    pub(super) fn lookup(
        self: &Arc<Self>,
        req: &mut Cacheable,
        now: SystemTime,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        req.stored = match self.storage.lookup(&req.key, now) {
            None => {
                ctx.status.fwd = Some(Fwd::UriMiss);
                None
            }
            Some(set) => match set.select(&req.head.headers) {
                None => {
                    ctx.status.fwd = Some(Fwd::VaryMiss);
                    None
                }
                Some(obj) => Some(Arc::clone(obj)),
            },
        };
        let obj = req.stored.as_ref()?;
        match obj
            .policy
            .evaluate(&req.req_cc, now, req.service.stale_while_revalidate)
        {
            Decision::Fresh | Decision::StaleAccepted => Some(self.hit(obj, &req.head, now, ctx)),
            Decision::StaleWhileRevalidate => {
                ctx.status.detail = Some("stale-while-revalidate".into());
                self.revalidate_in_background(req, obj);
                Some(self.hit(obj, &req.head, now, ctx))
            }
            Decision::Revalidate => {
                let cc = &req.req_cc;
                let by_request = cc.no_cache || cc.max_age.is_some() || cc.min_fresh.is_some();
                ctx.status.fwd = Some(if by_request && obj.policy.is_fresh(now) {
                    Fwd::Request
                } else {
                    Fwd::Stale
                });
                None
            }
        }
    }

    pub(super) fn hit(
        &self,
        obj: &Arc<StoredObject>,
        head: &Head,
        now: SystemTime,
        ctx: &mut Ctx,
    ) -> Response<ProxyBody> {
        ctx.status.hit = true;
        ctx.status.fwd = None;
        ctx.status.ttl = Some(obj.policy.ttl(now));
        respond::from_object(obj, None, &head.method, &head.headers, now)
    }

    /// stale-while-revalidate: one background revalidation per object, within the
    /// background budget (over it, the stale copy is served and nothing is refreshed). It
    /// goes through the coalescer, so it also serves as the fill for requests that must
    /// wait.
    fn revalidate_in_background(self: &Arc<Self>, req: &Cacheable, obj: &Arc<StoredObject>) {
        // The budget first: a refresh that cannot run is never registered, so nobody
        // joins it and sees it fail.
        let Ok(permit) = self.background.admit(req.head.client.ip()) else {
            self.metrics.fill_cancelled("budget");
            return;
        };
        if let Join::Leader(inflight) = self.coalescer.join(&req.key, |_| false, || None) {
            let mut refresh = req.clone();
            refresh.head.method = Method::GET;
            // The refresh is for everyone: not with this client's credentials or directives.
            for name in [AUTHORIZATION, CACHE_CONTROL, PRAGMA] {
                refresh.head.headers.remove(name);
            }
            refresh.req_cc = RequestCacheControl::default();
            refresh.stored = Some(Arc::clone(obj));
            self.spawn_fill(&inflight, refresh, Some(permit));
        }
    }
}
