//! Option groups shared by several programs: logging, CSP reporting, the library's
//! registrar-hunt options (RSPLIB `rsp_initarg`), and the transport choice.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::addr::{
    ASAP_ANNOUNCE_DEFAULT, ASAP_PORT, AddressList, AnnounceSpec, CSP_PORT, address_list,
    announce_spec, parse_socket_addr, socket_addr,
};
use super::values::{count_u32, identifier, millis_min};

/// Which transport carries ASAP and ENRP (our addition, `-transport=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TransportChoice {
    /// Kernel SCTP only (RSPLIB's only transport).
    Sctp,
    /// The TCP mapping only (draft-ietf-rserpool-tcpmapping framing).
    Tcp,
    /// SCTP where the kernel supports it, else TCP.
    #[default]
    Auto,
}

/// Colour in log output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogColor {
    /// Always colour.
    On,
    /// Never colour.
    Off,
    /// Colour only when writing to a terminal. (RSPLIB's default is `on` even for files;
    /// ours avoids escape codes in log files and pipes.)
    #[default]
    Auto,
}

/// Where log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard error (default).
    Stderr,
    /// `-logfile=`: the file is truncated first.
    Truncate(PathBuf),
    /// `-logappend=`: lines are appended.
    Append(PathBuf),
}

fn log_level(s: &str) -> Result<u8, String> {
    // RSPLIB: min(atol(level), MAX_LOGLEVEL).
    count_u32::<0, 9>(s).map(|v| u8::try_from(v).unwrap_or(9))
}

/// RSPLIB's logging options.
///
/// `-loglevel=N` maps RSPLIB's levels to `tracing` levels:
///
/// | RSPLIB | name | tracing |
/// |---|---|---|
/// | 0 | (nothing) | `OFF` |
/// | 1 | ERROR (RSPLIB's default) | `ERROR` |
/// | 2 | WARNING | `WARN` |
/// | 3 | NOTE | `INFO` |
/// | 4 | ACTION | `DEBUG` |
/// | 5–9 | VERBOSE1–5 | `TRACE` |
///
/// Values above 9 are clamped to 9, as RSPLIB does.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "Logging options", about = None, long_about = None)]
pub struct LogOptions {
    /// Log level 0-9 (0 = off, 1 = errors, 2 = warnings, 3 = notes, 4 = actions, 5-9 = verbose)
    #[arg(long = "loglevel", value_name = "0-9", default_value = "1", value_parser = log_level)]
    pub log_level: u8,
    /// Write the log to FILE (truncated first)
    #[arg(long = "logfile", value_name = "FILE", overrides_with = "log_append")]
    pub log_file: Option<PathBuf>,
    /// Append the log to FILE
    #[arg(long = "logappend", value_name = "FILE", overrides_with = "log_file")]
    pub log_append: Option<PathBuf>,
    /// No log output at all (log level 0)
    #[arg(long = "logquiet")]
    pub log_quiet: bool,
    /// Colour log lines
    #[arg(
        long = "logcolor",
        value_name = "on|off|auto",
        default_value = "auto",
        value_enum
    )]
    pub log_color: LogColor,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            log_level: 1,
            log_file: None,
            log_append: None,
            log_quiet: false,
            log_color: LogColor::Auto,
        }
    }
}

impl LogOptions {
    /// The `tracing` level filter for `-loglevel` (see the table above); `OFF` with
    /// `-logquiet`.
    pub fn level_filter(&self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        if self.log_quiet {
            return LevelFilter::OFF;
        }
        match self.log_level {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        }
    }

    /// Where the log goes (the later of `-logfile=`/`-logappend=` wins).
    pub fn output(&self) -> LogOutput {
        match (&self.log_file, &self.log_append) {
            (Some(f), _) => LogOutput::Truncate(f.clone()),
            (None, Some(f)) => LogOutput::Append(f.clone()),
            (None, None) => LogOutput::Stderr,
        }
    }
}

fn csp_interval(s: &str) -> Result<Duration, String> {
    millis_min::<0>(s)
}

