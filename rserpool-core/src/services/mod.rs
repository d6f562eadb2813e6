//! RSPLIB's example services and their clients as sans-IO machines
//! (`shared/spec/services.md`).
//!
//! Every machine here does the application part only. The session layer (ASAP control
//! channel, cookies on PPID 11, failover) and the transport belong to the driver; a machine
//! sees the data messages of one session, the cookie echo's *content*, a few session
//! events, and the time. Binaries move bytes between the two.
//!
//! # Shape
//! Per-session machines implement [`ServiceSession`]:
//! * inputs: [`handle_data`](ServiceSession::handle_data) (one whole data message, any
//!   PPID ≠ 11), [`handle_cookie_echo`](ServiceSession::handle_cookie_echo) (PE side),
//!   [`handle_event`](ServiceSession::handle_event) ([`SessionEvent`]: session up,
//!   flow control, failover notifications, …), [`handle_timeout`](ServiceSession::handle_timeout);
//! * outputs: drain [`poll_output`](ServiceSession::poll_output) until `None` after every
//!   input ([`ServiceOutput`]: send data, send a cookie, close, connect, fail over, load,
//!   log lines, service events), then ask [`poll_timeout`](ServiceSession::poll_timeout)
//!   and call `handle_timeout` once that instant has come. An instant in the past means
//!   "call me now" (compute-bound machines such as the fractal generator work in bounded
//!   steps that way).
//!
//! The CalcApp PE ([`calcapp::CalcAppServer`]) serves all sessions of a one-to-many socket
//! in one machine (its capacity is shared among the jobs), so its inputs and outputs carry a
//! session key.
//!
//! # Flow control
//! Machines that can produce data faster than a transport takes it (character generator,
//! fractal generator, scripting upload/download) stop producing after
//! [`SessionEvent::Blocked`] and resume on [`SessionEvent::Writable`]. The driver reports
//! `Blocked` when it had to queue a message it polled, and `Writable` when its queue has
//! drained. The character generator in addition produces only a bounded burst per
//! `Up`/`Writable` event, so a driver that never blocks still gets control back.
//!
//! # Driving the machines with [`crate::session`]
//! PE side ([`crate::session::PoolElementSessions`], one machine per session id):
//! `SessionOpened` → [`SessionEvent::Up`], `Data` → `handle_data` (stream 0),
//! `CookieEcho` → `handle_cookie_echo`, `SessionClosed` → [`SessionEvent::PeerClosed`];
//! [`ServiceOutput::Send`] → `send` (a `QueueFull` error → [`SessionEvent::Blocked`]),
//! [`ServiceOutput::SendCookie`] → `send_cookie`, [`ServiceOutput::Close`] → `close` /
//! `abort`, [`ServiceOutput::Load`] → sum over the sessions, then `set_load`.
//!
//! PU side ([`crate::session::PoolUserSession`]): `Connected` → [`SessionEvent::Up`],
//! `Data` → `handle_data`, `FailoverStarted` → [`SessionEvent::FailoverStarted`],
//! `FailoverComplete { has_cookie }` → [`SessionEvent::FailoverComplete`], `Failed` →
//! [`SessionEvent::FailoverNecessary`]; [`ServiceOutput::Failover`] → `force_failover`,
//! [`ServiceOutput::Connect`] → `close` + `connect` (CalcApp: one session per job).
//! These clients resend what they need themselves after a failover, so the session's
//! replay policy should be `ReplayPolicy::None`.
//!
//! # Modules
//! * [`simple`]: Echo, Discard, Daytime, Character Generator (and `rspterminal` output);
//! * [`pingpong`]: Ping Pong PE and `pingpongclient`;
//! * [`calcapp`]: CalcApp PE and `calcappclient`, with their statistics records;
//! * [`fractal`]: fractal generator PE, `fractalpooluser` logic, framebuffer and palette;
//! * [`scripting`]: scripting PE and `scriptingclient`, environment cache, host traits;
//! * [`sha1`]: SHA-1 (the scripting service names environments by it).

use bytes::Bytes;
use core::time::Duration;
use std::collections::VecDeque;

use crate::time::Instant;

pub mod calcapp;
pub mod fractal;
pub mod pingpong;
pub mod scripting;
pub mod sha1;
pub mod simple;

pub use rserpool_proto::services::{
    PPID_CALCAPP, PPID_FGP, PPID_PINGPONG, PPID_RSPLIB_SIMPLE, PPID_SCRIPTING,
};

/// The PPID of ASAP; never a data message.
pub const PPID_ASAP: u32 = 11;

/// How a machine wants its session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseMode {
    /// Graceful (SCTP SHUTDOWN / `SCTP_EOF`): queued data is delivered first.
    Shutdown,
    /// Abortive (SCTP ABORT).
    Abort,
}

