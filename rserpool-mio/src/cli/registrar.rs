//! `rspregistrar` options (RSPLIB 3.5.10, `shared/spec/enrp.md` §7) and our additions:
//! `-transport=`, `-peerpolicy=` and the handlespace limits.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rserpool_proto::ids::ServerId;

use super::addr::{
    ASAP_ANNOUNCE_DEFAULT, ASAP_PORT, AddressList, AnnounceSpec, BindSpec, ENRP_ANNOUNCE_DEFAULT,
    ENRP_PORT, IpNetwork, address_list, announce_spec, bind_spec,
};
use super::common::{AddressScope, CspOptions, LogOptions, TlsOptions, TransportChoice};
use super::values::{RateLimit, count_u32, identifier, millis, millis_min, seconds_min};

/// Who may become an ENRP peer (`-peerpolicy=`, our addition).
///
/// RSPLIB accepts any registrar that talks ENRP to it as a peer, which lets a stranger
/// delete, overwrite and inject PEs (`shared/design/rsplib-measured.md`). `static` limits
/// peers to the `-peer=` list; a network list limits them to those networks.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PeerPolicy {
    /// Only the static `-peer=` registrars.
    Static,
    /// Anyone (RSPLIB's behaviour; default for drop-in compatibility).
    #[default]
    Any,
    /// Static peers plus registrars whose address lies in one of these networks.
    Networks(Vec<IpNetwork>),
}

impl PeerPolicy {
    /// True if a registrar at `addr` may become a peer. Static peers are always allowed.
    pub fn allows(&self, addr: IpAddr, is_static_peer: bool) -> bool {
        if is_static_peer {
            return true;
        }
        match self {
            PeerPolicy::Static => false,
            PeerPolicy::Any => true,
            PeerPolicy::Networks(nets) => nets.iter().any(|n| n.contains(addr)),
        }
    }
}

fn peer_policy(s: &str) -> Result<PeerPolicy, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("static") {
        return Ok(PeerPolicy::Static);
    }
    if t.eq_ignore_ascii_case("any") {
        return Ok(PeerPolicy::Any);
    }
    let nets = t
        .split(',')
        .map(str::parse::<IpNetwork>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!("{e}; use static, any or a list of networks like 10.0.0.0/8,fd00::/8")
        })?;
    Ok(PeerPolicy::Networks(nets))
}

fn server_id(s: &str) -> Result<ServerId, String> {
    identifier(s).map(ServerId)
}

fn ttl(s: &str) -> Result<u8, String> {
    count_u32::<1, 255>(s).map(|v| u8::try_from(v).unwrap_or(u8::MAX))
}

