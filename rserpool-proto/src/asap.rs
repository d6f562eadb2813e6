//! ASAP messages (RFC 5352 §2.2, with RSPLIB's extensions): decoder and encoder.
//!
//! Every message keeps the flag bits its type does not define (`reserved_flags`) and the
//! unknown "skip" parameters found at its top level (`skipped`), so that a decoded message
//! re-encodes to the same bytes. Named flag bits are ignored in `reserved_flags` when
//! encoding.

use bytes::{BufMut, Bytes};
use core::net::IpAddr;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::ids::{PeIdentifier, PoolHandle, ServerId};
use crate::param::{
    Cookie, Encode, HandleResolutionOption, OperationError, PoolElementParameter, Reader,
    ServerInformation, SkippedParameter, UnknownParameter,
};
use crate::policy::Policy;
use crate::tlv::{
    Cx, PResult, Writer, header, opt_len, put_message_header, skipped_len, to_decode_error, u32_be,
};
use crate::transport::TransportParameter;

/// ASAP message type codes (RFC 5352 §2.2, §8.1).
pub mod msg_type {
    /// ASAP_REGISTRATION.
    pub const REGISTRATION: u8 = 0x01;
    /// ASAP_DEREGISTRATION.
    pub const DEREGISTRATION: u8 = 0x02;
    /// ASAP_REGISTRATION_RESPONSE.
    pub const REGISTRATION_RESPONSE: u8 = 0x03;
    /// ASAP_DEREGISTRATION_RESPONSE.
    pub const DEREGISTRATION_RESPONSE: u8 = 0x04;
    /// ASAP_HANDLE_RESOLUTION.
    pub const HANDLE_RESOLUTION: u8 = 0x05;
    /// ASAP_HANDLE_RESOLUTION_RESPONSE.
    pub const HANDLE_RESOLUTION_RESPONSE: u8 = 0x06;
    /// ASAP_ENDPOINT_KEEP_ALIVE.
    pub const ENDPOINT_KEEP_ALIVE: u8 = 0x07;
    /// ASAP_ENDPOINT_KEEP_ALIVE_ACK.
    pub const ENDPOINT_KEEP_ALIVE_ACK: u8 = 0x08;
    /// ASAP_ENDPOINT_UNREACHABLE.
    pub const ENDPOINT_UNREACHABLE: u8 = 0x09;
    /// ASAP_SERVER_ANNOUNCE.
    pub const SERVER_ANNOUNCE: u8 = 0x0a;
    /// ASAP_COOKIE.
    pub const COOKIE: u8 = 0x0b;
    /// ASAP_COOKIE_ECHO.
    pub const COOKIE_ECHO: u8 = 0x0c;
    /// ASAP_BUSINESS_CARD.
    pub const BUSINESS_CARD: u8 = 0x0d;
    /// ASAP_ERROR.
    pub const ERROR: u8 = 0x0e;
}

/// Flag bit 0x01 of the message types that define one (R, S, A, H).
const FLAG: u8 = 0x01;

fn flags(defined: bool, reserved: u8) -> u8 {
    (reserved & !FLAG) | u8::from(defined)
}

/// One message type's body codec.
pub(crate) trait Body: Sized {
    const TYPE: u8;
    fn flags(&self) -> u8;
    fn body_len(&self) -> usize;
    fn put_body<B: BufMut>(&self, buf: &mut B);
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self>;
}

/// ASAP_REGISTRATION (0x01): a PE registers with its home registrar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The pool to join.
    pub pool_handle: PoolHandle,
    /// The PE (without ASAP transport).
    pub pool_element: PoolElementParameter,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Registration {
    /// A registration without extras.
    pub fn new(pool_handle: PoolHandle, pool_element: PoolElementParameter) -> Self {
        Registration {
            reserved_flags: 0,
            pool_handle,
            pool_element,
            skipped: Vec::new(),
        }
    }
}

impl Body for Registration {
    const TYPE: u8 = msg_type::REGISTRATION;
    fn flags(&self) -> u8 {
        self.reserved_flags
    }
    fn body_len(&self) -> usize {
        self.pool_handle.encoded_len()
            + self.pool_element.encoded_len()
            + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.put(&self.pool_handle);
        w.put(&self.pool_element);
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let mut r = Reader::new(body);
        let pool_handle = r.pool_handle(cx)?;
        let pool_element = r.pool_element(cx)?;
        Ok(Registration {
            reserved_flags: flags,
            pool_handle,
            pool_element,
            skipped: r.end(cx)?,
        })
    }
}

