//! Decoder behaviour the specs prescribe: unknown-parameter action bits, skipped parameters
//! and their reports, Operation Error causes for each error, both length conventions, the
//! worked examples of the spec digests.

mod support;

use bytes::Bytes;
use rserpool_proto::asap::{self, AsapMessage};
use rserpool_proto::enrp::EnrpMessage;
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{
    Encode, ErrorCause, OperationError, Parameter, PoolElementParameter, UnknownAction,
    UnknownParameter, cause,
};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{TransportParameter, TransportProtocol};
use rserpool_proto::{DecodeError, DecodeErrorKind};
use support::hex;

/// Pool handle "EchoPool".
const PH: &str = "0009000c 4563686f 506f6f6c";

fn msg(ty: u8, flags: u8, body: &str) -> Vec<u8> {
    let body = hex(body);
    let mut m = vec![ty, flags];
    m.extend_from_slice(&u16::try_from(body.len() + 4).unwrap().to_be_bytes());
    m.extend_from_slice(&body);
    m
}

fn asap_err(data: &[u8]) -> DecodeError {
    AsapMessage::decode(data).expect_err("must not decode")
}

#[test]
fn stop_and_report_parameter_answers_like_rsplib_vector() {
    // Handle Resolution whose parameter after the pool handle is 0x4fff ("stop and report").
    let req = msg(0x05, 0, &format!("{PH} 4fff0008 00000000"));
    let e = asap_err(&req);
    assert_eq!(e.kind, DecodeErrorKind::UnknownParameter { ty: 0x4fff });
    assert_eq!(e.offset, 16);
    let cause = e.operation_error().expect("a report is required");
    assert_eq!(cause.code, cause::UNRECOGNIZED_PARAMETER);
    assert_eq!(&cause.info[..], &hex("4fff0008 00000000")[..]);
    // The answer is byte for byte what RSPLIB sent in 07-asap-enrp-errors.pcap.
    let answer = AsapMessage::Error(asap::AsapError {
        error: OperationError::new(cause),
        ..Default::default()
    });
    let vectors = support::vectors();
    let rsplib = &vectors
        .iter()
        .find(|(n, _)| n == "asap-error-unrecognized-parameter.hex")
        .unwrap()
        .1;
    assert_eq!(&answer.to_bytes()[..], &rsplib[..]);
}

#[test]
fn stop_parameter_is_silent() {
    let e = asap_err(&msg(0x05, 0, &format!("{PH} 0fff0008 00000000")));
    assert_eq!(e.kind, DecodeErrorKind::UnknownParameter { ty: 0x0fff });
    assert_eq!(e.operation_error(), None);
}

#[test]
fn skip_parameters_are_kept_and_reencoded_in_place() {
    // Registration: PH, skip (0x8123, 5-byte value, padded), PE, skip-and-report (0xc001).
    let pe = "000a0028 051da794 00000000 00002328 00040010 90000001 00010008 0a63000e \
              00080008 00000001";
    let data = msg(
        0x01,
        0,
        &format!("{PH} 81230009 0102030405000000 {pe} c0010004"),
    );
    let shared = Bytes::from(data.clone());
    let (m, reports) = AsapMessage::decode_with_unrecognized(&shared).unwrap();
    let AsapMessage::Registration(r) = &m else {
        panic!()
    };
    assert_eq!(r.skipped.len(), 2);
    assert_eq!(r.skipped[0].position, 1);
    assert_eq!(r.skipped[0].parameter.parameter_type(), 0x8123);
    assert_eq!(r.skipped[0].parameter.action(), UnknownAction::Skip);
    assert_eq!(r.skipped[0].parameter.value(), &[1, 2, 3, 4, 5]);
    assert_eq!(r.skipped[1].position, 2);
    assert_eq!(
        r.skipped[1].parameter.action(),
        UnknownAction::SkipAndReport
    );
    assert_eq!(&m.to_bytes()[..], &data[..]);
    // Only the skip-and-report one is to be reported.
    assert_eq!(reports, vec![r.skipped[1].parameter.clone()]);
    let oe = OperationError::unrecognized_parameters(&reports).unwrap();
    assert_eq!(oe.causes, vec![ErrorCause::new(1, hex("c0010004"))]);
    assert_eq!(OperationError::unrecognized_parameters(&[]), None);
}

#[test]
fn misplaced_skip_type_known_parameter_is_skipped() {
    // A Handle Resolution Option (0x803f, action "skip") where it is not expected.
    let data = msg(
        0x08,
        0,
        &format!("{PH} 803f0008 00000005 000e0008 00000001"),
    );
    let m = AsapMessage::decode(&data).unwrap();
    assert_eq!(m.skipped().len(), 1);
    assert_eq!(m.skipped()[0].position, 1);
    assert_eq!(&m.to_bytes()[..], &data[..]);
}

