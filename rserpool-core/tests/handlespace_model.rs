//! Model-based test of the handlespace against a plain model built from `BTreeMap`s.
//!
//! After any sequence of register / re-register / deregister / timers + expiry / resolve /
//! re-home (takeover) / set home / remove by association / remove by owner / unreachable
//! reports, both hold the same PEs with the same attributes, the same checksums (total and
//! per owner, the model recomputing them from scratch with its own code), the same ordered
//! walks, the same timers, and every selection is one the policy allows: exactly the
//! predicted list for the sorting policies (their choice is deterministic), and distinct
//! eligible members of the right count for Round Robin and the random policies.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use rserpool_core::handlespace::{
    Handlespace, HandlespaceConfig, InvalidValue, Limits, PoolElementInfo, Registered,
    RegistrationError, ResourceLimit, TimerKind, TransportRole, WalkCursor,
};
use rserpool_core::{AssocId, Instant};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::policy::{Policy, code};
use rserpool_proto::transport::{TransportParameter, TransportProtocol};

const HANDLES: [&[u8]; 4] = [b"A", b"bb", b"ccc", b""];
const MAX: u32 = u32::MAX;
const LIMITS: Limits = Limits {
    max_pools: 2,
    max_elements_per_pool: 5,
    max_elements: 8,
    max_addresses_per_transport: 2,
    max_pool_handle_len: 32,
};

const TYPES: [u32; 16] = [
    code::ROUND_ROBIN,
    code::WEIGHTED_ROUND_ROBIN,
    code::RANDOM,
    code::WEIGHTED_RANDOM,
    code::PRIORITY,
    code::LEAST_USED,
    code::LEAST_USED_DEGRADATION,
    code::PRIORITY_LEAST_USED,
    code::RANDOMIZED_LEAST_USED,
    code::RANDOMIZED_PRIORITY_LEAST_USED,
    code::RANDOMIZED_LEAST_USED_DEGRADATION,
    code::PRIORITY_LEAST_USED_DEGRADATION,
    code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
    code::WEIGHTED_RANDOM_DPF,
    code::LEAST_USED_DPF,
    code::LEAST_USED_DEGRADATION_DPF,
];

// ---------------------------------------------------------------------------------------
// the model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Ring,
    Sorted,
    Weighted,
}

fn family(t: u32) -> Family {
    match t {
        code::ROUND_ROBIN => Family::Ring,
        code::RANDOM
        | code::WEIGHTED_RANDOM
        | code::WEIGHTED_RANDOM_DPF
        | code::RANDOMIZED_LEAST_USED
        | code::RANDOMIZED_LEAST_USED_DEGRADATION
        | code::RANDOMIZED_PRIORITY_LEAST_USED
        | code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => Family::Weighted,
        _ => Family::Sorted,
    }
}

fn vals(p: &Policy) -> [u128; 4] {
    let v = p.values();
    let g = |i: usize| u128::from(v.get(i).copied().unwrap_or(0));
    [g(0), g(1), g(2), g(3)]
}

/// Sorting key of the sorting policies (spec: policies.md §4.4, RFC degradation).
fn sort_key(p: &Policy, deg: u32, pass: Option<u64>) -> u128 {
    let v = vals(p);
    let d = u128::from(deg);
    let m = u128::from(MAX);
    match p.policy_type() {
        code::WEIGHTED_ROUND_ROBIN => u128::from(pass.unwrap_or(u64::MAX)),
        code::PRIORITY => m - v[0],
        code::LEAST_USED => v[0],
        code::LEAST_USED_DEGRADATION => (v[0] + d).min(m),
        code::PRIORITY_LEAST_USED => (v[0] + v[1]).min(m),
        code::PRIORITY_LEAST_USED_DEGRADATION => (v[0] + v[1] + d).min(m),
        code::LEAST_USED_DPF => (v[0] + v[1] * v[2]).min(m),
        code::LEAST_USED_DEGRADATION_DPF => (v[0] + d + v[2] * v[3]).min(m),
        t => panic!("not a sorting policy: {t:x}"),
    }
}

