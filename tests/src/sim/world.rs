//! The simulated world: nodes, network, event queue, faults.

use super::config::{LinkParams, NodeConfig, SimConfig};
use super::fault::{CrashKind, Fault, FaultSchedule};
use super::node::{Adapter, Factory, Node, NodeCtx, NodeId, NodeState, Ready, SimMachine};
use super::trace::{PayloadFormatter, TraceKind, TraceRecord, format_assoc_id, format_record};
use bytes::Bytes;
use core::any::Any;
use core::cmp::Ordering;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::{
    AssocDownReason, AssocId, ChannelKind, Destination, Instant, Machine, Output, Transmit,
};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

/// After this many `handle_timeout` calls at one instant, a node is declared livelocked.
const LIVELOCK_LIMIT: u32 = 10_000;

/// An application call scheduled into a node: gets the machine (as `Any`) and `now`;
/// returns false if the machine had another type.
pub(crate) type InvokeFn = Box<dyn FnOnce(&mut dyn Any, Instant) -> bool>;

/// A message that travels in order on one direction of an association.
pub(crate) enum DirMsg {
    /// The association is up (first item of each direction).
    Up,
    /// A user message.
    Data {
        ppid: u32,
        stream: u16,
        payload: Bytes,
    },
    /// Graceful shutdown by the sender (after all its data).
    Shutdown,
}

/// An input for one end of an association, after the network.
pub(crate) enum SideEvent {
    Msg(DirMsg),
    Down(AssocDownReason),
}

enum Item {
    /// In-order item on the direction towards `to`.
    Dir {
        key: u64,
        to: usize,
        dseq: u64,
        msg: DirMsg,
    },
    /// Network-borne ABORT towards `to` (peer process killed, peer aborted).
    Abort { key: u64, to: usize },
    /// Local transport notification at `side` (closed by us, connect failed, path failure).
    Local {
        key: u64,
        side: usize,
        reason: AssocDownReason,
    },
    /// A datagram towards a node.
    Datagram {
        to: NodeId,
        from_node: NodeId,
        from: SocketAddr,
        ppid: u32,
        payload: Bytes,
    },
    /// Declares the association lost if the partition with this epoch still holds.
    PartitionCheck {
        key: u64,
        pair: (NodeId, NodeId),
        epoch: u64,
    },
    /// A scheduled fault.
    Fault(Fault),
    /// A scheduled application call.
    Invoke { node: NodeId, f: InvokeFn },
}

impl Item {
    /// The association of a control item (counted for quiescence).
    fn control_key(&self) -> Option<u64> {
        match self {
            Item::Dir {
                msg: DirMsg::Data { .. },
                ..
            } => None,
            Item::Dir { key, .. }
            | Item::Abort { key, .. }
            | Item::Local { key, .. }
            | Item::PartitionCheck { key, .. } => Some(*key),
            _ => None,
        }
    }
}

struct QEntry {
    at: Instant,
    seq: u64,
    item: Item,
}

impl PartialEq for QEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for QEntry {}
impl PartialOrd for QEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for QEntry {
    /// Reversed: the max-heap pops the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The state of one end of an association, as its machine knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndState {
    /// Not told yet (connect in progress, or accepted but `Up` still in flight).
    Pending,
    /// Told `handle_assoc_up`.
    Up,
    /// The machine asked to close; its `Down(Closed)` is on its way.
    Closing,
    /// Told `handle_assoc_down` (or never told anything and now gone).
    Closed,
}

/// One end of an association.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndInfo {
    /// The node.
    pub node: NodeId,
    /// The node's incarnation the end belongs to.
    pub incarnation: u32,
    /// The id the machine knows the association by.
    pub assoc: AssocId,
    /// The end's state.
    pub state: EndState,
}

/// An association the world still tracks (at least one end not closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssocInfo {
    /// The end that connected.
    pub connector: EndInfo,
    /// The end that accepted (`None` while a connect to nobody is failing).
    pub acceptor: Option<EndInfo>,
    /// What it is for.
    pub channel: ChannelKind,
}

#[derive(Clone, Debug)]
struct Side {
    node: NodeId,
    incarnation: u32,
    id: AssocId,
    state: EndState,
    /// This end's own transport addresses (what the peer gets as `peer_addrs`).
    addrs: Vec<SocketAddr>,
}

#[derive(Default)]
struct Dir {
    next_send: u64,
    next_recv: u64,
    reorder: BTreeMap<u64, DirMsg>,
    /// Items that arrived while the path was partitioned (retransmitted after a heal).
    stash: Vec<Item>,
}

struct SimAssoc {
    channel: ChannelKind,
    /// `[connector, acceptor]`.
    sides: [Option<Side>; 2],
    /// `dirs[i]`: the direction towards side `i`.
    dirs: [Dir; 2],
    /// Queued control items (up, shutdown, abort, local notices, partition checks).
    control_in_flight: u32,
}

/// Counters over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Steps taken.
    pub steps: u64,
    /// Association messages sent by machines.
    pub messages_sent: u64,
    /// Association messages handed to machines.
    pub messages_delivered: u64,
    /// Datagrams sent by machines (once per send, not per receiver).
    pub datagrams_sent: u64,
    /// Datagrams handed to machines.
    pub datagrams_delivered: u64,
    /// Datagrams lost to link loss.
    pub datagrams_lost: u64,
    /// Datagrams duplicated by the link.
    pub datagrams_duplicated: u64,
    /// `handle_timeout` calls.
    pub timeouts: u64,
    /// `handle_assoc_up` calls.
    pub assocs_up: u64,
    /// `handle_assoc_down` calls.
    pub assocs_down: u64,
    /// Faults applied.
    pub faults: u64,
}

