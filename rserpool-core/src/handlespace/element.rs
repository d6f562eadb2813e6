//! Pool element records: the public description of a PE ([`PoolElementInfo`]), the compact
//! internal record and its chunked slab.

use bytes::Bytes;
use core::net::IpAddr;
use rserpool_proto::ids::{PeIdentifier, ServerId};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{AddressList, TransportParameter, TransportProtocol};
use smallvec::SmallVec;

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

/// The compact internal record of one PE (128 bytes). Both transports share one small
/// address vector (inline for two addresses: one user + one ASAP address, the usual case).
#[derive(Debug, Clone)]
pub(crate) struct PeRecord {
    /// User transport addresses, then ASAP transport addresses.
    pub addrs: SmallVec<[IpAddr; 2]>,
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
    /// Number of user transport addresses at the front of `addrs`.
    pub user_addrs: u8,
    /// bits 0-2 user protocol, 3-5 ASAP protocol (7 = none), 6 has assoc, 7 keep-alive
    /// timer is a timeout.
    pub bits: u8,
}

impl PeRecord {
    pub(crate) fn free() -> PeRecord {
        PeRecord {
            addrs: SmallVec::new(),
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
            user_addrs: 0,
            bits: PROTO_NONE << 3,
        }
    }

    /// Stores the transports (not the extras).
    pub(crate) fn set_transports(
        &mut self,
        user: &TransportParameter,
        asap: Option<&TransportParameter>,
    ) {
        self.addrs.clear();
        self.addrs.extend(user.addresses.iter().copied());
        self.user_addrs = user.addresses.len().min(255) as u8;
        self.user_port = user.port;
        self.user_use = user.transport_use;
        let mut bits = (self.bits & (BIT_ASSOC | BIT_KA_TIMEOUT)) | proto_code(user.protocol);
        match asap {
            Some(a) => {
                self.addrs.extend(a.addresses.iter().copied());
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
        if self.addrs.spilled() {
            self.addrs.shrink_to_fit();
        }
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

    pub(crate) fn user_addresses(&self) -> &[IpAddr] {
        self.addrs.get(..self.user_addrs as usize).unwrap_or(&[])
    }

    pub(crate) fn asap_addresses(&self) -> &[IpAddr] {
        self.addrs.get(self.user_addrs as usize..).unwrap_or(&[])
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

    pub(crate) fn user_transport(&self, extras: Option<&Extras>) -> TransportParameter {
        let protocol = self.user_protocol();
        let e = extras.map(|e| &e.user);
        build(
            protocol,
            self.user_port,
            self.user_use,
            self.user_addresses(),
            e,
        )
    }

    pub(crate) fn asap_transport(&self, extras: Option<&Extras>) -> Option<TransportParameter> {
        let protocol = self.asap_protocol()?;
        let e = extras.map(|e| &e.asap);
        Some(build(
            protocol,
            self.asap_port,
            self.asap_use,
            self.asap_addresses(),
            e,
        ))
    }
}

fn build(
    protocol: TransportProtocol,
    port: u16,
    transport_use: u16,
    addrs: &[IpAddr],
    extra: Option<&ExtraFields>,
) -> TransportParameter {
    TransportParameter {
        protocol,
        port,
        transport_use,
        dccp_service_code: extra.map_or(0, |e| e.dccp_service_code),
        addresses: AddressList::from_slice(addrs),
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
/// kept out of the records to stay cache-resident).
#[derive(Debug, Default)]
pub(crate) struct Slab {
    chunks: Vec<Vec<PeRecord>>,
    /// Position of each slot in its pool's selection structure.
    sel_pos: Vec<u32>,
    /// Position of each slot in the timer heap, [`NIL`] if it has no timer.
    timer_pos: Vec<u32>,
    free_head: u32,
    used: usize,
}

impl Slab {
    pub(crate) fn new() -> Slab {
        Slab {
            chunks: Vec::new(),
            sel_pos: Vec::new(),
            timer_pos: Vec::new(),
            free_head: NIL,
            used: 0,
        }
    }

    #[inline]
    pub(crate) fn get(&self, slot: u32) -> &PeRecord {
        &self.chunks[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, slot: u32) -> &mut PeRecord {
        &mut self.chunks[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
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

    #[inline]
    pub(crate) fn set_timer_pos(&mut self, slot: u32, pos: u32) {
        self.timer_pos[slot as usize] = pos;
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
                v.reserve_exact(CHUNK);
                v.resize(v.len() + CHUNK, NIL);
            }
        }
        let ci = self.chunks.len() - 1;
        let chunk = &mut self.chunks[ci];
        let slot = (ci << CHUNK_BITS | chunk.len()) as u32;
        chunk.push(rec);
        slot
    }

    /// Frees `slot` and returns its former record.
    pub(crate) fn free(&mut self, slot: u32) -> PeRecord {
        self.used -= 1;
        let mut f = PeRecord::free();
        f.assoc_next = self.free_head;
        self.free_head = slot;
        self.sel_pos[slot as usize] = NIL;
        self.timer_pos[slot as usize] = NIL;
        core::mem::replace(self.get_mut(slot), f)
    }

    /// Bytes allocated by the slab itself (chunks, not the spilled address vectors).
    pub(crate) fn allocated_bytes(&self) -> usize {
        (self.sel_pos.capacity() + self.timer_pos.capacity()) * 4
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_compact() {
        assert_eq!(core::mem::size_of::<PeRecord>(), 128);
    }

    #[test]
    fn transports_round_trip() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let v6: IpAddr = "::1".parse().unwrap_or(IpAddr::from([0u16; 8]));
        let user = TransportParameter::sctp(5000, 1, [v4, v6]);
        let asap = TransportParameter::sctp(6000, 0, [v4]);
        let mut r = PeRecord::free();
        r.set_transports(&user, Some(&asap));
        assert_eq!(r.user_transport(None), user);
        assert_eq!(r.asap_transport(None), Some(asap));
        r.set_transports(&user, None);
        assert_eq!(r.asap_transport(None), None);
        let mut op = TransportParameter::with(TransportProtocol::Opaque, 0, 0, []);
        op.opaque = Bytes::from_static(b"hello");
        let ex = Extras::from_transports(&op, None);
        r.set_transports(&op, None);
        assert!(r.has_extras());
        assert_eq!(r.user_transport(ex.as_ref()), op);
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
