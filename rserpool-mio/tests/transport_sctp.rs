//! The core transport scenarios over kernel SCTP on loopback. Skipped with a note when the
//! kernel has no SCTP, unless `RSERPOOL_REQUIRE_SCTP=1` (then a missing SCTP fails). Run them
//! in `shared/tools/sctp-vm` (see the crate's transport docs).

mod common;

use bytes::Bytes;
use common::*;
use rserpool_core::{AssocId, Protocol};
use rserpool_mio::transport::{
    DownReason, SendError, TransportConfig, TransportEvent, TransportKind, TransportMode,
    Transports, sctp_available,
};
use rserpool_proto::rtf::ChannelKind;
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SCTP: TransportKind = TransportKind::Sctp;

fn sctp_or_skip(test: &str) -> bool {
    if sctp_available() {
        assert_eq!(TransportMode::Auto.resolve(), SCTP);
        return true;
    }
    assert_eq!(TransportMode::Auto.resolve(), TransportKind::Tcp);
    if std::env::var("RSERPOOL_REQUIRE_SCTP").as_deref() == Ok("1") {
        panic!("{test}: kernel SCTP required (RSERPOOL_REQUIRE_SCTP=1) but unavailable");
    }
    println!("note: {test} skipped: no kernel SCTP here (EPROTONOSUPPORT); run it in sctp-vm");
    false
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A listens on 127.0.0.1 and 127.0.0.2 (multi-homed), B connects to both addresses.
fn pair(ca: TransportConfig, cb: TransportConfig) -> (Net, AssocId, AssocId, Vec<SocketAddr>) {
    let mut net = Net::new(ca, cb);
    let l = net
        .a
        .listen(
            &[lo(0), "127.0.0.2:0".parse().unwrap()],
            SCTP,
            ChannelKind::AsapToRegistrar,
        )
        .unwrap();
    let mut laddrs = net.a.socket_local_addrs(l).unwrap();
    laddrs.sort();
    assert_eq!(laddrs.len(), 2, "{laddrs:?}");
    assert_eq!(laddrs[0].port(), laddrs[1].port());
    let on_b = net
        .b
        .connect(&laddrs, SCTP, ChannelKind::AsapToRegistrar, Protocol::Asap)
        .unwrap();
    net.wait_for("both Up", LIMIT, |n| {
        (n.ea.iter().any(|e| matches!(e, TransportEvent::Up { .. }))
            && n.eb.iter().any(|e| matches!(e, TransportEvent::Up { .. })))
        .then_some(())
    });
    let up_a = take_up(&mut net.ea).unwrap();
    let up_b = take_up(&mut net.eb).unwrap();
    match &up_a {
        TransportEvent::Up {
            kind,
            listener,
            channel,
            local_addrs,
            ..
        } => {
            assert_eq!(*kind, SCTP);
            assert_eq!(*listener, Some(l));
            assert_eq!(*channel, Some(ChannelKind::AsapToRegistrar));
            assert!(!local_addrs.is_empty());
        }
        _ => unreachable!(),
    }
    assert_eq!(up_assoc(&up_b), on_b);
    match &up_b {
        TransportEvent::Up { peer_addrs, .. } => {
            let mut p = peer_addrs.clone();
            p.sort();
            assert_eq!(p, laddrs, "the association knows both peer addresses");
        }
        _ => unreachable!(),
    }
    (net, up_assoc(&up_a), on_b, laddrs)
}

#[test]
fn sctp_connect_listen_data_both_ways_multihomed() {
    if !sctp_or_skip("sctp_connect_listen_data_both_ways_multihomed") {
        return;
    }
    let (mut net, on_a, on_b, laddrs) =
        pair(TransportConfig::default(), TransportConfig::default());
    let mut p = net.b.peer_addrs(on_b).unwrap();
    p.sort();
    assert_eq!(p, laddrs);
    assert_eq!(net.a.kind(on_a), Some(SCTP));
    net.b
        .send(on_b, 11, 0, Bytes::from_static(b"registration"))
        .unwrap();
    net.b
        .send(on_b, 0x0102_0304, 9, Bytes::from_static(b"ppid byte order"))
        .unwrap();
    net.a
        .send(on_a, 12, 15, Bytes::from_static(b"answer"))
        .unwrap();
    net.wait_for("messages", LIMIT, |n| {
        (n.ea.len() >= 2 && !n.eb.is_empty()).then_some(())
    });
    assert_eq!(
        take_message(&mut net.ea, on_a),
        Some((11, 0, Bytes::from_static(b"registration")))
    );
    assert_eq!(
        take_message(&mut net.ea, on_a),
        Some((0x0102_0304, 9, Bytes::from_static(b"ppid byte order")))
    );
    assert_eq!(
        take_message(&mut net.eb, on_b),
        Some((12, 15, Bytes::from_static(b"answer")))
    );
}

#[test]
fn sctp_large_messages_one_megabyte() {
    if !sctp_or_skip("sctp_large_messages_one_megabyte") {
        return;
    }
    let (mut net, on_a, on_b, _) = pair(TransportConfig::default(), TransportConfig::default());
    let big_b = payload(1, 1 << 20);
    let big_a = payload(2, 1 << 20);
    // Linux bounds one SCTP message by the socket's send buffer; raising it beyond
    // net.core.wmem_max needs CAP_NET_ADMIN (root in sctp-vm).
    match net.b.send(on_b, 33, 1, big_b.clone()) {
        Ok(()) => {}
        Err(SendError::TooLarge { max, .. }) if !is_root() => {
            println!("note: 1 MB SCTP message refused without CAP_NET_ADMIN (max {max})");
            return;
        }
        Err(e) => panic!("{e:?}"),
    }
    net.b.send(on_b, 33, 2, payload(3, 100)).unwrap();
    net.a.send(on_a, 12, 0, big_a.clone()).unwrap();
    net.wait_for("large messages", Duration::from_secs(20), |n| {
        (n.ea.len() >= 2 && !n.eb.is_empty()).then_some(())
    });
    assert_eq!(take_message(&mut net.ea, on_a), Some((33, 1, big_b)));
    assert_eq!(
        take_message(&mut net.ea, on_a),
        Some((33, 2, payload(3, 100)))
    );
    assert_eq!(take_message(&mut net.eb, on_b), Some((12, 0, big_a)));
}

#[test]
fn sctp_graceful_close_and_abort() {
    if !sctp_or_skip("sctp_graceful_close_and_abort") {
        return;
    }
    let (mut net, on_a, on_b, _) = pair(TransportConfig::default(), TransportConfig::default());
    for i in 0..20u64 {
        net.b.send(on_b, 33, 0, payload(i, 10_000)).unwrap();
    }
    assert!(net.b.close(on_b, false));
    let reason = net.wait_for("Down after shutdown", LIMIT, |n| take_down(&mut n.ea, on_a));
    assert_eq!(reason, DownReason::Shutdown);
    for i in 0..20u64 {
        assert_eq!(
            take_message(&mut net.ea, on_a),
            Some((33, 0, payload(i, 10_000))),
            "{i}"
        );
    }
    net.run_for(Duration::from_millis(100));
    assert!(net.eb.is_empty(), "{:?}", summarize(&net.eb));
    assert_eq!(net.b.association_count(), 0);

    let (mut net, on_a, on_b, _) = pair(TransportConfig::default(), TransportConfig::default());
    net.b.send(on_b, 11, 0, payload(7, 10)).unwrap();
    net.wait_for("message", LIMIT, |n| take_message(&mut n.ea, on_a));
    assert!(net.b.close(on_b, true));
    let reason = net.wait_for("Down after abort", LIMIT, |n| take_down(&mut n.ea, on_a));
    assert_eq!(reason, DownReason::Abort);
}

#[test]
fn sctp_killed_peer_and_connect_failure() {
    if !sctp_or_skip("sctp_killed_peer_and_connect_failure") {
        return;
    }
    let (mut net, on_a, _on_b, _) = pair(TransportConfig::default(), TransportConfig::default());
    // Kill B entirely: every socket of it is closed by the kernel.
    let registry = net.poll.registry().try_clone().unwrap();
    net.b = Transports::new(&registry, 2000..3000, TransportConfig::default()).unwrap();
    let reason = net.wait_for("Down", LIMIT, |n| take_down(&mut n.ea, on_a));
    assert!(
        matches!(reason, DownReason::Shutdown | DownReason::Abort),
        "{reason:?}"
    );
    assert_eq!(net.a.association_count(), 0);

    // Nobody listens on this port: the INIT is answered with ABORT.
    let probe = Socket::new(Domain::IPV4, Type::STREAM, Some(SockProtocol::SCTP)).unwrap();
    probe.bind(&lo(0).into()).unwrap();
    let dead = probe.local_addr().unwrap().as_socket().unwrap();
    drop(probe);
    let c = net
        .b
        .connect(&[dead], SCTP, ChannelKind::Session, Protocol::Asap)
        .unwrap();
    let reason = net.wait_for("ConnectFailed", Duration::from_secs(20), |n| {
        take_down(&mut n.eb, c)
    });
    assert_eq!(reason, DownReason::ConnectFailed);
}

#[test]
fn sctp_backpressure_queues_without_dropping() {
    if !sctp_or_skip("sctp_backpressure_queues_without_dropping") {
        return;
    }
    let cfg = TransportConfig {
        max_queued_bytes: 512 * 1024,
        ..TransportConfig::default()
    };
    let mut net = Net::new(cfg, TransportConfig::default());
    // A raw one-to-one SCTP server that accepts and does not read.
    let server = Socket::new(Domain::IPV4, Type::STREAM, Some(SockProtocol::SCTP)).unwrap();
    server.bind(&lo(0).into()).unwrap();
    server.listen(8).unwrap();
    let saddr = server.local_addr().unwrap().as_socket().unwrap();
    let c = net
        .a
        .connect(&[saddr], SCTP, ChannelKind::Session, Protocol::Asap)
        .unwrap();
    net.wait_for("Up", LIMIT, |n| take_up(&mut n.ea));
    let (conn, _) = server.accept().unwrap();
    const MSG: usize = 16 * 1024;
    let mut sent = 0u64;
    let refused = loop {
        match net.a.send(c, 33, 0, payload(sent, MSG)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        net.step();
        assert!(sent < 20_000, "the kernel buffers never filled up");
    };
    let queued = net.a.queued_bytes(c).unwrap();
    assert!(
        matches!(refused, SendError::QueueFull { .. }),
        "{refused:?}"
    );
    assert!(queued > 512 * 1024 - MSG, "queued {queued}");
    assert!(net.ea.is_empty(), "{:?}", summarize(&net.ea));
    conn.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut stream = Vec::new();
    let mut got = 0u64;
    let t0 = Instant::now();
    while got < sent {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "only {got} of {sent} arrived"
        );
        net.step();
        loop {
            match (&conn).read(&mut buf) {
                Ok(0) => panic!("EOF"),
                Ok(n) => stream.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        while stream.len() >= MSG {
            let m: Vec<u8> = stream.drain(..MSG).collect();
            assert_eq!(m, payload(got, MSG).to_vec(), "message {got} out of order");
            got += 1;
        }
    }
    assert_eq!(net.a.queued_bytes(c), Some(0));
    println!("sctp backpressure: {sent} × {MSG} bytes, queue peaked at {queued} bytes");
}

#[test]
fn sctp_pe_asap_endpoint_accepts_on_the_port_its_registration_left_from() {
    if !sctp_or_skip("sctp_pe_asap_endpoint_accepts_on_the_port_its_registration_left_from") {
        return;
    }
    // A = two "registrars" (ASAP listeners); B = a pool element whose ASAP listener is also
    // the source of its registrar associations (as RSPLIB's one-to-many ASAP socket).
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    let pr1 = net
        .a
        .listen(&[lo(0)], SCTP, ChannelKind::AsapToRegistrar)
        .unwrap();
    let pr1_addr = net.a.socket_local_addrs(pr1).unwrap();
    let pe_l = net
        .b
        .listen_as_source(
            &[lo(0)],
            SCTP,
            ChannelKind::AsapFromRegistrar,
            ChannelKind::AsapToRegistrar,
        )
        .unwrap();
    let pe_port = net.b.socket_local_addrs(pe_l).unwrap()[0].port();
    assert_ne!(pe_port, 0);
    // The registration association leaves from the PE's ASAP port.
    let reg = net
        .b
        .connect(
            &pr1_addr,
            SCTP,
            ChannelKind::AsapToRegistrar,
            Protocol::Asap,
        )
        .unwrap();
    net.wait_for("registration association up", LIMIT, |n| {
        (n.ea.iter().any(|e| matches!(e, TransportEvent::Up { .. }))
            && n.eb.iter().any(|e| matches!(e, TransportEvent::Up { .. })))
        .then_some(())
    });
    let up_a = take_up(&mut net.ea).unwrap();
    let on_a = up_assoc(&up_a);
    let TransportEvent::Up { peer_addrs, .. } = &up_a else {
        unreachable!()
    };
    assert_eq!(
        peer_addrs,
        &vec![lo(pe_port)],
        "the ASAP transport a PR records"
    );
    assert_eq!(up_assoc(&take_up(&mut net.eb).unwrap()), reg);
    // Another registrar (taking the PE over) connects to that address and port: the PE's
    // listener accepts it, as a registrar-to-PE channel.
    let takeover = net
        .a
        .connect(
            &[lo(pe_port)],
            SCTP,
            ChannelKind::AsapFromRegistrar,
            Protocol::Asap,
        )
        .unwrap();
    net.wait_for("takeover association up", LIMIT, |n| {
        (n.ea.iter().any(|e| matches!(e, TransportEvent::Up { .. }))
            && n.eb.iter().any(|e| matches!(e, TransportEvent::Up { .. })))
        .then_some(())
    });
    let up_b = take_up(&mut net.eb).unwrap();
    let TransportEvent::Up {
        listener, channel, ..
    } = &up_b
    else {
        unreachable!()
    };
    assert_eq!(*listener, Some(pe_l));
    assert_eq!(*channel, Some(ChannelKind::AsapFromRegistrar));
    let on_b = up_assoc(&up_b);
    assert_eq!(up_assoc(&take_up(&mut net.ea).unwrap()), takeover);
    // Both associations carry data.
    net.a
        .send(takeover, 11, 0, Bytes::from_static(b"keep-alive H"))
        .unwrap();
    net.a
        .send(on_a, 11, 0, Bytes::from_static(b"old registrar"))
        .unwrap();
    net.wait_for("messages", LIMIT, |n| (n.eb.len() >= 2).then_some(()));
    assert_eq!(
        take_message(&mut net.eb, on_b),
        Some((11, 0, Bytes::from_static(b"keep-alive H")))
    );
    assert_eq!(
        take_message(&mut net.eb, reg),
        Some((11, 0, Bytes::from_static(b"old registrar")))
    );
    // Closing the listener ends the sharing: later associations use ephemeral ports.
    assert!(net.b.close_socket(pe_l));
    let other = net
        .b
        .connect(
            &pr1_addr,
            SCTP,
            ChannelKind::AsapToRegistrar,
            Protocol::Asap,
        )
        .unwrap();
    net.wait_for("third association up", LIMIT, |n| take_up(&mut n.ea));
    assert_ne!(net.b.local_addrs(other).unwrap()[0].port(), pe_port);
}

#[test]
fn sctp_registrars_connect_from_their_enrp_port() {
    if !sctp_or_skip("sctp_registrars_connect_from_their_enrp_port") {
        return;
    }
    // Two registrars, each with an ENRP listener that is also the source of its ENRP
    // associations (RSPLIB accepts a Presence only from the port in its Server Information).
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    let la = net
        .a
        .listen_as_source(&[lo(0)], SCTP, ChannelKind::Enrp, ChannelKind::Enrp)
        .unwrap();
    let lb = net
        .b
        .listen_as_source(&[lo(0)], SCTP, ChannelKind::Enrp, ChannelKind::Enrp)
        .unwrap();
    let pa = net.a.socket_local_addrs(la).unwrap()[0];
    let pb = net.b.socket_local_addrs(lb).unwrap()[0];
    // A fixed port held by a shared listener is not silently shared with a second one.
    let err = net
        .b
        .listen_as_source(&[pb], SCTP, ChannelKind::Enrp, ChannelKind::Enrp)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // A's association to B comes from A's ENRP port.
    let ab = net
        .a
        .connect(&[pb], SCTP, ChannelKind::Enrp, Protocol::Enrp)
        .unwrap();
    net.wait_for("both Up", LIMIT, |n| {
        (n.ea.iter().any(|e| matches!(e, TransportEvent::Up { .. }))
            && n.eb.iter().any(|e| matches!(e, TransportEvent::Up { .. })))
        .then_some(())
    });
    assert_eq!(up_assoc(&take_up(&mut net.ea).unwrap()), ab);
    let up_b = take_up(&mut net.eb).unwrap();
    let TransportEvent::Up {
        listener,
        peer_addrs,
        ..
    } = &up_b
    else {
        unreachable!()
    };
    assert_eq!(*listener, Some(lb));
    assert_eq!(peer_addrs, &vec![pa], "from A's ENRP address and port");
    // B connecting back: that pair of endpoints already has its association (on B's
    // accepted socket), so B's leaves from an ephemeral port instead, and works.
    let ba = net
        .b
        .connect(&[pa], SCTP, ChannelKind::Enrp, Protocol::Enrp)
        .unwrap();
    net.wait_for("B's association up", LIMIT, |n| take_up(&mut n.eb));
    net.wait_for("A accepted it", LIMIT, |n| take_up(&mut n.ea));
    assert_ne!(net.b.local_addrs(ba).unwrap()[0].port(), pb.port());
    net.b
        .send(ba, 12, 0, Bytes::from_static(b"presence B"))
        .unwrap();
    net.wait_for("message", LIMIT, |n| {
        n.ea.iter()
            .any(|e| matches!(e, TransportEvent::Message { .. }))
            .then_some(())
    });
}

/// A pool user's sockets acknowledge every packet at once (`SctpOptions::sack_immediately`:
/// `SCTP_DELAYED_SACK` with `sack_freq` 1; RSPLIB defect 1: a dying PE's SHUTDOWN waited for
/// a delayed SACK). The kernel takes the option (a refused option fails the connect).
#[test]
fn sctp_session_sockets_can_disable_delayed_sack() {
    if !sctp_or_skip("sctp_session_sockets_can_disable_delayed_sack") {
        return;
    }
    use rserpool_mio::transport::sctp::socket::{SctpOptions, SctpSocket};
    let opts = SctpOptions::default();
    let l = SctpSocket::listen(&[lo(0)], 8, &opts).expect("listen");
    let port = l.local_addrs().expect("local")[0].port();
    let pu = SctpOptions {
        sack_immediately: true,
        ..SctpOptions::default()
    };
    SctpSocket::connect(&[lo(port)], &pu).expect("connect with SCTP_DELAYED_SACK sack_freq=1");
}

/// A pool user keeps a spare SCTP socket (`SctpOptions::spare_socket`): made some time after a
/// connect (then `poll_timeout` asks for the wake-up), used by the next connect, which works as
/// one on a fresh socket (the association comes up, messages flow both ways).
#[test]
fn sctp_connects_use_the_spare_socket() {
    if !sctp_or_skip("sctp_connects_use_the_spare_socket") {
        return;
    }
    let mut cb = TransportConfig::default();
    cb.sctp.spare_socket = true;
    let mut net = Net::new(TransportConfig::default(), cb);
    let l = net.a.listen(&[lo(0)], SCTP, ChannelKind::Session).unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    let mut on_a = Vec::new();
    for round in 0..3 {
        // None before the first connect, one ready before every later one.
        assert_eq!(net.b.spare_ready(), round > 0, "round {round}");
        let before = Instant::now();
        let on_b = net
            .b
            .connect(&[addr], SCTP, ChannelKind::Session, Protocol::Asap)
            .unwrap();
        assert!(!net.b.spare_ready(), "round {round}: the spare was used");
        // The next spare is due within the spare delay: the transports want a wake-up.
        let due = net.b.poll_timeout().expect("a wake-up for the next spare");
        assert!(due <= before + Duration::from_secs(1), "round {round}");
        let up = net.wait_for("both Up", LIMIT, |n| {
            let a = take_up(&mut n.ea)?;
            Some(up_assoc(&a))
        });
        net.wait_for("B Up", LIMIT, |n| take_up(&mut n.eb));
        net.b.send(on_b, 33, 0, payload(round, 100)).unwrap();
        let (ppid, _, data) = net.wait_for("message on A", LIMIT, |n| take_message(&mut n.ea, up));
        assert_eq!((ppid, data), (33, payload(round, 100)));
        net.a.send(up, 34, 0, payload(round + 10, 50)).unwrap();
        let (ppid, _, data) =
            net.wait_for("message on B", LIMIT, |n| take_message(&mut n.eb, on_b));
        assert_eq!((ppid, data), (34, payload(round + 10, 50)));
        on_a.push(up);
        // Past the spare delay: the spare is made (by handle_timeout) for the next round.
        net.run_for(Duration::from_millis(80));
    }
    assert_eq!(net.a.association_count(), 3);
    assert_eq!(net.b.association_count(), 3);
}

/// Under write batching (every association's messages written at the end of a wake-up with
/// one `sendmmsg`, as the drivers do) every message arrives, in order, on every one of several
/// associations, also after their sockets filled up (a message the kernel refused waits for
/// `WRITABLE`) and while they drain.
#[test]
fn sctp_batched_sends_to_many_associations_arrive_in_order() {
    if !sctp_or_skip("sctp_batched_sends_to_many_associations_arrive_in_order") {
        return;
    }
    const ASSOCS: usize = 4;
    const PER_ASSOC: u32 = 600;
    const LEN: usize = 4000;
    let cb = TransportConfig {
        max_queued_bytes: 128 * 1024,
        ..TransportConfig::default()
    };
    let mut net = Net::new(TransportConfig::default(), cb);
    net.b.set_write_batching(true);
    let l = net.a.listen(&[lo(0)], SCTP, ChannelKind::Session).unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    let on_b: Vec<AssocId> = (0..ASSOCS)
        .map(|_| {
            net.b
                .connect(&[addr], SCTP, ChannelKind::Session, Protocol::Asap)
                .unwrap()
        })
        .collect();
    net.b.flush_pending();
    let mut ups = 0;
    net.wait_for("all Up on B", LIMIT, |n| {
        n.b.flush_pending();
        while take_up(&mut n.eb).is_some() {
            ups += 1;
        }
        (ups == ASSOCS).then_some(())
    });
    let message = |assoc: usize, seq: u32| {
        let mut m = vec![(seq % 251) as u8; LEN];
        m[..4].copy_from_slice(&(assoc as u32).to_be_bytes());
        m[4..8].copy_from_slice(&seq.to_be_bytes());
        Bytes::from(m)
    };
    let mut next_seq = [0u32; ASSOCS];
    // Expected next sequence number per sending association, by what A receives.
    let mut expect = [0u32; ASSOCS];
    let mut received = 0usize;
    let total = ASSOCS * PER_ASSOC as usize;
    // First A reads nothing: the sockets fill up and the queues behind them (the kernel
    // refused a message, or a queue of 128 KiB would not take the next).
    let mut full = [false; ASSOCS];
    let t0 = Instant::now();
    while !full.iter().all(|&f| f) {
        assert!(t0.elapsed() < Duration::from_secs(30), "never full");
        for (i, &assoc) in on_b.iter().enumerate() {
            match net.b.send(assoc, 40, 0, message(i, next_seq[i])) {
                Ok(()) => next_seq[i] += 1,
                Err(SendError::QueueFull { .. }) => full[i] = true,
                Err(e) => panic!("send: {e:?}"),
            }
        }
        net.b.flush_pending();
        assert!(
            next_seq.iter().all(|&n| n < PER_ASSOC),
            "the kernel took everything"
        );
    }
    while received < total {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {received} of {total} arrived"
        );
        // Each round: a few messages on every association, until each refuses (queue full).
        for (i, &assoc) in on_b.iter().enumerate() {
            for _ in 0..8 {
                if next_seq[i] == PER_ASSOC {
                    break;
                }
                match net.b.send(assoc, 40, 0, message(i, next_seq[i])) {
                    Ok(()) => next_seq[i] += 1,
                    Err(SendError::QueueFull { .. }) => break,
                    Err(e) => panic!("send: {e:?}"),
                }
            }
        }
        net.b.flush_pending();
        net.step();
        net.b.flush_pending();
        for e in net.ea.drain(..) {
            if let TransportEvent::Message { ppid, data, .. } = e {
                assert_eq!(ppid, 40);
                assert_eq!(data.len(), LEN);
                let from = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                let seq = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!(seq, expect[from], "association {from}: out of order");
                assert_eq!(data, message(from, seq));
                expect[from] += 1;
                received += 1;
            }
        }
    }
    assert_eq!(expect, [PER_ASSOC; ASSOCS]);
    assert!(on_b.iter().all(|&a| net.b.queued_bytes(a) == Some(0)));
    assert!(
        net.eb
            .iter()
            .all(|e| !matches!(e, TransportEvent::Down { .. }))
    );
    println!("batched sends: {total} messages on {ASSOCS} associations, in order");
}

/// Several associations waiting at a listener are all accepted from one readiness event (an
/// SCTP accept that would find none is not tried: it sleeps until the next timer tick; the
/// listener is asked with a zero-timeout poll instead), and one arriving later is accepted on
/// its own event.
#[test]
fn sctp_listener_accepts_every_waiting_association() {
    if !sctp_or_skip("sctp_listener_accepts_every_waiting_association") {
        return;
    }
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    let l = net.a.listen(&[lo(0)], SCTP, ChannelKind::Session).unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    // Five raw clients set up their associations before A looks at its listener.
    let mut raw = Vec::new();
    for _ in 0..5 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(SockProtocol::SCTP)).unwrap();
        s.connect(&addr.into()).unwrap();
        raw.push(s);
    }
    let mut ups = 0;
    net.wait_for("five Up on A", LIMIT, |n| {
        while take_up(&mut n.ea).is_some() {
            ups += 1;
        }
        (ups == 5).then_some(())
    });
    let late = Socket::new(Domain::IPV4, Type::STREAM, Some(SockProtocol::SCTP)).unwrap();
    late.connect(&addr.into()).unwrap();
    net.wait_for("the sixth Up on A", LIMIT, |n| take_up(&mut n.ea));
    assert_eq!(net.a.association_count(), 6);
    drop(raw);
}

