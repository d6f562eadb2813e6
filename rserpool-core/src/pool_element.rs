//! The pool element (PE) side of ASAP as a sans-IO [`Machine`] (RFC 5352 §3.1-3.2, §3.4,
//! §3.6-3.7; `shared/spec/asap.md` §5.1, §5.3, §5.5, §5.7-5.9).
//!
//! # What it does
//! * **Registration** ([`PoolElement::register`]): finds a home registrar with the server
//!   hunt of its [`RegistrarTable`] if it has none, sends ASAP_REGISTRATION (Registration
//!   Life in milliseconds, RSPLIB units: 3 × the re-registration interval by default) and
//!   waits up to [`PoolElementConfig::request_timeout`] for the answer.
//! * **Re-registration** every [`PoolElementConfig::reregistration_interval`] after each
//!   success, and at once after [`PoolElement::set_policy`] / [`PoolElement::set_load`].
//!   A re-registration asked for while one is in flight is sent when the answer arrives.
//! * **Keep-alives**: every ASAP_ENDPOINT_KEEP_ALIVE for its pool handle (with the RSPLIB PE
//!   identifier extension or without it) is answered with ASAP_ENDPOINT_KEEP_ALIVE_ACK on
//!   the association it came over. A keep-alive with the H bit from a registrar other than
//!   the home registrar makes the sender the new home: when it came over a new incoming
//!   association (a takeover; over the TCP mapping a new kind-2 connection), that
//!   association becomes the registrar channel and the old home association is aborted
//!   ([`PoolElementEvent::HomeRegistrarChanged`]). A keep-alive on the home association
//!   teaches (or corrects) the home registrar's identifier.
//! * **Failures** (RFC 5352 §3.7, RSPLIB `asapinstance.c`): home association lost ⇒
//!   [`PoolElementEvent::RegistrarLost`], hunt again and re-register at once. No answer in
//!   time, or an ASAP_ERROR instead of an answer ⇒ abort the home association, hunt, and
//!   resend up to [`PoolElementConfig::request_max_trials`] more times, then report
//!   [`PoolElementEvent::RegistrationFailed`] and try again after the re-registration
//!   interval (or as soon as a new registrar announces itself). A rejected registration is
//!   reported with its cause and not retried (the identical request would fail again);
//!   the PE then stays out of the pool until [`PoolElement::register`] is called again —
//!   except a rejection for a Non-unique PE Identifier (the registrar still binds our
//!   identifier to another association, e.g. of our previous process), which is retried
//!   after the re-registration interval. An
//!   Operation Error in an *accepting* answer (R = 0) is a warning (RFC 5352 §2.2.3) and the
//!   registration counts as accepted (RSPLIB would treat it as a failure; RSPLIB registrars
//!   never send one).
//! * **Deregistration** ([`PoolElement::deregister`]): ASAP_DEREGISTRATION, then
//!   [`PoolElementEvent::Deregistered`]; the registrar association is then closed.
//!
//! # Associations
//! Registrar associations opened by the hunt carry machine-chosen ids. Associations the
//! driver accepts on the PE's ASAP endpoint (registrars sending keep-alives after a
//! takeover) arrive through [`Machine::handle_assoc_up`] with driver-chosen ids — or, if the
//! driver skips that, with their first message.

use bytes::Bytes;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BTreeSet, VecDeque};

use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{
    Deregistration, DeregistrationResponse, EndpointKeepAlive, EndpointKeepAliveAck, Registration,
    RegistrationResponse,
};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{OperationError, PoolElementParameter};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::{
    TRANSPORT_USE_DATA_PLUS_CONTROL, TransportParameter, TransportProtocol,
};

use crate::assoc::Protocol;
use crate::handlespace::limits::{InvalidValue, Limits, TransportRole};
use crate::io::{AssocDownReason, AssocIdAllocator, Machine, Output, Transmit};
use crate::registrar_table::{
    AnnounceOutcome, HuntOutcome, RegistrarTable, RegistrarTableConfig, decode_inbound, encode,
};
use crate::{AssocId, Instant};

