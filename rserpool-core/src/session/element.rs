//! The pool element side of sessions ([`PoolElementSessions`]): RSPLIB's enhanced-mode PE
//! socket (`rsp_register`, `rsp_accept`/one-to-many sessions, `rsp_send_cookie`,
//! `rsp_recvmsg` with `MSG_RSERPOOL_COOKIE_ECHO`).
//!
//! It wraps a [`PoolElement`] (registration life cycle, keep-alives, registrar hunt and
//! takeover) whose user transport is the session listener — protocol (SCTP or TCP), port and
//! addresses — with Transport Use *data plus control* (set by [`PoolElementSessions::new`]:
//! without it there is no control channel, `shared/spec/session-layer.md` §1). Its events come
//! out as [`PeSessionEvent::Registration`].
//!
//! # Sessions and registrar channels among accepted associations
//! The driver accepts two kinds of associations for a PE: sessions from pool users on the
//! user port, and registrars that open an association to the PE themselves (after a
//! takeover: ASAP_ENDPOINT_KEEP_ALIVE with the H bit; over the TCP mapping a channel-kind-2
//! connection to the user port). The core cannot see which listener accepted an association,
//! so the rule is:
//!
//! 1. A driver that knows (separate SCTP listeners; the RTF HELLO's channel kind 2 vs 4)
//!    announces registrar associations with
//!    [`PoolElementSessions::handle_registrar_assoc_up`] instead of
//!    [`Machine::handle_assoc_up`]. They go to the pool element.
//! 2. Every other association the driver accepts ([`Machine::handle_assoc_up`] with a
//!    driver-chosen id) is a **session** at once: [`PeSessionEvent::SessionOpened`], so that a
//!    service that talks first (daytime, chargen) can start.
//! 3. Fallback for drivers that do not tell: if the **first** message on such a session is an
//!    ASAP message a registrar sends to a PE (ENDPOINT_KEEP_ALIVE, REGISTRATION_RESPONSE,
//!    DEREGISTRATION_RESPONSE) — a pool user never sends those — the association is handed to
//!    the pool element with that message, and the application sees
//!    [`PeSessionEvent::SessionClosed`] with [`SessionCloseReason::RegistrarChannel`].
//!    A message on an association never announced is classified the same way.
//!
//! Associations with machine-chosen ids are the pool element's registrar hunt.
//!
//! # On a session
//! * PPID 11 is the control channel: the **first** ASAP_COOKIE_ECHO of a session is delivered
//!   at once as [`PeSessionEvent::CookieEcho`] (RSPLIB hands it out only with the next data
//!   message — a whole keep-alive interval late, `shared/design/rsplib-measured.md` defect 6);
//!   later ones are dropped, as RSPLIB does. ASAP_BUSINESS_CARD is delivered
//!   ([`PeSessionEvent::BusinessCard`]); other ASAP messages are dropped.
//! * Every other PPID is data ([`PeSessionEvent::Data`]).
//! * The application sends data ([`PoolElementSessions::send`]), cookies
//!   ([`PoolElementSessions::send_cookie`]) and business cards, and ends sessions
//!   ([`PoolElementSessions::close`] gracefully, [`PoolElementSessions::abort`]); sessions it
//!   ends itself produce no [`PeSessionEvent::SessionClosed`].

use bytes::Bytes;
use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{BusinessCard, CookieMessage, msg_type};
use rserpool_proto::param::PoolElementParameter;
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TRANSPORT_USE_DATA_PLUS_CONTROL;

use super::{PPID_CONTROL, SendError};
use crate::handlespace::limits::InvalidValue;
use crate::io::{AssocDownReason, AssocIdAllocator, Destination, Machine, Output, Transmit};
use crate::pool_element::{PoolElement, PoolElementConfig, PoolElementEvent};
use crate::{AssocId, Instant};

