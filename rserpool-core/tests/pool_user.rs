//! Pool user machine: resolution with and without cache, HROPT rules, policy selection from
//! the cache, unreachability reports and suspects, registrar failover, pipelining; fed with
//! real RSPLIB messages where the captures have them.

mod common;

use bytes::Bytes;
use common::*;
use core::time::Duration;

use rserpool_core::AssocId;
use rserpool_core::io::{AssocDownReason, AssocIdAllocator, Machine};
use rserpool_core::pool_user::{
    PoolUser, PoolUserConfig, PoolUserEvent, RequestId, ResolutionFailure, ResolvedElement,
};
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{EndpointUnreachable, HandleResolution, HandleResolutionResponse};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{
    ErrorCause, HandleResolutionOption, OperationError, PoolElementParameter, cause,
};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{TRANSPORT_USE_DATA_PLUS_CONTROL, TransportParameter};

use PoolUserEvent as Ev;
use rserpool_proto::transport::TransportProtocol::Sctp;

type Pu = PoolUser<rand_xoshiro::Xoshiro256PlusPlus>;

const PR1: ServerId = ServerId(0x1de0_434e);

fn mid(n: u64) -> AssocId {
    AssocId(AssocIdAllocator::MACHINE_BIT | n)
}

fn ph(s: &str) -> PoolHandle {
    PoolHandle::from(s)
}

fn config(stale_ms: u64) -> PoolUserConfig {
    let mut c = PoolUserConfig::default();
    c.registrar_table.static_registrars = vec![StaticRegistrar::sctp([sa("10.99.0.11:3863")])];
    c.stale_cache_value = Duration::from_millis(stale_ms);
    c
}

/// A PU whose home registrar association `mid(1)` is up at t = 10 ms (the first resolve
/// triggers the hunt, so this resolves `handle` once and returns its request).
fn connected(c: PoolUserConfig, handle: &str, items: u32) -> (Pu, RequestId) {
    let mut pu = PoolUser::new(c, rng(1));
    let id = pu.resolve(ms(0), ph(handle), items);
    assert_eq!(
        drain(&mut pu),
        vec![Out::Connect(mid(1), vec![sa("10.99.0.11:3863")], Sctp)]
    );
    pu.handle_assoc_up(ms(10), mid(1), &[]);
    let out = drain(&mut pu);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(&out[0], Out::Send(a, AsapMessage::HandleResolution(_)) if *a == mid(1)));
    (pu, id)
}

fn hr(handle: &str, items: Option<u32>) -> AsapMessage {
    HandleResolution {
        pool_handle: ph(handle),
        option: items.map(|items| HandleResolutionOption { items }),
        ..Default::default()
    }
    .into()
}

/// PE `id` at 10.0.0.id:(1000 + id), SCTP, data + control.
fn pe(id: u32, policy: Policy) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: PeIdentifier(id),
        home_server_id: PR1,
        registration_life: 90_000,
        user_transport: TransportParameter::sctp(
            1000 + id as u16,
            TRANSPORT_USE_DATA_PLUS_CONTROL,
            [ip(&format!("10.0.0.{id}"))],
        ),
        policy,
        asap_transport: None,
    }
}

fn answer(handle: &str, ids: &[u32]) -> Bytes {
    answer_with(
        handle,
        ids.iter().map(|&i| pe(i, Policy::RoundRobin)).collect(),
    )
}

fn answer_with(handle: &str, pes: Vec<PoolElementParameter>) -> Bytes {
    AsapMessage::from(HandleResolutionResponse {
        pool_handle: ph(handle),
        policy: pes.first().map(|p| p.policy),
        pool_elements: pes,
        ..Default::default()
    })
    .to_bytes()
}

fn not_found(handle: &str, code: u16) -> Bytes {
    AsapMessage::from(HandleResolutionResponse {
        pool_handle: ph(handle),
        error: Some(OperationError::new(ErrorCause::new(code, Bytes::new()))),
        ..Default::default()
    })
    .to_bytes()
}

fn element(id: u32, policy: Policy) -> ResolvedElement {
    let p = pe(id, policy);
    ResolvedElement {
        pe_id: p.pe_id,
        user_transport: p.user_transport,
        policy,
        home_registrar: PR1,
    }
}

