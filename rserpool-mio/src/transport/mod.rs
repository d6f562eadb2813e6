//! Transports for the mio driver: kernel SCTP, RTF over TCP (`shared/spec/tcp-mapping.md`
//! §3) and UDP (multicast announces), behind one API ([`Transports`]).
//!
//! # Socket layout
//! **Every association has its own one-to-one style socket and fd**, SCTP and TCP alike:
//! a listener is a one-to-one (`SOCK_STREAM`) SCTP socket or a TCP socket whose `accept`
//! hands out one socket per association; an outgoing association is its own socket
//! (`sctp_connectx` / `connect`). Why not RSPLIB's single one-to-many socket: with the stock
//! `net.sctp.sndbuf_policy=0` all associations of a one-to-many socket share one ~212 KB
//! send buffer, so one slow peer makes every send fail with `EAGAIN`, and the kernel walks all
//! associations of the socket on each SACK (rsplib-measured.md, "Why 10,000 PEs fail"). One
//! socket per association gives each peer its own send buffer, its own edge-triggered
//! readiness and O(1) kernel work, on stock kernel settings; the kernel's `accept` migrates
//! the association to the new socket, so nothing is lost between set-up and accept. The cost
//! is one fd per association: 100,000 associations need `RLIMIT_NOFILE` above 100,000
//! ([`raise_nofile_limit`] lifts the soft limit to the hard one, usually 1,048,576).
//! `TCP_NODELAY` / `SCTP_NODELAY` are set on every socket.
//!
//! # Backpressure contract
//! [`Transports::send`] never blocks and never fails because the socket is momentarily full:
//! the message goes into the association's own queue, written out as the socket accepts it
//! (immediately when possible, later on `WRITABLE`). Nothing queued is ever dropped while the
//! association lives, and messages leave in order. [`Transports::queued_bytes`] tells how much
//! is waiting; a message is refused with [`SendError::QueueFull`] only when the queue already
//! holds bytes and the message would take it above the per-association cap
//! ([`TransportConfig::max_queued_bytes`]) — the caller decides what to do (drop, defer, close
//! a peer that does not read). A peer is never dropped because *our* send would block.
//!
//! One SCTP message must fit the association's send buffer (Linux refuses longer ones with
//! `EMSGSIZE`): [`Transports::send`] raises `SO_SNDBUF` as needed, up to
//! `net.core.wmem_max` (or beyond with `CAP_NET_ADMIN`), and otherwise refuses the message
//! with [`SendError::TooLarge`]. RSerPool's own messages are far below that limit.
//!
//! # Events and time
//! [`Transports::handle_event`] drains every ready socket until `WouldBlock` (mio is
//! edge-triggered) and appends [`TransportEvent`]s. RTF heartbeats and close lingering need
//! timers: arm the poll timeout with [`Transports::poll_timeout`] and call
//! [`Transports::handle_timeout`]. An outgoing association is reported `Up` (or `Down` with
//! [`DownReason::ConnectFailed`]) later; an incoming one appears with `Up`. After `Down`, or
//! after [`Transports::close`], the [`AssocId`] is gone: no further events name it.
//!
//! # Testing without kernel SCTP
//! `tests/transport_sctp.rs` skips when the kernel has no SCTP. Run it in the VM:
//! `cargo test -p rserpool-mio --test transport_sctp --no-run`, then
//! `shared/tools/sctp-vm/sctp-vm run --net=lo -- env RSERPOOL_REQUIRE_SCTP=1 <binary>
//! --test-threads=1`.

pub mod sctp;
mod timers;
pub mod tls;
pub mod udp;

use bytes::{Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use rserpool_core::paged::PagedVec;
use rserpool_core::{AssocId, Protocol};
use rserpool_proto::rtf::{
    ChannelKind, ChannelKinds, RtfConfig, RtfConnection, RtfEvent, RtfPending, RtfStore,
};
use sctp::socket::{SctpOptions, SctpSocket};
use sctp::sys;
use socket2::{Domain, SockRef, Socket, Type};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::{Duration, Instant};
use timers::Timers;
use tls::{TlsLayer, TlsRead, TlsReadError};

pub use sctp::socket::sctp_available;
pub use sctp::sys::raise_nofile_limit;
pub use tls::{TlsPolicy, TlsSettings};
use udp::UdpQueue;

/// The concrete transport of an association or listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// Kernel SCTP.
    Sctp,
    /// RTF over TCP.
    Tcp,
}

/// Which transport to use (configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TransportMode {
    /// Kernel SCTP only.
    Sctp,
    /// RTF over TCP only.
    Tcp,
    /// SCTP when `socket(AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP)` works, else TCP/RTF.
    #[default]
    Auto,
}

impl TransportMode {
    /// The transport this mode picks on this machine.
    pub fn resolve(self) -> TransportKind {
        match self {
            TransportMode::Sctp => TransportKind::Sctp,
            TransportMode::Tcp => TransportKind::Tcp,
            TransportMode::Auto if sctp_available() => TransportKind::Sctp,
            TransportMode::Auto => TransportKind::Tcp,
        }
    }
}

/// A listener or UDP socket of a [`Transports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u64);

/// Why an association went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DownReason {
    /// Peer unreachable: SCTP COMM_LOST, RTF heartbeat timeout, TCP error.
    Lost,
    /// Graceful shutdown by the peer (SCTP SHUTDOWN, TCP FIN at a frame boundary).
    Shutdown,
    /// The peer aborted (SCTP ABORT, TCP RST, TCP EOF inside a frame).
    Abort,
    /// An outgoing association could not be set up.
    ConnectFailed,
    /// The peer violated RTF; we aborted the connection (RST).
    ProtocolError,
}

/// What an SCTP notification means for its association.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SctpNotice {
    /// `SCTP_COMM_UP`: the association is up.
    Up,
    /// The association is gone (`SCTP_COMM_LOST`, `SCTP_SHUTDOWN_COMP`,
    /// `SCTP_CANT_STR_ASSOC`).
    Down(DownReason),
    /// `SCTP_SHUTDOWN_EVENT`: the peer shuts down; nothing more can be sent, and reading goes
    /// on until the shutdown completes (so that closing does not ABORT).
    PeerShutdown,
}

impl SctpNotice {
    /// What the notification `data` means, or `None` when there is nothing to act on.
    fn of(data: &[u8]) -> Option<SctpNotice> {
        match sys::parse_notification(data)? {
            sys::Notification::AssocChange {
                state, with_abort, ..
            } => match state {
                sys::SCTP_COMM_UP => Some(SctpNotice::Up),
                sys::SCTP_COMM_LOST => Some(SctpNotice::Down(if with_abort {
                    DownReason::Abort
                } else {
                    DownReason::Lost
                })),
                sys::SCTP_SHUTDOWN_COMP => Some(SctpNotice::Down(DownReason::Shutdown)),
                sys::SCTP_CANT_STR_ASSOC => Some(SctpNotice::Down(DownReason::ConnectFailed)),
                _ => None,
            },
            sys::Notification::Shutdown => Some(SctpNotice::PeerShutdown),
            _ => None,
        }
    }
}

/// What happened on the transports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// An association is up (SCTP COMM_UP / accepted; RTF: TCP connected and HELLO received).
    Up {
        /// The association.
        assoc: AssocId,
        /// Its transport.
        kind: TransportKind,
        /// The listener that accepted it (`None` for outgoing associations).
        listener: Option<SocketId>,
        /// Channel kind: negotiated by RTF; for SCTP the one given to `connect`/`listen`
        /// when that was a single kind.
        channel: Option<ChannelKind>,
        /// The peer's addresses (all of them for SCTP).
        peer_addrs: Vec<SocketAddr>,
        /// Our addresses of the association.
        local_addrs: Vec<SocketAddr>,
    },
    /// One whole user message.
    Message {
        /// The association.
        assoc: AssocId,
        /// Payload protocol identifier (host order).
        ppid: u32,
        /// Stream id.
        stream: u16,
        /// The message.
        data: Bytes,
    },
    /// The association is gone (reported once; the id is not used again).
    Down {
        /// The association.
        assoc: AssocId,
        /// Why.
        reason: DownReason,
    },
    /// A UDP datagram.
    Datagram {
        /// The UDP socket.
        socket: SocketId,
        /// Sender.
        from: SocketAddr,
        /// Payload.
        data: Bytes,
    },
}

/// Why [`Transports::send`] refused a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No such (live) association or socket.
    UnknownAssoc,
    /// The association's queue is over its cap; nothing was queued.
    QueueFull {
        /// Bytes already queued.
        queued: usize,
        /// The cap.
        cap: usize,
    },
    /// The message is longer than the transport carries (the configured maximum, or an SCTP
    /// send buffer that could not be raised to the message's size).
    TooLarge {
        /// Message length.
        len: usize,
        /// Largest message.
        max: usize,
    },
    /// The association is closing or failed; its `Down` is (or was) reported.
    Closed,
    /// An empty message on an SCTP association (SCTP cannot carry one: `sendmsg` fails with
    /// `EINVAL`); nothing was queued, the association is unaffected. RTF carries empty DATA.
    Empty,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::UnknownAssoc => write!(f, "unknown association"),
            SendError::QueueFull { queued, cap } => {
                write!(f, "send queue full ({queued} bytes queued, cap {cap})")
            }
            SendError::TooLarge { len, max } => write!(f, "message of {len} bytes > {max}"),
            SendError::Closed => write!(f, "association closed"),
            SendError::Empty => write!(f, "SCTP cannot carry an empty message"),
        }
    }
}

impl std::error::Error for SendError {}

/// Settings of a [`Transports`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Our RTF heartbeat interval (announced in HELLO; peers declare us dead after 3×).
    pub rtf_heartbeat_interval: Duration,
    /// Largest message sent or accepted (RTF frame limit minus header; SCTP reassembly limit).
    pub max_message_len: usize,
    /// Per-association send queue cap (see the backpressure contract); at most 1 GiB
    /// (a larger value acts as 1 GiB).
    pub max_queued_bytes: usize,
    /// Per-UDP-socket send queue cap.
    pub max_udp_queued_bytes: usize,
    /// How long a graceful close may take before it turns into an abort.
    pub close_linger: Duration,
    /// `listen()` backlog.
    pub listen_backlog: i32,
    /// SCTP socket settings.
    pub sctp: SctpOptions,
    /// Mutually authenticated TLS for the TCP associations of some channel kinds
    /// ([`tls`]); `None` (the default) = plain RTF, as RSPLIB speaks it. Listeners and
    /// associations over SCTP that the policy covers are refused.
    pub tls: Option<TlsPolicy>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            rtf_heartbeat_interval: Duration::from_millis(u64::from(
                rserpool_proto::rtf::DEFAULT_HEARTBEAT_INTERVAL_MS,
            )),
            max_message_len: rserpool_proto::rtf::DEFAULT_MAX_FRAME_LEN
                - rserpool_proto::rtf::HEADER_LEN,
            max_queued_bytes: 4 * 1024 * 1024,
            max_udp_queued_bytes: 256 * 1024,
            close_linger: Duration::from_secs(5),
            listen_backlog: 4096,
            sctp: SctpOptions::default(),
            tls: None,
        }
    }
}

impl TransportConfig {
    /// TLS settings when the policy covers `channel` (outgoing associations).
    fn tls_for(&self, channel: ChannelKind) -> Option<&Arc<TlsSettings>> {
        self.tls
            .as_ref()
            .filter(|p| p.covers(channel))
            .map(|p| &p.settings)
    }

    /// TLS settings when the policy covers any of `kinds` (listeners).
    fn tls_for_any(&self, kinds: ChannelKinds) -> Option<&Arc<TlsSettings>> {
        self.tls
            .as_ref()
            .filter(|p| p.covers_any(kinds))
            .map(|p| &p.settings)
    }

    /// SCTP settings of sockets carrying `kinds`: ENRP associations acknowledge every
    /// packet at once (`SCTP_DELAYED_SACK`, `sack_freq` 1; accepted sockets inherit it from
    /// their listener). A registrar killed right after its Presence keeps that message
    /// unacknowledged while its peers delay their SACK (up to 200 ms), and its kernel sends
    /// the SHUTDOWN that tells them of its death only after the SACK: every takeover started
    /// up to 200 ms late. ENRP carries a few messages a second per peer, so the SACKs cost
    /// nothing.
    pub fn sctp_for(&self, kinds: impl Into<ChannelKinds>) -> SctpOptions {
        SctpOptions {
            sack_immediately: self.sctp.sack_immediately
                || kinds.into().contains(ChannelKind::Enrp),
            ..self.sctp
        }
    }

    fn rtf(&self) -> RtfConfig {
        RtfConfig {
            heartbeat_interval_ms: u32::try_from(self.rtf_heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            max_frame_len: self
                .max_message_len
                .saturating_add(rserpool_proto::rtf::HEADER_LEN),
        }
    }
}

/// UDP socket options for [`Transports::udp_bind`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UdpOptions {
    /// `SO_REUSEADDR` (several receivers of one multicast group on a host).
    pub reuse_addr: bool,
    /// `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// Multicast TTL / hop limit for sends.
    pub multicast_ttl: Option<u32>,
    /// Multicast loopback for sends (receive our own announces on this host).
    pub multicast_loop: Option<bool>,
    /// Outgoing interface for IPv4 multicast, by address.
    pub multicast_if_v4: Option<Ipv4Addr>,
    /// Outgoing interface for IPv6 multicast, by index.
    pub multicast_if_v6: Option<u32>,
}

// ---------------------------------------------------------------------------------------

const RECV_BUF: usize = 64 * 1024;
const MAX_IOV: usize = 64;
/// `recvmmsg` slots per SCTP read (the receive buffer is cut into this many; a longer
/// message arrives in pieces and is reassembled).
const RECV_SLOTS: usize = 16;
/// RTF frames up to this size are copied into the association's output buffer (one
/// contiguous write for many small frames); longer ones are written from their own buffer.
const COALESCE_MAX: usize = 2048;
/// TCP reads (of at most [`RECV_BUF`] bytes) per readiness event or timer pass and
/// association before yielding to the others and to the machine (the rest is read from an
/// immediate timer, in the next call). Everything read in one pass is held as events until
/// the caller feeds them to its machine: 256 KiB per association and pass keeps that small
/// even when a peer writes without end (with 64 reads, a peer that never read its answers
/// made a registrar hold 8 MiB of requests per pass and grow to 40 MB).
const READ_BUDGET: usize = 4;
/// TLS reads per pass (rustls reads at most 4 KiB at a time: the same 256 KiB per pass).
const TLS_READ_BUDGET: usize = READ_BUDGET * RECV_BUF / 4096;
/// SCTP messages per readiness event or timer pass and association (see [`READ_BUDGET`]).
const SCTP_READ_BUDGET: usize = 64;
/// How long after an outgoing SCTP connect the next spare socket is made
/// ([`SctpOptions::spare_socket`]): later than the association's set-up and first messages.
const SPARE_DELAY_US: u64 = 50_000;

