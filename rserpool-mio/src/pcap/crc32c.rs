//! CRC32c (Castagnoli), as SCTP uses it (RFC 9260 Appendix A).

/// Reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC32c of `data` (initial value and final XOR all ones; `crc32c(b"123456789")` is
/// `0xE306_9283`).
pub fn crc32c(data: &[u8]) -> u32 {
    !update(!0, data)
}

/// The SCTP checksum of a whole SCTP packet (common header + chunks), computed with the
/// checksum field (bytes 8..12) taken as zero, returned as the big-endian `u32` that
/// belongs in that field (SCTP stores the CRC's bytes least significant first). Packets
/// shorter than the 12-byte common header are checksummed as they are.
pub fn sctp_checksum(packet: &[u8]) -> u32 {
    let head = packet.get(..8).unwrap_or(packet);
    let mut crc = update(!0, head);
    if let Some(rest) = packet.get(12..) {
        crc = update(crc, &[0; 4]);
        crc = update(crc, rest);
    }
    (!crc).swap_bytes()
}
