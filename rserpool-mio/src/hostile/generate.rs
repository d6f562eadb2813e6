//! The message sets of classes a, b, c, d and f (class e, the floods, are procedures of the
//! runner: [`super::suite`]). Everything is a pure function of the [`Context`]: the same
//! seed, vectors and addresses give the same cases in the same order.

use bytes::Bytes;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand_core::Rng;
use rserpool_core::Protocol;
use rserpool_core::handlespace::ChecksumAccumulator;
use rserpool_core::registrar::fuzzing::SplitMix64;
use rserpool_proto::asap::{
    AsapError, BusinessCard, CookieEcho, CookieMessage, Deregistration, EndpointKeepAlive,
    EndpointKeepAliveAck, EndpointUnreachable, HandleResolution, HandleResolutionResponse,
    Registration, RegistrationResponse, ServerAnnounce,
};
use rserpool_proto::enrp::{
    EnrpError, HandleTableEntry, HandleTableRequest, HandleTableResponse, HandleUpdate,
    InitTakeover, InitTakeoverAck, ListRequest, ListResponse, Presence, TakeoverServer,
    UpdateAction,
};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{
    ErrorCause, HandleResolutionOption, OperationError, PeChecksum, PoolElementParameter,
    ServerInformation, cause,
};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{
    TRANSPORT_USE_DATA_ONLY, TRANSPORT_USE_DATA_PLUS_CONTROL, TransportParameter, TransportProtocol,
};
use rserpool_proto::{AsapMessage, EnrpMessage};

use super::wire::{self, Vector, addr_tlv, cat, message, pe_tlv, ph_tlv, policy_tlv, tlv};
use super::{Case, Class, Reply, Sender};

/// Pool of the attacker's own (valid) registrations in classes a and f.
pub const SCRATCH_POOL: &[u8] = b"hx-scratch";
/// Registration life the suite's own registrations use (ms, RSPLIB unit).
pub const LIFE: u32 = 300_000;

/// What the generators need to know about the scene.
#[derive(Clone, Debug)]
pub struct Context {
    /// Seed of the pseudo-random choices (mutations, identifiers).
    pub seed: u64,
    /// The legitimate PE's pool.
    pub legit_pool: Bytes,
    /// The legitimate PE's identifier.
    pub legit_pe_id: u32,
    /// The legitimate PE's user transport as registered.
    pub legit_transport: TransportParameter,
    /// The attacker's address as the registrar sees its associations.
    pub own_ip: IpAddr,
    /// A port the attacker names in its own registrations.
    pub own_port: u16,
    /// The registrar's server identifier, if known (else [`ServerId::NONE`]).
    pub registrar_id: ServerId,
    /// The legitimate peer's server identifier.
    pub peer_id: ServerId,
    /// The stranger's server identifier (never announced).
    pub stranger_id: ServerId,
    /// The announcing stranger's server identifier.
    pub announcer_id: ServerId,
    /// The ENRP transport the announcing stranger claims.
    pub announcer_transport: TransportParameter,
    /// The RSPLIB capture vectors.
    pub vectors: Vec<Vector>,
    /// Number of class f mutations.
    pub mutations: usize,
}

impl Context {
    /// The transport protocol of the legitimate pool (SCTP or TCP).
    pub fn user_protocol(&self) -> TransportProtocol {
        self.legit_transport.protocol
    }

    /// A valid user transport of the attacker (the pool's protocol, data + control).
    pub fn own_transport(&self) -> TransportParameter {
        TransportParameter::with(
            self.user_protocol(),
            self.own_port,
            TRANSPORT_USE_DATA_PLUS_CONTROL,
            [self.own_ip],
        )
    }

    fn legit_handle(&self) -> PoolHandle {
        PoolHandle::new(self.legit_pool.clone())
    }

    /// A Pool Element parameter of the attacker with this identifier and policy.
    pub fn own_pe(&self, id: u32, policy: Policy) -> PoolElementParameter {
        PoolElementParameter {
            pe_id: PeIdentifier(id),
            home_server_id: ServerId::NONE,
            registration_life: LIFE,
            user_transport: self.own_transport(),
            policy,
            asap_transport: None,
        }
    }

    /// A valid registration of the attacker's own PE.
    pub fn own_registration(&self, pool: &[u8], id: u32, policy: Policy) -> Bytes {
        AsapMessage::Registration(Registration::new(
            PoolHandle::new(Bytes::copy_from_slice(pool)),
            self.own_pe(id, policy),
        ))
        .to_bytes()
    }

    fn own_tlv_transport(&self, port: u16, transport_use: u16, addrs: &[Vec<u8>]) -> Vec<u8> {
        wire::transport_tlv(
            self.user_protocol().parameter_type(),
            port,
            transport_use,
            addrs,
        )
    }

    /// A PE as a registrar announces it over ENRP (with ASAP transport).
    fn enrp_pe(&self, id: u32, home: ServerId, user: TransportParameter) -> PoolElementParameter {
        PoolElementParameter {
            pe_id: PeIdentifier(id),
            home_server_id: home,
            registration_life: LIFE,
            asap_transport: Some(TransportParameter::with(
                user.protocol,
                user.port.wrapping_add(1).max(1),
                TRANSPORT_USE_DATA_ONLY,
                user.addresses.iter().copied(),
            )),
            user_transport: user,
            policy: Policy::RoundRobin,
        }
    }
}

/// A valid message the mutating classes start from.
#[derive(Clone, Debug)]
pub struct Seed {
    /// Where it comes from (`rsplib:<file>` or `own:<what>`).
    pub name: String,
    /// ASAP or ENRP.
    pub protocol: Protocol,
    /// The message.
    pub data: Bytes,
}

fn sender_for(p: Protocol) -> Sender {
    match p {
        Protocol::Asap => Sender::Asap,
        Protocol::Enrp => Sender::Stranger,
    }
}