/// The shape shared by Deregistration, Endpoint Keep-Alive Ack and Endpoint Unreachable:
/// pool handle and PE identifier.
macro_rules! handle_and_id {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Default)]
        pub struct $name {
            /// Undefined flag bits, kept verbatim (normally 0).
            pub reserved_flags: u8,
            /// The pool handle.
            pub pool_handle: PoolHandle,
            /// The PE identifier.
            pub pe_id: PeIdentifier,
            /// Unknown skip-parameters found at the top level.
            pub skipped: Vec<SkippedParameter>,
        }

        impl $name {
            /// The message for a pool handle and PE identifier.
            pub fn new(pool_handle: PoolHandle, pe_id: PeIdentifier) -> Self {
                $name { reserved_flags: 0, pool_handle, pe_id, skipped: Vec::new() }
            }
        }

        impl Body for $name {
            const TYPE: u8 = $ty;
            fn flags(&self) -> u8 {
                self.reserved_flags
            }
            fn body_len(&self) -> usize {
                self.pool_handle.encoded_len() + 8 + skipped_len(&self.skipped)
            }
            fn put_body<B: BufMut>(&self, buf: &mut B) {
                let mut w = Writer::new(buf, &self.skipped);
                w.put(&self.pool_handle);
                w.put(&self.pe_id);
                w.finish();
            }
            fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
                let mut r = Reader::new(body);
                let pool_handle = r.pool_handle(cx)?;
                let pe_id = r.pe_identifier(cx)?;
                Ok($name { reserved_flags: flags, pool_handle, pe_id, skipped: r.end(cx)? })
            }
        }
    };
}

handle_and_id!(
    /// ASAP_DEREGISTRATION (0x02): a PE leaves a pool.
    Deregistration,
    msg_type::DEREGISTRATION
);
handle_and_id!(
    /// ASAP_ENDPOINT_KEEP_ALIVE_ACK (0x08): a PE answers a keep-alive.
    EndpointKeepAliveAck,
    msg_type::ENDPOINT_KEEP_ALIVE_ACK
);
handle_and_id!(
    /// ASAP_ENDPOINT_UNREACHABLE (0x09): a PU or PE reports a PE it could not reach.
    EndpointUnreachable,
    msg_type::ENDPOINT_UNREACHABLE
);

/// ASAP_REGISTRATION_RESPONSE (0x03).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RegistrationResponse {
    /// R flag: the registration was rejected.
    pub reject: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The pool handle.
    pub pool_handle: PoolHandle,
    /// The PE identifier.
    pub pe_id: PeIdentifier,
    /// Why the registration failed (with R = 0: a warning; RSPLIB treats any error as failure).
    pub error: Option<OperationError>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for RegistrationResponse {
    const TYPE: u8 = msg_type::REGISTRATION_RESPONSE;
    fn flags(&self) -> u8 {
        flags(self.reject, self.reserved_flags)
    }
    fn body_len(&self) -> usize {
        self.pool_handle.encoded_len()
            + 8
            + opt_len(self.error.as_ref())
            + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.put(&self.pool_handle);
        w.put(&self.pe_id);
        w.opt(self.error.as_ref());
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let mut r = Reader::new(body);
        let pool_handle = r.pool_handle(cx)?;
        let pe_id = r.pe_identifier(cx)?;
        let error = r.opt_operation_error(cx)?;
        Ok(RegistrationResponse {
            reject: flags & FLAG != 0,
            reserved_flags: flags & !FLAG,
            pool_handle,
            pe_id,
            error,
            skipped: r.end(cx)?,
        })
    }
}

