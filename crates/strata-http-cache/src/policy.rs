//! Whether a response may be stored (RFC 9111 §3) and whether a stored response may serve a
//! request (§4.2, §5.2.1, RFC 5861).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, AUTHORIZATION, ETAG, LAST_MODIFIED, SET_COOKIE};
use http::{Method, StatusCode};

use crate::cache_control::{RequestCacheControl, ResponseCacheControl};
use crate::freshness::{
    corrected_initial_age, current_age, freshness_lifetime, heuristically_cacheable, Freshness,
    FreshnessSource, HeuristicConfig, ResponseTimes,
};
use crate::targeted::targeted_cache_control;
use crate::vary::{vary_of, Vary};

/// Operator settings that shape storage decisions, resolved per request from the service and
/// its matching path rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyConfig {
    pub heuristic: HeuristicConfig,
    /// Lifetime for 404/410 answers that carry no freshness of their own.
    pub negative_ttl: Option<Duration>,
    /// Lifetime for 500/502/503/504 answers that carry no freshness of their own.
    pub negative_ttl_5xx: Option<Duration>,
    /// Replaces the origin's freshness lifetime for storable responses.
    pub ttl_override: Option<Duration>,
    /// The lifetime of a heuristically cacheable answer (200, 301, 404…) that carries no
    /// explicit freshness, in place of the Last-Modified heuristic (§4.2.2): what a class
    /// of content is known to stay valid for (media segments do not change once
    /// published).
    pub default_ttl: Option<Duration>,
    /// The longest any 4xx or 5xx answer is kept, whatever it says (a 404 for a segment
    /// that is about to exist must not outlive the second it takes to appear).
    pub max_error_ttl: Option<Duration>,
    /// Store responses that set cookies. Off by default: a cookie is usually per user.
    pub cache_set_cookie: bool,
    /// Micro-caching: a lifetime for 200 answers that would otherwise not be stored (or be
    /// stale on arrival). Never applied to answers that set cookies, to authenticated
    /// requests, or to `Vary: *`.
    pub micro_cache: Option<Duration>,
}

/// Why a response was not stored; the text goes into `Cache-Status: detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Method,
    Status,
    RequestNoStore,
    NoStore,
    Private,
    Authorization,
    VaryStar,
    SetCookie,
    NoFreshness,
}

impl NotStorable {
    /// Whether the request (not the response) forbade storing: the response itself may be
    /// perfectly cacheable for other requests.
    pub fn is_request_caused(self) -> bool {
        matches!(
            self,
            NotStorable::RequestNoStore | NotStorable::Authorization
        )
    }

    pub fn detail(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::RequestNoStore => "request-no-store",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary-star",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::NoFreshness => "no-freshness",
        }
    }
}

/// What a stored response can do for a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it as is.
    Fresh,
    /// Stale, but the client accepts it (`max-stale`).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve, and revalidate in the background.
    StaleWhileRevalidate,
    /// Must be validated (or refetched) before use.
    Revalidate,
}

/// The caching facts of one stored response, computed once when it is stored (and again
/// when a 304 refreshes it).
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// The directives in charge: the targeted field when valid, else `Cache-Control`.
    pub cc: ResponseCacheControl,
    /// Whether `cc` came from `CDN-Cache-Control` / `Surrogate-Control`.
    pub targeted: bool,
    pub freshness: Freshness,
    pub initial_age: Duration,
    pub response_time: SystemTime,
    /// Fields a qualified `private="…"` forbids us to store.
    pub private_fields: Vec<HeaderName>,
    pub has_validators: bool,
}

// === impl CachePolicy ===

impl CachePolicy {
    /// Decides whether a response may be stored (§3) and, if so, computes its freshness;
    /// then applies micro-caching when configured.
    pub fn for_response(
        method: &Method,
        request_headers: &HeaderMap,
        status: StatusCode,
        response_headers: &HeaderMap,
        times: ResponseTimes,
        config: &PolicyConfig,
    ) -> Result<Self, NotStorable> {
        let standard = Self::standard(
            method,
            request_headers,
            status,
            response_headers,
            times,
            config,
        );
        let Some(ttl) = config.micro_cache else {
            return standard;
        };
        if matches!(&standard, Ok(p) if !p.freshness.lifetime.is_zero()) {
            return standard;
        }
        let eligible = *method == Method::GET
            && status == StatusCode::OK
            && !response_headers.contains_key(SET_COOKIE)
            && !request_headers.contains_key(AUTHORIZATION)
            && !matches!(vary_of(response_headers), Vary::Star);
        if !eligible {
            return standard;
        }
        Ok(Self {
            // The origin's directives are kept for clients but not obeyed here.
            cc: ResponseCacheControl::default(),
            targeted: false,
            freshness: Freshness {
                lifetime: ttl,
                source: FreshnessSource::Micro,
            },
            initial_age: Duration::ZERO,
            response_time: times.response_time,
            private_fields: Vec::new(),
            has_validators: response_headers.contains_key(ETAG)
                || response_headers.contains_key(LAST_MODIFIED),
        })
    }

