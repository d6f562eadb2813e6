//! The hostile-input suite (`rserpool_mio::hostile`) over the TCP mapping on 127.0.0.1
//! against our registrar, run in-process by the mio driver in its own thread: no input
//! crashes it, the probe always names exactly the legitimate PE, no stranger removes,
//! hijacks, re-homes or injects a PE, memory returns to its baseline after the floods, and
//! every action-bit combination and invalid registration gets the RFC's reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rserpool_core::registrar::fuzzing::SplitMix64;
use rserpool_core::registrar::{
    AddressScope, PeerPolicy, Registrar, RegistrarConfig, RegistrarEvent, ResourceUsage,
};
use rserpool_mio::driver::{Driver, DriverConfig, ListenerConfig};
use rserpool_mio::hostile::suite::{Scale, Suite, SuiteConfig};
use rserpool_mio::hostile::{Class, Reply, wire};
use rserpool_mio::transport::{TransportConfig, TransportKind, TransportMode};
use rserpool_proto::ids::ServerId;
use rserpool_proto::param::cause;
use rserpool_proto::rtf::ChannelKind;
use rserpool_proto::transport::TransportParameter;

const REGISTRAR_ID: ServerId = ServerId(0x0abc_def0);
/// Per-association cap of the registrar's send queues in this test (small, so that the
/// never-reading association hits it quickly).
const QUEUE_CAP: usize = 256 * 1024;

/// What the test reads of the registrar while the suite runs.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    elements: usize,
    pools: usize,
    usage: ResourceUsage,
    driver_assocs: usize,
    pending_bytes: usize,
    /// PE removals and re-registrations of the legitimate PE.
    legit_events: Vec<RegistrarEvent>,
    peers: usize,
}

struct RegistrarThread {
    handle: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    snap: Arc<Mutex<Snapshot>>,
    asap: SocketAddr,
    enrp: SocketAddr,
}