/// One slot of [`Transports`]. An association, nearly every slot of a registrar's table,
/// lies inline (no allocation, no pointer, no allocator header); the few listeners and UDP
/// sockets are boxed. Only associations have ids, so the slot keeps no generation of its
/// own: an association's record holds it.
enum Slot {
    Listener(Box<Listener>),
    Assoc(Assoc),
    Udp(Box<Udp>),
}

enum Listener {
    Tcp {
        listener: TcpListener,
        id: SocketId,
        kinds: ChannelKinds,
        /// Accepted connections are TLS servers requiring a client certificate.
        tls: Option<Arc<TlsSettings>>,
    },
    Sctp {
        sock: SctpSocket,
        id: SocketId,
        kinds: ChannelKinds,
    },
}

struct Udp {
    sock: UdpSocket,
    id: SocketId,
    queue: UdpQueue,
}

struct Assoc {
    /// Its id's generation ([`Transports::assoc_id`] with the slot index; the low 32 bits
    /// of the transports' allocation count, so an id comes back only after 4 billion more
    /// associations).
    generation: u32,
    /// The listener that accepted it (a [`SocketId`]; ids start at 1 and fit in 32 bits,
    /// [`Transports::next_id`]).
    listener: Option<NonZeroU32>,
    /// Bytes waiting in `io`'s queue.
    queued: Queued,
    channel: Option<ChannelKind>,
    /// A write failed (what the association's `Down` will say); handled at the next
    /// timeout (scheduled immediately). The error itself is not kept: only its reason.
    write_failed: Option<DownReason>,
    /// [`Flags`]: attached, listed, announced, outbound, read pending, dirty, lingering,
    /// connecting, write shut, peer EOF, discarding.
    flags: Flags,
    io: AssocIo,
}

/// An association's yes/no state, one bit each ([`Assoc::flags`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags(u16);

impl Flags {
    /// The user holds the id (false after `close` or `Down`).
    const ATTACHED: u16 = 1;
    /// The id finds it ([`Transports::listed`]): attached, until the transports noticed it
    /// no longer is (right after the call that detached it).
    const LISTED: u16 = 1 << 1;
    /// `Up` was reported.
    const ANNOUNCED: u16 = 1 << 2;
    /// We connected (not accepted).
    const OUTBOUND: u16 = 1 << 3;
    /// The read budget of one event ran out with data left: read again at once (timer 0).
    const READ_PENDING: u16 = 1 << 4;
    /// Listed in [`Transports::dirty`]: written out by [`Transports::flush_pending`].
    const DIRTY: u16 = 1 << 5;
    /// Graceful close in progress: aborted at its deadline in [`Transports::lingering`].
    const LINGERING: u16 = 1 << 6;
    /// Connecting (outbound, not yet up).
    const CONNECTING: u16 = 1 << 7;
    /// Our side of the stream is shut (TCP FIN / SCTP SHUTDOWN sent or the peer's seen).
    const WRITE_SHUT: u16 = 1 << 8;
    /// TCP: the peer ended its byte stream.
    const PEER_EOF: u16 = 1 << 9;
    /// SCTP: skipping the rest of an over-long message or notification until MSG_EOR.
    const DISCARD: u16 = 1 << 10;

    fn get(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    fn set(&mut self, bit: u16, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }
}

/// The largest per-association queue cap ([`TransportConfig::max_queued_bytes`]): a queue
/// holds at most this plus one message, which [`Queued`] counts in 32 bits.
const MAX_QUEUE_CAP: usize = 1 << 30;

/// Bytes waiting in an association's queue, in 4 bytes (at most [`MAX_QUEUE_CAP`] and one
/// message; a count beyond 4 GiB, a message of gigabytes, stays at `u32::MAX`).
#[derive(Clone, Copy, Debug, Default)]
struct Queued(u32);

impl Queued {
    fn add(&mut self, n: usize) {
        self.0 = self.0.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn sub(&mut self, n: usize) {
        self.0 = self.0.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn get(self) -> usize {
        self.0 as usize
    }
}

/// The I/O state of an association, inline in its [`Assoc`]: the variants have the same
/// size (32 bytes: the TCP mapping's RTF state lies inline, its buffers out of line only
/// while they hold anything), so neither kind pays for the other's.
enum AssocIo {
    Tcp(TcpIo),
    Sctp(SctpIo),
}

/// What only some TCP connections have ([`TcpRare::extra`]).
struct TcpExtra {
    /// TLS between the socket and RTF ([`tls`]); `None` = plain RTF.
    tls: Option<Box<TlsLayer>>,
    /// The peer's addresses still to try while connecting.
    next_addrs: VecDeque<SocketAddr>,
}

/// What a TCP connection holds only while it has any of it, in one box: RTF's pending parts
/// (a frame in progress, frames and events not yet taken), the output not yet written, and
/// the TLS and connect state of the connections that have them.
///
/// The output is written in order: chunks (large frames, and runs of small frames copied
/// together), then the small frames copied since (the tail); `front_off` says how much of
/// the front chunk is written.
#[derive(Default)]
struct TcpRare {
    rtf: RtfPending,
    chunks: VecDeque<Bytes>,
    /// Small frames, copied after `chunks` (one buffer for many frames).
    tail: BytesMut,
    /// Bytes of the front chunk already written (a chunk is at most one RTF frame, whose
    /// length is a `u32`).
    front_off: u32,
    extra: Option<Box<TcpExtra>>,
}

impl TcpRare {
    fn output_is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.is_empty()
    }

    /// Nothing in it needs keeping.
    fn is_empty(&self) -> bool {
        self.output_is_empty() && self.rtf.is_empty() && self.extra.is_none()
    }
}

/// Spare [`TcpRare`]s kept per thread, at most this many.
const SPARE_RARE: usize = 64;
/// A spare keeps its tail buffer up to this capacity (the frames of an answer or two).
const SPARE_TAIL_BYTES: usize = 1024;

thread_local! {
    /// The spare boxes of [`TcpStore`] (per thread: a driver runs on one).
    #[allow(clippy::vec_box)]
    static SPARE_TCP: RefCell<Vec<Box<TcpRare>>> = const { RefCell::new(Vec::new()) };
}

/// A TCP connection's [`TcpRare`] box, which its RTF connection keeps as its store
/// ([`RtfStore`]): one null pointer while it holds nothing (an idle connection). The box
/// comes from the thread's spares ([`SPARE_RARE`]) and goes back once it holds nothing, so
/// an answer or a keep-alive waiting for the batched write costs no allocation of its own.
#[derive(Default)]
struct TcpStore(Option<Box<TcpRare>>);

impl RtfStore for TcpStore {
    fn pending(&self) -> Option<&RtfPending> {
        self.0.as_ref().map(|r| &r.rtf)
    }

    fn pending_mut(&mut self) -> Option<&mut RtfPending> {
        self.0.as_mut().map(|r| &mut r.rtf)
    }

    fn make_pending(&mut self) -> &mut RtfPending {
        &mut self.rare().rtf
    }

    fn pending_emptied(&mut self) {
        self.settle();
    }
}

impl TcpStore {
    /// The box, taken from the spares if there was none.
    fn rare(&mut self) -> &mut TcpRare {
        self.0.get_or_insert_with(|| take_spare(&SPARE_TCP))
    }

    /// Nothing to write.
    fn output_is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|r| r.output_is_empty())
    }

    /// Appends one chunk of the RTF byte stream: copied into the tail when small, after
    /// the tail (which becomes a chunk of its own) when not.
    fn push(&mut self, c: Bytes) {
        if c.is_empty() {
            return;
        }
        let q = self.rare();
        if c.len() <= COALESCE_MAX {
            q.tail.extend_from_slice(&c);
        } else {
            if !q.tail.is_empty() {
                let t = q.tail.split().freeze();
                q.chunks.push_back(t);
            }
            q.chunks.push_back(c);
        }
    }

    /// The tail, taken out to encode frames onto it (give it back with
    /// [`put_tail`](Self::put_tail)).
    fn take_tail(&mut self) -> BytesMut {
        std::mem::take(&mut self.rare().tail)
    }

    /// Gives back the tail taken with [`take_tail`](Self::take_tail).
    fn put_tail(&mut self, tail: BytesMut) {
        self.rare().tail = tail;
        self.settle();
    }

    /// The bytes still to write, piece by piece: the chunks (the front one from its write
    /// offset), then the tail.
    fn unwritten(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().flat_map(|q| {
            q.chunks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        c.get(q.front_off as usize..).unwrap_or_default()
                    } else {
                        c.as_ref()
                    }
                })
                .chain((!q.tail.is_empty()).then_some(&q.tail[..]))
        })
    }

    /// The unwritten part of the front piece.
    fn front(&self) -> Option<&[u8]> {
        self.unwritten().next()
    }

    /// `n` more bytes of the front piece were written (at most its unwritten part); a
    /// chunk is dropped once it is all written.
    fn advance_front(&mut self, n: usize) {
        let Some(q) = self.0.as_mut() else {
            return;
        };
        if let Some(front) = q.chunks.front() {
            let off = (q.front_off as usize).saturating_add(n);
            if off >= front.len() {
                q.chunks.pop_front();
                q.front_off = 0;
            } else {
                q.front_off = u32::try_from(off).unwrap_or(u32::MAX);
            }
        } else {
            let k = n.min(q.tail.len());
            bytes::Buf::advance(&mut q.tail, k);
        }
        self.settle();
    }

    /// `n` bytes were written from the front: drops the pieces written out and advances
    /// into the next; returns the part of `n` beyond all of them.
    fn consume(&mut self, mut n: usize) -> usize {
        while n > 0 {
            let Some(rest) = self.front().map(<[u8]>::len) else {
                break;
            };
            let k = n.min(rest);
            self.advance_front(k);
            n -= k;
        }
        n
    }

    /// The TLS layer, if the connection has one.
    fn tls(&self) -> Option<&TlsLayer> {
        self.0.as_ref()?.extra.as_ref()?.tls.as_deref()
    }

    /// The TLS layer, if the connection has one, to use.
    fn tls_mut(&mut self) -> Option<&mut TlsLayer> {
        self.0.as_mut()?.extra.as_mut()?.tls.as_deref_mut()
    }

    /// The TLS and connect state, taken out (give it back with
    /// [`put_extra`](Self::put_extra)), if there is any.
    fn take_extra(&mut self) -> Option<Box<TcpExtra>> {
        let x = self.0.as_mut()?.extra.take();
        self.settle();
        x
    }

    /// Gives back what [`take_extra`](Self::take_extra) took.
    fn put_extra(&mut self, extra: Option<Box<TcpExtra>>) {
        if extra.is_some() {
            self.rare().extra = extra;
        }
    }

    /// The peer's next address to try while connecting.
    fn next_addr(&mut self) -> Option<SocketAddr> {
        let a = self.0.as_mut()?.extra.as_mut()?.next_addrs.pop_front();
        self.settle();
        a
    }

    /// Connected: the peer's other addresses are not needed any more (nor the connect
    /// state, unless TLS runs).
    fn connected(&mut self) {
        if let Some(r) = self.0.as_mut()
            && let Some(x) = r.extra.as_mut()
        {
            x.next_addrs = VecDeque::new();
            if x.tls.is_none() {
                r.extra = None;
            }
        }
        self.settle();
    }

    /// Gives the box back to the spares once it holds nothing; once everything is written
    /// but the box stays (a frame in progress, TLS), lets go of a large output buffer as a
    /// spare would.
    fn settle(&mut self) {
        let Some(q) = self.0.as_mut() else {
            return;
        };
        if q.is_empty() {
            self.release();
        } else if q.output_is_empty() {
            q.trim_output();
        }
    }

    /// Gives the box, emptied, to the spares (its buffers if small), or drops it.
    fn release(&mut self) {
        let Some(mut q) = self.0.take() else {
            return;
        };
        q.rtf.reset(SPARE_QUEUE_SLOTS);
        q.extra = None;
        q.chunks.clear();
        q.front_off = 0;
        q.tail.clear();
        q.trim_output();
        give_spare(&SPARE_TCP, q, SPARE_RARE);
    }
}

impl TcpRare {
    /// With everything written: keeps the output's buffers only while they are small.
    fn trim_output(&mut self) {
        // Keep the tail's buffer only if it is ours alone and small: reclaiming an emptied
        // buffer makes all of its allocation the capacity again (a written-out buffer has
        // none left after its cursor) and fails when another handle shares it.
        if !(self.tail.try_reclaim(1) && self.tail.capacity() <= SPARE_TAIL_BYTES) {
            self.tail = BytesMut::new();
        }
        if self.chunks.capacity() > SPARE_QUEUE_SLOTS {
            self.chunks = VecDeque::new();
        }
    }
}

/// A spare from the thread's store `spares`, or a new one.
fn take_spare<T: Default>(spares: &'static LocalKey<RefCell<Vec<Box<T>>>>) -> Box<T> {
    spares
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Gives `item` to the thread's store `spares` if it holds fewer than `max` (else drops it).
fn give_spare<T>(spares: &'static LocalKey<RefCell<Vec<Box<T>>>>, item: Box<T>, max: usize) {
    let _ = spares.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < max {
            s.push(item);
        }
    });
}

impl Drop for TcpStore {
    fn drop(&mut self) {
        self.release();
    }
}

/// The TCP mapping's I/O state in an association's record: 32 bytes, the RTF connection
/// inline (24 bytes) with everything it and the socket hold only while they have any of it
/// behind its one pointer ([`TcpStore`]); its yes/no state lies in the association's
/// [`Flags`], so that [`AssocIo`] keeps its variant in the socket's spare value.
struct TcpIo {
    stream: TcpStream,
    /// The RTF connection, its store holding the output, TLS and connect state.
    rtf: RtfConnection<TcpStore>,
}

