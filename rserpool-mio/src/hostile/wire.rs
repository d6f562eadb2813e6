//! Byte-level helpers of the hostile suite: raw TLV and message builders (for input the
//! typed encoders refuse to produce), the TLV walker that finds every nesting level of a
//! message, and the hex loader for the RSPLIB capture vectors.

use bytes::Bytes;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rserpool_core::Protocol;

/// `n` rounded up to a multiple of 4.
pub fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// A TLV (type, length = 4 + value, zero padding). `value` longer than a TLV can say is
/// cut at 65,531 bytes.
pub fn tlv(ty: u16, value: &[u8]) -> Vec<u8> {
    let value = value.get(..65_531).unwrap_or(value);
    let len = 4 + value.len();
    let mut v = Vec::with_capacity(pad4(len));
    v.extend_from_slice(&ty.to_be_bytes());
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend_from_slice(value);
    v.resize(pad4(len), 0);
    v
}

/// A TLV whose length field says `len` whatever the value is (a length lie).
pub fn tlv_lying(ty: u16, len: u16, value: &[u8]) -> Vec<u8> {
    let mut v = tlv(ty, value);
    v[2..4].copy_from_slice(&len.to_be_bytes());
    v
}

/// A message: type, flags, length (RSPLIB convention: the padded size), body.
pub fn message(ty: u8, flags: u8, body: &[u8]) -> Bytes {
    let len = 4 + body.len();
    let mut v = Vec::with_capacity(pad4(len));
    v.push(ty);
    v.push(flags);
    v.extend_from_slice(&(pad4(len).min(0xffff) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v.resize(pad4(len), 0);
    Bytes::from(v)
}

/// Concatenation of parts.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// An IPv4 or IPv6 Address TLV.
pub fn addr_tlv(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => tlv(0x0001, &a.octets()),
        IpAddr::V6(a) => tlv(0x0002, &a.octets()),
    }
}

/// A transport TLV: `ty` (0x0004 SCTP, 0x0005 TCP, ...), port, transport use, address TLVs.
pub fn transport_tlv(ty: u16, port: u16, transport_use: u16, addrs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&transport_use.to_be_bytes());
    for a in addrs {
        v.extend_from_slice(a);
    }
    tlv(ty, &v)
}

/// A Pool Member Selection Policy TLV: type code and values.
pub fn policy_tlv(code: u32, values: &[u32]) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    for x in values {
        v.extend_from_slice(&x.to_be_bytes());
    }
    tlv(0x0008, &v)
}

/// A Pool Element TLV: identifier, home, life, then the given inner TLVs.
pub fn pe_tlv(pe_id: u32, home: u32, life: u32, inner: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&pe_id.to_be_bytes());
    v.extend_from_slice(&home.to_be_bytes());
    v.extend_from_slice(&life.to_be_bytes());
    for t in inner {
        v.extend_from_slice(t);
    }
    tlv(0x000a, &v)
}

/// A Pool Handle TLV.
pub fn ph_tlv(handle: &[u8]) -> Vec<u8> {
    tlv(0x0009, handle)
}

/// A PE Identifier TLV.
pub fn peid_tlv(id: u32) -> Vec<u8> {
    tlv(0x000e, &id.to_be_bytes())
}

/// One TLV found by [`walk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    /// Offset of its type field.
    pub start: usize,
    /// Its length field.
    pub len: usize,
    /// Its type (action bits included).
    pub ty: u16,
    /// Nesting depth (1 = a parameter of the message).
    pub depth: u8,
    /// Index of the enclosing node in the walk, if nested.
    pub parent: Option<usize>,
}

/// Bytes of fixed fields between the message header and the first TLV.
pub fn message_prefix(protocol: Protocol, ty: u8) -> usize {
    match protocol {
        Protocol::Asap => match ty {
            0x07 | 0x0a => 4,
            _ => 0,
        },
        Protocol::Enrp => match ty {
            0x04 | 0x07..=0x09 => 12,
            _ => 8,
        },
    }
}

/// Bytes of fixed fields between a container TLV's header and its nested TLVs; `None` for
/// parameters without nested TLVs.
fn container_prefix(ty: u16) -> Option<usize> {
    match ty & 0x3fff {
        0x000a => Some(12),
        0x0003 => Some(8),
        0x0004..=0x0007 => Some(4),
        0x000b => Some(4),
        0x000c => Some(0),
        _ => None,
    }
}

/// Every TLV of `msg` at every nesting level, in wire order (parents before children),
/// as far as the lengths allow walking.
pub fn walk(protocol: Protocol, msg: &[u8]) -> Vec<Node> {
    let mut out = Vec::new();
    let Some(&ty) = msg.first() else {
        return out;
    };
    let declared = msg
        .get(2..4)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let end = declared.min(msg.len());
    let from = 4 + message_prefix(protocol, ty);
    walk_range(msg, from, end, 1, None, &mut out);
    out
}

