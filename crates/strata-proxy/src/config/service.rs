//! `[[service]]`: the host names a service answers for, where its content comes from
//! (`origins`), and how it is cached (`[[service.rule]]`).
//!
//! `name`, `hosts` and `origins` are required (serde's "missing field" names them), so
//! the optional keys carry their defaults one by one rather than through `Default`.

use std::time::Duration;

use serde::Deserialize;

use super::access::AccessConfig;
use super::health::HealthConfig;
use super::names::{check_strip_pattern, valid_host_pattern};
use super::{ByteSize, ConfigError, Seconds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// Exact names, `*.example.com` wildcards, or `*` for any host.
    pub hosts: Vec<String>,
    /// Origins: `"http://host:port"`, or `{ url, priority, weight, max_connections }`.
    /// Lower priority numbers are tried first; weights split traffic within a priority.
    pub origins: Vec<OriginEntry>,
    /// Concurrent connections per origin unless the origin sets its own.
    #[serde(default = "default_origin_max_connections")]
    pub origin_max_connections: usize,
    /// Active probes and circuit breaker thresholds for this service's origins.
    #[serde(default)]
    pub health: HealthConfig,
    /// `Host` sent upstream; the client's when absent.
    #[serde(default)]
    pub origin_host: Option<String>,
    /// The host cache keys use for every host name of this service, so aliases share one
    /// copy (purge URLs then name this host). Default: the request's host.
    #[serde(default)]
    pub cache_key_host: Option<String>,
    /// Query parameters left out of the cache key (`utm_*`).
    #[serde(default)]
    pub strip_query: Vec<String>,
    /// Lifetime for 404/410 that carry no freshness.
    #[serde(default)]
    pub negative_ttl: Option<Seconds>,
    /// Lifetime for 500/502/503/504 that carry no freshness.
    #[serde(default)]
    pub negative_ttl_5xx: Option<Seconds>,
    /// Store responses that carry `Set-Cookie`.
    #[serde(default)]
    pub cache_set_cookie: bool,
    /// Serve stale this long past expiry while revalidating (RFC 5861 default).
    #[serde(default)]
    pub stale_while_revalidate: Option<Seconds>,
    /// Serve stale this long past expiry when upstream fails (RFC 5861 default).
    #[serde(default)]
    pub stale_if_error: Option<Seconds>,
    /// Longest a request waits for another request's fill of the same object before
    /// going upstream on its own.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Seconds,
    /// How long a key that answered uncacheable skips coalescing (hit-for-pass).
    #[serde(default = "default_hit_for_pass")]
    pub hit_for_pass: Seconds,
    /// Methods besides POST, PUT, DELETE and PATCH whose 2xx answer invalidates the target
    /// URI (RFC 9111 §4.4), e.g. WebDAV's `MOVE`. Other methods unknown to Strata pass
    /// through without touching the cache.
    #[serde(default)]
    pub invalidating_methods: Vec<String>,
    /// Networks, methods, referrers, tokens or signed URLs, rate limits (see
    /// `config::access`); a rule's `access` replaces this for its paths.
    #[serde(default)]
    pub access: Option<AccessConfig>,
    /// Video-aware caching and segment prefetch (`[service.media]`); off without it.
    #[serde(default)]
    pub media: Option<super::MediaConfig>,
    /// Fetch and store objects in slices of this size (`"4MiB"`), each asked of the
    /// origin with `Range`: a seek into a large file fetches only the slices it covers.
    /// Off without it; a rule's `slice` replaces it (`"0"` turns it off for the rule).
    #[serde(default)]
    pub slice: Option<ByteSize>,
    /// Edge compute filters (`[[service.filter]]`), in order; a rule's `filter` list
    /// replaces them under its path (`filter = []` lifts them).
    #[serde(default, rename = "filter")]
    pub filters: Vec<super::FilterConfig>,
    /// A/B tests (`[[service.experiment]]`): every request in a variant of each.
    #[serde(default, rename = "experiment")]
    pub experiments: Vec<super::ExperimentConfig>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

fn default_origin_max_connections() -> usize {
    256
}

fn default_lock_timeout() -> Seconds {
    Seconds(Duration::from_secs(10))
}

fn default_hit_for_pass() -> Seconds {
    Seconds(Duration::from_secs(10))
}

/// One origin of a service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OriginEntry {
    Url(String),
    Detailed(OriginConfig),
}

