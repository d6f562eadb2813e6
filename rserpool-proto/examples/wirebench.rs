//! Decode and encode throughput of two typical messages.
//!
//! `cargo run --release -p rserpool-proto --example wirebench`
//!
//! Prints one figure per line, `NAME VALUE UNIT`: MB/s (10^6 bytes per second of message
//! bytes) and messages per second, for an ASAP Handle Resolution Response with 3 PEs (what an
//! RSPLIB registrar sends by default) and an ENRP Handle Table Response with 128 PEs (RSPLIB's
//! default maximum per response). Runs for about 10 s.
// Wall-clock timing is the point of a benchmark; the library itself reads no clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rserpool_proto::asap::{self, AsapMessage};
use rserpool_proto::enrp::{self, EnrpMessage};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::PoolElementParameter;
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;

const BUDGET: Duration = Duration::from_millis(1200);

fn pe(i: u32, asap_transport: bool) -> PoolElementParameter {
    let a = core::net::Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8);
    PoolElementParameter {
        pe_id: PeIdentifier(0x1000 + i),
        home_server_id: ServerId(0x0a),
        registration_life: 90000,
        user_transport: TransportParameter::sctp(5000, 1, [a.into()]),
        policy: Policy::LeastUsedDegradation {
            load: i,
            degradation: 0x0ccc_cccd,
        },
        asap_transport: asap_transport.then(|| TransportParameter::sctp(40000, 0, [a.into()])),
    }
}

/// Runs `f` repeatedly for about [`BUDGET`]; returns iterations per second.
fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..64 {
            f();
        }
        n += 64;
        let t = start.elapsed();
        if t >= BUDGET {
            return n as f64 / t.as_secs_f64();
        }
    }
}

fn report(name: &str, bytes: usize, per_second: f64) {
    println!(
        "{name}_mb_per_s {:.0} MB/s",
        per_second * bytes as f64 / 1e6
    );
    println!("{name}_msgs_per_s {:.0} msg/s", per_second);
}

fn bench<M>(
    name: &str,
    m: &M,
    to_bytes: fn(&M) -> Bytes,
    encode: fn(&M, &mut Vec<u8>),
    decode: fn(&Bytes) -> bool,
) {
    let wire = to_bytes(m);
    assert!(decode(&wire));
    let decode_rate = rate(|| {
        black_box(decode(black_box(&wire)));
    });
    report(&format!("{name}_decode"), wire.len(), decode_rate);
    let mut buf = Vec::with_capacity(wire.len());
    let encode_rate = rate(|| {
        buf.clear();
        encode(black_box(m), &mut buf);
        black_box(&buf);
    });
    assert_eq!(&buf[..], &wire[..]);
    report(&format!("{name}_encode"), wire.len(), encode_rate);
    println!("{name}_size {} bytes", wire.len());
}

fn main() {
    let hrr = AsapMessage::HandleResolutionResponse(asap::HandleResolutionResponse {
        pool_handle: PoolHandle::from("CalcAppPool"),
        policy: Some(Policy::LeastUsedDegradation {
            load: 0,
            degradation: 0x0ccc_cccd,
        }),
        pool_elements: (0..3).map(|i| pe(i, false)).collect(),
        ..Default::default()
    });
    bench(
        "asap_handle_resolution_response_3pe",
        &hrr,
        AsapMessage::to_bytes,
        |m, b| m.encode(b),
        |b| AsapMessage::decode_bytes(b).is_ok(),
    );

    let htr = EnrpMessage::HandleTableResponse(enrp::HandleTableResponse {
        sender: ServerId(0x0a),
        receiver: ServerId(0x0b),
        entries: vec![enrp::HandleTableEntry {
            pool_handle: PoolHandle::from("CalcAppPool"),
            pool_elements: (0..128).map(|i| pe(i, true)).collect(),
        }],
        ..Default::default()
    });
    bench(
        "enrp_handle_table_response_128pe",
        &htr,
        EnrpMessage::to_bytes,
        |m, b| m.encode(b),
        |b| EnrpMessage::decode_bytes(b).is_ok(),
    );
}
