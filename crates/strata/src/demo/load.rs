//! `strata demo --load`: a bounded traffic generator over the demo's edges.
//!
//! Requests follow a Zipf distribution (s = 1) over the sample catalog, as real CDN
//! traffic does, spread evenly over the edges, at a fixed rate for a fixed time. Every few
//! seconds it prints requests/s, which tier answered (read from each response's
//! `Cache-Status`: the first member that says `hit`), and the origin offload measured at the
//! sample origin itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::origin::CATALOG_SIZE;

/// Concurrent request loops.
const WORKERS: u32 = 32;
/// Seconds between reports.
const REPORT_EVERY: Duration = Duration::from_secs(3);

pub struct LoadConfig {
    /// Edge names and addresses.
    pub edges: Vec<(&'static str, SocketAddr)>,
    pub duration: Duration,
    pub rate: u32,
}

/// Which tier answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// The edge that was asked (a hot object's local copy, or the edge owns the key).
    Edge,
    /// Another node of the PoP: the key's owner on the ring.
    Owner,
    Shield,
    /// No cache had it.
    Origin,
}

/// Reads the tier that answered from `Cache-Status` members (closest to the origin first).
fn answered_by(members: &[&str], asked: &str) -> Tier {
    for member in members {
        let mut parts = member.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        if parts.any(|p| p == "hit") {
            return if name.starts_with("shield") {
                Tier::Shield
            } else if name == asked {
                Tier::Edge
            } else {
                Tier::Owner
            };
        }
    }
    Tier::Origin
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    errors: AtomicU64,
    edge: AtomicU64,
    owner: AtomicU64,
    shield: AtomicU64,
    origin: AtomicU64,
}

impl Counts {
    fn record(&self, tier: Tier) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match tier {
            Tier::Edge => &self.edge,
            Tier::Owner => &self.owner,
            Tier::Shield => &self.shield,
            Tier::Origin => &self.origin,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; 6] {
        [
            &self.requests,
            &self.errors,
            &self.edge,
            &self.owner,
            &self.shield,
            &self.origin,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// Zipf(s = 1) over `n` ranks, sampled by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / rank as f64;
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    /// The rank (0-based) for a uniform `u` in [0, 1).
    fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

/// xorshift64*: enough randomness to pick objects, without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub async fn run(config: LoadConfig, origin_served: Arc<AtomicU64>) {
    if config.edges.is_empty() || config.rate == 0 {
        return;
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(WORKERS as usize)
        .build_http();
    let zipf = Arc::new(Zipf::new(CATALOG_SIZE));
    let counts = Arc::new(Counts::default());
    let edges = Arc::new(config.edges);
    let period = Duration::from_secs_f64(f64::from(WORKERS) / f64::from(config.rate));
    let deadline = Instant::now() + config.duration;
    println!(
        "load: {} requests/s for {}, Zipf over {CATALOG_SIZE} objects, {} edges",
        config.rate,
        humantime::format_duration(config.duration),
        edges.len()
    );

    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (client, zipf, counts, edges) = (
            client.clone(),
            Arc::clone(&zipf),
            Arc::clone(&counts),
            Arc::clone(&edges),
        );
        let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(u64::from(w) + 1);
        workers.spawn(async move {
            let mut rng = Rng(seed);
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                ticker.tick().await;
                let (name, addr) =
                    edges[(rng.next_f64() * edges.len() as f64) as usize % edges.len()];
                let object = zipf.sample(rng.next_f64());
                let Ok(uri) = format!("http://{addr}/catalog/{object}.bin").parse() else {
                    continue;
                };
                let Ok(resp) = client.get(uri).await else {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let members: Vec<String> = resp
                    .headers()
                    .get_all("cache-status")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::to_string)
                    .collect();
                let ok = resp.status().is_success();
                if resp.into_body().collect().await.is_err() || !ok {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let members: Vec<&str> = members.iter().map(String::as_str).collect();
                counts.record(answered_by(&members, name));
            }
        });
    }

    let started = Instant::now();
    let origin_at_start = origin_served.load(Ordering::Relaxed);
    let mut last = (counts.snapshot(), origin_at_start, Instant::now());
    let mut report =
        tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
    loop {
        tokio::select! {
            _ = report.tick() => {}
            done = workers.join_next() => {
                if done.is_none() { break; }
                continue;
            }
        }
        let now = (
            counts.snapshot(),
            origin_served.load(Ordering::Relaxed),
            Instant::now(),
        );
        print_line("load", &last, &now);
        last = now;
    }
    let end = (
        counts.snapshot(),
        origin_served.load(Ordering::Relaxed),
        Instant::now(),
    );
    print_line(
        "load done, overall",
        &([0; 6], origin_at_start, started),
        &end,
    );
}

fn print_line(label: &str, from: &([u64; 6], u64, Instant), to: &([u64; 6], u64, Instant)) {
    let d: Vec<u64> = (0..6).map(|i| to.0[i] - from.0[i]).collect();
    let (requests, errors) = (d[0], d[1]);
    let secs = to.2.duration_since(from.2).as_secs_f64().max(0.001);
    let pct = |n: u64| 100.0 * n as f64 / requests.max(1) as f64;
    let origin_requests = to.1.saturating_sub(from.1);
    let offload = 100.0 * (1.0 - origin_requests as f64 / requests.max(1) as f64);
    println!(
        "{label}: {:>6.0} req/s  hits: edge {:>5.1}%  owner {:>5.1}%  shield {:>5.1}%  miss {:>5.1}%  origin offload {:>5.1}%  errors {errors}",
        requests as f64 / secs,
        pct(d[2]),
        pct(d[3]),
        pct(d[4]),
        pct(d[5]),
        offload.max(0.0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_member_that_hit_names_the_tier() {
        let shield = [
            "shield-1; hit",
            "edge-a2; fwd=uri-miss; stored",
            "edge-a1; fwd=bypass",
        ];
        assert_eq!(answered_by(&shield, "edge-a1"), Tier::Shield);
        let owner = ["edge-a2; hit", "edge-a1; fwd=bypass"];
        assert_eq!(answered_by(&owner, "edge-a1"), Tier::Owner);
        assert_eq!(answered_by(&["edge-a1; hit"], "edge-a1"), Tier::Edge);
        let miss = [
            "shield-1; fwd=uri-miss; stored",
            "edge-a1; fwd=uri-miss; stored",
        ];
        assert_eq!(answered_by(&miss, "edge-a1"), Tier::Origin);
    }

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let z = Zipf::new(1000);
        let mut rng = Rng(42);
        let mut top10 = 0;
        for _ in 0..10_000 {
            let r = z.sample(rng.next_f64());
            assert!(r < 1000);
            if r < 10 {
                top10 += 1;
            }
        }
        // H(10)/H(1000) ≈ 2.93/7.49 ≈ 39%.
        assert!((3_400..4_400).contains(&top10), "{top10}");
    }
}
