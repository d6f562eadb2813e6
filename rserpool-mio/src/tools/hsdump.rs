//! `hsdump`: ask a registrar for its peer list and handlespace over ENRP, as RSPLIB's
//! `hsdump` does (`shared/spec/enrp.md` §7, capture 06).
//!
//! [`HsDump`] is a sans-IO [`Machine`] that pretends to be a registrar for one association:
//!
//! 1. it opens an ENRP association to the registrar ([`Output::Connect`], channel kind ENRP);
//! 2. once up it reports [`HsDumpEvent::Connected`]; the application then calls
//!    [`HsDump::start`] with the association's local addresses (the driver knows them), and
//!    the machine sends, like RSPLIB, an ENRP_PRESENCE (R = 0, ownership checksum 0xffff,
//!    Server Information with a random server id and those addresses), an ENRP_LIST_REQUEST
//!    and an ENRP_HANDLE_TABLE_REQUEST with W = 0;
//! 3. every HANDLE_TABLE_RESPONSE with M = 1 is followed by another request (the registrar
//!    continues where it stopped); a PRESENCE with R = 1 is answered with a PRESENCE;
//! 4. after the LIST_RESPONSE and a HANDLE_TABLE_RESPONSE with M = 0 it closes the
//!    association and reports [`HsDumpEvent::Finished`] with the [`Dump`].
//!
//! It fails ([`HsDumpEvent::Failed`]) when the association cannot be set up or is lost, when
//! the registrar rejects a request or answers ENRP_ERROR, on a malformed ENRP message, and
//! when the registrar stays silent for [`HsDumpConfig::timeout`] (connect included; every
//! message from the registrar restarts the timer, so large handlespaces fetched in hundreds
//! of responses do not time out while data flows).

use crate::tools::format_transport;
use bytes::Bytes;
use rserpool_core::handlespace::checksum::checksum_of;
use rserpool_core::io::{AssocIdAllocator, Destination};
use rserpool_core::{
    AssocDownReason, AssocId, ChannelKind, Instant, Machine, Output, Protocol, Transmit,
};
use rserpool_proto::DecodeError;
use rserpool_proto::EnrpMessage;
use rserpool_proto::enrp::{
    EnrpError, HandleTableRequest, HandleTableResponse, ListRequest, ListResponse, Presence,
};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{OperationError, ServerInformation};
use rserpool_proto::param::{PeChecksum, PoolElementParameter, REGISTRATION_LIFE_INFINITE};
use rserpool_proto::transport::{TransportParameter, TransportProtocol};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::debug;

/// What to ask whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsDumpConfig {
    /// The registrar's ENRP endpoint (several addresses: multi-homed, or tried in turn).
    pub registrar: Vec<SocketAddr>,
    /// The transport the registrar is assumed to offer (the driver maps SCTP to the TCP
    /// mapping where the kernel has no SCTP).
    pub transport: TransportProtocol,
    /// Our (pretended) server identifier; RSPLIB's hsdump takes a random one.
    pub server_id: ServerId,
    /// Give up after this long without a message from the registrar.
    pub timeout: Duration,
}

/// Why a dump failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HsDumpError {
    /// The association could not be set up.
    ConnectFailed,
    /// The association went down before the dump was complete.
    AssociationLost,
    /// The registrar was silent for the configured time.
    Timeout,
    /// The registrar rejected the LIST_REQUEST (R flag).
    ListRejected,
    /// The registrar rejected the HANDLE_TABLE_REQUEST (R flag; RSPLIB does this when we are
    /// not in its peer list).
    HandleTableRejected,
    /// The registrar answered ENRP_ERROR.
    ErrorReply(OperationError),
    /// An ENRP message from the registrar could not be decoded.
    Malformed(DecodeError),
}

impl fmt::Display for HsDumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HsDumpError::ConnectFailed => f.write_str("cannot connect to the registrar"),
            HsDumpError::AssociationLost => {
                f.write_str("the association to the registrar went down")
            }
            HsDumpError::Timeout => f.write_str("the registrar did not answer in time"),
            HsDumpError::ListRejected => f.write_str("ListRequest has been rejected"),
            HsDumpError::HandleTableRejected => f.write_str("HandleTableRequest has been rejected"),
            HsDumpError::ErrorReply(e) => write!(f, "the registrar answered ENRP_ERROR: {e:?}"),
            HsDumpError::Malformed(e) => write!(f, "malformed ENRP message: {e}"),
        }
    }
}

