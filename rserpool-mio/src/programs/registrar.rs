//! `rspregistrar`: the [`Registrar`] machine on the mio [`Driver`].
//!
//! # Endpoints
//! * **ASAP** (`-asap=`): kernel SCTP (RSPLIB: `auto` = wildcard, random port) and the TCP
//!   mapping (`auto` = wildcard, **3863/tcp**, the IANA asap-tcp port; an address without port
//!   also gets 3863 over TCP). With `-transport=auto` the registrar listens on both when the
//!   kernel has SCTP, else on TCP only; `-transport=tcp|sctp` picks one.
//! * **ENRP** (`-enrp=`): the same, with **9901/tcp** for the TCP mapping.
//! * **Announces**: ASAP Server Announces (SCTP transport first, then TCP —
//!   `tcp-mapping.md` §3.7) to `-asapannounce=` from a UDP socket bound to the ASAP port, as
//!   RSPLIB does (RSPLIB PEs take an announce without transports to mean "SCTP at the source
//!   port"); ENRP Presences to `-enrpannounce=` from the socket that receives them (bound to
//!   the group's port, group joined). A socket that cannot be opened (no multicast route) is
//!   logged and left out: static peers and registrars still work.
//! * **Static peers** (`-peer=`), reached over SCTP where the kernel has it, else over the TCP
//!   mapping.
//!
//! Every option of [`RegistrarOptions`] is mapped onto [`RegistrarConfig`] by
//! [`registrar_config`], except those without a counterpart in the machine, handled here:
//! `-cspserver=`/`-cspinterval=` (CSP reports with RSPLIB's status text), `-quiet`, logging,
//! `-disable-ipv6`, `-uptime=`/`-downtime=` (failure-test mode: the registrar stops after an
//! exponentially distributed up time, stays down, restarts), `-daemonpidfile=` (the program
//! restarts itself in the background and writes the child's PID), and RSPLIB's statistics
//! files in its formats ([`super::registrar_stats`], from the machine's
//! [`Registrar::statistics`] and [`Registrar::poll_action`]): `-statsfile=` with
//! `-statsinterval=` (a line at start and every interval; 1 s when `-statsinterval=` is
//! missing, where RSPLIB writes nothing), `-actionlogfile=`, `-scalar=` with `-object=`
//! (written at the end of every life); names ending in `.bz2` are bzip2-compressed (the
//! scalar file excepted, as in RSPLIB). In failure-test mode the files stay open and the
//! statistics cover the whole process: one header, line numbers and counters carry over
//! from life to life, and the scalar file (rewritten at the end of every life) holds the
//! totals of all lives and averages weighted over all up times. RSPLIB instead starts a new
//! registrar for every life: it appends another header to its files, counts lines and
//! messages from zero again, and its scalar file holds the last life only. SIGINT/SIGTERM
//! end the program also while it is down between two lives. `-autoclosetimeout=` maps onto
//! the machine's `autoclose_timeout` (accepted ASAP associations without PEs that carried
//! no message for that long are closed; RSPLIB's kernel SCTP autoclose is set before the
//! option is read, so RSPLIB always uses 300 s).

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rserpool_core::handlespace::Limits;
use rserpool_core::registrar::{
    AddressScope, IpNetwork, PeerPolicy, PeerState, Registrar, RegistrarConfig, RegistrarEvent,
    RegistrarLimits, RegistrarStatistics, RegistrarTimers,
};
use rserpool_core::{AssocId, ChannelKind, Instant, Protocol};
use rserpool_proto::csp::{
    CSP_DURATION_UNKNOWN, ComponentId, CspAssociation, CspProtocol, Workload, registrar_status_text,
};
use rserpool_proto::ids::ServerId;
use rserpool_proto::rtf::{ChannelKind as RtfKind, ChannelKinds};
use rserpool_proto::transport::TransportParameter;
use tracing::{debug, info, warn};

use super::common::{
    TerminationFlag, add_udp_or_warn, exponential, listen_kinds, os_rng, receiver_for, tls_policy,
    transport_mode_tls,
};
use super::daemon;
use super::registrar_stats::{
    self, ACTION_LOG_HEADER, DEFAULT_STATS_INTERVAL, OutFile, STATS_HEADER, StatsLine, WallClock,
};
use crate::cli::{self, BindSpec, RegistrarOptions, process_env};
use crate::driver::csp::interface_addresses;
use crate::driver::{
    AppControl, Application, Bound, CspConfig, CspReporter, CspStatus, Driver, DriverConfig, Exit,
    ListenerConfig, Step, UdpConfig, component_location,
};
use crate::transport::sctp::sys;
use crate::transport::{TransportConfig, TransportKind, TransportMode, UdpOptions};

/// The ASAP port of the TCP mapping (IANA asap-tcp).
pub const ASAP_TCP_PORT: u16 = 3863;
/// The ENRP port of the TCP mapping (project convention, `tcp-mapping.md` §3.7).
pub const ENRP_TCP_PORT: u16 = 9901;

