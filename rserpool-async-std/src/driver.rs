//! The generic driver: one async task that owns a [`Machine`], feeds it transport events
//! and timeouts, carries out its outputs, and talks to the application through a command
//! channel ([`Handle`]) and an event stream ([`Events`]).
//!
//! # Loop
//! Each turn of [`Driver::run`]:
//! 1. commands from [`Handle`]s: each closure runs with `&mut M` and the current time, then
//!    the machine's outputs are drained;
//! 2. transport events ([`Transports::poll_event`]) become `handle_assoc_up`,
//!    `handle_message`, `handle_assoc_down`, `handle_datagram`, each followed by a drain;
//! 3. when [`Machine::poll_timeout`] has passed, `handle_timeout(now)` and a drain;
//! 4. otherwise the task sleeps until a command, a socket or a timer (`async_io::Timer` at
//!    the machine's deadline) wakes it.
//!
//! Draining outputs ([`Output`]):
//! * `Transmit` to an association → [`Transports::send`] (queued, never blocking). When the
//!   association's queue is over [`TransportConfig::max_queued_bytes`] the peer is not
//!   reading: the association is aborted and the machine gets
//!   `handle_assoc_down(Lost)`. A message over the size limit is dropped with a warning, an
//!   empty one on SCTP (which cannot carry it) silently.
//! * `Transmit` as UDP → the configured UDP socket with the same PPID and address family
//!   (else any of that family, else an ephemeral socket bound on first use).
//! * `Connect` → [`Transports::connect_as`] with the machine's id; SCTP destinations use
//!   kernel SCTP or RTF/TCP according to [`DriverConfig::mode`]; immediate failure →
//!   `handle_assoc_down(ConnectFailed)`.
//! * `Close` → [`Transports::close`], then `handle_assoc_down(Closed)` (as the simulator
//!   does).
//! * `Event` → the [`Events`] stream (unbounded; dropped when nobody holds [`Events`]).
//!
//! Down reasons: transport `Lost` and `ProtocolError` → [`AssocDownReason::Lost`], `Abort`
//! → `Lost`, `Shutdown` → `Shutdown`, `ConnectFailed` → `ConnectFailed`.

use crate::clock::Clock;
use crate::transport::{
    DownReason, SendError, SocketId, TransportConfig, TransportEvent, TransportKind, TransportMode,
    Transports, UdpOptions, sctp_available,
};
use async_io::Timer;
use futures_lite::Stream;
use rserpool_core::{AssocDownReason, AssocId, ChannelKind, Destination, Machine, Output};
use rserpool_proto::rtf::{self, ChannelKinds};
use rserpool_proto::transport::TransportProtocol;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Commands, transport events and timeouts handled per wake-up before yielding.
const BATCH: usize = 256;
/// Longest sleep before the machine's deadline is looked at again.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// A listener to open at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Addresses (SCTP: all, multi-homed; TCP: the first). Port 0 = ephemeral.
    pub addrs: Vec<SocketAddr>,
    /// Channel kinds served (RTF HELLO; for SCTP, a single kind is reported in `Up`).
    pub channels: ChannelKinds,
    /// `Tcp` / `Sctp`: that transport; `Auto`: every transport this host has (kernel SCTP
    /// when available, and RTF over TCP), as a registrar does (tcp-mapping.md §3.8).
    pub mode: TransportMode,
    /// Over SCTP: outgoing associations of this channel kind leave from this listener's
    /// addresses and port ([`Transports::listen_as_source`]); ignored over TCP. `None`
    /// (default): a plain listener.
    pub source_for: Option<rtf::ChannelKind>,
}

impl Listen {
    /// A listener on `addrs` for `channels` over the transport(s) of `mode`.
    pub fn new(
        addrs: Vec<SocketAddr>,
        channels: impl Into<ChannelKinds>,
        mode: TransportMode,
    ) -> Listen {
        Listen {
            addrs,
            channels: channels.into(),
            mode,
            source_for: None,
        }
    }

    /// An RTF/TCP listener on `addr` for `channels`.
    pub fn tcp(addr: SocketAddr, channels: impl Into<ChannelKinds>) -> Listen {
        Listen::new(vec![addr], channels, TransportMode::Tcp)
    }

