//! Unit tests of the handlespace: registration, consistency, limits, checksums, indices,
//! timers and every policy.

use super::*;
use core::net::{IpAddr, Ipv4Addr};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_proto::policy::code;
use rserpool_proto::transport::{TRANSPORT_USE_DATA_PLUS_CONTROL, TransportProtocol};

const HOME_A: ServerId = ServerId(0x0a);
const HOME_B: ServerId = ServerId(0x0b);
const MAX: u32 = u32::MAX;

fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn sctp(port: u16) -> TransportParameter {
    TransportParameter::sctp(port, 0, [addr(u32::from(port))])
}

fn pe(id: u32, policy: Policy) -> PoolElementInfo {
    PoolElementInfo {
        pe_id: PeIdentifier(id),
        home_registrar: HOME_A,
        registration_life: 30_000,
        policy,
        user_transport: sctp(1000 + (id & 0xfff) as u16),
        asap_transport: Some(sctp(2000 + (id & 0xfff) as u16)),
    }
}

fn ph(s: &str) -> PoolHandle {
    PoolHandle::from(s)
}

fn rng() -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(7)
}

fn sel(hs: &mut Handlespace, h: &PoolHandle, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    hs.select(h, n, &mut rng(), &mut out).expect("pool exists");
    out.iter().map(|p| p.0).collect()
}

fn sel_inc(hs: &mut Handlespace, h: &PoolHandle, n: usize, inc: u32) -> Vec<u32> {
    let mut out = Vec::new();
    hs.select_with(h, n, inc, &mut rng(), &mut out)
        .expect("pool exists");
    out.iter().map(|p| p.0).collect()
}

fn pool_with(policies: &[(u32, Policy)]) -> (Handlespace, PoolHandle) {
    let mut hs = Handlespace::default();
    let h = ph("pool");
    for &(id, p) in policies {
        assert_eq!(hs.register(&h, &pe(id, p), None), Ok(Registered::Added));
    }
    (hs, h)
}

// ---------------------------------------------------------------------------------------
// registration basics

#[test]
fn register_update_deregister_and_pool_lifecycle() {
    let mut hs = Handlespace::default();
    let h = ph("EchoPool");
    let info = pe(1, Policy::RoundRobin);
    assert_eq!(
        hs.register(&h, &info, Some(AssocId(9))),
        Ok(Registered::Added)
    );
    assert_eq!(hs.element_count(), 1);
    assert_eq!(hs.pool_count(), 1);
    let e = hs.get(&h, PeIdentifier(1)).expect("registered");
    assert_eq!(e.info(), info);
    assert_eq!(e.assoc(), Some(AssocId(9)));
    assert_eq!(e.pool_handle(), &h);

    let mut info2 = info.clone();
    info2.registration_life = 5;
    info2.user_transport = TransportParameter::sctp(7, 0, [addr(1), addr(2), addr(3)]);
    info2.asap_transport = None;
    assert_eq!(hs.register(&h, &info2, None), Ok(Registered::Updated));
    let e = hs.get(&h, PeIdentifier(1)).expect("still there");
    assert_eq!(e.info(), info2);
    assert_eq!(e.assoc(), None);
    assert_eq!(hs.element_count(), 1);

    let removed = hs.deregister(&h, PeIdentifier(1)).expect("removed");
    assert_eq!(removed.info, info2);
    assert_eq!(removed.pool_handle, h);
    assert!(hs.is_empty());
    assert_eq!(hs.pool_count(), 0);
    assert!(hs.pool(&h).is_none());
    assert!(hs.deregister(&h, PeIdentifier(1)).is_none());

    // The pool can now come back with another policy and protocol.
    let mut tcp = pe(2, Policy::LeastUsed { load: 3 });
    tcp.user_transport = TransportParameter::tcp(80, 0, [addr(5)]);
    assert_eq!(hs.register(&h, &tcp, None), Ok(Registered::Added));
    let pool = hs.pool(&h).expect("recreated");
    assert_eq!(pool.policy_type(), code::LEAST_USED);
    assert_eq!(pool.protocol(), TransportProtocol::Tcp);
    assert_eq!(pool.len(), 1);
}

#[test]
fn same_pe_id_in_two_pools_is_two_pes() {
    let mut hs = Handlespace::default();
    let (a, b) = (ph("a"), ph("b"));
    hs.register(&a, &pe(1, Policy::RoundRobin), None)
        .expect("ok");
    hs.register(&b, &pe(1, Policy::Random), None).expect("ok");
    assert_eq!(hs.element_count(), 2);
    hs.deregister(&a, PeIdentifier(1));
    assert!(hs.contains(&b, PeIdentifier(1)));
    assert!(!hs.contains(&a, PeIdentifier(1)));
}

#[test]
fn opaque_and_dccp_transports_round_trip() {
    let mut hs = Handlespace::default();
    let h = ph("op");
    let mut info = pe(4, Policy::RoundRobin);
    info.user_transport = TransportParameter::with(TransportProtocol::Opaque, 0, 0, []);
    info.user_transport.opaque = bytes::Bytes::from_static(b"\x01\x02\x03");
    let mut dccp = TransportParameter::with(TransportProtocol::Dccp, 33, 0, [addr(3)]);
    dccp.dccp_service_code = 0xabcd;
    info.asap_transport = Some(dccp);
    hs.register(&h, &info, None).expect("ok");
    assert_eq!(
        hs.get(&h, PeIdentifier(4)).map(|e| e.info()),
        Some(info.clone())
    );
    let mut info2 = info.clone();
    info2.asap_transport = Some(sctp(5));
    hs.register(&h, &info2, None).expect("ok");
    assert_eq!(hs.get(&h, PeIdentifier(4)).map(|e| e.info()), Some(info2));
}

