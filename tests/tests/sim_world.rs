//! Tests of the deterministic simulation world with small toy machines.

use bytes::Bytes;
use core::net::SocketAddr;
use core::time::Duration;
use proptest::prelude::*;
use rand_core::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::{
    AssocDownReason, AssocId, ChannelKind, Destination, Instant, Machine, Output, Transmit,
};
use rserpool_proto::transport::TransportProtocol;
use rserpool_tests::sim::{
    CrashKind, EndState, Fault, FaultSchedule, LinkParams, NodeConfig, NodeCtx, NodeId, NodeState,
    SimConfig, TraceKind, World, fault_schedule,
};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

// ------------------------------------------------------------------ helpers

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn ms(x: u64) -> Instant {
    Instant::from_millis(x)
}

fn cfg(seed: u64) -> SimConfig {
    SimConfig::with_seed(seed)
}

const PPID: u32 = 77;
const ECHO_PPID: u32 = 78;

// ------------------------------------------------------------------ toy machine 1: scripted

/// What a [`Scripted`] machine saw.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Up(AssocId, Vec<SocketAddr>),
    Down(AssocId, AssocDownReason),
    Msg(AssocId, u32, Bytes),
    Dgram(SocketAddr, u32, Bytes),
    Timeout,
}

#[derive(Clone, Debug, PartialEq)]
enum ToyEvent {
    Up(AssocId),
    Down(AssocId, AssocDownReason),
}

/// A machine driven by the test through `World::invoke`: records every input, optionally
/// echoes messages back, fires timers the test sets.
struct Scripted {
    incarnation: u32,
    first_random: u64,
    ids: AssocIdAllocator,
    out: VecDeque<Output<ToyEvent>>,
    seen: Vec<(Instant, Seen)>,
    echo: bool,
    timers: BTreeSet<Instant>,
}

impl Scripted {
    fn new(mut ctx: NodeCtx) -> Scripted {
        Scripted {
            incarnation: ctx.incarnation,
            first_random: ctx.rng.next_u64(),
            ids: AssocIdAllocator::default(),
            out: VecDeque::new(),
            seen: Vec::new(),
            echo: false,
            timers: BTreeSet::new(),
        }
    }

    fn echoing(ctx: NodeCtx) -> Scripted {
        let mut m = Scripted::new(ctx);
        m.echo = true;
        m
    }

    fn connect(&mut self, addrs: &[SocketAddr]) -> AssocId {
        let assoc = self.ids.allocate();
        self.out.push_back(Output::Connect {
            assoc,
            addrs: addrs.iter().copied().collect(),
            transport: TransportProtocol::Sctp,
            channel: ChannelKind::Session,
        });
        assoc
    }

    fn send(&mut self, assoc: AssocId, data: &'static [u8]) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(assoc),
            ppid: PPID,
            stream: 0,
            payload: Bytes::from_static(data),
        }));
    }

    fn send_bytes(&mut self, assoc: AssocId, data: Vec<u8>) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(assoc),
            ppid: PPID,
            stream: 0,
            payload: Bytes::from(data),
        }));
    }

    fn udp(&mut self, to: SocketAddr, data: Vec<u8>) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Udp(to),
            ppid: PPID,
            stream: 0,
            payload: Bytes::from(data),
        }));
    }

    fn close(&mut self, assoc: AssocId, abort: bool) {
        self.out.push_back(Output::Close { assoc, abort });
    }

    fn ups(&self) -> Vec<(Instant, AssocId)> {
        self.seen
            .iter()
            .filter_map(|(t, s)| match s {
                Seen::Up(a, _) => Some((*t, *a)),
                _ => None,
            })
            .collect()
    }

    fn downs(&self) -> Vec<(Instant, AssocId, AssocDownReason)> {
        self.seen
            .iter()
            .filter_map(|(t, s)| match s {
                Seen::Down(a, r) => Some((*t, *a, *r)),
                _ => None,
            })
            .collect()
    }

    fn msgs(&self) -> Vec<(Instant, Bytes)> {
        self.seen
            .iter()
            .filter_map(|(t, s)| match s {
                Seen::Msg(_, PPID, d) => Some((*t, d.clone())),
                _ => None,
            })
            .collect()
    }

    fn dgrams(&self) -> Vec<(SocketAddr, Bytes)> {
        self.seen
            .iter()
            .filter_map(|(_, s)| match s {
                Seen::Dgram(from, _, d) => Some((*from, d.clone())),
                _ => None,
            })
            .collect()
    }
}

impl Machine for Scripted {
    type Event = ToyEvent;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        self.seen.push((now, Seen::Up(assoc, peer_addrs.to_vec())));
        self.out.push_back(Output::Event(ToyEvent::Up(assoc)));
    }

    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.seen.push((now, Seen::Down(assoc, reason)));
        self.out
            .push_back(Output::Event(ToyEvent::Down(assoc, reason)));
    }

    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if self.echo && ppid == PPID {
            self.out.push_back(Output::Transmit(Transmit {
                dest: Destination::Assoc(assoc),
                ppid: ECHO_PPID,
                stream: 0,
                payload: data.clone(),
            }));
        }
        self.seen.push((now, Seen::Msg(assoc, ppid, data)));
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.seen.push((now, Seen::Dgram(from, ppid, data)));
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Instant> = self.timers.range(..=now).copied().collect();
        for t in due {
            self.timers.remove(&t);
            self.seen.push((now, Seen::Timeout));
        }
    }

    fn poll_output(&mut self) -> Option<Output<ToyEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().copied()
    }
}

fn seen(w: &World<ToyEvent>, n: NodeId) -> &Scripted {
    w.machine::<Scripted>(n).expect("a Scripted machine")
}

/// A server `srv` (10.0.0.1, listening on 5000, echoing) and a client `cli` (10.0.0.2).
fn pair_world(c: SimConfig) -> (World<ToyEvent>, NodeId, NodeId) {
    let mut w = World::new(c);
    let srv = w.add_node(
        NodeConfig::new("srv")
            .ip("10.0.0.1".parse().unwrap())
            .listen_port(5000),
        Scripted::echoing,
    );
    let cli = w.add_node(
        NodeConfig::new("cli").ip("10.0.0.2".parse().unwrap()),
        Scripted::new,
    );
    (w, srv, cli)
}

