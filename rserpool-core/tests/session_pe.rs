//! Pool element sessions: registration passed through, sessions opened by pool users, data,
//! cookie echo delivered at once and first, cookies and business cards sent, sessions closed,
//! registrar associations told apart from sessions.

mod common;
mod session_support;

use bytes::Bytes;
use common::{ip, ms, rng, sa, vector};
use core::time::Duration;
use session_support::*;

use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::AssocId;
use rserpool_core::io::{AssocDownReason, ChannelKind, Machine};
use rserpool_core::pool_element::{PoolElementConfig, PoolElementEvent};
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_core::session::{PeSessionEvent, PoolElementSessions, SendError, SessionCloseReason};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{
    BusinessCard, CookieEcho, CookieMessage, EndpointKeepAlive, EndpointKeepAliveAck,
    RegistrationResponse,
};
use rserpool_proto::ids::{PeIdentifier, ServerId};
use rserpool_proto::transport::TRANSPORT_USE_DATA_ONLY;
use rserpool_proto::transport::TransportProtocol::{Sctp, Tcp};

use PeSessionEvent as Ev;

type Pes = PoolElementSessions<Xoshiro256PlusPlus>;
type O = SOut<PeSessionEvent>;

const POOL: &str = "EchoPool";
/// The PE taken over in 05-enrp-3pr-takeover.pcap.
const PE31: PeIdentifier = PeIdentifier(0x1f);
/// The registrar taking over there.
const PR2: ServerId = ServerId(0xce35_a3ba);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn config(protocol: rserpool_proto::transport::TransportProtocol) -> PoolElementConfig {
    let mut c = PoolElementConfig::new(POOL, protocol, 7000, [ip("10.99.0.14")]);
    c.pe_id = Some(PE31);
    c.reregistration_interval = Duration::from_secs(3);
    c.registrar_table.static_registrars = vec![StaticRegistrar::sctp([sa("10.99.0.11:3863")])];
    c
}

fn accept() -> Bytes {
    AsapMessage::from(RegistrationResponse {
        pool_handle: ph(POOL),
        pe_id: PE31,
        ..Default::default()
    })
    .to_bytes()
}

fn keep_alive(server: ServerId, home: bool) -> Bytes {
    AsapMessage::from(EndpointKeepAlive {
        home,
        reserved_flags: 0,
        server_id: server,
        pool_handle: ph(POOL),
        pe_id: Some(PE31),
        skipped: Vec::new(),
    })
    .to_bytes()
}

fn ack(assoc: AssocId) -> O {
    O::Asap(assoc, EndpointKeepAliveAck::new(ph(POOL), PE31).into())
}

/// A PE registered at 12 ms over `reg()`.
fn registered() -> Pes {
    let mut p = Pes::new(config(Sctp), rng(1)).unwrap();
    assert_eq!(p.poll_timeout(), None);
    p.register(ms(0));
    assert_eq!(
        sdrain(&mut p),
        vec![O::Connect(
            reg(),
            vec![sa("10.99.0.11:3863")],
            Sctp,
            ChannelKind::AsapToRegistrar
        )]
    );
    p.handle_assoc_up(ms(10), reg(), &[]);
    let out = sdrain(&mut p);
    let [O::Asap(a, AsapMessage::Registration(r))] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(*a, reg());
    // The session listener, with a control channel.
    assert_eq!(r.pool_element.user_transport.protocol, Sctp);
    assert_eq!(r.pool_element.user_transport.port, 7000);
    assert!(r.pool_element.user_transport.has_control_channel());
    p.handle_message(ms(12), reg(), 11, accept());
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::Registration(PoolElementEvent::Registered {
            registrar: None,
            pe_id: PE31,
            life: 9000
        }))]
    );
    assert!(p.element().is_registered());
    p
}

