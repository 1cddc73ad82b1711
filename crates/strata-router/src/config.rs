//! The DNS router's configuration (TOML). Every error names its key.
//!
//! ```toml
//! listen = "0.0.0.0:53"          # UDP and TCP
//! zone = "cdn.example.net"
//! ttl = "30s"                     # answers' TTL (short: clients follow health changes)
//! hosts = ["@", "*"]              # names answered under the zone ("@" the apex, "*" any)
//! nats = "nats://127.0.0.1:4222"  # health snapshots from the control plane
//!
//! [[nameserver]]
//! name = "ns1.cdn.example.net"
//! addresses = ["192.0.2.53"]
//!
//! [[pop]]
//! name = "fra"
//! addresses = ["192.0.2.10", "2001:db8::10"]
//! weight = 100                    # percent of the traffic this PoP would get as nearest
//!
//! [[location]]
//! name = "eu-central"
//! prefixes = ["198.51.100.0/24"]
//! latency = { fra = 8, ams = 15 } # ms from this location to each PoP
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use strata_wire::config::{parse_toml, ConfigError, NatsAuth, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    /// The CDN zone this router is authoritative for.
    pub zone: String,
    #[serde(default = "default_ttl")]
    pub ttl: Seconds,
    /// Names answered with a PoP, relative to the zone: `@` the apex, `*` any name.
    #[serde(default = "default_hosts")]
    pub hosts: Vec<String>,
    /// The SOA's responsible mailbox (default `hostmaster.<zone>`).
    #[serde(default)]
    pub hostmaster: Option<String>,
    /// NATS URL the health snapshots come from; none: every PoP is taken as healthy
    /// (the demo hands the router its embedded bus instead).
    #[serde(default)]
    pub nats: Option<String>,
    /// Credentials and TLS for the NATS server (`[nats_auth]`).
    #[serde(default)]
    pub nats_auth: NatsAuth,
    /// Latency assumed to a PoP a location does not list, ms.
    #[serde(default = "default_unlisted_latency")]
    pub unlisted_latency: u32,
    /// Added to a degraded PoP's latency, ms: it keeps its own region unless a healthy
    /// PoP is nearly as close.
    #[serde(default = "default_degraded_penalty")]
    pub degraded_penalty: u32,
    /// Location of clients no prefix matches (default: the first location).
    #[serde(default)]
    pub default_location: Option<String>,
    #[serde(default, rename = "nameserver")]
    pub nameservers: Vec<NameServer>,
    #[serde(rename = "pop")]
    pub pops: Vec<PopConfig>,
    #[serde(default, rename = "location")]
    pub locations: Vec<LocationConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NameServer {
    pub name: String,
    /// Glue, answered when the name is in the zone.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PopConfig {
    pub name: String,
    /// Addresses answered for this PoP (A for IPv4, AAAA for IPv6).
    pub addresses: Vec<IpAddr>,
    /// Share (0-100) of the clients this PoP is nearest to that it takes; the rest go to
    /// the next nearest. For bringing a PoP in gradually: 5, 25, 50, 100.
    #[serde(default = "default_weight")]
    pub weight: u8,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    pub name: String,
    /// Client (or resolver) networks in this location.
    #[serde(default)]
    pub prefixes: Vec<IpNet>,
    /// Round-trip time from this location to each PoP, ms.
    #[serde(default)]
    pub latency: BTreeMap<String, u32>,
}

fn default_ttl() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn default_hosts() -> Vec<String> {
    vec!["@".into(), "*".into()]
}
fn default_unlisted_latency() -> u32 {
    1000
}
fn default_degraded_penalty() -> u32 {
    50
}
fn default_weight() -> u8 {
    100
}

impl RouterConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: RouterConfig = parse_toml(text)?;
        c.validate()?;
        Ok(c)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Self::from_toml(&text)
    }

    /// The zone as a fully qualified name (`cdn.test.`).
    pub fn zone_fqdn(&self) -> String {
        fqdn(&self.zone)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, m: &str| ConfigError::new(k, m);
        if self.zone.trim_end_matches('.').is_empty()
            || hickory_server::proto::rr::Name::from_ascii(self.zone_fqdn()).is_err()
        {
            return Err(err("zone", "must be a domain name"));
        }
        if self.ttl.0.as_secs() == 0 || self.ttl.0.as_secs() > 86_400 {
            return Err(err("ttl", "must be between 1s and 1 day"));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let ok = h == "@"
                || h == "*"
                || hickory_server::proto::rr::Name::from_ascii(format!("{h}.{}", self.zone_fqdn()))
                    .is_ok();
            if !ok {
                return Err(ConfigError::new(
                    format!("hosts[{i}]"),
                    "must be \"@\", \"*\" or a name relative to the zone",
                ));
            }
        }
        if let Some(n) = &self.nats {
            strata_wire::config::check_nats_urls(n, "nats")?;
        }
        self.nats_auth.check("nats_auth")?;
        for (i, ns) in self.nameservers.iter().enumerate() {
            if hickory_server::proto::rr::Name::from_ascii(fqdn(&ns.name)).is_err() {
                return Err(ConfigError::new(
                    format!("nameserver[{i}].name"),
                    "must be a domain name",
                ));
            }
        }
        if self.pops.is_empty() {
            return Err(err("pop", "at least one PoP is required"));
        }
        let mut names = HashSet::new();
        for (i, p) in self.pops.iter().enumerate() {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(ConfigError::new(
                    format!("pop[{i}].name"),
                    "PoP names must be unique and not empty",
                ));
            }
            if p.addresses.is_empty() {
                return Err(ConfigError::new(
                    format!("pop[{i}].addresses"),
                    "at least one address is required",
                ));
            }
            if p.weight > 100 {
                return Err(ConfigError::new(
                    format!("pop[{i}].weight"),
                    "is a percentage: 0 to 100",
                ));
            }
        }
        let mut locations = HashSet::new();
        for (i, l) in self.locations.iter().enumerate() {
            if l.name.is_empty() || !locations.insert(l.name.as_str()) {
                return Err(ConfigError::new(
                    format!("location[{i}].name"),
                    "location names must be unique and not empty",
                ));
            }
            for pop in l.latency.keys() {
                if !names.contains(pop.as_str()) {
                    return Err(ConfigError::new(
                        format!("location[{i}].latency.{pop}"),
                        "names no [[pop]]",
                    ));
                }
            }
        }
        if let Some(d) = &self.default_location {
            if !locations.contains(d.as_str()) {
                return Err(err("default_location", "names no [[location]]"));
            }
        }
        Ok(())
    }
}

