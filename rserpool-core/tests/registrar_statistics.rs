//! Registrar statistics as RSPLIB keeps them (statistics file, scalar file), the action
//! log records, and the autoclose of idle associations.

mod reg_common;

use reg_common::*;
use rserpool_core::registrar::{ActionDirection, ActionRecord, RegistrarStatistics};
use rserpool_core::{AssocDownReason, AssocId, Output};
use rserpool_proto::EnrpMessage;
use rserpool_proto::asap::{
    Deregistration, EndpointKeepAliveAck, EndpointUnreachable, HandleResolution,
};
use rserpool_proto::enrp::{
    HandleTableRequest, HandleUpdate, ListRequest, ListResponse, UpdateAction,
};
use rserpool_proto::ids::{PeIdentifier, ServerId};
use rserpool_proto::param::{PoolElementParameter, ServerInformation, cause};
use rserpool_proto::transport::TransportParameter;

const US: u32 = 0x0000_000a;
const PEER: u32 = 0x0000_2222;

fn hr(pool: &str) -> HandleResolution {
    HandleResolution {
        pool_handle: ph(pool),
        ..Default::default()
    }
}

fn actions(r: &mut Rig) -> Vec<ActionRecord> {
    let mut v = Vec::new();
    while let Some(a) = r.reg.poll_action() {
        v.push(a);
    }
    v
}

/// (direction, protocol, action, reason) of each record.
fn words(v: &[ActionRecord]) -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    v.iter()
        .map(|a| (a.direction.as_str(), a.protocol, a.action, a.reason))
        .collect()
}

#[test]
fn counters_follow_rsplib_definitions() {
    let mut cfg = quiet_config(US);
    cfg.timers.peer_max_time_last_heard = secs(600);
    let mut r = Rig::new(cfg);
    assert_eq!(r.reg.statistics(), RegistrarStatistics::default());
    r.add_peer(100, PEER, "10.0.0.2", 0xffff);
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "P", pe(0x11, "10.1.0.5", 6000));
    r.register(1, "P", pe(0x12, "10.1.0.5", 6001));
    // Re-registration of 0x11: counted twice (registration and re-registration).
    r.register(1, "P", pe(0x11, "10.1.0.5", 6000));
    r.up(2, &["10.9.0.1:7000"]);
    r.asap(2, hr("P"));
    r.asap(2, hr("P"));
    r.asap(2, hr("Nope"));
    r.asap(2, EndpointUnreachable::new(ph("P"), PeIdentifier(0x12)));
    r.asap(1, Deregistration::new(ph("P"), PeIdentifier(0x12)));
    // Deregistering an unknown PE succeeds on the wire but removes nothing.
    r.asap(1, Deregistration::new(ph("P"), PeIdentifier(0x99)));
    // A Handle Update from the peer: a replica in another pool.
    r.enrp(
        100,
        HandleUpdate::new(
            ServerId(PEER),
            ServerId(US),
            UpdateAction::ADD_PE,
            ph("Q"),
            PoolElementParameter {
                home_server_id: ServerId(PEER),
                ..pe(0x21, "10.3.0.1", 6000)
            },
        ),
    );
    r.enrp(
        100,
        HandleTableRequest {
            sender: ServerId(PEER),
            receiver: ServerId(US),
            ..Default::default()
        },
    );
    // One keep-alive to the remaining own PE after 5 s.
    r.advance(secs(5));
    let s = r.reg.statistics();
    assert_eq!(
        s,
        RegistrarStatistics {
            peers: 1,
            pools: 2,
            pool_elements: 2,
            owned_pool_elements: 1,
            registrations: 3,
            reregistrations: 1,
            deregistrations: 1,
            handle_resolutions: 3,
            failure_reports: 1,
            synchronizations: 1,
            handle_updates: 1,
            // The verification keep-alive after the failure report, and the periodic one.
            endpoint_keep_alives: 2,
        }
    );
}

#[test]
fn averages_are_weighted_by_time() {
    let mut r = Rig::new(quiet_config(US));
    r.up(1, &["10.1.0.5:5000"]);
    r.advance(secs(1));
    // 1 PE from t=1 s on.
    r.register(1, "A", pe(1, "10.1.0.5", 6000));
    r.advance(secs(1));
    // 2 PEs from t=2 s on, in 2 pools.
    r.register(1, "B", pe(2, "10.1.0.5", 6001));
    r.advance(secs(2));
    // At t=4 s: PEs (0·1 + 1·1 + 2·2) / 4 = 1.25, pools the same.
    let a = r.reg.statistics_averages(r.now);
    assert!((a.pool_elements - 1.25).abs() < 1e-6, "{a:?}");
    assert!((a.pools - 1.25).abs() < 1e-6, "{a:?}");
    assert!((a.owned_pool_elements - 1.25).abs() < 1e-6, "{a:?}");
    assert_eq!(a.peers, 0.0);
    // Association lost at t=4 s: both gone; at t=8 s the average is 5 / 8.
    r.down(1, AssocDownReason::Lost);
    r.advance(secs(4));
    let a = r.reg.statistics_averages(r.now);
    assert!((a.pool_elements - 0.625).abs() < 1e-6, "{a:?}");
}