impl OriginEntry {
    pub fn url(&self) -> &str {
        match self {
            OriginEntry::Url(u) => u,
            OriginEntry::Detailed(o) => &o.url,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    pub url: String,
    /// Lower is preferred; higher priorities are failover groups.
    #[serde(default = "super::one")]
    pub priority: u32,
    /// Share of first picks within a priority.
    #[serde(default = "super::one")]
    pub weight: u32,
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// `https` origins: check the certificate (the default). `false` accepts any
    /// certificate, and says so in a warning at start.
    #[serde(default = "super::yes")]
    pub tls_verify: bool,
    /// `https` origins: a PEM bundle of the CAs to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `https` origins: offer h2 in ALPN (the default). `false` keeps the origin on
    /// HTTP/1.1 connections: for origins that allow few concurrent h2 streams (one h2
    /// connection per site carries every request; hyper opens no second one).
    #[serde(default = "super::yes")]
    pub http2: bool,
}

/// A per-path rule. The first rule whose prefix matches the path applies.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Path prefix (`/api/`).
    pub path: String,
    /// Overrides the origin's freshness lifetime.
    #[serde(default)]
    pub ttl: Option<Seconds>,
    /// Added to the service's strip list.
    #[serde(default)]
    pub strip_query: Vec<String>,
    /// Leave the query out of the key entirely.
    #[serde(default)]
    pub ignore_query: bool,
    /// Never use the cache for these paths.
    #[serde(default)]
    pub bypass: bool,
    /// Micro-caching: store 200 answers that would otherwise not be stored (`no-store`,
    /// `private`, `max-age=0`, no freshness) for this long, for flash crowds on dynamic
    /// endpoints. Answers that set cookies are still never stored.
    #[serde(default)]
    pub micro_cache: Option<Seconds>,
    /// `Link` values (`</app.css>; rel=preload; as=style`) sent as a `103 Early Hints`
    /// when a request under this rule goes upstream (a miss or a pass), to clients whose
    /// connection carries interim responses (HTTP/1.1, h2 and HTTP/3; not HTTP/1.0).
    #[serde(default)]
    pub early_hints: Vec<String>,
    /// Replaces the service's `access` under this path (`access = {}` lifts it).
    #[serde(default)]
    pub access: Option<AccessConfig>,
    /// Replaces the service's `slice` under this path (`"0"`: not sliced).
    #[serde(default)]
    pub slice: Option<ByteSize>,
    /// Replaces the service's filters under this path (`[[service.rule.filter]]`).
    #[serde(default, rename = "filter")]
    pub filters: Option<Vec<super::FilterConfig>>,
}

impl RuleConfig {
    /// A rule for a path prefix with every option off.
    pub fn prefix(path: &str) -> Self {
        Self {
            path: path.to_string(),
            ..Self::default()
        }
    }
}

// === impl ServiceConfig ===

impl ServiceConfig {
    /// A service with defaults for everything but its name, hosts and origins.
    pub fn new(name: &str, hosts: Vec<String>, origins: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            hosts,
            origins: origins.into_iter().map(OriginEntry::Url).collect(),
            origin_max_connections: default_origin_max_connections(),
            health: HealthConfig::default(),
            origin_host: None,
            cache_key_host: None,
            strip_query: Vec::new(),
            negative_ttl: None,
            negative_ttl_5xx: None,
            cache_set_cookie: false,
            stale_while_revalidate: None,
            stale_if_error: None,
            lock_timeout: default_lock_timeout(),
            hit_for_pass: default_hit_for_pass(),
            invalidating_methods: Vec::new(),
            access: None,
            media: None,
            slice: None,
            filters: Vec::new(),
            experiments: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Checks `service[i]`. `hosts_seen`: the host names of the services before it, with
    /// their index (two services may not answer for one name).
    pub(super) fn check(
        &self,
        i: usize,
        hosts_seen: &mut Vec<(String, usize)>,
    ) -> Result<(), ConfigError> {
        let at = |key: &str| format!("service[{i}].{key}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(at("name"), "must not be empty"));
        }
        self.check_hosts(i, hosts_seen)?;
        self.check_origins(i)?;
        self.health.check(at)?;
        if let Some(h) = &self.cache_key_host {
            if !valid_host_pattern(&h.to_ascii_lowercase()) || h.contains('*') {
                return Err(ConfigError::new(
                    at("cache_key_host"),
                    "must be a host name",
                ));
            }
        }
        if let Some(h) = &self.origin_host {
            if http::HeaderValue::from_str(h).is_err() || h.is_empty() {
                return Err(ConfigError::new(
                    at("origin_host"),
                    "not a valid Host value",
                ));
            }
        }
        for (m, method) in self.invalidating_methods.iter().enumerate() {
            let safe = ["GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"];
            if http::Method::from_bytes(method.as_bytes()).is_err()
                || safe.contains(&method.as_str())
            {
                return Err(ConfigError::new(
                    format!("service[{i}].invalidating_methods[{m}]"),
                    format!("'{method}' is not an unsafe method name"),
                ));
            }
        }
        for (p, pattern) in self.strip_query.iter().enumerate() {
            check_strip_pattern(pattern, || format!("service[{i}].strip_query[{p}]"))?;
        }
        if let Some(access) = &self.access {
            let clock = strata_wire::clock::Clock::system();
            crate::access::Access::from_config(access, &at("access"), clock)?;
        }
        if let Some(media) = &self.media {
            media.check(at)?;
        }
        check_slice(self.slice, || at("slice"), false)?;
        check_filters(&self.filters, &at("filter"))?;
        for (e, experiment) in self.experiments.iter().enumerate() {
            let key = format!("service[{i}].experiment[{e}]");
            experiment.check(&key)?;
            if self.experiments[..e]
                .iter()
                .any(|o| o.name == experiment.name)
            {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!(
                        "'{}' names another experiment of this service",
                        experiment.name
                    ),
                ));
            }
        }
        for (r, rule) in self.rules.iter().enumerate() {
            rule.check(i, r)?;
        }
        Ok(())
    }

