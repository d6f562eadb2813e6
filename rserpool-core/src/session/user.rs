//! The pool user's session to a pool ([`PoolUserSession`]): RSPLIB's enhanced-mode PU socket
//! (`rsp_connect`, `rsp_sendmsg`, `rsp_recvmsg`, `rsp_forcefailover`, `rsp_has_cookie`),
//! with failover done by the machine itself.
//!
//! # Life of a session
//! 1. [`PoolUserSession::connect`] resolves the pool handle with the embedded
//!    [`PoolUser`] (so the cache, its stale cache value, suspects and the registrar hunt are
//!    the pool user's) and picks one PE of the answer (see *Choosing a PE*).
//! 2. It asks the driver to open a session association to the PE's user transport
//!    ([`Output::Connect`] with the PE's protocol — SCTP or TCP — its addresses and port, and
//!    [`ChannelKind::Session`]) and waits at most
//!    [`PoolUserSessionConfig::connect_timeout`] (RSPLIB 5 s).
//! 3. Up: [`SessionEvent::Connected`]; data flows both ways ([`PoolUserSession::send`],
//!    [`SessionEvent::Data`]). Every ASAP_COOKIE from the PE replaces the stored cookie
//!    ([`SessionEvent::CookieReceived`]); an ASAP_BUSINESS_CARD for the session's pool sets the
//!    preferred failover order.
//!
//! # Failover
//! Triggers: the association is lost or shut down; **no answer**: data outstanding and
//! nothing received from the PE for [`PoolUserSessionConfig::response_timeout`] (a hung PE,
//! whatever the application protocol — RSPLIB clients without their own keep-alive never
//! notice one); the application ([`PoolUserSession::force_failover`]).
//! The machine does all of it in the same call, without waiting: the old association is
//! aborted (unless already gone), [`SessionEvent::FailoverStarted`] is emitted, the PE is
//! reported unreachable to the registrar (ASAP_ENDPOINT_UNREACHABLE via the pool user; for a
//! forced failover only if asked), the pool is resolved again and the next PE connected.
//! Once the new association is up, the machine transmits, in this order and before anything
//! else: the stored cookie in an ASAP_COOKIE_ECHO, the **replayed** messages (see
//! [`ReplayPolicy`]), then the messages the application sent during the failover; then
//! [`SessionEvent::FailoverComplete`]. RSPLIB leaves the failover to the application and
//! loses the message in flight; here nothing the application sent is lost.
//!
//! A connection attempt that fails or times out reports that PE unreachable too (as RSPLIB
//! does) and the next PE is tried at once. A resolution that finds no PE (pool empty or
//! unknown, only suspects, no registrar) is retried after
//! [`PoolUserSessionConfig::retry_delay`] (RSPLIB HandleResolutionRetryDelay, 250 ms),
//! doubling per consecutive failure up to [`PoolUserSessionConfig::retry_delay_max`]. After
//! [`PoolUserSessionConfig::max_attempts`] consecutive failed attempts (if set) the session
//! fails ([`SessionEvent::Failed`]); [`PoolUserSession::force_failover`] starts it again.
//!
//! # Choosing a PE
//! A PE this session lost, timed out on, could not connect to or reported is **not chosen**
//! for [`PoolUserSessionConfig::avoid_time`]; on top of that the pool user does not return a
//! reported PE while it is suspect (RSPLIB went back to dead PEs:
//! `shared/design/rsplib-measured.md` defects 4, 5). The one exception is the last resort:
//! when, one retry delay after a failure, every usable PE the registrar names is still one
//! of those, the session forgets that once and takes one of them (the registrar verifies
//! reported PEs, so one it still names is alive: a PE that ended a session on purpose, or a
//! pool whose every PE failed once); if that fails too, it waits with the usual backoff.
//! A PE left by a forced failover without a report is only avoided while another one is
//! available. To have alternatives at hand,
//! the resolution asks for one PE plus one per avoided PE plus the business card's PEs (at
//! most 16). Among the usable PEs of the answer (user transport protocol in
//! [`PoolUserSessionConfig::transports`], with a port and an address), the first one named
//! by the business card wins, else the first in policy order.
//!
//! # Standby list
//! With [`PoolUserSessionConfig::standby_refresh`] set, a connected session asks the
//! registrar for the pool's PEs right after it is up and then every that long, and keeps the
//! answer: a failover then connects to the next PE of that list at once, in the same call,
//! without waiting for a resolution (RSPLIB's tools resolve at every failover; so does this
//! machine by default). The list is used while it is at most twice the refresh interval old
//! and names a PE this session does not avoid; a PE on it that has gone meanwhile shows as a
//! failed connect, after which the session resolves as usual. A refresh still outstanding
//! when the failover starts becomes the failover's resolution.
//!
//! # Association ids
//! Session associations carry machine-chosen ids with bit 62 set as well (the pool user's
//! registrar hunt allocates from the same machine range without bit 62), so events are routed
//! by id alone: session ids here, everything else to the pool user. Events for a session
//! association the machine already left (closed or replaced) are ignored.

