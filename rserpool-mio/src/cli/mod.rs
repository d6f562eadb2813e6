//! Command-line layer of the reference binaries: RSPLIB-compatible option parsing
//! (`-option=value`, `-flag`, plus `--option value`, `--option=value`, `--help`), typed
//! option structs with RSPLIB's defaults and clamps, logging set-up and termination signals.
//!
//! Every binary is meant to be a few lines:
//!
//! ```no_run
//! use rserpool_mio::cli::{self, RegistrarOptions};
//!
//! let opts: RegistrarOptions = cli::parse_or_exit();
//! cli::init_logging(&opts.log).unwrap_or_else(|e| {
//!     eprintln!("rspregistrar: {e}");
//!     std::process::exit(1)
//! });
//! let signals = cli::TerminationSignals::new().expect("signal handlers");
//! // … register `signals` with the mio Poll, run the event loop …
//! # drop(signals);
//! ```
//!
//! Unknown options print the usage on stderr and exit with code 1, as RSPLIB does. Where
//! RSPLIB silently turns a malformed number into 0, these parsers report an error; numbers
//! out of range are clamped like RSPLIB's.
//!
//! | program | options struct |
//! |---|---|
//! | `rspregistrar` | [`RegistrarOptions`] |
//! | `rspserver` | [`RspServerOptions`] |
//! | `rspterminal` | [`RspTerminalOptions`] |
//! | `pingpongclient` | [`PingPongClientOptions`] |
//! | `calcappclient` | [`CalcAppClientOptions`] |
//! | `scriptingclient` | [`ScriptingClientOptions`] |
//! | `fractalpooluser` | [`FractalPoolUserOptions`] |
//! | `hsdump` | [`HsDumpOptions`] |
//! | `cspmonitor` | [`CspMonitorOptions`] |
//! | `hrestest` | [`HresTestOptions`] |
//! | `testregistrator` | [`TestRegistratorOptions`] |
//! | `rspload` | [`RspLoadOptions`] |

pub mod addr;
pub mod argv;
pub mod clients;
pub mod common;
pub mod logging;
pub mod policy;
pub mod registrar;
pub mod server;
pub mod signals;
pub mod tools;
pub mod values;

