//! ENRP (RFC 5353 §3): the peer list, Presence, failure detection, handlespace audit and
//! re-synchronisation, handle table transfer, handle updates and peer lists.

use bytes::{Bytes, BytesMut};
use core::net::{IpAddr, SocketAddr};
use smallvec::SmallVec;

use rserpool_proto::enrp::{
    EnrpError, HandleTableRequest, HandleTableResponse, HandleUpdate, ListRequest, ListResponse,
    Presence, UpdateAction, msg_type,
};
use rserpool_proto::ids::{PoolHandle, ServerId};
use rserpool_proto::param::{
    ErrorCause, OperationError, PeChecksum, PoolElementParameter, ServerInformation, cause,
};
use rserpool_proto::transport::{TransportParameter, TransportProtocol};
use rserpool_proto::{DecodeError, EnrpMessage};

use crate::handlespace::{PoolElementInfo, TimerKind, WalkCursor};
use crate::{AssocDownReason, AssocId, BulkTransfer, Instant, Protocol};
use std::collections::VecDeque;

use super::assoc::{Origin, Role};
use super::encode::{info_param, param_info, table_response};
use super::events::{PeerDownReason, ProtocolErrorKind, RegistrarEvent, RemovalReason, type_slot};
use super::security::{ip_in, peer_allowed, scope_ok};
use super::{PeKey, ProbeKind, Registrar};

/// Where an ENRP message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// Over an association.
    Assoc(AssocId),
    /// As a UDP datagram (multicast channel).
    Udp(SocketAddr),
}

/// State of a peer-list entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// A static entry whose registrar has not answered yet (server id 0).
    Unknown,
    /// Heard from within MAX-TIME-LAST-HEARD.
    Alive,
    /// Silent: a Presence with reply-required is out, MAX-TIME-NO-RESPONSE running.
    Probing,
    /// Declared dead; we are taking its PEs over.
    TakingOver,
}

/// A read-only view of a peer-list entry.
#[derive(Clone, Copy, Debug)]
pub struct PeerView<'a> {
    /// Its server identifier (0 for a static entry not heard from yet).
    pub server_id: ServerId,
    /// Its ENRP addresses (learned, or configured for static entries).
    pub addresses: &'a [SocketAddr],
    /// Configured statically.
    pub is_static: bool,
    /// Liveness state.
    pub state: PeerState,
    /// The association used to reach it, if any.
    pub assoc: Option<AssocId>,
    /// It is our mentor.
    pub mentor: bool,
    /// The ownership checksum it last announced over SCTP.
    pub checksum: Option<u16>,
    /// A handle table synchronisation with it is running.
    pub syncing: bool,
    /// We are serving it a handle table walk: our last Handle Table Response to it had the
    /// M flag (more to send), so its next Handle Table Request continues the walk.
    pub serving: bool,
}

/// The associations carrying a handle table transfer, as last told to the driver
/// ([`crate::Machine::poll_bulk_transfer`]): the start-up download from the mentor, and every
/// walk we serve (our last response to that peer had the M flag).
#[derive(Debug, Default)]
pub(super) struct BulkTransfers {
    /// Reported running and not reported ended since.
    running: SmallVec<[AssocId; 2]>,
    /// Changes not yet polled, in the order to report them.
    pending: VecDeque<BulkTransfer>,
}

impl BulkTransfers {
    /// The next change, comparing `now` (the associations carrying a transfer now) with what
    /// was reported when no change is pending: ends first, then starts.
    pub(super) fn poll(&mut self, now: impl Iterator<Item = AssocId>) -> Option<BulkTransfer> {
        if self.pending.is_empty() {
            let now: SmallVec<[AssocId; 2]> = now.collect();
            let pending = &mut self.pending;
            self.running.retain(|a| {
                let keep = now.contains(a);
                if !keep {
                    pending.push_back(BulkTransfer {
                        assoc: *a,
                        running: false,
                    });
                }
                keep
            });
            for a in now {
                if !self.running.contains(&a) {
                    self.running.push(a);
                    self.pending.push_back(BulkTransfer {
                        assoc: a,
                        running: true,
                    });
                }
            }
        }
        self.pending.pop_front()
    }
}

pub(super) type MarkSet = hashbrown::HashSet<PeKey, foldhash::fast::FixedState>;

/// A running handle table download from a peer.
#[derive(Debug)]
pub(super) struct Sync {
    /// W flag of the requests.
    pub own_children: bool,
    /// W=1 audit: the PEs confirmed so far (the rest of the peer's PEs are purged at the
    /// end).
    pub seen: Option<MarkSet>,
    /// PEs imported.
    pub imported: usize,
}

#[derive(Debug)]
pub(super) struct Peer {
    pub key: u32,
    pub id: ServerId,
    pub is_static: bool,
    pub static_addrs: SmallVec<[SocketAddr; 2]>,
    pub addrs: SmallVec<[SocketAddr; 2]>,
    pub assoc: Option<AssocId>,
    pub state: PeerState,
    pub until: Option<Instant>,
    pub checksum: Option<u16>,
    pub listsync: bool,
    pub mentor: bool,
    pub sync: Option<Sync>,
    /// Continuation of the table walk we serve it: (W flag, cursor).
    pub serve: Option<(bool, WalkCursor)>,
    /// Its last Handle Table Response to us said "more" (M=1) and no later one ended the
    /// walk: an RSPLIB server continues that walk at our next request whatever its W flag,
    /// so a re-synchronisation started now would not see the table from its start.
    pub walk_open: bool,
    /// Registrars we acknowledged (or will acknowledge) as taking this one over.
    pub takers: SmallVec<[ServerId; 2]>,
    /// Initiators whose Init Takeover Ack waits until we find this peer dead ourselves.
    pub deferred: SmallVec<[ServerId; 2]>,
}