#[test]
fn registration_events_pass_through_and_the_control_channel_is_forced_on() {
    let mut p = registered();
    // Keep-alives on the registrar association are answered by the pool element.
    p.handle_message(ms(20), reg(), 11, keep_alive(ServerId(7), false));
    assert_eq!(sdrain(&mut p), vec![ack(reg())]);
    // Re-registration timer.
    assert_eq!(p.poll_timeout(), Some(ms(3012)));
    p.handle_timeout(ms(3012));
    assert!(matches!(
        &sdrain(&mut p)[..],
        [O::Asap(_, AsapMessage::Registration(_))]
    ));
    p.handle_assoc_down(ms(3013), reg(), AssocDownReason::Lost);
    let out = sdrain(&mut p);
    assert_eq!(
        out[0],
        O::Event(Ev::Registration(PoolElementEvent::RegistrarLost {
            registrar: Some(ServerId(7))
        }))
    );
    p.deregister(ms(3014));

    // A configuration without control channel is corrected; TCP listeners register TCP.
    let mut c = config(Tcp);
    c.user_transport.transport_use = TRANSPORT_USE_DATA_ONLY;
    let p = Pes::new(c, rng(1)).unwrap();
    let t = &p.element().config().user_transport;
    assert_eq!(t.protocol, Tcp);
    assert!(t.has_control_channel());
    // Invalid configurations are refused as by the pool element.
    let mut c = config(Sctp);
    c.user_transport.port = 0;
    assert!(Pes::new(c, rng(1)).is_err());
}

#[test]
fn session_open_data_and_close() {
    let mut p = registered();
    let s = AssocId(5);
    p.handle_assoc_up(ms(100), s, &[sa("10.99.0.15:53546")]);
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::SessionOpened { session: s })]
    );
    assert!(p.has_session(s));
    // A duplicate "up" changes nothing.
    p.handle_assoc_up(ms(100), s, &[]);
    assert_eq!(sdrain(&mut p), vec![]);
    p.handle_message(ms(101), s, 33, b("ping"));
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::Data {
            session: s,
            ppid: 33,
            data: b("ping")
        })]
    );
    p.send(s, 33, b("pong")).unwrap();
    assert_eq!(sdrain(&mut p), vec![O::Data(s, 33, b("pong"))]);
    assert_eq!(p.send(s, 11, b("x")), Err(SendError::ControlPpid));
    assert_eq!(p.send(AssocId(99), 33, b("x")), Err(SendError::NoSession));

    // The pool user leaves: the application hears of it.
    p.handle_assoc_down(ms(102), s, AssocDownReason::Shutdown);
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::SessionClosed {
            session: s,
            reason: SessionCloseReason::Shutdown
        })]
    );
    assert_eq!(p.session_count(), 0);

    // The application ends sessions itself: no event, the association goes.
    for id in [6, 7] {
        p.handle_assoc_up(ms(103), AssocId(id), &[]);
        sdrain(&mut p);
    }
    assert_eq!(
        p.sessions().collect::<Vec<_>>(),
        vec![AssocId(6), AssocId(7)]
    );
    assert!(p.close(AssocId(6)));
    assert!(p.abort(AssocId(7)));
    assert!(!p.close(AssocId(6)));
    assert_eq!(
        sdrain(&mut p),
        vec![O::Close(AssocId(6), false), O::Close(AssocId(7), true)]
    );
    p.handle_assoc_down(ms(104), AssocId(6), AssocDownReason::Closed);
    assert_eq!(sdrain(&mut p), vec![]);
    // A lost session.
    p.handle_assoc_up(ms(105), AssocId(8), &[]);
    sdrain(&mut p);
    p.handle_assoc_down(ms(106), AssocId(8), AssocDownReason::Lost);
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::SessionClosed {
            session: AssocId(8),
            reason: SessionCloseReason::Lost
        })]
    );
    // The registration is untouched by sessions.
    assert!(p.element().is_registered());
}

