//! Registrar table: announce parsing (RSPLIB's UDP-source-port quirk, transport TLVs, T7
//! expiry, limits) and the hunt's bookkeeping.

mod common;

use common::*;
use core::time::Duration;

use rserpool_core::AssocId;
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::registrar_table::{
    AnnounceOutcome, HuntAction, HuntOutcome, RegistrarTable, RegistrarTableConfig,
    RegistrarTransport, StaticRegistrar,
};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::ServerAnnounce;
use rserpool_proto::ids::ServerId;
use rserpool_proto::param::ServerInformation;
use rserpool_proto::transport::{TransportParameter, TransportProtocol};

use TransportProtocol::{Sctp, Tcp};

const PR1: ServerId = ServerId(0x1de0_434e);

fn mid(n: u64) -> AssocId {
    AssocId(AssocIdAllocator::MACHINE_BIT | n)
}

fn sctp(addrs: &[&str]) -> RegistrarTransport {
    RegistrarTransport {
        protocol: Sctp,
        addrs: addrs.iter().map(|a| sa(a)).collect(),
    }
}

fn actions(t: &mut RegistrarTable) -> Vec<HuntAction> {
    std::iter::from_fn(|| t.poll_action()).collect()
}

#[test]
fn rsplib_announce_uses_the_udp_source_address_and_port() {
    let mut t = RegistrarTable::new(RegistrarTableConfig::default());
    let mut r = rng(1);
    let v = vector("asap-server-announce-multicast");
    assert_eq!(
        t.handle_datagram(ms(100), sa("10.99.0.11:41234"), &v, &mut r),
        AnnounceOutcome::New
    );
    let e = &t.entries()[0];
    assert_eq!(e.server_id, Some(PR1));
    assert_eq!(e.transports.to_vec(), vec![sctp(&["10.99.0.11:41234"])]);
    assert_eq!(e.expires, Some(ms(5100)));

    // RFC rule instead: the IANA port.
    let mut t = RegistrarTable::new(RegistrarTableConfig {
        announce_default_port: Some(3863),
        ..Default::default()
    });
    t.handle_datagram(ms(0), sa("10.99.0.11:41234"), &v, &mut r);
    assert_eq!(
        t.entries()[0].transports.to_vec(),
        vec![sctp(&["10.99.0.11:3863"])]
    );
}

#[test]
fn announce_transport_parameters_sctp_first_tcp_too_others_ignored() {
    // RFC-style announce with an SCTP transport (asap.md §4.10 example).
    let rfc = hex("0a000018 0000000a 00040010 0f170000 00010008 0a000002");
    let mut t = RegistrarTable::new(RegistrarTableConfig::default());
    let mut r = rng(1);
    t.handle_datagram(ms(0), sa("10.0.0.2:40000"), &rfc, &mut r);
    assert_eq!(t.entries()[0].server_id, Some(ServerId(10)));
    assert_eq!(
        t.entries()[0].transports.to_vec(),
        vec![sctp(&["10.0.0.2:3863"])]
    );

    // SCTP (one address unspecified: the source address), TCP, UDP (ignored), and a
    // Server Information (RSPLIB extension) with another SCTP address.
    let a = ServerAnnounce {
        server_id: ServerId(7),
        transports: vec![
            TransportParameter::sctp(3863, 0, [ip("10.0.0.7"), ip("0.0.0.0")]),
            TransportParameter::tcp(3863, 0, [ip("10.0.0.7")]),
            TransportParameter::with(TransportProtocol::Udp, 3863, 0, [ip("10.0.0.7")]),
        ],
        server_information: Some(ServerInformation {
            server_id: ServerId(7),
            transport: TransportParameter::sctp(3864, 0, [ip("10.1.0.7")]),
        }),
        ..Default::default()
    };
    let bytes = AsapMessage::from(a).to_bytes();
    let mut t = RegistrarTable::new(RegistrarTableConfig::default());
    t.handle_datagram(ms(0), sa("192.168.0.7:9"), &bytes, &mut r);
    let want = vec![
        sctp(&["10.0.0.7:3863", "192.168.0.7:3863"]),
        RegistrarTransport {
            protocol: Tcp,
            addrs: [sa("10.0.0.7:3863")].into_iter().collect(),
        },
        sctp(&["10.1.0.7:3864"]),
    ];
    assert_eq!(t.entries()[0].transports.to_vec(), want);
    // The hunt connects with SCTP by default...
    t.start_hunt(ms(1), &mut r);
    assert_eq!(
        actions(&mut t),
        vec![HuntAction::Connect {
            assoc: mid(1),
            addrs: want[0].addrs.clone(),
            transport: Sctp
        }]
    );
    // ...and with TCP where the driver prefers it (no kernel SCTP).
    let mut t = RegistrarTable::new(RegistrarTableConfig {
        transport_preference: [Tcp, Sctp].into_iter().collect(),
        ..Default::default()
    });
    t.handle_datagram(ms(0), sa("192.168.0.7:9"), &bytes, &mut r);
    t.start_hunt(ms(1), &mut r);
    assert_eq!(
        actions(&mut t),
        vec![HuntAction::Connect {
            assoc: mid(1),
            addrs: [sa("10.0.0.7:3863")].into_iter().collect(),
            transport: Tcp
        }]
    );
}

