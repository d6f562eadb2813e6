//! The real RSPLIB messages in shared/vectors/rsplib-captures/messages: each decodes, has the
//! expected content, and re-encodes byte for byte; truncations and mutations never panic.

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use rserpool_proto::asap::AsapMessage;
use rserpool_proto::enrp::{EnrpMessage, UpdateAction};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::cause;
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportProtocol;
use rserpool_proto::{DecodeError, DecodeErrorKind};

enum Any {
    Asap(AsapMessage),
    Enrp(EnrpMessage),
}

fn decode(name: &str, data: &[u8]) -> Result<Any, DecodeError> {
    if name.starts_with("asap") {
        AsapMessage::decode(data).map(Any::Asap)
    } else {
        EnrpMessage::decode(data).map(Any::Enrp)
    }
}

fn vector(name: &str) -> Vec<u8> {
    support::vectors()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("vector {name} missing"))
        .1
}

#[test]
fn every_vector_decodes_and_reencodes_identically() {
    for (name, data) in support::vectors() {
        let (bytes, len) = match decode(&name, &data) {
            Ok(Any::Asap(m)) => (m.to_bytes(), m.encoded_len()),
            Ok(Any::Enrp(m)) => (m.to_bytes(), m.encoded_len()),
            Err(e) => panic!("{name}: {e}"),
        };
        assert_eq!(len, data.len(), "{name}: encoded_len");
        assert_eq!(&bytes[..], &data[..], "{name}: re-encoding differs");
        // Zero-copy decoding gives the same message.
        let shared = Bytes::from(data.clone());
        if name.starts_with("asap") {
            assert_eq!(
                AsapMessage::decode_bytes(&shared).unwrap(),
                AsapMessage::decode(&data).unwrap()
            );
        } else {
            assert_eq!(
                EnrpMessage::decode_bytes(&shared).unwrap(),
                EnrpMessage::decode(&data).unwrap()
            );
        }
    }
}

#[test]
fn registration_content() {
    let AsapMessage::Registration(r) =
        AsapMessage::decode(&vector("asap-registration.hex")).unwrap()
    else {
        panic!("not a registration")
    };
    assert_eq!(r.pool_handle, PoolHandle::from("EchoPool"));
    let pe = &r.pool_element;
    assert_eq!(pe.pe_id, PeIdentifier(0x051d_a794));
    assert_eq!(pe.home_server_id, ServerId(0));
    assert_eq!(pe.registration_life, 9000);
    assert_eq!(pe.user_transport.protocol, TransportProtocol::Sctp);
    assert_eq!(pe.user_transport.port, 0x9000);
    assert!(pe.user_transport.has_control_channel());
    assert_eq!(
        pe.user_transport.addresses.as_slice(),
        &["10.99.0.14".parse::<core::net::IpAddr>().unwrap()]
    );
    assert_eq!(pe.policy, Policy::RoundRobin);
    assert_eq!(pe.asap_transport, None);
    assert!(r.skipped.is_empty());
}

#[test]
fn handle_resolution_and_response_content() {
    let AsapMessage::HandleResolution(h) =
        AsapMessage::decode(&vector("asap-handle-resolution.hex")).unwrap()
    else {
        panic!()
    };
    assert_eq!(h.option.map(|o| o.items), Some(1));
    assert!(!h.subscribe);
    let AsapMessage::HandleResolutionResponse(r) =
        AsapMessage::decode(&vector("asap-handle-resolution-response.hex")).unwrap()
    else {
        panic!()
    };
    assert_eq!(r.policy, Some(Policy::RoundRobin));
    assert_eq!(r.pool_elements.len(), 1);
    assert_eq!(r.pool_elements[0].home_server_id, ServerId(0x1de0_434e));
    assert_eq!(r.error, None);
}

#[test]
fn keep_alive_flags_and_extension() {
    let AsapMessage::EndpointKeepAlive(k) =
        AsapMessage::decode(&vector("asap-endpoint-keep-alive-home.hex")).unwrap()
    else {
        panic!()
    };
    assert!(k.home);
    assert_eq!(k.reserved_flags, 0);
    assert_eq!(k.server_id, ServerId(0xce35_a3ba));
    assert_eq!(k.pe_id, Some(PeIdentifier(0x1f)));
    let AsapMessage::EndpointKeepAlive(k) =
        AsapMessage::decode(&vector("asap-endpoint-keep-alive.hex")).unwrap()
    else {
        panic!()
    };
    assert!(!k.home);
}