use bytes::Bytes;
use core::net::SocketAddr;
use core::time::Duration;
use smallvec::SmallVec;
use std::collections::VecDeque;

use rserpool_proto::AsapMessage;
use rserpool_proto::asap::CookieEcho;
use rserpool_proto::ids::{PeIdentifier, PoolHandle};
use rserpool_proto::transport::TransportProtocol;

use super::{PPID_CONTROL, SendError};
use crate::io::{AssocDownReason, AssocIdAllocator, ChannelKind, Machine, Output, Transmit};
use crate::pool_user::{
    PoolUser, PoolUserConfig, PoolUserEvent, RequestId, ResolutionFailure, ResolvedElement,
};
use crate::{AssocId, Instant};

/// Bit 62: marks the session associations among the machine-chosen ids.
const SESSION_BIT: u64 = 1 << 62;
/// Most PEs a failover resolution asks for.
const MAX_RESOLVE_ITEMS: usize = 16;
/// Shortest retry delay (a zero delay would spin on a failing cache).
const MIN_RETRY_DELAY: Duration = Duration::from_millis(1);
/// Most PEs remembered as failed per session.
const MAX_AVOID: usize = 8;

/// True for association ids chosen by a [`PoolUserSession`] for its sessions.
fn is_session_assoc(assoc: AssocId) -> bool {
    let mask = AssocIdAllocator::MACHINE_BIT | SESSION_BIT;
    assoc.0 & mask == mask
}

/// Which messages a [`PoolUserSession`] keeps to send again to the PE it fails over to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ReplayPolicy {
    /// Nothing is replayed (RSPLIB).
    None,
    /// Messages sent since the last data message received from the PE (default): for
    /// request/response protocols with one request in flight, such as `rspterminal`'s
    /// lines, exactly the unanswered request.
    #[default]
    UnansweredSinceLastReceive,
    /// Messages sent since the last ASAP_COOKIE received: the cookie is the checkpoint the
    /// new PE restores, everything after it is sent again.
    SinceLastCookie,
    /// Messages sent and not yet acknowledged by the application with
    /// [`PoolUserSession::acknowledge`] (pipelined protocols that know which requests were
    /// answered).
    UntilAcknowledged,
}

/// Bounds of a message queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueLimit {
    /// Most messages.
    pub messages: usize,
    /// Most payload bytes.
    pub bytes: usize,
}

impl Default for QueueLimit {
    /// 4096 messages, 4 MiB.
    fn default() -> Self {
        QueueLimit {
            messages: 4096,
            bytes: 4 << 20,
        }
    }
}

/// Configuration of a [`PoolUserSession`]. Defaults are RSPLIB's where RSPLIB has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUserSessionConfig {
    /// The embedded pool user: registrars, request timeout, **stale cache value** (RSPLIB
    /// tools use 0: every failover asks the registrar), suspect time.
    pub pool_user: PoolUserConfig,
    /// How long a session association may take to come up (RSPLIB 5 s).
    pub connect_timeout: Duration,
    /// Data outstanding and nothing received from the PE for this long ⇒ failover, with the
    /// PE reported unreachable. `None` disables the check (a client of a service that never
    /// answers, such as discard, must disable it). Default 5 s (CalcApp's keep-alive).
    pub response_timeout: Option<Duration>,
    /// What is replayed after a failover.
    pub replay: ReplayPolicy,
    /// Bound of the replay buffer (the oldest messages are dropped from it when full — they
    /// will not be replayed) and of the queue of messages sent during a failover (further
    /// sends fail with [`SendError::QueueFull`]).
    pub queue_limit: QueueLimit,
    /// Wait after a resolution that found no PE (RSPLIB HandleResolutionRetryDelay, 250 ms;
    /// at least 1 ms).
    pub retry_delay: Duration,
    /// The retry delay doubles per consecutive failure up to this (default 4 s).
    pub retry_delay_max: Duration,
    /// Consecutive failed attempts (resolutions without a usable PE, failed or timed-out
    /// connects) after which the session fails; `None` (default) keeps trying.
    pub max_attempts: Option<u32>,
    /// How long a PE this session found dead is excluded from selection (default 10 s).
    pub avoid_time: Duration,
    /// User transports this session can connect over, SCTP and TCP by default (a driver
    /// maps SCTP onto the TCP mapping where the kernel has no SCTP).
    pub transports: SmallVec<[TransportProtocol; 2]>,
    /// A PE that shuts the session down gracefully is reported unreachable and avoided like
    /// a lost one (default). A killed PE's kernel shuts its associations down gracefully too
    /// (SCTP SHUTDOWN, TCP FIN), so the two cannot be told apart. `false` treats a shutdown
    /// like a forced failover without report: the PE is avoided only while another one is
    /// available — for services whose PEs end sessions themselves (Daytime: one line per
    /// session; RSPLIB's `rspterminal` never reports a PE).
    pub report_shutdown: bool,
    /// While connected, refresh the standby list every this long (see *Standby list* in the
    /// module documentation): a failover needs no resolution round trip. `None` (default,
    /// RSPLIB's behaviour): every failover asks the registrar (or the cache).
    pub standby_refresh: Option<Duration>,
}