#[test]
fn t7_expiry_refresh_and_static_entries() {
    let mut t = RegistrarTable::new(RegistrarTableConfig {
        static_registrars: vec![StaticRegistrar::tcp([sa("10.0.0.1:3863")])],
        ..Default::default()
    });
    let mut r = rng(1);
    let v = vector("asap-server-announce-multicast");
    assert_eq!(t.poll_timeout(), None, "static entries never expire");
    assert_eq!(
        t.handle_datagram(ms(0), sa("10.99.0.11:3863"), &v, &mut r),
        AnnounceOutcome::New
    );
    assert_eq!(t.poll_timeout(), Some(ms(5000)));
    assert_eq!(
        t.handle_datagram(ms(3000), sa("10.99.0.11:3863"), &v, &mut r),
        AnnounceOutcome::Refreshed
    );
    assert_eq!(t.entries().len(), 2);
    assert_eq!(t.poll_timeout(), Some(ms(8000)));
    assert!(t.handle_timeout(ms(7999), &mut r).is_none());
    assert_eq!(t.entries().len(), 2);
    t.handle_timeout(ms(8000), &mut r);
    assert_eq!(t.entries().len(), 1);
    assert_eq!(t.entries()[0].server_id, None);
    assert_eq!(t.entries()[0].expires, None);
    assert_eq!(t.poll_timeout(), None);
    // A registrar that moved (same id, new address) updates its entry.
    t.handle_datagram(ms(9000), sa("10.99.0.11:3863"), &v, &mut r);
    t.handle_datagram(ms(9001), sa("10.99.0.12:3863"), &v, &mut r);
    assert_eq!(t.entries().len(), 2);
    assert_eq!(
        t.entries()[1].transports.to_vec(),
        vec![sctp(&["10.99.0.12:3863"])]
    );
}

