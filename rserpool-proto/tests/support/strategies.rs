//! proptest strategies producing canonical values of every parameter and message type:
//! values that the decoder returns unchanged after encoding (transports with the address
//! counts their protocol allows, zero fields for what a protocol does not carry, reserved
//! flag bits without the named bits, skipped parameters with skip-type codes at valid
//! positions).

use bytes::Bytes;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use rserpool_proto::asap::{self, AsapMessage};
use rserpool_proto::enrp::{self, EnrpMessage, UpdateAction};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{
    Cookie, ErrorCause, HandleResolutionOption, OperationError, Parameter, PeChecksum,
    PoolElementParameter, ServerInformation, SkippedParameter, UnknownParameter, cause, is_known,
};
use rserpool_proto::policy::{Policy, code};
use rserpool_proto::transport::{AddressList, TransportParameter, TransportProtocol};

/// Every policy type code the `Policy` enum knows.
pub const POLICY_CODES: [u32; 16] = [
    code::ROUND_ROBIN,
    code::WEIGHTED_ROUND_ROBIN,
    code::RANDOM,
    code::WEIGHTED_RANDOM,
    code::PRIORITY,
    code::LEAST_USED,
    code::LEAST_USED_DEGRADATION,
    code::PRIORITY_LEAST_USED,
    code::RANDOMIZED_LEAST_USED,
    code::RANDOMIZED_PRIORITY_LEAST_USED,
    code::RANDOMIZED_LEAST_USED_DEGRADATION,
    code::PRIORITY_LEAST_USED_DEGRADATION,
    code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
    code::WEIGHTED_RANDOM_DPF,
    code::LEAST_USED_DPF,
    code::LEAST_USED_DEGRADATION_DPF,
];

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

pub fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

pub fn policy() -> impl Strategy<Value = Policy> {
    (0..POLICY_CODES.len(), any::<[u32; 4]>())
        .prop_map(|(i, v)| Policy::from_type_and_values(POLICY_CODES[i], &v).unwrap())
}

pub fn transport() -> impl Strategy<Value = TransportParameter> {
    let addressed = (
        prop_oneof![
            Just(TransportProtocol::Sctp),
            Just(TransportProtocol::Tcp),
            Just(TransportProtocol::Udp),
            Just(TransportProtocol::UdpLite),
            Just(TransportProtocol::Dccp),
        ],
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        vec(ip(), 1..=4),
    )
        .prop_map(|(protocol, port, transport_use, sc, addrs)| {
            let n = if protocol == TransportProtocol::Sctp {
                addrs.len()
            } else {
                1
            };
            TransportParameter {
                protocol,
                port,
                transport_use,
                dccp_service_code: if protocol == TransportProtocol::Dccp {
                    sc
                } else {
                    0
                },
                addresses: addrs.into_iter().take(n).collect(),
                opaque: Bytes::new(),
            }
        });
    let opaque = bytes(24).prop_map(|opaque| TransportParameter {
        protocol: TransportProtocol::Opaque,
        port: 0,
        transport_use: 0,
        dccp_service_code: 0,
        addresses: AddressList::new(),
        opaque,
    });
    prop_oneof![4 => addressed, 1 => opaque]
}

pub fn sctp_transport() -> impl Strategy<Value = TransportParameter> {
    (any::<u16>(), any::<u16>(), vec(ip(), 1..=3))
        .prop_map(|(port, tu, a)| TransportParameter::sctp(port, tu, a))
}

pub fn pool_handle() -> impl Strategy<Value = PoolHandle> {
    bytes(40).prop_map(PoolHandle)
}

pub fn pe_id() -> impl Strategy<Value = PeIdentifier> {
    any::<u32>().prop_map(PeIdentifier)
}

pub fn server_id() -> impl Strategy<Value = ServerId> {
    any::<u32>().prop_map(ServerId)
}

pub fn pool_element() -> impl Strategy<Value = PoolElementParameter> {
    (
        pe_id(),
        server_id(),
        any::<u32>(),
        transport(),
        policy(),
        option::of(transport()),
    )
        .prop_map(
            |(pe_id, home_server_id, registration_life, user_transport, policy, asap_transport)| {
                PoolElementParameter {
                    pe_id,
                    home_server_id,
                    registration_life,
                    user_transport,
                    policy,
                    asap_transport,
                }
            },
        )
}

