//! Pool element records: the public description of a PE ([`PoolElementInfo`]), the compact
//! internal record and its chunked slab.

use crate::paged::PagedVec;
use bytes::Bytes;
use core::net::{IpAddr, Ipv4Addr};
use rserpool_proto::ids::{PeIdentifier, ServerId};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{AddressList, TransportParameter, TransportProtocol};

/// A pool element as registered (ASAP) or announced (ENRP): everything the Pool Element
/// parameter carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolElementInfo {
    /// The PE identifier (non-zero).
    pub pe_id: PeIdentifier,
    /// Home registrar (PR-H) of the PE.
    pub home_registrar: ServerId,
    /// Registration life in milliseconds (RSPLIB units).
    pub registration_life: u32,
    /// The PE's policy with its own values; its type must match the pool's.
    pub policy: Policy,
    /// Where PUs reach the PE.
    pub user_transport: TransportParameter,
    /// Where registrars reach the PE (ASAP transport), if known.
    pub asap_transport: Option<TransportParameter>,
}

/// Marker for "no index position / no link".
pub(crate) const NIL: u32 = u32::MAX;
/// `PeRecord::pool` of a free slot.
pub(crate) const FREE: u32 = u32::MAX;
/// "No deadline".
pub(crate) const NO_DEADLINE: u64 = u64::MAX;

const PROTO_NONE: u8 = 7;
const BIT_ASSOC: u8 = 0x40;
const BIT_KA_TIMEOUT: u8 = 0x80;

pub(crate) fn proto_code(p: TransportProtocol) -> u8 {
    match p {
        TransportProtocol::Sctp => 0,
        TransportProtocol::Tcp => 1,
        TransportProtocol::Udp => 2,
        TransportProtocol::UdpLite => 3,
        TransportProtocol::Dccp => 4,
        TransportProtocol::Opaque => 5,
    }
}

fn proto_from_code(c: u8) -> TransportProtocol {
    match c {
        0 => TransportProtocol::Sctp,
        1 => TransportProtocol::Tcp,
        2 => TransportProtocol::Udp,
        3 => TransportProtocol::UdpLite,
        4 => TransportProtocol::Dccp,
        _ => TransportProtocol::Opaque,
    }
}

/// Whether a transport needs the out-of-line extras (DCCP service code, opaque bytes).
pub(crate) fn needs_extra(p: TransportProtocol) -> bool {
    matches!(p, TransportProtocol::Dccp | TransportProtocol::Opaque)
}

/// Rarely used transport fields, kept out of line.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExtraFields {
    pub dccp_service_code: u32,
    pub opaque: Bytes,
}

/// Out-of-line fields of both transports of a PE (only for DCCP / Opaque transports).
#[derive(Clone, Debug, Default)]
pub(crate) struct Extras {
    pub user: ExtraFields,
    pub asap: ExtraFields,
}

impl Extras {
    pub(crate) fn from_transports(
        user: &TransportParameter,
        asap: Option<&TransportParameter>,
    ) -> Option<Extras> {
        let want = needs_extra(user.protocol) || asap.is_some_and(|a| needs_extra(a.protocol));
        if !want {
            return None;
        }
        let f = |t: &TransportParameter| ExtraFields {
            dccp_service_code: if t.protocol == TransportProtocol::Dccp {
                t.dccp_service_code
            } else {
                0
            },
            opaque: if t.protocol == TransportProtocol::Opaque {
                t.opaque.clone()
            } else {
                Bytes::new()
            },
        };
        Some(Extras {
            user: f(user),
            asap: asap.map(f).unwrap_or_default(),
        })
    }
}

/// `PeRecord::addr_form` of a record whose addresses are kept in [`AddrLists`].
const FORM_SPILLED: u8 = 0x80;

