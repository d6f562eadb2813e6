//! `rserpool-demo`: a whole RSerPool on 127.0.0.1 in a few seconds, with the programs as
//! child processes (taken from the directory of the demo's own executable, or
//! `$RSERPOOL_BIN_DIR`), over the TCP mapping:
//!
//! 1. a registrar (`rspregistrar`, CSP reports to the demo),
//! 2. three echo pool elements (`rspserver -echo`),
//! 3. a pool user (`rspterminal`) fed a line every `--interval` ms,
//! 4. the pool element serving the pool user is killed with SIGKILL (with a line sent just
//!    before and one just after the kill, so that the time measured is the failover's and
//!    not the wait for the next input line); the demo prints how long it took from the kill
//!    to the first echo from the next PE, and checks that every line was echoed (none lost),
//! 5. with `--runs=N` steps 4 and a replacement PE repeat N times (median, min, max),
//! 6. everything is stopped cleanly (SIGTERM: the PEs deregister).
//!
//! Exit code 0 when every failover happened and no line was lost, 1 otherwise.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use rserpool_proto::csp::ComponentId;

use super::cluster::{
    CspMonitor, PROGRAMS, Proc, Programs, RUN_PROGRAM, TerminalProc, bin_dir, free_ports,
    wait_for_listener,
};

/// Options of `rserpool-demo`.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "rserpool-demo",
    version,
    about = "Local RSerPool demo: registrar, three echo PEs, a pool user; kill the serving PE and time the failover"
)]
pub struct DemoOptions {
    /// Failovers to measure (each kills the serving PE and starts a replacement)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Milliseconds between two input lines of the pool user
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub interval: u64,
    /// Directory with rspregistrar, rspserver and rspterminal (default: next to this program)
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the programs' logs in this directory
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
}

const STEP_LIMIT: Duration = Duration::from_secs(5);
const CSP_AGE: Duration = Duration::from_millis(500);

struct Demo {
    dir: Programs,
    log_dir: Option<PathBuf>,
    asap: SocketAddr,
    monitor: CspMonitor,
    registrar: Option<Proc>,
    pes: Vec<(u32, Proc)>,
    next_pe: u32,
    lines_sent: u64,
}