/// Severity of a [`ServiceOutput::Log`] line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something unexpected that the machine handled.
    Warning,
    /// Normal progress (what RSPLIB prints to stdout).
    Info,
    /// Details.
    Debug,
}

/// Something that happened to the session, reported by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionEvent {
    /// The session is established (PE: new association from a PU, RSPLIB's SESSION_ADD /
    /// `rsp_accept`; PU: `rsp_connect` reached a PE, or after [`ServiceOutput::Connect`]).
    Up,
    /// The transport queue is full: stop producing data until [`SessionEvent::Writable`].
    Blocked,
    /// The transport can take more data.
    Writable,
    /// A send failed (RSPLIB: `rsp_sendmsg` < 0).
    SendFailed,
    /// PE: the PU closed or aborted the session, or the association broke. The machine
    /// produces nothing afterwards except log lines.
    PeerClosed,
    /// PU: the session layer's RSERPOOL_FAILOVER / NECESSARY (PE closed, association lost,
    /// failed send, or a previous failover did not reach any PE).
    FailoverNecessary,
    /// PU: the session layer left the PE *on its own* and is already looking for another
    /// (a session layer that fails over automatically, e.g. [`crate::session`]'s
    /// `FailoverStarted`). The machine does not request a failover; `FailoverComplete` or
    /// `FailoverNecessary` follows. Ignored while the machine's own failover is under way.
    FailoverStarted,
    /// PU: the session is connected to a (new) PE; `cookie_echoed` tells whether the stored
    /// cookie was sent to it as ASAP_COOKIE_ECHO (RSPLIB's `rf_has_cookie`).
    FailoverComplete {
        /// A cookie was echoed to the new PE.
        cookie_echoed: bool,
    },
    /// PE: the server is shutting down (SIGINT, runtime limit).
    ServerShutdown,
}

/// What a machine asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceOutput<E> {
    /// Send one data message on the session.
    Send {
        /// SCTP payload protocol identifier.
        ppid: u32,
        /// SCTP stream.
        stream: u16,
        /// The whole message.
        data: Bytes,
    },
    /// PE: send this cookie content in an ASAP_COOKIE (PPID 11, stream 0).
    SendCookie(Bytes),
    /// End the session.
    Close(CloseMode),
    /// PU: open a new session to the pool (the driver answers with [`SessionEvent::Up`] or
    /// [`SessionEvent::FailoverNecessary`]).
    Connect,
    /// PU: move the session to another PE (`rsp_forcefailover`). With
    /// `report_unreachable` the old PE is reported to the registrar first
    /// (`FFF_UNREACHABLE`). The driver answers with [`SessionEvent::FailoverComplete`] or,
    /// if no PE could be reached, [`SessionEvent::FailoverNecessary`].
    Failover {
        /// Report the current PE with ASAP_ENDPOINT_UNREACHABLE.
        report_unreachable: bool,
    },
    /// PE: this session's share of the PE's load, 0 … 1 (the driver sums the sessions and
    /// re-registers when the total changed by ≥ 0.01 with an adaptive policy).
    Load(f64),
    /// A log line.
    Log {
        /// Severity.
        level: LogLevel,
        /// Text (no trailing newline).
        message: String,
    },
    /// A service-specific event for the application (results, statistics records).
    Event(E),
}

/// One per-session service machine (see the module documentation for the call order).
pub trait ServiceSession {
    /// Service-specific events carried by [`ServiceOutput::Event`].
    type Event;

    /// A whole data message (PPID ≠ 11) arrived.
    fn handle_data(&mut self, now: Instant, ppid: u32, stream: u16, data: Bytes);
    /// PE: the session's ASAP_COOKIE_ECHO arrived (its Cookie TLV content). Deliver it as
    /// soon as it arrives, not lazily as RSPLIB does.
    fn handle_cookie_echo(&mut self, now: Instant, cookie: Bytes);
    /// A session event.
    fn handle_event(&mut self, now: Instant, event: SessionEvent);
    /// The instant from [`poll_timeout`](Self::poll_timeout) has come.
    fn handle_timeout(&mut self, now: Instant);
    /// The next thing to do, `None` when nothing is pending.
    fn poll_output(&mut self) -> Option<ServiceOutput<Self::Event>>;
    /// When to call [`handle_timeout`](Self::handle_timeout); an instant not after the last
    /// input's `now` means "as soon as possible".
    fn poll_timeout(&self) -> Option<Instant>;
    /// True once the machine has ended its session (after its last output).
    fn is_finished(&self) -> bool;
}

impl<T: ServiceSession + ?Sized> ServiceSession for Box<T> {
    type Event = T::Event;