impl Peer {
    fn new(key: u32, id: ServerId, is_static: bool) -> Peer {
        Peer {
            key,
            id,
            is_static,
            static_addrs: SmallVec::new(),
            addrs: SmallVec::new(),
            assoc: None,
            state: if id == ServerId::NONE {
                PeerState::Unknown
            } else {
                PeerState::Alive
            },
            until: None,
            checksum: None,
            listsync: false,
            mentor: false,
            sync: None,
            serve: None,
            walk_open: false,
            takers: SmallVec::new(),
            deferred: SmallVec::new(),
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.state {
            PeerState::Alive | PeerState::Probing => self.until,
            _ => None,
        }
    }

    pub(super) fn view(&self) -> PeerView<'_> {
        PeerView {
            server_id: self.id,
            addresses: if self.addrs.is_empty() {
                &self.static_addrs
            } else {
                &self.addrs
            },
            is_static: self.is_static,
            state: self.state,
            assoc: self.assoc,
            mentor: self.mentor,
            checksum: self.checksum,
            syncing: self.sync.is_some(),
            serving: self.serve.is_some(),
        }
    }

    pub(super) fn sync_marks(&self) -> usize {
        self.sync
            .as_ref()
            .and_then(|s| s.seen.as_ref())
            .map_or(0, |s| s.len())
    }

    fn connect_addrs(&self) -> SmallVec<[SocketAddr; 4]> {
        if self.addrs.is_empty() {
            self.static_addrs.iter().copied().collect()
        } else {
            self.addrs.iter().copied().collect()
        }
    }

    fn ips(&self) -> SmallVec<[IpAddr; 4]> {
        self.addrs
            .iter()
            .chain(self.static_addrs.iter())
            .map(SocketAddr::ip)
            .collect()
    }
}

/// Why an ENRP Pool Element was not imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ImportRefusal {
    /// Claims us as home, names no home, or comes from a server that is not its home.
    Ownership,
    /// Invalid values or pool inconsistency.
    Invalid,
    /// A handlespace limit.
    Limit,
}

const MAX_PEER_ADDRS: usize = 8;

impl Registrar {
    // ----------------------------------------------------------------------------------
    // peer list

    pub(super) fn add_static_peer(&mut self, addrs: Vec<SocketAddr>) {
        if addrs.is_empty() || self.peers.len() >= self.cfg.limits.max_peers {
            return;
        }
        let key = self.next_peer_key;
        self.next_peer_key += 1;
        let mut p = Peer::new(key, ServerId::NONE, true);
        p.static_addrs = addrs.into_iter().take(MAX_PEER_ADDRS).collect();
        self.peers.push(p);
    }

    pub(super) fn peer_index(&self, key: u32) -> Option<usize> {
        if key == 0 {
            return None;
        }
        self.peers.iter().position(|p| p.key == key)
    }

    fn peer_by_id(&self, id: ServerId) -> Option<usize> {
        if id == ServerId::NONE {
            return None;
        }
        self.peers.iter().position(|p| p.id == id)
    }

    /// True if `id` is a peer we currently hear from.
    fn is_live_peer(&self, id: ServerId) -> bool {
        self.peers
            .iter()
            .any(|p| p.id == id && p.state == PeerState::Alive && p.takers.is_empty())
    }

    /// The peer entry the message's sender is bound to over this association, if any.
    fn bound_peer(&self, assoc: AssocId, sender: ServerId) -> Option<usize> {
        if sender == ServerId::NONE {
            return None;
        }
        let i = self.peer_index(*self.assoc_peers.get(&assoc)?)?;
        (self.peers[i].id == sender).then_some(i)
    }

    /// The association to a peer, opening one if needed.
    fn peer_assoc(&mut self, idx: usize) -> Option<AssocId> {
        let p = self.peers.get(idx)?;
        if let Some(a) = p.assoc
            && self.assocs.contains_key(&a)
        {
            return Some(a);
        }
        let addrs = p.connect_addrs();
        if addrs.is_empty() {
            return None;
        }
        let key = p.key;
        let a = self.connect(addrs, TransportProtocol::Sctp, Origin::EnrpPeer, key);
        self.peers[idx].assoc = Some(a);
        Some(a)
    }

    pub(super) fn send_to_peer(&mut self, idx: usize, payload: Bytes) {
        if let Some(a) = self.peer_assoc(idx) {
            self.transmit(a, Protocol::Enrp, payload);
        }
    }

    /// `bytes` (an encoded ENRP message) with the receiver id replaced.
    fn with_receiver(bytes: &Bytes, receiver: ServerId, flags: Option<u8>) -> Bytes {
        let mut m = BytesMut::from(&bytes[..]);
        if let Some(r) = m.get_mut(8..12) {
            r.copy_from_slice(&receiver.0.to_be_bytes());
        }
        if let (Some(f), Some(b)) = (flags, m.get_mut(1)) {
            *b = f;
        }
        m.freeze()
    }

    pub(super) fn remove_peer(&mut self, idx: usize, reason: PeerDownReason) {
        let Some(p) = self.peers.get_mut(idx) else {
            return;
        };
        let id = p.id;
        let key = p.key;
        if self.mentor == Some(key) && p.sync.is_some() {
            // The mentor died during the download: the start-up phase ends by its timer.
            p.sync = None;
        }
        if let Some(a) = p.assoc {
            self.assoc_peers.remove(&a);
        }
        if p.is_static {
            p.id = ServerId::NONE;
            p.state = PeerState::Unknown;
            p.until = None;
            p.addrs.clear();
            p.assoc = None;
            p.checksum = None;
            p.listsync = false;
            p.sync = None;
            p.serve = None;
            p.walk_open = false;
            p.takers.clear();
            p.deferred.clear();
            // A new key, so that associations bound to the old incarnation are not
            // taken for it.
            p.key = self.next_peer_key;
            self.next_peer_key += 1;
        } else {
            self.peers.remove(idx);
        }
        if id != ServerId::NONE {
            // A peer that left the list cannot acknowledge our takeovers any more: stop
            // waiting for it (`takeover_timers` completes takeovers nobody else must agree
            // to). Otherwise one dead or short-lived peer (an hsdump probe) makes every
            // takeover running meanwhile expire.
            for t in &mut self.takeovers {
                t.need.retain(|n| *n != id);
            }
            self.event(RegistrarEvent::PeerDown {
                server_id: id,
                reason,
            });
        }
    }