// ---------------------------------------------------------------------------------------
// consistency

#[test]
fn pool_consistency_rules() {
    let mut hs = Handlespace::default();
    let h = ph("pool");
    let mut first = pe(1, Policy::WeightedRandom { weight: 1 });
    first.user_transport.transport_use = TRANSPORT_USE_DATA_PLUS_CONTROL;
    hs.register(&h, &first, None).expect("ok");

    // Other policy values are fine, another type is not (0x5).
    let mut ok = first.clone();
    ok.pe_id = PeIdentifier(2);
    ok.policy = Policy::WeightedRandom { weight: 9 };
    assert_eq!(hs.register(&h, &ok, None), Ok(Registered::Added));

    let mut bad = ok.clone();
    bad.pe_id = PeIdentifier(3);
    bad.policy = Policy::Random;
    let e = hs.register(&h, &bad, None).expect_err("policy mismatch");
    assert_eq!(
        e,
        RegistrationError::InconsistentPolicy {
            pool_policy_type: code::WEIGHTED_RANDOM
        }
    );
    assert_eq!(e.cause_code(), 0x5);

    let mut bad = ok.clone();
    bad.pe_id = PeIdentifier(3);
    bad.user_transport = TransportParameter::tcp(80, 1, [addr(1)]);
    let e = hs.register(&h, &bad, None).expect_err("transport mismatch");
    assert_eq!(
        e,
        RegistrationError::InconsistentTransport {
            pool_protocol: TransportProtocol::Sctp
        }
    );
    assert_eq!(e.cause_code(), 0x7);

    let mut bad = ok.clone();
    bad.pe_id = PeIdentifier(3);
    bad.user_transport.transport_use = 0;
    let e = hs.register(&h, &bad, None).expect_err("control mismatch");
    assert_eq!(
        e,
        RegistrationError::InconsistentDataControl {
            pool_control_channel: true
        }
    );
    assert_eq!(e.cause_code(), 0x8);

    // Re-registration is checked too, and a refused one changes nothing.
    let mut re = first.clone();
    re.policy = Policy::RoundRobin;
    re.registration_life = 1;
    assert!(hs.register(&h, &re, None).is_err());
    assert_eq!(hs.get(&h, PeIdentifier(1)).map(|e| e.info()), Some(first));
    assert_eq!(hs.element_count(), 2);
    assert!(!hs.contains(&h, PeIdentifier(3)));
}

// ---------------------------------------------------------------------------------------
// limits

#[test]
fn value_checks_map_to_invalid_values() {
    let mut hs = Handlespace::default();
    let ok = pe(1, Policy::RoundRobin);
    let long = PoolHandle::new(vec![b'x'; 33]);
    let e = hs.register(&long, &ok, None).expect_err("too long");
    assert_eq!(
        e,
        RegistrationError::InvalidValue(InvalidValue::PoolHandleLength { len: 33, max: 32 })
    );
    assert_eq!(e.cause_code(), 0x3);
    assert!(
        hs.register(&PoolHandle::new(vec![b'x'; 32]), &ok, None)
            .is_ok()
    );
    assert!(matches!(
        hs.register(&PoolHandle::default(), &ok, None),
        Err(RegistrationError::InvalidValue(
            InvalidValue::PoolHandleLength { len: 0, .. }
        ))
    ));
    let h = ph("p");
    let mut z = ok.clone();
    z.pe_id = PeIdentifier(0);
    assert_eq!(
        hs.register(&h, &z, None),
        Err(RegistrationError::InvalidValue(InvalidValue::PeIdentifier))
    );
    let mut no_addr = ok.clone();
    no_addr.user_transport.addresses.clear();
    assert_eq!(
        hs.register(&h, &no_addr, None),
        Err(RegistrationError::InvalidValue(InvalidValue::NoAddress(
            TransportRole::User
        )))
    );
    let mut many = ok.clone();
    many.asap_transport = Some(TransportParameter::sctp(1, 0, (0..65).map(addr)));
    assert_eq!(
        hs.register(&h, &many, None),
        Err(RegistrationError::InvalidValue(
            InvalidValue::TooManyAddresses {
                role: TransportRole::Asap,
                count: 65,
                max: 64
            }
        ))
    );
    let mut port0 = ok.clone();
    port0.user_transport.port = 0;
    assert_eq!(
        hs.register(&h, &port0, None),
        Err(RegistrationError::InvalidValue(InvalidValue::PortZero(
            TransportRole::User
        )))
    );
    let mut max_ok = ok.clone();
    max_ok.user_transport = TransportParameter::sctp(1, 0, (0..64).map(addr));
    assert!(hs.register(&h, &max_ok, None).is_ok());
    assert_eq!(
        hs.get(&h, PeIdentifier(1))
            .map(|e| e.user_addresses().len()),
        Some(64)
    );
}

