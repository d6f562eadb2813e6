//! Async transports: RTF over TCP (`shared/spec/tcp-mapping.md` §3), kernel SCTP and UDP
//! behind one API ([`Transports`]) polled from one task. Underneath is the mio driver's
//! transport layer itself ([`rserpool_mio::transport::Transports`], one code path for both
//! drivers): its sockets live in a private `mio::Poll`, and the poll's epoll descriptor is
//! registered with async-io's reactor (the one async-std and smol run on), so the task sleeps
//! in the executor and wakes when any socket is ready or a transport timer is due. The
//! vocabulary ([`TransportEvent`], [`DownReason`], [`SendError`], [`TransportConfig`], …) is
//! the mio driver's, re-exported here.
//!
//! # One task, one poller
//! [`Transports`] is a plain value polled from one task ([`Transports::poll_event`]); it
//! spawns nothing and works under async-std's executor, smol, or
//! `futures_lite::future::block_on` alike. Each poll drains the ready sockets with one
//! `epoll_wait` of zero timeout (`O(ready)`), runs the due timers and writes what was
//! queued; when nothing is left it waits for the poller's descriptor to become readable or
//! for the earliest transport deadline.
//!
//! Why not one reader and one writer task per association:
//! * the sans-IO machine needs `&mut` access for every input, so per-association tasks would
//!   funnel every message through a channel into one machine task anyway;
//! * spawning needs an executor handle, which async-io does not have and which differs
//!   between async-std, smol and `block_on`;
//! * the backpressure contract below needs the send queue and the socket in one place;
//! * in-order delivery per association and "Up before Message before Down" come for free.
//!
//! # Behaviour (the mio driver's, see `rserpool_mio::transport`)
//! * One socket per association (one-to-one SCTP sockets, one TCP connection per peer);
//!   `TCP_NODELAY` / `SCTP_NODELAY` on every socket.
//! * RTF: the connector sends its HELLO with the channel kind at once; an acceptor serving
//!   several kinds echoes the connector's kind; an association is `Up` when the peer's
//!   HELLO arrived; heartbeats when idle and a dead peer after 3 × its interval; protocol
//!   errors abort (RST). TLS on the TCP mapping where [`TransportConfig`] asks for it.
//! * **Backpressure contract**: [`Transports::send`] never blocks and never fails because
//!   the socket is momentarily full. The message joins the association's own queue and is
//!   written as the socket accepts it; nothing queued is dropped while the association lives
//!   and messages leave in order. A message is refused with [`SendError::QueueFull`] only
//!   when the queue already holds bytes and the message would take it above
//!   [`TransportConfig::max_queued_bytes`]. A peer is never dropped because *our* send would
//!   block.
//! * Graceful close: queued messages are still written, then FIN / SCTP SHUTDOWN; the
//!   socket goes when the peer has finished, or after [`TransportConfig::close_linger`] as
//!   an abort. After `Down` or [`Transports::close`] no event names the id again.
//! * Outgoing TCP tries the peer's addresses in order (tcp-mapping.md §3.6).
//! * SCTP cannot carry an empty message: [`Transports::send`] refuses one with
//!   [`SendError::Empty`] (RTF carries empty DATA frames).
//!
//! Writes happen while the transports are polled: [`Transports::send`] queues the message;
//! the next [`Transports::poll_event`] writes everything queued meanwhile with one
//! `write`/`writev` (TCP) or `sendmmsg` (SCTP) per association.
//!
//! # Ids
//! Associations accepted by a listener (and those opened with [`Transports::connect`]) get
//! ids with the top bit clear; [`Transports::connect_as`] takes a caller-chosen id, which
//! must have the top bit set (the machines' [`rserpool_core::io::AssocIdAllocator`] ids),
//! so the two never collide.

use async_io::{Async, Timer};
use bytes::Bytes;
use rserpool_core::AssocId;
use rserpool_core::Protocol;
use rserpool_core::io::AssocIdAllocator;
use rserpool_mio::transport as inner;
use rserpool_proto::rtf::{ChannelKind, ChannelKinds};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use rserpool_mio::transport::sctp::socket::SctpOptions;
pub use rserpool_mio::transport::tls::{TlsPolicy, TlsSettings};
pub use rserpool_mio::transport::{
    DownReason, SendError, SocketId, TransportConfig, TransportEvent, TransportKind, TransportMode,
    UdpOptions, sctp_available,
};

