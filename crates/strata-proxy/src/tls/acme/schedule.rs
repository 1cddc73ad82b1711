//! When a managed certificate is ordered: no IO, time passed in (the node clock), so the
//! decisions are tested here and a manual clock can drive the whole manager.
//!
//! A certificate is renewed at two thirds of its lifetime, counted from when it arrived
//! on this node (a CA's `notBefore` is often backdated, and a clock that disagrees with
//! the CA's must not make every fresh certificate look due). A failed order is retried
//! after `retry`, doubling with each failure in a row up to an hour; the certificate in
//! service stays until it is replaced.

use std::time::{Duration, SystemTime};

/// The longest wait between two failed orders.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// One managed certificate's schedule.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// The certificate in service: (when it arrived on this node, its lifetime).
    current: Option<(SystemTime, Duration)>,
    failures: u32,
    /// No order before this (after a failure).
    not_before: Option<SystemTime>,
}

impl Schedule {
    /// A certificate is in service: arrived at `arrived`, valid from `not_before` to
    /// `not_after`. Clears the failures.
    pub fn installed(
        &mut self,
        arrived: SystemTime,
        not_before: SystemTime,
        not_after: SystemTime,
    ) {
        let lifetime = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO);
        self.current = Some((arrived, lifetime));
        self.failures = 0;
        self.not_before = None;
    }

    /// An order failed at `now`: the next waits `retry` doubled per failure in a row.
    pub fn failed(&mut self, now: SystemTime, retry: Duration) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = retry
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(MAX_RETRY.max(retry));
        self.not_before = Some(now + wait);
        wait
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the certificate in service is due for renewal (None: there is none).
    pub fn renew_at(&self) -> Option<SystemTime> {
        let (arrived, lifetime) = self.current?;
        Some(arrived + lifetime * 2 / 3)
    }

    /// Whether to order now: no certificate yet, or its renewal time has come; and not
    /// inside a retry wait.
    pub fn due(&self, now: SystemTime) -> bool {
        if self.not_before.is_some_and(|t| now < t) {
            return false;
        }
        self.renew_at().is_none_or(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * 1000 + DAY * days as u32
    }

    #[test]
    fn nothing_in_service_is_due_at_once() {
        assert!(Schedule::default().due(at(0)));
    }

    #[test]
    fn renewal_at_two_thirds_of_the_lifetime() {
        let mut s = Schedule::default();
        s.installed(at(0), at(0), at(90));
        assert_eq!(s.renew_at(), Some(at(60)));
        assert!(!s.due(at(59)));
        assert!(s.due(at(60)));
    }

    #[test]
    fn lifetime_counts_from_arrival_not_from_a_backdated_not_before() {
        let mut s = Schedule::default();
        // Arrived on day 30 of this node's clock, the CA says day 0..90.
        s.installed(at(30), at(0), at(90));
        assert!(!s.due(at(31)), "a fresh certificate is never due at once");
        assert!(s.due(at(90)));
    }

    #[test]
    fn failures_back_off_doubling_to_an_hour_and_success_clears_them() {
        let retry = Duration::from_secs(60);
        let mut s = Schedule::default();
        assert_eq!(s.failed(at(0), retry), retry);
        assert!(!s.due(at(0) + Duration::from_secs(59)));
        assert!(s.due(at(0) + retry));
        assert_eq!(s.failed(at(0), retry), retry * 2);
        assert_eq!(s.failed(at(0), retry), retry * 4);
        for _ in 0..30 {
            s.failed(at(0), retry);
        }
        assert_eq!(s.failed(at(0), retry), MAX_RETRY);
        s.installed(at(1), at(1), at(91));
        assert_eq!(s.failures(), 0);
        assert!(!s.due(at(2)));
    }
}
