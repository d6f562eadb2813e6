//! `scriptingclient`: uploads a work package (`-input=`, a tar or tar.gz with an `ssrun`
//! script) and optionally an environment (`-environment=`, cached by the PE under its
//! SHA-1) to a PE of `ScriptingPool`, waits while the PE runs it (keep-alives), and
//! downloads the result into `-output=`. Any failure (NOTREADY, keep-alive timeout, lost
//! session, protocol error, a non-zero exit status before `-maxretry=` trials) deletes the
//! partial output, waits `-retrydelay=` ±12.5 % and starts again on another PE.
//!
//! Exit code 0 iff the download completed and the remote exit status was 0 (RSPLIB).

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use rserpool_core::Instant;
use rserpool_core::services::scripting::{
    ScriptingClient, ScriptingClientConfig, ScriptingClientEvent,
};
use tracing::warn;

use super::super::common::{fail, init_logging_or_exit, os_rng};
use super::pu::{ClientApp, ClientHooks, client_driver, client_session_config};
use crate::cli::ScriptingClientOptions;

/// Writes the output file and reports progress.
pub struct ScriptingHooks {
    path: PathBuf,
    file: Option<File>,
    quiet: bool,
    prefix: String,
    /// Bytes written to the output file (current trial).
    pub written: u64,
    /// Failovers (retries) started.
    pub failovers: u64,
    /// The remote exit status once the download is complete.
    pub completed: Option<u32>,
    /// The first write error, if any.
    pub error: Option<io::Error>,
}

impl ScriptingHooks {
    fn say(&self, text: std::fmt::Arguments<'_>) {
        if !self.quiet {
            println!("{}{text}", self.prefix);
        }
    }
}

impl ClientHooks<ScriptingClientEvent> for ScriptingHooks {
    fn on_event(&mut self, _now: Instant, event: ScriptingClientEvent) {
        match event {
            ScriptingClientEvent::ServerReady(host) => {
                self.say(format_args!("Server {host} is ready"))
            }
            ScriptingClientEvent::Processing => self.say(format_args!("Processing ...")),
            ScriptingClientEvent::Output(data) => {
                if self.file.is_none() {
                    match File::create(&self.path) {
                        Ok(f) => self.file = Some(f),
                        Err(e) => {
                            warn!("cannot create {}: {e}", self.path.display());
                            self.error.get_or_insert(e);
                            return;
                        }
                    }
                }
                if let Some(f) = self.file.as_mut() {
                    match f.write_all(&data) {
                        Ok(()) => self.written += data.len() as u64,
                        Err(e) => {
                            self.error.get_or_insert(e);
                        }
                    }
                }
            }
            ScriptingClientEvent::DiscardOutput => {
                self.file = None;
                self.written = 0;
                let _ = std::fs::remove_file(&self.path);
            }
            ScriptingClientEvent::Failover { reason, trial } => {
                self.failovers += 1;
                self.say(format_args!("Failover (trial {trial}): {reason}"));
            }
            ScriptingClientEvent::Completed { exit_status } => {
                if self.file.is_none() {
                    // An empty result: still create the output file.
                    match File::create(&self.path) {
                        Ok(f) => self.file = Some(f),
                        Err(e) => {
                            self.error.get_or_insert(e);
                        }
                    }
                }
                if let Some(f) = self.file.as_mut()
                    && let Err(e) = f.flush()
                {
                    self.error.get_or_insert(e);
                }
                self.say(format_args!(
                    "Completed: {} byte(s) written to {}, remote exit status {exit_status}",
                    self.written,
                    self.path.display()
                ));
                self.completed = Some(exit_status);
            }
        }
    }
}

/// `scriptingclient` with parsed options.
pub fn main_with(opts: ScriptingClientOptions) -> ExitCode {
    init_logging_or_exit("scriptingclient", &opts.library.log);
    match run(&opts) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail("scriptingclient", &e),
    }
}

fn run(opts: &ScriptingClientOptions) -> io::Result<u8> {
    let input = Bytes::from(
        std::fs::read(&opts.input)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", opts.input.display())))?,
    );
    let environment = match opts.environment_file() {
        Some(p) => Some(Bytes::from(std::fs::read(p).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", p.display()))
        })?)),
        None => None,
    };
    let config = ScriptingClientConfig {
        max_retry: opts.max_retry,
        retry_delay: opts.retry_delay,
        transmit_timeout: opts.transmit_timeout,
        keepalive_interval: opts.keep_alive_interval,
        keepalive_timeout: opts.keep_alive_timeout,
        run_id: (!opts.run_id.is_empty()).then(|| opts.run_id.clone()),
        quiet: opts.quiet,
    };
    let service = ScriptingClient::new(config, os_rng(), input, environment)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let session = client_session_config(&opts.library, None, None);
    let mut driver = client_driver(&opts.library, session, true, true, None)?;
    let hooks = ScriptingHooks {
        path: opts.output.clone(),
        file: None,
        quiet: opts.quiet,
        prefix: if opts.run_id.is_empty() {
            String::new()
        } else {
            format!("[{}] ", opts.run_id)
        },
        written: 0,
        failovers: 0,
        completed: None,
        error: None,
    };
    let mut app = ClientApp::new(opts.pool_handle.clone(), service, hooks, "");
    driver.run_app(&mut app)?;
    if let Some(e) = app.hooks.error.take() {
        return Err(io::Error::new(
            e.kind(),
            format!("{}: {e}", opts.output.display()),
        ));
    }
    Ok(u8::try_from(app.service.exit_code()).unwrap_or(1))
}
