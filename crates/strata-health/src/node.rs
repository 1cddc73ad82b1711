//! One node's health from successive probes of its health endpoint.
//!
//! - **unhealthy**: the last `fall` probes failed (no answer, timeout, not 200, unreadable
//!   body). It takes `rise` successful probes in a row to leave this state.
//! - **degraded**: answering, but over a failure threshold in the window: 5xx share,
//!   p99 time to response head, requests in flight, or a service with no reachable
//!   upstream. It stays degraded until *every* figure is under its (stricter) recovery
//!   threshold: fail at >1% 5xx or p99 > 500 ms, recover only at <0.5% and < 200 ms.
//! - **healthy**: otherwise.
//!
//! Figures are taken over `window`: the difference between the newest report and the
//! oldest one kept that is at least `window` old (so one probe interval of traffic is
//! never judged alone). Below `min_responses` in the window, the 5xx share and the p99
//! are not judged (they keep their last verdict): ten requests say nothing of a 1% rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::latency::quantile_ms;
use crate::report::HealthReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Healthy,
    Degraded,
    Unhealthy,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Healthy => "healthy",
            NodeState::Degraded => "degraded",
            NodeState::Unhealthy => "unhealthy",
        }
    }

    /// Gauge value: 0 healthy, 1 degraded, 2 unhealthy.
    pub fn level(self) -> i64 {
        self as i64
    }
}

/// Failure thresholds and the stricter recovery thresholds (config: `[health]` of the
/// control plane, `[health]` of the anycast announcer; durations as "500ms", "10s").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Share of 5xx responses (0..1) above which a node is degraded.
    pub fail_5xx_ratio: f64,
    /// Share of 5xx responses a degraded node must get under to recover.
    pub recover_5xx_ratio: f64,
    #[serde(with = "strata_wire::config::duration")]
    pub fail_p99: Duration,
    #[serde(with = "strata_wire::config::duration")]
    pub recover_p99: Duration,
    pub fail_in_flight: u64,
    pub recover_in_flight: u64,
    /// Failed probes in a row that make a node unhealthy.
    pub fall: u32,
    /// Successful probes in a row that bring an unhealthy node back.
    pub rise: u32,
    /// The span the 5xx share and p99 are taken over.
    #[serde(with = "strata_wire::config::duration")]
    pub window: Duration,
    /// Responses a window needs before its 5xx share and p99 are judged.
    pub min_responses: u64,
}

impl Thresholds {
    /// Checks the thresholds make sense; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let ratio = |v: f64| (0.0..=1.0).contains(&v);
        if !ratio(self.fail_5xx_ratio) {
            return Err(("fail_5xx_ratio", "must be between 0 and 1".into()));
        }
        if !ratio(self.recover_5xx_ratio) || self.recover_5xx_ratio > self.fail_5xx_ratio {
            return Err((
                "recover_5xx_ratio",
                "must be between 0 and fail_5xx_ratio (recovery is stricter than failure)".into(),
            ));
        }
        if self.recover_p99 > self.fail_p99 {
            return Err(("recover_p99", "must not exceed fail_p99".into()));
        }
        if self.recover_in_flight > self.fail_in_flight {
            return Err(("recover_in_flight", "must not exceed fail_in_flight".into()));
        }
        if self.fall == 0 {
            return Err(("fall", "must be at least 1".into()));
        }
        if self.rise == 0 {
            return Err(("rise", "must be at least 1".into()));
        }
        if self.window.is_zero() {
            return Err(("window", "must be longer than zero".into()));
        }
        Ok(())
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            fail_5xx_ratio: 0.01,
            recover_5xx_ratio: 0.005,
            fail_p99: Duration::from_millis(500),
            recover_p99: Duration::from_millis(200),
            fail_in_flight: 10_000,
            recover_in_flight: 8_000,
            fall: 1,
            rise: 3,
            window: Duration::from_secs(10),
            min_responses: 100,
        }
    }
}

pub use strata_wire::health::Probe;

/// Figures of the last window, for the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub ratio_5xx: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: Option<u64>,
    pub responses: u64,
}

