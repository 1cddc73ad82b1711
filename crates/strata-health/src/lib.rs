//! Strata's health model, shared by the nodes that report it, the control plane's monitor
//! that judges it, the DNS router that steers by it and the anycast announcer that
//! announces by it. No IO: probes' results and the time are passed in, so tests (and a
//! simulator) drive the same code.
//!
//! - [`report`]: what a node serves at its health endpoint (counters, latency buckets,
//!   load, unreachable origins).
//! - [`latency`]: the fixed-bucket latency histogram behind the report, and quantiles of the
//!   difference between two reports.
//! - [`node`]: one node's state (healthy / degraded / unhealthy) from successive probes,
//!   with hysteresis: recovering takes better figures than failing.
//! - [`pop`]: a PoP's state from its nodes' states, and the snapshot published on the bus.
//! - [`damping`]: route-flap damping for anycast announcements (RFC 2439's penalty model).

pub mod damping;
pub mod latency;
pub mod node;
pub mod pop;
pub mod report;

pub use node::{NodeHealth, NodeState, Thresholds};
pub use pop::{HealthSnapshot, NodeView, PopHealth};
pub use report::HealthReport;
