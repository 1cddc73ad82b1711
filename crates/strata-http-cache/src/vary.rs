//! `Vary` (RFC 9111 §4.1): which request fields select among stored variants.
//!
//! Selected values are normalised before comparison, as §4.1 allows, so that requests that
//! differ only in ways the origin cannot care about share a variant: whitespace around list
//! members is dropped, and `Accept-Encoding` becomes a sorted set of acceptable codings.

use http::header::{HeaderMap, HeaderName, ACCEPT_ENCODING, VARY};

/// The `Vary` of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`, or an empty one: every request selects this response.
    None,
    /// `Vary: *`: no later request can be known to match.
    Star,
    /// Lower-cased, deduplicated field names, in header order.
    Fields(Vec<HeaderName>),
}

pub fn vary_of(headers: &HeaderMap) -> Vary {
    let mut fields: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(VARY) {
        let Ok(text) = value.to_str() else {
            // An unreadable Vary cannot be matched safely.
            return Vary::Star;
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Vary::Star;
            }
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) if !fields.contains(&n) => fields.push(n),
                Ok(_) => {}
                Err(_) => return Vary::Star,
            }
        }
    }
    if fields.is_empty() {
        Vary::None
    } else {
        Vary::Fields(fields)
    }
}

/// A request's normalised values for a response's `Vary` fields: the variant's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VariantKey(pub Vec<(HeaderName, Option<String>)>);

impl VariantKey {
    /// Bytes it holds on the heap (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<(HeaderName, Option<String>)>()
            + self
                .0
                .iter()
                .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, String::capacity))
                .sum::<usize>()
    }

    pub fn for_request(vary: &Vary, request: &HeaderMap) -> Self {
        match vary {
            Vary::Fields(fields) => VariantKey(
                fields
                    .iter()
                    .map(|f| (f.clone(), normalised_value(f, request)))
                    .collect(),
            ),
            Vary::None | Vary::Star => VariantKey::default(),
        }
    }

    /// Whether a new request selects the variant this key was built for.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.0
            .iter()
            .all(|(name, value)| normalised_value(name, request) == *value)
    }
}

fn normalised_value(name: &HeaderName, request: &HeaderMap) -> Option<String> {
    let mut members: Vec<String> = Vec::new();
    let mut present = false;
    for v in request.get_all(name) {
        present = true;
        let text = String::from_utf8_lossy(v.as_bytes());
        members.extend(
            text.split(',')
                .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|m| !m.is_empty()),
        );
    }
    if !present {
        return None;
    }
    if *name == ACCEPT_ENCODING {
        members = accept_encoding_set(&members);
    }
    Some(members.join(","))
}

/// Codings a client accepts (q > 0), lower-cased and sorted: `gzip, br` == `br,gzip;q=1`.
fn accept_encoding_set(members: &[String]) -> Vec<String> {
    let mut set: Vec<String> = members
        .iter()
        .filter_map(|m| {
            let mut parts = m.split(';');
            let coding = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (!refused && !coding.is_empty()).then_some(coding)
        })
        .collect();
    set.sort();
    set.dedup();
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn rfc9111_4_1_vary_star_never_matches() {
        assert_eq!(vary_of(&req(&[("vary", "accept, *")])), Vary::Star);
    }

    #[test]
    fn rfc9111_4_1_field_names_are_case_insensitive_and_combined() {
        let v = vary_of(&req(&[
            ("vary", "Accept-Encoding"),
            ("vary", "accept-language, ACCEPT-ENCODING"),
        ]));
        assert_eq!(
            v,
            Vary::Fields(vec![
                ACCEPT_ENCODING,
                HeaderName::from_static("accept-language")
            ])
        );
    }

    #[test]
    fn rfc9111_4_1_absent_field_matches_only_absent() {
        let vary = Vary::Fields(vec![HeaderName::from_static("accept-language")]);
        let key = VariantKey::for_request(&vary, &req(&[]));
        assert!(key.matches(&req(&[])));
        assert!(!key.matches(&req(&[("accept-language", "en")])));
    }

    #[test]
    fn rfc9111_4_1_normalised_accept_encoding_token_sets_match() {
        let vary = Vary::Fields(vec![ACCEPT_ENCODING]);
        let key = VariantKey::for_request(&vary, &req(&[("accept-encoding", "gzip, br")]));
        assert!(key.matches(&req(&[("accept-encoding", "br,GZIP;q=1.0")])));
        assert!(key.matches(&req(&[
            ("accept-encoding", "br"),
            ("accept-encoding", "gzip, identity;q=0")
        ])));
        assert!(!key.matches(&req(&[("accept-encoding", "gzip")])));
    }

    #[test]
    fn rfc9111_4_1_whitespace_is_normalised() {
        let vary = Vary::Fields(vec![HeaderName::from_static("accept-language")]);
        let key = VariantKey::for_request(&vary, &req(&[("accept-language", "en,  fr")]));
        assert!(key.matches(&req(&[("accept-language", "en, fr")])));
    }
}