#[test]
fn resource_limits_map_to_lack_of_resources() {
    let limits = Limits {
        max_pools: 2,
        max_elements_per_pool: 2,
        max_elements: 3,
        ..Limits::default()
    };
    let mut hs = Handlespace::new(HandlespaceConfig {
        limits,
        ..HandlespaceConfig::default()
    });
    let (a, b, c) = (ph("a"), ph("b"), ph("c"));
    hs.register(&a, &pe(1, Policy::RoundRobin), None)
        .expect("ok");
    hs.register(&a, &pe(2, Policy::RoundRobin), None)
        .expect("ok");
    let e = hs
        .register(&a, &pe(3, Policy::RoundRobin), None)
        .expect_err("per pool");
    assert_eq!(
        e,
        RegistrationError::LackOfResources(ResourceLimit::ElementsPerPool)
    );
    assert_eq!(e.cause_code(), 0x6);
    hs.register(&b, &pe(1, Policy::RoundRobin), None)
        .expect("ok");
    assert_eq!(
        hs.register(&b, &pe(2, Policy::RoundRobin), None),
        Err(RegistrationError::LackOfResources(ResourceLimit::Elements))
    );
    hs.deregister(&b, PeIdentifier(1));
    hs.register(&b, &pe(1, Policy::RoundRobin), None)
        .expect("ok");
    hs.deregister(&a, PeIdentifier(2));
    assert_eq!(
        hs.register(&c, &pe(1, Policy::RoundRobin), None),
        Err(RegistrationError::LackOfResources(ResourceLimit::Pools))
    );
    // Re-registrations are never refused for resources.
    let mut re = pe(1, Policy::RoundRobin);
    re.registration_life = 1;
    assert_eq!(hs.register(&a, &re, None), Ok(Registered::Updated));
    assert_eq!(hs.element_count(), 2);
}

// ---------------------------------------------------------------------------------------
// checksums

#[test]
fn checksums_follow_rsplib_vectors_incrementally() {
    let mut hs = Handlespace::default();
    assert_eq!(hs.checksum(), 0xffff);
    assert_eq!(hs.owner_checksum(HOME_A), 0xffff);
    let echo = ph("EchoPool");
    let calc = ph("CalcAppPool");
    let mut e = pe(0x1f, Policy::RoundRobin);
    e.home_registrar = HOME_A;
    hs.register(&echo, &e, None).expect("ok");
    assert_eq!(hs.owner_checksum(HOME_A), 0x9232);
    for id in [0x15, 0x16] {
        let mut c = pe(id, Policy::RoundRobin);
        c.home_registrar = HOME_B;
        hs.register(&calc, &c, None).expect("ok");
    }
    assert_eq!(hs.owner_checksum(HOME_B), 0x85ea);
    assert_eq!(hs.owner_checksum(HOME_A), 0x9232);
    let all = checksum::checksum_of([
        (&echo, PeIdentifier(0x1f)),
        (&calc, PeIdentifier(0x15)),
        (&calc, PeIdentifier(0x16)),
    ]);
    assert_eq!(hs.checksum(), all);

    hs.deregister(&calc, PeIdentifier(0x16));
    assert_eq!(hs.owner_checksum(HOME_B), 0xc2f5);
    // Takeover: B's PEs move to A.
    assert_eq!(hs.rehome_owner(HOME_B, HOME_A), 1);
    assert_eq!(hs.owner_checksum(HOME_B), 0xffff);
    assert_eq!(
        hs.owner_checksum(HOME_A),
        checksum::checksum_of([(&echo, PeIdentifier(0x1f)), (&calc, PeIdentifier(0x15))])
    );
    assert!(hs.set_home(&echo, PeIdentifier(0x1f), HOME_B));
    assert_eq!(hs.owner_checksum(HOME_B), 0x9232);
    assert_eq!(hs.owner_checksum(HOME_A), 0xc2f5);
    // Re-registration with another home moves the PE's contribution.
    let mut c = pe(0x15, Policy::RoundRobin);
    c.home_registrar = HOME_B;
    hs.register(&calc, &c, None).expect("ok");
    assert_eq!(hs.owner_checksum(HOME_A), 0xffff);
    assert_eq!(hs.owner_element_count(HOME_B), 2);
    hs.deregister(&calc, PeIdentifier(0x15));
    hs.deregister(&echo, PeIdentifier(0x1f));
    assert_eq!(hs.checksum(), 0xffff);
    assert_eq!(hs.owners().count(), 0);
}

// ---------------------------------------------------------------------------------------
// walks

fn ids<'a>(it: impl Iterator<Item = ElementRef<'a>>) -> Vec<(String, u32)> {
    it.map(|e| {
        (
            String::from_utf8_lossy(e.pool_handle().as_bytes()).into_owned(),
            e.pe_id().0,
        )
    })
    .collect()
}