/// One node, judged probe by probe.
#[derive(Debug, Clone)]
pub struct NodeHealth {
    state: NodeState,
    failures: u32,
    successes: u32,
    history: VecDeque<(Instant, HealthReport)>,
    /// Per-figure verdicts kept while too few responses to judge.
    over_5xx: bool,
    over_p99: bool,
    over_load: bool,
    reason: String,
    figures: Figures,
}

impl Default for NodeHealth {
    /// A node not yet probed counts as unhealthy: it must prove itself before it is used.
    fn default() -> Self {
        Self {
            state: NodeState::Unhealthy,
            failures: 0,
            successes: 0,
            history: VecDeque::new(),
            over_5xx: false,
            over_p99: false,
            over_load: false,
            reason: "not probed yet".into(),
            figures: Figures::default(),
        }
    }
}

impl NodeHealth {
    /// A node taken as healthy before any probe (tests start from a known-good node).
    #[cfg(test)]
    fn assumed_healthy() -> Self {
        Self {
            state: NodeState::Healthy,
            reason: String::new(),
            ..Self::default()
        }
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    /// Why the node is not healthy (empty when it is).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    /// Takes one probe's outcome; returns the new state when it changed.
    pub fn observe(&mut self, probe: Probe, now: Instant, t: &Thresholds) -> Option<NodeState> {
        let before = self.state;
        match probe {
            Probe::Failed(why) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                self.history.clear();
                if self.failures >= t.fall.max(1) {
                    self.state = NodeState::Unhealthy;
                    self.reason = why;
                    self.figures = Figures::default();
                }
            }
            Probe::Answered(report) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                let judged = self.judge(report, now, t);
                self.state = match (self.state, judged) {
                    // Coming back from unhealthy takes `rise` good probes in a row.
                    (NodeState::Unhealthy, _) if self.successes < t.rise.max(1) => {
                        self.reason = format!(
                            "recovering: {} of {} probes answered",
                            self.successes, t.rise
                        );
                        NodeState::Unhealthy
                    }
                    (_, s) => s,
                };
            }
        }
        (self.state != before).then_some(self.state)
    }

    /// Degraded or healthy, from the figures of the window ending with `report`.
    fn judge(&mut self, report: HealthReport, now: Instant, t: &Thresholds) -> NodeState {
        // Counters going backwards mean the node restarted: start the window again.
        if self
            .history
            .back()
            .is_some_and(|(_, last)| report.responses < last.responses)
        {
            self.history.clear();
        }
        self.history.push_back((now, report));
        // Keep the newest report that is at least `window` old as the window's start.
        while self.history.len() > 2 && now.duration_since(self.history[1].0) >= t.window {
            self.history.pop_front();
        }
        let (_, newest) = self.history.back().expect("just pushed");
        let (_, oldest) = self.history.front().expect("just pushed");
        let responses = newest.responses.saturating_sub(oldest.responses);
        let errors = newest.responses_5xx.saturating_sub(oldest.responses_5xx);
        let mut figures = Figures {
            responses,
            in_flight: Some(newest.in_flight),
            ..Figures::default()
        };
        let mut reasons = Vec::new();
        if responses >= t.min_responses.max(1) {
            let ratio = errors as f64 / responses as f64;
            // Reported to six decimals: 0.012346, not 0.012345679012345678.
            figures.ratio_5xx = Some(rounded(ratio, 1e6));
            let limit = if self.over_5xx {
                t.recover_5xx_ratio
            } else {
                t.fail_5xx_ratio
            };
            self.over_5xx = if self.over_5xx {
                ratio >= limit
            } else {
                ratio > limit
            };
            if let Some(p99) = quantile_ms(&oldest.latency_buckets, &newest.latency_buckets, 0.99) {
                figures.p99_ms = Some(rounded(p99, 1e3));
                let limit = if self.over_p99 {
                    t.recover_p99
                } else {
                    t.fail_p99
                };
                let limit = limit.as_secs_f64() * 1000.0;
                self.over_p99 = if self.over_p99 {
                    p99 >= limit
                } else {
                    p99 > limit
                };
            }
        }
        if self.over_5xx {
            reasons.push(format!(
                "5xx {:.2}% (fail >{}%, recover <{}%)",
                figures.ratio_5xx.unwrap_or(0.0) * 100.0,
                rounded(t.fail_5xx_ratio * 100.0, 1e3),
                rounded(t.recover_5xx_ratio * 100.0, 1e3)
            ));
        }
        if self.over_p99 {
            reasons.push(format!(
                "p99 {:.0} ms (fail >{} ms, recover <{} ms)",
                figures.p99_ms.unwrap_or(0.0),
                t.fail_p99.as_millis(),
                t.recover_p99.as_millis()
            ));
        }
        self.over_load = if self.over_load {
            newest.in_flight >= t.recover_in_flight
        } else {
            newest.in_flight > t.fail_in_flight
        };
        if self.over_load {
            reasons.push(format!(
                "{} requests in flight (fail >{}, recover <{})",
                newest.in_flight, t.fail_in_flight, t.recover_in_flight
            ));
        }
        if !newest.unreachable.is_empty() {
            reasons.push(format!("no upstream for {}", newest.unreachable.join(", ")));
        }
        self.figures = figures;
        self.reason = reasons.join("; ");
        if reasons.is_empty() {
            NodeState::Healthy
        } else {
            NodeState::Degraded
        }
    }
}

