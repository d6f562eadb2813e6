//! `rsphostile`: plays the hostile-input suite ([`rserpool_mio::hostile`]) against a
//! registrar — ours or RSPLIB's `rspregistrar` — over kernel SCTP or the TCP mapping, next to
//! one legitimate echo PE it registers and keeps alive itself, and reports per class:
//! messages sent, replies by cause, probe failures, crashes, memory, and a verdict line.
//!
//! ```text
//! rsphostile -registrar=10.99.0.11:3863 -enrp=10.99.0.11:9901 -transport=sctp \
//!            -registrarpidfile=/tmp/pr.pid -restartwait=20000 -label=rspregistrar
//! ```
//!
//! Exit status: 0 when the verdict is PASS, 1 when it is FAIL, 2 when the run could not
//! start (registrar unreachable, the legitimate PE refused).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rserpool_mio::cli::addr::{AddressList, address_list};
use rserpool_mio::cli::argv::{SYNTAX_NOTE, parse_or_exit};
use rserpool_mio::hostile::suite::{PidSource, Scale, Suite, SuiteConfig};
use rserpool_mio::hostile::{Class, wire};
use rserpool_mio::transport::{TransportKind, sctp_available};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    /// Kernel SCTP (what RSPLIB speaks).
    Sctp,
    /// The TCP mapping (RTF).
    Tcp,
}

/// A comma list of classes.
#[derive(Clone, Debug)]
struct Classes(Vec<Class>);

fn classes(s: &str) -> Result<Classes, String> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            Class::parse(x.trim()).ok_or_else(|| format!("unknown class {x:?} (a-f or a name)"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Classes)
}

/// Hostile-input suite for RSerPool registrars.
#[derive(Parser, Debug)]
#[command(name = "rsphostile", version, after_help = SYNTAX_NOTE)]
struct Options {
    /// The registrar's ASAP endpoint (port default 3863)
    #[arg(long = "registrar", value_name = "ADDR[:PORT][,ADDR...]", value_parser = address_list::<3863>)]
    registrar: AddressList,
    /// The registrar's ENRP endpoint (port default 9901); without it the ENRP cases are skipped
    #[arg(long = "enrp", value_name = "ADDR[:PORT][,ADDR...]", value_parser = address_list::<9901>)]
    enrp: Option<AddressList>,
    /// Transport (default: SCTP when the kernel has it, else the TCP mapping)
    #[arg(long = "transport", value_enum)]
    transport: Option<TransportArg>,
    /// The registrar's process id (death detection, resident memory)
    #[arg(long = "registrarpid", value_name = "PID")]
    registrar_pid: Option<u32>,
    /// A file with the registrar's process id, re-read after restarts
    #[arg(
        long = "registrarpidfile",
        value_name = "PATH",
        conflicts_with = "registrar_pid"
    )]
    registrar_pid_file: Option<PathBuf>,
    /// Wait this long (ms) for a dead registrar to come back (0: stop at the first death)
    #[arg(long = "restartwait", value_name = "MS", default_value_t = 0)]
    restart_wait: u64,
    /// Local address for the legitimate PE's and peer's listeners (default: wildcard)
    #[arg(long = "local", value_name = "ADDR")]
    local: Option<IpAddr>,
    /// ENRP port of the legitimate peer (0: ephemeral; give it to the registrar as -peer=)
    #[arg(long = "peerport", value_name = "PORT", default_value_t = 0)]
    peer_port: u16,
    /// Seed of every pseudo-random choice
    #[arg(long = "seed", default_value_t = 1)]
    seed: u64,
    /// Directory of the RSPLIB capture vectors (*.hex); default: shared/vectors found upwards
    #[arg(long = "vectors", value_name = "DIR")]
    vectors: Option<PathBuf>,
    /// Classes to play, in order (a-f or names)
    #[arg(long = "classes", value_name = "LIST", default_value = "a,b,c,d,e,f", value_parser = classes)]
    classes: Classes,
    /// Pool of the legitimate PE
    #[arg(long = "pool", default_value = "LegitEchoPool")]
    pool: String,
    /// Registrations over one association (class e)
    #[arg(long = "floodregistrations", default_value_t = 20_000)]
    flood_registrations: usize,
    /// Pools created (class e)
    #[arg(long = "floodpools", default_value_t = 5_000)]
    flood_pools: usize,
    /// Registrations per association when creating pools (class e)
    #[arg(long = "poolsperassoc", default_value_t = 1_000)]
    pools_per_assoc: usize,
    /// Handle resolutions, answers read (class e)
    #[arg(long = "hrflood", default_value_t = 20_000)]
    hr_flood: usize,
    /// Handle resolutions to an association that never reads (class e)
    #[arg(long = "hrunread", default_value_t = 200_000)]
    hr_unread: usize,
    /// Endpoint Unreachable reports against the live PE (class e)
    #[arg(long = "euflood", default_value_t = 5_000)]
    eu_flood: usize,
    /// Associations opened and closed (class e)
    #[arg(long = "churn", default_value_t = 200)]
    churn: usize,
    /// Byte-level mutations (class f)
    #[arg(long = "mutations", default_value_t = 4_000)]
    mutations: usize,
    /// Probe the legitimate PE at least this often (ms)
    #[arg(long = "probeinterval", value_name = "MS", default_value_t = 2000)]
    probe_interval: u64,
    /// Wait this long (ms) for the answer to a reply marker
    #[arg(long = "replytimeout", value_name = "MS", default_value_t = 2000)]
    reply_timeout: u64,
    /// Hostile messages per reply marker in classes a and f
    #[arg(long = "batch", default_value_t = 32)]
    batch: usize,
    /// Name of the registrar in the verdict line
    #[arg(long = "label", default_value = "registrar")]
    label: String,
    /// Print progress to stderr
    #[arg(long = "verbose")]
    verbose: bool,
    /// Write one line per case (class, case, replies, expected, probe outcome) to this file
    #[arg(long = "caselog", value_name = "PATH")]
    case_log: Option<PathBuf>,
}

