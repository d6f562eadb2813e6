//! Pool users: sessions to a pool ([`PoolUser::connect`], [`Session`]) and handle
//! resolution ([`resolve`], [`PoolUser::resolve`]).
//!
//! A [`Session`] runs the core's [`PoolUserSession`] machine in a driver task of its own
//! ([`Spawner`]): it resolves the pool, connects to one PE, and **fails over by itself** when
//! that PE dies, hangs or shuts the session down — cookie echo and replay of unanswered
//! messages included (see [`rserpool_core::session::user`]). The application sees a byte
//! stream ([`futures_lite::AsyncRead`] / [`futures_lite::AsyncWrite`]: every write is one
//! message with [`PoolUserConfig::ppid`], reads concatenate the payloads) or messages
//! ([`Session::send_msg`] / [`Session::recv_msg`]), and failovers as
//! [`Notification`]s ([`Session::events`]) and counters ([`Session::failovers`]).

use crate::common::{
    Message, SendBuffer, multicast_receiver, registrar_table, resolve_mode, split_event,
};
use crate::driver::{Driver, DriverConfig, Handle};
use crate::error::{ConfigError, Error};
use crate::runtime::{Spawner, Task, fresh_seed};
use crate::transport::{TransportConfig, TransportMode};
use crate::watch::Watch;
use bytes::Bytes;
use futures_lite::{Stream, future};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::pool_user::{PoolUserEvent, RequestId, ResolutionFailure, ResolvedElement};
use rserpool_core::session::{
    FailoverReason, PoolUserSession, PoolUserSessionConfig, SendError, SessionEvent,
    SessionFailure, SessionState,
};
use rserpool_core::{AssocDownReason, AssocId, Instant, Machine, Output};
use rserpool_proto::ids::{PeIdentifier, PoolHandle};
use rserpool_proto::param::HandleResolutionOption;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How a [`PoolUser`] finds registrars and how its [`Session`]s behave.
/// [`PoolUserConfig::default`] gives RSPLIB's defaults; set at least a registrar (or an
/// announce group).
#[derive(Clone, Debug)]
pub struct PoolUserConfig {
    /// Static registrars (RSPLIB `-registrar=`).
    pub registrars: Vec<SocketAddr>,
    /// ASAP announce group to learn registrars from (`None`, default: static ones only).
    pub announce: Option<SocketAddr>,
    /// Kernel SCTP, the TCP mapping, or SCTP where the kernel has it (`Auto`, default).
    /// Registrars and PEs advertising SCTP are reached over the TCP mapping without it.
    pub mode: TransportMode,
    /// Transport settings.
    pub transport: TransportConfig,
    /// The session machine's settings: connect and response timeouts, replay policy,
    /// retry delays, attempts, and the embedded pool user's (stale cache value, request
    /// timeout, registrar hunt; its static registrars are replaced by
    /// [`PoolUserConfig::registrars`]).
    pub session: PoolUserSessionConfig,
    /// PPID of the messages [`futures_lite::AsyncWrite`] sends (default 0, as RSPLIB's
    /// `rsp_write`; never 11).
    pub ppid: u32,
    /// How long [`PoolUser::connect`] waits for the first PE (default 10 s).
    pub establish_timeout: Duration,
    /// PEs asked for by the free function [`resolve`] (default: all).
    pub resolve_items: u32,
    /// Bytes queued towards the PE before a send waits for it to read (default 1 MiB; at
    /// most half of [`TransportConfig::max_queued_bytes`]).
    pub send_buffer: usize,
    /// Where the driver task runs (default: a thread of its own).
    pub spawner: Spawner,
    /// RNG seed (policy choices, hunt order); `None`: a fresh one.
    pub seed: Option<u64>,
}

