//! `rspserver` options: the common pool-element options (`shared/spec/services.md` §8.1),
//! `-policy=`, and every service's own options (§8.3).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use rserpool_proto::ids::{PeIdentifier, PoolHandle};
use rserpool_proto::policy::Policy;

use super::addr::{AddressList, address_list};
use super::common::LibraryOptions;
use super::policy::{policy_value, scripting_default_policy};
use super::values::{count_u32, float_clamped, identifier, millis_min, pool_handle, seconds_min};

/// The service an `rspserver` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Service {
    /// Echo (default).
    #[default]
    Echo,
    /// Discard.
    Discard,
    /// Daytime.
    Daytime,
    /// Character Generator.
    CharGen,
    /// Ping Pong.
    PingPong,
    /// Fractal Generator.
    Fractal,
    /// CalcApp.
    CalcApp,
    /// Scripting.
    Scripting,
}

impl Service {
    /// RSPLIB's default pool handle of the service.
    pub fn default_pool_handle(self) -> &'static str {
        match self {
            Service::Echo => "EchoPool",
            Service::Discard => "DiscardPool",
            Service::Daytime => "DaytimePool",
            Service::CharGen => "CharGenPool",
            Service::PingPong => "PingPongPool",
            Service::Fractal => "FractalGeneratorPool",
            Service::CalcApp => "CalcAppPool",
            Service::Scripting => "ScriptingPool",
        }
    }
}

const SERVICES: [&str; 8] = [
    "echo",
    "discard",
    "daytime",
    "chargen",
    "pingpong",
    "fractal",
    "calcapp",
    "scripting",
];

/// The service switches; the last one given wins (RSPLIB).
#[derive(Args, Clone, Debug, PartialEq, Eq, Default)]
#[command(next_help_heading = "Service (the last one given wins; default -echo)", about = None, long_about = None)]
pub struct ServiceSelection {
    /// Echo service (default)
    #[arg(id = "echo", long = "echo", overrides_with_all = SERVICES)]
    pub echo: bool,
    /// Discard service
    #[arg(id = "discard", long = "discard", overrides_with_all = SERVICES)]
    pub discard: bool,
    /// Daytime service
    #[arg(id = "daytime", long = "daytime", overrides_with_all = SERVICES)]
    pub daytime: bool,
    /// Character Generator service
    #[arg(id = "chargen", long = "chargen", overrides_with_all = SERVICES)]
    pub chargen: bool,
    /// Ping Pong service
    #[arg(id = "pingpong", long = "pingpong", overrides_with_all = SERVICES)]
    pub pingpong: bool,
    /// Fractal Generator service
    #[arg(id = "fractal", long = "fractal", overrides_with_all = SERVICES)]
    pub fractal: bool,
    /// CalcApp service
    #[arg(id = "calcapp", long = "calcapp", overrides_with_all = SERVICES)]
    pub calcapp: bool,
    /// Scripting service
    #[arg(id = "scripting", long = "scripting", overrides_with_all = SERVICES)]
    pub scripting: bool,
}

impl ServiceSelection {
    /// The selected service.
    pub fn service(&self) -> Service {
        // overrides_with_all leaves at most one switch set.
        if self.discard {
            Service::Discard
        } else if self.daytime {
            Service::Daytime
        } else if self.chargen {
            Service::CharGen
        } else if self.pingpong {
            Service::PingPong
        } else if self.fractal {
            Service::Fractal
        } else if self.calcapp {
            Service::CalcApp
        } else if self.scripting {
            Service::Scripting
        } else {
            Service::Echo
        }
    }
}

/// Character Generator options.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "Character Generator options", about = None, long_about = None)]
pub struct CharGenOptions {
    /// Max sessions
    #[arg(id = "chargenmaxthreads", long = "chargenmaxthreads", value_name = "N", default_value = "4", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_threads: u32,
}

