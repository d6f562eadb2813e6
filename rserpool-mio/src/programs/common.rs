//! Wiring shared by the programs: randomness, transport choice, the RSerPool library
//! options (`-registrar=`, `-asapannounce=`, timers, CSP) turned into machine
//! configurations and driver sockets, logging set-up and the exit path.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use rserpool_core::Machine;
use rserpool_core::registrar_table::{RegistrarTableConfig, StaticRegistrar};
use rserpool_proto::transport::TransportProtocol;
use smallvec::SmallVec;
use tracing::warn;

use crate::cli::{LibraryOptions, LogOptions, TlsOptions, TransportChoice, init_logging};
use crate::driver::{Driver, MulticastJoin, UdpConfig};
use crate::transport::{
    TlsPolicy, TransportConfig, TransportKind, TransportMode, UdpOptions, sctp_available,
};
use rserpool_proto::rtf::ChannelKinds;
use std::sync::Arc;

/// An exponentially distributed duration with mean `mean` (the up and down times of the
/// failure-test mode, `-uptime=`/`-downtime=`, as RSPLIB draws them).
pub fn exponential(rng: &mut impl rand_xoshiro::rand_core::Rng, mean: Duration) -> Duration {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs_f64((-mean.as_secs_f64() * (1.0 - u).ln()).clamp(0.0, 1e9))
}

/// SIGINT/SIGTERM seen by the whole process, for the failure-test mode. Each life has a
/// driver that catches the signals, but between two lives (the down time, the set-up of the
/// next driver) nothing did: a signal there was lost and the program went on living. (RSPLIB's
/// break detector stays installed over all lives.)
#[derive(Clone, Debug)]
pub struct TerminationFlag(Arc<std::sync::atomic::AtomicBool>);

impl TerminationFlag {
    /// Sets the flag on SIGINT and SIGTERM from now on (besides whatever else handles them).
    pub fn install() -> io::Result<TerminationFlag> {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(TerminationFlag(flag))
    }

    /// True once a signal arrived.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sleeps for `d`, or until a signal arrives (looked at every 10 ms); true if one did.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = std::time::Instant::now() + d;
        loop {
            if self.is_set() {
                return true;
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
    }
}

/// A fast, seedable RNG for the machines, seeded from the operating system
/// (`/dev/urandom`; if that cannot be read, from the clock and the process id).
///
/// Identifiers (PE identifier, registrar identifier) are not security tokens in RSerPool
/// (RFC 5352), so Xoshiro is sufficient.
pub fn os_rng() -> Xoshiro256PlusPlus {
    let mut seed = [0u8; 32];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    if from_os.is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        let mix = t ^ (u128::from(std::process::id()) << 64);
        seed[..16].copy_from_slice(&mix.to_le_bytes());
        seed[16..].copy_from_slice(&mix.rotate_left(61).to_be_bytes());
    }
    Xoshiro256PlusPlus::from_seed(seed)
}

/// The standby list's refresh interval of `rspterminal` and `pingpongclient` unless
/// `-standbyrefresh=` says otherwise (0 = off): one Handle Resolution a second while
/// connected buys a failover without a resolution round trip (transport loss -> association
/// with the next PE up in under a millisecond in the VM, where it is ~1.5 ms with the round
/// trip; docs/performance.md). The other clients keep RSPLIB's behaviour by default.
pub const INTERACTIVE_STANDBY_REFRESH: Duration = Duration::from_millis(1000);

/// `t` with the settings of a pool user: SCTP acknowledges every packet at once
/// ([`SctpOptions::sack_immediately`](crate::transport::sctp::socket::SctpOptions)), so the
/// kernel of a PE whose process dies can send its SHUTDOWN at once instead of waiting up to
/// 200 ms for the delayed SACK of its last reply (`rsplib-measured.md` defect 1); and a
/// spare SCTP socket is kept ready for the next PE
/// ([`SctpOptions::spare_socket`](crate::transport::sctp::socket::SctpOptions)), so that a
/// failover's INIT leaves with one system call.
pub fn pool_user_transport(
    mut t: crate::transport::TransportConfig,
) -> crate::transport::TransportConfig {
    t.sctp.sack_immediately = true;
    t.sctp.spare_socket = true;
    t
}