/// Whether a random-family PE can be drawn at all (its value is > 0).
fn drawable(p: &Policy) -> bool {
    let v = vals(p);
    match p.policy_type() {
        code::WEIGHTED_RANDOM => v[0] > 0,
        code::WEIGHTED_RANDOM_DPF => {
            // value = w - rint(w * dpf * dist / MAX); negative => 1; exactly 0 => 0.
            let penalty = (v[0] * v[1] * v[2] * 2 + u128::from(MAX)) / (2 * u128::from(MAX));
            v[0] != penalty
        }
        _ => true,
    }
}

fn degrades(t: u32) -> bool {
    matches!(
        t,
        code::LEAST_USED_DEGRADATION
            | code::PRIORITY_LEAST_USED_DEGRADATION
            | code::LEAST_USED_DEGRADATION_DPF
    )
}

#[derive(Clone, Debug)]
struct MPe {
    info: PoolElementInfo,
    assoc: Option<u64>,
    seq: u64,
    deg: u32,
    /// WRR pass; `None` for weight 0.
    pass: Option<u64>,
    expiry: Option<u64>,
    ka: Option<(TimerKind, u64)>,
    reports: u32,
}

#[derive(Clone, Debug)]
struct MPool {
    ptype: u32,
    proto: TransportProtocol,
    control: bool,
    pes: BTreeMap<u32, MPe>,
    next_seq: u64,
    vtime: u64,
}

type Key = (Vec<u8>, u32);

#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Nothing,
    Register(Result<Registered, RegistrationError>),
    Removed(Vec<(Key, PoolElementInfo)>),
    Bool(bool),
    Count(usize),
    Reports(Option<u32>),
    Due(Vec<(u64, Key, TimerKind)>),
    UnknownPool,
    /// Exactly these PEs in this order.
    SelectExact(Vec<u32>),
    /// `count` distinct PEs out of `eligible`.
    SelectAny {
        eligible: Vec<u32>,
        count: usize,
    },
}

#[derive(Clone, Debug)]
struct Model {
    types: [u32; 3],
    pools: BTreeMap<Vec<u8>, MPool>,
    now: u64,
    expect: Expect,
}

#[derive(Clone, Debug)]
enum Op {
    Register {
        pool: usize,
        info: Box<PoolElementInfo>,
        assoc: Option<u64>,
    },
    Deregister {
        pool: usize,
        pe: u32,
    },
    SetTimer {
        pool: usize,
        pe: u32,
        kind: TimerKind,
        delay_ms: Option<u64>,
    },
    Advance {
        ms: u64,
    },
    Resolve {
        pool: usize,
        n: usize,
        inc: u32,
        seed: u64,
    },
    Rehome {
        from: u32,
        to: u32,
    },
    SetHome {
        pool: usize,
        pe: u32,
        home: u32,
    },
    RemoveAssoc {
        assoc: u64,
    },
    RemoveOwner {
        home: u32,
    },
    Report {
        pool: usize,
        pe: u32,
    },
}

impl Model {
    fn count(&self) -> usize {
        self.pools.values().map(|p| p.pes.len()).sum()
    }

    fn pe_mut(&mut self, pool: usize, pe: u32) -> Option<&mut MPe> {
        self.pools.get_mut(HANDLES[pool])?.pes.get_mut(&pe)
    }

    fn remove(&mut self, h: &[u8], id: u32) -> Option<(Key, PoolElementInfo)> {
        let pool = self.pools.get_mut(h)?;
        let pe = pool.pes.remove(&id)?;
        if pool.pes.is_empty() {
            self.pools.remove(h);
        }
        Some(((h.to_vec(), id), pe.info))
    }

    fn all(&self) -> Vec<(Key, &MPe)> {
        self.pools
            .iter()
            .flat_map(|(h, p)| p.pes.iter().map(move |(id, pe)| ((h.clone(), *id), pe)))
            .collect()
    }

    fn remove_where(&mut self, f: impl Fn(&MPe) -> bool) -> Vec<(Key, PoolElementInfo)> {
        let keys: Vec<Key> = self
            .all()
            .into_iter()
            .filter(|(_, pe)| f(pe))
            .map(|(k, _)| k)
            .collect();
        keys.iter()
            .filter_map(|(h, id)| self.remove(h, *id))
            .collect()
    }

