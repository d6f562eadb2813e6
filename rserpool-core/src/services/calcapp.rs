//! CalcApp PE (`rspserver -calcapp`) and client (`calcappclient`), `services.md` §4.
//!
//! A job is a number of "calculations". The PE pretends to compute at a fixed capacity
//! shared equally among its running jobs, sends keep-alives, and sends cookies (JobID,
//! JobSize, Completed) so another PE can resume the job. The client generates jobs with
//! exponential sizes and inter-arrival times and processes them one at a time, one
//! session per job.
//!
//! Both keep RSPLIB's arithmetic (progress in floating point, microsecond timers, `ceil` for
//! completion, `rint` for cookie times and the values sent) and produce RSPLIB's statistics
//! records; [`CalcAppJobRecord::vector_line`] and friends format them as RSPLIB's `.vec` /
//! `.sca` files. Writing files is the binary's job.
//!
//! Differences from RSPLIB (deliberate, none visible to an RSPLIB peer):
//! * PE: a session closed by the PU (or a failed send) removes its jobs at once; RSPLIB
//!   keeps them until their keep-alive fails (defect §10.7).
//! * Client: after a failover that echoed a cookie, the keep-alive timers restart on the
//!   new PE and an ACCEPT timeout is armed after a REJECT (RSPLIB can wait forever there, or
//!   time out the new PE on the old PE's keep-alive).

use bytes::Bytes;
use core::fmt::Write as _;
use core::time::Duration;
use std::collections::VecDeque;

use rand_core::Rng;
use rserpool_proto::services::calcapp::{CalcAppCookie, CalcAppMessage, CalcAppType};

use super::{
    CloseMode, LogLevel, Outbox, PPID_CALCAPP, ServiceOutput, ServiceSession, SessionEvent,
    WallClock, micros_f64, random_exp, random_unit,
};
use crate::time::Instant;

// ---------------------------------------------------------------------------------------
// PE
// ---------------------------------------------------------------------------------------

/// Settings of the CalcApp PE (`rspserver -calcapp`), RSPLIB's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalcAppServerConfig {
    /// `-capcapacity`: calculations per second shared by all jobs (1 000 000, min 1).
    pub capacity: f64,
    /// `-capmaxjobs`: parallel jobs; more are rejected (10, min 1).
    pub max_jobs: usize,
    /// `-capkeepalivetransmissioninterval` (2.5 s, min 100 ms).
    pub keepalive_transmission_interval: Duration,
    /// `-capkeepalivetimeoutinterval` (2.5 s, min 100 ms).
    pub keepalive_timeout_interval: Duration,
    /// `-capcookiemaxtime` (5 s, min 0.1 s).
    pub cookie_max_time: Duration,
    /// `-capcookiemaxcalculations` (5 000 000, min 1).
    pub cookie_max_calculations: f64,
    /// `-capcleanshutdownprobability`: chance of sending final cookies on shutdown (1.0).
    pub clean_shutdown_probability: f64,
    /// Failover test (not an RSPLIB option, RSPLIB's CalcApp has none): abort a job's
    /// session right after the job's N-th cookie (0 = off, the default).
    pub failure_after_cookies: u64,
}

impl Default for CalcAppServerConfig {
    fn default() -> Self {
        CalcAppServerConfig {
            capacity: 1_000_000.0,
            max_jobs: 10,
            keepalive_transmission_interval: Duration::from_millis(2500),
            keepalive_timeout_interval: Duration::from_millis(2500),
            cookie_max_time: Duration::from_secs(5),
            cookie_max_calculations: 5_000_000.0,
            clean_shutdown_probability: 1.0,
            failure_after_cookies: 0,
        }
    }
}

impl CalcAppServerConfig {
    /// The configuration with RSPLIB's minimums applied (`rspserver` clamps its options).
    pub fn clamped(mut self) -> CalcAppServerConfig {
        self.capacity = self.capacity.max(1.0);
        self.max_jobs = self.max_jobs.max(1);
        let min = Duration::from_millis(100);
        self.keepalive_transmission_interval = self.keepalive_transmission_interval.max(min);
        self.keepalive_timeout_interval = self.keepalive_timeout_interval.max(min);
        self.cookie_max_time = self.cookie_max_time.max(min);
        self.cookie_max_calculations = self.cookie_max_calculations.max(1.0);
        self.clean_shutdown_probability = self.clean_shutdown_probability.clamp(0.0, 1.0);
        self
    }
}

/// What the CalcApp PE asks its driver to do. Messages go out with PPID 34 on stream 0.
#[derive(Clone, Debug, PartialEq)]
pub enum CalcAppServerOutput<S> {
    /// Send a CalcApp message on `session`.
    Send {
        /// The session.
        session: S,
        /// The encoded message.
        data: Bytes,
    },
    /// Send an ASAP_COOKIE with this content on `session`.
    SendCookie {
        /// The session.
        session: S,
        /// Cookie content ([`CalcAppCookie`]).
        cookie: Bytes,
    },
    /// End `session` (a malformed cookie echo aborts it).
    Close {
        /// The session.
        session: S,
        /// How.
        mode: CloseMode,
    },
    /// The PE's load changed (jobs / max jobs); re-register with an adaptive policy.
    Load(f64),
    /// A log line.
    Log {
        /// Severity.
        level: LogLevel,
        /// Text.
        message: String,
    },
    /// A job completed: one line of RSPLIB's `calcapppoolelement.vec`.
    JobCompleted(CalcAppServerRecord),
}

/// One line of the PE's vector file, written when a job completes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalcAppServerRecord {
    /// Line number (1, 2, …).
    pub line: u64,
    /// When.
    pub time: Instant,
    /// Time since the service started.
    pub uptime: Duration,
    /// Calculations the PE could have done since it started.
    pub available_calculations: f64,
    /// Calculations done since it started.
    pub used_calculations: f64,
    /// used / available.
    pub utilization: f64,
    /// Jobs running (including the completed one).
    pub jobs: usize,
    /// Max jobs.
    pub max_jobs: usize,
}

impl CalcAppServerRecord {
    /// The header line of RSPLIB's vector file (written before the first record).
    pub const VECTOR_HEADER: &'static str = "ObjectName PID PoolElementIdentifier CurrentTimeStamp Runtime   AvailableCalculations UsedCalculations Utilization   CurrentJobs MaxJobs";

    /// The record as RSPLIB writes it (without newline).
    pub fn vector_line(&self, object: &str, pid: u32, pe_id: u32, clock: &WallClock) -> String {
        format!(
            "{:06} {} {} 0x{:08x} {:.6}   {:.6}   {:.0} {:.0} {:.6}   {} {}",
            self.line,
            object,
            pid,
            pe_id,
            clock.unix_micros(self.time) as f64 / 1e6,
            self.uptime.as_micros() as f64 / 1e6,
            self.available_calculations,
            self.used_calculations,
            self.utilization,
            self.jobs,
            self.max_jobs
        )
    }
}

/// Totals of the PE, written to RSPLIB's scalar file at shutdown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalcAppServerTotals {
    /// Time since the service started.
    pub uptime: Duration,
    /// Capacity (calculations/s).
    pub capacity: f64,
    /// Max jobs.
    pub max_jobs: usize,
    /// Calculations done.
    pub used_calculations: f64,
    /// Jobs accepted (requests and cookie echoes).
    pub jobs_accepted: u64,
    /// Jobs rejected.
    pub jobs_rejected: u64,
    /// used / available.
    pub utilization: f64,
}

impl CalcAppServerTotals {
    /// RSPLIB's scalar file (`run 1 "scenario"` and eight `scalar` lines). RSPLIB computes
    /// "Total Wasted Capacity" as uptime in µs minus used calculations; reproduced as is.
    pub fn scalar_file(&self, object: &str) -> String {
        let uptime_us = self.uptime.as_micros() as f64;
        let mut s = String::from("run 1 \"scenario\"\n");
        let _ = writeln!(
            s,
            "scalar \"{object}\" \"CalcAppPE Service Uptime\"        {:.6}",
            uptime_us / 1e6
        );
        let _ = writeln!(
            s,
            "scalar \"{object}\" \"CalcAppPE Service Capacity\"      {:.0}",
            self.capacity
        );
        let _ = writeln!(
            s,
            "scalar \"{object}\" \"CalcAppPE Service Max Jobs\"      {}",
            self.max_jobs
        );
        let _ = writeln!(
            s,
            "scalar \"{object}\" \"CalcAppPE Total Used Capacity\"   {:.0}",
            self.used_calculations
        );
        let _ = writeln!(
            s,
            "scalar \"{object}\" \"CalcAppPE Total Wasted Capacity\" {:.0}",
            uptime_us - self.used_calculations
        );
        let _ = writeln!(
            s,
            "scalar \"{object}\" \"CalcAppPE Total Jobs Accepted\"   {}",
            self.jobs_accepted
        );
        let _ = writeln!(
            s,
            "scalar \"{object}\" \"CalcAppPE Total Jobs Rejected\"   {}",
            self.jobs_rejected
        );
        let _ = writeln!(
            s,
            "scalar \"{object}\" \"CalcAppPE Utilization\"           {:.6}",
            self.utilization
        );
        s
    }
}

