//! Real RSPLIB messages (shared/vectors/rsplib-captures/messages) fed into the registrar,
//! replaying the captured scenarios from the registrar's seat; where RSPLIB's own answer is
//! in the captures, ours must be byte-identical.

mod reg_common;

use bytes::Bytes;
use reg_common::*;
use rserpool_core::registrar::{RegistrarConfig, RegistrarEvent};
use rserpool_core::{Destination, Output, Protocol};
use rserpool_proto::asap::{Deregistration, Registration};
use rserpool_proto::ids::{PeIdentifier, ServerId};
use rserpool_proto::transport::TransportParameter;
use rserpool_proto::{AsapMessage, EnrpMessage};

/// The vectors directory: `$RSERPOOL_VECTORS/rsplib-captures/messages`, or
/// `shared/vectors/...` in an ancestor of the crate.
fn vectors_dir() -> std::path::PathBuf {
    let rel = "rsplib-captures/messages";
    if let Ok(v) = std::env::var("RSERPOOL_VECTORS") {
        return std::path::Path::new(&v).join(rel);
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/vectors").join(rel))
        .find(|p| p.exists())
        .expect("shared/vectors not found (set RSERPOOL_VECTORS)")
}

fn vector(name: &str) -> Vec<u8> {
    let path = vectors_dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    hex(line)
}

fn payloads(outs: &[Out]) -> Vec<(Destination, u32, Bytes)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some((t.dest.clone(), t.ppid, t.payload.clone())),
            _ => None,
        })
        .collect()
}

fn pr1_config(id: u32) -> RegistrarConfig {
    let mut c = quiet_config(id);
    c.enrp_transport = Some(TransportParameter::sctp(9901, 0, [ip("10.99.0.11")]));
    c.timers.keep_alive_jitter = 0.0;
    c
}

#[test]
fn asap_echo_scenario_byte_exact() {
    // Capture 01: PR1 (id 0x1de0434e) at 10.99.0.11, echo PE at 10.99.0.14, PU at .15.
    let mut r = Rig::new(pr1_config(0x1de0_434e));
    r.up(1, &["10.99.0.14:36864"]);
    let outs = r.raw(1, Protocol::PPID_ASAP, &vector("asap-registration"));
    assert_eq!(
        payloads(&outs),
        vec![(
            to(1),
            Protocol::PPID_ASAP,
            Bytes::from(vector("asap-registration-response"))
        )]
    );
    // The PU's handle resolution (HROPT items = 1): RSPLIB's exact answer.
    r.up(2, &["10.99.0.15:40000"]);
    let outs = r.raw(2, Protocol::PPID_ASAP, &vector("asap-handle-resolution"));
    assert_eq!(
        payloads(&outs),
        vec![(
            to(2),
            Protocol::PPID_ASAP,
            Bytes::from(vector("asap-handle-resolution-response"))
        )]
    );
    // 5 s later: RSPLIB's exact keep-alive; the PE's ack is accepted.
    let outs = r.advance(secs(5));
    assert_eq!(
        payloads(&outs),
        vec![(
            to(1),
            Protocol::PPID_ASAP,
            Bytes::from(vector("asap-endpoint-keep-alive"))
        )]
    );
    assert!(
        payloads(&r.raw(
            1,
            Protocol::PPID_ASAP,
            &vector("asap-endpoint-keep-alive-ack")
        ))
        .is_empty()
    );
    let outs = r.advance(secs(5));
    assert_eq!(payloads(&outs).len(), 1, "next keep-alive, no removal");
    assert!(main_events(&outs).is_empty());
    r.raw(
        1,
        Protocol::PPID_ASAP,
        &vector("asap-endpoint-keep-alive-ack"),
    );
    // Deregistration: RSPLIB's exact response.
    let outs = r.raw(1, Protocol::PPID_ASAP, &vector("asap-deregistration"));
    assert_eq!(
        payloads(&outs),
        vec![(
            to(1),
            Protocol::PPID_ASAP,
            Bytes::from(vector("asap-deregistration-response"))
        )]
    );
    assert!(r.reg.handlespace().is_empty());
    // RSPLIB's announce (no transports) arrives on the ASAP announce socket: ignored.
    r.reg_datagram(
        "10.99.0.12:3863",
        Protocol::PPID_ASAP,
        &vector("asap-server-announce-multicast"),
    );
    assert_eq!(r.reg.stats().asap_received[0x0a], 1);
}

