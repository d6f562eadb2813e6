//! `rspserver`: a pool element ([`PoolElementSessions`]) on the mio [`Driver`] serving one of
//! RSPLIB's example services.
//!
//! * Services (the machines of [`rserpool_core::services`], one per session; CalcApp one for
//!   all): `-echo` (default), `-discard`, `-daytime`, `-chargen` (RSPLIB's own `-chargen`
//!   cannot start, `services.md` §2.4; this one works), `-pingpong`, `-fractal`,
//!   `-scripting`, `-calcapp`; at most `-chargenmaxthreads=` / `-pppmaxthreads=` /
//!   `-fgpmaxthreads=` / `-ssmaxthreads=` sessions (more are accepted and closed at once, as
//!   RSPLIB's TCP-like server does). The application that drives them is
//!   [`super::services::pe::ServiceServer`]; this module sets up the driver and runs it.
//! * The host gives each session machine its events: `Up` when a pool user connects, the
//!   data and the cookie echo (at once, not with the next data message as RSPLIB does),
//!   `Blocked` when a send had to wait in the driver's overflow queue and `Writable` when it
//!   has drained, `PeerClosed`, and `ServerShutdown` at the end; it runs their timers and
//!   re-registers with the summed load of adaptive policies when it changed by 1 % or more.
//! * **Session listener** on `-local=` (default: every address, ephemeral port), over kernel
//!   SCTP where `-transport=` resolves to it, else the TCP mapping. Over the TCP mapping the
//!   same port accepts channel kind 4 (sessions from pool users) and kind 2 (a registrar that
//!   took the PE over sends its keep-alives there, `tcp-mapping.md` §3.7); the driver tells
//!   which is which ([`Driver::route_accepted`]).
//! * **Registration** with `-poolhandle=`, `-policy=`, `-identifier=`, `-rereginterval=`
//!   (registration life 3 ×) at the registrars of `-registrar=`, or found by announces.
//!   As in RSPLIB a failed first registration ends the program (exit code 1), unless it runs
//!   as a daemon (`-daemonpidfile=`).
//! * **Shutdown** on SIGINT/SIGTERM or after `-runtime=` ms: the sessions are closed, the PE
//!   deregisters (waiting at most [`SHUTDOWN_GRACE`] for the answer), the program exits 0.
//!   `-uptime=`/`-downtime=` repeat this with exponentially distributed times (failure tests).
//! * CSP reports with `-cspserver=`/`-cspinterval=` (`"N Sessions"`).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::handlespace::Limits;
use rserpool_core::pool_element::PoolElementConfig;
use rserpool_core::registrar::AddressScope;
use rserpool_core::session::PoolElementSessions;
use rserpool_core::{ChannelKind, Instant, Protocol};
use rserpool_proto::csp::{ComponentId, CspProtocol, Workload, session_status_text};
use rserpool_proto::ids::PeIdentifier;
use rserpool_proto::rtf::ChannelKinds;
use tracing::info;

use super::common::{
    TerminationFlag, add_udp_or_warn, announce_receiver, exponential, init_logging_or_exit,
    library_mode, library_transport, os_rng, registrar_table_config,
};
use super::daemon;
use super::registrar::{advertised_transport, default_wildcard};
use super::services::host_clock;
use super::services::pe::{CalcAppPe, ServiceServer, SessionFactory, Sessions, calcapp_config};
use super::services::scripting_host::ScriptingEnvironment;
use crate::cli::{RspServerOptions, Service, process_env};
use crate::driver::assoc::channel_to_rtf;
use crate::driver::csp::interface_addresses;
use crate::driver::{
    AssocTable, CspConfig, CspReporter, CspStatus, Driver, DriverConfig, Exit, ListenerConfig,
    component_location,
};
use crate::transport::TransportKind;

/// How long the shutdown waits for the deregistration's answer.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The pool element machine of `rspserver`.
pub type ServerMachine = PoolElementSessions<Xoshiro256PlusPlus>;

/// The session listener: `-local=` or every address with an ephemeral port; channel kinds
/// Session and registrar-to-PE.
pub fn listener_config(opts: &RspServerOptions, kind: TransportKind) -> ListenerConfig {
    let addrs = match &opts.local {
        Some(l) => l.addrs().to_vec(),
        None => vec![SocketAddr::new(default_wildcard(false), 0)],
    };
    let channels = ChannelKinds::NONE
        .with(channel_to_rtf(ChannelKind::Session))
        .with(channel_to_rtf(ChannelKind::AsapToPoolElement));
    ListenerConfig::new(addrs, channels).with_kind(kind)
}

