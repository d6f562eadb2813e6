//! The pool registrar (ENRP server): every ASAP server procedure (RFC 5352) and ENRP
//! (RFC 5353), sans-IO, with RSPLIB interoperability and the security rules RSPLIB lacks.
//!
//! # Driving it
//! ```
//! use rand_xoshiro::{Xoshiro256PlusPlus, rand_core::SeedableRng};
//! use rserpool_core::registrar::{Registrar, RegistrarConfig};
//! use rserpool_core::{Instant, Machine, Output};
//!
//! let mut reg = Registrar::new(
//!     RegistrarConfig::default(),
//!     Instant::ZERO,
//!     Xoshiro256PlusPlus::seed_from_u64(1),
//! );
//! // The driver loop: feed inputs (`handle_*`), drain outputs, wake at the deadline.
//! let now = reg.poll_timeout().unwrap();
//! reg.handle_timeout(now);
//! while let Some(out) = reg.poll_output() {
//!     match out {
//!         Output::Transmit(_t) => { /* send it */ }
//!         Output::Connect { .. } => { /* open the association, report assoc_up/down */ }
//!         Output::Close { .. } => { /* close it */ }
//!         Output::Event(_e) => { /* log it */ }
//!     }
//! }
//! ```
//! The first deadline is the construction instant: the registrar greets its static peers
//! and the ENRP multicast channel in its first `handle_timeout`.
//!
//! # Inputs
//! * associations: the driver reports every association it accepts (`handle_assoc_up`
//!   with the peer's addresses — needed to check registrations), every message with its
//!   PPID (11 ASAP, 12 ENRP; anything else is counted and ignored), and every loss;
//! * datagrams: ENRP Presences from the multicast channel (PPID 12); ASAP Server
//!   Announces of other registrars (PPID 11) are counted and ignored;
//! * associations the registrar opens itself ([`Output::Connect`]: to peer registrars,
//!   and to PEs it takes over) use ids from [`AssocIdAllocator`]; the registrar sends on
//!   them right away (the driver queues until the association is up).
//!
//! # Procedures
//! See `asap_server.rs` (registration, deregistration, handle resolution, keep-alives,
//! unreachability), `enrp.rs` (peer list, presence, failure detection, audit and
//! re-synchronisation, table transfer, handle updates, list), `takeover.rs`,
//! `announce.rs` and `security.rs` (the ownership and peer rules).

mod announce;
mod asap_server;
mod assoc;
pub mod config;
mod encode;
mod enrp;
pub mod events;
pub mod fuzzing;
mod security;
pub mod statistics;
mod takeover;

use bytes::{Bytes, BytesMut};
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::VecDeque;

use rand_core::Rng;
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use smallvec::SmallVec;

use crate::handlespace::{DueTimer, Handlespace, HandlespaceConfig, RemovedElement};
use crate::io::AssocIdAllocator;
use crate::{AssocDownReason, AssocId, BulkTransfer, Instant, Machine, Output, Protocol, Transmit};

use assoc::{Assoc, AssocMap, BucketMap, Origin, Role, SideMap};
pub use config::{
    ASAP_ANNOUNCE_GROUP, AddressScope, ENRP_ANNOUNCE_GROUP, IpNetwork, LifeUnit,
    MAX_HANDLE_RESOLUTION_ITEMS_CAP, PeerPolicy, RegistrarConfig, RegistrarLimits, RegistrarTimers,
};
use enrp::{BulkTransfers, Peer};
pub use enrp::{PeerState, PeerView};
use events::type_slot;
pub use events::{
    PeerDownReason, ProtocolErrorKind, RegistrarEvent, RegistrarStats, RemovalReason, TypeCounters,
};
pub use statistics::{
    ActionDirection, ActionRecord, RegistrarStatistics, StatisticsAverages, WeightedAverage,
};
use takeover::Takeover;

/// A PE's key: pool handle (sharing the handlespace's bytes) and PE identifier.
pub(crate) type PeKey = (PoolHandle, PeIdentifier);

type PeMap<V> = hashbrown::HashMap<PeKey, V, foldhash::fast::FixedState>;

