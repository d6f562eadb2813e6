//! SCTP: chunk walk, DATA / I-DATA extraction, TSN de-duplication, reassembly.

use super::net::IpPayload;
use super::rd;
use super::{
    CaptureEvent, CapturedMessage, Dissector, ErrorKind, FrameCtx, FrameError, Layer, Transport,
};
use bytes::{Bytes, BytesMut};
use core::net::SocketAddr;
use std::collections::{BTreeMap, HashMap, HashSet};

/// DATA chunk flags.
const FLAG_E: u8 = 0x01;
const FLAG_B: u8 = 0x02;
const FLAG_U: u8 = 0x04;

const CHUNK_DATA: u8 = 0;
const CHUNK_IDATA: u8 = 64;

/// One direction of one association.
///
/// Keyed by ports and the verification tag rather than by addresses: a multi-homed
/// association sends (and retransmits) over several address pairs, and its TSNs and
/// fragments must meet in one place. The 32-bit random tag makes collisions between
/// different associations with the same ports practically impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AssocKey {
    src_port: u16,
    dst_port: u16,
    vtag: u32,
}

#[derive(Debug)]
struct Fragment {
    flags: u8,
    /// SSN (DATA) or 0 (I-DATA).
    ssn: u16,
    /// PPID for DATA and for the first I-DATA fragment; FSN for later I-DATA fragments.
    ppid: u32,
    frame_no: u64,
    data: Bytes,
}

/// Reassembly state of one association direction.
#[derive(Debug, Default)]
pub(crate) struct AssocState {
    seen_tsns: HashSet<u32>,
    /// DATA fragments per stream, by TSN.
    data: HashMap<u16, BTreeMap<u32, Fragment>>,
    /// I-DATA fragments per (stream, unordered, MID), by FSN.
    idata: HashMap<(u16, bool, u32), BTreeMap<u32, Fragment>>,
    /// Bytes held in `data` and `idata`.
    held: usize,
}

impl AssocState {
    /// (last frame, stream, bytes) of every message still incomplete, in stream order.
    pub(crate) fn incomplete(&self) -> Vec<(u64, u16, usize)> {
        let mut v: Vec<(u64, u16, usize)> = Vec::new();
        let mut streams: Vec<_> = self.data.iter().collect();
        streams.sort_by_key(|(s, _)| **s);
        for (stream, frags) in streams {
            if !frags.is_empty() {
                let last = frags.values().map(|f| f.frame_no).max().unwrap_or(0);
                v.push((last, *stream, frags.values().map(|f| f.data.len()).sum()));
            }
        }
        let mut msgs: Vec<_> = self.idata.iter().collect();
        msgs.sort_by_key(|(k, _)| **k);
        for ((stream, _, _), frags) in msgs {
            if !frags.is_empty() {
                let last = frags.values().map(|f| f.frame_no).max().unwrap_or(0);
                v.push((last, *stream, frags.values().map(|f| f.data.len()).sum()));
            }
        }
        v.sort();
        v
    }
}

