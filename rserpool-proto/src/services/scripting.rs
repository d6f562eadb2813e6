//! Scripting Service Protocol (SSP), PPID 35 (`services.md` §6).
//!
//! | Type | Name | After the 4-byte header | Length |
//! |------|------|-------------------------|--------|
//! | 0 | NOTREADY | Reason u32, Info (0–64 bytes) | 8 + info |
//! | 1 | READY | Info (0–64 bytes) | 4 + info |
//! | 2 | UPLOAD | data (0–16 384 bytes; empty = end of file) | 4 + n |
//! | 3 | DOWNLOAD | data (0–16 384 bytes; empty = end of file) | 4 + n |
//! | 4 | KEEPALIVE | — | 4 |
//! | 5 | KEEPALIVE_ACK | Status u32 = 0 from the PE; nothing from the PU | 8 / 4 |
//! | 6 | STATUS | Status u32 | 8 |
//! | 7 | ENVIRONMENT | SHA-1 (20 bytes); Flags 0x01 = upload needed (PE reply) | 24 |
//!
//! [`ScriptingMessage::decode`] applies the PE's rule (received ≥ Length; bytes after
//! Length ignored); [`ScriptingMessage::decode_exact`] the PU's (received == Length).

use bytes::Bytes;

use super::{
    COMMON_HEADER_SIZE, CommonHeader, Reader, ServiceError, ServiceErrorKind, put_header, share,
};

/// Type NOTREADY.
pub const SPT_NOTREADY: u8 = 0x00;
/// Type READY.
pub const SPT_READY: u8 = 0x01;
/// Type UPLOAD.
pub const SPT_UPLOAD: u8 = 0x02;
/// Type DOWNLOAD.
pub const SPT_DOWNLOAD: u8 = 0x03;
/// Type KEEPALIVE.
pub const SPT_KEEPALIVE: u8 = 0x04;
/// Type KEEPALIVE_ACK.
pub const SPT_KEEPALIVE_ACK: u8 = 0x05;
/// Type STATUS.
pub const SPT_STATUS: u8 = 0x06;
/// Type ENVIRONMENT.
pub const SPT_ENVIRONMENT: u8 = 0x07;
/// ENVIRONMENT flag "U": the PE needs the environment uploaded.
pub const SEF_UPLOAD_NEEDED: u8 = 0x01;
/// Most Info bytes in READY / NOTREADY (`SR_MAX_INFOSIZE`).
pub const MAX_INFO_SIZE: usize = 64;
/// Most data bytes in one UPLOAD / DOWNLOAD.
pub const MAX_TRANSFER_SIZE: usize = 16_384;
/// Size of a SHA-1 hash.
pub const HASH_SIZE: usize = 20;

/// Why a PE refuses a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotReadyReason {
    /// 1: all session slots are taken (the only reason RSPLIB sends).
    FullyLoaded,
    /// 2: out of resources.
    OutOfResources,
    /// Any other value.
    Other(u32),
}

impl NotReadyReason {
    /// The wire value.
    pub fn code(self) -> u32 {
        match self {
            NotReadyReason::FullyLoaded => 1,
            NotReadyReason::OutOfResources => 2,
            NotReadyReason::Other(c) => c,
        }
    }

    /// The reason for a wire value.
    pub fn from_code(code: u32) -> NotReadyReason {
        match code {
            1 => NotReadyReason::FullyLoaded,
            2 => NotReadyReason::OutOfResources,
            c => NotReadyReason::Other(c),
        }
    }
}