#[test]
fn walks_are_ordered_and_resumable() {
    let mut hs = Handlespace::default();
    let spec = [
        ("b", 5, HOME_A),
        ("a", 9, HOME_B),
        ("b", 2, HOME_B),
        ("a", 3, HOME_A),
        ("c", 1, HOME_A),
        ("b", 7, HOME_A),
        ("a", 4, HOME_B),
    ];
    for (h, id, home) in spec {
        let mut i = pe(id, Policy::RoundRobin);
        i.home_registrar = home;
        hs.register(&ph(h), &i, None).expect("ok");
    }
    let all = ids(hs.walk(None));
    let s = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
        v.iter().map(|(h, i)| (h.to_string(), *i)).collect()
    };
    assert_eq!(
        all,
        s(&[
            ("a", 3),
            ("a", 4),
            ("a", 9),
            ("b", 2),
            ("b", 5),
            ("b", 7),
            ("c", 1)
        ])
    );
    let cur = WalkCursor {
        pool_handle: ph("b"),
        pe_id: PeIdentifier(2),
    };
    assert_eq!(ids(hs.walk(Some(&cur))), s(&[("b", 5), ("b", 7), ("c", 1)]));
    // A cursor on a vanished PE / pool still resumes in order.
    let gone = WalkCursor {
        pool_handle: ph("aa"),
        pe_id: PeIdentifier(0),
    };
    assert_eq!(
        ids(hs.walk(Some(&gone))).first(),
        Some(&("b".to_string(), 2))
    );
    assert_eq!(
        ids(hs.walk_owner(HOME_A, None)),
        s(&[("a", 3), ("b", 5), ("b", 7), ("c", 1)])
    );
    assert_eq!(
        ids(hs.walk_owner(HOME_B, None)),
        s(&[("a", 4), ("a", 9), ("b", 2)])
    );
    let cur = WalkCursor {
        pool_handle: ph("b"),
        pe_id: PeIdentifier(5),
    };
    assert_eq!(
        ids(hs.walk_owner(HOME_A, Some(&cur))),
        s(&[("b", 7), ("c", 1)])
    );
    assert_eq!(ids(hs.walk_owner(ServerId(99), None)), vec![]);
    let pool_b = hs.pool(&ph("b")).expect("pool b");
    assert_eq!(
        pool_b.elements().map(|e| e.pe_id().0).collect::<Vec<_>>(),
        vec![2, 5, 7]
    );
    // Owners are listed in id order with counts.
    assert_eq!(
        hs.owners().collect::<Vec<_>>(),
        vec![(HOME_A, 4), (HOME_B, 3)]
    );
    let mut removed = Vec::new();
    assert_eq!(hs.remove_owned_by(HOME_B, &mut removed), 3);
    assert_eq!(
        removed.iter().map(|r| r.info.pe_id.0).collect::<Vec<_>>(),
        vec![4, 9, 2]
    );
    assert_eq!(hs.element_count(), 4);
    assert_eq!(hs.owner_checksum(HOME_B), 0xffff);
}

// ---------------------------------------------------------------------------------------
// associations

