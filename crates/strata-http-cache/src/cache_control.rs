//! `Cache-Control` parsing (RFC 9111 §5.2).
//!
//! The grammar is `#( token [ "=" ( token / quoted-string ) ] )`. Directive names are
//! case-insensitive. Several field lines are one comma-separated list (RFC 9110 §5.3).
//! Where the RFC leaves a choice, this parser takes the one that keeps a shared cache safe:
//! - a duplicated directive: the first occurrence is used (§4.2.1);
//! - an invalid delta-seconds (`max-age=abc`): the response is treated as stale (§4.2.1);
//! - a delta-seconds too large to represent: 2^31 (§1.2.2).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The largest delta-seconds value a cache must be able to represent (§1.2.2).
pub const DELTA_SECONDS_MAX: u32 = 2_147_483_648;

/// One directive as it appears on the wire: lower-cased name, unquoted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub value: Option<String>,
}

/// Splits a list of header field values into directives.
///
/// Malformed members (an empty name, an unterminated quoted string) are skipped rather than
/// failing the whole field: a sender's typo in one directive must not void the others.
pub fn parse_directives<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Vec<Directive> {
    let mut out = Vec::new();
    for value in values {
        // Non-UTF-8 bytes are only legal inside quoted strings; the lossy form keeps the
        // structure intact for the ASCII parts we care about.
        let text = String::from_utf8_lossy(value.as_bytes());
        parse_directive_list(&text, &mut out);
    }
    out
}

fn parse_directive_list(text: &str, out: &mut Vec<Directive>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Skip separators and whitespace between members.
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        let name = text[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        let mut value = None;
        let mut valid = !name.is_empty();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'"' {
                i += 1;
                // Collect bytes, not chars: an escape may precede a multi-byte character.
                let mut v = Vec::new();
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if i + 1 < bytes.len() => {
                            v.push(bytes[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b => {
                            v.push(b);
                            i += 1;
                        }
                    }
                }
                valid &= closed;
                value = Some(String::from_utf8_lossy(&v).into_owned());
            } else {
                let start = i;
                while i < bytes.len() && bytes[i] != b',' && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = Some(text[start..i].to_string());
            }
        }
        // Anything left before the next comma makes this member malformed.
        while i < bytes.len() && bytes[i] != b',' {
            if !bytes[i].is_ascii_whitespace() {
                valid = false;
            }
            i += 1;
        }
        // The loop above always stops on a comma or the end, so the outer loop progresses.
        if valid {
            out.push(Directive { name, value });
        }
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses delta-seconds (§1.2.2). `None` means invalid.
pub fn parse_delta_seconds(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(DELTA_SECONDS_MAX, |n| {
        n.min(u64::from(DELTA_SECONDS_MAX)) as u32
    }))
}

/// A delta-seconds directive value: first valid occurrence wins; invalid content means stale.
fn delta_directive(slot: &mut Option<u32>, value: Option<&str>) {
    if slot.is_some() {
        return;
    }
    *slot = Some(value.and_then(parse_delta_seconds).unwrap_or(0));
}

/// A field-name list in a qualified directive (`private="Set-Cookie, X-Foo"`).
fn field_names(value: Option<&str>) -> Vec<HeaderName> {
    value
        .map(|v| {
            v.split(',')
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .collect()
        })
        .unwrap_or_default()
}

// === impl ResponseCacheControl ===

/// Response directives understood by a shared cache (§5.2.2, RFC 5861).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseCacheControl {
    pub max_age: Option<u32>,
    pub s_maxage: Option<u32>,
    pub no_store: bool,
    /// Unqualified `no-cache`, or the qualified form, which we treat as unqualified
    /// (allowed by §5.2.2.4: a cache that does not support the qualified form does so).
    pub no_cache: bool,
    /// Unqualified `private`: a shared cache must not store the response.
    pub private: bool,
    /// Qualified `private="a, b"`: a shared cache may store the response minus these fields.
    pub private_fields: Vec<HeaderName>,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub no_transform: bool,
    pub immutable: bool,
    /// RFC 5861 §3.
    pub stale_while_revalidate: Option<u32>,
    /// RFC 5861 §4.
    pub stale_if_error: Option<u32>,
}

impl ResponseCacheControl {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_directives(&parse_directives(
            headers.get_all(http::header::CACHE_CONTROL),
        ))
    }

    pub fn from_directives(directives: &[Directive]) -> Self {
        let mut cc = Self::default();
        for d in directives {
            let v = d.value.as_deref();
            match d.name.as_str() {
                "max-age" => delta_directive(&mut cc.max_age, v),
                "s-maxage" => delta_directive(&mut cc.s_maxage, v),
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "private" => match v {
                    Some(fields) if !fields.trim().is_empty() => {
                        cc.private_fields.extend(field_names(Some(fields)))
                    }
                    _ => cc.private = true,
                },
                "public" => cc.public = true,
                "must-revalidate" => cc.must_revalidate = true,
                "proxy-revalidate" => cc.proxy_revalidate = true,
                "must-understand" => cc.must_understand = true,
                "no-transform" => cc.no_transform = true,
                "immutable" => cc.immutable = true,
                "stale-while-revalidate" => delta_directive(&mut cc.stale_while_revalidate, v),
                "stale-if-error" => delta_directive(&mut cc.stale_if_error, v),
                _ => {}
            }
        }
        cc
    }

    /// Whether a shared cache must revalidate once stale, rather than serve stale (§4.2.4,
    /// §5.2.2.2, §5.2.2.8).
    pub fn revalidate_when_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

