//! Edge compute in the request path: a service's (or rule's) proxy-wasm filters.
//!
//! - **Request phase** (`on_request_headers`), after access and before the cache key: in
//!   chain order. A filter may change headers (those sent upstream), rewrite `:path`
//!   (the cache key and the path rule follow the new path), set the property
//!   `strata.bypass_cache` to send the request past the cache, or answer it itself (a
//!   local response, never stored).
//! - **Response phase** (`on_response_headers`), on the answer going to the client, in
//!   reverse chain order: after the cache, so what a filter changes is never stored
//!   (every hit runs it again). Framing (`Content-Length`, `Transfer-Encoding`) stays
//!   Strata's: a filter cannot make the body disagree with its length.
//!
//! A filter that faults answers its request `500` (`503` when no instance is free), or is
//! skipped when configured `fail_open`; the fault is in `Cache-Status` and the metrics,
//! and no other request notices.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use strata_compute::abi::Pairs;
use strata_compute::{
    Callout, CalloutResponse, Callouts, Fault, LocalResponse, Properties, Stream, Verdict,
};

use super::{Ctx, Head};
use crate::body::ProxyBody;
use crate::compute::Link;
use crate::error::ProxyError;
use crate::proxy::Proxy;
use crate::service::{Resolved, Service};
use crate::upstream::send::{path_hash, SendPolicy};

/// A filter's property that sends the request past the cache (any value but `0`/`false`).
pub(crate) const BYPASS_CACHE: &str = "strata.bypass_cache";

/// A callout's answer body the host reads, at most.
const MAX_CALLOUT_BODY: usize = 1 << 20;

/// A filter with the request's stream through it, until the response phase.
pub(crate) struct Running {
    link: Arc<Link>,
    stream: Stream,
}

/// What the request phase decided.
pub(super) enum Filtered {
    Go(Box<(Head, Resolved)>),
    Answered(Response<ProxyBody>),
}

// === impl Proxy ===

impl Proxy {
    /// Runs the request phase of `resolved.filters`.
    pub(super) async fn filter_request(
        &self,
        service: &Service,
        mut resolved: Resolved,
        mut head: Head,
        ctx: &mut Ctx,
    ) -> Result<Filtered, ProxyError> {
        let chain = Arc::clone(&resolved.filters);
        let mut pairs = request_pairs(&head);
        let mut changed = false;
        let mut bypass = false;
        for (i, link) in chain.iter().enumerate() {
            let fault = |fault: Fault| ProxyError::Filter {
                name: link.filter.name().to_owned(),
                fault,
            };
            let mut stream = match link.filter.stream(self.properties(service, &head)) {
                Ok(stream) => stream,
                Err(f) if link.fail_open => {
                    self.filter_fault(link, &f, ctx);
                    continue;
                }
                Err(f) => return Err(fault(f)),
            };
            let input = hand_over(&mut pairs, i + 1 == chain.len() && !changed);
            let upstreams = Upstreams { proxy: self };
            match stream.request_headers(input, true, &upstreams).await {
                Ok(Verdict::Continue(Some(new))) => {
                    pairs = new;
                    changed = true;
                }
                Ok(Verdict::Continue(None)) => {}
                Ok(Verdict::Respond(local)) => {
                    ctx.status.detail =
                        Some(format!("filter {}: local response", link.filter.name()));
                    return Ok(Filtered::Answered(local_response(local)));
                }
                Err(f) if link.fail_open => {
                    self.filter_fault(link, &f, ctx);
                    continue;
                }
                Err(f) => return Err(fault(f)),
            }
            bypass |= stream
                .property(BYPASS_CACHE)
                .is_some_and(|v| !matches!(v, b"" | b"0" | b"false"));
            ctx.filters.push(Running {
                link: Arc::clone(link),
                stream,
            });
        }
        if changed {
            let before = head.uri.path().to_owned();
            apply_request(&mut head, &pairs, self.max_uri_length).map_err(|why| {
                ProxyError::Filter {
                    name: chain
                        .last()
                        .map_or_else(String::new, |l| l.filter.name().to_owned()),
                    fault: Fault::Violation(why),
                }
            })?;
            if head.uri.path() != before {
                // The new path's rule applies (its key rules, TTLs, bypass), with this chain.
                let filters = std::mem::replace(&mut resolved.filters, chain);
                resolved = service.resolve(head.uri.path());
                resolved.filters = filters;
            }
        }
        resolved.bypass |= bypass;
        Ok(Filtered::Go(Box::new((head, resolved))))
    }

