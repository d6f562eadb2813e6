//! RSPLIB's four simple services (`services.md` §2) for `rspserver`, per session: Echo,
//! Discard, Daytime, Character Generator. They have no cookies and no message format; like
//! RSPLIB they send PPID 0, except Echo, which mirrors the PPID.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rserpool_core::Instant;

/// What a service session asks its host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a data message on the session.
    Send {
        /// PPID.
        ppid: u32,
        /// The message.
        data: Bytes,
    },
    /// End the session: gracefully, or by abort.
    Close {
        /// Abort instead of a graceful shutdown.
        abort: bool,
    },
}

/// Which of the simple services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimpleKind {
    /// Echo: every message back, same PPID.
    Echo,
    /// Discard: counted, dropped.
    Discard,
    /// Daytime: the local time when the session comes up, then a graceful close.
    Daytime,
    /// Character Generator: 1024-byte messages as fast as the session takes them.
    CharGen,
}

/// The Character Generator message: byte `i` = 30 + (i mod 98), 1024 bytes.
pub fn chargen_message() -> Bytes {
    Bytes::from(
        (0..1024u32)
            .map(|i| (30 + i % 98) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Local wall-clock time for Daytime, without reading the clock inside the service: the
/// Unix time at the driver's [`Instant::ZERO`] and the local UTC offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    /// Microseconds since the Unix epoch at [`Instant::ZERO`].
    pub unix_micros_at_zero: u64,
    /// Local offset from UTC, seconds.
    pub utc_offset_secs: i32,
}

impl WallClock {
    /// The clock of this host now (taken as the driver's start), with the local offset from
    /// `date +%z` (UTC when that fails).
    pub fn host() -> WallClock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        WallClock {
            unix_micros_at_zero: u64::try_from(unix.as_micros()).unwrap_or(u64::MAX),
            utc_offset_secs: local_utc_offset().unwrap_or(0),
        }
    }
}

/// The local UTC offset in seconds, from `date +%z` (e.g. `+0130`).
pub fn local_utc_offset() -> Option<i32> {
    let out = std::process::Command::new("date")
        .arg("+%z")
        .output()
        .ok()?;
    parse_utc_offset(std::str::from_utf8(&out.stdout).ok()?.trim())
}

/// Parses `+hhmm` / `-hhmm`.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, digits) = match s.as_bytes().first()? {
        b'+' => (1, s.get(1..)?),
        b'-' => (-1, s.get(1..)?),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits.get(..2)?.parse().ok()?;
    let m: i32 = digits.get(2..)?.parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
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

/// RSPLIB's Daytime text for `unix_micros` local microseconds since the epoch:
/// `strftime("%A, %d-%B-%Y %H:%M:%S")` (C locale), `.`, six digits of microseconds, `\n`.
pub fn daytime_text(local_unix_micros: i64) -> String {
    let secs = local_unix_micros.div_euclid(1_000_000);
    let micros = local_unix_micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    let month_name = MONTHS[((month - 1).clamp(0, 11)) as usize];
    format!(
        "{weekday}, {day:02}-{month_name}-{year:04} {:02}:{:02}:{:02}.{micros:06}\n",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// How many Character Generator messages one burst sends before the host looks at the
/// session's backlog again.
pub const CHARGEN_BURST: usize = 16;

/// One session of a simple service.
#[derive(Debug)]
pub struct SimpleSession {
    kind: SimpleKind,
    clock: WallClock,
    /// Messages received.
    pub received: u64,
    /// Messages sent.
    pub sent: u64,
    finished: bool,
}

impl SimpleSession {
    /// A new session of `kind`.
    pub fn new(kind: SimpleKind, clock: WallClock) -> SimpleSession {
        SimpleSession {
            kind,
            clock,
            received: 0,
            sent: 0,
            finished: false,
        }
    }

    /// The service.
    pub fn kind(&self) -> SimpleKind {
        self.kind
    }

    /// True once the session ended itself.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The session came up (RSPLIB's SESSION_ADD).
    pub fn on_up(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.kind {
            SimpleKind::Daytime => {
                let local = i64::try_from(
                    self.clock
                        .unix_micros_at_zero
                        .saturating_add(now.as_micros()),
                )
                .unwrap_or(i64::MAX)
                .saturating_add(i64::from(self.clock.utc_offset_secs) * 1_000_000);
                out.push(Action::Send {
                    ppid: 0,
                    data: Bytes::from(daytime_text(local)),
                });
                out.push(Action::Close { abort: false });
                self.sent += 1;
                self.finished = true;
            }
            SimpleKind::CharGen => self.on_writable(out),
            SimpleKind::Echo | SimpleKind::Discard => {}
        }
    }

    /// A data message arrived.
    pub fn on_data(&mut self, ppid: u32, data: Bytes, out: &mut Vec<Action>) {
        self.received += 1;
        if self.kind == SimpleKind::Echo && !self.finished {
            self.sent += 1;
            out.push(Action::Send { ppid, data });
        }
    }

    /// The session's queue has room (Character Generator: send the next burst).
    pub fn on_writable(&mut self, out: &mut Vec<Action>) {
        if self.kind == SimpleKind::CharGen && !self.finished {
            let m = chargen_message();
            for _ in 0..CHARGEN_BURST {
                out.push(Action::Send {
                    ppid: 0,
                    data: m.clone(),
                });
            }
            self.sent += CHARGEN_BURST as u64;
        }
    }

    /// A send failed: Echo aborts (RSPLIB), Character Generator ends gracefully.
    pub fn on_send_failed(&mut self, out: &mut Vec<Action>) {
        if self.finished {
            return;
        }
        match self.kind {
            SimpleKind::Echo => {
                self.finished = true;
                out.push(Action::Close { abort: true });
            }
            SimpleKind::CharGen => {
                self.finished = true;
                out.push(Action::Close { abort: false });
            }
            SimpleKind::Discard | SimpleKind::Daytime => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daytime_is_rsplibs_format() {
        // 2026-11-24 00:45:54.208900 UTC is a Tuesday.
        assert_eq!(
            daytime_text(1_795_481_154_208_900),
            "Tuesday, 24-November-2026 00:45:54.208900\n"
        );
        assert_eq!(
            daytime_text(0),
            "Thursday, 01-January-1970 00:00:00.000000\n"
        );
        let mut s = SimpleSession::new(
            SimpleKind::Daytime,
            WallClock {
                unix_micros_at_zero: 1_795_481_154_208_900,
                utc_offset_secs: 3600,
            },
        );
        let mut out = Vec::new();
        s.on_up(Instant::from_millis(1000), &mut out);
        assert_eq!(
            out,
            vec![
                Action::Send {
                    ppid: 0,
                    data: Bytes::from("Tuesday, 24-November-2026 01:45:55.208900\n")
                },
                Action::Close { abort: false }
            ]
        );
        assert!(s.is_finished());
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_utc_offset("+0130"), Some(5400));
        assert_eq!(parse_utc_offset("-0800"), Some(-28_800));
        assert_eq!(parse_utc_offset("0800"), None);
        assert_eq!(parse_utc_offset("+08"), None);
    }

    #[test]
    fn echo_discard_chargen() {
        let mut out = Vec::new();
        let mut e = SimpleSession::new(SimpleKind::Echo, WallClock::default());
        e.on_up(Instant::ZERO, &mut out);
        assert!(out.is_empty());
        e.on_data(7, Bytes::from_static(b"x\n"), &mut out);
        assert_eq!(
            out,
            vec![Action::Send {
                ppid: 7,
                data: Bytes::from_static(b"x\n")
            }]
        );
        out.clear();
        e.on_send_failed(&mut out);
        assert_eq!(out, vec![Action::Close { abort: true }]);
        out.clear();
        let mut d = SimpleSession::new(SimpleKind::Discard, WallClock::default());
        d.on_data(0, Bytes::from_static(b"x"), &mut out);
        assert!(out.is_empty());
        assert_eq!(d.received, 1);
        let mut c = SimpleSession::new(SimpleKind::CharGen, WallClock::default());
        c.on_up(Instant::ZERO, &mut out);
        assert_eq!(out.len(), CHARGEN_BURST);
        let Action::Send { data, ppid: 0 } = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!(data.len(), 1024);
        assert_eq!(data[0], 30);
        assert_eq!(data[97], 127);
        assert_eq!(data[98], 30);
        assert_eq!(data[1023], 30 + (1023 % 98) as u8);
    }
}