    /// RFC 9111 §3 storage decision and freshness.
    fn standard(
        method: &Method,
        request_headers: &HeaderMap,
        status: StatusCode,
        response_headers: &HeaderMap,
        times: ResponseTimes,
        config: &PolicyConfig,
    ) -> Result<Self, NotStorable> {
        if method != Method::GET {
            return Err(NotStorable::Method);
        }
        // 206 and 304 are never stored whole: we fetch full objects, and revalidation
        // answers are merged into an existing entry rather than stored.
        if !status_understood(status) {
            return Err(NotStorable::Status);
        }
        if RequestCacheControl::from_headers(request_headers).no_store {
            return Err(NotStorable::RequestNoStore);
        }
        let targeted = targeted_cache_control(response_headers);
        let is_targeted = targeted.is_some();
        let cc = targeted.unwrap_or_else(|| ResponseCacheControl::from_headers(response_headers));
        if cc.no_store {
            return Err(NotStorable::NoStore);
        }
        if cc.private {
            return Err(NotStorable::Private);
        }
        // §3.5: a shared cache stores an authenticated response only when told it may.
        if request_headers.contains_key(AUTHORIZATION)
            && !(cc.must_revalidate || cc.public || cc.s_maxage.is_some())
        {
            return Err(NotStorable::Authorization);
        }
        if matches!(vary_of(response_headers), Vary::Star) {
            return Err(NotStorable::VaryStar);
        }
        if !config.cache_set_cookie && response_headers.contains_key(SET_COOKIE) {
            return Err(NotStorable::SetCookie);
        }

        let mut freshness = freshness_lifetime(
            status,
            response_headers,
            &cc,
            !is_targeted,
            times.response_time,
            &config.heuristic,
        );
        let explicit = matches!(
            freshness.source,
            FreshnessSource::SMaxAge | FreshnessSource::MaxAge | FreshnessSource::Expires
        );
        if !explicit && heuristically_cacheable(status) {
            if let Some(ttl) = config.default_ttl {
                freshness = Freshness {
                    lifetime: ttl,
                    source: FreshnessSource::Heuristic,
                };
            }
        }
        if !explicit && freshness.source != FreshnessSource::Heuristic {
            let negative = match status.as_u16() {
                404 | 410 => config.negative_ttl,
                500 | 502 | 503 | 504 => config.negative_ttl_5xx,
                _ => None,
            };
            if let Some(ttl) = negative {
                freshness = Freshness {
                    lifetime: ttl,
                    source: FreshnessSource::Negative,
                };
            }
        }
        // §3: without explicit freshness, `public`, or a heuristically cacheable status,
        // the response may not be stored.
        let allowed = explicit
            || cc.public
            || heuristically_cacheable(status)
            || freshness.source == FreshnessSource::Negative;
        if !allowed {
            return Err(NotStorable::Status);
        }
        // A TTL override changes how long, never whether: a 503 stays uncached unless
        // negative caching of 5xx is configured.
        if let Some(ttl) = config.ttl_override {
            freshness = Freshness {
                lifetime: ttl,
                source: FreshnessSource::Override,
            };
        }
        // After the override: the longest an error is kept, whatever set its lifetime.
        if let Some(max) = config.max_error_ttl {
            if status.as_u16() >= 400 && freshness.lifetime > max {
                freshness.lifetime = max;
            }
        }
        let has_validators =
            response_headers.contains_key(ETAG) || response_headers.contains_key(LAST_MODIFIED);
        // A response that is stale on arrival and cannot be validated is useless to keep.
        if freshness.lifetime.is_zero() && !has_validators {
            return Err(NotStorable::NoFreshness);
        }
        Ok(Self {
            private_fields: cc.private_fields.clone(),
            cc,
            targeted: is_targeted,
            freshness,
            initial_age: corrected_initial_age(response_headers, times),
            response_time: times.response_time,
            has_validators,
        })
    }

