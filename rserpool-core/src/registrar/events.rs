//! What the registrar tells its application, and its counters.

use core::net::SocketAddr;

use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};

use crate::{AssocId, Protocol};

/// Why a PE left the handlespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalReason {
    /// ASAP Deregistration from the PE.
    Deregistered,
    /// The association it was registered over went down (implicit deregistration).
    AssociationLost,
    /// No Endpoint Keep-Alive Ack in time.
    KeepAliveTimeout,
    /// Endpoint Unreachable reports from enough distinct reporters while its verification
    /// keep-alive was unanswered.
    Unreachable,
    /// Registration life ran out (replicas; own PEs with `expire_owned_elements`).
    Expired,
    /// ENRP Handle Update DEL_PE from its home registrar.
    DeletedByHome,
    /// Not in its home registrar's table any more (W=1 re-synchronisation purge).
    Resynchronised,
    /// The registrar could not reach the PE to take it over (no ASAP transport, or the
    /// association to it could not be set up).
    TakeoverFailed,
}

/// Why a peer registrar left the peer list (or was reset to an unknown static entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerDownReason {
    /// MAX-TIME-NO-RESPONSE expired after a Presence with reply-required.
    NoResponse,
    /// Another registrar took it over (Takeover Server, or our Init Takeover Ack).
    TakenOver,
    /// We took it over (or gave up a takeover attempt after TAKEOVER-EXPIRY).
    TakeoverFinished,
}

/// What kind of protocol problem a [`RegistrarEvent::ProtocolError`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolErrorKind {
    /// The message could not be decoded; `cause` is the Operation Error cause answered
    /// with (`None`: discarded silently as the action bits ask).
    Malformed {
        /// Cause code sent back, if any.
        cause: Option<u16>,
        /// The decoder's description.
        detail: String,
    },
    /// A message with a PPID that is neither ASAP nor ENRP, or the other protocol's PPID on
    /// an association already used for one protocol: ignored.
    WrongPpid(u32),
    /// An ENRP message from a server that is not in the peer list (or over an association
    /// not bound to that server), or refused by the peer policy.
    NotAPeer {
        /// The sender's claimed server identifier.
        sender: ServerId,
    },
    /// A change to a PE refused because the sender does not own it (another association,
    /// a server that is not its home).
    NotOwner {
        /// Pool of the PE.
        pool_handle: PoolHandle,
        /// The PE.
        pe_id: PeIdentifier,
    },
    /// A message this role does not accept here (e.g. ENRP other than Presence over UDP,
    /// responses nobody asked for).
    Unexpected,
    /// A rate limit dropped the request.
    RateLimited,
    /// A resource limit refused the request.
    LimitReached,
}

/// Events of the registrar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrarEvent {
    /// A new PE registered with us (we are its home).
    PeRegistered {
        /// Pool.
        pool_handle: PoolHandle,
        /// PE.
        pe_id: PeIdentifier,
        /// Association it registered over.
        assoc: AssocId,
    },
    /// An existing PE re-registered with us.
    PeReregistered {
        /// Pool.
        pool_handle: PoolHandle,
        /// PE.
        pe_id: PeIdentifier,
        /// Association it registered over.
        assoc: AssocId,
    },
    /// A PE left the handlespace.
    PeRemoved {
        /// Pool.
        pool_handle: PoolHandle,
        /// PE.
        pe_id: PeIdentifier,
        /// Its home registrar when it was removed.
        home: ServerId,
        /// Why.
        reason: RemovalReason,
    },
    /// A registrar joined the peer list (or a static entry learned its identifier).
    PeerUp {
        /// Its server identifier.
        server_id: ServerId,
    },
    /// A registrar left the peer list.
    PeerDown {
        /// Its server identifier.
        server_id: ServerId,
        /// Why.
        reason: PeerDownReason,
    },
    /// The start-up phase ended: with the mentor's whole handlespace (`mentor` set), or
    /// without one after the mentor discovery timeout.
    MentorSyncComplete {
        /// The mentor, if one answered.
        mentor: Option<ServerId>,
        /// PEs imported from it.
        elements: usize,
    },
    /// We started taking over a failed registrar.
    TakeoverStarted {
        /// The failed registrar.
        target: ServerId,
    },
    /// We took over a failed registrar's PEs (keep-alives with the H bit are on their way).
    TakeoverCompleted {
        /// The failed registrar.
        target: ServerId,
        /// PEs that changed home to us.
        elements: usize,
    },
    /// We gave up a takeover: the target answered, a registrar with a lower identifier
    /// took it over, or TAKEOVER-EXPIRY passed with acknowledgements missing.
    TakeoverAbandoned {
        /// The registrar that was to be taken over.
        target: ServerId,
    },
    /// Malformed or refused input (only with `protocol_error_events`).
    ProtocolError {
        /// The association it came over, if any.
        assoc: Option<AssocId>,
        /// The datagram's source, if it came by UDP.
        from: Option<SocketAddr>,
        /// ASAP or ENRP (by PPID).
        protocol: Option<Protocol>,
        /// The message type byte, if there was one.
        message_type: Option<u8>,
        /// What was wrong.
        kind: ProtocolErrorKind,
    },
}

/// Message counters per type (index = type code; index 0 and types ≥ 15 count in slot 0
/// as "other").
pub type TypeCounters = [u64; 16];

pub(crate) fn type_slot(ty: u8) -> usize {
    let t = usize::from(ty);
    if (1..16).contains(&t) { t } else { 0 }
}

/// Counters of the registrar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrarStats {
    /// ASAP messages received (associations and datagrams), by type.
    pub asap_received: TypeCounters,
    /// ASAP messages sent, by type.
    pub asap_sent: TypeCounters,
    /// ENRP messages received, by type.
    pub enrp_received: TypeCounters,
    /// ENRP messages sent, by type.
    pub enrp_sent: TypeCounters,
    /// Messages that failed to decode.
    pub decode_errors: u64,
    /// Error replies sent (ASAP Error, ENRP Error, or a response carrying an error cause for
    /// a malformed request).
    pub error_replies: u64,
    /// Messages with a PPID that is not ours on that association.
    pub wrong_ppid: u64,
    /// Requests dropped by a rate limit.
    pub rate_limited: u64,
    /// Changes refused because the sender does not own the PE.
    pub ownership_refusals: u64,
    /// ENRP messages ignored because the sender is not a peer.
    pub not_peer_refusals: u64,
    /// Requests refused or ignored because a resource limit was reached.
    pub limit_refusals: u64,
    /// Messages ignored for other reasons (unexpected type or state).
    pub ignored: u64,
    /// Registrations accepted (new PEs and re-registrations).
    pub registrations: u64,
    /// Re-registrations of a PE already registered (also counted in `registrations`).
    pub reregistrations: u64,
    /// PEs removed by an ASAP Deregistration.
    pub deregistrations: u64,
    /// ASAP Endpoint Unreachables accepted (past the rate limit).
    pub failure_reports: u64,
    /// ENRP Handle Updates received from other registrars (over associations).
    pub handle_updates: u64,
    /// Associations closed by the autoclose timeout.
    pub autoclosed: u64,
    /// Registrations rejected.
    pub registration_rejects: u64,
    /// Handle resolutions answered.
    pub handle_resolutions: u64,
    /// PEs removed after a missing keep-alive ack.
    pub keep_alive_timeouts: u64,
}
