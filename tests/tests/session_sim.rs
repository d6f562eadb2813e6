//! The session layer in the simulated world: one pool user session, two echo pool elements
//! (each a `PoolElementSessions` with an echo application loop that also hands out a cookie
//! after every echo), and a small scripted registrar that answers registrations and handle
//! resolutions from a table. The serving PE is killed (or hung) while lines flow; every line
//! must come back exactly once, in order, across the failover.

use bytes::Bytes;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::VecDeque;

use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::io::{AssocDownReason, Destination, Machine, Output, Transmit};
use rserpool_core::pool_element::PoolElementConfig;
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_core::session::{
    FailoverReason, PeSessionEvent, PoolElementSessions, PoolUserSession, PoolUserSessionConfig,
    SessionEvent,
};
use rserpool_core::{AssocId, Instant};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{
    DeregistrationResponse, HandleResolutionResponse, RegistrationResponse,
};
use rserpool_proto::ids::{PeIdentifier, PoolHandle};
use rserpool_proto::param::{ErrorCause, OperationError, PoolElementParameter, cause};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportProtocol;
use rserpool_tests::sim::{CrashKind, Fault, LinkParams, NodeConfig, NodeId, SimConfig, World};

const POOL: &str = "EchoPool";
const REGISTRAR: &str = "10.0.0.1:3863";
const PE_PORT: u16 = 7000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(x: u64) -> Instant {
    Instant::from_millis(x)
}

// ------------------------------------------------------------------ world events

#[derive(Clone, Debug)]
enum Ev {
    Pu(SessionEvent),
    Pe(PeSessionEvent),
    Reg(RegEvent),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RegEvent {
    Unreachable(PeIdentifier),
}

// ------------------------------------------------------------------ scripted registrar

/// Answers registrations and handle resolutions from a table (Round Robin over the PEs in
/// registration order), drops a PE when the association it registered over goes down, and
/// records unreachability reports. No keep-alives, no ENRP.
struct FakeRegistrar {
    pes: Vec<(PoolElementParameter, AssocId)>,
    rr: usize,
    out: VecDeque<Output<RegEvent>>,
}

impl FakeRegistrar {
    fn reply(&mut self, assoc: AssocId, m: impl Into<AsapMessage>) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(assoc),
            ppid: 11,
            stream: 0,
            payload: m.into().to_bytes(),
        }));
    }
}

impl Machine for FakeRegistrar {
    type Event = RegEvent;

    fn handle_assoc_up(&mut self, _: Instant, _: AssocId, _: &[SocketAddr]) {}

    fn handle_assoc_down(&mut self, _: Instant, assoc: AssocId, _: AssocDownReason) {
        self.pes.retain(|(_, a)| *a != assoc);
    }

