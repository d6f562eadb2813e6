//! The generic mio driver: runs any sans-IO [`Machine`] (registrar, pool element, pool
//! user, session, or a toy machine in a test) on real sockets through
//! [`crate::transport::Transports`].
//!
//! # The embedding contract
//!
//! A binary (1) parses its options and sets up logging ([`crate::cli`]), (2) describes the
//! sockets it needs in a [`DriverConfig`] — listeners (addresses, transport, channel kinds)
//! and UDP sockets (announce / presence senders and multicast receivers, each tagged with the
//! PPID its datagrams mean to the machine), (3) builds the machine inside [`Driver::new`]'s
//! closure, which sees the bound addresses (a PE registers the ephemeral port it got), and
//! (4) runs the loop, usually with [`Driver::run_app`]:
//!
//! ```no_run
//! use bytes::Bytes;
//! use rserpool_core::{AssocDownReason, AssocId, Instant, Machine, Output, Transmit};
//! use rserpool_core::io::Destination;
//! use rserpool_mio::driver::{AppControl, Application, Driver, DriverConfig, ListenerConfig, Step};
//! use rserpool_proto::rtf::ChannelKind;
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//!
//! /// A machine that echoes every message and counts them.
//! #[derive(Default)]
//! struct Echo { out: VecDeque<Output<u64>>, echoed: u64, stopping: bool }
//!
//! impl Machine for Echo {
//!     type Event = u64;
//!     fn handle_assoc_up(&mut self, _: Instant, _: AssocId, _: &[SocketAddr]) {}
//!     fn handle_assoc_down(&mut self, _: Instant, _: AssocId, _: AssocDownReason) {}
//!     fn handle_message(&mut self, _: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
//!         self.echoed += 1;
//!         self.out.push_back(Output::Transmit(Transmit {
//!             dest: Destination::Assoc(assoc), ppid, stream: 0, payload: data,
//!         }));
//!         self.out.push_back(Output::Event(self.echoed));
//!     }
//!     fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
//!     fn handle_timeout(&mut self, _: Instant) {}
//!     fn poll_output(&mut self) -> Option<Output<u64>> { self.out.pop_front() }
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//! }
//!
//! struct App;
//! impl Application<Echo> for App {
//!     fn on_step(&mut self, step: &mut Step<'_, Echo>) -> AppControl {
//!         for n in step.events.drain(..) {
//!             tracing::info!("{n} messages echoed");
//!         }
//!         AppControl::Continue
//!     }
//!     // SIGINT/SIGTERM: e.g. a PE deregisters here ...
//!     fn begin_shutdown(&mut self, machine: &mut Echo, _now: Instant) { machine.stopping = true; }
//!     // ... and the driver keeps running until this is true or the grace period is over.
//!     fn shutdown_done(&mut self, _machine: &Echo) -> bool { true }
//! }
//!
//! let config = DriverConfig {
//!     listeners: vec![ListenerConfig::new(vec!["0.0.0.0:4711".parse().unwrap()], ChannelKind::Session)],
//!     signals: true,
//!     ..DriverConfig::default()
//! };
//! let mut driver = Driver::new(config, |bound, _now| {
//!     tracing::info!("listening on {:?}", bound.listeners[0].local_addrs);
//!     Echo::default()
//! })?;
//! let exit = driver.run_app(&mut App)?;
//! tracing::info!("stopped: {exit:?}");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Binaries that interleave their own I/O (e.g. `rspterminal` reading stdin) register extra
//! mio sources with [`Driver::registry`] under the tokens reserved for the application
//! ([`Driver::app_token`], [`DriverConfig::app_tokens`]); their readiness arrives in
//! [`Step::app_ready`], and the callback may call the machine's own command methods
//! (`step.machine.…(step.now, …)`): the driver drains the machine's outputs after every
//! callback. [`Driver::run`] is the same loop with a plain closure; [`Driver::turn`] is one
//! wake-up, for callers that own the loop.
//!
//! # What the driver does
//!
//! * **Time.** `rserpool_core::Instant` is microseconds since the driver was created (a
//!   monotonic `std::time::Instant` epoch). After every wake-up it computes `now`, feeds the
//!   transport events, calls `handle_timeout` once the machine's deadline has passed, and
//!   sleeps until the earliest of the machine's, the transports', the CSP reporter's and the
//!   application's deadlines.
//! * **Outputs.** `poll_output` is drained completely after every input (edge-triggered mio
//!   needs this: nothing else would wake the loop). `Transmit` to an association →
//!   [`Transports::send`]; to a UDP address → [`Transports::udp_send_to`] on the configured
//!   sender socket whose PPID matches the message (multicast announces therefore leave through
//!   the announce socket with its TTL / interface options), else any sender socket of that
//!   address family, else an ephemeral socket bound on demand (tagged with that PPID, so
//!   unicast replies reach `handle_datagram`). `Connect` → [`Transports::connect`] with the
//!   transport picked by [`DriverConfig::mode`]: `Auto` uses kernel SCTP when it exists and
//!   the peer advertised SCTP, else the TCP mapping; a connect that fails at once is reported
//!   as `handle_assoc_down(ConnectFailed)`. `Close` → [`Transports::close`], followed by
//!   `handle_assoc_down(Closed)` (as the simulator does). `Event` → collected for the
//!   application ([`Step::events`]).
//! * **Inputs.** Transport `Up` → `handle_assoc_up` (accepted associations get a new
//!   driver-chosen id with the top bit clear; machine-chosen ids from `Connect` keep theirs),
//!   `Message` → `handle_message`, `Down` → `handle_assoc_down` (peer abort, protocol error and
//!   dead peer all map to `Lost`), UDP datagram → `handle_datagram` with the PPID of the
//!   socket it arrived on. Inputs the driver creates itself (`ConnectFailed`, `Closed`) are
//!   delivered after the current output drain, never from inside it.
//!   Before anything else the machine learns the layout of the transport's ids
//!   (`handle_assoc_id_slot_bits` with [`Transports::id_slot_bits`]): an accepted
//!   association's id is its transport id whenever that is free, slot index in the low bits.
//!
//! # Backpressure: the overflow queue
//!
//! [`Transports::send`] refuses a message with `QueueFull` once an association's transport
//! queue is over [`crate::transport::TransportConfig::max_queued_bytes`]. The driver never
//! drops a peer or a message for that: the message goes into a **driver-side overflow queue
//! of that association**, and every later message to it joins the same queue, so order is
//! kept. After every wake-up (a `WRITABLE` event is one) and at least every
//! [`DriverConfig::overflow_retry`], the queue is moved into the transport as far as it
//! takes. A graceful `Close` waits until the overflow queue has been handed over (the
//! machine is told `Down(Closed)` at once). The machine sees the backlog through the
//! driver ([`Driver::backlog_bytes`], [`AssocTable::overflow_bytes`]); nothing is pushed into
//! it. The queue is unbounded by default; [`DriverConfig::max_overflow_bytes`] is an opt-in
//! limit for peers that stop reading: beyond it the association is aborted and reported
//! `Down(Lost)`. UDP datagrams are not held back: when a UDP socket's queue is full the
//! datagram is dropped, as the network might have (announces and presences are periodic).
//!
//! # Shutdown
//!
//! With [`DriverConfig::signals`], SIGINT/SIGTERM arrive as events
//! ([`crate::cli::TerminationSignals`]). [`Driver::run_app`] then calls
//! [`Application::begin_shutdown`] (a PE deregisters), keeps driving until
//! [`Application::shutdown_done`] or [`DriverConfig::shutdown_grace`] has passed, waits (within
//! the same grace period) until queued messages have left, sends the final CSP report and
//! returns. A second signal during the grace period exits at once.