impl TcpIo {
    /// `connecting`: `next_addrs` are the peer's further addresses to try, in order.
    fn new(
        stream: TcpStream,
        mut rtf: RtfConnection<TcpStore>,
        tls: Option<Box<TlsLayer>>,
        next_addrs: VecDeque<SocketAddr>,
    ) -> Self {
        if tls.is_some() || !next_addrs.is_empty() {
            rtf.store_mut()
                .put_extra(Some(Box::new(TcpExtra { tls, next_addrs })));
        }
        TcpIo { stream, rtf }
    }

    /// The output (and what else the connection holds out of line).
    fn out(&self) -> &TcpStore {
        self.rtf.store()
    }

    /// The output (and what else the connection holds out of line), to change.
    fn out_mut(&mut self) -> &mut TcpStore {
        self.rtf.store_mut()
    }

    /// Nothing waits to be written: no RTF output and no TLS record.
    fn all_written(&self) -> bool {
        self.out().output_is_empty() && self.out().tls().is_none_or(|l| !l.wants_write())
    }

    /// TLS: moves the output into the TLS layer as plaintext (as far as it takes it) and
    /// its records to the socket, until everything is out or the socket is full.
    /// `queued` is decreased by the plaintext handed over.
    fn flush_tls(&mut self, queued: &mut Queued) -> io::Result<()> {
        // The TLS layer is taken out of the store meanwhile (the output lies there too).
        let Some(mut extra) = self.out_mut().take_extra() else {
            return Ok(());
        };
        let r = match extra.tls.as_deref_mut() {
            Some(tls) => self.flush_tls_with(tls, queued),
            None => Ok(()),
        };
        self.out_mut().put_extra(Some(extra));
        r
    }

    fn flush_tls_with(&mut self, tls: &mut TlsLayer, queued: &mut Queued) -> io::Result<()> {
        loop {
            let mut moved = 0;
            while let Some(chunk) = self.out().front() {
                let len = chunk.len();
                let n = if len == 0 { 0 } else { tls.write_plain(chunk)? };
                moved += n;
                self.out_mut().advance_front(n);
                if n < len {
                    break;
                }
            }
            queued.sub(moved);
            if !tls.write_records(&mut self.stream)? {
                return Ok(());
            }
            if moved == 0 || self.out().output_is_empty() {
                // Everything is out, or the layer takes no plaintext yet (handshake).
                return Ok(());
            }
        }
    }

    /// Moves what RTF queued (HELLO, heartbeats, acks, long frames) to the output; returns
    /// the bytes moved.
    fn take_rtf_transmit(&mut self, now_us: u64) -> usize {
        let mut n = 0;
        while let Some(c) = self.rtf.poll_transmit(now_us) {
            n += c.len();
            self.out_mut().push(c);
        }
        n
    }
}

/// One queued SCTP message: PPID, stream, payload.
type OutMsg = (u32, u16, Bytes);

/// An SCTP send queue: one null pointer while empty (idle associations, nearly all of them),
/// its buffer taken from the thread's store of spare queues ([`SPARE_QUEUES`]) when the
/// first message comes and given back when the last one has gone. A keep-alive or an answer
/// waiting for the batched write at the end of a wake-up so costs no allocation, and no
/// association carries a message slot of its own (it did: 40 of its 120 bytes).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // one pointer inline instead of four words
struct OutQueue(Option<Box<VecDeque<OutMsg>>>);

/// Spare queues kept per thread, at most this many.
const SPARE_QUEUES: usize = 64;
/// A queue that grew beyond this many slots is not kept as a spare.
const SPARE_QUEUE_SLOTS: usize = 16;

thread_local! {
    /// The spare queues of [`OutQueue`] (per thread: a driver runs on one), boxed as the
    /// queues hold them: handing one over moves a pointer and reuses both allocations.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<VecDeque<OutMsg>>>> = const { RefCell::new(Vec::new()) };
}

impl OutQueue {
    fn push_back(&mut self, m: OutMsg) {
        self.0
            .get_or_insert_with(|| take_spare(&SPARE))
            .push_back(m);
    }

    fn pop_front(&mut self) -> Option<OutMsg> {
        let q = self.0.as_mut()?;
        let m = q.pop_front();
        if q.is_empty() {
            self.release();
        }
        m
    }

    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn iter(&self) -> impl Iterator<Item = &OutMsg> {
        self.0.iter().flat_map(|q| q.iter())
    }

    fn clear(&mut self) {
        if let Some(q) = self.0.as_mut() {
            q.clear();
        }
        self.release();
    }

    /// Gives the (empty) queue back to the spares, or drops it.
    fn release(&mut self) {
        if let Some(q) = self.0.take()
            && q.is_empty()
            && q.capacity() <= SPARE_QUEUE_SLOTS
        {
            give_spare(&SPARE, q, SPARE_QUEUES);
        }
    }
}

impl Drop for OutQueue {
    fn drop(&mut self) {
        self.clear();
    }
}

/// SCTP's I/O state in an association's record (its yes/no state in the association's
/// [`Flags`]).
#[allow(clippy::box_collection)] // `reasm`: one pointer inline instead of three words
struct SctpIo {
    sock: SctpSocket,
    out: OutQueue,
    /// The first pieces of a message arriving in several (out of line, only meanwhile).
    reasm: Option<Box<Vec<u8>>>,
    /// `SO_SNDBUF` as last read (an `int` in the kernel): the largest message one
    /// `sendmsg` may carry.
    sndbuf: u32,
}

impl SctpIo {
    fn new(sock: SctpSocket) -> SctpIo {
        SctpIo {
            sock,
            out: OutQueue::default(),
            reasm: None,
            sndbuf: 0,
        }
    }
}

/// What to do with an association after driving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Close the socket now (abort = RST/ABORT via `SO_LINGER` 0).
    Remove {
        abort: bool,
    },
}

struct Ctx<'a> {
    now_us: u64,
    /// The id of the association being driven.
    id: AssocId,
    buf: &'a mut [u8],
    cfg: &'a TransportConfig,
    /// [`Transports::rtf`].
    rtf: &'a RtfConfig,
    out: &'a mut Vec<TransportEvent>,
    /// RTF events of the association being driven (one buffer for all associations).
    rtf_events: &'a mut VecDeque<RtfEvent>,
}

/// The `Down` reason of an association whose read or write failed with `e`: a reset peer
/// aborted it, anything else lost it.
fn down_reason(e: &io::Error) -> DownReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => DownReason::Abort,
        _ => DownReason::Lost,
    }
}

impl Assoc {
    /// A new association's record (its id is given when it takes its slot,
    /// [`Transports::alloc`]).
    fn new(
        io: AssocIo,
        outbound: bool,
        listener: Option<NonZeroU32>,
        channel: Option<ChannelKind>,
    ) -> Assoc {
        let mut flags = Flags(Flags::ATTACHED);
        flags.set(Flags::OUTBOUND, outbound);
        // An outbound association starts connecting; an accepted one is connected.
        flags.set(Flags::CONNECTING, outbound);
        Assoc {
            generation: 0,
            listener,
            queued: Queued::default(),
            channel,
            write_failed: None,
            flags,
            io,
        }
    }

    fn kind(&self) -> TransportKind {
        match self.io {
            AssocIo::Tcp(_) => TransportKind::Tcp,
            AssocIo::Sctp(_) => TransportKind::Sctp,
        }
    }

    /// Reports `Down` (when the user can see this association) and detaches it.
    fn down(&mut self, id: AssocId, reason: DownReason, out: &mut Vec<TransportEvent>) {
        if self.flags.get(Flags::ATTACHED)
            && (self.flags.get(Flags::ANNOUNCED) || self.flags.get(Flags::OUTBOUND))
        {
            let reason = if self.flags.get(Flags::ANNOUNCED) {
                reason
            } else {
                DownReason::ConnectFailed
            };
            out.push(TransportEvent::Down { assoc: id, reason });
        }
        self.flags.set(Flags::ATTACHED, false);
    }

