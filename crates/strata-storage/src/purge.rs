//! Purge: invalidate what was stored before a purge's `issued_at` that matches its scope.
//!
//! The rule is "stored before `issued_at`", not "present now", so a purge is idempotent and
//! safe to replay, and an object whose fill was in flight when the purge landed is caught
//! when it is stored (the tier keeps recent purges and checks every insert against them).
//! A hard purge removes; a soft purge marks stale, so the next request revalidates while
//! stale-while-revalidate / stale-if-error still protect the origin.
//!
//! Tag and prefix purges go through indexes and touch only the objects affected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName};
use strata_http_cache::freshness::{Freshness, FreshnessSource};
use strata_http_cache::CacheKey;

use crate::object::StoredObject;

pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// What a purge covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every variant of these keys.
    Keys(Vec<CacheKey>),
    /// Objects carrying any of these surrogate keys (`Surrogate-Key` / `Cache-Tag`).
    Tags(Vec<String>),
    /// Keys whose text (`scheme://host/path?query`) starts with any of these.
    Prefixes(Vec<String>),
    All,
}

/// One purge, as applied by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub scope: Scope,
    pub soft: bool,
    pub issued_at: SystemTime,
}

impl Purge {
    /// Whether this purge covers `object` stored under `key`.
    pub fn covers(&self, key: &CacheKey, object: &StoredObject) -> bool {
        if object.stored_at >= self.issued_at {
            return false;
        }
        match &self.scope {
            Scope::Keys(keys) => keys.contains(key),
            Scope::Tags(tags) => carries_any(&object.headers, tags),
            Scope::Prefixes(prefixes) => prefixes
                .iter()
                .any(|p| key.as_str().starts_with(p.as_str())),
            Scope::All => true,
        }
    }

    /// What the purge leaves of a covered object: nothing (hard), or a copy that is stale
    /// from now on (soft).
    pub fn apply(&self, object: &Arc<StoredObject>, now: SystemTime) -> Option<Arc<StoredObject>> {
        if !self.soft {
            return None;
        }
        let mut policy = object.policy.clone();
        // Stale from this moment: its age becomes its whole lifetime, so stale-while-
        // revalidate and stale-if-error windows start now.
        policy.freshness = Freshness {
            lifetime: policy.age(now).min(policy.freshness.lifetime),
            source: FreshnessSource::Purged,
        };
        Some(Arc::new(StoredObject {
            status: object.status,
            headers: object.headers.clone(),
            policy,
            variant: object.variant.clone(),
            body: Arc::clone(&object.body),
            stored_at: object.stored_at,
        }))
    }
}

/// Surrogate keys of a response: `Surrogate-Key` and `Cache-Tag`, space or comma separated.
pub fn tags_of(headers: &HeaderMap) -> Vec<String> {
    let mut tags = Vec::new();
    for name in [SURROGATE_KEY, CACHE_TAG] {
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else { continue };
            for tag in text.split([' ', ',', '\t']).filter(|t| !t.is_empty()) {
                if !tags.iter().any(|t: &String| t == tag) {
                    tags.push(tag.to_string());
                }
            }
        }
    }
    tags
}

/// Whether a response carries any of `tags`, without allocating (this runs once per
/// object a tag purge touches).
fn carries_any(headers: &HeaderMap, tags: &[String]) -> bool {
    [SURROGATE_KEY, CACHE_TAG].iter().any(|name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|text| {
                text.split([' ', ',', '\t'])
                    .any(|t| !t.is_empty() && tags.iter().any(|want| want == t))
            })
    })
}

/// Tag and key indexes beside a tier. Entries may outlive their objects (evictions are not
/// reported here); lookups skip keys the tier no longer holds and [`Index::retain`] prunes.
#[derive(Default)]
pub struct Index {
    tags: HashMap<String, HashSet<CacheKey>>,
    keys: BTreeMap<String, CacheKey>,
}

impl Index {
    pub fn add(&mut self, key: &CacheKey, object: &StoredObject) {
        for tag in tags_of(&object.headers) {
            self.tags.entry(tag).or_default().insert(key.clone());
        }
        self.keys
            .entry(key.as_str().to_string())
            .or_insert_with(|| key.clone());
    }

    pub fn remove_key(&mut self, key: &CacheKey) {
        self.keys.remove(key.as_str());
    }

    /// Keys a scope may touch.
    pub fn candidates(&self, scope: &Scope) -> Vec<CacheKey> {
        match scope {
            Scope::Keys(keys) => keys.clone(),
            Scope::Tags(tags) => {
                let mut out: HashSet<CacheKey> = HashSet::new();
                for t in tags {
                    if let Some(keys) = self.tags.get(t) {
                        out.extend(keys.iter().cloned());
                    }
                }
                out.into_iter().collect()
            }
            Scope::Prefixes(prefixes) => prefixes
                .iter()
                .flat_map(|p| {
                    self.keys
                        .range(p.clone()..)
                        .take_while(move |(text, _)| text.starts_with(p.as_str()))
                        .map(|(_, k)| k.clone())
                })
                .collect(),
            Scope::All => self.keys.values().cloned().collect(),
        }
    }

    /// Drops entries for keys the tier no longer holds.
    pub fn retain(&mut self, holds: impl Fn(&CacheKey) -> bool) {
        self.keys.retain(|_, k| holds(k));
        self.tags.retain(|_, keys| {
            keys.retain(|k| holds(k));
            !keys.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn tags_from_both_headers_space_or_comma_separated() {
        let mut h = HeaderMap::new();
        h.insert(SURROGATE_KEY, HeaderValue::from_static("a b  c"));
        h.insert(CACHE_TAG, HeaderValue::from_static("c,d, e"));
        assert_eq!(tags_of(&h), vec!["a", "b", "c", "d", "e"]);
    }
}
