//! Test rig for the registrar: deterministic RNG, explicit time, typed decoding of what it
//! sends.
#![allow(dead_code)]

pub mod net;

use bytes::Bytes;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use rserpool_core::registrar::{Registrar, RegistrarConfig, RegistrarEvent};
use rserpool_core::{AssocId, Destination, Instant, Machine, Output, Protocol};
use rserpool_proto::asap::Registration;
use rserpool_proto::enrp::Presence;
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{PeChecksum, PoolElementParameter, ServerInformation};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;
use rserpool_proto::{AsapMessage, Encode, EnrpMessage};

pub type Out = Output<RegistrarEvent>;

/// A registrar config for single-registrar tests: no multicast, no static peers,
/// deterministic keep-alive timers.
pub fn quiet_config(id: u32) -> RegistrarConfig {
    let mut c = RegistrarConfig {
        server_id: Some(ServerId(id)),
        asap_announce: None,
        enrp_announce: None,
        enrp_transport: Some(TransportParameter::sctp(9901, 0, [ip("10.0.0.1")])),
        ..RegistrarConfig::default()
    };
    c.timers.keep_alive_jitter = 0.0;
    c
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn ph(s: &str) -> PoolHandle {
    PoolHandle::from(s)
}

/// A PE parameter as a PE registers it (SCTP user transport, data + control).
pub fn pe(id: u32, addr: &str, port: u16) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: PeIdentifier(id),
        home_server_id: ServerId(0),
        registration_life: 30_000,
        user_transport: TransportParameter::sctp(port, 1, [ip(addr)]),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }
}

pub fn registration(pool: &str, p: PoolElementParameter) -> AsapMessage {
    Registration::new(ph(pool), p).into()
}

pub struct Rig {
    pub reg: Registrar,
    pub now: Instant,
}

impl Rig {
    pub fn new(cfg: RegistrarConfig) -> Rig {
        Self::with_seed(cfg, 7)
    }

    pub fn with_seed(cfg: RegistrarConfig, seed: u64) -> Rig {
        let reg = Registrar::new(cfg, Instant::ZERO, Xoshiro256PlusPlus::seed_from_u64(seed));
        let mut r = Rig {
            reg,
            now: Instant::ZERO,
        };
        r.reg.handle_timeout(Instant::ZERO);
        r
    }

    pub fn id(&self) -> ServerId {
        self.reg.server_id()
    }

    pub fn drain(&mut self) -> Vec<Out> {
        let mut v = Vec::new();
        while let Some(o) = self.reg.poll_output() {
            v.push(o);
        }
        v
    }

    pub fn up(&mut self, assoc: u64, addrs: &[&str]) -> Vec<Out> {
        let a: Vec<SocketAddr> = addrs.iter().map(|s| sa(s)).collect();
        self.reg.handle_assoc_up(self.now, AssocId(assoc), &a);
        self.drain()
    }

    pub fn down(&mut self, assoc: u64, reason: rserpool_core::AssocDownReason) -> Vec<Out> {
        self.reg.handle_assoc_down(self.now, AssocId(assoc), reason);
        self.drain()
    }

    pub fn raw(&mut self, assoc: u64, ppid: u32, data: &[u8]) -> Vec<Out> {
        self.reg
            .handle_message(self.now, AssocId(assoc), ppid, Bytes::copy_from_slice(data));
        self.drain()
    }

    pub fn asap(&mut self, assoc: u64, m: impl Into<AsapMessage>) -> Vec<Out> {
        let m: AsapMessage = m.into();
        self.raw(assoc, Protocol::PPID_ASAP, &m.to_bytes())
    }

    pub fn enrp(&mut self, assoc: u64, m: impl Into<EnrpMessage>) -> Vec<Out> {
        let m: EnrpMessage = m.into();
        self.raw(assoc, Protocol::PPID_ENRP, &m.to_bytes())
    }

    pub fn enrp_on(&mut self, assoc: AssocId, m: impl Into<EnrpMessage>) -> Vec<Out> {
        let m: EnrpMessage = m.into();
        self.reg
            .handle_message(self.now, assoc, Protocol::PPID_ENRP, m.to_bytes());
        self.drain()
    }

