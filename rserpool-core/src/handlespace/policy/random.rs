//! The random family: Random (RFC 5356 §4.3), Weighted Random (§4.4), Randomized Least
//! Used (§5.4) and RSPLIB's Weighted Random with DPF, Randomized Priority Least Used,
//! Randomized Least Used with Degradation and Randomized Priority Least Used with
//! Degradation.
//!
//! Each PE has a *value*; a selection draws up to `n` distinct PEs without replacement,
//! each draw with probability value / (sum of the values still in the draw), in O(log n)
//! per draw over a Fenwick tree:
//!
//! | Policy | Value (clamped to 1..=0xffffffff unless noted) |
//! |--------|------------------------------------------------|
//! | Random | 1 |
//! | WRAND | weight (0 ⇒ never chosen) |
//! | WRAND-DPF | weight − rint(weight × distance × weight DPF / 0xffffffff); negative ⇒ 1, 0 stays 0 |
//! | RLU | 0xffffffff − load |
//! | RLUD | 0xffffffff − load − Degradation |
//! | RPLU | 0xffffffff − load − load degradation |
//! | RPLUD | 0xffffffff − load − load degradation − Degradation |
//!
//! The answer lists the PEs in draw order. RSPLIB's default max increment for Random,
//! WRAND and WRAND-DPF is 0 and 1 for the randomized least-used policies.
//!
//! Differences from RSPLIB:
//! * RSPLIB never increases Degradation for RLUD and RPLUD, so they behave exactly like
//!   RLU and RPLU. We grow it as for LUD (by the load degradation for each of the first
//!   `max increment` drawn PEs, reset on re-registration), which is what the names
//!   promise.
//! * Positions in our tree follow insertion order, RSPLIB's follow PE identifiers. The
//!   distribution is the same; individual draws differ (RSPLIB's random numbers differ
//!   anyway).

use super::least_used::degradation_step;
use crate::handlespace::element::Slab;
use crate::handlespace::fenwick::{Fenwick, uniform_below};
use crate::paged::PagedVec;
use rserpool_proto::policy::code;

const MAX: i128 = u32::MAX as i128;

/// Selection value of a random-family PE.
pub(crate) fn value(policy_type: u32, v: &[u32; 4], degradation: u32) -> u64 {
    let clamp1 = |x: i128| x.clamp(1, MAX) as u64;
    let load = i128::from(v[0]);
    let deg = i128::from(degradation);
    match policy_type {
        code::RANDOM => 1,
        code::WEIGHTED_RANDOM => u64::from(v[0]),
        code::WEIGHTED_RANDOM_DPF => {
            let w = u128::from(v[0]);
            let prod = w * u128::from(v[1]) * u128::from(v[2]);
            let div = u128::from(u32::MAX);
            let penalty = (prod + div / 2) / div;
            let x = i128::from(v[0]) - penalty.min(u128::from(u64::MAX)) as i128;
            if x < 0 { 1 } else { x.min(MAX) as u64 }
        }
        code::RANDOMIZED_LEAST_USED => clamp1(MAX - load),
        code::RANDOMIZED_LEAST_USED_DEGRADATION => clamp1(MAX - load - deg),
        code::RANDOMIZED_PRIORITY_LEAST_USED => clamp1(MAX - load - i128::from(v[1])),
        code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => {
            clamp1(MAX - load - i128::from(v[1]) - deg)
        }
        _ => 1,
    }
}

fn value_of(policy_type: u32, slab: &Slab, slot: u32) -> u32 {
    let r = slab.get(slot);
    // Values are at most 0xffffffff by construction.
    value(policy_type, &r.values, r.degradation).min(u64::from(u32::MAX)) as u32
}

/// Up to this many PEs per answer, draws without replacement use rejection (redraw when
/// an already chosen PE comes up; the accepted draw has exactly the conditional
/// distribution); after 4 rejections in a row, or for larger answers, chosen PEs are
/// taken out of the tree instead.
const REJECTION_MAX_K: usize = 16;
const REJECTION_TRIES: u32 = 4;

/// Value tree of a random-family pool.
#[derive(Debug, Default, Clone)]
pub(crate) struct Weighted {
    /// Slot at each position.
    members: PagedVec<u32>,
    /// Selection value at each position.
    vals: PagedVec<u32>,
    tree: Fenwick,
}

impl Weighted {
    pub(crate) fn insert(&mut self, policy_type: u32, slot: u32, slab: &mut Slab) {
        let v = value_of(policy_type, slab, slot);
        slab.set_pos(slot, self.members.len() as u32);
        self.members.push(slot);
        self.vals.push(v);
        self.tree.push(u64::from(v));
    }

    pub(crate) fn remove(&mut self, slot: u32, slab: &mut Slab) {
        let pos = slab.pos(slot) as usize;
        let Some(last) = self.members.len().checked_sub(1) else {
            return;
        };
        let v = u64::from(self.vals[pos]);
        if pos != last {
            let moved = self.members[last];
            let vm = self.vals[last];
            self.tree.update(pos, v, u64::from(vm));
            self.tree.update(last, u64::from(vm), v);
            self.members[pos] = moved;
            self.vals[pos] = vm;
            slab.set_pos(moved, pos as u32);
        }
        self.members.pop();
        self.vals.pop();
        self.tree.pop(v);
    }

    /// The PE's values (or degradation) changed: recompute its selection value.
    pub(crate) fn rekey(&mut self, policy_type: u32, slot: u32, slab: &Slab) {
        let pos = slab.pos(slot) as usize;
        let new = value_of(policy_type, slab, slot);
        let old = core::mem::replace(&mut self.vals[pos], new);
        self.tree.update(pos, u64::from(old), u64::from(new));
    }

    fn draw<R: rand_core::Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        let total = self.tree.total();
        (total > 0).then(|| self.tree.find(uniform_below(rng, total)))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select<R: rand_core::Rng + ?Sized>(
        &mut self,
        policy_type: u32,
        slab: &mut Slab,
        n: usize,
        max_increment: u32,
        rng: &mut R,
        picks: &mut Vec<u32>,
        out: &mut Vec<u32>,
    ) {
        picks.clear();
        let k = n.min(self.members.len());
        let mut zeroed = k > REJECTION_MAX_K;
        'draws: for _ in 0..k {
            if !zeroed {
                for _ in 0..REJECTION_TRIES {
                    let Some(p) = self.draw(rng) else {
                        break 'draws;
                    };
                    if !picks.contains(&(p as u32)) {
                        picks.push(p as u32);
                        continue 'draws;
                    }
                }
                // Too many rejections: take the chosen PEs out of the tree.
                zeroed = true;
                for &p in picks.iter() {
                    let p = p as usize;
                    self.tree.update(p, u64::from(self.vals[p]), 0);
                }
            }
            let Some(p) = self.draw(rng) else {
                break;
            };
            self.tree.update(p, u64::from(self.vals[p]), 0);
            picks.push(p as u32);
        }
        if zeroed {
            for &p in picks.iter() {
                let p = p as usize;
                self.tree.update(p, 0, u64::from(self.vals[p]));
            }
        }
        for (i, &p) in picks.iter().enumerate() {
            let slot = self.members[p as usize];
            out.push(slot);
            if (i as u64) < u64::from(max_increment) {
                let r = slab.get_mut(slot);
                if let Some(step) = degradation_step(policy_type, &r.values) {
                    r.degradation = r.degradation.saturating_add(step);
                    self.rekey(policy_type, slot, slab);
                }
            }
        }
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.members.allocated_bytes() + self.vals.allocated_bytes() + self.tree.allocated_bytes()
    }

    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.tree.total()
    }
}
