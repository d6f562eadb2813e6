//! Pool elements: [`PoolElement::register`] joins a pool and accepts sessions from pool users
//! ([`PoolElement::incoming`], [`ServerSession`]). The protocol is the core's
//! [`PoolElementSessions`] machine, run by this crate's [`Driver`] in a task of
//! its own ([`Spawner`]).
//!
//! # Life of a pool element
//! 1. [`PoolElement::register`] opens the session listener (its bound port and addresses are
//!    what gets registered), starts the driver and returns once the home registrar accepted
//!    the registration — or with [`Error::Registration`]. Over SCTP it also opens the PE's
//!    ASAP endpoint ([`PoolElement::asap_addrs`]): its associations to registrars leave from
//!    that port, and a registrar taking the PE over reaches it there (`asap.md` §5.5); over
//!    the TCP mapping registrars reach the PE at its session port.
//! 2. Re-registration, keep-alive answers, registrar failover and takeover are the core's;
//!    [`PoolElement::events`] reports them.
//! 3. Sessions arrive on [`PoolElement::incoming`] the moment their association is up. A
//!    session restored by a failover brings the previous PE's cookie: it is delivered before
//!    any data ([`ServerSession::cookie_echo`], [`ServerEvent::CookieEcho`]).
//! 4. [`PoolElement::deregister`] leaves the pool (open sessions stay), and
//!    [`PoolElement::shutdown`] deregisters and stops everything. Dropping the `PoolElement`
//!    deregisters too (without waiting for the answer); the driver runs until the last
//!    `PoolElement`, [`Incoming`] and [`ServerSession`] of it is gone.

use crate::common::{
    Message, SendBuffer, local_address_towards, multicast_receiver, protocol_of, registrar_table,
    resolve_mode, split_event,
};
use crate::driver::{Driver, DriverConfig, Handle, Listen};
use crate::error::{ConfigError, Error};
use crate::runtime::{Spawner, Task, fresh_seed};
use crate::transport::{TransportConfig, TransportKind, TransportMode};
use crate::watch::Watch;
use bytes::Bytes;
use futures_lite::Stream;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::pool_element::{PoolElementEvent, RegistrationFailure};
use rserpool_core::registrar_table::RegistrarTableConfig;
use rserpool_core::session::{PeSessionEvent, PoolElementSessions, SessionCloseReason};
use rserpool_core::{AssocDownReason, AssocId, ChannelKind, Instant, Machine, Output};
use rserpool_proto::asap::BusinessCard;
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::policy::Policy;
use rserpool_proto::rtf::{self, ChannelKinds};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How a [`PoolElement`] registers and serves. [`PoolElementConfig::new`] gives RSPLIB's
/// defaults; set at least a registrar (or an announce group).
#[derive(Clone, Debug)]
pub struct PoolElementConfig {
    /// The pool to join.
    pub pool_handle: PoolHandle,
    /// Selection policy with this PE's values (default Round Robin).
    pub policy: Policy,
    /// PE identifier; `None` draws a random one.
    pub pe_id: Option<PeIdentifier>,
    /// Static registrars (RSPLIB `-registrar=`), tried in order by the server hunt.
    pub registrars: Vec<SocketAddr>,
    /// ASAP announce group to learn registrars from (RSPLIB `-asapannounce=`, e.g.
    /// [`ASAP_ANNOUNCE_GROUP`](rserpool_core::registrar::ASAP_ANNOUNCE_GROUP)); `None` (default):
    /// static registrars only.
    pub announce: Option<SocketAddr>,
    /// Where pool users connect (port 0: ephemeral; default `0.0.0.0:0`).
    pub listen: SocketAddr,
    /// Addresses registered for pool users. Empty (default): the listen address, or for a
    /// wildcard listen address the local address towards the first static registrar.
    pub addresses: Vec<IpAddr>,
    /// Kernel SCTP (`Sctp`), the TCP mapping (`Tcp`), or SCTP where the kernel has it
    /// (`Auto`, default). One transport is registered.
    pub mode: TransportMode,
    /// Transport settings (RTF heartbeat, queue cap, close linger).
    pub transport: TransportConfig,
    /// Re-registration interval (RSPLIB 30 s; the registration life is 3 × this).
    pub reregistration_interval: Duration,
    /// How long to wait for a registrar's answer (RSPLIB 3 s).
    pub request_timeout: Duration,
    /// Registrar list and server hunt settings besides the registrars themselves
    /// (connect timeout, rounds, announce timeout).
    pub registrar_table: RegistrarTableConfig,
    /// Bytes queued on a session before [`ServerSession::send`] waits for the pool user to
    /// read (default 1 MiB; at most half of [`TransportConfig::max_queued_bytes`]).
    pub send_buffer: usize,
    /// Where the driver task runs (default: a thread of its own).
    pub spawner: Spawner,
    /// RNG seed (PE identifier, hunt order); `None`: a fresh one.
    pub seed: Option<u64>,
}