/// `pair_world` with the client connected (both ends up by 2 ms).
fn connected(c: SimConfig) -> (World<ToyEvent>, NodeId, NodeId, AssocId, AssocId) {
    let (mut w, srv, cli) = pair_world(c);
    let a = w
        .invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:5000")]))
        .unwrap();
    w.run_until(ms(10));
    let b = seen(&w, srv).ups()[0].1;
    assert_eq!(seen(&w, cli).ups(), vec![(ms(2), a)]);
    (w, srv, cli, a, b)
}

// ------------------------------------------------------------------ associations

#[test]
fn connect_brings_the_association_up_at_both_ends() {
    let (mut w, srv, cli) = pair_world(cfg(1));
    let a = w
        .invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:5000")]))
        .unwrap();
    assert!(AssocIdAllocator::is_machine_chosen(a));
    w.run_until(ms(10));

    let s = seen(&w, srv);
    assert_eq!(s.seen.len(), 1);
    let (t, Seen::Up(b, peer)) = &s.seen[0] else {
        panic!("server saw {:?}", s.seen)
    };
    assert_eq!(*t, ms(1), "acceptor up after one link delay");
    assert!(
        !AssocIdAllocator::is_machine_chosen(*b),
        "driver ids have the top bit clear"
    );
    assert_eq!(peer, &vec![sa("10.0.0.2:49152")]);

    let c = seen(&w, cli);
    assert_eq!(
        c.seen,
        vec![(ms(2), Seen::Up(a, vec![sa("10.0.0.1:5000")]))],
        "connector up after a round trip, with the listener's address"
    );

    // Events are mapped into the world log with node ids.
    assert_eq!(
        w.events(),
        &[
            (ms(1), srv, ToyEvent::Up(*b)),
            (ms(2), cli, ToyEvent::Up(a))
        ]
    );
    let assocs = w.associations();
    assert_eq!(assocs.len(), 1);
    assert_eq!(assocs[0].connector.node, cli);
    assert_eq!(assocs[0].connector.state, EndState::Up);
    assert_eq!(assocs[0].acceptor.as_ref().unwrap().node, srv);
    assert_eq!(assocs[0].acceptor.as_ref().unwrap().state, EndState::Up);
    assert!(w.assoc_consistency_errors().is_empty());
    assert!(w.violations().is_empty());
}

#[test]
fn multi_homed_listener_reports_all_its_addresses() {
    let mut w: World<ToyEvent> = World::new(cfg(1));
    let srv = w.add_node(
        NodeConfig::new("srv")
            .ip("10.0.0.1".parse().unwrap())
            .ip("10.1.0.1".parse().unwrap())
            .listen_port(9901),
        Scripted::new,
    );
    let cli = w.add_node(NodeConfig::new("cli"), Scripted::new);
    // The second address of the list is the one that matches.
    w.invoke(cli, |m: &mut Scripted, _| {
        m.connect(&[sa("10.7.7.7:9901"), sa("10.1.0.1:9901")])
    });
    w.run_until(ms(10));
    assert_eq!(
        seen(&w, cli).seen[0].1,
        Seen::Up(
            AssocId(AssocIdAllocator::MACHINE_BIT | 1),
            vec![sa("10.0.0.1:9901"), sa("10.1.0.1:9901")]
        )
    );
    assert_eq!(seen(&w, srv).ups().len(), 1);
    // A node without configured IPs got one derived from its id.
    assert_eq!(
        w.node_config(cli).ips,
        vec!["10.0.0.2".parse::<core::net::IpAddr>().unwrap()]
    );
}