/// A simulated deployment. `E` is the world-level event type that every node's machine
/// events are mapped into (see [`World::add_node`]); events are collected in
/// [`World::events`] with the node and time.
pub struct World<E> {
    cfg: SimConfig,
    now: Instant,
    rng: Xoshiro256PlusPlus,
    nodes: Vec<Node<E>>,
    queue: BinaryHeap<QEntry>,
    seq: u64,
    assocs: BTreeMap<u64, SimAssoc>,
    next_key: u64,
    partitions: BTreeSet<(NodeId, NodeId)>,
    partition_epoch: BTreeMap<(NodeId, NodeId), u64>,
    links: BTreeMap<(NodeId, NodeId), LinkParams>,
    trace: Vec<TraceRecord>,
    events: Vec<(Instant, NodeId, E)>,
    formatter: Option<PayloadFormatter>,
    violations: Vec<String>,
    stats: Stats,
    /// True while a resumed node's backlog is handed over.
    replaying: bool,
    /// Messages handed to machines since the last [`World::take_deliveries`], if
    /// [`World::log_deliveries`] turned the log on.
    deliveries: Option<Vec<Delivery>>,
}

/// A message handed to a node's machine (see [`World::log_deliveries`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When the machine got it.
    pub at: Instant,
    /// The sending node.
    pub from: NodeId,
    /// The receiving node.
    pub to: NodeId,
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b { (a, b) } else { (b, a) }
}

