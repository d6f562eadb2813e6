//! Async transports: RTF over TCP (`shared/spec/tcp-mapping.md` §3), kernel SCTP and UDP on
//! `async_io::Async`, behind one API ([`Transports`]) that mirrors the mio driver's
//! `rserpool_mio::transport::Transports` and shares its vocabulary ([`TransportEvent`],
//! [`DownReason`], [`SendError`], [`TransportConfig`], …, re-exported here).
//!
//! # One task, one select loop
//! [`Transports`] is a plain value polled from one task ([`Transports::poll_event`]); it
//! spawns nothing. Every socket is an `async_io::Async<_>` registered with async-io's
//! reactor (the one async-std and smol run on), so it works under async-std's executor,
//! smol, or `futures_lite::future::block_on` alike, with no executor-specific spawner.
//!
//! Why not one reader and one writer task per association:
//! * the sans-IO machine needs `&mut` access for every input, so per-association tasks would
//!   funnel every message through a channel into one machine task anyway (one extra
//!   allocation, copy-free but queued hand-off and wake-up per message);
//! * spawning needs an executor handle, which async-io does not have and which differs
//!   between async-std, smol and `block_on`;
//! * the backpressure contract below needs the send queue and the socket in one place;
//! * in-order delivery per association and "Up before Message before Down" come for free.
//!
//! The cost of one task is that readiness must not mean "poll every socket": each socket
//! slot has its own [`Waker`] (an `Arc` implementing [`std::task::Wake`]) that it hands to
//! `Async::poll_readable` / `poll_writable`. When the reactor wakes a slot, the slot puts
//! its index on a shared ready list and wakes the task; [`Transports::poll_event`] then
//! drives only the ready slots (`O(ready)`, like mio's event list), each until
//! `WouldBlock` within a fairness budget.
//!
//! # Behaviour shared with the mio driver
//! * One socket per association (one-to-one SCTP sockets, one TCP connection per peer);
//!   `TCP_NODELAY` / `SCTP_NODELAY` on every socket.
//! * RTF: the connector sends its HELLO with the channel kind at once (data may follow
//!   right behind it); an acceptor serving several kinds echoes the connector's kind; an
//!   association is `Up` when the peer's HELLO arrived; heartbeats when idle and a dead
//!   peer after 3 × its interval; protocol errors abort (RST).
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
//! Writes happen while the transports are polled: [`Transports::send`] queues the message
//! and marks the association; the next [`Transports::poll_event`] writes it (coalescing
//! everything queued meanwhile into one `writev`).
//!
//! # Ids
//! Associations accepted by a listener (and those opened with [`Transports::connect`]) get
//! ids with the top bit clear; [`Transports::connect_as`] takes a caller-chosen id, which
//! must have the top bit set (the machines' [`rserpool_core::io::AssocIdAllocator`] ids),
//! so the two never collide.

use async_io::{Async, Timer};
use bytes::{Bytes, BytesMut};
use rserpool_core::AssocId;
use rserpool_core::io::AssocIdAllocator;
use rserpool_mio::transport::sctp::socket::SctpSocket;
use rserpool_mio::transport::{SctpNotice, UdpQueue};
use rserpool_proto::rtf::{ChannelKind, ChannelKinds, RtfConfig, RtfConnection, RtfEvent};
use socket2::{Domain, SockRef, Socket, Type};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

pub use rserpool_mio::transport::sctp::socket::SctpOptions;
pub use rserpool_mio::transport::{
    DownReason, SendError, SocketId, TransportConfig, TransportEvent, TransportKind, TransportMode,
    UdpOptions, sctp_available,
};

const RECV_BUF: usize = 64 * 1024;
const MAX_IOV: usize = 64;
/// Reads per drive of one socket before it yields to the others (it is put back on the
/// ready list).
const READ_BUDGET: usize = 64;
/// Rounds of driving ready sockets in one `poll_event` before yielding to the executor.
const ROUNDS_PER_POLL: usize = 16;

// --- readiness --------------------------------------------------------------------------

/// The ready list shared by the slot wakers and the polling task.
#[derive(Default)]
struct ReadyList {
    inner: Mutex<ReadyInner>,
}

#[derive(Default)]
struct ReadyInner {
    slots: Vec<(usize, u64)>,
    task: Option<Waker>,
}

impl ReadyList {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReadyInner> {
        // A panic while holding this lock cannot leave the list inconsistent (push / take).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The waker of one socket slot: queues the slot and wakes the polling task.
struct SlotWaker {
    idx: usize,
    generation: u64,
    queued: AtomicBool,
    list: Arc<ReadyList>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = {
            let mut l = self.list.lock();
            l.slots.push((self.idx, self.generation));
            l.task.clone()
        };
        if let Some(t) = task {
            t.wake();
        }
    }
}

// --- slots ------------------------------------------------------------------------------

struct Entry {
    generation: u64,
    waker: Arc<SlotWaker>,
    task_waker: Waker,
    /// On the local (lock-free) dirty list.
    dirty: bool,
    slot: Slot,
}

enum Slot {
    TcpListener {
        listener: Async<TcpListener>,
        id: SocketId,
        kinds: ChannelKinds,
    },
    SctpListener {
        sock: Async<SctpSocket>,
        id: SocketId,
        kinds: ChannelKinds,
    },
    Udp(Box<Udp>),
    Assoc(Box<Assoc>),
}

struct Udp {
    sock: Async<UdpSocket>,
    id: SocketId,
    queue: UdpQueue,
}

struct Assoc {
    id: AssocId,
    /// The user holds the id (false after `close` or `Down`).
    attached: bool,
    /// `Up` was reported.
    announced: bool,
    outbound: bool,
    listener: Option<SocketId>,
    channel: Option<ChannelKind>,
    /// Bytes waiting in the queue (RTF framing included).
    queued: usize,
    /// Graceful close in progress: abort at this deadline (µs).
    linger_until: Option<u64>,
    write_error: Option<io::Error>,
    /// Deadline currently in the timer heap.
    scheduled: Option<u64>,
    io: AssocIo,
}

#[allow(clippy::large_enum_variant)] // stored inside `Box<Assoc>`
enum AssocIo {
    Tcp(TcpIo),
    Sctp(SctpIo),
}

struct TcpIo {
    stream: Async<TcpStream>,
    rtf: RtfConnection,
    connecting: bool,
    next_addrs: VecDeque<SocketAddr>,
    out: VecDeque<Bytes>,
    front_off: usize,
    write_shut: bool,
    peer_eof: bool,
}

struct SctpIo {
    sock: Async<SctpSocket>,
    connecting: bool,
    out: VecDeque<(u32, u16, Bytes)>,
    reasm: BytesMut,
    /// Skipping the rest of an over-long message or notification until MSG_EOR.
    discard: bool,
    /// `SO_SNDBUF` as last read: the largest message one `sendmsg` may carry.
    sndbuf: usize,
    write_shut: bool,
}

/// What to do with a slot after driving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Drive again soon (read budget used up).
    Again,
    /// Close the socket now (abort = RST / ABORT via `SO_LINGER` 0).
    Remove {
        abort: bool,
    },
}