    // ----------------------------------------------------------------------------------
    // presence

    fn presence_bytes(&mut self, reply_required: bool, receiver: ServerId) -> Bytes {
        let checksum = Some(PeChecksum(self.hs.owner_checksum(self.id)));
        let server_information = self.cfg.enrp_transport.clone().map(|t| ServerInformation {
            server_id: self.id,
            transport: t,
        });
        self.encode(&EnrpMessage::Presence(Presence {
            reply_required,
            reserved_flags: 0,
            sender: self.id,
            receiver,
            checksum,
            server_information,
            skipped: Vec::new(),
        }))
    }

    pub(super) fn send_presence_to(&mut self, key: u32, reply_required: bool) {
        let Some(i) = self.peer_index(key) else {
            return;
        };
        let b = self.presence_bytes(reply_required, self.peers[i].id);
        self.send_to_peer(i, b);
    }

    pub(super) fn send_multicast_presence(&mut self, reply_required: bool) {
        if let Some(g) = self.cfg.enrp_announce {
            let b = self.presence_bytes(reply_required, ServerId::NONE);
            self.transmit_udp(g, Protocol::Enrp, b);
        }
    }

    /// PEER-HEARTBEAT-CYCLE: a Presence to the multicast channel and to every peer.
    pub(super) fn heartbeat(&mut self, _now: Instant) {
        self.send_multicast_presence(false);
        let keys: Vec<u32> = self
            .peers
            .iter()
            .filter(|p| p.state != PeerState::TakingOver)
            .map(|p| p.key)
            .collect();
        for k in keys {
            self.send_presence_to(k, false);
        }
    }

    /// Presence to everybody (we are alive: answer to an Init Takeover naming us).
    pub(super) fn announce_alive(&mut self) {
        self.send_multicast_presence(false);
        let keys: Vec<u32> = self.peers.iter().map(|p| p.key).collect();
        for k in keys {
            self.send_presence_to(k, false);
        }
    }

    /// Finds or creates the peer entry for a Presence. `Err` = refused.
    fn resolve_peer(
        &mut self,
        sender: ServerId,
        ips: &[IpAddr],
        port: u16,
        via: Option<AssocId>,
    ) -> Result<(usize, bool), ProtocolErrorKind> {
        // 1. An association already bound to an entry (e.g. the one we opened to a static
        //    peer) speaks for that entry only.
        if let Some(a) = via
            && let Some(i) = self.assoc_peers.get(&a).and_then(|&k| self.peer_index(k))
        {
            let p = &self.peers[i];
            if p.id == sender {
                return Ok((i, false));
            }
            let ours = self
                .assocs
                .get(&a)
                .is_some_and(|x| x.origin() == Origin::EnrpPeer);
            if p.id != ServerId::NONE && ours {
                // We opened it to that entry's address (a probe after its association was
                // lost) and another server answers there: the registrar at that address was
                // restarted with a new id. The association is no longer the old entry's (it
                // times out as usual, its PEs are taken over by the rules); the new server
                // is resolved below like any other sender.
                if let Some(e) = self.peers.get_mut(i) {
                    e.assoc = None;
                }
                self.assoc_peers.remove(&a);
                return self.resolve_peer(sender, ips, port, None);
            }
            if p.id != ServerId::NONE {
                return Err(ProtocolErrorKind::NotAPeer { sender });
            }
            // A static entry learns its id; a dynamic duplicate (learned meanwhile from a
            // list or the multicast channel) merges into it.
            let mut i = i;
            if let Some(j) = self.peer_by_id(sender) {
                if self.peers[j].is_static {
                    return Err(ProtocolErrorKind::NotAPeer { sender });
                }
                if let Some(a) = self.peers[j].assoc {
                    self.assoc_peers.remove(&a);
                }
                self.peers.remove(j);
                if j < i {
                    i -= 1;
                }
            }
            self.peers[i].id = sender;
            return Ok((i, true));
        }
        // 2. A known id must come from the addresses we know it by.
        if let Some(i) = self.peer_by_id(sender) {
            let known = self.peers[i].ips();
            return if ips.iter().any(|ip| ip_in(*ip, &known)) {
                Ok((i, false))
            } else {
                Err(ProtocolErrorKind::NotAPeer { sender })
            };
        }
        // 3. A static entry not heard from yet.
        if let Some(i) = self.peers.iter().position(|p| {
            p.is_static
                && p.id == ServerId::NONE
                && p.static_addrs
                    .iter()
                    .any(|sa| sa.port() == port && ip_in(sa.ip(), ips))
        }) {
            self.peers[i].id = sender;
            return Ok((i, true));
        }
        // 4. A new dynamic peer, if the policy and the limit allow.
        if !peer_allowed(&self.cfg.peer_policy, ips, false) {
            return Err(ProtocolErrorKind::NotAPeer { sender });
        }
        if self.peers.len() >= self.cfg.limits.max_peers {
            return Err(ProtocolErrorKind::LimitReached);
        }
        let key = self.next_peer_key;
        self.next_peer_key += 1;
        self.peers.push(Peer::new(key, sender, false));
        Ok((self.peers.len() - 1, true))
    }

