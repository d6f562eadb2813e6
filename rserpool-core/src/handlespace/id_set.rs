//! A sorted set of PE identifiers in blocks: the ownership index of a pool (its PEs of one
//! home registrar, in identifier order, for the ENRP handle table walks and takeovers).
//!
//! A `BTreeSet<u32>` costs ~12 bytes per identifier (nodes of 11 keys, two thirds full on
//! random inserts, each with its parent link and allocator header). Here the identifiers
//! lie in sorted blocks of at most [`BLOCK`] (a full block splits in two halves before it
//! takes another), so an identifier costs 4-8 bytes; inserting or removing moves at most
//! one block's tail.

use core::ops::Bound;
use smallvec::SmallVec;

/// Most identifiers in one block.
const BLOCK: usize = 256;

/// A sorted set of `u32` in blocks. See the [module documentation](self).
#[derive(Clone, Debug, Default)]
pub(crate) struct IdSet {
    /// Sorted, non-empty, and every block's identifiers below the next block's. The first
    /// block lies inline: a small set makes one allocation.
    blocks: SmallVec<[Vec<u32>; 1]>,
}

/// The identifiers of an [`IdSet`] from a point on, in order.
pub(crate) type IdIter<'a> = core::iter::Chain<
    core::slice::Iter<'a, u32>,
    core::iter::Flatten<core::slice::Iter<'a, Vec<u32>>>,
>;

impl IdSet {
    /// Number of identifiers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The smallest identifier.
    pub(crate) fn first(&self) -> Option<&u32> {
        self.blocks.first()?.first()
    }

    /// The block that holds `id` or would: the first whose last identifier is at least
    /// `id`, else the last one.
    fn block_of(&self, id: u32) -> usize {
        let b = self
            .blocks
            .partition_point(|blk| blk.last().is_some_and(|&l| l < id));
        b.min(self.blocks.len().saturating_sub(1))
    }

    /// Adds `id`; false if it was there.
    pub(crate) fn insert(&mut self, id: u32) -> bool {
        if self.blocks.is_empty() {
            self.blocks.push(vec![id]);
            return true;
        }
        let b = self.block_of(id);
        let Some(blk) = self.blocks.get_mut(b) else {
            return false;
        };
        let Err(i) = blk.binary_search(&id) else {
            return false;
        };
        if blk.len() < BLOCK {
            blk.insert(i, id);
            return true;
        }
        // Full: split it first (the upper half into a new block), so that no block grows
        // past BLOCK.
        let mut upper = Vec::with_capacity(BLOCK);
        upper.extend_from_slice(blk.get(BLOCK / 2..).unwrap_or(&[]));
        blk.truncate(BLOCK / 2);
        if i <= BLOCK / 2 {
            blk.insert(i, id);
        } else {
            upper.insert(i - BLOCK / 2, id);
        }
        self.blocks.insert(b + 1, upper);
        true
    }

    /// Removes `id`; false if it was not there.
    pub(crate) fn remove(&mut self, id: u32) -> bool {
        let b = self.block_of(id);
        let Some(blk) = self.blocks.get_mut(b) else {
            return false;
        };
        let Ok(i) = blk.binary_search(&id) else {
            return false;
        };
        blk.remove(i);
        if blk.is_empty() {
            self.blocks.remove(b);
        } else if blk.len() < BLOCK / 4 {
            // Merge a thin block into a neighbour that has room, so that blocks stay at
            // least a quarter full on average.
            let n = blk.len();
            if let Some(next) = self.blocks.get(b + 1)
                && next.len() + n <= BLOCK
            {
                let next = self.blocks.remove(b + 1);
                if let Some(blk) = self.blocks.get_mut(b) {
                    blk.extend_from_slice(&next);
                }
            } else if let Some(prev) = b.checked_sub(1)
                && self.blocks.get(prev).is_some_and(|p| p.len() + n <= BLOCK)
            {
                let cur = self.blocks.remove(b);
                if let Some(p) = self.blocks.get_mut(prev) {
                    p.extend_from_slice(&cur);
                }
            }
        }
        true
    }