/// A Scripting Service Protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ScriptingMessage {
    /// PE → PU: no session here.
    NotReady {
        /// Why.
        reason: NotReadyReason,
        /// The PE's host name (at most 64 bytes are encoded).
        info: Bytes,
    },
    /// PE → PU: the session is accepted, upload may start.
    Ready {
        /// The PE's host name (at most 64 bytes are encoded).
        info: Bytes,
    },
    /// PU → PE: a chunk of the work package or environment; empty = end of file.
    Upload(Bytes),
    /// PE → PU: a chunk of the results; empty = end of file.
    Download(Bytes),
    /// Either direction.
    KeepAlive,
    /// Either direction: the PE sends `Some(0)` (8 bytes), the PU `None` (4 bytes).
    KeepAliveAck {
        /// Status field, present in the PE's form.
        status: Option<u32>,
    },
    /// PE → PU: 0 = upload accepted, processing starts; later the script's exit status.
    Status(u32),
    /// PU → PE query (`upload_needed` false) or PE → PU reply.
    Environment {
        /// SHA-1 of the environment file.
        hash: [u8; HASH_SIZE],
        /// Flag U in the PE's reply.
        upload_needed: bool,
    },
}

impl ScriptingMessage {
    fn min_length(ty: u8) -> Option<usize> {
        Some(match ty {
            SPT_NOTREADY | SPT_STATUS => 8,
            SPT_READY | SPT_UPLOAD | SPT_DOWNLOAD | SPT_KEEPALIVE | SPT_KEEPALIVE_ACK => 4,
            SPT_ENVIRONMENT => COMMON_HEADER_SIZE + HASH_SIZE,
            _ => return None,
        })
    }

    /// Decodes a message with the PE's rule: Length within the received bytes and at least
    /// the type's minimum; bytes after Length ignored. Payloads are copied.
    pub fn decode(data: &[u8]) -> Result<ScriptingMessage, ServiceError> {
        Self::decode_bytes(&Bytes::copy_from_slice(data))
    }

    /// As [`decode`](Self::decode), sharing payloads with `data`.
    pub fn decode_bytes(data: &Bytes) -> Result<ScriptingMessage, ServiceError> {
        let h = CommonHeader::decode(data)?;
        let min = Self::min_length(h.ty)
            .ok_or(ServiceError::new(0, ServiceErrorKind::UnknownType(h.ty)))?;
        let length = h.checked_length(min, data.len())?;
        let r = Reader::new(data);
        Ok(match h.ty {
            SPT_NOTREADY => ScriptingMessage::NotReady {
                reason: NotReadyReason::from_code(r.u32(4)?),
                info: share(data, 8, length),
            },
            SPT_READY => ScriptingMessage::Ready {
                info: share(data, 4, length),
            },
            SPT_UPLOAD => ScriptingMessage::Upload(share(data, 4, length)),
            SPT_DOWNLOAD => ScriptingMessage::Download(share(data, 4, length)),
            SPT_KEEPALIVE => ScriptingMessage::KeepAlive,
            SPT_KEEPALIVE_ACK => ScriptingMessage::KeepAliveAck {
                status: if length >= 8 { Some(r.u32(4)?) } else { None },
            },
            SPT_STATUS => ScriptingMessage::Status(r.u32(4)?),
            _ => ScriptingMessage::Environment {
                hash: r.array(4)?,
                upload_needed: h.flags & SEF_UPLOAD_NEEDED != 0,
            },
        })
    }

    /// Decodes with the PU's rule: as [`decode_bytes`](Self::decode_bytes), and Length must
    /// equal the received size.
    pub fn decode_exact(data: &Bytes) -> Result<ScriptingMessage, ServiceError> {
        let m = Self::decode_bytes(data)?;
        let h = CommonHeader::decode(data)?;
        if usize::from(h.length) != data.len() {
            return Err(ServiceError::new(
                2,
                ServiceErrorKind::TrailingData {
                    length: h.length,
                    have: data.len(),
                },
            ));
        }
        Ok(m)
    }