    fn on_presence(&mut self, now: Instant, src: Source, p: &Presence) {
        let sender = p.sender;
        if sender == ServerId::NONE || sender == self.id {
            self.stats.ignored += 1;
            return;
        }
        let min = self.cfg.min_address_scope;
        let (ips, port, via): (SmallVec<[IpAddr; 4]>, u16, Option<AssocId>) = match src {
            Source::Assoc(a) => {
                let Some(x) = self.assocs.get(&a) else {
                    return;
                };
                let x_ips = self.assoc_ips(a);
                match &p.server_information {
                    Some(si) => (
                        si.transport
                            .addresses
                            .iter()
                            .copied()
                            .filter(|ip| scope_ok(*ip, min) && ip_in(*ip, &x_ips))
                            .take(MAX_PEER_ADDRS)
                            .collect(),
                        si.transport.port,
                        Some(a),
                    ),
                    None => (
                        x_ips
                            .iter()
                            .copied()
                            .filter(|ip| scope_ok(*ip, min))
                            .take(MAX_PEER_ADDRS)
                            .collect(),
                        x.port,
                        Some(a),
                    ),
                }
            }
            Source::Udp(from) => {
                let Some(si) = &p.server_information else {
                    self.stats.ignored += 1;
                    return;
                };
                let ips = if scope_ok(from.ip(), min) {
                    smallvec::smallvec![from.ip()]
                } else {
                    SmallVec::new()
                };
                (ips, si.transport.port, None)
            }
        };
        if ips.is_empty() || port == 0 {
            self.stats.ignored += 1;
            self.protocol_error(
                via,
                None,
                Some(Protocol::Enrp),
                Some(msg_type::PRESENCE),
                ProtocolErrorKind::Unexpected,
            );
            return;
        }
        let (i, new) = match self.resolve_peer(sender, &ips, port, via) {
            Ok(x) => x,
            Err(kind) => {
                if kind == ProtocolErrorKind::LimitReached {
                    self.stats.limit_refusals += 1;
                } else {
                    self.stats.not_peer_refusals += 1;
                }
                let from = match src {
                    Source::Udp(f) => Some(f),
                    Source::Assoc(_) => None,
                };
                self.protocol_error(
                    via,
                    from,
                    Some(Protocol::Enrp),
                    Some(msg_type::PRESENCE),
                    kind,
                );
                return;
            }
        };
        let key = self.peers[i].key;
        if let Some(a) = via {
            if let Some(x) = self.assocs.get_mut(&a) {
                x.set_role(Role::Enrp);
                self.assoc_peers.insert(a, key);
            }
            let cur = self.peers[i].assoc;
            let switch = match cur.and_then(|c| self.assocs.get(&c).map(|x| (c, x))) {
                None => true,
                // The peer speaks to us over an association it set up while ours to it leaves
                // from another endpoint (both set one up at once, or ours could not leave from
                // our ENRP port): use the peer's. RSPLIB, with one ENRP socket, drops a
                // Presence that does not come from the port of its Server Information, and
                // sends its own only on the association between the two ENRP endpoints.
                // (Only ever towards an accepted one, so two of ours do not swap forever.)
                Some((c, x)) => {
                    c != a
                        && x.origin() == Origin::EnrpPeer
                        && self
                            .assocs
                            .get(&a)
                            .is_some_and(|y| y.origin() == Origin::Accepted)
                }
            };
            if switch {
                self.peers[i].assoc = Some(a);
            }
        }
        {
            let peer = &mut self.peers[i];
            peer.addrs = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            peer.state = PeerState::Alive;
            peer.until = Some(now + self.cfg.timers.peer_max_time_last_heard);
            peer.takers.clear();
            peer.deferred.clear();
        }
        // Answer first, so that the peer knows us before our requests arrive.
        if p.reply_required {
            let b = self.presence_bytes(false, sender);
            match via {
                Some(a) => self.transmit(a, Protocol::Enrp, b),
                None => self.send_to_peer(i, b),
            }
        }
        if new {
            self.event(RegistrarEvent::PeerUp { server_id: sender });
            if !p.reply_required || via.is_none() {
                self.send_presence_to(key, true);
            }
        }
        // A Presence from a registrar we are taking over: it is alive after all.
        self.abandon_takeover(sender);
        let Some(i) = self.peer_index(key) else {
            return;
        };
        // Mentor: the first registrar heard from during the start-up phase.
        if !self.startup_done && self.startup_until.is_some() && self.mentor.is_none() {
            self.mentor = Some(key);
            let peer = &mut self.peers[i];
            peer.mentor = true;
            peer.listsync = true;
            peer.sync = Some(Sync {
                own_children: false,
                seen: None,
                imported: 0,
            });
            self.send_list_request(i);
            self.send_table_request(i, false);
        }
        // Audit (SCTP only): compare its ownership checksum with our view of it.
        if via.is_some() {
            if let Some(cs) = p.checksum {
                self.peers[i].checksum = Some(cs.0);
                if self.peers[i].sync.is_none() && self.hs.owner_checksum(sender) != cs.0 {
                    self.start_resync(i);
                }
            }
            if !self.peers[i].listsync {
                self.peers[i].listsync = true;
                self.send_list_request(i);
            }
        }
    }

    fn send_list_request(&mut self, i: usize) {
        let receiver = self.peers[i].id;
        let list = self.encode(&EnrpMessage::ListRequest(ListRequest {
            reserved_flags: 0,
            sender: self.id,
            receiver,
            skipped: Vec::new(),
        }));
        self.send_to_peer(i, list);
    }

    // ----------------------------------------------------------------------------------
    // failure detection

    pub(super) fn peer_timers(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .peers
            .iter()
            .filter(|p| p.deadline().is_some_and(|t| t <= now))
            .map(|p| p.key)
            .collect();
        for k in due {
            let Some(i) = self.peer_index(k) else {
                continue;
            };
            match self.peers[i].state {
                PeerState::Alive => {
                    // MAX-TIME-LAST-HEARD: ask it to answer.
                    self.peers[i].state = PeerState::Probing;
                    self.peers[i].until = Some(now + self.cfg.timers.peer_max_time_no_response);
                    self.send_presence_to(k, true);
                }
                PeerState::Probing => self.peer_dead(now, i),
                _ => {}
            }
        }
    }

    /// MAX-TIME-NO-RESPONSE expired (RFC 5353 §3.4.3).
    fn peer_dead(&mut self, now: Instant, i: usize) {
        let p = &self.peers[i];
        let id = p.id;
        if !p.takers.is_empty() {
            let deferred = p.deferred.clone();
            for taker in deferred {
                self.send_takeover_ack(taker, id);
            }
            self.remove_peer(i, PeerDownReason::TakenOver);
        } else if self.hs.owner_element_count(id) > 0 {
            self.start_takeover(now, i);
        } else {
            self.remove_peer(i, PeerDownReason::NoResponse);
        }
    }

