//! What the load generators share: collecting their workers, and the latency summary they
//! print.

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

/// Waits for every worker (its latencies in µs, its errors), then prints the run, over the
/// time since `started` (and at least `seconds`).
pub async fn report(
    tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, u64)>>,
    started: std::time::Instant,
    seconds: u64,
) {
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (lat, e) = t.await.expect("worker");
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds as f64);
    print_rate(&mut all, errors, elapsed);
}
