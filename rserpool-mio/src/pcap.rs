//! Packet-capture reader (classic pcap and pcapng) that extracts RSerPool traffic, and a
//! minimal classic-pcap writer for synthetic test captures.
//!
//! Pure Rust, no libpcap. The reader handles
//! * files: classic pcap in both byte orders with µs or ns timestamps; pcapng (Section
//!   Header, Interface Description with `if_tsresol`/`if_tsoffset`, Enhanced, Simple and the
//!   obsolete Packet Block; other blocks are skipped);
//! * link types: Ethernet (802.1Q / 802.1ad VLAN tags), Linux cooked SLL and SLL2, raw
//!   IPv4/IPv6 (`LINKTYPE_RAW`, `LINKTYPE_IPV4`, `LINKTYPE_IPV6`), BSD null and OpenBSD
//!   loopback;
//! * IPv4 with options, IPv6 with extension headers; IP fragments are not reassembled but
//!   reported as [`SkipReason::IpFragment`];
//! * SCTP: every chunk of every packet, CRC32c checked (configurable); DATA and I-DATA
//!   user messages are reassembled in TSN (I-DATA: FSN) order and retransmitted TSNs are
//!   dropped;
//! * UDP payloads on configurable ports (ASAP announces 3863, ENRP presences 9901, CSP
//!   2960);
//! * TCP byte streams per direction, in sequence order, with retransmissions and overlaps
//!   trimmed ([`TcpFlow`]), for the TCP mapping (RTF) on 3863/9901.
//!
//! Output is a stream of [`CaptureEvent`]s: [`CapturedMessage`]s, per-frame
//! [`FrameError`]s for malformed packets and [`SkippedFrame`]s for what was seen but not
//! dissected. No input makes it panic.
//!
//! ```
//! use rserpool_mio::pcap::{Capture, CaptureConfig, PcapWriter, Transport};
//! use std::{net::SocketAddr, time::Duration};
//!
//! let mut w = PcapWriter::new(Vec::new()).unwrap();
//! let pe: SocketAddr = "10.0.0.4:5000".parse().unwrap();
//! let pr: SocketAddr = "10.0.0.1:3863".parse().unwrap();
//! w.write_sctp_data(Duration::from_secs(1), pe, pr, 0x1234, 1, 0, 11, b"\x0b\x00\x00\x04")
//!     .unwrap();
//! let cap = Capture::read(w.into_inner().unwrap().into(), &CaptureConfig::default()).unwrap();
//! assert_eq!(cap.messages[0].transport, Transport::Sctp { ppid: 11, stream: 0 });
//! assert_eq!(&cap.messages[0].payload[..], b"\x0b\x00\x00\x04");
//! ```

mod crc32c;
mod file;
mod net;
mod sctp;
mod tcp;
#[cfg(test)]
mod tests;
mod writer;

use bytes::Bytes;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::path::Path;

pub use crc32c::{crc32c, sctp_checksum};
pub use file::{Frame, PcapReader};
pub use net::link_type;
pub use tcp::{TcpDelivery, TcpFlow};
pub use writer::{PcapWriter, SctpChunk};

/// ASAP's well-known port (SCTP, TCP mapping, and UDP Server Announces).
pub const ASAP_PORT: u16 = 3863;
/// ENRP's well-known port (SCTP, TCP mapping, and UDP Presences).
pub const ENRP_PORT: u16 = 9901;
/// RSPLIB's Component Status Protocol monitor port (UDP).
pub const CSP_PORT: u16 = 2960;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// Which ports of a transport to extract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortFilter {
    /// Every port.
    Any,
    /// Only datagrams/segments whose source or destination port is in the list.
    List(Vec<u16>),
}

impl PortFilter {
    /// True if a packet between these ports passes the filter.
    pub fn matches(&self, src: u16, dst: u16) -> bool {
        match self {
            PortFilter::Any => true,
            PortFilter::List(l) => l.contains(&src) || l.contains(&dst),
        }
    }
}