    /// The association to a peer went down: probe it at once (reconnect + Presence with
    /// reply-required) and start MAX-TIME-NO-RESPONSE now, instead of waiting for
    /// MAX-TIME-LAST-HEARD.
    pub(super) fn peer_assoc_lost(
        &mut self,
        now: Instant,
        assoc: AssocId,
        key: u32,
        reason: AssocDownReason,
    ) {
        let Some(i) = self.peer_index(key) else {
            return;
        };
        if self.peers[i].assoc != Some(assoc) {
            return;
        }
        self.peers[i].assoc = None;
        if reason == AssocDownReason::Closed {
            return;
        }
        if self.peers[i].state == PeerState::Alive {
            self.peers[i].state = PeerState::Probing;
            self.peers[i].until = Some(now + self.cfg.timers.peer_max_time_no_response);
            self.send_presence_to(key, true);
        }
    }

    // ----------------------------------------------------------------------------------
    // dispatch

    pub(super) fn handle_enrp(&mut self, now: Instant, src: Source, data: &Bytes) {
        let (msg, unrecognized) = match EnrpMessage::decode_with_unrecognized(data) {
            Ok(x) => x,
            Err(e) => {
                self.enrp_malformed(src, data, &e);
                return;
            }
        };
        let ty = msg.message_type();
        self.stats.enrp_received[type_slot(ty)] += 1;
        self.enrp_action(
            now,
            super::ActionDirection::Recv,
            matches!(src, Source::Udp(_)),
            data,
        );
        let sender = msg.sender();
        let assoc = match src {
            Source::Assoc(a) => a,
            Source::Udp(from) => {
                // Only Presence travels over the multicast channel.
                match &msg {
                    EnrpMessage::Presence(p) => self.on_presence(now, src, p),
                    _ => {
                        self.stats.ignored += 1;
                        self.protocol_error(
                            None,
                            Some(from),
                            Some(Protocol::Enrp),
                            Some(ty),
                            ProtocolErrorKind::Unexpected,
                        );
                    }
                }
                return;
            }
        };
        if sender == self.id {
            self.stats.ignored += 1;
            return;
        }
        if ty == rserpool_proto::enrp::msg_type::HANDLE_UPDATE {
            self.stats.handle_updates += 1;
        }
        if let EnrpMessage::Presence(p) = &msg {
            self.on_presence(now, src, p);
        } else if let Some(i) = self.bound_peer(assoc, sender) {
            // Anything from a peer shows it is alive.
            if self.peers[i].state == PeerState::Alive {
                self.peers[i].until = Some(now + self.cfg.timers.peer_max_time_last_heard);
            }
            match msg {
                EnrpMessage::HandleTableRequest(r) => self.on_table_request(assoc, i, &r),
                EnrpMessage::HandleTableResponse(r) => self.on_table_response(now, i, r),
                EnrpMessage::HandleUpdate(u) => self.on_handle_update(now, assoc, i, &u),
                EnrpMessage::ListRequest(_) => self.on_list_request(assoc, i),
                EnrpMessage::ListResponse(r) => self.on_list_response(now, i, &r),
                EnrpMessage::InitTakeover(m) => self.on_init_takeover(now, i, m.target),
                EnrpMessage::InitTakeoverAck(m) => self.on_init_takeover_ack(now, i, m.target),
                EnrpMessage::TakeoverServer(m) => self.on_takeover_server(now, i, m.target),
                // RSPLIB sends ENRP Errors with odd causes; nothing to do with them.
                _ => self.stats.ignored += 1,
            }
        } else {
            // Refused, but the "skip and report" parameters are still reported (RFC 5354
            // §3): the sender learns what we did not understand, as over ASAP.
            self.not_a_peer(now, assoc, &msg);
        }
        if let Some(error) = OperationError::unrecognized_parameters(&unrecognized) {
            self.stats.error_replies += 1;
            let b = self.encode(&EnrpMessage::Error(EnrpError {
                reserved_flags: 0,
                sender: self.id,
                receiver: sender,
                error,
                skipped: Vec::new(),
            }));
            self.transmit(assoc, Protocol::Enrp, b);
        }
    }

    fn not_a_peer(&mut self, _now: Instant, assoc: AssocId, msg: &EnrpMessage) {
        let sender = msg.sender();
        self.stats.not_peer_refusals += 1;
        self.protocol_error(
            Some(assoc),
            None,
            Some(Protocol::Enrp),
            Some(msg.message_type()),
            ProtocolErrorKind::NotAPeer { sender },
        );
        let reject = match msg {
            EnrpMessage::HandleTableRequest(_) => {
                Some(EnrpMessage::HandleTableResponse(HandleTableResponse {
                    reject: true,
                    sender: self.id,
                    receiver: sender,
                    ..Default::default()
                }))
            }
            EnrpMessage::ListRequest(_) => Some(EnrpMessage::ListResponse(ListResponse {
                reject: true,
                sender: self.id,
                receiver: sender,
                ..Default::default()
            })),
            _ => None,
        };
        if let Some(m) = reject {
            let b = self.encode(&m);
            self.transmit(assoc, Protocol::Enrp, b);
        }
    }

