//! Where a process's time comes from.
//!
//! Logic never reads the system clock: it is handed `now` (a [`SystemTime`] for what is
//! compared with HTTP dates and purge times, an [`Instant`] for intervals such as breaker
//! cool-downs and hot-key decay). The node owns one [`Clock`] and reads it when a request
//! arrives (and where a later step needs the time of its own moment, such as an upstream
//! answer); tests and the simulator give it a [`ManualClock`] instead, so expiry,
//! cool-downs and decay happen on their time alone.
//!
//! Socket timers (idle connections, upstream timeouts) stay on tokio's timer, and
//! durations reported to operators (latency histograms, log durations) are measured on
//! the system's monotonic clock: they describe real sockets, not cache decisions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One reading of both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall time: HTTP dates, freshness, purge `issued_at`.
    pub wall: SystemTime,
    /// Monotonic time: intervals (breakers, hot keys, hit-for-pass marks).
    pub mono: Instant,
}

/// A process's source of time: the system's clocks, or a manual clock that moves only when
/// told to. Cheap to clone; clones read the same time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    start: Now,
    /// Nanoseconds advanced since `start`.
    offset: AtomicU64,
}

/// The handle that moves a manual [`Clock`].
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Manual>);

// === impl Clock ===

impl Clock {
    /// The system's clocks.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that starts at `wall` (and the current monotonic instant) and moves only by
    /// [`ManualClock::advance`].
    pub fn manual(wall: SystemTime) -> (Self, ManualClock) {
        let manual = Arc::new(Manual {
            start: Now {
                wall,
                mono: Instant::now(),
            },
            offset: AtomicU64::new(0),
        });
        (
            Self {
                manual: Some(Arc::clone(&manual)),
            },
            ManualClock(manual),
        )
    }

    pub fn now(&self) -> Now {
        match &self.manual {
            None => Now {
                wall: SystemTime::now(),
                mono: Instant::now(),
            },
            Some(m) => m.now(),
        }
    }

    pub fn wall(&self) -> SystemTime {
        match &self.manual {
            None => SystemTime::now(),
            Some(m) => m.now().wall,
        }
    }

    pub fn mono(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.now().mono,
        }
    }

    /// Whether this is a manual clock (tests, the simulator).
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }
}

// === impl Manual ===

impl Manual {
    fn now(&self) -> Now {
        let offset = Duration::from_nanos(self.offset.load(Ordering::Acquire));
        Now {
            wall: self.start.wall + offset,
            mono: self.start.mono + offset,
        }
    }
}

// === impl ManualClock ===

impl ManualClock {
    /// Moves the clock forward (both readings, by the same amount).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.offset.fetch_add(nanos, Ordering::AcqRel);
    }

    pub fn now(&self) -> Now {
        self.0.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (clock, hand) = Clock::manual(start);
        let t0 = clock.now();
        assert_eq!(t0.wall, start);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), t0);
        hand.advance(Duration::from_secs(90));
        let t1 = clock.clone().now();
        assert_eq!(t1.wall, start + Duration::from_secs(90));
        assert_eq!(t1.mono - t0.mono, Duration::from_secs(90));
        assert!(clock.is_manual() && !Clock::system().is_manual());
    }

    #[test]
    fn the_system_clock_moves_by_itself() {
        let clock = Clock::system();
        let t0 = clock.mono();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.mono() > t0);
    }
}
