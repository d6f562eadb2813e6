//! Entry points for fuzzers (`fuzz/` holds the cargo-fuzz targets calling them) and for the
//! corpus-replay test.
//!
//! Each function decodes arbitrary bytes. Errors are fine; a panic is the failure the fuzzer
//! looks for. On success the message is re-encoded and decoded again, and the two decoded
//! messages must be equal: the functions **panic** (by design) when
//! `decode(encode(m)) != m`, when the encoded size differs from `encoded_len()`, or when the
//! re-encoded bytes fail to decode.

use crate::asap::AsapMessage;
use crate::enrp::EnrpMessage;
use crate::param::{Encode, Parameter};

/// Fuzzes the ASAP decoder and the encode/decode round trip.
pub fn asap(data: &[u8]) {
    if let Ok(m) = AsapMessage::decode(data) {
        let bytes = m.to_bytes();
        assert_eq!(bytes.len(), m.encoded_len(), "encoded_len disagrees");
        let again = AsapMessage::decode_bytes(&bytes)
            .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
        assert_eq!(m, again, "decode(encode(m)) != m");
    }
}

/// Fuzzes the ENRP decoder and the encode/decode round trip.
pub fn enrp(data: &[u8]) {
    if let Ok(m) = EnrpMessage::decode(data) {
        let bytes = m.to_bytes();
        assert_eq!(bytes.len(), m.encoded_len(), "encoded_len disagrees");
        let again = EnrpMessage::decode_bytes(&bytes)
            .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
        assert_eq!(m, again, "decode(encode(m)) != m");
    }
}

/// Fuzzes the stand-alone parameter decoder and its round trip.
pub fn parameter(data: &[u8]) {
    if let Ok((p, _)) = Parameter::decode(data) {
        let bytes = p.to_bytes();
        assert_eq!(bytes.len(), p.encoded_len(), "encoded_len disagrees");
        let (again, used) = Parameter::decode_bytes(&bytes)
            .unwrap_or_else(|e| panic!("re-encoded {p:?} does not decode: {e}"));
        assert_eq!(used, bytes.len(), "re-encoded parameter not fully consumed");
        assert_eq!(p, again, "decode(encode(p)) != p");
    }
}

/// Fuzzes the Component Status Protocol decoder and its round trip.
pub fn csp(data: &[u8]) {
    crate::csp::fuzz_csp(data);
}

/// Fuzzes the TCP-mapping (RTF) stream decoder and connection with arbitrary bytes.
pub fn rtf(data: &[u8]) {
    crate::rtf::fuzz_rtf_stream(data);
}
