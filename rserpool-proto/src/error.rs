//! Decode errors, and the Operation Error cause (RFC 5354 §3.12) a receiver answers them with.

use bytes::Bytes;
use core::fmt;

use crate::param::{ErrorCause, UnknownAction, cause};

/// Why a message or parameter could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Fewer bytes than a field, TLV or message needs.
    Truncated {
        /// Bytes needed at [`DecodeError::offset`].
        need: usize,
        /// Bytes available there.
        have: usize,
    },
    /// A length field is impossible: a message or TLV length below 4, or a fixed-size
    /// parameter (address, PE identifier, PE checksum, ...) with the wrong length.
    BadLength {
        /// Parameter type (0 for the message header).
        ty: u16,
        /// The length found.
        length: usize,
    },
    /// A message type this implementation does not know.
    UnknownMessageType(u8),
    /// An unknown parameter whose action bits (`00` or `01`) say "stop processing".
    UnknownParameter {
        /// Its full type code, action bits included.
        ty: u16,
    },
    /// A known parameter where the message (or enclosing parameter) does not allow it.
    UnexpectedParameter {
        /// Its type code.
        ty: u16,
    },
    /// A mandatory parameter is absent.
    MissingParameter(&'static str),
    /// A value is invalid (e.g. a transport parameter without addresses).
    InvalidValue(&'static str),
    /// A Pool Member Selection Policy with a policy type this implementation does not know.
    UnsupportedPolicy {
        /// The policy type code.
        policy_type: u32,
    },
}

/// A decoding failure: where (byte offset from the start of the decoded buffer), what, and the
/// bytes an Operation Error cause would quote.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset of the problem from the start of the message (or parameter) being decoded.
    pub offset: usize,
    /// What went wrong.
    pub kind: DecodeErrorKind,
    /// The bytes an error report quotes: the offending TLV (as far as it is present, without
    /// padding) for parameter problems, the whole message for an unknown message type, empty
    /// when no TLV is involved.
    pub raw: Bytes,
}

impl DecodeError {
    pub(crate) fn new(offset: usize, kind: DecodeErrorKind, raw: Bytes) -> Self {
        DecodeError { offset, kind, raw }
    }

    /// Which Operation Error cause (RFC 5354 §3.12) a registrar answers this error with, or
    /// `None` when the message must be discarded silently.
    ///
    /// * unknown parameter, action bits `01`: cause 0x1 *Unrecognized Parameter*, quoting the
    ///   whole TLV; action bits `00`: `None` (silent discard);
    /// * unknown message type, action bits `01`: cause 0x2 *Unrecognized Message*, quoting the
    ///   message; `00` (and the reserved `10`/`11`): `None`;
    /// * any other problem inside a TLV (bad length, truncated TLV, invalid value, unsupported
    ///   policy, misplaced parameter): cause 0x3 *Invalid Values*, quoting that TLV (the
    ///   innermost one);
    /// * a structural problem with no TLV to quote (missing mandatory parameter, message length
    ///   beyond the data): cause 0x0 *Unspecified Error* without information;
    /// * less than a message header: `None` (nothing identifies the sender's intent).
    pub fn operation_error(&self) -> Option<ErrorCause> {
        match self.kind {
            DecodeErrorKind::UnknownMessageType(ty) => (ty & 0xc0 == 0x40)
                .then(|| ErrorCause::new(cause::UNRECOGNIZED_MESSAGE, self.raw.clone())),
            DecodeErrorKind::UnknownParameter { ty } => match UnknownAction::of(ty) {
                UnknownAction::StopAndReport => Some(ErrorCause::new(
                    cause::UNRECOGNIZED_PARAMETER,
                    self.raw.clone(),
                )),
                // Skip actions never produce an error; Stop is silent.
                _ => None,
            },
            DecodeErrorKind::Truncated { need: 4, .. }
                if self.offset == 0 && self.raw.is_empty() =>
            {
                None
            }
            _ if !self.raw.is_empty() => {
                Some(ErrorCause::new(cause::INVALID_VALUES, self.raw.clone()))
            }
            _ => Some(ErrorCause::new(cause::UNSPECIFIED_ERROR, Bytes::new())),
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Truncated { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            DecodeErrorKind::BadLength { ty, length } => {
                write!(f, "bad length {length} for type {ty:#06x}")
            }
            DecodeErrorKind::UnknownMessageType(ty) => write!(f, "unknown message type {ty:#04x}"),
            DecodeErrorKind::UnknownParameter { ty } => {
                write!(f, "unknown parameter type {ty:#06x}")
            }
            DecodeErrorKind::UnexpectedParameter { ty } => write!(
                f,
                "unexpected parameter {} ({ty:#06x})",
                crate::param::parameter_name(*ty)
            ),
            DecodeErrorKind::MissingParameter(what) => write!(f, "missing {what}"),
            DecodeErrorKind::InvalidValue(what) => write!(f, "invalid value: {what}"),
            DecodeErrorKind::UnsupportedPolicy { policy_type } => {
                write!(f, "unsupported policy type {policy_type:#010x}")
            }
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.offset, self.kind)
    }
}

impl fmt::Debug for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DecodeError {{ offset: {}, kind: {:?}",
            self.offset, self.kind
        )?;
        if !self.raw.is_empty() {
            f.write_str(", raw: ")?;
            crate::param::write_hex(f, &self.raw)?;
        }
        f.write_str(" }")
    }
}

impl std::error::Error for DecodeError {}
