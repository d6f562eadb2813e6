//! The generic driver with toy machines over RTF/TCP and UDP on 127.0.0.1, under async-std's
//! executor and `futures_lite::future::block_on`. Every scenario ends within seconds.

mod common;

use async_io::{Async, Timer};
use bytes::Bytes;
use common::*;
use futures_lite::future::zip;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rserpool_async_std::transport::UdpOptions;
use rserpool_async_std::{
    Driver, DriverConfig, Listen, Stopped, TransportConfig, UdpEndpoint, run_machine,
};
use rserpool_core::{AssocDownReason, Destination, Instant, Output, Transmit};
use rserpool_proto::rtf::{ChannelKind, Frame, Hello};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn server_config() -> DriverConfig {
    DriverConfig {
        listen: vec![Listen::tcp(any_port(), ChannelKind::Session)],
        ..DriverConfig::default()
    }
}

/// Echo server and one client sending N messages of varied sizes: all come back in order,
/// the client closes, both machines see the right ups and downs.
async fn echo_roundtrip() {
    const N: usize = 60;
    let (server_h, mut server_ev, server) = run_machine(Echo::default(), server_config()).unwrap();
    let addr = server_h.listen_addr(0).unwrap();
    let (client_h, mut client_ev, client) =
        run_machine(Client::new(addr, N), DriverConfig::default()).unwrap();
    let test = async {
        let (a, peer) = wait_for(&mut client_ev, "client Up", |e| match e {
            Ev::Up(a, p) => Some((*a, p.clone())),
            _ => None,
        })
        .await;
        assert_eq!(peer, vec![addr]);
        wait_for(&mut client_ev, "all echoed", |e| {
            (*e == Ev::AllEchoed(a)).then_some(())
        })
        .await;
        wait_for(&mut client_ev, "client Down(Closed)", |e| {
            (*e == Ev::Down(a, AssocDownReason::Closed)).then_some(())
        })
        .await;
        let s = wait_for(&mut server_ev, "server Up", |e| match e {
            Ev::Up(s, p) => Some((*s, p.clone())),
            _ => None,
        })
        .await;
        assert_eq!(s.1[0].ip(), addr.ip());
        // The client's graceful close reaches the server as a shutdown.
        wait_for(&mut server_ev, "server Down(Shutdown)", |e| {
            (*e == Ev::Down(s.0, AssocDownReason::Shutdown)).then_some(())
        })
        .await;
        let (received, mismatches) = client_h
            .call(|c: &mut Client, _| (c.received, c.mismatches))
            .await
            .unwrap();
        assert_eq!((received, mismatches), (N, 0));
        client_h.shutdown().await.unwrap();
        server_h.shutdown().await.unwrap();
    };
    let ((server, client), ()) = zip(zip(server, client), test).await;
    assert_eq!(server.echoed, N);
    assert!(server.up.is_empty());
    assert!(client.closed);
}
on_both!(echo_roundtrip);

/// Twelve clients at once on one server.
async fn many_clients() {
    const CLIENTS: usize = 12;
    const N: usize = 25;
    let (server_h, _server_ev, server) = run_machine(Echo::default(), server_config()).unwrap();
    let addr = server_h.listen_addr(0).unwrap();
    let mut handles = Vec::new();
    let mut runs = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        let (h, ev, run) = run_machine(Client::new(addr, N), DriverConfig::default()).unwrap();
        handles.push(h);
        runs.push(Box::pin(run));
        streams.push(ev);
    }
    let clients = join_all(runs);
    let test = async {
        for ev in &mut streams {
            wait_for(ev, "client Down(Closed)", |e| {
                matches!(e, Ev::Down(_, AssocDownReason::Closed)).then_some(())
            })
            .await;
        }
        for h in &handles {
            h.shutdown().await.unwrap();
        }
        let echoed = server_h.call(|s: &mut Echo, _| s.echoed).await.unwrap();
        server_h.shutdown().await.unwrap();
        echoed
    };
    let ((server, clients), echoed) = zip(zip(server, clients), test).await;
    assert_eq!(echoed, CLIENTS * N);
    assert_eq!(server.echoed, CLIENTS * N);
    for c in clients {
        assert_eq!((c.received, c.mismatches, c.closed), (N, 0, true));
    }
}
on_both!(many_clients);

