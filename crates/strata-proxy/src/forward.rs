//! Building requests to upstream and cleaning what comes back.

use std::net::SocketAddr;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, HOST, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE, VIA,
};
use http::{Method, Request, Version};
use strata_http_cache::hop_by_hop::strip_hop_by_hop;
use strata_http_cache::targeted::TARGETED_FIELDS;

use crate::error::ProxyError;
use crate::upstream::{Origin, UpstreamBody, UpstreamError};

pub const CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether our node name already appears in `CDN-Loop` (RFC 8586 §2): the request has
/// been through us before.
pub fn is_loop(headers: &HeaderMap, node: &str) -> bool {
    headers
        .get_all(CDN_LOOP)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|member| member.split(';').next())
        .any(|id| id.trim().eq_ignore_ascii_case(node))
}

/// What kind of upstream request to build.
pub enum Purpose<'a> {
    /// Forward the client's request as it is (pass).
    Pass,
    /// Fetch the full object for the cache: client conditionals and `Range` removed, and
    /// our own validators added when revalidating.
    Fill {
        validators: &'a [(HeaderName, HeaderValue)],
    },
}

/// The request to send to `origin` for a client request.
#[allow(clippy::too_many_arguments)]
pub fn upstream_request(
    method: Method,
    path_and_query: &str,
    client_headers: &HeaderMap,
    host: &str,
    origin_host: Option<&str>,
    client: SocketAddr,
    node: &str,
    origin: &Origin,
    purpose: Purpose<'_>,
    body: UpstreamBody,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let uri = origin
        .uri_for(path_and_query)
        .map_err(|_| ProxyError::Upstream(UpstreamError::BadUri))?;
    let mut headers = client_headers.clone();
    strip_hop_by_hop(&mut headers);
    if let Purpose::Fill { validators } = purpose {
        for name in [
            IF_MATCH,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
        ] {
            headers.remove(name);
        }
        for (name, value) in validators {
            headers.insert(name.clone(), value.clone());
        }
    }
    let host_value = HeaderValue::from_str(origin_host.unwrap_or(host))
        .map_err(|_| ProxyError::BadRequest("invalid host"))?;
    headers.insert(HOST, host_value);
    append_list(&mut headers, VIA, &format!("1.1 {node}"));
    append_list(&mut headers, CDN_LOOP, node);
    append_list(&mut headers, X_FORWARDED_FOR, &client.ip().to_string());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));

    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Appends a member to a list field, keeping one field line.
pub fn append_list(headers: &mut HeaderMap, name: HeaderName, member: &str) {
    let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {member}"),
        _ => member.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
}

/// Cleans a response head from upstream before it is stored or sent on.
pub fn clean_upstream_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

/// Removes fields meant for this CDN only (RFC 9213 targeted fields) before a client
/// sees the response.
pub fn strip_cdn_only(headers: &mut HeaderMap) {
    for name in TARGETED_FIELDS {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8586_2_own_cdn_id_is_a_loop() {
        let mut h = HeaderMap::new();
        h.insert(CDN_LOOP, HeaderValue::from_static("other-cdn, edge-1; v=1"));
        assert!(is_loop(&h, "edge-1"));
        assert!(!is_loop(&h, "edge-2"));
    }

    #[test]
    fn rfc8586_2_upstream_request_adds_cdn_loop_and_via() {
        let mut client = HeaderMap::new();
        client.insert(CDN_LOOP, HeaderValue::from_static("other"));
        client.insert("connection", HeaderValue::from_static("close"));
        client.insert(RANGE, HeaderValue::from_static("bytes=0-1"));
        let origin = Origin::parse("http://127.0.0.1:1").unwrap();
        use http_body_util::BodyExt;
        let body = http_body_util::Empty::new()
            .map_err(|n: std::convert::Infallible| match n {})
            .boxed();
        let req = upstream_request(
            Method::GET,
            "/x",
            &client,
            "example.com",
            None,
            "10.0.0.1:5".parse().unwrap(),
            "edge-1",
            &origin,
            Purpose::Fill { validators: &[] },
            body,
        )
        .unwrap();
        assert_eq!(req.headers()[CDN_LOOP], "other, edge-1");
        assert_eq!(req.headers()[VIA], "1.1 edge-1");
        assert_eq!(req.headers()[HOST], "example.com");
        assert!(!req.headers().contains_key("connection"));
        assert!(!req.headers().contains_key(RANGE));
    }
}
