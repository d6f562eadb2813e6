//! The parameters (TLVs) of RFC 5354 plus the Handle Resolution Option (0x803f), their
//! decoders and encoders.
//!
//! Encoding follows RSPLIB: every TLV is zero-padded to 4 bytes as it is written, and an
//! enclosing TLV's length counts its children including their padding. Decoding accepts both
//! that and the RFC form (outer length without the last child's padding).
//!
//! Unknown parameter types follow their two action bits ([`UnknownAction`]): "stop" types end
//! decoding with [`DecodeErrorKind::UnknownParameter`]; "skip" types are stepped over. At the
//! top level of a message skipped TLVs are kept verbatim ([`SkippedParameter`]) so that the
//! message re-encodes byte for byte; skipped TLVs nested inside other parameters are dropped.
//! Every skip-*and-report* TLV, at any depth, is returned by the messages'
//! `decode_with_unrecognized` so that an Error can report it
//! ([`OperationError::unrecognized_parameters`]).

use bytes::{BufMut, Bytes};
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::ids::{PeIdentifier, PoolHandle, ServerId};
use crate::policy::Policy;
use crate::tlv::{
    Cx, PResult, Seq, Tlv, fail, pad4, put_header, put_opaque, put_pad, quote, to_decode_error,
    u16_be, u32_be,
};
use crate::transport::{AddressList, TransportParameter, TransportProtocol};

/// Parameter type codes (RFC 5354 §3, §5.1, and the Handle Resolution Option draft).
pub mod ty {
    /// IPv4 Address.
    pub const IPV4_ADDRESS: u16 = 0x0001;
    /// IPv6 Address.
    pub const IPV6_ADDRESS: u16 = 0x0002;
    /// DCCP Transport.
    pub const DCCP_TRANSPORT: u16 = 0x0003;
    /// SCTP Transport.
    pub const SCTP_TRANSPORT: u16 = 0x0004;
    /// TCP Transport.
    pub const TCP_TRANSPORT: u16 = 0x0005;
    /// UDP Transport.
    pub const UDP_TRANSPORT: u16 = 0x0006;
    /// UDP-Lite Transport.
    pub const UDP_LITE_TRANSPORT: u16 = 0x0007;
    /// Pool Member Selection Policy.
    pub const POOL_MEMBER_SELECTION_POLICY: u16 = 0x0008;
    /// Pool Handle.
    pub const POOL_HANDLE: u16 = 0x0009;
    /// Pool Element.
    pub const POOL_ELEMENT: u16 = 0x000a;
    /// Server Information.
    pub const SERVER_INFORMATION: u16 = 0x000b;
    /// Operation Error.
    pub const OPERATION_ERROR: u16 = 0x000c;
    /// Cookie.
    pub const COOKIE: u16 = 0x000d;
    /// PE Identifier.
    pub const PE_IDENTIFIER: u16 = 0x000e;
    /// PE Checksum.
    pub const PE_CHECKSUM: u16 = 0x000f;
    /// Opaque Transport.
    pub const OPAQUE_TRANSPORT: u16 = 0x0010;
    /// Handle Resolution Option (draft-dreibholz-rserpool-asap-hropt; action bits `10`).
    pub const HANDLE_RESOLUTION_OPTION: u16 = 0x803f;
}

/// True for the parameter types this implementation decodes.
pub fn is_known(t: u16) -> bool {
    matches!(t, 0x0001..=0x0010 | ty::HANDLE_RESOLUTION_OPTION)
}

/// True for the transport parameter types (DCCP, SCTP, TCP, UDP, UDP-Lite, Opaque).
pub fn is_transport(t: u16) -> bool {
    matches!(t, 0x0003..=0x0007 | ty::OPAQUE_TRANSPORT)
}

/// The name of a parameter type, "unknown" for others.
pub fn parameter_name(t: u16) -> &'static str {
    match t {
        ty::IPV4_ADDRESS => "IPv4 Address",
        ty::IPV6_ADDRESS => "IPv6 Address",
        ty::DCCP_TRANSPORT => "DCCP Transport",
        ty::SCTP_TRANSPORT => "SCTP Transport",
        ty::TCP_TRANSPORT => "TCP Transport",
        ty::UDP_TRANSPORT => "UDP Transport",
        ty::UDP_LITE_TRANSPORT => "UDP-Lite Transport",
        ty::POOL_MEMBER_SELECTION_POLICY => "Pool Member Selection Policy",
        ty::POOL_HANDLE => "Pool Handle",
        ty::POOL_ELEMENT => "Pool Element",
        ty::SERVER_INFORMATION => "Server Information",
        ty::OPERATION_ERROR => "Operation Error",
        ty::COOKIE => "Cookie",
        ty::PE_IDENTIFIER => "PE Identifier",
        ty::PE_CHECKSUM => "PE Checksum",
        ty::OPAQUE_TRANSPORT => "Opaque Transport",
        ty::HANDLE_RESOLUTION_OPTION => "Handle Resolution Option",
        _ => "unknown",
    }
}

/// What a receiver does with a parameter type it does not know (RFC 5354 §3, top two bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnknownAction {
    /// `00`: stop processing, discard the message silently.
    Stop,
    /// `01`: stop processing, discard, report "Unrecognized Parameter".
    StopAndReport,
    /// `10`: skip the parameter and continue.
    Skip,
    /// `11`: skip and continue, report "Unrecognized Parameter".
    SkipAndReport,
}

impl UnknownAction {
    /// The action encoded in a parameter type's top two bits.
    pub fn of(parameter_type: u16) -> Self {
        match parameter_type >> 14 {
            0 => UnknownAction::Stop,
            1 => UnknownAction::StopAndReport,
            2 => UnknownAction::Skip,
            _ => UnknownAction::SkipAndReport,
        }
    }
}

