//! Configuration, resource limits and the typed errors of the handlespace.

use core::fmt;
use rserpool_proto::transport::TransportProtocol;

/// Operation Error cause "Invalid Values" (RFC 5354 §3.12.4).
pub const CAUSE_INVALID_VALUES: u16 = 0x0003;
/// Operation Error cause "Inconsistent Pooling Policy" (RFC 5354 §3.12.6).
pub const CAUSE_INCONSISTENT_POOLING_POLICY: u16 = 0x0005;
/// Operation Error cause "Lack of Resources" (RFC 5354 §3.12.7).
pub const CAUSE_LACK_OF_RESOURCES: u16 = 0x0006;
/// Operation Error cause "Inconsistent Transport Type" (RFC 5354 §3.12.8).
pub const CAUSE_INCONSISTENT_TRANSPORT_TYPE: u16 = 0x0007;
/// Operation Error cause "Inconsistent Data/Control Configuration" (RFC 5354 §3.12.9).
pub const CAUSE_INCONSISTENT_DATA_CONTROL: u16 = 0x0008;

/// Resource limits of a [`Handlespace`](super::Handlespace).
///
/// Exceeding a count limit rejects a *new* registration with
/// [`RegistrationError::LackOfResources`] (cause 0x6); re-registrations of existing PEs are
/// never refused for resources. Handle length and address counts are value checks
/// ([`RegistrationError::InvalidValue`], cause 0x3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of pools.
    pub max_pools: usize,
    /// Maximum number of PEs in one pool.
    pub max_elements_per_pool: usize,
    /// Maximum number of PEs in the whole handlespace.
    pub max_elements: usize,
    /// Maximum number of addresses in one transport parameter (user or ASAP transport).
    /// Values above 255 are treated as 255.
    pub max_addresses_per_transport: usize,
    /// Maximum pool handle length in bytes (handles must also be non-empty).
    pub max_pool_handle_len: usize,
}

impl Limits {
    /// Largest accepted value of [`Limits::max_addresses_per_transport`].
    pub const ADDRESSES_CAP: usize = 255;

    /// The effective address limit (clamped to [`Limits::ADDRESSES_CAP`]).
    pub fn addresses(&self) -> usize {
        self.max_addresses_per_transport.min(Self::ADDRESSES_CAP)
    }
}

impl Default for Limits {
    /// RSPLIB-like defaults: handles up to 32 bytes, up to 64 addresses per transport;
    /// 1,000,000 PEs and 100,000 pools in total, 100,000 PEs per pool.
    fn default() -> Self {
        Limits {
            max_pools: 100_000,
            max_elements_per_pool: 100_000,
            max_elements: 1_000_000,
            max_addresses_per_transport: rserpool_proto::transport::RSPLIB_MAX_ADDRESSES,
            max_pool_handle_len: rserpool_proto::ids::PoolHandle::RSPLIB_MAX_LEN,
        }
    }
}

/// Configuration of a [`Handlespace`](super::Handlespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlespaceConfig {
    /// Resource limits.
    pub limits: Limits,
    /// Default "max increment" of [`Handlespace::select`](super::Handlespace::select): how
    /// many of the selected PEs get their round-robin position / degradation updated.
    /// 0 = the policy's default (RSPLIB registrar `-maxincrement=0`: 1 for the sorting and
    /// randomized-least-used policies, 0 for Random / Weighted Random); a PU cache uses
    /// `u32::MAX` ("update every selected PE").
    pub max_increment: u32,
    /// Seed of the lookup hasher (foldhash). Pool handles and PE identifiers come from the
    /// network, so a registrar should pass a secret value from its RNG. Hash order never
    /// reaches any output.
    pub hash_seed: u64,
}

impl Default for HandlespaceConfig {
    fn default() -> Self {
        HandlespaceConfig {
            limits: Limits::default(),
            max_increment: 0,
            hash_seed: 0x5eed_0f2a_e5e2_b0c1,
        }
    }
}