impl<E: fmt::Debug + 'static> World<E> {
    /// An empty world at time zero.
    pub fn new(cfg: SimConfig) -> World<E> {
        World {
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            cfg,
            now: Instant::ZERO,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            assocs: BTreeMap::new(),
            next_key: 0,
            partitions: BTreeSet::new(),
            partition_epoch: BTreeMap::new(),
            links: BTreeMap::new(),
            trace: Vec::new(),
            events: Vec::new(),
            formatter: None,
            violations: Vec::new(),
            stats: Stats::default(),
            replaying: false,
            deliveries: None,
        }
    }

    /// Logs every message handed to a machine over an association from now on (sender,
    /// receiver, time), for [`World::take_deliveries`] — also when tracing is off.
    pub fn log_deliveries(&mut self) {
        self.deliveries.get_or_insert_with(Vec::new);
    }

    /// The deliveries logged since the last call, oldest first (empty unless
    /// [`World::log_deliveries`] was called).
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        self.deliveries
            .as_mut()
            .map(core::mem::take)
            .unwrap_or_default()
    }

    // ---------------------------------------------------------------- nodes

    /// Adds a node whose machine events convert into `E` with `Into`. `factory` builds the
    /// machine now (unless the node is configured [`stopped`](NodeConfig::stopped)) and
    /// again at every [`Fault::Restart`].
    pub fn add_node<M, F>(&mut self, cfg: NodeConfig, factory: F) -> NodeId
    where
        M: Machine + 'static,
        M::Event: Into<E>,
        F: FnMut(NodeCtx) -> M + 'static,
    {
        self.add_node_mapped(cfg, factory, <M::Event as Into<E>>::into)
    }

    /// Adds a node whose machine events are converted into `E` by `map`.
    pub fn add_node_mapped<M, F, G>(
        &mut self,
        mut cfg: NodeConfig,
        mut factory: F,
        map: G,
    ) -> NodeId
    where
        M: Machine + 'static,
        F: FnMut(NodeCtx) -> M + 'static,
        G: Fn(M::Event) -> E + Clone + 'static,
    {
        let id = NodeId(self.nodes.len());
        if cfg.ips.is_empty() {
            let v = u32::try_from(id.0 + 1).unwrap_or(u32::MAX);
            let [_, a, b, c] = v.to_be_bytes();
            cfg.ips.push(IpAddr::V4(Ipv4Addr::new(10, a, b, c)));
        }
        let factory: Factory<E> = Box::new(move |ctx| {
            Box::new(Adapter {
                machine: factory(ctx),
                map: map.clone(),
            }) as Box<dyn SimMachine<E>>
        });
        let stopped = cfg.stopped;
        let udp_src_port = 40000u16.wrapping_add(u16::try_from(id.0 % 10000).unwrap_or(0));
        self.nodes.push(Node {
            cfg,
            state: NodeState::Down(None),
            incarnation: 0,
            machine: None,
            factory,
            assocs: BTreeMap::new(),
            next_driver_id: 0,
            next_port: 49152,
            udp_src_port,
            timeout: None,
            backlog: VecDeque::new(),
            timeouts_at: (Instant::ZERO, 0),
        });
        if !stopped {
            self.start_process(id);
        }
        id
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// All node ids, in creation order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        (0..self.nodes.len()).map(NodeId).collect()
    }

    /// The node's configuration (with its IPs filled in).
    ///
    /// # Panics
    /// If `node` does not exist (as do the other per-node accessors).
    pub fn node_config(&self, node: NodeId) -> &NodeConfig {
        &self.nodes[node.0].cfg
    }

    /// The node's name.
    pub fn node_name(&self, node: NodeId) -> &str {
        &self.nodes[node.0].cfg.name
    }

    /// The node called `name`, if any.
    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.cfg.name == name)
            .map(NodeId)
    }

    /// Whether the node's process runs.
    pub fn node_state(&self, node: NodeId) -> NodeState {
        self.nodes[node.0].state
    }

    /// The node's current incarnation (0 before its first start).
    pub fn incarnation(&self, node: NodeId) -> u32 {
        self.nodes[node.0].incarnation
    }

    /// The node's machine, if it has a process and the machine is an `M`.
    pub fn machine<M: 'static>(&self, node: NodeId) -> Option<&M> {
        self.nodes
            .get(node.0)?
            .machine
            .as_ref()?
            .as_any()
            .downcast_ref::<M>()
    }

    /// Calls `f` on a running node's machine now (an application request such as "register
    /// this PE"), then drains its outputs. `None` if the node is not running or its machine
    /// is not an `M`.
    pub fn invoke<M: 'static, R>(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut M, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let n = self.nodes.get_mut(node.0)?;
        if n.state != NodeState::Running {
            return None;
        }
        let m = n.machine.as_mut()?.as_any_mut().downcast_mut::<M>()?;
        let r = f(m, now);
        self.record(Some(node), TraceKind::Invoke);
        self.drain(node);
        Some(r)
    }

    /// Schedules `f` on the node's machine at `at` (buffered while the node is hung,
    /// dropped if it has no process; a machine of another type is a violation).
    pub fn schedule_invoke<M: 'static>(
        &mut self,
        at: Instant,
        node: NodeId,
        f: impl FnOnce(&mut M, Instant) + 'static,
    ) {
        let f: InvokeFn = Box::new(move |any, now| match any.downcast_mut::<M>() {
            Some(m) => {
                f(m, now);
                true
            }
            None => false,
        });
        self.push(at.max(self.now), Item::Invoke { node, f });
    }

    // ---------------------------------------------------------------- network

    /// Sets the link between `a` and `b` (both directions).
    pub fn set_link(&mut self, a: NodeId, b: NodeId, params: LinkParams) {
        self.links.insert(pair(a, b), params);
    }

    /// The link between `a` and `b`.
    pub fn link(&self, a: NodeId, b: NodeId) -> LinkParams {
        self.links
            .get(&pair(a, b))
            .copied()
            .unwrap_or(self.cfg.default_link)
    }

    /// True if `a` and `b` are partitioned from each other.
    pub fn is_partitioned(&self, a: NodeId, b: NodeId) -> bool {
        a != b && self.partitions.contains(&pair(a, b))
    }

    // ---------------------------------------------------------------- faults

    /// Schedules a fault.
    pub fn schedule_fault(&mut self, at: Instant, fault: Fault) {
        self.push(at.max(self.now), Item::Fault(fault));
    }

    /// Schedules every fault of `schedule`.
    pub fn schedule_faults(&mut self, schedule: &FaultSchedule) {
        for (at, f) in &schedule.faults {
            self.schedule_fault(*at, f.clone());
        }
    }

    /// Applies a fault now.
    pub fn apply_fault(&mut self, fault: Fault) {
        self.stats.faults += 1;
        let node = match &fault {
            Fault::Crash { node, .. }
            | Fault::Restart { node }
            | Fault::Resume { node }
            | Fault::Isolate { node } => Some(*node),
            _ => None,
        };
        if node.is_some_and(|n| n.0 >= self.nodes.len()) {
            self.violation(None, format!("fault for unknown node: {fault:?}"));
            return;
        }
        self.record(node, TraceKind::Fault(fault.clone()));
        match fault {
            Fault::Crash { node, kind } => {
                if self.nodes[node.0].state == NodeState::Running
                    || (self.nodes[node.0].state == NodeState::Frozen && kind != CrashKind::Hung)
                {
                    self.crash(node, kind);
                }
            }
            Fault::Restart { node } => self.restart(node),
            Fault::Resume { node } => self.resume(node),
            Fault::Partition { a, b } => self.partition(a, b),
            Fault::Heal { a, b } => self.heal(a, b),
            Fault::Isolate { node } => {
                for other in self.node_ids() {
                    self.partition(node, other);
                }
            }
            Fault::HealAll => self.heal_all(),
            Fault::LinkLoss { a, b, percent } => {
                let mut l = self.link(a, b);
                l.udp_loss = f64::from(percent.min(100)) / 100.0;
                self.set_link(a, b, l);
            }
            Fault::RecoverAll => {
                self.heal_all();
                self.links.clear();
                for n in self.node_ids() {
                    match self.nodes[n.0].state {
                        NodeState::Frozen => self.resume(n),
                        NodeState::Down(Some(_)) => self.restart(n),
                        NodeState::Running | NodeState::Down(None) => {}
                    }
                }
            }
        }
    }

    fn crash(&mut self, n: NodeId, kind: CrashKind) {
        if kind == CrashKind::Hung {
            self.nodes[n.0].state = NodeState::Frozen;
            return;
        }
        let node = &mut self.nodes[n.0];
        node.state = NodeState::Down(Some(kind));
        node.machine = None;
        node.timeout = None;
        node.backlog.clear();
        let inc = node.incarnation;
        let ends = core::mem::take(&mut node.assocs);
        let mut notices = Vec::new();
        for key in ends.into_values() {
            let Some(rec) = self.assocs.get_mut(&key) else {
                continue;
            };
            for s in rec.sides.iter_mut().flatten() {
                if s.node == n && s.incarnation == inc {
                    s.state = EndState::Closed;
                }
            }
            for (i, s) in rec.sides.iter().enumerate() {
                if let Some(s) = s
                    && s.state != EndState::Closed
                {
                    notices.push((key, i, s.node));
                }
            }
            self.maybe_remove(key);
        }
        for (key, to, peer) in notices {
            match kind {
                CrashKind::HostDown => {
                    let at = self.now + self.cfg.failure_detection;
                    self.push(
                        at,
                        Item::Local {
                            key,
                            side: to,
                            reason: AssocDownReason::Lost,
                        },
                    );
                }
                _ => {
                    let at = self.now + self.delay(n, peer);
                    self.push(at, Item::Abort { key, to });
                }
            }
        }
    }

    fn restart(&mut self, n: NodeId) {
        match self.nodes[n.0].state {
            NodeState::Running | NodeState::Frozen => self.crash(n, CrashKind::Killed),
            NodeState::Down(Some(CrashKind::HostDown)) => {
                // The host is back: it answers the peers' next packet with an ABORT.
                let mut notices = Vec::new();
                for (key, rec) in &self.assocs {
                    let on_n = rec.sides.iter().flatten().any(|s| s.node == n);
                    if !on_n {
                        continue;
                    }
                    for (i, s) in rec.sides.iter().enumerate() {
                        if let Some(s) = s
                            && s.node != n
                            && s.state != EndState::Closed
                        {
                            notices.push((*key, i, s.node));
                        }
                    }
                }
                for (key, to, peer) in notices {
                    let at = self.now + self.delay(n, peer);
                    self.push(at, Item::Abort { key, to });
                }
            }
            NodeState::Down(_) => {}
        }
        self.start_process(n);
    }

    fn start_process(&mut self, n: NodeId) {
        let seed = self.rng.next_u64();
        let now = self.now;
        let node = &mut self.nodes[n.0];
        node.incarnation += 1;
        let ctx = NodeCtx {
            id: n,
            name: node.cfg.name.clone(),
            incarnation: node.incarnation,
            now,
            ips: node.cfg.ips.clone(),
            listen: node.listen_addrs(),
            config: node.cfg.clone(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        };
        let machine = (node.factory)(ctx);
        node.machine = Some(machine);
        node.state = NodeState::Running;
        node.backlog.clear();
        node.timeouts_at = (now, 0);
        self.drain(n);
    }

    fn resume(&mut self, n: NodeId) {
        if self.nodes[n.0].state != NodeState::Frozen {
            return;
        }
        self.nodes[n.0].state = NodeState::Running;
        let inc = self.nodes[n.0].incarnation;
        let backlog = core::mem::take(&mut self.nodes[n.0].backlog);
        self.replaying = true;
        for r in backlog {
            let node = &self.nodes[n.0];
            if node.state != NodeState::Running || node.incarnation != inc {
                break;
            }
            self.apply_ready(n, r);
        }
        self.replaying = false;
        self.refresh_timeout(n);
    }

    fn partition(&mut self, a: NodeId, b: NodeId) {
        if a == b {
            return;
        }
        let p = pair(a, b);
        self.partitions.insert(p);
        let epoch = {
            let e = self.partition_epoch.entry(p).or_insert(0);
            *e += 1;
            *e
        };
        let keys: Vec<u64> = self
            .assocs
            .iter()
            .filter(|(_, r)| Self::crosses(r, p))
            .map(|(k, _)| *k)
            .collect();
        let at = self.now + self.cfg.failure_detection;
        for key in keys {
            self.push(
                at,
                Item::PartitionCheck {
                    key,
                    pair: p,
                    epoch,
                },
            );
        }
    }

    fn crosses(rec: &SimAssoc, p: (NodeId, NodeId)) -> bool {
        match &rec.sides {
            [Some(x), Some(y)] => pair(x.node, y.node) == p,
            _ => false,
        }
    }

    fn heal(&mut self, a: NodeId, b: NodeId) {
        let p = pair(a, b);
        if !self.partitions.remove(&p) {
            return;
        }
        let keys: Vec<u64> = self
            .assocs
            .iter()
            .filter(|(_, r)| Self::crosses(r, p))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            for to in 0..2 {
                let Some(rec) = self.assocs.get_mut(&key) else {
                    continue;
                };
                let stash = core::mem::take(&mut rec.dirs[to].stash);
                let (Some(from), Some(dst)) = (
                    rec.sides[1 - to].as_ref().map(|s| s.node),
                    rec.sides[to].as_ref().map(|s| s.node),
                ) else {
                    continue;
                };
                for item in stash {
                    let at = self.now + self.delay(from, dst);
                    self.push(at, item);
                }
            }
        }
    }

    fn heal_all(&mut self) {
        let all: Vec<_> = self.partitions.iter().copied().collect();
        for (a, b) in all {
            self.heal(a, b);
        }
    }

    // ---------------------------------------------------------------- running

    /// Current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The time of the next thing to happen (queued item or node timer), if any.
    pub fn next_event_time(&self) -> Option<Instant> {
        let q = self.queue.peek().map(|e| e.at);
        let t = self.next_timer().map(|(t, _)| t);
        match (q, t) {
            (Some(a), Some(b)) => Some(a.min(b).max(self.now)),
            (a, b) => a.or(b).map(|x| x.max(self.now)),
        }
    }

    fn next_timer(&self) -> Option<(Instant, NodeId)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state == NodeState::Running)
            .filter_map(|(i, n)| n.timeout.map(|t| (t, NodeId(i))))
            .min()
    }

    /// Does the next thing: delivers the earliest queued item or fires the earliest node
    /// timer (queued items first at equal times, then lower node ids), and drains the
    /// outputs of the node concerned. Returns false if nothing is left to do.
    ///
    /// # Panics
    /// If a node's timer keeps firing at the same instant (`LIVELOCK_LIMIT`, 10,000 times): its
    /// machine does not advance its deadline after `handle_timeout`.
    pub fn step(&mut self) -> bool {
        let q = self.queue.peek().map(|e| e.at);
        let t = self.next_timer();
        let fire_timer = match (q, t) {
            (None, None) => return false,
            (Some(qa), Some((ta, _))) => ta < qa,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        self.stats.steps += 1;
        if let (true, Some((at, n))) = (fire_timer, t) {
            self.now = self.now.max(at);
            self.fire_timer(n);
        } else if let Some(e) = self.queue.pop() {
            self.now = self.now.max(e.at);
            if let Some(key) = e.item.control_key()
                && let Some(rec) = self.assocs.get_mut(&key)
            {
                rec.control_in_flight = rec.control_in_flight.saturating_sub(1);
            }
            self.dispatch(e.item);
        }
        true
    }

    /// Runs everything due up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while let Some(next) = self.next_event_time() {
            if next > t {
                break;
            }
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Steps while `keep_going(self)` holds and the next event is not after `deadline`.
    /// Returns true if `keep_going` turned false (the clock then stays at that moment),
    /// false if the deadline came first (the clock is then at `deadline`).
    pub fn run_while(
        &mut self,
        mut keep_going: impl FnMut(&Self) -> bool,
        deadline: Instant,
    ) -> bool {
        loop {
            if !keep_going(self) {
                return true;
            }
            match self.next_event_time() {
                Some(t) if t <= deadline => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return !keep_going(self);
                }
            }
        }
    }

    /// Steps until `done(self)` holds; returns the time it first held, or `None` if it did
    /// not hold by `deadline`.
    pub fn run_until_true(
        &mut self,
        mut done: impl FnMut(&Self) -> bool,
        deadline: Instant,
    ) -> Option<Instant> {
        if self.run_while(|w| !done(w), deadline) {
            Some(self.now)
        } else {
            None
        }
    }

    fn fire_timer(&mut self, n: NodeId) {
        let now = self.now;
        let node = &mut self.nodes[n.0];
        if node.timeouts_at.0 == now {
            node.timeouts_at.1 += 1;
            assert!(
                node.timeouts_at.1 < LIVELOCK_LIMIT,
                "node {} ({}) livelocked: handle_timeout called {LIVELOCK_LIMIT} times at {now:?} \
                 without poll_timeout moving past it",
                n,
                node.cfg.name
            );
        } else {
            node.timeouts_at = (now, 1);
        }
        // Clear the cached deadline first, so a machine without a deadline afterwards
        // is not called again.
        node.timeout = None;
        self.stats.timeouts += 1;
        self.record(Some(n), TraceKind::Timeout);
        if let Some(m) = self.nodes[n.0].machine.as_mut() {
            m.timeout(now);
        }
        self.drain(n);
    }

    fn dispatch(&mut self, item: Item) {
        match item {
            Item::Dir { key, to, dseq, msg } => self.arrive_dir(key, to, dseq, msg),
            Item::Abort { key, to } => {
                let Some(rec) = self.assocs.get_mut(&key) else {
                    return;
                };
                if let [Some(x), Some(y)] = &rec.sides
                    && x.node != y.node
                    && self.partitions.contains(&pair(x.node, y.node))
                {
                    rec.dirs[to].stash.push(Item::Abort { key, to });
                    return;
                }
                self.deliver_side(key, to, SideEvent::Down(AssocDownReason::Lost));
            }
            Item::Local { key, side, reason } => {
                self.deliver_side(key, side, SideEvent::Down(reason));
            }
            Item::Datagram {
                to,
                from_node,
                from,
                ppid,
                payload,
            } => {
                if self.is_partitioned(from_node, to) {
                    self.record(
                        Some(to),
                        TraceKind::Drop(format!(
                            "datagram from {}: partitioned",
                            self.node_name(from_node)
                        )),
                    );
                    return;
                }
                let r = Ready::Datagram {
                    from_node,
                    from,
                    ppid,
                    payload,
                };
                self.deliver_ready(to, r, "datagram");
            }
            Item::PartitionCheck {
                key,
                pair: p,
                epoch,
            } => {
                if !self.partitions.contains(&p) || self.partition_epoch.get(&p) != Some(&epoch) {
                    return;
                }
                let Some(rec) = self.assocs.get_mut(&key) else {
                    return;
                };
                for d in &mut rec.dirs {
                    d.stash.clear();
                }
                let open: Vec<usize> = (0..2)
                    .filter(|i| {
                        rec.sides[*i]
                            .as_ref()
                            .is_some_and(|s| s.state != EndState::Closed)
                    })
                    .collect();
                for side in open {
                    let now = self.now;
                    self.push(
                        now,
                        Item::Local {
                            key,
                            side,
                            reason: AssocDownReason::Lost,
                        },
                    );
                }
            }
            Item::Fault(f) => self.apply_fault(f),
            Item::Invoke { node, f } => {
                if node.0 < self.nodes.len() {
                    self.deliver_ready(node, Ready::Invoke(f), "invoke");
                }
            }
        }
    }

    fn arrive_dir(&mut self, key: u64, to: usize, dseq: u64, msg: DirMsg) {
        let Some(rec) = self.assocs.get_mut(&key) else {
            return;
        };
        let (Some(from), Some(dst)) = (
            rec.sides[1 - to].as_ref().map(|s| s.node),
            rec.sides[to].as_ref().map(|s| s.node),
        ) else {
            return;
        };
        if from != dst && self.partitions.contains(&pair(from, dst)) {
            rec.dirs[to].stash.push(Item::Dir { key, to, dseq, msg });
            return;
        }
        let dir = &mut rec.dirs[to];
        if dseq < dir.next_recv {
            return;
        }
        dir.reorder.insert(dseq, msg);
        let mut ready = Vec::new();
        while let Some(m) = dir.reorder.remove(&dir.next_recv) {
            dir.next_recv += 1;
            ready.push(m);
        }
        for m in ready {
            self.deliver_side(key, to, SideEvent::Msg(m));
        }
    }

    /// Hands an input that crossed the network to a node: to its machine if running, to
    /// its backlog if hung, nowhere if it has no process.
    fn deliver_ready(&mut self, n: NodeId, r: Ready, what: &str) {
        match self.nodes[n.0].state {
            NodeState::Running => self.apply_ready(n, r),
            NodeState::Frozen => self.nodes[n.0].backlog.push_back(r),
            NodeState::Down(_) => {
                self.record(Some(n), TraceKind::Drop(format!("{what}: no process")));
            }
        }
    }

    fn deliver_side(&mut self, key: u64, side: usize, ev: SideEvent) {
        let Some(s) = self.assocs.get(&key).and_then(|r| r.sides[side].as_ref()) else {
            return;
        };
        let (n, inc) = (s.node, s.incarnation);
        if self.nodes[n.0].incarnation != inc {
            return;
        }
        self.deliver_ready(n, Ready::Side { key, side, ev }, "association input");
    }

    fn apply_ready(&mut self, n: NodeId, r: Ready) {
        match r {
            Ready::Side { key, side, ev } => self.apply_side(key, side, ev),
            Ready::Datagram {
                from_node,
                from,
                ppid,
                payload,
            } => {
                let now = self.now;
                self.stats.datagrams_delivered += 1;
                self.record(
                    Some(n),
                    TraceKind::RecvUdp {
                        from_node,
                        from,
                        ppid,
                        payload: payload.clone(),
                        buffered: self.replaying,
                    },
                );
                if let Some(m) = self.nodes[n.0].machine.as_mut() {
                    m.datagram(now, from, ppid, payload);
                }
                self.drain(n);
            }
            Ready::Invoke(f) => {
                let now = self.now;
                let applied = match self.nodes[n.0].machine.as_mut() {
                    Some(m) => f(m.as_any_mut(), now),
                    None => true,
                };
                if applied {
                    self.record(Some(n), TraceKind::Invoke);
                } else {
                    self.violation(Some(n), "scheduled invoke for another machine type".into());
                }
                self.drain(n);
            }
        }
    }

    fn apply_side(&mut self, key: u64, side: usize, ev: SideEvent) {
        enum Call {
            Up(Vec<SocketAddr>, NodeId),
            Msg(u32, u16, Bytes, NodeId),
            Down(AssocDownReason),
            Nothing(&'static str),
        }
        let Some(rec) = self.assocs.get_mut(&key) else {
            return;
        };
        let peer = rec.sides[1 - side]
            .as_ref()
            .map(|s| (s.node, s.addrs.clone()));
        let Some(s) = rec.sides[side].as_mut() else {
            return;
        };
        let (n, id) = (s.node, s.id);
        let ev = match ev {
            SideEvent::Msg(DirMsg::Shutdown) => SideEvent::Down(AssocDownReason::Shutdown),
            other => other,
        };
        let call = match (ev, s.state) {
            (SideEvent::Msg(DirMsg::Up), EndState::Pending) => match peer {
                Some((pn, addrs)) => {
                    s.state = EndState::Up;
                    Call::Up(addrs, pn)
                }
                None => Call::Nothing("up without peer"),
            },
            (
                SideEvent::Msg(DirMsg::Data {
                    ppid,
                    stream,
                    payload,
                }),
                EndState::Up,
            ) => Call::Msg(ppid, stream, payload, peer.map_or(n, |p| p.0)),
            (SideEvent::Msg(_), _) => Call::Nothing("message on an association not up"),
            (SideEvent::Down(_), EndState::Pending) => {
                s.state = EndState::Closed;
                if side == 0 {
                    Call::Down(AssocDownReason::ConnectFailed)
                } else {
                    Call::Nothing("")
                }
            }
            (SideEvent::Down(r), EndState::Up) => {
                s.state = EndState::Closed;
                Call::Down(r)
            }
            (SideEvent::Down(AssocDownReason::Closed), EndState::Closing) => {
                s.state = EndState::Closed;
                Call::Down(AssocDownReason::Closed)
            }
            (SideEvent::Down(_), _) => Call::Nothing(""),
        };
        let closed = s.state == EndState::Closed;
        if closed {
            self.nodes[n.0].assocs.remove(&id);
            self.maybe_remove(key);
        }
        let now = self.now;
        match call {
            Call::Up(addrs, peer) => {
                self.stats.assocs_up += 1;
                self.record(Some(n), TraceKind::Up { assoc: id, peer });
                if let Some(m) = self.nodes[n.0].machine.as_mut() {
                    m.assoc_up(now, id, &addrs);
                }
            }
            Call::Msg(ppid, stream, payload, from) => {
                self.stats.messages_delivered += 1;
                self.record(
                    Some(n),
                    TraceKind::Recv {
                        assoc: id,
                        from,
                        ppid,
                        stream,
                        payload: payload.clone(),
                        buffered: self.replaying,
                    },
                );
                if let Some(m) = self.nodes[n.0].machine.as_mut() {
                    m.message(now, id, ppid, payload);
                    if let Some(log) = self.deliveries.as_mut() {
                        log.push(Delivery {
                            at: now,
                            from,
                            to: n,
                        });
                    }
                }
            }
            Call::Down(reason) => {
                self.stats.assocs_down += 1;
                self.record(Some(n), TraceKind::Down { assoc: id, reason });
                if let Some(m) = self.nodes[n.0].machine.as_mut() {
                    m.assoc_down(now, id, reason);
                }
            }
            Call::Nothing(why) => {
                if !why.is_empty() {
                    self.record(
                        Some(n),
                        TraceKind::Drop(format!("{why} ({})", format_assoc_id(id))),
                    );
                }
                return;
            }
        }
        self.drain(n);
    }

    fn maybe_remove(&mut self, key: u64) {
        if let Some(rec) = self.assocs.get(&key)
            && rec
                .sides
                .iter()
                .flatten()
                .all(|s| s.state == EndState::Closed)
        {
            self.assocs.remove(&key);
        }
    }

    // ---------------------------------------------------------------- outputs

    fn drain(&mut self, n: NodeId) {
        loop {
            let Some(out) = self.nodes[n.0]
                .machine
                .as_mut()
                .and_then(|m| m.poll_output())
            else {
                break;
            };
            self.handle_output(n, out);
        }
        self.refresh_timeout(n);
    }

    fn refresh_timeout(&mut self, n: NodeId) {
        let node = &mut self.nodes[n.0];
        node.timeout = node.machine.as_ref().and_then(|m| m.poll_timeout());
    }

    fn handle_output(&mut self, n: NodeId, out: Output<E>) {
        match out {
            Output::Transmit(t) => self.transmit(n, t),
            Output::Connect {
                assoc,
                addrs,
                transport: _,
                channel,
            } => self.connect(n, assoc, &addrs, channel),
            Output::Close { assoc, abort } => self.close(n, assoc, abort),
            Output::Event(e) => {
                if self.cfg.trace {
                    self.record(Some(n), TraceKind::Event(format!("{e:?}")));
                }
                self.events.push((self.now, n, e));
            }
        }
    }

    fn side_of(&self, n: NodeId, assoc: AssocId) -> Option<(u64, usize)> {
        let key = *self.nodes[n.0].assocs.get(&assoc)?;
        let rec = self.assocs.get(&key)?;
        let inc = self.nodes[n.0].incarnation;
        let i = rec.sides.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.node == n && s.id == assoc && s.incarnation == inc)
        })?;
        Some((key, i))
    }

    fn transmit(&mut self, n: NodeId, t: Transmit) {
        match t.dest {
            Destination::Assoc(assoc) => {
                self.stats.messages_sent += 1;
                let found = self.side_of(n, assoc);
                let peer = found.and_then(|(key, i)| {
                    self.assocs.get(&key)?.sides[1 - i].as_ref().map(|s| s.node)
                });
                self.record(
                    Some(n),
                    TraceKind::Send {
                        assoc,
                        to: peer,
                        ppid: t.ppid,
                        stream: t.stream,
                        payload: t.payload.clone(),
                    },
                );
                let Some((key, i)) = found else {
                    self.record(
                        Some(n),
                        TraceKind::Drop(format!("send on unknown {}", format_assoc_id(assoc))),
                    );
                    return;
                };
                let Some(peer) = peer else {
                    self.record(
                        Some(n),
                        TraceKind::Drop(format!("send on failing {}", format_assoc_id(assoc))),
                    );
                    return;
                };
                let closing = self
                    .assocs
                    .get(&key)
                    .and_then(|r| r.sides[i].as_ref())
                    .is_some_and(|s| s.state != EndState::Pending && s.state != EndState::Up);
                if closing {
                    self.record(
                        Some(n),
                        TraceKind::Drop(format!("send on closing {}", format_assoc_id(assoc))),
                    );
                    return;
                }
                let at = self.now + self.delay(n, peer);
                let to = 1 - i;
                let Some(rec) = self.assocs.get_mut(&key) else {
                    return;
                };
                let dseq = rec.dirs[to].next_send;
                rec.dirs[to].next_send += 1;
                self.push(
                    at,
                    Item::Dir {
                        key,
                        to,
                        dseq,
                        msg: DirMsg::Data {
                            ppid: t.ppid,
                            stream: t.stream,
                            payload: t.payload,
                        },
                    },
                );
            }
            Destination::Udp(dest) => self.send_udp(n, dest, t.ppid, t.payload),
        }
    }

    fn send_udp(&mut self, n: NodeId, dest: SocketAddr, ppid: u32, payload: Bytes) {
        self.stats.datagrams_sent += 1;
        self.record(
            Some(n),
            TraceKind::SendUdp {
                dest,
                ppid,
                payload: payload.clone(),
            },
        );
        let targets: Vec<NodeId> = if dest.ip().is_multicast() {
            self.nodes
                .iter()
                .enumerate()
                .filter(|(i, node)| {
                    node.cfg.groups.contains(&dest) && (*i != n.0 || self.cfg.multicast_loopback)
                })
                .map(|(i, _)| NodeId(i))
                .collect()
        } else {
            self.nodes
                .iter()
                .enumerate()
                .filter(|(_, node)| node.cfg.receives_udp_on(&dest))
                .map(|(i, _)| NodeId(i))
                .collect()
        };
        if targets.is_empty() {
            self.record(
                Some(n),
                TraceKind::Drop(format!("datagram to {dest}: no receiver")),
            );
            return;
        }
        let from = self.nodes[n.0].udp_source();
        for to in targets {
            if self.is_partitioned(n, to) {
                self.record(
                    Some(n),
                    TraceKind::Drop(format!("datagram to {}: partitioned", self.node_name(to))),
                );
                continue;
            }
            let link = self.link(n, to);
            if self.chance(link.udp_loss) {
                self.stats.datagrams_lost += 1;
                self.record(
                    Some(n),
                    TraceKind::Drop(format!("datagram to {}: lost", self.node_name(to))),
                );
                continue;
            }
            let copies = if self.chance(link.udp_duplicate) {
                self.stats.datagrams_duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + self.delay(n, to);
                self.push(
                    at,
                    Item::Datagram {
                        to,
                        from_node: n,
                        from,
                        ppid,
                        payload: payload.clone(),
                    },
                );
            }
        }
    }

    fn connect(&mut self, n: NodeId, assoc: AssocId, addrs: &[SocketAddr], channel: ChannelKind) {
        let target = addrs.iter().find_map(|a| {
            self.nodes
                .iter()
                .position(|node| node.cfg.listens_on(a))
                .map(|i| (NodeId(i), *a))
        });
        self.record(
            Some(n),
            TraceKind::Connect {
                assoc,
                addrs: addrs.to_vec(),
                channel,
                to: target.map(|t| t.0),
            },
        );
        if !AssocIdAllocator::is_machine_chosen(assoc) {
            self.violation(
                Some(n),
                format!("connect with a driver-range id {}", format_assoc_id(assoc)),
            );
            return;
        }
        if self.nodes[n.0].assocs.contains_key(&assoc) {
            self.violation(
                Some(n),
                format!("connect with an id in use {}", format_assoc_id(assoc)),
            );
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        let port = match self.nodes[n.0].cfg.source_port {
            Some(p) => p,
            None => self.nodes[n.0].ephemeral_port(),
        };
        let side0 = Side {
            node: n,
            incarnation: self.nodes[n.0].incarnation,
            id: assoc,
            state: EndState::Pending,
            addrs: self.nodes[n.0].addrs_with_port(port),
        };
        self.nodes[n.0].assocs.insert(assoc, key);
        self.assocs.insert(
            key,
            SimAssoc {
                channel,
                sides: [Some(side0), None],
                dirs: [Dir::default(), Dir::default()],
                control_in_flight: 0,
            },
        );
        let refused_by = |w: &Self, t: NodeId| -> bool {
            !w.is_partitioned(n, t)
                && w.nodes[t.0].state != NodeState::Down(Some(CrashKind::HostDown))
        };
        let fail_at = match target {
            None => {
                let owner = self
                    .nodes
                    .iter()
                    .position(|node| addrs.iter().any(|a| node.cfg.ips.contains(&a.ip())))
                    .map(NodeId);
                match owner {
                    Some(o) if refused_by(self, o) => {
                        self.now + self.delay(n, o) + self.delay(o, n)
                    }
                    _ => self.now + self.cfg.connect_timeout,
                }
            }
            Some((t, _)) if !refused_by(self, t) => self.now + self.cfg.connect_timeout,
            Some((t, _)) if !self.nodes[t.0].has_process() => {
                self.now + self.delay(n, t) + self.delay(t, n)
            }
            Some((t, addr)) => {
                let acceptor = &mut self.nodes[t.0];
                let id = acceptor.driver_id();
                let side1 = Side {
                    node: t,
                    incarnation: acceptor.incarnation,
                    id,
                    state: EndState::Pending,
                    addrs: acceptor.addrs_with_port(addr.port()),
                };
                acceptor.assocs.insert(id, key);
                let d1 = self.delay(n, t);
                let d2 = self.delay(t, n);
                if let Some(rec) = self.assocs.get_mut(&key) {
                    rec.sides[1] = Some(side1);
                    rec.dirs[0].next_send = 1;
                    rec.dirs[1].next_send = 1;
                }
                let now = self.now;
                self.push(
                    now + d1,
                    Item::Dir {
                        key,
                        to: 1,
                        dseq: 0,
                        msg: DirMsg::Up,
                    },
                );
                self.push(
                    now + d1 + d2,
                    Item::Dir {
                        key,
                        to: 0,
                        dseq: 0,
                        msg: DirMsg::Up,
                    },
                );
                return;
            }
        };
        self.push(
            fail_at,
            Item::Local {
                key,
                side: 0,
                reason: AssocDownReason::ConnectFailed,
            },
        );
    }

    fn close(&mut self, n: NodeId, assoc: AssocId, abort: bool) {
        self.record(Some(n), TraceKind::Close { assoc, abort });
        let Some((key, i)) = self.side_of(n, assoc) else {
            self.record(
                Some(n),
                TraceKind::Drop(format!("close of unknown {}", format_assoc_id(assoc))),
            );
            return;
        };
        let Some(rec) = self.assocs.get_mut(&key) else {
            return;
        };
        let Some(s) = rec.sides[i].as_mut() else {
            return;
        };
        if !matches!(s.state, EndState::Pending | EndState::Up) {
            return;
        }
        s.state = EndState::Closing;
        let peer = rec.sides[1 - i]
            .as_ref()
            .filter(|p| p.state != EndState::Closed)
            .map(|p| p.node);
        let now = self.now;
        self.push(
            now,
            Item::Local {
                key,
                side: i,
                reason: AssocDownReason::Closed,
            },
        );
        let Some(peer) = peer else {
            return;
        };
        let at = now + self.delay(n, peer);
        let to = 1 - i;
        if abort {
            self.push(at, Item::Abort { key, to });
        } else if let Some(rec) = self.assocs.get_mut(&key) {
            let dseq = rec.dirs[to].next_send;
            rec.dirs[to].next_send += 1;
            self.push(
                at,
                Item::Dir {
                    key,
                    to,
                    dseq,
                    msg: DirMsg::Shutdown,
                },
            );
        }
    }

    // ---------------------------------------------------------------- helpers

    fn push(&mut self, at: Instant, item: Item) {
        if let Some(key) = item.control_key()
            && let Some(rec) = self.assocs.get_mut(&key)
        {
            rec.control_in_flight += 1;
        }
        self.seq += 1;
        self.queue.push(QEntry {
            at,
            seq: self.seq,
            item,
        });
    }

    fn delay(&mut self, a: NodeId, b: NodeId) -> Duration {
        let l = self.link(a, b);
        let jitter = u64::try_from(l.jitter.as_micros()).unwrap_or(u64::MAX);
        if jitter == 0 {
            l.delay
        } else {
            l.delay + Duration::from_micros(self.rng.next_u64() % jitter.saturating_add(1))
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        #[allow(clippy::cast_precision_loss)]
        let x = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    fn record(&mut self, node: Option<NodeId>, kind: TraceKind) {
        if !self.cfg.trace {
            return;
        }
        let incarnation = node.map_or(0, |n| self.nodes[n.0].incarnation);
        self.trace.push(TraceRecord {
            at: self.now,
            node,
            incarnation,
            kind,
        });
    }

    fn violation(&mut self, node: Option<NodeId>, what: String) {
        let who = node.map_or_else(|| "*".to_string(), |n| self.node_name(n).to_string());
        self.violations
            .push(format!("{:?} {who}: {what}", self.now));
        self.record(node, TraceKind::Violation(what));
    }

    // ---------------------------------------------------------------- observation

    /// The trace so far (empty if tracing is off).
    pub fn trace(&self) -> &[TraceRecord] {
        &self.trace
    }

    /// The trace as text, one line per record, payloads summarised by the formatter.
    pub fn trace_lines(&self) -> Vec<String> {
        let name = |n: NodeId| self.node_name(n).to_string();
        self.trace
            .iter()
            .map(|r| format_record(r, &name, self.formatter.as_ref()))
            .collect()
    }

    /// Forgets the trace so far.
    pub fn clear_trace(&mut self) {
        self.trace.clear();
    }

    /// Turns tracing on or off.
    pub fn set_tracing(&mut self, on: bool) {
        self.cfg.trace = on;
    }

    /// Sets the payload summariser used by [`World::trace_lines`].
    pub fn set_payload_formatter(&mut self, f: PayloadFormatter) {
        self.formatter = Some(f);
    }

    /// The machines' application events so far: `(time, node, event)`.
    pub fn events(&self) -> &[(Instant, NodeId, E)] {
        &self.events
    }

    /// Takes the events collected so far.
    pub fn take_events(&mut self) -> Vec<(Instant, NodeId, E)> {
        core::mem::take(&mut self.events)
    }

    /// Contract violations by machines (connect with a driver-range or reused id, scheduled
    /// invoke on the wrong type, faults for unknown nodes). Empty in a correct run.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Associations the world still tracks (at least one end not closed), by creation.
    pub fn associations(&self) -> Vec<AssocInfo> {
        let info = |s: &Side| EndInfo {
            node: s.node,
            incarnation: s.incarnation,
            assoc: s.id,
            state: s.state,
        };
        self.assocs
            .values()
            .filter_map(|r| {
                Some(AssocInfo {
                    connector: info(r.sides[0].as_ref()?),
                    acceptor: r.sides[1].as_ref().map(info),
                    channel: r.channel,
                })
            })
            .collect()
    }

    /// Transport-level consistency at quiescence: every association whose setup and
    /// teardown signals have all been delivered is either up at both ends (both processes
    /// running) or gone. Associations with a hung end are skipped (their kernel keeps them
    /// up). Returns one message per problem; call it after the last fault plus the failure
    /// detection and connect timeouts.
    pub fn assoc_consistency_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (key, rec) in &self.assocs {
            if rec.control_in_flight > 0
                || rec
                    .dirs
                    .iter()
                    .any(|d| !d.stash.is_empty() || !d.reorder.is_empty())
            {
                continue;
            }
            let live = |s: &Side| {
                let node = &self.nodes[s.node.0];
                (node.incarnation == s.incarnation).then_some(node.state)
            };
            let sides: Vec<&Side> = rec.sides.iter().flatten().collect();
            if sides.iter().any(|s| live(s) == Some(NodeState::Frozen)) {
                continue;
            }
            for s in &sides {
                let who = format!(
                    "association {key} end {} {}",
                    self.node_name(s.node),
                    format_assoc_id(s.id)
                );
                match s.state {
                    EndState::Pending | EndState::Closing => {
                        errors.push(format!("{who} stuck {:?}", s.state));
                    }
                    EndState::Up => {
                        let peer_up = sides.len() == 2
                            && sides.iter().all(|p| {
                                p.state == EndState::Up && live(p) == Some(NodeState::Running)
                            });
                        if !peer_up {
                            errors.push(format!("{who} up but its peer is not"));
                        }
                    }
                    EndState::Closed => {}
                }
            }
        }
        errors
    }
}
