//! `trireme`: the Trireme command-line client (see `trireme --help`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(cli::main())
}
