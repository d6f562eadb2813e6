//! Pool-user programs: `rspterminal`, `pingpongclient`, `calcappclient`,
//! `scriptingclient`, `fractalpooluser` (`shared/spec/services.md` §2.5, §8.4–8.6,
//! `shared/design/rsplib-inventory.md` §1.6).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rserpool_proto::ids::PoolHandle;

use super::common::LibraryOptions;
use super::values::{count_u32, float_clamped, identifier, millis_min, pool_handle, seconds_min};

/// `rspterminal` — stdin to a pool element, its answers to stdout (Echo, Discard, Daytime,
/// CharGen).
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "rspterminal",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "RSerPool terminal: stdin to a pool, answers to stdout"
)]
pub struct RspTerminalOptions {
    /// Pool to use
    #[arg(long = "poolhandle", value_name = "NAME", default_value = "EchoPool", value_parser = pool_handle)]
    pub pool_handle: PoolHandle,
    /// Fail over when data stays unanswered this long, ms (our addition; 0 = never;
    /// default 5000, never for DiscardPool, whose PEs answer nothing)
    #[arg(long = "responsetimeout", value_name = "MS", value_parser = millis_min::<0>)]
    pub response_timeout: Option<Duration>,
    /// Library options.
    #[command(flatten)]
    pub library: LibraryOptions,
}

impl RspTerminalOptions {
    /// The response timeout to use: `-responsetimeout=` (0 = none), else 5 s except for the
    /// pool `DiscardPool`.
    pub fn effective_response_timeout(&self) -> Option<Duration> {
        match self.response_timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None if self.pool_handle == PoolHandle::from("DiscardPool") => None,
            None => Some(Duration::from_secs(5)),
        }
    }
}

/// `pingpongclient` — periodic pings with cookie-based failover.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "pingpongclient",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "RSerPool Ping Pong pool user"
)]
pub struct PingPongClientOptions {
    /// Pool to use
    #[arg(long = "poolhandle", value_name = "NAME", default_value = "PingPongPool", value_parser = pool_handle)]
    pub pool_handle: PoolHandle,
    /// Ping interval, ms (min 1)
    #[arg(long = "interval", value_name = "MS", default_value = "500", value_parser = millis_min::<1>)]
    pub interval: Duration,
    /// Fail over when a Ping stays unanswered this long, ms (our addition; 0 = never,
    /// RSPLIB's behaviour; default 5000)
    #[arg(long = "responsetimeout", value_name = "MS", default_value = "5000", value_parser = millis_min::<0>)]
    pub response_timeout: Duration,
    /// Exit after this many Pongs (our addition; 0 = run until SIGINT, RSPLIB's behaviour)
    #[arg(long = "messages", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub messages: u32,
    /// Library options.
    #[command(flatten)]
    pub library: LibraryOptions,
}

/// `calcappclient` — CalcApp job generator.
#[derive(Parser, Clone, Debug, PartialEq)]
#[command(
    name = "calcappclient",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "RSerPool CalcApp pool user (job generator)"
)]
pub struct CalcAppClientOptions {
    /// Pool to use
    #[arg(long = "poolhandle", value_name = "NAME", default_value = "CalcAppPool", value_parser = pool_handle)]
    pub pool_handle: PoolHandle,
    /// Mean (exponential) time between jobs, seconds
    #[arg(long = "jobinterval", value_name = "S", default_value = "15", value_parser = seconds_min::<1>)]
    pub job_interval: Duration,
    /// Mean (exponential) job size, calculations
    #[arg(long = "jobsize", value_name = "N", default_value = "5000000", value_parser = float_clamped::<1000, { u64::MAX }>)]
    pub job_size: f64,
    /// Keep-alive interval, ms (min 100)
    #[arg(long = "keepalivetransmissioninterval", value_name = "MS", default_value = "5000", value_parser = millis_min::<100>)]
    pub keep_alive_transmission_interval: Duration,
    /// Keep-alive timeout, ms (min 100)
    #[arg(long = "keepalivetimeoutinterval", value_name = "MS", default_value = "5000", value_parser = millis_min::<100>)]
    pub keep_alive_timeout_interval: Duration,
    /// Run time, seconds
    #[arg(long = "runtime", value_name = "S", default_value = "86400", value_parser = seconds_min::<0>)]
    pub runtime: Duration,
    /// Statistics object name
    #[arg(
        long = "object",
        value_name = "NAME",
        default_value = "scenario.calcapppooluser[0]"
    )]
    pub object_name: String,
    /// Statistics vector file
    #[arg(long = "vector", value_name = "FILE", default_value = "CalcAppPU.vec")]
    pub vector_file: PathBuf,
    /// Statistics scalar file
    #[arg(long = "scalar", value_name = "FILE", default_value = "CalcAppPU.sca")]
    pub scalar_file: PathBuf,
    /// Fork into the background and write the PID to FILE
    #[arg(long = "daemonpidfile", value_name = "FILE")]
    pub daemon_pid_file: Option<PathBuf>,
    /// Library options.
    #[command(flatten)]
    pub library: LibraryOptions,
}

