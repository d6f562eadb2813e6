//! Registrar, ENRP side against scripted peers: table serving (W=0, W=1, continuation,
//! non-peers), checksum audit with mark-and-purge re-synchronisation, Init Takeover naming
//! ourselves, ownership refusals, peer policy, limits, action bits, replica expiry,
//! multicast presences, peer lists, failure detection.

mod reg_common;

use bytes::Bytes;
use reg_common::*;
use rserpool_core::handlespace::checksum::checksum_of;
use rserpool_core::registrar::{
    IpNetwork, PeerDownReason, PeerPolicy, PeerState, ProtocolErrorKind, RegistrarEvent,
    RemovalReason,
};
use rserpool_core::{
    AssocDownReason, AssocId, BulkTransfer, ChannelKind, Destination, Machine, Output, Protocol,
};
use rserpool_proto::asap::EndpointKeepAliveAck;
use rserpool_proto::enrp::{
    EnrpError, HandleTableEntry, HandleTableRequest, HandleTableResponse, HandleUpdate,
    InitTakeover, ListRequest, ListResponse, TakeoverServer, UpdateAction,
};
use rserpool_proto::ids::{PeIdentifier, ServerId};
use rserpool_proto::param::{
    ErrorCause, OperationError, PoolElementParameter, ServerInformation, cause,
};
use rserpool_proto::transport::TransportParameter;
use rserpool_proto::{AsapMessage, EnrpMessage};

const US: u32 = 0xa;
const P: u32 = 0x2222;
const Q: u32 = 0x3333;

fn cfg() -> rserpool_core::registrar::RegistrarConfig {
    let mut c = quiet_config(US);
    c.timers.peer_max_time_last_heard = secs(600);
    c
}

/// A replica as a peer announces it (home = peer, with ASAP transport).
fn replica(id: u32, home: u32, host: &str) -> PoolElementParameter {
    PoolElementParameter {
        home_server_id: ServerId(home),
        asap_transport: Some(TransportParameter::sctp(5000, 0, [ip(host)])),
        ..pe(id, host, 6000)
    }
}

fn add(sender: u32, pool: &str, p: PoolElementParameter) -> HandleUpdate {
    HandleUpdate::new(
        ServerId(sender),
        ServerId(US),
        UpdateAction::ADD_PE,
        ph(pool),
        p,
    )
}

fn del(sender: u32, pool: &str, p: PoolElementParameter) -> HandleUpdate {
    HandleUpdate::new(
        ServerId(sender),
        ServerId(US),
        UpdateAction::DEL_PE,
        ph(pool),
        p,
    )
}

fn table_request(sender: u32, w: bool) -> HandleTableRequest {
    HandleTableRequest {
        own_children_only: w,
        sender: ServerId(sender),
        receiver: ServerId(US),
        ..Default::default()
    }
}

fn table(outs: &[Out]) -> HandleTableResponse {
    match enrp_sent(outs).as_slice() {
        [(_, EnrpMessage::HandleTableResponse(r))] => r.clone(),
        other => panic!("expected one table response, got {other:?}"),
    }
}

fn ids(r: &HandleTableResponse) -> Vec<(String, u32)> {
    r.entries
        .iter()
        .flat_map(|e| {
            e.pool_elements.iter().map(move |p| {
                (
                    String::from_utf8_lossy(e.pool_handle.as_bytes()).into_owned(),
                    p.pe_id.0,
                )
            })
        })
        .collect()
}

/// Us with own PEs A/1, A/3, B/2 and P's replicas A/2, C/5.
fn populated(max_per_response: usize) -> Rig {
    let mut c = cfg();
    c.max_elements_per_table_response = max_per_response;
    let mut r = Rig::new(c);
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "A", pe(1, "10.1.0.5", 6000));
    r.register(1, "A", pe(3, "10.1.0.5", 6000));
    r.register(1, "B", pe(2, "10.1.0.5", 6000));
    r.enrp(100, add(P, "A", replica(2, P, "10.2.0.1")));
    r.enrp(100, add(P, "C", replica(5, P, "10.2.0.1")));
    assert_eq!(r.reg.handlespace().element_count(), 5);
    r
}