/// The seeds: every capture vector, then our own encodings of every ASAP and ENRP message
/// type (pool [`SCRATCH_POOL`], the attacker's addresses, the stranger's identifier).
pub fn seeds(ctx: &Context) -> Vec<Seed> {
    let mut out: Vec<Seed> = ctx
        .vectors
        .iter()
        .map(|v| Seed {
            name: format!("rsplib:{}", v.name),
            protocol: v.protocol,
            data: v.data.clone(),
        })
        .collect();
    let ph = PoolHandle::new(Bytes::from_static(SCRATCH_POOL));
    let id = 0x0a00_0001;
    let mut asap = |name: &str, m: AsapMessage| {
        out.push(Seed {
            name: format!("own:{name}"),
            protocol: Protocol::Asap,
            data: m.to_bytes(),
        })
    };
    let policies = [
        Policy::RoundRobin,
        Policy::WeightedRoundRobin { weight: 5 },
        Policy::LeastUsed { load: 7 },
        Policy::LeastUsedDegradation {
            load: 1,
            degradation: 2,
        },
        Policy::Priority { priority: 3 },
        Policy::WeightedRandomDpf {
            weight: 1,
            weight_dpf: 2,
            distance: 3,
        },
    ];
    for (i, p) in policies.iter().enumerate() {
        asap(
            &format!("registration-{}", p.name()),
            AsapMessage::Registration(Registration::new(ph.clone(), ctx.own_pe(id + i as u32, *p))),
        );
    }
    let mut multi = ctx.own_pe(id, Policy::RoundRobin);
    multi
        .user_transport
        .addresses
        .push(IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 0x12)));
    asap(
        "registration-two-addresses",
        AsapMessage::Registration(Registration::new(ph.clone(), multi)),
    );
    asap(
        "deregistration",
        AsapMessage::Deregistration(Deregistration::new(ph.clone(), PeIdentifier(id))),
    );
    asap(
        "handle-resolution",
        AsapMessage::HandleResolution(HandleResolution {
            pool_handle: ph.clone(),
            option: Some(HandleResolutionOption { items: 5 }),
            ..Default::default()
        }),
    );
    asap(
        "keep-alive-ack",
        AsapMessage::EndpointKeepAliveAck(EndpointKeepAliveAck::new(ph.clone(), PeIdentifier(id))),
    );
    asap(
        "endpoint-unreachable",
        AsapMessage::EndpointUnreachable(EndpointUnreachable::new(ph.clone(), PeIdentifier(id))),
    );
    asap(
        "keep-alive",
        AsapMessage::EndpointKeepAlive(EndpointKeepAlive {
            home: true,
            server_id: ServerId(0x0102_0304),
            pool_handle: ph.clone(),
            pe_id: Some(PeIdentifier(id)),
            ..Default::default()
        }),
    );
    asap(
        "server-announce",
        AsapMessage::ServerAnnounce(ServerAnnounce {
            server_id: ServerId(0x0102_0304),
            transports: vec![TransportParameter::sctp(3863, 0, [ctx.own_ip])],
            ..Default::default()
        }),
    );
    asap(
        "cookie",
        AsapMessage::Cookie(CookieMessage::new(&b"cookie-data"[..])),
    );
    asap(
        "cookie-echo",
        AsapMessage::CookieEcho(CookieEcho::new(&b"cookie-data"[..])),
    );
    asap(
        "business-card",
        AsapMessage::BusinessCard(BusinessCard {
            pool_handle: ph.clone(),
            pool_elements: vec![ctx.own_pe(id, Policy::RoundRobin)],
            ..Default::default()
        }),
    );
    asap(
        "error",
        AsapMessage::Error(AsapError {
            reserved_flags: 0,
            error: OperationError::new(ErrorCause::new(
                cause::UNRECOGNIZED_PARAMETER,
                Bytes::from(tlv(0x4fff, &[0, 0, 0, 0])),
            )),
            skipped: Vec::new(),
        }),
    );
    asap(
        "registration-response",
        AsapMessage::RegistrationResponse(RegistrationResponse {
            reject: true,
            pool_handle: ph.clone(),
            pe_id: PeIdentifier(id),
            error: Some(OperationError::new(ErrorCause::new(
                cause::LACK_OF_RESOURCES,
                Bytes::new(),
            ))),
            ..Default::default()
        }),
    );
    asap(
        "handle-resolution-response",
        AsapMessage::HandleResolutionResponse(HandleResolutionResponse {
            pool_handle: ph.clone(),
            policy: Some(Policy::RoundRobin),
            pool_elements: vec![ctx.enrp_pe(id, ServerId(0x0102_0304), ctx.own_transport())],
            ..Default::default()
        }),
    );
    let s = ctx.stranger_id;
    let other = ServerId(0x7777_7777);
    let mut enrp = |name: &str, m: EnrpMessage| {
        out.push(Seed {
            name: format!("own:{name}"),
            protocol: Protocol::Enrp,
            data: m.to_bytes(),
        })
    };
    enrp(
        "presence",
        EnrpMessage::Presence(Presence {
            reply_required: true,
            reserved_flags: 0,
            sender: s,
            receiver: ServerId::NONE,
            checksum: Some(PeChecksum(0x1234)),
            server_information: Some(ServerInformation {
                server_id: s,
                transport: TransportParameter::sctp(9901, 0, [ctx.own_ip]),
            }),
            skipped: Vec::new(),
        }),
    );
    for w in [false, true] {
        enrp(
            &format!("handle-table-request-w{}", u8::from(w)),
            EnrpMessage::HandleTableRequest(HandleTableRequest {
                own_children_only: w,
                reserved_flags: 0,
                sender: s,
                receiver: ServerId::NONE,
                skipped: Vec::new(),
            }),
        );
    }
    enrp(
        "handle-table-response",
        EnrpMessage::HandleTableResponse(HandleTableResponse {
            more: true,
            sender: s,
            entries: vec![
                HandleTableEntry {
                    pool_handle: ph.clone(),
                    pool_elements: vec![
                        ctx.enrp_pe(id, s, ctx.own_transport()),
                        ctx.enrp_pe(id + 1, s, ctx.own_transport()),
                    ],
                },
                HandleTableEntry {
                    pool_handle: PoolHandle::new(Bytes::from_static(b"hx-scratch-2")),
                    pool_elements: vec![ctx.enrp_pe(id + 2, s, ctx.own_transport())],
                },
            ],
            ..Default::default()
        }),
    );
    for (name, action) in [("add", UpdateAction::ADD_PE), ("del", UpdateAction::DEL_PE)] {
        enrp(
            &format!("handle-update-{name}"),
            EnrpMessage::HandleUpdate(HandleUpdate::new(
                s,
                ServerId::NONE,
                action,
                ph.clone(),
                ctx.enrp_pe(id, s, ctx.own_transport()),
            )),
        );
    }
    enrp(
        "list-request",
        EnrpMessage::ListRequest(ListRequest {
            reserved_flags: 0,
            sender: s,
            receiver: ServerId::NONE,
            skipped: Vec::new(),
        }),
    );
    enrp(
        "list-response",
        EnrpMessage::ListResponse(ListResponse {
            reject: false,
            reserved_flags: 0,
            sender: s,
            receiver: ServerId::NONE,
            servers: vec![
                ServerInformation {
                    server_id: other,
                    transport: TransportParameter::sctp(9901, 0, [ctx.own_ip]),
                },
                ServerInformation {
                    server_id: ServerId(0x7777_7778),
                    transport: TransportParameter::sctp(
                        9902,
                        0,
                        [ctx.own_ip, IpAddr::V6(Ipv6Addr::LOCALHOST)],
                    ),
                },
            ],
            skipped: Vec::new(),
        }),
    );
    enrp(
        "init-takeover",
        EnrpMessage::InitTakeover(InitTakeover::new(s, ServerId::NONE, other)),
    );
    enrp(
        "init-takeover-ack",
        EnrpMessage::InitTakeoverAck(InitTakeoverAck::new(s, ServerId::NONE, other)),
    );
    enrp(
        "takeover-server",
        EnrpMessage::TakeoverServer(TakeoverServer::new(s, ServerId::NONE, other)),
    );
    enrp(
        "error",
        EnrpMessage::Error(EnrpError {
            reserved_flags: 0,
            sender: s,
            receiver: ServerId::NONE,
            error: OperationError::new(ErrorCause::new(cause::INVALID_VALUES, Bytes::new())),
            skipped: Vec::new(),
        }),
    );
    out
}

