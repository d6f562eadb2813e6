//! An indexed 4-ary min-heap (half the depth of a binary heap; the four children of a node
//! are adjacent in memory): every item knows its slot, and the heap reports every move
//! through a callback so that the owner can store the item's position (for O(log n)
//! removal and re-keying of arbitrary items).
//!
//! Used for the sorting policies (selection order) and for the timer index, and by the
//! drivers for their transport timers (one deadline per association).
//!
//! Items either carry their own sort key ([`HeapItem`]: the plain methods) or are bare
//! slots sorted by a key kept elsewhere (the `*_by` methods take the key as a closure; the
//! timer index sorts slots by the deadlines in the PE records, so that its items are 4
//! bytes instead of 12). A heap keyed from outside is restored by its owner
//! ([`IndexedHeap::restore_by`]) whenever an item's key changes. Each step of a sift reads
//! every key it compares once.

use crate::paged::PagedVec;

/// An item of an [`IndexedHeap`]: it knows the element slot it belongs to.
pub trait Slotted: Copy {
    /// The element slot this item belongs to.
    fn slot(&self) -> u32;
}

/// A bare slot, ordered by a key kept elsewhere.
impl Slotted for u32 {
    #[inline]
    fn slot(&self) -> u32 {
        *self
    }
}

/// An item of an [`IndexedHeap`] that carries its own sort key.
pub trait HeapItem: Slotted {
    /// The sort key (distinct items have distinct keys: a total order).
    type Key: Ord + Copy;
    /// Its sort key; the smallest comes first.
    fn key(&self) -> Self::Key;
}

/// Arity of the heap.
const D: usize = 4;

/// Up to this many entries, [`IndexedHeap::first_n`] scans candidates linearly.
const SMALL_N: usize = 8;

/// Indexed 4-ary min-heap.
#[derive(Debug, Clone, Default)]
pub struct IndexedHeap<T> {
    /// In pages that never move once full ([`PagedVec`]): a heap that grows leaves no freed
    /// buffer behind in the allocator.
    items: PagedVec<T>,
}

impl<T: Slotted> IndexedHeap<T> {
    /// An empty heap.
    pub fn new() -> Self {
        IndexedHeap {
            items: PagedVec::new(),
        }
    }

    /// The item at position `i`.
    pub fn get(&self, i: u32) -> Option<&T> {
        self.items.get(i as usize)
    }

    /// The smallest item.
    pub fn peek(&self) -> Option<&T> {
        self.items.first()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the heap holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items the heap has memory for.
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// All items in heap order (not sorted).
    #[cfg(test)]
    pub(crate) fn items(&self) -> Vec<T> {
        self.items.iter().copied().collect()
    }

    /// Heap bytes allocated.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.items.allocated_bytes()
    }

    /// [`push`](Self::push), sorted by `key`.
    pub fn push_by<K: Ord>(
        &mut self,
        item: T,
        key: &impl Fn(&T) -> K,
        pos: &mut impl FnMut(u32, u32),
    ) {
        let i = self.items.len();
        self.items.push(item);
        self.sift_up(i, key, pos);
    }

    /// [`remove`](Self::remove), sorted by `key`.
    pub fn remove_by<K: Ord>(
        &mut self,
        i: u32,
        key: &impl Fn(&T) -> K,
        pos: &mut impl FnMut(u32, u32),
    ) -> Option<T> {
        let i = i as usize;
        let removed = self.items.swap_remove(i)?;
        if i < self.items.len() {
            self.restore(i, key, pos);
        }
        Some(removed)
    }

    /// The key of the item at position `i` changed (sorted by `key`): restores the heap
    /// order.
    pub fn restore_by<K: Ord>(
        &mut self,
        i: u32,
        key: &impl Fn(&T) -> K,
        pos: &mut impl FnMut(u32, u32),
    ) {
        self.restore(i as usize, key, pos);
    }

    fn restore<K: Ord>(
        &mut self,
        i: usize,
        key: &impl Fn(&T) -> K,
        pos: &mut impl FnMut(u32, u32),
    ) {
        if i > 0 {
            let parent = (i - 1) / D;
            if let (Some(a), Some(p)) = (self.items.get(i), self.items.get(parent))
                && key(a) < key(p)
            {
                self.sift_up(i, key, pos);
                return;
            }
        }
        self.sift_down(i, key, pos);
    }

