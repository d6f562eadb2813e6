//! Toy machines and helpers for the driver tests. Every scenario runs under async-std's
//! executor and under `futures_lite::future::block_on`, bounded in time.
#![allow(dead_code)]

use async_io::Timer;
use bytes::Bytes;
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::{
    AssocDownReason, AssocId, BulkTransfer, ChannelKind, Destination, Instant, Machine, Output,
    Transmit,
};
use rserpool_proto::transport::TransportProtocol;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Every scenario must end within this.
pub const LIMIT: Duration = Duration::from_secs(10);
/// ASAP's PPID.
pub const PPID_ASAP: u32 = 11;

/// Runs `f` with a deadline under async-std's executor.
pub fn on_async_std<F: Future<Output = ()>>(f: F) {
    async_std::task::block_on(bounded(f));
}

/// Runs `f` with a deadline under `futures_lite::future::block_on`.
pub fn on_block_on<F: Future<Output = ()>>(f: F) {
    futures_lite::future::block_on(bounded(f));
}

async fn bounded<F: Future<Output = ()>>(f: F) {
    futures_lite::future::or(f, async {
        Timer::after(LIMIT).await;
        panic!("scenario did not finish within {LIMIT:?}");
    })
    .await
}

/// Defines `<name>_async_std` and `<name>_block_on` tests running `async fn name()`.
#[macro_export]
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn async_std() {
                $crate::common::on_async_std(super::$name());
            }
            #[test]
            fn block_on() {
                $crate::common::on_block_on(super::$name());
            }
        }
    };
}

/// What the toy machines report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Up(AssocId, Vec<SocketAddr>),
    Down(AssocId, AssocDownReason),
    Message(AssocId, u32, Bytes),
    Datagram(SocketAddr, u32, Bytes),
    Tick(Instant),
    /// Client: every message came back in order.
    AllEchoed(AssocId),
}

/// Echoes every message on the association it came from; reports ups and downs.
#[derive(Default)]
pub struct Echo {
    pub out: VecDeque<Output<Ev>>,
    pub echoed: usize,
    pub up: Vec<AssocId>,
}