/// What to extract and how strict to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// UDP ports whose payloads become messages (default 3863, 9901, 2960).
    pub udp_ports: PortFilter,
    /// TCP ports whose streams are reassembled (default 3863, 9901).
    pub tcp_ports: PortFilter,
    /// Check SCTP CRC32c checksums and report mismatches as malformed (default true;
    /// turn off for captures taken on the sending host with checksum offload).
    pub verify_sctp_checksum: bool,
    /// Most bytes of unfinished SCTP messages held per association, and of out-of-order
    /// TCP data held per flow, before the oldest is dropped with an error (default 16 MiB).
    pub max_reassembly_bytes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            udp_ports: PortFilter::List(vec![ASAP_PORT, ENRP_PORT, CSP_PORT]),
            tcp_ports: PortFilter::List(vec![ASAP_PORT, ENRP_PORT]),
            verify_sctp_checksum: true,
            max_reassembly_bytes: 16 << 20,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output types
// ---------------------------------------------------------------------------------------

/// The transport a message travelled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A complete SCTP user message (DATA or I-DATA, reassembled).
    Sctp {
        /// Payload protocol identifier (11 ASAP, 12 ENRP).
        ppid: u32,
        /// Stream identifier.
        stream: u16,
    },
    /// A UDP datagram's payload.
    Udp,
    /// Bytes that became in-order on a TCP stream with this frame (the whole stream is in
    /// [`TcpFlow`]).
    TcpStream,
}

/// One message (or TCP stream piece) found in a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedMessage {
    /// 1-based frame number (as Wireshark counts) of the frame that completed the message.
    pub frame_no: u64,
    /// Capture time of that frame, since the Unix epoch.
    pub timestamp: Duration,
    /// Source transport address (of the completing frame).
    pub src: SocketAddr,
    /// Destination transport address.
    pub dst: SocketAddr,
    /// Transport and its per-message metadata.
    pub transport: Transport,
    /// The message bytes.
    pub payload: Bytes,
}

/// The protocol layer an error or skip belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The capture file's own structure (headers, blocks, records).
    File,
    /// Link layer (Ethernet, SLL, …).
    Link,
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// SCTP.
    Sctp,
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// What is wrong with a malformed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A header or field extends past the end of the data.
    Truncated {
        /// Bytes needed from the start of the layer.
        needed: usize,
        /// Bytes available in the layer.
        available: usize,
    },
    /// A field has an impossible value.
    Invalid(&'static str),
    /// The SCTP CRC32c does not match.
    BadChecksum {
        /// Checksum computed over the packet.
        computed: u32,
        /// Checksum in the packet.
        found: u32,
    },
    /// Reassembly buffers exceeded [`CaptureConfig::max_reassembly_bytes`]; pending data
    /// of that association/flow was dropped.
    ReassemblyLimit,
}

/// A malformed frame (or an unreadable part of the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameError {
    /// Frame number (for [`Layer::File`] errors: the number the next frame would have had).
    pub frame_no: u64,
    /// Layer in which the problem was found.
    pub layer: Layer,
    /// Byte offset: within the frame's captured bytes, or within the file for
    /// [`Layer::File`].
    pub offset: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame {}: {:?} at offset {}: ",
            self.frame_no, self.layer, self.offset
        )?;
        match self.kind {
            ErrorKind::Truncated { needed, available } => {
                write!(f, "truncated (need {needed} bytes, have {available})")
            }
            ErrorKind::Invalid(what) => write!(f, "invalid {what}"),
            ErrorKind::BadChecksum { computed, found } => {
                write!(f, "bad checksum 0x{found:08x} (computed 0x{computed:08x})")
            }
            ErrorKind::ReassemblyLimit => f.write_str("reassembly limit exceeded, data dropped"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Why a well-formed frame (or part of it) was not dissected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// An IPv4 or IPv6 fragment; fragments are not reassembled.
    IpFragment {
        /// Fragment offset in bytes (0 for the first fragment).
        offset: u16,
        /// More-fragments flag.
        more: bool,
    },
    /// The frame was cut by the capture's snap length before the end of its IP packet.
    SnapLength {
        /// Bytes captured.
        captured: u32,
        /// Bytes on the wire.
        original: u32,
    },
    /// The capture's link type is not supported.
    UnsupportedLinkType(u32),
    /// An IPv6 header chain this reader does not walk (ESP, jumbogram).
    UnsupportedIpv6(u8),
    /// An SCTP message whose fragments were still incomplete at the end of the capture
    /// (frame = the last fragment seen).
    IncompleteSctpMessage {
        /// Stream of the message.
        stream: u16,
        /// Bytes held.
        bytes: usize,
    },
    /// A TCP flow that ended with a hole: data after the hole was never delivered
    /// (frame = the last segment of the flow).
    TcpGap {
        /// Bytes held beyond the hole.
        bytes: usize,
    },
}

/// A frame (or part of one) seen but not dissected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SkippedFrame {
    /// Frame number.
    pub frame_no: u64,
    /// Why.
    pub reason: SkipReason,
}