/// Registrars' ENRP associations acknowledge every packet at once, set on the listener and
/// inherited by the associations it accepts (a registrar killed right after its Presence must
/// not wait for its peers' delayed SACK before its kernel's SHUTDOWN tells them); other
/// sockets keep the kernel's delayed SACK.
#[test]
fn sctp_enrp_listeners_acknowledge_at_once_and_their_associations_inherit_it() {
    if !sctp_or_skip("sctp_enrp_listeners_acknowledge_at_once_and_their_associations_inherit_it") {
        return;
    }
    use rserpool_mio::transport::sctp::socket::SctpSocket;
    let config = TransportConfig::default();
    let opts = config.sctp_for(ChannelKind::AsapToRegistrar);
    let plain = SctpSocket::listen(&[lo(0)], 8, &opts).expect("listen");
    assert!(
        plain.sack_freq().expect("sack_freq") != 1,
        "the kernel's default is delayed SACK"
    );
    let l = SctpSocket::listen(&[lo(0)], 8, &config.sctp_for(ChannelKind::Enrp)).expect("listen");
    assert_eq!(l.sack_freq().expect("sack_freq"), 1);
    let port = l.local_addrs().expect("local")[0].port();
    let _client = SctpSocket::connect(&[lo(port)], &opts).expect("connect");
    let t0 = Instant::now();
    let accepted = loop {
        if let Some(a) = l.accept(&opts).expect("accept") {
            break a;
        }
        assert!(t0.elapsed() < LIMIT, "no association to accept");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        accepted.sack_freq().expect("sack_freq"),
        1,
        "inherited from the listener"
    );
}