/// Collects cases, dropping byte-identical duplicates.
struct Dedup {
    seen: HashSet<Bytes>,
    out: Vec<Case>,
}

impl Dedup {
    fn new() -> Self {
        Dedup {
            seen: HashSet::new(),
            out: Vec::new(),
        }
    }

    fn push(&mut self, class: Class, name: String, protocol: Protocol, data: Vec<u8>) {
        let data = Bytes::from(data);
        if self.seen.insert(data.clone()) {
            self.out
                .push(Case::new(class, name, sender_for(protocol), data));
        }
    }
}

/// Class a: for every seed, at the message level and at every TLV of every nesting level:
/// cuts (at the TLV's start, inside its header, after its header, before its last byte;
/// each with the lengths left lying, with the message length fixed, and with every
/// enclosing length fixed), length lies (0, 1, 3, 4, len-1, len+1, len+4, 0xffff), a
/// value one byte short (the last byte left as padding), four bytes short and four bytes
/// long with every enclosing length fixed; at the message level also lying message
/// lengths and trailing junk.
pub fn truncations(ctx: &Context) -> Vec<Case> {
    let mut d = Dedup::new();
    let class = Class::Truncation;
    for seed in seeds(ctx) {
        let m = seed.data.to_vec();
        let p = seed.protocol;
        let n = m.len();
        let declared = usize::from(wire::get_u16(&m, 2).unwrap_or(0));
        // Message level.
        for cut in [0usize, 1, 2, 3, 4] {
            if cut < n {
                d.push(
                    class,
                    format!("{}:cut@{cut}", seed.name),
                    p,
                    m[..cut].to_vec(),
                );
            }
        }
        for lie in lies(declared) {
            let mut v = m.clone();
            wire::set_u16(&mut v, 2, lie);
            d.push(class, format!("{}:msglen={lie}", seed.name), p, v);
        }
        for junk in [1usize, 3, 4, 8] {
            let mut v = m.clone();
            v.extend(std::iter::repeat_n(0xa5, junk));
            d.push(class, format!("{}:junk+{junk}", seed.name), p, v.clone());
            let total = v.len().min(0xffff) as u16;
            wire::set_u16(&mut v, 2, total);
            d.push(class, format!("{}:junk+{junk}:counted", seed.name), p, v);
        }
        // Every TLV at every level.
        let nodes = wire::walk(p, &m);
        for (i, node) in nodes.iter().enumerate() {
            let tag = format!("{}:tlv{i}({:#06x},d{})", seed.name, node.ty, node.depth);
            let chain = wire::ancestors(&nodes, i);
            let cuts = [
                node.start,
                node.start + 2,
                node.start + 4,
                node.start + node.len.saturating_sub(1),
            ];
            for (k, &cut) in cuts.iter().enumerate() {
                if cut == 0 || cut >= n || (k == 3 && node.len <= 4) {
                    continue;
                }
                let raw = m[..cut].to_vec();
                d.push(class, format!("{tag}:cut{k}"), p, raw.clone());
                let mut fixed = raw.clone();
                wire::set_u16(&mut fixed, 2, cut as u16);
                d.push(class, format!("{tag}:cut{k}:msg-fixed"), p, fixed.clone());
                for &a in &chain {
                    let an = nodes[a];
                    wire::set_u16(&mut fixed, an.start + 2, (cut - an.start) as u16);
                }
                d.push(class, format!("{tag}:cut{k}:all-fixed"), p, fixed);
            }
            for lie in lies(node.len) {
                let mut v = m.clone();
                wire::set_u16(&mut v, node.start + 2, lie);
                d.push(class, format!("{tag}:len={lie}"), p, v);
            }
            if node.len > 4 {
                let mut v = m.clone();
                wire::set_u16(&mut v, node.start + 2, (node.len - 1) as u16);
                d.push(class, format!("{tag}:short1"), p, v);
            }
            let end = node.start + node.len;
            if node.len >= 8 && end <= n {
                let mut v = m.clone();
                v.drain(end - 4..end);
                fix_chain(&mut v, &nodes, i, &chain, -4);
                d.push(class, format!("{tag}:short4"), p, v);
            }
            if end <= n {
                let mut v = m.clone();
                for _ in 0..4 {
                    v.insert(end, 0);
                }
                fix_chain(&mut v, &nodes, i, &chain, 4);
                d.push(class, format!("{tag}:long4"), p, v);
            }
        }
    }
    d.out
}