    /// The association's next deadline; `linger`: the end of its graceful close, if closing
    /// ([`Transports::lingering`]); `now_us`: the time of the latest call.
    fn next_deadline(&self, linger: Option<u64>, rtf: &RtfConfig, now_us: u64) -> Option<u64> {
        if self.write_failed.is_some() || self.flags.get(Flags::READ_PENDING) {
            return Some(0);
        }
        let rtf = match &self.io {
            AssocIo::Tcp(t) => t.rtf.poll_timeout(rtf, now_us),
            AssocIo::Sctp(_) => None,
        };
        match (rtf, linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The end of its graceful close, if closing: its entry (slot `idx`) in
    /// [`Transports::lingering`], looked at only when its flag says it is closing (no
    /// hashing per message).
    fn linger_deadline(&self, idx: usize, lingering: &HashMap<usize, u64>) -> Option<u64> {
        if self.flags.get(Flags::LINGERING) {
            lingering.get(&idx).copied()
        } else {
            None
        }
    }

    /// Detaches it for a graceful close; the transports give it its deadline
    /// ([`Transports::start_linger`]).
    fn begin_close(&mut self) {
        self.flags.set(Flags::ATTACHED, false);
        self.flags.set(Flags::LINGERING, true);
    }

    /// Queues a message (cap already checked). TCP: the frame goes into the output at once
    /// (small frames are copied into the output buffer, no allocation per message).
    fn enqueue(
        &mut self,
        ppid: u32,
        stream: u16,
        data: Bytes,
        rtf: &RtfConfig,
        now_us: u64,
    ) -> Result<(), SendError> {
        match &mut self.io {
            AssocIo::Tcp(t) => {
                let max = rtf.max_payload_len();
                let map = |e| match e {
                    rserpool_proto::rtf::RtfError::MessageTooLong { length, .. } => {
                        SendError::TooLarge { len: length, max }
                    }
                    _ => SendError::Closed,
                };
                self.queued.add(t.take_rtf_transmit(now_us));
                if data.len() <= COALESCE_MAX {
                    // Encoded straight onto the output's tail, taken out of the RTF
                    // connection's store meanwhile.
                    let mut tail = t.out_mut().take_tail();
                    let before = tail.len();
                    let r = t
                        .rtf
                        .send_into(rtf, now_us, ppid, stream, false, &data, &mut tail);
                    let added = tail.len().saturating_sub(before);
                    t.out_mut().put_tail(tail);
                    r.map_err(map)?;
                    self.queued.add(added);
                } else {
                    t.rtf.send(rtf, ppid, stream, false, data).map_err(map)?;
                }
                self.queued.add(t.take_rtf_transmit(now_us));
            }
            AssocIo::Sctp(s) => {
                if data.is_empty() {
                    return Err(SendError::Empty);
                }
                if data.len() > s.sndbuf as usize {
                    s.sndbuf = s
                        .sock
                        .ensure_send_buffer(data.len())
                        .map_or(s.sndbuf, |n| u32::try_from(n).unwrap_or(u32::MAX));
                    if data.len() > s.sndbuf as usize {
                        return Err(SendError::TooLarge {
                            len: data.len(),
                            max: s.sndbuf as usize,
                        });
                    }
                }
                self.queued.add(data.len());
                s.out.push_back((ppid, stream, data));
            }
        }
        Ok(())
    }

    /// Moves RTF frames into the write queue and writes as much as the socket takes.
    fn flush(&mut self, now_us: u64) {
        if self.write_failed.is_some() {
            return;
        }
        match &mut self.io {
            AssocIo::Tcp(t) => {
                self.queued.add(t.take_rtf_transmit(now_us));
                if self.flags.get(Flags::CONNECTING) || self.flags.get(Flags::WRITE_SHUT) {
                    return;
                }
                if t.out().tls().is_some() {
                    if let Err(e) = t.flush_tls(&mut self.queued) {
                        self.write_failed = Some(down_reason(&e));
                        return;
                    }
                    if t.out().output_is_empty() && self.flags.get(Flags::LINGERING) {
                        // Graceful close: close_notify after the last frame, then FIN.
                        if let Some(l) = t.out_mut().tls_mut() {
                            l.close_notify();
                        }
                        match t.flush_tls(&mut self.queued) {
                            Err(e) => self.write_failed = Some(down_reason(&e)),
                            Ok(()) if t.all_written() => {
                                let _ = t.stream.shutdown(std::net::Shutdown::Write);
                                self.flags.set(Flags::WRITE_SHUT, true);
                            }
                            Ok(()) => {}
                        }
                    }
                    return;
                }
                while !t.out().output_is_empty() {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let mut n = 0;
                    // The store through its field, not `out()`: the socket is borrowed
                    // beside the slices.
                    for (i, c) in t.rtf.store().unwritten().take(MAX_IOV).enumerate() {
                        if let Some(s) = slices.get_mut(i) {
                            *s = IoSlice::new(c);
                            n = i + 1;
                        }
                    }
                    let r = if n == 1 {
                        // One buffer: plain write (cheaper than writev for the kernel).
                        t.stream.write(slices.first().map_or(&[][..], |s| &s[..]))
                    } else {
                        t.stream.write_vectored(slices.get(..n).unwrap_or_default())
                    };
                    match r {
                        Ok(0) => {
                            self.write_failed = Some(DownReason::Lost);
                            return;
                        }
                        Ok(written) => {
                            self.queued.sub(written);
                            t.out_mut().consume(written);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            self.write_failed = Some(down_reason(&e));
                            return;
                        }
                    }
                }
                if t.out().output_is_empty()
                    && self.flags.get(Flags::LINGERING)
                    && !self.flags.get(Flags::WRITE_SHUT)
                {
                    // Graceful close: FIN after the last queued frame.
                    let _ = t.stream.shutdown(std::net::Shutdown::Write);
                    self.flags.set(Flags::WRITE_SHUT, true);
                }
            }
            AssocIo::Sctp(s) => {
                if self.flags.get(Flags::CONNECTING) || self.flags.get(Flags::WRITE_SHUT) {
                    return;
                }
                while !s.out.is_empty() {
                    // All queued messages with one sendmmsg (MAX_BATCH at a time). When
                    // fewer than offered were sent, the next round finds out why (full
                    // socket: WouldBlock; or the error).
                    let r = {
                        let mut msgs = [sys::OutMessage {
                            ppid: 0,
                            stream: 0,
                            data: &[],
                        }; sys::MAX_BATCH];
                        let mut n = 0;
                        for ((ppid, stream, data), m) in s.out.iter().zip(msgs.iter_mut()) {
                            *m = sys::OutMessage {
                                ppid: *ppid,
                                stream: *stream,
                                data,
                            };
                            n += 1;
                        }
                        s.sock.send_batch(msgs.get(..n).unwrap_or_default())
                    };
                    match r {
                        Ok(0) => return,
                        Ok(sent) => {
                            for _ in 0..sent {
                                if let Some((_, _, data)) = s.out.pop_front() {
                                    self.queued.sub(data.len());
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            self.write_failed = Some(down_reason(&e));
                            return;
                        }
                    }
                }
                if self.flags.get(Flags::LINGERING) && !self.flags.get(Flags::WRITE_SHUT) {
                    // Graceful close: SHUTDOWN after the queued data (SCTP_EOF).
                    let _ = s.sock.shutdown();
                    self.flags.set(Flags::WRITE_SHUT, true);
                }
            }
        }
    }

    fn up_event(
        &mut self,
        id: AssocId,
        peer_addrs: Vec<SocketAddr>,
        local_addrs: Vec<SocketAddr>,
        out: &mut Vec<TransportEvent>,
    ) {
        self.flags.set(Flags::ANNOUNCED, true);
        if self.flags.get(Flags::ATTACHED) {
            out.push(TransportEvent::Up {
                assoc: id,
                kind: self.kind(),
                listener: self.listener.map(|l| SocketId(u64::from(l.get()))),
                channel: self.channel,
                peer_addrs,
                local_addrs,
            });
        }
    }

    /// Drives the association after a readiness event (or right after creation).
    /// `read_all`: read until `WouldBlock`; otherwise a short read (fewer bytes or messages
    /// than asked for) ends the reading: the socket was empty then, and data arriving
    /// after it is a new edge (a new event). Read until `WouldBlock` whenever the event
    /// also reported an error or the peer's end of stream, and when no event told us.
    fn drive(&mut self, readable: bool, writable: bool, read_all: bool, ctx: &mut Ctx<'_>) -> Fate {
        let fate = match &self.io {
            AssocIo::Tcp(_) => self.drive_tcp(readable, writable, read_all, ctx),
            AssocIo::Sctp(_) => self.drive_sctp(readable, writable, read_all, ctx),
        };
        if fate != Fate::Keep {
            return fate;
        }
        self.flush(ctx.now_us);
        Fate::Keep
    }

    fn drive_tcp(
        &mut self,
        readable: bool,
        writable: bool,
        read_all: bool,
        ctx: &mut Ctx<'_>,
    ) -> Fate {
        ctx.rtf_events.clear();
        let AssocIo::Tcp(t) = &mut self.io else {
            return Fate::Keep;
        };
        let mut do_read = readable;
        if self.flags.get(Flags::CONNECTING) {
            if !(readable || writable) {
                return Fate::Keep;
            }
            let err = match t.stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match t.stream.peer_addr() {
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return Fate::Keep,
                    Err(e) => Some(e),
                },
            };
            if err.is_some() {
                // Try the next address of the peer, in order (tcp-mapping.md §3.6).
                return Fate::Remove { abort: false };
            }
            self.flags.set(Flags::CONNECTING, false);
            // Connected: the peer's other addresses are not needed any more.
            t.out_mut().connected();
            do_read = true;
            let _ = t.stream.set_nodelay(true);
        }
        let mut eof = false;
        let mut read_err = None;
        let mut tls_err = None;
        // TLS: its layer is taken out of the RTF connection's store while it reads into the
        // connection.
        let mut extra = if do_read && !self.flags.get(Flags::PEER_EOF) && t.out().tls().is_some() {
            t.out_mut().take_extra()
        } else {
            None
        };
        if let Some(tls) = extra.as_mut().and_then(|x| x.tls.as_deref_mut()) {
            self.flags.set(Flags::READ_PENDING, false);
            let mut budget = TLS_READ_BUDGET;
            let (rtf, events, now_us) = (&mut t.rtf, &mut *ctx.rtf_events, ctx.now_us);
            let config = ctx.rtf;
            let mut sink = |p: &[u8]| rtf.handle_input_into(config, now_us, p, events);
            loop {
                if budget == 0 {
                    self.flags.set(Flags::READ_PENDING, true);
                    break;
                }
                budget -= 1;
                match tls.read_once(&mut t.stream, ctx.buf, &mut sink) {
                    Ok(TlsRead::Progress) => {}
                    Ok(TlsRead::WouldBlock) => break,
                    Ok(TlsRead::Eof) => {
                        eof = true;
                        self.flags.set(Flags::PEER_EOF, true);
                        break;
                    }
                    Err(TlsReadError::Io(e)) => {
                        read_err = Some(e);
                        break;
                    }
                    Err(TlsReadError::Tls(e)) => {
                        tls_err = Some(e);
                        break;
                    }
                }
            }
        } else if do_read && !self.flags.get(Flags::PEER_EOF) {
            self.flags.set(Flags::READ_PENDING, false);
            let mut budget = READ_BUDGET;
            loop {
                if budget == 0 {
                    self.flags.set(Flags::READ_PENDING, true);
                    break;
                }
                budget -= 1;
                match t.stream.read(ctx.buf) {
                    Ok(0) => {
                        eof = true;
                        self.flags.set(Flags::PEER_EOF, true);
                        break;
                    }
                    Ok(n) => {
                        t.rtf.handle_input_into(
                            ctx.rtf,
                            ctx.now_us,
                            ctx.buf.get(..n).unwrap_or_default(),
                            ctx.rtf_events,
                        );
                        if n < ctx.buf.len() && !read_all {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        read_err = Some(e);
                        break;
                    }
                }
            }
        }
        t.out_mut().put_extra(extra);
        if let Some(e) = tls_err {
            // Failed handshake (no or untrusted certificate, wrong name) or a bad record:
            // nothing more reaches RTF. Send the alert rustls queued, then close.
            let peer = t.stream.peer_addr().ok();
            tracing::warn!(?peer, "TLS failed: {e}; connection closed");
            if let Some(l) = t.rtf.store_mut().tls_mut() {
                let _ = l.write_records(&mut t.stream);
            }
            ctx.rtf_events.clear();
            self.down(ctx.id, DownReason::ProtocolError, ctx.out);
            return Fate::Remove { abort: false };
        }
        if eof {
            t.rtf.handle_eof(ctx.now_us);
        }
        let fate = self.rtf_events(ctx);
        if fate != Fate::Keep {
            return fate;
        }
        if let Some(e) = read_err {
            self.down(ctx.id, down_reason(&e), ctx.out);
            return Fate::Remove { abort: true };
        }
        if self.flags.get(Flags::PEER_EOF) && self.flags.get(Flags::LINGERING) {
            // Our side already closed (or is closing): the peer's FIN ends it once our
            // queue is out.
            self.flush(ctx.now_us);
            if let AssocIo::Tcp(t) = &self.io
                && t.all_written()
            {
                return Fate::Remove { abort: false };
            }
        }
        Fate::Keep
    }

    fn rtf_events(&mut self, ctx: &mut Ctx<'_>) -> Fate {
        let mut fate = Fate::Keep;
        loop {
            let AssocIo::Tcp(t) = &mut self.io else {
                return fate;
            };
            // Events of the inputs just read (shared buffer) come before those of EOF and
            // timers (the connection's own queue).
            let Some(ev) = ctx.rtf_events.pop_front().or_else(|| t.rtf.poll_event()) else {
                break;
            };
            match ev {
                RtfEvent::Up { channel_kind, .. } => {
                    self.channel = Some(channel_kind);
                    let peer = t.stream.peer_addr().ok().into_iter().collect();
                    let local = t.stream.local_addr().ok().into_iter().collect();
                    self.up_event(ctx.id, peer, local, ctx.out);
                }
                RtfEvent::Data {
                    ppid,
                    stream,
                    payload,
                    ..
                } => {
                    if self.flags.get(Flags::ATTACHED) && self.flags.get(Flags::ANNOUNCED) {
                        ctx.out.push(TransportEvent::Message {
                            assoc: ctx.id,
                            ppid,
                            stream,
                            data: payload,
                        });
                    }
                }
                RtfEvent::PeerShutdown => {
                    self.down(ctx.id, DownReason::Shutdown, ctx.out);
                    // Flush what is queued, FIN, then close (the peer has finished).
                    self.begin_close();
                }
                RtfEvent::Dead => {
                    self.down(ctx.id, DownReason::Lost, ctx.out);
                    fate = Fate::Remove { abort: true };
                }
                RtfEvent::ProtocolError(e) => {
                    let reason = match e {
                        rserpool_proto::rtf::RtfError::Truncated { .. } => DownReason::Abort,
                        _ => DownReason::ProtocolError,
                    };
                    self.down(ctx.id, reason, ctx.out);
                    fate = Fate::Remove { abort: true };
                }
            }
        }
        fate
    }

    fn drive_sctp(
        &mut self,
        readable: bool,
        writable: bool,
        read_all: bool,
        ctx: &mut Ctx<'_>,
    ) -> Fate {
        let AssocIo::Sctp(s) = &mut self.io else {
            return Fate::Keep;
        };
        if self.flags.get(Flags::CONNECTING)
            && writable
            && !readable
            && let Ok(Some(_)) | Err(_) = s.sock.take_error()
        {
            self.down(ctx.id, DownReason::ConnectFailed, ctx.out);
            return Fate::Remove { abort: false };
        }
        if !readable {
            return Fate::Keep;
        }
        self.flags.set(Flags::READ_PENDING, false);
        // Up to RECV_SLOTS messages per recvmmsg; SCTP_READ_BUDGET messages per pass.
        let mut budget = SCTP_READ_BUDGET.div_ceil(RECV_SLOTS);
        let slot = ctx.buf.len() / RECV_SLOTS;
        loop {
            if budget == 0 {
                self.flags.set(Flags::READ_PENDING, true);
                return Fate::Keep;
            }
            budget -= 1;
            let AssocIo::Sctp(s) = &mut self.io else {
                return Fate::Keep;
            };
            let mut got = [sys::Received::default(); RECV_SLOTS];
            let n = match s.sock.recv_batch(ctx.buf, &mut got) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fate::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A one-to-one socket still setting up its association has nothing to read.
                Err(e)
                    if self.flags.get(Flags::CONNECTING)
                        && e.raw_os_error() == Some(libc::ENOTCONN) =>
                {
                    return Fate::Keep;
                }
                Err(e) => {
                    self.down(ctx.id, down_reason(&e), ctx.out);
                    return Fate::Remove { abort: false };
                }
            };
            // One buffer for the whole messages of this batch (each is split off it): one
            // allocation per read, not per message.
            let whole: usize = got
                .iter()
                .take(n)
                .filter(|r| !r.notification && r.end_of_record)
                .map(|r| r.len)
                .sum();
            let mut block = BytesMut::with_capacity(whole);
            for (i, r) in got.iter().take(n).enumerate() {
                let AssocIo::Sctp(s) = &mut self.io else {
                    return Fate::Keep;
                };
                if r.len == 0 && !r.notification {
                    // End of stream.
                    self.down(ctx.id, DownReason::Shutdown, ctx.out);
                    return Fate::Remove { abort: false };
                }
                let start = i * slot;
                let data = ctx.buf.get(start..start + r.len).unwrap_or_default();
                if r.notification {
                    if self.flags.get(Flags::DISCARD) || !r.end_of_record {
                        // Notifications this large are not ones we act on.
                        self.flags.set(Flags::DISCARD, !r.end_of_record);
                        continue;
                    }
                    let mut note = [0u8; 64];
                    let n = data.len().min(note.len());
                    if let (Some(dst), Some(src)) = (note.get_mut(..n), data.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    let fate = self.sctp_notification(note.get(..n).unwrap_or_default(), ctx);
                    if fate != Fate::Keep {
                        return fate;
                    }
                    continue;
                }
                if self.flags.get(Flags::DISCARD) {
                    self.flags.set(Flags::DISCARD, !r.end_of_record);
                    continue;
                }
                if s.reasm.as_ref().map_or(0, |r| r.len()) + data.len() > ctx.cfg.max_message_len {
                    // Never buffer beyond the limit: abort the association.
                    self.down(ctx.id, DownReason::ProtocolError, ctx.out);
                    return Fate::Remove { abort: true };
                }
                let info = r.info.unwrap_or_default();
                if !r.end_of_record {
                    s.reasm
                        .get_or_insert_with(Box::default)
                        .extend_from_slice(data);
                    continue;
                }
                let msg = match s.reasm.take() {
                    None => {
                        block.extend_from_slice(data);
                        block.split().freeze()
                    }
                    Some(mut r) => {
                        // The whole buffer goes with the message: nothing kept between
                        // messages.
                        r.extend_from_slice(data);
                        Bytes::from(*r)
                    }
                };
                if self.flags.get(Flags::ATTACHED) && self.flags.get(Flags::ANNOUNCED) {
                    ctx.out.push(TransportEvent::Message {
                        assoc: ctx.id,
                        ppid: info.ppid,
                        stream: info.stream,
                        data: msg,
                    });
                }
            }
            if n < RECV_SLOTS && !read_all {
                return Fate::Keep;
            }
        }
    }

    fn sctp_notification(&mut self, data: &[u8], ctx: &mut Ctx<'_>) -> Fate {
        let AssocIo::Sctp(s) = &mut self.io else {
            return Fate::Keep;
        };
        match SctpNotice::of(data) {
            Some(SctpNotice::Up) if !self.flags.get(Flags::ANNOUNCED) => {
                self.flags.set(Flags::CONNECTING, false);
                let peer = s.sock.peer_addrs().unwrap_or_default();
                let local = s.sock.local_addrs().unwrap_or_default();
                self.up_event(ctx.id, peer, local, ctx.out);
                self.flush(ctx.now_us);
                Fate::Keep
            }
            Some(SctpNotice::Down(reason)) => {
                self.down(ctx.id, reason, ctx.out);
                Fate::Remove { abort: false }
            }
            Some(SctpNotice::PeerShutdown) => {
                // The peer shuts down: no more sends are possible. Keep reading until the
                // shutdown completes (EOF / SHUTDOWN_COMP) so that close() does not ABORT.
                self.down(ctx.id, DownReason::Shutdown, ctx.out);
                self.begin_close();
                if let AssocIo::Sctp(s) = &mut self.io {
                    self.flags.set(Flags::WRITE_SHUT, true);
                    s.out.clear();
                }
                self.queued = Queued::default();
                Fate::Keep
            }
            _ => Fate::Keep,
        }
    }

    /// Timer expiry: RTF heartbeats / dead peer, write errors, close lingering.
    fn timeout(&mut self, ctx: &mut Ctx<'_>) -> Fate {
        if let Some(reason) = self.write_failed.take() {
            self.down(ctx.id, reason, ctx.out);
            return Fate::Remove { abort: true };
        }
        if self.flags.get(Flags::READ_PENDING) {
            return self.drive(true, false, true, ctx);
        }
        if let AssocIo::Tcp(t) = &mut self.io {
            t.rtf.handle_timeout(ctx.rtf, ctx.now_us);
            let fate = self.rtf_events(ctx);
            if fate != Fate::Keep {
                return fate;
            }
        }
        self.flush(ctx.now_us);
        Fate::Keep
    }
}

/// The transports of one driver: listeners, associations and UDP sockets registered in one
/// `mio::Poll`, each under a token from the range given to [`Transports::new`].
pub struct Transports {
    registry: Registry,
    token_base: usize,
    entries: PagedVec<Option<Slot>>,
    free: Vec<usize>,
    capacity: usize,
    /// Bits of an [`AssocId`] holding the slot index (the rest: the slot's generation).
    idx_bits: u32,
    /// Associations the user can see (`listed`).
    listed_count: usize,
    sockets: HashMap<SocketId, usize>,
    next_id: u64,
    next_gen: u64,
    config: TransportConfig,
    /// The RTF settings of `config`, which every TCP association's calls take.
    rtf: RtfConfig,
    epoch: Instant,
    /// Deadline of each association slot with a timer (at most one each).
    timers: Timers,
    buf: Vec<u8>,
    /// Outgoing SCTP associations of a channel kind leave from a shared listener's endpoint
    /// ([`Transports::listen_as_source`]): (listener, channel kind, local addresses).
    sctp_sources: Vec<(SocketId, ChannelKind, Vec<SocketAddr>)>,
    /// Write batching on ([`Transports::set_write_batching`]).
    batching: bool,
    /// Associations with output not yet written (slot, generation: a slot since reused
    /// has another).
    dirty: Vec<(usize, u32)>,
    /// The latest time seen (µs since `epoch`): events, timeouts, [`Transports::set_time`].
    last_us: u64,
    /// RTF events being handled (shared by all TCP associations).
    rtf_events: VecDeque<RtfEvent>,
    /// Timers being run by `handle_timeout`: (slot, generation) (kept for its memory).
    due: Vec<(usize, u32)>,
    /// The deadline (µs) of each association in a graceful close ([`Flags::LINGERING`]),
    /// by slot: aborted then. Only closing associations are here.
    lingering: HashMap<usize, u64>,
    /// Sockets of associations removed during this wake-up under write batching: closed by
    /// [`Transports::flush_pending`], after the wake-up's writes (a failover's Handle
    /// Resolution leaves before the dead association's socket is closed). Closing a socket
    /// also takes it out of the poll set: no `deregister` call.
    closing: Vec<AssocIo>,
    /// The spare SCTP socket for the next outgoing association ([`SctpOptions::spare_socket`])
    /// and whether it is `AF_INET6`.
    spare: Option<(bool, SctpSocket)>,
    /// When to make the next spare socket (µs since `epoch`) and its family (`AF_INET6`?).
    spare_due: Option<(u64, bool)>,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("associations", &self.listed_count)
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

impl Transports {
    /// Transports registering their sockets in `registry` under tokens from `tokens` (one per
    /// listener, association or UDP socket; associations being closed hold theirs until their
    /// socket is gone).
    pub fn new(
        registry: &Registry,
        tokens: Range<usize>,
        config: TransportConfig,
    ) -> io::Result<Self> {
        // At most 2^32 slots: an association id is the slot index in the low `idx_bits`
        // bits and the slot's generation above (top bit clear), so an id is never reused
        // while fewer than 2^(63 - idx_bits) associations were made.
        let capacity = tokens.end.saturating_sub(tokens.start).min(1 << 32);
        let idx_bits = usize::BITS - capacity.saturating_sub(1).leading_zeros();
        Ok(Transports {
            registry: registry.try_clone()?,
            token_base: tokens.start,
            entries: PagedVec::new(),
            free: Vec::new(),
            capacity,
            idx_bits,
            listed_count: 0,
            sockets: HashMap::new(),
            next_id: 1,
            next_gen: 1,
            rtf: config.rtf(),
            config,
            epoch: Instant::now(),
            timers: Timers::default(),
            buf: vec![0; RECV_BUF],
            sctp_sources: Vec::new(),
            batching: false,
            dirty: Vec::new(),
            last_us: 0,
            rtf_events: VecDeque::new(),
            due: Vec::new(),
            lingering: HashMap::new(),
            closing: Vec::new(),
            spare: None,
            spare_due: None,
        })
    }

    /// Write batching: with it on, [`Transports::send`] only queues (no system call, no
    /// clock read) and [`Transports::flush_pending`] writes every association's queue at
    /// once — one `write`/`writev` (TCP) or `sendmmsg` (SCTP) per association instead of
    /// one system call per message. The caller must call `flush_pending` before it sleeps
    /// (the mio driver does so at the end of every wake-up). Off by default: every `send`
    /// writes at once. Turning it off flushes.
    pub fn set_write_batching(&mut self, on: bool) {
        self.batching = on;
        if !on {
            self.flush_pending();
        }
    }

    /// True when write batching is on.
    pub fn write_batching(&self) -> bool {
        self.batching
    }

    /// Tells the transports the time (the caller read the clock anyway): queued sends and
    /// flushes under write batching are stamped with the latest time seen
    /// ([`Transports::handle_event`], [`Transports::handle_timeout`] and this).
    pub fn set_time(&mut self, now: Instant) {
        self.last_us = self.last_us.max(self.us(now));
    }

    /// Writes what [`Transports::send`] queued under write batching, as far as each socket
    /// takes it now (the rest follows on `WRITABLE`), then closes the sockets of the
    /// associations removed since the last call. Cheap when nothing is pending.
    pub fn flush_pending(&mut self) {
        if !self.dirty.is_empty() {
            self.write_dirty();
        }
        self.closing.clear();
    }

    /// The write half of [`Transports::flush_pending`].
    fn write_dirty(&mut self) {
        let now_us = self.last_us;
        let mut dirty = std::mem::take(&mut self.dirty);
        for &(idx, generation) in &dirty {
            let Some(Some(Slot::Assoc(a))) = self.entries.get_mut(idx) else {
                continue;
            };
            if a.generation != generation {
                continue;
            }
            a.flags.set(Flags::DIRTY, false);
            a.flush(now_us);
            self.schedule(idx);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// The configuration in force.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// True when `token` is one of ours (dispatch helper for the driver).
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 - self.token_base < self.capacity
    }

    /// Number of live associations (the ones the user can see).
    pub fn association_count(&self) -> usize {
        self.listed_count
    }

    /// Bits of an association id that hold its slot index (the low ones; the slot's
    /// generation lies above): ids of live associations differ in them, so a table indexed
    /// by them ([`AssocTable`](crate::driver::AssocTable)) holds one entry per slot.
    pub fn id_slot_bits(&self) -> u32 {
        self.idx_bits
    }

    /// The id of an association in slot `idx` allocated as `generation`: the slot index in
    /// the low bits, the generation above them (top bit clear).
    fn assoc_id(&self, idx: usize, generation: u32) -> AssocId {
        make_assoc_id(self.idx_bits, idx, generation)
    }

    /// The slot of a listed association (one the user holds the id of).
    fn listed(&self, assoc: AssocId) -> Option<usize> {
        let mask = (1u64 << self.idx_bits) - 1;
        let idx = usize::try_from(assoc.0 & mask).ok()?;
        match self.entries.get(idx) {
            Some(Some(Slot::Assoc(a)))
                if a.flags.get(Flags::LISTED) && self.assoc_id(idx, a.generation) == assoc =>
            {
                Some(idx)
            }
            _ => None,
        }
    }

    /// Makes the association in slot `idx` known under its id, and returns the id.
    fn list(&mut self, idx: usize) -> AssocId {
        let Some(a) = self.assoc_mut(idx) else {
            return AssocId(0);
        };
        let generation = a.generation;
        if !a.flags.get(Flags::LISTED) {
            a.flags.set(Flags::LISTED, true);
            self.listed_count += 1;
        }
        self.assoc_id(idx, generation)
    }

    fn us(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Puts `slot` into a free slot and returns its index; an association gets its id
    /// there (slot index and a new generation, [`Transports::assoc_id`]).
    fn alloc(&mut self, mut slot: Slot) -> io::Result<usize> {
        // The low 32 bits (ids repeat after 4 billion associations), never 0: an id is
        // never 0, as when the count was kept whole.
        let generation = self.next_gen as u32;
        self.next_gen += 1;
        if self.next_gen as u32 == 0 {
            self.next_gen += 1;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None if self.entries.len() < self.capacity => {
                self.entries.push(None);
                self.entries.len() - 1
            }
            None => {
                return Err(io::Error::other("transport token range exhausted"));
            }
        };
        if let Slot::Assoc(a) = &mut slot {
            a.generation = generation;
        }
        if let Some(e) = self.entries.get_mut(idx) {
            *e = Some(slot);
        }
        Ok(idx)
    }

    /// Gives a new association its slot and id, registers its socket and lists it: its slot
    /// index and id. On failure the association (its socket) is dropped.
    fn add_assoc(&mut self, assoc: Assoc) -> io::Result<(usize, AssocId)> {
        let idx = self.alloc(Slot::Assoc(assoc))?;
        if let Err(e) = self.register_idx(idx) {
            self.remove(idx, true);
            return Err(e);
        }
        Ok((idx, self.list(idx)))
    }

    fn token(&self, idx: usize) -> Token {
        Token(self.token_base + idx)
    }

    /// A new socket id. Ids fit in 32 bits (an association names its listener in 4 bytes);
    /// a process that made 4 billion listening sockets gets an error.
    fn next_id(&mut self) -> io::Result<u64> {
        let id = self.next_id;
        if id > u64::from(u32::MAX) {
            return Err(io::Error::other("socket id range exhausted"));
        }
        self.next_id += 1;
        Ok(id)
    }

    fn register_idx(&mut self, idx: usize) -> io::Result<()> {
        let token = self.token(idx);
        let interest = Interest::READABLE | Interest::WRITABLE;
        let Some(Some(slot)) = self.entries.get_mut(idx) else {
            return Ok(());
        };
        match slot {
            Slot::Listener(l) => match &mut **l {
                Listener::Tcp { listener, .. } => {
                    self.registry.register(listener, token, Interest::READABLE)
                }
                Listener::Sctp { sock, .. } => {
                    self.registry.register(sock, token, Interest::READABLE)
                }
            },
            Slot::Udp(u) => self.registry.register(&mut u.sock, token, interest),
            Slot::Assoc(a) => match &mut a.io {
                AssocIo::Tcp(t) => self.registry.register(&mut t.stream, token, interest),
                AssocIo::Sctp(s) => self.registry.register(&mut s.sock, token, interest),
            },
        }
    }

    /// Deregisters and drops the socket in slot `idx` and frees the slot.
    fn remove(&mut self, idx: usize, abort: bool) {
        let Some(slot) = self.entries.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.timers.remove(idx);
        if !self.lingering.is_empty() {
            self.lingering.remove(&idx);
        }
        match slot {
            Slot::Listener(l) => match *l {
                Listener::Tcp {
                    mut listener, id, ..
                } => {
                    let _ = self.registry.deregister(&mut listener);
                    self.sockets.remove(&id);
                }
                Listener::Sctp { mut sock, id, .. } => {
                    let _ = self.registry.deregister(&mut sock);
                    self.sockets.remove(&id);
                }
            },
            Slot::Udp(mut u) => {
                let _ = self.registry.deregister(&mut u.sock);
                self.sockets.remove(&u.id);
            }
            Slot::Assoc(mut a) => {
                if a.flags.get(Flags::LISTED) {
                    self.listed_count -= 1;
                }
                if abort {
                    match &a.io {
                        AssocIo::Tcp(t) => {
                            let _ = SockRef::from(&t.stream).set_linger(Some(Duration::ZERO));
                        }
                        AssocIo::Sctp(s) => {
                            let _ = s.sock.set_abort_on_close();
                        }
                    }
                }
                if self.batching {
                    // Closed by flush_pending, after this wake-up's writes.
                    self.closing.push(a.io);
                } else {
                    match &mut a.io {
                        AssocIo::Tcp(t) => {
                            let _ = self.registry.deregister(&mut t.stream);
                        }
                        AssocIo::Sctp(s) => {
                            let _ = self.registry.deregister(&mut s.sock);
                        }
                    }
                }
            }
        }
        self.free.push(idx);
    }

    fn assoc_mut(&mut self, idx: usize) -> Option<&mut Assoc> {
        match self.entries.get_mut(idx) {
            Some(Some(Slot::Assoc(a))) => Some(a),
            _ => None,
        }
    }

    /// Association `idx` closes gracefully from `now_us` on: it is aborted once
    /// [`TransportConfig::close_linger`] has passed (the first close's deadline stays).
    fn start_linger(&mut self, idx: usize, now_us: u64) {
        let linger = self.config.close_linger.as_micros() as u64;
        self.lingering
            .entry(idx)
            .or_insert(now_us.saturating_add(linger));
    }

    /// Re-arms the timer of association `idx` if its deadline moved earlier.
    fn schedule(&mut self, idx: usize) {
        let Some(Some(Slot::Assoc(a))) = self.entries.get(idx) else {
            return;
        };
        let linger = a.linger_deadline(idx, &self.lingering);
        if let Some(d) = a.next_deadline(linger, &self.rtf, self.last_us)
            && self.timers.get(idx).is_none_or(|s| d < s)
        {
            self.timers.set(idx, d);
        }
    }

    /// Applies the result of driving association `idx`.
    fn settle(&mut self, idx: usize, fate: Fate, out: &mut Vec<TransportEvent>) {
        let token = self.token(idx);
        let Some(Some(Slot::Assoc(a))) = self.entries.get_mut(idx) else {
            return;
        };
        if let Fate::Remove { abort } = fate {
            // An outgoing TCP connection that failed before it was up tries the peer's next
            // address (tcp-mapping.md §3.6), keeping its queue (HELLO and data) intact.
            if let AssocIo::Tcp(t) = &mut a.io
                && a.flags.get(Flags::CONNECTING)
                && a.flags.get(Flags::ATTACHED)
            {
                let _ = self.registry.deregister(&mut t.stream);
                while let Some(next) = t.out_mut().next_addr() {
                    if let Ok(stream) = connect_tcp(next) {
                        t.stream = stream;
                        if self
                            .registry
                            .register(
                                &mut t.stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )
                            .is_ok()
                        {
                            return;
                        }
                    }
                }
                let id = make_assoc_id(self.idx_bits, idx, a.generation);
                a.down(id, DownReason::ConnectFailed, out);
            }
            self.remove(idx, abort);
            return;
        }
        if !a.flags.get(Flags::ATTACHED) && a.flags.get(Flags::LISTED) {
            a.flags.set(Flags::LISTED, false);
            self.listed_count -= 1;
        }
        if a.flags.get(Flags::LINGERING) {
            // Perhaps a graceful close begun while driving it (the peer shut down).
            self.start_linger(idx, self.last_us);
        }
        self.schedule(idx);
    }

    // --- listen / connect ----------------------------------------------------------------

    /// Listens on `addrs` (SCTP: all of them, multi-homed; TCP: one listener per address is
    /// not offered — the first address is used) for associations of the given channel
    /// kind(s). A port of 0 picks an ephemeral port ([`Transports::socket_local_addrs`]).
    pub fn listen(
        &mut self,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channels: impl Into<ChannelKinds>,
    ) -> io::Result<SocketId> {
        let kinds = channels.into();
        let id = SocketId(self.next_id()?);
        let slot = match kind {
            TransportKind::Tcp => {
                let addr = *addrs
                    .first()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
                let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
                sock.set_reuse_address(true)?;
                if addr.is_ipv6() {
                    sock.set_only_v6(false)?;
                }
                sock.set_nonblocking(true)?;
                sock.bind(&addr.into())?;
                sock.listen(self.config.listen_backlog)?;
                Listener::Tcp {
                    listener: TcpListener::from_std(sock.into()),
                    id,
                    kinds,
                    tls: self.config.tls_for_any(kinds).cloned(),
                }
            }
            TransportKind::Sctp if self.config.tls_for_any(kinds).is_some() => {
                return Err(tls_over_sctp());
            }
            TransportKind::Sctp => Listener::Sctp {
                sock: SctpSocket::listen(
                    addrs,
                    self.config.listen_backlog,
                    &self.config.sctp_for(kinds),
                )?,
                id,
                kinds,
            },
        };
        let idx = self.alloc(Slot::Listener(Box::new(slot)))?;
        if let Err(e) = self.register_idx(idx) {
            self.remove(idx, false);
            return Err(e);
        }
        self.sockets.insert(id, idx);
        Ok(id)
    }

    /// Listens like [`Transports::listen`]; over SCTP, in addition, every later outgoing
    /// association of channel kind `source_for` leaves from this listener's addresses and
    /// port (both sockets `SO_REUSEPORT`), until the listener is closed. A pool element
    /// needs this: registrars record the address and port its ASAP association comes from as
    /// its ASAP transport, and a registrar taking it over connects there (`asap.md` §5.5;
    /// RSPLIB uses one one-to-many socket for both). Over TCP it is a plain listener (the TCP
    /// mapping reaches the PE at its user port instead).
    pub fn listen_as_source(
        &mut self,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channels: impl Into<ChannelKinds>,
        source_for: ChannelKind,
    ) -> io::Result<SocketId> {
        let channels = channels.into();
        if kind == TransportKind::Tcp {
            return self.listen(addrs, kind, channels);
        }
        if self.config.tls_for_any(channels).is_some() {
            return Err(tls_over_sctp());
        }
        let sock = SctpSocket::listen_shared(
            addrs,
            self.config.listen_backlog,
            &self.config.sctp_for(channels),
        )?;
        let local = sock.endpoint_of(addrs)?;
        let id = SocketId(self.next_id()?);
        let idx = self.alloc(Slot::Listener(Box::new(Listener::Sctp {
            sock,
            id,
            kinds: channels,
        })))?;
        if let Err(e) = self.register_idx(idx) {
            self.remove(idx, false);
            return Err(e);
        }
        self.sockets.insert(id, idx);
        self.sctp_sources.retain(|(_, c, _)| *c != source_for);
        self.sctp_sources.push((id, source_for, local));
        Ok(id)
    }

    /// The local addresses outgoing SCTP associations of `channel` leave from (set by
    /// [`Transports::listen_as_source`]).
    pub fn sctp_source(&self, channel: ChannelKind) -> Option<&[SocketAddr]> {
        self.sctp_sources
            .iter()
            .find(|(_, c, _)| *c == channel)
            .map(|(_, _, l)| l.as_slice())
    }

    /// Starts an association to one peer with the addresses `addrs` (SCTP: multi-homed
    /// `sctp_connectx`; TCP: tried in order until one connects). Returns at once; `Up` or
    /// `Down { reason: ConnectFailed }` follows. `protocol` is the upper protocol of the
    /// association (it selects nothing on the wire; kept for the `channel` check below): a
    /// kind-3 (ENRP) channel must carry ENRP, kinds 1 and 2 ASAP.
    pub fn connect(
        &mut self,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channel: ChannelKind,
        protocol: Protocol,
    ) -> io::Result<AssocId> {
        let consistent = match channel {
            ChannelKind::Enrp => protocol == Protocol::Enrp,
            ChannelKind::AsapToRegistrar | ChannelKind::AsapFromRegistrar => {
                protocol == Protocol::Asap
            }
            ChannelKind::Session => true,
        };
        if !consistent {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("channel kind {channel:?} does not carry {protocol:?}"),
            ));
        }
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no address"));
        }
        let tls = self.config.tls_for(channel);
        if tls.is_some() && kind == TransportKind::Sctp {
            return Err(tls_over_sctp());
        }
        let tls = tls.map(|t| t.connect()).transpose()?.map(Box::new);
        let now_us = self.now_us();
        let io = match kind {
            TransportKind::Tcp => {
                let mut rest: VecDeque<SocketAddr> = addrs.iter().copied().collect();
                let mut last_err = None;
                let mut stream = None;
                while let Some(a) = rest.pop_front() {
                    match connect_tcp(a) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last_err = Some(e),
                    }
                }
                let stream = match stream {
                    Some(s) => s,
                    None => {
                        return Err(last_err.unwrap_or_else(|| io::ErrorKind::InvalidInput.into()));
                    }
                };
                AssocIo::Tcp(TcpIo::new(
                    stream,
                    RtfConnection::connector_in(channel, self.rtf, now_us, TcpStore::default()),
                    tls,
                    rest,
                ))
            }
            TransportKind::Sctp => {
                let opts = self.config.sctp_for(channel);
                let sock = match self.sctp_source(channel) {
                    // If the shared port cannot be used (an association between the same
                    // two endpoints still closing), connect from an ephemeral port: the
                    // association works, only a takeover cannot reach it there.
                    Some(local) => SctpSocket::connect_from(local, addrs, &opts)
                        .or_else(|_| SctpSocket::connect(addrs, &opts))?,
                    None => self.connect_sctp(addrs, &opts, now_us)?,
                };
                AssocIo::Sctp(SctpIo::new(sock))
            }
        };
        let (idx, id) = self.add_assoc(Assoc::new(io, true, None, Some(channel)))?;
        if let Some(a) = self.assoc_mut(idx) {
            a.flush(now_us);
        }
        self.schedule(idx);
        Ok(id)
    }

    // --- send / close / queries ------------------------------------------------------------

    /// Queues one message on `assoc` and writes what the socket takes now. Never blocks; see
    /// the backpressure contract in the module documentation.
    pub fn send(
        &mut self,
        assoc: AssocId,
        ppid: u32,
        stream: u16,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let cap = self.config.max_queued_bytes.min(MAX_QUEUE_CAP);
        let max = self.config.max_message_len;
        let batching = self.batching;
        let now_us = self.now_us();
        let idx = self.listed(assoc).ok_or(SendError::UnknownAssoc)?;
        let a = self.assoc_mut(idx).ok_or(SendError::UnknownAssoc)?;
        if !a.flags.get(Flags::ATTACHED)
            || a.flags.get(Flags::LINGERING)
            || a.write_failed.is_some()
        {
            return Err(SendError::Closed);
        }
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let over =
            |a: &Assoc| a.queued.get() > 0 && a.queued.get().saturating_add(payload.len()) > cap;
        if over(a) && batching {
            // Under write batching the queue holds what this wake-up sent: write it now, so
            // that "queue full" still means "the socket does not take more".
            a.flush(now_us);
            let failed = a.write_failed.is_some();
            if failed {
                self.schedule(idx);
                return Err(SendError::Closed);
            }
        }
        let rtf = self.rtf;
        let a = self.assoc_mut(idx).ok_or(SendError::UnknownAssoc)?;
        if over(a) {
            return Err(SendError::QueueFull {
                queued: a.queued.get(),
                cap,
            });
        }
        a.enqueue(ppid, stream, payload, &rtf, now_us)?;
        if batching {
            if !a.flags.get(Flags::DIRTY) {
                a.flags.set(Flags::DIRTY, true);
                let generation = a.generation;
                self.dirty.push((idx, generation));
            }
        } else {
            a.flush(now_us);
            self.schedule(idx);
        }
        Ok(())
    }

    /// Bytes queued on `assoc` and not yet accepted by its socket (RTF framing included).
    pub fn queued_bytes(&self, assoc: AssocId) -> Option<usize> {
        let idx = self.listed(assoc)?;
        match self.entries.get(idx) {
            Some(Some(Slot::Assoc(a))) => Some(a.queued.get()),
            _ => None,
        }
    }

    /// Closes `assoc`. Graceful: the queued messages are still written, then SCTP SHUTDOWN /
    /// TCP FIN, and the socket closes when the peer has finished (or after
    /// [`TransportConfig::close_linger`], then as an abort). Abort: SCTP ABORT / TCP RST now,
    /// queued data discarded. Either way the id is released at once and no event names it
    /// again. Returns false for an unknown id.
    pub fn close(&mut self, assoc: AssocId, abort: bool) -> bool {
        let Some(idx) = self.listed(assoc) else {
            return false;
        };
        let now_us = self.now_us();
        let Some(Some(Slot::Assoc(a))) = self.entries.get_mut(idx) else {
            return false;
        };
        a.flags.set(Flags::LISTED, false);
        self.listed_count -= 1;
        if abort || a.flags.get(Flags::CONNECTING) || a.write_failed.is_some() {
            self.remove(idx, abort);
            return true;
        }
        a.begin_close();
        a.flush(now_us);
        // TCP: both directions ended (the peer's EOF is TCP's only).
        let done = a.flags.get(Flags::WRITE_SHUT) && a.flags.get(Flags::PEER_EOF);
        if done {
            self.remove(idx, false);
        } else {
            self.start_linger(idx, now_us);
            self.schedule(idx);
        }
        true
    }

    /// Closes every association the user holds (see [`Transports::close`]).
    pub fn close_all(&mut self, abort: bool) {
        let ids: Vec<AssocId> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(idx, slot)| match slot {
                Some(Slot::Assoc(a)) if a.flags.get(Flags::LISTED) => {
                    Some(self.assoc_id(idx, a.generation))
                }
                _ => None,
            })
            .collect();
        for id in ids {
            self.close(id, abort);
        }
    }

    /// True when no association socket is left, not even one still closing (a graceful
    /// stop after [`Transports::close_all`] waits for this).
    pub fn is_quiet(&self) -> bool {
        !self
            .entries
            .iter()
            .flatten()
            .any(|slot| matches!(slot, Slot::Assoc(_)))
    }

    /// The peer's addresses of `assoc` (SCTP: the current `sctp_getpaddrs` list). For the
    /// registrar's "PE user addresses ⊆ association addresses" check.
    pub fn peer_addrs(&self, assoc: AssocId) -> io::Result<Vec<SocketAddr>> {
        let a = self.assoc_ref(assoc)?;
        match &a.io {
            AssocIo::Tcp(t) => Ok(vec![t.stream.peer_addr()?]),
            AssocIo::Sctp(s) => s.sock.peer_addrs(),
        }
    }

    /// Our addresses of `assoc`.
    pub fn local_addrs(&self, assoc: AssocId) -> io::Result<Vec<SocketAddr>> {
        let a = self.assoc_ref(assoc)?;
        match &a.io {
            AssocIo::Tcp(t) => Ok(vec![t.stream.local_addr()?]),
            AssocIo::Sctp(s) => s.sock.local_addrs(),
        }
    }

    /// Acknowledge `assoc`'s incoming packets every second packet (`delayed`: the kernel's
    /// delayed SACK, for a bulk transfer coming in) or each at once (as ENRP associations
    /// do, see [`TransportConfig::sctp_for`]). SCTP only: over the TCP mapping the kernel
    /// acknowledges as it does, and this does nothing.
    pub fn set_delayed_sack(&self, assoc: AssocId, delayed: bool) -> io::Result<()> {
        let a = self.assoc_ref(assoc)?;
        match &a.io {
            AssocIo::Tcp(_) => Ok(()),
            AssocIo::Sctp(s) => s.sock.set_sack_freq(if delayed { 2 } else { 1 }),
        }
    }

    /// `sack_freq` of `assoc`'s socket (SCTP; `None` over the TCP mapping).
    pub fn sack_freq(&self, assoc: AssocId) -> io::Result<Option<u32>> {
        let a = self.assoc_ref(assoc)?;
        match &a.io {
            AssocIo::Tcp(_) => Ok(None),
            AssocIo::Sctp(s) => s.sock.sack_freq().map(Some),
        }
    }

    /// The transport of `assoc`.
    pub fn kind(&self, assoc: AssocId) -> Option<TransportKind> {
        self.assoc_ref(assoc).ok().map(Assoc::kind)
    }

    fn assoc_ref(&self, assoc: AssocId) -> io::Result<&Assoc> {
        let idx = self
            .listed(assoc)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown association"))?;
        match self.entries.get(idx) {
            Some(Some(Slot::Assoc(a))) => Ok(a),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "unknown association",
            )),
        }
    }