struct Ctx<'a> {
    now_us: u64,
    buf: &'a mut [u8],
    cfg: &'a TransportConfig,
    out: &'a mut VecDeque<TransportEvent>,
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn rtf_config(cfg: &TransportConfig) -> RtfConfig {
    RtfConfig {
        heartbeat_interval_ms: u32::try_from(cfg.rtf_heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX)
            .max(1),
        max_frame_len: cfg
            .max_message_len
            .saturating_add(rserpool_proto::rtf::HEADER_LEN),
    }
}

/// Starts a non-blocking TCP connect (completion: writable, then `SO_ERROR`).
fn connect_tcp(addr: SocketAddr) -> io::Result<Async<TcpStream>> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    let _ = sock.set_tcp_nodelay(true);
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Async::new_nonblocking(TcpStream::from(sock))
}

fn reason_of(e: &io::Error) -> DownReason {
    if is_reset(e) {
        DownReason::Abort
    } else {
        DownReason::Lost
    }
}

impl Assoc {
    fn kind(&self) -> TransportKind {
        match self.io {
            AssocIo::Tcp(_) => TransportKind::Tcp,
            AssocIo::Sctp(_) => TransportKind::Sctp,
        }
    }

    /// Reports `Down` (when the user can see this association) and detaches it.
    fn down(&mut self, reason: DownReason, out: &mut VecDeque<TransportEvent>) {
        if self.attached && (self.announced || self.outbound) {
            let reason = if self.announced {
                reason
            } else {
                DownReason::ConnectFailed
            };
            out.push_back(TransportEvent::Down {
                assoc: self.id,
                reason,
            });
        }
        self.attached = false;
    }