#[test]
fn association_messages_arrive_in_order_despite_jitter_while_datagrams_do_not() {
    let mut c = cfg(5);
    c.default_link = LinkParams {
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(20),
        ..LinkParams::default()
    };
    let mut w: World<ToyEvent> = World::new(c);
    let srv = w.add_node(
        NodeConfig::new("srv")
            .ip("10.0.0.1".parse().unwrap())
            .listen_port(5000)
            .udp_port(6000),
        Scripted::echoing,
    );
    let cli = w.add_node(NodeConfig::new("cli"), Scripted::new);
    let a = w
        .invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:5000")]))
        .unwrap();
    w.run_until(ms(100));
    w.invoke(cli, |m: &mut Scripted, _| {
        for i in 0u16..200 {
            m.send_bytes(a, i.to_be_bytes().to_vec());
            m.udp(sa("10.0.0.1:6000"), i.to_be_bytes().to_vec());
        }
    });
    w.run_until(ms(1000));

    let expected: Vec<Bytes> = (0u16..200)
        .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
        .collect();
    let got: Vec<Bytes> = seen(&w, srv).msgs().into_iter().map(|(_, d)| d).collect();
    assert_eq!(got, expected, "association keeps order");
    let echoed: Vec<Bytes> = seen(&w, cli)
        .seen
        .iter()
        .filter_map(|(_, s)| match s {
            Seen::Msg(_, ECHO_PPID, d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(echoed, expected, "order holds in the other direction too");

    let dgrams: Vec<Bytes> = seen(&w, srv).dgrams().into_iter().map(|(_, d)| d).collect();
    assert_eq!(dgrams.len(), 200, "no loss configured");
    assert_ne!(dgrams, expected, "jitter reorders datagrams");
    let mut sorted = dgrams.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    let times: Vec<Instant> = seen(&w, srv).msgs().into_iter().map(|(t, _)| t).collect();
    assert!(times.windows(2).all(|p| p[0] <= p[1]));
    assert!(times[0] >= ms(102) && *times.last().unwrap() <= ms(122));
}

#[test]
fn connect_to_nobody_fails() {
    let mut w: World<ToyEvent> = World::new(cfg(1));
    let cli = w.add_node(
        NodeConfig::new("cli").ip("10.0.0.2".parse().unwrap()),
        Scripted::new,
    );
    let srv = w.add_node(
        NodeConfig::new("srv")
            .ip("10.0.0.1".parse().unwrap())
            .listen_port(5000),
        Scripted::new,
    );
    let stopped = w.add_node(
        NodeConfig::new("off")
            .ip("10.0.0.3".parse().unwrap())
            .listen_port(5000)
            .stopped(),
        Scripted::new,
    );
    assert_eq!(w.node_state(stopped), NodeState::Down(None));
    assert!(w.machine::<Scripted>(stopped).is_none());
    let gone = w.add_node(
        NodeConfig::new("gone")
            .ip("10.0.0.4".parse().unwrap())
            .listen_port(5000),
        Scripted::new,
    );
    w.apply_fault(Fault::Crash {
        node: gone,
        kind: CrashKind::HostDown,
    });

    let [no_host, no_listener, not_started, host_down] = w
        .invoke(cli, |m: &mut Scripted, _| {
            [
                m.connect(&[sa("10.9.9.9:5000")]),
                m.connect(&[sa("10.0.0.1:6000")]),
                m.connect(&[sa("10.0.0.3:5000")]),
                m.connect(&[sa("10.0.0.4:5000")]),
            ]
        })
        .unwrap();
    w.run_until(ms(5000));
    let f = AssocDownReason::ConnectFailed;
    assert_eq!(
        seen(&w, cli).downs(),
        vec![
            (ms(2), no_listener, f),
            (ms(2), not_started, f),
            (ms(3000), no_host, f),
            (ms(3000), host_down, f),
        ],
        "refused after a round trip, unreachable after the connect timeout"
    );
    assert!(seen(&w, cli).ups().is_empty());
    assert!(seen(&w, srv).seen.is_empty());
    assert!(w.associations().is_empty());
}

#[test]
fn graceful_close_delivers_queued_data_then_shutdown() {
    let (mut w, srv, cli, a, b) = connected(cfg(1));
    w.invoke(cli, |m: &mut Scripted, _| {
        m.send(a, b"one");
        m.send(a, b"two");
        m.send(a, b"three");
        m.close(a, false);
        m.send(a, b"after close");
    });
    w.run_until(ms(50));
    let s = seen(&w, srv);
    let tail: Vec<&Seen> = s.seen[1..].iter().map(|(_, x)| x).collect();
    assert_eq!(
        tail,
        vec![
            &Seen::Msg(b, PPID, Bytes::from_static(b"one")),
            &Seen::Msg(b, PPID, Bytes::from_static(b"two")),
            &Seen::Msg(b, PPID, Bytes::from_static(b"three")),
            &Seen::Down(b, AssocDownReason::Shutdown),
        ]
    );
    assert_eq!(s.downs(), vec![(ms(11), b, AssocDownReason::Shutdown)]);
    // The closer learns Closed at once and sees none of the echoes in flight.
    let c = seen(&w, cli);
    assert_eq!(c.downs(), vec![(ms(10), a, AssocDownReason::Closed)]);
    assert!(!c.seen.iter().any(|(_, x)| matches!(x, Seen::Msg(..))));
    assert!(w.associations().is_empty());
    assert!(
        w.trace_lines()
            .iter()
            .any(|l| l.contains("xx send on closing m1")),
        "{:#?}",
        w.trace_lines()
    );
}

#[test]
fn abort_signals_lost_and_discards_data_towards_the_aborter() {
    let (mut w, srv, cli, a, b) = connected(cfg(1));
    // Both send at the same instant; the client also aborts.
    w.invoke(srv, |m: &mut Scripted, _| m.send(b, b"late"));
    w.invoke(cli, |m: &mut Scripted, _| {
        m.send(a, b"last");
        m.close(a, true);
    });
    w.run_until(ms(50));
    let s = seen(&w, srv);
    assert_eq!(
        s.msgs(),
        vec![(ms(11), Bytes::from_static(b"last"))],
        "data sent before the abort still arrives"
    );
    assert_eq!(s.downs(), vec![(ms(11), b, AssocDownReason::Lost)]);
    let c = seen(&w, cli);
    assert_eq!(c.downs(), vec![(ms(10), a, AssocDownReason::Closed)]);
    assert!(
        c.msgs().is_empty(),
        "nothing is delivered after our own close"
    );
    assert!(w.associations().is_empty());
}

// ------------------------------------------------------------------ process faults

#[test]
fn killed_process_signals_its_peers_promptly() {
    let (mut w, srv, cli, a, _) = connected(cfg(1));
    w.schedule_fault(
        ms(100),
        Fault::Crash {
            node: srv,
            kind: CrashKind::Killed,
        },
    );
    w.schedule_invoke(ms(100), cli, move |m: &mut Scripted, _| {
        m.send(a, b"into the void")
    });
    w.run_until(ms(5000));
    assert_eq!(w.node_state(srv), NodeState::Down(Some(CrashKind::Killed)));
    assert!(w.machine::<Scripted>(srv).is_none());
    assert_eq!(
        seen(&w, cli).downs(),
        vec![(ms(101), a, AssocDownReason::Lost)]
    );
    assert!(w.associations().is_empty());
    // A new connection is refused (the host is up, nothing listens).
    let c2 = w
        .invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:5000")]))
        .unwrap();
    w.run_for(Duration::from_millis(10));
    assert_eq!(
        seen(&w, cli).downs()[1],
        (ms(5002), c2, AssocDownReason::ConnectFailed)
    );
}

#[test]
fn host_down_is_detected_only_after_the_failure_detection_time() {
    let (mut w, srv, cli, a, _) = connected(cfg(1));
    w.schedule_fault(
        ms(100),
        Fault::Crash {
            node: srv,
            kind: CrashKind::HostDown,
        },
    );
    w.run_until(ms(3099));
    assert!(seen(&w, cli).downs().is_empty());
    w.run_until(ms(5000));
    assert_eq!(
        seen(&w, cli).downs(),
        vec![(ms(3100), a, AssocDownReason::Lost)]
    );
}

#[test]
fn hung_process_gives_no_signal_and_gets_its_backlog_on_resume() {
    let (mut w, srv, cli, a, b) = connected(cfg(1));
    w.invoke(srv, |m: &mut Scripted, _| {
        m.timers.insert(ms(200));
    });
    w.schedule_fault(
        ms(100),
        Fault::Crash {
            node: srv,
            kind: CrashKind::Hung,
        },
    );
    for (t, d) in [(150, &b"a"[..]), (160, b"b"), (170, b"c")] {
        w.schedule_invoke(ms(t), cli, move |m: &mut Scripted, _| m.send(a, d));
    }
    w.schedule_invoke(ms(300), srv, move |m: &mut Scripted, _| {
        m.send(b, b"from the dead")
    });
    w.run_until(ms(10_000));
    assert_eq!(w.node_state(srv), NodeState::Frozen);
    let s = seen(&w, srv);
    assert_eq!(s.seen.len(), 1, "a hung machine sees nothing: {:?}", s.seen);
    assert!(seen(&w, cli).downs().is_empty(), "no transport signal");
    assert!(seen(&w, cli).msgs().is_empty());
    assert!(w.assoc_consistency_errors().is_empty());

    w.apply_fault(Fault::Resume { node: srv });
    w.run_until(ms(10_100));
    let s = seen(&w, srv);
    let after: Vec<(Instant, Seen)> = s.seen[1..].to_vec();
    assert_eq!(
        after,
        vec![
            (ms(10_000), Seen::Msg(b, PPID, Bytes::from_static(b"a"))),
            (ms(10_000), Seen::Msg(b, PPID, Bytes::from_static(b"b"))),
            (ms(10_000), Seen::Msg(b, PPID, Bytes::from_static(b"c"))),
            (ms(10_000), Seen::Timeout),
        ],
        "buffered inputs in order (the scheduled send runs too), then the overdue timer"
    );
    assert_eq!(
        seen(&w, cli).msgs(),
        vec![(ms(10_001), Bytes::from_static(b"from the dead"))]
    );
    let echoes = seen(&w, cli)
        .seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Msg(_, ECHO_PPID, _)))
        .count();
    assert_eq!(echoes, 3);
    let buffered = w
        .trace_lines()
        .into_iter()
        .filter(|l| l.contains("srv      <- cli d1") && l.ends_with("(buffered)"))
        .count();
    assert_eq!(
        buffered, 3,
        "the trace marks inputs replayed from the buffer"
    );
    assert!(w.assoc_consistency_errors().is_empty());
    assert_eq!(w.associations().len(), 1);
}

#[test]
fn restarting_a_hung_process_aborts_its_associations() {
    let (mut w, srv, cli, a, _) = connected(cfg(1));
    w.apply_fault(Fault::Crash {
        node: srv,
        kind: CrashKind::Hung,
    });
    w.run_until(ms(1000));
    assert!(seen(&w, cli).downs().is_empty());
    w.apply_fault(Fault::Restart { node: srv });
    w.run_until(ms(1100));
    assert_eq!(
        seen(&w, cli).downs(),
        vec![(ms(1001), a, AssocDownReason::Lost)]
    );
    assert_eq!(w.incarnation(srv), 2);
    assert!(seen(&w, srv).seen.is_empty());
}

#[test]
fn restart_rebuilds_the_machine_from_its_factory() {
    let builds = Rc::new(Cell::new(0u32));
    let mut w: World<ToyEvent> = World::new(cfg(9));
    let counter = builds.clone();
    let srv = w.add_node(
        NodeConfig::new("srv")
            .ip("10.0.0.1".parse().unwrap())
            .listen_port(5000),
        move |ctx: NodeCtx| {
            counter.set(counter.get() + 1);
            assert_eq!(
                ctx.ips,
                vec!["10.0.0.1".parse::<core::net::IpAddr>().unwrap()]
            );
            assert_eq!(ctx.listen, vec![sa("10.0.0.1:5000")]);
            Scripted::echoing(ctx)
        },
    );
    let cli = w.add_node(NodeConfig::new("cli"), Scripted::new);
    let a = w
        .invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:5000")]))
        .unwrap();
    w.run_until(ms(10));
    w.invoke(srv, |m: &mut Scripted, _| m.timers.insert(ms(50_000)));
    let first_random = seen(&w, srv).first_random;
    assert_eq!(seen(&w, srv).incarnation, 1);

    w.schedule_fault(ms(100), Fault::Restart { node: srv });
    w.run_until(ms(200));
    assert_eq!(builds.get(), 2);
    let s = seen(&w, srv);
    assert_eq!(s.incarnation, 2);
    assert!(s.seen.is_empty() && s.timers.is_empty(), "fresh state");
    assert_ne!(s.first_random, first_random, "fresh RNG");
    assert_eq!(w.node_state(srv), NodeState::Running);
    assert_eq!(
        seen(&w, cli).downs(),
        vec![(ms(101), a, AssocDownReason::Lost)],
        "restart kills the old process first"
    );

    // Same addresses: the client reconnects to the new incarnation.
    let a2 = w
        .invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:5000")]))
        .unwrap();
    w.run_for(Duration::from_millis(10));
    assert_eq!(seen(&w, cli).ups().last().unwrap().1, a2);
    let s = seen(&w, srv);
    let (_, b2) = s.ups()[0];
    assert_eq!(b2, AssocId(2), "driver ids are not reused across restarts");
}

// ------------------------------------------------------------------ partitions

#[test]
fn short_partition_delays_messages_and_the_association_survives() {
    let (mut w, srv, cli, a, b) = connected(cfg(1));
    w.apply_fault(Fault::Partition { a: cli, b: srv });
    w.invoke(cli, |m: &mut Scripted, _| {
        m.send(a, b"during 1");
        m.send(a, b"during 2");
    });
    w.run_until(ms(500));
    assert_eq!(
        seen(&w, srv).msgs(),
        vec![],
        "nothing crosses the partition"
    );
    w.invoke(cli, |m: &mut Scripted, _| m.send(a, b"during 3"));
    w.schedule_fault(ms(1000), Fault::Heal { a: srv, b: cli });
    w.run_until(ms(5000));
    let got: Vec<(Instant, Bytes)> = seen(&w, srv).msgs();
    assert_eq!(
        got,
        vec![
            (ms(1001), Bytes::from_static(b"during 1")),
            (ms(1001), Bytes::from_static(b"during 2")),
            (ms(1001), Bytes::from_static(b"during 3")),
        ],
        "retransmitted in order after the heal"
    );
    assert!(seen(&w, srv).downs().is_empty() && seen(&w, cli).downs().is_empty());
    assert_eq!(w.associations().len(), 1);
    let _ = b;
}

#[test]
fn long_partition_loses_associations_at_both_ends() {
    let (mut w, srv, cli, a, b) = connected(cfg(1));
    w.schedule_fault(ms(100), Fault::Partition { a: cli, b: srv });
    w.schedule_invoke(ms(200), cli, move |m: &mut Scripted, _| m.send(a, b"lost"));
    let c2 = Rc::new(Cell::new(AssocId(0)));
    let c2w = c2.clone();
    w.schedule_invoke(ms(200), cli, move |m: &mut Scripted, _| {
        c2w.set(m.connect(&[sa("10.0.0.1:5000")]));
    });
    w.schedule_fault(ms(10_000), Fault::HealAll);
    w.run_until(ms(20_000));
    assert_eq!(
        seen(&w, srv).downs(),
        vec![(ms(3100), b, AssocDownReason::Lost)]
    );
    assert_eq!(
        seen(&w, cli).downs(),
        vec![
            (ms(3100), a, AssocDownReason::Lost),
            (ms(3200), c2.get(), AssocDownReason::ConnectFailed),
        ]
    );
    assert!(
        seen(&w, srv).msgs().is_empty(),
        "abandoned, never delivered"
    );
    assert!(w.associations().is_empty());
}

#[test]
fn a_healed_and_renewed_partition_restarts_failure_detection() {
    let (mut w, srv, cli, a, _) = connected(cfg(1));
    w.schedule_faults(&FaultSchedule::new(vec![
        (ms(100), Fault::Partition { a: cli, b: srv }),
        (ms(200), Fault::Heal { a: cli, b: srv }),
        (ms(2500), Fault::Isolate { node: srv }),
    ]));
    w.run_until(ms(10_000));
    assert_eq!(
        seen(&w, cli).downs(),
        vec![(ms(5500), a, AssocDownReason::Lost)],
        "the check of the first partition must not fire"
    );
}

#[test]
fn killed_peer_behind_a_partition_is_detected_after_the_heal() {
    let (mut w, srv, cli, a, _) = connected(cfg(1));
    w.apply_fault(Fault::Partition { a: cli, b: srv });
    w.apply_fault(Fault::Crash {
        node: srv,
        kind: CrashKind::Killed,
    });
    w.schedule_fault(ms(1000), Fault::HealAll);
    w.run_until(ms(10_000));
    assert_eq!(
        seen(&w, cli).downs(),
        vec![(ms(1001), a, AssocDownReason::Lost)],
        "the ABORT is retransmitted when the path comes back"
    );
}

// ------------------------------------------------------------------ UDP

#[test]
fn multicast_reaches_subscribers_with_loss_and_duplication() {
    let group = sa("239.1.1.1:3863");
    let mut w: World<ToyEvent> = World::new(cfg(3));
    let tx = w.add_node(NodeConfig::new("tx").join(group), Scripted::new);
    let r1 = w.add_node(NodeConfig::new("r1").join(group), Scripted::new);
    let r2 = w.add_node(NodeConfig::new("r2").join(group), Scripted::new);
    let r3 = w.add_node(NodeConfig::new("r3").join(group), Scripted::new);
    let deaf = w.add_node(NodeConfig::new("deaf").udp_port(3863), Scripted::new);
    w.apply_fault(Fault::LinkLoss {
        a: tx,
        b: r1,
        percent: 30,
    });
    w.set_link(
        tx,
        r3,
        LinkParams {
            udp_duplicate: 1.0,
            ..LinkParams::default()
        },
    );
    w.invoke(tx, |m: &mut Scripted, _| {
        for i in 0u16..1000 {
            m.udp(group, i.to_be_bytes().to_vec());
        }
    });
    w.run_until(ms(100));
    let n = |x| seen(&w, x).dgrams().len();
    assert_eq!(n(tx), 0, "no multicast loopback by default");
    assert!((600..=800).contains(&n(r1)), "30 % loss: {}", n(r1));
    assert_eq!(n(r2), 1000);
    assert_eq!(n(r3), 2000, "every datagram duplicated");
    assert_eq!(n(deaf), 0, "not subscribed");
    assert_eq!(seen(&w, r2).dgrams()[0].0, sa("10.0.0.1:40000"));
    assert_eq!(w.stats().datagrams_lost, 1000 - n(r1) as u64);
    assert_eq!(w.stats().datagrams_duplicated, 1000);
    assert_eq!(
        w.trace()
            .iter()
            .filter(|r| matches!(&r.kind, TraceKind::Drop(d) if d.contains("lost")))
            .count(),
        1000 - n(r1)
    );
}

#[test]
fn unicast_udp_goes_to_the_bound_node_and_not_across_partitions() {
    let mut c = cfg(3);
    c.multicast_loopback = true;
    let group = sa("239.1.1.1:3863");
    let mut w: World<ToyEvent> = World::new(c);
    let a = w.add_node(
        NodeConfig::new("a").udp(sa("10.0.0.1:3863")).join(group),
        Scripted::new,
    );
    let b = w.add_node(NodeConfig::new("b").udp_port(9901), Scripted::new);
    w.invoke(a, |m: &mut Scripted, _| {
        m.udp(sa("10.0.0.2:9901"), vec![1]);
        m.udp(sa("10.0.0.2:9999"), vec![2]);
        m.udp(group, vec![3]);
    });
    w.run_until(ms(10));
    assert_eq!(
        seen(&w, b).dgrams(),
        vec![(sa("10.0.0.1:3863"), Bytes::from_static(&[1]))]
    );
    assert_eq!(
        seen(&w, a).dgrams(),
        vec![(sa("10.0.0.1:3863"), Bytes::from_static(&[3]))],
        "loopback on"
    );
    w.apply_fault(Fault::Partition { a, b });
    w.invoke(a, |m: &mut Scripted, _| m.udp(sa("10.0.0.2:9901"), vec![4]));
    w.apply_fault(Fault::Crash {
        node: b,
        kind: CrashKind::Hung,
    });
    w.run_until(ms(20));
    w.apply_fault(Fault::RecoverAll);
    w.run_until(ms(30));
    assert_eq!(seen(&w, b).dgrams().len(), 1);
    assert!(
        w.trace_lines()
            .iter()
            .any(|l| l.contains("xx datagram to 10.0.0.2:9999: no receiver"))
    );
}

// ------------------------------------------------------------------ running, tracing, contract

#[test]
fn run_until_true_reports_when_the_condition_first_holds() {
    let (mut w, _srv, cli) = pair_world(cfg(1));
    w.invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:5000")]));
    let up_at = w.run_until_true(
        |w| !w.machine::<Scripted>(cli).unwrap().ups().is_empty(),
        ms(1000),
    );
    assert_eq!(up_at, Some(ms(2)));
    assert_eq!(w.now(), ms(2));
    let never = w.run_until_true(|w| w.node_state(cli) != NodeState::Running, ms(1000));
    assert_eq!(never, None);
    assert_eq!(w.now(), ms(1000));
    assert!(!w.step(), "nothing left to do");
}

#[test]
fn trace_lines_show_time_node_direction_ppid_length_and_summary() {
    let (mut w, srv, cli) = pair_world(cfg(1));
    w.set_payload_formatter(Box::new(|ppid, p| {
        (ppid == PPID).then(|| format!("PING {:?}", String::from_utf8_lossy(p)))
    }));
    let a = w
        .invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:5000")]))
        .unwrap();
    w.run_until(ms(5));
    w.invoke(cli, |m: &mut Scripted, _| {
        m.send(a, b"hi");
        m.close(a, false);
    });
    w.schedule_fault(ms(7), Fault::Restart { node: srv });
    w.run_until(ms(10));
    let expected = [
        "   0.000000 cli      @@ invoke",
        "   0.000000 cli      => connect m1 Session [10.0.0.1:5000] -> srv",
        "   0.001000 srv      ++ up d1 peer cli",
        "   0.001000 srv      ev Up(assoc#1)",
        "   0.002000 cli      ++ up m1 peer srv",
        "   0.002000 cli      ev Up(assoc#9223372036854775809)",
        "   0.005000 cli      @@ invoke",
        "   0.005000 cli      -> srv m1 s=0 ppid=77 len=2 | PING \"hi\"",
        "   0.005000 cli      =| close m1 shutdown",
        "   0.005000 cli      -- down m1 Closed",
        "   0.005000 cli      ev Down(assoc#9223372036854775809, Closed)",
        "   0.006000 srv      <- cli d1 s=0 ppid=77 len=2 | PING \"hi\"",
        "   0.006000 srv      -> cli d1 s=0 ppid=78 len=2",
        "   0.006000 srv      -- down d1 Shutdown",
        "   0.006000 srv      ev Down(assoc#1, Shutdown)",
        "   0.007000 srv      !! Restart { node: n0 }",
    ];
    assert_eq!(w.trace_lines(), expected);
}

#[test]
fn contract_violations_are_reported() {
    let (mut w, _srv, cli) = pair_world(cfg(1));
    w.invoke(cli, |m: &mut Scripted, _| {
        m.out.push_back(Output::Connect {
            assoc: AssocId(5),
            addrs: [sa("10.0.0.1:5000")].into_iter().collect(),
            transport: TransportProtocol::Sctp,
            channel: ChannelKind::Enrp,
        });
        let id = m.connect(&[sa("10.0.0.1:5000")]);
        m.out.push_back(Output::Connect {
            assoc: id,
            addrs: [sa("10.0.0.1:5000")].into_iter().collect(),
            transport: TransportProtocol::Tcp,
            channel: ChannelKind::Enrp,
        });
    });
    w.schedule_invoke(ms(1), cli, |_: &mut String, _| {});
    w.run_until(ms(10));
    let v = w.violations();
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(v[0].contains("driver-range id d5"));
    assert!(v[1].contains("id in use m1"));
    assert!(v[2].contains("another machine type"));
    assert_eq!(
        seen(&w, cli).ups().len(),
        1,
        "the valid connect still works"
    );
}

/// A machine that never moves its deadline.
struct Stuck;

impl Machine for Stuck {
    type Event = ToyEvent;
    fn handle_assoc_up(&mut self, _: Instant, _: AssocId, _: &[SocketAddr]) {}
    fn handle_assoc_down(&mut self, _: Instant, _: AssocId, _: AssocDownReason) {}
    fn handle_message(&mut self, _: Instant, _: AssocId, _: u32, _: Bytes) {}
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<ToyEvent>> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(Instant::from_millis(3))
    }
}

