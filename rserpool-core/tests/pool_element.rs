//! Pool element machine: scenario tests with exact message sequences, fed with real RSPLIB
//! messages where the captures have them (`shared/vectors/rsplib-captures/messages`).

mod common;

use bytes::Bytes;
use common::*;
use core::time::Duration;
use rand_core::Rng;

use rserpool_core::io::{AssocDownReason, AssocIdAllocator, Machine};
use rserpool_core::pool_element::{
    PoolElement, PoolElementConfig, PoolElementEvent, RegistrationFailure, policy_with_load,
};
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_core::{AssocId, Instant};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{
    Deregistration, DeregistrationResponse, EndpointKeepAlive, EndpointKeepAliveAck, Registration,
    RegistrationResponse,
};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{ErrorCause, OperationError, cause};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{TRANSPORT_USE_DATA_PLUS_CONTROL, TransportProtocol};

use PoolElementEvent as Ev;
use TransportProtocol::{Sctp, Tcp};

const POOL: &str = "EchoPool";
/// The PE of the RSPLIB echo capture (01-asap-echo-basic.pcap).
const PE: PeIdentifier = PeIdentifier(0x051d_a794);
/// The registrar of that capture.
const PR1: ServerId = ServerId(0x1de0_434e);
/// The registrar taking over in 05-enrp-3pr-takeover.pcap.
const PR2: ServerId = ServerId(0xce35_a3ba);
/// The PE taken over in that capture.
const PE31: PeIdentifier = PeIdentifier(0x1f);

type Pe = PoolElement<rand_xoshiro::Xoshiro256PlusPlus>;

fn handle() -> PoolHandle {
    PoolHandle::from(POOL)
}

/// The echo PE of the capture: SCTP 10.99.0.14:36864, data + control, Round Robin,
/// re-registration every 3 s (life 9000 ms), one static registrar per address given.
fn echo_config(registrars: &[&str]) -> PoolElementConfig {
    let mut c = PoolElementConfig::new(POOL, Sctp, 36864, [ip("10.99.0.14")]);
    c.pe_id = Some(PE);
    c.reregistration_interval = Duration::from_secs(3);
    c.registrar_table.static_registrars = registrars
        .iter()
        .map(|r| StaticRegistrar::sctp([sa(r)]))
        .collect();
    c
}

fn mid(n: u64) -> AssocId {
    AssocId(AssocIdAllocator::MACHINE_BIT | n)
}

/// The registration the PE sends, with its home registrar field set to `home`.
fn registration(pe: &Pe, home: ServerId) -> AsapMessage {
    let c = pe.config();
    let mut m = Registration::new(
        c.pool_handle.clone(),
        rserpool_proto::param::PoolElementParameter {
            pe_id: pe.pe_id(),
            home_server_id: home,
            registration_life: c.effective_registration_life(),
            user_transport: c.user_transport.clone(),
            policy: pe.policy(),
            asap_transport: c.asap_transport.clone(),
        },
    );
    m.reserved_flags = 0;
    m.into()
}

fn accept(pe: &Pe) -> Bytes {
    AsapMessage::from(RegistrationResponse {
        pool_handle: pe.config().pool_handle.clone(),
        pe_id: pe.pe_id(),
        ..Default::default()
    })
    .to_bytes()
}

fn keep_alive(server: ServerId, home: bool, pe_id: Option<PeIdentifier>) -> Bytes {
    AsapMessage::from(EndpointKeepAlive {
        home,
        reserved_flags: 0,
        server_id: server,
        pool_handle: handle(),
        pe_id,
        skipped: Vec::new(),
    })
    .to_bytes()
}

fn ack(pe_id: PeIdentifier) -> AsapMessage {
    EndpointKeepAliveAck::new(handle(), pe_id).into()
}

/// A PE registered at the single static registrar 10.99.0.11:3863 over `mid(1)` at t = 12 ms,
/// its registrar id learnt from a keep-alive at t = 20 ms.
fn registered(config: PoolElementConfig) -> Pe {
    let mut pe = PoolElement::new(config, rng(1)).unwrap();
    pe.register(ms(0));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Connect(mid(1), vec![sa("10.99.0.11:3863")], Sctp)]
    );
    pe.handle_assoc_up(ms(10), mid(1), &[sa("10.99.0.11:3863")]);
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(1), registration(&pe, ServerId::NONE))]
    );
    let acc = accept(&pe);
    pe.handle_message(ms(12), mid(1), 11, acc);
    assert!(matches!(
        &drain(&mut pe)[..],
        [Out::Event(Ev::Registered { .. })]
    ));
    pe.handle_message(ms(20), mid(1), 11, keep_alive(PR1, false, Some(pe.pe_id())));
    assert_eq!(drain(&mut pe), vec![Out::Send(mid(1), ack(pe.pe_id()))]);
    assert!(pe.is_registered());
    pe
}