/// Ping Pong options.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "Ping Pong options", about = None, long_about = None)]
pub struct PingPongOptions {
    /// Max sessions
    #[arg(id = "pppmaxthreads", long = "pppmaxthreads", value_name = "N", default_value = "4", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_threads: u32,
    /// Abort each session after N replies (0 = off; failover test)
    #[arg(id = "pppfailureafter", long = "pppfailureafter", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub failure_after: u32,
}

/// Fractal Generator options.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "Fractal Generator options", about = None, long_about = None)]
pub struct FractalOptions {
    /// Max sessions
    #[arg(id = "fgpmaxthreads", long = "fgpmaxthreads", value_name = "N", default_value = "4", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_threads: u32,
    /// Send timeout for data and cookies, ms
    #[arg(id = "fgptransmittimeout", long = "fgptransmittimeout", value_name = "MS", default_value = "2500", value_parser = millis_min::<0>)]
    pub transmit_timeout: Duration,
    /// Send a cookie at least this often, ms (min 100)
    #[arg(id = "fgpcookiemaxtime", long = "fgpcookiemaxtime", value_name = "MS", default_value = "1000", value_parser = millis_min::<100>)]
    pub cookie_max_time: Duration,
    /// Send a cookie after N data messages (min 1)
    #[arg(id = "fgpcookiemaxpackets", long = "fgpcookiemaxpackets", value_name = "N", default_value = "10", value_parser = count_u32::<1, { u32::MAX }>)]
    pub cookie_max_packets: u32,
    /// Flush the data buffer at least this often, ms (min 100)
    #[arg(id = "fgpdatamaxtime", long = "fgpdatamaxtime", value_name = "MS", default_value = "1000", value_parser = millis_min::<100>)]
    pub data_max_time: Duration,
    /// Close each session after N data messages (0 = off; failover test)
    #[arg(id = "fgpfailureafter", long = "fgpfailureafter", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub failure_after: u32,
    /// Test mode: value = (x*y) mod 256 instead of the fractal
    #[arg(id = "fgptestmode", long = "fgptestmode")]
    pub test_mode: bool,
}

/// CalcApp options.
#[derive(Args, Clone, Debug, PartialEq)]
#[command(next_help_heading = "CalcApp options", about = None, long_about = None)]
pub struct CalcAppOptions {
    /// Calculations per second shared among the jobs (min 1)
    #[arg(id = "capcapacity", long = "capcapacity", value_name = "C", default_value = "1000000", value_parser = float_clamped::<1000, { u64::MAX }>)]
    pub capacity: f64,
    /// Parallel jobs; more are rejected (min 1)
    #[arg(id = "capmaxjobs", long = "capmaxjobs", value_name = "N", default_value = "10", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_jobs: u32,
    /// PE keep-alive interval, ms (min 100)
    #[arg(id = "capkeepalivetransmissioninterval", long = "capkeepalivetransmissioninterval", value_name = "MS", default_value = "2500", value_parser = millis_min::<100>)]
    pub keep_alive_transmission_interval: Duration,
    /// PE keep-alive timeout, ms (min 100)
    #[arg(id = "capkeepalivetimeoutinterval", long = "capkeepalivetimeoutinterval", value_name = "MS", default_value = "2500", value_parser = millis_min::<100>)]
    pub keep_alive_timeout_interval: Duration,
    /// Cookie interval, seconds (fractions allowed; min 0.1)
    #[arg(id = "capcookiemaxtime", long = "capcookiemaxtime", value_name = "S", default_value = "5", value_parser = seconds_min::<100>)]
    pub cookie_max_time: Duration,
    /// Send a cookie after N calculations (min 1)
    #[arg(id = "capcookiemaxcalculations", long = "capcookiemaxcalculations", value_name = "N", default_value = "5000000", value_parser = float_clamped::<1000, { u64::MAX }>)]
    pub cookie_max_calculations: f64,
    /// Probability of a clean shutdown with final cookies (0-1)
    #[arg(id = "capcleanshutdownprobability", long = "capcleanshutdownprobability", value_name = "P", default_value = "1", allow_negative_numbers = true, value_parser = float_clamped::<0, 1000>)]
    pub clean_shutdown_probability: f64,
    /// Abort a job's session right after its N-th cookie (0 = off; failover test, our
    /// addition: RSPLIB's CalcApp has no failure tester)
    #[arg(id = "capfailureafter", long = "capfailureafter", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub failure_after: u32,
    /// Statistics object name
    #[arg(
        id = "capobject",
        long = "capobject",
        value_name = "NAME",
        default_value = "scenario.calcapppoolelement[0]"
    )]
    pub object_name: String,
    /// Statistics vector file
    #[arg(
        id = "capvector",
        long = "capvector",
        value_name = "FILE",
        default_value = "calcapppoolelement.vec"
    )]
    pub vector_file: PathBuf,
    /// Statistics scalar file
    #[arg(
        id = "capscalar",
        long = "capscalar",
        value_name = "FILE",
        default_value = "calcapppoolelement.sca"
    )]
    pub scalar_file: PathBuf,
}

