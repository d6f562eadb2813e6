//! Fuzzing and property-testing support: a harness that feeds a registrar arbitrary input
//! sequences from several associations, registrars and datagram sources, and checks after
//! every step that
//! * nothing panicked;
//! * the handlespace checksums match its content (whole and per home registrar);
//! * a PE was changed only by its owner: a PE of ours bound to a live association changes
//!   only through that association, its loss, or its keep-alive timeout; ENRP input never
//!   changes a PE of ours and never makes us the home of a PE except by completing a
//!   takeover; datagrams never change the handlespace;
//! * memory stays bounded: handlespace and registrar structures within their limits, the
//!   output queue drained.
//!
//! [`drive`] interprets raw bytes (for cargo-fuzz); [`Harness`] takes typed [`Input`]s
//! (for proptest).

use bytes::Bytes;
use core::convert::Infallible;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use rserpool_proto::asap::{
    Deregistration, EndpointKeepAliveAck, EndpointUnreachable, HandleResolution, Registration,
};
use rserpool_proto::enrp::{
    HandleTableEntry, HandleTableRequest, HandleTableResponse, HandleUpdate, InitTakeover,
    InitTakeoverAck, ListRequest, ListResponse, Presence, TakeoverServer, UpdateAction,
};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{
    HandleResolutionOption, PeChecksum, PoolElementParameter, ServerInformation,
};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;
use rserpool_proto::{AsapMessage, EnrpMessage};

use crate::handlespace::checksum::checksum_of;
use crate::handlespace::{PoolElementInfo, TimerKind};
use crate::{AssocDownReason, AssocId, Instant, Machine, Output, Protocol};

use super::{Registrar, RegistrarConfig, RegistrarEvent};

/// A small deterministic generator (SplitMix64) for fuzzing without extra dependencies.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl rand_core::TryRng for SplitMix64 {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.try_next_u64().map(|v| (v >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// Number of driver association slots the harness uses.
pub const ASSOCS: u8 = 16;
/// Our server id in the harness.
pub const OUR_ID: ServerId = ServerId(0x0a);

/// One input to the harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Let time pass (milliseconds); timers fire in order.
    Advance(u32),
    /// Driver association `assoc` (slot) comes up from host `host`.
    AssocUp {
        /// Slot.
        assoc: u8,
        /// Host index (see [`host_ip`]).
        host: u8,
    },
    /// An association (driver slot, or one the registrar opened if `assoc ≥ ASSOCS`) goes
    /// down.
    AssocDown {
        /// Slot (values ≥ [`ASSOCS`] pick one of the registrar's own associations).
        assoc: u8,
        /// Reason index.
        reason: u8,
    },
    /// A message on an association with this PPID.
    Message {
        /// Slot.
        assoc: u8,
        /// PPID (11, 12 or anything).
        ppid: u32,
        /// The bytes.
        data: Bytes,
    },
    /// A datagram from a host.
    Datagram {
        /// Host index.
        host: u8,
        /// PPID.
        ppid: u32,
        /// The bytes.
        data: Bytes,
    },
}

/// Host `i`'s address: 10.0.0.1.. for PEs/PUs, 10.0.1.1.. for registrars (i ≥ 8), and
/// loopback for 15.
pub fn host_ip(i: u8) -> IpAddr {
    match i % 16 {
        15 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h if h >= 8 => IpAddr::V4(Ipv4Addr::new(10, 0, 1, h - 7)),
        h => IpAddr::V4(Ipv4Addr::new(10, 0, 0, h + 1)),
    }
}

/// The addresses an association from host `h` has (see [`Input::AssocUp`]: hosts with bit
/// 0x10 are multi-homed on the next host's address too).
fn host_ips(h: u8) -> Vec<IpAddr> {
    let mut v = vec![host_ip(h)];
    if h & 0x10 != 0 {
        v.push(host_ip(h.wrapping_add(1)));
    }
    v
}

/// Server id of harness registrar `i` (hosted at `host_ip(8 + i)`).
pub fn server(i: u8) -> ServerId {
    ServerId(0x100 + u32::from(i % 4))
}