    fn check_hosts(
        &self,
        i: usize,
        hosts_seen: &mut Vec<(String, usize)>,
    ) -> Result<(), ConfigError> {
        if self.hosts.is_empty() {
            return Err(ConfigError::new(
                format!("service[{i}].hosts"),
                "at least one host name is required",
            ));
        }
        for (h, host) in self.hosts.iter().enumerate() {
            let host = host.to_ascii_lowercase();
            if !valid_host_pattern(&host) {
                return Err(ConfigError::new(
                    format!("service[{i}].hosts[{h}]"),
                    format!("'{host}' is not a host name, '*.domain' or '*'"),
                ));
            }
            if let Some((_, other)) = hosts_seen.iter().find(|(seen, _)| *seen == host) {
                return Err(ConfigError::new(
                    format!("service[{i}].hosts[{h}]"),
                    format!("'{host}' is already served by service[{other}]"),
                ));
            }
            hosts_seen.push((host, i));
        }
        Ok(())
    }

    fn check_origins(&self, i: usize) -> Result<(), ConfigError> {
        if self.origins.is_empty() {
            return Err(ConfigError::new(
                format!("service[{i}].origins"),
                "at least one origin is required",
            ));
        }
        for (o, origin) in self.origins.iter().enumerate() {
            if let Err(why) = crate::upstream::Origin::parse(origin.url()) {
                return Err(ConfigError::new(format!("service[{i}].origins[{o}]"), why));
            }
            if let OriginEntry::Detailed(d) = origin {
                if d.weight == 0 {
                    return Err(ConfigError::new(
                        format!("service[{i}].origins[{o}].weight"),
                        "must be at least 1",
                    ));
                }
                if d.max_connections == Some(0) {
                    return Err(ConfigError::new(
                        format!("service[{i}].origins[{o}].max_connections"),
                        "must be at least 1",
                    ));
                }
            }
        }
        if self.origin_max_connections == 0 {
            return Err(ConfigError::new(
                format!("service[{i}].origin_max_connections"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl RuleConfig {
    /// Checks `service[i].rule[r]`.
    fn check(&self, i: usize, r: usize) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') {
            return Err(ConfigError::new(
                format!("service[{i}].rule[{r}].path"),
                "must start with '/'",
            ));
        }
        for (p, pattern) in self.strip_query.iter().enumerate() {
            check_strip_pattern(pattern, || {
                format!("service[{i}].rule[{r}].strip_query[{p}]")
            })?;
        }
        for (h, link) in self.early_hints.iter().enumerate() {
            if !link.trim_start().starts_with('<') || http::HeaderValue::from_str(link).is_err() {
                return Err(ConfigError::new(
                    format!("service[{i}].rule[{r}].early_hints[{h}]"),
                    "a Link value, such as '</app.css>; rel=preload; as=style'",
                ));
            }
        }
        check_slice(self.slice, || format!("service[{i}].rule[{r}].slice"), true)?;
        if let Some(filters) = &self.filters {
            check_filters(filters, &format!("service[{i}].rule[{r}].filter"))?;
        }
        if let Some(access) = &self.access {
            let clock = strata_wire::clock::Clock::system();
            let at = format!("service[{i}].rule[{r}].access");
            crate::access::Access::from_config(access, &at, clock)?;
        }
        Ok(())
    }
}

/// Slices smaller than this would cost an origin request per few packets.
pub const MIN_SLICE: u64 = 64 << 10;

/// Slices larger than this would bring back what slicing avoids (a seek fetching a lot).
pub const MAX_SLICE: u64 = 64 << 20;

/// A `slice` size: between [`MIN_SLICE`] and [`MAX_SLICE`]; `0` (off) only on a rule.
/// (That it fits `cache.max_object_size` is checked with the cache section.)
fn check_slice(
    slice: Option<ByteSize>,
    at: impl Fn() -> String,
    zero_allowed: bool,
) -> Result<(), ConfigError> {
    match slice {
        None => Ok(()),
        Some(ByteSize(0)) if zero_allowed => Ok(()),
        Some(ByteSize(n)) if (MIN_SLICE..=MAX_SLICE).contains(&n) => Ok(()),
        Some(_) => Err(ConfigError::new(
            at(),
            match zero_allowed {
                true => "must be between 64KiB and 64MiB, or \"0\" (not sliced under this rule)",
                false => "must be between 64KiB and 64MiB",
            },
        )),
    }
}

/// Each filter's own checks, and names that tell them apart in one chain.
fn check_filters(filters: &[super::FilterConfig], at: &str) -> Result<(), ConfigError> {
    for (f, filter) in filters.iter().enumerate() {
        filter.check(&format!("{at}[{f}]"))?;
        if filters[..f].iter().any(|other| other.name == filter.name) {
            return Err(ConfigError::new(
                format!("{at}[{f}].name"),
                format!("'{}' names another filter of this chain", filter.name),
            ));
        }
    }
    Ok(())
}
