//! A registrar (ENRP server) in a driver task: [`Registrar::start`]. The protocol is the
//! core's [`rserpool_core::registrar::Registrar`]; this module opens its ASAP and ENRP
//! listeners (and the ENRP multicast receiver if configured) and fills in the transports it
//! announces.

use crate::common::{local_address_towards, multicast_receiver, split_event};
use crate::driver::{Driver, DriverConfig, Handle, Listen};
use crate::error::{ConfigError, Error};
use crate::runtime::{Spawner, Task, fresh_seed};
use crate::transport::{TransportConfig, TransportKind, TransportMode, sctp_available};
use bytes::Bytes;
use futures_lite::Stream;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_core::registrar::{RegistrarEvent, RegistrarStats};
use rserpool_core::{AssocDownReason, AssocId, BulkTransfer, Instant, Machine, Output, Protocol};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::rtf;
use rserpool_proto::transport::TransportParameter;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// How a [`Registrar`] runs.
#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    /// ASAP endpoint for PEs and PUs (RSPLIB 3863; default `0.0.0.0:3863`).
    pub asap_listen: SocketAddr,
    /// ENRP endpoint for peer registrars (RSPLIB 9901; default `0.0.0.0:9901`).
    pub enrp_listen: SocketAddr,
    /// Addresses put into announces and presences. Empty (default): the listen address, or
    /// for a wildcard one the local address towards the first static peer, else 127.0.0.1.
    pub addresses: Vec<IpAddr>,
    /// Kernel SCTP, the TCP mapping, or both where the kernel has SCTP (`Auto`, default:
    /// SCTP and TCP listeners on the same port number).
    pub mode: TransportMode,
    /// Transport settings.
    pub transport: TransportConfig,
    /// Everything the registrar machine is configured with: server id, static peers
    /// (ENRP addresses), timers, address scope, limits, security policies, announce groups.
    /// Its transports (`asap_transports`, `enrp_transport`) are filled in from the listeners.
    /// [`RegistrarConfig::default`] turns the announce groups off (static peers only); set
    /// `asap_announce` / `enrp_announce` for RSPLIB's multicast discovery.
    pub core: rserpool_core::registrar::RegistrarConfig,
    /// Where the driver task runs (default: a thread of its own).
    pub spawner: Spawner,
    /// RNG seed (server id, hash seeds, jitter); `None`: a fresh one.
    pub seed: Option<u64>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            asap_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3863)),
            enrp_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9901)),
            addresses: Vec::new(),
            mode: TransportMode::Auto,
            transport: TransportConfig::default(),
            core: rserpool_core::registrar::RegistrarConfig {
                asap_announce: None,
                enrp_announce: None,
                ..Default::default()
            },
            spawner: Spawner::default(),
            seed: None,
        }
    }
}

impl RegistrarConfig {
    /// A registrar on ephemeral ports of `ip` (tests, examples), accepting addresses of
    /// loopback scope and up when `ip` is a loopback address.
    pub fn local(ip: IpAddr) -> RegistrarConfig {
        let mut c = RegistrarConfig {
            asap_listen: SocketAddr::new(ip, 0),
            enrp_listen: SocketAddr::new(ip, 0),
            ..RegistrarConfig::default()
        };
        if ip.is_loopback() {
            c.core.min_address_scope = rserpool_core::registrar::AddressScope::Loopback;
        }
        c
    }

    /// Adds a static peer (its ENRP address).
    pub fn peer(mut self, enrp: SocketAddr) -> Self {
        self.core.static_peers.push(vec![enrp]);
        self
    }

    fn addresses(&self) -> Vec<IpAddr> {
        if !self.addresses.is_empty() {
            return self.addresses.clone();
        }
        if !self.asap_listen.ip().is_unspecified() {
            return vec![self.asap_listen.ip()];
        }
        let towards_peer = self
            .core
            .static_peers
            .iter()
            .flatten()
            .find_map(|p| local_address_towards(*p));
        vec![towards_peer.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))]
    }
}

