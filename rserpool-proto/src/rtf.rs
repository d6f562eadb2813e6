//! RTF, the RSerPool TCP Framing of this project (`shared/spec/tcp-mapping.md` §3).
//!
//! RTF carries what an SCTP DATA chunk gives the application (PPID, stream, one whole
//! message) over a TCP byte stream, plus a HELLO handshake and idle heartbeats. This module
//! has three layers, all sans-IO:
//!
//! * [`Frame`] and its encoder ([`Frame::encode`], [`encode_data_header`]);
//! * [`FrameDecoder`], an incremental decoder: feed arbitrary chunks of the byte stream,
//!   get whole frames; memory stays bounded by the configured maximum frame length;
//! * [`RtfConnection`], the per-connection state machine: HELLO-first in both directions,
//!   heartbeats when idle, dead-peer detection, with time passed in as microseconds.
//!
//! Wire format (all big-endian), 12-byte header then payload, no padding between frames:
//! `type u8 | flags u8 | stream u16 | length u32 (header + payload) | ppid u32`.

use bytes::{Bytes, BytesMut};
use core::fmt;
use core::num::NonZeroU32;
use std::collections::VecDeque;

/// Magic number at the start of a HELLO payload: `"RSPT"`.
pub const MAGIC: u32 = 0x5253_5054;
/// The RTF version this module speaks.
pub const VERSION: u8 = 1;
/// Length of every frame header.
pub const HEADER_LEN: usize = 12;
/// Length of a HELLO payload.
pub const HELLO_PAYLOAD_LEN: usize = 12;
/// Length of a HEARTBEAT / HEARTBEAT_ACK payload.
pub const HEARTBEAT_PAYLOAD_LEN: usize = 8;
/// The payload size every receiver must accept (§3.2).
pub const MIN_ACCEPTED_PAYLOAD: usize = 65_536;
/// Suggested maximum frame length (header + payload): 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// Default heartbeat interval (§3.5), in milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 5000;
/// DATA flag U: the sender asked for unordered delivery (informational).
pub const FLAG_UNORDERED: u8 = 0x01;
/// How many peer heartbeat intervals of silence make a connection dead.
pub const DEAD_AFTER_INTERVALS: u64 = 3;
/// The longest heartbeat interval used (ms, 2^28: 3.1 days), ours or the peer's (a longer
/// one announced is used as this): a connection is declared dead at the latest
/// [`DEAD_AFTER_INTERVALS`] of them after its last input, well within the 2^31 ms (24.8
/// days) over which it keeps its times ([`RtfConnection`]).
pub const MAX_HEARTBEAT_INTERVAL_MS: u32 = 1 << 28;
/// A HEARTBEAT goes out once nothing was sent for the interval plus this fraction of it
/// (one half; SCTP too waits longer than its heartbeat interval: HB.interval + RTO):
/// application traffic that repeats about every interval, such as a registrar's
/// keep-alives and their acks (5 s ± 25 % after each ack by default, the default interval
/// too), then suppresses the heartbeats instead of racing them and doubling the frames of
/// each exchange; the peer, which waits [`DEAD_AFTER_INTERVALS`] intervals, still has 1.5
/// intervals of margin.
pub const HEARTBEAT_SLACK_DIVISOR: u64 = 2;

/// Frame type codes.
pub mod frame_type {
    /// HELLO, first frame in each direction.
    pub const HELLO: u8 = 0x00;
    /// DATA, one whole user message.
    pub const DATA: u8 = 0x01;
    /// HEARTBEAT, 8 opaque bytes.
    pub const HEARTBEAT: u8 = 0x02;
    /// HEARTBEAT_ACK, the 8 bytes of the HEARTBEAT.
    pub const HEARTBEAT_ACK: u8 = 0x03;
    /// First extension type; 0x80..=0xff are skipped when unknown.
    pub const FIRST_EXTENSION: u8 = 0x80;
}

/// What a connection carries (HELLO Channel Kind, §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ChannelKind {
    /// 1: PE or PU → registrar (ASAP, PPID 11).
    AsapToRegistrar = 1,
    /// 2: registrar → PE (ASAP initiated by a registrar, PPID 11).
    AsapFromRegistrar = 2,
    /// 3: registrar → registrar (ENRP, PPID 12).
    Enrp = 3,
    /// 4: PU → PE session (PPID 11 = control, others = data).
    Session = 4,
}

impl ChannelKind {
    /// All kinds, in code order.
    pub const ALL: [ChannelKind; 4] = [
        ChannelKind::AsapToRegistrar,
        ChannelKind::AsapFromRegistrar,
        ChannelKind::Enrp,
        ChannelKind::Session,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind with wire code `code`, if known.
    pub fn from_code(code: u8) -> Option<ChannelKind> {
        match code {
            1 => Some(ChannelKind::AsapToRegistrar),
            2 => Some(ChannelKind::AsapFromRegistrar),
            3 => Some(ChannelKind::Enrp),
            4 => Some(ChannelKind::Session),
            _ => None,
        }
    }
}

/// A set of channel kinds (what an acceptor serves).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChannelKinds(u8);

impl ChannelKinds {
    /// The empty set.
    pub const NONE: ChannelKinds = ChannelKinds(0);

    /// The set with every kind.
    pub fn all() -> ChannelKinds {
        ChannelKind::ALL.into_iter().collect()
    }

    /// Adds `kind`.
    pub fn with(self, kind: ChannelKind) -> ChannelKinds {
        ChannelKinds(self.0 | (1 << kind.code()))
    }

    /// True when `kind` is in the set.
    pub fn contains(self, kind: ChannelKind) -> bool {
        self.0 & (1 << kind.code()) != 0
    }

    /// The only kind of a one-element set.
    pub fn single(self) -> Option<ChannelKind> {
        let mut it = self.iter();
        match (it.next(), it.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in code order.
    pub fn iter(self) -> impl Iterator<Item = ChannelKind> {
        ChannelKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl From<ChannelKind> for ChannelKinds {
    fn from(kind: ChannelKind) -> Self {
        ChannelKinds::NONE.with(kind)
    }
}

impl FromIterator<ChannelKind> for ChannelKinds {
    fn from_iter<I: IntoIterator<Item = ChannelKind>>(iter: I) -> Self {
        iter.into_iter()
            .fold(ChannelKinds::NONE, ChannelKinds::with)
    }
}

impl fmt::Debug for ChannelKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// HELLO payload (§3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// What the connector intends / the acceptor echoes.
    pub channel_kind: ChannelKind,
    /// The sender's heartbeat interval in milliseconds.
    pub heartbeat_interval_ms: u32,
}

/// One RTF frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Frame {
    /// HELLO (type 0).
    Hello(Hello),
    /// DATA (type 1): one whole user message.
    Data {
        /// Flag U (unordered delivery requested).
        unordered: bool,
        /// SCTP-equivalent stream id.
        stream: u16,
        /// Payload protocol identifier.
        ppid: u32,
        /// The user message.
        payload: Bytes,
    },
    /// HEARTBEAT (type 2) with its 8 opaque bytes.
    Heartbeat([u8; HEARTBEAT_PAYLOAD_LEN]),
    /// HEARTBEAT_ACK (type 3), echoing a HEARTBEAT's bytes.
    HeartbeatAck([u8; HEARTBEAT_PAYLOAD_LEN]),
    /// An extension frame (type 0x80..=0xff); its payload was skipped, not kept.
    Extension {
        /// The frame type.
        frame_type: u8,
        /// Frame Length from the header (header included).
        length: u32,
    },
}

impl Frame {
    /// The number of bytes [`Frame::encode`] writes (for an extension: `length`, at least 12).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Frame::Hello(_) => HELLO_PAYLOAD_LEN,
                Frame::Data { payload, .. } => payload.len(),
                Frame::Heartbeat(_) | Frame::HeartbeatAck(_) => HEARTBEAT_PAYLOAD_LEN,
                Frame::Extension { length, .. } => (*length as usize).saturating_sub(HEADER_LEN),
            }
    }

    /// Appends the wire form of the frame to `buf`. An extension frame is written with a
    /// zero-filled payload of `length - 12` bytes. A DATA payload longer than
    /// `u32::MAX - 12` bytes cannot be framed: callers check [`FrameDecoder`]-side limits
    /// first (see [`RtfConnection::send`]); such a payload is written with a saturated length.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        match self {
            Frame::Hello(hello) => {
                buf.extend_from_slice(&header(
                    frame_type::HELLO,
                    0,
                    0,
                    (HEADER_LEN + HELLO_PAYLOAD_LEN) as u32,
                    0,
                ));
                buf.extend_from_slice(&MAGIC.to_be_bytes());
                buf.extend_from_slice(&[VERSION, hello.channel_kind.code(), 0, 0]);
                buf.extend_from_slice(&hello.heartbeat_interval_ms.to_be_bytes());
            }
            Frame::Data {
                unordered,
                stream,
                ppid,
                payload,
            } => {
                buf.extend_from_slice(&encode_data_header(
                    *unordered,
                    *stream,
                    *ppid,
                    payload.len(),
                ));
                buf.extend_from_slice(payload);
            }
            Frame::Heartbeat(b) | Frame::HeartbeatAck(b) => {
                let t = if matches!(self, Frame::Heartbeat(_)) {
                    frame_type::HEARTBEAT
                } else {
                    frame_type::HEARTBEAT_ACK
                };
                buf.extend_from_slice(&header(
                    t,
                    0,
                    0,
                    (HEADER_LEN + HEARTBEAT_PAYLOAD_LEN) as u32,
                    0,
                ));
                buf.extend_from_slice(b);
            }
            Frame::Extension { frame_type, length } => {
                let length = (*length).max(HEADER_LEN as u32);
                buf.extend_from_slice(&header(*frame_type, 0, 0, length, 0));
                buf.resize(buf.len() + (length as usize - HEADER_LEN), 0);
            }
        }
    }

    /// The wire form of the frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }
}

fn header(frame_type: u8, flags: u8, stream: u16, length: u32, ppid: u32) -> [u8; HEADER_LEN] {
    let s = stream.to_be_bytes();
    let l = length.to_be_bytes();
    let p = ppid.to_be_bytes();
    [
        frame_type, flags, s[0], s[1], l[0], l[1], l[2], l[3], p[0], p[1], p[2], p[3],
    ]
}

/// The 12-byte header of a DATA frame with a payload of `payload_len` bytes (the payload
/// follows it unchanged). Lengths beyond `u32::MAX - 12` saturate; [`RtfConnection::send`]
/// rejects them before they get here.
pub fn encode_data_header(
    unordered: bool,
    stream: u16,
    ppid: u32,
    payload_len: usize,
) -> [u8; HEADER_LEN] {
    let length = u32::try_from(payload_len.saturating_add(HEADER_LEN)).unwrap_or(u32::MAX);
    let flags = if unordered { FLAG_UNORDERED } else { 0 };
    header(frame_type::DATA, flags, stream, length, ppid)
}

