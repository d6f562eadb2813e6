//! Pool member selection policies (RFC 5356 and RSPLIB's extensions) with RSPLIB's
//! selection semantics (`shared/spec/policies.md` §4).
//!
//! Policies fall into three families, each with its own per-pool structure:
//!
//! * **Ring** — [Round Robin](round_robin): O(1) per selection.
//! * **Sorted** — [Weighted Round Robin](weighted_round_robin), [Priority](priority) and
//!   the [least-used family](least_used): an indexed heap ordered by
//!   `(policy key, sequence number)` ([`sorted`]), O(log n) per updated entry.
//! * **Weighted** — the [random family](random): a Fenwick tree of selection values,
//!   O(log n) per draw.
//!
//! # Max increment
//! After choosing up to `n` PEs, the first `max increment` of them are *updated*: they get
//! a new sequence number / ring position (round robin), their degradation grows, their WRR
//! pass advances. `max increment = 0` in [`HandlespaceConfig`] or in
//! [`Handlespace::select_with`] means the policy default ([`default_max_increment`]: 1 for
//! all policies except Random, Weighted Random and WRAND-DPF, which use 0), as RSPLIB's
//! registrar does; a PU cache passes `u32::MAX` ("update every selected PE").
//!
//! # Where we deliberately differ from RSPLIB
//! Selection order is local state and never visible on the wire, so none of these
//! affects interoperability:
//! 1. **Single update per selection.** RSPLIB calls the policy's update hook when it
//!    (re-)links an entry *and* once more after a selection, so its degradation starts at
//!    1 × load degradation on (re-)registration and grows by 2 × per selection. We follow
//!    RFC 5356 §5.2: start at 0, +1 × per selection (see [`least_used`]).
//! 2. **Weighted Round Robin** is stride scheduling: shares as in RSPLIB, copies spread
//!    evenly as RFC 5356 §4.2 asks, and weight 0 is never selected (RSPLIB treats 0 like 1)
//!    (see [`weighted_round_robin`]).
//! 3. **RLUD and RPLUD degrade.** RSPLIB never increases their Degradation, so they behave
//!    like RLU / RPLU; ours grow it per selection like LUD (see [`random`]).
//! 4. **Round Robin** uses a ring instead of a sequence-number tree: O(1), same rotation
//!    for a stable membership; a removal may let one PE skip one round (see
//!    [`round_robin`]).
//! 5. **Random draws** walk a Fenwick tree in insertion order rather than RSPLIB's value
//!    tree in PE-identifier order: same distribution, different individual draws.
//!
//! [`HandlespaceConfig`]: super::HandlespaceConfig
//! [`Handlespace::select_with`]: super::Handlespace::select_with

pub mod least_used;
pub mod priority;
pub mod random;
pub mod round_robin;
pub mod sorted;
pub mod weighted_round_robin;

use super::element::Slab;
use rserpool_proto::policy::code;

/// The policy's default max increment (RSPLIB `poolpolicy-template_impl.h` defaults).
pub fn default_max_increment(policy_type: u32) -> u32 {
    match policy_type {
        code::RANDOM | code::WEIGHTED_RANDOM | code::WEIGHTED_RANDOM_DPF => 0,
        _ => 1,
    }
}

/// Per-pool selection structure.
#[derive(Debug, Clone)]
pub(crate) enum Selector {
    Ring(round_robin::Ring),
    Sorted(sorted::Sorted),
    Weighted(random::Weighted),
}

impl Selector {
    pub(crate) fn new(policy_type: u32) -> Selector {
        match policy_type {
            code::ROUND_ROBIN => Selector::Ring(Default::default()),
            code::RANDOM
            | code::WEIGHTED_RANDOM
            | code::WEIGHTED_RANDOM_DPF
            | code::RANDOMIZED_LEAST_USED
            | code::RANDOMIZED_LEAST_USED_DEGRADATION
            | code::RANDOMIZED_PRIORITY_LEAST_USED
            | code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => {
                Selector::Weighted(Default::default())
            }
            _ => Selector::Sorted(Default::default()),
        }
    }

    pub(crate) fn insert(&mut self, policy_type: u32, slot: u32, slab: &mut Slab) {
        match self {
            Selector::Ring(r) => r.insert(slot, slab),
            Selector::Sorted(s) => s.insert(policy_type, slot, slab),
            Selector::Weighted(w) => w.insert(policy_type, slot, slab),
        }
    }

    pub(crate) fn remove(&mut self, slot: u32, slab: &mut Slab) {
        match self {
            Selector::Ring(r) => r.remove(slot, slab),
            Selector::Sorted(s) => s.remove(slot, slab),
            Selector::Weighted(w) => w.remove(slot, slab),
        }
    }

    /// The slot's policy values or degradation changed.
    pub(crate) fn rekey(&mut self, policy_type: u32, slot: u32, slab: &mut Slab) {
        match self {
            Selector::Ring(_) => {}
            Selector::Sorted(s) => s.rekey(policy_type, slot, slab),
            Selector::Weighted(w) => w.rekey(policy_type, slot, slab),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select<R: rand_core::Rng + ?Sized>(
        &mut self,
        policy_type: u32,
        slab: &mut Slab,
        n: usize,
        max_increment: u32,
        rng: &mut R,
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        match self {
            Selector::Ring(r) => r.select(n, max_increment, out),
            Selector::Sorted(s) => s.select(
                policy_type,
                slab,
                n,
                max_increment,
                &mut scratch.a,
                &mut scratch.b,
                out,
            ),
            Selector::Weighted(w) => w.select(
                policy_type,
                slab,
                n,
                max_increment,
                rng,
                &mut scratch.a,
                out,
            ),
        }
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        match self {
            Selector::Ring(r) => r.allocated_bytes(),
            Selector::Sorted(s) => s.allocated_bytes(),
            Selector::Weighted(w) => w.allocated_bytes(),
        }
    }
}

/// Reusable scratch vectors for selections (no allocation per selection after warm-up).
#[derive(Debug, Default, Clone)]
pub(crate) struct Scratch {
    pub a: Vec<u32>,
    pub b: Vec<u32>,
    pub slots: Vec<u32>,
}