/// Encoding of a parameter or message.
pub trait Encode {
    /// Encoded size in bytes, padding included.
    fn encoded_len(&self) -> usize;
    /// Writes the encoding (RSPLIB form: padded, outer lengths count inner padding).
    fn encode<B: BufMut>(&self, buf: &mut B);
    /// Encodes into a new buffer.
    fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v);
        Bytes::from(v)
    }
}

pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    for x in b {
        write!(f, "{x:02x}")?;
    }
    Ok(())
}

/// A parameter this implementation does not know, kept verbatim (header and value, without
/// padding) so it can be reported and re-encoded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UnknownParameter {
    /// The TLV: type, length, value (no padding).
    pub raw: Bytes,
}

impl UnknownParameter {
    /// The parameter type, action bits included (0 if `raw` is shorter than 2 bytes).
    pub fn parameter_type(&self) -> u16 {
        match self.raw.get(..2) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }

    /// What the action bits ask for.
    pub fn action(&self) -> UnknownAction {
        UnknownAction::of(self.parameter_type())
    }

    /// The value bytes.
    pub fn value(&self) -> &[u8] {
        self.raw.get(4..).unwrap_or_default()
    }

    /// An unknown parameter built from a type and a value (the length field is computed).
    pub fn new(parameter_type: u16, value: &[u8]) -> Self {
        let mut v = Vec::with_capacity(4 + value.len());
        put_header(&mut v, parameter_type, value.len());
        v.extend_from_slice(value);
        UnknownParameter { raw: v.into() }
    }

    pub(crate) fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.raw);
        put_pad(buf, self.raw.len());
    }
}

impl fmt::Debug for UnknownParameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UnknownParameter {{ type: {:#06x} ({:?}), raw: ",
            self.parameter_type(),
            self.action()
        )?;
        write_hex(f, &self.raw)?;
        f.write_str(" }")
    }
}

impl Encode for UnknownParameter {
    fn encoded_len(&self) -> usize {
        pad4(self.raw.len())
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        self.encode_raw(buf);
    }
}

/// An unknown "skip" parameter met at the top level of a message, kept with its position so
/// that the message re-encodes byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SkippedParameter {
    /// Number of known top-level parameters of the message that precede it.
    pub position: u16,
    /// The parameter.
    pub parameter: UnknownParameter,
}

// ---------------------------------------------------------------------------------------
// Addresses and transports

fn address_len(a: &IpAddr) -> usize {
    match a {
        IpAddr::V4(_) => 8,
        IpAddr::V6(_) => 20,
    }
}

impl Encode for IpAddr {
    fn encoded_len(&self) -> usize {
        address_len(self)
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            IpAddr::V4(a) => {
                buf.put_u32(0x0001_0008);
                buf.put_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                buf.put_u32(0x0002_0014);
                buf.put_slice(&a.octets());
            }
        }
    }
}

#[inline]
fn dec_address<'a>(t: Tlv<'a>) -> PResult<'a, IpAddr> {
    let bad = || {
        quote(t.raw)(fail(
            t.raw,
            DecodeErrorKind::BadLength {
                ty: t.ty,
                length: t.raw.len(),
            },
        ))
    };
    match t.ty {
        ty::IPV4_ADDRESS => <[u8; 4]>::try_from(t.value)
            .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
            .map_err(|_| bad()),
        _ => <[u8; 16]>::try_from(t.value)
            .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
            .map_err(|_| bad()),
    }
}

fn protocol_of(t: u16) -> Option<TransportProtocol> {
    Some(match t {
        ty::DCCP_TRANSPORT => TransportProtocol::Dccp,
        ty::SCTP_TRANSPORT => TransportProtocol::Sctp,
        ty::TCP_TRANSPORT => TransportProtocol::Tcp,
        ty::UDP_TRANSPORT => TransportProtocol::Udp,
        ty::UDP_LITE_TRANSPORT => TransportProtocol::UdpLite,
        ty::OPAQUE_TRANSPORT => TransportProtocol::Opaque,
        _ => return None,
    })
}

fn transport_value_len(t: &TransportParameter) -> usize {
    let addrs: usize = t.addresses.iter().map(address_len).sum();
    match t.protocol {
        TransportProtocol::Opaque => t.opaque.len(),
        TransportProtocol::Dccp => 8 + addrs,
        _ => 4 + addrs,
    }
}

/// Encodes every transport parameter type. Fields the protocol does not carry are not written
/// (DCCP writes `transport_use` as its reserved field; Opaque writes only `opaque`).
impl Encode for TransportParameter {
    fn encoded_len(&self) -> usize {
        pad4(4 + transport_value_len(self))
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        let ty = self.protocol.parameter_type();
        if self.protocol == TransportProtocol::Opaque {
            put_opaque(buf, ty, &self.opaque);
            return;
        }
        put_header(buf, ty, transport_value_len(self));
        buf.put_u16(self.port);
        buf.put_u16(self.transport_use);
        if self.protocol == TransportProtocol::Dccp {
            buf.put_u32(self.dccp_service_code);
        }
        for a in &self.addresses {
            a.encode(buf);
        }
    }
}

/// An empty SCTP transport, to be filled in place by [`dec_transport_into`].
fn empty_transport() -> TransportParameter {
    TransportParameter {
        protocol: TransportProtocol::Sctp,
        port: 0,
        transport_use: 0,
        dccp_service_code: 0,
        addresses: AddressList::new(),
        opaque: Bytes::new(),
    }
}

fn dec_transport<'a>(cx: &mut Cx<'a>, t: Tlv<'a>) -> PResult<'a, TransportParameter> {
    let mut out = empty_transport();
    dec_transport_into(cx, t, &mut out)?;
    Ok(out)
}

