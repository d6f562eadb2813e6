//! ASAP server procedures (RFC 5352 §3): registration, deregistration, handle resolution,
//! endpoint keep-alive monitoring, unreachability reports, association loss, and the
//! answers to malformed input.

use bytes::Bytes;
use core::net::IpAddr;

use rserpool_proto::asap::{
    AsapError, DeregistrationResponse, EndpointKeepAlive, HandleResolution,
    HandleResolutionResponse, RegistrationResponse, msg_type,
};
use rserpool_proto::enrp::UpdateAction;
use rserpool_proto::ids::{PeIdentifier, PoolHandle};
use rserpool_proto::param::{
    ErrorCause, OperationError, PoolElementParameter, cause, ty as param_ty,
};
use rserpool_proto::transport::{AddressList, TransportParameter, TransportProtocol};
use rserpool_proto::{AsapMessage, DecodeError, Encode};

use crate::handlespace::{
    DueTimer, InvalidValue, PoolElementInfo, Registered, RegistrationError, TimerKind,
    TransportRole,
};
use crate::{AssocId, Instant, Protocol};
use core::time::Duration;

use super::assoc::{Buckets, Origin};
use super::config::MAX_MESSAGE_SIZE;
use super::encode::{begin, element_param, finish, tlv_unpadded};
use super::events::{ProtocolErrorKind, RegistrarEvent, RemovalReason, type_slot};
use super::security::{TokenBucket, canonical, ip_in, scope_ok};
use super::statistics::ActionDirection::{Recv, Send};
use super::statistics::ActionRecord;
use super::{PeKey, Probe, ProbeKind, Registrar};

/// Finds `(type, value, rest)` of the TLV at the start of `b` (no validation beyond
/// bounds).
fn raw_tlv(b: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let ty = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let len = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
    if len < 4 {
        return None;
    }
    let val = b.get(4..len)?;
    let padded = (len + 3) & !3;
    let rest = b.get(padded.min(b.len())..)?;
    Some((ty, val, rest))
}

/// Pool handle and PE identifier of a message that failed to decode, if its first two
/// parameters are still readable (to answer with a response rather than an ASAP Error).
fn salvage(data: &[u8], id_param: u16) -> Option<(PoolHandle, Option<PeIdentifier>)> {
    let (ty, val, rest) = raw_tlv(data.get(4..)?)?;
    if ty & 0x3fff != param_ty::POOL_HANDLE {
        return None;
    }
    let ph = PoolHandle::new(Bytes::copy_from_slice(val));
    let id = raw_tlv(rest).and_then(|(t, v, _)| {
        (t & 0x3fff == id_param)
            .then(|| {
                v.get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            })
            .flatten()
    });
    Some((ph, id.map(PeIdentifier)))
}

fn invalid(tlv: Bytes) -> ErrorCause {
    ErrorCause::new(cause::INVALID_VALUES, tlv)
}

fn bare(code: u16) -> ErrorCause {
    ErrorCause::new(code, Bytes::new())
}

pub(super) fn hides(p: &Probe, now: Instant) -> bool {
    match p.kind {
        ProbeKind::Unreachable => true,
        ProbeKind::Hidden => p.at > now,
        _ => false,
    }
}

fn hiding_kind(k: ProbeKind) -> bool {
    matches!(k, ProbeKind::Unreachable | ProbeKind::Hidden)
}

impl Registrar {
    pub(super) fn handle_asap(&mut self, now: Instant, assoc: AssocId, data: &Bytes) {
        let (msg, unrecognized) = match AsapMessage::decode_with_unrecognized(data) {
            Ok(x) => x,
            Err(e) => {
                self.asap_malformed(assoc, data, &e);
                return;
            }
        };
        self.stats.asap_received[type_slot(msg.message_type())] += 1;
        match msg {
            AsapMessage::Registration(r) => {
                self.on_registration(now, assoc, &r.pool_handle, &r.pool_element)
            }
            AsapMessage::Deregistration(d) => {
                self.on_deregistration(now, assoc, &d.pool_handle, d.pe_id)
            }
            AsapMessage::HandleResolution(h) => self.on_handle_resolution(now, assoc, &h),
            AsapMessage::EndpointKeepAliveAck(a) => {
                self.on_keep_alive_ack(now, assoc, &a.pool_handle, a.pe_id)
            }
            AsapMessage::EndpointUnreachable(u) => {
                self.on_unreachable(now, assoc, &u.pool_handle, u.pe_id)
            }
            // Responses, keep-alives, announces, cookies, business cards, errors: not for a
            // registrar.
            _ => self.stats.ignored += 1,
        }
        if let Some(error) = OperationError::unrecognized_parameters(&unrecognized) {
            self.stats.error_replies += 1;
            let b = self.encode(&AsapMessage::Error(AsapError {
                reserved_flags: 0,
                error,
                skipped: Vec::new(),
            }));
            self.transmit(assoc, Protocol::Asap, b);
        }
    }