/// Readiness events taken from the poller per `epoll_wait`.
const EVENTS_CAPACITY: usize = 1024;
/// Rounds of draining the poller in one `poll_event` before yielding to the executor.
const ROUNDS_PER_POLL: usize = 16;

/// The transports of one async driver (see the module documentation).
pub struct Transports {
    poll: mio::Poll,
    events: mio::Events,
    inner: inner::Transports,
    /// The poller's epoll descriptor (a clone of its registry) in async-io's reactor.
    poller: Async<mio::Registry>,
    /// Events for the user, in order.
    out: VecDeque<TransportEvent>,
    /// Events of one turn of the inner transports (kept for its memory).
    turn: Vec<TransportEvent>,
    timer: Timer,
    timer_armed: Option<Instant>,
    /// Caller-chosen ids ([`Transports::connect_as`]).
    chosen: ChosenIds,
}

/// Caller-chosen association ids ([`Transports::connect_as`]) and the inner transports'
/// ids of the same associations, both ways.
#[derive(Debug, Default)]
struct ChosenIds {
    inner_of: HashMap<AssocId, AssocId>,
    user_of: HashMap<AssocId, AssocId>,
}

impl ChosenIds {
    /// The inner id of `assoc` (ids not chosen by the caller are the inner ones).
    fn inner(&self, assoc: AssocId) -> AssocId {
        self.inner_of.get(&assoc).copied().unwrap_or(assoc)
    }

    fn insert(&mut self, user: AssocId, inner: AssocId) {
        self.inner_of.insert(user, inner);
        self.user_of.insert(inner, user);
    }

    /// Forgets the caller's id of an inner id (its association is closed or down).
    fn forget(&mut self, inner: AssocId) -> Option<AssocId> {
        let user = self.user_of.remove(&inner)?;
        self.inner_of.remove(&user);
        Some(user)
    }

    fn clear(&mut self) {
        self.inner_of.clear();
        self.user_of.clear();
    }

    /// Puts the caller's id into an event of the inner transports (after `Down`, the id
    /// is forgotten).
    fn rename_for_user(&mut self, ev: &mut TransportEvent) {
        match ev {
            TransportEvent::Up { assoc, .. } | TransportEvent::Message { assoc, .. } => {
                if let Some(user) = self.user_of.get(assoc) {
                    *assoc = *user;
                }
            }
            TransportEvent::Down { assoc, .. } => {
                if let Some(user) = self.forget(*assoc) {
                    *assoc = user;
                }
            }
            TransportEvent::Datagram { .. } => {}
        }
    }
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("inner", &self.inner)
            .field("queued_events", &self.out.len())
            .finish_non_exhaustive()
    }
}

/// The upper protocol a channel kind carries (what the inner `connect` checks): ENRP on
/// the ENRP channel, ASAP on the others (a session channel carries anything).
fn protocol_of(channel: ChannelKind) -> Protocol {
    match channel {
        ChannelKind::Enrp => Protocol::Enrp,
        _ => Protocol::Asap,
    }
}

impl Transports {
    /// Transports with no socket yet. Fails only when the poller cannot be made (out of
    /// file descriptors).
    pub fn new(config: TransportConfig) -> io::Result<Transports> {
        let poll = mio::Poll::new()?;
        let inner = inner::Transports::new(poll.registry(), 0..(1usize << 32), config)?;
        let poller = Async::new(poll.registry().try_clone()?)?;
        let mut t = Transports {
            poll,
            events: mio::Events::with_capacity(EVENTS_CAPACITY),
            inner,
            poller,
            out: VecDeque::new(),
            turn: Vec::new(),
            timer: Timer::never(),
            timer_armed: None,
            chosen: ChosenIds::default(),
        };
        // Sends only queue; each poll writes them, one system call per association.
        t.inner.set_write_batching(true);
        Ok(t)
    }

    /// The configuration in force.
    pub fn config(&self) -> &TransportConfig {
        self.inner.config()
    }

    /// Number of live associations (the ones the user can see).
    pub fn association_count(&self) -> usize {
        self.inner.association_count()
    }

    /// True when no association socket is left (not even one still closing).
    pub fn is_quiet(&self) -> bool {
        self.inner.is_quiet()
    }

    /// Drives the transports, discarding events, until no association socket is left (for
    /// a graceful stop after [`Transports::close_all`]).
    pub fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.is_quiet() {
            if self.poll_event(cx).is_pending() {
                return if self.is_quiet() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
        }
        Poll::Ready(())
    }

    // --- listen / connect ----------------------------------------------------------------

