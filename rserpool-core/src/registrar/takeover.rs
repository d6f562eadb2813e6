//! Takeover of a failed registrar (RFC 5353 §3.5): initiation, arbitration (the lowest
//! server identifier wins), completion, TAKEOVER_SERVER, and re-homing the PEs with
//! H-bit keep-alives.

use core::net::{IpAddr, SocketAddr};
use smallvec::SmallVec;
use std::collections::BTreeMap;

use rserpool_proto::EnrpMessage;
use rserpool_proto::enrp::{InitTakeover, InitTakeoverAck, TakeoverServer, msg_type};
use rserpool_proto::ids::ServerId;

use crate::handlespace::TimerKind;
use crate::{AssocId, Instant, Protocol};

use super::assoc::Origin;
use super::enrp::PeerState;
use super::events::{PeerDownReason, ProtocolErrorKind, RegistrarEvent, RemovalReason};
use super::security::scope_ok;
use super::{PeKey, Probe, ProbeKind, Registrar};

/// A takeover we run.
#[derive(Clone, Debug)]
pub(super) struct Takeover {
    /// The failed registrar.
    pub target: ServerId,
    /// Peers whose Init Takeover Ack is still missing.
    pub need: SmallVec<[ServerId; 8]>,
    /// TAKEOVER-EXPIRY.
    pub expiry: Instant,
}

/// Cap on the registrars recorded as taking one peer over.
const MAX_TAKERS: usize = 8;

impl Registrar {
    /// MAX-TIME-NO-RESPONSE expired for a peer that owns PEs: start taking it over.
    pub(super) fn start_takeover(&mut self, now: Instant, i: usize) {
        let target = self.peers[i].id;
        self.peers[i].state = PeerState::TakingOver;
        self.peers[i].until = None;
        let need: SmallVec<[ServerId; 8]> = self
            .peers
            .iter()
            .filter(|p| {
                p.id != ServerId::NONE
                    && p.id != target
                    && p.id != self.id
                    && matches!(p.state, PeerState::Alive | PeerState::Probing)
            })
            .map(|p| p.id)
            .collect();
        let targets: Vec<(usize, ServerId)> = self
            .peers
            .iter()
            .enumerate()
            .map(|(j, p)| (j, p.id))
            .collect();
        for (j, id) in targets {
            let b = self.encode(&EnrpMessage::InitTakeover(InitTakeover::new(
                self.id, id, target,
            )));
            self.send_to_peer(j, b);
        }
        let expiry = now + self.cfg.timers.takeover_expiry_interval;
        self.takeovers.push(Takeover {
            target,
            need,
            expiry,
        });
        self.event(RegistrarEvent::TakeoverStarted { target });
        if self
            .takeovers
            .last()
            .is_some_and(|t| t.target == target && t.need.is_empty())
        {
            // Nobody else must agree (e.g. two registrars): done at once.
            self.complete_takeover(now, target);
        }
    }

    /// A Presence from `target`: it is alive, drop our takeover of it.
    pub(super) fn abandon_takeover(&mut self, target: ServerId) {
        if let Some(pos) = self.takeovers.iter().position(|t| t.target == target) {
            self.takeovers.remove(pos);
            self.event(RegistrarEvent::TakeoverAbandoned { target });
        }
    }

    pub(super) fn send_takeover_ack(&mut self, taker: ServerId, target: ServerId) {
        let Some(j) = self.peers.iter().position(|p| p.id == taker) else {
            return;
        };
        let b = self.encode(&EnrpMessage::InitTakeoverAck(InitTakeoverAck::new(
            self.id, taker, target,
        )));
        self.send_to_peer(j, b);
    }

    pub(super) fn on_init_takeover(&mut self, now: Instant, i: usize, target: ServerId) {
        let initiator = self.peers[i].id;
        if target == self.id {
            // We are alive: tell everybody (RFC 5353 §3.5.1); no ack.
            self.announce_alive();
            return;
        }
        if let Some(pos) = self.takeovers.iter().position(|t| t.target == target) {
            if initiator.0 < self.id.0 {
                // The lower identifier wins: give ours up and agree.
                self.takeovers.remove(pos);
                self.event(RegistrarEvent::TakeoverAbandoned { target });
                if let Some(j) = self.peers.iter().position(|p| p.id == target) {
                    let t = &mut self.peers[j];
                    t.takers.push(initiator);
                    t.state = PeerState::Probing;
                    t.until = Some(now + self.cfg.timers.peer_max_time_no_response);
                }
                self.send_takeover_ack(initiator, target);
            } else {
                self.stats.ignored += 1;
            }
            return;
        }
        match self.peers.iter().position(|p| p.id == target) {
            None => self.send_takeover_ack(initiator, target),
            Some(j) => {
                let probe_it = self.peers[j].state == PeerState::Alive;
                let t = &mut self.peers[j];
                if !t.takers.contains(&initiator) && t.takers.len() < MAX_TAKERS {
                    t.takers.push(initiator);
                }
                if probe_it {
                    // We still hear it: only agree once we find it dead ourselves.
                    if !t.deferred.contains(&initiator) && t.deferred.len() < MAX_TAKERS {
                        t.deferred.push(initiator);
                    }
                    t.state = PeerState::Probing;
                    t.until = Some(now + self.cfg.timers.peer_max_time_no_response);
                    let key = t.key;
                    self.send_presence_to(key, true);
                } else if !t.deferred.contains(&initiator) {
                    self.send_takeover_ack(initiator, target);
                }
            }
        }
    }

