//! Pieces shared by the embedding API's pool element, pool user and registrar.

use crate::driver::UdpEndpoint;
use crate::transport::{TransportKind, TransportMode, UdpOptions, sctp_available};
use bytes::Bytes;
use rserpool_core::Output;
use rserpool_core::registrar_table::{RegistrarTableConfig, StaticRegistrar};
use rserpool_proto::transport::TransportProtocol;
use smallvec::SmallVec;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One data message of a session: its PPID and payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    /// SCTP payload protocol identifier (any value but 11, the ASAP control channel).
    pub ppid: u32,
    /// The message.
    pub data: Bytes,
}

/// The single transport a pool element or pool user uses under `mode` on this host.
pub(crate) fn resolve_mode(mode: TransportMode) -> Result<TransportKind, crate::ConfigError> {
    match mode {
        TransportMode::Tcp => Ok(TransportKind::Tcp),
        TransportMode::Sctp if sctp_available() => Ok(TransportKind::Sctp),
        TransportMode::Sctp => Err(crate::ConfigError::Transport(
            "this host has no kernel SCTP",
        )),
        TransportMode::Auto if sctp_available() => Ok(TransportKind::Sctp),
        TransportMode::Auto => Ok(TransportKind::Tcp),
    }
}

/// The protocol advertised for a transport.
pub(crate) fn protocol_of(kind: TransportKind) -> TransportProtocol {
    match kind {
        TransportKind::Sctp => TransportProtocol::Sctp,
        TransportKind::Tcp => TransportProtocol::Tcp,
    }
}

/// The registrar table of a PE or PU: the static registrars (reached over `kind`), announces
/// if a group is given, and announced transports of that kind preferred.
pub(crate) fn registrar_table(
    registrars: &[SocketAddr],
    announce: Option<SocketAddr>,
    kind: TransportKind,
    base: RegistrarTableConfig,
) -> RegistrarTableConfig {
    let protocol = protocol_of(kind);
    let preference = match kind {
        TransportKind::Sctp => [TransportProtocol::Sctp, TransportProtocol::Tcp],
        TransportKind::Tcp => [TransportProtocol::Tcp, TransportProtocol::Sctp],
    };
    RegistrarTableConfig {
        static_registrars: registrars
            .iter()
            .map(|a| StaticRegistrar {
                addrs: [*a].into_iter().collect(),
                protocol,
            })
            .collect(),
        use_announces: announce.is_some(),
        transport_preference: SmallVec::from_slice(&preference),
        ..base
    }
}

/// The UDP socket receiving ASAP Server Announces (or ENRP Presences) of `group`.
pub(crate) fn multicast_receiver(group: SocketAddr, ppid: u32) -> UdpEndpoint {
    let any = match group.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    UdpEndpoint {
        bind: SocketAddr::new(any, group.port()),
        ppid,
        options: UdpOptions {
            reuse_addr: true,
            reuse_port: true,
            multicast_loop: Some(true),
            ..UdpOptions::default()
        },
        join: if group.ip().is_multicast() {
            vec![group.ip()]
        } else {
            Vec::new()
        },
    }
}

/// The local address the kernel would use towards `peer` (no packet is sent).
pub(crate) fn local_address_towards(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(peer).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// An output of an inner machine whose events the wrapper consumed itself, as an output of
/// the wrapper (`Err` carries the event).
pub(crate) fn split_event<E, F>(o: Output<E>) -> Result<Output<F>, E> {
    Ok(match o {
        Output::Event(e) => return Err(e),
        Output::Transmit(t) => Output::Transmit(t),
        Output::Connect {
            assoc,
            addrs,
            transport,
            channel,
        } => Output::Connect {
            assoc,
            addrs,
            transport,
            channel,
        },
        Output::Close { assoc, abort } => Output::Close { assoc, abort },
    })
}

/// Send-queue limits for backpressure: above `high` queued bytes a sender waits until the
/// queue is down to `high / 4`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendBuffer {
    pub high: usize,
}

impl SendBuffer {
    /// `wanted`, kept under half the transport's queue cap (over the cap the transport
    /// aborts the association).
    pub(crate) fn new(wanted: usize, max_queued_bytes: usize) -> SendBuffer {
        SendBuffer {
            high: wanted.min(max_queued_bytes / 2).max(1),
        }
    }

    pub(crate) fn low(self) -> usize {
        self.high / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_addresses() {
        let r: SocketAddr = "127.0.0.1:3863".parse().unwrap();
        let t = registrar_table(&[r], None, TransportKind::Tcp, Default::default());
        assert_eq!(t.static_registrars.len(), 1);
        assert_eq!(t.static_registrars[0].protocol, TransportProtocol::Tcp);
        assert!(!t.use_announces);
        assert_eq!(t.transport_preference[0], TransportProtocol::Tcp);
        assert_eq!(
            local_address_towards(r),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        let u = multicast_receiver("239.0.0.50:3863".parse().unwrap(), 11);
        assert_eq!(u.bind, "0.0.0.0:3863".parse().unwrap());
        assert_eq!(u.join.len(), 1);
        let b = SendBuffer::new(1 << 20, 4 << 20);
        assert_eq!((b.high, b.low()), (1 << 20, 1 << 18));
        assert_eq!(SendBuffer::new(1 << 30, 4 << 20).high, 2 << 20);
    }
}