/// The machine's scope type for `-minaddressscope=`.
pub fn address_scope(s: cli::AddressScope) -> AddressScope {
    match s {
        cli::AddressScope::Loopback => AddressScope::Loopback,
        cli::AddressScope::Linklocal => AddressScope::LinkLocal,
        cli::AddressScope::Sitelocal => AddressScope::SiteLocal,
        cli::AddressScope::Global => AddressScope::Global,
    }
}

fn peer_policy(p: &cli::PeerPolicy) -> PeerPolicy {
    match p {
        cli::PeerPolicy::Static => PeerPolicy::StaticOnly,
        cli::PeerPolicy::Any => PeerPolicy::Any,
        cli::PeerPolicy::Networks(n) => PeerPolicy::AllowedNetworks(
            n.iter()
                .map(|n| IpNetwork::new(n.addr(), n.prefix()))
                .collect(),
        ),
    }
}

/// A rate in requests per second as the machine takes it: whole requests, rounded up
/// (a positive rate below one becomes one per second).
fn rate(r: cli::RateLimit) -> Option<u32> {
    r.per_second().map(|v| {
        let v = v.ceil();
        if v >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            (v as u32).max(1)
        }
    })
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Everything of [`RegistrarOptions`] that the machine takes, except the transports it
/// advertises (they need the bound listeners: [`advertised_transport`]).
pub fn registrar_config(opts: &RegistrarOptions) -> RegistrarConfig {
    let defaults = RegistrarConfig::default();
    RegistrarConfig {
        server_id: opts.server_id(),
        asap_transports: Vec::new(),
        enrp_transport: None,
        asap_announce: opts.asap_announce_address(),
        enrp_announce: opts.enrp_announce_address(),
        static_peers: opts.peers.iter().map(|l| l.addrs().to_vec()).collect(),
        timers: RegistrarTimers {
            server_announce_cycle: opts.server_announce_cycle,
            keep_alive_transmission_interval: opts.endpoint_keep_alive_transmission_interval,
            keep_alive_timeout_interval: opts.endpoint_keep_alive_timeout_interval,
            peer_heartbeat_cycle: opts.peer_heartbeat_cycle,
            peer_max_time_last_heard: opts.peer_max_time_last_heard,
            peer_max_time_no_response: opts.peer_max_time_no_response,
            mentor_discovery_timeout: opts.mentor_discovery_timeout,
            takeover_expiry_interval: opts.takeover_expiry_interval,
            ..RegistrarTimers::default()
        },
        max_bad_pe_reports: opts.max_bad_pe_reports,
        max_handle_resolution_items: opts.max_hres_items,
        max_elements_per_table_response: usize_of(opts.max_elements_per_ht_request),
        min_address_scope: address_scope(opts.min_address_scope),
        max_hr_rate: rate(opts.max_hr_rate),
        max_eu_rate: rate(opts.max_eu_rate),
        max_increment: opts.max_increment,
        limits: RegistrarLimits {
            handlespace: Limits {
                max_pools: usize_of(opts.max_pools),
                max_elements_per_pool: usize_of(opts.max_pe_per_pool),
                max_elements: usize_of(opts.max_pes),
                ..defaults.limits.handlespace
            },
            max_elements_per_assoc: usize_of(opts.max_pes_per_assoc),
            ..defaults.limits
        },
        peer_policy: peer_policy(&opts.peer_policy),
        takeover_suggestion: opts.support_takeover_suggestion,
        autoclose_timeout: Some(opts.autoclose_timeout),
        ..defaults
    }
}

/// The wildcard address programs bind by default: `[::]` (dual stack) unless IPv6 is
/// disabled (`-disable-ipv6`) or unavailable, else `0.0.0.0`.
pub fn default_wildcard(disable_ipv6: bool) -> IpAddr {
    if !disable_ipv6 && std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).is_ok() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// The addresses a listener of `kind` binds for `spec`: `auto` is the wildcard address; a
/// port of 0 means "random" over SCTP (RSPLIB) and `tcp_port` over the TCP mapping.
pub fn bind_addrs(
    spec: &BindSpec,
    kind: TransportKind,
    wildcard: IpAddr,
    tcp_port: u16,
) -> Vec<SocketAddr> {
    let port_for = |p: u16| match (kind, p) {
        (TransportKind::Tcp, 0) => tcp_port,
        _ => p,
    };
    match spec {
        BindSpec::Auto => vec![SocketAddr::new(wildcard, port_for(0))],
        BindSpec::Addresses(l) => l
            .addrs()
            .iter()
            .map(|a| SocketAddr::new(a.ip(), port_for(a.port())))
            .collect(),
    }
}

/// True if `ip` may be advertised at `min` scope.
fn advertisable(ip: IpAddr, min: AddressScope) -> bool {
    let s = AddressScope::of(ip);
    s != AddressScope::Unusable && s >= min
}