#[test]
fn remove_by_assoc_drops_exactly_its_pes() {
    let mut hs = Handlespace::default();
    let (a, b) = (ph("a"), ph("b"));
    hs.register(&b, &pe(2, Policy::RoundRobin), Some(AssocId(1)))
        .expect("ok");
    hs.register(&a, &pe(7, Policy::RoundRobin), Some(AssocId(1)))
        .expect("ok");
    hs.register(&a, &pe(3, Policy::RoundRobin), Some(AssocId(1)))
        .expect("ok");
    hs.register(&a, &pe(4, Policy::RoundRobin), Some(AssocId(2)))
        .expect("ok");
    hs.register(&a, &pe(5, Policy::RoundRobin), None)
        .expect("ok");
    // Re-binding: PE 3 moves to association 2; PE 7 is re-registered via ENRP (unbound).
    hs.register(&a, &pe(3, Policy::RoundRobin), Some(AssocId(2)))
        .expect("ok");
    hs.register(&a, &pe(7, Policy::RoundRobin), None)
        .expect("ok");
    assert_eq!(
        hs.assoc_elements(AssocId(2))
            .iter()
            .map(|e| e.pe_id().0)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    let mut out = Vec::new();
    assert_eq!(hs.remove_by_assoc(AssocId(1), &mut out), 1);
    assert_eq!(out[0].info.pe_id, PeIdentifier(2));
    assert_eq!(out[0].assoc, Some(AssocId(1)));
    out.clear();
    assert_eq!(hs.remove_by_assoc(AssocId(2), &mut out), 2);
    assert_eq!(
        out.iter().map(|r| r.info.pe_id.0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(hs.remove_by_assoc(AssocId(2), &mut out), 2 - 2);
    assert_eq!(hs.element_count(), 2);
    assert!(hs.contains(&a, PeIdentifier(7)) && hs.contains(&a, PeIdentifier(5)));
}

#[derive(Clone, Debug)]
enum AssocOp {
    Register(u32, Option<u64>),
    Deregister(u32),
    RemoveByAssoc(u64),
}

/// Association ids from a small set: slot indexes 0-3 (in the low 3 bits) at a few
/// generations, so that associations share places, and machine-chosen ones.
fn assoc_id() -> impl proptest::strategy::Strategy<Value = u64> {
    use proptest::prelude::*;
    (0u64..4, 0u64..3, any::<bool>())
        .prop_map(|(slot, generation, machine)| u64::from(machine) << 63 | generation << 3 | slot)
}

fn assoc_op() -> impl proptest::strategy::Strategy<Value = AssocOp> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (1u32..10, proptest::option::of(assoc_id())).prop_map(|(p, a)| AssocOp::Register(p, a)),
        2 => (1u32..10).prop_map(AssocOp::Deregister),
        1 => assoc_id().prop_map(AssocOp::RemoveByAssoc),
    ]
}

proptest::proptest! {
    /// The association index keeps the same lists whether association ids hold a slot
    /// index (heads in the paged vector, or hashed where another association holds the
    /// place) or not (all hashed).
    #[test]
    fn association_lists_do_not_depend_on_the_id_layout(
        ops in proptest::collection::vec(assoc_op(), 0..120)
    ) {
        let mut hashed = Handlespace::default();
        let mut dense = Handlespace::default();
        dense.set_assoc_id_slot_bits(3);
        let h = ph("pool");
        let lists = |hs: &Handlespace| -> Vec<Vec<u32>> {
            (0u64..4)
                .flat_map(|slot| (0u64..3).map(move |g| g << 3 | slot))
                .flat_map(|a| [a, 1 << 63 | a])
                .map(|a| hs.assoc_elements(AssocId(a)).iter().map(|e| e.pe_id().0).collect())
                .collect()
        };
        for op in ops {
            for hs in [&mut hashed, &mut dense] {
                match &op {
                    AssocOp::Register(p, a) => {
                        hs.register(&h, &pe(*p, Policy::RoundRobin), a.map(AssocId))
                            .expect("ok");
                    }
                    AssocOp::Deregister(p) => {
                        hs.deregister(&h, PeIdentifier(*p));
                    }
                    AssocOp::RemoveByAssoc(a) => {
                        let mut out = Vec::new();
                        hs.remove_by_assoc(AssocId(*a), &mut out);
                        proptest::prop_assert!(out.iter().all(|r| r.assoc == Some(AssocId(*a))));
                    }
                }
            }
            proptest::prop_assert_eq!(lists(&hashed), lists(&dense));
            proptest::prop_assert_eq!(hashed.element_count(), dense.element_count());
        }
    }
}

// ---------------------------------------------------------------------------------------
// timers and reports

#[test]
fn timers_drain_in_order() {
    let mut hs = Handlespace::default();
    let (a, b) = (ph("a"), ph("b"));
    for id in 1..=3 {
        hs.register(&a, &pe(id, Policy::RoundRobin), None)
            .expect("ok");
        hs.register(&b, &pe(id, Policy::RoundRobin), None)
            .expect("ok");
    }
    let t = Instant::from_millis;
    assert_eq!(hs.next_deadline(), None);
    assert!(hs.set_timer(&b, PeIdentifier(1), TimerKind::Expiry, Some(t(100))));
    assert!(hs.set_timer(&a, PeIdentifier(2), TimerKind::Expiry, Some(t(100))));
    assert!(hs.set_timer(
        &a,
        PeIdentifier(2),
        TimerKind::KeepAliveTransmission,
        Some(t(50))
    ));
    assert!(hs.set_timer(
        &a,
        PeIdentifier(3),
        TimerKind::KeepAliveTimeout,
        Some(t(70))
    ));
    assert!(hs.set_timer(&a, PeIdentifier(1), TimerKind::Expiry, Some(t(300))));
    assert!(!hs.set_timer(&a, PeIdentifier(9), TimerKind::Expiry, Some(t(1))));
    assert_eq!(hs.next_deadline(), Some(t(50)));
    // Replace the keep-alive of a/3 and clear it again; clear a/1's expiry.
    hs.set_timer(
        &a,
        PeIdentifier(3),
        TimerKind::KeepAliveTransmission,
        Some(t(10)),
    );
    hs.set_timer(&a, PeIdentifier(3), TimerKind::KeepAliveTimeout, None);
    hs.set_timer(&a, PeIdentifier(1), TimerKind::Expiry, None);
    assert_eq!(
        hs.get(&a, PeIdentifier(2)).and_then(|e| e.keep_alive()),
        Some((TimerKind::KeepAliveTransmission, t(50)))
    );
    let mut out = Vec::new();
    assert_eq!(hs.expired(t(49), &mut out), 0);
    assert_eq!(hs.expired(t(100), &mut out), 3);
    let got: Vec<_> = out
        .iter()
        .map(|d| (d.deadline, d.pool_handle.clone(), d.pe_id.0, d.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            (t(50), a.clone(), 2, TimerKind::KeepAliveTransmission),
            (t(100), a.clone(), 2, TimerKind::Expiry),
            (t(100), b.clone(), 1, TimerKind::Expiry),
        ]
    );
    assert_eq!(hs.next_deadline(), None);
    assert_eq!(hs.get(&a, PeIdentifier(2)).and_then(|e| e.expiry()), None);
    // Removing a PE removes its timer.
    hs.set_timer(&b, PeIdentifier(3), TimerKind::Expiry, Some(t(500)));
    hs.deregister(&b, PeIdentifier(3));
    assert_eq!(hs.next_deadline(), None);
}

#[test]
fn unreachable_reports_survive_reregistration() {
    let mut hs = Handlespace::default();
    let h = ph("p");
    hs.register(&h, &pe(1, Policy::RoundRobin), None)
        .expect("ok");
    assert_eq!(hs.report_unreachable(&h, PeIdentifier(1)), Some(1));
    assert_eq!(hs.report_unreachable(&h, PeIdentifier(1)), Some(2));
    hs.register(&h, &pe(1, Policy::RoundRobin), None)
        .expect("ok");
    assert_eq!(hs.report_unreachable(&h, PeIdentifier(1)), Some(3));
    assert_eq!(hs.report_unreachable(&h, PeIdentifier(2)), None);
    hs.deregister(&h, PeIdentifier(1));
    hs.register(&h, &pe(1, Policy::RoundRobin), None)
        .expect("ok");
    assert_eq!(
        hs.get(&h, PeIdentifier(1)).map(|e| e.unreachable_reports()),
        Some(0)
    );
}

// ---------------------------------------------------------------------------------------
// policies

#[test]
fn select_unknown_pool_and_overall_policy() {
    let (mut hs, h) = pool_with(&[
        (1, Policy::LeastUsed { load: 7 }),
        (2, Policy::LeastUsed { load: 3 }),
    ]);
    let mut out = vec![PeIdentifier(99)];
    assert_eq!(
        hs.select(&ph("nope"), 3, &mut rng(), &mut out),
        Err(UnknownPool)
    );
    let p = hs.select(&h, 3, &mut rng(), &mut out).expect("ok");
    assert_eq!(out, vec![PeIdentifier(2), PeIdentifier(1)]);
    assert_eq!(p, Policy::LeastUsed { load: 3 });
    assert_eq!(
        hs.select(&h, 0, &mut rng(), &mut out),
        Ok(Policy::LeastUsed { load: 7 })
    );
    assert!(out.is_empty());
    let s = hs.select_elements(&h, 1, 0, &mut rng()).expect("ok");
    assert_eq!(s.len(), 1);
    assert_eq!(
        s.elements().map(|e| e.pe_id().0).collect::<Vec<_>>(),
        vec![2]
    );
}

#[test]
fn round_robin_rotates_head_by_max_increment() {
    let (mut hs, h) = pool_with(&[
        (1, Policy::RoundRobin),
        (2, Policy::RoundRobin),
        (3, Policy::RoundRobin),
    ]);
    let seq: Vec<u32> = (0..6).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    assert_eq!(seq, vec![1, 2, 3, 1, 2, 3]);
    // Two per answer, registrar default: head advances by one.
    assert_eq!(sel(&mut hs, &h, 2), vec![1, 2]);
    assert_eq!(sel(&mut hs, &h, 2), vec![2, 3]);
    assert_eq!(sel(&mut hs, &h, 2), vec![3, 1]);
    // PU-cache semantics: every returned PE moves back.
    assert_eq!(sel_inc(&mut hs, &h, 2, u32::MAX), vec![1, 2]);
    assert_eq!(sel_inc(&mut hs, &h, 2, u32::MAX), vec![3, 1]);
    assert_eq!(sel(&mut hs, &h, 10), vec![2, 3, 1]);
    // Removal keeps a valid ring.
    hs.deregister(&h, PeIdentifier(3));
    let seq: Vec<u32> = (0..4).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    let mut sorted = seq.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 1, 2, 2]);
    assert_ne!(seq[0], seq[1]);
}

