//! Registrar benchmark: the sans-IO machine alone (no sockets), fed encoded messages.
//!
//! ```text
//! cargo run --release -p rserpool-core --example regbench -- [--quick]
//! cargo run --release -p rserpool-core --example regbench -- --memory=own|shared|handlespace
//! cargo run --release -p rserpool-core --example regbench -- --download
//! ```
//! Prints one line per figure: `NAME VALUE UNIT`.
//! * `memory_per_pe`: live heap bytes per PE (100,000 PEs, counted by the stats_alloc
//!   allocator wrapper), each PE on its own association as RSPLIB PEs register;
//!   `rss_per_pe`: resident memory growth per PE (Linux `/proc/self/statm`; includes the
//!   allocator's own overhead and free space, varies with the system); `structure_per_pe`:
//!   what the registrar's tables report; `--memory=…` measures one layout alone in a fresh
//!   process (`own`, `shared`: 64 PEs per association; `handlespace`: the bare
//!   handlespace);
//! * `hr_per_sec_*`: Handle Resolutions answered per second on a 1,000-PE round-robin
//!   pool (request bytes encoded once; each answer drained and dropped);
//! * `registrations_per_sec`: new PEs (association up + Registration, one ENRP peer
//!   receiving the Handle Updates); `reregistrations_per_sec`: the same PEs again;
//! * `keep_alive_round_trips_per_sec`: keep-alive timer → Endpoint Keep-Alive → Ack →
//!   re-armed timer, for every PE;
//! * `table_download_10000_ms`: a joining registrar downloading 10,000 PEs from its mentor.

use bytes::Bytes;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use rserpool_core::handlespace::{Handlespace, PoolElementInfo, TimerKind};
use rserpool_core::registrar::{Registrar, RegistrarConfig};
use rserpool_core::{AssocId, Destination, Instant, Machine, Output, Protocol};
use rserpool_proto::asap::{EndpointKeepAliveAck, HandleResolution, Registration};
use rserpool_proto::enrp::Presence;
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{
    HandleResolutionOption, PeChecksum, PoolElementParameter, ServerInformation,
};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;
use rserpool_proto::{AsapMessage, EnrpMessage};

/// Counts live heap bytes (stats_alloc wraps the system allocator; no unsafe code here).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes now.
fn live_bytes() -> usize {
    let s = GLOBAL.stats();
    s.bytes_allocated.saturating_sub(s.bytes_deallocated)
}

/// The benchmark's clock (the core itself never reads one).
#[allow(clippy::disallowed_methods)]
fn wall() -> std::time::Instant {
    std::time::Instant::now()
}

fn report(name: &str, value: f64, unit: &str) {
    if value >= 100.0 {
        println!("{name} {value:.0} {unit}");
    } else {
        println!("{name} {value:.2} {unit}");
    }
}

fn config(id: u32) -> RegistrarConfig {
    let mut c = RegistrarConfig {
        server_id: Some(ServerId(id)),
        asap_announce: None,
        enrp_announce: None,
        enrp_transport: Some(TransportParameter::sctp(
            9901,
            0,
            [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
        )),
        ..RegistrarConfig::default()
    };
    c.limits.handlespace.max_elements = 2_000_000;
    c.limits.handlespace.max_elements_per_pool = 2_000_000;
    c.limits.max_elements_per_assoc = 2_000_000;
    c.timers.peer_max_time_last_heard = Duration::from_secs(100_000);
    c
}

fn pe_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i))
}

fn registration(pool: &PoolHandle, i: u32) -> Bytes {
    AsapMessage::from(Registration::new(
        pool.clone(),
        PoolElementParameter {
            pe_id: PeIdentifier(i + 1),
            home_server_id: ServerId(0),
            registration_life: 30_000,
            user_transport: TransportParameter::sctp(7000, 1, [pe_ip(i)]),
            policy: Policy::RoundRobin,
            asap_transport: None,
        },
    ))
    .to_bytes()
}

fn drain(r: &mut Registrar) -> usize {
    let mut n = 0;
    while let Some(o) = r.poll_output() {
        n += usize::from(matches!(o, Output::Transmit(_)));
    }
    n
}

