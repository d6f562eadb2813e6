//! Registrar, ASAP server side: exact message sequences for registration (and every
//! rejection cause), re-registration, deregistration, handle resolution, keep-alives,
//! unreachability verification, association loss, and malformed input.

mod reg_common;

use bytes::Bytes;
use reg_common::*;
use rserpool_core::handlespace::TimerKind;
use rserpool_core::registrar::{RegistrarEvent, RemovalReason};
use rserpool_core::{AssocDownReason, AssocId, Output, Protocol};
use rserpool_proto::asap::{
    AsapError, Deregistration, DeregistrationResponse, EndpointKeepAlive, EndpointKeepAliveAck,
    EndpointUnreachable, HandleResolution, HandleResolutionResponse, RegistrationResponse,
};
use rserpool_proto::enrp::{HandleUpdate, UpdateAction};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{
    ErrorCause, HandleResolutionOption, OperationError, PoolElementParameter, cause,
};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;
use rserpool_proto::{AsapMessage, Encode, EnrpMessage};

const US: u32 = 0x0000_000a;
const PEER: u32 = 0x0000_1111;

fn tlv(m: &impl Encode) -> Bytes {
    let b = m.to_bytes();
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    b.slice(..len)
}

fn reject(pool: &str, id: u32, c: ErrorCause) -> AsapMessage {
    AsapMessage::RegistrationResponse(RegistrationResponse {
        reject: true,
        reserved_flags: 0,
        pool_handle: ph(pool),
        pe_id: PeIdentifier(id),
        error: Some(OperationError::new(c)),
        skipped: vec![],
    })
}

fn accept(pool: &str, id: u32) -> AsapMessage {
    AsapMessage::RegistrationResponse(RegistrationResponse {
        pool_handle: ph(pool),
        pe_id: PeIdentifier(id),
        ..Default::default()
    })
}

/// The PE as stored and announced: home us, ASAP transport from the association.
fn stored(p: &PoolElementParameter, assoc_port: u16, assoc_ip: &str) -> PoolElementParameter {
    PoolElementParameter {
        home_server_id: ServerId(US),
        asap_transport: Some(TransportParameter::sctp(assoc_port, 0, [ip(assoc_ip)])),
        ..p.clone()
    }
}

fn rig_with_peer() -> Rig {
    // The peer stays in the list for the whole test without heartbeats.
    let mut cfg = quiet_config(US);
    cfg.timers.peer_max_time_last_heard = secs(600);
    let mut r = Rig::new(cfg);
    let outs = r.add_peer(100, PEER, "10.0.0.2", 0xffff);
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeerUp {
            server_id: ServerId(PEER)
        }]
    );
    r
}

#[test]
fn registration_sends_handle_update_before_response() {
    let mut r = rig_with_peer();
    r.up(1, &["10.1.0.5:5000"]);
    let p = pe(0x1234, "10.1.0.5", 6000);
    let outs = r.register(1, "EchoPool", p.clone());
    let expect_update = HandleUpdate::new(
        ServerId(US),
        ServerId(PEER),
        UpdateAction::ADD_PE,
        ph("EchoPool"),
        stored(&p, 5000, "10.1.0.5"),
    );
    assert_eq!(
        sent(&outs),
        vec![
            Sent::Enrp(to(100), EnrpMessage::HandleUpdate(expect_update)),
            Sent::Asap(to(1), accept("EchoPool", 0x1234)),
        ]
    );
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeRegistered {
            pool_handle: ph("EchoPool"),
            pe_id: PeIdentifier(0x1234),
            assoc: AssocId(1),
        }]
    );
    let hs = r.reg.handlespace();
    let e = hs.get(&ph("EchoPool"), PeIdentifier(0x1234)).unwrap();
    assert_eq!(e.home_registrar(), ServerId(US));
    assert_eq!(e.assoc(), Some(AssocId(1)));
    assert_eq!(hs.owner_checksum(ServerId(US)), hs.checksum());
}

#[test]
fn tcp_pe_is_reached_at_its_user_port() {
    // tcp-mapping.md §3.7: a TCP PE's client port accepts nothing, so the ASAP transport
    // stored (and sent to peers for a takeover) is TCP at the user port.
    let mut r = rig_with_peer();
    r.up(1, &["10.1.0.5:41000"]);
    let p = PoolElementParameter {
        user_transport: TransportParameter::tcp(6000, 1, [ip("10.1.0.5")]),
        ..pe(0x77, "10.1.0.5", 6000)
    };
    let outs = r.register(1, "EchoPool", p.clone());
    let expect_update = HandleUpdate::new(
        ServerId(US),
        ServerId(PEER),
        UpdateAction::ADD_PE,
        ph("EchoPool"),
        PoolElementParameter {
            home_server_id: ServerId(US),
            asap_transport: Some(TransportParameter::tcp(6000, 0, [ip("10.1.0.5")])),
            ..p
        },
    );
    assert_eq!(
        sent(&outs),
        vec![
            Sent::Enrp(to(100), EnrpMessage::HandleUpdate(expect_update)),
            Sent::Asap(to(1), accept("EchoPool", 0x77)),
        ]
    );
}