#[test]
fn action_log_records_asap_actions_with_rsplib_words() {
    let mut cfg = quiet_config(US);
    cfg.action_log = true;
    let mut r = Rig::new(cfg);
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "P", pe(0x11, "10.1.0.5", 6000));
    let v = actions(&mut r);
    assert_eq!(
        words(&v),
        vec![
            ("Recv", "ASAP", "Registration", "Requested"),
            ("Recv", "ASAP", "RegistrationResponse", "Requested"),
        ]
    );
    assert_eq!(v[0].pool_handle, Some(ph("P")));
    assert_eq!(v[0].pe_id, 0x11);
    assert_eq!(v[0].sender, ServerId(US));
    assert_eq!(v[1].error_code, 0);

    r.up(2, &["10.9.0.1:7000"]);
    r.asap(2, hr("P"));
    r.asap(2, hr("Nope"));
    let v = actions(&mut r);
    assert_eq!(
        words(&v),
        vec![
            ("Recv", "ASAP", "HandleResolution", "Requested"),
            ("Send", "ASAP", "HandleResolutionResponse", "Requested"),
            ("Recv", "ASAP", "HandleResolution", "Requested"),
            ("Send", "ASAP", "HandleResolutionResponse", "Requested"),
        ]
    );
    // Items asked for (the default 3), PEs given (1, the first one's id).
    assert_eq!((v[0].counter, v[1].counter, v[1].pe_id), (3, 1, 0x11));
    assert_eq!(v[3].error_code, cause::UNKNOWN_POOL_HANDLE);

    // Keep-alive after 5 s, answered 200 ms later.
    r.advance(secs(5));
    r.advance(ms(200));
    r.asap(1, EndpointKeepAliveAck::new(ph("P"), PeIdentifier(0x11)));
    let v = actions(&mut r);
    assert_eq!(
        words(&v),
        vec![
            (
                "Send",
                "ASAP",
                "EndpointKeepAlive",
                "KeepAliveTransmissionTimer"
            ),
            ("Recv", "ASAP", "EndpointKeepAliveAck", "InTime"),
        ]
    );
    assert_eq!(v[0].time, secs(5));
    assert_eq!(v[1].time, ms(200));
    assert_eq!(v[1].at, r.now);

    r.asap(2, EndpointUnreachable::new(ph("P"), PeIdentifier(0x11)));
    r.asap(2, EndpointUnreachable::new(ph("P"), PeIdentifier(0x11)));
    let v = actions(&mut r);
    let eu: Vec<u64> = v
        .iter()
        .filter(|a| a.action == "EndpointUnreachable")
        .map(|a| a.counter)
        .collect();
    assert_eq!(eu, vec![0, 1]);

    r.asap(1, Deregistration::new(ph("P"), PeIdentifier(0x11)));
    let v = actions(&mut r);
    assert_eq!(
        words(&v),
        vec![
            ("Send", "ASAP", "Deregistration", "Requested"),
            ("Send", "ASAP", "DeregistrationResponse", "Requested"),
        ]
    );
    // Association loss: one "Disconnect" deregistration per PE.
    r.register(1, "P", pe(0x12, "10.1.0.5", 6000));
    actions(&mut r);
    r.down(1, AssocDownReason::Lost);
    let v = actions(&mut r);
    assert_eq!(
        words(&v),
        vec![("Send", "ASAP", "Deregistration", "Disconnect")]
    );
    assert_eq!(v[0].pe_id, 0x12);
    assert_eq!(v[0].direction, ActionDirection::Send);
}