    fn handle_data(&mut self, now: Instant, ppid: u32, stream: u16, data: Bytes) {
        (**self).handle_data(now, ppid, stream, data)
    }
    fn handle_cookie_echo(&mut self, now: Instant, cookie: Bytes) {
        (**self).handle_cookie_echo(now, cookie)
    }
    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        (**self).handle_event(now, event)
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now)
    }
    fn poll_output(&mut self) -> Option<ServiceOutput<Self::Event>> {
        (**self).poll_output()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn is_finished(&self) -> bool {
        (**self).is_finished()
    }
}

/// A wall clock for the machines that print or send real time (Daytime, Ping Pong's
/// timestamps, statistics records), derived from [`Instant`] without reading a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WallClock {
    /// Microseconds since the Unix epoch at [`Instant::ZERO`].
    pub unix_micros_at_zero: u64,
    /// Local time offset from UTC in seconds (the driver takes it from the OS when it
    /// creates the machine; RSPLIB prints local time).
    pub utc_offset_secs: i32,
}

impl WallClock {
    /// Microseconds since the Unix epoch at `now`.
    pub fn unix_micros(&self, now: Instant) -> u64 {
        self.unix_micros_at_zero.saturating_add(now.as_micros())
    }

    /// The local civil time at `now`.
    pub fn local_time(&self, now: Instant) -> CivilTime {
        let us = i128::from(self.unix_micros(now)) + i128::from(self.utc_offset_secs) * 1_000_000;
        CivilTime::from_unix_micros(i64::try_from(us).unwrap_or(i64::MAX))
    }
}

/// A proleptic Gregorian date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CivilTime {
    /// Year.
    pub year: i64,
    /// Month, 1 … 12.
    pub month: u8,
    /// Day of the month, 1 … 31.
    pub day: u8,
    /// Day of the week, 0 = Sunday … 6 = Saturday.
    pub weekday: u8,
    /// Hour, 0 … 23.
    pub hour: u8,
    /// Minute, 0 … 59.
    pub minute: u8,
    /// Second, 0 … 59.
    pub second: u8,
    /// Microseconds, 0 … 999 999.
    pub micros: u32,
}

impl CivilTime {
    /// The civil time `us` microseconds after 1970-01-01 00:00:00 (negative: before).
    pub fn from_unix_micros(us: i64) -> CivilTime {
        let secs = us.div_euclid(1_000_000);
        let micros = us.rem_euclid(1_000_000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        // Days to civil date (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        CivilTime {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday (4).
            weekday: (days + 4).rem_euclid(7) as u8,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            micros,
        }
    }
}

/// A FIFO of outputs with helpers, shared by the machines.
#[derive(Debug)]
pub(crate) struct Outbox<E> {
    queue: VecDeque<ServiceOutput<E>>,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Outbox {
            queue: VecDeque::new(),
        }
    }
}

impl<E> Outbox<E> {
    pub(crate) fn push(&mut self, o: ServiceOutput<E>) {
        self.queue.push_back(o);
    }

    pub(crate) fn send(&mut self, ppid: u32, data: Bytes) {
        self.push(ServiceOutput::Send {
            ppid,
            stream: 0,
            data,
        });
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: impl Into<String>) {
        self.push(ServiceOutput::Log {
            level,
            message: message.into(),
        });
    }

    pub(crate) fn event(&mut self, e: E) {
        self.push(ServiceOutput::Event(e));
    }

    pub(crate) fn pop(&mut self) -> Option<ServiceOutput<E>> {
        self.queue.pop_front()
    }
}

/// A uniformly distributed `f64` in [0, 1) from 53 random bits.
pub(crate) fn random_unit<R: rand_core::Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// An exponentially distributed value with the given mean (RSPLIB's `randomExpDouble`).
pub(crate) fn random_exp<R: rand_core::Rng + ?Sized>(rng: &mut R, mean: f64) -> f64 {
    -mean * (1.0 - random_unit(rng)).ln()
}

/// A duration of `us` microseconds from a non-negative float (saturating, NaN → 0).
pub(crate) fn micros_f64(us: f64) -> Duration {
    if us.is_nan() || us <= 0.0 {
        Duration::ZERO
    } else if us >= u64::MAX as f64 {
        Duration::from_micros(u64::MAX)
    } else {
        Duration::from_micros(us as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time() {
        // 2026-11-24 00:45:54.208900 UTC is a Tuesday.
        let t = CivilTime::from_unix_micros(1_795_481_154_208_900);
        assert_eq!(
            t,
            CivilTime {
                year: 2026,
                month: 11,
                day: 24,
                weekday: 2,
                hour: 0,
                minute: 45,
                second: 54,
                micros: 208_900
            }
        );
    }
}
