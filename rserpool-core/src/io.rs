//! What the machines ask their driver to do.
//!
//! Every machine ([`crate`]'s registrar, pool element, pool user, session) has the same
//! shape: inputs through `handle_*` methods (each takes `now`), outputs drained with
//! `poll_output` until it returns `None`, and the next deadline from `poll_timeout`, at
//! which the driver calls `handle_timeout(now)`.
//!
//! Association identifiers: the driver names the associations it accepts with
//! [`AssocId`]s whose top bit is clear; a machine that needs a new association picks an
//! id with the top bit set ([`AssocIdAllocator`]) and emits [`Output::Connect`]; the driver
//! then reports `handle_assoc_up` or `handle_assoc_down` for that same id.

use crate::assoc::{AssocId, Protocol};
use bytes::Bytes;
use core::net::SocketAddr;
use rserpool_proto::transport::TransportProtocol;
use smallvec::SmallVec;

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Over an association (SCTP, TCP mapping, simulated link).
    Assoc(AssocId),
    /// As a UDP datagram (ASAP Server Announce, ENRP Presence; multicast or unicast).
    Udp(SocketAddr),
}

/// One message to send.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: Destination,
    /// SCTP payload protocol identifier (11 ASAP, 12 ENRP, application PPIDs for sessions).
    pub ppid: u32,
    /// SCTP stream.
    pub stream: u16,
    /// The encoded message.
    pub payload: Bytes,
}

impl Transmit {
    /// An ASAP or ENRP message over an association, on stream 0.
    pub fn assoc(assoc: AssocId, protocol: Protocol, payload: Bytes) -> Transmit {
        Transmit {
            dest: Destination::Assoc(assoc),
            ppid: protocol.ppid(),
            stream: 0,
            payload,
        }
    }

    /// An ASAP or ENRP message as a UDP datagram.
    pub fn udp(to: SocketAddr, protocol: Protocol, payload: Bytes) -> Transmit {
        Transmit {
            dest: Destination::Udp(to),
            ppid: protocol.ppid(),
            stream: 0,
            payload,
        }
    }
}

/// Why an association ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssocDownReason {
    /// Connection attempt failed (refused, unreachable, timed out).
    ConnectFailed,
    /// The peer shut the association down gracefully.
    Shutdown,
    /// The peer aborted, or the transport declared the peer dead (SCTP COMM_LOST,
    /// TCP-mapping heartbeat timeout, TCP reset).
    Lost,
    /// We closed it ourselves (after [`Output::Close`]).
    Closed,
}

/// The kind of channel a new association is for (the TCP mapping's channel kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// PE or PU to registrar (ASAP).
    AsapToRegistrar,
    /// Registrar to PE (ASAP initiated by a registrar, e.g. takeover keep-alive).
    AsapToPoolElement,
    /// Registrar to registrar (ENRP).
    Enrp,
    /// Pool user to pool element session (control channel + data).
    Session,
}

/// One thing a machine asks its driver to do, or tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<E> {
    /// Send a message.
    Transmit(Transmit),
    /// Open a new association with the id chosen by the machine.
    Connect {
        /// The id the driver must use for this association in later inputs.
        assoc: AssocId,
        /// Addresses to try (multi-homing: any of them).
        addrs: SmallVec<[SocketAddr; 4]>,
        /// Transport the peer advertised (SCTP or TCP); the driver may map SCTP to the
        /// TCP mapping where the kernel has no SCTP.
        transport: TransportProtocol,
        /// What the association is for.
        channel: ChannelKind,
    },
    /// Close an association: gracefully (after queued data) or by abort.
    Close {
        /// Which association.
        assoc: AssocId,
        /// Abort (SCTP ABORT / TCP RST) instead of a graceful shutdown.
        abort: bool,
    },
    /// An event for the application.
    Event(E),
}