#[test]
fn table_serving_w0_w1_and_continuation() {
    let mut r = populated(2);
    // `serving` (PeerView): a walk whose last response had M=1 is open to that peer.
    let serving = |r: &Rig| {
        r.reg
            .peers()
            .find(|p| p.server_id == ServerId(P))
            .expect("peer P")
            .serving
    };
    assert!(!serving(&r));
    // The driver hears of the walk (`poll_bulk_transfer`) when it starts and when it ends,
    // once each.
    let bulk = |r: &mut Rig| std::iter::from_fn(|| r.reg.poll_bulk_transfer()).collect::<Vec<_>>();
    let walk = |running| BulkTransfer {
        assoc: AssocId(100),
        running,
    };
    assert_eq!(bulk(&mut r), vec![]);
    // W=0: everything in (pool handle, PE id) order, with ASAP transports.
    let t1 = table(&r.enrp(100, table_request(P, false)));
    assert_eq!(bulk(&mut r), vec![walk(true)]);
    assert_eq!((t1.sender, t1.receiver), (ServerId(US), ServerId(P)));
    assert!(t1.more && !t1.reject);
    assert_eq!(ids(&t1), vec![("A".into(), 1), ("A".into(), 2)]);
    assert_eq!(
        t1.entries.len(),
        1,
        "one Pool Handle for consecutive PEs of a pool"
    );
    assert!(
        t1.entries[0]
            .pool_elements
            .iter()
            .all(|p| p.asap_transport.is_some())
    );
    // The walk continues whatever the next request's W flag says (RSPLIB).
    assert!(serving(&r));
    let t2 = table(&r.enrp(100, table_request(P, true)));
    assert!(t2.more);
    assert_eq!(ids(&t2), vec![("A".into(), 3), ("B".into(), 2)]);
    assert!(serving(&r));
    assert_eq!(bulk(&mut r), vec![]);
    let t3 = table(&r.enrp(100, table_request(P, false)));
    assert!(!t3.more);
    assert_eq!(ids(&t3), vec![("C".into(), 5)]);
    assert!(!serving(&r), "the walk ended with M=0");
    assert_eq!(bulk(&mut r), vec![walk(false)]);
    // A fresh W=1 walk: only our own PEs.
    let w1 = table(&r.enrp(100, table_request(P, true)));
    assert!(w1.more);
    assert_eq!(ids(&w1), vec![("A".into(), 1), ("A".into(), 3)]);
    let w2 = table(&r.enrp(100, table_request(P, true)));
    assert!(!w2.more);
    assert_eq!(ids(&w2), vec![("B".into(), 2)]);
    assert!(w2.entries[0].pool_elements[0].home_server_id == ServerId(US));
    // A non-peer is rejected.
    r.up(200, &["10.0.0.66:9901"]);
    let outs = r.enrp(200, table_request(0x6666, false));
    assert_eq!(
        enrp_sent(&outs),
        vec![(
            to(200),
            EnrpMessage::HandleTableResponse(HandleTableResponse {
                reject: true,
                sender: ServerId(US),
                receiver: ServerId(0x6666),
                ..Default::default()
            })
        )]
    );
}

#[test]
fn table_response_respects_byte_budget() {
    let mut c = cfg();
    c.max_table_response_bytes = 1400; // RSPLIB's cap
    let mut r = Rig::new(c);
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.up(1, &["10.1.0.5:5000"]);
    for i in 1..=100 {
        r.register(1, "Pool", pe(i, "10.1.0.5", 6000));
    }
    let mut total = 0;
    let mut rounds = 0;
    loop {
        let outs = r.enrp(100, table_request(P, false));
        let bytes = match &outs[..] {
            [Output::Transmit(t)] => t.payload.len(),
            other => panic!("{other:?}"),
        };
        assert!(bytes <= 1400);
        let t = table(&outs);
        total += ids(&t).len();
        rounds += 1;
        if !t.more {
            break;
        }
    }
    assert_eq!(total, 100);
    assert!(rounds >= 5);
}

#[test]
fn checksum_mismatch_triggers_w1_resync_with_purge() {
    let mut r = Rig::new(cfg());
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.enrp(100, add(P, "A", replica(11, P, "10.2.0.1")));
    r.enrp(100, add(P, "A", replica(12, P, "10.2.0.1")));
    // P now owns A/11 and A/13 (A/12 went away and we missed the DEL).
    let a = ph("A");
    let cs = checksum_of([(&a, PeIdentifier(11)), (&a, PeIdentifier(13))]);
    assert_ne!(cs, r.reg.handlespace().owner_checksum(ServerId(P)));
    let outs = r.enrp(100, presence(P, US, "10.0.0.2", cs, false));
    assert_eq!(
        enrp_sent(&outs),
        vec![(
            to(100),
            EnrpMessage::HandleTableRequest(HandleTableRequest {
                own_children_only: true,
                sender: ServerId(US),
                receiver: ServerId(P),
                ..Default::default()
            })
        )]
    );
    // No second request while the sync runs.
    let outs = r.enrp(100, presence(P, US, "10.0.0.2", cs, false));
    assert!(enrp_sent(&outs).is_empty());
    let outs = r.enrp(
        100,
        HandleTableResponse {
            sender: ServerId(P),
            receiver: ServerId(US),
            entries: vec![HandleTableEntry {
                pool_handle: ph("A"),
                pool_elements: vec![replica(11, P, "10.2.0.1"), replica(13, P, "10.2.0.1")],
            }],
            ..Default::default()
        },
    );
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeRemoved {
            pool_handle: ph("A"),
            pe_id: PeIdentifier(12),
            home: ServerId(P),
            reason: RemovalReason::Resynchronised
        }]
    );
    let hs = r.reg.handlespace();
    assert_eq!(hs.owner_checksum(ServerId(P)), cs);
    assert!(hs.contains(&ph("A"), PeIdentifier(13)));
    assert!(!hs.contains(&ph("A"), PeIdentifier(12)));
    // Matching checksum: no request.
    let outs = r.enrp(100, presence(P, US, "10.0.0.2", cs, false));
    assert!(enrp_sent(&outs).is_empty());
    // A multicast presence never triggers a sync.
    let outs = r.datagram("10.0.0.2:9901", presence(P, 0, "10.0.0.2", 0x1234, false));
    assert!(enrp_sent(&outs).is_empty());
}