    fn enrp_malformed(&mut self, src: Source, data: &Bytes, e: &DecodeError) {
        self.stats.decode_errors += 1;
        let ty = data.first().copied();
        let reply_cause = if ty == Some(msg_type::ERROR) {
            None
        } else {
            e.operation_error()
        };
        let (assoc, from) = match src {
            Source::Assoc(a) => (Some(a), None),
            Source::Udp(f) => (None, Some(f)),
        };
        if let (Some(c), Some(a)) = (&reply_cause, assoc) {
            self.stats.error_replies += 1;
            let receiver = data
                .get(4..8)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let b = self.encode(&EnrpMessage::Error(EnrpError {
                reserved_flags: 0,
                sender: self.id,
                receiver: ServerId(receiver),
                error: OperationError::new(c.clone()),
                skipped: Vec::new(),
            }));
            self.transmit(a, Protocol::Enrp, b);
        }
        self.protocol_error(
            assoc,
            from,
            Some(Protocol::Enrp),
            ty,
            ProtocolErrorKind::Malformed {
                cause: reply_cause.map(|c| c.code),
                detail: e.to_string(),
            },
        );
    }

    fn enrp_error_to(&mut self, assoc: AssocId, receiver: ServerId, code: u16) {
        self.stats.error_replies += 1;
        let b = self.encode(&EnrpMessage::Error(EnrpError {
            reserved_flags: 0,
            sender: self.id,
            receiver,
            error: OperationError::new(ErrorCause::new(code, Bytes::new())),
            skipped: Vec::new(),
        }));
        self.transmit(assoc, Protocol::Enrp, b);
    }

    // ----------------------------------------------------------------------------------
    // handle table transfer

    fn send_table_request(&mut self, i: usize, own_children: bool) {
        let receiver = self.peers[i].id;
        let b = self.encode(&EnrpMessage::HandleTableRequest(HandleTableRequest {
            own_children_only: own_children,
            reserved_flags: 0,
            sender: self.id,
            receiver,
            skipped: Vec::new(),
        }));
        self.send_to_peer(i, b);
    }

    /// Checksum mismatch: re-synchronise the peer's PEs (W=1), marking ours and purging
    /// what its table no longer has.
    fn start_resync(&mut self, i: usize) {
        // Purge only after a walk seen from its start: if the peer's server may still hold
        // the cursor of an interrupted walk, import what it sends but remove nothing (the
        // next audit re-synchronises again if the checksums still differ).
        let seen = (!self.peers[i].walk_open).then(|| {
            MarkSet::with_hasher(foldhash::fast::FixedState::with_seed(self.rng.next_u64()))
        });
        self.peers[i].sync = Some(Sync {
            own_children: true,
            seen,
            imported: 0,
        });
        self.send_table_request(i, true);
    }

    /// Forgets a removed PE in the mark sets of running re-synchronisations.
    pub(super) fn sync_forget(&mut self, key: &PeKey) {
        for p in &mut self.peers {
            if let Some(s) = p.sync.as_mut().and_then(|s| s.seen.as_mut()) {
                s.remove(key);
            }
        }
    }

    fn on_table_request(&mut self, assoc: AssocId, i: usize, r: &HandleTableRequest) {
        let receiver = self.peers[i].id;
        // RSPLIB: a walk that ended with M=1 continues whatever the new W flag says (its
        // requester switches from W=0 to W=1 when its mentor phase ends mid-walk). A
        // requester of ours never purges after a walk it did not see from the start
        // (`Peer::walk_open`).
        let (own, cursor) = match self.peers[i].serve.take() {
            Some((w, c)) => (w, Some(c)),
            None => (r.own_children_only, None),
        };
        let owner = own.then_some(self.id);
        let max_bytes = self.cfg.max_table_response_bytes;
        self.buf.clear();
        self.reserve(max_bytes + 4096);
        let (b, next) = table_response(
            &mut self.buf,
            &self.hs,
            self.id,
            receiver,
            owner,
            cursor.as_ref(),
            self.cfg.max_elements_per_table_response,
            max_bytes,
        );
        self.peers[i].serve = next.map(|c| (own, c));
        self.transmit(assoc, Protocol::Enrp, b);
    }

    fn on_table_response(&mut self, now: Instant, i: usize, r: HandleTableResponse) {
        let Some(own) = self.peers[i].sync.as_ref().map(|s| s.own_children) else {
            self.stats.ignored += 1;
            self.protocol_error(
                self.peers[i].assoc,
                None,
                Some(Protocol::Enrp),
                Some(msg_type::HANDLE_TABLE_RESPONSE),
                ProtocolErrorKind::Unexpected,
            );
            return;
        };
        let sender = self.peers[i].id;
        if r.reject {
            // (`walk_open` stays: the peer may still hold the cursor of the walk.)
            self.peers[i].sync = None;
            if self.mentor == Some(self.peers[i].key) && !self.startup_done {
                // Refused (it did not know us yet): the next registrar heard from during
                // the start-up phase becomes the mentor, rather than waiting out the phase.
                self.peers[i].mentor = false;
                self.mentor = None;
            }
            return;
        }
        self.peers[i].walk_open = r.more;
        let key = self.peers[i].key;
        for entry in &r.entries {
            for pe in &entry.pool_elements {
                if own && pe.home_server_id != sender {
                    continue;
                }
                match self.import_replica(now, &entry.pool_handle, pe, sender, !own) {
                    Ok(handle) => {
                        let Some(i) = self.peer_index(key) else {
                            return;
                        };
                        if let Some(s) = self.peers[i].sync.as_mut() {
                            s.imported += 1;
                            if let Some(seen) = s.seen.as_mut() {
                                seen.insert((handle, pe.pe_id));
                            }
                        }
                    }
                    Err(ImportRefusal::Limit) => self.stats.limit_refusals += 1,
                    Err(_) => self.stats.ignored += 1,
                }
            }
        }
        let Some(i) = self.peer_index(key) else {
            return;
        };
        if r.more {
            self.send_table_request(i, own);
        } else {
            self.finish_sync(now, i);
        }
    }

    fn finish_sync(&mut self, now: Instant, i: usize) {
        let Some(sync) = self.peers[i].sync.take() else {
            return;
        };
        let id = self.peers[i].id;
        let key = self.peers[i].key;
        if let Some(seen) = sync.seen {
            // Purge: the peer's PEs that its table no longer lists.
            let stale: Vec<PeKey> = self
                .hs
                .walk_owner(id, None)
                .filter(|e| !seen.contains(&(e.pool_handle().clone(), e.pe_id())))
                .map(|e| (e.pool_handle().clone(), e.pe_id()))
                .collect();
            for (h, pe_id) in stale {
                self.remove_element(now, &h, pe_id, RemovalReason::Resynchronised);
            }
        }
        if self.mentor == Some(key) && !sync.own_children {
            self.mentor_imported = sync.imported;
            self.end_startup(now);
        }
    }

