//! The driver's association table: machine-visible ids ↔ transport ids, what is known about
//! each association, and the driver-side overflow queue of each (see the backpressure
//! section of the [module documentation](super)).

use crate::transport::TransportKind;
use bytes::Bytes;
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::paged::PagedVec;
use rserpool_core::{AssocId, ChannelKind, Instant};
use rserpool_proto::csp::{CSP_DURATION_UNKNOWN, ComponentId, CspAssociation, CspProtocol};
use rserpool_proto::rtf;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;

/// The core's channel kind of a transport (RTF) channel kind.
pub fn channel_from_rtf(kind: rtf::ChannelKind) -> ChannelKind {
    match kind {
        rtf::ChannelKind::AsapToRegistrar => ChannelKind::AsapToRegistrar,
        rtf::ChannelKind::AsapFromRegistrar => ChannelKind::AsapToPoolElement,
        rtf::ChannelKind::Enrp => ChannelKind::Enrp,
        rtf::ChannelKind::Session => ChannelKind::Session,
    }
}

/// The transport (RTF) channel kind of a core channel kind.
pub fn channel_to_rtf(kind: ChannelKind) -> rtf::ChannelKind {
    match kind {
        ChannelKind::AsapToRegistrar => rtf::ChannelKind::AsapToRegistrar,
        ChannelKind::AsapToPoolElement => rtf::ChannelKind::AsapFromRegistrar,
        ChannelKind::Enrp => rtf::ChannelKind::Enrp,
        ChannelKind::Session => rtf::ChannelKind::Session,
    }
}

/// What the driver knows about one association the machine can see.
///
/// Its addresses are not kept here (every association would pay for them): the
/// accept router ([`Driver::route_accepted`](super::Driver::route_accepted)) gets the peer's
/// addresses, and [`Driver::peer_addrs`](super::Driver::peer_addrs) /
/// [`Step::local_addrs`](super::Step::local_addrs) ask the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssocInfo {
    /// The transport carrying it.
    pub kind: TransportKind,
    /// Its channel kind (RTF-negotiated, or the one asked for / listened for).
    pub channel: Option<ChannelKind>,
    /// True when the machine opened it ([`rserpool_core::Output::Connect`]).
    pub outbound: bool,
    /// When `handle_assoc_up` was reported (`None` while connecting).
    pub up_since: Option<Instant>,
}

impl AssocInfo {
    /// True once the association is up.
    pub fn is_up(&self) -> bool {
        self.up_since.is_some()
    }

    /// The CSP entry for this association (duration since it came up, or unknown; protocol
    /// from the transport), with the peer's component id and the PPID to report.
    pub fn csp_entry(&self, receiver: ComponentId, ppid: u32, now: Instant) -> CspAssociation {
        CspAssociation {
            receiver_id: receiver,
            duration_us: self.up_since.map_or(CSP_DURATION_UNKNOWN, |t| {
                u64::try_from((now - t).as_micros()).unwrap_or(CSP_DURATION_UNKNOWN)
            }),
            flags: 0,
            protocol: match self.kind {
                TransportKind::Sctp => CspProtocol::Sctp,
                TransportKind::Tcp => CspProtocol::Tcp,
            },
            ppid,
        }
    }
}

/// One message held back by the driver because the transport queue was full.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub ppid: u32,
    pub stream: u16,
    pub data: Bytes,
}

/// An overflow queue, the bytes it holds and the `closing` mark. Only associations with
/// something held (almost none) have one: it lies in [`AssocTable`]'s side map, not in
/// every link.
#[derive(Debug, Default)]
pub(crate) struct OverflowQueue {
    queue: VecDeque<Held>,
    bytes: usize,
    /// See [`LinkMut::closing`].
    closing: bool,
}

impl OverflowQueue {
    /// The link whose queue this is (if it has one) is closing ([`LinkMut::closing`]).
    fn closing(q: Option<&OverflowQueue>) -> bool {
        q.is_some_and(|q| q.closing)
    }
}

