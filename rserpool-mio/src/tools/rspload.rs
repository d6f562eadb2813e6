//! `rspload`: the registrar load generator (`shared/design/rsplib-measured.md`, "Registrar
//! under ASAP load").
//!
//! It speaks plain ASAP, encoded with `rserpool-proto`, over one
//! [`Transports`] in one mio loop — no pool element or pool user machine — so that tens of
//! thousands of associations cost little:
//!
//! 1. **Registration.** `pes` PEs, each on its own association (channel kind 1), register
//!    in one pool with unique PE identifiers (a random base + index). At most
//!    `registration_window` registrations are in progress at once (connect + Registration
//!    without its response), optionally paced to `registration_rate` per second; one that
//!    takes longer than `registration_timeout` is aborted and counted as failed. Every PE
//!    answers each ASAP_ENDPOINT_KEEP_ALIVE with an ASAP_ENDPOINT_KEEP_ALIVE_ACK, from now
//!    until the end.
//! 2. **Measurement** for `duration`: in [`RspLoadMode::Resolve`], `assocs` pool-user
//!    associations each keep `outstanding` ASAP_HANDLE_RESOLUTIONs in flight (a new one
//!    leaves when an answer arrives). An answer counts only if it names at least one PE and
//!    every PE it names is one of ours and registered; anything else is an error. Latency is
//!    measured per answer (the registrar answers in order on each association). In
//!    [`RspLoadMode::KeepaliveOnly`] the PEs are just held (keep-alive cost).
//! 3. **Teardown**: every association is closed gracefully (the registrar drops the PEs).
//!
//! A PE is *lost* when its association goes down after it was registered and before the
//! teardown (the registrar aborted it, e.g. after a keep-alive it did not get an answer for);
//! a pool-user association going down before the teardown counts as *aborted*. With a
//! registrar process id, the registrar's CPU time (utime + stime from `/proc/PID/stat`) over
//! the measurement gives the CPU time per resolution or per keep-alive (all of the
//! registrar's CPU time divided by the count: keep-alives and SCTP heartbeats of the PEs are
//! included in the per-resolution figure, as in `rsplib-measured.md`). `rspload_cpu_percent`
//! shows our own share: on a one-CPU VM the generator competes with the registrar.
//!
//! Registered addresses: each PE registers the local addresses and port of its own
//! association as its user transport (SCTP: every address of the socket; TCP mapping: the
//! connected address, as a TCP Transport). RSPLIB's registrar ignores loopback addresses
//! and refuses a registration left without a usable address ("invalid value"), so against
//! RSPLIB use a registrar address on a non-loopback interface (or a host that has one: the
//! SCTP socket then lists all its addresses). The same holds for `hsdump`.

