//! The runner: plays the classes against a registrar next to one legitimate echo PE (which
//! it registers and keeps answering keep-alives) and one legitimate ENRP peer `P`, probes
//! the legitimate PE after every class and periodically, notices registrar death and
//! restarts, samples the registrar's resident memory, and reports per class.

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rserpool_core::handlespace::ChecksumAccumulator;
use rserpool_core::{AssocId, Protocol};
use rserpool_proto::asap::{
    EndpointKeepAliveAck, EndpointUnreachable, HandleResolution, Registration,
};
use rserpool_proto::enrp::{HandleTableResponse, ListRequest, ListResponse, Presence};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{
    HandleResolutionOption, PeChecksum, PoolElementParameter, ServerInformation,
};
use rserpool_proto::policy::Policy;
use rserpool_proto::rtf::{ChannelKind, ChannelKinds, Frame, Hello};
use rserpool_proto::transport::{TRANSPORT_USE_DATA_PLUS_CONTROL, TransportParameter};
use rserpool_proto::{AsapMessage, EnrpMessage};

use super::generate::{self, Context, LIFE};
use super::net::{LinkState, Net};
use super::wire::{self, Vector};
use super::{Case, Class, Reply, Sender, is_rfc_cause};
use crate::transport::TransportKind;

/// Where the registrar's process id comes from (for death detection and memory figures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidSource {
    /// A fixed process id.
    Pid(u32),
    /// A file holding the current process id (re-read after restarts).
    File(PathBuf),
}

impl PidSource {
    /// The current process id.
    pub fn pid(&self) -> Option<u32> {
        match self {
            PidSource::Pid(p) => Some(*p),
            PidSource::File(f) => std::fs::read_to_string(f).ok()?.trim().parse().ok(),
        }
    }
}

/// True if process `pid` exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Sizes of the floods and of class f.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Registrations over one association.
    pub flood_registrations: usize,
    /// Pools created (one PE each) ...
    pub flood_pools: usize,
    /// ... with this many registrations per association.
    pub pools_per_assoc: usize,
    /// Handle Resolutions pipelined on one association (answers read).
    pub hr_flood: usize,
    /// Handle Resolutions written to an association that never reads.
    pub hr_unread: usize,
    /// Endpoint Unreachable reports against the live legitimate PE.
    pub eu_flood: usize,
    /// Associations opened and closed.
    pub churn: usize,
    /// Class f mutations.
    pub mutations: usize,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            flood_registrations: 20_000,
            flood_pools: 5_000,
            pools_per_assoc: 1_000,
            hr_flood: 20_000,
            hr_unread: 200_000,
            eu_flood: 5_000,
            churn: 200,
            mutations: 4_000,
        }
    }
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    /// The registrar's ASAP addresses.
    pub registrar_asap: Vec<SocketAddr>,
    /// Its ENRP addresses (`None`: the ENRP cases are skipped).
    pub registrar_enrp: Option<Vec<SocketAddr>>,
    /// Kernel SCTP or RTF over TCP.
    pub transport: TransportKind,
    /// Seed of every pseudo-random choice.
    pub seed: u64,
    /// The RSPLIB capture vectors (`None`: own encodings only).
    pub vectors_dir: Option<PathBuf>,
    /// The registrar's process (death and memory), if local.
    pub pid: Option<PidSource>,
    /// Address to bind the legitimate PE's and the peer's listeners to (`None`: wildcard).
    pub local_ip: Option<IpAddr>,
    /// The legitimate peer's ENRP port (0: ephemeral).
    pub peer_port: u16,
    /// The legitimate PE's pool.
    pub legit_pool: Vec<u8>,
    /// The classes to play, in order.
    pub classes: Vec<Class>,
    /// Flood and mutation sizes.
    pub scale: Scale,
    /// Probe at least this often during a class.
    pub probe_interval: Duration,
    /// How long to wait for a reply marker.
    pub reply_timeout: Duration,
    /// How long to wait for a registrar to come back after it died (0: stop at once).
    pub restart_wait: Duration,
    /// Cases per marker in classes a and f.
    pub batch: usize,
    /// Print progress lines to stderr.
    pub verbose: bool,
    /// Write one line per case (class, case, replies, expected, probe) to this file.
    pub case_log: Option<PathBuf>,
}

impl SuiteConfig {
    /// Defaults for a registrar at these addresses.
    pub fn new(
        asap: Vec<SocketAddr>,
        enrp: Option<Vec<SocketAddr>>,
        transport: TransportKind,
    ) -> Self {
        SuiteConfig {
            registrar_asap: asap,
            registrar_enrp: enrp,
            transport,
            seed: 1,
            vectors_dir: None,
            pid: None,
            local_ip: None,
            peer_port: 0,
            legit_pool: b"LegitEchoPool".to_vec(),
            classes: Class::ALL.to_vec(),
            scale: Scale::default(),
            probe_interval: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(2),
            restart_wait: Duration::ZERO,
            batch: 32,
            verbose: false,
            case_log: None,
        }
    }
}

/// How a probe found the legitimate PE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeFailureKind {
    /// Not named (pool unknown, or the PE absent).
    Removed,
    /// Named with another user transport.
    Hijacked,
    /// Named with another home registrar.
    Rehomed,
    /// Other PEs in the legitimate pool.
    Injected,
    /// No answer to the probe.
    NoAnswer,
}

/// One failed probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    /// The last case sent before the probe.
    pub after: String,
    /// What was wrong.
    pub kind: ProbeFailureKind,
    /// Details.
    pub detail: String,
}

/// A case whose replies differ from the RFC's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deviation {
    /// The case.
    pub case: String,
    /// What the RFCs (and our ownership rules) ask for (alternatives).
    pub expected: Vec<Vec<Reply>>,
    /// What came.
    pub got: Vec<Reply>,
}

/// The figures of one class.
#[derive(Clone, Debug)]
pub struct ClassReport {
    /// The class.
    pub class: Class,
    /// Hostile messages sent.
    pub sent: u64,
    /// Replies by kind.
    pub replies: BTreeMap<Reply, u64>,
    /// Cases (or batches) that got no reply at all.
    pub silent: u64,
    /// Probes made.
    pub probes: u32,
    /// Probes that did not find exactly the legitimate PE.
    pub probe_failures: Vec<ProbeFailure>,
    /// Registrar deaths, with the case (or batch) that preceded each.
    pub crashes: Vec<String>,
    /// Associations the registrar aborted or shut down while alive.
    pub aborted: u64,
    /// Replies that differ from the expected ones.
    pub deviations: Vec<Deviation>,
    /// Markers that got no answer in time.
    pub lost_markers: u64,
    /// The registrar's resident memory after the class (KiB).
    pub rss_kib: Option<u64>,
    /// Largest resident memory seen during the class (KiB).
    pub rss_peak_kib: Option<u64>,
    /// Wall time.
    pub elapsed: Duration,
    /// Figures of the floods, one line each.
    pub notes: Vec<String>,
    /// Handle resolutions sent right behind Endpoint Unreachable reports against the live
    /// PE (class e): (answers that did not name it, answers).
    pub hidden_answers: (u64, u64),
    /// The same answers in order: how many runs of consecutive answers without the PE
    /// (each a verification keep-alive's round trip) and how long the flood lasted.
    pub hidden_windows: (u64, Duration),
}

impl ClassReport {
    fn new(class: Class) -> Self {
        ClassReport {
            class,
            sent: 0,
            replies: BTreeMap::new(),
            silent: 0,
            probes: 0,
            probe_failures: Vec::new(),
            crashes: Vec::new(),
            aborted: 0,
            deviations: Vec::new(),
            lost_markers: 0,
            rss_kib: None,
            rss_peak_kib: None,
            elapsed: Duration::ZERO,
            notes: Vec::new(),
            hidden_answers: (0, 0),
            hidden_windows: (0, Duration::ZERO),
        }
    }

    /// Replies carrying cause codes outside RFC 5354 (0x0-0xa), by code.
    pub fn non_rfc_causes(&self) -> BTreeMap<u16, u64> {
        let mut m = BTreeMap::new();
        for (r, n) in &self.replies {
            if let Some(c) = r.cause()
                && !is_rfc_cause(c)
                && c != 0xffff
            {
                *m.entry(c).or_insert(0) += n;
            }
        }
        m
    }

    /// Number of replies of one kind.
    pub fn count(&self, r: Reply) -> u64 {
        self.replies.get(&r).copied().unwrap_or(0)
    }
}

/// The whole run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Per class, in playing order.
    pub classes: Vec<ClassReport>,
    /// Resident memory after the legitimate PE registered (KiB).
    pub rss_baseline_kib: Option<u64>,
    /// The registrar's server identifier as first seen.
    pub registrar_id: Option<ServerId>,
    /// The legitimate peer was accepted (its Presence answered).
    pub peer_joined: bool,
    /// The registrar died and did not come back: the run stopped early.
    pub gave_up: bool,
    /// Endpoint Keep-Alives the legitimate PE answered.
    pub keep_alives: u64,
    /// Spontaneous Deregistration Responses the legitimate PE received.
    pub removal_notices: u64,
}

