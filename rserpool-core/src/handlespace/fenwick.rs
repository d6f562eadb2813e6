//! A Fenwick (binary indexed) tree of `u64` weights with weighted sampling, used by the
//! random policies: O(log n) updates and O(log n) "which element covers value r".

use crate::paged::PagedVec;

/// Fenwick tree over element positions `0..len`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fenwick {
    /// 1-based tree stored 0-based: `tree[k-1]` covers `(k - lowbit(k), k]`.
    tree: PagedVec<u64>,
    total: u64,
}

fn lowbit(k: usize) -> usize {
    k & k.wrapping_neg()
}

impl Fenwick {
    /// Number of positions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tree.len()
    }

    /// Sum of all weights.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Bytes allocated.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.tree.allocated_bytes()
    }

    /// Sum of the weights of positions `0..k`.
    fn prefix(&self, mut k: usize) -> u64 {
        let mut s = 0u64;
        while k > 0 {
            s = s.wrapping_add(self.tree.get(k - 1).copied().unwrap_or(0));
            k -= lowbit(k);
        }
        s
    }

    /// Appends a position with weight `w`.
    pub(crate) fn push(&mut self, w: u64) {
        let k = self.tree.len() + 1;
        let covered = self.prefix(k - 1).wrapping_sub(self.prefix(k - lowbit(k)));
        self.tree.push(w.wrapping_add(covered));
        self.total = self.total.wrapping_add(w);
    }

    /// Removes the last position, whose weight is `w`.
    pub(crate) fn pop(&mut self, w: u64) {
        self.tree.pop();
        self.total = self.total.wrapping_sub(w);
    }

    /// Changes the weight of position `i` from `old` to `new`.
    pub(crate) fn update(&mut self, i: usize, old: u64, new: u64) {
        if old == new {
            return;
        }
        let mut k = i + 1;
        while let Some(t) = self.tree.get_mut(k - 1) {
            *t = t.wrapping_add(new).wrapping_sub(old);
            k += lowbit(k);
        }
        self.total = self.total.wrapping_add(new).wrapping_sub(old);
    }

    /// The position `i` with `prefix(i) <= r < prefix(i + 1)` (its weight is non-zero);
    /// requires `r < total()`.
    pub(crate) fn find(&self, r: u64) -> usize {
        let n = self.tree.len();
        let mut pos = 0usize;
        let mut rem = r;
        let mut step = if n == 0 {
            0
        } else {
            1usize << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= n {
                let t = self.tree[next - 1];
                if t <= rem {
                    pos = next;
                    rem -= t;
                }
            }
            step >>= 1;
        }
        pos
    }
}

/// A uniformly distributed value in `0..n` (`n > 0`), Lemire's unbiased method.
pub(crate) fn uniform_below<R: rand_core::Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    debug_assert!(n > 0);
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_find_update() {
        let w = [3u64, 0, 5, 1, 0, 0, 7, 2, 4];
        let mut f = Fenwick::default();
        for &x in &w {
            f.push(x);
        }
        assert_eq!(f.total(), w.iter().sum::<u64>());
        for k in 0..=w.len() {
            assert_eq!(f.prefix(k), w[..k].iter().sum::<u64>());
        }
        // every r maps to the covering position
        let mut r = 0;
        for (i, &x) in w.iter().enumerate() {
            for _ in 0..x {
                assert_eq!(f.find(r), i, "r={r}");
                r += 1;
            }
        }
        f.update(2, 5, 0);
        f.update(4, 0, 6);
        assert_eq!(f.find(3), 3);
        assert_eq!(f.find(4), 4);
        assert_eq!(f.find(9), 4);
        assert_eq!(f.find(10), 6);
        f.pop(4);
        f.pop(2);
        assert_eq!(f.len(), 7);
        assert_eq!(f.total(), 3 + 1 + 6 + 7);
        f.push(10);
        assert_eq!(f.prefix(8), 27);
        assert_eq!(f.find(26), 7);
    }
}
