//! Prints how fast the simulator runs: a full mesh of ping machines that multicast a
//! presence datagram and send a message on every association each 100 ms of simulated
//! time, with jitter and loss. Run with `cargo run --release -p rserpool-tests --example
//! sim_throughput [nodes] [simulated seconds]`.

use bytes::Bytes;
use core::net::SocketAddr;
use core::time::Duration;
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::{
    AssocDownReason, AssocId, ChannelKind, Destination, Instant, Machine, Output, Transmit,
};
use rserpool_proto::transport::TransportProtocol;
use rserpool_tests::sim::{LinkParams, NodeConfig, SimConfig, World};
use std::collections::{BTreeSet, VecDeque};

struct Pinger {
    ids: AssocIdAllocator,
    targets: Vec<SocketAddr>,
    up: BTreeSet<AssocId>,
    out: VecDeque<Output<()>>,
    next: Instant,
    started: bool,
}

impl Machine for Pinger {
    type Event = ();
    fn handle_assoc_up(&mut self, _: Instant, assoc: AssocId, _: &[SocketAddr]) {
        self.up.insert(assoc);
    }
    fn handle_assoc_down(&mut self, _: Instant, assoc: AssocId, _: AssocDownReason) {
        self.up.remove(&assoc);
    }
    fn handle_message(&mut self, _: Instant, _: AssocId, _: u32, _: Bytes) {}
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, now: Instant) {
        self.next = now + Duration::from_millis(100);
        if !self.started {
            self.started = true;
            for addr in self.targets.clone() {
                self.out.push_back(Output::Connect {
                    assoc: self.ids.allocate(),
                    addrs: [addr].into_iter().collect(),
                    transport: TransportProtocol::Sctp,
                    channel: ChannelKind::Enrp,
                });
            }
        }
        for a in &self.up {
            self.out.push_back(Output::Transmit(Transmit {
                dest: Destination::Assoc(*a),
                ppid: 12,
                stream: 0,
                payload: Bytes::from_static(&[0; 64]),
            }));
        }
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Udp("239.0.0.50:9901".parse().unwrap()),
            ppid: 12,
            stream: 0,
            payload: Bytes::from_static(&[0; 32]),
        }));
    }
    fn poll_output(&mut self) -> Option<Output<()>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let mut cfg = SimConfig::with_seed(1);
    cfg.trace = false;
    cfg.default_link = LinkParams {
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(2),
        udp_loss: 0.01,
        udp_duplicate: 0.0,
    };
    let mut w: World<()> = World::new(cfg);
    let group: SocketAddr = "239.0.0.50:9901".parse().unwrap();
    let addr = |i: usize| -> SocketAddr {
        let v = u32::try_from(i + 1).unwrap().to_be_bytes();
        SocketAddr::from(([10, v[1], v[2], v[3]], 9901))
    };
    for i in 0..nodes {
        let targets: Vec<SocketAddr> = (0..i).map(addr).collect();
        w.add_node(
            NodeConfig::new(format!("n{i}")).listen(addr(i)).join(group),
            move |ctx| Pinger {
                ids: AssocIdAllocator::default(),
                targets: targets.clone(),
                up: BTreeSet::new(),
                out: VecDeque::new(),
                next: ctx.now,
                started: false,
            },
        );
    }
    let start = std::time::Instant::now();
    w.run_until(Instant::from_millis(secs * 1000));
    let wall = start.elapsed().as_secs_f64();
    let s = w.stats();
    println!(
        "{nodes} nodes, {secs} s simulated in {wall:.3} s wall: {} steps ({:.0} steps/s), \
         {} messages + {} datagrams delivered, {} associations up",
        s.steps,
        s.steps as f64 / wall,
        s.messages_delivered,
        s.datagrams_delivered,
        s.assocs_up
    );
}