/// One output of the [`Dissector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureEvent {
    /// A message.
    Message(CapturedMessage),
    /// A malformed frame.
    Malformed(FrameError),
    /// A frame not (fully) dissected.
    Skipped(SkippedFrame),
}

/// Counters over a dissection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames read.
    pub frames: u64,
    /// IPv4 packets.
    pub ipv4: u64,
    /// IPv6 packets.
    pub ipv6: u64,
    /// Frames that carried no IP (ARP, LLC, …).
    pub non_ip: u64,
    /// IP packets of protocols other than SCTP, UDP, TCP (ICMP, IGMP, …).
    pub other_ip: u64,
    /// SCTP packets.
    pub sctp_packets: u64,
    /// SCTP chunks of all types.
    pub sctp_chunks: u64,
    /// DATA and I-DATA chunks.
    pub sctp_data_chunks: u64,
    /// DATA / I-DATA chunks dropped as retransmissions of a TSN already seen.
    pub sctp_duplicate_tsns: u64,
    /// Complete SCTP user messages.
    pub sctp_messages: u64,
    /// UDP datagrams (all ports).
    pub udp_datagrams: u64,
    /// TCP segments (all ports).
    pub tcp_segments: u64,
    /// TCP payload bytes dropped as already delivered (retransmissions, overlaps).
    pub tcp_retransmitted_bytes: u64,
    /// Malformed-frame events.
    pub malformed: u64,
    /// Skipped-frame events.
    pub skipped: u64,
}

/// Everything found in a capture.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// Messages in completion order.
    pub messages: Vec<CapturedMessage>,
    /// Malformed frames.
    pub errors: Vec<FrameError>,
    /// Frames not (fully) dissected.
    pub skipped: Vec<SkippedFrame>,
    /// Reassembled TCP streams, one per connection and direction, in order of first
    /// appearance.
    pub tcp_flows: Vec<TcpFlow>,
    /// Counters.
    pub stats: CaptureStats,
}

/// A capture file whose global header / first block cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileError {
    /// Byte offset in the file.
    pub offset: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Truncated { needed, available } => write!(
                f,
                "capture file truncated at offset {}: need {needed} bytes, have {available}",
                self.offset
            ),
            ErrorKind::Invalid(what) => write!(f, "invalid {what} at offset {}", self.offset),
            other => write!(f, "{other:?} at offset {}", self.offset),
        }
    }
}

impl std::error::Error for FileError {}

/// Error of [`Capture::read_file`].
#[derive(Debug)]
pub enum ReadFileError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is not a readable capture.
    Format(FileError),
}

