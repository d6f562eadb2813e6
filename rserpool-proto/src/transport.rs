//! Transport parameters (RFC 5354 §3.3-3.7, §3.16) and their addresses (§3.1-3.2).

use bytes::Bytes;
use core::net::IpAddr;
use smallvec::SmallVec;

/// Addresses of one transport parameter, in wire order (inline for the usual 1-2).
pub type AddressList = SmallVec<[IpAddr; 2]>;

/// Maximum addresses per transport parameter that RSPLIB accepts (`MAX_PE_TRANSPORTADDRESSES`).
pub const RSPLIB_MAX_ADDRESSES: usize = 64;

/// The protocol of a transport parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransportProtocol {
    /// SCTP Transport, 0x0004: port, transport use, one or more addresses.
    Sctp,
    /// TCP Transport, 0x0005: port, transport use (RSPLIB) / reserved (RFC), one address.
    Tcp,
    /// UDP Transport, 0x0006: port, reserved, one address.
    Udp,
    /// UDP-Lite Transport, 0x0007: port, reserved, one address.
    UdpLite,
    /// DCCP Transport, 0x0003: port, reserved, service code, one address.
    Dccp,
    /// Opaque Transport, 0x0010: opaque bytes.
    Opaque,
}

impl TransportProtocol {
    /// The parameter type code of this transport.
    pub fn parameter_type(self) -> u16 {
        match self {
            TransportProtocol::Dccp => 0x0003,
            TransportProtocol::Sctp => 0x0004,
            TransportProtocol::Tcp => 0x0005,
            TransportProtocol::Udp => 0x0006,
            TransportProtocol::UdpLite => 0x0007,
            TransportProtocol::Opaque => 0x0010,
        }
    }
}

/// Transport Use value "data only" (RFC 5354 §3.4).
pub const TRANSPORT_USE_DATA_ONLY: u16 = 0x0000;
/// Transport Use value "data plus control" (RFC 5354 §3.4).
pub const TRANSPORT_USE_DATA_PLUS_CONTROL: u16 = 0x0001;

/// One transport parameter: how to reach an endpoint.
///
/// A flat struct rather than an enum so that the handlespace can compare protocol and
/// transport use cheaply; fields that a protocol does not have are zero / empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransportParameter {
    /// Which transport parameter this is.
    pub protocol: TransportProtocol,
    /// Port (0 for Opaque).
    pub port: u16,
    /// The 16-bit field after the port: Transport Use for SCTP (and for TCP, as RSPLIB and
    /// Wireshark read it), reserved for UDP, UDP-Lite and DCCP. Kept verbatim.
    pub transport_use: u16,
    /// DCCP service code (0 for other protocols).
    pub dccp_service_code: u32,
    /// Addresses, in wire order (empty for Opaque).
    pub addresses: AddressList,
    /// Opaque transport data (empty for other protocols).
    pub opaque: Bytes,
}

impl TransportParameter {
    /// An SCTP transport with the given port, transport use and addresses.
    pub fn sctp(port: u16, transport_use: u16, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        Self::with(TransportProtocol::Sctp, port, transport_use, addresses)
    }

    /// A TCP transport (one address expected on the wire).
    pub fn tcp(port: u16, transport_use: u16, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        Self::with(TransportProtocol::Tcp, port, transport_use, addresses)
    }

    /// A transport parameter of any addressed protocol.
    pub fn with(
        protocol: TransportProtocol,
        port: u16,
        transport_use: u16,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        TransportParameter {
            protocol,
            port,
            transport_use,
            dccp_service_code: 0,
            addresses: addresses.into_iter().collect(),
            opaque: Bytes::new(),
        }
    }

    /// True when the PE offers an ASAP control channel on this transport (RSPLIB: exactly 1).
    pub fn has_control_channel(&self) -> bool {
        matches!(self.protocol, TransportProtocol::Sctp | TransportProtocol::Tcp)
            && self.transport_use == TRANSPORT_USE_DATA_PLUS_CONTROL
    }
}