/// Why a session ended (seen by the PE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionCloseReason {
    /// The pool user shut the association down.
    Shutdown,
    /// The association was aborted or the transport declared the peer dead.
    Lost,
    /// The association turned out to be a registrar's (its first message was a registrar's
    /// ASAP message): it now belongs to the pool element.
    RegistrarChannel,
}

/// Events of [`PoolElementSessions`] for its application. A session is named by its
/// association id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeSessionEvent {
    /// A pool user opened a session.
    SessionOpened {
        /// The session.
        session: AssocId,
    },
    /// A data message.
    Data {
        /// The session.
        session: AssocId,
        /// Its PPID.
        ppid: u32,
        /// The message.
        data: Bytes,
    },
    /// The pool user failed over to this PE and hands over the state cookie (the payload of
    /// the Cookie parameter): restore the session from it now.
    CookieEcho {
        /// The session.
        session: AssocId,
        /// The cookie, as the previous PE sent it.
        cookie: Bytes,
    },
    /// A business card (from a pool user that is also a PE).
    BusinessCard {
        /// The session.
        session: AssocId,
        /// The card.
        card: BusinessCard,
    },
    /// A session ended.
    SessionClosed {
        /// The session.
        session: AssocId,
        /// Why.
        reason: SessionCloseReason,
    },
    /// An event of the registration ([`PoolElement`]).
    Registration(PoolElementEvent),
}

#[derive(Clone, Copy, Debug, Default)]
struct PeSession {
    /// A message arrived (the registrar-channel fallback looks at the first one only).
    received: bool,
    /// The cookie echo was delivered.
    cookie_echoed: bool,
}

/// True for the ASAP messages a registrar sends to a PE, which a pool user never sends.
fn is_registrar_message(ppid: u32, data: &[u8]) -> bool {
    ppid == PPID_CONTROL
        && matches!(
            data.first().copied(),
            Some(
                msg_type::ENDPOINT_KEEP_ALIVE
                    | msg_type::REGISTRATION_RESPONSE
                    | msg_type::DEREGISTRATION_RESPONSE
            )
        )
}

/// The pool element with its sessions. See the [module documentation](self).
pub struct PoolElementSessions<R> {
    pe: PoolElement<R>,
    sessions: BTreeMap<AssocId, PeSession>,
    registrar_channels: BTreeSet<AssocId>,
    out: VecDeque<Output<PeSessionEvent>>,
}

impl<R> core::fmt::Debug for PoolElementSessions<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PoolElementSessions")
            .field("pe", &self.pe)
            .field("sessions", &self.sessions.len())
            .field("registrar_channels", &self.registrar_channels)
            .finish_non_exhaustive()
    }
}

impl<R: rand_core::Rng> PoolElementSessions<R> {
    /// A PE whose user transport (`config.user_transport`: the session listener's protocol,
    /// port and addresses) gets Transport Use *data plus control*. It does nothing until
    /// [`PoolElementSessions::register`]; sessions are accepted from the start. Fails as
    /// [`PoolElement::new`] does.
    pub fn new(
        mut config: PoolElementConfig,
        rng: R,
    ) -> Result<PoolElementSessions<R>, InvalidValue> {
        config.user_transport.transport_use = TRANSPORT_USE_DATA_PLUS_CONTROL;
        Ok(PoolElementSessions {
            pe: PoolElement::new(config, rng)?,
            sessions: BTreeMap::new(),
            registrar_channels: BTreeSet::new(),
            out: VecDeque::new(),
        })
    }

    // ------------------------------------------------------------------------------------
    // getters

    /// The wrapped pool element (PE identifier, registration state, home registrar).
    pub fn element(&self) -> &PoolElement<R> {
        &self.pe
    }

    /// The open sessions, in id order.
    pub fn sessions(&self) -> impl Iterator<Item = AssocId> + '_ {
        self.sessions.keys().copied()
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// True if `session` is open.
    pub fn has_session(&self, session: AssocId) -> bool {
        self.sessions.contains_key(&session)
    }

