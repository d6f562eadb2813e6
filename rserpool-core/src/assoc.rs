//! Associations as the machines see them.

use core::fmt;

/// An association (SCTP association, TCP-mapping connection, simulated link), named by the
/// driver. Opaque to the core: it compares and stores them, and reads a slot index from
/// them only where the driver said its ids carry one ([`AssocId::slot_index`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssocId(pub u64);

/// At most this many slot index bits are used for tables by slot index (2^24 places): a
/// driver that announces more still works, with the rest of its ids' bits compared whole.
pub(crate) const MAX_SLOT_BITS: u32 = 24;

impl AssocId {
    /// The slot index a driver keeps in the low `bits` bits of the ids it chooses
    /// ([`Machine::handle_assoc_id_slot_bits`](crate::io::Machine::handle_assoc_id_slot_bits)):
    /// `None` for a machine-chosen id (top bit set) or when there is no such layout
    /// (`bits` 0). Tables by this index must still check the whole id.
    pub fn slot_index(self, bits: u32) -> Option<usize> {
        if bits == 0 || crate::io::AssocIdAllocator::is_machine_chosen(self) {
            return None;
        }
        let mask = 1u64.checked_shl(bits).map_or(u64::MAX, |b| b - 1);
        usize::try_from(self.0 & mask).ok()
    }
}

impl fmt::Debug for AssocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "assoc#{}", self.0)
    }
}

/// The upper-layer protocol of a message, as carried by the SCTP PPID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// ASAP, PPID 11.
    Asap,
    /// ENRP, PPID 12.
    Enrp,
}

impl Protocol {
    /// SCTP payload protocol identifier of ASAP (RFC 5352 §8.3).
    pub const PPID_ASAP: u32 = 11;
    /// SCTP payload protocol identifier of ENRP (RFC 5353 §5.4).
    pub const PPID_ENRP: u32 = 12;

    /// The SCTP PPID of this protocol.
    pub fn ppid(self) -> u32 {
        match self {
            Protocol::Asap => Self::PPID_ASAP,
            Protocol::Enrp => Self::PPID_ENRP,
        }
    }

    /// The protocol carried under `ppid`, if it is ASAP or ENRP.
    pub fn from_ppid(ppid: u32) -> Option<Protocol> {
        match ppid {
            Self::PPID_ASAP => Some(Protocol::Asap),
            Self::PPID_ENRP => Some(Protocol::Enrp),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AssocId;

    #[test]
    fn slot_index_reads_the_low_bits_of_driver_chosen_ids() {
        let id = AssocId((5 << 4) | 3);
        assert_eq!(id.slot_index(4), Some(3));
        assert_eq!(id.slot_index(0), None, "no layout");
        assert_eq!(AssocId(1 << 63 | 3).slot_index(4), None, "machine-chosen");
        assert_eq!(AssocId(7).slot_index(64), Some(7));
    }
}
