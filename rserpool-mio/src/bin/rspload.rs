//! `rspload`: registrar load generator (`shared/design/rsplib-measured.md`, "Registrar under
//! ASAP load"); see `rserpool_mio::tools::rspload` for what it does and counts.
//!
//! ```text
//! rspload -registrar=ADDR[:PORT] [-transport=auto|sctp|tcp] [-pes=N] [-assocs=C]
//!         [-outstanding=W] [-poolhandle=NAME] [-policy=NAME[:ARGS]] [-duration=S]
//!         [-mode=resolve|keepalive-only] [-regrate=R] [-regwindow=N] [-registrarpid=PID]
//!         [-tls-cert=FILE -tls-key=FILE -tls-ca=FILE [-tls-name=NAME]]
//! ```
//!
//! With the TLS options every association to the registrar runs over TLS (TCP mapping only):
//! the registrar must run with the same CA and `-tls-asap`.
//!
//! Prints one figure per line, `NAME VALUE UNIT` (e.g. `resolutions_per_s 5345.0 1/s`),
//! then a summary in lines starting with `# `. Exit status 0 when the run completed (the
//! figures tell how well), 1 on bad options or when the sockets could not be opened.

use rserpool_mio::cli::{self, RspLoadOptions};
use rserpool_mio::programs::common::{library_mode, library_transport};
use rserpool_mio::tools::rspload::{self, LoadConfig};
use rserpool_mio::transport::{TransportConfig, raise_nofile_limit};
use std::io::Write;
use std::process::ExitCode;
use tracing::warn;

fn main() -> ExitCode {
    let opts: RspLoadOptions = cli::parse_or_exit();
    if let Err(e) = cli::init_logging(&opts.library.log) {
        eprintln!("rspload: {e}");
        return ExitCode::FAILURE;
    }
    let Some(registrar) = opts.library.registrars.first() else {
        eprintln!("rspload: -registrar=ADDRESS[:PORT] is required");
        return ExitCode::FAILURE;
    };
    let need = u64::from(opts.pes) + u64::from(opts.assocs) + 64;
    match raise_nofile_limit() {
        Ok(limit) if limit < need => {
            eprintln!(
                "rspload: {} PEs and {} associations need {need} file descriptors; the limit is {limit}",
                opts.pes, opts.assocs
            );
            return ExitCode::FAILURE;
        }
        Ok(_) => {}
        Err(e) => warn!("cannot raise the file descriptor limit: {e}"),
    }
    let mut cfg = LoadConfig::new(
        registrar.addrs().to_vec(),
        library_mode(&opts.library).resolve(),
    );
    cfg.transport = match library_transport(&opts.library) {
        Ok(t) => TransportConfig {
            tls: t.tls,
            ..cfg.transport
        },
        Err(e) => {
            eprintln!("rspload: {e}");
            return ExitCode::FAILURE;
        }
    };
    cfg.mode = opts.mode;
    cfg.pes = opts.pes;
    cfg.assocs = opts.assocs;
    cfg.outstanding = opts.outstanding;
    cfg.pool_handle = opts.pool_handle.clone();
    cfg.policy = opts.policy;
    cfg.duration = opts.duration;
    cfg.registration_rate = opts.registration_rate.per_second();
    cfg.registration_window = opts.registration_window;
    cfg.registrar_pid = opts.registrar_pid;
    let signals = match cli::TerminationSignals::new() {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("no signal handling: {e}");
            None
        }
    };
    match rspload::run(cfg, signals) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let text = report.figures() + &report.summary();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rspload: {e}");
            ExitCode::FAILURE
        }
    }
}
