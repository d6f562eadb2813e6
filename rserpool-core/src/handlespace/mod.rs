//! The handlespace: pools, their pool elements, ownership, timers, checksums and pool
//! member selection — shared by the registrar (ASAP + ENRP) and the PU cache.
//!
//! # Model
//! * Pools are keyed by [`PoolHandle`]; a pool exists while it has at least one PE. Its
//!   first PE fixes the pool's policy type, transport protocol and data/control setting
//!   (RFC 5352 §3.1); later (re-)registrations must match ([`RegistrationError`] with the
//!   RFC 5354 cause to send). When the last PE leaves, the pool is deleted, and a later
//!   registration may create it anew with other settings.
//! * PEs are keyed by `(pool handle, PE identifier)` and carry their user transport,
//!   policy values, home registrar, registration life, ASAP transport, and — at a
//!   registrar — the association they were registered over.
//! * Indices (none of which duplicates the pool handle per PE):
//!   - lookup by `(pool, PE id)` and pool by handle: hash tables (seeded foldhash, used for
//!     lookup only — no output depends on hash order);
//!   - ownership: per pool, PE ids by home registrar; per registrar, its pools in handle
//!     order. Gives the ENRP W=1 walk in `(home, pool handle, PE id)` order
//!     ([`Handlespace::walk_owner`]), takeover ([`Handlespace::rehome_owner`]) and
//!     per-owner checksums; merged per pool it gives the W=0 walk in
//!     `(pool handle, PE id)` order ([`Handlespace::walk`]). Both walks resume after a
//!     [`WalkCursor`];
//!   - association → PEs (intrusive list) for [`Handlespace::remove_by_assoc`];
//!   - timers: one heap entry per PE with a deadline ([`Handlespace::next_deadline`],
//!     [`Handlespace::expired`]);
//!   - the policy's selection structure per pool ([`policy`]).
//! * ENRP checksums ([`checksum`]): one accumulator for all PEs and one per home
//!   registrar, updated on every change, never recomputed by a scan.
//!
//! The handlespace is pure: it reads no clock (deadlines are given) and owns no RNG
//! (selection takes one). Every output is deterministic for a given sequence of calls
//! and RNG outputs.
//!
//! # Differences from RSPLIB
//! Selection-order differences are listed in [`policy`]. In the handlespace itself:
//! * refusals carry RFC 5354 causes (RSPLIB's private codes in parentheses): PE id 0,
//!   empty or over-long pool handle, a transport without addresses, with too many
//!   addresses or with port 0 → 0x3 Invalid Values (0xf000, 0xf004, 0xf005); transport
//!   protocol mismatch → 0x7 (0x100a); a full handlespace → 0x6 (RSPLIB has no limits);
//! * keep-alive and expiry timers are kept per PE but never acted upon here: the caller
//!   decides (RSPLIB's registrar does not expire its own PEs by registration life; an
//!   RFC registrar does — both are possible).
//!
//! # Memory
//! A PE costs one 88-byte record (up to two IPv4 addresses inline, e.g. one user + one
//! ASAP address; IPv6 addresses and longer lists out of line) plus its share of the
//! indices: about 123–142 bytes in total in large pools with every index in use, ~210
//! bytes in pools of 10 PEs (`examples/hsbench.rs` measures it with a counting allocator).
//! The tables that grow with the PEs keep their items in pages that never move once full
//! ([`crate::paged`]), so that growing leaves no freed buffers behind in the allocator.

pub(crate) mod assoc_index;
pub mod checksum;
pub(crate) mod element;
pub(crate) mod fenwick;
pub mod heap;
pub(crate) mod id_set;
pub mod limits;
pub mod policy;
pub(crate) mod pool;
pub mod timer;
pub mod view;

use core::hash::BuildHasher;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::collections::BTreeMap;

use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;

use crate::{AssocId, Instant};
use assoc_index::AssocIndex;
use element::{AddrLists, Extras, NIL, NO_DEADLINE, PeRecord, Slab, policy_values, record_policy};
use heap::IndexedHeap;
use policy::{Scratch, Selector, default_max_increment};
use pool::Pool;

pub use checksum::ChecksumAccumulator;
pub use element::PoolElementInfo;
pub use limits::{
    HandlespaceConfig, InvalidValue, Limits, RegistrationError, ResourceLimit, TransportRole,
    UnknownPool,
};
pub use timer::{DueTimer, TimerKind};
pub use view::{ElementRef, OwnerWalk, PoolElements, PoolRef, Selection, Walk, WalkCursor};

/// Outcome of a successful [`Handlespace::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new PE (and possibly a new pool).
    Added,
    /// An existing PE was re-registered (its attributes replaced).
    Updated,
}

/// A PE removed from the handlespace, with everything needed to announce its removal
/// (ENRP Handle Update DEL_PE carries the full Pool Element parameter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedElement {
    /// Pool of the PE.
    pub pool_handle: PoolHandle,
    /// The PE as it was stored.
    pub info: PoolElementInfo,
    /// The association it was registered over, if any.
    pub assoc: Option<AssocId>,
}

