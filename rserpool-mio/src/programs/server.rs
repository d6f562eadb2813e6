//! `rspserver`: a pool element ([`PoolElementSessions`]) on the mio [`Driver`] serving one of
//! RSPLIB's example services.
//!
//! * Services (the machines of [`rserpool_core::services`], one per session): `-echo`
//!   (default), `-discard`, `-daytime`, `-chargen` (RSPLIB's own `-chargen` cannot start,
//!   `services.md` §2.4; this one works), `-pingpong`, `-fractal`; at most
//!   `-chargenmaxthreads=` / `-pppmaxthreads=` / `-fgpmaxthreads=` sessions (more are accepted
//!   and closed at once, as RSPLIB's TCP-like server does). `-calcapp` and `-scripting` are
//!   run by [`super::services::pe`].
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

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::Rng;
use rserpool_core::handlespace::Limits;
use rserpool_core::pool_element::{PoolElementConfig, PoolElementEvent, RegistrationFailure};
use rserpool_core::registrar::AddressScope;
use rserpool_core::services::fractal::{FractalServer, FractalServerConfig};
use rserpool_core::services::pingpong::{PingPongServer, PingPongServerConfig};
use rserpool_core::services::simple::{
    CharGenConfig, CharGenServer, DaytimeServer, DiscardServer, EchoServer,
};
use rserpool_core::services::{
    CloseMode, LogLevel, ServiceOutput, ServiceSession, SessionEvent, WallClock,
};
use rserpool_core::session::{PeSessionEvent, PoolElementSessions};
use rserpool_core::{AssocId, ChannelKind, Instant, Protocol};
use rserpool_proto::csp::{ComponentId, CspProtocol, Workload, session_status_text};
use rserpool_proto::ids::PeIdentifier;
use rserpool_proto::rtf::ChannelKinds;
use tracing::{debug, info, warn};

use super::common::{
    add_udp_or_warn, announce_receiver, init_logging_or_exit, library_mode, library_transport,
    os_rng, registrar_table_config,
};
use super::daemon;
use super::registrar::{advertised_transport, default_wildcard};
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

/// A service session as the host drives it: its events become log text.
pub type BoxedSession = Box<dyn ServiceSession<Event = String> + Send>;

/// Turns a service machine's events into text for the log.
struct Logged<S>(S);