pub mod assoc;
pub mod csp;

pub use assoc::{AssocInfo, AssocTable};
pub use csp::{CspConfig, CspReporter, CspStatus, component_location};

use crate::cli::{TerminationSignal, TerminationSignals};
use crate::transport::{
    DownReason, SendError, SocketId, TransportConfig, TransportEvent, TransportKind, TransportMode,
    Transports, UdpOptions, sctp_available,
};
use assoc::{Held, channel_from_rtf, channel_to_rtf};
use bytes::Bytes;
use mio::{Events, Interest, Poll, Registry, Token};
use rserpool_core::io::Destination;
use rserpool_core::{AssocDownReason, AssocId, ChannelKind, Instant, Machine, Output, Protocol};
use rserpool_proto::rtf::ChannelKinds;
use rserpool_proto::transport::TransportProtocol;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::time::Duration;
use tracing::{debug, warn};

/// A listening socket to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Addresses (SCTP: all of them, multi-homed; TCP mapping: the first).
    pub addrs: Vec<SocketAddr>,
    /// Transport; `None` = what [`DriverConfig::mode`] resolves to on this host.
    pub kind: Option<TransportKind>,
    /// Channel kinds accepted (RTF HELLO check; for SCTP the kind reported when single).
    pub channels: ChannelKinds,
    /// Over SCTP: outgoing associations of this channel kind leave from this listener's
    /// addresses and port ([`Transports::listen_as_source`]); ignored over TCP.
    pub source_for: Option<ChannelKind>,
}

impl ListenerConfig {
    /// A listener on `addrs` for `channels`, transport from the driver's mode.
    pub fn new(addrs: Vec<SocketAddr>, channels: impl Into<ChannelKinds>) -> Self {
        ListenerConfig {
            addrs,
            kind: None,
            channels: channels.into(),
            source_for: None,
        }
    }

    /// Over SCTP, outgoing associations of channel kind `channel` leave from this listener's
    /// endpoint. A pool element's ASAP listener uses it for
    /// [`ChannelKind::AsapToRegistrar`], so that a registrar taking it over can reach it at
    /// the address and port its registration came from.
    pub fn source_for(mut self, channel: ChannelKind) -> Self {
        self.source_for = Some(channel);
        self
    }

    /// The same listener on an explicit transport.
    pub fn with_kind(mut self, kind: TransportKind) -> Self {
        self.kind = Some(kind);
        self
    }
}

/// A multicast group to join on a UDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastJoin {
    /// The group.
    pub group: IpAddr,
    /// IPv4: the interface by address (`UNSPECIFIED` = the kernel's choice).
    pub interface_v4: Ipv4Addr,
    /// IPv6: the interface index (0 = the kernel's choice).
    pub interface_index_v6: u32,
}

impl MulticastJoin {
    /// Joins `group` on the kernel's choice of interface.
    pub fn any_interface(group: IpAddr) -> Self {
        MulticastJoin {
            group,
            interface_v4: Ipv4Addr::UNSPECIFIED,
            interface_index_v6: 0,
        }
    }
}

/// A UDP socket to open: ASAP announce (PPID 11) or ENRP presence (PPID 12) sender and/or
/// receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Local address (a multicast receiver binds the group's port, usually on the wildcard).
    pub bind: SocketAddr,
    /// Socket options (reuse, multicast TTL / loop / outgoing interface).
    pub options: UdpOptions,
    /// What datagrams on this socket mean: the PPID passed to `handle_datagram`, and the PPID
    /// of the `Transmit`s this socket sends when [`UdpConfig::send`] is set.
    pub ppid: u32,
    /// Groups to join.
    pub join: Vec<MulticastJoin>,
    /// Use this socket to send `Transmit`s to UDP destinations with its PPID.
    pub send: bool,
}

impl UdpConfig {
    /// A receive-only socket on `bind` for datagrams meaning `ppid`.
    pub fn receiver(bind: SocketAddr, ppid: u32) -> Self {
        UdpConfig {
            bind,
            options: UdpOptions::default(),
            ppid,
            join: Vec::new(),
            send: false,
        }
    }

    /// A sender (which also receives unicast replies) bound to `bind`, for `ppid`.
    pub fn sender(bind: SocketAddr, ppid: u32) -> Self {
        UdpConfig {
            send: true,
            ..Self::receiver(bind, ppid)
        }
    }
}