/// The table's overflow queues, by machine-visible id.
type HeldMap = HashMap<AssocId, Box<OverflowQueue>>;

/// The overflow queue of one link: messages refused with `QueueFull`, in order; sent
/// before anything newer. A view into [`AssocTable`]'s side map (no entry while empty and
/// not closing).
pub(crate) struct Overflow<'a> {
    held: &'a mut HeldMap,
    id: AssocId,
}

impl Overflow<'_> {
    fn queue(&self) -> Option<&OverflowQueue> {
        self.held.get(&self.id).map(|q| &**q)
    }

    pub fn is_empty(&self) -> bool {
        self.queue().is_none_or(|q| q.queue.is_empty())
    }

    pub fn len(&self) -> usize {
        self.queue().map_or(0, |q| q.queue.len())
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.queue().map_or(0, |q| q.bytes)
    }

    pub fn push_back(&mut self, h: Held) {
        let q = self.held.entry(self.id).or_default();
        q.bytes += h.data.len();
        q.queue.push_back(h);
    }

    pub fn front(&self) -> Option<&Held> {
        self.queue().and_then(|q| q.queue.front())
    }

    pub fn pop_front(&mut self) -> Option<Held> {
        let q = self.held.get_mut(&self.id)?;
        let h = q.queue.pop_front();
        if let Some(h) = &h {
            q.bytes -= h.data.len();
        }
        if q.queue.is_empty() && !q.closing {
            self.held.remove(&self.id);
        }
        h
    }

    /// Drops every message held (the `closing` mark stays).
    pub fn clear(&mut self) {
        match self.held.get_mut(&self.id) {
            Some(q) if q.closing => {
                q.queue = VecDeque::new();
                q.bytes = 0;
            }
            _ => {
                self.held.remove(&self.id);
            }
        }
    }
}

/// [`AssocInfo`] packed into 8 bytes (one is kept per association): the time it came up
/// in microseconds in the low 56 bits (2,283 years of driver time), the rest above them;
/// the top bit is always set, so that an empty place of the link table (`Option<Link>`)
/// needs no byte of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackedInfo(NonZeroU64);

impl PackedInfo {
    const TIME_BITS: u32 = 56;
    const TIME_MASK: u64 = (1 << Self::TIME_BITS) - 1;
    const UP: u64 = 1 << Self::TIME_BITS;
    const OUTBOUND: u64 = 1 << (Self::TIME_BITS + 1);
    const SCTP: u64 = 1 << (Self::TIME_BITS + 2);
    /// The channel kind (3 bits): 0 = none, else its RTF code 1-4 ([`channel_to_rtf`]).
    const CHANNEL_SHIFT: u32 = Self::TIME_BITS + 3;
    const SET: u64 = 1 << 63;

    fn new(i: &AssocInfo) -> Self {
        let mut bits = 0;
        if i.outbound {
            bits |= Self::OUTBOUND;
        }
        if i.kind == TransportKind::Sctp {
            bits |= Self::SCTP;
        }
        let mut p = Self::from_bits(bits);
        p.set_channel(i.channel);
        if let Some(t) = i.up_since {
            p.set_up(t);
        }
        p
    }

    fn from_bits(bits: u64) -> Self {
        PackedInfo(NonZeroU64::new(bits | Self::SET).unwrap_or(NonZeroU64::MAX))
    }

    fn bits(self) -> u64 {
        self.0.get()
    }

    fn set_channel(&mut self, channel: Option<ChannelKind>) {
        let code = channel.map_or(0, |c| u64::from(channel_to_rtf(c).code()));
        *self = Self::from_bits(
            (self.bits() & !(7 << Self::CHANNEL_SHIFT)) | (code << Self::CHANNEL_SHIFT),
        );
    }

    fn set_up(&mut self, t: Instant) {
        let us = t.as_micros().min(Self::TIME_MASK);
        *self = Self::from_bits((self.bits() & !Self::TIME_MASK) | us | Self::UP);
    }

