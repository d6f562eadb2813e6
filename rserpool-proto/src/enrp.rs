//! ENRP messages (RFC 5353 §2, with the takeover-suggestion flag of
//! draft-dreibholz-rserpool-enrp-takeover): decoder and encoder.
//!
//! Every ENRP message starts with the sending and receiving server identifiers. As in
//! [`crate::asap`], undefined flag bits (`reserved_flags`) and top-level unknown "skip"
//! parameters (`skipped`) are kept so that decoded messages re-encode byte for byte.

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::ids::{PoolHandle, ServerId};
use crate::param::{
    Encode, OperationError, PeChecksum, PoolElementParameter, Reader, ServerInformation,
    SkippedParameter, UnknownParameter,
};
use crate::tlv::{
    Cx, PResult, Writer, header, opt_len, put_message_header, skipped_len, to_decode_error, u16_be,
    u32_be,
};

/// ENRP message type codes (RFC 5353 §2).
pub mod msg_type {
    /// ENRP_PRESENCE.
    pub const PRESENCE: u8 = 0x01;
    /// ENRP_HANDLE_TABLE_REQUEST.
    pub const HANDLE_TABLE_REQUEST: u8 = 0x02;
    /// ENRP_HANDLE_TABLE_RESPONSE.
    pub const HANDLE_TABLE_RESPONSE: u8 = 0x03;
    /// ENRP_HANDLE_UPDATE.
    pub const HANDLE_UPDATE: u8 = 0x04;
    /// ENRP_LIST_REQUEST.
    pub const LIST_REQUEST: u8 = 0x05;
    /// ENRP_LIST_RESPONSE.
    pub const LIST_RESPONSE: u8 = 0x06;
    /// ENRP_INIT_TAKEOVER.
    pub const INIT_TAKEOVER: u8 = 0x07;
    /// ENRP_INIT_TAKEOVER_ACK.
    pub const INIT_TAKEOVER_ACK: u8 = 0x08;
    /// ENRP_TAKEOVER_SERVER.
    pub const TAKEOVER_SERVER: u8 = 0x09;
    /// ENRP_ERROR.
    pub const ERROR: u8 = 0x0a;
}

/// The name of an ENRP message type, "unknown" for others.
pub fn message_name(ty: u8) -> &'static str {
    match ty {
        msg_type::PRESENCE => "ENRP_PRESENCE",
        msg_type::HANDLE_TABLE_REQUEST => "ENRP_HANDLE_TABLE_REQUEST",
        msg_type::HANDLE_TABLE_RESPONSE => "ENRP_HANDLE_TABLE_RESPONSE",
        msg_type::HANDLE_UPDATE => "ENRP_HANDLE_UPDATE",
        msg_type::LIST_REQUEST => "ENRP_LIST_REQUEST",
        msg_type::LIST_RESPONSE => "ENRP_LIST_RESPONSE",
        msg_type::INIT_TAKEOVER => "ENRP_INIT_TAKEOVER",
        msg_type::INIT_TAKEOVER_ACK => "ENRP_INIT_TAKEOVER_ACK",
        msg_type::TAKEOVER_SERVER => "ENRP_TAKEOVER_SERVER",
        msg_type::ERROR => "ENRP_ERROR",
        _ => "unknown",
    }
}

/// Flag bit 0x01 (R, W, T) and 0x02 (M of the Handle Table Response).
const BIT0: u8 = 0x01;
const BIT1: u8 = 0x02;

pub(crate) trait Body: Sized {
    const TYPE: u8;
    fn flags(&self) -> u8;
    fn ids(&self) -> (ServerId, ServerId);
    /// Body length after the two server identifiers.
    fn rest_len(&self) -> usize;
    /// Writes the body after the two server identifiers.
    fn put_rest<B: BufMut>(&self, buf: &mut B);
    fn decode_rest<'a>(
        cx: &mut Cx<'a>,
        flags: u8,
        ids: (ServerId, ServerId),
        rest: &'a [u8],
    ) -> PResult<'a, Self>;
}

