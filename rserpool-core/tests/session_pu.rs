//! Pool user session machine: connect, data, cookies, failover with cookie echo and replay,
//! response timeout, retries, connect timeout, PE avoidance, business cards, policies; fed
//! with scripted message sequences (and real RSPLIB cookie vectors).

mod common;
mod session_support;

use bytes::Bytes;
use common::{ms, rng, sa, vector};
use core::time::Duration;
use session_support::*;

use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::io::{AssocDownReason, ChannelKind, Machine};
use rserpool_core::pool_user::ResolutionFailure;
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_core::session::{
    FailoverReason, PoolUserSession, PoolUserSessionConfig, QueueLimit, ReplayPolicy, SendError,
    SessionEvent, SessionFailure, SessionState,
};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{
    BusinessCard, CookieEcho, CookieMessage, EndpointUnreachable, HandleResolution,
};
use rserpool_proto::ids::PeIdentifier;
use rserpool_proto::param::HandleResolutionOption;
use rserpool_proto::transport::TransportProtocol::{Sctp, Tcp, Udp};

use SessionEvent as Ev;

type Pus = PoolUserSession<Xoshiro256PlusPlus>;
type O = SOut<SessionEvent>;

const POOL: &str = "EchoPool";

fn config() -> PoolUserSessionConfig {
    let mut c = PoolUserSessionConfig::default();
    c.pool_user.registrar_table.static_registrars =
        vec![StaticRegistrar::sctp([sa("10.99.0.11:3863")])];
    c
}