#[test]
fn every_rejection_cause() {
    let mut r = Rig::new(quiet_config(US));
    r.up(1, &["10.1.0.5:5000"]);
    let base = pe(7, "10.1.0.5", 6000);

    // 0x3: empty and over-long pool handles, quoting the Pool Handle parameter.
    for handle in ["", "0123456789abcdef0123456789abcdef!"] {
        let outs = r.register(1, handle, base.clone());
        assert_eq!(
            sent(&outs),
            vec![Sent::Asap(
                to(1),
                reject(
                    handle,
                    7,
                    ErrorCause::new(cause::INVALID_VALUES, tlv(&ph(handle)))
                )
            )]
        );
    }
    // 0x3: PE identifier 0, registration life 0 (quoting the Pool Element parameter).
    for p in [
        PoolElementParameter {
            pe_id: PeIdentifier(0),
            ..base.clone()
        },
        PoolElementParameter {
            registration_life: 0,
            ..base.clone()
        },
    ] {
        let outs = r.register(1, "P", p.clone());
        assert_eq!(
            sent(&outs),
            vec![Sent::Asap(
                to(1),
                reject(
                    "P",
                    p.pe_id.0,
                    ErrorCause::new(cause::INVALID_VALUES, tlv(&p))
                )
            )]
        );
    }
    // 0x3: port 0, too many addresses (quoting the user transport).
    let many: Vec<_> = (0..65u8).map(|i| ip(&format!("10.1.1.{i}"))).collect();
    for t in [
        TransportParameter::sctp(0, 1, [ip("10.1.0.5")]),
        TransportParameter::sctp(6000, 1, many),
    ] {
        let p = PoolElementParameter {
            user_transport: t.clone(),
            ..base.clone()
        };
        let outs = r.register(1, "P", p);
        assert_eq!(
            sent(&outs),
            vec![Sent::Asap(
                to(1),
                reject("P", 7, ErrorCause::new(cause::INVALID_VALUES, tlv(&t)))
            )]
        );
    }
    // 0x3: unknown policy type (decoder), answered with a Registration Response quoting
    // the policy parameter.
    let mut raw = registration("P", base.clone()).to_bytes().to_vec();
    let pos = raw
        .windows(8)
        .position(|w| w == [0x00, 0x08, 0x00, 0x08, 0, 0, 0, 1])
        .unwrap();
    raw[pos + 4..pos + 8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let outs = r.raw(1, Protocol::PPID_ASAP, &raw);
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(1),
            reject(
                "P",
                7,
                ErrorCause::new(
                    cause::INVALID_VALUES,
                    Bytes::copy_from_slice(&raw[pos..pos + 8])
                )
            )
        )]
    );
    // 0xa: user address that is not an address of the association.
    let outs = r.register(1, "P", pe(7, "10.9.9.9", 6000));
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(1),
            reject(
                "P",
                7,
                ErrorCause::new(cause::REJECTED_SECURITY, Bytes::new())
            )
        )]
    );
    // 0xa: only a loopback address (below the minimum scope).
    r.up(9, &["127.0.0.1:5000"]);
    let outs = r.register(9, "P", pe(7, "127.0.0.1", 6000));
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(9),
            reject(
                "P",
                7,
                ErrorCause::new(cause::REJECTED_SECURITY, Bytes::new())
            )
        )]
    );
    assert!(r.reg.handlespace().is_empty());

    // Pool "Q" with an RR PE over SCTP with a control channel.
    let outs = r.register(1, "Q", base.clone());
    assert_eq!(sent(&outs), vec![Sent::Asap(to(1), accept("Q", 7))]);
    // 0x5 with the pool's policy parameter.
    let outs = r.register(
        1,
        "Q",
        PoolElementParameter {
            pe_id: PeIdentifier(8),
            policy: Policy::WeightedRoundRobin { weight: 3 },
            ..base.clone()
        },
    );
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(1),
            reject(
                "Q",
                8,
                ErrorCause::new(cause::INCONSISTENT_POOLING_POLICY, tlv(&Policy::RoundRobin))
            )
        )]
    );
    // 0x7 with a transport of the pool's type.
    let outs = r.register(
        1,
        "Q",
        PoolElementParameter {
            pe_id: PeIdentifier(8),
            user_transport: TransportParameter::tcp(6000, 1, [ip("10.1.0.5")]),
            ..base.clone()
        },
    );
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(1),
            reject(
                "Q",
                8,
                ErrorCause::new(
                    cause::INCONSISTENT_TRANSPORT_TYPE,
                    tlv(&base.user_transport)
                )
            )
        )]
    );
    // 0x8 without information.
    let outs = r.register(
        1,
        "Q",
        PoolElementParameter {
            pe_id: PeIdentifier(8),
            user_transport: TransportParameter::sctp(6000, 0, [ip("10.1.0.5")]),
            ..base.clone()
        },
    );
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(1),
            reject(
                "Q",
                8,
                ErrorCause::new(cause::INCONSISTENT_DATA_CONTROL_CONFIGURATION, Bytes::new())
            )
        )]
    );
    // 0x4: the same PE identifier from another association while the first is up; the
    // original entry stays, and the bound PE is probed with a keep-alive at once.
    r.up(2, &["10.2.0.5:5000"]);
    let outs = r.register(2, "Q", pe(7, "10.2.0.5", 7000));
    assert_eq!(
        sent(&outs),
        vec![
            Sent::Asap(to(1), keep_alive(US, "Q", 7, false)),
            Sent::Asap(
                to(2),
                reject(
                    "Q",
                    7,
                    ErrorCause::new(cause::NON_UNIQUE_PE_IDENTIFIER, Bytes::new())
                )
            )
        ]
    );
    let e = r.reg.handlespace().get(&ph("Q"), PeIdentifier(7)).unwrap();
    assert_eq!(e.assoc(), Some(AssocId(1)));
    assert_eq!(e.user_port(), 6000);
    assert_eq!(r.reg.stats().ownership_refusals, 1);
    assert_eq!(r.reg.stats().registration_rejects, 13);
}

