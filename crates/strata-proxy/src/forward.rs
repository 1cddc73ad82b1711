//! Building requests to upstream, and cleaning what comes back.
//!
//! Every upstream request (fills, revalidations, passes, ring forwards) is built here, by
//! one [`Forwarder`], from a fresh field list. What goes in:
//!
//! - **Strata's own fields**: `Host` (the canonical authority, or the service's
//!   `origin_host`), `Via` and `CDN-Loop` (appended), `X-Forwarded-For`, `Forwarded`,
//!   `X-Forwarded-Proto` and `X-Forwarded-Host`. Framing (`Content-Length`,
//!   `Transfer-Encoding`) is never copied: hyper writes it for the body Strata actually
//!   sends, so a client's `Content-Length` on a GET cannot make the origin read the next
//!   request on the connection as a body.
//! - **The client's end-to-end fields**, except those in the lists below. Connection-level
//!   fields ([`CONNECTION_FIELDS`], and whatever `Connection` names), fields that claim who
//!   the client is ([`CLIENT_IDENTITY`]: kept only from trusted proxies), and fields an
//!   application may read as the request's real URL, host or method ([`OVERRIDES`]: not in
//!   the cache key, so forwarding them would let one client change what everyone is
//!   served; dropped unless `forwarding.allow_request_headers` names them *and* they come
//!   from a trusted proxy) never pass.
//! - For fills, the client's conditionals and `Range` are replaced by Strata's own
//!   validators: the fill fetches the whole object for everyone.

use std::net::IpAddr;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, HOST, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, RANGE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::{Method, Request, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty};
use strata_http_cache::hop_by_hop::{connection_named, strip_hop_by_hop};
use strata_http_cache::targeted::{CDN_CACHE_CONTROL, SURROGATE_CONTROL};

use crate::error::ProxyError;
use crate::request::Head;
use crate::upstream::{Origin, UpstreamBody, UpstreamError};

pub const CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Fields about one connection, or about the framing of its bytes. Never copied from a
/// client; hyper writes framing for the body actually sent.
pub static CONNECTION_FIELDS: [HeaderName; 14] = [
    HOST,
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    EXPECT,
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    UPGRADE,
    HeaderName::from_static("http2-settings"),
    PROXY_AUTHORIZATION,
    PROXY_AUTHENTICATE,
    // Peers mark ring forwards themselves (see `tier::RING_HOP`).
    HeaderName::from_static("strata-ring"),
];

/// Fields that claim who the client is or how it reached us. Kept (and extended) only
/// when the connection comes from a trusted proxy; otherwise Strata states the facts of
/// the connection itself.
pub static CLIENT_IDENTITY: [HeaderName; 9] = [
    X_FORWARDED_FOR,
    FORWARDED,
    X_FORWARDED_PROTO,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
];

/// Fields frameworks read as the request's real host, URL or method. They are not part of
/// the cache key: forwarded, one client could make the origin answer another URL (or
/// method) and have it stored for everyone. Dropped unless allowed by name.
pub static OVERRIDES: [HeaderName; 17] = [
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("front-end-https"),
    HeaderName::from_static("x-url-scheme"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-original-host"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-method"),
];

/// Conditionals and `Range`: a fill asks for the whole object with Strata's validators.
pub(crate) static CLIENT_CONDITIONALS: [HeaderName; 6] = [
    IF_MATCH,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
    RANGE,
];

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
    /// Forward the client's request (pass, ring forward): its conditionals and `Range`
    /// stay.
    Pass,
    /// Fetch the full object for the cache: client conditionals and `Range` removed, and
    /// our own validators added when revalidating.
    Fill {
        validators: &'a [(HeaderName, HeaderValue)],
        /// The bytes `start..=end` only: a slice of an object stored in slices.
        slice: Option<(u64, u64)>,
    },
}

/// One upstream request to build: where it goes and what it carries.
pub struct Outbound<'a> {
    pub method: Method,
    pub origin: &'a Origin,
    /// The target's path and query. For a fill, the query as keyed: the object stored
    /// under a key must be the answer to that key, not to parameters the key leaves out.
    pub path_and_query: &'a str,
    /// `Host` to send: the client's canonical authority unless the service sets
    /// `origin_host`.
    pub host: &'a str,
    pub purpose: Purpose<'a>,
    /// The client's body (passes of methods that carry one); `None` sends none.
    pub body: Option<UpstreamBody>,
}