/// The transport parameter advertising a bound listener (ASAP Server Announce, ENRP Server
/// Information): its port and addresses; a wildcard-bound listener advertises the host's
/// interface addresses of at least `min` scope (a v4 wildcard only IPv4 ones). When nothing
/// is left, the unspecified address stands for "the address this came from".
pub fn advertised_transport(
    kind: TransportKind,
    local: &[SocketAddr],
    min: AddressScope,
    interfaces: impl FnOnce() -> Vec<IpAddr>,
) -> TransportParameter {
    let port = local.first().map_or(0, SocketAddr::port);
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut interfaces = Some(interfaces);
    for a in local {
        if a.ip().is_unspecified() {
            if let Some(f) = interfaces.take() {
                for ip in f() {
                    let ip = match ip {
                        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                        v4 => v4,
                    };
                    if (a.is_ipv6() || ip.is_ipv4()) && advertisable(ip, min) && !ips.contains(&ip)
                    {
                        ips.push(ip);
                    }
                }
            }
        } else if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    if ips.is_empty() {
        ips.push(
            local
                .first()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| {
                    super::common::wildcard_of(a.ip())
                }),
        );
    }
    match kind {
        TransportKind::Sctp => TransportParameter::sctp(port, 0, ips),
        TransportKind::Tcp => TransportParameter::tcp(port, 0, ips),
    }
}

/// The listeners of a registrar: ASAP ones first (SCTP before TCP), then ENRP ones.
pub fn listener_configs(opts: &RegistrarOptions, mode: TransportMode) -> Vec<ListenerConfig> {
    let wildcard = default_wildcard(opts.disable_ipv6);
    let kinds = listen_kinds(mode);
    let mut out = Vec::new();
    for (spec, channel, tcp_port) in [
        (&opts.asap, ChannelKind::AsapToRegistrar, ASAP_TCP_PORT),
        (&opts.enrp, ChannelKind::Enrp, ENRP_TCP_PORT),
    ] {
        for &k in &kinds {
            let l = ListenerConfig::new(
                bind_addrs(spec, k, wildcard, tcp_port),
                crate::driver::assoc::channel_to_rtf(channel),
            )
            .with_kind(k);
            // ENRP associations to peers leave from the ENRP endpoint: RSPLIB drops a
            // Presence whose Server Information (our ENRP addresses and port) does not match
            // the association's source addresses *and port* ("no usable ENRP endpoint
            // addresses"), as its single one-to-many socket sends from its ENRP port.
            out.push(if channel == ChannelKind::Enrp {
                l.source_for(ChannelKind::Enrp)
            } else {
                l
            });
        }
    }
    out
}

/// The listeners of `bound` that serve `channel` (in configuration order), with the
/// configurations they came from.
fn bound_for<'a>(
    bound: &'a Bound,
    configs: &[ListenerConfig],
    channel: ChannelKind,
) -> Vec<&'a crate::driver::BoundListener> {
    let rtf = crate::driver::assoc::channel_to_rtf(channel);
    bound
        .listeners
        .iter()
        .zip(configs)
        .filter(|(_, c)| c.channels.contains(rtf))
        .map(|(b, _)| b)
        .collect()
}

/// The UDP sockets of a registrar: the ASAP announce sender (bound to `asap_port`, RSPLIB's
/// choice) and the ENRP presence socket (sends and receives).
pub fn udp_configs(
    cfg: &RegistrarConfig,
    announce_ttl: u8,
    asap_port: u16,
) -> (Option<UdpConfig>, Option<UdpConfig>) {
    let ttl = Some(u32::from(announce_ttl));
    let asap = cfg.asap_announce.map(|group| UdpConfig {
        bind: SocketAddr::new(super::common::wildcard_of(group.ip()), asap_port),
        options: UdpOptions {
            reuse_addr: true,
            multicast_ttl: ttl,
            multicast_loop: Some(true),
            ..UdpOptions::default()
        },
        ppid: Protocol::PPID_ASAP,
        join: Vec::new(),
        send: true,
    });
    let enrp = cfg.enrp_announce.map(|group| {
        let mut u = receiver_for(group, Protocol::PPID_ENRP, true);
        u.options.multicast_ttl = ttl;
        u
    });
    (asap, enrp)
}

/// The registrar's CSP status: RSPLIB's text, one association entry per peer-list entry.
pub fn csp_status(reg: &Registrar) -> CspStatus {
    let hs = reg.handlespace();
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let peers: Vec<CspAssociation> = reg
        .peers()
        .map(|p| CspAssociation {
            receiver_id: ComponentId::registrar(p.server_id),
            duration_us: CSP_DURATION_UNKNOWN,
            flags: 0,
            protocol: CspProtocol::Sctp,
            ppid: Protocol::PPID_ENRP,
        })
        .collect();
    CspStatus {
        status: registrar_status_text(
            n(hs.element_count()),
            n(hs.owner_element_count(reg.server_id())),
            n(hs.pool_count()),
            n(peers.len()),
        ),
        workload: Workload::UNKNOWN,
        associations: peers,
    }
}

