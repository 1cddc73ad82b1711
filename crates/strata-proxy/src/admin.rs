//! The admin listener: `/metrics` (Prometheus/OpenMetrics text), `/healthz`, and
//! `POST /v1/purge` (this node only; the control plane fans purges out to every node).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::proxy::Proxy;
use crate::purge::PurgeRequest;

/// Largest purge request body accepted.
const MAX_PURGE_BODY: usize = 1 << 20;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            proxy.metrics().render(
                proxy.storage().stats(),
                &proxy.origin_samples(),
                proxy.fills_in_progress(),
                &proxy.tier_sample(),
            ),
        ),
        (&Method::GET, "/healthz") => (StatusCode::OK, TEXT, "ok\n".to_string()),
        (&Method::POST, "/v1/purge") => purge(&proxy, req).await,
        (_, "/metrics" | "/healthz" | "/v1/purge") => (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

async fn purge(proxy: &Arc<Proxy>, req: Request<Incoming>) -> (StatusCode, &'static str, String) {
    let error = |status: StatusCode, why: String| {
        (
            status,
            JSON,
            serde_json::json!({ "error": why }).to_string() + "\n",
        )
    };
    let body = match Limited::new(req.into_body(), MAX_PURGE_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let request: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid purge request: {e}"),
            )
        }
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