    /// Imports a Pool Element learned over ENRP from `sender` (Handle Update ADD or table
    /// entry). `any_home`: a W=0 (mentor) table entry may name any home; otherwise the PE's
    /// home must be the sender. Returns the stored pool handle.
    fn import_replica(
        &mut self,
        now: Instant,
        ph: &PoolHandle,
        pe: &PoolElementParameter,
        sender: ServerId,
        any_home: bool,
    ) -> Result<PoolHandle, ImportRefusal> {
        let home = pe.home_server_id;
        if home == ServerId::NONE || home == self.id || (!any_home && home != sender) {
            return Err(ImportRefusal::Ownership);
        }
        let max = self.cfg.limits.handlespace.max_pool_handle_len;
        if ph.is_empty() || ph.len() > max || pe.registration_life == 0 {
            return Err(ImportRefusal::Invalid);
        }
        let existing = self
            .hs
            .get(ph, pe.pe_id)
            .map(|e| (e.home_registrar(), e.pool_handle().clone()));
        if let Some((cur, h)) = &existing {
            if *cur == self.id {
                // Someone claims one of our PEs: we keep it, and check it is still alive.
                self.contest(now, (h.clone(), pe.pe_id));
                return Err(ImportRefusal::Ownership);
            }
            if *cur != home && *cur != sender && self.is_live_peer(*cur) {
                // Only its (live) home may move it.
                return Err(ImportRefusal::Ownership);
            }
        }
        let handle = match (&existing, self.hs.pool(ph)) {
            (Some((_, h)), _) => h.clone(),
            (None, Some(p)) => p.handle().clone(),
            (None, None) => PoolHandle::new(Bytes::copy_from_slice(ph.as_bytes())),
        };
        let info = param_info(pe);
        if let Err(e) = self.hs.register(&handle, &info, None) {
            return Err(match e {
                crate::handlespace::RegistrationError::LackOfResources(_) => ImportRefusal::Limit,
                _ => ImportRefusal::Invalid,
            });
        }
        let expiry = self
            .cfg
            .registration_life_unit
            .duration(info.registration_life)
            .map(|d| now + d);
        self.hs
            .set_timer(&handle, pe.pe_id, TimerKind::Expiry, expiry);
        let key = (handle.clone(), pe.pe_id);
        if home == sender
            && self
                .probes
                .get(&key)
                .is_some_and(|p| matches!(p.kind, ProbeKind::Hidden | ProbeKind::Reported))
        {
            // Refreshed by its home: no longer suspect.
            self.end_probe(&key);
        }
        Ok(handle)
    }

    /// A peer claimed one of our PEs: probe it with a keep-alive (at most once per
    /// keep-alive interval); when it answers we re-announce it.
    fn contest(&mut self, now: Instant, key: PeKey) {
        let interval = self.cfg.timers.keep_alive_transmission_interval;
        if self
            .contested
            .get(&key)
            .is_some_and(|&t| now.saturating_duration_since(t) < interval)
        {
            return;
        }
        if self.contested.len() >= self.hs.owner_element_count(self.id) + 16 {
            self.contested
                .retain(|_, t| now.saturating_duration_since(*t) < interval);
        }
        self.contested.insert(key.clone(), now);
        if !self.probes.contains_key(&key) {
            self.insert_probe(key.clone(), super::Probe::new(ProbeKind::Contested, now));
            if !self.send_keep_alive(now, &key, false) {
                self.end_probe(&key);
            }
        }
    }

    fn on_handle_update(&mut self, now: Instant, assoc: AssocId, i: usize, u: &HandleUpdate) {
        let sender = self.peers[i].id;
        let key_peer = self.peers[i].key;
        let pe_id = u.pool_element.pe_id;
        let refuse = |this: &mut Self| {
            this.stats.ownership_refusals += 1;
            this.protocol_error(
                Some(assoc),
                None,
                Some(Protocol::Enrp),
                Some(msg_type::HANDLE_UPDATE),
                ProtocolErrorKind::NotOwner {
                    pool_handle: u.pool_handle.clone(),
                    pe_id,
                },
            );
        };
        match u.action {
            UpdateAction::ADD_PE => {
                match self.import_replica(now, &u.pool_handle, &u.pool_element, sender, false) {
                    Ok(handle) => {
                        if let Some(i) = self.peer_index(key_peer)
                            && let Some(seen) =
                                self.peers[i].sync.as_mut().and_then(|s| s.seen.as_mut())
                        {
                            seen.insert((handle.clone(), pe_id));
                        }
                        if u.takeover_suggested && self.cfg.takeover_suggestion {
                            self.claim(now, (handle, pe_id));
                        }
                    }
                    Err(ImportRefusal::Limit) => {
                        self.stats.limit_refusals += 1;
                        self.enrp_error_to(assoc, sender, cause::LACK_OF_RESOURCES);
                    }
                    Err(ImportRefusal::Invalid) => self.stats.ignored += 1,
                    Err(ImportRefusal::Ownership) => refuse(self),
                }
            }
            UpdateAction::DEL_PE => {
                let Some(e) = self.hs.get(&u.pool_handle, pe_id) else {
                    return;
                };
                if e.home_registrar() == sender {
                    let h = e.pool_handle().clone();
                    self.remove_element(now, &h, pe_id, RemovalReason::DeletedByHome);
                } else {
                    refuse(self);
                }
            }
            _ => self.stats.ignored += 1,
        }
    }

