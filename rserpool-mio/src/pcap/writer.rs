//! Minimal classic-pcap writer for synthetic captures (raw IP link type, µs timestamps).

use super::crc32c::sctp_checksum;
use super::net::{PROTO_SCTP, PROTO_TCP, PROTO_UDP, link_type};
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::io::{self, Write};

/// One SCTP chunk for [`PcapWriter::write_sctp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SctpChunk<'a> {
    /// A DATA chunk (type 0). `flags` holds U (0x04), B (0x02), E (0x01).
    Data {
        /// Chunk flags.
        flags: u8,
        /// Transmission sequence number.
        tsn: u32,
        /// Stream identifier.
        stream: u16,
        /// Stream sequence number.
        ssn: u16,
        /// Payload protocol identifier.
        ppid: u32,
        /// User data.
        payload: &'a [u8],
    },
    /// An I-DATA chunk (type 64, RFC 8260).
    IData {
        /// Chunk flags (I 0x08, U 0x04, B 0x02, E 0x01).
        flags: u8,
        /// Transmission sequence number.
        tsn: u32,
        /// Stream identifier.
        stream: u16,
        /// Message identifier.
        mid: u32,
        /// PPID (first fragment) or fragment sequence number (later fragments).
        ppid_fsn: u32,
        /// User data.
        payload: &'a [u8],
    },
    /// Any other chunk: type, flags, value (the header and padding are added).
    Raw {
        /// Chunk type.
        chunk_type: u8,
        /// Chunk flags.
        flags: u8,
        /// Chunk value.
        value: &'a [u8],
    },
}

impl SctpChunk<'_> {
    /// DATA chunk flags B and E: an unfragmented message.
    pub const COMPLETE: u8 = 0x03;

    fn put(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let start = out.len();
        let (ty, flags) = match self {
            SctpChunk::Data { flags, .. } => (0u8, *flags),
            SctpChunk::IData { flags, .. } => (64, *flags),
            SctpChunk::Raw {
                chunk_type, flags, ..
            } => (*chunk_type, *flags),
        };
        out.extend([ty, flags, 0, 0]);
        match self {
            SctpChunk::Data {
                tsn,
                stream,
                ssn,
                ppid,
                payload,
                ..
            } => {
                out.extend(tsn.to_be_bytes());
                out.extend(stream.to_be_bytes());
                out.extend(ssn.to_be_bytes());
                out.extend(ppid.to_be_bytes());
                out.extend_from_slice(payload);
            }
            SctpChunk::IData {
                tsn,
                stream,
                mid,
                ppid_fsn,
                payload,
                ..
            } => {
                out.extend(tsn.to_be_bytes());
                out.extend(stream.to_be_bytes());
                out.extend([0, 0]);
                out.extend(mid.to_be_bytes());
                out.extend(ppid_fsn.to_be_bytes());
                out.extend_from_slice(payload);
            }
            SctpChunk::Raw { value, .. } => out.extend_from_slice(value),
        }
        let len = u16::try_from(out.len() - start).map_err(|_| too_big())?;
        if let Some(l) = out.get_mut(start + 2..start + 4) {
            l.copy_from_slice(&len.to_be_bytes());
        }
        out.resize(out.len().next_multiple_of(4), 0);
        Ok(())
    }
}

fn too_big() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "packet too large")
}

