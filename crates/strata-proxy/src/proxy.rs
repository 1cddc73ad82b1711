//! The request path. Phases, in order (see ARCHITECTURE.md):
//!
//! 1. **parse**: limits (header size/count are enforced by hyper, 431; URI length here,
//!    414), `Host`, `CDN-Loop` (508);
//! 2. **service**: `Host` → service, path → rule (bypass, key rules, TTL override);
//! 3. **cache key**: scheme + host + path + normalised query;
//! 4. **lookup**: fresh hit → respond; stale within stale-while-revalidate → respond and
//!    revalidate in the background; otherwise validate or fetch;
//! 5. **coalesce and fill**: one upstream request per object however many clients miss at
//!    once (see `coalesce`); the fill runs on its own task and clients stream from it;
//! 6. **response**: `Age`, conditionals, ranges, `Cache-Status`, `Via`; access log.
//!
//! Unsafe methods pass through, and a success invalidates the URI (RFC 9111 §4.4).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{
    HeaderMap, HeaderValue, AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION,
    DATE, HOST, LOCATION, PRAGMA, VIA,
};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use strata_http_cache::cache_status::Fwd;
use strata_http_cache::conditional::{not_modified_selects, refresh_headers, validation_headers};
use strata_http_cache::policy::Decision;
use strata_http_cache::vary::{vary_of, VariantKey};
use strata_http_cache::{CacheKey, CachePolicy, CacheStatus, RequestCacheControl, ResponseTimes};
use strata_storage::{ChunkedBody, Storage, StoredObject};
use tokio::sync::OwnedSemaphorePermit;

use crate::access_log::{AccessLog, AccessRecord};
use crate::body::{ClientBody, IdleTimeout, ProxyBody};
use crate::coalesce::{Coalescer, FetchMeta, FillGuard, Inflight, Join, Outcome, Passed};
use crate::config::NodeConfig;
use crate::error::ProxyError;
use crate::fill::Fill;
use crate::forward::{self, Purpose, CACHE_STATUS};
use crate::health_report::HealthCounters;
use crate::metrics::Metrics;
use crate::respond;
use crate::service::{Resolved, Service, Services};
use crate::tier::{Hop, HopKind, Tier, HEALTH_PATH, RING_HOP};
use crate::upstream::{Timeouts, UpstreamBody, UpstreamClient, UpstreamError};

/// How many times a follower looks again after a fill that could not serve it.
const MAX_JOIN_ATTEMPTS: usize = 3;

/// Shared state of one node's data plane.
pub struct Proxy {
    node: String,
    /// `Via: 1.1 <node>`, built once.
    via: HeaderValue,
    services: Services,
    storage: Arc<dyn Storage>,
    upstream: UpstreamClient,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
    max_uri_length: usize,
    max_object_size: u64,
    timeouts: Timeouts,
    coalescer: Coalescer,
    purge_method_enabled: bool,
    purge_allow: Vec<ipnet::IpNet>,
    /// Keys that recently answered uncacheable, with the time the mark expires.
    hit_for_pass: moka::sync::Cache<CacheKey, Instant>,
    tier: Tier,
    pop: String,
    role: &'static str,
    health: HealthCounters,
}

/// The parts of a client request the cache path needs, cheap to share with fill tasks.
#[derive(Clone)]
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    host: String,
    client: SocketAddr,
}

impl Head {
    fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }
}

/// Facts about one request gathered on the way through, for the response phase and log.
struct Ctx {
    status: CacheStatus,
    upstream: Option<String>,
}

impl Ctx {
    fn absorb(&mut self, meta: &FetchMeta) {
        self.status.fwd_status = meta.fwd_status;
        self.status.stored = meta.stored;
        if meta.detail.is_some() {
            self.status.detail = meta.detail.clone();
        }
        if meta.upstream.is_some() {
            self.upstream = meta.upstream.clone();
        }
    }
}

/// What one upstream exchange for the cache produced.
enum Fetched {
    /// A 304 refreshed the stored object.
    Refreshed(Arc<StoredObject>, FetchMeta),
    /// A storable response; `fill` copies its body into the object.
    Storable {
        object: Arc<StoredObject>,
        first_headers: HeaderMap,
        fill: Fill,
        body: Incoming,
        meta: FetchMeta,
    },
    /// Not storable: stream it through.
    Pass(Passed, FetchMeta),
}

/// A response head from an origin, and the connection slot it occupies until its body is
/// done.
struct FromOrigin {
    resp: Response<Incoming>,
    origin: String,
    slot: OwnedSemaphorePermit,
}

// === impl Proxy ===

