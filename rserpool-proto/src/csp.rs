//! RSPLIB's Component Status Protocol (CSP): status reports that registrars, pool elements
//! and pool users send over UDP to a monitor (`cspmonitor`, port [`CSP_PORT`]).
//!
//! Not an IETF protocol; the layout is RSPLIB 3.5.10's `ComponentStatusReport`
//! (`shared/spec/csp.md` §2): a 288-byte fixed part followed by `n` association entries of
//! 24 bytes each, all integers big-endian.
//!
//! * [`CspReport::decode`] is lenient the way `cspmonitor` is: it ignores the Length field
//!   (older senders put 0 there), accepts text fields without NUL terminator, and requires
//!   Type 1, Version 0x0200 and a datagram of exactly `288 + 24 · n` bytes. It never panics.
//! * [`CspReport::encode`] writes RSPLIB 3.5.10's exact bytes (Length filled, text fields
//!   NUL-padded like `strncpy`).
//! * [`ComponentId`] builds and splits the 64-bit component identifiers (group in the top
//!   byte, object in the low 56 bits).

use bytes::{BufMut, Bytes, BytesMut};
use core::fmt;

use crate::ids::{PeIdentifier, ServerId};

/// UDP port `cspmonitor` listens on by default (not IANA-registered; Wireshark uses it).
pub const CSP_PORT: u16 = 2960;
/// `CSP_VERSION`: the only version RSPLIB sends and accepts.
pub const CSP_VERSION: u32 = 0x0000_0200;
/// `CSPT_REPORT`: the Component Status Report message type (the only CSP type).
pub const CSPT_REPORT: u8 = 0x01;
/// Header flag F: final report, the component is shutting down.
pub const CSPF_FINAL: u8 = 0x01;
/// Size of the fixed part of a report (everything before the association entries).
pub const CSP_FIXED_SIZE: usize = 288;
/// Size of one association entry.
pub const CSP_ASSOCIATION_SIZE: usize = 24;
/// Size of the Location field (`CSPH_STATUS_TEXT_SIZE`-like fixed text field).
pub const CSP_LOCATION_SIZE: usize = 128;
/// Size of the Status field.
pub const CSP_STATUS_SIZE: usize = 128;
/// Most associations one report can carry: the 16-bit Length field caps the datagram at
/// 65 535 bytes, so `288 + 24 · n ≤ 65 535`.
pub const CSP_MAX_ASSOCIATIONS: usize = (u16::MAX as usize - CSP_FIXED_SIZE) / CSP_ASSOCIATION_SIZE;
/// Association Duration value meaning "unknown".
pub const CSP_DURATION_UNKNOWN: u64 = u64::MAX;

/// PPID of ASAP (RFC 5352), as reported in association entries.
pub const PPID_ASAP: u32 = 11;
/// PPID of ENRP (RFC 5353), as reported in association entries.
pub const PPID_ENRP: u32 = 12;

const OFF_LOCATION: usize = 28;
const OFF_STATUS: usize = OFF_LOCATION + CSP_LOCATION_SIZE;
const OFF_WORKLOAD: usize = OFF_STATUS + CSP_STATUS_SIZE;

// ---------------------------------------------------------------------------------------
// Component identifiers
// ---------------------------------------------------------------------------------------

/// The group (top byte) of a [`ComponentId`] (`CID_GROUP_*` in RSPLIB's `rserpool-csp.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComponentGroup {
    /// 0x01: a registrar (PR); the object is its ENRP server identifier.
    Registrar,
    /// 0x02: a pool element (PE); the object is its PE identifier or `-cspidentifier=`.
    PoolElement,
    /// 0x03: a pool user (PU); the object is a random 56-bit value or `-identifier=`.
    PoolUser,
    /// Any other group byte (never sent by RSPLIB; kept so that decoding is lossless).
    /// Never holds 0x01, 0x02 or 0x03 when built through [`ComponentGroup::from_u8`].
    Other(u8),
}

impl ComponentGroup {
    /// The group from its wire byte.
    pub fn from_u8(v: u8) -> Self {
        match v {
            0x01 => ComponentGroup::Registrar,
            0x02 => ComponentGroup::PoolElement,
            0x03 => ComponentGroup::PoolUser,
            v => ComponentGroup::Other(v),
        }
    }

    /// The wire byte of this group.
    pub fn to_u8(self) -> u8 {
        match self {
            ComponentGroup::Registrar => 0x01,
            ComponentGroup::PoolElement => 0x02,
            ComponentGroup::PoolUser => 0x03,
            ComponentGroup::Other(v) => v,
        }
    }