fn resolved(request: RequestId, handle: &str, ids: &[u32]) -> Out<PoolUserEvent> {
    Out::Event(Ev::Resolved {
        request,
        handle: ph(handle),
        elements: ids
            .iter()
            .map(|&i| element(i, Policy::RoundRobin))
            .collect(),
    })
}

fn failed(request: RequestId, handle: &str, cause: ResolutionFailure) -> Out<PoolUserEvent> {
    Out::Event(Ev::ResolutionFailed {
        request,
        handle: ph(handle),
        cause,
    })
}

/// The ids of the PEs of a Resolved event.
fn ids(out: &[Out<PoolUserEvent>]) -> Vec<u32> {
    match out {
        [Out::Event(Ev::Resolved { elements, .. })] => elements.iter().map(|e| e.pe_id.0).collect(),
        o => panic!("not one Resolved event: {o:?}"),
    }
}

#[test]
fn resolution_without_cache_matches_rsplib_and_takes_its_answer() {
    let mut pu = PoolUser::new(config(0), rng(1));
    assert_eq!(pu.poll_timeout(), None);
    let id = pu.resolve(ms(0), ph("EchoPool"), 1);
    assert_eq!(
        drain(&mut pu),
        vec![Out::Connect(mid(1), vec![sa("10.99.0.11:3863")], Sctp)]
    );
    pu.handle_assoc_up(ms(10), mid(1), &[]);
    let out = drain_raw(&mut pu);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].1.as_ref().unwrap(),
        &vector("asap-handle-resolution"),
        "RSPLIB's failover resolution: EchoPool, HROPT items 1"
    );
    assert_eq!(pu.poll_timeout(), Some(ms(3010)), "T1");
    pu.handle_message(
        ms(12),
        mid(1),
        11,
        vector("asap-handle-resolution-response"),
    );
    assert_eq!(
        drain(&mut pu),
        vec![Out::Event(Ev::Resolved {
            request: id,
            handle: ph("EchoPool"),
            elements: vec![ResolvedElement {
                pe_id: PeIdentifier(0x051d_a794),
                user_transport: TransportParameter::sctp(
                    36864,
                    TRANSPORT_USE_DATA_PLUS_CONTROL,
                    [ip("10.99.0.14")]
                ),
                policy: Policy::RoundRobin,
                home_registrar: PR1,
            }],
        })]
    );
    assert_eq!(pu.poll_timeout(), None);
    assert_eq!(pu.outstanding(), 0);
    // Stale cache value 0: the next resolution asks again, even at the same instant.
    let id2 = pu.resolve(ms(12), ph("EchoPool"), 1);
    assert_eq!(
        drain(&mut pu),
        vec![Out::Send(mid(1), hr("EchoPool", Some(1)))]
    );
    pu.handle_message(ms(13), mid(1), 11, answer("EchoPool", &[2]));
    assert_eq!(drain(&mut pu), vec![resolved(id2, "EchoPool", &[2])]);
}

#[test]
fn cache_answers_while_fresh_and_refreshes_when_stale() {
    let (mut pu, id) = connected(config(5000), "P", 1);
    pu.handle_message(ms(20), mid(1), 11, answer("P", &[1, 2, 3]));
    let first = ids(&drain(&mut pu));
    assert_eq!(first.len(), 1);
    let _ = id;
    // Fresh: answered from the cache, round robin across the answer's PEs, no traffic.
    let mut seen = first.clone();
    for t in [1000, 2000, 3000] {
        pu.resolve(ms(t), ph("P"), 1);
        seen.extend(ids(&drain(&mut pu)));
    }
    assert_eq!(seen.len(), 4);
    let mut three = seen[..3].to_vec();
    three.sort();
    assert_eq!(three, vec![1, 2, 3], "each PE once per round: {seen:?}");
    assert_eq!(seen[3], seen[0], "then again from the start");
    // Two at once from the cache.
    pu.resolve(ms(4000), ph("P"), 2);
    assert_eq!(ids(&drain(&mut pu)).len(), 2);
    // Stale (expiry = answer time + 5 s): purged, the registrar is asked — without HROPT,
    // as RSPLIB does when caching.
    let id2 = pu.resolve(ms(5020), ph("P"), 1);
    assert_eq!(drain(&mut pu), vec![Out::Send(mid(1), hr("P", None))]);
    assert_eq!(pu.cache().element_count(), 0);
    pu.handle_message(ms(5030), mid(1), 11, answer("P", &[4]));
    assert_eq!(drain(&mut pu), vec![resolved(id2, "P", &[4])]);
    assert_eq!(pu.cache().element_count(), 1);
}