/// Per home registrar: its checksum, PE count and pools (in handle order).
#[derive(Debug, Default)]
struct Owner {
    checksum: ChecksumAccumulator,
    count: usize,
    pools: BTreeMap<PoolHandle, u32>,
}

/// The handlespace. See the [module documentation](self).
#[derive(Debug)]
pub struct Handlespace {
    config: HandlespaceConfig,
    hasher: FixedState,
    slab: Slab,
    extras: BTreeMap<u32, Extras>,
    /// `(pool index, PE id)` → slot.
    elements: HashTable<u32>,
    pools: Vec<Option<Pool>>,
    free_pools: Vec<u32>,
    /// handle → pool index.
    pool_lookup: HashTable<u32>,
    pool_order: BTreeMap<PoolHandle, u32>,
    owners: BTreeMap<ServerId, Owner>,
    /// association → first slot of its list.
    assocs: AssocIndex,
    /// The timer index: slots with a deadline, by [`element::TimerOrder`].
    timers: IndexedHeap<u32>,
    checksum: ChecksumAccumulator,
    scratch: Scratch,
}

fn elem_hash(h: &FixedState, pool: u32, id: u32) -> u64 {
    h.hash_one((pool, id))
}

fn handle_hash(h: &FixedState, handle: &[u8]) -> u64 {
    h.hash_one(handle)
}

fn validate_transport(
    t: &TransportParameter,
    role: TransportRole,
    limits: &Limits,
) -> Result<(), InvalidValue> {
    if t.protocol == rserpool_proto::transport::TransportProtocol::Opaque {
        return Ok(());
    }
    let n = t.addresses.len();
    if n == 0 {
        return Err(InvalidValue::NoAddress(role));
    }
    if n > limits.addresses() {
        return Err(InvalidValue::TooManyAddresses {
            role,
            count: n,
            max: limits.addresses(),
        });
    }
    if t.port == 0 {
        return Err(InvalidValue::PortZero(role));
    }
    Ok(())
}

impl Default for Handlespace {
    fn default() -> Self {
        Handlespace::new(HandlespaceConfig::default())
    }
}

impl Handlespace {
    /// An empty handlespace.
    pub fn new(config: HandlespaceConfig) -> Handlespace {
        Handlespace {
            config,
            hasher: FixedState::with_seed(config.hash_seed),
            slab: Slab::new(),
            extras: BTreeMap::new(),
            elements: HashTable::new(),
            pools: Vec::new(),
            free_pools: Vec::new(),
            pool_lookup: HashTable::new(),
            pool_order: BTreeMap::new(),
            owners: BTreeMap::new(),
            assocs: AssocIndex::default(),
            timers: IndexedHeap::new(),
            checksum: ChecksumAccumulator::EMPTY,
            scratch: Scratch::default(),
        }
    }

    /// Association ids hold a slot index in their low `bits` bits (the driver's layout,
    /// [`Machine::handle_assoc_id_slot_bits`](crate::io::Machine::handle_assoc_id_slot_bits)):
    /// the association index keeps each association's list of PEs at that index instead
    /// of in a hash table (4 bytes per association instead of ~8). Takes effect while no
    /// PE is registered over an association; 0 = hash table only.
    pub fn set_assoc_id_slot_bits(&mut self, bits: u32) {
        self.assocs.set_slot_bits(bits);
    }

    /// The configuration.
    pub fn config(&self) -> &HandlespaceConfig {
        &self.config
    }

    /// Changes the default max increment (see [`HandlespaceConfig::max_increment`]).
    pub fn set_max_increment(&mut self, max_increment: u32) {
        self.config.max_increment = max_increment;
    }

    // ----------------------------------------------------------------------------------
    // internal lookups

    pub(crate) fn pool_at(&self, idx: u32) -> &Pool {
        self.pools[idx as usize]
            .as_ref()
            .expect("pool index refers to a live pool")
    }

    fn pool_at_mut(pools: &mut [Option<Pool>], idx: u32) -> &mut Pool {
        pools[idx as usize]
            .as_mut()
            .expect("pool index refers to a live pool")
    }

    pub(crate) fn record(&self, slot: u32) -> &PeRecord {
        self.slab.get(slot)
    }

    pub(crate) fn addr_lists(&self) -> &AddrLists {
        self.slab.lists()
    }

    pub(crate) fn extras_of(&self, slot: u32) -> Option<&Extras> {
        if self.slab.get(slot).has_extras() {
            self.extras.get(&slot)
        } else {
            None
        }
    }

    pub(crate) fn find_pool(&self, handle: &[u8]) -> Option<u32> {
        let pools = &self.pools;
        self.pool_lookup
            .find(handle_hash(&self.hasher, handle), |&i| {
                pools[i as usize]
                    .as_ref()
                    .is_some_and(|p| p.handle.as_bytes() == handle)
            })
            .copied()
    }