    /// The short name `cspmonitor` uses for the group ("PR", "PE", "PU"; "??" otherwise).
    pub fn short_name(self) -> &'static str {
        match self {
            ComponentGroup::Registrar => "PR",
            ComponentGroup::PoolElement => "PE",
            ComponentGroup::PoolUser => "PU",
            ComponentGroup::Other(_) => "??",
        }
    }
}

/// A 64-bit CSP component identifier: group in bits 63–56, object in bits 55–0
/// (`CID_COMPOUND(g, o) = (g << 56) | (o & 0x00FFFFFFFFFFFFFF)`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ComponentId(pub u64);

impl ComponentId {
    /// Mask of the object part.
    pub const OBJECT_MASK: u64 = 0x00FF_FFFF_FFFF_FFFF;

    /// `CID_COMPOUND(group, object)`: the object is masked to 56 bits.
    pub fn new(group: ComponentGroup, object: u64) -> Self {
        ComponentId((u64::from(group.to_u8()) << 56) | (object & Self::OBJECT_MASK))
    }

    /// A registrar's id: group 0x01, object = its server identifier.
    pub fn registrar(id: ServerId) -> Self {
        Self::new(ComponentGroup::Registrar, u64::from(id.0))
    }

    /// A pool element's id: group 0x02, object = its PE identifier.
    pub fn pool_element(id: PeIdentifier) -> Self {
        Self::new(ComponentGroup::PoolElement, u64::from(id.0))
    }

    /// A pool user's id: group 0x03, object = the low 56 bits of `object`.
    pub fn pool_user(object: u64) -> Self {
        Self::new(ComponentGroup::PoolUser, object)
    }

    /// The group byte, decoded.
    pub fn group(self) -> ComponentGroup {
        ComponentGroup::from_u8((self.0 >> 56) as u8)
    }

    /// The 56-bit object part.
    pub fn object(self) -> u64 {
        self.0 & Self::OBJECT_MASK
    }

    /// True when the object part is 0: "not yet known" in an association entry; RSPLIB does
    /// not send a report whose Sender ID has object 0.
    pub fn is_unknown(self) -> bool {
        self.object() == 0
    }
}

impl fmt::Debug for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}${:014x}", self.group().short_name(), self.object())
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

// ---------------------------------------------------------------------------------------
// Typed field values
// ---------------------------------------------------------------------------------------

/// A fixed-size text field (Location, Status): up to `N` bytes, no NUL inside, NUL-padded
/// on the wire and not NUL-terminated when exactly `N` bytes long (`strncpy` semantics).
///
/// The bytes are kept as they are (RSPLIB does not promise UTF-8).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct CspText<const N: usize>(Bytes);

/// The Location text field (128 bytes on the wire).
pub type Location = CspText<CSP_LOCATION_SIZE>;
/// The Status text field (128 bytes on the wire).
pub type StatusText = CspText<CSP_STATUS_SIZE>;

impl<const N: usize> CspText<N> {
    /// Maximum length in bytes.
    pub const MAX_LEN: usize = N;

    /// The empty text.
    pub fn empty() -> Self {
        CspText(Bytes::new())
    }

    /// A text from bytes; `None` if longer than `N` or containing a NUL byte.
    pub fn new(bytes: impl Into<Bytes>) -> Option<Self> {
        let b: Bytes = bytes.into();
        if b.len() > N || b.contains(&0) {
            None
        } else {
            Some(CspText(b))
        }
    }

    /// What `strncpy(field, s, N)` stores: `s` up to its first NUL, cut to `N` bytes (which
    /// may split a multi-byte UTF-8 character, as RSPLIB does).
    pub fn truncated(s: &[u8]) -> Self {
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len()).min(N);
        CspText(Bytes::copy_from_slice(s.get(..end).unwrap_or_default()))
    }

    /// The text's bytes (without padding).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text, with invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty text.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the field from exactly `N` wire bytes: up to the first NUL. Bytes after the
    /// first NUL are ignored (RSPLIB writes zeros there).
    fn from_field(field: &[u8]) -> Self {
        Self::truncated(field)
    }

    /// Writes exactly `N` bytes: the text and NUL padding.
    fn put(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
        buf.put_bytes(0, N - self.0.len());
    }
}

impl<const N: usize> From<&str> for CspText<N> {
    /// `strncpy` semantics, see [`CspText::truncated`].
    fn from(s: &str) -> Self {
        Self::truncated(s.as_bytes())
    }
}

impl<const N: usize> fmt::Debug for CspText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl<const N: usize> fmt::Display for CspText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

