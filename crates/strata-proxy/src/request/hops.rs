//! The upstream phase: the exchange with the next hop (ring owner, parent shields,
//! origins; see `upstream::send` and `tier`), and what its answer becomes: a refreshed
//! object, a storable one, or a response passed through. Requests the cache does not
//! handle (other methods, bypass rules) are passed here too, and a successful unsafe
//! method invalidates what it names (RFC 9111 §4.4).

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, AGE, CONTENT_LENGTH, CONTENT_LOCATION, DATE, LOCATION,
};
use http::{Method, Request, Response, StatusCode, Uri};
use strata_http_cache::accept_encoding::Coding;
use strata_http_cache::cache_status::Fwd;
use strata_http_cache::conditional::{not_modified_selects, refresh_headers, validation_headers};
use strata_http_cache::vary::{vary_of, VariantKey};
use strata_http_cache::{Authority, CacheKey, CachePolicy, ResponseTimes};
use strata_storage::{ChunkedBody, StoredObject};

use crate::body::{ProxyBody, RequestBody};
use crate::coalesce::{FetchMeta, Passed};
use crate::compress::{self, Encoder};
use crate::error::ProxyError;
use crate::fill::{Fill, Interest};
use crate::forward::{self, Outbound, Purpose, CACHE_STATUS};
use crate::proxy::Proxy;
use crate::purge::SCHEMES;
use crate::request::miss::Storable;
use crate::request::parse::Head;
use crate::request::{Cacheable, Ctx};
use crate::service::Service;
use crate::tier::{Hop, HopKind, RING_HOP};
use crate::upstream::request_body::watched;
use crate::upstream::send::{path_hash, FromUpstream, SendPolicy};
use crate::upstream::UpstreamError;

/// What one upstream exchange for the cache produced.
pub(super) enum Fetched {
    /// A 304 refreshed the stored object.
    Refreshed(Arc<StoredObject>, FetchMeta),
    /// A storable response; its fill copies the body into the object. (Boxed: it is
    /// several times the size of the other answers.)
    Storable(Box<Storable>),
    /// Not storable: stream it through.
    Pass(Passed, FetchMeta),
}

/// A new object for a storable response: its fields as stored (private ones and upstream
/// tiers' `Cache-Status` removed), the variant it answers, an empty body.
fn new_object(
    parts: &http::response::Parts,
    policy: CachePolicy,
    req: &Cacheable,
    stored_at: SystemTime,
) -> StoredObject {
    let mut headers = strata_storage::owned_headers(&parts.headers);
    for name in &policy.private_fields {
        headers.remove(name);
    }
    // Upstream tiers' Cache-Status describes this fill, not later hits.
    headers.remove(CACHE_STATUS);
    StoredObject {
        status: parts.status,
        headers,
        policy,
        variant: VariantKey::for_request(&vary_of(&parts.headers), &req.head.headers),
        body: ChunkedBody::new(),
        stored_at,
    }
}

/// Marks a request to a ring peer so that it serves the key itself.
fn with_ring_hop(
    mut req: Request<crate::upstream::UpstreamBody>,
    kind: HopKind,
    node: &str,
) -> Request<crate::upstream::UpstreamBody> {
    let headers = req.headers_mut();
    headers.remove(RING_HOP);
    if kind == HopKind::Peer {
        if let Ok(v) = HeaderValue::from_str(node) {
            headers.insert(RING_HOP, v);
        }
    }
    req
}

// === impl Proxy ===

