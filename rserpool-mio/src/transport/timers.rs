//! The associations' timers: an indexed min-heap of deadlines (the core's
//! [`IndexedHeap`]) holding at most one entry per transport slot, with each slot's position
//! in the heap kept alongside. A deadline moves in place (no stale entries piling up) and
//! leaves with its association.

use rserpool_core::handlespace::heap::{HeapItem, IndexedHeap, Slotted};
use rserpool_core::paged::PagedVec;

/// No entry for this slot.
const NONE: u32 = u32::MAX;

/// One deadline (µs) of one slot, in 12 bytes: the deadline as two 32-bit halves, so that
/// the entry is aligned to 4 and not padded to 16.
#[derive(Clone, Copy, Debug, Default)]
struct Deadline {
    at: [u32; 2],
    slot: u32,
}

impl Deadline {
    fn new(at: u64, slot: u32) -> Self {
        Deadline {
            at: [(at >> 32) as u32, at as u32],
            slot,
        }
    }

    fn at(&self) -> u64 {
        (u64::from(self.at[0]) << 32) | u64::from(self.at[1])
    }
}

impl Slotted for Deadline {
    fn slot(&self) -> u32 {
        self.slot
    }
}

impl HeapItem for Deadline {
    type Key = (u64, u32);
    fn key(&self) -> (u64, u32) {
        (self.at(), self.slot)
    }
}

/// Deadlines (µs) by slot index.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: IndexedHeap<Deadline>,
    /// `pos[slot]`: the slot's index in `heap`, or [`NONE`] (in pages that never move, so
    /// that growing leaves no freed buffer behind).
    pos: PagedVec<u32>,
}

impl Timers {
    /// The deadline of `slot`, if it has one.
    pub(super) fn get(&self, slot: usize) -> Option<u64> {
        let p = *self.pos.get(slot)?;
        self.heap.get(p).map(Deadline::at)
    }

    /// Sets (or moves) the deadline of `slot`.
    pub(super) fn set(&mut self, slot: usize, deadline: u64) {
        let Ok(s) = u32::try_from(slot) else {
            return;
        };
        if s == NONE {
            return;
        }
        self.pos.grow_to(slot + 1, || NONE);
        let item = Deadline::new(deadline, s);
        let at = self.pos.get(slot).copied().unwrap_or(NONE);
        let pos = &mut self.pos;
        let mut moved = |s: u32, p: u32| {
            if let Some(e) = pos.get_mut(s as usize) {
                *e = p;
            }
        };
        if at == NONE {
            self.heap.push(item, &mut moved);
        } else {
            self.heap.replace(at, item, &mut moved);
        }
    }

    /// Removes the deadline of `slot` (nothing if it has none).
    pub(super) fn remove(&mut self, slot: usize) {
        let Some(&p) = self.pos.get(slot) else {
            return;
        };
        if p == NONE {
            return;
        }
        let pos = &mut self.pos;
        self.heap.remove(p, &mut |s, p| {
            if let Some(e) = pos.get_mut(s as usize) {
                *e = p;
            }
        });
        if let Some(e) = self.pos.get_mut(slot) {
            *e = NONE;
        }
        if self.heap.is_empty() {
            // Keep no memory once no association waits.
            self.heap = IndexedHeap::new();
        }
    }

    /// The earliest deadline and its slot.
    pub(super) fn peek(&self) -> Option<(u64, usize)> {
        self.heap.peek().map(|d| (d.at(), d.slot as usize))
    }

    /// Removes and returns the earliest deadline and its slot.
    pub(super) fn pop(&mut self) -> Option<(u64, usize)> {
        let first = self.peek()?;
        self.remove(first.1);
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_xoshiro::Xoshiro256PlusPlus;
    use rand_xoshiro::rand_core::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    #[test]
    fn a_deadline_takes_12_bytes_and_keeps_all_64_bits() {
        assert_eq!(size_of::<Deadline>(), 12);
        for at in [0, 1, u64::from(u32::MAX), 1 << 32, (1 << 32) + 5, u64::MAX] {
            assert_eq!(Deadline::new(at, 3).at(), at);
        }
        let mut t = Timers::default();
        t.set(1, 1 << 32);
        t.set(2, u64::from(u32::MAX));
        assert_eq!(t.pop(), Some((u64::from(u32::MAX), 2)));
        assert_eq!(t.pop(), Some((1 << 32, 1)));
    }

    #[test]
    fn one_entry_per_slot_and_pops_in_deadline_order() {
        let mut t = Timers::default();
        t.set(3, 50);
        t.set(1, 20);
        t.set(3, 10); // moved earlier, in place
        t.set(7, 30);
        t.set(1, 40); // moved later, in place
        assert_eq!(t.heap.len(), 3);
        assert_eq!(t.get(3), Some(10));
        assert_eq!(t.get(2), None);
        t.remove(7);
        assert_eq!(t.get(7), None);
        assert_eq!(t.pop(), Some((10, 3)));
        assert_eq!(t.pop(), Some((40, 1)));
        assert_eq!(t.pop(), None);
        assert_eq!(t.heap.capacity(), 0, "no memory kept when empty");
    }

    #[test]
    fn matches_a_reference_model() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut t = Timers::default();
        let mut model: BTreeMap<usize, u64> = BTreeMap::new();
        for _ in 0..20_000 {
            let slot = (rng.next_u32() % 200) as usize;
            match rng.next_u32() % 4 {
                0 | 1 => {
                    let d = u64::from(rng.next_u32() % 1000);
                    t.set(slot, d);
                    model.insert(slot, d);
                }
                2 => {
                    t.remove(slot);
                    model.remove(&slot);
                }
                _ => {
                    let want = model.iter().map(|(&s, &d)| (d, s)).min();
                    match (t.pop(), want) {
                        (Some((d, s)), Some((wd, _))) => {
                            // Ties may come out in any order: same deadline, then the slot's.
                            assert_eq!(d, wd);
                            assert_eq!(model.remove(&s), Some(d));
                        }
                        (got, want) => assert_eq!(got.is_none(), want.is_none()),
                    }
                }
            }
            assert_eq!(t.heap.len(), model.len());
            for (&s, &d) in &model {
                assert_eq!(t.get(s), Some(d));
            }
        }
    }
}