fn fresh(id: u32) -> Registrar {
    let mut r = Registrar::new(
        config(id),
        Instant::ZERO,
        Xoshiro256PlusPlus::seed_from_u64(u64::from(id)),
    );
    r.handle_timeout(Instant::ZERO);
    drain(&mut r);
    r
}

/// A registrar with the PEs of `msgs`, PE i on association i + 1 from its own address.
fn populated_from(msgs: &[Bytes]) -> Registrar {
    let mut r = fresh(1);
    for (i, m) in msgs.iter().enumerate() {
        let a = AssocId(i as u64 + 1);
        r.handle_assoc_up(Instant::ZERO, a, &[SocketAddr::new(pe_ip(i as u32), 5000)]);
        r.handle_message(Instant::ZERO, a, Protocol::PPID_ASAP, m.clone());
        drain(&mut r);
    }
    r
}

fn populated(n: u32, pool: &PoolHandle) -> Registrar {
    let msgs: Vec<Bytes> = (0..n).map(|i| registration(pool, i)).collect();
    populated_from(&msgs)
}

const PEER_ASSOC: AssocId = AssocId(1 << 40);

fn add_peer(r: &mut Registrar) {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    r.handle_assoc_up(Instant::ZERO, PEER_ASSOC, &[SocketAddr::new(ip, 9901)]);
    let p = Presence {
        sender: ServerId(2),
        receiver: ServerId(1),
        checksum: Some(PeChecksum(0xffff)),
        server_information: Some(ServerInformation {
            server_id: ServerId(2),
            transport: TransportParameter::sctp(9901, 0, [ip]),
        }),
        ..Default::default()
    };
    r.handle_message(
        Instant::ZERO,
        PEER_ASSOC,
        Protocol::PPID_ENRP,
        EnrpMessage::from(p).to_bytes(),
    );
    drain(r);
}

fn hr_rate(r: &mut Registrar, pool: &PoolHandle, items: Option<u32>, secs: f64) -> f64 {
    let pu = AssocId(1 << 41);
    r.handle_assoc_up(
        Instant::ZERO,
        pu,
        &[SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
            4000,
        )],
    );
    let req = AsapMessage::from(HandleResolution {
        pool_handle: pool.clone(),
        option: items.map(|items| HandleResolutionOption { items }),
        ..Default::default()
    })
    .to_bytes();
    let mut answers = 0usize;
    for _ in 0..10_000 {
        r.handle_message(Instant::ZERO, pu, Protocol::PPID_ASAP, req.clone());
        answers += drain(r);
    }
    assert_eq!(answers, 10_000);
    let t0 = wall();
    let mut n = 0u64;
    loop {
        for _ in 0..10_000 {
            r.handle_message(Instant::ZERO, pu, Protocol::PPID_ASAP, req.clone());
            while let Some(o) = r.poll_output() {
                std::hint::black_box(&o);
            }
        }
        n += 10_000;
        let dt = t0.elapsed().as_secs_f64();
        if dt >= secs {
            return n as f64 / dt;
        }
    }
}

fn rss_bytes() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

const MEMORY_PES: u32 = 100_000;