    /// Runs the response phase of the filters the request went through, last first.
    pub(super) async fn filter_response(
        &self,
        resp: Response<ProxyBody>,
        ctx: &mut Ctx,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        let mut pairs = response_pairs(parts.status, &parts.headers);
        let mut changed = false;
        let cache_status = ctx.status.to_string().into_bytes();
        let mut running = std::mem::take(&mut ctx.filters);
        let count = running.len();
        for (i, Running { link, stream }) in running.iter_mut().rev().enumerate() {
            stream.set_property(
                "response.code",
                u64::from(parts.status.as_u16()).to_le_bytes().to_vec(),
            );
            stream.set_property("strata.cache_status", cache_status.clone());
            let input = hand_over(&mut pairs, i + 1 == count && !changed);
            let upstreams = Upstreams { proxy: self };
            match stream.response_headers(input, false, &upstreams).await {
                Ok(Verdict::Continue(Some(new))) => {
                    pairs = new;
                    changed = true;
                }
                Ok(Verdict::Continue(None)) => {}
                Ok(Verdict::Respond(local)) => {
                    ctx.status.detail =
                        Some(format!("filter {}: local response", link.filter.name()));
                    ctx.filters = running;
                    return local_response(local);
                }
                Err(f) if link.fail_open => self.filter_fault(link, &f, ctx),
                Err(fault) => {
                    let e = ProxyError::Filter {
                        name: link.filter.name().to_owned(),
                        fault,
                    };
                    if let ProxyError::Filter { name, fault } = &e {
                        self.metrics.filter_fault(name, fault.kind());
                    }
                    ctx.status.detail = Some(e.detail());
                    ctx.filters = running;
                    return e.into_response();
                }
            }
        }
        ctx.filters = running;
        if changed {
            apply_response(&mut parts, &pairs);
        }
        Response::from_parts(parts, body)
    }

    /// Counts a fault that the filter's `fail_open` let the request past.
    fn filter_fault(&self, link: &Link, fault: &Fault, ctx: &mut Ctx) {
        self.metrics.filter_fault(link.filter.name(), fault.kind());
        if link.fail_open {
            tracing::debug!(filter = link.filter.name(), "failed open: {fault}");
            ctx.status.detail = Some(format!(
                "filter {}: {} (failed open)",
                link.filter.name(),
                fault.kind()
            ));
        }
    }

    /// What a filter may read of the request beyond its headers: made when it asks.
    fn properties(&self, service: &Service, head: &Head) -> Box<dyn Properties> {
        Box::new(RequestProperties {
            uri: head.uri.clone(),
            host: head.host().to_owned(),
            method: head.method.clone(),
            scheme: head.scheme(),
            client: head.client,
            node: Arc::clone(&self.names),
            service: service.name.clone(),
            country: self.countries.as_ref().map(|c| c.of(head.client.ip())),
        })
    }
}

/// A request's properties (Envoy's names where Envoy has one; Strata's own under
/// `strata.`). Integers are 8 bytes, little endian, as Envoy gives them.
struct RequestProperties {
    uri: Uri,
    host: String,
    method: Method,
    scheme: &'static str,
    client: std::net::SocketAddr,
    /// This node's name, PoP and role.
    node: Arc<[String; 3]>,
    service: String,
    country: Option<[u8; 2]>,
}