impl Default for PoolUserSessionConfig {
    fn default() -> Self {
        PoolUserSessionConfig {
            pool_user: PoolUserConfig::default(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Some(Duration::from_secs(5)),
            replay: ReplayPolicy::default(),
            queue_limit: QueueLimit::default(),
            retry_delay: Duration::from_millis(250),
            retry_delay_max: Duration::from_secs(4),
            max_attempts: None,
            avoid_time: Duration::from_secs(10),
            transports: SmallVec::from_slice(&[TransportProtocol::Sctp, TransportProtocol::Tcp]),
            report_shutdown: true,
            standby_refresh: None,
        }
    }
}

/// Why a session left its PE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailoverReason {
    /// The association was aborted or the transport declared the PE dead.
    AssociationLost,
    /// The PE shut the association down.
    Shutdown,
    /// Data was outstanding and the PE sent nothing for the response timeout.
    ResponseTimeout,
    /// [`PoolUserSession::force_failover`].
    Forced,
}

/// Why a session attempt failed ([`SessionEvent::Failed`] carries the last one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionFailure {
    /// The resolution found no PE.
    Resolution(ResolutionFailure),
    /// Every PE named was one this session must avoid.
    OnlyAvoidedPes,
    /// The PEs named offer only a user transport this session cannot use.
    UnsupportedTransport(TransportProtocol),
    /// The connection attempt to the chosen PE failed.
    ConnectFailed,
    /// The connection attempt did not succeed within the connect timeout.
    ConnectTimeout,
}

/// Events of a [`PoolUserSession`] for its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session reached its first PE.
    Connected {
        /// The PE.
        pe_id: PeIdentifier,
    },
    /// A data message from the PE.
    Data {
        /// Its PPID.
        ppid: u32,
        /// The message.
        data: Bytes,
    },
    /// The session left its PE and looks for another.
    FailoverStarted {
        /// The PE left.
        pe_id: PeIdentifier,
        /// Why.
        reason: FailoverReason,
    },
    /// The session is on a new PE; cookie echo and replay have been transmitted.
    FailoverComplete {
        /// The new PE.
        pe_id: PeIdentifier,
        /// True if a cookie was echoed.
        has_cookie: bool,
        /// Messages sent again.
        replayed: usize,
    },
    /// The PE sent a cookie; it replaced the stored one ([`PoolUserSession::cookie`]).
    CookieReceived,
    /// The session gave up ([`PoolUserSessionConfig::max_attempts`]).
    Failed {
        /// The last attempt's failure.
        cause: SessionFailure,
    },
    /// [`PoolUserSession::close`] closed the session.
    Closed,
}

/// Where a [`PoolUserSession`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Never connected.
    Idle,
    /// Waiting for a handle resolution.
    Resolving,
    /// Waiting to resolve again after a failed resolution.
    WaitingToRetry,
    /// Waiting for the session association to come up.
    Connecting,
    /// On a PE.
    Connected,
    /// Gave up (see [`SessionEvent::Failed`]).
    Failed,
    /// Closed by the application.
    Closed,
}

#[derive(Clone, Debug)]
enum State {
    Idle,
    Resolving {
        request: RequestId,
    },
    Waiting {
        until: Instant,
    },
    Connecting {
        assoc: AssocId,
        pe: PeIdentifier,
        deadline: Instant,
    },
    Connected {
        assoc: AssocId,
        pe: PeIdentifier,
    },
    Failed,
    Closed,
}

#[derive(Clone, Debug)]
struct Message {
    ppid: u32,
    data: Bytes,
}

#[derive(Clone, Debug, Default)]
struct Queue {
    msgs: VecDeque<Message>,
    bytes: usize,
}

impl Queue {
    fn fits(&self, limit: QueueLimit, len: usize) -> bool {
        self.msgs.len() < limit.messages && self.bytes.saturating_add(len) <= limit.bytes
    }

    fn push(&mut self, m: Message) {
        self.bytes += m.data.len();
        self.msgs.push_back(m);
    }

    fn pop(&mut self) -> Option<Message> {
        let m = self.msgs.pop_front()?;
        self.bytes -= m.data.len();
        Some(m)
    }

    fn clear(&mut self) {
        self.msgs.clear();
        self.bytes = 0;
    }
}

#[derive(Clone, Copy, Debug)]
struct Avoid {
    pe: PeIdentifier,
    until: Instant,
    /// Found dead (not just left by a forced failover without report).
    hard: bool,
}

