//! What a node serves at `GET /.well-known/strata/health` (JSON). Ring peers and parents
//! only look at the status (200); the control plane's monitor reads the body.

use serde::{Deserialize, Serialize};

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
    /// Time to response head, per-bucket counts since start
    /// ([`crate::latency::bounds_us`], overflow bucket last).
    pub latency_buckets: Vec<u64>,
    /// Client requests being answered now.
    pub in_flight: u64,
    /// Services none of whose upstreams (parent shields or origins) take requests now.
    #[serde(default)]
    pub unreachable: Vec<String>,
}