/// Adds `delta` to the length of node `i`, of its ancestors and of the message.
fn fix_chain(v: &mut [u8], nodes: &[wire::Node], i: usize, chain: &[usize], delta: isize) {
    wire::adjust_u16(v, nodes[i].start + 2, delta);
    for &a in chain {
        wire::adjust_u16(v, nodes[a].start + 2, delta);
    }
    wire::adjust_u16(v, 2, delta);
}

fn lies(len: usize) -> Vec<u16> {
    let mut v: Vec<u16> = [
        0usize,
        1,
        3,
        4,
        len.saturating_sub(1),
        len + 1,
        len + 4,
        0xffff,
    ]
    .into_iter()
    .filter(|&x| x != len)
    .map(|x| x.min(0xffff) as u16)
    .collect();
    v.dedup();
    v
}

/// The four action-bit combinations: prefix, name.
const ACTIONS: [(u16, &str); 4] = [
    (0x0000, "00-stop"),
    (0x4000, "01-stop-report"),
    (0x8000, "10-skip"),
    (0xc000, "11-skip-report"),
];

/// What an RFC 5354 receiver does with an unknown parameter with these action bits in a
/// request whose own answer is `ok`: 00 nothing, 01 an Error with "Unrecognized Parameter",
/// 10 the normal answer, 11 the normal answer and the Error.
fn unknown_parameter_reaction(bits: u16, ok: Reply, error: Reply) -> Vec<Reply> {
    match bits >> 14 {
        0 => vec![],
        1 => vec![error],
        2 => vec![ok],
        _ => vec![ok, error],
    }
}

/// The same for a List Request from a server that is not a peer: whether it gets the list
/// or a reject is the registrar's policy (ours rejects), only the action bits are fixed.
fn list_request_reaction(bits: u16) -> Vec<Vec<Reply>> {
    let error = Reply::EnrpError(cause::UNRECOGNIZED_PARAMETER);
    [true, false]
        .into_iter()
        .map(|reject| unknown_parameter_reaction(bits, Reply::ListResponse(reject), error))
        .collect()
}

