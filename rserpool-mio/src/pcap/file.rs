//! Capture file formats: classic pcap (both byte orders, µs/ns) and pcapng.

use super::rd;
use super::{ErrorKind, FileError, FrameError, Layer};
use bytes::Bytes;
use core::time::Duration;

const PCAP_MAGIC_US: u32 = 0xA1B2_C3D4;
const PCAP_MAGIC_NS: u32 = 0xA1B2_3C4D;
const NG_SHB: u32 = 0x0A0D_0D0A;
const NG_BYTE_ORDER: u32 = 0x1A2B_3C4D;
const NG_IDB: u32 = 0x0000_0001;
const NG_PB: u32 = 0x0000_0002;
const NG_SPB: u32 = 0x0000_0003;
const NG_EPB: u32 = 0x0000_0006;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// 1-based frame number in file order (packet blocks only, as Wireshark counts).
    pub frame_no: u64,
    /// Capture time since the Unix epoch.
    pub timestamp: Duration,
    /// Link type (`LINKTYPE_*`, see [`super::link_type`]).
    pub link_type: u32,
    /// pcapng interface id (0 for classic pcap).
    pub interface: u32,
    /// Length of the packet on the wire (may exceed `data.len()` when snapped).
    pub original_len: u32,
    /// The captured bytes.
    pub data: Bytes,
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: u32,
    snaplen: u32,
    /// Timestamp units per second.
    units: u64,
    /// `if_tsoffset`, seconds.
    offset: i64,
}

#[derive(Clone, Debug)]
enum Format {
    Classic {
        le: bool,
        nanos: bool,
        link_type: u32,
    },
    Ng {
        le: bool,
        interfaces: Vec<Interface>,
    },
}

/// Iterator over the frames of a classic pcap or pcapng file held in memory.
///
/// A structural problem in the file (truncated record, impossible block length) is
/// yielded once as a [`Layer::File`] error, after which the iterator ends: the rest of the
/// file cannot be framed reliably.
#[derive(Clone, Debug)]
pub struct PcapReader {
    data: Bytes,
    pos: usize,
    format: Format,
    next_frame: u64,
    done: bool,
}

impl PcapReader {
    /// Opens a capture: checks the global header (classic) or the first Section Header
    /// Block (pcapng).
    pub fn new(data: Bytes) -> Result<PcapReader, FileError> {
        let trunc = |needed| FileError {
            offset: 0,
            kind: ErrorKind::Truncated {
                needed,
                available: data.len(),
            },
        };
        let magic_be = rd::be32(&data, 0).ok_or_else(|| trunc(4))?;
        let classic = |le: bool, nanos: bool| -> Result<PcapReader, FileError> {
            let link = rd::u32e(&data, 20, le).ok_or_else(|| trunc(24))?;
            Ok(PcapReader {
                data: data.clone(),
                pos: 24,
                // Bits 16-31 carry FCS information (draft-ietf-opsawg-pcap); the IP length
                // bounds every payload, so a trailing FCS is ignored anyway.
                format: Format::Classic {
                    le,
                    nanos,
                    link_type: link & 0xFFFF,
                },
                next_frame: 1,
                done: false,
            })
        };
        match magic_be {
            PCAP_MAGIC_US => classic(false, false),
            PCAP_MAGIC_NS => classic(false, true),
            m if m.swap_bytes() == PCAP_MAGIC_US => classic(true, false),
            m if m.swap_bytes() == PCAP_MAGIC_NS => classic(true, true),
            NG_SHB => {
                let mut r = PcapReader {
                    data: data.clone(),
                    pos: 0,
                    format: Format::Ng {
                        le: false,
                        interfaces: Vec::new(),
                    },
                    next_frame: 1,
                    done: false,
                };
                // Validate the first SHB now so that garbage is a FileError.
                let le = shb_byte_order(&data, 0).map_err(|e| FileError {
                    offset: e.offset,
                    kind: e.kind,
                })?;
                r.format = Format::Ng {
                    le,
                    interfaces: Vec::new(),
                };
                Ok(r)
            }
            _ => Err(FileError {
                offset: 0,
                kind: ErrorKind::Invalid("capture file magic (neither pcap nor pcapng)"),
            }),
        }
    }

    fn file_error(&mut self, offset: usize, kind: ErrorKind) -> FrameError {
        self.done = true;
        FrameError {
            frame_no: self.next_frame,
            layer: Layer::File,
            offset,
            kind,
        }
    }

    fn truncated(&mut self, offset: usize, needed: usize) -> FrameError {
        let available = self.data.len().saturating_sub(offset);
        self.file_error(offset, ErrorKind::Truncated { needed, available })
    }

