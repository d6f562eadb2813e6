//! The pool-element application of `rspserver`, for every service: the service machines of
//! [`rserpool_core::services`] on [`PoolElementSessions`] (one machine per session; CalcApp:
//! one machine for all sessions), on the mio [`Driver`] ([`super::super::server`] sets the
//! driver up and runs this application).
//!
//! Mapping (the one `rserpool_core::services` documents): `SessionOpened` →
//! [`SessionEvent::Up`], `Data` → `handle_data`, `CookieEcho` → `handle_cookie_echo`,
//! `SessionClosed` → [`SessionEvent::PeerClosed`]; [`ServiceOutput::Send`] → `send`,
//! [`ServiceOutput::SendCookie`] → `send_cookie`, [`ServiceOutput::Close`] → `close` /
//! `abort`, [`ServiceOutput::Load`] → summed over the sessions and re-registered when the
//! total moved by ≥ 0.01 under an adaptive policy (RSPLIB). Flow control: a session whose
//! messages wait in the driver's overflow queue gets [`SessionEvent::Blocked`], and
//! [`SessionEvent::Writable`] once the queue has drained, or on the next pass after it sent
//! something (so that a generator such as chargen goes on producing). Compute-bound machines
//! (the fractal generator) ask for "now" in `poll_timeout`; the loop then polls the sockets
//! without sleeping between their steps, so one thread serves every session.
//!
//! Thread-per-session services (Character Generator, Ping Pong, Fractal, Scripting) accept at
//! most their `-…maxthreads=` sessions; one more is accepted and closed at once (Scripting
//! sends NOTREADY first), as RSPLIB's TCP-like server does; Echo, Discard and Daytime have no
//! limit. Shutdown (SIGINT/SIGTERM, `-runtime=`) tells every session
//! [`SessionEvent::ServerShutdown`] (the fractal generator flushes its data and sends a last
//! cookie; CalcApp sends final cookies with `-capcleanshutdownprobability=`), closes the rest
//! and deregisters.
//!
//! [`PoolElementSessions`]: rserpool_core::session::PoolElementSessions
//! [`Driver`]: crate::driver::Driver

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::pool_element::{PoolElementEvent, RegistrationFailure};
use rserpool_core::services::calcapp::{
    CalcAppServer, CalcAppServerConfig, CalcAppServerOutput, CalcAppServerRecord,
};
use rserpool_core::services::fractal::{FractalServer, FractalServerConfig};
use rserpool_core::services::pingpong::{PingPongServer, PingPongServerConfig};
use rserpool_core::services::scripting::{
    ScriptingRejectSession, ScriptingServer, ScriptingServerConfig,
};
use rserpool_core::services::simple::{
    CharGenConfig, CharGenServer, DaytimeServer, DiscardServer, EchoServer,
};
use rserpool_core::services::{
    CloseMode, PPID_CALCAPP, ServiceOutput, ServiceSession, SessionEvent, WallClock,
};
use rserpool_core::session::PeSessionEvent;
use rserpool_core::{AssocId, Instant};
use tracing::{debug, info, warn};

use super::super::common::os_rng;
use super::super::server::{ServerEnd, ServerMachine, ServerStats};
use super::log_line;
use super::scripting_host::ScriptingEnvironment;
use crate::cli::{RspServerOptions, Service};
use crate::driver::{AppControl, Application, AssocTable, Step};

/// A service session with its events rendered as text (for the log).
pub type DynSession = Box<dyn ServiceSession<Event = String> + Send>;

/// Wraps a service machine so that its events become log text.
#[derive(Debug)]
pub struct Described<S>(pub S);

