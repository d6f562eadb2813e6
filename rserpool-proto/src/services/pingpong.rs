//! Ping Pong Protocol (PPP), PPID 33 (`services.md` §3).
//!
//! ```text
//! PING  Type 1 | Flags | Length = 12 + n | MessageNo u64 | Data (n)
//! PONG  Type 2 | Flags | Length = 20 + n | MessageNo u64 | ReplyNo u64 | Data (n)
//! Cookie (16 bytes): "<PP-TD1>" | ReplyNo u64 (the number the next Pong carries)
//! ```
//!
//! Decoding follows the receivers: the PE accepts a Ping with Length ≥ 12, the PU a Pong
//! with Length ≥ 20; the data are the `Length − header` bytes after the numbers. Unlike
//! RSPLIB's PE, a Length beyond the received size is an error, not an over-read.

use bytes::Bytes;

use super::{CommonHeader, Reader, ServiceError, ServiceErrorKind, put_header, share};

/// Type of a Ping (PU → PE).
pub const PPPT_PING: u8 = 0x01;
/// Type of a Pong (PE → PU).
pub const PPPT_PONG: u8 = 0x02;
/// Size of a Ping without data.
pub const PING_HEADER_SIZE: usize = 12;
/// Size of a Pong without data.
pub const PONG_HEADER_SIZE: usize = 20;
/// Most data bytes a Pong can carry (its Length field is 16 bits).
pub const MAX_PONG_DATA: usize = u16::MAX as usize - PONG_HEADER_SIZE;
/// Most data bytes a Ping can carry such that the PE can still answer it with a Pong.
pub const MAX_PING_DATA: usize = MAX_PONG_DATA;
/// The cookie identifier `<PP-TD1>`.
pub const PPP_COOKIE_ID: [u8; 8] = *b"<PP-TD1>";
/// Size of a Ping Pong cookie.
pub const PPP_COOKIE_SIZE: usize = 16;

/// A Ping Pong message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PingPongMessage {
    /// PU → PE.
    Ping {
        /// The PU's message number (starts at 1).
        message_no: u64,
        /// Payload, echoed in the Pong (`pingpongclient`: "Nachricht: …, Zeitstempel: …").
        data: Bytes,
    },
    /// PE → PU.
    Pong {
        /// Copied from the Ping.
        message_no: u64,
        /// The PE's per-session reply counter (starts at 1, continued via the cookie).
        reply_no: u64,
        /// Copied from the Ping.
        data: Bytes,
    },
}

impl PingPongMessage {
    /// Decodes a message, copying its data.
    pub fn decode(data: &[u8]) -> Result<PingPongMessage, ServiceError> {
        Self::decode_bytes(&Bytes::copy_from_slice(data))
    }

    /// Decodes a message; its data share `data`'s buffer.
    pub fn decode_bytes(data: &Bytes) -> Result<PingPongMessage, ServiceError> {
        let h = CommonHeader::decode(data)?;
        let r = Reader::new(data);
        match h.ty {
            PPPT_PING => {
                let length = h.checked_length(PING_HEADER_SIZE, data.len())?;
                Ok(PingPongMessage::Ping {
                    message_no: r.u64(4)?,
                    data: share(data, PING_HEADER_SIZE, length),
                })
            }
            PPPT_PONG => {
                let length = h.checked_length(PONG_HEADER_SIZE, data.len())?;
                Ok(PingPongMessage::Pong {
                    message_no: r.u64(4)?,
                    reply_no: r.u64(12)?,
                    data: share(data, PONG_HEADER_SIZE, length),
                })
            }
            t => Err(ServiceError::new(0, ServiceErrorKind::UnknownType(t))),
        }
    }

    /// Encoded size. Data beyond [`MAX_PONG_DATA`] / [`MAX_PING_DATA`] is not encoded.
    pub fn encoded_len(&self) -> usize {
        match self {
            PingPongMessage::Ping { data, .. } => PING_HEADER_SIZE + data.len().min(MAX_PING_DATA),
            PingPongMessage::Pong { data, .. } => PONG_HEADER_SIZE + data.len().min(MAX_PONG_DATA),
        }
    }

    /// Encodes the message as RSPLIB does (Flags 0). Data longer than the maximum is cut at
    /// the maximum (callers check [`MAX_PING_DATA`] first).
    pub fn encode(&self) -> Bytes {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        match self {
            PingPongMessage::Ping { message_no, data } => {
                put_header(&mut out, PPPT_PING, 0, len);
                out.extend_from_slice(&message_no.to_be_bytes());
                out.extend_from_slice(data.get(..len - PING_HEADER_SIZE).unwrap_or(data));
            }
            PingPongMessage::Pong {
                message_no,
                reply_no,
                data,
            } => {
                put_header(&mut out, PPPT_PONG, 0, len);
                out.extend_from_slice(&message_no.to_be_bytes());
                out.extend_from_slice(&reply_no.to_be_bytes());
                out.extend_from_slice(data.get(..len - PONG_HEADER_SIZE).unwrap_or(data));
            }
        }
        Bytes::from(out)
    }
}

/// The Ping Pong PE's cookie: the ReplyNo the next Pong will carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PingPongCookie {
    /// The next ReplyNo.
    pub reply_no: u64,
}