/// A violated invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

type Snapshot = BTreeMap<
    (PoolHandle, PeIdentifier),
    (
        PoolElementInfo,
        Option<AssocId>,
        Option<(TimerKind, Instant)>,
    ),
>;

/// The harness: a registrar, a clock, the driver's view of associations.
pub struct Harness {
    reg: Registrar,
    now: Instant,
    up: BTreeMap<AssocId, u8>,
    opened: BTreeSet<AssocId>,
    config: RegistrarConfig,
    /// Steps executed.
    pub steps: usize,
    /// Events seen, by kind (coverage diagnostics).
    pub event_counts: BTreeMap<&'static str, u64>,
}

fn event_name(e: &RegistrarEvent) -> &'static str {
    match e {
        RegistrarEvent::PeRegistered { .. } => "PeRegistered",
        RegistrarEvent::PeReregistered { .. } => "PeReregistered",
        RegistrarEvent::PeRemoved { .. } => "PeRemoved",
        RegistrarEvent::PeerUp { .. } => "PeerUp",
        RegistrarEvent::PeerDown { .. } => "PeerDown",
        RegistrarEvent::MentorSyncComplete { .. } => "MentorSyncComplete",
        RegistrarEvent::TakeoverStarted { .. } => "TakeoverStarted",
        RegistrarEvent::TakeoverCompleted { .. } => "TakeoverCompleted",
        RegistrarEvent::TakeoverAbandoned { .. } => "TakeoverAbandoned",
        RegistrarEvent::ProtocolError { .. } => "ProtocolError",
    }
}

/// The configuration the harness uses (small limits so that they are reached).
pub fn harness_config(flags: u8) -> RegistrarConfig {
    let mut c = RegistrarConfig {
        server_id: Some(OUR_ID),
        enrp_transport: Some(TransportParameter::sctp(
            9901,
            0,
            [IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1))],
        )),
        asap_transports: vec![TransportParameter::sctp(
            3863,
            0,
            [IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1))],
        )],
        static_peers: vec![vec![SocketAddr::new(host_ip(8), 9901)]],
        max_bad_pe_reports: 2,
        max_elements_per_table_response: 3,
        expire_owned_elements: flags & 1 != 0,
        takeover_suggestion: flags & 2 != 0,
        max_hr_rate: (flags & 4 != 0).then_some(20),
        max_eu_rate: (flags & 8 != 0).then_some(5),
        ..RegistrarConfig::default()
    };
    c.limits.handlespace.max_elements = 48;
    c.limits.handlespace.max_pools = 6;
    c.limits.handlespace.max_elements_per_pool = 24;
    c.limits.max_elements_per_assoc = 12;
    c.limits.max_pending_requests_per_assoc = 4;
    c.limits.max_peers = 6;
    if flags & 16 != 0 {
        c.peer_policy = super::PeerPolicy::StaticOnly;
    }
    c
}

impl Harness {
    /// A harness with a registrar built from `seed` (RNG) and `flags` (config variants).
    pub fn new(seed: u64, flags: u8) -> Harness {
        let config = harness_config(flags);
        let reg = Registrar::new(config.clone(), Instant::ZERO, SplitMix64::new(seed));
        let mut h = Harness {
            reg,
            now: Instant::ZERO,
            up: BTreeMap::new(),
            opened: BTreeSet::new(),
            config,
            steps: 0,
            event_counts: BTreeMap::new(),
        };
        h.reg.handle_timeout(Instant::ZERO);
        h.drain();
        h
    }

    /// The registrar.
    pub fn registrar(&self) -> &Registrar {
        &self.reg
    }

    /// True if driver slot `slot` is up.
    pub fn slot_up(&self, slot: u8) -> bool {
        self.up.contains_key(&AssocId(u64::from(slot % ASSOCS) + 1))
    }

