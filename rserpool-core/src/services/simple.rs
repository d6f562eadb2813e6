//! Echo, Discard, Daytime and Character Generator PEs (`services.md` §2), and the text
//! `rspterminal` prints for what it receives.
//!
//! None of them has cookies or a message format. Like RSPLIB they send PPID 0
//! ([`PPID_RSPLIB_SIMPLE`]), except Echo, which mirrors PPID and stream.

use bytes::Bytes;
use core::convert::Infallible;
use core::fmt::Write as _;

use super::{
    CivilTime, CloseMode, LogLevel, Outbox, PPID_RSPLIB_SIMPLE, ServiceOutput, ServiceSession,
    SessionEvent, WallClock,
};
use crate::time::Instant;

/// Echo PE session: every data message goes back unchanged, same PPID and stream.
/// A failed send aborts the session.
#[derive(Debug, Default)]
pub struct EchoServer {
    out: Outbox<Infallible>,
    finished: bool,
    /// Messages echoed so far.
    pub messages: u64,
    /// Bytes echoed so far.
    pub bytes: u64,
}

impl EchoServer {
    /// A new session.
    pub fn new() -> EchoServer {
        EchoServer::default()
    }
}

impl ServiceSession for EchoServer {
    type Event = Infallible;

    fn handle_data(&mut self, _now: Instant, ppid: u32, stream: u16, data: Bytes) {
        if self.finished {
            return;
        }
        self.messages += 1;
        self.bytes += data.len() as u64;
        self.out.push(ServiceOutput::Send { ppid, stream, data });
    }

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {
        self.out
            .log(LogLevel::Warning, "Echo: ignoring unexpected cookie echo");
    }