    /// Answers a message that failed to decode, as its action bits and RFC 5354 ask: a
    /// response carrying the cause where the request's pool handle (and PE identifier) can
    /// still be read, an ASAP Error otherwise, nothing for "stop silently" and for errors.
    fn asap_malformed(&mut self, assoc: AssocId, data: &Bytes, e: &DecodeError) {
        self.stats.decode_errors += 1;
        let ty = data.first().copied();
        let reply_cause = if ty == Some(msg_type::ERROR) {
            None
        } else {
            e.operation_error()
        };
        if let Some(c) = &reply_cause {
            self.stats.error_replies += 1;
            let code = c.code;
            let error = Some(OperationError::new(c.clone()));
            let value_problem = code == cause::INVALID_VALUES || code == cause::UNSPECIFIED_ERROR;
            let msg: AsapMessage = match ty {
                Some(msg_type::REGISTRATION) if value_problem => {
                    match salvage(data, param_ty::POOL_ELEMENT) {
                        Some((pool_handle, Some(pe_id))) => {
                            self.stats.registration_rejects += 1;
                            AsapMessage::RegistrationResponse(RegistrationResponse {
                                reject: true,
                                pool_handle,
                                pe_id,
                                error,
                                ..Default::default()
                            })
                        }
                        _ => Self::asap_error(c.clone()),
                    }
                }
                Some(msg_type::DEREGISTRATION) if value_problem => {
                    match salvage(data, param_ty::PE_IDENTIFIER) {
                        Some((pool_handle, Some(pe_id))) => {
                            AsapMessage::DeregistrationResponse(DeregistrationResponse {
                                pool_handle,
                                pe_id,
                                error,
                                ..Default::default()
                            })
                        }
                        _ => Self::asap_error(c.clone()),
                    }
                }
                Some(msg_type::HANDLE_RESOLUTION) if value_problem => {
                    match salvage(data, param_ty::HANDLE_RESOLUTION_OPTION) {
                        Some((pool_handle, _)) => {
                            AsapMessage::HandleResolutionResponse(HandleResolutionResponse {
                                pool_handle,
                                error,
                                ..Default::default()
                            })
                        }
                        None => Self::asap_error(c.clone()),
                    }
                }
                _ => Self::asap_error(c.clone()),
            };
            let b = self.encode(&msg);
            self.transmit(assoc, Protocol::Asap, b);
        }
        self.protocol_error(
            Some(assoc),
            None,
            Some(Protocol::Asap),
            ty,
            ProtocolErrorKind::Malformed {
                cause: reply_cause.map(|c| c.code),
                detail: e.to_string(),
            },
        );
    }

    fn asap_error(c: ErrorCause) -> AsapMessage {
        AsapMessage::Error(AsapError {
            reserved_flags: 0,
            error: OperationError::new(c),
            skipped: Vec::new(),
        })
    }

    // ----------------------------------------------------------------------------------
    // registration

    /// True if the two associations share a peer address.
    fn same_host(&self, a: AssocId, b: AssocId) -> bool {
        let ours = self.assoc_ips(a);
        self.assoc_ips(b).iter().any(|ip| ours.contains(ip))
    }

    /// True if `bound` is an association we opened to reach a PE (takeover or claim
    /// keep-alives; the PE never registered over it) and `assoc` comes from the same host:
    /// the PE, having accepted us as its home, registers over its own association.
    fn is_own_channel_to_same_host(&self, bound: AssocId, assoc: AssocId) -> bool {
        self.assocs
            .get(&bound)
            .is_some_and(|x| x.origin() == Origin::PoolElement)
            && self.same_host(bound, assoc)
    }

    fn on_registration(
        &mut self,
        now: Instant,
        assoc: AssocId,
        ph: &PoolHandle,
        pe: &PoolElementParameter,
    ) {
        let known = self.hs.get(ph, pe.pe_id);
        let before = known.and_then(|e| e.assoc());
        // A keep-alive to the PE is out and not answered yet.
        let unanswered =
            known.is_some_and(|e| matches!(e.keep_alive(), Some((TimerKind::KeepAliveTimeout, _))));
        let me = self.id;
        self.action(|| {
            let mut r = ActionRecord::new(now, Recv, "ASAP", "Registration", "Requested");
            r.pool_handle = Some(ph.clone());
            r.pe_id = pe.pe_id.0;
            r.sender = me;
            r
        });
        match self.register_element(assoc, ph, pe) {
            Err(c) => {
                self.stats.registration_rejects += 1;
                if c.code == cause::NON_UNIQUE_PE_IDENTIFIER && before.is_some_and(|b| b != assoc) {
                    // Someone else claims a PE bound to another association: make sure the
                    // bound PE is still there. Unanswered, the keep-alive timeout removes it
                    // and the claimant's next try succeeds; answered, nothing changes.
                    if !unanswered {
                        self.send_keep_alive(now, &(ph.clone(), pe.pe_id), false);
                    }
                }
                self.send_registration_response(assoc, ph, pe.pe_id, Some(c));
            }
            Ok((kind, handle, info)) => {
                self.stats.registrations += 1;
                if kind == Registered::Updated {
                    self.stats.reregistrations += 1;
                }
                let id = info.pe_id;
                let key = (handle.clone(), id);
                // The PE just proved it is alive and ours: any verification is over.
                self.end_probe(&key);
                self.contested.remove(&key);
                if before != Some(assoc) {
                    // It moved to another association: if we had opened the previous one
                    // to reach it, close that once nothing else uses it.
                    self.close_if_idle(before);
                }
                // A keep-alive still unanswered on the same association keeps its timeout:
                // a live PE answers it there (in order, after this registration), while a
                // registration that waited in the network (a partition) must not restart
                // the interval of a PE that may have died since it sent it. RSPLIB restarts
                // the transmission timer on every registration; RFC 5352 §3.4 ends a
                // keep-alive only with its ack or its timeout.
                if !(unanswered && before == Some(assoc)) {
                    let ka = self.keep_alive_due(now);
                    self.hs
                        .set_timer(&handle, id, TimerKind::KeepAliveTransmission, Some(ka));
                }
                let expiry = if self.cfg.expire_owned_elements {
                    self.cfg
                        .registration_life_unit
                        .duration(info.registration_life)
                        .map(|d| now + d)
                } else {
                    None
                };
                self.hs.set_timer(&handle, id, TimerKind::Expiry, expiry);
                // RSPLIB order: Handle Update to the peers, then the response.
                self.send_handle_update(UpdateAction::ADD_PE, &handle, &info);
                self.send_registration_response(assoc, ph, id, None);
                let e = match kind {
                    Registered::Added => RegistrarEvent::PeRegistered {
                        pool_handle: handle,
                        pe_id: id,
                        assoc,
                    },
                    Registered::Updated => RegistrarEvent::PeReregistered {
                        pool_handle: handle,
                        pe_id: id,
                        assoc,
                    },
                };
                self.event(e);
            }
        }
    }

