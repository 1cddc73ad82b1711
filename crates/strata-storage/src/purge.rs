//! Purge: invalidate what was stored before a purge's `issued_at` that matches its scope.
//!
//! The rule is "stored before `issued_at`", not "present now", so a purge is idempotent and
//! safe to replay, and an object whose fill was in flight when the purge landed is caught
//! when it is stored (the tier keeps recent purges and checks every insert against them).
//! A hard purge removes; a soft purge marks stale, so the next request revalidates while
//! stale-while-revalidate / stale-if-error still protect the origin.
//!
//! Tag and prefix purges go through indexes and touch only the objects affected.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName};
use strata_http_cache::freshness::{Freshness, FreshnessSource};
use strata_http_cache::{CacheKey, CachePolicy};

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
    /// Paths matching a glob (`*`, `?`), optionally on one host. Applied lazily at lookup
    /// and by a sweep over the whole tier, like Varnish bans: the only scope that costs a
    /// scan.
    Patterns(Vec<PathPattern>),
    All,
}

/// A glob on the path (query excluded), optionally limited to one host.
#[derive(Debug, Clone)]
pub struct PathPattern {
    pub host: Option<String>,
    pub glob: String,
    matcher: wildmatch::WildMatch,
}

impl PathPattern {
    pub fn new(host: Option<&str>, glob: &str) -> Self {
        Self {
            host: host.map(str::to_ascii_lowercase),
            glob: glob.to_string(),
            matcher: wildmatch::WildMatch::new(glob),
        }
    }

    /// Whether a key (`http://host/path?query`) matches.
    pub fn matches(&self, key: &CacheKey) -> bool {
        let text = key.as_str();
        let rest = text.split_once("://").map_or(text, |(_, r)| r);
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        // Neither the query nor a slice's range is part of the path.
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.host.as_deref().is_none_or(|h| h == host) && self.matcher.matches(path)
    }
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host && self.glob == other.glob
    }
}

impl Eq for PathPattern {}

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
        self.covers_stored(key, object.stored_at, &object.headers)
    }

    /// Whether this purge covers a response stored under `key` at `stored_at` with
    /// `headers` (a tier that keeps bodies elsewhere asks with what it holds).
    pub fn covers_stored(
        &self,
        key: &CacheKey,
        stored_at: SystemTime,
        headers: &HeaderMap,
    ) -> bool {
        if stored_at >= self.issued_at {
            return false;
        }
        match &self.scope {
            // A URL's purge takes what is stored under keys derived from its own: the
            // slices of a large object, an experiment's variants.
            Scope::Keys(keys) => keys.iter().any(|k| k == key || key.is_derived_from(k)),
            Scope::Tags(tags) => carries_any(headers, tags),
            Scope::Prefixes(prefixes) => prefixes
                .iter()
                .any(|p| key.as_str().starts_with(p.as_str())),
            Scope::Patterns(patterns) => patterns.iter().any(|p| p.matches(key)),
            Scope::All => true,
        }
    }

    /// What the purge leaves of a covered object: nothing (hard), or a copy that is stale
    /// from now on (soft).
    pub fn apply(&self, object: &Arc<StoredObject>, now: SystemTime) -> Option<Arc<StoredObject>> {
        if !self.soft {
            return None;
        }
        // The same object with the shortened policy; `stored_at` is kept, so replaying the
        // purge finds it again and changes nothing.
        Some(Arc::new(object.refreshed(
            object.headers.clone(),
            stale_policy(&object.policy, now),
            object.stored_at,
        )))
    }
}

/// The prefix of the keys derived from `whole` (slices, variants: see
/// [`CacheKey::is_derived_from`]).
fn derived_prefix(whole: &CacheKey) -> String {
    format!("{}{}", whole.as_str(), strata_http_cache::key::DERIVED_MARK)
}

/// A soft purge's effect on a policy: stale from this moment. Its age becomes its whole
/// lifetime, so stale-while-revalidate and stale-if-error windows start now.
pub fn stale_policy(policy: &CachePolicy, now: SystemTime) -> CachePolicy {
    let mut policy = policy.clone();
    policy.freshness = Freshness {
        lifetime: policy.age(now).min(policy.freshness.lifetime),
        source: FreshnessSource::Purged,
    };
    policy
}

