//! Read-only views into the handlespace: PEs, pools, selections and ordered walks.

use super::id_set::IdIter;
use core::ops::Bound;
use std::collections::btree_map;

use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{AddressList, TransportParameter, TransportProtocol};
use smallvec::SmallVec;

use super::element::{NO_DEADLINE, record_policy};
use super::{Handlespace, PoolElementInfo, TimerKind};
use crate::{AssocId, Instant};

/// A PE in the handlespace (valid until the handlespace is next changed).
#[derive(Clone, Copy)]
pub struct ElementRef<'a> {
    hs: &'a Handlespace,
    slot: u32,
}

impl core::fmt::Debug for ElementRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ElementRef")
            .field("pool", self.pool_handle())
            .field("pe_id", &self.pe_id())
            .field("home", &self.home_registrar())
            .finish()
    }
}

impl<'a> ElementRef<'a> {
    pub(crate) fn new(hs: &'a Handlespace, slot: u32) -> Self {
        ElementRef { hs, slot }
    }

    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    fn rec(&self) -> &'a super::element::PeRecord {
        self.hs.record(self.slot)
    }

    /// The PE identifier.
    pub fn pe_id(&self) -> PeIdentifier {
        PeIdentifier(self.rec().pe_id)
    }

    /// The pool handle.
    pub fn pool_handle(&self) -> &'a PoolHandle {
        &self.hs.pool_at(self.rec().pool).handle
    }

    /// The home registrar.
    pub fn home_registrar(&self) -> ServerId {
        ServerId(self.rec().home)
    }

    /// Registration life in milliseconds.
    pub fn registration_life(&self) -> u32 {
        self.rec().life
    }

    /// The PE's policy with its values.
    pub fn policy(&self) -> Policy {
        record_policy(
            self.hs.pool_at(self.rec().pool).policy_type,
            &self.rec().values,
        )
    }

    /// The user transport's protocol.
    pub fn user_protocol(&self) -> TransportProtocol {
        self.rec().user_protocol()
    }

    /// The user transport's port.
    pub fn user_port(&self) -> u16 {
        self.rec().user_port
    }

    /// The user transport's addresses (rebuilt from the compact record; no heap
    /// allocation for up to two addresses).
    pub fn user_addresses(&self) -> AddressList {
        self.rec().user_addresses(self.hs.addr_lists())
    }

    /// The user transport (rebuilt from the compact record; no heap allocation for up to
    /// two addresses).
    pub fn user_transport(&self) -> TransportParameter {
        self.rec()
            .user_transport(self.hs.addr_lists(), self.hs.extras_of(self.slot))
    }

    /// The ASAP transport, if known.
    pub fn asap_transport(&self) -> Option<TransportParameter> {
        self.rec()
            .asap_transport(self.hs.addr_lists(), self.hs.extras_of(self.slot))
    }

    /// The association the PE was registered over.
    pub fn assoc(&self) -> Option<AssocId> {
        self.rec().assoc().map(AssocId)
    }

    /// The registration-life expiry deadline, if set.
    pub fn expiry(&self) -> Option<Instant> {
        let t = self.rec().expiry;
        (t != NO_DEADLINE).then(|| Instant::from_micros(t))
    }

    /// The keep-alive timer, if set.
    pub fn keep_alive(&self) -> Option<(TimerKind, Instant)> {
        let r = self.rec();
        (r.keep_alive != NO_DEADLINE).then(|| {
            let k = if r.ka_is_timeout() {
                TimerKind::KeepAliveTimeout
            } else {
                TimerKind::KeepAliveTransmission
            };
            (k, Instant::from_micros(r.keep_alive))
        })
    }

    /// Endpoint-unreachable reports counted so far.
    pub fn unreachable_reports(&self) -> u32 {
        u32::from(self.rec().reports)
    }

    /// Accumulated degradation (degradation policies), in load units.
    pub fn degradation(&self) -> u32 {
        self.rec().degradation
    }

    /// The PE as a [`PoolElementInfo`] (for ENRP updates and table responses).
    pub fn info(&self) -> PoolElementInfo {
        PoolElementInfo {
            pe_id: self.pe_id(),
            home_registrar: self.home_registrar(),
            registration_life: self.registration_life(),
            policy: self.policy(),
            user_transport: self.user_transport(),
            asap_transport: self.asap_transport(),
        }
    }

    /// A cursor to continue a walk after this PE.
    pub fn cursor(&self) -> WalkCursor {
        WalkCursor {
            pool_handle: self.pool_handle().clone(),
            pe_id: self.pe_id(),
        }
    }
}