    fn register(
        &mut self,
        pool: usize,
        info: &PoolElementInfo,
        assoc: Option<u64>,
    ) -> Result<Registered, RegistrationError> {
        let h = HANDLES[pool];
        if h.is_empty() || h.len() > LIMITS.max_pool_handle_len {
            return Err(RegistrationError::InvalidValue(
                InvalidValue::PoolHandleLength {
                    len: h.len(),
                    max: LIMITS.max_pool_handle_len,
                },
            ));
        }
        if info.pe_id.0 == 0 {
            return Err(RegistrationError::InvalidValue(InvalidValue::PeIdentifier));
        }
        let t = &info.user_transport;
        if t.addresses.is_empty() {
            return Err(RegistrationError::InvalidValue(InvalidValue::NoAddress(
                TransportRole::User,
            )));
        }
        if t.addresses.len() > LIMITS.max_addresses_per_transport {
            return Err(RegistrationError::InvalidValue(
                InvalidValue::TooManyAddresses {
                    role: TransportRole::User,
                    count: t.addresses.len(),
                    max: LIMITS.max_addresses_per_transport,
                },
            ));
        }
        if t.port == 0 {
            return Err(RegistrationError::InvalidValue(InvalidValue::PortZero(
                TransportRole::User,
            )));
        }
        let total = self.count();
        let npools = self.pools.len();
        let ptype = info.policy.policy_type();
        let control = t.transport_use == 1;
        if let Some(p) = self.pools.get_mut(h) {
            if t.protocol != p.proto {
                return Err(RegistrationError::InconsistentTransport {
                    pool_protocol: p.proto,
                });
            }
            if control != p.control {
                return Err(RegistrationError::InconsistentDataControl {
                    pool_control_channel: p.control,
                });
            }
            if ptype != p.ptype {
                return Err(RegistrationError::InconsistentPolicy {
                    pool_policy_type: p.ptype,
                });
            }
            let vtime = p.vtime;
            if let Some(pe) = p.pes.get_mut(&info.pe_id.0) {
                if pe.info.policy != info.policy || pe.deg != 0 {
                    pe.deg = 0;
                    if ptype == code::WEIGHTED_ROUND_ROBIN {
                        // weight 0 -> w joins half a stride after the virtual time
                        let w = vals(&info.policy)[0] as u64;
                        pe.pass = (1u64 << 32)
                            .checked_div(w)
                            .map(|stride| pe.pass.unwrap_or(vtime + stride / 2));
                    }
                }
                pe.info = info.clone();
                pe.assoc = assoc;
                return Ok(Registered::Updated);
            }
            if p.pes.len() >= LIMITS.max_elements_per_pool {
                return Err(RegistrationError::LackOfResources(
                    ResourceLimit::ElementsPerPool,
                ));
            }
        }
        if total >= LIMITS.max_elements {
            return Err(RegistrationError::LackOfResources(ResourceLimit::Elements));
        }
        if !self.pools.contains_key(h) && npools >= LIMITS.max_pools {
            return Err(RegistrationError::LackOfResources(ResourceLimit::Pools));
        }
        let p = self.pools.entry(h.to_vec()).or_insert_with(|| MPool {
            ptype,
            proto: t.protocol,
            control,
            pes: BTreeMap::new(),
            next_seq: 0,
            vtime: 0,
        });
        let seq = p.next_seq;
        p.next_seq += 1;
        let w = vals(&info.policy)[0] as u64;
        // WRR: a joining PE starts half a stride after the virtual time.
        let pass =
            (ptype == code::WEIGHTED_ROUND_ROBIN && w > 0).then(|| p.vtime + (1u64 << 32) / w / 2);
        p.pes.insert(
            info.pe_id.0,
            MPe {
                info: info.clone(),
                assoc,
                seq,
                deg: 0,
                pass,
                expiry: None,
                ka: None,
                reports: 0,
            },
        );
        Ok(Registered::Added)
    }