pub fn server_information() -> impl Strategy<Value = ServerInformation> {
    (server_id(), sctp_transport()).prop_map(|(server_id, transport)| ServerInformation {
        server_id,
        transport,
    })
}

pub fn error_cause() -> impl Strategy<Value = ErrorCause> {
    (
        prop_oneof![
            3 => (0..cause::ALL.len()).prop_map(|i| cause::ALL[i]),
            1 => any::<u16>(),
        ],
        bytes(24),
    )
        .prop_map(|(code, info)| ErrorCause { code, info })
}

pub fn operation_error() -> impl Strategy<Value = OperationError> {
    vec(error_cause(), 0..=3).prop_map(|causes| OperationError { causes })
}

/// A parameter type no decoder knows, with the given action bits.
pub fn unknown_type(action_bits: u16) -> impl Strategy<Value = u16> {
    (0u16..0x4000)
        .prop_map(move |t| t | (action_bits << 14))
        .prop_filter("known type", |t| !is_known(*t))
}

pub fn unknown_parameter() -> impl Strategy<Value = UnknownParameter> {
    (
        (0u16..4).prop_flat_map(unknown_type),
        vec(any::<u8>(), 0..12),
    )
        .prop_map(|(t, v)| UnknownParameter::new(t, &v))
}

/// An unknown parameter with a "skip" action (bit 0x8000).
pub fn skip_parameter() -> impl Strategy<Value = UnknownParameter> {
    (
        (2u16..4).prop_flat_map(unknown_type),
        vec(any::<u8>(), 0..12),
    )
        .prop_map(|(t, v)| UnknownParameter::new(t, &v))
}

pub fn parameter() -> impl Strategy<Value = Parameter> {
    prop_oneof![
        ip().prop_map(Parameter::Address),
        transport().prop_map(Parameter::Transport),
        policy().prop_map(Parameter::Policy),
        pool_handle().prop_map(Parameter::PoolHandle),
        pool_element().prop_map(Parameter::PoolElement),
        server_information().prop_map(Parameter::ServerInformation),
        operation_error().prop_map(Parameter::OperationError),
        bytes(30).prop_map(|b| Parameter::Cookie(Cookie(b))),
        pe_id().prop_map(Parameter::PeIdentifier),
        any::<u16>().prop_map(|c| Parameter::PeChecksum(PeChecksum(c))),
        any::<u32>().prop_map(|items| {
            Parameter::HandleResolutionOption(HandleResolutionOption { items })
        }),
        unknown_parameter().prop_map(Parameter::Unknown),
    ]
}

/// Skipped parameters at positions 0..=known, in position order.
fn skipped(known: usize) -> impl Strategy<Value = Vec<SkippedParameter>> {
    let known = u16::try_from(known).unwrap();
    vec((0..=known, skip_parameter()), 0..=2).prop_map(|mut v| {
        v.sort_by_key(|(p, _)| *p);
        v.into_iter()
            .map(|(position, parameter)| SkippedParameter {
                position,
                parameter,
            })
            .collect()
    })
}

/// Reserved flag bits without the named bits `mask`.
fn reserved(mask: u8) -> impl Strategy<Value = u8> {
    any::<u8>().prop_map(move |f| f & !mask)
}

/// Attaches skipped parameters and reserved flags to a message body.
fn finish<T: Clone + core::fmt::Debug>(
    s: impl Strategy<Value = T>,
    mask: u8,
    known: fn(&T) -> usize,
    set: fn(&mut T, u8, Vec<SkippedParameter>),
) -> impl Strategy<Value = T> {
    s.prop_flat_map(move |m| {
        let n = known(&m);
        (Just(m), reserved(mask), skipped(n)).prop_map(move |(mut m, f, sk)| {
            set(&mut m, f, sk);
            m
        })
    })
}

macro_rules! set {
    () => {
        |m, f, s| {
            m.reserved_flags = f;
            m.skipped = s;
        }
    };
}