#[test]
fn action_log_records_enrp_both_ways_and_is_off_by_default() {
    let mut cfg = quiet_config(US);
    cfg.timers.peer_max_time_last_heard = secs(600);
    cfg.action_log = true;
    let mut r = Rig::new(cfg);
    r.add_peer(100, PEER, "10.0.0.2", 0xffff);
    actions(&mut r);
    r.enrp(
        100,
        HandleUpdate::new(
            ServerId(PEER),
            ServerId(US),
            UpdateAction::DEL_PE,
            ph("Q"),
            pe(0x21, "10.3.0.1", 6000),
        ),
    );
    let v = actions(&mut r);
    assert_eq!(words(&v), vec![("Recv", "ENRP", "Update", "DelPE")]);
    assert_eq!((v[0].sender, v[0].receiver), (ServerId(PEER), ServerId(US)));
    assert_eq!(v[0].pe_id, 0x21);
    // A List Request is answered with our peer list; the Counter of both List Responses
    // (sent and received) is the number of peers named, as in RSPLIB.
    let outs = r.enrp(
        100,
        ListRequest {
            sender: ServerId(PEER),
            receiver: ServerId(US),
            ..Default::default()
        },
    );
    let named = enrp_sent(&outs)
        .iter()
        .find_map(|(_, m)| match m {
            EnrpMessage::ListResponse(l) => Some(l.servers.len() as u64),
            _ => None,
        })
        .expect("a List Response");
    assert!(named >= 1, "the peer at least");
    let v = actions(&mut r);
    assert_eq!(
        words(&v),
        vec![
            ("Recv", "ENRP", "ListRequest", ""),
            ("Send", "ENRP", "ListResponse", "")
        ]
    );
    assert_eq!((v[0].counter, v[1].counter), (0, named));
    let si = |id: u32, host: &str| ServerInformation {
        server_id: ServerId(id),
        transport: TransportParameter::sctp(9901, 0, [ip(host)]),
    };
    let three = ListResponse {
        sender: ServerId(PEER),
        receiver: ServerId(US),
        servers: vec![
            si(PEER, "10.0.0.2"),
            si(0x3333, "10.0.0.3"),
            si(0x4444, "10.0.0.4"),
        ],
        ..Default::default()
    };
    r.enrp(100, three);
    let v = actions(&mut r);
    assert_eq!(words(&v)[0], ("Recv", "ENRP", "ListResponse", ""));
    assert_eq!(v[0].counter, 3);
    // Our own registration goes out as an ADD_PE Handle Update.
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "P", pe(0x11, "10.1.0.5", 6000));
    let v = actions(&mut r);
    assert!(
        words(&v).contains(&("Send", "ENRP", "Update", "AddPE")),
        "{v:?}"
    );

    // Off: nothing is queued.
    let mut r = Rig::new(quiet_config(US));
    r.up(1, &["10.1.0.5:5000"]);
    r.register(1, "P", pe(0x11, "10.1.0.5", 6000));
    assert!(r.reg.poll_action().is_none());
}

fn closed(outs: &[Out]) -> Vec<AssocId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Close { assoc, abort } => {
                assert!(!abort);
                Some(*assoc)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn autoclose_closes_idle_associations_without_pes() {
    let mut cfg = quiet_config(US);
    cfg.timers.peer_max_time_last_heard = secs(10_000);
    cfg.timers.keep_alive_transmission_interval = secs(1_000);
    cfg.timers.keep_alive_timeout_interval = secs(1_000);
    cfg.autoclose_timeout = Some(secs(30));
    let mut r = Rig::new(cfg);
    r.add_peer(100, PEER, "10.0.0.2", 0xffff);
    r.up(1, &["10.1.0.5:5000"]); // a PE: never closed
    r.register(1, "P", pe(0x11, "10.1.0.5", 6000));
    r.up(2, &["10.9.0.1:7000"]); // a PU that keeps asking
    r.up(3, &["10.9.0.2:7000"]); // a PU that asks once
    r.asap(3, hr("P"));
    r.up(4, &["10.9.0.3:7000"]); // never says anything
    let mut all = Vec::new();
    for _ in 0..6 {
        all.extend(r.advance(secs(5)));
        r.asap(2, hr("P"));
    }
    // 30 s: nothing closed yet (idle for at least 30 s is needed).
    assert!(closed(&all).is_empty(), "{all:?}");
    let mut all = Vec::new();
    for _ in 0..2 {
        all.extend(r.advance(secs(5)));
        r.asap(2, hr("P"));
    }
    // By 40 s (at most 4/3 × 30 s): 3 and 4 closed, the PE's, the active PU's and the
    // peer's stay.
    let mut c = closed(&all);
    c.sort();
    assert_eq!(c, vec![AssocId(3), AssocId(4)]);
    assert_eq!(r.reg.stats().autoclosed, 2);
    assert_eq!(r.reg.resource_usage().associations, 3);
    // The PE is still registered; its association goes once the PE leaves and it idles.
    r.asap(1, Deregistration::new(ph("P"), PeIdentifier(0x11)));
    // (The PU on 2 stopped asking at 40 s too.)
    let outs = r.advance(secs(45));
    let mut c = closed(&outs);
    c.sort();
    assert_eq!(c, vec![AssocId(1), AssocId(2)]);
    // The driver's later report of the closed association changes nothing.
    r.down(1, AssocDownReason::Closed);
    assert_eq!(r.reg.stats().autoclosed, 4);
    // Only the peer's ENRP association is left.
    assert_eq!(r.reg.resource_usage().associations, 1);
}

#[test]
fn autoclose_is_off_by_default() {
    let mut r = Rig::new(quiet_config(US));
    r.up(4, &["10.9.0.3:7000"]);
    let outs = r.advance(secs(3_600));
    assert!(closed(&outs).is_empty());
    assert_eq!(r.reg.resource_usage().associations, 1);
}
