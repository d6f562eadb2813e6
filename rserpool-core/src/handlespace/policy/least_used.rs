//! The least-used family: Least Used (RFC 5356 §5.1), Least Used with Degradation (§5.2),
//! Priority Least Used (§5.3) and RSPLIB's Priority Least Used with Degradation, Least
//! Used with DPF and Least Used with Degradation and DPF.
//!
//! All select by an ascending sorting key (RSPLIB `poolpolicy-template_impl.h`), ties
//! broken by sequence number (round robin among equal keys):
//!
//! | Policy | Key (clamped to 0xffffffff) |
//! |--------|------------------------------|
//! | LU | load |
//! | LUD | load + Degradation |
//! | PLU | load + load degradation |
//! | PLUD | load + load degradation + Degradation |
//! | LU-DPF | load + distance × load DPF |
//! | LUD-DPF | load + Degradation + distance × load DPF |
//!
//! *Degradation* is a per-entry counter (in load units): it grows by the PE's load
//! degradation each time the PE is among the first `max increment` PEs of an answer and is
//! reset to 0 when the PE is registered or re-registered. The DPF product uses the raw
//! 32-bit DPF (a fraction of full load per millisecond), computed exactly in integers
//! (RSPLIB uses doubles and `rint`; identical wherever the sum is below the clamp).
//!
//! Difference from RSPLIB: RSPLIB runs its *update* hook twice per selection (once
//! explicitly, once when re-linking the entry) and once on every (re-)insertion, so its
//! Degradation starts at 1 × load degradation and grows by 2 × per selection. We follow
//! RFC 5356 §5.2 (start at 0, +1 × per selection). The order in which PEs are chosen is
//! not visible on the wire, so this does not affect interoperability.

use rserpool_proto::policy::code;

/// Sorting key of a least-used-family PE.
pub(crate) fn sort_key(policy_type: u32, v: &[u32; 4], degradation: u32) -> u64 {
    let load = u128::from(v[0]);
    let deg = u128::from(degradation);
    let sum: u128 = match policy_type {
        code::LEAST_USED => load,
        code::LEAST_USED_DEGRADATION => load + deg,
        code::PRIORITY_LEAST_USED => load + u128::from(v[1]),
        code::PRIORITY_LEAST_USED_DEGRADATION => load + u128::from(v[1]) + deg,
        code::LEAST_USED_DPF => load + u128::from(v[2]) * u128::from(v[1]),
        code::LEAST_USED_DEGRADATION_DPF => load + deg + u128::from(v[3]) * u128::from(v[2]),
        _ => load,
    };
    sum.min(u128::from(u32::MAX)) as u64
}

/// The load degradation added to Degradation per selection, or `None` if the policy does
/// not degrade (also used by the randomized degradation policies).
pub(crate) fn degradation_step(policy_type: u32, v: &[u32; 4]) -> Option<u32> {
    match policy_type {
        code::LEAST_USED_DEGRADATION
        | code::PRIORITY_LEAST_USED_DEGRADATION
        | code::LEAST_USED_DEGRADATION_DPF
        | code::RANDOMIZED_LEAST_USED_DEGRADATION
        | code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => Some(v[1]),
        _ => None,
    }
}