    fn next_deadline(&self) -> Option<u64> {
        let rtf = match &self.io {
            AssocIo::Tcp(t) => t.rtf.poll_timeout(),
            AssocIo::Sctp(_) => None,
        };
        match (rtf, self.linger_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn begin_close(&mut self, now_us: u64, linger: Duration) {
        self.attached = false;
        if self.linger_until.is_none() {
            let linger = u64::try_from(linger.as_micros()).unwrap_or(u64::MAX);
            self.linger_until = Some(now_us.saturating_add(linger));
        }
    }

    fn connecting(&self) -> bool {
        match &self.io {
            AssocIo::Tcp(t) => t.connecting,
            AssocIo::Sctp(s) => s.connecting,
        }
    }

    /// Queues a message (cap already checked).
    fn enqueue(
        &mut self,
        now_us: u64,
        ppid: u32,
        stream: u16,
        data: Bytes,
    ) -> Result<(), SendError> {
        match &mut self.io {
            AssocIo::Tcp(t) => {
                let max = t.rtf.max_payload_len();
                t.rtf.send(ppid, stream, false, data).map_err(|e| match e {
                    rserpool_proto::rtf::RtfError::MessageTooLong { length, .. } => {
                        SendError::TooLarge { len: length, max }
                    }
                    _ => SendError::Closed,
                })?;
                // Into the write queue at once, so that the cap holds between polls.
                while let Some(c) = t.rtf.poll_transmit(now_us) {
                    self.queued += c.len();
                    t.out.push_back(c);
                }
            }
            AssocIo::Sctp(s) => {
                if data.is_empty() {
                    return Err(SendError::Empty);
                }
                if data.len() > s.sndbuf {
                    s.sndbuf = s
                        .sock
                        .get_ref()
                        .ensure_send_buffer(data.len())
                        .unwrap_or(s.sndbuf);
                    if data.len() > s.sndbuf {
                        return Err(SendError::TooLarge {
                            len: data.len(),
                            max: s.sndbuf,
                        });
                    }
                }
                self.queued += data.len();
                s.out.push_back((ppid, stream, data));
            }
        }
        Ok(())
    }

    fn up_event(
        &mut self,
        peer_addrs: Vec<SocketAddr>,
        local_addrs: Vec<SocketAddr>,
        out: &mut VecDeque<TransportEvent>,
    ) {
        self.announced = true;
        if self.attached {
            out.push_back(TransportEvent::Up {
                assoc: self.id,
                kind: self.kind(),
                listener: self.listener,
                channel: self.channel,
                peer_addrs,
                local_addrs,
            });
        }
    }

    /// Moves RTF frames into the write queue and writes as much as the socket takes,
    /// registering for writability when it is full.
    fn flush(&mut self, cx: &mut Context<'_>, now_us: u64) {
        if self.write_error.is_some() {
            return;
        }
        match &mut self.io {
            AssocIo::Tcp(t) => {
                while let Some(c) = t.rtf.poll_transmit(now_us) {
                    self.queued += c.len();
                    t.out.push_back(c);
                }
                if t.connecting || t.write_shut {
                    return;
                }
                while !t.out.is_empty() {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let mut n = 0;
                    for (i, c) in t.out.iter().take(MAX_IOV).enumerate() {
                        let c = if i == 0 {
                            c.get(t.front_off..).unwrap_or_default()
                        } else {
                            c.as_ref()
                        };
                        if let Some(s) = slices.get_mut(i) {
                            *s = IoSlice::new(c);
                            n = i + 1;
                        }
                    }
                    match (&mut t.stream.get_ref())
                        .write_vectored(slices.get(..n).unwrap_or_default())
                    {
                        Ok(0) => {
                            self.write_error = Some(io::ErrorKind::WriteZero.into());
                            return;
                        }
                        Ok(mut written) => {
                            self.queued = self.queued.saturating_sub(written);
                            while written > 0 {
                                let Some(front) = t.out.front() else { break };
                                let left = front.len() - t.front_off;
                                if written >= left {
                                    written -= left;
                                    t.out.pop_front();
                                    t.front_off = 0;
                                } else {
                                    t.front_off += written;
                                    written = 0;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            match t.stream.poll_writable(cx) {
                                Poll::Ready(Ok(())) => continue,
                                Poll::Ready(Err(e)) => {
                                    self.write_error = Some(e);
                                    return;
                                }
                                Poll::Pending => return,
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            self.write_error = Some(e);
                            return;
                        }
                    }
                }
                if self.linger_until.is_some() && !t.write_shut {
                    // Graceful close: FIN after the last queued frame.
                    let _ = t.stream.get_ref().shutdown(std::net::Shutdown::Write);
                    t.write_shut = true;
                }
            }
            AssocIo::Sctp(s) => {
                if s.connecting || s.write_shut {
                    return;
                }
                while let Some((ppid, stream, data)) = s.out.front() {
                    match s.sock.get_ref().send(*ppid, *stream, data) {
                        Ok(_) => {
                            self.queued = self.queued.saturating_sub(data.len());
                            s.out.pop_front();
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            match s.sock.poll_writable(cx) {
                                Poll::Ready(Ok(())) => continue,
                                Poll::Ready(Err(e)) => {
                                    self.write_error = Some(e);
                                    return;
                                }
                                Poll::Pending => return,
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            self.write_error = Some(e);
                            return;
                        }
                    }
                }
                if self.linger_until.is_some() && !s.write_shut {
                    // Graceful close: SHUTDOWN after the queued data (SCTP_EOF).
                    let _ = s.sock.get_ref().shutdown();
                    s.write_shut = true;
                }
            }
        }
    }

    /// Drives the association: connect completion, reads, RTF events, writes.
    fn drive(&mut self, cx: &mut Context<'_>, ctx: &mut Ctx<'_>) -> Fate {
        let fate = match &self.io {
            AssocIo::Tcp(_) => self.drive_tcp(cx, ctx),
            AssocIo::Sctp(_) => self.drive_sctp(cx, ctx),
        };
        if matches!(fate, Fate::Remove { .. }) {
            return fate;
        }
        self.flush(cx, ctx.now_us);
        if let Some(e) = self.write_error.take() {
            self.down(reason_of(&e), ctx.out);
            return Fate::Remove { abort: true };
        }
        if let AssocIo::Tcp(t) = &self.io
            && t.peer_eof
            && t.out.is_empty()
            && self.linger_until.is_some()
        {
            // Both directions finished.
            return Fate::Remove { abort: false };
        }
        fate
    }

    /// Waits for a pending TCP connect; tries the next address on failure. `Ok(true)` once
    /// connected, `Ok(false)` while pending.
    fn tcp_connect_progress(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        let AssocIo::Tcp(t) = &mut self.io else {
            return Ok(true);
        };
        loop {
            match t.stream.poll_writable(cx) {
                Poll::Pending => return Ok(false),
                Poll::Ready(r) => {
                    let err = match r {
                        Err(e) => Some(e),
                        Ok(()) => match t.stream.get_ref().take_error() {
                            Ok(Some(e)) | Err(e) => Some(e),
                            Ok(None) => match t.stream.get_ref().peer_addr() {
                                Ok(_) => None,
                                // Spurious wake-up: wait again.
                                Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
                                Err(e) => Some(e),
                            },
                        },
                    };
                    if err.is_none() {
                        t.connecting = false;
                        let _ = t.stream.get_ref().set_nodelay(true);
                        return Ok(true);
                    }
                    // Try the next address of the peer, in order (tcp-mapping.md §3.6),
                    // keeping the queue (HELLO and data) intact.
                    loop {
                        let Some(next) = t.next_addrs.pop_front() else {
                            return Err(());
                        };
                        if let Ok(s) = connect_tcp(next) {
                            t.stream = s;
                            break;
                        }
                    }
                }
            }
        }
    }

    fn drive_tcp(&mut self, cx: &mut Context<'_>, ctx: &mut Ctx<'_>) -> Fate {
        let connecting = matches!(&self.io, AssocIo::Tcp(t) if t.connecting);
        if connecting {
            match self.tcp_connect_progress(cx) {
                Ok(true) => {}
                Ok(false) => return Fate::Keep,
                Err(()) => {
                    self.down(DownReason::ConnectFailed, ctx.out);
                    return Fate::Remove { abort: false };
                }
            }
        }
        let AssocIo::Tcp(t) = &mut self.io else {
            return Fate::Keep;
        };
        let mut fate = Fate::Keep;
        let mut eof = false;
        let mut read_err = None;
        if !t.peer_eof {
            let mut budget = READ_BUDGET;
            loop {
                if budget == 0 {
                    fate = Fate::Again;
                    break;
                }
                match (&mut t.stream.get_ref()).read(ctx.buf) {
                    Ok(0) => {
                        eof = true;
                        t.peer_eof = true;
                        break;
                    }
                    Ok(n) => {
                        budget -= 1;
                        t.rtf
                            .handle_input(ctx.now_us, ctx.buf.get(..n).unwrap_or_default());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match t.stream.poll_readable(cx) {
                            Poll::Ready(Ok(())) => continue,
                            Poll::Ready(Err(e)) => {
                                read_err = Some(e);
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        read_err = Some(e);
                        break;
                    }
                }
            }
        }
        if eof {
            t.rtf.handle_eof(ctx.now_us);
        }
        let ev_fate = self.rtf_events(ctx);
        if ev_fate != Fate::Keep {
            return ev_fate;
        }
        if let Some(e) = read_err {
            self.down(reason_of(&e), ctx.out);
            return Fate::Remove { abort: true };
        }
        fate
    }

    fn rtf_events(&mut self, ctx: &mut Ctx<'_>) -> Fate {
        let mut fate = Fate::Keep;
        loop {
            let AssocIo::Tcp(t) = &mut self.io else {
                return fate;
            };
            let Some(ev) = t.rtf.poll_event() else { break };
            match ev {
                RtfEvent::Up { channel_kind, .. } => {
                    self.channel = Some(channel_kind);
                    let peer = t.stream.get_ref().peer_addr().ok().into_iter().collect();
                    let local = t.stream.get_ref().local_addr().ok().into_iter().collect();
                    self.up_event(peer, local, ctx.out);
                }
                RtfEvent::Data {
                    ppid,
                    stream,
                    payload,
                    ..
                } => {
                    if self.attached && self.announced {
                        ctx.out.push_back(TransportEvent::Message {
                            assoc: self.id,
                            ppid,
                            stream,
                            data: payload,
                        });
                    }
                }
                RtfEvent::PeerShutdown => {
                    self.down(DownReason::Shutdown, ctx.out);
                    // Flush what is queued, FIN, then close (the peer has finished).
                    self.begin_close(ctx.now_us, ctx.cfg.close_linger);
                }
                RtfEvent::Dead => {
                    self.down(DownReason::Lost, ctx.out);
                    fate = Fate::Remove { abort: true };
                }
                RtfEvent::ProtocolError(e) => {
                    let reason = match e {
                        rserpool_proto::rtf::RtfError::Truncated { .. } => DownReason::Abort,
                        _ => DownReason::ProtocolError,
                    };
                    self.down(reason, ctx.out);
                    fate = Fate::Remove { abort: true };
                }
            }
        }
        fate
    }

    fn drive_sctp(&mut self, cx: &mut Context<'_>, ctx: &mut Ctx<'_>) -> Fate {
        if let AssocIo::Sctp(s) = &mut self.io
            && s.connecting
            && let Poll::Ready(r) = s.sock.poll_writable(cx)
        {
            let failed = match r {
                Err(_) => true,
                Ok(()) => !matches!(s.sock.get_ref().take_error(), Ok(None)),
            };
            if failed {
                self.down(DownReason::ConnectFailed, ctx.out);
                return Fate::Remove { abort: false };
            }
        }
        let mut budget = READ_BUDGET * 4;
        loop {
            if budget == 0 {
                return Fate::Again;
            }
            let AssocIo::Sctp(s) = &mut self.io else {
                return Fate::Keep;
            };
            let r = match s.sock.get_ref().recv(ctx.buf) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.down(DownReason::Shutdown, ctx.out);
                    return Fate::Remove { abort: false };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match s.sock.poll_readable(cx) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => {
                        self.down(reason_of(&e), ctx.out);
                        return Fate::Remove { abort: false };
                    }
                    Poll::Pending => return Fate::Keep,
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A one-to-one socket still setting up its association has nothing to read:
                // wait for readability (the COMM_UP notification).
                Err(e) if s.connecting && e.raw_os_error() == Some(libc::ENOTCONN) => {
                    match s.sock.poll_readable(cx) {
                        Poll::Ready(_) => continue,
                        Poll::Pending => return Fate::Keep,
                    }
                }
                Err(e) => {
                    self.down(reason_of(&e), ctx.out);
                    return Fate::Remove { abort: false };
                }
            };
            budget -= 1;
            let data = ctx.buf.get(..r.len).unwrap_or_default();
            if r.notification {
                if s.discard || !r.end_of_record {
                    // Notifications this large are not ones we act on.
                    s.discard = !r.end_of_record;
                    continue;
                }
                let mut note = [0u8; 64];
                let n = data.len().min(note.len());
                if let (Some(dst), Some(src)) = (note.get_mut(..n), data.get(..n)) {
                    dst.copy_from_slice(src);
                }
                let fate = self.sctp_notification(note.get(..n).unwrap_or_default(), cx, ctx);
                if fate != Fate::Keep {
                    return fate;
                }
                continue;
            }
            if s.discard {
                s.discard = !r.end_of_record;
                continue;
            }
            if s.reasm.len() + data.len() > ctx.cfg.max_message_len {
                // Never buffer beyond the limit: abort the association.
                self.down(DownReason::ProtocolError, ctx.out);
                return Fate::Remove { abort: true };
            }
            let info = r.info.unwrap_or_default();
            if !r.end_of_record {
                s.reasm.extend_from_slice(data);
                continue;
            }
            let msg = if s.reasm.is_empty() {
                Bytes::copy_from_slice(data)
            } else {
                s.reasm.extend_from_slice(data);
                s.reasm.split().freeze()
            };
            if self.attached && self.announced {
                ctx.out.push_back(TransportEvent::Message {
                    assoc: self.id,
                    ppid: info.ppid,
                    stream: info.stream,
                    data: msg,
                });
            }
        }
    }

    fn sctp_notification(&mut self, data: &[u8], cx: &mut Context<'_>, ctx: &mut Ctx<'_>) -> Fate {
        let AssocIo::Sctp(s) = &mut self.io else {
            return Fate::Keep;
        };
        match SctpNotice::of(data) {
            Some(SctpNotice::Up) if !self.announced => {
                s.connecting = false;
                let peer = s.sock.get_ref().peer_addrs().unwrap_or_default();
                let local = s.sock.get_ref().local_addrs().unwrap_or_default();
                self.up_event(peer, local, ctx.out);
                self.flush(cx, ctx.now_us);
                Fate::Keep
            }
            Some(SctpNotice::Down(reason)) => {
                self.down(reason, ctx.out);
                Fate::Remove { abort: false }
            }
            Some(SctpNotice::PeerShutdown) => {
                // The peer shuts down: no more sends are possible. Keep reading until the
                // shutdown completes (EOF / SHUTDOWN_COMP) so that closing does not ABORT.
                self.down(DownReason::Shutdown, ctx.out);
                self.begin_close(ctx.now_us, ctx.cfg.close_linger);
                if let AssocIo::Sctp(s) = &mut self.io {
                    s.write_shut = true;
                    s.out.clear();
                }
                self.queued = 0;
                Fate::Keep
            }
            _ => Fate::Keep,
        }
    }

    /// Timer expiry: RTF heartbeats / dead peer, close lingering.
    fn timeout(&mut self, cx: &mut Context<'_>, ctx: &mut Ctx<'_>) -> Fate {
        if self.linger_until.is_some_and(|t| ctx.now_us >= t) {
            return Fate::Remove { abort: true };
        }
        if let AssocIo::Tcp(t) = &mut self.io {
            t.rtf.handle_timeout(ctx.now_us);
            let fate = self.rtf_events(ctx);
            if fate != Fate::Keep {
                return fate;
            }
        }
        self.flush(cx, ctx.now_us);
        if let Some(e) = self.write_error.take() {
            self.down(reason_of(&e), ctx.out);
            return Fate::Remove { abort: true };
        }
        Fate::Keep
    }
}

fn flush_udp(u: &mut Udp, cx: &mut Context<'_>) {
    let sock = &u.sock;
    while !u.queue.flush(|data, to| sock.get_ref().send_to(data, to)) {
        match sock.poll_writable(cx) {
            Poll::Ready(Ok(())) => {}
            // Socket error: the datagram is dropped, as UDP would.
            Poll::Ready(Err(_)) => u.queue.drop_front(),
            Poll::Pending => return,
        }
    }
}

fn recv_udp(
    u: &mut Udp,
    cx: &mut Context<'_>,
    buf: &mut [u8],
    out: &mut VecDeque<TransportEvent>,
) -> Fate {
    let mut budget = READ_BUDGET * 4;
    loop {
        if budget == 0 {
            return Fate::Again;
        }
        match u.sock.get_ref().recv_from(buf) {
            Ok((n, from)) => {
                budget -= 1;
                out.push_back(TransportEvent::Datagram {
                    socket: u.id,
                    from,
                    data: Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match u.sock.poll_readable(cx) {
                Poll::Ready(_) => continue,
                Poll::Pending => return Fate::Keep,
            },
            // EINTR, or an ICMP error reported on the socket (consumed by this call).
            Err(_) => budget = budget.saturating_sub(1),
        }
    }
}

// --- the transports ---------------------------------------------------------------------

/// The transports of one driver task: listeners, associations and UDP sockets, polled from
/// one task with [`Transports::poll_event`] / [`Transports::next_event`].
pub struct Transports {
    config: TransportConfig,
    epoch: Instant,
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    assocs: HashMap<AssocId, usize>,
    sockets: HashMap<SocketId, usize>,
    next_id: u64,
    next_gen: u64,
    ready: Arc<ReadyList>,
    /// Slots to drive at the next poll (sends, new sockets), without the lock.
    dirty: Vec<usize>,
    timers: BinaryHeap<Reverse<(u64, usize, u64)>>,
    timer: Timer,
    timer_armed: Option<Instant>,
    events: VecDeque<TransportEvent>,
    buf: Vec<u8>,
    /// Association sockets, closing ones included.
    assoc_slots: usize,
    /// SCTP listeners outgoing associations of a channel kind leave from
    /// ([`Transports::listen_as_source`]): (listener, channel kind, local addresses).
    sctp_sources: Vec<(SocketId, ChannelKind, Vec<SocketAddr>)>,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("associations", &self.assocs.len())
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

impl Transports {
    /// Empty transports with `config`.
    pub fn new(config: TransportConfig) -> Transports {
        Transports {
            config,
            epoch: Instant::now(),
            entries: Vec::new(),
            free: Vec::new(),
            assocs: HashMap::new(),
            sockets: HashMap::new(),
            next_id: 1,
            next_gen: 1,
            ready: Arc::new(ReadyList::default()),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            timer: Timer::never(),
            timer_armed: None,
            events: VecDeque::new(),
            buf: vec![0; RECV_BUF],
            assoc_slots: 0,
            sctp_sources: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Number of live associations (the ones the user can see).
    pub fn association_count(&self) -> usize {
        self.assocs.len()
    }

    /// True when no association socket is left (not even one still closing).
    pub fn is_quiet(&self) -> bool {
        self.assoc_slots == 0
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

    fn us(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = (self.next_id + 1) & !AssocIdAllocator::MACHINE_BIT;
        id
    }

    fn alloc(&mut self, slot: Slot) -> usize {
        let generation = self.next_gen;
        self.next_gen += 1;
        if matches!(slot, Slot::Assoc(_)) {
            self.assoc_slots += 1;
        }
        let idx = self.free.pop().unwrap_or_else(|| {
            self.entries.push(None);
            self.entries.len() - 1
        });
        let waker = Arc::new(SlotWaker {
            idx,
            generation,
            queued: AtomicBool::new(false),
            list: self.ready.clone(),
        });
        let task_waker = Waker::from(waker.clone());
        if let Some(e) = self.entries.get_mut(idx) {
            *e = Some(Entry {
                generation,
                waker,
                task_waker,
                dirty: false,
                slot,
            });
        }
        self.mark_dirty(idx);
        idx
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(Some(e)) = self.entries.get_mut(idx)
            && !e.dirty
        {
            e.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Drops the socket in slot `idx` (deregistered from the reactor by `Async`'s drop).
    fn remove(&mut self, idx: usize, abort: bool) {
        let Some(entry) = self.entries.get_mut(idx).and_then(Option::take) else {
            return;
        };
        match entry.slot {
            Slot::TcpListener { id, .. } | Slot::SctpListener { id, .. } => {
                self.sockets.remove(&id);
            }
            Slot::Udp(u) => {
                self.sockets.remove(&u.id);
            }
            Slot::Assoc(a) => {
                self.assoc_slots -= 1;
                if self.assocs.get(&a.id) == Some(&idx) {
                    self.assocs.remove(&a.id);
                }
                if abort {
                    match &a.io {
                        AssocIo::Tcp(t) => {
                            let _ =
                                SockRef::from(t.stream.get_ref()).set_linger(Some(Duration::ZERO));
                        }
                        AssocIo::Sctp(s) => {
                            let _ = s.sock.get_ref().set_abort_on_close();
                        }
                    }
                }
            }
        }
        self.free.push(idx);
    }

    fn assoc_mut(&mut self, idx: usize) -> Option<&mut Assoc> {
        match self.entries.get_mut(idx) {
            Some(Some(Entry {
                slot: Slot::Assoc(a),
                ..
            })) => Some(a),
            _ => None,
        }
    }

    fn assoc_ref(&self, assoc: AssocId) -> io::Result<&Assoc> {
        let idx = self
            .assocs
            .get(&assoc)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown association"))?;
        match self.entries.get(*idx) {
            Some(Some(Entry {
                slot: Slot::Assoc(a),
                ..
            })) => Ok(a),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "unknown association",
            )),
        }
    }

    /// Re-arms the timer of association `idx` if its deadline moved earlier.
    fn schedule(&mut self, idx: usize) {
        let Some(Some(entry)) = self.entries.get_mut(idx) else {
            return;
        };
        let generation = entry.generation;
        let Slot::Assoc(a) = &mut entry.slot else {
            return;
        };
        if let Some(d) = a.next_deadline()
            && a.scheduled.is_none_or(|s| d < s)
        {
            a.scheduled = Some(d);
            self.timers.push(Reverse((d, idx, generation)));
        }
    }

    /// Applies the result of driving slot `idx`.
    fn settle(&mut self, idx: usize, fate: Fate) {
        match fate {
            Fate::Remove { abort } => {
                self.remove(idx, abort);
                return;
            }
            Fate::Again => self.mark_dirty(idx),
            Fate::Keep => {}
        }
        if let Some(a) = self.assoc_mut(idx) {
            let id = a.id;
            if !a.attached && self.assocs.get(&id) == Some(&idx) {
                self.assocs.remove(&id);
            }
        }
        self.schedule(idx);
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
        let kinds = channels.into();
        let id = SocketId(self.next_id());
        let slot = match kind {
            TransportKind::Tcp => {
                let addr = *addrs
                    .first()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
                let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
                sock.set_reuse_address(true)?;
                sock.set_cloexec(true)?;
                if addr.is_ipv6() {
                    sock.set_only_v6(false)?;
                }
                sock.set_nonblocking(true)?;
                sock.bind(&addr.into())?;
                sock.listen(self.config.listen_backlog)?;
                Slot::TcpListener {
                    listener: Async::new_nonblocking(TcpListener::from(sock))?,
                    id,
                    kinds,
                }
            }
            TransportKind::Sctp => Slot::SctpListener {
                sock: Async::new_nonblocking(SctpSocket::listen(
                    addrs,
                    self.config.listen_backlog,
                    &self.config.sctp,
                )?)?,
                id,
                kinds,
            },
        };
        let idx = self.alloc(slot);
        self.sockets.insert(id, idx);
        Ok(id)
    }

    /// Listens like [`Transports::listen`]; over SCTP, in addition, every later outgoing
    /// association of channel kind `source_for` leaves from this listener's addresses and
    /// port (both sockets `SO_REUSEPORT`: `SctpSocket::listen_shared` /
    /// `SctpSocket::connect_from`), until the listener is closed. A pool element needs this:
    /// registrars record the address and port its ASAP association comes from as its ASAP
    /// transport, and a registrar taking it over connects there (`asap.md` §5.5; RSPLIB uses
    /// one one-to-many socket for both). Over TCP it is a plain listener (the TCP mapping
    /// reaches the PE at its user port instead). The mio driver's
    /// `Transports::listen_as_source` does the same.
    pub fn listen_as_source(
        &mut self,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channels: impl Into<ChannelKinds>,
        source_for: ChannelKind,
    ) -> io::Result<SocketId> {
        if kind == TransportKind::Tcp {
            return self.listen(addrs, kind, channels);
        }
        let sock = SctpSocket::listen_shared(addrs, self.config.listen_backlog, &self.config.sctp)?;
        let local = sock.endpoint_of(addrs)?;
        let id = SocketId(self.next_id());
        let idx = self.alloc(Slot::SctpListener {
            sock: Async::new_nonblocking(sock)?,
            id,
            kinds: channels.into(),
        });
        self.sockets.insert(id, idx);
        self.sctp_sources.retain(|(_, c, _)| *c != source_for);
        self.sctp_sources.push((id, source_for, local));
        Ok(id)
    }

    /// The local endpoint outgoing SCTP associations of channel kind `channel` leave from
    /// ([`Transports::listen_as_source`]), if any.
    pub fn sctp_source(&self, channel: ChannelKind) -> Option<&[SocketAddr]> {
        self.sctp_sources
            .iter()
            .find(|(_, c, _)| *c == channel)
            .map(|(_, _, local)| local.as_slice())
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
        let id = AssocId(self.next_id());
        self.open(id, addrs, kind, channel)?;
        Ok(id)
    }

    /// As [`Transports::connect`], under the caller-chosen id `assoc`, which must have
    /// [`AssocIdAllocator::MACHINE_BIT`] set and not be in use.
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
        if self.assocs.contains_key(&assoc) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "association id in use",
            ));
        }
        self.open(assoc, addrs, kind, channel)
    }

    fn open(
        &mut self,
        id: AssocId,
        addrs: &[SocketAddr],
        kind: TransportKind,
        channel: ChannelKind,
    ) -> io::Result<()> {
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no address"));
        }
        let now_us = self.us(Instant::now());
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
                let Some(stream) = stream else {
                    return Err(last_err.unwrap_or_else(|| io::ErrorKind::InvalidInput.into()));
                };
                AssocIo::Tcp(TcpIo {
                    stream,
                    rtf: RtfConnection::connector(channel, rtf_config(&self.config), now_us),
                    connecting: true,
                    next_addrs: rest,
                    out: VecDeque::new(),
                    front_off: 0,
                    write_shut: false,
                    peer_eof: false,
                })
            }
            TransportKind::Sctp => AssocIo::Sctp(SctpIo {
                sock: Async::new_nonblocking(match self.sctp_source(channel) {
                    // If the shared port cannot be used (an association between the same
                    // two endpoints still closing), connect from an ephemeral port: the
                    // association works, only a takeover cannot reach it there.
                    Some(local) => SctpSocket::connect_from(local, addrs, &self.config.sctp)
                        .or_else(|_| SctpSocket::connect(addrs, &self.config.sctp))?,
                    None => SctpSocket::connect(addrs, &self.config.sctp)?,
                })?,
                connecting: true,
                out: VecDeque::new(),
                reasm: BytesMut::new(),
                discard: false,
                sndbuf: 0,
                write_shut: false,
            }),
        };
        let assoc = Assoc {
            id,
            attached: true,
            announced: false,
            outbound: true,
            listener: None,
            channel: Some(channel),
            queued: 0,
            linger_until: None,
            write_error: None,
            scheduled: None,
            io,
        };
        let idx = self.alloc(Slot::Assoc(Box::new(assoc)));
        self.assocs.insert(id, idx);
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
        let cap = self.config.max_queued_bytes;
        let max = self.config.max_message_len;
        let now_us = self.us(Instant::now());
        let idx = *self.assocs.get(&assoc).ok_or(SendError::UnknownAssoc)?;
        let a = self.assoc_mut(idx).ok_or(SendError::UnknownAssoc)?;
        if !a.attached || a.linger_until.is_some() || a.write_error.is_some() {
            return Err(SendError::Closed);
        }
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        if a.queued > 0 && a.queued.saturating_add(payload.len()) > cap {
            return Err(SendError::QueueFull {
                queued: a.queued,
                cap,
            });
        }
        a.enqueue(now_us, ppid, stream, payload)?;
        self.mark_dirty(idx);
        Ok(())
    }

    /// Bytes queued on `assoc` and not yet accepted by its socket (RTF framing included).
    pub fn queued_bytes(&self, assoc: AssocId) -> Option<usize> {
        self.assoc_ref(assoc).ok().map(|a| a.queued)
    }

    /// Closes `assoc`. Graceful: the queued messages are still written, then SCTP SHUTDOWN /
    /// TCP FIN, and the socket closes when the peer has finished (or after
    /// [`TransportConfig::close_linger`], then as an abort). Abort: SCTP ABORT / TCP RST now,
    /// queued data discarded. Either way the id is released at once and no event names it
    /// again. Returns false for an unknown id.
    pub fn close(&mut self, assoc: AssocId, abort: bool) -> bool {
        let Some(idx) = self.assocs.remove(&assoc) else {
            return false;
        };
        let now_us = self.us(Instant::now());
        let linger = self.config.close_linger;
        let Some(a) = self.assoc_mut(idx) else {
            return false;
        };
        if abort || a.connecting() || a.write_error.is_some() {
            self.remove(idx, abort);
            return true;
        }
        a.begin_close(now_us, linger);
        self.mark_dirty(idx);
        self.schedule(idx);
        true
    }

    /// Closes every association (see [`Transports::close`]).
    pub fn close_all(&mut self, abort: bool) {
        let ids: Vec<AssocId> = self.assocs.keys().copied().collect();
        for id in ids {
            self.close(id, abort);
        }
    }

    /// The peer's addresses of `assoc` (SCTP: the current `sctp_getpaddrs` list).
    pub fn peer_addrs(&self, assoc: AssocId) -> io::Result<Vec<SocketAddr>> {
        let a = self.assoc_ref(assoc)?;
        match &a.io {
            AssocIo::Tcp(t) => Ok(vec![t.stream.get_ref().peer_addr()?]),
            AssocIo::Sctp(s) => s.sock.get_ref().peer_addrs(),
        }
    }

    /// Our addresses of `assoc`.
    pub fn local_addrs(&self, assoc: AssocId) -> io::Result<Vec<SocketAddr>> {
        let a = self.assoc_ref(assoc)?;
        match &a.io {
            AssocIo::Tcp(t) => Ok(vec![t.stream.get_ref().local_addr()?]),
            AssocIo::Sctp(s) => s.sock.get_ref().local_addrs(),
        }
    }

    /// The transport of `assoc`.
    pub fn kind(&self, assoc: AssocId) -> Option<TransportKind> {
        self.assoc_ref(assoc).ok().map(Assoc::kind)
    }

    /// The bound addresses of a listener or UDP socket (to learn an ephemeral port).
    pub fn socket_local_addrs(&self, socket: SocketId) -> io::Result<Vec<SocketAddr>> {
        let idx = self
            .sockets
            .get(&socket)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown socket"))?;
        match self.entries.get(*idx) {
            Some(Some(e)) => match &e.slot {
                Slot::TcpListener { listener, .. } => Ok(vec![listener.get_ref().local_addr()?]),
                Slot::SctpListener { sock, .. } => sock.get_ref().local_addrs(),
                Slot::Udp(u) => Ok(vec![u.sock.get_ref().local_addr()?]),
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
        let id = SocketId(self.next_id());
        let udp = Udp {
            sock: Async::new_nonblocking(sock)?,
            id,
            queue: UdpQueue::default(),
        };
        let idx = self.alloc(Slot::Udp(Box::new(udp)));
        self.sockets.insert(id, idx);
        Ok(id)
    }

    fn udp_ref(&self, socket: SocketId) -> io::Result<&Udp> {
        let idx = self
            .sockets
            .get(&socket)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown socket"))?;
        match self.entries.get(*idx) {
            Some(Some(Entry {
                slot: Slot::Udp(u), ..
            })) => Ok(u),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "not a UDP socket")),
        }
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
            IpAddr::V4(g) => u.sock.get_ref().join_multicast_v4(&g, &interface_v4),
            IpAddr::V6(g) => u.sock.get_ref().join_multicast_v6(&g, interface_index_v6),
        }
    }

    /// Queues one datagram (unicast or multicast), sent at the next poll; when the socket
    /// buffer is full it waits in the socket's queue (cap
    /// [`TransportConfig::max_udp_queued_bytes`]).
    pub fn udp_send_to(
        &mut self,
        socket: SocketId,
        to: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        let cap = self.config.max_udp_queued_bytes;
        let idx = *self.sockets.get(&socket).ok_or(SendError::UnknownAssoc)?;
        let Some(Some(Entry {
            slot: Slot::Udp(u), ..
        })) = self.entries.get_mut(idx)
        else {
            return Err(SendError::UnknownAssoc);
        };
        u.queue.push(cap, to, data)?;
        self.mark_dirty(idx);
        Ok(())
    }

    // --- polling ------------------------------------------------------------------------------

    /// The next transport event. Drives every socket that is ready (or has something to
    /// write) and the transport timers (RTF heartbeats, dead peers, close lingering); returns
    /// `Pending` with the task registered for the next readiness or timer.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(e);
        }
        {
            let mut l = self.ready.lock();
            if !l.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                l.task = Some(cx.waker().clone());
            }
        }
        let mut dirty = Vec::new();
        let mut ready = Vec::new();
        for _ in 0..ROUNDS_PER_POLL {
            std::mem::swap(&mut dirty, &mut self.dirty);
            std::mem::swap(&mut ready, &mut self.ready.lock().slots);
            let now_us = self.us(Instant::now());
            for idx in dirty.drain(..) {
                self.drive_idx(idx, None, now_us);
            }
            for (idx, generation) in ready.drain(..) {
                self.drive_idx(idx, Some(generation), now_us);
            }
            self.run_timers(now_us);
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(e);
            }
            // Arm the timer for the earliest deadline.
            match self.next_deadline() {
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
            if self.dirty.is_empty() && self.ready.lock().slots.is_empty() {
                return Poll::Pending;
            }
        }
        // Plenty of work and no event for the user: yield to the executor, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Waits for the next transport event (see [`Transports::poll_event`]).
    pub async fn next_event(&mut self) -> TransportEvent {
        futures_lite::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((d, idx, generation))) = self.timers.peek().copied() {
            let live = matches!(
                self.entries.get(idx),
                Some(Some(Entry { generation: g, slot: Slot::Assoc(a), .. }))
                    if *g == generation && a.scheduled == Some(d)
            );
            if live {
                return Some(self.epoch + Duration::from_micros(d));
            }
            self.timers.pop();
        }
        None
    }

    fn run_timers(&mut self, now_us: u64) {
        while let Some(Reverse((d, idx, generation))) = self.timers.peek().copied() {
            if d > now_us {
                break;
            }
            self.timers.pop();
            let Some(Some(entry)) = self.entries.get_mut(idx) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            let waker = entry.task_waker.clone();
            let Slot::Assoc(a) = &mut entry.slot else {
                continue;
            };
            if a.scheduled != Some(d) {
                continue;
            }
            a.scheduled = None;
            let mut cx = Context::from_waker(&waker);
            let mut ctx = Ctx {
                now_us,
                buf: &mut self.buf,
                cfg: &self.config,
                out: &mut self.events,
            };
            let fate = a.timeout(&mut cx, &mut ctx);
            self.settle(idx, fate);
        }
    }

    /// Drives slot `idx` (of `generation`, when woken by its waker).
    fn drive_idx(&mut self, idx: usize, generation: Option<u64>, now_us: u64) {
        let Some(Some(entry)) = self.entries.get_mut(idx) else {
            return;
        };
        if generation.is_some_and(|g| g != entry.generation) {
            return;
        }
        if generation.is_some() {
            // Cleared before driving: a wake-up during the drive queues the slot again.
            entry.waker.queued.store(false, Ordering::Release);
        } else {
            entry.dirty = false;
        }
        let waker = entry.task_waker.clone();
        let mut cx = Context::from_waker(&waker);
        let listener = matches!(
            entry.slot,
            Slot::TcpListener { .. } | Slot::SctpListener { .. }
        );
        let fate = if listener {
            self.accept_all(idx, &mut cx, now_us)
        } else {
            match self.entries.get_mut(idx) {
                Some(Some(Entry {
                    slot: Slot::Udp(u), ..
                })) => {
                    flush_udp(u, &mut cx);
                    recv_udp(u, &mut cx, &mut self.buf, &mut self.events)
                }
                Some(Some(Entry {
                    slot: Slot::Assoc(a),
                    ..
                })) => {
                    let mut ctx = Ctx {
                        now_us,
                        buf: &mut self.buf,
                        cfg: &self.config,
                        out: &mut self.events,
                    };
                    a.drive(&mut cx, &mut ctx)
                }
                _ => Fate::Keep,
            }
        };
        self.settle(idx, fate);
    }

    fn accept_all(&mut self, idx: usize, cx: &mut Context<'_>, now_us: u64) -> Fate {
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                return Fate::Again;
            }
            budget -= 1;
            let Some(Some(entry)) = self.entries.get_mut(idx) else {
                return Fate::Keep;
            };
            let (io, listener, kinds) = match &mut entry.slot {
                Slot::TcpListener {
                    listener,
                    id,
                    kinds,
                } => match listener.get_ref().accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let Ok(stream) = stream
                            .set_nonblocking(true)
                            .and_then(|()| Async::new_nonblocking(stream))
                        else {
                            continue;
                        };
                        (
                            AssocIo::Tcp(TcpIo {
                                stream,
                                rtf: RtfConnection::acceptor(
                                    *kinds,
                                    rtf_config(&self.config),
                                    now_us,
                                ),
                                connecting: false,
                                next_addrs: VecDeque::new(),
                                out: VecDeque::new(),
                                front_off: 0,
                                write_shut: false,
                                peer_eof: false,
                            }),
                            *id,
                            *kinds,
                        )
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match listener.poll_readable(cx) {
                            Poll::Ready(_) => continue,
                            Poll::Pending => return Fate::Keep,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    // EMFILE, ENOBUFS, ...: try again later (a timer would be kinder; the
                    // pending connection keeps the listener readable, so retry at once).
                    Err(_) => return Fate::Again,
                },
                Slot::SctpListener { sock, id, kinds } => {
                    match sock.get_ref().accept(&self.config.sctp) {
                        Ok(Some(s)) => {
                            let Ok(s) = Async::new_nonblocking(s) else {
                                continue;
                            };
                            (
                                AssocIo::Sctp(SctpIo {
                                    sock: s,
                                    connecting: false,
                                    out: VecDeque::new(),
                                    reasm: BytesMut::new(),
                                    discard: false,
                                    sndbuf: 0,
                                    write_shut: false,
                                }),
                                *id,
                                *kinds,
                            )
                        }
                        Ok(None) => match sock.poll_readable(cx) {
                            Poll::Ready(_) => continue,
                            Poll::Pending => return Fate::Keep,
                        },
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return Fate::Again,
                    }
                }
                _ => return Fate::Keep,
            };
            let mut assoc = Assoc {
                id: AssocId(self.next_id()),
                attached: true,
                announced: false,
                outbound: false,
                listener: Some(listener),
                channel: kinds.single(),
                queued: 0,
                linger_until: None,
                write_error: None,
                scheduled: None,
                io,
            };
            if let AssocIo::Sctp(s) = &assoc.io {
                // Accepted SCTP associations are up: report them now.
                let peer = s.sock.get_ref().peer_addrs().unwrap_or_default();
                let local = s.sock.get_ref().local_addrs().unwrap_or_default();
                assoc.up_event(peer, local, &mut self.events);
            }
            let id = assoc.id;
            let new_idx = self.alloc(Slot::Assoc(Box::new(assoc)));
            self.assocs.insert(id, new_idx);
        }
    }
}
