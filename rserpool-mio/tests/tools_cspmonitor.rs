//! `cspmonitor` fed with reports built by `rserpool_proto::csp`, its screen captured in
//! plain mode.

use rserpool_proto::csp::{
    ComponentId, CspAssociation, CspProtocol, CspReport, Location, StatusText, Workload,
    registrar_status_text,
};
use rserpool_proto::ids::{PeIdentifier, ServerId};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Starts cspmonitor on an ephemeral loopback port; returns the child and its address.
fn start(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cspmonitor"))
        .arg("-localaddress=127.0.0.1:0")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(a) = line.strip_prefix("cspmonitor: listening on ") {
                let _ = tx.send(a.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("cspmonitor did not report its address");
    (child, addr)
}

fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("cspmonitor did not end in {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn registrar_report() -> CspReport {
    let mut r = CspReport::new(
        ComponentId::registrar(ServerId(0x802547ba)),
        3_723_000_000,
        1_000_000,
        Location::from("host: 127.0.0.1:3863"),
        registrar_status_text(1, 1, 1, 0),
    );
    r.associations.push(CspAssociation {
        receiver_id: ComponentId::registrar(ServerId(0)),
        duration_us: u64::MAX,
        flags: 0,
        protocol: CspProtocol::Sctp,
        ppid: 12,
    });
    r
}

fn pe_report(id: u32) -> CspReport {
    let mut r = CspReport::new(
        ComponentId::pool_element(PeIdentifier(id)),
        61_000_000,
        1_000_000,
        Location::from("host: 127.0.0.1:5000"),
        StatusText::from("1 Session"),
    );
    r.workload = Workload::from_fraction(0.25);
    r.associations.push(CspAssociation {
        receiver_id: ComponentId::registrar(ServerId(0x802547ba)),
        duration_us: 3_600_000_000 + 2_000_000,
        flags: 0,
        protocol: CspProtocol::Tcp,
        ppid: 11,
    });
    r
}

fn send(to: SocketAddr, r: &CspReport) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(&r.to_bytes().unwrap(), to).unwrap();
}

/// The last screen of plain-mode output.
fn last_screen(stdout: &str) -> &str {
    let at = stdout
        .rfind("Current Component Status")
        .expect("no screen printed");
    let line_start = stdout[..at].rfind('\n').map_or(0, |i| i + 1);
    &stdout[line_start..]
}

#[test]
fn full_screen_shows_every_component_and_forgets_finished_ones() {
    let (child, addr) = start(&["-plain", "-full", "-updateinterval=100", "-runtime=3"]);
    send(addr, &registrar_report());
    send(addr, &pe_report(0x2bc6ac57));
    send(addr, &pe_report(0x11));
    // Not a valid report (trailing byte): ignored.
    let mut bad = pe_report(0x99).to_bytes().unwrap().to_vec();
    bad.push(0);
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&bad, addr)
        .unwrap();
    // The first screen comes 1 s after the start; then PE 0x11 shuts down.
    thread::sleep(Duration::from_millis(1300));
    send(
        addr,
        &CspReport::final_report(ComponentId::pool_element(PeIdentifier(0x11)), 0, 1_000_000),
    );
    let out = wait_bounded(child, Duration::from_secs(15));
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.contains('\x1b'),
        "plain mode has no escape sequences"
    );
    let screen = last_screen(&stdout);
    let lines: Vec<&str> = screen.trim_end().lines().collect();
    assert!(
        lines[0].ends_with("Current Component Status -- 1 PRs, 1 PEs, 0 PUs"),
        "{screen}"
    );
    // The time stamp: dd-Mon-yyyy hh:mm:ss.ffff:
    assert_eq!(lines[0].find(": Current").unwrap(), 25, "{}", lines[0]);
    assert_eq!(lines[1], "");
    assert!(
        lines[2].starts_with("PR $802547ba [host: 127.0.0.1:3863] U=01:02:03 l="),
        "{screen}"
    );
    assert!(
        lines[2].ends_with("s A=1 \"1[1] PEs in 1 Pool, 0 Peers\""),
        "{screen}"
    );
    assert_eq!(lines[3], "   -> PR $00000000 ENRP/SCTP");
    assert!(
        lines[4].starts_with("PE $2bc6ac57 [host: 127.0.0.1:5000] U=00:01:01 l="),
        "{screen}"
    );
    assert!(lines[4].ends_with("s A=1 L= 25% \"1 Session\""), "{screen}");
    assert_eq!(lines[5], "   -> PR $802547ba ASAP/TCP  duration=1:00:02");
    assert_eq!(lines.len(), 6, "{screen}");
    // The earlier screens showed PE 0x11 before its final report.
    assert!(stdout.contains("PE $00000011 [host: 127.0.0.1:5000]"));
}

#[test]
fn once_prints_one_compact_screen_and_exits() {
    let (child, addr) = start(&["-plain", "-once"]);
    send(addr, &pe_report(7));
    let started = Instant::now();
    let out = wait_bounded(child, Duration::from_secs(15));
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.matches("Current Component Status").count(),
        1,
        "{stdout}"
    );
    let screen = last_screen(&stdout);
    assert!(
        screen.contains(
            "-- 0 PRs, 1 PEs, 0 PUs\n\nPE $00000007 [host: 127.0.0.1:5000] U=00:01:01 l="
        )
    );
    assert!(!screen.contains("->"), "compact mode lists no associations");
}