impl Report {
    /// Total crashes.
    pub fn crashes(&self) -> usize {
        self.classes.iter().map(|c| c.crashes.len()).sum()
    }

    /// Total probe failures.
    pub fn probe_failures(&self) -> usize {
        self.classes.iter().map(|c| c.probe_failures.len()).sum()
    }

    /// Total deviations.
    pub fn deviations(&self) -> usize {
        self.classes.iter().map(|c| c.deviations.len()).sum()
    }

    /// Total messages sent.
    pub fn sent(&self) -> u64 {
        self.classes.iter().map(|c| c.sent).sum()
    }

    /// Largest resident memory seen (KiB).
    pub fn rss_peak_kib(&self) -> Option<u64> {
        self.classes.iter().filter_map(|c| c.rss_peak_kib).max()
    }

    /// PASS when nothing crashed, every probe found exactly the legitimate PE and every
    /// reply was the expected one.
    pub fn passed(&self) -> bool {
        !self.gave_up && self.crashes() == 0 && self.probe_failures() == 0 && self.deviations() == 0
    }

    /// The report as text: one block per class, then the verdict line.
    pub fn render(&self, label: &str) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let mb =
            |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.1} MB", k as f64 / 1024.0));
        for c in &self.classes {
            let _ = writeln!(
                s,
                "class {}: {} sent in {:.1} s; {} crashes; {} probe failures / {} probes; {} associations aborted; {} RFC deviations; {} silent; {} lost markers; RSS {} (peak {})",
                c.class,
                c.sent,
                c.elapsed.as_secs_f64(),
                c.crashes.len(),
                c.probe_failures.len(),
                c.probes,
                c.aborted,
                c.deviations.len(),
                c.silent,
                c.lost_markers,
                mb(c.rss_kib),
                mb(c.rss_peak_kib),
            );
            let replies: Vec<String> = c.replies.iter().map(|(r, n)| format!("{r} x{n}")).collect();
            let _ = writeln!(
                s,
                "  replies: {}",
                if replies.is_empty() {
                    "none".into()
                } else {
                    replies.join(", ")
                }
            );
            let non_rfc = c.non_rfc_causes();
            if !non_rfc.is_empty() {
                let v: Vec<String> = non_rfc
                    .iter()
                    .map(|(c, n)| format!("{c:#06x} x{n}"))
                    .collect();
                let _ = writeln!(s, "  non-RFC causes: {}", v.join(", "));
            }
            for n in &c.notes {
                let _ = writeln!(s, "  {n}");
            }
            for x in c.crashes.iter().take(10) {
                let _ = writeln!(s, "  crash after: {x}");
            }
            for f in c.probe_failures.iter().take(40) {
                let _ = writeln!(
                    s,
                    "  probe failure ({:?}) after {}: {}",
                    f.kind, f.after, f.detail
                );
            }
            for d in c.deviations.iter().take(40) {
                let e: Vec<String> = d
                    .expected
                    .iter()
                    .map(|alt| {
                        alt.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .collect();
                let g: Vec<String> = d.got.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    s,
                    "  deviation {}: expected [{}], got [{}]",
                    d.case,
                    e.join("] or ["),
                    g.join(", ")
                );
            }
            if c.deviations.len() > 40 {
                let _ = writeln!(s, "  ... {} more deviations", c.deviations.len() - 40);
            }
        }
        let _ = writeln!(
            s,
            "VERDICT {label}: {} - {} messages, {} crashes, {} probe failures, {} RFC deviations, peer joined: {}, RSS {} -> peak {}{}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.sent(),
            self.crashes(),
            self.probe_failures(),
            self.deviations(),
            if self.peer_joined { "yes" } else { "no" },
            mb(self.rss_baseline_kib),
            mb(self.rss_peak_kib()),
            if self.gave_up {
                " (registrar did not come back: run stopped)"
            } else {
                ""
            },
        );
        s
    }
}

/// The legitimate echo PE.
#[derive(Debug)]
struct LegitPe {
    id: u32,
    listener_addr: SocketAddr,
    assoc: Option<AssocId>,
    transport: Option<TransportParameter>,
    sessions: Vec<AssocId>,
    /// Last Registration Response: accepted?
    registered: Option<bool>,
    /// The registrar id from keep-alives.
    registrar_id: Option<ServerId>,
    keep_alives: u64,
    removed_notices: u64,
}

/// The legitimate ENRP peer `P` (a registrar with no PEs).
#[derive(Debug)]
struct PeerRole {
    id: ServerId,
    listener_addr: Option<SocketAddr>,
    out: Option<AssocId>,
    links: Vec<AssocId>,
    /// Replies on `out` for the running exchange.
    replies: VecDeque<Bytes>,
    presences_from_registrar: u64,
    registrar_id: Option<ServerId>,
}

/// The expected view of the legitimate PE in probe answers.
#[derive(Clone, Debug)]
struct Baseline {
    home: ServerId,
    transport: TransportParameter,
}

enum Marker {
    Asap(Bytes),
    Enrp(ServerId),
    PeerList,
}

/// What an exchange produced.
struct Exchange {
    replies: Vec<Reply>,
    marker_seen: bool,
    link_lost: bool,
}