/// `scriptingclient` — uploads a work package, downloads the results.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "scriptingclient",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "RSerPool Scripting Service pool user"
)]
pub struct ScriptingClientOptions {
    /// Pool to use
    #[arg(long = "poolhandle", value_name = "NAME", default_value = "ScriptingPool", value_parser = pool_handle)]
    pub pool_handle: PoolHandle,
    /// Environment file (empty = none)
    #[arg(long = "environment", value_name = "FILE", value_parser = any_path)]
    pub environment: Option<PathBuf>,
    /// Input work package (tar, tar.gz or tar.bz2 with ./ssrun)
    #[arg(long = "input", value_name = "FILE", required = true)]
    pub input: PathBuf,
    /// Output file
    #[arg(long = "output", value_name = "FILE", required = true)]
    pub output: PathBuf,
    /// Attempts before giving up (min 1)
    #[arg(long = "maxretry", value_name = "N", default_value = "3", value_parser = count_u32::<1, { u32::MAX }>)]
    pub max_retry: u32,
    /// Delay before a retry, ms (min 100; +-12.5 % jitter)
    #[arg(long = "retrydelay", value_name = "MS", default_value = "10000", value_parser = millis_min::<100>)]
    pub retry_delay: Duration,
    /// Send timeout, ms
    #[arg(long = "transmittimeout", value_name = "MS", default_value = "59500", value_parser = millis_min::<0>)]
    pub transmit_timeout: Duration,
    /// Keep-alive interval, ms
    #[arg(long = "keepaliveinterval", value_name = "MS", default_value = "10000", value_parser = millis_min::<0>)]
    pub keep_alive_interval: Duration,
    /// Keep-alive timeout, ms
    #[arg(long = "keepalivetimeout", value_name = "MS", default_value = "10000", value_parser = millis_min::<0>)]
    pub keep_alive_timeout: Duration,
    /// Text prefixed to log lines
    #[arg(long = "runid", value_name = "TEXT", default_value = "")]
    pub run_id: String,
    /// Less console output
    #[arg(long = "quiet")]
    pub quiet: bool,
    /// Library options.
    #[command(flatten)]
    pub library: LibraryOptions,
}

impl ScriptingClientOptions {
    /// The environment file, `None` when not given or empty (RSPLIB: empty value = none).
    pub fn environment_file(&self) -> Option<&std::path::Path> {
        self.environment
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }
}

/// A path that may be empty (clap's own path parser rejects "").
fn any_path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

fn csp_id(s: &str) -> Result<u32, String> {
    identifier(s)
}