#[test]
fn handle_resolution_option_rules() {
    // No cache: the option carries the clamped item count.
    let (mut pu, _) = connected(config(0), "P", 3);
    for (items, wire) in [(3, 3), (0, 1), (1000, 128), (u32::MAX, u32::MAX)] {
        pu.resolve(ms(20), ph("P"), items);
        assert_eq!(drain(&mut pu), vec![Out::Send(mid(1), hr("P", Some(wire)))]);
    }
    // Cache on: only "all" carries it.
    let (mut pu, _) = connected(config(1000), "P", 3);
    pu.resolve(ms(20), ph("P"), 3);
    assert_eq!(drain(&mut pu), vec![Out::Send(mid(1), hr("P", None))]);
    pu.resolve(ms(20), ph("P"), HandleResolutionOption::ALL);
    assert_eq!(
        drain(&mut pu),
        vec![Out::Send(
            mid(1),
            hr("P", Some(HandleResolutionOption::ALL))
        )]
    );
}

#[test]
fn selection_from_the_cache_follows_the_pool_policy() {
    let lu = |l| Policy::LeastUsed { load: l };
    let (mut pu, id) = connected(config(10_000), "LU", 3);
    pu.handle_message(
        ms(20),
        mid(1),
        11,
        answer_with("LU", vec![pe(1, lu(500)), pe(2, lu(100)), pe(3, lu(300))]),
    );
    assert_eq!(
        drain(&mut pu),
        vec![Out::Event(Ev::Resolved {
            request: id,
            handle: ph("LU"),
            elements: vec![
                element(2, lu(100)),
                element(3, lu(300)),
                element(1, lu(500))
            ],
        })],
        "least used first"
    );
    pu.resolve(ms(30), ph("LU"), 1);
    assert_eq!(ids(&drain(&mut pu)), vec![2]);
    // A fresh cache answers even "all" without asking (RSPLIB).
    pu.resolve(ms(35), ph("LU"), HandleResolutionOption::ALL);
    assert_eq!(ids(&drain(&mut pu)).len(), 3);
    // An answer for the pool with another policy (the pool was re-created) replaces the
    // cached entries.
    pu.handle_message(ms(41), mid(1), 11, answer("LU", &[7]));
    assert!(drain(&mut pu).is_empty());
    assert_eq!(pu.cache().element_count(), 1);
    pu.resolve(ms(42), ph("LU"), 3);
    assert_eq!(ids(&drain(&mut pu)), vec![7]);
}