impl std::error::Error for HsDumpError {}

/// What the machine tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HsDumpEvent {
    /// The association is up: call [`HsDump::start`].
    Connected(AssocId),
    /// One HANDLE_TABLE_RESPONSE arrived (RSPLIB prints "Got n pools, m PEs => now having
    /// ...").
    Progress {
        /// Pools in this response.
        pools: usize,
        /// PEs in this response.
        pes: usize,
        /// PEs collected so far (duplicates counted once).
        total_pes: usize,
        /// M flag: more responses follow.
        more: bool,
    },
    /// The dump is complete (the association is being closed).
    Finished(Dump),
    /// The dump failed.
    Failed(HsDumpError),
}

/// A registrar's peer list and handlespace as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// The answering registrar (sender id of its responses).
    pub registrar: ServerId,
    /// Its peer list without ourselves, sorted by server id and transport.
    pub peers: Vec<ServerInformation>,
    /// Every PE, by pool handle and PE id (a PE sent twice is kept once, the later copy).
    pub elements: BTreeMap<(PoolHandle, PeIdentifier), PoolElementParameter>,
    /// HANDLE_TABLE_RESPONSEs received.
    pub responses: u32,
}

impl Dump {
    /// Number of pools.
    pub fn pools(&self) -> usize {
        let mut n = 0;
        let mut last: Option<&PoolHandle> = None;
        for (h, _) in self.elements.keys() {
            if last != Some(h) {
                n += 1;
                last = Some(h);
            }
        }
        n
    }

    /// The checksum over every PE (RFC 5353 §3.6.2 as RSPLIB computes it; 0xffff when empty).
    pub fn handlespace_checksum(&self) -> u16 {
        checksum_of(self.elements.keys().map(|(h, id)| (h, *id)))
    }

    /// Per home registrar: number of PEs and their ownership checksum (what that registrar
    /// puts into its PRESENCE).
    pub fn owner_checksums(&self) -> BTreeMap<ServerId, (usize, u16)> {
        let mut by_owner: BTreeMap<ServerId, Vec<(&PoolHandle, PeIdentifier)>> = BTreeMap::new();
        for ((h, id), pe) in &self.elements {
            by_owner
                .entry(pe.home_server_id)
                .or_default()
                .push((h, *id));
        }
        by_owner
            .into_iter()
            .map(|(owner, pes)| (owner, (pes.len(), checksum_of(pes))))
            .collect()
    }

    /// The text form: the peer list (unless `handlespace_only`), then the handlespace with
    /// its checksums, pools in handle order, PEs in id order. Identical handlespaces give
    /// identical text, whichever registrar answered.
    pub fn render(&self, handlespace_only: bool) -> String {
        let mut s = String::new();
        if !handlespace_only {
            let _ = writeln!(
                s,
                "Registrar {}: {} peer{}",
                self.registrar,
                self.peers.len(),
                plural(self.peers.len())
            );
            for p in &self.peers {
                let unknown = if p.server_id == ServerId::NONE {
                    " (identifier not yet known)"
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "  Peer {}{unknown}: {}",
                    p.server_id,
                    format_transport(&p.transport)
                );
            }
        }
        let pools = self.pools();
        let _ = writeln!(
            s,
            "Handlespace: {pools} pool{}, {} PE{}, checksum ${:04x}",
            plural(pools),
            self.elements.len(),
            plural(self.elements.len()),
            self.handlespace_checksum()
        );
        for (owner, (n, sum)) in self.owner_checksums() {
            let _ = writeln!(
                s,
                "  Home registrar {owner}: {n} PE{}, checksum ${sum:04x}",
                plural(n)
            );
        }
        let mut current: Option<&PoolHandle> = None;
        for ((h, id), pe) in &self.elements {
            if current != Some(h) {
                let n = self
                    .elements
                    .range((h.clone(), PeIdentifier(0))..)
                    .take_while(|((x, _), _)| x == h)
                    .count();
                let _ = writeln!(s, "Pool {h}: {n} PE{}", plural(n));
                current = Some(h);
            }
            let life = if pe.registration_life == REGISTRATION_LIFE_INFINITE {
                "infinite".to_owned()
            } else {
                format!("{} ms", pe.registration_life)
            };
            let _ = writeln!(
                s,
                "  PE {id}: home {}, life {life}, policy {:?}",
                pe.home_server_id, pe.policy
            );
            let _ = writeln!(
                s,
                "    user transport: {}",
                format_transport(&pe.user_transport)
            );
            let asap = pe
                .asap_transport
                .as_ref()
                .map_or_else(|| "none".to_owned(), format_transport);
            let _ = writeln!(s, "    ASAP transport: {asap}");
        }
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Connecting,
    Connected,
    Requesting,
    Done,
}

/// The hsdump client machine (see the [module documentation](self)).
#[derive(Debug)]
pub struct HsDump {
    config: HsDumpConfig,
    assoc: AssocId,
    state: State,
    deadline: Option<Instant>,
    local: Option<ServerInformation>,
    peers: Option<Vec<ServerInformation>>,
    table_done: bool,
    dump: Dump,
    out: VecDeque<Output<HsDumpEvent>>,
}

impl HsDump {
    /// A client that connects at once (its first output is the `Connect`).
    pub fn new(now: Instant, config: HsDumpConfig) -> Self {
        let assoc = AssocIdAllocator::default().allocate();
        let mut out = VecDeque::new();
        out.push_back(Output::Connect {
            assoc,
            addrs: config.registrar.iter().copied().collect(),
            transport: config.transport,
            channel: ChannelKind::Enrp,
        });
        HsDump {
            deadline: Some(now + config.timeout),
            config,
            assoc,
            state: State::Connecting,
            local: None,
            peers: None,
            table_done: false,
            dump: Dump::default(),
            out,
        }
    }