impl Proxy {
    pub fn new(
        config: &NodeConfig,
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    ) -> Result<Self, String> {
        Ok(Self {
            via: HeaderValue::from_str(&format!("1.1 {}", config.node.name))
                .map_err(|_| "node.name is not a valid header value".to_string())?,
            node: config.node.name.clone(),
            purge_method_enabled: config.purge.http_method,
            purge_allow: config.purge.allowed_networks(),
            services: Services::from_config(config)?,
            storage,
            upstream: UpstreamClient::new(config.limits.upstream_connect_timeout.0),
            metrics,
            access_log,
            max_uri_length: config.limits.max_uri_length,
            max_object_size: config.cache.max_object_size.0,
            timeouts: Timeouts {
                first_byte: config.limits.upstream_first_byte_timeout.0,
                idle: config.limits.upstream_idle_timeout.0,
            },
            coalescer: Coalescer::default(),
            hit_for_pass: moka::sync::Cache::new(100_000),
            tier: Tier::new(config)?,
            pop: config.node.pop.clone().unwrap_or_default(),
            role: config.node.role.as_str(),
            health: HealthCounters::default(),
        })
    }

    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    /// Topology state for metrics.
    pub fn tier_sample(&self) -> crate::metrics::TierSample {
        let now = Instant::now();
        crate::metrics::TierSample {
            upstreams: self
                .tier
                .upstreams()
                .map(|hop| (hop.kind.as_str(), hop.name.clone(), !hop.state.refuses(now)))
                .collect(),
            hot: self.tier.hot_keys(now, usize::MAX),
        }
    }

    /// What the health endpoint answers: this node's counters, load, and the services it
    /// cannot reach any upstream for (every origin's breaker open and no parent shield up).
    pub fn health_report(&self) -> strata_health::HealthReport {
        let now = Instant::now();
        let parent_up = self
            .tier
            .upstreams()
            .any(|hop| hop.kind == HopKind::Parent && !hop.state.refuses(now));
        let unreachable = if parent_up {
            Vec::new()
        } else {
            self.services
                .all()
                .iter()
                .filter(|s| {
                    let origins = s.origins.all();
                    !origins.is_empty() && origins.iter().all(|o| o.refuses(now))
                })
                .map(|s| s.name.clone())
                .collect()
        };
        self.health
            .report(&self.node, &self.pop, self.role, unreachable)
    }

    /// Origin states for metrics.
    pub fn origin_samples(&self) -> Vec<crate::metrics::OriginSample> {
        let mut out = Vec::new();
        for service in self.services.all() {
            for o in service.origins.all() {
                out.push(crate::metrics::OriginSample {
                    service: service.name.clone(),
                    origin: o.name(),
                    breaker_open: o.breaker_state() != "closed",
                    connections: o.busy(),
                });
            }
        }
        out
    }