    /// Over SCTP, outgoing associations of channel kind `channel` leave from this
    /// listener's endpoint. A pool element's ASAP listener uses it for
    /// [`rtf::ChannelKind::AsapToRegistrar`], so that a registrar taking it over can reach
    /// it at the address and port its registration came from (as the mio driver's
    /// `ListenerConfig::source_for`).
    pub fn source_for(mut self, channel: rtf::ChannelKind) -> Listen {
        self.source_for = Some(channel);
        self
    }
}

/// A UDP socket to open at start (ASAP announces, ENRP presence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpEndpoint {
    /// Local address (multicast: the group's port on the wildcard address).
    pub bind: SocketAddr,
    /// PPID meaning of datagrams received here (11 ASAP announce, 12 ENRP presence); also
    /// selects this socket for machine datagrams with that PPID.
    pub ppid: u32,
    /// Socket options.
    pub options: UdpOptions,
    /// Multicast groups to join (on the kernel's default interface).
    pub join: Vec<IpAddr>,
}

/// Settings of a [`Driver`].
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Transport settings (RTF heartbeat, queue caps, close linger, SCTP options).
    pub transport: TransportConfig,
    /// How `Connect` to an SCTP destination is carried out: kernel SCTP (`Sctp`), RTF over
    /// TCP (`Tcp`), or SCTP when the kernel has it (`Auto`). TCP destinations always use
    /// RTF over TCP (except under `Sctp`, where they fail).
    pub mode: TransportMode,
    /// Listeners.
    pub listen: Vec<Listen>,
    /// UDP sockets.
    pub udp: Vec<UdpEndpoint>,
    /// Capacity of the command channel (callers of [`Handle::call`] wait when it is full).
    pub command_capacity: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            transport: TransportConfig::default(),
            mode: TransportMode::Auto,
            listen: Vec::new(),
            udp: Vec::new(),
            command_capacity: 1024,
        }
    }
}

/// A listening socket opened by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundListener {
    /// Index of its [`Listen`] in [`DriverConfig::listen`].
    pub index: usize,
    /// Its transport.
    pub kind: TransportKind,
    /// The transports' id of it.
    pub socket: SocketId,
    /// Bound addresses (with the ephemeral port resolved).
    pub addrs: Vec<SocketAddr>,
}

/// A UDP socket opened by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundUdp {
    /// The transports' id of it.
    pub socket: SocketId,
    /// PPID of datagrams received on it.
    pub ppid: u32,
    /// Bound address.
    pub addr: SocketAddr,
}

/// What the driver's closures see besides the machine.
pub struct DriverCtx<'a> {
    now: rserpool_core::Instant,
    clock: &'a Clock,
    transports: &'a Transports,
    listeners: &'a [BoundListener],
    waiters: &'a mut Vec<QueueWaiter>,
}

impl fmt::Debug for DriverCtx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverCtx")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl DriverCtx<'_> {
    /// The time the closure runs at (also passed to the machine).
    pub fn now(&self) -> rserpool_core::Instant {
        self.now
    }

    /// The driver's clock.
    pub fn clock(&self) -> &Clock {
        self.clock
    }

    /// Bytes queued on `assoc` and not yet taken by its socket (backpressure).
    pub fn queued_bytes(&self, assoc: AssocId) -> Option<usize> {
        self.transports.queued_bytes(assoc)
    }

    /// The peer's addresses of `assoc`.
    pub fn peer_addrs(&self, assoc: AssocId) -> io::Result<Vec<SocketAddr>> {
        self.transports.peer_addrs(assoc)
    }

    /// Our addresses of `assoc`.
    pub fn local_addrs(&self, assoc: AssocId) -> io::Result<Vec<SocketAddr>> {
        self.transports.local_addrs(assoc)
    }

    /// The transport of `assoc`.
    pub fn kind(&self, assoc: AssocId) -> Option<TransportKind> {
        self.transports.kind(assoc)
    }

    /// `sack_freq` of `assoc`'s SCTP socket (1: every packet acknowledged at once; 2 while a
    /// bulk transfer runs, [`Machine::poll_bulk_transfer`]); `None` over the TCP mapping.
    pub fn sack_freq(&self, assoc: AssocId) -> io::Result<Option<u32>> {
        self.transports.sack_freq(assoc)
    }

    /// The listeners.
    pub fn listeners(&self) -> &[BoundListener] {
        self.listeners
    }

    /// A future that completes once at most `bytes` are queued on `assoc` (at once if that
    /// is already so), or when the association is gone. Senders use it for backpressure:
    /// send, and if [`DriverCtx::queued_bytes`] is above a high-water mark, wait for the
    /// queue to drain below a low-water mark before sending more.
    pub fn queue_below(&mut self, assoc: AssocId, bytes: usize) -> QueueBelow {
        let (tx, rx) = async_channel::bounded(1);
        if self
            .transports
            .queued_bytes(assoc)
            .is_some_and(|q| q > bytes)
        {
            self.waiters.push(QueueWaiter { assoc, bytes, tx });
        }
        // Otherwise `tx` is dropped here and the future completes at once.
        QueueBelow { rx: Box::pin(rx) }
    }
}