    fn get(self) -> AssocInfo {
        let bits = self.bits();
        let code = (bits >> Self::CHANNEL_SHIFT) & 7;
        AssocInfo {
            kind: if bits & Self::SCTP != 0 {
                TransportKind::Sctp
            } else {
                TransportKind::Tcp
            },
            channel: u8::try_from(code)
                .ok()
                .and_then(rtf::ChannelKind::from_code)
                .map(channel_from_rtf),
            outbound: bits & Self::OUTBOUND != 0,
            up_since: (bits & Self::UP != 0).then(|| Instant::from_micros(bits & Self::TIME_MASK)),
        }
    }
}

/// The driver's record of one association: 16 bytes (its overflow queue, if any, lies in
/// the table's side map).
#[derive(Debug)]
pub(crate) struct Link {
    pub transport: AssocId,
    info: PackedInfo,
}

impl Link {
    fn new(transport: AssocId, info: &AssocInfo) -> Self {
        Link {
            transport,
            info: PackedInfo::new(info),
        }
    }

    /// What is known about it.
    pub fn info(&self) -> AssocInfo {
        self.info.get()
    }

    /// It came up at `now`; `channel` is the negotiated channel kind, if the transport
    /// learnt one.
    pub fn set_up(&mut self, now: Instant, channel: Option<ChannelKind>) {
        self.info.set_up(now);
        if channel.is_some() {
            self.info.set_channel(channel);
        }
    }
}

/// A link to change, with its overflow queue.
pub(crate) struct LinkMut<'a> {
    link: &'a mut Link,
    /// Its overflow queue.
    pub overflow: Overflow<'a>,
}

impl core::ops::Deref for LinkMut<'_> {
    type Target = Link;

    fn deref(&self) -> &Link {
        self.link
    }
}

impl core::ops::DerefMut for LinkMut<'_> {
    fn deref_mut(&mut self) -> &mut Link {
        self.link
    }
}

impl LinkMut<'_> {
    /// The machine closed it gracefully while the overflow still held messages: the
    /// transport close follows once they are handed over. The machine has already been told
    /// `Down(Closed)`; nothing more is reported for it.
    pub fn closing(&self) -> bool {
        OverflowQueue::closing(self.overflow.queue())
    }

    /// Marks it [`closing`](Self::closing).
    pub fn set_closing(&mut self) {
        self.overflow
            .held
            .entry(self.overflow.id)
            .or_default()
            .closing = true;
    }
}

/// A link taken out of the table, with what its overflow queue held.
pub(crate) struct Removed {
    pub transport: AssocId,
    held: Option<Box<OverflowQueue>>,
}

impl Removed {
    /// It was [closing](LinkMut::closing).
    pub fn closing(&self) -> bool {
        OverflowQueue::closing(self.held.as_deref())
    }

    /// Messages its overflow queue still held (now dropped).
    pub fn held_messages(&self) -> usize {
        self.held.as_ref().map_or(0, |q| q.queue.len())
    }
}

/// The associations of one driver, by machine-visible id.
///
/// An accepted association is known to the machine under its transport id whenever that
/// id is free (transport ids have the top bit clear, like driver-chosen ids): only the
/// others — the machine's own connects — need an entry in `by_transport`.
///
/// Layout: the links whose machine-visible id is their transport id (the accepted
/// associations: a registrar's PEs and pool users, a PE's sessions) lie inline in `dense`
/// at the transport's slot index (the low [`slot_bits`](crate::transport::Transports::id_slot_bits)
/// of the id), 16 bytes each; the others (the machine's own connects, and an accepted association
/// whose slot is still held by a link being closed) are boxed in `sparse`. A hash table of
/// boxed links cost 92 bytes per association (the box, its allocator header, a bucket and
/// the buckets a hash table keeps empty).
#[derive(Debug, Default)]
pub struct AssocTable {
    /// Bits of a transport id that hold its slot index (0: no dense part).
    slot_bits: u32,
    dense: PagedVec<Option<Link>>,
    sparse: HashMap<AssocId, Box<Link>>,
    /// Transport id → machine-visible id, where they differ.
    by_transport: HashMap<AssocId, AssocId>,
    /// The overflow queues (see [`Overflow`]).
    held: HeldMap,
    next_local: u64,
}