/// One line of the demo's report (a closed standard output is no reason to stop).
fn say(text: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

impl Demo {
    fn log_file(&self, name: &str) -> Option<PathBuf> {
        self.log_dir.as_ref().map(|d| d.join(format!("{name}.log")))
    }

    fn start_registrar(&mut self, enrp: SocketAddr) -> io::Result<ComponentId> {
        let csp = self.monitor.addr()?;
        let args: Vec<String> = [
            format!("-asap={}", self.asap),
            format!("-enrp={enrp}"),
            "-asapannounce=off".into(),
            "-enrpannounce=off".into(),
            "-minaddressscope=loopback".into(),
            "-transport=tcp".into(),
            format!("-cspserver={csp}"),
            "-cspinterval=100".into(),
            "-quiet".into(),
            "-loglevel=3".into(),
        ]
        .into();
        let log = self.log_file("rspregistrar");
        self.registrar = Some(Proc::spawn(
            &self.dir,
            "rspregistrar",
            &args,
            "rspregistrar",
            log.as_deref(),
        )?);
        if !wait_for_listener(self.asap, STEP_LIMIT) {
            return Err(io::Error::other("the registrar did not start"));
        }
        let mut id = None;
        self.monitor.wait_until(STEP_LIMIT, CSP_AGE, |r| {
            id = r.first().map(|(id, _)| *id);
            id.is_some()
        });
        id.ok_or_else(|| io::Error::other("no CSP report from the registrar"))
    }

    fn start_pe(&mut self) -> io::Result<u32> {
        let id = self.next_pe;
        self.next_pe += 1;
        let args: Vec<String> = [
            "-echo".into(),
            format!("-identifier={id:#x}"),
            format!("-registrar={}", self.asap),
            "-local=127.0.0.1".into(),
            "-asapannounce=off".into(),
            "-transport=tcp".into(),
            "-quiet".into(),
            "-loglevel=3".into(),
        ]
        .into();
        let name = format!("rspserver-{id:08x}");
        let log = self.log_file(&name);
        let p = Proc::spawn(&self.dir, "rspserver", &args, name, log.as_deref())?;
        self.pes.push((id, p));
        Ok(id)
    }

    /// Waits until the registrar reports `n` PEs.
    fn wait_pes(&mut self, reg: ComponentId, n: u32) -> bool {
        self.monitor.wait_until(STEP_LIMIT, CSP_AGE, |r| {
            r.iter().any(|(id, s)| *id == reg && s.pes == n)
        })
    }

    fn send(&mut self, t: &mut TerminalProc) -> io::Result<()> {
        self.lines_sent += 1;
        t.send_line(&format!("line {}", self.lines_sent))
    }
}

/// Median of a non-empty sorted list.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn run(opts: &DemoOptions) -> io::Result<bool> {
    let dir = match &opts.bin_dir {
        Some(d) => Programs::in_dir(d),
        None => {
            let d = Programs::in_dir(bin_dir());
            if d.complete() {
                d
            } else {
                // The separate binaries were not built: this executable runs them itself.
                Programs::MultiCall(std::env::current_exe()?)
            }
        }
    };
    if !dir.complete() {
        return Err(io::Error::other(format!(
            "{PROGRAMS:?} not found in {dir} (cargo build -p rserpool-mio --bins)"
        )));
    }
    if let Some(d) = &opts.log_dir {
        std::fs::create_dir_all(d)?;
    }
    let ports = free_ports(2)?;
    let asap = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let enrp = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let mut d = Demo {
        dir,
        log_dir: opts.log_dir.clone(),
        asap,
        monitor: CspMonitor::new()?,
        registrar: None,
        pes: Vec::new(),
        next_pe: 0x11,
        lines_sent: 0,
    };
    let start = Instant::now();
    say(format_args!(
        "rserpool demo on 127.0.0.1 over the TCP mapping (programs: {})",
        d.dir
    ));
    let reg = d.start_registrar(enrp)?;
    say(format_args!(
        "  registrar ${:08x}: ASAP {asap}, ENRP {enrp}",
        reg.object()
    ));
    for _ in 0..3 {
        d.start_pe()?;
    }
    if !d.wait_pes(reg, 3) {
        return Err(io::Error::other("the three PEs did not register"));
    }
    let status = d
        .monitor
        .report(reg, CSP_AGE)
        .map(|r| r.status.to_string_lossy())
        .unwrap_or_default();
    say(format_args!(
        "  echo PEs $00000011, $00000012, $00000013 registered; registrar status: \"{status}\""
    ));

    let targs: Vec<String> = [
        format!("-registrar={asap}"),
        "-asapannounce=off".into(),
        "-transport=tcp".into(),
        "-poolhandle=EchoPool".into(),
        format!("-loglevel={}", if d.log_dir.is_some() { 4 } else { 1 }),
    ]
    .into();
    let mut term = TerminalProc::spawn(&d.dir, &targs)?;
    let interval = Duration::from_millis(opts.interval);
    let mut answers = Vec::new();
    // Warm up: lines until the first echo.
    let until = Instant::now() + STEP_LIMIT;
    while answers.is_empty() && Instant::now() < until {
        d.send(&mut term)?;
        if let Some(a) = term.next_answer(interval) {
            answers.push(a);
        }
    }
    let Some(first) = answers.first().cloned() else {
        return Err(io::Error::other("the pool user got no echo"));
    };
    say(format_args!(
        "  rspterminal resolved EchoPool: served by PE ${:08x} (\"{}\" came back)",
        first.pe, first.text
    ));

    let mut times: Vec<f64> = Vec::new();
    let mut failed_runs = 0;
    for run in 1..=opts.runs {
        // A few lines in steady state, then kill the PE serving right now.
        for _ in 0..5 {
            d.send(&mut term)?;
            std::thread::sleep(interval);
            answers.extend(term.answers_now());
        }
        let serving = answers.last().map_or(first.pe, |a| a.pe);
        let Some(pos) = d.pes.iter().position(|(id, _)| *id == serving) else {
            return Err(io::Error::other(format!(
                "PE ${serving:08x} is not one of ours"
            )));
        };
        let (_, mut victim) = d.pes.remove(pos);
        // One line in flight at the moment of the kill.
        d.send(&mut term)?;
        let pid = victim.pid();
        let killed_at = Instant::now();
        victim.kill();
        // And one right after it: the time measured is the failover's, not the wait for
        // the next input line.
        d.send(&mut term)?;
        let mut next: Option<super::cluster::Answer> = None;
        let mut next_line = Instant::now() + interval;
        while next.is_none() && killed_at.elapsed() < STEP_LIMIT {
            let wait = next_line.saturating_duration_since(Instant::now());
            if let Some(a) = term.next_answer(wait) {
                let other = a.pe != serving;
                answers.push(a.clone());
                if other {
                    next = Some(a);
                }
            }
            if Instant::now() >= next_line {
                d.send(&mut term)?;
                next_line += interval;
            }
        }
        match next {
            Some(a) => {
                let ms = a.at.duration_since(killed_at).as_secs_f64() * 1000.0;
                times.push(ms);
                say(format_args!(
                    "  run {run}: kill -9 PE ${serving:08x} (pid {pid}) -> first echo from PE ${:08x} after {ms:.2} ms",
                    a.pe
                ));
            }
            None => {
                failed_runs += 1;
                say(format_args!(
                    "  run {run}: kill -9 PE ${serving:08x}: NO echo from another PE within {} s",
                    STEP_LIMIT.as_secs()
                ));
            }
        }
        if run < opts.runs {
            d.start_pe()?;
            if !d.wait_pes(reg, 3) {
                return Err(io::Error::other("the replacement PE did not register"));
            }
        }
    }

    // The end of input: rspterminal exits once every line is answered.
    term.close_input();
    let code = term.proc.wait_timeout(Duration::from_secs(10));
    let (rest, stderr) = term.rest_after_exit(Duration::from_secs(2));
    answers.extend(rest);
    if let Some(f) = d.log_file("rspterminal") {
        std::fs::write(f, stderr.join("\n") + "\n")?;
    }
    let failovers = stderr.into_iter().find(|l| l.starts_with("rspterminal:"));
    let mut seen = vec![0u32; usize::try_from(d.lines_sent).unwrap_or(0) + 1];
    for a in &answers {
        if let Some(n) = a
            .text
            .strip_prefix("line ")
            .and_then(|n| n.parse::<usize>().ok())
            && let Some(c) = seen.get_mut(n)
        {
            *c += 1;
        }
    }
    let lost = seen.iter().skip(1).filter(|c| **c == 0).count();
    let dup = seen.iter().skip(1).filter(|c| **c > 1).count();
    say(format_args!(
        "  lines sent {}, echoed {}, lost {lost}, echoed twice {dup}",
        d.lines_sent,
        answers.len()
    ));
    if let Some(s) = failovers {
        say(format_args!("  {s}"));
    }
    times.sort_by(f64::total_cmp);
    if !times.is_empty() {
        say(format_args!(
            "  failover (kill -> first echo from the next PE): median {:.2} ms, min {:.2} ms, max {:.2} ms over {} run(s)",
            median(&times),
            times[0],
            times[times.len() - 1],
            times.len()
        ));
    }

    // Clean stop: PEs deregister, then the registrar.
    for (_, p) in &d.pes {
        let _ = p.signal("TERM");
    }
    let mut clean = 0;
    for (_, p) in &mut d.pes {
        if p.wait_timeout(Duration::from_secs(4)) == Some(0) {
            clean += 1;
        }
    }
    let reg_code = d
        .registrar
        .as_mut()
        .and_then(|r| r.stop(Duration::from_secs(2)));
    say(format_args!(
        "  stopped: rspterminal exit {}, {clean}/{} PEs deregistered and exited, registrar exit {}; {:.1} s in all",
        code.map_or_else(|| "-".into(), |c| c.to_string()),
        d.pes.len(),
        reg_code.map_or_else(|| "-".into(), |c| c.to_string()),
        start.elapsed().as_secs_f64()
    ));
    Ok(failed_runs == 0 && lost == 0 && !times.is_empty())
}