#[test]
fn lack_of_resources() {
    let mut cfg = quiet_config(US);
    cfg.limits.handlespace.max_elements = 2;
    cfg.limits.max_elements_per_assoc = 1;
    let mut r = Rig::new(cfg);
    r.up(1, &["10.1.0.5:5000"]);
    r.up(2, &["10.1.0.6:5000"]);
    r.up(3, &["10.1.0.7:5000"]);
    let six = ErrorCause::new(cause::LACK_OF_RESOURCES, Bytes::new());
    assert_eq!(
        sent(&r.register(1, "P", pe(1, "10.1.0.5", 6000))),
        vec![Sent::Asap(to(1), accept("P", 1))]
    );
    // Per-association limit.
    assert_eq!(
        sent(&r.register(1, "P", pe(2, "10.1.0.5", 6001))),
        vec![Sent::Asap(to(1), reject("P", 2, six.clone()))]
    );
    // Re-registration is never refused for resources.
    assert_eq!(
        sent(&r.register(1, "P", pe(1, "10.1.0.5", 6000))),
        vec![Sent::Asap(to(1), accept("P", 1))]
    );
    assert_eq!(
        sent(&r.register(2, "P", pe(2, "10.1.0.6", 6000))),
        vec![Sent::Asap(to(2), accept("P", 2))]
    );
    // Handlespace limit.
    assert_eq!(
        sent(&r.register(3, "P", pe(3, "10.1.0.7", 6000))),
        vec![Sent::Asap(to(3), reject("P", 3, six))]
    );
    assert_eq!(r.reg.handlespace().element_count(), 2);
}

#[test]
fn reregistration_updates_addresses_and_policy() {
    let mut r = rig_with_peer();
    r.up(1, &["10.1.0.5:5000", "10.1.0.6:5000"]);
    let p1 = PoolElementParameter {
        policy: Policy::WeightedRoundRobin { weight: 1 },
        ..pe(0x42, "10.1.0.5", 6000)
    };
    r.register(1, "W", p1);
    let p2 = PoolElementParameter {
        policy: Policy::WeightedRoundRobin { weight: 9 },
        user_transport: TransportParameter::sctp(6001, 1, [ip("10.1.0.5"), ip("10.1.0.6")]),
        ..pe(0x42, "10.1.0.5", 6000)
    };
    let outs = r.register(1, "W", p2.clone());
    let stored2 = PoolElementParameter {
        home_server_id: ServerId(US),
        asap_transport: Some(TransportParameter::sctp(
            5000,
            0,
            [ip("10.1.0.5"), ip("10.1.0.6")],
        )),
        ..p2.clone()
    };
    assert_eq!(
        sent(&outs),
        vec![
            Sent::Enrp(
                to(100),
                EnrpMessage::HandleUpdate(HandleUpdate::new(
                    ServerId(US),
                    ServerId(PEER),
                    UpdateAction::ADD_PE,
                    ph("W"),
                    stored2
                ))
            ),
            Sent::Asap(to(1), accept("W", 0x42)),
        ]
    );
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeReregistered {
            pool_handle: ph("W"),
            pe_id: PeIdentifier(0x42),
            assoc: AssocId(1)
        }]
    );
    let e = r
        .reg
        .handlespace()
        .get(&ph("W"), PeIdentifier(0x42))
        .unwrap();
    assert_eq!(e.policy(), Policy::WeightedRoundRobin { weight: 9 });
    assert_eq!(e.user_port(), 6001);
    assert_eq!(
        e.user_addresses().as_slice(),
        &[ip("10.1.0.5"), ip("10.1.0.6")]
    );
    assert_eq!(r.reg.handlespace().element_count(), 1);
}

#[test]
fn deregistration_and_ownership() {
    let mut r = rig_with_peer();
    r.up(1, &["10.1.0.5:5000"]);
    r.up(2, &["10.2.0.5:5000"]);
    let p = pe(0x55, "10.1.0.5", 6000);
    r.register(1, "D", p.clone());
    // Another association may not deregister it.
    let outs = r.asap(2, Deregistration::new(ph("D"), PeIdentifier(0x55)));
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(2),
            AsapMessage::DeregistrationResponse(DeregistrationResponse {
                pool_handle: ph("D"),
                pe_id: PeIdentifier(0x55),
                error: Some(OperationError::new(ErrorCause::new(
                    cause::REJECTED_SECURITY,
                    Bytes::new()
                ))),
                ..Default::default()
            })
        )]
    );
    assert!(r.reg.handlespace().contains(&ph("D"), PeIdentifier(0x55)));
    // Its own association may: DEL_PE to the peers, then the response.
    let outs = r.asap(1, Deregistration::new(ph("D"), PeIdentifier(0x55)));
    assert_eq!(
        sent(&outs),
        vec![
            Sent::Enrp(
                to(100),
                EnrpMessage::HandleUpdate(HandleUpdate::new(
                    ServerId(US),
                    ServerId(PEER),
                    UpdateAction::DEL_PE,
                    ph("D"),
                    stored(&p, 5000, "10.1.0.5")
                ))
            ),
            Sent::Asap(
                to(1),
                AsapMessage::DeregistrationResponse(DeregistrationResponse {
                    pool_handle: ph("D"),
                    pe_id: PeIdentifier(0x55),
                    ..Default::default()
                })
            ),
        ]
    );
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeRemoved {
            pool_handle: ph("D"),
            pe_id: PeIdentifier(0x55),
            home: ServerId(US),
            reason: RemovalReason::Deregistered
        }]
    );
    // Unknown PE: success anyway.
    let outs = r.asap(2, Deregistration::new(ph("D"), PeIdentifier(0x99)));
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(2),
            AsapMessage::DeregistrationResponse(DeregistrationResponse {
                pool_handle: ph("D"),
                pe_id: PeIdentifier(0x99),
                ..Default::default()
            })
        )]
    );
}