/// Why an RTF byte stream or connection was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RtfError {
    /// Frame Length below the 12-byte header.
    FrameTooShort {
        /// The Frame Length field.
        length: u32,
    },
    /// Frame Length above the configured maximum.
    FrameTooLong {
        /// The Frame Length field.
        length: u32,
        /// The configured maximum frame length.
        max: usize,
    },
    /// Frame type 0x04..=0x7f (reserved).
    ReservedFrameType(u8),
    /// A HELLO or HEARTBEAT(_ACK) whose payload does not have its fixed size.
    BadPayloadLength {
        /// The frame type.
        frame_type: u8,
        /// The payload length found.
        length: usize,
    },
    /// HELLO magic is not `"RSPT"`.
    BadMagic(u32),
    /// HELLO version other than 1.
    UnsupportedVersion(u8),
    /// HELLO channel kind not 1..=4.
    UnknownChannelKind(u8),
    /// HELLO announcing a heartbeat interval of 0 ms.
    ZeroHeartbeatInterval,
    /// The byte stream ended inside a frame (`missing` more bytes were expected).
    Truncated {
        /// Bytes still missing from the frame in progress.
        missing: usize,
    },
    /// The first frame received was not a HELLO.
    HelloExpected {
        /// Type of the frame received instead.
        frame_type: u8,
    },
    /// A second HELLO.
    DuplicateHello,
    /// The peer's channel kind is not one we serve / not the one we asked for.
    ChannelKindRejected {
        /// The kind the peer announced.
        peer: ChannelKind,
    },
    /// A message too long to frame under the configured maximum.
    MessageTooLong {
        /// Payload length.
        length: usize,
        /// Largest payload allowed.
        max: usize,
    },
    /// The connection is closed (dead, shut down or after a protocol error).
    Closed,
}

impl fmt::Display for RtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtfError::FrameTooShort { length } => write!(f, "frame length {length} < 12"),
            RtfError::FrameTooLong { length, max } => {
                write!(f, "frame length {length} above maximum {max}")
            }
            RtfError::ReservedFrameType(t) => write!(f, "reserved frame type {t:#04x}"),
            RtfError::BadPayloadLength { frame_type, length } => {
                write!(
                    f,
                    "frame type {frame_type:#04x} with payload length {length}"
                )
            }
            RtfError::BadMagic(m) => write!(f, "bad HELLO magic {m:#010x}"),
            RtfError::UnsupportedVersion(v) => write!(f, "unsupported RTF version {v}"),
            RtfError::UnknownChannelKind(k) => write!(f, "unknown channel kind {k}"),
            RtfError::ZeroHeartbeatInterval => write!(f, "HELLO heartbeat interval 0"),
            RtfError::Truncated { missing } => {
                write!(f, "stream ended inside a frame ({missing} bytes missing)")
            }
            RtfError::HelloExpected { frame_type } => {
                write!(f, "first frame has type {frame_type:#04x}, not HELLO")
            }
            RtfError::DuplicateHello => write!(f, "second HELLO"),
            RtfError::ChannelKindRejected { peer } => write!(f, "channel kind {peer:?} rejected"),
            RtfError::MessageTooLong { length, max } => {
                write!(f, "message of {length} bytes above maximum {max}")
            }
            RtfError::Closed => write!(f, "connection closed"),
        }
    }
}

impl std::error::Error for RtfError {}

/// Payload bytes reserved as soon as a frame header arrives; larger frames grow as their
/// bytes arrive.
const PREALLOCATE_MAX: usize = 64 * 1024;

/// The length of the run of complete frames at the start of `data` that a decoder buffers
/// (the first frame of any type except an extension, then DATA frames), each no longer
/// than `max_frame_len`; 0 when the first frame is not complete.
fn complete_frames_len(data: &[u8], max_frame_len: usize) -> usize {
    let mut off = 0;
    while let Some(&[ty, _, _, _, a, b, c, d]) = data.get(off..off + 8) {
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        let buffered = if off == 0 {
            ty < frame_type::FIRST_EXTENSION
        } else {
            ty == frame_type::DATA
        };
        if !buffered || len < HEADER_LEN || len > max_frame_len || len > data.len() - off {
            break;
        }
        off += len;
    }
    off
}

/// Incremental RTF decoder: feed arbitrary chunks, get whole frames.
///
/// Memory is bounded: at most one frame in progress is buffered, and a frame longer than
/// the maximum is rejected from its header alone. At a frame boundary the decoder holds no
/// buffer and no state beyond its limit: 16 bytes, so that the many idle connections of a
/// registrar keep one null pointer for their frame in progress. Extension payloads are
/// skipped without being buffered. After an error the decoder stays failed and returns
/// the same error.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_len: u32,
    /// The frame in progress (or the error the decoder failed with); `None` at a frame
    /// boundary. A read of whole frames decodes them without it.
    partial: Option<Box<Partial>>,
}

/// A [`FrameDecoder`]'s state between frame boundaries.
#[derive(Debug, Default)]
struct Partial {
    /// Header bytes, then (for buffered frames) the whole frame.
    buf: BytesMut,
    /// Total length of the frame in progress, once its header is complete.
    /// (Non-zero: a frame is at least a header long; the niche keeps the field 4 bytes.)
    expected: Option<NonZeroU32>,
    /// Extension payload bytes still to skip.
    skip: u32,
    /// Header of the extension frame being skipped.
    skipping: Option<(u8, NonZeroU32)>,
    /// Set once the decoder has failed.
    failed: Option<RtfError>,
}

impl Partial {
    /// No frame in progress.
    fn at_boundary(&self) -> bool {
        self.buf.is_empty() && self.skipping.is_none()
    }

    /// At a frame boundary and not failed: nothing to keep.
    fn is_idle(&self) -> bool {
        self.at_boundary() && self.failed.is_none()
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to `max_frame_len` bytes (header included); raised to
    /// at least 12 + 65,536 so that every conformant payload is accepted.
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder {
            max_frame_len: frame_limit(max_frame_len),
            partial: None,
        }
    }

    /// The maximum frame length (header included) in force.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len as usize
    }

    /// True when no frame is in progress (the stream may end here).
    pub fn is_at_boundary(&self) -> bool {
        self.partial.as_deref().is_none_or(Partial::at_boundary)
    }

    /// Bytes currently buffered for the frame in progress.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.buf.len())
    }

    /// Call at end of stream: an error if the stream ended inside a frame.
    pub fn finish(&self) -> Result<(), RtfError> {
        Partial::finish(self.partial.as_deref())
    }

    /// Decodes all of `data`, calling `out` for each complete frame, and buffers the rest of
    /// a frame in progress. Stops at the first error (frames before it were delivered).
    pub fn decode(&mut self, data: &[u8], out: impl FnMut(Frame)) -> Result<(), RtfError> {
        Partial::decode_in(&mut self.partial, self.max_frame_len, data, out)
    }

    /// Convenience: decodes `data` and appends the frames to `frames`.
    pub fn decode_into(&mut self, data: &[u8], frames: &mut Vec<Frame>) -> Result<(), RtfError> {
        self.decode(data, |f| frames.push(f))
    }
}

/// A frame length limit as decoders keep it: at least 12 + 65,536, at most `u32::MAX`.
fn frame_limit(max_frame_len: usize) -> u32 {
    u32::try_from(max_frame_len.max(HEADER_LEN + MIN_ACCEPTED_PAYLOAD)).unwrap_or(u32::MAX)
}

impl Partial {
    /// [`FrameDecoder::decode`] on the state `slot` (`None` at a frame boundary), with the
    /// frame length limit `max_frame_len`: a decoder's whole work, shared with
    /// [`RtfConnection`], which keeps the same two fields without a decoder's padding.
    fn decode_in(
        slot: &mut Option<Box<Partial>>,
        max_frame_len: u32,
        data: &[u8],
        out: impl FnMut(Frame),
    ) -> Result<(), RtfError> {
        match slot {
            Some(p) => {
                let r = p.decode(max_frame_len, data, out);
                if p.is_idle() {
                    *slot = None;
                }
                r
            }
            None => {
                // At a boundary: decode in a state on the stack, box it only if a frame
                // is left in progress (or the input failed).
                let mut p = Partial::default();
                let r = p.decode(max_frame_len, data, out);
                if !p.is_idle() {
                    *slot = Some(Box::new(p));
                }
                r
            }
        }
    }

    /// [`FrameDecoder::finish`] on the state `p` (`None` at a frame boundary).
    fn finish(p: Option<&Partial>) -> Result<(), RtfError> {
        let Some(p) = p else {
            return Ok(());
        };
        if let Some(e) = &p.failed {
            return Err(e.clone());
        }
        if p.at_boundary() {
            return Ok(());
        }
        let missing = match p.expected {
            Some(total) => (total.get() as usize).saturating_sub(p.buf.len()),
            None if p.skipping.is_some() => p.skip as usize,
            None => HEADER_LEN - p.buf.len(),
        };
        Err(RtfError::Truncated { missing })
    }