/// ASAP_DEREGISTRATION_RESPONSE (0x04). It defines no flag.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeregistrationResponse {
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The pool handle.
    pub pool_handle: PoolHandle,
    /// The PE identifier.
    pub pe_id: PeIdentifier,
    /// Why the deregistration was refused.
    pub error: Option<OperationError>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for DeregistrationResponse {
    const TYPE: u8 = msg_type::DEREGISTRATION_RESPONSE;
    fn flags(&self) -> u8 {
        self.reserved_flags
    }
    fn body_len(&self) -> usize {
        self.pool_handle.encoded_len()
            + 8
            + opt_len(self.error.as_ref())
            + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.put(&self.pool_handle);
        w.put(&self.pe_id);
        w.opt(self.error.as_ref());
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let mut r = Reader::new(body);
        let pool_handle = r.pool_handle(cx)?;
        let pe_id = r.pe_identifier(cx)?;
        let error = r.opt_operation_error(cx)?;
        Ok(DeregistrationResponse {
            reserved_flags: flags,
            pool_handle,
            pe_id,
            error,
            skipped: r.end(cx)?,
        })
    }
}

/// ASAP_HANDLE_RESOLUTION (0x05): a PU asks for the PEs of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HandleResolution {
    /// S flag: subscribe to updates of the pool.
    pub subscribe: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The pool to resolve.
    pub pool_handle: PoolHandle,
    /// How many PEs are wanted (RSPLIB's Handle Resolution Option).
    pub option: Option<HandleResolutionOption>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for HandleResolution {
    const TYPE: u8 = msg_type::HANDLE_RESOLUTION;
    fn flags(&self) -> u8 {
        flags(self.subscribe, self.reserved_flags)
    }
    fn body_len(&self) -> usize {
        self.pool_handle.encoded_len() + opt_len(self.option.as_ref()) + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.put(&self.pool_handle);
        w.opt(self.option.as_ref());
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let mut r = Reader::new(body);
        let pool_handle = r.pool_handle(cx)?;
        let option = r.opt_hr_option(cx)?;
        Ok(HandleResolution {
            subscribe: flags & FLAG != 0,
            reserved_flags: flags & !FLAG,
            pool_handle,
            option,
            skipped: r.end(cx)?,
        })
    }
}

/// ASAP_HANDLE_RESOLUTION_RESPONSE (0x06).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HandleResolutionResponse {
    /// A flag: the subscription was accepted.
    pub accept_subscription: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The pool handle.
    pub pool_handle: PoolHandle,
    /// The pool's overall policy (absent means Round Robin; RSPLIB PUs require it).
    pub policy: Option<Policy>,
    /// The selected PEs.
    pub pool_elements: Vec<PoolElementParameter>,
    /// Why the resolution failed.
    pub error: Option<OperationError>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for HandleResolutionResponse {
    const TYPE: u8 = msg_type::HANDLE_RESOLUTION_RESPONSE;
    fn flags(&self) -> u8 {
        flags(self.accept_subscription, self.reserved_flags)
    }
    fn body_len(&self) -> usize {
        self.pool_handle.encoded_len()
            + opt_len(self.policy.as_ref())
            + self
                .pool_elements
                .iter()
                .map(Encode::encoded_len)
                .sum::<usize>()
            + opt_len(self.error.as_ref())
            + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.put(&self.pool_handle);
        w.opt(self.policy.as_ref());
        for pe in &self.pool_elements {
            w.put(pe);
        }
        w.opt(self.error.as_ref());
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let mut r = Reader::new(body);
        let pool_handle = r.pool_handle(cx)?;
        let policy = r.opt_policy(cx)?;
        let mut pool_elements = Vec::new();
        r.pool_elements(cx, &mut pool_elements)?;
        let error = r.opt_operation_error(cx)?;
        Ok(HandleResolutionResponse {
            accept_subscription: flags & FLAG != 0,
            reserved_flags: flags & !FLAG,
            pool_handle,
            policy,
            pool_elements,
            error,
            skipped: r.end(cx)?,
        })
    }
}

