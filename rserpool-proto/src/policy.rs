//! Pool member selection policies (RFC 5356 and RSPLIB's private policies) as carried in
//! the Pool Member Selection Policy parameter (RFC 5354 §3.8, type 0x0008).
//!
//! Loads, degradations and DPF values are fractions scaled to the full `u32` range
//! (0 = 0 %, 0xffffffff = 100 %); distances are in milliseconds.

/// Policy type codes (RFC 5356 §7.1 and RSPLIB `rserpool-policytypes.h`).
pub mod code {
    /// Round Robin (RFC 5356 §4.1).
    pub const ROUND_ROBIN: u32 = 0x0000_0001;
    /// Weighted Round Robin (RFC 5356 §4.2).
    pub const WEIGHTED_ROUND_ROBIN: u32 = 0x0000_0002;
    /// Random (RFC 5356 §4.3).
    pub const RANDOM: u32 = 0x0000_0003;
    /// Weighted Random (RFC 5356 §4.4).
    pub const WEIGHTED_RANDOM: u32 = 0x0000_0004;
    /// Priority (RFC 5356 §4.5).
    pub const PRIORITY: u32 = 0x0000_0005;
    /// Least Used (RFC 5356 §5.1).
    pub const LEAST_USED: u32 = 0x4000_0001;
    /// Least Used with Degradation (RFC 5356 §5.2).
    pub const LEAST_USED_DEGRADATION: u32 = 0x4000_0002;
    /// Priority Least Used (RFC 5356 §5.3).
    pub const PRIORITY_LEAST_USED: u32 = 0x4000_0003;
    /// Randomized Least Used (RFC 5356 §5.4).
    pub const RANDOMIZED_LEAST_USED: u32 = 0x4000_0004;
    /// RSPLIB: Randomized Priority Least Used.
    pub const RANDOMIZED_PRIORITY_LEAST_USED: u32 = 0xb000_1001;
    /// RSPLIB: Randomized Least Used with Degradation.
    pub const RANDOMIZED_LEAST_USED_DEGRADATION: u32 = 0xb000_1002;
    /// RSPLIB: Priority Least Used with Degradation.
    pub const PRIORITY_LEAST_USED_DEGRADATION: u32 = 0xb000_1003;
    /// RSPLIB: Randomized Priority Least Used with Degradation.
    pub const RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION: u32 = 0xb000_1004;
    /// RSPLIB: Weighted Random with Distance Penalty Factor.
    pub const WEIGHTED_RANDOM_DPF: u32 = 0xb000_2001;
    /// RSPLIB: Least Used with Distance Penalty Factor.
    pub const LEAST_USED_DPF: u32 = 0xb000_2002;
    /// RSPLIB: Least Used with Degradation and Distance Penalty Factor.
    pub const LEAST_USED_DEGRADATION_DPF: u32 = 0xb000_2003;
}

/// A pool member selection policy with the PE's own policy values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Round Robin.
    RoundRobin,
    /// Weighted Round Robin.
    WeightedRoundRobin {
        /// Weight (≥ 1 for the PE to be selected).
        weight: u32,
    },
    /// Random.
    Random,
    /// Weighted Random.
    WeightedRandom {
        /// Weight.
        weight: u32,
    },
    /// Priority: highest priority first.
    Priority {
        /// Priority (higher is preferred).
        priority: u32,
    },
    /// Least Used.
    LeastUsed {
        /// Current load.
        load: u32,
    },
    /// Least Used with Degradation.
    LeastUsedDegradation {
        /// Current load.
        load: u32,
        /// Load added each time the PE is selected.
        degradation: u32,
    },
    /// Priority Least Used: load + degradation as the effective load.
    PriorityLeastUsed {
        /// Current load.
        load: u32,
        /// Load degradation.
        degradation: u32,
    },
    /// Randomized Least Used.
    RandomizedLeastUsed {
        /// Current load.
        load: u32,
    },
    /// RSPLIB: Randomized Priority Least Used.
    RandomizedPriorityLeastUsed {
        /// Current load.
        load: u32,
        /// Load degradation.
        degradation: u32,
    },
    /// RSPLIB: Randomized Least Used with Degradation.
    RandomizedLeastUsedDegradation {
        /// Current load.
        load: u32,
        /// Load degradation.
        degradation: u32,
    },
    /// RSPLIB: Priority Least Used with Degradation.
    PriorityLeastUsedDegradation {
        /// Current load.
        load: u32,
        /// Load degradation.
        degradation: u32,
    },
    /// RSPLIB: Randomized Priority Least Used with Degradation.
    RandomizedPriorityLeastUsedDegradation {
        /// Current load.
        load: u32,
        /// Load degradation.
        degradation: u32,
    },
    /// RSPLIB: Weighted Random with Distance Penalty Factor.
    WeightedRandomDpf {
        /// Weight.
        weight: u32,
        /// Weight penalty per millisecond of distance.
        weight_dpf: u32,
        /// Distance (one-way delay) in milliseconds.
        distance: u32,
    },
    /// RSPLIB: Least Used with Distance Penalty Factor.
    LeastUsedDpf {
        /// Current load.
        load: u32,
        /// Load penalty per millisecond of distance.
        load_dpf: u32,
        /// Distance (one-way delay) in milliseconds.
        distance: u32,
    },
    /// RSPLIB: Least Used with Degradation and Distance Penalty Factor.
    LeastUsedDegradationDpf {
        /// Current load.
        load: u32,
        /// Load degradation.
        degradation: u32,
        /// Load penalty per millisecond of distance.
        load_dpf: u32,
        /// Distance (one-way delay) in milliseconds.
        distance: u32,
    },
}

