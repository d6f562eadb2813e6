//! Registrar configuration: every RSPLIB `rspregistrar` default, the limits and the
//! security policies.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

use rserpool_proto::ids::ServerId;
use rserpool_proto::transport::TransportParameter;

use crate::handlespace::Limits;

/// RSPLIB's ASAP announce group (`ASAP_ANNOUNCE_MULTICAST_ADDRESS`): 239.0.0.50:3863.
pub const ASAP_ANNOUNCE_GROUP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 0, 0, 50)), 3863);
/// RSPLIB's ENRP announce group: 239.0.0.51:9901.
pub const ENRP_ANNOUNCE_GROUP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 0, 0, 51)), 9901);
/// Hard cap of PEs in one handle resolution answer (RSPLIB `MAX_MAX_HANDLE_RESOLUTION_ITEMS`).
pub const MAX_HANDLE_RESOLUTION_ITEMS_CAP: u32 = 128;
/// Largest message the registrar encodes (the ASAP/ENRP length field is 16 bits).
pub const MAX_MESSAGE_SIZE: usize = 65_532;

/// Scope of an IP address, ordered from narrowest to widest (RSPLIB `-minaddressscope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressScope {
    /// Unspecified, multicast or broadcast: never usable as an endpoint address.
    Unusable,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10.
    SiteLocal,
    /// Everything else.
    Global,
}

impl AddressScope {
    /// The scope of `addr` (IPv4-mapped IPv6 addresses are judged as IPv4).
    pub fn of(addr: IpAddr) -> AddressScope {
        match addr {
            IpAddr::V4(a) => {
                let o = a.octets();
                if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                    AddressScope::Unusable
                } else if a.is_loopback() {
                    AddressScope::Loopback
                } else if a.is_link_local() {
                    AddressScope::LinkLocal
                } else if a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                    AddressScope::SiteLocal
                } else {
                    AddressScope::Global
                }
            }
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return AddressScope::of(IpAddr::V4(v4));
                }
                let s = a.segments();
                if a.is_unspecified() || a.is_multicast() {
                    AddressScope::Unusable
                } else if a.is_loopback() {
                    AddressScope::Loopback
                } else if (s[0] & 0xffc0) == 0xfe80 {
                    AddressScope::LinkLocal
                } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
                    AddressScope::SiteLocal
                } else {
                    AddressScope::Global
                }
            }
        }
    }
}

/// An IP network (address and prefix length) for [`PeerPolicy::AllowedNetworks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits (clamped to 32 / 128).
    pub prefix: u8,
}

impl IpNetwork {
    /// A network.
    pub fn new(addr: IpAddr, prefix: u8) -> IpNetwork {
        IpNetwork { addr, prefix }
    }

    /// True if `ip` lies in the network (IPv4-mapped IPv6 addresses match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let p = u32::from(self.prefix.min(32));
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                (u32::from(n) & mask) == (u32::from(a) & mask)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let p = u32::from(self.prefix.min(128));
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                (u128::from(n) & mask) == (u128::from(a) & mask)
            }
            _ => false,
        }
    }
}

/// Which registrars may join the peer list (and so change the handlespace over ENRP).
/// Statically configured peers are always accepted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PeerPolicy {
    /// Only the configured static peers.
    StaticOnly,
    /// Any registrar that announces itself (RSPLIB behaviour; needed for `hsdump`).
    #[default]
    Any,
    /// Registrars whose addresses all lie in one of these networks.
    AllowedNetworks(Vec<IpNetwork>),
}

/// Unit of the Registration Life field on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LifeUnit {
    /// Milliseconds (RSPLIB; what every RSPLIB PE sends).
    #[default]
    Milliseconds,
    /// Seconds (RFC 5354 wording).
    Seconds,
}