/// The server's driver disappears (its future is dropped: sockets close at a frame
/// boundary) → the client machine gets `Down(Shutdown)`; an abort by the server's machine
/// → the client gets `Down(Lost)` and the server `Down(Closed)`.
async fn peer_dropped_and_aborted() {
    // Graceful: the server's future is dropped.
    let (server_h, mut server_ev, server) = run_machine(Echo::default(), server_config()).unwrap();
    let addr = server_h.listen_addr(0).unwrap();
    let (client_h, mut client_ev, client) =
        run_machine(Client::new(addr, 0), DriverConfig::default()).unwrap();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let server = async {
        futures_lite::future::or(
            async {
                server.await;
            },
            async {
                let _ = stop_rx.recv().await;
            },
        )
        .await;
    };
    let test = async {
        let a = wait_for(&mut client_ev, "client Up", |e| match e {
            Ev::Up(a, _) => Some(*a),
            _ => None,
        })
        .await;
        wait_for(&mut server_ev, "server Up", |e| {
            matches!(e, Ev::Up(..)).then_some(())
        })
        .await;
        stop_tx.send(()).await.unwrap();
        wait_for(&mut client_ev, "client Down(Shutdown)", |e| {
            (*e == Ev::Down(a, AssocDownReason::Shutdown)).then_some(())
        })
        .await;
        assert!(server_h.is_stopped());
        assert_eq!(server_h.call(|_: &mut Echo, _| ()).await, Err(Stopped));
        client_h.shutdown().await.unwrap();
    };
    let ((), (), _) = futures_lite::future::zip(server, zip(test, client))
        .await
        .into_flat();

    // Abort by the server's machine.
    let (server_h, mut server_ev, server) = run_machine(Echo::default(), server_config()).unwrap();
    let addr = server_h.listen_addr(0).unwrap();
    let (client_h, mut client_ev, client) =
        run_machine(Client::new(addr, 0), DriverConfig::default()).unwrap();
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
        wait_for(&mut server_ev, "server Down(Closed)", |e| {
            (*e == Ev::Down(s, AssocDownReason::Closed)).then_some(())
        })
        .await;
        wait_for(&mut client_ev, "client Down(Lost)", |e| {
            (*e == Ev::Down(a, AssocDownReason::Lost)).then_some(())
        })
        .await;
        client_h.shutdown().await.unwrap();
        server_h.shutdown().await.unwrap();
    };
    let ((server, _client), ()) = zip(zip(server, client), test).await;
    assert!(server.up.is_empty());
}
on_both!(peer_dropped_and_aborted);

trait IntoFlat<A, B, C> {
    fn into_flat(self) -> (A, B, C);
}
impl<A, B, C> IntoFlat<A, B, C> for (A, (B, C)) {
    fn into_flat(self) -> (A, B, C) {
        (self.0, self.1.0, self.1.1)
    }
}