    /// Applies a purge request to this node: storage, then fills in progress. Pattern
    /// purges take effect at once (checked at lookup) and are swept in the background.
    pub fn purge(
        self: &Arc<Self>,
        request: &crate::purge::PurgeRequest,
    ) -> Result<crate::purge::PurgeReport, String> {
        let now = SystemTime::now();
        let id = format!(
            "{:x}",
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        self.purge_at(request, now, id)
    }

    /// Applies a purge issued elsewhere (the control plane) at `issued_at`.
    pub fn purge_at(
        self: &Arc<Self>,
        request: &crate::purge::PurgeRequest,
        issued_at: SystemTime,
        id: String,
    ) -> Result<crate::purge::PurgeReport, String> {
        let started = Instant::now();
        let now = SystemTime::now();
        let purges = request.resolve(&self.services, issued_at)?;
        let mut objects = 0;
        let mut sweeping = false;
        for p in &purges {
            objects += self.storage.purge(p, now);
            self.coalescer.invalidate_covered(p);
            sweeping |= matches!(p.scope, strata_storage::Scope::Patterns(_));
        }
        if sweeping {
            let (storage, sweep_id) = (Arc::clone(&self.storage), id.clone());
            tokio::task::spawn_blocking(move || {
                let swept = storage.sweep(SystemTime::now());
                tracing::info!(id = %sweep_id, objects = swept, "pattern purge swept");
            });
        }
        tracing::info!(%id, objects, soft = request.soft, "purge applied");
        Ok(crate::purge::PurgeReport {
            id,
            objects,
            applied_us: started.elapsed().as_micros() as u64,
            sweeping,
        })
    }

    /// `PURGE <path>` on the edge listener: purges that URL (or, with a `Surrogate-Key`
    /// request field, those tags); `Strata-Soft-Purge: 1` makes it soft. Off unless
    /// configured, and only from allowed networks.
    fn purge_method(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        host: &str,
        client: SocketAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if !self.purge_method_enabled {
            return Err(ProxyError::PurgeDisabled);
        }
        if !self
            .purge_allow
            .iter()
            .any(|net| net.contains(&client.ip()))
        {
            return Err(ProxyError::PurgeForbidden);
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let mut request = crate::purge::PurgeRequest {
            soft: header("strata-soft-purge") == Some("1"),
            ..Default::default()
        };
        match header("surrogate-key") {
            Some(tags) => request.tags = tags.split_whitespace().map(String::from).collect(),
            None => {
                let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
                request.urls = vec![format!("http://{host}{pq}")];
            }
        }
        let report = self.purge(&request).map_err(ProxyError::BadPurge)?;
        let json = serde_json::to_string(&report).unwrap_or_default() + "\n";
        let mut resp = Response::new(ProxyBody::full(json.clone()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(json.len()));
        Ok(resp)
    }

    /// Fills in progress.
    pub fn fills_in_progress(&self) -> usize {
        self.coalescer.in_progress()
    }

    /// Handles one client request. Never fails: errors become responses here.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<ClientBody>, Infallible> {
        let started = Instant::now();
        let _in_flight = self.health.begin();
        // Probes are not traffic: counting them would dilute a quiet node's error share.
        let probe = req.uri().path() == HEALTH_PATH;
        // What the access log needs from the request, taken before it is consumed (and
        // only when there is a log to write).
        let logged = self.access_log.enabled().then(|| {
            (
                SystemTime::now(),
                req.method().to_string(),
                request_host(&req).unwrap_or_default(),
                req.uri().path().to_string(),
            )
        });
        let mut ctx = Ctx {
            status: CacheStatus::new(&self.node),
            upstream: None,
        };

        let mut resp = match Arc::clone(&self).process(req, client, &mut ctx).await {
            Ok(resp) => resp,
            Err(e) => {
                ctx.status.detail = Some(e.detail());
                e.into_response()
            }
        };

        // Response phase common to every answer.
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&ctx.status.to_string()) {
            headers.append(CACHE_STATUS, v);
        }
        if headers.contains_key(VIA) {
            forward::append_list(headers, VIA, &format!("1.1 {}", self.node));
        } else {
            headers.insert(VIA, self.via.clone());
        }
        forward::strip_cdn_only(headers);

        let label = ctx.status.label();
        self.metrics.request(label, started.elapsed());
        if !probe {
            self.health
                .response(resp.status().as_u16(), started.elapsed());
        }
        let record = logged.map(|(arrived, method, host, path)| AccessRecord {
            time: humantime::format_rfc3339_millis(arrived).to_string(),
            client: client.ip().to_string(),
            method,
            host,
            path,
            status: resp.status().as_u16(),
            cache_status: label.to_string(),
            bytes: 0,
            duration_ms: 0.0,
            upstream: ctx.upstream,
        });
        Ok(resp.map(|body| {
            body.logged(
                record,
                started,
                self.access_log.clone(),
                Arc::clone(&self.metrics),
            )
        }))
    }

    async fn process(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // === parse ===
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > self.max_uri_length {
            return Err(ProxyError::UriTooLong);
        }
        if req.uri().path() == HEALTH_PATH && req.method() == Method::GET {
            ctx.status.fwd = Some(Fwd::Bypass);
            ctx.status.detail = Some("health".into());
            let json = serde_json::to_string(&self.health_report()).unwrap_or_default() + "\n";
            let mut resp = respond::text(StatusCode::OK, json);
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(resp);
        }
        let host = request_host(&req).ok_or(ProxyError::BadRequest("missing host"))?;
        if forward::is_loop(req.headers(), &self.node) {
            return Err(ProxyError::Loop);
        }
        if req.method().as_str() == "PURGE" {
            return self.purge_method(&req, &host, client);
        }

        // === service ===
        let service = Arc::clone(
            self.services
                .for_host(&host)
                .ok_or(ProxyError::UnknownHost)?,
        );
        let (parts, body) = req.into_parts();
        let resolved = service.resolve(parts.uri.path());
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            host,
            client,
        };

        let cacheable_method = head.method == Method::GET || head.method == Method::HEAD;
        if !cacheable_method || resolved.bypass {
            ctx.status.fwd = Some(if resolved.bypass && cacheable_method {
                Fwd::Bypass
            } else {
                Fwd::Method
            });
            return self.pass(&service, &head, body.boxed(), ctx).await;
        }

        // === cache key and lookup ===
        let key = CacheKey::new(
            "http",
            service.key_host(&head.host),
            head.uri.path(),
            head.uri.query(),
            &resolved.key_rules,
        );
        // === ring: the key's owner in this PoP serves it ===
        if !head.headers.contains_key(RING_HOP) {
            let owners = self.tier.owners_before_self(&key);
            if !owners.is_empty() && !self.tier.record_hot(&key, Instant::now()) {
                // A copy kept while the key was hot is no longer used: free it.
                if self.storage.lookup(&key).is_some() {
                    self.storage.remove(&key);
                }
                if let Some(resp) = self.forward_to_owner(&owners, &head, ctx).await {
                    return Ok(resp);
                }
                // Every node before us on the ring is down: we are the owner now.
            }
        }

        let req_cc = RequestCacheControl::from_headers(&head.headers);
        let now = SystemTime::now();
        let stored = match self.storage.lookup(&key) {
            None => {
                ctx.status.fwd = Some(Fwd::UriMiss);
                None
            }
            Some(set) => match set.select(&head.headers) {
                None => {
                    ctx.status.fwd = Some(Fwd::VaryMiss);
                    None
                }
                Some(obj) => Some(Arc::clone(obj)),
            },
        };

        if let Some(obj) = &stored {
            match obj
                .policy
                .evaluate(&req_cc, now, service.stale_while_revalidate)
            {
                Decision::Fresh | Decision::StaleAccepted => {
                    return Ok(self.hit(obj, &head, now, ctx))
                }
                Decision::StaleWhileRevalidate => {
                    ctx.status.detail = Some("stale-while-revalidate".into());
                    self.revalidate_in_background(&service, &resolved, &head, &key, obj);
                    return Ok(self.hit(obj, &head, now, ctx));
                }
                Decision::Revalidate => {
                    let by_request =
                        req_cc.no_cache || req_cc.max_age.is_some() || req_cc.min_fresh.is_some();
                    ctx.status.fwd = Some(if by_request && obj.policy.is_fresh(now) {
                        Fwd::Request
                    } else {
                        Fwd::Stale
                    });
                }
            }
        }
        if req_cc.only_if_cached {
            return Err(ProxyError::OnlyIfCached);
        }
        self.through_cache(service, resolved, head, key, req_cc, stored, ctx)
            .await
    }