#[test]
fn registration_matches_rsplib_bytes_and_keep_alive_teaches_the_registrar_id() {
    let mut pe = PoolElement::new(echo_config(&["10.99.0.11:3863"]), rng(1)).unwrap();
    assert!(drain(&mut pe).is_empty());
    assert_eq!(pe.poll_timeout(), None);

    pe.register(ms(0));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Connect(mid(1), vec![sa("10.99.0.11:3863")], Sctp)]
    );
    assert_eq!(pe.poll_timeout(), Some(ms(7500)), "hunt round");

    pe.handle_assoc_up(ms(10), mid(1), &[sa("10.99.0.11:3863")]);
    let out = drain_raw(&mut pe);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].1.as_ref().unwrap(),
        &vector("asap-registration"),
        "the registration RSPLIB's echo PE sent, byte for byte"
    );
    assert_eq!(pe.poll_timeout(), Some(ms(3010)), "T2");

    pe.handle_message(ms(12), mid(1), 11, vector("asap-registration-response"));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Event(Ev::Registered {
            registrar: None,
            pe_id: PE,
            life: 9000
        })]
    );
    assert!(pe.is_registered());
    assert_eq!(
        pe.poll_timeout(),
        Some(ms(3012)),
        "T4 = interval after success"
    );

    // RSPLIB keep-alive (with the PE identifier extension): ACK byte for byte as RSPLIB.
    pe.handle_message(ms(2000), mid(1), 11, vector("asap-endpoint-keep-alive"));
    let out = drain_raw(&mut pe);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Out::Send(mid(1), ack(PE)));
    assert_eq!(
        out[0].1.as_ref().unwrap(),
        &vector("asap-endpoint-keep-alive-ack")
    );
    assert_eq!(pe.home_registrar().unwrap().server_id, Some(PR1));

    // Periodic re-registration, now naming the home registrar.
    pe.handle_timeout(ms(3011));
    assert!(drain(&mut pe).is_empty());
    pe.handle_timeout(ms(3012));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(1), registration(&pe, PR1))]
    );
    assert_eq!(
        pe.poll_timeout(),
        Some(ms(6012)),
        "T2 of the re-registration"
    );
    pe.handle_message(ms(3015), mid(1), 11, vector("asap-registration-response"));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Event(Ev::Registered {
            registrar: Some(PR1),
            pe_id: PE,
            life: 9000
        })]
    );
    assert_eq!(pe.poll_timeout(), Some(ms(6015)));
    pe.handle_timeout(ms(6015));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(1), registration(&pe, PR1))]
    );
}

#[test]
fn hunt_with_three_registrars_first_up_wins_and_the_others_are_closed() {
    let regs = ["10.0.0.1:3863", "10.0.0.2:3863", "10.0.0.3:3863"];
    let mut pe = PoolElement::new(echo_config(&regs), rng(7)).unwrap();
    pe.register(ms(0));
    let start = hunt_start(&mut rng(7), 3);
    let expected: Vec<_> = (0..3)
        .map(|i| Out::Connect(mid(i as u64 + 1), vec![sa(regs[(start + i) % 3])], Sctp))
        .collect();
    assert_eq!(
        drain(&mut pe),
        expected,
        "all three at once, from a random start"
    );

    pe.handle_assoc_up(ms(40), mid(2), &[]);
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Close(mid(1), false),
            Out::Close(mid(3), false),
            Out::Send(mid(2), registration(&pe, ServerId::NONE)),
        ]
    );
    assert!(!pe.registrar_table().is_hunting());
    // The losers going down, or one of them coming up late, changes nothing.
    pe.handle_assoc_up(ms(41), mid(3), &[]);
    pe.handle_assoc_down(ms(42), mid(1), AssocDownReason::Closed);
    pe.handle_assoc_down(ms(43), mid(3), AssocDownReason::Closed);
    assert!(drain(&mut pe).is_empty());
    assert_eq!(pe.home_registrar().unwrap().assoc, mid(2));
}