impl Default for PoolUserConfig {
    fn default() -> Self {
        PoolUserConfig {
            registrars: Vec::new(),
            announce: None,
            mode: TransportMode::Auto,
            transport: TransportConfig::default(),
            session: PoolUserSessionConfig::default(),
            ppid: 0,
            establish_timeout: Duration::from_secs(10),
            resolve_items: HandleResolutionOption::ALL,
            send_buffer: 1 << 20,
            spawner: Spawner::default(),
            seed: None,
        }
    }
}

impl PoolUserConfig {
    /// Adds a static registrar.
    pub fn registrar(mut self, addr: SocketAddr) -> Self {
        self.registrars.push(addr);
        self
    }

    /// Sets the transport mode.
    pub fn mode(mut self, mode: TransportMode) -> Self {
        self.mode = mode;
        self
    }

    fn driver_config(&self) -> DriverConfig {
        DriverConfig {
            transport: self.transport.clone(),
            mode: self.mode,
            udp: self
                .announce
                .map(|g| multicast_receiver(g, rserpool_core::Protocol::PPID_ASAP))
                .into_iter()
                .collect(),
            ..DriverConfig::default()
        }
    }

    fn session_config(&self) -> Result<PoolUserSessionConfig, Error> {
        if self.registrars.is_empty() && self.announce.is_none() {
            return Err(ConfigError::NoRegistrar.into());
        }
        if self.ppid == rserpool_core::session::PPID_CONTROL {
            return Err(Error::Send(SendError::ControlPpid));
        }
        let kind = resolve_mode(self.mode)?;
        let mut s = self.session.clone();
        s.pool_user.registrar_table = registrar_table(
            &self.registrars,
            self.announce,
            kind,
            s.pool_user.registrar_table.clone(),
        );
        Ok(s)
    }

    fn rng(&self) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(self.seed.unwrap_or_else(fresh_seed))
    }
}

// ----------------------------------------------------------------------------------------
// sessions

/// What happens to a [`Session`] besides data ([`Session::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// The session reached its first PE.
    Connected {
        /// The PE.
        pe_id: PeIdentifier,
    },
    /// The session left its PE ("failover necessary") and looks for another.
    FailoverStarted {
        /// The PE left.
        pe_id: PeIdentifier,
        /// Why.
        reason: FailoverReason,
    },
    /// The session is on a new PE; the cookie was echoed and unanswered messages replayed.
    FailoverComplete {
        /// The new PE.
        pe_id: PeIdentifier,
        /// True if a cookie was echoed.
        has_cookie: bool,
        /// Messages sent again.
        replayed: usize,
    },
    /// The PE sent a new state cookie ([`Session::cookie`]).
    CookieReceived,
    /// The session gave up ([`PoolUserSessionConfig::max_attempts`]);
    /// [`Session::force_failover`] starts it again.
    Failed {
        /// The last attempt's failure.
        cause: SessionFailure,
    },
    /// The session was closed.
    Closed,
}

#[derive(Clone, Debug)]
enum End {
    Failed(SessionFailure),
    Closed,
}

type DataItem = Result<Message, End>;

#[derive(Debug, Default)]
struct SessionShared {
    pe_id: Option<PeIdentifier>,
    connected: bool,
    failure: Option<SessionFailure>,
    closed: bool,
    failovers_started: u64,
    failovers_completed: u64,
    cookie: Option<Bytes>,
}

/// Notifications kept for [`Session::events`] (the oldest go first when full).
const NOTICE_BACKLOG: usize = 256;

/// The machine in a session's driver: the core's session plus routing of its events.
pub(crate) struct SessionMachine {
    s: PoolUserSession<Xoshiro256PlusPlus>,
    data: async_channel::Sender<DataItem>,
    notices: async_channel::Sender<Notification>,
    shared: Watch<SessionShared>,
}