#[test]
fn error_messages_quote_the_forged_parameter() {
    for (name, code) in [
        ("asap-error-invalid-values.hex", cause::INVALID_VALUES),
        (
            "asap-error-unrecognized-parameter.hex",
            cause::UNRECOGNIZED_PARAMETER,
        ),
    ] {
        let AsapMessage::Error(e) = AsapMessage::decode(&vector(name)).unwrap() else {
            panic!()
        };
        assert_eq!(e.error.causes.len(), 1);
        assert_eq!(e.error.causes[0].code, code);
        assert_eq!(
            &e.error.causes[0].info[..],
            &support::hex("4fff0008 00000000")[..]
        );
    }
    let EnrpMessage::Error(e) = EnrpMessage::decode(&vector("enrp-error-cause0010.hex")).unwrap()
    else {
        panic!()
    };
    assert_eq!(e.sender, ServerId(0x1111_1111));
    assert_eq!(e.error.causes[0].code, cause::RSPLIB_INVALID_MESSAGE);
    assert!(e.error.causes[0].info.is_empty());
}

#[test]
fn enrp_content() {
    let EnrpMessage::Presence(p) =
        EnrpMessage::decode(&vector("enrp-presence-reply-required.hex")).unwrap()
    else {
        panic!()
    };
    assert!(p.reply_required);
    assert_eq!(p.checksum.map(|c| c.0), Some(0xffff));
    let si = p.server_information.unwrap();
    assert_eq!(si.server_id, p.sender);
    assert_eq!(si.transport.port, 9901);

    let EnrpMessage::HandleTableRequest(r) =
        EnrpMessage::decode(&vector("enrp-handle-table-request-own-children-only.hex")).unwrap()
    else {
        panic!()
    };
    assert!(r.own_children_only);

    let EnrpMessage::HandleTableResponse(r) =
        EnrpMessage::decode(&vector("enrp-handle-table-response.hex")).unwrap()
    else {
        panic!()
    };
    assert!(!r.more && !r.reject);
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].pool_handle, PoolHandle::from("EchoPool"));
    let pe = &r.entries[0].pool_elements[0];
    assert_eq!(pe.registration_life, 90000);
    assert_eq!(pe.asap_transport.as_ref().unwrap().transport_use, 0);

    let EnrpMessage::HandleUpdate(u) =
        EnrpMessage::decode(&vector("enrp-handle-update-del.hex")).unwrap()
    else {
        panic!()
    };
    assert_eq!(u.action, UpdateAction::DEL_PE);
    assert_eq!(u.pool_element.pe_id, PeIdentifier(0x20));

    let EnrpMessage::ListResponse(l) =
        EnrpMessage::decode(&vector("enrp-list-response.hex")).unwrap()
    else {
        panic!()
    };
    assert_eq!(l.servers.len(), 2);
    assert_eq!(l.servers[0].server_id, ServerId(0));

    let EnrpMessage::InitTakeover(t) =
        EnrpMessage::decode(&vector("enrp-init-takeover.hex")).unwrap()
    else {
        panic!()
    };
    assert_eq!(t.target, ServerId(0x5e27_fc63));
}

#[test]
fn every_truncation_is_a_typed_error() {
    for (name, data) in support::vectors() {
        for len in 0..data.len() {
            match decode(&name, &data[..len]) {
                Ok(_) => panic!("{name} truncated to {len} bytes decoded"),
                Err(e) => {
                    assert!(
                        matches!(e.kind, DecodeErrorKind::Truncated { .. }),
                        "{name}[..{len}]: {e}"
                    );
                    assert!(e.offset <= len, "{name}[..{len}]: offset {}", e.offset);
                }
            }
        }
    }
}

/// A truncated message whose header length is patched to the shorter size: the parsers meet
/// truncated TLVs and fields inside the message, and must say so without panicking.
#[test]
fn every_truncation_with_patched_length_never_panics() {
    for (name, data) in support::vectors() {
        for len in 4..data.len() {
            let mut d = data[..len].to_vec();
            d[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            match decode(&name, &d) {
                // A cut at a parameter boundary may leave a valid shorter message.
                Ok(Any::Asap(m)) => assert!(m.encoded_len() <= len + 3),
                Ok(Any::Enrp(m)) => assert!(m.encoded_len() <= len + 3),
                Err(e) => {
                    assert!(e.offset <= len, "{name}[..{len}]: offset {}", e.offset);
                    let _ = e.operation_error();
                    let _ = e.to_string();
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn mutated_vectors_never_panic(
        which in 0usize..29,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let vectors = support::vectors();
        let (name, mut data) = vectors[which % vectors.len()].clone();
        for (pos, byte) in edits {
            let n = data.len();
            data[pos % n] = byte;
        }
        let keep = data.len() - cut % 4;
        data.truncate(keep);
        // The fuzzing entry points decode, and on success check the round trip.
        if name.starts_with("asap") {
            rserpool_proto::fuzzing::asap(&data);
        } else {
            rserpool_proto::fuzzing::enrp(&data);
        }
        if let Err(e) = decode(&name, &data) {
            prop_assert!(e.offset <= data.len());
            let _ = e.operation_error();
        }
    }
}