/// Why the registrar is sending a keep-alive to a PE and waiting for its ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    /// Verifying an Endpoint Unreachable report (the PE is not handed out meanwhile).
    Unreachable,
    /// A peer claimed one of our PEs: re-assert ownership once it answers.
    Contested,
    /// We took the PE over from a failed registrar (H bit).
    Takeover,
    /// Takeover suggestion: we claim a PE of another registrar (H bit).
    Claim,
    /// A replica reported unreachable: collecting distinct reporters until `at`.
    Reported,
    /// A replica reported unreachable by enough distinct reporters: hidden from answers
    /// until its home refreshes it or `at` passes.
    Hidden,
}

/// State of one PE under verification (or hidden).
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub kind: ProbeKind,
    /// Distinct reporters (canonical first IP of the reporting association).
    pub reporters: SmallVec<[IpAddr; 4]>,
    /// Reporting associations holding a pending-request slot.
    pub reporter_assocs: SmallVec<[AssocId; 4]>,
    /// The association opened to reach the PE (takeover / claim), if any.
    pub assoc: Option<AssocId>,
    /// When the verification keep-alive went out (or, for `Hidden`, when hiding ends).
    pub at: Instant,
}

impl Probe {
    fn new(kind: ProbeKind, at: Instant) -> Probe {
        Probe {
            kind,
            reporters: SmallVec::new(),
            reporter_assocs: SmallVec::new(),
            assoc: None,
            at,
        }
    }
}

/// Counts of the registrar's own structures, for bounds checks and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// Associations in the table.
    pub associations: usize,
    /// Peer list entries.
    pub peers: usize,
    /// Running takeovers.
    pub takeovers: usize,
    /// PEs under verification, claimed, or hidden.
    pub probes: usize,
    /// PEs whose ownership was recently contested.
    pub contested: usize,
    /// Own PEs that recently answered a verification keep-alive.
    pub verified: usize,
    /// Entries in the mark-and-purge sets of running re-synchronisations.
    pub sync_marks: usize,
    /// Outputs waiting to be polled.
    pub queued_outputs: usize,
}

/// The pool registrar. See the [module documentation](self).
pub struct Registrar {
    cfg: RegistrarConfig,
    id: ServerId,
    rng: Box<dyn Rng + Send>,
    hs: Handlespace,
    assocs: AssocMap,
    buckets: BucketMap,
    /// ENRP associations → peer key.
    assoc_peers: SideMap<u32>,
    /// Associations → unreachability verifications their reports started.
    pending: SideMap<u16>,
    /// Multi-homed associations → their peer addresses.
    multi: SideMap<assoc::AddrList>,
    alloc: AssocIdAllocator,
    peers: Vec<Peer>,
    next_peer_key: u32,
    takeovers: Vec<Takeover>,
    probes: PeMap<Probe>,
    /// Probes that hide a PE from handle resolution answers (Unreachable, Hidden).
    hiding: usize,
    contested: PeMap<Instant>,
    /// Own PEs that answered a verification keep-alive, and when: reports right after
    /// that do not hide them again.
    verified: PeMap<Instant>,
    out: VecDeque<Output<RegistrarEvent>>,
    buf: BytesMut,
    stats: RegistrarStats,
    /// Action log records (only with `cfg.action_log`).
    actions: VecDeque<ActionRecord>,
    /// Time-weighted sizes: pools, PEs, own PEs, peers.
    weighted: [WeightedAverage; 4],
    /// Next autoclose sweep.
    autoclose_at: Option<Instant>,
    /// The time of the input being handled (for records made deep inside helpers).
    clock: Instant,
    /// Start-up actions not yet done (run at the first timeout).
    start_at: Option<Instant>,
    /// End of the start-up (mentor discovery) phase, while it lasts.
    startup_until: Option<Instant>,
    startup_done: bool,
    /// The mentor peer's key, once chosen.
    mentor: Option<u32>,
    /// Handle table transfers as told to the driver.
    bulk: BulkTransfers,
    mentor_imported: usize,
    announce_at: Option<Instant>,
    heartbeat_at: Option<Instant>,
    /// Earliest `Hidden` probe end.
    hide_next: Option<Instant>,
    scratch_due: Vec<DueTimer>,
    scratch_removed: Vec<RemovedElement>,
}

impl core::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Registrar")
            .field("id", &self.id)
            .field("elements", &self.hs.element_count())
            .field("peers", &self.peers.len())
            .field("associations", &self.assocs.len())
            .finish()
    }
}

fn hasher(rng: &mut dyn Rng) -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(rng.next_u64())
}

