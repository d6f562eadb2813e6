//! RSPLIB's example services on the mio driver: the pool-element application of `rspserver`
//! for every service ([`pe`]) and the clients `pingpongclient`, `calcappclient`,
//! `scriptingclient`, `fractalpooluser` ([`pu`] and one module per client).
//!
//! The services themselves are the sans-IO machines of [`rserpool_core::services`]; this
//! module moves their outputs onto the session layer ([`rserpool_core::session`]) as the
//! mapping in `rserpool_core::services` describes, and does the host's part (files, child
//! processes, statistics files, PNG images, a small HTTP live view).

pub mod calcapp;
pub mod fractal;
pub mod http;
pub mod keyring;
pub mod pe;
pub mod pingpong;
pub mod pool;
pub mod pu;
pub mod scripting;
pub mod scripting_host;

use rserpool_core::services::{LogLevel, WallClock};

/// The host's wall clock in the form the service machines take: the Unix time now (the
/// driver's start) and the local UTC offset from `date +%z` (UTC when that fails).
pub fn host_clock() -> WallClock {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(std::time::Duration::ZERO);
    WallClock {
        unix_micros_at_zero: u64::try_from(unix.as_micros()).unwrap_or(u64::MAX),
        utc_offset_secs: local_utc_offset().unwrap_or(0),
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

/// Writes a machine's log line to the `tracing` log.
pub fn log_line(prefix: &str, level: LogLevel, message: &str) {
    match level {
        LogLevel::Error => tracing::error!("{prefix}{message}"),
        LogLevel::Warning => tracing::warn!("{prefix}{message}"),
        LogLevel::Info => tracing::info!("{prefix}{message}"),
        LogLevel::Debug => tracing::debug!("{prefix}{message}"),
    }
}

#[cfg(test)]
mod clock_tests {
    use super::parse_utc_offset;

    #[test]
    fn offsets() {
        assert_eq!(parse_utc_offset("+0130"), Some(5400));
        assert_eq!(parse_utc_offset("-0800"), Some(-28_800));
        assert_eq!(parse_utc_offset("0800"), None);
        assert_eq!(parse_utc_offset("+08"), None);
        assert_eq!(parse_utc_offset("+08x0"), None);
    }
}
