//! Load shedding: past its capacity, a node keeps serving what it has (hits cost a lookup
//! and a write) and sheds what costs it most: requests that must go upstream (misses,
//! passes, revalidations, ring hops), which hold memory, sockets and an origin's time.
//!
//! Two signals, both cheap to read on every upstream request:
//! - **upstream requests in flight**, node-wide (`limits.max_upstream_requests`): past it,
//!   a request queues for a slot for at most `limits.shed_queue_timeout`, then is shed;
//! - **event-loop lag** (how late a 10 ms timer fires, sampled continuously): past
//!   `limits.shed_loop_lag`, new upstream requests are shed at once (the node is too busy
//!   to queue them usefully).
//!
//! A shed request is answered `503` with `Retry-After: 1` and `Cache-Status` detail
//! `overloaded` (a stale copy within stale-if-error is served instead when there is one).
//! Recovery is immediate: the first slot freed, or the first lag sample under the limit,
//! admits again. Coalesced followers ride their leader's slot: a herd takes one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why an upstream request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// No upstream slot freed within the queue timeout.
    Queue,
    /// The event loop is running late.
    Lag,
}

impl Shed {
    pub fn reason(self) -> &'static str {
        match self {
            Shed::Queue => "queue",
            Shed::Lag => "lag",
        }
    }
}

/// The node's upstream admission.
pub struct Shedder {
    slots: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
    lag_limit: Duration,
    /// The latest lag sample, µs.
    lag_us: AtomicU64,
}

/// How often the lag is sampled.
const LAG_PERIOD: Duration = Duration::from_millis(10);

// === impl Shedder ===

impl Shedder {
    pub fn new(max: usize, queue_timeout: Duration, lag_limit: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            queue_timeout,
            lag_limit,
            lag_us: AtomicU64::new(0),
        })
    }

    /// A slot for one upstream request, held until its response head arrives.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if self.lag() > self.lag_limit {
            return Err(Shed::Lag);
        }
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Shed::Queue),
        }
    }

    /// The latest event-loop lag sample.
    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }

    /// Upstream requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Records one lag sample: a timer due at `due` fired at `fired`.
    pub fn sample(&self, due: Instant, fired: Instant) {
        let lag = fired.saturating_duration_since(due);
        self.lag_us.store(
            lag.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Samples the event loop's lag until `shutdown` flips: the runtime's own view of how
    /// busy it is (a timer on a loaded worker fires late), with no clock read on the
    /// request path.
    pub async fn watch_lag(
        self: Arc<Self>,
        metrics: Arc<crate::metrics::Metrics>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let due = Instant::now() + LAG_PERIOD;
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {
                    self.sample(due, Instant::now());
                    metrics.load(self.lag(), self.in_flight());
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_its_slots_a_request_queues_then_is_shed_and_a_freed_slot_admits() {
        let shed = Shedder::new(2, Duration::from_millis(20), Duration::from_secs(1));
        let a = shed.admit().await.unwrap();
        let _b = shed.admit().await.unwrap();
        assert_eq!(shed.in_flight(), 2);
        assert_eq!(shed.admit().await.unwrap_err(), Shed::Queue);
        drop(a);
        assert!(shed.admit().await.is_ok());
    }

    #[tokio::test]
    async fn a_late_event_loop_sheds_at_once_and_recovers_with_the_next_sample() {
        let shed = Shedder::new(8, Duration::from_secs(1), Duration::from_millis(100));
        let now = Instant::now();
        shed.sample(now, now + Duration::from_millis(300));
        assert_eq!(shed.admit().await.unwrap_err(), Shed::Lag);
        shed.sample(now, now + Duration::from_millis(2));
        assert!(shed.admit().await.is_ok());
    }
}