/// Class b: unknown parameters with the four action-bit combinations at several places of
/// Handle Resolutions, Registrations (top level, inside the Pool Element, inside the
/// transport) and ENRP List Requests; unknown message types with each action-bit pattern;
/// undefined flags; the wrong PPID for the association.
pub fn unknowns(ctx: &Context) -> Vec<Case> {
    let class = Class::Unknown;
    let mut out = Vec::new();
    let legit = ph_tlv(&ctx.legit_pool);
    let unrec = Reply::AsapError(cause::UNRECOGNIZED_PARAMETER);
    for (k, (bits, bname)) in ACTIONS.iter().enumerate() {
        let unknown = tlv(bits | 0x0123, &[0xde, 0xad, 0xbe, 0xef]);
        // Handle Resolution of the legitimate pool: unknown parameter last, then first.
        let hr_last = message(0x05, 0, &cat(&[&legit, &unknown]));
        out.push(
            Case::new(
                class,
                format!("asap:handle-resolution:param-last:{bname}"),
                Sender::Asap,
                hr_last,
            )
            .expect(&unknown_parameter_reaction(
                *bits,
                Reply::ResolutionOk,
                unrec,
            )),
        );
        let hr_first = message(0x05, 0, &cat(&[&unknown, &legit]));
        out.push(
            Case::new(
                class,
                format!("asap:handle-resolution:param-first:{bname}"),
                Sender::Asap,
                hr_first,
            )
            .expect(&unknown_parameter_reaction(
                *bits,
                Reply::ResolutionOk,
                unrec,
            )),
        );
        // Registrations of the attacker's own PE in its own pool (one pool per case, so a
        // skipped parameter leaves a valid registration).
        let own_addr = addr_tlv(ctx.own_ip);
        let ut = ctx.own_tlv_transport(
            ctx.own_port,
            TRANSPORT_USE_DATA_PLUS_CONTROL,
            std::slice::from_ref(&own_addr),
        );
        let pol = policy_tlv(1, &[]);
        let places: [(&str, Vec<u8>); 3] = [
            ("top", {
                let pe = pe_tlv(0x0b00_0001 + k as u32, 0, LIFE, &[ut.clone(), pol.clone()]);
                cat(&[&ph_tlv(format!("hx-b-top-{k}").as_bytes()), &pe, &unknown])
            }),
            ("in-pe", {
                let pe = pe_tlv(
                    0x0b00_0011 + k as u32,
                    0,
                    LIFE,
                    &[ut.clone(), pol.clone(), unknown.clone()],
                );
                cat(&[&ph_tlv(format!("hx-b-pe-{k}").as_bytes()), &pe])
            }),
            ("in-transport", {
                let ut2 = ctx.own_tlv_transport(
                    ctx.own_port,
                    TRANSPORT_USE_DATA_PLUS_CONTROL,
                    &[own_addr.clone(), unknown.clone()],
                );
                let pe = pe_tlv(0x0b00_0021 + k as u32, 0, LIFE, &[ut2, pol.clone()]);
                cat(&[&ph_tlv(format!("hx-b-tr-{k}").as_bytes()), &pe])
            }),
        ];
        for (place, body) in places {
            out.push(
                Case::new(
                    class,
                    format!("asap:registration:param-{place}:{bname}"),
                    Sender::Asap,
                    message(0x01, 0, &body),
                )
                .expect(&unknown_parameter_reaction(
                    *bits,
                    Reply::RegistrationOk,
                    unrec,
                )),
            );
        }
        // ENRP from the stranger: a List Request (answered with a reject: not a peer).
        let mut ids = ctx.stranger_id.0.to_be_bytes().to_vec();
        ids.extend_from_slice(&0u32.to_be_bytes());
        out.push(
            Case::new(
                class,
                format!("enrp:list-request:param:{bname}"),
                Sender::Stranger,
                message(0x05, 0, &cat(&[&ids, &unknown])),
            )
            .expect_any(
                &list_request_reaction(*bits)
                    .iter()
                    .map(Vec::as_slice)
                    .collect::<Vec<_>>(),
            ),
        );
    }
    // Unknown message types: 01 is reported with "Unrecognized Message", everything else
    // (00, and the reserved 10 / 11) is dropped silently.
    for ty in [0x0fu8, 0x4f, 0x8f, 0xcf, 0x3f, 0x7f, 0xbf, 0xff, 0x00, 0x40] {
        let expect = if ty & 0xc0 == 0x40 {
            vec![Reply::AsapError(cause::UNRECOGNIZED_MESSAGE)]
        } else {
            vec![]
        };
        out.push(
            Case::new(
                class,
                format!("asap:type-{ty:#04x}"),
                Sender::Asap,
                message(ty, 0, &legit),
            )
            .expect(&expect),
        );
    }
    let mut ids = ctx.stranger_id.0.to_be_bytes().to_vec();
    ids.extend_from_slice(&0u32.to_be_bytes());
    for ty in [0x0bu8, 0x4b, 0x8b, 0xcb, 0x3e, 0x7e, 0xbe, 0xfe, 0x00, 0x40] {
        let expect = if ty & 0xc0 == 0x40 {
            vec![Reply::EnrpError(cause::UNRECOGNIZED_MESSAGE)]
        } else {
            vec![]
        };
        out.push(
            Case::new(
                class,
                format!("enrp:type-{ty:#04x}"),
                Sender::Stranger,
                message(ty, 0, &ids),
            )
            .expect(&expect),
        );
    }
    // Undefined flags are ignored.
    out.push(
        Case::new(
            class,
            "asap:handle-resolution:flags-0xfe",
            Sender::Asap,
            message(0x05, 0xfe, &legit),
        )
        .expect(&[Reply::ResolutionOk]),
    );
    out.push(
        Case::new(
            class,
            "enrp:list-request:flags-0xff",
            Sender::Stranger,
            message(0x05, 0xff, &ids),
        )
        .expect_any(&[&[Reply::ListResponse(true)], &[Reply::ListResponse(false)]]),
    );
    // Wrong PPIDs: ignored (RSPLIB aborts the association).
    let hr = message(0x05, 0, &legit);
    let mut c = Case::new(class, "ppid:asap-with-ppid-99", Sender::Asap, hr.clone()).expect(&[]);
    c.ppid = 99;
    out.push(c);
    let mut c = Case::new(class, "ppid:asap-with-ppid-12", Sender::Asap, hr.clone()).expect(&[]);
    c.ppid = 12;
    out.push(c);
    let presence = EnrpMessage::Presence(Presence {
        reply_required: true,
        reserved_flags: 0,
        sender: ctx.stranger_id,
        receiver: ServerId::NONE,
        checksum: Some(PeChecksum(0)),
        server_information: Some(ServerInformation {
            server_id: ctx.stranger_id,
            transport: TransportParameter::sctp(9901, 0, [ctx.own_ip]),
        }),
        skipped: Vec::new(),
    })
    .to_bytes();
    let mut c = Case::new(class, "ppid:enrp-presence-on-asap", Sender::Asap, presence).expect(&[]);
    c.ppid = 12;
    out.push(c);
    let mut c = Case::new(class, "ppid:asap-on-enrp", Sender::Stranger, hr).expect(&[]);
    c.ppid = 11;
    out.push(c);
    out
}

/// "Invalid Values" in a rejecting Registration Response.
const INVALID: Reply = Reply::RegistrationReject(Some(cause::INVALID_VALUES));

