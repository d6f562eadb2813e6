//! Link layers and IP.

use super::rd;
use super::{ErrorKind, FrameError, Layer, SkipReason};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `LINKTYPE_*` values this reader understands.
pub mod link_type {
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    pub const NULL: u32 = 0;
    /// Ethernet (with 802.1Q / 802.1ad tags).
    pub const ETHERNET: u32 = 1;
    /// `DLT_RAW` as some BSDs number it (raw IP).
    pub const RAW_BSD: u32 = 12;
    /// `DLT_RAW` on OpenBSD (raw IP).
    pub const RAW_OPENBSD: u32 = 14;
    /// Raw IPv4 or IPv6, told apart by the version nibble.
    pub const RAW: u32 = 101;
    /// OpenBSD loopback: 4-byte address family, big-endian.
    pub const LOOP: u32 = 108;
    /// Linux cooked capture v1 (16-byte header).
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4.
    pub const IPV4: u32 = 228;
    /// Raw IPv6.
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2 (20-byte header).
    pub const LINUX_SLL2: u32 = 276;
}

pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_SCTP: u8 = 132;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86DD;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88A8;
const ETH_QINQ_OLD: u16 = 0x9100;

/// An IP packet, dissected.
pub(crate) struct IpPacket<'a> {
    pub(crate) version: u8,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) protocol: u8,
    /// Offset of the payload in the frame.
    pub(crate) payload_offset: usize,
    pub(crate) payload: &'a [u8],
    /// Set if this packet is a fragment (then `protocol`/`payload` are not usable).
    pub(crate) fragment: Option<SkipReason>,
}

/// The part of an IP packet a transport dissector needs.
pub(crate) struct IpPayload<'a> {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// Offset of `data` in the frame (for error offsets).
    pub(crate) offset: usize,
    pub(crate) data: &'a [u8],
}

pub(crate) enum LinkResult<'a> {
    Ip(IpPacket<'a>),
    NotIp,
    Skip(SkipReason),
}

fn err(layer: Layer, offset: usize, kind: ErrorKind) -> FrameError {
    // frame_no is filled in by the caller through `with_frame`.
    FrameError {
        frame_no: 0,
        layer,
        offset,
        kind,
    }
}

fn trunc(layer: Layer, offset: usize, needed: usize, available: usize) -> FrameError {
    err(layer, offset, ErrorKind::Truncated { needed, available })
}

/// Dissects the link layer and IP of a frame. Errors carry `frame_no` 0; the caller sets it.
pub(crate) fn dissect_link(link: u32, d: &[u8]) -> Result<LinkResult<'_>, FrameError> {
    match link {
        link_type::ETHERNET => {
            let Some(mut et) = rd::be16(d, 12) else {
                return Err(trunc(Layer::Link, 0, 14, d.len()));
            };
            let mut off = 14;
            while matches!(et, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD) {
                // Tag control information (2 bytes), then the inner EtherType.
                let Some(inner) = rd::be16(d, off + 2) else {
                    return Err(trunc(Layer::Link, off, 4, d.len().saturating_sub(off)));
                };
                et = inner;
                off += 4;
            }
            ethertype(et, d, off)
        }
        link_type::LINUX_SLL => {
            let Some(proto) = rd::be16(d, 14) else {
                return Err(trunc(Layer::Link, 0, 16, d.len()));
            };
            ethertype(proto, d, 16)
        }
        link_type::LINUX_SLL2 => {
            let Some(proto) = rd::be16(d, 0) else {
                return Err(trunc(Layer::Link, 0, 20, d.len()));
            };
            if d.len() < 20 {
                return Err(trunc(Layer::Link, 0, 20, d.len()));
            }
            ethertype(proto, d, 20)
        }
        link_type::RAW | link_type::RAW_BSD | link_type::RAW_OPENBSD => match d.first() {
            Some(b) if b >> 4 == 4 => ipv4(d, 0),
            Some(b) if b >> 4 == 6 => ipv6(d, 0),
            Some(_) => Err(err(
                Layer::Link,
                0,
                ErrorKind::Invalid("raw IP version nibble"),
            )),
            None => Err(trunc(Layer::Link, 0, 1, 0)),
        },
        link_type::IPV4 => ipv4(d, 0),
        link_type::IPV6 => ipv6(d, 0),
        link_type::NULL | link_type::LOOP => {
            let Some(a) = rd::arr::<4>(d, 0) else {
                return Err(trunc(Layer::Link, 0, 4, d.len()));
            };
            let af = if link == link_type::LOOP {
                u32::from_be_bytes(a)
            } else {
                // Host byte order of the capturing machine: AF values are small.
                let be = u32::from_be_bytes(a);
                if be > 0xFFFF { be.swap_bytes() } else { be }
            };
            match af {
                2 => ipv4(d, 4),
                // AF_INET6: 10 Linux, 24 NetBSD/OpenBSD/BSD-OS, 28 FreeBSD, 30 macOS.
                10 | 24 | 28 | 30 => ipv6(d, 4),
                _ => Ok(LinkResult::NotIp),
            }
        }
        other => Ok(LinkResult::Skip(SkipReason::UnsupportedLinkType(other))),
    }
}