/// `fractalpooluser` — the fractal-generator pool user (RSPLIB's is a Qt GUI).
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "fractalpooluser",
    version, long_about = None, after_help = crate::cli::argv::SYNTAX_NOTE,
    about = "RSerPool Fractal Generator pool user"
)]
pub struct FractalPoolUserOptions {
    /// Pool to use
    #[arg(long = "poolhandle", value_name = "NAME", default_value = "FractalGeneratorPool", value_parser = pool_handle)]
    pub pool_handle: PoolHandle,
    /// CSP identifier of this pool user, 0xHEX or decimal
    #[arg(long = "identifier", value_name = "ID", value_parser = csp_id)]
    pub identifier: Option<u32>,
    /// Directory with *.fsf fractal descriptions
    #[arg(long = "configdir", value_name = "DIR", default_value = "fgpconfig")]
    pub config_dir: PathBuf,
    /// Window caption
    #[arg(long = "caption", value_name = "TEXT")]
    pub caption: Option<String>,
    /// Image width (64-8192)
    #[arg(long = "width", value_name = "PIXELS", default_value = "400", value_parser = count_u32::<64, 8192>)]
    pub width: u32,
    /// Image height (64-4096)
    #[arg(long = "height", value_name = "PIXELS", default_value = "250", value_parser = count_u32::<64, 4096>)]
    pub height: u32,
    /// Sessions per image (1-512)
    #[arg(long = "threads", value_name = "N", default_value = "1", value_parser = count_u32::<1, 512>)]
    pub threads: u32,
    /// Send timeout, ms
    #[arg(long = "sendtimeout", value_name = "MS", default_value = "5000", value_parser = millis_min::<0>)]
    pub send_timeout: Duration,
    /// Receive timeout, ms
    #[arg(long = "recvtimeout", value_name = "MS", default_value = "5000", value_parser = millis_min::<0>)]
    pub recv_timeout: Duration,
    /// Pause between images, seconds
    #[arg(long = "interimagetime", value_name = "S", default_value = "5", value_parser = seconds_min::<0>)]
    pub inter_image_time: Duration,
    /// File name prefix for saving each image (RSPLIB accepts it but never saves)
    #[arg(long = "imagestorageprefix", value_name = "PREFIX")]
    pub image_storage_prefix: Option<String>,
    /// Write each finished image to this PNG file (our addition)
    #[arg(long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit after this many images (our addition; 0 = run until SIGINT, RSPLIB's behaviour)
    #[arg(long = "images", value_name = "N", default_value = "0", value_parser = count_u32::<0, { u32::MAX }>)]
    pub images: u32,
    /// Serve a live view (HTML page and the current PNG) on this address, e.g.
    /// 127.0.0.1:8080 (our addition; off by default)
    #[arg(long = "http", value_name = "ADDR:PORT")]
    pub http: Option<std::net::SocketAddr>,
    /// Colour tiles by session/failover (default on)
    #[arg(long = "colormarks", overrides_with = "no_color_marks")]
    pub color_marks: bool,
    /// Do not colour tiles
    #[arg(long = "nocolormarks", overrides_with = "color_marks")]
    pub no_color_marks: bool,
    /// Show session borders (default on)
    #[arg(long = "sessions", overrides_with = "no_sessions")]
    pub sessions: bool,
    /// Do not show session borders (RSPLIB's switch turns them on by mistake; ours turns them off)
    #[arg(long = "nosessions", overrides_with = "sessions")]
    pub no_sessions: bool,
    /// Library options.
    #[command(flatten)]
    pub library: LibraryOptions,
}

impl FractalPoolUserOptions {
    /// Colour marks on (default) unless `-nocolormarks` came last.
    pub fn show_color_marks(&self) -> bool {
        !self.no_color_marks
    }

