//! The node's side of the health model: counts every client response (status class and
//! time to response head) and requests in flight, and answers the health endpoint with a
//! [`HealthReport`] the control plane's monitor judges (see `strata-health`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_health::latency::LatencyHistogram;
use strata_health::HealthReport;

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