fn ethertype(et: u16, d: &[u8], off: usize) -> Result<LinkResult<'_>, FrameError> {
    match et {
        ETH_IPV4 => ipv4(d, off),
        ETH_IPV6 => ipv6(d, off),
        _ => Ok(LinkResult::NotIp),
    }
}

/// IPv4 at `off` in the frame `d`.
fn ipv4(d: &[u8], off: usize) -> Result<LinkResult<'_>, FrameError> {
    let p = d.get(off..).unwrap_or_default();
    let t = |needed| trunc(Layer::Ipv4, off, needed, p.len());
    let Some(h) = rd::arr::<20>(p, 0) else {
        return Err(t(20));
    };
    if h[0] >> 4 != 4 {
        return Err(err(Layer::Ipv4, off, ErrorKind::Invalid("IPv4 version")));
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(err(
            Layer::Ipv4,
            off,
            ErrorKind::Invalid("IPv4 header length < 20"),
        ));
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total < ihl {
        return Err(err(
            Layer::Ipv4,
            off + 2,
            ErrorKind::Invalid("IPv4 total length < header length"),
        ));
    }
    // Bytes beyond the total length are link padding (or an Ethernet FCS).
    let Some(payload) = p.get(ihl..total) else {
        return Err(t(total));
    };
    let flags_frag = u16::from_be_bytes([h[6], h[7]]);
    let more = flags_frag & 0x2000 != 0;
    let frag_off = (flags_frag & 0x1fff) * 8;
    let fragment = (more || frag_off != 0).then_some(SkipReason::IpFragment {
        offset: frag_off,
        more,
    });
    Ok(LinkResult::Ip(IpPacket {
        version: 4,
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        protocol: h[9],
        payload_offset: off + ihl,
        payload,
        fragment,
    }))
}

/// IPv6 at `off` in the frame `d`, walking extension headers.
fn ipv6(d: &[u8], off: usize) -> Result<LinkResult<'_>, FrameError> {
    let p = d.get(off..).unwrap_or_default();
    let Some(h) = rd::arr::<40>(p, 0) else {
        return Err(trunc(Layer::Ipv6, off, 40, p.len()));
    };
    if h[0] >> 4 != 6 {
        return Err(err(Layer::Ipv6, off, ErrorKind::Invalid("IPv6 version")));
    }
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let mut next = h[6];
    if plen == 0 && next == 0 {
        // Payload length 0 with a Hop-by-Hop header: a jumbogram (RFC 2675).
        return Ok(LinkResult::Skip(SkipReason::UnsupportedIpv6(0)));
    }
    let Some(mut payload) = p.get(40..40 + plen) else {
        return Err(trunc(Layer::Ipv6, off, 40 + plen, p.len()));
    };
    let src = IpAddr::V6(Ipv6Addr::from(rd::arr::<16>(&h, 8).unwrap_or_default()));
    let dst = IpAddr::V6(Ipv6Addr::from(rd::arr::<16>(&h, 24).unwrap_or_default()));
    let mut poff = off + 40;
    let mut fragment = None;
    loop {
        let ext_len = match next {
            // Hop-by-Hop, Routing, Destination Options, Mobility, HIP, Shim6.
            0 | 43 | 60 | 135 | 139 | 140 => rd::u8(payload, 1).map(|l| (usize::from(l) + 1) * 8),
            // Fragment header: fixed 8 bytes.
            44 => {
                if let Some(fo) = rd::be16(payload, 2) {
                    fragment = Some(SkipReason::IpFragment {
                        offset: fo & 0xfff8,
                        more: fo & 1 != 0,
                    });
                }
                Some(8)
            }
            // Authentication Header: length in 4-byte units, minus 2.
            51 => rd::u8(payload, 1).map(|l| (usize::from(l) + 2) * 4),
            // ESP: the rest is encrypted.
            50 => return Ok(LinkResult::Skip(SkipReason::UnsupportedIpv6(50))),
            _ => break,
        };
        let Some(rest) = ext_len.and_then(|l| payload.get(l..).map(|r| (l, r))) else {
            return Err(trunc(
                Layer::Ipv6,
                poff,
                ext_len.unwrap_or(2),
                payload.len(),
            ));
        };
        let Some(n) = rd::u8(payload, 0) else {
            return Err(trunc(Layer::Ipv6, poff, 1, 0));
        };
        next = n;
        poff += rest.0;
        payload = rest.1;
        if fragment.is_some() {
            break;
        }
    }
    Ok(LinkResult::Ip(IpPacket {
        version: 6,
        src,
        dst,
        protocol: next,
        payload_offset: poff,
        payload,
        fragment,
    }))
}