/// The driver's transport mode for `-transport=`.
pub fn transport_mode(choice: TransportChoice) -> TransportMode {
    match choice {
        TransportChoice::Sctp => TransportMode::Sctp,
        TransportChoice::Tcp => TransportMode::Tcp,
        TransportChoice::Auto => TransportMode::Auto,
    }
}

/// The transport mode for `-transport=` and the TLS options: with TLS the TCP mapping
/// (`auto` turns into `tcp`; there is no DTLS, `sctp` is refused by [`tls_policy`]).
pub fn transport_mode_tls(choice: TransportChoice, tls: &TlsOptions) -> TransportMode {
    if tls.requested() {
        TransportMode::Tcp
    } else {
        transport_mode(choice)
    }
}

/// The TLS policy of the TLS options for the RTF channel kinds `channels` (`None` without
/// TLS options). Errors: incomplete options, files that do not load, TLS with
/// `-transport=sctp`.
pub fn tls_policy(
    choice: TransportChoice,
    tls: &TlsOptions,
    channels: impl Into<ChannelKinds>,
) -> io::Result<Option<TlsPolicy>> {
    let Some(settings) = tls.load()? else {
        return Ok(None);
    };
    if choice == TransportChoice::Sctp {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TLS is available only over the TCP mapping (no DTLS over SCTP): \
             use -transport=tcp or leave out the -tls-* options",
        ));
    }
    Ok(Some(TlsPolicy::new(Arc::new(settings), channels)))
}

/// The transport mode of a pool element or pool user ([`transport_mode_tls`]).
pub fn library_mode(lib: &LibraryOptions) -> TransportMode {
    transport_mode_tls(lib.transport, &lib.tls)
}

/// The transport settings of a pool element or pool user: TLS for its ASAP associations
/// to registrars when the TLS options are given ([`tls_policy`]).
pub fn library_transport(lib: &LibraryOptions) -> io::Result<TransportConfig> {
    Ok(TransportConfig {
        tls: tls_policy(
            lib.transport,
            &lib.tls,
            rserpool_proto::rtf::ChannelKind::AsapToRegistrar,
        )?,
        ..TransportConfig::default()
    })
}

/// The transports a program listens on in `mode`: `Auto` means both where the kernel has
/// SCTP (SCTP first), else the TCP mapping only.
pub fn listen_kinds(mode: TransportMode) -> Vec<TransportKind> {
    match mode {
        TransportMode::Sctp => vec![TransportKind::Sctp],
        TransportMode::Tcp => vec![TransportKind::Tcp],
        TransportMode::Auto if sctp_available() => vec![TransportKind::Sctp, TransportKind::Tcp],
        TransportMode::Auto => vec![TransportKind::Tcp],
    }
}

/// The wire protocol of a transport kind.
pub fn protocol_of(kind: TransportKind) -> TransportProtocol {
    match kind {
        TransportKind::Sctp => TransportProtocol::Sctp,
        TransportKind::Tcp => TransportProtocol::Tcp,
    }
}

/// The registrar list and hunt of a pool element or pool user, from the library options.
/// Static registrars are reached over SCTP when `mode` uses kernel SCTP, else over the TCP
/// mapping; announced transports are preferred in the same order.
pub fn registrar_table_config(lib: &LibraryOptions, mode: TransportMode) -> RegistrarTableConfig {
    let protocol = protocol_of(mode.resolve());
    let other = match protocol {
        TransportProtocol::Sctp => TransportProtocol::Tcp,
        _ => TransportProtocol::Sctp,
    };
    RegistrarTableConfig {
        static_registrars: lib
            .registrars
            .iter()
            .map(|l| StaticRegistrar {
                addrs: l.addrs().iter().copied().collect(),
                protocol,
            })
            .collect(),
        use_announces: lib.asap_announce_address().is_some(),
        announce_timeout: lib.registrar_announce_timeout,
        connect_timeout: lib.registrar_connect_timeout,
        max_rounds: lib.registrar_connect_max_trials,
        transport_preference: SmallVec::from_buf([protocol, other]),
        ..RegistrarTableConfig::default()
    }
}