    /// Our server identifier.
    pub fn server_id(&self) -> ServerId {
        self.config.server_id
    }

    /// True once finished or failed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Sends PRESENCE, LIST_REQUEST and HANDLE_TABLE_REQUEST (after
    /// [`HsDumpEvent::Connected`]). `local_addrs` are the association's local addresses and
    /// `kind` its transport: they make up the Server Information of our PRESENCE.
    pub fn start(&mut self, now: Instant, local_addrs: &[SocketAddr], kind: TransportProtocol) {
        if self.state != State::Connected {
            return;
        }
        let port = local_addrs.first().map_or(0, SocketAddr::port);
        self.local = Some(ServerInformation {
            server_id: self.config.server_id,
            transport: TransportParameter::with(
                kind,
                port,
                0,
                local_addrs.iter().map(SocketAddr::ip),
            ),
        });
        self.state = State::Requesting;
        self.deadline = Some(now + self.config.timeout);
        self.send_presence(false);
        self.send(EnrpMessage::ListRequest(ListRequest {
            sender: self.config.server_id,
            ..ListRequest::default()
        }));
        self.send_table_request();
    }

    fn send(&mut self, m: EnrpMessage) {
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(self.assoc),
            ppid: Protocol::Enrp.ppid(),
            stream: 0,
            payload: m.to_bytes(),
        }));
    }

    fn send_presence(&mut self, reply_required: bool) {
        let p = Presence {
            reply_required,
            sender: self.config.server_id,
            receiver: self.dump.registrar,
            // We own no PE: the checksum of the empty set.
            checksum: Some(PeChecksum(checksum_of(std::iter::empty()))),
            server_information: self.local.clone(),
            ..Presence::default()
        };
        self.send(EnrpMessage::Presence(p));
    }

    fn send_table_request(&mut self) {
        self.send(EnrpMessage::HandleTableRequest(HandleTableRequest {
            own_children_only: false,
            sender: self.config.server_id,
            receiver: self.dump.registrar,
            ..HandleTableRequest::default()
        }));
    }

    fn fail(&mut self, e: HsDumpError) {
        if self.state == State::Done {
            return;
        }
        let connected = self.state != State::Connecting;
        self.state = State::Done;
        self.deadline = None;
        if connected {
            self.out.push_back(Output::Close {
                assoc: self.assoc,
                abort: false,
            });
        }
        self.out.push_back(Output::Event(HsDumpEvent::Failed(e)));
    }

    fn learn_registrar(&mut self, id: ServerId) {
        if self.dump.registrar == ServerId::NONE {
            self.dump.registrar = id;
        }
    }

    fn on_list_response(&mut self, r: ListResponse) {
        if r.reject {
            self.fail(HsDumpError::ListRejected);
            return;
        }
        self.learn_registrar(r.sender);
        let own = self.config.server_id;
        let mut peers: Vec<ServerInformation> = r
            .servers
            .into_iter()
            .filter(|s| s.server_id != own)
            .collect();
        peers.sort_by_cached_key(|p| (p.server_id, format_transport(&p.transport)));
        peers.dedup();
        self.peers = Some(peers);
    }

    fn on_table_response(&mut self, r: HandleTableResponse) {
        if r.reject {
            self.fail(HsDumpError::HandleTableRejected);
            return;
        }
        self.learn_registrar(r.sender);
        self.dump.responses += 1;
        let pools = r.entries.len();
        let mut pes = 0;
        for e in r.entries {
            for pe in e.pool_elements {
                pes += 1;
                self.dump
                    .elements
                    .insert((e.pool_handle.clone(), pe.pe_id), pe);
            }
        }
        self.out.push_back(Output::Event(HsDumpEvent::Progress {
            pools,
            pes,
            total_pes: self.dump.elements.len(),
            more: r.more,
        }));
        if r.more {
            self.send_table_request();
        } else {
            self.table_done = true;
        }
    }

    fn check_finished(&mut self) {
        if self.state != State::Requesting || !self.table_done {
            return;
        }
        let Some(peers) = self.peers.take() else {
            return;
        };
        self.state = State::Done;
        self.deadline = None;
        let mut dump = std::mem::take(&mut self.dump);
        dump.peers = peers;
        self.out.push_back(Output::Close {
            assoc: self.assoc,
            abort: false,
        });
        self.out
            .push_back(Output::Event(HsDumpEvent::Finished(dump)));
    }
}

