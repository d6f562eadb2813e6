//! RTF over TCP on 127.0.0.1 with ephemeral ports. Every test ends by itself within seconds.

mod common;

use bytes::Bytes;
use common::*;
use rserpool_core::{AssocId, Protocol};
use rserpool_mio::transport::{
    DownReason, SendError, TransportConfig, TransportEvent, TransportKind, UdpOptions,
};
use rserpool_proto::rtf::{ChannelKind, Frame, FrameDecoder, Hello};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::time::{Duration, Instant};

const TCP: TransportKind = TransportKind::Tcp;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn cfg_hb(ms: u64) -> TransportConfig {
    TransportConfig {
        rtf_heartbeat_interval: Duration::from_millis(ms),
        ..TransportConfig::default()
    }
}

/// A listens (Session), B connects; returns (net, assoc on A, assoc on B, A's listen address).
fn pair(ca: TransportConfig, cb: TransportConfig) -> (Net, AssocId, AssocId, SocketAddr) {
    let mut net = Net::new(ca, cb);
    let l = net
        .a
        .listen(&[any_port()], TCP, ChannelKind::Session)
        .unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    let on_b = net
        .b
        .connect(&[addr], TCP, ChannelKind::Session, Protocol::Asap)
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
            listener,
            channel,
            kind,
            peer_addrs,
            local_addrs,
            ..
        } => {
            assert_eq!(*listener, Some(l));
            assert_eq!(*channel, Some(ChannelKind::Session));
            assert_eq!(*kind, TCP);
            assert_eq!(local_addrs, &vec![addr]);
            assert_eq!(peer_addrs[0].ip(), addr.ip());
        }
        _ => unreachable!(),
    }
    assert_eq!(up_assoc(&up_b), on_b);
    match &up_b {
        TransportEvent::Up {
            listener,
            peer_addrs,
            ..
        } => {
            assert_eq!(*listener, None);
            assert_eq!(peer_addrs, &vec![addr]);
        }
        _ => unreachable!(),
    }
    (net, up_assoc(&up_a), on_b, addr)
}

#[test]
fn connect_listen_hello_and_data_both_ways() {
    let (mut net, on_a, on_b, addr) = pair(TransportConfig::default(), TransportConfig::default());
    assert_eq!(net.b.peer_addrs(on_b).unwrap(), vec![addr]);
    assert_eq!(net.a.local_addrs(on_a).unwrap(), vec![addr]);
    // SCTP's delayed-SACK switch means nothing here: accepted, nothing to report.
    net.a.set_delayed_sack(on_a, true).unwrap();
    assert_eq!(net.a.sack_freq(on_a).unwrap(), None);
    net.b
        .send(on_b, 11, 0, Bytes::from_static(b"asap control"))
        .unwrap();
    net.b
        .send(on_b, 33, 7, Bytes::from_static(b"ping"))
        .unwrap();
    net.b.send(on_b, 0xdead_beef, 65535, Bytes::new()).unwrap();
    net.a
        .send(on_a, 12, 3, Bytes::from_static(b"answer"))
        .unwrap();
    net.wait_for("3 messages on A, 1 on B", LIMIT, |n| {
        (n.ea.len() >= 3 && !n.eb.is_empty()).then_some(())
    });
    assert_eq!(
        take_message(&mut net.ea, on_a),
        Some((11, 0, Bytes::from_static(b"asap control")))
    );
    assert_eq!(
        take_message(&mut net.ea, on_a),
        Some((33, 7, Bytes::from_static(b"ping")))
    );
    assert_eq!(
        take_message(&mut net.ea, on_a),
        Some((0xdead_beef, 65535, Bytes::new()))
    );
    assert_eq!(
        take_message(&mut net.eb, on_b),
        Some((12, 3, Bytes::from_static(b"answer")))
    );
    assert!(net.ea.is_empty() && net.eb.is_empty());
    assert_eq!(net.a.association_count(), 1);
}

