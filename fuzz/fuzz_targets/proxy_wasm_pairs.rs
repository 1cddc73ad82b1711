//! Header maps and property paths a filter hands the host (proxy-wasm ABI layouts): guest
//! bytes are hostile. Never panics, never reserves more than the input justifies, and what
//! decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_compute::abi::{decode_pairs, decode_path, encode_pairs};

fuzz_target!(|bytes: &[u8]| {
    if let Some(pairs) = decode_pairs(bytes) {
        assert_eq!(encode_pairs(&pairs), bytes);
    }
    let _ = decode_path(bytes);
});
