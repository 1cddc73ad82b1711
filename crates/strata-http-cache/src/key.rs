//! Cache keys: scheme + host + path + normalised query.
//!
//! The query is normalised so that equivalent URLs share one object: parameters are sorted
//! (stable, by name then value), empty members dropped, and parameters named in the strip
//! list removed. Strip patterns are exact names or prefixes ending in `*` (`utm_*`), matched
//! case-insensitively, the usual way to drop tracking and session parameters.

use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

/// How a service builds keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRules {
    /// Query parameters to drop (`utm_*`, `sessionid`).
    pub strip_query: Vec<String>,
    /// Drop the whole query string.
    pub ignore_query: bool,
    /// Keep only these parameters (exact names), when not empty: an LL-HLS playlist
    /// request is keyed on its delivery directives alone.
    pub only_query: &'static [&'static str],
}

impl KeyRules {
    fn strips(&self, name: &str) -> bool {
        if !self.only_query.is_empty() && !self.only_query.contains(&name) {
            return true;
        }
        self.strip_query.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => {
                name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
            None => name.eq_ignore_ascii_case(p),
        })
    }
}

/// The primary cache key of a request (Vary selection is kept beside it, per variant).
///
/// What separates an object's key from the range of one of its slices.
pub const SLICE_MARK: &str = "#slice=";

/// What separates an object's key from an experiment variant's (see [`CacheKey::variant`]).
pub const VARIANT_MARK: &str = "#exp=";

/// What every derived key (slices, variants) has after the key it derives from.
pub const DERIVED_MARK: char = '#';

/// The text is shared: the memory tier's table, its purge index and fills in progress
/// hold one allocation of it between them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    text: std::sync::Arc<str>,
    hash: u64,
}

impl CacheKey {
    /// `host` may carry a port; it is lower-cased, and the scheme's default port dropped.
    pub fn new(
        scheme: &str,
        host: &str,
        path: &str,
        query: Option<&str>,
        rules: &KeyRules,
    ) -> Self {
        let scheme = scheme.to_ascii_lowercase();
        let mut host = host.to_ascii_lowercase();
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        if let Some(stripped) = host.strip_suffix(default_port) {
            host.truncate(stripped.len());
        }
        let path = if path.is_empty() { "/" } else { path };
        let mut text = format!("{scheme}://{host}{path}");
        if let Some(q) = query.filter(|_| !rules.ignore_query) {
            let normalised = normalise_query(q, rules);
            if !normalised.is_empty() {
                text.push('?');
                text.push_str(&normalised);
            }
        }
        let hash = xxh3_64(text.as_bytes());
        Self {
            text: text.into(),
            hash,
        }
    }