    /// Runs a templated message; a slot that is down is brought up first from its own
    /// host (PE/PU slot i: host i; registrar slot 8 + i: host 8 + i).
    pub fn step_templated(&mut self, slot: u8, kind: u8, params: &[u8]) -> Result<(), Violation> {
        let input = templated(self, slot, kind, params);
        if let Input::Message { assoc, .. } = &input
            && !self.slot_up(*assoc)
        {
            self.step(&Input::AssocUp {
                assoc: *assoc,
                host: *assoc,
            })?;
        }
        let input = templated(self, slot, kind, params);
        self.step(&input)
    }

    fn drain(&mut self) -> Vec<RegistrarEvent> {
        let mut events = Vec::new();
        let mut connects = Vec::new();
        while let Some(o) = self.reg.poll_output() {
            match o {
                Output::Connect { assoc, addrs, .. } => connects.push((assoc, addrs)),
                Output::Close { assoc, .. } => {
                    self.opened.remove(&assoc);
                    self.up.remove(&assoc);
                }
                Output::Event(e) => events.push(e),
                Output::Transmit(_) => {}
            }
        }
        // Connects resolve at once: up if they target a registrar host or a PE host with
        // an even last octet, failed otherwise.
        for (assoc, addrs) in connects {
            let ok = addrs.first().is_some_and(|a| match a.ip() {
                IpAddr::V4(v) => v.octets()[2] == 1 || v.octets()[3] % 2 == 0,
                IpAddr::V6(_) => false,
            });
            if ok {
                self.opened.insert(assoc);
                self.reg.handle_assoc_up(self.now, assoc, &addrs);
            } else {
                self.reg
                    .handle_assoc_down(self.now, assoc, AssocDownReason::ConnectFailed);
            }
            events.extend(self.drain());
        }
        events
    }

    fn snapshot(&self) -> Snapshot {
        self.reg
            .hs
            .walk(None)
            .map(|e| {
                (
                    (e.pool_handle().clone(), e.pe_id()),
                    (e.info(), e.assoc(), e.keep_alive()),
                )
            })
            .collect()
    }

    /// Runs one input and checks every invariant.
    pub fn step(&mut self, input: &Input) -> Result<(), Violation> {
        self.steps += 1;
        let before = self.snapshot();
        let up_before = self.up.clone();
        let events = match input {
            Input::Advance(ms) => {
                let target = self.now + Duration::from_millis(u64::from(*ms));
                let mut ev = Vec::new();
                while let Some(t) = self.reg.poll_timeout() {
                    if t > target {
                        break;
                    }
                    if t < self.now {
                        return Err(Violation(format!(
                            "deadline {t:?} before now {:?}",
                            self.now
                        )));
                    }
                    self.now = t;
                    self.reg.handle_timeout(t);
                    ev.extend(self.drain());
                }
                self.now = target;
                ev
            }
            Input::AssocUp { assoc, host } => {
                let a = AssocId(u64::from(assoc % ASSOCS) + 1);
                let ip = host_ip(*host);
                let mut addrs = vec![SocketAddr::new(ip, 5000 + u16::from(*host % 16))];
                if host & 0x10 != 0 {
                    addrs.push(SocketAddr::new(
                        host_ip(host.wrapping_add(1)),
                        5000 + u16::from(*host % 16),
                    ));
                }
                if host % 16 >= 8 {
                    addrs[0].set_port(9901);
                }
                self.up.insert(a, *host);
                self.reg.handle_assoc_up(self.now, a, &addrs);
                self.drain()
            }
            Input::AssocDown { assoc, reason } => {
                let a = if *assoc >= ASSOCS {
                    match self.opened.iter().nth(usize::from(assoc - ASSOCS)) {
                        Some(&a) => a,
                        None => return Ok(()),
                    }
                } else {
                    AssocId(u64::from(*assoc) + 1)
                };
                self.up.remove(&a);
                self.opened.remove(&a);
                let r = match reason % 4 {
                    0 => AssocDownReason::Lost,
                    1 => AssocDownReason::Shutdown,
                    2 => AssocDownReason::Closed,
                    _ => AssocDownReason::ConnectFailed,
                };
                self.reg.handle_assoc_down(self.now, a, r);
                self.drain()
            }
            Input::Message { assoc, ppid, data } => {
                let a = AssocId(u64::from(assoc % ASSOCS) + 1);
                self.reg.handle_message(self.now, a, *ppid, data.clone());
                self.drain()
            }
            Input::Datagram { host, ppid, data } => {
                let from = SocketAddr::new(host_ip(*host), 9901);
                self.reg
                    .handle_datagram(self.now, from, *ppid, data.clone());
                self.drain()
            }
        };
        for e in &events {
            *self.event_counts.entry(event_name(e)).or_default() += 1;
        }
        self.check(input, &before, &up_before, &events)
    }