#[derive(Clone, Debug)]
struct ServerJob<S> {
    session: S,
    job_id: u32,
    job_size: f64,
    completed: f64,
    keepalive_transmission_at: Option<Instant>,
    keepalive_timeout_at: Option<Instant>,
    complete_at: Option<Instant>,
    cookie_at: Option<Instant>,
    last_update: Instant,
    last_cookie_at: Instant,
    last_cookie_completed: f64,
    cookies: u64,
}

/// The CalcApp PE: all sessions of one one-to-many socket, identified by the driver's
/// session key `S`.
#[derive(Debug)]
pub struct CalcAppServer<S> {
    config: CalcAppServerConfig,
    jobs: Vec<ServerJob<S>>,
    out: VecDeque<CalcAppServerOutput<S>>,
    started: Instant,
    used_calculations: f64,
    jobs_accepted: u64,
    jobs_rejected: u64,
    vector_line: u64,
    load: f64,
}

impl<S: Copy + Eq + core::fmt::Debug> CalcAppServer<S> {
    /// A PE started at `now` (the uptime and utilization count from here). The
    /// configuration is [clamped](CalcAppServerConfig::clamped) to RSPLIB's minimums.
    pub fn new(config: CalcAppServerConfig, now: Instant) -> CalcAppServer<S> {
        CalcAppServer {
            config: config.clamped(),
            jobs: Vec::new(),
            out: VecDeque::new(),
            started: now,
            used_calculations: 0.0,
            jobs_accepted: 0,
            jobs_rejected: 0,
            vector_line: 0,
            load: 0.0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &CalcAppServerConfig {
        &self.config
    }

    /// Jobs running.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Current load: jobs / max jobs.
    pub fn load(&self) -> f64 {
        self.load
    }

    /// Progress of a job as (JobSize, Completed), updated to the last input's time.
    pub fn job_progress(&self, session: S, job_id: u32) -> Option<(f64, f64)> {
        self.find(session, job_id)
            .map(|i| (self.jobs[i].job_size, self.jobs[i].completed))
    }

    /// Totals for the scalar file, as of `now`.
    pub fn totals(&mut self, now: Instant) -> CalcAppServerTotals {
        self.update_calculations(now);
        let uptime = now - self.started;
        let available = uptime.as_micros() as f64 * self.config.capacity / 1e6;
        CalcAppServerTotals {
            uptime,
            capacity: self.config.capacity,
            max_jobs: self.config.max_jobs,
            used_calculations: self.used_calculations,
            jobs_accepted: self.jobs_accepted,
            jobs_rejected: self.jobs_rejected,
            utilization: if available > 0.0 {
                self.used_calculations / available
            } else {
                0.0
            },
        }
    }

    fn log(&mut self, level: LogLevel, message: String) {
        self.out
            .push_back(CalcAppServerOutput::Log { level, message });
    }

    fn send(&mut self, session: S, m: CalcAppMessage) {
        self.out.push_back(CalcAppServerOutput::Send {
            session,
            data: m.encode(),
        });
    }

    fn find(&self, session: S, job_id: u32) -> Option<usize> {
        self.jobs
            .iter()
            .position(|j| j.session == session && j.job_id == job_id)
    }

    fn capacity_per_job_us(&self) -> f64 {
        self.config.capacity / (self.jobs.len() as f64 * 1e6)
    }

    fn update_calculations(&mut self, now: Instant) {
        if self.jobs.is_empty() {
            return;
        }
        let per_us = self.capacity_per_job_us();
        for j in &mut self.jobs {
            let elapsed = now.saturating_duration_since(j.last_update).as_micros() as f64;
            let done = elapsed * per_us;
            if j.completed + done < j.job_size {
                self.used_calculations += done;
                j.completed += done;
            } else {
                self.used_calculations += (j.job_size - j.completed).max(0.0);
                j.completed = j.job_size;
            }
            j.last_update = now;
        }
    }

    fn schedule_jobs(&mut self, now: Instant) {
        if !self.jobs.is_empty() {
            let per_us = self.capacity_per_job_us();
            let cookie_max_time = self.config.cookie_max_time.as_micros() as f64;
            let cookie_max_calculations = self.config.cookie_max_calculations;
            for j in &mut self.jobs {
                let to_go = (j.job_size - j.completed).max(0.0);
                j.complete_at = Some(j.last_update + micros_f64((to_go / per_us).ceil()));
                let since_cookie = j.completed - j.last_cookie_completed;
                let time_since_cookie =
                    now.saturating_duration_since(j.last_cookie_at).as_micros() as f64;
                let by_calculations =
                    ((cookie_max_calculations - since_cookie).max(0.0) / per_us).round_ties_even();
                let by_time = (cookie_max_time - time_since_cookie)
                    .max(0.0)
                    .round_ties_even();
                j.cookie_at = Some(now + micros_f64(by_calculations.min(by_time)));
            }
        }
        let load = self.jobs.len() as f64 / self.config.max_jobs as f64;
        if load != self.load {
            self.load = load;
            self.out.push_back(CalcAppServerOutput::Load(load));
        }
    }

    fn add_job(
        &mut self,
        now: Instant,
        session: S,
        job_id: u32,
        job_size: f64,
        completed: f64,
    ) -> bool {
        if self.jobs.len() >= self.config.max_jobs {
            return false;
        }
        self.update_calculations(now);
        self.jobs.push(ServerJob {
            session,
            job_id,
            job_size,
            completed: completed.min(job_size),
            keepalive_transmission_at: Some(now + self.config.keepalive_transmission_interval),
            keepalive_timeout_at: None,
            complete_at: None,
            cookie_at: None,
            last_update: now,
            last_cookie_at: now,
            // RSPLIB counts the calculations since the last cookie from 0, so a job resumed
            // from a cookie sends its first cookie almost at once.
            last_cookie_completed: 0.0,
            cookies: 0,
        });
        self.schedule_jobs(now);
        true
    }

    fn remove_job(&mut self, now: Instant, index: usize) {
        self.update_calculations(now);
        if index < self.jobs.len() {
            self.jobs.remove(index);
        }
        self.schedule_jobs(now);
    }

    fn accept_or_reject(&mut self, now: Instant, session: S, job_id: u32, size: f64, done: f64) {
        if self.find(session, job_id).is_some() {
            // A repeated REQUEST for a running job: confirm it again.
            self.send(session, CalcAppMessage::new(CalcAppType::Accept, job_id));
            return;
        }
        if self.add_job(now, session, job_id, size, done) {
            self.jobs_accepted += 1;
            self.log(
                LogLevel::Info,
                format!("CalcApp: job {session:?}/{job_id} of size {size} accepted ({done} done)"),
            );
            self.send(session, CalcAppMessage::new(CalcAppType::Accept, job_id));
        } else {
            self.jobs_rejected += 1;
            self.log(
                LogLevel::Info,
                format!("CalcApp: job {session:?}/{job_id} rejected"),
            );
            self.send(session, CalcAppMessage::new(CalcAppType::Reject, job_id));
        }
    }

    /// A data message on `session`.
    pub fn handle_data(&mut self, now: Instant, session: S, data: &[u8]) {
        let m = match CalcAppMessage::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.log(LogLevel::Warning, format!("CalcApp: ignoring message: {e}"));
                return;
            }
        };
        match m.ty {
            CalcAppType::Request => {
                self.accept_or_reject(now, session, m.job_id, m.job_size as f64, 0.0)
            }
            CalcAppType::KeepAlive => match self.find(session, m.job_id) {
                Some(_) => self.send(
                    session,
                    CalcAppMessage::new(CalcAppType::KeepAliveAck, m.job_id),
                ),
                None => self.log(
                    LogLevel::Warning,
                    format!("CalcApp: KeepAlive for unknown job {}", m.job_id),
                ),
            },
            CalcAppType::KeepAliveAck => match self.find(session, m.job_id) {
                Some(i) => {
                    let interval = self.config.keepalive_transmission_interval;
                    let j = &mut self.jobs[i];
                    j.keepalive_timeout_at = None;
                    j.keepalive_transmission_at = Some(now + interval);
                }
                None => self.log(
                    LogLevel::Warning,
                    format!("CalcApp: KeepAliveAck for unknown job {}", m.job_id),
                ),
            },
            t => self.log(
                LogLevel::Warning,
                format!("CalcApp: unexpected message type {}", t.code()),
            ),
        }
    }