impl Registrar {
    /// A registrar with `config`, started at `now`, drawing randomness (server id if not
    /// configured, hash seeds, timer jitter, random selection policies) from `rng`.
    pub fn new(config: RegistrarConfig, now: Instant, rng: impl Rng + Send + 'static) -> Self {
        let mut rng: Box<dyn Rng + Send> = Box::new(rng);
        let id = match config.server_id {
            Some(id) if id != ServerId::NONE => id,
            _ => loop {
                let v = rng.next_u32();
                if v != 0 {
                    break ServerId(v);
                }
            },
        };
        let hs = Handlespace::new(HandlespaceConfig {
            limits: config.limits.handlespace,
            max_increment: config.max_increment,
            hash_seed: rng.next_u64(),
        });
        let assocs = AssocMap::with_hasher(hasher(&mut *rng));
        let buckets = BucketMap::with_hasher(hasher(&mut *rng));
        let assoc_peers = SideMap::with_hasher(hasher(&mut *rng));
        let pending = SideMap::with_hasher(hasher(&mut *rng));
        let multi = SideMap::with_hasher(hasher(&mut *rng));
        let probes = PeMap::with_hasher(hasher(&mut *rng));
        let contested = PeMap::with_hasher(hasher(&mut *rng));
        // Same keys, same secret seed (no extra draw: the random stream stays as it was).
        let verified = PeMap::with_hasher(contested.hasher().clone());
        let mut reg = Registrar {
            cfg: config,
            id,
            rng,
            hs,
            assocs,
            buckets,
            assoc_peers,
            pending,
            multi,
            alloc: AssocIdAllocator::default(),
            peers: Vec::new(),
            next_peer_key: 1,
            takeovers: Vec::new(),
            probes,
            hiding: 0,
            contested,
            verified,
            out: VecDeque::new(),
            buf: BytesMut::new(),
            stats: RegistrarStats::default(),
            actions: VecDeque::new(),
            weighted: [WeightedAverage::new(now); 4],
            autoclose_at: None,
            clock: now,
            start_at: Some(now),
            startup_until: None,
            startup_done: false,
            mentor: None,
            bulk: BulkTransfers::default(),
            mentor_imported: 0,
            announce_at: None,
            heartbeat_at: None,
            hide_next: None,
            scratch_due: Vec::new(),
            scratch_removed: Vec::new(),
        };
        reg.autoclose_at = reg.autoclose_period().map(|p| now + p);
        let statics = reg.cfg.static_peers.clone();
        for addrs in statics {
            reg.add_static_peer(addrs);
        }
        reg
    }

    // ----------------------------------------------------------------------------------
    // accessors

    /// Our ENRP server identifier.
    pub fn server_id(&self) -> ServerId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    /// The handlespace (own PEs and replicas).
    pub fn handlespace(&self) -> &Handlespace {
        &self.hs
    }

    /// The peer list, in insertion order (static entries first).
    pub fn peers(&self) -> impl Iterator<Item = PeerView<'_>> + '_ {
        self.peers.iter().map(Peer::view)
    }

    /// Counters.
    pub fn stats(&self) -> &RegistrarStats {
        &self.stats
    }

    /// RSPLIB's statistics counters and the current sizes (its statistics file's columns).
    pub fn statistics(&self) -> RegistrarStatistics {
        let s = &self.stats;
        let u = |v: usize| v as u64;
        RegistrarStatistics {
            peers: u(self.peers.len()),
            pools: u(self.hs.pool_count()),
            pool_elements: u(self.hs.element_count()),
            owned_pool_elements: u(self.hs.owner_element_count(self.id)),
            registrations: s.registrations,
            reregistrations: s.reregistrations,
            deregistrations: s.deregistrations,
            handle_resolutions: s.handle_resolutions,
            failure_reports: s.failure_reports,
            synchronizations: s.enrp_received
                [type_slot(rserpool_proto::enrp::msg_type::HANDLE_TABLE_REQUEST)],
            handle_updates: s.handle_updates,
            endpoint_keep_alives: s.asap_sent
                [type_slot(rserpool_proto::asap::msg_type::ENDPOINT_KEEP_ALIVE)],
        }
    }

    /// Time-weighted averages of the sizes from the registrar's start until `now` (RSPLIB's
    /// scalar file). The sizes are sampled after every input, as RSPLIB does after every
    /// message.
    pub fn statistics_averages(&self, now: Instant) -> StatisticsAverages {
        let [pools, pool_elements, owned_pool_elements, peers] =
            self.weighted.map(|w| w.average(now));
        StatisticsAverages {
            pools,
            pool_elements,
            owned_pool_elements,
            peers,
        }
    }