    fn hit(
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

    /// Gets the object from upstream through the coalescer: leads a fill or follows one.
    #[allow(clippy::too_many_arguments)]
    async fn through_cache(
        self: Arc<Self>,
        service: Arc<Service>,
        resolved: Resolved,
        head: Head,
        key: CacheKey,
        req_cc: RequestCacheControl,
        stored: Option<Arc<StoredObject>>,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // Requests whose answer cannot be shared (credentials, `no-store`) neither lead nor
        // follow a shared fill.
        if head.headers.contains_key(AUTHORIZATION) || req_cc.no_store {
            return self
                .fetch_alone(&service, &resolved, &head, &key, stored.as_ref(), ctx)
                .await;
        }
        if self
            .hit_for_pass
            .get(&key)
            .is_some_and(|until| until > Instant::now())
        {
            let resp = self
                .fetch_alone(&service, &resolved, &head, &key, stored.as_ref(), ctx)
                .await;
            ctx.status.detail = Some(match ctx.status.detail.take() {
                Some(why) => format!("hit-for-pass: {why}"),
                None => "hit-for-pass".into(),
            });
            return resp;
        }
        // Whether an object (stored, or being filled) may answer this request as it is.
        let serves = |obj: &StoredObject| {
            obj.variant.matches(&head.headers)
                && matches!(
                    obj.policy.evaluate(&req_cc, SystemTime::now(), None),
                    Decision::Fresh | Decision::StaleAccepted
                )
        };
        // The leader's own fill is bounded by the upstream timeouts; only followers use the
        // lock timeout.
        let leader_wait = self.timeouts.first_byte * (service.origins.all().len() as u32 + 1)
            + service.lock_timeout;
        for attempt in 0..MAX_JOIN_ATTEMPTS {
            let last_attempt = attempt + 1 == MAX_JOIN_ATTEMPTS;
            let usable = || {
                let set = self.storage.lookup(&key)?;
                let obj = set.select(&head.headers)?;
                serves(obj).then(|| Arc::clone(obj))
            };
            let (inflight, leader) = match self.coalescer.join(&key, serves, usable) {
                Join::Found(obj) => return Ok(self.hit(&obj, &head, SystemTime::now(), ctx)),
                Join::Leader(inflight) => {
                    self.spawn_fill(&inflight, &service, &resolved, &head, &key, stored.clone());
                    (inflight, true)
                }
                Join::Follower(inflight) => {
                    ctx.status.collapsed = true;
                    (inflight, false)
                }
            };
            let wait = if leader {
                leader_wait
            } else {
                service.lock_timeout
            };
            let Some(outcome) = inflight.wait(wait).await else {
                drop(inflight);
                let resp = self
                    .fetch_alone(&service, &resolved, &head, &key, stored.as_ref(), ctx)
                    .await;
                ctx.status.detail = Some("lock-timeout".into());
                return resp;
            };
            let now = SystemTime::now();
            match &*outcome {
                Outcome::Object {
                    object,
                    first_headers,
                    meta,
                } => {
                    if !leader && !serves(object) {
                        if object.variant.matches(&head.headers) {
                            // Filled for us but not reusable as is (no-cache, no freshness,
                            // stale for our directives): validate on our own.
                            drop(outcome);
                            drop(inflight);
                            return self
                                .fetch_alone(&service, &resolved, &head, &key, stored.as_ref(), ctx)
                                .await;
                        }
                        // Filled for another variant: look again.
                        continue;
                    }
                    ctx.absorb(meta);
                    ctx.status.ttl = Some(object.policy.ttl(now));
                    let headers = leader.then(|| first_headers.clone());
                    return Ok(respond::from_object(
                        object,
                        headers,
                        &head.method,
                        &head.headers,
                        now,
                    ));
                }
                Outcome::Pass { response, meta } => {
                    ctx.absorb(meta);
                    if let Some(stale) =
                        self.stale_for_error(&service, stored.as_ref(), meta.fwd_status, &head, ctx)
                    {
                        return Ok(stale);
                    }
                    if leader {
                        if let Some(passed) =
                            response.lock().unwrap_or_else(|e| e.into_inner()).take()
                        {
                            return Ok(self.respond_pass(passed, &head));
                        }
                    }
                    let server_error = meta.fwd_status.filter(|s| *s >= 500);
                    // Release the leader's response (and its origin slot) before going on.
                    drop(outcome);
                    drop(inflight);
                    match server_error {
                        // An origin in trouble: try again together (one request per round)
                        // rather than all at once, then report.
                        Some(_) if !last_attempt => continue,
                        Some(status) => {
                            return Err(ProxyError::Upstream(UpstreamError::Status(status)))
                        }
                        None => {
                            return self
                                .fetch_alone(&service, &resolved, &head, &key, stored.as_ref(), ctx)
                                .await
                        }
                    }
                }
                Outcome::Failed(err) => {
                    if let Some(stale) =
                        self.stale_for_error(&service, stored.as_ref(), None, &head, ctx)
                    {
                        ctx.status.detail = Some(format!("stale-if-error: {}", err.detail()));
                        return Ok(stale);
                    }
                    // The leader reports; a follower tries once more, leading if it is first.
                    if leader || last_attempt {
                        return Err(err.clone());
                    }
                }
            }
        }
        self.fetch_alone(&service, &resolved, &head, &key, stored.as_ref(), ctx)
            .await
    }

    /// Starts the task that performs a registered fill.
    fn spawn_fill(
        self: &Arc<Self>,
        inflight: &Arc<Inflight>,
        service: &Arc<Service>,
        resolved: &Resolved,
        head: &Head,
        key: &CacheKey,
        stored: Option<Arc<StoredObject>>,
    ) {
        let (this, inflight, service, resolved, head, key) = (
            Arc::clone(self),
            Arc::clone(inflight),
            Arc::clone(service),
            resolved.clone(),
            head.clone(),
            key.clone(),
        );
        tokio::spawn(async move {
            let _guard = FillGuard {
                coalescer: &this.coalescer,
                key: &key,
                inflight: &inflight,
            };
            match this
                .fetch(&service, &resolved, &head, &key, stored.as_ref())
                .await
            {
                Ok(Fetched::Refreshed(object, meta)) => {
                    let first_headers = object.headers.clone();
                    inflight.publish(Outcome::Object {
                        object,
                        first_headers,
                        meta,
                    });
                }
                Ok(Fetched::Storable {
                    object,
                    first_headers,
                    mut fill,
                    body,
                    meta,
                }) => {
                    inflight.publish(Outcome::Object {
                        object,
                        first_headers,
                        meta,
                    });
                    // Late arrivals keep joining this fill until its object is stored; the
                    // guard leaves the table after that. A body that outgrows the object
                    // size limit is no longer kept from the start, so it leaves at once.
                    let (this2, key2, inflight2, hfp) = (
                        Arc::clone(&this),
                        key.clone(),
                        Arc::clone(&inflight),
                        service.hit_for_pass,
                    );
                    fill.on_too_large = Some(Box::new(move || {
                        this2.coalescer.leave(&key2, &inflight2);
                        this2.hit_for_pass.insert(key2, Instant::now() + hfp);
                    }));
                    fill.discard = Arc::clone(&inflight.discard);
                    fill.run(body).await;
                }
                Ok(Fetched::Pass(resp, meta)) => {
                    if meta.uncacheable {
                        this.hit_for_pass
                            .insert(key.clone(), Instant::now() + service.hit_for_pass);
                    }
                    inflight.publish(Outcome::Pass {
                        response: std::sync::Mutex::new(Some(resp)),
                        meta,
                    });
                }
                Err(e) => inflight.publish(Outcome::Failed(e)),
            }
        });
    }

    /// An uncoalesced fetch (hit-for-pass, lock timeout, follower of an uncacheable fill).
    /// A storable answer is still stored.
    async fn fetch_alone(
        &self,
        service: &Service,
        resolved: &Resolved,
        head: &Head,
        key: &CacheKey,
        stored: Option<&Arc<StoredObject>>,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let now = SystemTime::now();
        match self.fetch(service, resolved, head, key, stored).await {
            Ok(Fetched::Refreshed(object, meta)) => {
                ctx.absorb(&meta);
                ctx.status.ttl = Some(object.policy.ttl(now));
                Ok(respond::from_object(
                    &object,
                    None,
                    &head.method,
                    &head.headers,
                    now,
                ))
            }
            Ok(Fetched::Storable {
                object,
                first_headers,
                fill,
                body,
                meta,
            }) => {
                ctx.absorb(&meta);
                ctx.status.ttl = Some(object.policy.ttl(now));
                self.hit_for_pass.invalidate(key);
                tokio::spawn(fill.run(body));
                Ok(respond::from_object(
                    &object,
                    Some(first_headers),
                    &head.method,
                    &head.headers,
                    now,
                ))
            }
            Ok(Fetched::Pass(resp, meta)) => {
                ctx.absorb(&meta);
                if let Some(stale) =
                    self.stale_for_error(service, stored, meta.fwd_status, head, ctx)
                {
                    return Ok(stale);
                }
                Ok(self.respond_pass(resp, head))
            }
            Err(e) => {
                if let Some(stale) = self.stale_for_error(service, stored, None, head, ctx) {
                    ctx.status.detail = Some(format!("stale-if-error: {}", e.detail()));
                    return Ok(stale);
                }
                Err(e)
            }
        }
    }

    /// Serves the stale copy in place of an upstream failure (an error, or a 5xx answer)
    /// when stale-if-error or the service's grace allows it (RFC 5861 §4).
    fn stale_for_error(
        &self,
        service: &Service,
        stored: Option<&Arc<StoredObject>>,
        fwd_status: Option<u16>,
        head: &Head,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        let obj = stored?;
        if fwd_status.is_some_and(|s| s < 500) {
            return None;
        }
        let now = SystemTime::now();
        if !obj.policy.stale_if_error(now, service.stale_if_error) {
            return None;
        }
        ctx.status.detail = Some(match fwd_status {
            Some(s) => format!("stale-if-error: upstream-{s}"),
            None => "stale-if-error".into(),
        });
        ctx.status.ttl = Some(obj.policy.ttl(now));
        ctx.status.stored = false;
        Some(respond::from_object(
            obj,
            None,
            &head.method,
            &head.headers,
            now,
        ))
    }

    fn respond_pass(&self, (resp, slot): Passed, head: &Head) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        forward::clean_upstream_headers(&mut parts.headers);
        let body = if head.method == Method::HEAD {
            ProxyBody::Empty
        } else {
            ProxyBody::Upstream(IdleTimeout::new(body, self.timeouts.idle, slot))
        };
        Response::from_parts(parts, body)
    }

