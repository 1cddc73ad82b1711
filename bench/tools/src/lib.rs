//! What the load generators share: the latency summary they print.

/// The `p` quantile (0..=1) of sorted latencies.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints one run as JSON: requests, requests/s over `seconds` (at least), p50, p99 (µs)
/// and errors. Sorts `latencies`.
pub fn print_rate(latencies: &mut [u64], errors: u64, seconds: f64) {
    latencies.sort_unstable();
    println!(
        "{{\"requests\":{},\"rps\":{:.0},\"p50_us\":{},\"p99_us\":{},\"errors\":{}}}",
        latencies.len(),
        latencies.len() as f64 / seconds,
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        errors
    );
}
