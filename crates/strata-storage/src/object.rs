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

/// What an object holds besides its body bytes and field bytes: the object itself and
/// its body's bookkeeping (the `Arc`s, the policy, the chunk list), with allocator
/// headers. Measured with heaptrack on small objects (see bench/README.md, "Memory").
pub const OBJECT_OVERHEAD: u64 = 640;

/// Per response field: its `HeaderMap` bucket and index slot, and the allocation that
/// holds its value.
pub const FIELD_OVERHEAD: u64 = 128;

/// Per body chunk: its `Bytes`, its end offset and the allocation behind it.
pub const CHUNK_OVERHEAD: u64 = 64;

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
    /// Bytes this object really holds in memory: body, fields and bookkeeping. The
    /// memory tier's capacity bounds the sum of these (plus its per-key cost), so it
    /// bounds what the process holds, not only the bodies.
    pub fn weight(&self) -> u64 {
        let fields = self.headers.capacity().max(self.headers.len()) as u64 * FIELD_OVERHEAD;
        let field_bytes: usize = self
            .headers
            .iter()
            // Standard names are static, others own their bytes: counted alike (a little
            // over, never under).
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        self.body.len()
            + CHUNK_OVERHEAD * self.body.chunk_count() as u64
            + fields
            + field_bytes as u64
            + self.variant.heap_bytes() as u64
            + OBJECT_OVERHEAD
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