/// ENRP_PRESENCE (0x01): a registrar's heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Presence {
    /// R flag: the receiver must answer with a Presence.
    pub reply_required: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// Sending server's identifier.
    pub sender: ServerId,
    /// Receiving server's identifier (0 when multicast or unknown).
    pub receiver: ServerId,
    /// The sender's ownership checksum (RSPLIB always sends it).
    pub checksum: Option<PeChecksum>,
    /// The sender's identity and ENRP transport (RSPLIB always sends it).
    pub server_information: Option<ServerInformation>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for Presence {
    const TYPE: u8 = msg_type::PRESENCE;
    fn flags(&self) -> u8 {
        (self.reserved_flags & !BIT0) | u8::from(self.reply_required)
    }
    fn ids(&self) -> (ServerId, ServerId) {
        (self.sender, self.receiver)
    }
    fn rest_len(&self) -> usize {
        opt_len(self.checksum.as_ref())
            + opt_len(self.server_information.as_ref())
            + skipped_len(&self.skipped)
    }
    fn put_rest<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.opt(self.checksum.as_ref());
        w.opt(self.server_information.as_ref());
        w.finish();
    }
    fn decode_rest<'a>(
        cx: &mut Cx<'a>,
        flags: u8,
        (sender, receiver): (ServerId, ServerId),
        rest: &'a [u8],
    ) -> PResult<'a, Self> {
        let mut r = Reader::new(rest);
        let checksum = r.pe_checksum(cx)?;
        let server_information = r.opt_server_information(cx)?;
        Ok(Presence {
            reply_required: flags & BIT0 != 0,
            reserved_flags: flags & !BIT0,
            sender,
            receiver,
            checksum,
            server_information,
            skipped: r.end(cx)?,
        })
    }
}

/// ENRP_HANDLE_TABLE_REQUEST (0x02).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HandleTableRequest {
    /// W flag: send only the PEs the receiver is home for ("own children only").
    pub own_children_only: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// Sending server's identifier.
    pub sender: ServerId,
    /// Receiving server's identifier.
    pub receiver: ServerId,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for HandleTableRequest {
    const TYPE: u8 = msg_type::HANDLE_TABLE_REQUEST;
    fn flags(&self) -> u8 {
        (self.reserved_flags & !BIT0) | u8::from(self.own_children_only)
    }
    fn ids(&self) -> (ServerId, ServerId) {
        (self.sender, self.receiver)
    }
    fn rest_len(&self) -> usize {
        skipped_len(&self.skipped)
    }
    fn put_rest<B: BufMut>(&self, buf: &mut B) {
        Writer::new(buf, &self.skipped).finish();
    }
    fn decode_rest<'a>(
        cx: &mut Cx<'a>,
        flags: u8,
        (sender, receiver): (ServerId, ServerId),
        rest: &'a [u8],
    ) -> PResult<'a, Self> {
        Ok(HandleTableRequest {
            own_children_only: flags & BIT0 != 0,
            reserved_flags: flags & !BIT0,
            sender,
            receiver,
            skipped: Reader::new(rest).end(cx)?,
        })
    }
}

/// One pool in a Handle Table Response: its handle and one or more PEs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HandleTableEntry {
    /// The pool handle.
    pub pool_handle: PoolHandle,
    /// The pool's PEs in this response (at least one on the wire), each with ASAP transport.
    pub pool_elements: Vec<PoolElementParameter>,
}

/// ENRP_HANDLE_TABLE_RESPONSE (0x03).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HandleTableResponse {
    /// R flag: the request was rejected.
    pub reject: bool,
    /// M flag: more entries follow; ask again.
    pub more: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// Sending server's identifier.
    pub sender: ServerId,
    /// Receiving server's identifier.
    pub receiver: ServerId,
    /// The pools and their PEs.
    pub entries: Vec<HandleTableEntry>,
    /// Unknown skip-parameters found at the top level (positions count every pool handle and
    /// pool element parameter).
    pub skipped: Vec<SkippedParameter>,
}

