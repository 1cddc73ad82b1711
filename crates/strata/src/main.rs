//! `strata`: one binary for every role. Wiring only; behaviour lives in the crates.

mod cli;
mod demo;
mod purge_cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