fn log_event(e: &RegistrarEvent) {
    match e {
        RegistrarEvent::PeRegistered {
            pool_handle, pe_id, ..
        } => info!("PE ${:08x} registered in pool {pool_handle:?}", pe_id.0),
        RegistrarEvent::PeReregistered {
            pool_handle, pe_id, ..
        } => debug!("PE ${:08x} re-registered in pool {pool_handle:?}", pe_id.0),
        RegistrarEvent::PeRemoved {
            pool_handle,
            pe_id,
            home,
            reason,
        } => info!(
            "PE ${:08x} of pool {pool_handle:?} (home ${:08x}) removed: {reason:?}",
            pe_id.0, home.0
        ),
        RegistrarEvent::PeerUp { server_id } => info!("peer ${:08x} up", server_id.0),
        RegistrarEvent::PeerDown { server_id, reason } => {
            info!("peer ${:08x} down: {reason:?}", server_id.0)
        }
        RegistrarEvent::MentorSyncComplete { mentor, elements } => match mentor {
            Some(m) => info!(
                "start-up done: {elements} PEs downloaded from mentor ${:08x}",
                m.0
            ),
            None => info!("start-up done without a mentor"),
        },
        RegistrarEvent::TakeoverStarted { target } => {
            info!("taking over registrar ${:08x}", target.0)
        }
        RegistrarEvent::TakeoverCompleted { target, elements } => info!(
            "took over registrar ${:08x}: {elements} PEs now ours",
            target.0
        ),
        RegistrarEvent::TakeoverAbandoned { target } => {
            info!("takeover of registrar ${:08x} abandoned", target.0)
        }
        RegistrarEvent::ProtocolError {
            assoc,
            from,
            protocol,
            message_type,
            kind,
        } => debug!(
            "protocol error ({assoc:?} {from:?} {protocol:?} type {message_type:?}): {kind:?}"
        ),
    }
}

/// The statistics outputs of a registrar process (`-statsfile=`, `-actionlogfile=`,
/// `-scalar=`), kept over the lives of the failure-test mode as RSPLIB keeps its files and
/// counters.
#[derive(Debug)]
pub struct StatsOutputs {
    stats: Option<OutFile>,
    interval: Duration,
    stats_lines: u64,
    /// Wall-clock seconds of the first statistics line (RelTime 0).
    stats_start: Option<f64>,
    action: Option<OutFile>,
    action_lines: u64,
    scalar: Option<(PathBuf, String)>,
    /// Counters of the earlier lives.
    carried: RegistrarStatistics,
    /// Averages of the earlier lives.
    carried_averages: registrar_stats::LifeAverages,
    process_start: std::time::Instant,
}

impl StatsOutputs {
    /// Opens the files the options name (`.bz2`: compressed).
    pub fn open(opts: &RegistrarOptions) -> io::Result<StatsOutputs> {
        let open = |p: &Option<PathBuf>, what: &str| -> io::Result<Option<OutFile>> {
            p.as_deref()
                .map(|p| {
                    OutFile::create(p).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot create {what} file {}: {e}", p.display()),
                        )
                    })
                })
                .transpose()
        };
        let mut stats = open(&opts.stats_file, "statistics")?;
        let mut action = open(&opts.action_log_file, "action log")?;
        if let Some(f) = stats.as_mut() {
            f.write(STATS_HEADER.as_bytes())?;
        }
        if let Some(f) = action.as_mut() {
            f.write(ACTION_LOG_HEADER.as_bytes())?;
        }
        Ok(StatsOutputs {
            stats,
            interval: opts.stats_interval.unwrap_or(DEFAULT_STATS_INTERVAL),
            stats_lines: 0,
            stats_start: None,
            action,
            action_lines: 0,
            scalar: opts
                .scalar_file
                .clone()
                .map(|p| (p, opts.object_name.clone())),
            carried: RegistrarStatistics::default(),
            carried_averages: registrar_stats::LifeAverages::default(),
            process_start: std::time::Instant::now(),
        })
    }

    fn write_stats_line(&mut self, reg: &Registrar) {
        let Some(f) = self.stats.as_mut() else {
            return;
        };
        let abs = registrar_stats::unix_now();
        let start = *self.stats_start.get_or_insert(abs);
        self.stats_lines += 1;
        let (user_time, system_time) = registrar_stats::process_cpu_times();
        let line = StatsLine {
            number: self.stats_lines,
            abs_time: abs,
            rel_time: (abs - start).max(0.0),
            runtime: self.process_start.elapsed(),
            user_time,
            system_time,
            stats: registrar_stats::accumulate(&self.carried, &reg.statistics()),
        };
        if let Err(e) = f.write(line.format().as_bytes()) {
            warn!("statistics file: {e}; no more statistics lines");
            self.stats = None;
        }
    }

    fn write_actions(&mut self, reg: &mut Registrar, clock: &WallClock, start: Instant) {
        while let Some(a) = reg.poll_action() {
            let Some(f) = self.action.as_mut() else {
                continue;
            };
            self.action_lines += 1;
            let line = registrar_stats::action_line(self.action_lines, &a, clock, start);
            if let Err(e) = f.write(&line) {
                warn!("action log file: {e}; no more action log lines");
                self.action = None;
            }
        }
    }

    /// The end of one life that began at `start`: the scalar file (rewritten at the end of
    /// every life, as RSPLIB does) with the totals and averages of all lives so far,
    /// counters carried over to the next life.
    fn end_of_life(&mut self, reg: &Registrar, start: Instant, now: Instant) {
        let total = registrar_stats::accumulate(&self.carried, &reg.statistics());
        let averages = self.carried_averages.add_life(
            &reg.statistics_averages(now),
            now.saturating_duration_since(start),
        );
        if let Some((path, object)) = &self.scalar {
            let text = registrar_stats::scalar_file(object, &total, &averages);
            if let Err(e) = std::fs::write(path, text) {
                warn!("cannot write scalar file {}: {e}", path.display());
            }
        }
        self.carried = total;
    }

    /// Completes the files (bzip2 trailers).
    pub fn finish(self) -> io::Result<()> {
        for f in [self.stats, self.action].into_iter().flatten() {
            f.finish()?;
        }
        Ok(())
    }
}