fn walk_range(
    msg: &[u8],
    mut pos: usize,
    end: usize,
    depth: u8,
    parent: Option<usize>,
    out: &mut Vec<Node>,
) {
    // A hostile length can make the walk long; depth is bounded by the container types.
    while pos + 4 <= end && out.len() < 4096 {
        let Some(h) = msg.get(pos..pos + 4) else {
            return;
        };
        let ty = u16::from_be_bytes([h[0], h[1]]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 4 {
            return;
        }
        let idx = out.len();
        out.push(Node {
            start: pos,
            len,
            ty,
            depth,
            parent,
        });
        if let Some(prefix) = container_prefix(ty)
            && depth < 6
        {
            let inner_end = (pos + len).min(end);
            walk_range(msg, pos + 4 + prefix, inner_end, depth + 1, Some(idx), out);
        }
        pos += pad4(len);
    }
}

/// The node indices enclosing `idx` (innermost first).
pub fn ancestors(nodes: &[Node], idx: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut cur = nodes.get(idx).and_then(|n| n.parent);
    while let Some(p) = cur {
        v.push(p);
        cur = nodes.get(p).and_then(|n| n.parent);
    }
    v
}

/// Reads the big-endian u16 at `at`.
pub fn get_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Writes a big-endian u16 at `at` (nothing if out of range).
pub fn set_u16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Adds `delta` to the u16 length field at `at` (saturating at 0 and 0xffff).
pub fn adjust_u16(b: &mut [u8], at: usize, delta: isize) {
    if let Some(v) = get_u16(b, at) {
        let n = v as isize + delta;
        set_u16(b, at, n.clamp(0, 0xffff) as u16);
    }
}

/// One message of the RSPLIB capture vectors.
#[derive(Clone, Debug)]
pub struct Vector {
    /// File stem, e.g. `asap-registration`.
    pub name: String,
    /// ASAP or ENRP (from the file name).
    pub protocol: Protocol,
    /// The message.
    pub data: Bytes,
}

/// Parses hex text: `#` starts a comment; everything but hex digits is ignored. `None` for
/// an odd number of digits.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::bytes)
        .filter(u8::is_ascii_hexdigit)
        .collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|c| {
            let s = std::str::from_utf8(c).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

/// Loads `*.hex` of a vectors directory (`asap-*` and `enrp-*`), sorted by name.
pub fn load_vectors(dir: &Path) -> std::io::Result<Vec<Vector>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let protocol = if name.starts_with("asap-") {
            Protocol::Asap
        } else if name.starts_with("enrp-") {
            Protocol::Enrp
        } else {
            continue;
        };
        let text = std::fs::read_to_string(&f)?;
        let Some(data) = parse_hex(&text) else {
            continue;
        };
        if data.len() >= 4 {
            out.push(Vector {
                name,
                protocol,
                data: Bytes::from(data),
            });
        }
    }
    Ok(out)
}

/// Finds `shared/vectors/rsplib-captures/messages`: `$RSERPOOL_VECTORS/rsplib-captures/
/// messages`, else `shared/vectors/...` in the current directory or one of its ancestors,
/// else the same from `start`.
pub fn find_vectors_dir(start: Option<&Path>) -> Option<PathBuf> {
    let rel = "rsplib-captures/messages";
    if let Ok(v) = std::env::var("RSERPOOL_VECTORS") {
        let p = Path::new(&v).join(rel);
        if p.is_dir() {
            return Some(p);
        }
    }
    let cwd = std::env::current_dir().ok();
    let roots = cwd.iter().map(PathBuf::as_path).chain(start);
    for root in roots {
        for d in root.ancestors() {
            let p = d.join("shared/vectors").join(rel);
            if p.is_dir() {
                return Some(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_nested_tlvs() {
        // The captured registration: PH, PE{ SCTP{ IPv4 }, policy }.
        let m = parse_hex(
            "010000380009000c4563686f506f6f6c000a0028051da79400000000000023280004001090000001\
             000100080a63000e0008000800000001",
        )
        .unwrap();
        let nodes = walk(Protocol::Asap, &m);
        let tys: Vec<(u16, u8)> = nodes.iter().map(|n| (n.ty, n.depth)).collect();
        assert_eq!(
            tys,
            vec![(0x9, 1), (0xa, 1), (0x4, 2), (0x1, 3), (0x8, 2)],
            "{nodes:?}"
        );
        assert_eq!(ancestors(&nodes, 3), vec![2, 1]);
    }

    #[test]
    fn builders() {
        assert_eq!(tlv(0x0009, b"abcde").len(), 12);
        assert_eq!(&tlv(0x0009, b"abcde")[..4], &[0, 9, 0, 9]);
        let m = message(0x05, 0, &ph_tlv(b"x"));
        assert_eq!(&m[..], &[5, 0, 0, 12, 0, 9, 0, 5, b'x', 0, 0, 0]);
        let mut b = m.to_vec();
        adjust_u16(&mut b, 2, -4);
        assert_eq!(get_u16(&b, 2), Some(8));
        adjust_u16(&mut b, 2, -100);
        assert_eq!(get_u16(&b, 2), Some(0));
        assert_eq!(parse_hex("# c\n0a0B ff"), Some(vec![0x0a, 0x0b, 0xff]));
        assert_eq!(parse_hex("abc"), None);
    }
}