/// Which transport parameter of a registration is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportRole {
    /// The user transport (where PUs reach the PE).
    User,
    /// The ASAP transport (where registrars reach the PE).
    Asap,
}

/// What is wrong with a value in a registration (all map to cause 0x3 Invalid Values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidValue {
    /// Empty pool handle or longer than [`Limits::max_pool_handle_len`].
    PoolHandleLength {
        /// Length of the offending handle.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// PE identifier 0 ("undefined").
    PeIdentifier,
    /// An addressed transport without addresses.
    NoAddress(TransportRole),
    /// More addresses than [`Limits::max_addresses_per_transport`].
    TooManyAddresses {
        /// Which transport.
        role: TransportRole,
        /// Addresses given.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Port 0 on an addressed transport.
    PortZero(TransportRole),
}

/// Which resource limit a new registration would exceed (cause 0x6 Lack of Resources).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceLimit {
    /// [`Limits::max_pools`].
    Pools,
    /// [`Limits::max_elements_per_pool`].
    ElementsPerPool,
    /// [`Limits::max_elements`].
    Elements,
}

/// Why a (re-)registration was refused. [`RegistrationError::cause_code`] gives the
/// RFC 5354 Operation Error cause to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationError {
    /// A value is invalid (cause 0x3).
    InvalidValue(InvalidValue),
    /// The PE's policy type differs from the pool's (cause 0x5); the registrar should add
    /// the pool's policy parameter as cause information.
    InconsistentPolicy {
        /// The pool's policy type code.
        pool_policy_type: u32,
    },
    /// The PE's user transport protocol differs from the pool's (cause 0x7); the registrar
    /// should add a transport parameter of the pool's type as cause information.
    InconsistentTransport {
        /// The pool's transport protocol.
        pool_protocol: TransportProtocol,
    },
    /// The PE's control-channel setting (Transport Use) differs from the pool's (cause 0x8).
    InconsistentDataControl {
        /// Whether the pool's PEs offer a control channel.
        pool_control_channel: bool,
    },
    /// A resource limit would be exceeded (cause 0x6).
    LackOfResources(ResourceLimit),
}

impl RegistrationError {
    /// The RFC 5354 Operation Error cause code for this error.
    pub fn cause_code(&self) -> u16 {
        match self {
            RegistrationError::InvalidValue(_) => CAUSE_INVALID_VALUES,
            RegistrationError::InconsistentPolicy { .. } => CAUSE_INCONSISTENT_POOLING_POLICY,
            RegistrationError::InconsistentTransport { .. } => CAUSE_INCONSISTENT_TRANSPORT_TYPE,
            RegistrationError::InconsistentDataControl { .. } => CAUSE_INCONSISTENT_DATA_CONTROL,
            RegistrationError::LackOfResources(_) => CAUSE_LACK_OF_RESOURCES,
        }
    }
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrationError::InvalidValue(v) => write!(f, "invalid value: {v:?}"),
            RegistrationError::InconsistentPolicy { pool_policy_type } => {
                write!(
                    f,
                    "inconsistent pooling policy (pool uses 0x{pool_policy_type:08x})"
                )
            }
            RegistrationError::InconsistentTransport { pool_protocol } => {
                write!(
                    f,
                    "inconsistent transport type (pool uses {pool_protocol:?})"
                )
            }
            RegistrationError::InconsistentDataControl {
                pool_control_channel,
            } => write!(
                f,
                "inconsistent data/control configuration (pool control channel: {pool_control_channel})"
            ),
            RegistrationError::LackOfResources(l) => write!(f, "lack of resources: {l:?}"),
        }
    }
}

impl std::error::Error for RegistrationError {}

/// The pool handle names no pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPool;

impl fmt::Display for UnknownPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown pool handle")
    }
}

impl std::error::Error for UnknownPool {}