#[test]
fn hunt_keeps_three_attempts_and_fails_after_its_rounds() {
    let regs = [
        "10.0.0.1:3863",
        "10.0.0.2:3863",
        "10.0.0.3:3863",
        "10.0.0.4:3863",
    ];
    let mut c = echo_config(&regs);
    c.registrar_table.max_rounds = 2;
    let mut pe = PoolElement::new(c, rng(3)).unwrap();
    pe.register(ms(0));
    let mut r = rng(3);
    let start = hunt_start(&mut r, 4);
    let order = |s: usize, i: usize| vec![sa(regs[(s + i) % 4])];
    assert_eq!(
        drain(&mut pe),
        (0..3)
            .map(|i| Out::Connect(mid(i as u64 + 1), order(start, i), Sctp))
            .collect::<Vec<_>>()
    );
    // A failed attempt makes room for the fourth registrar.
    pe.handle_assoc_down(ms(5), mid(1), AssocDownReason::ConnectFailed);
    assert_eq!(
        drain(&mut pe),
        vec![Out::Connect(mid(4), order(start, 3), Sctp)]
    );
    // Round 1 ends: pending attempts aborted, round 2 from a new random start.
    pe.handle_timeout(ms(7500));
    let start2 = hunt_start(&mut r, 4);
    let mut expected = vec![
        Out::Close(mid(2), true),
        Out::Close(mid(3), true),
        Out::Close(mid(4), true),
    ];
    expected.extend((0..3).map(|i| Out::Connect(mid(i as u64 + 5), order(start2, i), Sctp)));
    assert_eq!(drain(&mut pe), expected);
    assert_eq!(pe.registrar_table().hunt_round(), Some(2));
    // Round 2 ends: the registration fails, retried after the re-registration interval.
    pe.handle_timeout(ms(15000));
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Close(mid(5), true),
            Out::Close(mid(6), true),
            Out::Close(mid(7), true),
            Out::Event(Ev::RegistrationFailed {
                cause: RegistrationFailure::NoRegistrar
            }),
        ]
    );
    assert_eq!(pe.poll_timeout(), Some(ms(18000)));
    pe.handle_timeout(ms(18000));
    assert_eq!(connects(&drain(&mut pe)).len(), 3, "a new hunt");
}

#[test]
fn announce_from_a_new_registrar_starts_a_round_at_once_using_the_udp_source_port() {
    let mut c = echo_config(&[]);
    c.registrar_table.max_rounds = 1;
    let mut pe = PoolElement::new(c, rng(1)).unwrap();
    pe.register(ms(0));
    assert!(drain(&mut pe).is_empty(), "nobody to try yet");
    assert_eq!(pe.poll_timeout(), Some(ms(7500)));
    // RSPLIB's 8-byte announce, sent from its random ASAP port.
    pe.handle_datagram(
        ms(1000),
        sa("10.99.0.11:41234"),
        11,
        vector("asap-server-announce-multicast"),
    );
    assert_eq!(
        drain(&mut pe),
        vec![Out::Connect(mid(1), vec![sa("10.99.0.11:41234")], Sctp)]
    );
    assert_eq!(pe.poll_timeout(), Some(ms(6000)), "T7 of the entry");
    pe.handle_assoc_up(ms(1001), mid(1), &[sa("10.99.0.11:41234")]);
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(1), registration(&pe, PR1))],
        "the home id comes from the announce entry"
    );
    pe.handle_message(ms(1002), mid(1), 11, vector("asap-registration-response"));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Event(Ev::Registered {
            registrar: Some(PR1),
            pe_id: PE,
            life: 9000
        })]
    );
}

#[test]
fn announce_after_a_failed_hunt_retries_before_the_interval() {
    let mut pe = PoolElement::new(echo_config(&[]), rng(1)).unwrap();
    pe.register(ms(0));
    pe.handle_timeout(ms(7500));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Event(Ev::RegistrationFailed {
            cause: RegistrationFailure::NoRegistrar
        })]
    );
    assert_eq!(pe.poll_timeout(), Some(ms(10500)));
    pe.handle_datagram(
        ms(8000),
        sa("10.99.0.11:3863"),
        11,
        vector("asap-server-announce-multicast"),
    );
    assert_eq!(
        drain(&mut pe),
        vec![Out::Connect(mid(1), vec![sa("10.99.0.11:3863")], Sctp)]
    );
}

#[test]
fn keep_alives_with_and_without_pe_identifier_are_acked_others_ignored() {
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    // RFC form: no PE identifier.
    pe.handle_message(ms(100), mid(1), 11, keep_alive(PR1, false, None));
    assert_eq!(drain(&mut pe), vec![Out::Send(mid(1), ack(PE))]);
    // RSPLIB form for this PE.
    pe.handle_message(ms(200), mid(1), 11, keep_alive(PR1, false, Some(PE)));
    assert_eq!(drain(&mut pe), vec![Out::Send(mid(1), ack(PE))]);
    // For another PE (the capture's takeover keep-alive names PE $1f): not ours.
    pe.handle_message(ms(300), mid(1), 11, vector("asap-endpoint-keep-alive-home"));
    assert!(drain(&mut pe).is_empty());
    assert_eq!(pe.home_registrar().unwrap().server_id, Some(PR1));
    // For another pool (KA1: discard).
    let other = AsapMessage::from(EndpointKeepAlive {
        pool_handle: PoolHandle::from("OtherPool"),
        server_id: PR1,
        ..Default::default()
    })
    .to_bytes();
    pe.handle_message(ms(400), mid(1), 11, other);
    assert!(drain(&mut pe).is_empty());
    // Not ASAP (wrong PPID): ignored.
    pe.handle_message(ms(500), mid(1), 12, keep_alive(PR1, false, None));
    assert!(drain(&mut pe).is_empty());
}