    /// All checks of a registration, then the handlespace update. Returns the error cause
    /// to answer with, or what was registered (with the handle as stored).
    fn register_element(
        &mut self,
        assoc: AssocId,
        ph: &PoolHandle,
        pe: &PoolElementParameter,
    ) -> Result<(Registered, PoolHandle, PoolElementInfo), ErrorCause> {
        let limits = self.cfg.limits.handlespace;
        if ph.is_empty() || ph.len() > limits.max_pool_handle_len {
            return Err(invalid(tlv_unpadded(ph)));
        }
        if pe.pe_id.0 == 0 || pe.registration_life == 0 {
            return Err(invalid(tlv_unpadded(pe)));
        }
        let ut = &pe.user_transport;
        if ut.protocol == TransportProtocol::Opaque {
            // No addresses to check against the association: refuse.
            return Err(bare(cause::REJECTED_SECURITY));
        }
        if ut.port == 0 || ut.addresses.is_empty() || ut.addresses.len() > limits.addresses() {
            return Err(invalid(tlv_unpadded(ut)));
        }
        let min = self.cfg.min_address_scope;
        let Some(a) = self.assocs.get(&assoc) else {
            return Err(bare(cause::REJECTED_SECURITY));
        };
        let a_ips = self.assoc_ips(assoc);
        // User addresses must be addresses of this association (RFC 5352 §2.2.1), of at
        // least the configured scope.
        let mut user = ut.clone();
        user.addresses
            .retain(|ip| scope_ok(*ip, min) && ip_in(*ip, &a_ips));
        let mut seen = AddressList::new();
        user.addresses.retain(|ip| {
            let c = canonical(*ip);
            if seen.contains(&c) {
                false
            } else {
                seen.push(c);
                true
            }
        });
        if user.addresses.is_empty() {
            return Err(bare(cause::REJECTED_SECURITY));
        }
        // The ASAP transport is where this association reaches the PE.
        let asap_ips: AddressList = a_ips
            .iter()
            .copied()
            .filter(|ip| scope_ok(*ip, min))
            .take(limits.addresses())
            .collect();
        if asap_ips.is_empty() || a.port == 0 {
            return Err(bare(cause::REJECTED_SECURITY));
        }
        let assoc_elements = a.elements as usize;
        // Over SCTP a registrar reaches the PE where its association comes from (RSPLIB PEs
        // accept on their registrar socket). A TCP PE's client port accepts nothing: it is
        // reached at its user port with channel kind 2 (`tcp-mapping.md` §3.7).
        let asap = if user.protocol == TransportProtocol::Tcp {
            TransportParameter::tcp(user.port, 0, asap_ips)
        } else {
            TransportParameter::sctp(a.port, 0, asap_ips)
        };
        // Ownership: a PE belongs to the association it registered over while that
        // association is up. Another association may take it over only when the bound one
        // is an association we opened to reach the PE and the new one comes from the same
        // host (the PE registering over its own association after accepting our takeover
        // keep-alive). Anything else is refused with Non-unique PE Identifier, and the bound
        // PE is probed at once (see `on_registration`): a restarted PE process whose old
        // association is not yet known to be dead gets in on its next try once the probe
        // has gone unanswered, while a stranger never takes a live PE, not even from the
        // same host.
        let prev = self.hs.get(ph, pe.pe_id).map(|e| e.assoc());
        if let Some(Some(b)) = prev
            && b != assoc
            && self.assocs.contains_key(&b)
            && !self.is_own_channel_to_same_host(b, assoc)
        {
            self.stats.ownership_refusals += 1;
            self.protocol_error(
                Some(assoc),
                None,
                Some(Protocol::Asap),
                Some(msg_type::REGISTRATION),
                ProtocolErrorKind::NotOwner {
                    pool_handle: ph.clone(),
                    pe_id: pe.pe_id,
                },
            );
            return Err(bare(cause::NON_UNIQUE_PE_IDENTIFIER));
        }
        let prev_assoc = prev.flatten();
        let new_binding = prev_assoc != Some(assoc);
        if new_binding && assoc_elements >= self.cfg.limits.max_elements_per_assoc {
            self.stats.limit_refusals += 1;
            return Err(bare(cause::LACK_OF_RESOURCES));
        }
        // Store the pool's own copy of the handle, never a view of the received message.
        let handle = match self.hs.pool(ph) {
            Some(p) => p.handle().clone(),
            None => PoolHandle::new(Bytes::copy_from_slice(ph.as_bytes())),
        };
        let info = PoolElementInfo {
            pe_id: pe.pe_id,
            home_registrar: self.id,
            registration_life: pe.registration_life,
            policy: pe.policy,
            user_transport: user,
            asap_transport: Some(asap),
        };
        match self.hs.register(&handle, &info, Some(assoc)) {
            Err(e) => {
                if matches!(e, RegistrationError::LackOfResources(_)) {
                    self.stats.limit_refusals += 1;
                }
                Err(self.registration_cause(&handle, pe, &info, e))
            }
            Ok(kind) => {
                if new_binding {
                    if let Some(b) = prev_assoc
                        && let Some(x) = self.assocs.get_mut(&b)
                    {
                        x.elements = x.elements.saturating_sub(1);
                    }
                    if let Some(x) = self.assocs.get_mut(&assoc) {
                        x.elements = x.elements.saturating_add(1);
                    }
                }
                Ok((kind, handle, info))
            }
        }
    }