/// The pool user session machine. See the [module documentation](self).
pub struct PoolUserSession<R> {
    config: PoolUserSessionConfig,
    pu: PoolUser<R>,
    handle: Option<PoolHandle>,
    state: State,
    next_assoc: u64,
    cookie: Option<Bytes>,
    card: Vec<PeIdentifier>,
    avoid: SmallVec<[Avoid; 4]>,
    replay: Queue,
    replay_dropped: u64,
    pending: Queue,
    last_rx: Instant,
    unanswered_since: Option<Instant>,
    /// PPID of the last data message handed to a PE (for status reports).
    last_data_ppid: u32,
    ever_connected: bool,
    failed_attempts: u32,
    backoff: u32,
    standby: Standby,
    out: VecDeque<Output<SessionEvent>>,
}

/// The standby list: the last answer of a refresh while connected.
#[derive(Debug, Default)]
struct Standby {
    elements: Vec<ResolvedElement>,
    /// When it was answered.
    at: Option<Instant>,
    /// A refresh on its way.
    request: Option<RequestId>,
    /// The next refresh (while connected).
    next: Option<Instant>,
}

impl<R> core::fmt::Debug for PoolUserSession<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PoolUserSession")
            .field("handle", &self.handle)
            .field("state", &self.state)
            .field("has_cookie", &self.cookie.is_some())
            .field("replay", &self.replay.msgs.len())
            .field("pending", &self.pending.msgs.len())
            .field("avoid", &self.avoid)
            .finish_non_exhaustive()
    }
}

impl<R: rand_core::Rng> PoolUserSession<R> {
    /// An idle session with its own pool user (built from `config.pool_user` and `rng`).
    pub fn new(config: PoolUserSessionConfig, rng: R) -> PoolUserSession<R> {
        let pu = PoolUser::new(config.pool_user.clone(), rng);
        PoolUserSession {
            config,
            pu,
            handle: None,
            state: State::Idle,
            next_assoc: 0,
            cookie: None,
            card: Vec::new(),
            avoid: SmallVec::new(),
            replay: Queue::default(),
            replay_dropped: 0,
            pending: Queue::default(),
            last_rx: Instant::ZERO,
            unanswered_since: None,
            last_data_ppid: 0,
            ever_connected: false,
            failed_attempts: 0,
            backoff: 0,
            standby: Standby::default(),
            out: VecDeque::new(),
        }
    }

    // ------------------------------------------------------------------------------------
    // getters

    /// The configuration.
    pub fn config(&self) -> &PoolUserSessionConfig {
        &self.config
    }

    /// The embedded pool user (cache, suspects, registrar).
    pub fn pool_user(&self) -> &PoolUser<R> {
        &self.pu
    }

    /// The pool this session is for.
    pub fn pool_handle(&self) -> Option<&PoolHandle> {
        self.handle.as_ref()
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        match self.state {
            State::Idle => SessionState::Idle,
            State::Resolving { .. } => SessionState::Resolving,
            State::Waiting { .. } => SessionState::WaitingToRetry,
            State::Connecting { .. } => SessionState::Connecting,
            State::Connected { .. } => SessionState::Connected,
            State::Failed => SessionState::Failed,
            State::Closed => SessionState::Closed,
        }
    }

    /// The PE the session is on (or connecting to).
    pub fn pe_id(&self) -> Option<PeIdentifier> {
        match self.state {
            State::Connecting { pe, .. } | State::Connected { pe, .. } => Some(pe),
            _ => None,
        }
    }

    /// The PPID of the last data message sent to a PE (0 before the first): what RSPLIB's
    /// component status reports for the session's association.
    pub fn last_data_ppid(&self) -> u32 {
        self.last_data_ppid
    }

    /// The session association (up or being set up).
    pub fn association(&self) -> Option<AssocId> {
        match self.state {
            State::Connecting { assoc, .. } | State::Connected { assoc, .. } => Some(assoc),
            _ => None,
        }
    }

    /// True if a cookie is stored (RSPLIB `rsp_has_cookie`).
    pub fn has_cookie(&self) -> bool {
        self.cookie.is_some()
    }

    /// The stored cookie (the payload of the last ASAP_COOKIE's Cookie parameter).
    pub fn cookie(&self) -> Option<&Bytes> {
        self.cookie.as_ref()
    }

    /// The preferred failover order from the last business card.
    pub fn business_card(&self) -> &[PeIdentifier] {
        &self.card
    }

    /// Messages kept for replay.
    pub fn replay_len(&self) -> usize {
        self.replay.msgs.len()
    }

    /// Messages dropped from the full replay buffer so far.
    pub fn replay_dropped(&self) -> u64 {
        self.replay_dropped
    }

    /// Messages sent while no PE was connected, waiting for the next one.
    pub fn pending_len(&self) -> usize {
        self.pending.msgs.len()
    }

    // ------------------------------------------------------------------------------------
    // commands

    /// Opens the session to `pool_handle` (RSPLIB `rsp_connect`). A session already open is
    /// closed first; cookie, buffers and failover memory start empty.
    pub fn connect(&mut self, now: Instant, pool_handle: PoolHandle) {
        self.leave_association(false);
        self.reset();
        self.handle = Some(pool_handle);
        self.resolve(now);
    }

