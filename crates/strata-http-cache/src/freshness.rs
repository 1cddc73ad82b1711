//! Freshness lifetime (RFC 9111 §4.2.1, §4.2.2) and age (§4.2.3).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::StatusCode;

use crate::cache_control::{parse_delta_seconds, ResponseCacheControl};

/// When the request that produced a stored response was sent and its answer received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseTimes {
    pub request_time: SystemTime,
    pub response_time: SystemTime,
}

/// Where a freshness lifetime came from, for `Cache-Status` detail and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshnessSource {
    SMaxAge,
    MaxAge,
    Expires,
    Heuristic,
    /// A configured TTL for error statuses the origin gave no freshness for.
    Negative,
    /// A per-path TTL override from configuration.
    Override,
    /// A per-path micro-cache lifetime for otherwise uncacheable answers.
    Micro,
    /// Cut short by a soft purge.
    Purged,
    None,
}

/// A freshness lifetime and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub lifetime: Duration,
    pub source: FreshnessSource,
}

/// Statuses that are heuristically cacheable (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Parses an HTTP-date header. `None` when absent or invalid.
pub fn header_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    let v = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

/// The `Age` header: first member of a list, ignored when invalid (§5.1).
pub fn age_header(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get(AGE)?.to_str().ok()?;
    parse_delta_seconds(v.split(',').next()?.trim())
}

/// Inputs to the heuristic and negative-caching parts of the lifetime computation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeuristicConfig {
    /// Fraction of the time since `Last-Modified` (§4.2.2 suggests 10%).
    pub fraction: f64,
    /// Upper bound on a heuristic lifetime.
    pub max: Duration,
}

impl Default for HeuristicConfig {
    fn default() -> Self {
        Self {
            fraction: 0.1,
            max: Duration::from_secs(86_400),
        }
    }
}

/// Computes the freshness lifetime for a shared cache (§4.2.1):
/// `s-maxage` > `max-age` > `Expires - Date` > heuristic.
///
/// `use_expires` is false when a targeted field (RFC 9213) is in charge: it replaces both
/// `Cache-Control` and `Expires`.
pub fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &ResponseCacheControl,
    use_expires: bool,
    response_time: SystemTime,
    heuristic: &HeuristicConfig,
) -> Freshness {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    if let Some(s) = cc.s_maxage {
        return Freshness {
            lifetime: secs(s),
            source: FreshnessSource::SMaxAge,
        };
    }
    if let Some(m) = cc.max_age {
        return Freshness {
            lifetime: secs(m),
            source: FreshnessSource::MaxAge,
        };
    }
    let date = header_date(headers, DATE).unwrap_or(response_time);
    if use_expires && headers.contains_key(EXPIRES) {
        // §5.3: an invalid Expires (e.g. "0") means already expired. Several Expires
        // field lines are treated as invalid too (the field is a singleton).
        let expires = (headers.get_all(EXPIRES).iter().count() == 1)
            .then(|| header_date(headers, EXPIRES))
            .flatten();
        let lifetime = expires
            .and_then(|e| e.duration_since(date).ok())
            .unwrap_or_default();
        return Freshness {
            lifetime,
            source: FreshnessSource::Expires,
        };
    }
    if heuristically_cacheable(status) || cc.public {
        if let Some(lm) = header_date(headers, LAST_MODIFIED) {
            let since = date.duration_since(lm).unwrap_or_default();
            let lifetime = since.mul_f64(heuristic.fraction).min(heuristic.max);
            return Freshness {
                lifetime,
                source: FreshnessSource::Heuristic,
            };
        }
    }
    Freshness {
        lifetime: Duration::ZERO,
        source: FreshnessSource::None,
    }
}

/// The corrected initial age of a response when it was received (§4.2.3).
pub fn corrected_initial_age(headers: &HeaderMap, times: ResponseTimes) -> Duration {
    let date = header_date(headers, DATE).unwrap_or(times.response_time);
    let apparent_age = times.response_time.duration_since(date).unwrap_or_default();
    let response_delay = times
        .response_time
        .duration_since(times.request_time)
        .unwrap_or_default();
    let age_value = Duration::from_secs(u64::from(age_header(headers).unwrap_or(0)));
    let corrected_age_value = age_value + response_delay;
    apparent_age.max(corrected_age_value)
}

