//! One conformance suite for both drivers: the mio driver (`rserpool_mio::driver::Driver`
//! in threads, [`mio_rt::Mio`]) and the async driver (through its embedding API,
//! [`async_rt::Async`]) run the same scenarios over the TCP mapping on 127.0.0.1 with
//! ephemeral ports and fast timers: registration, resolution, failover after the serving PE
//! is killed, a PE re-homing itself after its registrar died, and ENRP takeover of a dead
//! registrar's PEs. Mixed deployments put registrars, PEs and clients of both drivers
//! together.
//!
//! Killing a component drops its driver (mio: the loop stops and the driver is dropped;
//! async: the driver task is dropped), so its sockets are closed by the kernel as after
//! `kill -9`. Run with `--nocapture` to see the failover and takeover times.

#[path = "conformance/async_rt.rs"]
mod async_rt;
#[path = "conformance/mio_rt.rs"]
mod mio_rt;

use async_rt::Async;
use bytes::Bytes;
use mio_rt::Mio;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use rserpool_core::pool_element::{PoolElementConfig, PoolElementEvent};
use rserpool_core::pool_user::{PoolUser, PoolUserEvent};
use rserpool_core::registrar::{AddressScope, Registrar, RegistrarConfig};
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_core::session::{
    PeSessionEvent, PoolElementSessions, PoolUserSession, PoolUserSessionConfig, SessionEvent,
};
use rserpool_core::{Instant, Machine};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::rtf::{ChannelKind, ChannelKinds};
use rserpool_proto::transport::{TransportParameter, TransportProtocol};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Data PPID of the echo sessions.
const PPID: u32 = 4242;
/// Every single operation must finish within this.
const LIMIT: Duration = Duration::from_secs(10);
/// Ask for every PE of a pool.
const ALL_ITEMS: u32 = 0xffff_ffff;

/// Cookie echoes an echo PE received.
type Echoes = Arc<Mutex<Vec<Bytes>>>;

// ----------------------------------------------------------------------------------------
// what a driver must offer

/// A running registrar.
trait RegistrarHandle: Send {
    fn asap_addr(&self) -> SocketAddr;
    fn enrp_addr(&self) -> SocketAddr;
    fn server_id(&self) -> ServerId;
    /// The PEs of `pool` in its handlespace, with their home registrars, sorted.
    fn elements(&self, pool: &str) -> Vec<(PeIdentifier, ServerId)>;
    /// Drops the driver at once (sockets closed by the kernel).
    fn kill(self: Box<Self>);
}

/// A running echo PE: sends the cookie [`cookie_of`] on every new session, echoes every
/// message, records the cookie echoes it is handed.
trait PeHandle: Send {
    fn pe_id(&self) -> PeIdentifier;
    /// The home registrar the PE knows (after its first keep-alive or a takeover).
    fn home(&self) -> Option<ServerId>;
    fn cookie_echoes(&self) -> Vec<Bytes>;
    fn kill(self: Box<Self>);
}

/// A pool user's session to a pool.
trait ClientHandle: Send {
    fn send(&mut self, data: &[u8]);
    fn recv(&mut self, timeout: Duration) -> Option<Bytes>;
    fn pe_id(&self) -> Option<PeIdentifier>;
    fn failovers(&self) -> u64;
    fn close(self: Box<Self>);
}

/// A driver under test.
trait Runtime: Sync {
    fn name(&self) -> &'static str;
    /// A registrar on ephemeral ports, statically peered with the registrars at `peers`
    /// (ENRP addresses), with [`registrar_config`]'s timers.
    fn start_registrar(&self, peers: &[SocketAddr]) -> Box<dyn RegistrarHandle>;
    /// An echo PE of `pool` knowing the registrars at `registrars` (ASAP addresses);
    /// returns once registered.
    fn start_echo_pe(&self, pool: &str, registrars: &[SocketAddr]) -> Box<dyn PeHandle>;
    /// A session to `pool`; returns once it is on a PE.
    fn connect_client(&self, pool: &str, registrars: &[SocketAddr]) -> Box<dyn ClientHandle>;
    /// The PEs of `pool` a one-shot resolution returns (empty if it fails).
    fn resolve(&self, pool: &str, registrars: &[SocketAddr]) -> Vec<PeIdentifier>;
}

