//! Hit ratio (objects and bytes) and throughput of eviction policies on a Zipf workload
//! with object sizes, bounded in bytes as Strata's memory tier is.
//!
//! `cargo run --release -- [requests] [keys]`. One thread, same seeded trace for every
//! policy. Policies: quick_cache (S3-FIFO-like CLOCK-Pro), TinyUFO (TinyLFU + S3-FIFO,
//! Pingora), moka (W-TinyLFU), LRU (baseline). Weights are bytes; TinyUFO weights are u16,
//! so it is given KiB units.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

struct Trace {
    keys: Vec<u64>,
    sizes: Vec<u64>,
}

fn trace(requests: usize, keys: u64, exponent: f64, seed: u64) -> Trace {
    let mut rng = SmallRng::seed_from_u64(seed);
    let zipf = Zipf::new(keys as f64, exponent).expect("zipf");
    // Sizes: mostly small web objects, some segments, a few large files (1 KiB .. 4 MiB).
    let sizes = (0..=keys)
        .map(|_| {
            let r: f64 = rng.random();
            if r < 0.7 {
                rng.random_range(1_024..32_768)
            } else if r < 0.95 {
                rng.random_range(32_768..1_048_576)
            } else {
                rng.random_range(1_048_576..4_194_304)
            }
        })
        .collect();
    let keys = (0..requests).map(|_| zipf.sample(&mut rng) as u64).collect();
    Trace { keys, sizes }
}

trait Policy {
    fn name(&self) -> &'static str;
    /// Returns whether the access hit; on a miss the object is inserted.
    fn access(&mut self, key: u64, size: u64) -> bool;
}

struct QuickCache(quick_cache::sync::Cache<u64, u64, Bytes>);
#[derive(Clone)]
struct Bytes;
impl quick_cache::Weighter<u64, u64> for Bytes {
    fn weight(&self, _k: &u64, v: &u64) -> u64 {
        *v
    }
}
impl Policy for QuickCache {
    fn name(&self) -> &'static str {
        "quick_cache (S3-FIFO/CLOCK-Pro)"
    }
    fn access(&mut self, key: u64, size: u64) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        self.0.insert(key, size);
        false
    }
}

struct Ufo(tinyufo::TinyUfo<u64, u64>);
impl Policy for Ufo {
    fn name(&self) -> &'static str {
        "TinyUFO (TinyLFU + S3-FIFO)"
    }
    fn access(&mut self, key: u64, size: u64) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        let kib = size.div_ceil(1024).min(u64::from(u16::MAX)) as u16;
        self.0.put(key, size, kib);
        false
    }
}

struct Moka(moka::sync::Cache<u64, u64>);
impl Policy for Moka {
    fn name(&self) -> &'static str {
        "moka (W-TinyLFU)"
    }
    fn access(&mut self, key: u64, size: u64) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        self.0.insert(key, size);
        false
    }
}

struct Lru {
    cache: lru::LruCache<u64, u64>,
    bytes: u64,
    capacity: u64,
}
impl Policy for Lru {
    fn name(&self) -> &'static str {
        "LRU (baseline)"
    }
    fn access(&mut self, key: u64, size: u64) -> bool {
        if self.cache.get(&key).is_some() {
            return true;
        }
        if size > self.capacity {
            return false;
        }
        self.cache.put(key, size);
        self.bytes += size;
        while self.bytes > self.capacity {
            match self.cache.pop_lru() {
                Some((_, s)) => self.bytes -= s,
                None => break,
            }
        }
        false
    }
}

fn run(policy: &mut dyn Policy, trace: &Trace) -> (f64, f64, f64) {
    let (mut hits, mut hit_bytes, mut total_bytes) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for &k in &trace.keys {
        let size = trace.sizes[k as usize];
        total_bytes += size;
        if policy.access(k, size) {
            hits += 1;
            hit_bytes += size;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (
        hits as f64 / trace.keys.len() as f64,
        hit_bytes as f64 / total_bytes as f64,
        trace.keys.len() as f64 / secs / 1e6,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let keys: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    // Mean object ~290 KiB; the catalogue is ~58 GiB, so these are 0.1%..2% of it.
    let capacities: [u64; 3] = [64 << 20, 256 << 20, 1 << 30];
    println!("Zipf workload: {requests} requests over {keys} keys, object sizes 1 KiB..4 MiB, seed 42");
    for exponent in [0.8, 1.0] {
        let t = trace(requests, keys, exponent, 42);
        for capacity in capacities {
            println!();
            println!("zipf s={exponent}, capacity {} MiB", capacity >> 20);
            println!("{:<34} {:>10} {:>10} {:>12}", "policy", "hit ratio", "byte hit", "M ops/s");
            let items = (capacity / 300_000).max(16) as usize;
            let mut policies: Vec<Box<dyn Policy>> = vec![
                Box::new(QuickCache(quick_cache::sync::Cache::with_weighter(items, capacity, Bytes))),
                Box::new(Ufo(tinyufo::TinyUfo::new((capacity >> 10) as usize, items))),
                Box::new(Moka(moka::sync::Cache::builder().weigher(|_k, v: &u64| (*v).min(u64::from(u32::MAX)) as u32).max_capacity(capacity).build())),
                Box::new(Lru { cache: lru::LruCache::unbounded(), bytes: 0, capacity }),
            ];
            for p in policies.iter_mut() {
                let (hr, bhr, mops) = run(p.as_mut(), &t);
                println!("{:<34} {:>9.2}% {:>9.2}% {:>12.2}", p.name(), hr * 100.0, bhr * 100.0, mops);
            }
        }
    }
}