/// ASAP_ENDPOINT_KEEP_ALIVE (0x07): a registrar checks a PE (and may claim to be its home).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EndpointKeepAlive {
    /// H flag: the sender wants to become the PE's home registrar.
    pub home: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The sending registrar's identifier.
    pub server_id: ServerId,
    /// The pool handle.
    pub pool_handle: PoolHandle,
    /// The PE addressed (RSPLIB extension; absent in the RFC form).
    pub pe_id: Option<PeIdentifier>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for EndpointKeepAlive {
    const TYPE: u8 = msg_type::ENDPOINT_KEEP_ALIVE;
    fn flags(&self) -> u8 {
        flags(self.home, self.reserved_flags)
    }
    fn body_len(&self) -> usize {
        4 + self.pool_handle.encoded_len()
            + opt_len(self.pe_id.as_ref())
            + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.fixed().put_u32(self.server_id.0);
        w.put(&self.pool_handle);
        w.opt(self.pe_id.as_ref());
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let (body, server_id) = u32_be(body)?;
        let mut r = Reader::new(body);
        let pool_handle = r.pool_handle(cx)?;
        let pe_id = r.opt_pe_identifier(cx)?;
        Ok(EndpointKeepAlive {
            home: flags & FLAG != 0,
            reserved_flags: flags & !FLAG,
            server_id: ServerId(server_id),
            pool_handle,
            pe_id,
            skipped: r.end(cx)?,
        })
    }
}

/// ASAP_SERVER_ANNOUNCE (0x0a): a registrar announces itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServerAnnounce {
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The announcing registrar's identifier.
    pub server_id: ServerId,
    /// Its ASAP transports (RSPLIB sends none: use the datagram's source address and port).
    pub transports: Vec<TransportParameter>,
    /// RSPLIB extension: a Server Information parameter after the transports.
    pub server_information: Option<ServerInformation>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for ServerAnnounce {
    const TYPE: u8 = msg_type::SERVER_ANNOUNCE;
    fn flags(&self) -> u8 {
        self.reserved_flags
    }
    fn body_len(&self) -> usize {
        4 + self
            .transports
            .iter()
            .map(Encode::encoded_len)
            .sum::<usize>()
            + opt_len(self.server_information.as_ref())
            + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.fixed().put_u32(self.server_id.0);
        for t in &self.transports {
            w.put(t);
        }
        w.opt(self.server_information.as_ref());
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let (body, server_id) = u32_be(body)?;
        let mut r = Reader::new(body);
        let mut transports = Vec::new();
        while let Some(t) = r.opt_transport(cx)? {
            transports.push(t);
        }
        let server_information = r.opt_server_information(cx)?;
        Ok(ServerAnnounce {
            reserved_flags: flags,
            server_id: ServerId(server_id),
            transports,
            server_information,
            skipped: r.end(cx)?,
        })
    }
}

impl ServerAnnounce {
    /// The registrar's ASAP addresses as announced (transport addresses, then those of the
    /// Server Information parameter).
    pub fn addresses(&self) -> impl Iterator<Item = (&TransportParameter, &IpAddr)> {
        self.transports
            .iter()
            .chain(self.server_information.as_ref().map(|s| &s.transport))
            .flat_map(|t| t.addresses.iter().map(move |a| (t, a)))
    }
}

macro_rules! cookie_message {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Default)]
        pub struct $name {
            /// Undefined flag bits, kept verbatim (normally 0).
            pub reserved_flags: u8,
            /// The cookie.
            pub cookie: Cookie,
            /// Unknown skip-parameters found at the top level.
            pub skipped: Vec<SkippedParameter>,
        }

        impl $name {
            /// The message carrying `cookie`.
            pub fn new(cookie: impl Into<Bytes>) -> Self {
                $name { reserved_flags: 0, cookie: Cookie(cookie.into()), skipped: Vec::new() }
            }
        }

        impl Body for $name {
            const TYPE: u8 = $ty;
            fn flags(&self) -> u8 {
                self.reserved_flags
            }
            fn body_len(&self) -> usize {
                self.cookie.encoded_len() + skipped_len(&self.skipped)
            }
            fn put_body<B: BufMut>(&self, buf: &mut B) {
                let mut w = Writer::new(buf, &self.skipped);
                w.put(&self.cookie);
                w.finish();
            }
            fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
                let mut r = Reader::new(body);
                let cookie = r.cookie(cx)?;
                Ok($name { reserved_flags: flags, cookie, skipped: r.end(cx)? })
            }
        }
    };
}

cookie_message!(
    /// ASAP_COOKIE (0x0b): a PE hands its PU a state cookie.
    CookieMessage,
    msg_type::COOKIE
);
cookie_message!(
    /// ASAP_COOKIE_ECHO (0x0c): a PU hands the latest cookie to the PE it failed over to.
    CookieEcho,
    msg_type::COOKIE_ECHO
);