#[test]
fn nested_skip_parameters_are_dropped_but_reported() {
    // SCTP transport with a skip-and-report TLV between its addresses, inside a Server Announce.
    let data = msg(
        0x0a,
        0,
        "0000000a 0004001c 0f170000 00010008 0a000002 c0420004 00010008 0a000003",
    );
    let (m, reports) = AsapMessage::decode_with_unrecognized(&Bytes::from(data)).unwrap();
    let AsapMessage::ServerAnnounce(a) = m else {
        panic!()
    };
    assert_eq!(a.transports[0].addresses.len(), 2);
    assert!(a.skipped.is_empty());
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].parameter_type(), 0xc042);
}

#[test]
fn unknown_message_types_follow_their_action_bits() {
    // 0x7e has action bits 01: report "Unrecognized Message" quoting it (RSPLIB stays silent).
    let data = msg(0x7e, 0, "00000000");
    let e = asap_err(&data);
    assert_eq!(e.kind, DecodeErrorKind::UnknownMessageType(0x7e));
    let c = e.operation_error().unwrap();
    assert_eq!(c.code, cause::UNRECOGNIZED_MESSAGE);
    assert_eq!(&c.info[..], &data[..]);
    // 0x3e: action bits 00, silent.
    assert_eq!(asap_err(&msg(0x3e, 0, "")).operation_error(), None);
    let e = EnrpMessage::decode(&msg(0x0b, 0, "00000001 00000002")).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::UnknownMessageType(0x0b));
    assert_eq!(e.operation_error(), None);
}

#[test]
fn invalid_values_quote_the_innermost_parameter() {
    // Registration whose SCTP user transport has no address.
    let data = msg(
        0x01,
        0,
        &format!("{PH} 000a0020 00000001 00000000 00002328 00040008 90000001 00080008 00000001"),
    );
    let e = asap_err(&data);
    assert_eq!(
        e.kind,
        DecodeErrorKind::InvalidValue("transport parameter without address")
    );
    assert_eq!(e.offset, 32);
    let c = e.operation_error().unwrap();
    assert_eq!(c.code, cause::INVALID_VALUES);
    assert_eq!(&c.info[..], &hex("00040008 90000001")[..]);

    // Unsupported policy type.
    let data = msg(
        0x01,
        0,
        &format!(
            "{PH} 000a0028 00000001 00000000 00002328 00040010 90000001 00010008 0a63000e \
             00080008 b0002004"
        ),
    );
    let e = asap_err(&data);
    assert_eq!(
        e.kind,
        DecodeErrorKind::UnsupportedPolicy {
            policy_type: 0xb000_2004
        }
    );
    assert_eq!(&e.raw[..], &hex("00080008 b0002004")[..]);
    assert_eq!(e.operation_error().unwrap().code, cause::INVALID_VALUES);

    // IPv4 address parameter of the wrong length.
    let e = Parameter::decode(&hex("00010009 0a000001 ff000000")).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::BadLength { ty: 1, length: 9 });

    // TLV length below 4.
    let e = asap_err(&msg(0x05, 0, "00090002"));
    assert_eq!(e.kind, DecodeErrorKind::BadLength { ty: 9, length: 2 });
    assert_eq!(e.operation_error().unwrap().code, cause::INVALID_VALUES);
}

#[test]
fn structural_errors() {
    // Missing PE identifier.
    let e = asap_err(&msg(0x02, 0, PH));
    assert_eq!(e.kind, DecodeErrorKind::MissingParameter("PE identifier"));
    assert_eq!(
        e.operation_error(),
        Some(ErrorCause::new(cause::UNSPECIFIED_ERROR, Bytes::new()))
    );
    // A known parameter where it does not belong.
    let e = asap_err(&msg(0x01, 0, &format!("{PH} 000d0008 01020304")));
    assert_eq!(e.kind, DecodeErrorKind::UnexpectedParameter { ty: 0x000d });
    assert_eq!(&e.raw[..], &hex("000d0008 01020304")[..]);
    // ENRP Handle Table Request with an extra parameter (RSPLIB answers 0x0010; we 0x3).
    let e = EnrpMessage::decode(&msg(0x02, 0, "00000001 00000002 000e0008 00000001")).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::UnexpectedParameter { ty: 0x000e });
    assert_eq!(e.operation_error().unwrap().code, cause::INVALID_VALUES);
    // Header shorter than 4 bytes: silent.
    let e = asap_err(&[0x01, 0x00]);
    assert_eq!(e.kind, DecodeErrorKind::Truncated { need: 4, have: 2 });
    assert_eq!(e.operation_error(), None);
    // Message length below 4, or beyond the data.
    assert_eq!(
        asap_err(&hex("0b000003")).kind,
        DecodeErrorKind::BadLength { ty: 0, length: 3 }
    );
    assert_eq!(
        asap_err(&hex("0b000010 000d0008")).kind,
        DecodeErrorKind::Truncated { need: 16, have: 8 }
    );
    // Display is informative.
    assert_eq!(
        asap_err(&msg(0x02, 0, PH)).to_string(),
        "at offset 16: missing PE identifier"
    );
}