#[test]
fn init_takeover_naming_us_is_answered_with_presence() {
    let mut r = Rig::new(cfg());
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.add_peer(101, Q, "10.0.0.3", 0xffff);
    let outs = r.enrp(
        100,
        InitTakeover::new(ServerId(P), ServerId(US), ServerId(US)),
    );
    let s = enrp_sent(&outs);
    assert_eq!(s.len(), 2);
    for ((dest, m), (assoc, peer)) in s.iter().zip([(100, P), (101, Q)]) {
        assert_eq!(*dest, to(assoc));
        match m {
            EnrpMessage::Presence(p) => {
                assert_eq!((p.sender, p.receiver), (ServerId(US), ServerId(peer)));
                assert!(!p.reply_required);
            }
            other => panic!("expected a presence, got {other:?}"),
        }
    }
    // Takeover Server naming us: ignored, presence again.
    let outs = r.enrp(
        101,
        TakeoverServer::new(ServerId(Q), ServerId(US), ServerId(US)),
    );
    assert!(
        enrp_sent(&outs)
            .iter()
            .all(|(_, m)| matches!(m, EnrpMessage::Presence(_)))
    );
}

#[test]
fn init_takeover_for_a_peer_we_still_hear_is_acked_only_after_our_own_verdict() {
    let mut c = cfg();
    c.timers.peer_max_time_last_heard = secs(5);
    let mut r = Rig::new(c);
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.add_peer(101, Q, "10.0.0.3", 0xffff);
    r.advance(secs(1));
    r.enrp(101, presence(Q, US, "10.0.0.3", 0xffff, false));
    // P asks to take Q over while Q was heard 0 s ago: we probe Q, no ack yet.
    let outs = r.enrp(
        100,
        InitTakeover::new(ServerId(P), ServerId(US), ServerId(Q)),
    );
    let s = enrp_sent(&outs);
    assert_eq!(s.len(), 1);
    assert!(matches!(&s[0], (d, EnrpMessage::Presence(p)) if *d == to(101) && p.reply_required));
    // Q answers: no ack ever (and P is told nothing).
    let outs = r.enrp(101, presence(Q, US, "10.0.0.3", 0xffff, false));
    assert!(
        !enrp_sent(&outs)
            .iter()
            .any(|(_, m)| matches!(m, EnrpMessage::InitTakeoverAck(_)))
    );
    // Again, and this time Q stays silent: the ack goes out when we declare it dead.
    r.enrp(
        100,
        InitTakeover::new(ServerId(P), ServerId(US), ServerId(Q)),
    );
    r.enrp(100, presence(P, US, "10.0.0.2", 0xffff, false));
    let outs = r.advance(secs(5));
    let acks: Vec<_> = enrp_sent(&outs)
        .into_iter()
        .filter(|(_, m)| matches!(m, EnrpMessage::InitTakeoverAck(_)))
        .collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].0, to(100));
    assert!(main_events(&outs).contains(&RegistrarEvent::PeerDown {
        server_id: ServerId(Q),
        reason: PeerDownReason::TakenOver
    }));
}