    /// Sends a data message (stream 0). While the session fails over, the message is queued
    /// and sent right after the cookie echo and the replay. Fails for PPID 11, without a
    /// session (idle, failed, closed) or when the queue is full.
    pub fn send(&mut self, now: Instant, ppid: u32, data: Bytes) -> Result<(), SendError> {
        if ppid == PPID_CONTROL {
            return Err(SendError::ControlPpid);
        }
        match self.state {
            State::Idle | State::Failed | State::Closed => Err(SendError::NoSession),
            State::Connected { assoc, .. } => {
                self.transmit_data(now, assoc, Message { ppid, data });
                Ok(())
            }
            State::Resolving { .. } | State::Waiting { .. } | State::Connecting { .. } => {
                if !self.pending.fits(self.config.queue_limit, data.len()) {
                    return Err(SendError::QueueFull);
                }
                self.pending.push(Message { ppid, data });
                Ok(())
            }
        }
    }

    /// With [`ReplayPolicy::UntilAcknowledged`]: the `count` oldest messages kept for replay
    /// were answered and need not be replayed. Returns how many were dropped.
    pub fn acknowledge(&mut self, count: usize) -> usize {
        let mut n = 0;
        while n < count && self.replay.pop().is_some() {
            n += 1;
        }
        n
    }

    /// Moves the session to another PE now (RSPLIB `rsp_forcefailover`), reporting the
    /// current one unreachable if `report_unreachable` (`FFF_UNREACHABLE`). Also restarts a
    /// failed session, or a waiting one at once. Returns false for an idle or closed
    /// session.
    pub fn force_failover(&mut self, now: Instant, report_unreachable: bool) -> bool {
        match self.state {
            State::Idle | State::Closed => false,
            State::Connected { assoc, pe } => {
                self.fail_over(
                    now,
                    assoc,
                    pe,
                    FailoverReason::Forced,
                    true,
                    report_unreachable,
                );
                true
            }
            State::Connecting { assoc, pe, .. } => {
                self.out.push_back(Output::Close { assoc, abort: true });
                self.left_pe(now, pe, report_unreachable);
                self.resolve(now);
                true
            }
            State::Failed => {
                self.failed_attempts = 0;
                self.backoff = 0;
                self.resolve(now);
                true
            }
            State::Resolving { .. } | State::Waiting { .. } => {
                self.resolve(now);
                true
            }
        }
    }

    /// Closes the session (graceful shutdown of the association) and drops cookie and
    /// queues: [`SessionEvent::Closed`].
    pub fn close(&mut self, _now: Instant) {
        if matches!(self.state, State::Idle | State::Closed) {
            return;
        }
        self.leave_association(false);
        self.reset();
        self.state = State::Closed;
        self.event(SessionEvent::Closed);
    }

    /// Changes the pool user's stale cache value for later answers.
    pub fn set_stale_cache_value(&mut self, stale_cache_value: Duration) {
        self.pu.set_stale_cache_value(stale_cache_value);
    }

    // ------------------------------------------------------------------------------------
    // internals

    fn event(&mut self, e: SessionEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.cookie = None;
        self.card.clear();
        self.avoid.clear();
        self.replay.clear();
        self.pending.clear();
        self.unanswered_since = None;
        self.ever_connected = false;
        self.failed_attempts = 0;
        self.backoff = 0;
        self.standby = Standby::default();
    }

    /// Closes the current association (abort while connecting).
    fn leave_association(&mut self, abort: bool) {
        match self.state {
            State::Connected { assoc, .. } => self.out.push_back(Output::Close { assoc, abort }),
            State::Connecting { assoc, .. } => {
                self.out.push_back(Output::Close { assoc, abort: true })
            }
            _ => {}
        }
    }

    fn allocate(&mut self) -> AssocId {
        self.next_assoc = self.next_assoc.wrapping_add(1);
        AssocId(
            AssocIdAllocator::MACHINE_BIT
                | SESSION_BIT
                | (self.next_assoc & !(AssocIdAllocator::MACHINE_BIT | SESSION_BIT)),
        )
    }