/// A pool in the handlespace.
#[derive(Clone, Copy)]
pub struct PoolRef<'a> {
    hs: &'a Handlespace,
    idx: u32,
}

impl core::fmt::Debug for PoolRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PoolRef")
            .field("handle", self.handle())
            .field("policy_type", &self.policy_type())
            .field("len", &self.len())
            .finish()
    }
}

impl<'a> PoolRef<'a> {
    pub(crate) fn new(hs: &'a Handlespace, idx: u32) -> Self {
        PoolRef { hs, idx }
    }

    fn pool(&self) -> &'a super::pool::Pool {
        self.hs.pool_at(self.idx)
    }

    /// The pool handle.
    pub fn handle(&self) -> &'a PoolHandle {
        &self.pool().handle
    }

    /// The pool's policy type code (fixed by its first PE).
    pub fn policy_type(&self) -> u32 {
        self.pool().policy_type
    }

    /// The pool's transport protocol (fixed by its first PE).
    pub fn protocol(&self) -> TransportProtocol {
        self.pool().protocol
    }

    /// Whether the pool's PEs offer a control channel (fixed by its first PE).
    pub fn control_channel(&self) -> bool {
        self.pool().control_channel
    }

    /// Number of PEs (never 0: empty pools are deleted).
    pub fn len(&self) -> usize {
        self.pool().len as usize
    }

    /// Always false (empty pools do not exist); for API completeness.
    pub fn is_empty(&self) -> bool {
        self.pool().len == 0
    }

    /// The PE `pe_id` of this pool.
    pub fn get(&self, pe_id: PeIdentifier) -> Option<ElementRef<'a>> {
        self.hs
            .find_slot(self.idx, pe_id.0)
            .map(|s| ElementRef::new(self.hs, s))
    }

    /// The pool's PEs in PE-identifier order.
    pub fn elements(&self) -> PoolElements<'a> {
        PoolElements::new(self.hs, self.idx, None)
    }
}

/// The result of a selection: the overall policy and the chosen PEs in answer order.
#[derive(Clone, Copy)]
pub struct Selection<'a> {
    hs: &'a Handlespace,
    policy: Policy,
    slots: &'a [u32],
}

impl<'a> Selection<'a> {
    pub(crate) fn new(hs: &'a Handlespace, policy: Policy, slots: &'a [u32]) -> Self {
        Selection { hs, policy, slots }
    }

    /// Policy for the answer's overall policy parameter (the first chosen PE's).
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Number of chosen PEs.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if no PE could be chosen.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The chosen PEs in answer order.
    pub fn elements(&self) -> impl Iterator<Item = ElementRef<'a>> + 'a {
        let hs = self.hs;
        self.slots.iter().map(move |&s| ElementRef::new(hs, s))
    }
}

/// Where a walk stopped: the next walk continues with the PE after
/// `(pool_handle, pe_id)` in walk order (the PE need not exist any more).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalkCursor {
    /// Pool handle of the last PE returned.
    pub pool_handle: PoolHandle,
    /// PE identifier of the last PE returned.
    pub pe_id: PeIdentifier,
}

fn after_id(first: bool, after: Option<&WalkCursor>) -> Bound<u32> {
    match after {
        Some(c) if first => Bound::Excluded(c.pe_id.0),
        _ => Bound::Unbounded,
    }
}

/// The PEs of one pool in PE-identifier order (merging the per-owner sets).
pub struct PoolElements<'a> {
    hs: &'a Handlespace,
    pool: u32,
    heads: SmallVec<[core::iter::Peekable<IdIter<'a>>; 4]>,
}

impl<'a> PoolElements<'a> {
    fn new(hs: &'a Handlespace, pool: u32, after: Option<u32>) -> Self {
        let lo = after.map_or(Bound::Unbounded, Bound::Excluded);
        let heads = hs
            .pool_at(pool)
            .by_owner
            .values()
            .map(|s| s.range_from(lo).peekable())
            .collect();
        PoolElements { hs, pool, heads }
    }
}