/// Component Status Protocol reporting (`-cspserver=`, `-cspinterval=`) and the
/// environment variables `CSP_SERVER` / `CSP_INTERVAL`.
#[derive(Args, Clone, Debug, PartialEq, Eq, Default)]
#[command(next_help_heading = "CSP options", about = None, long_about = None)]
pub struct CspOptions {
    /// Send component status reports to this address (port default 2960; env CSP_SERVER)
    #[arg(long = "cspserver", value_name = "ADDR[:PORT]", value_parser = socket_addr::<CSP_PORT>)]
    pub csp_server: Option<SocketAddr>,
    /// Component status report interval in ms (env CSP_INTERVAL, min 250 ms from env)
    #[arg(long = "cspinterval", value_name = "MS", value_parser = csp_interval)]
    pub csp_interval: Option<Duration>,
}

/// Where and how often to send CSP reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CspTarget {
    /// The cspmonitor's address.
    pub server: SocketAddr,
    /// Report interval.
    pub interval: Duration,
}

/// Smallest interval taken from `CSP_INTERVAL` (RSPLIB).
pub const CSP_MIN_ENV_INTERVAL: Duration = Duration::from_millis(250);
/// The registrar's default CSP server.
pub const CSP_DEFAULT_SERVER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), CSP_PORT);

fn env_server(env: &dyn Fn(&str) -> Option<String>) -> Option<SocketAddr> {
    // RSPLIB prints an error for a bad CSP_SERVER and carries on; so do we (ignored).
    env("CSP_SERVER").and_then(|s| parse_socket_addr(&s, CSP_PORT).ok())
}

fn env_interval(env: &dyn Fn(&str) -> Option<String>) -> Option<Duration> {
    env("CSP_INTERVAL")
        .and_then(|s| millis_min::<250>(&s).ok())
        .map(|d| d.max(CSP_MIN_ENV_INTERVAL))
}

impl CspOptions {
    /// Library users (PEs, PUs, tools): reporting needs both a server and an interval,
    /// each from the command line or else from the environment. An interval of 0 disables.
    pub fn resolve_library(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<CspTarget> {
        let server = self.csp_server.or_else(|| env_server(env))?;
        let interval = self.csp_interval.or_else(|| env_interval(env))?;
        (!interval.is_zero()).then_some(CspTarget { server, interval })
    }

    /// The registrar: the server defaults to `CSP_SERVER` or 127.0.0.1:2960; reporting is on
    /// when an interval is given (`-cspinterval=` or `CSP_INTERVAL`), or when `-cspserver=` is
    /// given (interval then 250 ms). An interval of 0 disables.
    pub fn resolve_registrar(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<CspTarget> {
        let server = self
            .csp_server
            .or_else(|| env_server(env))
            .unwrap_or(CSP_DEFAULT_SERVER);
        let interval = self
            .csp_interval
            .or_else(|| env_interval(env))
            .or_else(|| self.csp_server.map(|_| CSP_MIN_ENV_INTERVAL))?;
        (!interval.is_zero()).then_some(CspTarget { server, interval })
    }
}

/// Reads a process environment variable (for the `resolve_*` methods).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A timeout in ms where 0 means the default (RSPLIB's `rsp_info` convention).
fn ms_or_default<const DEFAULT: u64>(s: &str) -> Result<Duration, String> {
    let d = millis_min::<0>(s)?;
    Ok(if d.is_zero() {
        Duration::from_millis(DEFAULT)
    } else {
        d
    })
}

/// A count where 0 means the default (RSPLIB's `rsp_info` convention).
fn count_or_default<const DEFAULT: u32>(s: &str) -> Result<u32, String> {
    let v = count_u32::<0, { u32::MAX }>(s)?;
    Ok(if v == 0 { DEFAULT } else { v })
}

/// Mutually authenticated TLS over the TCP mapping (our addition, off by default:
/// RSPLIB has no TLS). Given all three files, the program's ASAP associations to registrars
/// (a registrar: its ENRP associations, and ASAP with `-tls-asap`) run inside TLS 1.3, each
/// side presenting a certificate issued by the CA; `docs/security.md` tells how to make
/// them. Refused with `-transport=sctp`; `-transport=auto` means the TCP mapping then.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
#[command(next_help_heading = "TLS options (TCP mapping only)")]
pub struct TlsOptions {
    /// Our certificate chain, PEM (leaf first); turns TLS on together with -tls-key and -tls-ca
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The private key of -tls-cert, PEM (PKCS#8, PKCS#1 or SEC1)
    #[arg(long = "tls-key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The CA certificate(s) every peer's certificate must be issued by, PEM
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The DNS name (subjectAltName) every registrar certificate carries (default rserpool)
    #[arg(long = "tls-name", value_name = "NAME")]
    pub name: Option<String>,
}

impl TlsOptions {
    /// True when any TLS option is given.
    pub fn requested(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some() || self.name.is_some()
    }

    /// Loads the certificates: `None` without TLS options; an error when some of the three
    /// files are missing or do not load.
    pub fn load(&self) -> std::io::Result<Option<crate::transport::TlsSettings>> {
        if !self.requested() {
            return Ok(None);
        }
        let (Some(cert), Some(key), Some(ca)) = (&self.cert, &self.key, &self.ca) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "TLS needs all of -tls-cert=, -tls-key= and -tls-ca=",
            ));
        };
        let name = self
            .name
            .as_deref()
            .unwrap_or(crate::transport::tls::DEFAULT_SERVER_NAME);
        crate::transport::TlsSettings::from_pem_files(cert, key, ca, name).map(Some)
    }
}