    /// The next action log record, oldest first (only with
    /// [`RegistrarConfig::action_log`]; drain it after every input, or it grows).
    pub fn poll_action(&mut self) -> Option<ActionRecord> {
        self.actions.pop_front()
    }

    /// True once the start-up phase (mentor discovery and download) is over.
    pub fn startup_complete(&self) -> bool {
        self.startup_done
    }

    /// The mentor chosen at start-up, if any answered.
    pub fn mentor(&self) -> Option<ServerId> {
        let k = self.mentor?;
        self.peers.iter().find(|p| p.key == k).map(|p| p.id)
    }

    /// True while the PE is hidden from handle resolution answers (unreachability being
    /// verified, or reported by enough distinct reporters).
    pub fn is_suspect(&self, pool_handle: &PoolHandle, pe_id: PeIdentifier) -> bool {
        self.probes
            .get(&(pool_handle.clone(), pe_id))
            .is_some_and(|p| matches!(p.kind, ProbeKind::Unreachable | ProbeKind::Hidden))
    }

    /// Approximate bytes allocated by the registrar's tables (handlespace structures,
    /// association table, side tables, verification state, encode buffer), for
    /// diagnostics; allocator overhead and B-tree nodes are not included.
    pub fn structure_bytes(&self) -> usize {
        self.hs.structure_bytes()
            + self.assocs.allocation_size()
            + self.buckets.allocation_size()
            + self.assoc_peers.allocation_size()
            + self.pending.allocation_size()
            + self.multi.allocation_size()
            + self.probes.allocation_size()
            + self.contested.allocation_size()
            + self.verified.allocation_size()
            + self.buf.capacity()
            + self.out.capacity() * core::mem::size_of::<Output<RegistrarEvent>>()
    }

    /// Sizes of the registrar's own structures.
    pub fn resource_usage(&self) -> ResourceUsage {
        ResourceUsage {
            associations: self.assocs.len(),
            peers: self.peers.len(),
            takeovers: self.takeovers.len(),
            probes: self.probes.len(),
            contested: self.contested.len(),
            verified: self.verified.len(),
            sync_marks: self.peers.iter().map(Peer::sync_marks).sum(),
            queued_outputs: self.out.len(),
        }
    }

    // ----------------------------------------------------------------------------------
    // statistics

    /// Queues an action log record (if the action log is on).
    fn action(&mut self, make: impl FnOnce() -> ActionRecord) {
        if self.cfg.action_log {
            self.actions.push_back(make());
        }
    }

    /// Samples the sizes for the time-weighted averages.
    fn sample_sizes(&mut self, now: Instant) {
        let v = [
            self.hs.pool_count(),
            self.hs.element_count(),
            self.hs.owner_element_count(self.id),
            self.peers.len(),
        ];
        for (w, v) in self.weighted.iter_mut().zip(v) {
            let v = v as f64;
            if w.value() != v {
                w.update(now, v);
            }
        }
    }

    /// Action log record of an ENRP message we send or received (RSPLIB words: the
    /// message name, `AddPE`/`DelPE` for Handle Updates, the target of takeover messages;
    /// Counter: the PEs of a Handle Table Response, the peers of a List Response).
    fn enrp_action(&mut self, now: Instant, dir: ActionDirection, multicast: bool, data: &[u8]) {
        if !self.cfg.action_log {
            return;
        }
        let Ok(m) = rserpool_proto::EnrpMessage::decode(data) else {
            return;
        };
        let protocol = if multicast { "MulticastENRP" } else { "ENRP" };
        let mut r = ActionRecord::new(
            now,
            dir,
            protocol,
            statistics::enrp_action_name(m.message_type()),
            "",
        );
        r.flags = u32::from(m.flags());
        r.sender = m.sender();
        r.receiver = m.receiver();
        match &m {
            rserpool_proto::EnrpMessage::HandleUpdate(u) => {
                r.reason = if u.action == rserpool_proto::enrp::UpdateAction::DEL_PE {
                    "DelPE"
                } else {
                    "AddPE"
                };
                r.pool_handle = Some(u.pool_handle.clone());
                r.pe_id = u.pool_element.pe_id.0;
            }
            rserpool_proto::EnrpMessage::HandleTableResponse(t) => {
                r.counter = t.entries.iter().map(|e| e.pool_elements.len() as u64).sum();
            }
            // RSPLIB counts the peers of a List Response (sent: its peer list).
            rserpool_proto::EnrpMessage::ListResponse(l) => r.counter = l.servers.len() as u64,
            rserpool_proto::EnrpMessage::InitTakeover(t) => r.target = t.target,
            rserpool_proto::EnrpMessage::InitTakeoverAck(t) => r.target = t.target,
            rserpool_proto::EnrpMessage::TakeoverServer(t) => r.target = t.target,
            _ => {}
        }
        self.actions.push_back(r);
    }

