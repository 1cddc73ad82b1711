//! The request path. Phases, in order (see docs/request-path.md):
//!
//! 1. **parse** (`request`): limits (header size/count are enforced by hyper, 431; URI
//!    length here, 414), `CONNECT`/`TRACE` (405), the authority validated and made
//!    canonical (400), `CDN-Loop` (508);
//! 2. **service**: the canonical host → service, path → rule (bypass, key rules, TTL);
//! 3. **cache key**: scheme + canonical host + path + normalised query;
//! 4. **lookup**: fresh hit → respond; stale within stale-while-revalidate → respond and
//!    revalidate in the background (within the background budget); otherwise validate or
//!    fetch;
//! 5. **coalesce and fill**: one upstream request per object however many clients miss at
//!    once (see `coalesce`); the fill runs on its own task and clients stream from it; a
//!    fill nobody waits for any more is cancelled (see `fill`);
//! 6. **upstream selection** (`upstream::send`): ring owner, parents, origins; breakers
//!    that never fail closed; requests built by `forward::Forwarder`;
//! 7. **response**: `Age`, conditionals, ranges, `Cache-Status`, `Via`; access log.
//!
//! Unsafe methods pass through, and a success invalidates the URI (RFC 9111 §4.4).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{
    HeaderMap, HeaderValue, AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION,
    DATE, LOCATION, PRAGMA, VIA,
};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use strata_http_cache::cache_status::Fwd;
use strata_http_cache::conditional::{not_modified_selects, refresh_headers, validation_headers};
use strata_http_cache::hop_by_hop::strip_hop_by_hop;
use strata_http_cache::policy::Decision;
use strata_http_cache::vary::{vary_of, VariantKey};
use strata_http_cache::{
    Authority, CacheKey, CachePolicy, CacheStatus, RequestCacheControl, ResponseTimes,
};
use strata_storage::{ChunkedBody, Storage, StoredObject};

use crate::access_log::{AccessLog, AccessRecord};
use crate::body::{ClientBody, IdleTimeout, ProxyBody};
use crate::budget::Budget;
use crate::coalesce::{Coalescer, FetchMeta, FillGuard, Inflight, Join, Outcome, Passed};
use crate::config::NodeConfig;
use crate::error::ProxyError;
use crate::fill::{Fill, FillEnd, Interest};
use crate::forward::{self, Forwarder, Outbound, Purpose, CACHE_STATUS};
use crate::health_report::HealthCounters;
use crate::metrics::Metrics;
use crate::request::{self, Head};
use crate::respond;
use crate::service::{Resolved, Service, Services};
use crate::tier::{Hop, HopKind, Tier, HEALTH_PATH, RING_HOP};
use crate::upstream::request_body::watched;
use crate::upstream::send::{path_hash, FromUpstream, SendPolicy, Sender};
use crate::upstream::{Timeouts, UpstreamClient, UpstreamError};

/// How many times a follower looks again after a fill that could not serve it.
const MAX_JOIN_ATTEMPTS: usize = 3;

/// Longest a small body is waited for before its first answer (see [`start_fill`]).
const PREBUFFER_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Bytes the hit-for-pass marks may take, key text included.
const HIT_FOR_PASS_BYTES: u64 = 8 << 20;

/// Bodies up to this size with a known length are complete before their first client
/// is answered, so `Cache-Status` says `stored` only when they were (they usually arrive
/// with the head). Larger ones stream at once, and are stored when they end.
const PREBUFFER_MAX: u64 = 64 << 10;

/// Shared state of one node's data plane.
pub struct Proxy {
    pub(crate) node: String,
    /// `Via: 1.1 <node>`, built once.
    pub(crate) via: HeaderValue,
    pub(crate) services: Services,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) upstream: UpstreamClient,
    pub(crate) sender: Sender,
    pub(crate) forwarder: Forwarder,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: AccessLog,
    pub(crate) max_uri_length: usize,
    pub(crate) max_object_size: u64,
    pub(crate) timeouts: Timeouts,
    pub(crate) coalescer: Coalescer,
    pub(crate) purge_method_enabled: bool,
    pub(crate) purge_allow: Vec<ipnet::IpNet>,
    /// Who may read the health report on the HTTP listeners.
    pub(crate) health_allow: Vec<ipnet::IpNet>,
    pub(crate) strip_cdn_cache_control: bool,
    /// Fills with no client waiting: refreshes, bodies whose clients left.
    pub(crate) background: Arc<Budget>,
    /// Trusted proxies and ring peers.
    pub(crate) carriers: Vec<ipnet::IpNet>,
    /// Keys that recently answered uncacheable, with the time the mark expires.
    pub(crate) hit_for_pass: moka::sync::Cache<CacheKey, Instant>,
    pub(crate) tier: Tier,
    pub(crate) pop: String,
    pub(crate) role: &'static str,
    pub(crate) health: HealthCounters,
}