/// Dissects one SCTP packet.
pub(crate) fn dissect(d: &mut Dissector, ctx: &FrameCtx<'_>, ip: &IpPayload<'_>) {
    let p = ip.data;
    let err = |offset: usize, kind| FrameError {
        frame_no: ctx.frame_no,
        layer: Layer::Sctp,
        offset: ip.offset + offset,
        kind,
    };
    let (Some(sport), Some(dport), Some(vtag), Some(cksum)) = (
        rd::be16(p, 0),
        rd::be16(p, 2),
        rd::be32(p, 4),
        rd::be32(p, 8),
    ) else {
        d.malformed(err(
            0,
            ErrorKind::Truncated {
                needed: 12,
                available: p.len(),
            },
        ));
        return;
    };
    if d.config.verify_sctp_checksum {
        let computed = super::sctp_checksum(p);
        if computed != cksum {
            d.malformed(err(
                8,
                ErrorKind::BadChecksum {
                    computed,
                    found: cksum,
                },
            ));
            return;
        }
    }
    let key = AssocKey {
        src_port: sport,
        dst_port: dport,
        vtag,
    };
    let src = SocketAddr::new(ip.src, sport);
    let dst = SocketAddr::new(ip.dst, dport);
    let mut off = 12;
    while off < p.len() {
        let (Some(ctype), Some(flags), Some(clen)) =
            (rd::u8(p, off), rd::u8(p, off + 1), rd::be16(p, off + 2))
        else {
            d.malformed(err(
                off,
                ErrorKind::Truncated {
                    needed: off + 4,
                    available: p.len(),
                },
            ));
            return;
        };
        let clen = usize::from(clen);
        if clen < 4 {
            d.malformed(err(off + 2, ErrorKind::Invalid("SCTP chunk length < 4")));
            return;
        }
        let Some(chunk) = p.get(off..off + clen) else {
            d.malformed(err(
                off,
                ErrorKind::Truncated {
                    needed: off + clen,
                    available: p.len(),
                },
            ));
            return;
        };
        d.stats.sctp_chunks += 1;
        let parsed = match ctype {
            CHUNK_DATA => data_chunk(chunk, flags),
            CHUNK_IDATA => idata_chunk(chunk, flags),
            _ => Ok(None),
        };
        match parsed {
            Ok(Some(c)) => {
                d.stats.sctp_data_chunks += 1;
                let c = ChunkData {
                    idata: c.idata,
                    flags: c.flags,
                    tsn: c.tsn,
                    stream: c.stream,
                    ssn: c.ssn,
                    mid: c.mid,
                    ppid_fsn: c.ppid_fsn,
                    data: ctx.data.slice_ref(c.data),
                };
                deliver(d, ctx, key, src, dst, c, ip.offset + off);
            }
            Ok(None) => {}
            Err((o, kind)) => {
                d.malformed(err(off + o, kind));
                return;
            }
        }
        // The last chunk's padding may be missing in a snapped or sloppy packet.
        off = off.saturating_add(clen.next_multiple_of(4));
    }
}

struct ChunkData<D> {
    idata: bool,
    flags: u8,
    tsn: u32,
    stream: u16,
    ssn: u16,
    /// I-DATA message identifier.
    mid: u32,
    /// PPID, or the FSN of a non-first I-DATA fragment.
    ppid_fsn: u32,
    data: D,
}

type ChunkResult<'a> = Result<Option<ChunkData<&'a [u8]>>, (usize, ErrorKind)>;

fn data_chunk(c: &[u8], flags: u8) -> ChunkResult<'_> {
    let (Some(tsn), Some(stream), Some(ssn), Some(ppid)) = (
        rd::be32(c, 4),
        rd::be16(c, 8),
        rd::be16(c, 10),
        rd::be32(c, 12),
    ) else {
        return Err((2, ErrorKind::Invalid("DATA chunk length < 16")));
    };
    let data = c.get(16..).unwrap_or_default();
    if data.is_empty() {
        return Err((2, ErrorKind::Invalid("DATA chunk without user data")));
    }
    Ok(Some(ChunkData {
        idata: false,
        flags,
        tsn,
        stream,
        ssn,
        mid: 0,
        ppid_fsn: ppid,
        data,
    }))
}

fn idata_chunk(c: &[u8], flags: u8) -> ChunkResult<'_> {
    let (Some(tsn), Some(stream), Some(mid), Some(ppid_fsn)) = (
        rd::be32(c, 4),
        rd::be16(c, 8),
        rd::be32(c, 12),
        rd::be32(c, 16),
    ) else {
        return Err((2, ErrorKind::Invalid("I-DATA chunk length < 20")));
    };
    let data = c.get(20..).unwrap_or_default();
    if data.is_empty() {
        return Err((2, ErrorKind::Invalid("I-DATA chunk without user data")));
    }
    Ok(Some(ChunkData {
        idata: true,
        flags,
        tsn,
        stream,
        ssn: 0,
        mid,
        ppid_fsn,
        data,
    }))
}

