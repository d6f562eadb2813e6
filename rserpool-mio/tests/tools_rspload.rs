//! `rspload` against a tiny fake registrar: a thread serving ASAP over the TCP mapping with
//! `Transports` (accepts registrations, answers handle resolutions with registered PEs,
//! sends Endpoint Keep-Alives every 200 ms and counts the acks).

use mio::{Events, Poll};
use rserpool_core::{AssocId, Protocol};
use rserpool_mio::transport::{TransportConfig, TransportEvent, TransportKind, Transports};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{EndpointKeepAlive, HandleResolutionResponse, RegistrationResponse};
use rserpool_proto::ids::{PoolHandle, ServerId};
use rserpool_proto::param::PoolElementParameter;
use rserpool_proto::policy::Policy;
use rserpool_proto::rtf::ChannelKind;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Stats {
    registrations: u64,
    resolutions: u64,
    keepalives_sent: u64,
    acks: u64,
    wrong_acks: u64,
    pools: Vec<PoolHandle>,
    policies: Vec<Policy>,
}

fn fake_registrar(
    addr_tx: mpsc::Sender<SocketAddr>,
    stop: Arc<AtomicBool>,
    keepalive_interval: Duration,
) -> Stats {
    let mut poll = Poll::new().unwrap();
    rserpool_mio::transport::raise_nofile_limit().unwrap();
    let mut t = Transports::new(poll.registry(), 0..30_000, TransportConfig::default()).unwrap();
    let l = t
        .listen(
            &["127.0.0.1:0".parse().unwrap()],
            TransportKind::Tcp,
            ChannelKind::AsapToRegistrar,
        )
        .unwrap();
    addr_tx.send(t.socket_local_addrs(l).unwrap()[0]).unwrap();
    let mut events = Events::with_capacity(256);
    let mut out = Vec::new();
    let mut stats = Stats::default();
    // PEs by association, and the pool (ids in registration order) for answers.
    let mut pes: HashMap<AssocId, (PoolHandle, PoolElementParameter)> = HashMap::new();
    let mut pool: HashMap<u32, PoolElementParameter> = HashMap::new();
    let mut order: Vec<u32> = Vec::new();
    let mut rr = 0usize;
    let mut next_keepalive = Instant::now();
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        let now = Instant::now();
        for ev in events.iter() {
            t.handle_event(ev, now, &mut out);
        }
        t.handle_timeout(now, &mut out);
        for e in out.drain(..) {
            match e {
                TransportEvent::Message {
                    assoc, ppid, data, ..
                } => {
                    assert_eq!(ppid, Protocol::Asap.ppid());
                    let reply = match AsapMessage::decode_bytes(&data).unwrap() {
                        AsapMessage::Registration(r) => {
                            stats.registrations += 1;
                            stats.pools.push(r.pool_handle.clone());
                            stats.policies.push(r.pool_element.policy);
                            pool.insert(r.pool_element.pe_id.0, r.pool_element.clone());
                            order.push(r.pool_element.pe_id.0);
                            let reply = RegistrationResponse {
                                pool_handle: r.pool_handle.clone(),
                                pe_id: r.pool_element.pe_id,
                                ..RegistrationResponse::default()
                            };
                            pes.insert(assoc, (r.pool_handle, r.pool_element));
                            Some(AsapMessage::RegistrationResponse(reply))
                        }
                        AsapMessage::HandleResolution(r) => {
                            stats.resolutions += 1;
                            let n = order.len().min(3);
                            let chosen = (0..n)
                                .filter_map(|k| order.get((rr + k) % order.len()))
                                .filter_map(|id| pool.get(id).cloned())
                                .collect();
                            rr = rr.wrapping_add(1);
                            Some(AsapMessage::HandleResolutionResponse(
                                HandleResolutionResponse {
                                    pool_handle: r.pool_handle,
                                    policy: Some(Policy::RoundRobin),
                                    pool_elements: chosen,
                                    ..HandleResolutionResponse::default()
                                },
                            ))
                        }
                        AsapMessage::EndpointKeepAliveAck(a) => {
                            match pes.get(&assoc) {
                                Some((h, pe)) if *h == a.pool_handle && pe.pe_id == a.pe_id => {
                                    stats.acks += 1;
                                }
                                _ => stats.wrong_acks += 1,
                            }
                            None
                        }
                        other => panic!("unexpected {other:?}"),
                    };
                    if let Some(r) = reply {
                        // The association may be gone already (its Down comes later in
                        // this batch of events) when rspload closes at the end.
                        let _ = t.send(assoc, Protocol::Asap.ppid(), 0, r.to_bytes());
                    }
                }
                TransportEvent::Down { assoc, .. } => {
                    if let Some((_, pe)) = pes.remove(&assoc) {
                        pool.remove(&pe.pe_id.0);
                        order.retain(|id| *id != pe.pe_id.0);
                    }
                }
                _ => {}
            }
        }
        if now >= next_keepalive {
            next_keepalive = now + keepalive_interval;
            for (assoc, (h, pe)) in &pes {
                let ka = AsapMessage::EndpointKeepAlive(EndpointKeepAlive {
                    server_id: ServerId(0x1234),
                    pool_handle: h.clone(),
                    pe_id: Some(pe.pe_id),
                    ..EndpointKeepAlive::default()
                });
                if t.send(*assoc, Protocol::Asap.ppid(), 0, ka.to_bytes())
                    .is_ok()
                {
                    stats.keepalives_sent += 1;
                }
            }
        }
    }
    stats
}