/// Configuration of a [`PoolElement`]. Defaults are RSPLIB's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolElementConfig {
    /// The pool to join (1..=32 bytes for RSPLIB registrars).
    pub pool_handle: PoolHandle,
    /// The PE identifier; `None` draws a random one in `1..=0xfffffffe` (RSPLIB) from the RNG.
    pub pe_id: Option<PeIdentifier>,
    /// Selection policy with this PE's values (load, weight, ...).
    pub policy: Policy,
    /// Where pool users reach the PE: protocol (SCTP or TCP), port, transport use
    /// (data + control by default), addresses.
    pub user_transport: TransportParameter,
    /// The PE's own ASAP endpoint, advertised as the ASAP Transport of the Pool Element
    /// parameter so that a registrar taking over can reach it; `None` (default, as RSPLIB)
    /// leaves it to the registrar, which derives it from the association.
    pub asap_transport: Option<TransportParameter>,
    /// T4 re-registration interval (RSPLIB `rspserver -rereginterval`, 30 s).
    pub reregistration_interval: Duration,
    /// Registration Life in milliseconds; `None`: 3 × the re-registration interval (RSPLIB).
    pub registration_life: Option<u32>,
    /// Registrar list and hunt.
    pub registrar_table: RegistrarTableConfig,
    /// T2/T3: how long to wait for a registrar's answer (RSPLIB 3 s).
    pub request_timeout: Duration,
    /// How often a request is sent again after a timeout or an ASAP_ERROR before it fails
    /// (RSPLIB RegistrarRequestMaxTrials, 1).
    pub request_max_trials: u32,
}

impl PoolElementConfig {
    /// A PE of `pool_handle` reachable over `protocol` at `port` on `addresses`, with
    /// transport use data + control, Round Robin and the RSPLIB defaults.
    pub fn new(
        pool_handle: impl Into<PoolHandle>,
        protocol: TransportProtocol,
        port: u16,
        addresses: impl IntoIterator<Item = core::net::IpAddr>,
    ) -> PoolElementConfig {
        PoolElementConfig {
            pool_handle: pool_handle.into(),
            pe_id: None,
            policy: Policy::RoundRobin,
            user_transport: TransportParameter::with(
                protocol,
                port,
                TRANSPORT_USE_DATA_PLUS_CONTROL,
                addresses,
            ),
            asap_transport: None,
            reregistration_interval: Duration::from_secs(30),
            registration_life: None,
            registrar_table: RegistrarTableConfig::default(),
            request_timeout: Duration::from_secs(3),
            request_max_trials: 1,
        }
    }

    /// The Registration Life sent, in milliseconds.
    pub fn effective_registration_life(&self) -> u32 {
        self.registration_life.unwrap_or_else(|| {
            u32::try_from(self.reregistration_interval.as_millis().saturating_mul(3))
                .unwrap_or(u32::MAX - 1)
        })
    }
}

/// Why a registration failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationFailure {
    /// The registrar rejected it (R bit), with its Operation Error if it gave one.
    Rejected(Option<OperationError>),
    /// No answer within the request timeout, also after the allowed retransmissions.
    Timeout,
    /// The server hunt found no registrar.
    NoRegistrar,
    /// The registrar answered with an ASAP_ERROR, also after the allowed retransmissions.
    RegistrarError(OperationError),
}