/// Scripting options.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "Scripting options", about = None, long_about = None)]
pub struct ScriptingOptions {
    /// Max sessions (default: number of CPUs; min 1)
    #[arg(id = "ssmaxthreads", long = "ssmaxthreads", value_name = "N", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_threads: Option<u32>,
    /// Upload inactivity / send timeout, ms
    #[arg(id = "sstransmittimeout", long = "sstransmittimeout", value_name = "MS", default_value = "30000", value_parser = millis_min::<0>)]
    pub transmit_timeout: Duration,
    /// PE keep-alive interval, ms
    #[arg(id = "sskeepaliveinterval", long = "sskeepaliveinterval", value_name = "MS", default_value = "15000", value_parser = millis_min::<0>)]
    pub keep_alive_interval: Duration,
    /// PE keep-alive timeout, ms
    #[arg(id = "sskeepalivetimeout", long = "sskeepalivetimeout", value_name = "MS", default_value = "10000", value_parser = millis_min::<0>)]
    pub keep_alive_timeout: Duration,
    /// Environment cache directory (default: a temporary directory)
    #[arg(id = "sscachedirectory", long = "sscachedirectory", value_name = "DIR")]
    pub cache_directory: Option<PathBuf>,
    /// Environment cache size, KiB (min 128)
    #[arg(id = "sscachemaxsize", long = "sscachemaxsize", value_name = "KIB", default_value = "131072", value_parser = count_u32::<128, { u32::MAX }>)]
    pub cache_max_size_kib: u32,
    /// Environment cache entries (min 1)
    #[arg(id = "sscachemaxentries", long = "sscachemaxentries", value_name = "N", default_value = "16", value_parser = count_u32::<1, { u32::MAX }>)]
    pub cache_max_entries: u32,
    /// OpenPGP keyring verifying environments and work packages (its secret keys decrypt
    /// work packages)
    #[arg(id = "sskeyring", long = "sskeyring", value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// GnuPG trust database (handed to ssrun; every keyring key is trusted)
    #[arg(id = "sstrustdb", long = "sstrustdb", value_name = "FILE")]
    pub trust_db: Option<PathBuf>,
    /// Keep session directories
    #[arg(id = "sskeeptempdirs", long = "sskeeptempdirs")]
    pub keep_temp_dirs: bool,
    /// Progress output in the log
    #[arg(id = "ssverbose", long = "ssverbose")]
    pub verbose: bool,
}

impl ScriptingOptions {
    /// Max sessions: `-ssmaxthreads=` or the number of CPUs.
    pub fn max_threads(&self) -> u32 {
        self.max_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1)
        })
    }
}

fn pe_identifier(s: &str) -> Result<PeIdentifier, String> {
    identifier(s).map(PeIdentifier)
}