pub fn asap_message() -> impl Strategy<Value = AsapMessage> {
    let pes = || vec(pool_element(), 0..=3);
    prop_oneof![
        finish(
            (pool_handle(), pool_element()).prop_map(|(h, p)| asap::Registration::new(h, p)),
            0,
            |_| 2,
            set!()
        )
        .prop_map(AsapMessage::Registration),
        finish(
            (pool_handle(), pe_id()).prop_map(|(h, i)| asap::Deregistration::new(h, i)),
            0,
            |_| 2,
            set!()
        )
        .prop_map(AsapMessage::Deregistration),
        finish(
            (
                any::<bool>(),
                pool_handle(),
                pe_id(),
                option::of(operation_error())
            )
                .prop_map(|(reject, pool_handle, pe_id, error)| {
                    asap::RegistrationResponse {
                        reject,
                        pool_handle,
                        pe_id,
                        error,
                        ..Default::default()
                    }
                }),
            1,
            |m| 2 + usize::from(m.error.is_some()),
            set!()
        )
        .prop_map(AsapMessage::RegistrationResponse),
        finish(
            (pool_handle(), pe_id(), option::of(operation_error())).prop_map(
                |(pool_handle, pe_id, error)| asap::DeregistrationResponse {
                    pool_handle,
                    pe_id,
                    error,
                    ..Default::default()
                }
            ),
            0,
            |m| 2 + usize::from(m.error.is_some()),
            set!()
        )
        .prop_map(AsapMessage::DeregistrationResponse),
        finish(
            (any::<bool>(), pool_handle(), option::of(any::<u32>())).prop_map(
                |(subscribe, pool_handle, items)| asap::HandleResolution {
                    subscribe,
                    pool_handle,
                    option: items.map(|items| HandleResolutionOption { items }),
                    ..Default::default()
                }
            ),
            1,
            |m| 1 + usize::from(m.option.is_some()),
            set!()
        )
        .prop_map(AsapMessage::HandleResolution),
        finish(
            (
                any::<bool>(),
                pool_handle(),
                option::of(policy()),
                pes(),
                option::of(operation_error())
            )
                .prop_map(|(a, pool_handle, policy, pool_elements, error)| {
                    asap::HandleResolutionResponse {
                        accept_subscription: a,
                        pool_handle,
                        policy,
                        pool_elements,
                        error,
                        ..Default::default()
                    }
                }),
            1,
            |m| 1
                + usize::from(m.policy.is_some())
                + m.pool_elements.len()
                + usize::from(m.error.is_some()),
            set!()
        )
        .prop_map(AsapMessage::HandleResolutionResponse),
        finish(
            (
                any::<bool>(),
                server_id(),
                pool_handle(),
                option::of(pe_id())
            )
                .prop_map(|(home, server_id, pool_handle, pe_id)| {
                    asap::EndpointKeepAlive {
                        home,
                        server_id,
                        pool_handle,
                        pe_id,
                        ..Default::default()
                    }
                }),
            1,
            |m| 1 + usize::from(m.pe_id.is_some()),
            set!()
        )
        .prop_map(AsapMessage::EndpointKeepAlive),
        finish(
            (pool_handle(), pe_id()).prop_map(|(h, i)| asap::EndpointKeepAliveAck::new(h, i)),
            0,
            |_| 2,
            set!()
        )
        .prop_map(AsapMessage::EndpointKeepAliveAck),
        finish(
            (pool_handle(), pe_id()).prop_map(|(h, i)| asap::EndpointUnreachable::new(h, i)),
            0,
            |_| 2,
            set!()
        )
        .prop_map(AsapMessage::EndpointUnreachable),
        finish(
            (
                server_id(),
                vec(transport(), 0..=3),
                option::of(server_information())
            )
                .prop_map(|(server_id, transports, server_information)| {
                    asap::ServerAnnounce {
                        server_id,
                        transports,
                        server_information,
                        ..Default::default()
                    }
                }),
            0,
            |m| m.transports.len() + usize::from(m.server_information.is_some()),
            set!()
        )
        .prop_map(AsapMessage::ServerAnnounce),
        finish(
            bytes(40).prop_map(asap::CookieMessage::new),
            0,
            |_| 1,
            set!()
        )
        .prop_map(AsapMessage::Cookie),
        finish(bytes(40).prop_map(asap::CookieEcho::new), 0, |_| 1, set!())
            .prop_map(AsapMessage::CookieEcho),
        finish(
            (pool_handle(), option::of(policy()), pes()).prop_map(
                |(pool_handle, policy, pool_elements)| asap::BusinessCard {
                    pool_handle,
                    policy,
                    pool_elements,
                    ..Default::default()
                }
            ),
            0,
            |m| 1 + usize::from(m.policy.is_some()) + m.pool_elements.len(),
            set!()
        )
        .prop_map(AsapMessage::BusinessCard),
        finish(
            operation_error().prop_map(|error| asap::AsapError {
                error,
                ..Default::default()
            }),
            0,
            |_| 1,
            set!()
        )
        .prop_map(AsapMessage::Error),
    ]
}