#[test]
fn unreachable_report_matches_rsplib_and_suspects_are_skipped() {
    // The report RSPLIB's calcappclient sent in [CAP 04] (session-layer.md §5.4).
    let (mut pu, _) = connected(config(0), "CalcAppPool", 1);
    assert!(pu.report_unreachable(ms(20), ph("CalcAppPool"), PeIdentifier(0x15)));
    let out = drain_raw(&mut pu);
    assert_eq!(
        out[0].0,
        Out::Send(
            mid(1),
            EndpointUnreachable::new(ph("CalcAppPool"), PeIdentifier(0x15)).into()
        )
    );
    assert_eq!(
        out[0].1.as_ref().unwrap(),
        &hex("0900001c 0009000f 43616c63 41707050 6f6f6c00 000e0008 00000015")
    );

    let (mut pu, id) = connected(config(0), "P", 2);
    pu.handle_message(ms(20), mid(1), 11, answer("P", &[1, 2]));
    let mut got = ids(&drain(&mut pu));
    got.sort();
    assert_eq!(got, vec![1, 2]);
    let _ = id;
    // PE 1 fails: removed from the cache, reported once.
    assert!(pu.report_unreachable(ms(30), ph("P"), PeIdentifier(1)));
    assert_eq!(
        drain(&mut pu),
        vec![Out::Send(
            mid(1),
            EndpointUnreachable::new(ph("P"), PeIdentifier(1)).into()
        )]
    );
    assert!(!pu.cache().contains(&ph("P"), PeIdentifier(1)));
    assert!(
        !pu.report_unreachable(ms(31), ph("P"), PeIdentifier(1)),
        "one report per failure"
    );
    assert!(drain(&mut pu).is_empty());
    assert!(pu.is_suspect(ms(31), &ph("P"), PeIdentifier(1)));
    // The registrar still names it (defect 4): the PU does not pick it.
    let id = pu.resolve(ms(40), ph("P"), 2);
    assert_eq!(drain(&mut pu), vec![Out::Send(mid(1), hr("P", Some(2)))]);
    pu.handle_message(ms(41), mid(1), 11, answer("P", &[1, 2]));
    assert_eq!(drain(&mut pu), vec![resolved(id, "P", &[2])]);
    // Naming only the suspect: no usable PE.
    let id = pu.resolve(ms(50), ph("P"), 1);
    drain(&mut pu);
    pu.handle_message(ms(51), mid(1), 11, answer("P", &[1]));
    assert_eq!(
        drain(&mut pu),
        vec![failed(id, "P", ResolutionFailure::OnlySuspects)]
    );
    assert!(
        pu.is_suspect(ms(51), &ph("P"), PeIdentifier(1)),
        "a 1-item answer proves nothing"
    );
    // An answer listing the whole pool (fewer PEs than asked for) without it clears it.
    let id = pu.resolve(ms(60), ph("P"), 3);
    drain(&mut pu);
    pu.handle_message(ms(61), mid(1), 11, answer("P", &[2]));
    assert_eq!(drain(&mut pu), vec![resolved(id, "P", &[2])]);
    assert!(!pu.is_suspect(ms(61), &ph("P"), PeIdentifier(1)));
    // It came back (re-registered): usable again.
    let id = pu.resolve(ms(70), ph("P"), 1);
    drain(&mut pu);
    pu.handle_message(ms(71), mid(1), 11, answer("P", &[1]));
    assert_eq!(drain(&mut pu), vec![resolved(id, "P", &[1])]);
}

#[test]
fn suspects_expire_after_the_suspect_timeout() {
    let (mut pu, _) = connected(config(0), "P", 1);
    pu.handle_message(ms(20), mid(1), 11, answer("P", &[1]));
    drain(&mut pu);
    assert!(pu.report_unreachable(ms(1000), ph("P"), PeIdentifier(1)));
    drain(&mut pu);
    let id = pu.resolve(ms(10_999), ph("P"), 1);
    drain(&mut pu);
    pu.handle_message(ms(10_999), mid(1), 11, answer("P", &[1]));
    assert_eq!(
        drain(&mut pu),
        vec![failed(id, "P", ResolutionFailure::OnlySuspects)]
    );
    let id = pu.resolve(ms(11_000), ph("P"), 1);
    drain(&mut pu);
    pu.handle_message(ms(11_000), mid(1), 11, answer("P", &[1]));
    assert_eq!(drain(&mut pu), vec![resolved(id, "P", &[1])]);
    // And a new failure of it is reported again.
    assert!(pu.report_unreachable(ms(11_001), ph("P"), PeIdentifier(1)));
    assert_eq!(drain(&mut pu).len(), 1);
}

#[test]
fn report_without_registrar_hunts_and_sends_it_first() {
    let mut pu = PoolUser::new(config(0), rng(1));
    assert!(pu.report_unreachable(ms(0), ph("P"), PeIdentifier(9)));
    let id = pu.resolve(ms(1), ph("P"), 1);
    assert_eq!(
        drain(&mut pu),
        vec![Out::Connect(mid(1), vec![sa("10.99.0.11:3863")], Sctp)]
    );
    pu.handle_assoc_up(ms(2), mid(1), &[]);
    assert_eq!(
        drain(&mut pu),
        vec![
            Out::Send(
                mid(1),
                EndpointUnreachable::new(ph("P"), PeIdentifier(9)).into()
            ),
            Out::Send(mid(1), hr("P", Some(1))),
        ]
    );
    pu.handle_message(ms(3), mid(1), 11, answer("P", &[9, 8]));
    assert_eq!(drain(&mut pu), vec![resolved(id, "P", &[8])]);
}