impl Body for HandleTableResponse {
    const TYPE: u8 = msg_type::HANDLE_TABLE_RESPONSE;
    fn flags(&self) -> u8 {
        (self.reserved_flags & !(BIT0 | BIT1)) | u8::from(self.reject) | (u8::from(self.more) << 1)
    }
    fn ids(&self) -> (ServerId, ServerId) {
        (self.sender, self.receiver)
    }
    fn rest_len(&self) -> usize {
        self.entries
            .iter()
            .map(|e| {
                e.pool_handle.encoded_len()
                    + e.pool_elements
                        .iter()
                        .map(Encode::encoded_len)
                        .sum::<usize>()
            })
            .sum::<usize>()
            + skipped_len(&self.skipped)
    }
    fn put_rest<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        for e in &self.entries {
            w.put(&e.pool_handle);
            for pe in &e.pool_elements {
                w.put(pe);
            }
        }
        w.finish();
    }
    fn decode_rest<'a>(
        cx: &mut Cx<'a>,
        flags: u8,
        (sender, receiver): (ServerId, ServerId),
        rest: &'a [u8],
    ) -> PResult<'a, Self> {
        let mut r = Reader::new(rest);
        let mut entries = Vec::new();
        while let Some(pool_handle) = r.opt_pool_handle(cx)? {
            let mut pool_elements = Vec::new();
            r.pool_elements(cx, &mut pool_elements)?;
            if pool_elements.is_empty() {
                // A pool handle must be followed by a pool element: this fails with what is
                // there instead.
                r.pool_element(cx)?;
            }
            entries.push(HandleTableEntry {
                pool_handle,
                pool_elements,
            });
        }
        Ok(HandleTableResponse {
            reject: flags & BIT0 != 0,
            more: flags & BIT1 != 0,
            reserved_flags: flags & !(BIT0 | BIT1),
            sender,
            receiver,
            entries,
            skipped: r.end(cx)?,
        })
    }
}

/// The Update Action of a Handle Update (RFC 5353 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct UpdateAction(pub u16);

impl UpdateAction {
    /// ADD_PE: the PE was added or updated.
    pub const ADD_PE: UpdateAction = UpdateAction(0x0000);
    /// DEL_PE: the PE was removed.
    pub const DEL_PE: UpdateAction = UpdateAction(0x0001);
}

/// ENRP_HANDLE_UPDATE (0x04): a home registrar announces an added/updated or removed PE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandleUpdate {
    /// T flag: the receiver is suggested to take the PE over.
    pub takeover_suggested: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// Sending server's identifier.
    pub sender: ServerId,
    /// Receiving server's identifier.
    pub receiver: ServerId,
    /// ADD_PE or DEL_PE.
    pub action: UpdateAction,
    /// The reserved field after the action, kept verbatim (normally 0).
    pub reserved: u16,
    /// The PE's pool.
    pub pool_handle: PoolHandle,
    /// The PE, with its ASAP transport.
    pub pool_element: PoolElementParameter,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl HandleUpdate {
    /// A handle update without extras.
    pub fn new(
        sender: ServerId,
        receiver: ServerId,
        action: UpdateAction,
        pool_handle: PoolHandle,
        pool_element: PoolElementParameter,
    ) -> Self {
        HandleUpdate {
            takeover_suggested: false,
            reserved_flags: 0,
            sender,
            receiver,
            action,
            reserved: 0,
            pool_handle,
            pool_element,
            skipped: Vec::new(),
        }
    }
}

impl Body for HandleUpdate {
    const TYPE: u8 = msg_type::HANDLE_UPDATE;
    fn flags(&self) -> u8 {
        (self.reserved_flags & !BIT0) | u8::from(self.takeover_suggested)
    }
    fn ids(&self) -> (ServerId, ServerId) {
        (self.sender, self.receiver)
    }
    fn rest_len(&self) -> usize {
        4 + self.pool_handle.encoded_len()
            + self.pool_element.encoded_len()
            + skipped_len(&self.skipped)
    }
    fn put_rest<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.fixed().put_u16(self.action.0);
        w.fixed().put_u16(self.reserved);
        w.put(&self.pool_handle);
        w.put(&self.pool_element);
        w.finish();
    }
    fn decode_rest<'a>(
        cx: &mut Cx<'a>,
        flags: u8,
        (sender, receiver): (ServerId, ServerId),
        rest: &'a [u8],
    ) -> PResult<'a, Self> {
        let (rest, action) = u16_be(rest)?;
        let (rest, reserved) = u16_be(rest)?;
        let mut r = Reader::new(rest);
        let pool_handle = r.pool_handle(cx)?;
        let pool_element = r.pool_element(cx)?;
        Ok(HandleUpdate {
            takeover_suggested: flags & BIT0 != 0,
            reserved_flags: flags & !BIT0,
            sender,
            receiver,
            action: UpdateAction(action),
            reserved,
            pool_handle,
            pool_element,
            skipped: r.end(cx)?,
        })
    }
}