impl fmt::Display for ReadFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadFileError::Io(e) => write!(f, "{e}"),
            ReadFileError::Format(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadFileError {}

impl Capture {
    /// Reads and dissects a whole capture held in memory.
    pub fn read(data: Bytes, config: &CaptureConfig) -> Result<Capture, FileError> {
        let reader = PcapReader::new(data)?;
        let mut d = Dissector::new(config.clone());
        for frame in reader {
            match frame {
                Ok(frame) => d.handle_frame(&frame),
                Err(e) => d.handle_file_error(e),
            }
        }
        d.finish();
        let mut cap = Capture::default();
        while let Some(ev) = d.poll_event() {
            match ev {
                CaptureEvent::Message(m) => cap.messages.push(m),
                CaptureEvent::Malformed(e) => cap.errors.push(e),
                CaptureEvent::Skipped(s) => cap.skipped.push(s),
            }
        }
        cap.stats = d.stats();
        cap.tcp_flows = d.into_tcp_flows();
        Ok(cap)
    }

    /// Reads a capture file and dissects it.
    pub fn read_file(
        path: impl AsRef<Path>,
        config: &CaptureConfig,
    ) -> Result<Capture, ReadFileError> {
        let data = std::fs::read(path).map_err(ReadFileError::Io)?;
        Capture::read(data.into(), config).map_err(ReadFileError::Format)
    }
}

// ---------------------------------------------------------------------------------------
// Dissector
// ---------------------------------------------------------------------------------------

/// Stateful dissector: feed frames with [`Dissector::handle_frame`], take results with
/// [`Dissector::poll_event`]. Holds SCTP and TCP reassembly state across frames.
#[derive(Debug)]
pub struct Dissector {
    config: CaptureConfig,
    events: VecDeque<CaptureEvent>,
    sctp: HashMap<sctp::AssocKey, sctp::AssocState>,
    /// Association keys in order of first appearance (deterministic `finish` output).
    sctp_order: Vec<sctp::AssocKey>,
    tcp: tcp::TcpTable,
    stats: CaptureStats,
}

/// Context of the frame being dissected, handed down the layers.
pub(crate) struct FrameCtx<'a> {
    pub(crate) frame_no: u64,
    pub(crate) timestamp: Duration,
    /// The frame's captured bytes (payloads are zero-copy slices of it).
    pub(crate) data: &'a Bytes,
}

impl Dissector {
    /// A dissector with the given configuration.
    pub fn new(config: CaptureConfig) -> Self {
        Dissector {
            config,
            events: VecDeque::new(),
            sctp: HashMap::new(),
            sctp_order: Vec::new(),
            tcp: tcp::TcpTable::default(),
            stats: CaptureStats::default(),
        }
    }

    /// Dissects one frame.
    pub fn handle_frame(&mut self, frame: &Frame) {
        self.stats.frames += 1;
        let ctx = FrameCtx {
            frame_no: frame.frame_no,
            timestamp: frame.timestamp,
            data: &frame.data,
        };
        let ip = match net::dissect_link(frame.link_type, &frame.data) {
            Ok(net::LinkResult::Ip(ip)) => ip,
            Ok(net::LinkResult::NotIp) => {
                self.stats.non_ip += 1;
                return;
            }
            Ok(net::LinkResult::Skip(reason)) => {
                self.skip(frame.frame_no, reason);
                return;
            }
            Err(e) => {
                let e = FrameError {
                    frame_no: frame.frame_no,
                    ..e
                };
                self.malformed_or_snapped(frame, e);
                return;
            }
        };
        match ip.version {
            4 => self.stats.ipv4 += 1,
            _ => self.stats.ipv6 += 1,
        }
        if let Some(frag) = ip.fragment {
            self.skip(frame.frame_no, frag);
            return;
        }
        let ipp = net::IpPayload {
            src: ip.src,
            dst: ip.dst,
            offset: ip.payload_offset,
            data: ip.payload,
        };
        match ip.protocol {
            net::PROTO_SCTP => {
                self.stats.sctp_packets += 1;
                sctp::dissect(self, &ctx, &ipp);
            }
            net::PROTO_UDP => self.udp(&ctx, &ipp),
            net::PROTO_TCP => {
                self.stats.tcp_segments += 1;
                let Dissector {
                    config,
                    events,
                    tcp,
                    stats,
                    ..
                } = self;
                tcp.dissect(config, events, stats, &ctx, &ipp);
            }
            _ => self.stats.other_ip += 1,
        }
    }

    /// Records a file-level error the [`PcapReader`] reported.
    pub fn handle_file_error(&mut self, e: FrameError) {
        self.malformed(e);
    }

    /// Ends the capture: reports SCTP messages whose fragments never completed and TCP
    /// flows that end with a hole, as [`SkippedFrame`]s.
    pub fn finish(&mut self) {
        for key in std::mem::take(&mut self.sctp_order) {
            if let Some(state) = self.sctp.remove(&key) {
                for (frame_no, stream, bytes) in state.incomplete() {
                    self.skip(
                        frame_no,
                        SkipReason::IncompleteSctpMessage { stream, bytes },
                    );
                }
            }
        }
        for (frame_no, bytes) in self.tcp.gaps() {
            self.skip(frame_no, SkipReason::TcpGap { bytes });
        }
    }

