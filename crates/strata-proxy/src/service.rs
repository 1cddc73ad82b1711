//! Services: which configuration applies to a request (by `Host`), and which path rule.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use strata_http_cache::freshness::HeuristicConfig;
use strata_http_cache::{KeyRules, PolicyConfig};

use strata_wire::clock::Clock;

use crate::access::Access;
use crate::compute::{Chain, Compute};
use crate::config::{HealthConfig, NodeConfig, OriginEntry, RuleConfig, ServiceConfig};
use crate::experiment::Experiment;
use crate::tier::{Hop, HopKind};
use crate::upstream::breaker::BreakerConfig;
use crate::upstream::health::Probe;
use crate::upstream::origins::{OriginSet, OriginState};
use crate::upstream::Origin;

/// A service ready for the request path.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub origins: Arc<OriginSet>,
    pub origin_host: Option<String>,
    cache_key_host: Option<String>,
    /// Active probe settings, when the service asks for probes.
    pub probe: Option<Probe>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub lock_timeout: Duration,
    pub hit_for_pass: Duration,
    /// Methods besides POST, PUT, DELETE and PATCH whose 2xx answer invalidates.
    invalidating_methods: Vec<http::Method>,
    base_key: KeyRules,
    base_policy: PolicyConfig,
    /// `[service.media]`: video-aware policies by class, and prefetch.
    pub media: Option<Arc<crate::config::MediaConfig>>,
    /// `slice`: the size objects are fetched and stored in, if they are sliced.
    slice: Option<u64>,
    rules: Vec<RuleConfig>,
    /// Each rule's `early_hints` as a `103` head, none when it has none.
    hints: Vec<Option<Arc<HeaderMap>>>,
    /// The service's access settings, and each rule's (a rule without its own takes the
    /// service's).
    access: Option<Arc<Access>>,
    rule_access: Vec<Option<Arc<Access>>>,
    /// Edge compute: the service's filters, and each rule's (a rule without its own
    /// takes the service's).
    rule_filters: Vec<Chain>,
    filters: Chain,
    /// A/B tests: every request of the service gets a variant of each.
    pub experiments: Vec<Arc<Experiment>>,
}

/// What applies to one request path of a service.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What the path is to a player, when the service is media-aware.
    pub media: Option<strata_media::MediaClass>,
    pub key_rules: KeyRules,
    pub policy: PolicyConfig,
    pub bypass: bool,
    /// The rule's `103 Early Hints` fields, sent before going upstream.
    pub early_hints: Option<Arc<HeaderMap>>,
    /// Who may ask, and how often (the access phase).
    pub access: Option<Arc<Access>>,
    /// Objects under this path are fetched and stored in slices of this many bytes.
    pub slice: Option<u64>,
    /// Edge compute filters for this path (empty: none).
    pub filters: Chain,
}

impl Service {
    /// The host a request for `host` is cached under.
    pub fn key_host<'a>(&'a self, host: &'a str) -> &'a str {
        self.cache_key_host.as_deref().unwrap_or(host)
    }

    /// The origins as upstream hops, in this request's order.
    pub fn origin_hops(&self) -> Vec<Hop> {
        self.origins
            .order()
            .into_iter()
            .map(|state| Hop {
                kind: HopKind::Origin,
                name: state.name(),
                state,
            })
            .collect()
    }