impl PoolElementConfig {
    /// A PE of `pool_handle` with RSPLIB's defaults, listening on an ephemeral port of every
    /// interface.
    pub fn new(pool_handle: impl Into<PoolHandle>) -> PoolElementConfig {
        PoolElementConfig {
            pool_handle: pool_handle.into(),
            policy: Policy::RoundRobin,
            pe_id: None,
            registrars: Vec::new(),
            announce: None,
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            addresses: Vec::new(),
            mode: TransportMode::Auto,
            transport: TransportConfig::default(),
            reregistration_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(3),
            registrar_table: RegistrarTableConfig::default(),
            send_buffer: 1 << 20,
            spawner: Spawner::default(),
            seed: None,
        }
    }

    /// Adds a static registrar.
    pub fn registrar(mut self, addr: SocketAddr) -> Self {
        self.registrars.push(addr);
        self
    }

    /// Sets the policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the listen address.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sets the transport mode.
    pub fn mode(mut self, mode: TransportMode) -> Self {
        self.mode = mode;
        self
    }
}

/// What a session brings besides data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// The pool user failed over to this PE and hands over the previous PE's state cookie:
    /// restore the session from it. Comes before any data of the session.
    CookieEcho(Bytes),
    /// A data message.
    Message(Message),
    /// A business card (a pool user that is itself a PE).
    BusinessCard(BusinessCard),
}

enum Item {
    Event(ServerEvent),
    Closed(SessionCloseReason),
}

struct NewSession {
    id: AssocId,
    rx: async_channel::Receiver<Item>,
}

#[derive(Debug, Default)]
struct ElementState {
    registered: bool,
    /// Bumped by every registration answer (accepted or failed).
    answers: u64,
    last_failure: Option<RegistrationFailure>,
    home: Option<ServerId>,
    /// Bumped by every `Deregistered`; with its `acknowledged`.
    deregistrations: u64,
    last_deregistration_ack: bool,
}

/// Registration events kept for [`PoolElement::events`] (the oldest go first when full).
const EVENT_BACKLOG: usize = 256;

/// The machine in the driver: the core's PE with sessions, plus routing of its events to the
/// API objects.
pub(crate) struct ElementMachine {
    pe: PoolElementSessions<Xoshiro256PlusPlus>,
    sessions: HashMap<AssocId, async_channel::Sender<Item>>,
    incoming: async_channel::Sender<NewSession>,
    events: async_channel::Sender<PoolElementEvent>,
    state: Watch<ElementState>,
}