    pub(crate) fn find_slot(&self, pool: u32, pe_id: u32) -> Option<u32> {
        let slab = &self.slab;
        self.elements
            .find(elem_hash(&self.hasher, pool, pe_id), |&s| {
                let r = slab.get(s);
                r.pool == pool && r.pe_id == pe_id
            })
            .copied()
    }

    fn lookup(&self, handle: &PoolHandle, pe_id: PeIdentifier) -> Option<u32> {
        let p = self.find_pool(handle.as_bytes())?;
        self.find_slot(p, pe_id.0)
    }

    // ----------------------------------------------------------------------------------
    // registration

    /// Registers a PE (ASAP registration or ENRP ADD / table entry) under `handle`, or
    /// re-registers it if `(handle, info.pe_id)` exists (its attributes are replaced).
    ///
    /// `assoc` is the association the registration arrived on (registrar, ASAP); `None`
    /// (ENRP) clears any previous binding. Checks, in RSPLIB's order: handle length, PE id
    /// ≠ 0, transports (addresses 1..=max, port ≠ 0), then pool consistency (transport
    /// protocol → 0x7, data/control → 0x8, policy type → 0x5), then, for a new PE, the
    /// resource limits (0x6). A refused registration changes nothing.
    ///
    /// On re-registration, the selection state is reset as RSPLIB does: if a policy value
    /// changed or the PE has accumulated degradation, its degradation becomes 0 and it is
    /// re-sorted (keeping its round-robin position); timers and the unreachability counter
    /// are kept.
    pub fn register(
        &mut self,
        handle: &PoolHandle,
        info: &PoolElementInfo,
        assoc: Option<AssocId>,
    ) -> Result<Registered, RegistrationError> {
        let limits = self.config.limits;
        let len = handle.len();
        if len == 0 || len > limits.max_pool_handle_len {
            return Err(RegistrationError::InvalidValue(
                InvalidValue::PoolHandleLength {
                    len,
                    max: limits.max_pool_handle_len,
                },
            ));
        }
        if info.pe_id.0 == 0 {
            return Err(RegistrationError::InvalidValue(InvalidValue::PeIdentifier));
        }
        validate_transport(&info.user_transport, TransportRole::User, &limits)
            .map_err(RegistrationError::InvalidValue)?;
        if let Some(a) = &info.asap_transport {
            validate_transport(a, TransportRole::Asap, &limits)
                .map_err(RegistrationError::InvalidValue)?;
        }
        let pool_idx = self.find_pool(handle.as_bytes());
        if let Some(p) = pool_idx {
            let pool = self.pool_at(p);
            if info.user_transport.protocol != pool.protocol {
                return Err(RegistrationError::InconsistentTransport {
                    pool_protocol: pool.protocol,
                });
            }
            if info.user_transport.has_control_channel() != pool.control_channel {
                return Err(RegistrationError::InconsistentDataControl {
                    pool_control_channel: pool.control_channel,
                });
            }
            if info.policy.policy_type() != pool.policy_type {
                return Err(RegistrationError::InconsistentPolicy {
                    pool_policy_type: pool.policy_type,
                });
            }
            if let Some(slot) = self.find_slot(p, info.pe_id.0) {
                self.update(p, slot, info, assoc);
                return Ok(Registered::Updated);
            }
            if pool.len as usize >= limits.max_elements_per_pool {
                return Err(RegistrationError::LackOfResources(
                    ResourceLimit::ElementsPerPool,
                ));
            }
        }
        if self.slab.used() >= limits.max_elements {
            return Err(RegistrationError::LackOfResources(ResourceLimit::Elements));
        }
        let p = match pool_idx {
            Some(p) => p,
            None => {
                if self.pool_order.len() >= limits.max_pools {
                    return Err(RegistrationError::LackOfResources(ResourceLimit::Pools));
                }
                if limits.max_elements_per_pool == 0 {
                    return Err(RegistrationError::LackOfResources(
                        ResourceLimit::ElementsPerPool,
                    ));
                }
                self.create_pool(handle, info)
            }
        };
        self.insert(p, info, assoc);
        Ok(Registered::Added)
    }

    fn create_pool(&mut self, handle: &PoolHandle, info: &PoolElementInfo) -> u32 {
        let policy_type = info.policy.policy_type();
        let pool = Pool {
            handle: handle.clone(),
            handle_sum: checksum::handle_sum(handle.as_bytes()),
            policy_type,
            protocol: info.user_transport.protocol,
            control_channel: info.user_transport.has_control_channel(),
            len: 0,
            by_owner: Default::default(),
            selector: Selector::new(policy_type),
        };
        let idx = match self.free_pools.pop() {
            Some(i) => {
                self.pools[i as usize] = Some(pool);
                i
            }
            None => {
                self.pools.push(Some(pool));
                (self.pools.len() - 1) as u32
            }
        };
        let Self {
            pools,
            pool_lookup,
            hasher,
            ..
        } = self;
        pool_lookup.insert_unique(handle_hash(hasher, handle.as_bytes()), idx, |&i| {
            handle_hash(
                hasher,
                pools[i as usize]
                    .as_ref()
                    .map_or(&[][..], |p| p.handle.as_bytes()),
            )
        });
        self.pool_order.insert(handle.clone(), idx);
        idx
    }