/// The compact internal record of one PE (88 bytes). Up to two IPv4 addresses (one user +
/// one ASAP address, the usual case) are stored inline as 4 bytes each; IPv6 addresses
/// and longer lists are kept out of line in the slab's [`AddrLists`].
#[derive(Debug, Clone)]
pub(crate) struct PeRecord {
    /// Inline form: the IPv4 addresses (user first, then ASAP); spilled form: the index of
    /// the address list in [`AddrLists`] and the number of user addresses in it.
    pub addr: [u32; 2],
    /// Registration-life expiry deadline (µs), [`NO_DEADLINE`] if none.
    pub expiry: u64,
    /// Keep-alive deadline (µs), [`NO_DEADLINE`] if none.
    pub keep_alive: u64,
    /// Association the PE was registered over (valid if the assoc bit is set).
    pub assoc: u64,
    /// Policy values in wire order (unused ones 0).
    pub values: [u32; 4],
    pub pe_id: u32,
    /// Pool index, [`FREE`] for a free slot.
    pub pool: u32,
    pub home: u32,
    pub life: u32,
    /// Accumulated degradation (degradation policies), load units.
    pub degradation: u32,
    /// Association list links ([`NIL`] = none); `assoc_next` is also the free-list link.
    pub assoc_prev: u32,
    pub assoc_next: u32,
    pub user_port: u16,
    pub user_use: u16,
    pub asap_port: u16,
    pub asap_use: u16,
    /// Endpoint-unreachable reports (saturating).
    pub reports: u16,
    /// [`FORM_SPILLED`], or the inline form: the number of user addresses in bits 0-1,
    /// of ASAP addresses in bits 2-3.
    pub addr_form: u8,
    /// bits 0-2 user protocol, 3-5 ASAP protocol (7 = none), 6 has assoc, 7 keep-alive
    /// timer is a timeout.
    pub bits: u8,
}

/// The out-of-line address lists of PEs whose addresses do not fit inline (IPv6
/// addresses, or more than two addresses): per list, the user transport addresses, then
/// the ASAP transport addresses (the record keeps the number of user addresses). Freed
/// lists are empty and reused.
#[derive(Debug, Default)]
pub(crate) struct AddrLists {
    lists: Vec<Box<[IpAddr]>>,
    free: Vec<u32>,
}

impl AddrLists {
    fn alloc(&mut self, addrs: Box<[IpAddr]>) -> u32 {
        if let Some(i) = self.free.pop()
            && let Some(e) = self.lists.get_mut(i as usize)
        {
            *e = addrs;
            return i;
        }
        self.lists.push(addrs);
        (self.lists.len() - 1) as u32
    }

    fn release(&mut self, i: u32) {
        if let Some(e) = self.lists.get_mut(i as usize) {
            *e = Box::default();
            self.free.push(i);
        }
    }

    /// `(user addresses, ASAP addresses)` of list `i` with `user` user addresses.
    fn split(&self, i: u32, user: u32) -> (&[IpAddr], &[IpAddr]) {
        match self.lists.get(i as usize) {
            Some(e) => e.split_at_checked(user as usize).unwrap_or((e, &[])),
            None => (&[], &[]),
        }
    }

    /// Heap bytes allocated (the table and its lists).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.lists.capacity() * core::mem::size_of::<Box<[IpAddr]>>()
            + self.free.capacity() * 4
            + self
                .lists
                .iter()
                .map(|e| e.len() * core::mem::size_of::<IpAddr>())
                .sum::<usize>()
    }
}

impl PeRecord {
    pub(crate) fn free() -> PeRecord {
        PeRecord {
            addr: [0; 2],
            expiry: NO_DEADLINE,
            keep_alive: NO_DEADLINE,
            assoc: 0,
            values: [0; 4],
            pe_id: 0,
            pool: FREE,
            home: 0,
            life: 0,
            degradation: 0,
            assoc_prev: NIL,
            assoc_next: NIL,
            user_port: 0,
            user_use: 0,
            asap_port: 0,
            asap_use: 0,
            reports: 0,
            addr_form: 0,
            bits: PROTO_NONE << 3,
        }
    }

    /// Releases an out-of-line address list (the record then has no addresses).
    pub(crate) fn release_addrs(&mut self, lists: &mut AddrLists) {
        if self.addr_form == FORM_SPILLED {
            lists.release(self.addr[0]);
        }
        self.addr_form = 0;
        self.addr = [0; 2];
    }

