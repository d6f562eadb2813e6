//! `rspregistrar`: the RSerPool pool registrar (ASAP server, ENRP server), with RSPLIB's
//! options. See `rserpool_mio::programs::registrar`.

use rserpool_mio::transport::sctp::sys::PrefaultingAllocator;
use std::process::ExitCode;

/// Maps fresh memory in bulk while the start-up download of the mentor's handlespace runs.
#[global_allocator]
static ALLOC: PrefaultingAllocator = PrefaultingAllocator;

fn main() -> ExitCode {
    rserpool_mio::programs::registrar::main_with(rserpool_mio::cli::parse_or_exit())
}
