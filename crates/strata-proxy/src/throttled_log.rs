//! Warnings a client can trigger at will (accept failures, refused connections, breakers
//! opening) are rate-limited: one line per interval per call site, with a count of the
//! lines held back, so an attack cannot fill the disk or drown the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One call site's allowance. `static WARN: Throttle = Throttle::every(Duration::from_secs(10));`
pub struct Throttle {
    every: Duration,
    /// Milliseconds since the process epoch when the last line was let through, plus one
    /// (0: never).
    last: AtomicU64,
    held_back: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    pub const fn every(every: Duration) -> Self {
        Self {
            every,
            last: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(epoch().elapsed())
    }

    fn allow_at(&self, since_epoch: Duration) -> Option<u64> {
        let now = since_epoch.as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.every.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// `tracing::warn!` at most once per interval for this call site; the line carries
/// `suppressed = N` for the lines held back since the previous one.
#[macro_export]
macro_rules! warn_throttled {
    ($every:expr, $($arg:tt)+) => {{
        static THROTTLE: $crate::throttled_log::Throttle =
            $crate::throttled_log::Throttle::every($every);
        if let Some(suppressed) = THROTTLE.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_a_count_of_the_rest() {
        let t = Throttle::every(Duration::from_secs(10));
        assert_eq!(t.allow_at(Duration::from_secs(1)), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.allow_at(Duration::from_secs(5)), None);
        }
        assert_eq!(t.allow_at(Duration::from_secs(12)), Some(1000));
        assert_eq!(t.allow_at(Duration::from_secs(13)), None);
    }
}
