//! The reference programs as real processes on 127.0.0.1 over the TCP mapping: registrars
//! peered statically, echo PEs spread over them, `rspterminal` fed lines; PEs and registrars
//! killed with SIGKILL. What each registrar holds is read from its CSP reports (status
//! `"N[M] PEs in P Pools, Q Peers"`: N PEs, M of them its own).
//!
//! Every process is killed when its guard drops; every wait ends by itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rserpool_mio::programs::cluster::{
    CspMonitor, Proc, Programs, RegistrarStatus, TerminalProc, free_ports, wait_for_listener,
};
use rserpool_proto::csp::{ComponentGroup, ComponentId};

/// Longest wait for any one step.
const LIMIT: Duration = Duration::from_secs(20);
/// CSP reports older than this are ignored.
const FRESH: Duration = Duration::from_millis(600);

fn programs() -> Programs {
    Programs::in_dir(
        Path::new(env!("CARGO_BIN_EXE_rspregistrar"))
            .parent()
            .expect("binary directory"),
    )
}

fn log_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rserpool-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("log directory");
    d
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn registrar_id(n: u32) -> ComponentId {
    ComponentId::new(ComponentGroup::Registrar, u64::from(n))
}

struct Registrar {
    id: u32,
    asap: SocketAddr,
    enrp: SocketAddr,
    proc: Option<Proc>,
}

struct Net {
    dir: Programs,
    logs: PathBuf,
    monitor: CspMonitor,
    regs: Vec<Registrar>,
    pes: Vec<(u32, Proc)>,
}

impl Net {
    /// `n` registrars with their ports (not started).
    fn new(test: &str, n: usize) -> Net {
        let ports = free_ports(2 * n).expect("free ports");
        let regs = (0..n)
            .map(|i| Registrar {
                id: 0x1001 + i as u32,
                asap: addr(ports[2 * i]),
                enrp: addr(ports[2 * i + 1]),
                proc: None,
            })
            .collect();
        Net {
            dir: programs(),
            logs: log_dir(test),
            monitor: CspMonitor::new().expect("CSP monitor"),
            regs,
            pes: Vec::new(),
        }
    }

    /// Starts registrar `i` (as server id `id`), statically peered with all others.
    fn start_registrar(&mut self, i: usize, id: u32) {
        let csp = self.monitor.addr().unwrap();
        let r = &self.regs[i];
        let mut args: Vec<String> = vec![
            format!("-identifier={id:#x}"),
            format!("-asap={}", r.asap),
            format!("-enrp={}", r.enrp),
            "-asapannounce=off".into(),
            "-enrpannounce=off".into(),
            "-minaddressscope=loopback".into(),
            "-transport=tcp".into(),
            "-peerpolicy=static".into(),
            "-peerheartbeatcycle=1000".into(),
            "-peermaxtimelastheard=1000".into(),
            "-peermaxtimenoresponse=1000".into(),
            "-takeoverexpiryinterval=1000".into(),
            "-mentordiscoverytimeout=1000".into(),
            "-endpointkeepalivetransmissioninterval=1000".into(),
            "-endpointkeepalivetimeoutinterval=1000".into(),
            format!("-cspserver={csp}"),
            "-cspinterval=100".into(),
            "-quiet".into(),
            "-loglevel=3".into(),
        ];
        for (j, other) in self.regs.iter().enumerate() {
            if j != i {
                args.push(format!("-peer={}", other.enrp));
            }
        }
        let log = self.logs.join(format!("registrar-{id:x}.log"));
        let p = Proc::spawn(
            &self.dir,
            "rspregistrar",
            &args,
            format!("PR{i}"),
            Some(&log),
        )
        .expect("start rspregistrar");
        let asap = self.regs[i].asap;
        self.regs[i].proc = Some(p);
        self.regs[i].id = id;
        assert!(
            wait_for_listener(asap, LIMIT),
            "registrar {i} does not listen on {asap}"
        );
    }