#[test]
fn cookie_echo_is_delivered_at_once_and_first() {
    let mut p = registered();
    let s = AssocId(5);
    p.handle_assoc_up(ms(100), s, &[]);
    sdrain(&mut p);
    // The RSPLIB Ping Pong cookie echo, then data right behind it.
    p.handle_message(ms(101), s, 11, vector("asap-cookie-echo"));
    // Delivered now, not with the next data message (RSPLIB defect 6).
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::CookieEcho {
            session: s,
            cookie: Bytes::from_static(b"<PP-TD1>\0\0\0\0\0\0\0\x0d"),
        })]
    );
    p.handle_message(ms(101), s, 33, b("ping"));
    // A second cookie echo on the same session is dropped (RSPLIB).
    let again = AsapMessage::from(CookieEcho::new(b("other"))).to_bytes();
    p.handle_message(ms(102), s, 11, again);
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::Data {
            session: s,
            ppid: 33,
            data: b("ping")
        })]
    );
    // Other control messages are dropped; garbage too.
    p.handle_message(ms(103), s, 11, vector("asap-cookie"));
    p.handle_message(ms(103), s, 11, Bytes::from_static(&[0x0c, 0]));
    assert_eq!(sdrain(&mut p), vec![]);
}

#[test]
fn cookies_and_business_cards_are_sent_on_the_control_channel() {
    let mut p = registered();
    let s = AssocId(5);
    p.handle_assoc_up(ms(100), s, &[]);
    sdrain(&mut p);
    p.send_cookie(s, b("<PP-TD1>\0\0\0\0\0\0\0\x02")).unwrap();
    let out = sdrain(&mut p);
    assert_eq!(
        out,
        vec![O::Asap(
            s,
            CookieMessage::new(b("<PP-TD1>\0\0\0\0\0\0\0\x02")).into()
        )]
    );
    // Byte for byte the RSPLIB cookie.
    let O::Asap(_, m) = &out[0] else {
        unreachable!()
    };
    assert_eq!(m.to_bytes(), vector("asap-cookie"));

    p.send_business_card(s, vec![pe(2), pe(3)]).unwrap();
    assert_eq!(
        sdrain(&mut p),
        vec![O::Asap(
            s,
            BusinessCard {
                pool_handle: ph(POOL),
                pool_elements: vec![pe(2), pe(3)],
                ..Default::default()
            }
            .into()
        )]
    );
    assert_eq!(p.send_cookie(AssocId(9), b("c")), Err(SendError::NoSession));
    assert_eq!(
        p.send_business_card(AssocId(9), vec![]),
        Err(SendError::NoSession)
    );

    // A card received (from a PU that is also a PE) is delivered.
    let card = BusinessCard {
        pool_handle: ph("PuPool"),
        pool_elements: vec![pe(4)],
        ..Default::default()
    };
    p.handle_message(ms(101), s, 11, AsapMessage::from(card.clone()).to_bytes());
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::BusinessCard { session: s, card })]
    );
}

