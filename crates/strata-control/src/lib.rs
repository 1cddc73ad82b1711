//! The control plane: accepts purges over an authenticated API, publishes them on the bus,
//! and tracks every node's acknowledgement.
//!
//! - `POST /v1/purge` (bearer token): the node API's JSON body plus optional `wait`
//!   (seconds). Returns the purge id and, per node, applied (with the time from accept to
//!   ack) or pending. With `wait`, answers when every node acked (200) or the wait ended
//!   (202, pending nodes named). Bad input: 400 with the reason, nothing published.
//! - `GET /v1/purge/{id}` (bearer token): the same report, now.
//! - `GET /v1/health` (bearer token): the health monitor's latest snapshot: every PoP's
//!   state (healthy / degraded / unhealthy), since when, and each node's state, reason and
//!   figures. The same snapshot is published on the bus after every probe round.
//! - `GET /metrics` (bearer token): OpenMetrics text (PoP and node states, state changes,
//!   probes).

pub mod config;
pub mod health;
pub mod records;
pub mod tokens;

use tokens::Scope;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde::Serialize;
use strata_bus::Bus;
use strata_wire::purge::{PurgeAck, PurgeEvent, PurgeRequest};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

pub use config::ControlConfig;
/// One node's view of one purge.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeStatus {
    pub node: String,
    /// `applied` or `pending`.
    pub status: &'static str,
    /// Accept → ack, milliseconds (applied only).
    pub ms: Option<f64>,
    pub objects: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PurgeStatus {
    pub id: String,
    pub seq: u64,
    pub complete: bool,
    pub nodes: Vec<NodeStatus>,
}

struct State {
    tokens: tokens::Tokens,
    /// The nodes of the configuration file.
    configured: Vec<String>,
    bus: Bus,
    health: health::Latest,
    registry: Mutex<Registry>,
    records: records::Records,
    acked: Notify,
}

