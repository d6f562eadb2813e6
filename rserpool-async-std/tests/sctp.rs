//! The driver over kernel SCTP (one-to-one sockets from rserpool-mio's FFI module) on
//! loopback: echo with a multi-homed listener, abort propagation, and interop with the mio
//! transports. Skipped with a note when the kernel has no SCTP, unless
//! `RSERPOOL_REQUIRE_SCTP=1`. Run in `shared/tools/sctp-vm`:
//! `cargo test -p rserpool-async-std --test sctp --no-run`, then
//! `sctp-vm run --net=lo -- env RSERPOOL_REQUIRE_SCTP=1 <test binary>`.

mod common;

use common::*;
use futures_lite::future::zip;
use rserpool_async_std::transport::{TransportKind, sctp_available};
use rserpool_async_std::{DriverConfig, Listen, TransportMode, run_machine};
use rserpool_core::{AssocDownReason, AssocId, BulkTransfer, Output, Protocol};
use rserpool_proto::rtf::{ChannelKind, ChannelKinds};
use rserpool_proto::transport::TransportProtocol;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn sctp_or_skip(test: &str) -> bool {
    if sctp_available() {
        return true;
    }
    if std::env::var("RSERPOOL_REQUIRE_SCTP").as_deref() == Ok("1") {
        panic!("{test}: kernel SCTP required (RSERPOOL_REQUIRE_SCTP=1) but unavailable");
    }
    println!("note: {test} skipped: no kernel SCTP here; run it in sctp-vm");
    false
}

fn sctp_server() -> DriverConfig {
    DriverConfig {
        mode: TransportMode::Sctp,
        listen: vec![Listen::new(
            vec![
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.2:0".parse().unwrap(),
            ],
            ChannelKinds::from(ChannelKind::Session),
            TransportMode::Sctp,
        )],
        ..DriverConfig::default()
    }
}

fn sctp_client() -> DriverConfig {
    DriverConfig {
        mode: TransportMode::Sctp,
        ..DriverConfig::default()
    }
}

async fn sctp_echo_multihomed() {
    const N: usize = 40;
    let (server_h, mut server_ev, server) = run_machine(Echo::default(), sctp_server()).unwrap();
    let l = &server_h.listeners()[0];
    assert_eq!(l.kind, TransportKind::Sctp);
    let mut addrs = l.addrs.clone();
    addrs.sort();
    assert_eq!(addrs.len(), 2);
    let mut client = Client::over(&addrs, N, TransportProtocol::Sctp);
    client.payload = payload_nonempty;
    let (client_h, mut client_ev, client) = run_machine(client, sctp_client()).unwrap();
    let test = async {
        let (a, mut peer) = wait_for(&mut client_ev, "client Up", |e| match e {
            Ev::Up(a, p) => Some((*a, p.clone())),
            _ => None,
        })
        .await;
        peer.sort();
        assert_eq!(peer, addrs, "all of the server's addresses");
        wait_for(&mut client_ev, "all echoed", |e| {
            (*e == Ev::AllEchoed(a)).then_some(())
        })
        .await;
        wait_for(&mut client_ev, "client Down(Closed)", |e| {
            (*e == Ev::Down(a, AssocDownReason::Closed)).then_some(())
        })
        .await;
        wait_for(&mut server_ev, "server Down(Shutdown)", |e| {
            matches!(e, Ev::Down(_, AssocDownReason::Shutdown)).then_some(())
        })
        .await;
        client_h.shutdown().await.unwrap();
        server_h.shutdown().await.unwrap();
    };
    let ((server, client), ()) = zip(zip(server, client), test).await;
    assert_eq!(server.echoed, N);
    assert_eq!((client.received, client.mismatches), (N, 0));
}

#[test]
fn sctp_echo_multihomed_both_executors() {
    if !sctp_or_skip("sctp_echo_multihomed") {
        return;
    }
    on_async_std(sctp_echo_multihomed());
    on_block_on(sctp_echo_multihomed());
}

async fn sctp_abort_is_lost() {
    let (server_h, mut server_ev, server) = run_machine(Echo::default(), sctp_server()).unwrap();
    let addr = server_h.listen_addr(0).unwrap();
    let client = Client::over(&[addr], 0, TransportProtocol::Sctp);
    let (client_h, mut client_ev, client) = run_machine(client, sctp_client()).unwrap();
    let test = async {
        let a = wait_for(&mut client_ev, "client Up", |e| match e {
            Ev::Up(a, _) => Some(*a),
            _ => None,
        })
        .await;
        let s = wait_for(&mut server_ev, "server Up", |e| match e {
            Ev::Up(s, _) => Some(*s),
            _ => None,
        })
        .await;
        server_h
            .call(move |m: &mut Echo, _| {
                m.out.push_back(Output::Close {
                    assoc: s,
                    abort: true,
                })
            })
            .await
            .unwrap();
        wait_for(&mut client_ev, "client Down(Lost)", |e| {
            (*e == Ev::Down(a, AssocDownReason::Lost)).then_some(())
        })
        .await;
        client_h.shutdown().await.unwrap();
        server_h.shutdown().await.unwrap();
    };
    let _ = zip(zip(server, client), test).await;
}

#[test]
fn sctp_abort_is_lost_both_executors() {
    if !sctp_or_skip("sctp_abort_is_lost") {
        return;
    }
    on_async_std(sctp_abort_is_lost());
    on_block_on(sctp_abort_is_lost());
}