/// Resident memory growth per PE for one layout; `own` also reports the tables' size.
fn memory(mode: &str) {
    let m = MEMORY_PES;
    let pool = PoolHandle::from("BenchPool");
    let msgs: Vec<Bytes> = (0..m).map(|i| registration(&pool, i)).collect();
    // The first clone of a `Bytes` made from a `Vec` allocates its shared header (24
    // bytes): do it now, so that the messages the benchmark keeps are not counted as the
    // registrar's memory.
    msgs.iter().for_each(|b| drop(b.clone()));
    let before = rss_bytes();
    let live_before = live_bytes();
    let keep: Box<dyn std::any::Any> = match mode {
        "handlespace" => {
            let mut hs = Handlespace::default();
            for i in 0..m {
                let info = PoolElementInfo {
                    pe_id: PeIdentifier(i + 1),
                    home_registrar: ServerId(1),
                    registration_life: 30_000,
                    policy: Policy::RoundRobin,
                    user_transport: TransportParameter::sctp(7000, 1, [pe_ip(i)]),
                    asap_transport: Some(TransportParameter::sctp(5000, 0, [pe_ip(i)])),
                };
                hs.register(&pool, &info, Some(AssocId(u64::from(i) + 1)))
                    .expect("registered");
                hs.set_timer(
                    &pool,
                    info.pe_id,
                    TimerKind::KeepAliveTransmission,
                    Some(Instant::from_millis(5000 + u64::from(i))),
                );
            }
            Box::new(hs)
        }
        "shared" => {
            // 64 PEs per association: one host, 64 ports.
            let mut r = fresh(1);
            for i in 0..m {
                let a = AssocId(u64::from(i / 64) + 1);
                let host = pe_ip(i / 64);
                if i % 64 == 0 {
                    r.handle_assoc_up(Instant::ZERO, a, &[SocketAddr::new(host, 5000)]);
                }
                let msg = AsapMessage::from(Registration::new(
                    pool.clone(),
                    PoolElementParameter {
                        pe_id: PeIdentifier(i + 1),
                        home_server_id: ServerId(0),
                        registration_life: 30_000,
                        user_transport: TransportParameter::sctp(7000 + (i % 64) as u16, 1, [host]),
                        policy: Policy::RoundRobin,
                        asap_transport: None,
                    },
                ))
                .to_bytes();
                r.handle_message(Instant::ZERO, a, Protocol::PPID_ASAP, msg);
                drain(&mut r);
            }
            assert_eq!(r.handlespace().element_count(), m as usize);
            Box::new(r)
        }
        _ => {
            let r = populated_from(&msgs);
            assert_eq!(r.handlespace().element_count(), m as usize);
            report(
                "structure_per_pe",
                r.structure_bytes() as f64 / f64::from(m),
                "B/PE",
            );
            Box::new(r)
        }
    };
    let suffix = if mode == "own" {
        String::new()
    } else {
        format!("_{mode}")
    };
    report(
        &format!("memory_per_pe{suffix}"),
        live_bytes().saturating_sub(live_before) as f64 / f64::from(m),
        "B/PE",
    );
    if let (Some(b), Some(a)) = (before, rss_bytes()) {
        report(
            &format!("rss_per_pe{suffix}"),
            a.saturating_sub(b) as f64 / f64::from(m),
            "B/PE",
        );
    }
    drop(keep);
}

fn main() {
    if let Some(mode) = std::env::args().find_map(|a| a.strip_prefix("--memory=").map(String::from))
    {
        memory(&mode);
        return;
    }
    if std::env::args().any(|a| a == "--download") {
        // The table download alone, several times (for a profiler).
        for _ in 0..20 {
            report("table_download_10000_ms", table_download(10_000), "ms");
        }
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 1.0 } else { 3.0 };
    let pool = PoolHandle::from("BenchPool");

    // Memory first, on a fresh heap, so that growth shows in the resident size.
    memory("own");

    // Handle resolution on a 1,000-PE round-robin pool.
    let mut r = populated(1000, &pool);
    report(
        "hr_per_sec_items3",
        hr_rate(&mut r, &pool, None, secs),
        "req/s",
    );
    report(
        "hr_per_sec_items1",
        hr_rate(&mut r, &pool, Some(1), secs),
        "req/s",
    );
    report(
        "hr_per_sec_items128",
        hr_rate(&mut r, &pool, Some(128), secs),
        "req/s",
    );
    drop(r);

    // Registrations with one ENRP peer.
    let n: u32 = if quick { 50_000 } else { 200_000 };
    let msgs: Vec<Bytes> = (0..n).map(|i| registration(&pool, i)).collect();
    let mut r = fresh(1);
    add_peer(&mut r);
    let t0 = wall();
    for (i, m) in msgs.iter().enumerate() {
        let a = AssocId(i as u64 + 1);
        r.handle_assoc_up(Instant::ZERO, a, &[SocketAddr::new(pe_ip(i as u32), 5000)]);
        r.handle_message(Instant::ZERO, a, Protocol::PPID_ASAP, m.clone());
        drain(&mut r);
    }
    report(
        "registrations_per_sec",
        f64::from(n) / t0.elapsed().as_secs_f64(),
        "reg/s",
    );
    let t0 = wall();
    for (i, m) in msgs.iter().enumerate() {
        r.handle_message(
            Instant::ZERO,
            AssocId(i as u64 + 1),
            Protocol::PPID_ASAP,
            m.clone(),
        );
        drain(&mut r);
    }
    report(
        "reregistrations_per_sec",
        f64::from(n) / t0.elapsed().as_secs_f64(),
        "reg/s",
    );
    assert_eq!(r.handlespace().element_count(), n as usize);

    // Keep-alive round trips: every PE's timer fires (5 s ± 25 %), then every PE acks.
    let acks: Vec<(AssocId, Bytes)> = (0..n)
        .map(|i| {
            (
                AssocId(u64::from(i) + 1),
                AsapMessage::from(EndpointKeepAliveAck::new(pool.clone(), PeIdentifier(i + 1)))
                    .to_bytes(),
            )
        })
        .collect();
    let t1 = Instant::ZERO + Duration::from_secs(7);
    let t0 = wall();
    r.handle_timeout(t1);
    let mut kas = 0usize;
    while let Some(o) = r.poll_output() {
        if let Output::Transmit(t) = &o
            && t.dest != Destination::Assoc(PEER_ASSOC)
        {
            kas += 1;
        }
    }
    for (a, ack) in &acks {
        r.handle_message(t1, *a, Protocol::PPID_ASAP, ack.clone());
        drain(&mut r);
    }
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(kas, n as usize, "every PE got a keep-alive");
    report("keep_alive_round_trips_per_sec", f64::from(n) / dt, "rt/s");
    drop(r);
    drop(msgs);
    drop(acks);

    // Table download: a new registrar pulls 10,000 PEs from its mentor.
    report("table_download_10000_ms", table_download(10_000), "ms");
}