impl State {
    /// The configured nodes, then those in the registry now (without repeats).
    async fn expected(&self) -> Vec<String> {
        let mut nodes = self.configured.clone();
        match self.bus.announced().await {
            Ok(announced) => {
                for (name, _) in announced {
                    if !nodes.contains(&name) {
                        nodes.push(name);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "node registry unreadable; waiting for the configured nodes only")
            }
        }
        nodes
    }
}

/// A running control plane.
pub struct Control {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Control {
    pub async fn start(config: &ControlConfig, bus: Bus) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        let addr = listener.local_addr()?;
        let mut registry = Registry::with_prefix("strata");
        let health_metrics = health::HealthMetrics::default();
        health_metrics.register(&mut registry);
        let health_latest = health::Latest::default();
        let monitor = health::Monitor::new(
            &config.nodes,
            config.health.clone(),
            health_metrics,
            health_latest.clone(),
            bus.clone(),
        );
        bus.provision(config.node_ttl.0, config.stream_replicas)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let state = Arc::new(State {
            tokens: tokens::Tokens::from_config(config.token.as_deref(), &config.tokens)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            configured: config.nodes.iter().map(|n| n.name().to_string()).collect(),
            bus: bus.clone(),
            health: health_latest.clone(),
            registry: Mutex::new(registry),
            records: records::Records::new(bus.clone()),
            acked: Notify::new(),
        });
        let handle_state = Arc::clone(&state);
        let mut acks = bus
            .ack_reader()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let (shutdown, mut rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(monitor.run(rx.clone()));
        let s = Arc::clone(&state);
        let mut stop = rx.clone();
        tasks.spawn(async move {
            loop {
                let next = tokio::select! { a = acks.next() => a, _ = stop.changed() => return };
                let Some((node, bytes)) = next else {
                    tracing::error!(
                        "the acknowledgement reader ended: purge reports stop here until a restart"
                    );
                    return;
                };
                // Nodes send their acks in batches (a JSON array).
                let Ok(batch) = serde_json::from_slice::<Vec<PurgeAck>>(&bytes) else {
                    continue;
                };
                s.records.apply(&node, batch, records::now_us()).await;
                s.acked.notify_waiters();
            }
        });
        // Changed records reach the bus within a quarter second, and once more at shutdown.
        let s = Arc::clone(&state);
        let mut stop = rx.clone();
        tasks.spawn(async move {
            // Memory is pruned every 40th round (10 s): a walk over every record kept.
            for round in 1u64.. {
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => false,
                    _ = stop.changed() => true,
                };
                s.records.flush().await;
                if stopping {
                    return;
                }
                if round.is_multiple_of(40) {
                    s.records.prune(records::now_us());
                }
            }
        });
        tasks.spawn(async move {
            loop {
                let accepted =
                    tokio::select! { a = listener.accept() => a, _ = rx.changed() => return };
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(Arc::clone(&state), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state: handle_state,
            shutdown,
            tasks,
        })
    }

    /// The health monitor's latest snapshot.
    pub fn health(&self) -> strata_health::HealthSnapshot {
        self.state.health.get()
    }

    /// The current report for a purge.
    pub async fn status(&self, id: &str) -> Option<PurgeStatus> {
        self.state.records.report(id).await.ok().flatten()
    }

    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let text = serde_json::to_string(body).unwrap_or_default() + "\n";
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, why: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": why.into() }))
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let caller = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| state.tokens.authenticate(t));
    let Some(caller) = caller else {
        let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return Ok(r);
    };
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    // A route not listed here needs a token with every scope: a new endpoint is closed
    // until it says what it needs.
    let needs: &[Scope] = match (&method, path.as_str()) {
        (&Method::POST, "/v1/purge") => &[Scope::Purge],
        (&Method::GET, p) if p.starts_with("/v1/purge/") => &[Scope::Purge, Scope::Read],
        (&Method::GET, "/v1/health" | "/v1/nodes" | "/metrics") => &[Scope::Read],
        _ => &[],
    };
    let allowed = if needs.is_empty() {
        caller.may_all()
    } else {
        needs.iter().any(|s| caller.may(*s))
    };
    if !allowed {
        return Ok(error(
            StatusCode::FORBIDDEN,
            format!("the token '{}' may not do this ({needs:?})", caller.name),
        ));
    }
    Ok(match (method, path.as_str()) {
        (Method::POST, "/v1/purge") => {
            tracing::info!(token = caller.name, "purge requested");
            post_purge(&state, req).await
        }
        (Method::GET, "/v1/health") => json(StatusCode::OK, &state.health.get()),
        (Method::GET, "/v1/nodes") => {
            let announced: Vec<serde_json::Value> = match state.bus.announced().await {
                Ok(nodes) => nodes
                    .iter()
                    .map(|(name, payload)| {
                        serde_json::from_slice(payload)
                            .unwrap_or_else(|_| serde_json::json!({ "name": name }))
                    })
                    .collect(),
                Err(e) => return Ok(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
            };
            json(
                StatusCode::OK,
                &serde_json::json!({ "configured": state.configured, "announced": announced }),
            )
        }
        (Method::GET, "/metrics") => {
            let mut text = String::new();
            let registry = state.registry.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
                return Ok(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
            }
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (Method::GET, p) if p.starts_with("/v1/purge/") => {
            let id = &p["/v1/purge/".len()..];
            // Ids are hexadecimal; anything else is no purge (and no key to ask the bus for).
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(error(StatusCode::NOT_FOUND, "no such purge"));
            }
            match state.records.report(id).await {
                Ok(Some(s)) => json(StatusCode::OK, &s),
                Ok(None) => error(StatusCode::NOT_FOUND, "no such purge"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    })
}

async fn post_purge(state: &Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request: PurgeRequest = match strata_wire::purge::read_request(req.into_body()).await {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if let Err(why) = request.check() {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!("{:x}", now.as_nanos());
    let wait = request.wait.map(Duration::from_secs_f64);
    let event = PurgeEvent {
        id: id.clone(),
        // Rounded up: an object stored earlier in the same millisecond must not escape
        // ("stored before issued_at"); one stored just after is only refetched.
        issued_at_ms: now.as_millis() as u64 + 1,
        request: PurgeRequest {
            wait: None,
            ..request
        },
    };
    let payload = match serde_json::to_vec(&event) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // Registered before publishing, so no ack can arrive for an unknown id.
    let expected = state.expected().await;
    let accepted_us = now.as_micros() as u64;
    state
        .records
        .insert(&id, records::Record::new(accepted_us, expected));
    match state.bus.publish_purge(&id, Bytes::from(payload)).await {
        Ok(seq) => state.records.set_seq(&id, seq),
        Err(e) => {
            state.records.remove(&id);
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
    }
    tracing::info!(%id, "purge published");
    if let Some(wait) = wait {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = state.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if state
                .records
                .report_in_memory(&id)
                .is_some_and(|s| s.complete)
            {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }
    match state.records.report_in_memory(&id) {
        Some(s) if s.complete => json(StatusCode::OK, &s),
        Some(s) => json(StatusCode::ACCEPTED, &s),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "purge record lost"),
    }
}