    /// [`FrameDecoder::decode`] on this state, with the frame length limit `max_frame_len`.
    fn decode(
        &mut self,
        max_frame_len: u32,
        mut data: &[u8],
        mut out: impl FnMut(Frame),
    ) -> Result<(), RtfError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            if let Some((frame_type, length)) = self.skipping {
                let n = (self.skip as usize).min(data.len());
                self.skip -= n as u32;
                data = data.get(n..).unwrap_or_default();
                if self.skip > 0 {
                    return Ok(());
                }
                self.skipping = None;
                out(Frame::Extension {
                    frame_type,
                    length: length.get(),
                });
                continue;
            }
            let want = self.expected.map_or(HEADER_LEN, |e| e.get() as usize);
            if self.buf.len() < want {
                if data.is_empty() {
                    if self.buf.is_empty() {
                        // At a frame boundary: keep no memory between frames. The frames
                        // split off share this buffer's allocation (even when no capacity
                        // is left): an idle connection would keep the last read alive.
                        self.buf = BytesMut::new();
                    }
                    return Ok(());
                }
                let n = (want - self.buf.len()).min(data.len());
                if self.buf.capacity() - self.buf.len() < n {
                    // Grow to the frame's exact size: never beyond the frame length limit.
                    // Frames that start here and are all in `data` get one buffer for all
                    // of them (each frame is then split off it: one allocation per read,
                    // not one for each header and another for each frame's rest).
                    let whole = if self.expected.is_none() && self.buf.is_empty() {
                        complete_frames_len(data, max_frame_len as usize)
                    } else {
                        0
                    };
                    self.buf.reserve(whole.max(want - self.buf.len()));
                }
                let (head, rest) = data.split_at(n);
                self.buf.extend_from_slice(head);
                data = rest;
                if self.buf.len() < want {
                    return Ok(());
                }
            }
            let result = match self.expected.take() {
                None => self.parse_header(max_frame_len).map(|()| None),
                Some(total) => {
                    parse_frame(self.buf.split_to(total.get() as usize).freeze()).map(Some)
                }
            };
            match result {
                Ok(Some(frame)) => out(frame),
                Ok(None) => {}
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// Validates a complete 12-byte header in `buf`; sets `expected` or starts a skip.
    fn parse_header(&mut self, max_frame_len: u32) -> Result<(), RtfError> {
        let h: [u8; HEADER_LEN] = match self.buf.get(..HEADER_LEN).map(<[u8; HEADER_LEN]>::try_from)
        {
            Some(Ok(h)) => h,
            _ => {
                return Err(RtfError::Truncated {
                    missing: HEADER_LEN,
                });
            }
        };
        let frame_type = h[0];
        let length = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        if (length as usize) < HEADER_LEN {
            return Err(RtfError::FrameTooShort { length });
        }
        if length > max_frame_len {
            return Err(RtfError::FrameTooLong {
                length,
                max: max_frame_len as usize,
            });
        }
        match frame_type {
            frame_type::HELLO..=frame_type::HEARTBEAT_ACK => {
                let payload = length as usize - HEADER_LEN;
                let fixed = match frame_type {
                    frame_type::HELLO => Some(HELLO_PAYLOAD_LEN),
                    frame_type::HEARTBEAT | frame_type::HEARTBEAT_ACK => {
                        Some(HEARTBEAT_PAYLOAD_LEN)
                    }
                    _ => None,
                };
                if let Some(fixed) = fixed
                    && payload != fixed
                {
                    return Err(RtfError::BadPayloadLength {
                        frame_type,
                        length: payload,
                    });
                }
                // Reserve for small frames only: a bare header must not make us allocate
                // a large frame's worth of memory before its bytes arrive.
                self.buf.reserve(payload.min(PREALLOCATE_MAX));
                self.expected = NonZeroU32::new(length);
                Ok(())
            }
            t if t >= frame_type::FIRST_EXTENSION => {
                self.buf.clear();
                self.skip = length.saturating_sub(HEADER_LEN as u32);
                self.skipping = NonZeroU32::new(length).map(|l| (t, l));
                Ok(())
            }
            t => Err(RtfError::ReservedFrameType(t)),
        }
    }
}

/// Parses one complete, header-validated frame.
fn parse_frame(frame: Bytes) -> Result<Frame, RtfError> {
    let (h, payload) = match (frame.get(..HEADER_LEN), frame.get(HEADER_LEN..)) {
        (Some(h), Some(_)) => (h, frame.slice(HEADER_LEN..)),
        _ => {
            return Err(RtfError::Truncated {
                missing: HEADER_LEN.saturating_sub(frame.len()),
            });
        }
    };
    let h: [u8; HEADER_LEN] = h.try_into().map_err(|_| RtfError::Truncated {
        missing: HEADER_LEN,
    })?;
    let frame_type = h[0];
    let flags = h[1];
    let stream = u16::from_be_bytes([h[2], h[3]]);
    let ppid = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    match frame_type {
        frame_type::HELLO => {
            let p: [u8; HELLO_PAYLOAD_LEN] =
                payload
                    .as_ref()
                    .try_into()
                    .map_err(|_| RtfError::BadPayloadLength {
                        frame_type,
                        length: payload.len(),
                    })?;
            let magic = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            if magic != MAGIC {
                return Err(RtfError::BadMagic(magic));
            }
            if p[4] != VERSION {
                return Err(RtfError::UnsupportedVersion(p[4]));
            }
            let channel_kind =
                ChannelKind::from_code(p[5]).ok_or(RtfError::UnknownChannelKind(p[5]))?;
            let heartbeat_interval_ms = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            if heartbeat_interval_ms == 0 {
                return Err(RtfError::ZeroHeartbeatInterval);
            }
            Ok(Frame::Hello(Hello {
                channel_kind,
                heartbeat_interval_ms,
            }))
        }
        frame_type::DATA => Ok(Frame::Data {
            unordered: flags & FLAG_UNORDERED != 0,
            stream,
            ppid,
            payload,
        }),
        frame_type::HEARTBEAT | frame_type::HEARTBEAT_ACK => {
            let b: [u8; HEARTBEAT_PAYLOAD_LEN] =
                payload
                    .as_ref()
                    .try_into()
                    .map_err(|_| RtfError::BadPayloadLength {
                        frame_type,
                        length: payload.len(),
                    })?;
            Ok(if frame_type == frame_type::HEARTBEAT {
                Frame::Heartbeat(b)
            } else {
                Frame::HeartbeatAck(b)
            })
        }
        t => Err(RtfError::ReservedFrameType(t)),
    }
}

/// Settings of [`RtfConnection`]s: the same for every connection of one endpoint, so a
/// connection does not keep them; the caller hands them to each call that needs them
/// (always the same settings for one connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtfConfig {
    /// Our heartbeat interval, announced in our HELLO (ms; used as at least 1 and at most
    /// [`MAX_HEARTBEAT_INTERVAL_MS`]).
    pub heartbeat_interval_ms: u32,
    /// Largest frame (header + payload) we accept and send (used as at least 65,548).
    pub max_frame_len: usize,
}

impl RtfConfig {
    /// The heartbeat interval in force (ms): at least 1, at most
    /// [`MAX_HEARTBEAT_INTERVAL_MS`].
    pub fn heartbeat_interval(&self) -> u32 {
        self.heartbeat_interval_ms
            .clamp(1, MAX_HEARTBEAT_INTERVAL_MS)
    }

    /// The frame length limit in force ([`FrameDecoder::max_frame_len`]).
    fn frame_limit(&self) -> u32 {
        frame_limit(self.max_frame_len)
    }

    /// Largest payload [`RtfConnection::send`] accepts.
    pub fn max_payload_len(&self) -> usize {
        self.frame_limit() as usize - HEADER_LEN
    }
}

