//! `-policy=` strings: RSPLIB's `rspserver` syntax `<Name>[:arg[:arg]]` and
//! `testregistrator`'s short names.
//!
//! Fractions (load degradation, DPF) must lie in `[0, 1]` and are scaled to the full `u32`
//! range like RSPLIB (`rint(f × 0xffffffff)`); weights and priorities are `u32` integers.
//! Loads start at 0 (the PE reports its load later). Names match case-insensitively.

use std::fmt;

use rserpool_proto::policy::Policy;

use super::values::scale_fraction;

/// Why a `-policy=` string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyParseError {
    /// The name is not a policy this program knows.
    UnknownName(String),
    /// RSPLIB knows the policy but this build's wire format does not carry it yet.
    Unsupported(&'static str),
    /// Wrong number of `:`-separated arguments.
    ArgumentCount {
        /// Policy name.
        policy: &'static str,
        /// The syntax expected.
        expected: &'static str,
        /// Number of arguments given.
        given: usize,
    },
    /// A fraction that is not a number in `[0, 1]`.
    BadFraction {
        /// Policy name.
        policy: &'static str,
        /// Which value (`degradation`, `DPF`).
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// A weight or priority that is not a `u32`.
    BadInteger {
        /// Policy name.
        policy: &'static str,
        /// Which value (`weight`, `priority`).
        what: &'static str,
        /// The text given.
        value: String,
    },
}

impl fmt::Display for PolicyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyParseError::UnknownName(n) => write!(
                f,
                "unknown policy '{n}'; known policies: {}",
                POLICY_SYNTAX.join(", ")
            ),
            PolicyParseError::Unsupported(n) => write!(
                f,
                "policy {n} is not supported by this implementation's wire format"
            ),
            PolicyParseError::ArgumentCount {
                policy,
                expected,
                given,
            } => write!(
                f,
                "policy {policy} takes the form {expected} ({given} argument(s) given)"
            ),
            PolicyParseError::BadFraction {
                policy,
                what,
                value,
            } => write!(
                f,
                "bad {what} value '{value}' for policy {policy}: expected a number from 0 to 1"
            ),
            PolicyParseError::BadInteger {
                policy,
                what,
                value,
            } => write!(
                f,
                "bad {what} value '{value}' for policy {policy}: expected an integer from 0 to 4294967295"
            ),
        }
    }
}

impl std::error::Error for PolicyParseError {}

/// Every accepted `-policy=` form, for help and error texts.
pub const POLICY_SYNTAX: &[&str] = &[
    "RoundRobin",
    "WeightedRoundRobin:W",
    "Random",
    "WeightedRandom:W",
    "WeightedRandomDPF:W:P",
    "Priority:W",
    "LeastUsed",
    "RandomizedLeastUsed",
    "LeastUsedDegradation:D",
    "LeastUsedDPF:P",
    "LeastUsedDegradationDPF:D:P",
    "PriorityLeastUsed:D",
    "PriorityLeastUsedDegradation:D",
    "RandomizedPriorityLeastUsed",
    "RandomizedLeastUsedDegradation:D",
    "RandomizedPriorityLeastUsedDegradation:D",
];

fn fraction(policy: &'static str, what: &'static str, v: &str) -> Result<u32, PolicyParseError> {
    let bad = || PolicyParseError::BadFraction {
        policy,
        what,
        value: v.to_owned(),
    };
    let f: f64 = v.trim().parse().map_err(|_| bad())?;
    if !(0.0..=1.0).contains(&f) {
        return Err(bad());
    }
    Ok(scale_fraction(f))
}

fn integer(policy: &'static str, what: &'static str, v: &str) -> Result<u32, PolicyParseError> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| PolicyParseError::BadInteger {
            policy,
            what,
            value: v.to_owned(),
        })
}