    fn registration_cause(
        &self,
        handle: &PoolHandle,
        pe: &PoolElementParameter,
        info: &PoolElementInfo,
        e: RegistrationError,
    ) -> ErrorCause {
        let first = || self.hs.pool(handle).and_then(|p| p.elements().next());
        match e {
            RegistrationError::InvalidValue(v) => match v {
                InvalidValue::PoolHandleLength { .. } => invalid(tlv_unpadded(handle)),
                InvalidValue::PeIdentifier => invalid(tlv_unpadded(pe)),
                InvalidValue::NoAddress(role)
                | InvalidValue::PortZero(role)
                | InvalidValue::TooManyAddresses { role, .. } => match (role, &info.asap_transport)
                {
                    (TransportRole::Asap, Some(a)) => invalid(tlv_unpadded(a)),
                    _ => invalid(tlv_unpadded(&pe.user_transport)),
                },
            },
            RegistrationError::InconsistentPolicy { .. } => ErrorCause::new(
                cause::INCONSISTENT_POOLING_POLICY,
                first().map_or_else(Bytes::new, |e| tlv_unpadded(&e.policy())),
            ),
            RegistrationError::InconsistentTransport { .. } => ErrorCause::new(
                cause::INCONSISTENT_TRANSPORT_TYPE,
                first().map_or_else(Bytes::new, |e| tlv_unpadded(&e.user_transport())),
            ),
            RegistrationError::InconsistentDataControl { .. } => {
                bare(cause::INCONSISTENT_DATA_CONTROL_CONFIGURATION)
            }
            RegistrationError::LackOfResources(_) => bare(cause::LACK_OF_RESOURCES),
        }
    }

    fn send_registration_response(
        &mut self,
        assoc: AssocId,
        ph: &PoolHandle,
        pe_id: PeIdentifier,
        error: Option<ErrorCause>,
    ) {
        let (now, me) = (self.clock, self.id);
        let code = error.as_ref().map_or(0, |c| c.code);
        // RSPLIB logs its Registration Response as "Recv".
        self.action(|| {
            let mut r = ActionRecord::new(now, Recv, "ASAP", "RegistrationResponse", "Requested");
            r.pool_handle = Some(ph.clone());
            r.pe_id = pe_id.0;
            r.sender = me;
            r.error_code = code;
            r
        });
        let b = self.encode(&AsapMessage::RegistrationResponse(RegistrationResponse {
            reject: error.is_some(),
            reserved_flags: 0,
            pool_handle: ph.clone(),
            pe_id,
            error: error.map(OperationError::new),
            skipped: Vec::new(),
        }));
        self.transmit(assoc, Protocol::Asap, b);
    }

    // ----------------------------------------------------------------------------------
    // deregistration

    fn on_deregistration(
        &mut self,
        now: Instant,
        assoc: AssocId,
        ph: &PoolHandle,
        pe_id: PeIdentifier,
    ) {
        let me = self.id;
        // RSPLIB logs an incoming Deregistration as "Send".
        self.action(|| {
            let mut r = ActionRecord::new(now, Send, "ASAP", "Deregistration", "Requested");
            r.pool_handle = Some(ph.clone());
            r.pe_id = pe_id.0;
            r.sender = me;
            r
        });
        let max = self.cfg.limits.handlespace.max_pool_handle_len;
        let error = if ph.is_empty() || ph.len() > max {
            Some(invalid(tlv_unpadded(ph)))
        } else {
            match self.hs.get(ph, pe_id) {
                None => None, // unknown PE: success (RFC 5352 §3.2)
                Some(e) => {
                    let allowed = match e.assoc() {
                        Some(b) if b == assoc => true,
                        Some(b) => !self.assocs.contains_key(&b),
                        None => self.assoc_reaches(assoc, &e),
                    };
                    let handle = e.pool_handle().clone();
                    if allowed {
                        if self.remove_element(now, &handle, pe_id, RemovalReason::Deregistered) {
                            self.stats.deregistrations += 1;
                        }
                        None
                    } else {
                        self.stats.ownership_refusals += 1;
                        self.protocol_error(
                            Some(assoc),
                            None,
                            Some(Protocol::Asap),
                            Some(msg_type::DEREGISTRATION),
                            ProtocolErrorKind::NotOwner {
                                pool_handle: handle,
                                pe_id,
                            },
                        );
                        Some(bare(cause::REJECTED_SECURITY))
                    }
                }
            }
        };
        let code = error.as_ref().map_or(0, |c| c.code);
        self.action(|| {
            let mut r = ActionRecord::new(now, Send, "ASAP", "DeregistrationResponse", "Requested");
            r.pool_handle = Some(ph.clone());
            r.pe_id = pe_id.0;
            r.sender = me;
            r.error_code = code;
            r
        });
        let b = self.encode(&AsapMessage::DeregistrationResponse(
            DeregistrationResponse {
                reserved_flags: 0,
                pool_handle: ph.clone(),
                pe_id,
                error: error.map(OperationError::new),
                skipped: Vec::new(),
            },
        ));
        self.transmit(assoc, Protocol::Asap, b);
    }

    /// True if the association comes from the PE's host: one of its addresses is an
    /// address of the PE's ASAP or user transport (for PEs not bound to an association).
    fn assoc_reaches(&self, assoc: AssocId, e: &crate::handlespace::ElementRef<'_>) -> bool {
        let asap = e.asap_transport();
        let user = e.user_addresses();
        self.assoc_ips(assoc)
            .iter()
            .any(|&ip| ip_in(ip, &user) || asap.as_ref().is_some_and(|t| ip_in(ip, &t.addresses)))
    }

    /// Removes a PE: handlespace, association count, verification state; DEL_PE to the
    /// peers if we were its home; event.
    pub(super) fn remove_element(
        &mut self,
        _now: Instant,
        handle: &PoolHandle,
        pe_id: PeIdentifier,
        reason: RemovalReason,
    ) -> bool {
        let Some(r) = self.hs.deregister(handle, pe_id) else {
            return false;
        };
        if let Some(a) = r.assoc
            && let Some(x) = self.assocs.get_mut(&a)
        {
            x.elements = x.elements.saturating_sub(1);
        }
        self.after_removal(r, reason);
        true
    }

