//! Shared support for the session layer tests: a typed view of outputs that tells control
//! (PPID 11, decoded) from data, and canned registrar answers.
#![allow(dead_code)]

use bytes::Bytes;
use core::net::SocketAddr;

use rserpool_core::AssocId;
use rserpool_core::io::{AssocIdAllocator, ChannelKind, Destination, Machine, Output};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::HandleResolutionResponse;
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{ErrorCause, OperationError, PoolElementParameter, cause};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{
    TRANSPORT_USE_DATA_PLUS_CONTROL, TransportParameter, TransportProtocol,
};

/// A machine output, ASAP decoded.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SOut<E> {
    /// An ASAP message (PPID 11, stream 0) on an association.
    Asap(AssocId, AsapMessage),
    /// A data message (PPID ≠ 11, stream 0).
    Data(AssocId, u32, Bytes),
    /// Connect.
    Connect(AssocId, Vec<SocketAddr>, TransportProtocol, ChannelKind),
    /// Close (abort?).
    Close(AssocId, bool),
    /// Application event.
    Event(E),
}

/// Drains a machine's outputs.
pub fn sdrain<M: Machine>(m: &mut M) -> Vec<SOut<M::Event>> {
    let mut v = Vec::new();
    while let Some(o) = m.poll_output() {
        v.push(match o {
            Output::Transmit(t) => {
                assert_eq!(t.stream, 0);
                let Destination::Assoc(a) = t.dest else {
                    panic!("unexpected UDP transmit {t:?}");
                };
                if t.ppid == 11 {
                    let m = AsapMessage::decode_bytes(&t.payload)
                        .unwrap_or_else(|e| panic!("undecodable output {:?}: {e:?}", t.payload));
                    assert_eq!(m.to_bytes(), t.payload, "canonical encoding");
                    SOut::Asap(a, m)
                } else {
                    SOut::Data(a, t.ppid, t.payload)
                }
            }
            Output::Connect {
                assoc,
                addrs,
                transport,
                channel,
            } => SOut::Connect(assoc, addrs.to_vec(), transport, channel),
            Output::Close { assoc, abort } => SOut::Close(assoc, abort),
            Output::Event(e) => SOut::Event(e),
        });
    }
    v
}

