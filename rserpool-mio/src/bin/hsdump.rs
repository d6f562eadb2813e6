//! `hsdump`: prints a registrar's peer list and handlespace, asked over ENRP as RSPLIB's
//! `hsdump` does.
//!
//! ```text
//! hsdump ADDRESS[:PORT] [-transport=auto|sctp|tcp] [-timeout=MS] [-handlespaceonly]
//!        [-tls-cert=FILE -tls-key=FILE -tls-ca=FILE [-tls-name=NAME]]
//!        [-loglevel=N ...] [-cspserver=... -cspinterval=...]
//! ```
//!
//! Connects to the registrar's ENRP endpoint (port 9901: SCTP where the kernel has it, else
//! the TCP mapping), pretends to be a registrar with a random server id (PRESENCE,
//! LIST_REQUEST, HANDLE_TABLE_REQUEST, following M = 1 continuations) and prints the result
//! in a stable sorted form with the handlespace checksum and the per-home-registrar
//! checksums (see `rserpool_mio::tools::hsdump::Dump::render`). Exit status 0 on success,
//! 1 when the registrar cannot be reached, does not answer within `-timeout=`, or refuses.

use rserpool_core::Instant;
use rserpool_mio::cli::{self, HsDumpOptions, TransportChoice};
use rserpool_mio::driver::{
    AppControl, Application, CspConfig, CspReporter, CspStatus, Driver, DriverConfig, Step,
    component_location,
};
use rserpool_mio::programs::common::{tls_policy, transport_mode_tls};
use rserpool_mio::tools::hsdump::{Dump, HsDump, HsDumpConfig, HsDumpError, HsDumpEvent};
use rserpool_mio::tools::random_nonzero_u32;
use rserpool_mio::transport::{TransportConfig, TransportKind};
use rserpool_proto::csp::ComponentId;
use rserpool_proto::ids::ServerId;
use rserpool_proto::rtf::ChannelKind;
use rserpool_proto::transport::TransportProtocol;
use std::io::Write;
use std::process::ExitCode;
use tracing::info;

#[derive(Default)]
struct App {
    result: Option<Result<Dump, HsDumpError>>,
}

impl Application<HsDump> for App {
    fn on_step(&mut self, step: &mut Step<'_, HsDump>) -> AppControl {
        let events: Vec<HsDumpEvent> = step.events.drain(..).collect();
        for e in events {
            match e {
                HsDumpEvent::Connected(assoc) => {
                    let local = step.local_addrs(assoc);
                    let kind = step
                        .assocs
                        .get(assoc)
                        .map_or(TransportKind::Tcp, |i| i.kind);
                    let protocol = match kind {
                        TransportKind::Sctp => TransportProtocol::Sctp,
                        TransportKind::Tcp => TransportProtocol::Tcp,
                    };
                    info!("connected over {kind:?} from {local:?}");
                    step.machine.start(step.now, &local, protocol);
                }
                HsDumpEvent::Progress {
                    pools,
                    pes,
                    total_pes,
                    more,
                } => info!(
                    "Got {pools} pools, {pes} PEs => now having {total_pes} PEs{}",
                    if more { ", more to come" } else { "" }
                ),
                HsDumpEvent::Finished(d) => self.result = Some(Ok(d)),
                HsDumpEvent::Failed(e) => self.result = Some(Err(e)),
            }
        }
        if self.result.is_some() {
            AppControl::Exit
        } else {
            AppControl::Continue
        }
    }
}

fn main() -> ExitCode {
    let opts: HsDumpOptions = cli::parse_or_exit();
    if let Err(e) = cli::init_logging(&opts.log) {
        eprintln!("hsdump: {e}");
        return ExitCode::FAILURE;
    }
    let server_id = ServerId(random_nonzero_u32());
    // With the TLS options, ENRP to the registrar runs over TLS (TCP mapping only).
    let tls = match tls_policy(opts.transport, &opts.tls, ChannelKind::Enrp) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hsdump: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tcp = opts.transport == TransportChoice::Tcp || tls.is_some();
    let config = DriverConfig {
        mode: transport_mode_tls(opts.transport, &opts.tls),
        transport: TransportConfig {
            tls,
            ..TransportConfig::default()
        },
        signals: true,
        ..DriverConfig::default()
    };
    let hs_config = HsDumpConfig {
        registrar: opts.registrar.addrs().to_vec(),
        transport: if tcp {
            TransportProtocol::Tcp
        } else {
            TransportProtocol::Sctp
        },
        server_id,
        timeout: opts.timeout,
    };
    let mut driver = match Driver::new(config, |_, now: Instant| HsDump::new(now, hs_config)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("hsdump: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(target) = opts.csp.resolve_library(&cli::process_env) {
        let csp = CspConfig::from_target(
            target,
            ComponentId::pool_user(u64::from(server_id.0)),
            component_location(&[], false),
        );
        match CspReporter::new(csp) {
            Ok(r) => driver.enable_csp(r, |_, _, _| CspStatus::text("Dumping handlespace")),
            Err(e) => eprintln!("hsdump: CSP reporting disabled: {e}"),
        }
    }
    let mut app = App::default();
    if let Err(e) = driver.run_app(&mut app) {
        eprintln!("hsdump: {e}");
        return ExitCode::FAILURE;
    }
    match app.result {
        Some(Ok(dump)) => {
            let text = dump.render(opts.handlespace_only);
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("hsdump: {}: {e}", opts.registrar);
            ExitCode::FAILURE
        }
        None => {
            eprintln!("hsdump: interrupted");
            ExitCode::FAILURE
        }
    }
}