    fn sift_up<K: Ord>(
        &mut self,
        mut i: usize,
        key: &impl Fn(&T) -> K,
        pos: &mut impl FnMut(u32, u32),
    ) {
        let Some(&item) = self.items.get(i) else {
            return;
        };
        let item_key = key(&item);
        while i > 0 {
            let parent = (i - 1) / D;
            let p = self.items[parent];
            if item_key >= key(&p) {
                break;
            }
            self.items[i] = p;
            pos(p.slot(), i as u32);
            i = parent;
        }
        self.items[i] = item;
        pos(item.slot(), i as u32);
    }

    fn sift_down<K: Ord>(
        &mut self,
        mut i: usize,
        key: &impl Fn(&T) -> K,
        pos: &mut impl FnMut(u32, u32),
    ) {
        let n = self.items.len();
        let Some(&item) = self.items.get(i) else {
            return;
        };
        let item_key = key(&item);
        loop {
            let first = D * i + 1;
            if first >= n {
                break;
            }
            let last = (first + D).min(n);
            let mut c = first;
            let mut c_key = key(&self.items[first]);
            for j in first + 1..last {
                let j_key = key(&self.items[j]);
                if j_key < c_key {
                    c = j;
                    c_key = j_key;
                }
            }
            if c_key >= item_key {
                break;
            }
            let child = self.items[c];
            self.items[i] = child;
            pos(child.slot(), i as u32);
            i = c;
        }
        self.items[i] = item;
        pos(item.slot(), i as u32);
    }
}

impl<T: HeapItem> IndexedHeap<T> {
    /// Inserts `item`. `pos(slot, position)` is called for every item that takes a new
    /// position (the new one included); [`remove`](Self::remove) and
    /// [`replace`](Self::replace) report moves the same way.
    pub fn push(&mut self, item: T, pos: &mut impl FnMut(u32, u32)) {
        self.push_by(item, &T::key, pos);
    }

    /// Removes the item at position `i` and returns it.
    pub fn remove(&mut self, i: u32, pos: &mut impl FnMut(u32, u32)) -> Option<T> {
        self.remove_by(i, &T::key, pos)
    }

    /// Replaces the item at position `i` (same slot, new key) and restores the heap order.
    pub fn replace(&mut self, i: u32, item: T, pos: &mut impl FnMut(u32, u32)) {
        if let Some(x) = self.items.get_mut(i as usize) {
            *x = item;
            self.restore(i as usize, &T::key, pos);
        }
    }

    /// Replaces the whole content by `items` (any order) and rebuilds the heap.
    pub(crate) fn replace_all(&mut self, items: Vec<T>, pos: &mut impl FnMut(u32, u32)) {
        self.items = PagedVec::from(items);
        self.rebuild_with(|_| {}, pos);
    }

    /// Takes all items out (the heap becomes empty).
    pub(crate) fn take_items(&mut self) -> Vec<T> {
        self.items.take_vec()
    }

    /// Changes all items in place (without changing their relative order) and rebuilds
    /// the heap.
    pub(crate) fn rebuild_with(&mut self, f: impl FnMut(&mut T), pos: &mut impl FnMut(u32, u32)) {
        self.items.iter_mut().for_each(f);
        let n = self.items.len();
        for i in (0..n.div_ceil(D)).rev() {
            self.sift_down(i, &T::key, pos);
        }
        for (i, it) in self.items.iter().enumerate() {
            pos(it.slot(), i as u32);
        }
    }

