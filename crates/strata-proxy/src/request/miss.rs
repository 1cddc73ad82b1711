//! The coalesce and fill phases: one upstream request per object however many clients
//! miss at once. The first becomes the fill (its own task); the rest follow it and stream
//! the same chunks; uncacheable answers let followers go alone (hit-for-pass); a fill
//! nobody waits for any more goes on only within the background budget.

use std::sync::Arc;

use http::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH, RANGE};
use http::Response;
use hyper::body::Incoming;
use strata_storage::StoredObject;

use crate::body::ProxyBody;
use crate::coalesce::{FetchMeta, FillGuard, Inflight, Join, Outcome};
use crate::error::ProxyError;
use crate::fill::{Fill, FillEnd};
use crate::proxy::Proxy;
use crate::request::hops::Fetched;
use crate::request::respond;
use crate::request::{Cacheable, Ctx};
use crate::upstream::UpstreamError;

/// How many times a follower looks again after a fill that could not serve it.
const MAX_JOIN_ATTEMPTS: usize = 3;

/// Longest a small body is waited for before its first answer (see [`Storable::start`]).
const PREBUFFER_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Bodies up to this size with a known length are complete before their first client
/// is answered, so `Cache-Status` says `stored` only when they were (they usually arrive
/// with the head). Larger ones stream at once, and are stored when they end.
const PREBUFFER_MAX: u64 = 64 << 10;

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

/// A storable response whose body is still to be read.
pub(super) struct Storable {
    pub(super) object: Arc<StoredObject>,
    /// The upstream fields as received (the first client sees them).
    pub(super) first_headers: HeaderMap,
    pub(super) fill: Fill,
    pub(super) body: Incoming,
    pub(super) meta: FetchMeta,
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

/// How long an object too large to keep stays hit-for-pass (at least): its size rarely
/// changes, and while it is marked a range is asked of the origin as it is. With the
/// service's `hit_for_pass` alone (10 s), a player seeking in a large file made the node
/// fetch it whole again every 10 s.
pub(crate) const TOO_LARGE_MARK: std::time::Duration = std::time::Duration::from_secs(600);

// === impl Proxy ===

impl Proxy {
    /// Gets the object from upstream through the coalescer: leads a fill or follows one.
    pub(super) async fn through_cache(
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
            .is_some_and(|until| until > req.arrived.mono)
        {
            // Nothing will be stored: a range (a player's seek into a file too large to
            // keep) is asked of the origin as it is, not fetched whole.
            if req.head.method == http::Method::GET && req.head.headers.contains_key(RANGE) {
                let empty = crate::body::empty_request();
                let resp = self.pass(&req.service, &req.head, empty, ctx).await;
                ctx.status.detail = Some("hit-for-pass: range".into());
                return resp;
            }
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
            // Later attempts come back from waiting on a fill: the clock has moved.
            let now = match attempt {
                0 => req.arrived.wall,
                _ => self.clock.wall(),
            };
            let serves = |obj: &StoredObject| req.served_by(obj, now);
            let usable = || req.usable(&*self.storage, now);
            let (inflight, leader) = match self.coalescer.join(&req.key, serves, usable) {
                Join::Found(obj) => return Ok(self.hit(&obj, &req.head, now, ctx)),
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
        let now = self.clock.wall();
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
    pub(super) fn spawn_fill(
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
                    this.fill_shared(&req, &inflight, *storable, permit).await
                }
                Ok(Fetched::Pass(resp, meta)) => {
                    if meta.uncacheable {
                        let mark = match meta.detail.as_deref() {
                            Some("too-large") => req.service.hit_for_pass.max(TOO_LARGE_MARK),
                            _ => req.service.hit_for_pass,
                        };
                        this.hit_for_pass
                            .insert(req.key.clone(), this.clock.mono() + mark);
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
        let (on_leave, hfp) = (leave(), req.service.hit_for_pass.max(TOO_LARGE_MARK));
        let (this, key) = (Arc::clone(self), req.key.clone());
        let fill = &mut storable.fill;
        fill.on_too_large = Some(Box::new(move || {
            on_leave();
            this.hit_for_pass.insert(key, this.clock.mono() + hfp);
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
        let now = self.clock.wall();
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
}