    /// Current age (§4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        current_age(self.initial_age, self.response_time, now)
    }

    /// Remaining freshness in seconds; negative once stale (RFC 9211 `ttl`).
    pub fn ttl(&self, now: SystemTime) -> i64 {
        self.freshness.lifetime.as_secs() as i64 - self.age(now).as_secs() as i64
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.freshness.lifetime > self.age(now)
    }

    /// Whether this response can serve a request with these directives now (§4.2, §5.2.1,
    /// RFC 5861 §3). `default_swr` is the service's configured stale-while-revalidate.
    pub fn evaluate(
        &self,
        req: &RequestCacheControl,
        now: SystemTime,
        default_swr: Option<Duration>,
    ) -> Decision {
        // §5.2.2.4 / §5.2.1.4: no-cache from either side means validate every time.
        if self.cc.no_cache || req.no_cache {
            return Decision::Revalidate;
        }
        let age = self.age(now);
        let lifetime = self.freshness.lifetime;
        if let Some(max_age) = req.max_age {
            if age > Duration::from_secs(u64::from(max_age)) {
                return Decision::Revalidate;
            }
        }
        if let Some(min_fresh) = req.min_fresh {
            if lifetime < age + Duration::from_secs(u64::from(min_fresh)) {
                return Decision::Revalidate;
            }
        }
        if lifetime > age {
            return Decision::Fresh;
        }
        // §4.2.4 / §5.2.2.2: must-revalidate (and for us proxy-revalidate, s-maxage) forbid
        // serving stale without validation, whatever the request or RFC 5861 allow.
        if self.cc.revalidate_when_stale() {
            return Decision::Revalidate;
        }
        let staleness = age - lifetime;
        if let Some(max_stale) = req.max_stale {
            if max_stale.is_none_or(|s| staleness <= Duration::from_secs(u64::from(s))) {
                return Decision::StaleAccepted;
            }
        }
        let swr = self
            .cc
            .stale_while_revalidate
            .map(|s| Duration::from_secs(u64::from(s)))
            .or(default_swr);
        if swr.is_some_and(|w| staleness <= w) {
            return Decision::StaleWhileRevalidate;
        }
        Decision::Revalidate
    }

    /// Whether a stale copy may answer in place of an upstream error (RFC 5861 §4), given
    /// the service's grace period.
    pub fn stale_if_error(&self, now: SystemTime, grace: Option<Duration>) -> bool {
        if self.cc.revalidate_when_stale() {
            return false;
        }
        let staleness = self.age(now).saturating_sub(self.freshness.lifetime);
        let window = self
            .cc
            .stale_if_error
            .map(|s| Duration::from_secs(u64::from(s)))
            .into_iter()
            .chain(grace)
            .max();
        window.is_some_and(|w| staleness <= w)
    }
}

