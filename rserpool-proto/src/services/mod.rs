//! Wire formats of RSPLIB's example services (`shared/spec/services.md`): the messages the
//! pool users and pool elements exchange on the data channel of an ASAP session, and the
//! application cookies the pool elements hand to the session layer.
//!
//! | module | protocol | PPID | cookie |
//! |--------|----------|------|--------|
//! | [`pingpong`] | Ping Pong Protocol (PPP) | 33 | 16 bytes `<PP-TD1>` + ReplyNo |
//! | [`calcapp`] | CalcApp | 34 | 20 bytes JobID, JobSize, Completed |
//! | [`fractal`] | Fractal Generator Protocol (FGP) | 32 | 76 bytes `<FG-TD1>` + PARAMETER + position |
//! | [`scripting`] | Scripting Service Protocol (SSP) | 35 | none |
//!
//! Echo, Discard, Daytime and Character Generator have no message format of their own (raw
//! bytes, PPID 0 as RSPLIB sends; see [`PPID_ECHO`] etc. for the IANA values RSPLIB does
//! not use).
//!
//! # Contract
//! * All integers big-endian, all structures packed, `f64` as the IEEE 754 bit pattern in a
//!   big-endian `u64` (RSPLIB's `network_double_t`).
//! * Decoders never panic. They are as lenient as RSPLIB's receivers (Flags are ignored,
//!   trailing bytes after a message's Length are ignored, the FGP cookie's embedded header
//!   Length 4 is accepted) but never read beyond the received bytes: a Length field larger
//!   than the message is a [`ServiceErrorKind::LengthBeyondData`] error.
//! * Encoders write exactly what RSPLIB writes (Flags 0, Length = total message size).
//! * Message decoders come in two forms: `decode(&[u8])` copies variable-size payloads,
//!   `decode_bytes(&Bytes)` shares them with the received buffer.

use bytes::Bytes;
use core::fmt;

pub mod calcapp;
pub mod fractal;
pub mod pingpong;
pub mod scripting;

pub use calcapp::{CalcAppCookie, CalcAppMessage, CalcAppType};
pub use fractal::{FgpCookie, FgpData, FgpMessage, FgpParameter, FractalAlgorithm};
pub use pingpong::{PingPongCookie, PingPongMessage};
pub use scripting::{NotReadyReason, ScriptingMessage};

/// PPID of the Fractal Generator Protocol (IANA 32; RSPLIB sends it).
pub const PPID_FGP: u32 = 32;
/// PPID of the Ping Pong Protocol (IANA 33; RSPLIB sends it).
pub const PPID_PINGPONG: u32 = 33;
/// PPID of CalcApp (IANA 34; RSPLIB sends it).
pub const PPID_CALCAPP: u32 = 34;
/// PPID of the Scripting Service Protocol (IANA 35; RSPLIB sends it).
pub const PPID_SCRIPTING: u32 = 35;
/// IANA PPID registered for Echo. RSPLIB never sends it (Echo mirrors the received PPID).
pub const PPID_ECHO: u32 = 38;
/// IANA PPID registered for Discard (RSPLIB's Discard sends nothing).
pub const PPID_DISCARD: u32 = 39;
/// IANA PPID registered for Daytime. RSPLIB sends [`PPID_RSPLIB_SIMPLE`] instead.
pub const PPID_DAYTIME: u32 = 40;
/// IANA PPID registered for Character Generator. RSPLIB sends [`PPID_RSPLIB_SIMPLE`].
pub const PPID_CHARGEN: u32 = 41;
/// The PPID RSPLIB actually uses for Daytime, CharGen and `rspterminal` input.
pub const PPID_RSPLIB_SIMPLE: u32 = 0;
/// Pre-IANA ("legacy") PPID of FGP, still accepted by Wireshark.
pub const PPID_FGP_LEGACY: u32 = 0x2909_7601;
/// Pre-IANA PPID of the Ping Pong Protocol.
pub const PPID_PINGPONG_LEGACY: u32 = 0x2909_7602;
/// Pre-IANA PPID of CalcApp.
pub const PPID_CALCAPP_LEGACY: u32 = 0x2909_7603;
/// Pre-IANA PPID of the Scripting Service Protocol.
pub const PPID_SCRIPTING_LEGACY: u32 = 0x2909_7604;

/// Size of the common header every service message starts with (Type, Flags, Length).
pub const COMMON_HEADER_SIZE: usize = 4;

/// What went wrong while decoding a service message or cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceErrorKind {
    /// The data ends inside a field: `need` bytes were required in all, `have` were there.
    Truncated {
        /// Bytes the message needs up to the end of the field being read.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The Length field is smaller than the message type's minimum size.
    LengthTooSmall {
        /// The Length field.
        length: u16,
        /// The minimum for this type.
        min: usize,
    },
    /// The Length field is larger than the received message (RSPLIB's Ping Pong PE would
    /// over-read here; we refuse).
    LengthBeyondData {
        /// The Length field.
        length: u16,
        /// Bytes received.
        have: usize,
    },
    /// A message type this protocol does not define (or not valid in this direction).
    UnknownType(u8),
    /// A cookie's 8-byte identifier is not the service's (`<PP-TD1>`, `<FG-TD1>`).
    BadCookieId,
    /// A cookie of the wrong size (the FGP PE requires exactly 76 bytes).
    BadCookieSize {
        /// Bytes received.
        have: usize,
        /// Bytes required.
        expected: usize,
    },
    /// An FGP DATA message announces more points than [`fractal::FGP_MAX_POINTS`].
    TooManyPoints(u32),
    /// A field value outside what the receiver accepts (e.g. an FGP image wider than 65 536).
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Bytes after a message whose receiver requires Length == size (the Scripting PU).
    TrailingData {
        /// The Length field.
        length: u16,
        /// Bytes received.
        have: usize,
    },
}

