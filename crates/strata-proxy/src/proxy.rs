//! The request path. Phases, in order (see ARCHITECTURE.md):
//!
//! 1. **parse**: limits (header size/count are enforced by hyper, 431; URI length here,
//!    414), `Host`, `CDN-Loop` (508);
//! 2. **service**: `Host` → service, path → rule (bypass, key rules, TTL override);
//! 3. **cache key**: scheme + host + path + normalised query;
//! 4. **lookup**: fresh hit → respond; stale within stale-while-revalidate → respond and
//!    revalidate in the background; otherwise validate or fetch;
//! 5. **upstream**: origins in order, fill on its own task while the client streams;
//! 6. **response**: `Age`, conditionals, ranges, `Cache-Status`, `Via`; access log.
//!
//! Unsafe methods pass through, and a success invalidates the URI (RFC 9111 §4.4).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use http::header::{HeaderMap, HeaderValue, CONTENT_LOCATION, HOST, LOCATION, VIA};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use strata_http_cache::cache_status::Fwd;
use strata_http_cache::conditional::{not_modified_selects, refresh_headers, validation_headers};
use strata_http_cache::policy::Decision;
use strata_http_cache::vary::{vary_of, VariantKey};
use strata_http_cache::{CacheKey, CachePolicy, CacheStatus, RequestCacheControl, ResponseTimes};
use strata_storage::{ChunkedBody, Storage, StoredObject};

use crate::access_log::{AccessLog, AccessRecord};
use crate::body::{ClientBody, IdleTimeout, ProxyBody};
use crate::config::NodeConfig;
use crate::error::ProxyError;
use crate::fill::Fill;
use crate::forward::{self, Purpose, CACHE_STATUS};
use crate::metrics::Metrics;
use crate::respond;
use crate::service::{Resolved, Service, Services};
use crate::upstream::{Timeouts, UpstreamBody, UpstreamClient, UpstreamError};

/// Shared state of one node's data plane.
pub struct Proxy {
    node: String,
    services: Services,
    storage: Arc<dyn Storage>,
    upstream: UpstreamClient,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
    max_uri_length: usize,
    max_object_size: u64,
    timeouts: Timeouts,
    /// Keys with a background revalidation in flight, so stale-while-revalidate launches
    /// one per object however many requests arrive.
    revalidating: Mutex<HashSet<u64>>,
}

/// Facts about one request gathered on the way through, for the response phase and log.
struct Ctx {
    status: CacheStatus,
    upstream: Option<String>,
}

