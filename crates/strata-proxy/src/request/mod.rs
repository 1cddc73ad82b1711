//! The request path. Phases, in order (see docs/request-path.md); each has its file:
//!
//! 1. **parse** (`parse.rs`): limits (header size/count are enforced by hyper, 431; URI
//!    length here, 414), `CONNECT`/`TRACE` (405), the authority validated and made
//!    canonical (400), `CDN-Loop` (508); the health endpoint and `PURGE` answered;
//! 2. **service** (`parse.rs`): the canonical host → service, path → rule (bypass, key
//!    rules, TTL);
//! 3. **access** (`access.rs`, `crate::access`): networks, methods, referrers, tokens
//!    and signed URLs (their parameters removed from the target), rate limits (403, 405,
//!    429);
//! 4. **pass** (`hops.rs`): other methods and bypass rules go straight upstream, and a
//!    success invalidates the URI (RFC 9111 §4.4);
//!    - **LL-HLS directives** (`llhls.rs`, media services): a playlist request's
//!      `_HLS_msn`/`_HLS_part`/`_HLS_skip` checked (400) and made its only key parameters;
//!      a blocking reload gets a deadline (503 past it);
//! 5. **cache key**: scheme + canonical host + path + normalised query;
//! 6. **ring** (`lookup.rs`): a key another node of the PoP owns is forwarded to it;
//! 7. **lookup** (`lookup.rs`): a media segment first starts the fetch of the ones after
//!    it (`prefetch.rs`); fresh hit → respond; stale within stale-while-revalidate
//!    → respond and revalidate in the background (within the background budget);
//!    otherwise validate or fetch;
//! 8. **coalesce and fill** (`miss.rs`): one upstream request per object however many
//!    clients miss at once (see `crate::coalesce`); the fill runs on its own task and
//!    clients stream from it; a fill nobody waits for any more is cancelled (see
//!    `crate::fill`);
//! 9. **upstream** (`hops.rs`, `crate::upstream::send`): ring owner, parents, origins;
//!    breakers that never fail closed; requests built by `crate::forward::Forwarder`;
//! 10. **respond** (`respond.rs`): `Age`, conditionals, ranges; then for every answer
//!     `Cache-Status`, `Via`, metrics and the access log.
//!
//! [`Proxy::handle`] runs them; `process` below reads as this list.

mod access;
mod experiment;
mod filter;
mod hops;
mod llhls;
mod lookup;
mod miss;
pub(crate) mod parse;
mod prefetch;
mod slice;

use self::parse::Routed;
pub(crate) mod respond;

pub(crate) use miss::TOO_LARGE_MARK;
pub(crate) use parse::Head;

use std::convert::Infallible;
use std::net::SocketAddr;

use crate::server::interim::Opener;
use crate::server::{Conn, Interim};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Method, Request, Response, StatusCode};
use strata_http_cache::cache_status::Fwd;
use strata_http_cache::policy::Decision;
use strata_http_cache::{Authority, CacheKey, CacheStatus, RequestCacheControl};
use strata_storage::{Storage, StoredObject};

use strata_wire::clock::Now;

use crate::body::{ClientBody, ProxyBody, RequestBody};
use crate::coalesce::FetchMeta;
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::service::{Resolved, Service};
use crate::tier::HEALTH_PATH;

/// Facts about one request gathered on the way through, for the response phase and log.
struct Ctx {
    status: CacheStatus,
    upstream: Option<String>,
    /// The canonical authority, once the parse phase has it (for the log).
    host: Option<String>,
    /// Interim responses to the client, when its connection carries them: opened when
    /// the request goes upstream, closed when this is dropped (the answer is ready).
    interim: Opener,
    /// Edge compute: the filters the request went through (their response phase runs on
    /// the answer).
    filters: Vec<filter::Running>,
    /// Experiments: the request's variants, and cookies for a client placed just now.
    variants: Vec<experiment::Assigned>,
    set_cookies: Vec<http::HeaderValue>,
}

impl Ctx {
    fn new(node: &str, interim: Opener) -> Ctx {
        Ctx {
            status: CacheStatus::new(node),
            upstream: None,
            host: None,
            interim,
            filters: Vec::new(),
            variants: Vec::new(),
            set_cookies: Vec::new(),
        }
    }

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
    /// For the latency measured (on the system's clock: it describes real sockets).
    started: Instant,
    client: SocketAddr,
    /// Health probes are not traffic: counting them would dilute a quiet node's error
    /// share.
    probe: bool,
    /// Arrival time (node clock), method and path, only when there is an access log to
    /// write.
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
    /// When the request arrived, on the node clock.
    arrived: Now,
    /// The client's interim responses: an upstream `103` for this request reaches it.
    interim: Option<Interim>,
    /// For a slice of an object stored in slices (see `slice.rs`): its bytes, asked of
    /// upstream with `Range`; the key is the slice's.
    slice: Option<(u64, u64)>,
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
        let set = storage.lookup(&self.key, now)?;
        let obj = set.select(&self.head.headers)?;
        self.served_by(obj, now).then(|| Arc::clone(obj))
    }
}

/// What the parse phase leaves for the next: the request and its canonical authority, or
/// an answer given at once.
enum Parsed {
    Request((Request<RequestBody>, Authority)),
    Answered(Response<ProxyBody>),
}

// === impl Proxy ===