/// A PE like the one RSPLIB's PR2 took over in the capture: PE $1f of EchoPool.
fn takeover_config(protocol: TransportProtocol) -> PoolElementConfig {
    let mut c = echo_config(&["10.99.0.11:3863"]);
    c.pe_id = Some(PE31);
    c.user_transport.protocol = protocol;
    c.user_transport.transport_use = TRANSPORT_USE_DATA_PLUS_CONTROL;
    c
}

fn takeover_over_new_association(protocol: TransportProtocol) {
    let mut pe = registered(takeover_config(protocol));
    let incoming = AssocId(77);
    pe.handle_assoc_up(ms(1000), incoming, &[sa("10.99.0.12:3863")]);
    assert!(drain(&mut pe).is_empty());
    // A keep-alive with H = 1 from another registrar (RSPLIB's, from the capture).
    pe.handle_message(
        ms(1001),
        incoming,
        11,
        vector("asap-endpoint-keep-alive-home"),
    );
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Send(incoming, ack(PE31)),
            Out::Close(mid(1), true),
            Out::Event(Ev::HomeRegistrarChanged {
                old: Some(PR1),
                new: PR2
            }),
        ]
    );
    let home = pe.home_registrar().unwrap();
    assert_eq!((home.assoc, home.server_id), (incoming, Some(PR2)));
    assert!(pe.is_registered(), "the new registrar took ownership");
    // The old association closing is no loss any more.
    pe.handle_assoc_down(ms(1002), mid(1), AssocDownReason::Closed);
    assert!(drain(&mut pe).is_empty());
    // A repeated H keep-alive from the new home changes nothing but is acked.
    pe.handle_message(
        ms(1003),
        incoming,
        11,
        vector("asap-endpoint-keep-alive-home"),
    );
    assert_eq!(drain(&mut pe), vec![Out::Send(incoming, ack(PE31))]);
    // The next re-registration goes to the new home, naming it.
    pe.handle_timeout(ms(3012));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(incoming, registration(&pe, PR2))]
    );
    // Losing the new home: hunt again at once.
    pe.handle_assoc_down(ms(3100), incoming, AssocDownReason::Lost);
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Event(Ev::RegistrarLost {
                registrar: Some(PR2)
            }),
            Out::Connect(mid(2), vec![sa("10.99.0.11:3863")], Sctp),
        ]
    );
}

#[test]
fn h_bit_keep_alive_over_a_new_association_adopts_the_new_home() {
    takeover_over_new_association(Sctp);
}

#[test]
fn tcp_registered_pe_adopts_a_takeover_keep_alive_on_a_new_kind_2_connection() {
    takeover_over_new_association(Tcp);
}

#[test]
fn keep_alive_without_h_bit_on_a_new_association_is_acked_there_only() {
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    // No handle_assoc_up first: the first message makes the association known.
    pe.handle_message(ms(1000), AssocId(5), 11, keep_alive(PR2, false, Some(PE)));
    assert_eq!(drain(&mut pe), vec![Out::Send(AssocId(5), ack(PE))]);
    let home = pe.home_registrar().unwrap();
    assert_eq!((home.assoc, home.server_id), (mid(1), Some(PR1)));
    pe.handle_assoc_down(ms(1001), AssocId(5), AssocDownReason::Shutdown);
    assert!(drain(&mut pe).is_empty());
}

#[test]
fn takeover_keep_alive_during_a_hunt_ends_the_hunt_and_registers_there() {
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    pe.handle_assoc_down(ms(500), mid(1), AssocDownReason::Lost);
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Event(Ev::RegistrarLost {
                registrar: Some(PR1)
            }),
            Out::Connect(mid(2), vec![sa("10.99.0.11:3863")], Sctp),
        ]
    );
    pe.handle_assoc_up(ms(510), AssocId(9), &[]);
    pe.handle_message(ms(511), AssocId(9), 11, keep_alive(PR2, true, Some(PE)));
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Send(AssocId(9), ack(PE)),
            Out::Close(mid(2), true),
            Out::Event(Ev::HomeRegistrarChanged {
                old: None,
                new: PR2
            }),
            Out::Send(AssocId(9), registration(&pe, PR2)),
        ]
    );
}