    fn handle_event(&mut self, _now: Instant, event: SessionEvent) {
        match event {
            SessionEvent::SendFailed if !self.finished => {
                self.finished = true;
                self.out.push(ServiceOutput::Close(CloseMode::Abort));
            }
            SessionEvent::PeerClosed => self.finished = true,
            _ => {}
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<ServiceOutput<Infallible>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Discard PE session: data are counted (and logged at debug level), nothing is sent.
#[derive(Debug, Default)]
pub struct DiscardServer {
    out: Outbox<Infallible>,
    finished: bool,
    /// Messages discarded so far.
    pub messages: u64,
    /// Bytes discarded so far.
    pub bytes: u64,
}

impl DiscardServer {
    /// A new session.
    pub fn new() -> DiscardServer {
        DiscardServer::default()
    }
}

impl ServiceSession for DiscardServer {
    type Event = Infallible;

    fn handle_data(&mut self, _now: Instant, _ppid: u32, _stream: u16, data: Bytes) {
        self.messages += 1;
        self.bytes += data.len() as u64;
        self.out.log(
            LogLevel::Debug,
            format!("Discard: dropped {} bytes", data.len()),
        );
    }

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {}

    fn handle_event(&mut self, _now: Instant, event: SessionEvent) {
        if event == SessionEvent::PeerClosed {
            self.finished = true;
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<ServiceOutput<Infallible>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// RSPLIB's Daytime text: `strftime("%A, %d-%B-%Y %H:%M:%S")` in the C locale, `.`, six
/// digits of microseconds, `\n` (no NUL). Example: `Tuesday, 24-November-2026 00:45:54.208900\n`.
pub fn daytime_text(t: &CivilTime) -> String {
    let weekday = WEEKDAYS.get(usize::from(t.weekday)).copied().unwrap_or("?");
    let month = MONTHS
        .get(usize::from(t.month.wrapping_sub(1)))
        .copied()
        .unwrap_or("?");
    let mut s = String::with_capacity(48);
    let _ = writeln!(
        s,
        "{weekday}, {:02}-{month}-{:04} {:02}:{:02}:{:02}.{:06}",
        t.day, t.year, t.hour, t.minute, t.second, t.micros
    );
    s
}

/// Daytime PE session: when the session comes up it sends the local time (PPID 0,
/// stream 0) and closes gracefully. Data from the PU are ignored.
#[derive(Debug)]
pub struct DaytimeServer {
    clock: WallClock,
    out: Outbox<Infallible>,
    finished: bool,
}

impl DaytimeServer {
    /// A new session printing time from `clock`.
    pub fn new(clock: WallClock) -> DaytimeServer {
        DaytimeServer {
            clock,
            out: Outbox::default(),
            finished: false,
        }
    }
}

impl ServiceSession for DaytimeServer {
    type Event = Infallible;

    fn handle_data(&mut self, _now: Instant, _ppid: u32, _stream: u16, _data: Bytes) {}

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {}

    fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        match event {
            SessionEvent::Up if !self.finished => {
                let text = daytime_text(&self.clock.local_time(now));
                self.out.send(PPID_RSPLIB_SIMPLE, Bytes::from(text));
                self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
                self.finished = true;
            }
            SessionEvent::PeerClosed => self.finished = true,
            _ => {}
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<ServiceOutput<Infallible>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Size of every Character Generator message.
pub const CHARGEN_MESSAGE_SIZE: usize = 1024;

/// The Character Generator's message: byte *i* = `30 + (i mod 98)`, i.e. 0x1E … 0x7F
/// repeated (10 full cycles of 98 bytes, then 0x1E … 0x49).
pub fn chargen_message() -> Bytes {
    let v: Vec<u8> = (0..CHARGEN_MESSAGE_SIZE)
        .map(|i| 30 + (i % 98) as u8)
        .collect();
    Bytes::from(v)
}

/// Settings of the Character Generator PE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharGenConfig {
    /// `-chargenmaxthreads`: most parallel sessions (default 4; enforced by the driver).
    pub max_sessions: usize,
    /// Messages produced per [`SessionEvent::Up`] / [`SessionEvent::Writable`] (not an
    /// RSPLIB setting: RSPLIB sends blocking in a thread; default 16).
    pub burst: usize,
}

impl Default for CharGenConfig {
    fn default() -> Self {
        CharGenConfig {
            max_sessions: 4,
            burst: 16,
        }
    }
}

/// Character Generator PE session: from session start, 1024-byte messages (PPID 0,
/// stream 0) as fast as the transport takes them, until a send fails; then SHUTDOWN.
/// Received data are ignored.
///
/// Each `Up`/`Writable` event yields up to `burst` messages; `Blocked` stops the burst.
#[derive(Debug)]
pub struct CharGenServer {
    config: CharGenConfig,
    message: Bytes,
    credit: usize,
    blocked: bool,
    out: Outbox<Infallible>,
    finished: bool,
    /// Messages produced so far.
    pub messages: u64,
}

impl CharGenServer {
    /// A new session.
    pub fn new(config: CharGenConfig) -> CharGenServer {
        CharGenServer {
            config,
            message: chargen_message(),
            credit: 0,
            blocked: false,
            out: Outbox::default(),
            finished: false,
            messages: 0,
        }
    }
}

impl ServiceSession for CharGenServer {
    type Event = Infallible;

    fn handle_data(&mut self, _now: Instant, _ppid: u32, _stream: u16, _data: Bytes) {}

    fn handle_cookie_echo(&mut self, _now: Instant, _cookie: Bytes) {}

    fn handle_event(&mut self, _now: Instant, event: SessionEvent) {
        if self.finished {
            return;
        }
        match event {
            SessionEvent::Up | SessionEvent::Writable => {
                self.blocked = false;
                self.credit = self.config.burst.max(1);
            }
            SessionEvent::Blocked => self.blocked = true,
            SessionEvent::SendFailed | SessionEvent::ServerShutdown => {
                self.finished = true;
                self.credit = 0;
                self.out.push(ServiceOutput::Close(CloseMode::Shutdown));
            }
            SessionEvent::PeerClosed => {
                self.finished = true;
                self.credit = 0;
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<ServiceOutput<Infallible>> {
        if let Some(o) = self.out.pop() {
            return Some(o);
        }
        if self.finished || self.blocked || self.credit == 0 {
            return None;
        }
        self.credit -= 1;
        self.messages += 1;
        Some(ServiceOutput::Send {
            ppid: PPID_RSPLIB_SIMPLE,
            stream: 0,
            data: self.message.clone(),
        })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

/// What `rspterminal` prints for a received message: trailing bytes below 0x20 removed,
/// other bytes below 30 shown as `.`, prefixed `from PE $xxxxxxxx> `.
pub fn rspterminal_line(pe_id: u32, data: &[u8]) -> String {
    let end = data.iter().rposition(|&b| b >= 0x20).map_or(0, |i| i + 1);
    let mut s = format!("from PE ${pe_id:08x}> ");
    for &b in data.get(..end).unwrap_or(&[]) {
        s.push(if b < 30 { '.' } else { char::from(b) });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<S: ServiceSession>(s: &mut S) -> Vec<ServiceOutput<S::Event>> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    #[test]
    fn echo_mirrors_ppid_and_stream() {
        let mut e = EchoServer::new();
        let t = Instant::ZERO;
        e.handle_event(t, SessionEvent::Up);
        e.handle_data(t, 0, 0, Bytes::from_static(b"hello 1\n"));
        e.handle_data(t, 77, 3, Bytes::from_static(b"x"));
        assert_eq!(
            drain(&mut e),
            vec![
                ServiceOutput::Send {
                    ppid: 0,
                    stream: 0,
                    data: Bytes::from_static(b"hello 1\n")
                },
                ServiceOutput::Send {
                    ppid: 77,
                    stream: 3,
                    data: Bytes::from_static(b"x")
                },
            ]
        );
        e.handle_event(t, SessionEvent::SendFailed);
        assert_eq!(drain(&mut e), vec![ServiceOutput::Close(CloseMode::Abort)]);
        assert!(e.is_finished());
        e.handle_data(t, 0, 0, Bytes::from_static(b"late"));
        assert!(drain(&mut e).is_empty());
    }

    #[test]
    fn discard_sends_nothing() {
        let mut d = DiscardServer::new();
        d.handle_data(Instant::ZERO, 0, 0, Bytes::from_static(b"abc"));
        d.handle_data(Instant::ZERO, 0, 0, Bytes::from_static(b"de"));
        assert!(
            drain(&mut d)
                .iter()
                .all(|o| matches!(o, ServiceOutput::Log { .. }))
        );
        assert_eq!((d.messages, d.bytes), (2, 5));
    }

    #[test]
    fn daytime_sends_local_time_and_closes() {
        let clock = WallClock {
            unix_micros_at_zero: 1_795_481_154_208_900 - 5_000_000,
            utc_offset_secs: 3600,
        };
        let mut d = DaytimeServer::new(clock);
        d.handle_event(Instant::from_millis(5000), SessionEvent::Up);
        assert_eq!(
            drain(&mut d),
            vec![
                ServiceOutput::Send {
                    ppid: 0,
                    stream: 0,
                    data: Bytes::from_static(b"Tuesday, 24-November-2026 01:45:54.208900\n")
                },
                ServiceOutput::Close(CloseMode::Shutdown),
            ]
        );
        assert!(d.is_finished());
    }

    #[test]
    fn chargen_pattern_and_flow_control() {
        let m = chargen_message();
        assert_eq!(m.len(), 1024);
        assert_eq!(&m[..3], &[0x1e, 0x1f, 0x20]);
        assert_eq!(m[97], 0x7f);
        assert_eq!(m[98], 0x1e);
        assert_eq!(m[1023], 0x49);

        let mut c = CharGenServer::new(CharGenConfig {
            burst: 3,
            ..CharGenConfig::default()
        });
        let t = Instant::ZERO;
        assert!(
            c.poll_output().is_none(),
            "nothing before the session is up"
        );
        c.handle_event(t, SessionEvent::Up);
        assert_eq!(drain(&mut c).len(), 3);
        c.handle_event(t, SessionEvent::Writable);
        assert!(c.poll_output().is_some());
        c.handle_event(t, SessionEvent::Blocked);
        assert!(c.poll_output().is_none());
        c.handle_event(t, SessionEvent::Writable);
        let burst = drain(&mut c);
        assert_eq!(burst.len(), 3);
        assert!(burst.iter().all(|o| matches!(o,
            ServiceOutput::Send { ppid: 0, stream: 0, data } if *data == m)));
        c.handle_event(t, SessionEvent::SendFailed);
        assert_eq!(
            drain(&mut c),
            vec![ServiceOutput::Close(CloseMode::Shutdown)]
        );
        assert_eq!(c.messages, 7);
    }

    #[test]
    fn terminal_line() {
        assert_eq!(
            rspterminal_line(0x15, b"hello\x01x\r\n"),
            "from PE $00000015> hello.x"
        );
        assert_eq!(rspterminal_line(1, b"\n"), "from PE $00000001> ");
    }
}