/// The Workload field: 0xFFFF = unknown / not applicable, else `round(w × 0xFFFE)` for a
/// load fraction `w ∈ [0, 1]` (`CSR_SET_WORKLOAD`). The raw value is kept so that every
/// wire value round-trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload(pub u16);

impl Workload {
    /// Unknown / not applicable (what registrars and non-adaptive PEs send).
    pub const UNKNOWN: Workload = Workload(0xFFFF);
    /// Full scale of a known workload.
    pub const FULL_SCALE: u16 = 0xFFFE;

    /// `CSR_SET_WORKLOAD(w)`: `round(w × 0xFFFE)`, with `w` clamped to [0, 1]; NaN gives
    /// [`Workload::UNKNOWN`].
    pub fn from_fraction(w: f64) -> Self {
        if w.is_nan() {
            return Self::UNKNOWN;
        }
        let v = (w.clamp(0.0, 1.0) * f64::from(Self::FULL_SCALE)).round();
        // v is in [0, 65534] after the clamp, so the cast is exact.
        Workload(v as u16)
    }

    /// The load fraction, or `None` for unknown.
    pub fn fraction(self) -> Option<f64> {
        if self.0 == 0xFFFF {
            None
        } else {
            Some(f64::from(self.0) / f64::from(Self::FULL_SCALE))
        }
    }
}

impl Default for Workload {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// The Protocol ID of an association entry (an IP protocol number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CspProtocol {
    /// 132: SCTP (all associations RSPLIB reports).
    Sctp,
    /// 6: TCP.
    Tcp,
    /// 17: UDP.
    Udp,
    /// Any other value (never 6, 17 or 132 when built through [`CspProtocol::from_u16`]).
    Other(u16),
}

impl CspProtocol {
    /// The protocol from its wire value.
    pub fn from_u16(v: u16) -> Self {
        match v {
            132 => CspProtocol::Sctp,
            6 => CspProtocol::Tcp,
            17 => CspProtocol::Udp,
            v => CspProtocol::Other(v),
        }
    }

    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            CspProtocol::Sctp => 132,
            CspProtocol::Tcp => 6,
            CspProtocol::Udp => 17,
            CspProtocol::Other(v) => v,
        }
    }
}

/// The name `cspmonitor` shows for a PPID in its association list.
pub fn ppid_name(ppid: u32) -> Option<&'static str> {
    Some(match ppid {
        0 => "Data",
        11 => "ASAP",
        12 => "ENRP",
        32 => "FractGen",
        33 => "PingPong",
        34 => "CalcApp",
        35 => "Scripting",
        _ => return None,
    })
}

/// RSPLIB's session status text (`getSessionStatus`): `"1 Session"`, else `"%u Sessions"`.
pub fn session_status_text(sessions: u32) -> StatusText {
    let s = if sessions == 1 {
        "1 Session".to_owned()
    } else {
        format!("{sessions} Sessions")
    };
    StatusText::from(s.as_str())
}

/// A registrar's status text (`registrarGetReportFunction`):
/// `"%u[%u] PEs in %u Pool%s, %u Peer%s"`, e.g. `"1[1] PEs in 1 Pool, 0 Peers"`.
pub fn registrar_status_text(pes: u32, owned_pes: u32, pools: u32, peers: u32) -> StatusText {
    let s = format!(
        "{pes}[{owned_pes}] PEs in {pools} Pool{}, {peers} Peer{}",
        if pools == 1 { "" } else { "s" },
        if peers == 1 { "" } else { "s" }
    );
    StatusText::from(s.as_str())
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// One association entry of a report (24 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CspAssociation {
    /// Component id of the other end; object 0 = not yet known.
    pub receiver_id: ComponentId,
    /// How long the association has existed, µs; [`CSP_DURATION_UNKNOWN`] = unknown.
    pub duration_us: u64,
    /// Flags (0 in RSPLIB; kept verbatim).
    pub flags: u16,
    /// IP protocol of the association.
    pub protocol: CspProtocol,
    /// Payload protocol identifier used on it (11 ASAP, 12 ENRP, or the last data PPID).
    pub ppid: u32,
}

impl CspAssociation {
    /// The duration, or `None` when unknown.
    pub fn duration(&self) -> Option<u64> {
        (self.duration_us != CSP_DURATION_UNKNOWN).then_some(self.duration_us)
    }

    fn put(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.receiver_id.0);
        buf.put_u64(self.duration_us);
        buf.put_u16(self.flags);
        buf.put_u16(self.protocol.to_u16());
        buf.put_u32(self.ppid);
    }
}

