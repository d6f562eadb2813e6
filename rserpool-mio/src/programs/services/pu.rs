//! A pool-user service machine ([`ServiceSession`]) on one [`PoolUserSession`], on the mio
//! [`Driver`]: the glue every client program uses.
//!
//! Mapping (`rserpool_core::services`): `Connected` → [`SessionEvent::Up`], `Data` →
//! `handle_data`, `FailoverStarted` → [`SessionEvent::FailoverStarted`],
//! `FailoverComplete { has_cookie }` → [`SessionEvent::FailoverComplete`], `Failed` →
//! [`SessionEvent::FailoverNecessary`]; [`ServiceOutput::Send`] → `send` (an error →
//! [`SessionEvent::SendFailed`]), [`ServiceOutput::Failover`] → `force_failover`,
//! [`ServiceOutput::Connect`] → a new session to the pool (`connect` closes the old one),
//! [`ServiceOutput::Close`] → `close`. Messages waiting in the driver's overflow queue make
//! the machine [`SessionEvent::Blocked`] until they have left ([`SessionEvent::Writable`]).
//! The clients resend what they need themselves, so the session replays nothing
//! ([`ReplayPolicy::None`]); RSPLIB's clients never report a PE that closed a session
//! (`report_shutdown: false`).

use std::io;
use std::time::Duration;

use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::Instant;
use rserpool_core::pool_user::PoolUserConfig;
use rserpool_core::services::{ServiceOutput, ServiceSession, SessionEvent};
use rserpool_core::session::{
    PoolUserSession, PoolUserSessionConfig, ReplayPolicy, SessionEvent as PuEvent, SessionState,
};
use rserpool_proto::csp::{
    ComponentId, CspAssociation, CspProtocol, Workload, session_status_text,
};
use rserpool_proto::ids::{PeIdentifier, PoolHandle};
use tracing::debug;

use super::super::common::{
    add_udp_or_warn, announce_receiver, library_mode, library_transport, os_rng,
    pool_user_transport, registrar_table_config,
};
use super::log_line;
use crate::cli::{LibraryOptions, process_env};
use crate::driver::{
    AppControl, Application, AssocTable, CspConfig, CspReporter, CspStatus, Driver, DriverConfig,
    Step, component_location,
};
use crate::transport::TransportKind;

/// The session machine of the clients.
pub type ClientSession = PoolUserSession<Xoshiro256PlusPlus>;

/// What a client program does with its machine's events and session changes.
pub trait ClientHooks<E> {
    /// A service event.
    fn on_event(&mut self, now: Instant, event: E);
    /// The session reached a PE (first connection or after a failover).
    fn on_pe(&mut self, _now: Instant, _pe: PeIdentifier, _failover: bool) {}
    /// The session left a PE (failover started).
    fn on_failover_started(&mut self, _now: Instant, _pe: PeIdentifier) {}
    /// True to end the program (checked after every step).
    fn done(&self) -> bool {
        false
    }
}

/// How long a client avoids a PE it lost (and its pool user keeps it suspect). Shorter than
/// the session layer's default (10 s): the services' failure testers
/// (`-pppfailureafter=`, `-capfailureafter=`, `-fgpfailureafter=`) end sessions of PEs that
/// are alive, and with a pool of two such PEs both would be avoided for the full time.
pub const CLIENT_AVOID_TIME: Duration = Duration::from_secs(1);

/// The session configuration of a client: the library options, no replay, no report of a
/// PE that shuts a session down, [`CLIENT_AVOID_TIME`], the given response timeout (`None`:
/// the service's own timers decide).
pub fn client_session_config(
    lib: &LibraryOptions,
    response_timeout: Option<Duration>,
    standby_default: Option<Duration>,
) -> PoolUserSessionConfig {
    let mode = library_mode(lib);
    PoolUserSessionConfig {
        pool_user: PoolUserConfig {
            registrar_table: registrar_table_config(lib, mode),
            request_timeout: lib.registrar_response_timeout,
            request_max_trials: lib.registrar_request_max_trials,
            suspect_timeout: CLIENT_AVOID_TIME,
            ..PoolUserConfig::default()
        },
        response_timeout,
        avoid_time: CLIENT_AVOID_TIME,
        replay: ReplayPolicy::None,
        report_shutdown: false,
        standby_refresh: lib.standby_refresh(standby_default),
        ..PoolUserSessionConfig::default()
    }
}