fn hr(pool: &str, items: Option<u32>) -> HandleResolution {
    HandleResolution {
        pool_handle: ph(pool),
        option: items.map(|items| HandleResolutionOption { items }),
        ..Default::default()
    }
}

fn hr_answer(outs: &[Out]) -> HandleResolutionResponse {
    match asap_sent(outs).as_slice() {
        [(_, AsapMessage::HandleResolutionResponse(h))] => h.clone(),
        other => panic!("expected one handle resolution response, got {other:?}"),
    }
}

#[test]
fn handle_resolution_items_rule_and_policy() {
    let mut r = Rig::new(quiet_config(US));
    for i in 1..=5u32 {
        let a = format!("10.1.0.{i}");
        r.up(u64::from(i), &[&format!("{a}:5000")]);
        r.register(u64::from(i), "RR", pe(i, &a, 6000));
    }
    r.up(50, &["10.5.0.1:4000"]);
    let a = hr_answer(&r.asap(50, hr("RR", None)));
    assert_eq!(a.policy, Some(Policy::RoundRobin));
    assert_eq!(a.pool_elements.len(), 3);
    assert!(a.error.is_none());
    // ASAP answers carry no ASAP transport (RSPLIB), the stored home and life.
    for p in &a.pool_elements {
        assert!(p.asap_transport.is_none());
        assert_eq!(p.home_server_id, ServerId(US));
        assert_eq!(p.registration_life, 30_000);
    }
    let ids: Vec<u32> = a.pool_elements.iter().map(|p| p.pe_id.0).collect();
    // Round robin advances by one PE per request.
    let b = hr_answer(&r.asap(50, hr("RR", None)));
    let ids2: Vec<u32> = b.pool_elements.iter().map(|p| p.pe_id.0).collect();
    assert_eq!(ids2[..2], ids[1..]);
    assert_eq!(
        hr_answer(&r.asap(50, hr("RR", Some(1))))
            .pool_elements
            .len(),
        1
    );
    assert_eq!(
        hr_answer(&r.asap(50, hr("RR", Some(0))))
            .pool_elements
            .len(),
        3
    );
    assert_eq!(
        hr_answer(&r.asap(50, hr("RR", Some(200))))
            .pool_elements
            .len(),
        5
    );
    assert_eq!(
        hr_answer(&r.asap(50, hr("RR", Some(u32::MAX))))
            .pool_elements
            .len(),
        5
    );
    // Unknown pool: cause 0x9, no policy, no PEs.
    let outs = r.asap(50, hr("nope", None));
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(50),
            AsapMessage::HandleResolutionResponse(HandleResolutionResponse {
                pool_handle: ph("nope"),
                error: Some(OperationError::new(ErrorCause::new(
                    cause::UNKNOWN_POOL_HANDLE,
                    Bytes::new()
                ))),
                ..Default::default()
            })
        )]
    );
    // Over-long handle: 0x3 quoting it.
    let long = "x".repeat(40);
    let h = hr_answer(&r.asap(50, hr(&long, None)));
    assert_eq!(
        h.error,
        Some(OperationError::new(ErrorCause::new(
            cause::INVALID_VALUES,
            tlv(&ph(&long))
        )))
    );
    // A non-RR pool announces its policy.
    r.up(60, &["10.6.0.1:5000"]);
    r.register(
        60,
        "LU",
        PoolElementParameter {
            policy: Policy::LeastUsed { load: 7 },
            ..pe(9, "10.6.0.1", 6000)
        },
    );
    let h = hr_answer(&r.asap(50, hr("LU", None)));
    assert_eq!(h.policy, Some(Policy::LeastUsed { load: 7 }));
    assert_eq!(r.reg.stats().handle_resolutions, 9);
}

#[test]
fn handle_resolution_rate_limit() {
    let mut cfg = quiet_config(US);
    cfg.max_hr_rate = Some(2);
    let mut r = Rig::new(cfg);
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "P", pe(1, "10.1.0.5", 6000));
    r.up(50, &["10.5.0.1:4000"]);
    assert!(hr_answer(&r.asap(50, hr("P", None))).error.is_none());
    assert!(hr_answer(&r.asap(50, hr("P", None))).error.is_none());
    let limited = hr_answer(&r.asap(50, hr("P", None)));
    assert_eq!(
        limited.error,
        Some(OperationError::new(ErrorCause::new(
            cause::LACK_OF_RESOURCES,
            Bytes::new()
        )))
    );
    r.advance(ms(600));
    assert!(hr_answer(&r.asap(50, hr("P", None))).error.is_none());
    assert_eq!(r.reg.stats().rate_limited, 1);
}

fn keep_alive(id: u32, pool: &str, pe_id: u32, home: bool) -> AsapMessage {
    AsapMessage::EndpointKeepAlive(EndpointKeepAlive {
        home,
        server_id: ServerId(id),
        pool_handle: ph(pool),
        pe_id: Some(PeIdentifier(pe_id)),
        ..Default::default()
    })
}

