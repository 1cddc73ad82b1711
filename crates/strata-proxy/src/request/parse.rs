//! The parse phase: what a client sent, checked once, in the form the rest of the request
//! path uses.
//!
//! Everything here is hostile input. The authority (`Host`, `:authority` or an
//! absolute-form target) is validated and canonicalised (`strata_http_cache::authority`);
//! the cache key, service routing and the `Host` sent upstream all use that one form, so a
//! client cannot make them disagree. Methods that make no sense at a reverse proxy
//! (`CONNECT`, `TRACE`) are answered here.

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_TYPE, HOST};
use http::{Method, Request, Response, Uri, Version};
use strata_http_cache::accept_encoding::{self, Coding};
use strata_http_cache::cache_control::RequestCacheControl;
use strata_http_cache::Authority;

use std::sync::Arc;

use crate::body::{ProxyBody, RequestBody};
use strata_http_cache::cache_status::Fwd;
use strata_http_cache::hop_by_hop::strip_hop_by_hop;

use crate::error::ProxyError;
use crate::forward;
use crate::proxy::Proxy;
use crate::request::{Ctx, Parsed};
use crate::server::Conn;
use crate::service::{Resolved, Service};
use crate::tier::{HEALTH_PATH, RING_HOP};
use crate::tls::acme::HTTP01_PREFIX;

/// What the service phase leaves for the next: the service and rule, the request's head
/// and body apart, and its `Cache-Control` (read once, here).
pub(super) struct Routed {
    pub service: Arc<Service>,
    pub resolved: Resolved,
    pub head: Head,
    pub body: RequestBody,
    pub cc: RequestCacheControl,
}

/// The parts of a client request the cache path needs, cheap to share with fill tasks.
#[derive(Clone)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The canonical authority: keys, service routing and forwarding all use it.
    pub authority: Authority,
    pub client: SocketAddr,
    /// The client reached Strata over TLS: directly, or through a trusted proxy that
    /// says so (`X-Forwarded-Proto: https`). Part of the cache key: an origin may answer
    /// the two schemes differently (a redirect to https).
    pub secure: bool,
}

impl Head {
    /// `https` or `http`, as the client reached Strata.
    pub fn scheme(&self) -> &'static str {
        if self.secure {
            "https"
        } else {
            "http"
        }
    }

    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }

    /// `host[:port]`, canonical.
    pub fn host(&self) -> &str {
        self.authority.as_str()
    }

    /// Whether the client's body may go upstream. GET and HEAD never carry one: a body on
    /// them has no meaning (RFC 9110 §9.3.1) and forwarding it, or its framing, is how a
    /// request smuggled inside it reaches the origin.
    pub fn forwards_body(&self) -> bool {
        forwards_body(&self.method)
    }
}

/// See [`Head::forwards_body`].
pub fn forwards_body(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// The request's authority, canonical. RFC 9110 §7.2 and RFC 9112 §3.2: one `Host`
/// field, required unless the target carries the authority; when both are present they
/// must name the same authority (RFC 9113 §8.3.1 for `:authority`), else 400.
/// `secure`: the connection is TLS, where `https` targets (and `:scheme`) are at home.
pub fn authority<B>(req: &Request<B>, secure: bool) -> Result<Authority, ProxyError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host field"));
    }
    // A plain listener takes no `https` target: it would be keyed as what it is not.
    let default_port = match req.uri().scheme_str() {
        None if secure => 443,
        None | Some("http") => 80,
        Some("https") if secure => 443,
        Some(_) => return Err(ProxyError::BadRequest("unsupported scheme in target")),
    };
    let parse = |bytes: &[u8]| {
        Authority::parse(bytes, default_port).map_err(|e| ProxyError::BadRequest(e.as_str()))
    };
    let from_host = host.map(|h| parse(h.as_bytes())).transpose()?;
    match req.uri().authority() {
        Some(target) => {
            let from_target = parse(target.as_str().as_bytes())?;
            if from_host.is_some_and(|h| h != from_target) {
                return Err(ProxyError::BadRequest(
                    if req.version() == Version::HTTP_2 {
                        "Host does not match :authority"
                    } else {
                        "Host does not match the request target"
                    },
                ));
            }
            Ok(from_target)
        }
        None => from_host.ok_or(ProxyError::BadRequest("missing host")),
    }
}

/// RFC 3986 §5.2.4: `.` and `..` segments are resolved by clients before they send a
/// target. One that arrives with them (raw, or percent-encoded as `%2e`) names a path
/// other than the one rules, access checks and cache keys would see, once the origin
/// resolves it (`/public/../private/x` is `/private/x` to nginx and most servers). 400.
/// Segments end at `/`, and at what origins also take for one: `\`, `%2f`, `%5c`
/// (`/public/..%2fprivate/x`).
pub fn check_path(path: &str) -> Result<(), ProxyError> {
    if has_dot_segment(path) {
        return Err(ProxyError::BadRequest("dot segment in path"));
    }
    Ok(())
}

