//! Standard cluster scenarios with their measured simulated times, shared by the scenario
//! tests (which also check the exact message sequences) and the `cluster_convergence`
//! example (which prints the times).
//!
//! Every scenario uses [`ClusterConfig::new`]: RSPLIB's fast timers, 1 ms links, static
//! peers, PEs spread over the registrars (`pe j` → `reg (j mod N) + 1`).

use crate::cluster::{
    ASAP_PORT, BulkRegistrant, Cluster, ClusterConfig, ClusterEvent, message_summary, registrar_ip,
};
use crate::sim::{CrashKind, Fault, NodeConfig, NodeCtx, NodeId, TraceKind};
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use rserpool_core::Instant;
use rserpool_core::registrar::{RegistrarConfig, RegistrarEvent, RemovalReason};

/// Time the registrars get to find each other before a scenario starts.
pub const WARM_UP: Duration = Duration::from_secs(3);

/// The time of the first registrar event of `node` matching `f` at or after `since`.
pub fn first_event(
    c: &Cluster,
    node: NodeId,
    since: Instant,
    f: impl Fn(&RegistrarEvent) -> bool,
) -> Option<Instant> {
    c.world
        .events()
        .iter()
        .find(|(t, n, e)| {
            *t >= since && *n == node && matches!(e, ClusterEvent::Registrar(r) if f(r))
        })
        .map(|(t, _, _)| *t)
}

/// When `node` last received a message named `name` from `from` before `before`.
pub fn last_received(
    c: &Cluster,
    node: NodeId,
    from: NodeId,
    name: &str,
    before: Instant,
) -> Option<Instant> {
    c.world
        .trace()
        .iter()
        .filter(|r| r.at < before && r.node == Some(node))
        .filter_map(|r| match &r.kind {
            TraceKind::Recv {
                from: f,
                ppid,
                payload,
                ..
            } if *f == from && message_summary(*ppid, payload).as_deref() == Some(name) => {
                Some(r.at)
            }
            _ => None,
        })
        .last()
}

/// Result of [`mentor_download`].
#[derive(Debug)]
pub struct MentorDownload {
    /// PEs in the mentor's handlespace.
    pub elements: usize,
    /// Start of the new registrar → its `MentorSyncComplete` with every PE.
    pub time: Duration,
    /// Handle Table Responses the mentor sent.
    pub responses: usize,
}

fn bulk_tweak(_: usize, c: &mut RegistrarConfig) {
    // 10,000 PEs over one association; keep-alives rare so that the run stays about the
    // table transfer.
    c.limits.max_elements_per_assoc = 100_000;
    c.timers.keep_alive_transmission_interval = Duration::from_secs(600);
}

/// Two registrars: `reg2` holds `count` PEs (registered over one association by a
/// [`BulkRegistrant`]); `reg1` starts afterwards with `reg2` as static peer and downloads
/// the whole handlespace from it as its mentor.
pub fn mentor_download(count: u32) -> (Cluster, MentorDownload) {
    let mut cfg = ClusterConfig::new(2, 0, 0);
    cfg.registrars_stopped = vec![true, false];
    cfg.registrar_tweak = Some(bulk_tweak);
    let mut c = Cluster::new(cfg);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 4, 0, 1));
    let to = SocketAddr::new(registrar_ip(1), ASAP_PORT);
    c.world.add_node_mapped(
        NodeConfig::new("bulk").ip(ip),
        move |_ctx: NodeCtx| BulkRegistrant::new(ip, to, count, 37, 3_600_000),
        ClusterEvent::Bulk,
    );
    let expected = count as usize;
    let registered = c.world.run_until_true(
        |w| {
            w.events()
                .iter()
                .any(|(_, _, e)| *e == ClusterEvent::Bulk(expected))
        },
        Instant::ZERO + Duration::from_secs(30),
    );
    assert!(registered.is_some(), "bulk registrations accepted");
    c.run_for(Duration::from_millis(100));
    let start = c.world.now();
    let reg1 = c.registrars[0];
    c.start_node(reg1);
    let done = c.world.run_until_true(
        |w| {
            w.events().iter().any(|(t, n, e)| {
                *t >= start
                    && *n == reg1
                    && matches!(
                        e,
                        ClusterEvent::Registrar(RegistrarEvent::MentorSyncComplete {
                            mentor: Some(_),
                            ..
                        })
                    )
            })
        },
        start + Duration::from_secs(30),
    );
    let done = done.expect("mentor sync completes");
    let elements = c
        .registrar(0)
        .map_or(0, |r| r.handlespace().element_count());
    let responses = crate::cluster::link_messages(&c.world, c.registrars[1], reg1, start)
        .iter()
        .filter(|m| m.starts_with("HandleTableResponse"))
        .count();
    (
        c,
        MentorDownload {
            elements,
            time: done - start,
            responses,
        },
    )
}

/// Result of [`takeover`].
#[derive(Debug)]
pub struct Takeover {
    /// When `reg3` failed.
    pub fault_at: Instant,
    /// The last Presence `reg1` received from `reg3` before the fault.
    pub last_heard: Instant,
    /// Fault → first Init Takeover sent by anyone.
    pub init_takeover: Duration,
    /// Fault → `TakeoverCompleted` at the winner (`reg1`, the lowest id).
    pub completed: Duration,
    /// Fault → invariants 1-3 hold again (every PE of `reg3` re-homed and registered).
    pub converged: Duration,
}

