//! `rspserver`: a pool element ([`PoolElementSessions`]) on the mio [`Driver`] serving one of
//! RSPLIB's example services.
//!
//! * Services: `-echo` (default), `-discard`, `-daytime`, `-chargen` (RSPLIB's own
//!   `-chargen` cannot start, `services.md` §2.4; this one works, at most
//!   `-chargenmaxthreads=` sessions). The other services of [`Service`] are refused with an
//!   error (not available in this program yet).
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

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::Rng;
use rserpool_core::handlespace::Limits;
use rserpool_core::pool_element::{PoolElementConfig, PoolElementEvent, RegistrationFailure};
use rserpool_core::registrar::AddressScope;
use rserpool_core::session::{PeSessionEvent, PoolElementSessions};
use rserpool_core::{AssocId, ChannelKind, Instant, Protocol};
use rserpool_proto::csp::{ComponentId, CspProtocol, Workload, session_status_text};
use rserpool_proto::ids::PeIdentifier;
use rserpool_proto::rtf::ChannelKinds;
use tracing::{debug, info, warn};

use super::common::{
    add_udp_or_warn, announce_receiver, init_logging_or_exit, os_rng, registrar_table_config,
    transport_mode,
};
use super::daemon;
use super::registrar::{advertised_transport, default_wildcard};
use super::simple::{Action, SimpleKind, SimpleSession, WallClock};
use crate::cli::{RspServerOptions, Service, process_env};
use crate::driver::assoc::channel_to_rtf;
use crate::driver::csp::interface_addresses;
use crate::driver::{
    AppControl, Application, AssocTable, CspConfig, CspReporter, CspStatus, Driver, DriverConfig,
    Exit, ListenerConfig, Step, component_location,
};
use crate::transport::TransportKind;

/// How long the shutdown waits for the deregistration's answer.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The pool element machine of `rspserver`.
pub type ServerMachine = PoolElementSessions<Xoshiro256PlusPlus>;

/// The simple service for a `-service` switch, if this program offers it.
pub fn simple_kind(s: Service) -> Option<SimpleKind> {
    match s {
        Service::Echo => Some(SimpleKind::Echo),
        Service::Discard => Some(SimpleKind::Discard),
        Service::Daytime => Some(SimpleKind::Daytime),
        Service::CharGen => Some(SimpleKind::CharGen),
        Service::PingPong | Service::Fractal | Service::CalcApp | Service::Scripting => None,
    }
}

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
        registrar_table: registrar_table_config(lib, transport_mode(lib.transport)),
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

struct Active {
    service: SimpleSession,
    /// The Character Generator waits for the backlog to drain.
    blocked: bool,
}

/// The `rspserver` application: the service sessions around the pool element.
pub struct Server {
    kind: SimpleKind,
    max_sessions: Option<usize>,
    clock: WallClock,
    daemon: bool,
    stop_at: Option<Instant>,
    started: bool,
    signalled: bool,
    ever_registered: bool,
    deregistered: bool,
    end: Option<ServerEnd>,
    sessions: HashMap<AssocId, Active>,
    stats: ServerStats,
    actions: Vec<Action>,
}

