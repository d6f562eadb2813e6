//! `fractalpooluser`: RSPLIB's client of the same name. See `rserpool_mio::programs::services::fractal`.

use std::process::ExitCode;

fn main() -> ExitCode {
    rserpool_mio::programs::services::fractal::main_with(rserpool_mio::cli::parse_or_exit())
}