    fn from_config(
        c: &ServiceConfig,
        i: usize,
        heuristic: HeuristicConfig,
        clock: &Clock,
        compute: Option<&Compute>,
    ) -> Result<Self, String> {
        let chain = |filters: &[crate::config::FilterConfig], at: String| match compute {
            Some(compute) if !filters.is_empty() => compute
                .chain(filters, &c.name, &at)
                .map_err(|e| e.to_string()),
            _ => Ok(Chain::from([])),
        };
        let filters = chain(&c.filters, format!("service[{i}].filter"))?;
        let mut rule_filters = Vec::with_capacity(c.rules.len());
        for (r, rule) in c.rules.iter().enumerate() {
            rule_filters.push(match &rule.filters {
                Some(list) => chain(list, format!("service[{i}].rule[{r}].filter"))?,
                None => Arc::clone(&filters),
            });
        }
        let access = |a: &Option<crate::config::AccessConfig>, at: String| {
            a.as_ref()
                .map(|a| Access::from_config(a, &at, clock.clone()).map(Arc::new))
                .transpose()
                .map_err(|e| e.to_string())
        };
        let service_access = access(&c.access, format!("service[{i}].access"))?;
        let mut rule_access = Vec::with_capacity(c.rules.len());
        for (r, rule) in c.rules.iter().enumerate() {
            rule_access.push(match &rule.access {
                Some(_) => access(&rule.access, format!("service[{i}].rule[{r}].access"))?,
                None => service_access.clone(),
            });
        }
        let breaker = breaker_config(&c.health);
        let mut origins = Vec::with_capacity(c.origins.len());
        for entry in &c.origins {
            let origin = Origin::parse(entry.url())?;
            origins.push(match entry {
                OriginEntry::Url(_) => {
                    OriginState::new(origin, 1, 1, c.origin_max_connections, breaker)
                }
                OriginEntry::Detailed(d) => OriginState::new(
                    origin,
                    d.priority,
                    d.weight,
                    d.max_connections.unwrap_or(c.origin_max_connections),
                    breaker,
                ),
            });
        }
        let probe = c.health.path.as_ref().map(|path| Probe {
            path: path.clone(),
            interval: c.health.interval.0,
            timeout: c.health.timeout.0,
            expected_status: http::StatusCode::from_u16(c.health.expected_status)
                .unwrap_or(http::StatusCode::OK),
            host: c.origin_host.clone(),
        });
        Ok(Self {
            name: c.name.clone(),
            origins: Arc::new(OriginSet::new(origins)),
            origin_host: c.origin_host.clone(),
            cache_key_host: c.cache_key_host.clone(),
            probe,
            stale_while_revalidate: c.stale_while_revalidate.map(|s| s.0),
            stale_if_error: c.stale_if_error.map(|s| s.0),
            lock_timeout: c.lock_timeout.0,
            hit_for_pass: c.hit_for_pass.0,
            invalidating_methods: c
                .invalidating_methods
                .iter()
                .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            base_key: KeyRules {
                strip_query: c.strip_query.clone(),
                ignore_query: false,
                only_query: &[],
            },
            base_policy: PolicyConfig {
                heuristic,
                negative_ttl: c.negative_ttl.map(|s| s.0),
                negative_ttl_5xx: c.negative_ttl_5xx.map(|s| s.0),
                ttl_override: None,
                default_ttl: None,
                max_error_ttl: None,
                cache_set_cookie: c.cache_set_cookie,
                micro_cache: None,
            },
            media: c.media.clone().map(Arc::new),
            slice: c.slice.map(|s| s.0),
            rules: c.rules.clone(),
            hints: c.rules.iter().map(early_hints).collect(),
            access: service_access,
            rule_access,
            rule_filters,
            filters,
            experiments: c
                .experiments
                .iter()
                .map(|e| Experiment::from_config(e).map(Arc::new))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether an answer with `status` to `method` invalidates the target URI (RFC 9111
    /// §4.4): a non-error answer to POST, PUT, DELETE or PATCH; a 2xx to a method this
    /// service lists. Safe methods, and unsafe ones nobody listed, leave the cache alone:
    /// any client can invent a method, and it should not be a way to purge.
    pub fn invalidates(&self, method: &http::Method, status: http::StatusCode) -> bool {
        use http::Method;
        let standard = [Method::POST, Method::PUT, Method::DELETE, Method::PATCH];
        if standard.contains(method) {
            return status.is_success() || status.is_redirection();
        }
        self.invalidating_methods.contains(method) && status.is_success()
    }

    /// Every access setting of the service and its rules (for the bucket sweeper).
    pub fn accesses(&self) -> impl Iterator<Item = &Arc<Access>> {
        self.access.iter().chain(self.rule_access.iter().flatten())
    }

    /// Every filter link of the service and its rules (a chain rules share, more than once).
    pub fn filter_links(&self) -> impl Iterator<Item = &Arc<crate::compute::Link>> {
        self.filters
            .iter()
            .chain(self.rule_filters.iter().flat_map(|c| c.iter()))
    }

    /// The first rule whose prefix matches `path` shapes key and policy.
    pub fn resolve(&self, path: &str) -> Resolved {
        let mut key_rules = self.base_key.clone();
        let mut policy = self.base_policy.clone();
        let mut bypass = false;
        let mut early_hints = None;
        let mut access = self.access.clone();
        let mut slice = self.slice;
        let mut filters = Arc::clone(&self.filters);
        // Class defaults first: a rule's `ttl` below still replaces them.
        let media = self.media.as_ref().and_then(|m| {
            let class = strata_media::class::of_path(path)?;
            policy.default_ttl = Some(if class.is_index() {
                m.playlist_ttl.0
            } else {
                m.segment_ttl.0
            });
            policy.max_error_ttl = Some(m.error_ttl.0);
            Some(class)
        });
        if let Some(i) = self.rules.iter().position(|r| path.starts_with(&r.path)) {
            let rule = &self.rules[i];
            early_hints = self.hints[i].clone();
            access = self.rule_access[i].clone();
            key_rules
                .strip_query
                .extend(rule.strip_query.iter().cloned());
            key_rules.ignore_query = rule.ignore_query;
            policy.ttl_override = rule.ttl.map(|s| s.0);
            policy.micro_cache = rule.micro_cache.map(|s| s.0);
            bypass = rule.bypass;
            if let Some(size) = rule.slice {
                slice = Some(size.0);
            }
            filters = Arc::clone(&self.rule_filters[i]);
        }
        // Playlists change under the same URL as they grow: never spliced from slices.
        let slice = slice.filter(|s| *s > 0 && !media.is_some_and(|m| m.is_index()));
        Resolved {
            media,
            key_rules,
            policy,
            bypass,
            early_hints,
            access,
            slice,
            filters,
        }
    }
}

/// A rule's `early_hints` as the fields of a `103` (values checked by the config).
fn early_hints(rule: &RuleConfig) -> Option<Arc<HeaderMap>> {
    let mut head = HeaderMap::new();
    for link in &rule.early_hints {
        if let Ok(v) = http::HeaderValue::from_str(link) {
            head.append(http::header::LINK, v);
        }
    }
    (!head.is_empty()).then(|| Arc::new(head))
}

fn breaker_config(h: &HealthConfig) -> BreakerConfig {
    BreakerConfig {
        failures: h.failures,
        successes: h.successes,
        cooldown: h.cooldown.0,
        error_rate: h.error_rate,
        window: h.error_window.0,
        min_responses: h.error_min_responses,
        distinct_urls: h.distinct_urls,
    }
}

/// Host name → service.
#[derive(Debug)]
pub struct Services {
    exact: Vec<(String, usize)>,
    wildcard: Vec<(String, usize)>,
    any: Option<usize>,
    services: Vec<Arc<Service>>,
}

impl Services {
    /// `clock`: the node's (rate limits read it). Filters get a store of their own.
    pub fn from_config(config: &NodeConfig, clock: &Clock) -> Result<Self, String> {
        Self::with_kv(config, clock, &Arc::default())
    }

    /// The same, the filters' shared data being the node's Edge KV.
    pub fn with_kv(
        config: &NodeConfig,
        clock: &Clock,
        kv: &Arc<crate::kv::EdgeKv>,
    ) -> Result<Self, String> {
        let heuristic = HeuristicConfig {
            fraction: config.cache.heuristic_fraction,
            max: config.cache.heuristic_max.0,
        };
        let compute = Compute::for_config(config, kv).map_err(|e| e.to_string())?;
        let mut out = Services {
            exact: Vec::new(),
            wildcard: Vec::new(),
            any: None,
            services: Vec::new(),
        };
        for (i, s) in config.services.iter().enumerate() {
            out.services.push(Arc::new(Service::from_config(
                s,
                i,
                heuristic,
                clock,
                compute.as_ref(),
            )?));
            for host in &s.hosts {
                let host = host.to_ascii_lowercase();
                if host == "*" {
                    out.any = Some(i);
                } else if let Some(suffix) = host.strip_prefix('*') {
                    out.wildcard.push((suffix.to_string(), i));
                } else {
                    out.exact.push((host, i));
                }
            }
        }
        // Longest wildcard suffix first: `*.a.example.com` beats `*.example.com`.
        out.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        Ok(out)
    }

    pub fn all(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// The service for a canonical authority (its port ignored).
    pub fn for_authority(&self, authority: &strata_http_cache::Authority) -> Option<&Arc<Service>> {
        // Canonical: lower case, no trailing dot; nothing to copy.
        self.for_name(authority.host())
    }

    /// The service for a `Host` (port ignored).
    pub fn for_host(&self, host: &str) -> Option<&Arc<Service>> {
        let name = strip_port(host).to_ascii_lowercase();
        self.for_name(name.trim_end_matches('.'))
    }

    fn for_name(&self, name: &str) -> Option<&Arc<Service>> {
        let idx = self
            .exact
            .iter()
            .find(|(h, _)| h == name)
            .or_else(|| {
                self.wildcard.iter().find(|(suffix, _)| {
                    name.ends_with(suffix.as_str()) && name.len() > suffix.len()
                })
            })
            .map(|(_, i)| *i)
            .or(self.any)?;
        self.services.get(idx)
    }
}

/// A host without its port (`[::1]:80` → `[::1]`).
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> Services {
        let c = NodeConfig::from_toml(
            r#"
            [[service]]
            name = "a"
            hosts = ["a.example.com"]
            origins = ["http://127.0.0.1:1"]
            [[service]]
            name = "wild"
            hosts = ["*.example.com"]
            origins = ["http://127.0.0.1:2"]
            strip_query = ["utm_*"]
              [[service.rule]]
              path = "/api/"
              bypass = true
              [[service.rule]]
              path = "/static/"
              ttl = "1h"
              ignore_query = true
            "#,
        )
        .unwrap();
        Services::from_config(&c, &strata_wire::clock::Clock::system()).unwrap()
    }

    #[test]
    fn exact_then_wildcard_then_none() {
        let s = services();
        assert_eq!(s.for_host("A.example.com:8080").unwrap().name, "a");
        assert_eq!(s.for_host("b.example.com").unwrap().name, "wild");
        assert!(s.for_host("example.com").is_none());
        assert!(s.for_host("other.org").is_none());
    }

    #[test]
    fn first_matching_rule_applies() {
        let s = services();
        let svc = s.for_host("x.example.com").unwrap();
        assert!(svc.resolve("/api/v1").bypass);
        let r = svc.resolve("/static/app.js");
        assert_eq!(r.policy.ttl_override, Some(Duration::from_secs(3600)));
        assert!(r.key_rules.ignore_query);
        assert_eq!(r.key_rules.strip_query, vec!["utm_*".to_string()]);
        assert!(!svc.resolve("/other").bypass);
    }
}