/// A peer that sends its HELLO (announcing 50 ms heartbeats) and then nothing: the client
/// declares it dead after 3 × 50 ms (RTF timer inside the transports) → `Down(Lost)`.
async fn silent_peer_is_lost() {
    let listener = Async::<TcpListener>::bind(any_port()).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    let (client_h, mut client_ev, client) =
        run_machine(Client::new(addr, 0), DriverConfig::default()).unwrap();
    let peer = async {
        let (mut s, _) = listener.accept().await.unwrap();
        let hello = Frame::Hello(Hello {
            channel_kind: ChannelKind::Session,
            heartbeat_interval_ms: 50,
        });
        s.write_all(&hello.to_bytes()).await.unwrap();
        // Read (and ignore) what the client sends until it gives up on us.
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let test = async {
        let a = wait_for(&mut client_ev, "client Up", |e| match e {
            Ev::Up(a, _) => Some(*a),
            _ => None,
        })
        .await;
        let up_at = std::time::Instant::now();
        wait_for(&mut client_ev, "client Down(Lost)", |e| {
            (*e == Ev::Down(a, AssocDownReason::Lost)).then_some(())
        })
        .await;
        // 3 × 50 ms after the last frame received (the HELLO, before Up was reported).
        assert!(up_at.elapsed() >= Duration::from_millis(100));
        client_h.shutdown().await.unwrap();
    };
    let ((), ((), _)) = zip(peer, zip(test, client)).await;
}
on_both!(silent_peer_is_lost);

/// Refused first address, working second: the TCP mapping tries them in order; a port
/// nobody listens on → `Down(ConnectFailed)`.
async fn connect_failover_and_failure() {
    let dead = {
        let l = TcpListener::bind(any_port()).unwrap();
        l.local_addr().unwrap()
    };
    let (server_h, _sev, server) = run_machine(Echo::default(), server_config()).unwrap();
    let addr = server_h.listen_addr(0).unwrap();
    let (c1, mut ev1, run1) =
        run_machine(Client::to(&[dead, addr], 3), DriverConfig::default()).unwrap();
    let (c2, mut ev2, run2) = run_machine(Client::to(&[dead], 3), DriverConfig::default()).unwrap();
    let test = async {
        let (a, peer) = wait_for(&mut ev1, "Up on the second address", |e| match e {
            Ev::Up(a, p) => Some((*a, p.clone())),
            _ => None,
        })
        .await;
        assert_eq!(peer, vec![addr]);
        wait_for(&mut ev1, "all echoed", |e| {
            (*e == Ev::AllEchoed(a)).then_some(())
        })
        .await;
        let (a2, r) = wait_for(&mut ev2, "Down", |e| match e {
            Ev::Down(a, r) => Some((*a, *r)),
            _ => None,
        })
        .await;
        assert_eq!(r, AssocDownReason::ConnectFailed);
        assert!(rserpool_core::io::AssocIdAllocator::is_machine_chosen(a2));
        c1.shutdown().await.unwrap();
        c2.shutdown().await.unwrap();
        server_h.shutdown().await.unwrap();
    };
    let (((_, m1), _), ()) = zip(zip(zip(server, run1), run2), test).await;
    assert_eq!((m1.received, m1.mismatches), (3, 0));
}
on_both!(connect_failover_and_failure);

/// A machine with a timer: ticks at 40 ms, then every 25 ms, 5 times; each tick is
/// delivered at or after its deadline, in order.
async fn timer_driven_machine() {
    let first = Instant::from_millis(40);
    let period = Duration::from_millis(25);
    let (h, mut ev, run) =
        run_machine(Ticker::new(first, period, 5), DriverConfig::default()).unwrap();
    let test = async {
        let mut ticks = Vec::new();
        while ticks.len() < 5 {
            ticks.push(
                wait_for(&mut ev, "tick", |e| match e {
                    Ev::Tick(t) => Some(*t),
                    _ => None,
                })
                .await,
            );
        }
        for (i, t) in ticks.iter().enumerate() {
            let due = first + period * i as u32;
            assert!(*t >= due, "tick {i} at {t:?} before {due:?}");
        }
        assert!(ticks.windows(2).all(|w| w[0] < w[1]));
        // The driver's clock is the machine's: a call sees a time past the last tick.
        let now = h.call(|_: &mut Ticker, now| now).await.unwrap();
        assert!(now >= ticks[4]);
        assert!(h.clock().now() >= now);
        h.shutdown().await.unwrap();
    };
    let (m, ()) = zip(run, test).await;
    assert_eq!(m.ticks.len(), 5);
    assert_eq!(m.poll_timeout_now(), None);
}
on_both!(timer_driven_machine);

trait PollTimeoutNow {
    fn poll_timeout_now(&self) -> Option<Instant>;
}
impl PollTimeoutNow for Ticker {
    fn poll_timeout_now(&self) -> Option<Instant> {
        rserpool_core::Machine::poll_timeout(self)
    }
}

fn udp_config(ppid: u32) -> DriverConfig {
    DriverConfig {
        udp: vec![UdpEndpoint {
            bind: any_port(),
            ppid,
            options: UdpOptions::default(),
            join: Vec::new(),
        }],
        ..DriverConfig::default()
    }
}

fn datagram(to: SocketAddr, ppid: u32, data: &'static [u8]) -> Output<Ev> {
    Output::Transmit(Transmit {
        dest: Destination::Udp(to),
        ppid,
        stream: 0,
        payload: Bytes::from_static(data),
    })
}

/// UDP datagrams carry the PPID meaning of the receiving socket; a machine without a UDP
/// socket of its own sends from an ephemeral one.
async fn udp_datagrams_with_ppid() {
    let (ha, mut eva, runa) = run_machine(Echo::default(), udp_config(11)).unwrap();
    let (hb, mut evb, runb) = run_machine(Echo::default(), udp_config(12)).unwrap();
    let (hc, _evc, runc) = run_machine(Echo::default(), DriverConfig::default()).unwrap();
    let a = ha.udp_sockets()[0].addr;
    let b = hb.udp_sockets()[0].addr;
    assert_eq!(ha.udp_sockets()[0].ppid, 11);
    let test = async {
        hb.call(move |m: &mut Echo, _| m.out.push_back(datagram(a, 11, b"announce")))
            .await
            .unwrap();
        let got = wait_for(&mut eva, "datagram at A", |e| match e {
            Ev::Datagram(from, ppid, d) => Some((*from, *ppid, d.clone())),
            _ => None,
        })
        .await;
        assert_eq!(got, (b, 11, Bytes::from_static(b"announce")));
        ha.call(move |m: &mut Echo, _| m.out.push_back(datagram(b, 12, b"presence")))
            .await
            .unwrap();
        let got = wait_for(&mut evb, "datagram at B", |e| match e {
            Ev::Datagram(from, ppid, d) => Some((*from, *ppid, d.clone())),
            _ => None,
        })
        .await;
        assert_eq!(got, (a, 12, Bytes::from_static(b"presence")));
        hc.call(move |m: &mut Echo, _| m.out.push_back(datagram(a, 11, b"from C")))
            .await
            .unwrap();
        let (from, ppid, d) = wait_for(&mut eva, "datagram from C", |e| match e {
            Ev::Datagram(from, ppid, d) => Some((*from, *ppid, d.clone())),
            _ => None,
        })
        .await;
        assert_ne!(from, b);
        assert_eq!((ppid, d), (11, Bytes::from_static(b"from C")));
        for h in [&ha, &hb, &hc] {
            h.shutdown().await.unwrap();
        }
    };
    let _ = zip(zip(zip(runa, runb), runc), test).await;
}
on_both!(udp_datagrams_with_ppid);

/// Commands: results come back, `post` runs in order, the context sees the driver, and
/// after shutdown every call fails with `Stopped`.
async fn command_channel_round_trip() {
    let mut driver = Driver::new(Echo::default(), server_config()).unwrap();
    let h = driver.handle();
    let h2 = h.clone();
    let mut events = driver.events().unwrap();
    assert!(driver.events().is_none());
    let run = driver.run();
    let test = async {
        let t1 = h.call(|_: &mut Echo, now| now).await.unwrap();
        for i in 0..10 {
            h2.post(move |m: &mut Echo, _| m.echoed += i).unwrap();
        }
        let (sum, t2) = h.call(|m: &mut Echo, now| (m.echoed, now)).await.unwrap();
        assert_eq!(sum, 45);
        assert!(t2 >= t1);
        let addr = h.listen_addr(0).unwrap();
        let (listeners, queued) = h
            .call_with(|_: &mut Echo, ctx| {
                (
                    ctx.listeners().to_vec(),
                    ctx.queued_bytes(rserpool_core::AssocId(1 << 63 | 5)),
                )
            })
            .await
            .unwrap();
        assert_eq!(listeners[0].addrs, vec![addr]);
        assert_eq!(queued, None);
        // An event emitted by a command reaches the stream.
        h.call(|m: &mut Echo, now| m.out.push_back(Output::Event(Ev::Tick(now))))
            .await
            .unwrap();
        wait_for(&mut events, "event from a command", |e| {
            matches!(e, Ev::Tick(_)).then_some(())
        })
        .await;
        h.shutdown().await.unwrap();
    };
    let (m, ()) = zip(run, test).await;
    assert_eq!(m.echoed, 45);
    assert!(h.is_stopped());
    assert_eq!(h.call(|m: &mut Echo, _| m.echoed).await, Err(Stopped));
    assert_eq!(h.post(|_: &mut Echo, _| ()), Err(Stopped));
    // The stream ends once the driver is gone.
    assert_eq!(events.recv().await, None);
}
on_both!(command_channel_round_trip);

/// Short RTF heartbeats between two drivers keep an idle association up.
async fn idle_association_survives_heartbeats() {
    let fast = TransportConfig {
        rtf_heartbeat_interval: Duration::from_millis(20),
        ..TransportConfig::default()
    };
    let mut sc = server_config();
    sc.transport = fast.clone();
    let (server_h, mut server_ev, server) = run_machine(Echo::default(), sc).unwrap();
    let addr = server_h.listen_addr(0).unwrap();
    let cc = DriverConfig {
        transport: fast,
        ..DriverConfig::default()
    };
    let (client_h, mut client_ev, client) = run_machine(Client::new(addr, 0), cc).unwrap();
    let test = async {
        let a = wait_for(&mut client_ev, "client Up", |e| match e {
            Ev::Up(a, _) => Some(*a),
            _ => None,
        })
        .await;
        // 15 heartbeat intervals of silence from the machines.
        Timer::after(Duration::from_millis(300)).await;
        while let Some(e) = client_ev.try_recv() {
            assert!(!matches!(e, Ev::Down(..)), "no Down while idle: {e:?}");
        }
        let up = server_h.call(|s: &mut Echo, _| s.up.len()).await.unwrap();
        assert_eq!(up, 1);
        client_h
            .call(move |c: &mut Client, _| {
                c.out.push_back(Output::Close {
                    assoc: a,
                    abort: false,
                })
            })
            .await
            .unwrap();
        wait_for(&mut server_ev, "server Down(Shutdown)", |e| {
            matches!(e, Ev::Down(_, AssocDownReason::Shutdown)).then_some(())
        })
        .await;
        client_h.shutdown().await.unwrap();
        server_h.shutdown().await.unwrap();
    };
    let _ = zip(zip(server, client), test).await;
}
on_both!(idle_association_survives_heartbeats);
