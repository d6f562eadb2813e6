//! Tools: `hsdump`, `cspmonitor`, `hrestest`, `testregistrator`
//! (`shared/design/rsplib-inventory.md` §1.7, `shared/spec/csp.md` §6) and our `rspload`
//! load generator.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rserpool_proto::ids::PoolHandle;
use rserpool_proto::policy::Policy;

use super::addr::{AddressList, CSP_PORT, ENRP_PORT, address_list, socket_addr};
use super::common::{CspOptions, LibraryOptions, LogOptions, TlsOptions, TransportChoice};
use super::policy::{TestRegistratorPolicy, policy_value};
use super::values::{
    RateLimit, count, count_u32, float_clamped, millis, millis_min, pool_handle, seconds_min,
};

/// `hsdump` — asks a registrar for its peer list and handlespace over ENRP and prints them.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "hsdump",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "Dump a registrar's handlespace via ENRP"
)]
pub struct HsDumpOptions {
    /// The registrar's ENRP endpoint (port default 9901)
    #[arg(value_name = "ADDRESS:PORT", value_parser = address_list::<ENRP_PORT>)]
    pub registrar: AddressList,
    /// Transport to the registrar: sctp, tcp or auto
    #[arg(
        long = "transport",
        value_name = "sctp|tcp|auto",
        default_value = "auto",
        value_enum
    )]
    pub transport: TransportChoice,
    /// TLS to the registrar's ENRP endpoint.
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Give up when the registrar has not answered for this long, ms (connect included;
    /// our addition)
    #[arg(long = "timeout", value_name = "MS", default_value = "5000", value_parser = millis_min::<1>)]
    pub timeout: Duration,
    /// Print only the handlespace, not the peer list (for comparing registrars; our addition)
    #[arg(long = "handlespaceonly")]
    pub handlespace_only: bool,
    /// CSP reporting.
    #[command(flatten)]
    pub csp: CspOptions,
    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,
}

/// The address cspmonitor listens on by default: all addresses (dual-stack), port 2960.
pub const CSPMONITOR_DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), CSP_PORT);

/// `cspmonitor` — console view of CSP reports.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "cspmonitor",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "Component Status Protocol monitor"
)]
pub struct CspMonitorOptions {
    /// Listen on this address (default all addresses, port 2960)
    #[arg(long = "localaddress", value_name = "ADDR[:PORT]", value_parser = socket_addr::<CSP_PORT>)]
    pub local_address: Option<SocketAddr>,
    /// Screen update interval, ms (min 100)
    #[arg(long = "updateinterval", value_name = "MS", default_value = "1000", value_parser = millis_min::<100>)]
    pub update_interval: Duration,
    /// Forget silent components after this time, ms (min 1000)
    #[arg(long = "purgeinterval", value_name = "MS", default_value = "30000", value_parser = millis_min::<1000>)]
    pub purge_interval: Duration,
    /// Compact display (RSPLIB's code default, although its man page says -full)
    #[arg(long = "compact", overrides_with = "full")]
    pub compact: bool,
    /// Full display with association lists
    #[arg(long = "full", overrides_with = "compact")]
    pub full: bool,
    /// Registrars shown
    #[arg(long = "maxpr", value_name = "N", default_value = "6", value_parser = count_u32::<0, { u32::MAX }>)]
    pub max_pr: u32,
    /// Pool elements shown
    #[arg(long = "maxpe", value_name = "N", default_value = "42", value_parser = count_u32::<0, { u32::MAX }>)]
    pub max_pe: u32,
    /// Pool users shown
    #[arg(long = "maxpu", value_name = "N", default_value = "24", value_parser = count_u32::<0, { u32::MAX }>)]
    pub max_pu: u32,
    /// Width of the location column, characters
    #[arg(long = "maxlocationsize", value_name = "CHARS", default_value = "72", value_parser = count_u32::<0, { u32::MAX }>)]
    pub max_location_size: u32,
    /// Print one screen (after the first update interval) and exit (our addition)
    #[arg(long = "once")]
    pub once: bool,
    /// Exit after this many seconds, printing a last screen (our addition; default: run
    /// until interrupted)
    #[arg(long = "runtime", value_name = "S", value_parser = seconds_min::<1>)]
    pub runtime: Option<Duration>,
    /// Plain text: no colours, no cursor movement; screens follow each other (our addition)
    #[arg(long = "plain")]
    pub plain: bool,
    /// Logging (an addition: RSPLIB's cspmonitor has no logging options).
    #[command(flatten)]
    pub log: LogOptions,
}