impl SessionMachine {
    fn route(&mut self, e: SessionEvent) {
        let notice = match e {
            SessionEvent::Data { ppid, data } => {
                let _ = self.data.try_send(Ok(Message { ppid, data }));
                return;
            }
            SessionEvent::Connected { pe_id } => {
                self.shared.update(|s| {
                    s.pe_id = Some(pe_id);
                    s.connected = true;
                    s.failure = None;
                });
                Notification::Connected { pe_id }
            }
            SessionEvent::FailoverStarted { pe_id, reason } => {
                self.shared.update(|s| {
                    s.pe_id = None;
                    s.failovers_started += 1;
                });
                Notification::FailoverStarted { pe_id, reason }
            }
            SessionEvent::FailoverComplete {
                pe_id,
                has_cookie,
                replayed,
            } => {
                self.shared.update(|s| {
                    s.pe_id = Some(pe_id);
                    s.failovers_completed += 1;
                    s.failure = None;
                });
                Notification::FailoverComplete {
                    pe_id,
                    has_cookie,
                    replayed,
                }
            }
            SessionEvent::CookieReceived => {
                let cookie = self.s.cookie().cloned();
                self.shared.update(|s| s.cookie = cookie);
                Notification::CookieReceived
            }
            SessionEvent::Failed { cause } => {
                self.shared.update(|s| {
                    s.pe_id = None;
                    s.failure = Some(cause.clone());
                });
                let _ = self.data.try_send(Err(End::Failed(cause.clone())));
                Notification::Failed { cause }
            }
            SessionEvent::Closed => {
                self.shared.update(|s| {
                    s.pe_id = None;
                    s.closed = true;
                });
                let _ = self.data.try_send(Err(End::Closed));
                Notification::Closed
            }
        };
        let _ = self.notices.force_send(notice);
    }
}

impl Machine for SessionMachine {
    type Event = std::convert::Infallible;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        self.s.handle_assoc_up(now, assoc, peer_addrs);
    }
    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.s.handle_assoc_down(now, assoc, reason);
    }
    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.s.handle_message(now, assoc, ppid, data);
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.s.handle_datagram(now, from, ppid, data);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.s.handle_timeout(now);
    }
    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        loop {
            match split_event(self.s.poll_output()?) {
                Ok(o) => return Some(o),
                Err(e) => self.route(e),
            }
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.s.poll_timeout()
    }
}

type WriteOp = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// A session to a pool: connected to one PE at a time, failing over by itself. See the
/// [module documentation](self).
///
/// ```no_run
/// use futures_lite::{AsyncBufReadExt, AsyncWriteExt, io::BufReader};
/// use rserpool_async_std::{PoolUser, PoolUserConfig};
///
/// # async fn client() -> Result<(), rserpool_async_std::Error> {
/// let config = PoolUserConfig::default().registrar("127.0.0.1:3863".parse().unwrap());
/// let mut session = PoolUser::connect("EchoPool", config).await?;
/// session.write_all(b"hello\n").await?;
/// let mut line = String::new();
/// BufReader::new(&mut session).read_line(&mut line).await?;
/// assert_eq!(line, "hello\n");
/// println!("{} failovers so far", session.failovers());
/// # Ok(()) }
/// ```
pub struct Session {
    handle: Handle<SessionMachine>,
    data: Pin<Box<async_channel::Receiver<DataItem>>>,
    notices: Pin<Box<async_channel::Receiver<Notification>>>,
    shared: Watch<SessionShared>,
    task: Task,
    pool_handle: PoolHandle,
    ppid: u32,
    send_buffer: SendBuffer,
    /// Unread rest of the last message ([`futures_lite::AsyncRead`]).
    read_buf: Bytes,
    read_eof: bool,
    /// A message accepted by `poll_write` whose send has not finished yet.
    write_op: Option<WriteOp>,
    closing: Option<WriteOp>,
    closed: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("pool_handle", &self.pool_handle)
            .field("pe_id", &self.pe_id())
            .field("failovers", &self.failovers())
            .finish_non_exhaustive()
    }
}