/// A registrar with a peer and PE 0x77 of pool "K" registered over association 1 (from
/// 10.1.0.5:5000) at the rig's start.
fn rig_with_pe_0x77() -> (Rig, PoolElementParameter) {
    let mut r = rig_with_peer();
    r.up(1, &["10.1.0.5:5000"]);
    let p = pe(0x77, "10.1.0.5", 6000);
    r.register(1, "K", p.clone());
    (r, p)
}

/// The event of PE 0x77 of pool "K" removed by a keep-alive timeout.
fn removed_0x77_by_keep_alive_timeout() -> RegistrarEvent {
    RegistrarEvent::PeRemoved {
        pool_handle: ph("K"),
        pe_id: PeIdentifier(0x77),
        home: ServerId(US),
        reason: RemovalReason::KeepAliveTimeout,
    }
}

#[test]
fn keep_alive_answered_then_lost() {
    let (mut r, p) = rig_with_pe_0x77();
    // 5 s after the registration: a keep-alive with our id and the PE id.
    let outs = r.advance(ms(4999));
    assert!(asap_sent(&outs).is_empty());
    let outs = r.advance(ms(1));
    assert_eq!(
        asap_sent(&outs),
        vec![(to(1), keep_alive(US, "K", 0x77, false))]
    );
    // Ack: the next keep-alive 5 s after it.
    r.advance(secs(1));
    let outs = r.asap(1, EndpointKeepAliveAck::new(ph("K"), PeIdentifier(0x77)));
    assert!(outs.is_empty());
    let e = r
        .reg
        .handlespace()
        .get(&ph("K"), PeIdentifier(0x77))
        .unwrap();
    assert_eq!(
        e.keep_alive(),
        Some((TimerKind::KeepAliveTransmission, r.now + secs(5)))
    );
    // An ack from another association is refused.
    r.up(2, &["10.2.0.5:5000"]);
    r.asap(2, EndpointKeepAliveAck::new(ph("K"), PeIdentifier(0x77)));
    assert_eq!(r.reg.stats().ownership_refusals, 1);
    let outs = r.advance(secs(5));
    assert_eq!(
        asap_sent(&outs),
        vec![(to(1), keep_alive(US, "K", 0x77, false))]
    );
    // No ack within 5 s: removed, DEL_PE to the peers, association left alone.
    let outs = r.advance(ms(4999));
    assert!(main_events(&outs).is_empty() && asap_sent(&outs).is_empty());
    let outs = r.advance(ms(1));
    assert_eq!(
        sent(&outs),
        vec![Sent::Enrp(
            to(100),
            EnrpMessage::HandleUpdate(HandleUpdate::new(
                ServerId(US),
                ServerId(PEER),
                UpdateAction::DEL_PE,
                ph("K"),
                stored(&p, 5000, "10.1.0.5")
            ))
        )]
    );
    assert_eq!(
        main_events(&outs),
        vec![removed_0x77_by_keep_alive_timeout()]
    );
    assert!(!outs.iter().any(|o| matches!(o, Output::Close { .. })));
    assert_eq!(r.reg.stats().keep_alive_timeouts, 1);
}

#[test]
fn reregistration_leaves_an_unanswered_keep_alive_running() {
    let (mut r, p) = rig_with_pe_0x77();
    let outs = r.advance(secs(5));
    assert_eq!(
        asap_sent(&outs),
        vec![(to(1), keep_alive(US, "K", 0x77, false))]
    );
    let sent_at = r.now;
    let timer = |r: &Rig| {
        r.reg
            .handlespace()
            .get(&ph("K"), PeIdentifier(0x77))
            .unwrap()
            .keep_alive()
    };
    // A re-registration over the same association (say one held up in the network while
    // the PE has stopped since): accepted, but the keep-alive's timeout still runs; a live
    // PE answers the keep-alive there.
    r.advance(secs(3));
    let outs = r.register(1, "K", p.clone());
    assert_eq!(asap_sent(&outs), vec![(to(1), accept("K", 0x77))]);
    assert_eq!(
        timer(&r),
        Some((TimerKind::KeepAliveTimeout, sent_at + secs(5)))
    );
    let outs = r.advance(secs(2));
    assert_eq!(
        main_events(&outs),
        vec![removed_0x77_by_keep_alive_timeout()]
    );
    // With no keep-alive outstanding, a re-registration starts the interval again (as
    // RSPLIB's registrar does).
    r.register(1, "K", p.clone());
    r.advance(secs(4));
    r.register(1, "K", p);
    assert_eq!(
        timer(&r),
        Some((TimerKind::KeepAliveTransmission, r.now + secs(5)))
    );
    assert_eq!(r.reg.stats().keep_alive_timeouts, 1);
}

#[test]
fn keep_alive_timers_are_spread_by_jitter() {
    let mut cfg = quiet_config(US);
    cfg.timers.keep_alive_jitter = 0.25;
    let mut r = Rig::new(cfg);
    r.up(1, &["10.1.0.5:5000"]);
    for i in 1..=200u32 {
        r.register(1, "J", pe(i, "10.1.0.5", 6000));
    }
    let hs = r.reg.handlespace();
    let mut ts: Vec<u64> = (1..=200u32)
        .map(|i| {
            hs.get(&ph("J"), PeIdentifier(i))
                .unwrap()
                .keep_alive()
                .unwrap()
                .1
                .as_micros()
        })
        .collect();
    ts.sort();
    ts.dedup();
    assert!(ts.len() > 190, "deadlines collide: {}", ts.len());
    assert!(*ts.first().unwrap() >= 3_750_000 && *ts.last().unwrap() <= 6_250_000);
}

fn eu(pool: &str, id: u32) -> EndpointUnreachable {
    EndpointUnreachable::new(ph(pool), PeIdentifier(id))
}

