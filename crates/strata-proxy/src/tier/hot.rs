//! Hot objects: keys requested so often on this node that it keeps its own copy instead
//! of asking the key's owner in the PoP every time.
//!
//! The rate is a sliding window approximated from two fixed windows (the previous one,
//! weighted by how much of it still overlaps the sliding window, plus the current one), so
//! a tracked key costs two counters. A key at or above the threshold is hot; it stays hot
//! until its rate has stayed below the threshold for the cool-down, so a key hovering at
//! the threshold does not flap between local and owner copies.
//!
//! Time is passed in; the table of tracked keys is bounded in bytes, key text included
//! (least recently seen go first): clients choose the keys, and 100,000 of them at 8 KiB
//! each would otherwise be 800 MB.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_http_cache::CacheKey;

/// When a key counts as hot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotConfig {
    /// Requests per second, over the window, at or above which a key is hot.
    pub threshold: f64,
    pub window: Duration,
    /// How long a key stays hot after its rate last reached the threshold.
    pub cooldown: Duration,
    /// Bytes the tracked keys may take (text and counters).
    pub max_bytes: u64,
}

/// One key's counters.
#[derive(Debug)]
struct Counter {
    key: CacheKey,
    window_start: Instant,
    current: u32,
    previous: u32,
    hot_until: Option<Instant>,
}

impl Counter {
    fn new(key: CacheKey, now: Instant) -> Self {
        Self {
            key,
            window_start: now,
            current: 0,
            previous: 0,
            hot_until: None,
        }
    }

    /// Counts one request at `now` and says whether the key is hot.
    fn record(&mut self, now: Instant, cfg: &HotConfig) -> bool {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= cfg.window {
            let windows = (elapsed.as_nanos() / cfg.window.as_nanos().max(1)) as u32;
            self.previous = if windows == 1 { self.current } else { 0 };
            self.current = 0;
            self.window_start += cfg.window * windows;
        }
        self.current = self.current.saturating_add(1);
        if self.rate(now, cfg) >= cfg.threshold {
            self.hot_until = Some(now + cfg.cooldown);
        }
        self.is_hot(now)
    }

    /// Requests per second over the sliding window ending at `now`.
    fn rate(&self, now: Instant, cfg: &HotConfig) -> f64 {
        let window = cfg.window.as_secs_f64();
        let into = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        let overlap = (1.0 - into / window).clamp(0.0, 1.0);
        (f64::from(self.previous) * overlap + f64::from(self.current)) / window
    }

    fn is_hot(&self, now: Instant) -> bool {
        self.hot_until.is_some_and(|until| now < until)
    }
}

/// What a tracked key costs besides its text: the counters, the table entry.
const COUNTER_OVERHEAD: usize = 192;

/// Per-node request rates of recently requested keys.
pub struct HotTracker {
    config: HotConfig,
    counters: moka::sync::Cache<u64, Arc<Mutex<Counter>>>,
}

impl HotTracker {
    pub fn new(config: HotConfig) -> Self {
        let counters = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_: &u64, c: &Arc<Mutex<Counter>>| {
                let key = c.lock().map_or(0, |c| c.key.as_str().len());
                u32::try_from(key + COUNTER_OVERHEAD).unwrap_or(u32::MAX)
            })
            // A key unseen for longer than a window plus its cool-down has nothing left.
            .time_to_idle(config.window * 2 + config.cooldown)
            .build();
        Self { config, counters }
    }

    /// Counts a request for `key` and says whether it is hot now.
    pub fn record(&self, key: &CacheKey, now: Instant) -> bool {
        let counter = self.counters.get_with(key.hash64(), || {
            Arc::new(Mutex::new(Counter::new(key.clone(), now)))
        });
        let mut c = counter.lock().unwrap_or_else(|e| e.into_inner());
        let was = c.is_hot(now);
        let hot = c.record(now, &self.config);
        if hot && !was {
            tracing::debug!(key = %c.key, "object is hot: cached on this node too");
        }
        hot
    }

    /// The keys hot at `now` with their current rates, highest first, at most `limit`.
    pub fn hot_keys(&self, now: Instant, limit: usize) -> Vec<(String, f64)> {
        let mut hot: Vec<(String, f64)> = self
            .counters
            .iter()
            .filter_map(|(_, c)| {
                let c = c.lock().unwrap_or_else(|e| e.into_inner());
                c.is_hot(now)
                    .then(|| (c.key.as_str().to_string(), c.rate(now, &self.config)))
            })
            .collect();
        hot.sort_by(|a, b| b.1.total_cmp(&a.1));
        hot.truncate(limit);
        hot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: HotConfig = HotConfig {
        threshold: 10.0,
        window: Duration::from_secs(1),
        cooldown: Duration::from_secs(5),
        max_bytes: 1 << 20,
    };

    fn key(path: &str) -> CacheKey {
        CacheKey::new("http", "example.com", path, None, &Default::default())
    }

    #[test]
    fn a_key_becomes_hot_at_the_threshold_rate() {
        let t = HotTracker::new(CFG);
        let start = Instant::now();
        let k = key("/a");
        // 9 requests within the first window: below 10/s.
        for i in 0..9 {
            assert!(!t.record(&k, start + Duration::from_millis(i * 10)));
        }
        assert!(t.record(&k, start + Duration::from_millis(100)));
        assert_eq!(t.hot_keys(start + Duration::from_millis(100), 10).len(), 1);
        assert!(t.hot_keys(start, 10)[0].0.ends_with("/a"));
    }

    #[test]
    fn a_slow_steady_key_never_becomes_hot() {
        let t = HotTracker::new(CFG);
        let start = Instant::now();
        let k = key("/slow");
        // 5 requests per second for a minute.
        for i in 0..300 {
            assert!(!t.record(&k, start + Duration::from_millis(i * 200)));
        }
    }

    #[test]
    fn the_sliding_window_counts_the_previous_window_by_overlap() {
        let mut c = Counter::new(key("/k"), Instant::now());
        let start = c.window_start;
        for _ in 0..8 {
            c.record(start, &CFG);
        }
        // Half into the next window, half of the previous 8 still count: 4 + 6 = 10.
        let mid = start + Duration::from_millis(1500);
        for _ in 0..5 {
            assert!(!c.record(mid, &CFG));
        }
        assert!(c.record(mid, &CFG));
    }

    #[test]
    fn a_hot_key_cools_down_only_after_the_cooldown_below_threshold() {
        let t = HotTracker::new(CFG);
        let start = Instant::now();
        let k = key("/b");
        for i in 0..20 {
            t.record(&k, start + Duration::from_millis(i));
        }
        // One request 4 s later: far below the threshold but still within the cool-down.
        assert!(t.record(&k, start + Duration::from_secs(4)));
        // 5 s after the rate was last at the threshold it drops back.
        assert!(!t.record(&k, start + Duration::from_millis(5100)));
        assert!(t
            .hot_keys(start + Duration::from_millis(5100), 10)
            .is_empty());
    }
}
