//! `Accept-Encoding` reduced to one coding: never panics, and the reduction is stable:
//! the field rewritten to the chosen token reduces to the same coding (a request keyed by
//! the reduced field, and forwarded with it, selects the same variant at the next tier).
#![no_main]

use http::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING};
use libfuzzer_sys::fuzz_target;
use strata_http_cache::accept_encoding::{preferred, Coding};

fuzz_target!(|fields: Vec<&[u8]>| {
    let mut headers = HeaderMap::new();
    for f in fields.iter().take(8) {
        if let Ok(v) = HeaderValue::from_bytes(f) {
            headers.append(ACCEPT_ENCODING, v);
        }
    }
    let chosen = preferred(&headers);
    let mut reduced = HeaderMap::new();
    if chosen != Coding::Identity {
        reduced.insert(ACCEPT_ENCODING, HeaderValue::from_static(chosen.as_str()));
    }
    assert_eq!(preferred(&reduced), chosen, "{headers:?}");
});