/// Counters of a client run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Data messages sent.
    pub sent: u64,
    /// Data messages received.
    pub received: u64,
    /// Failovers the session layer reported.
    pub failovers: u64,
}

/// A service machine `S` on one pool-user session.
pub struct ClientApp<S: ServiceSession, H: ClientHooks<S::Event>> {
    pool: PoolHandle,
    /// The service machine.
    pub service: S,
    /// The program's hooks.
    pub hooks: H,
    started: bool,
    connect_at_start: bool,
    blocked: bool,
    stats: ClientStats,
    log_prefix: String,
    last_state: Option<SessionState>,
}

impl<S: ServiceSession, H: ClientHooks<S::Event>> ClientApp<S, H> {
    /// The machine `service` for `pool`; `log_prefix` goes before its log lines.
    pub fn new(pool: PoolHandle, service: S, hooks: H, log_prefix: impl Into<String>) -> Self {
        ClientApp {
            pool,
            service,
            hooks,
            started: false,
            connect_at_start: true,
            blocked: false,
            stats: ClientStats::default(),
            log_prefix: log_prefix.into(),
            last_state: None,
        }
    }

    /// Do not open the session at start: the machine asks with [`ServiceOutput::Connect`]
    /// when it needs one (CalcApp: one session per job).
    pub fn without_initial_connect(mut self) -> Self {
        self.connect_at_start = false;
        self
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    fn on_session_event(&mut self, m: &mut ClientSession, now: Instant, e: PuEvent) {
        match e {
            PuEvent::Connected { pe_id } => {
                self.hooks.on_pe(now, pe_id, false);
                self.service.handle_event(now, SessionEvent::Up);
            }
            PuEvent::Data { ppid, data } => {
                self.stats.received += 1;
                self.service.handle_data(now, ppid, 0, data);
            }
            PuEvent::FailoverStarted { pe_id, reason } => {
                self.stats.failovers += 1;
                debug!("{}left PE ${:08x}: {reason:?}", self.log_prefix, pe_id.0);
                self.hooks.on_failover_started(now, pe_id);
                self.service
                    .handle_event(now, SessionEvent::FailoverStarted);
            }
            PuEvent::FailoverComplete {
                pe_id, has_cookie, ..
            } => {
                self.hooks.on_pe(now, pe_id, true);
                self.service.handle_event(
                    now,
                    SessionEvent::FailoverComplete {
                        cookie_echoed: has_cookie,
                    },
                );
            }
            PuEvent::Failed { cause } => {
                debug!("{}session failed: {cause:?}", self.log_prefix);
                self.service
                    .handle_event(now, SessionEvent::FailoverNecessary);
            }
            PuEvent::CookieReceived | PuEvent::Closed => {}
        }
        self.drain(m, now);
    }

    /// Moves the machine's outputs onto the session.
    fn drain(&mut self, m: &mut ClientSession, now: Instant) {
        while let Some(o) = self.service.poll_output() {
            match o {
                ServiceOutput::Send { ppid, data, .. } => match m.send(now, ppid, data) {
                    Ok(()) => self.stats.sent += 1,
                    Err(e) => {
                        debug!("{}send failed: {e}", self.log_prefix);
                        self.service.handle_event(now, SessionEvent::SendFailed);
                    }
                },
                ServiceOutput::SendCookie(_) | ServiceOutput::Load(_) => {}
                ServiceOutput::Close(_) => m.close(now),
                ServiceOutput::Connect => {
                    self.blocked = false;
                    m.connect(now, self.pool.clone());
                }
                ServiceOutput::Failover { report_unreachable } => {
                    self.blocked = false;
                    if !m.force_failover(now, report_unreachable) {
                        debug!("{}failover asked without a session", self.log_prefix);
                    }
                }
                ServiceOutput::Log { level, message } => {
                    log_line(&self.log_prefix, level, &message)
                }
                ServiceOutput::Event(e) => self.hooks.on_event(now, e),
            }
        }
    }

    /// Flow control, due timers, and the machine's next deadline.
    fn service_timers(
        &mut self,
        m: &mut ClientSession,
        assocs: &AssocTable,
        now: Instant,
    ) -> Option<Instant> {
        let backlog = m.association().map_or(0, |a| assocs.overflow_bytes(a));
        if backlog > 0 && !self.blocked {
            self.blocked = true;
            self.service.handle_event(now, SessionEvent::Blocked);
        } else if backlog == 0 && self.blocked {
            self.blocked = false;
            self.service.handle_event(now, SessionEvent::Writable);
        }
        self.drain(m, now);
        for _ in 0..64 {
            match self.service.poll_timeout() {
                Some(t) if t <= now => {
                    self.service.handle_timeout(now);
                    self.drain(m, now);
                }
                _ => break,
            }
        }
        self.service.poll_timeout()
    }
}

impl<S: ServiceSession, H: ClientHooks<S::Event>> Application<ClientSession> for ClientApp<S, H> {
    fn on_step(&mut self, step: &mut Step<'_, ClientSession>) -> AppControl {
        let now = step.now;
        if !self.started {
            self.started = true;
            if self.connect_at_start {
                step.machine.connect(now, self.pool.clone());
            }
        }
        for e in std::mem::take(step.events) {
            self.on_session_event(step.machine, now, e);
        }
        if let Some(t) = self.service_timers(step.machine, step.assocs, now) {
            *step.wakeup = Some(step.wakeup.map_or(t, |w| w.min(t)));
        }
        let state = step.machine.state();
        if self.last_state != Some(state) {
            debug!("{}session {state:?}", self.log_prefix);
            self.last_state = Some(state);
        }
        if self.hooks.done() || self.service.is_finished() {
            return AppControl::Shutdown;
        }
        AppControl::Continue
    }