impl Properties for RequestProperties {
    fn get(&self, path: &str) -> Option<Vec<u8>> {
        let text = |s: &str| Some(s.as_bytes().to_vec());
        match path {
            "request.path" => text(self.uri.path_and_query().map_or("/", |pq| pq.as_str())),
            "request.url_path" => text(self.uri.path()),
            "request.host" => text(&self.host),
            "request.method" => text(self.method.as_str()),
            "request.scheme" => text(self.scheme),
            "source.address" => text(&self.client.to_string()),
            "source.port" => Some(u64::from(self.client.port()).to_le_bytes().to_vec()),
            "strata.node" => text(&self.node[0]),
            "strata.pop" => text(&self.node[1]),
            "strata.role" => text(&self.node[2]),
            "strata.service" => text(&self.service),
            "strata.country" => self.country.map(|c| c.to_vec()),
            _ => None,
        }
    }
}

/// What the next filter of a chain is given: the pairs themselves when it is the last and
/// no filter changed them (nothing to apply afterwards), else a copy.
fn hand_over(pairs: &mut Pairs, last_unchanged: bool) -> Pairs {
    match last_unchanged {
        true => std::mem::take(pairs),
        false => pairs.clone(),
    }
}

/// A filter's local response as an answer.
fn local_response(local: LocalResponse) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(local.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(ProxyBody::full(Bytes::from(local.body)));
    *resp.status_mut() = status;
    for (name, value) in local.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) else {
            continue;
        };
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// The request as a filter sees it: pseudo-headers, then the fields.
fn request_pairs(head: &Head) -> Pairs {
    let mut pairs = Vec::with_capacity(head.headers.len() + 4);
    pairs.push((":method".into(), head.method.as_str().as_bytes().to_vec()));
    pairs.push((":scheme".into(), head.scheme().as_bytes().to_vec()));
    pairs.push((":authority".into(), head.host().as_bytes().to_vec()));
    pairs.push((":path".into(), head.path_and_query().as_bytes().to_vec()));
    for (name, value) in &head.headers {
        pairs.push((name.as_str().to_owned(), value.as_bytes().to_vec()));
    }
    pairs
}

fn response_pairs(status: StatusCode, headers: &HeaderMap) -> Pairs {
    let mut pairs = Vec::with_capacity(headers.len() + 1);
    pairs.push((":status".into(), status.as_str().as_bytes().to_vec()));
    for (name, value) in headers {
        pairs.push((name.as_str().to_owned(), value.as_bytes().to_vec()));
    }
    pairs
}

/// Applies what the filters left: `:path` (checked as a request target) and the fields.
/// `:method`, `:scheme` and `:authority` are the client's: changing them is ignored.
fn apply_request(head: &mut Head, pairs: &Pairs, max_uri: usize) -> Result<(), String> {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name == ":path" {
            let path = std::str::from_utf8(value).map_err(|_| "a :path that is not text")?;
            if path != head.path_and_query() {
                if !path.starts_with('/') || path.len() > max_uri {
                    return Err(format!("the filter set :path to {path:?}"));
                }
                let pq: PathAndQuery = path
                    .parse()
                    .map_err(|_| format!("the filter set :path to {path:?}"))?;
                let mut parts = head.uri.clone().into_parts();
                parts.path_and_query = Some(pq);
                head.uri = Uri::from_parts(parts).map_err(|e| e.to_string())?;
            }
            continue;
        }
        if name.starts_with(':') {
            continue;
        }
        // Checked by the host already; a field that still does not parse is skipped.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    head.headers = headers;
    Ok(())
}