impl ElementMachine {
    fn route(&mut self, e: PeSessionEvent) {
        let to_session = |m: &mut Self, session: AssocId, item: Item| {
            let delivered = m
                .sessions
                .get(&session)
                .is_some_and(|tx| tx.try_send(item).is_ok());
            if !delivered {
                // Nobody holds the session any more.
                m.sessions.remove(&session);
                m.pe.close(session);
            }
        };
        match e {
            PeSessionEvent::SessionOpened { session } => {
                let (tx, rx) = async_channel::unbounded();
                if self
                    .incoming
                    .try_send(NewSession { id: session, rx })
                    .is_ok()
                {
                    self.sessions.insert(session, tx);
                } else {
                    self.pe.abort(session);
                }
            }
            PeSessionEvent::Data {
                session,
                ppid,
                data,
            } => to_session(
                self,
                session,
                Item::Event(ServerEvent::Message(Message { ppid, data })),
            ),
            PeSessionEvent::CookieEcho { session, cookie } => {
                to_session(self, session, Item::Event(ServerEvent::CookieEcho(cookie)))
            }
            PeSessionEvent::BusinessCard { session, card } => {
                to_session(self, session, Item::Event(ServerEvent::BusinessCard(card)))
            }
            PeSessionEvent::SessionClosed { session, reason } => {
                if let Some(tx) = self.sessions.remove(&session) {
                    let _ = tx.try_send(Item::Closed(reason));
                }
            }
            PeSessionEvent::Registration(ev) => {
                let home = self.pe.element().home_registrar().and_then(|h| h.server_id);
                self.state.update(|s| match &ev {
                    PoolElementEvent::Registered { registrar, .. } => {
                        s.registered = true;
                        s.answers += 1;
                        s.last_failure = None;
                        s.home = registrar.or(home);
                    }
                    PoolElementEvent::RegistrationFailed { cause } => {
                        s.registered = false;
                        s.answers += 1;
                        s.last_failure = Some(cause.clone());
                    }
                    PoolElementEvent::Deregistered { acknowledged } => {
                        s.registered = false;
                        s.deregistrations += 1;
                        s.last_deregistration_ack = *acknowledged;
                    }
                    PoolElementEvent::HomeRegistrarChanged { new, .. } => {
                        s.home = Some(*new);
                    }
                    PoolElementEvent::RegistrarLost { .. } => {
                        s.registered = false;
                        s.home = None;
                    }
                });
                let _ = self.events.force_send(ev);
            }
        }
    }
}

impl ElementMachine {
    /// The home registrar's identifier arrives with its first keep-alive, without an event.
    fn learn_home(&mut self) {
        let e = self.pe.element();
        if !e.is_registered() {
            return;
        }
        if let Some(id) = e.home_registrar().and_then(|h| h.server_id)
            && self.state.get(|s| s.home != Some(id))
        {
            self.state.update(|s| s.home = Some(id));
        }
    }
}

impl Machine for ElementMachine {
    type Event = std::convert::Infallible;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        self.pe.handle_assoc_up(now, assoc, peer_addrs);
    }
    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.pe.handle_assoc_down(now, assoc, reason);
    }
    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.pe.handle_message(now, assoc, ppid, data);
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.pe.handle_datagram(now, from, ppid, data);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.pe.handle_timeout(now);
    }
    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        loop {
            let Some(o) = self.pe.poll_output() else {
                self.learn_home();
                return None;
            };
            match split_event(o) {
                Ok(o) => return Some(o),
                Err(e) => self.route(e),
            }
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.pe.poll_timeout()
    }
}

/// A pool element: registered in its pool, accepting sessions. See the
/// [module documentation](self).
///
/// ```no_run
/// use futures_lite::StreamExt;
/// use rserpool_async_std::{PoolElement, PoolElementConfig};
///
/// # async fn serve() -> Result<(), rserpool_async_std::Error> {
/// let config = PoolElementConfig::new("EchoPool").registrar("127.0.0.1:3863".parse().unwrap());
/// let pe = PoolElement::register(config).await?;
/// let mut incoming = pe.incoming();
/// while let Some(mut session) = incoming.next().await {
///     // One task per session on a real executor; inline here.
///     if let Some(state) = session.cookie_echo() {
///         println!("restoring {} bytes of state", state.len());
///     }
///     while let Ok(m) = session.recv().await {
///         session.send(m.ppid, m.data).await?;
///     }
/// }
/// # Ok(()) }
/// ```
pub struct PoolElement {
    handle: Handle<ElementMachine>,
    incoming: Incoming,
    events: async_channel::Receiver<PoolElementEvent>,
    state: Watch<ElementState>,
    task: Task,
    pe_id: PeIdentifier,
    pool_handle: PoolHandle,
    local_addrs: Vec<SocketAddr>,
    asap_addrs: Vec<SocketAddr>,
    closed: bool,
}