    fn transmit(&mut self, assoc: AssocId, ppid: u32, payload: Bytes) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: crate::io::Destination::Assoc(assoc),
            ppid,
            stream: 0,
            payload,
        }));
    }

    /// Sends a data message on the association and keeps it as the replay policy says.
    fn transmit_data(&mut self, now: Instant, assoc: AssocId, m: Message) {
        self.last_data_ppid = m.ppid;
        self.transmit(assoc, m.ppid, m.data.clone());
        self.unanswered_since.get_or_insert(now);
        if self.config.replay == ReplayPolicy::None {
            return;
        }
        let limit = self.config.queue_limit;
        while !self.replay.fits(limit, m.data.len()) && self.replay.pop().is_some() {
            self.replay_dropped += 1;
        }
        if self.replay.fits(limit, m.data.len()) {
            self.replay.push(m);
        } else {
            self.replay_dropped += 1;
        }
    }

    /// Drains the pool user's outputs into ours, acting on its events.
    fn pump(&mut self, now: Instant) {
        while let Some(o) = self.pu.poll_output() {
            match o {
                Output::Event(e) => self.on_resolution(now, e),
                Output::Transmit(t) => self.out.push_back(Output::Transmit(t)),
                Output::Connect {
                    assoc,
                    addrs,
                    transport,
                    channel,
                } => self.out.push_back(Output::Connect {
                    assoc,
                    addrs,
                    transport,
                    channel,
                }),
                Output::Close { assoc, abort } => {
                    self.out.push_back(Output::Close { assoc, abort })
                }
            }
        }
    }

    fn purge_avoid(&mut self, now: Instant) {
        self.avoid.retain(|a| a.until > now);
    }

    /// The session can connect to `e`: a user transport it speaks, with a port and an
    /// address.
    fn is_usable(&self, e: &ResolvedElement) -> bool {
        let t = &e.user_transport;
        self.config.transports.contains(&t.protocol) && t.port != 0 && !t.addresses.is_empty()
    }

    fn is_avoided(&self, pe: PeIdentifier, hard: bool) -> bool {
        self.avoid.iter().any(|a| a.pe == pe && (a.hard || !hard))
    }

    /// Resolves the pool again (the session is between PEs).
    fn resolve(&mut self, now: Instant) {
        let Some(handle) = self.handle.clone() else {
            self.state = State::Idle;
            return;
        };
        self.purge_avoid(now);
        self.standby.next = None;
        if let Some(request) = self.standby.request.take() {
            // A refresh is on its way: its answer is this resolution's.
            self.state = State::Resolving { request };
            return;
        }
        let items = (1 + self.avoid.len() + self.card.len()).min(MAX_RESOLVE_ITEMS);
        let request = self
            .pu
            .resolve(now, handle, u32::try_from(items).unwrap_or(1));
        self.state = State::Resolving { request };
        self.pump(now);
    }

    /// Asks for the standby list (connected, refresh due).
    fn refresh_standby(&mut self, now: Instant, every: Duration) {
        self.standby.next = Some(now + every);
        if self.standby.request.is_some() {
            return;
        }
        let Some(handle) = self.handle.clone() else {
            return;
        };
        self.purge_avoid(now);
        // The serving PE, one more, and room for the avoided and business-card PEs.
        let items = (2 + self.avoid.len() + self.card.len()).min(MAX_RESOLVE_ITEMS);
        let request = self
            .pu
            .resolve(now, handle, u32::try_from(items).unwrap_or(2));
        self.standby.request = Some(request);
        self.pump(now);
    }

    /// A failover with a fresh standby list naming a PE not avoided: connects to it now.
    fn fail_over_from_standby(&mut self, now: Instant) -> bool {
        let (Some(every), Some(at)) = (self.config.standby_refresh, self.standby.at) else {
            return false;
        };
        if now.saturating_duration_since(at) > every * 2 {
            return false;
        }
        self.purge_avoid(now);
        let any = self
            .standby
            .elements
            .iter()
            .any(|e| self.is_usable(e) && !self.is_avoided(e.pe_id, false));
        if !any {
            return false;
        }
        let elements = core::mem::take(&mut self.standby.elements);
        self.standby.at = None;
        self.choose(now, &elements);
        true
    }

    fn on_resolution(&mut self, now: Instant, e: PoolUserEvent) {
        if let Some(refresh) = self.standby.request {
            match &e {
                PoolUserEvent::Resolved {
                    request, elements, ..
                } if *request == refresh => {
                    self.standby.request = None;
                    self.standby.elements = elements.clone();
                    self.standby.at = Some(now);
                    return;
                }
                PoolUserEvent::ResolutionFailed { request, .. } if *request == refresh => {
                    self.standby.request = None;
                    return;
                }
                _ => {}
            }
        }
        let State::Resolving { request } = self.state else {
            return;
        };
        match e {
            PoolUserEvent::Resolved {
                request: r,
                elements,
                ..
            } if r == request => self.choose(now, &elements),
            PoolUserEvent::ResolutionFailed {
                request: r, cause, ..
            } if r == request => {
                if cause == ResolutionFailure::OnlySuspects && self.last_resort() {
                    self.resolve(now);
                } else {
                    self.attempt_failed(now, SessionFailure::Resolution(cause), true);
                }
            }
            _ => {}
        }
    }

    /// Picks a PE from a resolution's answer and connects to it.
    fn choose(&mut self, now: Instant, elements: &[ResolvedElement]) {
        let mut unsupported = None;
        let mut usable = 0usize;
        let mut hard_ok: SmallVec<[&ResolvedElement; 4]> = SmallVec::new();
        for e in elements {
            if !self.is_usable(e) {
                unsupported.get_or_insert(e.user_transport.protocol);
                continue;
            }
            usable += 1;
            if !self.is_avoided(e.pe_id, true) {
                hard_ok.push(e);
            }
        }
        let preferred: SmallVec<[&ResolvedElement; 4]> = hard_ok
            .iter()
            .copied()
            .filter(|e| !self.is_avoided(e.pe_id, false))
            .collect();
        let pick = if preferred.is_empty() {
            hard_ok.first().copied()
        } else {
            self.card
                .iter()
                .find_map(|id| preferred.iter().find(|e| e.pe_id == *id))
                .or(preferred.first())
                .copied()
        };
        match pick {
            Some(e) => {
                let pe = e.pe_id;
                let port = e.user_transport.port;
                let addrs = e
                    .user_transport
                    .addresses
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect();
                let transport = e.user_transport.protocol;
                let assoc = self.allocate();
                self.out.push_back(Output::Connect {
                    assoc,
                    addrs,
                    transport,
                    channel: ChannelKind::Session,
                });
                self.state = State::Connecting {
                    assoc,
                    pe,
                    deadline: now + self.config.connect_timeout,
                };
            }
            None if usable > 0 && self.last_resort() => {
                // Every usable PE named is one this session found dead: try them again.
                self.choose(now, elements);
            }
            None => {
                let cause = match unsupported {
                    Some(p) if elements.iter().all(|e| e.user_transport.protocol == p) => {
                        SessionFailure::UnsupportedTransport(p)
                    }
                    _ => SessionFailure::OnlyAvoidedPes,
                };
                self.attempt_failed(now, cause, true);
            }
        }
    }

    /// One attempt failed: give up, wait, or try the next PE at once.
    fn attempt_failed(&mut self, now: Instant, cause: SessionFailure, wait: bool) {
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        if self
            .config
            .max_attempts
            .is_some_and(|max| self.failed_attempts >= max)
        {
            self.state = State::Failed;
            self.event(SessionEvent::Failed { cause });
            return;
        }
        if wait {
            let factor = 1u32 << self.backoff.min(16);
            let delay = self
                .config
                .retry_delay
                .saturating_mul(factor)
                .min(self.config.retry_delay_max.max(self.config.retry_delay))
                .max(MIN_RETRY_DELAY);
            self.backoff = self.backoff.saturating_add(1);
            self.state = State::Waiting { until: now + delay };
        } else {
            self.resolve(now);
        }
    }

    /// The last resort when every PE the registrar names is one this session (or its pool
    /// user) found dead, and still so after one retry delay: forget that, once per run of
    /// failures, so the next choice may take one of them again rather than wait longer. Right
    /// after a failure the registrar may still name a PE that just died (rsplib-measured.md
    /// defect 4), so the first answer only makes the session wait; the registrar verifies
    /// reported PEs, so one it still names a retry delay later is alive: a PE that ended a
    /// session on purpose (CalcApp's failure tester), or a pool whose every PE failed once.
    /// Returns false except on the first retry after a wait; the next failure then waits
    /// with the usual backoff.
    fn last_resort(&mut self) -> bool {
        if self.backoff != 1 {
            return false;
        }
        self.backoff = 2;
        if let Some(h) = self.handle.as_ref() {
            self.pu.forget_suspects(h);
        }
        for a in &mut self.avoid {
            a.hard = false;
        }
        true
    }

    /// Remembers a PE left (and reports it if asked).
    fn left_pe(&mut self, now: Instant, pe: PeIdentifier, report: bool) {
        if report && let Some(h) = self.handle.clone() {
            self.pu.report_unreachable(now, h, pe);
            self.pump(now);
        }
        self.avoid.retain(|a| a.pe != pe);
        if self.avoid.len() >= MAX_AVOID {
            self.avoid.remove(0);
        }
        self.avoid.push(Avoid {
            pe,
            until: now + self.config.avoid_time,
            hard: report,
        });
    }

    /// Leaves the connected PE and looks for the next one, all in this call.
    fn fail_over(
        &mut self,
        now: Instant,
        assoc: AssocId,
        pe: PeIdentifier,
        reason: FailoverReason,
        close: bool,
        report: bool,
    ) {
        self.event(SessionEvent::FailoverStarted { pe_id: pe, reason });
        if close {
            self.out.push_back(Output::Close { assoc, abort: true });
        }
        self.unanswered_since = None;
        self.left_pe(now, pe, report);
        if !self.fail_over_from_standby(now) {
            self.resolve(now);
        }
    }

    /// A connection attempt failed or timed out: report the PE, try the next one.
    fn connect_failed(&mut self, now: Instant, pe: PeIdentifier, cause: SessionFailure) {
        self.left_pe(now, pe, true);
        self.attempt_failed(now, cause, false);
    }

    fn on_up(&mut self, now: Instant, assoc: AssocId, pe: PeIdentifier) {
        self.state = State::Connected { assoc, pe };
        if self.config.standby_refresh.is_some() {
            // The first refresh right away: the list is current soon after every connect.
            self.standby.next = Some(now);
        }
        self.last_rx = now;
        self.unanswered_since = None;
        self.failed_attempts = 0;
        self.backoff = 0;
        let has_cookie = self.cookie.is_some();
        if let Some(c) = self.cookie.clone() {
            let echo = AsapMessage::from(CookieEcho::new(c)).to_bytes();
            self.transmit(assoc, PPID_CONTROL, echo);
        }
        let replayed = self.replay.msgs.len();
        for i in 0..replayed {
            if let Some(m) = self.replay.msgs.get(i) {
                let (ppid, data) = (m.ppid, m.data.clone());
                self.transmit(assoc, ppid, data);
            }
        }
        if replayed > 0 {
            self.unanswered_since = Some(now);
        }
        while let Some(m) = self.pending.pop() {
            self.transmit_data(now, assoc, m);
        }
        if self.ever_connected {
            self.event(SessionEvent::FailoverComplete {
                pe_id: pe,
                has_cookie,
                replayed,
            });
        } else {
            self.ever_connected = true;
            self.event(SessionEvent::Connected { pe_id: pe });
        }
    }

    fn on_session_message(&mut self, now: Instant, ppid: u32, data: Bytes) {
        self.last_rx = now;
        if ppid != PPID_CONTROL {
            self.unanswered_since = None;
            if self.config.replay == ReplayPolicy::UnansweredSinceLastReceive {
                self.replay.clear();
            }
            self.event(SessionEvent::Data { ppid, data });
            return;
        }
        // Control channel: cookies and business cards; anything else is dropped (RSPLIB).
        match AsapMessage::decode_bytes(&data) {
            Ok(AsapMessage::Cookie(c)) => {
                self.cookie = Some(c.cookie.0);
                if self.config.replay == ReplayPolicy::SinceLastCookie {
                    self.replay.clear();
                }
                self.event(SessionEvent::CookieReceived);
            }
            Ok(AsapMessage::BusinessCard(b)) if self.handle.as_ref() == Some(&b.pool_handle) => {
                self.card = b.pool_elements.iter().map(|p| p.pe_id).collect();
                self.card.truncate(MAX_RESOLVE_ITEMS);
            }
            _ => {}
        }
    }

    fn response_deadline(&self) -> Option<Instant> {
        let t = self.config.response_timeout?;
        let since = self.unanswered_since?;
        Some(since.max(self.last_rx) + t)
    }
}