/// Over SCTP, the PE's ASAP endpoint: the session listener's addresses with an ephemeral
/// port, accepting registrar associations (takeover keep-alives with the H bit); the
/// associations to registrars leave from it, so that the ASAP transport registrars record
/// for the PE (the source of its registration) reaches it (`asap.md` §5.5, RSPLIB's PEs
/// use one one-to-many socket for both). `None` over the TCP mapping, where a registrar
/// reaches the PE at its user port instead.
pub fn asap_listener_config(
    session: &ListenerConfig,
    kind: TransportKind,
) -> Option<ListenerConfig> {
    (kind == TransportKind::Sctp).then(|| {
        let addrs = session
            .addrs
            .iter()
            .map(|a| SocketAddr::new(a.ip(), 0))
            .collect();
        ListenerConfig::new(addrs, channel_to_rtf(ChannelKind::AsapToPoolElement))
            .with_kind(kind)
            .source_for(ChannelKind::AsapToRegistrar)
    })
}

/// The pool element configuration for a bound session listener.
pub fn pe_config(
    opts: &RspServerOptions,
    kind: TransportKind,
    local: &[SocketAddr],
) -> PoolElementConfig {
    let lib = &opts.library;
    let mut user = advertised_transport(kind, local, AddressScope::Loopback, interface_addresses);
    user.addresses.truncate(Limits::default().addresses());
    user.transport_use = rserpool_proto::transport::TRANSPORT_USE_DATA_PLUS_CONTROL;
    PoolElementConfig {
        pool_handle: opts.pool_handle(),
        pe_id: opts.pe_identifier(),
        policy: opts.policy(),
        user_transport: user,
        asap_transport: None,
        reregistration_interval: opts.rereg_interval,
        registration_life: None,
        registrar_table: registrar_table_config(lib, library_mode(lib)),
        request_timeout: lib.registrar_response_timeout,
        request_max_trials: lib.registrar_request_max_trials,
    }
}

/// Counters of a server run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Sessions opened by pool users.
    pub sessions: u64,
    /// Data messages received.
    pub received: u64,
    /// Data messages sent.
    pub sent: u64,
}

/// How a server life ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEnd {
    /// Signal, runtime limit or up time: deregistered (or tried to).
    Stopped,
    /// The first registration failed (fatal outside daemon mode).
    RegistrationFailed(String),
}

fn csp_status(m: &ServerMachine, assocs: &AssocTable, now: Instant) -> CspStatus {
    let pe = m.element();
    let mut associations = Vec::new();
    if let Some(home) = pe.home_registrar()
        && let Some(info) = assocs.get(home.assoc)
    {
        let mut e = info.csp_entry(
            ComponentId::registrar(home.server_id.unwrap_or_default()),
            Protocol::PPID_ASAP,
            now,
        );
        if info.kind == TransportKind::Tcp {
            e.protocol = CspProtocol::Tcp;
        }
        associations.push(e);
    }
    CspStatus {
        status: session_status_text(u32::try_from(m.session_count()).unwrap_or(u32::MAX)),
        workload: Workload::UNKNOWN,
        associations,
    }
}

/// `println!` that ignores a closed standard output.
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(io::stdout().lock(), $($t)*);
    }};
}

fn print_banner(
    opts: &RspServerOptions,
    pe_id: PeIdentifier,
    local: &[SocketAddr],
    kind: TransportKind,
) {
    let addrs: Vec<String> = local.iter().map(ToString::to_string).collect();
    out!("RSerPool Server - rserpool {}", env!("CARGO_PKG_VERSION"));
    out!("Service               = {:?}", opts.service());
    out!(
        "Pool Handle           = {}",
        String::from_utf8_lossy(opts.pool_handle().as_bytes())
    );
    out!("PE Identifier         = ${:08x}", pe_id.0);
    out!(
        "Local Address         = {} {}",
        match kind {
            TransportKind::Sctp => "sctp",
            TransportKind::Tcp => "tcp",
        },
        addrs.join(",")
    );
    out!("Policy                = {:?}", opts.policy());
    let _ = io::stdout().flush();
}