impl<'a> Iterator for PoolElements<'a> {
    type Item = ElementRef<'a>;

    fn next(&mut self) -> Option<ElementRef<'a>> {
        let mut best: Option<(usize, u32)> = None;
        for (i, h) in self.heads.iter_mut().enumerate() {
            if let Some(&&id) = h.peek()
                && best.is_none_or(|(_, b)| id < b)
            {
                best = Some((i, id));
            }
        }
        let (i, id) = best?;
        if let Some(h) = self.heads.get_mut(i) {
            h.next();
        }
        self.hs
            .find_slot(self.pool, id)
            .map(|s| ElementRef::new(self.hs, s))
    }
}

/// All PEs in `(pool handle, PE id)` order (ENRP W=0 walk).
pub struct Walk<'a> {
    hs: &'a Handlespace,
    pools: btree_map::Range<'a, PoolHandle, u32>,
    current: Option<PoolElements<'a>>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(hs: &'a Handlespace, after: Option<&WalkCursor>) -> Self {
        let lo = after.map_or(Bound::Unbounded, |c| Bound::Included(&c.pool_handle));
        let mut pools = hs
            .pool_order()
            .range::<PoolHandle, _>((lo, Bound::Unbounded));
        let mut current = None;
        if let Some(c) = after {
            // The cursor's own pool (if it still exists) continues after the cursor's PE.
            let mut peek = pools.clone();
            if let Some((h, &p)) = peek.next()
                && *h == c.pool_handle
            {
                pools = peek;
                current = Some(PoolElements::new(hs, p, Some(c.pe_id.0)));
            }
        }
        Walk { hs, pools, current }
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = ElementRef<'a>;

    fn next(&mut self) -> Option<ElementRef<'a>> {
        loop {
            if let Some(cur) = &mut self.current
                && let Some(e) = cur.next()
            {
                return Some(e);
            }
            let (_, &p) = self.pools.next()?;
            self.current = Some(PoolElements::new(self.hs, p, None));
        }
    }
}

/// The PEs of one home registrar in `(pool handle, PE id)` order (ENRP W=1 walk).
pub struct OwnerWalk<'a> {
    hs: &'a Handlespace,
    home: ServerId,
    pools: Option<btree_map::Range<'a, PoolHandle, u32>>,
    current: Option<(u32, IdIter<'a>)>,
}

impl<'a> OwnerWalk<'a> {
    pub(crate) fn new(hs: &'a Handlespace, home: ServerId, after: Option<&WalkCursor>) -> Self {
        let Some(op) = hs.owner_pools(home) else {
            return OwnerWalk {
                hs,
                home,
                pools: None,
                current: None,
            };
        };
        let lo = after.map_or(Bound::Unbounded, |c| Bound::Included(&c.pool_handle));
        let mut pools = op.range::<PoolHandle, _>((lo, Bound::Unbounded));
        let mut current = None;
        if let Some(c) = after {
            let mut peek = pools.clone();
            if let Some((h, &p)) = peek.next()
                && *h == c.pool_handle
            {
                pools = peek;
                current = Self::pool_range(hs, home, p, after_id(true, after));
            }
        }
        OwnerWalk {
            hs,
            home,
            pools: Some(pools),
            current,
        }
    }

    fn pool_range(
        hs: &'a Handlespace,
        home: ServerId,
        p: u32,
        lo: Bound<u32>,
    ) -> Option<(u32, IdIter<'a>)> {
        hs.pool_at(p)
            .by_owner
            .get(&home)
            .map(|s| (p, s.range_from(lo)))
    }
}

impl<'a> Iterator for OwnerWalk<'a> {
    type Item = ElementRef<'a>;

    fn next(&mut self) -> Option<ElementRef<'a>> {
        loop {
            if let Some((p, r)) = &mut self.current
                && let Some(&id) = r.next()
            {
                let p = *p;
                return self
                    .hs
                    .find_slot(p, id)
                    .map(|s| ElementRef::new(self.hs, s));
            }
            let (_, &p) = self.pools.as_mut()?.next()?;
            self.current = Self::pool_range(self.hs, self.home, p, Bound::Unbounded);
        }
    }
}