/// Sends one message: waits through a failover when the session's queue is full, and for
/// the PE to read when more than the send buffer is queued.
async fn send_message(
    handle: Handle<SessionMachine>,
    shared: Watch<SessionShared>,
    buffer: SendBuffer,
    ppid: u32,
    data: Bytes,
) -> Result<(), Error> {
    loop {
        let before = shared.get(|s| (s.failovers_completed, s.connected));
        let d = data.clone();
        let r = handle
            .call_with(move |m, ctx| {
                m.s.send(ctx.now(), ppid, d)?;
                let wait = match (m.s.state(), m.s.association()) {
                    (SessionState::Connected, Some(a)) => ctx
                        .queued_bytes(a)
                        .is_some_and(|q| q > buffer.high)
                        .then(|| ctx.queue_below(a, buffer.low())),
                    _ => None,
                };
                Ok::<_, SendError>(wait)
            })
            .await?;
        match r {
            Ok(Some(wait)) => {
                wait.await;
                return Ok(());
            }
            Ok(None) => return Ok(()),
            Err(SendError::QueueFull) => {
                // Failing over with a full queue: wait until the session is on a PE again
                // (the queue is then flushed) or gives up.
                let outcome = shared
                    .wait_for(|s| {
                        if s.closed {
                            Some(Err(Error::Closed(None)))
                        } else if let Some(f) = &s.failure {
                            Some(Err(Error::Session(f.clone())))
                        } else {
                            ((s.failovers_completed, s.connected) != before).then_some(Ok(()))
                        }
                    })
                    .await;
                outcome?;
            }
            Err(SendError::NoSession) => {
                let failure = shared.get(|s| s.failure.clone());
                return Err(match failure {
                    Some(f) => Error::Session(f),
                    None => Error::Closed(None),
                });
            }
            Err(e) => return Err(Error::Send(e)),
        }
    }
}

impl Session {
    /// The pool.
    pub fn pool_handle(&self) -> &PoolHandle {
        &self.pool_handle
    }

    /// The PE the session is on (`None` while failing over).
    pub fn pe_id(&self) -> Option<PeIdentifier> {
        self.shared.get(|s| s.pe_id)
    }

    /// Failovers completed so far.
    pub fn failovers(&self) -> u64 {
        self.shared.get(|s| s.failovers_completed)
    }

    /// Failovers started so far (one more than [`Session::failovers`] while one is going on).
    pub fn failovers_started(&self) -> u64 {
        self.shared.get(|s| s.failovers_started)
    }

    /// The newest state cookie from a PE: echoed to the next PE after a failover (RSPLIB
    /// `rsp_has_cookie` is `cookie().is_some()`).
    pub fn cookie(&self) -> Option<Bytes> {
        self.shared.get(|s| s.cookie.clone())
    }

