//! Prints simulated convergence, takeover and failover times of whole clusters (RSPLIB's
//! fast timers, 1 ms links) as `NAME VALUE UNIT` lines. All times are simulated, so the
//! figures are exact and do not depend on the machine. Run with
//! `cargo run --release -p rserpool-tests --example cluster_convergence [random schedules]`
//! (default 200 random fault schedules for the recovery figures).

use core::time::Duration;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rserpool_core::Instant;
use rserpool_core::pool_user::PoolUserEvent;
use rserpool_tests::cluster::{Cluster, ClusterConfig, ClusterEvent};
use rserpool_tests::scenarios::{
    WARM_UP, mentor_download, pe_failure, registration_propagation, split_brain, takeover,
};
use rserpool_tests::sim::{CrashKind, Fault, NodeId, fault_schedule};

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn line(name: &str, value: impl core::fmt::Display, unit: &str) {
    println!("{name} {value} {unit}");
}

fn resolution_round_trip() -> Duration {
    let mut cfg = ClusterConfig::new(3, 2, 1);
    cfg.pools = 1;
    cfg.resolve_interval = None;
    let mut c = Cluster::new(cfg);
    c.run_until(Instant::ZERO + WARM_UP);
    // The first resolution also hunts for a registrar; measure the second.
    c.resolve_all();
    c.run_for(Duration::from_millis(100));
    let start = c.world.now();
    c.resolve_all();
    c.run_for(Duration::from_millis(100));
    let done = c
        .world
        .events()
        .iter()
        .filter(|(t, _, e)| {
            *t >= start && matches!(e, ClusterEvent::User(PoolUserEvent::Resolved { .. }))
        })
        .map(|(t, _, _)| *t)
        .next()
        .expect("resolved");
    done - start
}

/// Random fault schedules as in the property test: RecoverAll after 60 s, then the time
/// until invariants 1-3 hold (in 10 ms steps). Returns the sorted times.
fn recovery_times(n: usize) -> Vec<Duration> {
    let nodes: Vec<NodeId> = (0..11).map(NodeId).collect();
    let strategy = (
        any_seed(),
        fault_schedule(nodes, Duration::from_secs(60), 12),
    );
    let mut runner = TestRunner::deterministic();
    let mut times = Vec::new();
    for _ in 0..n {
        let (seed, schedule) = strategy.new_tree(&mut runner).expect("value").current();
        let mut cfg = ClusterConfig::new(3, 6, 2).seed(seed);
        cfg.sim.trace = false;
        let settle = cfg.settle_time();
        let mut c = Cluster::new(cfg);
        c.schedule(&schedule);
        let recover = Instant::ZERO + Duration::from_secs(60);
        c.schedule_fault(recover, Fault::RecoverAll);
        c.run_until(recover);
        match c.run_until_converged(Duration::from_millis(10), recover + settle) {
            Some(t) => times.push(t - recover),
            None => {
                eprintln!("schedule did not converge within {settle:?}: {schedule:?}");
                times.push(settle);
            }
        }
    }
    times.sort();
    times
}

fn any_seed() -> impl Strategy<Value = u64> {
    proptest::prelude::any::<u64>()
}

fn main() {
    let schedules: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let cfg = ClusterConfig::new(3, 6, 2);
    line("settle_time_bound", ms(cfg.settle_time()), "ms");
    line("dead_pe_bound", ms(cfg.dead_pe_bound()), "ms");

    let (_, t) = registration_propagation();
    line("registration_everywhere", ms(t), "ms");
    line("resolution_round_trip", ms(resolution_round_trip()), "ms");

    for (name, kind, report) in [
        ("pe_killed", CrashKind::Killed, false),
        ("pe_host_down", CrashKind::HostDown, false),
        ("pe_hung", CrashKind::Hung, false),
        ("pe_hung_reported", CrashKind::Hung, true),
    ] {
        let (_, f) = pe_failure(kind, report);
        line(&format!("{name}_removed_by_home"), ms(f.removed), "ms");
        line(
            &format!("{name}_gone_everywhere"),
            ms(f.gone_everywhere),
            "ms",
        );
    }

    let (_, m) = mentor_download(10_000);
    line("mentor_download_10000_pes", ms(m.time), "ms");
    line("mentor_download_10000_responses", m.responses, "messages");

    for (name, kind) in [
        ("killed", CrashKind::Killed),
        ("host_down", CrashKind::HostDown),
        ("hung", CrashKind::Hung),
    ] {
        let (_, t) = takeover(kind);
        line(
            &format!("takeover_{name}_fault_to_init_takeover"),
            ms(t.init_takeover),
            "ms",
        );
        line(
            &format!("takeover_{name}_last_heard_to_init_takeover"),
            ms(t.fault_at + t.init_takeover - t.last_heard),
            "ms",
        );
        line(
            &format!("takeover_{name}_fault_to_completed"),
            ms(t.completed),
            "ms",
        );
        line(
            &format!("takeover_{name}_fault_to_converged"),
            ms(t.converged),
            "ms",
        );
    }

    let (_, s) = split_brain(Duration::from_secs(10));
    line("split_brain_heal_to_converged", ms(s.converged), "ms");

    let times = recovery_times(schedules);
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let pct = |p: usize| times[(times.len() - 1) * p / 100];
        line("recover_all_schedules", times.len(), "schedules");
        line("recover_all_to_converged_min", ms(*first), "ms");
        line("recover_all_to_converged_median", ms(pct(50)), "ms");
        line("recover_all_to_converged_p99", ms(pct(99)), "ms");
        line("recover_all_to_converged_max", ms(*last), "ms");
    }
}