/// The driver of a pool element with `rspserver`'s options: its session listener (and, over
/// SCTP, its ASAP endpoint for registrars), the PE machine, registrar associations routed to
/// it, registrar announces. Returns the driver, the session listener's local addresses and the
/// transport kind in use. The PE configuration is validated before any socket opens.
pub fn pe_driver(
    opts: &RspServerOptions,
) -> io::Result<(Driver<ServerMachine>, Vec<SocketAddr>, TransportKind)> {
    let lib = &opts.library;
    let mode = library_mode(lib);
    let tkind = mode.resolve();
    let listener = listener_config(opts, tkind);
    let asap_listener = asap_listener_config(&listener, tkind);
    let dcfg = DriverConfig {
        listeners: std::iter::once(listener).chain(asap_listener).collect(),
        mode,
        transport: library_transport(lib)?,
        signals: true,
        shutdown_grace: SHUTDOWN_GRACE,
        ..DriverConfig::default()
    };
    // Everything but the listener's port and addresses is checked before the sockets open.
    let probe = pe_config(opts, tkind, &[SocketAddr::from(([127, 0, 0, 1], 1))]);
    PoolElementSessions::new(probe, os_rng())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
    let mut local = Vec::new();
    let mut driver = Driver::new(dcfg, |bound, _| {
        local = bound
            .listeners
            .first()
            .map(|l| l.local_addrs.clone())
            .unwrap_or_default();
        PoolElementSessions::new(pe_config(opts, tkind, &local), os_rng())
            .expect("validated before the driver was made: only port and addresses differ")
    })?;
    driver.route_accepted(|m: &mut ServerMachine, now, id, info, peer_addrs| {
        if info.channel == Some(ChannelKind::AsapToPoolElement) {
            m.handle_registrar_assoc_up(now, id, peer_addrs);
        } else {
            rserpool_core::Machine::handle_assoc_up(m, now, id, peer_addrs);
        }
    });
    if let Some(u) = announce_receiver(lib) {
        add_udp_or_warn(&mut driver, &u, "registrar announces");
    }
    Ok((driver, local, tkind))
}

/// One life of the server (the environment of Scripting outlives it).
fn run_once(
    opts: &RspServerOptions,
    scripting: Option<&Arc<ScriptingEnvironment>>,
    stop_after: Option<Duration>,
    banner: bool,
    term: Option<&TerminationFlag>,
) -> io::Result<(Exit, ServiceServer)> {
    let lib = &opts.library;
    let (mut driver, local, tkind) = pe_driver(opts)?;
    let pe_id = driver.machine().element().pe_id();
    if banner {
        print_banner(opts, pe_id, &local, tkind);
    }
    if let Some(target) = lib.csp.resolve_library(&process_env) {
        let object = lib.csp_identifier.map_or(u64::from(pe_id.0), u64::from);
        let reporter = CspReporter::new(CspConfig::from_target(
            target,
            ComponentId::new(rserpool_proto::csp::ComponentGroup::PoolElement, object),
            component_location(&local, true),
        ))?;
        driver.enable_csp(reporter, csp_status);
    }
    let now = driver.now();
    let sessions_of = if opts.service() == Service::CalcApp {
        let c = &opts.calcapp;
        let pe = CalcAppPe::new(
            calcapp_config(opts),
            now,
            c.object_name.clone(),
            &c.vector_file,
            c.scalar_file.clone(),
            host_clock(),
            pe_id.0,
        );
        Sessions::CalcApp(Box::new(pe))
    } else {
        Sessions::PerSession(SessionFactory::new(opts, host_clock(), scripting)?)
    };
    let stop_at = stop_after.map(|d| now + d);
    let mut server = ServiceServer::new(
        sessions_of,
        opts.policy().is_adaptive(),
        daemon::is_daemon_child(),
        stop_at,
    );
    // A signal that came before the driver caught signals: this life does not start (no
    // PE registered yet, nothing to deregister).
    if term.is_some_and(TerminationFlag::is_set) {
        return Ok((Exit::Stopped, server));
    }
    let exit = driver.run_app(&mut server)?;
    Ok((exit, server))
}