    /// The session's notifications (failovers, cookies, failure), as a [`Stream`]. The last
    /// 256 are kept for whoever reads them; clones share them.
    pub fn events(&self) -> impl Stream<Item = Notification> + Send + Unpin + 'static {
        Box::pin((*self.notices).clone())
    }

    /// The PPID [`futures_lite::AsyncWrite`] uses.
    pub fn ppid(&self) -> u32 {
        self.ppid
    }

    /// Changes the PPID [`futures_lite::AsyncWrite`] uses (not 11).
    pub fn set_ppid(&mut self, ppid: u32) -> Result<(), Error> {
        if ppid == rserpool_core::session::PPID_CONTROL {
            return Err(Error::Send(SendError::ControlPpid));
        }
        self.ppid = ppid;
        Ok(())
    }

    /// Sends one message. During a failover it is queued and sent to the next PE right
    /// after the cookie echo and the replay; with the queue full this waits for the failover
    /// to complete. Waits while more than the send buffer is queued for the PE.
    pub async fn send_msg(&self, ppid: u32, data: impl Into<Bytes>) -> Result<(), Error> {
        send_message(
            self.handle.clone(),
            self.shared.clone(),
            self.send_buffer,
            ppid,
            data.into(),
        )
        .await
    }

    /// The next message from the PE. Fails with [`Error::Session`] when the session gave up
    /// and [`Error::Closed`] after [`Session::close`]. Do not mix with
    /// [`futures_lite::AsyncRead`] on the same session unless message boundaries do not matter.
    pub async fn recv_msg(&mut self) -> Result<Message, Error> {
        if !self.read_buf.is_empty() {
            let data = std::mem::take(&mut self.read_buf);
            return Ok(Message {
                ppid: self.ppid,
                data,
            });
        }
        match self.data.recv().await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(End::Failed(c))) => Err(Error::Session(c)),
            Ok(Err(End::Closed)) => Err(Error::Closed(None)),
            Err(_) => Err(Error::Stopped),
        }
    }

    /// Moves the session to another PE now (RSPLIB `rsp_forcefailover`), reporting the
    /// current one unreachable if `report_unreachable`. Also restarts a failed session.
    pub async fn force_failover(&self, report_unreachable: bool) -> Result<(), Error> {
        let ok = self
            .handle
            .call(move |m, now| m.s.force_failover(now, report_unreachable))
            .await?;
        if ok {
            self.shared.update(|s| s.failure = None);
            Ok(())
        } else {
            Err(Error::Closed(None))
        }
    }

    /// Waits until the session is on a PE (at once if it is) and returns it; fails if the
    /// session gave up or was closed.
    pub async fn wait_connected(&self) -> Result<PeIdentifier, Error> {
        self.shared
            .wait_for(|s| {
                if s.closed {
                    Some(Err(Error::Closed(None)))
                } else if let Some(f) = &s.failure {
                    Some(Err(Error::Session(f.clone())))
                } else {
                    s.pe_id.map(Ok)
                }
            })
            .await
    }

    /// Closes the session (graceful shutdown of the association) and stops its driver.
    pub async fn close(mut self) -> Result<(), Error> {
        self.closed = true;
        if let Some(op) = self.write_op.take() {
            op.await?;
        }
        let _ = self.handle.call(|m, now| m.s.close(now)).await;
        let _ = self.handle.shutdown().await;
        self.task.finished().await;
        Ok(())
    }

    fn poll_pending_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(op) = self.write_op.as_mut() {
            let r = futures_lite::ready!(op.as_mut().poll(cx));
            self.write_op = None;
            r?;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            // The driver stops once the last handle is gone: after this close.
            let _ = self.handle.post(|m, now| m.s.close(now));
        }
    }
}

impl futures_lite::AsyncRead for Session {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if !self.read_buf.is_empty() {
                let n = buf.len().min(self.read_buf.len());
                let chunk = self.read_buf.split_to(n);
                buf[..n].copy_from_slice(&chunk);
                return Poll::Ready(Ok(n));
            }
            if self.read_eof {
                return Poll::Ready(Ok(0));
            }
            match futures_lite::ready!(self.data.as_mut().poll_next(cx)) {
                Some(Ok(m)) => self.read_buf = m.data,
                Some(Err(End::Failed(c))) => {
                    return Poll::Ready(Err(Error::Session(c).into()));
                }
                Some(Err(End::Closed)) | None => self.read_eof = true,
            }
        }
    }
}

impl futures_lite::AsyncWrite for Session {
    /// Sends `buf` as one message with [`Session::ppid`]. Returns once the driver has the
    /// message; its outcome is reported by the next write, flush or close.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_lite::ready!(self.poll_pending_write(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut op: WriteOp = Box::pin(send_message(
            self.handle.clone(),
            self.shared.clone(),
            self.send_buffer,
            self.ppid,
            Bytes::copy_from_slice(buf),
        ));
        match op.as_mut().poll(cx) {
            Poll::Ready(r) => r?,
            Poll::Pending => self.write_op = Some(op),
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_pending_write(cx)
    }

    /// Flushes, then closes the session gracefully (reads then end).
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_lite::ready!(self.poll_pending_write(cx))?;
        if self.closing.is_none() {
            let handle = self.handle.clone();
            self.closing = Some(Box::pin(async move {
                handle.call(|m, now| m.s.close(now)).await?;
                Ok(())
            }));
        }
        let r = match self.closing.as_mut() {
            Some(op) => futures_lite::ready!(op.as_mut().poll(cx)),
            None => Ok(()),
        };
        self.closed = true;
        Poll::Ready(r.map_err(io::Error::from))
    }
}