/// Async echo machine over SCTP, served to a client on the mio transports.
async fn sctp_async_server_mio_client() {
    use mio::{Events, Poll};
    use rserpool_mio::transport::{TransportConfig, TransportEvent, Transports};
    const N: usize = 30;
    let (h, _ev, run) = run_machine(Echo::default(), sctp_server()).unwrap();
    let addr: SocketAddr = h.listen_addr(0).unwrap();
    let (done_tx, done_rx) = async_channel::bounded(1);
    let thread = std::thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(64);
        let mut t = Transports::new(poll.registry(), 1..100, TransportConfig::default()).unwrap();
        let assoc = t
            .connect(
                &[addr],
                TransportKind::Sctp,
                ChannelKind::Session,
                Protocol::Asap,
            )
            .unwrap();
        let deadline = Instant::now() + LIMIT;
        let mut ev = Vec::new();
        let (mut up, mut received, mut bad) = (false, 0, 0);
        while received < N && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            let now = Instant::now();
            for e in events.iter() {
                t.handle_event(e, now, &mut ev);
            }
            t.handle_timeout(now, &mut ev);
            for e in ev.drain(..) {
                match e {
                    TransportEvent::Up { .. } => {
                        up = true;
                        for i in 0..N {
                            t.send(assoc, PPID_ASAP, 0, payload_nonempty(i)).unwrap();
                        }
                    }
                    TransportEvent::Message { ppid, data, .. } => {
                        if ppid != PPID_ASAP || data != payload_nonempty(received) {
                            bad += 1;
                        }
                        received += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        done_tx.send_blocking((up, received, bad)).unwrap();
    });
    let test = async {
        let r = done_rx.recv().await.unwrap();
        h.shutdown().await.unwrap();
        r
    };
    let (m, r) = zip(run, test).await;
    thread.join().unwrap();
    assert_eq!(r, (true, N, 0));
    assert_eq!(m.echoed, N);
}

#[test]
fn sctp_interop_with_mio_both_executors() {
    if !sctp_or_skip("sctp_interop_with_mio") {
        return;
    }
    on_async_std(sctp_async_server_mio_client());
    on_block_on(sctp_async_server_mio_client());
}

/// The async transports refuse an empty SCTP message without harming the association.
async fn sctp_empty_message_refused() {
    use bytes::Bytes;
    use rserpool_async_std::transport::{SendError, TransportEvent, Transports};
    let mut t = Transports::new(Default::default()).expect("poller");
    let l = t
        .listen(
            &["127.0.0.1:0".parse().unwrap()],
            TransportKind::Sctp,
            ChannelKind::Session,
        )
        .unwrap();
    let addr = t.socket_local_addrs(l).unwrap()[0];
    let c = t
        .connect(&[addr], TransportKind::Sctp, ChannelKind::Session)
        .unwrap();
    let mut server = None;
    let mut got = None;
    let deadline = Instant::now() + LIMIT;
    while got.is_none() {
        assert!(Instant::now() < deadline);
        match t.next_event().await {
            TransportEvent::Up {
                assoc,
                listener: Some(_),
                ..
            } => server = Some(assoc),
            TransportEvent::Up { assoc, .. } => {
                assert_eq!(assoc, c);
                assert_eq!(t.send(c, 11, 0, Bytes::new()), Err(SendError::Empty));
                t.send(c, 11, 0, Bytes::from_static(b"x")).unwrap();
            }
            TransportEvent::Message { assoc, data, .. } => got = Some((assoc, data)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, Some((server.unwrap(), Bytes::from_static(b"x"))));
    assert_eq!(t.association_count(), 2);
}

#[test]
fn sctp_empty_message_refused_both_executors() {
    if !sctp_or_skip("sctp_empty_message_refused") {
        return;
    }
    on_async_std(sctp_empty_message_refused());
    on_block_on(sctp_empty_message_refused());
}

/// The driver applies a machine's bulk transfers (`Machine::poll_bulk_transfer`; the
/// registrar reports its start-up download and the handle table walks it serves) to the SCTP
/// association: every second packet acknowledged while one runs, each at once after it; an
/// id the driver does not know is ignored.
async fn sctp_bulk_transfers_switch_the_sack_frequency() {
    let (server_h, _server_ev, server) = run_machine(Echo::default(), sctp_server()).unwrap();
    let addrs = server_h.listeners()[0].addrs.clone();
    let client = Client::over(&addrs[..1], 0, TransportProtocol::Sctp);
    let (client_h, mut client_ev, client) = run_machine(client, sctp_client()).unwrap();
    let test = async {
        let a = wait_for(&mut client_ev, "client Up", |e| match e {
            Ev::Up(a, _) => Some(*a),
            _ => None,
        })
        .await;
        let freq = || {
            let h = client_h.clone();
            async move {
                h.call_with(move |m: &mut Client, ctx| (m.bulk.len(), ctx.sack_freq(a).unwrap()))
                    .await
                    .unwrap()
            }
        };
        // A session association starts with the kernel's default; an end sets 1, a start 2.
        assert_eq!(freq().await.0, 0);
        for (running, want) in [(false, 1), (true, 2), (false, 1)] {
            client_h
                .call(move |m, _| {
                    m.bulk.push_back(BulkTransfer {
                        assoc: AssocId(0x7777),
                        running,
                    });
                    m.bulk.push_back(BulkTransfer { assoc: a, running });
                })
                .await
                .unwrap();
            assert_eq!(freq().await, (0, Some(want)), "running: {running}");
        }
        client_h.shutdown().await.unwrap();
        server_h.shutdown().await.unwrap();
    };
    zip(zip(server, client), test).await;
}

#[test]
fn sctp_bulk_transfers_switch_the_sack_frequency_both_executors() {
    if !sctp_or_skip("sctp_bulk_transfers_switch_the_sack_frequency") {
        return;
    }
    on_async_std(sctp_bulk_transfers_switch_the_sack_frequency());
    on_block_on(sctp_bulk_transfers_switch_the_sack_frequency());
}