/// Logs the registrar's events and writes its statistics files; stops on SIGINT/SIGTERM (a
/// registrar has nothing to finish: its PEs and peers notice the closed associations) and
/// at the end of a failure-test up time.
struct RegistrarApp<'a> {
    stop_at: Option<Instant>,
    signalled: bool,
    outputs: &'a mut StatsOutputs,
    clock: WallClock,
    start: Instant,
    next_stats: Option<Instant>,
    /// The start-up download of the mentor's handlespace runs: fresh memory is mapped in
    /// bulk ([`sys::PrefaultingAllocator`], where `rspregistrar` installs it).
    downloading: bool,
}

/// From the peer list (association, mentor) at the start-up (`over`: ended): whether the
/// start-up download from the mentor runs.
fn downloading(over: bool, mut peers: impl Iterator<Item = (Option<AssocId>, bool)>) -> bool {
    !over && peers.any(|(assoc, mentor)| mentor && assoc.is_some())
}

impl Application<Registrar> for RegistrarApp<'_> {
    fn on_step(&mut self, step: &mut Step<'_, Registrar>) -> AppControl {
        let over = step.machine.startup_complete();
        let now = downloading(over, step.machine.peers().map(|p| (p.assoc, p.mentor)));
        if now != self.downloading {
            self.downloading = now;
            sys::set_prefaulting(now);
        }
        for e in step.events.drain(..) {
            log_event(&e);
        }
        self.outputs
            .write_actions(step.machine, &self.clock, self.start);
        if let Some(t) = self.next_stats {
            if step.now >= t {
                self.outputs.write_stats_line(step.machine);
                self.next_stats = Some(step.now + self.outputs.interval);
            }
            let t = self.next_stats.unwrap_or(t);
            *step.wakeup = Some(step.wakeup.map_or(t, |w| w.min(t)));
        }
        if !step.signals.is_empty() {
            self.signalled = true;
            return AppControl::Exit;
        }
        match self.stop_at {
            Some(t) if step.now >= t => AppControl::Exit,
            Some(t) => {
                *step.wakeup = Some(step.wakeup.map_or(t, |w| w.min(t)));
                AppControl::Continue
            }
            None => AppControl::Continue,
        }
    }
}

fn describe(l: &crate::driver::BoundListener) -> String {
    let kind = match l.kind {
        TransportKind::Sctp => "sctp",
        TransportKind::Tcp => "tcp",
    };
    let addrs: Vec<String> = l.local_addrs.iter().map(ToString::to_string).collect();
    format!("{kind} {}", addrs.join(","))
}

/// `println!` that ignores a closed standard output.
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(io::stdout().lock(), $($t)*);
    }};
}

fn print_banner(opts: &RegistrarOptions, reg: &Registrar, bound: &Bound, cfgs: &[ListenerConfig]) {
    let list = |c| {
        bound_for(bound, cfgs, c)
            .iter()
            .map(|l| describe(l))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let or_off = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    out!(
        "RSerPool Registrar - rserpool {}",
        env!("CARGO_PKG_VERSION")
    );
    out!("Server ID             = ${:08x}", reg.server_id().0);
    out!(
        "ASAP                  = {}",
        list(ChannelKind::AsapToRegistrar)
    );
    out!("ENRP                  = {}", list(ChannelKind::Enrp));
    out!(
        "ASAP Announce         = {}",
        or_off(opts.asap_announce_address())
    );
    out!(
        "ENRP Announce         = {}",
        or_off(opts.enrp_announce_address())
    );
    let peers: Vec<String> = opts.peers.iter().map(ToString::to_string).collect();
    out!(
        "Static Peers          = {}",
        if peers.is_empty() {
            "none".to_owned()
        } else {
            peers.join(" ")
        }
    );
    out!("Min Address Scope     = {:?}", opts.min_address_scope);
    let _ = io::stdout().flush();
}

/// Warns about option combinations that do nothing.
fn warn_unsupported(opts: &RegistrarOptions) {
    if opts.stats_interval.is_some() && opts.stats_file.is_none() {
        warn!("-statsinterval= without -statsfile= does nothing");
    }
    if opts.object_name != "registrar" && opts.scalar_file.is_none() {
        warn!("-object= without -scalar= does nothing");
    }
}

/// The registrar's TLS policy: ENRP (both directions) over TLS when the TLS options are
/// given, and ASAP from PEs and PUs too with `-tls-asap`. Registrar-initiated ASAP
/// (channel kind 2, to a PE's own listener) stays plain.
pub fn registrar_tls(opts: &RegistrarOptions) -> io::Result<Option<crate::transport::TlsPolicy>> {
    if opts.tls_asap && !opts.tls.requested() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "-tls-asap needs -tls-cert=, -tls-key= and -tls-ca=",
        ));
    }
    let mut channels = ChannelKinds::from(RtfKind::Enrp);
    if opts.tls_asap {
        channels = channels.with(RtfKind::AsapToRegistrar);
    }
    tls_policy(opts.transport, &opts.tls, channels)
}

