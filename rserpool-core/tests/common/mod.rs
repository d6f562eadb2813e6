//! Shared support for the pool element, pool user and registrar table tests: RSPLIB vectors,
//! a typed view of machine outputs, and small constructors.
#![allow(dead_code)]

use bytes::Bytes;
use core::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::io::{ChannelKind, Destination, Machine, Output};
use rserpool_core::{AssocId, Instant};
use rserpool_proto::AsapMessage;
use rserpool_proto::transport::TransportProtocol;

/// The deterministic RNG of the tests.
pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// Finds `shared/<rel>`: `RSERPOOL_VECTORS` (for `vectors/...`), then every ancestor of the
/// manifest directory.
pub fn shared_path(rel: &str) -> PathBuf {
    if let Some(rest) = rel.strip_prefix("vectors/")
        && let Ok(v) = std::env::var("RSERPOOL_VECTORS")
    {
        return Path::new(&v).join(rest);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors().skip(1) {
        let p = dir.join("shared").join(rel);
        if p.exists() {
            return p;
        }
    }
    panic!("shared/{rel} not found (set RSERPOOL_VECTORS)");
}

/// Parses hex text: '#' starts a comment, everything but hex digits is ignored.
pub fn hex(text: &str) -> Bytes {
    let digits: Vec<u8> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.bytes())
        .filter(u8::is_ascii_hexdigit)
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

/// One RSPLIB message vector (`shared/vectors/rsplib-captures/messages/<name>.hex`).
pub fn vector(name: &str) -> Bytes {
    let p = shared_path(&format!("vectors/rsplib-captures/messages/{name}.hex"));
    hex(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// A machine output with ASAP payloads decoded (test-only: size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out<E> {
    /// An ASAP message over an association (PPID 11, stream 0).
    Send(AssocId, AsapMessage),
    /// Connect.
    Connect(AssocId, Vec<SocketAddr>, TransportProtocol),
    /// Close (abort?).
    Close(AssocId, bool),
    /// Application event.
    Event(E),
}

/// Drains a machine's outputs, decoding every transmitted ASAP message (and checking it
/// re-encodes to the same bytes).
pub fn drain<M: Machine>(m: &mut M) -> Vec<Out<M::Event>> {
    drain_raw(m).into_iter().map(|(o, _)| o).collect()
}

/// Like [`drain`], also returning each transmitted payload's bytes.
pub fn drain_raw<M: Machine>(m: &mut M) -> Vec<(Out<M::Event>, Option<Bytes>)> {
    let mut v = Vec::new();
    while let Some(o) = m.poll_output() {
        v.push(match o {
            Output::Transmit(t) => {
                assert_eq!(t.ppid, 11, "ASAP PPID");
                assert_eq!(t.stream, 0);
                let Destination::Assoc(a) = t.dest else {
                    panic!("unexpected UDP transmit {t:?}");
                };
                let m = AsapMessage::decode_bytes(&t.payload)
                    .unwrap_or_else(|e| panic!("undecodable output {:?}: {e:?}", t.payload));
                assert_eq!(m.to_bytes(), t.payload, "canonical encoding");
                (Out::Send(a, m), Some(t.payload))
            }
            Output::Connect {
                assoc,
                addrs,
                transport,
                channel,
            } => {
                assert_eq!(channel, ChannelKind::AsapToRegistrar);
                (Out::Connect(assoc, addrs.to_vec(), transport), None)
            }
            Output::Close { assoc, abort } => (Out::Close(assoc, abort), None),
            Output::Event(e) => (Out::Event(e), None),
        });
    }
    v
}

/// Milliseconds since the epoch.
pub fn ms(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// A socket address from text.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IP address from text.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The connect attempts among outputs.
pub fn connects<E>(outs: &[Out<E>]) -> Vec<(AssocId, Vec<SocketAddr>)> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Connect(a, addrs, _) => Some((*a, addrs.clone())),
            _ => None,
        })
        .collect()
}

/// The index the registrar table's hunt starts at for a fresh RNG state (its formula:
/// `next_u32 · n / 2^32`), for predicting the order of connect attempts.
pub fn hunt_start(rng: &mut impl rand_core::Rng, n: usize) -> usize {
    ((u64::from(rng.next_u32()) * n as u64) >> 32) as usize
}