/// A running suite. Build it with [`Suite::new`] (which opens the PE's and the peer's
/// listeners, so that a registrar configured with the peer as a static peer can be started
/// after it: [`Suite::peer_addr`]), then [`Suite::run`].
pub struct Suite {
    cfg: SuiteConfig,
    net: Net,
    pe: LegitPe,
    peer: PeerRole,
    attack: Option<AssocId>,
    attack2: Option<AssocId>,
    stranger: Option<AssocId>,
    announcer: Option<AssocId>,
    vectors: Vec<Vector>,
    baseline: Option<Baseline>,
    marker_n: u32,
    last_probe: Instant,
    last_pid: Option<u32>,
    cur: ClassReport,
    report: Report,
    dead: bool,
    /// Probe after every case (class d: which forgery did what).
    probe_each: bool,
    /// Foreign PEs already reported in the legitimate pool (not reported again).
    known_foreign: std::collections::HashSet<(u32, u32)>,
    /// One line per case played, if configured.
    case_log: Option<std::io::BufWriter<std::fs::File>>,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

const PPID_ASAP: u32 = Protocol::PPID_ASAP;
const PPID_ENRP: u32 = Protocol::PPID_ENRP;
const STRANGER_ID: ServerId = ServerId(0x5354_0001);
const ANNOUNCER_ID: ServerId = ServerId(0x5354_0002);
const PEER_ID: ServerId = ServerId(0x5045_4552);
const MARKER_BASE: u32 = 0x4d4b_0000;
/// The never-reading association writes for at most this long.
const UNREAD_FLOOD_TIME: Duration = Duration::from_secs(30);

fn wildcard_for(a: SocketAddr) -> IpAddr {
    match a {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

impl Suite {
    /// Opens the listeners of the legitimate PE and peer and loads the vectors.
    pub fn new(cfg: SuiteConfig) -> io::Result<Suite> {
        let mut net = Net::new(cfg.transport)?;
        let ip = cfg
            .local_ip
            .unwrap_or_else(|| match cfg.registrar_asap.first() {
                Some(a) => wildcard_for(*a),
                None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            });
        let (_, pe_addr) = net.listen(
            SocketAddr::new(ip, 0),
            ChannelKinds::from(ChannelKind::Session).with(ChannelKind::AsapFromRegistrar),
        )?;
        let peer_addr = Some(
            net.listen(SocketAddr::new(ip, cfg.peer_port), ChannelKind::Enrp)?
                .1,
        );
        let vectors = match &cfg.vectors_dir {
            Some(d) => wire::load_vectors(d)?,
            None => Vec::new(),
        };
        let id = 0x4c00_0000 | ((cfg.seed as u32).wrapping_mul(2_654_435_761) & 0x00ff_ffff) | 1;
        Ok(Suite {
            pe: LegitPe {
                id,
                listener_addr: pe_addr,
                assoc: None,
                transport: None,
                sessions: Vec::new(),
                registered: None,
                registrar_id: None,
                keep_alives: 0,
                removed_notices: 0,
            },
            peer: PeerRole {
                id: PEER_ID,
                listener_addr: peer_addr,
                out: None,
                links: Vec::new(),
                replies: VecDeque::new(),
                presences_from_registrar: 0,
                registrar_id: None,
            },
            net,
            attack: None,
            attack2: None,
            stranger: None,
            announcer: None,
            vectors,
            baseline: None,
            marker_n: 0,
            last_probe: Instant::now(),
            last_pid: None,
            cur: ClassReport::new(Class::Truncation),
            report: Report::default(),
            dead: false,
            probe_each: false,
            known_foreign: std::collections::HashSet::new(),
            case_log: match &cfg.case_log {
                Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
                None => None,
            },
            cfg,
        })
    }

    /// Sets the registrar's addresses (when it is started after [`Suite::new`], e.g. with
    /// the peer's address as a static peer).
    pub fn set_registrar(&mut self, asap: Vec<SocketAddr>, enrp: Option<Vec<SocketAddr>>) {
        self.cfg.registrar_asap = asap;
        self.cfg.registrar_enrp = enrp;
    }

    /// The legitimate peer's ENRP listening address (configure it as a static peer).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.listener_addr
    }

    /// The legitimate PE's identifier.
    pub fn legit_pe_id(&self) -> u32 {
        self.pe.id
    }

    /// The legitimate peer's server identifier.
    pub fn peer_id(&self) -> ServerId {
        self.peer.id
    }

    /// Keep-alives the legitimate PE answered so far.
    pub fn keep_alives_answered(&self) -> u64 {
        self.pe.keep_alives
    }

    /// Our address to name in registrations and Presences on association `a`: the
    /// configured local address, else the first of the association's local addresses of
    /// the registrar's family that is not a loopback address (unless the registrar is on
    /// loopback): SCTP lists every address of a wildcard-bound socket, loopback first, and
    /// RSPLIB rejects loopback addresses.
    fn pick_local(&self, a: AssocId) -> Option<IpAddr> {
        if let Some(ip) = self.cfg.local_ip.filter(|ip| !ip.is_unspecified()) {
            return Some(ip);
        }
        let addrs = self.net.local_addrs(a);
        let target = self.cfg.registrar_asap.first().map(SocketAddr::ip);
        let loopback = target.is_some_and(|t| t.is_loopback());
        let family = |ip: &IpAddr| target.is_none_or(|t| t.is_ipv4() == ip.is_ipv4());
        addrs
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| family(ip) && (loopback || !ip.is_loopback()))
            .or_else(|| addrs.first().map(SocketAddr::ip))
    }

    fn log(&self, msg: &str) {
        if self.cfg.verbose {
            eprintln!("rsphostile: {msg}");
        }
    }

    // --------------------------------------------------------------------------------
    // the legitimate parties

    /// Handles what arrived for the legitimate PE and peer: keep-alive acks, echoes,
    /// Presence replies, empty table and list responses.
    fn service(&mut self) {
        while let Some((l, a)) = self.net.take_accepted() {
            let _ = l;
            let pe_side = self
                .net
                .local_addrs(a)
                .iter()
                .any(|x| x.port() == self.pe.listener_addr.port());
            if pe_side {
                self.pe.sessions.push(a);
            } else {
                self.peer.links.push(a);
            }
        }
        if let Some(a) = self.pe.assoc {
            while let Some((ppid, data)) = self.net.take(a) {
                if ppid == PPID_ASAP {
                    self.pe_message(a, &data);
                }
            }
        }
        let sessions = self.pe.sessions.clone();
        for a in sessions {
            while let Some((ppid, data)) = self.net.take(a) {
                if ppid == PPID_ASAP {
                    self.pe_message(a, &data);
                } else {
                    let _ = self.net.send(a, ppid, data);
                }
            }
        }
        self.pe.sessions.retain(|a| {
            matches!(
                self.net.state(*a),
                Some(LinkState::Up { .. } | LinkState::Connecting)
            )
        });
        let mut links = self.peer.links.clone();
        links.extend(self.peer.out);
        for a in links {
            while let Some((ppid, data)) = self.net.take(a) {
                if ppid == PPID_ENRP {
                    self.peer_message(a, data);
                }
            }
        }
        self.peer.links.retain(|a| {
            matches!(
                self.net.state(*a),
                Some(LinkState::Up { .. } | LinkState::Connecting)
            )
        });
    }

    fn pe_message(&mut self, a: AssocId, data: &Bytes) {
        match AsapMessage::decode_bytes(data) {
            Ok(AsapMessage::EndpointKeepAlive(k)) => {
                self.pe.keep_alives += 1;
                self.pe.registrar_id = Some(k.server_id);
                let pool = PoolHandle::new(Bytes::from(self.cfg.legit_pool.clone()));
                if k.pool_handle == pool && k.pe_id.is_none_or(|id| id.0 == self.pe.id) {
                    let ack = AsapMessage::EndpointKeepAliveAck(EndpointKeepAliveAck::new(
                        pool,
                        PeIdentifier(self.pe.id),
                    ));
                    // RSPLIB PEs answer on their home association; a takeover (H bit) arrives
                    // on a new one and becomes the home association.
                    let to = if k.home && Some(a) != self.pe.assoc {
                        self.pe.assoc = Some(a);
                        a
                    } else {
                        self.pe.assoc.unwrap_or(a)
                    };
                    let _ = self.net.send(to, PPID_ASAP, ack.to_bytes());
                }
            }
            Ok(AsapMessage::RegistrationResponse(r)) if r.pe_id.0 == self.pe.id => {
                self.pe.registered = Some(!r.reject && r.error.is_none());
            }
            Ok(AsapMessage::DeregistrationResponse(r)) if r.pe_id.0 == self.pe.id => {
                self.pe.removed_notices += 1;
                self.pe.registered = Some(false);
            }
            _ => {}
        }
    }

    fn peer_presence(
        &self,
        receiver: ServerId,
        reply_required: bool,
        local: Option<IpAddr>,
    ) -> Option<Bytes> {
        let l = self.peer.listener_addr?;
        let ip = match local {
            Some(ip) => ip,
            None if !l.ip().is_unspecified() => l.ip(),
            None => return None,
        };
        let protocol = match self.cfg.transport {
            TransportKind::Sctp => rserpool_proto::transport::TransportProtocol::Sctp,
            TransportKind::Tcp => rserpool_proto::transport::TransportProtocol::Tcp,
        };
        Some(
            EnrpMessage::Presence(Presence {
                reply_required,
                reserved_flags: 0,
                sender: self.peer.id,
                receiver,
                checksum: Some(PeChecksum(ChecksumAccumulator::default().value())),
                server_information: Some(ServerInformation {
                    server_id: self.peer.id,
                    transport: generate::transport_of(protocol, SocketAddr::new(ip, l.port())),
                }),
                skipped: Vec::new(),
            })
            .to_bytes(),
        )
    }

    fn peer_message(&mut self, a: AssocId, data: Bytes) {
        let msg = EnrpMessage::decode_bytes(&data);
        let on_out = Some(a) == self.peer.out;
        match msg {
            Ok(EnrpMessage::Presence(p)) => {
                self.peer.presences_from_registrar += 1;
                self.peer.registrar_id = Some(p.sender);
                if p.reply_required {
                    let local = self.pick_local(a);
                    if let Some(b) = self.peer_presence(p.sender, false, local) {
                        let _ = self.net.send(a, PPID_ENRP, b);
                    }
                }
            }
            Ok(EnrpMessage::HandleTableRequest(r)) => {
                let b = EnrpMessage::HandleTableResponse(HandleTableResponse {
                    sender: self.peer.id,
                    receiver: r.sender,
                    ..Default::default()
                })
                .to_bytes();
                let _ = self.net.send(a, PPID_ENRP, b);
            }
            Ok(EnrpMessage::ListRequest(r)) => {
                let b = EnrpMessage::ListResponse(ListResponse {
                    reject: false,
                    reserved_flags: 0,
                    sender: self.peer.id,
                    receiver: r.sender,
                    servers: Vec::new(),
                    skipped: Vec::new(),
                })
                .to_bytes();
                let _ = self.net.send(a, PPID_ENRP, b);
            }
            Ok(
                EnrpMessage::HandleUpdate(_)
                | EnrpMessage::InitTakeover(_)
                | EnrpMessage::TakeoverServer(_),
            ) => {}
            _ if on_out => self.peer.replies.push_back(data),
            _ => {}
        }
    }

    /// Pumps and services for `d`.
    fn settle(&mut self, d: Duration) -> io::Result<()> {
        let end = Instant::now() + d;
        loop {
            self.net.pump(
                Duration::from_millis(5).min(end.saturating_duration_since(Instant::now())),
            )?;
            self.service();
            if Instant::now() >= end {
                return Ok(());
            }
        }
    }

    fn legit_handle(&self) -> PoolHandle {
        PoolHandle::new(Bytes::from(self.cfg.legit_pool.clone()))
    }

    /// (Re-)registers the legitimate PE; true when accepted.
    fn register_pe(&mut self) -> io::Result<bool> {
        let up = self.pe.assoc.is_some_and(|a| self.net.is_up(a));
        if !up {
            if let Some(a) = self.pe.assoc.take() {
                self.net.close(a, true);
            }
            let addrs = self.cfg.registrar_asap.clone();
            let Some(a) = self.net.connect_wait(
                &addrs,
                ChannelKind::AsapToRegistrar,
                Protocol::Asap,
                Duration::from_secs(5),
            )?
            else {
                return Ok(false);
            };
            self.pe.assoc = Some(a);
        }
        let Some(a) = self.pe.assoc else {
            return Ok(false);
        };
        let Some(local) = self.pick_local(a) else {
            return Ok(false);
        };
        let protocol = match self.cfg.transport {
            TransportKind::Sctp => rserpool_proto::transport::TransportProtocol::Sctp,
            TransportKind::Tcp => rserpool_proto::transport::TransportProtocol::Tcp,
        };
        let ip = if self.pe.listener_addr.ip().is_unspecified() {
            local
        } else {
            self.pe.listener_addr.ip()
        };
        let transport = TransportParameter::with(
            protocol,
            self.pe.listener_addr.port(),
            TRANSPORT_USE_DATA_PLUS_CONTROL,
            [ip],
        );
        let reg = AsapMessage::Registration(Registration::new(
            self.legit_handle(),
            PoolElementParameter {
                pe_id: PeIdentifier(self.pe.id),
                home_server_id: ServerId::NONE,
                registration_life: LIFE,
                user_transport: transport.clone(),
                policy: Policy::RoundRobin,
                asap_transport: None,
            },
        ));
        self.pe.registered = None;
        let _ = self.net.send(a, PPID_ASAP, reg.to_bytes());
        let end = Instant::now() + self.cfg.reply_timeout * 2;
        while self.pe.registered.is_none() && Instant::now() < end && self.net.is_up(a) {
            self.net.pump(Duration::from_millis(10))?;
            self.service();
        }
        self.pe.transport = Some(transport);
        Ok(self.pe.registered == Some(true))
    }

    /// Connects the peer to the registrar's ENRP endpoint and announces it; true when the
    /// registrar answered the Presence.
    fn join_peer(&mut self) -> io::Result<bool> {
        let Some(enrp) = self.cfg.registrar_enrp.clone() else {
            return Ok(false);
        };
        if let Some(a) = self.peer.out.take() {
            self.net.close(a, true);
        }
        let Some(a) = self.net.connect_wait(
            &enrp,
            ChannelKind::Enrp,
            Protocol::Enrp,
            Duration::from_secs(5),
        )?
        else {
            return Ok(false);
        };
        self.peer.out = Some(a);
        let local = self.pick_local(a);
        let before = self.peer.presences_from_registrar;
        if let Some(b) = self.peer_presence(ServerId::NONE, true, local) {
            let _ = self.net.send(a, PPID_ENRP, b);
        }
        let end = Instant::now() + self.cfg.reply_timeout * 2;
        while self.peer.presences_from_registrar == before && Instant::now() < end {
            self.net.pump(Duration::from_millis(10))?;
            self.service();
        }
        self.peer.replies.clear();
        Ok(self.peer.presences_from_registrar > before)
    }

    // --------------------------------------------------------------------------------
    // registrar liveness

    fn current_pid(&self) -> Option<u32> {
        self.cfg.pid.as_ref().and_then(PidSource::pid)
    }

    fn sample_rss(&mut self) -> Option<u64> {
        let pid = self.current_pid()?;
        let r = rss_kib(pid)?;
        self.cur.rss_peak_kib = Some(self.cur.rss_peak_kib.map_or(r, |p| p.max(r)));
        Some(r)
    }

    /// True if the registrar is alive: its process exists (and kept its pid), or it
    /// accepts an association.
    fn registrar_alive(&mut self) -> io::Result<bool> {
        if self.cfg.pid.is_some() {
            return Ok(match (self.current_pid(), self.last_pid) {
                (Some(p), Some(l)) if p != l => false,
                (Some(p), _) => process_alive(p),
                (None, _) => false,
            });
        }
        let addrs = self.cfg.registrar_asap.clone();
        match self.net.connect_wait(
            &addrs,
            ChannelKind::AsapToRegistrar,
            Protocol::Asap,
            Duration::from_secs(3),
        )? {
            Some(a) => {
                self.net.close(a, false);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Something went down: find out whether the registrar died; if so record the crash,
    /// wait for it to come back and set the scene up again. False if it is gone for good.
    fn check_death(&mut self, after: &str) -> io::Result<bool> {
        if self.registrar_alive()? {
            return Ok(true);
        }
        self.cur.crashes.push(after.to_string());
        self.log(&format!("registrar died after {after}"));
        let end = Instant::now() + self.cfg.restart_wait;
        loop {
            if Instant::now() >= end {
                self.dead = true;
                self.report.gave_up = true;
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(250));
            let addrs = self.cfg.registrar_asap.clone();
            if let Some(a) = self.net.connect_wait(
                &addrs,
                ChannelKind::AsapToRegistrar,
                Protocol::Asap,
                Duration::from_secs(2),
            )? {
                self.net.close(a, false);
                break;
            }
        }
        self.last_pid = self.current_pid();
        for a in [
            self.attack.take(),
            self.attack2.take(),
            self.stranger.take(),
            self.announcer.take(),
            self.pe.assoc.take(),
        ]
        .into_iter()
        .flatten()
        {
            self.net.close(a, true);
        }
        self.settle(Duration::from_millis(300))?;
        self.register_pe()?;
        self.join_peer()?;
        self.baseline = None;
        self.probe("restart")?;
        Ok(true)
    }

    // --------------------------------------------------------------------------------
    // probes

    /// Probes the legitimate pool from a clean association.
    fn probe(&mut self, after: &str) -> io::Result<()> {
        self.last_probe = Instant::now();
        self.cur.probes += 1;
        let addrs = self.cfg.registrar_asap.clone();
        let Some(a) = self.net.connect_wait(
            &addrs,
            ChannelKind::AsapToRegistrar,
            Protocol::Asap,
            Duration::from_secs(3),
        )?
        else {
            if self.check_death(after)? {
                return self.probe(after);
            }
            return Ok(());
        };
        let hr = AsapMessage::HandleResolution(HandleResolution {
            pool_handle: self.legit_handle(),
            option: Some(HandleResolutionOption { items: 128 }),
            ..Default::default()
        });
        let _ = self.net.send(a, PPID_ASAP, hr.to_bytes());
        let end = Instant::now() + self.cfg.reply_timeout;
        let mut answer = None;
        while answer.is_none() && Instant::now() < end && self.net.is_up(a) {
            self.net.pump(Duration::from_millis(5))?;
            self.service();
            while let Some((ppid, data)) = self.net.take(a) {
                if ppid == PPID_ASAP
                    && let Ok(AsapMessage::HandleResolutionResponse(r)) =
                        AsapMessage::decode_bytes(&data)
                {
                    answer = Some(r);
                }
            }
        }
        self.net.close(a, false);
        let failure = match answer {
            None => Some((
                ProbeFailureKind::NoAnswer,
                "no Handle Resolution Response".to_string(),
            )),
            Some(r) => self.judge(&r),
        };
        if let Some((kind, detail)) = failure {
            self.log(&format!("probe after {after}: {kind:?} {detail}"));
            self.cur.probe_failures.push(ProbeFailure {
                after: after.to_string(),
                kind,
                detail,
            });
            // Put the PE back (re-registration takes a hijacked PE back, too), so that the
            // next class starts from the same scene.
            self.register_pe()?;
            self.settle(Duration::from_millis(100))?;
        }
        Ok(())
    }

    fn judge(
        &mut self,
        r: &rserpool_proto::asap::HandleResolutionResponse,
    ) -> Option<(ProbeFailureKind, String)> {
        let mine: Vec<&PoolElementParameter> = r
            .pool_elements
            .iter()
            .filter(|p| p.pe_id.0 == self.pe.id)
            .collect();
        // Every foreign PE is reported once (an injected PE stays until it expires).
        let others: Vec<String> = r
            .pool_elements
            .iter()
            .filter(|p| p.pe_id.0 != self.pe.id)
            .filter(|p| self.known_foreign.insert((p.pe_id.0, p.home_server_id.0)))
            .map(|p| format!("{:#010x}@{:#010x}", p.pe_id.0, p.home_server_id.0))
            .collect();
        let Some(pe) = mine.first() else {
            let why = match &r.error {
                Some(e) => format!(
                    "answer without the PE (cause {:?})",
                    e.causes.first().map(|c| c.code)
                ),
                None => format!("answer without the PE ({} others)", others.len()),
            };
            return Some((ProbeFailureKind::Removed, why));
        };
        let expect_transport = self.pe.transport.clone();
        let base = match &self.baseline {
            Some(b) => b.clone(),
            None => {
                let b = Baseline {
                    home: pe.home_server_id,
                    transport: expect_transport
                        .clone()
                        .unwrap_or_else(|| pe.user_transport.clone()),
                };
                if self.report.registrar_id.is_none() {
                    self.report.registrar_id = Some(pe.home_server_id);
                }
                self.baseline = Some(b.clone());
                b
            }
        };
        if !same_transport(&pe.user_transport, &base.transport) {
            return Some((
                ProbeFailureKind::Hijacked,
                format!(
                    "user transport {:?} port {} {:?}",
                    pe.user_transport.protocol, pe.user_transport.port, pe.user_transport.addresses
                ),
            ));
        }
        if pe.home_server_id != base.home {
            return Some((
                ProbeFailureKind::Rehomed,
                format!(
                    "home {:#010x}, expected {:#010x}",
                    pe.home_server_id.0, base.home.0
                ),
            ));
        }
        if !others.is_empty() {
            return Some((
                ProbeFailureKind::Injected,
                format!("also named: {}", others.join(" ")),
            ));
        }
        None
    }

    fn maybe_probe(&mut self, after: &str) -> io::Result<()> {
        if self.last_probe.elapsed() >= self.cfg.probe_interval {
            self.probe(after)?;
        }
        Ok(())
    }

    // --------------------------------------------------------------------------------
    // exchanges

    fn sender_assoc(&mut self, s: Sender) -> io::Result<Option<AssocId>> {
        let (slot, addrs, channel, protocol) = match s {
            Sender::Asap => (
                self.attack,
                self.cfg.registrar_asap.clone(),
                ChannelKind::AsapToRegistrar,
                Protocol::Asap,
            ),
            Sender::AsapOther => (
                self.attack2,
                self.cfg.registrar_asap.clone(),
                ChannelKind::AsapToRegistrar,
                Protocol::Asap,
            ),
            Sender::Peer => return Ok(self.peer.out.filter(|a| self.net.is_up(*a))),
            Sender::Stranger | Sender::Announcer => {
                let Some(e) = self.cfg.registrar_enrp.clone() else {
                    return Ok(None);
                };
                let slot = if s == Sender::Stranger {
                    self.stranger
                } else {
                    self.announcer
                };
                (slot, e, ChannelKind::Enrp, Protocol::Enrp)
            }
        };
        if let Some(a) = slot
            && self.net.is_up(a)
        {
            return Ok(Some(a));
        }
        if let Some(a) = slot {
            self.net.close(a, true);
        }
        let a = self
            .net
            .connect_wait(&addrs, channel, protocol, Duration::from_secs(5))?;
        match s {
            Sender::Asap => self.attack = a,
            Sender::AsapOther => self.attack2 = a,
            Sender::Stranger => self.stranger = a,
            Sender::Announcer => self.announcer = a,
            Sender::Peer => {}
        }
        Ok(a)
    }

    fn marker(&mut self, s: Sender) -> (Bytes, Marker) {
        self.marker_n = self.marker_n.wrapping_add(1);
        match s {
            Sender::Asap | Sender::AsapOther => {
                let h = Bytes::from(format!("~m{}", self.marker_n));
                let m = AsapMessage::HandleResolution(HandleResolution {
                    pool_handle: PoolHandle::new(h.clone()),
                    ..Default::default()
                });
                (m.to_bytes(), Marker::Asap(h))
            }
            Sender::Peer => {
                let m = EnrpMessage::ListRequest(ListRequest {
                    reserved_flags: 0,
                    sender: self.peer.id,
                    receiver: ServerId::NONE,
                    skipped: Vec::new(),
                });
                (m.to_bytes(), Marker::PeerList)
            }
            Sender::Stranger | Sender::Announcer => {
                let id = ServerId(MARKER_BASE | (self.marker_n & 0xffff));
                let m = EnrpMessage::ListRequest(ListRequest {
                    reserved_flags: 0,
                    sender: id,
                    receiver: ServerId::NONE,
                    skipped: Vec::new(),
                });
                (m.to_bytes(), Marker::Enrp(id))
            }
        }
    }

    fn is_marker(m: &Marker, protocol: Protocol, data: &Bytes) -> bool {
        match (m, protocol) {
            (Marker::Asap(h), Protocol::Asap) => matches!(
                AsapMessage::decode_bytes(data),
                Ok(AsapMessage::HandleResolutionResponse(r)) if r.pool_handle.as_bytes() == &h[..]
            ),
            (Marker::Enrp(id), Protocol::Enrp) => matches!(
                EnrpMessage::decode_bytes(data),
                Ok(EnrpMessage::ListResponse(r)) if r.receiver == *id
            ),
            (Marker::PeerList, Protocol::Enrp) => {
                matches!(
                    EnrpMessage::decode_bytes(data),
                    Ok(EnrpMessage::ListResponse(_))
                )
            }
            _ => false,
        }
    }

    /// Sends `msgs` from `s`, then a marker; returns the replies that came before the
    /// marker's answer.
    fn exchange(&mut self, s: Sender, msgs: &[(u32, Bytes)]) -> io::Result<Option<Exchange>> {
        let Some(a) = self.sender_assoc(s)? else {
            return Ok(None);
        };
        for (ppid, m) in msgs {
            let _ = self.net.send(a, *ppid, m.clone());
        }
        let (mb, marker) = self.marker(s);
        let _ = self.net.send(a, s.protocol().ppid(), mb);
        let mut ex = Exchange {
            replies: Vec::new(),
            marker_seen: false,
            link_lost: false,
        };
        let end = Instant::now() + self.cfg.reply_timeout;
        while Instant::now() < end {
            self.net.pump(Duration::from_millis(2))?;
            self.service();
            loop {
                let next = if s == Sender::Peer {
                    self.peer.replies.pop_front().map(|d| (PPID_ENRP, d))
                } else {
                    self.net.take(a)
                };
                let Some((ppid, data)) = next else { break };
                let Some(p) = Protocol::from_ppid(ppid) else {
                    continue;
                };
                if Self::is_marker(&marker, p, &data) {
                    ex.marker_seen = true;
                    break;
                }
                let r = Reply::classify(p, &data);
                if !registrar_initiated(r) {
                    ex.replies.push(r);
                }
            }
            if ex.marker_seen {
                break;
            }
            if !self.net.is_up(a) {
                ex.link_lost = true;
                break;
            }
        }
        if !ex.marker_seen && !ex.link_lost {
            self.cur.lost_markers += 1;
        }
        Ok(Some(ex))
    }

    fn record(&mut self, ex: &Exchange, what: &str) -> io::Result<()> {
        for r in &ex.replies {
            *self.cur.replies.entry(*r).or_insert(0) += 1;
        }
        if ex.replies.is_empty() {
            self.cur.silent += 1;
        }
        if ex.link_lost {
            let crashes = self.cur.crashes.len();
            if self.check_death(what)? && self.cur.crashes.len() == crashes {
                self.cur.aborted += 1;
            }
        }
        Ok(())
    }

    /// Plays a list of cases: those with an expectation one by one, the rest in batches.
    fn play(&mut self, cases: &[Case]) -> io::Result<()> {
        // Without an ENRP endpoint (or a joined peer) those senders cannot speak.
        let enrp = self.cfg.registrar_enrp.is_some();
        let peer = self.peer.out.is_some();
        let cases: Vec<Case> = cases
            .iter()
            .filter(|c| match c.sender {
                Sender::Asap | Sender::AsapOther => true,
                Sender::Peer => peer,
                Sender::Stranger | Sender::Announcer => enrp,
            })
            .cloned()
            .collect();
        let cases = &cases[..];
        let mut i = 0;
        while i < cases.len() && !self.dead {
            let c = &cases[i];
            let mut j = i + 1;
            if c.expect.is_none() {
                while j < cases.len()
                    && j - i < self.cfg.batch.max(1)
                    && cases[j].sender == c.sender
                    && cases[j].expect.is_none()
                {
                    j += 1;
                }
            }
            let batch = &cases[i..j];
            let msgs: Vec<(u32, Bytes)> = batch.iter().map(|c| (c.ppid, c.data.clone())).collect();
            let what = if batch.len() == 1 {
                c.name.clone()
            } else {
                format!("{} (batch of {})", c.name, batch.len())
            };
            let mut last_replies: Vec<Reply> = Vec::new();
            let failures = self.cur.probe_failures.len();
            let crashes = self.cur.crashes.len();
            let mut outcome = self.exchange(c.sender, &msgs)?;
            if outcome.is_none() {
                // The sender cannot reach the registrar: is it dead? If it came back, the
                // case is played again.
                if !self.check_death(&what)? {
                    return Ok(());
                }
                outcome = self.exchange(c.sender, &msgs)?;
            }
            match outcome {
                None => {}
                Some(ex) => {
                    self.cur.sent += batch.len() as u64;
                    if let Some(exp) = &c.expect
                        && ex.marker_seen
                        && !c.matches(&ex.replies)
                    {
                        self.cur.deviations.push(Deviation {
                            case: c.name.clone(),
                            expected: exp.clone(),
                            got: ex.replies.clone(),
                        });
                    }
                    self.record(&ex, &what)?;
                    last_replies = ex.replies;
                    // A registrar that died after answering the marker is found here, not
                    // one case later.
                    if !ex.link_lost
                        && let Some(pid) = self.current_pid()
                        && (!process_alive(pid) || self.last_pid.is_some_and(|l| l != pid))
                        && !self.check_death(&what)?
                    {
                        return Ok(());
                    }
                }
            }
            if self.probe_each && !self.dead {
                // Let verifications triggered by the case (keep-alives) finish first.
                self.settle(Duration::from_millis(50))?;
                self.probe(&cases[j - 1].name)?;
                if c.then_close && !self.dead {
                    let slot = match c.sender {
                        Sender::Asap => self.attack.take(),
                        Sender::AsapOther => self.attack2.take(),
                        Sender::Stranger => self.stranger.take(),
                        Sender::Announcer => self.announcer.take(),
                        Sender::Peer => None,
                    };
                    if let Some(a) = slot {
                        self.net.close(a, false);
                        self.settle(Duration::from_millis(300))?;
                        self.probe(&format!("{} + its association closed", c.name))?;
                    }
                }
            } else {
                self.maybe_probe(&cases[j - 1].name)?;
            }
            if self.case_log.is_some() {
                let probe: Vec<String> = self.cur.probe_failures[failures..]
                    .iter()
                    .map(|f| format!("{:?}", f.kind))
                    .chain((self.cur.crashes.len() > crashes).then(|| "CRASH".to_string()))
                    .collect();
                let expected = c.expect.as_ref().map_or("-".to_string(), |alts| {
                    alts.iter()
                        .map(|a| {
                            a.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .collect::<Vec<_>>()
                        .join(" | ")
                });
                let line = format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    self.cur.class.letter(),
                    what,
                    last_replies
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    expected,
                    probe.join(" ")
                );
                if let Some(w) = self.case_log.as_mut() {
                    let _ = w.write_all(line.as_bytes());
                }
            }
            i = j;
        }
        Ok(())
    }

    // --------------------------------------------------------------------------------
    // the run

    fn context(&self) -> Context {
        let own_ip = self
            .attack
            .or(self.pe.assoc)
            .and_then(|a| self.pick_local(a))
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let transport = self
            .pe
            .transport
            .clone()
            .unwrap_or_else(|| TransportParameter::tcp(1, 1, [own_ip]));
        Context {
            seed: self.cfg.seed,
            legit_pool: Bytes::from(self.cfg.legit_pool.clone()),
            legit_pe_id: self.pe.id,
            legit_transport: transport.clone(),
            own_ip,
            own_port: 40_000 + (self.cfg.seed % 1000) as u16,
            registrar_id: self
                .baseline
                .as_ref()
                .map(|b| b.home)
                .or(self.pe.registrar_id)
                .or(self.peer.registrar_id)
                .unwrap_or(ServerId::NONE),
            peer_id: self.peer.id,
            stranger_id: STRANGER_ID,
            announcer_id: ANNOUNCER_ID,
            announcer_transport: generate::announcer_transport(transport.protocol, own_ip),
            vectors: self.vectors.clone(),
            mutations: self.cfg.scale.mutations,
        }
    }

    /// Registers the legitimate PE, joins the peer, probes once, then plays the classes;
    /// `after_class` sees each class's report as soon as it is complete (the run waits for
    /// it: a test inspects the registrar there).
    pub fn run_with(mut self, mut after_class: impl FnMut(&ClassReport)) -> io::Result<Report> {
        self.last_pid = self.current_pid();
        let addrs = self.cfg.registrar_asap.clone();
        let Some(a) = self.net.connect_wait(
            &addrs,
            ChannelKind::AsapToRegistrar,
            Protocol::Asap,
            Duration::from_secs(5),
        )?
        else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "registrar not reachable",
            ));
        };
        self.attack = Some(a);
        if !self.register_pe()? {
            return Err(io::Error::other(
                "the legitimate PE's registration was refused",
            ));
        }
        self.report.peer_joined = self.join_peer()?;
        self.settle(Duration::from_millis(200))?;
        self.cur = ClassReport::new(Class::Truncation);
        self.probe("start")?;
        if !self.cur.probe_failures.is_empty() {
            return Err(io::Error::other(format!(
                "the first probe failed: {:?}",
                self.cur.probe_failures
            )));
        }
        self.report.rss_baseline_kib = self.sample_rss();
        let classes = self.cfg.classes.clone();
        for class in classes {
            if self.dead {
                break;
            }
            self.cur = ClassReport::new(class);
            let started = Instant::now();
            self.log(&format!("class {class}"));
            let ctx = self.context();
            match class {
                Class::Truncation => {
                    let cases = generate::truncations(&ctx);
                    self.play(&cases)?;
                    if self.cfg.transport == TransportKind::Tcp {
                        self.rtf_cases()?;
                    }
                }
                Class::Unknown => self.play(&generate::unknowns(&ctx))?,
                Class::InvalidRegistration => self.play(&generate::invalid_registrations(&ctx))?,
                Class::Forged => {
                    let mut cases = generate::forged(&ctx);
                    // The announcing stranger introduces itself first.
                    if let Some(k) = cases.iter().position(|c| c.sender == Sender::Announcer) {
                        let p = Case::new(
                            Class::Forged,
                            "enrp:announcer:presence",
                            Sender::Announcer,
                            generate::announcer_presence(&ctx),
                        );
                        cases.insert(k, p);
                    }
                    self.probe_each = true;
                    let r = self.play(&cases);
                    self.probe_each = false;
                    r?;
                    // Give contested PEs time to be verified before the probe.
                    self.settle(Duration::from_millis(300))?;
                }
                Class::Flood => self.floods(&ctx)?,
                Class::Mutation => self.play(&generate::mutations(&ctx))?,
            }
            if !self.dead {
                self.settle(Duration::from_millis(200))?;
                self.probe(&format!("end of class {}", class.letter()))?;
            }
            self.cur.rss_kib = self.sample_rss();
            self.cur.elapsed = started.elapsed();
            let done = std::mem::replace(&mut self.cur, ClassReport::new(class));
            after_class(&done);
            self.report.classes.push(done);
        }
        if let Some(w) = self.case_log.as_mut() {
            let _ = w.flush();
        }
        self.report.keep_alives = self.pe.keep_alives;
        self.report.removal_notices = self.pe.removed_notices;
        Ok(self.report)
    }

    /// [`Suite::run_with`] without a callback.
    pub fn run(self) -> io::Result<Report> {
        self.run_with(|_| {})
    }

    // --------------------------------------------------------------------------------
    // class a over RTF: broken framing

    /// RTF-level garbage on raw TCP connections (TCP mapping only): no HELLO, a bad magic,
    /// a frame length beyond the limit, a reserved frame type, EOF inside a frame.
    fn rtf_cases(&mut self) -> io::Result<()> {
        let Some(&addr) = self.cfg.registrar_asap.first() else {
            return Ok(());
        };
        let hello = Frame::Hello(Hello {
            channel_kind: ChannelKind::AsapToRegistrar,
            heartbeat_interval_ms: 5000,
        })
        .to_bytes();
        let mut bad_magic = hello.to_vec();
        bad_magic[12] ^= 0xff;
        let mut huge = hello.to_vec();
        huge.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 11]);
        let mut reserved = hello.to_vec();
        reserved.extend_from_slice(&[0x05, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0]);
        let mut short = hello.to_vec();
        short.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 11]);
        let mut partial = hello.to_vec();
        partial.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 11, 5, 0]);
        let cases: [(&str, Vec<u8>); 7] = [
            ("rtf:no-hello", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
            ("rtf:bad-magic", bad_magic),
            ("rtf:frame-length-4g", huge),
            ("rtf:reserved-frame-type", reserved),
            ("rtf:frame-length-4", short),
            ("rtf:eof-inside-frame", partial),
            ("rtf:hello-twice", [hello.to_vec(), hello.to_vec()].concat()),
        ];
        for (name, bytes) in cases {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let _ = s.write_all(&bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut buf = [0u8; 256];
            let mut closed = false;
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end {
                match s.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
                self.net.pump(Duration::ZERO)?;
                self.service();
            }
            self.cur.sent += 1;
            self.cur.notes.push(format!(
                "{name}: connection {}",
                if closed {
                    "closed by the registrar"
                } else {
                    "left open"
                }
            ));
            if !self.registrar_alive()? {
                self.check_death(name)?;
            }
        }
        Ok(())
    }

    // --------------------------------------------------------------------------------
    // class e

    /// Sends `msgs(i)` for `i in 0..n` on `a` with at most `window` unanswered, counting
    /// the replies; returns (replies by kind, elapsed, link lost).
    fn pipeline(
        &mut self,
        a: AssocId,
        n: usize,
        window: usize,
        mut msg: impl FnMut(usize) -> Bytes,
        answered: impl Fn(&Reply) -> bool,
    ) -> io::Result<(BTreeMap<Reply, u64>, Duration, bool)> {
        let started = Instant::now();
        let mut replies = BTreeMap::new();
        let (mut sent, mut done) = (0usize, 0usize);
        let mut last_progress = Instant::now();
        let mut lost = false;
        while done < n {
            while sent < n && sent - done < window {
                let _ = self.net.send(a, PPID_ASAP, msg(sent));
                sent += 1;
            }
            self.net.pump(Duration::from_millis(2))?;
            self.service();
            while let Some((ppid, data)) = self.net.take(a) {
                let Some(p) = Protocol::from_ppid(ppid) else {
                    continue;
                };
                let r = Reply::classify(p, &data);
                if registrar_initiated(r) {
                    continue;
                }
                if answered(&r) {
                    done += 1;
                    last_progress = Instant::now();
                }
                *replies.entry(r).or_insert(0) += 1;
            }
            if !self.net.is_up(a) {
                lost = true;
                break;
            }
            if last_progress.elapsed() > self.cfg.reply_timeout * 3 {
                break;
            }
            if sent.is_multiple_of(1024) {
                self.sample_rss();
            }
        }
        self.cur.sent += sent as u64;
        for (r, k) in &replies {
            *self.cur.replies.entry(*r).or_insert(0) += k;
        }
        Ok((replies, started.elapsed(), lost))
    }

    fn fmt_replies(m: &BTreeMap<Reply, u64>) -> String {
        let v: Vec<String> = m.iter().map(|(r, n)| format!("{r} x{n}")).collect();
        v.join(", ")
    }

    fn floods(&mut self, ctx: &Context) -> io::Result<()> {
        let scale = self.cfg.scale;
        let is_reg = |r: &Reply| {
            matches!(
                r,
                Reply::RegistrationOk | Reply::RegistrationReject(_) | Reply::AsapError(_)
            )
        };
        // 1. Registrations over one association.
        if scale.flood_registrations > 0 {
            let addrs = self.cfg.registrar_asap.clone();
            if let Some(a) = self.net.connect_wait(
                &addrs,
                ChannelKind::AsapToRegistrar,
                Protocol::Asap,
                Duration::from_secs(5),
            )? {
                let rss0 = self.sample_rss();
                let (m, t, lost) = self.pipeline(
                    a,
                    scale.flood_registrations,
                    256,
                    |i| {
                        ctx.own_registration(
                            b"hx-flood-one",
                            0x0e00_0000 + i as u32,
                            Policy::RoundRobin,
                        )
                    },
                    is_reg,
                )?;
                let rss1 = self.sample_rss();
                self.cur.notes.push(format!(
                    "{} registrations over one association in {:.2} s: {}{}; RSS {} -> {} KiB",
                    scale.flood_registrations,
                    t.as_secs_f64(),
                    Self::fmt_replies(&m),
                    if lost { " (association lost)" } else { "" },
                    rss0.unwrap_or(0),
                    rss1.unwrap_or(0)
                ));
                self.net.close(a, false);
                if lost {
                    self.check_death("flood: registrations")?;
                }
                self.settle(Duration::from_millis(500))?;
                let rss2 = self.sample_rss();
                self.cur
                    .notes
                    .push(format!("  after closing it: RSS {} KiB", rss2.unwrap_or(0)));
                self.probe("flood: registrations")?;
            }
        }
        // 2. Many pools.
        if scale.flood_pools > 0 && !self.dead {
            let per = scale.pools_per_assoc.max(1);
            let groups = scale.flood_pools.div_ceil(per);
            let started = Instant::now();
            let rss0 = self.sample_rss();
            let mut all = BTreeMap::new();
            let mut links = Vec::new();
            for g in 0..groups {
                let addrs = self.cfg.registrar_asap.clone();
                let Some(a) = self.net.connect_wait(
                    &addrs,
                    ChannelKind::AsapToRegistrar,
                    Protocol::Asap,
                    Duration::from_secs(5),
                )?
                else {
                    break;
                };
                links.push(a);
                let n = per.min(scale.flood_pools - g * per);
                let (m, _, lost) = self.pipeline(
                    a,
                    n,
                    256,
                    |i| {
                        let k = g * per + i;
                        ctx.own_registration(
                            format!("hx-pool-{k}").as_bytes(),
                            0x0f00_0000 + k as u32,
                            Policy::RoundRobin,
                        )
                    },
                    is_reg,
                )?;
                for (r, k) in m {
                    *all.entry(r).or_insert(0) += k;
                }
                if lost {
                    self.check_death("flood: pools")?;
                    break;
                }
            }
            let rss1 = self.sample_rss();
            self.cur.notes.push(format!(
                "{} pools over {} associations in {:.2} s: {}; RSS {} -> {} KiB",
                scale.flood_pools,
                links.len(),
                started.elapsed().as_secs_f64(),
                Self::fmt_replies(&all),
                rss0.unwrap_or(0),
                rss1.unwrap_or(0)
            ));
            for a in links {
                self.net.close(a, false);
            }
            self.settle(Duration::from_millis(500))?;
            let rss2 = self.sample_rss();
            self.cur.notes.push(format!(
                "  after closing them: RSS {} KiB",
                rss2.unwrap_or(0)
            ));
            self.probe("flood: pools")?;
        }
        // 3. Handle Resolutions, answers read.
        if scale.hr_flood > 0
            && !self.dead
            && let Some(a) = self.sender_assoc(Sender::Asap)?
        {
            let legit = self.legit_handle();
            let hr = AsapMessage::HandleResolution(HandleResolution {
                pool_handle: legit,
                ..Default::default()
            })
            .to_bytes();
            let (m, t, lost) = self.pipeline(
                a,
                scale.hr_flood,
                512,
                |_| hr.clone(),
                |r| matches!(r, Reply::ResolutionOk | Reply::ResolutionError(_)),
            )?;
            self.cur.notes.push(format!(
                "{} handle resolutions in {:.2} s ({:.0}/s): {}",
                scale.hr_flood,
                t.as_secs_f64(),
                scale.hr_flood as f64 / t.as_secs_f64().max(1e-6),
                Self::fmt_replies(&m)
            ));
            if lost {
                self.check_death("flood: handle resolutions")?;
            }
            self.probe("flood: handle resolutions")?;
        }
        // 4. Handle Resolutions to an association that never reads.
        if scale.hr_unread > 0 && !self.dead {
            self.unread_flood(scale.hr_unread)?;
            self.probe("flood: unread handle resolutions")?;
        }
        // 5. Endpoint Unreachable reports against the live PE, with a Handle Resolution
        // from a clean association right behind every few reports: the reports must
        // neither remove the PE nor hide it from the answers.
        if scale.eu_flood > 0
            && !self.dead
            && let Some(a) = self.sender_assoc(Sender::Asap)?
        {
            let eu = AsapMessage::EndpointUnreachable(EndpointUnreachable::new(
                self.legit_handle(),
                PeIdentifier(self.pe.id),
            ))
            .to_bytes();
            let hr = AsapMessage::HandleResolution(HandleResolution {
                pool_handle: self.legit_handle(),
                option: Some(HandleResolutionOption { items: 128 }),
                ..Default::default()
            })
            .to_bytes();
            let addrs = self.cfg.registrar_asap.clone();
            let watch = self.net.connect_wait(
                &addrs,
                ChannelKind::AsapToRegistrar,
                Protocol::Asap,
                Duration::from_secs(3),
            )?;
            let started = Instant::now();
            let (mut sent, mut asked, mut answered, mut hidden) = (0usize, 0usize, 0usize, 0usize);
            let (mut windows, mut in_window) = (0usize, false);
            let mut lost = false;
            let me = self.pe.id;
            let mut count = |net: &mut Net, answered: &mut usize, hidden: &mut usize| {
                let Some(w) = watch else { return };
                while let Some((_, data)) = net.take(w) {
                    if let Ok(AsapMessage::HandleResolutionResponse(r)) =
                        AsapMessage::decode_bytes(&data)
                    {
                        *answered += 1;
                        let without = !r.pool_elements.iter().any(|p| p.pe_id.0 == me);
                        if without {
                            *hidden += 1;
                            windows += usize::from(!in_window);
                        }
                        in_window = without;
                    }
                }
            };
            while sent < scale.eu_flood {
                for _ in 0..10 {
                    let _ = self.net.send(a, PPID_ASAP, eu.clone());
                    sent += 1;
                }
                if let Some(w) = watch {
                    let _ = self.net.send(w, PPID_ASAP, hr.clone());
                    asked += 1;
                }
                self.net.pump(Duration::from_millis(1))?;
                self.service();
                while self.net.take(a).is_some() {}
                count(&mut self.net, &mut answered, &mut hidden);
                if !self.net.is_up(a) {
                    lost = true;
                    break;
                }
            }
            let end = Instant::now() + self.cfg.reply_timeout;
            while answered < asked && Instant::now() < end {
                self.net.pump(Duration::from_millis(5))?;
                self.service();
                count(&mut self.net, &mut answered, &mut hidden);
            }
            if let Some(w) = watch {
                self.net.close(w, false);
            }
            self.cur.sent += sent as u64;
            self.cur.hidden_answers = (hidden as u64, answered as u64);
            self.cur.hidden_windows = (windows as u64, started.elapsed());
            self.cur.notes.push(format!(
                "{sent} Endpoint Unreachable reports against the live PE in {:.2} s; {answered} resolutions during the flood, {hidden} of them without the PE{}",
                started.elapsed().as_secs_f64(),
                if lost { " (association lost)" } else { "" }
            ));
            if lost {
                self.check_death("flood: endpoint unreachable")?;
            }
            // Reports for PEs that do not exist.
            let mut bogus = 0;
            for i in 0..scale.eu_flood.min(5000) {
                let m = AsapMessage::EndpointUnreachable(EndpointUnreachable::new(
                    self.legit_handle(),
                    PeIdentifier(0x1100_0000 + i as u32),
                ))
                .to_bytes();
                let _ = self.net.send(a, PPID_ASAP, m);
                bogus += 1;
            }
            self.cur.sent += bogus;
            self.settle(Duration::from_millis(200))?;
            self.probe("flood: endpoint unreachable")?;
        }
        // 6. Association churn.
        if scale.churn > 0 && !self.dead {
            let started = Instant::now();
            let mut ok = 0;
            let addrs = self.cfg.registrar_asap.clone();
            for i in 0..scale.churn {
                if let Some(a) = self.net.connect_wait(
                    &addrs,
                    ChannelKind::AsapToRegistrar,
                    Protocol::Asap,
                    Duration::from_secs(3),
                )? {
                    let _ = self.net.send(
                        a,
                        PPID_ASAP,
                        ctx.own_registration(
                            b"hx-churn",
                            0x1200_0000 + i as u32,
                            Policy::RoundRobin,
                        ),
                    );
                    self.net.close(a, i % 2 == 0);
                    ok += 1;
                }
                self.service();
            }
            self.cur.sent += ok;
            self.cur.notes.push(format!("{ok} associations opened, registered a PE and closed (every other one aborted) in {:.2} s", started.elapsed().as_secs_f64()));
            self.settle(Duration::from_millis(500))?;
            self.probe("flood: association churn")?;
        }
        Ok(())
    }

    /// Writes Handle Resolutions to a raw association that never reads, until `n` are
    /// written, the writes block for 2 s, or the registrar drops the association.
    fn unread_flood(&mut self, n: usize) -> io::Result<()> {
        let Some(&addr) = self.cfg.registrar_asap.first() else {
            return Ok(());
        };
        let hr = AsapMessage::HandleResolution(HandleResolution {
            pool_handle: self.legit_handle(),
            ..Default::default()
        })
        .to_bytes();
        let started = Instant::now();
        let rss0 = self.sample_rss();
        let mut written = 0usize;
        let mut outcome = "writes blocked for 2 s";
        match self.cfg.transport {
            TransportKind::Tcp => {
                let sock = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    None,
                )?;
                let _ = sock.set_recv_buffer_size(4096);
                sock.connect_timeout(&addr.into(), Duration::from_secs(3))?;
                sock.set_nonblocking(true)?;
                let mut s: std::net::TcpStream = sock.into();
                let mut out = Frame::Hello(Hello {
                    channel_kind: ChannelKind::AsapToRegistrar,
                    heartbeat_interval_ms: 60_000,
                })
                .to_bytes()
                .to_vec();
                let frame = Frame::Data {
                    unordered: false,
                    stream: 0,
                    ppid: PPID_ASAP,
                    payload: hr.clone(),
                }
                .to_bytes();
                let mut off = 0usize;
                let mut blocked_since: Option<Instant> = None;
                loop {
                    while out.len() - off < 64 * 1024 && written < n {
                        out.extend_from_slice(&frame);
                        written += 1;
                    }
                    if off == out.len() {
                        outcome = "all written";
                        break;
                    }
                    match s.write(&out[off..]) {
                        Ok(k) => {
                            off += k;
                            blocked_since = None;
                            if off > 1 << 20 {
                                out.drain(..off);
                                off = 0;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            let since = *blocked_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(2)
                                || started.elapsed() > UNREAD_FLOOD_TIME
                            {
                                break;
                            }
                            self.net.pump(Duration::from_millis(1))?;
                            self.service();
                            self.sample_rss();
                        }
                        Err(_) => {
                            outcome = "dropped by the registrar";
                            break;
                        }
                    }
                }
                written -= (out.len() - off) / frame.len();
                // Wait for the registrar to drop us (a reset shows in SO_ERROR) while it
                // works through what it read.
                let sock = socket2::SockRef::from(&s);
                let end = Instant::now() + Duration::from_secs(10);
                while outcome != "dropped by the registrar" && Instant::now() < end {
                    match sock.take_error() {
                        Ok(Some(_)) | Err(_) => outcome = "dropped by the registrar",
                        Ok(None) => {
                            self.net.pump(Duration::from_millis(20))?;
                            self.service();
                            self.sample_rss();
                        }
                    }
                }
                let mut b = [0u8; 1];
                if outcome != "dropped by the registrar"
                    && let Err(e) = s.peek(&mut b)
                    && e.kind() != io::ErrorKind::WouldBlock
                {
                    outcome = "dropped by the registrar";
                }
            }
            TransportKind::Sctp => {
                let opts = crate::transport::sctp::socket::SctpOptions::default();
                let s = crate::transport::sctp::socket::SctpSocket::connect(&[addr], &opts)?;
                // Wait for the association (a one-to-one socket refuses sends until then).
                let up_by = Instant::now() + Duration::from_secs(3);
                while !s.peer_addrs().is_ok_and(|a| !a.is_empty()) && Instant::now() < up_by {
                    self.net.pump(Duration::from_millis(5))?;
                    self.service();
                }
                let mut blocked_since: Option<Instant> = None;
                while written < n {
                    match s.send(PPID_ASAP, 0, &hr) {
                        Ok(_) => {
                            written += 1;
                            blocked_since = None;
                        }
                        Err(e)
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.raw_os_error() == Some(libc::ENOTCONN)
                                || e.kind() == io::ErrorKind::NotConnected =>
                        {
                            let since = *blocked_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(2)
                                || started.elapsed() > UNREAD_FLOOD_TIME
                            {
                                break;
                            }
                            self.net.pump(Duration::from_millis(1))?;
                            self.service();
                            self.sample_rss();
                        }
                        Err(_) => {
                            outcome = "dropped by the registrar";
                            break;
                        }
                    }
                }
                if written == n {
                    outcome = "all written";
                }
                let end = Instant::now() + Duration::from_secs(10);
                while outcome != "dropped by the registrar" && Instant::now() < end {
                    match s.take_error() {
                        Ok(Some(_)) | Err(_) => outcome = "dropped by the registrar",
                        Ok(None) => {
                            // A one-to-one SCTP socket whose association was aborted
                            // refuses sends.
                            if let Err(e) = s.send(PPID_ASAP, 0, &hr)
                                && e.kind() != io::ErrorKind::WouldBlock
                            {
                                outcome = "dropped by the registrar";
                            }
                            self.net.pump(Duration::from_millis(20))?;
                            self.service();
                            self.sample_rss();
                        }
                    }
                }
                let _ = s.set_abort_on_close();
            }
        }
        if outcome == "writes blocked for 2 s" && started.elapsed() > UNREAD_FLOOD_TIME {
            outcome = "still reading after 30 s";
        }
        let rss1 = self.sample_rss();
        self.cur.sent += written as u64;
        self.cur.notes.push(format!(
            "{written} handle resolutions to an association that never reads ({:.2} s): {outcome}; RSS {} -> {} KiB",
            started.elapsed().as_secs_f64(),
            rss0.unwrap_or(0),
            rss1.unwrap_or(0)
        ));
        self.settle(Duration::from_millis(300))?;
        if !self.registrar_alive()? {
            self.check_death("flood: unread handle resolutions")?;
        }
        Ok(())
    }
}

/// Messages a registrar sends on its own (keep-alives to the attacker's own PEs; Presences,
/// requests and updates to a server it took for a peer): not replies.
fn registrar_initiated(r: Reply) -> bool {
    use rserpool_proto::{asap::msg_type as a, enrp::msg_type as e};
    matches!(
        r,
        Reply::Asap(a::ENDPOINT_KEEP_ALIVE)
            | Reply::Enrp(
                e::PRESENCE | e::HANDLE_TABLE_REQUEST | e::LIST_REQUEST | e::HANDLE_UPDATE
            )
    )
}

fn same_transport(a: &TransportParameter, b: &TransportParameter) -> bool {
    let norm = |t: &TransportParameter| {
        let mut v: Vec<IpAddr> = t.addresses.iter().copied().collect();
        v.sort();
        (t.protocol, t.port, v)
    };
    norm(a) == norm(b)
}