/// Settings of a [`Driver`].
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Transport settings (RTF heartbeats, queue caps, close linger, SCTP options).
    pub transport: TransportConfig,
    /// Which transport `Connect` and listeners without an explicit kind use.
    pub mode: TransportMode,
    /// Listeners opened by [`Driver::new`].
    pub listeners: Vec<ListenerConfig>,
    /// UDP sockets opened by [`Driver::new`].
    pub udp: Vec<UdpConfig>,
    /// Catch SIGINT/SIGTERM ([`TerminationSignals`]) and report them ([`Step::signals`]).
    pub signals: bool,
    /// Tokens `0..app_tokens` are reserved for the application's own mio sources.
    pub app_tokens: usize,
    /// Most sockets (listeners + associations + UDP) at once.
    pub max_sockets: usize,
    /// Overflow queue limit per association (see the module docs); `None` = unbounded.
    pub max_overflow_bytes: Option<usize>,
    /// Longest time between two attempts to move overflow into the transport.
    pub overflow_retry: Duration,
    /// How long [`Driver::run_app`] keeps driving after a termination signal.
    pub shutdown_grace: Duration,
    /// Timer slack: the driver sleeps up to this long past the machine's deadline, so that
    /// timers due close together are handled in one wake-up (a registrar with 10,000s of
    /// PEs has thousands of keep-alive timers per second). A timer never fires early; zero
    /// (the default) wakes up at each deadline. Transport timers are not delayed.
    pub timer_slack: Duration,
    /// mio event buffer size.
    pub events_capacity: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            transport: TransportConfig::default(),
            mode: TransportMode::Auto,
            listeners: Vec::new(),
            udp: Vec::new(),
            signals: false,
            app_tokens: 16,
            max_sockets: 1 << 20,
            max_overflow_bytes: None,
            overflow_retry: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(5),
            timer_slack: Duration::ZERO,
            events_capacity: 1024,
        }
    }
}

/// An open listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundListener {
    /// Its transport id.
    pub socket: SocketId,
    /// Its transport.
    pub kind: TransportKind,
    /// The addresses it is bound to (ephemeral ports resolved).
    pub local_addrs: Vec<SocketAddr>,
}

/// An open UDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundUdp {
    /// Its transport id.
    pub socket: SocketId,
    /// PPID meaning of its datagrams.
    pub ppid: u32,
    /// Used for sending.
    pub send: bool,
    /// The address it is bound to.
    pub local_addr: SocketAddr,
}

/// The sockets [`Driver::new`] opened, shown to the closure that builds the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bound {
    /// Listeners, in configuration order.
    pub listeners: Vec<BoundListener>,
    /// UDP sockets, in configuration order.
    pub udp: Vec<BoundUdp>,
}

/// Readiness of one of the application's own mio sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppReady {
    /// Its token (below [`DriverConfig::app_tokens`]).
    pub token: Token,
    /// Readable.
    pub readable: bool,
    /// Writable.
    pub writable: bool,
    /// Read side closed (EOF / hang-up).
    pub read_closed: bool,
    /// Write side closed.
    pub write_closed: bool,
    /// Error condition.
    pub error: bool,
}

impl AppReady {
    fn from_event(e: &mio::event::Event) -> Self {
        AppReady {
            token: e.token(),
            readable: e.is_readable(),
            writable: e.is_writable(),
            read_closed: e.is_read_closed(),
            write_closed: e.is_write_closed(),
            error: e.is_error(),
        }
    }
}

/// Counters of a driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Loop wake-ups.
    pub turns: u64,
    /// Messages handed to the transports (overflow included, once).
    pub messages_sent: u64,
    /// Messages delivered to the machine.
    pub messages_received: u64,
    /// Datagrams handed to UDP sockets.
    pub datagrams_sent: u64,
    /// Datagrams delivered to the machine.
    pub datagrams_received: u64,
    /// Messages that went through an overflow queue.
    pub overflowed: u64,
    /// Largest overflow queue seen on one association, bytes.
    pub overflow_peak_bytes: usize,
    /// Messages not sent: unknown or closed association, too large, UDP queue full,
    /// association aborted over [`DriverConfig::max_overflow_bytes`].
    pub dropped: u64,
    /// `Connect`s started.
    pub connects: u64,
    /// `Connect`s that failed at once.
    pub connect_failures: u64,
    /// `handle_timeout` calls.
    pub timeouts: u64,
}

/// What the application callback sees after each wake-up.
pub struct Step<'a, M: Machine> {
    /// The machine (call its command methods with [`Step::now`]; the driver drains its
    /// outputs after the callback).
    pub machine: &'a mut M,
    /// The time of this wake-up.
    pub now: Instant,
    /// Events the machine emitted since the last callback; whatever the callback leaves here
    /// is discarded.
    pub events: &'a mut Vec<M::Event>,
    /// Termination signals received since the last callback.
    pub signals: &'a [TerminationSignal],
    /// Readiness of the application's own sources since the last callback.
    pub app_ready: &'a [AppReady],
    /// Wake up at this time at the latest (one-shot: cleared once reached).
    pub wakeup: &'a mut Option<Instant>,
    /// The registry, to (de)register application sources.
    pub registry: &'a Registry,
    /// The driver's associations.
    pub assocs: &'a AssocTable,
    /// The transports, for [`Step::local_addrs`] and [`Step::peer_addrs`].
    transports: &'a Transports,
}

impl<M: Machine> Step<'_, M> {
    /// Our addresses of `assoc` (a machine-visible id), asked of its socket; empty for an
    /// unknown or closed association.
    pub fn local_addrs(&self, assoc: AssocId) -> Vec<SocketAddr> {
        socket_addrs(self.assocs, assoc, |t| self.transports.local_addrs(t))
    }

    /// The peer's addresses of `assoc` (SCTP: the current list), asked of its socket; empty
    /// for an unknown or closed association.
    pub fn peer_addrs(&self, assoc: AssocId) -> Vec<SocketAddr> {
        socket_addrs(self.assocs, assoc, |t| self.transports.peer_addrs(t))
    }

    /// Acknowledge `assoc`'s incoming SCTP packets every second packet (`delayed`) or each
    /// at once ([`Transports::set_delayed_sack`]).
    pub fn set_delayed_sack(&self, assoc: AssocId, delayed: bool) -> io::Result<()> {
        let t = live_transport(self.assocs, assoc)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown association"))?;
        self.transports.set_delayed_sack(t, delayed)
    }
}

/// The transport's id of `assoc` (a machine-visible id), if the driver knows it.
fn live_transport(assocs: &AssocTable, assoc: AssocId) -> Option<AssocId> {
    assocs.get(assoc).and(assocs.transport_id(assoc))
}