    fn insert(&mut self, p: u32, info: &PoolElementInfo, assoc: Option<AssocId>) {
        let mut rec = PeRecord::free();
        rec.pe_id = info.pe_id.0;
        rec.pool = p;
        rec.home = info.home_registrar.0;
        rec.life = info.registration_life;
        rec.values = policy_values(&info.policy);
        rec.set_transports(
            self.slab.lists_mut(),
            &info.user_transport,
            info.asap_transport.as_ref(),
        );
        let slot = self.slab.alloc(rec);
        if let Some(e) = Extras::from_transports(&info.user_transport, info.asap_transport.as_ref())
        {
            self.extras.insert(slot, e);
        }
        {
            let Self {
                elements,
                slab,
                hasher,
                ..
            } = self;
            elements.insert_unique(elem_hash(hasher, p, info.pe_id.0), slot, |&s| {
                let r = slab.get(s);
                elem_hash(hasher, r.pool, r.pe_id)
            });
        }
        {
            let pool = Self::pool_at_mut(&mut self.pools, p);
            pool.len += 1;
            let ptype = pool.policy_type;
            pool.selector.insert(ptype, slot, &mut self.slab);
        }
        self.owner_add(p, slot);
        if let Some(a) = assoc {
            self.assoc_link(slot, a.0);
        }
    }