    /// The identifiers from `lo` on, in order.
    pub(crate) fn range_from(&self, lo: Bound<u32>) -> IdIter<'_> {
        let b = match lo {
            Bound::Unbounded => 0,
            Bound::Included(x) | Bound::Excluded(x) => self.block_of(x),
        };
        let blk = self.blocks.get(b).map_or(&[][..], Vec::as_slice);
        let i = match lo {
            Bound::Unbounded => 0,
            Bound::Included(x) => blk.partition_point(|&v| v < x),
            Bound::Excluded(x) => blk.partition_point(|&v| v <= x),
        };
        let head = blk.get(i..).unwrap_or(&[]);
        let rest = self.blocks.get(b + 1..).unwrap_or(&[]);
        head.iter().chain(rest.iter().flatten())
    }

    /// All identifiers, in order.
    pub(crate) fn iter(&self) -> IdIter<'_> {
        self.range_from(Bound::Unbounded)
    }

    /// Moves every identifier of `other` into this set.
    pub(crate) fn append(&mut self, other: &mut IdSet) {
        if self.is_empty() {
            core::mem::swap(self, other);
            return;
        }
        for id in core::mem::take(other).iter() {
            self.insert(*id);
        }
    }

    /// Bytes allocated.
    pub(crate) fn allocated_bytes(&self) -> usize {
        let outer = if self.blocks.spilled() {
            self.blocks.capacity() * core::mem::size_of::<Vec<u32>>()
        } else {
            0
        };
        outer + self.blocks.iter().map(|b| b.capacity() * 4).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u32),
        Remove(u32),
        Append(Vec<u32>),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct values, so that inserts and removals meet; some runs of inserts
        // large enough to split blocks.
        let v = prop_oneof![0u32..2000, any::<u32>()];
        prop_oneof![
            6 => v.clone().prop_map(Op::Insert),
            3 => v.clone().prop_map(Op::Remove),
            1 => proptest::collection::vec(v, 0..300).prop_map(Op::Append),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Behaves as a `BTreeSet<u32>`: membership, order, ranges, length.
        #[test]
        fn behaves_as_a_btree_set(ops in proptest::collection::vec(op(), 0..600)) {
            let mut s = IdSet::default();
            let mut m = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(x) => prop_assert_eq!(s.insert(x), m.insert(x)),
                    Op::Remove(x) => prop_assert_eq!(s.remove(x), m.remove(&x)),
                    Op::Append(v) => {
                        let mut o = IdSet::default();
                        for &x in &v {
                            o.insert(x);
                        }
                        s.append(&mut o);
                        prop_assert!(o.is_empty());
                        m.extend(v);
                    }
                }
                prop_assert_eq!(s.len(), m.len());
                prop_assert_eq!(s.first(), m.first());
                prop_assert!(s.blocks.iter().all(|b| !b.is_empty() && b.len() <= BLOCK));
            }
            prop_assert!(s.iter().eq(m.iter()));
            for x in [0, 1, 999, 1000, 1999, u32::MAX / 2, u32::MAX] {
                prop_assert!(s.range_from(Bound::Excluded(x)).eq(m.range((Bound::Excluded(x), Bound::Unbounded))));
                prop_assert!(s.range_from(Bound::Included(x)).eq(m.range(x..)));
            }
            for &x in m.iter().step_by(97).take(30) {
                prop_assert!(s.range_from(Bound::Excluded(x)).eq(m.range((Bound::Excluded(x), Bound::Unbounded))));
            }
        }
    }

    #[test]
    fn an_identifier_costs_at_most_about_eight_bytes() {
        // Random identifiers (PEs choose them at random), as in a large pool.
        let mut s = IdSet::default();
        let mut x: u32 = 12345;
        for _ in 0..100_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s.insert(x);
        }
        let per_id = s.allocated_bytes() as f64 / s.len() as f64;
        assert!(per_id <= 8.5, "{per_id} bytes per identifier");
    }
}