/// Purges a tier remembers for a while, so that an object whose fill (or disk write) was in
/// flight when a purge landed is caught when it is stored. Callers hold the lock from the
/// check until the object is indexed: a purge recorded after the check then finds the
/// object in the index.
#[derive(Default)]
pub struct RecentPurges {
    purges: VecDeque<Purge>,
}

impl RecentPurges {
    /// How long purges are remembered.
    pub const MEMORY: Duration = Duration::from_secs(600);
    /// Most purges remembered.
    pub const MAX: usize = 10_000;

    pub fn record(&mut self, purge: &Purge, now: SystemTime) {
        self.purges.push_back(purge.clone());
        while self
            .purges
            .front()
            .is_some_and(|p| now.duration_since(p.issued_at).unwrap_or_default() > Self::MEMORY)
            || self.purges.len() > Self::MAX
        {
            self.purges.pop_front();
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Purge> {
        self.purges.iter()
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
    /// By key text, for prefixes; the text is the key's own (shared) allocation.
    keys: BTreeMap<Arc<str>, CacheKey>,
}

impl Index {
    /// Indexes a response stored under `key` with `headers`.
    pub fn add(&mut self, key: &CacheKey, headers: &HeaderMap) {
        for tag in tags_of(headers) {
            self.tags.entry(tag).or_default().insert(key.clone());
        }
        self.keys
            .entry(Arc::clone(key.text()))
            .or_insert_with(|| key.clone());
    }

    /// The keys listed whose text starts with `prefix`.
    fn listed_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a CacheKey> + 'a {
        self.keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(text, _)| text.starts_with(prefix))
            .map(|(_, k)| k)
    }

    pub fn remove_key(&mut self, key: &CacheKey) {
        self.keys.remove(key.as_str());
    }

    /// How many keys the index lists under a scope, without collecting them (0 for
    /// patterns, which only a scan can count). A key under two of a purge's tags counts
    /// twice.
    pub fn count(&self, scope: &Scope) -> u64 {
        let n = match scope {
            Scope::Keys(keys) => keys
                .iter()
                .map(|k| {
                    usize::from(self.keys.contains_key(k.as_str()))
                        + self.listed_under(&derived_prefix(k)).count()
                })
                .sum(),
            Scope::Tags(tags) => tags
                .iter()
                .filter_map(|t| self.tags.get(t))
                .map(HashSet::len)
                .sum(),
            Scope::Prefixes(prefixes) => {
                prefixes.iter().map(|p| self.listed_under(p).count()).sum()
            }
            Scope::All => self.keys.len(),
            Scope::Patterns(_) => 0,
        };
        n as u64
    }

    /// Keys a scope may touch.
    pub fn candidates(&self, scope: &Scope) -> Vec<CacheKey> {
        match scope {
            Scope::Keys(keys) => keys
                .iter()
                .flat_map(|k| {
                    let slices: Vec<CacheKey> =
                        self.listed_under(&derived_prefix(k)).cloned().collect();
                    std::iter::once(k.clone()).chain(slices)
                })
                .collect(),
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
                .flat_map(|p| self.listed_under(p).cloned())
                .collect(),
            Scope::All | Scope::Patterns(_) => self.keys.values().cloned().collect(),
        }
    }

    /// Drops key entries the tier no longer holds, looking at no more than `budget` keys
    /// after `cursor` (the last key looked at; `None` starts over). Returns where to go on
    /// from, or `None` when the walk reached the end, where tag entries are pruned too. A
    /// long prune is spread over many calls, so none holds the index for long.
    pub fn prune_step(
        &mut self,
        cursor: Option<Arc<str>>,
        budget: usize,
        holds: impl Fn(&CacheKey) -> bool,
    ) -> Option<Arc<str>> {
        let from = match &cursor {
            Some(c) => Bound::Excluded(&**c),
            None => Bound::Unbounded,
        };
        let mut last = None;
        let mut gone = Vec::new();
        for (text, key) in self
            .keys
            .range::<str, _>((from, Bound::Unbounded))
            .take(budget)
        {
            last = Some(Arc::clone(text));
            if !holds(key) {
                gone.push(Arc::clone(text));
            }
        }
        for text in &gone {
            self.keys.remove(&**text);
        }
        let at_end = match &last {
            None => true,
            Some(l) => self
                .keys
                .range::<str, _>((Bound::Excluded(&**l), Bound::Unbounded))
                .next()
                .is_none(),
        };
        if at_end {
            self.tags.retain(|_, keys| {
                keys.retain(|k| holds(k));
                !keys.is_empty()
            });
            return None;
        }
        last
    }

    /// Drops entries for keys the tier no longer holds, in one go (the disk tier's index,
    /// pruned by its writer).
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
    fn a_prune_in_steps_leaves_only_live_keys_and_their_tags() {
        let k = |i: u32| {
            CacheKey::new(
                "http",
                "h",
                &format!("/{i:03}"),
                None,
                &strata_http_cache::KeyRules::default(),
            )
        };
        let mut headers = HeaderMap::new();
        headers.insert("surrogate-key", HeaderValue::from_static("t"));
        let mut index = Index::default();
        for i in 0..10 {
            index.add(&k(i), &headers);
        }
        let live = |key: &CacheKey| key.as_str().ends_with('0') || key.as_str().ends_with('5');
        let mut cursor = None;
        let mut steps = 0;
        loop {
            steps += 1;
            match index.prune_step(cursor, 3, live) {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(steps < 10, "the walk ends");
        }
        assert_eq!(steps, 4, "10 keys, 3 per step");
        assert_eq!(index.len(), 2);
        assert_eq!(index.count(&Scope::Tags(vec!["t".into()])), 2);
    }

    #[test]
    fn path_patterns_match_the_path_and_optionally_the_host() {
        let k = |host: &str, path: &str, q: Option<&str>| {
            CacheKey::new(
                "http",
                host,
                path,
                q,
                &strata_http_cache::KeyRules::default(),
            )
        };
        let p = PathPattern::new(None, "/img/*.jpg");
        assert!(p.matches(&k("a.test", "/img/x/y.jpg", Some("v=1"))));
        assert!(!p.matches(&k("a.test", "/img/y.png", None)));
        let p = PathPattern::new(Some("B.test"), "/*");
        assert!(p.matches(&k("b.test", "/x", None)));
        assert!(!p.matches(&k("a.test", "/x", None)));
        // A slice of a large object is matched by its object's path.
        let p = PathPattern::new(None, "/v/*.mp4");
        assert!(p.matches(&k("a.test", "/v/a.mp4", None).slice(0, 1023)));
    }

    #[test]
    fn a_urls_purge_takes_the_slices_of_its_object_and_nothing_else() {
        let k = |path: &str| {
            CacheKey::new(
                "http",
                "h",
                path,
                None,
                &strata_http_cache::KeyRules::default(),
            )
        };
        let (whole, other) = (k("/v.mp4"), k("/v.mp40"));
        let mut index = Index::default();
        let headers = HeaderMap::new();
        for key in [
            whole.slice(0, 9),
            whole.slice(10, 19),
            other.slice(0, 9),
            other.clone(),
        ] {
            index.add(&key, &headers);
        }
        let scope = Scope::Keys(vec![whole.clone()]);
        let mut found: Vec<String> = index
            .candidates(&scope)
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "http://h/v.mp4",
                "http://h/v.mp4#slice=0-9",
                "http://h/v.mp4#slice=10-19"
            ]
        );
        assert_eq!(index.count(&scope), 2);
        let purge = Purge {
            scope,
            soft: false,
            issued_at: SystemTime::now(),
        };
        let before = SystemTime::UNIX_EPOCH;
        assert!(purge.covers_stored(&whole.slice(10, 19), before, &headers));
        assert!(!purge.covers_stored(&other.slice(0, 9), before, &headers));
    }

    #[test]
    fn tags_from_both_headers_space_or_comma_separated() {
        let mut h = HeaderMap::new();
        h.insert(SURROGATE_KEY, HeaderValue::from_static("a b  c"));
        h.insert(CACHE_TAG, HeaderValue::from_static("c,d, e"));
        assert_eq!(tags_of(&h), vec!["a", "b", "c", "d", "e"]);
    }
}