    fn check(
        &self,
        input: &Input,
        before: &Snapshot,
        up_before: &BTreeMap<AssocId, u8>,
        events: &[RegistrarEvent],
    ) -> Result<(), Violation> {
        let hs = &self.reg.hs;
        let fail = |m: String| Err(Violation(format!("step {}: {input:?}: {m}", self.steps)));
        // Checksums match the content.
        let all = checksum_of(hs.walk(None).map(|e| (e.pool_handle(), e.pe_id())));
        if all != hs.checksum() {
            return fail(format!("checksum {:#x} != content {all:#x}", hs.checksum()));
        }
        let mut count = 0;
        for (home, n) in hs.owners() {
            let c = checksum_of(
                hs.walk_owner(home, None)
                    .map(|e| (e.pool_handle(), e.pe_id())),
            );
            if c != hs.owner_checksum(home) || hs.walk_owner(home, None).count() != n {
                return fail(format!("owner {home:?} checksum/count mismatch"));
            }
            count += n;
        }
        if count != hs.element_count() {
            return fail("owner counts do not add up".into());
        }
        // Ownership.
        let after = self.snapshot();
        let us = self.reg.id;
        let took_over: BTreeSet<ServerId> = events
            .iter()
            .filter_map(|e| match e {
                RegistrarEvent::TakeoverCompleted { target, .. } => Some(*target),
                _ => None,
            })
            .collect();
        for (k, (info, assoc, ka)) in before {
            let now_entry = after.get(k);
            let changed = now_entry.is_none_or(|(i2, a2, _)| i2 != info || a2 != assoc);
            if !changed {
                continue;
            }
            let ours = info.home_registrar == us;
            match input {
                Input::Datagram { .. } | Input::AssocUp { .. } => {
                    return fail(format!("{k:?} changed by {input:?}"));
                }
                Input::Message {
                    assoc: slot, ppid, ..
                } => {
                    let from = AssocId(u64::from(slot % ASSOCS) + 1);
                    if *ppid == Protocol::PPID_ENRP {
                        if ours {
                            return fail(format!("ENRP input changed our PE {k:?}"));
                        }
                    } else if let Some(b) = assoc
                        && *b != from
                        && let Some(bound_host) = up_before.get(b)
                        && (ours || now_entry.is_none())
                        && !self.up.get(&from).is_some_and(|h| {
                            // A registration from the same host may move it.
                            now_entry.is_some_and(|(_, a2, _)| *a2 == Some(from))
                                && host_ips(*h)
                                    .iter()
                                    .any(|ip| host_ips(*bound_host).contains(ip))
                        })
                    {
                        // Keep-alive ack over the probe association may bind an unbound
                        // PE, but a bound one belongs to its association (or its host).
                        return fail(format!("{k:?} bound to {b:?} changed over {from:?}"));
                    }
                }
                Input::Advance(_) => {
                    if ours && assoc.is_some() && now_entry.is_none() {
                        // Its keep-alive timeout passed during this step (possibly after a
                        // keep-alive sent during it).
                        let timeout = self.config.timers.keep_alive_timeout_interval;
                        let due = ka.is_some_and(|(kind, t)| match kind {
                            TimerKind::KeepAliveTimeout => t <= self.now,
                            _ => t + timeout <= self.now,
                        }) || self.config.expire_owned_elements;
                        if !due {
                            return fail(format!(
                                "our PE {k:?} removed without keep-alive timeout"
                            ));
                        }
                    }
                }
                Input::AssocDown { .. } => {}
            }
        }
        if matches!(input, Input::Message { ppid, .. } if *ppid == Protocol::PPID_ENRP) {
            for (k, (info, _, _)) in &after {
                let was = before.get(k).map(|(i, _, _)| i.home_registrar);
                if info.home_registrar == us
                    && was != Some(us)
                    && !was.is_some_and(|w| took_over.contains(&w))
                {
                    return fail(format!("ENRP made us home of {k:?} (was {was:?})"));
                }
            }
        }
        // Bounds.
        let u = self.reg.resource_usage();
        let l = &self.config.limits;
        let ok = hs.element_count() <= l.handlespace.max_elements
            && hs.pool_count() <= l.handlespace.max_pools
            && u.peers <= l.max_peers
            && u.associations <= usize::from(ASSOCS) + self.opened.len()
            && u.probes <= hs.element_count()
            && u.contested <= hs.element_count() + 16
            && u.verified <= hs.element_count() + 16
            && u.sync_marks <= hs.element_count() * l.max_peers
            && u.takeovers <= l.max_peers
            && u.queued_outputs == 0;
        if !ok {
            return fail(format!(
                "bounds exceeded: {u:?}, {} PEs",
                hs.element_count()
            ));
        }
        Ok(())
    }
}