impl fmt::Debug for PoolElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolElement")
            .field("pool_handle", &self.pool_handle)
            .field("pe_id", &self.pe_id)
            .field("local_addrs", &self.local_addrs)
            .field("registered", &self.is_registered())
            .finish_non_exhaustive()
    }
}

/// The listen address to register: configured, bound, or the route towards a registrar.
fn advertised(config: &PoolElementConfig, bound: SocketAddr) -> Result<Vec<IpAddr>, ConfigError> {
    if !config.addresses.is_empty() {
        return Ok(config.addresses.clone());
    }
    if !bound.ip().is_unspecified() {
        return Ok(vec![bound.ip()]);
    }
    config
        .registrars
        .iter()
        .find_map(|r| local_address_towards(*r))
        .map(|ip| vec![ip])
        .ok_or(ConfigError::NoAddress)
}

impl PoolElement {
    /// Opens the session listener, registers, and returns once the registration is accepted.
    /// Fails on an unusable configuration, when the listener cannot be opened, or with
    /// [`Error::Registration`] when no registrar accepted it (the core's server hunt and
    /// request timeouts bound the wait).
    pub async fn register(config: PoolElementConfig) -> Result<PoolElement, Error> {
        if config.registrars.is_empty() && config.announce.is_none() {
            return Err(ConfigError::NoRegistrar.into());
        }
        let kind = resolve_mode(config.mode)?;
        let mode = match kind {
            TransportKind::Sctp => TransportMode::Sctp,
            TransportKind::Tcp => TransportMode::Tcp,
        };
        // Pool users' sessions, and over the TCP mapping registrars taking this PE over
        // (tcp-mapping §3.7: they reach it at its user port).
        let mut listen = vec![Listen::new(
            vec![config.listen],
            ChannelKinds::from(rtf::ChannelKind::Session).with(rtf::ChannelKind::AsapFromRegistrar),
            mode,
        )];
        if kind == TransportKind::Sctp {
            // Over SCTP the PE's ASAP endpoint: registrars record the source of its
            // registration association as its ASAP transport, and one taking it over
            // connects there (ENRP takeover, keep-alive with the H bit; asap.md §5.5).
            // The associations to registrars leave from this listener's port.
            listen.push(
                Listen::new(
                    vec![SocketAddr::new(config.listen.ip(), 0)],
                    rtf::ChannelKind::AsapFromRegistrar,
                    mode,
                )
                .source_for(rtf::ChannelKind::AsapToRegistrar),
            );
        }
        let driver_config = DriverConfig {
            transport: config.transport.clone(),
            mode,
            listen,
            udp: config
                .announce
                .map(|g| multicast_receiver(g, rserpool_core::Protocol::PPID_ASAP))
                .into_iter()
                .collect(),
            ..DriverConfig::default()
        };
        let (incoming_tx, incoming_rx) = async_channel::unbounded();
        let (events_tx, events_rx) = async_channel::bounded(EVENT_BACKLOG);
        let state = Watch::new(ElementState::default());
        let mut driver = Driver::try_build(driver_config, |listeners, _now| {
            let bound = listeners
                .iter()
                .find(|l| l.index == 0)
                .and_then(|l| l.addrs.first().copied())
                .unwrap_or(config.listen);
            let mut core = rserpool_core::pool_element::PoolElementConfig::new(
                config.pool_handle.clone(),
                protocol_of(kind),
                bound.port(),
                advertised(&config, bound)?,
            );
            core.pe_id = config.pe_id;
            core.policy = config.policy;
            core.reregistration_interval = config.reregistration_interval;
            core.request_timeout = config.request_timeout;
            core.registrar_table = registrar_table(
                &config.registrars,
                config.announce,
                kind,
                config.registrar_table.clone(),
            );
            let rng = Xoshiro256PlusPlus::seed_from_u64(config.seed.unwrap_or_else(fresh_seed));
            Ok::<_, Error>(ElementMachine {
                pe: PoolElementSessions::new(core, rng)?,
                sessions: HashMap::new(),
                incoming: incoming_tx,
                events: events_tx,
                state: state.clone(),
            })
        })?;
        driver.route_accepted(|m: &mut ElementMachine, now, assoc, info| {
            if info.channel == Some(ChannelKind::AsapToPoolElement) {
                m.pe.handle_registrar_assoc_up(now, assoc, &info.peer_addrs);
            } else {
                m.pe.handle_assoc_up(now, assoc, &info.peer_addrs);
            }
        });
        let pe_id = driver.machine_mut().pe.element().pe_id();
        let local_addrs = driver
            .listeners()
            .iter()
            .filter(|l| l.index == 0)
            .flat_map(|l| l.addrs.iter().copied())
            .collect();
        let asap_addrs = driver
            .listeners()
            .iter()
            .filter(|l| l.index == 1)
            .flat_map(|l| l.addrs.iter().copied())
            .collect();
        let handle = driver.handle();
        let name = format!("rserpool-pe-{:08x}", pe_id.0);
        let task = Task::spawn(&config.spawner, &name, driver.run())?;
        let pe = PoolElement {
            incoming: Incoming {
                handle: handle.clone(),
                rx: Box::pin(incoming_rx),
                send_buffer: SendBuffer::new(config.send_buffer, config.transport.max_queued_bytes),
            },
            handle,
            events: events_rx,
            state,
            task,
            pe_id,
            pool_handle: config.pool_handle.clone(),
            local_addrs,
            asap_addrs,
            closed: false,
        };
        pe.handle.call(|m, now| m.pe.register(now)).await?;
        let outcome = pe
            .state
            .wait_for(|s| {
                if s.registered {
                    Some(Ok(()))
                } else {
                    s.last_failure.clone().map(Err)
                }
            })
            .await;
        match outcome {
            Ok(()) => Ok(pe),
            Err(cause) => {
                pe.stop().await;
                Err(Error::Registration(cause))
            }
        }
    }