#[test]
fn header_length_is_an_upper_bound() {
    // Bytes after the (padded) message length are not part of the message.
    let mut data = msg(0x0b, 0, "000d0009 68656c6c 6f000000");
    data.extend_from_slice(&hex("deadbeef"));
    let m = AsapMessage::decode(&data).unwrap();
    assert_eq!(&m.to_bytes()[..], &data[..16]);
    // RFC form: length 13 without the cookie's padding, with and without the pad bytes.
    let rfc = hex("0b00000d 000d0009 68656c6c 6f000000");
    assert_eq!(AsapMessage::decode(&rfc).unwrap(), m);
    assert_eq!(AsapMessage::decode(&rfc[..13]).unwrap(), m);
}

#[test]
fn reserved_flags_are_kept() {
    let data = msg(0x03, 0x81, &format!("{PH} 000e0008 00000001"));
    let AsapMessage::RegistrationResponse(r) = AsapMessage::decode(&data).unwrap() else {
        panic!()
    };
    assert!(r.reject);
    assert_eq!(r.reserved_flags, 0x80);
    assert_eq!(
        &AsapMessage::RegistrationResponse(r).to_bytes()[..],
        &data[..]
    );
    let data = msg(0x03, 0x06, "00000001 00000002");
    let m = EnrpMessage::decode(&data).unwrap();
    let EnrpMessage::HandleTableResponse(r) = &m else {
        panic!()
    };
    assert!(r.more && !r.reject);
    assert_eq!(r.reserved_flags, 0x04);
    assert_eq!(&m.to_bytes()[..], &data[..]);
}

#[test]
fn policy_with_trailing_bytes_is_tolerated() {
    let (p, used) = Parameter::decode(&hex("00080010 00000002 00000005 ffffffff")).unwrap();
    assert_eq!(
        p,
        Parameter::Policy(Policy::WeightedRoundRobin { weight: 5 })
    );
    assert_eq!(used, 16);
    // Too short for its type.
    let e = Parameter::decode(&hex("0008000c 40000002 00000001")).unwrap_err();
    assert_eq!(
        e.kind,
        DecodeErrorKind::InvalidValue("policy parameter too short for its type")
    );
}

#[test]
fn rfc_nested_length_without_last_child_padding() {
    // Server Information whose Opaque transport has 5 bytes; RFC outer length omits its padding.
    let rsplib = hex("000b0014 00000007 00100009 0102030405000000");
    let rfc = hex("000b0011 00000007 00100009 0102030405000000");
    let (a, _) = Parameter::decode(&rsplib).unwrap();
    let (b, used) = Parameter::decode(&rfc).unwrap();
    assert_eq!(a, b);
    assert_eq!(used, 20);
    assert_eq!(&a.to_bytes()[..], &rsplib[..]);
}

