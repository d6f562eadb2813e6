//! `hsdump` against a fake ENRP server (Transports over the TCP mapping, channel kind ENRP)
//! that answers with a canned List Response and two Handle Table Responses (M = 1, then
//! M = 0); and its failures (nothing listening, a server that never speaks).

use mio::{Events, Poll};
use rserpool_core::Protocol;
use rserpool_mio::transport::{TransportConfig, TransportEvent, TransportKind, Transports};
use rserpool_proto::EnrpMessage;
use rserpool_proto::enrp::{HandleTableEntry, HandleTableResponse, ListResponse};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{PoolElementParameter, ServerInformation};
use rserpool_proto::policy::Policy;
use rserpool_proto::rtf::ChannelKind;
use rserpool_proto::transport::TransportParameter;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const REGISTRAR: ServerId = ServerId(0xaaaa_0001);

fn pe(
    id: u32,
    home: ServerId,
    user: TransportParameter,
    asap: TransportParameter,
    policy: Policy,
) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: PeIdentifier(id),
        home_server_id: home,
        registration_life: 90_000,
        user_transport: user,
        policy,
        asap_transport: Some(asap),
    }
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

/// What the fake server received, in order.
type Received = Vec<EnrpMessage>;

/// Serves one hsdump session; returns what it received once the association is gone (or
/// after 10 s).
fn fake_registrar(addr_tx: mpsc::Sender<SocketAddr>) -> Received {
    let mut poll = Poll::new().unwrap();
    let mut t = Transports::new(poll.registry(), 0..64, TransportConfig::default()).unwrap();
    let l = t
        .listen(
            &["127.0.0.1:0".parse().unwrap()],
            TransportKind::Tcp,
            ChannelKind::Enrp,
        )
        .unwrap();
    addr_tx.send(t.socket_local_addrs(l).unwrap()[0]).unwrap();
    let mut events = Events::with_capacity(64);
    let mut out = Vec::new();
    let mut received = Vec::new();
    let mut tables_sent = 0;
    let start = Instant::now();
    let mut seen_up = false;
    while start.elapsed() < Duration::from_secs(10) {
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        let now = Instant::now();
        for ev in events.iter() {
            t.handle_event(ev, now, &mut out);
        }
        t.handle_timeout(now, &mut out);
        for e in out.drain(..) {
            match e {
                TransportEvent::Up { .. } => seen_up = true,
                TransportEvent::Message {
                    assoc, ppid, data, ..
                } => {
                    assert_eq!(ppid, Protocol::Enrp.ppid());
                    let m = EnrpMessage::decode_bytes(&data).unwrap();
                    let reply = match &m {
                        EnrpMessage::ListRequest(r) => {
                            Some(EnrpMessage::ListResponse(ListResponse {
                                sender: REGISTRAR,
                                receiver: r.sender,
                                servers: vec![
                                    // RSPLIB lists the requester itself: hsdump leaves it out.
                                    ServerInformation {
                                        server_id: r.sender,
                                        transport: TransportParameter::sctp(
                                            1234,
                                            0,
                                            [ip("127.0.0.1")],
                                        ),
                                    },
                                    ServerInformation {
                                        server_id: ServerId(0xbbbb_0002),
                                        transport: TransportParameter::sctp(
                                            9901,
                                            0,
                                            [ip("10.0.0.2")],
                                        ),
                                    },
                                    ServerInformation {
                                        server_id: ServerId::NONE,
                                        transport: TransportParameter::sctp(
                                            9901,
                                            0,
                                            [ip("10.0.0.3")],
                                        ),
                                    },
                                ],
                                ..ListResponse::default()
                            }))
                        }
                        EnrpMessage::HandleTableRequest(r) => {
                            tables_sent += 1;
                            let (more, entries) = if tables_sent == 1 {
                                (
                                    true,
                                    vec![HandleTableEntry {
                                        pool_handle: PoolHandle::from("EchoPool"),
                                        pool_elements: vec![pe(
                                            0x1f,
                                            REGISTRAR,
                                            TransportParameter::sctp(5000, 1, [ip("10.0.0.4")]),
                                            TransportParameter::sctp(6000, 0, [ip("10.0.0.4")]),
                                            Policy::RoundRobin,
                                        )],
                                    }],
                                )
                            } else {
                                let calc = |id| {
                                    pe(
                                        id,
                                        ServerId(0xbbbb_0002),
                                        TransportParameter::tcp(7000, 1, [ip("10.0.0.5")]),
                                        TransportParameter::tcp(7000, 1, [ip("10.0.0.5")]),
                                        Policy::WeightedRoundRobin { weight: 3 },
                                    )
                                };
                                (
                                    false,
                                    vec![HandleTableEntry {
                                        pool_handle: PoolHandle::from("CalcAppPool"),
                                        pool_elements: vec![calc(0x16), calc(0x15)],
                                    }],
                                )
                            };
                            Some(EnrpMessage::HandleTableResponse(HandleTableResponse {
                                more,
                                sender: REGISTRAR,
                                receiver: r.sender,
                                entries,
                                ..HandleTableResponse::default()
                            }))
                        }
                        _ => None,
                    };
                    received.push(m);
                    if let Some(r) = reply {
                        t.send(assoc, Protocol::Enrp.ppid(), 0, r.to_bytes())
                            .unwrap();
                    }
                }
                TransportEvent::Down { .. } => return received,
                TransportEvent::Datagram { .. } => {}
            }
        }
    }
    panic!("the hsdump session did not end (association up: {seen_up}); received {received:?}");
}