    /// Session display on (default) unless `-nosessions` came last.
    pub fn show_sessions(&self) -> bool {
        !self.no_sessions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::argv::try_parse_from;
    use crate::cli::common::LibraryOptions;
    use clap::CommandFactory;

    fn parse<T: Parser>(name: &str, args: &[&str]) -> Result<T, clap::Error> {
        try_parse_from::<T, _, _>(std::iter::once(name).chain(args.iter().copied()))
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn commands_are_consistent() {
        RspTerminalOptions::command().debug_assert();
        PingPongClientOptions::command().debug_assert();
        CalcAppClientOptions::command().debug_assert();
        ScriptingClientOptions::command().debug_assert();
        FractalPoolUserOptions::command().debug_assert();
    }

    #[test]
    fn rspterminal() {
        let o: RspTerminalOptions = parse("rspterminal", &[]).unwrap();
        assert_eq!(o.pool_handle, PoolHandle::from("EchoPool"));
        assert_eq!(o.library, LibraryOptions::default());
        let o: RspTerminalOptions = parse(
            "rspterminal",
            &["-poolhandle=DaytimePool", "-registrar=127.0.0.1"],
        )
        .unwrap();
        assert_eq!(o.pool_handle, PoolHandle::from("DaytimePool"));
        assert_eq!(o.effective_response_timeout(), Some(Duration::from_secs(5)));
        assert_eq!(o.library.registrars[0].to_string(), "127.0.0.1:3863");
        // Unlike RSPLIB 3.4.4, the registrar timer options are accepted (services.md §8.7).
        let o: RspTerminalOptions =
            parse("rspterminal", &["-registrarconnecttimeout=1000"]).unwrap();
        assert_eq!(o.library.registrar_connect_timeout, ms(1000));
        assert!(parse::<RspTerminalOptions>("rspterminal", &["-interval=5"]).is_err());
        let o: RspTerminalOptions = parse("rspterminal", &["-poolhandle=DiscardPool"]).unwrap();
        assert_eq!(o.effective_response_timeout(), None);
        let o: RspTerminalOptions = parse(
            "rspterminal",
            &["-poolhandle=DiscardPool", "-responsetimeout=700"],
        )
        .unwrap();
        assert_eq!(o.effective_response_timeout(), Some(ms(700)));
        let o: RspTerminalOptions = parse("rspterminal", &["-responsetimeout=0"]).unwrap();
        assert_eq!(o.effective_response_timeout(), None);
        // The standby list: every second by default for rspterminal, 0 turns it off (RSPLIB
        // resolves at every failover), other values as given.
        let config = crate::programs::terminal::session_config;
        assert_eq!(o.library.standby_refresh, None);
        assert_eq!(config(&o).standby_refresh, Some(ms(1000)));
        let o: RspTerminalOptions = parse("rspterminal", &["-standbyrefresh=0"]).unwrap();
        assert_eq!(config(&o).standby_refresh, None);
        let o: RspTerminalOptions = parse("rspterminal", &["-standbyrefresh=250"]).unwrap();
        assert_eq!(config(&o).standby_refresh, Some(ms(250)));
        // A client without a default of its own: off unless asked.
        assert_eq!(o.library.standby_refresh(None), Some(ms(250)));
        let o: RspTerminalOptions = parse("rspterminal", &[]).unwrap();
        assert_eq!(o.library.standby_refresh(None), None);
    }

    #[test]
    fn pingpongclient() {
        let o: PingPongClientOptions = parse("pingpongclient", &[]).unwrap();
        let config = crate::programs::services::pingpong::session_config;
        assert_eq!(config(&o).standby_refresh, Some(ms(1000)));
        let off: PingPongClientOptions = parse("pingpongclient", &["-standbyrefresh=0"]).unwrap();
        assert_eq!(config(&off).standby_refresh, None);
        assert_eq!(o.pool_handle, PoolHandle::from("PingPongPool"));
        assert_eq!(o.interval, ms(500));
        let a: PingPongClientOptions = parse("pingpongclient", &["-interval=100"]).unwrap();
        let b: PingPongClientOptions = parse("pingpongclient", &["--interval", "100"]).unwrap();
        let c: PingPongClientOptions = parse("pingpongclient", &["--interval=100"]).unwrap();
        assert_eq!(a.interval, ms(100));
        assert_eq!((&a, &a), (&b, &c));
        let o: PingPongClientOptions = parse("pingpongclient", &["-interval=0"]).unwrap();
        assert_eq!(o.interval, ms(1));
    }

    #[test]
    fn calcappclient() {
        let o: CalcAppClientOptions = parse("calcappclient", &[]).unwrap();
        assert_eq!(o.pool_handle, PoolHandle::from("CalcAppPool"));
        assert_eq!(o.job_interval, Duration::from_secs(15));
        assert_eq!(o.job_size, 5_000_000.0);
        assert_eq!(o.keep_alive_transmission_interval, ms(5000));
        assert_eq!(o.keep_alive_timeout_interval, ms(5000));
        assert_eq!(o.runtime, Duration::from_secs(86_400));
        assert_eq!(o.object_name, "scenario.calcapppooluser[0]");
        assert_eq!(o.vector_file, PathBuf::from("CalcAppPU.vec"));
        assert_eq!(o.scalar_file, PathBuf::from("CalcAppPU.sca"));
        assert_eq!(o.daemon_pid_file, None);
        let o: CalcAppClientOptions = parse(
            "calcappclient",
            &[
                "-jobinterval=0.5",
                "-jobsize=1e6",
                "-keepalivetransmissioninterval=10",
                "-keepalivetimeoutinterval=20",
                "-runtime=60.5",
                "-object=o",
                "-vector=v",
                "-scalar=s",
                "-daemonpidfile=/tmp/c.pid",
            ],
        )
        .unwrap();
        assert_eq!(o.job_interval, ms(500));
        assert_eq!(o.job_size, 1e6);
        assert_eq!(o.keep_alive_transmission_interval, ms(100), "clamped");
        assert_eq!(o.keep_alive_timeout_interval, ms(100), "clamped");
        assert_eq!(o.runtime, ms(60_500));
        assert_eq!(o.daemon_pid_file, Some("/tmp/c.pid".into()));
    }

    #[test]
    fn scriptingclient() {
        // -input and -output are required.
        assert!(parse::<ScriptingClientOptions>("scriptingclient", &[]).is_err());
        assert!(parse::<ScriptingClientOptions>("scriptingclient", &["-input=i"]).is_err());
        let o: ScriptingClientOptions = parse(
            "scriptingclient",
            &["-input=in.tar.gz", "-output=out.tar.gz"],
        )
        .unwrap();
        assert_eq!(o.pool_handle, PoolHandle::from("ScriptingPool"));
        assert_eq!(o.input, PathBuf::from("in.tar.gz"));
        assert_eq!(o.output, PathBuf::from("out.tar.gz"));
        assert_eq!(o.environment_file(), None);
        assert_eq!(o.max_retry, 3);
        assert_eq!(o.retry_delay, ms(10_000));
        assert_eq!(o.transmit_timeout, ms(59_500));
        assert_eq!(o.keep_alive_interval, ms(10_000));
        assert_eq!(o.keep_alive_timeout, ms(10_000));
        assert_eq!(o.run_id, "");
        assert!(!o.quiet);
        let o: ScriptingClientOptions = parse(
            "scriptingclient",
            &[
                "-input=i",
                "-output=o",
                "-environment=",
                "-maxretry=0",
                "-retrydelay=5",
                "-runid=job7",
                "-quiet",
            ],
        )
        .unwrap();
        assert_eq!(o.environment_file(), None, "empty value = none");
        assert_eq!(o.max_retry, 1);
        assert_eq!(o.retry_delay, ms(100));
        assert_eq!(o.run_id, "job7");
        assert!(o.quiet);
        let o: ScriptingClientOptions = parse(
            "scriptingclient",
            &["-input=i", "-output=o", "-environment=env.tar"],
        )
        .unwrap();
        assert_eq!(o.environment_file(), Some(std::path::Path::new("env.tar")));
    }

    #[test]
    fn fractalpooluser() {
        let o: FractalPoolUserOptions = parse("fractalpooluser", &[]).unwrap();
        assert_eq!(o.pool_handle, PoolHandle::from("FractalGeneratorPool"));
        assert_eq!(o.identifier, None);
        assert_eq!(o.config_dir, PathBuf::from("fgpconfig"));
        assert_eq!(o.caption, None);
        assert_eq!((o.width, o.height, o.threads), (400, 250, 1));
        assert_eq!((o.send_timeout, o.recv_timeout), (ms(5000), ms(5000)));
        assert_eq!(o.inter_image_time, Duration::from_secs(5));
        assert_eq!(o.image_storage_prefix, None);
        assert!(o.show_color_marks() && o.show_sessions());
        let o: FractalPoolUserOptions = parse(
            "fractalpooluser",
            &[
                "-width=10",
                "-height=99999",
                "-threads=1000",
                "-nocolormarks",
                "-nosessions",
                "-identifier=0x10",
                "-caption=Demo",
            ],
        )
        .unwrap();
        assert_eq!((o.width, o.height, o.threads), (64, 4096, 512));
        assert!(!o.show_color_marks() && !o.show_sessions());
        assert_eq!(o.identifier, Some(16));
        assert_eq!(o.caption.as_deref(), Some("Demo"));
        let o: FractalPoolUserOptions = parse(
            "fractalpooluser",
            &["-nocolormarks", "-colormarks", "-nosessions", "-sessions"],
        )
        .unwrap();
        assert!(
            o.show_color_marks() && o.show_sessions(),
            "the last switch wins"
        );
    }
}