    // ------------------------------------------------------------------------------------
    // registration commands (delegated)

    /// Joins the pool (re-registers at once if registered): [`PoolElement::register`].
    pub fn register(&mut self, now: Instant) {
        self.pe.register(now);
        self.pump();
    }

    /// Leaves the pool; open sessions stay open: [`PoolElement::deregister`].
    pub fn deregister(&mut self, now: Instant) {
        self.pe.deregister(now);
        self.pump();
    }

    /// Replaces the policy and re-registers: [`PoolElement::set_policy`].
    pub fn set_policy(&mut self, now: Instant, policy: Policy) {
        self.pe.set_policy(now, policy);
        self.pump();
    }

    /// Sets the load and re-registers: [`PoolElement::set_load`].
    pub fn set_load(&mut self, now: Instant, load: u32) -> bool {
        let ok = self.pe.set_load(now, load);
        self.pump();
        ok
    }

    // ------------------------------------------------------------------------------------
    // session commands

    /// Sends a data message on a session (stream 0).
    pub fn send(&mut self, session: AssocId, ppid: u32, data: Bytes) -> Result<(), SendError> {
        if ppid == PPID_CONTROL {
            return Err(SendError::ControlPpid);
        }
        self.send_raw(session, ppid, data)
    }

    /// Sends an ASAP_COOKIE carrying `cookie` (RSPLIB `rsp_send_cookie`); the pool user keeps
    /// the newest one and echoes it to the next PE after a failover.
    pub fn send_cookie(&mut self, session: AssocId, cookie: Bytes) -> Result<(), SendError> {
        let m = AsapMessage::from(CookieMessage::new(cookie)).to_bytes();
        self.send_raw(session, PPID_CONTROL, m)
    }

    /// Sends an ASAP_BUSINESS_CARD with this PE's pool handle and `failover_order`, the PEs
    /// the pool user should prefer after a failover (RFC 5352 §3.9; RSPLIB ignores cards).
    pub fn send_business_card(
        &mut self,
        session: AssocId,
        failover_order: Vec<PoolElementParameter>,
    ) -> Result<(), SendError> {
        let card = BusinessCard {
            reserved_flags: 0,
            pool_handle: self.pe.config().pool_handle.clone(),
            policy: None,
            pool_elements: failover_order,
            skipped: Vec::new(),
        };
        let m = AsapMessage::from(card).to_bytes();
        self.send_raw(session, PPID_CONTROL, m)
    }

    /// Ends a session gracefully (after the queued data). Returns false for an unknown one.
    pub fn close(&mut self, session: AssocId) -> bool {
        self.end(session, false)
    }

    /// Aborts a session. Returns false for an unknown one.
    pub fn abort(&mut self, session: AssocId) -> bool {
        self.end(session, true)
    }

    /// A registrar opened an association to this PE (the driver knows it: ASAP listener, or
    /// RTF channel kind 2). It belongs to the pool element, not to the sessions.
    pub fn handle_registrar_assoc_up(
        &mut self,
        now: Instant,
        assoc: AssocId,
        peer_addrs: &[SocketAddr],
    ) {
        self.registrar_channels.insert(assoc);
        self.pe.handle_assoc_up(now, assoc, peer_addrs);
        self.pump();
    }

    // ------------------------------------------------------------------------------------
    // internals

    fn send_raw(&mut self, session: AssocId, ppid: u32, payload: Bytes) -> Result<(), SendError> {
        if !self.sessions.contains_key(&session) {
            return Err(SendError::NoSession);
        }
        self.out.push_back(Output::Transmit(Transmit {
            dest: Destination::Assoc(session),
            ppid,
            stream: 0,
            payload,
        }));
        Ok(())
    }

    fn end(&mut self, session: AssocId, abort: bool) -> bool {
        if self.sessions.remove(&session).is_none() {
            return false;
        }
        self.out.push_back(Output::Close {
            assoc: session,
            abort,
        });
        true
    }