/// Reads inputs from raw fuzzer bytes.
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}

fn pool(i: u8) -> PoolHandle {
    match i % 5 {
        4 => PoolHandle::new(Bytes::from(vec![b'L'; 40])),
        n => PoolHandle::new(Bytes::from(format!("P{n}"))),
    }
}

fn policy(i: u8) -> Policy {
    match i % 4 {
        0 | 1 => Policy::RoundRobin,
        2 => Policy::WeightedRoundRobin {
            weight: u32::from(i / 4),
        },
        _ => Policy::LeastUsed {
            load: u32::from(i) << 20,
        },
    }
}

fn element(id: u8, home: ServerId, host: u8, b: u8) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: PeIdentifier(u32::from(id % 9)),
        home_server_id: home,
        registration_life: if b == 0xff {
            0
        } else {
            2000 + u32::from(b) * 100
        },
        user_transport: TransportParameter::sctp(
            6000 + u16::from(b & 3),
            u16::from(b & 4 != 0),
            [host_ip(host)],
        ),
        policy: policy(b >> 3),
        asap_transport: Some(TransportParameter::sctp(
            5000 + u16::from(host),
            0,
            [host_ip(host)],
        )),
    }
}

/// Builds a well-formed message from a template selector and parameter bytes, so that
/// fuzzing reaches deep states quickly. Returns the slot to send it on (ASAP templates use
/// PE/PU slots 0..8 with the slot's own host as PE address; ENRP templates use the
/// claimed sender's slot 8 + i, except when the parameters ask for a mismatch), the PPID
/// and the bytes.
fn template(harness: &Harness, slot: u8, kind: u8, p: &[u8]) -> (u8, u32, Bytes) {
    let g = |i: usize| p.get(i).copied().unwrap_or(0);
    let kind = kind % 14;
    let slot = if kind <= 4 {
        if g(19) > 0xf0 { slot % 8 } else { slot % 4 }
    } else if g(19) > 0xe0 {
        slot % ASSOCS
    } else {
        8 + g(0) % 4
    };
    let own_host = harness
        .up
        .get(&AssocId(u64::from(slot) + 1))
        .copied()
        .unwrap_or(slot);
    let host = if g(4) & 0x10 != 0 { g(2) } else { own_host };
    let (ppid, data) = template_message(harness, kind, host, p);
    (slot, ppid, data)
}

