//! The registrar's association table.

use core::net::{IpAddr, SocketAddr};
use smallvec::SmallVec;

use crate::AssocId;

/// What an association is used for (fixed by its first message or by our Connect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// No message yet.
    Unknown,
    /// ASAP (PE or PU).
    Asap,
    /// ENRP (peer registrar).
    Enrp,
}

/// Who opened it and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Accepted by the driver.
    Accepted,
    /// Opened by us towards a peer registrar.
    EnrpPeer,
    /// Opened by us towards a PE (takeover / claim keep-alives).
    PoolElement,
}

/// One association (kept small: PEs usually have one association each).
#[derive(Clone, Debug)]
pub(crate) struct Assoc {
    /// Peer IP addresses (from `handle_assoc_up`).
    pub ips: SmallVec<[IpAddr; 1]>,
    /// Peer port.
    pub port: u16,
    pub role: Role,
    pub origin: Origin,
    /// `handle_assoc_up` seen (or a message arrived on it).
    pub up: bool,
    /// PEs registered (bound) over it.
    pub elements: u32,
    /// Unreachability verifications started by its reports and still running.
    pub pending: u16,
    /// Peer key the association belongs to (ENRP), 0 = none.
    pub peer: u32,
}

impl Assoc {
    pub(crate) fn new(origin: Origin, role: Role) -> Assoc {
        Assoc {
            ips: SmallVec::new(),
            port: 0,
            role,
            origin,
            up: false,
            elements: 0,
            pending: 0,
            peer: 0,
        }
    }

    pub(crate) fn set_peer_addrs(&mut self, addrs: &[SocketAddr], max: usize) {
        self.ips.clear();
        for a in addrs.iter().take(max) {
            let ip = super::security::canonical(a.ip());
            if !self.ips.contains(&ip) {
                self.ips.push(ip);
            }
        }
        self.port = addrs.first().map_or(0, SocketAddr::port);
    }
}

/// Per-association rate-limit state (only allocated when a rate limit is configured).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buckets {
    pub hr: Option<super::security::TokenBucket>,
    pub eu: Option<super::security::TokenBucket>,
}

/// Cap on the peer addresses stored per association.
pub(crate) const MAX_ASSOC_ADDRS: usize = 64;

pub(crate) type AssocMap = hashbrown::HashMap<AssocId, Assoc, foldhash::fast::FixedState>;
pub(crate) type BucketMap = hashbrown::HashMap<AssocId, Buckets, foldhash::fast::FixedState>;