#[test]
fn home_registrar_loss_rehunts_and_reregisters_at_once() {
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    pe.handle_assoc_down(ms(1500), mid(1), AssocDownReason::Lost);
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Event(Ev::RegistrarLost {
                registrar: Some(PR1)
            }),
            Out::Connect(mid(2), vec![sa("10.99.0.11:3863")], Sctp),
        ]
    );
    assert!(!pe.is_registered());
    pe.handle_assoc_up(ms(1520), mid(2), &[]);
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(2), registration(&pe, ServerId::NONE))],
        "no waiting for the next interval"
    );
    pe.handle_message(ms(1530), mid(2), 11, accept(&pe));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Event(Ev::Registered {
            registrar: None,
            pe_id: PE,
            life: 9000
        })]
    );
    assert_eq!(pe.poll_timeout(), Some(ms(4530)));
}

#[test]
fn request_timeout_aborts_rehunts_resends_then_fails() {
    let mut pe = PoolElement::new(echo_config(&["10.99.0.11:3863"]), rng(1)).unwrap();
    pe.register(ms(0));
    drain(&mut pe);
    pe.handle_assoc_up(ms(10), mid(1), &[]);
    assert_eq!(drain(&mut pe).len(), 1);
    assert_eq!(pe.poll_timeout(), Some(ms(3010)));
    pe.handle_timeout(ms(3010));
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Close(mid(1), true),
            Out::Event(Ev::RegistrarLost { registrar: None }),
            Out::Connect(mid(2), vec![sa("10.99.0.11:3863")], Sctp),
        ]
    );
    pe.handle_assoc_up(ms(3020), mid(2), &[]);
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(2), registration(&pe, ServerId::NONE))],
        "resent (one retransmission allowed, as RSPLIB)"
    );
    // A late answer on the aborted association is not taken.
    pe.handle_message(ms(3021), mid(1), 11, accept(&pe));
    assert!(drain(&mut pe).is_empty());
    pe.handle_timeout(ms(6020));
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Close(mid(2), true),
            Out::Event(Ev::RegistrarLost { registrar: None }),
            Out::Event(Ev::RegistrationFailed {
                cause: RegistrationFailure::Timeout
            }),
        ]
    );
    assert_eq!(
        pe.poll_timeout(),
        Some(ms(9020)),
        "next try after the interval"
    );
    pe.handle_timeout(ms(9020));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Connect(mid(3), vec![sa("10.99.0.11:3863")], Sctp)]
    );
}

#[test]
fn more_trials_mean_more_resends() {
    let mut c = echo_config(&["10.99.0.11:3863"]);
    c.request_max_trials = 2;
    let mut pe = PoolElement::new(c, rng(1)).unwrap();
    pe.register(ms(0));
    drain(&mut pe);
    let mut t = 0;
    for n in 1..=3u64 {
        pe.handle_assoc_up(ms(t), mid(n), &[]);
        assert_eq!(
            drain(&mut pe),
            vec![Out::Send(mid(n), registration(&pe, ServerId::NONE))]
        );
        t += 3000;
        pe.handle_timeout(ms(t));
        let out = drain(&mut pe);
        let failed = out
            .iter()
            .any(|o| matches!(o, Out::Event(Ev::RegistrationFailed { .. })));
        assert_eq!(failed, n == 3, "send {n}: {out:?}");
    }
}

#[test]
fn rejection_is_reported_with_its_cause_and_not_retried() {
    let mut pe = PoolElement::new(echo_config(&["10.99.0.11:3863"]), rng(1)).unwrap();
    pe.register(ms(0));
    drain(&mut pe);
    pe.handle_assoc_up(ms(10), mid(1), &[]);
    drain(&mut pe);
    let oe = OperationError::new(ErrorCause::new(
        cause::INCONSISTENT_POOLING_POLICY,
        Bytes::new(),
    ));
    let reject = AsapMessage::from(RegistrationResponse {
        reject: true,
        pool_handle: handle(),
        pe_id: PE,
        error: Some(oe.clone()),
        ..Default::default()
    });
    pe.handle_message(ms(20), mid(1), 11, reject.to_bytes());
    assert_eq!(
        drain(&mut pe),
        vec![Out::Event(Ev::RegistrationFailed {
            cause: RegistrationFailure::Rejected(Some(oe))
        })]
    );
    assert_eq!(pe.poll_timeout(), None, "no retry of the identical request");
    pe.handle_timeout(ms(100_000));
    pe.handle_message(ms(100_001), mid(1), 11, keep_alive(PR1, false, Some(PE)));
    assert!(
        drain(&mut pe).is_empty(),
        "not a pool member: no keep-alive answers"
    );
}

