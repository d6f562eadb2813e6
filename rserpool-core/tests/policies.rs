//! Property tests of the selection policies through the public handlespace API.
//!
//! Statistical checks use a seeded `Xoshiro256PlusPlus`, so they are deterministic; the
//! tolerances (5 standard deviations) would also hold for other seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use rserpool_core::handlespace::{Handlespace, PoolElementInfo, Registered};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;

const MAX: u32 = u32::MAX;

fn info(id: u32, policy: Policy) -> PoolElementInfo {
    let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + id));
    PoolElementInfo {
        pe_id: PeIdentifier(id),
        home_registrar: ServerId(1),
        registration_life: 30_000,
        policy,
        user_transport: TransportParameter::sctp(1000 + id as u16, 0, [a]),
        asap_transport: None,
    }
}

fn pool(policies: &[Policy]) -> (Handlespace, PoolHandle) {
    let mut hs = Handlespace::default();
    let h = PoolHandle::from("pool");
    for (i, p) in policies.iter().enumerate() {
        let r = hs.register(&h, &info(i as u32 + 1, *p), None);
        assert_eq!(r, Ok(Registered::Added));
    }
    (hs, h)
}

struct Sel {
    rng: Xoshiro256PlusPlus,
    out: Vec<PeIdentifier>,
}

impl Sel {
    fn new(seed: u64) -> Sel {
        Sel {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            out: Vec::new(),
        }
    }

    fn pick(&mut self, hs: &mut Handlespace, h: &PoolHandle, n: usize, inc: u32) -> Vec<u32> {
        hs.select_with(h, n, inc, &mut self.rng, &mut self.out)
            .expect("pool exists");
        self.out.iter().map(|p| p.0).collect()
    }
}

