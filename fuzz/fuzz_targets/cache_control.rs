//! Cache-Control, CDN-Cache-Control, Surrogate-Control, Pragma, Vary and Age parsing on
//! arbitrary field values: must never panic or loop.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use strata_http_cache::targeted::targeted_cache_control;
use strata_http_cache::vary::{vary_of, VariantKey};
use strata_http_cache::{freshness, RequestCacheControl, ResponseCacheControl};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let mut h = HeaderMap::new();
    for name in ["cache-control", "cdn-cache-control", "surrogate-control", "pragma", "vary", "age", "accept-encoding"] {
        h.append(name, value.clone());
    }
    let _ = ResponseCacheControl::from_headers(&h);
    let _ = RequestCacheControl::from_headers(&h);
    let _ = targeted_cache_control(&h);
    let _ = freshness::age_header(&h);
    let vary = vary_of(&h);
    let key = VariantKey::for_request(&vary, &h);
    assert!(key.matches(&h), "a request must select the variant built from it");
});