    /// The bound addresses of a listener or UDP socket (to learn an ephemeral port).
    pub fn socket_local_addrs(&self, socket: SocketId) -> io::Result<Vec<SocketAddr>> {
        let idx = self
            .sockets
            .get(&socket)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown socket"))?;
        match self.entries.get(*idx) {
            Some(Some(slot)) => match slot {
                Slot::Listener(l) => match &**l {
                    Listener::Tcp { listener, .. } => Ok(vec![listener.local_addr()?]),
                    Listener::Sctp { sock, .. } => sock.local_addrs(),
                },
                Slot::Udp(u) => Ok(vec![u.sock.local_addr()?]),
                Slot::Assoc(_) => Err(io::ErrorKind::NotFound.into()),
            },
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }

    /// Closes a listener or UDP socket. Associations accepted by a listener live on.
    pub fn close_socket(&mut self, socket: SocketId) -> bool {
        self.sctp_sources.retain(|(id, _, _)| *id != socket);
        match self.sockets.remove(&socket) {
            Some(idx) => {
                self.remove(idx, false);
                true
            }
            None => false,
        }
    }

    // --- UDP ---------------------------------------------------------------------------------

    /// Binds a UDP socket (unicast or multicast receive/send).
    pub fn udp_bind(&mut self, addr: SocketAddr, opts: &UdpOptions) -> io::Result<SocketId> {
        let sock = opts.bind(addr)?;
        let id = SocketId(self.next_id()?);
        let udp = Udp {
            sock: UdpSocket::from_std(sock),
            id,
            queue: UdpQueue::default(),
        };
        let idx = self.alloc(Slot::Udp(Box::new(udp)))?;
        if let Err(e) = self.register_idx(idx) {
            self.remove(idx, false);
            return Err(e);
        }
        self.sockets.insert(id, idx);
        Ok(id)
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
        let u = self.udp_ref(socket)?;
        match group {
            IpAddr::V4(g) => u.sock.join_multicast_v4(&g, &interface_v4),
            IpAddr::V6(g) => u.sock.join_multicast_v6(&g, interface_index_v6),
        }
    }

    fn udp_ref(&self, socket: SocketId) -> io::Result<&Udp> {
        let idx = self
            .sockets
            .get(&socket)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown socket"))?;
        match self.entries.get(*idx) {
            Some(Some(Slot::Udp(u))) => Ok(u),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "not a UDP socket")),
        }
    }

    /// Sends one datagram (unicast or multicast). When the socket buffer is full the datagram
    /// is queued (cap [`TransportConfig::max_udp_queued_bytes`]) and sent on `WRITABLE`.
    pub fn udp_send_to(
        &mut self,
        socket: SocketId,
        to: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        let cap = self.config.max_udp_queued_bytes;
        let idx = *self.sockets.get(&socket).ok_or(SendError::UnknownAssoc)?;
        let Some(Some(Slot::Udp(u))) = self.entries.get_mut(idx) else {
            return Err(SendError::UnknownAssoc);
        };
        u.queue.push(cap, to, data)?;
        flush_udp(u);
        Ok(())
    }

    // --- events and time --------------------------------------------------------------------

    /// Handles one mio event for one of our tokens (others are ignored), draining the socket
    /// until `WouldBlock`, and appends what happened to `out`.
    pub fn handle_event(
        &mut self,
        event: &mio::event::Event,
        now: Instant,
        out: &mut Vec<TransportEvent>,
    ) {
        if !self.owns(event.token()) {
            return;
        }
        let idx = event.token().0 - self.token_base;
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let writable = event.is_writable() || event.is_error() || event.is_write_closed();
        let read_all = event.is_read_closed() || event.is_error();
        self.drive_idx(idx, readable, writable, read_all, now, out);
    }

    fn drive_idx(
        &mut self,
        idx: usize,
        readable: bool,
        writable: bool,
        read_all: bool,
        now: Instant,
        out: &mut Vec<TransportEvent>,
    ) {
        let now_us = self.us(now);
        self.last_us = self.last_us.max(now_us);
        let Some(Some(slot)) = self.entries.get_mut(idx) else {
            return;
        };
        match slot {
            Slot::Listener(_) => {
                if readable {
                    self.accept_all(idx, now_us, out);
                }
            }
            Slot::Udp(u) => {
                if writable {
                    flush_udp(u);
                }
                if readable {
                    recv_udp(u, &mut self.buf, out);
                }
            }
            Slot::Assoc(a) => {
                let mut ctx = Ctx {
                    now_us,
                    id: make_assoc_id(self.idx_bits, idx, a.generation),
                    buf: &mut self.buf,
                    cfg: &self.config,
                    rtf: &self.rtf,
                    out,
                    rtf_events: &mut self.rtf_events,
                };
                let fate = a.drive(readable, writable, read_all, &mut ctx);
                self.settle(idx, fate, out);
            }
        }
    }

    /// Accepts every pending association of listener `idx` (called when it is readable).
    fn accept_all(&mut self, idx: usize, now_us: u64, out: &mut Vec<TransportEvent>) {
        let mut accepted = 0usize;
        loop {
            let Some(Some(Slot::Listener(l))) = self.entries.get_mut(idx) else {
                return;
            };
            // SCTP: after the first (the readiness said one is there), ask before accepting
            // again; an SCTP accept that finds nothing sleeps until the next timer tick
            // (`sys::readable_now`). Edge-triggered readiness reports the next arrival anew.
            // If the question fails, accepting is tried (at worst that sleep).
            if accepted > 0
                && let Listener::Sctp { sock, .. } = &**l
                && !sock.readable_now().unwrap_or(true)
            {
                return;
            }
            accepted += 1;
            let (io, listener, kinds) = match &mut **l {
                Listener::Tcp {
                    listener,
                    id,
                    kinds,
                    tls,
                } => match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let tls = match tls.as_ref().map(|t| t.accept()).transpose() {
                            Ok(t) => t.map(Box::new),
                            // rustls could not make a connection: drop this one.
                            Err(_) => continue,
                        };
                        (
                            AssocIo::Tcp(TcpIo::new(
                                stream,
                                RtfConnection::acceptor_in(
                                    *kinds,
                                    self.rtf,
                                    now_us,
                                    TcpStore::default(),
                                ),
                                tls,
                                VecDeque::new(),
                            )),
                            *id,
                            *kinds,
                        )
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    // EMFILE, ENOBUFS, ...: stop; pending connections wait for the next one.
                    Err(_) => return,
                },
                Listener::Sctp { sock, id, kinds } => match sock.accept(&self.config.sctp) {
                    Ok(Some(s)) => (AssocIo::Sctp(SctpIo::new(s)), *id, *kinds),
                    Ok(None) => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                },
            };
            let listener = u32::try_from(listener.0).ok().and_then(NonZeroU32::new);
            let assoc = Assoc::new(io, false, listener, kinds.single());
            // No token left, or no registration: the connection is closed (dropped) at once.
            let Ok((new_idx, id)) = self.add_assoc(assoc) else {
                continue;
            };
            if let Some(a) = self.assoc_mut(new_idx)
                && let AssocIo::Sctp(s) = &a.io
            {
                // Accepted SCTP associations are up: report them now.
                let peer = s.sock.peer_addrs().unwrap_or_default();
                let local = s.sock.local_addrs().unwrap_or_default();
                a.up_event(id, peer, local, out);
            }
            // Write what is queued (an RTF HELLO). Nothing is read yet: data that arrived
            // before the socket was registered makes the registration itself report it
            // readable (epoll checks readiness when a socket is added), so it is read at the
            // next wake-up with one system call.
            let now = self.epoch + Duration::from_micros(now_us);
            self.drive_idx(new_idx, false, true, false, now, out);
        }
    }

    /// An outgoing SCTP association from an ephemeral port with `opts`: on the spare socket
    /// when there is one for the peer's family, made with the same options (then the next
    /// spare is due [`SPARE_DELAY_US`] later).
    fn connect_sctp(
        &mut self,
        addrs: &[SocketAddr],
        opts: &SctpOptions,
        now_us: u64,
    ) -> io::Result<SctpSocket> {
        if !opts.spare_socket || *opts != self.config.sctp {
            return SctpSocket::connect(addrs, opts);
        }
        let v6 = sctp::socket::needs_ipv6(addrs);
        self.spare_due = Some((now_us + SPARE_DELAY_US, v6));
        match self.spare.take() {
            // A dual-stack AF_INET6 socket reaches IPv4 peers too.
            Some((spare_v6, sock)) if spare_v6 || !v6 => sock.connect_spare(addrs),
            _ => SctpSocket::connect(addrs, opts),
        }
    }

    /// True when a spare SCTP socket waits for the next outgoing association
    /// ([`SctpOptions::spare_socket`]).
    pub fn spare_ready(&self) -> bool {
        self.spare.is_some()
    }

    /// The time for a command (send, connect, close): under write batching the latest time
    /// seen (the caller keeps it current, see [`Transports::set_time`]; no clock read on a
    /// failover's path), else the clock.
    fn now_us(&self) -> u64 {
        if self.batching {
            self.last_us
        } else {
            self.us(Instant::now())
        }
    }

    /// When [`Transports::handle_timeout`] must run next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let timer = self.timers.peek().map(|(d, _)| d);
        let spare = self.spare_due.map(|(d, _)| d);
        timer
            .into_iter()
            .chain(spare)
            .min()
            .map(|d| self.epoch + Duration::from_micros(d))
    }

    /// Runs every timer due at `now` (RTF heartbeats and dead peers, close lingering, write
    /// errors) and appends what happened to `out`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TransportEvent>) {
        let now_us = self.us(now);
        self.last_us = self.last_us.max(now_us);
        if let Some((at, v6)) = self.spare_due
            && at <= now_us
        {
            self.spare_due = None;
            // Without a spare the next connect makes its socket itself.
            self.spare = SctpSocket::spare(v6, &self.config.sctp)
                .ok()
                .map(|s| (v6, s));
        }
        // Only the timers due when the call starts: an association with more to read
        // re-arms an immediate timer, which must wait for the next call, or a peer that
        // writes faster than we read would keep this call (and its caller's turn) reading
        // without bound, every message held in `out` before the machine saw any.
        let mut due = std::mem::take(&mut self.due);
        while let Some((d, idx)) = self.timers.peek() {
            if d > now_us {
                break;
            }
            self.timers.pop();
            if let Some(Some(Slot::Assoc(a))) = self.entries.get(idx) {
                due.push((idx, a.generation));
            }
        }
        for (idx, generation) in due.drain(..) {
            let id = self.assoc_id(idx, generation);
            let Some(Some(Slot::Assoc(a))) = self.entries.get_mut(idx) else {
                continue;
            };
            if a.generation != generation {
                continue;
            }
            // A graceful close that did not finish in time ends as an abort (it is
            // detached: no `Down` to report).
            let fate = if a
                .linger_deadline(idx, &self.lingering)
                .is_some_and(|t| now_us >= t)
            {
                Fate::Remove { abort: true }
            } else {
                let mut ctx = Ctx {
                    now_us,
                    id,
                    buf: &mut self.buf,
                    cfg: &self.config,
                    rtf: &self.rtf,
                    out,
                    rtf_events: &mut self.rtf_events,
                };
                a.timeout(&mut ctx)
            };
            self.settle(idx, fate, out);
        }
        self.due = due;
    }
}