#[test]
fn registrar_associations_are_told_apart_from_sessions() {
    let mut p = registered();
    // 1. The driver says so (ASAP listener / RTF channel kind 2): a takeover.
    let r = AssocId(40);
    p.handle_registrar_assoc_up(ms(100), r, &[sa("10.99.0.12:3863")]);
    assert_eq!(sdrain(&mut p), vec![]);
    assert!(!p.has_session(r));
    p.handle_message(ms(101), r, 11, vector("asap-endpoint-keep-alive-home"));
    let out = sdrain(&mut p);
    assert_eq!(out[0], ack(r));
    assert!(out.contains(&O::Event(Ev::Registration(
        PoolElementEvent::HomeRegistrarChanged {
            old: None,
            new: PR2
        }
    ))));
    assert_eq!(p.element().home_registrar().map(|h| h.assoc), Some(r));

    // 2. Fallback: accepted as a session, its first message is a registrar's keep-alive.
    let r2 = AssocId(41);
    p.handle_assoc_up(ms(200), r2, &[]);
    assert_eq!(
        sdrain(&mut p),
        vec![O::Event(Ev::SessionOpened { session: r2 })]
    );
    p.handle_message(ms(201), r2, 11, keep_alive(PR2, false));
    assert_eq!(
        sdrain(&mut p),
        vec![
            O::Event(Ev::SessionClosed {
                session: r2,
                reason: SessionCloseReason::RegistrarChannel
            }),
            ack(r2),
        ]
    );
    assert!(!p.has_session(r2));
    // Later traffic on it stays with the pool element.
    p.handle_message(ms(202), r2, 11, keep_alive(PR2, false));
    assert_eq!(sdrain(&mut p), vec![ack(r2)]);
    p.handle_assoc_down(ms(203), r2, AssocDownReason::Lost);
    assert_eq!(sdrain(&mut p), vec![]);

    // A keep-alive that is not the first message of a session is just a dropped control
    // message: sessions are not hijacked.
    let s = AssocId(42);
    p.handle_assoc_up(ms(300), s, &[]);
    p.handle_message(ms(301), s, 0, b("hello"));
    sdrain(&mut p);
    p.handle_message(ms(302), s, 11, keep_alive(PR2, true));
    assert_eq!(sdrain(&mut p), vec![]);
    assert!(p.has_session(s));

    // 3. Associations never announced are classified by their first message.
    p.handle_message(ms(400), AssocId(43), 0, b("data"));
    assert_eq!(
        sdrain(&mut p),
        vec![
            O::Event(Ev::SessionOpened {
                session: AssocId(43)
            }),
            O::Event(Ev::Data {
                session: AssocId(43),
                ppid: 0,
                data: b("data")
            }),
        ]
    );
    p.handle_message(ms(401), AssocId(44), 11, keep_alive(PR2, false));
    assert_eq!(sdrain(&mut p), vec![ack(AssocId(44))]);
    assert!(!p.has_session(AssocId(44)));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Random driver schedules: no panic, the driving contract holds, and session events are
    /// consistent: data and cookie echoes only on open sessions, at most one cookie echo per
    /// session, every close names an open session.
    #[test]
    fn random_schedules_keep_sessions_consistent(
        ops in proptest::collection::vec(session_op(), 1..200),
        seed in 0u64..1000,
    ) {
        let mut p = Pes::new(config(Sctp), rng(seed)).unwrap();
        p.register(ms(0));
        let messages = vec![
            (11, accept()),
            (11, keep_alive(PR2, false)),
            (11, keep_alive(PR2, true)),
            (11, vector("asap-cookie-echo")),
            (11, AsapMessage::from(CookieEcho::new(b("x"))).to_bytes()),
            (11, vector("asap-cookie")),
            (11, Bytes::from_static(&[0x0c, 0, 0, 4])),
            (0, b("data")),
            (33, b("ping")),
        ];
        let events = run_session_schedule(
            &mut p,
            &ops,
            &messages,
            |p, now, c| {
                let s = p.sessions().nth(usize::from(c / 8));
                match (c % 8, s) {
                    (0, _) => p.register(now),
                    (1, _) => p.deregister(now),
                    (2, Some(s)) => { p.close(s); }
                    (3, Some(s)) => { p.abort(s); }
                    (4, Some(s)) => p.send_cookie(s, b("c")).unwrap(),
                    (5, Some(s)) => p.send_business_card(s, vec![pe(2)]).unwrap(),
                    (_, Some(s)) => p.send(s, 0, b("out")).unwrap(),
                    _ => {}
                }
            },
            |_, _| {},
        );
        let mut open = std::collections::BTreeSet::new();
        let mut echoed = std::collections::BTreeSet::new();
        for e in &events {
            match e {
                Ev::SessionOpened { session } => assert!(open.insert(*session), "{events:?}"),
                Ev::SessionClosed { session, .. } => assert!(open.remove(session), "{events:?}"),
                Ev::Data { session, .. } | Ev::BusinessCard { session, .. } => {
                    assert!(open.contains(session), "{events:?}")
                }
                Ev::CookieEcho { session, .. } => {
                    assert!(open.contains(session), "{events:?}");
                    assert!(echoed.insert(*session), "second cookie echo: {events:?}");
                }
                Ev::Registration(_) => {}
            }
        }
        // Sessions the application closed itself produce no event, so `open` may hold more.
        for s in p.sessions() {
            assert!(open.contains(&s));
        }
    }
}
