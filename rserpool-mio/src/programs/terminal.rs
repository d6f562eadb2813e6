//! `rspterminal`: standard input to a pool, the answers to standard output, over a
//! [`PoolUserSession`] on the mio [`Driver`].
//!
//! * Every input **line** (up to and including its `\n`) is one message, PPID 0, stream 0.
//!   (RSPLIB sends whatever one `read()` returned, so a pipe may give several lines in one
//!   message.)
//! * Every data message received is printed as RSPLIB does: `from PE $xxxxxxxx> text`, with
//!   trailing control characters cut and other bytes below 30 shown as `.`
//!   ([`rspterminal_line`]).
//! * **Failover is transparent and loses no line** (`rsplib-measured.md` defect 3): the
//!   session keeps every line not yet answered ([`ReplayPolicy::UntilAcknowledged`], one
//!   answer acknowledges one line) and sends it again to the next PE right after the
//!   connection is up. A PE that stops answering is left after `-responsetimeout=` (5 s; off
//!   for `DiscardPool`). Failovers are reported on standard error and counted.
//! * At the end of standard input the program exits once every line has been answered, or
//!   when nothing has been answered for [`EOF_LINGER`] (RSPLIB never exits at the end of
//!   piped input, `services.md` §10 item 13). A summary goes to standard error.
//! * SIGINT/SIGTERM close the session and exit.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use bytes::Bytes;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::Instant;
use rserpool_core::pool_user::PoolUserConfig;
use rserpool_core::services::simple::rspterminal_line;
use rserpool_core::session::{
    PoolUserSession, PoolUserSessionConfig, ReplayPolicy, SendError, SessionEvent,
};
use rserpool_proto::csp::{ComponentId, Workload, session_status_text};
use rserpool_proto::ids::PeIdentifier;
use tracing::{debug, warn};

use super::common::{
    add_udp_or_warn, announce_receiver, init_logging_or_exit, library_mode, library_transport,
    os_rng, pool_user_transport, registrar_table_config,
};
use crate::cli::{RspTerminalOptions, process_env};
use crate::driver::{
    AppControl, Application, CspConfig, CspReporter, CspStatus, Driver, DriverConfig, Step,
    component_location,
};

/// After the end of input: how long to wait for outstanding answers without any progress.
pub const EOF_LINGER: Duration = Duration::from_secs(5);
/// Most lines in flight without an answer while answers are expected (beyond it, input is
/// read once answers come back): keeps every unanswered line in the replay buffer.
pub const WINDOW: u64 = 1024;

/// The session machine of `rspterminal`.
pub type TerminalSession = PoolUserSession<Xoshiro256PlusPlus>;

/// One line read from standard input.
#[derive(Debug)]
pub enum Input {
    /// A line (with its `\n`, if it had one).
    Line(Bytes),
    /// End of input (or a read error, logged).
    Eof,
}

/// Reads lines on a thread of its own and hands them over through a bounded channel, waking
/// the event loop with `waker` (standard input cannot be made non-blocking without `unsafe`).
///
/// The caller must keep its own reference to `waker` while it polls: the thread ends at the
/// end of input, and if it dropped the last reference, the eventfd would be closed — taking
/// its last, still undelivered wake-up out of the poll set with it.
pub fn spawn_line_reader(
    input: impl BufRead + Send + 'static,
    waker: Arc<mio::Waker>,
) -> io::Result<Receiver<Input>> {
    let (tx, rx) = sync_channel::<Input>(WINDOW as usize);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(input, &tx, &waker))?;
    Ok(rx)
}

/// The longest message one input line becomes (RSPLIB reads at most this much per message);
/// a longer line is sent as several messages.
pub const MAX_LINE: usize = 65_536;