impl Policy {
    /// The policy type code carried on the wire.
    pub fn policy_type(&self) -> u32 {
        use Policy::*;
        match self {
            RoundRobin => code::ROUND_ROBIN,
            WeightedRoundRobin { .. } => code::WEIGHTED_ROUND_ROBIN,
            Random => code::RANDOM,
            WeightedRandom { .. } => code::WEIGHTED_RANDOM,
            Priority { .. } => code::PRIORITY,
            LeastUsed { .. } => code::LEAST_USED,
            LeastUsedDegradation { .. } => code::LEAST_USED_DEGRADATION,
            PriorityLeastUsed { .. } => code::PRIORITY_LEAST_USED,
            RandomizedLeastUsed { .. } => code::RANDOMIZED_LEAST_USED,
            RandomizedPriorityLeastUsed { .. } => code::RANDOMIZED_PRIORITY_LEAST_USED,
            RandomizedLeastUsedDegradation { .. } => code::RANDOMIZED_LEAST_USED_DEGRADATION,
            PriorityLeastUsedDegradation { .. } => code::PRIORITY_LEAST_USED_DEGRADATION,
            RandomizedPriorityLeastUsedDegradation { .. } => {
                code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION
            }
            WeightedRandomDpf { .. } => code::WEIGHTED_RANDOM_DPF,
            LeastUsedDpf { .. } => code::LEAST_USED_DPF,
            LeastUsedDegradationDpf { .. } => code::LEAST_USED_DEGRADATION_DPF,
        }
    }

    /// The policy's values after the type, in wire order.
    pub fn values(&self) -> smallvec::SmallVec<[u32; 4]> {
        use Policy::*;
        match *self {
            RoundRobin | Random => smallvec::smallvec![],
            WeightedRoundRobin { weight } | WeightedRandom { weight } => {
                smallvec::smallvec![weight]
            }
            Priority { priority } => smallvec::smallvec![priority],
            LeastUsed { load } | RandomizedLeastUsed { load } => smallvec::smallvec![load],
            LeastUsedDegradation { load, degradation }
            | PriorityLeastUsed { load, degradation }
            | RandomizedPriorityLeastUsed { load, degradation }
            | RandomizedLeastUsedDegradation { load, degradation }
            | PriorityLeastUsedDegradation { load, degradation }
            | RandomizedPriorityLeastUsedDegradation { load, degradation } => {
                smallvec::smallvec![load, degradation]
            }
            WeightedRandomDpf {
                weight,
                weight_dpf,
                distance,
            } => smallvec::smallvec![weight, weight_dpf, distance],
            LeastUsedDpf {
                load,
                load_dpf,
                distance,
            } => smallvec::smallvec![load, load_dpf, distance],
            LeastUsedDegradationDpf {
                load,
                degradation,
                load_dpf,
                distance,
            } => smallvec::smallvec![load, degradation, load_dpf, distance],
        }
    }

    /// Number of u32 values after the type for a policy type code, or `None` for a code
    /// this implementation does not know.
    pub fn value_count(policy_type: u32) -> Option<usize> {
        Some(match policy_type {
            code::ROUND_ROBIN | code::RANDOM => 0,
            code::WEIGHTED_ROUND_ROBIN
            | code::WEIGHTED_RANDOM
            | code::PRIORITY
            | code::LEAST_USED
            | code::RANDOMIZED_LEAST_USED => 1,
            code::LEAST_USED_DEGRADATION
            | code::PRIORITY_LEAST_USED
            | code::RANDOMIZED_PRIORITY_LEAST_USED
            | code::RANDOMIZED_LEAST_USED_DEGRADATION
            | code::PRIORITY_LEAST_USED_DEGRADATION
            | code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => 2,
            code::WEIGHTED_RANDOM_DPF | code::LEAST_USED_DPF => 3,
            code::LEAST_USED_DEGRADATION_DPF => 4,
            _ => return None,
        })
    }