/// A registrar downloading its mentor's handlespace switches that ENRP association to the
/// kernel's delayed SACK for the download and back afterwards (`Transports::set_delayed_sack`);
/// messages flow either way.
#[test]
fn sctp_an_enrp_association_switches_to_delayed_sack_and_back() {
    if !sctp_or_skip("sctp_an_enrp_association_switches_to_delayed_sack_and_back") {
        return;
    }
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    let lb = net
        .b
        .listen_as_source(&[lo(0)], SCTP, ChannelKind::Enrp, ChannelKind::Enrp)
        .unwrap();
    let pb = net.b.socket_local_addrs(lb).unwrap()[0];
    let ab = net
        .a
        .connect(&[pb], SCTP, ChannelKind::Enrp, Protocol::Enrp)
        .unwrap();
    net.wait_for("A's association up", LIMIT, |n| take_up(&mut n.ea));
    net.wait_for("B accepted it", LIMIT, |n| take_up(&mut n.eb));
    assert_eq!(
        net.a.sack_freq(ab).unwrap(),
        Some(1),
        "ENRP: every packet at once"
    );
    for (delayed, freq) in [(true, 2), (false, 1)] {
        net.a.set_delayed_sack(ab, delayed).unwrap();
        assert_eq!(net.a.sack_freq(ab).unwrap(), Some(freq));
        // Several messages each way still arrive.
        for i in 0..3u8 {
            net.a.send(ab, 12, 0, Bytes::from(vec![i; 3000])).unwrap();
        }
        let mut got = 0;
        net.wait_for("three messages", LIMIT, |n| {
            got +=
                n.eb.drain(..)
                    .filter(|e| matches!(e, TransportEvent::Message { .. }))
                    .count();
            (got == 3).then_some(())
        });
    }
    // An association that is gone is an error, not a panic.
    net.a.close(ab, true);
    assert!(net.a.set_delayed_sack(ab, true).is_err());
}