/// ASAP_BUSINESS_CARD (0x0d): the sender's pool and preferred failover order. RFC form
/// (pool handle, PEs); an optional policy after the pool handle (RSPLIB's creator writes one)
/// is accepted and kept.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BusinessCard {
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The sender's pool.
    pub pool_handle: PoolHandle,
    /// RSPLIB's extra policy parameter.
    pub policy: Option<Policy>,
    /// PEs in preferred failover order.
    pub pool_elements: Vec<PoolElementParameter>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for BusinessCard {
    const TYPE: u8 = msg_type::BUSINESS_CARD;
    fn flags(&self) -> u8 {
        self.reserved_flags
    }
    fn body_len(&self) -> usize {
        self.pool_handle.encoded_len()
            + opt_len(self.policy.as_ref())
            + self
                .pool_elements
                .iter()
                .map(Encode::encoded_len)
                .sum::<usize>()
            + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.put(&self.pool_handle);
        w.opt(self.policy.as_ref());
        for pe in &self.pool_elements {
            w.put(pe);
        }
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let mut r = Reader::new(body);
        let pool_handle = r.pool_handle(cx)?;
        let policy = r.opt_policy(cx)?;
        let mut pool_elements = Vec::new();
        r.pool_elements(cx, &mut pool_elements)?;
        Ok(BusinessCard {
            reserved_flags: flags,
            pool_handle,
            policy,
            pool_elements,
            skipped: r.end(cx)?,
        })
    }
}

/// ASAP_ERROR (0x0e): reports an unrecognized message or parameter.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AsapError {
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// The error.
    pub error: OperationError,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for AsapError {
    const TYPE: u8 = msg_type::ERROR;
    fn flags(&self) -> u8 {
        self.reserved_flags
    }
    fn body_len(&self) -> usize {
        self.error.encoded_len() + skipped_len(&self.skipped)
    }
    fn put_body<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.put(&self.error);
        w.finish();
    }
    fn decode_body<'a>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, Self> {
        let mut r = Reader::new(body);
        let error = r.operation_error(cx)?;
        Ok(AsapError {
            reserved_flags: flags,
            error,
            skipped: r.end(cx)?,
        })
    }
}

/// An ASAP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsapMessage {
    /// ASAP_REGISTRATION (0x01).
    Registration(Registration),
    /// ASAP_DEREGISTRATION (0x02).
    Deregistration(Deregistration),
    /// ASAP_REGISTRATION_RESPONSE (0x03).
    RegistrationResponse(RegistrationResponse),
    /// ASAP_DEREGISTRATION_RESPONSE (0x04).
    DeregistrationResponse(DeregistrationResponse),
    /// ASAP_HANDLE_RESOLUTION (0x05).
    HandleResolution(HandleResolution),
    /// ASAP_HANDLE_RESOLUTION_RESPONSE (0x06).
    HandleResolutionResponse(HandleResolutionResponse),
    /// ASAP_ENDPOINT_KEEP_ALIVE (0x07).
    EndpointKeepAlive(EndpointKeepAlive),
    /// ASAP_ENDPOINT_KEEP_ALIVE_ACK (0x08).
    EndpointKeepAliveAck(EndpointKeepAliveAck),
    /// ASAP_ENDPOINT_UNREACHABLE (0x09).
    EndpointUnreachable(EndpointUnreachable),
    /// ASAP_SERVER_ANNOUNCE (0x0a).
    ServerAnnounce(ServerAnnounce),
    /// ASAP_COOKIE (0x0b).
    Cookie(CookieMessage),
    /// ASAP_COOKIE_ECHO (0x0c).
    CookieEcho(CookieEcho),
    /// ASAP_BUSINESS_CARD (0x0d).
    BusinessCard(BusinessCard),
    /// ASAP_ERROR (0x0e).
    Error(AsapError),
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            AsapMessage::Registration($m) => $e,
            AsapMessage::Deregistration($m) => $e,
            AsapMessage::RegistrationResponse($m) => $e,
            AsapMessage::DeregistrationResponse($m) => $e,
            AsapMessage::HandleResolution($m) => $e,
            AsapMessage::HandleResolutionResponse($m) => $e,
            AsapMessage::EndpointKeepAlive($m) => $e,
            AsapMessage::EndpointKeepAliveAck($m) => $e,
            AsapMessage::EndpointUnreachable($m) => $e,
            AsapMessage::ServerAnnounce($m) => $e,
            AsapMessage::Cookie($m) => $e,
            AsapMessage::CookieEcho($m) => $e,
            AsapMessage::BusinessCard($m) => $e,
            AsapMessage::Error($m) => $e,
        }
    };
}