fn main() -> ExitCode {
    let o: Options = parse_or_exit();
    let transport = match o.transport {
        Some(TransportArg::Sctp) => TransportKind::Sctp,
        Some(TransportArg::Tcp) => TransportKind::Tcp,
        None if sctp_available() => TransportKind::Sctp,
        None => TransportKind::Tcp,
    };
    let mut cfg = SuiteConfig::new(
        o.registrar.addrs().to_vec(),
        o.enrp.as_ref().map(|e| e.addrs().to_vec()),
        transport,
    );
    cfg.seed = o.seed;
    cfg.vectors_dir = o.vectors.clone().or_else(|| wire::find_vectors_dir(None));
    cfg.pid = match (o.registrar_pid, &o.registrar_pid_file) {
        (Some(p), _) => Some(PidSource::Pid(p)),
        (None, Some(f)) => Some(PidSource::File(f.clone())),
        (None, None) => None,
    };
    cfg.local_ip = o.local;
    cfg.peer_port = o.peer_port;
    cfg.legit_pool = o.pool.clone().into_bytes();
    cfg.classes = o.classes.0.clone();
    cfg.scale = Scale {
        flood_registrations: o.flood_registrations,
        flood_pools: o.flood_pools,
        pools_per_assoc: o.pools_per_assoc,
        hr_flood: o.hr_flood,
        hr_unread: o.hr_unread,
        eu_flood: o.eu_flood,
        churn: o.churn,
        mutations: o.mutations,
    };
    cfg.probe_interval = Duration::from_millis(o.probe_interval);
    cfg.reply_timeout = Duration::from_millis(o.reply_timeout);
    cfg.restart_wait = Duration::from_millis(o.restart_wait);
    cfg.batch = o.batch;
    cfg.verbose = o.verbose;
    cfg.case_log = o.case_log.clone();
    match &cfg.vectors_dir {
        Some(d) => eprintln!("rsphostile: vectors from {}", d.display()),
        None => {
            eprintln!("rsphostile: no capture vectors found (own encodings only; see -vectors=)")
        }
    }
    let suite = match Suite::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rsphostile: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = suite.peer_addr() {
        eprintln!(
            "rsphostile: legitimate peer {:#010x} listens on {p}, legitimate PE id {:#010x}, transport {transport:?}",
            suite.peer_id().0,
            suite.legit_pe_id()
        );
    }
    let report = match suite.run_with(|c| {
        eprintln!(
            "rsphostile: class {} done: {} sent, {} crashes, {} probe failures",
            c.class,
            c.sent,
            c.crashes.len(),
            c.probe_failures.len()
        )
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rsphostile: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.render(&o.label));
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
