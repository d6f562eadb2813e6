//! The registrar's association table.
//!
//! One entry per association, kept to 12 bytes (20 with its key) because PEs usually have
//! an association each: a single IPv4 peer address inline; the addresses of IPv6 and
//! multi-homed peers, the ENRP peer binding and the pending-request counters in side
//! tables (few associations have them).

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use smallvec::SmallVec;

use crate::AssocId;
use crate::assoc::MAX_SLOT_BITS;
use crate::paged::PagedVec;

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
    /// The filler of a free place in the dense part of [`AssocMap`].
    const FREE: Assoc = Assoc {
        v4: 0,
        bits: 0,
        port: 0,
        elements: 0,
    };

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

/// The association table: [`AssocId`] → [`Assoc`].
///
/// When the driver says that its ids hold a dense slot index in their low bits
/// ([`Machine::handle_assoc_id_slot_bits`](crate::io::Machine::handle_assoc_id_slot_bits)),
/// the entries of driver-chosen ids lie in a paged vector at that index, each with the
/// rest of its id (the bits above the index, in 4 bytes): 16 bytes each, no buckets kept
/// empty (a hash table of 20-byte entries costs ~34 bytes per entry at the load it keeps).
/// An id whose index is taken by another id, whose upper bits do not fit in 4 bytes, and
/// every id without such a layout, goes to the hash table (20-byte entries).
#[derive(Clone, Debug)]
pub(crate) struct AssocMap {
    /// Bits of a driver-chosen id that hold its slot index (0: no dense part).
    slot_bits: u32,
    /// By slot index: the id's bits above the index ([`EMPTY_TAG`] marks a free place)
    /// and the entry.
    dense: PagedVec<(u32, Assoc)>,
    /// Entries in `dense`.
    dense_len: usize,
    map: hashbrown::HashMap<Key, Assoc, foldhash::fast::FixedState>,
}

/// The tag of a free place in the dense part (no id's upper bits are taken as this).
const EMPTY_TAG: u32 = u32::MAX;

impl AssocMap {
    pub(crate) fn with_hasher(hasher: foldhash::fast::FixedState) -> AssocMap {
        AssocMap {
            slot_bits: 0,
            dense: PagedVec::new(),
            dense_len: 0,
            map: hashbrown::HashMap::with_hasher(hasher),
        }
    }

    /// Keeps the entries of driver-chosen ids at the slot index in their low `bits` bits
    /// (capped at 24; 0 = hash table only). Takes effect while the table is empty.
    pub(crate) fn set_slot_bits(&mut self, bits: u32) {
        if self.len() == 0 {
            self.slot_bits = bits.min(MAX_SLOT_BITS);
        }
    }

    /// The dense place of `a` (if its id has one): its index and tag (the id's bits
    /// above the index).
    fn dense_place(&self, a: AssocId) -> Option<(usize, u32)> {
        let i = a.slot_index(self.slot_bits)?;
        let tag = u32::try_from(a.0 >> self.slot_bits)
            .ok()
            .filter(|&t| t != EMPTY_TAG)?;
        Some((i, tag))
    }

    /// Where `a` lies in `dense`, if it does.
    fn dense_pos(&self, a: AssocId) -> Option<usize> {
        let (i, tag) = self.dense_place(a)?;
        (self.dense.get(i)?.0 == tag).then_some(i)
    }

    pub(crate) fn get(&self, a: &AssocId) -> Option<&Assoc> {
        match self.dense_pos(*a) {
            Some(i) => self.dense.get(i).map(|e| &e.1),
            None => self.map.get(&Key::new(*a)),
        }
    }

    pub(crate) fn get_mut(&mut self, a: &AssocId) -> Option<&mut Assoc> {
        match self.dense_pos(*a) {
            Some(i) => self.dense.get_mut(i).map(|e| &mut e.1),
            None => self.map.get_mut(&Key::new(*a)),
        }
    }

    pub(crate) fn contains_key(&self, a: &AssocId) -> bool {
        self.get(a).is_some()
    }