#[test]
fn spec_worked_examples_round_trip() {
    // parameters.md §6.1 (PE as sent by a PE), §6.3 (as forwarded by a registrar), §6.4.
    let examples = [
        "000a0038 12345678 00000000 00015f90 00040018 13880001 00010008 0a000001 \
         00010008 c0a80101 00080010 40000002 40000000 0ccccccd",
        "000a0038 12345678 0000000a 00015f90 00040010 13880001 00010008 0a000001 \
         00080008 00000001 00040010 9c400000 00010008 0a000001",
        "000c0008 00050004",
        "000c0008 00090004",
        "000c0010 0001000c 41230008 deadbeef",
        "000d0009 68656c6c 6f000000",
        "000e0008 12345678",
        "000f0006 ffff0000",
        "803f0008 00000005",
        "00020014 00000000 00000000 00000000 00000001",
        // policies.md §2.1
        "0008000c 00000002 00000005",
        "0008000c 00000005 00000007",
        "0008000c 40000001 80000000",
        "00080014 b0002002 00000000 00418937 00000064",
    ];
    for ex in examples {
        let b = hex(ex);
        let (p, used) = Parameter::decode(&b).unwrap_or_else(|e| panic!("{ex}: {e}"));
        assert_eq!(used, b.len());
        assert_eq!(&p.to_bytes()[..], &b[..], "{ex}");
    }
    let (p, _) = Parameter::decode(&hex(examples[0])).unwrap();
    let Parameter::PoolElement(pe) = p else {
        panic!()
    };
    assert_eq!(
        pe,
        PoolElementParameter {
            pe_id: PeIdentifier(0x1234_5678),
            home_server_id: ServerId(0),
            registration_life: 90000,
            user_transport: TransportParameter::sctp(
                5000,
                1,
                ["10.0.0.1".parse().unwrap(), "192.168.1.1".parse().unwrap()]
            ),
            policy: Policy::LeastUsedDegradation {
                load: 0x4000_0000,
                degradation: 0x0ccc_cccd
            },
            asap_transport: None,
        }
    );
    // asap.md examples.
    for ex in [
        "0200001c 0009000f 43616c63 41707050 6f6f6c00 000e0008 12345678",
        "03010024 0009000f 43616c63 41707050 6f6f6c00 000e0008 12345678 000c0008 00050004",
        "0500001c 0009000f 43616c63 41707050 6f6f6c00 803f0008 00000005",
        "0600001c 0009000f 43616c63 41707050 6f6f6c00 000c0008 00090004",
        "07010020 0000000a 0009000f 43616c63 41707050 6f6f6c00 000e0008 12345678",
        "0a000018 0000000a 00040010 0f170000 00010008 0a000002",
        "0b000010 000d0009 68656c6c 6f000000",
        "0e000014 000c0010 0001000c 41230008 deadbeef",
    ] {
        let b = hex(ex);
        let m = AsapMessage::decode(&b).unwrap_or_else(|e| panic!("{ex}: {e}"));
        assert_eq!(&m.to_bytes()[..], &b[..], "{ex}");
    }
}

#[test]
fn registration_builds_the_spec_example() {
    // parameters.md §6.2: ASAP_REGISTRATION for "CalcAppPool" with the §6.1 PE.
    let (p, _) = Parameter::decode(&hex(
        "000a0038 12345678 00000000 00015f90 00040018 13880001 00010008 0a000001 \
         00010008 c0a80101 00080010 40000002 40000000 0ccccccd",
    ))
    .unwrap();
    let Parameter::PoolElement(pe) = p else {
        panic!()
    };
    let m = AsapMessage::from(asap::Registration::new(PoolHandle::from("CalcAppPool"), pe));
    let b = m.to_bytes();
    assert_eq!(&b[..4], &hex("0100004c")[..]);
    assert_eq!(&b[4..20], &hex("0009000f 43616c63 41707050 6f6f6c00")[..]);
    assert_eq!(m.name(), "ASAP_REGISTRATION");
}

#[test]
fn opaque_and_dccp_transports() {
    let dccp = TransportParameter {
        dccp_service_code: 0xdead_beef,
        ..TransportParameter::with(
            TransportProtocol::Dccp,
            4000,
            0,
            ["10.0.0.1".parse().unwrap()],
        )
    };
    assert_eq!(
        &dccp.to_bytes()[..],
        &hex("00030014 0fa00000 deadbeef 00010008 0a000001")[..]
    );
    let opaque = Parameter::decode(&hex("00100007 414243 00")).unwrap().0;
    let Parameter::Transport(t) = &opaque else {
        panic!()
    };
    assert_eq!(t.protocol, TransportProtocol::Opaque);
    assert_eq!(&t.opaque[..], b"ABC");
    // Non-SCTP transports carry exactly one address.
    let e = Parameter::decode(&hex(
        "00050018 0fa00000 00010008 0a000001 00010008 0a000002",
    ))
    .unwrap_err();
    assert_eq!(
        e.kind,
        DecodeErrorKind::InvalidValue("more than one address in a non-SCTP transport")
    );
}

#[test]
fn unknown_parameters_decode_standalone() {
    let (p, _) = Parameter::decode(&hex("7fff0006 abcd0000")).unwrap();
    assert_eq!(
        p,
        Parameter::Unknown(UnknownParameter {
            raw: Bytes::from(hex("7fff0006 abcd"))
        })
    );
    assert_eq!(p.parameter_type(), 0x7fff);
    assert_eq!(&p.to_bytes()[..], &hex("7fff0006 abcd0000")[..]);
}
