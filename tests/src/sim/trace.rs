//! The world's trace: what every node sent, received and suffered, in order.

use super::fault::Fault;
use super::node::NodeId;
use bytes::Bytes;
use core::fmt::Write as _;
use core::net::SocketAddr;
use rserpool_core::io::AssocIdAllocator;
use rserpool_core::{AssocDownReason, AssocId, ChannelKind, Instant};

/// Turns a payload into a one-line summary for the trace (e.g. a decoded ASAP/ENRP
/// message): `(ppid, payload) -> Some(summary)`, or `None` to show only the length.
pub type PayloadFormatter = Box<dyn Fn(u32, &[u8]) -> Option<String>>;

/// One line of the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRecord {
    /// Simulated time.
    pub at: Instant,
    /// The node concerned (`None` for world-wide faults).
    pub node: Option<NodeId>,
    /// Its incarnation at that time (0 for world-wide records).
    pub incarnation: u32,
    /// What happened.
    pub kind: TraceKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceKind {
    /// The node sent a message over an association (`to`: the peer node, if any).
    Send {
        /// The association.
        assoc: AssocId,
        /// The peer node.
        to: Option<NodeId>,
        /// PPID.
        ppid: u32,
        /// Stream.
        stream: u16,
        /// Payload.
        payload: Bytes,
    },
    /// The node sent a datagram.
    SendUdp {
        /// Destination (group or unicast).
        dest: SocketAddr,
        /// PPID.
        ppid: u32,
        /// Payload.
        payload: Bytes,
    },
    /// A message over an association was handed to the node's machine.
    Recv {
        /// The association (the receiver's id).
        assoc: AssocId,
        /// The sending node.
        from: NodeId,
        /// PPID.
        ppid: u32,
        /// Stream.
        stream: u16,
        /// Payload.
        payload: Bytes,
        /// Handed over on [`Fault::Resume`] from what the node's kernel buffered while
        /// the process hung (it crossed the network earlier).
        buffered: bool,
    },
    /// A datagram was handed to the node's machine.
    RecvUdp {
        /// The sending node.
        from_node: NodeId,
        /// The source address given to the machine.
        from: SocketAddr,
        /// PPID.
        ppid: u32,
        /// Payload.
        payload: Bytes,
        /// Handed over on resume from the hung process's buffer (see [`TraceKind::Recv`]).
        buffered: bool,
    },
    /// The node asked for a new association.
    Connect {
        /// The machine-chosen id.
        assoc: AssocId,
        /// Addresses asked for.
        addrs: Vec<SocketAddr>,
        /// Channel kind.
        channel: ChannelKind,
        /// The node listening there, if any.
        to: Option<NodeId>,
    },
    /// The node closed an association.
    Close {
        /// The association.
        assoc: AssocId,
        /// Abort rather than graceful shutdown.
        abort: bool,
    },
    /// `handle_assoc_up` was called.
    Up {
        /// The association (the receiver's id).
        assoc: AssocId,
        /// The peer node.
        peer: NodeId,
    },
    /// `handle_assoc_down` was called.
    Down {
        /// The association.
        assoc: AssocId,
        /// The reason given.
        reason: AssocDownReason,
    },
    /// `handle_timeout` was called.
    Timeout,
    /// The application called into the machine ([`World::invoke`](super::World::invoke)).
    Invoke,
    /// The machine emitted an application event (its `Debug` form).
    Event(String),
    /// Something was not delivered (loss, partition, closed association, dead node).
    Drop(String),
    /// A fault was applied.
    Fault(Fault),
    /// The machine broke the driving contract (see [`World::violations`](super::World::violations)).
    Violation(String),
}

/// `m<n>` for machine-chosen ids (top bit set), `d<n>` for driver-chosen ones.
pub fn format_assoc_id(assoc: AssocId) -> String {
    if AssocIdAllocator::is_machine_chosen(assoc) {
        format!("m{}", assoc.0 & !AssocIdAllocator::MACHINE_BIT)
    } else {
        format!("d{}", assoc.0)
    }
}

fn time(at: Instant) -> String {
    let us = at.as_micros();
    format!("{:>4}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn payload(out: &mut String, ppid: u32, p: &[u8], fmt: Option<&PayloadFormatter>) {
    let _ = write!(out, " ppid={ppid} len={}", p.len());
    if let Some(summary) = fmt.and_then(|f| f(ppid, p)) {
        let _ = write!(out, " | {summary}");
    }
}

/// Formats one record; `name` maps node ids to names.
pub(crate) fn format_record(
    r: &TraceRecord,
    name: &dyn Fn(NodeId) -> String,
    fmt: Option<&PayloadFormatter>,
) -> String {
    let who = match r.node {
        Some(n) if r.incarnation > 1 => format!("{}/{}", name(n), r.incarnation),
        Some(n) => name(n),
        None => "*".to_string(),
    };
    let mut s = format!("{} {who:<8} ", time(r.at));
    let opt = |n: Option<NodeId>| n.map(name).unwrap_or_else(|| "?".to_string());
    match &r.kind {
        TraceKind::Send {
            assoc,
            to,
            ppid,
            stream,
            payload: p,
        } => {
            let _ = write!(s, "-> {} {} s={stream}", opt(*to), format_assoc_id(*assoc));
            payload(&mut s, *ppid, p, fmt);
        }
        TraceKind::SendUdp {
            dest,
            ppid,
            payload: p,
        } => {
            let _ = write!(s, "~> {dest}");
            payload(&mut s, *ppid, p, fmt);
        }
        TraceKind::Recv {
            assoc,
            from,
            ppid,
            stream,
            payload: p,
            buffered,
        } => {
            let _ = write!(
                s,
                "<- {} {} s={stream}",
                name(*from),
                format_assoc_id(*assoc)
            );
            payload(&mut s, *ppid, p, fmt);
            if *buffered {
                s.push_str(" (buffered)");
            }
        }
        TraceKind::RecvUdp {
            from_node,
            from,
            ppid,
            payload: p,
            buffered,
        } => {
            let _ = write!(s, "<~ {} ({from})", name(*from_node));
            payload(&mut s, *ppid, p, fmt);
            if *buffered {
                s.push_str(" (buffered)");
            }
        }
        TraceKind::Connect {
            assoc,
            addrs,
            channel,
            to,
        } => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            let _ = write!(
                s,
                "=> connect {} {channel:?} [{}] -> {}",
                format_assoc_id(*assoc),
                list.join(" "),
                opt(*to)
            );
        }
        TraceKind::Close { assoc, abort } => {
            let how = if *abort { "abort" } else { "shutdown" };
            let _ = write!(s, "=| close {} {how}", format_assoc_id(*assoc));
        }
        TraceKind::Up { assoc, peer } => {
            let _ = write!(s, "++ up {} peer {}", format_assoc_id(*assoc), name(*peer));
        }
        TraceKind::Down { assoc, reason } => {
            let _ = write!(s, "-- down {} {reason:?}", format_assoc_id(*assoc));
        }
        TraceKind::Timeout => s.push_str(".. timeout"),
        TraceKind::Invoke => s.push_str("@@ invoke"),
        TraceKind::Event(e) => {
            let _ = write!(s, "ev {e}");
        }
        TraceKind::Drop(what) => {
            let _ = write!(s, "xx {what}");
        }
        TraceKind::Fault(f) => {
            let _ = write!(s, "!! {f:?}");
        }
        TraceKind::Violation(v) => {
            let _ = write!(s, "?? {v}");
        }
    }
    s
}