fn id(n: u32) -> PeIdentifier {
    PeIdentifier(n)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn hr(items: Option<u32>) -> O {
    O::Asap(
        reg(),
        HandleResolution {
            pool_handle: ph(POOL),
            option: items.map(|items| HandleResolutionOption { items }),
            ..Default::default()
        }
        .into(),
    )
}

fn eu(pe: u32) -> O {
    O::Asap(reg(), EndpointUnreachable::new(ph(POOL), id(pe)).into())
}

fn connect_to(n: u64, pe: u32) -> O {
    O::Connect(sess(n), vec![pe_addr(pe)], Sctp, ChannelKind::Session)
}

fn cookie(bytes: &str) -> Bytes {
    AsapMessage::from(CookieMessage::new(b(bytes))).to_bytes()
}

fn echo(n: u64, bytes: &str) -> O {
    O::Asap(sess(n), CookieEcho::new(b(bytes)).into())
}

fn ev(e: SessionEvent) -> O {
    O::Event(e)
}

fn started(pe: u32, reason: FailoverReason) -> O {
    ev(Ev::FailoverStarted {
        pe_id: id(pe),
        reason,
    })
}

/// A session opened at t = 0 whose registrar comes up at 5 ms and answers `ids` at 10 ms;
/// the association to the first of them is up at 20 ms.
fn connected(c: PoolUserSessionConfig, ids: &[u32]) -> Pus {
    let mut s = Pus::new(c, rng(1));
    assert_eq!(s.state(), SessionState::Idle);
    s.connect(ms(0), ph(POOL));
    assert_eq!(
        sdrain(&mut s),
        vec![O::Connect(
            reg(),
            vec![sa("10.99.0.11:3863")],
            Sctp,
            ChannelKind::AsapToRegistrar
        )]
    );
    assert_eq!(s.state(), SessionState::Resolving);
    s.handle_assoc_up(ms(5), reg(), &[]);
    assert_eq!(sdrain(&mut s), vec![hr(Some(1))]);
    s.handle_message(ms(10), reg(), 11, answer(POOL, ids));
    assert_eq!(sdrain(&mut s), vec![connect_to(1, ids[0])]);
    assert_eq!(s.state(), SessionState::Connecting);
    s.handle_assoc_up(ms(20), sess(1), &[]);
    assert_eq!(
        sdrain(&mut s),
        vec![ev(Ev::Connected { pe_id: id(ids[0]) })]
    );
    assert_eq!(s.state(), SessionState::Connected);
    assert_eq!(s.pe_id(), Some(id(ids[0])));
    assert_eq!(s.association(), Some(sess(1)));
    s
}

#[test]
fn connect_resolves_one_pe_and_opens_a_session_association() {
    let s = connected(config(), &[7, 8]);
    assert!(!s.has_cookie());
    // Nothing outstanding: no timer at all.
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn the_pe_transport_decides_the_connect_protocol() {
    let mut s = Pus::new(config(), rng(1));
    s.connect(ms(0), ph(POOL));
    s.handle_assoc_up(ms(1), reg(), &[]);
    sdrain(&mut s);
    s.handle_message(ms(2), reg(), 11, answer_with(POOL, vec![pe_over(4, Tcp)]));
    assert_eq!(
        sdrain(&mut s),
        vec![O::Connect(
            sess(1),
            vec![pe_addr(4)],
            Tcp,
            ChannelKind::Session
        )]
    );
}

#[test]
fn a_pe_with_an_unusable_transport_fails_the_attempt() {
    let mut c = config();
    c.max_attempts = Some(1);
    let mut s = Pus::new(c, rng(1));
    s.connect(ms(0), ph(POOL));
    s.handle_assoc_up(ms(1), reg(), &[]);
    sdrain(&mut s);
    s.handle_message(ms(2), reg(), 11, answer_with(POOL, vec![pe_over(4, Udp)]));
    assert_eq!(
        events(&sdrain(&mut s)),
        vec![Ev::Failed {
            cause: SessionFailure::UnsupportedTransport(Udp)
        }]
    );
    assert_eq!(s.state(), SessionState::Failed);
}

#[test]
fn data_flows_both_ways_and_ppid_11_is_refused() {
    let mut s = Pus::new(config(), rng(1));
    assert_eq!(s.send(ms(0), 0, b("x")), Err(SendError::NoSession));
    let mut s2 = connected(config(), &[1]);
    assert_eq!(s2.last_data_ppid(), 0);
    s2.send(ms(30), 33, b("ping")).unwrap();
    assert_eq!(sdrain(&mut s2), vec![O::Data(sess(1), 33, b("ping"))]);
    assert_eq!(s2.send(ms(30), 11, b("x")), Err(SendError::ControlPpid));
    assert_eq!(s2.last_data_ppid(), 33, "status reports name the data PPID");
    s2.handle_message(ms(31), sess(1), 33, b("pong"));
    assert_eq!(
        sdrain(&mut s2),
        vec![ev(Ev::Data {
            ppid: 33,
            data: b("pong")
        })]
    );
    // Control messages other than cookies and cards are dropped; garbage too.
    s2.handle_message(ms(32), sess(1), 11, Bytes::from_static(&[0x0e, 0, 0]));
    s2.handle_message(ms(32), sess(1), 11, vector("asap-endpoint-keep-alive"));
    assert_eq!(sdrain(&mut s2), vec![]);
    s.close(ms(1));
    assert_eq!(
        sdrain(&mut s),
        vec![],
        "closing an idle session does nothing"
    );
}

#[test]
fn newest_cookie_is_kept_and_echoed_first_on_failover() {
    let mut s = connected(config(), &[1, 2]);
    s.handle_message(ms(30), sess(1), 11, cookie("state-1"));
    s.handle_message(ms(31), sess(1), 11, cookie("state-2"));
    assert_eq!(
        events(&sdrain(&mut s)),
        vec![Ev::CookieReceived, Ev::CookieReceived]
    );
    assert_eq!(s.cookie(), Some(&b("state-2")));
    s.handle_assoc_down(ms(40), sess(1), AssocDownReason::Lost);
    assert_eq!(
        sdrain(&mut s),
        vec![
            started(1, FailoverReason::AssociationLost),
            eu(1),
            hr(Some(2)),
        ]
    );
    assert_eq!(s.state(), SessionState::Resolving);
    // The registrar still names the dead PE first (RSPLIB defect 4): it is skipped.
    s.handle_message(ms(41), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
    s.handle_assoc_up(ms(42), sess(2), &[]);
    assert_eq!(
        sdrain(&mut s),
        vec![
            echo(2, "state-2"),
            ev(Ev::FailoverComplete {
                pe_id: id(2),
                has_cookie: true,
                replayed: 0
            }),
        ]
    );
    // The cookie survives the failover.
    assert_eq!(s.cookie(), Some(&b("state-2")));
}

#[test]
fn rsplib_cookie_is_echoed_byte_for_byte() {
    let mut s = connected(config(), &[11, 12]);
    let c = vector("asap-cookie");
    s.handle_message(ms(30), sess(1), 11, c.clone());
    assert!(s.has_cookie());
    sdrain(&mut s);
    s.handle_assoc_down(ms(40), sess(1), AssocDownReason::Lost);
    sdrain(&mut s);
    s.handle_message(ms(41), reg(), 11, answer(POOL, &[12]));
    sdrain(&mut s);
    s.handle_assoc_up(ms(42), sess(2), &[]);
    let mut first = None;
    while let Some(o) = s.poll_output() {
        if let rserpool_core::Output::Transmit(t) = o {
            first = Some(t);
            break;
        }
    }
    let t = first.expect("cookie echo sent");
    assert_eq!(t.ppid, 11);
    let mut expected = c.to_vec();
    expected[0] = 0x0c; // ASAP_COOKIE_ECHO: same cookie parameter, unchanged
    assert_eq!(&t.payload[..], &expected[..]);
}

#[test]
fn unanswered_data_is_replayed_after_the_cookie_echo_then_new_data() {
    let mut s = connected(config(), &[1, 2]);
    s.send(ms(100), 0, b("line1")).unwrap();
    s.handle_message(ms(101), sess(1), 0, b("line1"));
    s.send(ms(200), 0, b("line2")).unwrap();
    s.send(ms(210), 0, b("line3")).unwrap();
    // A cookie is not an answer: line2 and line3 stay unanswered.
    s.handle_message(ms(220), sess(1), 11, cookie("c"));
    assert_eq!(s.replay_len(), 2);
    sdrain(&mut s);
    s.handle_assoc_down(ms(250), sess(1), AssocDownReason::Shutdown);
    assert_eq!(
        sdrain(&mut s),
        vec![started(1, FailoverReason::Shutdown), eu(1), hr(Some(2)),]
    );
    // Sent during the failover: queued.
    s.send(ms(251), 0, b("line4")).unwrap();
    assert_eq!(s.pending_len(), 1);
    assert_eq!(sdrain(&mut s), vec![]);
    s.handle_message(ms(252), reg(), 11, answer(POOL, &[2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
    s.handle_assoc_up(ms(260), sess(2), &[]);
    assert_eq!(
        sdrain(&mut s),
        vec![
            echo(2, "c"),
            O::Data(sess(2), 0, b("line2")),
            O::Data(sess(2), 0, b("line3")),
            O::Data(sess(2), 0, b("line4")),
            ev(Ev::FailoverComplete {
                pe_id: id(2),
                has_cookie: true,
                replayed: 2
            }),
        ]
    );
    s.send(ms(270), 0, b("line5")).unwrap();
    assert_eq!(sdrain(&mut s), vec![O::Data(sess(2), 0, b("line5"))]);
    assert_eq!(s.replay_len(), 4);
    s.handle_message(ms(271), sess(2), 0, b("line2"));
    assert_eq!(s.replay_len(), 0);
    assert_eq!(s.pending_len(), 0);
}

#[test]
fn no_cookie_means_no_echo_but_replay_still_happens() {
    let mut s = connected(config(), &[1, 2]);
    s.send(ms(100), 0, b("a")).unwrap();
    sdrain(&mut s);
    s.handle_assoc_down(ms(110), sess(1), AssocDownReason::Lost);
    sdrain(&mut s);
    s.handle_message(ms(111), reg(), 11, answer(POOL, &[2]));
    sdrain(&mut s);
    s.handle_assoc_up(ms(112), sess(2), &[]);
    assert_eq!(
        sdrain(&mut s),
        vec![
            O::Data(sess(2), 0, b("a")),
            ev(Ev::FailoverComplete {
                pe_id: id(2),
                has_cookie: false,
                replayed: 1
            }),
        ]
    );
}

#[test]
fn a_hung_pe_is_left_after_the_response_timeout() {
    let mut s = connected(config(), &[1, 2]);
    s.send(ms(1000), 0, b("req")).unwrap();
    sdrain(&mut s);
    assert_eq!(s.poll_timeout(), Some(ms(6000)));
    // Anything from the PE shows it is alive and restarts the wait.
    s.handle_message(ms(3000), sess(1), 11, cookie("k"));
    sdrain(&mut s);
    assert_eq!(s.poll_timeout(), Some(ms(8000)));
    s.handle_timeout(ms(7999));
    assert_eq!(sdrain(&mut s), vec![]);
    s.handle_timeout(ms(8000));
    assert_eq!(
        sdrain(&mut s),
        vec![
            started(1, FailoverReason::ResponseTimeout),
            O::Close(sess(1), true),
            eu(1),
            hr(Some(2)),
        ]
    );
    s.handle_message(ms(8001), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
    s.handle_assoc_up(ms(8002), sess(2), &[]);
    assert_eq!(
        sdrain(&mut s),
        vec![
            echo(2, "k"),
            O::Data(sess(2), 0, b("req")),
            ev(Ev::FailoverComplete {
                pe_id: id(2),
                has_cookie: true,
                replayed: 1
            }),
        ]
    );
    // The replayed request is outstanding on the new PE.
    assert_eq!(s.poll_timeout(), Some(ms(13002)));
}

#[test]
fn answered_or_idle_sessions_never_time_out() {
    let mut s = connected(config(), &[1, 2]);
    s.send(ms(100), 0, b("q")).unwrap();
    s.handle_message(ms(150), sess(1), 0, b("a"));
    sdrain(&mut s);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(ms(60_000));
    assert_eq!(sdrain(&mut s), vec![]);
    assert_eq!(s.state(), SessionState::Connected);

    let mut c = config();
    c.response_timeout = None;
    let mut s = connected(c, &[1, 2]);
    s.send(ms(100), 0, b("q")).unwrap();
    sdrain(&mut s);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn empty_pool_is_retried_after_250_ms_with_capped_backoff() {
    let mut c = config();
    c.retry_delay_max = Duration::from_millis(1000);
    let mut s = Pus::new(c, rng(1));
    s.connect(ms(0), ph(POOL));
    sdrain(&mut s);
    s.handle_assoc_up(ms(5), reg(), &[]);
    assert_eq!(sdrain(&mut s), vec![hr(Some(1))]);
    let mut t = 10;
    for delay in [250, 500, 1000, 1000] {
        s.handle_message(ms(t), reg(), 11, not_found(POOL));
        assert_eq!(sdrain(&mut s), vec![], "no connect, no event");
        assert_eq!(s.state(), SessionState::WaitingToRetry);
        assert_eq!(s.poll_timeout(), Some(ms(t + delay)));
        s.handle_timeout(ms(t + delay - 1));
        assert_eq!(sdrain(&mut s), vec![]);
        s.handle_timeout(ms(t + delay));
        assert_eq!(sdrain(&mut s), vec![hr(Some(1))]);
        t += delay + 5;
    }
    // Messages sent meanwhile wait for the PE.
    s.send(ms(t), 0, b("early")).unwrap();
    s.handle_message(ms(t), reg(), 11, answer(POOL, &[3]));
    assert_eq!(sdrain(&mut s), vec![connect_to(1, 3)]);
    s.handle_assoc_up(ms(t + 1), sess(1), &[]);
    assert_eq!(
        sdrain(&mut s),
        vec![
            O::Data(sess(1), 0, b("early")),
            ev(Ev::Connected { pe_id: id(3) })
        ]
    );
}

#[test]
fn connect_timeout_reports_the_pe_and_tries_the_next() {
    let mut s = Pus::new(config(), rng(1));
    s.connect(ms(0), ph(POOL));
    s.handle_assoc_up(ms(5), reg(), &[]);
    sdrain(&mut s);
    s.handle_message(ms(10), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(1, 1)]);
    assert_eq!(s.poll_timeout(), Some(ms(5010)));
    s.handle_timeout(ms(5009));
    assert_eq!(sdrain(&mut s), vec![]);
    s.handle_timeout(ms(5010));
    // Never connected: no failover event, just the next attempt.
    assert_eq!(
        sdrain(&mut s),
        vec![O::Close(sess(1), true), eu(1), hr(Some(2))]
    );
    s.handle_message(ms(5011), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
    // A late "up" of the abandoned attempt is closed again, not used.
    s.handle_assoc_up(ms(5012), sess(1), &[]);
    assert_eq!(sdrain(&mut s), vec![O::Close(sess(1), true)]);
    s.handle_assoc_up(ms(5013), sess(2), &[]);
    assert_eq!(sdrain(&mut s), vec![ev(Ev::Connected { pe_id: id(2) })]);
}

#[test]
fn refused_connect_reports_the_pe_and_tries_the_next_at_once() {
    let mut s = connected(config(), &[1, 2, 3]);
    s.handle_assoc_down(ms(30), sess(1), AssocDownReason::Lost);
    sdrain(&mut s);
    s.handle_message(ms(31), reg(), 11, answer(POOL, &[2, 3]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
    s.handle_assoc_down(ms(32), sess(2), AssocDownReason::ConnectFailed);
    // PE 1 and 2 are avoided: ask for three.
    assert_eq!(sdrain(&mut s), vec![eu(2), hr(Some(3))]);
    s.handle_message(ms(33), reg(), 11, answer(POOL, &[1, 2, 3]));
    assert_eq!(sdrain(&mut s), vec![connect_to(3, 3)]);
    s.handle_assoc_up(ms(34), sess(3), &[]);
    assert_eq!(
        events(&sdrain(&mut s)),
        vec![Ev::FailoverComplete {
            pe_id: id(3),
            has_cookie: false,
            replayed: 0
        }]
    );
}

#[test]
fn the_lost_pe_is_never_selected_again() {
    let mut s = connected(config(), &[1, 2]);
    s.handle_assoc_down(ms(30), sess(1), AssocDownReason::Lost);
    sdrain(&mut s);
    // The registrar has not noticed yet and names only the dead PE: wait, don't go back.
    s.handle_message(ms(31), reg(), 11, answer(POOL, &[1]));
    assert_eq!(sdrain(&mut s), vec![]);
    assert_eq!(s.state(), SessionState::WaitingToRetry);
    assert!(s.pool_user().is_suspect(ms(31), &ph(POOL), id(1)));
    s.handle_timeout(ms(281));
    assert_eq!(sdrain(&mut s), vec![hr(Some(2))]);
    s.handle_message(ms(282), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
}

#[test]
fn with_a_cache_the_failover_needs_no_registrar_round_trip() {
    let mut c = config();
    c.pool_user.stale_cache_value = Duration::from_secs(30);
    let mut s = Pus::new(c, rng(1));
    s.connect(ms(0), ph(POOL));
    sdrain(&mut s);
    s.handle_assoc_up(ms(5), reg(), &[]);
    // With a cache the Handle Resolution carries no item count (RSPLIB).
    assert_eq!(sdrain(&mut s), vec![hr(None)]);
    s.handle_message(ms(10), reg(), 11, answer(POOL, &[1, 2]));
    let out = sdrain(&mut s);
    let [O::Connect(a, addrs, Sctp, ChannelKind::Session)] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(*a, sess(1));
    let (first, other) = if addrs[0] == pe_addr(1) {
        (1, 2)
    } else {
        (2, 1)
    };
    s.handle_assoc_up(ms(20), sess(1), &[]);
    sdrain(&mut s);
    s.send(ms(30), 0, b("x")).unwrap();
    sdrain(&mut s);
    s.handle_assoc_down(ms(40), sess(1), AssocDownReason::Lost);
    // All in one call: event, report, connect to the cached other PE.
    assert_eq!(
        sdrain(&mut s),
        vec![
            started(first, FailoverReason::AssociationLost),
            eu(first),
            connect_to(2, other),
        ]
    );
}

#[test]
fn shutdown_without_report_avoids_the_pe_only_while_another_is_available() {
    let mut c = config();
    c.report_shutdown = false;
    let mut s = connected(c, &[1, 2]);
    s.handle_assoc_down(ms(100), sess(1), AssocDownReason::Shutdown);
    assert_eq!(
        sdrain(&mut s),
        vec![started(1, FailoverReason::Shutdown), hr(Some(2)),]
    );
    // Another PE is preferred ...
    s.handle_message(ms(101), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
    s.handle_assoc_up(ms(102), sess(2), &[]);
    sdrain(&mut s);
    // ... but the one that closed is used again when it is the only one (Daytime).
    s.handle_assoc_down(ms(200), sess(2), AssocDownReason::Shutdown);
    sdrain(&mut s);
    s.handle_message(ms(201), reg(), 11, answer(POOL, &[2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(3, 2)]);
    // A lost association is still reported.
    s.handle_assoc_up(ms(202), sess(3), &[]);
    sdrain(&mut s);
    s.handle_assoc_down(ms(300), sess(3), AssocDownReason::Lost);
    let out = sdrain(&mut s);
    assert!(out.contains(&eu(2)), "{out:?}");
}

#[test]
fn forced_failover_reports_only_when_asked() {
    let mut s = connected(config(), &[1, 2]);
    assert!(s.force_failover(ms(100), false));
    assert_eq!(
        sdrain(&mut s),
        vec![
            started(1, FailoverReason::Forced),
            O::Close(sess(1), true),
            hr(Some(2)),
        ]
    );
    // Another PE is preferred ...
    s.handle_message(ms(101), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
    s.handle_assoc_up(ms(102), sess(2), &[]);
    sdrain(&mut s);
    // Messages from the association left behind are ignored.
    s.handle_message(ms(103), sess(1), 0, b("late"));
    s.handle_assoc_down(ms(103), sess(1), AssocDownReason::Closed);
    assert_eq!(sdrain(&mut s), vec![]);

    assert!(s.force_failover(ms(200), true));
    assert_eq!(
        sdrain(&mut s),
        vec![
            started(2, FailoverReason::Forced),
            O::Close(sess(2), true),
            eu(2),
            hr(Some(3)),
        ]
    );
    // ... but an unreported PE may be used again if it is the only one; a reported one not.
    s.handle_message(ms(201), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(3, 1)]);

    let mut idle = Pus::new(config(), rng(1));
    assert!(!idle.force_failover(ms(0), true));
}

#[test]
fn business_card_sets_the_failover_order() {
    let mut s = connected(config(), &[1, 2, 3, 4]);
    let card = |pool: &str| {
        AsapMessage::from(BusinessCard {
            pool_handle: ph(pool),
            pool_elements: vec![pe(3), pe(2)],
            ..Default::default()
        })
        .to_bytes()
    };
    s.handle_message(ms(30), sess(1), 11, card("OtherPool"));
    assert!(s.business_card().is_empty());
    s.handle_message(ms(31), sess(1), 11, card(POOL));
    assert_eq!(s.business_card(), &[id(3), id(2)]);
    assert_eq!(sdrain(&mut s), vec![]);
    s.handle_assoc_down(ms(40), sess(1), AssocDownReason::Lost);
    // One PE, plus one for the avoided PE, plus the card's two.
    assert_eq!(&sdrain(&mut s)[2..], &[hr(Some(4))]);
    s.handle_message(ms(41), reg(), 11, answer(POOL, &[2, 4, 3]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 3)]);
}

#[test]
fn gives_up_after_max_attempts_and_can_be_restarted() {
    let mut c = config();
    c.max_attempts = Some(2);
    let mut s = Pus::new(c, rng(1));
    s.connect(ms(0), ph(POOL));
    s.handle_assoc_up(ms(5), reg(), &[]);
    sdrain(&mut s);
    s.handle_message(ms(10), reg(), 11, not_found(POOL));
    assert_eq!(sdrain(&mut s), vec![]);
    s.handle_timeout(ms(260));
    sdrain(&mut s);
    s.handle_message(ms(270), reg(), 11, not_found(POOL));
    assert_eq!(
        sdrain(&mut s),
        vec![ev(Ev::Failed {
            cause: SessionFailure::Resolution(ResolutionFailure::NotFound)
        })]
    );
    assert_eq!(s.state(), SessionState::Failed);
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.send(ms(271), 0, b("x")), Err(SendError::NoSession));
    assert!(s.force_failover(ms(300), false));
    assert_eq!(sdrain(&mut s), vec![hr(Some(1))]);
    s.handle_message(ms(301), reg(), 11, answer(POOL, &[5]));
    assert_eq!(sdrain(&mut s), vec![connect_to(1, 5)]);
}

#[test]
fn close_shuts_the_association_down_and_forgets_everything() {
    let mut s = connected(config(), &[1]);
    s.handle_message(ms(30), sess(1), 11, cookie("c"));
    s.send(ms(31), 0, b("x")).unwrap();
    sdrain(&mut s);
    s.close(ms(40));
    assert_eq!(
        sdrain(&mut s),
        vec![O::Close(sess(1), false), ev(Ev::Closed)]
    );
    assert_eq!(s.state(), SessionState::Closed);
    assert!(!s.has_cookie());
    assert_eq!(s.replay_len(), 0);
    assert_eq!(s.send(ms(41), 0, b("y")), Err(SendError::NoSession));
    s.handle_message(ms(42), sess(1), 0, b("late"));
    s.handle_assoc_down(ms(42), sess(1), AssocDownReason::Closed);
    assert_eq!(sdrain(&mut s), vec![]);
    assert!(!s.force_failover(ms(43), false));
    // A new connect starts over with fresh ids.
    s.connect(ms(50), ph(POOL));
    assert_eq!(sdrain(&mut s), vec![hr(Some(1))]);
    s.handle_message(ms(51), reg(), 11, answer(POOL, &[1]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 1)]);
}

#[test]
fn replay_policies() {
    // None: nothing is replayed, but messages sent during the failover are not lost.
    let mut c = config();
    c.replay = ReplayPolicy::None;
    let mut s = connected(c, &[1, 2]);
    s.send(ms(30), 0, b("a")).unwrap();
    assert_eq!(s.replay_len(), 0);
    s.handle_assoc_down(ms(31), sess(1), AssocDownReason::Lost);
    s.send(ms(32), 0, b("b")).unwrap();
    s.handle_message(ms(33), reg(), 11, answer(POOL, &[2]));
    sdrain(&mut s);
    s.handle_assoc_up(ms(34), sess(2), &[]);
    assert_eq!(
        sdrain(&mut s),
        vec![
            O::Data(sess(2), 0, b("b")),
            ev(Ev::FailoverComplete {
                pe_id: id(2),
                has_cookie: false,
                replayed: 0
            })
        ]
    );

    // SinceLastCookie: answers do not clear the buffer, a cookie does.
    let mut c = config();
    c.replay = ReplayPolicy::SinceLastCookie;
    let mut s = connected(c, &[1, 2]);
    s.send(ms(30), 0, b("a")).unwrap();
    s.handle_message(ms(31), sess(1), 0, b("A"));
    assert_eq!(s.replay_len(), 1);
    s.handle_message(ms(32), sess(1), 11, cookie("after-a"));
    assert_eq!(s.replay_len(), 0);
    s.send(ms(33), 0, b("b")).unwrap();
    s.handle_message(ms(34), sess(1), 0, b("B"));
    assert_eq!(s.replay_len(), 1);

    // UntilAcknowledged: the application says what was answered.
    let mut c = config();
    c.replay = ReplayPolicy::UntilAcknowledged;
    let mut s = connected(c, &[1, 2]);
    for m in ["a", "b", "c"] {
        s.send(ms(30), 0, b(m)).unwrap();
    }
    s.handle_message(ms(31), sess(1), 0, b("A"));
    assert_eq!(s.replay_len(), 3);
    assert_eq!(s.acknowledge(1), 1);
    s.handle_assoc_down(ms(32), sess(1), AssocDownReason::Lost);
    s.handle_message(ms(33), reg(), 11, answer(POOL, &[2]));
    sdrain(&mut s);
    s.handle_assoc_up(ms(34), sess(2), &[]);
    assert_eq!(
        sdrain(&mut s)[..2],
        [O::Data(sess(2), 0, b("b")), O::Data(sess(2), 0, b("c"))]
    );
    assert_eq!(s.acknowledge(10), 2);
}

#[test]
fn queues_are_bounded() {
    let mut c = config();
    c.queue_limit = QueueLimit {
        messages: 2,
        bytes: 1000,
    };
    let mut s = connected(c, &[1, 2]);
    for m in ["a", "b", "c"] {
        s.send(ms(30), 0, b(m)).unwrap();
    }
    // The replay buffer keeps the newest two.
    assert_eq!(s.replay_len(), 2);
    assert_eq!(s.replay_dropped(), 1);
    s.handle_assoc_down(ms(31), sess(1), AssocDownReason::Lost);
    s.send(ms(32), 0, b("d")).unwrap();
    s.send(ms(32), 0, b("e")).unwrap();
    assert_eq!(s.send(ms(32), 0, b("f")), Err(SendError::QueueFull));
    assert_eq!(
        s.send(ms(32), 0, Bytes::from(vec![0u8; 1001])),
        Err(SendError::QueueFull)
    );
    s.handle_message(ms(33), reg(), 11, answer(POOL, &[2]));
    sdrain(&mut s);
    s.handle_assoc_up(ms(34), sess(2), &[]);
    let data: Vec<O> = sdrain(&mut s)
        .into_iter()
        .filter(|o| matches!(o, O::Data(..)))
        .collect();
    assert_eq!(
        data,
        vec![
            O::Data(sess(2), 0, b("b")),
            O::Data(sess(2), 0, b("c")),
            O::Data(sess(2), 0, b("d")),
            O::Data(sess(2), 0, b("e")),
        ]
    );
}

#[test]
fn registrar_loss_during_failover_is_survived() {
    let mut s = connected(config(), &[1, 2]);
    s.handle_assoc_down(ms(30), sess(1), AssocDownReason::Lost);
    sdrain(&mut s);
    // The registrar goes away before answering: the pool user hunts again and resends.
    s.handle_assoc_down(ms(31), reg(), AssocDownReason::Lost);
    let out = sdrain(&mut s);
    let reg2 = match &out[..] {
        [O::Connect(a, _, Sctp, ChannelKind::AsapToRegistrar)] => *a,
        other => panic!("{other:?}"),
    };
    s.handle_assoc_up(ms(32), reg2, &[]);
    let out = sdrain(&mut s);
    assert!(
        out.iter()
            .any(|o| matches!(o, O::Asap(a, AsapMessage::HandleResolution(_)) if *a == reg2)),
        "{out:?}"
    );
    s.handle_message(ms(33), reg2, 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Random driver schedules: no panic, the driving contract holds, a connected session's
    /// association is live, and failover events come in order (started after being on a PE,
    /// complete right after started).
    #[test]
    fn random_schedules_keep_the_contract_and_event_order(
        ops in proptest::collection::vec(session_op(), 1..200),
        seed in 0u64..1000,
        stale in 0u64..2,
        max_attempts in proptest::option::of(1u32..4),
    ) {
        let mut c = config();
        c.pool_user.stale_cache_value = Duration::from_secs(stale * 20);
        c.max_attempts = max_attempts;
        c.queue_limit = QueueLimit { messages: 8, bytes: 4096 };
        let mut s = Pus::new(c, rng(seed));
        s.connect(ms(0), ph(POOL));
        let messages = vec![
            (11, answer(POOL, &[1, 2, 3])),
            (11, answer(POOL, &[2, 3, 1])),
            (11, answer(POOL, &[3, 1])),
            (11, answer(POOL, &[1])),
            (11, answer_with(POOL, vec![pe_over(4, Udp)])),
            (11, not_found(POOL)),
            (11, cookie("c1")),
            (11, AsapMessage::from(BusinessCard {
                pool_handle: ph(POOL),
                pool_elements: vec![pe(3)],
                ..Default::default()
            }).to_bytes()),
            (11, vector("asap-endpoint-keep-alive")),
            (11, Bytes::from_static(&[0x0b, 0, 0])),
            (0, b("answer")),
            (33, b("answer")),
        ];
        let mut sent = 0u32;
        let events = run_session_schedule(
            &mut s,
            &ops,
            &messages,
            |s, now, c| match c % 32 {
                0 => s.connect(now, ph(POOL)),
                1 => s.close(now),
                2..=5 => { s.force_failover(now, c & 1 != 0); }
                6 => { s.acknowledge(1); }
                _ => {
                    sent += 1;
                    let _ = s.send(now, 0, Bytes::from(sent.to_string()));
                }
            },
            |s, up| {
                if s.state() == SessionState::Connected {
                    let a = s.association().unwrap();
                    assert!(up.contains(&a), "connected over a dead association");
                }
                assert!(s.pending_len() <= 8 && s.replay_len() <= 8);
            },
        );
        let mut last: Option<&SessionEvent> = None;
        for e in &events {
            match e {
                Ev::FailoverStarted { .. } => assert!(
                    matches!(last, Some(Ev::Connected { .. } | Ev::FailoverComplete { .. })),
                    "{events:?}"
                ),
                Ev::FailoverComplete { .. } => assert!(
                    matches!(last, Some(Ev::FailoverStarted { .. })),
                    "{events:?}"
                ),
                _ => {}
            }
            if matches!(e, Ev::Connected { .. } | Ev::FailoverStarted { .. } | Ev::FailoverComplete { .. }) {
                last = Some(e);
            }
        }
    }
}

#[test]
fn pes_the_registrar_still_names_after_a_retry_delay_are_tried_again() {
    // Both PEs end a session (e.g. CalcApp's failure tester): they are reported, but the
    // registrar verifies them and keeps naming them.
    let mut s = connected(config(), &[1, 2]);
    s.handle_assoc_down(ms(30), sess(1), AssocDownReason::Lost);
    sdrain(&mut s);
    s.handle_message(ms(31), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
    s.handle_assoc_up(ms(32), sess(2), &[]);
    sdrain(&mut s);
    s.handle_assoc_down(ms(40), sess(2), AssocDownReason::Lost);
    let out = sdrain(&mut s);
    assert!(out.contains(&eu(2)), "{out:?}");
    // Right after the failure every PE named is suspect: wait (defect 4).
    s.handle_message(ms(41), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![]);
    assert_eq!(s.state(), SessionState::WaitingToRetry);
    // One retry delay later the registrar still names both: take one again at once.
    s.handle_timeout(ms(291));
    let out = sdrain(&mut s);
    assert!(matches!(out[..], [O::Asap(..)]), "{out:?}");
    s.handle_message(ms(292), reg(), 11, answer(POOL, &[1, 2]));
    let out = sdrain(&mut s);
    assert!(
        matches!(out[..], [O::Asap(..)]),
        "a fresh resolution: {out:?}"
    );
    s.handle_message(ms(293), reg(), 11, answer(POOL, &[1, 2]));
    let out = sdrain(&mut s);
    assert!(
        out == vec![connect_to(3, 1)] || out == vec![connect_to(3, 2)],
        "{out:?}"
    );
    let (first, other) = if out == vec![connect_to(3, 1)] {
        (1, 2)
    } else {
        (2, 1)
    };
    // If it fails, the other one (not failed since) is next; if that fails too, the
    // session waits again (no spinning on dead PEs).
    s.handle_assoc_down(ms(294), sess(3), AssocDownReason::ConnectFailed);
    assert!(sdrain(&mut s).contains(&eu(first)));
    s.handle_message(ms(295), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(4, other)]);
    s.handle_assoc_down(ms(296), sess(4), AssocDownReason::ConnectFailed);
    assert!(sdrain(&mut s).contains(&eu(other)));
    s.handle_message(ms(297), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![]);
    assert_eq!(s.state(), SessionState::WaitingToRetry);
}

fn standby_config() -> PoolUserSessionConfig {
    let mut c = config();
    c.standby_refresh = Some(Duration::from_secs(1));
    c
}

/// Connected to PE 1 at 20 ms; the first refresh goes out at once and is answered with
/// `ids` at 25 ms.
fn with_standby(ids: &[u32]) -> Pus {
    let mut s = connected(standby_config(), &[1]);
    assert_eq!(s.poll_timeout(), Some(ms(20)));
    s.handle_timeout(ms(20));
    // The serving PE and one more.
    assert_eq!(sdrain(&mut s), vec![hr(Some(2))]);
    s.handle_message(ms(25), reg(), 11, answer(POOL, ids));
    assert!(
        sdrain(&mut s).is_empty(),
        "a refresh answer changes nothing"
    );
    // The next refresh one interval later.
    assert_eq!(s.poll_timeout(), Some(ms(1020)));
    s
}

#[test]
fn a_standby_list_lets_the_failover_connect_without_a_resolution() {
    // PE 2 registered after the session resolved: only the refresh knows it.
    let mut s = with_standby(&[1, 2]);
    s.handle_assoc_down(ms(500), sess(1), AssocDownReason::Lost);
    // All in one call, without a Handle Resolution: event, report, connect to PE 2.
    assert_eq!(
        sdrain(&mut s),
        vec![
            started(1, FailoverReason::AssociationLost),
            eu(1),
            connect_to(2, 2),
        ]
    );
    s.handle_assoc_up(ms(501), sess(2), &[]);
    assert_eq!(
        sdrain(&mut s),
        vec![ev(Ev::FailoverComplete {
            pe_id: id(2),
            has_cookie: false,
            replayed: 0
        })]
    );
    // Refreshed again right after the new association is up (PE 1 avoided: one more item).
    s.handle_timeout(ms(501));
    assert_eq!(sdrain(&mut s), vec![hr(Some(3))]);
}

#[test]
fn a_stale_or_useless_standby_list_is_not_used() {
    // Older than twice the refresh interval: the failover resolves.
    let mut s = with_standby(&[1, 2]);
    s.handle_assoc_down(ms(2100), sess(1), AssocDownReason::Lost);
    let out = sdrain(&mut s);
    assert_eq!(out.last(), Some(&hr(Some(2))), "{out:?}");
    // A list naming only the lost PE: the failover resolves too.
    let mut s = with_standby(&[1]);
    s.handle_assoc_down(ms(500), sess(1), AssocDownReason::Lost);
    let out = sdrain(&mut s);
    assert_eq!(out.last(), Some(&hr(Some(2))), "{out:?}");
    // Without the option nothing is refreshed: no timer while connected and idle.
    let s = connected(config(), &[1]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_refresh_on_its_way_becomes_the_failovers_resolution() {
    let mut s = connected(standby_config(), &[1]);
    s.handle_timeout(ms(20));
    assert_eq!(sdrain(&mut s), vec![hr(Some(2))]);
    // Lost before the refresh is answered: no second Handle Resolution ...
    s.handle_assoc_down(ms(22), sess(1), AssocDownReason::Lost);
    assert_eq!(
        sdrain(&mut s),
        vec![started(1, FailoverReason::AssociationLost), eu(1),]
    );
    assert_eq!(s.state(), SessionState::Resolving);
    // ... the refresh's answer picks the next PE.
    s.handle_message(ms(25), reg(), 11, answer(POOL, &[1, 2]));
    assert_eq!(sdrain(&mut s), vec![connect_to(2, 2)]);
}
