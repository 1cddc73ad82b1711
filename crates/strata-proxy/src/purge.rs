//! Purge on one node: the admin API's request body, its validation, and applying it to the
//! node's storage and to fills in progress.
//!
//! `POST /v1/purge` on the admin listener takes the same JSON the control plane will take:
//! `{"urls": [...], "tags": [...], "prefixes": [...], "all": false, "soft": false}`. Bad
//! input is refused whole with 400 and the reason; nothing is applied.

use std::time::SystemTime;

use http::Uri;
use serde::{Deserialize, Serialize};
use strata_http_cache::{CacheKey, KeyRules};
use strata_storage::purge::PathPattern;
use strata_storage::{Purge, Scope};

use crate::service::Services;

/// The JSON body of a purge request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Absolute URLs; every `Vary` variant of each.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Surrogate keys (`Surrogate-Key` / `Cache-Tag` values).
    #[serde(default)]
    pub tags: Vec<String>,
    /// URL prefixes: `http://host/path/`.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Globs on the path (`*`, `?`): `"/img/*.jpg"` on every host, or
    /// `"http://host/img/*.jpg"` on one. Applied at once to lookups, and by a background
    /// sweep to everything stored.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Everything in the cache.
    #[serde(default)]
    pub all: bool,
    /// Mark stale instead of removing.
    #[serde(default)]
    pub soft: bool,
    /// Control plane only: seconds to wait for every node's ack before answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<f64>,
}

/// A purge as carried on the bus: the request, when it was issued, and its id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PurgeEvent {
    pub id: String,
    /// Unix time in milliseconds, rounded up by the publisher (see `strata-control`).
    pub issued_at_ms: u64,
    pub request: PurgeRequest,
}

/// A node's acknowledgement of a purge event. Published on the bus in batches: each
/// message is a JSON array of these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PurgeAck {
    pub id: String,
    pub node: String,
    pub seq: u64,
    pub objects: u64,
    /// Unix time in milliseconds.
    pub applied_at_ms: u64,
    /// Set when the event could not be applied (it is still acknowledged: retrying a
    /// malformed event would not help).
    pub error: Option<String>,
}

/// What a node reports after applying a purge.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub id: String,
    pub objects: u64,
    pub applied_us: u64,
    /// Pattern purges are in force at once; their sweep over the whole cache (which
    /// counts and removes the objects) runs in the background.
    pub sweeping: bool,
}

impl PurgeRequest {
    /// Checks the request's syntax without a node's services (what the control plane can
    /// check before publishing): the same rules as [`PurgeRequest::resolve`] against a
    /// catch-all service.
    pub fn check(&self) -> Result<(), String> {
        if self.wait.is_some_and(|w| !(0.0..=300.0).contains(&w)) {
            return Err("wait: between 0 and 300 seconds".into());
        }
        let any_host = Services::from_config(&crate::config::NodeConfig::single_origin(
            "http://127.0.0.1:1",
        ))?;
        self.resolve(&any_host, SystemTime::now()).map(|_| ())
    }

