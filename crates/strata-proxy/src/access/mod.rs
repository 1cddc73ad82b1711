//! The access phase: after the service and rule are known, before the cache. Who may ask
//! ([`rules`]), what proves a request was allowed ([`edgeauth`] tokens, [`signed_url`]s),
//! and how fast one client may ask ([`rate`]), per service or rule.
//!
//! The credentials (the token's query parameter, the signature's) are removed from the
//! request here: the cache key and the origin request never see them, so one copy of a
//! protected object serves every viewer. Requests from this node's ring peers were checked
//! by the node the client reached and are not checked again (their credentials were removed
//! there). Behind a trusted proxy (`forwarding.trusted_proxies`, a load balancer) the checks
//! are about the client it forwarded for (`X-Forwarded-For`), not the proxy.

pub mod country;
pub mod edgeauth;
pub mod rate;
pub mod rules;
pub mod signed_url;

use std::net::IpAddr;
use std::time::Duration;

use http::header::{COOKIE, REFERER};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use strata_wire::clock::Clock;

use crate::config::{AccessConfig, ConfigError};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Network,
    Country,
    /// Not one of the methods served; `Allow` names those.
    Method(HeaderValue),
    Referrer,
    Token(TokenError),
    /// The client's bucket is empty for this long.
    RateLimited(Duration),
}

/// Why a token or a signed URL was refused. Its name goes into `Cache-Status`
/// (`detail=token-…`); none says which key would have worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    /// Expiry further ahead than the configured longest lifetime.
    TooLongLived,
    WrongIp,
    WrongPath,
}

impl TokenError {
    pub fn detail(self) -> &'static str {
        match self {
            TokenError::Missing => "token-missing",
            TokenError::Malformed => "token-malformed",
            TokenError::BadSignature => "token-bad-signature",
            TokenError::Expired => "token-expired",
            TokenError::NotYetValid => "token-not-yet-valid",
            TokenError::TooLongLived => "token-too-long-lived",
            TokenError::WrongIp => "token-wrong-ip",
            TokenError::WrongPath => "token-wrong-path",
        }
    }
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::FORBIDDEN,
        }
    }

    pub fn detail(&self) -> &'static str {
        match self {
            Refusal::Network => "access-denied-network",
            Refusal::Country => "access-denied-country",
            Refusal::Method(_) => "access-denied-method",
            Refusal::Referrer => "access-denied-referrer",
            Refusal::Token(e) => e.detail(),
            Refusal::RateLimited(_) => "rate-limited",
        }
    }

    /// `Retry-After` (whole seconds, at least 1) or `Allow`, when the answer carries one.
    pub fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        match self {
            Refusal::Method(allow) => Some((http::header::ALLOW, allow.clone())),
            Refusal::RateLimited(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Some((http::header::RETRY_AFTER, HeaderValue::from(secs.max(1))))
            }
            _ => None,
        }
    }
}

/// An EdgeAuth token's optional fields, for [`signed_url`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenFields<'a> {
    /// Path patterns (`*`, `?`; several joined by `!`); without, the token is for the path.
    pub acl: Option<&'a str>,
    /// The client address the token is bound to.
    pub ip: Option<&'a str>,
    pub id: Option<&'a str>,
}

/// A signed URL for `path` on `host` under `config` (see [`Access::sign`]): the service
/// for `host`, and the rule for `path`, say what is required.
pub fn signed_url(
    config: &crate::config::NodeConfig,
    scheme: &str,
    host: &str,
    path: &str,
    exp: u64,
    fields: &TokenFields<'_>,
) -> Result<String, String> {
    let services = crate::service::Services::from_config(config, &Clock::system())?;
    let service = services
        .for_host(host)
        .ok_or_else(|| format!("no service answers for '{host}'"))?;
    let uri: Uri = path
        .parse()
        .map_err(|_| format!("'{path}' is not a path"))?;
    let access = service
        .resolve(uri.path())
        .access
        .ok_or_else(|| format!("'{host}{}' has no access settings", uri.path()))?;
    let params = access.sign(uri.path(), exp, fields)?;
    let sep = if uri.query().is_some() { '&' } else { '?' };
    Ok(format!("{scheme}://{host}{path}{sep}{params}"))
}