#[test]
fn enrp_takeover_scenario() {
    // Capture 05 from PR1's seat: PR1 0x624c727d (.11), PR2 0xce35a3ba (.12),
    // PR3 0x5e27fc63 (.13); PR3 dies, PR2 takes its PE 0x1f over.
    const PR1: u32 = 0x624c_727d;
    const PR2: u32 = 0xce35_a3ba;
    const PR3: u32 = 0x5e27_fc63;
    let mut c = pr1_config(PR1);
    c.timers.peer_max_time_last_heard = secs(3);
    c.timers.peer_max_time_no_response = secs(2);
    let mut r = Rig::new(c);
    r.up(12, &["10.99.0.12:9901"]);
    // PR2 greets us with R=1: we answer with a presence (our empty checksum 0xffff).
    let outs = r.raw(
        12,
        Protocol::PPID_ENRP,
        &vector("enrp-presence-reply-required"),
    );
    match &enrp_sent(&outs)[0] {
        (d, EnrpMessage::Presence(p)) => {
            assert_eq!(*d, to(12));
            assert!(!p.reply_required);
            assert_eq!(p.sender, ServerId(PR1));
            assert_eq!(p.checksum.unwrap().0, 0xffff);
            assert_eq!(
                p.server_information.as_ref().unwrap().server_id,
                ServerId(PR1)
            );
        }
        other => panic!("{other:?}"),
    }
    // PR2's list and table requests: RSPLIB's exact empty table answer.
    let outs = r.raw(12, Protocol::PPID_ENRP, &vector("enrp-list-request"));
    assert!(
        matches!(&enrp_sent(&outs)[..], [(_, EnrpMessage::ListResponse(l))] if l.servers.iter().any(|s| s.server_id == ServerId(PR2)))
    );
    let outs = r.raw(
        12,
        Protocol::PPID_ENRP,
        &vector("enrp-handle-table-request"),
    );
    assert_eq!(
        payloads(&outs),
        vec![(
            to(12),
            Protocol::PPID_ENRP,
            Bytes::from(vector("enrp-handle-table-response-empty"))
        )]
    );
    // RSPLIB's list response (a static entry with id 0, and us): nothing new to learn.
    let before = r.reg.peers().count();
    r.raw(12, Protocol::PPID_ENRP, &vector("enrp-list-response"));
    assert_eq!(r.reg.peers().count(), before);
    // PR3 joins and announces its PE 0x1f.
    r.up(13, &["10.99.0.13:9901"]);
    r.enrp(13, presence(PR3, PR1, "10.99.0.13", 0xffff, false));
    r.raw(13, Protocol::PPID_ENRP, &vector("enrp-handle-update-add"));
    let e = r
        .reg
        .handlespace()
        .get(&ph("EchoPool"), PeIdentifier(0x1f))
        .unwrap();
    assert_eq!(e.home_registrar(), ServerId(PR3));
    assert_eq!(e.registration_life(), 90_000);
    // PR3 dies; PR2 keeps talking. After last-heard we probe PR3.
    r.down(13, rserpool_core::AssocDownReason::Lost);
    r.advance(secs(1));
    r.enrp(12, presence(PR2, PR1, "10.99.0.12", 0xffff, false));
    // PR2's Init Takeover: PR3 is silent for us too: RSPLIB's exact ack.
    let outs = r.raw(12, Protocol::PPID_ENRP, &vector("enrp-init-takeover"));
    assert_eq!(
        payloads(&outs),
        vec![(
            to(12),
            Protocol::PPID_ENRP,
            Bytes::from(vector("enrp-init-takeover-ack"))
        )]
    );
    // PR2 never sends Takeover Server (RSPLIB). PR3 leaves our list when our own timer runs
    // out; its PE stays (home PR3) until the resync.
    let outs = r.advance(secs(2));
    assert!(main_events(&outs).iter().any(
        |e| matches!(e, RegistrarEvent::PeerDown { server_id, .. } if *server_id == ServerId(PR3))
    ));
    // PR2's next presence carries its new checksum (0x9232 = EchoPool/0x1f): RSPLIB's exact
    // W=1 request, then its table response re-homes the PE.
    let outs = r.enrp(12, presence(PR2, PR1, "10.99.0.12", 0x9232, false));
    assert_eq!(
        payloads(&outs),
        vec![(
            to(12),
            Protocol::PPID_ENRP,
            Bytes::from(vector("enrp-handle-table-request-own-children-only"))
        )]
    );
    r.raw(
        12,
        Protocol::PPID_ENRP,
        &vector("enrp-handle-table-response"),
    );
    let e = r
        .reg
        .handlespace()
        .get(&ph("EchoPool"), PeIdentifier(0x1f))
        .unwrap();
    assert_eq!(e.home_registrar(), ServerId(PR2));
    assert_eq!(r.reg.handlespace().owner_checksum(ServerId(PR2)), 0x9232);
    // Our own PE 0x20 (as in the capture) deregisters: RSPLIB's exact DEL_PE.
    r.up(14, &["10.99.0.14:55201"]);
    let mut p = pe(0x20, "10.99.0.14", 0x9603);
    p.registration_life = 90_000;
    r.asap(14, Registration::new(ph("EchoPool"), p));
    let outs = r.asap(14, Deregistration::new(ph("EchoPool"), PeIdentifier(0x20)));
    assert_eq!(
        payloads(&outs)[0],
        (
            to(12),
            Protocol::PPID_ENRP,
            Bytes::from(vector("enrp-handle-update-del"))
        )
    );
    // RSPLIB's ENRP errors (one from a non-peer, one with its private cause): ignored, never
    // answered.
    for v in ["enrp-error-cause0010", "enrp-error-unrecognized-parameter"] {
        assert!(payloads(&r.raw(12, Protocol::PPID_ENRP, &vector(v))).is_empty());
    }
}

