//! A latency histogram fine enough to judge a p99 against thresholds such as 200 ms and
//! 500 ms (Prometheus-style doubling buckets are too coarse there: 410 ms and 819 ms).
//!
//! Buckets grow by 1/8 (about 12%) from 0.1 ms to about 60 s. Counts are cumulative from the
//! node's start; a monitor takes the difference of two reports to get a window's figures.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, microseconds. The last bucket has no upper bound.
pub fn bounds_us() -> &'static [u64] {
    static BOUNDS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut v = Vec::new();
        let mut b = 100.0f64;
        while b < 60_000_000.0 {
            v.push(b.round() as u64);
            b *= 1.125;
        }
        v
    })
}

/// Lock-free histogram a node records every response's time into.
pub struct LatencyHistogram {
    /// One count per bound, plus the overflow bucket.
    counts: Vec<AtomicU64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: (0..=bounds_us().len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, micros: u64) {
        let i = bounds_us().partition_point(|&b| b < micros);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative), the overflow bucket last.
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

/// The `q` quantile (0..=1), in milliseconds, of the responses counted in `now` but not in
/// `before` (both per-bucket counts as [`LatencyHistogram::counts`] gives them). Linear
/// within the bucket. `None` when the window holds no response or the shapes differ.
pub fn quantile_ms(before: &[u64], now: &[u64], q: f64) -> Option<f64> {
    let bounds = bounds_us();
    if now.len() != bounds.len() + 1 || (!before.is_empty() && before.len() != now.len()) {
        return None;
    }
    let delta: Vec<u64> = now
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect();
    let total: u64 = delta.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (i, &c) in delta.iter().enumerate() {
        if c == 0 {
            continue;
        }
        if (seen + c) as f64 >= rank {
            let lo = if i == 0 { 0 } else { bounds[i - 1] } as f64;
            let hi = bounds
                .get(i)
                .copied()
                .unwrap_or(bounds[bounds.len() - 1] * 2) as f64;
            let within = (rank - seen as f64) / c as f64;
            return Some((lo + (hi - lo) * within) / 1000.0);
        }
        seen += c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_within_a_bucket_of_the_truth() {
        let h = LatencyHistogram::default();
        // 990 fast responses (5 ms) and 10 slow ones (450 ms): p99 is the fast group's edge,
        // p99.5 is in the slow group.
        for _ in 0..990 {
            h.record(5_000);
        }
        for _ in 0..10 {
            h.record(450_000);
        }
        let p99 = quantile_ms(&[], &h.counts(), 0.99).unwrap();
        assert!((4.4..=5.7).contains(&p99), "{p99}");
        let p995 = quantile_ms(&[], &h.counts(), 0.995).unwrap();
        assert!((400.0..=510.0).contains(&p995), "{p995}");
    }

    #[test]
    fn a_window_counts_only_what_happened_in_it() {
        let h = LatencyHistogram::default();
        for _ in 0..100 {
            h.record(900_000);
        }
        let before = h.counts();
        for _ in 0..100 {
            h.record(1_000);
        }
        let p99 = quantile_ms(&before, &h.counts(), 0.99).unwrap();
        assert!(p99 < 1.2, "{p99}");
        assert_eq!(quantile_ms(&h.counts(), &h.counts(), 0.99), None);
    }

    #[test]
    fn mismatched_shapes_are_refused_not_misread() {
        assert_eq!(quantile_ms(&[], &[1, 2, 3], 0.5), None);
    }

    #[test]
    fn bucket_edges_cover_threshold_values_finely() {
        let b = bounds_us();
        // Neighbouring bounds around 500 ms are within 13% of each other.
        let i = b.partition_point(|&x| x < 500_000);
        assert!(b[i] as f64 / b[i - 1] as f64 <= 1.13);
        assert!(*b.last().unwrap() >= 50_000_000);
    }
}
