//! Purge on one node: a request (`strata_wire::purge`) resolved against this node's
//! services into purges of its storage.
//!
//! `POST /v1/purge` on the admin listener takes the same JSON the control plane takes:
//! `{"urls": [...], "tags": [...], "prefixes": [...], "all": false, "soft": false}`. Bad
//! input is refused whole with 400 and the reason; nothing is applied. `PURGE <path>` on
//! the HTTP listeners, when enabled, purges one URL or a list of tags. Both are applied
//! to storage and to fills in progress ([`Proxy::purge_at`]). A URL, whatever its scheme,
//! purges both the `http` and the `https` copy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{Request, Response};

use strata_http_cache::{CacheKey, KeyRules};
use strata_storage::purge::PathPattern;
use strata_storage::{Purge, Scope};

use crate::body::{ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::proxy::Proxy;

/// A URL or prefix purge covers the content however clients reached it: keys carry the
/// scheme (an origin may answer the two differently), a purge names the resource.
pub const SCHEMES: [&str; 2] = ["http", "https"];
use crate::service::Services;

pub use strata_wire::purge::{
    parse_request, parse_url, read_request, PurgeAck, PurgeEvent, PurgeReport, PurgeRequest,
    MAX_PURGE_BODY,
};

/// Turns a purge request into purges for this node's services, or says what is wrong
/// with it: its syntax ([`PurgeRequest::check_scopes`], the control plane's messages too),
/// then which service answers for each URL.
pub fn resolve(
    request: &PurgeRequest,
    services: &Services,
    issued_at: SystemTime,
) -> Result<Vec<Purge>, String> {
    request.check_scopes()?;
    let mut purges = Vec::new();
    let mut add = |scope| {
        purges.push(Purge {
            scope,
            soft: request.soft,
            issued_at,
        })
    };
    if !request.urls.is_empty() {
        let mut keys = Vec::with_capacity(request.urls.len());
        for (i, url) in request.urls.iter().enumerate() {
            let (host, uri) = parse_url(url).map_err(|why| format!("urls[{i}]: {why}"))?;
            let service = services
                .for_host(&host)
                .ok_or_else(|| format!("urls[{i}]: no service answers for host '{host}'"))?;
            let rules = service.resolve(uri.path()).key_rules;
            for scheme in SCHEMES {
                keys.push(CacheKey::new(
                    scheme,
                    service.key_host(&host),
                    uri.path(),
                    uri.query(),
                    &rules,
                ));
            }
        }
        add(Scope::Keys(keys));
    }
    if !request.tags.is_empty() {
        add(Scope::Tags(request.tags.clone()));
    }
    if !request.prefixes.is_empty() {
        let mut prefixes = Vec::with_capacity(request.prefixes.len());
        for (i, p) in request.prefixes.iter().enumerate() {
            let (host, uri) = parse_url(p).map_err(|why| format!("prefixes[{i}]: {why}"))?;
            // Normalised the way keys are (host case, default port).
            let rules = KeyRules {
                strip_query: Vec::new(),
                ignore_query: true,
                only_query: &[],
            };
            for scheme in SCHEMES {
                let key = CacheKey::new(scheme, &host, uri.path(), None, &rules);
                prefixes.push(key.as_str().to_string());
            }
        }
        add(Scope::Prefixes(prefixes));
    }
    if !request.patterns.is_empty() {
        let mut patterns = Vec::with_capacity(request.patterns.len());
        for (i, p) in request.patterns.iter().enumerate() {
            let (host, glob) = if p.starts_with('/') {
                (None, p.clone())
            } else {
                let (host, uri) = parse_url(p).map_err(|why| format!("patterns[{i}]: {why}"))?;
                let host = crate::service::strip_port(&host).to_string();
                (Some(host), uri.path().to_string())
            };
            patterns.push(PathPattern::new(host.as_deref(), &glob));
        }
        add(Scope::Patterns(patterns));
    }
    if request.all {
        add(Scope::All);
    }
    Ok(purges)
}

// === impl Proxy ===

impl Proxy {
    /// Applies a purge request to this node: storage, then fills in progress. Pattern
    /// purges take effect at once (checked at lookup) and are swept in the background.
    pub fn purge(self: &Arc<Self>, request: &PurgeRequest) -> Result<PurgeReport, String> {
        let now = self.clock.wall();
        let id = format!(
            "{:x}",
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        self.purge_at(request, now, id)
    }

    /// Applies a purge issued elsewhere (the control plane) at `issued_at`.
    pub fn purge_at(
        self: &Arc<Self>,
        request: &PurgeRequest,
        issued_at: SystemTime,
        id: String,
    ) -> Result<PurgeReport, String> {
        let started = Instant::now();
        let now = self.clock.wall();
        let purges = resolve(request, &self.services, issued_at)?;
        let mut objects = 0;
        let mut sweeping = false;
        for p in &purges {
            objects += self.storage.purge(p, now);
            self.coalescer.invalidate_covered(p);
            sweeping |= matches!(p.scope, strata_storage::Scope::Patterns(_));
        }
        if sweeping {
            let (storage, clock, sweep_id) =
                (Arc::clone(&self.storage), self.clock.clone(), id.clone());
            tokio::task::spawn_blocking(move || {
                let swept = storage.sweep(clock.wall());
                tracing::info!(id = %sweep_id, objects = swept, "pattern purge swept");
            });
        }
        tracing::info!(%id, objects, soft = request.soft, "purge applied");
        Ok(PurgeReport {
            id,
            objects,
            applied_us: started.elapsed().as_micros() as u64,
            sweeping,
        })
    }

    /// `PURGE <path>` on the edge listener: purges that URL (or, with a `Surrogate-Key`
    /// request field, those tags); `Strata-Soft-Purge: 1` makes it soft. Off unless
    /// configured, and only from allowed networks.
    pub(crate) fn purge_method(
        self: &Arc<Self>,
        req: &Request<RequestBody>,
        host: &str,
        client: SocketAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if !self.purge_method_enabled {
            return Err(ProxyError::PurgeDisabled);
        }
        if !self
            .purge_allow
            .iter()
            .any(|net| net.contains(&client.ip()))
        {
            return Err(ProxyError::PurgeForbidden);
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let mut request = PurgeRequest {
            soft: header("strata-soft-purge") == Some("1"),
            ..Default::default()
        };
        match header("surrogate-key") {
            Some(tags) => request.tags = tags.split_whitespace().map(String::from).collect(),
            None => {
                let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
                request.urls = vec![format!("http://{host}{pq}")];
            }
        }
        let report = self.purge(&request).map_err(ProxyError::BadPurge)?;
        let json = serde_json::to_string(&report).unwrap_or_default() + "\n";
        let mut resp = Response::new(ProxyBody::full(json.clone()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(json.len()));
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    fn services() -> Services {
        let mut c = NodeConfig::single_origin("http://127.0.0.1:1");
        c.services[0].strip_query = vec!["utm_*".into()];
        Services::from_config(&c, &strata_wire::clock::Clock::system()).unwrap()
    }

    #[test]
    fn urls_become_cache_keys_with_the_service_rules() {
        let req = PurgeRequest {
            urls: vec!["http://Example.com/a?utm_x=1&b=2".into()],
            ..Default::default()
        };
        let p = resolve(&req, &services(), SystemTime::now()).unwrap();
        assert_eq!(
            p[0].scope,
            Scope::Keys(
                SCHEMES
                    .iter()
                    .map(|scheme| CacheKey::new(
                        scheme,
                        "example.com",
                        "/a",
                        Some("b=2"),
                        &KeyRules::default()
                    ))
                    .collect()
            )
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_place() {
        let s = services();
        let now = SystemTime::now();
        assert!(resolve(&PurgeRequest::default(), &s, now)
            .unwrap_err()
            .contains("nothing to purge"));
        let bad = PurgeRequest {
            urls: vec!["/relative".into()],
            ..Default::default()
        };
        assert!(resolve(&bad, &s, now).unwrap_err().starts_with("urls[0]"));
        let bad = PurgeRequest {
            tags: vec!["two words".into()],
            ..Default::default()
        };
        assert!(resolve(&bad, &s, now).unwrap_err().starts_with("tags[0]"));
        let bad = PurgeRequest {
            patterns: vec!["img/*".into()],
            ..Default::default()
        };
        assert!(resolve(&bad, &s, now)
            .unwrap_err()
            .starts_with("patterns[0]"));
        let good = PurgeRequest {
            patterns: vec!["/a/*".into(), "http://x.test:80/b/*".into()],
            ..Default::default()
        };
        assert!(resolve(&good, &s, now).is_ok());
    }
}
