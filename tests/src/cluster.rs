//! Whole RSerPool clusters in the deterministic simulator: registrars
//! ([`Registrar`]), pool elements ([`PoolElement`]) and pool users ([`PoolUser`]) on one
//! simulated network, the cluster invariants, and decoded message traces.
//!
//! * [`ClusterConfig`] describes the deployment: how many registrars (peered statically or
//!   through the ENRP multicast channel), pool elements (finding registrars by a static
//!   list or ASAP Server Announces) and pool users, and the timers — by default RSPLIB's
//!   "fast" timers used for the real captures ([`fast_registrar_timers`]).
//! * [`Cluster`] builds it in a [`World`], drives it (faults, periodic handle resolutions
//!   by the pool users, Endpoint Unreachable reports for PEs the application would fail to
//!   reach) and checks the invariants:
//!   1. all live registrars hold identical handlespaces (pool, PE id, home registrar, user
//!      transport) with equal checksums ([`Cluster::handlespace_errors`]);
//!   2. they contain exactly the live, registered PEs;
//!   3. every PE has exactly one home registrar, which is alive and monitors it;
//!   4. no resolution returns a PE that has been dead longer than
//!      [`ClusterConfig::dead_pe_bound`] while the registrars were running and connected
//!      ([`Cluster::resolution_violations`]); counted from its death, or from the last
//!      time a registrar received a message the PE had sent before it died (held up by a
//!      partition, it tells the registrar that the PE lives when it arrives, and no
//!      registrar can tell it from a fresh one).
//! * [`message_summary`] / [`payload_formatter`] decode ASAP and ENRP payloads for traces;
//!   [`link_messages`] lists the messages sent from one node to another.
//! * [`BulkRegistrant`] registers thousands of PEs over one association (for the mentor
//!   download of a large handlespace).

use crate::sim::{
    CrashKind, Fault, FaultSchedule, NodeConfig, NodeCtx, NodeId, NodeState, PayloadFormatter,
    SimConfig, TraceKind, World,
};
use bytes::Bytes;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::pool_element::{PoolElement, PoolElementConfig, PoolElementEvent};
use rserpool_core::pool_user::{PoolUser, PoolUserConfig, PoolUserEvent};
use rserpool_core::registrar::{
    ASAP_ANNOUNCE_GROUP, ENRP_ANNOUNCE_GROUP, ProtocolErrorKind, Registrar, RegistrarConfig,
    RegistrarEvent, RegistrarLimits, RegistrarTimers,
};
use rserpool_core::registrar_table::{RegistrarTableConfig, StaticRegistrar};
use rserpool_core::{
    AssocDownReason, AssocId, ChannelKind, Instant, Machine, Output, Protocol, Transmit,
};
use rserpool_proto::asap::{EndpointKeepAliveAck, Registration};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{HandleResolutionOption, PoolElementParameter};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{TransportParameter, TransportProtocol};
use rserpool_proto::{AsapMessage, EnrpMessage};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Registrars' ASAP port.
pub const ASAP_PORT: u16 = 3863;
/// Registrars' ENRP port.
pub const ENRP_PORT: u16 = 9901;
/// PEs' own ASAP endpoint (where a registrar taking over sends its keep-alive).
pub const PE_ASAP_PORT: u16 = 3864;
/// PEs' user transport port.
pub const PE_USER_PORT: u16 = 7000;

/// The pool element type of the cluster.
pub type Pe = PoolElement<Xoshiro256PlusPlus>;
/// The pool user type of the cluster.
pub type Pu = PoolUser<Xoshiro256PlusPlus>;

/// RSPLIB's "fast" registrar timers, as used for the real captures
/// (`shared/vectors/rsplib-captures/README.md`): server announce 1 s, keep-alive
/// transmission and timeout 2 s (no jitter, as RSPLIB), peer heartbeat 1 s, max time last
/// heard 3 s, max time no response 2 s, takeover expiry 3 s, mentor discovery 2 s.
pub fn fast_registrar_timers() -> RegistrarTimers {
    RegistrarTimers {
        server_announce_cycle: Duration::from_millis(1000),
        keep_alive_transmission_interval: Duration::from_millis(2000),
        keep_alive_timeout_interval: Duration::from_millis(2000),
        keep_alive_jitter: 0.0,
        peer_heartbeat_cycle: Duration::from_millis(1000),
        peer_max_time_last_heard: Duration::from_millis(3000),
        peer_max_time_no_response: Duration::from_millis(2000),
        mentor_discovery_timeout: Duration::from_millis(2000),
        takeover_expiry_interval: Duration::from_millis(3000),
        ..RegistrarTimers::default()
    }
}

/// How registrars find each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerDiscovery {
    /// Every registrar has every other one as static peer (`-peer`); no multicast.
    StaticPeers,
    /// ENRP Presences on the multicast channel (239.0.0.51:9901) only.
    Multicast,
}

/// How pool elements and pool users find registrars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrarDiscovery {
    /// Node `i` has registrar `i mod N` as its only static registrar (spreads PEs evenly).
    Assigned,
    /// Every registrar is a static registrar of every node (the hunt starts at a random
    /// entry).
    AllStatic,
    /// ASAP Server Announces on 239.0.0.50:3863 only.
    Announce,
}

/// Server identifiers of the registrars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerIds {
    /// Registrar `i` is always `i + 1` (also after a restart).
    Fixed,
    /// A random identifier per process (RSPLIB's default): a restarted registrar is a new
    /// server, and its predecessor must be taken over.
    PerIncarnation,
}