#[test]
fn several_outstanding_requests_are_matched_fifo_per_pool_handle() {
    let (mut pu, a1) = connected(config(0), "A", 1);
    let b = pu.resolve(ms(11), ph("B"), 1);
    let a2 = pu.resolve(ms(12), ph("A"), 1);
    assert_eq!(
        drain(&mut pu),
        vec![
            Out::Send(mid(1), hr("B", Some(1))),
            Out::Send(mid(1), hr("A", Some(1))),
        ]
    );
    assert_eq!(pu.outstanding(), 3);
    pu.handle_message(ms(20), mid(1), 11, answer("A", &[1]));
    pu.handle_message(ms(21), mid(1), 11, answer("A", &[2]));
    pu.handle_message(ms(22), mid(1), 11, answer("B", &[3]));
    assert_eq!(
        drain(&mut pu),
        vec![
            resolved(a1, "A", &[1]),
            resolved(a2, "A", &[2]),
            resolved(b, "B", &[3]),
        ]
    );
    assert_eq!(pu.outstanding(), 0);
    // An answer nobody asked for (e.g. a subscription update) only fills the cache.
    pu.handle_message(ms(23), mid(1), 11, answer("C", &[4]));
    assert!(drain(&mut pu).is_empty());
}

#[test]
fn registrar_failover_resends_every_outstanding_request() {
    let (mut pu, a) = connected(config(0), "A", 1);
    let b = pu.resolve(ms(11), ph("B"), 2);
    drain(&mut pu);
    pu.handle_assoc_down(ms(100), mid(1), AssocDownReason::Lost);
    assert_eq!(
        drain(&mut pu),
        vec![Out::Connect(mid(2), vec![sa("10.99.0.11:3863")], Sctp)]
    );
    assert_eq!(pu.home_registrar(), None);
    // Answers on the old association are not taken any more.
    pu.handle_message(ms(101), mid(1), 11, answer("A", &[9]));
    assert!(drain(&mut pu).is_empty());
    pu.handle_assoc_up(ms(110), mid(2), &[]);
    assert_eq!(
        drain(&mut pu),
        vec![
            Out::Send(mid(2), hr("A", Some(1))),
            Out::Send(mid(2), hr("B", Some(2))),
        ]
    );
    assert_eq!(pu.poll_timeout(), Some(ms(3110)));
    pu.handle_message(ms(120), mid(2), 11, answer("B", &[5]));
    pu.handle_message(ms(121), mid(2), 11, answer("A", &[6]));
    assert_eq!(
        drain(&mut pu),
        vec![resolved(b, "B", &[5]), resolved(a, "A", &[6])]
    );
}

#[test]
fn request_timeout_rehunts_resends_then_fails() {
    let (mut pu, a) = connected(config(0), "A", 1);
    assert_eq!(pu.poll_timeout(), Some(ms(3010)));
    // A second request, sent later, is resent but keeps its own trial count.
    let b = pu.resolve(ms(2000), ph("B"), 1);
    drain(&mut pu);
    pu.handle_timeout(ms(3010));
    assert_eq!(
        drain(&mut pu),
        vec![
            Out::Close(mid(1), true),
            Out::Connect(mid(2), vec![sa("10.99.0.11:3863")], Sctp),
        ]
    );
    pu.handle_assoc_up(ms(3020), mid(2), &[]);
    assert_eq!(
        drain(&mut pu),
        vec![
            Out::Send(mid(2), hr("A", Some(1))),
            Out::Send(mid(2), hr("B", Some(1))),
        ]
    );
    pu.handle_timeout(ms(6020));
    assert_eq!(
        drain(&mut pu),
        vec![
            Out::Close(mid(2), true),
            failed(a, "A", ResolutionFailure::Timeout),
            Out::Connect(mid(3), vec![sa("10.99.0.11:3863")], Sctp),
        ]
    );
    pu.handle_assoc_up(ms(6030), mid(3), &[]);
    assert_eq!(drain(&mut pu), vec![Out::Send(mid(3), hr("B", Some(1)))]);
    pu.handle_message(ms(6040), mid(3), 11, answer("B", &[1]));
    assert_eq!(drain(&mut pu), vec![resolved(b, "B", &[1])]);
}