/// One step of a random driver schedule ([`run_schedule`]).
#[derive(Clone, Debug)]
pub enum Op {
    /// Time passes (ms); due timeouts are handled.
    Advance(u16),
    /// The n-th pending connect comes up.
    ConnectUp(u8),
    /// The n-th pending connect fails.
    ConnectFail(u8),
    /// The n-th live association breaks.
    Lose(u8),
    /// A peer opens an association to the machine.
    Incoming,
    /// Canned message m arrives on the n-th live association.
    Deliver(u8, u8),
    /// Canned datagram m arrives.
    Datagram(u8),
    /// Machine-specific command c.
    Command(u8),
}

/// A proptest strategy for [`Op`]s.
pub fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0u16..4000).prop_map(Op::Advance),
        2 => any::<u8>().prop_map(Op::ConnectUp),
        1 => any::<u8>().prop_map(Op::ConnectFail),
        1 => any::<u8>().prop_map(Op::Lose),
        1 => Just(Op::Incoming),
        4 => (any::<u8>(), any::<u8>()).prop_map(|(a, m)| Op::Deliver(a, m)),
        1 => any::<u8>().prop_map(Op::Datagram),
        2 => any::<u8>().prop_map(Op::Command),
    ]
}

/// Runs a schedule against a machine like a driver would, checking the driving contract:
/// messages go only to live associations, connects use fresh machine-chosen ids, every
/// transmitted message decodes, and after `handle_timeout(now)` the next deadline is later
/// than `now`. Returns the events.
pub fn run_schedule<M: Machine>(
    m: &mut M,
    ops: &[Op],
    messages: &[Bytes],
    datagrams: &[(SocketAddr, Bytes)],
    mut command: impl FnMut(&mut M, Instant, u8),
) -> Vec<M::Event>
where
    M::Event: core::fmt::Debug,
{
    use rserpool_core::io::{AssocDownReason, AssocIdAllocator};
    let mut now = Instant::ZERO;
    let mut up: Vec<AssocId> = Vec::new();
    let mut pending: Vec<AssocId> = Vec::new();
    let mut seen: std::collections::BTreeSet<AssocId> = Default::default();
    let mut next_incoming = 1u64;
    let mut events = Vec::new();
    let mut absorb = |m: &mut M,
                      up: &mut Vec<AssocId>,
                      pending: &mut Vec<AssocId>,
                      events: &mut Vec<M::Event>| {
        for o in drain(m) {
            match o {
                Out::Send(a, _) => assert!(up.contains(&a), "send to {a:?}, live: {up:?}"),
                Out::Connect(a, addrs, _) => {
                    assert!(AssocIdAllocator::is_machine_chosen(a));
                    assert!(seen.insert(a), "connect id {a:?} reused");
                    assert!(!addrs.is_empty());
                    pending.push(a);
                }
                Out::Close(a, _) => {
                    assert!(
                        up.contains(&a) || pending.contains(&a),
                        "close of unknown {a:?}"
                    );
                    up.retain(|x| *x != a);
                    pending.retain(|x| *x != a);
                }
                Out::Event(e) => events.push(e),
            }
        }
    };
    for op in ops {
        match *op {
            Op::Advance(d) => {
                now += core::time::Duration::from_millis(u64::from(d));
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now);
                    absorb(m, &mut up, &mut pending, &mut events);
                    if let Some(t) = m.poll_timeout() {
                        assert!(t > now, "deadline {t:?} not consumed at {now:?}");
                    }
                }
            }
            Op::ConnectUp(i) if !pending.is_empty() => {
                let a = pending.remove(i as usize % pending.len());
                up.push(a);
                m.handle_assoc_up(now, a, &[]);
            }
            Op::ConnectFail(i) if !pending.is_empty() => {
                let a = pending.remove(i as usize % pending.len());
                m.handle_assoc_down(now, a, AssocDownReason::ConnectFailed);
            }
            Op::Lose(i) if !up.is_empty() => {
                let a = up.remove(i as usize % up.len());
                m.handle_assoc_down(now, a, AssocDownReason::Lost);
            }
            Op::Incoming => {
                let a = AssocId(next_incoming);
                next_incoming += 1;
                up.push(a);
                m.handle_assoc_up(now, a, &[]);
            }
            Op::Deliver(i, k) if !up.is_empty() && !messages.is_empty() => {
                let a = up[i as usize % up.len()];
                m.handle_message(now, a, 11, messages[k as usize % messages.len()].clone());
            }
            Op::Datagram(k) if !datagrams.is_empty() => {
                let (from, d) = &datagrams[k as usize % datagrams.len()];
                m.handle_datagram(now, *from, 11, d.clone());
            }
            Op::Command(c) => command(m, now, c),
            _ => {}
        }
        absorb(m, &mut up, &mut pending, &mut events);
    }
    events
}
