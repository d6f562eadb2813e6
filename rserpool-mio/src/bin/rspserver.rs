//! `rspserver`: a pool element serving RSPLIB's example services (echo, discard, daytime,
//! chargen). See `rserpool_mio::programs::server`.

use std::process::ExitCode;

fn main() -> ExitCode {
    rserpool_mio::programs::server::main_with(rserpool_mio::cli::parse_or_exit())
}
