//! The registrar's association table.
//!
//! One entry per association, kept to 12 bytes (20 with its key) because PEs usually have
//! an association each: a single IPv4 peer address inline; the addresses of IPv6 and
//! multi-homed peers, the ENRP peer binding and the pending-request counters in side
//! tables (few associations have them).

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
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

const HAS_ADDR: u8 = 0x10;
const MULTI: u8 = 0x20;
/// Autoclose sweeps without a message (0..=3), in the two top bits.
const IDLE_SHIFT: u8 = 6;

/// One association.
#[derive(Clone, Debug)]
pub(crate) struct Assoc {
    /// The peer's address if it is one IPv4 address (`HAS_ADDR` set, `MULTI` clear).
    v4: u32,
    bits: u8,
    /// Peer port.
    pub port: u16,
    /// PEs registered (bound) over it.
    pub elements: u32,
}

/// Addresses of multi-homed peers.
pub(crate) type AddrList = SmallVec<[IpAddr; 4]>;

impl Assoc {
    pub(crate) fn new(origin: Origin, role: Role) -> Assoc {
        let mut a = Assoc {
            v4: 0,
            port: 0,
            bits: 0,
            elements: 0,
        };
        a.set_role(role);
        a.bits |= match origin {
            Origin::Accepted => 0,
            Origin::EnrpPeer => 4,
            Origin::PoolElement => 8,
        };
        a
    }

    /// The peer address of a single-homed IPv4 peer (`None` for no address, or for
    /// addresses kept in the side table).
    pub(crate) fn single(&self) -> Option<IpAddr> {
        (self.bits & (HAS_ADDR | MULTI) == HAS_ADDR).then(|| IpAddr::V4(Ipv4Addr::from(self.v4)))
    }

    /// True if the peer's addresses are kept in the side table (several, or IPv6).
    pub(crate) fn is_multi(&self) -> bool {
        self.bits & MULTI != 0
    }

    /// A message arrived (or the association came up): restarts the idle count.
    pub(crate) fn mark_active(&mut self) {
        self.bits &= !(3 << IDLE_SHIFT);
    }

    /// Counts one autoclose sweep; true when three full sweep periods passed without a
    /// message before this one (the first sweep after a message covers only part of a
    /// period).
    pub(crate) fn idle_sweep(&mut self) -> bool {
        let n = self.bits >> IDLE_SHIFT;
        if n == 3 {
            return true;
        }
        self.bits = (self.bits & !(3 << IDLE_SHIFT)) | ((n + 1) << IDLE_SHIFT);
        false
    }

    pub(crate) fn role(&self) -> Role {
        match self.bits & 3 {
            1 => Role::Asap,
            2 => Role::Enrp,
            _ => Role::Unknown,
        }
    }

    pub(crate) fn set_role(&mut self, r: Role) {
        self.bits = (self.bits & !3)
            | match r {
                Role::Unknown => 0,
                Role::Asap => 1,
                Role::Enrp => 2,
            };
    }

    pub(crate) fn origin(&self) -> Origin {
        match self.bits & 0x0c {
            4 => Origin::EnrpPeer,
            8 => Origin::PoolElement,
            _ => Origin::Accepted,
        }
    }