    /// Positions of the first `n` items in heap order, appended to `out` (smallest first),
    /// without changing the heap. `cand` is scratch space.
    pub(crate) fn first_n(&self, n: usize, cand: &mut Vec<u32>, out: &mut Vec<u32>) {
        cand.clear();
        let start = out.len();
        if n == 0 || self.items.is_empty() {
            return;
        }
        if n == 1 {
            out.push(0);
            return;
        }
        let items = &self.items;
        let less = |a: u32, b: u32| items[a as usize].key() < items[b as usize].key();
        cand.push(0);
        if n <= SMALL_N {
            // Few entries wanted: a linear scan over the (at most 1 + 3n) candidates beats
            // maintaining a heap of them.
            while out.len() - start < n {
                let Some(first) = cand.first().copied() else {
                    break;
                };
                let mut bi = 0;
                let mut best = first;
                for (i, &c) in cand.iter().enumerate().skip(1) {
                    if less(c, best) {
                        best = c;
                        bi = i;
                    }
                }
                cand.swap_remove(bi);
                out.push(best);
                let f = D * best as usize + 1;
                cand.extend((f..(f + D).min(items.len())).map(|c| c as u32));
            }
            return;
        }
        let mut taken = 0;
        while taken < n {
            // Pop the smallest candidate (binary heap over `cand`).
            let Some(&top) = cand.first() else { break };
            let last = cand.pop().unwrap_or(top);
            if !cand.is_empty() {
                cand[0] = last;
                let mut i = 0;
                let m = cand.len();
                loop {
                    let l = 2 * i + 1;
                    if l >= m {
                        break;
                    }
                    let r = l + 1;
                    let c = if r < m && less(cand[r], cand[l]) {
                        r
                    } else {
                        l
                    };
                    if less(cand[c], cand[i]) {
                        cand.swap(c, i);
                        i = c;
                    } else {
                        break;
                    }
                }
            }
            out.push(top);
            taken += 1;
            let first = D * top as usize + 1;
            for child in first..(first + D).min(items.len()) {
                // `cand` itself is a binary heap of candidate positions.
                cand.push(child as u32);
                let mut i = cand.len() - 1;
                while i > 0 {
                    let p = (i - 1) / 2;
                    if less(cand[i], cand[p]) {
                        cand.swap(i, p);
                        i = p;
                    } else {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct It(u64, u32);
    impl Slotted for It {
        fn slot(&self) -> u32 {
            self.1
        }
    }

    impl HeapItem for It {
        type Key = Self;
        fn key(&self) -> Self {
            *self
        }
    }

    #[test]
    fn heap_orders_and_tracks_positions() {
        let mut pos = vec![u32::MAX; 64];
        let mut h = IndexedHeap::new();
        let keys = [5u64, 3, 9, 1, 7, 3, 8, 2, 6, 0, 4];
        for (s, k) in keys.iter().enumerate() {
            h.push(It(*k, s as u32), &mut |s, i| pos[s as usize] = i);
        }
        for (i, it) in h.items().iter().enumerate() {
            assert_eq!(pos[it.1 as usize], i as u32);
        }
        let mut cand = Vec::new();
        let mut out = Vec::new();
        h.first_n(5, &mut cand, &mut out);
        let firsts: Vec<u64> = out.iter().map(|&i| h.items()[i as usize].0).collect();
        assert_eq!(firsts, vec![0, 1, 2, 3, 3]);
        out.clear();
        h.first_n(11, &mut cand, &mut out);
        let all: Vec<u64> = out.iter().map(|&i| h.items()[i as usize].0).collect();
        assert_eq!(all, vec![0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9]);
        // Remove slot 2 (key 9) and re-key slot 0 (key 5 -> 10).
        let p2 = pos[2];
        assert_eq!(
            h.remove(p2, &mut |s, i| pos[s as usize] = i),
            Some(It(9, 2))
        );
        let p0 = pos[0];
        h.replace(p0, It(10, 0), &mut |s, i| pos[s as usize] = i);
        let mut sorted = Vec::new();
        while let Some(&top) = h.peek() {
            sorted.push(top.0);
            h.remove(0, &mut |s, i| pos[s as usize] = i);
        }
        assert_eq!(sorted, vec![0, 1, 2, 3, 3, 4, 6, 7, 8, 10]);
    }

    #[test]
    fn bare_slots_follow_keys_kept_elsewhere() {
        let mut key: Vec<u64> = (0..300u64).map(|s| (s * 7919) % 1000).collect();
        let mut pos = vec![u32::MAX; key.len()];
        let mut h = IndexedHeap::<u32>::new();
        for s in 0..key.len() as u32 {
            let k = &key;
            h.push_by(s, &|s: &u32| (k[*s as usize], *s), &mut |s, i| {
                pos[s as usize] = i
            });
        }
        // Change every third key (the owner restores each one right after changing it),
        // and take every fifth slot out.
        for s in (0..key.len()).step_by(3) {
            key[s] = (key[s] * 31 + 17) % 1000;
            let k = &key;
            h.restore_by(pos[s], &|s: &u32| (k[*s as usize], *s), &mut |s, i| {
                pos[s as usize] = i
            });
        }
        for s in (0..key.len()).step_by(5) {
            let k = &key;
            let out = h.remove_by(pos[s], &|s: &u32| (k[*s as usize], *s), &mut |s, i| {
                pos[s as usize] = i
            });
            assert_eq!(out, Some(s as u32));
        }
        for (i, s) in h.items().iter().enumerate() {
            assert_eq!(pos[*s as usize], i as u32);
        }
        let mut want: Vec<(u64, u32)> = (0..key.len() as u32)
            .filter(|s| s % 5 != 0)
            .map(|s| (key[s as usize], s))
            .collect();
        want.sort();
        let mut got = Vec::new();
        while let Some(&top) = h.peek() {
            got.push((key[top as usize], top));
            let k = &key;
            h.remove_by(0, &|s: &u32| (k[*s as usize], *s), &mut |s, i| {
                pos[s as usize] = i
            });
        }
        assert_eq!(got, want);
    }
}