/// Whether a segment of `path` is `.` or `..`, each dot raw or `%2e`. One pass over the
/// bytes, nothing built: every request's path goes through here.
fn has_dot_segment(path: &str) -> bool {
    let mut rest = path.as_bytes();
    let (mut dots, mut other) = (0u32, false);
    loop {
        let (boundary, tail): (bool, &[u8]) = match rest {
            [] => (true, &[]),
            [b'/' | b'\\', tail @ ..] => (true, tail),
            [b'%', b'2', b'f' | b'F', tail @ ..] | [b'%', b'5', b'c' | b'C', tail @ ..] => {
                (true, tail)
            }
            [b'.', tail @ ..] | [b'%', b'2', b'e' | b'E', tail @ ..] => {
                dots += 1;
                (false, tail)
            }
            [_, tail @ ..] => {
                other = true;
                (false, tail)
            }
        };
        if boundary {
            if !other && (dots == 1 || dots == 2) {
                return true;
            }
            if rest.is_empty() {
                return false;
            }
            (dots, other) = (0, false);
        }
        rest = tail;
    }
}

/// Methods answered here rather than forwarded: `CONNECT` (a tunnel through a reverse
/// proxy to whatever the client names) and `TRACE` (echoes request fields, cookies
/// included, back to a script that asks). 405 with `Allow`.
pub fn check_method(method: &Method) -> Result<(), ProxyError> {
    if *method == Method::CONNECT || *method == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed);
    }
    Ok(())
}

// === impl Proxy ===

impl Proxy {
    /// The parse phase: limits, methods, the authority; the health endpoint and `PURGE`
    /// are answered here.
    pub(super) fn parse(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        conn: &Conn,
        ctx: &mut Ctx,
    ) -> Result<Parsed, ProxyError> {
        let client = conn.peer;
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > self.max_uri_length {
            return Err(ProxyError::UriTooLong);
        }
        check_method(req.method())?;
        check_path(req.uri().path())?;
        if req.uri().path() == HEALTH_PATH && req.method() == Method::GET {
            ctx.status.fwd = Some(Fwd::Bypass);
            ctx.status.detail = Some("health".into());
            return Ok(Parsed::Answered(self.health_endpoint(client)));
        }
        if let Some(resp) = self.acme_http01(&req, conn) {
            ctx.status.fwd = Some(Fwd::Bypass);
            ctx.status.detail = Some("acme-http-01".into());
            return Ok(Parsed::Answered(resp));
        }
        let authority = authority(&req, conn.secure)?;
        if self.access_log.enabled() {
            ctx.host = Some(authority.as_str().to_string());
        }
        if forward::is_loop(req.headers(), &self.node) {
            return Err(ProxyError::Loop);
        }
        if req.method().as_str() == "PURGE" {
            return self
                .purge_method(&req, authority.as_str(), client)
                .map(Parsed::Answered);
        }
        Ok(Parsed::Request((req, authority)))
    }