    /// Starts an echo PE with identifier `id` registering at registrar `i` only.
    fn start_pe(&mut self, id: u32, i: usize) {
        let args: Vec<String> = vec![
            "-echo".into(),
            format!("-identifier={id:#x}"),
            format!("-registrar={}", self.regs[i].asap),
            "-local=127.0.0.1".into(),
            "-asapannounce=off".into(),
            "-transport=tcp".into(),
            "-quiet".into(),
            "-loglevel=3".into(),
        ];
        let log = self.logs.join(format!("pe-{id:x}.log"));
        let p = Proc::spawn(
            &self.dir,
            "rspserver",
            &args,
            format!("PE {id:x}"),
            Some(&log),
        )
        .expect("start rspserver");
        self.pes.push((id, p));
    }

    fn terminal(&self, regs: &[usize]) -> TerminalProc {
        let mut args: Vec<String> = vec![
            "-asapannounce=off".into(),
            "-transport=tcp".into(),
            "-poolhandle=EchoPool".into(),
        ];
        for &i in regs {
            args.push(format!("-registrar={}", self.regs[i].asap));
        }
        TerminalProc::spawn(&self.dir, &args).expect("start rspterminal")
    }

    /// The live registrars' latest statuses, by index (`None`: no fresh report).
    fn statuses(&self) -> Vec<Option<RegistrarStatus>> {
        self.regs
            .iter()
            .map(|r| {
                r.proc.as_ref()?;
                self.monitor.registrar(registrar_id(r.id), FRESH)
            })
            .collect()
    }

    /// Polls the CSP reports until `pred` holds for the live registrars' statuses.
    fn wait_until(&mut self, what: &str, mut pred: impl FnMut(&[Option<RegistrarStatus>]) -> bool) {
        let end = Instant::now() + LIMIT;
        loop {
            let s = self.statuses();
            if pred(&s) {
                return;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting until {what}: statuses {s:?} (logs in {})",
                self.logs.display()
            );
            self.monitor.poll(Duration::from_millis(50));
        }
    }

    /// Waits until every live registrar holds `pes` PEs and the live ones own all of them.
    fn wait_consistent(&mut self, what: &str, pes: u32) {
        let live: Vec<bool> = self.regs.iter().map(|r| r.proc.is_some()).collect();
        self.wait_until(what, |s| {
            let mut owned = 0;
            for (st, live) in s.iter().zip(&live) {
                if !live {
                    continue;
                }
                match st {
                    Some(st) if st.pes == pes => owned += st.owned,
                    _ => return false,
                }
            }
            owned == pes
        });
    }
}

