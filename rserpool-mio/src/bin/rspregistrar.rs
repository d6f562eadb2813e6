//! `rspregistrar`: the RSerPool pool registrar (ASAP server, ENRP server), with RSPLIB's
//! options. See `rserpool_mio::programs::registrar`.

use std::process::ExitCode;

fn main() -> ExitCode {
    rserpool_mio::programs::registrar::main_with(rserpool_mio::cli::parse_or_exit())
}
