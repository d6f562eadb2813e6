//! Property test: whole clusters (3 registrars, 6 pool elements, 2 pool users, RSPLIB's
//! fast timers) under random fault schedules — registrar and PE crashes of every kind,
//! restarts, resumes, partitions, heals, UDP loss — over a 60 s horizon; then every fault
//! is repaired (`RecoverAll`) and the cluster stays quiet for its settle time (computed
//! from the timers, `ClusterConfig::settle_time`). Links have 1 ms delay plus up to 3 ms
//! of jitter (messages of different associations and datagrams overtake each other).
//! Asserted: invariants 1-3 at the end (identical handlespaces and checksums on every
//! registrar, exactly the live registered PEs, one live home per PE), invariant 4
//! throughout (no answer names a PE dead longer than keep-alive interval + timeout while
//! the registrars run and reach each other), no contract violation, no malformed message.
//!
//! Cases: `RSERPOOL_SIM_CASES` (default 1000); cluster shape: `RSERPOOL_SIM_SHAPE`
//! (`registrars,elements,users`). A failure shrinks to a minimal schedule; its trace is
//! written to `$CARGO_TARGET_TMPDIR/cluster_faults_failure.txt`.

use core::cell::Cell;
use core::time::Duration;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rserpool_core::Instant;
use rserpool_tests::cluster::{
    Cluster, ClusterConfig, PeerDiscovery, RegistrarDiscovery, ServerIds,
};
use rserpool_tests::sim::{Fault, FaultSchedule, NodeId, fault_schedule};

/// Registrars, PEs and PUs: 3, 6, 2 unless `RSERPOOL_SIM_SHAPE` says otherwise
/// (`registrars,elements,users`, e.g. `5,10,3`).
fn shape() -> (usize, usize, usize) {
    let parsed = std::env::var("RSERPOOL_SIM_SHAPE").ok().and_then(|v| {
        let n: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        match n[..] {
            [r, e, u] if r > 0 => Some((r, e, u)),
            _ => None,
        }
    });
    parsed.unwrap_or((3, 6, 2))
}
const HORIZON: Duration = Duration::from_secs(60);
const MAX_FAULTS: usize = 12;

#[derive(Clone, Debug)]
struct Setup {
    seed: u64,
    peers: PeerDiscovery,
    discovery: RegistrarDiscovery,
    ids: ServerIds,
    report_dead: bool,
    jitter_us: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<u64>(),
        prop_oneof![
            3 => Just(PeerDiscovery::StaticPeers),
            1 => Just(PeerDiscovery::Multicast)
        ],
        prop_oneof![
            Just(RegistrarDiscovery::Assigned),
            Just(RegistrarDiscovery::AllStatic),
            Just(RegistrarDiscovery::Announce)
        ],
        prop_oneof![
            3 => Just(ServerIds::Fixed),
            1 => Just(ServerIds::PerIncarnation)
        ],
        any::<bool>(),
        prop_oneof![Just(0u64), 0u64..3000],
    )
        .prop_map(
            |(seed, peers, discovery, ids, report_dead, jitter_us)| Setup {
                seed,
                peers,
                discovery,
                ids,
                report_dead,
                jitter_us,
            },
        )
}

fn config(s: &Setup) -> ClusterConfig {
    let (registrars, elements, users) = shape();
    let mut c = ClusterConfig::new(registrars, elements, users).seed(s.seed);
    c.peer_discovery = s.peers;
    c.registrar_discovery = s.discovery;
    c.server_ids = s.ids;
    c.report_dead = s.report_dead;
    c.sim.default_link.jitter = Duration::from_micros(s.jitter_us);
    c.sim.trace = false;
    c
}

/// Runs one schedule; returns the cluster and its final errors.
fn run(s: &Setup, schedule: &FaultSchedule, trace: bool) -> (Cluster, Vec<String>) {
    let mut cfg = config(s);
    cfg.sim.trace = trace;
    let settle = cfg.settle_time();
    let mut c = Cluster::new(cfg);
    c.schedule(schedule);
    let end_of_chaos = Instant::ZERO + HORIZON;
    c.schedule_fault(end_of_chaos, Fault::RecoverAll);
    c.run_until(end_of_chaos + settle);
    let errors = c.final_errors();
    (c, errors)
}

fn cases() -> u32 {
    std::env::var("RSERPOOL_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn clusters_converge_after_random_faults() {
    let (registrars, elements, users) = shape();
    let nodes: Vec<NodeId> = (0..registrars + elements + users).map(NodeId).collect();
    let strategy = (setup(), fault_schedule(nodes, HORIZON, MAX_FAULTS));
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        max_shrink_iters: 2048,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/cluster_faults.proptest-regressions"
            )),
        )),
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let ran = Cell::new(0u64);
    let stats = Cell::new((0u64, 0u64, 0u64));
    let result = runner.run(&strategy, |(s, schedule)| {
        ran.set(ran.get() + 1);
        if ran.get().is_multiple_of(5000) {
            eprintln!(
                "{} schedules in {:?}, all passed",
                ran.get(),
                started.elapsed()
            );
        }
        let (c, errors) = run(&s, &schedule, false);
        let (checked, exempt) = c.stale_answers();
        let (r, k, x) = stats.get();
        stats.set((r + c.reports, k + checked, x + exempt));
        prop_assert!(errors.is_empty(), "{errors:#?}");
        Ok(())
    });
    if let Err(e) = &result {
        if let proptest::test_runner::TestError::Fail(_, (s, schedule)) = e {
            let (c, errors) = run(s, schedule, true);
            let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let path = dir.join("cluster_faults_failure.txt");
            let text = format!(
                "setup {s:#?}\nschedule {schedule:#?}\nerrors {errors:#?}\n\n{}",
                c.trace_text()
            );
            let _ = std::fs::write(&path, text);
            eprintln!("minimal failing case written to {}", path.display());
        }
        panic!("{e}");
    }
    let stats = stats.get();
    eprintln!(
        "{} schedules in {:?}: {} unreachable reports; answers naming dead PEs: {} within the bound, {} beyond it while the registrars were disturbed (exempt)",
        ran.get(),
        started.elapsed(),
        stats.0,
        stats.1,
        stats.2
    );
}