/// Bytes held for one association beyond the transport's own queue (4 MiB) before the
/// registrar gives up on a peer that does not read: room for the Handle Updates of a burst
/// of ~180,000 registrations to a slow peer registrar, but not for a pool user that sends
/// requests forever and never reads the answers.
pub const REGISTRAR_MAX_BACKLOG: usize = 16 << 20;

/// One life of the registrar (until a signal, or the end of a failure-test up time); true
/// when a signal ended it.
fn run_once(
    opts: &RegistrarOptions,
    up_time: Option<Duration>,
    banner: bool,
    outputs: &mut StatsOutputs,
    term: Option<&TerminationFlag>,
) -> io::Result<(Exit, bool)> {
    let mode = transport_mode_tls(opts.transport, &opts.tls);
    let tls = registrar_tls(opts)?;
    let listeners = listener_configs(opts, mode);
    let min = address_scope(opts.min_address_scope);
    let mut config = registrar_config(opts);
    config.action_log = outputs.action.is_some();
    let dcfg = DriverConfig {
        listeners: listeners.clone(),
        mode,
        signals: true,
        shutdown_grace: Duration::from_millis(500),
        timer_slack: opts.timer_slack,
        transport: TransportConfig {
            // ASAP and ENRP messages are at most 65,535 bytes (16-bit length field).
            max_message_len: 65_536,
            tls,
            ..TransportConfig::default()
        },
        // A peer that never reads its answers is dropped once this much waits for it,
        // instead of growing the registrar without bound (hostile suite, class e).
        max_overflow_bytes: Some(REGISTRAR_MAX_BACKLOG),
        ..DriverConfig::default()
    };
    let mut asap_port = 0;
    let mut driver = Driver::new(dcfg, |bound, now| {
        let asap = bound_for(bound, &listeners, ChannelKind::AsapToRegistrar);
        let enrp = bound_for(bound, &listeners, ChannelKind::Enrp);
        asap_port = asap
            .first()
            .and_then(|l| l.local_addrs.first())
            .map_or(0, SocketAddr::port);
        config.asap_transports = asap
            .iter()
            .map(|l| advertised_transport(l.kind, &l.local_addrs, min, interface_addresses))
            .collect();
        config.enrp_transport = enrp
            .first()
            .map(|l| advertised_transport(l.kind, &l.local_addrs, min, interface_addresses));
        Registrar::new(config.clone(), now, os_rng())
    })?;
    let (asap_udp, enrp_udp) = udp_configs(&config, opts.announce_ttl, asap_port);
    if let Some(mut u) = asap_udp
        && !add_udp_or_warn(&mut driver, &u, "ASAP announces")
    {
        // Another program holds the port: announce from an ephemeral one.
        u.bind.set_port(0);
        add_udp_or_warn(&mut driver, &u, "ASAP announces");
    }
    if let Some(u) = enrp_udp {
        add_udp_or_warn(&mut driver, &u, "ENRP presences");
    }
    let bound = driver.bound().clone();
    if banner {
        print_banner(opts, driver.machine(), &bound, &listeners);
    }
    if let Some(target) = opts.csp.resolve_registrar(&process_env) {
        let addrs: Vec<SocketAddr> = bound_for(&bound, &listeners, ChannelKind::AsapToRegistrar)
            .first()
            .map(|l| l.local_addrs.clone())
            .unwrap_or_default();
        let component = ComponentId::registrar(driver.machine().server_id());
        let reporter = CspReporter::new(CspConfig::from_target(
            target,
            component,
            component_location(&addrs, true),
        ))?;
        driver.enable_csp(reporter, |reg, _, _| csp_status(reg));
    }
    info!("registrar ${:08x} running", driver.machine().server_id().0);
    let start = driver.now();
    let mut app = RegistrarApp {
        stop_at: up_time.map(|d| start + d),
        signalled: false,
        clock: WallClock::new(start, std::time::SystemTime::now()),
        start,
        next_stats: outputs.stats.is_some().then_some(start),
        downloading: false,
        outputs,
    };
    // A signal that came before the driver caught signals ends this life before it starts.
    let exit = if term.is_some_and(TerminationFlag::is_set) {
        app.signalled = true;
        Ok(Exit::Stopped)
    } else {
        driver.run_app(&mut app)
    };
    let (clock, signalled) = (app.clock, app.signalled);
    let now = driver.now();
    outputs.write_actions(driver.machine_mut(), &clock, start);
    outputs.end_of_life(driver.machine(), start, now);
    Ok((exit?, signalled))
}