/// A decoding error: what, and at which byte offset of the message or cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceError {
    /// Byte offset of the field that failed (0 for header-level problems).
    pub offset: usize,
    /// What went wrong.
    pub kind: ServiceErrorKind,
}

impl ServiceError {
    pub(crate) fn new(offset: usize, kind: ServiceErrorKind) -> ServiceError {
        ServiceError { offset, kind }
    }
}

impl fmt::Display for ServiceErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ServiceErrorKind::Truncated { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            ServiceErrorKind::LengthTooSmall { length, min } => {
                write!(f, "length field {length} below the minimum {min}")
            }
            ServiceErrorKind::LengthBeyondData { length, have } => {
                write!(f, "length field {length} beyond the {have} received bytes")
            }
            ServiceErrorKind::UnknownType(t) => write!(f, "unknown message type {t:#04x}"),
            ServiceErrorKind::BadCookieId => write!(f, "cookie identifier mismatch"),
            ServiceErrorKind::BadCookieSize { have, expected } => {
                write!(f, "cookie of {have} bytes, expected {expected}")
            }
            ServiceErrorKind::TooManyPoints(n) => write!(f, "{n} points exceed the maximum"),
            ServiceErrorKind::OutOfRange { field, value } => {
                write!(f, "{field} = {value} out of range")
            }
            ServiceErrorKind::TrailingData { length, have } => {
                write!(f, "length field {length} but {have} bytes received")
            }
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (offset {})", self.kind, self.offset)
    }
}

impl std::error::Error for ServiceError {}

/// The common 4-byte header: Type, Flags, Length (total size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommonHeader {
    /// Message type.
    pub ty: u8,
    /// Flags (RSPLIB sends 0 except Scripting's ENVIRONMENT reply).
    pub flags: u8,
    /// Total message length including this header.
    pub length: u16,
}

impl CommonHeader {
    /// Reads the header from the start of `data`.
    pub fn decode(data: &[u8]) -> Result<CommonHeader, ServiceError> {
        let r = Reader::new(data);
        Ok(CommonHeader {
            ty: r.u8(0)?,
            flags: r.u8(1)?,
            length: r.u16(2)?,
        })
    }

    /// Checks `min ≤ Length ≤ data.len()` and returns Length as `usize`.
    pub(crate) fn checked_length(&self, min: usize, have: usize) -> Result<usize, ServiceError> {
        let length = usize::from(self.length);
        if length < min {
            return Err(ServiceError::new(
                2,
                ServiceErrorKind::LengthTooSmall {
                    length: self.length,
                    min,
                },
            ));
        }
        if length > have {
            return Err(ServiceError::new(
                2,
                ServiceErrorKind::LengthBeyondData {
                    length: self.length,
                    have,
                },
            ));
        }
        Ok(length)
    }
}

/// Bounds-checked big-endian reads at absolute offsets.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    pub(crate) fn bytes(&self, offset: usize, n: usize) -> Result<&'a [u8], ServiceError> {
        let end = offset.saturating_add(n);
        self.data.get(offset..end).ok_or(ServiceError::new(
            offset,
            ServiceErrorKind::Truncated {
                need: end,
                have: self.data.len(),
            },
        ))
    }

    pub(crate) fn array<const N: usize>(&self, offset: usize) -> Result<[u8; N], ServiceError> {
        let b = self.bytes(offset, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub(crate) fn u8(&self, offset: usize) -> Result<u8, ServiceError> {
        Ok(self.array::<1>(offset)?[0])
    }

    pub(crate) fn u16(&self, offset: usize) -> Result<u16, ServiceError> {
        Ok(u16::from_be_bytes(self.array(offset)?))
    }

    pub(crate) fn u32(&self, offset: usize) -> Result<u32, ServiceError> {
        Ok(u32::from_be_bytes(self.array(offset)?))
    }

    pub(crate) fn u64(&self, offset: usize) -> Result<u64, ServiceError> {
        Ok(u64::from_be_bytes(self.array(offset)?))
    }

    pub(crate) fn f64(&self, offset: usize) -> Result<f64, ServiceError> {
        Ok(f64::from_bits(self.u64(offset)?))
    }
}

/// Writes a common header into `out`.
pub(crate) fn put_header(out: &mut Vec<u8>, ty: u8, flags: u8, length: usize) {
    out.push(ty);
    out.push(flags);
    // Encoders only build messages whose size fits (callers bound their payloads).
    out.extend_from_slice(&u16::try_from(length).unwrap_or(u16::MAX).to_be_bytes());
}

/// Slices `data[from..to]` of a received buffer without copying (bounds already checked).
pub(crate) fn share(data: &Bytes, from: usize, to: usize) -> Bytes {
    if from <= to && to <= data.len() {
        data.slice(from..to)
    } else {
        Bytes::new()
    }
}
