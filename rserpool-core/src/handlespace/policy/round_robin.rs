//! Round Robin (RFC 5356 §4.1): a ring of the pool's PEs with a head position.
//!
//! Selection returns up to `n` PEs starting at the head and then moves the head forward by
//! `min(n, max increment)` (registrar default: by one, so successive answers start at
//! successive PEs — RSPLIB's behaviour). All operations are O(1).
//!
//! Difference from RSPLIB: RSPLIB keeps RR order in a tree sorted by sequence numbers;
//! we keep an array and remove by moving the last member into the hole, so a removal may
//! let one PE skip one round. With a stable membership every PE is visited exactly once
//! per round, as in RSPLIB.

use crate::handlespace::element::Slab;
use crate::paged::PagedVec;

/// Ring of slots with a head position.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ring {
    members: PagedVec<u32>,
    head: u32,
}

impl Ring {
    pub(crate) fn insert(&mut self, slot: u32, slab: &mut Slab) {
        slab.set_pos(slot, self.members.len() as u32);
        self.members.push(slot);
    }

    pub(crate) fn remove(&mut self, slot: u32, slab: &mut Slab) {
        let pos = slab.pos(slot) as usize;
        let Some(last) = self.members.len().checked_sub(1) else {
            return;
        };
        self.members.swap_remove(pos);
        if pos != last
            && let Some(&moved) = self.members.get(pos)
        {
            slab.set_pos(moved, pos as u32);
        }
        if self.members.is_empty() {
            self.head = 0;
        } else if self.head as usize == last {
            self.head = if pos != last { pos as u32 } else { 0 };
        }
    }

    pub(crate) fn select(&mut self, n: usize, max_increment: u32, out: &mut Vec<u32>) {
        let len = self.members.len();
        let k = n.min(len);
        if k == 0 {
            return;
        }
        let head = self.head as usize;
        for i in 0..k {
            let mut p = head + i;
            if p >= len {
                p -= len;
            }
            out.push(self.members[p]);
        }
        let step = k.min(max_increment as usize) % len;
        let mut h = head + step;
        if h >= len {
            h -= len;
        }
        self.head = h as u32;
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.members.allocated_bytes()
    }
}