/// What happened when we asked upstream for an object on behalf of the cache.
enum Fetched {
    /// A 304 refreshed the stored object.
    Refreshed(Arc<StoredObject>),
    /// A storable response; its fill is running.
    Filling {
        object: Arc<StoredObject>,
        headers: HeaderMap,
    },
    /// Not storable: stream it through.
    Pass(Response<Incoming>),
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
            node: config.node.name.clone(),
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
            revalidating: Mutex::new(HashSet::new()),
        })
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Handles one client request. Never fails: errors become responses here.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<ClientBody>, Infallible> {
        let started = Instant::now();
        let arrived = SystemTime::now();
        let method = req.method().clone();
        let host = request_host(&req).unwrap_or_default();
        let path = req.uri().path().to_string();
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
        forward::append_list(headers, VIA, &format!("1.1 {}", self.node));
        forward::strip_cdn_only(headers);

        let label = ctx.status.label();
        self.metrics.request(label, started.elapsed());
        let record = AccessRecord {
            time: humantime::format_rfc3339_millis(arrived).to_string(),
            client: client.ip().to_string(),
            method: method.to_string(),
            host,
            path,
            status: resp.status().as_u16(),
            cache_status: label.to_string(),
            bytes: 0,
            duration_ms: 0.0,
            upstream: ctx.upstream,
        };
        Ok(resp.map(|body| {
            ProxyBody::logged(
                body,
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
        let host = request_host(&req).ok_or(ProxyError::BadRequest("missing host"))?;
        if forward::is_loop(req.headers(), &self.node) {
            return Err(ProxyError::Loop);
        }

        // === service ===
        let service = self
            .services
            .for_host(&host)
            .ok_or(ProxyError::UnknownHost)?;
        let path = req.uri().path().to_string();
        let resolved = service.resolve(&path);
        let (parts, body) = req.into_parts();

        let cacheable_method = parts.method == Method::GET || parts.method == Method::HEAD;
        if !cacheable_method || resolved.bypass {
            ctx.status.fwd = Some(if resolved.bypass && cacheable_method {
                Fwd::Bypass
            } else {
                Fwd::Method
            });
            return self
                .pass(service, parts, body.boxed(), &host, client, ctx)
                .await;
        }

        // === cache key and lookup ===
        let key = CacheKey::new("http", &host, &path, parts.uri.query(), &resolved.key_rules);
        let req_cc = RequestCacheControl::from_headers(&parts.headers);
        let now = SystemTime::now();
        let stored = match self.storage.lookup(&key) {
            None => {
                ctx.status.fwd = Some(Fwd::UriMiss);
                None
            }
            Some(set) => match set.select(&parts.headers) {
                None => {
                    ctx.status.fwd = Some(Fwd::VaryMiss);
                    None
                }
                Some(obj) => Some(Arc::clone(obj)),
            },
        };

        if let Some(obj) = stored {
            match obj
                .policy
                .evaluate(&req_cc, now, service.stale_while_revalidate)
            {
                Decision::Fresh | Decision::StaleAccepted => {
                    return Ok(self.hit(&obj, &parts, now, ctx));
                }
                Decision::StaleWhileRevalidate => {
                    ctx.status.detail = Some("stale-while-revalidate".into());
                    self.spawn_revalidation(service, &resolved, &parts, &host, client, &key, &obj);
                    return Ok(self.hit(&obj, &parts, now, ctx));
                }
                Decision::Revalidate => {
                    if req_cc.only_if_cached {
                        return Err(ProxyError::OnlyIfCached);
                    }
                    let by_request =
                        req_cc.no_cache || req_cc.max_age.is_some() || req_cc.min_fresh.is_some();
                    ctx.status.fwd = Some(if by_request && obj.policy.is_fresh(now) {
                        Fwd::Request
                    } else {
                        Fwd::Stale
                    });
                    return self
                        .validate(service, &resolved, &parts, &host, client, &key, obj, ctx)
                        .await;
                }
            }
        }
        if req_cc.only_if_cached {
            return Err(ProxyError::OnlyIfCached);
        }
        let fetched = self
            .fetch(service, &resolved, &parts, &host, client, &key, None, ctx)
            .await?;
        Ok(self.respond_fetched(fetched, &parts, ctx))
    }

    fn hit(
        &self,
        obj: &Arc<StoredObject>,
        parts: &Parts,
        now: SystemTime,
        ctx: &mut Ctx,
    ) -> Response<ProxyBody> {
        ctx.status.hit = true;
        ctx.status.fwd = None;
        ctx.status.ttl = Some(obj.policy.ttl(now));
        respond::from_object(obj, None, &parts.method, &parts.headers, now)
    }

    /// Validates a stale object upstream; serves it refreshed, replaced, or (on upstream
    /// failure within stale-if-error) as it is.
    #[allow(clippy::too_many_arguments)]
    async fn validate(
        &self,
        service: &Service,
        resolved: &Resolved,
        parts: &Parts,
        host: &str,
        client: SocketAddr,
        key: &CacheKey,
        obj: Arc<StoredObject>,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let result = self
            .fetch(service, resolved, parts, host, client, key, Some(&obj), ctx)
            .await;
        let now = SystemTime::now();
        let upstream_failed = match &result {
            Err(ProxyError::Upstream(e)) => Some(e.to_string()),
            Ok(Fetched::Pass(resp)) if resp.status().is_server_error() => {
                Some(format!("upstream-{}", resp.status().as_u16()))
            }
            _ => None,
        };
        if let Some(why) = upstream_failed {
            if obj.policy.stale_if_error(now, service.stale_if_error) {
                ctx.status.detail = Some(format!("stale-if-error: {why}"));
                ctx.status.ttl = Some(obj.policy.ttl(now));
                ctx.status.stored = false;
                return Ok(respond::from_object(
                    &obj,
                    None,
                    &parts.method,
                    &parts.headers,
                    now,
                ));
            }
        }
        Ok(self.respond_fetched(result?, parts, ctx))
    }

    fn respond_fetched(
        &self,
        fetched: Fetched,
        parts: &Parts,
        ctx: &mut Ctx,
    ) -> Response<ProxyBody> {
        let now = SystemTime::now();
        match fetched {
            Fetched::Refreshed(obj) => {
                ctx.status.ttl = Some(obj.policy.ttl(now));
                respond::from_object(&obj, None, &parts.method, &parts.headers, now)
            }
            Fetched::Filling { object, headers } => {
                ctx.status.ttl = Some(object.policy.ttl(now));
                respond::from_object(&object, Some(headers), &parts.method, &parts.headers, now)
            }
            Fetched::Pass(resp) => {
                let (mut head, body) = resp.into_parts();
                forward::clean_upstream_headers(&mut head.headers);
                let body = if parts.method == Method::HEAD {
                    ProxyBody::Empty
                } else {
                    ProxyBody::Upstream(IdleTimeout::new(body, self.timeouts.idle))
                };
                Response::from_parts(head, body)
            }
        }
    }

    /// Fetches an object for the cache. With `stored`, the request is conditional on its
    /// validators and a matching 304 refreshes it.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        service: &Service,
        resolved: &Resolved,
        parts: &Parts,
        host: &str,
        client: SocketAddr,
        key: &CacheKey,
        stored: Option<&Arc<StoredObject>>,
        ctx: &mut Ctx,
    ) -> Result<Fetched, ProxyError> {
        let validators = stored
            .map(|o| validation_headers(&o.headers))
            .unwrap_or_default();
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let request_time = SystemTime::now();
        // A HEAD miss is fetched as GET so the object can be stored (as nginx and Varnish do).
        let (resp, origin) = self
            .send_to_origins(service, |origin| {
                forward::upstream_request(
                    Method::GET,
                    path_and_query,
                    &parts.headers,
                    host,
                    service.origin_host.as_deref(),
                    client,
                    &self.node,
                    origin,
                    Purpose::Fill {
                        validators: &validators,
                    },
                    empty_body(),
                )
            })
            .await?;
        ctx.upstream = Some(origin);
        let response_time = SystemTime::now();
        let times = ResponseTimes {
            request_time,
            response_time,
        };
        ctx.status.fwd_status = Some(resp.status().as_u16());

        if resp.status() == StatusCode::NOT_MODIFIED {
            if let Some(old) = stored.filter(|o| not_modified_selects(&o.headers, resp.headers())) {
                let mut headers = old.headers.clone();
                let mut fresh = resp.headers().clone();
                forward::clean_upstream_headers(&mut fresh);
                refresh_headers(&mut headers, &fresh);
                match CachePolicy::for_response(
                    &Method::GET,
                    &parts.headers,
                    old.status,
                    &headers,
                    times,
                    &resolved.policy,
                ) {
                    Ok(policy) => {
                        let refreshed = Arc::new(old.refreshed(headers, policy, response_time));
                        self.storage.replace(key, old, Arc::clone(&refreshed));
                        ctx.status.stored = true;
                        return Ok(Fetched::Refreshed(refreshed));
                    }
                    Err(reason) => {
                        // Still valid for this request, but no longer storable.
                        self.storage.remove(key);
                        ctx.status.detail = Some(reason.detail().into());
                        let once =
                            Arc::new(old.refreshed(headers, old.policy.clone(), response_time));
                        return Ok(Fetched::Refreshed(once));
                    }
                }
            }
            // A 304 for something we do not hold: nothing to refresh; pass it on.
            return Ok(Fetched::Pass(resp));
        }

        let (mut head, body) = resp.into_parts();
        forward::clean_upstream_headers(&mut head.headers);
        let policy = CachePolicy::for_response(
            &Method::GET,
            &parts.headers,
            head.status,
            &head.headers,
            times,
            &resolved.policy,
        );
        let declared_len = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let policy = match policy {
            Ok(_) if declared_len.is_some_and(|l| l > self.max_object_size) => Err("too-large"),
            Ok(p) => Ok(p),
            Err(reason) => Err(reason.detail()),
        };
        match policy {
            Ok(policy) => {
                let mut stored_headers = head.headers.clone();
                for name in &policy.private_fields {
                    stored_headers.remove(name);
                }
                let vary = vary_of(&head.headers);
                let object = Arc::new(StoredObject {
                    status: head.status,
                    headers: stored_headers,
                    policy,
                    variant: VariantKey::for_request(&vary, &parts.headers),
                    body: ChunkedBody::new(),
                    stored_at: response_time,
                });
                let fill = Fill {
                    key: key.clone(),
                    object: Arc::clone(&object),
                    storage: Arc::clone(&self.storage),
                    max_object_size: self.max_object_size,
                    idle: self.timeouts.idle,
                };
                tokio::spawn(fill.run(body));
                ctx.status.stored = true;
                Ok(Fetched::Filling {
                    object,
                    headers: head.headers,
                })
            }
            Err(detail) => {
                ctx.status.detail = Some(detail.to_string());
                if stored.is_some() && head.status.is_success() {
                    // The object changed into something we may not keep: drop the old copy.
                    self.storage.remove(key);
                }
                Ok(Fetched::Pass(Response::from_parts(head, body)))
            }
        }
    }

    /// Tries the service's origins in order. Only connection failures move on to the next
    /// origin: the request cannot have reached the first one.
    async fn send_to_origins(
        &self,
        service: &Service,
        build: impl Fn(&crate::upstream::Origin) -> Result<Request<UpstreamBody>, ProxyError>,
    ) -> Result<(Response<Incoming>, String), ProxyError> {
        let mut last = UpstreamError::ConnectFailed;
        for origin in &service.origins {
            let started = Instant::now();
            match self.upstream.send(build(origin)?, self.timeouts).await {
                Ok(resp) => {
                    self.metrics.origin_request("ok", Some(started.elapsed()));
                    return Ok((resp, origin.authority.to_string()));
                }
                Err(e) => {
                    self.metrics.origin_request(&e.to_string(), None);
                    let retry = matches!(
                        e,
                        UpstreamError::ConnectFailed | UpstreamError::ConnectTimeout
                    );
                    last = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(ProxyError::Upstream(last))
    }

    /// Forwards a request the cache does not handle. A successful unsafe method invalidates
    /// the target URI and same-host `Location`/`Content-Location` (RFC 9111 §4.4).
    #[allow(clippy::too_many_arguments)]
    async fn pass(
        &self,
        service: &Service,
        parts: Parts,
        body: UpstreamBody,
        host: &str,
        client: SocketAddr,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let origin = service
            .origins
            .first()
            .ok_or(ProxyError::Upstream(UpstreamError::ConnectFailed))?;
        let req = forward::upstream_request(
            parts.method.clone(),
            &path_and_query,
            &parts.headers,
            host,
            service.origin_host.as_deref(),
            client,
            &self.node,
            origin,
            Purpose::Pass,
            body,
        )?;
        let started = Instant::now();
        // The body is consumed by this attempt, so a pass is never retried elsewhere.
        let resp = match self.upstream.send(req, self.timeouts).await {
            Ok(r) => {
                self.metrics.origin_request("ok", Some(started.elapsed()));
                r
            }
            Err(e) => {
                self.metrics.origin_request(&e.to_string(), None);
                return Err(ProxyError::Upstream(e));
            }
        };
        ctx.upstream = Some(origin.authority.to_string());
        ctx.status.fwd_status = Some(resp.status().as_u16());
        let unsafe_method = !matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        if unsafe_method && (resp.status().is_success() || resp.status().is_redirection()) {
            self.invalidate_uri(service, host, &parts.uri);
            for name in [LOCATION, CONTENT_LOCATION] {
                if let Some(target) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
                    if let Ok(uri) = target.parse::<Uri>() {
                        // Only same-origin targets (§4.4): relative, or our host.
                        if uri.host().is_none_or(|h| {
                            h.eq_ignore_ascii_case(crate::service::strip_port(host))
                        }) {
                            self.invalidate_uri(service, host, &uri);
                        }
                    }
                }
            }
        }
        Ok(self.respond_fetched(Fetched::Pass(resp), &parts, ctx))
    }

    fn invalidate_uri(&self, service: &Service, host: &str, uri: &Uri) {
        let rules = service.resolve(uri.path()).key_rules;
        let key = CacheKey::new("http", host, uri.path(), uri.query(), &rules);
        self.storage.remove(&key);
    }

    /// One background revalidation per object for stale-while-revalidate.
    #[allow(clippy::too_many_arguments)]
    fn spawn_revalidation(
        self: &Arc<Self>,
        service: &Service,
        resolved: &Resolved,
        parts: &Parts,
        host: &str,
        client: SocketAddr,
        key: &CacheKey,
        obj: &Arc<StoredObject>,
    ) {
        let id = key.hash64() ^ (Arc::as_ptr(obj) as usize as u64);
        {
            let mut inflight = self.revalidating.lock().unwrap_or_else(|e| e.into_inner());
            if !inflight.insert(id) {
                return;
            }
        }
        let this = Arc::clone(self);
        let service_name = service.name.clone();
        let resolved = resolved.clone();
        let mut req = Request::new(());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = parts.uri.clone();
        *req.headers_mut() = parts.headers.clone();
        let (parts, ()) = req.into_parts();
        let host = host.to_string();
        let key = key.clone();
        let obj = Arc::clone(obj);
        tokio::spawn(async move {
            if let Some(service) = this
                .services
                .for_host(&host)
                .filter(|s| s.name == service_name)
            {
                let mut ctx = Ctx {
                    status: CacheStatus::new(&this.node),
                    upstream: None,
                };
                let fetched = this
                    .fetch(
                        service,
                        &resolved,
                        &parts,
                        &host,
                        client,
                        &key,
                        Some(&obj),
                        &mut ctx,
                    )
                    .await;
                if let Ok(Fetched::Filling { object, .. }) = fetched {
                    // Stay registered until the new copy is stored, so requests arriving
                    // meanwhile do not launch a second revalidation.
                    let mut reader = object.body.reader(0, None);
                    while let Some(Ok(_)) = reader.next().await {}
                }
            }
            this.revalidating
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
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