    /// Builds a policy from its type code and values (as many as [`Policy::value_count`]
    /// says; extra values are ignored). `None` for an unknown code or too few values.
    pub fn from_type_and_values(policy_type: u32, v: &[u32]) -> Option<Policy> {
        use Policy::*;
        let n = Self::value_count(policy_type)?;
        if v.len() < n {
            return None;
        }
        let g = |i: usize| v.get(i).copied().unwrap_or(0);
        Some(match policy_type {
            code::ROUND_ROBIN => RoundRobin,
            code::RANDOM => Random,
            code::WEIGHTED_ROUND_ROBIN => WeightedRoundRobin { weight: g(0) },
            code::WEIGHTED_RANDOM => WeightedRandom { weight: g(0) },
            code::PRIORITY => Priority { priority: g(0) },
            code::LEAST_USED => LeastUsed { load: g(0) },
            code::RANDOMIZED_LEAST_USED => RandomizedLeastUsed { load: g(0) },
            code::LEAST_USED_DEGRADATION => LeastUsedDegradation {
                load: g(0),
                degradation: g(1),
            },
            code::PRIORITY_LEAST_USED => PriorityLeastUsed {
                load: g(0),
                degradation: g(1),
            },
            code::RANDOMIZED_PRIORITY_LEAST_USED => RandomizedPriorityLeastUsed {
                load: g(0),
                degradation: g(1),
            },
            code::RANDOMIZED_LEAST_USED_DEGRADATION => RandomizedLeastUsedDegradation {
                load: g(0),
                degradation: g(1),
            },
            code::PRIORITY_LEAST_USED_DEGRADATION => PriorityLeastUsedDegradation {
                load: g(0),
                degradation: g(1),
            },
            code::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => {
                RandomizedPriorityLeastUsedDegradation {
                    load: g(0),
                    degradation: g(1),
                }
            }
            code::WEIGHTED_RANDOM_DPF => WeightedRandomDpf {
                weight: g(0),
                weight_dpf: g(1),
                distance: g(2),
            },
            code::LEAST_USED_DPF => LeastUsedDpf {
                load: g(0),
                load_dpf: g(1),
                distance: g(2),
            },
            code::LEAST_USED_DEGRADATION_DPF => LeastUsedDegradationDpf {
                load: g(0),
                degradation: g(1),
                load_dpf: g(2),
                distance: g(3),
            },
            _ => return None,
        })
    }

    /// RSPLIB's "adaptive" policies (`PPT_IS_ADAPTIVE`): PEs re-register when load changes.
    pub fn is_adaptive(&self) -> bool {
        self.policy_type() & 0x4000_0000 != 0 && !matches!(self, Policy::WeightedRandomDpf { .. })
    }

    /// The PE's load value, for load-based policies.
    pub fn load(&self) -> Option<u32> {
        use Policy::*;
        match *self {
            LeastUsed { load }
            | RandomizedLeastUsed { load }
            | LeastUsedDegradation { load, .. }
            | PriorityLeastUsed { load, .. }
            | RandomizedPriorityLeastUsed { load, .. }
            | RandomizedLeastUsedDegradation { load, .. }
            | PriorityLeastUsedDegradation { load, .. }
            | RandomizedPriorityLeastUsedDegradation { load, .. }
            | LeastUsedDpf { load, .. }
            | LeastUsedDegradationDpf { load, .. } => Some(load),
            _ => None,
        }
    }

    /// RSPLIB's command-line name of the policy (`rspserver -policy=<Name>`).
    pub fn name(&self) -> &'static str {
        use Policy::*;
        match self {
            RoundRobin => "RoundRobin",
            WeightedRoundRobin { .. } => "WeightedRoundRobin",
            Random => "Random",
            WeightedRandom { .. } => "WeightedRandom",
            Priority { .. } => "Priority",
            LeastUsed { .. } => "LeastUsed",
            LeastUsedDegradation { .. } => "LeastUsedDegradation",
            PriorityLeastUsed { .. } => "PriorityLeastUsed",
            RandomizedLeastUsed { .. } => "RandomizedLeastUsed",
            RandomizedPriorityLeastUsed { .. } => "RandomizedPriorityLeastUsed",
            RandomizedLeastUsedDegradation { .. } => "RandomizedLeastUsedDegradation",
            PriorityLeastUsedDegradation { .. } => "PriorityLeastUsedDegradation",
            RandomizedPriorityLeastUsedDegradation { .. } => {
                "RandomizedPriorityLeastUsedDegradation"
            }
            WeightedRandomDpf { .. } => "WeightedRandomDPF",
            LeastUsedDpf { .. } => "LeastUsedDPF",
            LeastUsedDegradationDpf { .. } => "LeastUsedDegradationDPF",
        }
    }
}
