//! `pingpongclient`: a Ping every `-interval=` ms on one session to `PingPongPool`; every
//! Pong is printed as RSPLIB does (`Ack #MessageNo from PE $id (reply #ReplyNo)`, plus
//! `*** Detected gap of N! ***` when the ReplyNo sequence jumps). The PE's cookie carries
//! the next ReplyNo, so after a failover the new PE continues the sequence.
//!
//! Our additions: `-responsetimeout=` (a Ping unanswered this long fails the session over
//! and reports the PE; RSPLIB notices a hung PE never) and `-messages=N` (exit after N
//! Pongs; the summary goes to standard error, exit code 1 if a gap was seen).

use std::io::{self, Write};
use std::process::ExitCode;

use rserpool_core::Instant;
use rserpool_core::services::pingpong::{PingPongClient, PingPongClientConfig, PingPongEvent};
use rserpool_proto::ids::PeIdentifier;

use super::super::common::{INTERACTIVE_STANDBY_REFRESH, fail, init_logging_or_exit};
use super::host_clock;
use super::pu::{ClientApp, ClientHooks, client_driver, client_session_config};
use crate::cli::PingPongClientOptions;
use rserpool_core::session::PoolUserSessionConfig;

/// What `pingpongclient` prints and counts.
#[derive(Debug, Default)]
pub struct PingPongHooks {
    pe: Option<PeIdentifier>,
    /// Pongs received.
    pub pongs: u64,
    /// Gaps seen.
    pub gaps: u64,
    /// Failovers completed.
    pub failovers: u64,
    limit: u64,
}

impl ClientHooks<PingPongEvent> for PingPongHooks {
    fn on_event(&mut self, _now: Instant, event: PingPongEvent) {
        let mut out = io::stdout().lock();
        match event {
            PingPongEvent::Pong {
                message_no,
                reply_no,
                gap,
            } => {
                self.pongs += 1;
                let pe = self.pe.map_or(0, |p| p.0);
                let _ = writeln!(
                    out,
                    "Ack #{message_no} from PE ${pe:08x} (reply #{reply_no})"
                );
                if let Some(g) = gap {
                    self.gaps += 1;
                    let _ = writeln!(out, "*** Detected gap of {g}! ***");
                }
            }
            PingPongEvent::FailoverStarted { report_unreachable } => {
                let _ = writeln!(
                    out,
                    "*** Failover{} ***",
                    if report_unreachable {
                        " (PE reported unreachable)"
                    } else {
                        ""
                    }
                );
            }
            PingPongEvent::FailoverCompleted { cookie_echoed } => {
                let _ = writeln!(
                    out,
                    "*** Failover complete{} ***",
                    if cookie_echoed { ", cookie echoed" } else { "" }
                );
            }
        }
        let _ = out.flush();
    }

    fn on_pe(&mut self, _now: Instant, pe: PeIdentifier, failover: bool) {
        self.pe = Some(pe);
        if failover {
            self.failovers += 1;
        }
    }

    fn done(&self) -> bool {
        self.limit > 0 && self.pongs >= self.limit
    }
}

/// `pingpongclient` with parsed options.
pub fn main_with(opts: PingPongClientOptions) -> ExitCode {
    init_logging_or_exit("pingpongclient", &opts.library.log);
    match run(&opts) {
        Ok(h) => {
            eprintln!(
                "pingpongclient: {} pong(s), {} gap(s), {} failover(s)",
                h.pongs, h.gaps, h.failovers
            );
            if h.gaps > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail("pingpongclient", &e),
    }
}

/// The session configuration of `pingpongclient`: the client's own Pong timeout does the
/// hung-PE check (the session layer's stays off); the standby list is on unless
/// `-standbyrefresh=0`.
pub fn session_config(opts: &PingPongClientOptions) -> PoolUserSessionConfig {
    client_session_config(&opts.library, None, Some(INTERACTIVE_STANDBY_REFRESH))
}

fn run(opts: &PingPongClientOptions) -> io::Result<PingPongHooks> {
    let timeout = (!opts.response_timeout.is_zero()).then_some(opts.response_timeout);
    let config = session_config(opts);
    let mut driver = client_driver(&opts.library, config, true, true, None)?;
    let service = PingPongClient::new(PingPongClientConfig {
        interval: opts.interval,
        pong_timeout: timeout,
        clock: host_clock(),
    });
    let hooks = PingPongHooks {
        limit: u64::from(opts.messages),
        ..PingPongHooks::default()
    };
    let mut app = ClientApp::new(opts.pool_handle.clone(), service, hooks, "");
    driver.run_app(&mut app)?;
    Ok(app.hooks)
}
