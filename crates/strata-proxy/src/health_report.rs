//! The node's side of the health model: counts every client response (status class and
//! time to response head) and requests in flight, and answers the health endpoint with a
//! [`HealthReport`] the control plane's monitor judges (see `strata-health`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use strata_health::latency::LatencyHistogram;
use strata_health::node::Probe;
use strata_health::HealthReport;

use crate::tier::HEALTH_PATH;

/// Largest health report read.
const MAX_REPORT: usize = 256 << 10;

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

/// The health endpoint of the node whose HTTP listener is `base` (`http://host:port`).
pub fn health_url(base: &str) -> Option<Uri> {
    format!("{}{HEALTH_PATH}", base.trim_end_matches('/'))
        .parse()
        .ok()
}

/// Reads nodes' health reports (the control plane's monitor, the anycast announcer).
#[derive(Clone)]
pub struct HealthProber {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HealthProber {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client, timeout }
    }

    /// One probe: answered (200 and a readable report within the timeout) or failed, why.
    pub async fn probe(&self, url: Uri) -> Probe {
        let req = match Request::get(url).body(Empty::new()) {
            Ok(r) => r,
            Err(e) => return Probe::Failed(e.to_string()),
        };
        let answer = tokio::time::timeout(self.timeout, async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            if resp.status() != StatusCode::OK {
                return Err(format!("answered {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_REPORT)
                .collect()
                .await
                .map_err(|e| format!("reading the report: {e}"))?
                .to_bytes();
            if body.as_ref() == b"ok\n" {
                // What a node tells addresses outside its `admin.health_allow`.
                return Err(
                    "only liveness: the node's admin.health_allow does not list this address"
                        .into(),
                );
            }
            serde_json::from_slice::<HealthReport>(&body)
                .map_err(|e| format!("unreadable report: {e}"))
        })
        .await;
        match answer {
            Ok(Ok(report)) => Probe::Answered(report),
            Ok(Err(why)) => Probe::Failed(why),
            Err(_) => Probe::Failed(format!("no answer within {:?}", self.timeout)),
        }
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
