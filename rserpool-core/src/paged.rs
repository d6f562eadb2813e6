//! A vector kept in fixed-size pages.
//!
//! A `Vec` that grows past its capacity moves to a new buffer and frees the old one. For the
//! tables that grow with the number of PEs or associations (heaps, rings, per-slot arrays)
//! that leaves the old buffers behind as holes in the allocator's heap: resident memory that
//! no table uses any more (a registrar holding 10,000 PEs had ~38 bytes per PE of such free
//! space). A [`PagedVec`] moves what it holds only while it is small: its first page grows
//! like a `Vec` (doubling, so that the many small tables of a handlespace with many small
//! pools stay small) up to about [`PAGE_BYTES`]; after that it grows by whole pages and
//! shrinks page by page, so each further page is allocated once and stays where it is, and
//! the spare room is at most one page. Indexing costs a shift and a mask more.

use core::ops::{Index, IndexMut};
use smallvec::SmallVec;

/// The size a page aims at: a power-of-two number of items of at most this many bytes
/// (one item if an item is larger).
pub const PAGE_BYTES: usize = 8192;

/// How many bits of an index select the item within its page, for items of `size` bytes.
const fn page_shift(size: usize) -> u32 {
    let per_page = if size == 0 || size >= PAGE_BYTES {
        1
    } else {
        PAGE_BYTES / size
    };
    usize::BITS - 1 - per_page.leading_zeros()
}

/// A growable array in pages that, once full-sized, never move. See the [module
/// documentation](self).
#[derive(Clone)]
pub struct PagedVec<T> {
    /// Full pages, then the page of the last item; after it at most one empty page, kept
    /// for the next growth (so that pushing and popping around a page boundary does not
    /// allocate every time). One page lies inline: a small vector makes one allocation,
    /// like a `Vec`.
    pages: SmallVec<[Vec<T>; 1]>,
    len: usize,
}

impl<T> Default for PagedVec<T> {
    fn default() -> Self {
        PagedVec::new()
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for PagedVec<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> PagedVec<T> {
    const SHIFT: u32 = page_shift(core::mem::size_of::<T>());
    /// Items per page.
    pub const PAGE_LEN: usize = 1 << Self::SHIFT;
    const MASK: usize = Self::PAGE_LEN - 1;

    /// An empty vector (allocates nothing).
    pub fn new() -> Self {
        PagedVec {
            pages: SmallVec::new(),
            len: 0,
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds no item.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items it has room for without allocating.
    pub fn capacity(&self) -> usize {
        self.pages.iter().map(Vec::capacity).sum()
    }

    /// Bytes allocated for items and page headers.
    pub fn allocated_bytes(&self) -> usize {
        self.capacity() * core::mem::size_of::<T>()
            + if self.pages.spilled() {
                self.pages.capacity() * core::mem::size_of::<Vec<T>>()
            } else {
                0
            }
    }

    #[inline]
    fn place(i: usize) -> (usize, usize) {
        (i >> Self::SHIFT, i & Self::MASK)
    }

    /// The item at `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        let (p, o) = Self::place(i);
        self.pages.get(p)?.get(o)
    }

    /// The item at `i`, to change.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let (p, o) = Self::place(i);
        self.pages.get_mut(p)?.get_mut(o)
    }

    /// The first item.
    pub fn first(&self) -> Option<&T> {
        self.get(0)
    }

    /// The last item.
    pub fn last(&self) -> Option<&T> {
        self.get(self.len.checked_sub(1)?)
    }

    /// Appends `item`.
    pub fn push(&mut self, item: T) {
        let (p, _) = Self::place(self.len);
        match self.pages.get_mut(p) {
            Some(page) => {
                if page.len() == page.capacity() {
                    // Only a first page can be short of room: it doubles, up to a page.
                    let want = (2 * page.capacity()).max(4).min(Self::PAGE_LEN);
                    page.reserve_exact(want.saturating_sub(page.len()));
                }
                page.push(item);
            }
            // The first page starts small; later ones are allocated whole.
            None if p == 0 => self.pages.push(vec![item]),
            None => {
                let mut page = Vec::with_capacity(Self::PAGE_LEN);
                page.push(item);
                self.pages.push(page);
            }
        }
        self.len += 1;
    }

    /// Removes the last item.
    pub fn pop(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let (p, _) = Self::place(last);
        let item = self.pages.get_mut(p)?.pop()?;
        self.len = last;
        // Keep one empty page after the page of the (new) last item for the next growth;
        // free any other. An empty vector keeps its first page.
        let keep = match last.checked_sub(1) {
            Some(l) => Self::place(l).0 + 2,
            None => 1,
        };
        self.pages.truncate(keep);
        Some(item)
    }

    /// Removes the item at `i`, moving the last item into its place (O(1)).
    pub fn swap_remove(&mut self, i: usize) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        if i > last {
            return None;
        }
        self.swap(i, last);
        self.pop()
    }

    /// Swaps the items at `a` and `b` (both below [`len`](Self::len)).
    pub fn swap(&mut self, a: usize, b: usize) {
        let (pa, oa) = Self::place(a);
        let (pb, ob) = Self::place(b);
        if pa == pb {
            if let Some(page) = self.pages.get_mut(pa) {
                page.swap(oa, ob);
            }
        } else {
            let (lo, hi, olo, ohi) = if pa < pb {
                (pa, pb, oa, ob)
            } else {
                (pb, pa, ob, oa)
            };
            let (head, tail) = self.pages.split_at_mut(hi);
            if let (Some(x), Some(y)) = (
                head.get_mut(lo).and_then(|p| p.get_mut(olo)),
                tail.first_mut().and_then(|p| p.get_mut(ohi)),
            ) {
                core::mem::swap(x, y);
            }
        }
    }

    /// Removes every item and frees every page.
    pub fn clear(&mut self) {
        self.pages = SmallVec::new();
        self.len = 0;
    }

    /// The items in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.pages.iter().flatten()
    }