#[test]
#[should_panic(expected = "livelocked")]
fn a_machine_that_never_advances_its_timer_is_caught() {
    let mut w: World<ToyEvent> = World::new(cfg(1));
    w.add_node(NodeConfig::new("stuck"), |_| Stuck);
    w.run_until(ms(10));
}

#[test]
fn events_can_be_mapped_into_a_world_event_type() {
    #[derive(Debug, PartialEq)]
    enum WorldEvent {
        Toy(ToyEvent),
    }
    let mut w: World<WorldEvent> = World::new(cfg(1));
    let srv = w.add_node_mapped(
        NodeConfig::new("srv").listen_port(1),
        Scripted::new,
        WorldEvent::Toy,
    );
    let cli = w.add_node_mapped(NodeConfig::new("cli"), Scripted::new, WorldEvent::Toy);
    w.invoke(cli, |m: &mut Scripted, _| m.connect(&[sa("10.0.0.1:1")]));
    w.run_until(ms(10));
    let ev = w.take_events();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].1, srv);
    assert!(matches!(ev[1], (_, n, WorldEvent::Toy(ToyEvent::Up(_))) if n == cli));
    assert!(w.events().is_empty());
}

// ------------------------------------------------------------------ toy machine 2: chatty

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Connecting,
    Up,
    Closing,
}