/// Facts about one request gathered on the way through, for the response phase and log.
struct Ctx {
    status: CacheStatus,
    upstream: Option<String>,
    /// The canonical authority, once the parse phase has it (for the log).
    host: Option<String>,
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

/// What the response phase needs from the request as it arrived, taken before the parse
/// phase consumes it.
struct Arrival {
    started: Instant,
    client: SocketAddr,
    /// Health probes are not traffic: counting them would dilute a quiet node's error
    /// share.
    probe: bool,
    /// Arrival time, method and path, only when there is an access log to write.
    logged: Option<(SystemTime, String, String)>,
}

/// A cacheable request from its lookup on: what every later phase (coalesce, fill,
/// upstream, respond) needs, travelling together. Cloned into fill tasks.
#[derive(Clone)]
struct Cacheable {
    service: Arc<Service>,
    resolved: Resolved,
    head: Head,
    key: CacheKey,
    req_cc: RequestCacheControl,
    /// The stored copy: validated by the fill, served stale in place of an error.
    stored: Option<Arc<StoredObject>>,
}

impl Cacheable {
    /// Whether an object (stored, or being filled) may answer this request as it is.
    fn served_by(&self, obj: &StoredObject, now: SystemTime) -> bool {
        obj.variant.matches(&self.head.headers)
            && matches!(
                obj.policy.evaluate(&self.req_cc, now, None),
                Decision::Fresh | Decision::StaleAccepted
            )
    }

    /// A stored object that may answer this request as it is.
    fn usable(&self, storage: &dyn Storage, now: SystemTime) -> Option<Arc<StoredObject>> {
        let set = storage.lookup(&self.key)?;
        let obj = set.select(&self.head.headers)?;
        self.served_by(obj, now).then(|| Arc::clone(obj))
    }
}

/// What a request that joined a fill does with its outcome. (Returned, never kept: its
/// size does not matter.)
#[allow(clippy::large_enum_variant)]
enum Joined {
    Respond(Result<Response<ProxyBody>, ProxyError>),
    /// Join again (the fill served another variant, or the origin failed and a shared
    /// retry is due).
    Again,
    /// Fetch on its own.
    Alone,
}

/// What one upstream exchange for the cache produced.
enum Fetched {
    /// A 304 refreshed the stored object.
    Refreshed(Arc<StoredObject>, FetchMeta),
    /// A storable response; its fill copies the body into the object.
    Storable(Storable),
    /// Not storable: stream it through.
    Pass(Passed, FetchMeta),
}

/// A storable response whose body is still to be read.
struct Storable {
    object: Arc<StoredObject>,
    /// The upstream fields as received (the first client sees them).
    first_headers: HeaderMap,
    fill: Fill,
    body: Incoming,
    meta: FetchMeta,
}

impl Storable {
    /// Whether the body is small enough, and of known length, to complete before anyone
    /// is answered.
    fn prebuffers(&self) -> bool {
        self.first_headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|len| len <= PREBUFFER_MAX)
    }

    /// Starts the fill on its own task. A small body of known length is waited for,
    /// briefly ([`PREBUFFER_WAIT`]), so the first answer knows whether it was stored; a
    /// body slower than that is answered as a stream, so coalesced waiters are not held up
    /// by it. Returns the rest of the response.
    async fn start(self) -> (Started, Arc<StoredObject>, HeaderMap, FetchMeta) {
        let prebuffer = self.prebuffers();
        let Self {
            object,
            first_headers,
            fill,
            body,
            meta,
        } = self;
        let running = tokio::spawn(fill.run(body));
        let started = if !prebuffer {
            Started::Running(running)
        } else {
            match tokio::time::timeout(PREBUFFER_WAIT, object.body.wait_finished()).await {
                // Complete, or failed: the task is at its last step.
                Ok(_) => Started::Ended(running.await.unwrap_or(FillEnd::Failed)),
                Err(_) => Started::Running(running),
            }
        };
        (started, object, first_headers, meta)
    }
}

