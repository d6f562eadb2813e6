//! Property tests: decode(encode(x)) == x for every message and parameter type, and
//! encode(decode(b)) == b for canonical bytes.

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use rserpool_proto::asap::AsapMessage;
use rserpool_proto::enrp::EnrpMessage;
use rserpool_proto::param::{Encode, Parameter};
use support::strategies::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn asap_message_round_trip(m in asap_message()) {
        let b = m.to_bytes();
        prop_assert_eq!(b.len(), m.encoded_len());
        prop_assert_eq!(b.len() % 4, 0);
        prop_assert_eq!(usize::from(u16::from_be_bytes([b[2], b[3]])), b.len());
        let d = AsapMessage::decode_bytes(&b).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&d, &m);
        // Canonical bytes: re-encoding the decoded message gives the same bytes.
        prop_assert_eq!(d.to_bytes(), b);
    }

    #[test]
    fn enrp_message_round_trip(m in enrp_message()) {
        let b = m.to_bytes();
        prop_assert_eq!(b.len(), m.encoded_len());
        prop_assert_eq!(b.len() % 4, 0);
        prop_assert_eq!(usize::from(u16::from_be_bytes([b[2], b[3]])), b.len());
        let d = EnrpMessage::decode_bytes(&b).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&d, &m);
        prop_assert_eq!(d.to_bytes(), b);
    }

    #[test]
    fn parameter_round_trip(p in parameter()) {
        let b = p.to_bytes();
        prop_assert_eq!(b.len(), p.encoded_len());
        prop_assert_eq!(b.len() % 4, 0);
        let (d, used) = Parameter::decode_bytes(&b).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(used, b.len());
        prop_assert_eq!(&d, &p);
        prop_assert_eq!(d.to_bytes(), b);
    }

    /// The RFC length convention (message length without the final padding, with or without
    /// the padding bytes present) decodes to the same message.
    #[test]
    fn rfc_length_convention_accepted(m in asap_message()) {
        let b = m.to_bytes().to_vec();
        let fixed = if matches!(m.message_type(), 7 | 10) { 4 } else { 0 };
        let l = rfc_length(&b, 4 + fixed);
        let mut rfc = b.clone();
        rfc[2..4].copy_from_slice(&u16::try_from(l).unwrap().to_be_bytes());
        prop_assert_eq!(&AsapMessage::decode(&rfc).map_err(|e| TestCaseError::fail(format!("{e}")))?, &m);
        rfc.truncate(l);
        prop_assert_eq!(&AsapMessage::decode(&rfc).map_err(|e| TestCaseError::fail(format!("{e}")))?, &m);
    }

    /// Arbitrary bytes never panic any decoder, and whatever decodes round-trips.
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        rserpool_proto::fuzzing::asap(&data);
        rserpool_proto::fuzzing::enrp(&data);
        rserpool_proto::fuzzing::parameter(&data);
    }

    /// Bytes that start with a plausible header and length reach the parameter parsers.
    #[test]
    fn arbitrary_bodies(ty in 0u8..16, flags in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..160)) {
        let mut data = vec![ty, flags, 0, 0];
        data.extend_from_slice(&body);
        let l = u16::try_from(data.len()).unwrap();
        data[2..4].copy_from_slice(&l.to_be_bytes());
        rserpool_proto::fuzzing::asap(&data);
        rserpool_proto::fuzzing::enrp(&data);
    }
}

/// Sanity: the strategies reach every message type.
#[test]
fn strategies_cover_every_message_type() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut asap = std::collections::BTreeSet::new();
    let mut enrp = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        asap.insert(
            asap_message()
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .message_type(),
        );
        enrp.insert(
            enrp_message()
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .message_type(),
        );
    }
    assert_eq!(
        asap.into_iter().collect::<Vec<_>>(),
        (1..=14).collect::<Vec<u8>>()
    );
    assert_eq!(
        enrp.into_iter().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<u8>>()
    );
    let _ = Bytes::new();
}

/// The message length an RFC sender writes: up to the end of the last TLV, without its padding.
fn rfc_length(b: &[u8], mut off: usize) -> usize {
    let mut end = off;
    while off + 4 <= b.len() {
        let l = usize::from(u16::from_be_bytes([b[off + 2], b[off + 3]]));
        end = off + l;
        off += (l + 3) & !3;
    }
    end
}
