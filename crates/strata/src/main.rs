//! `strata`: one binary for every role. Wiring only; behaviour lives in the crates.

mod cli;
mod demo;
mod post;
mod purge_cli;
mod sign_cli;

use std::process::ExitCode;

/// jemalloc, with background threads returning freed memory to the system: a purge
/// shrinks the process, and fragmentation under cache churn stays small (measured in
/// bench/README.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start. Freed pages go back to the system after a
/// second instead of ten (a cache evicts all the time: ten seconds of it is a lot of
/// memory), and without the intermediate "muzzy" stage. `STRATA_LOG`-style overrides:
/// `_RJEM_MALLOC_CONF`.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    cli::run()
}