/// Events of a [`PoolElement`] for its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolElementEvent {
    /// A (re-)registration was accepted.
    Registered {
        /// The home registrar's identifier, if known.
        registrar: Option<ServerId>,
        /// The PE identifier.
        pe_id: PeIdentifier,
        /// The Registration Life sent, in milliseconds.
        life: u32,
    },
    /// A (re-)registration failed.
    RegistrationFailed {
        /// Why.
        cause: RegistrationFailure,
    },
    /// The PE left the pool ([`PoolElement::deregister`]).
    Deregistered {
        /// True if the registrar confirmed it without error; false if the PE was not
        /// registered, no registrar answered (a registrar drops the PE anyway when the
        /// association closes or the registration life ends) or it refused.
        acknowledged: bool,
    },
    /// A registrar became the home registrar by an ASAP_ENDPOINT_KEEP_ALIVE with the H bit.
    HomeRegistrarChanged {
        /// The previous home registrar's identifier, if one was known.
        old: Option<ServerId>,
        /// The new one.
        new: ServerId,
    },
    /// The association to the home registrar broke or was aborted after a failed request.
    RegistrarLost {
        /// Its identifier, if known.
        registrar: Option<ServerId>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    /// Not in a pool (nothing to do).
    Idle,
    /// Stay registered.
    Registered,
    /// Leave the pool.
    Deregistered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Register,
    Deregister,
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    assoc: AssocId,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Request {
    kind: Kind,
    retransmits: u32,
    sent: Option<Sent>,
}

/// The home registrar association.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HomeRegistrar {
    /// The association.
    pub assoc: AssocId,
    /// The registrar's identifier, if known.
    pub server_id: Option<ServerId>,
}

enum Failure {
    Timeout,
    Error(OperationError),
}

/// The pool element machine. See the [module documentation](self).
pub struct PoolElement<R> {
    config: PoolElementConfig,
    rng: R,
    pe_id: PeIdentifier,
    table: RegistrarTable,
    home: Option<HomeRegistrar>,
    incoming: BTreeSet<AssocId>,
    goal: Goal,
    registered: bool,
    request: Option<Request>,
    /// A re-registration was asked for while one was in flight.
    dirty: bool,
    reregister_at: Option<Instant>,
    out: VecDeque<Output<PoolElementEvent>>,
}

impl<R> core::fmt::Debug for PoolElement<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PoolElement")
            .field("pool_handle", &self.config.pool_handle)
            .field("pe_id", &self.pe_id)
            .field("home", &self.home)
            .field("goal", &self.goal)
            .field("registered", &self.registered)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

fn validate(config: &PoolElementConfig) -> Result<(), InvalidValue> {
    let limits = Limits::default();
    let len = config.pool_handle.len();
    if len == 0 || len > limits.max_pool_handle_len {
        return Err(InvalidValue::PoolHandleLength {
            len,
            max: limits.max_pool_handle_len,
        });
    }
    if config.pe_id == Some(PeIdentifier(0)) {
        return Err(InvalidValue::PeIdentifier);
    }
    let t = &config.user_transport;
    if t.protocol != TransportProtocol::Opaque {
        if t.addresses.is_empty() {
            return Err(InvalidValue::NoAddress(TransportRole::User));
        }
        if t.addresses.len() > limits.addresses() {
            return Err(InvalidValue::TooManyAddresses {
                role: TransportRole::User,
                count: t.addresses.len(),
                max: limits.addresses(),
            });
        }
        if t.port == 0 {
            return Err(InvalidValue::PortZero(TransportRole::User));
        }
    }
    Ok(())
}

/// A Policy with its load value replaced (`None` if the policy has no load).
pub fn policy_with_load(policy: &Policy, load: u32) -> Option<Policy> {
    policy.load()?;
    let mut v = policy.values();
    *v.first_mut()? = load;
    Policy::from_type_and_values(policy.policy_type(), &v)
}

impl<R: rand_core::Rng> PoolElement<R> {
    /// A PE that does nothing until [`PoolElement::register`]. Fails if the configuration
    /// could never be registered (empty or over-long pool handle, PE identifier 0, user
    /// transport without address, with too many addresses or port 0).
    pub fn new(config: PoolElementConfig, mut rng: R) -> Result<PoolElement<R>, InvalidValue> {
        validate(&config)?;
        let pe_id = config
            .pe_id
            .unwrap_or_else(|| PeIdentifier(1 + rng.next_u32() % 0xffff_fffe));
        let table = RegistrarTable::new(config.registrar_table.clone());
        Ok(PoolElement {
            config,
            rng,
            pe_id,
            table,
            home: None,
            incoming: BTreeSet::new(),
            goal: Goal::Idle,
            registered: false,
            request: None,
            dirty: false,
            reregister_at: None,
            out: VecDeque::new(),
        })
    }

