//! Upstream selection: sends a request to the first hop that takes it (the key's owner in
//! the PoP, parent shields, then the service's origins), and judges each exchange for the
//! hop's circuit breaker.
//!
//! - Hops whose breaker is open are skipped while another can be tried. When every hop
//!   refuses, the request still goes to the least-bad origin (the one open longest):
//!   Strata never fails closed because of its own breakers (see `breaker`). The caller can
//!   turn this off when a stale copy can stand in for the answer.
//! - With `failover` (idempotent fills, no client body), a connection failure, timeout or
//!   origin 5xx moves on to the next hop; the last 5xx is answered if none does better.
//! - Verdicts: connection failures and requests that got no usable answer are the
//!   origin's; 5xx answers feed its error rate; a failure the client caused (its body
//!   invalid, or too slow to send) is the client's, answered 400 / 408 and never
//!   recorded. A peer or shield that answers is up: its 5xx is the origin's trouble seen
//!   through it, answered as it is.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use strata_wire::clock::Clock;
use tokio::sync::OwnedSemaphorePermit;

use super::breaker::Verdict;
use super::origins::Attempt;
use super::request_body::BodyProgress;
use super::{Timeouts, UpstreamBody, UpstreamClient, UpstreamError};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::server::Interim;
use crate::tier::{Hop, HopKind};

/// A response head from upstream, and the connection slot it occupies until its body is
/// done.
pub struct FromUpstream {
    pub resp: Response<Incoming>,
    /// The hop's name (for logs and `Cache-Status`).
    pub upstream: String,
    pub slot: OwnedSemaphorePermit,
}

/// How to send one request.
pub struct SendPolicy<'a> {
    /// Move on to the next hop after a failure or a 5xx (only without a client body).
    pub failover: bool,
    /// The path's hash ([`path_hash`]): the breaker counts how many URLs fail.
    pub url: u64,
    /// The client's body, when one is sent: its failures are the client's.
    pub body: Option<&'a BodyProgress>,
    /// Try the least-bad origin when every hop refuses.
    pub panic_routing: bool,
    /// Where the upstream's interim responses (`103 Early Hints`) go: the client that
    /// made this request, if its connection carries them.
    pub interim: Option<&'a Interim>,
}

/// The hash a URL counts under for the breaker's distinct-URL rules: its path. Not its
/// query, which any client can vary at will to look like many URLs.
pub fn path_hash(path: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(path.as_bytes(), 0)
}

/// What one hop did with the request.
enum Step {
    Answered(FromUpstream),
    ServerError(FromUpstream),
    Failed(UpstreamError),
    /// The client's fault: stop and answer with this.
    ClientFault(ProxyError),
}

/// Sends requests upstream for one node.
#[derive(Clone)]
pub struct Sender {
    pub client: UpstreamClient,
    pub timeouts: Timeouts,
    pub metrics: Arc<Metrics>,
    /// The node's clock: breakers decide on it. (Exchange latency for metrics is
    /// measured on the system's.)
    pub clock: Clock,
    /// Upstream admission: past the node's capacity, requests are shed here.
    pub shedder: Arc<crate::shed::Shedder>,
}

// === impl Sender ===