// ----------------------------------------------------------------------------------------
// pool user: resolution, report, connect

type Reply = async_channel::Sender<Result<Vec<ResolvedElement>, ResolutionFailure>>;

/// The machine of a [`PoolUser`]: the core's pool user plus the callers waiting for answers.
pub(crate) struct ResolverMachine {
    pu: rserpool_core::pool_user::PoolUser<Xoshiro256PlusPlus>,
    waiting: HashMap<RequestId, Reply>,
}

impl Machine for ResolverMachine {
    type Event = std::convert::Infallible;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        self.pu.handle_assoc_up(now, assoc, peer_addrs);
    }
    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.pu.handle_assoc_down(now, assoc, reason);
    }
    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.pu.handle_message(now, assoc, ppid, data);
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.pu.handle_datagram(now, from, ppid, data);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.pu.handle_timeout(now);
    }
    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        loop {
            match split_event(self.pu.poll_output()?) {
                Ok(o) => return Some(o),
                Err(PoolUserEvent::Resolved {
                    request, elements, ..
                }) => {
                    if let Some(tx) = self.waiting.remove(&request) {
                        let _ = tx.try_send(Ok(elements));
                    }
                }
                Err(PoolUserEvent::ResolutionFailed { request, cause, .. }) => {
                    if let Some(tx) = self.waiting.remove(&request) {
                        let _ = tx.try_send(Err(cause));
                    }
                }
            }
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.pu.poll_timeout()
    }
}

/// A pool user: handle resolution with the core's cache, unreachability reports, and the
/// entry point of sessions ([`PoolUser::connect`]).
///
/// ```no_run
/// use rserpool_async_std::{PoolUser, PoolUserConfig};
///
/// # async fn lookup() -> Result<(), rserpool_async_std::Error> {
/// let config = PoolUserConfig::default().registrar("127.0.0.1:3863".parse().unwrap());
/// let pu = PoolUser::start(config).await?;
/// for pe in pu.resolve("EchoPool", 8).await? {
///     println!("{:?} at {:?}", pe.pe_id, pe.user_transport);
/// }
/// # Ok(()) }
/// ```
pub struct PoolUser {
    handle: Handle<ResolverMachine>,
    task: Task,
}

impl fmt::Debug for PoolUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolUser").finish_non_exhaustive()
    }
}

impl PoolUser {
    /// Starts a pool user (it contacts a registrar on its first resolution).
    pub async fn start(config: PoolUserConfig) -> Result<PoolUser, Error> {
        let s = config.session_config()?;
        let rng = config.rng();
        let driver = Driver::try_build(config.driver_config(), |_, _| {
            Ok::<_, Error>(ResolverMachine {
                pu: rserpool_core::pool_user::PoolUser::new(s.pool_user, rng),
                waiting: HashMap::new(),
            })
        })?;
        let handle = driver.handle();
        let task = Task::spawn(&config.spawner, "rserpool-pu", driver.run())?;
        Ok(PoolUser { handle, task })
    }