    /// The PE identifier.
    pub fn pe_id(&self) -> PeIdentifier {
        self.pe_id
    }

    /// The pool.
    pub fn pool_handle(&self) -> &PoolHandle {
        &self.pool_handle
    }

    /// The session listener's addresses (ephemeral port resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Over SCTP, the PE's ASAP endpoint: registrars taking it over connect here, and its
    /// associations to registrars leave from this port. Empty over the TCP mapping.
    pub fn asap_addrs(&self) -> &[SocketAddr] {
        &self.asap_addrs
    }

    /// True until the driver task has ended (after [`PoolElement::shutdown`], or when its
    /// executor dropped it).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// True while the last registration is accepted and the home registrar is reachable.
    pub fn is_registered(&self) -> bool {
        self.state.get(|s| s.registered)
    }

    /// The home registrar's server identifier, once known (ASAP registration answers do not
    /// carry it: it comes with the registrar's first keep-alive, or a takeover).
    pub fn home_registrar(&self) -> Option<ServerId> {
        self.state.get(|s| s.home)
    }

    /// Waits until the PE is registered with a known home registrar other than `not` (e.g.
    /// after its registrar failed: re-registration elsewhere or a takeover) and returns it.
    pub async fn wait_home(&self, not: Option<ServerId>) -> ServerId {
        self.state
            .wait_for(|s| match s.home {
                Some(h) if s.registered && Some(h) != not => Some(h),
                _ => None,
            })
            .await
    }