    /// One upstream exchange for the cache. With `stored`, the request is conditional on
    /// its validators and a matching 304 refreshes it.
    async fn fetch(
        &self,
        service: &Service,
        resolved: &Resolved,
        head: &Head,
        key: &CacheKey,
        stored: Option<&Arc<StoredObject>>,
    ) -> Result<Fetched, ProxyError> {
        let validators = stored
            .map(|o| validation_headers(&o.headers))
            .unwrap_or_default();
        let request_time = SystemTime::now();
        // A hot key on a node that does not own it is filled from its owner first.
        let mut hops = if head.headers.contains_key(RING_HOP) {
            Vec::new()
        } else {
            self.tier.owners_before_self(key)
        };
        hops.extend(self.tier.parents().iter().cloned());
        hops.extend(service.origin_hops());
        // A HEAD miss is fetched as GET so the object can be stored (as nginx and Varnish do).
        let FromOrigin { resp, origin, slot } = self
            .send_upstream(&hops, true, |hop| {
                forward::upstream_request(
                    Method::GET,
                    head.path_and_query(),
                    &head.headers,
                    &head.host,
                    self.host_for(service, hop.kind),
                    head.client,
                    &self.node,
                    &hop.state.origin,
                    Purpose::Fill {
                        validators: &validators,
                    },
                    empty_body(),
                )
                .map(|req| with_ring_hop(req, hop.kind, &self.node))
            })
            .await?;
        let response_time = SystemTime::now();
        let times = ResponseTimes {
            request_time,
            response_time,
        };
        let mut meta = FetchMeta {
            fwd_status: Some(resp.status().as_u16()),
            upstream: Some(origin),
            ..FetchMeta::default()
        };

        if resp.status() == StatusCode::NOT_MODIFIED {
            if let Some(old) = stored.filter(|o| not_modified_selects(&o.headers, resp.headers())) {
                let mut headers = old.headers.clone();
                let mut fresh = resp.headers().clone();
                forward::clean_upstream_headers(&mut fresh);
                fresh.remove(CACHE_STATUS);
                refresh_headers(&mut headers, &fresh);
                // Age and Date describe the 304, not the original response: a stale Age
                // kept from the first answer would make the refreshed copy born old.
                if !fresh.contains_key(AGE) {
                    headers.remove(AGE);
                }
                if !fresh.contains_key(DATE) {
                    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(response_time)) {
                        headers.insert(DATE, v);
                    }
                }
                return Ok(
                    match CachePolicy::for_response(
                        &Method::GET,
                        &head.headers,
                        old.status,
                        &headers,
                        times,
                        &resolved.policy,
                    ) {
                        Ok(policy) => {
                            let refreshed = Arc::new(old.refreshed(headers, policy, response_time));
                            self.storage.replace(key, old, Arc::clone(&refreshed));
                            meta.stored = true;
                            Fetched::Refreshed(refreshed, meta)
                        }
                        Err(reason) => {
                            // Still valid for this request, but no longer storable (unless
                            // only this request's directives say so).
                            if !reason.is_request_caused() {
                                self.storage.remove(key);
                            }
                            meta.detail = Some(reason.detail().into());
                            Fetched::Refreshed(
                                Arc::new(old.refreshed(headers, old.policy.clone(), response_time)),
                                meta,
                            )
                        }
                    },
                );
            }
            // A 304 that selects nothing we hold (RFC 9111 §4.3.4): ask again without
            // validators rather than hand a bare 304 to a client that did not ask for one.
            if stored.is_some() {
                drop(resp);
                drop(slot);
                return Box::pin(self.fetch(service, resolved, head, key, None)).await;
            }
            return Ok(Fetched::Pass((resp, Some(slot)), meta));
        }