impl<S: ServiceSession> ServiceSession for Logged<S>
where
    S::Event: std::fmt::Debug,
{
    type Event = String;

    fn handle_data(&mut self, now: Instant, ppid: u32, stream: u16, data: Bytes) {
        self.0.handle_data(now, ppid, stream, data);
    }
    fn handle_cookie_echo(&mut self, now: Instant, cookie: Bytes) {
        self.0.handle_cookie_echo(now, cookie);
    }
    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        self.0.handle_event(now, event);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now);
    }
    fn poll_output(&mut self) -> Option<ServiceOutput<String>> {
        Some(match self.0.poll_output()? {
            ServiceOutput::Send { ppid, stream, data } => {
                ServiceOutput::Send { ppid, stream, data }
            }
            ServiceOutput::SendCookie(c) => ServiceOutput::SendCookie(c),
            ServiceOutput::Close(m) => ServiceOutput::Close(m),
            ServiceOutput::Connect => ServiceOutput::Connect,
            ServiceOutput::Failover { report_unreachable } => {
                ServiceOutput::Failover { report_unreachable }
            }
            ServiceOutput::Load(l) => ServiceOutput::Load(l),
            ServiceOutput::Log { level, message } => ServiceOutput::Log { level, message },
            ServiceOutput::Event(e) => ServiceOutput::Event(format!("{e:?}")),
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// Makes the session machines of one service.
#[derive(Clone, Debug)]
pub struct ServiceFactory {
    service: Service,
    clock: WallClock,
    chargen: CharGenConfig,
    pingpong: PingPongServerConfig,
    fractal: FractalServerConfig,
}

impl ServiceFactory {
    /// The factory for `opts`' service, or `None` if this program does not offer it.
    pub fn new(opts: &RspServerOptions, clock: WallClock) -> Option<ServiceFactory> {
        let service = opts.service();
        if matches!(service, Service::CalcApp | Service::Scripting) {
            return None;
        }
        let threads = |n: u32| usize::try_from(n).unwrap_or(usize::MAX).max(1);
        Some(ServiceFactory {
            service,
            clock,
            chargen: CharGenConfig {
                max_sessions: threads(opts.chargen.max_threads),
                ..CharGenConfig::default()
            },
            pingpong: PingPongServerConfig {
                max_sessions: threads(opts.pingpong.max_threads),
                failure_after: u64::from(opts.pingpong.failure_after),
            },
            fractal: FractalServerConfig {
                max_sessions: threads(opts.fractal.max_threads),
                transmit_timeout: opts.fractal.transmit_timeout,
                cookie_max_time: opts.fractal.cookie_max_time,
                cookie_max_packets: u64::from(opts.fractal.cookie_max_packets),
                data_max_time: opts.fractal.data_max_time,
                failure_after: u64::from(opts.fractal.failure_after),
                test_mode: opts.fractal.test_mode,
                ..FractalServerConfig::default()
            },
        })
    }

    /// The service.
    pub fn service(&self) -> Service {
        self.service
    }

    /// Most parallel sessions (`None`: unlimited, RSPLIB's UDP-like services).
    pub fn max_sessions(&self) -> Option<usize> {
        match self.service {
            Service::CharGen => Some(self.chargen.max_sessions),
            Service::PingPong => Some(self.pingpong.max_sessions),
            Service::Fractal => Some(self.fractal.max_sessions),
            _ => None,
        }
    }

    /// A new session machine.
    pub fn session(&self) -> BoxedSession {
        match self.service {
            Service::Discard => Box::new(Logged(DiscardServer::new())),
            Service::Daytime => Box::new(Logged(DaytimeServer::new(self.clock))),
            Service::CharGen => Box::new(Logged(CharGenServer::new(self.chargen))),
            Service::PingPong => Box::new(Logged(PingPongServer::new(self.pingpong))),
            Service::Fractal => Box::new(Logged(FractalServer::new(self.fractal))),
            Service::Echo | Service::CalcApp | Service::Scripting => {
                Box::new(Logged(EchoServer::new()))
            }
        }
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

struct Active {
    service: BoxedSession,
    /// A send had to wait in the driver's overflow queue; `Writable` follows when it drained.
    blocked: bool,
    /// It sent something in its last turn: it may want to send more (`Writable`).
    wants_more: bool,
    /// Its share of the PE's load.
    load: f64,
}

/// The `rspserver` application: the service sessions around the pool element.
pub struct Server {
    factory: ServiceFactory,
    daemon: bool,
    stop_at: Option<Instant>,
    started: bool,
    signalled: bool,
    ever_registered: bool,
    deregistered: bool,
    end: Option<ServerEnd>,
    sessions: HashMap<AssocId, Active>,
    /// The load last registered (adaptive policies).
    registered_load: f64,
    stats: ServerStats,
}

impl Server {
    /// A server of the factory's service; `stop_at` ends it (like a signal) at that time.
    pub fn new(factory: ServiceFactory, daemon: bool, stop_at: Option<Instant>) -> Server {
        Server {
            factory,
            daemon,
            stop_at,
            started: false,
            signalled: false,
            ever_registered: false,
            deregistered: false,
            end: None,
            sessions: HashMap::new(),
            registered_load: 0.0,
            stats: ServerStats::default(),
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

    /// Gives `event` to the session and carries out what it asks.
    fn event_to(&mut self, m: &mut ServerMachine, now: Instant, id: AssocId, event: SessionEvent) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.service.handle_event(now, event);
        }
        self.drain(m, now, id);
    }

    /// Carries out a session's outputs.
    fn drain(&mut self, m: &mut ServerMachine, now: Instant, id: AssocId) {
        let mut closed = None;
        let mut failed = false;
        if let Some(s) = self.sessions.get_mut(&id) {
            while let Some(o) = s.service.poll_output() {
                match o {
                    ServiceOutput::Send { ppid, data, .. } => match m.send(id, ppid, data) {
                        Ok(()) => {
                            self.stats.sent += 1;
                            s.wants_more = true;
                        }
                        Err(e) => {
                            debug!("{id:?}: send failed: {e}");
                            failed = true;
                            break;
                        }
                    },
                    ServiceOutput::SendCookie(c) => {
                        if m.send_cookie(id, c).is_err() {
                            failed = true;
                            break;
                        }
                    }
                    ServiceOutput::Close(mode) => {
                        closed = Some(mode);
                        break;
                    }
                    ServiceOutput::Load(l) => s.load = l.clamp(0.0, 1.0),
                    ServiceOutput::Log { level, message } => match level {
                        LogLevel::Error => tracing::error!("{id:?}: {message}"),
                        LogLevel::Warning => warn!("{id:?}: {message}"),
                        LogLevel::Info => info!("{id:?}: {message}"),
                        LogLevel::Debug => debug!("{id:?}: {message}"),
                    },
                    ServiceOutput::Event(e) => debug!("{id:?}: {e}"),
                    // Pool-user outputs: nothing to do on a PE.
                    ServiceOutput::Connect | ServiceOutput::Failover { .. } => {}
                }
            }
        }
        if failed {
            self.event_to(m, now, id, SessionEvent::SendFailed);
            return;
        }
        match closed {
            Some(CloseMode::Abort) => {
                self.sessions.remove(&id);
                m.abort(id);
            }
            Some(CloseMode::Shutdown) => {
                self.sessions.remove(&id);
                m.close(id);
            }
            None => {
                if self
                    .sessions
                    .get(&id)
                    .is_some_and(|s| s.service.is_finished())
                {
                    self.sessions.remove(&id);
                }
            }
        }
    }

    fn on_event(&mut self, m: &mut ServerMachine, now: Instant, e: PeSessionEvent) {
        match e {
            PeSessionEvent::SessionOpened { session } => {
                if self
                    .factory
                    .max_sessions()
                    .is_some_and(|max| self.sessions.len() >= max)
                {
                    // RSPLIB's TCP-like server: accept, then close (the PU fails over).
                    info!("{session:?}: session refused, all slots busy");
                    m.close(session);
                    return;
                }
                self.stats.sessions += 1;
                debug!("{session:?}: new session");
                self.sessions.insert(
                    session,
                    Active {
                        service: self.factory.session(),
                        blocked: false,
                        wants_more: false,
                        load: 0.0,
                    },
                );
                self.event_to(m, now, session, SessionEvent::Up);
            }
            PeSessionEvent::Data {
                session,
                ppid,
                data,
            } => {
                self.stats.received += 1;
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.service.handle_data(now, ppid, 0, data);
                    self.drain(m, now, session);
                }
            }
            PeSessionEvent::CookieEcho { session, cookie } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.service.handle_cookie_echo(now, cookie);
                    self.drain(m, now, session);
                }
            }
            PeSessionEvent::BusinessCard { session, .. } => {
                debug!("{session:?}: business card ignored");
            }
            PeSessionEvent::SessionClosed { session, reason } => {
                debug!("{session:?}: session closed: {reason:?}");
                if let Some(mut s) = self.sessions.remove(&session) {
                    s.service.handle_event(now, SessionEvent::PeerClosed);
                    while let Some(o) = s.service.poll_output() {
                        if let ServiceOutput::Log { message, .. } = o {
                            debug!("{session:?}: {message}");
                        }
                    }
                }
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
                    let security = matches!(&cause, RegistrationFailure::Rejected(Some(e))
                        if e.causes.iter().any(|c| c.code == rserpool_proto::param::cause::REJECTED_SECURITY));
                    let hint = if security {
                        " (the registrar takes only addresses of the association of at least \
                         its -minaddressscope=, site-local by default: a loopback deployment \
                         needs rspregistrar -minaddressscope=loopback)"
                    } else {
                        ""
                    };
                    self.end = Some(ServerEnd::RegistrationFailed(format!("{cause:?}{hint}")));
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

    /// Timers, flow control and load of the sessions; the next wake-up they need.
    fn service_sessions(
        &mut self,
        m: &mut ServerMachine,
        assocs: &AssocTable,
        now: Instant,
    ) -> Option<Instant> {
        let ids: Vec<AssocId> = self.sessions.keys().copied().collect();
        for id in ids {
            let backlog = assocs.overflow_bytes(id);
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if s.service.poll_timeout().is_some_and(|t| t <= now) {
                s.service.handle_timeout(now);
            }
            let flow = if backlog > 0 {
                (!s.blocked).then(|| {
                    s.blocked = true;
                    SessionEvent::Blocked
                })
            } else if s.blocked || std::mem::take(&mut s.wants_more) {
                s.blocked = false;
                Some(SessionEvent::Writable)
            } else {
                None
            };
            if let Some(ev) = flow {
                s.service.handle_event(now, ev);
            }
            self.drain(m, now, id);
        }
        // Adaptive policies: re-register when the summed load changed by 1 % or more.
        if m.element().policy().load().is_some() {
            let total: f64 = self.sessions.values().map(|s| s.load).sum::<f64>().min(1.0);
            if (total - self.registered_load).abs() >= 0.01 {
                self.registered_load = total;
                let load = (total * f64::from(u32::MAX)) as u32;
                m.set_load(now, load);
            }
        }
        let mut next: Option<Instant> = None;
        for s in self.sessions.values() {
            let t = if s.wants_more && !s.blocked {
                // It produced data and has room for more: come back at once.
                Some(now)
            } else {
                s.service.poll_timeout()
            };
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
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
        if let Some(t) = self.service_sessions(step.machine, step.assocs, now) {
            *step.wakeup = Some(step.wakeup.map_or(t, |w| w.min(t)));
        }
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
        let ids: Vec<AssocId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.event_to(machine, now, id, SessionEvent::ServerShutdown);
            if self.sessions.remove(&id).is_some() {
                machine.close(id);
            }
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
    Ok((driver, local, tkind))
}

/// One life of the server.
fn run_once(
    opts: &RspServerOptions,
    factory: ServiceFactory,
    stop_after: Option<Duration>,
    banner: bool,
) -> io::Result<(Exit, Server)> {
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
    let stop_at = stop_after.map(|d| driver.now() + d);
    let mut server = Server::new(factory, daemon::is_daemon_child(), stop_at);
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
    let Some(factory) = ServiceFactory::new(&opts, super::services::host_clock()) else {
        // CalcApp and Scripting are run by the services module.
        return super::services::pe::run_service(&opts);
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
        match run_once(&opts, factory.clone(), up, banner) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::argv::try_parse_from;

    fn parse(args: &[&str]) -> RspServerOptions {
        try_parse_from(std::iter::once("rspserver").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn services_and_their_session_limits() {
        let clock = WallClock::default();
        let f = ServiceFactory::new(&parse(&[]), clock).unwrap();
        assert_eq!(f.service(), Service::Echo);
        assert_eq!(f.max_sessions(), None);
        let mut s = f.session();
        s.handle_data(Instant::ZERO, 7, 0, Bytes::from_static(b"x"));
        assert!(matches!(
            s.poll_output(),
            Some(ServiceOutput::Send { ppid: 7, .. })
        ));
        let f = ServiceFactory::new(&parse(&["-chargen", "-chargenmaxthreads=2"]), clock).unwrap();
        assert_eq!(f.max_sessions(), Some(2));
        let mut s = f.session();
        s.handle_event(Instant::ZERO, SessionEvent::Up);
        assert!(matches!(
            s.poll_output(),
            Some(ServiceOutput::Send { ppid: 0, .. })
        ));
        let f = ServiceFactory::new(&parse(&["-pingpong", "-pppmaxthreads=3"]), clock).unwrap();
        assert_eq!(f.max_sessions(), Some(3));
        assert!(ServiceFactory::new(&parse(&["-fractal"]), clock).is_some());
        assert!(ServiceFactory::new(&parse(&["-calcapp"]), clock).is_none());
        assert!(ServiceFactory::new(&parse(&["-scripting"]), clock).is_none());
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
