//! `pingpongclient`: RSPLIB's client of the same name. See `rserpool_mio::programs::services::pingpong`.

use std::process::ExitCode;

fn main() -> ExitCode {
    rserpool_mio::programs::services::pingpong::main_with(rserpool_mio::cli::parse_or_exit())
}