#[test]
fn unreachable_report_verified_by_keep_alive() {
    let mut r = rig_with_peer();
    r.up(1, &["10.1.0.5:5000"]);
    r.up(2, &["10.2.0.1:4000"]);
    r.up(3, &["10.3.0.1:4000"]);
    r.register(1, "U", pe(1, "10.1.0.5", 6000));
    r.register(1, "U", pe(2, "10.1.0.5", 6001));
    // Report: a keep-alive goes to the PE at once; it is not handed out meanwhile.
    let outs = r.asap(2, eu("U", 1));
    assert_eq!(
        asap_sent(&outs),
        vec![(to(1), keep_alive(US, "U", 1, false))]
    );
    assert!(r.reg.is_suspect(&ph("U"), PeIdentifier(1)));
    let a = hr_answer(&r.asap(3, hr("U", Some(10))));
    assert_eq!(
        a.pool_elements
            .iter()
            .map(|p| p.pe_id.0)
            .collect::<Vec<_>>(),
        vec![2]
    );
    // It answers: kept, handed out again.
    r.advance(ms(20));
    r.asap(1, EndpointKeepAliveAck::new(ph("U"), PeIdentifier(1)));
    assert!(!r.reg.is_suspect(&ph("U"), PeIdentifier(1)));
    assert_eq!(
        hr_answer(&r.asap(3, hr("U", Some(10)))).pool_elements.len(),
        2
    );
    // A second report, unanswered: removed after the keep-alive timeout.
    let outs = r.asap(2, eu("U", 2));
    assert_eq!(
        asap_sent(&outs),
        vec![(to(1), keep_alive(US, "U", 2, false))]
    );
    let outs = r.advance(ms(4999));
    assert!(main_events(&outs).is_empty());
    let outs = r.advance(ms(1));
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeRemoved {
            pool_handle: ph("U"),
            pe_id: PeIdentifier(2),
            home: ServerId(US),
            reason: RemovalReason::KeepAliveTimeout
        }]
    );
    assert_eq!(enrp_sent(&outs).len(), 1);
}

/// Regression (hostile suite, class e): one stranger reporting a live PE right after every
/// answer to its verification keep-alive kept it hidden from handle resolutions for good
/// (475 of 500 answers during a flood of reports did not name it).
#[test]
fn reports_right_after_a_verification_do_not_hide_the_pe_again() {
    let mut r = Rig::new(quiet_config(US));
    r.up(1, &["10.1.0.5:5000"]);
    r.up(2, &["10.2.0.1:4000"]);
    r.up(3, &["10.3.0.1:4000"]);
    r.register(1, "U", pe(1, "10.1.0.5", 6000));
    let named = |r: &mut Rig| {
        !hr_answer(&r.asap(3, hr("U", None)))
            .pool_elements
            .is_empty()
    };
    // First report: verified, hidden until the PE answers.
    assert_eq!(asap_sent(&r.asap(2, eu("U", 1))).len(), 1);
    assert!(!named(&mut r));
    r.advance(ms(10));
    r.asap(1, EndpointKeepAliveAck::new(ph("U"), PeIdentifier(1)));
    assert!(named(&mut r));
    assert_eq!(r.reg.resource_usage().verified, 1);
    // A flood of reports from the same stranger during the next keep-alive interval: no new
    // keep-alive, never hidden.
    for _ in 0..100 {
        assert!(asap_sent(&r.asap(2, eu("U", 1))).is_empty());
        assert!(named(&mut r));
        r.advance(ms(40));
    }
    // Once the interval has passed, a report verifies it again.
    r.advance(ms(1000));
    assert_eq!(asap_sent(&r.asap(2, eu("U", 1))).len(), 1);
    assert!(!named(&mut r));
    r.asap(1, EndpointKeepAliveAck::new(ph("U"), PeIdentifier(1)));
    assert!(named(&mut r));
    // Within the window, enough distinct reporters still start a verification (hidden).
    for (a, host) in [(20, "10.4.0.1"), (21, "10.4.0.2"), (22, "10.4.0.3")] {
        r.up(a, &[&format!("{host}:4000")]);
        r.asap(a, eu("U", 1));
    }
    assert!(!named(&mut r));
    assert!(r.reg.is_suspect(&ph("U"), PeIdentifier(1)));
    // ... and it is removed if it does not answer.
    let outs = r.advance(ms(500));
    assert!(matches!(
        main_events(&outs).as_slice(),
        [RegistrarEvent::PeRemoved {
            reason: RemovalReason::Unreachable,
            ..
        }]
    ));
    assert_eq!(r.reg.resource_usage().verified, 0);
    assert_eq!(r.reg.resource_usage().probes, 0);
}

#[test]
fn unreachable_needs_distinct_reporters() {
    let mut r = Rig::new(quiet_config(US));
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "U", pe(1, "10.1.0.5", 6000));
    r.register(1, "U", pe(2, "10.1.0.5", 6001));
    // Three associations from one host count as one reporter.
    for a in 10..13 {
        r.up(a, &["10.2.0.1:4000"]);
        r.asap(a, eu("U", 1));
    }
    let outs = r.advance(ms(4000));
    assert!(
        main_events(&outs).is_empty(),
        "one reporter must not remove it"
    );
    let outs = r.advance(ms(1000));
    assert!(matches!(
        main_events(&outs).as_slice(),
        [RegistrarEvent::PeRemoved {
            reason: RemovalReason::KeepAliveTimeout,
            ..
        }]
    ));
    // Three distinct reporters while the verification keep-alive is unanswered: removed
    // after the 500 ms grace.
    for (a, host) in [(20, "10.3.0.1"), (21, "10.3.0.2"), (22, "10.3.0.3")] {
        r.up(a, &[&format!("{host}:4000")]);
        r.asap(a, eu("U", 2));
    }
    let outs = r.advance(ms(499));
    assert!(main_events(&outs).is_empty());
    let outs = r.advance(ms(1));
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeRemoved {
            pool_handle: ph("U"),
            pe_id: PeIdentifier(2),
            home: ServerId(US),
            reason: RemovalReason::Unreachable
        }]
    );
}