// ----------------------------------------------------------------------------------------
// shared configuration

fn seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Registrar configuration with fast timers, loopback addresses accepted, no multicast.
fn registrar_config(asap_port: u16, enrp_port: u16, peers: Vec<SocketAddr>) -> RegistrarConfig {
    let mut c = RegistrarConfig {
        asap_transports: vec![TransportParameter::tcp(asap_port, 0, [LOCALHOST])],
        enrp_transport: Some(TransportParameter::tcp(enrp_port, 0, [LOCALHOST])),
        asap_announce: None,
        enrp_announce: None,
        static_peers: peers.into_iter().map(|p| vec![p]).collect(),
        min_address_scope: AddressScope::Loopback,
        ..RegistrarConfig::default()
    };
    let t = &mut c.timers;
    t.keep_alive_transmission_interval = Duration::from_millis(200);
    t.keep_alive_timeout_interval = Duration::from_millis(300);
    t.peer_heartbeat_cycle = Duration::from_millis(200);
    t.peer_max_time_last_heard = Duration::from_millis(500);
    t.peer_max_time_no_response = Duration::from_millis(300);
    t.mentor_discovery_timeout = Duration::from_millis(200);
    t.takeover_expiry_interval = Duration::from_millis(500);
    c
}

/// The core configuration of an echo PE of `pool` on `port`.
fn pe_config(pool: &str, port: u16, registrars: &[SocketAddr]) -> PoolElementConfig {
    let mut c = PoolElementConfig::new(pool, TransportProtocol::Tcp, port, [LOCALHOST]);
    c.registrar_table.static_registrars = registrars
        .iter()
        .map(|r| StaticRegistrar::tcp([*r]))
        .collect();
    c.registrar_table.use_announces = false;
    c.registrar_table.connect_timeout = Duration::from_millis(1000);
    c.request_timeout = Duration::from_millis(1000);
    c
}

/// The core configuration of a session (and its pool user).
fn session_config(registrars: &[SocketAddr]) -> PoolUserSessionConfig {
    let mut c = PoolUserSessionConfig::default();
    let t = &mut c.pool_user.registrar_table;
    t.static_registrars = registrars
        .iter()
        .map(|r| StaticRegistrar::tcp([*r]))
        .collect();
    t.use_announces = false;
    t.connect_timeout = Duration::from_millis(1000);
    c.pool_user.request_timeout = Duration::from_millis(1000);
    c.connect_timeout = Duration::from_millis(1000);
    c.retry_delay = Duration::from_millis(50);
    c
}

fn cookie_of(pe: PeIdentifier) -> Bytes {
    Bytes::from(format!("pe={:08x}", pe.0))
}

/// What a registrar lists for `pool`, sorted.
fn listed(r: &Registrar, pool: &PoolHandle) -> Vec<(PeIdentifier, ServerId)> {
    let mut v: Vec<_> = r.handlespace().pool(pool).map_or_else(Vec::new, |p| {
        p.elements()
            .map(|e| (e.pe_id(), e.home_registrar()))
            .collect()
    });
    v.sort();
    v
}

/// Polls `cond` every 10 ms until it holds; fails after [`LIMIT`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn echo(c: &mut dyn ClientHandle, msg: &str) {
    c.send(msg.as_bytes());
    let got = c
        .recv(LIMIT)
        .unwrap_or_else(|| panic!("no echo of {msg:?}"));
    assert_eq!(got, msg.as_bytes());
}

// ----------------------------------------------------------------------------------------
// scenarios

/// A PE registers; the registrar lists it as its own; the PE learns its home; killed, it
/// is dropped from the handlespace.
fn registration(reg: &dyn Runtime, pe_rt: &dyn Runtime) {
    let r = reg.start_registrar(&[]);
    let pe = pe_rt.start_echo_pe("RegPool", &[r.asap_addr()]);
    assert_eq!(r.elements("RegPool"), vec![(pe.pe_id(), r.server_id())]);
    wait_until("the PE knows its home registrar", || {
        pe.home() == Some(r.server_id())
    });
    pe.kill();
    wait_until("the registrar dropped the dead PE", || {
        r.elements("RegPool").is_empty()
    });
    r.kill();
}