    fn update(&mut self, p: u32, slot: u32, info: &PoolElementInfo, assoc: Option<AssocId>) {
        let new_values = policy_values(&info.policy);
        {
            let pool = Self::pool_at_mut(&mut self.pools, p);
            let ptype = pool.policy_type;
            let r = self.slab.get(slot);
            if r.values != new_values || r.degradation != 0 {
                let r = self.slab.get_mut(slot);
                r.values = new_values;
                r.degradation = 0;
                pool.selector.rekey(ptype, slot, &mut self.slab);
            }
        }
        {
            let (r, lists) = self.slab.get_mut_with_lists(slot);
            r.life = info.registration_life;
            r.set_transports(lists, &info.user_transport, info.asap_transport.as_ref());
        }
        match Extras::from_transports(&info.user_transport, info.asap_transport.as_ref()) {
            Some(e) => {
                self.extras.insert(slot, e);
            }
            None => {
                self.extras.remove(&slot);
            }
        }
        if self.slab.get(slot).home != info.home_registrar.0 {
            self.owner_remove(p, slot);
            self.slab.get_mut(slot).home = info.home_registrar.0;
            self.owner_add(p, slot);
        }
        let cur = self.slab.get(slot).assoc();
        let new = assoc.map(|a| a.0);
        if cur != new {
            if cur.is_some() {
                self.assoc_unlink(slot);
            }
            if let Some(a) = new {
                self.assoc_link(slot, a);
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // ownership index

    fn owner_add(&mut self, p: u32, slot: u32) {
        let r = self.slab.get(slot);
        let (home, id) = (ServerId(r.home), r.pe_id);
        let pool = Self::pool_at_mut(&mut self.pools, p);
        let sum = checksum::element_sum(pool.handle_sum, PeIdentifier(id));
        let set = pool.by_owner.entry(home);
        let first_in_pool = set.is_empty();
        set.insert(id);
        let o = self.owners.entry(home).or_default();
        o.checksum.add_sum(sum);
        o.count += 1;
        if first_in_pool {
            o.pools.insert(pool.handle.clone(), p);
        }
        self.checksum.add_sum(sum);
    }

    fn owner_remove(&mut self, p: u32, slot: u32) {
        let r = self.slab.get(slot);
        let (home, id) = (ServerId(r.home), r.pe_id);
        let pool = Self::pool_at_mut(&mut self.pools, p);
        let sum = checksum::element_sum(pool.handle_sum, PeIdentifier(id));
        let mut pool_gone = false;
        if let Some(set) = pool.by_owner.get_mut(&home) {
            set.remove(id);
            if set.is_empty() {
                pool.by_owner.remove(&home);
                pool_gone = true;
            }
        }
        if let Some(o) = self.owners.get_mut(&home) {
            o.checksum.remove_sum(sum);
            o.count -= 1;
            if pool_gone {
                o.pools.remove(&pool.handle);
            }
            if o.count == 0 {
                self.owners.remove(&home);
            }
        }
        self.checksum.remove_sum(sum);
    }

    // ----------------------------------------------------------------------------------
    // association index (intrusive doubly linked lists)

    fn assoc_link(&mut self, slot: u32, assoc: u64) {
        let head = self.assocs.head(assoc, &self.slab, &self.hasher);
        let r = self.slab.get_mut(slot);
        r.assoc = assoc;
        r.set_assoc_bit(true);
        r.assoc_prev = NIL;
        r.assoc_next = head.map_or(NIL, |(old, _)| old);
        match head {
            Some((old, place)) => {
                self.slab.get_mut(old).assoc_prev = slot;
                self.assocs.replace(assoc, place, old, slot, &self.hasher);
            }
            None => self.assocs.insert(assoc, slot, &self.slab, &self.hasher),
        }
    }

    fn assoc_unlink(&mut self, slot: u32) {
        let r = self.slab.get(slot);
        let Some(assoc) = r.assoc() else { return };
        let (prev, next) = (r.assoc_prev, r.assoc_next);
        if next != NIL {
            self.slab.get_mut(next).assoc_prev = prev;
        }
        if prev != NIL {
            self.slab.get_mut(prev).assoc_next = next;
        } else if let Some((head, place)) = self.assocs.head(assoc, &self.slab, &self.hasher) {
            self.assocs.replace(assoc, place, head, next, &self.hasher);
        }
        let r = self.slab.get_mut(slot);
        r.set_assoc_bit(false);
        r.assoc_prev = NIL;
        r.assoc_next = NIL;
    }

    fn assoc_slots(&self, assoc: u64) -> Vec<u32> {
        let mut v = Vec::new();
        let slab = &self.slab;
        let mut s = self
            .assocs
            .head(assoc, slab, &self.hasher)
            .map_or(NIL, |(head, _)| head);
        while s != NIL {
            v.push(s);
            s = slab.get(s).assoc_next;
        }
        v
    }

    // ----------------------------------------------------------------------------------
    // removal

    fn build_info(&self, slot: u32) -> PoolElementInfo {
        let r = self.slab.get(slot);
        let ptype = self.pool_at(r.pool).policy_type;
        let ex = self.extras_of(slot);
        PoolElementInfo {
            pe_id: PeIdentifier(r.pe_id),
            home_registrar: ServerId(r.home),
            registration_life: r.life,
            policy: record_policy(ptype, &r.values),
            user_transport: r.user_transport(self.slab.lists(), ex),
            asap_transport: r.asap_transport(self.slab.lists(), ex),
        }
    }

    fn remove_slot(&mut self, slot: u32) -> RemovedElement {
        let info = self.build_info(slot);
        let r = self.slab.get(slot);
        let p = r.pool;
        let assoc = r.assoc().map(AssocId);
        let pool_handle = self.pool_at(p).handle.clone();
        self.untime(slot);
        self.assoc_unlink(slot);
        self.owner_remove(p, slot);
        let pool = Self::pool_at_mut(&mut self.pools, p);
        pool.selector.remove(slot, &mut self.slab);
        pool.len -= 1;
        let empty = pool.len == 0;
        if let Ok(e) = self
            .elements
            .find_entry(elem_hash(&self.hasher, p, info.pe_id.0), |&s| s == slot)
        {
            e.remove();
        }
        self.extras.remove(&slot);
        self.slab.free(slot);
        if empty {
            if let Ok(e) = self
                .pool_lookup
                .find_entry(handle_hash(&self.hasher, pool_handle.as_bytes()), |&i| {
                    i == p
                })
            {
                e.remove();
            }
            self.pool_order.remove(&pool_handle);
            self.pools[p as usize] = None;
            self.free_pools.push(p);
        }
        RemovedElement {
            pool_handle,
            info,
            assoc,
        }
    }

    /// Removes a PE (ASAP deregistration, ENRP DEL_PE, keep-alive failure...). Returns the
    /// removed PE, `None` if it was unknown. The pool goes when its last PE goes.
    pub fn deregister(
        &mut self,
        handle: &PoolHandle,
        pe_id: PeIdentifier,
    ) -> Option<RemovedElement> {
        let slot = self.lookup(handle, pe_id)?;
        Some(self.remove_slot(slot))
    }

    /// Removes every PE whose home is `home`, appending them to `out` in
    /// `(pool handle, PE id)` order. Returns how many were removed.
    pub fn remove_owned_by(&mut self, home: ServerId, out: &mut Vec<RemovedElement>) -> usize {
        let slots: Vec<u32> = self.walk_owner(home, None).map(|e| e.slot()).collect();
        for &s in &slots {
            out.push(self.remove_slot(s));
        }
        slots.len()
    }

    /// Removes every PE registered over `assoc` (the association to the PEs was lost),
    /// appending them to `out` in `(pool handle, PE id)` order. Returns how many.
    pub fn remove_by_assoc(&mut self, assoc: AssocId, out: &mut Vec<RemovedElement>) -> usize {
        let mut slots = self.assoc_slots(assoc.0);
        self.sort_slots(&mut slots);
        for &s in &slots {
            out.push(self.remove_slot(s));
        }
        slots.len()
    }

    fn sort_slots(&self, slots: &mut [u32]) {
        slots.sort_by(|&a, &b| {
            let (ra, rb) = (self.slab.get(a), self.slab.get(b));
            self.pool_at(ra.pool)
                .handle
                .cmp(&self.pool_at(rb.pool).handle)
                .then(ra.pe_id.cmp(&rb.pe_id))
        });
    }

    /// The PEs registered over `assoc`, in `(pool handle, PE id)` order.
    pub fn assoc_elements(&self, assoc: AssocId) -> Vec<ElementRef<'_>> {
        let mut slots = self.assoc_slots(assoc.0);
        self.sort_slots(&mut slots);
        slots
            .into_iter()
            .map(|s| ElementRef::new(self, s))
            .collect()
    }

    // ----------------------------------------------------------------------------------
    // ownership changes

    /// Makes `to` the home of every PE whose home is `from` (takeover of a failed
    /// registrar, ENRP TAKEOVER_SERVER). Checksums move along. Returns how many PEs
    /// changed home.
    pub fn rehome_owner(&mut self, from: ServerId, to: ServerId) -> usize {
        if from == to {
            return self.owner_element_count(from);
        }
        let Some(old) = self.owners.remove(&from) else {
            return 0;
        };
        for (handle, &p) in &old.pools {
            let pool = Self::pool_at_mut(&mut self.pools, p);
            let Some(mut set) = pool.by_owner.remove(&from) else {
                continue;
            };
            for &id in set.iter() {
                let slab = &self.slab;
                if let Some(&s) = self.elements.find(elem_hash(&self.hasher, p, id), |&s| {
                    let r = slab.get(s);
                    r.pool == p && r.pe_id == id
                }) {
                    self.slab.get_mut(s).home = to.0;
                }
            }
            let pool = Self::pool_at_mut(&mut self.pools, p);
            pool.by_owner.entry(to).append(&mut set);
            let o = self.owners.entry(to).or_default();
            o.pools.insert(handle.clone(), p);
        }
        let o = self.owners.entry(to).or_default();
        o.checksum.add_sum(old.checksum.raw());
        o.count += old.count;
        old.count
    }

    /// Changes the home registrar of one PE. Returns false if the PE is unknown.
    pub fn set_home(&mut self, handle: &PoolHandle, pe_id: PeIdentifier, home: ServerId) -> bool {
        let Some(slot) = self.lookup(handle, pe_id) else {
            return false;
        };
        let r = self.slab.get(slot);
        if r.home != home.0 {
            let p = r.pool;
            self.owner_remove(p, slot);
            self.slab.get_mut(slot).home = home.0;
            self.owner_add(p, slot);
        }
        true
    }

    // ----------------------------------------------------------------------------------
    // unreachability

    /// Counts an ASAP Endpoint Unreachable report for the PE and returns the new count
    /// (`None` if the PE is unknown). The counter is kept across re-registrations (RSPLIB);
    /// a new PE starts at 0.
    pub fn report_unreachable(&mut self, handle: &PoolHandle, pe_id: PeIdentifier) -> Option<u32> {
        let slot = self.lookup(handle, pe_id)?;
        let r = self.slab.get_mut(slot);
        r.reports = r.reports.saturating_add(1);
        Some(u32::from(r.reports))
    }

    // ----------------------------------------------------------------------------------
    // timers

    /// The deadlines in `slot`'s record changed: moves its entry in the timer index (which
    /// orders slots by those deadlines), adds it or takes it out.
    fn retime(&mut self, slot: u32) {
        if self.slab.get(slot).next_deadline() == NO_DEADLINE {
            self.untime(slot);
            return;
        }
        let tp = self.slab.timer_pos(slot);
        let (order, timer_pos) = self.slab.timer_order();
        let key = &|s: &u32| order.key(*s);
        let pos = &mut |s: u32, i: u32| timer_pos[s as usize] = i;
        if tp == NIL {
            self.timers.push_by(slot, key, pos);
        } else {
            self.timers.restore_by(tp, key, pos);
        }
    }

    /// Takes `slot` out of the timer index, if it is in it.
    fn untime(&mut self, slot: u32) {
        let tp = self.slab.timer_pos(slot);
        if tp == NIL {
            return;
        }
        let (order, timer_pos) = self.slab.timer_order();
        self.timers
            .remove_by(tp, &|s: &u32| order.key(*s), &mut |s, i| {
                timer_pos[s as usize] = i
            });
        timer_pos[slot as usize] = NIL;
    }

    /// Sets (`Some`) or clears (`None`) a timer of a PE. The two keep-alive kinds share one
    /// slot (a PE waits either to send the next keep-alive or for its ack): setting one
    /// replaces the other, and clearing either clears the keep-alive timer. Returns false
    /// if the PE is unknown.
    pub fn set_timer(
        &mut self,
        handle: &PoolHandle,
        pe_id: PeIdentifier,
        kind: TimerKind,
        at: Option<Instant>,
    ) -> bool {
        let Some(slot) = self.lookup(handle, pe_id) else {
            return false;
        };
        // NO_DEADLINE is reserved; FAR_FUTURE-like instants stay below it.
        let t = at.map_or(NO_DEADLINE, |i| i.as_micros().min(NO_DEADLINE - 1));
        let r = self.slab.get_mut(slot);
        match kind {
            TimerKind::Expiry => r.expiry = t,
            TimerKind::KeepAliveTransmission | TimerKind::KeepAliveTimeout => {
                r.keep_alive = t;
                r.set_ka_timeout_bit(kind == TimerKind::KeepAliveTimeout);
            }
        }
        self.retime(slot);
        true
    }

    /// The earliest timer deadline of any PE.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers
            .peek()
            .map(|&slot| Instant::from_micros(self.slab.get(slot).next_deadline()))
    }

    /// Drains every timer due at `now` (deadline ≤ now), appending them to `out` in
    /// `(deadline, pool handle, PE id, kind)` order. The timers are cleared; the PEs stay
    /// (the caller decides: remove on expiry, send a keep-alive, ...). Returns how many.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<DueTimer>) -> usize {
        let now = now.as_micros();
        let start = out.len();
        while let Some(&slot) = self.timers.peek() {
            if self.slab.get(slot).next_deadline() > now {
                break;
            }
            let r = self.slab.get_mut(slot);
            let mut fired: [Option<(TimerKind, u64)>; 2] = [None, None];
            if r.expiry <= now {
                fired[0] = Some((TimerKind::Expiry, r.expiry));
                r.expiry = NO_DEADLINE;
            }
            if r.keep_alive <= now {
                let k = if r.ka_is_timeout() {
                    TimerKind::KeepAliveTimeout
                } else {
                    TimerKind::KeepAliveTransmission
                };
                fired[1] = Some((k, r.keep_alive));
                r.keep_alive = NO_DEADLINE;
            }
            let (pe_id, p) = (r.pe_id, r.pool);
            self.retime(slot);
            let handle = self.pool_at(p).handle.clone();
            for (kind, dl) in fired.into_iter().flatten() {
                out.push(DueTimer {
                    pool_handle: handle.clone(),
                    pe_id: PeIdentifier(pe_id),
                    kind,
                    deadline: Instant::from_micros(dl),
                });
            }
        }
        if let Some(new) = out.get_mut(start..) {
            new.sort_by(|a, b| {
                (a.deadline, &a.pool_handle, a.pe_id, a.kind).cmp(&(
                    b.deadline,
                    &b.pool_handle,
                    b.pe_id,
                    b.kind,
                ))
            });
        }
        out.len() - start
    }