/// [`Transports::assoc_id`] with the transports' `idx_bits` (for callers holding a slot).
fn make_assoc_id(idx_bits: u32, idx: usize, generation: u32) -> AssocId {
    let gen_mask = u64::MAX >> (idx_bits + 1);
    AssocId(((u64::from(generation) & gen_mask) << idx_bits) | idx as u64)
}

fn tls_over_sctp() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "TLS is available only over the TCP mapping (no DTLS over SCTP)",
    )
}

fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn flush_udp(u: &mut Udp) {
    // On `WouldBlock` the rest waits for `WRITABLE`.
    u.queue.flush(|data, to| u.sock.send_to(data, to));
}

fn recv_udp(u: &mut Udp, buf: &mut [u8], out: &mut Vec<TransportEvent>) {
    loop {
        match u.sock.recv_from(buf) {
            Ok((n, from)) => out.push(TransportEvent::Datagram {
                socket: u.id,
                from,
                data: Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()),
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // EINTR, or an ICMP error reported on the socket (consumed by this call).
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod nodelay_tests {
    use super::*;
    use mio::{Events, Poll};

    /// `rsplib-measured.md` defect 2: RSPLIB leaves Nagle on for session sockets (every
    /// reply one interval late). Ours: `TCP_NODELAY` on connected and accepted sockets.
    #[test]
    fn every_tcp_association_has_nodelay_on_both_ends() {
        let mut poll = Poll::new().expect("poll");
        let mut t = Transports::new(poll.registry(), 0..100, TransportConfig::default())
            .expect("transports");
        let l = t
            .listen(
                &["127.0.0.1:0".parse().expect("addr")],
                TransportKind::Tcp,
                ChannelKind::Session,
            )
            .expect("listen");
        let addr = t.socket_local_addrs(l).expect("local")[0];
        t.connect(
            &[addr],
            TransportKind::Tcp,
            ChannelKind::Session,
            Protocol::Asap,
        )
        .expect("connect");
        let mut events = Events::with_capacity(64);
        let mut out = Vec::new();
        let start = Instant::now();
        let tcp_streams = |t: &Transports| -> Vec<bool> {
            t.entries
                .iter()
                .flatten()
                .filter_map(|slot| match slot {
                    Slot::Assoc(a) => match &a.io {
                        AssocIo::Tcp(io) => Some(io.stream.nodelay().unwrap_or(false)),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        };
        while out
            .iter()
            .filter(|e| matches!(e, TransportEvent::Up { .. }))
            .count()
            < 2
        {
            assert!(start.elapsed() < Duration::from_secs(10), "no Up: {out:?}");
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .expect("poll");
            let now = Instant::now();
            for ev in events.iter() {
                t.handle_event(ev, now, &mut out);
            }
            t.handle_timeout(now, &mut out);
        }
        let flags = tcp_streams(&t);
        assert_eq!(flags, vec![true, true], "connected and accepted socket");
    }
}

#[cfg(test)]
mod out_queue_tests {
    use super::{OutMsg, OutQueue, SPARE};
    use bytes::Bytes;
    use std::collections::VecDeque;

    fn spares() -> usize {
        SPARE.with(|s| s.borrow().len())
    }

    fn msg(stream: u16) -> OutMsg {
        (11, stream, Bytes::from_static(b"keep-alive"))
    }

    #[test]
    fn an_empty_queue_holds_no_memory_and_the_next_one_reuses_it() {
        // A test runs on a thread of its own: no spares yet.
        assert_eq!(spares(), 0);
        let mut q = OutQueue::default();
        assert!(q.is_empty() && q.0.is_none());
        q.push_back(msg(0));
        q.push_back(msg(1));
        let buffer = q.0.as_deref().map(|d| d as *const VecDeque<OutMsg>);
        assert_eq!(q.iter().map(|m| m.1).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(q.pop_front().map(|m| m.1), Some(0));
        assert!(!q.is_empty());
        assert_eq!(q.pop_front().map(|m| m.1), Some(1));
        assert!(q.is_empty() && q.0.is_none());
        assert_eq!(q.pop_front(), None);
        assert_eq!(spares(), 1);
        // Another association's first message takes that allocation.
        let mut r = OutQueue::default();
        r.push_back(msg(2));
        assert_eq!(r.0.as_deref().map(|d| d as *const VecDeque<OutMsg>), buffer);
        assert_eq!(spares(), 0);
        r.clear();
        assert!(r.is_empty());
        assert_eq!(spares(), 1);
        // A queue that grew large is dropped, not kept.
        for i in 0..100 {
            r.push_back(msg(i));
        }
        assert_eq!(spares(), 0);
        drop(r);
        assert_eq!(spares(), 0);
        // Dropping a queue that holds messages gives its (small) buffer back.
        let mut s = OutQueue::default();
        s.push_back(msg(3));
        drop(s);
        assert_eq!(spares(), 1);
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    /// An association lies inline in its slot, 48 bytes in all: its generation alone
    /// with the slot index makes its id, its yes/no state is two bytes (its I/O state's
    /// too, which leaves the socket's spare value for the variant), a graceful close's
    /// deadline lies beside it (only while closing), a failed write keeps its `Down`
    /// reason only, the I/O state's variant needs no byte of its own (release build; a
    /// debug build's mio sockets carry a selector id more).
    #[test]
    fn an_association_lies_inline_in_a_48_byte_slot() {
        let mio_extra = size_of::<TcpStream>() - size_of::<std::net::TcpStream>();
        let bound = 48 + mio_extra.next_multiple_of(8);
        assert!(
            size_of::<Option<Slot>>() <= bound,
            "{} > {bound}",
            size_of::<Option<Slot>>()
        );
        assert_eq!(size_of::<Queued>(), 4);
        assert_eq!(size_of::<Option<NonZeroU32>>(), 4);
        assert_eq!(size_of::<Flags>(), 2);
        // In debug builds too (where the slot's bound above is looser): the I/O state's
        // variant takes no room of its own.
        assert_eq!(
            size_of::<AssocIo>(),
            size_of::<TcpIo>().max(size_of::<SctpIo>()),
            "the I/O state's variant needs a byte of its own"
        );
    }

    /// A TCP association's I/O state takes 32 bytes with its RTF connection inline (24
    /// bytes: no settings of its own, times in 32 bits) and nothing out of line while idle:
    /// no decoder state, no queues, no output buffer, no TLS or connect state.
    #[test]
    fn a_tcp_association_keeps_its_rtf_connection_inline() {
        assert_eq!(size_of::<rserpool_proto::rtf::FrameDecoder>(), 16);
        assert_eq!(size_of::<RtfConnection>(), 24);
        assert_eq!(size_of::<RtfConnection<TcpStore>>(), 24);
        let mio_extra = size_of::<TcpStream>() - size_of::<std::net::TcpStream>();
        assert!(size_of::<TcpIo>() <= 32 + mio_extra.next_multiple_of(8));
    }

    /// RTF's pending parts, the output and the TLS/connect state share one box, which
    /// exists only while any of them holds something.
    #[test]
    fn a_tcp_connection_boxes_its_buffers_only_while_they_hold_anything() {
        let cfg = RtfConfig::default();
        let boxed = |c: &RtfConnection<TcpStore>| c.store().0.is_some();
        let mut a = RtfConnection::connector_in(ChannelKind::Session, cfg, 0, TcpStore::default());
        let mut b =
            RtfConnection::acceptor_in(ChannelKind::Session.into(), cfg, 0, TcpStore::default());
        assert!(boxed(&a) && boxed(&b), "each HELLO waits in RTF's part");
        // Handed to the output (as `take_rtf_transmit` does): the same box holds it.
        while let Some(c) = a.poll_transmit(1) {
            a.store_mut().push(c);
        }
        assert!(
            a.store()
                .0
                .as_ref()
                .is_some_and(|r| r.rtf.is_empty() && !r.output_is_empty())
        );
        let wire: Vec<u8> = a.store().unwritten().flatten().copied().collect();
        assert_eq!(a.store_mut().consume(wire.len()), 0);
        assert!(!boxed(&a), "written out: nothing boxed");
        // Half a frame received: the frame in progress is boxed until the rest arrives.
        while let Some(c) = b.poll_transmit(1) {
            b.store_mut().push(c);
        }
        let n = b.store().unwritten().map(<[u8]>::len).sum();
        b.store_mut().consume(n);
        assert!(!boxed(&b));
        let mut events = VecDeque::new();
        b.handle_input_into(&cfg, 2, &wire[..5], &mut events);
        assert!(boxed(&b) && events.is_empty());
        b.handle_input_into(&cfg, 3, &wire[5..], &mut events);
        assert!(b.is_up() && !boxed(&b), "up and idle: nothing boxed");
        // The connect state keeps the box while connecting, and goes once connected.
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let stream =
            std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let mut c = TcpIo::new(
            TcpStream::from_std(stream),
            RtfConnection::connector_in(ChannelKind::Session, cfg, 0, TcpStore::default()),
            None,
            VecDeque::from([peer, peer]),
        );
        c.take_rtf_transmit(1);
        let n = c.out().unwritten().map(<[u8]>::len).sum();
        c.out_mut().consume(n);
        assert!(c.out().0.is_some(), "the further addresses are kept");
        // A burst written out while the box stays: its large output buffer goes.
        for _ in 0..10 {
            c.out_mut().push(Bytes::from(vec![1u8; 1000]));
        }
        assert_eq!(c.out_mut().consume(10_000), 0);
        assert!(c.out().output_is_empty());
        let rare = c.out().0.as_ref().expect("still boxed");
        assert!(
            rare.tail.capacity() <= SPARE_TAIL_BYTES && rare.chunks.capacity() <= SPARE_QUEUE_SLOTS
        );
        assert_eq!(c.out_mut().next_addr(), Some(peer));
        c.out_mut().connected();
        assert!(c.out().0.is_none(), "connected: nothing boxed");
        assert_eq!(c.out_mut().next_addr(), None);
    }

    #[test]
    fn the_queue_count_saturates_instead_of_wrapping() {
        let mut q = Queued::default();
        q.add(10);
        q.sub(4);
        assert_eq!(q.get(), 6);
        q.sub(100);
        assert_eq!(q.get(), 0);
        q.add(MAX_QUEUE_CAP);
        q.add(MAX_QUEUE_CAP);
        q.add(usize::MAX);
        assert_eq!(q.get(), u32::MAX as usize);
    }

    /// Transports of 100 slots on `poll`, and the loopback address with any port.
    fn small_transports(poll: &mio::Poll) -> (Transports, SocketAddr) {
        let t = Transports::new(poll.registry(), 0..100, TransportConfig::default())
            .expect("transports");
        (t, "127.0.0.1:0".parse().expect("addr"))
    }

    /// An association's generation is the low 32 bits of the allocation count, and 0 is
    /// skipped where the count wraps, so that no id is 0.
    #[test]
    fn generations_skip_zero_where_they_wrap() {
        let poll = mio::Poll::new().expect("poll");
        let (mut t, any) = small_transports(&poll);
        t.next_gen = u64::from(u32::MAX);
        t.listen(&[any], TransportKind::Tcp, ChannelKind::Session)
            .expect("listen");
        assert_eq!(t.next_gen as u32, 1, "the generation after u32::MAX is 1");
    }

    #[test]
    fn socket_ids_stay_within_32_bits() {
        let poll = mio::Poll::new().expect("poll");
        let (mut t, any) = small_transports(&poll);
        t.next_id = u64::from(u32::MAX);
        let last = t
            .listen(&[any], TransportKind::Tcp, ChannelKind::Session)
            .expect("the last 32-bit id");
        assert_eq!(last, SocketId(u64::from(u32::MAX)));
        let err = t
            .listen(&[any], TransportKind::Tcp, ChannelKind::Session)
            .expect_err("no 33-bit id");
        assert!(err.to_string().contains("exhausted"), "{err}");
    }

    /// Encodes onto the output's tail as [`Assoc::enqueue`] does (the tail taken out and
    /// given back); returns the bytes added.
    fn append_tail(
        c: &mut TcpStore,
        f: impl FnOnce(&mut BytesMut) -> Result<(), ()>,
    ) -> Result<usize, ()> {
        let mut tail = c.take_tail();
        let before = tail.len();
        let r = f(&mut tail);
        let added = tail.len() - before;
        c.put_tail(tail);
        r.map(|()| added)
    }

    #[test]
    fn tcp_output_chunks_track_the_written_part_of_the_front_one() {
        let mut c = TcpStore::default();
        assert!(c.output_is_empty() && c.front().is_none() && c.0.is_none());
        assert_eq!(
            c.consume(5),
            5,
            "nothing to consume: all of it is left over"
        );
        // Small pieces are copied together into the tail; a large one is a chunk of its
        // own, after the tail so far (now a chunk too).
        c.push(Bytes::from_static(b"abc"));
        c.push(Bytes::from_static(b"de"));
        assert_eq!(c.unwritten().collect::<Vec<_>>(), [&b"abcde"[..]]);
        let large = Bytes::from(vec![7u8; COALESCE_MAX + 1]);
        c.push(large.clone());
        c.push(Bytes::from_static(b"xy"));
        assert_eq!(
            c.unwritten().collect::<Vec<_>>(),
            [&b"abcde"[..], &large[..], b"xy"]
        );
        assert_eq!(c.consume(2), 0);
        assert_eq!(
            c.unwritten().collect::<Vec<_>>(),
            [&b"cde"[..], &large[..], b"xy"]
        );
        // Across the end of the first chunk into the second.
        assert_eq!(c.consume(3 + 10), 0);
        assert_eq!(c.front(), Some(&large[10..]));
        c.advance_front(large.len() - 11);
        assert_eq!(c.front(), Some(&[7u8][..]));
        c.advance_front(1);
        assert_eq!(c.front(), Some(&b"xy"[..]));
        // Into the tail, then beyond it: the rest is reported.
        c.advance_front(1);
        assert_eq!(c.front(), Some(&b"y"[..]));
        assert_eq!(c.consume(5), 4);
        assert!(
            c.output_is_empty() && c.0.is_none(),
            "an empty output holds no memory"
        );
        // An empty piece is not queued; an encoder that adds nothing leaves nothing boxed.
        c.push(Bytes::new());
        assert!(c.output_is_empty());
        assert_eq!(append_tail(&mut c, |_| Err::<(), ()>(())), Err(()));
        assert!(c.output_is_empty() && c.0.is_none());
        assert_eq!(
            append_tail(&mut c, |t| {
                t.extend_from_slice(b"frame");
                Ok::<(), ()>(())
            }),
            Ok(5)
        );
        assert_eq!(c.front(), Some(&b"frame"[..]));
    }

    proptest::proptest! {
        /// The TCP output queue against a byte-string model: whatever is pushed (small pieces
        /// into the tail, large ones as chunks of their own, frames encoded into the tail)
        /// comes out once, in order, however the writes split it; empty ⇔ nothing left.
        #[test]
        fn tcp_output_is_the_pushed_byte_stream_in_order(
            ops in proptest::collection::vec((0u8..4, 0usize..(COALESCE_MAX + 600)), 1..60)
        ) {
            let mut c = TcpStore::default();
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut next = 0u8;
            let mut piece = |n: usize| {
                let v: Vec<u8> = (0..n).map(|_| { next = next.wrapping_add(1); next }).collect();
                v
            };
            for (op, n) in ops {
                match op {
                    0 => {
                        let v = piece(n);
                        model.extend(&v);
                        c.push(Bytes::from(v));
                    }
                    1 => {
                        let v = piece(n % 200);
                        model.extend(&v);
                        let added = append_tail(&mut c, |t| {
                            t.extend_from_slice(&v);
                            Ok::<(), ()>(())
                        });
                        proptest::prop_assert_eq!(added, Ok(v.len()));
                    }
                    2 => {
                        let rest = c.consume(n);
                        let k = n.min(model.len());
                        proptest::prop_assert_eq!(rest, n - k);
                        model.drain(..k);
                    }
                    _ => {
                        let front = c.front().map_or(0, <[u8]>::len);
                        let k = n.min(front);
                        c.advance_front(k);
                        model.drain(..k);
                    }
                }
                let out: Vec<u8> = c.unwritten().flatten().copied().collect();
                proptest::prop_assert_eq!(&out, &model.iter().copied().collect::<Vec<u8>>());
                proptest::prop_assert_eq!(c.output_is_empty(), model.is_empty());
                proptest::prop_assert!(c.unwritten().all(|p| !p.is_empty()));
            }
        }
    }

    #[test]
    fn written_tcp_output_queues_are_reused() {
        let spares = || SPARE_TCP.with(|s| s.borrow().len());
        SPARE_TCP.with(|s| s.borrow_mut().clear());
        let mut c = TcpStore::default();
        c.push(Bytes::from_static(b"keep-alive"));
        assert_eq!(spares(), 0);
        assert_eq!(c.consume(10), 0);
        assert_eq!(spares(), 1, "written out: the queue went to the spares");
        c.push(Bytes::from_static(b"answer"));
        assert_eq!(spares(), 0, "the next output took it");
        drop(c);
        assert_eq!(spares(), 1, "dropped with output: emptied and kept");
        // A small tail buffer is kept with the spare (all of it again), a large one is not
        // (written out, a buffer has no capacity left after its cursor, but still holds its
        // allocation).
        let tail_after = |n: usize| {
            SPARE_TCP.with(|s| s.borrow_mut().clear());
            let mut d = TcpStore::default();
            d.push(Bytes::from(vec![1u8; n]));
            assert_eq!(d.consume(n), 0);
            SPARE_TCP.with(|s| s.borrow_mut().pop().map(|mut q| q.tail.try_reclaim(n)))
        };
        assert_eq!(tail_after(100), Some(true));
        assert_eq!(tail_after(SPARE_TAIL_BYTES + 1), Some(false));
    }
}