impl Machine for Echo {
    type Event = Ev;
    fn handle_assoc_up(&mut self, _: Instant, assoc: AssocId, peer: &[SocketAddr]) {
        self.up.push(assoc);
        self.out
            .push_back(Output::Event(Ev::Up(assoc, peer.to_vec())));
    }
    fn handle_assoc_down(&mut self, _: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.up.retain(|a| *a != assoc);
        self.out.push_back(Output::Event(Ev::Down(assoc, reason)));
    }
    fn handle_message(&mut self, _: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.echoed += 1;
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(assoc),
            ppid,
            stream: 0,
            payload: data,
        }));
    }
    fn handle_datagram(&mut self, _: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.out
            .push_back(Output::Event(Ev::Datagram(from, ppid, data)));
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<Ev>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// The payload of message `i` of a client: varied sizes (up to ~70 KB, over RTF's 64 KiB
/// mandatory size) so that frames span many reads and writes.
pub fn payload(i: usize) -> Bytes {
    let len = match i % 7 {
        0 => 0,
        1 => 1,
        2 => 100,
        3 => 1500,
        4 => 4097,
        5 => 20_000,
        _ => 70_000,
    };
    Bytes::from(
        (0..len)
            .map(|k| (i.wrapping_mul(31) ^ k) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// [`payload`] without the empty message (SCTP cannot carry one).
pub fn payload_nonempty(i: usize) -> Bytes {
    let p = payload(i);
    if p.is_empty() {
        Bytes::from_static(b"not empty")
    } else {
        p
    }
}

/// Connects to `server`, sends `n` ASAP-PPID messages as fast as it can once up, checks
/// that each comes back in order, then closes gracefully.
pub struct Client {
    pub server: SocketAddr,
    pub transport: TransportProtocol,
    pub channel: ChannelKind,
    pub n: usize,
    pub assoc: AssocId,
    pub received: usize,
    pub mismatches: usize,
    pub closed: bool,
    pub out: VecDeque<Output<Ev>>,
    /// Message `i` (default [`payload`]).
    pub payload: fn(usize) -> Bytes,
    /// Bulk transfer changes to report to the driver.
    pub bulk: VecDeque<BulkTransfer>,
}

impl Client {
    pub fn new(server: SocketAddr, n: usize) -> Client {
        Client::to(&[server], n)
    }

    /// A client trying `addrs` in order.
    pub fn to(addrs: &[SocketAddr], n: usize) -> Client {
        Client::over(addrs, n, TransportProtocol::Tcp)
    }

    /// A client of a peer at `addrs` that advertises `transport`.
    pub fn over(addrs: &[SocketAddr], n: usize, transport: TransportProtocol) -> Client {
        let mut ids = AssocIdAllocator::default();
        let assoc = ids.allocate();
        let mut out = VecDeque::new();
        out.push_back(Output::Connect {
            assoc,
            addrs: addrs.iter().copied().collect(),
            transport,
            channel: ChannelKind::Session,
        });
        Client {
            server: addrs[0],
            transport,
            channel: ChannelKind::Session,
            n,
            assoc,
            received: 0,
            mismatches: 0,
            closed: false,
            out,
            payload,
            bulk: VecDeque::new(),
        }
    }
}

impl Machine for Client {
    type Event = Ev;
    fn handle_assoc_up(&mut self, _: Instant, assoc: AssocId, peer: &[SocketAddr]) {
        self.out
            .push_back(Output::Event(Ev::Up(assoc, peer.to_vec())));
        if assoc != self.assoc {
            return;
        }
        for i in 0..self.n {
            self.out.push_back(Output::Transmit(Transmit {
                dest: Destination::Assoc(assoc),
                ppid: PPID_ASAP,
                stream: 0,
                payload: (self.payload)(i),
            }));
        }
        if self.n == 0 {
            self.out.push_back(Output::Event(Ev::AllEchoed(assoc)));
        }
    }
    fn handle_assoc_down(&mut self, _: Instant, assoc: AssocId, reason: AssocDownReason) {
        if reason == AssocDownReason::Closed {
            self.closed = true;
        }
        self.out.push_back(Output::Event(Ev::Down(assoc, reason)));
    }
    fn handle_message(&mut self, _: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if assoc != self.assoc || ppid != PPID_ASAP || data != (self.payload)(self.received) {
            self.mismatches += 1;
        }
        self.received += 1;
        if self.received == self.n {
            self.out.push_back(Output::Event(Ev::AllEchoed(assoc)));
            self.out.push_back(Output::Close {
                assoc,
                abort: false,
            });
        }
    }
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<Ev>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn poll_bulk_transfer(&mut self) -> Option<BulkTransfer> {
        self.bulk.pop_front()
    }
}

/// Ticks every `period` from its first timeout on, `count` times, reporting the time it
/// was called at.
pub struct Ticker {
    pub next: Option<Instant>,
    pub period: Duration,
    pub left: usize,
    pub ticks: Vec<Instant>,
    pub out: VecDeque<Output<Ev>>,
}

impl Ticker {
    pub fn new(first: Instant, period: Duration, count: usize) -> Ticker {
        Ticker {
            next: Some(first),
            period,
            left: count,
            ticks: Vec::new(),
            out: VecDeque::new(),
        }
    }
}

impl Machine for Ticker {
    type Event = Ev;
    fn handle_assoc_up(&mut self, _: Instant, _: AssocId, _: &[SocketAddr]) {}
    fn handle_assoc_down(&mut self, _: Instant, _: AssocId, _: AssocDownReason) {}
    fn handle_message(&mut self, _: Instant, _: AssocId, _: u32, _: Bytes) {}
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, now: Instant) {
        let Some(next) = self.next else { return };
        if now < next {
            return;
        }
        self.ticks.push(now);
        self.out.push_back(Output::Event(Ev::Tick(now)));
        self.left -= 1;
        self.next = (self.left > 0).then(|| next + self.period);
    }
    fn poll_output(&mut self) -> Option<Output<Ev>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}

/// Waits for the first event matching `f`, failing after [`LIMIT`].
pub async fn wait_for<T>(
    events: &mut rserpool_async_std::Events<Ev>,
    what: &str,
    mut f: impl FnMut(&Ev) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let found = futures_lite::future::or(
        async {
            while let Some(e) = events.recv().await {
                if let Some(x) = f(&e) {
                    return Some(x);
                }
                seen.push(e);
            }
            None
        },
        async {
            Timer::after(LIMIT).await;
            None
        },
    )
    .await;
    match found {
        Some(x) => x,
        None => panic!(
            "no {what}; saw {} events, the first: {:?}",
            seen.len(),
            seen.iter().take(8).map(short).collect::<Vec<_>>()
        ),
    }
}

/// An event without its payload bytes.
pub fn short(e: &Ev) -> String {
    match e {
        Ev::Message(a, p, d) => format!("Message({a:?}, {p}, {} bytes)", d.len()),
        Ev::Datagram(f, p, d) => format!("Datagram({f}, {p}, {} bytes)", d.len()),
        other => format!("{other:?}"),
    }
}

/// Polls every future concurrently; their outputs in order.
pub async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut done: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, d) in futures.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(x) => *d = Some(x),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}
