//! Handlespace benchmark: registration, re-registration, deregistration, handle resolution
//! per policy (1 and 3 PEs per answer), expiry sweep, owner scan / takeover, and memory per
//! PE (counted by the stats_alloc allocator wrapper).
//!
//! ```text
//! cargo run --release -p rserpool-core --example hsbench -- [--quick]
//! ```
//! Prints one line per figure: `NAME VALUE UNIT`.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::handlespace::{
    Handlespace, HandlespaceConfig, Limits, PoolElementInfo, TimerKind,
};
use rserpool_core::{AssocId, Instant};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;

/// Counts live heap bytes (stats_alloc wraps the system allocator; no unsafe code here).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes now.
fn live_bytes() -> usize {
    let s = GLOBAL.stats();
    // stats_alloc books realloc growth and shrinkage into bytes_allocated/deallocated.
    s.bytes_allocated.saturating_sub(s.bytes_deallocated)
}

/// The benchmark's clock (the core itself never reads one).
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

fn report(name: &str, value: f64, unit: &str) {
    if value >= 100.0 {
        println!("{name} {value:.0} {unit}");
    } else {
        println!("{name} {value:.2} {unit}");
    }
}

/// Runs `f` in batches of `batch` calls until `min_secs` passed; returns calls per second.
fn rate(min_secs: f64, batch: usize, mut f: impl FnMut()) -> f64 {
    // warm-up
    for _ in 0..batch.min(1000) {
        f();
    }
    let t0 = now();
    let mut n = 0usize;
    loop {
        for _ in 0..batch {
            f();
        }
        n += batch;
        let dt = t0.elapsed().as_secs_f64();
        if dt >= min_secs {
            return n as f64 / dt;
        }
    }
}

/// Makes a random policy value of one type.
type MakePolicy = Box<dyn Fn(&mut Xoshiro256PlusPlus) -> Policy>;

fn policies() -> Vec<(&'static str, MakePolicy)> {
    fn load(r: &mut Xoshiro256PlusPlus) -> u32 {
        r.next_u32()
    }
    fn small(r: &mut Xoshiro256PlusPlus) -> u32 {
        r.next_u32() >> 8
    }
    vec![
        ("rr", Box::new(|_| Policy::RoundRobin)),
        (
            "wrr",
            Box::new(|r| Policy::WeightedRoundRobin {
                weight: 1 + r.next_u32() % 10,
            }),
        ),
        ("rand", Box::new(|_| Policy::Random)),
        (
            "wrand",
            Box::new(|r| Policy::WeightedRandom {
                weight: 1 + r.next_u32() % 10,
            }),
        ),
        (
            "prio",
            Box::new(|r| Policy::Priority {
                priority: r.next_u32() % 4,
            }),
        ),
        ("lu", Box::new(|r| Policy::LeastUsed { load: load(r) })),
        (
            "lud",
            Box::new(|r| Policy::LeastUsedDegradation {
                load: load(r),
                degradation: small(r),
            }),
        ),
        (
            "plu",
            Box::new(|r| Policy::PriorityLeastUsed {
                load: load(r),
                degradation: small(r),
            }),
        ),
        (
            "rlu",
            Box::new(|r| Policy::RandomizedLeastUsed { load: load(r) }),
        ),
        (
            "rplu",
            Box::new(|r| Policy::RandomizedPriorityLeastUsed {
                load: load(r),
                degradation: small(r),
            }),
        ),
        (
            "rlud",
            Box::new(|r| Policy::RandomizedLeastUsedDegradation {
                load: load(r),
                degradation: small(r),
            }),
        ),
        (
            "plud",
            Box::new(|r| Policy::PriorityLeastUsedDegradation {
                load: load(r),
                degradation: small(r),
            }),
        ),
        (
            "rplud",
            Box::new(|r| Policy::RandomizedPriorityLeastUsedDegradation {
                load: load(r),
                degradation: small(r),
            }),
        ),
        (
            "wranddpf",
            Box::new(|r| Policy::WeightedRandomDpf {
                weight: 1 + r.next_u32() % 10,
                weight_dpf: small(r),
                distance: r.next_u32() % 200,
            }),
        ),
        (
            "ludpf",
            Box::new(|r| Policy::LeastUsedDpf {
                load: load(r),
                load_dpf: small(r) >> 8,
                distance: r.next_u32() % 200,
            }),
        ),
        (
            "luddpf",
            Box::new(|r| Policy::LeastUsedDegradationDpf {
                load: load(r),
                degradation: small(r),
                load_dpf: small(r) >> 8,
                distance: r.next_u32() % 200,
            }),
        ),
    ]
}