fn template_message(harness: &Harness, kind: u8, host: u8, p: &[u8]) -> (u32, Bytes) {
    let g = |i: usize| p.get(i).copied().unwrap_or(0);
    let us = OUR_ID;
    let asap = |m: AsapMessage| (Protocol::PPID_ASAP, m.to_bytes());
    let enrp = |m: EnrpMessage| (Protocol::PPID_ENRP, m.to_bytes());
    match kind {
        0 => asap(Registration::new(pool(g(0)), element(g(1), ServerId(0), host, g(3))).into()),
        1 => asap(Deregistration::new(pool(g(0)), PeIdentifier(u32::from(g(1) % 9))).into()),
        2 => asap(
            HandleResolution {
                pool_handle: pool(g(0)),
                option: (g(1) & 1 != 0).then(|| HandleResolutionOption {
                    items: u32::from(g(2)),
                }),
                ..Default::default()
            }
            .into(),
        ),
        3 => asap(EndpointKeepAliveAck::new(pool(g(0)), PeIdentifier(u32::from(g(1) % 9))).into()),
        4 => asap(EndpointUnreachable::new(pool(g(0)), PeIdentifier(u32::from(g(1) % 9))).into()),
        5 => {
            let s = server(g(0));
            let host = if g(1) > 0xf0 {
                8 + (g(1) % 4)
            } else {
                8 + g(0) % 4
            };
            let checksum = if g(2) & 1 == 0 {
                harness.reg.hs.owner_checksum(s)
            } else {
                u16::from_be_bytes([g(3), g(4)])
            };
            enrp(
                Presence {
                    reply_required: g(2) & 2 != 0,
                    sender: s,
                    receiver: us,
                    checksum: Some(PeChecksum(checksum)),
                    server_information: Some(ServerInformation {
                        server_id: s,
                        transport: TransportParameter::sctp(9901, 0, [host_ip(host)]),
                    }),
                    ..Default::default()
                }
                .into(),
            )
        }
        6 | 7 => {
            let s = server(g(0));
            let home = match g(3) % 4 {
                0 => s,
                1 => server(g(0).wrapping_add(1)),
                2 => us,
                _ => s,
            };
            let action = if kind == 6 {
                UpdateAction::ADD_PE
            } else {
                UpdateAction::DEL_PE
            };
            let mut u =
                HandleUpdate::new(s, us, action, pool(g(1)), element(g(2), home, g(4), g(5)));
            u.takeover_suggested = g(6) & 1 != 0;
            enrp(u.into())
        }
        8 => enrp(
            HandleTableRequest {
                own_children_only: g(1) & 1 != 0,
                sender: server(g(0)),
                receiver: us,
                ..Default::default()
            }
            .into(),
        ),
        9 => {
            let s = server(g(0));
            let n = usize::from(g(1) % 4);
            let entries = (0..n)
                .map(|i| HandleTableEntry {
                    pool_handle: pool(g(2 + i)),
                    pool_elements: vec![element(
                        g(6 + i),
                        if g(10) & (1 << i) != 0 { us } else { s },
                        g(11 + i),
                        g(14 + i),
                    )],
                })
                .collect();
            enrp(
                HandleTableResponse {
                    more: g(17) & 1 != 0,
                    reject: g(17) & 2 != 0,
                    sender: s,
                    receiver: us,
                    entries,
                    ..Default::default()
                }
                .into(),
            )
        }
        10 => {
            let target = if g(1) & 1 != 0 { us } else { server(g(1) >> 1) };
            enrp(InitTakeover::new(server(g(0)), us, target).into())
        }
        11 => enrp(InitTakeoverAck::new(server(g(0)), us, server(g(1))).into()),
        12 => {
            let target = if g(1) & 1 != 0 { us } else { server(g(1) >> 1) };
            enrp(TakeoverServer::new(server(g(0)), us, target).into())
        }
        _ => {
            if g(1) & 1 == 0 {
                enrp(
                    ListRequest {
                        sender: server(g(0)),
                        receiver: us,
                        ..Default::default()
                    }
                    .into(),
                )
            } else {
                let servers = (0..g(2) % 3)
                    .map(|i| ServerInformation {
                        server_id: server(g(3 + usize::from(i))),
                        transport: TransportParameter::sctp(
                            9901,
                            0,
                            [host_ip(8 + g(5 + usize::from(i)) % 8)],
                        ),
                    })
                    .collect();
                enrp(
                    ListResponse {
                        sender: server(g(0)),
                        receiver: us,
                        servers,
                        ..Default::default()
                    }
                    .into(),
                )
            }
        }
    }
}

