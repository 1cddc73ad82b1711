//! The anycast announcer: runs as an ExaBGP process (ExaBGP starts it and reads its
//! stdout) and announces the PoP's anycast prefixes while the local node is healthy.
//!
//! - It probes the node's health endpoint itself (not through the control plane: a PoP
//!   cut off from the control plane must still withdraw), judging with the same
//!   [`NodeHealth`] as the monitor: a node must be *healthy* to be announced, and it is
//!   withdrawn as soon as it is degraded (5xx share, p99, load, no reachable upstream) —
//!   before it fails outright — or stops answering.
//! - Withdrawals are damped ([`Damper`]): a node that flaps is not announced again until
//!   its penalty decays, so the route seen by the Internet does not flap with it.
//! - Lines follow ExaBGP's text API: `announce route 192.0.2.0/24 next-hop self` and
//!   `withdraw route …`, flushed one by one. Stdin (ExaBGP's acks) is read and ignored so
//!   ExaBGP never blocks writing to it. When ExaBGP is gone, the next write fails and the
//!   announcer exits.
//! - On SIGTERM/SIGINT the routes are withdrawn before exiting (to drain a PoP by hand).
//!
//! Config (TOML):
//! ```toml
//! node = "http://127.0.0.1:8080"   # the local node's HTTP listener
//! prefixes = ["192.0.2.0/24"]
//! next_hop = "self"
//! interval = "1s"
//! [health]                          # the monitor's thresholds (strata-health)
//! rise = 3
//! [damping]
//! half_life = "60s"
//! ```

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Deserialize;
use strata_health::damping::{Damper, DampingConfig};
use strata_health::node::Probe;
use strata_health::{NodeHealth, NodeState, Thresholds};
use strata_wire::config::{parse_toml, ConfigError, Seconds};
use strata_wire::health::{health_url, HealthProber};

use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnycastConfig {
    /// The local node's HTTP listener, e.g. `http://127.0.0.1:8080`.
    pub node: String,
    pub prefixes: Vec<IpNet>,
    #[serde(default = "default_next_hop")]
    pub next_hop: String,
    #[serde(default = "default_interval")]
    pub interval: Seconds,
    /// Probe timeout (default: half the interval).
    #[serde(default)]
    pub timeout: Option<Seconds>,
    #[serde(default)]
    pub health: Thresholds,
    #[serde(default)]
    pub damping: DampingSection,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DampingSection {
    pub withdraw_penalty: f64,
    pub suppress: f64,
    pub reuse: f64,
    pub half_life: Seconds,
    pub max_suppress: Seconds,
}

impl Default for DampingSection {
    fn default() -> Self {
        let d = DampingConfig::default();
        Self {
            withdraw_penalty: d.withdraw_penalty,
            suppress: d.suppress,
            reuse: d.reuse,
            half_life: Seconds(d.half_life),
            max_suppress: Seconds(d.max_suppress),
        }
    }
}

impl From<&DampingSection> for DampingConfig {
    fn from(d: &DampingSection) -> Self {
        DampingConfig {
            withdraw_penalty: d.withdraw_penalty,
            suppress: d.suppress,
            reuse: d.reuse,
            half_life: d.half_life.0,
            max_suppress: d.max_suppress.0,
        }
    }
}

fn default_next_hop() -> String {
    "self".into()
}
fn default_interval() -> Seconds {
    Seconds(Duration::from_secs(1))
}

impl AnycastConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: AnycastConfig = parse_toml(text)?;
        let err = |k: &str, m: &str| ConfigError::new(k, m);
        if health_url(&c.node).is_none_or(|u| u.scheme_str() != Some("http")) {
            return Err(err("node", "must be the node's http:// URL"));
        }
        if c.prefixes.is_empty() {
            return Err(err("prefixes", "at least one prefix is required"));
        }
        if c.next_hop != "self" && c.next_hop.parse::<std::net::IpAddr>().is_err() {
            return Err(err("next_hop", "must be \"self\" or an IP address"));
        }
        if c.interval.0 < Duration::from_millis(50) {
            return Err(err("interval", "must be at least 50ms"));
        }
        if c.timeout().is_zero() || c.timeout() >= c.interval.0 {
            return Err(err("timeout", "must be shorter than interval"));
        }
        if let Err((key, why)) = c.health.check() {
            return Err(ConfigError::new(format!("health.{key}"), why));
        }
        let d = &c.damping;
        if !(d.reuse > 0.0 && d.reuse < d.suppress && d.withdraw_penalty > 0.0) {
            return Err(err(
                "damping",
                "needs 0 < reuse < suppress and a positive withdraw_penalty",
            ));
        }
        if d.half_life.0.is_zero() {
            return Err(err("damping.half_life", "must be longer than zero"));
        }
        Ok(c)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Self::from_toml(&text)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(self.interval.0 / 2, |t| t.0)
    }
}