fn element(id: u32, home: u32, policy: Policy) -> PoolElementInfo {
    let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (id & 0x00ff_ffff)));
    PoolElementInfo {
        pe_id: PeIdentifier(id),
        home_registrar: ServerId(home),
        registration_life: 30_000,
        policy,
        user_transport: TransportParameter::sctp(10_000 + (id % 50_000) as u16, 1, [a]),
        asap_transport: Some(TransportParameter::sctp(
            20_000 + (id % 40_000) as u16,
            0,
            [a],
        )),
    }
}

/// Distinct random non-zero PE ids.
fn pe_ids(n: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<u32> {
    let mut seen = std::collections::BTreeSet::new();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let id = rng.next_u32();
        if id != 0 && seen.insert(id) {
            v.push(id);
        }
    }
    v
}

fn config() -> HandlespaceConfig {
    HandlespaceConfig {
        limits: Limits {
            max_elements: 10_000_000,
            max_elements_per_pool: 10_000_000,
            ..Limits::default()
        },
        ..HandlespaceConfig::default()
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 0.04 } else { 0.5 };
    let sizes: [usize; 4] = [10, 1_000, 10_000, 100_000];
    let handle = PoolHandle::from("BenchPool");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let pols = policies();

    // ---- registration / re-registration / deregistration (Least Used pool) ----
    for &n in &sizes {
        let ids = pe_ids(n, &mut rng);
        let infos: Vec<PoolElementInfo> = ids
            .iter()
            .map(|&id| element(id, 1 + id % 4, Policy::LeastUsed { load: id }))
            .collect();
        let reps = (200_000 / n).clamp(1, 2000);
        let mut t_reg = 0.0;
        let mut t_rereg = 0.0;
        let mut t_dereg = 0.0;
        for _ in 0..reps {
            let mut hs = Handlespace::new(config());
            let t = now();
            for (i, info) in infos.iter().enumerate() {
                let r = hs.register(&handle, info, Some(AssocId(i as u64)));
                black_box(r.ok());
            }
            t_reg += t.elapsed().as_secs_f64();
            let mut changed: Vec<PoolElementInfo> = infos.clone();
            for c in &mut changed {
                c.policy = Policy::LeastUsed {
                    load: c.pe_id.0 ^ 0x5555,
                };
            }
            let t = now();
            for (i, info) in changed.iter().enumerate() {
                black_box(hs.register(&handle, info, Some(AssocId(i as u64))).ok());
            }
            t_rereg += t.elapsed().as_secs_f64();
            let t = now();
            for info in &infos {
                black_box(hs.deregister(&handle, info.pe_id));
            }
            t_dereg += t.elapsed().as_secs_f64();
            assert!(hs.is_empty());
        }
        let total = (n * reps) as f64;
        report(&format!("registration_n{n}"), total / t_reg, "ops/s");
        report(&format!("reregistration_n{n}"), total / t_rereg, "ops/s");
        report(&format!("deregistration_n{n}"), total / t_dereg, "ops/s");
    }

    // ---- handle resolution per policy ----
    let mut out = Vec::with_capacity(8);
    for &n in &sizes {
        for (name, make) in &pols {
            let mut hs = Handlespace::new(config());
            for id in pe_ids(n, &mut rng) {
                let p = make(&mut rng);
                hs.register(&handle, &element(id, 1, p), None)
                    .expect("registration");
            }
            for k in [1usize, 3] {
                let mut r = Xoshiro256PlusPlus::seed_from_u64(3);
                let v = rate(secs, 1000, || {
                    let _ = black_box(hs.select(&handle, k, &mut r, &mut out));
                });
                report(&format!("resolve_{name}_n{n}_k{k}"), v, "ops/s");
            }
        }
    }

    // ---- expiry sweep and owner scan ----
    for &n in &sizes {
        let ids = pe_ids(n, &mut rng);
        let reps = (200_000 / n).clamp(1, 200);
        let (mut t_set, mut t_sweep, mut t_rehome, mut t_walk) = (0.0, 0.0, 0.0, 0.0);
        let mut due = Vec::with_capacity(n);
        for _ in 0..reps {
            let mut hs = Handlespace::new(config());
            for &id in &ids {
                hs.register(&handle, &element(id, 1 + id % 4, Policy::RoundRobin), None)
                    .expect("registration");
            }
            let t = now();
            for (i, &id) in ids.iter().enumerate() {
                hs.set_timer(
                    &handle,
                    PeIdentifier(id),
                    TimerKind::Expiry,
                    Some(Instant::from_micros(
                        1_000_000 + (i as u64 * 7919) % 1_000_000,
                    )),
                );
            }
            t_set += t.elapsed().as_secs_f64();
            let t = now();
            due.clear();
            hs.expired(Instant::from_micros(3_000_000), &mut due);
            for d in &due {
                black_box(hs.deregister(&d.pool_handle, d.pe_id));
            }
            t_sweep += t.elapsed().as_secs_f64();
            assert_eq!(due.len(), n);
            for &id in &ids {
                hs.register(&handle, &element(id, 1 + id % 4, Policy::RoundRobin), None)
                    .expect("registration");
            }
            let t = now();
            let mut c = 0usize;
            for h in 1..=4 {
                for e in hs.walk_owner(ServerId(h), None) {
                    black_box(e.pe_id());
                    c += 1;
                }
            }
            t_walk += t.elapsed().as_secs_f64();
            assert_eq!(c, n);
            let owned = hs.owner_element_count(ServerId(2));
            let t = now();
            let moved = hs.rehome_owner(ServerId(2), ServerId(9));
            t_rehome += t.elapsed().as_secs_f64();
            assert_eq!(moved, owned);
        }
        let total = (n * reps) as f64;
        report(&format!("timer_set_n{n}"), total / t_set, "ops/s");
        report(&format!("expiry_sweep_n{n}"), total / t_sweep, "PEs/s");
        report(&format!("owner_walk_n{n}"), total / t_walk, "PEs/s");
        report(
            &format!("rehome_owner_n{n}"),
            total / 4.0 / t_rehome,
            "PEs/s",
        );
    }

    // ---- memory per PE: every index populated (4 owners, association, timer) ----
    for &n in &[10_000usize, 100_000] {
        for name in ["rr", "lud", "wrand"] {
            let make = &pols.iter().find(|(x, _)| *x == name).expect("policy").1;
            let ids = pe_ids(n, &mut rng);
            let infos: Vec<PoolElementInfo> = ids
                .iter()
                .map(|&id| element(id, 1 + id % 4, make(&mut rng)))
                .collect();
            let before = live_bytes();
            let mut hs = Handlespace::new(config());
            for (i, info) in infos.iter().enumerate() {
                hs.register(&handle, info, Some(AssocId(i as u64)))
                    .expect("ok");
                hs.set_timer(
                    &handle,
                    info.pe_id,
                    TimerKind::KeepAliveTransmission,
                    Some(Instant::from_micros(i as u64 * 13)),
                );
            }
            let after = live_bytes();
            report(
                &format!("memory_per_pe_{name}_n{n}"),
                (after - before) as f64 / n as f64,
                "bytes",
            );
            drop(hs);
        }
    }
    // Many small pools: 10,000 pools of 10 PEs.
    {
        let before = live_bytes();
        let mut hs = Handlespace::new(config());
        let mut id = 1u32;
        for p in 0..10_000u32 {
            let h = PoolHandle::new(format!("pool-{p:05}").into_bytes());
            for _ in 0..10 {
                hs.register(
                    &h,
                    &element(id, 1 + id % 4, Policy::RoundRobin),
                    Some(AssocId(u64::from(id))),
                )
                .expect("ok");
                id += 1;
            }
        }
        let after = live_bytes();
        report(
            "memory_per_pe_10000pools_x10",
            (after - before) as f64 / 100_000.0,
            "bytes",
        );
    }
}
