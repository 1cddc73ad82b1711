//! What the host costs on its own, for `bench/compute.sh`: the time to make a filter
//! instance (instantiate from the pooling allocator, `_initialize`, root context,
//! `proxy_on_vm_start`, `proxy_on_configure`), p50/p99 over N, and the resident memory a
//! warm instance holds.
//!
//!   cargo run --release -p strata-compute --example instantiate -- FILTER.wasm [N]

use std::sync::Arc;
use std::time::Instant;

use strata_compute::{Filter, Limits, MemoryShared, Runtime, Spec};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: instantiate FILTER.wasm [N]")?;
    let n: usize = args
        .next()
        .map_or(Ok(5000), |s| s.parse())
        .map_err(|e| format!("{e}"))?;
    let wasm = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let runtime = Arc::new(Runtime::new(Limits::default())?);
    let filter = Filter::load(
        &runtime,
        Spec {
            name: "bench",
            wasm: &wasm,
            sha256: None,
            config: b"",
            shared: Arc::new(MemoryShared::default()),
        },
    )
    .map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        filter.drain_idle();
        let started = Instant::now();
        filter.prewarm(1).map_err(|e| e.to_string())?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "instantiate + start ({} runs): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        n,
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        at(1.0).as_secs_f64() * 1e6
    );
    filter.drain_idle();
    let before = rss_bytes();
    let warm = 64;
    filter.prewarm(warm).map_err(|e| e.to_string())?;
    let after = rss_bytes();
    println!(
        "{} warm instances: {:.0} KiB resident each ({} KiB in all)",
        filter.idle(),
        (after.saturating_sub(before)) as f64 / 1024.0 / filter.idle().max(1) as f64,
        after.saturating_sub(before) / 1024
    );
    Ok(())
}
