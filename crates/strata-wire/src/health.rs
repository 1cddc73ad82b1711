//! The health endpoint every node serves, what it answers ([`HealthReport`]), and reading
//! it from another process ([`HealthProber`], feature `prober`): the control plane's monitor
//! and the anycast announcer. Ring peers and parents only look at the status (200).

use serde::{Deserialize, Serialize};

/// Answered by every node's HTTP listener; peers and parents are probed here.
pub const HEALTH_PATH: &str = "/.well-known/strata/health";

/// What a node serves at [`HEALTH_PATH`] (JSON), to the networks it lets read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthReport {
    pub node: String,
    pub pop: String,
    /// `edge` or `shield`.
    pub role: String,
    /// Client responses sent since the node started.
    pub responses: u64,
    /// Of those, responses with a 5xx status.
    pub responses_5xx: u64,
    /// Time to response head, per-bucket counts since start (the bounds are
    /// `strata_health::latency::bounds_us`, overflow bucket last).
    pub latency_buckets: Vec<u64>,
    /// Client requests being answered now.
    pub in_flight: u64,
    /// Services none of whose upstreams (parent shields or origins) take requests now.
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// The outcome of one probe.
#[derive(Debug, Clone)]
pub enum Probe {
    Answered(HealthReport),
    Failed(String),
}

/// The health endpoint of the node whose HTTP listener is `base` (`http://host:port`).
pub fn health_url(base: &str) -> Option<http::Uri> {
    format!("{}{HEALTH_PATH}", base.trim_end_matches('/'))
        .parse()
        .ok()
}

#[cfg(feature = "prober")]
pub use prober::HealthProber;

#[cfg(feature = "prober")]
mod prober {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, StatusCode, Uri};
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;

    use super::{HealthReport, Probe};

    /// Largest health report read.
    const MAX_REPORT: usize = 256 << 10;

    /// Reads nodes' health reports (the control plane's monitor, the anycast announcer).
    #[derive(Clone)]
    pub struct HealthProber {
        client: Client<HttpConnector, Empty<Bytes>>,
        timeout: Duration,
    }

    impl HealthProber {
        pub fn new(timeout: Duration) -> Self {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(timeout));
            connector.set_nodelay(true);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
            Self { client, timeout }
        }

        /// One probe: answered (200 and a readable report within the timeout) or failed, why.
        pub async fn probe(&self, url: Uri) -> Probe {
            let req = match Request::get(url).body(Empty::new()) {
                Ok(r) => r,
                Err(e) => return Probe::Failed(e.to_string()),
            };
            let answer = tokio::time::timeout(self.timeout, async {
                let resp = self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| format!("no answer: {e}"))?;
                if resp.status() != StatusCode::OK {
                    return Err(format!("answered {}", resp.status()));
                }
                let body = Limited::new(resp.into_body(), MAX_REPORT)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the report: {e}"))?
                    .to_bytes();
                if body.as_ref() == b"ok\n" {
                    // What a node tells addresses outside its `admin.health_allow`.
                    return Err(
                        "only liveness: the node's admin.health_allow does not list this address"
                            .into(),
                    );
                }
                serde_json::from_slice::<HealthReport>(&body)
                    .map_err(|e| format!("unreadable report: {e}"))
            })
            .await;
            match answer {
                Ok(Ok(report)) => Probe::Answered(report),
                Ok(Err(why)) => Probe::Failed(why),
                Err(_) => Probe::Failed(format!("no answer within {:?}", self.timeout)),
            }
        }
    }
}