impl CspMonitorOptions {
    /// The address to listen on.
    pub fn listen_address(&self) -> SocketAddr {
        self.local_address.unwrap_or(CSPMONITOR_DEFAULT_ADDRESS)
    }

    /// Full display mode (`-full` given last), else compact.
    pub fn full_mode(&self) -> bool {
        self.full
    }
}

/// `hrestest` — handle-resolution load and statistics tool.
#[derive(Parser, Clone, Debug, PartialEq)]
#[command(name = "hrestest", version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE, about = "Handle resolution tester")]
pub struct HresTestOptions {
    /// Pool to resolve
    #[arg(long = "poolhandle", value_name = "NAME", default_value = "EchoPool", value_parser = pool_handle)]
    pub pool_handle: PoolHandle,
    /// PEs to ask for per resolution (0 = the registrar's default)
    #[arg(long = "items", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub items: u32,
    /// Pause between resolutions, ms
    #[arg(long = "pause", value_name = "MS", default_value = "0", value_parser = millis_min::<0>)]
    pub pause: Duration,
    /// Stop after N resolutions (0 = never)
    #[arg(long = "maxruns", value_name = "N", default_value = "0", value_parser = count::<0, { u64::MAX }>)]
    pub max_runs: u64,
    /// Probability of reporting each returned PE unreachable (0-1)
    #[arg(long = "reportunreachableprobability", value_name = "P", default_value = "0", allow_negative_numbers = true, value_parser = float_clamped::<0, 1000>)]
    pub report_unreachable_probability: f64,
    /// Print every result
    #[arg(long = "printresults")]
    pub print_results: bool,
    /// No banner
    #[arg(long = "quiet")]
    pub quiet: bool,
    /// Statistics file (default stdout)
    #[arg(long = "statsfile", value_name = "FILE")]
    pub stats_file: Option<PathBuf>,
    /// Statistics interval, ms (10-3600000)
    #[arg(long = "statsinterval", value_name = "MS", default_value = "1000", value_parser = millis::<10, 3_600_000>)]
    pub stats_interval: Duration,
    /// Library options.
    #[command(flatten)]
    pub library: LibraryOptions,
}

/// `testregistrator` — registers many PEs (load test).
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "testregistrator",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "Register many pool elements"
)]
pub struct TestRegistratorOptions {
    /// PEs to register (1-50000)
    #[arg(long = "poolelements", value_name = "N", default_value = "10", value_parser = count_u32::<1, 50_000>)]
    pub pool_elements: u32,
    /// Spread the PEs over N pools named POOLHANDLE-0001 and up (0 behaves as 1)
    #[arg(long = "pools", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub pools: u32,
    /// Pool handle prefix
    #[arg(long = "poolhandle", value_name = "NAME", default_value = "TestPool", value_parser = pool_handle)]
    pub pool_handle: PoolHandle,
    /// Policy: rr, wrr, lu, lud, rlu, rlud, plu, plud, rplu, rplud, rand, wrand (or long names)
    #[arg(
        long = "policy",
        value_name = "NAME",
        default_value = "roundrobin",
        value_enum
    )]
    pub policy: TestRegistratorPolicy,
    /// Load value (raw 0..4294967295)
    #[arg(long = "load", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub load: u32,
    /// Load degradation value (raw 0..4294967295)
    #[arg(long = "loaddeg", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub load_degradation: u32,
    /// Weight (min 1)
    #[arg(long = "weight", value_name = "N", default_value = "1", value_parser = count_u32::<1, { u32::MAX }>)]
    pub weight: u32,
    /// Pause between registrations, ms
    #[arg(long = "pause", value_name = "MS", default_value = "0", value_parser = millis_min::<0>)]
    pub pause: Duration,
    /// Do not install the Ctrl-C handler
    #[arg(long = "fastbreak")]
    pub fast_break: bool,
    /// Do not deregister at the end
    #[arg(long = "noderegistration")]
    pub no_deregistration: bool,
    /// Library options.
    #[command(flatten)]
    pub library: LibraryOptions,
}