    /// A key from the text [`CacheKey::as_str`] gave (read back from a disk tier). The text
    /// is taken as already normalised.
    pub fn from_text(text: String) -> Self {
        let hash = xxh3_64(text.as_bytes());
        Self {
            text: text.into(),
            hash,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The shared text (for indexes ordered by it).
    pub fn text(&self) -> &std::sync::Arc<str> {
        &self.text
    }

    pub fn hash64(&self) -> u64 {
        self.hash
    }

    /// The key of bytes `start..=end` of the object under this key, when it is stored
    /// in slices: `<key>#slice=<start>-<end>`. A `#` never occurs in a key built from a
    /// request (a fragment is not sent), so no request can name a slice.
    pub fn slice(&self, start: u64, end: u64) -> CacheKey {
        Self::from_text(format!("{}{SLICE_MARK}{start}-{end}", self.text))
    }

    /// The key of one variant of an experiment (A/B test): `<key>#exp=<tag>`. Like a
    /// slice's, no request can build it.
    pub fn variant(&self, tag: &str) -> CacheKey {
        Self::from_text(format!("{}{VARIANT_MARK}{tag}", self.text))
    }

    /// Whether this key is derived from `whole`'s (one of its slices or experiment
    /// variants, or a slice of a variant): a purge of `whole` takes it too.
    pub fn is_derived_from(&self, whole: &CacheKey) -> bool {
        self.text
            .strip_prefix(&*whole.text)
            .is_some_and(|rest| rest.starts_with(DERIVED_MARK))
    }

    /// The key text without any slice part: the object's own.
    pub fn whole(&self) -> &str {
        self.text
            .split_once(SLICE_MARK)
            .map_or(&self.text, |(whole, _)| whole)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The request target as keyed: the path and the normalised query (nothing when the
/// rules ignore the query, or when nothing is left of it). A fill asks the origin for
/// this, so what is stored under a key is the answer to the key, not to parameters the
/// key leaves out (which an origin may still act on: `?utm_x=1;lang=evil`).
pub fn keyed_target(path: &str, query: Option<&str>, rules: &KeyRules) -> String {
    let path = if path.is_empty() { "/" } else { path };
    match query.filter(|_| !rules.ignore_query) {
        Some(q) => {
            let normalised = normalise_query(q, rules);
            if normalised.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{normalised}")
            }
        }
        None => path.to_string(),
    }
}

/// Sorts and filters `a=1&b=2` pairs. Values keep their encoding: `%20` and `+` differ on
/// the wire and an origin may treat them differently.
pub fn normalise_query(query: &str, rules: &KeyRules) -> String {
    let mut params: Vec<(&str, Option<&str>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (p, None),
        })
        .filter(|(name, _)| !rules.strips(name))
        .collect();
    params.sort();
    let mut out = String::with_capacity(query.len());
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(strip: &[&str]) -> KeyRules {
        KeyRules {
            strip_query: strip.iter().map(|s| s.to_string()).collect(),
            ignore_query: false,
            only_query: &[],
        }
    }

    #[test]
    fn a_slice_key_names_its_object_and_no_request_builds_one() {
        let whole = CacheKey::new("http", "h", "/v.mp4", Some("q=1"), &rules(&[]));
        let slice = whole.slice(0, 1023);
        assert_eq!(slice.as_str(), "http://h/v.mp4?q=1#slice=0-1023");
        assert!(slice.is_derived_from(&whole));
        assert!(!whole.is_derived_from(&whole));
        assert_eq!(slice.whole(), whole.as_str());
        let other = CacheKey::new("http", "h", "/v.mp4", Some("q=12"), &rules(&[]));
        assert!(!slice.is_derived_from(&other));
        // A request's path or query cannot carry the mark: '#' is never sent.
        let sneaky = CacheKey::new("http", "h", "/v.mp4%23slice=0-1", None, &rules(&[]));
        assert!(!sneaky.is_derived_from(&CacheKey::new("http", "h", "/v.mp4", None, &rules(&[]))));
        // A variant's slices derive from the variant and from the object.
        let variant = whole.variant("checkout:new");
        assert_eq!(variant.as_str(), "http://h/v.mp4?q=1#exp=checkout:new");
        assert!(variant.is_derived_from(&whole));
        assert!(variant.slice(0, 9).is_derived_from(&variant));
        assert!(variant.slice(0, 9).is_derived_from(&whole));
        assert_eq!(variant.slice(0, 9).whole(), variant.as_str());
    }

    #[test]
    fn only_the_named_parameters_are_kept_when_some_are_named() {
        let only = KeyRules {
            only_query: &["_HLS_msn", "_HLS_part"],
            ..KeyRules::default()
        };
        let a = CacheKey::new(
            "http",
            "h",
            "/i.m3u8",
            Some("token=1&_HLS_part=2&_HLS_msn=9"),
            &only,
        );
        let b = CacheKey::new(
            "http",
            "h",
            "/i.m3u8",
            Some("_HLS_msn=9&x=y&_HLS_part=2"),
            &only,
        );
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "http://h/i.m3u8?_HLS_msn=9&_HLS_part=2");
    }

    #[test]
    fn query_is_sorted_and_stripped() {
        let k = CacheKey::new(
            "http",
            "Example.COM:80",
            "/a",
            Some("b=2&utm_source=x&a=1&&UTM_medium=y&sid=3"),
            &rules(&["utm_*", "sid"]),
        );
        assert_eq!(k.as_str(), "http://example.com/a?a=1&b=2");
    }

    #[test]
    fn equivalent_urls_share_a_key() {
        let r = rules(&[]);
        assert_eq!(
            CacheKey::new("http", "h", "/x", Some("b=1&a=2"), &r),
            CacheKey::new("http", "H", "/x", Some("a=2&b=1"), &r)
        );
        assert_ne!(
            CacheKey::new("http", "h", "/x", None, &r),
            CacheKey::new("https", "h", "/x", None, &r)
        );
    }

    #[test]
    fn the_keyed_target_is_what_the_key_names() {
        let r = rules(&["utm_*"]);
        assert_eq!(
            keyed_target("/p", Some("utm_x=1;lang=evil&b=2&a=1"), &r),
            "/p?a=1&b=2"
        );
        assert_eq!(keyed_target("/p", Some("utm_x=1"), &r), "/p");
        let ignore = KeyRules {
            ignore_query: true,
            ..KeyRules::default()
        };
        assert_eq!(keyed_target("/p", Some("a=1"), &ignore), "/p");
        assert_eq!(keyed_target("", None, &r), "/");
    }

    #[test]
    fn fully_stripped_query_drops_question_mark() {
        let k = CacheKey::new("http", "h", "/x", Some("utm_a=1"), &rules(&["utm_*"]));
        assert_eq!(k.as_str(), "http://h/x");
    }

    #[test]
    fn empty_value_and_bare_name_are_kept_apart() {
        let r = rules(&[]);
        assert_eq!(
            CacheKey::new("http", "h", "/", Some("a="), &r).as_str(),
            "http://h/?a="
        );
        assert_eq!(
            CacheKey::new("http", "h", "/", Some("a"), &r).as_str(),
            "http://h/?a"
        );
    }
}