    // ------------------------------------------------------------------------------------
    // getters

    /// The configuration.
    pub fn config(&self) -> &PoolElementConfig {
        &self.config
    }

    /// The PE identifier.
    pub fn pe_id(&self) -> PeIdentifier {
        self.pe_id
    }

    /// The policy (with the values last set).
    pub fn policy(&self) -> Policy {
        self.config.policy
    }

    /// The home registrar, if an association to one is up.
    pub fn home_registrar(&self) -> Option<HomeRegistrar> {
        self.home
    }

    /// True when the last registration was accepted and the home association has not
    /// been lost since.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// The registrar table (list and hunt state).
    pub fn registrar_table(&self) -> &RegistrarTable {
        &self.table
    }

    /// When the next re-registration is due.
    pub fn next_reregistration(&self) -> Option<Instant> {
        self.reregister_at
    }

    // ------------------------------------------------------------------------------------
    // commands

    /// Joins the pool (or re-registers at once if already registered).
    pub fn register(&mut self, now: Instant) {
        self.goal = Goal::Registered;
        self.queue(now, Kind::Register);
    }

    /// Replaces the policy (and its values) and re-registers at once if registered.
    pub fn set_policy(&mut self, now: Instant, policy: Policy) {
        self.config.policy = policy;
        if self.goal == Goal::Registered {
            self.queue(now, Kind::Register);
        }
    }

    /// Sets the load of a load-based policy and re-registers at once if registered.
    /// Returns false (and changes nothing) if the policy has no load value.
    pub fn set_load(&mut self, now: Instant, load: u32) -> bool {
        match policy_with_load(&self.config.policy, load) {
            Some(p) => {
                self.set_policy(now, p);
                true
            }
            None => false,
        }
    }

    /// Leaves the pool: ASAP_DEREGISTRATION to the home registrar (hunting for one if
    /// needed), then [`PoolElementEvent::Deregistered`].
    pub fn deregister(&mut self, now: Instant) {
        self.reregister_at = None;
        let in_flight = self
            .request
            .is_some_and(|r| r.kind == Kind::Register && r.sent.is_some());
        if !self.registered && !in_flight {
            // Nothing can be registered anywhere: stop at once.
            self.request = None;
            self.table.cancel_hunt();
            self.drain_table();
            self.goal = Goal::Idle;
            self.close_home(false);
            self.event(PoolElementEvent::Deregistered {
                acknowledged: false,
            });
            return;
        }
        self.goal = Goal::Deregistered;
        self.queue(now, Kind::Deregister);
    }

    // ------------------------------------------------------------------------------------
    // internals

