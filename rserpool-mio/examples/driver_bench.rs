//! Prints driver figures: association set-up and echo round trips per second through two
//! [`Driver`]s (client and echo server, one thread each) running toy machines over the TCP
//! mapping on 127.0.0.1 — the transport cost plus the driver's id mapping, output draining and
//! machine calls.
//!
//! `cargo run --release -p rserpool-mio --example driver_bench -- [ASSOCS] [ROUNDS]`

use bytes::Bytes;
use rserpool_core::io::{AssocIdAllocator, Destination};
use rserpool_core::{AssocDownReason, AssocId, ChannelKind, Instant, Machine, Output, Transmit};
use rserpool_mio::driver::{Driver, DriverConfig, ListenerConfig};
use rserpool_mio::transport::{TransportMode, raise_nofile_limit};
use rserpool_proto::rtf::ChannelKinds;
use rserpool_proto::transport::TransportProtocol;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Echoes every message back on its association.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    AllUp,
    AllDone,
}

/// Opens `assocs` associations; once all are up, plays `rounds` ping-pongs on each (one
/// message in flight per association).
struct Pinger {
    out: VecDeque<Output<Progress>>,
    left: HashMap<AssocId, usize>,
    up: usize,
    assocs: usize,
    rounds: usize,
    done: usize,
    payload: Bytes,
}

impl Pinger {
    fn new(to: SocketAddr, assocs: usize, rounds: usize) -> Pinger {
        let mut ids = AssocIdAllocator::default();
        let mut out = VecDeque::new();
        for _ in 0..assocs {
            out.push_back(Output::Connect {
                assoc: ids.allocate(),
                addrs: [to].into_iter().collect(),
                transport: TransportProtocol::Tcp,
                channel: ChannelKind::Session,
            });
        }
        Pinger {
            out,
            left: HashMap::new(),
            up: 0,
            assocs,
            rounds,
            done: 0,
            payload: Bytes::from(vec![0x5a; 64]),
        }
    }

    fn ping(&mut self, assoc: AssocId) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(assoc),
            ppid: 33,
            stream: 0,
            payload: self.payload.clone(),
        }));
    }
}

impl Machine for Pinger {
    type Event = Progress;
    fn handle_assoc_up(&mut self, _: Instant, assoc: AssocId, _: &[SocketAddr]) {
        self.left.insert(assoc, self.rounds);
        self.up += 1;
        if self.up == self.assocs {
            self.out.push_back(Output::Event(Progress::AllUp));
            let ids: Vec<AssocId> = self.left.keys().copied().collect();
            for a in ids {
                self.ping(a);
            }
        }
    }
    fn handle_assoc_down(&mut self, _: Instant, assoc: AssocId, reason: AssocDownReason) {
        if reason != AssocDownReason::Closed {
            eprintln!("{assoc:?} down: {reason:?}");
        }
    }
    fn handle_message(&mut self, _: Instant, assoc: AssocId, _: u32, _: Bytes) {
        let Some(left) = self.left.get_mut(&assoc) else {
            return;
        };
        *left -= 1;
        if *left > 0 {
            self.ping(assoc);
        } else {
            self.done += 1;
            self.out.push_back(Output::Close {
                assoc,
                abort: false,
            });
            if self.done == self.assocs {
                self.out.push_back(Output::Event(Progress::AllDone));
            }
        }
    }
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<Progress>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

fn main() -> std::io::Result<()> {
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let assocs = nums.first().copied().unwrap_or(1000);
    let rounds = nums.get(1).copied().unwrap_or(50);
    let limit = raise_nofile_limit()?;
    println!(
        "driver over the TCP mapping: {assocs} associations × {rounds} echo rounds (fd limit {limit})"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let cfg = DriverConfig {
                mode: TransportMode::Tcp,
                listeners: vec![ListenerConfig::new(
                    vec!["127.0.0.1:0".parse().unwrap()],
                    ChannelKinds::all(),
                )],
                ..DriverConfig::default()
            };
            let mut d = Driver::new(cfg, |_, _| Echo::default())?;
            let _ = tx.send(d.bound().listeners[0].local_addrs[0]);
            d.run(|step| {
                *step.wakeup = Some(step.now + Duration::from_millis(50));
                if stop.load(Ordering::Relaxed) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        })
    };
    let addr = rx
        .recv()
        .map_err(|_| std::io::Error::other("server did not start"))?;

    let cfg = DriverConfig {
        mode: TransportMode::Tcp,
        ..DriverConfig::default()
    };
    let started = std::time::Instant::now();
    let mut client = Driver::new(cfg, |_, _| Pinger::new(addr, assocs, rounds))?;
    let mut up_at = None;
    client.run(|step| {
        for e in step.events.drain(..) {
            match e {
                Progress::AllUp => up_at = Some(std::time::Instant::now()),
                Progress::AllDone => return ControlFlow::Break(()),
            }
        }
        ControlFlow::Continue(())
    })?;
    let end = std::time::Instant::now();
    stop.store(true, Ordering::Relaxed);
    server
        .join()
        .map_err(|_| std::io::Error::other("server panicked"))??;

    let up_at = up_at.unwrap_or(end);
    let setup = up_at - started;
    let echo = end - up_at;
    let trips = (assocs * rounds) as f64;
    let s = client.stats();
    println!(
        "set-up: {assocs} associations in {:.1} ms ({:.0}/s)",
        setup.as_secs_f64() * 1e3,
        assocs as f64 / setup.as_secs_f64()
    );
    println!(
        "echo:   {trips} round trips in {:.1} ms ({:.0} round trips/s, {:.0} messages/s through the client driver)",
        echo.as_secs_f64() * 1e3,
        trips / echo.as_secs_f64(),
        2.0 * trips / echo.as_secs_f64()
    );
    println!(
        "client: {} wake-ups, {} sent, {} received, {} overflowed, {} dropped",
        s.turns, s.messages_sent, s.messages_received, s.overflowed, s.dropped
    );
    Ok(())
}