    /// The dense place of `a`: where it lies, or a free place at its index (the vector
    /// grown to it), with its tag; `None` when it has no dense place or another id holds
    /// that place.
    fn claim(&mut self, a: AssocId) -> Option<(usize, u32)> {
        let (i, tag) = self.dense_place(a)?;
        self.dense.grow_to(i + 1, || (EMPTY_TAG, Assoc::FREE));
        let k = self.dense.get(i)?.0;
        (k == tag || k == EMPTY_TAG).then_some((i, tag))
    }

    pub(crate) fn insert(&mut self, a: AssocId, v: Assoc) -> Option<Assoc> {
        let key = Key::new(a);
        if !self.map.contains_key(&key)
            && let Some((i, tag)) = self.claim(a)
            && let Some(e) = self.dense.get_mut(i)
        {
            if e.0 == tag {
                return Some(core::mem::replace(&mut e.1, v));
            }
            *e = (tag, v);
            self.dense_len += 1;
            return None;
        }
        self.map.insert(key, v)
    }

    pub(crate) fn remove(&mut self, a: &AssocId) -> Option<Assoc> {
        match self.dense_pos(*a) {
            Some(i) => {
                let e = self.dense.get_mut(i)?;
                e.0 = EMPTY_TAG;
                self.dense_len -= 1;
                Some(core::mem::replace(&mut e.1, Assoc::FREE))
            }
            None => self.map.remove(&Key::new(*a)),
        }
    }

    /// The entry of `a`, inserted with `f` if missing.
    pub(crate) fn get_or_insert_with(
        &mut self,
        a: AssocId,
        f: impl FnOnce() -> Assoc,
    ) -> &mut Assoc {
        let key = Key::new(a);
        if !self.map.contains_key(&key)
            && let Some((i, tag)) = self.claim(a)
            && let Some(e) = self.dense.get_mut(i)
        {
            if e.0 != tag {
                *e = (tag, f());
                self.dense_len += 1;
            }
            return &mut e.1;
        }
        self.map.entry(key).or_insert_with(f)
    }