    fn resolve(&mut self, pool: usize, n: usize, inc: u32) -> Expect {
        let Some(p) = self.pools.get_mut(HANDLES[pool]) else {
            return Expect::UnknownPool;
        };
        match family(p.ptype) {
            Family::Ring => Expect::SelectAny {
                eligible: p.pes.keys().copied().collect(),
                count: n.min(p.pes.len()),
            },
            Family::Weighted => {
                let eligible: Vec<u32> = p
                    .pes
                    .iter()
                    .filter(|(_, pe)| drawable(&pe.info.policy))
                    .map(|(id, _)| *id)
                    .collect();
                Expect::SelectAny {
                    count: n.min(eligible.len()),
                    eligible,
                }
            }
            Family::Sorted => {
                let wrr = p.ptype == code::WEIGHTED_ROUND_ROBIN;
                let mut order: Vec<(u128, u64, u32)> = p
                    .pes
                    .iter()
                    .filter(|(_, pe)| !wrr || pe.pass.is_some())
                    .map(|(id, pe)| (sort_key(&pe.info.policy, pe.deg, pe.pass), pe.seq, *id))
                    .collect();
                order.sort();
                let chosen: Vec<u32> = order.iter().take(n).map(|x| x.2).collect();
                let inc = if inc == 0 { 1 } else { inc as usize };
                for id in chosen.iter().take(inc) {
                    let seq = p.next_seq;
                    p.next_seq += 1;
                    let Some(pe) = p.pes.get_mut(id) else {
                        continue;
                    };
                    pe.seq = seq;
                    let v = vals(&pe.info.policy);
                    if wrr {
                        let pass = pe.pass.unwrap_or(0);
                        p.vtime = pass;
                        pe.pass = Some(pass + (1u64 << 32) / v[0] as u64);
                    } else if degrades(p.ptype) {
                        pe.deg = pe.deg.saturating_add(v[1] as u32);
                    }
                }
                Expect::SelectExact(chosen)
            }
        }
    }
}

/// The ENRP checksum, written independently of the crate: 16-bit one's-complement sum of
/// the pool handle (padded to even length) and the PE id as two words, per PE.
fn model_checksum<'a>(pes: impl Iterator<Item = &'a Key>) -> u16 {
    let mut acc: u64 = 0;
    for (h, id) in pes {
        let mut bytes = h.clone();
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        for w in bytes.chunks(2) {
            acc += u64::from(w[0]) << 8 | u64::from(w[1]);
        }
        acc += u64::from(id >> 16) + u64::from(id & 0xffff);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

// ---------------------------------------------------------------------------------------
// strategies

fn small() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..4, 1 => Just(MAX), 1 => Just(MAX - 1)]
}

fn policy_of(t: u32) -> impl Strategy<Value = Policy> {
    (small(), 0u32..3, 0u32..3, 0u32..3).prop_map(move |(a, b, c, d)| {
        let v = match t {
            // keep weights mostly small and non-degenerate for WRR strides
            code::WEIGHTED_ROUND_ROBIN => [a.min(5), b, c, d],
            _ => [a, b, c, d],
        };
        Policy::from_type_and_values(t, &v).expect("known type")
    })
}

fn policy_for(types: [u32; 3], pool: usize) -> BoxedStrategy<Policy> {
    let own = types[pool.min(2)];
    prop_oneof![
        9 => policy_of(own).boxed(),
        1 => proptest::sample::select(TYPES.to_vec()).prop_flat_map(policy_of).boxed(),
    ]
    .boxed()
}

fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn register_op(types: [u32; 3]) -> BoxedStrategy<Op> {
    (
        prop_oneof![30 => 0usize..3, 1 => Just(3usize)],
        prop_oneof![20 => pe_id(), 1 => Just(0u32)],
    )
        .prop_flat_map(move |(pool, pe)| {
            (
                Just(pool),
                Just(pe),
                policy_for(types, pool),
                1u32..=3,
                prop_oneof![12 => Just(TransportProtocol::Sctp), 1 => Just(TransportProtocol::Tcp)],
                prop_oneof![12 => Just(0u16), 1 => Just(1u16)],
                prop_oneof![20 => 1usize..=2, 1 => Just(0usize), 1 => Just(3usize)],
                prop_oneof![20 => 1u16..3, 1 => Just(0u16)],
                proptest::option::of(1u64..=3),
                1u32..100_000,
                // IPv6 user addresses (stored out of line), ASAP addresses (0 = none).
                (prop_oneof![4 => Just(false), 1 => Just(true)], 0u32..=2),
            )
        })
        .prop_map(
            |(pool, pe, policy, home, proto, tuse, naddr, port, assoc, life, (v6, nasap))| {
                let user = TransportParameter::with(
                    proto,
                    port,
                    tuse,
                    (0..naddr as u32).map(|i| {
                        let a = addr((pe & 0xff) * 10 + i);
                        match a {
                            IpAddr::V4(v4) if v6 => IpAddr::V6(v4.to_ipv6_mapped()),
                            _ => a,
                        }
                    }),
                );
                let asap = (nasap > 0).then(|| {
                    TransportParameter::sctp(
                        3863,
                        0,
                        (0..nasap).map(|i| addr(200 + (pe & 0xff) + i)),
                    )
                });
                Op::Register {
                    pool,
                    info: Box::new(PoolElementInfo {
                        pe_id: PeIdentifier(pe),
                        home_registrar: ServerId(home),
                        registration_life: life,
                        policy,
                        user_transport: user,
                        asap_transport: asap,
                    }),
                    assoc,
                }
            },
        )
        .boxed()
}

