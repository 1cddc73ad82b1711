//! One JSON `POST` to a Strata API (the control plane's, a node's admin listener) for the
//! CLI's client commands: `strata purge`, `strata reload`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Sends `body` to `path` on `base` (`http://host:port`) with the bearer `token`, waiting
/// up to `timeout`; returns the status and the body read as JSON (null when it is not).
pub async fn post_json(
    base: &str,
    flag: &str,
    path: &str,
    token: Option<&str>,
    body: String,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, serde_json::Value, Bytes)> {
    let base: Uri = base.parse().map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    let authority = base
        .authority()
        .ok_or_else(|| anyhow::anyhow!("{flag}: no host"))?
        .clone();
    let stream = TcpStream::connect(authority.as_str()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::post(path)
        .header("host", authority.as_str())
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body)))?;
    let resp = tokio::time::timeout(timeout, sender.send_request(req)).await??;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok((status, value, bytes))
}
