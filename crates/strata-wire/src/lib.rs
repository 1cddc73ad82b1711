//! What Strata's roles share, below all of them: configuration parsing and units, the purge
//! and health wire types, and (feature `prober`) the health probe. No role's logic lives
//! here; the node (`strata-proxy`), the control plane (`strata-control`) and the router
//! (`strata-router`) each depend on this rather than on one another.
//!
//! - [`clock`]: where time comes from (the system, or a manual clock for tests);
//! - [`config`]: TOML with key-path errors, durations and sizes;
//! - [`purge`]: the purge request, event, ack and report, and the request's syntax check;
//! - [`health`]: the health path and report, and reading it from another process.

pub mod clock;
pub mod config;
pub mod health;
pub mod purge;
