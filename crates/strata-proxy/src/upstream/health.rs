//! Active health checks: an HTTP probe per origin at an interval; results feed the origin's
//! circuit breaker alongside passive detection (failures of real requests).

use std::sync::Arc;
use std::time::Duration;

use strata_wire::clock::Clock;

use http::header::{HeaderValue, HOST, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::sync::watch;

use super::breaker::Verdict;
use super::origins::{OriginSet, OriginState};
use super::{Timeouts, UpstreamClient};

/// What a probe asks and expects.
#[derive(Debug, Clone)]
pub struct Probe {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub expected_status: StatusCode,
    /// `Host` to send; the origin's authority when absent.
    pub host: Option<String>,
}

/// Probes every origin of a set until `shutdown` flips.
pub async fn run(
    client: UpstreamClient,
    origins: Arc<OriginSet>,
    probe: Probe,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(probe.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                for origin in origins.all() {
                    let verdict = if check(&client, origin, &probe).await {
                        Verdict::Success
                    } else {
                        // A fixed path on every round: not one client's URL.
                        Verdict::ConnectFailure
                    };
                    origin.record(verdict, clock.mono());
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn check(client: &UpstreamClient, origin: &OriginState, probe: &Probe) -> bool {
    let host = probe
        .host
        .clone()
        .unwrap_or_else(|| origin.origin.authority.to_string());
    let Ok(uri) = origin.origin.uri_for(&host, &probe.path) else {
        return false;
    };
    let Ok(host) = HeaderValue::from_str(&host) else {
        return false;
    };
    let mut req = Request::new(
        Empty::new()
            .map_err(|never: std::convert::Infallible| match never {})
            .boxed(),
    );
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    req.headers_mut().insert(HOST, host);
    req.headers_mut()
        .insert(USER_AGENT, HeaderValue::from_static("strata-health-check"));
    let timeouts = Timeouts {
        first_byte: probe.timeout,
        idle: probe.timeout,
    };
    match client.send(&origin.origin, req, timeouts).await {
        Ok(resp) => {
            let ok = resp.status() == probe.expected_status;
            // Drain (bounded) so the connection can be reused.
            let _ = tokio::time::timeout(probe.timeout, resp.into_body().collect()).await;
            ok
        }
        Err(_) => false,
    }
}