pub fn handle_table_entry() -> impl Strategy<Value = enrp::HandleTableEntry> {
    (pool_handle(), vec(pool_element(), 1..=3)).prop_map(|(pool_handle, pool_elements)| {
        enrp::HandleTableEntry {
            pool_handle,
            pool_elements,
        }
    })
}

pub fn enrp_message() -> impl Strategy<Value = EnrpMessage> {
    let ids = || (server_id(), server_id());
    prop_oneof![
        finish(
            (
                any::<bool>(),
                ids(),
                option::of(any::<u16>().prop_map(PeChecksum)),
                option::of(server_information())
            )
                .prop_map(|(r, (sender, receiver), checksum, server_information)| {
                    enrp::Presence {
                        reply_required: r,
                        sender,
                        receiver,
                        checksum,
                        server_information,
                        ..Default::default()
                    }
                }),
            1,
            |m| usize::from(m.checksum.is_some()) + usize::from(m.server_information.is_some()),
            set!()
        )
        .prop_map(EnrpMessage::Presence),
        finish(
            (any::<bool>(), ids()).prop_map(|(w, (sender, receiver))| {
                enrp::HandleTableRequest {
                    own_children_only: w,
                    sender,
                    receiver,
                    ..Default::default()
                }
            }),
            1,
            |_| 0,
            set!()
        )
        .prop_map(EnrpMessage::HandleTableRequest),
        finish(
            (
                any::<bool>(),
                any::<bool>(),
                ids(),
                vec(handle_table_entry(), 0..=3)
            )
                .prop_map(|(reject, more, (sender, receiver), entries)| {
                    enrp::HandleTableResponse {
                        reject,
                        more,
                        sender,
                        receiver,
                        entries,
                        ..Default::default()
                    }
                }),
            3,
            |m| m.entries.iter().map(|e| 1 + e.pool_elements.len()).sum(),
            set!()
        )
        .prop_map(EnrpMessage::HandleTableResponse),
        finish(
            (
                any::<bool>(),
                ids(),
                prop_oneof![
                    Just(UpdateAction::ADD_PE),
                    Just(UpdateAction::DEL_PE),
                    any::<u16>().prop_map(UpdateAction)
                ],
                any::<u16>(),
                pool_handle(),
                pool_element()
            )
                .prop_map(|(t, (sender, receiver), action, reserved, h, pe)| {
                    let mut m = enrp::HandleUpdate::new(sender, receiver, action, h, pe);
                    m.takeover_suggested = t;
                    m.reserved = reserved;
                    m
                }),
            1,
            |_| 2,
            set!()
        )
        .prop_map(EnrpMessage::HandleUpdate),
        finish(
            ids().prop_map(|(sender, receiver)| enrp::ListRequest {
                sender,
                receiver,
                ..Default::default()
            }),
            0,
            |_| 0,
            set!()
        )
        .prop_map(EnrpMessage::ListRequest),
        finish(
            (any::<bool>(), ids(), vec(server_information(), 0..=3)).prop_map(
                |(reject, (sender, receiver), servers)| enrp::ListResponse {
                    reject,
                    sender,
                    receiver,
                    servers,
                    ..Default::default()
                }
            ),
            1,
            |m| m.servers.len(),
            set!()
        )
        .prop_map(EnrpMessage::ListResponse),
        finish(
            (ids(), server_id()).prop_map(|((s, r), t)| enrp::InitTakeover::new(s, r, t)),
            0,
            |_| 0,
            set!()
        )
        .prop_map(EnrpMessage::InitTakeover),
        finish(
            (ids(), server_id()).prop_map(|((s, r), t)| enrp::InitTakeoverAck::new(s, r, t)),
            0,
            |_| 0,
            set!()
        )
        .prop_map(EnrpMessage::InitTakeoverAck),
        finish(
            (ids(), server_id()).prop_map(|((s, r), t)| enrp::TakeoverServer::new(s, r, t)),
            0,
            |_| 0,
            set!()
        )
        .prop_map(EnrpMessage::TakeoverServer),
        finish(
            (ids(), operation_error()).prop_map(|((sender, receiver), error)| enrp::EnrpError {
                sender,
                receiver,
                error,
                ..Default::default()
            }),
            0,
            |_| 1,
            set!()
        )
        .prop_map(EnrpMessage::Error),
    ]
}