// === impl Announcer ===

/// The decision logic, probe by probe. No IO; time is passed in.
pub struct Announcer {
    prefixes: Vec<IpNet>,
    next_hop: String,
    thresholds: Thresholds,
    health: NodeHealth,
    damper: Damper,
    announced: bool,
}

impl Announcer {
    /// Starts withdrawn, with a node not yet probed: it must prove healthy (`rise`).
    pub fn new(config: &AnycastConfig, now: Instant) -> Self {
        Self {
            prefixes: config.prefixes.clone(),
            next_hop: config.next_hop.clone(),
            thresholds: config.health.clone(),
            health: NodeHealth::default(),
            damper: Damper::new((&config.damping).into(), now),
            announced: false,
        }
    }

    pub fn announced(&self) -> bool {
        self.announced
    }

    /// Takes one probe; returns the API lines to write (none when nothing changes).
    pub fn step(&mut self, probe: Probe, now: Instant) -> Vec<String> {
        if let Some(state) = self.health.observe(probe, now, &self.thresholds) {
            tracing::info!(
                state = state.as_str(),
                reason = self.health.reason(),
                "anycast: node health"
            );
        }
        let healthy = self.health.state() == NodeState::Healthy;
        if self.announced && !healthy {
            self.damper.withdrawn(now);
            return self.withdraw();
        }
        if !self.announced && healthy {
            if self.damper.may_announce(now) {
                self.announced = true;
                return self.lines("announce");
            }
            tracing::info!(reuse_in = ?self.damper.reuse_in(now), "anycast: healthy, but damped");
        }
        Vec::new()
    }

    /// Withdraws everything (shutdown, drain).
    pub fn withdraw(&mut self) -> Vec<String> {
        if !self.announced {
            return Vec::new();
        }
        self.announced = false;
        self.lines("withdraw")
    }

    fn lines(&self, verb: &str) -> Vec<String> {
        self.prefixes
            .iter()
            .map(|p| format!("{verb} route {p} next-hop {}", self.next_hop))
            .collect()
    }
}

/// Runs the announcer on stdin/stdout until ExaBGP closes stdin or a signal arrives.
pub async fn run(
    config: AnycastConfig,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let url = health_url(&config.node).ok_or_else(|| std::io::Error::other("node URL"))?;
    let prober = HealthProber::new(config.timeout());
    let mut announcer = Announcer::new(&config, Instant::now());
    let mut out = tokio::io::stdout();
    // ExaBGP's acks ("done", "error") and notices: read so it never blocks writing them.
    // A plain thread, not tokio's stdin: a blocking read there would keep the runtime (and
    // so the process ExaBGP waits for at shutdown) alive.
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => tracing::debug!(line = %l, "anycast: from exabgp"),
                Err(_) => return,
            }
        }
    });
    let mut tick = tokio::time::interval(config.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let probe = prober.probe(url.clone()).await;
                write(&mut out, announcer.step(probe, Instant::now())).await?;
            }
            _ = &mut stop => {
                write(&mut out, announcer.withdraw()).await?;
                return Ok(());
            }
        }
    }
}