/// `rspregistrar` with parsed options.
pub fn main_with(opts: RegistrarOptions) -> ExitCode {
    if let Some(code) = daemon::detach_if_asked("rspregistrar", opts.daemon_pid_file.as_deref()) {
        return code;
    }
    super::common::init_logging_or_exit("rspregistrar", &opts.log);
    warn_unsupported(&opts);
    // One fd per association: lift the soft limit (often 1,024) to the hard one.
    match crate::transport::raise_nofile_limit() {
        Ok(n) => debug!("open file limit {n}"),
        Err(e) => warn!("cannot raise the open file limit: {e}"),
    }
    let mut outputs = match StatsOutputs::open(&opts) {
        Ok(o) => o,
        Err(e) => return super::common::fail("rspregistrar", &e),
    };
    let code = run_lives(&opts, &mut outputs);
    if let Err(e) = outputs.finish() {
        warn!("statistics files: {e}");
    }
    code
}

/// Runs the registrar until a signal (several lives in failure-test mode).
fn run_lives(opts: &RegistrarOptions, outputs: &mut StatsOutputs) -> ExitCode {
    let mut rng = os_rng();
    let mut banner = !opts.quiet;
    // Failure-test mode: signals between two lives must end the program too.
    let term = match opts.failure_test_uptime() {
        Some(_) => match TerminationFlag::install() {
            Ok(t) => Some(t),
            Err(e) => return super::common::fail("rspregistrar", &e),
        },
        None => None,
    };
    loop {
        let up = opts.failure_test_uptime().map(|m| exponential(&mut rng, m));
        if let Some(u) = up {
            info!("failure-test mode: up for {:.3} s", u.as_secs_f64());
        }
        match run_once(opts, up, banner, outputs, term.as_ref()) {
            Ok((_, false)) if up.is_some() => {
                let down = exponential(&mut rng, opts.downtime);
                info!("failure-test mode: down for {:.3} s", down.as_secs_f64());
                if term.as_ref().is_some_and(|t| t.sleep(down)) {
                    info!("failure-test mode: terminated while down");
                    return ExitCode::SUCCESS;
                }
                banner = false;
            }
            Ok(_) => return ExitCode::SUCCESS,
            Err(e) => return super::common::fail("rspregistrar", &e),
        }
    }
}

