//! The reference tools behind the `hsdump`, `cspmonitor` and `rspload` binaries, as library
//! code so that tests can drive them without a process:
//!
//! * [`hsdump`]: a sans-IO ENRP client ([`hsdump::HsDump`], a [`rserpool_core::Machine`])
//!   that asks a registrar for its peer list and handlespace, and the text form of the
//!   result ([`hsdump::Dump`]);
//! * [`cspmonitor`]: the table of components built from CSP reports and its screen in
//!   RSPLIB's layout ([`cspmonitor::CspTable`]);
//! * [`rspload`]: the registrar load generator ([`rspload::run`]), which speaks plain ASAP
//!   over [`crate::transport::Transports`] for thousands of associations in one loop.

pub mod cspmonitor;
pub mod hsdump;
pub mod rspload;

use crate::cli::TransportChoice;
use crate::transport::TransportMode;
use rserpool_proto::transport::{TransportParameter, TransportProtocol};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;

/// The transport mode a `-transport=` choice selects.
pub fn transport_mode(choice: TransportChoice) -> TransportMode {
    match choice {
        TransportChoice::Sctp => TransportMode::Sctp,
        TransportChoice::Tcp => TransportMode::Tcp,
        TransportChoice::Auto => TransportMode::Auto,
    }
}

/// 32 random bits from the operating system (`/dev/urandom`; if that cannot be read, the
/// randomly keyed hasher of the standard library). For identifiers, not for cryptography.
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if from_os.is_ok() {
        return u32::from_ne_bytes(b);
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

/// A random non-zero 32-bit identifier (PE ids and server ids must not be 0).
pub fn random_nonzero_u32() -> u32 {
    loop {
        let v = random_u32();
        if v != 0 {
            return v;
        }
    }
}

/// One transport parameter as text: `SCTP 10.0.0.1, ::1 port 3863 (data plus control)`.
pub fn format_transport(t: &TransportParameter) -> String {
    let name = match t.protocol {
        TransportProtocol::Sctp => "SCTP",
        TransportProtocol::Tcp => "TCP",
        TransportProtocol::Udp => "UDP",
        TransportProtocol::UdpLite => "UDP-Lite",
        TransportProtocol::Dccp => "DCCP",
        TransportProtocol::Opaque => "Opaque",
    };
    let mut s = String::from(name);
    if t.protocol == TransportProtocol::Opaque {
        s.push(' ');
        for b in t.opaque.iter() {
            let _ = write!(s, "{b:02x}");
        }
        return s;
    }
    let addrs: Vec<String> = t.addresses.iter().map(ToString::to_string).collect();
    let _ = write!(s, " {} port {}", addrs.join(", "), t.port);
    match t.protocol {
        TransportProtocol::Sctp | TransportProtocol::Tcp => match t.transport_use {
            0 => s.push_str(" (data only)"),
            1 => s.push_str(" (data plus control)"),
            u => {
                let _ = write!(s, " (use 0x{u:04x})");
            }
        },
        TransportProtocol::Dccp => {
            let _ = write!(s, " (service code {})", t.dccp_service_code);
        }
        _ => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_read_well() {
        let t = TransportParameter::sctp(
            3863,
            1,
            ["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        );
        assert_eq!(
            format_transport(&t),
            "SCTP 10.0.0.1, ::1 port 3863 (data plus control)"
        );
        let t = TransportParameter::tcp(80, 0, ["127.0.0.1".parse().unwrap()]);
        assert_eq!(format_transport(&t), "TCP 127.0.0.1 port 80 (data only)");
        let t = TransportParameter::tcp(80, 7, ["127.0.0.1".parse().unwrap()]);
        assert_eq!(format_transport(&t), "TCP 127.0.0.1 port 80 (use 0x0007)");
    }

    #[test]
    fn random_ids_are_not_zero_and_vary() {
        let a: Vec<u32> = (0..8).map(|_| random_nonzero_u32()).collect();
        assert!(a.iter().all(|&v| v != 0));
        assert!(a.iter().any(|&v| v != a[0]), "{a:?}");
    }
}