impl Sender {
    /// Sends to `hops` in order (see the module documentation); `build` makes the request
    /// for a hop.
    pub async fn send(
        &self,
        hops: &[Hop],
        policy: SendPolicy<'_>,
        build: impl Fn(&Hop) -> Result<Request<UpstreamBody>, ProxyError>,
    ) -> Result<FromUpstream, ProxyError> {
        // Held until a response head comes back (or every hop failed).
        let _admitted = match self.shedder.admit().await {
            Ok(permit) => permit,
            Err(shed) => {
                self.metrics.shed(shed.reason());
                return Err(ProxyError::Upstream(UpstreamError::Overloaded));
            }
        };
        let mut last = UpstreamError::Unavailable;
        let mut server_error: Option<FromUpstream> = None;
        // Whether some origin's breaker let the request through (whatever came of it):
        // only when every origin refused does panic routing step in. Peers and shields
        // tried first do not count: their failure must not fail the request closed.
        let mut origin_allowed = false;
        for hop in hops {
            if hop.state.refuses(self.clock.mono()) {
                continue;
            }
            origin_allowed |= hop.kind == HopKind::Origin;
            let slot = match hop.state.acquire(self.timeouts.first_byte).await {
                Ok(slot) => slot,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            // Checked again after queueing: the breaker may have opened meanwhile.
            let Some(attempt) = hop.state.attempt(self.clock.mono()) else {
                continue;
            };
            match self.exchange(hop, attempt, slot, &policy, &build).await? {
                Step::Answered(from) => return Ok(from),
                Step::ServerError(from) => {
                    server_error = Some(from);
                    if !policy.failover {
                        break;
                    }
                }
                Step::ClientFault(e) => return Err(e),
                Step::Failed(e) => {
                    let connect = matches!(
                        e,
                        UpstreamError::ConnectFailed | UpstreamError::ConnectTimeout
                    );
                    last = e;
                    // A peer or shield that cannot be reached is skipped even for a pass:
                    // nothing was sent.
                    if !policy.failover && (hop.kind == HopKind::Origin || !connect) {
                        break;
                    }
                }
            }
        }
        if !origin_allowed && server_error.is_none() && policy.panic_routing {
            // Every hop refused: the least-bad origin gets the request anyway.
            let now = self.clock.mono();
            let least_bad = hops
                .iter()
                .filter(|h| h.kind == HopKind::Origin)
                .min_by_key(|h| h.state.opened_at().unwrap_or(now));
            if let Some(hop) = least_bad {
                tracing::debug!(origin = %hop.name, "every origin's breaker is open: trying the least-bad one");
                let slot = hop
                    .state
                    .acquire(self.timeouts.first_byte)
                    .await
                    .map_err(ProxyError::Upstream)?;
                let attempt = hop.state.panic_attempt();
                match self.exchange(hop, attempt, slot, &policy, &build).await? {
                    Step::Answered(from) | Step::ServerError(from) => return Ok(from),
                    Step::ClientFault(e) => return Err(e),
                    Step::Failed(e) => last = e,
                }
            }
        }
        server_error.ok_or(ProxyError::Upstream(last))
    }

    /// One exchange with one hop, judged for its breaker.
    async fn exchange(
        &self,
        hop: &Hop,
        attempt: Attempt,
        slot: OwnedSemaphorePermit,
        policy: &SendPolicy<'_>,
        build: &impl Fn(&Hop) -> Result<Request<UpstreamBody>, ProxyError>,
    ) -> Result<Step, ProxyError> {
        let is_origin = hop.kind == HopKind::Origin;
        let started = Instant::now();
        let mut req = build(hop)?;
        if let Some(interim) = policy.interim {
            // Never stored: only the final response comes back from the client.
            let interim = interim.clone();
            hyper::ext::on_informational(&mut req, move |head| {
                interim.send(head.status(), head.headers());
            });
        }
        let sent = self
            .client
            .send(&hop.state.origin, req, self.timeouts)
            .await;
        let now = self.clock.mono();
        let from = |resp| FromUpstream {
            resp,
            upstream: hop.name.clone(),
            slot,
        };
        match sent {
            Ok(resp) if resp.status().is_server_error() && is_origin => {
                attempt.finish(Verdict::for_status(resp.status().as_u16(), policy.url), now);
                self.metrics
                    .origin_request("server-error", Some(started.elapsed()));
                Ok(Step::ServerError(from(resp)))
            }
            Ok(resp) => {
                attempt.finish(Verdict::Success, now);
                if is_origin {
                    self.metrics.origin_request("ok", Some(started.elapsed()));
                }
                Ok(Step::Answered(from(resp)))
            }
            Err(e) => {
                if let Some(fault) = client_fault(&e, policy.body) {
                    attempt.finish(Verdict::Neutral, now);
                    return Ok(Step::ClientFault(fault));
                }
                let verdict = match e {
                    UpstreamError::ConnectFailed | UpstreamError::ConnectTimeout => {
                        Verdict::ConnectFailure
                    }
                    // Sent with nothing unusual (or the origin stopped reading what was sent):
                    // no (usable) answer is the upstream's doing. (Cut off while waiting for
                    // the client's body: undecided.)
                    UpstreamError::FirstByteTimeout | UpstreamError::Protocol
                        if policy.body.is_none_or(|b| !b.waiting_for_client()) =>
                    {
                        Verdict::RequestFailure { url: policy.url }
                    }
                    _ => Verdict::Neutral,
                };
                attempt.finish(verdict, now);
                if is_origin {
                    self.metrics.origin_request(&e.to_string(), None);
                } else {
                    tracing::debug!(upstream = %hop.name, error = %e, "tier hop failed, moving on");
                }
                Ok(Step::Failed(e))
            }
        }
    }
}

/// Whether a failed exchange was the client's doing: its body broke (invalid chunked
/// coding, connection cut), or the upstream ran out of time while the body waited for the
/// client (not while the origin was not reading it).
fn client_fault(e: &UpstreamError, body: Option<&BodyProgress>) -> Option<ProxyError> {
    let body = body?;
    if body.failed() {
        return Some(ProxyError::BadRequestBody);
    }
    if body.waiting_for_client() && *e == UpstreamError::FirstByteTimeout {
        return Some(ProxyError::RequestBodyTimeout);
    }
    None
}
