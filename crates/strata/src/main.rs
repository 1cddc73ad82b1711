//! `strata`: one binary for every role. Wiring only; behaviour lives in the crates.

mod cli;
mod demo;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