/// A Component Status Report (type 0x01, version 0x0200).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CspReport {
    /// Header flags; bit [`CSPF_FINAL`] = final report. Other bits are kept verbatim.
    pub flags: u8,
    /// The sender's component id.
    pub sender_id: ComponentId,
    /// Sender time stamp, µs (RSPLIB 3.5.10: since the process's first report; older
    /// senders: since 1970).
    pub sender_timestamp_us: u64,
    /// The sender's report interval, µs.
    pub report_interval_us: u32,
    /// Location text (`"<hostname>: <addr>[:<port>][, <addr>…]"`).
    pub location: Location,
    /// Status text.
    pub status: StatusText,
    /// Workload.
    pub workload: Workload,
    /// Association entries.
    pub associations: Vec<CspAssociation>,
}

/// What went wrong while decoding a CSP report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CspErrorKind {
    /// The datagram ends before the field at `offset` (which needs `needed` bytes in all).
    Truncated {
        /// Bytes the report needs up to the end of the field being read.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Type is not [`CSPT_REPORT`].
    UnknownType(u8),
    /// Version is not [`CSP_VERSION`].
    UnsupportedVersion(u32),
    /// More association entries than a 65 535-byte datagram can hold.
    TooManyAssociations(u16),
    /// The datagram is longer than `288 + 24 · n` (cspmonitor ignores such reports).
    TrailingData {
        /// Size implied by the association count.
        expected: usize,
        /// Actual datagram size.
        actual: usize,
    },
}

/// A CSP decoding error: what and at which byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CspError {
    /// Byte offset in the datagram of the field that failed.
    pub offset: usize,
    /// What went wrong.
    pub kind: CspErrorKind,
}

impl fmt::Display for CspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CspErrorKind::Truncated { needed, available } => write!(
                f,
                "CSP report truncated at offset {}: need {needed} bytes, have {available}",
                self.offset
            ),
            CspErrorKind::UnknownType(t) => {
                write!(
                    f,
                    "CSP message type 0x{t:02x} unknown (offset {})",
                    self.offset
                )
            }
            CspErrorKind::UnsupportedVersion(v) => {
                write!(
                    f,
                    "CSP version 0x{v:08x} unsupported (offset {})",
                    self.offset
                )
            }
            CspErrorKind::TooManyAssociations(n) => write!(
                f,
                "CSP report claims {n} associations (offset {}), more than fit a datagram",
                self.offset
            ),
            CspErrorKind::TrailingData { expected, actual } => write!(
                f,
                "CSP report has {actual} bytes, expected {expected} (trailing data at offset {})",
                self.offset
            ),
        }
    }
}

impl std::error::Error for CspError {}

/// Error of [`CspReport::encode`]: the report does not fit one CSP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CspEncodeError {
    /// Number of associations in the report (more than [`CSP_MAX_ASSOCIATIONS`]).
    pub associations: usize,
}

impl fmt::Display for CspEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CSP report with {} associations exceeds the maximum of {CSP_MAX_ASSOCIATIONS}",
            self.associations
        )
    }
}

impl std::error::Error for CspEncodeError {}

