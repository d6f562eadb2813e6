//! RSPLIB's stateful example services on the mio driver: the pool-element side of
//! `rspserver -pingpong | -calcapp | -fractal | -scripting` ([`pe`]) and the clients
//! `pingpongclient`, `calcappclient`, `scriptingclient`, `fractalpooluser` ([`pu`] and one
//! module per client).
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

/// The host's wall clock in the form the service machines take (Unix time at the driver's
/// start, local UTC offset).
pub fn host_clock() -> WallClock {
    let h = super::simple::WallClock::host();
    WallClock {
        unix_micros_at_zero: h.unix_micros_at_zero,
        utc_offset_secs: h.utc_offset_secs,
    }
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