#[test]
fn weighted_round_robin_interleaves_and_skips_weight_zero() {
    let (mut hs, h) = pool_with(&[
        (1, Policy::WeightedRoundRobin { weight: 3 }),
        (2, Policy::WeightedRoundRobin { weight: 1 }),
        (3, Policy::WeightedRoundRobin { weight: 0 }),
    ]);
    let seq: Vec<u32> = (0..12).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    assert_eq!(seq.iter().filter(|&&x| x == 1).count(), 9);
    assert_eq!(seq.iter().filter(|&&x| x == 2).count(), 3);
    // Evenly spread: PE 2 appears once in every window of four.
    for w in seq.chunks(4) {
        assert_eq!(w.iter().filter(|&&x| x == 2).count(), 1, "{seq:?}");
    }
    // Weight 0 never selected, even when asking for everything.
    assert_eq!(sel(&mut hs, &h, 5).len(), 2);
    // Weight 0 -> 3 joins at the current virtual time and gets its share.
    let mut w = pe(3, Policy::WeightedRoundRobin { weight: 3 });
    w.home_registrar = HOME_A;
    hs.register(&h, &w, None).expect("ok");
    let seq: Vec<u32> = (0..70).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    let c3 = seq.iter().filter(|&&x| x == 3).count();
    assert!((29..=31).contains(&c3), "{c3}");
}

#[test]
fn weighted_round_robin_renormalises_passes() {
    let (mut hs, h) = pool_with(&[
        (1, Policy::WeightedRoundRobin { weight: 1 }),
        (2, Policy::WeightedRoundRobin { weight: 2 }),
    ]);
    hs.debug_force_wrr_pass(&h, weighted_round_robin::PASS_LIMIT - (1 << 33));
    let seq: Vec<u32> = (0..30).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    assert_eq!(seq.iter().filter(|&&x| x == 2).count(), 20);
    let (k1, _) = hs.debug_sorted_entry(&h, PeIdentifier(1)).expect("sorted");
    assert!(k1 < (1 << 40), "renormalised: {k1}");
}

use policy::weighted_round_robin;

#[test]
fn random_returns_distinct_members() {
    let (mut hs, h) = pool_with(&(1..=5).map(|i| (i, Policy::Random)).collect::<Vec<_>>());
    let mut r = rng();
    let mut out = Vec::new();
    let mut seen = [0u32; 6];
    for _ in 0..500 {
        hs.select(&h, 3, &mut r, &mut out).expect("ok");
        let mut s: Vec<u32> = out.iter().map(|p| p.0).collect();
        for &x in &s {
            seen[x as usize] += 1;
        }
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 3);
    }
    assert!(
        seen[1..].iter().all(|&c| (200..=400).contains(&c)),
        "{seen:?}"
    );
    hs.select(&h, 9, &mut r, &mut out).expect("ok");
    assert_eq!(out.len(), 5);
}

#[test]
fn weighted_random_ignores_weight_zero() {
    let (mut hs, h) = pool_with(&[
        (1, Policy::WeightedRandom { weight: 0 }),
        (2, Policy::WeightedRandom { weight: 5 }),
    ]);
    let mut r = rng();
    let mut out = Vec::new();
    for _ in 0..50 {
        hs.select(&h, 2, &mut r, &mut out).expect("ok");
        assert_eq!(out, vec![PeIdentifier(2)]);
    }
    hs.register(&h, &pe(2, Policy::WeightedRandom { weight: 0 }), None)
        .expect("ok");
    assert_eq!(hs.debug_weighted_total(&h), Some(0));
    let p = hs.select(&h, 2, &mut r, &mut out).expect("ok");
    assert!(out.is_empty());
    assert_eq!(p, Policy::WeightedRandom { weight: 0 });
}