async fn write(out: &mut tokio::io::Stdout, lines: Vec<String>) -> std::io::Result<()> {
    for l in lines {
        tracing::info!(line = %l, "anycast: to exabgp");
        out.write_all(format!("{l}\n").as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_health::HealthReport;

    fn config() -> AnycastConfig {
        AnycastConfig::from_toml(
            r#"
node = "http://127.0.0.1:8080"
prefixes = ["192.0.2.0/24", "2001:db8::/48"]
interval = "1s"
[health]
rise = 2
"#,
        )
        .unwrap()
    }

    fn ok(responses: u64, errors: u64) -> Probe {
        Probe::Answered(HealthReport {
            responses,
            responses_5xx: errors,
            latency_buckets: vec![0; strata_health::latency::bounds_us().len() + 1],
            ..HealthReport::default()
        })
    }

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn announces_once_the_node_proved_healthy_and_withdraws_when_it_stops_answering() {
        let t0 = Instant::now();
        let mut a = Announcer::new(&config(), t0);
        assert!(a.step(ok(0, 0), t0).is_empty(), "rise is 2");
        assert_eq!(
            a.step(ok(0, 0), at(t0, 1)),
            vec![
                "announce route 192.0.2.0/24 next-hop self",
                "announce route 2001:db8::/48 next-hop self"
            ]
        );
        assert!(a.step(ok(0, 0), at(t0, 2)).is_empty(), "no repeats");
        assert_eq!(
            a.step(Probe::Failed("refused".into()), at(t0, 3))[0],
            "withdraw route 192.0.2.0/24 next-hop self"
        );
    }

    #[test]
    fn a_degraded_node_is_withdrawn_before_it_fails() {
        let t0 = Instant::now();
        let mut a = Announcer::new(&config(), t0);
        a.step(ok(0, 0), t0);
        a.step(ok(0, 0), at(t0, 1));
        assert!(a.announced());
        // 10% 5xx over the window: degraded, still answering.
        let lines = a.step(ok(1000, 100), at(t0, 2));
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("withdraw"));
    }

    #[test]
    fn a_flapping_node_is_held_off_by_damping() {
        let t0 = Instant::now();
        let mut a = Announcer::new(&config(), t0);
        let mut t = 0;
        let mut announcements = 0;
        // Up two probes, down one, for 30 s.
        while t < 30 {
            for p in [ok(0, 0), ok(0, 0), Probe::Failed("x".into())] {
                if a.step(p, at(t0, t))
                    .first()
                    .is_some_and(|l| l.starts_with("announce"))
                {
                    announcements += 1;
                }
                t += 1;
            }
        }
        // Without damping: 10 announcements. With it: suppressed after the third withdrawal.
        assert_eq!(announcements, 3);
        assert!(!a.announced());
    }

    #[test]
    fn shutting_down_withdraws_what_was_announced() {
        let t0 = Instant::now();
        let mut a = Announcer::new(&config(), t0);
        assert!(a.withdraw().is_empty());
        a.step(ok(0, 0), t0);
        a.step(ok(0, 0), at(t0, 1));
        assert_eq!(a.withdraw().len(), 2);
    }

    #[test]
    fn config_errors_name_the_key() {
        let base = "node = \"http://127.0.0.1:1\"\nprefixes = [\"192.0.2.0/24\"]\n";
        let path = |t: &str| AnycastConfig::from_toml(t).unwrap_err().path;
        assert_eq!(path(&base.replace("http://", "ftp://")), "node");
        assert_eq!(path(&base.replace("[\"192.0.2.0/24\"]", "[]")), "prefixes");
        assert_eq!(path(&format!("{base}next_hop = \"router\"\n")), "next_hop");
        assert_eq!(
            path(&format!("{base}[damping]\nreuse = 5000.0\n")),
            "damping"
        );
        assert_eq!(path(&format!("{base}[health]\nrise = 0\n")), "health.rise");
    }
}