/// The RSerPool library options every pool element and pool user accepts
/// (RSPLIB `rsp_initarg`): static registrars, registrar hunt timers, announce listening,
/// CSP, logging, and our `-transport=`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
#[command(next_help_heading = "RSerPool library options", about = None, long_about = None)]
pub struct LibraryOptions {
    /// Static registrar, a comma list for multi-homing (repeatable; port default 3863)
    #[arg(long = "registrar", value_name = "ADDR[:PORT][,ADDR...]", value_parser = address_list::<ASAP_PORT>)]
    pub registrars: Vec<AddressList>,
    /// Listen for registrar announces: auto (239.0.0.50:3863), off, or an address
    #[arg(long = "asapannounce", value_name = "auto|off|ADDR[:PORT]", default_value = "auto", value_parser = announce_spec::<ASAP_PORT>)]
    pub asap_announce: AnnounceSpec,
    /// How long an announced registrar stays valid, ms (0 = default)
    #[arg(long = "registrarannouncetimeout", value_name = "MS", default_value = "5000", value_parser = ms_or_default::<5000>)]
    pub registrar_announce_timeout: Duration,
    /// Registrar connect timeout per hunt round, ms (0 = default)
    #[arg(long = "registrarconnecttimeout", value_name = "MS", default_value = "7500", value_parser = ms_or_default::<7500>)]
    pub registrar_connect_timeout: Duration,
    /// Registrar hunt rounds before giving up (0 = default)
    #[arg(long = "registrarconnectmaxtrials", value_name = "N", default_value = "1", value_parser = count_or_default::<1>)]
    pub registrar_connect_max_trials: u32,
    /// Send timeout for requests to the registrar, ms (0 = default)
    #[arg(long = "registrarrequesttimeout", value_name = "MS", default_value = "3000", value_parser = ms_or_default::<3000>)]
    pub registrar_request_timeout: Duration,
    /// How long to wait for a registrar response, ms (0 = default)
    #[arg(long = "registrarresponsetimeout", value_name = "MS", default_value = "3000", value_parser = ms_or_default::<3000>)]
    pub registrar_response_timeout: Duration,
    /// Attempts per registrar request (0 = default)
    #[arg(long = "registrarrequestmaxtrials", value_name = "N", default_value = "1", value_parser = count_or_default::<1>)]
    pub registrar_request_max_trials: u32,
    /// CSP reporting.
    #[command(flatten)]
    pub csp: CspOptions,
    /// CSP object identifier, 0xHEX or decimal (default: random, or the PE identifier)
    #[arg(long = "cspidentifier", value_name = "ID", value_parser = identifier)]
    pub csp_identifier: Option<u32>,
    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,
    /// Transport to registrars and pool elements: sctp, tcp or auto
    #[arg(
        long = "transport",
        value_name = "sctp|tcp|auto",
        default_value = "auto",
        value_enum
    )]
    pub transport: TransportChoice,
    /// TLS to registrars.
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Pool users: while connected, ask the registrar for the pool's PEs every this long, ms,
    /// so that a failover connects to the next PE at once (our addition; 0 = off, RSPLIB's
    /// behaviour: every failover resolves). Default: 1000 for rspterminal and
    /// pingpongclient, off for the other clients
    #[arg(long = "standbyrefresh", value_name = "MS", value_parser = millis_min::<0>)]
    pub standby_refresh: Option<Duration>,
}

