//! Conditional requests: answering a client's preconditions from a stored response
//! (RFC 9110 §13.2.2), validating a stored response upstream (RFC 9111 §4.3.1), and
//! refreshing it from a 304 (RFC 9111 §3.2, §4.3.4).

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, DATE,
    ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, LAST_MODIFIED,
    VARY,
};
use http::Method;

use crate::freshness::header_date;

/// An entity tag (RFC 9110 §8.8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag<'a> {
    pub weak: bool,
    pub opaque: &'a str,
}

impl<'a> EntityTag<'a> {
    pub fn parse(s: &'a str) -> Option<Self> {
        let s = s.trim();
        let (weak, rest) = match s.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let opaque = rest.strip_prefix('"')?.strip_suffix('"')?;
        (!opaque.contains('"')).then_some(Self { weak, opaque })
    }

    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// What a stored response's validators say about a client's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No precondition applies, or all passed: send the stored response.
    Proceed,
    /// `If-None-Match` / `If-Modified-Since` matched: 304.
    NotModified,
    /// `If-Match` / `If-Unmodified-Since` failed: 412.
    Failed,
}

/// Evaluates preconditions in the order of RFC 9110 §13.2.2 against a stored 2xx response.
pub fn evaluate_preconditions(
    method: &Method,
    request: &HeaderMap,
    stored: &HeaderMap,
) -> Precondition {
    let etag = stored
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(EntityTag::parse);
    let last_modified = header_date(stored, LAST_MODIFIED);

    if let Some(list) = header_str(request, &IF_MATCH) {
        // §13.1.1: strong comparison.
        if !list_matches(&list, etag.as_ref(), |a, b| a.strong_eq(b)) {
            return Precondition::Failed;
        }
    } else if let Some(ius) = header_date(request, IF_UNMODIFIED_SINCE) {
        if last_modified.is_none_or(|lm| lm > ius) {
            return Precondition::Failed;
        }
    }

    let safe = *method == Method::GET || *method == Method::HEAD;
    if let Some(list) = header_str(request, &IF_NONE_MATCH) {
        // §13.1.2: weak comparison.
        if list_matches(&list, etag.as_ref(), |a, b| a.weak_eq(b)) {
            return if safe {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if safe {
        if let (Some(ims), Some(lm)) = (header_date(request, IF_MODIFIED_SINCE), last_modified) {
            if lm <= ims {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// A list field's lines joined into one list (RFC 9110 §5.3); `None` when absent.
fn header_str(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

fn list_matches(
    list: &str,
    etag: Option<&EntityTag<'_>>,
    eq: fn(&EntityTag<'_>, &EntityTag<'_>) -> bool,
) -> bool {
    if list.trim() == "*" {
        return etag.is_some();
    }
    let Some(etag) = etag else { return false };
    split_etags(list).any(|t| EntityTag::parse(t).is_some_and(|t| eq(&t, etag)))
}

/// Splits an entity-tag list on commas outside quotes.
fn split_etags(list: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut in_quote = false;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ',' if !in_quote => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts.into_iter()
}

/// Fields a 304 must carry when the 200 would have (RFC 9110 §15.4.5).
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ] {
        for v in stored.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// Validators to send upstream when revalidating a stored response (RFC 9111 §4.3.1).
pub fn validation_headers(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = stored.get(ETAG) {
        out.push((IF_NONE_MATCH, etag.clone()));
    }
    if let Some(lm) = stored.get(LAST_MODIFIED) {
        out.push((IF_MODIFIED_SINCE, lm.clone()));
    }
    out
}

/// Whether a 304 answers for this stored response (RFC 9111 §4.3.4): a strong validator in
/// the 304 must equal the stored one; otherwise the stored one is selected when it is the
/// response we asked about.
pub fn not_modified_selects(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let new = not_modified
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(EntityTag::parse);
    let old = stored
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(EntityTag::parse);
    match (new, old) {
        (Some(new), Some(old)) if !new.weak => new.strong_eq(&old),
        (Some(new), Some(old)) => new.weak_eq(&old),
        (Some(_), None) => false,
        (None, _) => match (
            header_date(not_modified, LAST_MODIFIED),
            header_date(stored, LAST_MODIFIED),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        },
    }
}

/// Updates stored fields from a 304 (RFC 9111 §3.2): every field the 304 carries replaces
/// the stored one, except `Content-Length` (the 304 has no body) and framing fields.
pub fn refresh_headers(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (name, value) in not_modified {
        if *name == CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::CONTENT_ENCODING
        {
            continue;
        }
        if !replaced.contains(name) {
            stored.remove(name);
            replaced.push(name.clone());
        }
        stored.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const LM: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

    #[test]
    fn rfc9110_13_1_2_if_none_match_uses_weak_comparison() {
        let stored = hm(&[("etag", "W/\"v1\"")]);
        let req = hm(&[("if-none-match", "\"x\", \"v1\"")]);
        assert_eq!(
            evaluate_preconditions(&Method::GET, &req, &stored),
            Precondition::NotModified
        );
        let req = hm(&[("if-none-match", "\"v2\"")]);
        assert_eq!(
            evaluate_preconditions(&Method::GET, &req, &stored),
            Precondition::Proceed
        );
    }

    #[test]
    fn rfc9110_13_1_2_if_none_match_star() {
        let stored = hm(&[("etag", "\"v1\"")]);
        assert_eq!(
            evaluate_preconditions(&Method::HEAD, &hm(&[("if-none-match", "*")]), &stored),
            Precondition::NotModified
        );
    }

    #[test]
    fn rfc9110_13_1_3_if_modified_since_ignored_when_if_none_match_present() {
        let stored = hm(&[("etag", "\"v1\""), ("last-modified", LM)]);
        let req = hm(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT"),
        ]);
        assert_eq!(
            evaluate_preconditions(&Method::GET, &req, &stored),
            Precondition::Proceed
        );
    }

    #[test]
    fn rfc9110_13_1_3_if_modified_since() {
        let stored = hm(&[("last-modified", LM)]);
        let later = hm(&[("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")]);
        let earlier = hm(&[("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")]);
        assert_eq!(
            evaluate_preconditions(&Method::GET, &later, &stored),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate_preconditions(&Method::GET, &earlier, &stored),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate_preconditions(
                &Method::GET,
                &hm(&[("if-modified-since", "garbage")]),
                &stored
            ),
            Precondition::Proceed
        );
    }

    #[test]
    fn rfc9110_13_1_1_if_match_uses_strong_comparison() {
        let stored = hm(&[("etag", "W/\"v1\"")]);
        assert_eq!(
            evaluate_preconditions(&Method::GET, &hm(&[("if-match", "W/\"v1\"")]), &stored),
            Precondition::Failed
        );
        let stored = hm(&[("etag", "\"v1\"")]);
        assert_eq!(
            evaluate_preconditions(&Method::GET, &hm(&[("if-match", "\"v1\"")]), &stored),
            Precondition::Proceed
        );
    }

    #[test]
    fn rfc9111_3_2_refresh_replaces_fields_but_not_content_length() {
        let mut stored = hm(&[
            ("content-length", "10"),
            ("cache-control", "max-age=1"),
            ("x-a", "1"),
            ("x-a", "2"),
        ]);
        refresh_headers(
            &mut stored,
            &hm(&[
                ("cache-control", "max-age=60"),
                ("content-length", "0"),
                ("x-a", "3"),
            ]),
        );
        assert_eq!(stored["content-length"], "10");
        assert_eq!(stored["cache-control"], "max-age=60");
        assert_eq!(stored.get_all("x-a").iter().count(), 1);
    }

    #[test]
    fn rfc9111_4_3_4_strong_validator_must_match_to_select() {
        let stored = hm(&[("etag", "\"v1\"")]);
        assert!(not_modified_selects(&stored, &hm(&[("etag", "\"v1\"")])));
        assert!(!not_modified_selects(&stored, &hm(&[("etag", "\"v2\"")])));
        assert!(not_modified_selects(&stored, &hm(&[])));
    }

    #[test]
    fn rfc9110_15_4_5_not_modified_carries_validators_and_cache_fields() {
        let stored = hm(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=5"),
            ("content-type", "text/plain"),
        ]);
        let h = not_modified_headers(&stored);
        assert!(h.contains_key("etag") && h.contains_key("cache-control"));
        assert!(!h.contains_key("content-type"));
    }
}