impl AssocTable {
    /// A table for a transport whose association ids hold their slot index in the low
    /// `slot_bits` bits ([`Transports::id_slot_bits`](crate::transport::Transports::id_slot_bits);
    /// 0 = no such structure: every link is boxed).
    pub fn new(slot_bits: u32) -> Self {
        AssocTable {
            slot_bits: slot_bits.min(32),
            ..AssocTable::default()
        }
    }

    /// Where `id`'s link lies in `dense`, if it lies there.
    fn dense_pos(&self, id: AssocId) -> Option<usize> {
        let i = id.slot_index(self.slot_bits)?;
        self.dense
            .get(i)?
            .as_ref()
            .is_some_and(|l| l.transport == id)
            .then_some(i)
    }

    fn link(&self, id: AssocId) -> Option<&Link> {
        match self.dense_pos(id) {
            Some(i) => self.dense.get(i)?.as_ref(),
            None => self.sparse.get(&id).map(|l| &**l),
        }
    }

    fn links(&self) -> impl Iterator<Item = (AssocId, &Link)> + '_ {
        self.dense
            .iter()
            .flatten()
            .map(|l| (l.transport, l))
            .chain(self.sparse.iter().map(|(id, l)| (*id, &**l)))
    }

    /// What is known about `assoc` (a machine-visible id), if it is live.
    pub fn get(&self, assoc: AssocId) -> Option<AssocInfo> {
        self.link(assoc)
            .filter(|_| !self.closing(assoc))
            .map(Link::info)
    }

    /// All live associations (connecting or up), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (AssocId, AssocInfo)> + '_ {
        self.links()
            .filter(|(id, _)| !self.closing(*id))
            .map(|(id, l)| (id, l.info()))
    }

    /// Number of live associations.
    pub fn len(&self) -> usize {
        self.links().filter(|(id, _)| !self.closing(*id)).count()
    }

    /// True when there is no live association.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the driver holds for `assoc` in its overflow queue (0 for unknown ids).
    pub fn overflow_bytes(&self, assoc: AssocId) -> usize {
        self.held.get(&assoc).map_or(0, |q| q.bytes)
    }

    /// The transport's id of a machine-visible id.
    pub fn transport_id(&self, assoc: AssocId) -> Option<AssocId> {
        self.link(assoc).map(|l| l.transport)
    }

    /// The machine-visible id of a transport id.
    pub fn machine_id(&self, transport: AssocId) -> Option<AssocId> {
        match self.by_transport.get(&transport) {
            Some(id) => Some(*id),
            None => self
                .link(transport)
                .filter(|l| l.transport == transport)
                .map(|_| transport),
        }
    }

    pub(crate) fn contains(&self, assoc: AssocId) -> bool {
        self.link(assoc).is_some()
    }

    /// `assoc` is closing (see [`LinkMut::closing`]).
    fn closing(&self, assoc: AssocId) -> bool {
        OverflowQueue::closing(self.held.get(&assoc).map(|q| &**q))
    }

    pub(crate) fn link_mut(&mut self, assoc: AssocId) -> Option<LinkMut<'_>> {
        let link = match self.dense_pos(assoc) {
            Some(i) => self.dense.get_mut(i)?.as_mut()?,
            None => &mut **self.sparse.get_mut(&assoc)?,
        };
        Some(LinkMut {
            link,
            overflow: Overflow {
                held: &mut self.held,
                id: assoc,
            },
        })
    }

    pub(crate) fn link_by_transport(
        &mut self,
        transport: AssocId,
    ) -> Option<(AssocId, LinkMut<'_>)> {
        let id = self.machine_id(transport)?;
        self.link_mut(id).map(|l| (id, l))
    }

    /// Records an association the machine asked for under its own id.
    pub(crate) fn insert(&mut self, assoc: AssocId, transport: AssocId, info: AssocInfo) {
        let link = Link::new(transport, &info);
        if assoc == transport
            && let Some(i) = assoc.slot_index(self.slot_bits)
        {
            self.dense.grow_to(i + 1, || None);
            if let Some(place @ None) = self.dense.get_mut(i) {
                *place = Some(link);
                return;
            }
        }
        if assoc != transport {
            self.by_transport.insert(transport, assoc);
        }
        self.sparse.insert(assoc, Box::new(link));
    }

    /// Records an accepted association under a fresh driver-chosen id (top bit clear): its
    /// transport id when that is free.
    pub(crate) fn insert_accepted(&mut self, transport: AssocId, info: AssocInfo) -> AssocId {
        if transport.0 != 0
            && !AssocIdAllocator::is_machine_chosen(transport)
            && !self.contains(transport)
        {
            self.insert(transport, transport, info);
            return transport;
        }
        let id = loop {
            self.next_local = (self.next_local + 1) & !AssocIdAllocator::MACHINE_BIT;
            let id = AssocId(self.next_local);
            if self.next_local != 0 && !self.contains(id) {
                break id;
            }
        };
        self.insert(id, transport, info);
        id
    }

    pub(crate) fn remove(&mut self, assoc: AssocId) -> Option<Removed> {
        let link = match self.dense_pos(assoc) {
            Some(i) => {
                let link = self.dense.get_mut(i)?.take()?;
                // The table ends at its last link (`iter` walks it).
                while self.dense.last().is_some_and(Option::is_none) {
                    self.dense.pop();
                }
                link
            }
            None => *self.sparse.remove(&assoc)?,
        };
        if self.by_transport.get(&link.transport) == Some(&assoc) {
            self.by_transport.remove(&link.transport);
        }
        Some(Removed {
            transport: link.transport,
            held: self.held.remove(&assoc),
        })
    }

    pub(crate) fn remove_by_transport(&mut self, transport: AssocId) -> Option<(AssocId, Removed)> {
        let id = self.machine_id(transport)?;
        self.by_transport.remove(&transport);
        self.remove(id).map(|l| (id, l))
    }

    /// Some link's overflow queue holds messages, or a closing link waits for its
    /// hand-over: the overflow pump has work.
    pub(crate) fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// The links with an overflow queue (or closing), for the overflow pump.
    pub(crate) fn held_ids(&self) -> Vec<AssocId> {
        self.held.keys().copied().collect()
    }

    /// Bytes held in all overflow queues (closing links included).
    pub(crate) fn total_overflow_bytes(&self) -> usize {
        self.held.values().map(|q| q.bytes).sum()
    }

    pub(crate) fn transport_ids(&self) -> impl Iterator<Item = AssocId> + '_ {
        self.links().map(|(_, l)| l.transport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> AssocInfo {
        AssocInfo {
            kind: TransportKind::Tcp,
            channel: None,
            outbound: false,
            up_since: None,
        }
    }

    #[test]
    fn accepted_ids_have_the_top_bit_clear_and_map_both_ways() {
        let mut t = AssocTable::default();
        let a = t.insert_accepted(AssocId(7), info());
        let b = t.insert_accepted(AssocId(9), info());
        assert_ne!(a, b);
        assert!(!AssocIdAllocator::is_machine_chosen(a));
        let m = AssocId(AssocIdAllocator::MACHINE_BIT | 1);
        t.insert(m, AssocId(8), info());
        assert_eq!(t.machine_id(AssocId(8)), Some(m));
        assert_eq!(t.transport_id(a), Some(AssocId(7)));
        assert_eq!(t.machine_id(AssocId(7)), Some(a));
        assert_eq!(t.len(), 3);
        assert_eq!(t.machine_id(AssocId(1234)), None);
        // A transport id that cannot serve as the machine-visible id (top bit set), then one
        // that is already taken as such: other ids are chosen, mapped both ways.
        let odd = AssocId(AssocIdAllocator::MACHINE_BIT | 5);
        let c = t.insert_accepted(odd, info());
        assert!(!AssocIdAllocator::is_machine_chosen(c));
        let d = t.insert_accepted(c, info());
        assert_ne!(d, c);
        assert_eq!(t.machine_id(odd), Some(c));
        assert_eq!(t.machine_id(c), Some(d));
        assert_eq!(t.transport_id(d), Some(c));
        let (id, _) = t.remove_by_transport(c).unwrap();
        assert_eq!(id, d);
        assert_eq!(t.machine_id(odd), Some(c));
        assert!(t.remove(c).is_some());
        assert_eq!(t.machine_id(odd), None);
        assert!(t.remove(a).is_some());
        let (id, _) = t.remove_by_transport(AssocId(9)).unwrap();
        assert_eq!(id, b);
        assert!(t.remove(m).is_some());
        assert_eq!(t.machine_id(AssocId(8)), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn accepted_links_lie_inline_at_their_slot_and_fall_back_to_boxes() {
        // Transport ids with 4 slot bits: slot 3 at generations 1 and 2.
        let (g1, g2) = (AssocId((1 << 4) | 3), AssocId((2 << 4) | 3));
        let mut t = AssocTable::new(4);
        assert_eq!(t.insert_accepted(g1, info()), g1);
        assert!(
            t.sparse.is_empty(),
            "accepted under its transport id: inline"
        );
        assert_eq!(t.dense.len(), 4);
        // The slot's next association comes up before the old one's link is gone (a link
        // being closed): boxed, and both are found.
        assert_eq!(t.insert_accepted(g2, info()), g2);
        assert_eq!(t.sparse.len(), 1);
        assert_eq!(
            (t.transport_id(g1), t.transport_id(g2)),
            (Some(g1), Some(g2))
        );
        assert_eq!((t.machine_id(g1), t.machine_id(g2)), (Some(g1), Some(g2)));
        assert_eq!(t.len(), 2);
        // An id of the slot at another generation finds neither.
        assert_eq!(t.get(AssocId((7 << 4) | 3)), None);
        assert_eq!(t.machine_id(AssocId((7 << 4) | 3)), None);
        // The machine's own connect: boxed, mapped both ways.
        let m = AssocId(AssocIdAllocator::MACHINE_BIT | 1);
        let tm = AssocId((1 << 4) | 9);
        t.insert(m, tm, info());
        assert_eq!(t.machine_id(tm), Some(m));
        assert_eq!(t.dense.len(), 4, "a connect takes no inline place");
        t.link_mut(g1)
            .unwrap()
            .set_up(Instant::from_millis(5), Some(ChannelKind::Enrp));
        t.link_mut(g2)
            .unwrap()
            .set_up(Instant::from_millis(6), None);
        let i1 = t.get(g1).unwrap();
        assert_eq!(i1.up_since, Some(Instant::from_millis(5)));
        assert_eq!(i1.channel, Some(ChannelKind::Enrp));
        let i2 = t.get(g2).unwrap();
        assert_eq!(
            (i2.up_since, i2.channel),
            (Some(Instant::from_millis(6)), None)
        );
        let mut ids: Vec<AssocId> = t.iter().map(|(id, _)| id).collect();
        ids.sort();
        assert_eq!(ids, vec![g1, g2, m]);
        // Removal: the inline one, then the table ends at its last link.
        let (id, l) = t.remove_by_transport(g1).unwrap();
        assert_eq!((id, l.transport), (g1, g1));
        assert!(t.dense.is_empty());
        assert_eq!(t.get(g1), None);
        assert!(t.remove(g2).is_some());
        assert_eq!(t.remove_by_transport(tm).map(|(id, _)| id), Some(m));
        assert!(t.is_empty() && t.sparse.is_empty() && t.by_transport.is_empty());
    }

    #[test]
    fn a_link_is_small() {
        assert!(
            size_of::<Option<Link>>() <= 16,
            "{}",
            size_of::<Option<Link>>()
        );
    }

    #[test]
    fn overflow_queues_lie_beside_the_links_only_while_they_hold_something() {
        let (a, b) = (AssocId(1), AssocId(2));
        let mut t = AssocTable::new(4);
        t.insert(a, a, info());
        t.insert(b, b, info());
        let held = |n: usize| Held {
            ppid: 11,
            stream: 0,
            data: Bytes::from(vec![0; n]),
        };
        let mut l = t.link_mut(a).unwrap();
        assert!(l.overflow.is_empty() && !l.closing());
        l.overflow.push_back(held(3));
        l.overflow.push_back(held(4));
        assert_eq!((l.overflow.len(), l.overflow.bytes()), (2, 7));
        assert_eq!((t.overflow_bytes(a), t.overflow_bytes(b)), (7, 0));
        assert_eq!(t.total_overflow_bytes(), 7);
        assert!(t.link_mut(b).unwrap().overflow.is_empty(), "b's own queue");
        let mut l = t.link_mut(a).unwrap();
        assert_eq!(l.overflow.pop_front().map(|h| h.data.len()), Some(3));
        assert_eq!(l.overflow.pop_front().map(|h| h.data.len()), Some(4));
        assert!(l.overflow.pop_front().is_none());
        assert!(t.held.is_empty(), "an emptied queue is let go");
        // Closing with something held: the link is no longer live but stays until removed.
        let mut l = t.link_mut(b).unwrap();
        l.overflow.push_back(held(5));
        l.set_closing();
        assert!(l.closing());
        l.overflow.clear();
        assert!(t.link_mut(b).unwrap().closing(), "clear keeps the mark");
        assert_eq!(t.get(b), None);
        assert_eq!(t.len(), 1);
        t.link_mut(b).unwrap().overflow.push_back(held(6));
        let r = t.remove(b).unwrap();
        assert!(r.closing());
        assert_eq!((r.transport, r.held_messages()), (b, 1));
        assert!(t.held.is_empty());
    }

    #[test]
    fn packed_info_gives_back_what_went_in() {
        let mut all = vec![info()];
        for kind in [TransportKind::Sctp, TransportKind::Tcp] {
            let channels = rtf::ChannelKind::ALL.map(|k| Some(channel_from_rtf(k)));
            for channel in [None].into_iter().chain(channels) {
                for outbound in [false, true] {
                    for up_since in [
                        None,
                        Some(Instant::ZERO),
                        Some(Instant::from_micros((1 << 56) - 1)),
                    ] {
                        all.push(AssocInfo {
                            kind,
                            channel,
                            outbound,
                            up_since,
                        });
                    }
                }
            }
        }
        for i in all {
            assert_eq!(PackedInfo::new(&i).get(), i);
        }
        // Coming up later and learning the channel then change only those.
        let mut p = PackedInfo::new(&info());
        p.set_up(Instant::from_millis(7));
        p.set_channel(Some(ChannelKind::Enrp));
        let i = p.get();
        assert_eq!(
            (i.kind, i.outbound, i.up_since, i.channel),
            (
                TransportKind::Tcp,
                false,
                Some(Instant::from_millis(7)),
                Some(ChannelKind::Enrp)
            )
        );
        // A time beyond 2^56 µs (2,283 years) is kept as the largest one.
        p.set_up(Instant::from_micros(u64::MAX));
        assert_eq!(p.get().up_since, Some(Instant::from_micros((1 << 56) - 1)));
    }

    #[test]
    fn csp_entry_reports_duration_since_up() {
        let mut i = info();
        let now = Instant::from_millis(5000);
        assert_eq!(
            i.csp_entry(ComponentId(1), 11, now).duration_us,
            CSP_DURATION_UNKNOWN
        );
        i.up_since = Some(Instant::from_millis(3000));
        let e = i.csp_entry(ComponentId(0x0100_0000_0000_0001), 12, now);
        assert_eq!(e.duration_us, 2_000_000);
        assert_eq!(e.protocol, CspProtocol::Tcp);
        assert_eq!(e.ppid, 12);
    }

    #[test]
    fn channel_kinds_round_trip() {
        for k in rtf::ChannelKind::ALL {
            assert_eq!(channel_to_rtf(channel_from_rtf(k)), k);
        }
    }
}
