//! Conditional request evaluation and 304 header refresh on arbitrary validators.
#![no_main]

use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use strata_http_cache::conditional::{evaluate_preconditions, not_modified_selects, refresh_headers};
use strata_http_cache::range::if_range_allows;

fuzz_target!(|input: (&[u8], &[u8])| {
    let (Ok(a), Ok(b)) = (HeaderValue::from_bytes(input.0), HeaderValue::from_bytes(input.1)) else { return };
    let mut req = HeaderMap::new();
    for name in ["if-none-match", "if-match", "if-modified-since", "if-unmodified-since", "if-range"] {
        req.append(name, a.clone());
    }
    let mut stored = HeaderMap::new();
    stored.insert("etag", b.clone());
    stored.insert("last-modified", b.clone());
    let _ = evaluate_preconditions(&Method::GET, &req, &stored);
    let _ = if_range_allows(&req, &stored);
    let _ = not_modified_selects(&stored, &req);
    refresh_headers(&mut stored, &req);
});