impl Proxy {
    /// One upstream exchange for the cache. With `stored`, the request is conditional on
    /// its validators and a matching 304 refreshes it.
    pub(super) async fn fetch(
        &self,
        req: &Cacheable,
        stored: Option<&Arc<StoredObject>>,
    ) -> Result<Fetched, ProxyError> {
        let (service, head) = (&req.service, &req.head);
        let validators = stored
            .map(|o| validation_headers(&o.headers))
            .unwrap_or_default();
        let request_time = self.clock.wall();
        // A hot key on a node that does not own it is filled from its owner first.
        // A slice's owner is its object's (hot objects are filled from it).
        let mut hops = if head.headers.contains_key(RING_HOP) {
            Vec::new()
        } else if req.slice.is_some() {
            let whole = CacheKey::from_text(req.key.whole().to_string());
            self.tier.owners_before_self(&whole)
        } else {
            self.tier.owners_before_self(&req.key)
        };
        hops.extend(self.tier.parents().iter().cloned());
        hops.extend(service.origin_hops());
        // A stale copy that may stand in for a failure is better than an origin every
        // breaker calls down: only without one does panic routing try such an origin.
        let stale_can_answer = stored.is_some_and(|o| {
            o.policy
                .stale_if_error(request_time, service.stale_if_error)
        });
        let policy = SendPolicy {
            failover: true,
            url: path_hash(head.uri.path()),
            body: None,
            panic_routing: !stale_can_answer,
            interim: req.interim.as_ref(),
        };
        let target = strata_http_cache::key::keyed_target(
            head.uri.path(),
            head.uri.query(),
            &req.resolved.key_rules,
        );
        // A HEAD miss is fetched as GET so the object can be stored (as nginx and Varnish do).
        let mut sent = self
            .sender
            .send(&hops, policy, |hop| {
                let out = Outbound {
                    method: Method::GET,
                    origin: &hop.state.origin,
                    path_and_query: &target,
                    host: self.host_for(service, head, hop.kind),
                    purpose: Purpose::Fill {
                        validators: &validators,
                        slice: req.slice,
                    },
                    body: None,
                };
                let req = self.forwarder.request(head, out)?;
                Ok(with_ring_hop(req, hop.kind, &self.node))
            })
            .await?;
        let times = ResponseTimes {
            request_time,
            response_time: self.clock.wall(),
        };
        let meta = FetchMeta {
            fwd_status: Some(sent.resp.status().as_u16()),
            upstream: Some(std::mem::take(&mut sent.upstream)),
            ..FetchMeta::default()
        };
        if sent.resp.status() != StatusCode::NOT_MODIFIED {
            return Ok(self.fetched(req, stored, sent, meta, times));
        }
        let selects = |o: &&Arc<StoredObject>| {
            not_modified_selects(&o.headers, sent.resp.headers())
                || compress::weakened_from(&o.headers, sent.resp.headers())
        };
        match stored.filter(selects) {
            Some(old) => Ok(self.refreshed(req, old, sent.resp.headers(), meta, times)),
            // A 304 that selects nothing we hold (RFC 9111 §4.3.4): ask again without
            // validators rather than hand a bare 304 to a client that did not ask for one.
            None if stored.is_some() => {
                drop(sent);
                Box::pin(self.fetch(req, None)).await
            }
            None => Ok(Fetched::Pass((sent.resp, Some(sent.slot)), meta)),
        }
    }