impl RegistrarThread {
    fn start(static_peer: SocketAddr, legit_pe: u32) -> RegistrarThread {
        let stop = Arc::new(AtomicBool::new(false));
        let snap = Arc::new(Mutex::new(Snapshot::default()));
        let (tx, rx) = mpsc::channel();
        let (stop2, snap2) = (stop.clone(), snap.clone());
        let handle = std::thread::spawn(move || {
            let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let config = DriverConfig {
                mode: TransportMode::Tcp,
                transport: TransportConfig {
                    max_queued_bytes: QUEUE_CAP,
                    max_message_len: 65_536,
                    ..TransportConfig::default()
                },
                max_overflow_bytes: Some(QUEUE_CAP),
                listeners: vec![
                    ListenerConfig::new(vec![lo], ChannelKind::AsapToRegistrar),
                    ListenerConfig::new(vec![lo], ChannelKind::Enrp),
                ],
                ..DriverConfig::default()
            };
            let mut driver = Driver::new(config, |bound, now| {
                let asap = bound.listeners[0].local_addrs[0];
                let enrp = bound.listeners[1].local_addrs[0];
                let mut cfg = RegistrarConfig {
                    server_id: Some(REGISTRAR_ID),
                    asap_transports: vec![TransportParameter::tcp(asap.port(), 0, [asap.ip()])],
                    enrp_transport: Some(TransportParameter::tcp(enrp.port(), 0, [enrp.ip()])),
                    asap_announce: None,
                    enrp_announce: None,
                    static_peers: vec![vec![static_peer]],
                    min_address_scope: AddressScope::Loopback,
                    peer_policy: PeerPolicy::StaticOnly,
                    ..RegistrarConfig::default()
                };
                cfg.timers.keep_alive_transmission_interval = Duration::from_millis(1000);
                cfg.timers.keep_alive_timeout_interval = Duration::from_millis(1000);
                cfg.timers.mentor_discovery_timeout = Duration::from_millis(1000);
                tx.send((asap, enrp)).unwrap();
                Registrar::new(cfg, now, SplitMix64::new(7))
            })
            .expect("registrar driver");
            while !stop2.load(Ordering::Relaxed) {
                driver.turn(Some(Duration::from_millis(20))).expect("turn");
                let events: Vec<RegistrarEvent> = driver.events_mut().drain(..).collect();
                let reg = driver.machine();
                let mut s = snap2.lock().unwrap();
                for e in events {
                    let legit = match &e {
                        RegistrarEvent::PeRemoved { pe_id, .. } => pe_id.0 == legit_pe,
                        RegistrarEvent::PeReregistered { pe_id, .. } => pe_id.0 == legit_pe,
                        _ => false,
                    };
                    if legit {
                        s.legit_events.push(e);
                    }
                }
                s.elements = reg.handlespace().element_count();
                s.pools = reg.handlespace().pool_count();
                s.usage = reg.resource_usage();
                s.peers = reg
                    .peers()
                    .filter(|p| p.server_id != ServerId::NONE)
                    .count();
                s.driver_assocs = driver.assocs().len();
                s.pending_bytes = driver.pending_bytes();
            }
        });
        let (asap, enrp) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("registrar started");
        RegistrarThread {
            handle,
            stop,
            snap,
            asap,
            enrp,
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.snap.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until `ok` holds for the snapshot; returns the last one.
    fn wait_for(&self, limit: Duration, ok: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let end = Instant::now() + limit;
        loop {
            let s = self.snapshot();
            if ok(&s) || Instant::now() >= end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn hostile_suite_over_tcp_against_our_registrar() {
    let started = Instant::now();
    let mut cfg = SuiteConfig::new(vec![], None, TransportKind::Tcp);
    cfg.local_ip = Some("127.0.0.1".parse().unwrap());
    cfg.vectors_dir =
        wire::find_vectors_dir(Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))));
    assert!(
        cfg.vectors_dir.is_some(),
        "shared/vectors not found (set RSERPOOL_VECTORS)"
    );
    cfg.seed = 5355;
    cfg.scale = Scale::default();
    cfg.probe_interval = Duration::from_millis(500);
    let mut suite = Suite::new(cfg.clone()).expect("suite");
    let legit = suite.legit_pe_id();
    let reg = RegistrarThread::start(suite.peer_addr().unwrap(), legit);
    suite.set_registrar(vec![reg.asap], Some(vec![reg.enrp]));

    let mut per_class: Vec<(Class, Snapshot)> = Vec::new();
    let mut before_flood: Option<Snapshot> = None;
    let report = suite
        .run_with(|c| {
            // The registrar's structures after each class: floods leave nothing behind once
            // their associations are closed.
            let s = if c.class == Class::Flood {
                let base = before_flood.clone().expect("class d ran before e");
                reg.wait_for(Duration::from_secs(10), |s| {
                    s.elements <= base.elements && s.usage.associations <= base.usage.associations
                })
            } else {
                reg.snapshot()
            };
            if c.class == Class::Forged {
                before_flood = Some(s.clone());
            }
            per_class.push((c.class, s));
        })
        .expect("suite run");
    let text = report.render("ours (in-process, TCP mapping)");
    println!("{text}");
    for (class, s) in &per_class {
        println!("after class {class}: {s:?}");
    }

    // Nothing crashed: every class ran, the registrar thread is alive.
    assert!(!reg.handle.is_finished(), "registrar thread ended");
    assert_eq!(report.classes.len(), 6, "{text}");
    assert_eq!(report.crashes(), 0, "{text}");
    assert!(!report.gave_up);
    // The peer was accepted, the stranger and the announcer were not.
    assert!(report.peer_joined, "{text}");
    assert_eq!(report.registrar_id, Some(REGISTRAR_ID));
    // Every probe named exactly the legitimate PE, with its transport and home.
    assert_eq!(report.probe_failures(), 0, "{text}");
    for c in &report.classes {
        assert!(c.probes >= 1, "class {} was not probed", c.class);
        // Our registrar answers every marker, never sends an undecodable message and never
        // an RSPLIB-internal cause code.
        assert_eq!(c.lost_markers, 0, "class {}: lost markers\n{text}", c.class);
        assert!(c.non_rfc_causes().is_empty(), "class {}\n{text}", c.class);
        assert_eq!(
            c.count(Reply::Undecodable(rserpool_core::Protocol::Asap)),
            0
        );
        assert_eq!(
            c.count(Reply::Undecodable(rserpool_core::Protocol::Enrp)),
            0
        );
    }
    // Every action-bit combination, invalid registration and forged request got the
    // expected reply (with its cause code).
    assert_eq!(report.deviations(), 0, "{text}");
    let class = |k: Class| report.classes.iter().find(|c| c.class == k).unwrap();
    let b = class(Class::Unknown);
    assert!(
        b.count(Reply::AsapError(cause::UNRECOGNIZED_PARAMETER)) >= 10,
        "{text}"
    );
    assert!(
        b.count(Reply::AsapError(cause::UNRECOGNIZED_MESSAGE)) >= 2,
        "{text}"
    );
    assert!(
        b.count(Reply::EnrpError(cause::UNRECOGNIZED_PARAMETER)) >= 2,
        "{text}"
    );
    assert!(
        b.count(Reply::EnrpError(cause::UNRECOGNIZED_MESSAGE)) >= 2,
        "{text}"
    );
    let c = class(Class::InvalidRegistration);
    for code in [
        cause::INVALID_VALUES,
        cause::INCONSISTENT_POOLING_POLICY,
        cause::INCONSISTENT_TRANSPORT_TYPE,
        cause::INCONSISTENT_DATA_CONTROL_CONFIGURATION,
        cause::REJECTED_SECURITY,
    ] {
        assert!(
            c.count(Reply::RegistrationReject(Some(code))) >= 1,
            "cause {code:#x}\n{text}"
        );
    }
    assert_eq!(c.count(Reply::RegistrationOk), 0, "{text}");
    let d = class(Class::Forged);
    assert_eq!(
        d.count(Reply::DeregistrationError(cause::REJECTED_SECURITY)),
        3,
        "{text}"
    );
    assert_eq!(
        d.count(Reply::RegistrationReject(Some(
            cause::NON_UNIQUE_PE_IDENTIFIER
        ))),
        3,
        "{text}"
    );
    // Floods: 1,024 PEs per association, then "Lack of Resources" (a few more once the
    // flood's own PEs, which never answer keep-alives, time out: the keep-alive interval is
    // 1 s here); 5,000 pools; every handle resolution answered.
    let e = class(Class::Flood);
    let ok = e.count(Reply::RegistrationOk);
    let full = e.count(Reply::RegistrationReject(Some(cause::LACK_OF_RESOURCES)));
    assert_eq!(ok + full, 20_000 + 5000, "{text}");
    assert!((1024 + 5000..1024 + 5000 + 2000).contains(&ok), "{text}");
    assert_eq!(e.count(Reply::ResolutionOk), 20_000, "{text}");
    // A flood of Endpoint Unreachable reports hides the live PE at most for the round trip
    // of one verification keep-alive per keep-alive interval (here 1 s): one run of answers
    // without it per started second of flood. (How many answers fall into that round trip
    // depends on how busy the machine is: 1-2 alone, 3 seen under a loaded CI run.)
    let (hidden, answered) = e.hidden_answers;
    let (windows, flood) = e.hidden_windows;
    assert!(answered >= 400, "{text}");
    assert!(
        windows <= flood.as_secs() + 1,
        "{hidden} of {answered} answers hid the PE, in {windows} runs, in {flood:?}\n{text}"
    );
    assert!(
        hidden * 10 <= answered,
        "{hidden} of {answered} answers hid the PE\n{text}"
    );
    assert!(
        e.notes
            .iter()
            .any(|n| n.contains("never reads") && n.contains("dropped by the registrar")),
        "the never-reading association was not dropped\n{text}"
    );
    // The registrar never removed or re-registered the legitimate PE on behalf of anyone
    // while the suite ran (it is removed when the suite closes its association at the end).
    let (_, last) = per_class.last().unwrap();
    assert!(last.legit_events.is_empty(), "{:?}", last.legit_events);
    // The registrar kept monitoring the legitimate PE all along, and never told it it was
    // gone.
    assert!(
        report.keep_alives >= 4,
        "{} keep-alives",
        report.keep_alives
    );
    assert_eq!(report.removal_notices, 0);
    // Memory: the floods' PEs and associations are gone again.
    let (_, after_d) = per_class.iter().find(|(k, _)| *k == Class::Forged).unwrap();
    let (_, after_e) = per_class.iter().find(|(k, _)| *k == Class::Flood).unwrap();
    assert!(
        after_e.elements <= after_d.elements,
        "{after_d:?} -> {after_e:?}"
    );
    assert!(after_e.pools <= after_d.pools, "{after_d:?} -> {after_e:?}");
    assert!(
        after_e.usage.associations <= after_d.usage.associations,
        "{after_d:?} -> {after_e:?}"
    );
    assert!(
        last.usage.probes <= 1 && last.usage.sync_marks == 0,
        "{last:?}"
    );
    assert!(last.pending_bytes <= 2 * QUEUE_CAP, "{last:?}");
    assert_eq!(last.peers, 1, "only the legitimate peer: {last:?}");

    // Everything the suite opened is closed: the handlespace and the association table
    // empty out.
    drop(report);
    let end = reg.wait_for(Duration::from_secs(10), |s| {
        s.elements == 0 && s.usage.associations <= 1
    });
    assert_eq!(end.elements, 0, "{end:?}");
    assert_eq!(end.pools, 0, "{end:?}");
    assert!(end.usage.associations <= 1, "{end:?}");
    reg.stop.store(true, Ordering::Relaxed);
    reg.handle.join().expect("registrar thread panicked");
    println!("hostile_tcp: {:.1} s", started.elapsed().as_secs_f64());
}

/// The `rsphostile` binary against our registrar: ASAP classes only (no ENRP endpoint
/// given), exit status 0 and a PASS verdict.
#[test]
fn rsphostile_binary_passes_against_our_registrar() {
    // No peer in this run: the registrar's static peer is a closed port.
    let reg = RegistrarThread::start("127.0.0.1:9".parse().unwrap(), 0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsphostile"))
        .args([
            &format!("-registrar={}", reg.asap),
            "-transport=tcp",
            "-local=127.0.0.1",
            "-classes=b,c,d,e",
            "-floodregistrations=2000",
            "-floodpools=500",
            "-poolsperassoc=250",
            "-hrflood=2000",
            "-hrunread=0",
            "-euflood=500",
            "-churn=20",
            "-label=ours",
        ])
        .output()
        .expect("rsphostile runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("VERDICT ours: "))
        .expect("verdict line");
    assert!(verdict.starts_with("VERDICT ours: PASS"), "{verdict}");
    assert!(stdout.contains("registration-reject 0x0004 x3"), "{stdout}");
    assert!(stdout.contains("registration-reject 0x0006"), "{stdout}");
    reg.stop.store(true, Ordering::Relaxed);
    reg.handle.join().expect("registrar thread panicked");
}

/// Regression (hostile suite, class e, against the `rspregistrar` program): a pool user
/// that sends Handle Resolutions and never reads the answers grew the registrar without
/// bound (800,000 requests: 98 MB resident, never dropped): the program left the driver's
/// overflow queue unbounded. Now the association is aborted at the backlog limit.
#[test]
fn rspregistrar_drops_a_pool_user_that_never_reads() {
    use rserpool_mio::programs::cluster::{Proc, Programs, free_ports, wait_for_listener};
    let ports = free_ports(2).expect("free ports");
    let asap: SocketAddr = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_rspregistrar"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut reg = Proc::spawn(
        Programs::in_dir(dir),
        "rspregistrar",
        &[
            format!("-asap={asap}"),
            format!("-enrp=127.0.0.1:{}", ports[1]),
            "-transport=tcp".into(),
            "-minaddressscope=loopback".into(),
            "-asapannounce=off".into(),
            "-enrpannounce=off".into(),
            "-loglevel=0".into(),
        ],
        "rspregistrar",
        None,
    )
    .expect("rspregistrar starts");
    assert!(
        wait_for_listener(asap, Duration::from_secs(20)),
        "rspregistrar listens"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsphostile"))
        .args([
            &format!("-registrar={asap}"),
            "-transport=tcp",
            "-local=127.0.0.1",
            &format!("-registrarpid={}", reg.pid()),
            "-classes=e",
            "-floodregistrations=0",
            "-floodpools=0",
            "-hrflood=0",
            "-euflood=0",
            "-churn=0",
            "-hrunread=600000",
            "-label=rspregistrar",
        ])
        .output()
        .expect("rsphostile runs");
    reg.kill();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("never reads"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("dropped by the registrar"), "{line}");
    // "RSS a -> b KiB": bounded by the backlog limit (+ queues, buffers, allocator).
    let kib: Vec<u64> = line
        .rsplit_once("RSS ")
        .map(|(_, r)| {
            r.split(|c: char| !c.is_ascii_digit())
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(kib.len(), 2, "{line}");
    assert!(kib[1] < kib[0] + 48 * 1024, "{line}");
    assert!(stdout.contains("VERDICT rspregistrar: PASS"), "{stdout}");
}