/// Peer-list entries that are alive, for status output.
pub fn live_peers(reg: &Registrar) -> usize {
    reg.peers()
        .filter(|p| p.state == PeerState::Alive && p.server_id != ServerId::NONE)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::argv::try_parse_from;

    fn parse(args: &[&str]) -> RegistrarOptions {
        try_parse_from(std::iter::once("rspregistrar").chain(args.iter().copied())).unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn memory_is_prefaulted_while_the_mentor_download_runs_only() {
        let (a, b) = (AssocId(3), AssocId(4));
        assert!(downloading(
            false,
            [(Some(a), true), (Some(b), false)].into_iter()
        ));
        // The start-up is over: the mentor flag no longer counts.
        assert!(!downloading(true, [(Some(a), true)].into_iter()));
        // No mentor, or a mentor without an association yet: no download.
        assert!(!downloading(false, [(Some(b), false)].into_iter()));
        assert!(!downloading(false, [(None, true)].into_iter()));
    }

    #[test]
    fn every_option_reaches_the_machine() {
        let o = parse(&[
            "-identifier=0x1234",
            "-asapannounce=off",
            "-enrpannounce=239.9.9.9:7000",
            "-peer=10.0.0.2",
            "-peer=10.0.0.3:7000,10.0.1.3",
            "-serverannouncecycle=2000",
            "-endpointkeepalivetransmissioninterval=1000",
            "-endpointkeepalivetimeoutinterval=900",
            "-maxbadpereports=5",
            "-maxhresitems=10",
            "-maxincrement=2",
            "-minaddressscope=loopback",
            "-maxelementsperhtrequest=64",
            "-mentordiscoverytimeout=2000",
            "-peerheartbeatcycle=1500",
            "-peermaxtimelastheard=3000",
            "-peermaxtimenoresponse=2000",
            "-takeoverexpiryinterval=3000",
            "-supporttakeoversuggestion",
            "-maxhrrate=100",
            "-maxeurate=2.5",
            "-peerpolicy=10.0.0.0/8",
            "-maxpes=10",
            "-maxpools=2",
            "-maxpesperassoc=1",
            "-maxpeperpool=5",
        ]);
        let c = registrar_config(&o);
        let ms = Duration::from_millis;
        assert_eq!(c.server_id, Some(ServerId(0x1234)));
        assert_eq!(c.asap_announce, None);
        assert_eq!(c.enrp_announce, Some(sa("239.9.9.9:7000")));
        assert_eq!(
            c.static_peers,
            vec![
                vec![sa("10.0.0.2:9901")],
                vec![sa("10.0.0.3:7000"), sa("10.0.1.3:7000")]
            ]
        );
        assert_eq!(c.timers.server_announce_cycle, ms(2000));
        assert_eq!(c.timers.keep_alive_transmission_interval, ms(1000));
        assert_eq!(c.timers.keep_alive_timeout_interval, ms(900));
        assert_eq!(c.timers.peer_heartbeat_cycle, ms(1500));
        assert_eq!(c.timers.peer_max_time_last_heard, ms(3000));
        assert_eq!(c.timers.peer_max_time_no_response, ms(2000));
        assert_eq!(c.timers.mentor_discovery_timeout, ms(2000));
        assert_eq!(c.timers.takeover_expiry_interval, ms(3000));
        assert_eq!(c.max_bad_pe_reports, 5);
        assert_eq!(c.max_handle_resolution_items, 10);
        assert_eq!(c.max_increment, 2);
        assert_eq!(c.min_address_scope, AddressScope::Loopback);
        assert_eq!(c.max_elements_per_table_response, 64);
        assert!(c.takeover_suggestion);
        assert_eq!(c.max_hr_rate, Some(100));
        assert_eq!(c.max_eu_rate, Some(3));
        assert_eq!(
            c.peer_policy,
            PeerPolicy::AllowedNetworks(vec![IpNetwork::new("10.0.0.0".parse().unwrap(), 8)])
        );
        assert_eq!(c.limits.handlespace.max_elements, 10);
        assert_eq!(c.limits.handlespace.max_pools, 2);
        assert_eq!(c.limits.handlespace.max_elements_per_pool, 5);
        assert_eq!(c.limits.max_elements_per_assoc, 1);
        // RSPLIB defaults where nothing is given.
        let d = registrar_config(&parse(&[]));
        assert_eq!(d.server_id, None);
        assert_eq!(d.min_address_scope, AddressScope::SiteLocal);
        assert_eq!(d.max_hr_rate, None);
        assert_eq!(d.peer_policy, PeerPolicy::Any);
        assert_eq!(d.timers, RegistrarTimers::default());
    }

    #[test]
    fn ports_per_transport() {
        let w = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            bind_addrs(&BindSpec::Auto, TransportKind::Tcp, w, 3863),
            vec![sa("0.0.0.0:3863")]
        );
        assert_eq!(
            bind_addrs(&BindSpec::Auto, TransportKind::Sctp, w, 3863),
            vec![sa("0.0.0.0:0")]
        );
        let o = parse(&["-asap=127.0.0.1", "-enrp=127.0.0.1:7001"]);
        assert_eq!(
            bind_addrs(&o.asap, TransportKind::Tcp, w, 3863),
            vec![sa("127.0.0.1:3863")]
        );
        assert_eq!(
            bind_addrs(&o.enrp, TransportKind::Tcp, w, 9901),
            vec![sa("127.0.0.1:7001")]
        );
        let l = listener_configs(&o, TransportMode::Tcp);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].addrs, vec![sa("127.0.0.1:3863")]);
        assert_eq!(l[1].addrs, vec![sa("127.0.0.1:7001")]);
    }

    #[test]
    fn advertised_addresses() {
        let ifs = || {
            vec![
                "127.0.0.1".parse().unwrap(),
                "10.1.2.3".parse().unwrap(),
                "fe80::1".parse().unwrap(),
                "2001:db8::5".parse().unwrap(),
            ]
        };
        let t = advertised_transport(
            TransportKind::Tcp,
            &[sa("0.0.0.0:3863")],
            AddressScope::SiteLocal,
            ifs,
        );
        assert_eq!(
            t,
            TransportParameter::tcp(3863, 0, ["10.1.2.3".parse().unwrap()])
        );
        let t = advertised_transport(
            TransportKind::Sctp,
            &[sa("[::]:4000")],
            AddressScope::Loopback,
            ifs,
        );
        assert_eq!(t.port, 4000);
        assert_eq!(t.addresses.len(), 4, "{t:?}");
        let t = advertised_transport(
            TransportKind::Tcp,
            &[sa("127.0.0.1:5")],
            AddressScope::SiteLocal,
            ifs,
        );
        assert_eq!(
            t.addresses.as_slice(),
            &["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let t = advertised_transport(
            TransportKind::Tcp,
            &[sa("0.0.0.0:5")],
            AddressScope::Global,
            || vec!["10.0.0.1".parse().unwrap()],
        );
        assert_eq!(
            t.addresses.as_slice(),
            &["0.0.0.0".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn announce_sockets() {
        let o = parse(&[]);
        let c = registrar_config(&o);
        let (a, e) = udp_configs(&c, 5, 3863);
        let a = a.unwrap();
        assert_eq!(a.bind, sa("0.0.0.0:3863"));
        assert!(a.send && a.join.is_empty());
        assert_eq!(a.options.multicast_ttl, Some(5));
        let e = e.unwrap();
        assert_eq!(e.bind, sa("0.0.0.0:9901"));
        assert!(e.send);
        assert_eq!(e.join.len(), 1);
        let o = parse(&["-asapannounce=off", "-enrpannounce=off"]);
        let (a, e) = udp_configs(&registrar_config(&o), 5, 3863);
        assert!(a.is_none() && e.is_none());
    }
}
