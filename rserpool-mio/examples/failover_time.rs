//! Failover time of `pingpongclient` and `rspterminal` over the TCP mapping on 127.0.0.1:
//! from the moment the serving PE dies (SIGKILL: the kernel closes its connections, i.e.
//! transport loss) or goes silent (SIGSTOP: no close, no answer) to the first answer the
//! client prints from the next PE.
//!
//! A registrar and two PEs run as child processes (`rspserver -pingpong` / `-echo`); each
//! round kills or stops the PE the client is on, measures, and starts a fresh PE. The client
//! is kept busy: `pingpongclient -interval=2` pings every 2 ms; `rspterminal` gets a new line
//! as soon as the previous one was answered (so a line is outstanding when the PE dies).
//! A silent PE is detected by the clients' response timeout (`-responsetimeout=`).
//!
//! ```text
//! cargo build --release -p rserpool-mio --bins --examples
//! target/release/examples/failover_time [ROUNDS [TIMEOUT_MS [SCENARIO]]]   # default 100 200 all
//! ```
//!
//! SCENARIO (a prefix selects several): `pingpongclient_kill`, `pingpongclient_stop`,
//! `rspterminal_kill`, `rspterminal_stop`. `$FAILOVER_TIME_LOGLEVEL` sets the clients'
//! `-loglevel=` (default 1; their logs are in the scenario's temporary directory).
//!
//! Prints `NAME VALUE UNIT` lines (median, p99, max per scenario). The programs are taken
//! from `$RSERPOOL_BIN_DIR` or next to this example's directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rserpool_mio::programs::cluster::{TerminalProc, bin_dir};
use rserpool_mio::programs::services::pool::{ClientProc, ServicePool, parse_ack};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    Kill,
    Stop,
}

impl Death {
    fn name(self) -> &'static str {
        match self {
            Death::Kill => "kill",
            Death::Stop => "stop",
        }
    }
}

/// Kills or stops PE `id`; returns the instant just before the signal was sent.
fn strike(pool: &mut ServicePool, id: u32, how: Death) -> Instant {
    let t0 = Instant::now();
    match how {
        Death::Kill => {
            pool.kill_pe(id);
        }
        Death::Stop => {
            if let Some(p) = pool.pe(id) {
                p.signal("STOP").expect("kill -STOP");
            }
        }
    }
    t0
}

struct Scenario {
    pool: ServicePool,
    service: &'static str,
    next_id: u32,
}

impl Scenario {
    fn new(name: &str, service: &'static str) -> Scenario {
        let logs =
            std::env::temp_dir().join(format!("rserpool-failover-{name}-{}", std::process::id()));
        let pool = ServicePool::start(&bin_dir(), &logs, &[]).expect("registrar");
        let mut s = Scenario {
            pool,
            service,
            next_id: 0x100,
        };
        s.add_pe();
        s.add_pe();
        s
    }

    fn add_pe(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        self.pool
            .start_pe_registered(id, &[self.service])
            .expect("PE");
    }

    /// After a round: the dead or stopped PE goes, a fresh one comes.
    fn replace(&mut self, victim: u32) {
        self.pool.kill_pe(victim);
        self.add_pe();
    }
}

fn pingpong(rounds: usize, timeout_ms: u64, how: Death) -> Vec<Duration> {
    let mut s = Scenario::new(&format!("pingpong-{}", how.name()), "-pingpong");
    let mut args = s.pool.client_args();
    args.extend([
        "-interval=2".to_owned(),
        format!("-responsetimeout={timeout_ms}"),
        client_log_level(),
    ]);
    let log = s.pool.logs.join("client.log");
    let c = ClientProc::spawn(&s.pool.bin_dir, "pingpongclient", &args, &log).expect("client");
    let pe_of = |l: &str| parse_ack(l).map(|(_, pe, _)| pe);
    let mut out = Vec::new();
    for _ in 0..rounds {
        // The PE serving now: the latest Ack.
        let mut current = c
            .wait_for(WAIT, |l| pe_of(l).is_some())
            .and_then(|l| pe_of(&l.text))
            .expect("pongs");
        for l in c.lines_now() {
            if let Some(pe) = pe_of(&l.text) {
                current = pe;
            }
        }
        let t0 = strike(&mut s.pool, current, how);
        let next = c
            .wait_for(WAIT, |l| pe_of(l).is_some_and(|pe| pe != current))
            .expect("a pong from another PE");
        let d = next.at.saturating_duration_since(t0);
        eprintln!(
            "round: PE {current:#x} {}: {:.2} ms ({})",
            how.name(),
            d.as_secs_f64() * 1e3,
            next.text
        );
        out.push(d);
        s.replace(current);
    }
    out
}

fn terminal(rounds: usize, timeout_ms: u64, how: Death) -> Vec<Duration> {
    let mut s = Scenario::new(&format!("terminal-{}", how.name()), "-echo");
    let mut args = s.pool.client_args();
    args.push(format!("-responsetimeout={timeout_ms}"));
    args.push("-poolhandle=EchoPool".into());
    args.push(client_log_level());
    let mut t = TerminalProc::spawn(
        rserpool_mio::programs::cluster::Programs::in_dir(&s.pool.bin_dir),
        &args,
    )
    .expect("rspterminal");
    let mut n = 0u64;
    let mut ask = |t: &mut TerminalProc| {
        n += 1;
        t.send_line(&format!("line {n}")).expect("stdin");
    };
    let mut out = Vec::new();
    for _ in 0..rounds {
        ask(&mut t);
        let a = t.next_answer(WAIT).expect("an answer");
        let victim = a.pe;
        let t0 = strike(&mut s.pool, victim, how);
        ask(&mut t);
        let next = loop {
            let a = t.next_answer(WAIT).expect("an answer after the failover");
            if a.pe != victim {
                break a;
            }
            // An answer the victim sent before it died: keep the loop closed.
            ask(&mut t);
        };
        out.push(next.at.saturating_duration_since(t0));
        s.replace(victim);
    }
    t.close_input();
    out
}

/// The clients' `-loglevel=` option from `$FAILOVER_TIME_LOGLEVEL` (default 1).
fn client_log_level() -> String {
    format!(
        "-loglevel={}",
        std::env::var("FAILOVER_TIME_LOGLEVEL").unwrap_or_else(|_| "1".into())
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{name}_rounds {} count", v.len());
    println!("{name}_median {:.2} ms", ms(percentile(&v, 0.5)));
    println!("{name}_p99 {:.2} ms", ms(percentile(&v, 0.99)));
    println!(
        "{name}_max {:.2} ms",
        ms(v.last().copied().unwrap_or_default())
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(100);
    let timeout_ms: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let dir: PathBuf = bin_dir();
    eprintln!(
        "failover_time: {rounds} rounds per scenario, response timeout {timeout_ms} ms, programs in {}",
        dir.display()
    );
    let only = args.get(2).cloned().unwrap_or_default();
    println!("response_timeout {timeout_ms} ms");
    for (name, pingpong_client, how) in [
        ("pingpongclient_kill", true, Death::Kill),
        ("pingpongclient_stop", true, Death::Stop),
        ("rspterminal_kill", false, Death::Kill),
        ("rspterminal_stop", false, Death::Stop),
    ] {
        if !name.starts_with(&only) {
            continue;
        }
        let v = if pingpong_client {
            pingpong(rounds, timeout_ms, how)
        } else {
            terminal(rounds, timeout_ms, how)
        };
        report(name, v);
    }
}