    fn handle_message(&mut self, _: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if ppid != 11 {
            return;
        }
        match AsapMessage::decode_bytes(&data) {
            Ok(AsapMessage::Registration(r)) => {
                let pe = r.pool_element;
                let id = pe.pe_id;
                match self.pes.iter_mut().find(|(p, _)| p.pe_id == id) {
                    Some(entry) => *entry = (pe, assoc),
                    None => self.pes.push((pe, assoc)),
                }
                self.reply(
                    assoc,
                    RegistrationResponse {
                        pool_handle: r.pool_handle,
                        pe_id: id,
                        ..Default::default()
                    },
                );
            }
            Ok(AsapMessage::Deregistration(d)) => {
                self.pes.retain(|(p, _)| p.pe_id != d.pe_id);
                self.reply(
                    assoc,
                    DeregistrationResponse {
                        pool_handle: d.pool_handle,
                        pe_id: d.pe_id,
                        ..Default::default()
                    },
                );
            }
            Ok(AsapMessage::HandleResolution(h)) => {
                let n = self.pes.len();
                let m = if n == 0 {
                    HandleResolutionResponse {
                        pool_handle: h.pool_handle,
                        error: Some(OperationError::new(ErrorCause::new(
                            cause::UNKNOWN_POOL_HANDLE,
                            Bytes::new(),
                        ))),
                        ..Default::default()
                    }
                } else {
                    let items = h.option.map_or(3, |o| o.items as usize).min(n);
                    let start = self.rr % n;
                    self.rr += 1;
                    HandleResolutionResponse {
                        pool_handle: h.pool_handle,
                        policy: Some(Policy::RoundRobin),
                        pool_elements: (0..items)
                            .map(|i| self.pes[(start + i) % n].0.clone())
                            .collect(),
                        ..Default::default()
                    }
                };
                self.reply(assoc, m);
            }
            Ok(AsapMessage::EndpointUnreachable(e)) => {
                self.out
                    .push_back(Output::Event(RegEvent::Unreachable(e.pe_id)));
            }
            _ => {}
        }
    }

    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<RegEvent>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

// ------------------------------------------------------------------ echo pool element

/// A PE application: echoes every data message on its session and then sends a cookie with
/// the number of lines it and its predecessors echoed on that session (as Ping Pong does);
/// a cookie echo restores that count at once.
struct EchoPe {
    inner: PoolElementSessions<Xoshiro256PlusPlus>,
    echoed: std::collections::BTreeMap<AssocId, u64>,
}

impl EchoPe {
    fn new(id: u32, ctx: rserpool_tests::sim::NodeCtx) -> EchoPe {
        let mut c = PoolElementConfig::new(POOL, TransportProtocol::Sctp, PE_PORT, [ctx.ips[0]]);
        c.pe_id = Some(PeIdentifier(id));
        c.registrar_table.static_registrars =
            vec![StaticRegistrar::sctp([REGISTRAR.parse().unwrap()])];
        let mut inner = PoolElementSessions::new(c, ctx.rng).unwrap();
        inner.register(ctx.now);
        EchoPe {
            inner,
            echoed: Default::default(),
        }
    }
}

impl Machine for EchoPe {
    type Event = PeSessionEvent;
    fn handle_assoc_up(&mut self, now: Instant, a: AssocId, p: &[SocketAddr]) {
        self.inner.handle_assoc_up(now, a, p);
    }
    fn handle_assoc_down(&mut self, now: Instant, a: AssocId, r: AssocDownReason) {
        self.inner.handle_assoc_down(now, a, r);
    }
    fn handle_message(&mut self, now: Instant, a: AssocId, ppid: u32, data: Bytes) {
        self.inner.handle_message(now, a, ppid, data);
    }
    fn handle_datagram(&mut self, now: Instant, f: SocketAddr, ppid: u32, data: Bytes) {
        self.inner.handle_datagram(now, f, ppid, data);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
    }
    fn poll_output(&mut self) -> Option<Output<PeSessionEvent>> {
        let o = self.inner.poll_output()?;
        match &o {
            Output::Event(PeSessionEvent::Data {
                session,
                ppid,
                data,
            }) => {
                let n = self.echoed.entry(*session).or_default();
                *n += 1;
                let n = *n;
                self.inner.send(*session, *ppid, data.clone()).unwrap();
                self.inner
                    .send_cookie(*session, Bytes::copy_from_slice(&n.to_be_bytes()))
                    .unwrap();
            }
            Output::Event(PeSessionEvent::CookieEcho { session, cookie }) => {
                let n = <[u8; 8]>::try_from(&cookie[..]).map(u64::from_be_bytes);
                self.echoed.insert(*session, n.unwrap());
            }
            _ => {}
        }
        Some(o)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
}

// ------------------------------------------------------------------ scenario

type Pus = PoolUserSession<Xoshiro256PlusPlus>;

struct Outcome {
    world: World<Ev>,
    pu: NodeId,
    served_first: NodeId,
    other: NodeId,
    sent: Vec<Bytes>,
    fault_at: Instant,
}

/// Builds the world, connects at 100 ms, sends `lines` lines every 100 ms from 200 ms on,
/// applies `fault` to the serving PE at `fault_at`, and runs until `end`.
fn run(seed: u64, lines: usize, fault: CrashKind, fault_at: Instant, end: Instant) -> Outcome {
    let mut cfg = SimConfig::with_seed(seed);
    cfg.default_link = LinkParams {
        delay: Duration::from_millis(1),
        jitter: Duration::from_micros(400),
        ..LinkParams::default()
    };
    let mut world: World<Ev> = World::new(cfg);
    world.add_node_mapped(
        NodeConfig::new("reg").listen(REGISTRAR.parse().unwrap()),
        |_| FakeRegistrar {
            pes: Vec::new(),
            rr: 0,
            out: VecDeque::new(),
        },
        Ev::Reg,
    );
    let pe_a = world.add_node_mapped(
        NodeConfig::new("pe11")
            .ip(ip("10.0.0.11"))
            .listen_port(PE_PORT),
        |ctx| EchoPe::new(11, ctx),
        Ev::Pe,
    );
    let pe_b = world.add_node_mapped(
        NodeConfig::new("pe12")
            .ip(ip("10.0.0.12"))
            .listen_port(PE_PORT),
        |ctx| EchoPe::new(12, ctx),
        Ev::Pe,
    );
    let pu = world.add_node_mapped(
        NodeConfig::new("pu").ip(ip("10.0.0.20")),
        |ctx| {
            let mut c = PoolUserSessionConfig::default();
            c.pool_user.registrar_table.static_registrars =
                vec![StaticRegistrar::sctp([REGISTRAR.parse().unwrap()])];
            Pus::new(c, ctx.rng)
        },
        Ev::Pu,
    );
    world.schedule_invoke::<Pus>(ms(100), pu, |s, now| s.connect(now, PoolHandle::from(POOL)));
    let mut sent = Vec::new();
    for i in 0..lines {
        let line = Bytes::from(format!("line-{i:04}"));
        sent.push(line.clone());
        world.schedule_invoke::<Pus>(ms(200 + 100 * i as u64), pu, move |s, now| {
            s.send(now, 0, line).unwrap();
        });
    }
    world.run_until(ms(150));
    let serving = world.machine::<Pus>(pu).and_then(|s| s.pe_id());
    let (served_first, other) = match serving {
        Some(PeIdentifier(11)) => (pe_a, pe_b),
        Some(PeIdentifier(12)) => (pe_b, pe_a),
        s => panic!("not connected at 150 ms: {s:?}"),
    };
    world.schedule_fault(
        fault_at,
        Fault::Crash {
            node: served_first,
            kind: fault,
        },
    );
    world.run_until(end);
    assert!(world.violations().is_empty(), "{:?}", world.violations());
    Outcome {
        world,
        pu,
        served_first,
        other,
        sent,
        fault_at,
    }
}

fn pu_events(o: &Outcome) -> Vec<(Instant, SessionEvent)> {
    o.world
        .events()
        .iter()
        .filter(|(_, n, _)| *n == o.pu)
        .filter_map(|(t, _, e)| match e {
            Ev::Pu(e) => Some((*t, e.clone())),
            _ => None,
        })
        .collect()
}

fn pe_events(o: &Outcome, node: NodeId) -> Vec<PeSessionEvent> {
    o.world
        .events()
        .iter()
        .filter(|(_, n, _)| *n == node)
        .filter_map(|(_, _, e)| match e {
            Ev::Pe(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn echoes(evs: &[(Instant, SessionEvent)]) -> Vec<Bytes> {
    evs.iter()
        .filter_map(|(_, e)| match e {
            SessionEvent::Data { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// Checks the common expectations and returns (failover complete time, replayed count,
/// failover start reason).
fn check(o: &Outcome) -> (Instant, usize, FailoverReason) {
    let evs = pu_events(o);
    assert_eq!(
        echoes(&evs),
        o.sent,
        "every line echoed exactly once, in order"
    );
    let starts: Vec<_> = evs
        .iter()
        .filter_map(|(t, e)| match e {
            SessionEvent::FailoverStarted { pe_id, reason } => Some((*t, *pe_id, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 1, "{evs:?}");
    let completes: Vec<_> = evs
        .iter()
        .filter_map(|(t, e)| match e {
            SessionEvent::FailoverComplete {
                pe_id,
                has_cookie,
                replayed,
            } => Some((*t, *pe_id, *has_cookie, *replayed)),
            _ => None,
        })
        .collect();
    let [(done_at, new_pe, has_cookie, replayed)] = completes[..] else {
        panic!("{evs:?}");
    };
    assert!(has_cookie, "the first PE sent cookies");
    let names = |n: NodeId| o.world.node_name(n).to_string();
    assert_eq!(format!("pe{}", new_pe.0), names(o.other));
    assert_eq!(format!("pe{}", starts[0].1.0), names(o.served_first));
    // The dead PE was reported to the registrar.
    let reported = o
        .world
        .events()
        .iter()
        .any(|(_, _, e)| matches!(e, Ev::Reg(RegEvent::Unreachable(id)) if *id == starts[0].1));
    assert!(reported);
    // The new PE got the cookie echo first, and restored the session from it.
    let pe2 = pe_events(o, o.other);
    let first_cookie = pe2
        .iter()
        .position(|e| matches!(e, PeSessionEvent::CookieEcho { .. }))
        .expect("cookie echo delivered");
    let first_data = pe2
        .iter()
        .position(|e| matches!(e, PeSessionEvent::Data { .. }))
        .expect("data delivered");
    assert!(first_cookie < first_data);
    // The restored count continues where the first PE stopped.
    let PeSessionEvent::CookieEcho { session, cookie } = &pe2[first_cookie] else {
        unreachable!()
    };
    let restored = u64::from_be_bytes(<[u8; 8]>::try_from(&cookie[..]).unwrap());
    let echoed_by_first = echoes(
        &evs.iter()
            .filter(|(t, _)| *t <= starts[0].0)
            .cloned()
            .collect::<Vec<_>>(),
    )
    .len() as u64;
    assert_eq!(restored, echoed_by_first);
    let pe2_machine = o.world.machine::<EchoPe>(o.other).unwrap();
    assert_eq!(
        pe2_machine.echoed.get(session).copied(),
        Some(o.sent.len() as u64)
    );
    (done_at, replayed, starts[0].2)
}

#[test]
fn killed_pe_no_line_lost_or_duplicated() {
    // Kill instants around one line's round trip (sent at 2000 ms, echo back at ~2002 ms),
    // and between lines.
    for (i, offset_us) in [0u64, 300, 700, 1000, 1300, 1700, 2100, 2500, 50_000]
        .into_iter()
        .enumerate()
    {
        let fault_at = Instant::from_micros(2_000_000 + offset_us);
        let o = run(i as u64 + 1, 40, CrashKind::Killed, fault_at, ms(6000));
        let (done_at, replayed, reason) = check(&o);
        assert_eq!(reason, FailoverReason::AssociationLost);
        // Transport loss after one link delay, then resolution and connect: all within a
        // few round trips of the kill — no waiting.
        assert!(
            done_at - o.fault_at < Duration::from_millis(12),
            "failover took {:?}",
            done_at - o.fault_at
        );
        if replayed > 0 {
            // The line in flight is answered by the new PE at once, not with the next line.
            let evs = pu_events(&o);
            let first_echo_after = evs
                .iter()
                .find(|(t, e)| *t >= done_at && matches!(e, SessionEvent::Data { .. }))
                .map(|(t, _)| *t)
                .unwrap();
            assert!(first_echo_after - done_at < Duration::from_millis(5));
        }
    }
}

#[test]
fn hung_pe_is_left_after_the_response_timeout() {
    let fault_at = Instant::from_micros(2_000_500);
    let o = run(7, 40, CrashKind::Hung, fault_at, ms(12_000));
    let (done_at, replayed, reason) = check(&o);
    assert_eq!(reason, FailoverReason::ResponseTimeout);
    // Lines kept flowing into the hung PE for 5 s; all of them were replayed.
    assert_eq!(replayed, 22, "lines 18..=39 went to the hung PE");
    let waited = done_at - o.fault_at;
    assert!(
        waited >= Duration::from_millis(4900) && waited < Duration::from_millis(5100),
        "{waited:?}"
    );
}

#[test]
fn same_seed_same_trace() {
    let a = run(3, 30, CrashKind::Killed, ms(1500), ms(4000));
    let b = run(3, 30, CrashKind::Killed, ms(1500), ms(4000));
    assert_eq!(a.world.trace_lines(), b.world.trace_lines());
}