/// Decodes a transport parameter into `out` (which must be empty), avoiding moves of the
/// large struct in the hot path (pool elements in handle table responses).
#[inline]
fn dec_transport_into<'a>(
    cx: &mut Cx<'a>,
    t: Tlv<'a>,
    out: &mut TransportParameter,
) -> PResult<'a, ()> {
    let mut inner = |cx: &mut Cx<'a>| -> PResult<'a, ()> {
        let Some(protocol) = protocol_of(t.ty) else {
            return Err(fail(
                t.raw,
                DecodeErrorKind::UnexpectedParameter { ty: t.ty },
            ));
        };
        out.protocol = protocol;
        if protocol == TransportProtocol::Opaque {
            out.opaque = cx.bytes(t.value);
            return Ok(());
        }
        let (i, port) = u16_be(t.value)?;
        let (mut i, transport_use) = u16_be(i)?;
        out.port = port;
        out.transport_use = transport_use;
        if protocol == TransportProtocol::Dccp {
            (i, out.dccp_service_code) = u32_be(i)?;
        }
        // Fast path: well-formed address TLVs back to back (the usual content).
        while let Some((&[0, t, 0, l], rest)) = i.split_first_chunk::<4>() {
            match (t, l) {
                (1, 8) => match rest.split_first_chunk::<4>() {
                    Some((a, rest)) => {
                        out.addresses.push(IpAddr::V4(Ipv4Addr::from(*a)));
                        i = rest;
                    }
                    None => break,
                },
                (2, 20) => match rest.split_first_chunk::<16>() {
                    Some((a, rest)) => {
                        out.addresses.push(IpAddr::V6(Ipv6Addr::from(*a)));
                        i = rest;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        // General path: skippable parameters, errors.
        if !i.is_empty() {
            let mut seq = Seq::new(i, false);
            while let Some(a) =
                seq.next_if(cx, |t| t == ty::IPV4_ADDRESS || t == ty::IPV6_ADDRESS)?
            {
                out.addresses.push(dec_address(a)?);
            }
            seq.end(cx)?;
        }
        if out.addresses.is_empty() {
            return Err(fail(
                t.raw,
                DecodeErrorKind::InvalidValue("transport parameter without address"),
            ));
        }
        if protocol != TransportProtocol::Sctp && out.addresses.len() > 1 {
            return Err(fail(
                t.raw,
                DecodeErrorKind::InvalidValue("more than one address in a non-SCTP transport"),
            ));
        }
        Ok(())
    };
    inner(cx).map_err(quote(t.raw))
}

// ---------------------------------------------------------------------------------------
// Policy

/// The policy's values in wire order, without building a `SmallVec`.
fn policy_values(p: &Policy) -> ([u32; 4], usize) {
    use Policy::*;
    match *p {
        RoundRobin | Random => ([0; 4], 0),
        WeightedRoundRobin { weight } | WeightedRandom { weight } => ([weight, 0, 0, 0], 1),
        Priority { priority } => ([priority, 0, 0, 0], 1),
        LeastUsed { load } | RandomizedLeastUsed { load } => ([load, 0, 0, 0], 1),
        LeastUsedDegradation { load, degradation }
        | PriorityLeastUsed { load, degradation }
        | RandomizedPriorityLeastUsed { load, degradation }
        | RandomizedLeastUsedDegradation { load, degradation }
        | PriorityLeastUsedDegradation { load, degradation }
        | RandomizedPriorityLeastUsedDegradation { load, degradation } => {
            ([load, degradation, 0, 0], 2)
        }
        WeightedRandomDpf {
            weight,
            weight_dpf,
            distance,
        } => ([weight, weight_dpf, distance, 0], 3),
        LeastUsedDpf {
            load,
            load_dpf,
            distance,
        } => ([load, load_dpf, distance, 0], 3),
        LeastUsedDegradationDpf {
            load,
            degradation,
            load_dpf,
            distance,
        } => ([load, degradation, load_dpf, distance], 4),
    }
}

/// Encodes the Pool Member Selection Policy parameter (0x0008).
impl Encode for Policy {
    fn encoded_len(&self) -> usize {
        8 + 4 * policy_values(self).1
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        let (values, n) = policy_values(self);
        put_header(buf, ty::POOL_MEMBER_SELECTION_POLICY, 4 + 4 * n);
        buf.put_u32(self.policy_type());
        for v in values.iter().take(n) {
            buf.put_u32(*v);
        }
    }
}

#[inline]
fn dec_policy<'a>(t: Tlv<'a>) -> PResult<'a, Policy> {
    let (values, policy_type) = u32_be(t.value).map_err(quote(t.raw))?;
    let mut v = [0u32; 4];
    let mut n = 0;
    for (slot, c) in v.iter_mut().zip(values.chunks_exact(4)) {
        if let Ok(b) = <[u8; 4]>::try_from(c) {
            *slot = u32::from_be_bytes(b);
            n += 1;
        }
    }
    // Extra trailing bytes are tolerated, as RSPLIB does.
    if let Some(p) = Policy::from_type_and_values(policy_type, v.get(..n).unwrap_or_default()) {
        return Ok(p);
    }
    let kind = match Policy::value_count(policy_type) {
        None => DecodeErrorKind::UnsupportedPolicy { policy_type },
        Some(_) => DecodeErrorKind::InvalidValue("policy parameter too short for its type"),
    };
    Err(quote(t.raw)(fail(t.raw, kind)))
}

// ---------------------------------------------------------------------------------------
// Pool handle, PE identifier, checksum, cookie, handle resolution option

/// Encodes the Pool Handle parameter (0x0009).
impl Encode for PoolHandle {
    fn encoded_len(&self) -> usize {
        pad4(4 + self.len())
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_opaque(buf, ty::POOL_HANDLE, self.as_bytes());
    }
}

/// Encodes the PE Identifier parameter (0x000e).
impl Encode for PeIdentifier {
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32(0x000e_0008);
        buf.put_u32(self.0);
    }
}

fn fixed_value<'a, const N: usize>(t: Tlv<'a>) -> PResult<'a, [u8; N]> {
    <[u8; N]>::try_from(t.value).map_err(|_| {
        quote(t.raw)(fail(
            t.raw,
            DecodeErrorKind::BadLength {
                ty: t.ty,
                length: t.raw.len(),
            },
        ))
    })
}