    /// Listens on `addrs` (SCTP: all of them, multi-homed; TCP: the first address) for
    /// associations of the given channel kind(s). Port 0 picks an ephemeral port
    /// ([`Transports::socket_local_addrs`]).
    pub fn listen(
        &mut self,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channels: impl Into<ChannelKinds>,
    ) -> io::Result<SocketId> {
        self.inner.listen(addrs, kind, channels)
    }

    /// Like [`Transports::listen`]; an SCTP listener also becomes the local endpoint that
    /// outgoing associations of channel kind `source_for` leave from (same addresses and
    /// port), so that peers can reach this endpoint by its source address.
    pub fn listen_as_source(
        &mut self,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channels: impl Into<ChannelKinds>,
        source_for: ChannelKind,
    ) -> io::Result<SocketId> {
        self.inner
            .listen_as_source(addrs, kind, channels, source_for)
    }

    /// The local endpoint outgoing SCTP associations of channel kind `channel` leave from
    /// ([`Transports::listen_as_source`]), if any.
    pub fn sctp_source(&self, channel: ChannelKind) -> Option<&[SocketAddr]> {
        self.inner.sctp_source(channel)
    }

    /// Starts an association to one peer with the addresses `addrs` (SCTP: multi-homed
    /// `sctp_connectx`; TCP: tried in order until one connects) and returns its new id at
    /// once; `Up` or `Down { reason: ConnectFailed }` follows.
    pub fn connect(
        &mut self,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channel: ChannelKind,
    ) -> io::Result<AssocId> {
        self.inner
            .connect(addrs, kind, channel, protocol_of(channel))
    }

