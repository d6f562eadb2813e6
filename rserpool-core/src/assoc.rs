//! Associations as the machines see them.

use core::fmt;

/// An association (SCTP association, TCP-mapping connection, simulated link), named by the
/// driver. Opaque to the core: it only compares and stores them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssocId(pub u64);

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