    /// Turns the request into purges for this node, or says what is wrong with it.
    pub fn resolve(
        &self,
        services: &Services,
        issued_at: SystemTime,
    ) -> Result<Vec<Purge>, String> {
        if self.urls.is_empty()
            && self.tags.is_empty()
            && self.prefixes.is_empty()
            && self.patterns.is_empty()
            && !self.all
        {
            return Err("nothing to purge: give urls, tags, prefixes, patterns or all".into());
        }
        let mut purges = Vec::new();
        let mut add = |scope| {
            purges.push(Purge {
                scope,
                soft: self.soft,
                issued_at,
            })
        };
        if !self.urls.is_empty() {
            let mut keys = Vec::with_capacity(self.urls.len());
            for (i, url) in self.urls.iter().enumerate() {
                let (host, uri) = parse_url(url).map_err(|why| format!("urls[{i}]: {why}"))?;
                let service = services
                    .for_host(&host)
                    .ok_or_else(|| format!("urls[{i}]: no service answers for host '{host}'"))?;
                let rules = service.resolve(uri.path()).key_rules;
                keys.push(CacheKey::new(
                    "http",
                    service.key_host(&host),
                    uri.path(),
                    uri.query(),
                    &rules,
                ));
            }
            add(Scope::Keys(keys));
        }
        if !self.tags.is_empty() {
            for (i, tag) in self.tags.iter().enumerate() {
                if tag.is_empty() || tag.contains([' ', ',', '\t']) {
                    return Err(format!("tags[{i}]: a tag is one non-empty word"));
                }
            }
            add(Scope::Tags(self.tags.clone()));
        }
        if !self.prefixes.is_empty() {
            let mut prefixes = Vec::with_capacity(self.prefixes.len());
            for (i, p) in self.prefixes.iter().enumerate() {
                let (host, uri) = parse_url(p).map_err(|why| format!("prefixes[{i}]: {why}"))?;
                if uri.query().is_some() {
                    return Err(format!("prefixes[{i}]: a prefix has no query"));
                }
                // Normalised the way keys are (host case, default port).
                let rules = KeyRules {
                    strip_query: Vec::new(),
                    ignore_query: true,
                };
                let text = CacheKey::new("http", &host, uri.path(), None, &rules)
                    .as_str()
                    .to_string();
                prefixes.push(text);
            }
            add(Scope::Prefixes(prefixes));
        }
        if !self.patterns.is_empty() {
            let mut patterns = Vec::with_capacity(self.patterns.len());
            for (i, p) in self.patterns.iter().enumerate() {
                let (host, glob) = if p.starts_with('/') {
                    (None, p.clone())
                } else {
                    let (host, uri) =
                        parse_url(p).map_err(|why| format!("patterns[{i}]: {why}"))?;
                    let host = crate::service::strip_port(&host).to_string();
                    (Some(host), uri.path().to_string())
                };
                if glob.is_empty() || !glob.starts_with('/') {
                    return Err(format!(
                        "patterns[{i}]: a pattern is a path glob such as /img/*.jpg"
                    ));
                }
                patterns.push(PathPattern::new(host.as_deref(), &glob));
            }
            add(Scope::Patterns(patterns));
        }
        if self.all {
            add(Scope::All);
        }
        Ok(purges)
    }
}

fn parse_url(s: &str) -> Result<(String, Uri), String> {
    let uri: Uri = s.parse().map_err(|_| format!("'{s}' is not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("'{s}' is not an http:// or https:// URL")),
    }
    let host = uri
        .authority()
        .ok_or_else(|| format!("'{s}' has no host"))?
        .as_str()
        .to_string();
    Ok((host, uri))
}

/// Largest purge request body accepted (node admin API and control plane).
pub const MAX_PURGE_BODY: usize = 1 << 20;

/// Reads a purge request (the JSON body of `POST /v1/purge`): the reason as text when the
/// body is too large, unreadable or not a purge request.
pub async fn read_request(body: hyper::body::Incoming) -> Result<PurgeRequest, String> {
    use http_body_util::BodyExt;
    let bytes = http_body_util::Limited::new(body, MAX_PURGE_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid purge request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    fn services() -> Services {
        let mut c = NodeConfig::single_origin("http://127.0.0.1:1");
        c.services[0].strip_query = vec!["utm_*".into()];
        Services::from_config(&c).unwrap()
    }

    #[test]
    fn urls_become_cache_keys_with_the_service_rules() {
        let req = PurgeRequest {
            urls: vec!["http://Example.com/a?utm_x=1&b=2".into()],
            ..Default::default()
        };
        let p = req.resolve(&services(), SystemTime::now()).unwrap();
        assert_eq!(
            p[0].scope,
            Scope::Keys(vec![CacheKey::new(
                "http",
                "example.com",
                "/a",
                Some("b=2"),
                &KeyRules::default()
            )])
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_place() {
        let s = services();
        let now = SystemTime::now();
        assert!(PurgeRequest::default()
            .resolve(&s, now)
            .unwrap_err()
            .contains("nothing to purge"));
        let bad = PurgeRequest {
            urls: vec!["/relative".into()],
            ..Default::default()
        };
        assert!(bad.resolve(&s, now).unwrap_err().starts_with("urls[0]"));
        let bad = PurgeRequest {
            tags: vec!["two words".into()],
            ..Default::default()
        };
        assert!(bad.resolve(&s, now).unwrap_err().starts_with("tags[0]"));
        let bad = PurgeRequest {
            patterns: vec!["img/*".into()],
            ..Default::default()
        };
        assert!(bad.resolve(&s, now).unwrap_err().starts_with("patterns[0]"));
        let good = PurgeRequest {
            patterns: vec!["/a/*".into(), "http://x.test:80/b/*".into()],
            ..Default::default()
        };
        assert!(good.resolve(&s, now).is_ok());
    }
}