/// The addresses `ask` gives for the transport of `assoc`, empty when there are none.
fn socket_addrs(
    assocs: &AssocTable,
    assoc: AssocId,
    ask: impl FnOnce(AssocId) -> io::Result<Vec<SocketAddr>>,
) -> Vec<SocketAddr> {
    live_transport(assocs, assoc)
        .and_then(|t| ask(t).ok())
        .unwrap_or_default()
}

/// What [`Application::on_step`] wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppControl {
    /// Keep running.
    Continue,
    /// Start the graceful shutdown, as on a termination signal.
    Shutdown,
    /// Stop now (after the final CSP report).
    Exit,
}

/// A binary's side of [`Driver::run_app`].
pub trait Application<M: Machine> {
    /// Called after every wake-up (and once before the first). The default drops the events.
    fn on_step(&mut self, step: &mut Step<'_, M>) -> AppControl {
        step.events.clear();
        AppControl::Continue
    }

    /// A termination signal (or [`AppControl::Shutdown`]) arrived: start the clean shutdown,
    /// e.g. deregister a PE.
    fn begin_shutdown(&mut self, machine: &mut M, now: Instant) {
        let _ = (machine, now);
    }

    /// During the shutdown, after every wake-up: true once the machine has finished.
    fn shutdown_done(&mut self, machine: &M) -> bool {
        let _ = machine;
        true
    }
}

/// How [`Driver::run_app`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The application returned [`AppControl::Exit`].
    Stopped,
    /// Shutdown completed within the grace period.
    Completed,
    /// The grace period ran out first.
    GraceExpired,
    /// A second termination signal arrived during the shutdown.
    Forced,
}

type CspStatusFn<M> = Box<dyn FnMut(&M, &AssocTable, Instant) -> CspStatus + Send>;

/// What [`Driver::route_accepted`] calls for every association the driver accepts.
type AcceptFn<M> = Box<dyn FnMut(&mut M, Instant, AssocId, &AssocInfo, &[SocketAddr]) + Send>;

struct Csp<M> {
    reporter: CspReporter,
    status: CspStatusFn<M>,
}

/// Runs one [`Machine`] on real sockets. See the [module documentation](self).
pub struct Driver<M: Machine> {
    poll: Poll,
    events: Events,
    transports: Transports,
    machine: M,
    epoch: std::time::Instant,
    now: Instant,
    /// The clock as last read ([`Driver::tick`]).
    ticked: std::time::Instant,
    mode: TransportMode,
    sctp: bool,
    assocs: AssocTable,
    max_overflow: Option<usize>,
    overflow_retry: Duration,
    shutdown_grace: Duration,
    timer_slack: Duration,
    bound: Bound,
    signals: Option<TerminationSignals>,
    app_tokens: usize,
    tev: Vec<TransportEvent>,
    deferred: VecDeque<(AssocId, AssocDownReason)>,
    out_events: Vec<M::Event>,
    received_signals: Vec<TerminationSignal>,
    app_ready: Vec<AppReady>,
    wakeup: Option<Instant>,
    csp: Option<Csp<M>>,
    accept: Option<AcceptFn<M>>,
    stats: DriverStats,
}

impl<M: Machine> std::fmt::Debug for Driver<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("now", &self.now)
            .field("associations", &self.assocs.len())
            .field("bound", &self.bound)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn bind_listener(
    transports: &mut Transports,
    mode: TransportMode,
    cfg: &ListenerConfig,
) -> io::Result<BoundListener> {
    let kind = cfg.kind.unwrap_or_else(|| mode.resolve());
    let socket = match cfg.source_for {
        Some(channel) => {
            transports.listen_as_source(&cfg.addrs, kind, cfg.channels, channel_to_rtf(channel))?
        }
        None => transports.listen(&cfg.addrs, kind, cfg.channels)?,
    };
    let local_addrs = transports.socket_local_addrs(socket)?;
    Ok(BoundListener {
        socket,
        kind,
        local_addrs,
    })
}

fn bind_udp(transports: &mut Transports, cfg: &UdpConfig) -> io::Result<BoundUdp> {
    let socket = transports.udp_bind(cfg.bind, &cfg.options)?;
    let setup = (|| {
        for j in &cfg.join {
            transports.udp_join_multicast(socket, j.group, j.interface_v4, j.interface_index_v6)?;
        }
        transports
            .socket_local_addrs(socket)?
            .first()
            .copied()
            .ok_or_else(|| io::Error::other("UDP socket without a local address"))
    })();
    match setup {
        Ok(local_addr) => Ok(BoundUdp {
            socket,
            ppid: cfg.ppid,
            send: cfg.send,
            local_addr,
        }),
        Err(e) => {
            transports.close_socket(socket);
            Err(e)
        }
    }
}

fn down_reason(r: DownReason) -> AssocDownReason {
    match r {
        DownReason::ConnectFailed => AssocDownReason::ConnectFailed,
        DownReason::Shutdown => AssocDownReason::Shutdown,
        DownReason::Lost | DownReason::Abort | DownReason::ProtocolError => AssocDownReason::Lost,
    }
}

fn protocol_of(channel: ChannelKind) -> Protocol {
    match channel {
        ChannelKind::Enrp => Protocol::Enrp,
        _ => Protocol::Asap,
    }
}