    /// Resolves `pool` to at most `items` PEs (in policy order), from the cache if the stale
    /// cache value allows, else from the registrar.
    pub async fn resolve(
        &self,
        pool: impl Into<PoolHandle>,
        items: u32,
    ) -> Result<Vec<ResolvedElement>, Error> {
        let pool = pool.into();
        let (tx, rx) = async_channel::bounded(1);
        self.handle
            .call(move |m, now| {
                let id = m.pu.resolve(now, pool, items);
                m.waiting.insert(id, tx);
            })
            .await?;
        match rx.recv().await {
            Ok(r) => r.map_err(Error::Resolution),
            Err(_) => Err(Error::Stopped),
        }
    }

    /// Reports a PE unreachable to the registrar (ASAP_ENDPOINT_UNREACHABLE, RSPLIB
    /// `rsp_pe_failure`); it is not returned by this pool user's resolutions while suspect.
    pub async fn report_unreachable(
        &self,
        pool: impl Into<PoolHandle>,
        pe_id: PeIdentifier,
    ) -> Result<(), Error> {
        let pool = pool.into();
        self.handle
            .call(move |m, now| {
                m.pu.report_unreachable(now, pool, pe_id);
            })
            .await?;
        Ok(())
    }

    /// Stops the pool user.
    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
        self.task.finished().await;
    }

    /// Opens a session to `pool` (RSPLIB `rsp_connect`) and returns once it is on a PE.
    /// Fails if the configuration is unusable, when the session gives up
    /// ([`PoolUserSessionConfig::max_attempts`]), or after
    /// [`PoolUserConfig::establish_timeout`].
    pub async fn connect(
        pool: impl Into<PoolHandle>,
        config: PoolUserConfig,
    ) -> Result<Session, Error> {
        let pool = pool.into();
        let s = config.session_config()?;
        let rng = config.rng();
        let (data_tx, data_rx) = async_channel::unbounded();
        let (notice_tx, notice_rx) = async_channel::bounded(NOTICE_BACKLOG);
        let shared = Watch::new(SessionShared::default());
        let driver = Driver::try_build(config.driver_config(), |_, _| {
            Ok::<_, Error>(SessionMachine {
                s: PoolUserSession::new(s, rng),
                data: data_tx,
                notices: notice_tx,
                shared: shared.clone(),
            })
        })?;
        let handle = driver.handle();
        let task = Task::spawn(&config.spawner, "rserpool-session", driver.run())?;
        let session = Session {
            handle,
            data: Box::pin(data_rx),
            notices: Box::pin(notice_rx),
            shared,
            task,
            pool_handle: pool.clone(),
            ppid: config.ppid,
            send_buffer: SendBuffer::new(config.send_buffer, config.transport.max_queued_bytes),
            read_buf: Bytes::new(),
            read_eof: false,
            write_op: None,
            closing: None,
            closed: false,
        };
        session
            .handle
            .call(move |m, now| m.s.connect(now, pool))
            .await?;
        let limit = config.establish_timeout;
        let connected = future::or(session.wait_connected(), async {
            async_io::Timer::after(limit).await;
            Err(Error::Timeout(limit))
        })
        .await;
        match connected {
            Ok(_) => Ok(session),
            Err(e) => {
                let _ = session.close().await;
                Err(e)
            }
        }
    }
}

/// Resolves `pool` once (RSPLIB `rsp_getaddrinfo`, basic mode): up to
/// [`PoolUserConfig::resolve_items`] PEs in policy order.
///
/// ```no_run
/// # async fn lookup() -> Result<(), rserpool_async_std::Error> {
/// let config = rserpool_async_std::PoolUserConfig::default()
///     .registrar("127.0.0.1:3863".parse().unwrap());
/// let pes = rserpool_async_std::resolve("EchoPool", config).await?;
/// println!("{} pool elements", pes.len());
/// # Ok(()) }
/// ```
pub async fn resolve(
    pool: impl Into<PoolHandle>,
    config: PoolUserConfig,
) -> Result<Vec<ResolvedElement>, Error> {
    let items = config.resolve_items;
    let pu = PoolUser::start(config).await?;
    let r = pu.resolve(pool, items).await;
    pu.shutdown().await;
    r
}