#[test]
fn asap_error_instead_of_an_answer_drops_the_association() {
    let (mut pu, a) = connected(config(0), "A", 1);
    let err = vector("asap-error-unrecognized-parameter");
    let AsapMessage::Error(e) = AsapMessage::decode_bytes(&err).unwrap() else {
        panic!()
    };
    pu.handle_message(ms(20), mid(1), 11, err.clone());
    assert_eq!(
        drain(&mut pu),
        vec![
            Out::Close(mid(1), true),
            Out::Connect(mid(2), vec![sa("10.99.0.11:3863")], Sctp),
        ]
    );
    pu.handle_assoc_up(ms(30), mid(2), &[]);
    assert_eq!(drain(&mut pu), vec![Out::Send(mid(2), hr("A", Some(1)))]);
    pu.handle_message(ms(40), mid(2), 11, err.clone());
    assert_eq!(
        drain(&mut pu),
        vec![
            Out::Close(mid(2), true),
            failed(a, "A", ResolutionFailure::Error(e.error)),
        ]
    );
    // Without an outstanding request an ASAP_ERROR changes nothing.
    let (mut pu, _) = connected(config(0), "A", 1);
    pu.handle_message(ms(20), mid(1), 11, answer("A", &[1]));
    drain(&mut pu);
    pu.handle_message(ms(21), mid(1), 11, err);
    assert!(drain(&mut pu).is_empty());
    assert_eq!(pu.home_registrar(), Some((mid(1), None)));
}

#[test]
fn negative_answers() {
    let (mut pu, a) = connected(config(0), "A", 1);
    pu.handle_message(
        ms(20),
        mid(1),
        11,
        not_found("A", cause::UNKNOWN_POOL_HANDLE),
    );
    assert_eq!(
        drain(&mut pu),
        vec![failed(a, "A", ResolutionFailure::NotFound)]
    );
    let b = pu.resolve(ms(30), ph("A"), 1);
    drain(&mut pu);
    pu.handle_message(ms(31), mid(1), 11, not_found("A", cause::LACK_OF_RESOURCES));
    assert_eq!(
        drain(&mut pu),
        vec![failed(
            b,
            "A",
            ResolutionFailure::Error(OperationError::new(ErrorCause::new(
                cause::LACK_OF_RESOURCES,
                Bytes::new()
            )))
        )]
    );
    // "Not found" also throws away cached entries of the pool.
    let (mut pu, first) = connected(config(60_000), "A", 1);
    let second = pu.resolve(ms(11), ph("A"), 1);
    assert_eq!(drain(&mut pu), vec![Out::Send(mid(1), hr("A", None))]);
    pu.handle_message(ms(20), mid(1), 11, answer("A", &[1]));
    assert_eq!(drain(&mut pu), vec![resolved(first, "A", &[1])]);
    assert_eq!(pu.cache().element_count(), 1);
    pu.handle_message(
        ms(22),
        mid(1),
        11,
        not_found("A", cause::UNKNOWN_POOL_HANDLE),
    );
    assert_eq!(
        drain(&mut pu),
        vec![failed(second, "A", ResolutionFailure::NotFound)]
    );
    assert_eq!(pu.cache().element_count(), 0);
}

#[test]
fn no_registrar_fails_after_the_hunt() {
    let mut pu = PoolUser::new(PoolUserConfig::default(), rng(1));
    let a = pu.resolve(ms(0), ph("A"), 1);
    assert!(drain(&mut pu).is_empty());
    assert_eq!(pu.poll_timeout(), Some(ms(7500)));
    pu.handle_timeout(ms(7500));
    assert_eq!(
        drain(&mut pu),
        vec![failed(a, "A", ResolutionFailure::NoRegistrar)]
    );
    assert_eq!(pu.poll_timeout(), None);
}

#[test]
fn announced_registrar_is_used_and_its_id_learnt() {
    let mut pu = PoolUser::new(PoolUserConfig::default(), rng(1));
    let a = pu.resolve(ms(0), ph("EchoPool"), 1);
    pu.handle_datagram(
        ms(100),
        sa("10.99.0.11:3863"),
        11,
        vector("asap-server-announce-multicast"),
    );
    assert_eq!(
        drain(&mut pu),
        vec![Out::Connect(mid(1), vec![sa("10.99.0.11:3863")], Sctp)]
    );
    pu.handle_assoc_up(ms(101), mid(1), &[]);
    assert_eq!(
        drain(&mut pu),
        vec![Out::Send(mid(1), hr("EchoPool", Some(1)))]
    );
    assert_eq!(pu.home_registrar(), Some((mid(1), Some(PR1))));
    pu.handle_message(
        ms(102),
        mid(1),
        11,
        vector("asap-handle-resolution-response"),
    );
    let out = drain(&mut pu);
    assert!(matches!(&out[..], [Out::Event(Ev::Resolved { request, .. })] if *request == a));
}

