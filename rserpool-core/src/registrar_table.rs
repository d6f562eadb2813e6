//! Registrar discovery and the server hunt, shared by [`PoolElement`] and [`PoolUser`]
//! (RFC 5352 §3.6, RSPLIB `registrartable.c`; `shared/spec/asap.md` §5.7).
//!
//! A [`RegistrarTable`] is a sans-IO *component*, not a [`Machine`]: its owner forwards the
//! relevant inputs (announce datagrams, association events of hunt attempts, timeouts) and
//! drains its [`HuntAction`]s into its own output queue.
//!
//! # Registrar list
//! * **Static** registrars (`-registrar=addr[:port][,addr…]`) never expire and come first,
//!   in configuration order.
//! * **Dynamic** registrars are learnt from ASAP Server Announces received as datagrams.
//!   An entry is keyed by the announcing server identifier, refreshed by every announce and
//!   deleted when no announce arrived for T7-ENRPoutdate (5 s). Its transports are the
//!   announce's SCTP and TCP transport parameters (others are ignored); an announce without
//!   any (RSPLIB sends none) means SCTP to the datagram's source address **and source port**
//!   (RSPLIB's registrar sends announces from its random ASAP port), or to a configured port
//!   ([`RegistrarTableConfig::announce_default_port`], the RFC's IANA port 3863).
//!
//! # Server hunt
//! A hunt runs in rounds of at most [`RegistrarTableConfig::connect_timeout`] (RSPLIB
//! RegistrarConnectTimeout 7.5 s, no doubling). A round starts at a random entry and opens
//! up to [`RegistrarTableConfig::max_parallel`] (3) associations at once
//! ([`HuntAction::Connect`], [`ChannelKind::AsapToRegistrar`]), going through the entries in
//! list order; a failed attempt makes room for the next entry. The first association that
//! comes up wins ([`HuntOutcome::Connected`]) and every other pending attempt is closed.
//! When the round ends without success its pending attempts are aborted and the next round
//! starts, up to [`RegistrarTableConfig::max_rounds`] (RSPLIB 1), after which the hunt fails
//! ([`HuntOutcome::Failed`]). When an announce from a *new* registrar arrives while no
//! attempt is pending, the current round restarts at once (it does not count as a new
//! round).
//!
//! [`PoolElement`]: crate::pool_element::PoolElement
//! [`PoolUser`]: crate::pool_user::PoolUser
//! [`Machine`]: crate::io::Machine

use bytes::Bytes;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use smallvec::SmallVec;
use std::collections::VecDeque;

use rserpool_proto::asap::{AsapError, ServerAnnounce};
use rserpool_proto::error::DecodeErrorKind;
use rserpool_proto::ids::ServerId;
use rserpool_proto::param::OperationError;
use rserpool_proto::transport::{TransportParameter, TransportProtocol};
use rserpool_proto::{AsapMessage, Encode};

use crate::io::{AssocIdAllocator, ChannelKind, Output};
use crate::{AssocId, Instant};

/// The IANA ASAP port (RFC 5352 §8.2).
pub const ASAP_PORT: u16 = 3863;

/// Addresses of one registrar transport (multi-homing: any of them).
pub type AddrList = SmallVec<[SocketAddr; 4]>;

/// A configured registrar (`-registrar=addr[:port][,addr…]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRegistrar {
    /// Its addresses (one multi-homed registrar).
    pub addrs: AddrList,
    /// Transport to connect with (the driver may map SCTP onto the TCP mapping).
    pub protocol: TransportProtocol,
}

impl StaticRegistrar {
    /// A registrar reached over SCTP at `addrs`.
    pub fn sctp(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        StaticRegistrar {
            addrs: addrs.into_iter().collect(),
            protocol: TransportProtocol::Sctp,
        }
    }

    /// A registrar reached over TCP (RTF mapping) at `addrs`.
    pub fn tcp(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        StaticRegistrar {
            addrs: addrs.into_iter().collect(),
            protocol: TransportProtocol::Tcp,
        }
    }
}