    /// The answer to an ACME HTTP-01 validation under way (RFC 8555 §8.3): a `GET` over
    /// plain HTTP for a token this node is answering, whatever the host. Other tokens go
    /// on to the services (an origin may answer its own).
    fn acme_http01(&self, req: &Request<RequestBody>, conn: &Conn) -> Option<Response<ProxyBody>> {
        if conn.secure || req.method() != Method::GET {
            return None;
        }
        let token = req.uri().path().strip_prefix(HTTP01_PREFIX)?;
        let answer = self.acme.http01(token)?;
        Response::builder()
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CACHE_CONTROL, "no-store")
            .body(ProxyBody::full(answer))
            .ok()
    }

    /// The service phase: the canonical host names the service, the path its rule. The
    /// request's own fields are cleaned of what is not part of it.
    pub(super) fn route(
        &self,
        (req, authority): (Request<RequestBody>, Authority),
        conn: &Conn,
    ) -> Result<Routed, ProxyError> {
        let client = conn.peer;
        let service = Arc::clone(
            self.services
                .for_authority(&authority)
                .ok_or(ProxyError::UnknownHost)?,
        );
        let (parts, body) = req.into_parts();
        let resolved = service.resolve(parts.uri.path());
        let mut headers = parts.headers;
        // The connection's own fields, and whatever `Connection` names, are not part of the
        // request: not forwarded, and not what a stored variant is selected by (a client
        // naming `Accept-Language` in `Connection` would otherwise store an answer made
        // without it under its own language).
        strip_hop_by_hop(&mut headers);
        // One of four codings, so that variants under `Vary: Accept-Encoding` do not
        // fragment by spelling, and the origin sees the same four (see `compress`).
        // A client that says `no-transform` gets no representation Strata made (RFC 9111
        // §5.2.1.6): the identity variant, or what the origin itself sends.
        let cc = RequestCacheControl::from_headers(&headers);
        let coding = if cc.no_transform {
            Coding::Identity
        } else {
            accept_encoding::preferred(&headers)
        };
        headers.remove(ACCEPT_ENCODING);
        if coding != Coding::Identity {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(coding.as_str()));
        }
        // Only a ring peer may ask this node to serve a key it does not own.
        // With a cluster CA, a peer must also prove it is one (a client certificate).
        let from_peer =
            self.tier.is_peer(client.ip()) && (!self.peers_authenticate || conn.authenticated);
        if headers.contains_key(RING_HOP) && !from_peer {
            headers.remove(RING_HOP);
        }
        let secure = conn.secure
            || (self.forwarder.trusts(client.ip())
                && headers
                    .get(forward::X_FORWARDED_PROTO)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")));
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            headers,
            authority,
            client,
            secure,
        };
        Ok(Routed {
            service,
            resolved,
            head,
            body,
            cc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3986_5_2_4_dot_segments_are_refused_raw_or_encoded() {
        for bad in [
            "/public/../private/x",
            "/a/./b",
            "/..",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/.%2e",
            "/a/%2e",
            "/public/..%2Fprivate/x",
            "/public/%2e%2e%2fprivate/x",
            "/public/..%5cprivate/x",
            "/public/..\\private/x",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/",
            "/a/b",
            "/a/.well-known/x",
            "/a/..b/c",
            "/a/b.../c",
            "/%2e%2ex",
            "/a/.../b",
            "/a/%2e%2e%2e/b",
            "/a/%2/b",
            "/a/%2f/b",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    fn req(uri: &str, hosts: &[&str], version: Version) -> Request<()> {
        let mut b = Request::builder().uri(uri).version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    fn auth(uri: &str, hosts: &[&str]) -> Result<String, ProxyError> {
        authority(&req(uri, hosts, Version::HTTP_11), false).map(|a| a.as_str().to_string())
    }

    #[test]
    fn rfc9112_3_2_host_is_required_and_canonical() {
        assert_eq!(auth("/a", &["Shop.Test:80"]).unwrap(), "shop.test");
        assert_eq!(auth("/a", &[]), Err(ProxyError::BadRequest("missing host")));
        assert_eq!(auth("/a", &[""]), Err(ProxyError::BadRequest("empty host")));
    }

    #[test]
    fn rfc9110_7_2_a_second_host_field_is_400() {
        assert_eq!(
            auth("/a", &["a.test", "a.test"]),
            Err(ProxyError::BadRequest("more than one Host field"))
        );
    }

    #[test]
    fn rfc9110_7_2_invalid_host_is_400() {
        for bad in [
            "shop.test/pois",
            "../../etc",
            "user@evil.com",
            "a b",
            "a:99999",
        ] {
            assert!(
                matches!(auth("/a", &[bad]), Err(ProxyError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc9112_3_2_2_absolute_form_target_names_the_authority() {
        assert_eq!(auth("http://A.test/x", &[]).unwrap(), "a.test");
        assert_eq!(auth("http://a.test/x", &["A.TEST:80"]).unwrap(), "a.test");
        assert_eq!(
            auth("http://a.test/x", &["b.test"]),
            Err(ProxyError::BadRequest(
                "Host does not match the request target"
            ))
        );
        assert_eq!(
            auth("http://user@a.test/x", &[]),
            Err(ProxyError::BadRequest("userinfo in host"))
        );
        assert_eq!(
            auth("https://a.test/x", &[]),
            Err(ProxyError::BadRequest("unsupported scheme in target"))
        );
    }

    #[test]
    fn rfc9113_8_3_1_host_must_match_authority_pseudo_header() {
        let r = req("http://a.test/x", &["b.test"], Version::HTTP_2);
        assert_eq!(
            authority(&r, false),
            Err(ProxyError::BadRequest("Host does not match :authority"))
        );
        let r = req("http://a.test/x", &["a.test"], Version::HTTP_2);
        assert_eq!(authority(&r, false).unwrap().as_str(), "a.test");
    }

    #[test]
    fn connect_and_trace_are_answered_here() {
        assert_eq!(
            check_method(&Method::CONNECT),
            Err(ProxyError::MethodNotAllowed)
        );
        assert_eq!(
            check_method(&Method::TRACE),
            Err(ProxyError::MethodNotAllowed)
        );
        assert!(check_method(&Method::from_bytes(b"PROPFIND").unwrap()).is_ok());
        assert!(!forwards_body(&Method::GET) && !forwards_body(&Method::HEAD));
        assert!(forwards_body(&Method::POST));
    }
}