/// Interprets `data` as a registrar run and checks the invariants after every step,
/// panicking on a violation (for cargo-fuzz).
///
/// Layout: 8 bytes RNG seed, 1 byte configuration flags, then records
/// `[kind, a, b, len, len bytes…]`:
/// * kind 0: advance `a · 40 + b` ms;
/// * kind 1: association slot `a` up from host `b`; kind 2: slot `a` down (reason `b`;
///   `a ≥ 16` picks one of the registrar's own associations);
/// * kind 3 / 4: raw ASAP / ENRP bytes on slot `a`; kind 5: raw bytes with PPID `b`;
/// * kind 6: a well-formed message built from template `b` and the payload, on slot `a`;
/// * kind 7: a datagram from host `a`: raw bytes (b even) or a templated Presence.
pub fn drive(data: &[u8]) {
    let mut c = Cursor { data };
    let seed = {
        let s = c.take(8);
        let mut b = [0u8; 8];
        b[..s.len()].copy_from_slice(s);
        u64::from_le_bytes(b)
    };
    let flags = c.byte().unwrap_or(0);
    let mut h = Harness::new(seed, flags);
    for (assoc, host) in INITIAL_ASSOCS {
        if let Err(v) = h.step(&Input::AssocUp { assoc, host }) {
            panic!("registrar invariant violated: {v}");
        }
    }
    while let Some(kind) = c.byte() {
        let a = c.byte().unwrap_or(0);
        let b = c.byte().unwrap_or(0);
        let len = usize::from(c.byte().unwrap_or(0));
        let payload = c.take(len);
        let input = match kind % 8 {
            0 => Input::Advance(u32::from(a) * 40 + u32::from(b)),
            1 => Input::AssocUp { assoc: a, host: b },
            2 => Input::AssocDown {
                assoc: a,
                reason: b,
            },
            3 => Input::Message {
                assoc: a,
                ppid: Protocol::PPID_ASAP,
                data: Bytes::copy_from_slice(payload),
            },
            4 => Input::Message {
                assoc: a,
                ppid: Protocol::PPID_ENRP,
                data: Bytes::copy_from_slice(payload),
            },
            5 => Input::Message {
                assoc: a,
                ppid: u32::from(b),
                data: Bytes::copy_from_slice(payload),
            },
            6 => {
                if let Err(v) = h.step_templated(a, b, payload) {
                    panic!("registrar invariant violated: {v}");
                }
                continue;
            }
            _ => {
                if b.is_multiple_of(2) {
                    Input::Datagram {
                        host: a,
                        ppid: Protocol::PPID_ENRP,
                        data: Bytes::copy_from_slice(payload),
                    }
                } else {
                    let (_, ppid, data) = template(&h, 8, 5, payload);
                    Input::Datagram {
                        host: a,
                        ppid,
                        data,
                    }
                }
            }
        };
        if let Err(v) = h.step(&input) {
            panic!("registrar invariant violated: {v}");
        }
    }
}

/// Builds an input from a template (for property tests).
pub fn templated(h: &Harness, assoc: u8, template_kind: u8, params: &[u8]) -> Input {
    let (assoc, ppid, data) = template(h, assoc, template_kind, params);
    Input::Message { assoc, ppid, data }
}

/// The associations a run starts with: PE/PU slots 0..4 on hosts 0..4 and one slot per
/// harness registrar (8 + i on host 8 + i).
pub const INITIAL_ASSOCS: [(u8, u8); 8] = [
    (0, 0),
    (1, 1),
    (2, 2),
    (3, 3),
    (8, 8),
    (9, 9),
    (10, 10),
    (11, 11),
];