#[test]
fn malformed_input_never_panics() {
    let (mut pu, a) = connected(config(0), "EchoPool", 1);
    let v = vector("asap-handle-resolution-response");
    for cut in 0..v.len() {
        pu.handle_message(ms(20), mid(1), 11, v.slice(..cut));
        pu.handle_datagram(ms(20), sa("10.0.0.1:1"), 11, v.slice(..cut));
    }
    // Unknown message type with report bits: reported to the registrar.
    pu.handle_message(ms(21), mid(1), 11, hex("4f00 0004"));
    let out = drain(&mut pu);
    assert!(
        matches!(&out[..], [Out::Send(_, AsapMessage::Error(e))] if e.error.causes[0].code == cause::UNRECOGNIZED_MESSAGE),
        "{out:?}"
    );
    // Answers on foreign associations and with the wrong PPID are ignored.
    pu.handle_message(ms(22), AssocId(3), 11, v.clone());
    pu.handle_message(ms(22), mid(1), 12, v.clone());
    pu.handle_assoc_up(ms(22), AssocId(3), &[]);
    pu.handle_assoc_down(ms(22), AssocId(3), AssocDownReason::Lost);
    assert!(drain(&mut pu).is_empty());
    // A PE with an invalid user transport (port 0) is skipped.
    let mut bad = pe(1, Policy::RoundRobin);
    bad.user_transport.port = 0;
    pu.handle_message(ms(23), mid(1), 11, answer_with("EchoPool", vec![bad]));
    assert_eq!(
        drain(&mut pu),
        vec![failed(a, "EchoPool", ResolutionFailure::NotFound)]
    );
    let mut r = rng(5);
    for _ in 0..2000 {
        let mut b = vec![0u8; (rand_core::Rng::next_u32(&mut r) % 80) as usize];
        rand_core::Rng::fill_bytes(&mut r, &mut b);
        if let Some(t) = b.first_mut() {
            *t %= 16;
        }
        pu.handle_message(ms(24), mid(1), 11, b.clone().into());
        pu.handle_datagram(ms(24), sa("10.0.0.1:1"), 11, b.into());
    }
    let _ = drain(&mut pu);
    assert_eq!(pu.home_registrar().map(|h| h.0), Some(mid(1)));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Random driver schedules: no panic, the driving contract holds, and every resolution
    /// is answered by exactly one event or is still outstanding.
    #[test]
    fn random_schedules_answer_every_request_once(
        ops in proptest::collection::vec(op(), 1..120),
        seed in 0u64..1000,
        stale in 0u64..3000,
    ) {
        let mut c = config(stale);
        c.registrar_table.static_registrars.push(StaticRegistrar::sctp([sa("10.99.0.12:3863")]));
        let mut pu = PoolUser::new(c, rng(seed));
        let messages = vec![
            answer("A", &[1, 2, 3]),
            answer("A", &[1]),
            answer("B", &[4]),
            not_found("A", cause::UNKNOWN_POOL_HANDLE),
            not_found("B", cause::LACK_OF_RESOURCES),
            vector("asap-error-unrecognized-parameter"),
            vector("asap-endpoint-keep-alive"),
            hex("4f00 0004"),
            hex("0600 0010 0009"),
        ];
        let datagrams = vec![
            (sa("10.99.0.11:3863"), vector("asap-server-announce-multicast")),
            (sa("10.99.0.13:41000"), hex("0a000008 00000077")),
        ];
        let mut made = Vec::new();
        let events = run_schedule(&mut pu, &ops, &messages, &datagrams, |pu, now, c| {
            let h = if c & 1 == 0 { "A" } else { "B" };
            if c % 5 == 4 {
                pu.report_unreachable(now, ph(h), PeIdentifier(u32::from(c % 3) + 1));
            } else {
                made.push(pu.resolve(now, ph(h), u32::from(c % 4)));
            }
        });
        let mut answered: Vec<RequestId> = events
            .iter()
            .map(|e| match e {
                Ev::Resolved { request, elements, .. } => {
                    assert!(!elements.is_empty());
                    *request
                }
                Ev::ResolutionFailed { request, .. } => *request,
            })
            .collect();
        answered.sort();
        let n = answered.len();
        answered.dedup();
        proptest::prop_assert_eq!(answered.len(), n, "a request answered twice");
        proptest::prop_assert_eq!(n + pu.outstanding(), made.len());
    }
}