    /// The next result, in frame order.
    pub fn poll_event(&mut self) -> Option<CaptureEvent> {
        self.events.pop_front()
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// The TCP flows reassembled so far.
    pub fn tcp_flows(&self) -> &[TcpFlow] {
        self.tcp.flows()
    }

    /// Consumes the dissector, returning its TCP flows.
    pub fn into_tcp_flows(self) -> Vec<TcpFlow> {
        self.tcp.into_flows()
    }

    fn udp(&mut self, ctx: &FrameCtx<'_>, ip: &net::IpPayload<'_>) {
        self.stats.udp_datagrams += 1;
        let d = ip.data;
        let err = |offset: usize, kind| FrameError {
            frame_no: ctx.frame_no,
            layer: Layer::Udp,
            offset: ip.offset + offset,
            kind,
        };
        let Some(h) = rd::arr::<8>(d, 0) else {
            self.malformed(err(
                0,
                ErrorKind::Truncated {
                    needed: 8,
                    available: d.len(),
                },
            ));
            return;
        };
        let sport = u16::from_be_bytes([h[0], h[1]]);
        let dport = u16::from_be_bytes([h[2], h[3]]);
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if len < 8 {
            self.malformed(err(4, ErrorKind::Invalid("UDP length < 8")));
            return;
        }
        let Some(payload) = d.get(8..len) else {
            self.malformed(err(
                0,
                ErrorKind::Truncated {
                    needed: len,
                    available: d.len(),
                },
            ));
            return;
        };
        if !self.config.udp_ports.matches(sport, dport) {
            return;
        }
        self.events
            .push_back(CaptureEvent::Message(CapturedMessage {
                frame_no: ctx.frame_no,
                timestamp: ctx.timestamp,
                src: SocketAddr::new(ip.src, sport),
                dst: SocketAddr::new(ip.dst, dport),
                transport: Transport::Udp,
                payload: ctx.data.slice_ref(payload),
            }));
    }

    /// A link/IP-layer error: if the frame was cut by the snap length, that explains it.
    fn malformed_or_snapped(&mut self, frame: &Frame, e: FrameError) {
        let captured = u32::try_from(frame.data.len()).unwrap_or(u32::MAX);
        if matches!(e.kind, ErrorKind::Truncated { .. }) && captured < frame.original_len {
            self.skip(
                frame.frame_no,
                SkipReason::SnapLength {
                    captured,
                    original: frame.original_len,
                },
            );
        } else {
            self.malformed(e);
        }
    }

    pub(crate) fn malformed(&mut self, e: FrameError) {
        self.stats.malformed += 1;
        self.events.push_back(CaptureEvent::Malformed(e));
    }

    fn skip(&mut self, frame_no: u64, reason: SkipReason) {
        self.stats.skipped += 1;
        self.events
            .push_back(CaptureEvent::Skipped(SkippedFrame { frame_no, reason }));
    }
}

/// Checked reads of big-/little-endian integers from a byte slice.
pub(crate) mod rd {
    /// `N` bytes at `off`, or `None`.
    pub(crate) fn arr<const N: usize>(d: &[u8], off: usize) -> Option<[u8; N]> {
        let s = d.get(off..off.checked_add(N)?)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Some(a)
    }
    pub(crate) fn u8(d: &[u8], off: usize) -> Option<u8> {
        d.get(off).copied()
    }
    pub(crate) fn be16(d: &[u8], off: usize) -> Option<u16> {
        arr(d, off).map(u16::from_be_bytes)
    }
    pub(crate) fn be32(d: &[u8], off: usize) -> Option<u32> {
        arr(d, off).map(u32::from_be_bytes)
    }
    /// 16 bits in the given byte order.
    pub(crate) fn u16e(d: &[u8], off: usize, le: bool) -> Option<u16> {
        arr(d, off).map(|a| {
            if le {
                u16::from_le_bytes(a)
            } else {
                u16::from_be_bytes(a)
            }
        })
    }
    /// 32 bits in the given byte order.
    pub(crate) fn u32e(d: &[u8], off: usize, le: bool) -> Option<u32> {
        arr(d, off).map(|a| {
            if le {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        })
    }
}