        let (mut parts, body) = resp.into_parts();
        forward::clean_upstream_headers(&mut parts.headers);
        let declared_len = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let policy = match CachePolicy::for_response(
            &Method::GET,
            &head.headers,
            parts.status,
            &parts.headers,
            times,
            &resolved.policy,
        ) {
            Ok(_) if declared_len.is_some_and(|l| l > self.max_object_size) => {
                Err(("too-large", false))
            }
            Ok(p) => Ok(p),
            Err(reason) => Err((reason.detail(), reason.is_request_caused())),
        };
        match policy {
            Ok(policy) => {
                let mut stored_headers = parts.headers.clone();
                for name in &policy.private_fields {
                    stored_headers.remove(name);
                }
                // Upstream tiers' Cache-Status describes this fill, not later hits.
                stored_headers.remove(CACHE_STATUS);
                let object = Arc::new(StoredObject {
                    status: parts.status,
                    headers: stored_headers,
                    policy,
                    variant: VariantKey::for_request(&vary_of(&parts.headers), &head.headers),
                    body: ChunkedBody::new(),
                    stored_at: response_time,
                });
                let fill = Fill {
                    key: key.clone(),
                    object: Arc::clone(&object),
                    storage: Arc::clone(&self.storage),
                    max_object_size: self.max_object_size,
                    idle: self.timeouts.idle,
                    on_too_large: None,
                    slot: Some(slot),
                    discard: Arc::default(),
                };
                meta.stored = true;
                Ok(Fetched::Storable {
                    object,
                    first_headers: parts.headers,
                    fill,
                    body,
                    meta,
                })
            }
            Err((detail, request_caused)) => {
                meta.detail = Some(detail.to_string());
                meta.uncacheable = !request_caused && !parts.status.is_server_error();
                if stored.is_some() && parts.status.is_success() && !request_caused {
                    // The object changed into something we may not keep: drop the old copy.
                    self.storage.remove(key);
                }
                Ok(Fetched::Pass(
                    (Response::from_parts(parts, body), Some(slot)),
                    meta,
                ))
            }
        }
    }

    /// Sends to `hops` in order, skipping those whose breaker is open: the key's owner in
    /// the PoP, parent shields, then the service's origins. With `failover` (idempotent
    /// fills, no client body), a connection failure, timeout or origin 5xx moves on to the
    /// next hop; the last 5xx is answered if none does better.
    ///
    /// Outcomes feed each hop's breaker (passive health): connect errors, timeouts and
    /// origin 502/503/504 count against it; other statuses for it. Errors a client can
    /// cause (a broken request body, a 500 for one bad URL) do not, so one client cannot
    /// take an origin offline for everyone. A peer or shield that answers is up: its 5xx is
    /// the origin's trouble seen through it, answered as it is (with its `Cache-Status`).
    async fn send_upstream(
        &self,
        hops: &[Hop],
        failover: bool,
        build: impl Fn(&Hop) -> Result<Request<UpstreamBody>, ProxyError>,
    ) -> Result<FromOrigin, ProxyError> {
        let mut last = UpstreamError::Unavailable;
        let mut server_error: Option<FromOrigin> = None;
        for hop in hops {
            let origin = &hop.state;
            if origin.refuses(Instant::now()) {
                continue;
            }
            let slot = match origin.acquire(self.timeouts.first_byte).await {
                Ok(slot) => slot,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            // Checked again after queueing: the breaker may have opened meanwhile.
            let Some(attempt) = origin.attempt(Instant::now()) else {
                continue;
            };
            let is_origin = hop.kind == HopKind::Origin;
            let started = Instant::now();
            match self.upstream.send(build(hop)?, self.timeouts).await {
                Ok(resp) if resp.status().is_server_error() && is_origin => {
                    if matches!(resp.status().as_u16(), 502..=504) {
                        attempt.failure();
                    } else {
                        attempt.neutral();
                    }
                    self.metrics
                        .origin_request("server-error", Some(started.elapsed()));
                    server_error = Some(FromOrigin {
                        resp,
                        origin: hop.name.clone(),
                        slot,
                    });
                    if !failover {
                        break;
                    }
                }
                Ok(resp) => {
                    attempt.success();
                    if is_origin {
                        self.metrics.origin_request("ok", Some(started.elapsed()));
                    }
                    return Ok(FromOrigin {
                        resp,
                        origin: hop.name.clone(),
                        slot,
                    });
                }
                Err(e) => {
                    let upstream_fault = match e {
                        UpstreamError::ConnectFailed
                        | UpstreamError::ConnectTimeout
                        | UpstreamError::FirstByteTimeout => true,
                        // Without a client body, a protocol error is the upstream's doing.
                        UpstreamError::Protocol => failover,
                        _ => false,
                    };
                    if upstream_fault {
                        attempt.failure();
                    } else {
                        attempt.neutral();
                    }
                    if is_origin {
                        self.metrics.origin_request(&e.to_string(), None);
                    } else {
                        tracing::debug!(upstream = %hop.name, error = %e, "tier hop failed, moving on");
                    }
                    last = e;
                    // A peer or shield that cannot be reached is skipped even for a pass:
                    // nothing was sent.
                    if !failover && (is_origin || !upstream_fault) {
                        break;
                    }
                }
            }
        }
        server_error.ok_or(ProxyError::Upstream(last))
    }

    /// The `Host` sent to a hop: peers and shields get the client's, so they resolve the
    /// same service; origins get the service's `origin_host` when set.
    fn host_for<'a>(&self, service: &'a Service, kind: HopKind) -> Option<&'a str> {
        match kind {
            HopKind::Origin => service.origin_host.as_deref(),
            HopKind::Peer | HopKind::Parent => None,
        }
    }

    /// Forwards a request to the key's owner in this PoP, walking the ring past owners
    /// that are down (as `send_upstream` does for any hops), and streams its answer back
    /// without storing it: each object is stored once per PoP. `None` when every node
    /// before this one is down.
    async fn forward_to_owner(
        &self,
        owners: &[Hop],
        head: &Head,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        let sent = self
            .send_upstream(owners, true, |hop| {
                forward::upstream_request(
                    head.method.clone(),
                    head.path_and_query(),
                    &head.headers,
                    &head.host,
                    None,
                    head.client,
                    &self.node,
                    &hop.state.origin,
                    Purpose::Pass,
                    empty_body(),
                )
                .map(|req| with_ring_hop(req, hop.kind, &self.node))
            })
            .await;
        let FromOrigin { resp, origin, slot } = match sent {
            Ok(sent) => sent,
            Err(e) => {
                tracing::debug!(error = %e.detail(), "no ring owner reachable, serving the key here");
                return None;
            }
        };
        ctx.status.fwd = Some(Fwd::Bypass);
        ctx.status.fwd_status = Some(resp.status().as_u16());
        ctx.status.detail = Some(format!("owner={origin}"));
        ctx.upstream = Some(origin);
        Some(self.respond_pass((resp, Some(slot)), head))
    }

    /// Forwards a request the cache does not handle. A successful unsafe method invalidates
    /// the target URI and same-host `Location`/`Content-Location` (RFC 9111 §4.4).
    async fn pass(
        &self,
        service: &Service,
        head: &Head,
        body: UpstreamBody,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // The body can be sent once, so a pass is never retried on another origin.
        let body = std::sync::Mutex::new(Some(body));
        let hops = service.origin_hops();
        let FromOrigin { resp, origin, slot } = self
            .send_upstream(&hops, false, |hop| {
                let body = body
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or(ProxyError::Upstream(UpstreamError::Protocol))?;
                forward::upstream_request(
                    head.method.clone(),
                    head.path_and_query(),
                    &head.headers,
                    &head.host,
                    self.host_for(service, hop.kind),
                    head.client,
                    &self.node,
                    &hop.state.origin,
                    Purpose::Pass,
                    body,
                )
            })
            .await?;
        ctx.upstream = Some(origin);
        ctx.status.fwd_status = Some(resp.status().as_u16());
        let unsafe_method = !matches!(
            head.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        if unsafe_method && (resp.status().is_success() || resp.status().is_redirection()) {
            self.invalidate_uri(service, &head.host, &head.uri);
            for name in [LOCATION, CONTENT_LOCATION] {
                if let Some(target) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
                    if let Ok(uri) = target.parse::<Uri>() {
                        // Only same-origin targets (§4.4): relative, or our host.
                        if uri.host().is_none_or(|h| {
                            h.eq_ignore_ascii_case(crate::service::strip_port(&head.host))
                        }) {
                            self.invalidate_uri(service, &head.host, &uri);
                        }
                    }
                }
            }
        }
        Ok(self.respond_pass((resp, Some(slot)), head))
    }

    fn invalidate_uri(&self, service: &Service, host: &str, uri: &Uri) {
        let rules = service.resolve(uri.path()).key_rules;
        let key = CacheKey::new(
            "http",
            service.key_host(host),
            uri.path(),
            uri.query(),
            &rules,
        );
        self.coalescer.invalidate(&key);
        self.storage.remove(&key);
    }

    /// stale-while-revalidate: one background revalidation per object. It goes through
    /// the coalescer, so it also serves as the fill for requests that must wait.
    fn revalidate_in_background(
        self: &Arc<Self>,
        service: &Arc<Service>,
        resolved: &Resolved,
        head: &Head,
        key: &CacheKey,
        obj: &Arc<StoredObject>,
    ) {
        let mut head = head.clone();
        head.method = Method::GET;
        // The refresh is for everyone: not with this client's credentials or directives.
        for name in [AUTHORIZATION, CACHE_CONTROL, PRAGMA] {
            head.headers.remove(name);
        }
        if let Join::Leader(inflight) = self.coalescer.join(key, |_| false, || None) {
            self.spawn_fill(
                &inflight,
                service,
                resolved,
                &head,
                key,
                Some(Arc::clone(obj)),
            );
        }
    }
}

fn empty_body() -> UpstreamBody {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// The request's host: the URI authority (HTTP/2, absolute-form) or the `Host` field.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    let h = req.headers().get(HOST)?.to_str().ok()?.trim();
    (!h.is_empty()).then(|| h.to_string())
}

/// Marks a request to a ring peer so that it serves the key itself.
fn with_ring_hop(
    mut req: Request<UpstreamBody>,
    kind: HopKind,
    node: &str,
) -> Request<UpstreamBody> {
    let headers = req.headers_mut();
    headers.remove(RING_HOP);
    if kind == HopKind::Peer {
        if let Ok(v) = HeaderValue::from_str(node) {
            headers.insert(RING_HOP, v);
        }
    }
    req
}
