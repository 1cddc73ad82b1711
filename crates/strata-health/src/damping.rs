//! Route-flap damping for anycast announcements, after RFC 2439's penalty model.
//!
//! Every withdrawal adds a penalty; the penalty halves every `half_life`. While it is above
//! `suppress`, the route is not announced again even if the node is healthy; it may be once
//! the penalty has decayed under `reuse`. The penalty is capped so that no route stays
//! suppressed longer than `max_suppress`. A node that fails once is back as soon as it is
//! healthy; one that flaps is held off, and so is the route seen by the whole Internet.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct DampingConfig {
    pub withdraw_penalty: f64,
    pub suppress: f64,
    pub reuse: f64,
    pub half_life: Duration,
    pub max_suppress: Duration,
}

impl Default for DampingConfig {
    fn default() -> Self {
        Self {
            withdraw_penalty: 1000.0,
            suppress: 2000.0,
            reuse: 750.0,
            half_life: Duration::from_secs(60),
            max_suppress: Duration::from_secs(600),
        }
    }
}

impl DampingConfig {
    /// The highest penalty kept: one that decays to `reuse` in `max_suppress`.
    fn ceiling(&self) -> f64 {
        let halvings = self.max_suppress.as_secs_f64() / self.half_life.as_secs_f64().max(1e-3);
        self.reuse * 2f64.powf(halvings)
    }
}

#[derive(Debug, Clone)]
pub struct Damper {
    config: DampingConfig,
    penalty: f64,
    at: Instant,
    suppressed: bool,
}

impl Damper {
    pub fn new(config: DampingConfig, now: Instant) -> Self {
        Self {
            config,
            penalty: 0.0,
            at: now,
            suppressed: false,
        }
    }

    /// The penalty now, decayed.
    pub fn penalty(&mut self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let half = self.config.half_life.as_secs_f64().max(1e-3);
        self.penalty *= 0.5f64.powf(elapsed / half);
        self.at = now;
        if self.suppressed && self.penalty < self.config.reuse {
            self.suppressed = false;
        }
        self.penalty
    }

    /// Records a withdrawal.
    pub fn withdrawn(&mut self, now: Instant) {
        let p = self.penalty(now) + self.config.withdraw_penalty;
        self.penalty = p.min(self.config.ceiling());
        if self.penalty > self.config.suppress {
            self.suppressed = true;
        }
    }

    /// Whether the route may be announced now.
    pub fn may_announce(&mut self, now: Instant) -> bool {
        self.penalty(now);
        !self.suppressed
    }

    /// How long until the route may be announced (zero when it may now).
    pub fn reuse_in(&mut self, now: Instant) -> Duration {
        let p = self.penalty(now);
        if !self.suppressed {
            return Duration::ZERO;
        }
        let halvings = (p / self.config.reuse).log2().max(0.0);
        Duration::from_secs_f64(halvings * self.config.half_life.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn one_withdrawal_does_not_suppress() {
        let t0 = Instant::now();
        let mut d = Damper::new(DampingConfig::default(), t0);
        d.withdrawn(t0);
        assert!(d.may_announce(at(t0, 1)));
    }

    #[test]
    fn a_flapping_route_is_suppressed_until_the_penalty_decays_under_reuse() {
        let t0 = Instant::now();
        let mut d = Damper::new(DampingConfig::default(), t0);
        d.withdrawn(t0);
        d.withdrawn(at(t0, 5));
        d.withdrawn(at(t0, 10));
        assert!(!d.may_announce(at(t0, 11)));
        // ~2,800 at t=11 s: two half-lives (120 s) and a bit to fall under 750.
        let wait = d.reuse_in(at(t0, 11));
        assert!(
            wait > Duration::from_secs(100) && wait < Duration::from_secs(130),
            "{wait:?}"
        );
        assert!(!d.may_announce(at(t0, 100)));
        assert!(d.may_announce(at(t0, 11) + wait + Duration::from_secs(1)));
    }

    #[test]
    fn suppression_never_outlasts_max_suppress() {
        let t0 = Instant::now();
        let config = DampingConfig::default();
        let max = config.max_suppress;
        let mut d = Damper::new(config, t0);
        for s in 0..100 {
            d.withdrawn(at(t0, s));
        }
        assert!(!d.may_announce(at(t0, 100)));
        assert!(d.may_announce(at(t0, 99) + max + Duration::from_secs(1)));
    }
}