    pub(super) fn after_removal(
        &mut self,
        r: crate::handlespace::RemovedElement,
        reason: RemovalReason,
    ) {
        let key = (r.pool_handle.clone(), r.info.pe_id);
        self.end_probe(&key);
        self.contested.remove(&key);
        self.verified.remove(&key);
        self.sync_forget(&key);
        let home = r.info.home_registrar;
        let logged = match reason {
            RemovalReason::KeepAliveTimeout => Some((
                "KeepAliveTimeoutTimer",
                self.cfg.timers.keep_alive_timeout_interval,
            )),
            RemovalReason::Expired => {
                Some(("ExpiryTimer", self.cfg.timers.takeover_expiry_interval))
            }
            RemovalReason::AssociationLost => Some(("Disconnect", Duration::ZERO)),
            _ => None,
        };
        if let Some((why, time)) = logged {
            let (now, me) = (self.clock, self.id);
            self.action(|| {
                let mut a = ActionRecord::new(now, Send, "ASAP", "Deregistration", why);
                a.time = time;
                a.pool_handle = Some(r.pool_handle.clone());
                a.pe_id = r.info.pe_id.0;
                a.sender = me;
                a
            });
        }
        if home == self.id {
            self.send_handle_update(UpdateAction::DEL_PE, &r.pool_handle, &r.info);
        }
        self.event(RegistrarEvent::PeRemoved {
            pool_handle: r.pool_handle,
            pe_id: r.info.pe_id,
            home,
            reason,
        });
    }

    pub(super) fn remove_assoc_elements(&mut self, _now: Instant, assoc: AssocId) {
        let mut removed = core::mem::take(&mut self.scratch_removed);
        removed.clear();
        self.hs.remove_by_assoc(assoc, &mut removed);
        for r in removed.drain(..) {
            self.after_removal(r, RemovalReason::AssociationLost);
        }
        self.scratch_removed = removed;
    }

    // ----------------------------------------------------------------------------------
    // handle resolution

    fn take_token(&mut self, assoc: AssocId, now: Instant, rate: u32, hr: bool) -> bool {
        let b = self
            .buckets
            .entry(assoc)
            .or_insert(Buckets { hr: None, eu: None });
        let slot = if hr { &mut b.hr } else { &mut b.eu };
        slot.get_or_insert_with(|| TokenBucket::new(rate, now))
            .take(rate, now)
    }

    fn hr_error(&mut self, assoc: AssocId, ph: &PoolHandle, c: ErrorCause) {
        self.hr_response_action(ph, 0, 0, c.code);
        let b = self.encode(&AsapMessage::HandleResolutionResponse(
            HandleResolutionResponse {
                pool_handle: ph.clone(),
                error: Some(OperationError::new(c)),
                ..Default::default()
            },
        ));
        self.transmit(assoc, Protocol::Asap, b);
    }

    fn hr_response_action(&mut self, ph: &PoolHandle, n: u64, first: u32, code: u16) {
        let now = self.clock;
        self.action(|| {
            let mut r =
                ActionRecord::new(now, Send, "ASAP", "HandleResolutionResponse", "Requested");
            r.counter = n;
            r.pool_handle = Some(ph.clone());
            r.pe_id = first;
            r.error_code = code;
            r
        });
    }

    fn on_handle_resolution(&mut self, now: Instant, assoc: AssocId, h: &HandleResolution) {
        self.stats.handle_resolutions += 1;
        let ph = &h.pool_handle;
        let asked = match h.option.map(|o| o.items) {
            None | Some(0) => self.cfg.max_handle_resolution_items,
            Some(n) => n,
        };
        self.action(|| {
            let mut r = ActionRecord::new(now, Recv, "ASAP", "HandleResolution", "Requested");
            r.counter = u64::from(asked);
            r.pool_handle = Some(ph.clone());
            r
        });
        if let Some(rate) = self.cfg.max_hr_rate
            && !self.take_token(assoc, now, rate, true)
        {
            self.stats.rate_limited += 1;
            self.hr_error(assoc, ph, bare(cause::LACK_OF_RESOURCES));
            return;
        }
        let max = self.cfg.limits.handlespace.max_pool_handle_len;
        if ph.is_empty() || ph.len() > max {
            self.hr_error(assoc, ph, invalid(tlv_unpadded(ph)));
            return;
        }
        let cap = super::config::MAX_HANDLE_RESOLUTION_ITEMS_CAP;
        let items = match h.option.map(|o| o.items) {
            None | Some(0) => self.cfg.max_handle_resolution_items,
            Some(n) => n,
        }
        .clamp(1, cap) as usize;
        let hiding = self.hiding;
        let want = items + hiding.min(cap as usize);
        self.buf.clear();
        self.reserve(512 + items * 96);
        let Registrar {
            hs,
            rng,
            buf,
            probes,
            cfg,
            ..
        } = self;
        let mut first = 0u32;
        let mut given = 0u64;
        let answer = match hs.select_elements(ph, want, cfg.max_increment, &mut **rng) {
            Err(_) => None,
            Ok(sel) => {
                begin(buf, msg_type::HANDLE_RESOLUTION_RESPONSE, 0);
                ph.encode(buf);
                sel.policy().encode(buf);
                let mut n = 0;
                for e in sel.elements() {
                    if n == items {
                        break;
                    }
                    if hiding > 0
                        && probes
                            .get(&(e.pool_handle().clone(), e.pe_id()))
                            .is_some_and(|p| hides(p, now))
                    {
                        continue;
                    }
                    let p = element_param(&e, false);
                    if buf.len() + p.encoded_len() > MAX_MESSAGE_SIZE {
                        break;
                    }
                    p.encode(buf);
                    if n == 0 {
                        first = e.pe_id().0;
                    }
                    n += 1;
                }
                given = n as u64;
                Some(finish(buf))
            }
        };
        match answer {
            Some(b) => {
                self.hr_response_action(ph, given, first, 0);
                self.transmit(assoc, Protocol::Asap, b)
            }
            None => self.hr_error(assoc, ph, bare(cause::UNKNOWN_POOL_HANDLE)),
        }
    }