/// A cluster's shape and timers.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Simulator settings (seed, links, transport failure detection).
    pub sim: SimConfig,
    /// Number of registrars.
    pub registrars: usize,
    /// Number of pool elements.
    pub pool_elements: usize,
    /// Number of pool users.
    pub pool_users: usize,
    /// Number of pools; PE `j` joins pool `j mod pools`, PU `k` resolves pool `k mod pools`.
    pub pools: usize,
    /// How registrars find each other.
    pub peer_discovery: PeerDiscovery,
    /// How PEs and PUs find registrars.
    pub registrar_discovery: RegistrarDiscovery,
    /// Registrar identifiers.
    pub server_ids: ServerIds,
    /// Registrar timers.
    pub timers: RegistrarTimers,
    /// RSPLIB `-maxbadpereports` (1 in the fast set-up).
    pub max_bad_pe_reports: u32,
    /// Registrar resource limits.
    pub limits: RegistrarLimits,
    /// PE re-registration interval (Registration Life is 3 times this).
    pub reregistration_interval: Duration,
    /// PE and PU request timeout (RSPLIB 3 s).
    pub request_timeout: Duration,
    /// Length of one server hunt round (RSPLIB RegistrarConnectTimeout 7.5 s).
    pub hunt_round: Duration,
    /// How long an announced registrar stays in a PE's or PU's list (T7, 5 s).
    pub announce_timeout: Duration,
    /// PUs resolve their pool this often (`None`: only when asked).
    pub resolve_interval: Option<Duration>,
    /// When a resolution returns a PE whose process is not running, the PU reports it
    /// unreachable (the application failed to reach it).
    pub report_dead: bool,
    /// How often [`Cluster::run_until`] looks at the world at least (PU answers and the
    /// reports they cause, node states); 10 ms by default.
    pub observe_step: Duration,
    /// PEs and PUs start stopped (brought up with [`Fault::Restart`] or
    /// [`Cluster::start_node`]).
    pub clients_stopped: bool,
    /// Registrar `i` starts stopped when `registrars_stopped[i]` is true.
    pub registrars_stopped: Vec<bool>,
    /// Applied to every registrar's configuration after it is built from the fields above
    /// (registrar index, configuration).
    pub registrar_tweak: Option<fn(usize, &mut RegistrarConfig)>,
}

impl ClusterConfig {
    /// `registrars` registrars with static peers, `pool_elements` PEs spread over them
    /// ([`RegistrarDiscovery::Assigned`]), `pool_users` PUs, two pools, fixed server ids,
    /// RSPLIB's fast timers, PEs re-registering every 3 s (as the captured echo server),
    /// PUs resolving every 500 ms and reporting dead PEs.
    pub fn new(registrars: usize, pool_elements: usize, pool_users: usize) -> ClusterConfig {
        ClusterConfig {
            sim: SimConfig::with_seed(1),
            registrars,
            pool_elements,
            pool_users,
            pools: 2,
            peer_discovery: PeerDiscovery::StaticPeers,
            registrar_discovery: RegistrarDiscovery::Assigned,
            server_ids: ServerIds::Fixed,
            timers: fast_registrar_timers(),
            max_bad_pe_reports: 1,
            limits: RegistrarLimits::default(),
            reregistration_interval: Duration::from_secs(3),
            request_timeout: Duration::from_secs(3),
            hunt_round: Duration::from_millis(7500),
            announce_timeout: Duration::from_secs(5),
            resolve_interval: Some(Duration::from_millis(500)),
            report_dead: true,
            observe_step: Duration::from_millis(10),
            clients_stopped: false,
            registrars_stopped: Vec::new(),
            registrar_tweak: None,
        }
    }

    /// The same with another world seed.
    pub fn seed(mut self, seed: u64) -> ClusterConfig {
        self.sim.seed = seed;
        self
    }

    /// Registration Life the PEs send (RSPLIB: 3 × the re-registration interval).
    pub fn registration_life(&self) -> Duration {
        self.reregistration_interval * 3
    }

    /// The longest a dead PE may still be handed out while the registrars run and reach
    /// each other: its home registrar's next keep-alive is due at most one transmission
    /// interval after the PE's last answer, and the PE is removed when the keep-alive
    /// timeout passes without an ack; the removal reaches the other registrars and the
    /// answer reaches the PU within a few link delays (100 ms allowance).
    pub fn dead_pe_bound(&self) -> Duration {
        let t = &self.timers;
        t.keep_alive_transmission_interval
            .mul_f64(1.0 + t.keep_alive_jitter.max(0.0))
            + t.keep_alive_timeout_interval
            + Duration::from_millis(100)
    }

    /// How long a cluster needs after every fault was repaired ([`Fault::RecoverAll`]) to
    /// converge, computed from the timers as the sum of the longest chain of steps:
    /// * transport: a connection attempt still running into a formerly unreachable host
    ///   ends (connect timeout), and an association that did not survive its partition is
    ///   declared lost (failure detection);
    /// * registrars: a restarted registrar ends its start-up (mentor discovery); a peer
    ///   that no longer exists (new server id after a restart, or a hung one that resumed
    ///   and was taken over) is noticed (max time last heard + max time no response, plus
    ///   one heartbeat cycle), its takeover completes or expires (takeover expiry) and the
    ///   taker's H-bit keep-alive is answered or times out (keep-alive timeout); a PE is
    ///   verified by its home (keep-alive interval + timeout); checksum audits run on
    ///   every heartbeat (two cycles with jitter);
    /// * PEs: a request times out and is retried once (2 × request timeout), a hunt round
    ///   ends (hunt round), a failed registration is retried after the re-registration
    ///   interval; a replica that nobody refreshes expires (registration life).
    pub fn settle_time(&self) -> Duration {
        let t = &self.timers;
        let heartbeat = t.peer_heartbeat_cycle.mul_f64(1.125);
        let keep_alive = t
            .keep_alive_transmission_interval
            .mul_f64(1.0 + t.keep_alive_jitter.max(0.0))
            + t.keep_alive_timeout_interval;
        self.sim.connect_timeout
            + self.sim.failure_detection
            + t.mentor_discovery_timeout
            + t.peer_max_time_last_heard
            + t.peer_max_time_no_response
            + heartbeat
            + t.takeover_expiry_interval
            + t.keep_alive_timeout_interval
            + keep_alive
            + heartbeat * 2
            + self.request_timeout * 2
            + self.hunt_round
            + self.reregistration_interval
            + self.registration_life()
    }
}