/// `rspserver` — a pool element running one of RSPLIB's example services.
#[derive(Parser, Clone, Debug, PartialEq)]
#[command(
    name = "rspserver",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "RSerPool pool element with RSPLIB's example services"
)]
pub struct RspServerOptions {
    /// Which service.
    #[command(flatten)]
    pub services: ServiceSelection,
    /// Pool to register in (default: the service's pool)
    #[arg(id = "poolhandle", long = "poolhandle", value_name = "NAME", value_parser = pool_handle)]
    pub pool_handle: Option<PoolHandle>,
    /// PE identifier, 0xHEX or decimal (default random; 0 = random)
    #[arg(id = "identifier", long = "identifier", value_name = "ID", value_parser = pe_identifier)]
    pub identifier: Option<PeIdentifier>,
    /// Local endpoint of the user transport (default all addresses, any port)
    #[arg(id = "local", long = "local", value_name = "ADDR[:PORT][,ADDR...]", value_parser = address_list::<0>)]
    pub local: Option<AddressList>,
    /// Selection policy, e.g. RoundRobin, WeightedRandom:5, LeastUsedDegradation:0.1
    #[arg(id = "policy", long = "policy", value_name = "NAME[:ARGS]", value_parser = policy_value)]
    pub policy: Option<Policy>,
    /// Re-registration interval, ms (min 10; registration life = 3 x interval)
    #[arg(id = "rereginterval", long = "rereginterval", value_name = "MS", default_value = "30000", value_parser = millis_min::<10>)]
    pub rereg_interval: Duration,
    /// Stop after this time, ms (0 = unlimited; RSPLIB's code uses ms, its man page says s)
    #[arg(id = "runtime", long = "runtime", value_name = "MS", default_value = "0", value_parser = millis_min::<0>)]
    pub runtime: Duration,
    /// Failure-test mode: mean (exponential) up time, seconds (0 = off)
    #[arg(id = "uptime", long = "uptime", value_name = "S", default_value = "0", value_parser = seconds_min::<0>)]
    pub uptime: Duration,
    /// Failure-test mode: mean (exponential) down time, seconds
    #[arg(id = "downtime", long = "downtime", value_name = "S", default_value = "0", value_parser = seconds_min::<0>)]
    pub downtime: Duration,
    /// Fork into the background, write the PID to FILE; registration failures become non-fatal
    #[arg(id = "daemonpidfile", long = "daemonpidfile", value_name = "FILE")]
    pub daemon_pid_file: Option<PathBuf>,
    /// Less console output
    #[arg(id = "quiet", long = "quiet")]
    pub quiet: bool,
    /// Library options.
    #[command(flatten)]
    pub library: LibraryOptions,
    /// Character Generator options.
    #[command(flatten)]
    pub chargen: CharGenOptions,
    /// Ping Pong options.
    #[command(flatten)]
    pub pingpong: PingPongOptions,
    /// Fractal Generator options.
    #[command(flatten)]
    pub fractal: FractalOptions,
    /// CalcApp options.
    #[command(flatten)]
    pub calcapp: CalcAppOptions,
    /// Scripting options.
    #[command(flatten)]
    pub scripting: ScriptingOptions,
}

impl RspServerOptions {
    /// The selected service.
    pub fn service(&self) -> Service {
        self.services.service()
    }

    /// The pool handle: `-poolhandle=` or the service's default.
    pub fn pool_handle(&self) -> PoolHandle {
        self.pool_handle
            .clone()
            .unwrap_or_else(|| PoolHandle::from(self.service().default_pool_handle()))
    }

    /// The policy: `-policy=`, else Round Robin — except Scripting, which defaults to
    /// LeastUsedDegradation with a degradation of 1/maxThreads (RSPLIB).
    pub fn policy(&self) -> Policy {
        match (self.policy, self.service()) {
            (Some(p), _) => p,
            (None, Service::Scripting) => scripting_default_policy(self.scripting.max_threads()),
            (None, _) => Policy::RoundRobin,
        }
    }

    /// The PE identifier to use; `None` means a random one (`-identifier=0` counts as unset).
    pub fn pe_identifier(&self) -> Option<PeIdentifier> {
        self.identifier.filter(|id| id.0 != 0)
    }

    /// The runtime limit, `None` when unlimited.
    pub fn runtime_limit(&self) -> Option<Duration> {
        (!self.runtime.is_zero()).then_some(self.runtime)
    }