    // ----------------------------------------------------------------------------------
    // keep-alives

    /// The association to reach a PE: the one it registered over, or the one opened for
    /// its probe, or a new one to its ASAP transport.
    fn element_assoc(&mut self, key: &PeKey) -> Option<AssocId> {
        let (bound, asap) = {
            let e = self.hs.get(&key.0, key.1)?;
            (e.assoc(), e.asap_transport())
        };
        if let Some(a) = bound {
            return Some(a);
        }
        if let Some(a) = self.probes.get(key).and_then(|p| p.assoc)
            && self.assocs.contains_key(&a)
        {
            return Some(a);
        }
        let t = asap?;
        let min = self.cfg.min_address_scope;
        let addrs: smallvec::SmallVec<[core::net::SocketAddr; 4]> = t
            .addresses
            .iter()
            .filter(|ip| scope_ok(**ip, min))
            .map(|ip| core::net::SocketAddr::new(*ip, t.port))
            .collect();
        if addrs.is_empty() || t.port == 0 {
            return None;
        }
        let a = self.connect(addrs, t.protocol, Origin::PoolElement, 0);
        if let Some(p) = self.probes.get_mut(key) {
            p.assoc = Some(a);
        }
        Some(a)
    }

    /// Sends an Endpoint Keep-Alive (with PE identifier, RSPLIB style) to a PE and arms
    /// its keep-alive timeout. False if the PE cannot be reached at all.
    pub(super) fn send_keep_alive(&mut self, now: Instant, key: &PeKey, home: bool) -> bool {
        let Some(assoc) = self.element_assoc(key) else {
            return false;
        };
        let b = self.encode(&AsapMessage::EndpointKeepAlive(EndpointKeepAlive {
            home,
            reserved_flags: 0,
            server_id: self.id,
            pool_handle: key.0.clone(),
            pe_id: Some(key.1),
            skipped: Vec::new(),
        }));
        self.transmit(assoc, Protocol::Asap, b);
        let t = now + self.cfg.timers.keep_alive_timeout_interval;
        self.hs
            .set_timer(&key.0, key.1, TimerKind::KeepAliveTimeout, Some(t));
        true
    }

    fn on_keep_alive_ack(
        &mut self,
        now: Instant,
        assoc: AssocId,
        ph: &PoolHandle,
        pe_id: PeIdentifier,
    ) {
        let Some(e) = self.hs.get(ph, pe_id) else {
            self.stats.ignored += 1;
            self.action(|| {
                let mut r = ActionRecord::new(
                    now,
                    Recv,
                    "ASAP",
                    "EndpointKeepAliveAck",
                    "TooLateAlreadyRemoved",
                );
                r.pool_handle = Some(ph.clone());
                r.pe_id = pe_id.0;
                r
            });
            return;
        };
        let handle = e.pool_handle().clone();
        let home = e.home_registrar();
        let round_trip = match e.keep_alive() {
            Some((TimerKind::KeepAliveTimeout, deadline)) => {
                let sent = deadline - self.cfg.timers.keep_alive_timeout_interval;
                now.saturating_duration_since(sent)
            }
            _ => Duration::ZERO,
        };
        let bound = e.assoc();
        let key = (handle.clone(), pe_id);
        let (probe_assoc, claim) = self
            .probes
            .get(&key)
            .map_or((None, false), |p| (p.assoc, p.kind == ProbeKind::Claim));
        let ok = bound == Some(assoc)
            || (bound.is_none()
                && (probe_assoc == Some(assoc)
                    || (home == self.id && self.assoc_reaches(assoc, &e))));
        if !ok || (home != self.id && !claim) {
            self.stats.ownership_refusals += 1;
            self.protocol_error(
                Some(assoc),
                None,
                Some(Protocol::Asap),
                Some(msg_type::ENDPOINT_KEEP_ALIVE_ACK),
                ProtocolErrorKind::NotOwner {
                    pool_handle: handle,
                    pe_id,
                },
            );
            return;
        }
        if bound.is_none() || claim {
            // Takeover or claim answered: the PE accepted us as its home over `assoc`.
            let mut info = e.info();
            info.home_registrar = self.id;
            if self.hs.register(&handle, &info, Some(assoc)).is_ok() {
                if let Some(x) = self.assocs.get_mut(&assoc) {
                    x.elements = x.elements.saturating_add(1);
                }
                self.hs.set_timer(&handle, pe_id, TimerKind::Expiry, None);
                if claim {
                    self.send_handle_update(UpdateAction::ADD_PE, &handle, &info);
                }
            }
        }
        self.action(|| {
            let mut r = ActionRecord::new(now, Recv, "ASAP", "EndpointKeepAliveAck", "InTime");
            r.time = round_trip;
            r.pool_handle = Some(handle.clone());
            r.pe_id = pe_id.0;
            r
        });
        let verification = self
            .probes
            .get(&key)
            .is_some_and(|p| p.kind == ProbeKind::Unreachable);
        self.end_probe(&key);
        if verification && home == self.id {
            self.note_verified(now, key.clone());
        }
        if self.contested.remove(&key).is_some()
            && let Some(e) = self.hs.get(&handle, pe_id)
        {
            // Re-assert ownership after a peer claimed it.
            let info = e.info();
            self.send_handle_update(UpdateAction::ADD_PE, &handle, &info);
        }
        let ka = self.keep_alive_due(now);
        self.hs
            .set_timer(&handle, pe_id, TimerKind::KeepAliveTransmission, Some(ka));
    }