impl Default for LibraryOptions {
    fn default() -> Self {
        LibraryOptions {
            registrars: Vec::new(),
            asap_announce: AnnounceSpec::Auto,
            registrar_announce_timeout: Duration::from_millis(5000),
            registrar_connect_timeout: Duration::from_millis(7500),
            registrar_connect_max_trials: 1,
            registrar_request_timeout: Duration::from_millis(3000),
            registrar_response_timeout: Duration::from_millis(3000),
            registrar_request_max_trials: 1,
            csp: CspOptions::default(),
            csp_identifier: None,
            log: LogOptions::default(),
            transport: TransportChoice::Auto,
            tls: TlsOptions::default(),
            standby_refresh: None,
        }
    }
}

impl LibraryOptions {
    /// `-standbyrefresh=` for [`PoolUserSessionConfig::standby_refresh`](rserpool_core::session::PoolUserSessionConfig::standby_refresh)
    /// of a client whose default is `default` (`None`: off): `None` for 0.
    pub fn standby_refresh(&self, default: Option<Duration>) -> Option<Duration> {
        self.standby_refresh.or(default).filter(|d| !d.is_zero())
    }

    /// The announce group to listen on, or `None` with `-asapannounce=off`.
    pub fn asap_announce_address(&self) -> Option<SocketAddr> {
        self.asap_announce.resolve(ASAP_ANNOUNCE_DEFAULT)
    }
}

/// Minimum scope of addresses a registrar accepts from PEs and peers
/// (`-minaddressscope=`; RSPLIB order loopback < link-local < site-local < global).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, clap::ValueEnum)]
pub enum AddressScope {
    /// Anything, including loopback.
    Loopback,
    /// Link-local and above (our addition; RSPLIB has no such option value).
    #[value(alias = "link-local")]
    Linklocal,
    /// Site-local/private and above (RSPLIB's default). `site-local` (the README's spelling)
    /// is accepted too.
    #[default]
    #[value(alias = "site-local")]
    Sitelocal,
    /// Global addresses only.
    Global,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn level_mapping() {
        use tracing::level_filters::LevelFilter;
        let mut o = LogOptions::default();
        let want = [
            LevelFilter::OFF,
            LevelFilter::ERROR,
            LevelFilter::WARN,
            LevelFilter::INFO,
            LevelFilter::DEBUG,
            LevelFilter::TRACE,
            LevelFilter::TRACE,
            LevelFilter::TRACE,
            LevelFilter::TRACE,
            LevelFilter::TRACE,
        ];
        for (lvl, w) in want.iter().enumerate() {
            o.log_level = lvl as u8;
            assert_eq!(o.level_filter(), *w, "level {lvl}");
        }
        o.log_quiet = true;
        assert_eq!(o.level_filter(), LevelFilter::OFF);
        assert_eq!(log_level("42"), Ok(9));
        assert_eq!(log_level("-2"), Ok(0));
        assert!(log_level("loud").is_err());
    }

