//! The associations' timers: a binary min-heap of deadlines holding at most one entry per
//! transport slot, with each slot's position in the heap kept alongside (an indexed heap).
//! A deadline moves in place (no stale entries piling up) and leaves with its association.

/// No entry for this slot.
const NONE: u32 = u32::MAX;

/// Deadlines (µs) by slot index.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// (deadline, slot), a min-heap on the deadline.
    heap: Vec<(u64, u32)>,
    /// `pos[slot]`: the slot's index in `heap`, or [`NONE`].
    pos: Vec<u32>,
}

impl Timers {
    /// The deadline of `slot`, if it has one.
    pub(super) fn get(&self, slot: usize) -> Option<u64> {
        let p = *self.pos.get(slot)?;
        self.heap.get(p as usize).map(|&(d, _)| d)
    }

    /// Sets (or moves) the deadline of `slot`.
    pub(super) fn set(&mut self, slot: usize, deadline: u64) {
        let Ok(s) = u32::try_from(slot) else {
            return;
        };
        if s == NONE {
            return;
        }
        if self.pos.len() <= slot {
            self.pos.resize(slot + 1, NONE);
        }
        match self.get(slot) {
            Some(old) => {
                let p = self.pos.get(slot).map_or(0, |&p| p as usize);
                if let Some(e) = self.heap.get_mut(p) {
                    e.0 = deadline;
                }
                if deadline < old {
                    self.sift_up(p);
                } else {
                    self.sift_down(p);
                }
            }
            None => {
                let p = self.heap.len();
                self.heap.push((deadline, s));
                self.set_pos(s, p);
                self.sift_up(p);
            }
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
        self.remove_at(p as usize);
    }

    /// The earliest deadline and its slot.
    pub(super) fn peek(&self) -> Option<(u64, usize)> {
        self.heap.first().map(|&(d, s)| (d, s as usize))
    }

    /// Removes and returns the earliest deadline and its slot.
    pub(super) fn pop(&mut self) -> Option<(u64, usize)> {
        let first = self.peek()?;
        self.remove_at(0);
        Some(first)
    }

    fn set_pos(&mut self, slot: u32, p: usize) {
        if let Some(e) = self.pos.get_mut(slot as usize) {
            *e = p as u32;
        }
    }

    fn remove_at(&mut self, p: usize) {
        let last = self.heap.len().saturating_sub(1);
        if p > last || self.heap.is_empty() {
            return;
        }
        self.heap.swap(p, last);
        if let Some((_, s)) = self.heap.pop()
            && let Some(e) = self.pos.get_mut(s as usize)
        {
            *e = NONE;
        }
        if p < self.heap.len() {
            if let Some(&(_, s)) = self.heap.get(p) {
                self.set_pos(s, p);
            }
            self.sift_down(p);
            self.sift_up(p);
        }
        if self.heap.is_empty() {
            // Keep no memory once no association waits (and shrink after a crowd left).
            self.heap = Vec::new();
        } else if self.heap.capacity() > 64 && self.heap.len() < self.heap.capacity() / 4 {
            self.heap.shrink_to(self.heap.len() * 2);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        if let Some(&(_, s)) = self.heap.get(a) {
            self.set_pos(s, a);
        }
        if let Some(&(_, s)) = self.heap.get(b) {
            self.set_pos(s, b);
        }
    }

    fn key(&self, p: usize) -> u64 {
        self.heap.get(p).map_or(u64::MAX, |&(d, _)| d)
    }

    fn sift_up(&mut self, mut p: usize) {
        while p > 0 {
            let parent = (p - 1) / 2;
            if self.key(p) >= self.key(parent) {
                break;
            }
            self.swap(p, parent);
            p = parent;
        }
    }

    fn sift_down(&mut self, mut p: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * p + 1, 2 * p + 2);
            let mut min = p;
            if l < n && self.key(l) < self.key(min) {
                min = l;
            }
            if r < n && self.key(r) < self.key(min) {
                min = r;
            }
            if min == p {
                return;
            }
            self.swap(p, min);
            p = min;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_xoshiro::Xoshiro256PlusPlus;
    use rand_xoshiro::rand_core::{Rng, SeedableRng};
    use std::collections::BTreeMap;

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