/// Parses RSPLIB's `rspserver -policy=` syntax into a [`Policy`].
pub fn parse_policy(s: &str) -> Result<Policy, PolicyParseError> {
    let mut parts = s.trim().split(':');
    let name = parts.next().unwrap_or("");
    let args: Vec<&str> = parts.collect();
    let n = args.len();
    let arg = |i: usize| args.get(i).copied().unwrap_or("");

    // Each arm: canonical name, syntax, number of arguments, constructor.
    macro_rules! want {
        ($policy:literal, $syntax:literal, $count:expr) => {
            if n != $count {
                return Err(PolicyParseError::ArgumentCount {
                    policy: $policy,
                    expected: $syntax,
                    given: n,
                });
            }
        };
    }

    let lower = name.to_ascii_lowercase();
    let policy = match lower.as_str() {
        "roundrobin" => {
            want!("RoundRobin", "RoundRobin", 0);
            Policy::RoundRobin
        }
        "random" => {
            want!("Random", "Random", 0);
            Policy::Random
        }
        "leastused" => {
            want!("LeastUsed", "LeastUsed", 0);
            Policy::LeastUsed { load: 0 }
        }
        "randomizedleastused" => {
            want!("RandomizedLeastUsed", "RandomizedLeastUsed", 0);
            Policy::RandomizedLeastUsed { load: 0 }
        }
        "randomizedpriorityleastused" => {
            want!(
                "RandomizedPriorityLeastUsed",
                "RandomizedPriorityLeastUsed",
                0
            );
            Policy::RandomizedPriorityLeastUsed {
                load: 0,
                degradation: 0,
            }
        }
        "weightedroundrobin" => {
            want!("WeightedRoundRobin", "WeightedRoundRobin:W", 1);
            Policy::WeightedRoundRobin {
                weight: integer("WeightedRoundRobin", "weight", arg(0))?,
            }
        }
        "weightedrandom" => {
            want!("WeightedRandom", "WeightedRandom:W", 1);
            Policy::WeightedRandom {
                weight: integer("WeightedRandom", "weight", arg(0))?,
            }
        }
        "priority" => {
            want!("Priority", "Priority:W", 1);
            Policy::Priority {
                priority: integer("Priority", "priority", arg(0))?,
            }
        }
        "weightedrandomdpf" => {
            want!("WeightedRandomDPF", "WeightedRandomDPF:W:P", 2);
            Policy::WeightedRandomDpf {
                weight: integer("WeightedRandomDPF", "weight", arg(0))?,
                weight_dpf: fraction("WeightedRandomDPF", "DPF", arg(1))?,
                distance: 0,
            }
        }
        "leastuseddegradation" => {
            want!("LeastUsedDegradation", "LeastUsedDegradation:D", 1);
            Policy::LeastUsedDegradation {
                load: 0,
                degradation: fraction("LeastUsedDegradation", "degradation", arg(0))?,
            }
        }
        "priorityleastused" => {
            want!("PriorityLeastUsed", "PriorityLeastUsed:D", 1);
            Policy::PriorityLeastUsed {
                load: 0,
                degradation: fraction("PriorityLeastUsed", "degradation", arg(0))?,
            }
        }
        "priorityleastuseddegradation" => {
            want!(
                "PriorityLeastUsedDegradation",
                "PriorityLeastUsedDegradation:D",
                1
            );
            Policy::PriorityLeastUsedDegradation {
                load: 0,
                degradation: fraction("PriorityLeastUsedDegradation", "degradation", arg(0))?,
            }
        }
        "randomizedleastuseddegradation" => {
            want!(
                "RandomizedLeastUsedDegradation",
                "RandomizedLeastUsedDegradation:D",
                1
            );
            Policy::RandomizedLeastUsedDegradation {
                load: 0,
                degradation: fraction("RandomizedLeastUsedDegradation", "degradation", arg(0))?,
            }
        }
        "randomizedpriorityleastuseddegradation" => {
            want!(
                "RandomizedPriorityLeastUsedDegradation",
                "RandomizedPriorityLeastUsedDegradation:D",
                1
            );
            Policy::RandomizedPriorityLeastUsedDegradation {
                load: 0,
                degradation: fraction(
                    "RandomizedPriorityLeastUsedDegradation",
                    "degradation",
                    arg(0),
                )?,
            }
        }
        "leastuseddpf" => {
            want!("LeastUsedDPF", "LeastUsedDPF:P", 1);
            Policy::LeastUsedDpf {
                load: 0,
                load_dpf: fraction("LeastUsedDPF", "DPF", arg(0))?,
                distance: 0,
            }
        }
        "leastuseddegradationdpf" => {
            want!("LeastUsedDegradationDPF", "LeastUsedDegradationDPF:D:P", 2);
            Policy::LeastUsedDegradationDpf {
                load: 0,
                degradation: fraction("LeastUsedDegradationDPF", "degradation", arg(0))?,
                load_dpf: fraction("LeastUsedDegradationDPF", "DPF", arg(1))?,
                distance: 0,
            }
        }
        "priorityleastuseddegradationdpf" => {
            return Err(PolicyParseError::Unsupported(
                "PriorityLeastUsedDegradationDPF (0xb0002005)",
            ));
        }
        "priorityleastuseddpf" => {
            return Err(PolicyParseError::Unsupported(
                "PriorityLeastUsedDPF (0xb0002004)",
            ));
        }
        _ => return Err(PolicyParseError::UnknownName(name.to_owned())),
    };
    Ok(policy)
}

