//! CalcApp, PPID 34 (`services.md` §4).
//!
//! Every message has the same fixed 24-byte layout:
//! ```text
//! Type u8 | Flags u8 | Length u16 (= 24) | JobID u32 | JobSize u64 | Completed u64
//! ```
//! The cookie is 20 bytes: `JobID u32 | JobSize u64 | Completed u64`.
//!
//! RSPLIB's receivers check only `received ≥ 24` and switch on Type; Length and Flags are
//! never looked at. [`CalcAppMessage::decode`] does the same (it also ignores bytes after
//! the 24th), so anything RSPLIB accepts decodes here.

use bytes::Bytes;

use super::{Reader, ServiceError, ServiceErrorKind, put_header};

/// Size of every CalcApp message.
pub const CALCAPP_MESSAGE_SIZE: usize = 24;
/// Size of the CalcApp cookie.
pub const CALCAPP_COOKIE_SIZE: usize = 20;

/// CalcApp message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CalcAppType {
    /// 1: PU asks for a job (JobSize set).
    Request,
    /// 2: PE accepts the job.
    Accept,
    /// 3: PE rejects the job (full).
    Reject,
    /// 4: defined, never sent or handled by RSPLIB.
    Abort,
    /// 5: PE reports the job complete (JobSize = Completed = job size).
    Complete,
    /// 6: keep-alive, both directions.
    KeepAlive,
    /// 7: keep-alive acknowledgement, both directions.
    KeepAliveAck,
}

impl CalcAppType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            CalcAppType::Request => 1,
            CalcAppType::Accept => 2,
            CalcAppType::Reject => 3,
            CalcAppType::Abort => 4,
            CalcAppType::Complete => 5,
            CalcAppType::KeepAlive => 6,
            CalcAppType::KeepAliveAck => 7,
        }
    }

    /// The type for a wire value.
    pub fn from_code(code: u8) -> Option<CalcAppType> {
        Some(match code {
            1 => CalcAppType::Request,
            2 => CalcAppType::Accept,
            3 => CalcAppType::Reject,
            4 => CalcAppType::Abort,
            5 => CalcAppType::Complete,
            6 => CalcAppType::KeepAlive,
            7 => CalcAppType::KeepAliveAck,
            _ => return None,
        })
    }
}

/// A CalcApp message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CalcAppMessage {
    /// Type.
    pub ty: CalcAppType,
    /// Job identifier (the PU numbers its jobs 1, 2, 3, …).
    pub job_id: u32,
    /// Job size in calculations (REQUEST, COMPLETE; 0 otherwise).
    pub job_size: u64,
    /// Calculations completed (COMPLETE; 0 otherwise).
    pub completed: u64,
}

impl CalcAppMessage {
    /// A message of type `ty` for `job_id` with JobSize and Completed 0 (ACCEPT, REJECT,
    /// KEEPALIVE, KEEPALIVE_ACK, ABORT).
    pub fn new(ty: CalcAppType, job_id: u32) -> CalcAppMessage {
        CalcAppMessage {
            ty,
            job_id,
            job_size: 0,
            completed: 0,
        }
    }

    /// REQUEST for a job of `job_size` calculations.
    pub fn request(job_id: u32, job_size: u64) -> CalcAppMessage {
        CalcAppMessage {
            job_size,
            ..CalcAppMessage::new(CalcAppType::Request, job_id)
        }
    }

    /// COMPLETE: JobSize and Completed as the PE reports them.
    pub fn complete(job_id: u32, job_size: u64, completed: u64) -> CalcAppMessage {
        CalcAppMessage {
            ty: CalcAppType::Complete,
            job_id,
            job_size,
            completed,
        }
    }

    /// Decodes a message: at least 24 bytes, a known Type; Length and Flags are ignored.
    pub fn decode(data: &[u8]) -> Result<CalcAppMessage, ServiceError> {
        let r = Reader::new(data);
        if data.len() < CALCAPP_MESSAGE_SIZE {
            return Err(ServiceError::new(
                data.len(),
                ServiceErrorKind::Truncated {
                    need: CALCAPP_MESSAGE_SIZE,
                    have: data.len(),
                },
            ));
        }
        let code = r.u8(0)?;
        let ty = CalcAppType::from_code(code)
            .ok_or(ServiceError::new(0, ServiceErrorKind::UnknownType(code)))?;
        Ok(CalcAppMessage {
            ty,
            job_id: r.u32(4)?,
            job_size: r.u64(8)?,
            completed: r.u64(16)?,
        })
    }

    /// Encodes the 24-byte message (Flags 0, Length 24).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(CALCAPP_MESSAGE_SIZE);
        put_header(&mut out, self.ty.code(), 0, CALCAPP_MESSAGE_SIZE);
        out.extend_from_slice(&self.job_id.to_be_bytes());
        out.extend_from_slice(&self.job_size.to_be_bytes());
        out.extend_from_slice(&self.completed.to_be_bytes());
        Bytes::from(out)
    }
}

/// The CalcApp PE's cookie: enough to resume the job elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CalcAppCookie {
    /// Job identifier.
    pub job_id: u32,
    /// Job size (rounded).
    pub job_size: u64,
    /// Calculations done (rounded).
    pub completed: u64,
}

