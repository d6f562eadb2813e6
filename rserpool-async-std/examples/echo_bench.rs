//! Echo throughput over RTF/TCP on 127.0.0.1: an echo machine and a client machine, each
//! in its own async driver, the client pipelining N messages; printed as messages/s.
//! Baseline: the same traffic over two `rserpool_mio::transport::Transports` in one mio
//! loop (no machines). Run with `cargo run --release -p rserpool-async-std --example
//! echo_bench [N] [SIZE]`.

use bytes::Bytes;
use rserpool_async_std::{DriverConfig, Listen, run_machine};
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::{
    AssocDownReason, AssocId, ChannelKind, Destination, Instant, Machine, Output, Transmit,
};
use rserpool_proto::rtf;
use rserpool_proto::transport::TransportProtocol;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Default)]
struct Echo {
    out: VecDeque<Output<()>>,
}

impl Machine for Echo {
    type Event = ();
    fn handle_assoc_up(&mut self, _: Instant, _: AssocId, _: &[SocketAddr]) {}
    fn handle_assoc_down(&mut self, _: Instant, _: AssocId, _: AssocDownReason) {}
    fn handle_message(&mut self, _: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(assoc),
            ppid,
            stream: 0,
            payload: data,
        }));
    }
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<()>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Keeps `window` messages in flight until `n` came back, then reports `Done`.
struct Client {
    assoc: AssocId,
    n: usize,
    window: usize,
    sent: usize,
    received: usize,
    msg: Bytes,
    out: VecDeque<Output<()>>,
}

impl Client {
    fn new(server: SocketAddr, n: usize, window: usize, size: usize) -> Client {
        let assoc = AssocIdAllocator::default().allocate();
        let mut out = VecDeque::new();
        out.push_back(Output::Connect {
            assoc,
            addrs: [server].into_iter().collect(),
            transport: TransportProtocol::Tcp,
            channel: ChannelKind::Session,
        });
        Client {
            assoc,
            n,
            window,
            sent: 0,
            received: 0,
            msg: Bytes::from(vec![0x5a; size]),
            out,
        }
    }

    fn fill(&mut self) {
        while self.sent < self.n && self.sent - self.received < self.window {
            self.sent += 1;
            self.out.push_back(Output::Transmit(Transmit {
                dest: Destination::Assoc(self.assoc),
                ppid: 11,
                stream: 0,
                payload: self.msg.clone(),
            }));
        }
    }
}

impl Machine for Client {
    type Event = ();
    fn handle_assoc_up(&mut self, _: Instant, _: AssocId, _: &[SocketAddr]) {
        self.fill();
    }
    fn handle_assoc_down(&mut self, _: Instant, _: AssocId, _: AssocDownReason) {}
    fn handle_message(&mut self, _: Instant, _: AssocId, _: u32, _: Bytes) {
        self.received += 1;
        if self.received == self.n {
            self.out.push_back(Output::Event(()));
        } else {
            self.fill();
        }
    }
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<()>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

fn server_config() -> DriverConfig {
    DriverConfig {
        listen: vec![Listen::tcp(
            "127.0.0.1:0".parse().unwrap(),
            rtf::ChannelKind::Session,
        )],
        ..DriverConfig::default()
    }
}

/// Both drivers on one thread under `futures_lite::future::block_on`.
fn async_one_thread(n: usize, window: usize, size: usize) -> Duration {
    futures_lite::future::block_on(async {
        let (sh, _sev, server) = run_machine(Echo::default(), server_config()).unwrap();
        let addr = sh.listen_addr(0).unwrap();
        let (ch, mut cev, client) =
            run_machine(Client::new(addr, n, window, size), DriverConfig::default()).unwrap();
        let start = std::time::Instant::now();
        let measure = async {
            cev.recv().await.unwrap();
            let t = start.elapsed();
            ch.shutdown().await.unwrap();
            sh.shutdown().await.unwrap();
            t
        };
        let (_, t) =
            futures_lite::future::zip(futures_lite::future::zip(server, client), measure).await;
        t
    })
}

/// Each driver spawned on async-std's (multi-threaded) executor.
fn async_std_spawned(n: usize, window: usize, size: usize) -> Duration {
    async_std::task::block_on(async {
        let (sh, _sev, server) = run_machine(Echo::default(), server_config()).unwrap();
        let addr = sh.listen_addr(0).unwrap();
        let (ch, mut cev, client) =
            run_machine(Client::new(addr, n, window, size), DriverConfig::default()).unwrap();
        let start = std::time::Instant::now();
        let s = async_std::task::spawn(server);
        let c = async_std::task::spawn(client);
        cev.recv().await.unwrap();
        let t = start.elapsed();
        ch.shutdown().await.unwrap();
        sh.shutdown().await.unwrap();
        c.await;
        s.await;
        t
    })
}

/// Baseline: two mio `Transports` in one `mio::Poll`, echo done inline.
fn mio_baseline(n: usize, window: usize, size: usize) -> Duration {
    use rserpool_mio::transport::{TransportConfig, TransportEvent, TransportKind, Transports};
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(256);
    let mut a = Transports::new(poll.registry(), 1..1000, TransportConfig::default()).unwrap();
    let mut b = Transports::new(poll.registry(), 1000..2000, TransportConfig::default()).unwrap();
    let l = a
        .listen(
            &["127.0.0.1:0".parse().unwrap()],
            TransportKind::Tcp,
            rtf::ChannelKind::Session,
        )
        .unwrap();
    let addr = a.socket_local_addrs(l).unwrap()[0];
    let start = std::time::Instant::now();
    let c = b
        .connect(
            &[addr],
            TransportKind::Tcp,
            rtf::ChannelKind::Session,
            rserpool_core::Protocol::Asap,
        )
        .unwrap();
    let msg = Bytes::from(vec![0x5a; size]);
    let (mut sent, mut received) = (0usize, 0usize);
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    let mut up = false;
    while received < n {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        let now = std::time::Instant::now();
        for e in events.iter() {
            if a.owns(e.token()) {
                a.handle_event(e, now, &mut ea);
            } else {
                b.handle_event(e, now, &mut eb);
            }
        }
        for e in ea.drain(..) {
            if let TransportEvent::Message {
                assoc, ppid, data, ..
            } = e
            {
                a.send(assoc, ppid, 0, data).unwrap();
            }
        }
        for e in eb.drain(..) {
            match e {
                TransportEvent::Up { .. } => up = true,
                TransportEvent::Message { .. } => received += 1,
                _ => {}
            }
        }
        while up && sent < n && sent - received < window {
            b.send(c, 11, 0, msg.clone()).unwrap();
            sent += 1;
        }
    }
    start.elapsed()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200_000);
    let size = args.get(1).copied().unwrap_or(100);
    let window = 1000;
    println!("echo over RTF/TCP, 127.0.0.1: {n} messages of {size} bytes, window {window}");
    for (name, f) in [
        (
            "async drivers, one thread (block_on)",
            async_one_thread as fn(usize, usize, usize) -> Duration,
        ),
        ("async drivers, async-std spawn", async_std_spawned),
        ("mio transports baseline (no machines)", mio_baseline),
    ] {
        let t = f(n, window, size);
        let rate = n as f64 / t.as_secs_f64();
        println!(
            "  {name:40} {:>8.1} ms  {:>10.0} round trips/s  {:>7.1} MB/s each way",
            t.as_secs_f64() * 1000.0,
            rate,
            rate * size as f64 / 1e6
        );
    }
}