/// Applies a response phase's pairs: `:status` (100-599; anything else is ignored) and
/// the fields, keeping Strata's framing.
fn apply_response(parts: &mut http::response::Parts, pairs: &Pairs) {
    let framing: Vec<(HeaderName, HeaderValue)> = [CONTENT_LENGTH, TRANSFER_ENCODING]
        .into_iter()
        .flat_map(|n| {
            parts
                .headers
                .get_all(&n)
                .iter()
                .map(|v| (n.clone(), v.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name == ":status" {
            let status = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|s| (200..=599).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok());
            if let Some(status) = status {
                parts.status = status;
            }
            continue;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if n != CONTENT_LENGTH && n != TRANSFER_ENCODING && !name.starts_with(':') {
            headers.append(n, v);
        }
    }
    for (n, v) in framing {
        headers.append(n, v);
    }
    parts.headers = headers;
}

/// Filters' HTTP callouts: the "cluster" a filter names is a service of this node, and
/// the callout goes to that service's origins as any pass does (breakers, timeouts,
/// shedding), never through the cache.
struct Upstreams<'a> {
    proxy: &'a Proxy,
}

impl Callouts for Upstreams<'_> {
    fn call(
        &self,
        callout: Callout,
    ) -> Pin<Box<dyn Future<Output = Result<CalloutResponse, String>> + Send + '_>> {
        Box::pin(async move {
            let proxy = self.proxy;
            let service = proxy
                .services
                .all()
                .iter()
                .find(|s| s.name == callout.upstream)
                .ok_or_else(|| format!("no service named {:?}", callout.upstream))?;
            let field = |n: &str| {
                callout
                    .headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .and_then(|(_, v)| std::str::from_utf8(v).ok())
            };
            let method = Method::from_bytes(field(":method").unwrap_or("GET").as_bytes())
                .map_err(|e| e.to_string())?;
            let path = field(":path").unwrap_or("/").to_owned();
            let authority = field(":authority").unwrap_or_default().to_owned();
            let body = Bytes::from(callout.body.clone());
            let hops = service.origin_hops();
            let policy = SendPolicy {
                failover: true,
                url: path_hash(&path),
                body: None,
                panic_routing: true,
                interim: None,
            };
            let sent = proxy
                .sender
                .send(&hops, policy, |hop| {
                    let host = service.origin_host.as_deref().unwrap_or(&authority);
                    let uri = hop
                        .state
                        .origin
                        .uri_for(host, &path)
                        .map_err(|_| ProxyError::BadRequest("callout target"))?;
                    let mut req = Request::new(
                        http_body_util::Full::new(body.clone())
                            .map_err(|never| match never {})
                            .boxed(),
                    );
                    *req.method_mut() = method.clone();
                    *req.uri_mut() = uri;
                    for (name, value) in &callout.headers {
                        let (Ok(n), Ok(v)) = (
                            HeaderName::from_bytes(name.as_bytes()),
                            HeaderValue::from_bytes(value),
                        ) else {
                            continue;
                        };
                        if !crate::forward::CONNECTION_FIELDS.contains(&n) {
                            req.headers_mut().append(n, v);
                        }
                    }
                    if let Ok(h) = HeaderValue::from_str(host) {
                        req.headers_mut().insert(HOST, h);
                    }
                    Ok(req)
                })
                .await
                .map_err(|e| e.detail())?;
            let (parts, body) = sent.resp.into_parts();
            let mut headers = response_pairs(parts.status, &parts.headers);
            headers.truncate(strata_compute::host::MAX_HEADERS);
            let limited = http_body_util::Limited::new(body, MAX_CALLOUT_BODY);
            let body = limited
                .collect()
                .await
                .map_err(|e| format!("callout body: {e}"))?
                .to_bytes();
            drop(sent.slot);
            Ok(CalloutResponse {
                headers,
                body: body.to_vec(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_filter_cannot_change_the_framing_of_a_response() {
        let resp = Response::builder()
            .status(200)
            .header(CONTENT_LENGTH, "5")
            .body(())
            .unwrap();
        let (mut parts, ()) = resp.into_parts();
        apply_response(
            &mut parts,
            &pairs(&[
                (":status", "404"),
                ("content-length", "999999"),
                ("transfer-encoding", "chunked"),
                ("x-added", "1"),
            ]),
        );
        assert_eq!(parts.status, 404);
        assert_eq!(parts.headers[CONTENT_LENGTH], "5");
        assert!(!parts.headers.contains_key(TRANSFER_ENCODING));
        assert_eq!(parts.headers["x-added"], "1");
        apply_response(&mut parts, &pairs(&[(":status", "42")]));
        assert_eq!(parts.status, 404, "an impossible status is ignored");
    }
}