#[test]
fn data_queued_before_up_is_delivered_and_channel_kind_checked() {
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    let l = net
        .a
        .listen(&[any_port()], TCP, ChannelKind::AsapToRegistrar)
        .unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    let good = net
        .b
        .connect(&[addr], TCP, ChannelKind::AsapToRegistrar, Protocol::Asap)
        .unwrap();
    // Queued while connecting: goes out right behind the HELLO.
    net.b
        .send(good, 11, 0, Bytes::from_static(b"early"))
        .unwrap();
    let wrong = net
        .b
        .connect(&[addr], TCP, ChannelKind::Enrp, Protocol::Enrp)
        .unwrap();
    net.wait_for("message and refusal", LIMIT, |n| {
        (n.ea
            .iter()
            .any(|e| matches!(e, TransportEvent::Message { .. }))
            && n.eb
                .iter()
                .any(|e| matches!(e, TransportEvent::Down { .. })))
        .then_some(())
    });
    let on_a = up_assoc(&take_up(&mut net.ea).unwrap());
    assert_eq!(
        take_message(&mut net.ea, on_a),
        Some((11, 0, Bytes::from_static(b"early")))
    );
    // The acceptor serves kind 1 only: the ENRP connector is refused before it is up.
    assert_eq!(
        take_down(&mut net.eb, wrong),
        Some(DownReason::ConnectFailed)
    );
    // Inconsistent channel kind / protocol is refused locally.
    assert!(
        net.b
            .connect(&[addr], TCP, ChannelKind::Enrp, Protocol::Asap)
            .is_err()
    );
}