    fn autoclose_period(&self) -> Option<Duration> {
        self.cfg
            .autoclose_timeout
            .map(|t| (t / 3).max(Duration::from_millis(1)))
    }

    /// Closes accepted ASAP (or still unused) associations without PEs that received no
    /// message for three whole sweep periods (one timeout; at most four periods).
    fn autoclose_sweep(&mut self, now: Instant) {
        let Some(period) = self.autoclose_period() else {
            return;
        };
        self.autoclose_at = Some(now + period);
        let mut idle: Vec<AssocId> = Vec::new();
        for (id, a) in self.assocs.iter_mut() {
            if a.origin() != Origin::Accepted || a.role() == Role::Enrp || a.elements > 0 {
                continue;
            }
            if a.idle_sweep() {
                idle.push(id);
            }
        }
        for id in idle {
            self.stats.autoclosed += 1;
            self.assoc_lost(now, id, AssocDownReason::Closed);
            self.close(id, false);
        }
    }

    // ----------------------------------------------------------------------------------
    // output helpers

    fn event(&mut self, e: RegistrarEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn protocol_error(
        &mut self,
        assoc: Option<AssocId>,
        from: Option<SocketAddr>,
        protocol: Option<Protocol>,
        message_type: Option<u8>,
        kind: ProtocolErrorKind,
    ) {
        if self.cfg.protocol_error_events {
            self.event(RegistrarEvent::ProtocolError {
                assoc,
                from,
                protocol,
                message_type,
                kind,
            });
        }
    }

    fn count_sent(&mut self, protocol: Protocol, payload: &Bytes) {
        let slot = type_slot(payload.first().copied().unwrap_or(0));
        match protocol {
            Protocol::Asap => self.stats.asap_sent[slot] += 1,
            Protocol::Enrp => self.stats.enrp_sent[slot] += 1,
        }
    }

    fn transmit(&mut self, assoc: AssocId, protocol: Protocol, payload: Bytes) {
        self.count_sent(protocol, &payload);
        if protocol == Protocol::Enrp {
            self.enrp_action(self.clock, ActionDirection::Send, false, &payload);
        }
        self.out
            .push_back(Output::Transmit(Transmit::assoc(assoc, protocol, payload)));
    }

    fn transmit_udp(&mut self, to: SocketAddr, protocol: Protocol, payload: Bytes) {
        self.count_sent(protocol, &payload);
        if protocol == Protocol::Enrp {
            self.enrp_action(self.clock, ActionDirection::Send, true, &payload);
        }
        self.out
            .push_back(Output::Transmit(Transmit::udp(to, protocol, payload)));
    }

    /// Makes sure the encode buffer has room, so that encoding does not reallocate per
    /// message: one allocation serves many messages (each frozen message shares it).
    fn reserve(&mut self, need: usize) {
        if self.buf.capacity() - self.buf.len() < need.max(4096) {
            self.buf.reserve(need.max(64 * 1024));
        }
    }

    /// Encodes a typed message.
    fn encode(&mut self, m: &impl rserpool_proto::Encode) -> Bytes {
        self.buf.clear();
        self.reserve(m.encoded_len());
        m.encode(&mut self.buf);
        self.buf.split().freeze()
    }

    // ----------------------------------------------------------------------------------
    // time

    /// `d` scaled by a uniform factor in `[1 - frac, 1 + frac]`.
    fn jittered(&mut self, d: Duration, frac: f64) -> Duration {
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 0.99)
        } else {
            0.0
        };
        if frac == 0.0 {
            return d;
        }
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(1.0 - frac + 2.0 * frac * u)
    }

    fn keep_alive_due(&mut self, now: Instant) -> Instant {
        let t = self.cfg.timers;
        now + self.jittered(t.keep_alive_transmission_interval, t.keep_alive_jitter)
    }

    fn run_start(&mut self, now: Instant) {
        self.start_at = None;
        let t = self.cfg.timers;
        let hb = self.jittered(t.peer_heartbeat_cycle, 0.125);
        self.heartbeat_at = Some(now + hb);
        let solicit = !self.peers.is_empty() || self.cfg.enrp_announce.is_some();
        if solicit {
            self.startup_until = Some(now + t.mentor_discovery_timeout);
            // Active discovery: ask the multicast channel and every static peer to answer
            // at once (RSPLIB waits 5 s in silence).
            self.send_multicast_presence(true);
            let keys: Vec<u32> = self.peers.iter().map(|p| p.key).collect();
            for k in keys {
                self.send_presence_to(k, true);
            }
        } else {
            self.end_startup(now);
        }
    }

    fn end_startup(&mut self, now: Instant) {
        if self.startup_done {
            return;
        }
        self.startup_done = true;
        self.startup_until = None;
        let mentor = self.mentor();
        let elements = if mentor.is_some() {
            self.mentor_imported
        } else {
            0
        };
        self.event(RegistrarEvent::MentorSyncComplete { mentor, elements });
        if self.cfg.asap_announce.is_some() {
            self.announce_at = Some(now);
        }
    }

    fn process_timers(&mut self, now: Instant) {
        if self.start_at.is_some_and(|t| t <= now) {
            self.run_start(now);
        }
        let mut due = core::mem::take(&mut self.scratch_due);
        due.clear();
        self.hs.expired(now, &mut due);
        for d in due.drain(..) {
            self.element_timer(now, d);
        }
        self.scratch_due = due;
        self.peer_timers(now);
        self.takeover_timers(now);
        if self.startup_until.is_some_and(|t| t <= now) {
            self.end_startup(now);
        }
        if self.announce_at.is_some_and(|t| t <= now) {
            self.send_server_announce();
            let d = self.jittered(self.cfg.timers.server_announce_cycle, 0.125);
            self.announce_at = Some(now + d);
        }
        if self.heartbeat_at.is_some_and(|t| t <= now) {
            self.heartbeat(now);
            let d = self.jittered(self.cfg.timers.peer_heartbeat_cycle, 0.125);
            self.heartbeat_at = Some(now + d);
        }
        if self.hide_next.is_some_and(|t| t <= now) {
            self.unhide_expired(now);
        }
        if self.autoclose_at.is_some_and(|t| t <= now) {
            self.autoclose_sweep(now);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        take(self.start_at);
        take(self.startup_until);
        take(self.announce_at);
        take(self.heartbeat_at);
        take(self.hide_next);
        take(self.autoclose_at);
        take(self.hs.next_deadline());
        for p in &self.peers {
            take(p.deadline());
        }
        for t in &self.takeovers {
            take(Some(t.expiry));
        }
        best
    }

    // ----------------------------------------------------------------------------------
    // associations

    fn assoc_entry(&mut self, assoc: AssocId) -> &mut Assoc {
        self.assocs
            .get_or_insert_with(assoc, || Assoc::new(Origin::Accepted, Role::Unknown))
    }

    /// Opens an association (machine-chosen id) and records it.
    fn connect(
        &mut self,
        addrs: SmallVec<[SocketAddr; 4]>,
        transport: rserpool_proto::transport::TransportProtocol,
        origin: Origin,
        peer: u32,
    ) -> AssocId {
        let id = self.alloc.allocate();
        let role = match origin {
            Origin::EnrpPeer => Role::Enrp,
            _ => Role::Asap,
        };
        if peer != 0 {
            self.assoc_peers.insert(id, peer);
        }
        let mut a = Assoc::new(origin, role);
        if let Some(list) = a.set_peer_addrs(&addrs, assoc::MAX_ASSOC_ADDRS) {
            self.multi.insert(id, list);
        }
        self.assocs.insert(id, a);
        let channel = match origin {
            Origin::EnrpPeer => crate::ChannelKind::Enrp,
            _ => crate::ChannelKind::AsapToPoolElement,
        };
        self.out.push_back(Output::Connect {
            assoc: id,
            addrs,
            transport,
            channel,
        });
        id
    }

    /// The peer addresses of an association (canonical, no duplicates).
    fn assoc_ips(&self, assoc: AssocId) -> assoc::AddrList {
        match self.assocs.get(&assoc) {
            Some(a) if a.is_multi() => self.multi.get(&assoc).cloned().unwrap_or_default(),
            Some(a) => a.single().into_iter().collect(),
            None => assoc::AddrList::new(),
        }
    }

    fn close(&mut self, assoc: AssocId, abort: bool) {
        self.out.push_back(Output::Close { assoc, abort });
    }

    fn dispatch_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        let Some(protocol) = Protocol::from_ppid(ppid) else {
            self.wrong_ppid(assoc, ppid);
            return;
        };
        let entry = self.assoc_entry(assoc);
        entry.mark_active();
        match (entry.role(), protocol) {
            (Role::Unknown, Protocol::Asap) => entry.set_role(Role::Asap),
            (Role::Unknown, Protocol::Enrp) => entry.set_role(Role::Enrp),
            (Role::Asap, Protocol::Asap) | (Role::Enrp, Protocol::Enrp) => {}
            _ => {
                self.wrong_ppid(assoc, ppid);
                return;
            }
        }
        match protocol {
            Protocol::Asap => self.handle_asap(now, assoc, &data),
            Protocol::Enrp => self.handle_enrp(now, enrp::Source::Assoc(assoc), &data),
        }
    }

    fn wrong_ppid(&mut self, assoc: AssocId, ppid: u32) {
        self.stats.wrong_ppid += 1;
        self.protocol_error(
            Some(assoc),
            None,
            None,
            None,
            ProtocolErrorKind::WrongPpid(ppid),
        );
    }

    fn assoc_lost(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        let Some(a) = self.assocs.remove(&assoc) else {
            return;
        };
        self.buckets.remove(&assoc);
        self.pending.remove(&assoc);
        self.multi.remove(&assoc);
        let peer = self.assoc_peers.remove(&assoc).unwrap_or(0);
        if a.elements > 0 || a.role() == Role::Asap {
            self.remove_assoc_elements(now, assoc);
        }
        if a.origin() == Origin::PoolElement {
            self.probe_assoc_failed(now, assoc);
        }
        if peer != 0 {
            self.peer_assoc_lost(now, assoc, peer, reason);
        }
    }
}