    /// A cookie echo on `session`: the job resumes with the cookie's progress (ACCEPT), or
    /// is rejected when full; a cookie shorter than 20 bytes aborts the session.
    pub fn handle_cookie_echo(&mut self, now: Instant, session: S, cookie: &[u8]) {
        match CalcAppCookie::decode(cookie) {
            Ok(c) => self.accept_or_reject(
                now,
                session,
                c.job_id,
                c.job_size as f64,
                c.completed as f64,
            ),
            Err(e) => {
                self.log(LogLevel::Warning, format!("CalcApp: bad cookie echo: {e}"));
                self.out.push_back(CalcAppServerOutput::Close {
                    session,
                    mode: CloseMode::Abort,
                });
            }
        }
    }

    /// `session` ended (closed by the PU, aborted, lost): its jobs are removed.
    pub fn handle_session_closed(&mut self, now: Instant, session: S) {
        while let Some(i) = self.jobs.iter().position(|j| j.session == session) {
            let id = self.jobs[i].job_id;
            self.remove_job(now, i);
            self.log(
                LogLevel::Info,
                format!("CalcApp: session {session:?} closed, job {id} removed"),
            );
        }
    }

    /// A send on `session` failed: RSPLIB removes the job(s) concerned.
    pub fn handle_send_failed(&mut self, now: Instant, session: S) {
        self.handle_session_closed(now, session);
    }

    /// The server shuts down: with probability `clean_shutdown_probability` every job gets
    /// an up-to-date final cookie; then all jobs are removed.
    pub fn handle_shutdown<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        if random_unit(rng) <= self.config.clean_shutdown_probability {
            self.update_calculations(now);
            self.schedule_jobs(now);
            for i in 0..self.jobs.len() {
                self.send_cookie(now, i);
            }
        }
        while !self.jobs.is_empty() {
            let last = self.jobs.len() - 1;
            self.remove_job(now, last);
        }
    }

    fn send_cookie(&mut self, now: Instant, i: usize) {
        let j = &mut self.jobs[i];
        let cookie = CalcAppCookie {
            job_id: j.job_id,
            job_size: j.job_size.round_ties_even() as u64,
            completed: j.completed.round_ties_even() as u64,
        };
        j.last_cookie_at = now;
        j.last_cookie_completed = j.completed;
        j.cookies += 1;
        let session = j.session;
        self.out.push_back(CalcAppServerOutput::SendCookie {
            session,
            cookie: cookie.encode(),
        });
    }

    /// Runs the due job timers (completion, cookie, keep-alive transmission and timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.jobs.len() {
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
            if due(self.jobs[i].complete_at) {
                self.update_calculations(now);
                self.schedule_jobs(now);
                self.complete_job(now, i);
                continue; // index i now holds the next job
            }
            if due(self.jobs[i].cookie_at) {
                self.jobs[i].cookie_at = None;
                self.update_calculations(now);
                self.send_cookie(now, i);
                self.schedule_jobs(now);
                let limit = self.config.failure_after_cookies;
                if limit > 0 && self.jobs[i].cookies >= limit {
                    let session = self.jobs[i].session;
                    self.log(
                        LogLevel::Info,
                        format!("CalcApp: failure tester, aborting session {session:?}"),
                    );
                    self.remove_job(now, i);
                    self.out.push_back(CalcAppServerOutput::Close {
                        session,
                        mode: CloseMode::Abort,
                    });
                    continue;
                }
            }
            if due(self.jobs[i].keepalive_transmission_at) {
                let timeout = self.config.keepalive_timeout_interval;
                let j = &mut self.jobs[i];
                j.keepalive_transmission_at = None;
                j.keepalive_timeout_at = Some(now + timeout);
                let (session, id) = (j.session, j.job_id);
                self.send(session, CalcAppMessage::new(CalcAppType::KeepAlive, id));
            }
            if due(self.jobs[i].keepalive_timeout_at) {
                let (session, id) = (self.jobs[i].session, self.jobs[i].job_id);
                self.remove_job(now, i);
                self.log(
                    LogLevel::Info,
                    format!("CalcApp: no keep-alive for job {session:?}/{id}, removing it"),
                );
                continue;
            }
            i += 1;
        }
    }

    fn complete_job(&mut self, now: Instant, i: usize) {
        let j = &self.jobs[i];
        let (session, id) = (j.session, j.job_id);
        let m = CalcAppMessage::complete(
            id,
            j.job_size.round_ties_even() as u64,
            j.completed.round_ties_even() as u64,
        );
        self.send(session, m);
        self.log(
            LogLevel::Info,
            format!("CalcApp: job {session:?}/{id} is complete"),
        );
        let uptime = now - self.started;
        let available = uptime.as_micros() as f64 * self.config.capacity / 1e6;
        self.vector_line += 1;
        self.out
            .push_back(CalcAppServerOutput::JobCompleted(CalcAppServerRecord {
                line: self.vector_line,
                time: now,
                uptime,
                available_calculations: available,
                used_calculations: self.used_calculations,
                utilization: if available > 0.0 {
                    self.used_calculations / available
                } else {
                    0.0
                },
                jobs: self.jobs.len(),
                max_jobs: self.config.max_jobs,
            }));
        self.remove_job(now, i);
    }

    /// The next output, `None` when nothing is pending.
    pub fn poll_output(&mut self) -> Option<CalcAppServerOutput<S>> {
        self.out.pop_front()
    }

    /// The earliest job timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jobs
            .iter()
            .flat_map(|j| {
                [
                    j.complete_at,
                    j.cookie_at,
                    j.keepalive_transmission_at,
                    j.keepalive_timeout_at,
                ]
            })
            .flatten()
            .min()
    }
}

// ---------------------------------------------------------------------------------------
// PU
// ---------------------------------------------------------------------------------------

/// Settings of `calcappclient`, RSPLIB's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalcAppClientConfig {
    /// `-jobinterval`: mean of the exponential inter-arrival time (15 s).
    pub job_interval: Duration,
    /// `-jobsize`: mean of the exponential job size (5 000 000 calculations).
    pub job_size: f64,
    /// `-keepalivetransmissioninterval` (5 s, min 100 ms).
    pub keepalive_transmission_interval: Duration,
    /// `-keepalivetimeoutinterval` (5 s, min 100 ms); also the ACCEPT/REJECT timeout.
    pub keepalive_timeout_interval: Duration,
    /// `-runtime`: the client stops after this (86 400 s).
    pub runtime: Duration,
    /// Wait before re-sending REQUEST after a REJECT without cookie (RSPLIB: 1 s, fixed).
    pub reject_retry_delay: Duration,
}

impl Default for CalcAppClientConfig {
    fn default() -> Self {
        CalcAppClientConfig {
            job_interval: Duration::from_secs(15),
            job_size: 5_000_000.0,
            keepalive_transmission_interval: Duration::from_secs(5),
            keepalive_timeout_interval: Duration::from_secs(5),
            runtime: Duration::from_secs(86_400),
            reject_retry_delay: Duration::from_secs(1),
        }
    }
}

impl CalcAppClientConfig {
    /// The configuration with RSPLIB's minimums (100 ms keep-alive settings).
    pub fn clamped(mut self) -> CalcAppClientConfig {
        let min = Duration::from_millis(100);
        self.keepalive_transmission_interval = self.keepalive_transmission_interval.max(min);
        self.keepalive_timeout_interval = self.keepalive_timeout_interval.max(min);
        self.job_size = self.job_size.max(0.0);
        self
    }
}

/// One completed job: a line of RSPLIB's `CalcAppPU.vec`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalcAppJobRecord {
    /// Line number (1, 2, …).
    pub line: u64,
    /// Job identifier.
    pub job_id: u32,
    /// Job size.
    pub job_size: f64,
    /// Configured mean job interval (printed in every line).
    pub job_interval: Duration,
    /// Jobs queued before this one when it was queued.
    pub queue_length: usize,
    /// Queued → dequeued.
    pub queuing_delay: Duration,
    /// Dequeued → (last) ACCEPT.
    pub startup_delay: Duration,
    /// (Last) ACCEPT → COMPLETE.
    pub processing_time: Duration,
    /// Sum of the three.
    pub handling_time: Duration,
    /// Job size / handling time (calculations/s).
    pub handling_speed: f64,
    /// When the job was queued.
    pub queued_at: Instant,
    /// When it was dequeued.
    pub started_at: Instant,
    /// When the (last) ACCEPT arrived.
    pub accepted_at: Instant,
    /// When COMPLETE arrived.
    pub completed_at: Instant,
}

impl CalcAppJobRecord {
    /// The header line of RSPLIB's vector file.
    pub const VECTOR_HEADER: &'static str = "ObjectName PID JobID JobSize JobInterval   QueueLength QueuingDelay StartupDelay ProcessingTime HandlingTime HandlingSpeed   QueuingTimeStamp StartupTimeStamp AcceptTimeStamp CompleteTimeStamp";

