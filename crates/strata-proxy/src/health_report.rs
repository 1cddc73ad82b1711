//! The node's side of the health model: counts every client response (status class and
//! time to response head) and requests in flight, and answers the health endpoint with a
//! [`HealthReport`] the control plane's monitor judges (see `strata-health`): those
//! counters, and the services this node cannot reach any upstream for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::HeaderValue;
use http::{Response, StatusCode};

use strata_health::latency::LatencyHistogram;
use strata_health::HealthReport;

use crate::body::ProxyBody;
use crate::proxy::Proxy;
use crate::request::respond;
use crate::tier::HopKind;

#[derive(Default)]
pub struct HealthCounters {
    responses: AtomicU64,
    responses_5xx: AtomicU64,
    in_flight: AtomicU64,
    latency: LatencyHistogram,
}

/// Counts a request in flight until dropped.
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HealthCounters {
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub fn response(&self, status: u16, to_head: Duration) {
        self.responses.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.responses_5xx.fetch_add(1, Ordering::Relaxed);
        }
        self.latency
            .record(u64::try_from(to_head.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn report(
        &self,
        node: &str,
        pop: &str,
        role: &str,
        unreachable: Vec<String>,
    ) -> HealthReport {
        HealthReport {
            node: node.to_string(),
            pop: pop.to_string(),
            role: role.to_string(),
            responses: self.responses.load(Ordering::Relaxed),
            responses_5xx: self.responses_5xx.load(Ordering::Relaxed),
            latency_buckets: self.latency.counts(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            unreachable,
        }
    }
}

// === impl Proxy ===

impl Proxy {
    /// What the health endpoint answers: this node's counters, load, and the services it
    /// cannot reach any upstream for (every origin's breaker open and no parent shield up).
    pub fn health_report(&self) -> strata_health::HealthReport {
        let now = self.clock.mono();
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

    /// The health report as JSON, for the health endpoint (HTTP listeners, for allowed
    /// networks; admin listener).
    pub fn health_json(&self) -> String {
        serde_json::to_string(&self.health_report()).unwrap_or_default() + "\n"
    }

    /// The health endpoint on the HTTP listeners. Node name, role, error counts and load:
    /// for the monitor and peers, not for anyone on the internet. Others learn only that
    /// the node is up (which any request tells them), so a peer or edge left out of the
    /// list still sees a live node rather than taking it for a dead one.
    pub(crate) fn health_endpoint(&self, client: SocketAddr) -> Response<ProxyBody> {
        let allowed = self.health_allow.iter().any(|n| n.contains(&client.ip()))
            || self.tier.is_peer(client.ip());
        if !allowed {
            return respond::text(StatusCode::OK, "ok\n".into());
        }
        let mut resp = respond::text(StatusCode::OK, self.health_json());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_responses_errors_and_requests_in_flight() {
        let c = HealthCounters::default();
        let a = c.begin();
        {
            let _b = c.begin();
            assert_eq!(c.report("n", "p", "edge", vec![]).in_flight, 2);
        }
        c.response(200, Duration::from_millis(1));
        c.response(503, Duration::from_millis(1));
        drop(a);
        let r = c.report("n", "p", "edge", vec![]);
        assert_eq!((r.responses, r.responses_5xx, r.in_flight), (2, 1, 0));
        assert_eq!(r.latency_buckets.iter().sum::<u64>(), 2);
    }
}