/// An application event of any cluster machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// From a registrar.
    Registrar(RegistrarEvent),
    /// From a pool element.
    Element(PoolElementEvent),
    /// From a pool user.
    User(PoolUserEvent),
    /// From a [`BulkRegistrant`]: registrations it got an accepting answer for so far.
    Bulk(usize),
}

impl From<RegistrarEvent> for ClusterEvent {
    fn from(e: RegistrarEvent) -> Self {
        ClusterEvent::Registrar(e)
    }
}
impl From<PoolElementEvent> for ClusterEvent {
    fn from(e: PoolElementEvent) -> Self {
        ClusterEvent::Element(e)
    }
}
impl From<PoolUserEvent> for ClusterEvent {
    fn from(e: PoolUserEvent) -> Self {
        ClusterEvent::User(e)
    }
}

// ---------------------------------------------------------------------- addresses

/// Registrar `i`'s address: 10.1.0.(i+1).
pub fn registrar_ip(i: usize) -> IpAddr {
    host(1, i)
}

/// PE `j`'s address: 10.2.x.y.
pub fn element_ip(j: usize) -> IpAddr {
    host(2, j)
}

/// PU `k`'s address: 10.3.x.y.
pub fn user_ip(k: usize) -> IpAddr {
    host(3, k)
}

fn host(net: u8, i: usize) -> IpAddr {
    let v = u16::try_from(i + 1).unwrap_or(u16::MAX);
    let [a, b] = v.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(10, net, a, b))
}

/// PE `j`'s identifier: 0x1000 + j (kept across restarts).
pub fn element_id(j: usize) -> PeIdentifier {
    PeIdentifier(0x1000 + u32::try_from(j).unwrap_or(0))
}

/// Pool `p`'s handle: `pool-p`.
pub fn pool_handle(p: usize) -> PoolHandle {
    PoolHandle::from(format!("pool-{p}").as_str())
}

// ---------------------------------------------------------------------- message names

/// A one-word summary of an ASAP (PPID 11) or ENRP (PPID 12) message with its flags:
/// `Registration`, `KeepAlive(H)`, `Presence(R)`, `HandleUpdate(DEL)`,
/// `HandleTableRequest(W)`, `HandleTableResponse(M)`, ... `None` for other PPIDs,
/// `Undecodable` for garbage.
pub fn message_summary(ppid: u32, payload: &[u8]) -> Option<String> {
    let flag = |name: &str, on: bool, f: &str| {
        if on {
            format!("{name}({f})")
        } else {
            name.to_string()
        }
    };
    Some(match ppid {
        Protocol::PPID_ASAP => match AsapMessage::decode(payload) {
            Ok(m) => match m {
                AsapMessage::Registration(_) => "Registration".into(),
                AsapMessage::Deregistration(_) => "Deregistration".into(),
                AsapMessage::RegistrationResponse(r) => flag("RegistrationResponse", r.reject, "R"),
                AsapMessage::DeregistrationResponse(r) => {
                    flag("DeregistrationResponse", r.error.is_some(), "E")
                }
                AsapMessage::HandleResolution(_) => "HandleResolution".into(),
                AsapMessage::HandleResolutionResponse(_) => "HandleResolutionResponse".into(),
                AsapMessage::EndpointKeepAlive(k) => flag("KeepAlive", k.home, "H"),
                AsapMessage::EndpointKeepAliveAck(_) => "KeepAliveAck".into(),
                AsapMessage::EndpointUnreachable(_) => "EndpointUnreachable".into(),
                AsapMessage::ServerAnnounce(_) => "ServerAnnounce".into(),
                AsapMessage::Cookie(_) => "Cookie".into(),
                AsapMessage::CookieEcho(_) => "CookieEcho".into(),
                AsapMessage::BusinessCard(_) => "BusinessCard".into(),
                AsapMessage::Error(_) => "AsapError".into(),
            },
            Err(_) => "Undecodable".into(),
        },
        Protocol::PPID_ENRP => match EnrpMessage::decode(payload) {
            Ok(m) => match m {
                EnrpMessage::Presence(p) => flag("Presence", p.reply_required, "R"),
                EnrpMessage::HandleTableRequest(r) => {
                    flag("HandleTableRequest", r.own_children_only, "W")
                }
                EnrpMessage::HandleTableResponse(r) => {
                    if r.reject {
                        "HandleTableResponse(R)".to_string()
                    } else {
                        flag("HandleTableResponse", r.more, "M")
                    }
                }
                EnrpMessage::HandleUpdate(u) => {
                    let action = if u.action == rserpool_proto::enrp::UpdateAction::DEL_PE {
                        "DEL"
                    } else {
                        "ADD"
                    };
                    if u.takeover_suggested {
                        format!("HandleUpdate({action},T)")
                    } else {
                        format!("HandleUpdate({action})")
                    }
                }
                EnrpMessage::ListRequest(_) => "ListRequest".into(),
                EnrpMessage::ListResponse(r) => flag("ListResponse", r.reject, "R"),
                EnrpMessage::InitTakeover(_) => "InitTakeover".into(),
                EnrpMessage::InitTakeoverAck(_) => "InitTakeoverAck".into(),
                EnrpMessage::TakeoverServer(_) => "TakeoverServer".into(),
                EnrpMessage::Error(_) => "EnrpError".into(),
            },
            Err(_) => "Undecodable".into(),
        },
        _ => return None,
    })
}

/// A trace payload formatter: [`message_summary`] plus the pool handle / PE id / sender
/// where the message has them.
pub fn payload_formatter() -> PayloadFormatter {
    Box::new(|ppid, payload| {
        let name = message_summary(ppid, payload)?;
        let detail = match ppid {
            Protocol::PPID_ASAP => match AsapMessage::decode(payload).ok()? {
                AsapMessage::Registration(r) => {
                    format!(" {} {:#x}", r.pool_handle, r.pool_element.pe_id.0)
                }
                AsapMessage::HandleResolutionResponse(r) => {
                    let ids: Vec<String> = r
                        .pool_elements
                        .iter()
                        .map(|p| format!("{:#x}", p.pe_id.0))
                        .collect();
                    format!(" {} [{}]", r.pool_handle, ids.join(","))
                }
                AsapMessage::EndpointKeepAlive(k) => {
                    format!(" from {:#x} {}", k.server_id.0, k.pool_handle)
                }
                _ => String::new(),
            },
            _ => match EnrpMessage::decode(payload).ok()? {
                EnrpMessage::HandleUpdate(u) => format!(
                    " {:#x}->{:#x} {} {:#x}",
                    u.sender.0, u.receiver.0, u.pool_handle, u.pool_element.pe_id.0
                ),
                m => format!(" {:#x}->{:#x}", m.sender().0, m.receiver().0),
            },
        };
        Some(format!("{name}{detail}"))
    })
}