    fn event(&mut self, e: PoolElementEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn send(&mut self, assoc: AssocId, payload: Bytes) {
        self.out.push_back(Output::Transmit(Transmit::assoc(
            assoc,
            Protocol::Asap,
            payload,
        )));
    }

    fn drain_table(&mut self) {
        while let Some(a) = self.table.poll_action() {
            self.out.push_back(a.into_output());
        }
    }

    fn close_home(&mut self, abort: bool) -> Option<HomeRegistrar> {
        let h = self.home.take()?;
        self.out.push_back(Output::Close {
            assoc: h.assoc,
            abort,
        });
        Some(h)
    }

    fn queue(&mut self, now: Instant, kind: Kind) {
        match &mut self.request {
            Some(r) if r.kind == kind => {
                if r.sent.is_some() && kind == Kind::Register {
                    self.dirty = true;
                }
            }
            _ => {
                self.request = Some(Request {
                    kind,
                    retransmits: 0,
                    sent: None,
                });
                self.dirty = false;
            }
        }
        self.pump(now);
    }

    fn registration(&self) -> Registration {
        Registration::new(
            self.config.pool_handle.clone(),
            PoolElementParameter {
                pe_id: self.pe_id,
                home_server_id: self
                    .home
                    .and_then(|h| h.server_id)
                    .unwrap_or(ServerId::NONE),
                registration_life: self.config.effective_registration_life(),
                user_transport: self.config.user_transport.clone(),
                policy: self.config.policy,
                asap_transport: self.config.asap_transport.clone(),
            },
        )
    }

    /// Sends the queued request on the home association, or hunts for one.
    fn pump(&mut self, now: Instant) {
        let Some(r) = self.request else {
            return;
        };
        if r.sent.is_some() {
            return;
        }
        match self.home {
            Some(h) => {
                let payload = match r.kind {
                    Kind::Register => encode(self.registration()),
                    Kind::Deregister => encode(Deregistration::new(
                        self.config.pool_handle.clone(),
                        self.pe_id,
                    )),
                };
                self.send(h.assoc, payload);
                if let Some(r) = self.request.as_mut() {
                    r.sent = Some(Sent {
                        assoc: h.assoc,
                        deadline: now + self.config.request_timeout,
                    });
                }
            }
            None => {
                self.table.start_hunt(now, &mut self.rng);
                self.drain_table();
            }
        }
    }

    /// Takes back a request sent on `assoc` (the association is gone): it will be sent
    /// again on the next home association.
    fn unsend(&mut self, assoc: AssocId) {
        if let Some(r) = self.request.as_mut()
            && r.sent.is_some_and(|s| s.assoc == assoc)
        {
            r.sent = None;
        }
    }

    fn home_lost(&mut self, now: Instant, h: HomeRegistrar) {
        self.registered = false;
        self.event(PoolElementEvent::RegistrarLost {
            registrar: h.server_id,
        });
        self.unsend(h.assoc);
        if self.goal == Goal::Registered && self.request.is_none() {
            // Re-register at once: the registrar dropped the PE with the association.
            self.reregister_at = None;
            self.queue(now, Kind::Register);
        } else {
            self.pump(now);
        }
    }

    /// No answer in time, or an ASAP_ERROR instead of one.
    fn request_failed(&mut self, now: Instant, why: Failure) {
        let Some(mut r) = self.request.take() else {
            return;
        };
        if let Some(h) = self.close_home(true) {
            self.registered = false;
            self.event(PoolElementEvent::RegistrarLost {
                registrar: h.server_id,
            });
        }
        r.retransmits += 1;
        r.sent = None;
        if r.retransmits <= self.config.request_max_trials {
            self.request = Some(r);
            self.pump(now);
            return;
        }
        self.dirty = false;
        match r.kind {
            Kind::Register => {
                let cause = match why {
                    Failure::Timeout => RegistrationFailure::Timeout,
                    Failure::Error(e) => RegistrationFailure::RegistrarError(e),
                };
                self.event(PoolElementEvent::RegistrationFailed { cause });
                self.reregister_at = Some(now + self.config.reregistration_interval);
            }
            Kind::Deregister => {
                self.goal = Goal::Idle;
                self.event(PoolElementEvent::Deregistered {
                    acknowledged: false,
                });
            }
        }
    }

    fn hunt_failed(&mut self, now: Instant) {
        let Some(r) = self.request.take() else {
            return;
        };
        self.dirty = false;
        match r.kind {
            Kind::Register => {
                self.event(PoolElementEvent::RegistrationFailed {
                    cause: RegistrationFailure::NoRegistrar,
                });
                self.reregister_at = Some(now + self.config.reregistration_interval);
            }
            Kind::Deregister => {
                self.goal = Goal::Idle;
                self.event(PoolElementEvent::Deregistered {
                    acknowledged: false,
                });
            }
        }
    }

    fn hunt_outcome(&mut self, now: Instant, o: HuntOutcome) {
        match o {
            HuntOutcome::Connected {
                assoc, server_id, ..
            } => {
                if self.goal == Goal::Idle {
                    self.out.push_back(Output::Close {
                        assoc,
                        abort: false,
                    });
                    return;
                }
                // A takeover may have given us a home meanwhile; keep the newer one.
                if self.home.is_some() {
                    self.out.push_back(Output::Close {
                        assoc,
                        abort: false,
                    });
                    self.pump(now);
                    return;
                }
                self.home = Some(HomeRegistrar { assoc, server_id });
                self.pump(now);
            }
            HuntOutcome::Failed => self.hunt_failed(now),
        }
    }

    fn is_ours(&self, pool_handle: &PoolHandle, pe_id: PeIdentifier) -> bool {
        *pool_handle == self.config.pool_handle && pe_id == self.pe_id
    }

    fn sent_on(&self, kind: Kind, assoc: AssocId) -> bool {
        self.request
            .is_some_and(|r| r.kind == kind && r.sent.is_some_and(|s| s.assoc == assoc))
    }

    fn on_registration_response(&mut self, now: Instant, assoc: AssocId, m: RegistrationResponse) {
        if !self.is_ours(&m.pool_handle, m.pe_id) || !self.sent_on(Kind::Register, assoc) {
            return;
        }
        self.request = None;
        if m.reject {
            let non_unique = m.error.as_ref().is_some_and(|e| {
                e.causes
                    .iter()
                    .any(|c| c.code == rserpool_proto::param::cause::NON_UNIQUE_PE_IDENTIFIER)
            });
            self.registered = false;
            self.dirty = false;
            if non_unique {
                // Our identifier is still bound to another association at the registrar:
                // typically our own previous process, whose association it has not yet
                // found dead. The registrar probes that binding; try again later.
                self.reregister_at = Some(now + self.config.reregistration_interval);
            } else {
                self.goal = Goal::Idle;
                self.reregister_at = None;
            }
            self.event(PoolElementEvent::RegistrationFailed {
                cause: RegistrationFailure::Rejected(m.error),
            });
            return;
        }
        self.registered = true;
        self.event(PoolElementEvent::Registered {
            registrar: self.home.and_then(|h| h.server_id),
            pe_id: self.pe_id,
            life: self.config.effective_registration_life(),
        });
        self.reregister_at = Some(now + self.config.reregistration_interval);
        if core::mem::take(&mut self.dirty) {
            self.queue(now, Kind::Register);
        }
    }

    fn on_deregistration_response(
        &mut self,
        now: Instant,
        assoc: AssocId,
        m: DeregistrationResponse,
    ) {
        if !self.is_ours(&m.pool_handle, m.pe_id) {
            return;
        }
        if self.sent_on(Kind::Deregister, assoc) {
            self.request = None;
            self.registered = false;
            self.goal = Goal::Idle;
            self.close_home(false);
            self.event(PoolElementEvent::Deregistered {
                acknowledged: m.error.is_none(),
            });
            return;
        }
        // RFC 5352 §3.2: a registrar tells a PE whose registration life ran out.
        let home = self.home.is_some_and(|h| h.assoc == assoc);
        if home && self.goal == Goal::Registered && m.error.is_none() && self.request.is_none() {
            self.registered = false;
            self.queue(now, Kind::Register);
        }
    }

    fn on_keep_alive(&mut self, now: Instant, assoc: AssocId, ka: EndpointKeepAlive) {
        if self.goal == Goal::Idle || ka.pool_handle != self.config.pool_handle {
            return;
        }
        if ka.pe_id.is_some_and(|id| id != self.pe_id) {
            return;
        }
        self.send(
            assoc,
            encode(EndpointKeepAliveAck::new(
                self.config.pool_handle.clone(),
                self.pe_id,
            )),
        );
        let id = ka.server_id;
        match self.home.as_mut() {
            Some(h) if h.assoc == assoc => {
                // The registrar at the other end of the home association is the home,
                // whatever H says: its identifier corrects one learnt from a stale
                // announce (a registrar restarted with a new identifier at the same
                // address).
                let old = h.server_id;
                if old != Some(id) {
                    h.server_id = Some(id);
                    if let Some(old) = old {
                        self.event(PoolElementEvent::HomeRegistrarChanged {
                            old: Some(old),
                            new: id,
                        });
                    }
                }
            }
            home => {
                let adopt = ka.home && home.is_none_or(|h| h.server_id != Some(id));
                if !adopt {
                    return;
                }
                let old = self.close_home(true);
                if let Some(o) = old {
                    self.unsend(o.assoc);
                }
                self.incoming.remove(&assoc);
                self.table.cancel_hunt();
                self.drain_table();
                self.home = Some(HomeRegistrar {
                    assoc,
                    server_id: Some(id),
                });
                self.event(PoolElementEvent::HomeRegistrarChanged {
                    old: old.and_then(|o| o.server_id),
                    new: id,
                });
                self.pump(now);
            }
        }
    }
}

impl<R: rand_core::Rng> Machine for PoolElement<R> {
    type Event = PoolElementEvent;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, _peer_addrs: &[SocketAddr]) {
        if AssocIdAllocator::is_machine_chosen(assoc) {
            if let Some(o) = self.table.handle_assoc_up(assoc) {
                self.drain_table();
                self.hunt_outcome(now, o);
            }
        } else {
            self.incoming.insert(assoc);
        }
    }

    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, _reason: AssocDownReason) {
        if self.table.handle_assoc_down(assoc) {
            self.drain_table();
            return;
        }
        self.incoming.remove(&assoc);
        if self.home.is_some_and(|h| h.assoc == assoc)
            && let Some(h) = self.home.take()
        {
            self.home_lost(now, h);
        }
    }

    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if ppid != Protocol::PPID_ASAP {
            return;
        }
        let is_home = self.home.is_some_and(|h| h.assoc == assoc);
        if !is_home {
            if AssocIdAllocator::is_machine_chosen(assoc) {
                // A hunt attempt or an association we already let go.
                return;
            }
            self.incoming.insert(assoc);
        }
        let mut reply = None;
        let msg = decode_inbound(&data, &mut reply);
        if let Some(r) = reply {
            self.send(assoc, r);
        }
        match msg {
            Some(AsapMessage::RegistrationResponse(m)) => {
                self.on_registration_response(now, assoc, m)
            }
            Some(AsapMessage::DeregistrationResponse(m)) => {
                self.on_deregistration_response(now, assoc, m)
            }
            Some(AsapMessage::EndpointKeepAlive(ka)) => self.on_keep_alive(now, assoc, ka),
            Some(AsapMessage::Error(e)) => {
                let waiting = self
                    .request
                    .is_some_and(|r| r.sent.is_some_and(|s| s.assoc == assoc));
                if is_home && waiting {
                    self.request_failed(now, Failure::Error(e.error));
                }
            }
            _ => {}
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        if ppid != Protocol::PPID_ASAP {
            return;
        }
        let o = self.table.handle_datagram(now, from, &data, &mut self.rng);
        self.drain_table();
        if o == AnnounceOutcome::New
            && self.goal == Goal::Registered
            && !self.registered
            && self.request.is_none()
            && self.home.is_none()
        {
            // Waiting to retry after a failure: a new registrar is worth trying now.
            self.reregister_at = None;
            self.queue(now, Kind::Register);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(o) = self.table.handle_timeout(now, &mut self.rng) {
            self.drain_table();
            self.hunt_outcome(now, o);
        }
        self.drain_table();
        if self
            .request
            .is_some_and(|r| r.sent.is_some_and(|s| s.deadline <= now))
        {
            self.request_failed(now, Failure::Timeout);
        }
        if self.reregister_at.is_some_and(|t| t <= now) {
            self.reregister_at = None;
            if self.goal == Goal::Registered {
                self.queue(now, Kind::Register);
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<PoolElementEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.table.poll_timeout(),
            self.request.and_then(|r| r.sent.map(|s| s.deadline)),
            self.reregister_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