    /// The record as RSPLIB writes it (without newline).
    pub fn vector_line(&self, object: &str, pid: u32, clock: &WallClock) -> String {
        let s = |d: Duration| d.as_micros() as f64 / 1e6;
        let ts = |t: Instant| clock.unix_micros(t) as f64 / 1e6;
        format!(
            "{:06} {} {} {} {:.0} {:.6}   {} {:.6} {:.6} {:.6} {:.6} {:.6}   {:.6} {:.6} {:.6} {:.6}",
            self.line,
            object,
            pid,
            self.job_id,
            self.job_size,
            s(self.job_interval),
            self.queue_length,
            s(self.queuing_delay),
            s(self.startup_delay),
            s(self.processing_time),
            s(self.handling_time),
            self.handling_speed,
            ts(self.queued_at),
            ts(self.started_at),
            ts(self.accepted_at),
            ts(self.completed_at)
        )
    }
}

/// Totals of a `calcappclient` run (its scalar file).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CalcAppClientTotals {
    /// Sum of queuing delays (s).
    pub queuing_time: f64,
    /// Sum of startup delays (s).
    pub startup_time: f64,
    /// Sum of processing times (s).
    pub processing_time: f64,
    /// Sum of handling times (s).
    pub handling_time: f64,
    /// Jobs generated.
    pub jobs_queued: u64,
    /// Jobs dequeued (retrials not counted).
    pub jobs_started: u64,
    /// Jobs completed.
    pub jobs_completed: u64,
    /// Sum of sizes of generated jobs.
    pub job_size_queued: f64,
    /// Sum of sizes of started jobs.
    pub job_size_started: f64,
    /// Sum of sizes of completed jobs.
    pub job_size_completed: f64,
    /// REQUESTs sent.
    pub requests: u64,
    /// ACCEPTs received.
    pub accepts: u64,
    /// REJECTs received.
    pub rejects: u64,
    /// COMPLETEs received.
    pub completes: u64,
    /// KEEPALIVEs sent.
    pub keepalives: u64,
    /// KEEPALIVE_ACKs sent.
    pub keepalive_acks: u64,
    /// Failovers requested (not an RSPLIB scalar).
    pub failovers: u64,
}

impl CalcAppClientTotals {
    /// RSPLIB's scalar file (`run 1 "scenario"` and the `CalcAppPU …` lines).
    pub fn scalar_file(&self, object: &str) -> String {
        let speed = |t: f64| {
            if t > 0.0 {
                self.job_size_completed / t
            } else {
                0.0
            }
        };
        let mut s = String::from("run 1 \"scenario\"\n");
        let lines: [(&str, String); 18] = [
            (
                "Total Queuing Time\"        ",
                format!("{:.6}", self.queuing_time),
            ),
            (
                "Total Startup Time\"        ",
                format!("{:.6}", self.startup_time),
            ),
            (
                "Total Processing Time\"     ",
                format!("{:.6}", self.processing_time),
            ),
            (
                "Total Handling Time\"       ",
                format!("{:.6}", self.handling_time),
            ),
            (
                "Average Processing Speed\"  ",
                format!("{:.0}", speed(self.processing_time)),
            ),
            (
                "Average Handling Speed\"    ",
                format!("{:.0}", speed(self.handling_time)),
            ),
            ("Total Jobs Queued\"         ", self.jobs_queued.to_string()),
            (
                "Total Jobs Started\"        ",
                self.jobs_started.to_string(),
            ),
            (
                "Total Jobs Completed\"      ",
                self.jobs_completed.to_string(),
            ),
            (
                "Total Job Size Queued\"     ",
                format!("{:.0}", self.job_size_queued),
            ),
            (
                "Total Job Size Started\"    ",
                format!("{:.0}", self.job_size_started),
            ),
            (
                "Total Job Size Completed\"  ",
                format!("{:.0}", self.job_size_completed),
            ),
            ("Total CalcAppRequests\"     ", self.requests.to_string()),
            ("Total CalcAppAccepts\"      ", self.accepts.to_string()),
            ("Total CalcAppRejects\"      ", self.rejects.to_string()),
            ("Total CalcAppCompletes\"    ", self.completes.to_string()),
            ("Total CalcAppKeepAlives\"   ", self.keepalives.to_string()),
            (
                "Total CalcAppKeepAliveAcks\"",
                self.keepalive_acks.to_string(),
            ),
        ];
        for (name, value) in lines {
            let _ = writeln!(s, "scalar \"{object}\" \"CalcAppPU {name} {value}");
        }
        s
    }
}

/// What `calcappclient` reports.
#[derive(Clone, Debug, PartialEq)]
pub enum CalcAppClientEvent {
    /// A job was generated and queued.
    JobQueued {
        /// Its identifier.
        job_id: u32,
        /// Its size.
        job_size: f64,
    },
    /// A job completed.
    JobCompleted(CalcAppJobRecord),
    /// The runtime is over; no further outputs follow.
    Finished(CalcAppClientTotals),
}

#[derive(Clone, Copy, Debug)]
struct ClientJob {
    job_id: u32,
    job_size: f64,
    queued_at: Instant,
    started_at: Instant,
    accepted_at: Instant,
    queue_length: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    /// No job in progress.
    Idle,
    /// `Connect` emitted, waiting for `Up`.
    Connecting,
    /// REQUEST sent (or about to be), waiting for ACCEPT/REJECT.
    Requesting,
    /// ACCEPT received.
    Processing,
    /// `Failover` emitted, waiting for the outcome.
    FailingOver(FailoverCause),
    /// Waiting `reject_retry_delay` before re-sending REQUEST.
    RetryWait,
    /// Runtime over.
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailoverCause {
    Reject,
    Timeout,
    Necessary,
}

/// `calcappclient`: job generator and per-job sessions.
///
/// Start it with [`CalcAppClient::new`] at the process start; it emits
/// [`ServiceOutput::Connect`] for every job (and for a retry after a JobID mismatch or a
/// failed REQUEST) and [`ServiceOutput::Close`] after each COMPLETE. All messages go out with
/// PPID 34 on stream 0.
#[derive(Debug)]
pub struct CalcAppClient<R> {
    config: CalcAppClientConfig,
    rng: R,
    state: ClientState,
    queue: VecDeque<ClientJob>,
    current: Option<ClientJob>,
    retrial: bool,
    next_job_id: u32,
    next_job_at: Instant,
    end_at: Instant,
    keepalive_transmission_at: Option<Instant>,
    keepalive_timeout_at: Option<Instant>,
    retry_at: Option<Instant>,
    totals: CalcAppClientTotals,
    vector_line: u64,
    out: Outbox<CalcAppClientEvent>,
}

impl<R: Rng> CalcAppClient<R> {
    /// A client started at `now`: the first job arrives after an exponential delay, the run
    /// ends at `now + runtime`.
    pub fn new(config: CalcAppClientConfig, mut rng: R, now: Instant) -> CalcAppClient<R> {
        let config = config.clamped();
        let first = now + micros_f64(random_exp(&mut rng, config.job_interval.as_micros() as f64));
        CalcAppClient {
            config,
            rng,
            state: ClientState::Idle,
            queue: VecDeque::new(),
            current: None,
            retrial: false,
            next_job_id: 1,
            next_job_at: first,
            end_at: now + config.runtime,
            keepalive_transmission_at: None,
            keepalive_timeout_at: None,
            retry_at: None,
            totals: CalcAppClientTotals::default(),
            vector_line: 0,
            out: Outbox::default(),
        }
    }

    /// Totals so far.
    pub fn totals(&self) -> CalcAppClientTotals {
        self.totals
    }

    /// Jobs waiting in the queue (the current job not included).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The job in progress: (JobID, JobSize).
    pub fn current_job(&self) -> Option<(u32, f64)> {
        self.current.map(|j| (j.job_id, j.job_size))
    }

    fn generate_job(&mut self, now: Instant) {
        let job_id = self.next_job_id;
        self.next_job_id = self.next_job_id.wrapping_add(1);
        let job_size = random_exp(&mut self.rng, self.config.job_size).round_ties_even();
        self.queue.push_back(ClientJob {
            job_id,
            job_size,
            queued_at: now,
            started_at: now,
            accepted_at: now,
            queue_length: self.queue.len(),
        });
        self.totals.jobs_queued += 1;
        self.totals.job_size_queued += job_size;
        self.out
            .event(CalcAppClientEvent::JobQueued { job_id, job_size });
        let gap = micros_f64(random_exp(
            &mut self.rng,
            self.config.job_interval.as_micros() as f64,
        ));
        self.next_job_at = now + gap.max(Duration::from_micros(1));
    }