    /// A 304 that selects the stored object `old`: its fields updated from the 304, and
    /// stored again if still storable.
    fn refreshed(
        &self,
        req: &Cacheable,
        old: &Arc<StoredObject>,
        not_modified: &HeaderMap,
        mut meta: FetchMeta,
        times: ResponseTimes,
    ) -> Fetched {
        let response_time = times.response_time;
        let mut headers = old.headers.clone();
        let mut fresh = not_modified.clone();
        forward::clean_upstream_headers(&mut fresh);
        fresh.remove(CACHE_STATUS);
        refresh_headers(&mut headers, &fresh);
        compress::keep_after_refresh(&old.headers, &mut headers);
        // Age and Date describe the 304, not the original response: a stale Age kept from
        // the first answer would make the refreshed copy born old.
        if !fresh.contains_key(AGE) {
            headers.remove(AGE);
        }
        if !fresh.contains_key(DATE) {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(response_time)) {
                headers.insert(DATE, v);
            }
        }
        match CachePolicy::for_response(
            &Method::GET,
            &req.head.headers,
            old.status,
            &headers,
            times,
            &req.resolved.policy,
        ) {
            Ok(mut policy) => {
                if req.service.media.is_some() {
                    self.media.cap_refreshed(&req.key, &mut policy);
                }
                let headers = strata_storage::owned_headers(&headers);
                let refreshed = Arc::new(old.refreshed(headers, policy, response_time));
                meta.stored = self.storage.replace(&req.key, old, Arc::clone(&refreshed));
                Fetched::Refreshed(refreshed, meta)
            }
            Err(reason) => {
                // Still valid for this request, but no longer storable (unless only this
                // request's directives say so).
                if !reason.is_request_caused() {
                    self.storage.remove(&req.key, response_time);
                }
                meta.detail = Some(reason.detail().into());
                Fetched::Refreshed(
                    Arc::new(old.refreshed(headers, old.policy.clone(), response_time)),
                    meta,
                )
            }
        }
    }

    /// A full response: storable (its body still to be read into a new object), or
    /// passed through. `stored` is dropped when the object changed into something we may
    /// not keep.
    fn fetched(
        &self,
        req: &Cacheable,
        stored: Option<&Arc<StoredObject>>,
        sent: FromUpstream,
        mut meta: FetchMeta,
        times: ResponseTimes,
    ) -> Fetched {
        let (mut parts, body) = sent.resp.into_parts();
        forward::clean_upstream_headers(&mut parts.headers);
        if let Some(asked) = req.slice {
            if let Err(why) = super::slice::as_slice(&mut parts, asked) {
                // Never stored under the slice's key: it is not that slice.
                meta.detail = Some(why.into());
                meta.uncacheable = true;
                return Fetched::Pass((Response::from_parts(parts, body), Some(sent.slot)), meta);
            }
        }
        let declared_len = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let policy = match CachePolicy::for_response(
            &Method::GET,
            &req.head.headers,
            parts.status,
            &parts.headers,
            times,
            &req.resolved.policy,
        ) {
            Ok(_) if declared_len.is_some_and(|l| l > self.max_object_size) => {
                Err(("too-large", false))
            }
            Ok(p) => Ok(p),
            Err(reason) => Err((reason.detail(), reason.is_request_caused())),
        };
        match policy {
            Ok(policy) => {
                // A slice is bytes of the representation as the origin has it.
                let encoder = match self.compression && req.slice.is_none() {
                    true => self.compression_for(req, &mut parts),
                    false => None,
                };
                let object = Arc::new(new_object(&parts, policy, req, times.response_time));
                let mut fill = self.fill_for(req, &object, sent.slot);
                fill.encoder = encoder;
                Fetched::Storable(Box::new(Storable {
                    fill,
                    object,
                    first_headers: parts.headers,
                    body,
                    meta,
                }))
            }
            Err((detail, request_caused)) => {
                meta.detail = Some(detail.to_string());
                meta.uncacheable = !request_caused && !parts.status.is_server_error();
                if stored.is_some() && parts.status.is_success() && !request_caused {
                    // The object changed into something we may not keep: drop the old copy.
                    self.storage.remove(&req.key, times.response_time);
                }
                Fetched::Pass((Response::from_parts(parts, body), Some(sent.slot)), meta)
            }
        }
    }

    /// The fill that copies a storable body into `object`, holding the origin connection
    /// slot until it ends.
    fn fill_for(
        &self,
        req: &Cacheable,
        object: &Arc<StoredObject>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Fill {
        Fill {
            key: req.key.clone(),
            object: Arc::clone(object),
            storage: Arc::clone(&self.storage),
            max_object_size: self.max_object_size,
            idle: self.timeouts.idle,
            on_too_large: None,
            before_store: self.before_store(req),
            slot: Some(slot),
            discard: Arc::default(),
            clock: self.clock.clone(),
            encoder: None,
            interest: Interest {
                inflight: None,
                budget: Arc::clone(&self.background),
                client: req.head.client.ip(),
                permit: None,
                on_abandon: None,
            },
        }
    }

    /// What to do once `req`'s body is in, for a media service: a playlist (by path, or by
    /// type for paths that name no class) is read for what it says (a live one stored with
    /// its freshness capped), and the bytes a prefetch stored are counted.
    fn before_store(&self, req: &Cacheable) -> Option<crate::fill::BeforeStore> {
        req.service.media.as_ref()?;
        let prefetch = self.media.is_prefetched(&req.key);
        let playlist = req.resolved.media.is_none_or(|class| {
            matches!(
                class,
                strata_media::MediaClass::Playlist | strata_media::MediaClass::Manifest
            )
        });
        if !prefetch && !playlist {
            return None;
        }
        let media = Arc::clone(&self.media);
        let (service, key, clock) = (
            Arc::clone(&req.service),
            req.key.clone(),
            self.clock.clone(),
        );
        Some(Box::new(move |obj: &Arc<StoredObject>| {
            if prefetch {
                media.stored(obj.body.len());
            }
            if !playlist {
                return None;
            }
            media.playlist_filled(&service, &key, obj, clock.mono())
        }))
    }

    /// Whether a storable answer is stored compressed (its fields rewritten to say so), by
    /// the coding the request asks for (reduced at parse). See `compress`.
    fn compression_for(
        &self,
        req: &Cacheable,
        parts: &mut http::response::Parts,
    ) -> Option<Box<Encoder>> {
        let wanted = req
            .head
            .headers
            .get(ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .and_then(Coding::from_token)
            .unwrap_or(Coding::Identity);
        match compress::decide(parts.status, &mut parts.headers, wanted) {
            compress::Decision::Compress(coding) => Encoder::new(coding).map(Box::new),
            compress::Decision::VaryOnly | compress::Decision::Untouched => None,
        }
    }

    /// The `Host` sent to a hop: peers and shields get the client's (canonical), so they
    /// resolve the same service; origins get the service's `origin_host` when set.
    fn host_for<'a>(&self, service: &'a Service, head: &'a Head, kind: HopKind) -> &'a str {
        match (kind, service.origin_host.as_deref()) {
            (HopKind::Origin, Some(host)) => host,
            _ => head.host(),
        }
    }

    /// Forwards a request to the key's owner in this PoP, walking the ring past owners
    /// that are down, and streams its answer back without storing it: each object is
    /// stored once per PoP. `None` when every node before this one is down.
    pub(super) async fn forward_to_owner(
        &self,
        owners: &[Hop],
        head: &Head,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        let interim = ctx.interim.get();
        let policy = SendPolicy {
            failover: true,
            url: path_hash(head.uri.path()),
            body: None,
            // Every owner down: this node serves the key itself.
            panic_routing: false,
            interim: interim.as_ref(),
        };
        let sent = self
            .sender
            .send(owners, policy, |hop| {
                let out = Outbound {
                    method: head.method.clone(),
                    origin: &hop.state.origin,
                    path_and_query: head.path_and_query(),
                    host: head.host(),
                    purpose: Purpose::Pass,
                    body: None,
                };
                let req = self.forwarder.request(head, out)?;
                Ok(with_ring_hop(req, hop.kind, &self.node))
            })
            .await;
        let FromUpstream {
            resp,
            upstream,
            slot,
        } = match sent {
            Ok(sent) => sent,
            Err(e) => {
                tracing::debug!(error = %e.detail(), "no ring owner reachable, serving the key here");
                return None;
            }
        };
        ctx.status.fwd = Some(Fwd::Bypass);
        ctx.status.fwd_status = Some(resp.status().as_u16());
        ctx.status.detail = Some(format!("owner={upstream}"));
        ctx.upstream = Some(upstream);
        Some(self.respond_pass((resp, Some(slot)), head))
    }

    /// Forwards a request the cache does not handle. A successful unsafe method invalidates
    /// the target URI and same-origin `Location`/`Content-Location` (RFC 9111 §4.4; see
    /// `Service::invalidates` for which methods and answers).
    pub(super) async fn pass(
        &self,
        service: &Service,
        head: &Head,
        body: RequestBody,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (body, progress) = if head.forwards_body() {
            let (body, progress) = watched(body);
            (Some(body), Some(progress))
        } else {
            (None, None)
        };
        // The body can be sent once, so a pass is never retried on another origin.
        let body = std::sync::Mutex::new(body);
        let hops = service.origin_hops();
        let interim = ctx.interim.get();
        let policy = SendPolicy {
            failover: false,
            url: path_hash(head.uri.path()),
            body: progress.as_ref(),
            panic_routing: true,
            interim: interim.as_ref(),
        };
        let FromUpstream {
            resp,
            upstream,
            slot,
        } = self
            .sender
            .send(&hops, policy, |hop| {
                let body = body.lock().unwrap_or_else(|e| e.into_inner()).take();
                if head.forwards_body() && body.is_none() {
                    return Err(ProxyError::Upstream(UpstreamError::Protocol));
                }
                let out = Outbound {
                    method: head.method.clone(),
                    origin: &hop.state.origin,
                    path_and_query: head.path_and_query(),
                    host: self.host_for(service, head, hop.kind),
                    purpose: Purpose::Pass,
                    body,
                };
                self.forwarder.request(head, out)
            })
            .await?;
        ctx.upstream = Some(upstream);
        ctx.status.fwd_status = Some(resp.status().as_u16());
        if service.invalidates(&head.method, resp.status()) {
            self.invalidate_uri(service, &head.authority, &head.uri);
            for name in [LOCATION, CONTENT_LOCATION] {
                let target = resp.headers().get(name).and_then(|v| v.to_str().ok());
                if let Some(uri) = target.and_then(|t| t.parse::<Uri>().ok()) {
                    // Only same-origin targets (§4.4): relative, or our own authority.
                    let same_origin = match uri.authority() {
                        None => true,
                        Some(a) => Authority::parse(a.as_str().as_bytes(), 80)
                            .is_ok_and(|a| a == head.authority),
                    };
                    if same_origin {
                        self.invalidate_uri(service, &head.authority, &uri);
                    }
                }
            }
        }
        Ok(self.respond_pass((resp, Some(slot)), head))
    }

    fn invalidate_uri(&self, service: &Service, authority: &Authority, uri: &Uri) {
        if !uri.path().starts_with('/') {
            return;
        }
        let rules = service.resolve(uri.path()).key_rules;
        // The resource changed, however clients reach it.
        for scheme in SCHEMES {
            let key = CacheKey::new(
                scheme,
                service.key_host(authority.as_str()),
                uri.path(),
                uri.query(),
                &rules,
            );
            self.coalescer.invalidate(&key);
            // A purge of the key, not a removal: it takes the object's slices too.
            let now = self.clock.wall();
            let purge = strata_storage::Purge {
                scope: strata_storage::Scope::Keys(vec![key]),
                soft: false,
                issued_at: now,
            };
            self.storage.purge(&purge, now);
        }
    }
}