impl Machine for Registrar {
    type Event = RegistrarEvent;

    fn handle_assoc_id_slot_bits(&mut self, bits: u32) {
        self.assocs.set_slot_bits(bits);
        self.hs.set_assoc_id_slot_bits(bits);
    }

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        self.clock = now;
        let a = self.assoc_entry(assoc);
        a.mark_active();
        match a.set_peer_addrs(peer_addrs, assoc::MAX_ASSOC_ADDRS) {
            Some(list) => {
                self.multi.insert(assoc, list);
            }
            None => {
                self.multi.remove(&assoc);
            }
        }
    }

    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.clock = now;
        self.assoc_lost(now, assoc, reason);
        self.sample_sizes(now);
    }

    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.clock = now;
        self.dispatch_message(now, assoc, ppid, data);
        self.sample_sizes(now);
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.clock = now;
        self.handle_datagram_inner(now, from, ppid, data);
        self.sample_sizes(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.clock = now;
        self.process_timers(now);
        self.sample_sizes(now);
    }

    fn poll_output(&mut self) -> Option<Output<RegistrarEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline()
    }

    /// The start-up download from the mentor (until the start-up ends) and every handle table
    /// walk we serve (from a response with the M flag to the one without).
    fn poll_bulk_transfer(&mut self) -> Option<BulkTransfer> {
        let downloading = !self.startup_done;
        let now = self.peers.iter().filter_map(|p| {
            let bulk = (p.mentor && downloading) || p.serve.is_some();
            p.assoc.filter(|_| bulk)
        });
        self.bulk.poll(now)
    }
}

impl Registrar {
    fn handle_datagram_inner(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        match Protocol::from_ppid(ppid) {
            Some(Protocol::Enrp) => self.handle_enrp(now, enrp::Source::Udp(from), &data),
            Some(Protocol::Asap) => {
                // Other registrars' Server Announces: nothing to learn for a registrar.
                let ty = data.first().copied().unwrap_or(0);
                self.stats.asap_received[type_slot(ty)] += 1;
                self.stats.ignored += 1;
            }
            None => {
                self.stats.wrong_ppid += 1;
                self.protocol_error(
                    None,
                    Some(from),
                    None,
                    None,
                    ProtocolErrorKind::WrongPpid(ppid),
                );
            }
        }
    }
}