/// A fill started by [`Storable::start`].
enum Started {
    /// It ended before anyone was answered.
    Ended(FillEnd),
    /// It runs on its own task.
    Running(tokio::task::JoinHandle<FillEnd>),
}

/// What the parse phase leaves for the next: the request and its canonical authority, or
/// an answer given at once.
enum Parsed {
    Request((Request<Incoming>, Authority)),
    Answered(Response<ProxyBody>),
}

// === impl Proxy ===

impl Proxy {
    pub fn new(
        config: &NodeConfig,
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    ) -> Result<Self, String> {
        let upstream = UpstreamClient::new(config.limits.upstream_connect_timeout.0);
        let timeouts = Timeouts {
            first_byte: config.limits.upstream_first_byte_timeout.0,
            idle: config.limits.upstream_idle_timeout.0,
        };
        let tier = Tier::new(config)?;
        // Trusted proxies and ring peers: their forwarding fields are believed, and they
        // carry many clients' requests (the per-client caps do not apply to them).
        let mut carriers = config.forwarding.trusted_networks();
        carriers.extend(
            tier.peer_addresses()
                .iter()
                .map(|ip| ipnet::IpNet::from(*ip)),
        );
        let allowed = config
            .forwarding
            .allow_request_headers
            .iter()
            .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        Ok(Self {
            via: HeaderValue::from_str(&format!("1.1 {}", config.node.name))
                .map_err(|_| "node.name is not a valid header value".to_string())?,
            node: config.node.name.clone(),
            purge_method_enabled: config.purge.http_method,
            purge_allow: config.purge.allowed_networks(),
            health_allow: config.admin.health_networks(),
            strip_cdn_cache_control: config.cache.strip_cdn_cache_control,
            services: Services::from_config(config)?,
            storage,
            sender: Sender {
                client: upstream.clone(),
                timeouts,
                metrics: Arc::clone(&metrics),
            },
            forwarder: Forwarder::new(&config.node.name, carriers.clone(), allowed),
            upstream,
            metrics,
            access_log,
            max_uri_length: config.limits.max_uri_length,
            max_object_size: config.cache.max_object_size.0,
            timeouts,
            coalescer: Coalescer::default(),
            background: Budget::with_exempt(
                config.limits.max_background_fills,
                config.limits.max_background_fills_per_client,
                carriers.clone(),
            ),
            carriers,
            // Keys are chosen by clients: bounded in bytes, key text included, and kept no
            // longer than the longest mark.
            hit_for_pass: moka::sync::Cache::builder()
                .max_capacity(HIT_FOR_PASS_BYTES)
                .weigher(|k: &CacheKey, _: &Instant| {
                    u32::try_from(k.as_str().len() + 96).unwrap_or(u32::MAX)
                })
                .time_to_live(
                    config
                        .services
                        .iter()
                        .map(|s| s.hit_for_pass.0)
                        .max()
                        .unwrap_or_default()
                        .max(std::time::Duration::from_secs(1)),
                )
                .build(),
            tier,
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

    /// Addresses that carry many clients' requests (trusted proxies, ring peers): the
    /// per-client caps do not apply to them.
    pub fn carriers(&self) -> Vec<ipnet::IpNet> {
        self.carriers.clone()
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
        let arrival = Arrival {
            started: Instant::now(),
            client,
            probe: req.uri().path() == HEALTH_PATH,
            logged: self.access_log.enabled().then(|| {
                (
                    SystemTime::now(),
                    req.method().to_string(),
                    req.uri().path().to_string(),
                )
            }),
        };
        let _in_flight = self.health.begin();
        let mut ctx = Ctx {
            status: CacheStatus::new(&self.node),
            upstream: None,
            host: None,
        };
        let resp = match Arc::clone(&self).process(req, client, &mut ctx).await {
            Ok(resp) => resp,
            Err(e) => {
                ctx.status.detail = Some(e.detail());
                e.into_response()
            }
        };
        Ok(self.finish(resp, arrival, ctx))
    }

    /// The phases, in order. Each returns early with its answer, or hands on.
    async fn process(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // === parse ===
        let req = match self.parse(req, client, ctx)? {
            Parsed::Request(req) => req,
            Parsed::Answered(resp) => return Ok(resp),
        };
        // === service ===
        let (service, resolved, head, body) = self.route(req, client)?;
        // === pass: other methods, bypass rules ===
        let cacheable_method = head.method == Method::GET || head.method == Method::HEAD;
        if !cacheable_method || resolved.bypass {
            ctx.status.fwd = Some(if resolved.bypass && cacheable_method {
                Fwd::Bypass
            } else {
                Fwd::Method
            });
            return self.pass(&service, &head, body, ctx).await;
        }
        // A body on GET/HEAD is never forwarded (see `Head::forwards_body`); hyper reads
        // and discards it, or closes the connection, by its framing.
        drop(body);
        // === cache key ===
        let key = CacheKey::new(
            "http",
            service.key_host(head.host()),
            head.uri.path(),
            head.uri.query(),
            &resolved.key_rules,
        );
        // === ring: the key's owner in this PoP serves it ===
        if let Some(resp) = self.ring(&key, &head, ctx).await {
            return Ok(resp);
        }
        // === lookup ===
        let mut req = Cacheable {
            req_cc: RequestCacheControl::from_headers(&head.headers),
            service,
            resolved,
            head,
            key,
            stored: None,
        };
        if let Some(resp) = self.lookup(&mut req, SystemTime::now(), ctx) {
            return Ok(resp);
        }
        if req.req_cc.only_if_cached {
            return Err(ProxyError::OnlyIfCached);
        }
        // === coalesce, fill, upstream ===
        self.through_cache(req, ctx).await
    }

    /// The parse phase: limits, methods, the authority; the health endpoint and `PURGE`
    /// are answered here.
    fn parse(
        self: &Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        ctx: &mut Ctx,
    ) -> Result<Parsed, ProxyError> {
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > self.max_uri_length {
            return Err(ProxyError::UriTooLong);
        }
        request::check_method(req.method())?;
        if req.uri().path() == HEALTH_PATH && req.method() == Method::GET {
            ctx.status.fwd = Some(Fwd::Bypass);
            ctx.status.detail = Some("health".into());
            return Ok(Parsed::Answered(self.health_endpoint(client)));
        }
        let authority = request::authority(&req)?;
        if self.access_log.enabled() {
            ctx.host = Some(authority.as_str().to_string());
        }
        if forward::is_loop(req.headers(), &self.node) {
            return Err(ProxyError::Loop);
        }
        if req.method().as_str() == "PURGE" {
            return self
                .purge_method(&req, authority.as_str(), client)
                .map(Parsed::Answered);
        }
        Ok(Parsed::Request((req, authority)))
    }

    /// The service phase: the canonical host names the service, the path its rule. The
    /// request's own fields are cleaned of what is not part of it.
    fn route(
        &self,
        (req, authority): (Request<Incoming>, Authority),
        client: SocketAddr,
    ) -> Result<(Arc<Service>, Resolved, Head, Incoming), ProxyError> {
        let service = Arc::clone(
            self.services
                .for_authority(&authority)
                .ok_or(ProxyError::UnknownHost)?,
        );
        let (parts, body) = req.into_parts();
        let resolved = service.resolve(parts.uri.path());
        let mut headers = parts.headers;
        // The connection's own fields, and whatever `Connection` names, are not part of the
        // request: not forwarded, and not what a stored variant is selected by (a client
        // naming `Accept-Language` in `Connection` would otherwise store an answer made
        // without it under its own language).
        strip_hop_by_hop(&mut headers);
        // Only a ring peer may ask this node to serve a key it does not own.
        if headers.contains_key(RING_HOP) && !self.tier.is_peer(client.ip()) {
            headers.remove(RING_HOP);
        }
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            headers,
            authority,
            client,
        };
        Ok((service, resolved, head, body))
    }

    /// The ring phase: a key another node of the PoP owns (and that is not hot here) is
    /// forwarded to it. `None`: this node serves the key.
    async fn ring(
        &self,
        key: &CacheKey,
        head: &Head,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        if head.headers.contains_key(RING_HOP) {
            return None;
        }
        let owners = self.tier.owners_before_self(key);
        if owners.is_empty() || self.tier.record_hot(key, Instant::now()) {
            return None;
        }
        // A copy kept while the key was hot is no longer used: free it.
        if self.storage.lookup(key).is_some() {
            self.storage.remove(key);
        }
        // `None` when every node before us on the ring is down: we are the owner now.
        self.forward_to_owner(&owners, head, ctx).await
    }

    /// The lookup phase: the stored variant, if any, and what its freshness allows. An
    /// answer from storage, or `None`: go upstream, through the coalescer.
    fn lookup(
        self: &Arc<Self>,
        req: &mut Cacheable,
        now: SystemTime,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        req.stored = match self.storage.lookup(&req.key) {
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

    /// The response phase common to every answer: `Cache-Status`, `Via`, targeted fields
    /// removed, metrics, and the access log line (written when the body ends).
    fn finish(
        &self,
        mut resp: Response<ProxyBody>,
        arrival: Arrival,
        ctx: Ctx,
    ) -> Response<ClientBody> {
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&ctx.status.to_string()) {
            headers.append(CACHE_STATUS, v);
        }
        if headers.contains_key(VIA) {
            forward::append_list(headers, VIA, &format!("1.1 {}", self.node));
        } else {
            headers.insert(VIA, self.via.clone());
        }
        forward::strip_targeted(headers, self.strip_cdn_cache_control);

        let label = ctx.status.label();
        let started = arrival.started;
        if !arrival.probe {
            self.metrics.request(label, started.elapsed());
            self.health
                .response(resp.status().as_u16(), started.elapsed());
        }
        // The log names the canonical host, never a client's raw `Host` bytes.
        let record = arrival.logged.map(|(arrived, method, path)| AccessRecord {
            time: humantime::format_rfc3339_millis(arrived).to_string(),
            client: arrival.client.ip().to_string(),
            method,
            host: ctx.host.unwrap_or_default(),
            path,
            status: resp.status().as_u16(),
            cache_status: label.to_string(),
            bytes: 0,
            duration_ms: 0.0,
            upstream: ctx.upstream,
        });
        resp.map(|body| {
            body.logged(
                record,
                started,
                self.access_log.clone(),
                Arc::clone(&self.metrics),
            )
        })
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
    async fn through_cache(
        self: Arc<Self>,
        req: Cacheable,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // Requests whose answer cannot be shared (credentials, `no-store`) neither lead nor
        // follow a shared fill.
        if req.head.headers.contains_key(AUTHORIZATION) || req.req_cc.no_store {
            return self.fetch_alone(&req, ctx).await;
        }
        if self
            .hit_for_pass
            .get(&req.key)
            .is_some_and(|until| until > Instant::now())
        {
            let resp = self.fetch_alone(&req, ctx).await;
            ctx.status.detail = Some(match ctx.status.detail.take() {
                Some(why) => format!("hit-for-pass: {why}"),
                None => "hit-for-pass".into(),
            });
            return resp;
        }
        // The leader's own fill is bounded by the upstream timeouts; only followers use the
        // lock timeout.
        let service = &req.service;
        let leader_wait = self.timeouts.first_byte * (service.origins.all().len() as u32 + 1)
            + service.lock_timeout;
        for attempt in 0..MAX_JOIN_ATTEMPTS {
            let serves = |obj: &StoredObject| req.served_by(obj, SystemTime::now());
            let usable = || req.usable(&*self.storage, SystemTime::now());
            let (inflight, leader) = match self.coalescer.join(&req.key, serves, usable) {
                Join::Found(obj) => return Ok(self.hit(&obj, &req.head, SystemTime::now(), ctx)),
                Join::Leader(inflight) => {
                    self.spawn_fill(&inflight, req.clone(), None);
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
                req.service.lock_timeout
            };
            let Some(outcome) = inflight.wait(wait).await else {
                drop(inflight);
                let resp = self.fetch_alone(&req, ctx).await;
                ctx.status.detail = Some("lock-timeout".into());
                return resp;
            };
            let last_attempt = attempt + 1 == MAX_JOIN_ATTEMPTS;
            match self.joined(&req, &outcome, leader, last_attempt, ctx) {
                Joined::Respond(resp) => return resp,
                Joined::Again => continue,
                Joined::Alone => {
                    // Release the leader's response (and its origin slot) before going on.
                    drop(outcome);
                    drop(inflight);
                    return self.fetch_alone(&req, ctx).await;
                }
            }
        }
        self.fetch_alone(&req, ctx).await
    }

    /// What a request does with the outcome of the fill it led or followed.
    fn joined(
        &self,
        req: &Cacheable,
        outcome: &Outcome,
        leader: bool,
        last_attempt: bool,
        ctx: &mut Ctx,
    ) -> Joined {
        let now = SystemTime::now();
        match outcome {
            Outcome::Object {
                object,
                first_headers,
                meta,
            } => {
                if !leader && !req.served_by(object, now) {
                    // Filled for us but not reusable as is (no-cache, no freshness, stale
                    // for our directives): validate on our own. Filled for another
                    // variant: look again.
                    return if object.variant.matches(&req.head.headers) {
                        Joined::Alone
                    } else {
                        Joined::Again
                    };
                }
                ctx.absorb(meta);
                ctx.status.ttl = Some(object.policy.ttl(now));
                let headers = leader.then(|| first_headers.clone());
                let head = &req.head;
                Joined::Respond(Ok(respond::from_object(
                    object,
                    headers,
                    &head.method,
                    &head.headers,
                    now,
                )))
            }
            Outcome::Pass { response, meta } => {
                ctx.absorb(meta);
                if let Some(stale) = self.stale_for_error(req, meta.fwd_status, ctx) {
                    return Joined::Respond(Ok(stale));
                }
                if leader {
                    if let Some(passed) = response.lock().unwrap_or_else(|e| e.into_inner()).take()
                    {
                        return Joined::Respond(Ok(self.respond_pass(passed, &req.head)));
                    }
                }
                match meta.fwd_status.filter(|s| *s >= 500) {
                    // An origin in trouble: try again together (one request per round)
                    // rather than all at once, then report.
                    Some(_) if !last_attempt => Joined::Again,
                    Some(status) => {
                        Joined::Respond(Err(ProxyError::Upstream(UpstreamError::Status(status))))
                    }
                    None => Joined::Alone,
                }
            }
            Outcome::Failed(err) => {
                if let Some(stale) = self.stale_for_error(req, None, ctx) {
                    ctx.status.detail = Some(format!("stale-if-error: {}", err.detail()));
                    return Joined::Respond(Ok(stale));
                }
                // The leader reports; a follower tries once more, leading if it is first.
                if leader || last_attempt {
                    Joined::Respond(Err(err.clone()))
                } else {
                    Joined::Again
                }
            }
        }
    }

    /// Starts the task that performs a registered fill. `permit`: the fill is background
    /// work within budget (a refresh) and runs to its end whoever waits. Without one, when
    /// its last waiter leaves before the response head, it takes a place in the
    /// background budget if there is one, and is cancelled if not.
    fn spawn_fill(
        self: &Arc<Self>,
        inflight: &Arc<Inflight>,
        req: Cacheable,
        permit: Option<crate::budget::Permit>,
    ) {
        let (this, inflight) = (Arc::clone(self), Arc::clone(inflight));
        tokio::spawn(async move {
            let _guard = FillGuard {
                coalescer: &this.coalescer,
                key: &req.key,
                inflight: &inflight,
            };
            let (fetched, permit) = this.fetch_while_wanted(&req, &inflight, permit).await;
            match fetched {
                Ok(Fetched::Refreshed(object, meta)) => {
                    let first_headers = object.headers.clone();
                    inflight.publish(Outcome::Object {
                        object,
                        first_headers,
                        meta,
                    });
                }
                Ok(Fetched::Storable(storable)) => {
                    this.fill_shared(&req, &inflight, storable, permit).await
                }
                Ok(Fetched::Pass(resp, meta)) => {
                    if meta.uncacheable {
                        this.hit_for_pass
                            .insert(req.key.clone(), Instant::now() + req.service.hit_for_pass);
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

    /// The fill's upstream exchange, up to the response head. When every waiter leaves
    /// first, it goes on only within the background budget (so the next request for the
    /// key joins it instead of asking again); over it, it is cancelled.
    async fn fetch_while_wanted(
        &self,
        req: &Cacheable,
        inflight: &Inflight,
        mut permit: Option<crate::budget::Permit>,
    ) -> (Result<Fetched, ProxyError>, Option<crate::budget::Permit>) {
        let fetch = self.fetch(req, req.stored.as_ref());
        tokio::pin!(fetch);
        loop {
            if permit.is_some() {
                return (fetch.await, permit);
            }
            tokio::select! {
                fetched = &mut fetch => return (fetched, permit),
                _ = inflight.abandoned() => match self.background.admit(req.head.client.ip()) {
                    Ok(p) => permit = Some(p),
                    Err(_) => {
                        // Dropping the request closes its origin connection and frees
                        // the slot: an abandoned URL holds nothing.
                        self.metrics.fill_cancelled("head");
                        return (Err(ProxyError::Upstream(UpstreamError::Cancelled)), permit);
                    }
                },
            }
        }
    }

    /// Copies a storable body into its object for every waiter of a shared fill, and
    /// publishes the object once its first answer is known.
    async fn fill_shared(
        self: &Arc<Self>,
        req: &Cacheable,
        inflight: &Arc<Inflight>,
        mut storable: Storable,
        permit: Option<crate::budget::Permit>,
    ) {
        // Late arrivals keep joining this fill until its object is stored; the guard leaves
        // the table after that. A body that outgrows the object size limit is no longer
        // kept from the start, so it leaves at once; so does a fill about to be abandoned.
        let leave = || {
            let (this, key, inflight) = (Arc::clone(self), req.key.clone(), Arc::clone(inflight));
            move || this.coalescer.leave(&key, &inflight)
        };
        let (on_leave, hfp) = (leave(), req.service.hit_for_pass);
        let (this, key) = (Arc::clone(self), req.key.clone());
        let fill = &mut storable.fill;
        fill.on_too_large = Some(Box::new(move || {
            on_leave();
            this.hit_for_pass.insert(key, Instant::now() + hfp);
        }));
        fill.interest.on_abandon = Some(Box::new(leave()));
        fill.interest.inflight = Some(Arc::clone(inflight));
        fill.interest.permit = permit;
        fill.discard = Arc::clone(&inflight.discard);
        let (started, object, first_headers, mut meta) = storable.start().await;
        let running = match started {
            Started::Ended(FillEnd::Stored) => {
                meta.stored = true;
                None
            }
            Started::Ended(FillEnd::Discarded | FillEnd::TooLarge) => None,
            Started::Ended(FillEnd::Failed) => {
                inflight.publish(Outcome::Failed(ProxyError::Upstream(
                    UpstreamError::Protocol,
                )));
                return;
            }
            Started::Ended(FillEnd::Abandoned) => {
                self.metrics.fill_cancelled("body");
                return;
            }
            // Streamed as it arrives: whether it gets stored is known only at its end, so
            // `Cache-Status` does not claim it.
            Started::Running(fill) => Some(fill),
        };
        inflight.publish(Outcome::Object {
            object,
            first_headers,
            meta,
        });
        if let Some(fill) = running {
            if fill.await.ok() == Some(FillEnd::Abandoned) {
                self.metrics.fill_cancelled("body");
            }
        }
    }

    /// An uncoalesced fetch (hit-for-pass, lock timeout, follower of an uncacheable fill).
    /// A storable answer is still stored.
    async fn fetch_alone(
        &self,
        req: &Cacheable,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let now = SystemTime::now();
        let head = &req.head;
        match self.fetch(req, req.stored.as_ref()).await {
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
            Ok(Fetched::Storable(storable)) => {
                self.hit_for_pass.invalidate(&req.key);
                // This request is the fill's only client: it reads along from the start.
                let reading = storable.object.body.reader(0, None);
                let (started, object, first_headers, mut meta) = storable.start().await;
                match started {
                    Started::Ended(FillEnd::Stored) => meta.stored = true,
                    Started::Ended(FillEnd::Discarded | FillEnd::TooLarge) => {}
                    Started::Ended(FillEnd::Failed | FillEnd::Abandoned) => {
                        return Err(ProxyError::Upstream(UpstreamError::Protocol))
                    }
                    Started::Running(_) => {}
                }
                ctx.absorb(&meta);
                ctx.status.ttl = Some(object.policy.ttl(now));
                let resp = respond::from_object(
                    &object,
                    Some(first_headers),
                    &head.method,
                    &head.headers,
                    now,
                );
                // The response has its own reader now.
                drop(reading);
                Ok(resp)
            }
            Ok(Fetched::Pass(resp, meta)) => {
                ctx.absorb(&meta);
                if let Some(stale) = self.stale_for_error(req, meta.fwd_status, ctx) {
                    return Ok(stale);
                }
                Ok(self.respond_pass(resp, head))
            }
            Err(e) => {
                if let Some(stale) = self.stale_for_error(req, None, ctx) {
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
        req: &Cacheable,
        fwd_status: Option<u16>,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        let obj = req.stored.as_ref()?;
        if fwd_status.is_some_and(|s| s < 500) {
            return None;
        }
        let now = SystemTime::now();
        if !obj.policy.stale_if_error(now, req.service.stale_if_error) {
            return None;
        }
        ctx.status.detail = Some(match fwd_status {
            Some(s) => format!("stale-if-error: upstream-{s}"),
            None => "stale-if-error".into(),
        });
        ctx.status.ttl = Some(obj.policy.ttl(now));
        ctx.status.stored = false;
        let head = &req.head;
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

    /// One upstream exchange for the cache. With `stored`, the request is conditional on
    /// its validators and a matching 304 refreshes it.
    async fn fetch(
        &self,
        req: &Cacheable,
        stored: Option<&Arc<StoredObject>>,
    ) -> Result<Fetched, ProxyError> {
        let (service, head) = (&req.service, &req.head);
        let validators = stored
            .map(|o| validation_headers(&o.headers))
            .unwrap_or_default();
        let request_time = SystemTime::now();
        // A hot key on a node that does not own it is filled from its owner first.
        let mut hops = if head.headers.contains_key(RING_HOP) {
            Vec::new()
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
                    },
                    body: None,
                };
                let req = self.forwarder.request(head, out)?;
                Ok(with_ring_hop(req, hop.kind, &self.node))
            })
            .await?;
        let times = ResponseTimes {
            request_time,
            response_time: SystemTime::now(),
        };
        let meta = FetchMeta {
            fwd_status: Some(sent.resp.status().as_u16()),
            upstream: Some(std::mem::take(&mut sent.upstream)),
            ..FetchMeta::default()
        };
        if sent.resp.status() != StatusCode::NOT_MODIFIED {
            return Ok(self.fetched(req, stored, sent, meta, times));
        }
        match stored.filter(|o| not_modified_selects(&o.headers, sent.resp.headers())) {
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
            Ok(policy) => {
                let headers = strata_storage::owned_headers(&headers);
                let refreshed = Arc::new(old.refreshed(headers, policy, response_time));
                meta.stored = self.storage.replace(&req.key, old, Arc::clone(&refreshed));
                Fetched::Refreshed(refreshed, meta)
            }
            Err(reason) => {
                // Still valid for this request, but no longer storable (unless only this
                // request's directives say so).
                if !reason.is_request_caused() {
                    self.storage.remove(&req.key);
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
                let object = Arc::new(new_object(&parts, policy, req, times.response_time));
                Fetched::Storable(Storable {
                    fill: self.fill_for(req, &object, sent.slot),
                    object,
                    first_headers: parts.headers,
                    body,
                    meta,
                })
            }
            Err((detail, request_caused)) => {
                meta.detail = Some(detail.to_string());
                meta.uncacheable = !request_caused && !parts.status.is_server_error();
                if stored.is_some() && parts.status.is_success() && !request_caused {
                    // The object changed into something we may not keep: drop the old copy.
                    self.storage.remove(&req.key);
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
            slot: Some(slot),
            discard: Arc::default(),
            interest: Interest {
                inflight: None,
                budget: Arc::clone(&self.background),
                client: req.head.client.ip(),
                permit: None,
                on_abandon: None,
            },
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
    async fn forward_to_owner(
        &self,
        owners: &[Hop],
        head: &Head,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        let policy = SendPolicy {
            failover: true,
            url: path_hash(head.uri.path()),
            body: None,
            // Every owner down: this node serves the key itself.
            panic_routing: false,
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
    async fn pass(
        &self,
        service: &Service,
        head: &Head,
        body: Incoming,
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
        let policy = SendPolicy {
            failover: false,
            url: path_hash(head.uri.path()),
            body: progress.as_ref(),
            panic_routing: true,
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
        let key = CacheKey::new(
            "http",
            service.key_host(authority.as_str()),
            uri.path(),
            uri.query(),
            &rules,
        );
        self.coalescer.invalidate(&key);
        self.storage.remove(&key);
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
