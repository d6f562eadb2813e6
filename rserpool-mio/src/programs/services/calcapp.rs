//! `calcappclient`: generates CalcApp jobs (exponential inter-arrival times and sizes),
//! processes them one at a time with one session per job, fails over on REJECT, keep-alive
//! timeout and session loss (resuming from the PE's cookie), and writes RSPLIB's statistics
//! files: the vector file (`-vector=`, one line per completed job after a header line) as
//! jobs complete, the scalar file (`-scalar=`) at the end of `-runtime=`.

use std::fs::File;
use std::io::{self, Write};
use std::process::ExitCode;

use rserpool_core::Instant;
use rserpool_core::services::WallClock;
use rserpool_core::services::calcapp::{
    CalcAppClient, CalcAppClientConfig, CalcAppClientEvent, CalcAppClientTotals, CalcAppJobRecord,
};
use rserpool_proto::ids::PeIdentifier;
use tracing::{info, warn};

use super::super::common::{fail, init_logging_or_exit, os_rng};
use super::super::daemon;
use super::host_clock;
use super::pu::{ClientApp, ClientHooks, client_driver, client_session_config};
use crate::cli::CalcAppClientOptions;

/// Writes the statistics files.
pub struct CalcAppHooks {
    object: String,
    vector: Option<File>,
    scalar: std::path::PathBuf,
    clock: WallClock,
    /// Jobs completed.
    pub completed: u64,
    /// The totals, once the run is over.
    pub totals: Option<CalcAppClientTotals>,
}

impl CalcAppHooks {
    /// Creates the vector file (with RSPLIB's header line).
    pub fn new(opts: &CalcAppClientOptions, clock: WallClock) -> CalcAppHooks {
        let vector = match File::create(&opts.vector_file).and_then(|mut f| {
            writeln!(f, "{}", CalcAppJobRecord::VECTOR_HEADER)?;
            Ok(f)
        }) {
            Ok(f) => Some(f),
            Err(e) => {
                warn!("cannot create {}: {e}", opts.vector_file.display());
                None
            }
        };
        CalcAppHooks {
            object: opts.object_name.clone(),
            vector,
            scalar: opts.scalar_file.clone(),
            clock,
            completed: 0,
            totals: None,
        }
    }
}

impl ClientHooks<CalcAppClientEvent> for CalcAppHooks {
    fn on_event(&mut self, _now: Instant, event: CalcAppClientEvent) {
        match event {
            CalcAppClientEvent::JobQueued { job_id, job_size } => {
                info!("job #{job_id} of size {job_size} queued");
            }
            CalcAppClientEvent::JobCompleted(r) => {
                self.completed += 1;
                println!(
                    "Job #{} completed: size {}, handling time {:.3} s",
                    r.job_id,
                    r.job_size,
                    r.handling_time.as_secs_f64()
                );
                let line = r.vector_line(&self.object, std::process::id(), &self.clock);
                if let Some(f) = self.vector.as_mut()
                    && let Err(e) = writeln!(f, "{line}")
                {
                    warn!("vector file: {e}");
                }
            }
            CalcAppClientEvent::Finished(t) => {
                if let Err(e) = std::fs::write(&self.scalar, t.scalar_file(&self.object)) {
                    warn!("cannot write {}: {e}", self.scalar.display());
                }
                self.totals = Some(t);
            }
        }
    }

    fn on_pe(&mut self, _now: Instant, pe: PeIdentifier, failover: bool) {
        let how = if failover { " (failover)" } else { "" };
        info!("CalcApp: session at PE ${:08x}{how}", pe.0);
    }

    fn done(&self) -> bool {
        self.totals.is_some()
    }
}

/// `calcappclient` with parsed options.
pub fn main_with(opts: CalcAppClientOptions) -> ExitCode {
    if let Some(code) = daemon::detach_if_asked("calcappclient", opts.daemon_pid_file.as_deref()) {
        return code;
    }
    init_logging_or_exit("calcappclient", &opts.library.log);
    match run(&opts) {
        Ok(t) => {
            eprintln!(
                "calcappclient: {} job(s) queued, {} started, {} completed, {} failover(s)",
                t.jobs_queued, t.jobs_started, t.jobs_completed, t.failovers
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("calcappclient", &e),
    }
}

fn run(opts: &CalcAppClientOptions) -> io::Result<CalcAppClientTotals> {
    let config = client_session_config(&opts.library, None, None);
    let mut driver = client_driver(&opts.library, config, true, true, None)?;
    let clock = host_clock();
    let service = CalcAppClient::new(
        CalcAppClientConfig {
            job_interval: opts.job_interval,
            job_size: opts.job_size,
            keepalive_transmission_interval: opts.keep_alive_transmission_interval,
            keepalive_timeout_interval: opts.keep_alive_timeout_interval,
            runtime: opts.runtime,
            ..CalcAppClientConfig::default()
        },
        os_rng(),
        driver.now(),
    );
    let hooks = CalcAppHooks::new(opts, clock);
    let mut app =
        ClientApp::new(opts.pool_handle.clone(), service, hooks, "").without_initial_connect();
    driver.run_app(&mut app)?;
    // A signal ends the run early: the scalar file still gets the totals so far.
    let totals = match app.hooks.totals {
        Some(t) => t,
        None => {
            let t = app.service.totals();
            if let Err(e) = std::fs::write(&opts.scalar_file, t.scalar_file(&opts.object_name)) {
                warn!("cannot write {}: {e}", opts.scalar_file.display());
            }
            t
        }
    };
    Ok(totals)
}
