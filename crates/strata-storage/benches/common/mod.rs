//! Stored objects for the storage benchmarks.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use strata_http_cache::vary::{vary_of, VariantKey};
use strata_http_cache::{CachePolicy, PolicyConfig, ResponseTimes};
use strata_storage::{ChunkedBody, StoredObject};

/// A cacheable 200 (public, max-age=3600, with an ETag) stored at `now`, with `extra`
/// response fields; a `Vary` among them selects the variant of a request that accepts
/// `gzip, br`.
pub fn object(
    now: SystemTime,
    extra: &[(&'static str, &'static str)],
    body: Bytes,
) -> Arc<StoredObject> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("etag", HeaderValue::from_static("\"abc\""));
    for (name, value) in extra {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let policy = CachePolicy::for_response(
        &Method::GET,
        &HeaderMap::new(),
        StatusCode::OK,
        &headers,
        ResponseTimes {
            request_time: now,
            response_time: now,
        },
        &PolicyConfig::default(),
    )
    .expect("storable");
    let mut request = HeaderMap::new();
    request.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
    Arc::new(StoredObject {
        status: StatusCode::OK,
        variant: VariantKey::for_request(&vary_of(&headers), &request),
        headers,
        policy,
        body: ChunkedBody::complete(body),
        stored_at: now,
    })
}