#[test]
fn large_messages_one_megabyte() {
    let (mut net, on_a, on_b, _) = pair(TransportConfig::default(), TransportConfig::default());
    let big_b = payload(1, 1 << 20);
    let big_a = payload(2, 1 << 20);
    net.b.send(on_b, 33, 1, big_b.clone()).unwrap();
    net.b.send(on_b, 33, 2, payload(3, 100)).unwrap();
    net.a.send(on_a, 12, 0, big_a.clone()).unwrap();
    net.wait_for("large messages", LIMIT, |n| {
        (n.ea.len() >= 2 && !n.eb.is_empty()).then_some(())
    });
    assert_eq!(take_message(&mut net.ea, on_a), Some((33, 1, big_b)));
    assert_eq!(
        take_message(&mut net.ea, on_a),
        Some((33, 2, payload(3, 100)))
    );
    assert_eq!(take_message(&mut net.eb, on_b), Some((12, 0, big_a)));
    // 8 MB in a burst: more than one event's read budget and more than the queue's cap
    // (4 MB) where the socket buffers are small; a full queue is backpressure: the sender
    // waits for room. All of it arrives, in order.
    for i in 0..8u64 {
        let msg = payload(100 + i, 1 << 20);
        net.wait_for("room in the queue", LIMIT, |n| {
            match n.b.send(on_b, 33, 0, msg.clone()) {
                Ok(()) => Some(()),
                Err(SendError::QueueFull { cap, .. }) => {
                    assert_eq!(cap, 4 << 20);
                    None
                }
                Err(e) => panic!("send: {e:?}"),
            }
        });
    }
    net.wait_for("burst", LIMIT, |n| (n.ea.len() >= 8).then_some(()));
    for i in 0..8u64 {
        assert_eq!(
            take_message(&mut net.ea, on_a),
            Some((33, 0, payload(100 + i, 1 << 20)))
        );
    }
    // Above the configured maximum: refused at once, nothing queued.
    let small = TransportConfig {
        max_message_len: 1000,
        ..TransportConfig::default()
    };
    let (mut net, _, on_b, _) = pair(TransportConfig::default(), small);
    assert_eq!(
        net.b.send(on_b, 1, 0, payload(0, 1001)),
        Err(SendError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(net.b.queued_bytes(on_b), Some(0));
    net.step();
}

#[test]
fn heartbeats_keep_an_idle_connection_alive() {
    let (mut net, on_a, on_b, _) = pair(cfg_hb(30), cfg_hb(30));
    // 20 × the interval without user data: heartbeats keep both sides up.
    net.run_for(Duration::from_millis(600));
    assert!(net.ea.is_empty(), "{:?}", summarize(&net.ea));
    assert!(net.eb.is_empty(), "{:?}", summarize(&net.eb));
    net.a
        .send(on_a, 1, 0, Bytes::from_static(b"still here"))
        .unwrap();
    net.wait_for("message", LIMIT, |n| take_message(&mut n.eb, on_b));
}

fn hello(kind: ChannelKind, ms: u32) -> Bytes {
    Frame::Hello(Hello {
        channel_kind: kind,
        heartbeat_interval_ms: ms,
    })
    .to_bytes()
}

/// A raw TCP peer connected to a listener of `net.a` for `kind`, its HELLO (announcing
/// `interval_ms`) sent, and the association's id once A reports it up.
fn raw_peer_up(net: &mut Net, kind: ChannelKind, interval_ms: u32) -> (StdStream, AssocId) {
    let l = net.a.listen(&[any_port()], TCP, kind).unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    let mut raw = StdStream::connect(addr).unwrap();
    raw.write_all(&hello(kind, interval_ms)).unwrap();
    let on_a = up_assoc(&net.wait_for("Up", LIMIT, |n| take_up(&mut n.ea)));
    (raw, on_a)
}

/// Regression (hostile suite, class e): a peer that writes faster than we read was read
/// without bound inside one `handle_timeout` call (an association with more to read re-armed
/// an immediate timer that the same call ran again), so a registrar turn could collect
/// hundreds of thousands of messages (and their answers) before processing any: its memory
/// grew with whatever the peer sent. Now every call reads at most one budget per association.
#[test]
fn a_fast_writer_is_read_in_bounded_slices() {
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    let l = net
        .a
        .listen(&[any_port()], TCP, ChannelKind::Session)
        .unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    let frame = Frame::Data {
        unordered: false,
        stream: 0,
        ppid: 11,
        payload: Bytes::from(vec![0x5a; 500]),
    }
    .to_bytes();
    const TOTAL: usize = 48 << 20;
    let writer = std::thread::spawn(move || {
        let mut raw = StdStream::connect(addr).unwrap();
        raw.write_all(&hello(ChannelKind::Session, 60_000)).unwrap();
        let chunk: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 2048)
            .collect();
        let mut sent = 0;
        while sent < TOTAL {
            if raw.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        // Closing now with our HELLO unread would reset the connection: hand it back.
        raw
    });
    let mut delivered = 0usize;
    let mut largest_slice = 0usize;
    let start = Instant::now();
    while delivered < TOTAL / 512 && start.elapsed() < Duration::from_secs(30) {
        net.step();
        let n = net
            .ea
            .drain(..)
            .filter(|e| matches!(e, TransportEvent::Message { .. }))
            .count();
        delivered += n;
        largest_slice = largest_slice.max(n);
    }
    drop(writer.join().unwrap());
    assert_eq!(delivered, TOTAL / 512, "every message delivered");
    // One readiness event and one timer pass per step, 4 reads of at most 64 KiB each.
    let bound = 2 * 4 * 65_536 / 512 + 1;
    assert!(
        largest_slice <= bound,
        "{largest_slice} messages in one step (bound {bound})"
    );
}

#[test]
fn silent_peer_is_declared_dead_after_three_intervals() {
    let mut net = Net::new(cfg_hb(1000), TransportConfig::default());
    // A raw peer: announces 60 ms, then never sends anything again (not even acks).
    let (mut raw, on_a) = raw_peer_up(&mut net, ChannelKind::Session, 60);
    let t0 = Instant::now();
    let reason = net.wait_for("Down", LIMIT, |n| take_down(&mut n.ea, on_a));
    let took = t0.elapsed();
    assert_eq!(reason, DownReason::Lost);
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    // We aborted: the raw peer sees our HELLO, then RST/EOF.
    raw.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match raw.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let mut frames = Vec::new();
    let _ = FrameDecoder::default().decode_into(&got, &mut frames);
    assert_eq!(
        frames.first(),
        Some(&Frame::Hello(Hello {
            channel_kind: ChannelKind::Session,
            heartbeat_interval_ms: 1000
        }))
    );
    assert!(net.a.send(on_a, 1, 0, Bytes::new()).is_err());
}

#[test]
fn graceful_close_delivers_queued_data_then_shutdown() {
    let (mut net, on_a, on_b, _) = pair(TransportConfig::default(), TransportConfig::default());
    for i in 0..50u64 {
        net.b.send(on_b, 33, 0, payload(i, 20_000)).unwrap();
    }
    assert!(net.b.close(on_b, false));
    assert!(!net.b.close(on_b, false), "the id is released at once");
    assert_eq!(
        net.b.send(on_b, 1, 0, Bytes::new()),
        Err(SendError::UnknownAssoc)
    );
    let reason = net.wait_for("Down on A", LIMIT, |n| take_down(&mut n.ea, on_a));
    assert_eq!(reason, DownReason::Shutdown);
    for i in 0..50u64 {
        assert_eq!(
            take_message(&mut net.ea, on_a),
            Some((33, 0, payload(i, 20_000))),
            "message {i}"
        );
    }
    // The closing side reports nothing for the id it closed; its socket goes away.
    net.run_for(Duration::from_millis(50));
    assert!(net.eb.is_empty(), "{:?}", summarize(&net.eb));
    assert_eq!(net.a.association_count(), 0);
    assert_eq!(net.b.association_count(), 0);
}

/// A graceful close whose peer never finishes its side ends as an abort once the close
/// linger is over; before that the socket stays (half-closed: our FIN is out).
#[test]
fn a_graceful_close_the_peer_never_finishes_is_aborted_after_the_linger() {
    let ca = TransportConfig {
        close_linger: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let mut net = Net::new(ca, TransportConfig::default());
    let (mut raw, on_a) = raw_peer_up(&mut net, ChannelKind::AsapToRegistrar, 5000);
    assert!(net.a.close(on_a, false));
    // Our HELLO, then our FIN: the raw peer reads to the end of our stream.
    raw.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let started = Instant::now();
    loop {
        net.step();
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("before the linger ends: {e}"),
        }
        assert!(started.elapsed() < LIMIT, "no FIN");
    }
    let interval = TransportConfig::default()
        .rtf_heartbeat_interval
        .as_millis() as u32;
    assert_eq!(got, hello(ChannelKind::AsapToRegistrar, interval));
    assert!(
        !net.a.is_quiet(),
        "lingering: the socket waits for the peer's FIN"
    );
    net.wait_for("the linger's abort", LIMIT, |n| {
        n.a.is_quiet().then_some(())
    });
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the linger"
    );
    // The abort reset the connection: the peer's next write fails.
    let reset = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        raw.write_all(b"x").is_err()
    });
    assert!(reset, "the peer saw no reset");
    assert!(net.ea.is_empty(), "{:?}", summarize(&net.ea));
}