    // ----------------------------------------------------------------------------------
    // selection

    /// Selects up to `max` distinct PEs of the pool by its policy (handle resolution at
    /// the registrar, or PE choice at a PU cache), writing their identifiers to `out`
    /// (cleared first) in answer order, and updates the selection state with the
    /// configured default max increment. Returns the policy to announce as the overall
    /// policy: that of the first selected PE (RSPLIB), or of the pool's lowest-id PE if
    /// none could be selected (e.g. all weights 0).
    pub fn select<R: rand_core::Rng + ?Sized>(
        &mut self,
        handle: &PoolHandle,
        max: usize,
        rng: &mut R,
        out: &mut Vec<PeIdentifier>,
    ) -> Result<Policy, UnknownPool> {
        let inc = self.config.max_increment;
        self.select_with(handle, max, inc, rng, out)
    }

    /// [`Handlespace::select`] with an explicit max increment (0 = policy default,
    /// `u32::MAX` = update every selected PE, as a PU cache does).
    pub fn select_with<R: rand_core::Rng + ?Sized>(
        &mut self,
        handle: &PoolHandle,
        max: usize,
        max_increment: u32,
        rng: &mut R,
        out: &mut Vec<PeIdentifier>,
    ) -> Result<Policy, UnknownPool> {
        out.clear();
        let sel = self.select_elements(handle, max, max_increment, rng)?;
        out.extend(sel.elements().map(|e| e.pe_id()));
        Ok(sel.policy())
    }

