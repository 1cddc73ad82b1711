//! The admin listener: `/metrics` (Prometheus/OpenMetrics text), `/healthz`, the health
//! report (`/.well-known/strata/health`), `POST /v1/purge` (this node only; the
//! control plane fans purges out to every node), and Edge KV (`GET`/`PUT /v1/kv/<key>`).
//!
//! It changes what every client is served, so:
//! - with `admin.token` set (required when it listens beyond loopback), every request but
//!   `/healthz` needs `Authorization: Bearer <token>` (401 otherwise);
//! - requests a browser makes (an `Origin` field, or `Sec-Fetch-Site` other than `none`)
//!   are refused (403): a web page cannot make a visitor's browser purge;
//! - a purge must be `Content-Type: application/json` (415 otherwise), which a page can
//!   only send after a CORS preflight this listener never grants.

use std::convert::Infallible;
use std::sync::Arc;

use crate::body::RequestBody;
use crate::reload::Reloader;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::proxy::Proxy;
use crate::tier::HEALTH_PATH;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// The admin listener's state.
pub struct Admin {
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
    token: Option<String>,
}

impl Admin {
    pub fn new(proxy: Arc<Proxy>, reloader: Arc<Reloader>, token: Option<String>) -> Self {
        Self {
            proxy,
            reloader,
            token,
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
    }
}

/// Compares without stopping at the first difference, so timing does not tell how much
/// of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Whether a browser sent this (fetch metadata, or any `Origin`).
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() != b"none")
}

pub async fn handle(
    admin: Arc<Admin>,
    req: Request<RequestBody>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let proxy = &admin.proxy;
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, TEXT, "ok\n".to_string()),
        _ if from_browser(req.headers()) => (
            StatusCode::FORBIDDEN,
            TEXT,
            "browser requests are refused\n".into(),
        ),
        _ if !admin.authorized(req.headers()) => {
            let mut resp = respond(
                StatusCode::UNAUTHORIZED,
                TEXT,
                "admin token required\n".into(),
            );
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Ok(resp);
        }
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            proxy.metrics().render(
                proxy.storage().stats(),
                proxy.storage().disk_report(),
                &proxy.origin_samples(),
                proxy.fills_in_progress(),
                &proxy.tier_sample(),
                &proxy.filter_samples(),
            ),
        ),
        (&Method::GET, HEALTH_PATH) => (StatusCode::OK, JSON, proxy.health_json()),
        (&Method::POST, "/v1/purge") if !is_json(req.headers()) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JSON,
            serde_json::json!({ "error": "Content-Type must be application/json" }).to_string()
                + "\n",
        ),
        (&Method::POST, "/v1/purge") => purge(proxy, req).await,
        (&Method::POST, "/v1/reload") => reload(&admin.reloader),
        (&Method::GET, path) if path.starts_with(KV_PREFIX) => {
            let replica = req.uri().query() == Some("replica");
            kv_get(proxy, path, replica).await
        }
        (&Method::PUT, path) if path.starts_with(KV_PREFIX) && !is_json(req.headers()) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JSON,
            serde_json::json!({ "error": "Content-Type must be application/json" }).to_string()
                + "\n",
        ),
        (&Method::PUT, path) if path.starts_with(KV_PREFIX) => {
            let path = path.to_owned();
            kv_put(proxy, &path, req).await
        }
        (_, path) if path.starts_with(KV_PREFIX) => (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed\n".into(),
        ),
        (_, "/metrics" | "/healthz" | "/v1/purge" | "/v1/reload" | HEALTH_PATH) => (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    };
    Ok(respond(status, content_type, body))
}

