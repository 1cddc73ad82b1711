//! Cache directives targeted at this CDN: `CDN-Cache-Control` (RFC 9213) and the older
//! `Surrogate-Control` (W3C Edge Architecture).
//!
//! RFC 9213 §2.2: a cache selects the first field of its target list that has a valid,
//! non-empty value, and then ignores `Cache-Control` and `Expires` for its own decisions.
//! A field that fails to parse is ignored as if absent. `CDN-Cache-Control` is for every
//! CDN cache on the path, so the proxy passes it on; `Surrogate-Control` is for the
//! surrogate that acts on it, and the proxy removes it.

use http::header::{HeaderMap, HeaderName};
use sfv::{BareItem, Dictionary, ListEntry, Parser};

use crate::cache_control::{parse_directives, ResponseCacheControl, DELTA_SECONDS_MAX};

pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
pub const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// The directives targeted at this cache, if any valid targeted field is present.
pub fn targeted_cache_control(headers: &HeaderMap) -> Option<ResponseCacheControl> {
    cdn_cache_control(headers).or_else(|| surrogate_control(headers))
}

/// Parses `CDN-Cache-Control` as a Structured Field Dictionary (RFC 9213 §2.1).
fn cdn_cache_control(headers: &HeaderMap) -> Option<ResponseCacheControl> {
    let mut joined = String::new();
    for v in headers.get_all(CDN_CACHE_CONTROL) {
        let s = v.to_str().ok()?;
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(s);
    }
    if joined.trim().is_empty() {
        return None;
    }
    let dict: Dictionary = Parser::new(&joined).parse().ok()?;
    let mut cc = ResponseCacheControl::default();
    for (key, entry) in dict.iter() {
        let ListEntry::Item(item) = entry else {
            continue;
        };
        // §2.1: values that violate a directive's inferred type are not consumed.
        let int = || match item.bare_item {
            BareItem::Integer(i) => {
                let i = i64::from(i);
                (i >= 0).then(|| i.min(i64::from(DELTA_SECONDS_MAX)) as u32)
            }
            _ => None,
        };
        let flag = matches!(
            item.bare_item,
            BareItem::Boolean(true) | BareItem::String(_) | BareItem::Token(_)
        );
        match key.as_str() {
            "max-age" => cc.max_age = int(),
            "s-maxage" => cc.s_maxage = int(),
            "stale-while-revalidate" => cc.stale_while_revalidate = int(),
            "stale-if-error" => cc.stale_if_error = int(),
            "no-store" => cc.no_store = flag,
            "no-cache" => cc.no_cache = flag,
            "private" => cc.private = flag,
            "public" => cc.public = flag,
            "must-revalidate" => cc.must_revalidate = flag,
            "proxy-revalidate" => cc.proxy_revalidate = flag,
            "immutable" => cc.immutable = flag,
            _ => {}
        }
    }
    Some(cc)
}

/// Parses `Surrogate-Control` (`max-age=600[+30]`, `no-store`, `content="ESI/1.0"`).
/// Directives may carry a `;target` suffix; we accept untargeted and any-target members.
fn surrogate_control(headers: &HeaderMap) -> Option<ResponseCacheControl> {
    let directives = parse_directives(headers.get_all(SURROGATE_CONTROL));
    if directives.is_empty() {
        return None;
    }
    let mut cc = ResponseCacheControl::default();
    for d in &directives {
        let value = d.value.as_deref().map(|v| v.split(';').next().unwrap_or(v));
        match d.name.as_str() {
            "max-age" if cc.max_age.is_none() => {
                // `600+30`: the part after `+` is a stale allowance we do not use.
                let digits = value.and_then(|v| v.split('+').next()).unwrap_or("");
                cc.max_age =
                    Some(crate::cache_control::parse_delta_seconds(digits.trim()).unwrap_or(0));
            }
            "no-store" => cc.no_store = true,
            "no-store-remote" => cc.no_store = true,
            _ => {}
        }
    }
    Some(cc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append((*k).clone(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn rfc9213_2_1_dictionary_syntax() {
        let cc =
            targeted_cache_control(&h(&[(&CDN_CACHE_CONTROL, "max-age=600, no-cache")])).unwrap();
        assert_eq!(cc.max_age, Some(600));
        assert!(cc.no_cache);
    }

    #[test]
    fn rfc9213_2_1_invalid_field_is_ignored() {
        assert!(targeted_cache_control(&h(&[(&CDN_CACHE_CONTROL, "max-age=\"x")])).is_none());
        assert!(targeted_cache_control(&h(&[(&CDN_CACHE_CONTROL, "")])).is_none());
    }

    #[test]
    fn rfc9213_2_1_wrong_type_value_is_not_consumed() {
        let cc = targeted_cache_control(&h(&[(&CDN_CACHE_CONTROL, "max-age=1.5")])).unwrap();
        assert_eq!(cc.max_age, None);
    }

    #[test]
    fn rfc9213_3_1_none_is_valid_and_non_empty() {
        // "CDN-Cache-Control: none" overrides Cache-Control: no-store for the CDN.
        let cc = targeted_cache_control(&h(&[(&CDN_CACHE_CONTROL, "none")])).unwrap();
        assert!(!cc.no_store);
    }

    #[test]
    fn rfc9213_2_2_first_field_of_target_list_wins() {
        let cc = targeted_cache_control(&h(&[
            (&SURROGATE_CONTROL, "max-age=5"),
            (&CDN_CACHE_CONTROL, "max-age=50"),
        ]))
        .unwrap();
        assert_eq!(cc.max_age, Some(50));
    }

    #[test]
    fn surrogate_control_max_age_with_stale_suffix() {
        let cc = targeted_cache_control(&h(&[(&SURROGATE_CONTROL, "max-age=600+30")])).unwrap();
        assert_eq!(cc.max_age, Some(600));
    }
}