    fn event(&mut self, e: PeSessionEvent) {
        self.out.push_back(Output::Event(e));
    }

    /// Drains the pool element's outputs into ours.
    fn pump(&mut self) {
        while let Some(o) = self.pe.poll_output() {
            self.out.push_back(match o {
                Output::Event(e) => Output::Event(PeSessionEvent::Registration(e)),
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
            });
        }
    }

    /// Hands an accepted association to the pool element as a registrar channel.
    fn hand_to_registrar(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        self.registrar_channels.insert(assoc);
        self.pe.handle_assoc_up(now, assoc, &[]);
        self.pe.handle_message(now, assoc, ppid, data);
        self.pump();
    }

    fn on_session_message(&mut self, now: Instant, session: AssocId, ppid: u32, data: Bytes) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let first = !s.received;
        let echoed = s.cookie_echoed;
        s.received = true;
        if first && is_registrar_message(ppid, &data) {
            self.sessions.remove(&session);
            self.event(PeSessionEvent::SessionClosed {
                session,
                reason: SessionCloseReason::RegistrarChannel,
            });
            self.hand_to_registrar(now, session, ppid, data);
            return;
        }
        if ppid != PPID_CONTROL {
            self.event(PeSessionEvent::Data {
                session,
                ppid,
                data,
            });
            return;
        }
        match AsapMessage::decode_bytes(&data) {
            Ok(AsapMessage::CookieEcho(c)) if !echoed => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.cookie_echoed = true;
                }
                self.event(PeSessionEvent::CookieEcho {
                    session,
                    cookie: c.cookie.0,
                });
            }
            Ok(AsapMessage::BusinessCard(card)) => {
                self.event(PeSessionEvent::BusinessCard { session, card });
            }
            _ => {}
        }
    }
}

impl<R: rand_core::Rng> Machine for PoolElementSessions<R> {
    type Event = PeSessionEvent;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, peer_addrs: &[SocketAddr]) {
        if AssocIdAllocator::is_machine_chosen(assoc) || self.registrar_channels.contains(&assoc) {
            self.pe.handle_assoc_up(now, assoc, peer_addrs);
            self.pump();
            return;
        }
        if self.sessions.contains_key(&assoc) {
            return;
        }
        self.sessions.insert(assoc, PeSession::default());
        self.event(PeSessionEvent::SessionOpened { session: assoc });
    }

    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, reason: AssocDownReason) {
        if self.sessions.remove(&assoc).is_some() {
            let reason = match reason {
                AssocDownReason::Shutdown => SessionCloseReason::Shutdown,
                _ => SessionCloseReason::Lost,
            };
            self.event(PeSessionEvent::SessionClosed {
                session: assoc,
                reason,
            });
            return;
        }
        self.registrar_channels.remove(&assoc);
        self.pe.handle_assoc_down(now, assoc, reason);
        self.pump();
    }

    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if self.sessions.contains_key(&assoc) {
            self.on_session_message(now, assoc, ppid, data);
            return;
        }
        if AssocIdAllocator::is_machine_chosen(assoc) || self.registrar_channels.contains(&assoc) {
            self.pe.handle_message(now, assoc, ppid, data);
            self.pump();
            return;
        }
        // Never announced by handle_assoc_up: classify by this first message.
        if is_registrar_message(ppid, &data) {
            self.hand_to_registrar(now, assoc, ppid, data);
        } else {
            self.sessions.insert(assoc, PeSession::default());
            self.event(PeSessionEvent::SessionOpened { session: assoc });
            self.on_session_message(now, assoc, ppid, data);
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        self.pe.handle_datagram(now, from, ppid, data);
        self.pump();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.pe.handle_timeout(now);
        self.pump();
    }

    fn poll_output(&mut self) -> Option<Output<PeSessionEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.pe.poll_timeout()
    }
}
