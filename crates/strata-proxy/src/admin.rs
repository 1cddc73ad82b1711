//! The admin listener: `/metrics` (Prometheus/OpenMetrics text), `/healthz`, and
//! `POST /v1/purge` (this node only; the control plane fans purges out to every node).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::proxy::Proxy;

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
                proxy.storage().disk_report(),
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
    let request = match crate::purge::read_request(req.into_body()).await {
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
