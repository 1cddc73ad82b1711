//! Request routing: getting each user to a nearby, healthy PoP.
//!
//! - [`config`]: the router's TOML (zone, PoPs, locations with their prefixes and latency
//!   to each PoP) and the anycast announcer's.
//! - [`geo`]: the prefix → location table (longest match) and the ECS scope it allows.
//! - [`steer`]: the choice of PoP for a location: nearest healthy, per-PoP weights for
//!   gradual migration, fail-open when everything is down. No IO.
//! - [`zone`]: authoritative answers for the CDN zone (A/AAAA, SOA, NS, NXDOMAIN, NODATA,
//!   REFUSED, FORMERR) from a decoded question. No IO; fuzzed.
//! - [`server`]: the DNS server on hickory (UDP and TCP), fed by the health monitor's
//!   snapshots from the bus.
//! - [`anycast`]: announces the PoP's anycast prefixes to ExaBGP while the node is healthy,
//!   withdraws them before it fails, with route-flap damping.

pub mod anycast;
pub mod config;
pub mod geo;
pub mod server;
pub mod steer;
pub mod zone;

pub use config::RouterConfig;
pub use server::Router;