/// `rserpool-demo`: with `--run-program NAME ARGS…` it is that program (so that the demo
/// works from `cargo run` without the other binaries), else the demo.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let mut rest: Vec<std::ffi::OsString> = args.collect();
    if rest.first().is_some_and(|a| a == RUN_PROGRAM) && rest.len() >= 2 {
        let name = rest.remove(1);
        rest.remove(0);
        let argv = std::iter::once(name.clone()).chain(rest);
        return match name.to_str() {
            Some("rspregistrar") => {
                super::registrar::main_with(crate::cli::parse_from_or_exit(argv))
            }
            Some("rspserver") => super::server::main_with(crate::cli::parse_from_or_exit(argv)),
            Some("rspterminal") => super::terminal::main_with(crate::cli::parse_from_or_exit(argv)),
            _ => super::common::fail("rserpool-demo", &format!("no program {name:?}")),
        };
    }
    main_with(DemoOptions::parse_from(std::iter::once(argv0).chain(rest)))
}

/// `rserpool-demo` with parsed options.
pub fn main_with(opts: DemoOptions) -> ExitCode {
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            say(format_args!(
                "demo FAILED: a failover did not happen or a line was lost"
            ));
            ExitCode::FAILURE
        }
        Err(e) => super::common::fail("rserpool-demo", &e),
    }
}