    /// All entries: the dense part by slot index, then the hash table's (deterministic,
    /// seeded) order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (AssocId, &mut Assoc)> {
        let bits = self.slot_bits;
        self.dense
            .iter_mut()
            .enumerate()
            .filter(|(_, (tag, _))| *tag != EMPTY_TAG)
            .map(move |(i, (tag, v))| (AssocId(u64::from(*tag) << bits | i as u64), v))
            .chain(self.map.iter_mut().map(|(k, v)| (k.id(), v)))
    }

    pub(crate) fn len(&self) -> usize {
        self.dense_len + self.map.len()
    }

    pub(crate) fn allocation_size(&self) -> usize {
        self.dense.allocated_bytes() + self.map.allocation_size()
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
        assert!(core::mem::size_of::<(u32, Assoc)>() <= 16, "a dense entry");
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

    fn entry(port: u16) -> Assoc {
        let mut a = Assoc::new(Origin::Accepted, Role::Asap);
        a.port = port;
        a
    }

    fn map(bits: u32) -> AssocMap {
        let mut m = AssocMap::with_hasher(foldhash::fast::FixedState::with_seed(7));
        m.set_slot_bits(bits);
        m
    }

    #[test]
    fn driver_ids_lie_at_their_slot_and_others_in_the_hash_table() {
        let mut m = map(4);
        let (a, b) = (AssocId(1), AssocId(2 | 3 << 4));
        let collide = AssocId(1 | 5 << 4); // slot 1, held by `a`
        let machine = AssocId(1 << 63 | 1);
        for (i, id) in [a, b, collide, machine].into_iter().enumerate() {
            assert!(m.insert(id, entry(i as u16)).is_none());
        }
        assert_eq!((m.len(), m.dense_len, m.map.len()), (4, 2, 2));
        for (i, id) in [a, b, collide, machine].into_iter().enumerate() {
            assert_eq!(m.get(&id).map(|e| e.port), Some(i as u16), "{id:?}");
        }
        assert_eq!(m.insert(a, entry(10)).map(|e| e.port), Some(0));
        // `a` ends; its slot's next association goes to the dense place, while the one that
        // collided stays where it is and is still found.
        assert_eq!(m.remove(&a).map(|e| e.port), Some(10));
        assert!(m.get(&a).is_none() && m.remove(&a).is_none());
        let next = AssocId(1 | 6 << 4);
        m.get_or_insert_with(next, || entry(20)).port += 1;
        assert_eq!(m.get(&next).map(|e| e.port), Some(21));
        assert_eq!(m.get(&collide).map(|e| e.port), Some(2));
        assert_eq!((m.len(), m.dense_len, m.map.len()), (4, 2, 2));
        let mut seen: Vec<u64> = m.iter_mut().map(|(id, _)| id.0).collect();
        seen.sort_unstable();
        let mut want = vec![b.0, collide.0, machine.0, next.0];
        want.sort_unstable();
        assert_eq!(seen, want);
        // Ids whose bits above the index do not fit in the 4-byte tag (or would read as a
        // free place) go to the hash table.
        let wide = AssocId(7 | 1 << 40);
        let empty_tag = AssocId(8 | u64::from(u32::MAX) << 4);
        assert!(m.insert(wide, entry(30)).is_none());
        assert!(m.insert(empty_tag, entry(31)).is_none());
        assert_eq!((m.len(), m.dense_len, m.map.len()), (6, 2, 4));
        assert_eq!(m.get(&wide).map(|e| e.port), Some(30));
        assert_eq!(m.get(&empty_tag).map(|e| e.port), Some(31));
        assert!(m.get(&AssocId(7)).is_none() && m.get(&AssocId(8)).is_none());
        // The layout is fixed once the table holds something.
        m.set_slot_bits(0);
        assert_eq!(m.slot_bits, 4);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u16),
        Upsert(u64, u16),
        Remove(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        // Ids from a small set: slots 0-7 with a few generations (one too wide for a dense
        // entry's tag), and machine-chosen ones.
        let generation = prop_oneof![0u64..3, Just(1u64 << 40)];
        let id = (0u64..8, generation, any::<bool>()).prop_map(|(slot, generation, machine)| {
            (u64::from(machine) << 63) | generation << 3 | slot
        });
        prop_oneof![
            (id.clone(), any::<u16>()).prop_map(|(i, p)| Op::Insert(i, p)),
            (id.clone(), any::<u16>()).prop_map(|(i, p)| Op::Upsert(i, p)),
            id.prop_map(Op::Remove),
        ]
    }

    proptest::proptest! {
        /// With or without the dense part, the table behaves as a map.
        #[test]
        fn behaves_as_a_map(bits in 0u32..5, ops in proptest::collection::vec(op(), 0..200)) {
            let mut m = map(bits);
            let mut model = std::collections::HashMap::new();
            for o in ops {
                match o {
                    Op::Insert(i, p) => {
                        let old = m.insert(AssocId(i), entry(p)).map(|e| e.port);
                        proptest::prop_assert_eq!(old, model.insert(i, p));
                    }
                    Op::Upsert(i, p) => {
                        let got = m.get_or_insert_with(AssocId(i), || entry(p)).port;
                        proptest::prop_assert_eq!(got, *model.entry(i).or_insert(p));
                    }
                    Op::Remove(i) => {
                        let old = m.remove(&AssocId(i)).map(|e| e.port);
                        proptest::prop_assert_eq!(old, model.remove(&i));
                    }
                }
                proptest::prop_assert_eq!(m.len(), model.len());
            }
            for (i, p) in &model {
                proptest::prop_assert_eq!(m.get(&AssocId(*i)).map(|e| e.port), Some(*p));
                proptest::prop_assert!(m.contains_key(&AssocId(*i)));
            }
            let mut all: Vec<(u64, u16)> = m.iter_mut().map(|(id, e)| (id.0, e.port)).collect();
            all.sort_unstable();
            let mut want: Vec<(u64, u16)> = model.into_iter().collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(all, want);
        }
    }
}