/// ENRP_LIST_REQUEST (0x05): asks for the receiver's peer list.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListRequest {
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// Sending server's identifier.
    pub sender: ServerId,
    /// Receiving server's identifier.
    pub receiver: ServerId,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for ListRequest {
    const TYPE: u8 = msg_type::LIST_REQUEST;
    fn flags(&self) -> u8 {
        self.reserved_flags
    }
    fn ids(&self) -> (ServerId, ServerId) {
        (self.sender, self.receiver)
    }
    fn rest_len(&self) -> usize {
        skipped_len(&self.skipped)
    }
    fn put_rest<B: BufMut>(&self, buf: &mut B) {
        Writer::new(buf, &self.skipped).finish();
    }
    fn decode_rest<'a>(
        cx: &mut Cx<'a>,
        flags: u8,
        (sender, receiver): (ServerId, ServerId),
        rest: &'a [u8],
    ) -> PResult<'a, Self> {
        Ok(ListRequest {
            reserved_flags: flags,
            sender,
            receiver,
            skipped: Reader::new(rest).end(cx)?,
        })
    }
}

/// ENRP_LIST_RESPONSE (0x06): the sender's peer list.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListResponse {
    /// R flag: the request was rejected.
    pub reject: bool,
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// Sending server's identifier.
    pub sender: ServerId,
    /// Receiving server's identifier.
    pub receiver: ServerId,
    /// The peers.
    pub servers: Vec<ServerInformation>,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for ListResponse {
    const TYPE: u8 = msg_type::LIST_RESPONSE;
    fn flags(&self) -> u8 {
        (self.reserved_flags & !BIT0) | u8::from(self.reject)
    }
    fn ids(&self) -> (ServerId, ServerId) {
        (self.sender, self.receiver)
    }
    fn rest_len(&self) -> usize {
        self.servers.iter().map(Encode::encoded_len).sum::<usize>() + skipped_len(&self.skipped)
    }
    fn put_rest<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        for s in &self.servers {
            w.put(s);
        }
        w.finish();
    }
    fn decode_rest<'a>(
        cx: &mut Cx<'a>,
        flags: u8,
        (sender, receiver): (ServerId, ServerId),
        rest: &'a [u8],
    ) -> PResult<'a, Self> {
        let mut r = Reader::new(rest);
        let mut servers = Vec::new();
        while let Some(s) = r.opt_server_information(cx)? {
            servers.push(s);
        }
        Ok(ListResponse {
            reject: flags & BIT0 != 0,
            reserved_flags: flags & !BIT0,
            sender,
            receiver,
            servers,
            skipped: r.end(cx)?,
        })
    }
}

macro_rules! takeover {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Default)]
        pub struct $name {
            /// Undefined flag bits, kept verbatim (normally 0).
            pub reserved_flags: u8,
            /// Sending server's identifier.
            pub sender: ServerId,
            /// Receiving server's identifier.
            pub receiver: ServerId,
            /// The registrar being taken over.
            pub target: ServerId,
            /// Unknown skip-parameters found at the top level.
            pub skipped: Vec<SkippedParameter>,
        }

        impl $name {
            /// The message from `sender` to `receiver` about `target`.
            pub fn new(sender: ServerId, receiver: ServerId, target: ServerId) -> Self {
                $name { reserved_flags: 0, sender, receiver, target, skipped: Vec::new() }
            }
        }

        impl Body for $name {
            const TYPE: u8 = $ty;
            fn flags(&self) -> u8 {
                self.reserved_flags
            }
            fn ids(&self) -> (ServerId, ServerId) {
                (self.sender, self.receiver)
            }
            fn rest_len(&self) -> usize {
                4 + skipped_len(&self.skipped)
            }
            fn put_rest<B: BufMut>(&self, buf: &mut B) {
                let mut w = Writer::new(buf, &self.skipped);
                w.fixed().put_u32(self.target.0);
                w.finish();
            }
            fn decode_rest<'a>(
                cx: &mut Cx<'a>,
                flags: u8,
                (sender, receiver): (ServerId, ServerId),
                rest: &'a [u8],
            ) -> PResult<'a, Self> {
                let (rest, target) = u32_be(rest)?;
                Ok($name {
                    reserved_flags: flags,
                    sender,
                    receiver,
                    target: ServerId(target),
                    skipped: Reader::new(rest).end(cx)?,
                })
            }
        }
    };
}