fn dec_pe_identifier<'a>(t: Tlv<'a>) -> PResult<'a, PeIdentifier> {
    fixed_value::<4>(t).map(|b| PeIdentifier(u32::from_be_bytes(b)))
}

/// The PE Checksum parameter (0x000f): length 6, then two padding bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeChecksum(pub u16);

impl fmt::Debug for PeChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeChecksum({:#06x})", self.0)
    }
}

impl Encode for PeChecksum {
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32(0x000f_0006);
        buf.put_u16(self.0);
        buf.put_u16(0);
    }
}

fn dec_pe_checksum<'a>(t: Tlv<'a>) -> PResult<'a, PeChecksum> {
    fixed_value::<2>(t).map(|b| PeChecksum(u16::from_be_bytes(b)))
}

/// The Cookie parameter (0x000d): opaque bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Cookie(pub Bytes);

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

impl Encode for Cookie {
    fn encoded_len(&self) -> usize {
        pad4(4 + self.0.len())
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_opaque(buf, ty::COOKIE, &self.0);
    }
}

/// The Handle Resolution Option (0x803f, draft-dreibholz-rserpool-asap-hropt): how many PEs
/// the requester wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct HandleResolutionOption {
    /// Requested number of PE entries; [`HandleResolutionOption::ALL`] for "as many as possible",
    /// 0 for the registrar's default.
    pub items: u32,
}

impl HandleResolutionOption {
    /// "As many as possible".
    pub const ALL: u32 = u32::MAX;
}

impl Encode for HandleResolutionOption {
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32(0x803f_0008);
        buf.put_u32(self.items);
    }
}

fn dec_hr_option<'a>(t: Tlv<'a>) -> PResult<'a, HandleResolutionOption> {
    fixed_value::<4>(t).map(|b| HandleResolutionOption {
        items: u32::from_be_bytes(b),
    })
}

// ---------------------------------------------------------------------------------------
// Pool element, server information

/// Registration Life value meaning "infinite".
pub const REGISTRATION_LIFE_INFINITE: u32 = u32::MAX;

/// The Pool Element parameter (0x000a, RFC 5354 §3.10).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolElementParameter {
    /// The PE's identifier.
    pub pe_id: PeIdentifier,
    /// Its home registrar (0 if unknown).
    pub home_server_id: ServerId,
    /// Registration life, in milliseconds as RSPLIB uses it (RFC: seconds);
    /// [`REGISTRATION_LIFE_INFINITE`] for infinite.
    pub registration_life: u32,
    /// How PUs reach the PE.
    pub user_transport: TransportParameter,
    /// The PE's policy with its own values.
    pub policy: Policy,
    /// The PE's ASAP endpoint, filled in by its home registrar (ENRP), absent otherwise.
    pub asap_transport: Option<TransportParameter>,
}

fn pool_element_value_len(pe: &PoolElementParameter) -> usize {
    12 + pe.user_transport.encoded_len()
        + pe.policy.encoded_len()
        + pe.asap_transport.as_ref().map_or(0, Encode::encoded_len)
}

impl Encode for PoolElementParameter {
    fn encoded_len(&self) -> usize {
        4 + pool_element_value_len(self)
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_header(buf, ty::POOL_ELEMENT, pool_element_value_len(self));
        buf.put_u32(self.pe_id.0);
        buf.put_u32(self.home_server_id.0);
        buf.put_u32(self.registration_life);
        self.user_transport.encode(buf);
        self.policy.encode(buf);
        if let Some(t) = &self.asap_transport {
            t.encode(buf);
        }
    }
}

pub(crate) fn dec_pool_element<'a>(
    cx: &mut Cx<'a>,
    t: Tlv<'a>,
) -> PResult<'a, PoolElementParameter> {
    let mut out = PoolElementParameter {
        pe_id: PeIdentifier(0),
        home_server_id: ServerId(0),
        registration_life: 0,
        user_transport: empty_transport(),
        policy: Policy::RoundRobin,
        asap_transport: None,
    };
    dec_pool_element_into(cx, t, &mut out)?;
    Ok(out)
}

/// Decodes a Pool Element parameter into `out` (fresh from [`dec_pool_element`] or the
/// placeholder pushed by [`Reader::pool_elements`]).
#[inline]
fn dec_pool_element_into<'a>(
    cx: &mut Cx<'a>,
    t: Tlv<'a>,
    out: &mut PoolElementParameter,
) -> PResult<'a, ()> {
    let mut inner = |cx: &mut Cx<'a>| -> PResult<'a, ()> {
        let (i, pe_id) = u32_be(t.value)?;
        let (i, home) = u32_be(i)?;
        let (i, registration_life) = u32_be(i)?;
        out.pe_id = PeIdentifier(pe_id);
        out.home_server_id = ServerId(home);
        out.registration_life = registration_life;
        let mut seq = Seq::new(i, false);
        let ut = seq.required_if(cx, is_transport, "user transport")?;
        dec_transport_into(cx, ut, &mut out.user_transport)?;
        let pt = seq.required(cx, ty::POOL_MEMBER_SELECTION_POLICY, "policy")?;
        out.policy = dec_policy(pt)?;
        if let Some(at) = seq.next_if(cx, is_transport)? {
            let mut asap = empty_transport();
            dec_transport_into(cx, at, &mut asap)?;
            out.asap_transport = Some(asap);
        }
        seq.end(cx)
    };
    inner(cx).map_err(quote(t.raw))
}

/// The Server Information parameter (0x000b): a registrar's identifier and its transport.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerInformation {
    /// The registrar's server identifier.
    pub server_id: ServerId,
    /// Its ENRP (or, in an ASAP Server Announce, ASAP) transport: an SCTP transport.
    pub transport: TransportParameter,
}