    /// Encoded size (Info capped at 64 bytes, transfers at 16 384).
    pub fn encoded_len(&self) -> usize {
        match self {
            ScriptingMessage::NotReady { info, .. } => 8 + info.len().min(MAX_INFO_SIZE),
            ScriptingMessage::Ready { info } => 4 + info.len().min(MAX_INFO_SIZE),
            ScriptingMessage::Upload(d) | ScriptingMessage::Download(d) => {
                4 + d.len().min(MAX_TRANSFER_SIZE)
            }
            ScriptingMessage::KeepAlive => 4,
            ScriptingMessage::KeepAliveAck { status } => {
                if status.is_some() {
                    8
                } else {
                    4
                }
            }
            ScriptingMessage::Status(_) => 8,
            ScriptingMessage::Environment { .. } => COMMON_HEADER_SIZE + HASH_SIZE,
        }
    }

    /// Encodes the message as RSPLIB does. Info beyond 64 bytes and transfer data beyond
    /// 16 384 bytes are cut (callers chunk their data first).
    pub fn encode(&self) -> Bytes {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        match self {
            ScriptingMessage::NotReady { reason, info } => {
                put_header(&mut out, SPT_NOTREADY, 0, len);
                out.extend_from_slice(&reason.code().to_be_bytes());
                out.extend_from_slice(info.get(..len - 8).unwrap_or(info));
            }
            ScriptingMessage::Ready { info } => {
                put_header(&mut out, SPT_READY, 0, len);
                out.extend_from_slice(info.get(..len - 4).unwrap_or(info));
            }
            ScriptingMessage::Upload(d) | ScriptingMessage::Download(d) => {
                let ty = if matches!(self, ScriptingMessage::Upload(_)) {
                    SPT_UPLOAD
                } else {
                    SPT_DOWNLOAD
                };
                put_header(&mut out, ty, 0, len);
                out.extend_from_slice(d.get(..len - 4).unwrap_or(d));
            }
            ScriptingMessage::KeepAlive => put_header(&mut out, SPT_KEEPALIVE, 0, len),
            ScriptingMessage::KeepAliveAck { status } => {
                put_header(&mut out, SPT_KEEPALIVE_ACK, 0, len);
                if let Some(s) = status {
                    out.extend_from_slice(&s.to_be_bytes());
                }
            }
            ScriptingMessage::Status(s) => {
                put_header(&mut out, SPT_STATUS, 0, len);
                out.extend_from_slice(&s.to_be_bytes());
            }
            ScriptingMessage::Environment {
                hash,
                upload_needed,
            } => {
                let flags = if *upload_needed { SEF_UPLOAD_NEEDED } else { 0 };
                put_header(&mut out, SPT_ENVIRONMENT, flags, len);
                out.extend_from_slice(hash);
            }
        }
        Bytes::from(out)
    }
}