impl Server {
    /// A server of `kind`; `stop_after` ends it (like a signal) after that long.
    pub fn new(
        kind: SimpleKind,
        max_sessions: Option<usize>,
        daemon: bool,
        stop_at: Option<Instant>,
    ) -> Server {
        Server {
            kind,
            max_sessions,
            clock: WallClock::host(),
            daemon,
            stop_at,
            started: false,
            signalled: false,
            ever_registered: false,
            deregistered: false,
            end: None,
            sessions: HashMap::new(),
            stats: ServerStats::default(),
            actions: Vec::new(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// True once SIGINT/SIGTERM arrived.
    pub fn signalled(&self) -> bool {
        self.signalled
    }

    fn apply(&mut self, m: &mut ServerMachine, session: AssocId) {
        for a in std::mem::take(&mut self.actions) {
            match a {
                Action::Send { ppid, data } => {
                    if let Err(e) = m.send(session, ppid, data) {
                        debug!("{session:?}: send failed: {e}");
                        if let Some(s) = self.sessions.get_mut(&session) {
                            s.service.on_send_failed(&mut self.actions);
                        }
                    } else {
                        self.stats.sent += 1;
                    }
                }
                Action::Close { abort } => {
                    self.sessions.remove(&session);
                    if abort {
                        m.abort(session);
                    } else {
                        m.close(session);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, m: &mut ServerMachine, now: Instant, e: PeSessionEvent) {
        match e {
            PeSessionEvent::SessionOpened { session } => {
                if self
                    .max_sessions
                    .is_some_and(|max| self.sessions.len() >= max)
                {
                    // RSPLIB's TCP-like server: accept, then close (the PU fails over).
                    info!("{session:?}: session refused, all slots busy");
                    m.close(session);
                    return;
                }
                self.stats.sessions += 1;
                debug!("{session:?}: new session");
                let mut s = SimpleSession::new(self.kind, self.clock);
                s.on_up(now, &mut self.actions);
                self.sessions.insert(
                    session,
                    Active {
                        service: s,
                        blocked: false,
                    },
                );
                self.apply(m, session);
            }
            PeSessionEvent::Data {
                session,
                ppid,
                data,
            } => {
                self.stats.received += 1;
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.service.on_data(ppid, data, &mut self.actions);
                    self.apply(m, session);
                }
            }
            PeSessionEvent::CookieEcho { session, .. } => {
                debug!("{session:?}: cookie echo ignored (service without cookies)");
            }
            PeSessionEvent::BusinessCard { session, .. } => {
                debug!("{session:?}: business card ignored");
            }
            PeSessionEvent::SessionClosed { session, reason } => {
                debug!("{session:?}: session closed: {reason:?}");
                self.sessions.remove(&session);
            }
            PeSessionEvent::Registration(r) => self.on_registration(r),
        }
    }

    fn on_registration(&mut self, r: PoolElementEvent) {
        match r {
            PoolElementEvent::Registered {
                registrar, pe_id, ..
            } => {
                if !self.ever_registered {
                    info!(
                        "PE ${:08x} registered (registrar {})",
                        pe_id.0,
                        registrar.map_or_else(|| "?".to_owned(), |r| format!("${:08x}", r.0))
                    );
                }
                self.ever_registered = true;
            }
            PoolElementEvent::RegistrationFailed { cause } => {
                warn!("registration failed: {cause:?}");
                let fatal = !self.ever_registered
                    && !self.daemon
                    && !matches!(cause, RegistrationFailure::Timeout);
                if fatal && self.end.is_none() {
                    self.end = Some(ServerEnd::RegistrationFailed(format!("{cause:?}")));
                }
            }
            PoolElementEvent::Deregistered { acknowledged } => {
                info!("deregistered (acknowledged: {acknowledged})");
                self.deregistered = true;
            }
            PoolElementEvent::HomeRegistrarChanged { old, new } => info!(
                "home registrar changed: {} -> ${:08x}",
                old.map_or_else(|| "?".to_owned(), |r| format!("${:08x}", r.0)),
                new.0
            ),
            PoolElementEvent::RegistrarLost { registrar } => info!(
                "registrar {} lost",
                registrar.map_or_else(|| "?".to_owned(), |r| format!("${:08x}", r.0))
            ),
        }
    }

    /// Character Generator: sessions whose backlog drained send their next burst.
    fn pump_writable(
        &mut self,
        m: &mut ServerMachine,
        assocs: &AssocTable,
        wakeup: &mut Option<Instant>,
        now: Instant,
    ) {
        if self.kind != SimpleKind::CharGen {
            return;
        }
        let ids: Vec<AssocId> = self.sessions.keys().copied().collect();
        let mut busy = false;
        for id in ids {
            let backlog = assocs.overflow_bytes(id);
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if backlog > 0 {
                s.blocked = true;
                continue;
            }
            s.blocked = false;
            s.service.on_writable(&mut self.actions);
            self.apply(m, id);
            busy = true;
        }
        if busy {
            // More as soon as the loop comes round (the transport takes what it can).
            *wakeup = Some(now);
        }
    }
}

impl Application<ServerMachine> for Server {
    fn on_step(&mut self, step: &mut Step<'_, ServerMachine>) -> AppControl {
        let now = step.now;
        self.signalled |= !step.signals.is_empty();
        if !self.started {
            self.started = true;
            step.machine.register(now);
        }
        for e in std::mem::take(step.events) {
            self.on_event(step.machine, now, e);
        }
        self.pump_writable(step.machine, step.assocs, step.wakeup, now);
        if let Some(ServerEnd::RegistrationFailed(_)) = self.end {
            return AppControl::Exit;
        }
        if let Some(t) = self.stop_at {
            if now >= t {
                return AppControl::Shutdown;
            }
            *step.wakeup = Some(step.wakeup.map_or(t, |w| w.min(t)));
        }
        AppControl::Continue
    }

    fn begin_shutdown(&mut self, machine: &mut ServerMachine, now: Instant) {
        self.stop_at = None;
        for id in self.sessions.drain().map(|(id, _)| id).collect::<Vec<_>>() {
            machine.close(id);
        }
        if machine.element().is_registered() || machine.element().home_registrar().is_some() {
            machine.deregister(now);
        } else {
            self.deregistered = true;
        }
        if self.end.is_none() {
            self.end = Some(ServerEnd::Stopped);
        }
    }

    fn shutdown_done(&mut self, _machine: &ServerMachine) -> bool {
        self.deregistered
    }
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

fn print_banner(
    opts: &RspServerOptions,
    pe_id: PeIdentifier,
    local: &[SocketAddr],
    kind: TransportKind,
) {
    let addrs: Vec<String> = local.iter().map(ToString::to_string).collect();
    println!("RSerPool Server - rserpool {}", env!("CARGO_PKG_VERSION"));
    println!("Service               = {:?}", opts.service());
    println!(
        "Pool Handle           = {}",
        String::from_utf8_lossy(opts.pool_handle().as_bytes())
    );
    println!("PE Identifier         = ${:08x}", pe_id.0);
    println!(
        "Local Address         = {} {}",
        match kind {
            TransportKind::Sctp => "sctp",
            TransportKind::Tcp => "tcp",
        },
        addrs.join(",")
    );
    println!("Policy                = {:?}", opts.policy());
    let _ = io::Write::flush(&mut io::stdout());
}

/// One life of the server.
fn run_once(
    opts: &RspServerOptions,
    kind: SimpleKind,
    stop_after: Option<Duration>,
    banner: bool,
) -> io::Result<(Exit, Server)> {
    let lib = &opts.library;
    let mode = transport_mode(lib.transport);
    let tkind = mode.resolve();
    let listener = listener_config(opts, tkind);
    let dcfg = DriverConfig {
        listeners: vec![listener],
        mode,
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
    driver.route_accepted(|m: &mut ServerMachine, now, id, info| {
        if info.channel == Some(ChannelKind::AsapToPoolElement) {
            m.handle_registrar_assoc_up(now, id, &info.peer_addrs);
        } else {
            rserpool_core::Machine::handle_assoc_up(m, now, id, &info.peer_addrs);
        }
    });
    if let Some(u) = announce_receiver(lib) {
        add_udp_or_warn(&mut driver, &u, "registrar announces");
    }
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
    let max = opts
        .max_threads()
        .filter(|_| kind == SimpleKind::CharGen)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let stop_at = stop_after.map(|d| driver.now() + d);
    let mut server = Server::new(kind, max, daemon::is_daemon_child(), stop_at);
    let exit = driver.run_app(&mut server)?;
    Ok((exit, server))
}

fn exponential(rng: &mut impl Rng, mean: Duration) -> Duration {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs_f64((-mean.as_secs_f64() * (1.0 - u).ln()).clamp(0.0, 1e9))
}

/// `rspserver` with parsed options.
pub fn main_with(opts: RspServerOptions) -> ExitCode {
    if let Some(code) = daemon::detach_if_asked("rspserver", opts.daemon_pid_file.as_deref()) {
        return code;
    }
    init_logging_or_exit("rspserver", &opts.library.log);
    let Some(kind) = simple_kind(opts.service()) else {
        return super::common::fail(
            "rspserver",
            &format!(
                "the {:?} service is not available in this program yet",
                opts.service()
            ),
        );
    };
    let mut rng = os_rng();
    let failure_test = !opts.uptime.is_zero();
    let mut banner = !opts.quiet;
    loop {
        let up = if failure_test {
            Some(exponential(&mut rng, opts.uptime))
        } else {
            opts.runtime_limit()
        };
        match run_once(&opts, kind, up, banner) {
            Ok((_, server)) => {
                if let Some(ServerEnd::RegistrationFailed(why)) = &server.end {
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
                if !failure_test || server.signalled() {
                    return ExitCode::SUCCESS;
                }
                let down = exponential(&mut rng, opts.downtime);
                info!("failure-test mode: down for {:.3} s", down.as_secs_f64());
                std::thread::sleep(down);
                banner = false;
            }
            Err(e) => return super::common::fail("rspserver", &e),
        }
    }
}