impl Encode for ServerInformation {
    fn encoded_len(&self) -> usize {
        8 + self.transport.encoded_len()
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_header(
            buf,
            ty::SERVER_INFORMATION,
            4 + self.transport.encoded_len(),
        );
        buf.put_u32(self.server_id.0);
        self.transport.encode(buf);
    }
}

pub(crate) fn dec_server_information<'a>(
    cx: &mut Cx<'a>,
    t: Tlv<'a>,
) -> PResult<'a, ServerInformation> {
    let inner = |cx: &mut Cx<'a>| -> PResult<'a, ServerInformation> {
        let (i, id) = u32_be(t.value)?;
        let mut seq = Seq::new(i, false);
        let tt = seq.required_if(cx, is_transport, "server transport")?;
        let transport = dec_transport(cx, tt)?;
        seq.end(cx)?;
        Ok(ServerInformation {
            server_id: ServerId(id),
            transport,
        })
    };
    inner(cx).map_err(quote(t.raw))
}

// ---------------------------------------------------------------------------------------
// Operation error

/// Error cause codes: RFC 5354 §3.12 and the RSPLIB-internal numbers RSPLIB puts on the wire.
pub mod cause {
    /// Unspecified Error.
    pub const UNSPECIFIED_ERROR: u16 = 0x0000;
    /// Unrecognized Parameter (info: the parameter).
    pub const UNRECOGNIZED_PARAMETER: u16 = 0x0001;
    /// Unrecognized Message (info: the message).
    pub const UNRECOGNIZED_MESSAGE: u16 = 0x0002;
    /// Invalid Values (info: the parameter holding them).
    pub const INVALID_VALUES: u16 = 0x0003;
    /// Non-unique PE Identifier.
    pub const NON_UNIQUE_PE_IDENTIFIER: u16 = 0x0004;
    /// Inconsistent Pooling Policy (info: the pool's policy parameter).
    pub const INCONSISTENT_POOLING_POLICY: u16 = 0x0005;
    /// Lack of Resources.
    pub const LACK_OF_RESOURCES: u16 = 0x0006;
    /// Inconsistent Transport Type (info: a transport parameter of the pool's type).
    pub const INCONSISTENT_TRANSPORT_TYPE: u16 = 0x0007;
    /// Inconsistent Data/Control Configuration.
    pub const INCONSISTENT_DATA_CONTROL_CONFIGURATION: u16 = 0x0008;
    /// Unknown Pool Handle.
    pub const UNKNOWN_POOL_HANDLE: u16 = 0x0009;
    /// Rejected due to security considerations.
    pub const REJECTED_SECURITY: u16 = 0x000a;
    /// RSPLIB: invalid message (`RSPERR_INVALID_MESSAGE`).
    pub const RSPLIB_INVALID_MESSAGE: u16 = 0x0010;
    /// RSPLIB: invalid value (`RSPERR_INVALID_VALUE`; info: the parameter).
    pub const RSPLIB_INVALID_VALUE: u16 = 0x0011;
    /// RSPLIB: user transport protocol differs from the pool's (`RSPERR_WRONG_PROTOCOL`).
    pub const RSPLIB_WRONG_PROTOCOL: u16 = 0x100a;
    /// RSPLIB: unsupported pool policy type (`RSPERR_UNSUPPORTED_POOL_POLICY`).
    pub const RSPLIB_UNSUPPORTED_POOL_POLICY: u16 = 0x100b;
    /// RSPLIB: invalid identifier, e.g. PE id 0 (`RSPERR_INVALID_ID`).
    pub const RSPLIB_INVALID_ID: u16 = 0xf000;
    /// RSPLIB: own identifier (`RSPERR_OWN_ID`).
    pub const RSPLIB_OWN_ID: u16 = 0xf001;
    /// RSPLIB: duplicate identifier (`RSPERR_DUPLICATE_ID`).
    pub const RSPLIB_DUPLICATE_ID: u16 = 0xf002;
    /// RSPLIB: invalid pool policy (`RSPERR_INVALID_POOL_POLICY`).
    pub const RSPLIB_INVALID_POOL_POLICY: u16 = 0xf003;
    /// RSPLIB: invalid pool handle, length 0 or > 32 (`RSPERR_INVALID_POOL_HANDLE`).
    pub const RSPLIB_INVALID_POOL_HANDLE: u16 = 0xf004;
    /// RSPLIB: invalid addresses (`RSPERR_INVALID_ADDRESSES`).
    pub const RSPLIB_INVALID_ADDRESSES: u16 = 0xf005;
    /// RSPLIB: bad or missing ASAP transport (`RSPERR_INVALID_REGISTRATOR`).
    pub const RSPLIB_INVALID_REGISTRATOR: u16 = 0xf006;
    /// RSPLIB: no usable ASAP addresses (`RSPERR_NO_USABLE_ASAP_ADDRESSES`).
    pub const RSPLIB_NO_USABLE_ASAP_ADDRESSES: u16 = 0xf007;
    /// RSPLIB: no usable user addresses (`RSPERR_NO_USABLE_USER_ADDRESSES`).
    pub const RSPLIB_NO_USABLE_USER_ADDRESSES: u16 = 0xf008;

    /// Every named cause code.
    pub const ALL: [u16; 24] = [
        UNSPECIFIED_ERROR,
        UNRECOGNIZED_PARAMETER,
        UNRECOGNIZED_MESSAGE,
        INVALID_VALUES,
        NON_UNIQUE_PE_IDENTIFIER,
        INCONSISTENT_POOLING_POLICY,
        LACK_OF_RESOURCES,
        INCONSISTENT_TRANSPORT_TYPE,
        INCONSISTENT_DATA_CONTROL_CONFIGURATION,
        UNKNOWN_POOL_HANDLE,
        REJECTED_SECURITY,
        RSPLIB_INVALID_MESSAGE,
        RSPLIB_INVALID_VALUE,
        RSPLIB_WRONG_PROTOCOL,
        RSPLIB_UNSUPPORTED_POOL_POLICY,
        RSPLIB_INVALID_ID,
        RSPLIB_OWN_ID,
        RSPLIB_DUPLICATE_ID,
        RSPLIB_INVALID_POOL_POLICY,
        RSPLIB_INVALID_POOL_HANDLE,
        RSPLIB_INVALID_ADDRESSES,
        RSPLIB_INVALID_REGISTRATOR,
        RSPLIB_NO_USABLE_ASAP_ADDRESSES,
        RSPLIB_NO_USABLE_USER_ADDRESSES,
    ];

