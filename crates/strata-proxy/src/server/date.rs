//! The `Date` field of responses that have none (RFC 9110 §6.6.1: a server with a clock
//! sends one). hyper adds it on HTTP/1.1; the h2 and HTTP/3 connections add it here.
//! Formatted once per second per thread, not per response.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::DATE;
use http::{HeaderMap, HeaderValue};

thread_local! {
    static NOW: RefCell<(u64, Option<HeaderValue>)> = const { RefCell::new((0, None)) };
}

/// Adds `Date: <now>` to `headers` unless they have one (a cached response keeps the
/// origin's, RFC 9111 §4).
pub(crate) fn insert_if_missing(headers: &mut HeaderMap) {
    if headers.contains_key(DATE) {
        return;
    }
    if let Some(now) = now() {
        headers.insert(DATE, now);
    }
}

fn now() -> Option<HeaderValue> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    NOW.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != since || cached.1.is_none() {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(since));
            *cached = (since, HeaderValue::from_str(&text).ok());
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9110_6_6_1_a_date_is_added_only_when_missing() {
        let mut h = HeaderMap::new();
        insert_if_missing(&mut h);
        let added = h.get(DATE).unwrap().to_str().unwrap().to_string();
        let parsed = httpdate::parse_http_date(&added).unwrap();
        let off = SystemTime::now()
            .duration_since(parsed)
            .unwrap_or(Duration::ZERO);
        assert!(off < Duration::from_secs(5), "{added}");
        let mut kept = HeaderMap::new();
        kept.insert(
            DATE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        insert_if_missing(&mut kept);
        assert_eq!(kept[DATE], "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