const FIN: u64 = u64::MAX;

/// Keeps an association to every other node, sends numbered messages on a random timer,
/// closes or aborts some at random, multicasts, and checks everything the world tells it
/// (order, no gaps, no tail loss before a shutdown, Up/Down/message only when legal).
struct Chatty {
    rng: Xoshiro256PlusPlus,
    ids: AssocIdAllocator,
    targets: Vec<SocketAddr>,
    group: SocketAddr,
    conn: BTreeMap<usize, AssocId>,
    known: BTreeMap<AssocId, St>,
    sent: BTreeMap<AssocId, u64>,
    recv: BTreeMap<AssocId, u64>,
    fin_seen: BTreeSet<AssocId>,
    errors: Vec<String>,
    out: VecDeque<Output<ToyEvent>>,
    next_tick: Instant,
    quiet: bool,
}

impl Chatty {
    fn new(mut ctx: NodeCtx, targets: Vec<SocketAddr>, group: SocketAddr) -> Chatty {
        let first = ctx.now + Duration::from_millis(ctx.rng.next_u64() % 50);
        Chatty {
            rng: ctx.rng,
            ids: AssocIdAllocator::default(),
            targets,
            group,
            conn: BTreeMap::new(),
            known: BTreeMap::new(),
            sent: BTreeMap::new(),
            recv: BTreeMap::new(),
            fin_seen: BTreeSet::new(),
            errors: Vec::new(),
            out: VecDeque::new(),
            next_tick: first,
            quiet: false,
        }
    }