    /// Stores the transports (not the extras), releasing the previous addresses.
    pub(crate) fn set_transports(
        &mut self,
        lists: &mut AddrLists,
        user: &TransportParameter,
        asap: Option<&TransportParameter>,
    ) {
        self.release_addrs(lists);
        let ua = user.addresses.as_slice();
        let aa = asap.map_or(&[][..], |a| a.addresses.as_slice());
        let mut inline = [0u32; 2];
        let mut fits = ua.len() + aa.len() <= 2;
        for (a, o) in ua.iter().chain(aa).zip(inline.iter_mut()) {
            match a {
                IpAddr::V4(v) => *o = u32::from(*v),
                IpAddr::V6(_) => fits = false,
            }
        }
        if fits {
            self.addr = inline;
            self.addr_form = (ua.len() | aa.len() << 2) as u8;
        } else {
            let all: Box<[IpAddr]> = ua.iter().chain(aa).copied().collect();
            let user = u32::try_from(ua.len()).unwrap_or(u32::MAX);
            self.addr = [lists.alloc(all), user];
            self.addr_form = FORM_SPILLED;
        }
        self.user_port = user.port;
        self.user_use = user.transport_use;
        let mut bits = (self.bits & (BIT_ASSOC | BIT_KA_TIMEOUT)) | proto_code(user.protocol);
        match asap {
            Some(a) => {
                self.asap_port = a.port;
                self.asap_use = a.transport_use;
                bits |= proto_code(a.protocol) << 3;
            }
            None => {
                self.asap_port = 0;
                self.asap_use = 0;
                bits |= PROTO_NONE << 3;
            }
        }
        self.bits = bits;
    }

    pub(crate) fn user_protocol(&self) -> TransportProtocol {
        proto_from_code(self.bits & 7)
    }

    pub(crate) fn asap_protocol(&self) -> Option<TransportProtocol> {
        let c = (self.bits >> 3) & 7;
        (c != PROTO_NONE).then(|| proto_from_code(c))
    }

    pub(crate) fn has_extras(&self) -> bool {
        needs_extra(self.user_protocol()) || self.asap_protocol().is_some_and(needs_extra)
    }

    /// The user (`asap` false) or ASAP transport addresses.
    fn addresses(&self, lists: &AddrLists, asap: bool) -> AddressList {
        if self.addr_form == FORM_SPILLED {
            let (u, a) = lists.split(self.addr[0], self.addr[1]);
            return AddressList::from_slice(if asap { a } else { u });
        }
        let nu = usize::from(self.addr_form & 3);
        let na = usize::from((self.addr_form >> 2) & 3);
        let range = if asap { nu..nu + na } else { 0..nu };
        self.addr
            .get(range)
            .unwrap_or(&[])
            .iter()
            .map(|&a| IpAddr::V4(Ipv4Addr::from(a)))
            .collect()
    }

    pub(crate) fn user_addresses(&self, lists: &AddrLists) -> AddressList {
        self.addresses(lists, false)
    }

    pub(crate) fn assoc(&self) -> Option<u64> {
        (self.bits & BIT_ASSOC != 0).then_some(self.assoc)
    }

    pub(crate) fn set_assoc_bit(&mut self, on: bool) {
        if on {
            self.bits |= BIT_ASSOC;
        } else {
            self.bits &= !BIT_ASSOC;
        }
    }

    pub(crate) fn ka_is_timeout(&self) -> bool {
        self.bits & BIT_KA_TIMEOUT != 0
    }

    pub(crate) fn set_ka_timeout_bit(&mut self, on: bool) {
        if on {
            self.bits |= BIT_KA_TIMEOUT;
        } else {
            self.bits &= !BIT_KA_TIMEOUT;
        }
    }

    /// The earlier of the two deadlines.
    pub(crate) fn next_deadline(&self) -> u64 {
        self.expiry.min(self.keep_alive)
    }

    pub(crate) fn user_transport(
        &self,
        lists: &AddrLists,
        extras: Option<&Extras>,
    ) -> TransportParameter {
        let protocol = self.user_protocol();
        let e = extras.map(|e| &e.user);
        build(
            protocol,
            self.user_port,
            self.user_use,
            self.addresses(lists, false),
            e,
        )
    }

    pub(crate) fn asap_transport(
        &self,
        lists: &AddrLists,
        extras: Option<&Extras>,
    ) -> Option<TransportParameter> {
        let protocol = self.asap_protocol()?;
        let e = extras.map(|e| &e.asap);
        Some(build(
            protocol,
            self.asap_port,
            self.asap_use,
            self.addresses(lists, true),
            e,
        ))
    }
}

fn build(
    protocol: TransportProtocol,
    port: u16,
    transport_use: u16,
    addresses: AddressList,
    extra: Option<&ExtraFields>,
) -> TransportParameter {
    TransportParameter {
        protocol,
        port,
        transport_use,
        dccp_service_code: extra.map_or(0, |e| e.dccp_service_code),
        addresses,
        opaque: extra.map_or_else(Bytes::new, |e| e.opaque.clone()),
    }
}