/// Someone waiting for an association's send queue to drain ([`DriverCtx::queue_below`]).
struct QueueWaiter {
    assoc: AssocId,
    bytes: usize,
    tx: async_channel::Sender<()>,
}

/// Completes when an association's send queue has drained ([`DriverCtx::queue_below`]), the
/// association is gone, or the driver stopped.
#[must_use = "a future does nothing unless awaited"]
pub struct QueueBelow {
    rx: Pin<Box<async_channel::Receiver<()>>>,
}

impl fmt::Debug for QueueBelow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBelow").finish_non_exhaustive()
    }
}

impl Future for QueueBelow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The driver never sends: it drops the sender when the condition holds.
        match self.rx.as_mut().poll_next(cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}

type Call<M> = Box<dyn FnOnce(&mut M, &mut DriverCtx<'_>) + Send>;

enum Command<M> {
    Call(Call<M>),
    Shutdown,
}

/// The driver stopped (shut down or dropped) before the command ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the driver has stopped")
    }
}

impl std::error::Error for Stopped {}

/// Calls into a running machine. Cheap to clone; `Send` and `Sync`.
pub struct Handle<M> {
    tx: async_channel::Sender<Command<M>>,
    listeners: Arc<[BoundListener]>,
    udp: Arc<[BoundUdp]>,
    clock: Clock,
}

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            listeners: self.listeners.clone(),
            udp: self.udp.clone(),
            clock: self.clock,
        }
    }
}

impl<M> fmt::Debug for Handle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("listeners", &self.listeners)
            .field("stopped", &self.tx.is_closed())
            .finish_non_exhaustive()
    }
}

impl<M: 'static> Handle<M> {
    /// Runs `f` on the machine with the current time, drains its outputs, and returns `f`'s
    /// result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, Stopped>
    where
        F: FnOnce(&mut M, rserpool_core::Instant) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.call_with(move |m, ctx| f(m, ctx.now())).await
    }

    /// As [`Handle::call`], with the driver's context (queue sizes, addresses).
    pub async fn call_with<R, F>(&self, f: F) -> Result<R, Stopped>
    where
        F: FnOnce(&mut M, &mut DriverCtx<'_>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (rtx, rrx) = async_channel::bounded(1);
        let call: Call<M> = Box::new(move |m, ctx| {
            let _ = rtx.try_send(f(m, ctx));
        });
        self.tx
            .send(Command::Call(call))
            .await
            .map_err(|_| Stopped)?;
        rrx.recv().await.map_err(|_| Stopped)
    }

    /// Queues `f` without waiting for it (fails when the command channel is full or the
    /// driver stopped).
    pub fn post<F>(&self, f: F) -> Result<(), Stopped>
    where
        F: FnOnce(&mut M, rserpool_core::Instant) + Send + 'static,
    {
        let call: Call<M> = Box::new(move |m, ctx| f(m, ctx.now()));
        self.tx.try_send(Command::Call(call)).map_err(|_| Stopped)
    }

    /// Asks the driver to stop: associations are closed gracefully (for at most
    /// [`TransportConfig::close_linger`]) and [`Driver::run`] returns the machine.
    pub async fn shutdown(&self) -> Result<(), Stopped> {
        self.tx.send(Command::Shutdown).await.map_err(|_| Stopped)
    }

    /// True once the driver has stopped.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// The listeners the driver opened.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The first address of the first listener of [`Listen`] number `index` (convenience for
    /// ephemeral ports).
    pub fn listen_addr(&self, index: usize) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.index == index)
            .and_then(|l| l.addrs.first().copied())
    }

    /// The UDP sockets the driver opened.
    pub fn udp_sockets(&self) -> &[BoundUdp] {
        &self.udp
    }

    /// The driver's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