use crate::cli::TerminationSignals;
use crate::cli::tools::RspLoadMode;
use crate::transport::{TransportConfig, TransportEvent, TransportKind, Transports};
use bytes::Bytes;
use mio::{Events, Interest, Poll, Token};
use rserpool_core::{AssocId, Protocol};
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{
    EndpointKeepAliveAck, HandleResolution, HandleResolutionResponse, Registration,
};
use rserpool_proto::ids::{PeIdentifier, PoolHandle};
use rserpool_proto::param::PoolElementParameter;
use rserpool_proto::policy::Policy;
use rserpool_proto::rtf::ChannelKind;
use rserpool_proto::transport::{
    TRANSPORT_USE_DATA_PLUS_CONTROL, TransportParameter, TransportProtocol,
};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What to do (see the [module documentation](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadConfig {
    /// The registrar's ASAP endpoint (several addresses: SCTP multi-homing / tried in turn).
    pub registrar: Vec<SocketAddr>,
    /// Transport of every association.
    pub kind: TransportKind,
    /// What to measure.
    pub mode: RspLoadMode,
    /// PEs to register.
    pub pes: u32,
    /// Pool-user associations.
    pub assocs: u32,
    /// Handle resolutions in flight per pool-user association.
    pub outstanding: u32,
    /// The pool.
    pub pool_handle: PoolHandle,
    /// The PEs' policy.
    pub policy: Policy,
    /// Measurement time.
    pub duration: Duration,
    /// Registrations started per second (`None`: as fast as the window allows).
    pub registration_rate: Option<f64>,
    /// Registrations in progress at once.
    pub registration_window: u32,
    /// Longest time from connect to Registration Response.
    pub registration_timeout: Duration,
    /// How long pool-user associations may take to come up.
    pub connect_timeout: Duration,
    /// The registrar's process id, for its CPU time.
    pub registrar_pid: Option<u32>,
    /// Transport settings.
    pub transport: TransportConfig,
}

impl LoadConfig {
    /// Defaults matching `rsplib-measured.md`: 1,000 PEs, 4 associations × 8 outstanding,
    /// Round Robin, 10 s.
    pub fn new(registrar: Vec<SocketAddr>, kind: TransportKind) -> Self {
        LoadConfig {
            registrar,
            kind,
            mode: RspLoadMode::Resolve,
            pes: 1000,
            assocs: 4,
            outstanding: 8,
            pool_handle: PoolHandle::from("LoadPool"),
            policy: Policy::RoundRobin,
            duration: Duration::from_secs(10),
            registration_rate: None,
            registration_window: 256,
            registration_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            registrar_pid: None,
            transport: TransportConfig::default(),
        }
    }
}

/// A latency histogram: exact below 1,024 µs, then 1,024 buckets per power of two (relative
/// error below 0.1 %), up to about 2^40 µs.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const SUB_BITS: u32 = 10;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; (SUB as usize) * 32],
            count: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros() - SUB_BITS; // ≥ 0
        let mantissa = (v >> exp) - SUB; // in [0, SUB)
        ((exp as u64 + 1) * SUB + mantissa) as usize
    }

    fn lower_bound(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let exp = i / SUB - 1;
        (SUB + i % SUB) << exp
    }

    /// Records one value (µs).
    pub fn record(&mut self, v: u64) {
        let i = Self::index(v).min(self.buckets.len() - 1);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
            self.count += 1;
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), as the lower bound of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::lower_bound(i));
            }
        }
        None
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// PEs asked for.
    pub pes: u32,
    /// PEs registered.
    pub registrations: u64,
    /// PEs whose registration failed (connect failure, reject, timeout, association down).
    pub registration_failures: u64,
    /// From the first connect to the last Registration Response.
    pub registration_time: Duration,
    /// Valid handle resolution answers during the measurement.
    pub resolutions: u64,
    /// Length of the measurement.
    pub measured: Duration,
    /// Latency of the counted answers.
    pub latency: Histogram,
    /// Wrong or failed answers, ASAP errors, undecodable messages, registration failures.
    pub errors: u64,
    /// Registered PEs whose association went down before the teardown.
    pub pes_lost: u64,
    /// Pool-user associations that failed or went down before the teardown.
    pub pu_assocs_aborted: u64,
    /// Endpoint Keep-Alives answered during the measurement.
    pub keepalives: u64,
    /// Endpoint Keep-Alives answered in the whole run.
    pub keepalives_total: u64,
    /// The registrar's CPU time during the measurement.
    pub registrar_cpu: Option<Duration>,
    /// Our own CPU time during the measurement.
    pub own_cpu: Option<Duration>,
    /// The registrar's resident set size (`VmRSS`, KiB) before the first registration.
    pub registrar_rss_before_kib: Option<u64>,
    /// The registrar's resident set size (KiB) with every PE registered (measurement start).
    pub registrar_rss_kib: Option<u64>,
    /// The anonymous part of the registrar's resident set (`RssAnon`, KiB: its heap and
    /// other private memory, without the pages of its program and libraries) before the
    /// first registration.
    pub registrar_anon_before_kib: Option<u64>,
    /// `RssAnon` (KiB) with every PE registered (measurement start).
    pub registrar_anon_kib: Option<u64>,
    /// The measurement was cut short by a signal.
    pub interrupted: bool,
}

