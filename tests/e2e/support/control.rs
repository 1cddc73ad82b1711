//! A control plane on a test NATS server, and raw calls to its API.

use std::time::Duration;

use strata_bus::Bus;
use strata_control::config::NodeEntry;
use strata_control::{Control, ControlConfig};

use super::nats::NatsServer;

/// The token of [`purge_control`]'s API.
pub const TOKEN: &str = "test-token-0123456789";

/// A control plane on `nats` that tracks purge acks from `nodes` (no health probing).
pub async fn purge_control(nats: &NatsServer, nodes: &[&str]) -> Control {
    let config = ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.into()),
        tokens: Vec::new(),
        node_ttl: strata_proxy::config::Seconds(std::time::Duration::from_secs(30)),
        stream_replicas: 1,
        nats: nats.url.clone(),
        nats_auth: Default::default(),
        nodes: nodes
            .iter()
            .map(|n| NodeEntry::Name(n.to_string()))
            .collect(),
        health: Default::default(),
    };
    Control::start(
        &config,
        Bus::nats(&nats.url, &Default::default()).await.unwrap(),
    )
    .await
    .unwrap()
}

/// A control plane from a TOML file's text, on `nats`.
pub async fn control_from_toml(nats: &NatsServer, toml: &str) -> Control {
    let config = ControlConfig::from_toml(toml).unwrap();
    Control::start(
        &config,
        Bus::nats(&nats.url, &Default::default()).await.unwrap(),
    )
    .await
    .unwrap()
}

/// `POST /v1/purge` with [`TOKEN`].
pub async fn post_purge(control: &Control, json: &str) -> (u16, serde_json::Value) {
    call(control.addr, "POST", "/v1/purge", Some(TOKEN), json).await
}

/// `GET /v1/purge/{id}` with [`TOKEN`].
pub async fn purge_status(control: &Control, id: &str) -> (u16, serde_json::Value) {
    call(
        control.addr,
        "GET",
        &format!("/v1/purge/{id}"),
        Some(TOKEN),
        "",
    )
    .await
}

/// A raw HTTP/1.1 request to the control plane; returns (status, JSON).
pub async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: control\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or_default(),
    )
}