/// Writes a classic pcap file (`LINKTYPE_RAW`, microsecond timestamps, host-independent
/// little-endian layout) of synthetic IPv4/IPv6 packets with SCTP, UDP or TCP, all
/// checksums correct, so that tshark dissects them (as `text2pcap -S` would).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    ip_id: u16,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend(0xA1B2_C3D4u32.to_le_bytes());
        h.extend(2u16.to_le_bytes());
        h.extend(4u16.to_le_bytes());
        h.extend(0i32.to_le_bytes()); // thiszone
        h.extend(0u32.to_le_bytes()); // sigfigs
        h.extend(262_144u32.to_le_bytes()); // snaplen
        h.extend(link_type::RAW.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, ip_id: 1 })
    }

    /// Writes one record holding a raw IP packet.
    pub fn write_raw_ip(&mut self, ts: Duration, packet: &[u8]) -> io::Result<()> {
        let len = u32::try_from(packet.len()).map_err(|_| too_big())?;
        let secs = u32::try_from(ts.as_secs())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "timestamp beyond 2106"))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&ts.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(packet)
    }

    /// Writes an SCTP packet with the given chunks (CRC32c filled in).
    pub fn write_sctp(
        &mut self,
        ts: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        vtag: u32,
        chunks: &[SctpChunk<'_>],
    ) -> io::Result<()> {
        let mut p = Vec::with_capacity(64);
        p.extend(src.port().to_be_bytes());
        p.extend(dst.port().to_be_bytes());
        p.extend(vtag.to_be_bytes());
        p.extend([0u8; 4]);
        for c in chunks {
            c.put(&mut p)?;
        }
        let sum = sctp_checksum(&p);
        if let Some(c) = p.get_mut(8..12) {
            c.copy_from_slice(&sum.to_be_bytes());
        }
        let ip = self.ip_packet(src.ip(), dst.ip(), PROTO_SCTP, &p)?;
        self.write_raw_ip(ts, &ip)
    }

    /// Writes an SCTP packet with one unfragmented DATA chunk (B and E set, SSN 0).
    #[allow(clippy::too_many_arguments)]
    pub fn write_sctp_data(
        &mut self,
        ts: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        vtag: u32,
        tsn: u32,
        stream: u16,
        ppid: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let chunk = SctpChunk::Data {
            flags: SctpChunk::COMPLETE,
            tsn,
            stream,
            ssn: 0,
            ppid,
            payload,
        };
        self.write_sctp(ts, src, dst, vtag, &[chunk])
    }

    /// Writes a UDP datagram (checksum filled in).
    pub fn write_udp(
        &mut self,
        ts: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        let len = u16::try_from(payload.len() + 8).map_err(|_| too_big())?;
        let mut u = Vec::with_capacity(payload.len() + 8);
        u.extend(src.port().to_be_bytes());
        u.extend(dst.port().to_be_bytes());
        u.extend(len.to_be_bytes());
        u.extend([0, 0]);
        u.extend_from_slice(payload);
        let mut sum = transport_checksum(src.ip(), dst.ip(), PROTO_UDP, &u);
        if sum == 0 {
            sum = 0xFFFF;
        }
        if let Some(c) = u.get_mut(6..8) {
            c.copy_from_slice(&sum.to_be_bytes());
        }
        let ip = self.ip_packet(src.ip(), dst.ip(), PROTO_UDP, &u)?;
        self.write_raw_ip(ts, &ip)
    }

    /// Writes a TCP segment (20-byte header, window 65535, checksum filled in). `flags` is
    /// the TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    #[allow(clippy::too_many_arguments)]
    pub fn write_tcp(
        &mut self,
        ts: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) -> io::Result<()> {
        let mut t = Vec::with_capacity(payload.len() + 20);
        t.extend(src.port().to_be_bytes());
        t.extend(dst.port().to_be_bytes());
        t.extend(seq.to_be_bytes());
        t.extend(ack.to_be_bytes());
        t.extend([5 << 4, flags]);
        t.extend(0xFFFFu16.to_be_bytes());
        t.extend([0, 0, 0, 0]); // checksum, urgent pointer
        t.extend_from_slice(payload);
        let sum = transport_checksum(src.ip(), dst.ip(), PROTO_TCP, &t);
        if let Some(c) = t.get_mut(16..18) {
            c.copy_from_slice(&sum.to_be_bytes());
        }
        let ip = self.ip_packet(src.ip(), dst.ip(), PROTO_TCP, &t)?;
        self.write_raw_ip(ts, &ip)
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    fn ip_packet(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        payload: &[u8],
    ) -> io::Result<Vec<u8>> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(payload.len() + 20).map_err(|_| too_big())?;
                let mut h = Vec::with_capacity(usize::from(total));
                h.extend([0x45, 0]);
                h.extend(total.to_be_bytes());
                h.extend(self.ip_id.to_be_bytes());
                self.ip_id = self.ip_id.wrapping_add(1);
                h.extend([0x40, 0, 64, proto, 0, 0]); // DF, TTL 64
                h.extend(s.octets());
                h.extend(d.octets());
                let sum = !fold(sum16(0, &h));
                if let Some(c) = h.get_mut(10..12) {
                    c.copy_from_slice(&sum.to_be_bytes());
                }
                h.extend_from_slice(payload);
                Ok(h)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = u16::try_from(payload.len()).map_err(|_| too_big())?;
                let mut h = Vec::with_capacity(payload.len() + 40);
                h.extend([0x60, 0, 0, 0]);
                h.extend(plen.to_be_bytes());
                h.extend([proto, 64]);
                h.extend(s.octets());
                h.extend(d.octets());
                h.extend_from_slice(payload);
                Ok(h)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "source and destination address families differ",
            )),
        }
    }
}

/// One's-complement sum of 16-bit words (odd length padded with 0), not folded.
fn sum16(mut acc: u64, data: &[u8]) -> u64 {
    let mut it = data.chunks_exact(2);
    for w in &mut it {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = it.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// UDP/TCP checksum over the pseudo-header and `segment` (its checksum field zero).
fn transport_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(acc, &s.octets());
            acc = sum16(acc, &d.octets());
        }
        _ => {
            let o = |a: IpAddr| match a {
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
                IpAddr::V6(v) => v.octets(),
            };
            acc = sum16(acc, &o(src));
            acc = sum16(acc, &o(dst));
        }
    }
    acc += u64::from(proto);
    acc += segment.len() as u64;
    acc = sum16(acc, segment);
    !fold(acc)
}