fn per_s(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

impl LoadReport {
    /// Registrations per second.
    pub fn registrations_per_s(&self) -> f64 {
        per_s(self.registrations, self.registration_time)
    }

    /// Counted resolutions per second.
    pub fn resolutions_per_s(&self) -> f64 {
        per_s(self.resolutions, self.measured)
    }

    /// Keep-alives answered per second during the measurement.
    pub fn keepalives_per_s(&self) -> f64 {
        per_s(self.keepalives, self.measured)
    }

    /// The figures, one per line: `NAME VALUE UNIT`.
    pub fn figures(&self) -> String {
        let mut s = String::new();
        let mut line = |name: &str, value: String, unit: &str| {
            let _ = writeln!(s, "{name} {value} {unit}");
        };
        line("pes", self.pes.to_string(), "count");
        line("registrations", self.registrations.to_string(), "count");
        line(
            "registration_failures",
            self.registration_failures.to_string(),
            "count",
        );
        line(
            "registrations_per_s",
            format!("{:.1}", self.registrations_per_s()),
            "1/s",
        );
        line(
            "measured",
            format!("{:.3}", self.measured.as_secs_f64()),
            "s",
        );
        line("resolutions", self.resolutions.to_string(), "count");
        line(
            "resolutions_per_s",
            format!("{:.1}", self.resolutions_per_s()),
            "1/s",
        );
        if let (Some(p50), Some(p99)) = (self.latency.quantile(0.5), self.latency.quantile(0.99)) {
            line("latency_p50", p50.to_string(), "us");
            line("latency_p99", p99.to_string(), "us");
        }
        line("errors", self.errors.to_string(), "count");
        line("pes_lost", self.pes_lost.to_string(), "count");
        line(
            "pu_assocs_aborted",
            self.pu_assocs_aborted.to_string(),
            "count",
        );
        line("keepalives", self.keepalives.to_string(), "count");
        line(
            "keepalives_per_s",
            format!("{:.1}", self.keepalives_per_s()),
            "1/s",
        );
        if let Some(cpu) = self.registrar_cpu {
            line("registrar_cpu", format!("{:.3}", cpu.as_secs_f64()), "s");
            line(
                "registrar_cpu_percent",
                format!("{:.1}", 100.0 * per_s(1, self.measured) * cpu.as_secs_f64()),
                "%",
            );
            if self.resolutions > 0 {
                line(
                    "registrar_cpu_per_resolution",
                    format!("{:.1}", cpu.as_secs_f64() * 1e6 / self.resolutions as f64),
                    "us",
                );
            }
            if self.keepalives > 0 {
                line(
                    "registrar_cpu_per_keepalive",
                    format!("{:.1}", cpu.as_secs_f64() * 1e6 / self.keepalives as f64),
                    "us",
                );
            }
        }
        for (name, before, with_pes) in [
            (
                "registrar_rss",
                self.registrar_rss_before_kib,
                self.registrar_rss_kib,
            ),
            (
                "registrar_anon",
                self.registrar_anon_before_kib,
                self.registrar_anon_kib,
            ),
        ] {
            let (Some(a), Some(b)) = (before, with_pes) else {
                continue;
            };
            line(&format!("{name}_before"), a.to_string(), "KiB");
            line(name, b.to_string(), "KiB");
            if self.registrations > 0 {
                line(
                    &format!("{name}_per_pe"),
                    format!(
                        "{:.0}",
                        (b as f64 - a as f64) * 1024.0 / self.registrations as f64
                    ),
                    "B",
                );
            }
        }
        if let Some(cpu) = self.own_cpu {
            line(
                "rspload_cpu_percent",
                format!("{:.1}", 100.0 * per_s(1, self.measured) * cpu.as_secs_f64()),
                "%",
            );
        }
        s
    }

    /// A human summary (lines starting with `# `).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# {} of {} PEs registered in {:.2} s ({:.0}/s), {} failed",
            self.registrations,
            self.pes,
            self.registration_time.as_secs_f64(),
            self.registrations_per_s(),
            self.registration_failures
        );
        let lat = match (self.latency.quantile(0.5), self.latency.quantile(0.99)) {
            (Some(a), Some(b)) => format!(", latency p50 {a} µs, p99 {b} µs"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "# {} resolutions in {:.2} s ({:.0}/s){lat}; {} keep-alives answered ({:.0}/s)",
            self.resolutions,
            self.measured.as_secs_f64(),
            self.resolutions_per_s(),
            self.keepalives,
            self.keepalives_per_s()
        );
        let _ = writeln!(
            s,
            "# {} errors, {} PEs lost, {} pool-user associations aborted{}",
            self.errors,
            self.pes_lost,
            self.pu_assocs_aborted,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        if let Some(cpu) = self.registrar_cpu {
            let _ = writeln!(
                s,
                "# registrar CPU {:.3} s ({:.1} %)",
                cpu.as_secs_f64(),
                100.0 * per_s(1, self.measured) * cpu.as_secs_f64()
            );
        }
        s
    }
}

/// CPU time (user + system) of process `pid` from `/proc/PID/stat`, counted in USER_HZ = 100
/// ticks per second (the unit Linux uses for these fields on every common architecture).
pub fn process_cpu_time(pid: Option<u32>) -> io::Result<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path)?;
    parse_cpu_ticks(&text)
        .map(|ticks| Duration::from_millis(ticks.saturating_mul(10)))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat format"))
}

/// Resident memory (KiB) of process `pid`, from one read of `/proc/PID/status`: the
/// resident set size (`VmRSS`) and its anonymous part (`RssAnon`: heap and other private
/// memory, without the pages of the program and its libraries, which a run pages in as it
/// first uses their code). `None` for no process, or no such line.
pub fn process_resident_kib(pid: Option<u32>) -> (Option<u64>, Option<u64>) {
    let Some(text) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
    else {
        return (None, None);
    };
    (
        parse_status_kib(&text, "VmRSS:"),
        parse_status_kib(&text, "RssAnon:"),
    )
}