    /// Like [`Transports::connect`] under a caller-chosen id (top bit set, not in use).
    pub fn connect_as(
        &mut self,
        assoc: AssocId,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channel: ChannelKind,
    ) -> io::Result<()> {
        if !AssocIdAllocator::is_machine_chosen(assoc) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "caller-chosen association ids need the top bit set",
            ));
        }
        if self.chosen.inner_of.contains_key(&assoc) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "association id in use",
            ));
        }
        let id = self.connect(addrs, kind, channel)?;
        self.chosen.insert(assoc, id);
        Ok(())
    }

    // --- send / close / queries ------------------------------------------------------------

    /// Queues one message on `assoc`; it is written at the next poll. Never blocks; see the
    /// backpressure contract in the module documentation.
    pub fn send(
        &mut self,
        assoc: AssocId,
        ppid: u32,
        stream: u16,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let id = self.chosen.inner(assoc);
        self.inner.send(id, ppid, stream, payload)
    }

    /// Bytes queued on `assoc` and not yet accepted by its socket (RTF framing included).
    pub fn queued_bytes(&self, assoc: AssocId) -> Option<usize> {
        self.inner.queued_bytes(self.chosen.inner(assoc))
    }

    /// Closes `assoc`. Graceful: the queued messages are still written, then SCTP SHUTDOWN /
    /// TCP FIN, and the socket closes when the peer has finished (or after
    /// [`TransportConfig::close_linger`], then as an abort). Abort: SCTP ABORT / TCP RST now,
    /// queued data discarded. Either way the id is released at once and no event names it
    /// again. Returns false for an unknown id.
    pub fn close(&mut self, assoc: AssocId, abort: bool) -> bool {
        let id = self.chosen.inner(assoc);
        let closed = self.inner.close(id, abort);
        if closed {
            self.chosen.forget(id);
        }
        closed
    }

    /// Closes every association (see [`Transports::close`]).
    pub fn close_all(&mut self, abort: bool) {
        self.inner.close_all(abort);
        self.chosen.clear();
    }

    /// Acknowledge `assoc`'s incoming packets every second packet (`delayed`: the kernel's
    /// delayed SACK, for a bulk transfer coming in) or each at once (as ENRP associations do).
    /// SCTP only: over the TCP mapping this does nothing.
    pub fn set_delayed_sack(&self, assoc: AssocId, delayed: bool) -> io::Result<()> {
        self.inner
            .set_delayed_sack(self.chosen.inner(assoc), delayed)
    }

    /// `sack_freq` of `assoc`'s socket (SCTP; `None` over the TCP mapping).
    pub fn sack_freq(&self, assoc: AssocId) -> io::Result<Option<u32>> {
        self.inner.sack_freq(self.chosen.inner(assoc))
    }

    /// The peer's addresses of `assoc` (SCTP: the current `sctp_getpaddrs` list).
    pub fn peer_addrs(&self, assoc: AssocId) -> io::Result<Vec<SocketAddr>> {
        self.inner.peer_addrs(self.chosen.inner(assoc))
    }

    /// Our addresses of `assoc`.
    pub fn local_addrs(&self, assoc: AssocId) -> io::Result<Vec<SocketAddr>> {
        self.inner.local_addrs(self.chosen.inner(assoc))
    }

    /// The transport of `assoc`.
    pub fn kind(&self, assoc: AssocId) -> Option<TransportKind> {
        self.inner.kind(self.chosen.inner(assoc))
    }

    /// The bound addresses of a listener or UDP socket (to learn an ephemeral port).
    pub fn socket_local_addrs(&self, socket: SocketId) -> io::Result<Vec<SocketAddr>> {
        self.inner.socket_local_addrs(socket)
    }

    /// Closes a listener or UDP socket. Associations accepted by a listener live on.
    pub fn close_socket(&mut self, socket: SocketId) -> bool {
        self.inner.close_socket(socket)
    }

    // --- UDP ---------------------------------------------------------------------------------

    /// Binds a UDP socket (unicast or multicast receive/send).
    pub fn udp_bind(&mut self, addr: SocketAddr, opts: &UdpOptions) -> io::Result<SocketId> {
        self.inner.udp_bind(addr, opts)
    }

    /// Joins multicast `group` on a UDP socket: an IPv4 group on the interface with address
    /// `interface_v4` (`UNSPECIFIED` = the kernel's choice), an IPv6 group on interface index
    /// `interface_index_v6` (0 = the kernel's choice).
    pub fn udp_join_multicast(
        &mut self,
        socket: SocketId,
        group: IpAddr,
        interface_v4: Ipv4Addr,
        interface_index_v6: u32,
    ) -> io::Result<()> {
        self.inner
            .udp_join_multicast(socket, group, interface_v4, interface_index_v6)
    }

    /// Sends one datagram (unicast or multicast); when the socket buffer is full it waits in
    /// the socket's queue (cap [`TransportConfig::max_udp_queued_bytes`]).
    pub fn udp_send_to(
        &mut self,
        socket: SocketId,
        to: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        self.inner.udp_send_to(socket, to, data)
    }

    // --- polling ------------------------------------------------------------------------------

    /// One turn of the inner transports: the ready sockets (one `epoll_wait` of zero
    /// timeout), the due timers, the queued writes; their events join `out`.
    fn run_turn(&mut self) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        self.inner.set_time(now);
        for ev in self.events.iter() {
            self.inner.handle_event(ev, now, &mut self.turn);
        }
        self.inner.handle_timeout(now, &mut self.turn);
        self.inner.flush_pending();
        for mut ev in self.turn.drain(..) {
            self.chosen.rename_for_user(&mut ev);
            self.out.push_back(ev);
        }
        Ok(())
    }

    /// The next transport event. Drives every socket that is ready (or has something to
    /// write) and the transport timers (RTF heartbeats, dead peers, close lingering); returns
    /// `Pending` with the task registered for the next readiness or timer.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        for _ in 0..ROUNDS_PER_POLL {
            if let Some(e) = self.out.pop_front() {
                return Poll::Ready(e);
            }
            if let Err(e) = self.run_turn() {
                // The poller itself failed (it does not on Linux short of a bad
                // descriptor): try again at the next wake-up rather than spin.
                tracing::warn!("transport poller: {e}");
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !self.out.is_empty() {
                continue;
            }
            // Nothing to report: sleep until a socket is ready or a deadline is due.
            if self.poller.poll_readable(cx).is_ready() {
                continue;
            }
            match self.inner.poll_timeout() {
                Some(d) => {
                    if self.timer_armed != Some(d) {
                        self.timer.set_at(d);
                        self.timer_armed = Some(d);
                    }
                    if Pin::new(&mut self.timer).poll(cx).is_ready() {
                        self.timer_armed = None;
                        continue;
                    }
                }
                None => {
                    if self.timer_armed.take().is_some() {
                        self.timer = Timer::never();
                    }
                }
            }
            return Poll::Pending;
        }
        if let Some(e) = self.out.pop_front() {
            return Poll::Ready(e);
        }
        // Plenty of work and no event for the user: yield to the executor, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Waits for the next transport event (see [`Transports::poll_event`]).
    pub async fn next_event(&mut self) -> TransportEvent {
        futures_lite::future::poll_fn(|cx| self.poll_event(cx)).await
    }
}