#[test]
fn announces_disabled_limited_or_malformed_are_ignored() {
    let mut r = rng(1);
    let v = vector("asap-server-announce-multicast");
    let mut off = RegistrarTable::new(RegistrarTableConfig {
        use_announces: false,
        ..Default::default()
    });
    assert_eq!(
        off.handle_datagram(ms(0), sa("10.0.0.1:3863"), &v, &mut r),
        AnnounceOutcome::Ignored
    );
    assert!(off.entries().is_empty());

    let mut t = RegistrarTable::new(RegistrarTableConfig {
        max_dynamic: 2,
        ..Default::default()
    });
    for (i, want) in [
        AnnounceOutcome::New,
        AnnounceOutcome::New,
        AnnounceOutcome::Ignored,
    ]
    .into_iter()
    .enumerate()
    {
        let a = AsapMessage::from(ServerAnnounce {
            server_id: ServerId(i as u32 + 1),
            ..Default::default()
        })
        .to_bytes();
        assert_eq!(
            t.handle_datagram(ms(0), sa("10.0.0.1:3863"), &a, &mut r),
            want
        );
    }
    // Server id 0 ("unknown"): keyed by the address.
    let mut t = RegistrarTable::new(RegistrarTableConfig::default());
    let zero = hex("0a000008 00000000");
    assert_eq!(
        t.handle_datagram(ms(0), sa("10.0.0.1:3863"), &zero, &mut r),
        AnnounceOutcome::New
    );
    assert_eq!(
        t.handle_datagram(ms(1), sa("10.0.0.1:3863"), &zero, &mut r),
        AnnounceOutcome::Refreshed
    );
    assert_eq!(
        t.handle_datagram(ms(2), sa("10.0.0.2:3863"), &zero, &mut r),
        AnnounceOutcome::New
    );
    assert_eq!(t.entries()[0].server_id, None);
    // Other messages, garbage, truncations; source port 0 without transports.
    let mut t = RegistrarTable::new(RegistrarTableConfig::default());
    for name in [
        "asap-registration",
        "asap-endpoint-keep-alive",
        "enrp-presence",
    ] {
        assert_eq!(
            t.handle_datagram(ms(0), sa("10.0.0.1:3863"), &vector(name), &mut r),
            AnnounceOutcome::Ignored
        );
    }
    for cut in 0..v.len() {
        assert_eq!(
            t.handle_datagram(ms(0), sa("10.0.0.1:3863"), &v.slice(..cut), &mut r),
            AnnounceOutcome::Ignored
        );
    }
    assert_eq!(
        t.handle_datagram(ms(0), sa("10.0.0.1:0"), &v, &mut r),
        AnnounceOutcome::Ignored
    );
    assert!(t.entries().is_empty());
}

#[test]
fn hunt_bookkeeping() {
    let mut t = RegistrarTable::new(RegistrarTableConfig {
        static_registrars: vec![
            StaticRegistrar::sctp([sa("10.99.0.11:3863")]),
            StaticRegistrar::sctp([sa("10.0.0.2:3863"), sa("10.1.0.2:3863")]),
        ],
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let mut r = rng(1);
    assert!(!t.is_hunting());
    t.start_hunt(ms(0), &mut r);
    t.start_hunt(ms(1), &mut r);
    assert_eq!(actions(&mut t).len(), 2, "a second start does nothing");
    assert_eq!(t.poll_timeout(), Some(ms(2000)));
    assert_eq!(t.pending_attempts().count(), 2);
    assert!(t.handle_assoc_up(AssocId(5)).is_none(), "not an attempt");
    assert!(!t.handle_assoc_down(AssocId(5)));
    t.cancel_hunt();
    assert!(!t.is_hunting());
    assert_eq!(
        actions(&mut t),
        vec![
            HuntAction::Close {
                assoc: mid(1),
                abort: true
            },
            HuntAction::Close {
                assoc: mid(2),
                abort: true
            },
        ]
    );
    // A static registrar that also announces itself: its id is learnt on connection.
    t.handle_datagram(
        ms(10),
        sa("10.99.0.11:3863"),
        &vector("asap-server-announce-multicast"),
        &mut r,
    );
    t.start_hunt(ms(10), &mut r);
    let a = actions(&mut t);
    let won = a
        .iter()
        .find_map(|x| match x {
            HuntAction::Connect { assoc, addrs, .. }
                if addrs.as_slice() == [sa("10.99.0.11:3863")] =>
            {
                Some(*assoc)
            }
            _ => None,
        })
        .unwrap();
    let Some(HuntOutcome::Connected {
        assoc, server_id, ..
    }) = t.handle_assoc_up(won)
    else {
        panic!()
    };
    assert_eq!((assoc, server_id), (won, Some(PR1)));
    assert!(!t.is_hunting());
    assert_eq!(actions(&mut t).len(), a.len() - 1, "the others are closed");
}