    /// The registration life RSPLIB uses: 3 × the re-registration interval.
    pub fn registration_life(&self) -> Duration {
        self.rereg_interval.saturating_mul(3)
    }

    /// Max sessions of the selected service (`None` for the one-loop services Echo,
    /// Discard, Daytime and CalcApp, which use `-capmaxjobs=` instead).
    pub fn max_threads(&self) -> Option<u32> {
        match self.service() {
            Service::CharGen => Some(self.chargen.max_threads),
            Service::PingPong => Some(self.pingpong.max_threads),
            Service::Fractal => Some(self.fractal.max_threads),
            Service::Scripting => Some(self.scripting.max_threads()),
            Service::Echo | Service::Discard | Service::Daytime | Service::CalcApp => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::addr::AnnounceSpec;
    use crate::cli::argv::try_parse_from;
    use crate::cli::common::{LogOptions, TransportChoice};
    use clap::CommandFactory;

    fn try_parse(args: &[&str]) -> Result<RspServerOptions, clap::Error> {
        try_parse_from::<RspServerOptions, _, _>(
            std::iter::once("rspserver").chain(args.iter().copied()),
        )
    }

    fn parse(args: &[&str]) -> RspServerOptions {
        try_parse(args).unwrap()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn command_is_consistent() {
        RspServerOptions::command().debug_assert();
    }

    #[test]
    fn defaults_are_rsplibs() {
        let o = parse(&[]);
        assert_eq!(o.service(), Service::Echo);
        assert_eq!(o.pool_handle(), PoolHandle::from("EchoPool"));
        assert_eq!(o.pe_identifier(), None);
        assert_eq!(o.local, None);
        assert_eq!(o.policy(), Policy::RoundRobin);
        assert_eq!(o.rereg_interval, ms(30_000));
        assert_eq!(o.registration_life(), ms(90_000));
        assert_eq!(o.runtime_limit(), None);
        assert_eq!((o.uptime, o.downtime), (Duration::ZERO, Duration::ZERO));
        assert_eq!(o.daemon_pid_file, None);
        assert!(!o.quiet);
        let l = &o.library;
        assert!(l.registrars.is_empty());
        assert_eq!(l.asap_announce, AnnounceSpec::Auto);
        assert_eq!(
            l.asap_announce_address(),
            Some("239.0.0.50:3863".parse().unwrap())
        );
        assert_eq!(l.registrar_announce_timeout, ms(5000));
        assert_eq!(l.registrar_connect_timeout, ms(7500));
        assert_eq!(l.registrar_connect_max_trials, 1);
        assert_eq!(l.registrar_request_timeout, ms(3000));
        assert_eq!(l.registrar_response_timeout, ms(3000));
        assert_eq!(l.registrar_request_max_trials, 1);
        assert_eq!(l.csp_identifier, None);
        assert_eq!(l.log, LogOptions::default());
        assert_eq!(l.transport, TransportChoice::Auto);
        assert_eq!(o.chargen.max_threads, 4);
        assert_eq!((o.pingpong.max_threads, o.pingpong.failure_after), (4, 0));
        let f = &o.fractal;
        assert_eq!(f.max_threads, 4);
        assert_eq!(f.transmit_timeout, ms(2500));
        assert_eq!(f.cookie_max_time, ms(1000));
        assert_eq!(f.cookie_max_packets, 10);
        assert_eq!(f.data_max_time, ms(1000));
        assert_eq!(f.failure_after, 0);
        assert!(!f.test_mode);
        let c = &o.calcapp;
        assert_eq!(c.capacity, 1_000_000.0);
        assert_eq!(c.max_jobs, 10);
        assert_eq!(c.keep_alive_transmission_interval, ms(2500));
        assert_eq!(c.keep_alive_timeout_interval, ms(2500));
        assert_eq!(c.cookie_max_time, ms(5000));
        assert_eq!(c.cookie_max_calculations, 5_000_000.0);
        assert_eq!(c.clean_shutdown_probability, 1.0);
        assert_eq!(c.object_name, "scenario.calcapppoolelement[0]");
        assert_eq!(c.vector_file, PathBuf::from("calcapppoolelement.vec"));
        assert_eq!(c.scalar_file, PathBuf::from("calcapppoolelement.sca"));
        let s = &o.scripting;
        assert_eq!(s.max_threads, None);
        assert!(s.max_threads() >= 1);
        assert_eq!(s.transmit_timeout, ms(30_000));
        assert_eq!(s.keep_alive_interval, ms(15_000));
        assert_eq!(s.keep_alive_timeout, ms(10_000));
        assert_eq!(s.cache_directory, None);
        assert_eq!(s.cache_max_size_kib, 131_072);
        assert_eq!(s.cache_max_entries, 16);
        assert_eq!((s.keyring.as_ref(), s.trust_db.as_ref()), (None, None));
        assert!(!s.keep_temp_dirs && !s.verbose);
    }

    #[test]
    fn services_and_their_pools() {
        for (flag, service, pool) in [
            ("-echo", Service::Echo, "EchoPool"),
            ("-discard", Service::Discard, "DiscardPool"),
            ("-daytime", Service::Daytime, "DaytimePool"),
            ("-chargen", Service::CharGen, "CharGenPool"),
            ("-pingpong", Service::PingPong, "PingPongPool"),
            ("-fractal", Service::Fractal, "FractalGeneratorPool"),
            ("-calcapp", Service::CalcApp, "CalcAppPool"),
            ("-scripting", Service::Scripting, "ScriptingPool"),
        ] {
            let o = parse(&[flag]);
            assert_eq!(o.service(), service, "{flag}");
            assert_eq!(o.pool_handle(), PoolHandle::from(pool), "{flag}");
        }
        // The last switch wins.
        assert_eq!(parse(&["-fractal", "-calcapp"]).service(), Service::CalcApp);
        assert_eq!(parse(&["-calcapp", "-echo"]).service(), Service::Echo);
        assert_eq!(
            parse(&["-scripting", "-pingpong", "-discard"]).service(),
            Service::Discard
        );
        assert_eq!(
            parse(&["-pingpong", "-poolhandle=MyPool"]).pool_handle(),
            PoolHandle::from("MyPool")
        );
    }

    #[test]
    fn policies() {
        assert_eq!(
            parse(&["-policy=WeightedRoundRobin:3"]).policy(),
            Policy::WeightedRoundRobin { weight: 3 }
        );
        assert_eq!(
            parse(&["--policy", "LeastUsedDegradation:0.5"]).policy(),
            Policy::LeastUsedDegradation {
                load: 0,
                degradation: 2_147_483_648
            }
        );
        // Scripting's default is LUD with 1/maxThreads.
        assert_eq!(
            parse(&["-scripting", "-ssmaxthreads=4"]).policy(),
            Policy::LeastUsedDegradation {
                load: 0,
                degradation: 1_073_741_824
            }
        );
        assert_eq!(
            parse(&["-scripting", "-policy=Random"]).policy(),
            Policy::Random
        );
        let e = try_parse(&["-policy=LeastUsedDegradation:2"]).unwrap_err();
        assert!(e.use_stderr());
        let text = e.to_string();
        assert!(
            text.contains("degradation") && text.contains("0 to 1"),
            "{text}"
        );
        assert!(try_parse(&["-policy=Nearest"]).is_err());
    }

    #[test]
    fn every_option_parses() {
        let o = parse(&[
            "-identifier=0xdeadbeef",
            "-local=10.0.0.1:4000,10.0.1.1",
            "-rereginterval=5000",
            "-runtime=60000",
            "-uptime=10",
            "-downtime=0.5",
            "-daemonpidfile=/tmp/pe.pid",
            "-quiet",
            "-registrar=10.0.0.5",
            "-registrar=[::1]:3000,127.0.0.1",
            "-asapannounce=off",
            "-registrarannouncetimeout=1000",
            "-registrarconnecttimeout=2000",
            "-registrarconnectmaxtrials=3",
            "-registrarrequesttimeout=400",
            "-registrarresponsetimeout=500",
            "-registrarrequestmaxtrials=2",
            "-cspserver=127.0.0.1:2961",
            "-cspinterval=300",
            "-cspidentifier=99",
            "-loglevel=9",
            "-logappend=/tmp/pe.log",
            "-logcolor=on",
            "-transport=sctp",
            "-chargenmaxthreads=8",
            "-pppmaxthreads=9",
            "-pppfailureafter=3",
            "-fgpmaxthreads=2",
            "-fgptransmittimeout=100",
            "-fgpcookiemaxtime=200",
            "-fgpcookiemaxpackets=3",
            "-fgpdatamaxtime=300",
            "-fgpfailureafter=7",
            "-fgptestmode",
            "-capcapacity=500",
            "-capmaxjobs=2",
            "-capkeepalivetransmissioninterval=700",
            "-capkeepalivetimeoutinterval=800",
            "-capcookiemaxtime=0.5",
            "-capcookiemaxcalculations=1000",
            "-capcleanshutdownprobability=0.25",
            "-capobject=obj",
            "-capvector=v.vec",
            "-capscalar=s.sca",
            "-ssmaxthreads=3",
            "-sstransmittimeout=1000",
            "-sskeepaliveinterval=2000",
            "-sskeepalivetimeout=3000",
            "-sscachedirectory=/tmp/cache",
            "-sscachemaxsize=1024",
            "-sscachemaxentries=4",
            "-sskeyring=/k",
            "-sstrustdb=/t",
            "-sskeeptempdirs",
            "-ssverbose",
        ]);
        assert_eq!(o.pe_identifier(), Some(PeIdentifier(0xdead_beef)));
        assert_eq!(
            o.local.as_ref().map(ToString::to_string).as_deref(),
            Some("10.0.0.1:4000,10.0.1.1:4000")
        );
        assert_eq!(o.rereg_interval, ms(5000));
        assert_eq!(o.runtime_limit(), Some(ms(60_000)));
        assert_eq!((o.uptime, o.downtime), (ms(10_000), ms(500)));
        assert_eq!(o.daemon_pid_file, Some("/tmp/pe.pid".into()));
        assert!(o.quiet);
        let l = &o.library;
        assert_eq!(l.registrars.len(), 2);
        assert_eq!(l.registrars[0].to_string(), "10.0.0.5:3863");
        assert_eq!(l.registrars[1].to_string(), "[::1]:3000,127.0.0.1:3000");
        assert_eq!(l.asap_announce_address(), None);
        assert_eq!(l.registrar_announce_timeout, ms(1000));
        assert_eq!(l.registrar_connect_timeout, ms(2000));
        assert_eq!(l.registrar_connect_max_trials, 3);
        assert_eq!(l.registrar_request_timeout, ms(400));
        assert_eq!(l.registrar_response_timeout, ms(500));
        assert_eq!(l.registrar_request_max_trials, 2);
        assert_eq!(l.csp.csp_server, Some("127.0.0.1:2961".parse().unwrap()));
        assert_eq!(l.csp.csp_interval, Some(ms(300)));
        assert_eq!(l.csp_identifier, Some(99));
        assert_eq!(l.log.log_level, 9);
        assert_eq!(l.log.log_append, Some("/tmp/pe.log".into()));
        assert_eq!(l.transport, TransportChoice::Sctp);
        assert_eq!(o.chargen.max_threads, 8);
        assert_eq!((o.pingpong.max_threads, o.pingpong.failure_after), (9, 3));
        let f = &o.fractal;
        assert_eq!(
            (
                f.max_threads,
                f.cookie_max_packets,
                f.failure_after,
                f.test_mode
            ),
            (2, 3, 7, true)
        );
        assert_eq!(
            (f.transmit_timeout, f.cookie_max_time, f.data_max_time),
            (ms(100), ms(200), ms(300))
        );
        let c = &o.calcapp;
        assert_eq!((c.capacity, c.max_jobs), (500.0, 2));
        assert_eq!(
            (
                c.keep_alive_transmission_interval,
                c.keep_alive_timeout_interval
            ),
            (ms(700), ms(800))
        );
        assert_eq!(c.cookie_max_time, ms(500));
        assert_eq!(c.cookie_max_calculations, 1000.0);
        assert_eq!(c.clean_shutdown_probability, 0.25);
        assert_eq!(
            (
                c.object_name.as_str(),
                c.vector_file.to_str(),
                c.scalar_file.to_str()
            ),
            ("obj", Some("v.vec"), Some("s.sca"))
        );
        let s = &o.scripting;
        assert_eq!(s.max_threads(), 3);
        assert_eq!(
            (
                s.transmit_timeout,
                s.keep_alive_interval,
                s.keep_alive_timeout
            ),
            (ms(1000), ms(2000), ms(3000))
        );
        assert_eq!(s.cache_directory, Some("/tmp/cache".into()));
        assert_eq!((s.cache_max_size_kib, s.cache_max_entries), (1024, 4));
        assert_eq!(s.keyring, Some("/k".into()));
        assert_eq!(s.trust_db, Some("/t".into()));
        assert!(s.keep_temp_dirs && s.verbose);
    }

    #[test]
    fn clamps_are_rsplibs() {
        let o = parse(&[
            "-rereginterval=1",
            "-fgpcookiemaxtime=5",
            "-fgpcookiemaxpackets=0",
            "-fgpdatamaxtime=0",
            "-capcapacity=0.5",
            "-capmaxjobs=0",
            "-capkeepalivetransmissioninterval=1",
            "-capkeepalivetimeoutinterval=1",
            "-capcookiemaxtime=0.01",
            "-capcookiemaxcalculations=0",
            "-capcleanshutdownprobability=7",
            "-ssmaxthreads=0",
            "-sscachemaxsize=1",
            "-sscachemaxentries=0",
            "-pppmaxthreads=0",
        ]);
        assert_eq!(o.rereg_interval, ms(10));
        assert_eq!(o.fractal.cookie_max_time, ms(100));
        assert_eq!(o.fractal.cookie_max_packets, 1);
        assert_eq!(o.fractal.data_max_time, ms(100));
        assert_eq!(o.calcapp.capacity, 1.0);
        assert_eq!(o.calcapp.max_jobs, 1);
        assert_eq!(o.calcapp.keep_alive_transmission_interval, ms(100));
        assert_eq!(o.calcapp.keep_alive_timeout_interval, ms(100));
        assert_eq!(o.calcapp.cookie_max_time, ms(100));
        assert_eq!(o.calcapp.cookie_max_calculations, 1.0);
        assert_eq!(o.calcapp.clean_shutdown_probability, 1.0);
        assert_eq!(o.scripting.max_threads(), 1);
        assert_eq!(o.scripting.cache_max_size_kib, 128);
        assert_eq!(o.scripting.cache_max_entries, 1);
        assert_eq!(o.pingpong.max_threads, 1);
        assert_eq!(
            parse(&["-capcleanshutdownprobability=-1"])
                .calcapp
                .clean_shutdown_probability,
            0.0
        );
    }

    #[test]
    fn unknown_and_bad_options() {
        for bad in [
            &["-fgpbogus=1"][..],
            &["-capfoo"],
            &["-ssnothing=2"],
            &["-poolhandle="],
            &["-poolhandle=ThisPoolHandleIsFarTooLongForRSPLIB"],
            &["-identifier=abc"],
            &["-local=300.1.1.1"],
            &["-echo=1"],
        ] {
            assert!(try_parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn max_threads_per_service() {
        assert_eq!(parse(&[]).max_threads(), None);
        assert_eq!(parse(&["-chargen"]).max_threads(), Some(4));
        assert_eq!(
            parse(&["-fractal", "-fgpmaxthreads=6"]).max_threads(),
            Some(6)
        );
        assert_eq!(
            parse(&["-scripting", "-ssmaxthreads=2"]).max_threads(),
            Some(2)
        );
    }
}