    /// The name of a cause code, `None` for unnamed codes.
    pub fn name(code: u16) -> Option<&'static str> {
        Some(match code {
            UNSPECIFIED_ERROR => "Unspecified Error",
            UNRECOGNIZED_PARAMETER => "Unrecognized Parameter",
            UNRECOGNIZED_MESSAGE => "Unrecognized Message",
            INVALID_VALUES => "Invalid Values",
            NON_UNIQUE_PE_IDENTIFIER => "Non-unique PE Identifier",
            INCONSISTENT_POOLING_POLICY => "Inconsistent Pooling Policy",
            LACK_OF_RESOURCES => "Lack of Resources",
            INCONSISTENT_TRANSPORT_TYPE => "Inconsistent Transport Type",
            INCONSISTENT_DATA_CONTROL_CONFIGURATION => "Inconsistent Data/Control Configuration",
            UNKNOWN_POOL_HANDLE => "Unknown Pool Handle",
            REJECTED_SECURITY => "Rejected due to security considerations",
            RSPLIB_INVALID_MESSAGE => "RSPLIB invalid message",
            RSPLIB_INVALID_VALUE => "RSPLIB invalid value",
            RSPLIB_WRONG_PROTOCOL => "RSPLIB wrong protocol",
            RSPLIB_UNSUPPORTED_POOL_POLICY => "RSPLIB unsupported pool policy",
            RSPLIB_INVALID_ID => "RSPLIB invalid ID",
            RSPLIB_OWN_ID => "RSPLIB own ID",
            RSPLIB_DUPLICATE_ID => "RSPLIB duplicate ID",
            RSPLIB_INVALID_POOL_POLICY => "RSPLIB invalid pool policy",
            RSPLIB_INVALID_POOL_HANDLE => "RSPLIB invalid pool handle",
            RSPLIB_INVALID_ADDRESSES => "RSPLIB invalid addresses",
            RSPLIB_INVALID_REGISTRATOR => "RSPLIB invalid registrator",
            RSPLIB_NO_USABLE_ASAP_ADDRESSES => "RSPLIB no usable ASAP addresses",
            RSPLIB_NO_USABLE_USER_ADDRESSES => "RSPLIB no usable user addresses",
            _ => return None,
        })
    }
}

/// One error cause inside an Operation Error parameter.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ErrorCause {
    /// Cause code (see [`cause`]).
    pub code: u16,
    /// Cause-specific information, without padding (a TLV, a message, or nothing).
    pub info: Bytes,
}

impl ErrorCause {
    /// A cause with the given code and information.
    pub fn new(code: u16, info: impl Into<Bytes>) -> Self {
        ErrorCause {
            code,
            info: info.into(),
        }
    }

    /// The cause's name, if the code is named.
    pub fn name(&self) -> Option<&'static str> {
        cause::name(self.code)
    }

    fn encoded_len(&self) -> usize {
        pad4(4 + self.info.len())
    }
}

impl fmt::Debug for ErrorCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ErrorCause {{ code: {:#06x} ({}), info: ",
            self.code,
            self.name().unwrap_or("unknown")
        )?;
        if self.info.is_empty() {
            f.write_str("none")?;
        } else {
            write_hex(f, &self.info)?;
        }
        f.write_str(" }")
    }
}

/// The Operation Error parameter (0x000c): one or more error causes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct OperationError {
    /// The causes, in wire order.
    pub causes: Vec<ErrorCause>,
}

impl OperationError {
    /// An Operation Error with one cause.
    pub fn new(cause: ErrorCause) -> Self {
        OperationError {
            causes: vec![cause],
        }
    }

    /// An Operation Error with one "Unrecognized Parameter" cause per parameter, or `None` if
    /// the list is empty (for the skip-and-report parameters a decoder returned).
    pub fn unrecognized_parameters(params: &[UnknownParameter]) -> Option<Self> {
        (!params.is_empty()).then(|| OperationError {
            causes: params
                .iter()
                .map(|p| ErrorCause::new(cause::UNRECOGNIZED_PARAMETER, p.raw.clone()))
                .collect(),
        })
    }
}

impl Encode for OperationError {
    fn encoded_len(&self) -> usize {
        4 + self
            .causes
            .iter()
            .map(ErrorCause::encoded_len)
            .sum::<usize>()
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_header(buf, ty::OPERATION_ERROR, self.encoded_len() - 4);
        for c in &self.causes {
            put_opaque(buf, c.code, &c.info);
        }
    }
}

fn dec_operation_error<'a>(cx: &mut Cx<'a>, t: Tlv<'a>) -> PResult<'a, OperationError> {
    let inner = |cx: &mut Cx<'a>| -> PResult<'a, OperationError> {
        let mut causes = Vec::with_capacity(1);
        let mut i = t.value;
        while !i.is_empty() {
            // Causes have the TLV layout; their codes carry no action bits. Errors quote the
            // Operation Error parameter, not the cause.
            let (rest, c) = crate::tlv::tlv(i).map_err(crate::tlv::unquote)?;
            causes.push(ErrorCause {
                code: c.ty,
                info: cx.bytes(c.value),
            });
            i = rest;
        }
        Ok(OperationError { causes })
    };
    inner(cx).map_err(quote(t.raw))
}

// ---------------------------------------------------------------------------------------
// Any parameter