/// A machine that opens one ENRP association to `to` and reports the bulk transfers queued in
/// `bulk` (the driver asks after every step).
struct BulkMachine {
    out: std::collections::VecDeque<rserpool_core::Output<()>>,
    up: Option<AssocId>,
    bulk: std::collections::VecDeque<rserpool_core::BulkTransfer>,
}

impl rserpool_core::Machine for BulkMachine {
    type Event = ();
    fn handle_assoc_up(&mut self, _: rserpool_core::Instant, assoc: AssocId, _: &[SocketAddr]) {
        if rserpool_core::io::AssocIdAllocator::is_machine_chosen(assoc) {
            self.up = Some(assoc);
        }
    }
    fn handle_assoc_down(
        &mut self,
        _: rserpool_core::Instant,
        _: AssocId,
        _: rserpool_core::AssocDownReason,
    ) {
    }
    fn handle_message(&mut self, _: rserpool_core::Instant, _: AssocId, _: u32, _: Bytes) {}
    fn handle_datagram(&mut self, _: rserpool_core::Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, _: rserpool_core::Instant) {}
    fn poll_output(&mut self) -> Option<rserpool_core::Output<()>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<rserpool_core::Instant> {
        None
    }
    fn poll_bulk_transfer(&mut self) -> Option<rserpool_core::BulkTransfer> {
        self.bulk.pop_front()
    }
}