fn rspload(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rspload"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(40) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "rspload did not end; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `NAME VALUE UNIT` lines as a map NAME → VALUE.
fn figures(stdout: &str) -> HashMap<String, f64> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "not NAME VALUE UNIT: {l}");
            (f[0].to_owned(), f[1].parse::<f64>().unwrap())
        })
        .collect()
}

fn with_fake_registrar(
    keepalive_interval: Duration,
    args: &[&str],
) -> (HashMap<String, f64>, String, Stats) {
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let server = thread::spawn(move || fake_registrar(tx, s2, keepalive_interval));
    let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let registrar = format!("-registrar={addr}");
    let mut all = vec![registrar.as_str(), "-transport=tcp"];
    all.extend_from_slice(args);
    let out = rspload(&all);
    stop.store(true, Ordering::Relaxed);
    let stats = server.join().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (figures(&stdout), stdout, stats)
}

#[test]
fn registers_resolves_and_answers_keepalives() {
    let (f, stdout, stats) = with_fake_registrar(
        Duration::from_millis(200),
        &[
            "-pes=50",
            "-assocs=2",
            "-outstanding=4",
            "-duration=1",
            "-poolhandle=TestPool",
            "-policy=LeastUsed",
        ],
    );
    assert_eq!(f["pes"], 50.0, "{stdout}");
    assert_eq!(f["registrations"], 50.0, "{stdout}");
    assert_eq!(f["registration_failures"], 0.0, "{stdout}");
    assert!(f["resolutions"] > 0.0, "{stdout}");
    assert!(f["resolutions_per_s"] > 0.0, "{stdout}");
    assert!(f["latency_p50"] <= f["latency_p99"], "{stdout}");
    assert_eq!(f["errors"], 0.0, "{stdout}");
    assert_eq!(f["pes_lost"], 0.0, "{stdout}");
    assert_eq!(f["pu_assocs_aborted"], 0.0, "{stdout}");
    assert!((0.9..3.0).contains(&f["measured"]), "{stdout}");
    assert!(stdout.contains("\n# 50 of 50 PEs registered"), "{stdout}");
    // The registrar's side.
    assert_eq!(stats.registrations, 50);
    assert!(
        stats
            .pools
            .iter()
            .all(|p| *p == PoolHandle::from("TestPool"))
    );
    assert!(
        stats
            .policies
            .iter()
            .all(|p| *p == Policy::LeastUsed { load: 0 })
    );
    assert!(stats.resolutions as f64 >= f["resolutions"], "{stats:?}");
    assert!(stats.acks > 0, "{stats:?}");
    assert_eq!(stats.wrong_acks, 0, "{stats:?}");
    assert!(stats.acks >= f["keepalives"] as u64, "{stats:?}");
}

#[test]
fn keepalive_only_mode_with_paced_registrations_and_cpu_figures() {
    let pid = std::process::id().to_string();
    let registrar_pid = format!("-registrarpid={pid}");
    let (f, stdout, stats) = with_fake_registrar(
        Duration::from_millis(200),
        &[
            "-pes=20",
            "-mode=keepalive-only",
            "-regrate=100",
            "-duration=1",
            &registrar_pid,
        ],
    );
    assert_eq!(f["registrations"], 20.0, "{stdout}");
    assert_eq!(f["resolutions"], 0.0, "{stdout}");
    assert!(!f.contains_key("latency_p50"), "{stdout}");
    assert_eq!(stats.resolutions, 0);
    // 20 registrations started 10 ms apart: about 100/s, not faster.
    assert!(
        f["registrations_per_s"] > 10.0 && f["registrations_per_s"] < 125.0,
        "{stdout}"
    );
    // Five keep-alive rounds a second, to 20 PEs.
    assert!(f["keepalives"] >= 20.0, "{stdout}");
    assert!(f.contains_key("registrar_cpu"), "{stdout}");
    assert!(f.contains_key("registrar_cpu_per_keepalive"), "{stdout}");
    assert_eq!(f["pes_lost"], 0.0, "{stdout}");
    assert_eq!(f["errors"], 0.0, "{stdout}");
}

#[test]
fn unreachable_registrar_counts_failures() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let registrar = format!("-registrar=127.0.0.1:{port}");
    let out = rspload(&[
        &registrar,
        "-transport=tcp",
        "-pes=5",
        "-assocs=1",
        "-duration=0.2",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let f = figures(&stdout);
    assert_eq!(f["registrations"], 0.0, "{stdout}");
    assert_eq!(f["registration_failures"], 5.0, "{stdout}");
    assert_eq!(f["pu_assocs_aborted"], 1.0, "{stdout}");
    assert_eq!(f["resolutions"], 0.0, "{stdout}");
}

/// 10,000 PEs, one association each, over the TCP mapping (`cargo test --release -- --ignored
/// ten_thousand`): every PE registers, none is lost, resolutions flow.
#[test]
#[ignore = "heavy: 10,000 associations on each side"]
fn ten_thousand_pes() {
    // Keep-alives every 5 s (RSPLIB's default): the fake registrar is one plain thread.
    let (f, stdout, stats) = with_fake_registrar(
        Duration::from_secs(5),
        &["-pes=10000", "-duration=3", "-regwindow=512"],
    );
    println!("{stdout}");
    assert_eq!(f["registrations"], 10_000.0, "{stdout}");
    assert_eq!(f["pes_lost"], 0.0, "{stdout}");
    assert_eq!(f["pu_assocs_aborted"], 0.0, "{stdout}");
    assert_eq!(f["errors"], 0.0, "{stdout}");
    assert!(f["resolutions"] > 0.0, "{stdout}");
    assert_eq!(stats.wrong_acks, 0);
}