/// Any parameter, for decoding and encoding parameters on their own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Parameter {
    /// IPv4 Address (0x0001) or IPv6 Address (0x0002).
    Address(IpAddr),
    /// DCCP, SCTP, TCP, UDP, UDP-Lite or Opaque Transport (0x0003-0x0007, 0x0010).
    Transport(TransportParameter),
    /// Pool Member Selection Policy (0x0008).
    Policy(Policy),
    /// Pool Handle (0x0009).
    PoolHandle(PoolHandle),
    /// Pool Element (0x000a).
    PoolElement(PoolElementParameter),
    /// Server Information (0x000b).
    ServerInformation(ServerInformation),
    /// Operation Error (0x000c).
    OperationError(OperationError),
    /// Cookie (0x000d).
    Cookie(Cookie),
    /// PE Identifier (0x000e).
    PeIdentifier(PeIdentifier),
    /// PE Checksum (0x000f).
    PeChecksum(PeChecksum),
    /// Handle Resolution Option (0x803f).
    HandleResolutionOption(HandleResolutionOption),
    /// Any other type, kept verbatim.
    Unknown(UnknownParameter),
}

impl Parameter {
    /// Decodes one parameter at the start of `data`; returns it and the bytes consumed
    /// (padding included, as far as present).
    pub fn decode(data: &[u8]) -> Result<(Parameter, usize), DecodeError> {
        Self::decode_bytes(&Bytes::copy_from_slice(data))
    }

    /// Like [`Parameter::decode`], without copying: opaque fields are views of `data`.
    pub fn decode_bytes(data: &Bytes) -> Result<(Parameter, usize), DecodeError> {
        let mut cx = Cx::new(data);
        let r = (|| -> PResult<'_, (Parameter, usize)> {
            let (rest, t) = crate::tlv::tlv(data)?;
            let p = dec_parameter(&mut cx, t)?;
            Ok((p, data.len() - rest.len()))
        })();
        r.map_err(|e| to_decode_error(data, e))
    }

    /// The parameter type code.
    pub fn parameter_type(&self) -> u16 {
        match self {
            Parameter::Address(IpAddr::V4(_)) => ty::IPV4_ADDRESS,
            Parameter::Address(IpAddr::V6(_)) => ty::IPV6_ADDRESS,
            Parameter::Transport(t) => t.protocol.parameter_type(),
            Parameter::Policy(_) => ty::POOL_MEMBER_SELECTION_POLICY,
            Parameter::PoolHandle(_) => ty::POOL_HANDLE,
            Parameter::PoolElement(_) => ty::POOL_ELEMENT,
            Parameter::ServerInformation(_) => ty::SERVER_INFORMATION,
            Parameter::OperationError(_) => ty::OPERATION_ERROR,
            Parameter::Cookie(_) => ty::COOKIE,
            Parameter::PeIdentifier(_) => ty::PE_IDENTIFIER,
            Parameter::PeChecksum(_) => ty::PE_CHECKSUM,
            Parameter::HandleResolutionOption(_) => ty::HANDLE_RESOLUTION_OPTION,
            Parameter::Unknown(u) => u.parameter_type(),
        }
    }
}

fn dec_parameter<'a>(cx: &mut Cx<'a>, t: Tlv<'a>) -> PResult<'a, Parameter> {
    Ok(match t.ty {
        ty::IPV4_ADDRESS | ty::IPV6_ADDRESS => Parameter::Address(dec_address(t)?),
        x if is_transport(x) => Parameter::Transport(dec_transport(cx, t)?),
        ty::POOL_MEMBER_SELECTION_POLICY => Parameter::Policy(dec_policy(t)?),
        ty::POOL_HANDLE => Parameter::PoolHandle(dec_pool_handle(cx, t)),
        ty::POOL_ELEMENT => Parameter::PoolElement(dec_pool_element(cx, t)?),
        ty::SERVER_INFORMATION => Parameter::ServerInformation(dec_server_information(cx, t)?),
        ty::OPERATION_ERROR => Parameter::OperationError(dec_operation_error(cx, t)?),
        ty::COOKIE => Parameter::Cookie(dec_cookie(cx, t)),
        ty::PE_IDENTIFIER => Parameter::PeIdentifier(dec_pe_identifier(t)?),
        ty::PE_CHECKSUM => Parameter::PeChecksum(dec_pe_checksum(t)?),
        ty::HANDLE_RESOLUTION_OPTION => Parameter::HandleResolutionOption(dec_hr_option(t)?),
        _ => Parameter::Unknown(UnknownParameter {
            raw: cx.bytes(t.raw),
        }),
    })
}

impl Encode for Parameter {
    fn encoded_len(&self) -> usize {
        match self {
            Parameter::Address(a) => a.encoded_len(),
            Parameter::Transport(t) => t.encoded_len(),
            Parameter::Policy(p) => p.encoded_len(),
            Parameter::PoolHandle(p) => p.encoded_len(),
            Parameter::PoolElement(p) => p.encoded_len(),
            Parameter::ServerInformation(s) => s.encoded_len(),
            Parameter::OperationError(o) => o.encoded_len(),
            Parameter::Cookie(c) => c.encoded_len(),
            Parameter::PeIdentifier(p) => p.encoded_len(),
            Parameter::PeChecksum(p) => p.encoded_len(),
            Parameter::HandleResolutionOption(h) => h.encoded_len(),
            Parameter::Unknown(u) => u.encoded_len(),
        }
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Parameter::Address(a) => a.encode(buf),
            Parameter::Transport(t) => t.encode(buf),
            Parameter::Policy(p) => p.encode(buf),
            Parameter::PoolHandle(p) => p.encode(buf),
            Parameter::PoolElement(p) => p.encode(buf),
            Parameter::ServerInformation(s) => s.encode(buf),
            Parameter::OperationError(o) => o.encode(buf),
            Parameter::Cookie(c) => c.encode(buf),
            Parameter::PeIdentifier(p) => p.encode(buf),
            Parameter::PeChecksum(p) => p.encode(buf),
            Parameter::HandleResolutionOption(h) => h.encode(buf),
            Parameter::Unknown(u) => u.encode(buf),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Typed readers used by the message codecs

pub(crate) fn dec_pool_handle<'a>(cx: &mut Cx<'a>, t: Tlv<'a>) -> PoolHandle {
    PoolHandle(cx.bytes(t.value))
}

pub(crate) fn dec_cookie<'a>(cx: &mut Cx<'a>, t: Tlv<'a>) -> Cookie {
    Cookie(cx.bytes(t.value))
}