impl<M: Machine> Driver<M> {
    /// Opens the configured sockets, then builds the machine with `make` (which sees the
    /// bound addresses and the driver's start time, [`Instant::ZERO`]).
    pub fn new(config: DriverConfig, make: impl FnOnce(&Bound, Instant) -> M) -> io::Result<Self> {
        let poll = Poll::new()?;
        let app_tokens = config.app_tokens;
        let base = app_tokens + 1;
        let mut transports = Transports::new(
            poll.registry(),
            base..base.saturating_add(config.max_sockets),
            config.transport.clone(),
        )?;
        let mut bound = Bound::default();
        for l in &config.listeners {
            bound
                .listeners
                .push(bind_listener(&mut transports, config.mode, l)?);
        }
        for u in &config.udp {
            bound.udp.push(bind_udp(&mut transports, u)?);
        }
        let signals = if config.signals {
            let mut s = TerminationSignals::new()?;
            poll.registry()
                .register(&mut s, Token(app_tokens), Interest::READABLE)?;
            Some(s)
        } else {
            None
        };
        let sctp = config.mode != TransportMode::Tcp && sctp_available();
        // Messages leave at the end of each wake-up, one write per association.
        transports.set_write_batching(true);
        let mut machine = make(&bound, Instant::ZERO);
        let slot_bits = transports.id_slot_bits();
        machine.handle_assoc_id_slot_bits(slot_bits);
        let assocs = AssocTable::new(slot_bits);
        let epoch = std::time::Instant::now();
        Ok(Driver {
            events: Events::with_capacity(config.events_capacity.max(16)),
            poll,
            transports,
            machine,
            epoch,
            now: Instant::ZERO,
            ticked: epoch,
            mode: config.mode,
            sctp,
            assocs,
            max_overflow: config.max_overflow_bytes,
            overflow_retry: config.overflow_retry.max(Duration::from_millis(1)),
            shutdown_grace: config.shutdown_grace,
            timer_slack: config.timer_slack,
            bound,
            signals,
            app_tokens,
            tev: Vec::new(),
            deferred: VecDeque::new(),
            out_events: Vec::new(),
            received_signals: Vec::new(),
            app_ready: Vec::new(),
            wakeup: None,
            csp: None,
            accept: None,
            stats: DriverStats::default(),
        })
    }

    /// A driver for an already built machine.
    pub fn with_machine(config: DriverConfig, machine: M) -> io::Result<Self> {
        Self::new(config, |_, _| machine)
    }

    // --- accessors -----------------------------------------------------------------------

    /// The machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, mutably. Outputs it produces are drained at the start of the next
    /// [`Driver::turn`].
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// The machine, giving up the driver (its sockets close).
    pub fn into_machine(self) -> M {
        self.machine
    }

    /// The driver's time now (microseconds since the driver was created).
    pub fn now(&self) -> Instant {
        self.to_core(std::time::Instant::now()).max(self.now)
    }

    /// The listeners and UDP sockets opened so far.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// The association table (machine-visible ids).
    pub fn assocs(&self) -> &AssocTable {
        &self.assocs
    }

    /// Our addresses of `assoc` (a machine-visible id), asked of its socket; empty for an
    /// unknown or closed association.
    pub fn local_addrs(&self, assoc: AssocId) -> Vec<SocketAddr> {
        socket_addrs(&self.assocs, assoc, |t| self.transports.local_addrs(t))
    }

    /// The peer's addresses of `assoc` (SCTP: the current list), asked of its socket; empty
    /// for an unknown or closed association.
    pub fn peer_addrs(&self, assoc: AssocId) -> Vec<SocketAddr> {
        socket_addrs(&self.assocs, assoc, |t| self.transports.peer_addrs(t))
    }

    /// The transports (read-only: queries such as [`Transports::queued_bytes`]).
    pub fn transports(&self) -> &Transports {
        &self.transports
    }

    /// Counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The mio registry, for the application's own sources.
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// The `i`-th token reserved for the application (`None` beyond
    /// [`DriverConfig::app_tokens`]).
    pub fn app_token(&self, i: usize) -> Option<Token> {
        (i < self.app_tokens).then_some(Token(i))
    }

    /// Bytes waiting to leave on `assoc` (a machine-visible id): the transport's queue plus
    /// the driver's overflow queue.
    pub fn backlog_bytes(&self, assoc: AssocId) -> usize {
        let t = self
            .assocs
            .transport_id(assoc)
            .and_then(|t| self.transports.queued_bytes(t))
            .unwrap_or(0);
        t + self.assocs.overflow_bytes(assoc)
    }

    /// Bytes waiting to leave on all associations.
    pub fn pending_bytes(&self) -> usize {
        self.assocs.total_overflow_bytes()
            + self
                .assocs
                .transport_ids()
                .filter_map(|t| self.transports.queued_bytes(t))
                .sum::<usize>()
    }

    /// Machine events collected by [`Driver::turn`] (drain them).
    pub fn events_mut(&mut self) -> &mut Vec<M::Event> {
        &mut self.out_events
    }

    /// Termination signals received by [`Driver::turn`] since the last call.
    pub fn take_signals(&mut self) -> Vec<TerminationSignal> {
        std::mem::take(&mut self.received_signals)
    }

    /// Application source readiness collected by [`Driver::turn`] since the last call.
    pub fn take_app_ready(&mut self) -> Vec<AppReady> {
        std::mem::take(&mut self.app_ready)
    }

    // --- sockets after start ---------------------------------------------------------------

    /// Opens another listener.
    pub fn listen(&mut self, cfg: &ListenerConfig) -> io::Result<BoundListener> {
        let l = bind_listener(&mut self.transports, self.mode, cfg)?;
        self.bound.listeners.push(l.clone());
        Ok(l)
    }

    /// Opens another UDP socket.
    pub fn add_udp(&mut self, cfg: &UdpConfig) -> io::Result<BoundUdp> {
        let u = bind_udp(&mut self.transports, cfg)?;
        self.bound.udp.push(u.clone());
        Ok(u)
    }

    /// Closes a listener or UDP socket opened by the driver.
    pub fn close_socket(&mut self, socket: SocketId) -> bool {
        self.bound.listeners.retain(|l| l.socket != socket);
        self.bound.udp.retain(|u| u.socket != socket);
        self.transports.close_socket(socket)
    }

    // --- accepted associations ---------------------------------------------------------------

    /// Reports every association the driver **accepts** through `route` instead of
    /// [`Machine::handle_assoc_up`]. `route` sees the association's [`AssocInfo`] — above all
    /// its channel kind (RTF HELLO; for SCTP the listener's single kind) — and the peer's
    /// addresses, and calls the
    /// machine method that fits, e.g. a pool element hands channel kind
    /// [`ChannelKind::AsapToPoolElement`] (a registrar taking the PE over) to
    /// `PoolElementSessions::handle_registrar_assoc_up` and everything else to
    /// `handle_assoc_up`. Associations the machine opened itself are not routed.
    pub fn route_accepted(
        &mut self,
        route: impl FnMut(&mut M, Instant, AssocId, &AssocInfo, &[SocketAddr]) + Send + 'static,
    ) {
        self.accept = Some(Box::new(route));
    }

    // --- CSP ---------------------------------------------------------------------------------