    /// Sets the peer's addresses; returns the list to keep in the side table unless it is
    /// one IPv4 address.
    #[must_use]
    pub(crate) fn set_peer_addrs(&mut self, addrs: &[SocketAddr], max: usize) -> Option<AddrList> {
        let mut ips: AddrList = SmallVec::new();
        for a in addrs.iter().take(max) {
            let ip = super::security::canonical(a.ip());
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        self.port = addrs.first().map_or(0, SocketAddr::port);
        self.bits &= !(HAS_ADDR | MULTI);
        match ips.as_slice() {
            [] => None,
            [IpAddr::V4(a)] => {
                self.v4 = u32::from(*a);
                self.bits |= HAS_ADDR;
                None
            }
            _ => {
                self.bits |= HAS_ADDR | MULTI;
                Some(ips)
            }
        }
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

/// An association id stored as two 4-byte halves, so that a table entry (key + [`Assoc`])
/// takes 20 bytes instead of 24. It hashes exactly as the `u64` it holds (the table's
/// layout and iteration order are those of a map keyed by [`AssocId`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key([u32; 2]);

impl Key {
    fn new(a: AssocId) -> Key {
        Key([a.0 as u32, (a.0 >> 32) as u32])
    }

    fn id(self) -> AssocId {
        AssocId(u64::from(self.0[0]) | u64::from(self.0[1]) << 32)
    }
}

impl core::hash::Hash for Key {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.id().0.hash(state);
    }
}

/// The association table: [`AssocId`] → [`Assoc`] in 20-byte entries.
#[derive(Clone, Debug)]
pub(crate) struct AssocMap {
    map: hashbrown::HashMap<Key, Assoc, foldhash::fast::FixedState>,
}

impl AssocMap {
    pub(crate) fn with_hasher(hasher: foldhash::fast::FixedState) -> AssocMap {
        AssocMap {
            map: hashbrown::HashMap::with_hasher(hasher),
        }
    }

    pub(crate) fn get(&self, a: &AssocId) -> Option<&Assoc> {
        self.map.get(&Key::new(*a))
    }

    pub(crate) fn get_mut(&mut self, a: &AssocId) -> Option<&mut Assoc> {
        self.map.get_mut(&Key::new(*a))
    }

    pub(crate) fn contains_key(&self, a: &AssocId) -> bool {
        self.map.contains_key(&Key::new(*a))
    }

    pub(crate) fn insert(&mut self, a: AssocId, v: Assoc) -> Option<Assoc> {
        self.map.insert(Key::new(a), v)
    }

    pub(crate) fn remove(&mut self, a: &AssocId) -> Option<Assoc> {
        self.map.remove(&Key::new(*a))
    }

    /// The entry of `a`, inserted with `f` if missing.
    pub(crate) fn get_or_insert_with(
        &mut self,
        a: AssocId,
        f: impl FnOnce() -> Assoc,
    ) -> &mut Assoc {
        self.map.entry(Key::new(a)).or_insert_with(f)
    }

    /// All entries, in the table's (deterministic, seeded) order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (AssocId, &mut Assoc)> {
        self.map.iter_mut().map(|(k, v)| (k.id(), v))
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn allocation_size(&self) -> usize {
        self.map.allocation_size()
    }
}
pub(crate) type BucketMap = hashbrown::HashMap<AssocId, Buckets, foldhash::fast::FixedState>;
/// Association → peer key (ENRP associations) or pending-request count.
pub(crate) type SideMap<V> = hashbrown::HashMap<AssocId, V, foldhash::fast::FixedState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact() {
        assert!(core::mem::size_of::<Assoc>() <= 12);
        assert!(core::mem::size_of::<(Key, Assoc)>() <= 20);
        for id in [0, 1, u64::from(u32::MAX) + 7, u64::MAX, 1 << 63 | 5] {
            assert_eq!(Key::new(AssocId(id)).id(), AssocId(id));
            use core::hash::BuildHasher;
            let h = foldhash::fast::FixedState::with_seed(42);
            assert_eq!(h.hash_one(Key::new(AssocId(id))), h.hash_one(AssocId(id)));
        }
        let mut a = Assoc::new(Origin::PoolElement, Role::Unknown);
        assert_eq!(a.single(), None);
        a.set_role(Role::Asap);
        assert_eq!((a.role(), a.origin()), (Role::Asap, Origin::PoolElement));
        assert!(
            a.set_peer_addrs(&["10.0.0.1:5".parse().unwrap()], 64)
                .is_none()
        );
        assert_eq!(a.single(), Some("10.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(
            a.set_peer_addrs(&["[2001:db8::1]:5".parse().unwrap()], 64)
                .is_some()
        );
        assert!(a.is_multi());
        let many = a
            .set_peer_addrs(
                &[
                    "10.0.0.1:5".parse().unwrap(),
                    "[::ffff:10.0.0.2]:5".parse().unwrap(),
                    "10.0.0.1:5".parse().unwrap(),
                ],
                64,
            )
            .unwrap();
        assert!(a.is_multi() && a.single().is_none());
        assert_eq!(many.len(), 2);
        assert_eq!(many[1], "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(a.port, 5);
    }
}