/// De-duplicates by TSN, then reassembles and emits complete messages.
fn deliver(
    d: &mut Dissector,
    ctx: &FrameCtx<'_>,
    key: AssocKey,
    src: SocketAddr,
    dst: SocketAddr,
    c: ChunkData<Bytes>,
    chunk_offset: usize,
) {
    if !d.sctp.contains_key(&key) {
        d.sctp_order.push(key);
    }
    let limit = d.config.max_reassembly_bytes;
    let state = d.sctp.entry(key).or_default();
    if !state.seen_tsns.insert(c.tsn) {
        d.stats.sctp_duplicate_tsns += 1;
        return;
    }
    let stream = c.stream;
    let emit = |d: &mut Dissector, ppid: u32, data: Bytes| {
        d.stats.sctp_messages += 1;
        d.events.push_back(CaptureEvent::Message(CapturedMessage {
            frame_no: ctx.frame_no,
            timestamp: ctx.timestamp,
            src,
            dst,
            transport: Transport::Sctp { ppid, stream },
            payload: data,
        }));
    };
    if c.flags & (FLAG_B | FLAG_E) == FLAG_B | FLAG_E {
        emit(d, c.ppid_fsn, c.data);
        return;
    }
    let frag = Fragment {
        flags: c.flags,
        ssn: c.ssn,
        ppid: c.ppid_fsn,
        frame_no: ctx.frame_no,
        data: c.data,
    };
    let len = frag.data.len();
    let over_limit = state.held.saturating_add(len) > limit;
    let done = if over_limit {
        // Drop everything this association holds: a sender this far out of step is
        // either lossy beyond repair or hostile.
        state.data.clear();
        state.idata.clear();
        state.held = 0;
        None
    } else if c.idata {
        let mkey = (c.stream, c.flags & FLAG_U != 0, c.mid);
        let frags = state.idata.entry(mkey).or_default();
        // Key by FSN; the first fragment's FSN is 0 by definition (its field holds the PPID).
        let fsn = if c.flags & FLAG_B != 0 { 0 } else { c.ppid_fsn };
        if frags.insert(fsn, frag).is_none() {
            state.held += len;
        }
        let r = try_idata(frags);
        if let Some((_, ref m)) = r {
            state.held = state.held.saturating_sub(m.len());
            state.idata.remove(&mkey);
        }
        r
    } else {
        let frags = state.data.entry(c.stream).or_default();
        if frags.insert(c.tsn, frag).is_none() {
            state.held += len;
        }
        let r = try_data(frags, c.tsn);
        if let Some((_, ref m)) = r {
            state.held = state.held.saturating_sub(m.len());
        }
        r
    };
    if over_limit {
        d.malformed(FrameError {
            frame_no: ctx.frame_no,
            layer: Layer::Sctp,
            offset: chunk_offset,
            kind: ErrorKind::ReassemblyLimit,
        });
    } else if let Some((ppid, msg)) = done {
        emit(d, ppid, msg);
    }
}

/// If the DATA fragment at `tsn` completes a message (B … E on consecutive TSNs, same U
/// flag and, for ordered messages, same SSN), removes it and returns (PPID, bytes).
fn try_data(frags: &mut BTreeMap<u32, Fragment>, tsn: u32) -> Option<(u32, Bytes)> {
    let mut first = tsn;
    let mut steps = 0usize;
    loop {
        let f = frags.get(&first)?;
        if f.flags & FLAG_B != 0 {
            break;
        }
        first = first.wrapping_sub(1);
        steps += 1;
        if steps > frags.len() {
            return None;
        }
    }
    let head = frags.get(&first)?;
    let (uflag, ssn) = (head.flags & FLAG_U, head.ssn);
    let mut last = first;
    let mut total = 0usize;
    loop {
        let f = frags.get(&last)?;
        if f.flags & FLAG_U != uflag || (uflag == 0 && f.ssn != ssn) {
            return None;
        }
        if last != first && f.flags & FLAG_B != 0 {
            return None;
        }
        total += f.data.len();
        if f.flags & FLAG_E != 0 {
            break;
        }
        last = last.wrapping_add(1);
        if last == first {
            return None;
        }
    }
    let ppid = head.ppid;
    let mut out = BytesMut::with_capacity(total);
    let mut t = first;
    loop {
        if let Some(f) = frags.remove(&t) {
            out.extend_from_slice(&f.data);
        }
        if t == last {
            break;
        }
        t = t.wrapping_add(1);
    }
    Some((ppid, out.freeze()))
}

/// If the I-DATA fragments hold FSN 0 (B) through an E fragment without holes, returns
/// (PPID, bytes); the caller removes the message.
fn try_idata(frags: &BTreeMap<u32, Fragment>) -> Option<(u32, Bytes)> {
    let head = frags.get(&0).filter(|f| f.flags & FLAG_B != 0)?;
    let (&last_fsn, last) = frags.iter().next_back()?;
    if last.flags & FLAG_E == 0 || u64::from(last_fsn) + 1 != frags.len() as u64 {
        return None;
    }
    let mut out = BytesMut::with_capacity(frags.values().map(|f| f.data.len()).sum());
    for f in frags.values() {
        out.extend_from_slice(&f.data);
    }
    Some((head.ppid, out.freeze()))
}