    /// Sends a Handle Update for one of our PEs to every peer (not to the multicast
    /// channel), with the takeover-suggestion copy if enabled.
    pub(super) fn send_handle_update(
        &mut self,
        action: UpdateAction,
        handle: &PoolHandle,
        info: &PoolElementInfo,
    ) {
        if self.peers.is_empty() {
            return;
        }
        let base = self.encode(&EnrpMessage::HandleUpdate(HandleUpdate::new(
            self.id,
            ServerId::NONE,
            action,
            handle.clone(),
            info_param(info),
        )));
        let targets: Vec<(usize, ServerId)> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state != PeerState::TakingOver)
            .map(|(i, p)| (i, p.id))
            .collect();
        for &(i, id) in &targets {
            let b = Self::with_receiver(&base, id, None);
            self.send_to_peer(i, b);
        }
        if self.cfg.takeover_suggestion && action == UpdateAction::ADD_PE {
            let pe = info.pe_id.0;
            let own = self.id.0 ^ pe;
            if let Some(&(i, id)) = targets
                .iter()
                .filter(|(i, id)| *id != ServerId::NONE && self.peers[*i].state == PeerState::Alive)
                .max_by_key(|(_, id)| id.0 ^ pe)
                && id.0 ^ pe > own
            {
                let b = Self::with_receiver(&base, id, Some(0x01));
                self.send_to_peer(i, b);
            }
        }
    }

    /// Takeover suggestion: claim a PE of another registrar with an H-bit keep-alive.
    fn claim(&mut self, now: Instant, key: PeKey) {
        if self.probes.contains_key(&key) {
            return;
        }
        self.insert_probe(key.clone(), super::Probe::new(ProbeKind::Claim, now));
        if !self.send_keep_alive(now, &key, true) {
            self.end_probe(&key);
        }
    }

    // ----------------------------------------------------------------------------------
    // peer lists

    fn server_information(p: &Peer) -> Option<ServerInformation> {
        let addrs = p.connect_addrs();
        let port = addrs.first()?.port();
        let ips: SmallVec<[IpAddr; 2]> = addrs
            .iter()
            .filter(|a| a.port() == port)
            .map(SocketAddr::ip)
            .collect();
        Some(ServerInformation {
            server_id: p.id,
            transport: TransportParameter::sctp(port, 0, ips),
        })
    }

    fn on_list_request(&mut self, assoc: AssocId, i: usize) {
        let receiver = self.peers[i].id;
        let mut servers = Vec::new();
        let mut size = 12usize;
        for p in &self.peers {
            if let Some(si) = Self::server_information(p) {
                let n = rserpool_proto::Encode::encoded_len(&si);
                if size + n > super::config::MAX_MESSAGE_SIZE {
                    break;
                }
                size += n;
                servers.push(si);
            }
        }
        let b = self.encode(&EnrpMessage::ListResponse(ListResponse {
            reject: false,
            reserved_flags: 0,
            sender: self.id,
            receiver,
            servers,
            skipped: Vec::new(),
        }));
        self.transmit(assoc, Protocol::Enrp, b);
    }

    fn on_list_response(&mut self, now: Instant, i: usize, r: &ListResponse) {
        if !self.peers[i].listsync || r.reject {
            self.stats.ignored += 1;
            return;
        }
        let min = self.cfg.min_address_scope;
        for si in &r.servers {
            let id = si.server_id;
            if id == ServerId::NONE || id == self.id || self.peer_by_id(id).is_some() {
                continue;
            }
            let port = si.transport.port;
            let ips: SmallVec<[IpAddr; 4]> = si
                .transport
                .addresses
                .iter()
                .copied()
                .filter(|ip| scope_ok(*ip, min))
                .take(MAX_PEER_ADDRS)
                .collect();
            if ips.is_empty() || port == 0 {
                continue;
            }
            let static_match = self.peers.iter().position(|p| {
                p.is_static
                    && p.id == ServerId::NONE
                    && p.static_addrs
                        .iter()
                        .any(|sa| sa.port() == port && ip_in(sa.ip(), &ips))
            });
            let idx = match static_match {
                Some(j) => {
                    self.peers[j].id = id;
                    j
                }
                None => {
                    if !peer_allowed(&self.cfg.peer_policy, &ips, false) {
                        self.stats.not_peer_refusals += 1;
                        continue;
                    }
                    if self.peers.len() >= self.cfg.limits.max_peers {
                        self.stats.limit_refusals += 1;
                        break;
                    }
                    let key = self.next_peer_key;
                    self.next_peer_key += 1;
                    self.peers.push(Peer::new(key, id, false));
                    self.peers.len() - 1
                }
            };
            let p = &mut self.peers[idx];
            p.addrs = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            p.state = PeerState::Alive;
            p.until = Some(now + self.cfg.timers.peer_max_time_last_heard);
            let key = p.key;
            self.event(RegistrarEvent::PeerUp { server_id: id });
            self.send_presence_to(key, false);
        }
    }
}

#[cfg(test)]
mod bulk_tests {
    use super::*;

    #[test]
    fn bulk_transfers_are_reported_once_when_they_start_and_end() {
        let (a, b, c) = (AssocId(7), AssocId(9), AssocId(11));
        let mut s = BulkTransfers::default();
        let mut poll = |now: &[AssocId]| {
            let mut out = Vec::new();
            while let Some(t) = s.poll(now.iter().copied()) {
                out.push((t.assoc, t.running));
            }
            out
        };
        // No transfer: nothing.
        assert_eq!(poll(&[]), vec![]);
        // The download from the mentor over `a`: started, once.
        assert_eq!(poll(&[a]), vec![(a, true)]);
        assert_eq!(poll(&[a]), vec![]);
        // A walk served to a peer over `b` meanwhile.
        assert_eq!(poll(&[a, b]), vec![(b, true)]);
        // Another mentor (the first one went away): the old transfer ends first, the new one
        // starts; the served walk goes on.
        assert_eq!(poll(&[c, b]), vec![(a, false), (c, true)]);
        // Both end, each once.
        assert_eq!(poll(&[]), vec![(b, false), (c, false)]);
        assert_eq!(poll(&[]), vec![]);
    }
}