#[test]
fn unreachable_reports_cannot_remove_a_pe_that_answers() {
    let mut cfg = quiet_config(US);
    cfg.max_bad_pe_reports = 2;
    let mut r = Rig::new(cfg);
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "U", pe(1, "10.1.0.5", 6000));
    for round in 0..5u64 {
        for (a, host) in [(20, "10.3.0.1"), (21, "10.3.0.2"), (22, "10.3.0.3")] {
            r.up(a + round * 10, &[&format!("{host}:4000")]);
            r.asap(a + round * 10, eu("U", 1));
        }
        r.advance(ms(100));
        r.asap(1, EndpointKeepAliveAck::new(ph("U"), PeIdentifier(1)));
        r.advance(ms(1000));
    }
    assert!(r.reg.handlespace().contains(&ph("U"), PeIdentifier(1)));
    assert!(!r.reg.is_suspect(&ph("U"), PeIdentifier(1)));
}

#[test]
fn unreachable_pending_requests_are_bounded() {
    let mut cfg = quiet_config(US);
    cfg.limits.max_pending_requests_per_assoc = 2;
    let mut r = Rig::new(cfg);
    r.up(1, &["10.1.0.5:5000"]);
    for i in 1..=4 {
        r.register(1, "U", pe(i, "10.1.0.5", 6000));
    }
    r.up(2, &["10.2.0.1:4000"]);
    let mut kas = 0;
    for i in 1..=4 {
        kas += asap_sent(&r.asap(2, eu("U", i))).len();
    }
    assert_eq!(kas, 2);
    assert_eq!(r.reg.stats().limit_refusals, 2);
    assert_eq!(r.reg.resource_usage().probes, 2);
}