    /// The items in order, to change.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> + '_ {
        self.pages.iter_mut().flatten()
    }

    /// Takes every item out, in order, into one `Vec` (the pages are freed).
    pub fn take_vec(&mut self) -> Vec<T> {
        let mut v = Vec::with_capacity(self.len);
        for page in core::mem::take(&mut self.pages) {
            v.extend(page);
        }
        self.len = 0;
        v
    }
}

impl<T> PagedVec<T> {
    /// Appends items made by `fill` until it holds `len` (nothing if it holds that many
    /// already): a table by index grown to cover an index.
    pub fn grow_to(&mut self, len: usize, mut fill: impl FnMut() -> T) {
        while self.len < len {
            self.push(fill());
        }
    }
}

impl<T> From<Vec<T>> for PagedVec<T> {
    fn from(v: Vec<T>) -> Self {
        let mut p = PagedVec::new();
        p.extend(v);
        p
    }
}

impl<T> Extend<T> for PagedVec<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for x in iter {
            self.push(x);
        }
    }
}

impl<T> Index<usize> for PagedVec<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        let (p, o) = Self::place(i);
        &self.pages[p][o]
    }
}

impl<T> IndexMut<usize> for PagedVec<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        let (p, o) = Self::place(i);
        &mut self.pages[p][o]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pages_hold_a_power_of_two_items_of_about_page_bytes() {
        assert_eq!(PagedVec::<u32>::PAGE_LEN, 2048);
        assert_eq!(PagedVec::<[u32; 3]>::PAGE_LEN, 512);
        assert_eq!(PagedVec::<[u8; 88]>::PAGE_LEN, 64);
        assert_eq!(PagedVec::<[u8; 10_000]>::PAGE_LEN, 1);
        assert_eq!(PagedVec::<()>::PAGE_LEN, 1);
    }

    #[test]
    fn growing_past_the_first_page_never_moves_an_item() {
        let mut v = PagedVec::<u64>::new();
        v.push(7);
        assert!(v.capacity() < 16, "a small vector stays small");
        v.extend(1..1024);
        assert_eq!(v.capacity(), 1024, "the first page grew to a page");
        let first: *const u64 = &v[0];
        let last: *const u64 = &v[1023];
        for i in 0..10_000 {
            v.push(i);
        }
        assert!(core::ptr::eq(first, &v[0]) && core::ptr::eq(last, &v[1023]));
        assert_eq!(v.capacity(), 11 * 1024);
    }

    #[test]
    fn shrinking_keeps_one_spare_page() {
        let mut v = PagedVec::<u32>::new();
        v.extend(0..3 * 2048);
        assert_eq!(v.capacity(), 3 * 2048);
        v.pop();
        assert_eq!(v.capacity(), 3 * 2048);
        for _ in 1..2 * 2048 {
            v.pop();
        }
        assert_eq!(v.len(), 2048);
        assert_eq!(v.capacity(), 2 * 2048, "one page in use, one spare");
        v.push(1);
        assert_eq!(v.capacity(), 2 * 2048, "the spare page is used again");
        assert_eq!((v.len(), v.last()), (2049, Some(&1)));
        for _ in 0..2049 {
            v.pop();
        }
        assert!(v.is_empty() && v.pop().is_none());
        assert_eq!(v.capacity(), 2048, "the empty first page");
    }

    #[test]
    fn a_small_vector_takes_little_room() {
        let mut v = PagedVec::<u32>::new();
        assert_eq!(v.capacity(), 0);
        v.extend(0..10);
        assert!(v.capacity() <= 16, "{}", v.capacity());
        assert!(core::mem::size_of::<PagedVec<u32>>() <= 40);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u16),
        Pop,
        SwapRemove(u16),
        Swap(u16, u16),
        Set(u16, u16),
        Take,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u16>().prop_map(Op::Push),
            2 => Just(Op::Pop),
            1 => any::<u16>().prop_map(Op::SwapRemove),
            1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Swap(a, b)),
            1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Set(a, b)),
            1 => Just(Op::Take),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every operation gives what `Vec`'s gives (small items, so that a few thousand
        /// operations cross many page boundaries).
        #[test]
        fn behaves_as_a_vec(ops in proptest::collection::vec(op(), 0..3000)) {
            let mut p = PagedVec::<[u8; 1024]>::new();
            let mut v: Vec<[u8; 1024]> = Vec::new();
            let item = |x: u16| { let mut a = [0u8; 1024]; a[0] = x as u8; a[1023] = (x >> 8) as u8; a };
            for op in ops {
                match op {
                    Op::Push(x) => { p.push(item(x)); v.push(item(x)); }
                    Op::Pop => prop_assert_eq!(p.pop(), v.pop()),
                    Op::SwapRemove(i) => {
                        let i = i as usize % (v.len() + 1);
                        let want = (i < v.len()).then(|| v.swap_remove(i));
                        prop_assert_eq!(p.swap_remove(i), want);
                    }
                    Op::Swap(a, b) if !v.is_empty() => {
                        let (a, b) = (a as usize % v.len(), b as usize % v.len());
                        p.swap(a, b);
                        v.swap(a, b);
                    }
                    Op::Swap(..) => {}
                    Op::Set(i, x) if !v.is_empty() => {
                        let i = i as usize % v.len();
                        p[i] = item(x);
                        v[i] = item(x);
                    }
                    Op::Set(..) => {}
                    Op::Take => {
                        if v.len().is_multiple_of(3) {
                            prop_assert_eq!(p.take_vec(), core::mem::take(&mut v));
                        }
                    }
                }
                prop_assert_eq!(p.len(), v.len());
                prop_assert_eq!(p.first(), v.first());
                prop_assert_eq!(p.last(), v.last());
                prop_assert!(p.capacity() >= v.len());
                prop_assert!(p.capacity() <= v.len() + 2 * PagedVec::<[u8; 1024]>::PAGE_LEN);
            }
            prop_assert!(p.iter().eq(v.iter()));
            prop_assert!(p.iter().rev().eq(v.iter().rev()));
            for (i, x) in v.iter().enumerate() {
                prop_assert_eq!(p.get(i), Some(x));
            }
            prop_assert_eq!(p.get(v.len()), None);
        }
    }
}
