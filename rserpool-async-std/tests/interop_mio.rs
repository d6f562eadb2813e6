//! The async driver and a bare mio transport layer (`rserpool_mio::transport::Transports` in
//! a plain mio loop) work together: an async echo machine serves a mio client, and an async
//! client machine uses a mio echo server. The mio side runs in its own thread; both
//! executors are used.

mod common;

use common::*;
use futures_lite::future::zip;
use mio::{Events, Poll};
use rserpool_async_std::{DriverConfig, Listen, run_machine};
use rserpool_core::{AssocDownReason, AssocId, Protocol};
use rserpool_mio::transport::{
    DownReason, TransportConfig, TransportEvent, TransportKind, Transports,
};
use rserpool_proto::rtf::ChannelKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const N: usize = 40;

/// A mio event loop with one `Transports`.
struct MioSide {
    poll: Poll,
    events: Events,
    t: Transports,
    ev: Vec<TransportEvent>,
    deadline: Instant,
}

impl MioSide {
    fn new() -> MioSide {
        let poll = Poll::new().unwrap();
        let t = Transports::new(poll.registry(), 1..10_000, TransportConfig::default()).unwrap();
        MioSide {
            poll,
            events: Events::with_capacity(64),
            t,
            ev: Vec::new(),
            deadline: Instant::now() + LIMIT,
        }
    }

    /// The next transport event, failing after the deadline.
    fn next(&mut self) -> TransportEvent {
        loop {
            if !self.ev.is_empty() {
                return self.ev.remove(0);
            }
            let now = Instant::now();
            assert!(now < self.deadline, "mio side timed out");
            let mut wait = Duration::from_millis(10);
            if let Some(t) = self.t.poll_timeout() {
                wait = wait.min(t.saturating_duration_since(now));
            }
            self.poll.poll(&mut self.events, Some(wait)).unwrap();
            let now = Instant::now();
            for e in self.events.iter() {
                self.t.handle_event(e, now, &mut self.ev);
            }
            self.t.handle_timeout(now, &mut self.ev);
        }
    }
}

/// mio client: connects, sends N messages, checks the echoes, closes. Returns the number
/// of echoes received and how many differed.
fn mio_client(addr: SocketAddr) -> (usize, usize) {
    let mut m = MioSide::new();
    let assoc =
        m.t.connect(
            &[addr],
            TransportKind::Tcp,
            ChannelKind::Session,
            Protocol::Asap,
        )
        .unwrap();
    match m.next() {
        TransportEvent::Up {
            assoc: a,
            channel,
            peer_addrs,
            ..
        } => {
            assert_eq!(a, assoc);
            assert_eq!(channel, Some(ChannelKind::Session));
            assert_eq!(peer_addrs, vec![addr]);
        }
        other => panic!("expected Up, got {other:?}"),
    }
    for i in 0..N {
        m.t.send(assoc, PPID_ASAP, 0, payload(i)).unwrap();
    }
    let (mut received, mut bad) = (0, 0);
    while received < N {
        match m.next() {
            TransportEvent::Message {
                assoc: a,
                ppid,
                data,
                ..
            } => {
                if a != assoc || ppid != PPID_ASAP || data != payload(received) {
                    bad += 1;
                }
                received += 1;
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    assert!(m.t.close(assoc, false));
    // Let the FIN go out and the peer's come back.
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        m.poll
            .poll(&mut m.events, Some(Duration::from_millis(10)))
            .unwrap();
        let now = Instant::now();
        for e in m.events.iter() {
            m.t.handle_event(e, now, &mut m.ev);
        }
    }
    (received, bad)
}

/// mio echo server on an ephemeral port: echoes until its one association goes down.
/// Returns the number echoed and the down reason.
fn mio_echo_server(
    ready: std::sync::mpsc::Sender<SocketAddr>,
) -> (usize, DownReason, Option<ChannelKind>) {
    let mut m = MioSide::new();
    let l =
        m.t.listen(
            &["127.0.0.1:0".parse().unwrap()],
            TransportKind::Tcp,
            ChannelKind::Session,
        )
        .unwrap();
    ready.send(m.t.socket_local_addrs(l).unwrap()[0]).unwrap();
    let mut echoed = 0;
    let mut channel = None;
    loop {
        match m.next() {
            TransportEvent::Up { channel: c, .. } => channel = c,
            TransportEvent::Message {
                assoc,
                ppid,
                stream,
                data,
            } => {
                m.t.send(assoc, ppid, stream, data).unwrap();
                echoed += 1;
            }
            TransportEvent::Down { reason, .. } => return (echoed, reason, channel),
            TransportEvent::Datagram { .. } => {}
        }
    }
}

/// Async echo machine, mio client.
async fn async_server_mio_client() {
    let config = DriverConfig {
        listen: vec![Listen::tcp(
            "127.0.0.1:0".parse().unwrap(),
            ChannelKind::Session,
        )],
        ..DriverConfig::default()
    };
    let (h, mut ev, run) = run_machine(Echo::default(), config).unwrap();
    let addr = h.listen_addr(0).unwrap();
    let (done_tx, done_rx) = async_channel::bounded(1);
    let thread = std::thread::spawn(move || {
        let r = mio_client(addr);
        done_tx.send_blocking(r).unwrap();
    });
    let test = async {
        let s: AssocId = wait_for(&mut ev, "Up from the mio client", |e| match e {
            Ev::Up(a, _) => Some(*a),
            _ => None,
        })
        .await;
        wait_for(&mut ev, "Down(Shutdown) from the mio client", |e| {
            (*e == Ev::Down(s, AssocDownReason::Shutdown)).then_some(())
        })
        .await;
        let (received, bad) = done_rx.recv().await.unwrap();
        assert_eq!((received, bad), (N, 0));
        h.shutdown().await.unwrap();
    };
    let (m, ()) = zip(run, test).await;
    thread.join().unwrap();
    assert_eq!(m.echoed, N);
}
on_both!(async_server_mio_client);

/// mio echo server, async client machine.
async fn mio_server_async_client() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = async_channel::bounded(1);
    let thread = std::thread::spawn(move || {
        let r = mio_echo_server(ready_tx);
        done_tx.send_blocking(r).unwrap();
    });
    let addr = ready_rx.recv_timeout(LIMIT).unwrap();
    let (h, mut ev, run) = run_machine(Client::new(addr, N), DriverConfig::default()).unwrap();
    let test = async {
        let a = wait_for(&mut ev, "all echoed", |e| match e {
            Ev::AllEchoed(a) => Some(*a),
            _ => None,
        })
        .await;
        wait_for(&mut ev, "Down(Closed)", |e| {
            (*e == Ev::Down(a, AssocDownReason::Closed)).then_some(())
        })
        .await;
        let (echoed, reason, channel) = done_rx.recv().await.unwrap();
        assert_eq!(echoed, N);
        assert_eq!(reason, DownReason::Shutdown);
        assert_eq!(channel, Some(ChannelKind::Session));
        h.shutdown().await.unwrap();
    };
    let (c, ()) = zip(run, test).await;
    thread.join().unwrap();
    assert_eq!((c.received, c.mismatches, c.closed), (N, 0, true));
}
on_both!(mio_server_async_client);
