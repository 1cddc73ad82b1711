//! End-to-end tests: real origin servers and the real proxy on 127.0.0.1:0, over sockets.
//! Protocol tests are named after the RFC section whose rule they check.

mod support;

mod access;
mod acme;
mod anycast;
mod cli;
mod clock;
mod cluster_purge;
mod coalescing;
mod compression;
mod compute;
mod control;
mod deploy;
mod disk_cache;
mod dns;
mod early_hints;
mod experiments;
mod headers;
mod health;
mod hostile;
mod limits;
mod media;
mod operations;
mod origins;
mod purge;
mod rfc9111_freshness;
mod rfc9111_storing;
mod rfc9111_validation;
mod slicing;
mod streaming;
mod tls;
mod topology;