/// Configuration of a [`RegistrarTable`]. Defaults are RSPLIB's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarTableConfig {
    /// Static registrars, tried like any other entry; they never expire.
    pub static_registrars: Vec<StaticRegistrar>,
    /// Learn registrars from ASAP Server Announces (`-asapannounce=off` clears it).
    pub use_announces: bool,
    /// T7-ENRPoutdate: how long an announced registrar stays in the list (5 s).
    pub announce_timeout: Duration,
    /// T5-Serverhunt / RSPLIB RegistrarConnectTimeout: length of one hunt round (7.5 s).
    pub connect_timeout: Duration,
    /// Hunt rounds before a hunt fails (RSPLIB RegistrarConnectMaxTrials, 1; 0 counts as 1).
    pub max_rounds: u32,
    /// Connection attempts in parallel (3; 0 counts as 1).
    pub max_parallel: usize,
    /// Which announced transport to connect with: the first one whose protocol comes
    /// earliest in this list; if none is listed, the first announced one. Default: SCTP,
    /// then TCP (a driver without kernel SCTP puts TCP first).
    pub transport_preference: SmallVec<[TransportProtocol; 2]>,
    /// Port for announces without transport parameters: `None` = the datagram's source
    /// port (RSPLIB, default), `Some(p)` = `p` (RFC 5352 §3.6: the IANA port 3863).
    pub announce_default_port: Option<u16>,
    /// At most this many announced registrars are kept (announces from further server
    /// identifiers are ignored until entries expire). Default 64.
    pub max_dynamic: usize,
}

impl Default for RegistrarTableConfig {
    fn default() -> Self {
        RegistrarTableConfig {
            static_registrars: Vec::new(),
            use_announces: true,
            announce_timeout: Duration::from_millis(5000),
            connect_timeout: Duration::from_millis(7500),
            max_rounds: 1,
            max_parallel: 3,
            transport_preference: SmallVec::from_slice(&[
                TransportProtocol::Sctp,
                TransportProtocol::Tcp,
            ]),
            announce_default_port: None,
            max_dynamic: 64,
        }
    }
}

/// One transport of a registrar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarTransport {
    /// SCTP or TCP.
    pub protocol: TransportProtocol,
    /// Its addresses.
    pub addrs: AddrList,
}

/// One registrar of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarEntry {
    /// Its server identifier (from the announce; `None` for static entries and announces
    /// with identifier 0).
    pub server_id: Option<ServerId>,
    /// Its transports, in announce order.
    pub transports: SmallVec<[RegistrarTransport; 2]>,
    /// When the entry expires (`None`: static, never).
    pub expires: Option<Instant>,
    key: u64,
}

/// What the table asks its owner to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HuntAction {
    /// Open an association to a registrar ([`Output::Connect`] with
    /// [`ChannelKind::AsapToRegistrar`]).
    Connect {
        /// The machine-chosen id of the new association.
        assoc: AssocId,
        /// Addresses to try.
        addrs: AddrList,
        /// SCTP or TCP.
        transport: TransportProtocol,
    },
    /// Close a hunt association that is no longer wanted.
    Close {
        /// Which one.
        assoc: AssocId,
        /// Abort instead of a graceful shutdown.
        abort: bool,
    },
}

impl HuntAction {
    /// The equivalent machine output.
    pub fn into_output<E>(self) -> Output<E> {
        match self {
            HuntAction::Connect {
                assoc,
                addrs,
                transport,
            } => Output::Connect {
                assoc,
                addrs,
                transport,
                channel: ChannelKind::AsapToRegistrar,
            },
            HuntAction::Close { assoc, abort } => Output::Close { assoc, abort },
        }
    }
}

/// How a hunt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HuntOutcome {
    /// An association to a registrar is up: it is the new home registrar.
    Connected {
        /// The association.
        assoc: AssocId,
        /// The registrar's identifier if its entry came from an announce.
        server_id: Option<ServerId>,
        /// The transport used.
        transport: RegistrarTransport,
    },
    /// No registrar could be reached in [`RegistrarTableConfig::max_rounds`] rounds.
    Failed,
}

/// What an announce did to the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnounceOutcome {
    /// A registrar not in the list before.
    New,
    /// A known registrar: its expiry was pushed back.
    Refreshed,
    /// Not used (announces disabled, table full, not a Server Announce, malformed).
    Ignored,
}

#[derive(Clone, Debug)]
struct Attempt {
    assoc: AssocId,
    key: u64,
    transport: RegistrarTransport,
}

#[derive(Clone, Debug)]
struct Hunt {
    round: u32,
    deadline: Instant,
    pending: SmallVec<[Attempt; 3]>,
    /// Entry keys still to try in this round, in order.
    queue: VecDeque<u64>,
}

