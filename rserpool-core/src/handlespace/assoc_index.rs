//! The association index: for each association, the first PE of its list (the PEs
//! registered over it, linked through their records' `assoc_prev` / `assoc_next`).
//!
//! When the driver's association ids hold a slot index in their low bits
//! ([`Handlespace::set_assoc_id_slot_bits`](super::Handlespace::set_assoc_id_slot_bits)),
//! a head lies in a paged vector at that index (4 bytes per association, no buckets kept
//! empty); the head's record tells which association (which generation of the slot) it
//! belongs to. Ids without such a layout, and an association whose place another one
//! still holds, go to a hash table (~8 bytes per entry at its load).

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

use super::element::{NIL, Slab};
use crate::AssocId;
use crate::assoc::MAX_SLOT_BITS;
use crate::paged::PagedVec;

/// Where an association's head lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// In the paged vector, at this index.
    Dense(usize),
    /// In the hash table.
    Hashed,
}

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub(crate) struct AssocIndex {
    /// Bits of an association id that hold its slot index (0: hash table only).
    slot_bits: u32,
    /// List heads by slot index, [`NIL`] where none.
    dense: PagedVec<u32>,
    /// Heads in `dense`.
    dense_len: usize,
    /// The other heads, hashed by association id.
    hashed: HashTable<u32>,
}

fn hash(h: &FixedState, assoc: u64) -> u64 {
    h.hash_one(assoc)
}

impl AssocIndex {
    /// Keeps heads at the slot index in the low `bits` bits of association ids (capped at
    /// 24; 0 = hash table only). Takes effect while the index is empty.
    pub(crate) fn set_slot_bits(&mut self, bits: u32) {
        if self.dense_len == 0 && self.hashed.is_empty() {
            self.slot_bits = bits.min(MAX_SLOT_BITS);
        }
    }

    fn dense_index(&self, assoc: u64) -> Option<usize> {
        AssocId(assoc).slot_index(self.slot_bits)
    }

    /// The first PE of `assoc`'s list and where the head lies.
    pub(crate) fn head(&self, assoc: u64, slab: &Slab, h: &FixedState) -> Option<(u32, Place)> {
        if let Some(i) = self.dense_index(assoc)
            && let Some(&head) = self.dense.get(i)
            && head != NIL
            && slab.get(head).assoc() == Some(assoc)
        {
            return Some((head, Place::Dense(i)));
        }
        if self.hashed.is_empty() {
            return None;
        }
        self.hashed
            .find(hash(h, assoc), |&s| slab.get(s).assoc() == Some(assoc))
            .map(|&head| (head, Place::Hashed))
    }

    /// Starts `assoc`'s list with `slot` (whose record already names `assoc`).
    pub(crate) fn insert(&mut self, assoc: u64, slot: u32, slab: &Slab, h: &FixedState) {
        if let Some(i) = self.dense_index(assoc) {
            self.dense.grow_to(i + 1, || NIL);
            if let Some(place) = self.dense.get_mut(i)
                && *place == NIL
            {
                *place = slot;
                self.dense_len += 1;
                return;
            }
        }
        self.hashed.insert_unique(hash(h, assoc), slot, |&s| {
            hash(h, slab.get(s).assoc().unwrap_or(0))
        });
    }

    /// The head of `assoc`'s list, `old` at `place`, becomes `new` ([`NIL`]: the list is
    /// empty and leaves the index).
    pub(crate) fn replace(&mut self, assoc: u64, place: Place, old: u32, new: u32, h: &FixedState) {
        match place {
            Place::Dense(i) => {
                if let Some(head) = self.dense.get_mut(i) {
                    *head = new;
                    if new == NIL {
                        self.dense_len -= 1;
                    }
                }
            }
            Place::Hashed => {
                let hv = hash(h, assoc);
                if new == NIL {
                    if let Ok(e) = self.hashed.find_entry(hv, |&s| s == old) {
                        e.remove();
                    }
                } else if let Some(head) = self.hashed.find_mut(hv, |&s| s == old) {
                    *head = new;
                }
            }
        }
    }

    /// Bytes allocated.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.dense.allocated_bytes() + self.hashed.allocation_size()
    }
}