    #[test]
    fn csp_library_needs_both() {
        let none = env_of(&[]);
        let o = CspOptions::default();
        assert_eq!(o.resolve_library(&none), None);
        let o = CspOptions {
            csp_server: Some(sa("10.0.0.1:2960")),
            csp_interval: None,
        };
        assert_eq!(o.resolve_library(&none), None);
        let env = env_of(&[("CSP_INTERVAL", "100")]);
        assert_eq!(
            o.resolve_library(&env),
            Some(CspTarget {
                server: sa("10.0.0.1:2960"),
                interval: Duration::from_millis(250)
            }),
            "env interval has a 250 ms minimum"
        );
        let env = env_of(&[("CSP_SERVER", "192.0.2.1"), ("CSP_INTERVAL", "1000")]);
        assert_eq!(
            CspOptions::default().resolve_library(&env),
            Some(CspTarget {
                server: sa("192.0.2.1:2960"),
                interval: Duration::from_millis(1000)
            })
        );
        // The command line wins over the environment, and has no minimum.
        let o = CspOptions {
            csp_server: Some(sa("10.0.0.2:7")),
            csp_interval: Some(Duration::from_millis(100)),
        };
        assert_eq!(
            o.resolve_library(&env),
            Some(CspTarget {
                server: sa("10.0.0.2:7"),
                interval: Duration::from_millis(100)
            })
        );
        let off = CspOptions {
            csp_interval: Some(Duration::ZERO),
            ..o
        };
        assert_eq!(off.resolve_library(&env), None);
        // A bad CSP_SERVER is ignored.
        let env = env_of(&[("CSP_SERVER", "not an address"), ("CSP_INTERVAL", "1000")]);
        assert_eq!(CspOptions::default().resolve_library(&env), None);
    }

    #[test]
    fn csp_registrar_defaults() {
        let none = env_of(&[]);
        assert_eq!(CspOptions::default().resolve_registrar(&none), None);
        let o = CspOptions {
            csp_server: Some(sa("10.0.0.1:2960")),
            csp_interval: None,
        };
        assert_eq!(
            o.resolve_registrar(&none),
            Some(CspTarget {
                server: sa("10.0.0.1:2960"),
                interval: Duration::from_millis(250)
            })
        );
        let env = env_of(&[("CSP_INTERVAL", "500")]);
        assert_eq!(
            CspOptions::default().resolve_registrar(&env),
            Some(CspTarget {
                server: CSP_DEFAULT_SERVER,
                interval: Duration::from_millis(500)
            })
        );
        // CSP_SERVER alone does not switch reporting on.
        let env = env_of(&[("CSP_SERVER", "10.9.9.9")]);
        assert_eq!(CspOptions::default().resolve_registrar(&env), None);
        let o = CspOptions {
            csp_server: None,
            csp_interval: Some(Duration::from_millis(300)),
        };
        assert_eq!(
            o.resolve_registrar(&env),
            Some(CspTarget {
                server: sa("10.9.9.9:2960"),
                interval: Duration::from_millis(300)
            })
        );
    }

    #[test]
    fn or_default_parsers() {
        assert_eq!(ms_or_default::<5000>("0"), Ok(Duration::from_millis(5000)));
        assert_eq!(ms_or_default::<5000>("-3"), Ok(Duration::from_millis(5000)));
        assert_eq!(
            ms_or_default::<5000>("1000"),
            Ok(Duration::from_millis(1000))
        );
        assert_eq!(count_or_default::<1>("0"), Ok(1));
        assert_eq!(count_or_default::<1>("4"), Ok(4));
    }

    #[test]
    fn outputs() {
        let mut o = LogOptions::default();
        assert_eq!(o.output(), LogOutput::Stderr);
        o.log_append = Some("a.log".into());
        assert_eq!(o.output(), LogOutput::Append("a.log".into()));
        o.log_file = Some("f.log".into());
        o.log_append = None;
        assert_eq!(o.output(), LogOutput::Truncate("f.log".into()));
    }
}
