//! The generic mio driver with toy machines, over the TCP mapping on 127.0.0.1.

use bytes::Bytes;
use rserpool_core::io::{AssocIdAllocator, Destination};
use rserpool_core::{
    AssocDownReason, AssocId, ChannelKind, Instant, Machine, Output, Protocol, Transmit,
};
use rserpool_mio::driver::{
    AppControl, Application, CspConfig, CspReporter, CspStatus, Driver, DriverConfig, Exit,
    ListenerConfig, MulticastJoin, Step, UdpConfig,
};
use rserpool_mio::transport::{TransportConfig, TransportKind, TransportMode, UdpOptions};
use rserpool_proto::csp::{ComponentGroup, ComponentId, CspReport, Location};
use rserpool_proto::rtf;
use rserpool_proto::transport::TransportProtocol;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every wait in these tests ends by itself after this long.
const LIMIT: Duration = Duration::from_secs(8);

// --- a toy machine ------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Up(AssocId, Vec<SocketAddr>),
    Down(AssocId, AssocDownReason),
    Msg(AssocId, u32, Bytes),
    Dgram(SocketAddr, u32, Bytes),
    Fired { deadline: Instant, now: Instant },
    Spurious(Instant),
    Poked,
}

/// Opens one association and sends `n` messages on it once it is up.
#[derive(Debug)]
struct Client {
    assoc: AssocId,
    n: usize,
    size: usize,
    echoed: usize,
    close_when_echoed: bool,
}

#[derive(Debug, Default)]
struct Toy {
    out: VecDeque<Output<Ev>>,
    log: Vec<Ev>,
    echo: bool,
    timers: Vec<Instant>,
    client: Option<Client>,
    ids: AssocIdAllocator,
}

fn payload(i: usize, size: usize) -> Bytes {
    let mut v: Vec<u8> = (0..size).map(|k| (k + i) as u8).collect();
    if size >= 4 {
        v[..4].copy_from_slice(&(i as u32).to_be_bytes());
    }
    Bytes::from(v)
}

impl Toy {
    fn echo() -> Toy {
        Toy {
            echo: true,
            ..Toy::default()
        }
    }

    fn record(&mut self, ev: Ev) {
        self.log.push(ev.clone());
        self.out.push_back(Output::Event(ev));
    }

    /// Opens an association to `to` with a machine-chosen id.
    fn connect(&mut self, to: Vec<SocketAddr>, channel: ChannelKind) -> AssocId {
        let assoc = self.ids.allocate();
        self.out.push_back(Output::Connect {
            assoc,
            addrs: to.into_iter().collect(),
            transport: TransportProtocol::Tcp,
            channel,
        });
        assoc
    }

    fn client(to: SocketAddr, n: usize, size: usize, close_when_echoed: bool) -> Toy {
        let mut t = Toy::default();
        let assoc = t.connect(vec![to], ChannelKind::AsapToRegistrar);
        t.client = Some(Client {
            assoc,
            n,
            size,
            echoed: 0,
            close_when_echoed,
        });
        t
    }

    fn send(&mut self, assoc: AssocId, data: Bytes) {
        self.out.push_back(Output::Transmit(Transmit::assoc(
            assoc,
            Protocol::Asap,
            data,
        )));
    }

    fn ups(&self) -> Vec<AssocId> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Up(a, _) => Some(*a),
                _ => None,
            })
            .collect()
    }

    fn downs(&self) -> Vec<(AssocId, AssocDownReason)> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Down(a, r) => Some((*a, *r)),
                _ => None,
            })
            .collect()
    }

    fn messages(&self) -> Vec<(AssocId, u32, Bytes)> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Msg(a, p, d) => Some((*a, *p, d.clone())),
                _ => None,
            })
            .collect()
    }
}

impl Machine for Toy {
    type Event = Ev;

    fn handle_assoc_up(&mut self, _now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        self.record(Ev::Up(assoc, peer_addrs.to_vec()));
        if let Some(c) = &self.client
            && c.assoc == assoc
        {
            let (n, size) = (c.n, c.size);
            for i in 0..n {
                self.send(assoc, payload(i, size));
            }
        }
    }

    fn handle_assoc_down(&mut self, _now: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.record(Ev::Down(assoc, reason));
    }

    fn handle_message(&mut self, _now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.record(Ev::Msg(assoc, ppid, data.clone()));
        if self.echo {
            self.out.push_back(Output::Transmit(Transmit {
                dest: Destination::Assoc(assoc),
                ppid,
                stream: 0,
                payload: data,
            }));
        }
        if let Some(c) = &mut self.client
            && c.assoc == assoc
        {
            c.echoed += 1;
            if c.echoed == c.n && c.close_when_echoed {
                self.out.push_back(Output::Close {
                    assoc,
                    abort: false,
                });
            }
        }
    }

    fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.record(Ev::Dgram(from, ppid, data));
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Instant> = self.timers.iter().copied().filter(|t| *t <= now).collect();
        if due.is_empty() {
            self.record(Ev::Spurious(now));
        }
        self.timers.retain(|t| *t > now);
        for deadline in due {
            self.record(Ev::Fired { deadline, now });
        }
    }

    fn poll_output(&mut self) -> Option<Output<Ev>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().min().copied()
    }
}

// --- helpers ------------------------------------------------------------------------------

fn tcp_config() -> DriverConfig {
    DriverConfig {
        mode: TransportMode::Tcp,
        ..DriverConfig::default()
    }
}

fn server_config() -> DriverConfig {
    DriverConfig {
        listeners: vec![ListenerConfig::new(
            vec!["127.0.0.1:0".parse().unwrap()],
            rtf::ChannelKinds::all(),
        )],
        ..tcp_config()
    }
}

fn listen_addr<M: Machine>(d: &Driver<M>) -> SocketAddr {
    d.bound().listeners[0].local_addrs[0]
}

/// Turns `a` and `b` alternately until `done` holds; panics after [`LIMIT`].
fn pump(
    a: &mut Driver<Toy>,
    b: &mut Driver<Toy>,
    what: &str,
    mut done: impl FnMut(&Toy, &Toy) -> bool,
) {
    let start = std::time::Instant::now();
    while !done(a.machine(), b.machine()) {
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {what}: a={:?} b={:?}",
            a.machine().log,
            b.machine().log
        );
        a.turn(Some(Duration::from_millis(2))).unwrap();
        b.turn(Some(Duration::from_millis(2))).unwrap();
        a.events_mut().clear();
        b.events_mut().clear();
    }
}

/// Turns one driver until `done` holds; panics after [`LIMIT`].
fn pump_one(d: &mut Driver<Toy>, what: &str, mut done: impl FnMut(&Toy) -> bool) {
    let start = std::time::Instant::now();
    while !done(d.machine()) {
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {what}: {:?}",
            d.machine().log
        );
        d.turn(Some(Duration::from_millis(5))).unwrap();
        d.events_mut().clear();
    }
}

type ServerThread = std::thread::JoinHandle<(Vec<Ev>, rserpool_mio::driver::DriverStats)>;

/// An echo server driver in its own thread; stops when `stop` is set, when its machine has
/// seen `stop_after_downs` association downs (0: never), or after LIMIT, and returns its
/// machine's log.
fn spawn_echo_server(
    config: DriverConfig,
    stop_after_downs: usize,
) -> (SocketAddr, Arc<AtomicBool>, ServerThread) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let stop2 = stop.clone();
    let h = std::thread::spawn(move || {
        let mut d = Driver::new(config, |_, _| Toy::echo()).unwrap();
        tx.send(listen_addr(&d)).unwrap();
        let start = std::time::Instant::now();
        d.run(|step| {
            step.events.clear();
            let downs = step.machine.downs().len();
            if stop2.load(Ordering::SeqCst)
                || (stop_after_downs > 0 && downs >= stop_after_downs)
                || start.elapsed() > LIMIT
            {
                return ControlFlow::Break(());
            }
            *step.wakeup = Some(step.now + Duration::from_millis(10));
            ControlFlow::Continue(())
        })
        .unwrap();
        let stats = d.stats();
        (d.into_machine().log, stats)
    });
    (rx.recv().unwrap(), stop, h)
}

// --- tests --------------------------------------------------------------------------------