#[test]
fn every_vector_is_handled_without_panic_or_private_causes() {
    let names = [
        "asap-cookie-echo",
        "asap-cookie",
        "asap-deregistration-response",
        "asap-deregistration",
        "asap-endpoint-keep-alive-ack",
        "asap-endpoint-keep-alive-home",
        "asap-endpoint-keep-alive",
        "asap-error-invalid-values",
        "asap-error-unrecognized-parameter",
        "asap-handle-resolution-response",
        "asap-handle-resolution",
        "asap-registration-response",
        "asap-registration",
        "asap-server-announce-multicast",
        "enrp-error-cause0010",
        "enrp-error-unrecognized-parameter",
        "enrp-handle-table-request-own-children-only",
        "enrp-handle-table-request",
        "enrp-handle-table-response-empty",
        "enrp-handle-table-response",
        "enrp-handle-update-add",
        "enrp-handle-update-del",
        "enrp-init-takeover-ack",
        "enrp-init-takeover",
        "enrp-list-request",
        "enrp-list-response",
        "enrp-presence-multicast",
        "enrp-presence-reply-required",
        "enrp-presence",
    ];
    for ppid in [Protocol::PPID_ASAP, Protocol::PPID_ENRP] {
        let mut r = Rig::new(pr1_config(0x624c_727d));
        for (i, n) in names.iter().enumerate() {
            let a = 1000 + i as u64;
            r.up(a, &["10.99.0.12:9901"]);
            let outs = r.raw(a, ppid, &vector(n));
            for (_, p, bytes) in payloads(&outs) {
                let causes: Vec<u16> = match p {
                    Protocol::PPID_ASAP => match AsapMessage::decode(&bytes).unwrap() {
                        AsapMessage::Error(e) => e.error.causes.iter().map(|c| c.code).collect(),
                        AsapMessage::RegistrationResponse(x) => x
                            .error
                            .iter()
                            .flat_map(|e| e.causes.iter().map(|c| c.code))
                            .collect(),
                        _ => vec![],
                    },
                    _ => match EnrpMessage::decode(&bytes).unwrap() {
                        EnrpMessage::Error(e) => e.error.causes.iter().map(|c| c.code).collect(),
                        _ => vec![],
                    },
                };
                assert!(causes.iter().all(|&c| c <= 0x000a), "{n}: {causes:?}");
            }
            assert!(!outs.iter().any(|o| matches!(o, Output::Close { .. })));
        }
    }
}