/// `x` rounded to a `1 / scale` step: figures and thresholds print as people wrote them
/// (7%, not 7.000000000000001%).
fn rounded(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyHistogram;

    struct Node {
        hist: LatencyHistogram,
        report: HealthReport,
    }

    impl Node {
        fn new() -> Self {
            Self {
                hist: LatencyHistogram::default(),
                report: HealthReport::default(),
            }
        }
        fn serve(&mut self, n: u64, errors: u64, micros: u64) -> Probe {
            for _ in 0..n {
                self.hist.record(micros);
            }
            self.report.responses += n;
            self.report.responses_5xx += errors;
            self.report.latency_buckets = self.hist.counts();
            Probe::Answered(self.report.clone())
        }
    }

    fn secs(start: Instant, s: u64) -> Instant {
        start + Duration::from_secs(s)
    }

    fn thresholds() -> Thresholds {
        Thresholds {
            window: Duration::from_secs(1),
            ..Thresholds::default()
        }
    }

    #[test]
    fn a_new_node_needs_rise_good_probes_before_it_is_healthy() {
        let t = thresholds();
        let (mut h, mut n, t0) = (NodeHealth::default(), Node::new(), Instant::now());
        assert_eq!(h.observe(n.serve(0, 0, 1000), secs(t0, 0), &t), None);
        assert_eq!(h.observe(n.serve(0, 0, 1000), secs(t0, 1), &t), None);
        assert_eq!(
            h.observe(n.serve(0, 0, 1000), secs(t0, 2), &t),
            Some(NodeState::Healthy)
        );
    }

    #[test]
    fn one_failed_probe_makes_a_node_unhealthy_and_recovery_takes_three() {
        let t = thresholds();
        let (mut h, mut n, t0) = (NodeHealth::assumed_healthy(), Node::new(), Instant::now());
        assert_eq!(
            h.observe(Probe::Failed("refused".into()), t0, &t),
            Some(NodeState::Unhealthy)
        );
        assert_eq!(h.reason(), "refused");
        for s in 1..3 {
            assert_eq!(h.observe(n.serve(200, 0, 1000), secs(t0, s), &t), None);
        }
        assert_eq!(
            h.observe(n.serve(200, 0, 1000), secs(t0, 3), &t),
            Some(NodeState::Healthy)
        );
    }

    #[test]
    fn error_share_fails_above_one_percent_and_recovers_only_below_half_a_percent() {
        let t = thresholds();
        let (mut h, mut n, t0) = (NodeHealth::assumed_healthy(), Node::new(), Instant::now());
        h.observe(n.serve(1000, 0, 1000), t0, &t);
        // 1.0% exactly is not over 1%.
        assert_eq!(h.observe(n.serve(1000, 10, 1000), secs(t0, 1), &t), None);
        assert_eq!(
            h.observe(n.serve(1000, 20, 1000), secs(t0, 2), &t),
            Some(NodeState::Degraded)
        );
        assert!(h.reason().starts_with("5xx 2.00%"), "{}", h.reason());
        // 0.7% would not fail a healthy node but does not bring this one back.
        assert_eq!(h.observe(n.serve(1000, 7, 1000), secs(t0, 3), &t), None);
        assert_eq!(h.observe(n.serve(1000, 5, 1000), secs(t0, 4), &t), None);
        assert_eq!(
            h.observe(n.serve(1000, 4, 1000), secs(t0, 5), &t),
            Some(NodeState::Healthy)
        );
    }

    #[test]
    fn p99_fails_above_500ms_and_recovers_only_below_200ms() {
        let t = thresholds();
        let (mut h, mut n, t0) = (NodeHealth::assumed_healthy(), Node::new(), Instant::now());
        h.observe(n.serve(1000, 0, 1000), t0, &t);
        assert_eq!(
            h.observe(n.serve(1000, 0, 600_000), secs(t0, 1), &t),
            Some(NodeState::Degraded)
        );
        assert_eq!(h.observe(n.serve(1000, 0, 300_000), secs(t0, 2), &t), None);
        assert_eq!(
            h.observe(n.serve(1000, 0, 150_000), secs(t0, 3), &t),
            Some(NodeState::Healthy)
        );
    }

    #[test]
    fn too_few_responses_are_not_judged() {
        let t = thresholds();
        let (mut h, mut n, t0) = (NodeHealth::assumed_healthy(), Node::new(), Instant::now());
        h.observe(n.serve(1, 0, 1000), t0, &t);
        // 50% errors, but 10 responses in the window.
        assert_eq!(h.observe(n.serve(10, 5, 900_000), secs(t0, 1), &t), None);
        assert_eq!(h.figures().ratio_5xx, None);
    }

    #[test]
    fn in_flight_load_and_unreachable_upstreams_degrade() {
        let t = thresholds();
        let (mut h, mut n, t0) = (NodeHealth::assumed_healthy(), Node::new(), Instant::now());
        n.report.in_flight = 10_001;
        assert_eq!(
            h.observe(n.serve(0, 0, 1), t0, &t),
            Some(NodeState::Degraded)
        );
        n.report.in_flight = 9_000;
        assert_eq!(h.observe(n.serve(0, 0, 1), secs(t0, 1), &t), None);
        n.report.in_flight = 7_000;
        assert_eq!(
            h.observe(n.serve(0, 0, 1), secs(t0, 2), &t),
            Some(NodeState::Healthy)
        );
        n.report.unreachable = vec!["video".into()];
        assert_eq!(
            h.observe(n.serve(0, 0, 1), secs(t0, 3), &t),
            Some(NodeState::Degraded)
        );
        assert_eq!(h.reason(), "no upstream for video");
    }

    #[test]
    fn a_restarted_node_starts_a_new_window() {
        let t = thresholds();
        let (mut h, mut n, t0) = (NodeHealth::assumed_healthy(), Node::new(), Instant::now());
        h.observe(n.serve(5000, 0, 1000), t0, &t);
        let mut fresh = Node::new();
        assert_eq!(h.observe(fresh.serve(200, 0, 1000), secs(t0, 1), &t), None);
        assert_eq!(h.figures().responses, 0);
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn thresholds_read_from_config_text_and_refuse_lax_recovery() {
        let t: Thresholds =
            serde_json::from_str(r#"{"fail_p99":"400ms","recover_p99":"100ms","window":5}"#)
                .unwrap();
        assert_eq!(t.fail_p99, Duration::from_millis(400));
        assert_eq!(t.window, Duration::from_secs(5));
        assert_eq!(t.fall, 1);
        assert!(t.check().is_ok());
        let lax = Thresholds {
            recover_5xx_ratio: 0.02,
            ..Thresholds::default()
        };
        assert_eq!(lax.check().unwrap_err().0, "recover_5xx_ratio");
        assert!(serde_json::from_str::<Thresholds>(r#"{"fail_p99":"soon"}"#).is_err());
        assert!(serde_json::from_str::<Thresholds>(r#"{"bogus":1}"#).is_err());
    }
}