/// A PE as a registrar lists it ([`Registrar::pool_elements`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedElement {
    /// Its identifier.
    pub pe_id: PeIdentifier,
    /// Its home registrar.
    pub home: ServerId,
    /// Its user transport (protocol, port, addresses).
    pub user_transport: TransportParameter,
}

/// Registrar events kept for [`Registrar::events`] (the oldest go first when full).
const EVENT_BACKLOG: usize = 1024;

/// The registrar machine plus its event backlog.
pub(crate) struct RegistrarMachine {
    r: rserpool_core::registrar::Registrar,
    events: async_channel::Sender<RegistrarEvent>,
}

impl Machine for RegistrarMachine {
    type Event = std::convert::Infallible;

    fn handle_assoc_id_slot_bits(&mut self, bits: u32) {
        self.r.handle_assoc_id_slot_bits(bits);
    }
    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        self.r.handle_assoc_up(now, assoc, peer_addrs);
    }
    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        self.r.handle_assoc_down(now, assoc, reason);
    }
    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.r.handle_message(now, assoc, ppid, data);
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.r.handle_datagram(now, from, ppid, data);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.r.handle_timeout(now);
    }
    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        loop {
            match split_event(self.r.poll_output()?) {
                Ok(o) => return Some(o),
                Err(e) => {
                    // Nobody reading: dropped.
                    if self.events.receiver_count() > 1 {
                        let _ = self.events.force_send(e);
                    }
                }
            }
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.r.poll_timeout()
    }
    fn poll_bulk_transfer(&mut self) -> Option<BulkTransfer> {
        self.r.poll_bulk_transfer()
    }
}

/// A running registrar.
///
/// ```no_run
/// use rserpool_async_std::{Registrar, RegistrarConfig};
///
/// # async fn run() -> Result<(), rserpool_async_std::Error> {
/// let registrar = Registrar::start(RegistrarConfig::default()).await?;
/// println!("registrar {:?}, ASAP at {}", registrar.server_id(), registrar.asap_addr());
/// # Ok(()) }
/// ```
pub struct Registrar {
    handle: Handle<RegistrarMachine>,
    events: async_channel::Receiver<RegistrarEvent>,
    task: Task,
    server_id: ServerId,
    asap_addrs: Vec<SocketAddr>,
    enrp_addrs: Vec<SocketAddr>,
}

impl fmt::Debug for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registrar")
            .field("server_id", &self.server_id)
            .field("asap", &self.asap_addrs)
            .field("enrp", &self.enrp_addrs)
            .finish_non_exhaustive()
    }
}

impl Registrar {
    /// Opens the listeners and starts the registrar.
    pub async fn start(config: RegistrarConfig) -> Result<Registrar, Error> {
        if config.mode == TransportMode::Sctp && !sctp_available() {
            return Err(ConfigError::Transport("this host has no kernel SCTP").into());
        }
        let asap = Listen::new(
            vec![config.asap_listen],
            rtf::ChannelKind::AsapToRegistrar,
            config.mode,
        );
        // ENRP associations to peers leave from the ENRP endpoint over SCTP: RSPLIB drops a
        // Presence whose Server Information (our ENRP addresses and port) does not match the
        // association's source addresses *and port*, as its one-to-many socket sends from
        // its ENRP port (the mio registrar does the same).
        let enrp = Listen::new(
            vec![config.enrp_listen],
            rtf::ChannelKind::Enrp,
            config.mode,
        )
        .source_for(rtf::ChannelKind::Enrp);
        let driver_config = DriverConfig {
            transport: config.transport.clone(),
            mode: config.mode,
            listen: vec![asap, enrp],
            udp: config
                .core
                .enrp_announce
                .map(|g| multicast_receiver(g, Protocol::PPID_ENRP))
                .into_iter()
                .collect(),
            ..DriverConfig::default()
        };
        let addresses = config.addresses();
        let (events_tx, events_rx) = async_channel::bounded(EVENT_BACKLOG);
        let mut asap_addrs = Vec::new();
        let mut enrp_addrs = Vec::new();
        let mut driver = Driver::try_build(driver_config, |listeners, now| {
            let mut core = config.core.clone();
            core.asap_transports.clear();
            core.enrp_transport = None;
            for l in listeners {
                let Some(port) = l.addrs.first().map(|a| a.port()) else {
                    continue;
                };
                let param = match l.kind {
                    TransportKind::Sctp => TransportParameter::sctp(port, 0, addresses.clone()),
                    TransportKind::Tcp => TransportParameter::tcp(port, 0, addresses.clone()),
                };
                if l.index == 0 {
                    asap_addrs.extend(l.addrs.iter().copied());
                    core.asap_transports.push(param);
                } else {
                    enrp_addrs.extend(l.addrs.iter().copied());
                    // One ENRP transport: SCTP where there is one (RSPLIB reads that).
                    if core.enrp_transport.is_none() || l.kind == TransportKind::Sctp {
                        core.enrp_transport = Some(param);
                    }
                }
            }
            let rng = Xoshiro256PlusPlus::seed_from_u64(config.seed.unwrap_or_else(fresh_seed));
            Ok::<_, Error>(RegistrarMachine {
                r: rserpool_core::registrar::Registrar::new(core, now, rng),
                events: events_tx,
            })
        })?;
        let server_id = driver.machine_mut().r.server_id();
        let handle = driver.handle();
        let name = format!("rserpool-registrar-{:08x}", server_id.0);
        let task = Task::spawn(&config.spawner, &name, driver.run())?;
        Ok(Registrar {
            handle,
            events: events_rx,
            task,
            server_id,
            asap_addrs,
            enrp_addrs,
        })
    }