/// Builds upstream requests for one node (see the module documentation).
#[derive(Debug, Clone)]
pub struct Forwarder {
    node: String,
    trusted: Vec<ipnet::IpNet>,
    allowed_overrides: Vec<HeaderName>,
}

// === impl Forwarder ===

impl Forwarder {
    /// `trusted`: networks whose forwarding fields are believed and extended.
    /// `allowed_overrides`: names from [`OVERRIDES`] to forward anyway.
    pub fn new(node: &str, trusted: Vec<ipnet::IpNet>, allowed_overrides: Vec<HeaderName>) -> Self {
        Self {
            node: node.to_string(),
            trusted,
            allowed_overrides,
        }
    }

    /// Whether forwarding fields from this address are believed.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// The request to send upstream for `head`.
    pub fn request(
        &self,
        head: &Head,
        out: Outbound<'_>,
    ) -> Result<Request<UpstreamBody>, ProxyError> {
        let uri = out
            .origin
            .uri_for(out.host, out.path_and_query)
            .map_err(|_| ProxyError::Upstream(UpstreamError::BadUri))?;
        let trusted = self.trusts(head.client.ip());
        let mut headers = HeaderMap::with_capacity(head.headers.len() + 6);
        let hop_by_hop = connection_named(&head.headers);
        for (name, value) in &head.headers {
            let owned = CONNECTION_FIELDS.contains(name)
                || hop_by_hop.contains(name)
                || (CLIENT_IDENTITY.contains(name) && !trusted)
                || (OVERRIDES.contains(name)
                    && !(trusted && self.allowed_overrides.contains(name)))
                || (matches!(out.purpose, Purpose::Fill { .. })
                    && CLIENT_CONDITIONALS.contains(name));
            if !owned {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Purpose::Fill { validators, slice } = out.purpose {
            for (name, value) in validators {
                headers.insert(name.clone(), value.clone());
            }
            if let Some((start, end)) = slice {
                let range = format!("bytes={start}-{end}");
                // Digits and fixed text only.
                if let Ok(v) = HeaderValue::from_str(&range) {
                    headers.insert(RANGE, v);
                }
            }
        }
        let host =
            HeaderValue::from_str(out.host).map_err(|_| ProxyError::BadRequest("invalid host"))?;
        headers.insert(HOST, host);
        append_list(&mut headers, VIA, &format!("1.1 {}", self.node));
        append_list(&mut headers, CDN_LOOP, &self.node);
        self.set_forwarded(&mut headers, head, trusted);

        // RFC 9110 §8.6: a request whose method gives content a meaning says how long it is,
        // even when empty; hyper writes no length for an empty body, so say it here. (The
        // value comes from the body sent, like all framing.)
        let body = out.body.unwrap_or_else(empty_body);
        let content_means_something = matches!(out.method, Method::POST | Method::PUT)
            || out.method == Method::PATCH
            || head.headers.contains_key(CONTENT_LENGTH);
        if content_means_something
            && !matches!(out.purpose, Purpose::Fill { .. })
            && body.size_hint().exact() == Some(0)
            && head.forwards_body()
        {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let mut req = Request::new(body);
        *req.method_mut() = out.method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        Ok(req)
    }

    /// `X-Forwarded-For`, `Forwarded` (RFC 7239), `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` from the connection: appended to a trusted proxy's values,
    /// replacing anyone else's (removed above).
    fn set_forwarded(&self, headers: &mut HeaderMap, head: &Head, trusted: bool) {
        let ip = head.client.ip();
        append_list(headers, X_FORWARDED_FOR, &ip.to_string());
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        // The authority is canonical (no quote or backslash can appear in it).
        let proto = head.scheme();
        let element = format!("for={node};host=\"{}\";proto={proto}", head.host());
        append_list(headers, FORWARDED, &element);
        if !trusted || !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !self.allowed_overrides.contains(&X_FORWARDED_HOST) {
            if let Ok(v) = HeaderValue::from_str(head.host()) {
                headers.insert(X_FORWARDED_HOST, v);
            }
        }
    }
}

/// An empty request body.
pub fn empty_body() -> UpstreamBody {
    Empty::new()
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed()
}

/// Appends a member to a list field, joining every field line into one (RFC 9110 §5.3),
/// whatever bytes they hold.
pub fn append_list(headers: &mut HeaderMap, name: HeaderName, member: &str) {
    let mut joined: Vec<u8> = Vec::new();
    for line in headers.get_all(&name) {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            joined.extend_from_slice(line);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(member.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, v);
    }
}

/// Cleans a response head from upstream before it is stored or sent on.
pub fn clean_upstream_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

/// Removes the targeted fields no one after this node should see: `Surrogate-Control`
/// always, `CDN-Cache-Control` when `cache.strip_cdn_cache_control` says so (by default it
/// goes on to the next CDN cache, RFC 9213).
pub fn strip_targeted(headers: &mut HeaderMap, cdn_cache_control_too: bool) {
    headers.remove(SURROGATE_CONTROL);
    if cdn_cache_control_too {
        headers.remove(CDN_CACHE_CONTROL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_http_cache::Authority;

    fn head(method: Method, client: &str, fields: &[(&str, &str)]) -> Head {
        let mut headers = HeaderMap::new();
        for (k, v) in fields {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Head {
            secure: false,
            method,
            uri: "/x?a=1".parse().unwrap(),
            headers,
            authority: Authority::parse(b"Example.com", 80).unwrap(),
            client: client.parse().unwrap(),
        }
    }

    fn build(f: &Forwarder, head: &Head, purpose: Purpose<'_>) -> Request<UpstreamBody> {
        let origin = Origin::parse("http://127.0.0.1:1").unwrap();
        f.request(
            head,
            Outbound {
                method: head.method.clone(),
                origin: &origin,
                path_and_query: head.path_and_query(),
                host: head.host(),
                purpose,
                body: None,
            },
        )
        .unwrap()
    }

    fn forwarder() -> Forwarder {
        Forwarder::new("edge-1", vec!["10.0.0.0/8".parse().unwrap()], Vec::new())
    }

    #[test]
    fn rfc8586_2_own_cdn_id_is_a_loop() {
        let mut h = HeaderMap::new();
        h.insert(CDN_LOOP, HeaderValue::from_static("other-cdn, edge-1; v=1"));
        assert!(is_loop(&h, "edge-1"));
        assert!(!is_loop(&h, "edge-2"));
    }

    #[test]
    fn rfc8586_2_upstream_request_adds_cdn_loop_and_via() {
        let h = head(
            Method::GET,
            "192.0.2.1:5",
            &[
                ("cdn-loop", "other"),
                ("connection", "close"),
                ("range", "bytes=0-1"),
            ],
        );
        let req = build(
            &forwarder(),
            &h,
            Purpose::Fill {
                validators: &[],
                slice: None,
            },
        );
        assert_eq!(req.headers()[CDN_LOOP], "other, edge-1");
        assert_eq!(req.headers()[VIA], "1.1 edge-1");
        assert_eq!(req.headers()[HOST], "example.com");
        assert!(!req.headers().contains_key("connection"));
        assert!(!req.headers().contains_key(RANGE));
    }

    #[test]
    fn rfc9112_6_framing_comes_from_the_body_sent_not_the_client() {
        let h = head(
            Method::GET,
            "192.0.2.1:5",
            &[
                ("content-length", "40"),
                ("transfer-encoding", "chunked"),
                ("expect", "100-continue"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAAQAAP__"),
                ("strata-ring", "edge-9"),
            ],
        );
        for purpose in [
            Purpose::Pass,
            Purpose::Fill {
                validators: &[],
                slice: None,
            },
        ] {
            let req = build(&forwarder(), &h, purpose);
            for name in [
                "content-length",
                "transfer-encoding",
                "expect",
                "upgrade",
                "http2-settings",
                "strata-ring",
            ] {
                assert!(!req.headers().contains_key(name), "{name} forwarded");
            }
        }
    }

    #[test]
    fn rfc9110_8_6_an_empty_post_says_content_length_0() {
        let h = head(Method::POST, "192.0.2.1:5", &[("content-length", "0")]);
        let req = build(&forwarder(), &h, Purpose::Pass);
        assert_eq!(req.headers()[CONTENT_LENGTH], "0");
        let get = head(Method::GET, "192.0.2.1:5", &[("content-length", "0")]);
        let req = build(&forwarder(), &get, Purpose::Pass);
        assert_eq!(req.headers().get(CONTENT_LENGTH), None);
    }

    #[test]
    fn list_fields_keep_every_line_when_appended() {
        let mut h = HeaderMap::new();
        h.append(VIA, HeaderValue::from_static("1.1 a"));
        h.append(VIA, HeaderValue::from_static("1.1 b"));
        append_list(&mut h, VIA, "1.1 c");
        assert_eq!(h[VIA], "1.1 a, 1.1 b, 1.1 c");
        let mut h = HeaderMap::new();
        h.append(CDN_LOOP, HeaderValue::from_bytes(b"caf\xe9").unwrap());
        append_list(&mut h, CDN_LOOP, "edge-1");
        assert_eq!(h[CDN_LOOP].as_bytes(), b"caf\xe9, edge-1");
    }

    #[test]
    fn override_fields_are_dropped_unless_allowed() {
        let fields = [
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("x-forwarded-host", "evil.test"),
            ("x-custom", "kept"),
        ];
        let h = head(Method::GET, "192.0.2.1:5", &fields);
        let req = build(&forwarder(), &h, Purpose::Pass);
        assert_eq!(req.headers().get("x-original-url"), None);
        assert_eq!(req.headers().get("x-rewrite-url"), None);
        assert_eq!(req.headers().get("x-http-method-override"), None);
        assert_eq!(req.headers()["x-forwarded-host"], "example.com");
        assert_eq!(req.headers()["x-custom"], "kept");

        // Allowed, and only from a trusted proxy.
        let allowing = Forwarder::new(
            "edge-1",
            vec!["10.0.0.0/8".parse().unwrap()],
            vec![HeaderName::from_static("x-original-url")],
        );
        let req = build(&allowing, &h, Purpose::Pass);
        assert_eq!(req.headers().get("x-original-url"), None, "not from anyone");
        let proxied = head(Method::GET, "10.1.2.3:5", &fields);
        let req = build(&allowing, &proxied, Purpose::Pass);
        assert_eq!(req.headers()["x-original-url"], "/admin");
    }

    #[test]
    fn rfc7239_forwarding_fields_are_believed_only_from_trusted_proxies() {
        let claims = [
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "1.2.3.4"),
        ];
        let untrusted = head(Method::GET, "192.0.2.1:5", &claims);
        let req = build(&forwarder(), &untrusted, Purpose::Pass);
        assert_eq!(req.headers()[X_FORWARDED_FOR], "192.0.2.1");
        assert_eq!(
            req.headers()[FORWARDED],
            "for=192.0.2.1;host=\"example.com\";proto=http"
        );
        assert_eq!(req.headers()[X_FORWARDED_PROTO], "http");
        assert_eq!(req.headers().get("x-real-ip"), None);

        let proxied = head(Method::GET, "10.1.2.3:5", &claims);
        let req = build(&forwarder(), &proxied, Purpose::Pass);
        assert_eq!(req.headers()[X_FORWARDED_FOR], "1.2.3.4, 10.1.2.3");
        assert_eq!(
            req.headers()[FORWARDED],
            "for=1.2.3.4, for=10.1.2.3;host=\"example.com\";proto=http"
        );
        assert_eq!(req.headers()[X_FORWARDED_PROTO], "https");
        assert_eq!(req.headers()["x-real-ip"], "1.2.3.4");

        let v6 = head(Method::GET, "[2001:db8::1]:5", &[]);
        let req = build(&forwarder(), &v6, Purpose::Pass);
        assert_eq!(
            req.headers()[FORWARDED],
            "for=\"[2001:db8::1]\";host=\"example.com\";proto=http"
        );
    }
}