/// Asserts that `counts` follow the probabilities `p` within 5 standard deviations.
fn assert_shares(counts: &BTreeMap<u32, u64>, p: &BTreeMap<u32, f64>, n: u64) {
    for (id, &pi) in p {
        let c = counts.get(id).copied().unwrap_or(0) as f64;
        let mean = n as f64 * pi;
        let sd = (n as f64 * pi * (1.0 - pi)).sqrt().max(1.0);
        assert!(
            (c - mean).abs() <= 5.0 * sd,
            "PE {id}: {c} draws, expected {mean:.0} ± {sd:.0} ({counts:?})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Round Robin: with a stable membership every PE is chosen exactly once per round,
    /// both for the head of each answer (registrar default) and for every returned PE
    /// when all of them are updated (PU cache), also after earlier churn.
    #[test]
    fn round_robin_visits_every_pe_once_per_round(
        n in 1usize..40,
        k in 1usize..5,
        churn in proptest::collection::vec((1u32..60, any::<bool>()), 0..30),
        seed in any::<u64>(),
    ) {
        let (mut hs, h) = pool(&vec![Policy::RoundRobin; n]);
        let mut s = Sel::new(seed);
        for (id, add) in churn {
            if add {
                let _ = hs.register(&h, &info(id, Policy::RoundRobin), None);
            } else if hs.pool(&h).is_some_and(|p| p.len() > 1) {
                hs.deregister(&h, PeIdentifier(id));
            }
            s.pick(&mut hs, &h, k, 0);
        }
        let members: BTreeSet<u32> = hs.pool(&h).expect("pool").elements().map(|e| e.pe_id().0).collect();
        let len = members.len();
        // registrar default: the heads of consecutive answers form rounds
        let heads: Vec<u32> = (0..3 * len).map(|_| s.pick(&mut hs, &h, k, 0)[0]).collect();
        for round in heads.chunks(len) {
            prop_assert_eq!(round.iter().copied().collect::<BTreeSet<_>>(), members.clone());
        }
        // every answer lists consecutive ring members
        let a = s.pick(&mut hs, &h, k, 0);
        prop_assert_eq!(a.len(), k.min(len));
        prop_assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), a.len());
        // PU cache: all returned PEs advance; the concatenation is the ring repeated
        let mut all = Vec::new();
        while all.len() < 3 * len {
            all.extend(s.pick(&mut hs, &h, k, u32::MAX));
        }
        for w in all.windows(len) {
            prop_assert_eq!(w.iter().copied().collect::<BTreeSet<_>>(), members.clone());
        }
    }

    /// Least Used: the chosen PE has the minimum load, and PEs of equal (minimum) load
    /// take turns round robin.
    #[test]
    fn least_used_picks_minimum_and_rotates_equals(
        loads in proptest::collection::vec(0u32..4, 1..20),
        seed in any::<u64>(),
    ) {
        let (mut hs, h) = pool(&loads.iter().map(|&l| Policy::LeastUsed { load: l }).collect::<Vec<_>>());
        let mut s = Sel::new(seed);
        let min = *loads.iter().min().expect("non-empty");
        let best: BTreeSet<u32> = loads.iter().enumerate().filter(|(_, l)| **l == min).map(|(i, _)| i as u32 + 1).collect();
        let picks: Vec<u32> = (0..3 * best.len()).map(|_| s.pick(&mut hs, &h, 1, 0)[0]).collect();
        for round in picks.chunks(best.len()) {
            prop_assert_eq!(round.iter().copied().collect::<BTreeSet<_>>(), best.clone());
        }
        // Several per answer: ascending load, the lowest loads.
        let k = 3.min(loads.len());
        let a = s.pick(&mut hs, &h, k, 0);
        let got: Vec<u32> = a.iter().map(|id| loads[*id as usize - 1]).collect();
        let mut want = loads.clone();
        want.sort();
        want.truncate(k);
        prop_assert_eq!(got, want);
    }

    /// Priority: answers list the highest priorities in decreasing order; the top group
    /// rotates.
    #[test]
    fn priority_honours_priority(
        prios in proptest::collection::vec(0u32..5, 1..20),
        k in 1usize..6,
        seed in any::<u64>(),
    ) {
        let (mut hs, h) = pool(&prios.iter().map(|&p| Policy::Priority { priority: p }).collect::<Vec<_>>());
        let mut s = Sel::new(seed);
        let mut sorted = prios.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        sorted.truncate(k);
        let top = sorted[0];
        let top_group: BTreeSet<u32> = prios.iter().enumerate().filter(|(_, p)| **p == top).map(|(i, _)| i as u32 + 1).collect();
        let mut firsts = BTreeSet::new();
        for _ in 0..top_group.len() {
            let a = s.pick(&mut hs, &h, k, 0);
            let got: Vec<u32> = a.iter().map(|id| prios[*id as usize - 1]).collect();
            prop_assert_eq!(&got, &sorted);
            firsts.insert(a[0]);
        }
        prop_assert_eq!(firsts, top_group);
    }

    /// Least Used with Degradation (RFC semantics): every selection picks a minimum of
    /// load + accumulated degradation, whose degradation then grows by its load
    /// degradation; re-registration resets it.
    #[test]
    fn least_used_degradation_follows_keys(
        pes in proptest::collection::vec((0u32..100, 0u32..20), 1..10),
        rounds in 1usize..60,
        seed in any::<u64>(),
    ) {
        let policies: Vec<Policy> = pes.iter().map(|&(load, degradation)| Policy::LeastUsedDegradation { load, degradation }).collect();
        let (mut hs, h) = pool(&policies);
        let mut s = Sel::new(seed);
        let deg = |hs: &Handlespace, id: u32| hs.get(&h, PeIdentifier(id)).expect("pe").degradation();
        for _ in 0..rounds {
            let keys: Vec<u64> = (1..=pes.len() as u32).map(|id| u64::from(pes[id as usize - 1].0) + u64::from(deg(&hs, id))).collect();
            let min = *keys.iter().min().expect("non-empty");
            let id = s.pick(&mut hs, &h, 1, 0)[0];
            prop_assert_eq!(keys[id as usize - 1], min);
            let before = keys[id as usize - 1] - u64::from(pes[id as usize - 1].0);
            prop_assert_eq!(u64::from(deg(&hs, id)), before + u64::from(pes[id as usize - 1].1));
        }
        for (i, p) in policies.iter().enumerate() {
            hs.register(&h, &info(i as u32 + 1, *p), None).expect("re-registration");
            prop_assert_eq!(deg(&hs, i as u32 + 1), 0);
        }
    }

    /// Priority Least Used with Degradation: key = load + load degradation + Degradation.
    #[test]
    fn priority_least_used_degradation_follows_keys(
        pes in proptest::collection::vec((0u32..100, 0u32..20), 1..10),
        rounds in 1usize..40,
        seed in any::<u64>(),
    ) {
        let policies: Vec<Policy> = pes.iter().map(|&(load, degradation)| Policy::PriorityLeastUsedDegradation { load, degradation }).collect();
        let (mut hs, h) = pool(&policies);
        let mut s = Sel::new(seed);
        for _ in 0..rounds {
            let keys: Vec<u64> = (1..=pes.len() as u32).map(|id| {
                let (l, d) = pes[id as usize - 1];
                u64::from(l) + u64::from(d) + u64::from(hs.get(&h, PeIdentifier(id)).expect("pe").degradation())
            }).collect();
            let id = s.pick(&mut hs, &h, 1, 0)[0];
            prop_assert_eq!(keys[id as usize - 1], *keys.iter().min().expect("non-empty"));
        }
    }

    /// Weighted Round Robin: after any number of selections each PE's count is within 2
    /// of its exact share, and weight-0 PEs are never chosen.
    #[test]
    fn weighted_round_robin_tracks_weights_exactly(
        weights in proptest::collection::vec(0u32..8, 1..10),
        picks in 1usize..400,
        seed in any::<u64>(),
    ) {
        let (mut hs, h) = pool(&weights.iter().map(|&w| Policy::WeightedRoundRobin { weight: w }).collect::<Vec<_>>());
        let mut s = Sel::new(seed);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u64; weights.len()];
        for _ in 0..picks {
            let a = s.pick(&mut hs, &h, 1, 0);
            if total == 0 {
                prop_assert!(a.is_empty());
                continue;
            }
            counts[a[0] as usize - 1] += 1;
        }
        if total > 0 {
            for (i, &w) in weights.iter().enumerate() {
                let exact = picks as f64 * f64::from(w) / f64::from(total);
                prop_assert!((counts[i] as f64 - exact).abs() <= 2.0, "PE {}: {} vs {:.1} ({:?})", i + 1, counts[i], exact, weights);
                if w == 0 {
                    prop_assert_eq!(counts[i], 0);
                }
            }
        }
    }

    /// Random policies never return a PE twice, never a value-0 PE, and as many as
    /// possible.
    #[test]
    fn random_family_answers_are_distinct_and_eligible(
        weights in proptest::collection::vec(0u32..4, 1..30),
        k in 0usize..40,
        seed in any::<u64>(),
    ) {
        let (mut hs, h) = pool(&weights.iter().map(|&w| Policy::WeightedRandom { weight: w }).collect::<Vec<_>>());
        let mut s = Sel::new(seed);
        let eligible = weights.iter().filter(|&&w| w > 0).count();
        for _ in 0..5 {
            let a = s.pick(&mut hs, &h, k, 0);
            prop_assert_eq!(a.len(), k.min(eligible));
            prop_assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), a.len());
            prop_assert!(a.iter().all(|id| weights[*id as usize - 1] > 0));
        }
    }
}