    fn next_classic(
        &mut self,
        le: bool,
        nanos: bool,
        link_type: u32,
    ) -> Option<Result<Frame, FrameError>> {
        let p = self.pos;
        if p >= self.data.len() {
            return None;
        }
        let d = &self.data;
        let (Some(sec), Some(frac), Some(incl), Some(orig)) = (
            rd::u32e(d, p, le),
            rd::u32e(d, p + 4, le),
            rd::u32e(d, p + 8, le),
            rd::u32e(d, p + 12, le),
        ) else {
            return Some(Err(self.truncated(p, 16)));
        };
        let start = p + 16;
        let incl = incl as usize;
        let Some(body) = start.checked_add(incl).and_then(|end| d.get(start..end)) else {
            return Some(Err(self.truncated(p, 16usize.saturating_add(incl))));
        };
        let data = d.slice_ref(body);
        let nanos_part = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        let timestamp = Duration::from_secs(u64::from(sec)) + Duration::from_nanos(nanos_part);
        self.pos = start + incl;
        let frame_no = self.next_frame;
        self.next_frame += 1;
        Some(Ok(Frame {
            frame_no,
            timestamp,
            link_type,
            interface: 0,
            original_len: orig,
            data,
        }))
    }

    fn next_ng(&mut self) -> Option<Result<Frame, FrameError>> {
        loop {
            let p = self.pos;
            if p >= self.data.len() {
                return None;
            }
            let Format::Ng { le, .. } = self.format else {
                return None;
            };
            let Some(btype_raw) = rd::be32(&self.data, p) else {
                return Some(Err(self.truncated(p, 8)));
            };
            // A Section Header Block can switch the byte order.
            let le = if btype_raw == NG_SHB {
                match shb_byte_order(&self.data, p) {
                    Ok(le) => le,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(FrameError {
                            frame_no: self.next_frame,
                            ..e
                        }));
                    }
                }
            } else {
                le
            };
            let (Some(btype), Some(blen)) =
                (rd::u32e(&self.data, p, le), rd::u32e(&self.data, p + 4, le))
            else {
                return Some(Err(self.truncated(p, 8)));
            };
            let blen = blen as usize;
            if blen < 12 || !blen.is_multiple_of(4) {
                return Some(Err(
                    self.file_error(p + 4, ErrorKind::Invalid("pcapng block length"))
                ));
            }
            let Some(block) = p.checked_add(blen).and_then(|end| self.data.get(p..end)) else {
                return Some(Err(self.truncated(p, blen)));
            };
            if rd::u32e(block, blen - 4, le) != Some(blen as u32) {
                return Some(Err(self.file_error(
                    p + blen - 4,
                    ErrorKind::Invalid("pcapng trailing block length"),
                )));
            }
            let body = self.data.slice(p + 8..p + blen - 4);
            self.pos = p + blen;
            match btype {
                NG_SHB => {
                    self.format = Format::Ng {
                        le,
                        interfaces: Vec::new(),
                    };
                }
                NG_IDB => match parse_idb(&body, le) {
                    Ok(i) => {
                        if let Format::Ng { interfaces, .. } = &mut self.format {
                            interfaces.push(i);
                        }
                    }
                    Err((off, kind)) => return Some(Err(self.file_error(p + 8 + off, kind))),
                },
                NG_EPB | NG_PB | NG_SPB => {
                    return Some(match self.packet_block(btype, &body, le) {
                        Ok(f) => Ok(f),
                        Err((off, kind)) => Err(self.file_error(p + 8 + off, kind)),
                    });
                }
                // Name resolution, statistics, decryption secrets, custom, …: not needed.
                _ => {}
            }
        }
    }

    fn packet_block(
        &mut self,
        btype: u32,
        body: &Bytes,
        le: bool,
    ) -> Result<Frame, (usize, ErrorKind)> {
        let Format::Ng { interfaces, .. } = &self.format else {
            return Err((
                0,
                ErrorKind::Invalid("packet block outside a pcapng section"),
            ));
        };
        let trunc = |needed| {
            (
                0,
                ErrorKind::Truncated {
                    needed,
                    available: body.len(),
                },
            )
        };
        let (iface_id, ts, caplen, orig, data_off) = match btype {
            NG_SPB => {
                let orig = rd::u32e(body, 0, le).ok_or_else(|| trunc(4))?;
                let snap = interfaces.first().map_or(u32::MAX, |i| i.snaplen);
                let snap = if snap == 0 { u32::MAX } else { snap };
                let avail = u32::try_from(body.len() - 4).unwrap_or(u32::MAX);
                (0u32, None, orig.min(snap).min(avail), orig, 4usize)
            }
            _ => {
                let (iface, hdr) = if btype == NG_EPB {
                    (rd::u32e(body, 0, le).ok_or_else(|| trunc(20))?, 4usize)
                } else {
                    // Obsolete Packet Block: 16-bit interface id, 16-bit drops count.
                    (
                        u32::from(rd::u16e(body, 0, le).ok_or_else(|| trunc(20))?),
                        4usize,
                    )
                };
                let (Some(hi), Some(lo), Some(cap), Some(orig)) = (
                    rd::u32e(body, hdr, le),
                    rd::u32e(body, hdr + 4, le),
                    rd::u32e(body, hdr + 8, le),
                    rd::u32e(body, hdr + 12, le),
                ) else {
                    return Err(trunc(20));
                };
                (
                    iface,
                    Some((u64::from(hi) << 32) | u64::from(lo)),
                    cap,
                    orig,
                    hdr + 16,
                )
            }
        };
        let Some(iface) = interfaces.get(iface_id as usize) else {
            return Err((
                0,
                ErrorKind::Invalid("packet block interface id (no such IDB)"),
            ));
        };
        let Some(data) = data_off
            .checked_add(caplen as usize)
            .and_then(|end| body.get(data_off..end))
        else {
            return Err((
                data_off,
                ErrorKind::Truncated {
                    needed: data_off.saturating_add(caplen as usize),
                    available: body.len(),
                },
            ));
        };
        let timestamp = ts.map_or(Duration::ZERO, |t| ng_time(t, iface.units, iface.offset));
        let frame_no = self.next_frame;
        self.next_frame += 1;
        Ok(Frame {
            frame_no,
            timestamp,
            link_type: iface.link_type,
            interface: iface_id,
            original_len: orig,
            data: body.slice_ref(data),
        })
    }
}