#[test]
fn association_loss_deregisters_its_elements() {
    let mut r = rig_with_peer();
    r.up(1, &["10.1.0.5:5000"]);
    r.up(2, &["10.1.0.6:5000"]);
    r.register(1, "A", pe(1, "10.1.0.5", 6000));
    r.register(1, "B", pe(2, "10.1.0.5", 6001));
    r.register(2, "A", pe(3, "10.1.0.6", 6000));
    let outs = r.down(1, AssocDownReason::Lost);
    let dels: Vec<_> = enrp_sent(&outs)
        .into_iter()
        .map(|(d, m)| match m {
            EnrpMessage::HandleUpdate(u) => {
                assert_eq!(u.action, UpdateAction::DEL_PE);
                (d, u.pool_handle, u.pool_element.pe_id.0)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(dels, vec![(to(100), ph("A"), 1), (to(100), ph("B"), 2)]);
    assert_eq!(
        main_events(&outs)
            .iter()
            .filter(|e| matches!(
                e,
                RegistrarEvent::PeRemoved {
                    reason: RemovalReason::AssociationLost,
                    ..
                }
            ))
            .count(),
        2
    );
    let hs = r.reg.handlespace();
    assert_eq!(hs.element_count(), 1);
    assert!(hs.contains(&ph("A"), PeIdentifier(3)));
    // Now the PE id 1 may register from another association.
    assert_eq!(
        sent(&r.register(2, "A", pe(1, "10.1.0.6", 6002))),
        vec![
            Sent::Enrp(
                to(100),
                EnrpMessage::HandleUpdate(HandleUpdate::new(
                    ServerId(US),
                    ServerId(PEER),
                    UpdateAction::ADD_PE,
                    ph("A"),
                    stored(&pe(1, "10.1.0.6", 6002), 5000, "10.1.0.6")
                ))
            ),
            Sent::Asap(to(2), accept("A", 1)),
        ]
    );
}

fn asap_error(code: u16, info: &[u8]) -> AsapMessage {
    AsapMessage::Error(AsapError {
        reserved_flags: 0,
        error: OperationError::new(ErrorCause::new(code, Bytes::copy_from_slice(info))),
        skipped: vec![],
    })
}

#[test]
fn unknown_message_types_by_action_bits() {
    let mut r = Rig::new(quiet_config(US));
    r.up(1, &["10.1.0.5:5000"]);
    // 01: report "Unrecognized Message" quoting it.
    let msg = hex("7e000008 deadbeef");
    let outs = r.raw(1, Protocol::PPID_ASAP, &msg);
    assert_eq!(
        sent(&outs),
        vec![Sent::Asap(
            to(1),
            asap_error(cause::UNRECOGNIZED_MESSAGE, &msg)
        )]
    );
    // 00, 10, 11: silent.
    for ty in [0x3eu8, 0xbe, 0xfe] {
        let mut m = msg.clone();
        m[0] = ty;
        assert!(
            r.raw(1, Protocol::PPID_ASAP, &m)
                .iter()
                .all(|o| matches!(o, Output::Event(_)))
        );
    }
    // Never answer an ASAP Error with an error.
    assert!(sent(&r.raw(1, Protocol::PPID_ASAP, &hex("0e000008 00010004"))).is_empty());
    // Nothing closes the association.
    assert_eq!(r.reg.resource_usage().associations, 1);
}

#[test]
fn unknown_parameters_by_action_bits() {
    let mut r = Rig::new(quiet_config(US));
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "P", pe(1, "10.1.0.5", 6000));
    let base = hex("0500000c 00090005 50000000");
    let with = |ty: u16| {
        let mut m = base.clone();
        m.extend_from_slice(&ty.to_be_bytes());
        m.extend_from_slice(&hex("0008 11223344"));
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    };
    let quoted = |ty: u16| {
        let mut q = ty.to_be_bytes().to_vec();
        q.extend_from_slice(&hex("0008 11223344"));
        q
    };
    // 00: stop silently.
    assert!(sent(&r.raw(1, Protocol::PPID_ASAP, &with(0x0fff))).is_empty());
    // 01: stop and report.
    assert_eq!(
        sent(&r.raw(1, Protocol::PPID_ASAP, &with(0x4fff))),
        vec![Sent::Asap(
            to(1),
            asap_error(cause::UNRECOGNIZED_PARAMETER, &quoted(0x4fff))
        )]
    );
    // 10: skip, process.
    let outs = r.raw(1, Protocol::PPID_ASAP, &with(0x8fff));
    assert_eq!(hr_answer(&outs).pool_elements.len(), 1);
    // 11: skip, process, and report.
    let outs = r.raw(1, Protocol::PPID_ASAP, &with(0xcfff));
    let s = sent(&outs);
    assert_eq!(s.len(), 2);
    assert!(
        matches!(&s[0], Sent::Asap(_, AsapMessage::HandleResolutionResponse(h)) if h.pool_elements.len() == 1)
    );
    assert_eq!(
        s[1],
        Sent::Asap(
            to(1),
            asap_error(cause::UNRECOGNIZED_PARAMETER, &quoted(0xcfff))
        )
    );
    // Only RFC cause codes ever go out.
    assert_eq!(r.reg.resource_usage().associations, 1);
}

#[test]
fn malformed_input_gets_rfc_causes_and_never_closes() {
    let mut r = Rig::new(quiet_config(US));
    r.up(1, &["10.1.0.5:5000"]);
    let inputs: Vec<Vec<u8>> = vec![
        hex("01"),
        hex("0100"),
        hex("01000004"),
        hex("01000010 00090008 41424344"),
        hex("01000100 00090008 41424344"),
        hex("05000008 00090003"),
        hex("02000014 00090008 41424344 000e0005 00"),
        hex("09000008 00000000"),
    ];
    for m in &inputs {
        let outs = r.raw(1, Protocol::PPID_ASAP, m);
        for s in sent(&outs) {
            let Sent::Asap(_, msg) = s else { panic!() };
            let err = match &msg {
                AsapMessage::Error(e) => e.error.clone(),
                AsapMessage::RegistrationResponse(x) => x.error.clone().unwrap(),
                AsapMessage::DeregistrationResponse(x) => x.error.clone().unwrap(),
                AsapMessage::HandleResolutionResponse(x) => x.error.clone().unwrap(),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(err.causes.len(), 1);
            assert!(
                err.causes[0].code <= 0x000a,
                "non-RFC cause {:#x}",
                err.causes[0].code
            );
        }
        assert!(!outs.iter().any(|o| matches!(o, Output::Close { .. })));
    }
    assert_eq!(r.reg.stats().decode_errors, inputs.len() as u64);
}

#[test]
fn wrong_ppid_is_ignored_and_counted() {
    let mut r = rig_with_peer();
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "P", pe(1, "10.1.0.5", 6000));
    let reg = registration("P", pe(2, "10.1.0.5", 6000)).to_bytes();
    // An application PPID and the ENRP PPID on an ASAP association: ignored.
    assert!(sent(&r.raw(1, 99, &reg)).is_empty());
    assert!(sent(&r.raw(1, Protocol::PPID_ENRP, &reg)).is_empty());
    // ASAP on the ENRP association: ignored.
    assert!(sent(&r.raw(100, Protocol::PPID_ASAP, &reg)).is_empty());
    assert_eq!(r.reg.stats().wrong_ppid, 3);
    assert_eq!(r.reg.handlespace().element_count(), 1);
    assert!(r.reg.handlespace().get(&ph("P"), PeIdentifier(1)).is_some());
    let _ = PoolHandle::default();
}

#[test]
fn owned_elements_expire_only_when_configured() {
    for expire in [false, true] {
        let mut cfg = quiet_config(US);
        cfg.expire_owned_elements = expire;
        cfg.timers.keep_alive_transmission_interval = secs(100);
        let mut r = Rig::new(cfg);
        r.up(1, &["10.1.0.5:5000"]);
        let mut p = pe(3, "10.1.0.5", 6000);
        p.registration_life = 2000;
        r.register(1, "E", p);
        let outs = r.advance(secs(3));
        if expire {
            assert_eq!(
                asap_sent(&outs),
                vec![(
                    to(1),
                    AsapMessage::DeregistrationResponse(DeregistrationResponse {
                        pool_handle: ph("E"),
                        pe_id: PeIdentifier(3),
                        ..Default::default()
                    })
                )]
            );
            assert!(matches!(
                main_events(&outs).as_slice(),
                [RegistrarEvent::PeRemoved {
                    reason: RemovalReason::Expired,
                    ..
                }]
            ));
        } else {
            assert!(outs.is_empty());
            assert!(r.reg.handlespace().contains(&ph("E"), PeIdentifier(3)));
        }
    }
}
