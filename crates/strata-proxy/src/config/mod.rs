//! The node's declarative configuration (TOML), one file per section.
//!
//! Every error names the key path that caused it (`service[0].origins[1]`), so
//! `strata check-config` can point an operator at the line to fix. Parsing goes through
//! `serde_path_to_error`; each section's `Default` is the one place its defaults are
//! written (`#[serde(default)]` on the section), and its `check` holds what serde cannot
//! express. [`NodeConfig::validate`] runs the checks, section by section.

mod access;
mod acme;
mod admin;
mod bus;
mod cache;
mod compute;
mod experiment;
mod forwarding;
mod geo;
mod health;
mod hot;
mod limits;
mod listen;
mod log;
mod media;
mod names;
mod node;
mod parents;
mod purge;
mod ring;
mod service;
mod tls;

use std::path::Path;

use serde::Deserialize;

pub use self::access::{AccessConfig, RateLimitConfig, SignedUrlConfig, TokenConfig};
pub use self::acme::{AcmeCertificate, AcmeSection, ChallengeKind};
pub use self::admin::AdminSection;
pub use self::bus::BusSection;
pub use self::cache::{CacheSection, DiskSection};
pub use self::compute::{ComputeSection, FilterConfig};
pub use self::experiment::{ExperimentConfig, VariantConfig};
pub use self::forwarding::ForwardingSection;
pub use self::geo::{country_code, CountryCode, GeoSection, UNKNOWN_COUNTRY};
pub use self::health::HealthConfig;
pub use self::hot::HotSection;
pub use self::limits::LimitsSection;
pub use self::listen::ListenSection;
pub use self::log::{AccessLogTarget, LogSection};
pub use self::media::MediaConfig;
pub(crate) use self::names::{parse_network, valid_host_pattern};
pub use self::node::{NodeSection, Role};
pub use self::parents::ParentsSection;
pub use self::purge::PurgeSection;
pub use self::ring::{PeerConfig, RingSection};
pub use self::service::{OriginConfig, OriginEntry, RuleConfig, ServiceConfig};
pub use self::tls::{CertificateConfig, TlsSection, UnknownSni};
pub use strata_wire::config::{parse_size, parse_toml, ByteSize, ConfigError, NatsAuth, Seconds};

/// The whole node configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub listen: ListenSection,
    pub tls: TlsSection,
    pub cache: CacheSection,
    pub limits: LimitsSection,
    pub log: LogSection,
    pub purge: PurgeSection,
    pub bus: BusSection,
    pub ring: RingSection,
    pub parents: ParentsSection,
    pub hot: HotSection,
    pub forwarding: ForwardingSection,
    pub admin: AdminSection,
    pub geo: GeoSection,
    pub compute: ComputeSection,
    #[serde(rename = "service")]
    pub services: Vec<ServiceConfig>,
}

/// Weights and priorities start at 1.
fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

// === impl NodeConfig ===