#[test]
fn deregistration_matches_rsplib_bytes() {
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    pe.deregister(ms(1000));
    let out = drain_raw(&mut pe);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].0,
        Out::Send(mid(1), Deregistration::new(handle(), PE).into())
    );
    assert_eq!(out[0].1.as_ref().unwrap(), &vector("asap-deregistration"));
    assert_eq!(pe.poll_timeout(), Some(ms(4000)), "T3, no re-registration");
    // Keep-alives are still answered until the registrar confirms.
    pe.handle_message(ms(1001), mid(1), 11, keep_alive(PR1, false, Some(PE)));
    assert_eq!(drain(&mut pe), vec![Out::Send(mid(1), ack(PE))]);
    pe.handle_message(ms(1002), mid(1), 11, vector("asap-deregistration-response"));
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Close(mid(1), false),
            Out::Event(Ev::Deregistered { acknowledged: true }),
        ]
    );
    assert_eq!(pe.poll_timeout(), None);
    assert!(!pe.is_registered());
}

#[test]
fn deregistration_while_the_registration_is_in_flight_and_before_any() {
    let mut pe = PoolElement::new(echo_config(&["10.99.0.11:3863"]), rng(1)).unwrap();
    pe.deregister(ms(0));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Event(Ev::Deregistered {
            acknowledged: false
        })]
    );
    pe.register(ms(1));
    drain(&mut pe);
    pe.handle_assoc_up(ms(2), mid(1), &[]);
    drain(&mut pe);
    pe.deregister(ms(3));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(1), Deregistration::new(handle(), PE).into())]
    );
    // The registration's answer arrives first and is not taken as a registration.
    pe.handle_message(ms(4), mid(1), 11, accept(&pe));
    assert!(drain(&mut pe).is_empty());
    let refused = AsapMessage::from(DeregistrationResponse {
        pool_handle: handle(),
        pe_id: PE,
        error: Some(OperationError::new(ErrorCause::new(
            cause::UNSPECIFIED_ERROR,
            Bytes::new(),
        ))),
        ..Default::default()
    });
    pe.handle_message(ms(5), mid(1), 11, refused.to_bytes());
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Close(mid(1), false),
            Out::Event(Ev::Deregistered {
                acknowledged: false
            }),
        ]
    );
}

#[test]
fn asap_error_instead_of_a_response_drops_the_association_and_rehunts() {
    let mut pe = PoolElement::new(echo_config(&["10.99.0.11:3863"]), rng(1)).unwrap();
    pe.register(ms(0));
    drain(&mut pe);
    pe.handle_assoc_up(ms(10), mid(1), &[]);
    drain(&mut pe);
    // RSPLIB's answer to a registration it could not parse.
    let err = vector("asap-error-invalid-values");
    let AsapMessage::Error(e) = AsapMessage::decode_bytes(&err).unwrap() else {
        panic!()
    };
    pe.handle_message(ms(20), mid(1), 11, err.clone());
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Close(mid(1), true),
            Out::Event(Ev::RegistrarLost { registrar: None }),
            Out::Connect(mid(2), vec![sa("10.99.0.11:3863")], Sctp),
        ]
    );
    pe.handle_assoc_up(ms(30), mid(2), &[]);
    assert_eq!(drain(&mut pe).len(), 1);
    pe.handle_message(ms(40), mid(2), 11, err);
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Close(mid(2), true),
            Out::Event(Ev::RegistrarLost { registrar: None }),
            Out::Event(Ev::RegistrationFailed {
                cause: RegistrationFailure::RegistrarError(e.error)
            }),
        ]
    );
}

#[test]
fn set_load_reregisters_at_once_and_coalesces_while_in_flight() {
    let mut c = echo_config(&["10.99.0.11:3863"]);
    c.policy = Policy::LeastUsed { load: 0 };
    let mut pe = registered(c);
    assert!(pe.set_load(ms(100), 0x1000));
    assert_eq!(pe.policy(), Policy::LeastUsed { load: 0x1000 });
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(1), registration(&pe, PR1))]
    );
    // Two more changes while the answer is outstanding: one registration after it.
    assert!(pe.set_load(ms(101), 0x2000));
    assert!(pe.set_load(ms(102), 0x3000));
    assert!(drain(&mut pe).is_empty());
    pe.handle_message(ms(110), mid(1), 11, accept(&pe));
    let out = drain(&mut pe);
    assert_eq!(out.len(), 2);
    assert!(matches!(out[0], Out::Event(Ev::Registered { .. })));
    assert_eq!(out[1], Out::Send(mid(1), registration(&pe, PR1)));
    let Out::Send(_, AsapMessage::Registration(r)) = &out[1] else {
        panic!()
    };
    assert_eq!(r.pool_element.policy, Policy::LeastUsed { load: 0x3000 });

    let mut rr = registered(echo_config(&["10.99.0.11:3863"]));
    assert!(!rr.set_load(ms(100), 5), "Round Robin has no load");
    assert!(drain(&mut rr).is_empty());
    assert_eq!(
        policy_with_load(
            &Policy::LeastUsedDegradation {
                load: 1,
                degradation: 7
            },
            9
        ),
        Some(Policy::LeastUsedDegradation {
            load: 9,
            degradation: 7
        })
    );
}

