//! Weighted Round Robin (RFC 5356 §4.2) as stride scheduling.
//!
//! RFC 5356 describes a circular list in which every PE appears in proportion to its weight
//! with its copies spread as evenly as possible. We get that without materialising the
//! list: each PE has a *pass* value; selection takes the PEs with the smallest
//! `(pass, sequence number)` and adds `stride = 2^32 / weight` to the pass of each of the
//! first `max increment` of them. A PE of weight `w` is thus chosen `w` times as often as
//! a PE of weight 1. A PE that joins (or whose weight changes from 0) starts half a stride
//! after the pool's current *virtual time* (the pass of the last selected PE): it neither
//! floods nor starves, and PEs are scheduled at the midpoints of their intervals, which
//! keeps them from all meeting at round boundaries (weights 1:2:3:6 ⇒ the weight-6 PE
//! never waits more than two selections).
//!
//! Differences from RSPLIB (its round/virtual counters, `poolpolicy-template_impl.h`):
//! * RSPLIB hands a PE its `weight` selections per round back to back in an order that
//!   depends on its double update; ours spreads them evenly (the RFC's wording). Long-run
//!   shares are the same.
//! * Weight 0 means "cannot serve" (RFC 5356 §3.2): such a PE is never selected. RSPLIB
//!   treats weight 0 like weight 1.

/// Pass scale: the stride of a PE with weight 1.
pub(crate) const STRIDE_SCALE: u64 = 1 << 32;

/// Passes are renormalised (the smallest subtracted from all) before exceeding this.
pub(crate) const PASS_LIMIT: u64 = 1 << 62;

/// Pass value marking a weight-0 PE (never selected).
pub(crate) const NEVER: u64 = u64::MAX;

/// Pass increment of a PE with weight `w > 0`.
pub(crate) fn stride(weight: u32) -> u64 {
    STRIDE_SCALE / u64::from(weight.max(1))
}

/// Pass of a PE that joins at virtual time `vtime` ([`NEVER`] for weight 0).
pub(crate) fn initial_pass(vtime: u64, weight: u32) -> u64 {
    if weight == 0 {
        NEVER
    } else {
        vtime + stride(weight) / 2
    }
}

/// The weight of a WRR PE from its policy values.
pub(crate) fn weight(values: &[u32; 4]) -> u32 {
    values[0]
}