takeover!(
    /// ENRP_INIT_TAKEOVER (0x07): the sender starts taking over a dead registrar.
    InitTakeover,
    msg_type::INIT_TAKEOVER
);
takeover!(
    /// ENRP_INIT_TAKEOVER_ACK (0x08): the sender agrees to the takeover.
    InitTakeoverAck,
    msg_type::INIT_TAKEOVER_ACK
);
takeover!(
    /// ENRP_TAKEOVER_SERVER (0x09): the sender has taken the target's PEs over.
    TakeoverServer,
    msg_type::TAKEOVER_SERVER
);

/// ENRP_ERROR (0x0a).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EnrpError {
    /// Undefined flag bits, kept verbatim (normally 0).
    pub reserved_flags: u8,
    /// Sending server's identifier.
    pub sender: ServerId,
    /// Receiving server's identifier.
    pub receiver: ServerId,
    /// The error.
    pub error: OperationError,
    /// Unknown skip-parameters found at the top level.
    pub skipped: Vec<SkippedParameter>,
}

impl Body for EnrpError {
    const TYPE: u8 = msg_type::ERROR;
    fn flags(&self) -> u8 {
        self.reserved_flags
    }
    fn ids(&self) -> (ServerId, ServerId) {
        (self.sender, self.receiver)
    }
    fn rest_len(&self) -> usize {
        self.error.encoded_len() + skipped_len(&self.skipped)
    }
    fn put_rest<B: BufMut>(&self, buf: &mut B) {
        let mut w = Writer::new(buf, &self.skipped);
        w.put(&self.error);
        w.finish();
    }
    fn decode_rest<'a>(
        cx: &mut Cx<'a>,
        flags: u8,
        (sender, receiver): (ServerId, ServerId),
        rest: &'a [u8],
    ) -> PResult<'a, Self> {
        let mut r = Reader::new(rest);
        let error = r.operation_error(cx)?;
        Ok(EnrpError {
            reserved_flags: flags,
            sender,
            receiver,
            error,
            skipped: r.end(cx)?,
        })
    }
}

/// An ENRP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrpMessage {
    /// ENRP_PRESENCE (0x01).
    Presence(Presence),
    /// ENRP_HANDLE_TABLE_REQUEST (0x02).
    HandleTableRequest(HandleTableRequest),
    /// ENRP_HANDLE_TABLE_RESPONSE (0x03).
    HandleTableResponse(HandleTableResponse),
    /// ENRP_HANDLE_UPDATE (0x04).
    HandleUpdate(HandleUpdate),
    /// ENRP_LIST_REQUEST (0x05).
    ListRequest(ListRequest),
    /// ENRP_LIST_RESPONSE (0x06).
    ListResponse(ListResponse),
    /// ENRP_INIT_TAKEOVER (0x07).
    InitTakeover(InitTakeover),
    /// ENRP_INIT_TAKEOVER_ACK (0x08).
    InitTakeoverAck(InitTakeoverAck),
    /// ENRP_TAKEOVER_SERVER (0x09).
    TakeoverServer(TakeoverServer),
    /// ENRP_ERROR (0x0a).
    Error(EnrpError),
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            EnrpMessage::Presence($m) => $e,
            EnrpMessage::HandleTableRequest($m) => $e,
            EnrpMessage::HandleTableResponse($m) => $e,
            EnrpMessage::HandleUpdate($m) => $e,
            EnrpMessage::ListRequest($m) => $e,
            EnrpMessage::ListResponse($m) => $e,
            EnrpMessage::InitTakeover($m) => $e,
            EnrpMessage::InitTakeoverAck($m) => $e,
            EnrpMessage::TakeoverServer($m) => $e,
            EnrpMessage::Error($m) => $e,
        }
    };
}

fn type_of<T: Body>(_: &T) -> u8 {
    T::TYPE
}

fn put_body<T: Body, B: BufMut>(m: &T, buf: &mut B) {
    let (s, r) = m.ids();
    buf.put_u32(s.0);
    buf.put_u32(r.0);
    m.put_rest(buf);
}

fn decode_body<'a, T: Body>(cx: &mut Cx<'a>, flags: u8, body: &'a [u8]) -> PResult<'a, T> {
    let (body, sender) = u32_be(body)?;
    let (body, receiver) = u32_be(body)?;
    T::decode_rest(cx, flags, (ServerId(sender), ServerId(receiver)), body)
}