/// `POST /v1/reload`: 200 with what waits for a restart, or 400 with why the new
/// configuration was refused (the running one stays).
fn reload(reloader: &Reloader) -> (StatusCode, &'static str, String) {
    match reloader.reload() {
        Ok(done) => {
            tracing::info!(restart_needed = ?done.restart_needed, "reloaded (admin API)");
            (
                StatusCode::OK,
                JSON,
                serde_json::json!({ "reloaded": true, "restart_needed": done.restart_needed })
                    .to_string()
                    + "\n",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "reload refused (admin API): the running configuration stays");
            (
                StatusCode::BAD_REQUEST,
                JSON,
                serde_json::json!({ "reloaded": false, "error": e.to_string() }).to_string() + "\n",
            )
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(JSON))
}

/// Where Edge KV's keys are, on this listener: `/v1/kv/<namespace>/<key>`, the key
/// percent-encoded as a path.
const KV_PREFIX: &str = "/v1/kv/";

/// A key's value and revision as JSON.
fn kv_json(key: &str, value: &[u8], revision: u64) -> String {
    serde_json::json!({
        "key": key,
        "value": String::from_utf8_lossy(value),
        "revision": revision,
    })
    .to_string()
        + "\n"
}

fn kv_key(path: &str) -> Option<String> {
    let raw = path.strip_prefix(KV_PREFIX)?;
    let key = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    (!key.is_empty() && key.len() <= 1024).then(|| key.into_owned())
}

/// `GET /v1/kv/<key>`: from the bus when the node has joined one (what every node will
/// see), else from this node's store; `?replica`: what this node's filters read now.
async fn kv_get(
    proxy: &Arc<Proxy>,
    path: &str,
    replica: bool,
) -> (StatusCode, &'static str, String) {
    let Some(key) = kv_key(path) else {
        return (StatusCode::BAD_REQUEST, TEXT, "bad key\n".into());
    };
    let read = match replica {
        true => Ok(proxy.kv().get(&key)),
        false => proxy.kv().read(&key).await,
    };
    match read {
        Ok(Some((value, revision))) => (StatusCode::OK, JSON, kv_json(&key, &value, revision)),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            JSON,
            "{\"error\":\"no such key\"}\n".into(),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            JSON,
            serde_json::json!({ "error": e.to_string() }).to_string() + "\n",
        ),
    }
}

/// `PUT /v1/kv/<key>` with `{"value": "…", "revision": N}`: `revision` absent writes
/// whatever the key holds, `0` only if it does not exist, `N` only if its revision is N
/// (409 otherwise).
async fn kv_put(
    proxy: &Arc<Proxy>,
    path: &str,
    req: Request<RequestBody>,
) -> (StatusCode, &'static str, String) {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Put {
        value: String,
        #[serde(default)]
        revision: Option<u64>,
    }
    let error = |status: StatusCode, why: String| {
        (
            status,
            JSON,
            serde_json::json!({ "error": why }).to_string() + "\n",
        )
    };
    let Some(key) = kv_key(path) else {
        return error(StatusCode::BAD_REQUEST, "bad key".into());
    };
    let body = match crate::body::read_to_limit(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let put: Put = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let expect = match put.revision {
        None => strata_bus::Expect::Any,
        Some(0) => strata_bus::Expect::Absent,
        Some(r) => strata_bus::Expect::Revision(r),
    };
    match proxy
        .kv()
        .put(&key, Bytes::from(put.value.clone()), expect)
        .await
    {
        Ok(revision) => (
            StatusCode::OK,
            JSON,
            kv_json(&key, put.value.as_bytes(), revision),
        ),
        Err(strata_bus::KvError::Conflict) => error(
            StatusCode::CONFLICT,
            "the key's revision is not the one given".into(),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn purge(
    proxy: &Arc<Proxy>,
    req: Request<RequestBody>,
) -> (StatusCode, &'static str, String) {
    let error = |status: StatusCode, why: String| {
        (
            status,
            JSON,
            serde_json::json!({ "error": why }).to_string() + "\n",
        )
    };
    let read = crate::body::read_to_limit(req.into_body(), crate::purge::MAX_PURGE_BODY).await;
    let request = match read.and_then(|bytes| crate::purge::parse_request(&bytes)) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match proxy.purge(&request) {
        Ok(report) => (
            StatusCode::OK,
            JSON,
            serde_json::to_string(&report).unwrap_or_default() + "\n",
        ),
        Err(why) => error(StatusCode::BAD_REQUEST, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123", b"0123456789abcdef"));
    }

    #[test]
    fn browsers_are_recognised_by_origin_or_fetch_metadata() {
        let mut h = HeaderMap::new();
        assert!(!from_browser(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("none"));
        assert!(!from_browser(&h), "typed in the address bar");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(from_browser(&h));
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static("https://evil.test"));
        assert!(from_browser(&h));
    }

    #[test]
    fn purge_needs_json() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
    }
}