/// The events among outputs.
pub fn events<E: Clone>(outs: &[SOut<E>]) -> Vec<E> {
    outs.iter()
        .filter_map(|o| match o {
            SOut::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The registrar association of a pool user / pool element (first hunt attempt).
pub fn reg() -> AssocId {
    AssocId(AssocIdAllocator::MACHINE_BIT | 1)
}

/// The n-th session association a pool user session opens.
pub fn sess(n: u64) -> AssocId {
    AssocId(AssocIdAllocator::MACHINE_BIT | (1 << 62) | n)
}

/// The test's home registrar identifier.
pub const PR1: ServerId = ServerId(0x1de0_434e);

/// A pool handle.
pub fn ph(s: &str) -> PoolHandle {
    PoolHandle::from(s)
}

/// PE `id` at 10.0.0.id:(1000 + id) over `protocol`, data + control, Round Robin.
pub fn pe_over(id: u32, protocol: TransportProtocol) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: PeIdentifier(id),
        home_server_id: PR1,
        registration_life: 90_000,
        user_transport: TransportParameter::with(
            protocol,
            1000 + id as u16,
            TRANSPORT_USE_DATA_PLUS_CONTROL,
            [format!("10.0.0.{id}").parse().unwrap()],
        ),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }
}

/// PE `id` over SCTP.
pub fn pe(id: u32) -> PoolElementParameter {
    pe_over(id, TransportProtocol::Sctp)
}

/// The address PE `id` listens on.
pub fn pe_addr(id: u32) -> SocketAddr {
    format!("10.0.0.{id}:{}", 1000 + id).parse().unwrap()
}

/// A Handle Resolution Response naming `pes`.
pub fn answer_with(handle: &str, pes: Vec<PoolElementParameter>) -> Bytes {
    AsapMessage::from(HandleResolutionResponse {
        pool_handle: ph(handle),
        policy: pes.first().map(|p| p.policy),
        pool_elements: pes,
        ..Default::default()
    })
    .to_bytes()
}

/// A Handle Resolution Response naming SCTP PEs `ids`.
pub fn answer(handle: &str, ids: &[u32]) -> Bytes {
    answer_with(handle, ids.iter().map(|&i| pe(i)).collect())
}

/// "Unknown pool handle".
pub fn not_found(handle: &str) -> Bytes {
    AsapMessage::from(HandleResolutionResponse {
        pool_handle: ph(handle),
        error: Some(OperationError::new(ErrorCause::new(
            cause::UNKNOWN_POOL_HANDLE,
            Bytes::new(),
        ))),
        ..Default::default()
    })
    .to_bytes()
}

/// Runs a random driver schedule (the ops of `common::op`) against a session machine, like
/// a driver would, checking the driving contract: messages go only to live associations,
/// connects use fresh machine-chosen ids with addresses, closes name known associations, and
/// after `handle_timeout(now)` the next deadline is later than `now`. `inspect` sees the
/// machine and the live associations after every step. Returns the events.
pub fn run_session_schedule<M: Machine>(
    m: &mut M,
    ops: &[super::common::Op],
    messages: &[(u32, Bytes)],
    mut command: impl FnMut(&mut M, rserpool_core::Instant, u8),
    mut inspect: impl FnMut(&M, &[AssocId]),
) -> Vec<M::Event>
where
    M::Event: core::fmt::Debug + Clone,
{
    use super::common::Op;
    use rserpool_core::Instant;
    use rserpool_core::io::AssocDownReason;
    let mut now = Instant::ZERO;
    let mut up: Vec<AssocId> = Vec::new();
    let mut pending: Vec<AssocId> = Vec::new();
    let mut seen: std::collections::BTreeSet<AssocId> = Default::default();
    let mut next_incoming = 1u64;
    let mut events = Vec::new();
    let mut absorb = |m: &mut M, up: &mut Vec<AssocId>, pending: &mut Vec<AssocId>| {
        for o in sdrain(m) {
            match o {
                SOut::Asap(a, _) | SOut::Data(a, _, _) => {
                    assert!(up.contains(&a), "send to {a:?}, live: {up:?}")
                }
                SOut::Connect(a, addrs, _, _) => {
                    assert!(AssocIdAllocator::is_machine_chosen(a));
                    assert!(seen.insert(a), "connect id {a:?} reused");
                    assert!(!addrs.is_empty());
                    pending.push(a);
                }
                SOut::Close(a, _) => {
                    assert!(
                        up.contains(&a) || pending.contains(&a),
                        "close of unknown {a:?}"
                    );
                    up.retain(|x| *x != a);
                    pending.retain(|x| *x != a);
                }
                SOut::Event(e) => events.push(e),
            }
        }
    };
    for op in ops {
        match *op {
            Op::Advance(d) => {
                now += core::time::Duration::from_millis(u64::from(d) / 4);
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now);
                    absorb(m, &mut up, &mut pending);
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
                let why = if i & 1 == 0 {
                    AssocDownReason::Lost
                } else {
                    AssocDownReason::Shutdown
                };
                m.handle_assoc_down(now, a, why);
            }
            Op::Incoming => {
                let a = AssocId(next_incoming);
                next_incoming += 1;
                up.push(a);
                m.handle_assoc_up(now, a, &[]);
            }
            Op::Deliver(i, k) if !up.is_empty() && !messages.is_empty() => {
                let a = up[i as usize % up.len()];
                let (ppid, data) = &messages[k as usize % messages.len()];
                m.handle_message(now, a, *ppid, data.clone());
            }
            Op::Command(c) => command(m, now, c),
            _ => {}
        }
        absorb(m, &mut up, &mut pending);
        inspect(m, &up);
    }
    events
}

/// A proptest strategy for driver ops biased towards sessions getting somewhere: more
/// "connect up" and deliveries, fewer losses and incoming associations, short time steps.
pub fn session_op() -> impl proptest::strategy::Strategy<Value = super::common::Op> {
    use super::common::Op;
    use proptest::prelude::*;
    prop_oneof![
        3 => (0u16..4000).prop_map(Op::Advance),
        4 => any::<u8>().prop_map(Op::ConnectUp),
        1 => any::<u8>().prop_map(Op::ConnectFail),
        1 => any::<u8>().prop_map(Op::Lose),
        1 => Just(Op::Incoming),
        8 => (any::<u8>(), any::<u8>()).prop_map(|(a, m)| Op::Deliver(a, m)),
        3 => any::<u8>().prop_map(Op::Command),
    ]
}
