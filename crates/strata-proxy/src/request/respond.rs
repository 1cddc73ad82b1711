//! Building client responses: from a stored object (or one being filled) with `Age`,
//! conditional requests, `Range`, and HEAD.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::VIA;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, AGE, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use http::{Method, Response, StatusCode};
use strata_http_cache::conditional::{evaluate_preconditions, not_modified_headers, Precondition};
use strata_http_cache::range::{if_range_allows, parse_range, RangeOutcome};
use strata_storage::StoredObject;

use crate::access_log::AccessRecord;
use crate::body::{ClientBody, IdleTimeout, ProxyBody};
use crate::coalesce::Passed;
use crate::forward::{self, CACHE_STATUS};
use crate::proxy::Proxy;
use crate::request::{Arrival, Cacheable, Ctx, Head};

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
        if let Some(answer) = conditional(method, request, &object.headers, &headers) {
            return answer;
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
            if let Some(resp) = ranged(object, &mut headers, method, request, total) {
                return resp;
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

/// The answer to a request's conditionals (RFC 9110 §13) against a representation's
/// `validators`: `304` (with `fields`' metadata and `Age`) or `412`; `None`: go on.
pub(super) fn conditional(
    method: &Method,
    request: &HeaderMap,
    validators: &HeaderMap,
    fields: &HeaderMap,
) -> Option<Response<ProxyBody>> {
    match evaluate_preconditions(method, request, validators) {
        Precondition::Proceed => None,
        Precondition::NotModified => {
            let mut h = not_modified_headers(fields);
            if let Some(age) = fields.get(AGE) {
                h.insert(AGE, age.clone());
            }
            Some(build(StatusCode::NOT_MODIFIED, h, ProxyBody::Empty))
        }
        Precondition::Failed => {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_LENGTH, HeaderValue::from(0));
            Some(build(StatusCode::PRECONDITION_FAILED, h, ProxyBody::Empty))
        }
    }
}

/// Which bytes of a representation of `total` bytes with these `validators` a request
/// asks for (RFC 9110 §14: GET only, `If-Range` honoured).
pub(super) fn range_asked(
    method: &Method,
    request: &HeaderMap,
    validators: &HeaderMap,
    total: u64,
) -> RangeOutcome {
    request
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| *method == Method::GET && if_range_allows(request, validators))
        .map_or(RangeOutcome::Full, |v| parse_range(v, total))
}

/// `416` for a representation of `total` bytes (RFC 9110 §15.5.17).
pub(super) fn unsatisfiable(total: u64) -> Response<ProxyBody> {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_RANGE, header(&format!("bytes */{total}")));
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    build(StatusCode::RANGE_NOT_SATISFIABLE, h, ProxyBody::Empty)
}

/// The answer to a `Range` request for a complete 200 of `total` bytes (RFC 9110 §14):
/// 206 with the part, or 416. `None`: no range applies, answer in full.
fn ranged(
    object: &Arc<StoredObject>,
    headers: &mut HeaderMap,
    method: &Method,
    request: &HeaderMap,
    total: u64,
) -> Option<Response<ProxyBody>> {
    match range_asked(method, request, &object.headers, total) {
        RangeOutcome::Full => None,
        RangeOutcome::Partial(r) => {
            headers.insert(CONTENT_RANGE, header(&r.content_range(total)));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(r.length()));
            let body = ProxyBody::Cached {
                reader: object.body.reader(r.start, Some(r.end)),
                remaining: Some(r.length()),
            };
            Some(build(
                StatusCode::PARTIAL_CONTENT,
                std::mem::take(headers),
                body,
            ))
        }
        RangeOutcome::Unsatisfiable => Some(unsatisfiable(total)),
    }
}

fn header(s: &str) -> HeaderValue {
    // Only built from digits and fixed text.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(super) fn build(
    status: StatusCode,
    headers: HeaderMap,
    body: ProxyBody,
) -> Response<ProxyBody> {
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

// === impl Proxy ===

impl Proxy {
    /// The response phase common to every answer: `Cache-Status`, `Via`, targeted fields
    /// removed, metrics, and the access log line (written when the body ends).
    pub(super) fn finish(
        &self,
        mut resp: Response<ProxyBody>,
        arrival: Arrival,
        ctx: Ctx,
    ) -> Response<ClientBody> {
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&ctx.status.to_string()) {
            headers.append(CACHE_STATUS, v);
        }
        if headers.contains_key(VIA) {
            forward::append_list(headers, VIA, &format!("1.1 {}", self.node));
        } else {
            headers.insert(VIA, self.via.clone());
        }
        forward::strip_targeted(headers, self.strip_cdn_cache_control);

        let label = ctx.status.label();
        let started = arrival.started;
        if !arrival.probe {
            self.metrics.request(label, started.elapsed());
            self.health
                .response(resp.status().as_u16(), started.elapsed());
        }
        // The log names the canonical host, never a client's raw `Host` bytes.
        let record = arrival.logged.map(|(arrived, method, path)| AccessRecord {
            time: humantime::format_rfc3339_millis(arrived).to_string(),
            client: arrival.client.ip().to_string(),
            method,
            host: ctx.host.unwrap_or_default(),
            path,
            status: resp.status().as_u16(),
            cache_status: label.to_string(),
            bytes: 0,
            duration_ms: 0.0,
            upstream: ctx.upstream,
        });
        resp.map(|body| {
            body.logged(
                record,
                started,
                self.access_log.clone(),
                Arc::clone(&self.metrics),
            )
        })
    }

    /// Serves the stale copy in place of an upstream failure (an error, or a 5xx answer)
    /// when stale-if-error or the service's grace allows it (RFC 5861 §4).
    pub(super) fn stale_for_error(
        &self,
        req: &Cacheable,
        fwd_status: Option<u16>,
        ctx: &mut Ctx,
    ) -> Option<Response<ProxyBody>> {
        let obj = req.stored.as_ref()?;
        if fwd_status.is_some_and(|s| s < 500) {
            return None;
        }
        let now = self.clock.wall();
        if !obj.policy.stale_if_error(now, req.service.stale_if_error) {
            return None;
        }
        ctx.status.detail = Some(match fwd_status {
            Some(s) => format!("stale-if-error: upstream-{s}"),
            None => "stale-if-error".into(),
        });
        ctx.status.ttl = Some(obj.policy.ttl(now));
        ctx.status.stored = false;
        let head = &req.head;
        Some(from_object(obj, None, &head.method, &head.headers, now))
    }

    pub(super) fn respond_pass(&self, (resp, slot): Passed, head: &Head) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        forward::clean_upstream_headers(&mut parts.headers);
        let body = if head.method == Method::HEAD {
            ProxyBody::Empty
        } else {
            ProxyBody::Upstream(IdleTimeout::new(body, self.timeouts.idle, slot))
        };
        Response::from_parts(parts, body)
    }
}