impl TestRegistratorOptions {
    /// The policy with its values.
    pub fn policy(&self) -> Policy {
        self.policy
            .to_policy(self.load, self.load_degradation, self.weight)
    }

    /// Pool handle of the `i`-th PE (0-based): `<poolhandle>-NNNN`, as RSPLIB names them.
    pub fn pool_handle_of(&self, i: u32) -> PoolHandle {
        let pools = self.pools.max(1);
        let mut bytes = self.pool_handle.as_bytes().to_vec();
        bytes.extend_from_slice(format!("-{:04}", 1 + i % pools).as_bytes());
        PoolHandle::new(bytes)
    }
}

/// What `rspload` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RspLoadMode {
    /// Register the PEs, then drive handle resolutions for the duration.
    #[default]
    Resolve,
    /// Register the PEs and hold them for the duration, answering keep-alives (the
    /// registrar's keep-alive cost).
    #[value(name = "keepalive-only", alias = "keepaliveonly")]
    KeepaliveOnly,
}

/// `rspload` — our load generator: registers PEs and drives handle resolutions.
#[derive(Parser, Clone, Debug, PartialEq)]
#[command(name = "rspload", version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE, about = "RSerPool registrar load generator")]
pub struct RspLoadOptions {
    /// PEs to register, one association each
    #[arg(long = "pes", value_name = "N", default_value = "1000", value_parser = count_u32::<0, { u32::MAX }>)]
    pub pes: u32,
    /// Pool-user associations driving handle resolutions
    #[arg(long = "assocs", value_name = "C", default_value = "4", value_parser = count_u32::<0, { u32::MAX }>)]
    pub assocs: u32,
    /// Handle resolutions outstanding per association
    #[arg(long = "outstanding", value_name = "W", default_value = "8", value_parser = count_u32::<1, { u32::MAX }>)]
    pub outstanding: u32,
    /// Pool to register in and resolve
    #[arg(long = "poolhandle", value_name = "NAME", default_value = "LoadPool", value_parser = pool_handle)]
    pub pool_handle: PoolHandle,
    /// Policy of the registered PEs (rspserver -policy= syntax)
    #[arg(long = "policy", value_name = "NAME[:ARGS]", default_value = "RoundRobin", value_parser = policy_value)]
    pub policy: Policy,
    /// Measurement duration, seconds (after all PEs are registered)
    #[arg(long = "duration", value_name = "S", default_value = "10", value_parser = seconds_min::<1>)]
    pub duration: Duration,
    /// What to measure: resolve (handle resolutions) or keepalive-only (just hold the PEs
    /// registered, answering keep-alives)
    #[arg(
        long = "mode",
        value_name = "resolve|keepalive-only",
        default_value = "resolve",
        value_enum
    )]
    pub mode: RspLoadMode,
    /// Registrations started per second (<= 0 or "unlimited": as fast as the window allows)
    #[arg(
        long = "regrate",
        value_name = "RATE",
        default_value = "-1",
        allow_negative_numbers = true
    )]
    pub registration_rate: RateLimit,
    /// Registrations in progress at once (connect + Registration without response yet)
    #[arg(long = "regwindow", value_name = "N", default_value = "256", value_parser = count_u32::<1, { u32::MAX }>)]
    pub registration_window: u32,
    /// Process id of the registrar, to report its CPU time per resolution (from /proc)
    #[arg(long = "registrarpid", value_name = "PID", value_parser = count_u32::<1, { u32::MAX }>)]
    pub registrar_pid: Option<u32>,
    /// Library options (registrars, -transport=, logging).
    #[command(flatten)]
    pub library: LibraryOptions,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::argv::try_parse_from;
    use clap::CommandFactory;

    fn parse<T: Parser>(name: &str, args: &[&str]) -> Result<T, clap::Error> {
        try_parse_from::<T, _, _>(std::iter::once(name).chain(args.iter().copied()))
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn commands_are_consistent() {
        HsDumpOptions::command().debug_assert();
        CspMonitorOptions::command().debug_assert();
        HresTestOptions::command().debug_assert();
        TestRegistratorOptions::command().debug_assert();
        RspLoadOptions::command().debug_assert();
    }

    #[test]
    fn hsdump() {
        assert!(
            parse::<HsDumpOptions>("hsdump", &[]).is_err(),
            "address is required"
        );
        let o: HsDumpOptions = parse("hsdump", &["127.0.0.1"]).unwrap();
        assert_eq!(o.registrar.to_string(), "127.0.0.1:9901");
        assert_eq!(o.transport, TransportChoice::Auto);
        assert_eq!(o.timeout, ms(5000));
        assert!(!o.handlespace_only);
        let o: HsDumpOptions =
            parse("hsdump", &["127.0.0.1", "-timeout=0", "-handlespaceonly"]).unwrap();
        assert_eq!(o.timeout, ms(1));
        assert!(o.handlespace_only);
        let o: HsDumpOptions = parse("hsdump", &["[::1]:5000", "-loglevel=3"]).unwrap();
        assert_eq!(o.registrar.to_string(), "[::1]:5000");
        assert_eq!(o.log.log_level, 3);
        assert!(parse::<HsDumpOptions>("hsdump", &["a:b:c"]).is_err());
        assert!(parse::<HsDumpOptions>("hsdump", &["127.0.0.1", "127.0.0.2"]).is_err());
    }

    #[test]
    fn cspmonitor() {
        let o: CspMonitorOptions = parse("cspmonitor", &[]).unwrap();
        assert_eq!(o.listen_address(), "[::]:2960".parse().unwrap());
        assert_eq!(o.update_interval, ms(1000));
        assert_eq!(o.purge_interval, ms(30_000));
        assert!(!o.full_mode());
        assert_eq!(
            (o.max_pr, o.max_pe, o.max_pu, o.max_location_size),
            (6, 42, 24, 72)
        );
        let o: CspMonitorOptions = parse(
            "cspmonitor",
            &[
                "-localaddress=127.0.0.1",
                "-updateinterval=1",
                "-purgeinterval=1",
                "-full",
                "-maxpr=1",
                "-maxpe=2",
                "-maxpu=3",
                "-maxlocationsize=40",
            ],
        )
        .unwrap();
        assert_eq!(o.listen_address(), "127.0.0.1:2960".parse().unwrap());
        assert_eq!((o.update_interval, o.purge_interval), (ms(100), ms(1000)));
        assert!(o.full_mode());
        assert_eq!(
            (o.max_pr, o.max_pe, o.max_pu, o.max_location_size),
            (1, 2, 3, 40)
        );
        let o: CspMonitorOptions = parse("cspmonitor", &["-full", "-compact"]).unwrap();
        assert!(!o.full_mode());
        assert!(!o.once && !o.plain && o.runtime.is_none());
        let o: CspMonitorOptions =
            parse("cspmonitor", &["-once", "-plain", "-runtime=2.5"]).unwrap();
        assert!(o.once && o.plain);
        assert_eq!(o.runtime, Some(ms(2500)));
    }

    #[test]
    fn hrestest() {
        let o: HresTestOptions = parse("hrestest", &[]).unwrap();
        assert_eq!(o.pool_handle, PoolHandle::from("EchoPool"));
        assert_eq!((o.items, o.pause, o.max_runs), (0, Duration::ZERO, 0));
        assert_eq!(o.report_unreachable_probability, 0.0);
        assert!(!o.print_results && !o.quiet);
        assert_eq!(o.stats_file, None);
        assert_eq!(o.stats_interval, ms(1000));
        let o: HresTestOptions = parse(
            "hrestest",
            &[
                "-items=5",
                "-pause=10",
                "-maxruns=100",
                "-reportunreachableprobability=3",
                "-printresults",
                "-quiet",
                "-statsfile=/tmp/s",
                "-statsinterval=1",
            ],
        )
        .unwrap();
        assert_eq!((o.items, o.pause, o.max_runs), (5, ms(10), 100));
        assert_eq!(o.report_unreachable_probability, 1.0);
        assert!(o.print_results && o.quiet);
        assert_eq!(o.stats_interval, ms(10));
    }

    #[test]
    fn testregistrator() {
        let o: TestRegistratorOptions = parse("testregistrator", &[]).unwrap();
        assert_eq!((o.pool_elements, o.pools), (10, 0));
        assert_eq!(o.pool_handle, PoolHandle::from("TestPool"));
        assert_eq!(o.policy(), Policy::RoundRobin);
        assert_eq!((o.load, o.load_degradation, o.weight), (0, 0, 1));
        assert_eq!(o.pause, Duration::ZERO);
        assert!(!o.fast_break && !o.no_deregistration);
        assert_eq!(o.pool_handle_of(0), PoolHandle::from("TestPool-0001"));
        assert_eq!(o.pool_handle_of(7), PoolHandle::from("TestPool-0001"));
        let o: TestRegistratorOptions = parse(
            "testregistrator",
            &[
                "-poolelements=99999",
                "-pools=3",
                "-policy=lud",
                "-load=5",
                "-loaddeg=99999999999",
                "-weight=0",
                "-pause=20",
                "-fastbreak",
                "-noderegistration",
            ],
        )
        .unwrap();
        assert_eq!(o.pool_elements, 50_000);
        assert_eq!(
            o.policy(),
            Policy::LeastUsedDegradation {
                load: 5,
                degradation: u32::MAX
            }
        );
        assert_eq!(o.weight, 1);
        assert_eq!(o.pause, ms(20));
        assert!(o.fast_break && o.no_deregistration);
        assert_eq!(o.pool_handle_of(4), PoolHandle::from("TestPool-0002"));
        let o: TestRegistratorOptions =
            parse("testregistrator", &["-policy=weightedrandom", "-weight=7"]).unwrap();
        assert_eq!(o.policy(), Policy::WeightedRandom { weight: 7 });
        assert!(parse::<TestRegistratorOptions>("testregistrator", &["-policy=fastest"]).is_err());
    }

    #[test]
    fn rspload() {
        let o: RspLoadOptions = parse("rspload", &[]).unwrap();
        assert_eq!((o.pes, o.assocs, o.outstanding), (1000, 4, 8));
        assert_eq!(o.pool_handle, PoolHandle::from("LoadPool"));
        assert_eq!(o.policy, Policy::RoundRobin);
        assert_eq!(o.duration, Duration::from_secs(10));
        assert_eq!(o.library.transport, TransportChoice::Auto);
        assert_eq!(o.mode, RspLoadMode::Resolve);
        assert_eq!(o.registration_rate, RateLimit::UNLIMITED);
        assert_eq!((o.registration_window, o.registrar_pid), (256, None));
        let o: RspLoadOptions = parse(
            "rspload",
            &[
                "-mode=keepalive-only",
                "-regrate=500",
                "-regwindow=0",
                "-registrarpid=4242",
            ],
        )
        .unwrap();
        assert_eq!(o.mode, RspLoadMode::KeepaliveOnly);
        assert_eq!(o.registration_rate.per_second(), Some(500.0));
        assert_eq!((o.registration_window, o.registrar_pid), (1, Some(4242)));
        let a: RspLoadOptions = parse(
            "rspload",
            &[
                "-registrar=127.0.0.1:3863",
                "-pes=100000",
                "-assocs=16",
                "-outstanding=32",
                "-poolhandle=P",
                "-duration=2.5",
                "-transport=tcp",
                "-policy=LeastUsed",
            ],
        )
        .unwrap();
        let b: RspLoadOptions = parse(
            "rspload",
            &[
                "--registrar",
                "127.0.0.1:3863",
                "--pes",
                "100000",
                "--assocs",
                "16",
                "--outstanding",
                "32",
                "--poolhandle",
                "P",
                "--duration",
                "2.5",
                "--transport",
                "tcp",
                "--policy",
                "LeastUsed",
            ],
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!((a.pes, a.assocs, a.outstanding), (100_000, 16, 32));
        assert_eq!(a.duration, ms(2500));
        assert_eq!(a.library.transport, TransportChoice::Tcp);
        assert_eq!(a.library.registrars[0].to_string(), "127.0.0.1:3863");
        assert_eq!(a.policy, Policy::LeastUsed { load: 0 });
        assert!(
            parse::<RspLoadOptions>("rspload", &["-outstanding=0"])
                .unwrap()
                .outstanding
                == 1
        );
    }
}
