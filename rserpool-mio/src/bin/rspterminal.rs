//! `rspterminal`: standard input to a pool, the answers to standard output, failover
//! without losing a line. See `rserpool_mio::programs::terminal`.

use std::process::ExitCode;

fn main() -> ExitCode {
    rserpool_mio::programs::terminal::main_with(rserpool_mio::cli::parse_or_exit())
}