#[test]
fn abort_is_seen_as_abort() {
    let (mut net, on_a, on_b, _) = pair(TransportConfig::default(), TransportConfig::default());
    net.b.send(on_b, 33, 0, payload(9, 10)).unwrap();
    net.wait_for("message", LIMIT, |n| take_message(&mut n.ea, on_a));
    assert!(net.b.close(on_b, true));
    let reason = net.wait_for("Down on A", LIMIT, |n| take_down(&mut n.ea, on_a));
    assert_eq!(reason, DownReason::Abort);
    net.run_for(Duration::from_millis(30));
    assert!(net.eb.is_empty());
}

#[test]
fn killed_peers_are_reported_down() {
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    // Incoming: a raw client completes the handshake, then its socket is dropped.
    let (raw, on_a) = raw_peer_up(&mut net, ChannelKind::AsapToRegistrar, 5000);
    let addr = raw.peer_addr().unwrap();
    drop(raw);
    let reason = net.wait_for("Down", LIMIT, |n| take_down(&mut n.ea, on_a));
    assert!(
        matches!(reason, DownReason::Shutdown | DownReason::Abort),
        "{reason:?}"
    );

    // Outgoing: a raw server answers HELLO, then dies with unread data (RST).
    let server = StdListener::bind(any_port()).unwrap();
    let saddr = server.local_addr().unwrap();
    let on_b = net
        .b
        .connect(&[saddr], TCP, ChannelKind::Session, Protocol::Asap)
        .unwrap();
    net.b.send(on_b, 11, 0, payload(5, 100)).unwrap();
    let (mut conn, _) = server.accept().unwrap();
    conn.write_all(&hello(ChannelKind::Session, 5000)).unwrap();
    net.wait_for("Up", LIMIT, |n| take_up(&mut n.eb));
    // Let B's HELLO and message arrive unread, then drop: the kernel sends RST.
    std::thread::sleep(Duration::from_millis(20));
    drop(conn);
    let reason = net.wait_for("Down", LIMIT, |n| take_down(&mut n.eb, on_b));
    assert_eq!(reason, DownReason::Abort);

    // A peer that speaks raw ASAP instead of RTF: protocol error, connection aborted.
    let mut raw = StdStream::connect(addr).unwrap();
    raw.write_all(&[0x0c, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    raw.set_nonblocking(true).unwrap();
    let t0 = Instant::now();
    let mut closed = false;
    let mut buf = [0u8; 64];
    while t0.elapsed() < LIMIT && !closed {
        net.step();
        loop {
            match raw.read(&mut buf) {
                Ok(0) => closed = true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => closed = true,
            }
            break;
        }
    }
    assert!(closed, "protocol violator not disconnected");
    assert!(
        net.ea.is_empty(),
        "never up, so never reported: {:?}",
        summarize(&net.ea)
    );
}

#[test]
fn connect_failure_and_address_fallback() {
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    // A port nobody listens on.
    let dead = StdListener::bind(any_port()).unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let c = net
        .b
        .connect(&[dead_addr], TCP, ChannelKind::Session, Protocol::Asap)
        .unwrap();
    assert_eq!(
        net.wait_for("ConnectFailed", LIMIT, |n| take_down(&mut n.eb, c)),
        DownReason::ConnectFailed
    );
    // First address refused, second one works.
    let l = net
        .a
        .listen(&[any_port()], TCP, ChannelKind::Session)
        .unwrap();
    let addr = net.a.socket_local_addrs(l).unwrap()[0];
    let c = net
        .b
        .connect(
            &[dead_addr, addr],
            TCP,
            ChannelKind::Session,
            Protocol::Asap,
        )
        .unwrap();
    let up = net.wait_for("Up", LIMIT, |n| take_up(&mut n.eb));
    assert_eq!(up_assoc(&up), c);
    match up {
        TransportEvent::Up { peer_addrs, .. } => assert_eq!(peer_addrs, vec![addr]),
        _ => unreachable!(),
    }
}

#[test]
fn backpressure_queues_without_dropping_and_delivers_in_order() {
    let cfg = TransportConfig {
        max_queued_bytes: 1 << 20,
        ..TransportConfig::default()
    };
    let mut net = Net::new(cfg, TransportConfig::default());
    // A raw peer that completes the handshake and then does not read.
    let server = StdListener::bind(any_port()).unwrap();
    let saddr = server.local_addr().unwrap();
    let c = net
        .a
        .connect(&[saddr], TCP, ChannelKind::Session, Protocol::Asap)
        .unwrap();
    let (mut conn, _) = server.accept().unwrap();
    conn.write_all(&hello(ChannelKind::Session, 10_000))
        .unwrap();
    net.wait_for("Up", LIMIT, |n| take_up(&mut n.ea));
    const MSG: usize = 32 * 1024;
    let mut sent = 0u64;
    let mut last_queued = 0usize;
    let refused = loop {
        match net.a.send(c, 33, 0, payload(sent, MSG)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        last_queued = last_queued.max(net.a.queued_bytes(c).unwrap());
        net.step();
        assert!(sent < 20_000, "the kernel buffers never filled up");
    };
    let queued = net.a.queued_bytes(c).unwrap();
    assert!(
        matches!(refused, SendError::QueueFull { cap, .. } if cap == 1 << 20),
        "{refused:?}"
    );
    assert!(queued > (1 << 20) - MSG - 64, "queued {queued}");
    assert!(
        last_queued <= (1 << 20) + 64,
        "the cap held: peak {last_queued}"
    );
    assert!(
        net.ea.is_empty(),
        "nothing reported while the peer does not read"
    );
    // Now the peer reads everything: all messages arrive, in order, none missing.
    conn.set_nonblocking(true).unwrap();
    let mut dec = FrameDecoder::default();
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let t0 = Instant::now();
    let mut data_frames = 0u64;
    while data_frames < sent {
        assert!(t0.elapsed() < LIMIT, "only {data_frames} of {sent} arrived");
        net.step();
        loop {
            match conn.read(&mut buf) {
                Ok(0) => panic!("EOF"),
                Ok(n) => dec.decode_into(&buf[..n], &mut frames).unwrap(),
                Err(_) => break,
            }
        }
        for f in frames.drain(..) {
            if let Frame::Data {
                ppid, payload: p, ..
            } = f
            {
                assert_eq!(ppid, 33);
                assert_eq!(
                    p,
                    payload(data_frames, MSG),
                    "message {data_frames} out of order"
                );
                data_frames += 1;
            }
        }
    }
    assert_eq!(net.a.queued_bytes(c), Some(0));
    assert!(net.ea.is_empty());
    println!("backpressure: {sent} × {MSG} bytes queued/sent, queue peaked at {queued} bytes");
}

#[test]
fn udp_unicast_and_multicast_on_loopback() {
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    let ua = net.a.udp_bind(any_port(), &UdpOptions::default()).unwrap();
    let ub = net.b.udp_bind(any_port(), &UdpOptions::default()).unwrap();
    let addr_b = net.b.socket_local_addrs(ub).unwrap()[0];
    net.a
        .udp_send_to(ua, addr_b, Bytes::from_static(b"announce"))
        .unwrap();
    let got = net.wait_for("datagram", LIMIT, |n| n.eb.pop());
    match got {
        TransportEvent::Datagram { socket, from, data } => {
            assert_eq!(socket, ub);
            assert_eq!(from, net.a.socket_local_addrs(ua).unwrap()[0]);
            assert_eq!(data, Bytes::from_static(b"announce"));
        }
        other => panic!("{other:?}"),
    }
    // Multicast through the loopback interface: two receivers share the port.
    let group: Ipv4Addr = "239.255.77.1".parse().unwrap();
    let rx_opts = UdpOptions {
        reuse_addr: true,
        reuse_port: true,
        ..UdpOptions::default()
    };
    let r1 = net
        .b
        .udp_bind("0.0.0.0:0".parse().unwrap(), &rx_opts)
        .unwrap();
    let port = net.b.socket_local_addrs(r1).unwrap()[0].port();
    let r2 = net
        .b
        .udp_bind(SocketAddr::from(([0, 0, 0, 0], port)), &rx_opts)
        .unwrap();
    let lo = Ipv4Addr::LOCALHOST;
    let joined = net.b.udp_join_multicast(r1, group.into(), lo, 0).is_ok()
        && net.b.udp_join_multicast(r2, group.into(), lo, 0).is_ok();
    let tx = net
        .a
        .udp_bind(
            any_port(),
            &UdpOptions {
                multicast_ttl: Some(1),
                multicast_loop: Some(true),
                multicast_if_v4: Some(lo),
                ..UdpOptions::default()
            },
        )
        .unwrap();
    if !joined {
        println!("note: no multicast on this host's loopback; multicast receive not checked");
        return;
    }
    net.a
        .udp_send_to(
            tx,
            SocketAddr::from((group, port)),
            Bytes::from_static(b"mc"),
        )
        .unwrap();
    net.wait_for("both multicast receivers", LIMIT, |n| {
        let r: Vec<_> =
            n.eb.iter()
                .filter_map(|e| match e {
                    TransportEvent::Datagram { socket, data, .. } if data.as_ref() == b"mc" => {
                        Some(*socket)
                    }
                    _ => None,
                })
                .collect();
        (r.contains(&r1) && r.contains(&r2)).then_some(())
    });
}

/// Under write batching the socket of a closed (or lost) association stays open until
/// `flush_pending`, which writes the wake-up's messages first: a pool user's Handle
/// Resolution leaves before the dead PE's socket costs its close. Then it is closed, with the
/// abort asked for.
#[test]
fn closed_sockets_close_after_the_batched_writes() {
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    net.b.set_write_batching(true);
    let raw = StdListener::bind(any_port()).unwrap();
    let addr = raw.local_addr().unwrap();
    let on_b = net
        .b
        .connect(&[addr], TCP, ChannelKind::Session, Protocol::Asap)
        .unwrap();
    let (mut peer, _) = raw.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    // Our HELLO first (written once the connect completed).
    let mut buf = [0u8; 4096];
    let mut hello = Vec::new();
    let start = Instant::now();
    while hello.len() < 8 && start.elapsed() < LIMIT {
        net.step();
        net.b.flush_pending();
        if let Ok(n) = peer.read(&mut buf) {
            assert!(n > 0, "EOF before the close");
            hello.extend_from_slice(&buf[..n]);
        }
    }
    let mut frames = Vec::new();
    FrameDecoder::new(1 << 16)
        .decode_into(&hello, &mut frames)
        .unwrap();
    assert!(
        matches!(frames.first(), Some(Frame::Hello(_))),
        "{frames:?}"
    );
    assert!(net.b.close(on_b, true));
    assert_eq!(net.b.association_count(), 0);
    // Closed for the user at once, the socket still open: the peer reads nothing yet.
    let e = peer.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "socket closed before flush_pending: {e}"
    );
    net.b.flush_pending();
    // Now closed, as an abort: the peer sees a reset.
    let e = peer.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    net.run_for(Duration::from_millis(20));
    assert!(
        net.eb.is_empty(),
        "nothing reported for a closed id: {:?}",
        net.eb
    );
}