/// Where a token is looked for.
#[derive(Debug)]
struct TokenSource {
    name: String,
    query: bool,
    cookie: bool,
    header: Option<HeaderName>,
}

/// One service's or rule's access settings, ready for requests.
pub struct Access {
    rules: rules::Rules,
    token: Option<(edgeauth::Verifier, TokenSource)>,
    signed: Option<signed_url::Verifier>,
    limit: Option<rate::Limit>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("rules", &self.rules)
            .field("token", &self.token.as_ref().map(|(_, s)| s))
            .field("signed", &self.signed.is_some())
            .field("limit", &self.limit)
            .finish()
    }
}

/// A request the access phase let through.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The target without its credentials, when it carried some.
    pub uri: Option<Uri>,
}

/// The facts of a request the checks read.
pub struct Asking<'a> {
    pub client: IpAddr,
    /// The client's country, when [`Access::wants_country`] (else `None`).
    pub country: Option<crate::config::CountryCode>,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// Unix seconds, from the node clock.
    pub now: u64,
}

// === impl Access ===

impl Access {
    /// Builds (and so checks) `c`; errors name the key under `at` (`service[0].access`).
    pub fn from_config(c: &AccessConfig, at: &str, clock: Clock) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let nets = |list: &[String], name: &str| {
            list.iter()
                .enumerate()
                .map(|(n, s)| {
                    crate::config::parse_network(s)
                        .map_err(|why| ConfigError::new(format!("{at}.{name}[{n}]"), why))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut methods = Vec::new();
        for (m, name) in c.methods.iter().enumerate() {
            methods.push(Method::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new(key(&format!("methods[{m}]")), "not a method name")
            })?);
        }
        for (r, pattern) in c.referrers.iter().enumerate() {
            if pattern == "*" || !crate::config::valid_host_pattern(&pattern.to_ascii_lowercase()) {
                return Err(ConfigError::new(
                    key(&format!("referrers[{r}]")),
                    "a host name or '*.domain'",
                ));
            }
        }
        let codes = |list: &[String], name: &str| {
            list.iter()
                .enumerate()
                .map(|(n, s)| {
                    crate::config::country_code(s).ok_or_else(|| {
                        ConfigError::new(
                            format!("{at}.{name}[{n}]"),
                            "a two-letter country code (ISO 3166-1; XX: unknown)",
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let rules = rules::Rules {
            allow: nets(&c.allow, "allow")?,
            deny: nets(&c.deny, "deny")?,
            countries: codes(&c.countries, "countries")?,
            deny_countries: codes(&c.deny_countries, "deny_countries")?,
            methods,
            referrers: c.referrers.iter().map(|r| r.to_ascii_lowercase()).collect(),
            allow_no_referrer: c.allow_no_referrer,
        };
        let token = match &c.token {
            None => None,
            Some(t) => {
                let algorithm = match t.algorithm.as_str() {
                    "sha256" => edgeauth::Algorithm::Sha256,
                    "sha1" => edgeauth::Algorithm::Sha1,
                    _ => {
                        return Err(ConfigError::new(
                            key("token.algorithm"),
                            "'sha256' or 'sha1'",
                        ))
                    }
                };
                let verifier = edgeauth::Verifier::new(
                    &t.keys,
                    algorithm,
                    t.salt.clone(),
                    t.leeway.0.as_secs(),
                    t.max_lifetime.map(|s| s.0.as_secs()),
                    t.escape_early,
                )
                .map_err(|why| ConfigError::new(key("token.keys"), why))?;
                if t.name.is_empty() || t.name.contains(['&', '=', ';', ' ']) {
                    return Err(ConfigError::new(key("token.name"), "not a parameter name"));
                }
                let mut source = TokenSource {
                    name: t.name.clone(),
                    query: false,
                    cookie: false,
                    header: None,
                };
                if t.from.is_empty() {
                    return Err(ConfigError::new(key("token.from"), "must not be empty"));
                }
                for (f, from) in t.from.iter().enumerate() {
                    match from.as_str() {
                        "query" => source.query = true,
                        "cookie" => source.cookie = true,
                        "header" => {
                            source.header =
                                Some(HeaderName::from_bytes(t.name.as_bytes()).map_err(|_| {
                                    ConfigError::new(key("token.name"), "not a header name")
                                })?)
                        }
                        _ => {
                            return Err(ConfigError::new(
                                key(&format!("token.from[{f}]")),
                                "'query', 'cookie' or 'header'",
                            ))
                        }
                    }
                }
                Some((verifier, source))
            }
        };
        let signed = match &c.signed_urls {
            None => None,
            Some(s) => {
                for (name, value) in [
                    ("expires_param", &s.expires_param),
                    ("signature_param", &s.signature_param),
                ] {
                    if value.is_empty() || value.contains(['&', '=', ' ']) {
                        return Err(ConfigError::new(
                            key(&format!("signed_urls.{name}")),
                            "not a parameter name",
                        ));
                    }
                }
                Some(
                    signed_url::Verifier::new(
                        &s.keys,
                        &s.expires_param,
                        &s.signature_param,
                        s.leeway.0.as_secs(),
                        s.max_lifetime.map(|m| m.0.as_secs()),
                    )
                    .map_err(|why| ConfigError::new(key("signed_urls.keys"), why))?,
                )
            }
        };
        let limit = match &c.rate_limit {
            None => None,
            Some(r) => {
                let key_by = match r.key.as_str() {
                    "client" => rate::KeyBy::Client,
                    "token-id" => rate::KeyBy::TokenId,
                    other => match other.strip_prefix("header:") {
                        Some(name) => {
                            rate::KeyBy::Header(HeaderName::from_bytes(name.as_bytes()).map_err(
                                |_| ConfigError::new(key("rate_limit.key"), "not a header name"),
                            )?)
                        }
                        None => {
                            return Err(ConfigError::new(
                                key("rate_limit.key"),
                                "'client', 'token-id' or 'header:NAME'",
                            ))
                        }
                    },
                };
                let burst = r
                    .burst
                    .unwrap_or_else(|| r.requests_per_second.ceil().clamp(1.0, 1e9) as u32);
                Some(
                    rate::Limit::new(r.requests_per_second, burst, key_by, clock).map_err(
                        |why| ConfigError::new(key("rate_limit.requests_per_second"), why),
                    )?,
                )
            }
        };
        Ok(Self {
            rules,
            token,
            signed,
            limit,
        })
    }

    /// Whether the checks read the client's country ([`Asking::country`]).
    pub fn wants_country(&self) -> bool {
        !self.rules.countries.is_empty() || !self.rules.deny_countries.is_empty()
    }

    /// Checks a request: rules, then credentials, then the rate. On success, the target
    /// to use from here on when credentials were removed from it.
    pub fn check(&self, req: &Asking<'_>) -> Result<Admitted, Refusal> {
        self.rules.check(
            req.client,
            req.country,
            req.method,
            req.headers.get(REFERER),
        )?;
        let path = req.uri.path();
        let query = req.uri.query();
        let mut strip: Vec<&str> = Vec::new();
        let mut token_id = None;
        if let Some((verifier, source)) = &self.token {
            let (token, in_query) = source.find(query, req.headers);
            let token = token.unwrap_or_default();
            let presented = |token: &str| {
                verifier.check(&edgeauth::Presented {
                    token,
                    path,
                    client: req.client,
                    now: req.now,
                })
            };
            // A token in a query may have been percent-encoded on its way (a `~` or `=`
            // escaped by a client library): tried as sent, then decoded.
            let valid = match presented(&token) {
                Err(TokenError::Malformed | TokenError::BadSignature) if token.contains('%') => {
                    presented(&percent_encoding::percent_decode_str(&token).decode_utf8_lossy())
                }
                checked => checked,
            }
            .map_err(Refusal::Token)?;
            token_id = valid.id;
            if in_query {
                strip.push(&source.name);
            }
        }
        if let Some(signed) = &self.signed {
            signed.check(path, query, req.now).map_err(Refusal::Token)?;
            strip.push(&signed.expires_param);
            strip.push(&signed.signature_param);
        }
        if let Some(limit) = &self.limit {
            let key = limit.key(req.client, token_id.as_deref(), req.headers);
            limit.check(key).map_err(Refusal::RateLimited)?;
        }
        let uri = match query {
            Some(q) if !strip.is_empty() => Some(without_params(req.uri, q, &strip)),
            _ => None,
        };
        Ok(Admitted { uri })
    }

    /// The query that makes `path` pass this access's token and signed-URL checks until
    /// `exp` (unix seconds), signed with the first key of each (`strata sign`). `acl`,
    /// `ip`, `id`: the EdgeAuth token's fields (without `acl`, the token is for `path`
    /// alone).
    pub fn sign(&self, path: &str, exp: u64, fields: &TokenFields<'_>) -> Result<String, String> {
        let TokenFields { acl, ip, id } = *fields;
        let mut params = Vec::new();
        if let Some((verifier, source)) = &self.token {
            if !source.query {
                return Err(format!(
                    "tokens are read from a cookie or the '{}' header here; send this one there: {}",
                    source.name,
                    verifier.generate(acl, path, exp, ip, id)?
                ));
            }
            params.push(format!(
                "{}={}",
                source.name,
                verifier.generate(acl, path, exp, ip, id)?
            ));
        }
        if let Some(signed) = &self.signed {
            params.push(signed.params(path, exp));
        }
        if params.is_empty() {
            return Err("neither a token nor signed URLs are required here".into());
        }
        Ok(params.join("&"))
    }

    /// Drops the rate limit's idle buckets (a background task calls this).
    pub fn sweep(&self) {
        if let Some(limit) = &self.limit {
            limit.sweep();
        }
    }

    /// The rate limit's buckets (tests).
    pub fn buckets(&self) -> usize {
        self.limit.as_ref().map_or(0, |l| l.buckets())
    }
}

impl TokenSource {
    /// The token, and whether it came from the query.
    fn find(&self, query: Option<&str>, headers: &HeaderMap) -> (Option<String>, bool) {
        if self.query {
            let found = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    (name == self.name).then(|| value.to_string())
                });
            if found.is_some() {
                return (found, true);
            }
        }
        if self.cookie {
            let found = headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    (name == self.name).then(|| value.trim_matches('"').to_string())
                });
            if found.is_some() {
                return (found, false);
            }
        }
        let found = self
            .header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (found, false)
    }
}

/// `uri` without the query parameters named in `strip`.
fn without_params(uri: &Uri, query: &str, strip: &[&str]) -> Uri {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !strip.contains(&name)
        })
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    // Built from pieces of a valid target: it parses.
    parts.path_and_query = PathAndQuery::from_maybe_shared(path_and_query).ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RateLimitConfig, SignedUrlConfig, TokenConfig};

    const KEY: &str = "0123456789abcdef";

    fn ask<'a>(uri: &'a Uri, headers: &'a HeaderMap, now: u64) -> Asking<'a> {
        Asking {
            client: "192.0.2.1".parse().unwrap(),
            country: None,
            method: &Method::GET,
            uri,
            headers,
            now,
        }
    }

    fn token_access(from: &[&str]) -> Access {
        let c = AccessConfig {
            token: Some(TokenConfig {
                keys: vec![KEY.into()],
                name: "__token__".into(),
                from: from.iter().map(|s| s.to_string()).collect(),
                algorithm: "sha256".into(),
                salt: None,
                leeway: crate::config::Seconds(Duration::ZERO),
                max_lifetime: None,
                escape_early: false,
            }),
            ..AccessConfig::default()
        };
        Access::from_config(&c, "service[0].access", Clock::system()).unwrap()
    }

    fn token(acl: &str, exp: u64) -> String {
        edgeauth::test_acl_token(KEY, acl, exp, None)
    }

    #[test]
    fn a_query_token_is_checked_and_removed_from_the_target() {
        let access = token_access(&["query", "cookie"]);
        let t = token("/v/*", 100);
        let uri: Uri = format!("/v/a.ts?x=1&__token__={t}&y=2").parse().unwrap();
        let admitted = access.check(&ask(&uri, &HeaderMap::new(), 50)).unwrap();
        assert_eq!(admitted.uri.unwrap(), "/v/a.ts?x=1&y=2");
        // Percent-encoded on the way: still the same token.
        let encoded = t.replace('~', "%7E").replace('=', "%3D");
        let uri: Uri = format!("/v/a.ts?__token__={encoded}").parse().unwrap();
        let admitted = access.check(&ask(&uri, &HeaderMap::new(), 50)).unwrap();
        assert_eq!(admitted.uri.unwrap(), "/v/a.ts");
        // From a cookie: the target is left as it is.
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, format!("a=b; __token__={t}").parse().unwrap());
        let uri: Uri = "/v/a.ts?x=1".parse().unwrap();
        assert!(access
            .check(&ask(&uri, &headers, 50))
            .unwrap()
            .uri
            .is_none());
        // None at all.
        assert_eq!(
            access.check(&ask(&uri, &HeaderMap::new(), 50)).unwrap_err(),
            Refusal::Token(TokenError::Missing)
        );
    }

    #[test]
    fn a_token_is_only_looked_for_where_configured() {
        let access = token_access(&["header"]);
        let t = token("/*", 100);
        let uri: Uri = format!("/a?__token__={t}").parse().unwrap();
        assert_eq!(
            access.check(&ask(&uri, &HeaderMap::new(), 50)).unwrap_err(),
            Refusal::Token(TokenError::Missing)
        );
        let mut headers = HeaderMap::new();
        headers.insert("__token__", t.parse().unwrap());
        let plain: Uri = "/a".parse().unwrap();
        assert!(access.check(&ask(&plain, &headers, 50)).is_ok());
    }

    #[test]
    fn signed_urls_are_checked_and_their_parameters_removed() {
        let c = AccessConfig {
            signed_urls: Some(SignedUrlConfig {
                keys: vec!["new-key-0123456789".into(), "old-key-0123456789".into()],
                expires_param: "expires".into(),
                signature_param: "signature".into(),
                leeway: crate::config::Seconds(Duration::ZERO),
                max_lifetime: None,
            }),
            ..AccessConfig::default()
        };
        let access = Access::from_config(&c, "a", Clock::system()).unwrap();
        let sig = signed_url::sign("old-key-0123456789", "/f.bin", 100);
        let uri: Uri = format!("/f.bin?expires=100&signature={sig}&v=3")
            .parse()
            .unwrap();
        let admitted = access.check(&ask(&uri, &HeaderMap::new(), 99)).unwrap();
        assert_eq!(admitted.uri.unwrap(), "/f.bin?v=3");
        assert_eq!(
            access
                .check(&ask(&uri, &HeaderMap::new(), 101))
                .unwrap_err(),
            Refusal::Token(TokenError::Expired)
        );
    }

    #[test]
    fn rate_limited_answers_say_when_to_retry() {
        let c = AccessConfig {
            rate_limit: Some(RateLimitConfig {
                requests_per_second: 0.5,
                burst: Some(2),
                key: "client".into(),
            }),
            ..AccessConfig::default()
        };
        let access = Access::from_config(&c, "a", Clock::system()).unwrap();
        let uri: Uri = "/".parse().unwrap();
        assert!(access.check(&ask(&uri, &HeaderMap::new(), 0)).is_ok());
        assert!(access.check(&ask(&uri, &HeaderMap::new(), 0)).is_ok());
        let refusal = access.check(&ask(&uri, &HeaderMap::new(), 0)).unwrap_err();
        assert_eq!(refusal.status(), StatusCode::TOO_MANY_REQUESTS);
        let (name, value) = refusal.header().unwrap();
        assert_eq!(name, http::header::RETRY_AFTER);
        assert_eq!(value, "2");
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = |c: AccessConfig| {
            Access::from_config(&c, "service[0].access", Clock::system())
                .unwrap_err()
                .path
        };
        assert_eq!(
            bad(AccessConfig {
                allow: vec!["10.0.0.0/33".into()],
                ..AccessConfig::default()
            }),
            "service[0].access.allow[0]"
        );
        assert_eq!(
            bad(AccessConfig {
                methods: vec!["G ET".into()],
                ..AccessConfig::default()
            }),
            "service[0].access.methods[0]"
        );
        assert_eq!(
            bad(AccessConfig {
                rate_limit: Some(RateLimitConfig {
                    requests_per_second: 0.0,
                    burst: None,
                    key: "client".into(),
                }),
                ..AccessConfig::default()
            }),
            "service[0].access.rate_limit.requests_per_second"
        );
        assert_eq!(
            bad(AccessConfig {
                rate_limit: Some(RateLimitConfig {
                    requests_per_second: 1.0,
                    burst: None,
                    key: "cookie".into(),
                }),
                ..AccessConfig::default()
            }),
            "service[0].access.rate_limit.key"
        );
    }
}