fn type_of<T: Body>(_: &T) -> u8 {
    T::TYPE
}

/// The name of an ASAP message type (RFC 5352 §2.2), "unknown" for others.
pub fn message_name(ty: u8) -> &'static str {
    match ty {
        msg_type::REGISTRATION => "ASAP_REGISTRATION",
        msg_type::DEREGISTRATION => "ASAP_DEREGISTRATION",
        msg_type::REGISTRATION_RESPONSE => "ASAP_REGISTRATION_RESPONSE",
        msg_type::DEREGISTRATION_RESPONSE => "ASAP_DEREGISTRATION_RESPONSE",
        msg_type::HANDLE_RESOLUTION => "ASAP_HANDLE_RESOLUTION",
        msg_type::HANDLE_RESOLUTION_RESPONSE => "ASAP_HANDLE_RESOLUTION_RESPONSE",
        msg_type::ENDPOINT_KEEP_ALIVE => "ASAP_ENDPOINT_KEEP_ALIVE",
        msg_type::ENDPOINT_KEEP_ALIVE_ACK => "ASAP_ENDPOINT_KEEP_ALIVE_ACK",
        msg_type::ENDPOINT_UNREACHABLE => "ASAP_ENDPOINT_UNREACHABLE",
        msg_type::SERVER_ANNOUNCE => "ASAP_SERVER_ANNOUNCE",
        msg_type::COOKIE => "ASAP_COOKIE",
        msg_type::COOKIE_ECHO => "ASAP_COOKIE_ECHO",
        msg_type::BUSINESS_CARD => "ASAP_BUSINESS_CARD",
        msg_type::ERROR => "ASAP_ERROR",
        _ => "unknown",
    }
}

impl AsapMessage {
    /// Decodes one message (copying `data` once into a shared buffer).
    ///
    /// ```
    /// use rserpool_proto::AsapMessage;
    /// // ASAP_COOKIE carrying "hello" (RSPLIB length convention: 16 = padded size).
    /// let wire = [0x0b, 0, 0, 16, 0, 0x0d, 0, 9, b'h', b'e', b'l', b'l', b'o', 0, 0, 0];
    /// let m = AsapMessage::decode(&wire)?;
    /// let AsapMessage::Cookie(c) = &m else { unreachable!() };
    /// assert_eq!(&c.cookie.0[..], b"hello");
    /// assert_eq!(&m.to_bytes()[..], &wire[..]);
    /// # Ok::<(), rserpool_proto::DecodeError>(())
    /// ```
    pub fn decode(data: &[u8]) -> Result<AsapMessage, DecodeError> {
        Self::decode_bytes(&Bytes::copy_from_slice(data))
    }

    /// Decodes one message without copying: pool handles, cookies and other opaque fields are
    /// views of `data`.
    pub fn decode_bytes(data: &Bytes) -> Result<AsapMessage, DecodeError> {
        Self::decode_with_unrecognized(data).map(|(m, _)| m)
    }

