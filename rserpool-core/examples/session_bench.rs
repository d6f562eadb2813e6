//! Machine-only cost of a pool user session failover (no I/O): from "association lost" to the
//! Connect output for the next PE, and from "new association up" to the cookie echo and the
//! replayed message being transmitted.
//!
//! Two set-ups:
//! * **registrar** — stale cache value 0 (every RSPLIB tool): the loss produces the
//!   Endpoint Unreachable report and a Handle Resolution; the registrar's answer (which still
//!   names the dead PE first, RSPLIB defect 4) produces the Connect.
//! * **cache** — stale cache value 30 s: the loss produces the report and the Connect at once.
//!
//! `cargo run --release -p rserpool-core --example session_bench`

use bytes::Bytes;
use core::time::Duration;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use rserpool_core::io::{AssocDownReason, ChannelKind, Machine, Output};
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_core::session::{PoolUserSession, PoolUserSessionConfig};
use rserpool_core::{AssocId, Instant};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{CookieMessage, HandleResolutionResponse};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::PoolElementParameter;
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{TRANSPORT_USE_DATA_PLUS_CONTROL, TransportParameter};

type Pus = PoolUserSession<Xoshiro256PlusPlus>;

const POOL: &str = "EchoPool";
const ROUNDS: u32 = 100_000;

#[allow(clippy::disallowed_methods)]
fn clock() -> std::time::Instant {
    std::time::Instant::now()
}

fn pe(id: u32) -> PoolElementParameter {
    PoolElementParameter {
        pe_id: PeIdentifier(id),
        home_server_id: ServerId(1),
        registration_life: 90_000,
        user_transport: TransportParameter::sctp(
            7000,
            TRANSPORT_USE_DATA_PLUS_CONTROL,
            [format!("10.0.0.{id}").parse().unwrap()],
        ),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }
}

fn answer(ids: &[u32]) -> Bytes {
    AsapMessage::from(HandleResolutionResponse {
        pool_handle: PoolHandle::from(POOL),
        policy: Some(Policy::RoundRobin),
        pool_elements: ids.iter().map(|&i| pe(i)).collect(),
        ..Default::default()
    })
    .to_bytes()
}

/// Drains; returns (outputs, the session Connect's id and first address octet, registrar
/// Connect id).
fn drain(s: &mut Pus) -> (usize, Option<(AssocId, u32)>, Option<AssocId>) {
    let mut n = 0;
    let mut session = None;
    let mut registrar = None;
    while let Some(o) = s.poll_output() {
        n += 1;
        if let Output::Connect {
            assoc,
            addrs,
            channel,
            ..
        } = o
        {
            match channel {
                ChannelKind::Session => {
                    let id = match addrs[0].ip() {
                        core::net::IpAddr::V4(v4) => u32::from(v4.octets()[3]),
                        core::net::IpAddr::V6(_) => 0,
                    };
                    session = Some((assoc, id));
                }
                _ => registrar = Some(assoc),
            }
        }
    }
    (n, session, registrar)
}

/// A session connected to PE 1 with a stored cookie; returns it, its registrar association
/// and the session association.
fn setup(stale: Duration) -> (Pus, AssocId, AssocId) {
    let mut c = PoolUserSessionConfig::default();
    c.pool_user.registrar_table.static_registrars =
        vec![StaticRegistrar::sctp(["10.0.0.100:3863".parse().unwrap()])];
    c.pool_user.stale_cache_value = stale;
    let mut s = Pus::new(c, Xoshiro256PlusPlus::seed_from_u64(1));
    let t = Instant::ZERO;
    s.connect(t, PoolHandle::from(POOL));
    let (_, _, reg) = drain(&mut s);
    let reg = reg.expect("registrar connect");
    s.handle_assoc_up(t, reg, &[]);
    drain(&mut s);
    s.handle_message(t, reg, 11, answer(&[1, 2]));
    let (_, sess, _) = drain(&mut s);
    let (sess, _) = sess.expect("session connect");
    s.handle_assoc_up(t, sess, &[]);
    let cookie = AsapMessage::from(CookieMessage::new(Bytes::from_static(&[7; 24]))).to_bytes();
    s.handle_message(t, sess, 11, cookie);
    drain(&mut s);
    (s, reg, sess)
}

struct Totals {
    lost: Duration,
    answer: Duration,
    up: Duration,
    outputs: usize,
}

fn report(name: &str, t: &Totals) {
    let us = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(ROUNDS);
    println!(
        "{name:<9} lost->{:<9} {:>7.2} µs | answer->connect {:>7.2} µs | up->echo+replay {:>7.2} µs | total {:>7.2} µs/failover ({:.1} outputs)",
        if t.answer.is_zero() {
            "connect"
        } else {
            "report+HR"
        },
        us(t.lost),
        us(t.answer),
        us(t.up),
        us(t.lost + t.answer + t.up),
        t.outputs as f64 / f64::from(ROUNDS),
    );
}

fn bench(stale: Duration) -> Totals {
    let with_cache = !stale.is_zero();
    let (mut s, reg, mut sess) = setup(stale);
    let mut now = Instant::ZERO;
    let mut pe_now = 1u32;
    let answers = [answer(&[1, 2]), answer(&[2, 1])];
    let payload = Bytes::from_static(b"line of an rspterminal session\n");
    let mut t = Totals {
        lost: Duration::ZERO,
        answer: Duration::ZERO,
        up: Duration::ZERO,
        outputs: 0,
    };
    for _ in 0..ROUNDS {
        // Untimed: 11 s later (suspects and avoided PEs expire), with a cache a refreshing
        // answer naming both PEs, one unanswered message.
        now += Duration::from_secs(11);
        if with_cache {
            s.handle_message(now, reg, 11, answers[0].clone());
        }
        // The PE answered the previous message; the next one is in flight when it dies.
        s.handle_message(now, sess, 0, payload.clone());
        s.send(now, 0, payload.clone()).unwrap();
        drain(&mut s);
        assert_eq!(s.replay_len(), 1);

        let a = clock();
        s.handle_assoc_down(now, sess, AssocDownReason::Lost);
        let (n, mut next, _) = drain(&mut s);
        t.lost += a.elapsed();
        t.outputs += n;
        if !with_cache {
            let b = clock();
            s.handle_message(now, reg, 11, answers[(pe_now - 1) as usize].clone());
            let (n, c, _) = drain(&mut s);
            t.answer += b.elapsed();
            t.outputs += n;
            next = c;
        }
        let (assoc, pe) = next.expect("connect to the next PE");
        assert_ne!(pe, pe_now, "never the PE just lost");
        let c = clock();
        s.handle_assoc_up(now, assoc, &[]);
        let (n, _, _) = drain(&mut s);
        t.up += c.elapsed();
        t.outputs += n;
        sess = assoc;
        pe_now = pe;
    }
    t
}

fn main() {
    println!("{ROUNDS} failovers each, one cookie echo + one replayed message per failover");
    for _ in 0..2 {
        report("registrar", &bench(Duration::ZERO));
        report("cache", &bench(Duration::from_secs(30)));
    }
}