impl EnrpMessage {
    /// Decodes one message (copying `data` once into a shared buffer).
    pub fn decode(data: &[u8]) -> Result<EnrpMessage, DecodeError> {
        Self::decode_bytes(&Bytes::copy_from_slice(data))
    }

    /// Decodes one message without copying: pool handles and other opaque fields are views of
    /// `data`.
    pub fn decode_bytes(data: &Bytes) -> Result<EnrpMessage, DecodeError> {
        Self::decode_with_unrecognized(data).map(|(m, _)| m)
    }

    /// Decodes one message and also returns every unknown parameter whose action bits are
    /// `11` ("skip and report"), at any depth, in wire order.
    pub fn decode_with_unrecognized(
        data: &Bytes,
    ) -> Result<(EnrpMessage, Vec<UnknownParameter>), DecodeError> {
        let h = header(data)?;
        let mut cx = Cx::new(data);
        let (f, b) = (h.flags, h.body);
        let r = match h.ty {
            msg_type::PRESENCE => decode_body(&mut cx, f, b).map(Self::Presence),
            msg_type::HANDLE_TABLE_REQUEST => {
                decode_body(&mut cx, f, b).map(Self::HandleTableRequest)
            }
            msg_type::HANDLE_TABLE_RESPONSE => {
                decode_body(&mut cx, f, b).map(Self::HandleTableResponse)
            }
            msg_type::HANDLE_UPDATE => decode_body(&mut cx, f, b).map(Self::HandleUpdate),
            msg_type::LIST_REQUEST => decode_body(&mut cx, f, b).map(Self::ListRequest),
            msg_type::LIST_RESPONSE => decode_body(&mut cx, f, b).map(Self::ListResponse),
            msg_type::INIT_TAKEOVER => decode_body(&mut cx, f, b).map(Self::InitTakeover),
            msg_type::INIT_TAKEOVER_ACK => decode_body(&mut cx, f, b).map(Self::InitTakeoverAck),
            msg_type::TAKEOVER_SERVER => decode_body(&mut cx, f, b).map(Self::TakeoverServer),
            msg_type::ERROR => decode_body(&mut cx, f, b).map(Self::Error),
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

    /// The message type's name, e.g. `ENRP_PRESENCE`.
    pub fn name(&self) -> &'static str {
        message_name(self.message_type())
    }

    /// The flags byte as encoded.
    pub fn flags(&self) -> u8 {
        each!(self, m => m.flags())
    }

    /// Sending server's identifier.
    pub fn sender(&self) -> ServerId {
        each!(self, m => m.sender)
    }

    /// Receiving server's identifier.
    pub fn receiver(&self) -> ServerId {
        each!(self, m => m.receiver)
    }

    /// The unknown skip-parameters kept from decoding.
    pub fn skipped(&self) -> &[SkippedParameter] {
        each!(self, m => &m.skipped)
    }

    /// Encoded size in bytes (= the message length field, RSPLIB form).
    pub fn encoded_len(&self) -> usize {
        12 + each!(self, m => m.rest_len())
    }

    /// Writes the message (RSPLIB form: every TLV padded, length = padded size).
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_message_header(buf, self.message_type(), self.flags(), self.encoded_len());
        each!(self, m => put_body(m, buf))
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v);
        Bytes::from(v)
    }
}

impl Encode for EnrpMessage {
    fn encoded_len(&self) -> usize {
        EnrpMessage::encoded_len(self)
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        EnrpMessage::encode(self, buf);
    }
}

macro_rules! from_body {
    ($($name:ident => $variant:ident),* $(,)?) => {
        $(impl From<$name> for EnrpMessage {
            fn from(m: $name) -> Self {
                EnrpMessage::$variant(m)
            }
        })*
    };
}

from_body!(
    Presence => Presence,
    HandleTableRequest => HandleTableRequest,
    HandleTableResponse => HandleTableResponse,
    HandleUpdate => HandleUpdate,
    ListRequest => ListRequest,
    ListResponse => ListResponse,
    InitTakeover => InitTakeover,
    InitTakeoverAck => InitTakeoverAck,
    TakeoverServer => TakeoverServer,
    EnrpError => Error,
);
