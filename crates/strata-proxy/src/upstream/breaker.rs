//! A per-origin circuit breaker. Pure logic: time is passed in.
//!
//! closed ──N consecutive failures──▶ open ──cool-down──▶ half-open ──M successes──▶ closed
//!                                     ▲                       │
//!                                     └────── any failure ────┘
//!
//! While open, requests fail fast (and stale-if-error can answer). Half-open lets one
//! request (or active probe) through at a time to test the origin.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// Successes in half-open that close it.
    pub successes: u32,
    /// Time open before trying again.
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed { failures: u32 },
    Open { since: Instant },
    HalfOpen { successes: u32, probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// A short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self.state {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }

    /// Whether a request may go to this origin now. In half-open, one at a time.
    pub fn allows(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { since } if now.duration_since(since) >= self.config.cooldown => {
                self.state = BreakerState::HalfOpen {
                    successes: 0,
                    probing: true,
                };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: true, .. } => false,
            BreakerState::HalfOpen {
                successes,
                probing: false,
            } => {
                self.state = BreakerState::HalfOpen {
                    successes,
                    probing: true,
                };
                true
            }
        }
    }

    /// Whether requests are refused now, without starting a half-open test.
    pub fn refuses(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => false,
            BreakerState::Open { since } => now.duration_since(since) < self.config.cooldown,
            BreakerState::HalfOpen { probing, .. } => probing,
        }
    }

    /// A half-open test request ended without a verdict (cancelled, never sent): let the
    /// next one through instead of waiting forever.
    pub fn abandon(&mut self) {
        if let BreakerState::HalfOpen {
            successes,
            probing: true,
        } = self.state
        {
            self.state = BreakerState::HalfOpen {
                successes,
                probing: false,
            };
        }
    }

    pub fn success(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed { .. } => BreakerState::Closed { failures: 0 },
            BreakerState::HalfOpen { successes, .. } if successes + 1 >= self.config.successes => {
                BreakerState::Closed { failures: 0 }
            }
            BreakerState::HalfOpen { successes, .. } => BreakerState::HalfOpen {
                successes: successes + 1,
                probing: false,
            },
            // An active probe succeeding after the cool-down starts the half-open test.
            BreakerState::Open { since } if now.duration_since(since) >= self.config.cooldown => {
                if self.config.successes <= 1 {
                    BreakerState::Closed { failures: 0 }
                } else {
                    BreakerState::HalfOpen {
                        successes: 1,
                        probing: false,
                    }
                }
            }
            open @ BreakerState::Open { .. } => open,
        };
    }

    pub fn failure(&mut self, now: Instant) {
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 >= self.config.failures => {
                BreakerState::Open { since: now }
            }
            BreakerState::Closed { failures } => BreakerState::Closed {
                failures: failures + 1,
            },
            BreakerState::HalfOpen { .. } | BreakerState::Open { .. } => {
                BreakerState::Open { since: now }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failures: 3,
            successes: 2,
            cooldown: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut b = breaker();
        b.failure(t);
        b.failure(t);
        b.success(t);
        b.failure(t);
        b.failure(t);
        assert!(b.allows(t), "a success reset the count");
        b.failure(t);
        assert_eq!(b.name(), "open");
        assert!(
            !b.allows(t + Duration::from_secs(5)),
            "fails fast while open"
        );
    }

    #[test]
    fn half_open_after_cooldown_lets_one_request_through() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(t);
        }
        let later = t + Duration::from_secs(10);
        assert!(b.allows(later));
        assert_eq!(b.name(), "half-open");
        assert!(!b.allows(later), "one probe at a time");
        b.success(later);
        assert!(b.allows(later));
        b.success(later);
        assert_eq!(b.name(), "closed");
    }

    #[test]
    fn abandoned_half_open_test_lets_the_next_one_through() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(t);
        }
        let later = t + Duration::from_secs(10);
        assert!(b.allows(later));
        assert!(b.refuses(later));
        b.abandon();
        assert!(!b.refuses(later));
        assert!(b.allows(later));
    }

    #[test]
    fn failure_in_half_open_reopens() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(t);
        }
        let later = t + Duration::from_secs(11);
        assert!(b.allows(later));
        b.failure(later);
        assert_eq!(b.state(), BreakerState::Open { since: later });
        assert!(!b.allows(later + Duration::from_secs(9)));
        assert!(b.allows(later + Duration::from_secs(10)));
    }

    #[test]
    fn probe_success_after_cooldown_starts_recovery() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(t);
        }
        b.success(t + Duration::from_secs(1));
        assert_eq!(b.name(), "open", "too early");
        b.success(t + Duration::from_secs(12));
        assert_eq!(b.name(), "half-open");
        b.success(t + Duration::from_secs(13));
        assert_eq!(b.name(), "closed");
    }
}