/// The registrar list and server hunt. See the [module documentation](self).
#[derive(Debug)]
pub struct RegistrarTable {
    config: RegistrarTableConfig,
    entries: Vec<RegistrarEntry>,
    next_key: u64,
    hunt: Option<Hunt>,
    ids: AssocIdAllocator,
    actions: VecDeque<HuntAction>,
}

/// A uniformly distributed index below `n` (`n > 0`).
pub(crate) fn random_index<R: rand_core::Rng + ?Sized>(rng: &mut R, n: usize) -> usize {
    ((u64::from(rng.next_u32()) * n as u64) >> 32) as usize
}

impl RegistrarTable {
    /// A table holding the static registrars of `config`.
    pub fn new(config: RegistrarTableConfig) -> RegistrarTable {
        let mut t = RegistrarTable {
            config,
            entries: Vec::new(),
            next_key: 0,
            hunt: None,
            ids: AssocIdAllocator::default(),
            actions: VecDeque::new(),
        };
        let statics = t.config.static_registrars.clone();
        for s in statics {
            if s.addrs.is_empty() {
                continue;
            }
            let key = t.alloc_key();
            t.entries.push(RegistrarEntry {
                server_id: None,
                transports: SmallVec::from_elem(
                    RegistrarTransport {
                        protocol: s.protocol,
                        addrs: s.addrs,
                    },
                    1,
                ),
                expires: None,
                key,
            });
        }
        t
    }

    fn alloc_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    /// The configuration.
    pub fn config(&self) -> &RegistrarTableConfig {
        &self.config
    }

    /// The registrars known now: static ones first, then announced ones in the order they
    /// were first heard.
    pub fn entries(&self) -> &[RegistrarEntry] {
        &self.entries
    }

    /// True while a hunt is running.
    pub fn is_hunting(&self) -> bool {
        self.hunt.is_some()
    }

    /// The current hunt round (1-based), if hunting.
    pub fn hunt_round(&self) -> Option<u32> {
        self.hunt.as_ref().map(|h| h.round)
    }