#[test]
fn spontaneous_deregistration_response_triggers_reregistration() {
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    pe.handle_message(ms(500), mid(1), 11, vector("asap-deregistration-response"));
    assert_eq!(
        drain(&mut pe),
        vec![Out::Send(mid(1), registration(&pe, PR1))]
    );
}

#[test]
fn unknown_and_malformed_input_never_panics_and_reports_per_action_bits() {
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    // Unknown type 0x7e: action bits 01 = discard and report (RFC 5352 §2.2.14).
    let unknown = hex("7e00 0008 0000 0000");
    pe.handle_message(ms(100), mid(1), 11, unknown.clone());
    let out = drain(&mut pe);
    let [Out::Send(a, AsapMessage::Error(e))] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(*a, mid(1));
    assert_eq!(e.error.causes[0].code, cause::UNRECOGNIZED_MESSAGE);
    assert_eq!(e.error.causes[0].info, unknown);
    // Type 0x3e: bits 00 = discard silently.
    pe.handle_message(ms(101), mid(1), 11, hex("3e00 0004"));
    assert!(drain(&mut pe).is_empty());
    // An ASAP_ERROR with a "stop and report" unknown parameter is never answered (no loops).
    pe.handle_message(ms(101), mid(1), 11, hex("0e00 000c 4fff 0008 0000 0000"));
    assert!(drain(&mut pe).is_empty());
    // A keep-alive with a skip-and-report parameter: answered, and the parameter reported.
    let mut ka = keep_alive(PR1, false, Some(PE)).to_vec();
    ka.extend_from_slice(&hex("c123 0008 dead beef"));
    let len = ka.len() as u16;
    ka[2..4].copy_from_slice(&len.to_be_bytes());
    pe.handle_message(ms(102), mid(1), 11, ka.into());
    let out = drain(&mut pe);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        matches!(&out[0], Out::Send(_, AsapMessage::Error(e)) if e.error.causes[0].code == cause::UNRECOGNIZED_PARAMETER)
    );
    assert_eq!(out[1], Out::Send(mid(1), ack(PE)));
    // Messages a PE does not expect, on the home and on unknown associations.
    for m in [
        "asap-handle-resolution-response",
        "asap-cookie",
        "asap-server-announce-multicast",
        "asap-registration",
    ] {
        pe.handle_message(ms(103), mid(1), 11, vector(m));
        pe.handle_message(ms(103), mid(99), 11, vector(m));
        pe.handle_message(ms(103), AssocId(4), 11, vector(m));
    }
    assert!(drain(&mut pe).is_empty());
    // Truncations of every vector and random bytes: no panic, state intact.
    let mut r = rng(99);
    for name in [
        "asap-endpoint-keep-alive",
        "asap-endpoint-keep-alive-home",
        "asap-registration-response",
        "asap-deregistration-response",
        "asap-error-invalid-values",
    ] {
        let v = vector(name);
        for cut in 0..v.len() {
            pe.handle_message(ms(104), AssocId(6), 11, v.slice(..cut));
            pe.handle_datagram(ms(104), sa("10.0.0.9:1"), 11, v.slice(..cut));
        }
    }
    for _ in 0..2000 {
        let len = (r.next_u32() % 64) as usize;
        let mut b = vec![0u8; len];
        r.fill_bytes(&mut b);
        if let Some(t) = b.first_mut() {
            *t %= 16;
        }
        pe.handle_message(ms(105), AssocId(6), 11, b.clone().into());
        pe.handle_datagram(ms(105), sa("10.0.0.9:1"), 11, b.into());
    }
    let _ = drain(&mut pe);
    assert!(pe.is_registered());
    assert_eq!(pe.home_registrar().unwrap().assoc, mid(1));
}

#[test]
fn random_pe_identifier_and_configuration_checks() {
    let mut c = echo_config(&[]);
    c.pe_id = None;
    let a = PoolElement::new(c.clone(), rng(5)).unwrap().pe_id();
    let b = PoolElement::new(c.clone(), rng(5)).unwrap().pe_id();
    assert_eq!(a, b, "deterministic for a seed");
    assert_ne!(a.0, 0);
    assert_ne!(a.0, u32::MAX);
    for seed in 0..200 {
        let id = PoolElement::new(c.clone(), rng(seed)).unwrap().pe_id().0;
        assert!((1..=0xffff_fffe).contains(&id));
    }
    assert_eq!(c.effective_registration_life(), 9000);

    let mut bad = echo_config(&[]);
    bad.pool_handle = PoolHandle::from("");
    assert!(PoolElement::new(bad, rng(1)).is_err());
    let mut bad = echo_config(&[]);
    bad.pool_handle = PoolHandle::new(vec![b'x'; 33]);
    assert!(PoolElement::new(bad, rng(1)).is_err());
    let mut bad = echo_config(&[]);
    bad.pe_id = Some(PeIdentifier(0));
    assert!(PoolElement::new(bad, rng(1)).is_err());
    let mut bad = echo_config(&[]);
    bad.user_transport.port = 0;
    assert!(PoolElement::new(bad, rng(1)).is_err());
    let mut bad = echo_config(&[]);
    bad.user_transport.addresses.clear();
    assert!(PoolElement::new(bad, rng(1)).is_err());
}