    /// Like [`Handlespace::select_with`] but returns the selected entries themselves (no
    /// further lookups needed to encode an answer).
    pub fn select_elements<R: rand_core::Rng + ?Sized>(
        &mut self,
        handle: &PoolHandle,
        max: usize,
        max_increment: u32,
        rng: &mut R,
    ) -> Result<Selection<'_>, UnknownPool> {
        let p = self.find_pool(handle.as_bytes()).ok_or(UnknownPool)?;
        let mut slots = core::mem::take(&mut self.scratch.slots);
        slots.clear();
        {
            let Self {
                pools,
                slab,
                scratch,
                ..
            } = self;
            let pool = Self::pool_at_mut(pools, p);
            let ptype = pool.policy_type;
            let inc = if max_increment == 0 {
                default_max_increment(ptype)
            } else {
                max_increment
            };
            pool.selector
                .select(ptype, slab, max, inc, rng, scratch, &mut slots);
        }
        self.scratch.slots = slots;
        let this: &Handlespace = self;
        let first = match this.scratch.slots.first() {
            Some(&s) => s,
            None => this.pool_first_slot(p),
        };
        let policy = record_policy(this.pool_at(p).policy_type, &this.slab.get(first).values);
        Ok(Selection::new(this, policy, &this.scratch.slots))
    }

    fn pool_first_slot(&self, p: u32) -> u32 {
        let pool = self.pool_at(p);
        let id = pool
            .by_owner
            .values()
            .filter_map(|s| s.first())
            .min()
            .copied()
            .unwrap_or(0);
        self.find_slot(p, id).unwrap_or(0)
    }

    // ----------------------------------------------------------------------------------
    // queries

    /// The PE `(handle, pe_id)`.
    pub fn get(&self, handle: &PoolHandle, pe_id: PeIdentifier) -> Option<ElementRef<'_>> {
        self.lookup(handle, pe_id).map(|s| ElementRef::new(self, s))
    }

    /// True if the PE `(handle, pe_id)` exists.
    pub fn contains(&self, handle: &PoolHandle, pe_id: PeIdentifier) -> bool {
        self.lookup(handle, pe_id).is_some()
    }

    /// The pool named `handle`.
    pub fn pool(&self, handle: &PoolHandle) -> Option<PoolRef<'_>> {
        self.find_pool(handle.as_bytes())
            .map(|p| PoolRef::new(self, p))
    }

    /// All pools in handle order.
    pub fn pools(&self) -> impl Iterator<Item = PoolRef<'_>> + '_ {
        self.pool_order.values().map(|&p| PoolRef::new(self, p))
    }

    /// Number of pools.
    pub fn pool_count(&self) -> usize {
        self.pool_order.len()
    }

    /// Number of PEs.
    pub fn element_count(&self) -> usize {
        self.slab.used()
    }

    /// True if there is no PE.
    pub fn is_empty(&self) -> bool {
        self.slab.used() == 0
    }

    /// Number of PEs whose home is `home`.
    pub fn owner_element_count(&self, home: ServerId) -> usize {
        self.owners.get(&home).map_or(0, |o| o.count)
    }

    /// The home registrars that own at least one PE, in id order, with their PE counts.
    pub fn owners(&self) -> impl Iterator<Item = (ServerId, usize)> + '_ {
        self.owners.iter().map(|(&h, o)| (h, o.count))
    }

    /// ENRP checksum over all PEs (RSPLIB prints it in hsdump).
    pub fn checksum(&self) -> u16 {
        self.checksum.value()
    }

    /// ENRP ownership checksum of `home`: over the PEs whose home is `home` (`0xffff` if
    /// none). A registrar sends its own in ENRP Presence and compares peers' against it.
    pub fn owner_checksum(&self, home: ServerId) -> u16 {
        self.owners
            .get(&home)
            .map_or(ChecksumAccumulator::EMPTY, |o| o.checksum)
            .value()
    }

    /// All PEs in `(pool handle, PE id)` order (ENRP Handle Table, W=0), starting after
    /// `after` (which need not exist any more).
    pub fn walk(&self, after: Option<&WalkCursor>) -> Walk<'_> {
        Walk::new(self, after)
    }

    /// The PEs whose home is `home`, in `(pool handle, PE id)` order (ENRP Handle Table,
    /// W=1; takeover), starting after `after`.
    pub fn walk_owner(&self, home: ServerId, after: Option<&WalkCursor>) -> OwnerWalk<'_> {
        OwnerWalk::new(self, home, after)
    }

    pub(crate) fn owner_pools(&self, home: ServerId) -> Option<&BTreeMap<PoolHandle, u32>> {
        self.owners.get(&home).map(|o| &o.pools)
    }

    pub(crate) fn pool_order(&self) -> &BTreeMap<PoolHandle, u32> {
        &self.pool_order
    }

    /// Approximate bytes allocated by the handlespace's own structures, excluding the
    /// B-tree nodes of the pool and owner maps (those are measured by the benchmark's
    /// allocator). For diagnostics.
    pub fn structure_bytes(&self) -> usize {
        self.slab.allocated_bytes()
            + self.elements.allocation_size()
            + self.pool_lookup.allocation_size()
            + self.assocs.allocated_bytes()
            + self.timers.allocated_bytes()
            + self
                .pools
                .iter()
                .flatten()
                .map(|p| p.selector.allocated_bytes() + p.by_owner.allocated_bytes())
                .sum::<usize>()
    }

    #[cfg(test)]
    pub(crate) fn debug_sorted_entry(
        &self,
        handle: &PoolHandle,
        pe_id: PeIdentifier,
    ) -> Option<(u64, u32)> {
        let slot = self.lookup(handle, pe_id)?;
        let p = self.slab.get(slot).pool;
        match &self.pool_at(p).selector {
            Selector::Sorted(s) => s.entry_of(slot, &self.slab),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn debug_force_wrr_pass(&mut self, handle: &PoolHandle, add: u64) {
        if let Some(p) = self.find_pool(handle.as_bytes()) {
            let Self { pools, slab, .. } = self;
            if let Selector::Sorted(s) = &mut Self::pool_at_mut(pools, p).selector {
                s.force_pass_renormalise(slab, add);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn debug_weighted_total(&self, handle: &PoolHandle) -> Option<u64> {
        let p = self.find_pool(handle.as_bytes())?;
        match &self.pool_at(p).selector {
            Selector::Weighted(w) => Some(w.total()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