/// PE identifiers: a few small ones and some with a non-zero high word (checksum).
fn pe_id() -> impl Strategy<Value = u32> {
    proptest::sample::select(vec![1u32, 2, 3, 4, 5, 0x0001_2345, 0xffff_fff0])
}

fn kind() -> impl Strategy<Value = TimerKind> {
    prop_oneof![
        Just(TimerKind::Expiry),
        Just(TimerKind::KeepAliveTransmission),
        Just(TimerKind::KeepAliveTimeout)
    ]
}

struct HsModel;

impl ReferenceStateMachine for HsModel {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        proptest::array::uniform3(proptest::sample::select(TYPES.to_vec()))
            .prop_map(|types| Model {
                types,
                pools: BTreeMap::new(),
                now: 0,
                expect: Expect::Nothing,
            })
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let pool = || 0usize..3;
        // Mostly existing PEs, sometimes any.
        let existing: Vec<(usize, u32)> = state
            .all()
            .into_iter()
            .filter_map(|((h, id), _)| {
                HANDLES
                    .iter()
                    .position(|x| *x == h.as_slice())
                    .map(|i| (i, id))
            })
            .collect();
        let target = move || -> BoxedStrategy<(usize, u32)> {
            if existing.is_empty() {
                (0usize..3, pe_id()).boxed()
            } else {
                prop_oneof![
                    4 => proptest::sample::select(existing.clone()),
                    1 => (0usize..3, pe_id()),
                ]
                .boxed()
            }
        };
        prop_oneof![
            14 => register_op(state.types),
            3 => target().prop_map(|(pool, pe)| Op::Deregister { pool, pe }),
            6 => (target(), kind(), proptest::option::of((0u64..5).prop_map(|t| t * 10)))
                .prop_map(|((pool, pe), kind, delay_ms)| (pool, pe, kind, delay_ms))
                .prop_map(|(pool, pe, kind, delay_ms)| Op::SetTimer { pool, pe, kind, delay_ms }),
            2 => (0u64..4).prop_map(|t| Op::Advance { ms: t * 10 }),
            7 => (pool(), 0usize..5, prop_oneof![Just(0u32), Just(1), Just(2), Just(u32::MAX)], any::<u64>())
                .prop_map(|(pool, n, inc, seed)| Op::Resolve { pool, n, inc, seed }),
            1 => (1u32..=4, 1u32..=4).prop_map(|(from, to)| Op::Rehome { from, to }),
            1 => (target(), 1u32..=4).prop_map(|((pool, pe), home)| Op::SetHome { pool, pe, home }),
            1 => (1u64..=3).prop_map(|assoc| Op::RemoveAssoc { assoc }),
            1 => (1u32..=4).prop_map(|home| Op::RemoveOwner { home }),
            1 => target().prop_map(|(pool, pe)| Op::Report { pool, pe }),
        ]
        .boxed()
    }

    fn apply(mut s: Model, op: &Op) -> Model {
        s.expect = match op {
            Op::Register { pool, info, assoc } => Expect::Register(s.register(*pool, info, *assoc)),
            Op::Deregister { pool, pe } => {
                Expect::Removed(s.remove(HANDLES[*pool], *pe).into_iter().collect())
            }
            Op::SetTimer {
                pool,
                pe,
                kind,
                delay_ms,
            } => {
                let now = s.now;
                let at = delay_ms.map(|d| now + d);
                match s.pe_mut(*pool, *pe) {
                    Some(m) => {
                        match kind {
                            TimerKind::Expiry => m.expiry = at,
                            k => m.ka = at.map(|t| (*k, t)),
                        }
                        Expect::Bool(true)
                    }
                    None => Expect::Bool(false),
                }
            }
            Op::Advance { ms } => {
                s.now += ms;
                let now = s.now;
                let mut due = Vec::new();
                for (h, p) in s.pools.iter_mut() {
                    for (id, pe) in p.pes.iter_mut() {
                        if let Some(t) = pe.expiry.filter(|&t| t <= now) {
                            due.push((t, (h.clone(), *id), TimerKind::Expiry));
                            pe.expiry = None;
                        }
                        if let Some((k, t)) = pe.ka.filter(|&(_, t)| t <= now) {
                            due.push((t, (h.clone(), *id), k));
                            pe.ka = None;
                        }
                    }
                }
                due.sort();
                for (_, (h, id), k) in &due {
                    if *k == TimerKind::Expiry {
                        s.remove(h, *id);
                    }
                }
                Expect::Due(due)
            }
            Op::Resolve { pool, n, inc, .. } => s.resolve(*pool, *n, *inc),
            Op::Rehome { from, to } => {
                let mut c = 0;
                for p in s.pools.values_mut() {
                    for pe in p.pes.values_mut() {
                        if pe.info.home_registrar.0 == *from {
                            pe.info.home_registrar = ServerId(*to);
                            c += 1;
                        }
                    }
                }
                Expect::Count(c)
            }
            Op::SetHome { pool, pe, home } => match s.pe_mut(*pool, *pe) {
                Some(m) => {
                    m.info.home_registrar = ServerId(*home);
                    Expect::Bool(true)
                }
                None => Expect::Bool(false),
            },
            Op::RemoveAssoc { assoc } => {
                Expect::Removed(s.remove_where(|pe| pe.assoc == Some(*assoc)))
            }
            Op::RemoveOwner { home } => {
                Expect::Removed(s.remove_where(|pe| pe.info.home_registrar.0 == *home))
            }
            Op::Report { pool, pe } => Expect::Reports(s.pe_mut(*pool, *pe).map(|m| {
                m.reports += 1;
                m.reports
            })),
        };
        s
    }
}