    /// Starts CSP reporting: `status` is called with the machine, the association table and
    /// the time at every report (the first one at the next wake-up).
    pub fn enable_csp(
        &mut self,
        reporter: CspReporter,
        status: impl FnMut(&M, &AssocTable, Instant) -> CspStatus + Send + 'static,
    ) {
        self.csp = Some(Csp {
            reporter,
            status: Box::new(status),
        });
    }

    /// The CSP reporter, if enabled.
    pub fn csp_reporter(&self) -> Option<&CspReporter> {
        self.csp.as_ref().map(|c| &c.reporter)
    }

    /// Sends the final CSP report (flag F) and stops reporting. [`Driver::run_app`] does this
    /// on the way out.
    pub fn send_final_csp_report(&mut self) {
        if let Some(c) = &mut self.csp
            && let Err(e) = c.reporter.report_final(std::time::Instant::now())
        {
            warn!("final CSP report: {e}");
        }
    }

    // --- time ----------------------------------------------------------------------------

    fn to_core(&self, t: std::time::Instant) -> Instant {
        Instant::from_micros(
            u64::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX),
        )
    }

    fn to_std(&self, t: Instant) -> Option<std::time::Instant> {
        self.epoch.checked_add(Duration::from_micros(t.as_micros()))
    }

    /// Reads the clock: `now` never goes backwards.
    fn tick(&mut self) -> std::time::Instant {
        let s = std::time::Instant::now();
        self.now = self.to_core(s).max(self.now);
        self.transports.set_time(s);
        self.ticked = s;
        s
    }

    // --- the loop ----------------------------------------------------------------------------

    /// One wake-up: drains pending machine work, sleeps until an event or the earliest
    /// deadline (at most `max_wait`), then feeds everything that happened to the machine and
    /// drains its outputs. Machine events, signals and application readiness accumulate in
    /// [`Driver::events_mut`], [`Driver::take_signals`], [`Driver::take_app_ready`].
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let s = self.tick();
        self.turn_from(s, max_wait)
    }

    /// [`Driver::turn`] from `s`, the time the clock was read at (by this turn, or by the
    /// previous one when [`Driver::run`] goes on at once after its callback: one clock read
    /// per wake-up instead of two, and on a VM each costs a system call).
    fn turn_from(&mut self, s: std::time::Instant, max_wait: Option<Duration>) -> io::Result<()> {
        let before = self.out_events.len();
        self.settle(s);
        // Events produced by that drain (e.g. after a command from the application) are
        // reported now, without sleeping.
        let fresh = self.out_events.len() > before;
        let mut wait = if fresh {
            Some(Duration::ZERO)
        } else {
            max_wait
        };
        let mut bound = |d: Option<std::time::Instant>| {
            if let Some(d) = d {
                let w = d.saturating_duration_since(s);
                wait = Some(wait.map_or(w, |x| x.min(w)));
            }
        };
        bound(
            self.machine
                .poll_timeout()
                .and_then(|t| self.to_std(t))
                .map(|t| t + self.timer_slack),
        );
        bound(self.transports.poll_timeout());
        bound(self.csp.as_ref().and_then(|c| c.reporter.next_due()));
        bound(self.wakeup.and_then(|t| self.to_std(t)));
        if self.assocs.holds_any() {
            bound(Some(s + self.overflow_retry));
        }
        let polled = match self.poll.poll(&mut self.events, wait) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(e) => return Err(e),
        };
        self.stats.turns += 1;
        let s = self.tick();
        if polled {
            let signal_token = Token(self.app_tokens);
            for ev in self.events.iter() {
                let token = ev.token();
                if self.transports.owns(token) {
                    self.transports.handle_event(ev, s, &mut self.tev);
                } else if token == signal_token {
                    if let Some(sig) = self.signals.as_mut() {
                        self.received_signals.extend(sig.pending());
                    }
                } else if token.0 < self.app_tokens {
                    self.app_ready.push(AppReady::from_event(ev));
                }
            }
        }
        self.transports.handle_timeout(s, &mut self.tev);
        self.feed_transport_events();
        self.settle(s);
        // A wake-up time is reached once a poll has returned at or after it (one that had
        // already passed when the turn began made this poll return at once).
        if self.wakeup.is_some_and(|w| w <= self.now) {
            self.wakeup = None;
        }
        Ok(())
    }

    /// Runs until `f` breaks: `f` is called once before the first wake-up and after every
    /// wake-up, with what happened ([`Step`]). The machine's outputs are drained after every
    /// call, so `f` may call the machine's command methods.
    pub fn run<R>(
        &mut self,
        mut f: impl FnMut(&mut Step<'_, M>) -> ControlFlow<R>,
    ) -> io::Result<R> {
        let s = self.tick();
        self.settle(s);
        loop {
            // Settled: by the line above the first time, by the end of `turn` after that.
            let flow = {
                let mut step = Step {
                    machine: &mut self.machine,
                    now: self.now,
                    events: &mut self.out_events,
                    signals: &self.received_signals,
                    app_ready: &self.app_ready,
                    wakeup: &mut self.wakeup,
                    registry: self.poll.registry(),
                    assocs: &self.assocs,
                    transports: &self.transports,
                };
                f(&mut step)
            };
            self.out_events.clear();
            self.received_signals.clear();
            self.app_ready.clear();
            if let ControlFlow::Break(r) = flow {
                let s = self.tick();
                self.settle(s);
                return Ok(r);
            }
            // The callback ran just now, right after the last clock read (at the end of the
            // previous turn): its time stands for the start of this one. (A timer falling due
            // while a callback runs long fires that much later; never early.)
            self.turn_from(self.ticked, None)?;
        }
    }

    /// Runs a binary: until [`AppControl::Exit`], or through the graceful shutdown started by
    /// a termination signal or [`AppControl::Shutdown`] (see the module documentation).
    /// Sends the final CSP report before returning.
    pub fn run_app(&mut self, app: &mut impl Application<M>) -> io::Result<Exit> {
        let grace = self.shutdown_grace;
        let mut deadline: Option<Instant> = None;
        let mut began_at_turn = 0u64;
        let mut turns = 0u64;
        let exit = self.run(|step| {
            turns += 1;
            let signalled = !step.signals.is_empty();
            if deadline.is_some() && signalled {
                return ControlFlow::Break(Exit::Forced);
            }
            let control = app.on_step(step);
            if control == AppControl::Exit {
                return ControlFlow::Break(Exit::Stopped);
            }
            if deadline.is_none() && (signalled || control == AppControl::Shutdown) {
                debug!("shutdown started");
                app.begin_shutdown(step.machine, step.now);
                deadline = Some(step.now + grace);
                began_at_turn = turns;
            }
            if let Some(d) = deadline {
                // Checked from the next step on, after the shutdown's outputs went out.
                if turns > began_at_turn && app.shutdown_done(step.machine) {
                    return ControlFlow::Break(Exit::Completed);
                }
                if step.now >= d {
                    return ControlFlow::Break(Exit::GraceExpired);
                }
                *step.wakeup = Some(step.wakeup.map_or(d, |w| w.min(d)));
            }
            ControlFlow::Continue(())
        })?;
        if exit == Exit::Completed
            && let Some(d) = deadline
        {
            // Let queued messages (e.g. a deregistration's last bytes) leave.
            while self.pending_bytes() > 0 && self.now < d {
                let left = d.saturating_duration_since(self.now);
                self.turn(Some(left.min(Duration::from_millis(50))))?;
                self.out_events.clear();
                if !self.take_signals().is_empty() {
                    break;
                }
            }
        }
        self.send_final_csp_report();
        Ok(exit)
    }

    /// Drains the machine, runs its timer when due, moves overflow, sends a due CSP report.
    fn settle(&mut self, s: std::time::Instant) {
        self.drain();
        if let Some(d) = self.machine.poll_timeout()
            && d <= self.now
        {
            self.stats.timeouts += 1;
            self.machine.handle_timeout(self.now);
            self.drain();
        }
        if self.assocs.holds_any() {
            self.pump_overflow();
            self.drain();
        }
        self.apply_bulk_transfers();
        if let Some(c) = &mut self.csp
            && c.reporter.next_due().is_some_and(|d| d <= s)
        {
            let status = (c.status)(&self.machine, &self.assocs, self.now);
            if let Err(e) = c.reporter.report(s, status) {
                warn!("CSP report to {}: {e}", c.reporter.config().server);
            }
        }
        // Write batching: everything sent during this wake-up leaves now.
        self.transports.flush_pending();
    }

    /// Applies the machine's bulk transfer changes ([`Machine::poll_bulk_transfer`]): an SCTP
    /// association carrying one acknowledges every second packet (the kernel's delayed SACK)
    /// until it ends, then each packet at once again. Before the wake-up's writes are
    /// flushed, so that a request or response sent in this step already finds it set.
    fn apply_bulk_transfers(&mut self) {
        while let Some(b) = self.machine.poll_bulk_transfer() {
            let Some(t) = live_transport(&self.assocs, b.assoc) else {
                continue;
            };
            if let Err(e) = self.transports.set_delayed_sack(t, b.running) {
                debug!("{:?}: delayed SACK {}: {e}", b.assoc, b.running);
            }
        }
    }

    /// Drains `poll_output` completely, then delivers the driver's own inputs (each followed
    /// by another full drain).
    fn drain(&mut self) {
        loop {
            while let Some(o) = self.machine.poll_output() {
                self.apply(o);
            }
            let Some((assoc, reason)) = self.deferred.pop_front() else {
                return;
            };
            self.machine.handle_assoc_down(self.now, assoc, reason);
        }
    }

    fn apply(&mut self, o: Output<M::Event>) {
        match o {
            Output::Transmit(t) => match t.dest {
                Destination::Assoc(assoc) => self.send(assoc, t.ppid, t.stream, t.payload),
                Destination::Udp(to) => self.send_datagram(to, t.ppid, t.payload),
            },
            Output::Connect {
                assoc,
                addrs,
                transport,
                channel,
            } => self.connect(assoc, &addrs, transport, channel),
            Output::Close { assoc, abort } => self.close(assoc, abort),
            Output::Event(e) => self.out_events.push(e),
        }
    }

    fn send(&mut self, assoc: AssocId, ppid: u32, stream: u16, data: Bytes) {
        let Some(link) = self.assocs.link_mut(assoc) else {
            debug!("{assoc:?}: message for an unknown association dropped");
            self.stats.dropped += 1;
            return;
        };
        if link.closing() {
            self.stats.dropped += 1;
            return;
        }
        if !link.overflow.is_empty() {
            self.hold(assoc, Held { ppid, stream, data });
            return;
        }
        match self
            .transports
            .send(link.transport, ppid, stream, data.clone())
        {
            Ok(()) => self.stats.messages_sent += 1,
            Err(SendError::QueueFull { .. }) => self.hold(assoc, Held { ppid, stream, data }),
            Err(e @ SendError::TooLarge { .. }) => {
                warn!("{assoc:?}: message dropped: {e}");
                self.stats.dropped += 1;
            }
            Err(e) => {
                // The association is going down; its Down is on the way.
                debug!("{assoc:?}: message dropped: {e}");
                self.stats.dropped += 1;
            }
        }
    }

    /// Puts a message into `assoc`'s overflow queue (backpressure, see the module docs).
    fn hold(&mut self, assoc: AssocId, held: Held) {
        let Some(mut link) = self.assocs.link_mut(assoc) else {
            return;
        };
        link.overflow.push_back(held);
        self.stats.overflowed += 1;
        self.stats.overflow_peak_bytes = self.stats.overflow_peak_bytes.max(link.overflow.bytes());
        if let Some(cap) = self.max_overflow
            && link.overflow.bytes() > cap
        {
            warn!(
                "{assoc:?}: {} bytes held for a peer that does not read (limit {cap}): aborting",
                link.overflow.bytes()
            );
            self.abort_lost(assoc);
        }
    }

    fn abort_lost(&mut self, assoc: AssocId) {
        if let Some(link) = self.assocs.remove(assoc) {
            self.stats.dropped += link.held_messages() as u64;
            self.transports.close(link.transport, true);
            if !link.closing() {
                self.deferred.push_back((assoc, AssocDownReason::Lost));
            }
        }
    }

    /// Moves overflow queues into the transports as far as they take them.
    fn pump_overflow(&mut self) {
        for assoc in self.assocs.held_ids() {
            let Some(mut link) = self.assocs.link_mut(assoc) else {
                continue;
            };
            let mut gone = false;
            while let Some(h) = link.overflow.front() {
                let (ppid, stream, data) = (h.ppid, h.stream, h.data.clone());
                match self.transports.send(link.transport, ppid, stream, data) {
                    Ok(()) => {
                        self.stats.messages_sent += 1;
                    }
                    Err(SendError::QueueFull { .. }) => break,
                    Err(e @ SendError::TooLarge { .. }) => {
                        warn!("{assoc:?}: message dropped: {e}");
                        self.stats.dropped += 1;
                    }
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
                link.overflow.pop_front();
            }
            if gone {
                self.stats.dropped += link.overflow.len() as u64;
                link.overflow.clear();
            }
            if link.overflow.is_empty() && link.closing() {
                let t = link.transport;
                self.assocs.remove(assoc);
                self.transports.close(t, false);
            }
        }
    }

    fn send_datagram(&mut self, to: SocketAddr, ppid: u32, data: Bytes) {
        let same_family = |u: &&BoundUdp| u.send && u.local_addr.is_ipv4() == to.is_ipv4();
        let pick = self
            .bound
            .udp
            .iter()
            .filter(same_family)
            .find(|u| u.ppid == ppid)
            .or_else(|| self.bound.udp.iter().find(same_family))
            .map(|u| u.socket);
        let socket = match pick {
            Some(s) => s,
            None => {
                let bind: SocketAddr = if to.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                match self.add_udp(&UdpConfig::sender(bind, ppid)) {
                    Ok(u) => u.socket,
                    Err(e) => {
                        warn!("cannot open a UDP socket to send to {to}: {e}");
                        self.stats.dropped += 1;
                        return;
                    }
                }
            }
        };
        match self.transports.udp_send_to(socket, to, data) {
            Ok(()) => self.stats.datagrams_sent += 1,
            Err(e) => {
                debug!("datagram to {to} dropped: {e}");
                self.stats.dropped += 1;
            }
        }
    }

    fn connect(
        &mut self,
        assoc: AssocId,
        addrs: &[SocketAddr],
        advertised: TransportProtocol,
        channel: ChannelKind,
    ) {
        if self.assocs.contains(assoc) {
            warn!("{assoc:?}: Connect with an id already in use ignored");
            return;
        }
        let kind = match self.mode {
            TransportMode::Sctp => TransportKind::Sctp,
            TransportMode::Tcp => TransportKind::Tcp,
            TransportMode::Auto if self.sctp && advertised == TransportProtocol::Sctp => {
                TransportKind::Sctp
            }
            TransportMode::Auto => TransportKind::Tcp,
        };
        self.stats.connects += 1;
        match self
            .transports
            .connect(addrs, kind, channel_to_rtf(channel), protocol_of(channel))
        {
            Ok(t) => self.assocs.insert(
                assoc,
                t,
                AssocInfo {
                    kind,
                    channel: Some(channel),
                    outbound: true,
                    up_since: None,
                },
            ),
            Err(e) => {
                debug!("{assoc:?}: connect to {addrs:?} over {kind:?} failed: {e}");
                self.stats.connect_failures += 1;
                self.deferred
                    .push_back((assoc, AssocDownReason::ConnectFailed));
            }
        }
    }

    fn close(&mut self, assoc: AssocId, abort: bool) {
        let Some(mut link) = self.assocs.link_mut(assoc) else {
            debug!("{assoc:?}: Close of an unknown association ignored");
            return;
        };
        if link.closing() {
            return;
        }
        if !abort && !link.overflow.is_empty() {
            // Closed once the overflow is in the transport (pump_overflow).
            link.set_closing();
            self.deferred.push_back((assoc, AssocDownReason::Closed));
            return;
        }
        if let Some(link) = self.assocs.remove(assoc) {
            self.stats.dropped += link.held_messages() as u64;
            self.transports.close(link.transport, abort);
            self.deferred.push_back((assoc, AssocDownReason::Closed));
        }
    }

    fn feed_transport_events(&mut self) {
        let mut tev = std::mem::take(&mut self.tev);
        for ev in tev.drain(..) {
            self.on_transport_event(ev);
        }
        self.tev = tev;
    }

    fn on_transport_event(&mut self, ev: TransportEvent) {
        let now = self.now;
        match ev {
            TransportEvent::Up {
                assoc: t,
                kind,
                channel,
                peer_addrs,
                ..
            } => {
                let channel = channel.map(channel_from_rtf);
                match self.assocs.link_by_transport(t) {
                    Some((id, mut link)) => {
                        if link.closing() {
                            return;
                        }
                        link.set_up(now, channel);
                        self.machine.handle_assoc_up(now, id, &peer_addrs);
                    }
                    None => {
                        let info = AssocInfo {
                            kind,
                            channel,
                            outbound: false,
                            up_since: Some(now),
                        };
                        match self.accept.as_mut() {
                            Some(route) => {
                                let id = self.assocs.insert_accepted(t, info);
                                route(&mut self.machine, now, id, &info, &peer_addrs);
                            }
                            None => {
                                let id = self.assocs.insert_accepted(t, info);
                                self.machine.handle_assoc_up(now, id, &peer_addrs);
                            }
                        }
                    }
                }
            }
            TransportEvent::Message {
                assoc: t,
                ppid,
                data,
                ..
            } => {
                let Some((id, link)) = self.assocs.link_by_transport(t) else {
                    return;
                };
                if link.closing() {
                    return;
                }
                self.stats.messages_received += 1;
                self.machine.handle_message(now, id, ppid, data);
            }
            TransportEvent::Down { assoc: t, reason } => {
                let Some((id, link)) = self.assocs.remove_by_transport(t) else {
                    return;
                };
                self.stats.dropped += link.held_messages() as u64;
                if link.closing() {
                    return;
                }
                self.machine.handle_assoc_down(now, id, down_reason(reason));
            }
            TransportEvent::Datagram { socket, from, data } => {
                let Some(ppid) = self
                    .bound
                    .udp
                    .iter()
                    .find(|u| u.socket == socket)
                    .map(|u| u.ppid)
                else {
                    return;
                };
                self.stats.datagrams_received += 1;
                self.machine.handle_datagram(now, from, ppid, data);
            }
        }
        self.drain();
    }
}