impl LifeUnit {
    /// The duration of `life` wire units; `None` for infinite (0xffffffff).
    pub fn duration(self, life: u32) -> Option<Duration> {
        if life == rserpool_proto::param::REGISTRATION_LIFE_INFINITE {
            return None;
        }
        Some(match self {
            LifeUnit::Milliseconds => Duration::from_millis(u64::from(life)),
            LifeUnit::Seconds => Duration::from_secs(u64::from(life)),
        })
    }
}

/// Registrar resource limits. Exceeding one never aborts anything: registrations get
/// "Lack of Resources" (cause 0x6), excess ENRP state is ignored (with an ENRP Error 0x6
/// where a reply is possible).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrarLimits {
    /// Handlespace limits: pools, PEs per pool, PEs in total, addresses per transport,
    /// pool handle length.
    pub handlespace: Limits,
    /// PEs registered over one association.
    pub max_elements_per_assoc: usize,
    /// Requests from one association the registrar is still working on: Endpoint
    /// Unreachable verifications started by its reports. Further reports are dropped.
    pub max_pending_requests_per_assoc: usize,
    /// Entries in the peer list (static entries included).
    pub max_peers: usize,
}

impl Default for RegistrarLimits {
    fn default() -> Self {
        RegistrarLimits {
            handlespace: Limits::default(),
            max_elements_per_assoc: 1024,
            max_pending_requests_per_assoc: 64,
            max_peers: 256,
        }
    }
}

/// Timers of the registrar (RSPLIB defaults, with the `rspregistrar` option names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegistrarTimers {
    /// ASAP Server Announce cycle, jittered ±12.5 % (RSPLIB `-serverannouncecycle`, 1 s).
    pub server_announce_cycle: Duration,
    /// Time from a (re-)registration or keep-alive ack to the next Endpoint Keep-Alive
    /// (RSPLIB `-endpointkeepalivetransmissioninterval`, 5 s); jittered by
    /// [`RegistrarTimers::keep_alive_jitter`].
    pub keep_alive_transmission_interval: Duration,
    /// Wait for an Endpoint Keep-Alive Ack (RSPLIB `-endpointkeepalivetimeoutinterval`, 5 s).
    pub keep_alive_timeout_interval: Duration,
    /// Relative jitter of the keep-alive transmission interval (0.25 = ±25 %), so that
    /// PEs registered in a burst do not stay in step. RSPLIB: none; RFC 5352: ±50 %.
    pub keep_alive_jitter: f64,
    /// When Endpoint Unreachable reports from `max_bad_pe_reports` distinct reporters
    /// arrived, a PE whose verification keep-alive has stayed unanswered this long is
    /// removed without waiting for the full keep-alive timeout (500 ms).
    pub unreachable_grace: Duration,
    /// PEER-HEARTBEAT-CYCLE, jittered ±12.5 % (RSPLIB `-peerheartbeatcycle`, 2444 ms).
    pub peer_heartbeat_cycle: Duration,
    /// MAX-TIME-LAST-HEARD (RSPLIB `-peermaxtimelastheard`, 5 s).
    pub peer_max_time_last_heard: Duration,
    /// MAX-TIME-NO-RESPONSE (RSPLIB `-peermaxtimenoresponse`, 5 s).
    pub peer_max_time_no_response: Duration,
    /// How long the start-up phase waits for a mentor (RSPLIB `-mentordiscoverytimeout`, 5 s).
    pub mentor_discovery_timeout: Duration,
    /// TAKEOVER-EXPIRY (RSPLIB `-takeoverexpiryinterval`, 5 s).
    pub takeover_expiry_interval: Duration,
}

impl Default for RegistrarTimers {
    fn default() -> Self {
        RegistrarTimers {
            server_announce_cycle: Duration::from_millis(1000),
            keep_alive_transmission_interval: Duration::from_millis(5000),
            keep_alive_timeout_interval: Duration::from_millis(5000),
            keep_alive_jitter: 0.25,
            unreachable_grace: Duration::from_millis(500),
            peer_heartbeat_cycle: Duration::from_micros(2_444_444),
            peer_max_time_last_heard: Duration::from_millis(5000),
            peer_max_time_no_response: Duration::from_millis(5000),
            mentor_discovery_timeout: Duration::from_millis(5000),
            takeover_expiry_interval: Duration::from_millis(5000),
        }
    }
}