    pub(super) fn on_init_takeover_ack(&mut self, now: Instant, i: usize, target: ServerId) {
        let from = self.peers[i].id;
        let Some(t) = self.takeovers.iter_mut().find(|t| t.target == target) else {
            self.stats.ignored += 1;
            return;
        };
        t.need.retain(|id| *id != from);
        if t.need.is_empty() {
            self.complete_takeover(now, target);
        }
    }

    pub(super) fn takeover_timers(&mut self, now: Instant) {
        self.complete_agreed_takeovers(now);
        while let Some(pos) = self.takeovers.iter().position(|t| t.expiry <= now) {
            let t = self.takeovers.remove(pos);
            // RSPLIB: expiry abandons; the PEs stay until their lives run out or they
            // register elsewhere.
            self.event(RegistrarEvent::TakeoverAbandoned { target: t.target });
            if let Some(j) = self.peers.iter().position(|p| p.id == t.target) {
                self.remove_peer(j, PeerDownReason::TakeoverFinished);
            }
        }
    }

    /// Completes every takeover with no acknowledgement outstanding any more (the peers
    /// it waited for left the peer list).
    pub(super) fn complete_agreed_takeovers(&mut self, now: Instant) {
        while let Some(target) = self
            .takeovers
            .iter()
            .find(|t| t.need.is_empty())
            .map(|t| t.target)
        {
            self.complete_takeover(now, target);
        }
    }

    fn complete_takeover(&mut self, now: Instant, target: ServerId) {
        let Some(pos) = self.takeovers.iter().position(|t| t.target == target) else {
            return;
        };
        self.takeovers.remove(pos);
        // TAKEOVER_SERVER to every other peer (RSPLIB never manages to send it).
        let targets: Vec<(usize, ServerId)> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.id != target && p.state != PeerState::TakingOver)
            .map(|(j, p)| (j, p.id))
            .collect();
        for (j, id) in targets {
            let b = self.encode(&EnrpMessage::TakeoverServer(TakeoverServer::new(
                self.id, id, target,
            )));
            self.send_to_peer(j, b);
        }
        let keys: Vec<PeKey> = self
            .hs
            .walk_owner(target, None)
            .map(|e| (e.pool_handle().clone(), e.pe_id()))
            .collect();
        let n = self.hs.rehome_owner(target, self.id);
        // One association per distinct ASAP transport (PEs of one process share it).
        let mut conns: BTreeMap<(u16, SmallVec<[IpAddr; 4]>), AssocId> = BTreeMap::new();
        let min = self.cfg.min_address_scope;
        for key in keys {
            self.hs.set_timer(&key.0, key.1, TimerKind::Expiry, None);
            let Some(e) = self.hs.get(&key.0, key.1) else {
                continue;
            };
            let bound = e.assoc();
            let asap = e.asap_transport();
            self.insert_probe(key.clone(), Probe::new(ProbeKind::Takeover, now));
            if bound.is_none() {
                let Some(t) = asap else {
                    self.remove_element(now, &key.0, key.1, RemovalReason::TakeoverFailed);
                    continue;
                };
                let mut ips: SmallVec<[IpAddr; 4]> = t
                    .addresses
                    .iter()
                    .copied()
                    .filter(|ip| scope_ok(*ip, min))
                    .collect();
                ips.sort();
                if ips.is_empty() || t.port == 0 {
                    self.remove_element(now, &key.0, key.1, RemovalReason::TakeoverFailed);
                    continue;
                }
                let k = (t.port, ips);
                let a = match conns.get(&k) {
                    Some(&a) => a,
                    None => {
                        let addrs = k.1.iter().map(|ip| SocketAddr::new(*ip, k.0)).collect();
                        let a = self.connect(addrs, t.protocol, Origin::PoolElement, 0);
                        conns.insert(k, a);
                        a
                    }
                };
                if let Some(p) = self.probes.get_mut(&key) {
                    p.assoc = Some(a);
                }
            }
            if !self.send_keep_alive(now, &key, true) {
                self.remove_element(now, &key.0, key.1, RemovalReason::TakeoverFailed);
            }
        }
        if let Some(j) = self.peers.iter().position(|p| p.id == target) {
            self.remove_peer(j, PeerDownReason::TakeoverFinished);
        }
        self.event(RegistrarEvent::TakeoverCompleted {
            target,
            elements: n,
        });
    }

    pub(super) fn on_takeover_server(&mut self, now: Instant, i: usize, target: ServerId) {
        let from = self.peers[i].id;
        if target == self.id {
            self.announce_alive();
            return;
        }
        let j = self.peers.iter().position(|p| p.id == target);
        let accepted = match j {
            None => !self.takeovers.iter().any(|t| t.target == target),
            Some(j) => self.peers[j].takers.contains(&from),
        };
        if !accepted {
            self.stats.ownership_refusals += 1;
            let assoc = self.peers[i].assoc;
            self.protocol_error(
                assoc,
                None,
                Some(Protocol::Enrp),
                Some(msg_type::TAKEOVER_SERVER),
                ProtocolErrorKind::Unexpected,
            );
            return;
        }
        self.hs.rehome_owner(target, from);
        if let Some(j) = j {
            self.remove_peer(j, PeerDownReason::TakenOver);
            self.complete_agreed_takeovers(now);
        }
    }
}