/// Policy values in wire order, padded with zeros.
pub(crate) fn policy_values(p: &Policy) -> [u32; 4] {
    let v = p.values();
    let mut out = [0u32; 4];
    for (o, x) in out.iter_mut().zip(v.iter()) {
        *o = *x;
    }
    out
}

/// The policy of a record in a pool of type `policy_type`.
pub(crate) fn record_policy(policy_type: u32, values: &[u32; 4]) -> Policy {
    // The type was validated when the pool was created from a `Policy`, so it is known.
    Policy::from_type_and_values(policy_type, values).unwrap_or(Policy::RoundRobin)
}

const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Records in fixed-size chunks (no doubling slack), with a free list, plus two dense
/// per-slot arrays for the index back-pointers (written on every heap move, so they are
/// kept out of the records to stay cache-resident; in pages that never move, like the
/// chunks, so that growing leaves no freed buffer behind), and the out-of-line address
/// lists.
#[derive(Debug, Default)]
pub(crate) struct Slab {
    chunks: Vec<Vec<PeRecord>>,
    /// Addresses that do not fit inline in their record.
    lists: AddrLists,
    /// Position of each slot in its pool's selection structure.
    sel_pos: PagedVec<u32>,
    /// Position of each slot in the timer heap, [`NIL`] if it has no timer.
    timer_pos: PagedVec<u32>,
    free_head: u32,
    used: usize,
}

impl Slab {
    pub(crate) fn new() -> Slab {
        Slab {
            chunks: Vec::new(),
            lists: AddrLists::default(),
            sel_pos: PagedVec::new(),
            timer_pos: PagedVec::new(),
            free_head: NIL,
            used: 0,
        }
    }

    /// The chunk and the index in it of `slot`.
    #[inline]
    fn place(slot: u32) -> (usize, usize) {
        ((slot >> CHUNK_BITS) as usize, slot as usize & (CHUNK - 1))
    }

    #[inline]
    pub(crate) fn get(&self, slot: u32) -> &PeRecord {
        let (c, i) = Self::place(slot);
        &self.chunks[c][i]
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, slot: u32) -> &mut PeRecord {
        self.get_mut_with_lists(slot).0
    }

    /// The record of `slot` with the address lists (to change its transports).
    #[inline]
    pub(crate) fn get_mut_with_lists(&mut self, slot: u32) -> (&mut PeRecord, &mut AddrLists) {
        let (c, i) = Self::place(slot);
        (&mut self.chunks[c][i], &mut self.lists)
    }

    /// The out-of-line address lists.
    #[inline]
    pub(crate) fn lists(&self) -> &AddrLists {
        &self.lists
    }

    /// The out-of-line address lists, to fill a record before [`Slab::alloc`].
    pub(crate) fn lists_mut(&mut self) -> &mut AddrLists {
        &mut self.lists
    }

    #[inline]
    pub(crate) fn pos(&self, slot: u32) -> u32 {
        self.sel_pos[slot as usize]
    }

    #[inline]
    pub(crate) fn set_pos(&mut self, slot: u32, pos: u32) {
        self.sel_pos[slot as usize] = pos;
    }

    #[inline]
    pub(crate) fn timer_pos(&self, slot: u32) -> u32 {
        self.timer_pos[slot as usize]
    }

    /// Stores `rec` in a free slot and returns the slot.
    pub(crate) fn alloc(&mut self, rec: PeRecord) -> u32 {
        self.used += 1;
        if self.free_head != NIL {
            let slot = self.free_head;
            let r = self.get_mut(slot);
            let next = r.assoc_next;
            *r = rec;
            self.free_head = next;
            return slot;
        }
        let need_chunk = self.chunks.last().is_none_or(|c| c.len() == CHUNK);
        if need_chunk {
            self.chunks.push(Vec::with_capacity(CHUNK));
            for v in [&mut self.sel_pos, &mut self.timer_pos] {
                v.grow_to(v.len() + CHUNK, || NIL);
            }
        }
        let ci = self.chunks.len() - 1;
        let chunk = &mut self.chunks[ci];
        let slot = (ci << CHUNK_BITS | chunk.len()) as u32;
        chunk.push(rec);
        slot
    }