/// `rspregistrar` — the pool registrar (ENRP server).
///
/// Defaults and clamps are RSPLIB's; values outside a range are clamped, not rejected.
#[derive(Parser, Clone, Debug, PartialEq)]
#[command(
    name = "rspregistrar",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "RSerPool pool registrar (ENRP server)"
)]
pub struct RegistrarOptions {
    /// ASAP endpoint: auto (wildcard, random port) or addresses (no port = random port)
    #[arg(long = "asap", value_name = "auto|ADDR[:PORT][,ADDR...]", default_value = "auto", value_parser = bind_spec)]
    pub asap: BindSpec,
    /// ASAP Server Announce destination: auto (239.0.0.50:3863), off/none, or an address
    #[arg(long = "asapannounce", value_name = "auto|off|ADDR[:PORT]", default_value = "auto", value_parser = announce_spec::<ASAP_PORT>)]
    pub asap_announce: AnnounceSpec,
    /// ENRP endpoint: auto (wildcard, random port) or addresses (no port = random port)
    #[arg(long = "enrp", value_name = "auto|ADDR[:PORT][,ADDR...]", default_value = "auto", value_parser = bind_spec)]
    pub enrp: BindSpec,
    /// ENRP announce (presence multicast): auto (239.0.0.51:9901), off/none, or an address
    #[arg(long = "enrpannounce", alias = "enrpmulticast", value_name = "auto|off|ADDR[:PORT]", default_value = "auto", value_parser = announce_spec::<ENRP_PORT>)]
    pub enrp_announce: AnnounceSpec,
    /// Static peer registrar, a comma list for multi-homing (repeatable; port default 9901)
    #[arg(long = "peer", value_name = "ADDR[:PORT][,ADDR...]", value_parser = address_list::<ENRP_PORT>)]
    pub peers: Vec<AddressList>,
    /// Registrar (server) identifier, 0xHEX or decimal (default random; 0 = random)
    #[arg(long = "identifier", value_name = "ID", value_parser = server_id)]
    pub identifier: Option<ServerId>,
    /// Multicast TTL of announces (1-255)
    #[arg(long = "announcettl", value_name = "N", default_value = "30", value_parser = ttl)]
    pub announce_ttl: u8,
    /// Close ASAP associations without PEs after this many seconds without a message (min 5; RSPLIB's SCTP autoclose)
    #[arg(long = "autoclosetimeout", value_name = "S", default_value = "300", value_parser = seconds_min::<5000>)]
    pub autoclose_timeout: Duration,
    /// ASAP Server Announce interval, ms (100-60000; +-12.5 % jitter)
    #[arg(long = "serverannouncecycle", value_name = "MS", default_value = "1000", value_parser = millis::<100, 60_000>)]
    pub server_announce_cycle: Duration,
    /// Endpoint Keep-Alive interval, ms (300-300000)
    #[arg(long = "endpointkeepalivetransmissioninterval", value_name = "MS", default_value = "5000", value_parser = millis::<300, 300_000>)]
    pub endpoint_keep_alive_transmission_interval: Duration,
    /// Endpoint Keep-Alive Ack timeout, ms (100-60000)
    #[arg(long = "endpointkeepalivetimeoutinterval", value_name = "MS", default_value = "5000", value_parser = millis::<100, 60_000>)]
    pub endpoint_keep_alive_timeout_interval: Duration,
    /// Endpoint Unreachable reports before a PE is removed (min 1)
    #[arg(long = "maxbadpereports", value_name = "N", default_value = "3", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_bad_pe_reports: u32,
    /// Default number of PEs per handle resolution (min 1)
    #[arg(long = "maxhresitems", value_name = "N", default_value = "3", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_hres_items: u32,
    /// MaxIncrement of the selection (handle with care)
    #[arg(long = "maxincrement", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub max_increment: u32,
    /// Distance rounding step of the DPF policies, ms (min 1)
    #[arg(long = "distancestep", value_name = "MS", default_value = "50", value_parser = millis_min::<1>)]
    pub distance_step: Duration,
    /// Minimum scope of accepted PE and peer addresses
    #[arg(
        long = "minaddressscope",
        value_name = "loopback|sitelocal|global",
        default_value = "sitelocal",
        value_enum
    )]
    pub min_address_scope: AddressScope,
    /// PEs per Handle Table Response (1-1024)
    #[arg(long = "maxelementsperhtrequest", value_name = "N", default_value = "128", value_parser = count_u32::<1, 1024>)]
    pub max_elements_per_ht_request: u32,
    /// Mentor discovery timeout, ms (1000-60000)
    #[arg(long = "mentordiscoverytimeout", value_name = "MS", default_value = "5000", value_parser = millis::<1000, 60_000>)]
    pub mentor_discovery_timeout: Duration,
    /// Peer heartbeat (Presence) cycle, ms (1000-300000; randomised +-12.5 %)
    #[arg(long = "peerheartbeatcycle", value_name = "MS", default_value = "2444.444", value_parser = millis::<1000, 300_000>)]
    pub peer_heartbeat_cycle: Duration,
    /// Peer max time last heard, ms (1000-300000)
    #[arg(long = "peermaxtimelastheard", value_name = "MS", default_value = "5000", value_parser = millis::<1000, 300_000>)]
    pub peer_max_time_last_heard: Duration,
    /// Peer max time no response, ms (1000-60000)
    #[arg(long = "peermaxtimenoresponse", value_name = "MS", default_value = "5000", value_parser = millis::<1000, 60_000>)]
    pub peer_max_time_no_response: Duration,
    /// Takeover expiry interval, ms (1000-60000)
    #[arg(long = "takeoverexpiryinterval", value_name = "MS", default_value = "5000", value_parser = millis::<1000, 60_000>)]
    pub takeover_expiry_interval: Duration,
    /// Support takeover suggestion (draft-dreibholz-rserpool-enrp-takeover)
    #[arg(long = "supporttakeoversuggestion")]
    pub support_takeover_suggestion: bool,
    /// Timer slack, ms (0-100; our addition): protocol timers (keep-alives, timeouts, ENRP)
    /// may fire this much late, so that one wake-up serves many of them
    #[arg(long = "timerslack", value_name = "MS", default_value = "0", value_parser = millis::<0, 100>)]
    pub timer_slack: Duration,
    /// Max handle resolutions per second per pool user (<= 0: unlimited)
    #[arg(
        long = "maxhrrate",
        value_name = "RATE",
        default_value = "-1",
        allow_negative_numbers = true
    )]
    pub max_hr_rate: RateLimit,
    /// Max Endpoint Unreachable reports per second per pool user (<= 0: unlimited)
    #[arg(
        long = "maxeurate",
        value_name = "RATE",
        default_value = "-1",
        allow_negative_numbers = true
    )]
    pub max_eu_rate: RateLimit,
    /// CSP reporting (`-cspserver=`, `-cspinterval=`).
    #[command(flatten)]
    pub csp: CspOptions,
    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,
    /// No start-up banner
    #[arg(long = "quiet")]
    pub quiet: bool,
    /// Use IPv4 sockets only
    #[arg(long = "disable-ipv6")]
    pub disable_ipv6: bool,
    /// Fork into the background and write the child's PID to FILE
    #[arg(long = "daemonpidfile", value_name = "FILE")]
    pub daemon_pid_file: Option<PathBuf>,
    /// Failure-test mode: mean (exponential) up time, seconds (0 = off)
    #[arg(long = "uptime", value_name = "S", default_value = "0", value_parser = seconds_min::<0>)]
    pub uptime: Duration,
    /// Failure-test mode: mean (exponential) down time, seconds
    #[arg(long = "downtime", value_name = "S", default_value = "0", value_parser = seconds_min::<0>)]
    pub downtime: Duration,
    /// Statistics: RSPLIB action log, one line per action (.bz2: bzip2-compressed)
    #[arg(long = "actionlogfile", value_name = "FILE")]
    pub action_log_file: Option<PathBuf>,
    /// Statistics: RSPLIB statistics file, a line at start and every -statsinterval (.bz2: bzip2-compressed)
    #[arg(long = "statsfile", value_name = "FILE")]
    pub stats_file: Option<PathBuf>,
    /// Statistics interval, ms (default 1000; clamped to 10-3600000, where RSPLIB turns values above 3600000 into 36000000)
    #[arg(long = "statsinterval", value_name = "MS", value_parser = millis::<10, 3_600_000>)]
    pub stats_interval: Option<Duration>,
    /// Statistics: OMNeT++ scalar file written at exit (plain text, as RSPLIB)
    #[arg(long = "scalar", value_name = "FILE")]
    pub scalar_file: Option<PathBuf>,
    /// Statistics: object name in the scalar file
    #[arg(long = "object", value_name = "NAME", default_value = "registrar")]
    pub object_name: String,
    /// Transport for ASAP and ENRP: sctp, tcp or auto
    #[arg(
        long = "transport",
        value_name = "sctp|tcp|auto",
        default_value = "auto",
        value_enum
    )]
    pub transport: TransportChoice,
    /// TLS for ENRP (and ASAP with -tls-asap).
    #[command(flatten)]
    pub tls: TlsOptions,
    /// With the TLS options: ASAP (PEs and PUs) over TLS too, not only ENRP (our addition)
    #[arg(long = "tls-asap")]
    pub tls_asap: bool,
    /// Who may become an ENRP peer: static, any, or NET/PREFIX[,NET/PREFIX...]
    #[arg(long = "peerpolicy", value_name = "static|any|CIDR[,CIDR...]", default_value = "any", value_parser = peer_policy)]
    pub peer_policy: PeerPolicy,
    /// Most PEs in the handlespace
    #[arg(long = "maxpes", value_name = "N", default_value = "1000000", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_pes: u32,
    /// Most pools in the handlespace
    #[arg(long = "maxpools", value_name = "N", default_value = "100000", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_pools: u32,
    /// Most PEs registered over one ASAP association
    #[arg(long = "maxpesperassoc", value_name = "N", default_value = "1024", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_pes_per_assoc: u32,
    /// Most PEs in one pool
    #[arg(long = "maxpeperpool", value_name = "N", default_value = "100000", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_pe_per_pool: u32,
}