#[test]
fn enrp_ownership_refusals() {
    let mut r = Rig::new(cfg());
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.add_peer(101, Q, "10.0.0.3", 0xffff);
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "Own", pe(1, "10.1.0.5", 6000));
    r.enrp(100, add(P, "Rep", replica(7, P, "10.2.0.1")));
    let before: Vec<_> = r.reg.handlespace().walk(None).map(|e| e.info()).collect();
    let refusals = |r: &Rig| r.reg.stats().ownership_refusals;

    // A server that is not a peer changes nothing.
    r.up(300, &["10.0.0.66:9901"]);
    let outs = r.enrp(300, add(0x6666, "Evil", replica(9, 0x6666, "10.0.0.66")));
    assert!(events(&outs).iter().any(|e| matches!(
        e,
        RegistrarEvent::ProtocolError {
            kind: ProtocolErrorKind::NotAPeer { .. },
            ..
        }
    )));
    r.enrp(300, del(0x6666, "Rep", replica(7, P, "10.2.0.1")));
    // A peer using another peer's id over its own association: not bound to it.
    r.enrp(101, del(P, "Rep", replica(7, P, "10.2.0.1")));
    assert_eq!(r.reg.stats().not_peer_refusals, 3);
    // Q may not delete P's PE, nor add one naming P as home.
    r.enrp(101, del(Q, "Rep", replica(7, P, "10.2.0.1")));
    r.enrp(101, add(Q, "Rep", replica(8, P, "10.2.0.1")));
    // Q may not move P's PE to itself while P is alive.
    r.enrp(101, add(Q, "Rep", replica(7, Q, "10.2.0.1")));
    assert_eq!(refusals(&r), 3);
    // Takeover Server from Q for P, which we never agreed to: refused.
    r.enrp(
        101,
        TakeoverServer::new(ServerId(Q), ServerId(US), ServerId(P)),
    );
    assert_eq!(refusals(&r), 4);
    let after: Vec<_> = r.reg.handlespace().walk(None).map(|e| e.info()).collect();
    assert_eq!(before, after);

    // Q claims our PE: ignored, and we check the PE with a keep-alive at once.
    let outs = r.enrp(101, add(Q, "Own", replica(1, Q, "10.1.0.5")));
    assert!(matches!(
        asap_sent(&outs).as_slice(),
        [(d, AsapMessage::EndpointKeepAlive(k))] if *d == to(1) && !k.home
    ));
    assert_eq!(
        r.reg
            .handlespace()
            .get(&ph("Own"), PeIdentifier(1))
            .unwrap()
            .home_registrar(),
        ServerId(US)
    );
    // It answers: we re-assert ownership with an ADD to every peer.
    let outs = r.asap(1, EndpointKeepAliveAck::new(ph("Own"), PeIdentifier(1)));
    let adds: Vec<_> = enrp_sent(&outs)
        .into_iter()
        .map(|(d, m)| match m {
            EnrpMessage::HandleUpdate(u) => {
                assert_eq!(u.action, UpdateAction::ADD_PE);
                assert_eq!(u.pool_element.home_server_id, ServerId(US));
                d
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(adds, vec![to(100), to(101)]);
    // A DEL for our PE from a peer: ignored.
    r.enrp(101, del(Q, "Own", replica(1, US, "10.1.0.5")));
    assert!(r.reg.handlespace().contains(&ph("Own"), PeIdentifier(1)));
    // An impostor: P's id from another address.
    r.up(301, &["10.0.0.77:9901"]);
    let outs = r.enrp(301, presence(P, US, "10.0.0.77", 0xffff, true));
    assert!(enrp_sent(&outs).is_empty());
    assert_eq!(r.reg.peers().count(), 2);
}

#[test]
fn peer_policies() {
    let mut c = cfg();
    c.peer_policy = PeerPolicy::StaticOnly;
    c.static_peers = vec![vec![sa("10.0.0.2:9901")]];
    let mut r = Rig::new(c);
    r.drain();
    // The static peer is accepted (it learns its id) ...
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    let v: Vec<_> = r.reg.peers().map(|p| (p.server_id, p.is_static)).collect();
    assert_eq!(v, vec![(ServerId(P), true)]);
    // ... anyone else is not.
    let outs = r.add_peer(101, Q, "10.0.0.3", 0xffff);
    assert!(enrp_sent(&outs).is_empty());
    assert_eq!(r.reg.peers().count(), 1);

    let mut c = cfg();
    c.peer_policy = PeerPolicy::AllowedNetworks(vec![IpNetwork::new(ip("10.0.0.0"), 24)]);
    let mut r = Rig::new(c);
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.add_peer(101, Q, "10.7.0.3", 0xffff);
    let v: Vec<_> = r.reg.peers().map(|p| p.server_id).collect();
    assert_eq!(v, vec![ServerId(P)]);

    let mut c = cfg();
    c.limits.max_peers = 1;
    let mut r = Rig::new(c);
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.add_peer(101, Q, "10.0.0.3", 0xffff);
    assert_eq!(r.reg.peers().count(), 1);
    assert_eq!(r.reg.stats().limit_refusals, 1);
}

#[test]
fn enrp_limits_answer_lack_of_resources() {
    let mut c = cfg();
    c.limits.handlespace.max_elements = 1;
    let mut r = Rig::new(c);
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.enrp(100, add(P, "A", replica(1, P, "10.2.0.1")));
    let outs = r.enrp(100, add(P, "A", replica(2, P, "10.2.0.1")));
    assert_eq!(
        enrp_sent(&outs),
        vec![(
            to(100),
            EnrpMessage::Error(EnrpError {
                reserved_flags: 0,
                sender: ServerId(US),
                receiver: ServerId(P),
                error: OperationError::new(ErrorCause::new(cause::LACK_OF_RESOURCES, Bytes::new())),
                skipped: vec![],
            })
        )]
    );
    assert!(!outs.iter().any(|o| matches!(o, Output::Close { .. })));
    assert_eq!(r.reg.handlespace().element_count(), 1);
}

#[test]
fn enrp_action_bits() {
    let mut r = Rig::new(cfg());
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    let err = |code: u16, info: &[u8], receiver: u32| {
        EnrpMessage::Error(EnrpError {
            reserved_flags: 0,
            sender: ServerId(US),
            receiver: ServerId(receiver),
            error: OperationError::new(ErrorCause::new(code, Bytes::copy_from_slice(info))),
            skipped: vec![],
        })
    };
    let unknown = hex("7e00000c 00002222 0000000a");
    assert_eq!(
        enrp_sent(&r.raw(100, Protocol::PPID_ENRP, &unknown)),
        vec![(to(100), err(cause::UNRECOGNIZED_MESSAGE, &unknown, P))]
    );
    let mut silent = unknown.clone();
    silent[0] = 0x3e;
    assert!(enrp_sent(&r.raw(100, Protocol::PPID_ENRP, &silent)).is_empty());
    // A list request with a trailing unknown "stop and report" parameter.
    let lr = hex("0500001400002222 0000000a 4fff0008 00000000");
    assert_eq!(
        enrp_sent(&r.raw(100, Protocol::PPID_ENRP, &lr)),
        vec![(
            to(100),
            err(cause::UNRECOGNIZED_PARAMETER, &hex("4fff0008 00000000"), P)
        )]
    );
    // Skip and report: processed (list response) and reported.
    let mut lr11 = lr.clone();
    lr11[12] = 0xcf;
    let s = enrp_sent(&r.raw(100, Protocol::PPID_ENRP, &lr11));
    assert_eq!(s.len(), 2);
    assert!(matches!(&s[0].1, EnrpMessage::ListResponse(l) if !l.reject));
    assert_eq!(
        s[1].1,
        err(cause::UNRECOGNIZED_PARAMETER, &hex("cfff0008 00000000"), P)
    );
    // RSPLIB's case: a Handle Table Request with an extra known parameter. RSPLIB sends
    // cause 0x0010; we send RFC "Invalid Values".
    let htr = hex("0200001400002222 0000000a 000e0008 00000001");
    let s = enrp_sent(&r.raw(100, Protocol::PPID_ENRP, &htr));
    assert!(
        matches!(&s[..], [(_, EnrpMessage::Error(e))] if e.error.causes[0].code == cause::INVALID_VALUES)
    );
    assert_eq!(r.reg.resource_usage().associations, 1);
}

/// Regression (hostile suite, class b): a "skip and report" parameter in a message from a
/// server that is not a peer was never reported, because the refusal returned early.
#[test]
fn skip_and_report_parameters_are_reported_to_non_peers_too() {
    let mut r = Rig::new(cfg());
    let err = |code: u16, info: &[u8], receiver: u32| {
        EnrpMessage::Error(EnrpError {
            reserved_flags: 0,
            sender: ServerId(US),
            receiver: ServerId(receiver),
            error: OperationError::new(ErrorCause::new(code, Bytes::copy_from_slice(info))),
            skipped: vec![],
        })
    };
    r.up(300, &["10.0.0.66:9901"]);
    let lr11 = hex("0500001400006666 0000000a cfff0008 00000000");
    let s = enrp_sent(&r.raw(300, Protocol::PPID_ENRP, &lr11));
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(matches!(&s[0].1, EnrpMessage::ListResponse(l) if l.reject));
    assert_eq!(
        s[1].1,
        err(
            cause::UNRECOGNIZED_PARAMETER,
            &hex("cfff0008 00000000"),
            0x6666
        )
    );
    // "Skip" alone: only the refusal.
    let mut lr10 = lr11.clone();
    lr10[12] = 0x8f;
    let s = enrp_sent(&r.raw(300, Protocol::PPID_ENRP, &lr10));
    assert!(
        matches!(&s[..], [(_, EnrpMessage::ListResponse(l))] if l.reject),
        "{s:?}"
    );
    assert_eq!(r.reg.stats().not_peer_refusals, 2);
    assert_eq!(r.reg.peers().count(), 0);
}

#[test]
fn replicas_expire_by_registration_life() {
    let mut r = Rig::new(cfg());
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.enrp(100, add(P, "A", replica(1, P, "10.2.0.1")));
    r.advance(secs(20));
    // Refreshed by the next ADD (a re-registration at P).
    r.enrp(100, add(P, "A", replica(1, P, "10.2.0.1")));
    let outs = r.advance(ms(29_999));
    assert!(main_events(&outs).is_empty());
    let outs = r.advance(ms(1));
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeRemoved {
            pool_handle: ph("A"),
            pe_id: PeIdentifier(1),
            home: ServerId(P),
            reason: RemovalReason::Expired
        }]
    );
    // Silently: no handle update.
    assert!(
        !enrp_sent(&outs)
            .iter()
            .any(|(_, m)| matches!(m, EnrpMessage::HandleUpdate(_)))
    );
}

