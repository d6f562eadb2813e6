//! A pool: its identity, its fixed properties (set by its first PE) and its indices.

use super::id_set::IdSet;
use super::policy::Selector;
use rserpool_proto::ids::{PoolHandle, ServerId};
use rserpool_proto::transport::TransportProtocol;

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
    pub by_owner: OwnerSets,
    /// The policy's selection structure.
    pub selector: Selector,
}

/// PE identifiers of one pool by home registrar: a small vector sorted by registrar id
/// (pools usually have few owners; a B-tree map node would cost ~300 bytes per pool).
#[derive(Debug, Default)]
pub(crate) struct OwnerSets {
    sets: Vec<(ServerId, IdSet)>,
}

impl OwnerSets {
    fn find(&self, home: &ServerId) -> Result<usize, usize> {
        self.sets.binary_search_by(|(h, _)| h.cmp(home))
    }

    /// The set of `home`, created if missing.
    pub(crate) fn entry(&mut self, home: ServerId) -> &mut IdSet {
        let i = match self.find(&home) {
            Ok(i) => i,
            Err(i) => {
                self.sets.reserve_exact(1);
                self.sets.insert(i, (home, IdSet::default()));
                i
            }
        };
        &mut self.sets[i].1
    }

    pub(crate) fn get(&self, home: &ServerId) -> Option<&IdSet> {
        self.find(home).ok().map(|i| &self.sets[i].1)
    }

    pub(crate) fn get_mut(&mut self, home: &ServerId) -> Option<&mut IdSet> {
        self.find(home).ok().map(|i| &mut self.sets[i].1)
    }

    pub(crate) fn remove(&mut self, home: &ServerId) -> Option<IdSet> {
        let i = self.find(home).ok()?;
        let (_, set) = self.sets.remove(i);
        if self.sets.capacity() > 2 * self.sets.len() + 1 {
            self.sets.shrink_to_fit();
        }
        Some(set)
    }

    /// Bytes allocated (the sets' blocks and this vector).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.sets.capacity() * core::mem::size_of::<(ServerId, IdSet)>()
            + self
                .sets
                .iter()
                .map(|(_, s)| s.allocated_bytes())
                .sum::<usize>()
    }

    /// The sets in registrar-id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &IdSet> {
        self.sets.iter().map(|(_, s)| s)
    }
}
