//! The per-PE timers: the timer index holds one heap entry per PE with any deadline, the
//! bare slot, ordered by the earlier of the expiry and keep-alive deadlines in its record
//! (`element::TimerOrder`).

use crate::Instant;

/// Which per-PE timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Registration-life expiry (replicas; own PEs if the registrar expires them).
    Expiry,
    /// Time to send the next ASAP Endpoint Keep-Alive.
    KeepAliveTransmission,
    /// No Endpoint Keep-Alive Ack arrived in time.
    KeepAliveTimeout,
}

/// A timer that came due, as returned by [`Handlespace::expired`](super::Handlespace::expired).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueTimer {
    /// Pool of the PE.
    pub pool_handle: rserpool_proto::ids::PoolHandle,
    /// The PE.
    pub pe_id: rserpool_proto::ids::PeIdentifier,
    /// Which timer.
    pub kind: TimerKind,
    /// When it was due.
    pub deadline: Instant,
}