/// The wildcard address of `ip`'s family.
pub fn wildcard_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The UDP socket that receives datagrams for `target` (an announce group or a unicast
/// address), tagged with `ppid`: a multicast group is received on the wildcard address at
/// the group's port, joined on the kernel's choice of interface, with address and port reuse
/// (several programs on one host listen to the same group); a unicast address is bound
/// itself.
pub fn receiver_for(target: SocketAddr, ppid: u32, send: bool) -> UdpConfig {
    let options = UdpOptions {
        reuse_addr: true,
        reuse_port: true,
        multicast_loop: Some(true),
        ..UdpOptions::default()
    };
    if target.ip().is_multicast() {
        UdpConfig {
            bind: SocketAddr::new(wildcard_of(target.ip()), target.port()),
            options,
            ppid,
            join: vec![MulticastJoin::any_interface(target.ip())],
            send,
        }
    } else {
        UdpConfig {
            bind: target,
            options,
            ppid,
            join: Vec::new(),
            send,
        }
    }
}

/// Opens a UDP socket after start; a failure (no multicast route, port taken) is logged and
/// ignored: the program works without it (static registrars / peers still do).
pub fn add_udp_or_warn<M: Machine>(driver: &mut Driver<M>, cfg: &UdpConfig, what: &str) -> bool {
    match driver.add_udp(cfg) {
        Ok(_) => true,
        Err(e) => {
            warn!("{what}: cannot open UDP socket on {}: {e}", cfg.bind);
            false
        }
    }
}

/// The ASAP announce receiver of a pool element or pool user (`-asapannounce=`), if on.
pub fn announce_receiver(lib: &LibraryOptions) -> Option<UdpConfig> {
    lib.asap_announce_address()
        .map(|a| receiver_for(a, rserpool_core::Protocol::PPID_ASAP, false))
}

/// Sets up logging or exits with code 1 (RSPLIB's behaviour for bad options).
pub fn init_logging_or_exit(program: &str, log: &LogOptions) {
    if let Err(e) = init_logging(log) {
        eprintln!("{program}: {e}");
        std::process::exit(1);
    }
}

/// Exit code for a program that failed with `e`: prints it to stderr, returns 1.
pub fn fail(program: &str, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("{program}: {e}");
    ExitCode::FAILURE
}

/// An `io::Error` with a message.
pub fn other_error(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RspTerminalOptions;
    use crate::cli::argv::try_parse_from;

    #[test]
    fn pool_users_acknowledge_every_packet_at_once() {
        // Only the pool users' sockets: PEs and registrars keep the kernel's delayed SACK
        // (registrars' ENRP associations acknowledge at once, whatever the configuration).
        let default = crate::transport::TransportConfig::default;
        assert!(pool_user_transport(default()).sctp.sack_immediately);
        assert!(pool_user_transport(default()).sctp.spare_socket);
        assert!(!default().sctp.spare_socket);
        assert!(
            !crate::transport::TransportConfig::default()
                .sctp
                .sack_immediately
        );
        assert_eq!(
            pool_user_transport(default()).sctp.ostreams,
            crate::transport::TransportConfig::default().sctp.ostreams
        );
    }

    #[test]
    fn seeds_differ() {
        use rand_xoshiro::rand_core::Rng;
        let mut a = os_rng();
        let mut b = os_rng();
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn library_options_make_the_registrar_table() {
        let o: RspTerminalOptions = try_parse_from([
            "rspterminal",
            "-registrar=127.0.0.1:4000",
            "-registrar=10.0.0.1,10.0.1.1",
            "-asapannounce=off",
            "-registrarconnecttimeout=1000",
            "-registrarconnectmaxtrials=3",
        ])
        .unwrap();
        let t = registrar_table_config(&o.library, TransportMode::Tcp);
        assert_eq!(t.static_registrars.len(), 2);
        assert_eq!(t.static_registrars[0].protocol, TransportProtocol::Tcp);
        assert_eq!(
            t.static_registrars[0].addrs.as_slice(),
            &["127.0.0.1:4000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(t.static_registrars[1].addrs.len(), 2);
        assert!(!t.use_announces);
        assert_eq!(t.connect_timeout, Duration::from_millis(1000));
        assert_eq!(t.max_rounds, 3);
        assert_eq!(t.transport_preference[0], TransportProtocol::Tcp);
    }

    #[test]
    fn receivers() {
        let m = receiver_for("239.0.0.50:3863".parse().unwrap(), 11, false);
        assert_eq!(m.bind, "0.0.0.0:3863".parse().unwrap());
        assert_eq!(m.join.len(), 1);
        let u = receiver_for("127.0.0.1:5000".parse().unwrap(), 11, false);
        assert_eq!(u.bind, "127.0.0.1:5000".parse().unwrap());
        assert!(u.join.is_empty());
    }
}