/// Configuration of a [`Registrar`](super::Registrar). `Default` gives RSPLIB's defaults;
/// a driver fills in the transports it listens on.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrarConfig {
    /// Server identifier; `None` = random non-zero (RSPLIB `-identifier`).
    pub server_id: Option<ServerId>,
    /// ASAP transports announced in ASAP Server Announces (SCTP and/or TCP transport
    /// parameters with the registrar's ASAP port and addresses) (RSPLIB `-asap`).
    pub asap_transports: Vec<TransportParameter>,
    /// The ENRP transport put into the Server Information parameter of every Presence and
    /// List Response (an SCTP transport: ENRP port, addresses) (RSPLIB `-enrp`). RSPLIB peers
    /// ignore a Presence without it.
    pub enrp_transport: Option<TransportParameter>,
    /// Where ASAP Server Announces go (`None` = off) (RSPLIB `-asapannounce`, 239.0.0.50:3863).
    pub asap_announce: Option<SocketAddr>,
    /// The ENRP multicast channel for Presences (`None` = off) [`-enrpannounce`,
    /// 239.0.0.51:9901].
    pub enrp_announce: Option<SocketAddr>,
    /// Static peers, one address list (ENRP SCTP addresses of one registrar) each (RSPLIB `-peer`).
    pub static_peers: Vec<Vec<SocketAddr>>,
    /// Timers.
    pub timers: RegistrarTimers,
    /// Distinct reporters of Endpoint Unreachable that remove a PE not yet confirmed
    /// alive by its verification keep-alive (RSPLIB `-maxbadpereports`, 3).
    pub max_bad_pe_reports: u32,
    /// Default number of PEs in a handle resolution answer (RSPLIB `-maxhresitems`, 3); a Handle
    /// Resolution Option may ask for up to [`MAX_HANDLE_RESOLUTION_ITEMS_CAP`].
    pub max_handle_resolution_items: u32,
    /// Maximum PEs per ENRP Handle Table Response (RSPLIB `-maxelementsperhtrequest`, 128).
    pub max_elements_per_table_response: usize,
    /// Maximum bytes of one Handle Table Response (RSPLIB: 1400; up to
    /// [`MAX_MESSAGE_SIZE`]).
    pub max_table_response_bytes: usize,
    /// Minimum scope of accepted PE, PU and peer addresses [`-minaddressscope`,
    /// site-local].
    pub min_address_scope: AddressScope,
    /// Handle resolutions per second per association (`None` = unlimited) (RSPLIB `-maxhrrate`).
    pub max_hr_rate: Option<u32>,
    /// Endpoint Unreachable reports per second per association (`None` = unlimited)
    /// (RSPLIB `-maxeurate`).
    pub max_eu_rate: Option<u32>,
    /// Selection "max increment" (RSPLIB `-maxincrement`, 0 = policy default).
    pub max_increment: u32,
    /// Resource limits.
    pub limits: RegistrarLimits,
    /// Who may become a peer.
    pub peer_policy: PeerPolicy,
    /// Unit of Registration Life on the wire (RSPLIB: milliseconds).
    pub registration_life_unit: LifeUnit,
    /// Expire own PEs when their registration life runs out (RFC 5352 §3.2; RSPLIB never
    /// does: own PEs live while their association is up and they answer keep-alives).
    /// An expired own PE is removed, announced with DEL_PE and told with a spontaneous
    /// Deregistration Response.
    pub expire_owned_elements: bool,
    /// draft-dreibholz-rserpool-enrp-takeover: send an extra Handle Update with the T flag
    /// to the peer best suited to take a PE over, and claim PEs suggested to us
    /// (RSPLIB `-supporttakeoversuggestion`, off).
    pub takeover_suggestion: bool,
    /// Emit [`RegistrarEvent::ProtocolError`](super::RegistrarEvent::ProtocolError) for
    /// malformed or refused input (counters are kept either way).
    pub protocol_error_events: bool,
    /// Queue an [`ActionRecord`](super::ActionRecord) for every action RSPLIB writes to
    /// its action log (`-actionlogfile=`), read with
    /// [`Registrar::poll_action`](super::Registrar::poll_action) (off: nothing is queued).
    pub action_log: bool,
    /// Close accepted ASAP associations (and accepted ones that never carried a message)
    /// that received no message for this long and have no PE registered over them
    /// (RSPLIB `-autoclosetimeout=`, its SCTP autoclose, 300 s; `None`: never). Checked
    /// every third of the timeout: an idle association is closed after between 1 and 4/3
    /// timeouts.
    pub autoclose_timeout: Option<Duration>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            server_id: None,
            asap_transports: Vec::new(),
            enrp_transport: None,
            asap_announce: Some(ASAP_ANNOUNCE_GROUP),
            enrp_announce: Some(ENRP_ANNOUNCE_GROUP),
            static_peers: Vec::new(),
            timers: RegistrarTimers::default(),
            max_bad_pe_reports: 3,
            max_handle_resolution_items: 3,
            max_elements_per_table_response: 128,
            max_table_response_bytes: MAX_MESSAGE_SIZE,
            min_address_scope: AddressScope::SiteLocal,
            max_hr_rate: None,
            max_eu_rate: None,
            max_increment: 0,
            limits: RegistrarLimits::default(),
            peer_policy: PeerPolicy::Any,
            registration_life_unit: LifeUnit::Milliseconds,
            expire_owned_elements: false,
            takeover_suggestion: false,
            protocol_error_events: true,
            action_log: false,
            autoclose_timeout: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv6Addr;

    #[test]
    fn scopes() {
        let s = |a: &str| AddressScope::of(a.parse().unwrap());
        assert_eq!(s("127.0.0.1"), AddressScope::Loopback);
        assert_eq!(s("169.254.1.1"), AddressScope::LinkLocal);
        assert_eq!(s("10.99.0.11"), AddressScope::SiteLocal);
        assert_eq!(s("192.168.1.1"), AddressScope::SiteLocal);
        assert_eq!(s("8.8.8.8"), AddressScope::Global);
        assert_eq!(s("0.0.0.0"), AddressScope::Unusable);
        assert_eq!(s("239.0.0.50"), AddressScope::Unusable);
        assert_eq!(s("::1"), AddressScope::Loopback);
        assert_eq!(s("fe80::1"), AddressScope::LinkLocal);
        assert_eq!(s("fd00::1"), AddressScope::SiteLocal);
        assert_eq!(s("2001:db8::1"), AddressScope::Global);
        assert_eq!(s("::ffff:10.0.0.1"), AddressScope::SiteLocal);
        assert!(AddressScope::Loopback < AddressScope::SiteLocal);
    }

    #[test]
    fn networks() {
        let n = IpNetwork::new("10.99.0.0".parse().unwrap(), 24);
        assert!(n.contains("10.99.0.13".parse().unwrap()));
        assert!(!n.contains("10.98.0.13".parse().unwrap()));
        assert!(n.contains(IpAddr::V6(Ipv4Addr::new(10, 99, 0, 1).to_ipv6_mapped())));
        let all = IpNetwork::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        assert!(!all.contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn life_units() {
        assert_eq!(
            LifeUnit::Milliseconds.duration(90_000),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            LifeUnit::Seconds.duration(90),
            Some(Duration::from_secs(90))
        );
        assert_eq!(LifeUnit::Seconds.duration(u32::MAX), None);
    }
}