    fn send_seq(&mut self, assoc: AssocId, seq: u64) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(assoc),
            ppid: PPID,
            stream: 0,
            payload: Bytes::from(seq.to_be_bytes().to_vec()),
        }));
    }

    fn up_ids(&self) -> BTreeSet<AssocId> {
        self.ids_in(St::Up)
    }

    fn ids_in(&self, st: St) -> BTreeSet<AssocId> {
        self.known
            .iter()
            .filter(|(_, s)| **s == st)
            .map(|(a, _)| *a)
            .collect()
    }

    fn forget(&mut self, assoc: AssocId) {
        self.known.remove(&assoc);
        self.conn.retain(|_, a| *a != assoc);
        self.sent.remove(&assoc);
        self.recv.remove(&assoc);
        self.fin_seen.remove(&assoc);
    }
}

impl Machine for Chatty {
    type Event = ToyEvent;

    fn handle_assoc_up(&mut self, _: Instant, assoc: AssocId, peer: &[SocketAddr]) {
        let legal = if AssocIdAllocator::is_machine_chosen(assoc) {
            matches!(self.known.get(&assoc), Some(St::Connecting | St::Closing))
        } else {
            !self.known.contains_key(&assoc)
        };
        if !legal || peer.is_empty() {
            self.errors.push(format!(
                "illegal up {assoc:?} in {:?}",
                self.known.get(&assoc)
            ));
        }
        if self.known.get(&assoc) != Some(&St::Closing) {
            self.known.insert(assoc, St::Up);
        }
        self.sent.insert(assoc, 0);
        self.recv.insert(assoc, 0);
    }