/// `name` with a trailing dot.
pub fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
listen = "127.0.0.1:0"
zone = "cdn.test"
[[pop]]
name = "a"
addresses = ["192.0.2.1"]
[[pop]]
name = "b"
addresses = ["192.0.2.2", "2001:db8::2"]
weight = 25
[[location]]
name = "eu"
prefixes = ["10.0.0.0/8"]
latency = { a = 10, b = 30 }
"#;

    #[test]
    fn a_valid_config_has_short_ttls_by_default() {
        let c = RouterConfig::from_toml(OK).unwrap();
        assert_eq!(c.ttl.0, Duration::from_secs(30));
        assert_eq!(c.zone_fqdn(), "cdn.test.");
        assert_eq!(c.pops[1].weight, 25);
    }

    #[test]
    fn errors_name_the_key() {
        let path = |text: &str| RouterConfig::from_toml(text).unwrap_err().path;
        assert_eq!(
            path(&OK.replace("weight = 25", "weight = 250")),
            "pop[1].weight"
        );
        assert_eq!(
            path(&OK.replace("b = 30", "c = 30")),
            "location[0].latency.c"
        );
        assert_eq!(path(&OK.replace("\"b\"", "\"a\"")), "pop[1].name");
        assert_eq!(
            path(&OK.replace("10.0.0.0/8", "10.0.0.0/99")),
            "location[0].prefixes[0]"
        );
        assert_eq!(
            path(&OK.replace("zone = \"cdn.test\"", "zone = \"\"")),
            "zone"
        );
        assert_eq!(path(&format!("ttl = \"0s\"\n{OK}")), "ttl");
        assert_eq!(
            path(&format!("default_location = \"mars\"\n{OK}")),
            "default_location"
        );
        assert_eq!(path(&format!("bogus = 1\n{OK}")), "bogus");
    }
}