    /// A per-PE timer fired.
    pub(super) fn element_timer(&mut self, now: Instant, d: DueTimer) {
        let Some(e) = self.hs.get(&d.pool_handle, d.pe_id) else {
            return;
        };
        let handle = e.pool_handle().clone();
        let home = e.home_registrar();
        let assoc = e.assoc();
        let key = (handle.clone(), d.pe_id);
        let mine = home == self.id;
        match d.kind {
            TimerKind::Expiry => {
                if !mine {
                    self.remove_element(now, &handle, d.pe_id, RemovalReason::Expired);
                } else if self.cfg.expire_owned_elements {
                    if let Some(a) = assoc {
                        let b = self.encode(&AsapMessage::DeregistrationResponse(
                            DeregistrationResponse {
                                pool_handle: handle.clone(),
                                pe_id: d.pe_id,
                                ..Default::default()
                            },
                        ));
                        self.transmit(a, Protocol::Asap, b);
                    }
                    self.remove_element(now, &handle, d.pe_id, RemovalReason::Expired);
                }
            }
            TimerKind::KeepAliveTransmission => {
                if mine {
                    let (me, t) = (self.id, self.cfg.timers.keep_alive_timeout_interval);
                    self.action(|| {
                        let mut r = ActionRecord::new(
                            now,
                            Send,
                            "ASAP",
                            "EndpointKeepAlive",
                            "KeepAliveTransmissionTimer",
                        );
                        r.time = t;
                        r.pool_handle = Some(handle.clone());
                        r.pe_id = d.pe_id.0;
                        r.sender = me;
                        r
                    });
                }
                if mine && !self.send_keep_alive(now, &key, false) {
                    self.remove_element(now, &handle, d.pe_id, RemovalReason::TakeoverFailed);
                }
            }
            TimerKind::KeepAliveTimeout => {
                if !mine {
                    // A claim that was not answered: nothing of ours to remove.
                    self.end_probe(&key);
                    return;
                }
                let reason = match self.probes.get(&key) {
                    Some(p) if p.reporters.len() >= self.cfg.max_bad_pe_reports.max(1) as usize => {
                        RemovalReason::Unreachable
                    }
                    _ => RemovalReason::KeepAliveTimeout,
                };
                self.stats.keep_alive_timeouts += 1;
                self.remove_element(now, &handle, d.pe_id, reason);
                self.close_if_idle(assoc);
            }
        }
    }

    /// Closes an association we opened to PEs once no PE uses it any more.
    fn close_if_idle(&mut self, assoc: Option<AssocId>) {
        let Some(a) = assoc else { return };
        let idle = self
            .assocs
            .get(&a)
            .is_some_and(|x| x.origin() == Origin::PoolElement && x.elements == 0);
        if idle && !self.probes.values().any(|p| p.assoc == Some(a)) {
            self.assocs.remove(&a);
            self.close(a, false);
        }
    }