    pub fn reg_datagram(&mut self, from: &str, ppid: u32, data: &[u8]) -> Vec<Out> {
        self.reg
            .handle_datagram(self.now, sa(from), ppid, Bytes::copy_from_slice(data));
        self.drain()
    }

    pub fn datagram(&mut self, from: &str, m: impl Into<EnrpMessage>) -> Vec<Out> {
        let m: EnrpMessage = m.into();
        self.reg
            .handle_datagram(self.now, sa(from), Protocol::PPID_ENRP, m.to_bytes());
        self.drain()
    }

    /// Runs every timer up to `now + d` in order; returns all outputs.
    pub fn advance(&mut self, d: Duration) -> Vec<Out> {
        let target = self.now + d;
        let mut v = Vec::new();
        while let Some(t) = self.reg.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.reg.handle_timeout(self.now);
            v.extend(self.drain());
        }
        self.now = target;
        v
    }

    /// Registers a PE over `assoc` (must be up) and returns the outputs.
    pub fn register(&mut self, assoc: u64, pool: &str, p: PoolElementParameter) -> Vec<Out> {
        self.asap(assoc, registration(pool, p))
    }

    /// Makes `id` a peer over association `assoc` from `addr` (ENRP port 9901), with the
    /// given ownership checksum; returns the outputs.
    pub fn add_peer(&mut self, assoc: u64, id: u32, addr: &str, checksum: u16) -> Vec<Out> {
        self.up(assoc, &[&format!("{addr}:9901")]);
        self.enrp(assoc, presence(id, self.id().0, addr, checksum, false))
    }
}

pub fn presence(sender: u32, receiver: u32, addr: &str, checksum: u16, r: bool) -> Presence {
    Presence {
        reply_required: r,
        reserved_flags: 0,
        sender: ServerId(sender),
        receiver: ServerId(receiver),
        checksum: Some(PeChecksum(checksum)),
        server_information: Some(ServerInformation {
            server_id: ServerId(sender),
            transport: TransportParameter::sctp(9901, 0, [ip(addr)]),
        }),
        skipped: Vec::new(),
    }
}

/// The ASAP messages sent, with their destinations.
pub fn asap_sent(outs: &[Out]) -> Vec<(Destination, AsapMessage)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) if t.ppid == Protocol::PPID_ASAP => Some((
                t.dest.clone(),
                AsapMessage::decode(&t.payload).expect("registrar sends valid ASAP"),
            )),
            _ => None,
        })
        .collect()
}

/// The ENRP messages sent, with their destinations.
pub fn enrp_sent(outs: &[Out]) -> Vec<(Destination, EnrpMessage)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) if t.ppid == Protocol::PPID_ENRP => Some((
                t.dest.clone(),
                EnrpMessage::decode(&t.payload).expect("registrar sends valid ENRP"),
            )),
            _ => None,
        })
        .collect()
}

/// Every transmit decoded, in order, as a tagged enum.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Asap(Destination, AsapMessage),
    Enrp(Destination, EnrpMessage),
}

pub fn sent(outs: &[Out]) -> Vec<Sent> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) if t.ppid == Protocol::PPID_ASAP => Some(Sent::Asap(
                t.dest.clone(),
                AsapMessage::decode(&t.payload).expect("valid ASAP"),
            )),
            Output::Transmit(t) if t.ppid == Protocol::PPID_ENRP => Some(Sent::Enrp(
                t.dest.clone(),
                EnrpMessage::decode(&t.payload).expect("valid ENRP"),
            )),
            _ => None,
        })
        .collect()
}

pub fn events(outs: &[Out]) -> Vec<RegistrarEvent> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Events without ProtocolError noise.
pub fn main_events(outs: &[Out]) -> Vec<RegistrarEvent> {
    events(outs)
        .into_iter()
        .filter(|e| !matches!(e, RegistrarEvent::ProtocolError { .. }))
        .collect()
}

pub fn to(assoc: u64) -> Destination {
    Destination::Assoc(AssocId(assoc))
}

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

pub fn encoded(m: &impl Encode) -> Bytes {
    m.to_bytes()
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(s: u64) -> Duration {
    Duration::from_millis(s)
}
