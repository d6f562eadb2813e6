//! Simulated nodes: type-erased machines, their factories and process state.

use super::config::NodeConfig;
use super::fault::CrashKind;
use bytes::Bytes;
use core::any::Any;
use core::fmt;
use core::net::{IpAddr, SocketAddr};
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::{AssocDownReason, AssocId, Instant, Machine, Output};
use std::collections::{BTreeMap, VecDeque};

/// A node of the world (index in creation order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Whether a node's process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Running: receives inputs, fires timers.
    Running,
    /// Hung ([`CrashKind::Hung`]): inputs are buffered until resumed.
    Frozen,
    /// No process: crashed (`Some(kind)`) or never started (`None`).
    Down(Option<CrashKind>),
}

/// What a node factory gets to build a machine (at start and at every restart).
#[derive(Debug)]
pub struct NodeCtx {
    /// The node.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// 1 for the first process, +1 per restart.
    pub incarnation: u32,
    /// Current simulated time.
    pub now: Instant,
    /// The node's IP addresses (primary first).
    pub ips: Vec<IpAddr>,
    /// The node's association listen addresses, unspecified IPs expanded.
    pub listen: Vec<SocketAddr>,
    /// The node's whole configuration (UDP bindings, multicast groups).
    pub config: NodeConfig,
    /// A generator for this incarnation, derived from the world seed.
    pub rng: Xoshiro256PlusPlus,
}

/// A machine with its event type mapped into the world's, behind a trait object.
pub(crate) trait SimMachine<E> {
    fn assoc_up(&mut self, now: Instant, assoc: AssocId, peer: &[SocketAddr]);
    fn assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason);
    fn message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes);
    fn datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes);
    fn timeout(&mut self, now: Instant);
    fn poll_output(&mut self) -> Option<Output<E>>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

pub(crate) struct Adapter<M, F> {
    pub(crate) machine: M,
    pub(crate) map: F,
}

impl<E, M, F> SimMachine<E> for Adapter<M, F>
where
    M: Machine + 'static,
    F: Fn(M::Event) -> E,
{
    fn assoc_up(&mut self, now: Instant, assoc: AssocId, peer: &[SocketAddr]) {
        self.machine.handle_assoc_up(now, assoc, peer);
    }
    fn assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.machine.handle_assoc_down(now, assoc, reason);
    }
    fn message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.machine.handle_message(now, assoc, ppid, data);
    }
    fn datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.machine.handle_datagram(now, from, ppid, data);
    }
    fn timeout(&mut self, now: Instant) {
        self.machine.handle_timeout(now);
    }
    fn poll_output(&mut self) -> Option<Output<E>> {
        Some(match self.machine.poll_output()? {
            Output::Transmit(t) => Output::Transmit(t),
            Output::Connect {
                assoc,
                addrs,
                transport,
                channel,
            } => Output::Connect {
                assoc,
                addrs,
                transport,
                channel,
            },
            Output::Close { assoc, abort } => Output::Close { assoc, abort },
            Output::Event(e) => Output::Event((self.map)(e)),
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }
    fn as_any(&self) -> &dyn Any {
        &self.machine
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        &mut self.machine
    }
}

pub(crate) type Factory<E> = Box<dyn FnMut(NodeCtx) -> Box<dyn SimMachine<E>>>;

/// An input that already crossed the network and waits in a hung node's kernel.
pub(crate) enum Ready {
    /// Something for one end of an association.
    Side {
        key: u64,
        side: usize,
        ev: super::world::SideEvent,
    },
    /// A datagram.
    Datagram {
        from_node: NodeId,
        from: SocketAddr,
        ppid: u32,
        payload: Bytes,
    },
    /// An application call.
    Invoke(super::world::InvokeFn),
}

pub(crate) struct Node<E> {
    pub(crate) cfg: NodeConfig,
    pub(crate) state: NodeState,
    pub(crate) incarnation: u32,
    pub(crate) machine: Option<Box<dyn SimMachine<E>>>,
    pub(crate) factory: Factory<E>,
    /// This incarnation's open association ends: id → world association key.
    pub(crate) assocs: BTreeMap<AssocId, u64>,
    /// Next driver-chosen association id (top bit clear), never reused across restarts.
    pub(crate) next_driver_id: u64,
    /// Next ephemeral port for associations this node opens.
    pub(crate) next_port: u16,
    /// Source port of datagrams sent without a UDP binding.
    pub(crate) udp_src_port: u16,
    /// Cached `poll_timeout` of the machine.
    pub(crate) timeout: Option<Instant>,
    /// Inputs buffered while hung.
    pub(crate) backlog: VecDeque<Ready>,
    /// Livelock guard: (instant, timeouts fired at it).
    pub(crate) timeouts_at: (Instant, u32),
}

impl<E> Node<E> {
    /// True if a process (running or hung) exists.
    pub(crate) fn has_process(&self) -> bool {
        matches!(self.state, NodeState::Running | NodeState::Frozen)
    }

    /// Source address of datagrams from this node.
    pub(crate) fn udp_source(&self) -> SocketAddr {
        let primary = self.primary_ip();
        match self.cfg.udp.first() {
            Some(b) if b.ip().is_unspecified() => SocketAddr::new(primary, b.port()),
            Some(b) => *b,
            None => SocketAddr::new(primary, self.udp_src_port),
        }
    }

    pub(crate) fn primary_ip(&self) -> IpAddr {
        self.cfg
            .ips
            .first()
            .copied()
            .unwrap_or(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED))
    }

    /// The node's addresses with `port`.
    pub(crate) fn addrs_with_port(&self, port: u16) -> Vec<SocketAddr> {
        self.cfg
            .ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect()
    }

    /// A fresh ephemeral port.
    pub(crate) fn ephemeral_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
        p
    }

    /// A fresh driver-chosen association id.
    pub(crate) fn driver_id(&mut self) -> AssocId {
        self.next_driver_id += 1;
        AssocId(self.next_driver_id & !rserpool_core::io::AssocIdAllocator::MACHINE_BIT)
    }

    /// The node's listen addresses with unspecified IPs expanded.
    pub(crate) fn listen_addrs(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for b in &self.cfg.listen {
            if b.ip().is_unspecified() {
                out.extend(self.addrs_with_port(b.port()));
            } else {
                out.push(*b);
            }
        }
        out
    }
}