/// A bulk transfer on an association started or ended ([`Machine::poll_bulk_transfer`]).
///
/// While one runs, the association carries many large messages one way, each answered by a
/// small request the other way (an ENRP handle table download or walk). A driver may then
/// acknowledge that association's packets less often (kernel SCTP: the delayed SACK, every
/// second packet, so that the acknowledgement rides on the next request or response) and
/// must go back to acknowledging each packet at once when it ends. Over transports without
/// acknowledgements of their own (the TCP mapping) it means nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BulkTransfer {
    /// The association.
    pub assoc: AssocId,
    /// `true`: a transfer started; `false`: it ended.
    pub running: bool,
}

/// Allocates association ids for associations a machine opens (top bit set).
#[derive(Clone, Debug, Default)]
pub struct AssocIdAllocator {
    next: u64,
}

impl AssocIdAllocator {
    /// The top bit that marks machine-chosen ids.
    pub const MACHINE_BIT: u64 = 1 << 63;

    /// A fresh id, never returned before by this allocator.
    pub fn allocate(&mut self) -> AssocId {
        self.next = self.next.wrapping_add(1);
        AssocId(Self::MACHINE_BIT | (self.next & !Self::MACHINE_BIT))
    }

    /// True for ids chosen by a machine rather than by the driver.
    pub fn is_machine_chosen(assoc: AssocId) -> bool {
        assoc.0 & Self::MACHINE_BIT != 0
    }
}

/// The driving contract every machine implements, so that one driver (mio, async, the
/// simulator, a custom loop) can run any of them.
///
/// Call order: after any `handle_*` call, drain [`Machine::poll_output`] until `None`, then
/// ask [`Machine::poll_timeout`] and call [`Machine::handle_timeout`] once that instant has
/// passed. `now` must never go backwards between calls.
pub trait Machine {
    /// Events for the application.
    type Event;

    /// An association came up: accepted by the driver (new id), or the one asked for by
    /// [`Output::Connect`]. `peer_addrs` are the peer's transport addresses.
    fn handle_assoc_up(&mut self, now: crate::Instant, assoc: AssocId, peer_addrs: &[SocketAddr]);

    /// An association went down or could not be set up.
    fn handle_assoc_down(&mut self, now: crate::Instant, assoc: AssocId, reason: AssocDownReason);

    /// A whole message arrived on an association with this PPID.
    fn handle_message(&mut self, now: crate::Instant, assoc: AssocId, ppid: u32, data: Bytes);

    /// A UDP datagram arrived (announce / presence channels) with this PPID meaning
    /// (11 on the ASAP announce socket, 12 on the ENRP presence socket).
    fn handle_datagram(&mut self, now: crate::Instant, from: SocketAddr, ppid: u32, data: Bytes);

    /// Time has reached (or passed) the instant last returned by [`Machine::poll_timeout`].
    fn handle_timeout(&mut self, now: crate::Instant);

    /// The next output, or `None` when drained.
    fn poll_output(&mut self) -> Option<Output<Self::Event>>;

    /// The next instant at which [`Machine::handle_timeout`] must be called.
    fn poll_timeout(&self) -> Option<crate::Instant>;

    /// The driver's layout of association ids, told once before the first association: the
    /// ids it chooses (top bit clear) hold a small index in their low `bits` bits (its
    /// socket slot, reused after the association ends), in which any two live associations
    /// differ. A machine may keep per-association state in a vector by that index instead of
    /// a hash table; it must still find every id (an index can be held by an association
    /// closing while its successor comes up). Default: ignored.
    fn handle_assoc_id_slot_bits(&mut self, bits: u32) {
        let _ = bits;
    }

    /// The next start or end of a bulk transfer ([`BulkTransfer`]), or `None`. A driver asks
    /// after draining [`Machine::poll_output`], until `None`; the changes reflect the
    /// machine's state at that moment (an association that went down may still be reported
    /// as ended: ignore unknown ids). Default: never.
    fn poll_bulk_transfer(&mut self) -> Option<BulkTransfer> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_sets_the_machine_bit_and_never_repeats() {
        let mut a = AssocIdAllocator::default();
        let x = a.allocate();
        let y = a.allocate();
        assert_ne!(x, y);
        assert!(AssocIdAllocator::is_machine_chosen(x));
        assert!(!AssocIdAllocator::is_machine_chosen(AssocId(5)));
    }
}