impl<R: rand_core::Rng> Machine for PoolUserSession<R> {
    type Event = SessionEvent;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        if !is_session_assoc(assoc) {
            self.pu.handle_assoc_up(now, assoc, peer_addrs);
            self.pump(now);
            return;
        }
        match self.state {
            State::Connecting { assoc: a, pe, .. } if a == assoc => self.on_up(now, assoc, pe),
            // An attempt given up meanwhile: make sure it goes away.
            _ => self.out.push_back(Output::Close { assoc, abort: true }),
        }
    }

    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        if !is_session_assoc(assoc) {
            self.pu.handle_assoc_down(now, assoc, reason);
            self.pump(now);
            return;
        }
        match self.state {
            State::Connecting { assoc: a, pe, .. } if a == assoc => {
                self.connect_failed(now, pe, SessionFailure::ConnectFailed);
            }
            State::Connected { assoc: a, pe } if a == assoc => {
                let (why, report) = match reason {
                    AssocDownReason::Shutdown => {
                        (FailoverReason::Shutdown, self.config.report_shutdown)
                    }
                    _ => (FailoverReason::AssociationLost, true),
                };
                self.fail_over(now, assoc, pe, why, false, report);
            }
            _ => {}
        }
    }

    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if !is_session_assoc(assoc) {
            self.pu.handle_message(now, assoc, ppid, data);
            self.pump(now);
            return;
        }
        if matches!(self.state, State::Connected { assoc: a, .. } if a == assoc) {
            self.on_session_message(now, ppid, data);
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.pu.handle_datagram(now, from, ppid, data);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.pu.handle_timeout(now);
        self.pump(now);
        match self.state {
            State::Waiting { until } if until <= now => self.resolve(now),
            State::Connecting {
                assoc,
                pe,
                deadline,
            } if deadline <= now => {
                self.out.push_back(Output::Close { assoc, abort: true });
                self.connect_failed(now, pe, SessionFailure::ConnectTimeout);
            }
            State::Connected { assoc, pe }
                if self.response_deadline().is_some_and(|t| t <= now) =>
            {
                self.fail_over(now, assoc, pe, FailoverReason::ResponseTimeout, true, true);
            }
            State::Connected { .. } => {
                if let (Some(every), Some(next)) = (self.config.standby_refresh, self.standby.next)
                    && next <= now
                {
                    self.refresh_standby(now, every);
                }
            }
            _ => {}
        }
    }

    fn poll_output(&mut self) -> Option<Output<SessionEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let own = match self.state {
            State::Waiting { until } => Some(until),
            State::Connecting { deadline, .. } => Some(deadline),
            State::Connected { .. } => match (self.response_deadline(), self.standby.next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            _ => None,
        };
        match (own, self.pu.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
