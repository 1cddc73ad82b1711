//! Range parsing: never panics, and every satisfiable range lies inside the representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_http_cache::range::{parse_range, RangeOutcome};

fuzz_target!(|input: (&str, u64)| {
    let (value, len) = input;
    if let RangeOutcome::Partial(r) = parse_range(value, len) {
        assert!(r.start <= r.end, "{value:?} {len}: {r:?}");
        assert!(r.end < len, "{value:?} {len}: {r:?}");
        assert_eq!(r.length(), r.end - r.start + 1);
    }
});