impl Machine for HsDump {
    type Event = HsDumpEvent;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, _peer_addrs: &[SocketAddr]) {
        if assoc != self.assoc || self.state != State::Connecting {
            return;
        }
        self.state = State::Connected;
        self.deadline = Some(now + self.config.timeout);
        self.out
            .push_back(Output::Event(HsDumpEvent::Connected(assoc)));
    }

    fn handle_assoc_down(&mut self, _now: Instant, assoc: AssocId, reason: AssocDownReason) {
        if assoc != self.assoc || self.state == State::Done {
            return;
        }
        let e = if self.state == State::Connecting {
            HsDumpError::ConnectFailed
        } else {
            HsDumpError::AssociationLost
        };
        debug!("association down ({reason:?})");
        // Already gone: nothing to close.
        self.state = State::Done;
        self.deadline = None;
        self.out.push_back(Output::Event(HsDumpEvent::Failed(e)));
    }

    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if assoc != self.assoc || self.state != State::Requesting {
            return;
        }
        if ppid != Protocol::Enrp.ppid() {
            debug!("ignoring a message with PPID {ppid}");
            return;
        }
        self.deadline = Some(now + self.config.timeout);
        match EnrpMessage::decode_bytes(&data) {
            Ok(EnrpMessage::ListResponse(r)) => self.on_list_response(r),
            Ok(EnrpMessage::HandleTableResponse(r)) => self.on_table_response(r),
            Ok(EnrpMessage::Presence(p)) => {
                self.learn_registrar(p.sender);
                if p.reply_required {
                    self.send_presence(false);
                }
            }
            Ok(EnrpMessage::Error(EnrpError { error, .. })) => {
                self.fail(HsDumpError::ErrorReply(error));
            }
            Ok(other) => debug!("ignoring {}", other.name()),
            Err(e) => self.fail(HsDumpError::Malformed(e)),
        }
        self.check_finished();
    }

    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}

    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.fail(HsDumpError::Timeout);
        }
    }

    fn poll_output(&mut self) -> Option<Output<HsDumpEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rserpool_proto::enrp::HandleTableEntry;
    use rserpool_proto::policy::Policy;

    fn cfg() -> HsDumpConfig {
        HsDumpConfig {
            registrar: vec!["127.0.0.1:9901".parse().unwrap()],
            transport: TransportProtocol::Sctp,
            server_id: ServerId(0x1111),
            timeout: Duration::from_secs(5),
        }
    }

    fn drain(m: &mut HsDump) -> Vec<Output<HsDumpEvent>> {
        std::iter::from_fn(|| m.poll_output()).collect()
    }

    fn sent(outs: &[Output<HsDumpEvent>]) -> Vec<EnrpMessage> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Transmit(t) => Some(EnrpMessage::decode_bytes(&t.payload).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn pe(id: u32, home: u32) -> PoolElementParameter {
        PoolElementParameter {
            pe_id: PeIdentifier(id),
            home_server_id: ServerId(home),
            registration_life: 90_000,
            user_transport: TransportParameter::sctp(5000, 1, ["10.0.0.4".parse().unwrap()]),
            policy: Policy::RoundRobin,
            asap_transport: Some(TransportParameter::sctp(
                6000,
                0,
                ["10.0.0.4".parse().unwrap()],
            )),
        }
    }

    fn connected() -> (HsDump, AssocId) {
        let mut m = HsDump::new(Instant::ZERO, cfg());
        let outs = drain(&mut m);
        let Some(Output::Connect { assoc, channel, .. }) = outs.first() else {
            panic!("{outs:?}");
        };
        assert_eq!(*channel, ChannelKind::Enrp);
        let assoc = *assoc;
        m.handle_assoc_up(Instant::from_millis(1), assoc, &[]);
        assert_eq!(
            drain(&mut m),
            vec![Output::Event(HsDumpEvent::Connected(assoc))]
        );
        (m, assoc)
    }

    #[test]
    fn sends_what_rsplib_sends_and_follows_more() {
        let (mut m, assoc) = connected();
        m.start(
            Instant::from_millis(2),
            &["127.0.0.1:40000".parse().unwrap()],
            TransportProtocol::Tcp,
        );
        let msgs = sent(&drain(&mut m));
        assert_eq!(msgs.len(), 3);
        let EnrpMessage::Presence(p) = &msgs[0] else {
            panic!("{msgs:?}")
        };
        assert!(!p.reply_required);
        assert_eq!(p.sender, ServerId(0x1111));
        assert_eq!(p.checksum, Some(PeChecksum(0xffff)));
        let si = p.server_information.as_ref().unwrap();
        assert_eq!(si.server_id, ServerId(0x1111));
        assert_eq!(si.transport.protocol, TransportProtocol::Tcp);
        assert_eq!(si.transport.port, 40000);
        assert!(matches!(msgs[1], EnrpMessage::ListRequest(_)));
        let EnrpMessage::HandleTableRequest(r) = &msgs[2] else {
            panic!()
        };
        assert!(!r.own_children_only);

        let reply = |m: &mut HsDump, msg: EnrpMessage| {
            m.handle_message(
                Instant::from_millis(3),
                assoc,
                Protocol::Enrp.ppid(),
                msg.to_bytes(),
            )
        };
        reply(
            &mut m,
            EnrpMessage::ListResponse(ListResponse {
                sender: ServerId(0xaaaa),
                servers: vec![
                    ServerInformation {
                        server_id: ServerId(0x1111),
                        transport: TransportParameter::sctp(1, 0, ["127.0.0.1".parse().unwrap()]),
                    },
                    ServerInformation {
                        server_id: ServerId(0xbbbb),
                        transport: TransportParameter::sctp(9901, 0, ["10.0.0.2".parse().unwrap()]),
                    },
                ],
                ..ListResponse::default()
            }),
        );
        assert!(drain(&mut m).is_empty());
        reply(
            &mut m,
            EnrpMessage::HandleTableResponse(HandleTableResponse {
                more: true,
                sender: ServerId(0xaaaa),
                entries: vec![HandleTableEntry {
                    pool_handle: PoolHandle::from("EchoPool"),
                    pool_elements: vec![pe(0x1f, 0xaaaa)],
                }],
                ..HandleTableResponse::default()
            }),
        );
        let outs = drain(&mut m);
        assert!(matches!(
            outs[0],
            Output::Event(HsDumpEvent::Progress {
                pools: 1,
                pes: 1,
                more: true,
                ..
            })
        ));
        let again = sent(&outs);
        assert!(
            matches!(&again[..], [EnrpMessage::HandleTableRequest(r)] if r.receiver == ServerId(0xaaaa)),
            "{again:?}"
        );
        // A presence asking for a reply gets one.
        reply(
            &mut m,
            EnrpMessage::Presence(Presence {
                reply_required: true,
                sender: ServerId(0xaaaa),
                ..Presence::default()
            }),
        );
        assert!(matches!(
            &sent(&drain(&mut m))[..],
            [EnrpMessage::Presence(p)] if !p.reply_required
        ));
        reply(
            &mut m,
            EnrpMessage::HandleTableResponse(HandleTableResponse {
                sender: ServerId(0xaaaa),
                entries: vec![HandleTableEntry {
                    pool_handle: PoolHandle::from("CalcAppPool"),
                    pool_elements: vec![pe(0x15, 0xbbbb), pe(0x16, 0xbbbb)],
                }],
                ..HandleTableResponse::default()
            }),
        );
        let outs = drain(&mut m);
        assert!(matches!(outs[1], Output::Close { abort: false, .. }));
        let Output::Event(HsDumpEvent::Finished(dump)) = &outs[2] else {
            panic!("{outs:?}")
        };
        assert!(m.is_done());
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(dump.registrar, ServerId(0xaaaa));
        assert_eq!(dump.peers.len(), 1, "ourselves are left out");
        assert_eq!(dump.responses, 2);
        // Checksum vectors of shared/spec/enrp.md §6.6.
        let owners = dump.owner_checksums();
        assert_eq!(owners[&ServerId(0xaaaa)], (1, 0x9232));
        assert_eq!(owners[&ServerId(0xbbbb)], (2, 0x85ea));
        let text = dump.render(false);
        let expected = "\
Registrar $0000aaaa: 1 peer
  Peer $0000bbbb: SCTP 10.0.0.2 port 9901 (data only)
Handlespace: 2 pools, 3 PEs, checksum $";
        assert!(text.starts_with(expected), "{text}");
        assert!(text.contains(
            "\
  Home registrar $0000aaaa: 1 PE, checksum $9232
  Home registrar $0000bbbb: 2 PEs, checksum $85ea
Pool \"CalcAppPool\": 2 PEs
  PE $00000015: home $0000bbbb, life 90000 ms, policy RoundRobin
    user transport: SCTP 10.0.0.4 port 5000 (data plus control)
    ASAP transport: SCTP 10.0.0.4 port 6000 (data only)
  PE $00000016: home $0000bbbb"
        ));
        assert!(text.ends_with("Pool \"EchoPool\": 1 PE\n  PE $0000001f: home $0000aaaa, life 90000 ms, policy RoundRobin\n    user transport: SCTP 10.0.0.4 port 5000 (data plus control)\n    ASAP transport: SCTP 10.0.0.4 port 6000 (data only)\n"), "{text}");
        assert!(dump.render(true).starts_with("Handlespace: 2 pools"));
    }

    #[test]
    fn failures() {
        // Connect failure.
        let mut m = HsDump::new(Instant::ZERO, cfg());
        let Some(Output::Connect { assoc, .. }) = m.poll_output() else {
            panic!()
        };
        m.handle_assoc_down(Instant::ZERO, assoc, AssocDownReason::ConnectFailed);
        assert_eq!(
            drain(&mut m),
            vec![Output::Event(HsDumpEvent::Failed(
                HsDumpError::ConnectFailed
            ))]
        );
        // Silence.
        let (mut m, assoc) = connected();
        m.start(Instant::from_millis(2), &[], TransportProtocol::Sctp);
        drain(&mut m);
        let d = m.poll_timeout().unwrap();
        assert_eq!(d, Instant::from_millis(2) + Duration::from_secs(5));
        m.handle_timeout(d);
        let outs = drain(&mut m);
        assert_eq!(
            outs,
            vec![
                Output::Close {
                    assoc,
                    abort: false
                },
                Output::Event(HsDumpEvent::Failed(HsDumpError::Timeout))
            ]
        );
        // Rejection and garbage.
        let (mut m, assoc) = connected();
        m.start(Instant::from_millis(2), &[], TransportProtocol::Sctp);
        drain(&mut m);
        let rej = EnrpMessage::HandleTableResponse(HandleTableResponse {
            reject: true,
            ..HandleTableResponse::default()
        });
        m.handle_message(Instant::from_millis(3), assoc, 12, rej.to_bytes());
        assert!(drain(&mut m).contains(&Output::Event(HsDumpEvent::Failed(
            HsDumpError::HandleTableRejected
        ))));
        let (mut m, assoc) = connected();
        m.start(Instant::from_millis(2), &[], TransportProtocol::Sctp);
        drain(&mut m);
        m.handle_message(
            Instant::from_millis(3),
            assoc,
            12,
            Bytes::from_static(&[3, 0, 0, 9, 1]),
        );
        assert!(matches!(
            drain(&mut m).last(),
            Some(Output::Event(HsDumpEvent::Failed(HsDumpError::Malformed(
                _
            ))))
        ));
    }
}