#[test]
fn priority_prefers_highest_and_rotates_equals() {
    let (mut hs, h) = pool_with(&[
        (1, Policy::Priority { priority: 5 }),
        (2, Policy::Priority { priority: 9 }),
        (3, Policy::Priority { priority: 9 }),
        (4, Policy::Priority { priority: 1 }),
    ]);
    // Enough selections to renumber the sequence numbers several times.
    let seq: Vec<u32> = (0..40).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    for pair in seq.chunks(2) {
        assert_eq!(pair, [2, 3], "{seq:?}");
    }
    assert_eq!(sel(&mut hs, &h, 4), vec![2, 3, 1, 4]);
    let (_, s) = hs.debug_sorted_entry(&h, PeIdentifier(4)).expect("sorted");
    assert!(s < 100, "sequence numbers were renumbered: {s}");
}

#[test]
fn least_used_sorts_by_load_and_rotates_equals() {
    let (mut hs, h) = pool_with(&[
        (1, Policy::LeastUsed { load: 50 }),
        (2, Policy::LeastUsed { load: 10 }),
        (3, Policy::LeastUsed { load: 10 }),
        (4, Policy::LeastUsed { load: 20 }),
    ]);
    assert_eq!(sel(&mut hs, &h, 4), vec![2, 3, 4, 1]);
    assert_eq!(sel(&mut hs, &h, 4), vec![3, 2, 4, 1]);
    assert_eq!(sel(&mut hs, &h, 1), vec![2]);
    // Load update by re-registration.
    hs.register(&h, &pe(1, Policy::LeastUsed { load: 0 }), None)
        .expect("ok");
    assert_eq!(sel(&mut hs, &h, 2), vec![1, 3]);
}

#[test]
fn least_used_degradation_rfc_semantics() {
    // policies.md §4.6 example, RFC column.
    let (mut hs, h) = pool_with(&[
        (
            1,
            Policy::LeastUsedDegradation {
                load: 10,
                degradation: 5,
            },
        ),
        (
            2,
            Policy::LeastUsedDegradation {
                load: 12,
                degradation: 5,
            },
        ),
    ]);
    let deg = |hs: &Handlespace, id| hs.get(&h, PeIdentifier(id)).map(|e| e.degradation());
    assert_eq!(deg(&hs, 1), Some(0), "starts at 0 (RSPLIB: 5)");
    let seq: Vec<u32> = (0..4).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    assert_eq!(seq, vec![1, 2, 1, 2]);
    assert_eq!(deg(&hs, 1), Some(10), "+1 x per selection (RSPLIB: +2 x)");
    // Re-registration resets degradation even with unchanged values.
    hs.register(
        &h,
        &pe(
            1,
            Policy::LeastUsedDegradation {
                load: 10,
                degradation: 5,
            },
        ),
        None,
    )
    .expect("ok");
    assert_eq!(deg(&hs, 1), Some(0));
    // Only the first `max increment` PEs of an answer degrade.
    assert_eq!(sel(&mut hs, &h, 2), vec![1, 2]);
    assert_eq!((deg(&hs, 1), deg(&hs, 2)), (Some(5), Some(10)));
    sel_inc(&mut hs, &h, 2, u32::MAX);
    assert_eq!((deg(&hs, 1), deg(&hs, 2)), (Some(10), Some(15)));
}

#[test]
fn priority_least_used_uses_load_plus_degradation() {
    // RFC 5356 §5.3 example: A 50 % + 10 %, B 50 % + 50 % => A.
    let pct = |p: u64| (p * u64::from(MAX) / 100) as u32;
    let (mut hs, h) = pool_with(&[
        (
            1,
            Policy::PriorityLeastUsed {
                load: pct(50),
                degradation: pct(50),
            },
        ),
        (
            2,
            Policy::PriorityLeastUsed {
                load: pct(50),
                degradation: pct(10),
            },
        ),
    ]);
    for _ in 0..3 {
        assert_eq!(sel(&mut hs, &h, 1), vec![2]);
    }
    assert_eq!(
        hs.get(&h, PeIdentifier(2)).map(|e| e.degradation()),
        Some(0)
    );
}

#[test]
fn priority_least_used_degradation_accumulates() {
    let (mut hs, h) = pool_with(&[
        (
            1,
            Policy::PriorityLeastUsedDegradation {
                load: 0,
                degradation: 10,
            },
        ),
        (
            2,
            Policy::PriorityLeastUsedDegradation {
                load: 15,
                degradation: 1,
            },
        ),
    ]);
    // keys: 1 -> 10, 20, 30...; 2 -> 16, 17, ...
    let seq: Vec<u32> = (0..5).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    assert_eq!(seq, vec![1, 2, 2, 2, 2]);
    // Saturates instead of wrapping.
    let (mut hs, h) = pool_with(&[(
        1,
        Policy::PriorityLeastUsedDegradation {
            load: MAX - 1,
            degradation: MAX,
        },
    )]);
    sel(&mut hs, &h, 1);
    sel(&mut hs, &h, 1);
    assert_eq!(
        hs.get(&h, PeIdentifier(1)).map(|e| e.degradation()),
        Some(MAX)
    );
}

