//! What a node serves at `GET /.well-known/strata/health` (JSON): the wire type lives in
//! `strata-wire`, beside the probe that reads it.

pub use strata_wire::health::HealthReport;