    /// True until the driver task has ended.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// The registrar's server identifier.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// The ASAP listener's first address (what PEs and PUs are configured with).
    pub fn asap_addr(&self) -> SocketAddr {
        self.asap_addrs[0]
    }

    /// The ENRP listener's first address (what peer registrars are configured with).
    pub fn enrp_addr(&self) -> SocketAddr {
        self.enrp_addrs[0]
    }

    /// Every ASAP listener address (SCTP and TCP under `Auto`).
    pub fn asap_addrs(&self) -> &[SocketAddr] {
        &self.asap_addrs
    }

    /// Every ENRP listener address.
    pub fn enrp_addrs(&self) -> &[SocketAddr] {
        &self.enrp_addrs
    }

    /// The registrar's events (registrations, peers, takeovers), as a [`Stream`]. Only
    /// events after the first call are kept (the last 1024).
    pub fn events(&self) -> impl Stream<Item = RegistrarEvent> + Send + Unpin + 'static {
        Box::pin(self.events.clone())
    }

    /// The PEs of `pool` in the registrar's handlespace (own and replicated).
    pub async fn pool_elements(
        &self,
        pool: impl Into<PoolHandle>,
    ) -> Result<Vec<ListedElement>, Error> {
        let pool = pool.into();
        self.inspect(move |r| {
            r.handlespace().pool(&pool).map_or_else(Vec::new, |p| {
                p.elements()
                    .map(|e| ListedElement {
                        pe_id: e.pe_id(),
                        home: e.home_registrar(),
                        user_transport: e.user_transport(),
                    })
                    .collect()
            })
        })
        .await
    }

    /// The registrar's counters.
    pub async fn stats(&self) -> Result<RegistrarStats, Error> {
        self.inspect(|r| r.stats().clone()).await
    }

    /// Runs `f` on the registrar machine (read-only) inside its task.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&rserpool_core::registrar::Registrar) -> R + Send + 'static,
    ) -> Result<R, Error> {
        Ok(self.handle.call(move |m, _| f(&m.r)).await?)
    }

    /// Stops the registrar: associations are closed gracefully.
    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
        self.task.finished().await;
    }

    /// Stops at once, as a crash would (sockets closed by the kernel, no goodbye).
    pub async fn kill(self) {
        self.task.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_config_and_addresses() {
        let c = RegistrarConfig::local(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.asap_listen.port(), 0);
        assert_eq!(
            c.core.min_address_scope,
            rserpool_core::registrar::AddressScope::Loopback
        );
        assert_eq!(c.addresses(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let c = RegistrarConfig::default().peer("127.0.0.1:9901".parse().unwrap());
        assert_eq!(c.addresses(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }
}
