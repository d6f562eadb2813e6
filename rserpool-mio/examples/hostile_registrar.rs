//! A minimal registrar process for the hostile-input VM run (`tests/interop/hostile-vm.sh`):
//! our [`Registrar`] on the mio driver with the hardening the suite expects (message size
//! limit, bounded per-association queues, peer policy), nothing else. The full
//! `rspregistrar` binary with RSPLIB's options is separate; this is only the test target.
//!
//! ```text
//! hostile_registrar -asap=10.99.0.11:3863 -enrp=10.99.0.11:9901 \
//!     -peer=10.99.0.12:9911 -peerpolicy=static -transport=sctp
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use rserpool_core::registrar::fuzzing::SplitMix64;
use rserpool_core::registrar::{AddressScope, PeerPolicy, Registrar, RegistrarConfig};
use rserpool_mio::cli::argv::{SYNTAX_NOTE, parse_or_exit};
use rserpool_mio::driver::{Application, Driver, DriverConfig, ListenerConfig};
use rserpool_mio::transport::{TransportConfig, TransportMode};
use rserpool_proto::ids::ServerId;
use rserpool_proto::rtf::ChannelKind;
use rserpool_proto::transport::{TransportParameter, TransportProtocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Sctp,
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Policy {
    Static,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scope {
    Loopback,
    Sitelocal,
    Global,
}

/// Our registrar as a hostile-suite target.
#[derive(Parser, Debug)]
#[command(name = "hostile_registrar", after_help = SYNTAX_NOTE)]
struct Options {
    /// ASAP endpoint
    #[arg(long = "asap")]
    asap: SocketAddr,
    /// ENRP endpoint
    #[arg(long = "enrp")]
    enrp: SocketAddr,
    /// Static peer (repeatable)
    #[arg(long = "peer")]
    peers: Vec<SocketAddr>,
    /// Who may become a peer
    #[arg(long = "peerpolicy", value_enum, default_value = "static")]
    peer_policy: Policy,
    /// Transport
    #[arg(long = "transport", value_enum, default_value = "sctp")]
    transport: Transport,
    /// Minimum address scope of PEs and peers
    #[arg(long = "minaddressscope", value_enum, default_value = "sitelocal")]
    min_scope: Scope,
    /// Server identifier
    #[arg(long = "identifier", default_value_t = 0x0abc_def0)]
    identifier: u32,
    /// Seed of the registrar's randomness
    #[arg(long = "seed", default_value_t = 1)]
    seed: u64,
}

struct Quiet;
impl Application<Registrar> for Quiet {}

fn main() -> std::io::Result<()> {
    let o: Options = parse_or_exit();
    let (mode, protocol) = match o.transport {
        Transport::Sctp => (TransportMode::Sctp, TransportProtocol::Sctp),
        Transport::Tcp => (TransportMode::Tcp, TransportProtocol::Tcp),
    };
    let proto = |port: u16, u: u16, ips: Vec<std::net::IpAddr>| {
        TransportParameter::with(protocol, port, u, ips)
    };
    // Per association at most 1 MiB queued in the transport and 1 MiB in the driver:
    // a peer that never reads is aborted instead of growing the process.
    let config = DriverConfig {
        mode,
        transport: TransportConfig {
            max_queued_bytes: 1 << 20,
            max_message_len: 65_536,
            ..TransportConfig::default()
        },
        max_overflow_bytes: Some(1 << 20),
        signals: true,
        shutdown_grace: Duration::from_millis(100),
        listeners: vec![
            ListenerConfig::new(vec![o.asap], ChannelKind::AsapToRegistrar),
            ListenerConfig::new(vec![o.enrp], ChannelKind::Enrp),
        ],
        ..DriverConfig::default()
    };
    let mut driver = Driver::new(config, |bound, now| {
        let asap = bound.listeners[0].local_addrs[0];
        let enrp = bound.listeners[1].local_addrs[0];
        let cfg = RegistrarConfig {
            server_id: Some(ServerId(o.identifier)),
            asap_transports: vec![proto(asap.port(), 0, vec![asap.ip()])],
            enrp_transport: Some(proto(enrp.port(), 0, vec![enrp.ip()])),
            asap_announce: None,
            enrp_announce: None,
            static_peers: o.peers.iter().map(|p| vec![*p]).collect(),
            min_address_scope: match o.min_scope {
                Scope::Loopback => AddressScope::Loopback,
                Scope::Sitelocal => AddressScope::SiteLocal,
                Scope::Global => AddressScope::Global,
            },
            peer_policy: match o.peer_policy {
                Policy::Static => PeerPolicy::StaticOnly,
                Policy::Any => PeerPolicy::Any,
            },
            ..RegistrarConfig::default()
        };
        eprintln!(
            "hostile_registrar: ASAP {asap}, ENRP {enrp}, id {:#010x}",
            o.identifier
        );
        Registrar::new(cfg, now, SplitMix64::new(o.seed))
    })?;
    driver.run_app(&mut Quiet)?;
    Ok(())
}