/// The machine's events, as a [`Stream`] (ends when the driver stops).
pub struct Events<E> {
    rx: Pin<Box<async_channel::Receiver<E>>>,
}

impl<E> fmt::Debug for Events<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl<E> Events<E> {
    /// The next event; `None` once the driver stopped and every event was taken.
    pub async fn recv(&mut self) -> Option<E> {
        self.rx.recv().await.ok()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<E> {
        self.rx.try_recv().ok()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl<E> Stream for Events<E> {
    type Item = E;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<E>> {
        self.rx.as_mut().poll_next(cx)
    }
}

enum Deferred {
    Down(AssocId, AssocDownReason),
}

/// An association the driver accepted, as shown to [`Driver::route_accepted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Its transport.
    pub kind: TransportKind,
    /// The listener that accepted it.
    pub listener: SocketId,
    /// Its channel kind: the RTF HELLO's, or for SCTP the listener's single kind.
    pub channel: Option<ChannelKind>,
    /// The peer's addresses.
    pub peer_addrs: Vec<SocketAddr>,
}

type AcceptFn<M> = Box<dyn FnMut(&mut M, rserpool_core::Instant, AssocId, &Accepted) + Send>;

/// The driver of one machine (see the module documentation).
pub struct Driver<M: Machine> {
    machine: M,
    clock: Clock,
    mode: TransportMode,
    transports: Transports,
    listeners: Arc<[BoundListener]>,
    udp: Arc<[BoundUdp]>,
    /// Sockets bound on demand for datagrams of a family without a configured socket.
    udp_extra: Vec<BoundUdp>,
    commands: Pin<Box<async_channel::Receiver<Command<M>>>>,
    /// Taken when the driver runs: once every [`Handle`] is gone the channel closes and
    /// the driver stops.
    command_tx: Option<async_channel::Sender<Command<M>>>,
    events_tx: async_channel::Sender<M::Event>,
    events_rx: Option<Events<M::Event>>,
    deferred: VecDeque<Deferred>,
    timer: Timer,
    timer_at: Option<std::time::Instant>,
    waiters: Vec<QueueWaiter>,
    accept: Option<AcceptFn<M>>,
}

impl<M: Machine> fmt::Debug for Driver<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("transports", &self.transports)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

fn down_reason(r: DownReason) -> AssocDownReason {
    match r {
        DownReason::Shutdown => AssocDownReason::Shutdown,
        DownReason::ConnectFailed => AssocDownReason::ConnectFailed,
        DownReason::Lost | DownReason::Abort | DownReason::ProtocolError => AssocDownReason::Lost,
    }
}

/// The RTF channel kind of a core channel kind.
pub fn rtf_channel(kind: ChannelKind) -> rtf::ChannelKind {
    match kind {
        ChannelKind::AsapToRegistrar => rtf::ChannelKind::AsapToRegistrar,
        ChannelKind::AsapToPoolElement => rtf::ChannelKind::AsapFromRegistrar,
        ChannelKind::Enrp => rtf::ChannelKind::Enrp,
        ChannelKind::Session => rtf::ChannelKind::Session,
    }
}

/// The core's channel kind of an RTF channel kind.
pub fn core_channel(kind: rtf::ChannelKind) -> ChannelKind {
    match kind {
        rtf::ChannelKind::AsapToRegistrar => ChannelKind::AsapToRegistrar,
        rtf::ChannelKind::AsapFromRegistrar => ChannelKind::AsapToPoolElement,
        rtf::ChannelKind::Enrp => ChannelKind::Enrp,
        rtf::ChannelKind::Session => ChannelKind::Session,
    }
}

fn open_listener(
    transports: &mut Transports,
    index: usize,
    l: &Listen,
) -> io::Result<Vec<BoundListener>> {
    let kinds: Vec<TransportKind> = match l.mode {
        TransportMode::Tcp => vec![TransportKind::Tcp],
        TransportMode::Sctp => vec![TransportKind::Sctp],
        TransportMode::Auto if sctp_available() => {
            vec![TransportKind::Sctp, TransportKind::Tcp]
        }
        TransportMode::Auto => vec![TransportKind::Tcp],
    };
    let mut out: Vec<BoundListener> = Vec::new();
    for kind in kinds {
        // A second transport on an ephemeral port takes the first one's port if it can
        // (SCTP and the TCP mapping on one port number, as a registrar's 3863).
        let same_port: Option<Vec<SocketAddr>> = out.first().and_then(|first| {
            let port = first.addrs.first()?.port();
            l.addrs.iter().all(|a| a.port() == 0).then(|| {
                l.addrs
                    .iter()
                    .map(|a| SocketAddr::new(a.ip(), port))
                    .collect()
            })
        });
        let mut listen = |addrs: &[SocketAddr]| match l.source_for {
            Some(channel) => transports.listen_as_source(addrs, kind, l.channels, channel),
            None => transports.listen(addrs, kind, l.channels),
        };
        let socket = match same_port {
            Some(addrs) => match listen(&addrs) {
                Ok(s) => s,
                Err(_) => listen(&l.addrs)?,
            },
            None => listen(&l.addrs)?,
        };
        let addrs = transports.socket_local_addrs(socket)?;
        out.push(BoundListener {
            index,
            kind,
            socket,
            addrs,
        });
    }
    Ok(out)
}

impl<M: Machine> Driver<M> {
    /// Opens the configured listeners and UDP sockets for `machine`, with a clock starting
    /// now. Nothing runs until [`Driver::run`] is awaited.
    pub fn new(machine: M, config: DriverConfig) -> io::Result<Driver<M>> {
        Driver::with_clock(machine, config, Clock::new())
    }

    /// As [`Driver::new`] with the given clock (for a machine created at `clock.now()`).
    pub fn with_clock(machine: M, config: DriverConfig, clock: Clock) -> io::Result<Driver<M>> {
        Driver::build_with_clock(config, clock, |_, _| Ok::<M, io::Error>(machine))
    }

    /// Opens the configured listeners and UDP sockets, then builds the machine with `make`,
    /// which sees the bound listeners (with ephemeral ports resolved: a pool element
    /// registers the port it got) and the driver's start time.
    pub fn build(
        config: DriverConfig,
        make: impl FnOnce(&[BoundListener], rserpool_core::Instant) -> M,
    ) -> io::Result<Driver<M>> {
        Driver::build_with_clock(config, Clock::new(), |l, now| Ok(make(l, now)))
    }

    /// As [`Driver::build`] with a `make` that may fail (e.g. on a configuration the machine
    /// refuses); its error, or the socket error, is returned.
    pub fn try_build<E: From<io::Error>>(
        config: DriverConfig,
        make: impl FnOnce(&[BoundListener], rserpool_core::Instant) -> Result<M, E>,
    ) -> Result<Driver<M>, E> {
        Driver::build_with_clock(config, Clock::new(), make)
    }

    fn build_with_clock<E: From<io::Error>>(
        config: DriverConfig,
        clock: Clock,
        make: impl FnOnce(&[BoundListener], rserpool_core::Instant) -> Result<M, E>,
    ) -> Result<Driver<M>, E> {
        let mut transports = Transports::new(config.transport.clone())?;
        let mut listeners = Vec::new();
        for (index, l) in config.listen.iter().enumerate() {
            listeners.extend(open_listener(&mut transports, index, l)?);
        }
        let mut udp = Vec::new();
        for u in &config.udp {
            let socket = transports.udp_bind(u.bind, &u.options)?;
            for g in &u.join {
                transports.udp_join_multicast(socket, *g, Ipv4Addr::UNSPECIFIED, 0)?;
            }
            let addr = transports
                .socket_local_addrs(socket)?
                .first()
                .copied()
                .unwrap_or(u.bind);
            udp.push(BoundUdp {
                socket,
                ppid: u.ppid,
                addr,
            });
        }
        let machine = make(&listeners, clock.now())?;
        let (command_tx, commands) = async_channel::bounded(config.command_capacity.max(1));
        let (events_tx, events_rx) = async_channel::unbounded();
        Ok(Driver {
            machine,
            clock,
            mode: config.mode,
            transports,
            listeners: listeners.into(),
            udp: udp.into(),
            udp_extra: Vec::new(),
            commands: Box::pin(commands),
            command_tx: Some(command_tx),
            events_tx,
            events_rx: Some(Events {
                rx: Box::pin(events_rx),
            }),
            deferred: VecDeque::new(),
            timer: Timer::never(),
            timer_at: None,
            waiters: Vec::new(),
            accept: None,
        })
    }

    /// Opens another listener before the driver runs (e.g. a second transport on the port
    /// the first one got). Handles made afterwards list it.
    pub fn listen(&mut self, listen: &Listen) -> io::Result<Vec<BoundListener>> {
        let index = self
            .listeners
            .iter()
            .map(|l| l.index + 1)
            .max()
            .unwrap_or(0);
        let new = open_listener(&mut self.transports, index, listen)?;
        let mut all = self.listeners.to_vec();
        all.extend(new.iter().cloned());
        self.listeners = all.into();
        Ok(new)
    }

    /// Reports every association the driver **accepts** through `route` instead of
    /// [`Machine::handle_assoc_up`]. `route` sees its [`Accepted`] description — above all
    /// its channel kind — and calls the machine method that fits: e.g. a pool element hands
    /// [`ChannelKind::AsapToPoolElement`] (a registrar taking it over) to
    /// `PoolElementSessions::handle_registrar_assoc_up` and everything else to
    /// `handle_assoc_up`. Associations the machine opened itself are not routed. (The mio
    /// driver's `route_accepted` does the same.)
    pub fn route_accepted(
        &mut self,
        route: impl FnMut(&mut M, rserpool_core::Instant, AssocId, &Accepted) + Send + 'static,
    ) {
        self.accept = Some(Box::new(route));
    }

    /// A handle to call into the machine while it runs.
    pub fn handle(&self) -> Handle<M> {
        let tx = match &self.command_tx {
            Some(tx) => tx.clone(),
            // Only `run` takes it, and `run` consumes the driver.
            None => async_channel::bounded(1).0,
        };
        Handle {
            tx,
            listeners: self.listeners.clone(),
            udp: self.udp.clone(),
            clock: self.clock,
        }
    }

    /// The machine's event stream (once; `None` afterwards). Events of a driver whose
    /// stream was never taken are discarded.
    pub fn events(&mut self) -> Option<Events<M::Event>> {
        self.events_rx.take()
    }

    /// The listeners opened at start.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The UDP sockets opened at start.
    pub fn udp_sockets(&self) -> &[BoundUdp] {
        &self.udp
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The machine (before it runs).
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// Runs the machine until [`Handle::shutdown`] (or until every [`Handle`] is dropped),
    /// then closes its associations gracefully and returns it. Dropping the future instead
    /// closes every socket at once.
    pub async fn run(mut self) -> M {
        // Nobody took the stream: do not keep events.
        self.events_rx = None;
        self.command_tx = None;
        self.drain();
        futures_lite::future::poll_fn(|cx| self.poll_run(cx)).await;
        // Refuse further commands, close gracefully.
        self.commands.close();
        self.transports.close_all(false);
        let linger = self.transports.config().close_linger;
        // Events of closing associations are not reported (their ids are gone).
        let quiet = futures_lite::future::poll_fn(|cx| self.transports.poll_quiet(cx));
        futures_lite::future::or(quiet, async {
            Timer::after(linger).await;
        })
        .await;
        self.machine
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BATCH {
            let mut progress = false;
            match self.commands.as_mut().poll_next(cx) {
                Poll::Ready(Some(Command::Call(f))) => {
                    let mut ctx = DriverCtx {
                        now: self.clock.now(),
                        clock: &self.clock,
                        transports: &self.transports,
                        listeners: &self.listeners,
                        waiters: &mut self.waiters,
                    };
                    f(&mut self.machine, &mut ctx);
                    self.drain();
                    progress = true;
                }
                Poll::Ready(Some(Command::Shutdown)) | Poll::Ready(None) => {
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            if let Poll::Ready(ev) = self.transports.poll_event(cx) {
                self.feed(ev);
                progress = true;
            }
            if let Some(deadline) = self.machine.poll_timeout() {
                let now = self.clock.now();
                if deadline <= now {
                    self.machine.handle_timeout(now);
                    self.drain();
                    progress = true;
                } else if deadline < rserpool_core::Instant::FAR_FUTURE {
                    let at = self
                        .clock
                        .to_std(deadline)
                        .min(std::time::Instant::now() + MAX_SLEEP);
                    if self.timer_at != Some(at) {
                        self.timer.set_at(at);
                        self.timer_at = Some(at);
                    }
                    if Pin::new(&mut self.timer).poll(cx).is_ready() {
                        self.timer_at = None;
                        progress = true;
                    }
                }
            }
            if !self.waiters.is_empty() {
                self.check_waiters();
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Busy: let other tasks of the executor run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Releases the senders waiting for a drained queue (or a gone association).
    fn check_waiters(&mut self) {
        let transports = &self.transports;
        self.waiters.retain(|w| {
            !w.tx.is_closed()
                && transports
                    .queued_bytes(w.assoc)
                    .is_some_and(|q| q > w.bytes)
        });
    }

    fn feed(&mut self, ev: TransportEvent) {
        let now = self.clock.now();
        match ev {
            TransportEvent::Up {
                assoc,
                kind,
                listener: Some(listener),
                channel,
                peer_addrs,
                ..
            } if self.accept.is_some() => {
                let info = Accepted {
                    kind,
                    listener,
                    channel: channel.map(core_channel),
                    peer_addrs,
                };
                if let Some(route) = self.accept.as_mut() {
                    route(&mut self.machine, now, assoc, &info);
                }
            }
            TransportEvent::Up {
                assoc, peer_addrs, ..
            } => self.machine.handle_assoc_up(now, assoc, &peer_addrs),
            TransportEvent::Message {
                assoc, ppid, data, ..
            } => self.machine.handle_message(now, assoc, ppid, data),
            TransportEvent::Down { assoc, reason } => {
                self.machine
                    .handle_assoc_down(now, assoc, down_reason(reason))
            }
            TransportEvent::Datagram { socket, from, data } => {
                let ppid = self
                    .udp
                    .iter()
                    .chain(&self.udp_extra)
                    .find(|u| u.socket == socket)
                    .map_or(0, |u| u.ppid);
                self.machine.handle_datagram(now, from, ppid, data);
            }
        }
        self.drain();
    }

    /// Carries out every output of the machine, then the inputs that produced (each
    /// followed by another drain).
    fn drain(&mut self) {
        loop {
            while let Some(out) = self.machine.poll_output() {
                self.output(out);
            }
            let Some(d) = self.deferred.pop_front() else {
                self.apply_bulk_transfers();
                return;
            };
            let now = self.clock.now();
            match d {
                Deferred::Down(assoc, reason) => self.machine.handle_assoc_down(now, assoc, reason),
            }
        }
    }

    /// Applies the machine's bulk transfer changes ([`Machine::poll_bulk_transfer`]): an SCTP
    /// association carrying one acknowledges every second packet (the kernel's delayed SACK)
    /// until it ends, then each packet at once again.
    fn apply_bulk_transfers(&mut self) {
        while let Some(b) = self.machine.poll_bulk_transfer() {
            if let Err(e) = self.transports.set_delayed_sack(b.assoc, b.running) {
                tracing::debug!(assoc = ?b.assoc, running = b.running, "delayed SACK: {e}");
            }
        }
    }

    fn output(&mut self, out: Output<M::Event>) {
        match out {
            Output::Transmit(t) => match t.dest {
                Destination::Assoc(assoc) => {
                    match self.transports.send(assoc, t.ppid, t.stream, t.payload) {
                        Ok(()) => {}
                        Err(SendError::QueueFull { queued, cap }) => {
                            tracing::warn!(
                                ?assoc,
                                queued,
                                cap,
                                "peer does not read: send queue full, aborting the association"
                            );
                            if self.transports.close(assoc, true) {
                                self.deferred
                                    .push_back(Deferred::Down(assoc, AssocDownReason::Lost));
                            }
                        }
                        Err(SendError::TooLarge { len, max }) => {
                            tracing::warn!(?assoc, len, max, "message too large, dropped");
                        }
                        Err(SendError::Empty) => {
                            tracing::debug!(?assoc, "empty message on SCTP, dropped");
                        }
                        // Unknown or closing: its Down is (or was) reported.
                        Err(SendError::UnknownAssoc | SendError::Closed) => {
                            tracing::debug!(?assoc, "message for a closed association dropped");
                        }
                    }
                }
                Destination::Udp(to) => {
                    let Some(socket) = self.udp_socket_for(to, t.ppid) else {
                        return;
                    };
                    if let Err(e) = self.transports.udp_send_to(socket, to, t.payload) {
                        tracing::debug!(%to, %e, "datagram dropped");
                    }
                }
            },
            Output::Connect {
                assoc,
                addrs,
                transport,
                channel,
            } => {
                let kind = match (transport, self.mode) {
                    (TransportProtocol::Tcp, TransportMode::Sctp) => None,
                    (TransportProtocol::Tcp, _) => Some(TransportKind::Tcp),
                    (TransportProtocol::Sctp, TransportMode::Tcp) => Some(TransportKind::Tcp),
                    (TransportProtocol::Sctp, TransportMode::Sctp) => Some(TransportKind::Sctp),
                    (TransportProtocol::Sctp, TransportMode::Auto) => Some(if sctp_available() {
                        TransportKind::Sctp
                    } else {
                        TransportKind::Tcp
                    }),
                    _ => None,
                };
                let result = match kind {
                    Some(kind) => {
                        self.transports
                            .connect_as(assoc, &addrs, kind, rtf_channel(channel))
                    }
                    None => Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("no transport for {transport:?} under {:?}", self.mode),
                    )),
                };
                if let Err(e) = result {
                    tracing::debug!(?assoc, %e, "connect failed");
                    self.deferred
                        .push_back(Deferred::Down(assoc, AssocDownReason::ConnectFailed));
                }
            }
            Output::Close { assoc, abort } => {
                if self.transports.close(assoc, abort) {
                    self.deferred
                        .push_back(Deferred::Down(assoc, AssocDownReason::Closed));
                }
            }
            Output::Event(e) => {
                // Nobody listening (stream dropped or never taken): the event is discarded.
                let _ = self.events_tx.try_send(e);
            }
        }
    }

    fn udp_socket_for(&mut self, to: SocketAddr, ppid: u32) -> Option<SocketId> {
        let same_family = |u: &&BoundUdp| u.addr.is_ipv4() == to.is_ipv4();
        let all = || self.udp.iter().chain(&self.udp_extra);
        if let Some(u) = all()
            .filter(same_family)
            .find(|u| u.ppid == ppid)
            .or_else(|| all().find(same_family))
        {
            return Some(u.socket);
        }
        let bind = if to.is_ipv4() {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        };
        let opts = UdpOptions {
            multicast_loop: Some(true),
            ..UdpOptions::default()
        };
        match self.transports.udp_bind(bind, &opts) {
            Ok(socket) => {
                let addr = self
                    .transports
                    .socket_local_addrs(socket)
                    .ok()
                    .and_then(|a| a.first().copied())
                    .unwrap_or(bind);
                self.udp_extra.push(BoundUdp { socket, ppid, addr });
                Some(socket)
            }
            Err(e) => {
                tracing::warn!(%e, "no UDP socket for {to}");
                None
            }
        }
    }
}

/// Opens the configured sockets for `machine` and returns a [`Handle`] to call into it, its
/// [`Events`], and the future that runs it (spawn it on any executor, or await it). The
/// future resolves to the machine after [`Handle::shutdown`].
#[allow(clippy::type_complexity)]
pub fn run_machine<M>(
    machine: M,
    config: DriverConfig,
) -> io::Result<(Handle<M>, Events<M::Event>, impl Future<Output = M>)>
where
    M: Machine + 'static,
{
    let mut driver = Driver::new(machine, config)?;
    let handle = driver.handle();
    let events = driver
        .events()
        .ok_or_else(|| io::Error::other("event stream already taken"))?;
    Ok((handle, events, driver.run()))
}