    /// Associations of the running hunt still waiting to come up.
    pub fn pending_attempts(&self) -> impl Iterator<Item = AssocId> + '_ {
        self.hunt
            .iter()
            .flat_map(|h| h.pending.iter().map(|a| a.assoc))
    }

    /// True if `assoc` is a pending hunt attempt.
    pub fn is_attempt(&self, assoc: AssocId) -> bool {
        self.pending_attempts().any(|a| a == assoc)
    }

    /// The next action for the owner to emit.
    pub fn poll_action(&mut self) -> Option<HuntAction> {
        self.actions.pop_front()
    }

    /// The next instant at which [`RegistrarTable::handle_timeout`] must run: the end of the
    /// hunt round or the expiry of an announced registrar.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.entries.iter().filter_map(|e| e.expires).min();
        let round = self.hunt.as_ref().map(|h| h.deadline);
        match (expiry, round) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ------------------------------------------------------------------------------------
    // announces

    /// An ASAP datagram arrived (the announce socket): decodes it and, if it is a Server
    /// Announce, feeds it to [`RegistrarTable::handle_announce`].
    pub fn handle_datagram<R: rand_core::Rng + ?Sized>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &Bytes,
        rng: &mut R,
    ) -> AnnounceOutcome {
        match AsapMessage::decode_bytes(data) {
            Ok(AsapMessage::ServerAnnounce(a)) => self.handle_announce(now, from, &a, rng),
            _ => AnnounceOutcome::Ignored,
        }
    }

    /// The registrar transports an announce describes (see the [module
    /// documentation](self)).
    pub fn announce_transports(
        &self,
        from: SocketAddr,
        announce: &ServerAnnounce,
    ) -> SmallVec<[RegistrarTransport; 2]> {
        let mut out: SmallVec<[RegistrarTransport; 2]> = SmallVec::new();
        let all = announce
            .transports
            .iter()
            .chain(announce.server_information.as_ref().map(|s| &s.transport));
        for t in all {
            if let Some(rt) = registrar_transport(t, from.ip())
                && !out.contains(&rt)
            {
                out.push(rt);
            }
        }
        if out.is_empty() {
            let port = self.config.announce_default_port.unwrap_or(from.port());
            if port != 0 {
                out.push(RegistrarTransport {
                    protocol: TransportProtocol::Sctp,
                    addrs: SmallVec::from_elem(SocketAddr::new(from.ip(), port), 1),
                });
            }
        }
        out
    }

    /// A Server Announce from `from` (UDP source address and port).
    pub fn handle_announce<R: rand_core::Rng + ?Sized>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        announce: &ServerAnnounce,
        rng: &mut R,
    ) -> AnnounceOutcome {
        if !self.config.use_announces {
            return AnnounceOutcome::Ignored;
        }
        let transports = self.announce_transports(from, announce);
        if transports.is_empty() {
            return AnnounceOutcome::Ignored;
        }
        let expires = now + self.config.announce_timeout;
        // Server identifier 0 means "unknown": such entries are keyed by their transports.
        let id = (announce.server_id != ServerId::NONE).then_some(announce.server_id);
        if let Some(e) = self.entries.iter_mut().find(|e| {
            e.expires.is_some() && e.server_id == id && (id.is_some() || e.transports == transports)
        }) {
            e.expires = Some(expires);
            e.transports = transports;
            return AnnounceOutcome::Refreshed;
        }
        let dynamic = self.entries.iter().filter(|e| e.expires.is_some()).count();
        if dynamic >= self.config.max_dynamic {
            return AnnounceOutcome::Ignored;
        }
        let key = self.alloc_key();
        self.entries.push(RegistrarEntry {
            server_id: id,
            transports,
            expires: Some(expires),
            key,
        });
        if self.hunt.as_ref().is_some_and(|h| h.pending.is_empty()) {
            self.start_round(now, rng, false);
        }
        AnnounceOutcome::New
    }

    // ------------------------------------------------------------------------------------
    // hunt

    /// Starts a server hunt (no effect while one is running).
    pub fn start_hunt<R: rand_core::Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        if self.hunt.is_none() {
            self.hunt = Some(Hunt {
                round: 0,
                deadline: now,
                pending: SmallVec::new(),
                queue: VecDeque::new(),
            });
            self.start_round(now, rng, true);
        }
    }

    /// Stops a running hunt, closing its pending attempts.
    pub fn cancel_hunt(&mut self) {
        if let Some(h) = self.hunt.take() {
            for a in h.pending {
                self.actions.push_back(HuntAction::Close {
                    assoc: a.assoc,
                    abort: true,
                });
            }
        }
    }

    fn start_round<R: rand_core::Rng + ?Sized>(&mut self, now: Instant, rng: &mut R, next: bool) {
        let n = self.entries.len();
        let start = if n == 0 { 0 } else { random_index(rng, n) };
        let queue: VecDeque<u64> = (0..n)
            .filter_map(|i| self.entries.get((start + i) % n).map(|e| e.key))
            .collect();
        let Some(h) = self.hunt.as_mut() else {
            return;
        };
        if next {
            h.round += 1;
        }
        h.deadline = now + self.config.connect_timeout;
        h.queue = queue;
        self.fill();
    }

    /// Opens attempts until `max_parallel` are pending or the round's queue is empty.
    fn fill(&mut self) {
        let max = self.config.max_parallel.max(1);
        loop {
            let Some(h) = self.hunt.as_mut() else {
                return;
            };
            if h.pending.len() >= max {
                return;
            }
            let Some(key) = h.queue.pop_front() else {
                return;
            };
            let Some(e) = self.entries.iter().find(|e| e.key == key) else {
                continue;
            };
            let Some(t) = choose_transport(&e.transports, &self.config.transport_preference) else {
                continue;
            };
            let assoc = self.ids.allocate();
            h.pending.push(Attempt {
                assoc,
                key,
                transport: t.clone(),
            });
            self.actions.push_back(HuntAction::Connect {
                assoc,
                addrs: t.addrs.clone(),
                transport: t.protocol,
            });
        }
    }

    /// An association came up. If it is a pending attempt, the hunt ends with
    /// [`HuntOutcome::Connected`] and the other attempts are closed; otherwise `None`.
    pub fn handle_assoc_up(&mut self, assoc: AssocId) -> Option<HuntOutcome> {
        let h = self.hunt.as_ref()?;
        let pos = h.pending.iter().position(|a| a.assoc == assoc)?;
        let mut h = self.hunt.take()?;
        let won = h.pending.remove(pos);
        for a in h.pending {
            self.actions.push_back(HuntAction::Close {
                assoc: a.assoc,
                abort: false,
            });
        }
        // The entry's identifier, or that of an announced entry with a common address (a
        // static registrar that also announces itself).
        let server_id = self
            .entries
            .iter()
            .find(|e| e.key == won.key)
            .and_then(|e| e.server_id)
            .or_else(|| {
                self.entries.iter().find_map(|e| {
                    let shared = e.transports.iter().any(|t| {
                        t.protocol == won.transport.protocol
                            && t.addrs.iter().any(|a| won.transport.addrs.contains(a))
                    });
                    if shared { e.server_id } else { None }
                })
            });
        Some(HuntOutcome::Connected {
            assoc,
            server_id,
            transport: won.transport,
        })
    }

    /// An association went down. Returns true if it was a pending attempt (the next entry
    /// of the round is tried in its place).
    pub fn handle_assoc_down(&mut self, assoc: AssocId) -> bool {
        let Some(h) = self.hunt.as_mut() else {
            return false;
        };
        let Some(pos) = h.pending.iter().position(|a| a.assoc == assoc) else {
            return false;
        };
        h.pending.remove(pos);
        self.fill();
        true
    }

    /// Expires announced registrars and ends hunt rounds. Returns
    /// [`HuntOutcome::Failed`] when the last round ended without success.
    pub fn handle_timeout<R: rand_core::Rng + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Option<HuntOutcome> {
        self.entries.retain(|e| e.expires.is_none_or(|t| t > now));
        let h = self.hunt.as_mut()?;
        if h.deadline > now {
            return None;
        }
        let pending = core::mem::take(&mut h.pending);
        let round = h.round;
        for a in pending {
            self.actions.push_back(HuntAction::Close {
                assoc: a.assoc,
                abort: true,
            });
        }
        if round >= self.config.max_rounds.max(1) {
            self.hunt = None;
            return Some(HuntOutcome::Failed);
        }
        self.start_round(now, rng, true);
        None
    }
}