impl CalcAppCookie {
    /// Decodes a cookie as RSPLIB's PE does: at least 20 bytes (extra bytes ignored).
    pub fn decode(data: &[u8]) -> Result<CalcAppCookie, ServiceError> {
        if data.len() < CALCAPP_COOKIE_SIZE {
            return Err(ServiceError::new(
                0,
                ServiceErrorKind::BadCookieSize {
                    have: data.len(),
                    expected: CALCAPP_COOKIE_SIZE,
                },
            ));
        }
        let r = Reader::new(data);
        Ok(CalcAppCookie {
            job_id: r.u32(0)?,
            job_size: r.u64(4)?,
            completed: r.u64(12)?,
        })
    }

    /// Encodes the 20-byte cookie.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(CALCAPP_COOKIE_SIZE);
        out.extend_from_slice(&self.job_id.to_be_bytes());
        out.extend_from_slice(&self.job_size.to_be_bytes());
        out.extend_from_slice(&self.completed.to_be_bytes());
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

    #[test]
    fn capture_examples() {
        // [CAP 04] as quoted in services.md §4.4.
        let req = hex("01 00 00 18 00 00 00 01 00 00 00 00 00 1a e6 cb 00 00 00 00 00 00 00 00");
        assert_eq!(
            CalcAppMessage::decode(&req).unwrap(),
            CalcAppMessage::request(1, 1_763_019)
        );
        assert_eq!(CalcAppMessage::request(1, 1_763_019).encode(), req);

        let accept = CalcAppMessage::new(CalcAppType::Accept, 1).encode();
        assert_eq!(
            accept,
            hex("02 00 00 18 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00")
        );
        let complete =
            hex("05 00 00 18 00 00 00 01 00 00 00 00 00 1a e6 cb 00 00 00 00 00 1a e6 cb");
        assert_eq!(
            CalcAppMessage::complete(1, 0x1ae6cb, 0x1ae6cb).encode(),
            complete
        );
        let ka = hex("06 00 00 18 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
        assert_eq!(
            CalcAppMessage::decode(&ka).unwrap().ty,
            CalcAppType::KeepAlive
        );

        let cookie = hex("00 00 00 01 00 00 00 00 00 1a e6 cb 00 00 00 00 00 01 a4 51");
        let c = CalcAppCookie::decode(&cookie).unwrap();
        assert_eq!(
            c,
            CalcAppCookie {
                job_id: 1,
                job_size: 1_763_019,
                completed: 107_601
            }
        );
        assert_eq!(c.encode(), cookie);
        let echo = hex("00 00 00 02 00 00 00 00 00 82 30 46 00 00 00 00 00 3a 19 1d");
        assert_eq!(CalcAppCookie::decode(&echo).unwrap().completed, 0x3a191d);
    }

    #[test]
    fn lenient_like_rsplib() {
        // Length and Flags are ignored; extra bytes too.
        let mut m = CalcAppMessage::new(CalcAppType::KeepAliveAck, 9)
            .encode()
            .to_vec();
        m[1] = 0xff;
        m[3] = 0;
        m.push(0xaa);
        assert_eq!(
            CalcAppMessage::decode(&m).unwrap(),
            CalcAppMessage::new(CalcAppType::KeepAliveAck, 9)
        );
        m[0] = 8;
        assert_eq!(
            CalcAppMessage::decode(&m).unwrap_err().kind,
            ServiceErrorKind::UnknownType(8)
        );
        assert!(matches!(
            CalcAppMessage::decode(&m[..23]).unwrap_err().kind,
            ServiceErrorKind::Truncated { need: 24, have: 23 }
        ));
        assert!(matches!(
            CalcAppCookie::decode(&m[..19]).unwrap_err().kind,
            ServiceErrorKind::BadCookieSize {
                have: 19,
                expected: 20
            }
        ));
    }

    fn message() -> impl Strategy<Value = CalcAppMessage> {
        (1u8..=7, any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(t, job_id, s, c)| {
            CalcAppMessage {
                ty: CalcAppType::from_code(t).unwrap(),
                job_id,
                job_size: s,
                completed: c,
            }
        })
    }

    proptest! {
        #[test]
        fn roundtrip(m in message()) {
            let b = m.encode();
            prop_assert_eq!(b.len(), CALCAPP_MESSAGE_SIZE);
            prop_assert_eq!(CalcAppMessage::decode(&b).unwrap(), m);
            for cut in 0..b.len() {
                prop_assert!(CalcAppMessage::decode(&b[..cut]).is_err());
            }
        }

        #[test]
        fn cookie_roundtrip(job_id in any::<u32>(), job_size in any::<u64>(), completed in any::<u64>()) {
            let c = CalcAppCookie { job_id, job_size, completed };
            let b = c.encode();
            prop_assert_eq!(CalcAppCookie::decode(&b).unwrap(), c);
            for cut in 0..b.len() {
                prop_assert!(CalcAppCookie::decode(&b[..cut]).is_err());
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = CalcAppMessage::decode(&data);
            let _ = CalcAppCookie::decode(&data);
        }
    }
}