#[test]
fn multicast_presence_and_peer_lists() {
    let mut c = cfg();
    c.enrp_announce = Some(rserpool_core::registrar::ENRP_ANNOUNCE_GROUP);
    let mut r = Rig::new(c);
    // Active discovery at start: a presence with R to the multicast channel at once.
    let start = r.drain();
    assert!(matches!(
        &enrp_sent(&start)[..],
        [(Destination::Udp(g), EnrpMessage::Presence(p))]
            if *g == rserpool_core::registrar::ENRP_ANNOUNCE_GROUP && p.reply_required
    ));
    // Nobody answers: the start-up phase ends after the mentor discovery timeout.
    let outs = r.advance(secs(5));
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::MentorSyncComplete {
            mentor: None,
            elements: 0
        }]
    );
    // A presence on the multicast channel from a new registrar: we greet it over SCTP.
    let outs = r.datagram("10.0.0.2:40000", presence(P, 0, "10.0.0.2", 0xffff, false));
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeerUp {
            server_id: ServerId(P)
        }]
    );
    let (assoc, addrs, channel) = outs
        .iter()
        .find_map(|o| match o {
            Output::Connect {
                assoc,
                addrs,
                channel,
                ..
            } => Some((*assoc, addrs.to_vec(), *channel)),
            _ => None,
        })
        .unwrap();
    assert_eq!(addrs, vec![sa("10.0.0.2:9901")]);
    assert_eq!(channel, ChannelKind::Enrp);
    let s = enrp_sent(&outs);
    assert!(
        matches!(&s[..], [(Destination::Assoc(a), EnrpMessage::Presence(p))] if *a == assoc && p.reply_required && p.receiver == ServerId(P))
    );
    // Only presences count on the multicast channel.
    let outs = r.datagram("10.0.0.2:40000", add(P, "A", replica(1, P, "10.2.0.1")));
    assert!(r.reg.handlespace().is_empty());
    assert!(enrp_sent(&outs).is_empty());
    // P answers over the association we opened: bound, audit, list request.
    r.reg.handle_assoc_up(r.now, assoc, &[sa("10.0.0.2:9901")]);
    let outs = r.enrp_on(assoc, presence(P, US, "10.0.0.2", 0xffff, false));
    let s = enrp_sent(&outs);
    assert!(matches!(&s[..], [(_, EnrpMessage::ListRequest(_))]));
    // P's list: itself, a static entry without id, another registrar R.
    let si = |id: u32, host: &str| ServerInformation {
        server_id: ServerId(id),
        transport: TransportParameter::sctp(9901, 0, [ip(host)]),
    };
    let outs = r.enrp_on(
        assoc,
        ListResponse {
            sender: ServerId(P),
            receiver: ServerId(US),
            servers: vec![
                si(0, "10.0.0.8"),
                si(US, "10.0.0.1"),
                si(0x4444, "10.0.0.9"),
            ],
            ..Default::default()
        },
    );
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeerUp {
            server_id: ServerId(0x4444)
        }]
    );
    assert!(
        outs.iter().any(
            |o| matches!(o, Output::Connect { addrs, .. } if addrs[..] == [sa("10.0.0.9:9901")])
        )
    );
    // Our list for P: every entry (P itself included), not us.
    let outs = r.enrp_on(
        assoc,
        ListRequest {
            sender: ServerId(P),
            receiver: ServerId(US),
            ..Default::default()
        },
    );
    match enrp_sent(&outs).as_slice() {
        [(_, EnrpMessage::ListResponse(l))] => {
            let got: Vec<_> = l.servers.iter().map(|s| s.server_id.0).collect();
            assert_eq!(got, vec![P, 0x4444]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn failure_detection_timers_and_fast_probe() {
    let mut c = quiet_config(US);
    c.timers.peer_max_time_last_heard = secs(5);
    c.timers.peer_max_time_no_response = secs(5);
    let mut r = Rig::new(c);
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.add_peer(101, Q, "10.0.0.3", 0xffff);
    let t0 = r.now;
    // P's association is lost: at once a new association and a presence with R.
    let outs = r.down(100, AssocDownReason::Lost);
    let new_assoc = outs
        .iter()
        .find_map(|o| match o {
            Output::Connect { assoc, .. } => Some(*assoc),
            _ => None,
        })
        .expect("reconnect");
    assert!(
        matches!(&enrp_sent(&outs)[..], [(Destination::Assoc(a), EnrpMessage::Presence(p))] if *a == new_assoc && p.reply_required)
    );
    // Q just stays silent. P is declared dead after 5 s, Q after 5 + 5 s.
    let outs = r.advance(secs(20));
    let downs: Vec<_> = main_events(&outs)
        .into_iter()
        .filter(|e| matches!(e, RegistrarEvent::PeerDown { .. }))
        .collect();
    assert_eq!(downs.len(), 2);
    let _ = t0;
    assert_eq!(r.reg.peers().count(), 0);
}

#[test]
fn failure_detection_exact_times() {
    let mut c = quiet_config(US);
    c.timers.peer_max_time_last_heard = secs(5);
    c.timers.peer_max_time_no_response = secs(5);
    let mut r = Rig::new(c);
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.add_peer(101, Q, "10.0.0.3", 0xffff);
    r.down(100, AssocDownReason::Lost);
    let mut downs = Vec::new();
    for _ in 0..2000 {
        let outs = r.advance(ms(10));
        for e in main_events(&outs) {
            if let RegistrarEvent::PeerDown { server_id, .. } = e {
                downs.push((server_id, r.now.as_millis()));
            }
        }
    }
    assert_eq!(downs, vec![(ServerId(P), 5000), (ServerId(Q), 10_000)]);
    let _ = PeerState::Alive;
    let _ = AssocId(0);
}

#[test]
fn server_announces_and_heartbeats() {
    let mut announces = Vec::new();
    let mut multicast_presences = Vec::new();
    let mut unicast_presences = 0;
    let mut r2 = {
        let mut c = cfg();
        c.asap_announce = Some(rserpool_core::registrar::ASAP_ANNOUNCE_GROUP);
        c.enrp_announce = Some(rserpool_core::registrar::ENRP_ANNOUNCE_GROUP);
        c.asap_transports = vec![TransportParameter::sctp(3863, 0, [ip("10.0.0.1")])];
        Rig::new(c)
    };
    r2.drain();
    r2.add_peer(100, P, "10.0.0.2", 0xffff);
    for _ in 0..6000 {
        let outs = r2.advance(ms(10));
        let t = r2.now;
        for o in &outs {
            if let Output::Transmit(tx) = o {
                match (&tx.dest, tx.ppid) {
                    (Destination::Udp(g), Protocol::PPID_ASAP) => {
                        assert_eq!(*g, rserpool_core::registrar::ASAP_ANNOUNCE_GROUP);
                        match AsapMessage::decode(&tx.payload).unwrap() {
                            AsapMessage::ServerAnnounce(a) => {
                                assert_eq!(a.server_id, ServerId(US));
                                assert_eq!(
                                    a.transports,
                                    vec![TransportParameter::sctp(3863, 0, [ip("10.0.0.1")])]
                                );
                                announces.push(t.as_millis());
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                    (Destination::Udp(g), Protocol::PPID_ENRP) => {
                        assert_eq!(*g, rserpool_core::registrar::ENRP_ANNOUNCE_GROUP);
                        multicast_presences.push(t.as_millis());
                    }
                    (Destination::Assoc(_), Protocol::PPID_ENRP) => {
                        if matches!(
                            EnrpMessage::decode(&tx.payload),
                            Ok(EnrpMessage::Presence(_))
                        ) {
                            unicast_presences += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        // Keep P alive.
        if r2.now.as_millis() % 2000 == 0 {
            r2.enrp(100, presence(P, US, "10.0.0.2", 0xffff, false));
        }
    }
    // Announces every 1 s ± 12.5 % (RSPLIB), heartbeats every 2.444 s ± 12.5 % to the
    // multicast channel and to the peer.
    let gaps = |v: &[u64]| v.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>();
    let ag = gaps(&announces);
    assert!(ag.len() >= 50, "{}", ag.len());
    assert!(ag.iter().all(|&g| (870..=1130).contains(&g)), "{ag:?}");
    assert!(
        ag.iter().collect::<std::collections::BTreeSet<_>>().len() > 10,
        "jittered"
    );
    let hg = gaps(&multicast_presences[1..]);
    assert!(hg.iter().all(|&g| (2130..=2760).contains(&g)), "{hg:?}");
    assert!(unicast_presences >= hg.len());
}

#[test]
fn takeover_suggestion_sends_and_claims() {
    let mut c = cfg();
    c.server_id = Some(ServerId(0x10));
    c.takeover_suggestion = true;
    let mut r = Rig::new(c);
    r.add_peer(100, 0x20, "10.0.0.2", 0xffff);
    r.add_peer(101, 0x30, "10.0.0.3", 0xffff);
    r.up(1, &["10.1.0.5:5000"]);
    // PE 1: 0x30 ^ 1 is the largest XOR, larger than ours: Q gets an extra T copy.
    let outs = r.register(1, "S", pe(1, "10.1.0.5", 6000));
    let flags: Vec<_> = enrp_sent(&outs)
        .into_iter()
        .map(|(d, m)| match m {
            EnrpMessage::HandleUpdate(u) => (d, u.takeover_suggested),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        flags,
        vec![(to(100), false), (to(101), false), (to(101), true)]
    );
    // A suggestion to us: we claim the PE with an H-bit keep-alive to its ASAP transport.
    let mut u = HandleUpdate::new(
        ServerId(0x20),
        ServerId(0x10),
        UpdateAction::ADD_PE,
        ph("T"),
        replica(7, 0x20, "10.2.0.1"),
    );
    u.takeover_suggested = true;
    let outs = r.enrp(100, u);
    let assoc = outs
        .iter()
        .find_map(|o| match o {
            Output::Connect {
                assoc,
                addrs,
                channel,
                ..
            } => {
                assert_eq!(addrs[..], [sa("10.2.0.1:5000")]);
                assert_eq!(*channel, ChannelKind::AsapToPoolElement);
                Some(*assoc)
            }
            _ => None,
        })
        .unwrap();
    assert!(
        matches!(&asap_sent(&outs)[..], [(Destination::Assoc(a), AsapMessage::EndpointKeepAlive(k))] if *a == assoc && k.home && k.server_id == ServerId(0x10))
    );
    r.reg.handle_assoc_up(r.now, assoc, &[sa("10.2.0.1:5000")]);
    r.drain();
    // The PE accepts: it is ours now, bound to that association, announced to the peers.
    r.reg.handle_message(
        r.now,
        assoc,
        Protocol::PPID_ASAP,
        AsapMessage::from(EndpointKeepAliveAck::new(ph("T"), PeIdentifier(7))).to_bytes(),
    );
    let outs = r.drain();
    let e = r.reg.handlespace().get(&ph("T"), PeIdentifier(7)).unwrap();
    assert_eq!(
        (e.home_registrar(), e.assoc()),
        (ServerId(0x10), Some(assoc))
    );
    assert_eq!(
        enrp_sent(&outs)
            .iter()
            .filter(|(_, m)| matches!(m, EnrpMessage::HandleUpdate(u) if u.pool_element.home_server_id == ServerId(0x10)))
            .count(),
        3,
        "ADD to both peers, plus the suggestion copy for our new PE"
    );
}

/// A rig with peer P (10.0.0.2) whose association was lost: the association we opened to
/// P's address at once (the probe), up.
fn peer_lost_and_probed() -> (Rig, AssocId) {
    let mut r = Rig::new(quiet_config(US));
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    let outs = r.down(100, AssocDownReason::Lost);
    let probe = outs
        .iter()
        .find_map(|o| match o {
            Output::Connect { assoc, .. } => Some(*assoc),
            _ => None,
        })
        .expect("probe");
    r.reg.handle_assoc_up(r.now, probe, &[sa("10.0.0.2:9901")]);
    r.drain();
    (r, probe)
}

#[test]
fn peer_association_follows_the_one_the_peer_set_up() {
    // Our association to P (re-made after a loss) and P's own to us: P speaks on its own, as
    // RSPLIB does (one ENRP socket; it drops Presences arriving from another port than its
    // peer's ENRP port). We follow it, and never swap back to ours.
    let (mut r, ours) = peer_lost_and_probed();
    // Where the heartbeats of the next 4 s went (one or two of them).
    let heartbeat_dest = |r: &mut Rig| -> Vec<Destination> {
        let mut d: Vec<Destination> = enrp_sent(&r.advance(secs(4)))
            .into_iter()
            .filter(|(_, m)| matches!(m, EnrpMessage::Presence(_)))
            .map(|(d, _)| d)
            .collect();
        d.dedup();
        d
    };
    assert_eq!(heartbeat_dest(&mut r), vec![Destination::Assoc(ours)]);
    // P sets up its own association and sends its Presence there.
    r.up(101, &["10.0.0.2:9901"]);
    r.enrp(101, presence(P, US, "10.0.0.2", 0xffff, false));
    assert_eq!(heartbeat_dest(&mut r), vec![to(101)]);
    // A Presence on ours again does not swap back.
    r.enrp_on(ours, presence(P, US, "10.0.0.2", 0xffff, false));
    assert_eq!(heartbeat_dest(&mut r), vec![to(101)]);
    let v: Vec<_> = r.reg.peers().map(|p| (p.server_id, p.state)).collect();
    assert_eq!(v, vec![(ServerId(P), PeerState::Alive)]);
}

#[test]
fn resync_after_an_interrupted_walk_imports_but_does_not_purge() {
    let mut r = Rig::new(cfg());
    r.add_peer(100, P, "10.0.0.2", 0xffff);
    r.enrp(100, add(P, "A", replica(11, P, "10.2.0.1")));
    r.enrp(100, add(P, "A", replica(12, P, "10.2.0.1")));
    let a = ph("A");
    let cs = checksum_of([(&a, PeIdentifier(11)), (&a, PeIdentifier(13))]);
    let response = |more: bool, reject: bool, ids: &[u32]| HandleTableResponse {
        sender: ServerId(P),
        receiver: ServerId(US),
        more,
        reject,
        entries: if ids.is_empty() {
            Vec::new()
        } else {
            vec![HandleTableEntry {
                pool_handle: ph("A"),
                pool_elements: ids.iter().map(|&i| replica(i, P, "10.2.0.1")).collect(),
            }]
        },
        ..Default::default()
    };
    // A re-synchronisation is interrupted after its first response (M=1): P refuses the
    // next request, but (an RSPLIB server) keeps the cursor of that walk.
    r.enrp(100, presence(P, US, "10.0.0.2", cs, false));
    r.enrp(100, response(true, false, &[11]));
    r.enrp(100, response(false, true, &[]));
    // The next one may receive only the rest of the old walk: it imports, purges nothing.
    let outs = r.enrp(100, presence(P, US, "10.0.0.2", cs, false));
    assert_eq!(enrp_sent(&outs).len(), 1, "a new W=1 request");
    let outs = r.enrp(100, response(false, false, &[13]));
    assert!(main_events(&outs).is_empty(), "{:?}", main_events(&outs));
    let hs = r.reg.handlespace();
    assert!(
        hs.contains(&a, PeIdentifier(12)),
        "not purged after a partial walk"
    );
    assert!(hs.contains(&a, PeIdentifier(13)));
    // That walk ended (M=0): the next re-synchronisation sees the table from its start and
    // purges what P no longer has.
    r.enrp(100, presence(P, US, "10.0.0.2", cs, false));
    let outs = r.enrp(100, response(false, false, &[11, 13]));
    assert_eq!(
        main_events(&outs),
        vec![RegistrarEvent::PeRemoved {
            pool_handle: a.clone(),
            pe_id: PeIdentifier(12),
            home: ServerId(P),
            reason: RemovalReason::Resynchronised
        }]
    );
}

#[test]
fn a_registrar_restarted_with_a_new_id_answers_our_probe_and_becomes_a_peer() {
    // P's association is lost; we probe its address at once.
    let (mut r, probe) = peer_lost_and_probed();
    // A new registrar (id Q) runs there now and answers on our probe.
    r.enrp_on(probe, presence(Q, US, "10.0.0.2", 0xffff, true));
    assert!(
        r.reg
            .peers()
            .any(|p| p.server_id == ServerId(Q) && p.state == PeerState::Alive),
        "Q is a peer"
    );
    // Its table request over that association is served, not refused.
    let outs = r.enrp_on(probe, table_request(Q, false));
    let t = table(&outs);
    assert!(!t.reject, "served");
    assert_eq!(t.receiver, ServerId(Q));
}