/// Waits until the log file contains `needle`.
fn wait_for_log(path: &Path, needle: &str) -> bool {
    let end = Instant::now() + LIMIT;
    while Instant::now() < end {
        if std::fs::read_to_string(path).is_ok_and(|l| l.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Net {
    fn drop(&mut self) {
        // Keep the logs of a failed test (their directory is named in its message).
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

/// Sends `n` lines (numbered from `*next`) at `gap` intervals, collecting answers.
fn feed(
    t: &mut TerminalProc,
    next: &mut u32,
    n: u32,
    gap: Duration,
    answers: &mut Vec<rserpool_mio::programs::cluster::Answer>,
) {
    for _ in 0..n {
        *next += 1;
        t.send_line(&format!("line {next}"))
            .expect("write to rspterminal");
        if let Some(a) = t.next_answer(gap) {
            answers.push(a);
        }
    }
    answers.extend(t.answers_now());
}

/// Every line 1..=sent came back exactly once.
fn assert_all_echoed_once(answers: &[rserpool_mio::programs::cluster::Answer], sent: u32) {
    let mut seen = vec![0u32; sent as usize + 1];
    for a in answers {
        let n: usize = a
            .text
            .strip_prefix("line ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected answer {a:?}"));
        seen[n] += 1;
    }
    let lost: Vec<usize> = (1..=sent as usize).filter(|n| seen[*n] == 0).collect();
    let twice: Vec<usize> = (1..=sent as usize).filter(|n| seen[*n] > 1).collect();
    assert!(lost.is_empty(), "lines lost: {lost:?}");
    assert!(twice.is_empty(), "lines echoed more than once: {twice:?}");
}

fn three_registrars_five_pes(test: &str) -> Net {
    let mut net = Net::new(test, 3);
    for i in 0..3 {
        net.start_registrar(i, 0x1001 + i as u32);
    }
    // PE 0x21.. at registrars 0, 1, 2, 0, 1.
    for k in 0..5u32 {
        net.start_pe(0x21 + k, (k % 3) as usize);
    }
    net.wait_consistent("all three registrars hold the 5 PEs", 5);
    let s = net.statuses();
    let owned: Vec<u32> = s.iter().map(|s| s.map_or(0, |s| s.owned)).collect();
    assert_eq!(owned, vec![2, 2, 1], "each PE's home is its registrar");
    for st in s.iter().flatten() {
        assert_eq!(st.peers, 2, "static peers");
        assert_eq!(st.pools, 1);
    }
    net
}

#[test]
fn pool_user_fails_over_to_another_pe_without_losing_a_line() {
    let mut net = three_registrars_five_pes("pe-kill");
    let mut t = net.terminal(&[0, 1, 2]);
    let gap = Duration::from_millis(20);
    let mut answers = Vec::new();
    let mut sent = 0;
    feed(&mut t, &mut sent, 10, gap, &mut answers);
    let serving = answers.last().expect("echoes before the kill").pe;
    // Kill the serving PE with a line in flight, keep typing.
    sent += 1;
    t.send_line(&format!("line {sent}")).unwrap();
    let pos = net
        .pes
        .iter()
        .position(|(id, _)| *id == serving)
        .expect("serving PE is ours");
    let (_, mut victim) = net.pes.remove(pos);
    victim.kill();
    feed(&mut t, &mut sent, 20, gap, &mut answers);
    t.close_input();
    assert_eq!(
        t.proc.wait_timeout(LIMIT),
        Some(0),
        "rspterminal exits at the end of input once everything is answered"
    );
    let (rest, stderr) = t.rest_after_exit(LIMIT);
    answers.extend(rest);
    assert_all_echoed_once(&answers, sent);
    let after: Vec<u32> = answers
        .iter()
        .skip_while(|a| a.pe == serving)
        .map(|a| a.pe)
        .collect();
    assert!(!after.is_empty(), "answers from another PE after the kill");
    assert!(
        after.iter().all(|pe| *pe != serving),
        "the dead PE is never chosen again: {after:x?}"
    );
    let summary = stderr
        .into_iter()
        .find(|l| l.starts_with("rspterminal:"))
        .expect("summary line");
    assert!(
        summary.contains(&format!(
            "{sent} line(s) sent, {sent} answer(s), 1 failover(s)"
        )),
        "{summary}"
    );
    // The registrars drop the dead PE (its registrar association broke) everywhere.
    net.wait_consistent("the dead PE is gone from every registrar", 4);
}

#[test]
fn killed_registrar_is_taken_over_and_a_restarted_one_downloads_the_handlespace() {
    let mut net = three_registrars_five_pes("pr-kill");
    // Registrar 0 is home of PEs 0x21 and 0x24.
    let mut dead = net.regs[0].proc.take().expect("registrar 0 runs");
    dead.kill();
    net.wait_consistent("the two others hold all 5 PEs and own them (takeover)", 5);
    // The PEs of the dead registrar adopt the taker as their home: its keep-alive with the
    // H bit reached them over a TCP-mapping connection of kind 2 to their session port.
    for id in [0x21u32, 0x24] {
        let log = net.logs.join(format!("pe-{id:x}.log"));
        assert!(
            wait_for_log(&log, "home registrar changed: ? -> $0000100"),
            "PE {id:x} was not taken over: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    // The pool is still served.
    let mut t = net.terminal(&[1, 2]);
    let mut answers = Vec::new();
    let mut sent = 0;
    feed(
        &mut t,
        &mut sent,
        5,
        Duration::from_millis(50),
        &mut answers,
    );
    t.close_input();
    assert_eq!(t.proc.wait_timeout(LIMIT), Some(0));
    answers.extend(t.rest_after_exit(LIMIT).0);
    assert_all_echoed_once(&answers, sent);

    // Restart registrar 0 on the same ports with a new identifier: it finds its peers,
    // downloads the handlespace from its mentor; all three agree again.
    net.start_registrar(0, 0x1004);
    net.wait_until("the restarted registrar holds the 5 PEs", |s| {
        s[0].is_some_and(|s| s.pes == 5 && s.peers == 2)
    });
    net.wait_consistent("all three registrars agree on the 5 PEs", 5);
    let s = net.statuses();
    assert_eq!(
        s[0].map(|s| s.owned),
        Some(0),
        "the restarted registrar owns nothing: its PEs were taken over"
    );
    let log = std::fs::read_to_string(net.logs.join("registrar-1004.log")).unwrap();
    assert!(log.contains("PEs downloaded from mentor"), "{log}");
}

#[test]
fn pe_deregisters_on_sigterm_and_the_registrar_announces_itself() {
    let mut net = Net::new("announce", 1);
    // ASAP announces to a unicast loopback address the PE listens on (no multicast in tests).
    let announce = addr(free_ports(1).unwrap()[0]);
    let csp = net.monitor.addr().unwrap();
    let r = &net.regs[0];
    let args: Vec<String> = vec![
        "-identifier=0x1001".into(),
        format!("-asap={}", r.asap),
        format!("-enrp={}", r.enrp),
        format!("-asapannounce={announce}"),
        "-serverannouncecycle=200".into(),
        "-enrpannounce=off".into(),
        "-minaddressscope=loopback".into(),
        "-transport=tcp".into(),
        format!("-cspserver={csp}"),
        "-cspinterval=100".into(),
        "-quiet".into(),
        "-loglevel=3".into(),
    ];
    let log = net.logs.join("registrar-1001.log");
    net.regs[0].proc =
        Some(Proc::spawn(&net.dir, "rspregistrar", &args, "PR", Some(&log)).unwrap());
    // A PE with no -registrar=: it learns the registrar from the announces.
    let pe_args: Vec<String> = vec![
        "-echo".into(),
        "-identifier=0x31".into(),
        format!("-asapannounce={announce}"),
        "-local=127.0.0.1".into(),
        "-transport=tcp".into(),
        format!("-cspserver={csp}"),
        "-cspinterval=100".into(),
        "-quiet".into(),
        "-loglevel=3".into(),
    ];
    let pe_log = net.logs.join("pe-31.log");
    let mut pe = Proc::spawn(&net.dir, "rspserver", &pe_args, "PE 31", Some(&pe_log)).unwrap();
    net.wait_until("the PE registered through the announce", |s| {
        s[0].is_some_and(|s| s.pes == 1 && s.owned == 1)
    });
    // CSP: the PE reports its sessions and its registrar association; a pool user its
    // session to the PE.
    let pe_id = ComponentId::new(ComponentGroup::PoolElement, 0x31);
    let reg = net.regs[0].asap;
    let args: Vec<String> = vec![
        format!("-registrar={reg}"),
        "-asapannounce=off".into(),
        "-transport=tcp".into(),
        format!("-cspserver={csp}"),
        "-cspinterval=100".into(),
        "-cspidentifier=0x77".into(),
    ];
    let mut t = TerminalProc::spawn(&net.dir, &args).unwrap();
    t.send_line("csp").unwrap();
    assert!(t.next_answer(LIMIT).is_some_and(|a| a.pe == 0x31));
    let pu_id = ComponentId::new(ComponentGroup::PoolUser, 0x77);
    let end = Instant::now() + LIMIT;
    loop {
        net.monitor.poll(Duration::from_millis(50));
        let pe_ok = net.monitor.report(pe_id, FRESH).is_some_and(|r| {
            r.status.to_string_lossy() == "1 Session" && r.associations.iter().any(|a| a.ppid == 11)
        });
        let pu_ok = net.monitor.report(pu_id, FRESH).is_some_and(|r| {
            r.status.to_string_lossy() == "1 Session"
                && r.associations
                    .iter()
                    .any(|a| a.receiver_id == pe_id && a.ppid == 0)
        });
        if pe_ok && pu_ok {
            break;
        }
        assert!(
            Instant::now() < end,
            "CSP reports: PE {:?}, PU {:?}",
            net.monitor.report(pe_id, FRESH),
            net.monitor.report(pu_id, FRESH)
        );
    }
    t.close_input();
    assert_eq!(t.proc.wait_timeout(LIMIT), Some(0));
    assert_eq!(pe.stop(LIMIT), Some(0), "rspserver exits 0 after SIGTERM");
    let log = std::fs::read_to_string(&pe_log).unwrap();
    assert!(log.contains("deregistered (acknowledged: true)"), "{log}");
    net.wait_until("the registrar forgot the PE", |s| {
        s[0].is_some_and(|s| s.pes == 0)
    });
}

#[test]
fn daytime_and_discard_services() {
    let mut net = Net::new("services", 1);
    net.start_registrar(0, 0x1001);
    let reg = net.regs[0].asap;
    let common = |service: &str, id: &str| -> Vec<String> {
        vec![
            service.into(),
            format!("-identifier={id}"),
            format!("-registrar={reg}"),
            "-local=127.0.0.1".into(),
            "-asapannounce=off".into(),
            "-transport=tcp".into(),
            "-quiet".into(),
        ]
    };
    let _daytime = Proc::spawn(
        &net.dir,
        "rspserver",
        &common("-daytime", "0x41"),
        "daytime",
        None,
    )
    .unwrap();
    let _discard = Proc::spawn(
        &net.dir,
        "rspserver",
        &common("-discard", "0x42"),
        "discard",
        None,
    )
    .unwrap();
    net.wait_until("both PEs registered", |s| s[0].is_some_and(|s| s.pes == 2));
    // Daytime: every connection brings one line, then the PE closes and the PU fails over
    // to it again (RSPLIB's endless sequence).
    let args: Vec<String> = vec![
        format!("-registrar={reg}"),
        "-asapannounce=off".into(),
        "-transport=tcp".into(),
        "-poolhandle=DaytimePool".into(),
    ];
    let t = TerminalProc::spawn(&net.dir, &args).unwrap();
    let mut lines = Vec::new();
    let end = Instant::now() + LIMIT;
    while lines.len() < 3 && Instant::now() < end {
        if let Some(a) = t.next_answer(Duration::from_millis(200)) {
            lines.push(a);
        }
    }
    assert_eq!(lines.len(), 3, "three daytime lines");
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    for a in &lines {
        assert_eq!(a.pe, 0x41);
        let (day, rest) = a.text.split_once(", ").expect("weekday, date");
        assert!(DAYS.contains(&day), "{a:?}");
        // dd-Month-yyyy hh:mm:ss.uuuuuu
        let (date, time) = rest.split_once(' ').expect("date time");
        assert_eq!(date.split('-').count(), 3, "{a:?}");
        assert_eq!(time.len(), 15, "{a:?}");
    }
    drop(t);
    // Discard: nothing comes back; the terminal exits at the end of input without a
    // failover (no response timeout for DiscardPool).
    let args: Vec<String> = vec![
        format!("-registrar={reg}"),
        "-asapannounce=off".into(),
        "-transport=tcp".into(),
        "-poolhandle=DiscardPool".into(),
    ];
    let mut t = TerminalProc::spawn(&net.dir, &args).unwrap();
    for i in 0..5 {
        t.send_line(&format!("gone {i}")).unwrap();
    }
    t.close_input();
    assert_eq!(t.proc.wait_timeout(LIMIT), Some(0));
    let (answers, stderr) = t.rest_after_exit(LIMIT);
    assert!(answers.is_empty());
    let summary = stderr
        .into_iter()
        .find(|l| l.starts_with("rspterminal:"))
        .expect("summary");
    assert!(
        summary.contains("5 line(s) sent, 0 answer(s), 0 failover(s)"),
        "{summary}"
    );
    // Character Generator: 1024-byte messages as fast as the pool user reads them.
    let _chargen = Proc::spawn(
        &net.dir,
        "rspserver",
        &common("-chargen", "0x43"),
        "chargen",
        None,
    )
    .unwrap();
    net.wait_until("the chargen PE registered", |s| {
        s[0].is_some_and(|s| s.pes == 3)
    });
    let args: Vec<String> = vec![
        format!("-registrar={reg}"),
        "-asapannounce=off".into(),
        "-transport=tcp".into(),
        "-poolhandle=CharGenPool".into(),
    ];
    let t = TerminalProc::spawn(&net.dir, &args).unwrap();
    let expected: String = (0..1024u32)
        .map(|i| 30 + (i % 98) as u8)
        .map(char::from)
        .collect();
    let mut n = 0;
    let end = Instant::now() + LIMIT;
    while n < 1000 && Instant::now() < end {
        if let Some(a) = t.next_answer(Duration::from_millis(200)) {
            assert_eq!(a.pe, 0x43);
            assert_eq!(a.text, expected);
            n += 1;
        }
    }
    assert_eq!(n, 1000, "chargen messages");
}
