//! Throughput of the pool element and pool user machines (no I/O): how many keep-alives a
//! PE answers, how many registrar answers a PU takes in, and how many resolutions a PU
//! serves from its cache, per second of one core.
//!
//! `cargo run --release -p rserpool-core --example pepu_bench`

use bytes::Bytes;
use core::time::Duration;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use rserpool_core::io::{AssocIdAllocator, Machine, Output};
use rserpool_core::pool_element::{PoolElement, PoolElementConfig};
use rserpool_core::pool_user::{PoolUser, PoolUserConfig};
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_core::{AssocId, Instant};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{EndpointKeepAlive, HandleResolutionResponse, RegistrationResponse};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::PoolElementParameter;
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{TransportParameter, TransportProtocol};

#[allow(clippy::disallowed_methods)]
fn clock() -> std::time::Instant {
    std::time::Instant::now()
}

fn drain<M: Machine>(m: &mut M) -> usize {
    let mut n = 0;
    while m.poll_output().is_some() {
        n += 1;
    }
    n
}

fn report(what: &str, n: u64, start: std::time::Instant) {
    let s = start.elapsed().as_secs_f64();
    println!(
        "{what:<58} {:>12.0} /s  ({:.2} µs each)",
        n as f64 / s,
        s * 1e6 / n as f64
    );
}

fn rng() -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(1)
}

fn home() -> AssocId {
    AssocId(AssocIdAllocator::MACHINE_BIT | 1)
}

fn static_registrar() -> StaticRegistrar {
    StaticRegistrar::sctp(["10.0.0.1:3863".parse().unwrap()])
}

fn pe_param(id: u32) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: PeIdentifier(id),
        home_server_id: ServerId(1),
        registration_life: 90_000,
        user_transport: TransportParameter::sctp(
            1000,
            1,
            [core::net::IpAddr::from([10, 0, (id >> 8) as u8, id as u8])],
        ),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }
}

fn keep_alives() {
    let mut c = PoolElementConfig::new(
        "BenchPool",
        TransportProtocol::Sctp,
        9000,
        ["10.0.0.9".parse().unwrap()],
    );
    c.pe_id = Some(PeIdentifier(7));
    c.registrar_table.static_registrars = vec![static_registrar()];
    let mut pe = PoolElement::new(c, rng()).unwrap();
    pe.register(Instant::ZERO);
    drain(&mut pe);
    pe.handle_assoc_up(Instant::ZERO, home(), &[]);
    drain(&mut pe);
    let ok = AsapMessage::from(RegistrationResponse {
        pool_handle: PoolHandle::from("BenchPool"),
        pe_id: PeIdentifier(7),
        ..Default::default()
    })
    .to_bytes();
    pe.handle_message(Instant::ZERO, home(), 11, ok);
    drain(&mut pe);
    let ka: Bytes = AsapMessage::from(EndpointKeepAlive {
        server_id: ServerId(1),
        pool_handle: PoolHandle::from("BenchPool"),
        pe_id: Some(PeIdentifier(7)),
        ..Default::default()
    })
    .to_bytes();
    let n = 1_000_000u64;
    let start = clock();
    let mut out = 0;
    for i in 0..n {
        pe.handle_message(Instant::from_micros(i), home(), 11, ka.clone());
        out += drain(&mut pe);
    }
    assert_eq!(out as u64, n);
    report("PE: keep-alive in, ACK out (decode + encode)", n, start);
}

fn connected_pu(stale: Duration) -> PoolUser<Xoshiro256PlusPlus> {
    let mut c = PoolUserConfig::default();
    c.registrar_table.static_registrars = vec![static_registrar()];
    c.stale_cache_value = stale;
    let mut pu = PoolUser::new(c, rng());
    pu.resolve(Instant::ZERO, PoolHandle::from("BenchPool"), 1);
    drain(&mut pu);
    pu.handle_assoc_up(Instant::ZERO, home(), &[]);
    drain(&mut pu);
    pu
}

fn answers() {
    let mut pu = connected_pu(Duration::ZERO);
    let answer = AsapMessage::from(HandleResolutionResponse {
        pool_handle: PoolHandle::from("BenchPool"),
        policy: Some(Policy::RoundRobin),
        pool_elements: (1..=3).map(pe_param).collect(),
        ..Default::default()
    })
    .to_bytes();
    let n = 300_000u64;
    let start = clock();
    let mut events = 0;
    for i in 0..n {
        let now = Instant::from_micros(i + 1);
        pu.handle_message(now, home(), 11, answer.clone());
        while let Some(o) = pu.poll_output() {
            if matches!(o, Output::Event(_)) {
                events += 1;
            }
        }
        pu.resolve(now, PoolHandle::from("BenchPool"), 1);
        drain(&mut pu);
    }
    assert_eq!(events, n);
    report(
        "PU: resolve (no cache) + answer of 3 PEs in, event out",
        n,
        start,
    );
}

fn cached() {
    let mut pu = connected_pu(Duration::from_secs(3600));
    let answer = AsapMessage::from(HandleResolutionResponse {
        pool_handle: PoolHandle::from("BenchPool"),
        policy: Some(Policy::RoundRobin),
        pool_elements: (1..=1000).map(pe_param).collect(),
        ..Default::default()
    })
    .to_bytes();
    pu.handle_message(Instant::ZERO, home(), 11, answer);
    drain(&mut pu);
    assert_eq!(pu.cache().element_count(), 1000);
    let n = 1_000_000u64;
    let start = clock();
    let mut events = 0;
    for i in 0..n {
        pu.resolve(Instant::from_micros(i), PoolHandle::from("BenchPool"), 1);
        events += drain(&mut pu);
    }
    assert_eq!(events as u64, n);
    report(
        "PU: resolution from a fresh cache (1,000 PEs, 1 item)",
        n,
        start,
    );
}

fn main() {
    keep_alives();
    answers();
    cached();
}