fn registrar_transport(t: &TransportParameter, source: IpAddr) -> Option<RegistrarTransport> {
    if !matches!(t.protocol, TransportProtocol::Sctp | TransportProtocol::Tcp) || t.port == 0 {
        return None;
    }
    let mut addrs = AddrList::new();
    for a in &t.addresses {
        let ip = if a.is_unspecified() { source } else { *a };
        let sa = SocketAddr::new(ip, t.port);
        if !addrs.contains(&sa) {
            addrs.push(sa);
        }
    }
    (!addrs.is_empty()).then_some(RegistrarTransport {
        protocol: t.protocol,
        addrs,
    })
}

fn choose_transport<'a>(
    ts: &'a [RegistrarTransport],
    pref: &[TransportProtocol],
) -> Option<&'a RegistrarTransport> {
    pref.iter()
        .find_map(|p| ts.iter().find(|t| t.protocol == *p))
        .or_else(|| ts.first())
}

// ----------------------------------------------------------------------------------------
// inbound ASAP messages on registrar associations, shared by PE and PU

/// Decodes an ASAP message from a registrar association. Unknown parameters with
/// "report" action bits and unknown message types with "report" bits produce an
/// ASAP_ERROR to send back (`reply`), never in answer to an ASAP_ERROR. Returns `None` when
/// the message must be discarded.
pub(crate) fn decode_inbound(data: &Bytes, reply: &mut Option<Bytes>) -> Option<AsapMessage> {
    let is_error = data.first() == Some(&rserpool_proto::asap::msg_type::ERROR);
    match AsapMessage::decode_with_unrecognized(data) {
        Ok((m, unrecognized)) => {
            if !is_error && let Some(oe) = OperationError::unrecognized_parameters(&unrecognized) {
                *reply = Some(error_message(oe));
            }
            Some(m)
        }
        Err(e) => {
            let report = matches!(
                e.kind,
                DecodeErrorKind::UnknownMessageType(_) | DecodeErrorKind::UnknownParameter { .. }
            );
            if report
                && !is_error
                && let Some(cause) = e.operation_error()
            {
                *reply = Some(error_message(OperationError::new(cause)));
            }
            None
        }
    }
}

fn error_message(error: OperationError) -> Bytes {
    AsapMessage::Error(AsapError {
        reserved_flags: 0,
        error,
        skipped: Vec::new(),
    })
    .to_bytes()
}

/// Encodes an ASAP message (helper for the machines).
pub(crate) fn encode(m: impl Into<AsapMessage>) -> Bytes {
    let m: AsapMessage = m.into();
    Encode::to_bytes(&m)
}