    /// The records' timer order and the timer positions, at once: the timer index orders
    /// slots by their records' deadlines while it moves their positions.
    pub(crate) fn timer_order(&mut self) -> (TimerOrder<'_>, &mut PagedVec<u32>) {
        (TimerOrder(&self.chunks), &mut self.timer_pos)
    }

    /// Frees `slot` (and its out-of-line addresses).
    pub(crate) fn free(&mut self, slot: u32) {
        self.used -= 1;
        let mut f = PeRecord::free();
        f.assoc_next = self.free_head;
        self.free_head = slot;
        self.sel_pos[slot as usize] = NIL;
        self.timer_pos[slot as usize] = NIL;
        let (r, lists) = self.get_mut_with_lists(slot);
        r.release_addrs(lists);
        *r = f;
    }

    /// Bytes allocated by the slab (chunks, index arrays, out-of-line addresses).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.lists.allocated_bytes()
            + self.sel_pos.allocated_bytes()
            + self.timer_pos.allocated_bytes()
            + self.chunks.capacity() * core::mem::size_of::<Vec<PeRecord>>()
            + self
                .chunks
                .iter()
                .map(|c| c.capacity() * core::mem::size_of::<PeRecord>())
                .sum::<usize>()
    }

    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

/// The order of the timer index: slots by `(earlier deadline of the record, slot)`.
pub(crate) struct TimerOrder<'a>(&'a [Vec<PeRecord>]);

impl TimerOrder<'_> {
    /// The sort key of `slot`.
    #[inline]
    pub(crate) fn key(&self, slot: u32) -> (u64, u32) {
        let (c, i) = Slab::place(slot);
        let dl = self
            .0
            .get(c)
            .and_then(|c| c.get(i))
            .map_or(NO_DEADLINE, PeRecord::next_deadline);
        (dl, slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_compact() {
        assert_eq!(core::mem::size_of::<PeRecord>(), 88);
    }

    #[test]
    fn transports_round_trip() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v4b: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v6: IpAddr = "::1".parse().unwrap_or(IpAddr::from([0u16; 8]));
        let mut lists = AddrLists::default();
        let mut r = PeRecord::free();
        let cases = [
            (vec![v4], Some(vec![v4b]), false),
            (vec![v4, v4b], None, false),
            (vec![v4b], Some(vec![]), false),
            (vec![v4, v6], Some(vec![v4]), true),
            (vec![v6], None, true),
            (vec![v4], Some(vec![v6]), true),
            (vec![v4, v4b], Some(vec![v4]), true),
            (vec![v4], Some(vec![v4b, v4]), true),
        ];
        for (u, a, spilled) in cases {
            let user = TransportParameter::sctp(5000, 1, u.clone());
            let asap = a.map(|a| TransportParameter::sctp(6000, 0, a));
            r.set_transports(&mut lists, &user, asap.as_ref());
            assert_eq!(r.addr_form == FORM_SPILLED, spilled, "{u:?}");
            assert_eq!(r.user_transport(&lists, None), user);
            assert_eq!(r.asap_transport(&lists, None), asap);
            assert_eq!(r.user_addresses(&lists).as_slice(), &u[..]);
        }
        // Re-registration replaces (and frees) the previous out-of-line list.
        let used = lists.lists.len();
        let user = TransportParameter::sctp(5000, 1, [v6, v4]);
        r.set_transports(&mut lists, &user, None);
        assert_eq!(lists.lists.len(), used);
        assert_eq!(r.user_transport(&lists, None), user);
        r.release_addrs(&mut lists);
        assert!(lists.lists.iter().all(|e| e.is_empty()));
        let mut op = TransportParameter::with(TransportProtocol::Opaque, 0, 0, []);
        op.opaque = Bytes::from_static(b"hello");
        let ex = Extras::from_transports(&op, None);
        r.set_transports(&mut lists, &op, None);
        assert!(r.has_extras());
        assert_eq!(r.user_transport(&lists, ex.as_ref()), op);
    }

    #[test]
    fn slab_reuses_slots() {
        let mut s = Slab::new();
        let a = s.alloc(PeRecord::free());
        let b = s.alloc(PeRecord::free());
        assert_ne!(a, b);
        s.free(a);
        let c = s.alloc(PeRecord::free());
        assert_eq!(a, c);
        assert_eq!(s.used(), 2);
        for _ in 0..3000 {
            s.alloc(PeRecord::free());
        }
        assert_eq!(s.used(), 3002);
    }
}