/// The mio driver applies a machine's bulk transfers (`Machine::poll_bulk_transfer`; the
/// registrar reports its start-up download and the handle table walks it serves) to the SCTP
/// association: every second packet acknowledged while one runs, each at once after it;
/// an id the driver does not know is ignored.
#[test]
fn sctp_the_driver_applies_a_machines_bulk_transfers() {
    use rserpool_core::BulkTransfer;
    use rserpool_mio::driver::{Driver, DriverConfig, ListenerConfig};
    if !sctp_or_skip("sctp_the_driver_applies_a_machines_bulk_transfers") {
        return;
    }
    let config = DriverConfig {
        mode: TransportMode::Sctp,
        listeners: vec![ListenerConfig::new(vec![lo(0)], ChannelKind::Enrp)],
        ..DriverConfig::default()
    };
    let mut d = Driver::new(config, |bound, _| {
        let to = bound.listeners[0].local_addrs[0];
        let assoc = rserpool_core::io::AssocIdAllocator::default().allocate();
        let mut out = std::collections::VecDeque::new();
        out.push_back(rserpool_core::Output::Connect {
            assoc,
            addrs: [to].into_iter().collect(),
            transport: rserpool_proto::transport::TransportProtocol::Sctp,
            channel: rserpool_core::ChannelKind::Enrp,
        });
        BulkMachine {
            out,
            up: None,
            bulk: Default::default(),
        }
    })
    .unwrap();
    let start = Instant::now();
    while d.machine().up.is_none() {
        assert!(start.elapsed() < LIMIT, "the association did not come up");
        d.turn(Some(Duration::from_millis(5))).unwrap();
    }
    let assoc = d.machine().up.unwrap();
    let freq = |d: &Driver<BulkMachine>| {
        let t = d.assocs().transport_id(assoc).expect("transport id");
        d.transports().sack_freq(t).unwrap()
    };
    assert_eq!(freq(&d), Some(1), "ENRP: every packet at once");
    for (running, want) in [(true, 2), (false, 1)] {
        let m = d.machine_mut();
        m.bulk.push_back(BulkTransfer {
            assoc: AssocId(0x7777),
            running,
        });
        m.bulk.push_back(BulkTransfer { assoc, running });
        d.turn(Some(Duration::from_millis(5))).unwrap();
        assert!(d.machine().bulk.is_empty(), "asked until None");
        assert_eq!(freq(&d), Some(want), "running: {running}");
    }
}