    /// Decodes one message and also returns every unknown parameter whose action bits are
    /// `11` ("skip and report"), at any depth, in wire order: a registrar answers them with an
    /// ASAP Error holding [`OperationError::unrecognized_parameters`].
    pub fn decode_with_unrecognized(
        data: &Bytes,
    ) -> Result<(AsapMessage, Vec<UnknownParameter>), DecodeError> {
        let h = header(data)?;
        let mut cx = Cx::new(data);
        let f = h.flags;
        let b = h.body;
        let r = match h.ty {
            msg_type::REGISTRATION => Body::decode_body(&mut cx, f, b).map(Self::Registration),
            msg_type::DEREGISTRATION => Body::decode_body(&mut cx, f, b).map(Self::Deregistration),
            msg_type::REGISTRATION_RESPONSE => {
                Body::decode_body(&mut cx, f, b).map(Self::RegistrationResponse)
            }
            msg_type::DEREGISTRATION_RESPONSE => {
                Body::decode_body(&mut cx, f, b).map(Self::DeregistrationResponse)
            }
            msg_type::HANDLE_RESOLUTION => {
                Body::decode_body(&mut cx, f, b).map(Self::HandleResolution)
            }
            msg_type::HANDLE_RESOLUTION_RESPONSE => {
                Body::decode_body(&mut cx, f, b).map(Self::HandleResolutionResponse)
            }
            msg_type::ENDPOINT_KEEP_ALIVE => {
                Body::decode_body(&mut cx, f, b).map(Self::EndpointKeepAlive)
            }
            msg_type::ENDPOINT_KEEP_ALIVE_ACK => {
                Body::decode_body(&mut cx, f, b).map(Self::EndpointKeepAliveAck)
            }
            msg_type::ENDPOINT_UNREACHABLE => {
                Body::decode_body(&mut cx, f, b).map(Self::EndpointUnreachable)
            }
            msg_type::SERVER_ANNOUNCE => Body::decode_body(&mut cx, f, b).map(Self::ServerAnnounce),
            msg_type::COOKIE => Body::decode_body(&mut cx, f, b).map(Self::Cookie),
            msg_type::COOKIE_ECHO => Body::decode_body(&mut cx, f, b).map(Self::CookieEcho),
            msg_type::BUSINESS_CARD => Body::decode_body(&mut cx, f, b).map(Self::BusinessCard),
            msg_type::ERROR => Body::decode_body(&mut cx, f, b).map(Self::Error),
            ty => {
                return Err(DecodeError::new(
                    0,
                    DecodeErrorKind::UnknownMessageType(ty),
                    data.slice_ref(h.message),
                ));
            }
        };
        match r {
            Ok(m) => Ok((m, cx.reports)),
            Err(e) => Err(to_decode_error(data, e)),
        }
    }

    /// The message type code.
    pub fn message_type(&self) -> u8 {
        each!(self, m => type_of(m))
    }

    /// The message type's name, e.g. `ASAP_REGISTRATION`.
    pub fn name(&self) -> &'static str {
        message_name(self.message_type())
    }

    /// The flags byte as encoded.
    pub fn flags(&self) -> u8 {
        each!(self, m => m.flags())
    }

    /// The unknown skip-parameters kept from decoding.
    pub fn skipped(&self) -> &[SkippedParameter] {
        each!(self, m => &m.skipped)
    }

    /// Encoded size in bytes (= the message length field, RSPLIB form).
    pub fn encoded_len(&self) -> usize {
        4 + each!(self, m => m.body_len())
    }

    /// Writes the message (RSPLIB form: every TLV padded, length = padded size).
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_message_header(buf, self.message_type(), self.flags(), self.encoded_len());
        each!(self, m => m.put_body(buf))
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v);
        Bytes::from(v)
    }
}

impl Encode for AsapMessage {
    fn encoded_len(&self) -> usize {
        AsapMessage::encoded_len(self)
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        AsapMessage::encode(self, buf);
    }
}

macro_rules! from_body {
    ($($name:ident => $variant:ident),* $(,)?) => {
        $(impl From<$name> for AsapMessage {
            fn from(m: $name) -> Self {
                AsapMessage::$variant(m)
            }
        })*
    };
}

from_body!(
    Registration => Registration,
    Deregistration => Deregistration,
    RegistrationResponse => RegistrationResponse,
    DeregistrationResponse => DeregistrationResponse,
    HandleResolution => HandleResolution,
    HandleResolutionResponse => HandleResolutionResponse,
    EndpointKeepAlive => EndpointKeepAlive,
    EndpointKeepAliveAck => EndpointKeepAliveAck,
    EndpointUnreachable => EndpointUnreachable,
    ServerAnnounce => ServerAnnounce,
    CookieMessage => Cookie,
    CookieEcho => CookieEcho,
    BusinessCard => BusinessCard,
    AsapError => Error,
);