pub use addr::{AddressError, AddressList, AnnounceSpec, BindSpec, IpNetwork};
pub use argv::{normalize_args, parse_from_or_exit, parse_or_exit, try_parse_from};
pub use clients::{
    CalcAppClientOptions, FractalPoolUserOptions, PingPongClientOptions, RspTerminalOptions,
    ScriptingClientOptions,
};
pub use common::{
    AddressScope, CspOptions, CspTarget, LibraryOptions, LogColor, LogOptions, LogOutput,
    TlsOptions, TransportChoice, process_env,
};
pub use logging::{LogInitError, build_subscriber, init_logging};
pub use policy::{PolicyParseError, TestRegistratorPolicy, parse_policy};
pub use registrar::{PeerPolicy, RegistrarOptions};
pub use server::{
    CalcAppOptions, CharGenOptions, FractalOptions, PingPongOptions, RspServerOptions,
    ScriptingOptions, Service, ServiceSelection,
};
pub use signals::{TerminationSignal, TerminationSignals};
pub use tools::{
    CspMonitorOptions, HresTestOptions, HsDumpOptions, RspLoadOptions, TestRegistratorOptions,
};
pub use values::RateLimit;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::fmt::Debug;

    /// Parses `args` (RSPLIB spelling `-name=value` / `-flag`) and the same arguments as
    /// `--name value`, `--name=value` and `-name value`; all must give the same struct. Then
    /// checks that an unknown option is rejected.
    fn check<T: Parser + PartialEq + Debug>(prog: &str, args: &[&str]) {
        let rsplib: T = try_parse_from(std::iter::once(prog).chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{prog} {args:?}: {e}"));
        let mut gnu_split = vec![prog.to_owned()];
        let mut gnu_eq = vec![prog.to_owned()];
        let mut single_split = vec![prog.to_owned()];
        for a in args {
            match a.strip_prefix('-').map(|b| b.split_once('=')) {
                Some(Some((name, value))) => {
                    gnu_split.extend([format!("--{name}"), value.to_owned()]);
                    gnu_eq.push(format!("--{name}={value}"));
                    single_split.extend([format!("-{name}"), value.to_owned()]);
                }
                Some(None) => {
                    gnu_split.push(format!("-{a}"));
                    gnu_eq.push(format!("-{a}"));
                    single_split.push((*a).to_owned());
                }
                None => {
                    gnu_split.push((*a).to_owned());
                    gnu_eq.push((*a).to_owned());
                    single_split.push((*a).to_owned());
                }
            }
        }
        for other in [gnu_split, gnu_eq, single_split] {
            let parsed: T = try_parse_from(other.iter().map(String::as_str))
                .unwrap_or_else(|e| panic!("{other:?}: {e}"));
            assert_eq!(parsed, rsplib, "{other:?}");
        }
        let unknown = try_parse_from::<T, _, _>(
            std::iter::once(prog)
                .chain(args.iter().copied())
                .chain(["-nosuchoption=1"]),
        );
        assert_eq!(
            unknown.unwrap_err().kind(),
            clap::error::ErrorKind::UnknownArgument,
            "{prog}"
        );
    }

    const LIB: &[&str] = &[
        "-registrar=10.0.0.1:3863,10.0.1.1",
        "-registrar=[::1]",
        "-asapannounce=239.0.0.50:3863",
        "-registrarannouncetimeout=1000",
        "-registrarconnecttimeout=1000",
        "-registrarconnectmaxtrials=2",
        "-registrarrequesttimeout=1000",
        "-registrarresponsetimeout=1000",
        "-registrarrequestmaxtrials=2",
        "-cspserver=127.0.0.1:2960",
        "-cspinterval=1000",
        "-cspidentifier=0x10",
        "-loglevel=5",
        "-logappend=/tmp/x",
        "-logcolor=off",
        "-transport=tcp",
    ];

    fn with_lib<'a>(args: &[&'a str]) -> Vec<&'a str> {
        args.iter().copied().chain(LIB.iter().copied()).collect()
    }

    #[test]
    fn every_program_accepts_every_spelling() {
        check::<RegistrarOptions>(
            "rspregistrar",
            &[
                "-asap=10.0.0.1:3863",
                "-peer=10.0.0.2",
                "-identifier=12",
                "-maxhrrate=-1",
                "-quiet",
                "-loglevel=2",
                "-peerpolicy=static",
            ],
        );
        check::<RspServerOptions>(
            "rspserver",
            &with_lib(&[
                "-calcapp",
                "-policy=WeightedRandomDPF:3:0.5",
                "-capcookiemaxtime=0.5",
                "-rereginterval=1000",
                "-local=[::1]:5000",
            ]),
        );
        check::<RspTerminalOptions>("rspterminal", &with_lib(&["-poolhandle=DaytimePool"]));
        check::<PingPongClientOptions>("pingpongclient", &with_lib(&["-interval=100"]));
        check::<CalcAppClientOptions>(
            "calcappclient",
            &with_lib(&["-jobsize=1000", "-runtime=10"]),
        );
        check::<ScriptingClientOptions>(
            "scriptingclient",
            &with_lib(&["-input=a", "-output=b", "-quiet"]),
        );
        check::<FractalPoolUserOptions>(
            "fractalpooluser",
            &with_lib(&["-threads=4", "-nocolormarks"]),
        );
        check::<HsDumpOptions>("hsdump", &["10.0.0.1:9901", "-loglevel=3"]);
        check::<CspMonitorOptions>("cspmonitor", &["-full", "-maxpe=10"]);
        check::<HresTestOptions>("hrestest", &with_lib(&["-items=4", "-printresults"]));
        check::<TestRegistratorOptions>(
            "testregistrator",
            &with_lib(&["-policy=wrand", "-weight=4", "-fastbreak"]),
        );
        check::<RspLoadOptions>(
            "rspload",
            &with_lib(&["-pes=10", "-assocs=2", "-outstanding=4", "-duration=1"]),
        );
    }
}