    fn start_next_job(&mut self, now: Instant) {
        if self.current.is_none() {
            let Some(mut job) = self.queue.pop_front() else {
                return;
            };
            job.started_at = now;
            self.totals.jobs_started += 1;
            self.totals.job_size_started += job.job_size;
            self.current = Some(job);
        }
        self.state = ClientState::Connecting;
        self.clear_timers();
        self.out.push(ServiceOutput::Connect);
    }

    fn clear_timers(&mut self) {
        self.keepalive_transmission_at = None;
        self.keepalive_timeout_at = None;
        self.retry_at = None;
    }

    fn send(&mut self, m: CalcAppMessage) {
        self.out.send(PPID_CALCAPP, m.encode());
    }

    fn send_request(&mut self, now: Instant) {
        let Some(job) = self.current else { return };
        self.out.log(
            LogLevel::Info,
            format!(
                "CalcApp: request for job #{} (job size {})",
                job.job_id, job.job_size
            ),
        );
        self.send(CalcAppMessage::request(
            job.job_id,
            job.job_size.max(0.0) as u64,
        ));
        self.totals.requests += 1;
        self.state = ClientState::Requesting;
        self.keepalive_transmission_at = None;
        self.keepalive_timeout_at = Some(now + self.config.keepalive_timeout_interval);
    }

    fn failover(&mut self, cause: FailoverCause, report_unreachable: bool) {
        self.enter_failover(cause);
        self.out
            .push(ServiceOutput::Failover { report_unreachable });
    }

    fn enter_failover(&mut self, cause: FailoverCause) {
        self.clear_timers();
        self.state = ClientState::FailingOver(cause);
        self.totals.failovers += 1;
    }

    /// A reply for another job: RSPLIB closes the session and retries the job on a new one.
    fn job_failed(&mut self, now: Instant, why: &str) {
        self.out
            .log(LogLevel::Warning, format!("CalcApp: {why} -> retrying job"));
        self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
        self.retrial = true;
        self.start_next_job(now);
    }

    fn complete(&mut self, now: Instant) {
        let Some(job) = self.current.take() else {
            return;
        };
        self.totals.completes += 1;
        let queuing = job.started_at - job.queued_at;
        let startup = job.accepted_at - job.started_at;
        let processing = now - job.accepted_at;
        let handling = queuing + startup + processing;
        let handling_s = handling.as_micros() as f64 / 1e6;
        self.totals.queuing_time += queuing.as_micros() as f64 / 1e6;
        self.totals.startup_time += startup.as_micros() as f64 / 1e6;
        self.totals.processing_time += processing.as_micros() as f64 / 1e6;
        self.totals.handling_time += handling_s;
        self.totals.jobs_completed += 1;
        self.totals.job_size_completed += job.job_size;
        self.vector_line += 1;
        self.out
            .event(CalcAppClientEvent::JobCompleted(CalcAppJobRecord {
                line: self.vector_line,
                job_id: job.job_id,
                job_size: job.job_size,
                job_interval: self.config.job_interval,
                queue_length: job.queue_length,
                queuing_delay: queuing,
                startup_delay: startup,
                processing_time: processing,
                handling_time: handling,
                handling_speed: if handling_s > 0.0 {
                    job.job_size / handling_s
                } else {
                    0.0
                },
                queued_at: job.queued_at,
                started_at: job.started_at,
                accepted_at: job.accepted_at,
                completed_at: now,
            }));
        self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
        self.clear_timers();
        self.state = ClientState::Idle;
        self.retrial = false;
        self.start_next_job(now);
    }

    fn finish(&mut self) {
        if !matches!(self.state, ClientState::Idle) {
            self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
        }
        self.state = ClientState::Finished;
        self.clear_timers();
        self.out.event(CalcAppClientEvent::Finished(self.totals));
    }
}

impl<R: Rng> ServiceSession for CalcAppClient<R> {
    type Event = CalcAppClientEvent;

