//! `Range` requests on stored responses (RFC 9110 §14).
//!
//! One byte range is served as 206; a multi-range request is answered with the whole
//! representation (200), which §14.2 permits. Syntax errors make us ignore the field, as
//! §14.2 says; a valid range that starts past the end is 416.

use http::header::{HeaderMap, ETAG, IF_RANGE, LAST_MODIFIED};

use crate::conditional::EntityTag;
use crate::freshness::header_date;

/// An inclusive byte range within a representation of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn length(&self) -> u64 {
        self.end - self.start + 1
    }

    /// `Content-Range: bytes start-end/complete` (§14.4).
    pub fn content_range(&self, complete: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, complete)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Serve the whole representation.
    Full,
    Partial(ByteRange),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Parses a `Range` value against a representation of `len` bytes.
pub fn parse_range(value: &str, len: u64) -> RangeOutcome {
    // The range unit is case-insensitive. Compare bytes: the value may hold non-ASCII.
    let v = value.trim();
    let Some(spec) = v
        .as_bytes()
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .and_then(|_| v.get(6..))
    else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let digits = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match digits(suffix) {
            None => RangeOutcome::Full,
            Some(0) => RangeOutcome::Unsatisfiable,
            Some(_) if len == 0 => RangeOutcome::Unsatisfiable,
            Some(n) => RangeOutcome::Partial(ByteRange {
                start: len.saturating_sub(n),
                end: len - 1,
            }),
        },
        (first, last) => {
            let Some(start) = digits(first) else {
                return RangeOutcome::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match digits(last) {
                    Some(e) if e >= start => e,
                    _ => return RangeOutcome::Full,
                }
            };
            if start >= len {
                return RangeOutcome::Unsatisfiable;
            }
            RangeOutcome::Partial(ByteRange {
                start,
                end: end.min(len - 1),
            })
        }
    }
}

/// The `Content-Range` of a 206 (§14.4): `bytes first-last/complete`, the complete length
/// `None` when it is `*`. `None` for anything else (an unsatisfied range, other units,
/// `last` before `first`).
pub fn parse_content_range(value: &str) -> Option<(ByteRange, Option<u64>)> {
    let v = value.trim();
    let rest = v
        .as_bytes()
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes "))
        .and_then(|_| v.get(6..))?;
    let (range, complete) = rest.trim_start().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let digits = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (start, end) = (digits(first)?, digits(last)?);
    let complete = match complete {
        "*" => None,
        n => Some(digits(n)?),
    };
    let fits = end >= start && complete.is_none_or(|c| end < c);
    fits.then_some((ByteRange { start, end }, complete))
}

/// `If-Range` (§13.1.5): the range applies only if the validator still matches; an entity
/// tag needs strong equality, a date needs to equal `Last-Modified` exactly.
pub fn if_range_allows(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(value) = request.get(IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if let Some(tag) = EntityTag::parse(value) {
        return stored
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(EntityTag::parse)
            .is_some_and(|stored| tag.strong_eq(&stored));
    }
    match (
        httpdate::parse_http_date(value.trim()).ok(),
        header_date(stored, LAST_MODIFIED),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9110_14_1_2_first_last_and_open_and_suffix() {
        assert_eq!(
            parse_range("bytes=0-9", 100),
            RangeOutcome::Partial(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            RangeOutcome::Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            RangeOutcome::Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            parse_range("bytes=-1000", 100),
            RangeOutcome::Partial(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            RangeOutcome::Partial(ByteRange { start: 50, end: 99 })
        );
        assert_eq!(
            parse_range("BYTES=0-0", 100),
            RangeOutcome::Partial(ByteRange { start: 0, end: 0 })
        );
    }

    #[test]
    fn rfc9110_14_2_invalid_range_is_ignored() {
        for v in [
            "bytes=9-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=1",
        ] {
            assert_eq!(parse_range(v, 100), RangeOutcome::Full, "{v}");
        }
    }

    #[test]
    fn rfc9110_15_5_17_unsatisfiable_range() {
        assert_eq!(parse_range("bytes=100-", 100), RangeOutcome::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeOutcome::Unsatisfiable);
    }

    #[test]
    fn non_ascii_value_does_not_panic() {
        // Found by the range fuzz target.
        assert_eq!(parse_range("1    \u{543}", 100), RangeOutcome::Full);
        assert_eq!(parse_range("bytes\u{543}=0-1", 100), RangeOutcome::Full);
    }

    #[test]
    fn rfc9110_14_2_multiple_ranges_served_whole() {
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeOutcome::Full);
    }

    #[test]
    fn rfc9110_13_1_5_if_range() {
        let mut stored = HeaderMap::new();
        stored.insert(ETAG, "\"v1\"".parse().unwrap());
        let mut req = HeaderMap::new();
        req.insert(IF_RANGE, "\"v1\"".parse().unwrap());
        assert!(if_range_allows(&req, &stored));
        req.insert(IF_RANGE, "\"v2\"".parse().unwrap());
        assert!(!if_range_allows(&req, &stored));
    }

    #[test]
    fn rfc9110_14_4_content_range_of_a_206_is_read_strictly() {
        let r = |start, end| ByteRange { start, end };
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((r(0, 99), Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((r(5, 5), None)));
        for bad in [
            "bytes */1000",
            "bytes 10-5/1000",
            "bytes 0-1000/1000",
            "items 0-1/2",
            "bytes 0-/10",
            "bytes -1-2/10",
            "bytes 0-99/abc",
            "bytes 0-99999999999999999999999/1",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }
}