/// Checked big-endian reader over a datagram; every read reports the offset on failure.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CspError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.data.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(CspError {
                offset: self.pos,
                kind: CspErrorKind::Truncated {
                    needed: end.unwrap_or(usize::MAX),
                    available: self.data.len(),
                },
            }),
        }
    }

    fn array<const K: usize>(&mut self) -> Result<[u8; K], CspError> {
        let s = self.take(K)?;
        let mut a = [0u8; K];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, CspError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, CspError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, CspError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, CspError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

impl CspReport {
    /// A report with no associations, unknown workload and flags 0.
    pub fn new(
        sender_id: ComponentId,
        sender_timestamp_us: u64,
        report_interval_us: u32,
        location: Location,
        status: StatusText,
    ) -> Self {
        CspReport {
            flags: 0,
            sender_id,
            sender_timestamp_us,
            report_interval_us,
            location,
            status,
            workload: Workload::UNKNOWN,
            associations: Vec::new(),
        }
    }

    /// The final report RSPLIB sends on clean shutdown: F = 1, empty Location and Status,
    /// Workload 0, no associations.
    pub fn final_report(
        sender_id: ComponentId,
        sender_timestamp_us: u64,
        report_interval_us: u32,
    ) -> Self {
        CspReport {
            flags: CSPF_FINAL,
            sender_id,
            sender_timestamp_us,
            report_interval_us,
            location: Location::empty(),
            status: StatusText::empty(),
            workload: Workload(0),
            associations: Vec::new(),
        }
    }

    /// True if the F (final) flag is set.
    pub fn is_final(&self) -> bool {
        self.flags & CSPF_FINAL != 0
    }

    /// Encoded size: `288 + 24 · n`.
    pub fn encoded_len(&self) -> usize {
        CSP_FIXED_SIZE + CSP_ASSOCIATION_SIZE * self.associations.len()
    }

    /// Decodes one report datagram (see the module docs for what is accepted).
    pub fn decode(data: &[u8]) -> Result<CspReport, CspError> {
        let mut r = Reader { data, pos: 0 };
        let ty = r.u8()?;
        if ty != CSPT_REPORT {
            return Err(CspError {
                offset: 0,
                kind: CspErrorKind::UnknownType(ty),
            });
        }
        let flags = r.u8()?;
        let _length_ignored = r.u16()?;
        let version = r.u32()?;
        if version != CSP_VERSION {
            return Err(CspError {
                offset: 4,
                kind: CspErrorKind::UnsupportedVersion(version),
            });
        }
        let sender_id = ComponentId(r.u64()?);
        let sender_timestamp_us = r.u64()?;
        let report_interval_us = r.u32()?;
        debug_assert_eq!(r.pos, OFF_LOCATION);
        let location = Location::from_field(r.take(CSP_LOCATION_SIZE)?);
        debug_assert_eq!(r.pos, OFF_STATUS);
        let status = StatusText::from_field(r.take(CSP_STATUS_SIZE)?);
        debug_assert_eq!(r.pos, OFF_WORKLOAD);
        let workload = Workload(r.u16()?);
        let count_offset = r.pos;
        let n = r.u16()?;
        if usize::from(n) > CSP_MAX_ASSOCIATIONS {
            return Err(CspError {
                offset: count_offset,
                kind: CspErrorKind::TooManyAssociations(n),
            });
        }
        let expected = CSP_FIXED_SIZE + CSP_ASSOCIATION_SIZE * usize::from(n);
        if data.len() > expected {
            return Err(CspError {
                offset: expected,
                kind: CspErrorKind::TrailingData {
                    expected,
                    actual: data.len(),
                },
            });
        }
        let mut associations = Vec::with_capacity(usize::from(n).min(data.len() / 24));
        for _ in 0..n {
            associations.push(CspAssociation {
                receiver_id: ComponentId(r.u64()?),
                duration_us: r.u64()?,
                flags: r.u16()?,
                protocol: CspProtocol::from_u16(r.u16()?),
                ppid: r.u32()?,
            });
        }
        Ok(CspReport {
            flags,
            sender_id,
            sender_timestamp_us,
            report_interval_us,
            location,
            status,
            workload,
            associations,
        })
    }

    /// Appends the report's wire bytes (RSPLIB 3.5.10 layout, Length filled) to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), CspEncodeError> {
        if self.associations.len() > CSP_MAX_ASSOCIATIONS {
            return Err(CspEncodeError {
                associations: self.associations.len(),
            });
        }
        let len = self.encoded_len();
        buf.put_u8(CSPT_REPORT);
        buf.put_u8(self.flags);
        // len ≤ 65 535 by the check above.
        buf.put_u16(len as u16);
        buf.put_u32(CSP_VERSION);
        buf.put_u64(self.sender_id.0);
        buf.put_u64(self.sender_timestamp_us);
        buf.put_u32(self.report_interval_us);
        self.location.put(buf);
        self.status.put(buf);
        buf.put_u16(self.workload.0);
        buf.put_u16(self.associations.len() as u16);
        for a in &self.associations {
            a.put(buf);
        }
        Ok(())
    }

    /// The report's wire bytes.
    pub fn to_bytes(&self) -> Result<Bytes, CspEncodeError> {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b)?;
        Ok(b.freeze())
    }
}

/// Fuzz entry point: decodes `data`; if that succeeds, re-encodes and checks that decoding
/// the result gives the same report, and that canonical input comes back byte-identical.
/// Panics on any violation (that is what the fuzzer looks for).
pub fn fuzz_csp(data: &[u8]) {
    let Ok(report) = CspReport::decode(data) else {
        return;
    };
    let bytes = match report.to_bytes() {
        Ok(b) => b,
        Err(e) => panic!("decoded report does not encode: {e}"),
    };
    assert_eq!(
        bytes.len(),
        data.len(),
        "encoded size differs from input size"
    );
    let again = CspReport::decode(&bytes).expect("encoded report does not decode");
    assert_eq!(again, report, "decode(encode(x)) != x");
    if is_canonical(data) {
        assert_eq!(
            &bytes[..],
            data,
            "canonical input did not re-encode byte-identically"
        );
    }
}