    fn begin_shutdown(&mut self, machine: &mut ClientSession, now: Instant) {
        machine.close(now);
    }
}

/// Whether a pool user session is connected to a PE, and its CSP association entries: the
/// association to that PE, if the driver knows it (none while it is between PEs).
pub fn session_csp_associations(
    s: &ClientSession,
    assocs: &AssocTable,
    now: Instant,
) -> (bool, Vec<CspAssociation>) {
    let connected = s.pe_id().filter(|_| s.state() == SessionState::Connected);
    let mut associations = Vec::new();
    if let (Some(pe), Some(a)) = (connected, s.association())
        && let Some(info) = assocs.get(a)
    {
        let mut e = info.csp_entry(ComponentId::pool_element(pe), s.last_data_ppid(), now);
        if info.kind == TransportKind::Tcp {
            e.protocol = CspProtocol::Tcp;
        }
        associations.push(e);
    }
    (connected.is_some(), associations)
}

fn csp_status(s: &ClientSession, assocs: &AssocTable, now: Instant) -> CspStatus {
    let (connected, associations) = session_csp_associations(s, assocs, now);
    CspStatus {
        status: session_status_text(u32::from(connected)),
        workload: Workload::UNKNOWN,
        associations,
    }
}

/// A driver for a client session: the library's registrars, announces and (with `csp`)
/// CSP reports as `csp_object` (`-cspidentifier=` wins, else random); `signals` catches
/// SIGINT/SIGTERM (only one driver per process may).
pub fn client_driver(
    lib: &LibraryOptions,
    config: PoolUserSessionConfig,
    signals: bool,
    csp: bool,
    csp_object: Option<u64>,
) -> io::Result<Driver<ClientSession>> {
    let dcfg = DriverConfig {
        mode: library_mode(lib),
        transport: pool_user_transport(library_transport(lib)?),
        signals,
        shutdown_grace: Duration::from_secs(2),
        ..DriverConfig::default()
    };
    let mut driver = Driver::new(dcfg, |_, _| PoolUserSession::new(config, os_rng()))?;
    if let Some(u) = announce_receiver(lib) {
        add_udp_or_warn(&mut driver, &u, "registrar announces");
    }
    if let Some(target) = lib.csp.resolve_library(&process_env).filter(|_| csp) {
        let object = match (csp_object, lib.csp_identifier) {
            (_, Some(id)) => u64::from(id),
            (Some(o), None) => o,
            (None, None) => {
                use rand_xoshiro::rand_core::Rng;
                os_rng().next_u64() & ComponentId::OBJECT_MASK
            }
        };
        let reporter = CspReporter::new(CspConfig::from_target(
            target,
            ComponentId::pool_user(object),
            component_location(&[], false),
        ))?;
        driver.enable_csp(reporter, csp_status);
    }
    Ok(driver)
}
