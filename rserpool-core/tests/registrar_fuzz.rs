//! Property tests: random message sequences from several associations, registrars and
//! datagram sources; after every step the harness checks that nothing panicked, the
//! checksums match the content, PEs change only through their owners, and memory stays
//! bounded (see `rserpool_core::registrar::fuzzing`).

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use rserpool_core::Protocol;
use rserpool_core::registrar::fuzzing::{Harness, INITIAL_ASSOCS, Input, drive, templated};

#[derive(Clone, Debug)]
enum Op {
    Advance(u32),
    Up(u8, u8),
    Down(u8, u8),
    Template(u8, u8, Vec<u8>),
    /// A templated message with one byte changed.
    Mutated(u8, u8, Vec<u8>, usize, u8),
    Raw(u8, u32, Vec<u8>),
    Datagram(u8, bool, Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![8 => 0u32..1500, 1 => 0u32..12_000].prop_map(Op::Advance),
        1 => (0u8..16, 0u8..32).prop_map(|(a, h)| Op::Up(a, h)),
        1 => (0u8..24, any::<u8>()).prop_map(|(a, r)| Op::Down(a, r)),
        10 => (0u8..16, any::<u8>(), vec(any::<u8>(), 20)).prop_map(|(a, k, p)| Op::Template(a, k, p)),
        2 => (0u8..16, any::<u8>(), vec(any::<u8>(), 20), any::<usize>(), any::<u8>())
            .prop_map(|(a, k, p, i, b)| Op::Mutated(a, k, p, i, b)),
        1 => (0u8..16, prop_oneof![Just(11u32), Just(12u32), any::<u32>()], vec(any::<u8>(), 0..64))
            .prop_map(|(a, pp, d)| Op::Raw(a, pp, d)),
        1 => (0u8..16, any::<bool>(), vec(any::<u8>(), 20)).prop_map(|(h, t, p)| Op::Datagram(h, t, p)),
    ]
}

fn input(h: &Harness, op: &Op) -> Input {
    match op {
        Op::Advance(ms) => Input::Advance(*ms),
        Op::Up(a, host) => Input::AssocUp {
            assoc: *a,
            host: *host,
        },
        Op::Down(a, r) => Input::AssocDown {
            assoc: *a,
            reason: *r,
        },
        Op::Template(a, k, p) => templated(h, *a, *k, p),
        Op::Mutated(a, k, p, i, b) => match templated(h, *a, *k, p) {
            Input::Message { assoc, ppid, data } => {
                let mut d = data.to_vec();
                if !d.is_empty() {
                    let n = i % d.len();
                    d[n] ^= b | 1;
                }
                Input::Message {
                    assoc,
                    ppid,
                    data: Bytes::from(d),
                }
            }
            other => other,
        },
        Op::Raw(a, ppid, d) => Input::Message {
            assoc: *a,
            ppid: *ppid,
            data: Bytes::copy_from_slice(d),
        },
        Op::Datagram(host, t, p) => {
            if *t {
                match templated(h, 0, 5, p) {
                    Input::Message { ppid, data, .. } => Input::Datagram {
                        host: 8 + host % 8,
                        ppid,
                        data,
                    },
                    other => other,
                }
            } else {
                Input::Datagram {
                    host: *host,
                    ppid: Protocol::PPID_ENRP,
                    data: Bytes::copy_from_slice(p),
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants(
        seed in any::<u64>(),
        flags in any::<u8>(),
        ops in vec(op(), 1..150),
    ) {
        let mut h = Harness::new(seed, flags);
        // Start with a few associations so that templates have somewhere to go.
        for (a, host) in INITIAL_ASSOCS {
            h.step(&Input::AssocUp { assoc: a, host }).map_err(|v| TestCaseError::fail(v.0))?;
        }
        for o in &ops {
            let r = match o {
                Op::Template(a, k, p) => h.step_templated(*a, *k, p),
                _ => {
                    let i = input(&h, o);
                    h.step(&i)
                }
            };
            r.map_err(|v| TestCaseError::fail(v.0))?;
        }
    }

    #[test]
    fn drive_accepts_any_bytes(data in vec(any::<u8>(), 0..1500)) {
        drive(&data);
    }
}

/// A long deterministic run that reaches registrations, replicas, takeovers and limits.
#[test]
fn long_deterministic_run() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..4u8 {
        let mut h = Harness::new(next(), round * 5);
        for (a, host) in INITIAL_ASSOCS {
            h.step(&Input::AssocUp { assoc: a, host }).unwrap();
        }
        for _ in 0..4000 {
            let r = next();
            let b = r.to_le_bytes();
            let params: Vec<u8> = (0..20).map(|i| (next() >> (i % 8)) as u8).collect();
            let i = match b[0] % 20 {
                0..=2 => Input::Advance(if b[2] < 3 {
                    10_000
                } else {
                    u32::from(b[1]) * 4
                }),
                3 if b[3] < 40 => Input::AssocUp {
                    assoc: b[1] % 16,
                    host: b[2] % 32,
                },
                4 if b[3] < 40 => Input::AssocDown {
                    assoc: b[1] % 20,
                    reason: b[2],
                },
                _ => {
                    if let Err(v) = h.step_templated(b[1] % 16, b[2], &params) {
                        panic!("round {round}: {v}");
                    }
                    continue;
                }
            };
            if let Err(v) = h.step(&i) {
                panic!("round {round}: {v}");
            }
        }
        let hs = h.registrar().handlespace();
        let stats = h.registrar().stats();
        assert!(stats.registrations > 0, "round {round}: {stats:?}");
        assert!(hs.element_count() <= 48);
    }
}

/// The harness reaches the deep states (registrations, peers, removals, takeovers), so
/// the invariants above are checked where they matter.
#[test]
fn harness_reaches_deep_states() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut h = Harness::new(next(), 0);
    for (a, host) in INITIAL_ASSOCS {
        h.step(&Input::AssocUp { assoc: a, host }).unwrap();
    }
    for _ in 0..4000 {
        let b = next().to_le_bytes();
        let params: Vec<u8> = (0..20).map(|i| (next() >> (i % 8)) as u8).collect();
        let i = match b[0] % 20 {
            0..=2 => Input::Advance(if b[2] < 3 {
                10_000
            } else {
                u32::from(b[1]) * 4
            }),
            3 if b[3] < 40 => Input::AssocUp {
                assoc: b[1] % 16,
                host: b[2] % 32,
            },
            4 if b[3] < 40 => Input::AssocDown {
                assoc: b[1] % 20,
                reason: b[2],
            },
            _ => {
                h.step_templated(b[1] % 16, b[2], &params).unwrap();
                continue;
            }
        };
        h.step(&i).unwrap();
    }
    for kind in [
        "PeRegistered",
        "PeRemoved",
        "PeerUp",
        "PeerDown",
        "TakeoverStarted",
    ] {
        assert!(
            h.event_counts.get(kind).copied().unwrap_or(0) > 0,
            "{kind}: {:?}",
            h.event_counts
        );
    }
    let s = h.registrar().stats();
    assert!(s.ownership_refusals > 0 && s.registration_rejects > 0 && s.handle_resolutions > 0);
}