/// clap value parser for `-policy=`.
pub fn policy_value(s: &str) -> Result<Policy, PolicyParseError> {
    parse_policy(s)
}

/// The policy `rspserver -scripting` uses when no `-policy=` is given:
/// LeastUsedDegradation with a degradation of `1 / max_threads`.
pub fn scripting_default_policy(max_threads: u32) -> Policy {
    Policy::LeastUsedDegradation {
        load: 0,
        degradation: scale_fraction(1.0 / f64::from(max_threads.max(1))),
    }
}

/// `testregistrator -policy=` names (long or short form, as in RSPLIB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TestRegistratorPolicy {
    /// Round Robin.
    #[default]
    #[value(name = "roundrobin", alias = "rr")]
    RoundRobin,
    /// Weighted Round Robin.
    #[value(name = "weightedroundrobin", alias = "wrr")]
    WeightedRoundRobin,
    /// Least Used.
    #[value(name = "leastused", alias = "lu")]
    LeastUsed,
    /// Least Used with Degradation.
    #[value(name = "leastuseddegradation", alias = "lud")]
    LeastUsedDegradation,
    /// Randomized Least Used.
    #[value(name = "randomizedleastused", alias = "rlu")]
    RandomizedLeastUsed,
    /// Randomized Least Used with Degradation.
    #[value(name = "randomizedleastuseddegradation", alias = "rlud")]
    RandomizedLeastUsedDegradation,
    /// Priority Least Used.
    #[value(name = "priorityleastused", alias = "plu")]
    PriorityLeastUsed,
    /// Priority Least Used with Degradation.
    #[value(name = "priorityleastuseddegradation", alias = "plud")]
    PriorityLeastUsedDegradation,
    /// Randomized Priority Least Used.
    #[value(name = "randomizedpriorityleastused", alias = "rplu")]
    RandomizedPriorityLeastUsed,
    /// Randomized Priority Least Used with Degradation.
    #[value(name = "randomizedpriorityleastuseddegradation", alias = "rplud")]
    RandomizedPriorityLeastUsedDegradation,
    /// Random.
    #[value(name = "random", alias = "rand")]
    Random,
    /// Weighted Random.
    #[value(name = "weightedrandom", alias = "wrand")]
    WeightedRandom,
}