/// Reads the next parameters of a message in their defined order.
pub(crate) struct Reader<'a> {
    pub seq: Seq<'a>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(i: &'a [u8]) -> Self {
        Reader {
            seq: Seq::new(i, true),
        }
    }

    pub(crate) fn pool_handle(&mut self, cx: &mut Cx<'a>) -> PResult<'a, PoolHandle> {
        let t = self.seq.required(cx, ty::POOL_HANDLE, "pool handle")?;
        Ok(dec_pool_handle(cx, t))
    }

    pub(crate) fn opt_pool_handle(&mut self, cx: &mut Cx<'a>) -> PResult<'a, Option<PoolHandle>> {
        Ok(self
            .seq
            .next_if(cx, |t| t == ty::POOL_HANDLE)?
            .map(|t| dec_pool_handle(cx, t)))
    }

    pub(crate) fn pe_identifier(&mut self, cx: &mut Cx<'a>) -> PResult<'a, PeIdentifier> {
        let t = self.seq.required(cx, ty::PE_IDENTIFIER, "PE identifier")?;
        dec_pe_identifier(t)
    }

    pub(crate) fn opt_pe_identifier(
        &mut self,
        cx: &mut Cx<'a>,
    ) -> PResult<'a, Option<PeIdentifier>> {
        match self.seq.next_if(cx, |t| t == ty::PE_IDENTIFIER)? {
            Some(t) => Ok(Some(dec_pe_identifier(t)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn pool_element(&mut self, cx: &mut Cx<'a>) -> PResult<'a, PoolElementParameter> {
        let t = self.seq.required(cx, ty::POOL_ELEMENT, "pool element")?;
        dec_pool_element(cx, t)
    }

    /// Appends the consecutive Pool Element parameters that follow (none is fine).
    pub(crate) fn pool_elements(
        &mut self,
        cx: &mut Cx<'a>,
        out: &mut Vec<PoolElementParameter>,
    ) -> PResult<'a, ()> {
        // Capacity hint counting pool elements of at least 40 bytes (header and fixed fields,
        // a transport with one IPv4 address, Round Robin): bounded by the data, so garbage
        // cannot make it reserve much; smaller (Opaque) ones just end the count early.
        out.reserve(self.seq.count_ahead(ty::POOL_ELEMENT, 40));
        while let Some(t) = self.seq.next_if(cx, |t| t == ty::POOL_ELEMENT)? {
            out.push(PoolElementParameter {
                pe_id: PeIdentifier(0),
                home_server_id: ServerId(0),
                registration_life: 0,
                user_transport: empty_transport(),
                policy: Policy::RoundRobin,
                asap_transport: None,
            });
            if let Some(slot) = out.last_mut() {
                dec_pool_element_into(cx, t, slot)?;
            }
        }
        Ok(())
    }

    pub(crate) fn opt_policy(&mut self, cx: &mut Cx<'a>) -> PResult<'a, Option<Policy>> {
        match self
            .seq
            .next_if(cx, |t| t == ty::POOL_MEMBER_SELECTION_POLICY)?
        {
            Some(t) => Ok(Some(dec_policy(t)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn operation_error(&mut self, cx: &mut Cx<'a>) -> PResult<'a, OperationError> {
        let t = self
            .seq
            .required(cx, ty::OPERATION_ERROR, "operation error")?;
        dec_operation_error(cx, t)
    }

    pub(crate) fn opt_operation_error(
        &mut self,
        cx: &mut Cx<'a>,
    ) -> PResult<'a, Option<OperationError>> {
        match self.seq.next_if(cx, |t| t == ty::OPERATION_ERROR)? {
            Some(t) => Ok(Some(dec_operation_error(cx, t)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn cookie(&mut self, cx: &mut Cx<'a>) -> PResult<'a, Cookie> {
        let t = self.seq.required(cx, ty::COOKIE, "cookie")?;
        Ok(dec_cookie(cx, t))
    }

    pub(crate) fn opt_hr_option(
        &mut self,
        cx: &mut Cx<'a>,
    ) -> PResult<'a, Option<HandleResolutionOption>> {
        match self
            .seq
            .next_if(cx, |t| t == ty::HANDLE_RESOLUTION_OPTION)?
        {
            Some(t) => Ok(Some(dec_hr_option(t)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn opt_transport(
        &mut self,
        cx: &mut Cx<'a>,
    ) -> PResult<'a, Option<TransportParameter>> {
        match self.seq.next_if(cx, is_transport)? {
            Some(t) => Ok(Some(dec_transport(cx, t)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn pe_checksum(&mut self, cx: &mut Cx<'a>) -> PResult<'a, Option<PeChecksum>> {
        match self.seq.next_if(cx, |t| t == ty::PE_CHECKSUM)? {
            Some(t) => Ok(Some(dec_pe_checksum(t)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn opt_server_information(
        &mut self,
        cx: &mut Cx<'a>,
    ) -> PResult<'a, Option<ServerInformation>> {
        match self.seq.next_if(cx, |t| t == ty::SERVER_INFORMATION)? {
            Some(t) => Ok(Some(dec_server_information(cx, t)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn end(mut self, cx: &mut Cx<'a>) -> PResult<'a, Vec<SkippedParameter>> {
        self.seq.end(cx)?;
        Ok(core::mem::take(&mut cx.skipped))
    }
}
