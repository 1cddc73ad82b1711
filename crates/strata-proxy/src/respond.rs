//! Building client responses: from a stored object (or one being filled) with `Age`,
//! conditional requests, `Range`, and HEAD.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, AGE, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use http::{Method, Response, StatusCode};
use strata_http_cache::conditional::{evaluate_preconditions, not_modified_headers, Precondition};
use strata_http_cache::range::{if_range_allows, parse_range, RangeOutcome};
use strata_storage::StoredObject;

use crate::body::ProxyBody;

/// Answers a request from `object`. `headers` overrides the stored fields (the first
/// client of a fill sees the upstream fields, including any the cache must not keep).
pub fn from_object(
    object: &Arc<StoredObject>,
    headers: Option<HeaderMap>,
    method: &Method,
    request: &HeaderMap,
    now: SystemTime,
) -> Response<ProxyBody> {
    let mut headers = headers.unwrap_or_else(|| object.headers.clone());
    let age = object.policy.age(now).as_secs();
    headers.insert(AGE, HeaderValue::from(age));

    if object.status.is_success() {
        match evaluate_preconditions(method, request, &object.headers) {
            Precondition::Proceed => {}
            Precondition::NotModified => {
                let mut h = not_modified_headers(&headers);
                h.insert(AGE, HeaderValue::from(age));
                return build(StatusCode::NOT_MODIFIED, h, ProxyBody::Empty);
            }
            Precondition::Failed => {
                let mut h = HeaderMap::new();
                h.insert(CONTENT_LENGTH, HeaderValue::from(0));
                return build(StatusCode::PRECONDITION_FAILED, h, ProxyBody::Empty);
            }
        }
    }

    // The full length: known when the fill is done, or promised by Content-Length.
    let total = if object.body.is_finished() {
        Some(object.body.len())
    } else {
        headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let head = *method == Method::HEAD;

    if object.status == StatusCode::OK {
        if let Some(total) = total {
            headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let range = request.get(RANGE).and_then(|v| v.to_str().ok());
            if let Some(range) = range
                .filter(|_| *method == Method::GET && if_range_allows(request, &object.headers))
            {
                match parse_range(range, total) {
                    RangeOutcome::Full => {}
                    RangeOutcome::Partial(r) => {
                        headers.insert(CONTENT_RANGE, header(&r.content_range(total)));
                        headers.insert(CONTENT_LENGTH, HeaderValue::from(r.length()));
                        let body = ProxyBody::Cached {
                            reader: object.body.reader(r.start, Some(r.end)),
                            remaining: Some(r.length()),
                        };
                        return build(StatusCode::PARTIAL_CONTENT, headers, body);
                    }
                    RangeOutcome::Unsatisfiable => {
                        let mut h = HeaderMap::new();
                        h.insert(CONTENT_RANGE, header(&format!("bytes */{total}")));
                        h.insert(CONTENT_LENGTH, HeaderValue::from(0));
                        return build(StatusCode::RANGE_NOT_SATISFIABLE, h, ProxyBody::Empty);
                    }
                }
            }
        }
    }

    match total {
        // RFC 9110 §8.6: no Content-Length on a 204.
        Some(t) if object.status != StatusCode::NO_CONTENT => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(t));
        }
        _ => {
            headers.remove(CONTENT_LENGTH);
        }
    }
    let body = if head || object.status == StatusCode::NO_CONTENT {
        ProxyBody::Empty
    } else {
        ProxyBody::Cached {
            reader: object.body.reader(0, None),
            remaining: total,
        }
    };
    build(object.status, headers, body)
}

fn header(s: &str) -> HeaderValue {
    // Only built from digits and fixed text.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn build(status: StatusCode, headers: HeaderMap, body: ProxyBody) -> Response<ProxyBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A short plain-text response (errors, health). Headers common to every response
/// (`Cache-Status`, `Via`) are added by the caller.
pub fn text(status: StatusCode, text: String) -> Response<ProxyBody> {
    let len = text.len();
    let mut resp = Response::new(ProxyBody::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}
