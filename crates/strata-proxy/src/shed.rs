//! Load shedding: past its capacity, a node keeps serving what it has (hits cost a lookup
//! and a write) and sheds what costs it most: requests that must go upstream (misses,
//! passes, revalidations, ring hops), which hold memory, sockets and an origin's time.
//!
//! Three signals, all cheap to read on every upstream request:
//! - **upstream requests in flight**, node-wide (`limits.max_upstream_requests`): past it,
//!   a request queues for a slot for at most `limits.shed_queue_timeout`, then is shed;
//! - **event-loop lag** (how late a 10 ms timer fires, sampled continuously): past
//!   `limits.shed_loop_lag`, new upstream requests are shed at once (the node is too busy
//!   to queue them usefully);
//! - **resident memory** (the process's RSS from `/proc/self/status`, read every 100 ms),
//!   past `limits.shed_memory` when it is set: new upstream requests are shed at once (a
//!   miss brings a body into memory; a hit does not).
//!
//! A shed request is answered `503` with `Retry-After: 1` and `Cache-Status` detail
//! `overloaded` (a stale copy within stale-if-error is served instead when there is one).
//! Recovery is immediate: the first slot freed, or the first lag sample under the limit,
//! admits again. Coalesced followers ride their leader's slot: a herd takes one.
//!
//! A queue that stays full makes every admitted request wait nearly the whole timeout
//! (first come, first served): measured, misses served under 5x overload waited 1.2 s at the
//! median. So the wait is controlled, CoDel-style: while requests were shed for want of a
//! slot within the last queue timeout, the queue wait is a tenth of it; a full timeout
//! without a shed restores it.

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
    /// The process holds more memory than `limits.shed_memory`.
    Memory,
}

impl Shed {
    pub fn reason(self) -> &'static str {
        match self {
            Shed::Queue => "queue",
            Shed::Lag => "lag",
            Shed::Memory => "memory",
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
    /// Resident bytes past which requests are shed; 0: memory not watched.
    memory_limit: u64,
    /// The latest resident-memory sample, bytes.
    rss: AtomicU64,
    /// When a request was last shed for want of a slot: µs after `epoch`, 0 for never.
    last_queue_shed: AtomicU64,
    epoch: Instant,
}

/// How often the lag is sampled.
const LAG_PERIOD: Duration = Duration::from_millis(10);

// === impl Shedder ===

impl Shedder {
    /// `memory_limit`: resident bytes past which requests are shed (0: not watched).
    pub fn new(
        max: usize,
        queue_timeout: Duration,
        lag_limit: Duration,
        memory_limit: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            queue_timeout,
            lag_limit,
            lag_us: AtomicU64::new(0),
            memory_limit,
            rss: AtomicU64::new(0),
            last_queue_shed: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// How long a request may queue at `now`: the full timeout, or a tenth of it while the
    /// queue has been shedding (standing queue).
    fn queue_wait(&self, now: Instant) -> Duration {
        let last = self.last_queue_shed.load(Ordering::Relaxed);
        let standing = last != 0
            && now.saturating_duration_since(self.epoch + Duration::from_micros(last))
                < self.queue_timeout;
        if standing {
            self.queue_timeout / 10
        } else {
            self.queue_timeout
        }
    }

    fn shed_for_queue(&self, now: Instant) {
        let at = now.saturating_duration_since(self.epoch).as_micros().max(1);
        self.last_queue_shed
            .store(at.min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// A slot for one upstream request, held until its response head arrives. (Real time:
    /// the queue wait is a real wait, whatever clock the node's logic runs on.)
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if self.lag() > self.lag_limit {
            return Err(Shed::Lag);
        }
        if self.memory_limit > 0 && self.rss.load(Ordering::Relaxed) > self.memory_limit {
            return Err(Shed::Memory);
        }
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let now = Instant::now();
        let wait = self.queue_wait(now);
        match tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.shed_for_queue(now + wait);
                Err(Shed::Queue)
            }
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

    /// Records a resident-memory sample, in bytes.
    pub fn sample_memory(&self, rss: u64) {
        self.rss.store(rss, Ordering::Relaxed);
    }

    /// Samples the event loop's lag until `shutdown` flips: the runtime's own view of how
    /// busy it is (a timer on a loaded worker fires late), with no clock read on the
    /// request path.
    pub async fn watch_lag(
        self: Arc<Self>,
        metrics: Arc<crate::metrics::Metrics>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = 0u32;
        loop {
            let due = Instant::now() + LAG_PERIOD;
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {
                    self.sample(due, Instant::now());
                    metrics.load(self.lag(), self.in_flight());
                    ticks = ticks.wrapping_add(1);
                    if self.memory_limit > 0 && ticks.is_multiple_of(10) {
                        if let Some(rss) = resident_bytes() {
                            self.sample_memory(rss);
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The process's resident memory (`VmRSS` in `/proc/self/status`); `None` where there is
/// no such file.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_its_memory_limit_a_node_sheds_at_once_and_recovers_under_it() {
        let shed = Shedder::new(8, Duration::from_secs(1), Duration::from_secs(1), 1 << 30);
        shed.sample_memory(2 << 30);
        assert_eq!(shed.admit().await.unwrap_err(), Shed::Memory);
        shed.sample_memory(512 << 20);
        assert!(shed.admit().await.is_ok());
        assert!(
            resident_bytes().is_some_and(|b| b > 0),
            "this process has an RSS"
        );
    }

    #[tokio::test]
    async fn past_its_slots_a_request_queues_then_is_shed_and_a_freed_slot_admits() {
        let shed = Shedder::new(2, Duration::from_millis(20), Duration::from_secs(1), 0);
        let a = shed.admit().await.unwrap();
        let _b = shed.admit().await.unwrap();
        assert_eq!(shed.in_flight(), 2);
        assert_eq!(shed.admit().await.unwrap_err(), Shed::Queue);
        drop(a);
        assert!(shed.admit().await.is_ok());
    }

    #[tokio::test]
    async fn a_late_event_loop_sheds_at_once_and_recovers_with_the_next_sample() {
        let shed = Shedder::new(8, Duration::from_secs(1), Duration::from_millis(100), 0);
        let now = Instant::now();
        shed.sample(now, now + Duration::from_millis(300));
        assert_eq!(shed.admit().await.unwrap_err(), Shed::Lag);
        shed.sample(now, now + Duration::from_millis(2));
        assert!(shed.admit().await.is_ok());
    }

    #[test]
    fn a_standing_queue_waits_a_tenth_until_a_full_timeout_passes_without_shedding() {
        let shed = Shedder::new(1, Duration::from_secs(1), Duration::from_secs(1), 0);
        let t0 = Instant::now();
        assert_eq!(shed.queue_wait(t0), Duration::from_secs(1));
        shed.shed_for_queue(t0 + Duration::from_secs(5));
        let standing = t0 + Duration::from_millis(5_500);
        assert_eq!(shed.queue_wait(standing), Duration::from_millis(100));
        let drained = t0 + Duration::from_millis(6_001);
        assert_eq!(shed.queue_wait(drained), Duration::from_secs(1));
    }
}