    /// The registration's events (re-registrations, failures, registrar changes), as a
    /// [`Stream`]. The last 256 are kept for whoever reads them; clones share them.
    pub fn events(&self) -> impl Stream<Item = PoolElementEvent> + Send + Unpin + 'static {
        Box::pin(self.events.clone())
    }

    /// Incoming sessions, as a [`Stream`] of [`ServerSession`]s; clones share them (each
    /// session goes to one). Ends when the PE stops.
    pub fn incoming(&self) -> Incoming {
        self.incoming.clone()
    }

    /// The next incoming session.
    pub async fn accept(&self) -> Result<ServerSession, Error> {
        let mut i = self.incoming.clone();
        futures_lite::StreamExt::next(&mut i)
            .await
            .ok_or(Error::Stopped)
    }

    /// Number of open sessions.
    pub async fn session_count(&self) -> Result<usize, Error> {
        Ok(self.handle.call(|m, _| m.pe.session_count()).await?)
    }

    /// Sets the load of a load-based policy and re-registers at once; returns once the
    /// registrar accepted it (at once when the PE is not registered just now: the value goes
    /// with the next registration).
    pub async fn set_load(&self, load: u32) -> Result<(), Error> {
        let before = self.state.get(|s| s.answers);
        let (ok, wait) = self
            .handle
            .call(move |m, now| {
                let wait = m.pe.element().is_registered();
                (m.pe.set_load(now, load), wait)
            })
            .await?;
        if !ok {
            return Err(Error::NoLoad);
        }
        if wait {
            self.answer_after(before).await
        } else {
            Ok(())
        }
    }

    /// Replaces the policy (and its values) and re-registers at once; returns as
    /// [`PoolElement::set_load`] does. A policy other than the pool's is rejected by the
    /// registrar ([`Error::Registration`]), and the PE is then out of the pool.
    pub async fn set_policy(&self, policy: Policy) -> Result<(), Error> {
        let before = self.state.get(|s| s.answers);
        let wait = self
            .handle
            .call(move |m, now| {
                let wait = m.pe.element().is_registered();
                m.pe.set_policy(now, policy);
                wait
            })
            .await?;
        if wait {
            self.answer_after(before).await
        } else {
            Ok(())
        }
    }

    /// Waits for a registration answer after the `before`-th one.
    async fn answer_after(&self, before: u64) -> Result<(), Error> {
        let stopped = self.task.clone();
        let answer = async {
            self.state
                .wait_for(|s| {
                    (s.answers > before).then(|| match &s.last_failure {
                        None => Ok(()),
                        Some(c) => Err(Error::Registration(c.clone())),
                    })
                })
                .await
        };
        futures_lite::future::or(answer, async {
            stopped.finished().await;
            Err(Error::Stopped)
        })
        .await
    }

    /// Leaves the pool (open sessions stay open) and waits for the registrar's answer.
    /// Returns true if the registrar confirmed it.
    pub async fn deregister(&self) -> Result<bool, Error> {
        let before = self.state.get(|s| s.deregistrations);
        self.handle.call(|m, now| m.pe.deregister(now)).await?;
        let stopped = self.task.clone();
        let done = async {
            Ok(self
                .state
                .wait_for(|s| (s.deregistrations > before).then_some(s.last_deregistration_ack))
                .await)
        };
        futures_lite::future::or(done, async {
            stopped.finished().await;
            Err(Error::Stopped)
        })
        .await
    }

    /// Joins the pool again after [`PoolElement::deregister`] (or a rejected registration),
    /// and waits for the answer.
    pub async fn reregister(&self) -> Result<(), Error> {
        let before = self.state.get(|s| s.answers);
        self.handle.call(|m, now| m.pe.register(now)).await?;
        self.answer_after(before).await
    }

    /// Deregisters (if registered), then stops the driver: open sessions are shut down
    /// gracefully.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.closed = true;
        let r = if self.is_registered() {
            self.deregister().await.map(|_| ())
        } else {
            Ok(())
        };
        self.stop().await;
        r
    }

    /// Stops at once, as a crash would: no deregistration, sockets closed by the kernel.
    /// Pool users fail over; the registrar drops the PE when its association goes.
    pub async fn kill(mut self) {
        self.closed = true;
        self.task.kill().await;
    }

    async fn stop(&self) {
        let _ = self.handle.shutdown().await;
        self.task.finished().await;
    }
}

