//! Selection "by sorting order" (RSPLIB `poolPolicySelectPoolElementNodesBySortingOrder`),
//! used by Weighted Round Robin, Priority and the least-used family.
//!
//! The pool's PEs sit in an indexed min-heap ordered by `(key, sequence number)`. A
//! selection returns the first `n` entries in order; each of the first `max increment` of
//! them then gets a fresh sequence number (which moves it behind its equals: round robin
//! among equal keys) and its policy update (degradation / WRR pass). Everything is
//! O(log n) per updated entry plus O(n log n) to list `n` entries.
//!
//! Sequence numbers are `u32`, start at RSPLIB's `0xfffffff0` (so that renumbering is
//! exercised early) and are renumbered in order before they would wrap.

use super::least_used::{self, degradation_step};
use super::priority;
use super::weighted_round_robin::{self as wrr, NEVER, PASS_LIMIT};
use crate::handlespace::element::{PeRecord, Slab};
use crate::handlespace::heap::{HeapItem, IndexedHeap, Slotted};
use rserpool_proto::policy::code;

/// First sequence number of a pool (RSPLIB `SeqNumberStart`).
pub(crate) const SEQ_START: u32 = 0xffff_fff0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SortItem {
    key: u64,
    seq: u32,
    slot: u32,
}

impl Slotted for SortItem {
    #[inline]
    fn slot(&self) -> u32 {
        self.slot
    }
}

impl HeapItem for SortItem {
    type Key = (u64, u32);
    #[inline]
    fn key(&self) -> (u64, u32) {
        (self.key, self.seq)
    }
}

/// Static key of a non-WRR sorting policy.
fn key_of(policy_type: u32, r: &PeRecord) -> u64 {
    if policy_type == code::PRIORITY {
        priority::sort_key(&r.values)
    } else {
        least_used::sort_key(policy_type, &r.values, r.degradation)
    }
}

/// Heap of a sorting-policy pool.
#[derive(Debug, Clone)]
pub(crate) struct Sorted {
    heap: IndexedHeap<SortItem>,
    next_seq: u32,
    /// WRR virtual time: pass of the most recently selected PE.
    vtime: u64,
}

impl Default for Sorted {
    fn default() -> Self {
        Sorted {
            heap: IndexedHeap::new(),
            next_seq: SEQ_START,
            vtime: 0,
        }
    }
}

impl Sorted {
    fn take_seq(&mut self, slab: &mut Slab) -> u32 {
        if self.next_seq == u32::MAX {
            self.resequence(slab);
        }
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Renumbers all entries 0, 1, 2, ... in their current order.
    fn resequence(&mut self, slab: &mut Slab) {
        let mut items = self.heap.take_items();
        items.sort_unstable_by_key(|it| (it.key, it.seq));
        for (i, it) in items.iter_mut().enumerate() {
            it.seq = i as u32;
        }
        self.next_seq = items.len() as u32;
        self.heap.replace_all(items, &mut |s, i| slab.set_pos(s, i));
    }

    fn initial_key(&self, policy_type: u32, r: &PeRecord) -> u64 {
        if policy_type == code::WEIGHTED_ROUND_ROBIN {
            wrr::initial_pass(self.vtime, wrr::weight(&r.values))
        } else {
            key_of(policy_type, r)
        }
    }

    pub(crate) fn insert(&mut self, policy_type: u32, slot: u32, slab: &mut Slab) {
        let key = self.initial_key(policy_type, slab.get(slot));
        let seq = self.take_seq(slab);
        self.heap
            .push(SortItem { key, seq, slot }, &mut |s, i| slab.set_pos(s, i));
    }

    pub(crate) fn remove(&mut self, slot: u32, slab: &mut Slab) {
        let pos = slab.pos(slot);
        self.heap.remove(pos, &mut |s, i| slab.set_pos(s, i));
    }

    /// The PE's policy values (or degradation) changed; its sequence number is kept.
    pub(crate) fn rekey(&mut self, policy_type: u32, slot: u32, slab: &mut Slab) {
        let pos = slab.pos(slot);
        let r = slab.get(slot);
        let Some(&item) = self.heap.get(pos) else {
            return;
        };
        let key = if policy_type == code::WEIGHTED_ROUND_ROBIN {
            let w = wrr::weight(&r.values);
            if w == 0 || item.key == NEVER {
                wrr::initial_pass(self.vtime, w)
            } else {
                item.key
            }
        } else {
            key_of(policy_type, r)
        };
        self.heap
            .replace(pos, SortItem { key, ..item }, &mut |s, i| {
                slab.set_pos(s, i)
            });
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select(
        &mut self,
        policy_type: u32,
        slab: &mut Slab,
        n: usize,
        max_increment: u32,
        idx: &mut Vec<u32>,
        cand: &mut Vec<u32>,
        out: &mut Vec<u32>,
    ) {
        idx.clear();
        self.heap.first_n(n, cand, idx);
        let start = out.len();
        for &i in idx.iter() {
            let Some(it) = self.heap.get(i) else { break };
            if it.key == NEVER && policy_type == code::WEIGHTED_ROUND_ROBIN {
                break;
            }
            out.push(it.slot);
        }
        let m = (out.len() - start).min(max_increment as usize);
        for k in 0..m {
            let slot = out[start + k];
            let seq = self.take_seq(slab);
            let pos = slab.pos(slot);
            let Some(&item) = self.heap.get(pos) else {
                continue;
            };
            let key = if policy_type == code::WEIGHTED_ROUND_ROBIN {
                self.vtime = item.key;
                item.key + wrr::stride(wrr::weight(&slab.get(slot).values))
            } else if let Some(step) = degradation_step(policy_type, &slab.get(slot).values) {
                let r = slab.get_mut(slot);
                r.degradation = r.degradation.saturating_add(step);
                key_of(policy_type, r)
            } else {
                item.key
            };
            self.heap
                .replace(pos, SortItem { key, seq, slot }, &mut |s, i| {
                    slab.set_pos(s, i)
                });
            if key != NEVER && key > PASS_LIMIT {
                self.renormalise(slab);
            }
        }
    }

    /// Subtracts the smallest WRR pass from all passes (order unchanged).
    fn renormalise(&mut self, slab: &mut Slab) {
        let Some(min) = self.heap.peek().map(|it| it.key) else {
            return;
        };
        if min == NEVER {
            return;
        }
        self.vtime = self.vtime.saturating_sub(min);
        self.heap.rebuild_with(
            |it| {
                if it.key != NEVER {
                    it.key -= min;
                }
            },
            &mut |s, i| slab.set_pos(s, i),
        );
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.heap.allocated_bytes()
    }

    /// `(key, seq)` of a slot (tests).
    #[cfg(test)]
    pub(crate) fn entry_of(&self, slot: u32, slab: &Slab) -> Option<(u64, u32)> {
        self.heap.get(slab.pos(slot)).map(|it| (it.key, it.seq))
    }

    #[cfg(test)]
    pub(crate) fn force_pass_renormalise(&mut self, slab: &mut Slab, add: u64) {
        self.heap.rebuild_with(
            |it| {
                if it.key != NEVER {
                    it.key += add;
                }
            },
            &mut |s, i| slab.set_pos(s, i),
        );
        self.vtime += add;
    }
}