/// Two PEs; a resolution returns both; an unknown pool none.
fn resolution(reg: &dyn Runtime, pe_rt: &dyn Runtime, pu: &dyn Runtime) {
    let r = reg.start_registrar(&[]);
    let a = pe_rt.start_echo_pe("ResPool", &[r.asap_addr()]);
    let b = pe_rt.start_echo_pe("ResPool", &[r.asap_addr()]);
    let mut want = vec![a.pe_id(), b.pe_id()];
    want.sort();
    let mut got = pu.resolve("ResPool", &[r.asap_addr()]);
    got.sort();
    assert_eq!(got, want);
    assert!(pu.resolve("NoSuchPool", &[r.asap_addr()]).is_empty());
    a.kill();
    b.kill();
    r.kill();
}

/// A session on one of two PEs; the serving PE is killed; the next message is echoed by
/// the other PE, which was handed the first PE's cookie. Returns kill → first echo.
fn failover(reg: &dyn Runtime, pe_rt: &dyn Runtime, pu: &dyn Runtime) -> Duration {
    let r = reg.start_registrar(&[]);
    let a = pe_rt.start_echo_pe("FailPool", &[r.asap_addr()]);
    let b = pe_rt.start_echo_pe("FailPool", &[r.asap_addr()]);
    let mut c = pu.connect_client("FailPool", &[r.asap_addr()]);
    echo(&mut *c, "before");
    let serving = c.pe_id().expect("on a PE");
    let (victim, survivor) = if serving == a.pe_id() { (a, b) } else { (b, a) };
    assert_eq!(victim.pe_id(), serving);
    let start = std::time::Instant::now();
    victim.kill();
    echo(&mut *c, "after");
    let took = start.elapsed();
    assert_eq!(c.pe_id(), Some(survivor.pe_id()));
    assert_eq!(c.failovers(), 1);
    assert_eq!(survivor.cookie_echoes(), vec![cookie_of(serving)]);
    echo(&mut *c, "again");
    eprintln!(
        "failover (registrar {}, PEs {}, client {}): kill -> first echo {took:?}",
        reg.name(),
        pe_rt.name(),
        pu.name()
    );
    c.close();
    survivor.kill();
    r.kill();
    took
}

/// Two peered registrars; a PE knowing both registers with one; that one is killed; the PE
/// registers with the other by itself, and clients keep being served.
fn rehoming(regs: [&dyn Runtime; 2], pe_rt: &dyn Runtime, pu: &dyn Runtime) {
    let r1 = regs[0].start_registrar(&[]);
    let r2 = regs[1].start_registrar(&[r1.enrp_addr()]);
    let asap = [r1.asap_addr(), r2.asap_addr()];
    let pe = pe_rt.start_echo_pe("HomePool", &asap);
    let id = pe.pe_id();
    wait_until("both registrars list the PE with the same home", || {
        let (l1, l2) = (r1.elements("HomePool"), r2.elements("HomePool"));
        l1.len() == 1 && l1 == l2
    });
    let home = r1.elements("HomePool")[0].1;
    let (dead, alive) = if home == r1.server_id() {
        (r1, r2)
    } else {
        (r2, r1)
    };
    let alive_id = alive.server_id();
    dead.kill();
    let took = wait_until("the PE is registered with the surviving registrar", || {
        alive.elements("HomePool") == vec![(id, alive_id)] && pe.home() == Some(alive_id)
    });
    eprintln!(
        "re-homing (registrars {}+{}, PE {}): kill -> PE home at the survivor {took:?}",
        regs[0].name(),
        regs[1].name(),
        pe_rt.name()
    );
    let mut c = pu.connect_client("HomePool", &[alive.asap_addr()]);
    echo(&mut *c, "still here");
    c.close();
    pe.kill();
    alive.kill();
}