/// The value (KiB) of the `key` line (e.g. `VmRSS:`) of a `/proc/PID/status` text.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line; the command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace();
    // rest starts at field 3 (state): utime is field 14, i.e. index 11.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeState {
    Idle,
    Registering,
    Registered,
    Failed,
    Lost,
}

#[derive(Debug)]
struct PeSlot {
    assoc: Option<AssocId>,
    state: PeState,
}

#[derive(Debug, Default)]
struct PuSlot {
    assoc: Option<AssocId>,
    up: bool,
    gone: bool,
    sent: VecDeque<Instant>,
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Pe(usize),
    Pu(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Registering,
    Connecting { until: Instant },
    Measuring { end: Instant },
    Closing { until: Instant },
    Done,
}

const SIGNAL_TOKEN: Token = Token(0);
const TOKEN_BASE: usize = 1;

struct Gen {
    cfg: LoadConfig,
    poll: Poll,
    transports: Transports,
    tev: Vec<TransportEvent>,
    roles: HashMap<AssocId, Role>,
    pes: Vec<PeSlot>,
    pus: Vec<PuSlot>,
    base_id: u32,
    next_pe: usize,
    in_flight: usize,
    reg_started_at: Option<Instant>,
    reg_deadlines: VecDeque<(Instant, usize)>,
    settled: usize,
    last_registration: Option<Instant>,
    phase: Phase,
    measure_start: Option<Instant>,
    cpu_start: (Option<Duration>, Option<Duration>),
    hr_message: Bytes,
    report: LoadReport,
    signals: Option<TerminationSignals>,
    /// The time of this wake-up (one clock read per wake-up: answers are timed by it).
    now: Instant,
}

/// Runs the load (see the [module documentation](self)). `signals` (SIGINT/SIGTERM) cut the
/// measurement short: the figures so far are reported.
pub fn run(cfg: LoadConfig, mut signals: Option<TerminationSignals>) -> io::Result<LoadReport> {
    let poll = Poll::new()?;
    if let Some(s) = signals.as_mut() {
        poll.registry()
            .register(s, SIGNAL_TOKEN, Interest::READABLE)?;
    }
    let sockets = cfg.pes as usize + cfg.assocs as usize + 16;
    let transports = Transports::new(
        poll.registry(),
        TOKEN_BASE..TOKEN_BASE + sockets,
        cfg.transport.clone(),
    )?;
    let n = cfg.pes;
    // PE ids base..base+n, none of them 0.
    let span = u32::MAX - n.min(u32::MAX - 1);
    let base_id = 1 + super::random_u32() % span;
    let hr_message = AsapMessage::HandleResolution(HandleResolution {
        pool_handle: cfg.pool_handle.clone(),
        ..HandleResolution::default()
    })
    .to_bytes();
    let mut g = Gen {
        pes: (0..n)
            .map(|_| PeSlot {
                assoc: None,
                state: PeState::Idle,
            })
            .collect(),
        pus: Vec::new(),
        poll,
        transports,
        tev: Vec::new(),
        roles: HashMap::with_capacity(sockets),
        base_id,
        next_pe: 0,
        in_flight: 0,
        reg_started_at: None,
        reg_deadlines: VecDeque::new(),
        settled: 0,
        last_registration: None,
        phase: Phase::Registering,
        measure_start: None,
        cpu_start: (None, None),
        hr_message,
        report: LoadReport {
            pes: n,
            ..LoadReport::default()
        },
        signals,
        cfg,
        now: Instant::now(),
    };
    // One write per association and wake-up (flushed before every poll).
    g.transports.set_write_batching(true);
    g.run()?;
    Ok(g.report)
}

impl Gen {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(4096);
        let started = Instant::now();
        self.reg_started_at = Some(started);
        (
            self.report.registrar_rss_before_kib,
            self.report.registrar_anon_before_kib,
        ) = process_resident_kib(self.cfg.registrar_pid);
        info!(
            "registering {} PEs with ids from {:#010x} at {:?}",
            self.pes.len(),
            self.base_id,
            self.cfg.registrar
        );
        let mut now = started;
        loop {
            self.now = now;
            self.advance(now);
            if self.phase == Phase::Done {
                return Ok(());
            }
            self.transports.flush_pending();
            let wait = self
                .next_wakeup(now)
                .map(|t| t.saturating_duration_since(now));
            let wait = wait.map_or(Duration::from_millis(100), |w| {
                w.min(Duration::from_millis(100))
            });
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            now = Instant::now();
            self.now = now;
            self.transports.set_time(now);
            for ev in events.iter() {
                if ev.token() == SIGNAL_TOKEN {
                    let got = self
                        .signals
                        .as_mut()
                        .is_some_and(|s| s.pending().count() > 0);
                    if got {
                        self.interrupt(now);
                    }
                } else {
                    self.transports.handle_event(ev, now, &mut self.tev);
                }
            }
            self.transports.handle_timeout(now, &mut self.tev);
            let mut tev = std::mem::take(&mut self.tev);
            for e in tev.drain(..) {
                self.on_event(e);
            }
            self.tev = tev;
        }
    }