/// The next line of `input` (up to and including `\n`), at most [`MAX_LINE`] bytes; an empty
/// vector at the end of input.
pub fn read_line(input: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let (done, used) = {
            let buf = match input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(line);
            }
            let room = MAX_LINE - line.len();
            let window = &buf[..buf.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&window[..=i]);
                    (true, i + 1)
                }
                None => {
                    line.extend_from_slice(window);
                    (line.len() >= MAX_LINE, window.len())
                }
            }
        };
        input.consume(used);
        if done {
            return Ok(line);
        }
    }
}

fn read_lines(mut input: impl BufRead, tx: &SyncSender<Input>, waker: &mio::Waker) {
    loop {
        let item = match read_line(&mut input) {
            Ok(line) if line.is_empty() => Input::Eof,
            Ok(line) => Input::Line(Bytes::from(line)),
            Err(e) => {
                warn!("reading standard input: {e}");
                Input::Eof
            }
        };
        let eof = matches!(item, Input::Eof);
        if eof {
            debug!("standard input ended");
        }
        if tx.send(item).is_err() {
            return;
        }
        if let Err(e) = waker.wake() {
            warn!("cannot wake the event loop: {e}");
        }
        if eof {
            return;
        }
    }
}

/// Counters of a terminal run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalStats {
    /// Lines sent.
    pub lines: u64,
    /// Data messages received.
    pub answers: u64,
    /// Failovers started.
    pub failovers: u64,
    /// Lines sent again to a new PE.
    pub replayed: u64,
}

/// The `rspterminal` application around the session.
pub struct Terminal<W: Write> {
    pool: rserpool_proto::ids::PoolHandle,
    input: Receiver<Input>,
    held: VecDeque<Bytes>,
    out: W,
    expect_answers: bool,
    started: bool,
    eof: bool,
    pe: Option<PeIdentifier>,
    last_progress: Instant,
    stats: TerminalStats,
    notices: bool,
}

impl<W: Write> Terminal<W> {
    /// A terminal for `pool`, reading lines from `input`, writing answers to `out`. With
    /// `expect_answers`, at most [`WINDOW`] lines are unanswered at once. `notices` prints
    /// connection and failover notices on standard error.
    pub fn new(
        pool: rserpool_proto::ids::PoolHandle,
        input: Receiver<Input>,
        out: W,
        expect_answers: bool,
        notices: bool,
    ) -> Self {
        Terminal {
            pool,
            input,
            held: VecDeque::new(),
            out,
            expect_answers,
            started: false,
            eof: false,
            pe: None,
            last_progress: Instant::ZERO,
            stats: TerminalStats::default(),
            notices,
        }
    }

    /// The counters.
    pub fn stats(&self) -> TerminalStats {
        self.stats
    }

