//! Identifiers: pool handles, PE identifiers, registrar (ENRP server) identifiers.

use bytes::Bytes;
use core::fmt;

/// A pool handle (RFC 5354 §3.9): an opaque byte string naming a pool.
///
/// RSPLIB limits handles to 1..=32 bytes ([`PoolHandle::RSPLIB_MAX_LEN`]); the type itself
/// accepts any length so that a registrar can parse and then reject over-long handles.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PoolHandle(pub Bytes);

impl PoolHandle {
    /// Longest pool handle RSPLIB accepts (`MAX_POOLHANDLESIZE`).
    pub const RSPLIB_MAX_LEN: usize = 32;

    /// A pool handle from any byte string.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        PoolHandle(bytes.into())
    }

    /// The handle's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes in the handle.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty handle (invalid on the wire).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for PoolHandle {
    fn from(s: &str) -> Self {
        PoolHandle(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolHandle({self})")
    }
}

impl fmt::Display for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            write!(f, "\"{}\"", String::from_utf8_lossy(&self.0))
        } else {
            f.write_str("0x")?;
            for b in self.0.iter() {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}

/// A pool element identifier (RFC 5354 §3.14). 0 is "undefined" (RSPLIB rejects it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeIdentifier(pub u32);

impl fmt::Debug for PeIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PE${:08x}", self.0)
    }
}

impl fmt::Display for PeIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:08x}", self.0)
    }
}

/// An ENRP server (registrar) identifier (RFC 5353 §3.2.1). 0 means "unknown / none".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServerId(pub u32);

impl ServerId {
    /// The "undefined" server identifier.
    pub const NONE: ServerId = ServerId(0);
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PR${:08x}", self.0)
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:08x}", self.0)
    }
}