// ---------------------------------------------------------------------------------------
// the system under test

struct Sut {
    hs: Handlespace,
}

fn ph(pool: usize) -> PoolHandle {
    PoolHandle::new(HANDLES[pool].to_vec())
}

fn removed_keys(v: Vec<rserpool_core::handlespace::RemovedElement>) -> Vec<(Key, PoolElementInfo)> {
    v.into_iter()
        .map(|r| ((r.pool_handle.as_bytes().to_vec(), r.info.pe_id.0), r.info))
        .collect()
}

struct HsTest;

impl StateMachineTest for HsTest {
    type SystemUnderTest = Sut;
    type Reference = HsModel;

    fn init_test(_: &Model) -> Sut {
        Sut {
            hs: Handlespace::new(HandlespaceConfig {
                limits: LIMITS,
                ..HandlespaceConfig::default()
            }),
        }
    }

    fn apply(mut sut: Sut, m: &Model, op: Op) -> Sut {
        let hs = &mut sut.hs;
        match op {
            Op::Register { pool, info, assoc } => {
                let got = hs.register(&ph(pool), &info, assoc.map(AssocId));
                assert_eq!(Expect::Register(got), m.expect);
            }
            Op::Deregister { pool, pe } => {
                let got = hs.deregister(&ph(pool), PeIdentifier(pe));
                assert_eq!(
                    Expect::Removed(removed_keys(got.into_iter().collect())),
                    m.expect
                );
            }
            Op::SetTimer {
                pool,
                pe,
                kind,
                delay_ms,
            } => {
                // SetTimer does not move the model's clock: deadline = now + delay.
                let at = delay_ms.map(|d| Instant::from_millis(m.now + d));
                let got = hs.set_timer(&ph(pool), PeIdentifier(pe), kind, at);
                assert_eq!(Expect::Bool(got), m.expect);
            }
            Op::Advance { .. } => {
                let mut due = Vec::new();
                hs.expired(Instant::from_millis(m.now), &mut due);
                let got: Vec<(u64, Key, TimerKind)> = due
                    .iter()
                    .map(|d| {
                        (
                            d.deadline.as_millis(),
                            (d.pool_handle.as_bytes().to_vec(), d.pe_id.0),
                            d.kind,
                        )
                    })
                    .collect();
                assert_eq!(Expect::Due(got), m.expect);
                for d in &due {
                    if d.kind == TimerKind::Expiry {
                        assert!(hs.deregister(&d.pool_handle, d.pe_id).is_some());
                    }
                }
            }
            Op::Resolve { pool, n, inc, seed } => {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
                let mut out = Vec::new();
                let h = ph(pool);
                match hs.select_with(&h, n, inc, &mut rng, &mut out) {
                    Err(_) => assert_eq!(m.expect, Expect::UnknownPool),
                    Ok(policy) => {
                        let ids: Vec<u32> = out.iter().map(|p| p.0).collect();
                        match &m.expect {
                            Expect::SelectExact(want) => assert_eq!(&ids, want),
                            Expect::SelectAny { eligible, count } => {
                                assert_eq!(ids.len(), *count, "{ids:?} from {eligible:?}");
                                let mut d = ids.clone();
                                d.sort();
                                d.dedup();
                                assert_eq!(d.len(), ids.len(), "duplicates: {ids:?}");
                                assert!(
                                    ids.iter().all(|i| eligible.contains(i)),
                                    "{ids:?} not in {eligible:?}"
                                );
                            }
                            e => panic!("unexpected model answer {e:?}"),
                        }
                        // Overall policy: the first chosen PE's, else the lowest id's.
                        let mp = &m.pools[HANDLES[pool]];
                        let first = ids
                            .first()
                            .copied()
                            .unwrap_or_else(|| *mp.pes.keys().next().expect("pool not empty"));
                        assert_eq!(policy, mp.pes[&first].info.policy);
                    }
                }
            }
            Op::Rehome { from, to } => {
                let got = hs.rehome_owner(ServerId(from), ServerId(to));
                assert_eq!(Expect::Count(got), m.expect);
            }
            Op::SetHome { pool, pe, home } => {
                let got = hs.set_home(&ph(pool), PeIdentifier(pe), ServerId(home));
                assert_eq!(Expect::Bool(got), m.expect);
            }
            Op::RemoveAssoc { assoc } => {
                let mut out = Vec::new();
                hs.remove_by_assoc(AssocId(assoc), &mut out);
                assert_eq!(Expect::Removed(removed_keys(out)), m.expect);
            }
            Op::RemoveOwner { home } => {
                let mut out = Vec::new();
                hs.remove_owned_by(ServerId(home), &mut out);
                assert_eq!(Expect::Removed(removed_keys(out)), m.expect);
            }
            Op::Report { pool, pe } => {
                let got = hs.report_unreachable(&ph(pool), PeIdentifier(pe));
                assert_eq!(Expect::Reports(got), m.expect);
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        let hs = &sut.hs;
        let all = m.all();
        assert_eq!(hs.element_count(), all.len());
        assert_eq!(hs.pool_count(), m.pools.len());
        // Same PEs with the same attributes, in walk order.
        let walked: Vec<_> = hs.walk(None).collect();
        assert_eq!(walked.len(), all.len());
        for (e, ((h, id), pe)) in walked.iter().zip(all.iter()) {
            assert_eq!(
                (e.pool_handle().as_bytes(), e.pe_id().0),
                (h.as_slice(), *id)
            );
            assert_eq!(e.info(), pe.info);
            assert_eq!(e.assoc(), pe.assoc.map(AssocId));
            assert_eq!(e.expiry(), pe.expiry.map(Instant::from_millis));
            assert_eq!(
                e.keep_alive(),
                pe.ka.map(|(k, t)| (k, Instant::from_millis(t)))
            );
            assert_eq!(e.unreachable_reports(), pe.reports);
            if family(m.pools[h].ptype) == Family::Sorted {
                assert_eq!(e.degradation(), pe.deg);
            }
        }
        // Resuming a walk in the middle.
        if let Some(mid) = walked.get(walked.len() / 2) {
            let cur: WalkCursor = mid.cursor();
            let rest: Vec<Key> = hs
                .walk(Some(&cur))
                .map(|e| (e.pool_handle().as_bytes().to_vec(), e.pe_id().0))
                .collect();
            let want: Vec<Key> = all
                .iter()
                .skip(walked.len() / 2 + 1)
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(rest, want);
        }
        // Pools.
        for (h, p) in &m.pools {
            let pool = hs.pool(&PoolHandle::new(h.clone())).expect("pool exists");
            assert_eq!(pool.policy_type(), p.ptype);
            assert_eq!(pool.protocol(), p.proto);
            assert_eq!(pool.control_channel(), p.control);
            assert_eq!(pool.len(), p.pes.len());
            let ids: Vec<u32> = pool.elements().map(|e| e.pe_id().0).collect();
            assert_eq!(ids, p.pes.keys().copied().collect::<Vec<_>>());
        }
        // Checksums and owner walks.
        assert_eq!(hs.checksum(), model_checksum(all.iter().map(|(k, _)| k)));
        for home in 0..=5u32 {
            let owned: Vec<Key> = all
                .iter()
                .filter(|(_, pe)| pe.info.home_registrar.0 == home)
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(
                hs.owner_checksum(ServerId(home)),
                model_checksum(owned.iter())
            );
            assert_eq!(hs.owner_element_count(ServerId(home)), owned.len());
            let walked: Vec<Key> = hs
                .walk_owner(ServerId(home), None)
                .map(|e| (e.pool_handle().as_bytes().to_vec(), e.pe_id().0))
                .collect();
            assert_eq!(walked, owned);
            if let Some((h, id)) = owned.first() {
                let cur = WalkCursor {
                    pool_handle: PoolHandle::new(h.clone()),
                    pe_id: PeIdentifier(*id),
                };
                assert_eq!(
                    hs.walk_owner(ServerId(home), Some(&cur)).count(),
                    owned.len() - 1
                );
            }
        }
        // Association index.
        for a in 1..=3u64 {
            let got: Vec<Key> = hs
                .assoc_elements(AssocId(a))
                .iter()
                .map(|e| (e.pool_handle().as_bytes().to_vec(), e.pe_id().0))
                .collect();
            let want: Vec<Key> = all
                .iter()
                .filter(|(_, pe)| pe.assoc == Some(a))
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(got, want);
        }
        // Timer index.
        let next = all
            .iter()
            .flat_map(|(_, pe)| pe.expiry.into_iter().chain(pe.ka.map(|(_, t)| t)))
            .min();
        assert_eq!(hs.next_deadline(), next.map(Instant::from_millis));
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 20_000,
        .. ProptestConfig::default()
    })]

