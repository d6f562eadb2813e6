//! World, link and node configuration.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

/// Properties of the network path between two nodes (used in both directions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way base delay.
    pub delay: Duration,
    /// Extra one-way delay, uniformly drawn from `0..=jitter` per message. Association
    /// messages stay in order (the receiver reorders, like SCTP's TSNs); datagrams and
    /// messages of different associations may overtake each other.
    pub jitter: Duration,
    /// Probability (0.0..=1.0) that a UDP datagram is lost.
    pub udp_loss: f64,
    /// Probability (0.0..=1.0) that a UDP datagram is delivered twice.
    pub udp_duplicate: f64,
}

impl Default for LinkParams {
    /// 1 ms delay, no jitter, no loss, no duplication.
    fn default() -> Self {
        LinkParams {
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            udp_loss: 0.0,
            udp_duplicate: 0.0,
        }
    }
}

/// World-wide settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seed of the world RNG (jitter, loss, node RNGs).
    pub seed: u64,
    /// Link used between every pair of nodes without an override.
    pub default_link: LinkParams,
    /// How long a transport takes to declare an association dead when the peer no longer
    /// answers (SCTP path failure / heartbeat timeout): used for partitions longer than this
    /// and for hosts that went down ([`CrashKind::HostDown`](super::CrashKind::HostDown)).
    pub failure_detection: Duration,
    /// How long a connection attempt to an unreachable host (no such host, host down,
    /// partitioned) takes to fail. A reachable host without a listener refuses after one
    /// round trip instead.
    pub connect_timeout: Duration,
    /// Whether a node receives its own multicast datagrams (IP_MULTICAST_LOOP towards the
    /// sending socket). Off by default.
    pub multicast_loopback: bool,
    /// Whether the world records a trace ([`World::trace`](super::World::trace)).
    pub trace: bool,
}

impl SimConfig {
    /// Defaults with the given seed: 1 ms links, 3 s failure detection, 3 s connect timeout,
    /// tracing on.
    pub fn with_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            default_link: LinkParams::default(),
            failure_detection: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            multicast_loopback: false,
            trace: true,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::with_seed(0)
    }
}

/// A node's name and addresses.
///
/// Addresses are labels inside the simulation only. An unspecified IP in a listen or UDP
/// binding (`0.0.0.0:port`, see [`NodeConfig::listen_port`]) means "every address of this
/// node". A node configured without any IP gets `10.0.x.y` derived from its id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// Name shown in traces.
    pub name: String,
    /// The node's IP addresses (multi-homed if more than one); the first is its primary.
    pub ips: Vec<IpAddr>,
    /// Addresses on which the node accepts associations.
    pub listen: Vec<SocketAddr>,
    /// Unicast UDP bindings.
    pub udp: Vec<SocketAddr>,
    /// Multicast groups (group address and port) the node receives.
    pub groups: Vec<SocketAddr>,
    /// Local port of the associations the node opens (`None`: a fresh ephemeral port per
    /// association). Models one SCTP one-to-many socket that both listens and connects,
    /// as RSPLIB's PEs use: a registrar records the port a PE registered from as its ASAP
    /// transport and connects back there when it takes the PE over.
    pub source_port: Option<u16>,
    /// Start with no process running: the node is brought up by a
    /// [`Fault::Restart`](super::Fault::Restart). Until then, connections to it are refused.
    pub stopped: bool,
}

impl NodeConfig {
    /// A node named `name` with no addresses yet.
    pub fn new(name: impl Into<String>) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            ..NodeConfig::default()
        }
    }

    /// Adds an IP address.
    pub fn ip(mut self, ip: IpAddr) -> NodeConfig {
        push_unique(&mut self.ips, ip);
        self
    }

    /// Accepts associations on `addr` (its IP is added to the node's addresses unless it is
    /// unspecified).
    pub fn listen(mut self, addr: SocketAddr) -> NodeConfig {
        if !addr.ip().is_unspecified() {
            push_unique(&mut self.ips, addr.ip());
        }
        push_unique(&mut self.listen, addr);
        self
    }

    /// Accepts associations on `port` of every address of the node.
    pub fn listen_port(self, port: u16) -> NodeConfig {
        self.listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
    }

    /// Receives unicast UDP on `addr` (unspecified IP: on every address of the node).
    pub fn udp(mut self, addr: SocketAddr) -> NodeConfig {
        if !addr.ip().is_unspecified() {
            push_unique(&mut self.ips, addr.ip());
        }
        push_unique(&mut self.udp, addr);
        self
    }

    /// Receives unicast UDP on `port` of every address of the node.
    pub fn udp_port(self, port: u16) -> NodeConfig {
        self.udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
    }

    /// Receives datagrams sent to the multicast group `group` (address and port).
    pub fn join(mut self, group: SocketAddr) -> NodeConfig {
        push_unique(&mut self.groups, group);
        self
    }

    /// Opens associations from `port` (see [`NodeConfig::source_port`]).
    pub fn source_port(mut self, port: u16) -> NodeConfig {
        self.source_port = Some(port);
        self
    }

    /// Starts the node stopped (see [`NodeConfig::stopped`]).
    pub fn stopped(mut self) -> NodeConfig {
        self.stopped = true;
        self
    }

    /// True if `binding` (a listen or UDP binding of this node) covers `addr`.
    pub(crate) fn covers(&self, binding: &SocketAddr, addr: &SocketAddr) -> bool {
        binding.port() == addr.port()
            && if binding.ip().is_unspecified() {
                self.ips.contains(&addr.ip())
            } else {
                binding.ip() == addr.ip()
            }
    }

    /// True if this node accepts associations on `addr`.
    pub(crate) fn listens_on(&self, addr: &SocketAddr) -> bool {
        self.listen.iter().any(|b| self.covers(b, addr))
    }

    /// True if this node receives unicast UDP on `addr`.
    pub(crate) fn receives_udp_on(&self, addr: &SocketAddr) -> bool {
        self.udp.iter().any(|b| self.covers(b, addr))
    }
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}