    /// An association we opened to reach PEs failed: those still waiting on it cannot be
    /// reached (RFC 5352 §3.5: a failed send means the PE is gone).
    pub(super) fn probe_assoc_failed(&mut self, now: Instant, assoc: AssocId) {
        let mut keys: Vec<PeKey> = self
            .probes
            .iter()
            .filter(|(_, p)| p.assoc == Some(assoc))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        for k in keys {
            let Some(e) = self.hs.get(&k.0, k.1) else {
                self.end_probe(&k);
                continue;
            };
            if e.assoc().is_some() {
                if let Some(p) = self.probes.get_mut(&k) {
                    p.assoc = None;
                }
                continue;
            }
            if e.home_registrar() == self.id {
                self.remove_element(now, &k.0, k.1, RemovalReason::TakeoverFailed);
            } else {
                self.end_probe(&k);
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // unreachability

    pub(super) fn insert_probe(&mut self, key: PeKey, p: Probe) {
        if hiding_kind(p.kind) {
            self.hiding += 1;
        }
        if let Some(old) = self.probes.insert(key, p) {
            self.release_probe(old);
        }
    }

    fn release_probe(&mut self, p: Probe) {
        if hiding_kind(p.kind) {
            self.hiding = self.hiding.saturating_sub(1);
        }
        for a in p.reporter_assocs {
            if let Some(x) = self.pending.get_mut(&a) {
                *x = x.saturating_sub(1);
                if *x == 0 {
                    self.pending.remove(&a);
                }
            }
        }
    }

    pub(super) fn end_probe(&mut self, key: &PeKey) {
        if self.probes.is_empty() {
            return;
        }
        if let Some(p) = self.probes.remove(key) {
            self.release_probe(p);
        }
    }

    fn set_probe_kind(&mut self, key: &PeKey, kind: ProbeKind) {
        if let Some(p) = self.probes.get_mut(key) {
            match (hiding_kind(p.kind), hiding_kind(kind)) {
                (false, true) => self.hiding += 1,
                (true, false) => self.hiding = self.hiding.saturating_sub(1),
                _ => {}
            }
            p.kind = kind;
        }
    }

    /// Remembers that an own PE answered a verification keep-alive (bounded by the number
    /// of own PEs: stale entries go first).
    fn note_verified(&mut self, now: Instant, key: PeKey) {
        let interval = self.cfg.timers.keep_alive_transmission_interval;
        if self.verified.len() >= self.hs.owner_element_count(self.id) + 16 {
            self.verified
                .retain(|_, t| now.saturating_duration_since(*t) < interval);
        }
        self.verified.insert(key, now);
    }

    fn reporter_identity(&self, assoc: AssocId) -> IpAddr {
        self.assoc_ips(assoc)
            .iter()
            .min()
            .copied()
            .unwrap_or_else(|| IpAddr::V6(core::net::Ipv6Addr::from(u128::from(assoc.0))))
    }

    fn on_unreachable(
        &mut self,
        now: Instant,
        assoc: AssocId,
        ph: &PoolHandle,
        pe_id: PeIdentifier,
    ) {
        if let Some(rate) = self.cfg.max_eu_rate
            && !self.take_token(assoc, now, rate, false)
        {
            self.stats.rate_limited += 1;
            self.protocol_error(
                Some(assoc),
                None,
                Some(Protocol::Asap),
                Some(msg_type::ENDPOINT_UNREACHABLE),
                ProtocolErrorKind::RateLimited,
            );
            return;
        }
        let reports = self.stats.failure_reports;
        self.stats.failure_reports += 1;
        self.action(|| {
            let mut r = ActionRecord::new(now, Recv, "ASAP", "EndpointUnreachable", "");
            r.counter = reports;
            r.pool_handle = Some(ph.clone());
            r.pe_id = pe_id.0;
            r
        });
        let Some(e) = self.hs.get(ph, pe_id) else {
            return;
        };
        let key = (e.pool_handle().clone(), pe_id);
        let mine = e.home_registrar() == self.id;
        let reporter = self.reporter_identity(assoc);
        let max_pending = self.cfg.limits.max_pending_requests_per_assoc;
        let pending = self.pending.get(&assoc).map_or(0, |&n| usize::from(n));
        let threshold = self.cfg.max_bad_pe_reports.max(1) as usize;
        let window = {
            let t = self.cfg.timers;
            t.keep_alive_transmission_interval + t.keep_alive_timeout_interval
        };
        let recently_verified = if mine {
            let interval = self.cfg.timers.keep_alive_transmission_interval;
            self.verified
                .get(&key)
                .map(|&t| t + interval)
                .filter(|&until| until > now)
        } else {
            None
        };
        if !self.probes.contains_key(&key) {
            if pending >= max_pending {
                self.stats.limit_refusals += 1;
                self.protocol_error(
                    Some(assoc),
                    None,
                    Some(Protocol::Asap),
                    Some(msg_type::ENDPOINT_UNREACHABLE),
                    ProtocolErrorKind::LimitReached,
                );
                return;
            }
            if let Some(until) = recently_verified {
                // It answered a verification keep-alive moments ago: a report is not
                // enough to hide it again (one stranger would keep it hidden for good by
                // reporting after every answer). Collect distinct reporters until the
                // window ends; enough of them start a new verification.
                self.insert_probe(key.clone(), Probe::new(ProbeKind::Reported, until));
                self.hide_next = Some(self.hide_next.map_or(until, |h| h.min(until)));
            } else if mine {
                self.insert_probe(key.clone(), Probe::new(ProbeKind::Unreachable, now));
                if !self.send_keep_alive(now, &key, false) {
                    self.remove_element(now, &key.0, pe_id, RemovalReason::TakeoverFailed);
                    return;
                }
            } else {
                // A replica: we cannot verify it ourselves; collect reports for a while
                // and hide it once enough distinct reporters agree (until its home
                // refreshes it).
                let until = now + window;
                self.insert_probe(key.clone(), Probe::new(ProbeKind::Reported, until));
                self.hide_next = Some(self.hide_next.map_or(until, |h| h.min(until)));
            }
        } else if mine
            && recently_verified.is_none()
            && self
                .probes
                .get(&key)
                .is_some_and(|p| p.kind == ProbeKind::Contested)
        {
            // A keep-alive is already out; now also hide the PE until it answers.
            self.set_probe_kind(&key, ProbeKind::Unreachable);
        }
        let Some(p) = self.probes.get_mut(&key) else {
            return;
        };
        if matches!(p.kind, ProbeKind::Claim | ProbeKind::Takeover) {
            return;
        }
        if !p.reporters.contains(&reporter) {
            if !p.reporter_assocs.contains(&assoc) {
                if pending >= max_pending {
                    self.stats.limit_refusals += 1;
                    return;
                }
                p.reporter_assocs.push(assoc);
                if self.assocs.contains_key(&assoc) {
                    let n = self.pending.entry(assoc).or_insert(0);
                    *n = n.saturating_add(1);
                }
            }
            p.reporters.push(reporter);
        }
        if p.reporters.len() < threshold {
            return;
        }
        if mine && p.kind == ProbeKind::Reported {
            // Enough distinct reporters although it answered recently: verify it again,
            // hidden meanwhile.
            p.at = now;
            self.set_probe_kind(&key, ProbeKind::Unreachable);
            if !self.send_keep_alive(now, &key, false) {
                self.remove_element(now, &key.0, pe_id, RemovalReason::TakeoverFailed);
                return;
            }
        }
        let Some(p) = self.probes.get_mut(&key) else {
            return;
        };
        if mine {
            // Enough distinct reporters: remove the PE unless it answers its verification
            // keep-alive within the grace period.
            let at = (p.at + self.cfg.timers.unreachable_grace).max(now);
            let cur = self
                .hs
                .get(&key.0, pe_id)
                .and_then(|e| e.keep_alive())
                .filter(|(k, _)| *k == TimerKind::KeepAliveTimeout)
                .map(|(_, t)| t);
            if cur.is_none_or(|t| at < t) {
                self.hs
                    .set_timer(&key.0, pe_id, TimerKind::KeepAliveTimeout, Some(at));
            }
        } else if p.kind == ProbeKind::Reported {
            let until = now + window;
            p.at = until;
            self.set_probe_kind(&key, ProbeKind::Hidden);
            self.hide_next = Some(self.hide_next.map_or(until, |h| h.min(until)));
        }
    }

    /// Ends hiding and report collection (replicas, and own PEs that answered a
    /// verification recently) whose time passed.
    pub(super) fn unhide_expired(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        let mut done: Vec<PeKey> = Vec::new();
        for (k, p) in &self.probes {
            if matches!(p.kind, ProbeKind::Hidden | ProbeKind::Reported) {
                if p.at > now {
                    next = Some(next.map_or(p.at, |n| n.min(p.at)));
                } else {
                    done.push(k.clone());
                }
            }
        }
        done.sort();
        for k in done {
            self.end_probe(&k);
        }
        self.hide_next = next;
    }
}