impl PingPongCookie {
    /// Decodes a cookie as RSPLIB's PE accepts it: exactly 16 bytes with ID `<PP-TD1>`.
    pub fn decode(data: &[u8]) -> Result<PingPongCookie, ServiceError> {
        if data.len() != PPP_COOKIE_SIZE {
            return Err(ServiceError::new(
                0,
                ServiceErrorKind::BadCookieSize {
                    have: data.len(),
                    expected: PPP_COOKIE_SIZE,
                },
            ));
        }
        let r = Reader::new(data);
        if r.array::<8>(0)? != PPP_COOKIE_ID {
            return Err(ServiceError::new(0, ServiceErrorKind::BadCookieId));
        }
        Ok(PingPongCookie {
            reply_no: r.u64(8)?,
        })
    }

    /// Encodes the 16-byte cookie.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(PPP_COOKIE_SIZE);
        out.extend_from_slice(&PPP_COOKIE_ID);
        out.extend_from_slice(&self.reply_no.to_be_bytes());
        Bytes::from(out)
    }
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

    // [CAP 03] frames 33 and 35 (the first Ping and Pong of rsplib 3.4.4).
    const CAP_PING: &str = "0100003700000000000000014e61636872696368743a20312c205a6569747374656d70656c3a2031373935343836363236383633313939";
    const CAP_PONG: &str = "0200003f000000000000000100000000000000014e61636872696368743a20312c205a6569747374656d70656c3a2031373935343836363236383633313939";

    #[test]
    fn capture_ping_and_pong() {
        let ping = hex(CAP_PING);
        let m = PingPongMessage::decode(&ping).unwrap();
        let PingPongMessage::Ping { message_no, data } = &m else {
            panic!("not a ping: {m:?}")
        };
        assert_eq!(*message_no, 1);
        assert_eq!(&data[..], b"Nachricht: 1, Zeitstempel: 1795486626863199");
        assert_eq!(m.encode(), ping);

        let pong = hex(CAP_PONG);
        let m = PingPongMessage::decode(&pong).unwrap();
        assert_eq!(
            m,
            PingPongMessage::Pong {
                message_no: 1,
                reply_no: 1,
                data: Bytes::from_static(b"Nachricht: 1, Zeitstempel: 1795486626863199"),
            }
        );
        assert_eq!(m.encode(), pong);
    }

    #[test]
    fn capture_cookies() {
        // asap-cookie.hex / asap-cookie-echo.hex payloads (Cookie TLV values).
        let c = hex("3c50502d5444313e0000000000000002");
        assert_eq!(PingPongCookie::decode(&c).unwrap().reply_no, 2);
        assert_eq!(PingPongCookie { reply_no: 2 }.encode(), c);
        let c = hex("3c50502d5444313e000000000000000d");
        assert_eq!(PingPongCookie::decode(&c).unwrap().reply_no, 13);
    }

    #[test]
    fn bad_cookies() {
        let mut c = PingPongCookie { reply_no: 7 }.encode().to_vec();
        c[1] = b'Q';
        assert_eq!(
            PingPongCookie::decode(&c).unwrap_err().kind,
            ServiceErrorKind::BadCookieId
        );
        assert!(matches!(
            PingPongCookie::decode(&c[..15]).unwrap_err().kind,
            ServiceErrorKind::BadCookieSize { have: 15, .. }
        ));
    }

    #[test]
    fn length_checks() {
        // Length beyond the data: RSPLIB over-reads, we refuse.
        let mut ping = hex(CAP_PING);
        ping[3] = 0x40;
        assert_eq!(
            PingPongMessage::decode(&ping).unwrap_err().kind,
            ServiceErrorKind::LengthBeyondData {
                length: 0x40,
                have: ping.len()
            }
        );
        // Length below the minimum.
        ping[3] = 11;
        assert!(matches!(
            PingPongMessage::decode(&ping).unwrap_err().kind,
            ServiceErrorKind::LengthTooSmall { length: 11, .. }
        ));
        // Trailing bytes after Length are ignored; the data end at Length.
        ping[3] = 14;
        let m = PingPongMessage::decode(&ping).unwrap();
        assert_eq!(
            m,
            PingPongMessage::Ping {
                message_no: 1,
                data: Bytes::from_static(b"Na")
            }
        );
        assert_eq!(
            PingPongMessage::decode(&[3, 0, 0, 4]).unwrap_err().kind,
            ServiceErrorKind::UnknownType(3)
        );
    }

    fn message() -> impl Strategy<Value = PingPongMessage> {
        let data = proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from);
        prop_oneof![
            (any::<u64>(), data.clone())
                .prop_map(|(message_no, data)| PingPongMessage::Ping { message_no, data }),
            (any::<u64>(), any::<u64>(), data).prop_map(|(message_no, reply_no, data)| {
                PingPongMessage::Pong {
                    message_no,
                    reply_no,
                    data,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(m in message()) {
            let b = m.encode();
            prop_assert_eq!(b.len(), m.encoded_len());
            prop_assert_eq!(PingPongMessage::decode_bytes(&b).unwrap(), m);
        }

        #[test]
        fn truncation_is_an_error(m in message(), cut in 0usize..1000) {
            let b = m.encode();
            let cut = cut % b.len();
            prop_assert!(PingPongMessage::decode(&b[..cut]).is_err());
        }

        #[test]
        fn cookie_roundtrip(reply_no in any::<u64>()) {
            let c = PingPongCookie { reply_no };
            prop_assert_eq!(PingPongCookie::decode(&c.encode()).unwrap(), c);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = PingPongMessage::decode(&data);
            let _ = PingPongCookie::decode(&data);
        }
    }
}