/// Two registrars wired back to back; returns the wall time of the joining one's
/// download in milliseconds.
fn table_download(n: u32) -> f64 {
    let pool = PoolHandle::from("BenchPool");
    let mut mentor = populated(n, &pool);
    let mut cfg = config(3);
    let mentor_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let joiner_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    cfg.static_peers = vec![vec![SocketAddr::new(mentor_ip, 9901)]];
    cfg.enrp_transport = Some(TransportParameter::sctp(9901, 0, [joiner_ip]));
    let t0 = wall();
    let mut joiner = Registrar::new(cfg, Instant::ZERO, Xoshiro256PlusPlus::seed_from_u64(3));
    joiner.handle_timeout(Instant::ZERO);
    // The joiner opens one association to the mentor; relay both ways until quiet.
    let mentor_side = AssocId(1 << 42);
    let mut joiner_side = None;
    let mut to_mentor: Vec<Bytes> = Vec::new();
    let mut to_joiner: Vec<Bytes> = Vec::new();
    loop {
        while let Some(o) = joiner.poll_output() {
            match o {
                Output::Connect { assoc, .. } => {
                    joiner_side = Some(assoc);
                    mentor.handle_assoc_up(
                        Instant::ZERO,
                        mentor_side,
                        &[SocketAddr::new(joiner_ip, 9901)],
                    );
                    joiner.handle_assoc_up(
                        Instant::ZERO,
                        assoc,
                        &[SocketAddr::new(mentor_ip, 9901)],
                    );
                }
                Output::Transmit(t) if t.ppid == Protocol::PPID_ENRP => to_mentor.push(t.payload),
                _ => {}
            }
        }
        for m in to_mentor.drain(..) {
            mentor.handle_message(Instant::ZERO, mentor_side, Protocol::PPID_ENRP, m);
        }
        while let Some(o) = mentor.poll_output() {
            if let Output::Transmit(t) = o
                && t.dest == Destination::Assoc(mentor_side)
            {
                to_joiner.push(t.payload);
            }
        }
        if to_joiner.is_empty() {
            break;
        }
        let j = joiner_side.expect("joiner connected");
        for m in to_joiner.drain(..) {
            joiner.handle_message(Instant::ZERO, j, Protocol::PPID_ENRP, m);
        }
    }
    assert!(joiner.startup_complete());
    assert_eq!(joiner.handlespace().element_count(), n as usize);
    t0.elapsed().as_secs_f64() * 1000.0
}
