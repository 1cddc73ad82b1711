//! Objects, keys and purges for the tiers' unit tests.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use strata_http_cache::vary::{VariantKey, Vary};
use strata_http_cache::{CacheKey, KeyRules, PolicyConfig, ResponseTimes};

use crate::body::ChunkedBody;
use crate::object::StoredObject;
use crate::purge::Purge;

pub fn object(size: usize, vary_value: Option<&str>) -> Arc<StoredObject> {
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
    response(headers, SystemTime::now(), vary_value, size)
}

/// A 200 with these fields, stored at `now`, for a request whose `Accept-Language` (the
/// field it varies on) is `vary_value`.
pub fn response(
    headers: HeaderMap,
    now: SystemTime,
    vary_value: Option<&str>,
    size: usize,
) -> Arc<StoredObject> {
    let policy = strata_http_cache::CachePolicy::for_response(
        &http::Method::GET,
        &HeaderMap::new(),
        StatusCode::OK,
        &headers,
        ResponseTimes {
            request_time: now,
            response_time: now,
        },
        &PolicyConfig::default(),
    )
    .unwrap();
    let mut req = HeaderMap::new();
    if let Some(v) = vary_value {
        req.insert("accept-language", HeaderValue::from_str(v).unwrap());
    }
    let vary = Vary::Fields(vec![http::header::ACCEPT_LANGUAGE]);
    Arc::new(StoredObject {
        status: StatusCode::OK,
        headers,
        policy,
        variant: VariantKey::for_request(&vary, &req),
        body: ChunkedBody::complete(Bytes::from(vec![b'x'; size])),
        stored_at: now,
    })
}

pub fn key(i: usize) -> CacheKey {
    CacheKey::new("http", "h", &format!("/{i}"), None, &KeyRules::default())
}

pub fn tagged(tags: &str, stored_at: SystemTime) -> Arc<StoredObject> {
    let o = object(10, None);
    let mut headers = o.headers.clone();
    headers.insert("surrogate-key", HeaderValue::from_str(tags).unwrap());
    Arc::new(StoredObject {
        status: o.status,
        headers,
        policy: o.policy.clone(),
        variant: o.variant.clone(),
        body: Arc::clone(&o.body),
        stored_at,
    })
}

pub fn purge(scope: crate::Scope, soft: bool, issued_at: SystemTime) -> Purge {
    Purge {
        scope,
        soft,
        issued_at,
    }
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("strata-storage-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Files under `objects/` ending in `ext`.
    pub fn count(&self, ext: &str) -> usize {
        let Ok(shards) = std::fs::read_dir(self.0.join("objects")) else {
            return 0;
        };
        shards
            .flatten()
            .flat_map(|s| std::fs::read_dir(s.path()).into_iter().flatten().flatten())
            .filter(|f| f.path().extension().is_some_and(|e| e == ext))
            .count()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