#[test]
fn weighted_random_shares_follow_weights() {
    let weights = [1u32, 2, 3, 4, 10, 0, 5];
    let (mut hs, h) = pool(
        &weights
            .iter()
            .map(|&w| Policy::WeightedRandom { weight: w })
            .collect::<Vec<_>>(),
    );
    let total: u32 = weights.iter().sum();
    let p: BTreeMap<u32, f64> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (i as u32 + 1, f64::from(w) / f64::from(total)))
        .collect();
    let mut s = Sel::new(11);
    let n = 200_000u64;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(s.pick(&mut hs, &h, 1, 0)[0]).or_insert(0) += 1;
    }
    assert_shares(&counts, &p, n);
    assert_eq!(counts.get(&6), None, "weight 0 never drawn");
    // First position of 3-PE answers has the same distribution (draws without
    // replacement start with a weighted draw); the whole answer never repeats a PE.
    let mut firsts = BTreeMap::new();
    for _ in 0..n {
        let a = s.pick(&mut hs, &h, 3, 0);
        assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 3);
        *firsts.entry(a[0]).or_insert(0) += 1;
    }
    assert_shares(&firsts, &p, n);
}

#[test]
fn weighted_random_without_replacement_second_draw() {
    // Weights 8:1:1: given A first, B and C are equally likely second; P(A first) = 0.8;
    // P(B second | A first) = 1/2; P(A second | B first) = 8/9.
    let (mut hs, h) = pool(&[
        Policy::WeightedRandom { weight: 8 },
        Policy::WeightedRandom { weight: 1 },
        Policy::WeightedRandom { weight: 1 },
    ]);
    let mut s = Sel::new(5);
    let n = 100_000u64;
    let mut pairs: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for _ in 0..n {
        let a = s.pick(&mut hs, &h, 2, 0);
        *pairs.entry((a[0], a[1])).or_insert(0) += 1;
    }
    let p: BTreeMap<u32, f64> = [
        (12, 0.8 * 0.5),
        (13, 0.8 * 0.5),
        (21, 0.1 * 8.0 / 9.0),
        (23, 0.1 / 9.0),
        (31, 0.1 * 8.0 / 9.0),
        (32, 0.1 / 9.0),
    ]
    .into_iter()
    .collect();
    let counts: BTreeMap<u32, u64> = pairs.iter().map(|(&(a, b), &c)| (a * 10 + b, c)).collect();
    assert_shares(&counts, &p, n);
}

