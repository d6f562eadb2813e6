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