    fn handle_assoc_down(&mut self, _: Instant, assoc: AssocId, reason: AssocDownReason) {
        use AssocDownReason::*;
        let ok = match (self.known.get(&assoc), reason) {
            (Some(St::Connecting), ConnectFailed) => true,
            (Some(St::Up), Shutdown) => {
                if !self.fin_seen.contains(&assoc) {
                    self.errors
                        .push(format!("shutdown of {assoc:?} before its FIN"));
                }
                true
            }
            (Some(St::Up), Lost) | (Some(St::Closing), Closed) => true,
            _ => false,
        };
        if !ok {
            self.errors.push(format!(
                "illegal down {assoc:?} {reason:?} in {:?}",
                self.known.get(&assoc)
            ));
        }
        self.forget(assoc);
    }

    fn handle_message(&mut self, _: Instant, assoc: AssocId, _: u32, data: Bytes) {
        if self.known.get(&assoc) != Some(&St::Up) {
            self.errors.push(format!(
                "message on {assoc:?} in {:?}",
                self.known.get(&assoc)
            ));
            return;
        }
        let Ok(bytes) = <[u8; 8]>::try_from(&data[..]) else {
            self.errors.push("bad payload".into());
            return;
        };
        let seq = u64::from_be_bytes(bytes);
        let next = self.recv.entry(assoc).or_insert(0);
        if seq == FIN {
            self.fin_seen.insert(assoc);
        } else if seq != *next {
            self.errors
                .push(format!("{assoc:?}: got #{seq}, expected #{next}"));
            *next = seq + 1;
        } else {
            *next += 1;
        }
    }

    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}

    fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + Duration::from_millis(50 + self.rng.next_u64() % 100);
        for (i, addr) in self.targets.clone().into_iter().enumerate() {
            if !self.conn.contains_key(&i) {
                let assoc = self.ids.allocate();
                self.conn.insert(i, assoc);
                self.known.insert(assoc, St::Connecting);
                self.out.push_back(Output::Connect {
                    assoc,
                    addrs: [addr].into_iter().collect(),
                    transport: TransportProtocol::Sctp,
                    channel: ChannelKind::Enrp,
                });
            }
        }
        if self.quiet {
            // Only reconnect: no traffic, no closes.
            return;
        }
        for assoc in self.up_ids() {
            for _ in 0..=(self.rng.next_u64() % 3) {
                let seq = self.sent.entry(assoc).or_insert(0);
                let s = *seq;
                *seq += 1;
                self.send_seq(assoc, s);
            }
            match self.rng.next_u64() % 100 {
                0..=2 => {
                    self.send_seq(assoc, FIN);
                    self.known.insert(assoc, St::Closing);
                    self.out.push_back(Output::Close {
                        assoc,
                        abort: false,
                    });
                }
                3..=4 => {
                    self.known.insert(assoc, St::Closing);
                    self.out.push_back(Output::Close { assoc, abort: true });
                }
                _ => {}
            }
        }
        let group = self.group;
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Udp(group),
            ppid: PPID,
            stream: 0,
            payload: Bytes::from_static(b"presence"),
        }));
    }

    fn poll_output(&mut self) -> Option<Output<ToyEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }
}

const GROUP: &str = "239.0.0.50:9901";

fn chatty_world(seed: u64, nodes: usize, link: LinkParams) -> World<ToyEvent> {
    let mut c = cfg(seed);
    c.default_link = link;
    c.failure_detection = Duration::from_millis(1000);
    c.connect_timeout = Duration::from_millis(800);
    let mut w = World::new(c);
    let addr = |i: usize| sa(&format!("10.0.0.{}:9901", i + 1));
    for i in 0..nodes {
        let targets: Vec<SocketAddr> = (0..nodes).filter(|j| *j != i).map(addr).collect();
        let group = sa(GROUP);
        w.add_node(
            NodeConfig::new(format!("c{i}")).listen(addr(i)).join(group),
            move |ctx| Chatty::new(ctx, targets.clone(), group),
        );
    }
    w
}

fn jittery() -> LinkParams {
    LinkParams {
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(8),
        udp_loss: 0.1,
        udp_duplicate: 0.05,
    }
}