    fn handle_data(&mut self, now: Instant, _ppid: u32, _stream: u16, data: Bytes) {
        if matches!(self.state, ClientState::Finished | ClientState::Idle) {
            return;
        }
        let Some(job) = self.current else { return };
        let m = match CalcAppMessage::decode(&data) {
            Ok(m) => m,
            Err(e) => {
                self.out
                    .log(LogLevel::Warning, format!("CalcApp: ignoring message: {e}"));
                return;
            }
        };
        if !matches!(
            m.ty,
            CalcAppType::Accept
                | CalcAppType::Reject
                | CalcAppType::KeepAlive
                | CalcAppType::KeepAliveAck
                | CalcAppType::Complete
        ) {
            self.out.log(
                LogLevel::Warning,
                format!("CalcApp: unknown message type {}", m.ty.code()),
            );
            return;
        }
        if m.job_id != job.job_id {
            self.job_failed(
                now,
                &format!("reply for job {} while job {} runs", m.job_id, job.job_id),
            );
            return;
        }
        match m.ty {
            CalcAppType::Accept => {
                if let Some(j) = &mut self.current {
                    j.accepted_at = now;
                }
                self.totals.accepts += 1;
                self.state = ClientState::Processing;
                self.keepalive_timeout_at = None;
                self.keepalive_transmission_at =
                    Some(now + self.config.keepalive_transmission_interval);
            }
            CalcAppType::Reject => {
                self.totals.rejects += 1;
                self.failover(FailoverCause::Reject, false);
            }
            CalcAppType::KeepAlive => {
                self.send(CalcAppMessage::new(CalcAppType::KeepAliveAck, job.job_id));
                self.totals.keepalive_acks += 1;
            }
            CalcAppType::KeepAliveAck => {
                self.state = ClientState::Processing;
                self.keepalive_timeout_at = None;
                self.keepalive_transmission_at =
                    Some(now + self.config.keepalive_transmission_interval);
            }
            _ => self.complete(now),
        }
    }

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {}

    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        match (event, self.state) {
            (_, ClientState::Finished) => {}
            (SessionEvent::Up, ClientState::Connecting) => self.send_request(now),
            (
                SessionEvent::FailoverComplete { cookie_echoed },
                ClientState::FailingOver(_) | ClientState::Connecting,
            ) => {
                let cause = match self.state {
                    ClientState::FailingOver(c) => c,
                    _ => FailoverCause::Necessary,
                };
                if cookie_echoed {
                    // The new PE resumes from the cookie and sends ACCEPT.
                    self.state = ClientState::Processing;
                    self.keepalive_timeout_at = if cause == FailoverCause::Reject {
                        Some(now + self.config.keepalive_timeout_interval)
                    } else {
                        None
                    };
                    self.keepalive_transmission_at =
                        Some(now + self.config.keepalive_transmission_interval);
                } else if cause == FailoverCause::Reject {
                    self.state = ClientState::RetryWait;
                    self.retry_at = Some(now + self.config.reject_retry_delay);
                } else {
                    self.send_request(now);
                }
            }
            (SessionEvent::FailoverNecessary, ClientState::FailingOver(c)) => {
                // The failover reached no PE: try again.
                self.state = ClientState::FailingOver(c);
                self.out.push(ServiceOutput::Failover {
                    report_unreachable: false,
                });
            }
            (
                SessionEvent::FailoverNecessary,
                ClientState::Connecting
                | ClientState::Requesting
                | ClientState::Processing
                | ClientState::RetryWait,
            ) => self.failover(FailoverCause::Necessary, false),
            (
                SessionEvent::FailoverStarted,
                ClientState::Requesting | ClientState::Processing | ClientState::RetryWait,
            ) => self.enter_failover(FailoverCause::Necessary),
            (SessionEvent::SendFailed, ClientState::Requesting) => {
                self.job_failed(now, "unable to send CalcAppRequest");
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.state == ClientState::Finished {
            return;
        }
        if now >= self.end_at {
            self.finish();
            return;
        }
        let mut generated = 0;
        while self.next_job_at <= now && generated < 1000 {
            self.generate_job(now);
            generated += 1;
        }
        if self.state == ClientState::Idle {
            self.start_next_job(now);
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.send_request(now);
        }
        if self.keepalive_transmission_at.is_some_and(|t| t <= now) {
            self.keepalive_transmission_at = None;
            self.keepalive_timeout_at = Some(now + self.config.keepalive_timeout_interval);
            if let Some(job) = self.current {
                self.send(CalcAppMessage::new(CalcAppType::KeepAlive, job.job_id));
                self.totals.keepalives += 1;
            }
        }
        if self.keepalive_timeout_at.is_some_and(|t| t <= now) {
            self.out.log(LogLevel::Info, "CalcApp: timeout -> failover");
            self.failover(FailoverCause::Timeout, true);
        }
    }

    fn poll_output(&mut self) -> Option<ServiceOutput<CalcAppClientEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.state == ClientState::Finished {
            return None;
        }
        [
            Some(self.end_at),
            Some(self.next_job_at),
            self.keepalive_transmission_at,
            self.keepalive_timeout_at,
            self.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn is_finished(&self) -> bool {
        self.state == ClientState::Finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    type Server = CalcAppServer<u32>;

    fn drain(s: &mut Server) -> Vec<CalcAppServerOutput<u32>> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn messages(outs: &[CalcAppServerOutput<u32>]) -> Vec<(u32, CalcAppMessage)> {
        outs.iter()
            .filter_map(|o| match o {
                CalcAppServerOutput::Send { session, data } => {
                    Some((*session, CalcAppMessage::decode(data).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    fn cookies(outs: &[CalcAppServerOutput<u32>]) -> Vec<CalcAppCookie> {
        outs.iter()
            .filter_map(|o| match o {
                CalcAppServerOutput::SendCookie { cookie, .. } => {
                    Some(CalcAppCookie::decode(cookie).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    /// Runs the server's timers up to `until`, collecting outputs.
    fn run_until(
        s: &mut Server,
        until: Instant,
        outs: &mut Vec<(Instant, CalcAppServerOutput<u32>)>,
    ) {
        while let Some(t) = s.poll_timeout() {
            if t > until {
                break;
            }
            s.handle_timeout(t);
            outs.extend(drain(s).into_iter().map(|o| (t, o)));
        }
    }

    fn req(job: u32, size: u64) -> Bytes {
        CalcAppMessage::request(job, size).encode()
    }

    fn ka_ack(job: u32) -> Bytes {
        CalcAppMessage::new(CalcAppType::KeepAliveAck, job).encode()
    }

    #[test]
    fn server_accepts_and_completes_on_time() {
        let config = CalcAppServerConfig {
            keepalive_transmission_interval: Duration::from_secs(100),
            ..Default::default()
        };
        let mut s = Server::new(config, Instant::ZERO);
        s.handle_data(Instant::ZERO, 1, &req(1, 1_000_000));
        let outs = drain(&mut s);
        assert_eq!(
            messages(&outs),
            vec![(1, CalcAppMessage::new(CalcAppType::Accept, 1))]
        );
        assert!(outs.contains(&CalcAppServerOutput::Load(0.1)));
        // A second job half a second later halves the rate of both.
        s.handle_data(Instant::from_millis(500), 2, &req(7, 1_000_000));
        drain(&mut s);
        assert_eq!(s.job_progress(1, 1), Some((1e6, 5e5)));
        let mut outs = Vec::new();
        run_until(&mut s, Instant::from_secs_for_test(3), &mut outs);
        let completes: Vec<_> = outs
            .iter()
            .filter_map(|(t, o)| match o {
                CalcAppServerOutput::Send { session, data } => {
                    let m = CalcAppMessage::decode(data).unwrap();
                    (m.ty == CalcAppType::Complete).then_some((*t, *session, m))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            completes,
            vec![
                (
                    Instant::from_millis(1500),
                    1,
                    CalcAppMessage::complete(1, 1_000_000, 1_000_000)
                ),
                (
                    Instant::from_millis(2000),
                    2,
                    CalcAppMessage::complete(7, 1_000_000, 1_000_000)
                ),
            ]
        );
        let records: Vec<_> = outs
            .iter()
            .filter_map(|(_, o)| match o {
                CalcAppServerOutput::JobCompleted(r) => Some(*r),
                _ => None,
            })
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 1);
        assert_eq!(records[0].jobs, 2);
        assert_eq!(records[1].used_calculations, 2e6);
        assert_eq!(records[1].utilization, 1.0);
        assert_eq!(s.jobs(), 0);
        assert_eq!(s.load(), 0.0);
        let totals = s.totals(Instant::from_secs_for_test(4));
        assert_eq!(totals.jobs_accepted, 2);
        assert_eq!(totals.utilization, 0.5);
        let clock = WallClock {
            unix_micros_at_zero: 1_000_000_000_000_000,
            utc_offset_secs: 0,
        };
        assert_eq!(
            records[1].vector_line("scenario.calcapppoolelement[0]", 42, 0x15, &clock),
            "000002 scenario.calcapppoolelement[0] 42 0x00000015 1000000002.000000   2.000000   2000000 2000000 1.000000   1 10"
        );
        let sca = totals.scalar_file("pe");
        assert!(sca.starts_with("run 1 \"scenario\"\n"));
        assert!(sca.contains("scalar \"pe\" \"CalcAppPE Total Jobs Accepted\"   2\n"));
        assert!(sca.contains("scalar \"pe\" \"CalcAppPE Utilization\"           0.500000\n"));
    }

    #[test]
    fn server_cookies_by_time_and_by_calculations() {
        let config = CalcAppServerConfig {
            keepalive_transmission_interval: Duration::from_secs(1000),
            ..Default::default()
        };
        let mut s = Server::new(config, Instant::ZERO);
        s.handle_data(Instant::ZERO, 1, &req(1, 12_000_000));
        drain(&mut s);
        let mut outs = Vec::new();
        run_until(&mut s, Instant::from_secs_for_test(13), &mut outs);
        let times: Vec<_> = outs
            .iter()
            .filter(|(_, o)| matches!(o, CalcAppServerOutput::SendCookie { .. }))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            times,
            vec![
                Instant::from_secs_for_test(5),
                Instant::from_secs_for_test(10)
            ]
        );
        let cs = cookies(&outs.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>());
        assert_eq!(
            cs[1],
            CalcAppCookie {
                job_id: 1,
                job_size: 12_000_000,
                completed: 10_000_000
            }
        );

        // [CAP 04] style: -capcookiemaxcalculations=100000 gives a cookie every 0.1 s.
        let config = CalcAppServerConfig {
            cookie_max_calculations: 100_000.0,
            keepalive_transmission_interval: Duration::from_secs(1000),
            ..Default::default()
        };
        let mut s = Server::new(config, Instant::ZERO);
        s.handle_data(Instant::ZERO, 1, &req(1, 1_000_000));
        drain(&mut s);
        let mut outs = Vec::new();
        run_until(&mut s, Instant::from_millis(950), &mut outs);
        let n = outs
            .iter()
            .filter(|(_, o)| matches!(o, CalcAppServerOutput::SendCookie { .. }))
            .count();
        assert_eq!(n, 9);
    }

    #[test]
    fn server_resumes_from_cookie_echo() {
        let config = CalcAppServerConfig {
            keepalive_transmission_interval: Duration::from_secs(1000),
            ..Default::default()
        };
        let mut s = Server::new(config, Instant::ZERO);
        // [CAP 04]: job 2, size 0x823046, completed 0x3a191d.
        let cookie = CalcAppCookie {
            job_id: 2,
            job_size: 0x82_3046,
            completed: 0x3a_191d,
        };
        s.handle_cookie_echo(Instant::ZERO, 9, &cookie.encode());
        let outs = drain(&mut s);
        assert_eq!(
            messages(&outs),
            vec![(9, CalcAppMessage::new(CalcAppType::Accept, 2))]
        );
        // RSPLIB counts calculations since the last cookie from 0, so the cookie's
        // Completed counts: the first cookie comes after 5 000 000 − 3 807 517 µs.
        let mut outs = Vec::new();
        run_until(&mut s, Instant::from_secs_for_test(10), &mut outs);
        assert!(matches!(
            outs[0],
            (t, CalcAppServerOutput::SendCookie { session: 9, .. })
                if t == Instant::from_micros(5_000_000 - 0x3a_191d)
        ));
        // A cookie with Completed ≥ cookie max calculations triggers one at once.
        s.handle_cookie_echo(
            Instant::from_secs_for_test(10),
            10,
            &CalcAppCookie {
                job_id: 3,
                job_size: 9_000_000,
                completed: 6_000_000,
            }
            .encode(),
        );
        drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(Instant::from_secs_for_test(10)));
        let left = 0x82_3046 - 0x3a_191d; // calculations at 1 per µs
        let complete = outs
            .iter()
            .find_map(|(t, o)| match o {
                CalcAppServerOutput::Send { data, .. } => {
                    let m = CalcAppMessage::decode(data).unwrap();
                    (m.ty == CalcAppType::Complete).then_some((*t, m))
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(complete.0, Instant::from_micros(left));
        assert_eq!(
            complete.1,
            CalcAppMessage::complete(2, 0x82_3046, 0x82_3046)
        );
    }

    #[test]
    fn server_keepalive_and_limits() {
        let config = CalcAppServerConfig {
            max_jobs: 1,
            ..Default::default()
        };
        let mut s = Server::new(config, Instant::ZERO);
        s.handle_data(Instant::ZERO, 1, &req(1, 100_000_000));
        s.handle_data(Instant::ZERO, 2, &req(1, 5));
        let outs = drain(&mut s);
        assert_eq!(
            messages(&outs),
            vec![
                (1, CalcAppMessage::new(CalcAppType::Accept, 1)),
                (2, CalcAppMessage::new(CalcAppType::Reject, 1)),
            ]
        );
        // PU keep-alive answered; unknown job ignored.
        s.handle_data(
            Instant::from_millis(100),
            1,
            &CalcAppMessage::new(CalcAppType::KeepAlive, 1).encode(),
        );
        s.handle_data(
            Instant::from_millis(100),
            1,
            &CalcAppMessage::new(CalcAppType::KeepAlive, 99).encode(),
        );
        s.handle_data(Instant::from_millis(100), 1, &[6, 0, 0]);
        s.handle_data(
            Instant::from_millis(100),
            1,
            &CalcAppMessage::new(CalcAppType::Abort, 1).encode(),
        );
        assert_eq!(
            messages(&drain(&mut s)),
            vec![(1, CalcAppMessage::new(CalcAppType::KeepAliveAck, 1))]
        );
        // PE keep-alive after 2.5 s; acknowledged once, then silence drops the job at
        // 2.5 + 2.5 + 2.5 s.
        let mut outs = Vec::new();
        run_until(&mut s, Instant::from_millis(2500), &mut outs);
        let msgs: Vec<_> = outs.iter().map(|(_, o)| o.clone()).collect();
        assert_eq!(
            messages(&msgs),
            vec![(1, CalcAppMessage::new(CalcAppType::KeepAlive, 1))]
        );
        s.handle_data(Instant::from_millis(2600), 1, &ka_ack(1));
        let mut outs = Vec::new();
        run_until(&mut s, Instant::from_millis(7599), &mut outs);
        assert_eq!(s.jobs(), 1);
        run_until(&mut s, Instant::from_millis(7600), &mut outs);
        assert_eq!(s.jobs(), 0, "dropped silently after the KA timeout");
        assert!(
            messages(&outs.into_iter().map(|(_, o)| o).collect::<Vec<_>>())
                .iter()
                .all(|(_, m)| m.ty == CalcAppType::KeepAlive)
        );
    }

    #[test]
    fn server_bad_cookie_aborts_and_shutdown_cookies() {
        let mut s = Server::new(CalcAppServerConfig::default(), Instant::ZERO);
        s.handle_cookie_echo(Instant::ZERO, 3, &[0; 19]);
        assert!(drain(&mut s).contains(&CalcAppServerOutput::Close {
            session: 3,
            mode: CloseMode::Abort
        }));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        s.handle_data(Instant::ZERO, 1, &req(1, 10_000_000));
        s.handle_data(Instant::ZERO, 2, &req(2, 10_000_000));
        drain(&mut s);
        s.handle_shutdown(Instant::from_secs_for_test(2), &mut rng);
        let cs = cookies(&drain(&mut s));
        assert_eq!(cs.len(), 2);
        assert!(cs.iter().all(|c| c.completed == 1_000_000));
        assert_eq!(s.jobs(), 0);

        let config = CalcAppServerConfig {
            clean_shutdown_probability: 0.0,
            ..Default::default()
        };
        let mut s = Server::new(config, Instant::ZERO);
        s.handle_data(Instant::ZERO, 1, &req(1, 10_000_000));
        drain(&mut s);
        s.handle_shutdown(Instant::from_secs_for_test(2), &mut rng);
        assert!(cookies(&drain(&mut s)).is_empty());
        // Session closed by the PU: job removed at once.
        s.handle_data(Instant::ZERO, 5, &req(1, 10_000_000));
        s.handle_session_closed(Instant::ZERO, 5);
        assert_eq!(s.jobs(), 0);
    }

    impl Instant {
        fn from_secs_for_test(s: u64) -> Instant {
            Instant::from_millis(s * 1000)
        }
    }

    // ---- client against in-memory PEs ------------------------------------------------

    /// A tiny session layer: one association at a time to one of `pes`, cookies stored and
    /// echoed on failover, messages delivered at once unless the PE is frozen.
    struct Harness {
        client: CalcAppClient<Xoshiro256PlusPlus>,
        pes: Vec<Server>,
        current: usize,
        frozen: Vec<bool>,
        cookie: Option<Bytes>,
        session: u32,
        now: Instant,
        events: Vec<CalcAppClientEvent>,
        failovers: Vec<bool>,
        connects: usize,
        closes: usize,
    }

    impl Harness {
        fn new(config: CalcAppClientConfig, pes: Vec<Server>) -> Harness {
            let n = pes.len();
            Harness {
                client: CalcAppClient::new(
                    config,
                    Xoshiro256PlusPlus::seed_from_u64(7),
                    Instant::ZERO,
                ),
                pes,
                current: 0,
                frozen: vec![false; n],
                cookie: None,
                session: 1,
                now: Instant::ZERO,
                events: Vec::new(),
                failovers: Vec::new(),
                connects: 0,
                closes: 0,
            }
        }

        fn pump(&mut self) {
            loop {
                let mut progress = false;
                while let Some(o) = self.client.poll_output() {
                    progress = true;
                    match o {
                        ServiceOutput::Send { data, .. } if !self.frozen[self.current] => {
                            self.pes[self.current].handle_data(self.now, self.session, &data);
                        }
                        ServiceOutput::Connect => {
                            self.connects += 1;
                            self.session += 1;
                            self.cookie = None;
                            self.current = (self.current + 1) % self.pes.len();
                            self.client.handle_event(self.now, SessionEvent::Up);
                        }
                        ServiceOutput::Close(_) => self.closes += 1,
                        ServiceOutput::Failover { report_unreachable } => {
                            self.failovers.push(report_unreachable);
                            self.session += 1;
                            self.current = (self.current + 1) % self.pes.len();
                            let echoed = self.cookie.is_some();
                            if let Some(c) = &self.cookie {
                                self.pes[self.current].handle_cookie_echo(
                                    self.now,
                                    self.session,
                                    c,
                                );
                            }
                            self.client.handle_event(
                                self.now,
                                SessionEvent::FailoverComplete {
                                    cookie_echoed: echoed,
                                },
                            );
                        }
                        ServiceOutput::Event(e) => self.events.push(e),
                        _ => {}
                    }
                }
                for i in 0..self.pes.len() {
                    while let Some(o) = self.pes[i].poll_output() {
                        progress = true;
                        if self.frozen[i] || i != self.current {
                            continue;
                        }
                        match o {
                            CalcAppServerOutput::Send { session, data }
                                if session == self.session =>
                            {
                                self.client.handle_data(self.now, PPID_CALCAPP, 0, data)
                            }
                            CalcAppServerOutput::SendCookie { session, cookie }
                                if session == self.session =>
                            {
                                self.cookie = Some(cookie)
                            }
                            CalcAppServerOutput::Close { session, .. }
                                if session == self.session =>
                            {
                                self.client
                                    .handle_event(self.now, SessionEvent::FailoverNecessary)
                            }
                            _ => {}
                        }
                    }
                }
                if !progress {
                    break;
                }
            }
        }

        fn run_until(&mut self, until: Instant) {
            self.pump();
            loop {
                let mut next = self.client.poll_timeout();
                for (i, pe) in self.pes.iter().enumerate() {
                    if !self.frozen[i] {
                        next = match (next, pe.poll_timeout()) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
                let Some(t) = next else { break };
                if t > until {
                    break;
                }
                self.now = self.now.max(t);
                self.client.handle_timeout(self.now);
                for (i, pe) in self.pes.iter_mut().enumerate() {
                    if !self.frozen[i] {
                        pe.handle_timeout(self.now);
                    }
                }
                self.pump();
            }
            self.now = until;
        }

        fn completed(&self) -> Vec<CalcAppJobRecord> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    CalcAppClientEvent::JobCompleted(r) => Some(*r),
                    _ => None,
                })
                .collect()
        }
    }

    fn fast_server() -> Server {
        Server::new(
            CalcAppServerConfig {
                cookie_max_calculations: 100_000.0,
                ..Default::default()
            },
            Instant::ZERO,
        )
    }

    #[test]
    fn client_completes_jobs_without_failover() {
        let config = CalcAppClientConfig {
            job_interval: Duration::from_secs(10),
            job_size: 2_000_000.0,
            runtime: Duration::from_secs(200),
            ..Default::default()
        };
        let mut h = Harness::new(config, vec![fast_server(), fast_server()]);
        h.run_until(Instant::from_secs_for_test(200));
        let done = h.completed();
        let t = h.client.totals();
        assert!(done.len() >= 10, "{} jobs", done.len());
        assert_eq!(t.jobs_completed as usize, done.len());
        assert_eq!(t.completes, t.jobs_completed);
        assert_eq!(t.failovers, 0);
        assert_eq!(t.rejects, 0);
        // Every job ran alone on an idle PE: processing time = size / capacity (±1 µs).
        for r in &done {
            let expected = r.job_size / 1e6;
            let got = r.processing_time.as_micros() as f64 / 1e6;
            assert!((got - expected).abs() <= 2e-6, "{r:?}");
            assert_eq!(
                r.handling_time,
                r.queuing_delay + r.startup_delay + r.processing_time
            );
        }
        assert!(matches!(
            h.events.last(),
            Some(CalcAppClientEvent::Finished(_))
        ));
        assert!(h.client.is_finished());
        assert_eq!(h.client.poll_timeout(), None);
        let line = done[0].vector_line("scenario.calcapppooluser[0]", 1, &WallClock::default());
        assert!(line.starts_with(&format!(
            "000001 scenario.calcapppooluser[0] 1 {} ",
            done[0].job_id
        )));
        let sca = t.scalar_file("pu");
        assert!(sca.contains(&format!(
            "scalar \"pu\" \"CalcAppPU Total Jobs Completed\"       {}\n",
            t.jobs_completed
        )));
    }

    #[test]
    fn client_job_survives_failover_with_cookie() {
        let config = CalcAppClientConfig {
            job_interval: Duration::from_secs(1000),
            job_size: 20_000_000.0,
            runtime: Duration::from_secs(3000),
            ..Default::default()
        };
        let mut h = Harness::new(config, vec![fast_server(), fast_server(), fast_server()]);
        // Run until the first job is on a PE and has made progress, then freeze that PE.
        while h.client.current_job().is_none() || h.cookie.is_none() {
            let t = h.now + Duration::from_millis(500);
            h.run_until(t);
        }
        let (job_id, size) = h.client.current_job().unwrap();
        assert!(size > 1_000_000.0, "job size {size}");
        let frozen_at = h.now;
        let pe = h.current;
        h.frozen[pe] = true;
        h.run_until(frozen_at + Duration::from_secs(2000));
        let done = h.completed();
        let first = done.iter().find(|r| r.job_id == job_id).unwrap();
        assert_eq!(first.job_size, size);
        let t = h.client.totals();
        assert_eq!(h.failovers, vec![true], "keep-alive timeout reports the PE");
        assert_eq!(t.failovers, 1);
        assert_eq!(
            t.accepts,
            t.jobs_completed + 1,
            "one ACCEPT from the cookie echo"
        );
        assert_eq!(
            t.requests, t.jobs_started,
            "no REQUEST re-sent: the cookie resumed it"
        );
        // The job resumed: it finished well before a restart from scratch would have.
        let restart_bound = frozen_at + Duration::from_micros(size as u64 + 11_000_000);
        assert!(first.completed_at < restart_bound);
        assert!(
            first.accepted_at > frozen_at,
            "AcceptTimeStamp is the last ACCEPT's"
        );
    }

    #[test]
    fn client_reject_without_cookie_waits_and_retries() {
        let config = CalcAppClientConfig {
            job_interval: Duration::from_secs(1000),
            job_size: 1_000_000.0,
            runtime: Duration::from_secs(5000),
            ..Default::default()
        };
        let full = CalcAppServerConfig {
            max_jobs: 1,
            keepalive_transmission_interval: Duration::from_secs(100_000),
            ..Default::default()
        };
        let mut busy = Server::new(full, Instant::ZERO);
        busy.handle_data(Instant::ZERO, 999, &req(1, u64::MAX / 4));
        drain(&mut busy);
        // Connect goes to PE index 1 (busy), failover to PE 2 (free).
        let mut h = Harness::new(config, vec![fast_server(), busy, fast_server()]);
        h.frozen[0] = false;
        while h.client.totals().rejects == 0 {
            let t = h.now + Duration::from_millis(100);
            h.run_until(t);
            assert!(h.now < Instant::from_secs_for_test(5000));
        }
        let rejected_at = h.now;
        let requests = h.client.totals().requests;
        h.run_until(rejected_at + Duration::from_millis(900));
        assert_eq!(h.client.totals().requests, requests, "waits 1 s");
        h.run_until(rejected_at + Duration::from_millis(1100));
        assert_eq!(h.client.totals().requests, requests + 1);
        h.run_until(rejected_at + Duration::from_secs(100));
        assert_eq!(h.client.totals().jobs_completed, 1);
        assert_eq!(h.failovers, vec![false]);
    }

    #[test]
    fn client_job_id_mismatch_retries_on_new_session() {
        let config = CalcAppClientConfig {
            job_interval: Duration::from_secs(1),
            ..Default::default()
        };
        let mut c = CalcAppClient::new(config, Xoshiro256PlusPlus::seed_from_u64(3), Instant::ZERO);
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        let outs: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        assert!(outs.contains(&ServiceOutput::Connect));
        c.handle_event(t, SessionEvent::Up);
        let outs: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        let (job_id, size) = c.current_job().unwrap();
        assert!(outs.contains(&ServiceOutput::Send {
            ppid: PPID_CALCAPP,
            stream: 0,
            data: CalcAppMessage::request(job_id, size as u64).encode()
        }));
        c.handle_data(
            t,
            PPID_CALCAPP,
            0,
            CalcAppMessage::new(CalcAppType::Accept, job_id + 1).encode(),
        );
        let outs: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        assert!(outs.contains(&ServiceOutput::Close(CloseMode::Shutdown)));
        assert!(outs.contains(&ServiceOutput::Connect));
        assert_eq!(c.current_job(), Some((job_id, size)), "same job again");
        assert_eq!(c.totals().jobs_started, 1, "a retrial is not a new start");
        // Accept timeout without a reply → failover reporting the PE.
        c.handle_event(t, SessionEvent::Up);
        let _: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        let deadline = t + Duration::from_secs(5);
        c.handle_timeout(deadline - Duration::from_micros(1));
        let outs: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        assert!(
            !outs
                .iter()
                .any(|o| matches!(o, ServiceOutput::Failover { .. }))
        );
        c.handle_timeout(deadline);
        let outs: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        assert!(outs.contains(&ServiceOutput::Failover {
            report_unreachable: true
        }));
        // Without a cookie the REQUEST goes to the new PE at once.
        c.handle_event(
            deadline,
            SessionEvent::FailoverComplete {
                cookie_echoed: false,
            },
        );
        let outs: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        assert!(outs.iter().any(|o| matches!(o, ServiceOutput::Send { .. })));
        assert_eq!(c.totals().requests, 3);
    }

    #[test]
    fn client_survives_pe_failure_tester() {
        // Every PE aborts a job's session after its 2nd cookie: the job hops from PE to
        // PE via cookie echoes and still completes with its full size.
        let pe = || {
            Server::new(
                CalcAppServerConfig {
                    cookie_max_calculations: 1_000_000.0,
                    failure_after_cookies: 2,
                    ..Default::default()
                },
                Instant::ZERO,
            )
        };
        let config = CalcAppClientConfig {
            job_interval: Duration::from_secs(10_000),
            job_size: 10_000_000.0,
            runtime: Duration::from_secs(40_000),
            ..Default::default()
        };
        let mut h = Harness::new(config, vec![pe(), pe(), pe()]);
        h.run_until(Instant::from_secs_for_test(40_000));
        let t = h.client.totals();
        assert!(t.jobs_completed >= 1);
        assert!(t.failovers >= 1, "{t:?}");
        assert!(
            h.failovers.iter().all(|r| !r),
            "FAILOVER_NECESSARY does not report"
        );
        assert_eq!(t.requests, t.jobs_started, "cookies resumed every job");
        for r in h.completed() {
            assert!(r.job_size > 0.0);
        }
    }

    #[test]
    fn client_follows_automatic_failover() {
        let config = CalcAppClientConfig {
            job_interval: Duration::from_secs(1),
            ..Default::default()
        };
        let mut c = CalcAppClient::new(config, Xoshiro256PlusPlus::seed_from_u64(3), Instant::ZERO);
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        c.handle_event(t, SessionEvent::Up);
        let (job_id, _) = c.current_job().unwrap();
        c.handle_data(
            t,
            PPID_CALCAPP,
            0,
            CalcAppMessage::new(CalcAppType::Accept, job_id).encode(),
        );
        let _: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        c.handle_event(t, SessionEvent::FailoverStarted);
        let outs: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        assert!(
            !outs
                .iter()
                .any(|o| matches!(o, ServiceOutput::Failover { .. }))
        );
        // No cookie on the new PE: the REQUEST is sent again.
        c.handle_event(
            t,
            SessionEvent::FailoverComplete {
                cookie_echoed: false,
            },
        );
        let outs: Vec<_> = std::iter::from_fn(|| c.poll_output()).collect();
        assert!(
            outs.iter()
                .any(|o| matches!(o, ServiceOutput::Send { data, .. }
            if CalcAppMessage::decode(data).unwrap().ty == CalcAppType::Request))
        );
        assert_eq!(c.totals().failovers, 1);
    }
}