// === impl RequestCacheControl ===

/// Request directives (§5.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCacheControl {
    pub max_age: Option<u32>,
    /// `Some(None)`: `max-stale` without a value, any staleness is accepted.
    pub max_stale: Option<Option<u32>>,
    pub min_fresh: Option<u32>,
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
    /// RFC 9111 §5.2.1.6: no intermediary transformation of the answer.
    pub no_transform: bool,
}

impl RequestCacheControl {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let directives = parse_directives(headers.get_all(http::header::CACHE_CONTROL));
        let mut cc = Self::default();
        for d in &directives {
            let v = d.value.as_deref();
            match d.name.as_str() {
                "max-age" => delta_directive(&mut cc.max_age, v),
                "max-stale" if cc.max_stale.is_none() => {
                    // An invalid value cannot widen what the client accepts.
                    cc.max_stale = Some(v.map(|s| parse_delta_seconds(s).unwrap_or(0)));
                }
                "min-fresh" => delta_directive(&mut cc.min_fresh, v),
                "no-cache" => cc.no_cache = true,
                "no-store" => cc.no_store = true,
                "only-if-cached" => cc.only_if_cached = true,
                "no-transform" => cc.no_transform = true,
                _ => {}
            }
        }
        // §5.4: Pragma: no-cache is honoured only when Cache-Control is absent.
        if directives.is_empty() {
            cc.no_cache = parse_directives(headers.get_all(http::header::PRAGMA))
                .iter()
                .any(|d| d.name == "no-cache");
        }
        cc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(v: &str) -> ResponseCacheControl {
        let mut h = HeaderMap::new();
        h.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_str(v).unwrap(),
        );
        ResponseCacheControl::from_headers(&h)
    }

    #[test]
    fn rfc9111_5_2_directive_names_are_case_insensitive() {
        let cc = resp("Max-Age=60, NO-STORE");
        assert_eq!(cc.max_age, Some(60));
        assert!(cc.no_store);
    }

    #[test]
    fn rfc9111_4_2_1_duplicate_directive_first_occurrence_wins() {
        assert_eq!(resp("max-age=10, max-age=99").max_age, Some(10));
    }

    #[test]
    fn rfc9111_4_2_1_invalid_freshness_value_is_stale() {
        assert_eq!(resp("max-age=abc").max_age, Some(0));
        assert_eq!(resp("max-age=-5").max_age, Some(0));
        assert_eq!(resp("max-age").max_age, Some(0));
    }

    #[test]
    fn rfc9111_1_2_2_delta_seconds_overflow_is_2_pow_31() {
        assert_eq!(
            resp("max-age=99999999999999999999999").max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn rfc9111_5_2_quoted_string_values_keep_commas() {
        let cc = resp(r#"private="set-cookie, x-user", max-age=5"#);
        assert!(!cc.private);
        assert_eq!(cc.private_fields.len(), 2);
        assert_eq!(cc.max_age, Some(5));
    }

    #[test]
    fn rfc9111_5_2_quoted_max_age_is_accepted() {
        // §5.2.1: senders should use the token form, but the quoted form is valid syntax.
        assert_eq!(resp(r#"max-age="30""#).max_age, Some(30));
    }

    #[test]
    fn rfc9110_5_3_multiple_field_lines_are_one_list() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public"),
        );
        h.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("s-maxage=7"),
        );
        let cc = ResponseCacheControl::from_headers(&h);
        assert!(cc.public);
        assert_eq!(cc.s_maxage, Some(7));
    }

    #[test]
    fn malformed_member_does_not_void_others() {
        let cc = resp(r#"max-age=5 junk, no-cache, private="unterminated"#);
        assert!(cc.no_cache);
        assert_eq!(cc.max_age, None);
        assert!(!cc.private);
    }

    #[test]
    fn rfc9111_5_4_pragma_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(RequestCacheControl::from_headers(&h).no_cache);
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=5"),
        );
        assert!(!RequestCacheControl::from_headers(&h).no_cache);
    }

    #[test]
    fn rfc9111_5_2_1_2_max_stale_without_value_accepts_any() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("max-stale"),
        );
        assert_eq!(RequestCacheControl::from_headers(&h).max_stale, Some(None));
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("max-stale=30"),
        );
        assert_eq!(
            RequestCacheControl::from_headers(&h).max_stale,
            Some(Some(30))
        );
    }

    #[test]
    fn escape_before_multibyte_character_does_not_panic() {
        // Found by the cache_control fuzz target.
        let v = HeaderValue::from_bytes(b"Y=\"66\\\xe2\x82\xac,66\"").unwrap();
        let mut h = HeaderMap::new();
        h.insert(http::header::CACHE_CONTROL, v);
        let _ = ResponseCacheControl::from_headers(&h);
    }

    #[test]
    fn parser_never_loops_on_garbage() {
        for s in ["=", ",,,", "\"", "a=\"\\", "=\"x\"", "a b c", "é=é"] {
            let _ = resp(s);
        }
    }
}
