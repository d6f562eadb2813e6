//! A tiny deterministic network for multi-registrar tests: registrars and stub PEs,
//! zero-latency reliable associations, UDP multicast to every registrar, node kills.
#![allow(dead_code)]

use bytes::Bytes;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use rserpool_core::registrar::{Registrar, RegistrarConfig, RegistrarEvent};
use rserpool_core::{
    AssocDownReason, AssocId, BulkTransfer, ChannelKind, Destination, Instant, Machine, Output,
    Protocol,
};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::EndpointKeepAliveAck;
use rserpool_proto::transport::TransportParameter;

pub const ENRP_PORT: u16 = 9901;
pub const ASAP_PORT: u16 = 3863;

pub enum Kind {
    Reg(Box<Registrar>),
    /// A PE process: answers every keep-alive (if `ack`), records what it receives.
    Pe {
        port: u16,
        ack: bool,
        inbox: Vec<(AssocId, AsapMessage)>,
    },
}

pub struct Node {
    pub ip: IpAddr,
    pub kind: Kind,
    pub alive: bool,
}

enum Delivery {
    Msg {
        to: usize,
        assoc: AssocId,
        ppid: u32,
        data: Bytes,
    },
    Up {
        to: usize,
        assoc: AssocId,
        peer: Vec<SocketAddr>,
    },
    Down {
        to: usize,
        assoc: AssocId,
        reason: AssocDownReason,
    },
    Udp {
        to: usize,
        from: SocketAddr,
        ppid: u32,
        data: Bytes,
    },
}

pub struct Net {
    pub nodes: Vec<Node>,
    pub now: Instant,
    links: BTreeMap<(usize, AssocId), (usize, AssocId)>,
    next_id: u64,
    queue: VecDeque<Delivery>,
    /// Every registrar event with time and node.
    pub events: Vec<(Instant, usize, RegistrarEvent)>,
    /// Every message sent over an association: (time, from node, to node, ppid, bytes).
    pub wire: Vec<(Instant, usize, usize, u32, Bytes)>,
    /// Every bulk transfer change a registrar reported (polled after each drain of its
    /// outputs): (node, change, `wire.len()` at that moment).
    pub bulk: Vec<(usize, BulkTransfer, usize)>,
}

pub fn enrp_transport(ip: IpAddr) -> TransportParameter {
    TransportParameter::sctp(ENRP_PORT, 0, [ip])
}