#[test]
fn dpf_policies_penalise_distance() {
    // DPF 0.001 per ms, 100 ms => +10 % load.
    let dpf = 0x0041_8937;
    let pct = |p: u64| (p * u64::from(MAX) / 100) as u32;
    let (mut hs, h) = pool_with(&[
        (
            1,
            Policy::LeastUsedDpf {
                load: 0,
                load_dpf: dpf,
                distance: 100,
            },
        ),
        (
            2,
            Policy::LeastUsedDpf {
                load: pct(5),
                load_dpf: dpf,
                distance: 0,
            },
        ),
        (
            3,
            Policy::LeastUsedDpf {
                load: pct(12),
                load_dpf: dpf,
                distance: 0,
            },
        ),
    ]);
    assert_eq!(sel(&mut hs, &h, 3), vec![2, 1, 3]);
    let (mut hs, h) = pool_with(&[
        (
            1,
            Policy::LeastUsedDegradationDpf {
                load: 0,
                degradation: pct(8),
                load_dpf: dpf,
                distance: 50,
            },
        ),
        (
            2,
            Policy::LeastUsedDegradationDpf {
                load: pct(6),
                degradation: pct(1),
                load_dpf: dpf,
                distance: 0,
            },
        ),
    ]);
    // keys: 1 -> 5 %, then 13 %; 2 -> 6 %, 7 %, ...
    let seq: Vec<u32> = (0..4).flat_map(|_| sel(&mut hs, &h, 1)).collect();
    assert_eq!(seq, vec![1, 2, 2, 2]);
}

#[test]
fn random_values_follow_rsplib_formulas() {
    use policy::random::value;
    let v = |a: u32, b: u32, c: u32| [a, b, c, 0];
    assert_eq!(value(code::RANDOM, &v(0, 0, 0), 0), 1);
    assert_eq!(value(code::WEIGHTED_RANDOM, &v(7, 0, 0), 0), 7);
    assert_eq!(value(code::RANDOMIZED_LEAST_USED, &v(MAX, 0, 0), 0), 1);
    assert_eq!(
        value(code::RANDOMIZED_LEAST_USED, &v(10, 0, 0), 0),
        u64::from(MAX - 10)
    );
    assert_eq!(
        value(code::RANDOMIZED_LEAST_USED_DEGRADATION, &v(10, 3, 0), 5),
        u64::from(MAX - 15)
    );
    assert_eq!(
        value(code::RANDOMIZED_PRIORITY_LEAST_USED, &v(10, 3, 0), 5),
        u64::from(MAX - 13)
    );
    assert_eq!(
        value(
            code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
            &v(10, 3, 0),
            5
        ),
        u64::from(MAX - 18)
    );
    assert_eq!(
        value(
            code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
            &v(MAX, MAX, 0),
            MAX
        ),
        1
    );
    // WRAND-DPF: weight 1000, DPF 0.001/ms, 100 ms => 1000 - 100.
    assert_eq!(
        value(code::WEIGHTED_RANDOM_DPF, &v(1000, 0x0041_8937, 100), 0),
        900
    );
    // Penalty above the weight => 1 (RSPLIB), exactly the weight => 0.
    assert_eq!(value(code::WEIGHTED_RANDOM_DPF, &v(1000, MAX, 2), 0), 1);
    assert_eq!(value(code::WEIGHTED_RANDOM_DPF, &v(1000, MAX, 1), 0), 0);
}

#[test]
fn randomized_degradation_grows_and_resets() {
    let (mut hs, h) = pool_with(&[
        (
            1,
            Policy::RandomizedLeastUsedDegradation {
                load: 0,
                degradation: 100,
            },
        ),
        (
            2,
            Policy::RandomizedLeastUsedDegradation {
                load: 0,
                degradation: 100,
            },
        ),
    ]);
    let before = hs.debug_weighted_total(&h).expect("weighted");
    let first = sel(&mut hs, &h, 2)[0];
    let deg = |hs: &Handlespace, id| hs.get(&h, PeIdentifier(id)).map(|e| e.degradation());
    assert_eq!(deg(&hs, first), Some(100));
    assert_eq!(
        deg(&hs, 3 - first),
        Some(0),
        "only max increment (1) PE degrades"
    );
    assert_eq!(hs.debug_weighted_total(&h), Some(before - 100));
    hs.register(
        &h,
        &pe(
            first,
            Policy::RandomizedLeastUsedDegradation {
                load: 0,
                degradation: 100,
            },
        ),
        None,
    )
    .expect("ok");
    assert_eq!(deg(&hs, first), Some(0));
    assert_eq!(hs.debug_weighted_total(&h), Some(before));
    // Values track load changes.
    hs.register(
        &h,
        &pe(
            2,
            Policy::RandomizedLeastUsedDegradation {
                load: 7,
                degradation: 1,
            },
        ),
        None,
    )
    .expect("ok");
    assert_eq!(hs.debug_weighted_total(&h), Some(before - 7));
    hs.deregister(&h, PeIdentifier(1));
    assert_eq!(hs.debug_weighted_total(&h), Some(u64::from(MAX - 7)));
}

#[test]
fn max_increment_config_applies() {
    let mut hs = Handlespace::new(HandlespaceConfig {
        max_increment: u32::MAX,
        ..HandlespaceConfig::default()
    });
    let h = ph("p");
    for id in 1..=4 {
        hs.register(&h, &pe(id, Policy::RoundRobin), None)
            .expect("ok");
    }
    assert_eq!(sel(&mut hs, &h, 3), vec![1, 2, 3]);
    assert_eq!(sel(&mut hs, &h, 3), vec![4, 1, 2]);
    hs.set_max_increment(0);
    assert_eq!(sel(&mut hs, &h, 3), vec![3, 4, 1]);
    assert_eq!(sel(&mut hs, &h, 3), vec![4, 1, 2]);
}