impl Proxy {
    /// Handles one client request. Never fails: errors become responses here.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<RequestBody>,
        conn: Conn,
    ) -> Result<Response<ClientBody>, Infallible> {
        let client = conn.peer;
        // The node clock, read once for the request and handed down; a later step that
        // needs the time of its own moment (an upstream answer, the end of a wait) reads
        // the node clock again.
        let now = self.clock.now();
        let arrival = Arrival {
            started: Instant::now(),
            client,
            probe: req.uri().path() == HEALTH_PATH,
            logged: self.access_log.enabled().then(|| {
                (
                    now.wall,
                    req.method().to_string(),
                    req.uri().path().to_string(),
                )
            }),
        };
        let _in_flight = self.health.begin();
        let mut ctx = Ctx::new(&self.node, Opener::new(conn.interim.clone()));
        let mut resp = match Arc::clone(&self).process(req, conn, now, &mut ctx).await {
            Ok(resp) => resp,
            Err(e) => {
                if let ProxyError::Filter { name, fault } = &e {
                    self.metrics.filter_fault(name, fault.kind());
                }
                ctx.status.detail = Some(e.detail());
                e.into_response()
            }
        };
        // === compute: the filters' response phase ===
        if !ctx.filters.is_empty() {
            resp = self.filter_response(resp, &mut ctx).await;
        }
        if !ctx.variants.is_empty() {
            self.experiment_results(&mut resp, &mut ctx);
        }
        Ok(self.finish(resp, arrival, ctx))
    }

    /// The phases, in order. Each returns early with its answer, or hands on.
    async fn process(
        self: Arc<Self>,
        req: Request<RequestBody>,
        conn: Conn,
        now: Now,
        ctx: &mut Ctx,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // === parse ===
        let req = match self.parse(req, &conn, ctx)? {
            Parsed::Request(req) => req,
            Parsed::Answered(resp) => return Ok(resp),
        };
        // === service ===
        let Routed {
            service,
            resolved,
            head,
            body,
            cc,
        } = self.route(req, &conn)?;
        // === access: networks, methods, referrers, tokens, signed URLs, rate ===
        let mut head = self.access(&resolved, head, &conn, now)?;
        // === experiments: a variant of each, sticky per client ===
        let variant_tag = self.experiments(&service, &mut head, ctx);
        // === compute: the filters' request phase ===
        let (head, mut resolved) = match resolved.filters.is_empty() {
            true => (head, resolved),
            false => match self.filter_request(&service, resolved, head, ctx).await? {
                filter::Filtered::Go(go) => *go,
                filter::Filtered::Answered(resp) => return Ok(resp),
            },
        };
        // === pass: other methods, bypass rules ===
        let cacheable_method = head.method == Method::GET || head.method == Method::HEAD;
        if !cacheable_method || resolved.bypass {
            ctx.status.fwd = Some(if resolved.bypass && cacheable_method {
                Fwd::Bypass
            } else {
                Fwd::Method
            });
            self.early_hints(&resolved, ctx);
            return self.pass(&service, &head, body, ctx).await;
        }
        // === LL-HLS: delivery directives of a playlist request ===
        let hold = match resolved.media {
            Some(strata_media::MediaClass::Playlist) => {
                self.delivery_directives(&service, &mut resolved, &head)?
            }
            _ => None,
        };
        // A body on GET/HEAD is never forwarded (see `Head::forwards_body`); hyper reads
        // and discards it, or closes the connection, by its framing.
        drop(body);
        // === cache key ===
        let key = CacheKey::new(
            head.scheme(),
            service.key_host(head.host()),
            head.uri.path(),
            head.uri.query(),
            &resolved.key_rules,
        );
        let key = match &variant_tag {
            Some(tag) => key.variant(tag),
            None => key,
        };
        // === ring: the key's owner in this PoP serves it ===
        if let Some(resp) = self.ring(&key, &head, now, ctx).await {
            return Ok(resp);
        }
        // === lookup ===
        let mut req = Cacheable {
            req_cc: cc,
            service,
            resolved,
            head,
            key,
            stored: None,
            arrived: now,
            // Opened only if the request goes upstream (below).
            interim: None,
            slice: None,
        };
        // === slices: a large object in pieces, each through lookup, coalesce, fill ===
        if let Some(size) = req.resolved.slice {
            return self.sliced(req, size, ctx).await;
        }
        if req.resolved.media == Some(strata_media::MediaClass::Segment) {
            self.prefetch_after(&req, now.wall);
        }
        if let Some(resp) = self.lookup(&mut req, now.wall, ctx) {
            return Ok(resp);
        }
        if req.req_cc.only_if_cached {
            return Err(ProxyError::OnlyIfCached);
        }
        // === coalesce, fill, upstream ===
        self.early_hints(&req.resolved, ctx);
        req.interim = ctx.interim.get();
        match hold {
            None => self.through_cache(req, ctx).await,
            // The fill goes on for whoever else waits (and for the cache); this player
            // gets an answer it retries.
            Some(hold) => tokio::time::timeout(hold, self.through_cache(req, ctx))
                .await
                .unwrap_or(Err(ProxyError::PlaylistNotReady)),
        }
    }

    /// The rule's `103 Early Hints`, sent as the request goes upstream.
    fn early_hints(&self, resolved: &Resolved, ctx: &mut Ctx) {
        if let Some(hints) = &resolved.early_hints {
            if let Some(interim) = ctx.interim.get() {
                interim.send(StatusCode::EARLY_HINTS, hints);
            }
        }
    }
}
