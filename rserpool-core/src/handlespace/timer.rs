//! Timer index items: one heap entry per PE with any deadline, keyed by the earlier of its
//! expiry and keep-alive deadlines.

use super::heap::HeapItem;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerItem {
    hi: u32,
    lo: u32,
    slot: u32,
}

impl TimerItem {
    pub(crate) fn new(deadline: u64, slot: u32) -> TimerItem {
        TimerItem {
            hi: (deadline >> 32) as u32,
            lo: deadline as u32,
            slot,
        }
    }

    pub(crate) fn deadline(&self) -> u64 {
        (u64::from(self.hi) << 32) | u64::from(self.lo)
    }
}

impl HeapItem for TimerItem {
    #[inline]
    fn before(&self, o: &Self) -> bool {
        self < o
    }
    #[inline]
    fn slot(&self) -> u32 {
        self.slot
    }
}