/// True if `data` is exactly what RSPLIB 3.5.10 would write for the report it holds:
/// correct Length field and text fields with nothing but NULs after their first NUL.
fn is_canonical(data: &[u8]) -> bool {
    let length_ok = data
        .get(2..4)
        .is_some_and(|l| usize::from(u16::from_be_bytes([l[0], l[1]])) == data.len());
    let text_ok = |field: Option<&[u8]>| {
        field.is_some_and(|f| match f.iter().position(|&b| b == 0) {
            Some(p) => f.get(p..).is_some_and(|rest| rest.iter().all(|&b| b == 0)),
            None => true,
        })
    };
    length_ok
        && text_ok(data.get(OFF_LOCATION..OFF_STATUS))
        && text_ok(data.get(OFF_STATUS..OFF_WORKLOAD))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn padded(text: &str, n: usize) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.resize(n, 0);
        v
    }

    /// csp.md §4, `[CAP 08]` frame 73 (the NUL runs written out).
    fn frame73() -> Vec<u8> {
        let mut b = hex("01 00 01 50  00 00 02 00  03 8d 44 b2 33 0c 0d 74
                         00 00 00 00 00 0f 60 e3  00 0f 42 40");
        b.extend(padded("sctp-vm: 10.99.0.15", 128));
        b.extend(padded("1 Session", 128));
        b.extend(hex(
            "ff ff  00 02
            01 00 00 00 00 00 00 00  00 00 00 00 00 0f 5d 96  00 00 00 84  00 00 00 0b
            02 00 00 00 2b c6 ac 57  00 00 00 00 00 0f 40 7e  00 00 00 84  00 00 00 00",
        ));
        b
    }

    #[test]
    fn frame73_decodes_and_reencodes_byte_exact() {
        let b = frame73();
        assert_eq!(b.len(), 336);
        let r = CspReport::decode(&b).unwrap();
        assert_eq!(r.sender_id, ComponentId(0x038d_44b2_330c_0d74));
        assert_eq!(r.sender_id.group(), ComponentGroup::PoolUser);
        assert_eq!(r.sender_id, ComponentId::pool_user(0x8d_44b2_330c_0d74));
        assert!(!r.is_final());
        assert_eq!(r.sender_timestamp_us, 1_007_843);
        assert_eq!(r.report_interval_us, 1_000_000);
        assert_eq!(r.location.as_bytes(), b"sctp-vm: 10.99.0.15");
        assert_eq!(r.status, session_status_text(1));
        assert_eq!(r.workload, Workload::UNKNOWN);
        assert_eq!(r.workload.fraction(), None);
        assert_eq!(r.associations.len(), 2);
        let a0 = r.associations[0];
        assert_eq!(
            a0.receiver_id,
            ComponentId::new(ComponentGroup::Registrar, 0)
        );
        assert!(a0.receiver_id.is_unknown());
        assert_eq!(a0.duration(), Some(0x0f5d96));
        assert_eq!(a0.protocol, CspProtocol::Sctp);
        assert_eq!(a0.ppid, PPID_ASAP);
        let a1 = r.associations[1];
        assert_eq!(
            a1.receiver_id,
            ComponentId::pool_element(PeIdentifier(0x2bc6ac57))
        );
        assert_eq!(a1.duration_us, 0x0f407e);
        assert_eq!(ppid_name(a1.ppid), Some("Data"));
        assert_eq!(&r.to_bytes().unwrap()[..], &b[..]);
        fuzz_csp(&b);
    }

    #[test]
    fn final_report_layout() {
        // csp.md §4, frame 165: 01 01 01 20 00 00 02 00 <id> <t> 00 0f 42 40, 256 zero
        // bytes, 00 00 00 00.
        let id = ComponentId::registrar(ServerId(0x802547ba));
        assert_eq!(id.0, 0x0100_0000_8025_47ba);
        let r = CspReport::final_report(id, 5_000_123, 1_000_000);
        let b = r.to_bytes().unwrap();
        let mut want = hex("01 01 01 20 00 00 02 00 01 00 00 00 80 25 47 ba");
        want.extend(5_000_123u64.to_be_bytes());
        want.extend(hex("00 0f 42 40"));
        want.extend([0u8; 256]);
        want.extend([0u8; 4]);
        assert_eq!(&b[..], &want[..]);
        let d = CspReport::decode(&b).unwrap();
        assert!(d.is_final());
        assert_eq!(d, r);
    }

    #[test]
    fn old_sender_with_zero_length_is_accepted() {
        let mut b = frame73();
        b[2] = 0;
        b[3] = 0;
        let r = CspReport::decode(&b).unwrap();
        assert_eq!(r, CspReport::decode(&frame73()).unwrap());
        fuzz_csp(&b);
    }

    #[test]
    fn text_without_terminator_and_garbage_after_nul() {
        let mut b = frame73();
        for x in &mut b[OFF_LOCATION..OFF_STATUS] {
            *x = b'a';
        }
        b[OFF_STATUS + 20] = b'x'; // after "1 Session\0"
        let r = CspReport::decode(&b).unwrap();
        assert_eq!(r.location.len(), 128);
        assert_eq!(r.status.as_bytes(), b"1 Session");
        assert!(!is_canonical(&b));
        fuzz_csp(&b);
    }

    #[test]
    fn errors_carry_offsets() {
        let b = frame73();
        let mut t = b.clone();
        t[0] = 2;
        assert_eq!(
            CspReport::decode(&t).unwrap_err(),
            CspError {
                offset: 0,
                kind: CspErrorKind::UnknownType(2)
            }
        );
        let mut t = b.clone();
        t[6] = 1;
        assert_eq!(
            CspReport::decode(&t).unwrap_err().kind,
            CspErrorKind::UnsupportedVersion(0x0100)
        );
        let e = CspReport::decode(&b[..300]).unwrap_err();
        assert_eq!(e.offset, 296);
        assert_eq!(
            e.kind,
            CspErrorKind::Truncated {
                needed: 304,
                available: 300
            }
        );
        let mut t = b.clone();
        t.push(0);
        assert_eq!(
            CspReport::decode(&t).unwrap_err(),
            CspError {
                offset: 336,
                kind: CspErrorKind::TrailingData {
                    expected: 336,
                    actual: 337
                }
            }
        );
        let mut t = b.clone();
        t[286] = 0xff;
        t[287] = 0xff;
        assert_eq!(
            CspReport::decode(&t).unwrap_err(),
            CspError {
                offset: 286,
                kind: CspErrorKind::TooManyAssociations(0xffff)
            }
        );
        assert!(!e.to_string().is_empty());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = frame73();
        for n in 0..b.len() {
            let e = CspReport::decode(&b[..n]).unwrap_err();
            assert!(matches!(e.kind, CspErrorKind::Truncated { .. }), "{n}: {e}");
            assert!(e.offset <= n);
        }
    }

    #[test]
    fn component_ids() {
        let pe = ComponentId::pool_element(PeIdentifier(0x1234));
        assert_eq!(pe.0, 0x0200_0000_0000_1234);
        assert_eq!(pe.group(), ComponentGroup::PoolElement);
        assert_eq!(pe.object(), 0x1234);
        let pu = ComponentId::pool_user(u64::MAX);
        assert_eq!(pu.0, 0x03ff_ffff_ffff_ffff);
        assert_eq!(
            ComponentId(0x7f00_0000_0000_0001).group(),
            ComponentGroup::Other(0x7f)
        );
        assert_eq!(format!("{pe:?}"), "PE$00000000001234");
        assert_eq!(pe.to_string(), "0200000000001234");
        for g in 0..=255u8 {
            assert_eq!(ComponentGroup::from_u8(g).to_u8(), g);
        }
    }

    #[test]
    fn texts_and_workload() {
        assert_eq!(
            registrar_status_text(1, 1, 1, 0).as_bytes(),
            b"1[1] PEs in 1 Pool, 0 Peers"
        );
        assert_eq!(
            registrar_status_text(3, 2, 2, 1).as_bytes(),
            b"3[2] PEs in 2 Pools, 1 Peer"
        );
        assert_eq!(session_status_text(0).as_bytes(), b"0 Sessions");
        let long = "x".repeat(200);
        assert_eq!(Location::from(long.as_str()).len(), 128);
        assert_eq!(StatusText::truncated(b"ab\0cd").as_bytes(), b"ab");
        assert!(StatusText::new(&b"a\0"[..]).is_none());
        assert!(StatusText::new(vec![b'a'; 129]).is_none());
        assert_eq!(Workload::from_fraction(0.0), Workload(0));
        assert_eq!(Workload::from_fraction(1.0), Workload(0xFFFE));
        assert_eq!(Workload::from_fraction(0.5), Workload(0x7FFF));
        assert_eq!(Workload::from_fraction(2.0), Workload(0xFFFE));
        assert_eq!(Workload::from_fraction(f64::NAN), Workload::UNKNOWN);
        assert_eq!(Workload(0xFFFE).fraction(), Some(1.0));
    }

    #[test]
    fn too_many_associations_do_not_encode() {
        let mut r = CspReport::new(ComponentId::pool_user(1), 0, 0, "".into(), "".into());
        let a = CspAssociation {
            receiver_id: ComponentId(0),
            duration_us: CSP_DURATION_UNKNOWN,
            flags: 0,
            protocol: CspProtocol::Sctp,
            ppid: PPID_ENRP,
        };
        r.associations = vec![a; CSP_MAX_ASSOCIATIONS];
        let b = r.to_bytes().unwrap();
        assert!(b.len() <= 65535);
        assert_eq!(CspReport::decode(&b).unwrap(), r);
        r.associations.push(a);
        assert_eq!(
            r.to_bytes().unwrap_err(),
            CspEncodeError {
                associations: CSP_MAX_ASSOCIATIONS + 1
            }
        );
    }

    fn text<const N: usize>() -> impl Strategy<Value = CspText<N>> {
        proptest::collection::vec(1u8..=255, 0..=N).prop_map(|v| CspText::new(v).unwrap())
    }

    fn association() -> impl Strategy<Value = CspAssociation> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
        )
            .prop_map(|(id, d, flags, proto, ppid)| CspAssociation {
                receiver_id: ComponentId(id),
                duration_us: d,
                flags,
                protocol: CspProtocol::from_u16(proto),
                ppid,
            })
    }

    fn report() -> impl Strategy<Value = CspReport> {
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            text::<128>(),
            text::<128>(),
            any::<u16>(),
            proptest::collection::vec(association(), 0..8),
        )
            .prop_map(
                |(flags, id, ts, iv, location, status, w, associations)| CspReport {
                    flags,
                    sender_id: ComponentId(id),
                    sender_timestamp_us: ts,
                    report_interval_us: iv,
                    location,
                    status,
                    workload: Workload(w),
                    associations,
                },
            )
    }

    proptest! {
        #[test]
        fn decode_encode_roundtrip(r in report()) {
            let b = r.to_bytes().unwrap();
            prop_assert_eq!(b.len(), r.encoded_len());
            prop_assert!(is_canonical(&b));
            prop_assert_eq!(CspReport::decode(&b).unwrap(), r);
            fuzz_csp(&b);
        }

        #[test]
        fn canonical_bytes_roundtrip(r in report(), cut in any::<prop::sample::Index>()) {
            // Canonical bytes built independently of `encode`: from fields, by hand.
            let mut b = vec![CSPT_REPORT, r.flags];
            b.extend((r.encoded_len() as u16).to_be_bytes());
            b.extend(CSP_VERSION.to_be_bytes());
            b.extend(r.sender_id.0.to_be_bytes());
            b.extend(r.sender_timestamp_us.to_be_bytes());
            b.extend(r.report_interval_us.to_be_bytes());
            let mut l = r.location.as_bytes().to_vec();
            l.resize(128, 0);
            b.extend(l);
            let mut s = r.status.as_bytes().to_vec();
            s.resize(128, 0);
            b.extend(s);
            b.extend(r.workload.0.to_be_bytes());
            b.extend((r.associations.len() as u16).to_be_bytes());
            for a in &r.associations {
                b.extend(a.receiver_id.0.to_be_bytes());
                b.extend(a.duration_us.to_be_bytes());
                b.extend(a.flags.to_be_bytes());
                b.extend(a.protocol.to_u16().to_be_bytes());
                b.extend(a.ppid.to_be_bytes());
            }
            let d = CspReport::decode(&b).unwrap();
            prop_assert_eq!(&d.to_bytes().unwrap()[..], &b[..]);
            // Any strict prefix is a typed truncation error.
            let n = cut.index(b.len());
            let e = CspReport::decode(&b[..n]).unwrap_err();
            let truncated = matches!(e.kind, CspErrorKind::Truncated { .. });
            prop_assert!(truncated);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut v in proptest::collection::vec(any::<u8>(), 0..400),
                                       n in 0u16..4) {
            if v.len() >= 8 && v[0] % 2 == 0 {
                // Steer half the cases past the type/version checks.
                v[0] = CSPT_REPORT;
                v[4..8].copy_from_slice(&CSP_VERSION.to_be_bytes());
                if v[1] % 2 == 0 {
                    v.resize(CSP_FIXED_SIZE + CSP_ASSOCIATION_SIZE * usize::from(n), 7);
                    v[286..288].copy_from_slice(&n.to_be_bytes());
                }
            }
            fuzz_csp(&v);
        }
    }
}