#[test]
fn echo_client_and_server_in_two_threads() {
    const N: usize = 300;
    let (addr, _stop, server) = spawn_echo_server(server_config(), 1);
    let mut client = Driver::new(tcp_config(), |_, _| Toy::client(addr, N, 700, true)).unwrap();
    let id = client.machine().client.as_ref().unwrap().assoc;
    let mut events = Vec::new();
    let start = std::time::Instant::now();
    client
        .run(|step| {
            events.append(step.events);
            assert!(start.elapsed() < LIMIT, "timeout: {events:?}");
            if step.machine.downs().is_empty() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })
        .unwrap();
    // The callback saw the same events as the machine logged, in order.
    assert_eq!(events, client.machine().log);
    let c = client.machine();
    assert_eq!(c.ups(), vec![id]);
    assert!(AssocIdAllocator::is_machine_chosen(id));
    let echoes = c.messages();
    assert_eq!(echoes.len(), N);
    for (i, (a, ppid, data)) in echoes.iter().enumerate() {
        assert_eq!((*a, *ppid), (id, Protocol::PPID_ASAP));
        assert_eq!(*data, payload(i, 700), "echo {i}");
    }
    assert_eq!(c.downs(), vec![(id, AssocDownReason::Closed)]);
    assert_eq!(client.stats().messages_sent, N as u64);
    assert_eq!(client.stats().messages_received, N as u64);
    assert!(client.assocs().is_empty());

    // The server saw one association (driver-chosen id), N messages, then the shutdown.
    let (log, stats) = server.join().unwrap();
    let ups: Vec<_> = log
        .iter()
        .filter_map(|e| match e {
            Ev::Up(a, peer) => Some((*a, peer.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ups.len(), 1);
    let (sid, peer) = &ups[0];
    assert!(!AssocIdAllocator::is_machine_chosen(*sid));
    assert_eq!(peer[0].ip(), addr.ip());
    let msgs = log.iter().filter(|e| matches!(e, Ev::Msg(..))).count();
    assert_eq!(msgs, N);
    assert_eq!(stats.messages_sent, N as u64);
    assert!(
        log.contains(&Ev::Down(*sid, AssocDownReason::Shutdown)),
        "{:?}",
        &log[log.len().saturating_sub(3)..]
    );
}

#[test]
fn dropping_the_server_driver_takes_the_association_down() {
    let mut server = Driver::new(server_config(), |_, _| Toy::echo()).unwrap();
    let addr = listen_addr(&server);
    let mut client = Driver::new(tcp_config(), |_, _| Toy::client(addr, 3, 10, false)).unwrap();
    let id = client.machine().client.as_ref().unwrap().assoc;
    pump(&mut client, &mut server, "three echoes", |c, _| {
        c.messages().len() == 3
    });
    assert_eq!(server.assocs().len(), 1);
    let (sid, info) = server.assocs().iter().next().unwrap();
    assert!(info.is_up() && !info.outbound);
    assert_eq!(info.kind, TransportKind::Tcp);
    assert_eq!(info.channel, Some(ChannelKind::AsapToRegistrar));
    assert!(!AssocIdAllocator::is_machine_chosen(sid));
    assert_eq!(client.assocs().get(id).map(|i| i.outbound), Some(true));
    drop(server);
    pump_one(&mut client, "down after the server is gone", |c| {
        !c.downs().is_empty()
    });
    let downs = client.machine().downs();
    assert_eq!(downs.len(), 1);
    assert_eq!(downs[0].0, id);
    assert!(
        matches!(
            downs[0].1,
            AssocDownReason::Shutdown | AssocDownReason::Lost
        ),
        "{downs:?}"
    );
    assert!(client.assocs().is_empty());
}

#[test]
fn connect_failures_are_reported_as_connect_failed() {
    // A port nobody listens on: the failure is asynchronous (RST to the SYN).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut d = Driver::new(tcp_config(), |_, _| Toy::default()).unwrap();
    let a = d
        .machine_mut()
        .connect(vec![dead], ChannelKind::AsapToRegistrar);
    // No address at all: the transport refuses at once; reported after the drain.
    let b = d.machine_mut().connect(vec![], ChannelKind::Enrp);
    pump_one(&mut d, "two connect failures", |m| m.downs().len() == 2);
    let downs = d.machine().downs();
    assert!(downs.contains(&(a, AssocDownReason::ConnectFailed)));
    assert!(downs.contains(&(b, AssocDownReason::ConnectFailed)));
    assert_eq!(d.stats().connect_failures, 1);
    assert!(d.machine().ups().is_empty());
}

#[test]
fn timers_fire_in_order_and_never_early() {
    let mut d = Driver::new(tcp_config(), |_, _| Toy::default()).unwrap();
    let t0 = d.now();
    let offsets = [40u64, 5, 25, 60, 25, 15];
    d.machine_mut().timers = offsets
        .iter()
        .map(|ms| t0 + Duration::from_millis(*ms))
        .collect();
    let wall = std::time::Instant::now();
    pump_one(&mut d, "all timers", |m| m.timers.is_empty());
    let elapsed = wall.elapsed();
    let fired: Vec<(Instant, Instant)> = d
        .machine()
        .log
        .iter()
        .filter_map(|e| match e {
            Ev::Fired { deadline, now } => Some((*deadline, *now)),
            _ => None,
        })
        .collect();
    assert_eq!(fired.len(), offsets.len());
    let mut expected: Vec<Instant> = offsets
        .iter()
        .map(|ms| t0 + Duration::from_millis(*ms))
        .collect();
    expected.sort();
    assert_eq!(
        fired.iter().map(|f| f.0).collect::<Vec<_>>(),
        expected,
        "fired in deadline order"
    );
    for (deadline, now) in &fired {
        assert!(now >= deadline, "fired early: {now:?} < {deadline:?}");
        assert!(*now - *deadline < LIMIT, "fired far too late");
    }
    // handle_timeout is only called once a deadline has passed.
    assert!(!d.machine().log.iter().any(|e| matches!(e, Ev::Spurious(_))));
    // The driver's clock follows the wall clock.
    let last = fired.last().unwrap().1;
    assert!(last.saturating_duration_since(t0) <= elapsed + Duration::from_millis(5));
    assert!(elapsed >= Duration::from_millis(60));
    assert!(d.stats().timeouts >= 1 && d.stats().timeouts <= offsets.len() as u64);
}

#[test]
fn datagrams_reach_handle_datagram_with_the_socket_ppid() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let rx_cfg = DriverConfig {
        udp: vec![
            UdpConfig::receiver(any, Protocol::PPID_ASAP),
            UdpConfig::receiver(any, Protocol::PPID_ENRP),
        ],
        ..tcp_config()
    };
    let mut rx = Driver::new(rx_cfg, |_, _| Toy::default()).unwrap();
    let asap_rx = rx.bound().udp[0].local_addr;
    let enrp_rx = rx.bound().udp[1].local_addr;
    // The sender has one configured sender socket, for ASAP; without an ENRP sender, ENRP
    // datagrams leave through it too.
    let tx_cfg = DriverConfig {
        udp: vec![UdpConfig::sender(any, Protocol::PPID_ASAP)],
        ..tcp_config()
    };
    let mut tx = Driver::new(tx_cfg, |_, _| Toy::default()).unwrap();
    let asap_tx = tx.bound().udp[0].local_addr;
    let m = tx.machine_mut();
    m.out.push_back(Output::Transmit(Transmit::udp(
        asap_rx,
        Protocol::Asap,
        Bytes::from_static(b"announce"),
    )));
    m.out.push_back(Output::Transmit(Transmit::udp(
        enrp_rx,
        Protocol::Enrp,
        Bytes::from_static(b"presence"),
    )));
    pump(&mut rx, &mut tx, "two datagrams", |r, _| {
        r.log.iter().filter(|e| matches!(e, Ev::Dgram(..))).count() == 2
    });
    let got: Vec<_> = rx
        .machine()
        .log
        .iter()
        .filter_map(|e| match e {
            Ev::Dgram(from, ppid, data) => Some((*from, *ppid, data.clone())),
            _ => None,
        })
        .collect();
    let announce = got.iter().find(|g| g.2.as_ref() == b"announce").unwrap();
    assert_eq!(announce.1, Protocol::PPID_ASAP);
    assert_eq!(
        announce.0, asap_tx,
        "announce left through the configured sender"
    );
    let presence = got.iter().find(|g| g.2.as_ref() == b"presence").unwrap();
    assert_eq!(presence.1, Protocol::PPID_ENRP);
    assert_eq!(presence.0, asap_tx);
    assert_eq!(tx.bound().udp.len(), 1);
    assert_eq!(tx.stats().datagrams_sent, 2);
    assert_eq!(rx.stats().datagrams_received, 2);

    // A driver without any UDP socket opens an ephemeral sender on demand, tagged with the
    // message's PPID, so that unicast replies reach handle_datagram.
    let mut bare = Driver::new(tcp_config(), |_, _| Toy::default()).unwrap();
    bare.machine_mut()
        .out
        .push_back(Output::Transmit(Transmit::udp(
            enrp_rx,
            Protocol::Enrp,
            Bytes::from_static(b"hello"),
        )));
    pump(&mut rx, &mut bare, "a third datagram", |r, _| {
        r.log.iter().filter(|e| matches!(e, Ev::Dgram(..))).count() == 3
    });
    assert_eq!(bare.bound().udp.len(), 1);
    let eph = bare.bound().udp[0].clone();
    assert!(eph.send);
    assert_eq!(eph.ppid, Protocol::PPID_ENRP);
    let reply_to = match rx
        .machine()
        .log
        .iter()
        .rev()
        .find(|e| matches!(e, Ev::Dgram(..)))
    {
        Some(Ev::Dgram(from, ppid, data)) => {
            assert_eq!((*ppid, data.as_ref()), (Protocol::PPID_ENRP, &b"hello"[..]));
            *from
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(reply_to.port(), eph.local_addr.port());
    rx.machine_mut()
        .out
        .push_back(Output::Transmit(Transmit::udp(
            reply_to,
            Protocol::Enrp,
            Bytes::from_static(b"reply"),
        )));
    pump(&mut rx, &mut bare, "the reply", |_, b| {
        b.log.iter().any(|e| matches!(e, Ev::Dgram(..)))
    });
    assert!(matches!(
        &bare.machine().log[..],
        [Ev::Dgram(_, Protocol::PPID_ENRP, d)] if d.as_ref() == b"reply"
    ));
}

/// Whether IPv4 multicast through the loopback interface works on this host.
fn loopback_multicast_works(group: Ipv4Addr) -> bool {
    let rx = match UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(_) => return false,
    };
    if rx.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).is_err() {
        return false;
    }
    let port = rx.local_addr().unwrap().port();
    let tx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    if tx.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).is_err() {
        return false;
    }
    let _ = tx.set_multicast_loop_v4(true);
    let to: SocketAddr = (group, port).into();
    if tx.send_to(b"probe", &to.into()).is_err() {
        return false;
    }
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    matches!(rx.recv_from(&mut buf), Ok((5, _)))
}

#[test]
fn multicast_announces_leave_through_the_announce_socket() {
    let group: Ipv4Addr = "239.255.71.3".parse().unwrap();
    if !loopback_multicast_works(group) {
        println!("note: no IPv4 multicast on this host's loopback; multicast test skipped");
        return;
    }
    let rx_cfg = DriverConfig {
        udp: vec![UdpConfig {
            join: vec![MulticastJoin {
                group: group.into(),
                interface_v4: Ipv4Addr::LOCALHOST,
                interface_index_v6: 0,
            }],
            options: UdpOptions {
                reuse_addr: true,
                ..UdpOptions::default()
            },
            ..UdpConfig::receiver("0.0.0.0:0".parse().unwrap(), Protocol::PPID_ASAP)
        }],
        ..tcp_config()
    };
    let mut rx = Driver::new(rx_cfg, |_, _| Toy::default()).unwrap();
    let port = rx.bound().udp[0].local_addr.port();
    let tx_cfg = DriverConfig {
        udp: vec![UdpConfig {
            options: UdpOptions {
                multicast_ttl: Some(1),
                multicast_loop: Some(true),
                multicast_if_v4: Some(Ipv4Addr::LOCALHOST),
                ..UdpOptions::default()
            },
            ..UdpConfig::sender("127.0.0.1:0".parse().unwrap(), Protocol::PPID_ASAP)
        }],
        ..tcp_config()
    };
    let mut tx = Driver::new(tx_cfg, |_, _| Toy::default()).unwrap();
    let announce_socket = tx.bound().udp[0].local_addr;
    tx.machine_mut()
        .out
        .push_back(Output::Transmit(Transmit::udp(
            (group, port).into(),
            Protocol::Asap,
            Bytes::from_static(b"server announce"),
        )));
    pump(&mut rx, &mut tx, "multicast announce", |r, _| {
        r.log.iter().any(|e| matches!(e, Ev::Dgram(..)))
    });
    assert_eq!(
        rx.machine().log.iter().find(|e| matches!(e, Ev::Dgram(..))),
        Some(&Ev::Dgram(
            announce_socket,
            Protocol::PPID_ASAP,
            Bytes::from_static(b"server announce")
        ))
    );
    assert_eq!(tx.bound().udp.len(), 1, "no extra socket was opened");
}

#[test]
fn full_transport_queues_overflow_in_the_driver_and_lose_nothing() {
    const N: usize = 1000;
    const SIZE: usize = 8 * 1024;
    // A raw RTF peer that answers HELLO and then does not read for a while.
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = peer.local_addr().unwrap();
    let small_queue = DriverConfig {
        transport: TransportConfig {
            max_queued_bytes: 32 * 1024,
            ..TransportConfig::default()
        },
        ..tcp_config()
    };
    // The client sends 8 MB in one burst from handle_assoc_up.
    let mut client = Driver::new(small_queue, |_, _| Toy::client(addr, N, SIZE, false)).unwrap();
    let id = client.machine().client.as_ref().unwrap().assoc;
    client.turn(Some(Duration::ZERO)).unwrap();
    let (mut conn, _) = peer.accept().unwrap();
    let hello = rtf::Frame::Hello(rtf::Hello {
        channel_kind: rtf::ChannelKind::AsapToRegistrar,
        heartbeat_interval_ms: 10_000,
    })
    .to_bytes();
    std::io::Write::write_all(&mut conn, &hello).unwrap();
    let start = std::time::Instant::now();
    while client.stats().overflowed == 0 || client.machine().ups().is_empty() {
        assert!(start.elapsed() < LIMIT, "no overflow: {:?}", client.stats());
        client.turn(Some(Duration::from_millis(5))).unwrap();
        client.events_mut().clear();
    }
    let backlog = client.backlog_bytes(id);
    assert!(client.assocs().overflow_bytes(id) > 0);
    assert!(backlog > client.assocs().overflow_bytes(id));
    // Nothing moves while the peer does not read; nothing is dropped either.
    for _ in 0..10 {
        client.turn(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(client.stats().dropped, 0);
    assert!(client.machine().downs().is_empty());
    // Now the peer reads: every message arrives, in order.
    conn.set_nonblocking(true).unwrap();
    let mut dec = rtf::FrameDecoder::default();
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let start = std::time::Instant::now();
    while got < N {
        assert!(start.elapsed() < LIMIT, "only {got} of {N} arrived");
        client.turn(Some(Duration::from_millis(1))).unwrap();
        loop {
            match std::io::Read::read(&mut conn, &mut buf) {
                Ok(0) => panic!("EOF"),
                Ok(n) => dec.decode_into(&buf[..n], &mut frames).unwrap(),
                Err(_) => break,
            }
        }
        for f in frames.drain(..) {
            if let rtf::Frame::Data {
                ppid, payload: p, ..
            } = f
            {
                assert_eq!(ppid, Protocol::PPID_ASAP);
                assert_eq!(p, payload(got, SIZE), "message {got} out of order");
                got += 1;
            }
        }
    }
    let stats = client.stats();
    assert_eq!(stats.messages_sent, N as u64);
    assert_eq!(stats.dropped, 0);
    assert_eq!(client.pending_bytes(), 0);
    assert_eq!(client.assocs().overflow_bytes(id), 0);
    println!(
        "overflow: {} of {N} messages held by the driver, peak {} bytes",
        stats.overflowed, stats.overflow_peak_bytes
    );
}

#[test]
fn overflow_limit_aborts_a_peer_that_never_reads() {
    // A TCP listener that accepts and never reads nor answers the RTF HELLO.
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = sink.local_addr().unwrap();
    let cfg = DriverConfig {
        transport: TransportConfig {
            max_queued_bytes: 64 * 1024,
            ..TransportConfig::default()
        },
        max_overflow_bytes: Some(512 * 1024),
        ..tcp_config()
    };
    let mut d = Driver::new(cfg, |_, _| Toy::default()).unwrap();
    let m = d.machine_mut();
    let id = m.connect(vec![addr], ChannelKind::Session);
    // Messages may be sent before the association is up; they wait in the queues.
    for i in 0..1000 {
        m.send(id, payload(i, 16 * 1024));
    }
    pump_one(&mut d, "abort over the overflow limit", |m| {
        !m.downs().is_empty()
    });
    assert_eq!(d.machine().downs(), vec![(id, AssocDownReason::Lost)]);
    let s = d.stats();
    assert!(s.dropped > 0 && s.overflowed > 0, "{s:?}");
    assert!(s.overflow_peak_bytes > 512 * 1024);
    assert!(d.assocs().is_empty());
    assert_eq!(d.pending_bytes(), 0);
    drop(sink);
}

#[test]
fn application_sources_and_machine_commands_from_the_callback() {
    let mut d = Driver::new(tcp_config(), |_, _| Toy::default()).unwrap();
    let (mut ours, mut theirs) = mio::net::UnixStream::pair().unwrap();
    let token = d.app_token(3).unwrap();
    assert_eq!(d.app_token(16), None);
    d.registry()
        .register(&mut ours, token, mio::Interest::READABLE)
        .unwrap();
    std::io::Write::write_all(&mut theirs, b"line\n").unwrap();
    let mut seen_ready = false;
    let mut poked = false;
    let start = std::time::Instant::now();
    d.run(|step| {
        assert!(start.elapsed() < LIMIT, "timeout");
        if step
            .app_ready
            .iter()
            .any(|r| r.token == token && r.readable)
        {
            let mut buf = [0u8; 16];
            let n = std::io::Read::read(&mut ours, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"line\n");
            seen_ready = true;
            // A command on the machine: its output (an event) is drained after the callback
            // and shows up in the next step.
            step.machine.record(Ev::Poked);
            return ControlFlow::Continue(());
        }
        if step.events.contains(&Ev::Poked) {
            poked = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(seen_ready && poked);
}

/// Shuts a client down on SIGTERM: says goodbye to the echo server and waits for the echo.
struct Goodbye {
    up_at: Option<Instant>,
    raised: bool,
    bye_sent: bool,
}

impl Application<Toy> for Goodbye {
    fn on_step(&mut self, step: &mut Step<'_, Toy>) -> AppControl {
        step.events.clear();
        if self.up_at.is_none() && !step.machine.ups().is_empty() {
            self.up_at = Some(step.now);
            // Long enough for CSP reports listing the association.
            *step.wakeup = Some(step.now + Duration::from_millis(150));
        }
        if !self.raised
            && self
                .up_at
                .is_some_and(|t| step.now >= t + Duration::from_millis(150))
        {
            self.raised = true;
            signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
        }
        AppControl::Continue
    }

    fn begin_shutdown(&mut self, machine: &mut Toy, _now: Instant) {
        let id = machine.ups()[0];
        machine.send(id, Bytes::from_static(b"bye"));
        self.bye_sent = true;
    }

    fn shutdown_done(&mut self, machine: &Toy) -> bool {
        machine.messages().iter().any(|m| m.2.as_ref() == b"bye")
    }
}

#[test]
fn termination_signal_runs_the_graceful_shutdown_and_final_csp_report() {
    let (addr, stop, server) = spawn_echo_server(server_config(), 0);
    let monitor = UdpSocket::bind("127.0.0.1:0").unwrap();
    monitor
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let cfg = DriverConfig {
        signals: true,
        shutdown_grace: Duration::from_secs(5),
        ..tcp_config()
    };
    let mut d = Driver::new(cfg, |_, _| Toy::client(addr, 1, 8, false)).unwrap();
    let component = ComponentId::new(ComponentGroup::PoolUser, 0xabcdef);
    d.enable_csp(
        CspReporter::new(CspConfig {
            server: monitor.local_addr().unwrap(),
            interval: Duration::from_millis(50),
            component,
            location: Location::from("test: 127.0.0.1"),
        })
        .unwrap(),
        move |m: &Toy, assocs, now| {
            let mut s = CspStatus::text(&format!("{} Session", m.ups().len()));
            s.associations = assocs
                .iter()
                .map(|(_, info)| {
                    // The PPID of the association's protocol, as RSPLIB reports it for
                    // registrar associations.
                    let ppid = match info.channel {
                        Some(rserpool_core::ChannelKind::Enrp) => Protocol::PPID_ENRP,
                        _ => Protocol::PPID_ASAP,
                    };
                    info.csp_entry(ComponentId::new(ComponentGroup::Registrar, 0), ppid, now)
                })
                .collect();
            s
        },
    );
    let mut app = Goodbye {
        up_at: None,
        raised: false,
        bye_sent: false,
    };
    let start = std::time::Instant::now();
    let exit = d.run_app(&mut app).unwrap();
    assert!(start.elapsed() < LIMIT);
    assert_eq!(exit, Exit::Completed);
    assert!(app.bye_sent);
    assert!(
        d.machine()
            .messages()
            .iter()
            .any(|m| m.2.as_ref() == b"bye")
    );
    stop.store(true, Ordering::SeqCst);
    let (log, _) = server.join().unwrap();
    assert!(
        log.iter()
            .any(|e| matches!(e, Ev::Msg(_, _, b) if b.as_ref() == b"bye"))
    );

    // CSP: periodic reports (the first at once), then the final one.
    let mut reports = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = monitor.recv(&mut buf) {
        let r = CspReport::decode(&buf[..n]).unwrap();
        let last = r.is_final();
        reports.push(r);
        if last {
            break;
        }
    }
    assert!(reports.len() >= 2, "{reports:?}");
    let final_report = reports.last().unwrap();
    assert!(final_report.is_final());
    assert!(reports[..reports.len() - 1].iter().all(|r| !r.is_final()));
    assert!(reports.iter().all(|r| r.sender_id == component));
    assert_eq!(reports[0].sender_timestamp_us, 0);
    assert_eq!(reports[0].report_interval_us, 50_000);
    assert!(
        reports
            .windows(2)
            .all(|w| w[0].sender_timestamp_us <= w[1].sender_timestamp_us)
    );
    assert_eq!(reports[0].location.to_string_lossy(), "test: 127.0.0.1");
    // Once the association is up, the reports list it (TCP, time since up, the PPID the
    // status function gave).
    let r = reports
        .iter()
        .find(|r| r.status.to_string_lossy() == "1 Session")
        .expect("a report while the association was up");
    assert_eq!(r.associations.len(), 1);
    assert_eq!(r.associations[0].ppid, Protocol::PPID_ASAP);
    assert!(r.associations[0].duration().is_some());
    assert_eq!(
        r.associations[0].protocol,
        rserpool_proto::csp::CspProtocol::Tcp
    );
}

/// Never finishes its shutdown.
struct Stubborn;

impl Application<Toy> for Stubborn {
    fn on_step(&mut self, step: &mut Step<'_, Toy>) -> AppControl {
        step.events.clear();
        AppControl::Shutdown
    }

    fn shutdown_done(&mut self, _machine: &Toy) -> bool {
        false
    }
}

struct Quitter(u32);

impl Application<Toy> for Quitter {
    fn on_step(&mut self, step: &mut Step<'_, Toy>) -> AppControl {
        step.events.clear();
        self.0 += 1;
        *step.wakeup = Some(step.now + Duration::from_millis(1));
        if self.0 == 3 {
            AppControl::Exit
        } else {
            AppControl::Continue
        }
    }
}

#[test]
fn shutdown_grace_period_and_exit() {
    let cfg = DriverConfig {
        shutdown_grace: Duration::from_millis(150),
        ..tcp_config()
    };
    let mut d = Driver::new(cfg.clone(), |_, _| Toy::default()).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(d.run_app(&mut Stubborn).unwrap(), Exit::GraceExpired);
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert!(t.elapsed() < LIMIT);
    let mut d = Driver::new(cfg, |_, _| Toy::default()).unwrap();
    let mut q = Quitter(0);
    assert_eq!(d.run_app(&mut q).unwrap(), Exit::Stopped);
    assert_eq!(q.0, 3);
}

#[test]
fn machine_chosen_ids_survive_and_unknown_ids_are_dropped() {
    let mut server = Driver::new(server_config(), |_, _| Toy::echo()).unwrap();
    let addr = listen_addr(&server);
    let mut client = Driver::new(tcp_config(), |_, _| Toy::default()).unwrap();
    let m = client.machine_mut();
    let a = m.connect(vec![addr], ChannelKind::Session);
    let b = m.connect(vec![addr], ChannelKind::Session);
    // Transmit and close for an id nobody opened: dropped / ignored.
    let ghost = AssocId(AssocIdAllocator::MACHINE_BIT | 999);
    m.send(ghost, Bytes::from_static(b"x"));
    m.out.push_back(Output::Close {
        assoc: ghost,
        abort: true,
    });
    pump(&mut client, &mut server, "two ups", |c, _| {
        c.ups().len() == 2
    });
    client.machine_mut().send(b, Bytes::from_static(b"to b"));
    client.machine_mut().send(a, Bytes::from_static(b"to a"));
    pump(&mut client, &mut server, "two echoes", |c, _| {
        c.messages().len() == 2
    });
    let msgs = client.machine().messages();
    assert!(msgs.contains(&(a, Protocol::PPID_ASAP, Bytes::from_static(b"to a"))));
    assert!(msgs.contains(&(b, Protocol::PPID_ASAP, Bytes::from_static(b"to b"))));
    assert_eq!(client.stats().dropped, 1);
    // Abort one: Down(Closed) locally, Down(Lost) at the server.
    client.machine_mut().out.push_back(Output::Close {
        assoc: a,
        abort: true,
    });
    pump(&mut client, &mut server, "downs", |c, s| {
        !c.downs().is_empty() && !s.downs().is_empty()
    });
    assert_eq!(client.machine().downs(), vec![(a, AssocDownReason::Closed)]);
    assert_eq!(server.machine().downs().len(), 1);
    assert_eq!(server.machine().downs()[0].1, AssocDownReason::Lost);
    assert_eq!(client.assocs().len(), 1);
    assert!(client.assocs().get(b).is_some());
}

#[test]
fn accepted_associations_are_routed_with_their_channel_kind() {
    // A PE-like listener taking sessions (kind 4) and registrar channels (kind 2) on one
    // port; the router sees which is which.
    let mut server = Driver::new(server_config(), |_, _| Toy::echo()).unwrap();
    type Routed = Vec<(AssocId, Option<ChannelKind>)>;
    let routed: Arc<std::sync::Mutex<Routed>> = Arc::default();
    let r2 = Arc::clone(&routed);
    server.route_accepted(move |m: &mut Toy, now, id, info, peer_addrs| {
        r2.lock().unwrap().push((id, info.channel));
        if info.channel == Some(ChannelKind::Session) {
            m.handle_assoc_up(now, id, peer_addrs);
        }
    });
    let to = listen_addr(&server);
    let mut client = Driver::new(tcp_config(), |_, _| Toy::default()).unwrap();
    let a = client
        .machine_mut()
        .connect(vec![to], ChannelKind::AsapToPoolElement);
    let b = client.machine_mut().connect(vec![to], ChannelKind::Session);
    pump(
        &mut client,
        &mut server,
        "both connections routed",
        |c, _| c.ups().len() == 2 && routed.lock().unwrap().len() == 2,
    );
    assert_eq!(client.machine().ups(), vec![a, b]);
    let got = routed.lock().unwrap().clone();
    let kinds: Vec<Option<ChannelKind>> = got.iter().map(|(_, k)| *k).collect();
    assert_eq!(
        kinds,
        vec![
            Some(ChannelKind::AsapToPoolElement),
            Some(ChannelKind::Session)
        ]
    );
    // Only the session reached the machine's handle_assoc_up, with the driver's id.
    assert_eq!(server.machine().ups(), vec![got[1].0]);
    assert!(!AssocIdAllocator::is_machine_chosen(got[0].0));
    // Messages on a routed association reach the machine under the same id.
    client.machine_mut().send(a, Bytes::from_static(b"hello"));
    pump(
        &mut client,
        &mut server,
        "message on the kind-2 channel",
        |_, s| !s.messages().is_empty(),
    );
    assert_eq!(server.machine().messages()[0].0, got[0].0);
}

#[test]
fn a_wakeup_that_has_passed_runs_the_callback_again_without_waiting() {
    // An application that asks to be called again "now" (e.g. to produce more data) must be
    // called again before anything else happens; a safety timer ends the test otherwise.
    let mut d = Driver::new(tcp_config(), |_, _| {
        let mut t = Toy::default();
        t.timers.push(Instant::ZERO + Duration::from_secs(5));
        t
    })
    .unwrap();
    let mut calls = 0u32;
    let ok = d
        .run(|step| {
            calls += 1;
            if calls >= 50 {
                return ControlFlow::Break(true);
            }
            if step
                .machine
                .log
                .iter()
                .any(|e| matches!(e, Ev::Fired { .. }))
            {
                return ControlFlow::Break(false);
            }
            *step.wakeup = Some(step.now);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(
        ok,
        "the callback waited for the safety timer ({calls} calls)"
    );
}