/// The messages `from` sent to `to` over associations since `since`, as
/// [`message_summary`] names, in sending order.
pub fn link_messages<E: core::fmt::Debug + 'static>(
    world: &World<E>,
    from: NodeId,
    to: NodeId,
    since: Instant,
) -> Vec<String> {
    world
        .trace()
        .iter()
        .filter(|r| r.at >= since && r.node == Some(from))
        .filter_map(|r| match &r.kind {
            TraceKind::Send {
                to: Some(t),
                ppid,
                payload,
                ..
            } if *t == to => message_summary(*ppid, payload),
            _ => None,
        })
        .collect()
}

/// Like [`link_messages`], with the send times.
pub fn timed_link_messages<E: core::fmt::Debug + 'static>(
    world: &World<E>,
    from: NodeId,
    to: NodeId,
    since: Instant,
) -> Vec<(Instant, String)> {
    world
        .trace()
        .iter()
        .filter(|r| r.at >= since && r.node == Some(from))
        .filter_map(|r| match &r.kind {
            TraceKind::Send {
                to: Some(t),
                ppid,
                payload,
                ..
            } if *t == to => message_summary(*ppid, payload).map(|m| (r.at, m)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------- bulk registrant

/// A test client that registers `count` PEs over one association to a registrar (pool
/// `bulk-{i mod pools}`, PE ids 1..=count, user transport on its own address) and answers
/// every keep-alive. Emits [`ClusterEvent::Bulk`] with the number of accepted
/// registrations after each answer.
pub struct BulkRegistrant {
    out: VecDeque<Output<usize>>,
    accepted: usize,
    assoc: AssocId,
}

impl BulkRegistrant {
    /// Connects to `registrar` at once and queues the registrations.
    pub fn new(
        ip: IpAddr,
        registrar: SocketAddr,
        count: u32,
        pools: u32,
        life_ms: u32,
    ) -> BulkRegistrant {
        let mut alloc = AssocIdAllocator::default();
        let assoc = alloc.allocate();
        let mut out = VecDeque::new();
        out.push_back(Output::Connect {
            assoc,
            addrs: core::iter::once(registrar).collect(),
            transport: TransportProtocol::Sctp,
            channel: ChannelKind::AsapToRegistrar,
        });
        for i in 0..count {
            let pool = PoolHandle::from(format!("bulk-{}", i % pools.max(1)).as_str());
            let pe = PoolElementParameter {
                pe_id: PeIdentifier(i + 1),
                home_server_id: ServerId::NONE,
                registration_life: life_ms,
                user_transport: TransportParameter::sctp(PE_USER_PORT, 1, [ip]),
                policy: Policy::RoundRobin,
                asap_transport: None,
            };
            out.push_back(Output::Transmit(Transmit::assoc(
                assoc,
                Protocol::Asap,
                AsapMessage::from(Registration::new(pool, pe)).to_bytes(),
            )));
        }
        BulkRegistrant {
            out,
            accepted: 0,
            assoc,
        }
    }

    /// Registrations accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted
    }
}

impl Machine for BulkRegistrant {
    type Event = usize;
    fn handle_assoc_up(&mut self, _: Instant, _: AssocId, _: &[SocketAddr]) {}
    fn handle_assoc_down(&mut self, _: Instant, _: AssocId, _: AssocDownReason) {}
    fn handle_message(&mut self, _: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if ppid != Protocol::PPID_ASAP || assoc != self.assoc {
            return;
        }
        match AsapMessage::decode(&data) {
            Ok(AsapMessage::RegistrationResponse(r)) if !r.reject => {
                self.accepted += 1;
                self.out.push_back(Output::Event(self.accepted));
            }
            Ok(AsapMessage::EndpointKeepAlive(k)) => {
                if let Some(id) = k.pe_id {
                    let ack = EndpointKeepAliveAck::new(k.pool_handle, id);
                    self.out.push_back(Output::Transmit(Transmit::assoc(
                        assoc,
                        Protocol::Asap,
                        AsapMessage::from(ack).to_bytes(),
                    )));
                }
            }
            _ => {}
        }
    }
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<usize>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

// ---------------------------------------------------------------------- the cluster

/// When a PE's process was not running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeadSpan {
    from: Instant,
    until: Option<Instant>,
}

/// A built cluster in its world. See the [module documentation](self).
pub struct Cluster {
    /// The world (drive it through [`Cluster::run_until`] so that pool users resolve and
    /// the invariants are observed).
    pub world: World<ClusterEvent>,
    /// The configuration it was built from.
    pub config: ClusterConfig,
    /// Registrar nodes, by index.
    pub registrars: Vec<NodeId>,
    /// Pool element nodes, by index.
    pub elements: Vec<NodeId>,
    /// Pool user nodes, by index.
    pub users: Vec<NodeId>,
    /// Times at which the state of nodes or partitions may change (scheduled faults).
    checkpoints: BTreeSet<Instant>,
    next_resolve: Option<Instant>,
    events_seen: usize,
    /// Per PE index: when its process was down or hung.
    dead: Vec<Vec<DeadSpan>>,
    /// Per PE index: when a registrar received a message from the PE while it was dead
    /// (sent before it died, delivered late).
    heard_while_dead: Vec<Vec<Instant>>,
    /// When the control plane was disturbed: a registrar not running (or restarted), or
    /// two registrars partitioned (start, end).
    unstable: Vec<DeadSpan>,
    registrar_incarnations: Vec<u32>,
    /// PEs in answers that were dead within the bound, and beyond it but exempt because the
    /// control plane was disturbed.
    checked: (u64, u64),
    violations: Vec<String>,
    /// Reports of dead PEs sent by PUs (application-detected failures).
    pub reports: u64,
}

impl Cluster {
    /// Builds the cluster (registrars first, then PEs, then PUs) at time zero.
    pub fn new(config: ClusterConfig) -> Cluster {
        let mut world: World<ClusterEvent> = World::new(config.sim.clone());
        world.set_payload_formatter(payload_formatter());
        world.log_deliveries();
        let n = config.registrars;
        let mut registrars = Vec::new();
        for i in 0..n {
            let ip = registrar_ip(i);
            let mut node = NodeConfig::new(format!("reg{}", i + 1))
                .listen(SocketAddr::new(ip, ASAP_PORT))
                .listen(SocketAddr::new(ip, ENRP_PORT));
            if config.peer_discovery == PeerDiscovery::Multicast {
                node = node.join(ENRP_ANNOUNCE_GROUP);
            }
            if config.registrars_stopped.get(i).copied().unwrap_or(false) {
                node = node.stopped();
            }
            let cfg = registrar_config(&config, i);
            let ids = config.server_ids;
            registrars.push(world.add_node(node, move |ctx: NodeCtx| {
                let mut c = cfg.clone();
                if ids == ServerIds::PerIncarnation {
                    c.server_id = None;
                }
                Registrar::new(c, ctx.now, ctx.rng)
            }));
        }
        let mut elements = Vec::new();
        for j in 0..config.pool_elements {
            let ip = element_ip(j);
            let mut node = NodeConfig::new(format!("pe{}", j + 1))
                .listen(SocketAddr::new(ip, PE_ASAP_PORT))
                .source_port(PE_ASAP_PORT)
                .listen(SocketAddr::new(ip, PE_USER_PORT));
            if config.registrar_discovery == RegistrarDiscovery::Announce {
                node = node.join(ASAP_ANNOUNCE_GROUP);
            }
            if config.clients_stopped {
                node = node.stopped();
            }
            let cfg = element_config(&config, j);
            elements.push(world.add_node(node, move |ctx: NodeCtx| {
                let mut pe = PoolElement::new(cfg.clone(), ctx.rng).expect("valid PE config");
                pe.register(ctx.now);
                pe
            }));
        }
        let mut users = Vec::new();
        for k in 0..config.pool_users {
            let mut node = NodeConfig::new(format!("pu{}", k + 1)).ip(user_ip(k));
            if config.registrar_discovery == RegistrarDiscovery::Announce {
                node = node.join(ASAP_ANNOUNCE_GROUP);
            }
            if config.clients_stopped {
                node = node.stopped();
            }
            let cfg = user_config(&config, k);
            users.push(world.add_node(node, move |ctx: NodeCtx| {
                PoolUser::new(cfg.clone(), ctx.rng)
            }));
        }
        let dead: Vec<Vec<DeadSpan>> = elements
            .iter()
            .map(|e| {
                if world.node_state(*e) == NodeState::Running {
                    Vec::new()
                } else {
                    vec![DeadSpan {
                        from: Instant::ZERO,
                        until: None,
                    }]
                }
            })
            .collect();
        let next_resolve = config.resolve_interval.map(|d| Instant::ZERO + d);
        let registrar_incarnations = registrars.iter().map(|r| world.incarnation(*r)).collect();
        Cluster {
            world,
            config,
            registrars,
            elements,
            users,
            checkpoints: BTreeSet::new(),
            next_resolve,
            events_seen: 0,
            heard_while_dead: vec![Vec::new(); dead.len()],
            dead,
            unstable: Vec::new(),
            registrar_incarnations,
            checked: (0, 0),
            violations: Vec::new(),
            reports: 0,
        }
    }

    /// Schedules every fault of `schedule`.
    pub fn schedule(&mut self, schedule: &FaultSchedule) {
        for (at, f) in &schedule.faults {
            self.schedule_fault(*at, f.clone());
        }
    }

    /// Schedules a fault.
    pub fn schedule_fault(&mut self, at: Instant, fault: Fault) {
        let at = at.max(self.world.now());
        self.checkpoints.insert(at);
        self.world.schedule_fault(at, fault);
    }

    /// Applies a fault now.
    pub fn apply_fault(&mut self, fault: Fault) {
        self.world.apply_fault(fault);
        let now = self.world.now();
        self.observe(now);
    }

    /// Starts a node that is stopped (or restarts it).
    pub fn start_node(&mut self, node: NodeId) {
        self.apply_fault(Fault::Restart { node });
    }

    /// Runs until `t`: faults at their times, PU resolutions every
    /// [`ClusterConfig::resolve_interval`], invariant 4 on every answer.
    pub fn run_until(&mut self, t: Instant) {
        loop {
            let now = self.world.now();
            let next_fault = self.checkpoints.range(now..).next().copied();
            // Observe at least every `observe_step`: PUs react to answers (reports of dead
            // PEs) within that time, like an application trying the PE.
            let mut next = t.min(now + self.config.observe_step);
            if let Some(f) = next_fault {
                next = next.min(f);
            }
            if let Some(r) = self.next_resolve {
                next = next.min(r);
            }
            self.world.run_until(next);
            self.observe(next);
            if self.next_resolve.is_some_and(|r| r <= next) {
                self.resolve_all();
                let d = self
                    .config
                    .resolve_interval
                    .unwrap_or(Duration::from_secs(1));
                self.next_resolve = Some(next + d);
            }
            self.checkpoints.remove(&next);
            if next >= t {
                break;
            }
        }
    }

    /// Runs for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.world.now() + d;
        self.run_until(t);
    }

    /// Every PU resolves its pool now (all PEs).
    pub fn resolve_all(&mut self) {
        let pools = self.config.pools.max(1);
        for (k, &u) in self.users.clone().iter().enumerate() {
            let handle = pool_handle(k % pools);
            self.world.invoke::<Pu, _>(u, |pu, now| {
                pu.resolve(now, handle, HandleResolutionOption::ALL)
            });
        }
    }

    /// Records node and partition state at `now` and checks new PU answers.
    fn observe(&mut self, now: Instant) {
        for (j, &e) in self.elements.iter().enumerate() {
            let alive = self.world.node_state(e) == NodeState::Running;
            let spans = &mut self.dead[j];
            let open = spans.last().is_some_and(|s| s.until.is_none());
            if alive && open {
                if let Some(s) = spans.last_mut() {
                    s.until = Some(now);
                }
            } else if !alive && !open {
                spans.push(DeadSpan {
                    from: now,
                    until: None,
                });
            }
        }
        for d in self.world.take_deliveries() {
            if !self.registrars.contains(&d.to) {
                continue;
            }
            let Some(j) = self.elements.iter().position(|e| *e == d.from) else {
                continue;
            };
            if self.dead_since(j, d.at).is_some() {
                self.heard_while_dead[j].push(d.at);
            }
        }
        // A registrar restarted since the last look lost its state: a disturbance even
        // though it runs again.
        let incarnations: Vec<u32> = self
            .registrars
            .iter()
            .map(|r| self.world.incarnation(*r))
            .collect();
        if incarnations != self.registrar_incarnations {
            self.registrar_incarnations = incarnations;
            self.unstable.push(DeadSpan {
                from: now,
                until: Some(now),
            });
        }
        let stable = self.control_plane_stable();
        let open = self.unstable.last().is_some_and(|s| s.until.is_none());
        if stable && open {
            if let Some(s) = self.unstable.last_mut() {
                s.until = Some(now);
            }
        } else if !stable && !open {
            self.unstable.push(DeadSpan {
                from: now,
                until: None,
            });
        }
        self.check_answers();
    }

    /// True if every registrar runs and no two registrars are partitioned (restarts are
    /// tracked separately, see [`Cluster::stale_answers`]).
    pub fn control_plane_stable(&self) -> bool {
        self.registrars
            .iter()
            .all(|r| self.world.node_state(*r) == NodeState::Running)
            && self.registrars.iter().all(|a| {
                self.registrars
                    .iter()
                    .all(|b| !self.world.is_partitioned(*a, *b))
            })
    }

    /// Since when PE `j` has been dead at `t` (`None` if alive).
    fn dead_since(&self, j: usize, t: Instant) -> Option<Instant> {
        self.dead[j]
            .iter()
            .find(|s| s.from <= t && s.until.is_none_or(|u| t < u))
            .map(|s| s.from)
    }

    /// Since when the registrars could know PE `j`, dead since `since`, dead at `t`: its
    /// death, or the last time before `t` a registrar received a message the PE sent
    /// before it.
    fn silent_since(&self, j: usize, since: Instant, t: Instant) -> Instant {
        self.heard_while_dead[j]
            .iter()
            .copied()
            .filter(|h| since <= *h && *h <= t)
            .max()
            .unwrap_or(since)
    }

    /// True if the control plane was disturbed at any time in `[from, to]`.
    fn disturbed(&self, from: Instant, to: Instant) -> bool {
        self.unstable
            .iter()
            .any(|s| s.from <= to && s.until.is_none_or(|u| u >= from))
    }

    fn check_answers(&mut self) {
        let bound = self.config.dead_pe_bound();
        let settle = self.config.settle_time();
        let events = self.world.events();
        let mut found = Vec::new();
        for (at, node, ev) in &events[self.events_seen..] {
            if let ClusterEvent::User(PoolUserEvent::Resolved {
                handle, elements, ..
            }) = ev
            {
                for el in elements {
                    let Some(j) = self.element_index(el.pe_id) else {
                        found.push(Err(format!(
                            "{at:?} {}: resolved unknown PE {:#x}",
                            self.world.node_name(*node),
                            el.pe_id.0
                        )));
                        continue;
                    };
                    let Some(since) = self.dead_since(j, *at) else {
                        continue;
                    };
                    let silent = self.silent_since(j, since, *at);
                    found.push(Ok((*node, handle.clone(), el.pe_id)));
                    if *at - silent <= bound {
                        self.checked.0 += 1;
                        continue;
                    }
                    let window_start =
                        Instant::ZERO + (since - Instant::ZERO).saturating_sub(settle);
                    if self.disturbed(window_start, *at) {
                        self.checked.1 += 1;
                        continue;
                    }
                    let heard = if silent > since {
                        format!(" (its last message reached a registrar at {silent:?})")
                    } else {
                        String::new()
                    };
                    found.push(Err(format!(
                        "{at:?} {}: resolved PE {:#x} ({}) dead since {since:?}{heard}, {:?} > {bound:?}",
                        self.world.node_name(*node),
                        el.pe_id.0,
                        self.world.node_name(self.elements[j]),
                        *at - silent
                    )));
                }
            }
        }
        self.events_seen = events.len();
        for f in found {
            match f {
                Err(v) => self.violations.push(v),
                Ok((pu, handle, pe_id)) => {
                    if self.config.report_dead {
                        let r = self
                            .world
                            .invoke::<Pu, _>(pu, |p, now| p.report_unreachable(now, handle, pe_id));
                        if r == Some(true) {
                            self.reports += 1;
                        }
                    }
                }
            }
        }
    }

    /// The PE index with this identifier.
    pub fn element_index(&self, pe_id: PeIdentifier) -> Option<usize> {
        let j = usize::try_from(pe_id.0.checked_sub(0x1000)?).ok()?;
        (j < self.elements.len()).then_some(j)
    }

    /// Invariant 4 violations so far (each a line of text).
    pub fn resolution_violations(&self) -> &[String] {
        &self.violations
    }

    /// Answers that named a dead PE: `(within the bound, exempt)` — beyond the bound, but
    /// exempt
    /// when the control plane was disturbed (a registrar down, hung or restarted, two
    /// registrars partitioned) within the settle time before the death or since.
    pub fn stale_answers(&self) -> (u64, u64) {
        self.checked
    }

    /// A registrar's machine, if its process runs (or hangs).
    pub fn registrar(&self, i: usize) -> Option<&Registrar> {
        self.world.machine::<Registrar>(self.registrars[i])
    }

    /// A PE's machine.
    pub fn element(&self, j: usize) -> Option<&Pe> {
        self.world.machine::<Pe>(self.elements[j])
    }

    /// A PU's machine.
    pub fn user(&self, k: usize) -> Option<&Pu> {
        self.world.machine::<Pu>(self.users[k])
    }

    /// Indices of registrars whose process runs.
    pub fn live_registrars(&self) -> Vec<usize> {
        (0..self.registrars.len())
            .filter(|i| self.world.node_state(self.registrars[*i]) == NodeState::Running)
            .collect()
    }

    /// Indices of PEs whose process runs.
    pub fn live_elements(&self) -> Vec<usize> {
        (0..self.elements.len())
            .filter(|j| self.world.node_state(self.elements[*j]) == NodeState::Running)
            .collect()
    }

    /// Invariants 1-3 at this moment; one line per problem (empty when they hold). For 3,
    /// the home registrar holds the PE bound to an association (it monitors it), no other
    /// registrar does, and the PE names the same home if it knows one.
    pub fn handlespace_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let live = self.live_registrars();
        let mut views = Vec::new();
        for &i in &live {
            let Some(r) = self.registrar(i) else {
                errors.push(format!("reg{} has no registrar machine", i + 1));
                continue;
            };
            let hs = r.handlespace();
            let set: BTreeSet<(PoolHandle, u32, u32, String)> = hs
                .walk(None)
                .map(|e| {
                    (
                        e.pool_handle().clone(),
                        e.pe_id().0,
                        e.home_registrar().0,
                        format!("{:?}", e.user_transport()),
                    )
                })
                .collect();
            let owners: BTreeMap<u32, u16> = live
                .iter()
                .filter_map(|k| self.registrar(*k))
                .map(|k| (k.server_id().0, hs.owner_checksum(k.server_id())))
                .collect();
            views.push((i, r.server_id(), set, hs.checksum(), owners));
        }
        // 1: identical handlespaces and checksums.
        if let Some((i0, _, s0, c0, o0)) = views.first() {
            for (i, _, s, c, o) in &views[1..] {
                if s != s0 {
                    let only_a: Vec<_> = s0.difference(s).take(10).collect();
                    let only_b: Vec<_> = s.difference(s0).take(10).collect();
                    errors.push(format!(
                        "1: reg{} and reg{} differ: only in reg{}: {only_a:?}; only in reg{}: {only_b:?}",
                        i0 + 1,
                        i + 1,
                        i0 + 1,
                        i + 1
                    ));
                }
                if c != c0 || o != o0 {
                    errors.push(format!(
                        "1: checksums differ: reg{} {c0:#06x} {o0:x?}, reg{} {c:#06x} {o:x?}",
                        i0 + 1,
                        i + 1
                    ));
                }
            }
        }
        let ids: BTreeMap<u32, usize> = views.iter().map(|v| (v.1.0, v.0)).collect();
        if ids.len() != views.len() {
            errors.push("3: two live registrars share a server id".to_string());
        }
        // 2: exactly the live, registered PEs.
        let live_pes = self.live_elements();
        for &j in &live_pes {
            match self.element(j) {
                Some(pe) if pe.is_registered() => {}
                _ => errors.push(format!("2: pe{} runs but is not registered", j + 1)),
            }
        }
        let pools = self.config.pools.max(1);
        let expected: BTreeSet<(PoolHandle, u32)> = live_pes
            .iter()
            .map(|j| (pool_handle(j % pools), element_id(*j).0))
            .collect();
        for (i, _, set, _, _) in &views {
            let have: BTreeSet<(PoolHandle, u32)> =
                set.iter().map(|(p, id, _, _)| (p.clone(), *id)).collect();
            if have != expected {
                let missing: Vec<_> = expected.difference(&have).take(10).collect();
                let extra: Vec<_> = have.difference(&expected).take(10).collect();
                errors.push(format!(
                    "2: reg{} holds the wrong PEs: missing {missing:?}, extra {extra:?}",
                    i + 1
                ));
            }
        }
        // 3: one live home registrar per PE, which monitors it, and the PE agrees.
        if let Some((_, _, set, _, _)) = views.first() {
            for (pool, id, home, _) in set {
                let Some(&hi) = ids.get(home) else {
                    errors.push(format!(
                        "3: PE {id:#x} of {pool} has home {home:#x}, not a live registrar"
                    ));
                    continue;
                };
                let bound = self
                    .registrar(hi)
                    .and_then(|r| r.handlespace().get(pool, PeIdentifier(*id)))
                    .is_some_and(|e| e.assoc().is_some());
                if !bound {
                    errors.push(format!(
                        "3: PE {id:#x}: home reg{} has no association to it",
                        hi + 1
                    ));
                }
                for (i, sid, _, _, _) in &views {
                    if sid.0 != *home
                        && self
                            .registrar(*i)
                            .and_then(|r| r.handlespace().get(pool, PeIdentifier(*id)))
                            .is_some_and(|e| e.assoc().is_some())
                    {
                        errors.push(format!(
                            "3: PE {id:#x}: reg{} is not its home but keeps an association to it",
                            i + 1
                        ));
                    }
                }
                if let Some(j) = self.element_index(PeIdentifier(*id))
                    && let Some(h) = self.element(j).and_then(Pe::home_registrar)
                    && let Some(sid) = h.server_id
                    && sid.0 != *home
                {
                    errors.push(format!(
                        "3: pe{} thinks its home is {:#x}, the registrars say {home:#x}",
                        j + 1,
                        sid.0
                    ));
                }
            }
        }
        errors
    }

    /// Invariant 1 only (identical handlespaces and checksums on the live registrars),
    /// for runs with PEs that are not cluster machines.
    pub fn consistency_errors(&self) -> Vec<String> {
        self.handlespace_errors()
            .into_iter()
            .filter(|e| e.starts_with("1:"))
            .collect()
    }

    /// Everything that must hold at the end of a run: invariants 1-3 now, invariant 4 over
    /// the whole run, no contract violation by any machine, no malformed message between
    /// our own machines.
    pub fn final_errors(&self) -> Vec<String> {
        let mut errors = self.handlespace_errors();
        errors.extend(self.violations.iter().map(|v| format!("4: {v}")));
        errors.extend(
            self.world
                .violations()
                .iter()
                .map(|v| format!("contract: {v}")),
        );
        for (at, node, ev) in self.world.events() {
            if let ClusterEvent::Registrar(RegistrarEvent::ProtocolError {
                kind: ProtocolErrorKind::Malformed { detail, .. },
                ..
            }) = ev
            {
                errors.push(format!(
                    "{at:?} {}: malformed message: {detail}",
                    self.world.node_name(*node)
                ));
            }
        }
        errors
    }

    /// Runs (checking after every `step`) until invariants 1-3 hold, at most until
    /// `deadline`; returns the first checked time at which they held.
    pub fn run_until_converged(&mut self, step: Duration, deadline: Instant) -> Option<Instant> {
        loop {
            if self.handlespace_errors().is_empty() {
                return Some(self.world.now());
            }
            if self.world.now() >= deadline {
                return None;
            }
            let t = (self.world.now() + step).min(deadline);
            self.run_until(t);
        }
    }

    /// The trace as text.
    pub fn trace_text(&self) -> String {
        let mut s = self.world.trace_lines().join("\n");
        s.push('\n');
        s
    }

    /// Events of one node with their times.
    pub fn events_of(&self, node: NodeId) -> Vec<(Instant, ClusterEvent)> {
        self.world
            .events()
            .iter()
            .filter(|(_, n, _)| *n == node)
            .map(|(t, _, e)| (*t, e.clone()))
            .collect()
    }

    /// The time of the first trace record at or after `since` in which `node` sent a
    /// message whose summary is `name`.
    pub fn first_sent(&self, node: NodeId, name: &str, since: Instant) -> Option<Instant> {
        self.world.trace().iter().find_map(|r| {
            if r.at < since || r.node != Some(node) {
                return None;
            }
            match &r.kind {
                TraceKind::Send { ppid, payload, .. }
                | TraceKind::SendUdp { ppid, payload, .. }
                    if message_summary(*ppid, payload).as_deref() == Some(name) =>
                {
                    Some(r.at)
                }
                _ => None,
            }
        })
    }
}

/// A crash fault.
pub fn crash(node: NodeId, kind: CrashKind) -> Fault {
    Fault::Crash { node, kind }
}

fn registrar_addrs(config: &ClusterConfig) -> Vec<StaticRegistrar> {
    (0..config.registrars)
        .map(|i| StaticRegistrar::sctp([SocketAddr::new(registrar_ip(i), ASAP_PORT)]))
        .collect()
}

fn table_config(config: &ClusterConfig, index: usize) -> RegistrarTableConfig {
    let all = registrar_addrs(config);
    let statics = match config.registrar_discovery {
        RegistrarDiscovery::Assigned if !all.is_empty() => vec![all[index % all.len()].clone()],
        RegistrarDiscovery::Assigned | RegistrarDiscovery::Announce => Vec::new(),
        RegistrarDiscovery::AllStatic => all,
    };
    RegistrarTableConfig {
        static_registrars: statics,
        use_announces: config.registrar_discovery == RegistrarDiscovery::Announce,
        announce_timeout: config.announce_timeout,
        connect_timeout: config.hunt_round,
        ..RegistrarTableConfig::default()
    }
}

/// The configuration of registrar `i` in `config`.
pub fn registrar_config(config: &ClusterConfig, i: usize) -> RegistrarConfig {
    let ip = registrar_ip(i);
    let static_peers = match config.peer_discovery {
        PeerDiscovery::StaticPeers => (0..config.registrars)
            .filter(|k| *k != i)
            .map(|k| vec![SocketAddr::new(registrar_ip(k), ENRP_PORT)])
            .collect(),
        PeerDiscovery::Multicast => Vec::new(),
    };
    let mut c = RegistrarConfig {
        server_id: Some(ServerId(u32::try_from(i + 1).unwrap_or(u32::MAX))),
        asap_transports: vec![TransportParameter::sctp(ASAP_PORT, 0, [ip])],
        enrp_transport: Some(TransportParameter::sctp(ENRP_PORT, 0, [ip])),
        asap_announce: (config.registrar_discovery == RegistrarDiscovery::Announce)
            .then_some(ASAP_ANNOUNCE_GROUP),
        enrp_announce: (config.peer_discovery == PeerDiscovery::Multicast)
            .then_some(ENRP_ANNOUNCE_GROUP),
        static_peers,
        timers: config.timers,
        max_bad_pe_reports: config.max_bad_pe_reports,
        limits: config.limits,
        ..RegistrarConfig::default()
    };
    if let Some(tweak) = config.registrar_tweak {
        tweak(i, &mut c);
    }
    c
}

/// The configuration of PE `j` in `config`.
pub fn element_config(config: &ClusterConfig, j: usize) -> PoolElementConfig {
    let ip = element_ip(j);
    let mut c = PoolElementConfig::new(
        pool_handle(j % config.pools.max(1)),
        TransportProtocol::Sctp,
        PE_USER_PORT,
        [ip],
    );
    c.pe_id = Some(element_id(j));
    c.asap_transport = Some(TransportParameter::sctp(PE_ASAP_PORT, 0, [ip]));
    c.reregistration_interval = config.reregistration_interval;
    c.registrar_table = table_config(config, j);
    c.request_timeout = config.request_timeout;
    c
}

/// The configuration of PU `k` in `config`.
pub fn user_config(config: &ClusterConfig, k: usize) -> PoolUserConfig {
    PoolUserConfig {
        registrar_table: table_config(config, k),
        request_timeout: config.request_timeout,
        ..PoolUserConfig::default()
    }
}
