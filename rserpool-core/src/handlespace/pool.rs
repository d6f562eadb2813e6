//! A pool: its identity, its fixed properties (set by its first PE) and its indices.

use super::policy::Selector;
use rserpool_proto::ids::{PoolHandle, ServerId};
use rserpool_proto::transport::TransportProtocol;
use std::collections::{BTreeMap, BTreeSet};

/// Internal pool state.
#[derive(Debug)]
pub(crate) struct Pool {
    pub handle: PoolHandle,
    /// [`super::checksum::handle_sum`] of the handle.
    pub handle_sum: u32,
    /// Overall policy type (from the first PE).
    pub policy_type: u32,
    /// Overall transport protocol (from the first PE).
    pub protocol: TransportProtocol,
    /// Overall data/control setting: Transport Use = data plus control.
    pub control_channel: bool,
    /// Number of PEs.
    pub len: u32,
    /// PE identifiers by home registrar: the ownership index of this pool (and, merged,
    /// the walk in PE-identifier order).
    pub by_owner: BTreeMap<ServerId, BTreeSet<u32>>,
    /// The policy's selection structure.
    pub selector: Selector,
}
