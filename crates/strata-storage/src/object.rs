//! Stored responses and their `Vary` variants.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, StatusCode};
use strata_http_cache::vary::VariantKey;
use strata_http_cache::CachePolicy;

use crate::body::ChunkedBody;

/// Upper bound on variants kept per primary key; the oldest goes first. Protects memory from
/// a `Vary` on a high-cardinality field (`User-Agent`).
pub const MAX_VARIANTS: usize = 32;

/// Fixed accounting overhead per object (metadata, index entries), so that millions of tiny
/// objects still count against the byte budget.
const OBJECT_OVERHEAD: u64 = 256;

/// One stored response.
#[derive(Debug)]
pub struct StoredObject {
    pub status: StatusCode,
    /// Response fields as received, minus hop-by-hop fields and `private="…"` fields.
    pub headers: HeaderMap,
    pub policy: CachePolicy,
    pub variant: VariantKey,
    pub body: Arc<ChunkedBody>,
    /// When it entered the cache (purges invalidate objects stored before their time).
    pub stored_at: SystemTime,
}

impl StoredObject {
    /// Bytes this object costs the cache.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers as u64 + OBJECT_OVERHEAD + 48 * self.body.chunk_count() as u64
    }

    /// The same object with refreshed headers and policy (after a 304), sharing the body.
    pub fn refreshed(&self, headers: HeaderMap, policy: CachePolicy, now: SystemTime) -> Self {
        Self {
            status: self.status,
            headers,
            policy,
            variant: self.variant.clone(),
            body: Arc::clone(&self.body),
            stored_at: now,
        }
    }
}

/// A copy of `headers` that owns its bytes. Field values parsed by hyper are slices of the
/// connection's read buffer: keeping them in the cache would keep that whole buffer (8 KiB
/// or more) alive for as long as the object, whatever its own size.
pub fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy =
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out
}

/// The variants under one primary key, newest first. Immutable: updates build a new set.
#[derive(Debug, Default, Clone)]
pub struct Variants {
    pub objects: Vec<Arc<StoredObject>>,
}

impl Variants {
    /// The variant a request selects (RFC 9111 §4.1). When several match, the newest.
    pub fn select(&self, request: &HeaderMap) -> Option<&Arc<StoredObject>> {
        self.objects.iter().find(|o| o.variant.matches(request))
    }

    /// A new set with `object` replacing any variant with the same selection.
    pub fn with(&self, object: Arc<StoredObject>) -> Self {
        let mut objects = Vec::with_capacity(self.objects.len() + 1);
        objects.push(Arc::clone(&object));
        objects.extend(
            self.objects
                .iter()
                .filter(|o| o.variant != object.variant)
                .take(MAX_VARIANTS - 1)
                .cloned(),
        );
        Self { objects }
    }

    /// A new set with `old` replaced by `new`, if `old` is still present.
    pub fn replacing(&self, old: &Arc<StoredObject>, new: Arc<StoredObject>) -> Option<Self> {
        let pos = self.objects.iter().position(|o| Arc::ptr_eq(o, old))?;
        let mut objects = self.objects.clone();
        objects[pos] = new;
        Some(Self { objects })
    }

    pub fn weight(&self) -> u64 {
        self.objects.iter().map(|o| o.weight()).sum()
    }
}