impl Iterator for PcapReader {
    type Item = Result<Frame, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.format {
            Format::Classic {
                le,
                nanos,
                link_type,
            } => self.next_classic(le, nanos, link_type),
            Format::Ng { .. } => self.next_ng(),
        }
    }
}

/// Byte order of the SHB at `p` (true = little-endian).
fn shb_byte_order(d: &[u8], p: usize) -> Result<bool, FrameError> {
    let err = |offset, kind| FrameError {
        frame_no: 0,
        layer: Layer::File,
        offset,
        kind,
    };
    match rd::be32(d, p + 8) {
        Some(NG_BYTE_ORDER) => Ok(false),
        Some(m) if m.swap_bytes() == NG_BYTE_ORDER => Ok(true),
        Some(_) => Err(err(p + 8, ErrorKind::Invalid("pcapng byte-order magic"))),
        None => Err(err(
            p,
            ErrorKind::Truncated {
                needed: 12,
                available: d.len().saturating_sub(p),
            },
        )),
    }
}

/// Parses an Interface Description Block body.
fn parse_idb(body: &[u8], le: bool) -> Result<Interface, (usize, ErrorKind)> {
    let (Some(link), Some(snaplen)) = (rd::u16e(body, 0, le), rd::u32e(body, 4, le)) else {
        return Err((
            0,
            ErrorKind::Truncated {
                needed: 8,
                available: body.len(),
            },
        ));
    };
    let mut iface = Interface {
        link_type: u32::from(link),
        snaplen,
        units: 1_000_000,
        offset: 0,
    };
    // Options: code u16, length u16, value padded to 4; opt_endofopt (0) ends them.
    let mut o = 8;
    while let (Some(code), Some(len)) = (rd::u16e(body, o, le), rd::u16e(body, o + 2, le)) {
        let len = usize::from(len);
        let Some(val) = body.get(o + 4..o + 4 + len) else {
            return Err((
                o,
                ErrorKind::Truncated {
                    needed: o + 4 + len,
                    available: body.len(),
                },
            ));
        };
        match (code, val) {
            (0, _) => break,
            (9, [r]) => {
                let r = *r;
                iface.units = if r & 0x80 == 0 {
                    10u64.checked_pow(u32::from(r))
                } else {
                    1u64.checked_shl(u32::from(r & 0x7f))
                }
                .filter(|&u| u > 0)
                .ok_or((o + 4, ErrorKind::Invalid("pcapng if_tsresol")))?;
            }
            (14, v) if v.len() == 8 => {
                let a = rd::arr::<8>(v, 0).unwrap_or_default();
                iface.offset = if le {
                    i64::from_le_bytes(a)
                } else {
                    i64::from_be_bytes(a)
                };
            }
            _ => {}
        }
        o += 4 + len.next_multiple_of(4);
    }
    Ok(iface)
}

/// A pcapng timestamp in `units` per second plus `offset` seconds, as a Duration since the
/// epoch (saturating at 0).
fn ng_time(ts: u64, units: u64, offset: i64) -> Duration {
    let secs = ts / units;
    let frac = u128::from(ts % units);
    // frac < units, so nanos < 1e9.
    let nanos = (frac * 1_000_000_000 / u128::from(units)) as u32;
    let secs = secs
        .checked_add_signed(offset)
        .unwrap_or(if offset < 0 { 0 } else { u64::MAX });
    Duration::new(secs, nanos)
}