fn hsdump(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_hsdump"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, Duration::from_secs(20))
}

fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "process did not end in {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

const EXPECTED_HANDLESPACE: &str = "\
Handlespace: 2 pools, 3 PEs, checksum $181d
  Home registrar $aaaa0001: 1 PE, checksum $9232
  Home registrar $bbbb0002: 2 PEs, checksum $85ea
Pool \"CalcAppPool\": 2 PEs
  PE $00000015: home $bbbb0002, life 90000 ms, policy WeightedRoundRobin { weight: 3 }
    user transport: TCP 10.0.0.5 port 7000 (data plus control)
    ASAP transport: TCP 10.0.0.5 port 7000 (data plus control)
  PE $00000016: home $bbbb0002, life 90000 ms, policy WeightedRoundRobin { weight: 3 }
    user transport: TCP 10.0.0.5 port 7000 (data plus control)
    ASAP transport: TCP 10.0.0.5 port 7000 (data plus control)
Pool \"EchoPool\": 1 PE
  PE $0000001f: home $aaaa0001, life 90000 ms, policy RoundRobin
    user transport: SCTP 10.0.0.4 port 5000 (data plus control)
    ASAP transport: SCTP 10.0.0.4 port 6000 (data only)
";

#[test]
fn dumps_peer_list_and_handlespace_following_continuations() {
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn(move || fake_registrar(tx));
    let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let out = hsdump(&[&addr.to_string(), "-transport=tcp", "-timeout=5000"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "status {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "\
Registrar $aaaa0001: 2 peers
  Peer $00000000 (identifier not yet known): SCTP 10.0.0.3 port 9901 (data only)
  Peer $bbbb0002: SCTP 10.0.0.2 port 9901 (data only)
{EXPECTED_HANDLESPACE}"
    );
    assert_eq!(stdout, expected);

    // What the server saw: RSPLIB's sequence, then one more table request for M = 1.
    let received = server.join().unwrap();
    let EnrpMessage::Presence(p) = &received[0] else {
        panic!("{received:?}")
    };
    let me = p.sender;
    assert_ne!(me, ServerId::NONE);
    assert!(!p.reply_required);
    assert_eq!(p.checksum.map(|c| c.0), Some(0xffff));
    let info = p.server_information.as_ref().unwrap();
    assert_eq!(info.server_id, me);
    assert_eq!(info.transport.addresses.as_slice(), &[ip("127.0.0.1")]);
    assert!(matches!(&received[1], EnrpMessage::ListRequest(r) if r.sender == me));
    let tables: Vec<_> = received
        .iter()
        .filter_map(|m| match m {
            EnrpMessage::HandleTableRequest(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(tables.len(), 2, "{received:?}");
    assert!(
        tables
            .iter()
            .all(|r| !r.own_children_only && r.sender == me)
    );
    assert_eq!(received.len(), 4, "{received:?}");
}

#[test]
fn handlespace_only_output_is_the_comparable_part() {
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn(move || fake_registrar(tx));
    let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let out = hsdump(&[&addr.to_string(), "-transport=tcp", "-handlespaceonly"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), EXPECTED_HANDLESPACE);
    server.join().unwrap();
}

#[test]
fn exits_1_when_nothing_listens() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = hsdump(&[&format!("127.0.0.1:{port}"), "-transport=tcp"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn exits_1_when_the_peer_never_answers() {
    // Accepts the TCP connection but never speaks the TCP mapping.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let holder = thread::spawn(move || {
        let conn = l.accept().unwrap();
        thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let start = Instant::now();
    let out = hsdump(&[&addr.to_string(), "-transport=tcp", "-timeout=500"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer in time"), "{err}");
    holder.join().unwrap();
}