/// `current_age = corrected_initial_age + resident_time` (§4.2.3).
pub fn current_age(
    corrected_initial_age: Duration,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    corrected_initial_age + now.duration_since(response_time).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn lifetime(status: u16, h: &HeaderMap) -> Freshness {
        let cc = ResponseCacheControl::from_headers(h);
        freshness_lifetime(
            StatusCode::from_u16(status).unwrap(),
            h,
            &cc,
            true,
            t(0),
            &HeuristicConfig::default(),
        )
    }

    #[test]
    fn rfc9111_4_2_1_s_maxage_over_max_age_over_expires() {
        let exp = httpdate::fmt_http_date(t(1000));
        let date = httpdate::fmt_http_date(t(0));
        let h = headers(&[
            ("cache-control", "max-age=20, s-maxage=30".into()),
            ("expires", exp.clone()),
            ("date", date.clone()),
        ]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::from_secs(30));
        let h = headers(&[
            ("cache-control", "max-age=20".into()),
            ("expires", exp.clone()),
            ("date", date.clone()),
        ]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::from_secs(20));
        let h = headers(&[("expires", exp), ("date", date)]);
        let f = lifetime(200, &h);
        assert_eq!(f.lifetime, Duration::from_secs(1000));
        assert_eq!(f.source, FreshnessSource::Expires);
    }

    #[test]
    fn rfc9111_5_3_invalid_expires_means_expired() {
        let h = headers(&[("expires", "0".into())]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::ZERO);
    }

    #[test]
    fn rfc9111_4_2_2_heuristic_is_fraction_of_last_modified_age() {
        let h = headers(&[
            ("date", httpdate::fmt_http_date(t(1000))),
            ("last-modified", httpdate::fmt_http_date(t(0))),
        ]);
        let f = lifetime(200, &h);
        assert_eq!(f.source, FreshnessSource::Heuristic);
        assert_eq!(f.lifetime, Duration::from_secs(100));
    }

    #[test]
    fn rfc9111_4_2_2_heuristic_is_capped() {
        let h = headers(&[
            ("date", httpdate::fmt_http_date(t(100 * 86_400))),
            ("last-modified", httpdate::fmt_http_date(t(0))),
        ]);
        assert_eq!(lifetime(200, &h).lifetime, Duration::from_secs(86_400));
    }

    #[test]
    fn rfc9111_4_2_2_heuristic_only_for_heuristically_cacheable_status() {
        let h = headers(&[
            ("date", httpdate::fmt_http_date(t(1000))),
            ("last-modified", httpdate::fmt_http_date(t(0))),
        ]);
        assert_eq!(lifetime(302, &h).source, FreshnessSource::None);
        assert_eq!(lifetime(404, &h).source, FreshnessSource::Heuristic);
    }

    #[test]
    fn rfc9111_4_2_3_age_calculation() {
        // Sent at 0, received at 2 with Age: 10 and a Date 1s in the past.
        let h = headers(&[
            ("age", "10".into()),
            ("date", httpdate::fmt_http_date(t(1))),
        ]);
        let times = ResponseTimes {
            request_time: t(0),
            response_time: t(2),
        };
        let initial = corrected_initial_age(&h, times);
        // corrected_age_value = 10 + 2 (delay) = 12 > apparent_age 1.
        assert_eq!(initial, Duration::from_secs(12));
        assert_eq!(current_age(initial, t(2), t(7)), Duration::from_secs(17));
    }

    #[test]
    fn rfc9111_5_1_age_list_uses_first_member_and_invalid_is_ignored() {
        assert_eq!(age_header(&headers(&[("age", "5, 9".into())])), Some(5));
        assert_eq!(age_header(&headers(&[("age", "-1".into())])), None);
    }
}