#[test]
fn weighted_round_robin_shares_and_spread() {
    let weights = [1u32, 2, 3, 6];
    let (mut hs, h) = pool(
        &weights
            .iter()
            .map(|&w| Policy::WeightedRoundRobin { weight: w })
            .collect::<Vec<_>>(),
    );
    let mut s = Sel::new(1);
    let seq: Vec<u32> = (0..1200).map(|_| s.pick(&mut hs, &h, 1, 0)[0]).collect();
    for (i, &w) in weights.iter().enumerate() {
        let c = seq.iter().filter(|&&x| x == i as u32 + 1).count();
        assert_eq!(c, 100 * w as usize, "exact shares per 12-selection round");
    }
    // Spread: the weight-6 PE never waits more than 2 selections.
    let gaps: Vec<usize> = seq
        .iter()
        .enumerate()
        .filter(|(_, x)| **x == 4)
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(gaps.iter().all(|&g| g <= 3), "{gaps:?}");
}

#[test]
fn randomized_least_used_shares_follow_free_capacity() {
    let pct = |p: u64| (p * u64::from(MAX) / 100) as u32;
    let loads = [pct(0), pct(50), pct(75), pct(90), MAX];
    let (mut hs, h) = pool(
        &loads
            .iter()
            .map(|&load| Policy::RandomizedLeastUsed { load })
            .collect::<Vec<_>>(),
    );
    let free: Vec<f64> = loads.iter().map(|&l| f64::from((MAX - l).max(1))).collect();
    let sum: f64 = free.iter().sum();
    let p: BTreeMap<u32, f64> = free
        .iter()
        .enumerate()
        .map(|(i, f)| (i as u32 + 1, f / sum))
        .collect();
    let mut s = Sel::new(3);
    let n = 100_000u64;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(s.pick(&mut hs, &h, 1, 0)[0]).or_insert(0) += 1;
    }
    assert_shares(&counts, &p, n);
}

#[test]
fn randomized_least_used_degradation_shifts_load_away() {
    // Two idle PEs, degradation 50 % per selection: after PE A was chosen its value is
    // halved, so the next draw picks the other PE with probability 2/3 instead of 1/2.
    // Each trial starts from re-registered PEs (degradation reset to 0).
    let d = MAX / 2;
    let pol = Policy::RandomizedLeastUsedDegradation {
        load: 0,
        degradation: d,
    };
    let (mut hs, h) = pool(&[pol, pol]);
    let mut s = Sel::new(9);
    let trials = 6000u64;
    let mut switches = 0u64;
    for _ in 0..trials {
        for id in [1, 2] {
            hs.register(&h, &info(id, pol), None)
                .expect("re-registration");
            assert_eq!(
                hs.get(&h, PeIdentifier(id)).map(|e| e.degradation()),
                Some(0)
            );
        }
        let a = s.pick(&mut hs, &h, 1, 0)[0];
        assert_eq!(
            hs.get(&h, PeIdentifier(a)).map(|e| e.degradation()),
            Some(d)
        );
        let b = s.pick(&mut hs, &h, 1, 0)[0];
        switches += u64::from(a != b);
    }
    let mut counts = BTreeMap::new();
    counts.insert(1, switches);
    let p: BTreeMap<u32, f64> = [(1, (f64::from(MAX)) / (f64::from(MAX) + f64::from(MAX - d)))]
        .into_iter()
        .collect();
    assert_shares(&counts, &p, trials);
}

#[test]
fn weighted_random_dpf_penalises_distance() {
    // Equal weights; PE 2 is 500 ms away with DPF 0.001/ms => value halved.
    let dpf = (u64::from(MAX) / 1000) as u32;
    let (mut hs, h) = pool(&[
        Policy::WeightedRandomDpf {
            weight: 1000,
            weight_dpf: dpf,
            distance: 0,
        },
        Policy::WeightedRandomDpf {
            weight: 1000,
            weight_dpf: dpf,
            distance: 500,
        },
    ]);
    let mut s = Sel::new(4);
    let n = 60_000u64;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(s.pick(&mut hs, &h, 1, 0)[0]).or_insert(0) += 1;
    }
    let p: BTreeMap<u32, f64> = [(1, 1000.0 / 1500.0), (2, 500.0 / 1500.0)]
        .into_iter()
        .collect();
    assert_shares(&counts, &p, n);
}