/// Info text as `scriptingclient` prints it: at most 64 bytes, non-printable bytes as `.`.
pub fn info_text(info: &[u8]) -> String {
    info.iter()
        .take(MAX_INFO_SIZE)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const SHA1_EMPTY: [u8; 20] = [
        0xda, 0x39, 0xa3, 0xee, 0x5e, 0x6b, 0x4b, 0x0d, 0x32, 0x55, 0xbf, 0xef, 0x95, 0x60, 0x18,
        0x90, 0xaf, 0xd8, 0x07, 0x09,
    ];

    #[test]
    fn spec_examples() {
        let cases: Vec<(&str, ScriptingMessage)> = vec![
            (
                "01 00 00 09 6e 6f 64 65 31",
                ScriptingMessage::Ready {
                    info: Bytes::from_static(b"node1"),
                },
            ),
            (
                "00 00 00 0d 00 00 00 01 6e 6f 64 65 31",
                ScriptingMessage::NotReady {
                    reason: NotReadyReason::FullyLoaded,
                    info: Bytes::from_static(b"node1"),
                },
            ),
            (
                "07 00 00 18 da 39 a3 ee 5e 6b 4b 0d 32 55 bf ef 95 60 18 90 af d8 07 09",
                ScriptingMessage::Environment {
                    hash: SHA1_EMPTY,
                    upload_needed: false,
                },
            ),
            (
                "07 01 00 18 da 39 a3 ee 5e 6b 4b 0d 32 55 bf ef 95 60 18 90 af d8 07 09",
                ScriptingMessage::Environment {
                    hash: SHA1_EMPTY,
                    upload_needed: true,
                },
            ),
            ("02 00 00 04", ScriptingMessage::Upload(Bytes::new())),
            ("06 00 00 08 00 00 00 00", ScriptingMessage::Status(0)),
            ("04 00 00 04", ScriptingMessage::KeepAlive),
            (
                "05 00 00 08 00 00 00 00",
                ScriptingMessage::KeepAliveAck { status: Some(0) },
            ),
            (
                "05 00 00 04",
                ScriptingMessage::KeepAliveAck { status: None },
            ),
            (
                "03 00 00 07 61 62 63",
                ScriptingMessage::Download(Bytes::from_static(b"abc")),
            ),
        ];
        for (h, m) in cases {
            let b = Bytes::from(hex(h));
            assert_eq!(ScriptingMessage::decode_exact(&b).unwrap(), m, "{h}");
            assert_eq!(m.encode(), b, "{h}");
        }
    }

    #[test]
    fn pe_and_pu_length_rules() {
        let mut b = ScriptingMessage::Status(3).encode().to_vec();
        b.push(0);
        let b = Bytes::from(b);
        assert_eq!(
            ScriptingMessage::decode_bytes(&b).unwrap(),
            ScriptingMessage::Status(3)
        );
        assert_eq!(
            ScriptingMessage::decode_exact(&b).unwrap_err().kind,
            ServiceErrorKind::TrailingData { length: 8, have: 9 }
        );
        assert!(matches!(
            ScriptingMessage::decode(&hex("06 00 00 07 00 00 00"))
                .unwrap_err()
                .kind,
            ServiceErrorKind::LengthTooSmall { length: 7, min: 8 }
        ));
        assert!(matches!(
            ScriptingMessage::decode(&hex("02 00 00 09 61"))
                .unwrap_err()
                .kind,
            ServiceErrorKind::LengthBeyondData { length: 9, have: 5 }
        ));
        assert_eq!(
            ScriptingMessage::decode(&hex("08 00 00 04"))
                .unwrap_err()
                .kind,
            ServiceErrorKind::UnknownType(8)
        );
        assert_eq!(info_text(b"ab\x01c"), "ab.c");
    }

    fn payload(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn message() -> impl Strategy<Value = ScriptingMessage> {
        prop_oneof![
            (any::<u32>(), payload(65)).prop_map(|(r, info)| ScriptingMessage::NotReady {
                reason: NotReadyReason::from_code(r),
                info
            }),
            payload(65).prop_map(|info| ScriptingMessage::Ready { info }),
            payload(300).prop_map(ScriptingMessage::Upload),
            payload(300).prop_map(ScriptingMessage::Download),
            Just(ScriptingMessage::KeepAlive),
            proptest::option::of(any::<u32>())
                .prop_map(|status| ScriptingMessage::KeepAliveAck { status }),
            any::<u32>().prop_map(ScriptingMessage::Status),
            (any::<[u8; 20]>(), any::<bool>()).prop_map(|(hash, upload_needed)| {
                ScriptingMessage::Environment {
                    hash,
                    upload_needed,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(m in message()) {
            let b = m.encode();
            prop_assert_eq!(b.len(), m.encoded_len());
            prop_assert_eq!(ScriptingMessage::decode_exact(&b).unwrap(), m);
            for cut in 0..b.len() {
                let r = ScriptingMessage::decode(&b[..cut]);
                // A cut inside the Length-covered part is always detected.
                prop_assert!(r.is_err());
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let b = Bytes::from(data);
            let _ = ScriptingMessage::decode_bytes(&b);
            let _ = ScriptingMessage::decode_exact(&b);
        }
    }
}