impl TestRegistratorPolicy {
    /// The policy with `testregistrator`'s `-load=`, `-loaddeg=` (raw u32 values) and
    /// `-weight=`.
    pub fn to_policy(self, load: u32, load_degradation: u32, weight: u32) -> Policy {
        use TestRegistratorPolicy as T;
        let degradation = load_degradation;
        match self {
            T::RoundRobin => Policy::RoundRobin,
            T::WeightedRoundRobin => Policy::WeightedRoundRobin { weight },
            T::LeastUsed => Policy::LeastUsed { load },
            T::LeastUsedDegradation => Policy::LeastUsedDegradation { load, degradation },
            T::RandomizedLeastUsed => Policy::RandomizedLeastUsed { load },
            T::RandomizedLeastUsedDegradation => {
                Policy::RandomizedLeastUsedDegradation { load, degradation }
            }
            T::PriorityLeastUsed => Policy::PriorityLeastUsed { load, degradation },
            T::PriorityLeastUsedDegradation => {
                Policy::PriorityLeastUsedDegradation { load, degradation }
            }
            T::RandomizedPriorityLeastUsed => {
                Policy::RandomizedPriorityLeastUsed { load, degradation }
            }
            T::RandomizedPriorityLeastUsedDegradation => {
                Policy::RandomizedPriorityLeastUsedDegradation { load, degradation }
            }
            T::Random => Policy::Random,
            T::WeightedRandom => Policy::WeightedRandom { weight },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rserpool_proto::policy::code;

    const HALF: u32 = 2_147_483_648;

    #[test]
    fn every_name_without_args() {
        let cases: &[(&str, Policy)] = &[
            ("RoundRobin", Policy::RoundRobin),
            ("Random", Policy::Random),
            ("LeastUsed", Policy::LeastUsed { load: 0 }),
            (
                "RandomizedLeastUsed",
                Policy::RandomizedLeastUsed { load: 0 },
            ),
            (
                "RandomizedPriorityLeastUsed",
                Policy::RandomizedPriorityLeastUsed {
                    load: 0,
                    degradation: 0,
                },
            ),
        ];
        for (s, p) in cases {
            assert_eq!(parse_policy(s).as_ref(), Ok(p), "{s}");
            assert_eq!(parse_policy(&s.to_lowercase()).as_ref(), Ok(p), "{s}");
            assert!(
                matches!(
                    parse_policy(&format!("{s}:1")),
                    Err(PolicyParseError::ArgumentCount { given: 1, .. })
                ),
                "{s} takes no arguments"
            );
        }
    }

    #[test]
    fn every_name_with_args() {
        let cases: &[(&str, Policy)] = &[
            (
                "WeightedRoundRobin:7",
                Policy::WeightedRoundRobin { weight: 7 },
            ),
            (
                "WeightedRandom:4294967295",
                Policy::WeightedRandom { weight: u32::MAX },
            ),
            ("Priority:3", Policy::Priority { priority: 3 }),
            (
                "WeightedRandomDPF:5:0.5",
                Policy::WeightedRandomDpf {
                    weight: 5,
                    weight_dpf: HALF,
                    distance: 0,
                },
            ),
            (
                "LeastUsedDegradation:0.5",
                Policy::LeastUsedDegradation {
                    load: 0,
                    degradation: HALF,
                },
            ),
            (
                "PriorityLeastUsed:1",
                Policy::PriorityLeastUsed {
                    load: 0,
                    degradation: u32::MAX,
                },
            ),
            (
                "PriorityLeastUsedDegradation:0",
                Policy::PriorityLeastUsedDegradation {
                    load: 0,
                    degradation: 0,
                },
            ),
            (
                "RandomizedLeastUsedDegradation:0.5",
                Policy::RandomizedLeastUsedDegradation {
                    load: 0,
                    degradation: HALF,
                },
            ),
            (
                "RandomizedPriorityLeastUsedDegradation:0.5",
                Policy::RandomizedPriorityLeastUsedDegradation {
                    load: 0,
                    degradation: HALF,
                },
            ),
            (
                "LeastUsedDPF:0.25",
                Policy::LeastUsedDpf {
                    load: 0,
                    load_dpf: 1_073_741_824,
                    distance: 0,
                },
            ),
            (
                "LeastUsedDegradationDPF:0.5:1",
                Policy::LeastUsedDegradationDpf {
                    load: 0,
                    degradation: HALF,
                    load_dpf: u32::MAX,
                    distance: 0,
                },
            ),
        ];
        for (s, p) in cases {
            assert_eq!(parse_policy(s).as_ref(), Ok(p), "{s}");
        }
        // Every syntax line in the help text is accepted (with 1 for each argument).
        for syntax in POLICY_SYNTAX {
            let name = syntax.split(':').next().unwrap();
            let args = syntax.split(':').skip(1).map(|_| "1");
            let spec = std::iter::once(name)
                .chain(args)
                .collect::<Vec<_>>()
                .join(":");
            assert_eq!(parse_policy(&spec).map(|p| p.name()), Ok(name), "{spec}");
        }
        assert_eq!(
            parse_policy("LeastUsedDegradation:0.5")
                .unwrap()
                .policy_type(),
            code::LEAST_USED_DEGRADATION
        );
    }

    #[test]
    fn bad_policies() {
        assert!(matches!(
            parse_policy("Fastest"),
            Err(PolicyParseError::UnknownName(_))
        ));
        assert!(matches!(
            parse_policy(""),
            Err(PolicyParseError::UnknownName(_))
        ));
        for bad in [
            "LeastUsedDegradation:1.5",
            "LeastUsedDegradation:-0.1",
            "LeastUsedDegradation:abc",
            "LeastUsedDegradation:NaN",
            "LeastUsedDPF:2",
            "WeightedRandomDPF:1:1.01",
            "LeastUsedDegradationDPF:0.5:x",
        ] {
            assert!(
                matches!(parse_policy(bad), Err(PolicyParseError::BadFraction { .. })),
                "{bad}"
            );
        }
        for bad in [
            "WeightedRoundRobin:-1",
            "WeightedRoundRobin:1.5",
            "Priority:4294967296",
            "WeightedRandom:",
            "WeightedRandomDPF:x:0.5",
        ] {
            assert!(
                matches!(parse_policy(bad), Err(PolicyParseError::BadInteger { .. })),
                "{bad}"
            );
        }
        for bad in [
            "LeastUsedDegradation",
            "WeightedRandomDPF:1",
            "LeastUsedDegradationDPF:0.5",
            "Priority:1:2",
        ] {
            assert!(
                matches!(
                    parse_policy(bad),
                    Err(PolicyParseError::ArgumentCount { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_policy("PriorityLeastUsedDegradationDPF:0.5:0.5"),
            Err(PolicyParseError::Unsupported(_))
        ));
        // Messages are readable.
        let msg = parse_policy("LeastUsedDegradation:2")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("degradation") && msg.contains("0 to 1"),
            "{msg}"
        );
        let msg = parse_policy("Fastest").unwrap_err().to_string();
        assert!(msg.contains("RoundRobin"), "{msg}");
    }

    #[test]
    fn scripting_default() {
        assert_eq!(
            scripting_default_policy(4),
            Policy::LeastUsedDegradation {
                load: 0,
                degradation: 1_073_741_824
            }
        );
        assert_eq!(
            scripting_default_policy(0),
            Policy::LeastUsedDegradation {
                load: 0,
                degradation: u32::MAX
            }
        );
    }

    #[test]
    fn testregistrator_names() {
        use clap::ValueEnum;
        for (long, short, p) in [
            ("roundrobin", "rr", TestRegistratorPolicy::RoundRobin),
            (
                "weightedroundrobin",
                "wrr",
                TestRegistratorPolicy::WeightedRoundRobin,
            ),
            ("leastused", "lu", TestRegistratorPolicy::LeastUsed),
            (
                "leastuseddegradation",
                "lud",
                TestRegistratorPolicy::LeastUsedDegradation,
            ),
            (
                "randomizedleastused",
                "rlu",
                TestRegistratorPolicy::RandomizedLeastUsed,
            ),
            (
                "randomizedleastuseddegradation",
                "rlud",
                TestRegistratorPolicy::RandomizedLeastUsedDegradation,
            ),
            (
                "priorityleastused",
                "plu",
                TestRegistratorPolicy::PriorityLeastUsed,
            ),
            (
                "priorityleastuseddegradation",
                "plud",
                TestRegistratorPolicy::PriorityLeastUsedDegradation,
            ),
            (
                "randomizedpriorityleastused",
                "rplu",
                TestRegistratorPolicy::RandomizedPriorityLeastUsed,
            ),
            (
                "randomizedpriorityleastuseddegradation",
                "rplud",
                TestRegistratorPolicy::RandomizedPriorityLeastUsedDegradation,
            ),
            ("random", "rand", TestRegistratorPolicy::Random),
            (
                "weightedrandom",
                "wrand",
                TestRegistratorPolicy::WeightedRandom,
            ),
        ] {
            assert_eq!(TestRegistratorPolicy::from_str(long, false), Ok(p));
            assert_eq!(TestRegistratorPolicy::from_str(short, false), Ok(p));
        }
        assert_eq!(
            TestRegistratorPolicy::LeastUsedDegradation.to_policy(5, 6, 7),
            Policy::LeastUsedDegradation {
                load: 5,
                degradation: 6
            }
        );
        assert_eq!(
            TestRegistratorPolicy::WeightedRandom.to_policy(5, 6, 7),
            Policy::WeightedRandom { weight: 7 }
        );
    }
}