impl<S> ServiceSession for Described<S>
where
    S: ServiceSession,
    S::Event: std::fmt::Debug,
{
    type Event = String;

    fn handle_data(&mut self, now: Instant, ppid: u32, stream: u16, data: bytes::Bytes) {
        self.0.handle_data(now, ppid, stream, data)
    }
    fn handle_cookie_echo(&mut self, now: Instant, cookie: bytes::Bytes) {
        self.0.handle_cookie_echo(now, cookie)
    }
    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        self.0.handle_event(now, event)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now)
    }
    fn poll_output(&mut self) -> Option<ServiceOutput<String>> {
        Some(match self.0.poll_output()? {
            ServiceOutput::Event(e) => ServiceOutput::Event(format!("{e:?}")),
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
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// Which per-session machine new sessions get (every service but CalcApp, whose one machine
/// serves all sessions: [`CalcAppPe`]).
pub enum SessionFactory {
    /// Echo: every message back.
    Echo,
    /// Discard: nothing back.
    Discard,
    /// Daytime: the time of day, then close.
    Daytime(WallClock),
    /// Character generator.
    CharGen(CharGenConfig),
    /// Ping Pong.
    PingPong(PingPongServerConfig),
    /// Fractal generator.
    Fractal(FractalServerConfig),
    /// Scripting: its configuration and the shared environment (cache, keyring, temp dirs).
    Scripting(ScriptingServerConfig, Arc<ScriptingEnvironment>),
}

impl SessionFactory {
    /// The factory for `opts`' service (`clock` for Daytime; `scripting`, the environment
    /// that outlives one server life, for Scripting). CalcApp has none: an error.
    pub fn new(
        opts: &RspServerOptions,
        clock: WallClock,
        scripting: Option<&Arc<ScriptingEnvironment>>,
    ) -> io::Result<SessionFactory> {
        Ok(match opts.service() {
            Service::Echo => SessionFactory::Echo,
            Service::Discard => SessionFactory::Discard,
            Service::Daytime => SessionFactory::Daytime(clock),
            Service::CharGen => SessionFactory::CharGen(chargen_config(opts)),
            Service::PingPong => SessionFactory::PingPong(pingpong_config(opts)),
            Service::Fractal => SessionFactory::Fractal(fractal_config(opts)),
            Service::Scripting => {
                let env = scripting
                    .cloned()
                    .ok_or_else(|| io::Error::other("scripting environment missing"))?;
                SessionFactory::Scripting(scripting_config(opts), env)
            }
            Service::CalcApp => {
                return Err(io::Error::other(
                    "CalcApp serves all sessions in one machine",
                ));
            }
        })
    }

    /// Most parallel sessions (`None`: unlimited, RSPLIB's UDP-like services).
    pub fn max_sessions(&self) -> Option<usize> {
        match self {
            SessionFactory::Echo | SessionFactory::Discard | SessionFactory::Daytime(_) => None,
            SessionFactory::CharGen(c) => Some(c.max_sessions),
            SessionFactory::PingPong(c) => Some(c.max_sessions),
            SessionFactory::Fractal(c) => Some(c.max_sessions),
            SessionFactory::Scripting(c, _) => Some(c.max_sessions),
        }
    }

    /// A machine for a new session.
    pub fn open(&self) -> io::Result<DynSession> {
        Ok(match self {
            SessionFactory::Echo => Box::new(Described(EchoServer::new())),
            SessionFactory::Discard => Box::new(Described(DiscardServer::new())),
            SessionFactory::Daytime(clock) => Box::new(Described(DaytimeServer::new(*clock))),
            SessionFactory::CharGen(c) => Box::new(Described(CharGenServer::new(*c))),
            SessionFactory::PingPong(c) => Box::new(Described(PingPongServer::new(*c))),
            SessionFactory::Fractal(c) => Box::new(Described(FractalServer::new(*c))),
            SessionFactory::Scripting(c, env) => {
                let host = env.new_session()?;
                let keyring = env.keyring_check();
                Box::new(Described(ScriptingServer::new(c.clone(), host, keyring)))
            }
        })
    }

    /// The machine for a session over capacity: Scripting says NOTREADY, the others close.
    pub fn reject(&self) -> Option<DynSession> {
        match self {
            SessionFactory::Scripting(c, _) => Some(Box::new(Described(
                ScriptingRejectSession::new(&c.hostname),
            ))),
            _ => None,
        }
    }
}

/// CalcApp's PE machine with its statistics files.
pub struct CalcAppPe {
    server: CalcAppServer<AssocId>,
    object: String,
    vector: Option<File>,
    scalar: std::path::PathBuf,
    clock: WallClock,
    pe_id: u32,
    load: f64,
}

impl CalcAppPe {
    /// The CalcApp PE started at `now`; creates the vector file (header line) at once.
    pub fn new(
        config: CalcAppServerConfig,
        now: Instant,
        object: String,
        vector: &std::path::Path,
        scalar: std::path::PathBuf,
        clock: WallClock,
        pe_id: u32,
    ) -> CalcAppPe {
        let vector = match File::create(vector).and_then(|mut f| {
            writeln!(f, "{}", CalcAppServerRecord::VECTOR_HEADER)?;
            Ok(f)
        }) {
            Ok(f) => Some(f),
            Err(e) => {
                warn!("CalcApp: cannot create {}: {e}", vector.display());
                None
            }
        };
        CalcAppPe {
            server: CalcAppServer::new(config, now),
            object,
            vector,
            scalar,
            clock,
            pe_id,
            load: 0.0,
        }
    }

    /// Writes the scalar file with the totals as of `now`.
    pub fn write_scalars(&mut self, now: Instant) {
        let text = self.server.totals(now).scalar_file(&self.object);
        if let Err(e) = std::fs::write(&self.scalar, text) {
            warn!("CalcApp: cannot write {}: {e}", self.scalar.display());
        }
    }
}

struct Slot {
    session: DynSession,
    /// A send had to wait in the driver's overflow queue; `Writable` follows when it drained.
    blocked: bool,
    /// It sent something in its last turn: it may want to send more (`Writable`).
    wants_more: bool,
    /// Its share of the PE's load (0-1).
    load: f64,
    /// Counts towards the session limit (a NOTREADY session does not).
    counted: bool,
}

/// Where the sessions of a [`ServiceServer`] are served.
pub enum Sessions {
    /// One machine per session, from the factory (at most its
    /// [`SessionFactory::max_sessions`] at a time).
    PerSession(SessionFactory),
    /// The one CalcApp machine for all sessions.
    CalcApp(Box<CalcAppPe>),
}

/// The `rspserver` application: the service sessions around the pool element.
pub struct ServiceServer {
    sessions_of: Sessions,
    adaptive: bool,
    reported_load: f64,
    daemon: bool,
    stop_at: Option<Instant>,
    started: bool,
    signalled: bool,
    ever_registered: bool,
    deregistered: bool,
    end: Option<ServerEnd>,
    sessions: HashMap<AssocId, Slot>,
    stats: ServerStats,
    rng: Xoshiro256PlusPlus,
}

impl ServiceServer {
    /// A server whose sessions are served as `sessions_of` says; `adaptive`: the pool policy
    /// takes the load; `daemon`: a failed first registration is not fatal; `stop_at` ends it
    /// (like a signal) at that time.
    pub fn new(
        sessions_of: Sessions,
        adaptive: bool,
        daemon: bool,
        stop_at: Option<Instant>,
    ) -> ServiceServer {
        ServiceServer {
            sessions_of,
            adaptive,
            reported_load: 0.0,
            daemon,
            stop_at,
            started: false,
            signalled: false,
            ever_registered: false,
            deregistered: false,
            end: None,
            sessions: HashMap::new(),
            stats: ServerStats::default(),
            rng: os_rng(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The CalcApp machine, when it serves the sessions.
    fn calcapp(&self) -> Option<&CalcAppPe> {
        match &self.sessions_of {
            Sessions::CalcApp(c) => Some(c),
            Sessions::PerSession(_) => None,
        }
    }

    fn calcapp_mut(&mut self) -> Option<&mut CalcAppPe> {
        match &mut self.sessions_of {
            Sessions::CalcApp(c) => Some(c),
            Sessions::PerSession(_) => None,
        }
    }

    /// True once SIGINT/SIGTERM arrived.
    pub fn signalled(&self) -> bool {
        self.signalled
    }

    /// How the run ended (`None` while it runs).
    pub fn end(&self) -> Option<&ServerEnd> {
        self.end.as_ref()
    }

    fn total_load(&self) -> f64 {
        let s: f64 = self.sessions.values().map(|s| s.load).sum();
        (s + self.calcapp().map_or(0.0, |c| c.load)).clamp(0.0, 1.0)
    }

    fn update_load(&mut self, m: &mut ServerMachine, now: Instant) {
        let total = self.total_load();
        if self.adaptive && (total - self.reported_load).abs() >= 0.01 {
            self.reported_load = total;
            let value = (total * f64::from(u32::MAX)).round() as u32;
            debug!("load {total:.3}: re-registering");
            m.set_load(now, value);
        }
    }

    /// Moves one session machine's outputs onto the session layer.
    fn drain(&mut self, m: &mut ServerMachine, now: Instant, id: AssocId) {
        let mut load_changed = false;
        let mut closed = false;
        let Some(slot) = self.sessions.get_mut(&id) else {
            return;
        };
        while let Some(o) = slot.session.poll_output() {
            match o {
                ServiceOutput::Send { ppid, data, .. } => {
                    if m.send(id, ppid, data).is_ok() {
                        self.stats.sent += 1;
                        slot.wants_more = true;
                    } else {
                        slot.session.handle_event(now, SessionEvent::SendFailed);
                    }
                }
                ServiceOutput::SendCookie(c) => {
                    if m.send_cookie(id, c).is_err() {
                        slot.session.handle_event(now, SessionEvent::SendFailed);
                    }
                }
                ServiceOutput::Close(mode) => {
                    closed = true;
                    match mode {
                        CloseMode::Shutdown => m.close(id),
                        CloseMode::Abort => m.abort(id),
                    };
                }
                ServiceOutput::Load(l) => {
                    slot.load = l.clamp(0.0, 1.0);
                    load_changed = true;
                }
                ServiceOutput::Log { level, message } => {
                    log_line(&format!("{id:?}: "), level, &message)
                }
                ServiceOutput::Event(e) => info!("{id:?}: {e}"),
                ServiceOutput::Connect | ServiceOutput::Failover { .. } => {
                    debug!("{id:?}: pool-user output ignored on a PE")
                }
            }
        }
        if closed || slot.session.is_finished() {
            if !closed {
                // The machine ended without closing (peer closed): nothing to send.
                debug!("{id:?}: session finished");
            }
            self.sessions.remove(&id);
            load_changed = true;
        }
        if load_changed {
            self.update_load(m, now);
        }
    }

    fn drain_calcapp(&mut self, m: &mut ServerMachine, now: Instant) {
        let Sessions::CalcApp(c) = &mut self.sessions_of else {
            return;
        };
        let mut load_changed = false;
        while let Some(o) = c.server.poll_output() {
            match o {
                CalcAppServerOutput::Send { session, data } => {
                    if m.send(session, PPID_CALCAPP, data).is_ok() {
                        self.stats.sent += 1;
                    } else {
                        c.server.handle_send_failed(now, session);
                    }
                }
                CalcAppServerOutput::SendCookie { session, cookie } => {
                    if m.send_cookie(session, cookie).is_err() {
                        c.server.handle_send_failed(now, session);
                    }
                }
                CalcAppServerOutput::Close { session, mode } => {
                    match mode {
                        CloseMode::Shutdown => m.close(session),
                        CloseMode::Abort => m.abort(session),
                    };
                }
                CalcAppServerOutput::Load(l) => {
                    c.load = l;
                    load_changed = true;
                }
                CalcAppServerOutput::Log { level, message } => log_line("", level, &message),
                CalcAppServerOutput::JobCompleted(r) => {
                    let line = r.vector_line(&c.object, std::process::id(), c.pe_id, &c.clock);
                    if let Some(f) = c.vector.as_mut()
                        && let Err(e) = writeln!(f, "{line}")
                    {
                        warn!("CalcApp: vector file: {e}");
                    }
                }
            }
        }
        if load_changed {
            self.update_load(m, now);
        }
    }

    fn on_event(&mut self, m: &mut ServerMachine, now: Instant, e: PeSessionEvent) {
        match e {
            PeSessionEvent::SessionOpened { session } => {
                self.stats.sessions += 1;
                let Sessions::PerSession(factory) = &self.sessions_of else {
                    debug!("{session:?}: new CalcApp session");
                    return;
                };
                let busy = self.sessions.values().filter(|s| s.counted).count();
                let (machine, counted) = if factory.max_sessions().is_some_and(|max| busy >= max) {
                    info!("{session:?}: session refused, all {busy} slots busy");
                    match factory.reject() {
                        Some(r) => (r, false),
                        None => {
                            m.close(session);
                            return;
                        }
                    }
                } else {
                    match factory.open() {
                        Ok(s) => (s, true),
                        Err(e) => {
                            warn!("{session:?}: cannot set the session up: {e}");
                            m.abort(session);
                            return;
                        }
                    }
                };
                debug!("{session:?}: new session");
                self.sessions.insert(
                    session,
                    Slot {
                        session: machine,
                        blocked: false,
                        wants_more: false,
                        load: 0.0,
                        counted,
                    },
                );
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.session.handle_event(now, SessionEvent::Up);
                }
                self.drain(m, now, session);
            }
            PeSessionEvent::Data {
                session,
                ppid,
                data,
            } => {
                self.stats.received += 1;
                if let Some(c) = self.calcapp_mut() {
                    c.server.handle_data(now, session, &data);
                    self.drain_calcapp(m, now);
                } else if let Some(s) = self.sessions.get_mut(&session) {
                    s.session.handle_data(now, ppid, 0, data);
                    self.drain(m, now, session);
                }
            }
            PeSessionEvent::CookieEcho { session, cookie } => {
                if let Some(c) = self.calcapp_mut() {
                    c.server.handle_cookie_echo(now, session, &cookie);
                    self.drain_calcapp(m, now);
                } else if let Some(s) = self.sessions.get_mut(&session) {
                    s.session.handle_cookie_echo(now, cookie);
                    self.drain(m, now, session);
                }
            }
            PeSessionEvent::BusinessCard { session, .. } => {
                debug!("{session:?}: business card ignored");
            }
            PeSessionEvent::SessionClosed { session, reason } => {
                debug!("{session:?}: session closed: {reason:?}");
                if let Some(c) = self.calcapp_mut() {
                    c.server.handle_session_closed(now, session);
                    self.drain_calcapp(m, now);
                }
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.session.handle_event(now, SessionEvent::PeerClosed);
                    self.drain(m, now, session);
                    if self.sessions.remove(&session).is_some() {
                        self.update_load(m, now);
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
                        registrar_name(registrar)
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
            PoolElementEvent::HomeRegistrarChanged { old, new } => {
                info!("home registrar changed: {} -> {new}", registrar_name(old))
            }
            PoolElementEvent::RegistrarLost { registrar } => {
                info!("registrar {} lost", registrar_name(registrar))
            }
        }
    }

    /// Timers due, flow control, and the next wake-up.
    fn service_timers(
        &mut self,
        m: &mut ServerMachine,
        assocs: &AssocTable,
        now: Instant,
    ) -> Option<Instant> {
        let ids: Vec<AssocId> = self.sessions.keys().copied().collect();
        for id in ids {
            let backlog = assocs.overflow_bytes(id);
            if let Some(s) = self.sessions.get_mut(&id) {
                if backlog > 0 {
                    if !s.blocked {
                        s.blocked = true;
                        s.session.handle_event(now, SessionEvent::Blocked);
                    }
                } else if s.blocked || std::mem::take(&mut s.wants_more) {
                    s.blocked = false;
                    s.session.handle_event(now, SessionEvent::Writable);
                }
                if s.session.poll_timeout().is_some_and(|t| t <= now) {
                    s.session.handle_timeout(now);
                }
            }
            self.drain(m, now, id);
        }
        if let Some(c) = self.calcapp_mut()
            && c.server.poll_timeout().is_some_and(|t| t <= now)
        {
            c.server.handle_timeout(now);
            self.drain_calcapp(m, now);
        }
        // A session that sent and has room for more comes back at once.
        let sessions = self.sessions.values().filter_map(|s| {
            if s.wants_more && !s.blocked {
                Some(now)
            } else {
                s.session.poll_timeout()
            }
        });
        let calcapp = self.calcapp().and_then(|c| c.server.poll_timeout());
        sessions.chain(calcapp).chain(self.stop_at).min()
    }
}

impl Application<ServerMachine> for ServiceServer {
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
        if let Some(t) = self.service_timers(step.machine, step.assocs, now) {
            // A time in the past means "as soon as possible": the loop polls without sleeping.
            *step.wakeup = Some(step.wakeup.map_or(t, |w| w.min(t)));
        }
        if let Some(ServerEnd::RegistrationFailed(_)) = self.end {
            return AppControl::Exit;
        }
        if self.stop_at.is_some_and(|t| now >= t) {
            return AppControl::Shutdown;
        }
        AppControl::Continue
    }

    fn begin_shutdown(&mut self, machine: &mut ServerMachine, now: Instant) {
        self.stop_at = None;
        let ids: Vec<AssocId> = self.sessions.keys().copied().collect();
        for id in ids {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.session.handle_event(now, SessionEvent::ServerShutdown);
            }
            self.drain(machine, now, id);
        }
        for id in self.sessions.drain().map(|(id, _)| id).collect::<Vec<_>>() {
            machine.close(id);
        }
        if let Sessions::CalcApp(c) = &mut self.sessions_of {
            c.server.handle_shutdown(now, &mut self.rng);
            self.drain_calcapp(machine, now);
            if let Some(c) = self.calcapp_mut() {
                c.write_scalars(now);
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

/// A registrar's identifier as RSPLIB prints it (`$0000abcd`), `?` when unknown.
fn registrar_name(r: Option<rserpool_proto::ids::ServerId>) -> String {
    r.map_or_else(|| "?".to_owned(), |r| r.to_string())
}

/// Thread count option → session limit (at least one).
fn threads(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX).max(1)
}

/// The character generator's configuration from `-chargenmaxthreads=`.
pub fn chargen_config(opts: &RspServerOptions) -> CharGenConfig {
    CharGenConfig {
        max_sessions: threads(opts.chargen.max_threads),
        ..CharGenConfig::default()
    }
}

/// Ping Pong's configuration from the `-ppp…` options.
pub fn pingpong_config(opts: &RspServerOptions) -> PingPongServerConfig {
    PingPongServerConfig {
        max_sessions: threads(opts.pingpong.max_threads),
        failure_after: u64::from(opts.pingpong.failure_after),
    }
}

/// The fractal generator's configuration from the `-fgp…` options.
pub fn fractal_config(opts: &RspServerOptions) -> FractalServerConfig {
    let f = &opts.fractal;
    FractalServerConfig {
        max_sessions: threads(f.max_threads),
        transmit_timeout: f.transmit_timeout,
        cookie_max_time: f.cookie_max_time,
        cookie_max_packets: u64::from(f.cookie_max_packets),
        data_max_time: f.data_max_time,
        failure_after: u64::from(f.failure_after),
        test_mode: f.test_mode,
        ..FractalServerConfig::default()
    }
}

/// CalcApp's configuration from the `-cap…` options.
pub fn calcapp_config(opts: &RspServerOptions) -> CalcAppServerConfig {
    let c = &opts.calcapp;
    CalcAppServerConfig {
        capacity: c.capacity,
        max_jobs: c.max_jobs as usize,
        keepalive_transmission_interval: c.keep_alive_transmission_interval,
        keepalive_timeout_interval: c.keep_alive_timeout_interval,
        cookie_max_time: c.cookie_max_time,
        cookie_max_calculations: c.cookie_max_calculations,
        clean_shutdown_probability: c.clean_shutdown_probability,
        failure_after_cookies: u64::from(c.failure_after),
    }
    .clamped()
}

/// The scripting PE's configuration from the `-ss…` options.
pub fn scripting_config(opts: &RspServerOptions) -> ScriptingServerConfig {
    let s = &opts.scripting;
    ScriptingServerConfig {
        max_sessions: s.max_threads() as usize,
        transmit_timeout: s.transmit_timeout,
        keepalive_interval: s.keep_alive_interval,
        keepalive_timeout: s.keep_alive_timeout,
        cache_max_size_kib: u64::from(s.cache_max_size_kib),
        cache_max_entries: s.cache_max_entries as usize,
        keep_temp_dirs: s.keep_temp_dirs,
        verbose: s.verbose,
        hostname: super::scripting_host::hostname(),
        ..ScriptingServerConfig::default()
    }
}