/// Final statuses whose semantics we understand well enough to store (RFC 9110 §15).
fn status_understood(status: StatusCode) -> bool {
    let code = status.as_u16();
    (200..600).contains(&code) && code != 206 && code != 304
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn times() -> ResponseTimes {
        ResponseTimes {
            request_time: t(0),
            response_time: t(0),
        }
    }

    fn policy(
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Result<CachePolicy, NotStorable> {
        CachePolicy::for_response(
            &Method::GET,
            &hm(req),
            StatusCode::from_u16(status).unwrap(),
            &hm(resp),
            times(),
            &PolicyConfig::default(),
        )
    }

    #[test]
    fn rfc9111_3_no_store_is_not_stored() {
        assert_eq!(
            policy(&[], 200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStorable::NoStore)
        );
    }

    #[test]
    fn rfc9111_5_2_1_5_request_no_store_is_not_stored() {
        assert_eq!(
            policy(
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")]
            ),
            Err(NotStorable::RequestNoStore)
        );
    }

    #[test]
    fn rfc9111_5_2_2_7_private_is_not_stored_by_shared_cache() {
        assert_eq!(
            policy(&[], 200, &[("cache-control", "private, max-age=60")]),
            Err(NotStorable::Private)
        );
        let p = policy(
            &[],
            200,
            &[("cache-control", "private=\"x-user\", max-age=60")],
        )
        .unwrap();
        assert_eq!(p.private_fields, vec![HeaderName::from_static("x-user")]);
    }

    #[test]
    fn rfc9111_3_5_authorization_requires_explicit_permission() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            policy(&auth, 200, &[("cache-control", "max-age=60")]),
            Err(NotStorable::Authorization)
        );
        assert!(policy(&auth, 200, &[("cache-control", "s-maxage=60")]).is_ok());
        assert!(policy(&auth, 200, &[("cache-control", "public, max-age=60")]).is_ok());
        assert!(policy(
            &auth,
            200,
            &[("cache-control", "must-revalidate, max-age=60")]
        )
        .is_ok());
    }

    #[test]
    fn rfc9111_4_1_vary_star_is_never_reused() {
        assert_eq!(
            policy(&[], 200, &[("cache-control", "max-age=60"), ("vary", "*")]),
            Err(NotStorable::VaryStar)
        );
    }

    #[test]
    fn rfc9110_15_1_non_heuristic_status_needs_explicit_freshness() {
        assert_eq!(
            policy(
                &[],
                302,
                &[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]
            ),
            Err(NotStorable::Status)
        );
        assert!(policy(&[], 302, &[("cache-control", "max-age=5")]).is_ok());
    }

    #[test]
    fn rfc9213_targeted_field_overrides_cache_control_and_expires() {
        let p = policy(
            &[],
            200,
            &[
                ("cache-control", "no-store"),
                ("expires", "0"),
                ("cdn-cache-control", "max-age=120"),
            ],
        )
        .unwrap();
        assert!(p.targeted);
        assert_eq!(p.freshness.lifetime, Duration::from_secs(120));
    }

    #[test]
    fn negative_caching_uses_configured_ttl() {
        let config = PolicyConfig {
            negative_ttl: Some(Duration::from_secs(10)),
            negative_ttl_5xx: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let p = |status| {
            CachePolicy::for_response(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                times(),
                &config,
            )
        };
        assert_eq!(p(404).unwrap().freshness.lifetime, Duration::from_secs(10));
        assert_eq!(p(503).unwrap().freshness.lifetime, Duration::from_secs(2));
        assert!(policy(&[], 503, &[]).is_err());
    }

    #[test]
    fn rfc9111_5_2_2_4_no_cache_always_revalidates() {
        let p = policy(
            &[],
            200,
            &[("cache-control", "no-cache, max-age=60"), ("etag", "\"a\"")],
        )
        .unwrap();
        assert_eq!(
            p.evaluate(&RequestCacheControl::default(), t(1), None),
            Decision::Revalidate
        );
    }

    #[test]
    fn rfc9111_5_2_1_1_request_max_age() {
        let p = policy(&[], 200, &[("cache-control", "max-age=60")]).unwrap();
        let req = RequestCacheControl {
            max_age: Some(5),
            ..Default::default()
        };
        assert_eq!(p.evaluate(&req, t(3), None), Decision::Fresh);
        assert_eq!(p.evaluate(&req, t(10), None), Decision::Revalidate);
    }

    #[test]
    fn rfc9111_5_2_1_3_request_min_fresh() {
        let p = policy(&[], 200, &[("cache-control", "max-age=60")]).unwrap();
        let req = RequestCacheControl {
            min_fresh: Some(30),
            ..Default::default()
        };
        assert_eq!(p.evaluate(&req, t(20), None), Decision::Fresh);
        assert_eq!(p.evaluate(&req, t(40), None), Decision::Revalidate);
    }

    #[test]
    fn rfc9111_5_2_1_2_request_max_stale() {
        let p = policy(&[], 200, &[("cache-control", "max-age=10")]).unwrap();
        let req = RequestCacheControl {
            max_stale: Some(Some(5)),
            ..Default::default()
        };
        assert_eq!(p.evaluate(&req, t(13), None), Decision::StaleAccepted);
        assert_eq!(p.evaluate(&req, t(20), None), Decision::Revalidate);
    }

    #[test]
    fn rfc9111_5_2_2_2_must_revalidate_forbids_stale() {
        let p = policy(
            &[],
            200,
            &[(
                "cache-control",
                "max-age=10, must-revalidate, stale-while-revalidate=60",
            )],
        )
        .unwrap();
        let req = RequestCacheControl {
            max_stale: Some(None),
            ..Default::default()
        };
        assert_eq!(p.evaluate(&req, t(20), None), Decision::Revalidate);
        assert!(!p.stale_if_error(t(20), Some(Duration::from_secs(100))));
    }

    #[test]
    fn rfc9111_5_2_2_8_proxy_revalidate_and_s_maxage_forbid_stale_for_shared_cache() {
        for cc in ["max-age=10, proxy-revalidate", "s-maxage=10"] {
            let p = policy(&[], 200, &[("cache-control", cc)]).unwrap();
            let req = RequestCacheControl {
                max_stale: Some(None),
                ..Default::default()
            };
            assert_eq!(p.evaluate(&req, t(20), None), Decision::Revalidate, "{cc}");
        }
    }

    #[test]
    fn rfc5861_3_stale_while_revalidate_window() {
        let p = policy(
            &[],
            200,
            &[("cache-control", "max-age=10, stale-while-revalidate=30")],
        )
        .unwrap();
        let req = RequestCacheControl::default();
        assert_eq!(
            p.evaluate(&req, t(20), None),
            Decision::StaleWhileRevalidate
        );
        assert_eq!(p.evaluate(&req, t(50), None), Decision::Revalidate);
    }

    #[test]
    fn rfc5861_4_stale_if_error_window() {
        let p = policy(
            &[],
            200,
            &[("cache-control", "max-age=10, stale-if-error=30")],
        )
        .unwrap();
        assert!(p.stale_if_error(t(30), None));
        assert!(!p.stale_if_error(t(50), None));
        assert!(p.stale_if_error(t(50), Some(Duration::from_secs(100))));
    }

    /// The policy for a GET answered `status` with `headers`, under `config`.
    fn under(
        config: &PolicyConfig,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Result<CachePolicy, NotStorable> {
        CachePolicy::for_response(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::from_u16(status).unwrap(),
            &hm(headers),
            times(),
            config,
        )
    }

    #[test]
    fn a_default_ttl_replaces_the_heuristic_and_never_explicit_freshness() {
        let config = PolicyConfig {
            default_ttl: Some(Duration::from_secs(86_400)),
            ..PolicyConfig::default()
        };
        let p = |status, headers: &[(&str, &str)]| under(&config, status, headers);
        let silent = p(200, &[]).unwrap();
        assert_eq!(silent.freshness.lifetime, Duration::from_secs(86_400));
        let explicit = p(200, &[("cache-control", "max-age=5")]).unwrap();
        assert_eq!(explicit.freshness.lifetime, Duration::from_secs(5));
        // Not for statuses that are not heuristically cacheable.
        assert!(p(500, &[]).is_err());
    }

    #[test]
    fn rfc9111_4_2_a_max_error_ttl_caps_what_errors_say() {
        let config = PolicyConfig {
            max_error_ttl: Some(Duration::from_secs(1)),
            negative_ttl: Some(Duration::from_secs(60)),
            ..PolicyConfig::default()
        };
        let p = |status, headers: &[(&str, &str)]| under(&config, status, headers).unwrap();
        assert_eq!(
            p(404, &[("cache-control", "max-age=600")])
                .freshness
                .lifetime,
            Duration::from_secs(1)
        );
        assert_eq!(p(404, &[]).freshness.lifetime, Duration::from_secs(1));
        assert_eq!(
            p(200, &[("cache-control", "max-age=600")])
                .freshness
                .lifetime,
            Duration::from_secs(600)
        );
    }

    #[test]
    fn ttl_override_replaces_origin_lifetime() {
        let config = PolicyConfig {
            ttl_override: Some(Duration::from_secs(300)),
            ..Default::default()
        };
        let p = CachePolicy::for_response(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &hm(&[("cache-control", "max-age=1")]),
            times(),
            &config,
        )
        .unwrap();
        assert_eq!(p.freshness.lifetime, Duration::from_secs(300));
    }

    #[test]
    fn ttl_override_does_not_make_errors_storable() {
        let config = PolicyConfig {
            ttl_override: Some(Duration::from_secs(300)),
            ..Default::default()
        };
        let p = CachePolicy::for_response(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            times(),
            &config,
        );
        assert_eq!(p, Err(NotStorable::Status));
    }

    #[test]
    fn micro_cache_stores_otherwise_uncacheable_200_briefly() {
        let config = PolicyConfig {
            micro_cache: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let p = |status: u16, resp: &[(&str, &str)]| {
            CachePolicy::for_response(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::from_u16(status).unwrap(),
                &hm(resp),
                times(),
                &config,
            )
        };
        let micro = p(200, &[("cache-control", "private, no-store")]).unwrap();
        assert_eq!(micro.freshness.lifetime, Duration::from_secs(1));
        assert!(!micro.cc.no_cache);
        // Explicit longer freshness is kept.
        assert_eq!(
            p(200, &[("cache-control", "max-age=60")])
                .unwrap()
                .freshness
                .lifetime,
            Duration::from_secs(60)
        );
        assert_eq!(
            p(200, &[("set-cookie", "a=b")]),
            Err(NotStorable::SetCookie)
        );
        assert!(p(500, &[]).is_err());
    }

    #[test]
    fn set_cookie_is_not_stored_by_default() {
        assert_eq!(
            policy(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]
            ),
            Err(NotStorable::SetCookie)
        );
    }
}