#[test]
fn advertised_asap_transport_goes_into_the_registration() {
    let mut c = echo_config(&["10.99.0.11:3863"]);
    c.asap_transport = Some(rserpool_proto::transport::TransportParameter::sctp(
        3863,
        0,
        [ip("10.99.0.14")],
    ));
    let mut pe = PoolElement::new(c, rng(1)).unwrap();
    pe.register(ms(0));
    drain(&mut pe);
    pe.handle_assoc_up(ms(1), mid(1), &[]);
    let out = drain(&mut pe);
    let [Out::Send(_, AsapMessage::Registration(r))] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(r.pool_element.asap_transport.as_ref().unwrap().port, 3863);
}

#[test]
fn poll_timeout_is_the_earliest_deadline_and_early_timeouts_do_nothing() {
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    let t = pe.poll_timeout().unwrap();
    assert_eq!(t, ms(3012));
    pe.handle_timeout(Instant::from_micros(t.as_micros() - 1));
    assert!(drain(&mut pe).is_empty());
    assert_eq!(pe.next_reregistration(), Some(t));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Random driver schedules (associations up, failing and breaking, canned and broken
    /// messages, announces, commands, time): no panic, the driving contract holds, and a
    /// registered PE always has a home association.
    #[test]
    fn random_schedules_keep_the_driving_contract(
        ops in proptest::collection::vec(op(), 1..120),
        seed in 0u64..1000,
    ) {
        let mut c = echo_config(&["10.99.0.11:3863", "10.99.0.12:3863"]);
        c.policy = Policy::LeastUsed { load: 0 };
        let mut pe = PoolElement::new(c, rng(seed)).unwrap();
        let accept = accept(&pe);
        let reject = AsapMessage::from(RegistrationResponse {
            reject: true,
            pool_handle: handle(),
            pe_id: PE,
            ..Default::default()
        })
        .to_bytes();
        let messages = vec![
            accept.clone(),
            accept,
            reject,
            keep_alive(PR1, false, Some(PE)),
            keep_alive(PR2, true, Some(PE)),
            keep_alive(PR1, true, None),
            vector("asap-deregistration-response"),
            vector("asap-error-invalid-values"),
            vector("asap-handle-resolution-response"),
            hex("7e00 0008 0000 0000"),
            hex("0300 0010 0009"),
        ];
        let datagrams = vec![
            (sa("10.99.0.11:3863"), vector("asap-server-announce-multicast")),
            (sa("10.99.0.13:41000"), hex("0a000008 00000077")),
            (sa("10.99.0.13:41000"), hex("0a00")),
        ];
        let events = run_schedule(&mut pe, &ops, &messages, &datagrams, |pe, now, c| match c % 4 {
            0 | 3 => pe.register(now),
            1 => pe.deregister(now),
            _ => {
                pe.set_load(now, u32::from(c) * 100);
            }
        });
        if pe.is_registered() {
            proptest::prop_assert!(pe.home_registrar().is_some());
        }
        for e in &events {
            if let Ev::Registered { pe_id, life, .. } = e {
                proptest::prop_assert_eq!((*pe_id, *life), (PE, 9000));
            }
        }
    }
}

#[test]
fn keep_alive_on_the_home_association_corrects_a_stale_registrar_id() {
    // The id was learnt as PR1 (e.g. from an announce of a registrar that then restarted
    // with a new identifier at the same address); keep-alives on the home association
    // come from PR2: the registrar at the other end of the home association is the home.
    let mut pe = registered(echo_config(&["10.99.0.11:3863"]));
    assert_eq!(pe.home_registrar().unwrap().server_id, Some(PR1));
    let other = ServerId(0x2222);
    pe.handle_message(ms(100), mid(1), 11, keep_alive(other, false, Some(PE)));
    assert_eq!(
        drain(&mut pe),
        vec![
            Out::Send(mid(1), ack(PE)),
            Out::Event(Ev::HomeRegistrarChanged {
                old: Some(PR1),
                new: other
            })
        ]
    );
    assert_eq!(pe.home_registrar().unwrap().server_id, Some(other));
    assert_eq!(pe.home_registrar().unwrap().assoc, mid(1));
    // The same again changes nothing.
    pe.handle_message(ms(200), mid(1), 11, keep_alive(other, false, Some(PE)));
    assert_eq!(drain(&mut pe), vec![Out::Send(mid(1), ack(PE))]);
}
