//! `access` on a service or a rule: who may ask (networks, methods, referrers), what
//! proves a request was allowed (EdgeAuth tokens, signed URLs), and how fast one client
//! may ask (`rate_limit`). A rule's `access` replaces its service's.

use serde::Deserialize;

use super::Seconds;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Client networks served (`10.0.0.0/8`, `2001:db8::/32`, an address); empty: all.
    pub allow: Vec<String>,
    /// Client networks refused, even inside `allow`.
    pub deny: Vec<String>,
    /// Countries served (ISO 3166-1 alpha-2; `XX`: one `[geo]` does not know); empty: all.
    pub countries: Vec<String>,
    /// Countries refused, even inside `countries`.
    pub deny_countries: Vec<String>,
    /// Methods served; empty: all. Others are answered 405.
    pub methods: Vec<String>,
    /// Hosts a `Referer` must name (`example.com`, `*.example.com`); empty: no check.
    pub referrers: Vec<String>,
    /// With `referrers`: a request without `Referer` is served too.
    #[serde(default = "super::yes")]
    pub allow_no_referrer: bool,
    /// Akamai EdgeAuth tokens required.
    pub token: Option<TokenConfig>,
    /// HMAC-signed URLs required.
    pub signed_urls: Option<SignedUrlConfig>,
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Hex secrets; a token signed with any of them is accepted (rotation).
    pub keys: Vec<String>,
    /// Where the token is looked for: the query parameter, cookie or header of this name.
    #[serde(default = "default_token_name")]
    pub name: String,
    /// Any of `query`, `cookie`, `header`, looked at in that order.
    #[serde(default = "default_token_from")]
    pub from: Vec<String>,
    /// `sha256` (the generators' default) or `sha1`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    #[serde(default)]
    pub salt: Option<String>,
    /// Clock skew allowed around `st` and `exp`.
    #[serde(default = "default_leeway")]
    pub leeway: Seconds,
    /// Tokens whose `exp` is further ahead than this are refused.
    #[serde(default)]
    pub max_lifetime: Option<Seconds>,
    /// The generator's `escape_early` option.
    #[serde(default)]
    pub escape_early: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignedUrlConfig {
    /// Secrets (text); a URL signed with any of them is accepted (rotation). The first
    /// signs in `strata sign`.
    pub keys: Vec<String>,
    #[serde(default = "default_expires_param")]
    pub expires_param: String,
    #[serde(default = "default_signature_param")]
    pub signature_param: String,
    #[serde(default = "default_leeway")]
    pub leeway: Seconds,
    #[serde(default)]
    pub max_lifetime: Option<Seconds>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Average requests a second per bucket (fractions allowed: 0.5 is one every 2 s).
    pub requests_per_second: f64,
    /// Requests a full bucket lets through at once; default: one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `client` (address; IPv6 by /64), `token-id`, or `header:NAME`.
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_token_name() -> String {
    "__token__".into()
}

fn default_token_from() -> Vec<String> {
    vec!["query".into(), "cookie".into(), "header".into()]
}

fn default_algorithm() -> String {
    "sha256".into()
}

fn default_leeway() -> Seconds {
    Seconds(std::time::Duration::from_secs(5))
}

fn default_expires_param() -> String {
    "expires".into()
}

fn default_signature_param() -> String {
    "signature".into()
}

fn default_key() -> String {
    "client".into()
}
