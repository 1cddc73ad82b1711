//! A service's origins: priority groups, weights within a group, a circuit breaker and a
//! connection limit per origin.
//!
//! A request tries origins in order: the lowest priority number first; within a priority,
//! smooth weighted round-robin (nginx's algorithm) picks who goes first and the rest follow
//! by weight. Origins whose breaker is open are skipped (fail fast).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::breaker::{Breaker, BreakerConfig, Verdict};
use super::{Origin, UpstreamError};

/// One origin and its live state.
pub struct OriginState {
    pub origin: Origin,
    pub priority: u32,
    pub weight: u32,
    breaker: Mutex<Breaker>,
    connections: Arc<Semaphore>,
    max_connections: usize,
    /// Smooth weighted round-robin current weight.
    current: AtomicI64,
}

impl OriginState {
    pub fn new(
        origin: Origin,
        priority: u32,
        weight: u32,
        max_connections: usize,
        breaker: BreakerConfig,
    ) -> Self {
        Self {
            origin,
            priority,
            weight: weight.max(1),
            breaker: Mutex::new(Breaker::new(breaker)),
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
            max_connections: max_connections.max(1),
            current: AtomicI64::new(0),
        }
    }

    pub fn name(&self) -> String {
        self.origin.authority.to_string()
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn allows(&self, now: Instant) -> bool {
        self.breaker().allows(now)
    }

    /// Whether the breaker refuses requests now (no side effects).
    pub fn refuses(&self, now: Instant) -> bool {
        self.breaker().refuses(now)
    }

    /// Starts an attempt: the breaker's verdict must be given through the returned guard,
    /// or the attempt counts as abandoned when it is dropped (a cancelled request).
    pub fn attempt(self: &Arc<Self>, now: Instant) -> Option<Attempt> {
        self.allows(now).then(|| Attempt {
            origin: Arc::clone(self),
            done: false,
        })
    }

    /// An attempt that goes ahead whatever the breaker says: every origin of the pool is
    /// open, and failing closed is worse than trying the least-bad one.
    pub fn panic_attempt(self: &Arc<Self>) -> Attempt {
        Attempt {
            origin: Arc::clone(self),
            done: false,
        }
    }

    /// Records an exchange's verdict (requests and active probes).
    pub fn record(&self, verdict: Verdict, now: Instant) {
        if self.breaker().record(verdict, now) {
            crate::warn_throttled!(std::time::Duration::from_secs(10), origin = %self.origin.authority, ?verdict, "circuit breaker opened");
        }
    }

    /// When the breaker opened, while it is open.
    pub fn opened_at(&self) -> Option<Instant> {
        self.breaker().opened_at()
    }

    pub fn breaker_state(&self) -> &'static str {
        self.breaker().name()
    }

    /// Connections in use to this origin.
    pub fn busy(&self) -> usize {
        self.max_connections - self.connections.available_permits()
    }

    /// Waits for a connection slot, up to `wait`. Requests queue here rather than open
    /// more sockets than the origin is allowed.
    pub async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit, UpstreamError> {
        match tokio::time::timeout(wait, Arc::clone(&self.connections).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(UpstreamError::ConnectionLimit),
        }
    }
}

/// One request's use of an origin's breaker.
pub struct Attempt {
    origin: Arc<OriginState>,
    done: bool,
}

impl Attempt {
    /// Ends the attempt with its verdict on the origin's health.
    pub fn finish(mut self, verdict: Verdict, now: Instant) {
        self.done = true;
        self.origin.record(verdict, now);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.origin.breaker().abandon();
        }
    }
}

/// The origins of one service.
pub struct OriginSet {
    origins: Vec<Arc<OriginState>>,
}

impl std::fmt::Debug for OriginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.origins
                    .iter()
                    .map(|o| (o.name(), o.priority, o.weight, o.breaker_state())),
            )
            .finish()
    }
}

impl OriginSet {
    pub fn new(mut origins: Vec<OriginState>) -> Self {
        origins.sort_by_key(|o| o.priority);
        Self {
            origins: origins.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn all(&self) -> &[Arc<OriginState>] {
        &self.origins
    }

    /// The order in which to try origins for one request.
    pub fn order(&self) -> Vec<Arc<OriginState>> {
        let mut out = Vec::with_capacity(self.origins.len());
        let mut start = 0;
        while start < self.origins.len() {
            let prio = self.origins[start].priority;
            let end = self.origins[start..]
                .iter()
                .position(|o| o.priority != prio)
                .map_or(self.origins.len(), |p| start + p);
            let group = &self.origins[start..end];
            let first = swrr_pick(group);
            out.push(Arc::clone(&group[first]));
            let mut rest: Vec<_> = group
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != first)
                .map(|(_, o)| Arc::clone(o))
                .collect();
            rest.sort_by_key(|o| std::cmp::Reverse(o.weight));
            out.extend(rest);
            start = end;
        }
        out
    }
}

/// Smooth weighted round-robin: each pick adds every weight to its current value, picks
/// the largest, and subtracts the total from the winner. Spreads picks evenly in time.
fn swrr_pick(group: &[Arc<OriginState>]) -> usize {
    if group.len() == 1 {
        return 0;
    }
    let total: i64 = group.iter().map(|o| i64::from(o.weight)).sum();
    let mut best = 0;
    let mut best_value = i64::MIN;
    for (i, o) in group.iter().enumerate() {
        let v = o.current.fetch_add(i64::from(o.weight), Ordering::Relaxed) + i64::from(o.weight);
        if v > best_value {
            best_value = v;
            best = i;
        }
    }
    group[best].current.fetch_sub(total, Ordering::Relaxed);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(port: u16, priority: u32, weight: u32) -> OriginState {
        let cfg = BreakerConfig::transport_only(3, 1, Duration::from_secs(5));
        OriginState::new(
            Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            priority,
            weight,
            4,
            cfg,
        )
    }

    #[test]
    fn lower_priority_number_goes_first_then_failover_group() {
        let set = OriginSet::new(vec![state(2, 2, 1), state(1, 1, 1)]);
        let order: Vec<_> = set
            .order()
            .iter()
            .map(|o| o.origin.authority.port_u16().unwrap())
            .collect();
        assert_eq!(order, vec![1, 2]);
    }

    #[test]
    fn weights_split_first_picks_within_a_priority() {
        let set = OriginSet::new(vec![state(1, 1, 3), state(2, 1, 1)]);
        let mut firsts = [0; 3];
        for _ in 0..400 {
            firsts[set.order()[0].origin.authority.port_u16().unwrap() as usize] += 1;
        }
        assert_eq!(firsts[1], 300);
        assert_eq!(firsts[2], 100);
    }

    #[tokio::test]
    async fn connection_limit_queues_then_times_out() {
        let o = state(1, 1, 1);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(o.acquire(Duration::from_millis(10)).await.unwrap());
        }
        assert_eq!(o.busy(), 4);
        assert_eq!(
            o.acquire(Duration::from_millis(10)).await.unwrap_err(),
            UpstreamError::ConnectionLimit
        );
        held.pop();
        assert!(o.acquire(Duration::from_millis(10)).await.is_ok());
    }
}