    fn interrupt(&mut self, now: Instant) {
        info!("interrupted");
        self.report.interrupted = true;
        match self.phase {
            Phase::Closing { .. } | Phase::Done => self.phase = Phase::Done,
            _ => self.finish_measurement(now),
        }
    }

    fn next_wakeup(&mut self, now: Instant) -> Option<Instant> {
        let mut w = self.transports.poll_timeout();
        let mut at = |t: Instant| w = Some(w.map_or(t, |x: Instant| x.min(t)));
        if let Some((d, _)) = self.reg_deadlines.front() {
            at(*d);
        }
        match self.phase {
            Phase::Registering => {
                if let (Some(rate), Some(s)) = (self.cfg.registration_rate, self.reg_started_at)
                    && self.next_pe < self.pes.len()
                {
                    let due = s + Duration::from_secs_f64(self.next_pe as f64 / rate);
                    at(due.max(now));
                }
            }
            Phase::Connecting { until } | Phase::Closing { until } => at(until),
            Phase::Measuring { end } => at(end),
            Phase::Done => {}
        }
        w
    }

    /// Starts what is due and moves between phases.
    fn advance(&mut self, now: Instant) {
        // Registrations that took too long.
        while let Some(&(d, i)) = self.reg_deadlines.front() {
            if d > now {
                break;
            }
            self.reg_deadlines.pop_front();
            if self
                .pes
                .get(i)
                .is_some_and(|p| p.state == PeState::Registering)
            {
                warn!("PE {i}: no registration response in time");
                if let Some(a) = self.pes.get(i).and_then(|p| p.assoc) {
                    self.transports.close(a, true);
                    self.roles.remove(&a);
                }
                self.registration_failed(i);
            }
        }
        match self.phase {
            Phase::Registering => {
                self.start_registrations(now);
                if self.settled == self.pes.len() {
                    self.registration_done(now);
                }
            }
            Phase::Connecting { until } => {
                let pending = self.pus.iter().any(|p| !p.up && !p.gone);
                if !pending || now >= until {
                    if pending {
                        warn!("not every pool-user association came up in time");
                    }
                    self.start_measurement(now);
                }
            }
            Phase::Measuring { end } => {
                if now >= end {
                    self.finish_measurement(now);
                }
            }
            Phase::Closing { until } => {
                if self.transports.association_count() == 0 || now >= until {
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    fn start_registrations(&mut self, now: Instant) {
        let window = self.cfg.registration_window.max(1) as usize;
        while self.next_pe < self.pes.len() && self.in_flight < window {
            if let (Some(rate), Some(s)) = (self.cfg.registration_rate, self.reg_started_at) {
                let due = s + Duration::from_secs_f64(self.next_pe as f64 / rate);
                if due > now {
                    break;
                }
            }
            let i = self.next_pe;
            self.next_pe += 1;
            match self.transports.connect(
                &self.cfg.registrar,
                self.cfg.kind,
                ChannelKind::AsapToRegistrar,
                Protocol::Asap,
            ) {
                Ok(a) => {
                    self.roles.insert(a, Role::Pe(i));
                    if let Some(p) = self.pes.get_mut(i) {
                        p.assoc = Some(a);
                        p.state = PeState::Registering;
                    }
                    self.in_flight += 1;
                    self.reg_deadlines
                        .push_back((now + self.cfg.registration_timeout, i));
                }
                Err(e) => {
                    warn!("PE {i}: connect failed: {e}");
                    self.registration_failed(i);
                }
            }
        }
    }

    fn registration_failed(&mut self, i: usize) {
        let Some(p) = self.pes.get_mut(i) else {
            return;
        };
        if p.state == PeState::Registering {
            self.in_flight -= 1;
        }
        if matches!(p.state, PeState::Idle | PeState::Registering) {
            p.state = PeState::Failed;
            p.assoc = None;
            self.settled += 1;
            self.report.registration_failures += 1;
            self.report.errors += 1;
        }
    }

    fn registration_done(&mut self, now: Instant) {
        if let (Some(s), Some(last)) = (self.reg_started_at, self.last_registration) {
            self.report.registration_time = last.saturating_duration_since(s);
        }
        info!(
            "{} PEs registered, {} failed",
            self.report.registrations, self.report.registration_failures
        );
        if self.cfg.mode == RspLoadMode::Resolve && self.cfg.assocs > 0 {
            for j in 0..self.cfg.assocs as usize {
                let mut slot = PuSlot::default();
                match self.transports.connect(
                    &self.cfg.registrar,
                    self.cfg.kind,
                    ChannelKind::AsapToRegistrar,
                    Protocol::Asap,
                ) {
                    Ok(a) => {
                        self.roles.insert(a, Role::Pu(j));
                        slot.assoc = Some(a);
                    }
                    Err(e) => {
                        warn!("pool-user association {j}: connect failed: {e}");
                        slot.gone = true;
                        self.report.pu_assocs_aborted += 1;
                    }
                }
                self.pus.push(slot);
            }
            self.phase = Phase::Connecting {
                until: now + self.cfg.connect_timeout,
            };
        } else {
            self.start_measurement(now);
        }
    }

    fn start_measurement(&mut self, now: Instant) {
        (
            self.report.registrar_rss_kib,
            self.report.registrar_anon_kib,
        ) = process_resident_kib(self.cfg.registrar_pid);
        self.cpu_start = (
            self.cfg
                .registrar_pid
                .and_then(|p| process_cpu_time(Some(p)).ok()),
            process_cpu_time(None).ok(),
        );
        if self.cfg.registrar_pid.is_some() && self.cpu_start.0.is_none() {
            warn!("cannot read the registrar's CPU time from /proc");
        }
        self.measure_start = Some(now);
        self.phase = Phase::Measuring {
            end: now + self.cfg.duration,
        };
        for j in 0..self.pus.len() {
            if self.pus.get(j).is_some_and(|p| p.up) {
                for _ in 0..self.cfg.outstanding {
                    self.send_resolution(j, now);
                }
            }
        }
    }

    fn finish_measurement(&mut self, now: Instant) {
        if let Some(s) = self.measure_start {
            self.report.measured = now.saturating_duration_since(s);
            if let (Some(a), Some(Ok(b))) = (
                self.cpu_start.0,
                self.cfg.registrar_pid.map(|p| process_cpu_time(Some(p))),
            ) {
                self.report.registrar_cpu = Some(b.saturating_sub(a));
            }
            if let (Some(a), Ok(b)) = (self.cpu_start.1, process_cpu_time(None)) {
                self.report.own_cpu = Some(b.saturating_sub(a));
            }
        } else if let (Some(s), Phase::Registering) = (self.reg_started_at, self.phase) {
            // Interrupted while registering.
            self.report.registration_time = self
                .last_registration
                .unwrap_or(now)
                .saturating_duration_since(s);
        }
        let ids: Vec<AssocId> = self.roles.keys().copied().collect();
        for a in ids {
            self.transports.close(a, false);
        }
        self.roles.clear();
        self.phase = Phase::Closing {
            until: now + Duration::from_secs(2),
        };
    }

    fn measuring(&self) -> bool {
        matches!(self.phase, Phase::Measuring { .. })
    }

    fn send_resolution(&mut self, j: usize, at: Instant) {
        let Some(p) = self.pus.get_mut(j) else {
            return;
        };
        let Some(a) = p.assoc else {
            return;
        };
        match self
            .transports
            .send(a, Protocol::Asap.ppid(), 0, self.hr_message.clone())
        {
            Ok(()) => p.sent.push_back(at),
            Err(e) => {
                debug!("pool-user association {j}: {e}");
                self.report.errors += 1;
            }
        }
    }

    fn on_event(&mut self, e: TransportEvent) {
        match e {
            TransportEvent::Up {
                assoc, local_addrs, ..
            } => match self.roles.get(&assoc).copied() {
                Some(Role::Pe(i)) => self.register(i, assoc, &local_addrs),
                Some(Role::Pu(j)) => {
                    if let Some(p) = self.pus.get_mut(j) {
                        p.up = true;
                    }
                    if self.measuring() {
                        let now = self.now;
                        for _ in 0..self.cfg.outstanding {
                            self.send_resolution(j, now);
                        }
                    }
                }
                None => {}
            },
            TransportEvent::Message {
                assoc, ppid, data, ..
            } => match self.roles.get(&assoc).copied() {
                Some(Role::Pe(i)) => self.on_pe_message(i, assoc, ppid, &data),
                Some(Role::Pu(j)) => self.on_pu_message(j, ppid, &data),
                None => {}
            },
            TransportEvent::Down { assoc, reason } => match self.roles.remove(&assoc) {
                Some(Role::Pe(i)) => {
                    let state = self.pes.get(i).map(|p| p.state);
                    match state {
                        Some(PeState::Registering) => {
                            debug!("PE {i}: association down while registering ({reason:?})");
                            self.registration_failed(i);
                        }
                        Some(PeState::Registered) => {
                            warn!("PE {i}: association down ({reason:?})");
                            if let Some(p) = self.pes.get_mut(i) {
                                p.state = PeState::Lost;
                                p.assoc = None;
                            }
                            self.report.pes_lost += 1;
                        }
                        _ => {}
                    }
                }
                Some(Role::Pu(j)) => {
                    warn!("pool-user association {j} down ({reason:?})");
                    if let Some(p) = self.pus.get_mut(j) {
                        p.gone = true;
                        p.up = false;
                        p.assoc = None;
                        p.sent.clear();
                    }
                    self.report.pu_assocs_aborted += 1;
                }
                None => {}
            },
            TransportEvent::Datagram { .. } => {}
        }
    }

    fn pe_id(&self, i: usize) -> PeIdentifier {
        PeIdentifier(self.base_id.wrapping_add(i as u32))
    }

    fn register(&mut self, i: usize, assoc: AssocId, local: &[SocketAddr]) {
        let protocol = match self.cfg.kind {
            TransportKind::Sctp => TransportProtocol::Sctp,
            TransportKind::Tcp => TransportProtocol::Tcp,
        };
        let port = local.first().map_or(0, SocketAddr::port);
        let life = u32::try_from(
            (self.cfg.duration.saturating_mul(2) + Duration::from_secs(3600)).as_millis(),
        )
        .unwrap_or(u32::MAX - 1);
        let pe = PoolElementParameter {
            pe_id: self.pe_id(i),
            home_server_id: rserpool_proto::ids::ServerId::NONE,
            registration_life: life,
            user_transport: TransportParameter::with(
                protocol,
                port,
                TRANSPORT_USE_DATA_PLUS_CONTROL,
                local.iter().map(SocketAddr::ip),
            ),
            policy: self.cfg.policy,
            asap_transport: None,
        };
        let m = AsapMessage::Registration(Registration::new(self.cfg.pool_handle.clone(), pe));
        if let Err(e) = self
            .transports
            .send(assoc, Protocol::Asap.ppid(), 0, m.to_bytes())
        {
            warn!("PE {i}: cannot send the registration: {e}");
            self.transports.close(assoc, true);
            self.roles.remove(&assoc);
            self.registration_failed(i);
        }
    }

    fn on_pe_message(&mut self, i: usize, assoc: AssocId, ppid: u32, data: &Bytes) {
        if ppid != Protocol::Asap.ppid() {
            return;
        }
        match AsapMessage::decode_bytes(data) {
            Ok(AsapMessage::EndpointKeepAlive(_)) => {
                let ack = AsapMessage::EndpointKeepAliveAck(EndpointKeepAliveAck::new(
                    self.cfg.pool_handle.clone(),
                    self.pe_id(i),
                ));
                if let Err(e) =
                    self.transports
                        .send(assoc, Protocol::Asap.ppid(), 0, ack.to_bytes())
                {
                    debug!("PE {i}: keep-alive ack not sent: {e}");
                    return;
                }
                self.report.keepalives_total += 1;
                if self.measuring() {
                    self.report.keepalives += 1;
                }
            }
            Ok(AsapMessage::RegistrationResponse(r)) => {
                if self.pes.get(i).map(|p| p.state) != Some(PeState::Registering) {
                    return;
                }
                if r.reject || r.error.is_some() || r.pe_id != self.pe_id(i) {
                    warn!("PE {i}: registration refused: {:?}", r.error);
                    self.transports.close(assoc, false);
                    self.roles.remove(&assoc);
                    self.registration_failed(i);
                    return;
                }
                if let Some(p) = self.pes.get_mut(i) {
                    p.state = PeState::Registered;
                }
                self.in_flight -= 1;
                self.settled += 1;
                self.report.registrations += 1;
                self.last_registration = Some(self.now);
            }
            Ok(AsapMessage::Error(e)) => {
                warn!("PE {i}: ASAP error {:?}", e.error);
                self.report.errors += 1;
            }
            Ok(_) => {}
            Err(e) => {
                warn!("PE {i}: undecodable message: {e}");
                self.report.errors += 1;
            }
        }
    }

    fn answer_ok(&self, r: &HandleResolutionResponse) -> bool {
        r.error.is_none()
            && !r.pool_elements.is_empty()
            && r.pool_elements.iter().all(|pe| {
                let i = pe.pe_id.0.wrapping_sub(self.base_id) as usize;
                i < self.pes.len()
                    && self
                        .pes
                        .get(i)
                        .is_some_and(|p| p.state == PeState::Registered)
            })
    }

    fn on_pu_message(&mut self, j: usize, ppid: u32, data: &Bytes) {
        if ppid != Protocol::Asap.ppid() {
            return;
        }
        let now = self.now;
        let ok = match AsapMessage::decode_bytes(data) {
            Ok(AsapMessage::HandleResolutionResponse(r)) => self.answer_ok(&r),
            Ok(other) => {
                debug!("pool-user association {j}: unexpected {}", other.name());
                false
            }
            Err(e) => {
                debug!("pool-user association {j}: undecodable message: {e}");
                false
            }
        };
        let Some(sent) = self.pus.get_mut(j).and_then(|p| p.sent.pop_front()) else {
            self.report.errors += 1;
            return;
        };
        if !self.measuring() {
            return;
        }
        if ok {
            self.report.resolutions += 1;
            self.report
                .latency
                .record(now.saturating_duration_since(sent).as_micros() as u64);
        } else {
            self.report.errors += 1;
        }
        self.send_resolution(j, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.quantile(0.5), Some(500));
        assert_eq!(h.quantile(0.99), Some(990));
        let mut h = Histogram::default();
        for v in [1_000_000u64, 2_000_000, 3_000_000, 123_456_789] {
            h.record(v);
        }
        let q = h.quantile(1.0).unwrap();
        assert!(q <= 123_456_789 && q as f64 > 123_456_789.0 * 0.999, "{q}");
        let q = h.quantile(0.25).unwrap();
        assert!(q <= 1_000_000 && q > 999_000, "{q}");
        for v in [1023u64, 1024, 1025, 2047, 2048, 1 << 30] {
            let i = Histogram::index(v);
            assert!(Histogram::lower_bound(i) <= v);
            assert!(Histogram::lower_bound(i + 1) > v, "{v}");
        }
    }

    #[test]
    fn proc_stat_parsing() {
        let line =
            "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let status = "Name:\trspregistrar\nVmPeak:\t  9000 kB\nVmRSS:\t    6296 kB\nRssAnon:\t  2048 kB\nThreads:\t1\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(6296));
        assert_eq!(parse_status_kib(status, "RssAnon:"), Some(2048));
        assert_eq!(parse_status_kib("Name: x\n", "VmRSS:"), None);
        let (rss, anon) = process_resident_kib(Some(std::process::id()));
        assert!(rss.is_some_and(|k| k > 0));
        assert!(anon.is_some_and(|k| k > 0));
        assert!(process_cpu_time(None).is_ok());
    }

    #[test]
    fn figures_are_name_value_unit() {
        let mut r = LoadReport {
            pes: 10,
            registrations: 10,
            registration_time: Duration::from_millis(500),
            resolutions: 2000,
            measured: Duration::from_secs(2),
            keepalives: 4,
            registrar_cpu: Some(Duration::from_millis(200)),
            registrar_rss_before_kib: Some(1000),
            registrar_rss_kib: Some(1010),
            registrar_anon_before_kib: Some(500),
            registrar_anon_kib: Some(505),
            ..LoadReport::default()
        };
        r.latency.record(100);
        r.latency.record(300);
        let f = r.figures();
        for l in f.lines() {
            assert_eq!(l.split(' ').count(), 3, "{l}");
        }
        assert!(f.contains("registrations 10 count\n"));
        assert!(f.contains("registrations_per_s 20.0 1/s\n"));
        assert!(f.contains("resolutions_per_s 1000.0 1/s\n"));
        assert!(f.contains("latency_p50 100 us\n"));
        assert!(f.contains("latency_p99 300 us\n"));
        assert!(f.contains("registrar_cpu_per_resolution 100.0 us\n"));
        assert!(f.contains("registrar_cpu_percent 10.0 %\n"));
        assert!(f.contains("registrar_rss_per_pe 1024 B\n"));
        assert!(f.contains("registrar_anon_per_pe 512 B\n"));
        assert!(r.summary().starts_with("# 10 of 10 PEs registered"));
    }
}