/// Class c: registrations a registrar must refuse, each with the RFC 5354 cause: pool handle
/// missing, empty, 33, 255 and 1,000 bytes; Pool Element missing or twice; transports
/// without addresses, with malformed, foreign, unusable or too many addresses, port 0,
/// Opaque; unknown or malformed policies; life 0; PE identifier 0; policy, transport and
/// data/control mismatches with the legitimate pool.
pub fn invalid_registrations(ctx: &Context) -> Vec<Case> {
    let class = Class::InvalidRegistration;
    let mut out = Vec::new();
    let own = addr_tlv(ctx.own_ip);
    let ut_ok = ctx.own_tlv_transport(
        ctx.own_port,
        TRANSPORT_USE_DATA_PLUS_CONTROL,
        std::slice::from_ref(&own),
    );
    let rr = policy_tlv(1, &[]);
    let mut n = 0u32;
    let mut id = || {
        n += 1;
        0x0c00_0000 + n
    };
    let pe_ok = |id: u32| pe_tlv(id, 0, LIFE, &[ut_ok.clone(), rr.clone()]);
    let reg = |body: Vec<u8>| message(0x01, 0, &body);
    let mut push = |name: &str, data: Bytes, expect: Reply| {
        out.push(
            Case::new(class, format!("registration:{name}"), Sender::Asap, data).expect(&[expect]),
        );
    };
    let hx = |s: &str| ph_tlv(format!("hx-c-{s}").as_bytes());

    // Pool handle.
    push(
        "pool-handle-missing",
        reg(pe_ok(id())),
        Reply::AsapError(cause::INVALID_VALUES),
    );
    push(
        "pool-handle-empty",
        reg(cat(&[&ph_tlv(b""), &pe_ok(id())])),
        INVALID,
    );
    for len in [33usize, 255, 1000] {
        let h = vec![b'h'; len];
        push(
            &format!("pool-handle-{len}-bytes"),
            reg(cat(&[&ph_tlv(&h), &pe_ok(id())])),
            INVALID,
        );
    }
    // Pool Element.
    push(
        "pool-element-missing",
        reg(hx("nope")),
        Reply::AsapError(cause::UNSPECIFIED_ERROR),
    );
    let i = id();
    push(
        "pool-element-twice",
        reg(cat(&[&hx("twice"), &pe_ok(i), &pe_ok(id())])),
        INVALID,
    );
    push("pe-id-zero", reg(cat(&[&hx("id0"), &pe_ok(0)])), INVALID);
    push(
        "life-zero",
        reg(cat(&[
            &hx("life0"),
            &pe_tlv(id(), 0, 0, &[ut_ok.clone(), rr.clone()]),
        ])),
        INVALID,
    );
    // Transports and addresses.
    let with_ut = |id: u32, ut: Vec<u8>| pe_tlv(id, 0, LIFE, &[ut, policy_tlv(1, &[])]);
    let t = |port: u16, addrs: &[Vec<u8>]| {
        ctx.own_tlv_transport(port, TRANSPORT_USE_DATA_PLUS_CONTROL, addrs)
    };
    push(
        "transport-no-address",
        reg(cat(&[&hx("t0"), &with_ut(id(), t(ctx.own_port, &[]))])),
        INVALID,
    );
    push(
        "transport-port-0",
        reg(cat(&[
            &hx("port0"),
            &with_ut(id(), t(0, std::slice::from_ref(&own))),
        ])),
        INVALID,
    );
    // Malformed addresses are invalid values; an address parameter of an unknown type
    // (action bits 00) stops the processing silently.
    let bad_addrs: [(&str, Vec<u8>, &[Reply]); 5] = [
        (
            "ipv4-length-12",
            tlv(0x0001, &[10, 0, 0, 1, 0, 0, 0, 0]),
            &[INVALID],
        ),
        ("ipv4-length-6", tlv(0x0001, &[10, 0]), &[INVALID]),
        ("ipv6-length-8", tlv(0x0002, &[0xfd, 0, 0, 0]), &[INVALID]),
        (
            "address-type-0x0003",
            tlv(0x0003, &[10, 0, 0, 1]),
            &[INVALID],
        ),
        ("address-type-0x0099", tlv(0x0099, &[10, 0, 0, 1]), &[]),
    ];
    let mut extra = Vec::new();
    for (name, a, expect) in bad_addrs {
        extra.push(
            Case::new(
                class,
                format!("registration:address-{name}"),
                Sender::Asap,
                reg(cat(&[
                    &hx(name),
                    &with_ut(id(), t(ctx.own_port, &[own.clone(), a])),
                ])),
            )
            .expect(expect),
        );
    }
    let security = Reply::RegistrationReject(Some(cause::REJECTED_SECURITY));
    let other_family = match ctx.own_ip {
        IpAddr::V4(_) => IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 0x99)),
        IpAddr::V6(_) => IpAddr::V4(Ipv4Addr::new(10, 99, 0, 99)),
    };
    let foreign: [(&str, IpAddr); 6] = [
        ("other-family", other_family),
        ("foreign-192.0.2.1", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        ("unspecified-0.0.0.0", IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ("broadcast", IpAddr::V4(Ipv4Addr::BROADCAST)),
        (
            "multicast-239.0.0.50",
            IpAddr::V4(Ipv4Addr::new(239, 0, 0, 50)),
        ),
        ("unspecified-::", IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    ];
    for (name, ip) in foreign {
        push(
            &format!("address-only-{name}"),
            reg(cat(&[
                &hx(name),
                &with_ut(id(), t(ctx.own_port, &[addr_tlv(ip)])),
            ])),
            security,
        );
    }
    // The legitimate PE's address and port from a stranger's association: not the
    // association's addresses unless the attacker shares the host.
    for (count, name) in [(65usize, "65-addresses"), (1000, "1000-addresses")] {
        let mut addrs = vec![own.clone()];
        for k in 1..count {
            addrs.push(addr_tlv(IpAddr::V4(Ipv4Addr::new(
                192,
                0,
                (k >> 8) as u8 + 2,
                k as u8,
            ))));
        }
        push(
            &format!("transport-{name}"),
            reg(cat(&[&hx(name), &with_ut(id(), t(ctx.own_port, &addrs))])),
            INVALID,
        );
    }
    push(
        "transport-opaque",
        reg(cat(&[
            &hx("opaque"),
            &pe_tlv(id(), 0, LIFE, &[tlv(0x0010, b"opaque"), rr.clone()]),
        ])),
        security,
    );
    push(
        "transport-missing",
        reg(cat(&[
            &hx("tmiss"),
            &pe_tlv(id(), 0, LIFE, std::slice::from_ref(&rr)),
        ])),
        INVALID,
    );
    // Policies.
    let with_pol = |id: u32, pol: Vec<u8>| pe_tlv(id, 0, LIFE, &[ut_ok.clone(), pol]);
    push(
        "policy-unknown-type",
        reg(cat(&[
            &hx("pol-unknown"),
            &with_pol(id(), policy_tlv(0x1234_5678, &[1])),
        ])),
        INVALID,
    );
    push(
        "policy-wrr-without-weight",
        reg(cat(&[
            &hx("pol-short"),
            &with_pol(id(), policy_tlv(2, &[])),
        ])),
        INVALID,
    );
    push(
        "policy-length-5",
        reg(cat(&[&hx("pol-5"), &with_pol(id(), tlv(0x0008, &[0]))])),
        INVALID,
    );
    push(
        "policy-missing",
        reg(cat(&[
            &hx("pol-miss"),
            &pe_tlv(id(), 0, LIFE, std::slice::from_ref(&ut_ok)),
        ])),
        INVALID,
    );
    // Mismatches with the legitimate pool (Round Robin, data + control, its protocol).
    let legit = ph_tlv(&ctx.legit_pool);
    push(
        "legit-pool-policy-mismatch",
        reg(cat(&[&legit, &with_pol(id(), policy_tlv(2, &[5]))])),
        Reply::RegistrationReject(Some(cause::INCONSISTENT_POOLING_POLICY)),
    );
    let other_proto = match ctx.user_protocol() {
        TransportProtocol::Sctp => 0x0005,
        _ => 0x0004,
    };
    push(
        "legit-pool-transport-mismatch",
        reg(cat(&[
            &legit,
            &with_ut(
                id(),
                wire::transport_tlv(other_proto, ctx.own_port, 1, std::slice::from_ref(&own)),
            ),
        ])),
        Reply::RegistrationReject(Some(cause::INCONSISTENT_TRANSPORT_TYPE)),
    );
    push(
        "legit-pool-udp-transport",
        reg(cat(&[
            &legit,
            &with_ut(
                id(),
                wire::transport_tlv(0x0006, ctx.own_port, 0, std::slice::from_ref(&own)),
            ),
        ])),
        Reply::RegistrationReject(Some(cause::INCONSISTENT_TRANSPORT_TYPE)),
    );
    push(
        "legit-pool-data-only",
        reg(cat(&[
            &legit,
            &with_ut(
                id(),
                ctx.own_tlv_transport(
                    ctx.own_port,
                    TRANSPORT_USE_DATA_ONLY,
                    std::slice::from_ref(&own),
                ),
            ),
        ])),
        Reply::RegistrationReject(Some(cause::INCONSISTENT_DATA_CONTROL_CONFIGURATION)),
    );
    out.extend(extra);
    out
}

/// Class d: forged ASAP (deregistration, re-registration, keep-alive acks and Endpoint
/// Unreachable reports for the legitimate PE from the attacker's associations) and forged
/// ENRP about the legitimate pool (Handle Update add / delete / overwrite / re-home,
/// Takeover Server, Init Takeover naming the registrar itself, unsolicited Handle Table
/// Responses) from the stranger, from the peer (which is not the PE's home) and from an
/// announcing stranger (Presence first).
pub fn forged(ctx: &Context) -> Vec<Case> {
    let class = Class::Forged;
    let mut out = Vec::new();
    let ph = ctx.legit_handle();
    let id = PeIdentifier(ctx.legit_pe_id);
    let dereg = AsapMessage::Deregistration(Deregistration::new(ph.clone(), id)).to_bytes();
    let refused = Reply::DeregistrationError(cause::REJECTED_SECURITY);
    for (k, s) in [Sender::Asap, Sender::Asap, Sender::AsapOther]
        .into_iter()
        .enumerate()
    {
        out.push(
            Case::new(
                class,
                format!("asap:deregister-legit-{k}"),
                s,
                dereg.clone(),
            )
            .expect(&[refused]),
        );
    }
    let not_unique = Reply::RegistrationReject(Some(cause::NON_UNIQUE_PE_IDENTIFIER));
    out.push(
        Case::new(
            class,
            "asap:reregister-legit-id-own-transport",
            Sender::Asap,
            ctx.own_registration(&ctx.legit_pool, ctx.legit_pe_id, Policy::RoundRobin),
        )
        .expect(&[not_unique]),
    );
    let mut hijack = ctx.own_pe(ctx.legit_pe_id, Policy::RoundRobin);
    hijack.user_transport = ctx.legit_transport.clone();
    out.push(
        Case::new(
            class,
            "asap:reregister-legit-id-legit-transport",
            Sender::AsapOther,
            AsapMessage::Registration(Registration::new(ph.clone(), hijack)).to_bytes(),
        )
        .expect(&[not_unique])
        // Same transport, so an answer cannot show a takeover: closing the association
        // does (the registration went with it).
        .then_close(),
    );
    out.push(
        Case::new(
            class,
            "asap:reregister-legit-id-other-policy",
            Sender::AsapOther,
            ctx.own_registration(
                &ctx.legit_pool,
                ctx.legit_pe_id,
                Policy::WeightedRoundRobin { weight: 100 },
            ),
        )
        .expect(&[not_unique]),
    );
    let ack =
        AsapMessage::EndpointKeepAliveAck(EndpointKeepAliveAck::new(ph.clone(), id)).to_bytes();
    for k in 0..3 {
        out.push(
            Case::new(
                class,
                format!("asap:keep-alive-ack-legit-{k}"),
                Sender::Asap,
                ack.clone(),
            )
            .expect(&[]),
        );
    }
    let eu = AsapMessage::EndpointUnreachable(EndpointUnreachable::new(ph.clone(), id)).to_bytes();
    for k in 0..5 {
        let s = if k % 2 == 0 {
            Sender::Asap
        } else {
            Sender::AsapOther
        };
        out.push(
            Case::new(class, format!("asap:unreachable-legit-{k}"), s, eu.clone()).expect(&[]),
        );
    }
    // ENRP.
    let r = ctx.registrar_id;
    let injected = ctx.enrp_pe(0x0d00_0001, ServerId::NONE, ctx.own_transport());
    for (sender, me, tag) in [
        (Sender::Stranger, ctx.stranger_id, "stranger"),
        (Sender::Peer, ctx.peer_id, "peer"),
        (Sender::Announcer, ctx.announcer_id, "announcer"),
    ] {
        let hu = |action: UpdateAction, pe: PoolElementParameter| {
            EnrpMessage::HandleUpdate(HandleUpdate::new(me, r, action, ph.clone(), pe)).to_bytes()
        };
        let mut inject = injected.clone();
        inject.home_server_id = me;
        inject.pe_id = PeIdentifier(injected.pe_id.0 + me.0 % 251);
        let mut rehome = ctx.enrp_pe(ctx.legit_pe_id, me, ctx.legit_transport.clone());
        rehome.home_server_id = me;
        let overwrite = ctx.enrp_pe(ctx.legit_pe_id, r, ctx.own_transport());
        let delete = ctx.enrp_pe(ctx.legit_pe_id, r, ctx.legit_transport.clone());
        let mut cases: Vec<(&str, Bytes)> = vec![
            (
                "handle-update-del-legit",
                hu(UpdateAction::DEL_PE, delete.clone()),
            ),
            (
                "handle-update-overwrite-legit",
                hu(UpdateAction::ADD_PE, overwrite),
            ),
            (
                "handle-update-rehome-legit",
                hu(UpdateAction::ADD_PE, rehome.clone()),
            ),
            (
                "takeover-server-naming-registrar",
                EnrpMessage::TakeoverServer(TakeoverServer::new(me, r, r)).to_bytes(),
            ),
            (
                "init-takeover-naming-registrar",
                EnrpMessage::InitTakeover(InitTakeover::new(me, r, r)).to_bytes(),
            ),
            (
                "table-response-injection",
                EnrpMessage::HandleTableResponse(HandleTableResponse {
                    sender: me,
                    receiver: r,
                    entries: vec![HandleTableEntry {
                        pool_handle: ph.clone(),
                        pool_elements: vec![rehome.clone(), inject.clone()],
                    }],
                    ..Default::default()
                })
                .to_bytes(),
            ),
            (
                "handle-update-del-legit-again",
                hu(UpdateAction::DEL_PE, delete),
            ),
        ];
        // A peer may announce PEs it is the home of: that is not an attack. Strangers may
        // not.
        if sender != Sender::Peer {
            cases.insert(
                0,
                ("handle-update-add-new-pe", hu(UpdateAction::ADD_PE, inject)),
            );
        }
        for (name, data) in cases {
            out.push(Case::new(class, format!("enrp:{tag}:{name}"), sender, data).expect(&[]));
        }
    }
    out
}

/// The Presence the announcing stranger sends before its forged updates (class d).
pub fn announcer_presence(ctx: &Context) -> Bytes {
    EnrpMessage::Presence(Presence {
        reply_required: true,
        reserved_flags: 0,
        sender: ctx.announcer_id,
        receiver: ctx.registrar_id,
        checksum: Some(PeChecksum(ChecksumAccumulator::default().value())),
        server_information: Some(ServerInformation {
            server_id: ctx.announcer_id,
            transport: ctx.announcer_transport.clone(),
        }),
        skipped: Vec::new(),
    })
    .to_bytes()
}

const INTERESTING_U8: [u8; 6] = [0x00, 0x01, 0x3f, 0x7f, 0x80, 0xff];
const INTERESTING_U16: [u16; 8] = [0, 1, 3, 4, 5, 0x7fff, 0x8000, 0xffff];

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

/// Class f: `ctx.mutations` seeded mutations of the seeds, 1-4 operations each: bit flips,
/// interesting bytes and 16-bit values (lengths), random bytes inserted or removed, ranges
/// duplicated, the tail of another seed spliced in.
pub fn mutations(ctx: &Context) -> Vec<Case> {
    let seeds = seeds(ctx);
    let mut rng = SplitMix64::new(ctx.seed ^ 0x6d75_7461_7465);
    let mut d = Dedup::new();
    if seeds.is_empty() {
        return d.out;
    }
    let mut attempts = 0usize;
    while d.out.len() < ctx.mutations && attempts < ctx.mutations * 4 {
        attempts += 1;
        let s = &seeds[below(&mut rng, seeds.len())];
        let mut v = s.data.to_vec();
        let ops = 1 + below(&mut rng, 4);
        let mut what = Vec::new();
        for _ in 0..ops {
            let n = v.len().max(1);
            let at = below(&mut rng, n);
            match below(&mut rng, 8) {
                0 => {
                    if let Some(b) = v.get_mut(at) {
                        *b ^= 1 << below(&mut rng, 8);
                    }
                    what.push(format!("flip@{at}"));
                }
                1 => {
                    if let Some(b) = v.get_mut(at) {
                        *b = INTERESTING_U8[below(&mut rng, INTERESTING_U8.len())];
                    }
                    what.push(format!("byte@{at}"));
                }
                2 | 3 => {
                    // Length fields sit at even offsets.
                    let at = at & !1;
                    let x = INTERESTING_U16[below(&mut rng, INTERESTING_U16.len())];
                    let cur = wire::get_u16(&v, at).unwrap_or(0);
                    let x = if below(&mut rng, 2) == 0 {
                        x
                    } else {
                        cur.wrapping_add(x % 8).wrapping_sub(4)
                    };
                    wire::set_u16(&mut v, at, x);
                    what.push(format!("u16@{at}"));
                }
                4 => {
                    let k = 1 + below(&mut rng, 8);
                    let at = at.min(v.len());
                    for _ in 0..k {
                        v.insert(at, rng.next_u32() as u8);
                    }
                    what.push(format!("ins{k}@{at}"));
                }
                5 => {
                    let k = 1 + below(&mut rng, 8);
                    let end = (at + k).min(v.len());
                    if at < end {
                        v.drain(at..end);
                    }
                    what.push(format!("del{k}@{at}"));
                }
                6 => {
                    let k = 1 + below(&mut rng, 16);
                    let end = (at + k).min(v.len());
                    let chunk: Vec<u8> = v.get(at..end).unwrap_or_default().to_vec();
                    let to = below(&mut rng, v.len() + 1);
                    for (j, b) in chunk.into_iter().enumerate() {
                        v.insert(to + j, b);
                    }
                    what.push(format!("dup@{at}"));
                }
                _ => {
                    let o = &seeds[below(&mut rng, seeds.len())];
                    let from = below(&mut rng, o.data.len());
                    v.truncate(at);
                    v.extend_from_slice(&o.data[from..]);
                    what.push(format!("splice@{at}"));
                }
            }
        }
        d.push(
            Class::Mutation,
            format!("{}:{}", s.name, what.join(",")),
            s.protocol,
            v,
        );
    }
    d.out
}

/// The ENRP transport an announcing stranger claims: its address, an arbitrary port.
pub fn announcer_transport(protocol: TransportProtocol, ip: IpAddr) -> TransportParameter {
    TransportParameter::with(protocol, 9977, 0, [ip])
}

/// The listening address of a socket address list (helper for the runner's Presences).
pub fn transport_of(protocol: TransportProtocol, addr: SocketAddr) -> TransportParameter {
    TransportParameter::with(protocol, addr.port(), 0, [addr.ip()])
}
