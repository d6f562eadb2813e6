//! TCP: in-order byte streams per connection and direction.

use super::net::IpPayload;
use super::rd;
use super::{
    CaptureConfig, CaptureEvent, CaptureStats, CapturedMessage, ErrorKind, FrameCtx, FrameError,
    Layer, Transport,
};
use bytes::Bytes;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BTreeMap, HashMap, VecDeque};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;

/// A piece of a TCP stream that became in-order with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpDelivery {
    /// Offset of the piece in [`TcpFlow::data`].
    pub offset: u64,
    /// Length of the piece.
    pub len: usize,
    /// The frame that made it in-order (it may have filled a hole before data captured
    /// earlier).
    pub frame_no: u64,
    /// That frame's capture time.
    pub timestamp: Duration,
}

/// One direction of one TCP connection, reassembled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpFlow {
    /// Sender of this direction.
    pub src: SocketAddr,
    /// Receiver of this direction.
    pub dst: SocketAddr,
    /// True if the SYN was captured (else the stream starts at the first data seen).
    pub syn_seen: bool,
    /// True if a FIN was seen.
    pub fin_seen: bool,
    /// True if a RST was seen.
    pub rst_seen: bool,
    /// Frame of the first segment.
    pub first_frame: u64,
    /// Frame of the last segment.
    pub last_frame: u64,
    /// The in-order stream bytes.
    pub data: Vec<u8>,
    /// How `data` arrived, in order; the pieces tile `data` exactly.
    pub deliveries: Vec<TcpDelivery>,
}

impl TcpFlow {
    /// The delivery that holds stream offset `offset` (binary search).
    pub fn delivery_at(&self, offset: u64) -> Option<&TcpDelivery> {
        let i = self
            .deliveries
            .partition_point(|d| d.offset + d.len as u64 <= offset);
        self.deliveries.get(i).filter(|d| d.offset <= offset)
    }

    /// The bytes of one delivery.
    pub fn bytes_of(&self, d: &TcpDelivery) -> &[u8] {
        let start = usize::try_from(d.offset).unwrap_or(usize::MAX);
        self.data
            .get(start..start.saturating_add(d.len))
            .unwrap_or_default()
    }
}

/// Reassembly state of a flow (parallel to `TcpTable::flows`).
#[derive(Debug, Default)]
struct FlowState {
    /// Sequence number of the stream byte at `flow.data.len()`, once known.
    next_seq: Option<u32>,
    /// Initial sequence number from the SYN, if seen.
    isn: Option<u32>,
    /// Out-of-order data by stream offset.
    pending: BTreeMap<u64, Bytes>,
    /// Bytes in `pending`.
    held: usize,
}

/// All TCP flows of a capture.
#[derive(Debug, Default)]
pub(crate) struct TcpTable {
    /// The current connection of each (src, dst), as an index into `flows`.
    current: HashMap<(SocketAddr, SocketAddr), usize>,
    flows: Vec<TcpFlow>,
    states: Vec<FlowState>,
}

impl TcpTable {
    pub(crate) fn flows(&self) -> &[TcpFlow] {
        &self.flows
    }

    pub(crate) fn into_flows(self) -> Vec<TcpFlow> {
        self.flows
    }

    /// (last frame, bytes held) of every flow left with out-of-order data behind a hole.
    pub(crate) fn gaps(&self) -> Vec<(u64, usize)> {
        self.flows
            .iter()
            .zip(&self.states)
            .filter(|(_, s)| s.held > 0)
            .map(|(f, s)| (f.last_frame, s.held))
            .collect()
    }

    fn new_flow(&mut self, ctx: &FrameCtx<'_>, src: SocketAddr, dst: SocketAddr) -> usize {
        let i = self.flows.len();
        self.flows.push(TcpFlow {
            src,
            dst,
            syn_seen: false,
            fin_seen: false,
            rst_seen: false,
            first_frame: ctx.frame_no,
            last_frame: ctx.frame_no,
            data: Vec::new(),
            deliveries: Vec::new(),
        });
        self.states.push(FlowState::default());
        self.current.insert((src, dst), i);
        i
    }