/// Three statically peered registrars; a PE knowing only the first registers there; the
/// first is killed; a survivor takes its PEs over (ENRP takeover, then an
/// ASAP_ENDPOINT_KEEP_ALIVE with the H bit to the PE's user port over the TCP mapping's
/// channel kind 2); both survivors agree on the new home and serve the pool.
fn takeover(regs: [&dyn Runtime; 3], pe_rt: &dyn Runtime, pu: &dyn Runtime) {
    let r1 = regs[0].start_registrar(&[]);
    let r2 = regs[1].start_registrar(&[r1.enrp_addr()]);
    let r3 = regs[2].start_registrar(&[r1.enrp_addr(), r2.enrp_addr()]);
    let pe = pe_rt.start_echo_pe("TakePool", &[r1.asap_addr()]);
    let id = pe.pe_id();
    let owned_by_r1 = vec![(id, r1.server_id())];
    wait_until("every registrar lists the PE, homed at the first", || {
        r1.elements("TakePool") == owned_by_r1
            && r2.elements("TakePool") == owned_by_r1
            && r3.elements("TakePool") == owned_by_r1
    });
    let survivors = [r2.server_id(), r3.server_id()];
    r1.kill();
    let took = wait_until("a survivor took the PE over", || {
        let (l2, l3) = (r2.elements("TakePool"), r3.elements("TakePool"));
        l2.len() == 1 && l2 == l3 && survivors.contains(&l2[0].1) && pe.home() == Some(l2[0].1)
    });
    eprintln!(
        "takeover (registrars {}+{}+{}, PE {}): kill -> PE re-homed {took:?}",
        regs[0].name(),
        regs[1].name(),
        regs[2].name(),
        pe_rt.name()
    );
    let mut got = pu.resolve("TakePool", &[r3.asap_addr()]);
    got.sort();
    assert_eq!(got, vec![id]);
    let mut c = pu.connect_client("TakePool", &[r2.asap_addr()]);
    echo(&mut *c, "taken over");
    c.close();
    pe.kill();
    r2.kill();
    r3.kill();
}

// ----------------------------------------------------------------------------------------
// the tests: each scenario on each driver, then mixed deployments

mod mio_driver {
    use super::*;

    #[test]
    fn registration() {
        super::registration(&Mio, &Mio);
    }
    #[test]
    fn resolution() {
        super::resolution(&Mio, &Mio, &Mio);
    }
    #[test]
    fn failover() {
        super::failover(&Mio, &Mio, &Mio);
    }
    #[test]
    fn rehoming() {
        super::rehoming([&Mio, &Mio], &Mio, &Mio);
    }
    #[test]
    fn takeover() {
        super::takeover([&Mio, &Mio, &Mio], &Mio, &Mio);
    }
}

mod async_driver {
    use super::*;

    #[test]
    fn registration() {
        super::registration(&Async, &Async);
    }
    #[test]
    fn resolution() {
        super::resolution(&Async, &Async, &Async);
    }
    #[test]
    fn failover() {
        super::failover(&Async, &Async, &Async);
    }
    #[test]
    fn rehoming() {
        super::rehoming([&Async, &Async], &Async, &Async);
    }
    #[test]
    fn takeover() {
        super::takeover([&Async, &Async, &Async], &Async, &Async);
    }
}

mod mixed {
    use super::*;

    #[test]
    fn async_pe_with_mio_registrar() {
        super::registration(&Mio, &Async);
        super::resolution(&Mio, &Async, &Mio);
        super::failover(&Mio, &Async, &Async);
        super::failover(&Mio, &Async, &Mio);
    }

    #[test]
    fn mio_pe_with_async_registrar() {
        super::registration(&Async, &Mio);
        super::resolution(&Async, &Mio, &Async);
        super::failover(&Async, &Mio, &Mio);
        super::failover(&Async, &Mio, &Async);
    }

    #[test]
    fn registrars_of_both_drivers() {
        super::rehoming([&Mio, &Async], &Async, &Mio);
        super::takeover([&Async, &Mio, &Async], &Mio, &Async);
    }

    /// An async PE homed at a mio registrar that dies, taken over by a registrar of either
    /// driver (over the TCP mapping the taker reaches the PE at its user port, channel
    /// kind 2); clients of the mio driver are served afterwards.
    #[test]
    fn async_pe_taken_over_in_a_mixed_cluster() {
        super::takeover([&Mio, &Async, &Mio], &Async, &Mio);
    }
}