/// `rspserver` with parsed options.
pub fn main_with(opts: RspServerOptions) -> ExitCode {
    if let Some(code) = daemon::detach_if_asked("rspserver", opts.daemon_pid_file.as_deref()) {
        return code;
    }
    init_logging_or_exit("rspserver", &opts.library.log);
    let scripting = if opts.service() == Service::Scripting {
        match ScriptingEnvironment::new(&opts.scripting) {
            Ok(e) => Some(Arc::new(e)),
            Err(e) => return super::common::fail("rspserver", &e),
        }
    } else {
        None
    };
    let mut rng = os_rng();
    let failure_test = !opts.uptime.is_zero();
    let mut banner = !opts.quiet;
    // Failure-test mode: signals between two lives must end the program too.
    let term = if failure_test {
        match TerminationFlag::install() {
            Ok(t) => Some(t),
            Err(e) => return super::common::fail("rspserver", &e),
        }
    } else {
        None
    };
    loop {
        let up = if failure_test {
            Some(exponential(&mut rng, opts.uptime))
        } else {
            opts.runtime_limit()
        };
        match run_once(&opts, scripting.as_ref(), up, banner, term.as_ref()) {
            Ok((_, server)) => {
                if let Some(ServerEnd::RegistrationFailed(why)) = server.end() {
                    return super::common::fail(
                        "rspserver",
                        &format!("registration failed: {why}"),
                    );
                }
                let s = server.stats();
                info!(
                    "{} session(s), {} message(s) received, {} sent",
                    s.sessions, s.received, s.sent
                );
                if !failure_test || server.signalled() || term.as_ref().is_some_and(|t| t.is_set())
                {
                    return ExitCode::SUCCESS;
                }
                let down = exponential(&mut rng, opts.downtime);
                info!("failure-test mode: down for {:.3} s", down.as_secs_f64());
                if term.as_ref().is_some_and(|t| t.sleep(down)) {
                    info!("failure-test mode: terminated while down");
                    return ExitCode::SUCCESS;
                }
                banner = false;
            }
            Err(e) => return super::common::fail("rspserver", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::argv::try_parse_from;
    use bytes::Bytes;
    use rserpool_core::services::{ServiceOutput, ServiceSession, SessionEvent, WallClock};

    fn parse(args: &[&str]) -> RspServerOptions {
        try_parse_from(std::iter::once("rspserver").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn services_and_their_session_limits() {
        let clock = WallClock::default();
        let f = SessionFactory::new(&parse(&[]), clock, None).unwrap();
        assert!(matches!(f, SessionFactory::Echo));
        assert_eq!(f.max_sessions(), None);
        let mut s = f.open().unwrap();
        s.handle_data(Instant::ZERO, 7, 0, Bytes::from_static(b"x"));
        assert!(matches!(
            s.poll_output(),
            Some(ServiceOutput::Send { ppid: 7, .. })
        ));
        let f = SessionFactory::new(&parse(&["-chargen", "-chargenmaxthreads=2"]), clock, None)
            .unwrap();
        assert_eq!(f.max_sessions(), Some(2));
        let mut s = f.open().unwrap();
        s.handle_event(Instant::ZERO, SessionEvent::Up);
        assert!(matches!(
            s.poll_output(),
            Some(ServiceOutput::Send { ppid: 0, .. })
        ));
        let f =
            SessionFactory::new(&parse(&["-pingpong", "-pppmaxthreads=3"]), clock, None).unwrap();
        assert_eq!(f.max_sessions(), Some(3));
        let f = SessionFactory::new(&parse(&["-fractal", "-fgpmaxthreads=0"]), clock, None);
        assert_eq!(f.unwrap().max_sessions(), Some(1));
        assert!(SessionFactory::new(&parse(&["-calcapp"]), clock, None).is_err());
        // Scripting needs its environment (made once per program).
        assert!(SessionFactory::new(&parse(&["-scripting"]), clock, None).is_err());
    }

    #[test]
    fn the_listener_takes_sessions_and_registrar_channels() {
        let o = parse(&["-local=127.0.0.1:5000"]);
        let l = listener_config(&o, TransportKind::Tcp);
        assert_eq!(l.addrs, vec!["127.0.0.1:5000".parse().unwrap()]);
        assert!(
            l.channels
                .contains(rserpool_proto::rtf::ChannelKind::Session)
        );
        assert!(
            l.channels
                .contains(rserpool_proto::rtf::ChannelKind::AsapFromRegistrar)
        );
        assert!(!l.channels.contains(rserpool_proto::rtf::ChannelKind::Enrp));
        let c = pe_config(&o, TransportKind::Tcp, &["127.0.0.1:5000".parse().unwrap()]);
        assert_eq!(c.user_transport.port, 5000);
        assert_eq!(
            c.user_transport.protocol,
            rserpool_proto::transport::TransportProtocol::Tcp
        );
        assert!(c.user_transport.has_control_channel());
        assert_eq!(c.reregistration_interval, Duration::from_secs(30));
    }
}