    /// Dissects one TCP segment.
    pub(crate) fn dissect(
        &mut self,
        config: &CaptureConfig,
        events: &mut VecDeque<CaptureEvent>,
        stats: &mut CaptureStats,
        ctx: &FrameCtx<'_>,
        ip: &IpPayload<'_>,
    ) {
        let p = ip.data;
        let mut malformed = |offset: usize, kind| {
            stats.malformed += 1;
            events.push_back(CaptureEvent::Malformed(FrameError {
                frame_no: ctx.frame_no,
                layer: Layer::Tcp,
                offset: ip.offset + offset,
                kind,
            }));
        };
        let (Some(sport), Some(dport), Some(seq), Some(doff), Some(flags)) = (
            rd::be16(p, 0),
            rd::be16(p, 2),
            rd::be32(p, 4),
            rd::u8(p, 12),
            rd::u8(p, 13),
        ) else {
            malformed(
                0,
                ErrorKind::Truncated {
                    needed: 20,
                    available: p.len(),
                },
            );
            return;
        };
        let hlen = usize::from(doff >> 4) * 4;
        if hlen < 20 {
            malformed(12, ErrorKind::Invalid("TCP data offset < 5"));
            return;
        }
        let Some(payload) = p.get(hlen..) else {
            malformed(
                12,
                ErrorKind::Truncated {
                    needed: hlen,
                    available: p.len(),
                },
            );
            return;
        };
        if !config.tcp_ports.matches(sport, dport) {
            return;
        }
        let src = SocketAddr::new(ip.src, sport);
        let dst = SocketAddr::new(ip.dst, dport);
        let existing = self.current.get(&(src, dst)).copied();
        let i = if flags & SYN != 0 {
            match existing {
                // A retransmitted SYN of the current connection.
                Some(i) if self.states.get(i).and_then(|s| s.isn) == Some(seq) => i,
                // A new connection on the same address pair (or the first SYN seen
                // after mid-stream data without one).
                Some(i)
                    if self
                        .flows
                        .get(i)
                        .is_some_and(|f| f.data.is_empty() && !f.syn_seen) =>
                {
                    i
                }
                _ => self.new_flow(ctx, src, dst),
            }
        } else {
            match existing {
                Some(i) => i,
                None => self.new_flow(ctx, src, dst),
            }
        };
        let (Some(flow), Some(st)) = (self.flows.get_mut(i), self.states.get_mut(i)) else {
            return;
        };
        flow.last_frame = ctx.frame_no;
        if flags & SYN != 0 && st.isn.is_none() {
            flow.syn_seen = true;
            st.isn = Some(seq);
            st.next_seq = Some(seq.wrapping_add(1));
        }
        if flags & RST != 0 {
            flow.rst_seen = true;
            return;
        }
        if flags & FIN != 0 {
            flow.fin_seen = true;
        }
        if payload.is_empty() {
            return;
        }
        // Data of a SYN segment (TCP Fast Open) starts after the SYN's sequence number.
        let data_seq = if flags & SYN != 0 {
            seq.wrapping_add(1)
        } else {
            seq
        };
        let next_seq = *st.next_seq.get_or_insert(data_seq);
        let next_off = flow.data.len() as u64;
        // Signed distance in sequence space (RFC 1982 style), then absolute stream offset.
        let diff = i64::from(data_seq.wrapping_sub(next_seq) as i32);
        let off = next_off as i64 + diff;
        let len = payload.len() as i64;
        let start_len = flow.data.len();
        if off + len <= next_off as i64 {
            stats.tcp_retransmitted_bytes += payload.len() as u64;
        } else if off <= next_off as i64 {
            let skip = (next_off as i64 - off) as usize;
            stats.tcp_retransmitted_bytes += skip as u64;
            flow.data
                .extend_from_slice(payload.get(skip..).unwrap_or_default());
        } else {
            let off = off as u64;
            let seg = ctx.data.slice_ref(payload);
            let replace = st.pending.get(&off).is_none_or(|old| old.len() < seg.len());
            if replace {
                let old = st.pending.insert(off, seg).map_or(0, |b| b.len());
                st.held = (st.held + payload.len()).saturating_sub(old);
            }
            if st.held > config.max_reassembly_bytes {
                st.pending.clear();
                st.held = 0;
                malformed(0, ErrorKind::ReassemblyLimit);
            }
        }
        // Anything held that is now in order.
        while let Some(entry) = st.pending.first_entry() {
            let at = *entry.key();
            let cur = flow.data.len() as u64;
            if at > cur {
                break;
            }
            let seg = entry.remove();
            st.held = st.held.saturating_sub(seg.len());
            let skip = usize::try_from(cur - at).unwrap_or(usize::MAX);
            match seg.get(skip..) {
                Some(rest) if !rest.is_empty() => {
                    stats.tcp_retransmitted_bytes += skip as u64;
                    flow.data.extend_from_slice(rest);
                }
                _ => stats.tcp_retransmitted_bytes += seg.len() as u64,
            }
        }
        let delivered = flow.data.len() - start_len;
        if delivered == 0 {
            return;
        }
        st.next_seq =
            Some(next_seq.wrapping_add(flow.data.len().wrapping_sub(next_off as usize) as u32));
        flow.deliveries.push(TcpDelivery {
            offset: start_len as u64,
            len: delivered,
            frame_no: ctx.frame_no,
            timestamp: ctx.timestamp,
        });
        events.push_back(CaptureEvent::Message(CapturedMessage {
            frame_no: ctx.frame_no,
            timestamp: ctx.timestamp,
            src,
            dst,
            transport: Transport::TcpStream,
            payload: Bytes::copy_from_slice(flow.data.get(start_len..).unwrap_or_default()),
        }));
    }
}
