//! ENRP handlespace checksums (RFC 5353 §3.6.2), exactly as RSPLIB computes them.
//!
//! Per PE the unfolded sum is
//! `sum16(pool handle, odd length padded with one zero byte) + (id >> 16) + (id & 0xffff)`
//! where `sum16` adds big-endian 16-bit words. The PE identifier always starts a new word
//! (it is *not* concatenated to an odd-length handle). A set of PEs is summed into a
//! wrapping `u32` accumulator (as RSPLIB does), folded to 16 bits one's-complement style and
//! inverted; the empty set gives `0xffff`.
//!
//! The [`Handlespace`](super::Handlespace) keeps one accumulator for all PEs and one per
//! home registrar and updates them on every change, so reading a checksum is O(1).

use rserpool_proto::ids::{PeIdentifier, PoolHandle};

/// Sum of the big-endian 16-bit words of `bytes` (odd length padded with a zero byte),
/// wrapping in 32 bits.
pub fn handle_sum(bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    let mut acc: u32 = 0;
    for w in &mut chunks {
        if let [hi, lo] = *w {
            acc = acc.wrapping_add(u32::from(u16::from_be_bytes([hi, lo])));
        }
    }
    if let [last] = *chunks.remainder() {
        acc = acc.wrapping_add(u32::from(last) << 8);
    }
    acc
}

/// Unfolded contribution of one PE, given the [`handle_sum`] of its pool.
pub fn element_sum(handle_sum: u32, pe_id: PeIdentifier) -> u32 {
    handle_sum
        .wrapping_add(pe_id.0 >> 16)
        .wrapping_add(pe_id.0 & 0xffff)
}

/// Folds an unfolded accumulator to the 16-bit checksum sent on the wire.
pub fn fold(acc: u32) -> u16 {
    let mut a = acc;
    while a > 0xffff {
        a = (a & 0xffff) + (a >> 16);
    }
    // `a` fits in 16 bits here.
    !(a as u16)
}

/// An incrementally maintained checksum over a set of PEs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChecksumAccumulator(u32);

impl ChecksumAccumulator {
    /// The empty set.
    pub const EMPTY: ChecksumAccumulator = ChecksumAccumulator(0);

    /// Adds the PE `(handle, pe_id)`.
    pub fn add(&mut self, handle: &PoolHandle, pe_id: PeIdentifier) {
        self.add_sum(element_sum(handle_sum(handle.as_bytes()), pe_id));
    }

    /// Removes the PE `(handle, pe_id)` (which must have been added).
    pub fn remove(&mut self, handle: &PoolHandle, pe_id: PeIdentifier) {
        self.remove_sum(element_sum(handle_sum(handle.as_bytes()), pe_id));
    }

    /// Adds an unfolded sum (see [`element_sum`]).
    pub fn add_sum(&mut self, sum: u32) {
        self.0 = self.0.wrapping_add(sum);
    }

    /// Removes an unfolded sum.
    pub fn remove_sum(&mut self, sum: u32) {
        self.0 = self.0.wrapping_sub(sum);
    }

    /// The unfolded accumulator.
    pub fn raw(&self) -> u32 {
        self.0
    }

    /// The 16-bit checksum (`0xffff` for the empty set).
    pub fn value(&self) -> u16 {
        fold(self.0)
    }
}

/// Checksum of a set of PEs given as `(pool handle, PE id)` pairs (a plain scan; the
/// handlespace itself never scans).
pub fn checksum_of<'a>(pes: impl IntoIterator<Item = (&'a PoolHandle, PeIdentifier)>) -> u16 {
    let mut acc = ChecksumAccumulator::EMPTY;
    for (h, id) in pes {
        acc.add(h, id);
    }
    acc.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph(s: &str) -> PoolHandle {
        PoolHandle::from(s)
    }

    #[test]
    fn rsplib_vectors() {
        assert_eq!(checksum_of([]), 0xffff);
        assert_eq!(checksum_of([(&ph("EchoPool"), PeIdentifier(0x1f))]), 0x9232);
        assert_eq!(
            checksum_of([(&ph("CalcAppPool"), PeIdentifier(0x15))]),
            0xc2f5
        );
        assert_eq!(
            checksum_of([(&ph("CalcAppPool"), PeIdentifier(0x16))]),
            0xc2f4
        );
        let calc = ph("CalcAppPool");
        assert_eq!(
            checksum_of([(&calc, PeIdentifier(0x15)), (&calc, PeIdentifier(0x16))]),
            0x85ea
        );
    }

    #[test]
    fn worked_example_sums() {
        // "EchoPool" words 4563+686f+506f+6f6c.
        assert_eq!(handle_sum(b"EchoPool"), 0x16DAD);
        // "CalcAppPool" is odd: last word 6c00.
        assert_eq!(handle_sum(b"CalcAppPool"), 0x23CF3);
        assert_eq!(element_sum(0x23CF3, PeIdentifier(0x15)), 0x23D08);
    }

    #[test]
    fn incremental_add_remove_is_exact() {
        let mut acc = ChecksumAccumulator::EMPTY;
        let a = ph("EchoPool");
        let b = ph("x");
        acc.add(&a, PeIdentifier(0x1f));
        acc.add(&b, PeIdentifier(0xdead_beef));
        acc.remove(&b, PeIdentifier(0xdead_beef));
        assert_eq!(acc.value(), 0x9232);
        acc.remove(&a, PeIdentifier(0x1f));
        assert_eq!(acc, ChecksumAccumulator::EMPTY);
        assert_eq!(acc.value(), 0xffff);
    }

    #[test]
    fn sum_congruent_zero_gives_zero() {
        // A non-empty set whose folded sum is 0xffff yields 0x0000.
        let mut acc = ChecksumAccumulator::EMPTY;
        acc.add_sum(0xffff);
        assert_eq!(acc.value(), 0x0000);
        // And wrapping of the u32 accumulator is folded like RSPLIB's.
        let mut big = ChecksumAccumulator::EMPTY;
        big.add_sum(0xffff_ffff);
        big.add_sum(2);
        assert_eq!(big.raw(), 1);
        assert_eq!(big.value(), !1u16);
    }
}