impl RegistrarOptions {
    /// The server identifier to use: the configured one, or `None` for a random one
    /// (`-identifier=0` counts as unset, as in RSPLIB).
    pub fn server_id(&self) -> Option<ServerId> {
        self.identifier.filter(|id| *id != ServerId::NONE)
    }

    /// The ASAP Server Announce destination, `None` with `-asapannounce=off`.
    pub fn asap_announce_address(&self) -> Option<SocketAddr> {
        self.asap_announce.resolve(ASAP_ANNOUNCE_DEFAULT)
    }

    /// The ENRP announce group, `None` with `-enrpannounce=off`.
    pub fn enrp_announce_address(&self) -> Option<SocketAddr> {
        self.enrp_announce.resolve(ENRP_ANNOUNCE_DEFAULT)
    }

    /// The failure-test up time, `None` when off (`-uptime=0`).
    pub fn failure_test_uptime(&self) -> Option<Duration> {
        (!self.uptime.is_zero()).then_some(self.uptime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::argv::try_parse_from;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> RegistrarOptions {
        try_parse_from::<RegistrarOptions, _, _>(
            std::iter::once("rspregistrar").chain(args.iter().copied()),
        )
        .unwrap()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn command_is_consistent() {
        RegistrarOptions::command().debug_assert();
    }

    #[test]
    fn defaults_are_rsplibs() {
        let o = parse(&[]);
        assert_eq!(o.asap, BindSpec::Auto);
        assert_eq!(o.enrp, BindSpec::Auto);
        assert_eq!(o.asap_announce, AnnounceSpec::Auto);
        assert_eq!(
            o.asap_announce_address(),
            Some("239.0.0.50:3863".parse().unwrap())
        );
        assert_eq!(
            o.enrp_announce_address(),
            Some("239.0.0.51:9901".parse().unwrap())
        );
        assert!(o.peers.is_empty());
        assert_eq!(o.identifier, None);
        assert_eq!(o.announce_ttl, 30);
        assert_eq!(o.autoclose_timeout, Duration::from_secs(300));
        assert_eq!(o.server_announce_cycle, ms(1000));
        assert_eq!(o.endpoint_keep_alive_transmission_interval, ms(5000));
        assert_eq!(o.endpoint_keep_alive_timeout_interval, ms(5000));
        assert_eq!(o.max_bad_pe_reports, 3);
        assert_eq!(o.max_hres_items, 3);
        assert_eq!(o.max_increment, 0);
        assert_eq!(o.distance_step, ms(50));
        assert_eq!(o.min_address_scope, AddressScope::Sitelocal);
        assert_eq!(o.max_elements_per_ht_request, 128);
        assert_eq!(o.mentor_discovery_timeout, ms(5000));
        assert_eq!(o.peer_heartbeat_cycle, Duration::from_micros(2_444_444));
        assert_eq!(o.peer_max_time_last_heard, ms(5000));
        assert_eq!(o.peer_max_time_no_response, ms(5000));
        assert_eq!(o.takeover_expiry_interval, ms(5000));
        assert!(!o.support_takeover_suggestion);
        assert_eq!(o.max_hr_rate, RateLimit::UNLIMITED);
        assert_eq!(o.max_eu_rate, RateLimit::UNLIMITED);
        assert_eq!(o.csp, CspOptions::default());
        assert_eq!(o.log, LogOptions::default());
        assert!(!o.quiet && !o.disable_ipv6);
        assert_eq!(o.daemon_pid_file, None);
        assert_eq!(o.failure_test_uptime(), None);
        assert_eq!(o.downtime, Duration::ZERO);
        assert_eq!(o.stats_interval, None);
        assert_eq!(o.object_name, "registrar");
        assert_eq!(o.transport, TransportChoice::Auto);
        assert_eq!(o.peer_policy, PeerPolicy::Any);
        assert_eq!(
            (
                o.max_pes,
                o.max_pools,
                o.max_pes_per_assoc,
                o.max_pe_per_pool
            ),
            (1_000_000, 100_000, 1024, 100_000)
        );
    }

    #[test]
    fn every_option_parses() {
        let o = parse(&[
            "-asap=10.0.0.1:3863,10.0.1.1",
            "-asapannounce=off",
            "-enrp=[::1]:9901",
            "-enrpannounce=239.9.9.9",
            "-peer=10.0.0.2",
            "-peer=10.0.0.3:7000,10.0.1.3",
            "-identifier=0x1234",
            "-announcettl=5",
            "-autoclosetimeout=60",
            "-serverannouncecycle=2000",
            "-endpointkeepalivetransmissioninterval=1000",
            "-endpointkeepalivetimeoutinterval=900",
            "-maxbadpereports=5",
            "-maxhresitems=10",
            "-maxincrement=2",
            "-distancestep=20",
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
            "-cspserver=127.0.0.1",
            "-cspinterval=1000",
            "-loglevel=4",
            "-logcolor=off",
            "-logfile=/tmp/x.log",
            "-quiet",
            "-disable-ipv6",
            "-daemonpidfile=/tmp/pr.pid",
            "-uptime=30",
            "-downtime=2.5",
            "-statsfile=/tmp/s",
            "-statsinterval=500",
            "-actionlogfile=/tmp/a",
            "-scalar=/tmp/sc",
            "-object=pr1",
            "-transport=tcp",
            "-peerpolicy=10.0.0.0/8,fd00::/8",
            "-maxpes=10",
            "-maxpools=2",
            "-maxpesperassoc=1",
            "-maxpeperpool=5",
        ]);
        let BindSpec::Addresses(asap) = &o.asap else {
            panic!("asap must be an address list")
        };
        assert_eq!(asap.to_string(), "10.0.0.1:3863,10.0.1.1:3863");
        assert_eq!(o.asap_announce_address(), None);
        assert_eq!(
            o.enrp,
            BindSpec::Addresses(AddressList::single("[::1]:9901".parse().unwrap()))
        );
        assert_eq!(
            o.enrp_announce_address(),
            Some("239.9.9.9:9901".parse().unwrap())
        );
        assert_eq!(o.peers.len(), 2);
        assert_eq!(o.peers[0].to_string(), "10.0.0.2:9901");
        assert_eq!(o.peers[1].to_string(), "10.0.0.3:7000,10.0.1.3:7000");
        assert_eq!(o.server_id(), Some(ServerId(0x1234)));
        assert_eq!(o.announce_ttl, 5);
        assert_eq!(o.autoclose_timeout, Duration::from_secs(60));
        assert_eq!(o.server_announce_cycle, ms(2000));
        assert_eq!(o.endpoint_keep_alive_transmission_interval, ms(1000));
        assert_eq!(o.endpoint_keep_alive_timeout_interval, ms(900));
        assert_eq!(
            (o.max_bad_pe_reports, o.max_hres_items, o.max_increment),
            (5, 10, 2)
        );
        assert_eq!(o.distance_step, ms(20));
        assert_eq!(o.min_address_scope, AddressScope::Loopback);
        assert_eq!(o.max_elements_per_ht_request, 64);
        assert_eq!(o.mentor_discovery_timeout, ms(2000));
        assert_eq!(o.peer_heartbeat_cycle, ms(1500));
        assert_eq!(o.peer_max_time_last_heard, ms(3000));
        assert_eq!(o.peer_max_time_no_response, ms(2000));
        assert_eq!(o.takeover_expiry_interval, ms(3000));
        assert!(o.support_takeover_suggestion);
        assert_eq!(o.max_hr_rate.per_second(), Some(100.0));
        assert_eq!(o.max_eu_rate.per_second(), Some(2.5));
        assert_eq!(o.csp.csp_server, Some("127.0.0.1:2960".parse().unwrap()));
        assert_eq!(o.csp.csp_interval, Some(ms(1000)));
        assert_eq!(o.log.log_level, 4);
        assert_eq!(o.log.log_file, Some("/tmp/x.log".into()));
        assert!(o.quiet && o.disable_ipv6);
        assert_eq!(o.daemon_pid_file, Some("/tmp/pr.pid".into()));
        assert_eq!(o.failure_test_uptime(), Some(Duration::from_secs(30)));
        assert_eq!(o.downtime, ms(2500));
        assert_eq!(o.stats_interval, Some(ms(500)));
        assert_eq!(o.object_name, "pr1");
        assert_eq!(o.transport, TransportChoice::Tcp);
        assert_eq!(
            o.peer_policy,
            PeerPolicy::Networks(vec![
                "10.0.0.0/8".parse().unwrap(),
                "fd00::/8".parse().unwrap()
            ])
        );
        assert_eq!(
            (
                o.max_pes,
                o.max_pools,
                o.max_pes_per_assoc,
                o.max_pe_per_pool
            ),
            (10, 2, 1, 5)
        );
    }

    #[test]
    fn clamps_are_rsplibs() {
        let o = parse(&[
            "-announcettl=0",
            "-autoclosetimeout=1",
            "-serverannouncecycle=10",
            "-endpointkeepalivetransmissioninterval=999999999",
            "-endpointkeepalivetimeoutinterval=1",
            "-maxbadpereports=0",
            "-maxhresitems=0",
            "-distancestep=0",
            "-maxelementsperhtrequest=5000",
            "-mentordiscoverytimeout=100",
            "-peerheartbeatcycle=999999999",
            "-peermaxtimelastheard=1",
            "-peermaxtimenoresponse=120000",
            "-takeoverexpiryinterval=0",
            "-statsinterval=99999999",
        ]);
        assert_eq!(o.announce_ttl, 1);
        assert_eq!(o.autoclose_timeout, Duration::from_secs(5));
        assert_eq!(o.server_announce_cycle, ms(100));
        assert_eq!(o.endpoint_keep_alive_transmission_interval, ms(300_000));
        assert_eq!(o.endpoint_keep_alive_timeout_interval, ms(100));
        assert_eq!(o.max_bad_pe_reports, 1);
        assert_eq!(o.max_hres_items, 1);
        assert_eq!(o.distance_step, ms(1));
        assert_eq!(o.max_elements_per_ht_request, 1024);
        assert_eq!(o.mentor_discovery_timeout, ms(1000));
        assert_eq!(o.peer_heartbeat_cycle, ms(300_000));
        assert_eq!(o.peer_max_time_last_heard, ms(1000));
        assert_eq!(o.peer_max_time_no_response, ms(60_000));
        assert_eq!(o.takeover_expiry_interval, ms(1000));
        // RSPLIB's typo would give 36,000,000 here; we clamp to the documented 3,600,000.
        assert_eq!(o.stats_interval, Some(ms(3_600_000)));
        let o = parse(&["-announcettl=1000", "-serverannouncecycle=100000"]);
        assert_eq!(o.announce_ttl, 255);
        assert_eq!(o.server_announce_cycle, ms(60_000));
    }

    #[test]
    fn spellings_and_aliases() {
        let a = parse(&[
            "-maxhrrate=-1",
            "-peer=10.0.0.9",
            "-enrpmulticast=off",
            "-identifier=77",
        ]);
        let b = parse(&[
            "--maxhrrate",
            "-1",
            "--peer",
            "10.0.0.9",
            "--enrpannounce=off",
            "--identifier",
            "0x4d",
        ]);
        let c = parse(&[
            "--maxhrrate=-1",
            "--peer=10.0.0.9",
            "--enrpannounce",
            "none",
            "--identifier=77",
        ]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.enrp_announce_address(), None);
        assert_eq!(
            parse(&["-minaddressscope=site-local"]).min_address_scope,
            AddressScope::Sitelocal
        );
        assert_eq!(parse(&["-identifier=0"]).server_id(), None);
    }

    #[test]
    fn errors() {
        for bad in [
            &["-mentorhuntinterval=5000"][..], // RSPLIB's README lists it; the code rejects it
            &["-minaddressscope=planet"],
            &["-peerpolicy=10.0.0.0/99"],
            &["-identifier=0x100000000"],
            &["-asap=10.0.0.1:99999"],
            &["-peer="],
            &["-serverannouncecycle=fast"],
            &["-maxhrrate=lots"],
            &["-transport=udp"],
            &["-logcolor=purple"],
            &["positional"],
        ] {
            let r = try_parse_from::<RegistrarOptions, _, _>(
                std::iter::once("rspregistrar").chain(bad.iter().copied()),
            );
            assert!(r.is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn peer_policy_decisions() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(PeerPolicy::Any.allows(ip("192.0.2.1"), false));
        assert!(!PeerPolicy::Static.allows(ip("192.0.2.1"), false));
        assert!(PeerPolicy::Static.allows(ip("192.0.2.1"), true));
        let nets = peer_policy("10.0.0.0/8").unwrap();
        assert!(nets.allows(ip("10.3.4.5"), false));
        assert!(!nets.allows(ip("11.0.0.1"), false));
        assert_eq!(peer_policy("STATIC"), Ok(PeerPolicy::Static));
        assert!(peer_policy("10.0.0.0/8,junk").is_err());
    }
}
