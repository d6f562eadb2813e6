//! The ASAP session layer between pool users and pool elements, as sans-IO machines
//! (RFC 5352 §3.8-3.9, §5; `shared/spec/session-layer.md`, `shared/spec/asap.md` §5.10,
//! `shared/spec/tcp-mapping.md` §3.6-3.7): RSPLIB's "enhanced mode" sockets.
//!
//! * [`PoolUserSession`] — the pool user's session to a pool: one PE at a time over one
//!   association, failover to another PE with cookie echo and replay of unanswered data.
//! * [`PoolElementSessions`] — the pool element: registration (a wrapped
//!   [`PoolElement`](crate::pool_element::PoolElement)) plus the sessions pool users open.
//!
//! # Channels on a session association
//! Messages with PPID 11 ([`PPID_CONTROL`]) are the control channel (ASAP_COOKIE,
//! ASAP_COOKIE_ECHO, ASAP_BUSINESS_CARD; anything else is dropped, as RSPLIB does); every other
//! PPID is application data, which therefore must not use PPID 11 ([`SendError::ControlPpid`]).
//! Over the TCP mapping a session is an RTF connection of channel kind 4
//! ([`ChannelKind::Session`](crate::io::ChannelKind::Session)), PPIDs unchanged.
//!
//! # What this layer does better than RSPLIB (`shared/design/rsplib-measured.md`)
//! * No data lost at failover (defect 3): what the PU sent and was not answered is sent
//!   again to the new PE right after the cookie echo ([`ReplayPolicy`]).
//! * A hung PE is detected for every client (defect 7): data outstanding and nothing
//!   received for [`PoolUserSessionConfig::response_timeout`] fails the session over.
//! * A PE just lost or reported is never picked again (defects 4, 5): the pool user's
//!   suspects plus the session's own memory of failed PEs.
//! * The new PE serves a restored session at once (defect 6): a cookie echo is an event of
//!   its own, delivered the moment it arrives.
//! * No hidden sleeps: retries after an empty pool are timers, not blocking calls.

pub mod element;
pub mod user;

pub use element::{PeSessionEvent, PoolElementSessions, SessionCloseReason};
pub use user::{
    FailoverReason, PoolUserSession, PoolUserSessionConfig, QueueLimit, ReplayPolicy, SessionEvent,
    SessionFailure, SessionState,
};

use crate::assoc::Protocol;

/// The PPID of the control channel (ASAP) on a session association.
pub const PPID_CONTROL: u32 = Protocol::PPID_ASAP;

/// Why a message could not be sent (or queued) on a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendError {
    /// Data must not use PPID 11: that is the control channel.
    ControlPpid,
    /// No session: not connected yet, closed, failed, or (PE side) no such session.
    NoSession,
    /// The queue of messages waiting for a PE is full ([`QueueLimit`]).
    QueueFull,
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SendError::ControlPpid => "PPID 11 is reserved for the ASAP control channel",
            SendError::NoSession => "no such session",
            SendError::QueueFull => "session send queue full",
        })
    }
}

impl std::error::Error for SendError {}