/// Replays the fault records of the trace and checks that no input reached a process that
/// was not running, and that nothing was received across a partition.
fn check_trace_invariants(w: &World<ToyEvent>) -> Result<(), String> {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Running,
        Frozen,
        Down,
    }
    let n = w.node_count();
    let mut p = vec![P::Running; n];
    let mut cut: BTreeSet<(usize, usize)> = BTreeSet::new();
    let key = |a: NodeId, b: NodeId| (a.0.min(b.0), a.0.max(b.0));
    for r in w.trace() {
        match &r.kind {
            TraceKind::Fault(f) => match *f {
                Fault::Crash { node, kind } => {
                    p[node.0] = match (p[node.0], kind) {
                        (P::Running, CrashKind::Hung) => P::Frozen,
                        (P::Frozen, CrashKind::Hung) => P::Frozen,
                        (P::Down, _) => P::Down,
                        _ => P::Down,
                    }
                }
                Fault::Restart { node } => p[node.0] = P::Running,
                Fault::Resume { node } => {
                    if p[node.0] == P::Frozen {
                        p[node.0] = P::Running;
                    }
                }
                Fault::Partition { a, b } => {
                    if a != b {
                        cut.insert(key(a, b));
                    }
                }
                Fault::Heal { a, b } => {
                    cut.remove(&key(a, b));
                }
                Fault::Isolate { node } => {
                    for o in 0..n {
                        if o != node.0 {
                            cut.insert(key(node, NodeId(o)));
                        }
                    }
                }
                Fault::HealAll => cut.clear(),
                Fault::RecoverAll => {
                    cut.clear();
                    p.iter_mut().for_each(|x| *x = P::Running);
                }
                Fault::LinkLoss { .. } => {}
            },
            TraceKind::Recv { from, buffered, .. }
            | TraceKind::RecvUdp {
                from_node: from,
                buffered,
                ..
            } => {
                let to = r.node.unwrap();
                if p[to.0] != P::Running {
                    return Err(format!("delivery to a stopped process: {r:?}"));
                }
                // Buffered inputs crossed the network before the process resumed.
                if !buffered && cut.contains(&key(*from, to)) {
                    return Err(format!("delivery across a partition: {r:?}"));
                }
            }
            TraceKind::Up { .. }
            | TraceKind::Down { .. }
            | TraceKind::Timeout
            | TraceKind::Invoke
                if p[r.node.unwrap().0] != P::Running =>
            {
                return Err(format!("input to a stopped process: {r:?}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Each machine's own view (up / closing ends) equals the world's bookkeeping.
fn check_views(w: &World<ToyEvent>) -> Result<(), String> {
    for n in w.node_ids() {
        let Some(m) = w.machine::<Chatty>(n) else {
            continue;
        };
        if !m.errors.is_empty() {
            return Err(format!("{n}: {:?}", m.errors));
        }
        let inc = w.incarnation(n);
        let ends = w
            .associations()
            .into_iter()
            .flat_map(|a| [Some(a.connector), a.acceptor])
            .flatten()
            .filter(|e| e.node == n && e.incarnation == inc)
            .collect::<Vec<_>>();
        for (st, es) in [(St::Up, EndState::Up), (St::Closing, EndState::Closing)] {
            let world: BTreeSet<AssocId> = ends
                .iter()
                .filter(|e| e.state == es)
                .map(|e| e.assoc)
                .collect();
            if world != m.ids_in(st) {
                return Err(format!(
                    "{n} {st:?}: machine {:?} world {world:?}",
                    m.ids_in(st)
                ));
            }
        }
    }
    Ok(())
}

fn run_chaos(seed: u64, schedule: &FaultSchedule) -> Result<World<ToyEvent>, String> {
    let nodes = 4;
    let mut w = chatty_world(seed, nodes, jittery());
    w.schedule_faults(schedule);
    let horizon = ms(6000);
    w.schedule_fault(horizon, Fault::RecoverAll);
    w.run_until(horizon);
    check_views(&w)?;
    // Let the survivors reconnect and chat, then go quiet and settle.
    w.run_until(ms(8000));
    check_views(&w)?;
    for n in w.node_ids() {
        w.invoke(n, |m: &mut Chatty, _| m.quiet = true);
    }
    w.run_until(ms(11_000));
    check_views(&w)?;
    check_trace_invariants(&w)?;
    if !w.violations().is_empty() {
        return Err(format!("violations: {:?}", w.violations()));
    }
    let errors = w.assoc_consistency_errors();
    if !errors.is_empty() {
        return Err(format!("inconsistent: {errors:?}"));
    }
    // Fully meshed again: every pair has its two associations up at both ends.
    let assocs = w.associations();
    let all_up = assocs.iter().all(|a| {
        a.connector.state == EndState::Up
            && a.acceptor.as_ref().is_some_and(|b| b.state == EndState::Up)
    });
    if !all_up || assocs.len() != nodes * (nodes - 1) {
        return Err(format!("not meshed after recovery: {assocs:?}"));
    }
    Ok(w)
}

#[test]
fn chaos_without_faults_meshes_and_exchanges_traffic() {
    let w = run_chaos(11, &FaultSchedule::default()).unwrap();
    let s = w.stats();
    assert!(s.messages_delivered > 1000, "{s:?}");
    assert!(s.datagrams_lost > 0 && s.datagrams_duplicated > 0, "{s:?}");
}

#[test]
fn same_seed_and_schedule_give_the_same_trace() {
    let nodes: Vec<NodeId> = (0..4).map(NodeId).collect();
    let schedule = FaultSchedule::new(vec![
        (
            ms(500),
            Fault::Partition {
                a: nodes[0],
                b: nodes[1],
            },
        ),
        (
            ms(900),
            Fault::Crash {
                node: nodes[2],
                kind: CrashKind::Killed,
            },
        ),
        (
            ms(1200),
            Fault::Crash {
                node: nodes[3],
                kind: CrashKind::Hung,
            },
        ),
        (ms(1500), Fault::HealAll),
        (ms(2000), Fault::Restart { node: nodes[2] }),
        (
            ms(2500),
            Fault::LinkLoss {
                a: nodes[0],
                b: nodes[3],
                percent: 50,
            },
        ),
        (ms(3000), Fault::Resume { node: nodes[3] }),
        (
            ms(3500),
            Fault::Crash {
                node: nodes[1],
                kind: CrashKind::HostDown,
            },
        ),
    ]);
    let a = run_chaos(42, &schedule).unwrap();
    let b = run_chaos(42, &schedule).unwrap();
    let c = run_chaos(43, &schedule).unwrap();
    let (la, lb, lc) = (a.trace_lines(), b.trace_lines(), c.trace_lines());
    assert!(la.len() > 5000, "a substantial trace: {}", la.len());
    assert_eq!(la, lb);
    assert_eq!(a.stats(), b.stats());
    assert_ne!(la, lc, "another seed gives another run");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn world_invariants_hold_under_random_fault_schedules(
        seed in any::<u64>(),
        schedule in fault_schedule((0..4).map(NodeId).collect(), Duration::from_millis(6000), 12),
    ) {
        if let Err(e) = run_chaos(seed, &schedule) {
            prop_assert!(false, "seed {seed} schedule {schedule:?}: {e}");
        }
    }
}