/// Three registrars with six PEs (two per registrar); `reg3` fails (`kind`) after
/// [`WARM_UP`]; `reg1` and `reg2` take its PEs over.
pub fn takeover(kind: CrashKind) -> (Cluster, Takeover) {
    let mut cfg = ClusterConfig::new(3, 6, 0);
    cfg.resolve_interval = None;
    let mut c = Cluster::new(cfg);
    c.run_until(Instant::ZERO + WARM_UP);
    let fault_at = c.world.now();
    let (r1, r2, r3) = (c.registrars[0], c.registrars[1], c.registrars[2]);
    let last_heard = last_received(&c, r1, r3, "Presence", fault_at).unwrap_or(Instant::ZERO);
    c.apply_fault(Fault::Crash { node: r3, kind });
    let converged = c
        .run_until_converged(Duration::from_millis(1), fault_at + Duration::from_secs(30))
        .expect("the cluster converges");
    c.run_until(fault_at + Duration::from_secs(10));
    let init = [r1, r2]
        .iter()
        .filter_map(|r| c.first_sent(*r, "InitTakeover", fault_at))
        .min()
        .expect("a takeover starts");
    let completed = first_event(&c, r1, fault_at, |e| {
        matches!(e, RegistrarEvent::TakeoverCompleted { .. })
    })
    .expect("reg1 completes the takeover");
    (
        c,
        Takeover {
            fault_at,
            last_heard,
            init_takeover: init - fault_at,
            completed: completed - fault_at,
            converged: converged - fault_at,
        },
    )
}

/// Result of [`split_brain`].
#[derive(Debug)]
pub struct SplitBrain {
    /// PEs each registrar held just before the heal.
    pub before_heal: Vec<usize>,
    /// Heal → invariants 1-3 hold.
    pub converged: Duration,
}

/// Three registrars partitioned `reg1 | reg2 reg3` from the start; six PEs register on
/// both sides (`pe1`, `pe4` at `reg1`); after `split` the partition heals.
pub fn split_brain(split: Duration) -> (Cluster, SplitBrain) {
    let mut cfg = ClusterConfig::new(3, 6, 0);
    cfg.resolve_interval = None;
    let mut c = Cluster::new(cfg);
    let (r1, r2, r3) = (c.registrars[0], c.registrars[1], c.registrars[2]);
    c.apply_fault(Fault::Partition { a: r1, b: r2 });
    c.apply_fault(Fault::Partition { a: r1, b: r3 });
    c.run_until(Instant::ZERO + split);
    let before_heal = (0..3)
        .map(|i| {
            c.registrar(i)
                .map_or(0, |r| r.handlespace().element_count())
        })
        .collect();
    let heal = c.world.now();
    c.apply_fault(Fault::HealAll);
    let converged = c
        .run_until_converged(Duration::from_millis(1), heal + Duration::from_secs(60))
        .expect("the cluster converges after the heal");
    (
        c,
        SplitBrain {
            before_heal,
            converged: converged - heal,
        },
    )
}

/// Result of [`pe_failure`].
#[derive(Debug)]
pub struct PeFailure {
    /// Fault → the home registrar removes the PE.
    pub removed: Duration,
    /// Why it removed it.
    pub reason: RemovalReason,
    /// Fault → no registrar holds the PE any more.
    pub gone_everywhere: Duration,
}

/// Three registrars, one PE (at `reg1`) and one PU (at `reg1`); the PE fails (`kind`)
/// after [`WARM_UP`]; with `report`, the PU resolves the pool right then and reports the
/// dead PE (RSPLIB's failover with "report unreachable").
pub fn pe_failure(kind: CrashKind, report: bool) -> (Cluster, PeFailure) {
    let mut cfg = ClusterConfig::new(3, 1, 1);
    cfg.resolve_interval = None;
    cfg.report_dead = report;
    let mut c = Cluster::new(cfg);
    c.run_until(Instant::ZERO + WARM_UP);
    let fault_at = c.world.now();
    let pe = c.elements[0];
    c.apply_fault(Fault::Crash { node: pe, kind });
    if report {
        c.resolve_all();
    }
    let gone = c
        .run_until_converged(Duration::from_millis(1), fault_at + Duration::from_secs(30))
        .expect("the PE is removed everywhere");
    let (removed, reason) = c
        .world
        .events()
        .iter()
        .find_map(|(t, n, e)| match e {
            ClusterEvent::Registrar(RegistrarEvent::PeRemoved { reason, .. })
                if *n == c.registrars[0] && *t >= fault_at =>
            {
                Some((*t, *reason))
            }
            _ => None,
        })
        .expect("the home registrar removes the PE");
    (
        c,
        PeFailure {
            removed: removed - fault_at,
            reason,
            gone_everywhere: gone - fault_at,
        },
    )
}

/// PE start → every registrar holds it (and the PE has its answer).
pub fn registration_propagation() -> (Cluster, Duration) {
    let mut cfg = ClusterConfig::new(3, 1, 0);
    cfg.clients_stopped = true;
    cfg.resolve_interval = None;
    let mut c = Cluster::new(cfg);
    c.run_until(Instant::ZERO + WARM_UP);
    let start = c.world.now();
    c.start_node(c.elements[0]);
    let done = c
        .run_until_converged(Duration::from_millis(1), start + Duration::from_secs(10))
        .expect("registered everywhere");
    (c, done - start)
}