    /// A status line on standard error, formatted first and written with one system call
    /// (`eprintln!` on the unbuffered stderr writes each piece on its own: seven writes
    /// for a failover notice, on the failover's critical path).
    fn notice(&self, text: std::fmt::Arguments<'_>) {
        if self.notices {
            let line = format!("*** {text} ***\n");
            let _ = io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn on_event(&mut self, session: &mut TerminalSession, now: Instant, e: SessionEvent) {
        match e {
            SessionEvent::Connected { pe_id } => {
                self.pe = Some(pe_id);
                self.last_progress = now;
                self.notice(format_args!("connected to PE ${:08x}", pe_id.0));
            }
            SessionEvent::Data { data, .. } => {
                self.stats.answers += 1;
                tracing::trace!("answer {} of {}", self.stats.answers, self.stats.lines);
                self.last_progress = now;
                session.acknowledge(1);
                let pe = self.pe.map_or(0, |p| p.0);
                let r = writeln!(self.out, "{}", rspterminal_line(pe, &data))
                    .and_then(|()| self.out.flush());
                if let Err(e) = r {
                    debug!("standard output: {e}");
                }
            }
            SessionEvent::FailoverStarted { pe_id, reason } => {
                self.stats.failovers += 1;
                self.pe = None;
                self.notice(format_args!(
                    "failover: left PE ${:08x} ({reason:?})",
                    pe_id.0
                ));
            }
            SessionEvent::FailoverComplete {
                pe_id,
                has_cookie,
                replayed,
            } => {
                self.pe = Some(pe_id);
                self.last_progress = now;
                self.stats.replayed += replayed as u64;
                self.notice(format_args!(
                    "failover complete: now on PE ${:08x} ({replayed} line(s) sent again{})",
                    pe_id.0,
                    if has_cookie { ", cookie echoed" } else { "" }
                ));
            }
            SessionEvent::CookieReceived => {}
            SessionEvent::Failed { cause } => {
                self.notice(format_args!("session failed: {cause:?}"));
            }
            SessionEvent::Closed => {}
        }
    }

    /// Sends what standard input gave, as far as the session and the window take it.
    fn pump_input(&mut self, session: &mut TerminalSession, now: Instant) {
        loop {
            if self.expect_answers && self.stats.lines.saturating_sub(self.stats.answers) >= WINDOW
            {
                return;
            }
            let line = match self.held.pop_front() {
                Some(l) => l,
                None => match self.input.try_recv() {
                    Ok(Input::Line(l)) => l,
                    Ok(Input::Eof) => {
                        if !self.eof {
                            debug!(
                                "end of input: {} line(s) sent, {} answered",
                                self.stats.lines, self.stats.answers
                            );
                            self.eof = true;
                            self.last_progress = now;
                        }
                        return;
                    }
                    Err(_) => return,
                },
            };
            match session.send(now, 0, line.clone()) {
                Ok(()) => self.stats.lines += 1,
                Err(SendError::QueueFull) => {
                    self.held.push_front(line);
                    return;
                }
                Err(e) => {
                    warn!("line not sent: {e}");
                    return;
                }
            }
        }
    }

    /// True once standard input ended and every line went out to a PE and was answered
    /// (without expected answers: went out), or nothing happened for [`EOF_LINGER`].
    fn finished(&self, session: &TerminalSession, now: Instant) -> bool {
        if !self.eof || !self.held.is_empty() {
            return false;
        }
        let sent = self.stats.lines == 0
            || (session.pending_len() == 0
                && session.state() == rserpool_core::session::SessionState::Connected);
        (sent && (!self.expect_answers || self.stats.answers >= self.stats.lines))
            || now.saturating_duration_since(self.last_progress) >= EOF_LINGER
    }
}

impl<W: Write> Application<TerminalSession> for Terminal<W> {
    fn on_step(&mut self, step: &mut Step<'_, TerminalSession>) -> AppControl {
        let now = step.now;
        if !self.started {
            self.started = true;
            self.last_progress = now;
            step.machine.connect(now, self.pool.clone());
        }
        for e in std::mem::take(step.events) {
            self.on_event(step.machine, now, e);
        }
        self.pump_input(step.machine, now);
        if self.finished(step.machine, now) {
            return AppControl::Shutdown;
        }
        if self.eof {
            let t = self.last_progress + EOF_LINGER;
            *step.wakeup = Some(step.wakeup.map_or(t, |w| w.min(t)));
        }
        AppControl::Continue
    }

    fn begin_shutdown(&mut self, machine: &mut TerminalSession, now: Instant) {
        machine.close(now);
    }
}

fn csp_status(s: &TerminalSession, assocs: &crate::driver::AssocTable, now: Instant) -> CspStatus {
    let (connected, associations) = super::services::pu::session_csp_associations(s, assocs, now);
    let status = if s.pool_user().registrar_table().is_hunting() {
        rserpool_proto::csp::StatusText::from("Looking for Registrar ...")
    } else {
        session_status_text(u32::from(connected))
    };
    CspStatus {
        status,
        workload: Workload::UNKNOWN,
        associations,
    }
}

/// `rspterminal` with parsed options.
pub fn main_with(opts: RspTerminalOptions) -> ExitCode {
    init_logging_or_exit("rspterminal", &opts.library.log);
    match run(&opts) {
        Ok(stats) => {
            eprintln!(
                "rspterminal: {} line(s) sent, {} answer(s), {} failover(s), {} line(s) sent again",
                stats.lines, stats.answers, stats.failovers, stats.replayed
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::common::fail("rspterminal", &e),
    }
}

/// The session configuration of `rspterminal`.
pub fn session_config(opts: &RspTerminalOptions) -> PoolUserSessionConfig {
    let lib = &opts.library;
    let mode = library_mode(lib);
    PoolUserSessionConfig {
        pool_user: PoolUserConfig {
            registrar_table: registrar_table_config(lib, mode),
            request_timeout: lib.registrar_response_timeout,
            request_max_trials: lib.registrar_request_max_trials,
            ..PoolUserConfig::default()
        },
        response_timeout: opts.effective_response_timeout(),
        replay: ReplayPolicy::UntilAcknowledged,
        // RSPLIB's rspterminal never reports a PE; a PE that closes (Daytime) may be used
        // again, a killed one is avoided while others are there.
        report_shutdown: false,
        standby_refresh: lib.standby_refresh(Some(super::common::INTERACTIVE_STANDBY_REFRESH)),
        ..PoolUserSessionConfig::default()
    }
}

fn run(opts: &RspTerminalOptions) -> io::Result<TerminalStats> {
    let lib = &opts.library;
    let config = session_config(opts);
    let expect_answers = config.response_timeout.is_some();
    let dcfg = DriverConfig {
        mode: library_mode(lib),
        transport: pool_user_transport(library_transport(lib)?),
        signals: true,
        shutdown_grace: Duration::from_secs(2),
        ..DriverConfig::default()
    };
    let mut driver = Driver::new(dcfg, |_, _| PoolUserSession::new(config, os_rng()))?;
    if let Some(u) = announce_receiver(lib) {
        add_udp_or_warn(&mut driver, &u, "registrar announces");
    }
    if let Some(target) = lib.csp.resolve_library(&process_env) {
        let object = match lib.csp_identifier {
            Some(id) => u64::from(id),
            None => {
                use rand_xoshiro::rand_core::Rng;
                os_rng().next_u64() & ComponentId::OBJECT_MASK
            }
        };
        let reporter = CspReporter::new(CspConfig::from_target(
            target,
            ComponentId::pool_user(object),
            component_location(&[], false),
        ))?;
        driver.enable_csp(reporter, csp_status);
    }
    let token = driver
        .app_token(0)
        .ok_or_else(|| io::Error::other("no application token"))?;
    // Kept until the loop ends (see spawn_line_reader).
    let waker = Arc::new(mio::Waker::new(driver.registry(), token)?);
    let input = spawn_line_reader(io::BufReader::new(io::stdin()), Arc::clone(&waker))?;
    let mut term = Terminal::new(
        opts.pool_handle.clone(),
        input,
        io::stdout(),
        expect_answers,
        true,
    );
    driver.run_app(&mut term)?;
    drop(waker);
    Ok(term.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_bounded() {
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        let mut input: Vec<u8> = b"a\nbc\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"tail");
        // A tiny buffer: lines span many fill_buf calls.
        let mut r = io::BufReader::with_capacity(7, &input[..]);
        assert_eq!(read_line(&mut r).unwrap(), b"a\n");
        assert_eq!(read_line(&mut r).unwrap(), b"bc\n");
        assert_eq!(read_line(&mut r).unwrap().len(), MAX_LINE);
        assert_eq!(read_line(&mut r).unwrap(), b"xxxxxxxxxx\n");
        assert_eq!(read_line(&mut r).unwrap(), b"tail");
        assert!(read_line(&mut r).unwrap().is_empty());
    }
}
