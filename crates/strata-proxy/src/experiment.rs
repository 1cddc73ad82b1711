//! Experiments (A/B tests) built in: each request of a service with experiments is put in a
//! variant of each, sticky per client, and the variant goes into the cache key, a request
//! header to the origin, and the metrics (docs/experiments.md).
//!
//! Assignment, in order: the experiment's cookie naming a variant (the client's own
//! choice is honoured: a tester can pick one); a trusted peer's or parent's header (a
//! request forwarded inside the CDN keeps the variant its edge chose); the hash of
//! `hash_header`'s value (deterministic everywhere, no cookie); else a weighted random
//! pick, answered with a `Set-Cookie` so the client stays.

use http::header::{HeaderName, HeaderValue, COOKIE};
use http::HeaderMap;

use crate::config::ExperimentConfig;

/// One experiment of a service, ready for requests.
#[derive(Debug)]
pub struct Experiment {
    pub name: String,
    /// The header the origin reads the variant from: `x-experiment-<name>`.
    pub header: HeaderName,
    cookie: String,
    hash_header: Option<HeaderName>,
    max_age: u64,
    /// Variant names and the upper end of each one's share of `total`.
    variants: Vec<(String, u64)>,
    total: u64,
}

/// Where a request's variant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cookie,
    Peer,
    Hash,
    /// Picked now: the client gets a cookie.
    Random,
}

/// A request's variant of one experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub variant: usize,
    pub source: Source,
}

// === impl Experiment ===

impl Experiment {
    pub fn from_config(c: &ExperimentConfig) -> Result<Self, String> {
        let mut upper = 0;
        let variants = c
            .variants
            .iter()
            .map(|v| {
                upper += u64::from(v.weight);
                (v.name.clone(), upper)
            })
            .collect();
        Ok(Experiment {
            header: HeaderName::from_bytes(
                format!("x-experiment-{}", c.name)
                    .to_ascii_lowercase()
                    .as_bytes(),
            )
            .map_err(|e| format!("experiment {}: {e}", c.name))?,
            name: c.name.clone(),
            cookie: c.cookie_name(),
            hash_header: c
                .hash_header
                .as_deref()
                .map(|h| HeaderName::from_bytes(h.as_bytes()))
                .transpose()
                .map_err(|e| format!("experiment {}: {e}", c.name))?,
            max_age: c.cookie_max_age.0.as_secs(),
            variants,
            total: upper,
        })
    }

    pub fn variant(&self, i: usize) -> &str {
        &self.variants[i].0
    }

    pub fn variants(&self) -> impl Iterator<Item = &str> {
        self.variants.iter().map(|(n, _)| n.as_str())
    }

    fn named(&self, name: &[u8]) -> Option<usize> {
        self.variants.iter().position(|(n, _)| n.as_bytes() == name)
    }

    /// The variant whose share holds `point` (any u64: reduced modulo the total weight).
    fn at(&self, point: u64) -> usize {
        let point = point % self.total;
        self.variants
            .iter()
            .position(|(_, upper)| point < *upper)
            .unwrap_or(0)
    }

    /// The request's variant. `trusted`: the request comes from a peer or parent (its
    /// variant header is believed); `random`: a fresh random number for a new client.
    pub fn assign(&self, headers: &HeaderMap, trusted: bool, random: u64) -> Assignment {
        if let Some(v) = cookie(headers, &self.cookie).and_then(|v| self.named(v)) {
            return Assignment {
                variant: v,
                source: Source::Cookie,
            };
        }
        if trusted {
            if let Some(v) = headers
                .get(&self.header)
                .and_then(|v| self.named(v.as_bytes()))
            {
                return Assignment {
                    variant: v,
                    source: Source::Peer,
                };
            }
        }
        if let Some(value) = self.hash_header.as_ref().and_then(|h| headers.get(h)) {
            let point = xxhash_rust::xxh64::xxh64(value.as_bytes(), 0x5747_4154);
            return Assignment {
                variant: self.at(point),
                source: Source::Hash,
            };
        }
        Assignment {
            variant: self.at(random),
            source: Source::Random,
        }
    }

    /// The `Set-Cookie` that keeps a client in `variant`.
    pub fn set_cookie(&self, variant: usize) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{}={}; Path=/; Max-Age={}; SameSite=Lax",
            self.cookie,
            self.variant(variant),
            self.max_age
        ))
        .ok()
    }
}

/// The value of cookie `name` in the request's `Cookie` fields (RFC 6265 §5.4: pairs
/// separated by `; `), the first one if repeated.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(COOKIE).iter().find_map(|field| {
        field.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VariantConfig;

    fn experiment(weights: &[(&str, u32)], hash_header: Option<&str>) -> Experiment {
        let c = ExperimentConfig {
            name: "checkout".into(),
            variants: weights
                .iter()
                .map(|(n, w)| VariantConfig {
                    name: n.to_string(),
                    weight: *w,
                })
                .collect(),
            cookie: None,
            hash_header: hash_header.map(str::to_string),
            cookie_max_age: crate::config::Seconds(std::time::Duration::from_secs(60)),
        };
        c.check("experiment").unwrap();
        Experiment::from_config(&c).unwrap()
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in list {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn new_clients_split_by_weight() {
        let e = experiment(&[("control", 90), ("new", 10)], None);
        let mut counts = [0u32; 2];
        for i in 0..100_000u64 {
            let a = e.assign(
                &HeaderMap::new(),
                false,
                xxhash_rust::xxh64::xxh64(&i.to_le_bytes(), 1),
            );
            assert_eq!(a.source, Source::Random);
            counts[a.variant] += 1;
        }
        // 10% ± 0.5% of 100,000.
        assert!((9_500..=10_500).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn the_cookie_keeps_a_client_in_its_variant_and_a_bad_one_is_ignored() {
        let e = experiment(&[("control", 1), ("new", 1)], None);
        let h = headers(&[("cookie", "a=b; strata-exp-checkout=new; c=d")]);
        for r in 0..100 {
            assert_eq!(
                e.assign(&h, false, r),
                Assignment {
                    variant: 1,
                    source: Source::Cookie
                }
            );
        }
        let forged = headers(&[("cookie", "strata-exp-checkout=admin")]);
        assert_eq!(e.assign(&forged, false, 0).source, Source::Random);
        assert_eq!(
            e.set_cookie(1).unwrap(),
            "strata-exp-checkout=new; Path=/; Max-Age=60; SameSite=Lax"
        );
    }

    #[test]
    fn a_variant_header_counts_only_from_a_trusted_peer() {
        let e = experiment(&[("control", 1), ("new", 1)], None);
        let h = headers(&[("x-experiment-checkout", "new")]);
        assert_eq!(
            e.assign(&h, true, 0),
            Assignment {
                variant: 1,
                source: Source::Peer
            }
        );
        // From a client: ignored (random 0 lands in "control").
        assert_eq!(
            e.assign(&h, false, 0),
            Assignment {
                variant: 0,
                source: Source::Random
            }
        );
    }

    #[test]
    fn a_hashed_header_gives_the_same_variant_every_time() {
        let e = experiment(&[("a", 1), ("b", 1), ("c", 1)], Some("x-user"));
        let mut seen = std::collections::HashSet::new();
        for user in 0..300 {
            let h = headers(&[("x-user", &format!("user-{user}"))]);
            let first = e.assign(&h, false, 1);
            assert_eq!(first.source, Source::Hash);
            for r in 0..5 {
                assert_eq!(e.assign(&h, false, r), first);
            }
            seen.insert(first.variant);
        }
        assert_eq!(seen.len(), 3, "every variant gets users");
    }
}