impl Drop for PoolElement {
    fn drop(&mut self) {
        if !self.closed {
            // Best effort: the deregistration goes out before the driver closes.
            let _ = self.handle.post(|m, now| m.pe.deregister(now));
        }
    }
}

/// The incoming sessions of a [`PoolElement`] ([`PoolElement::incoming`]).
pub struct Incoming {
    handle: Handle<ElementMachine>,
    rx: Pin<Box<async_channel::Receiver<NewSession>>>,
    send_buffer: SendBuffer,
}

impl Clone for Incoming {
    fn clone(&self) -> Self {
        Incoming {
            handle: self.handle.clone(),
            rx: Box::pin((*self.rx).clone()),
            send_buffer: self.send_buffer,
        }
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("waiting", &self.rx.len())
            .finish()
    }
}

impl Stream for Incoming {
    type Item = ServerSession;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerSession>> {
        match self.rx.as_mut().poll_next(cx) {
            Poll::Ready(Some(n)) => Poll::Ready(Some(ServerSession {
                id: n.id,
                handle: self.handle.clone(),
                rx: Box::pin(n.rx),
                cookie_echo: None,
                business_card: None,
                closed: None,
                sender: SessionSender {
                    id: n.id,
                    handle: self.handle.clone(),
                    send_buffer: self.send_buffer,
                },
            })),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One pool user's session with this pool element.
pub struct ServerSession {
    id: AssocId,
    handle: Handle<ElementMachine>,
    rx: Pin<Box<async_channel::Receiver<Item>>>,
    cookie_echo: Option<Bytes>,
    business_card: Option<BusinessCard>,
    /// `Some(reason)`: ended (`None` inside: by us).
    closed: Option<Option<SessionCloseReason>>,
    sender: SessionSender,
}

/// Sends on a [`ServerSession`] ([`ServerSession::sender`]); cheap to clone.
#[derive(Clone)]
pub struct SessionSender {
    id: AssocId,
    handle: Handle<ElementMachine>,
    send_buffer: SendBuffer,
}

impl fmt::Debug for SessionSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSender")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SessionSender {
    /// The session.
    pub fn id(&self) -> AssocId {
        self.id
    }

    /// As [`ServerSession::send`].
    pub async fn send(&self, ppid: u32, data: impl Into<Bytes>) -> Result<(), Error> {
        let (id, data, buffer) = (self.id, data.into(), self.send_buffer);
        let wait = self
            .handle
            .call_with(move |m, ctx| {
                m.pe.send(id, ppid, data)?;
                Ok::<_, Error>(
                    ctx.queued_bytes(id)
                        .is_some_and(|q| q > buffer.high)
                        .then(|| ctx.queue_below(id, buffer.low())),
                )
            })
            .await??;
        if let Some(w) = wait {
            w.await;
        }
        Ok(())
    }

    /// As [`ServerSession::send_cookie`].
    pub async fn send_cookie(&self, cookie: impl Into<Bytes>) -> Result<(), Error> {
        let (id, cookie) = (self.id, cookie.into());
        Ok(self
            .handle
            .call(move |m, _| m.pe.send_cookie(id, cookie))
            .await??)
    }
}

impl fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSession")
            .field("id", &self.id)
            .field("cookie_echo", &self.cookie_echo.as_ref().map(Bytes::len))
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// The session's identifier (its association, unique within the PE).
    pub fn id(&self) -> AssocId {
        self.id
    }

    /// The state cookie the pool user echoed after failing over to this PE, once it has
    /// arrived. The pool user sends it first, so it is here when [`ServerSession::recv`]
    /// returns the session's first message (a session that has not failed over has none).
    pub fn cookie_echo(&self) -> Option<&Bytes> {
        self.cookie_echo.as_ref()
    }

    /// The last business card the pool user sent.
    pub fn business_card(&self) -> Option<&BusinessCard> {
        self.business_card.as_ref()
    }

    /// The peer's addresses.
    pub async fn peer_addrs(&self) -> Result<Vec<SocketAddr>, Error> {
        let id = self.id;
        Ok(self
            .handle
            .call_with(move |_, ctx| ctx.peer_addrs(id))
            .await??)
    }

    /// The next event of the session: cookie echo, data message or business card. Fails
    /// with [`Error::Closed`] once the session has ended.
    pub async fn recv_event(&mut self) -> Result<ServerEvent, Error> {
        if let Some(c) = self.closed {
            return Err(Error::Closed(c));
        }
        match self.rx.recv().await {
            Ok(Item::Event(e)) => {
                match &e {
                    ServerEvent::CookieEcho(c) => self.cookie_echo = Some(c.clone()),
                    ServerEvent::BusinessCard(b) => self.business_card = Some(b.clone()),
                    ServerEvent::Message(_) => {}
                }
                Ok(e)
            }
            Ok(Item::Closed(reason)) => {
                self.closed = Some(Some(reason));
                Err(Error::Closed(Some(reason)))
            }
            Err(_) => {
                self.closed = Some(None);
                Err(Error::Stopped)
            }
        }
    }

    /// The next data message (a cookie echo or business card met on the way is kept:
    /// [`ServerSession::cookie_echo`], [`ServerSession::business_card`]).
    pub async fn recv(&mut self) -> Result<Message, Error> {
        loop {
            if let ServerEvent::Message(m) = self.recv_event().await? {
                return Ok(m);
            }
        }
    }

    /// Sends a data message (`ppid` must not be 11). Waits while more than the send buffer
    /// is queued for the pool user.
    pub async fn send(&self, ppid: u32, data: impl Into<Bytes>) -> Result<(), Error> {
        self.sender.send(ppid, data).await
    }

    /// Sends a state cookie (ASAP_COOKIE): the pool user keeps the newest one and echoes it
    /// to the next PE after a failover.
    pub async fn send_cookie(&self, cookie: impl Into<Bytes>) -> Result<(), Error> {
        self.sender.send_cookie(cookie).await
    }

    /// A handle that sends on this session from another task (while this one receives).
    /// It does not keep the session open: dropping the `ServerSession` closes it.
    pub fn sender(&self) -> SessionSender {
        self.sender.clone()
    }

    /// Ends the session gracefully (queued data is still delivered).
    pub async fn close(mut self) -> Result<(), Error> {
        self.end(false).await
    }

    /// Aborts the session.
    pub async fn abort(mut self) -> Result<(), Error> {
        self.end(true).await
    }

    async fn end(&mut self, abort: bool) -> Result<(), Error> {
        if self.closed.is_some() {
            return Ok(());
        }
        self.closed = Some(None);
        let id = self.id;
        self.handle
            .call(move |m, _| {
                m.sessions.remove(&id);
                if abort {
                    m.pe.abort(id)
                } else {
                    m.pe.close(id)
                }
            })
            .await?;
        Ok(())
    }
}

impl Drop for ServerSession {
    fn drop(&mut self) {
        if self.closed.is_none() {
            let id = self.id;
            let _ = self.handle.post(move |m, _| {
                m.sessions.remove(&id);
                m.pe.close(id);
            });
        }
    }
}