impl NodeConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = parse_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The top-level sections (`[tls]`, `[[service]]`...) whose values differ from
    /// `other`'s.
    pub fn sections_differing(&self, other: &NodeConfig) -> Vec<&'static str> {
        // Destructured: a new section cannot be left out of the comparison.
        let NodeConfig {
            node,
            listen,
            tls,
            cache,
            limits,
            log,
            purge,
            bus,
            ring,
            parents,
            hot,
            forwarding,
            admin,
            geo,
            compute,
            services,
        } = self;
        [
            ("node", *node == other.node),
            ("listen", *listen == other.listen),
            ("tls", *tls == other.tls),
            ("cache", *cache == other.cache),
            ("limits", *limits == other.limits),
            ("log", *log == other.log),
            ("purge", *purge == other.purge),
            ("bus", *bus == other.bus),
            ("ring", *ring == other.ring),
            ("parents", *parents == other.parents),
            ("hot", *hot == other.hot),
            ("forwarding", *forwarding == other.forwarding),
            ("admin", *admin == other.admin),
            ("geo", *geo == other.geo),
            ("compute", *compute == other.compute),
            ("service", *services == other.services),
        ]
        .into_iter()
        .filter_map(|(name, same)| (!same).then_some(name))
        .collect()
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Self::from_toml(&text)
    }

    /// A one-origin, any-host configuration, as `strata edge --origin URL` builds.
    pub fn single_origin(origin: &str) -> Self {
        Self {
            services: vec![ServiceConfig::new(
                "default",
                vec!["*".into()],
                vec![origin.to_string()],
            )],
            ..Self::default()
        }
    }

    /// Checks serde cannot express, section by section. Each error names its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.node.check()?;
        self.listen.check()?;
        self.cache.check()?;
        self.limits.check()?;
        self.purge.check()?;
        self.forwarding.check()?;
        self.admin.check(self.listen.admin)?;
        self.bus.check()?;
        self.ring.check(&self.node.name)?;
        self.parents.check()?;
        self.hot.check()?;
        self.compute.check()?;
        if self.services.is_empty() {
            return Err(ConfigError::new(
                "service",
                "at least one [[service]] is required",
            ));
        }
        let mut hosts_seen = Vec::new();
        for (i, service) in self.services.iter().enumerate() {
            service.check(i, &mut hosts_seen)?;
            // A slice is stored as one object: it must be one the cache may keep.
            let slices = std::iter::once((format!("service[{i}].slice"), service.slice)).chain(
                service
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(r, rule)| (format!("service[{i}].rule[{r}].slice"), rule.slice)),
            );
            for (at, slice) in slices {
                if slice.is_some_and(|s| s.0 > self.cache.max_object_size.0) {
                    return Err(ConfigError::new(
                        at,
                        "must not exceed cache.max_object_size",
                    ));
                }
            }
        }
        self.geo.check()?;
        if !self.geo.is_configured() {
            // Countries asked for with nothing to tell them: every client would be "XX".
            for (i, service) in self.services.iter().enumerate() {
                let accesses = std::iter::once((format!("service[{i}].access"), &service.access))
                    .chain(
                        service.rules.iter().enumerate().map(|(r, rule)| {
                            (format!("service[{i}].rule[{r}].access"), &rule.access)
                        }),
                    );
                for (at, access) in accesses {
                    let Some(a) = access else { continue };
                    let lists = [
                        ("countries", &a.countries),
                        ("deny_countries", &a.deny_countries),
                    ];
                    if let Some((key, _)) = lists.iter().find(|(_, list)| !list.is_empty()) {
                        return Err(ConfigError::new(
                            format!("{at}.{key}"),
                            "needs [geo] (a database or networks) to know a client's country",
                        ));
                    }
                }
            }
        }
        self.tls.check(&self.listen)?;
        self.tls.check_ring(&self.ring, &self.node.name)?;
        crate::compute::check(self)?;
        crate::tls::OriginTls::from_config(self)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GOOD: &str = r#"
        [node]
        name = "edge-1"
        [listen]
        http = ["127.0.0.1:0"]
        admin = "127.0.0.1:0"
        [cache]
        size = "64MiB"
        max_object_size = "8MiB"
        [[service]]
        name = "site"
        hosts = ["example.com", "*.example.org"]
        origins = ["http://127.0.0.1:9000"]
        strip_query = ["utm_*"]
        negative_ttl = "10s"
          [[service.rule]]
          path = "/api/"
          bypass = true
    "#;

    #[test]
    fn parses_a_full_config() {
        let c = NodeConfig::from_toml(GOOD).unwrap();
        assert_eq!(c.cache.size.0, 64 << 20);
        assert_eq!(
            c.services[0].negative_ttl,
            Some(Seconds(Duration::from_secs(10)))
        );
        assert!(c.services[0].rules[0].bypass);
    }

    #[test]
    fn early_hints_must_be_link_values() {
        let good = GOOD.replace(
            "bypass = true",
            "bypass = true\n          early_hints = [\"</a.css>; rel=preload; as=style\"]",
        );
        NodeConfig::from_toml(&good).unwrap();
        let bad = GOOD.replace(
            "bypass = true",
            "bypass = true\n          early_hints = [\"a.css\"]",
        );
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert!(
            e.to_string().contains("service[0].rule[0].early_hints[0]"),
            "{e}"
        );
    }

    #[test]
    fn error_names_the_key_path_of_a_bad_value() {
        let bad = GOOD.replace("negative_ttl = \"10s\"", "negative_ttl = \"ten\"");
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "service[0].negative_ttl");
    }

    #[test]
    fn error_names_the_key_path_of_an_unknown_key() {
        let bad = GOOD.replace("bypass = true", "bypass = true\nbypas = false");
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "service[0].rule[0].bypas");
        assert!(e.message.contains("bypas"), "{e}");
    }

    #[test]
    fn error_names_the_key_path_of_a_bad_origin() {
        let bad = GOOD.replace("http://127.0.0.1:9000", "ftp://x");
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "service[0].origins[0]");
    }

    #[test]
    fn duplicate_host_is_rejected() {
        let bad = format!("{GOOD}\n[[service]]\nname = \"b\"\nhosts = [\"example.com\"]\norigins = [\"http://127.0.0.1:1\"]\n");
        let e = NodeConfig::from_toml(&bad).unwrap_err();
        assert_eq!(e.path, "service[1].hosts[0]");
    }

    #[test]
    fn origins_accept_urls_and_tables() {
        let text = GOOD.replace(
            "origins = [\"http://127.0.0.1:9000\"]",
            "origins = [\"http://127.0.0.1:9000\", { url = \"http://127.0.0.1:9001\", priority = 2, weight = 3 }]",
        );
        let c = NodeConfig::from_toml(&text).unwrap();
        assert_eq!(
            c.services[0].origins[1],
            OriginEntry::Detailed(OriginConfig {
                url: "http://127.0.0.1:9001".into(),
                priority: 2,
                weight: 3,
                max_connections: None,
                tls_verify: true,
                ca_file: None,
                http2: true,
            })
        );
        let bad = text.replace("weight = 3", "weight = 0");
        assert_eq!(
            NodeConfig::from_toml(&bad).unwrap_err().path,
            "service[0].origins[1].weight"
        );
    }

    #[test]
    fn purge_method_needs_a_valid_allow_list() {
        let on = format!("{GOOD}\n[purge]\nhttp_method = true\n");
        assert_eq!(NodeConfig::from_toml(&on).unwrap_err().path, "purge.allow");
        let bad = format!("{GOOD}\n[purge]\nhttp_method = true\nallow = [\"10.0.0.0/33\"]\n");
        assert_eq!(
            NodeConfig::from_toml(&bad).unwrap_err().path,
            "purge.allow[0]"
        );
        let ok =
            format!("{GOOD}\n[purge]\nhttp_method = true\nallow = [\"10.0.0.0/8\", \"::1\"]\n");
        assert!(NodeConfig::from_toml(&ok).is_ok());
    }

    #[test]
    fn empty_key_error_still_names_a_place() {
        // Found by the config fuzz target.
        let e = NodeConfig::from_toml("\"\"=0").unwrap_err();
        assert_eq!(e.path, "(document)");
    }

    #[test]
    fn syntax_error_is_reported() {
        let e = NodeConfig::from_toml("[node\nname=").unwrap_err();
        assert_eq!(e.path, "(document)");
    }

    #[test]
    fn max_object_size_must_fit_in_cache() {
        let bad = GOOD.replace("max_object_size = \"8MiB\"", "max_object_size = \"1GiB\"");
        assert_eq!(
            NodeConfig::from_toml(&bad).unwrap_err().path,
            "cache.max_object_size"
        );
    }

    #[test]
    fn disk_tier_keys_are_checked_by_name() {
        let ok = format!("{GOOD}\n[cache.disk]\npath = \"/var/cache/strata\"\nsize = \"10GiB\"\n");
        let disk = NodeConfig::from_toml(&ok).unwrap().cache.disk.unwrap();
        assert_eq!(disk.size.0, 10 << 30);
        let small = ok.replace("\"10GiB\"", "\"1MiB\"");
        assert_eq!(
            NodeConfig::from_toml(&small).unwrap_err().path,
            "cache.disk.size"
        );
        let missing = format!("{GOOD}\n[cache.disk]\nsize = \"10GiB\"\n");
        assert!(NodeConfig::from_toml(&missing)
            .unwrap_err()
            .to_string()
            .contains("path"));
        let unknown = ok.replace("size =", "sise =");
        assert!(NodeConfig::from_toml(&unknown)
            .unwrap_err()
            .path
            .starts_with("cache.disk"));
    }
}
