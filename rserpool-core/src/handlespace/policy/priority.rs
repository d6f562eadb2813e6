//! Priority (RFC 5356 §4.5): the PEs with the highest priority first, in decreasing
//! priority order; round robin (by sequence number) among equal priorities, as in RSPLIB.

/// Sorting key (ascending) of a Priority PE: the inverted priority.
pub(crate) fn sort_key(values: &[u32; 4]) -> u64 {
    u64::from(u32::MAX - values[0])
}
