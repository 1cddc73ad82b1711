//! Range parsing: never panics, every satisfiable range lies inside the representation,
//! and a `Content-Range` read back (what slices are checked by) is what was written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_http_cache::range::{parse_content_range, parse_range, RangeOutcome};

fuzz_target!(|input: (&str, u64)| {
    let (value, len) = input;
    if let RangeOutcome::Partial(r) = parse_range(value, len) {
        assert!(r.start <= r.end, "{value:?} {len}: {r:?}");
        assert!(r.end < len, "{value:?} {len}: {r:?}");
        assert_eq!(r.length(), r.end - r.start + 1);
        let written = r.content_range(len);
        assert_eq!(parse_content_range(&written), Some((r, Some(len))), "{written}");
    }
    if let Some((r, complete)) = parse_content_range(value) {
        assert!(r.start <= r.end, "{value:?}: {r:?}");
        assert!(complete.is_none_or(|c| r.end < c), "{value:?}: {r:?} {complete:?}");
    }
});