    #[test]
    fn handlespace_matches_model(sequential 1..80 => HsTest);
}

/// Regression: a WRR PE re-registered from weight 0 joins half a stride after the
/// virtual time (it must not jump ahead of the PE that is already due).
#[test]
fn wrr_weight_zero_to_one_regression() {
    let mk = |pe: u32, w: u32| Op::Register {
        pool: 0,
        info: Box::new(PoolElementInfo {
            pe_id: PeIdentifier(pe),
            home_registrar: ServerId(1),
            registration_life: 1,
            policy: Policy::WeightedRoundRobin { weight: w },
            user_transport: TransportParameter::sctp(1, 0, [addr((pe & 0xff) * 10)]),
            asap_transport: Some(TransportParameter::sctp(3863, 0, [addr(200 + (pe & 0xff))])),
        }),
        assoc: None,
    };
    let ops = vec![
        mk(1, 2),
        mk(0xffff_fff0, 0),
        mk(0xffff_fff0, 1),
        Op::Resolve {
            pool: 0,
            n: 1,
            inc: 0,
            seed: 0,
        },
    ];
    let mut m = Model {
        types: [1, 1, 1],
        pools: BTreeMap::new(),
        now: 0,
        expect: Expect::Nothing,
    };
    let mut sut = HsTest::init_test(&m);
    for op in ops {
        m = HsModel::apply(m, &op);
        sut = HsTest::apply(sut, &m, op);
        HsTest::check_invariants(&sut, &m);
    }
    assert_eq!(m.expect, Expect::SelectExact(vec![1]));
}