/// Registrar config for the net: its own ENRP transport, multicast off, quiet ASAP.
pub fn net_config(id: u32, ip: IpAddr, peers: &[IpAddr]) -> RegistrarConfig {
    let mut c = RegistrarConfig {
        server_id: Some(rserpool_proto::ids::ServerId(id)),
        asap_announce: None,
        enrp_announce: None,
        enrp_transport: Some(enrp_transport(ip)),
        asap_transports: vec![TransportParameter::sctp(ASAP_PORT, 0, [ip])],
        static_peers: peers
            .iter()
            .map(|p| vec![SocketAddr::new(*p, ENRP_PORT)])
            .collect(),
        ..RegistrarConfig::default()
    };
    c.timers.keep_alive_jitter = 0.0;
    c
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Net {
    pub fn new() -> Net {
        Net {
            nodes: Vec::new(),
            now: Instant::ZERO,
            links: BTreeMap::new(),
            next_id: 1,
            queue: VecDeque::new(),
            events: Vec::new(),
            wire: Vec::new(),
            bulk: Vec::new(),
        }
    }

    pub fn add_registrar(&mut self, ip: &str, cfg: RegistrarConfig, seed: u64) -> usize {
        let reg = Registrar::new(cfg, self.now, Xoshiro256PlusPlus::seed_from_u64(seed));
        self.nodes.push(Node {
            ip: ip.parse().unwrap(),
            kind: Kind::Reg(Box::new(reg)),
            alive: true,
        });
        self.nodes.len() - 1
    }

    pub fn add_pe(&mut self, ip: &str, port: u16) -> usize {
        self.nodes.push(Node {
            ip: ip.parse().unwrap(),
            kind: Kind::Pe {
                port,
                ack: true,
                inbox: Vec::new(),
            },
            alive: true,
        });
        self.nodes.len() - 1
    }

    pub fn reg(&self, n: usize) -> &Registrar {
        match &self.nodes[n].kind {
            Kind::Reg(r) => r,
            _ => panic!("node {n} is not a registrar"),
        }
    }

    pub fn reg_mut(&mut self, n: usize) -> &mut Registrar {
        match &mut self.nodes[n].kind {
            Kind::Reg(r) => r,
            _ => panic!("node {n} is not a registrar"),
        }
    }

    pub fn inbox(&self, n: usize) -> &[(AssocId, AsapMessage)] {
        match &self.nodes[n].kind {
            Kind::Pe { inbox, .. } => inbox,
            _ => panic!("node {n} is not a PE"),
        }
    }

    pub fn set_ack(&mut self, n: usize, on: bool) {
        if let Kind::Pe { ack, .. } = &mut self.nodes[n].kind {
            *ack = on;
        }
    }

    fn driver_id(&mut self) -> AssocId {
        self.next_id += 1;
        AssocId(self.next_id)
    }

    fn listen_port(&self, n: usize, channel: ChannelKind) -> u16 {
        match &self.nodes[n].kind {
            Kind::Reg(_) => match channel {
                ChannelKind::Enrp => ENRP_PORT,
                _ => ASAP_PORT,
            },
            Kind::Pe { port, .. } => *port,
        }
    }

    /// Opens an association from a PE stub to a registrar's ASAP port; returns the PE
    /// side's id.
    pub fn connect_pe(&mut self, pe: usize, reg: usize) -> AssocId {
        let a = self.driver_id();
        let b = self.driver_id();
        self.links.insert((pe, a), (reg, b));
        self.links.insert((reg, b), (pe, a));
        let port = self.listen_port(pe, ChannelKind::AsapToRegistrar);
        let peer = vec![SocketAddr::new(self.nodes[pe].ip, port)];
        self.queue.push_back(Delivery::Up {
            to: reg,
            assoc: b,
            peer,
        });
        self.run_queue();
        a
    }

    /// Sends an ASAP message from a PE stub over its association.
    pub fn pe_send(&mut self, pe: usize, assoc: AssocId, m: impl Into<AsapMessage>) {
        let m: AsapMessage = m.into();
        self.send_on(pe, assoc, Protocol::PPID_ASAP, m.to_bytes());
        self.run_queue();
    }

    fn send_on(&mut self, from: usize, assoc: AssocId, ppid: u32, data: Bytes) {
        if let Some(&(to, peer_assoc)) = self.links.get(&(from, assoc)) {
            self.wire.push((self.now, from, to, ppid, data.clone()));
            self.queue.push_back(Delivery::Msg {
                to,
                assoc: peer_assoc,
                ppid,
                data,
            });
        }
    }

    /// Kills a node: every association it has goes down for the other side (Lost).
    pub fn kill(&mut self, n: usize) {
        self.nodes[n].alive = false;
        let mine: Vec<_> = self
            .links
            .keys()
            .filter(|(x, _)| *x == n)
            .copied()
            .collect();
        for k in mine {
            if let Some((to, peer)) = self.links.remove(&k) {
                self.links.remove(&(to, peer));
                self.queue.push_back(Delivery::Down {
                    to,
                    assoc: peer,
                    reason: AssocDownReason::Lost,
                });
            }
        }
        self.run_queue();
    }

    fn handle_outputs(&mut self, n: usize) {
        loop {
            let out = match &mut self.nodes[n].kind {
                Kind::Reg(r) => r.poll_output(),
                _ => None,
            };
            let Some(out) = out else { break };
            match out {
                Output::Transmit(t) => match t.dest {
                    Destination::Assoc(a) => self.send_on(n, a, t.ppid, t.payload),
                    Destination::Udp(_) => {
                        let from = SocketAddr::new(self.nodes[n].ip, ENRP_PORT);
                        for to in 0..self.nodes.len() {
                            if to != n
                                && self.nodes[to].alive
                                && matches!(self.nodes[to].kind, Kind::Reg(_))
                            {
                                self.queue.push_back(Delivery::Udp {
                                    to,
                                    from,
                                    ppid: t.ppid,
                                    data: t.payload.clone(),
                                });
                            }
                        }
                    }
                },
                Output::Connect {
                    assoc,
                    addrs,
                    channel,
                    ..
                } => {
                    let target = addrs.iter().find_map(|a| {
                        (0..self.nodes.len()).find(|&m| {
                            self.nodes[m].alive
                                && self.nodes[m].ip == a.ip()
                                && self.listen_port(m, channel) == a.port()
                        })
                    });
                    match target {
                        Some(m) => {
                            let b = self.driver_id();
                            self.links.insert((n, assoc), (m, b));
                            self.links.insert((m, b), (n, assoc));
                            let my_port = match channel {
                                ChannelKind::Enrp => ENRP_PORT,
                                _ => ASAP_PORT,
                            };
                            self.queue.push_back(Delivery::Up {
                                to: m,
                                assoc: b,
                                peer: vec![SocketAddr::new(self.nodes[n].ip, my_port)],
                            });
                            self.queue.push_back(Delivery::Up {
                                to: n,
                                assoc,
                                peer: addrs.to_vec(),
                            });
                        }
                        None => self.queue.push_back(Delivery::Down {
                            to: n,
                            assoc,
                            reason: AssocDownReason::ConnectFailed,
                        }),
                    }
                }
                Output::Close { assoc, .. } => {
                    if let Some((to, peer)) = self.links.remove(&(n, assoc)) {
                        self.links.remove(&(to, peer));
                        self.queue.push_back(Delivery::Down {
                            to,
                            assoc: peer,
                            reason: AssocDownReason::Shutdown,
                        });
                    }
                }
                Output::Event(e) => self.events.push((self.now, n, e)),
            }
        }
        if let Kind::Reg(r) = &mut self.nodes[n].kind {
            while let Some(b) = r.poll_bulk_transfer() {
                self.bulk.push((n, b, self.wire.len()));
            }
        }
    }

    fn run_queue(&mut self) {
        while let Some(d) = self.queue.pop_front() {
            let to = match &d {
                Delivery::Msg { to, .. }
                | Delivery::Up { to, .. }
                | Delivery::Down { to, .. }
                | Delivery::Udp { to, .. } => *to,
            };
            if !self.nodes[to].alive {
                continue;
            }
            let now = self.now;
            let mut reply: Option<(AssocId, Bytes)> = None;
            match (&mut self.nodes[to].kind, d) {
                (
                    Kind::Reg(r),
                    Delivery::Msg {
                        assoc, ppid, data, ..
                    },
                ) => r.handle_message(now, assoc, ppid, data),
                (Kind::Reg(r), Delivery::Up { assoc, peer, .. }) => {
                    r.handle_assoc_up(now, assoc, &peer)
                }
                (Kind::Reg(r), Delivery::Down { assoc, reason, .. }) => {
                    r.handle_assoc_down(now, assoc, reason)
                }
                (
                    Kind::Reg(r),
                    Delivery::Udp {
                        from, ppid, data, ..
                    },
                ) => r.handle_datagram(now, from, ppid, data),
                (Kind::Pe { ack, inbox, .. }, Delivery::Msg { assoc, data, .. }) => {
                    if let Ok(m) = AsapMessage::decode(&data) {
                        if let (AsapMessage::EndpointKeepAlive(k), true) = (&m, *ack)
                            && let Some(id) = k.pe_id
                        {
                            let a = EndpointKeepAliveAck::new(k.pool_handle.clone(), id);
                            reply = Some((assoc, AsapMessage::from(a).to_bytes()));
                        }
                        inbox.push((assoc, m));
                    }
                }
                _ => {}
            }
            if let Some((a, b)) = reply {
                self.send_on(to, a, Protocol::PPID_ASAP, b);
            }
            self.handle_outputs(to);
        }
    }

    /// Runs until `now + d`: deliveries first, then timers in time order (all nodes due
    /// at one instant fire before any of their messages is delivered).
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.run_queue();
            let next = (0..self.nodes.len())
                .filter(|&n| self.nodes[n].alive)
                .filter_map(|n| match &self.nodes[n].kind {
                    Kind::Reg(r) => r.poll_timeout(),
                    _ => None,
                })
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in 0..self.nodes.len() {
                        if !self.nodes[n].alive {
                            continue;
                        }
                        let due = match &self.nodes[n].kind {
                            Kind::Reg(r) => r.poll_timeout().is_some_and(|x| x <= now),
                            _ => false,
                        };
                        if due {
                            self.reg_mut(n).handle_timeout(now);
                            self.handle_outputs(n);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = until;
    }

    pub fn events_of(&self, n: usize) -> Vec<(Instant, RegistrarEvent)> {
        self.events
            .iter()
            .filter(|(_, m, e)| *m == n && !matches!(e, RegistrarEvent::ProtocolError { .. }))
            .map(|(t, _, e)| (*t, e.clone()))
            .collect()
    }
}