impl Default for RtfConfig {
    fn default() -> Self {
        RtfConfig {
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// What happened on an [`RtfConnection`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtfEvent {
    /// The peer's HELLO was accepted: the connection is up (SCTP COMM_UP).
    Up {
        /// The negotiated channel kind.
        channel_kind: ChannelKind,
        /// The heartbeat interval the peer announced (ms).
        peer_heartbeat_interval_ms: u32,
    },
    /// One user message.
    Data {
        /// Payload protocol identifier.
        ppid: u32,
        /// Stream id.
        stream: u16,
        /// Flag U of the frame.
        unordered: bool,
        /// The message.
        payload: Bytes,
    },
    /// The peer ended its byte stream at a frame boundary (graceful shutdown). Frames still
    /// queued for transmission may be flushed; nothing more is received.
    PeerShutdown,
    /// Nothing was received for 3 × the peer's interval (before the peer's HELLO: 3 × our
    /// own interval since the connection was created). The connection is closed.
    Dead,
    /// The peer violated the protocol; close the connection with RST (abort).
    ProtocolError(RtfError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Connector(ChannelKind),
    Acceptor(ChannelKinds),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitHello,
    Up,
    Closed,
}

/// Sans-IO RTF connection: HELLO-first enforcement in both directions, heartbeats when idle,
/// dead-peer detection. Time is a plain `u64` of microseconds since any epoch the caller
/// chooses; the connection never reads a clock.
///
/// Driving it: after creation and after every `handle_*`/`send` call, write out
/// [`poll_transmit`](Self::poll_transmit) chunks in order, take
/// [`poll_event`](Self::poll_event)s, and arm a timer for [`poll_timeout`](Self::poll_timeout).
/// Calls that need the settings take the endpoint's [`RtfConfig`] (the one the connection
/// was made with).
///
/// An idle connection is 24 bytes (a server holds one per client): the settings stay with
/// the caller, and the times it keeps (last input, last output) are milliseconds modulo
/// 2^32, read back against the `now` of each call; they are never more than
/// [`DEAD_AFTER_INTERVALS`] × [`MAX_HEARTBEAT_INTERVAL_MS`] old while the connection is
/// open and its timeouts are handled, well within the 2^31 ms that this reading allows.
///
/// What it holds only while it has any of it (a frame in progress, frames to write, events
/// to report: [`RtfPending`]) lies in its store `S`: by default a box that exists only
/// then; a caller that has an out-of-line part of its own for each connection (its output
/// queue, say) can keep them there too ([`RtfStore`]), one pointer for both.
#[derive(Debug)]
pub struct RtfConnection<S: RtfStore = Option<Box<RtfPending>>> {
    /// The peer's heartbeat interval from its HELLO (ms; meaningful with [`PEER_HELLO`]).
    peer_heartbeat_interval_ms: u32,
    /// Its role, state and flags ([`Bits`]).
    bits: Bits,
    /// The frame in progress, frames to write and events to report, out of line and only
    /// while there are any ([`RtfPending`]): an idle connection keeps one null pointer for
    /// the three (with the default store), and is 24 bytes.
    store: S,
    /// Before the peer's HELLO: when the connection was made; from the HELLO on: when
    /// something last arrived (the dead-peer timer's base either way). A [`Stamp`].
    last_received: Stamp,
    /// When something was last sent (the heartbeat timer's base).
    last_sent: Stamp,
}

/// A time as an [`RtfConnection`] keeps it: milliseconds modulo 2^32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(u32);

impl Stamp {
    fn new(now_us: u64) -> Stamp {
        Stamp((now_us / 1000) as u32)
    }

    /// The time (µs, whole milliseconds) this stamp stands for: the one within 2^31 ms of
    /// `now_us`.
    fn at(self, now_us: u64) -> u64 {
        let now_ms = now_us / 1000;
        let diff = self.0.wrapping_sub(now_ms as u32) as i32;
        now_ms
            .saturating_add_signed(i64::from(diff))
            .saturating_mul(1000)
    }

    /// Moves the stamp to `now_us` unless it already lies later.
    fn advance(&mut self, now_us: u64) {
        let now = Stamp::new(now_us);
        if (now.0.wrapping_sub(self.0) as i32) > 0 {
            *self = now;
        }
    }
}

/// An [`RtfConnection`]'s role, state and flags in 16 bits: the [`ChannelKinds`] of its
/// role in the low byte (before the peer's HELLO the kinds we accept; from it on, the one
/// agreed: an acceptor's set narrows to the connector's kind), then [`CONNECTOR`], the
/// [`State`] in two bits, [`HELLO_SENT`] and [`PEER_HELLO`]. A plain integer, so that the
/// connection offers its embedder no spare values of its own (an enum holding it keeps its
/// variant in the embedder's field instead: the transport's I/O state stays 32 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bits(u16);

/// [`Bits`]: the role is the connector's (its kind the one in the set).
const CONNECTOR: u16 = 1 << 8;
const STATE_SHIFT: u16 = 9;
const STATE_MASK: u16 = 3 << STATE_SHIFT;
/// [`Bits`]: our HELLO is queued or sent.
const HELLO_SENT: u16 = 1 << 11;
/// [`Bits`]: the peer's HELLO was accepted.
const PEER_HELLO: u16 = 1 << 12;

impl Bits {
    fn new(role: Role) -> Bits {
        let mut b = Bits(0);
        b.set_role(role);
        b
    }

    fn role(self) -> Role {
        let kinds = ChannelKinds(self.0 as u8);
        match kinds.single() {
            Some(kind) if self.has(CONNECTOR) => Role::Connector(kind),
            _ => Role::Acceptor(kinds),
        }
    }

    fn set_role(&mut self, role: Role) {
        let (kinds, connector) = match role {
            Role::Connector(kind) => (ChannelKinds::from(kind), CONNECTOR),
            Role::Acceptor(kinds) => (kinds, 0),
        };
        self.0 = (self.0 & !(0xff | CONNECTOR)) | u16::from(kinds.0) | connector;
    }

    fn state(self) -> State {
        match (self.0 & STATE_MASK) >> STATE_SHIFT {
            0 => State::AwaitHello,
            1 => State::Up,
            _ => State::Closed,
        }
    }

    fn set_state(&mut self, state: State) {
        let code = match state {
            State::AwaitHello => 0,
            State::Up => 1,
            State::Closed => 2,
        };
        self.0 = (self.0 & !STATE_MASK) | (code << STATE_SHIFT);
    }

    fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    fn set(&mut self, flag: u16) {
        self.0 |= flag;
    }
}

/// What an [`RtfConnection`] holds only while it has any of it: a frame in progress,
/// frames to write, events to report. It lies in the connection's [`RtfStore`].
#[derive(Debug, Default)]
pub struct RtfPending {
    /// The decoder's frame in progress ([`FrameDecoder`]'s state, kept without the
    /// decoder's own fields).
    partial: Option<Box<Partial>>,
    /// Chunks for [`RtfConnection::poll_transmit`].
    transmit: VecDeque<Bytes>,
    /// Events for [`RtfConnection::poll_event`].
    events: VecDeque<RtfEvent>,
}

impl RtfPending {
    /// True when it holds nothing (its store may let it go).
    pub fn is_empty(&self) -> bool {
        self.partial.is_none() && self.transmit.is_empty() && self.events.is_empty()
    }

    /// Empties it for reuse by another connection, keeping the memory of its queues only
    /// while each has room for at most `keep_slots` entries.
    pub fn reset(&mut self, keep_slots: usize) {
        self.partial = None;
        self.transmit.clear();
        self.events.clear();
        if self.transmit.capacity() > keep_slots {
            self.transmit = VecDeque::new();
        }
        if self.events.capacity() > keep_slots {
            self.events = VecDeque::new();
        }
    }
}

/// Where an [`RtfConnection`] keeps its [`RtfPending`] parts. The connection asks for them
/// when it has something to keep and says when they hold nothing any more; the store keeps
/// them (and may keep the caller's own things beside them) as it likes.
pub trait RtfStore {
    /// The pending parts, if the store has them.
    fn pending(&self) -> Option<&RtfPending>;
    /// The pending parts, if the store has them, to change.
    fn pending_mut(&mut self) -> Option<&mut RtfPending>;
    /// The pending parts, made (empty) if the store had none.
    fn make_pending(&mut self) -> &mut RtfPending;
    /// The pending parts hold nothing: the store may let them go (and must keep them, or
    /// make them again, empty: the connection does not look at them until it needs them).
    fn pending_emptied(&mut self);
}

/// The default store: a box that exists while the parts hold anything.
impl RtfStore for Option<Box<RtfPending>> {
    fn pending(&self) -> Option<&RtfPending> {
        self.as_deref()
    }

    fn pending_mut(&mut self) -> Option<&mut RtfPending> {
        self.as_deref_mut()
    }

    fn make_pending(&mut self) -> &mut RtfPending {
        self.get_or_insert_with(Box::default)
    }

    fn pending_emptied(&mut self) {
        *self = None;
    }
}

/// DATA payloads up to this size are copied behind their header into one chunk; longer ones
/// are handed out as a separate chunk, without copying.
const COALESCE_MAX: usize = 4096;

impl RtfConnection {
    /// The connecting side: sends HELLO with `channel_kind` at once and expects the acceptor
    /// to echo the same kind.
    pub fn connector(channel_kind: ChannelKind, config: RtfConfig, now_us: u64) -> Self {
        Self::connector_in(channel_kind, config, now_us, None)
    }

    /// The accepting side, serving `kinds`. With exactly one kind it sends its HELLO at once;
    /// with several it echoes the connector's kind when the connector's HELLO arrives. A kind
    /// outside `kinds` is a protocol error.
    pub fn acceptor(kinds: ChannelKinds, config: RtfConfig, now_us: u64) -> Self {
        Self::acceptor_in(kinds, config, now_us, None)
    }
}

impl<S: RtfStore> RtfConnection<S> {
    /// [`connector`](RtfConnection::connector), keeping its pending parts in `store`.
    pub fn connector_in(
        channel_kind: ChannelKind,
        config: RtfConfig,
        now_us: u64,
        store: S,
    ) -> Self {
        let mut c = Self::new(Role::Connector(channel_kind), now_us, store);
        c.queue_hello(&config, channel_kind);
        c
    }

    /// [`acceptor`](RtfConnection::acceptor), keeping its pending parts in `store`.
    pub fn acceptor_in(kinds: ChannelKinds, config: RtfConfig, now_us: u64, store: S) -> Self {
        let mut c = Self::new(Role::Acceptor(kinds), now_us, store);
        if let Some(kind) = kinds.single() {
            c.queue_hello(&config, kind);
        }
        c
    }

    fn new(role: Role, now_us: u64, store: S) -> Self {
        RtfConnection {
            bits: Bits::new(role),
            peer_heartbeat_interval_ms: 0,
            store,
            last_received: Stamp::new(now_us),
            last_sent: Stamp::new(now_us),
        }
    }

    /// The store of its pending parts.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store of its pending parts, to change what the caller keeps there (the pending
    /// parts themselves are the connection's).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The pending parts, made if there were none (give them back with
    /// [`settle`](Self::settle) once they may be empty).
    fn pending(&mut self) -> &mut RtfPending {
        self.store.make_pending()
    }

    /// Tells the store once the pending parts hold nothing.
    fn settle(&mut self) {
        if self.store.pending().is_some_and(RtfPending::is_empty) {
            self.store.pending_emptied();
        }
    }

    /// Takes the events not yet reported (leaving none).
    fn take_events(&mut self) -> VecDeque<RtfEvent> {
        let events = self
            .store
            .pending_mut()
            .map(|p| core::mem::take(&mut p.events))
            .unwrap_or_default();
        self.settle();
        events
    }

    fn transmit_is_empty(&self) -> bool {
        self.store.pending().is_none_or(|p| p.transmit.is_empty())
    }

    /// Drops every chunk not yet handed out.
    fn clear_transmit(&mut self) {
        if let Some(p) = self.store.pending_mut() {
            p.transmit = VecDeque::new();
        }
        self.settle();
    }

    fn queue_hello(&mut self, config: &RtfConfig, channel_kind: ChannelKind) {
        let hello = Frame::Hello(Hello {
            channel_kind,
            heartbeat_interval_ms: config.heartbeat_interval(),
        });
        self.pending().transmit.push_back(hello.to_bytes());
        self.bits.set(HELLO_SENT);
    }

    /// True after the peer's HELLO was accepted and before the connection closed.
    pub fn is_up(&self) -> bool {
        self.bits.state() == State::Up
    }

    /// True once the connection is dead, shut down by the peer, or failed.
    pub fn is_closed(&self) -> bool {
        self.bits.state() == State::Closed
    }

    /// The peer's HELLO, once received.
    pub fn peer_hello(&self) -> Option<Hello> {
        if !self.bits.has(PEER_HELLO) {
            return None;
        }
        let channel_kind = match self.bits.role() {
            Role::Connector(kind) => kind,
            Role::Acceptor(kinds) => kinds.single()?,
        };
        Some(Hello {
            channel_kind,
            heartbeat_interval_ms: self.peer_heartbeat_interval_ms,
        })
    }

    /// Queues one user message as a DATA frame. Allowed before the peer's HELLO (it then
    /// follows our HELLO); refused once the connection is closed or when too long.
    pub fn send(
        &mut self,
        config: &RtfConfig,
        ppid: u32,
        stream: u16,
        unordered: bool,
        payload: Bytes,
    ) -> Result<(), RtfError> {
        if self.bits.state() == State::Closed {
            return Err(RtfError::Closed);
        }
        if payload.len() > config.max_payload_len() {
            return Err(RtfError::MessageTooLong {
                length: payload.len(),
                max: config.max_payload_len(),
            });
        }
        let header = encode_data_header(unordered, stream, ppid, payload.len());
        if payload.len() <= COALESCE_MAX {
            let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
            buf.extend_from_slice(&header);
            buf.extend_from_slice(&payload);
            self.pending().transmit.push_back(buf.freeze());
        } else {
            let transmit = &mut self.pending().transmit;
            transmit.push_back(Bytes::copy_from_slice(&header));
            transmit.push_back(payload);
        }
        Ok(())
    }

    /// Like [`send`](Self::send), but writes the DATA frame (header and payload) straight
    /// onto the end of `out`, the caller's own output buffer, instead of queueing it: no
    /// allocation per message. The frame belongs after every chunk
    /// [`poll_transmit`](Self::poll_transmit) handed out before, so the caller must have
    /// taken them all first (`has_transmit()` false); otherwise nothing is written and the
    /// message is queued as by [`send`](Self::send). The frame counts as sent at `now_us`
    /// (idle-heartbeat timer).
    #[allow(clippy::too_many_arguments)] // `send`'s, with the time and the output buffer
    pub fn send_into(
        &mut self,
        config: &RtfConfig,
        now_us: u64,
        ppid: u32,
        stream: u16,
        unordered: bool,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), RtfError> {
        if self.bits.state() == State::Closed {
            return Err(RtfError::Closed);
        }
        if payload.len() > config.max_payload_len() {
            return Err(RtfError::MessageTooLong {
                length: payload.len(),
                max: config.max_payload_len(),
            });
        }
        if !self.transmit_is_empty() {
            return self.send(
                config,
                ppid,
                stream,
                unordered,
                Bytes::copy_from_slice(payload),
            );
        }
        out.extend_from_slice(&encode_data_header(unordered, stream, ppid, payload.len()));
        out.extend_from_slice(payload);
        self.last_sent.advance(now_us);
        Ok(())
    }

    /// Bytes received from the peer, at time `now_us`. Frames become events; a protocol
    /// violation closes the connection with [`RtfEvent::ProtocolError`].
    pub fn handle_input(&mut self, config: &RtfConfig, now_us: u64, data: &[u8]) {
        let mut events = self.take_events();
        self.input(config, now_us, data, &mut events);
        if !events.is_empty() {
            self.pending().events = events;
        }
    }

    /// Decodes `data`; the events go to `events`.
    fn input(
        &mut self,
        config: &RtfConfig,
        now_us: u64,
        data: &[u8],
        events: &mut VecDeque<RtfEvent>,
    ) {
        if self.bits.state() == State::Closed || data.is_empty() {
            return;
        }
        // Frames are handled as they are decoded (the decoder's state is moved out
        // meanwhile): no per-connection frame list to keep.
        let mut partial = self.store.pending_mut().and_then(|p| p.partial.take());
        let result = Partial::decode_in(&mut partial, config.frame_limit(), data, |frame| {
            if self.bits.state() != State::Closed {
                match self.handle_frame(config, frame) {
                    Ok(Some(ev)) => events.push_back(ev),
                    Ok(None) => {}
                    Err(e) => events.push_back(self.fail(e)),
                }
            }
        });
        if partial.is_some() {
            self.pending().partial = partial;
        } else {
            self.settle();
        }
        if self.bits.state() == State::Up {
            // Up (the peer's HELLO may have been in this input): the dead-peer timer runs
            // from now; before that it runs from the connection's creation.
            self.last_received.advance(now_us);
        }
        if let Err(e) = result
            && self.bits.state() != State::Closed
        {
            events.push_back(self.fail(e));
        }
    }

    /// [`handle_input`](Self::handle_input), with the events appended to the caller's
    /// `events` (after any the connection still held) instead of the connection's own queue:
    /// a caller driving many connections shares one event buffer among them, and idle
    /// connections keep no event memory. [`poll_event`](Self::poll_event) still returns
    /// events from the other inputs (`handle_eof`, `handle_timeout`).
    pub fn handle_input_into(
        &mut self,
        config: &RtfConfig,
        now_us: u64,
        data: &[u8],
        events: &mut VecDeque<RtfEvent>,
    ) {
        events.extend(self.take_events());
        self.input(config, now_us, data, events);
    }

    /// The peer ended its byte stream (read returned 0). At a frame boundary this is a
    /// graceful shutdown ([`RtfEvent::PeerShutdown`]); inside a frame it is a protocol error
    /// (treat as abort).
    pub fn handle_eof(&mut self, _now_us: u64) {
        if self.bits.state() == State::Closed {
            return;
        }
        let partial = self.store.pending().and_then(|p| p.partial.as_deref());
        let e = match Partial::finish(partial) {
            Ok(()) if self.bits.state() == State::Up => {
                self.bits.set_state(State::Closed);
                self.pending().events.push_back(RtfEvent::PeerShutdown);
                return;
            }
            // The stream ended before the peer's HELLO.
            Ok(()) => RtfError::Truncated {
                missing: HEADER_LEN + HELLO_PAYLOAD_LEN,
            },
            Err(e) => e,
        };
        let ev = self.fail(e);
        self.pending().events.push_back(ev);
    }

    /// Closes the connection after a protocol violation; returns the event reporting it.
    fn fail(&mut self, e: RtfError) -> RtfEvent {
        self.bits.set_state(State::Closed);
        self.clear_transmit();
        RtfEvent::ProtocolError(e)
    }

    /// Handles one frame; returns the event it makes, if any.
    fn handle_frame(
        &mut self,
        config: &RtfConfig,
        frame: Frame,
    ) -> Result<Option<RtfEvent>, RtfError> {
        match (self.bits.state(), frame) {
            (State::AwaitHello, Frame::Hello(hello)) => {
                let accepted = match self.bits.role() {
                    Role::Connector(kind) => hello.channel_kind == kind,
                    Role::Acceptor(kinds) => kinds.contains(hello.channel_kind),
                };
                if !accepted {
                    return Err(RtfError::ChannelKindRejected {
                        peer: hello.channel_kind,
                    });
                }
                if !self.bits.has(HELLO_SENT) {
                    self.queue_hello(config, hello.channel_kind);
                }
                if let Role::Acceptor(_) = self.bits.role() {
                    self.bits
                        .set_role(Role::Acceptor(hello.channel_kind.into()));
                }
                self.peer_heartbeat_interval_ms = hello.heartbeat_interval_ms;
                self.bits.set(PEER_HELLO);
                self.bits.set_state(State::Up);
                Ok(Some(RtfEvent::Up {
                    channel_kind: hello.channel_kind,
                    peer_heartbeat_interval_ms: hello.heartbeat_interval_ms,
                }))
            }
            (State::AwaitHello, other) => Err(RtfError::HelloExpected {
                frame_type: match other {
                    Frame::Hello(_) => frame_type::HELLO,
                    Frame::Data { .. } => frame_type::DATA,
                    Frame::Heartbeat(_) => frame_type::HEARTBEAT,
                    Frame::HeartbeatAck(_) => frame_type::HEARTBEAT_ACK,
                    Frame::Extension { frame_type, .. } => frame_type,
                },
            }),
            (State::Up, Frame::Hello(_)) => Err(RtfError::DuplicateHello),
            (
                State::Up,
                Frame::Data {
                    unordered,
                    stream,
                    ppid,
                    payload,
                },
            ) => Ok(Some(RtfEvent::Data {
                ppid,
                stream,
                unordered,
                payload,
            })),
            (State::Up, Frame::Heartbeat(b)) => {
                self.pending()
                    .transmit
                    .push_back(Frame::HeartbeatAck(b).to_bytes());
                Ok(None)
            }
            // Its arrival counts as something received (the dead-peer timer's base).
            (State::Up, Frame::HeartbeatAck(_)) => Ok(None),
            (State::Up, Frame::Extension { .. }) => Ok(None),
            (State::Closed, _) => Ok(None),
        }
    }

    /// The next chunk of bytes to write to the TCP connection, in order. Chunks handed out
    /// at `now_us` count as "sent" for the idle-heartbeat timer.
    pub fn poll_transmit(&mut self, now_us: u64) -> Option<Bytes> {
        // Only HELLO, heartbeats and callers of `send` use this queue; an idle connection
        // keeps no memory for it (released when drained).
        let chunk = self.store.pending_mut()?.transmit.pop_front()?;
        self.settle();
        self.last_sent.advance(now_us);
        Some(chunk)
    }

    /// True when [`poll_transmit`](Self::poll_transmit) has something.
    pub fn has_transmit(&self) -> bool {
        !self.transmit_is_empty()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RtfEvent> {
        let event = self.store.pending_mut()?.events.pop_front();
        self.settle();
        event
    }

    fn dead_deadline(&self, config: &RtfConfig, now_us: u64) -> u64 {
        let interval_ms = if self.bits.has(PEER_HELLO) {
            self.peer_heartbeat_interval_ms
                .clamp(1, MAX_HEARTBEAT_INTERVAL_MS)
        } else {
            config.heartbeat_interval()
        };
        self.last_received
            .at(now_us)
            .saturating_add(DEAD_AFTER_INTERVALS * u64::from(interval_ms) * 1000)
    }

    fn heartbeat_deadline(&self, config: &RtfConfig, now_us: u64) -> Option<u64> {
        (self.bits.has(HELLO_SENT) && self.bits.state() == State::Up).then(|| {
            let interval_us = u64::from(config.heartbeat_interval()) * 1000;
            self.last_sent
                .at(now_us)
                .saturating_add(interval_us + interval_us / HEARTBEAT_SLACK_DIVISOR)
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next (µs), if ever;
    /// `now_us` is the time of the caller's latest input (the deadline does not depend on it
    /// as long as the connection's timeouts are handled: see [`RtfConnection`]).
    pub fn poll_timeout(&self, config: &RtfConfig, now_us: u64) -> Option<u64> {
        if self.bits.state() == State::Closed {
            return None;
        }
        let dead = self.dead_deadline(config, now_us);
        Some(match self.heartbeat_deadline(config, now_us) {
            Some(hb) => hb.min(dead),
            None => dead,
        })
    }

    /// Time has advanced to `now_us`: declares the peer dead or queues a HEARTBEAT (payload:
    /// `now_us`, big-endian) when we have been idle for our interval.
    pub fn handle_timeout(&mut self, config: &RtfConfig, now_us: u64) {
        if self.bits.state() == State::Closed {
            return;
        }
        if now_us >= self.dead_deadline(config, now_us) {
            self.bits.set_state(State::Closed);
            self.clear_transmit();
            self.pending().events.push_back(RtfEvent::Dead);
            return;
        }
        if self
            .heartbeat_deadline(config, now_us)
            .is_some_and(|hb| now_us >= hb)
        {
            self.pending()
                .transmit
                .push_back(Frame::Heartbeat(now_us.to_be_bytes()).to_bytes());
            self.last_sent = Stamp::new(now_us);
        }
    }
}

/// Fuzz entry: decodes `data` as an RTF byte stream in chunks whose sizes come from the data
/// itself, and drives an accepting [`RtfConnection`] with the same bytes and a moving clock.
/// Checks the memory bound and that nothing panics.
pub fn fuzz_rtf_stream(data: &[u8]) {
    let (split, rest) = match data.split_first() {
        Some((s, r)) => (usize::from(*s).max(1), r),
        None => return,
    };
    let max = HEADER_LEN + MIN_ACCEPTED_PAYLOAD;
    let mut decoder = FrameDecoder::new(max);
    let config = RtfConfig {
        heartbeat_interval_ms: 10,
        max_frame_len: max,
    };
    let mut conn = RtfConnection::acceptor(ChannelKinds::all(), config, 0);
    let mut now = 0u64;
    for chunk in rest.chunks(split) {
        let mut frames = 0usize;
        let r = decoder.decode(chunk, |_| frames += 1);
        assert!(decoder.buffered() <= max);
        if r.is_err() {
            assert!(decoder.decode(chunk, |_| ()).is_err());
        }
        now += 3_000;
        conn.handle_input(&config, now, chunk);
        if conn.poll_timeout(&config, now).is_some() {
            conn.handle_timeout(&config, now);
            // Whatever was due has been done (heartbeat sent, or the peer declared dead):
            // the next deadline lies ahead.
            if let Some(next) = conn.poll_timeout(&config, now) {
                assert!(next > now);
            }
        }
        while conn.poll_transmit(now).is_some() {}
        while conn.poll_event().is_some() {}
        let _ = conn.send(&config, 11, 0, false, Bytes::from_static(b"x"));
    }
    conn.handle_eof(now);
    let _ = decoder.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|c| (c as char).to_digit(16).unwrap() as u8)
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, RtfError> {
        let mut d = FrameDecoder::default();
        let mut v = Vec::new();
        d.decode_into(bytes, &mut v)?;
        d.finish()?;
        Ok(v)
    }

    const HELLO_HEX: &str = "00 00 00 00  00 00 00 18  00 00 00 00
                             52 53 50 54  01 04 00 00  00 00 13 88";
    const COOKIE_HEX: &str = "01 00 00 00  00 00 00 24  00 00 00 0b
        0c 00 00 18  00 0d 00 14  3c 50 50 2d 54 44 31 3e  00 00 00 00 00 00 00 0d";
    const PING_HEX: &str = "01 00 00 00  00 00 00 1b  00 00 00 21
        01 00 00 0f  00 00 00 00 00 00 00 01  61 62 63";
    const HB_HEX: &str = "02 00 00 00  00 00 00 14  00 00 00 00  00 00 01 8b 1f 2e 3d 4c";
    const HB_ACK_HEX: &str = "03 00 00 00  00 00 00 14  00 00 00 00  00 00 01 8b 1f 2e 3d 4c";

    #[test]
    fn spec_examples_byte_exact() {
        let hello = Frame::Hello(Hello {
            channel_kind: ChannelKind::Session,
            heartbeat_interval_ms: 5000,
        });
        assert_eq!(hello.to_bytes().as_ref(), hex(HELLO_HEX).as_slice());
        assert_eq!(decode_all(&hex(HELLO_HEX)).unwrap(), vec![hello]);

        let cookie = hex(COOKIE_HEX);
        let cookie_msg = Bytes::copy_from_slice(&cookie[12..]);
        assert_eq!(cookie_msg.len(), 24);
        let f = Frame::Data {
            unordered: false,
            stream: 0,
            ppid: 11,
            payload: cookie_msg,
        };
        assert_eq!(f.to_bytes().as_ref(), cookie.as_slice());
        assert_eq!(decode_all(&cookie).unwrap(), vec![f]);

        let ping = hex(PING_HEX);
        let f = Frame::Data {
            unordered: false,
            stream: 0,
            ppid: 33,
            payload: Bytes::copy_from_slice(&ping[12..]),
        };
        assert_eq!(ping.len(), 27);
        assert_eq!(f.to_bytes().as_ref(), ping.as_slice());
        assert_eq!(decode_all(&ping).unwrap(), vec![f]);

        let b = [0x00, 0x00, 0x01, 0x8b, 0x1f, 0x2e, 0x3d, 0x4c];
        assert_eq!(
            Frame::Heartbeat(b).to_bytes().as_ref(),
            hex(HB_HEX).as_slice()
        );
        assert_eq!(
            Frame::HeartbeatAck(b).to_bytes().as_ref(),
            hex(HB_ACK_HEX).as_slice()
        );
        assert_eq!(decode_all(&hex(HB_HEX)).unwrap(), vec![Frame::Heartbeat(b)]);
        assert_eq!(
            decode_all(&hex(HB_ACK_HEX)).unwrap(),
            vec![Frame::HeartbeatAck(b)]
        );
        assert_eq!(
            encode_data_header(true, 7, 12, 4),
            [1, 1, 0, 7, 0, 0, 0, 16, 0, 0, 0, 12]
        );
    }

    #[test]
    fn decoder_keeps_no_buffer_between_frames() {
        let ping = hex(PING_HEX);
        let mut d = FrameDecoder::default();
        let mut frames = Vec::new();
        // Two whole frames and the first bytes of a third, then the rest of it.
        let mut stream = ping.clone();
        stream.extend_from_slice(&ping);
        stream.extend_from_slice(&ping[..5]);
        d.decode_into(&stream, &mut frames).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(
            d.partial.as_ref().is_some_and(|p| p.buf.capacity() > 0),
            "a partial frame is buffered"
        );
        d.decode_into(&ping[5..], &mut frames).unwrap();
        assert_eq!(frames.len(), 3);
        assert!(d.is_at_boundary());
        assert!(d.partial.is_none(), "nothing held at a frame boundary");
        // The last frame's memory is its own: the decoder holds no share of it.
        let Some(Frame::Data { payload, .. }) = frames.pop() else {
            panic!("DATA frame expected");
        };
        assert!(payload.is_unique());
        // Whole frames only: all of them split off one buffer the decoder lets go of.
        d.decode_into(&ping, &mut frames).unwrap();
        let Some(Frame::Data { payload, .. }) = frames.pop() else {
            panic!("DATA frame expected");
        };
        assert!(payload.is_unique());
    }

    #[test]
    fn typed_errors() {
        // Frame length below the header.
        let mut short = hex(HB_HEX);
        short[7] = 11;
        assert_eq!(
            decode_all(&short),
            Err(RtfError::FrameTooShort { length: 11 })
        );
        // Oversized: rejected from the header, before any payload arrives.
        let mut d = FrameDecoder::new(0);
        assert_eq!(d.max_frame_len(), HEADER_LEN + MIN_ACCEPTED_PAYLOAD);
        let big = encode_data_header(false, 0, 11, MIN_ACCEPTED_PAYLOAD + 1);
        assert_eq!(
            d.decode(&big, |_| ()),
            Err(RtfError::FrameTooLong {
                length: (HEADER_LEN + MIN_ACCEPTED_PAYLOAD + 1) as u32,
                max: HEADER_LEN + MIN_ACCEPTED_PAYLOAD
            })
        );
        assert!(d.buffered() <= HEADER_LEN);
        // Sticky.
        assert!(d.decode(&hex(HB_HEX), |_| ()).is_err());
        // Reserved type.
        let mut r = hex(HB_HEX);
        r[0] = 0x04;
        assert_eq!(decode_all(&r), Err(RtfError::ReservedFrameType(4)));
        r[0] = 0x7f;
        assert_eq!(decode_all(&r), Err(RtfError::ReservedFrameType(0x7f)));
        // Fixed payload sizes.
        let mut hb = hex(HB_HEX);
        hb[7] = 0x13;
        hb.pop();
        assert_eq!(
            decode_all(&hb),
            Err(RtfError::BadPayloadLength {
                frame_type: 2,
                length: 7
            })
        );
        // HELLO fields.
        let mut h = hex(HELLO_HEX);
        h[12] = b'X';
        assert!(matches!(decode_all(&h), Err(RtfError::BadMagic(_))));
        let mut h = hex(HELLO_HEX);
        h[16] = 2;
        assert_eq!(decode_all(&h), Err(RtfError::UnsupportedVersion(2)));
        let mut h = hex(HELLO_HEX);
        h[17] = 5;
        assert_eq!(decode_all(&h), Err(RtfError::UnknownChannelKind(5)));
        let mut h = hex(HELLO_HEX);
        h[22] = 0;
        h[23] = 0;
        assert_eq!(decode_all(&h), Err(RtfError::ZeroHeartbeatInterval));
        // Truncation at every point inside a frame.
        let ping = hex(PING_HEX);
        for cut in 1..ping.len() {
            let r = decode_all(&ping[..cut]);
            assert!(
                matches!(r, Err(RtfError::Truncated { missing }) if missing > 0),
                "{cut}"
            );
        }
        // Garbage: raw HTTP.
        assert!(decode_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
    }

    #[test]
    fn extension_frames_are_skipped() {
        let mut stream = Frame::Extension {
            frame_type: 0x80,
            length: 12,
        }
        .to_bytes()
        .to_vec();
        stream.extend_from_slice(&hex(HB_HEX));
        stream.extend(
            Frame::Extension {
                frame_type: 0xff,
                length: 100_000,
            }
            .to_bytes(),
        );
        stream.extend_from_slice(&hex(PING_HEX));
        let mut d = FrameDecoder::new(200_000);
        let mut frames = Vec::new();
        for chunk in stream.chunks(1000) {
            d.decode_into(chunk, &mut frames).unwrap();
            // The extension payload is not buffered.
            assert!(d.buffered() <= 1000);
        }
        d.finish().unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(
            frames[0],
            Frame::Extension {
                frame_type: 0x80,
                length: 12
            }
        );
        assert!(matches!(frames[1], Frame::Heartbeat(_)));
        assert!(matches!(frames[3], Frame::Data { ppid: 33, .. }));
    }

    #[test]
    fn accepts_65536_byte_payload_and_empty_data() {
        let payload = Bytes::from(vec![0xa5; MIN_ACCEPTED_PAYLOAD]);
        let f = Frame::Data {
            unordered: true,
            stream: 3,
            ppid: 12,
            payload,
        };
        let empty = Frame::Data {
            unordered: false,
            stream: 0,
            ppid: 0,
            payload: Bytes::new(),
        };
        let mut bytes = f.to_bytes().to_vec();
        bytes.extend(empty.to_bytes());
        let mut d = FrameDecoder::new(0);
        let mut frames = Vec::new();
        d.decode_into(&bytes, &mut frames).unwrap();
        assert_eq!(frames, vec![f, empty]);
        assert!(d.is_at_boundary());
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (0usize..4, 1u32..20_000).prop_map(|(k, i)| Frame::Hello(Hello {
                channel_kind: ChannelKind::ALL[k],
                heartbeat_interval_ms: i
            })),
            (
                any::<bool>(),
                any::<u16>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..3000)
            )
                .prop_map(|(unordered, stream, ppid, p)| Frame::Data {
                    unordered,
                    stream,
                    ppid,
                    payload: Bytes::from(p)
                }),
            any::<[u8; 8]>().prop_map(Frame::Heartbeat),
            any::<[u8; 8]>().prop_map(Frame::HeartbeatAck),
            (0x80u8..=0xff, 12u32..2000)
                .prop_map(|(frame_type, length)| Frame::Extension { frame_type, length }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_splits_decode_to_same_frames(
            frames in proptest::collection::vec(arb_frame(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let mut stream = BytesMut::new();
            for f in &frames {
                f.encode(&mut stream);
            }
            let mut positions: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            positions.push(0);
            positions.push(stream.len());
            positions.sort_unstable();
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for w in positions.windows(2) {
                d.decode_into(&stream[w[0]..w[1]], &mut got).unwrap();
            }
            prop_assert!(d.finish().is_ok());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000), split in 1usize..64) {
            let mut d = FrameDecoder::new(0);
            for chunk in data.chunks(split) {
                if d.decode(chunk, |_| ()).is_err() {
                    break;
                }
                prop_assert!(d.buffered() <= d.max_frame_len());
            }
            let mut v = vec![split as u8];
            v.extend_from_slice(&data);
            fuzz_rtf_stream(&v);
        }
    }

    // --- connection ---

    /// A connection with its settings and the time of its latest input, called as an
    /// endpoint calls it (the settings and that time handed to each call that takes them).
    struct Conn {
        c: RtfConnection,
        cfg: RtfConfig,
        now: u64,
    }

    impl Conn {
        fn connector(kind: ChannelKind, cfg: RtfConfig, now: u64) -> Conn {
            Conn {
                c: RtfConnection::connector(kind, cfg, now),
                cfg,
                now,
            }
        }

        fn acceptor(kinds: ChannelKinds, cfg: RtfConfig, now: u64) -> Conn {
            Conn {
                c: RtfConnection::acceptor(kinds, cfg, now),
                cfg,
                now,
            }
        }

        fn at(&mut self, now: u64) -> &mut RtfConnection {
            self.now = self.now.max(now);
            &mut self.c
        }

        fn max_payload_len(&self) -> usize {
            self.cfg.max_payload_len()
        }

        fn send(
            &mut self,
            ppid: u32,
            stream: u16,
            unordered: bool,
            payload: Bytes,
        ) -> Result<(), RtfError> {
            self.c.send(&self.cfg, ppid, stream, unordered, payload)
        }

        fn send_into(
            &mut self,
            now: u64,
            ppid: u32,
            stream: u16,
            unordered: bool,
            payload: &[u8],
            out: &mut BytesMut,
        ) -> Result<(), RtfError> {
            let cfg = self.cfg;
            self.at(now)
                .send_into(&cfg, now, ppid, stream, unordered, payload, out)
        }

        fn handle_input(&mut self, now: u64, data: &[u8]) {
            let cfg = self.cfg;
            self.at(now).handle_input(&cfg, now, data);
        }

        fn handle_input_into(&mut self, now: u64, data: &[u8], events: &mut VecDeque<RtfEvent>) {
            let cfg = self.cfg;
            self.at(now).handle_input_into(&cfg, now, data, events);
        }

        fn handle_timeout(&mut self, now: u64) {
            let cfg = self.cfg;
            self.at(now).handle_timeout(&cfg, now);
        }

        fn poll_timeout(&self) -> Option<u64> {
            self.c.poll_timeout(&self.cfg, self.now)
        }

        fn poll_transmit(&mut self, now: u64) -> Option<Bytes> {
            self.at(now).poll_transmit(now)
        }
    }

    impl core::ops::Deref for Conn {
        type Target = RtfConnection;
        fn deref(&self) -> &RtfConnection {
            &self.c
        }
    }

    impl core::ops::DerefMut for Conn {
        fn deref_mut(&mut self) -> &mut RtfConnection {
            &mut self.c
        }
    }

    const MS: u64 = 1000;

    fn cfg(interval_ms: u32) -> RtfConfig {
        RtfConfig {
            heartbeat_interval_ms: interval_ms,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Moves every transmit chunk of `from` into `to` at `now`.
    fn pump(from: &mut Conn, to: &mut Conn, now: u64) -> usize {
        let mut n = 0;
        while let Some(c) = from.poll_transmit(now) {
            n += 1;
            to.handle_input(now, &c);
        }
        n
    }

    fn events(c: &mut Conn) -> Vec<RtfEvent> {
        core::iter::from_fn(|| c.poll_event()).collect()
    }

    #[test]
    fn handle_input_into_uses_the_callers_event_buffer() {
        let mut a = Conn::connector(ChannelKind::Session, cfg(1000), 0);
        let mut b = Conn::acceptor(ChannelKind::Session.into(), cfg(1000), 0);
        a.send(11, 0, false, Bytes::from_static(b"x")).unwrap();
        let mut wire = Vec::new();
        while let Some(c) = a.poll_transmit(1) {
            wire.extend_from_slice(&c);
        }
        let mut events = VecDeque::new();
        b.handle_input_into(2, &wire, &mut events);
        assert!(b.poll_event().is_none());
        assert_eq!(events.len(), 2);
        assert!(matches!(events[0], RtfEvent::Up { .. }));
        assert!(matches!(&events[1], RtfEvent::Data { payload, .. } if &payload[..] == b"x"));
        // A protocol error still lands in the caller's buffer.
        events.clear();
        let hello_len = u32::from_be_bytes([wire[4], wire[5], wire[6], wire[7]]) as usize;
        b.handle_input_into(3, &wire[..hello_len], &mut events);
        assert!(matches!(
            events[0],
            RtfEvent::ProtocolError(RtfError::DuplicateHello)
        ));
    }

    #[test]
    fn send_into_writes_the_same_frame_as_send() {
        let mut a = Conn::connector(ChannelKind::Session, cfg(1000), 0);
        let mut b = Conn::connector(ChannelKind::Session, cfg(1000), 0);
        // HELLO still queued: send_into queues instead of writing.
        let mut out = BytesMut::new();
        a.send_into(5, 11, 3, false, b"first", &mut out).unwrap();
        assert!(out.is_empty());
        b.send(11, 3, false, Bytes::from_static(b"first")).unwrap();
        let drain = |c: &mut Conn| {
            let mut v = Vec::new();
            while let Some(x) = c.poll_transmit(5) {
                v.extend_from_slice(&x);
            }
            v
        };
        assert_eq!(drain(&mut a), drain(&mut b));
        // Nothing queued: the frame goes straight into the caller's buffer.
        a.send_into(7, 12, 0, true, b"second", &mut out).unwrap();
        assert!(!a.has_transmit());
        b.send(12, 0, true, Bytes::from_static(b"second")).unwrap();
        assert_eq!(&out[..], &drain(&mut b)[..]);
        let long = vec![0; a.max_payload_len() + 1];
        let before = out.len();
        assert!(matches!(
            a.send_into(7, 1, 0, false, &long, &mut out),
            Err(RtfError::MessageTooLong { .. })
        ));
        assert_eq!(out.len(), before);
    }

    #[test]
    fn stamps_read_back_across_the_wrap_of_the_millisecond_clock() {
        let wrap = (1u64 << 32) * MS;
        for now in [
            0,
            5 * MS,
            wrap - MS,
            wrap,
            wrap + 7 * MS,
            3 * wrap + 123_456,
        ] {
            let s = Stamp::new(now);
            // Read back at the same time, later and earlier (within 2^31 ms): whole ms.
            for d in [0, 1, 999, MS, 86_400_000 * MS, (1 << 31) * MS - MS] {
                assert_eq!(s.at(now + d), now / MS * MS, "now {now} + {d}");
                if let Some(earlier) = now.checked_sub(d) {
                    assert_eq!(s.at(earlier), now / MS * MS, "now {now} - {d}");
                }
            }
            let mut t = s;
            t.advance(now + 2 * MS);
            assert_eq!(t.at(now), now / MS * MS + 2 * MS);
            t.advance(now); // never back
            assert_eq!(t.at(now), now / MS * MS + 2 * MS);
        }
    }

    #[test]
    fn heartbeats_and_the_dead_peer_timer_run_across_the_wrap() {
        // Both ends' clocks sit just before the 32-bit millisecond counter wraps (49.7
        // days of uptime): heartbeats go out on time and the peer is declared dead 3
        // intervals after its last frame, not 49.7 days early or late.
        let t0 = (1u64 << 32) * MS - 1_500 * MS;
        let mut a = Conn::connector(ChannelKind::Session, cfg(1000), t0);
        let mut b = Conn::acceptor(ChannelKind::Session.into(), cfg(1000), t0);
        pump(&mut a, &mut b, t0);
        pump(&mut b, &mut a, t0);
        assert!(a.is_up() && b.is_up());
        let mut now = t0;
        let mut heartbeats = 0;
        let mut last = now;
        while now < t0 + 10_000 * MS {
            now += 100 * MS;
            for c in [&mut a, &mut b] {
                if c.poll_timeout().is_some_and(|d| d <= now) {
                    c.handle_timeout(now);
                }
            }
            heartbeats += pump(&mut a, &mut b, now);
            let n = pump(&mut b, &mut a, now);
            if n > 0 {
                last = now;
            }
            heartbeats += n;
            assert!(a.is_up() && b.is_up(), "at {}", now - t0);
        }
        // 1.5 s without output sends a heartbeat; each is answered: ~4 frames per 1.5 s.
        assert!((20..=30).contains(&heartbeats), "{heartbeats} frames");
        // b goes silent: a declares it dead 3 s after b's last frame, across the wrap.
        while a.is_up() {
            now += 100 * MS;
            if a.poll_timeout().is_some_and(|d| d <= now) {
                a.handle_timeout(now);
            }
            while a.poll_transmit(now).is_some() {}
        }
        assert_eq!(now - last, 3_000 * MS);
        assert_eq!(events(&mut a).last(), Some(&RtfEvent::Dead));
    }

    #[test]
    fn intervals_beyond_the_longest_are_used_as_the_longest() {
        let huge = cfg(u32::MAX);
        assert_eq!(huge.heartbeat_interval(), MAX_HEARTBEAT_INTERVAL_MS);
        assert_eq!(cfg(0).heartbeat_interval(), 1);
        let mut a = Conn::connector(ChannelKind::Session, huge, 0);
        let mut b = Conn::acceptor(ChannelKind::Session.into(), huge, 0);
        pump(&mut a, &mut b, 0);
        pump(&mut b, &mut a, 0);
        assert_eq!(
            b.peer_hello().map(|h| h.heartbeat_interval_ms),
            Some(MAX_HEARTBEAT_INTERVAL_MS),
            "our HELLO announces the interval used"
        );
        let dead = u64::from(MAX_HEARTBEAT_INTERVAL_MS) * 3 * MS;
        let hb = u64::from(MAX_HEARTBEAT_INTERVAL_MS) * 3 / 2 * MS;
        assert_eq!(a.poll_timeout(), Some(hb));
        a.handle_timeout(hb);
        assert!(a.poll_transmit(hb).is_some(), "a heartbeat");
        // The peer announced an interval longer than the longest (a foreign peer may): it
        // is used as the longest, within the span the connection's times cover.
        let mut c = Conn::acceptor(ChannelKind::Session.into(), cfg(1000), 0);
        c.handle_input(
            0,
            &Frame::Hello(Hello {
                channel_kind: ChannelKind::Session,
                heartbeat_interval_ms: u32::MAX,
            })
            .to_bytes(),
        );
        assert!(c.is_up());
        assert_eq!(c.poll_timeout(), Some(1_500 * MS), "our heartbeat first");
        let mut now = 0;
        while c.is_up() {
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now);
            while c.poll_transmit(now).is_some() {}
        }
        assert_eq!(now, dead);
    }

    /// A caller's own store: the pending parts beside a value of the caller's, and a count
    /// of the times the connection said they were empty.
    #[derive(Default)]
    struct CallerStore {
        pending: Option<RtfPending>,
        mine: u32,
        emptied: u32,
    }

    impl RtfStore for CallerStore {
        fn pending(&self) -> Option<&RtfPending> {
            self.pending.as_ref()
        }
        fn pending_mut(&mut self) -> Option<&mut RtfPending> {
            self.pending.as_mut()
        }
        fn make_pending(&mut self) -> &mut RtfPending {
            self.pending.get_or_insert_with(RtfPending::default)
        }
        fn pending_emptied(&mut self) {
            self.emptied += 1;
            self.pending = None;
        }
    }

    #[test]
    fn a_connection_keeps_its_pending_parts_in_the_callers_store() {
        let config = cfg(1000);
        let store = CallerStore {
            mine: 7,
            ..CallerStore::default()
        };
        let mut a = RtfConnection::connector_in(ChannelKind::Session, config, 0, store);
        let mut b = Conn::acceptor(ChannelKind::Session.into(), config, 0);
        assert!(a.store().pending.as_ref().is_some_and(|p| !p.is_empty()));
        a.send(&config, 11, 0, false, Bytes::from_static(b"hi"))
            .unwrap();
        while let Some(c) = a.poll_transmit(1) {
            b.handle_input(1, &c);
        }
        assert_eq!(a.store().emptied, 1, "told once the frames were taken");
        assert!(a.store().pending.is_none());
        assert_eq!(a.store().mine, 7, "the caller's own value is left alone");
        a.store_mut().mine = 8;
        let ev = events(&mut b);
        assert!(matches!(&ev[1], RtfEvent::Data { payload, .. } if &payload[..] == b"hi"));
        // Input split inside a frame: the frame in progress lies in the store meanwhile.
        let hello = Frame::Hello(Hello {
            channel_kind: ChannelKind::Session,
            heartbeat_interval_ms: 1000,
        })
        .to_bytes();
        a.handle_input(&config, 2, &hello[..3]);
        assert!(a.store().pending.as_ref().is_some_and(|p| !p.is_empty()));
        a.handle_input(&config, 3, &hello[3..]);
        assert!(a.is_up());
        assert_eq!(
            a.poll_event().map(|e| matches!(e, RtfEvent::Up { .. })),
            Some(true)
        );
        assert!(a.store().pending.is_none() && a.store().mine == 8);
    }

    #[test]
    fn an_idle_connection_is_24_bytes_and_holds_nothing_else() {
        assert_eq!(core::mem::size_of::<RtfConnection>(), 24);
        let mut a = Conn::connector(ChannelKind::Session, cfg(1000), 0);
        let mut b = Conn::acceptor(ChannelKind::Session.into(), cfg(1000), 0);
        assert!(a.store.is_some(), "the HELLO waits to be written");
        pump(&mut a, &mut b, 1);
        pump(&mut b, &mut a, 1);
        assert_eq!(events(&mut a).len(), 1);
        assert_eq!(events(&mut b).len(), 1);
        assert!(a.is_up() && b.is_up());
        assert!(
            a.store.is_none() && b.store.is_none(),
            "up and idle: no memory"
        );
        // Half a frame is held until the rest arrives; then nothing again.
        a.send(11, 0, false, Bytes::from_static(b"hello")).unwrap();
        let frame = a.poll_transmit(2).unwrap();
        assert!(a.store.is_none());
        b.handle_input(3, &frame[..5]);
        assert!(b.store.as_ref().is_some_and(|p| p.partial.is_some()));
        assert!(b.poll_event().is_none());
        b.handle_input(4, &frame[5..]);
        assert!(matches!(b.poll_event(), Some(RtfEvent::Data { .. })));
        assert!(b.store.is_none());
        // A heartbeat and its answer come and go the same way.
        let t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        assert!(a.has_transmit());
        pump(&mut a, &mut b, t);
        assert!(a.store.is_none());
        pump(&mut b, &mut a, t + 5);
        assert!(a.store.is_none() && b.store.is_none());
        // A closed connection's last event goes with it.
        a.handle_eof(t + 6);
        assert_eq!(a.poll_event(), Some(RtfEvent::PeerShutdown));
        assert!(a.store.is_none());
    }

    #[test]
    fn handshake_and_data_both_ways() {
        let mut a = Conn::connector(ChannelKind::Session, cfg(1000), 0);
        let mut b = Conn::acceptor(
            ChannelKinds::from(ChannelKind::Session).with(ChannelKind::AsapFromRegistrar),
            cfg(2000),
            0,
        );
        // Data may be queued right behind the connector's HELLO.
        a.send(11, 0, false, Bytes::from_static(b"ctl")).unwrap();
        // Acceptor with two kinds waits for the connector's HELLO before sending its own.
        assert!(!b.has_transmit());
        pump(&mut a, &mut b, 10);
        assert_eq!(
            events(&mut b),
            vec![
                RtfEvent::Up {
                    channel_kind: ChannelKind::Session,
                    peer_heartbeat_interval_ms: 1000
                },
                RtfEvent::Data {
                    ppid: 11,
                    stream: 0,
                    unordered: false,
                    payload: Bytes::from_static(b"ctl")
                }
            ]
        );
        b.send(33, 5, true, Bytes::from(vec![7; 10_000])).unwrap();
        pump(&mut b, &mut a, 20);
        let ev = events(&mut a);
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[0],
            RtfEvent::Up {
                channel_kind: ChannelKind::Session,
                peer_heartbeat_interval_ms: 2000
            }
        );
        assert!(
            matches!(&ev[1], RtfEvent::Data { ppid: 33, stream: 5, unordered: true, payload } if payload.len() == 10_000)
        );
        assert!(a.is_up() && b.is_up());
        // The acceptor of two kinds keeps the one agreed.
        assert_eq!(
            b.peer_hello(),
            Some(Hello {
                channel_kind: ChannelKind::Session,
                heartbeat_interval_ms: 1000
            })
        );
        assert_eq!(
            a.peer_hello(),
            Some(Hello {
                channel_kind: ChannelKind::Session,
                heartbeat_interval_ms: 2000
            })
        );
    }

    #[test]
    fn hello_first_enforced_both_ways() {
        // Acceptor receiving DATA first.
        let mut b = Conn::acceptor(ChannelKind::AsapToRegistrar.into(), cfg(1000), 0);
        let data = Frame::Data {
            unordered: false,
            stream: 0,
            ppid: 11,
            payload: Bytes::from_static(b"x"),
        };
        b.handle_input(1, &data.to_bytes());
        assert_eq!(
            events(&mut b),
            vec![RtfEvent::ProtocolError(RtfError::HelloExpected {
                frame_type: 1
            })]
        );
        assert!(b.is_closed());
        assert_eq!(b.send(11, 0, false, Bytes::new()), Err(RtfError::Closed));
        // Connector receiving a heartbeat first.
        let mut a = Conn::connector(ChannelKind::Enrp, cfg(1000), 0);
        a.handle_input(1, &Frame::Heartbeat([0; 8]).to_bytes());
        assert!(matches!(
            events(&mut a).as_slice(),
            [RtfEvent::ProtocolError(RtfError::HelloExpected {
                frame_type: 2
            })]
        ));
        // Wrong kind echoed.
        let mut a = Conn::connector(ChannelKind::Enrp, cfg(1000), 0);
        let mut b = Conn::acceptor(ChannelKind::AsapToRegistrar.into(), cfg(1000), 0);
        let from_a: Vec<Bytes> = core::iter::from_fn(|| a.poll_transmit(1)).collect();
        pump(&mut b, &mut a, 1);
        assert_eq!(
            events(&mut a),
            vec![RtfEvent::ProtocolError(RtfError::ChannelKindRejected {
                peer: ChannelKind::AsapToRegistrar
            })]
        );
        assert!(!a.has_transmit());
        for c in from_a {
            b.handle_input(1, &c);
        }
        assert_eq!(
            events(&mut b),
            vec![RtfEvent::ProtocolError(RtfError::ChannelKindRejected {
                peer: ChannelKind::Enrp
            })]
        );
        // Duplicate HELLO.
        let mut a = Conn::connector(ChannelKind::Enrp, cfg(1000), 0);
        let mut b = Conn::acceptor(ChannelKind::Enrp.into(), cfg(1000), 0);
        pump(&mut b, &mut a, 1);
        let hello = Frame::Hello(Hello {
            channel_kind: ChannelKind::Enrp,
            heartbeat_interval_ms: 1,
        });
        a.handle_input(2, &hello.to_bytes());
        assert_eq!(
            events(&mut a).last(),
            Some(&RtfEvent::ProtocolError(RtfError::DuplicateHello))
        );
        // Raw ASAP instead of RTF.
        let mut b = Conn::acceptor(ChannelKind::AsapToRegistrar.into(), cfg(1000), 0);
        b.handle_input(1, &hex(&COOKIE_HEX[40..]));
        assert!(matches!(
            events(&mut b).as_slice(),
            [RtfEvent::ProtocolError(_)]
        ));
    }

    #[test]
    fn heartbeat_timing_with_simulated_clock() {
        let mut a = Conn::connector(ChannelKind::Enrp, cfg(100), 0);
        let mut b = Conn::acceptor(ChannelKind::Enrp.into(), cfg(300), 0);
        pump(&mut a, &mut b, 0);
        pump(&mut b, &mut a, 0);
        events(&mut a);
        events(&mut b);
        // a's next timer: its own heartbeat after 100 ms + 1/2 of idleness; b's: a dead at
        // 300 ms (3 x 100 ms after its HELLO), before b's own heartbeat at 450 ms.
        assert_eq!(a.poll_timeout(), Some(150 * MS));
        assert_eq!(b.poll_timeout(), Some(300 * MS));
        // Nothing happens before the deadline.
        a.handle_timeout(149 * MS);
        assert!(!a.has_transmit());
        a.handle_timeout(150 * MS);
        let hb = a.poll_transmit(150 * MS).unwrap();
        assert_eq!(hb.first(), Some(&frame_type::HEARTBEAT));
        b.handle_input(155 * MS, &hb);
        // b answers at once with the same 8 bytes.
        let ack = b.poll_transmit(155 * MS).unwrap();
        assert_eq!(ack.first(), Some(&frame_type::HEARTBEAT_ACK));
        assert_eq!(ack.get(12..), hb.get(12..));
        a.handle_input(160 * MS, &ack);
        // Sending data resets the idle timer.
        a.send(12, 0, false, Bytes::from_static(b"enrp")).unwrap();
        pump(&mut a, &mut b, 200 * MS);
        assert_eq!(a.poll_timeout(), Some(350 * MS));
        // Data about every interval keeps heartbeats away: at 320 ms a sends again (before
        // its 350 ms heartbeat), then the next heartbeat is due 150 ms after that.
        a.send(12, 0, false, Bytes::from_static(b"enrp")).unwrap();
        pump(&mut a, &mut b, 320 * MS);
        assert_eq!(a.poll_timeout(), Some(470 * MS));
        // a keeps sending heartbeats; b stays silent except for acks we drop: b is alive
        // for a only while it receives something. Drop b's acks from now on.
        let mut t = 320 * MS;
        while t < 160 * MS + 900 * MS {
            t = a.poll_timeout().unwrap();
            a.handle_timeout(t);
            if a.is_closed() {
                break;
            }
            pump(&mut a, &mut b, t);
            while b.poll_transmit(t).is_some() {}
        }
        // a last received at 160 ms (the ack); peer interval 300 ms → dead at 1060 ms.
        assert!(a.is_closed());
        assert_eq!(t, 160 * MS + 900 * MS);
        assert_eq!(events(&mut a), vec![RtfEvent::Dead]);
        assert_eq!(a.poll_timeout(), None);
        // b got heartbeats every 150 ms, so b's dead timer (3 × 100 ms) never fired.
        assert!(!b.is_closed());
    }

    #[test]
    fn hello_timeout_and_eof() {
        // No HELLO from the peer: dead after 3 × our own interval.
        let mut a = Conn::connector(ChannelKind::Session, cfg(50), 1_000);
        while a.poll_transmit(1_000).is_some() {}
        assert_eq!(a.poll_timeout(), Some(1_000 + 150 * MS));
        a.handle_timeout(1_000 + 150 * MS);
        assert_eq!(events(&mut a), vec![RtfEvent::Dead]);
        // Part of a HELLO does not move that deadline (a peer cannot hold a connection open
        // by dribbling bytes); the whole HELLO starts the peer's dead timer from its arrival.
        let mut a = Conn::acceptor(ChannelKind::Session.into(), cfg(50), 1_000);
        let hello = Frame::Hello(Hello {
            channel_kind: ChannelKind::Session,
            heartbeat_interval_ms: 200,
        })
        .to_bytes();
        a.handle_input(100 * MS, &hello[..5]);
        assert_eq!(a.poll_timeout(), Some(1_000 + 150 * MS));
        a.handle_input(120 * MS, &hello[5..]);
        while a.poll_transmit(120 * MS).is_some() {}
        assert!(a.is_up());
        // Our heartbeats: 50 ms + 1/2 after what we last sent.
        assert_eq!(a.poll_timeout(), Some(120 * MS + 75 * MS));
        a.handle_timeout(120 * MS + 75 * MS);
        while a.poll_transmit(195 * MS).is_some() {}
        assert_eq!(a.poll_timeout(), Some(195 * MS + 75 * MS));
        a.handle_timeout(120 * MS + 600 * MS);
        assert_eq!(events(&mut a).last(), Some(&RtfEvent::Dead));
        // EOF at a boundary after Up = graceful shutdown; inside a frame = error.
        let mut a = Conn::connector(ChannelKind::Session, cfg(50), 0);
        let mut b = Conn::acceptor(ChannelKind::Session.into(), cfg(50), 0);
        pump(&mut b, &mut a, 0);
        events(&mut a);
        a.handle_eof(1);
        assert_eq!(events(&mut a), vec![RtfEvent::PeerShutdown]);
        let mut a = Conn::connector(ChannelKind::Session, cfg(50), 0);
        let mut b = Conn::acceptor(ChannelKind::Session.into(), cfg(50), 0);
        pump(&mut b, &mut a, 0);
        events(&mut a);
        a.handle_input(1, &hex(PING_HEX)[..5]);
        a.handle_eof(2);
        assert_eq!(
            events(&mut a),
            vec![RtfEvent::ProtocolError(RtfError::Truncated { missing: 7 })]
        );
        // Over-long message refused by send.
        let mut a = Conn::connector(
            ChannelKind::Session,
            RtfConfig {
                heartbeat_interval_ms: 1,
                max_frame_len: 0,
            },
            0,
        );
        assert_eq!(a.max_payload_len(), MIN_ACCEPTED_PAYLOAD);
        assert!(matches!(
            a.send(1, 0, false, Bytes::from(vec![0; MIN_ACCEPTED_PAYLOAD + 1])),
            Err(RtfError::MessageTooLong { .. })
        ));
    }
}
