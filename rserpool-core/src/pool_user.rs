//! The pool user (PU) side of ASAP as a sans-IO [`Machine`]: handle resolution with a
//! local cache, unreachability reports and registrar failover (RFC 5352 §3.3, §3.5,
//! §3.6-3.7; `shared/spec/asap.md` §5.4, §5.6-5.8, `shared/spec/session-layer.md` §5.4, §6).
//!
//! # Handle resolution ([`PoolUser::resolve`])
//! 1. Cache entries whose stale cache value has run out are purged.
//! 2. If the cache holds selectable PEs of the pool, up to `items` of them are chosen by
//!    the pool's policy and returned at once ([`PoolUserEvent::Resolved`]) — no traffic.
//! 3. Otherwise an ASAP_HANDLE_RESOLUTION goes to the home registrar (after a server hunt if
//!    there is none), with a Handle Resolution Option asking for `items` PEs only when the
//!    cache is off (stale cache value 0) or all PEs are wanted — RSPLIB's rule.
//! 4. The answer's PEs are merged into the cache with expiry now + stale cache value, and
//!    the PEs returned are chosen from the cache by the pool policy, exactly as RSPLIB does
//!    (the cache is a [`Handlespace`], the registrar's own data structure, selecting with
//!    "update every selected PE").
//!
//! Several resolutions may be outstanding at once. They are pipelined over the one
//! registrar association; as ASAP has no request identifier, answers are matched to
//! requests by pool handle, in FIFO order per handle.
//!
//! # Unreachable PEs ([`PoolUser::report_unreachable`])
//! The PE is removed from the cache, one ASAP_ENDPOINT_UNREACHABLE goes to the registrar, and
//! the PE becomes *suspect*: answers naming it do not bring it back into the cache, so no
//! selection returns it, until an answer that lists the whole pool (fewer PEs than asked
//! for) no longer names it, or [`PoolUserConfig::suspect_timeout`] has passed. (RSPLIB
//! picks a PE it has just found dead again while the registrar still lists it:
//! `shared/design/rsplib-measured.md` defects 4 and 5.) Reporting a suspect PE again sends
//! nothing (one report per failure).
//!
//! # Failures
//! No answer within [`PoolUserConfig::request_timeout`], or an ASAP_ERROR instead of one:
//! the registrar association is aborted, a new registrar is hunted and the request is sent
//! again, at most [`PoolUserConfig::request_max_trials`] more times; then it fails with
//! [`ResolutionFailure::Timeout`] / [`ResolutionFailure::Error`]. A lost registrar
//! association makes the PU hunt and resend every outstanding request. If the hunt finds
//! no registrar, the outstanding requests fail with [`ResolutionFailure::NoRegistrar`].

use bytes::Bytes;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{EndpointUnreachable, HandleResolution, HandleResolutionResponse};
use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
use rserpool_proto::param::{HandleResolutionOption, OperationError, cause};
use rserpool_proto::policy::Policy;
use rserpool_proto::transport::TransportParameter;

use crate::assoc::Protocol;
use crate::handlespace::limits::RegistrationError;
use crate::handlespace::{Handlespace, HandlespaceConfig, PoolElementInfo, TimerKind};
use crate::io::{AssocDownReason, AssocIdAllocator, Machine, Output, Transmit};
use crate::registrar_table::{
    HuntOutcome, RegistrarTable, RegistrarTableConfig, decode_inbound, encode,
};
use crate::{AssocId, Instant};

/// Largest number of PEs a resolution asks for, unless all are wanted (RSPLIB
/// `MAX_MAX_HANDLE_RESOLUTION_ITEMS`).
pub const MAX_ITEMS: u32 = 128;

/// Configuration of a [`PoolUser`]. Defaults are RSPLIB's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUserConfig {
    /// Registrar list and hunt.
    pub registrar_table: RegistrarTableConfig,
    /// T1-ENRPrequest: how long to wait for an answer (RSPLIB 3 s).
    pub request_timeout: Duration,
    /// How often a request is sent again after a timeout or an ASAP_ERROR before it fails
    /// (RSPLIB RegistrarRequestMaxTrials, 1).
    pub request_max_trials: u32,
    /// How long answers stay in the cache (RFC 5352 `stale_cache_value`; RSPLIB tools use 0:
    /// every resolution asks the registrar).
    pub stale_cache_value: Duration,
    /// How long a reported PE stays suspect at most (default 10 s: an RSPLIB registrar
    /// drops a dead PE after at most two keep-alive intervals).
    pub suspect_timeout: Duration,
    /// Configuration of the cache handlespace (limits, hash seed).
    pub cache: HandlespaceConfig,
}

impl Default for PoolUserConfig {
    fn default() -> Self {
        PoolUserConfig {
            registrar_table: RegistrarTableConfig::default(),
            request_timeout: Duration::from_secs(3),
            request_max_trials: 1,
            stale_cache_value: Duration::ZERO,
            suspect_timeout: Duration::from_secs(10),
            cache: HandlespaceConfig {
                // The PU selects with "update every selected entry" (RSPLIB).
                max_increment: u32::MAX,
                ..HandlespaceConfig::default()
            },
        }
    }
}

/// Names one [`PoolUser::resolve`] call in its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A PE returned by a resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedElement {
    /// Its identifier.
    pub pe_id: PeIdentifier,
    /// Where to reach it.
    pub user_transport: TransportParameter,
    /// Its policy and policy values.
    pub policy: Policy,
    /// Its home registrar as the registrar reported it.
    pub home_registrar: ServerId,
}

/// Why a resolution failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolutionFailure {
    /// The registrar does not know the pool, or it is empty (RSPLIB `REAI_NONAME`).
    NotFound,
    /// Every PE the registrar named is suspect (recently reported unreachable).
    OnlySuspects,
    /// The server hunt found no registrar.
    NoRegistrar,
    /// No answer within the request timeout, also after the allowed retransmissions.
    Timeout,
    /// The registrar answered with an error cause other than "Unknown Pool Handle", or
    /// with an ASAP_ERROR (also after the allowed retransmissions).
    Error(OperationError),
}

/// Events of a [`PoolUser`] for its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolUserEvent {
    /// A resolution succeeded.
    Resolved {
        /// Which call.
        request: RequestId,
        /// The pool.
        handle: PoolHandle,
        /// The chosen PEs in policy order (at least one).
        elements: Vec<ResolvedElement>,
    },
    /// A resolution failed.
    ResolutionFailed {
        /// Which call.
        request: RequestId,
        /// The pool.
        handle: PoolHandle,
        /// Why.
        cause: ResolutionFailure,
    },
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    assoc: AssocId,
    deadline: Instant,
}

#[derive(Clone, Debug)]
struct Request {
    id: RequestId,
    handle: PoolHandle,
    items: u32,
    retransmits: u32,
    sent: Option<Sent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Home {
    assoc: AssocId,
    server_id: Option<ServerId>,
}

/// The pool user machine. See the [module documentation](self).
pub struct PoolUser<R> {
    config: PoolUserConfig,
    rng: R,
    table: RegistrarTable,
    home: Option<Home>,
    cache: Handlespace,
    suspects: BTreeMap<(PoolHandle, PeIdentifier), Instant>,
    requests: VecDeque<Request>,
    reports: VecDeque<EndpointUnreachable>,
    next_request: u64,
    scratch: Vec<crate::handlespace::DueTimer>,
    out: VecDeque<Output<PoolUserEvent>>,
}

impl<R> core::fmt::Debug for PoolUser<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PoolUser")
            .field("home", &self.home)
            .field("requests", &self.requests)
            .field("suspects", &self.suspects)
            .field("cached_elements", &self.cache.element_count())
            .finish_non_exhaustive()
    }
}

/// Clamps a requested item count as RSPLIB does: 1..=128, or "all".
fn clamp_items(items: u32) -> u32 {
    if items == HandleResolutionOption::ALL {
        items
    } else {
        items.clamp(1, MAX_ITEMS)
    }
}

impl<R: rand_core::Rng> PoolUser<R> {
    /// A pool user with an empty cache and no registrar yet.
    pub fn new(config: PoolUserConfig, rng: R) -> PoolUser<R> {
        let table = RegistrarTable::new(config.registrar_table.clone());
        let cache = Handlespace::new(config.cache);
        PoolUser {
            config,
            rng,
            table,
            home: None,
            cache,
            suspects: BTreeMap::new(),
            requests: VecDeque::new(),
            reports: VecDeque::new(),
            next_request: 0,
            scratch: Vec::new(),
            out: VecDeque::new(),
        }
    }

    // ------------------------------------------------------------------------------------
    // getters

    /// The configuration.
    pub fn config(&self) -> &PoolUserConfig {
        &self.config
    }

    /// The cache.
    pub fn cache(&self) -> &Handlespace {
        &self.cache
    }

    /// The registrar table (list and hunt state).
    pub fn registrar_table(&self) -> &RegistrarTable {
        &self.table
    }

    /// The home registrar association and the registrar's identifier if known.
    pub fn home_registrar(&self) -> Option<(AssocId, Option<ServerId>)> {
        self.home.map(|h| (h.assoc, h.server_id))
    }

    /// Number of resolutions waiting for a registrar's answer.
    pub fn outstanding(&self) -> usize {
        self.requests.len()
    }

    /// True if the PE is suspect at `now` (reported and not cleared since).
    pub fn is_suspect(&self, now: Instant, handle: &PoolHandle, pe_id: PeIdentifier) -> bool {
        self.suspects
            .get(&(handle.clone(), pe_id))
            .is_some_and(|&until| until > now)
    }

    /// Changes the stale cache value for later answers (RSPLIB passes it per call).
    pub fn set_stale_cache_value(&mut self, stale_cache_value: Duration) {
        self.config.stale_cache_value = stale_cache_value;
    }

    // ------------------------------------------------------------------------------------
    // commands

    /// Resolves `handle` to up to `items` PEs (clamped to 1..=128;
    /// [`HandleResolutionOption::ALL`] for all). The answer comes as a
    /// [`PoolUserEvent::Resolved`] or [`PoolUserEvent::ResolutionFailed`] naming the returned
    /// id — at once if the cache can answer.
    pub fn resolve(&mut self, now: Instant, handle: PoolHandle, items: u32) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let items = clamp_items(items);
        self.purge(now);
        let elements = self.select(&handle, items);
        if !elements.is_empty() {
            self.out.push_back(Output::Event(PoolUserEvent::Resolved {
                request: id,
                handle,
                elements,
            }));
            return id;
        }
        self.requests.push_back(Request {
            id,
            handle,
            items,
            retransmits: 0,
            sent: None,
        });
        self.pump(now);
        id
    }

    /// Reports a PE the application could not reach: removes it from the cache, sends
    /// ASAP_ENDPOINT_UNREACHABLE to the registrar and marks the PE suspect. Returns false
    /// (and sends nothing) if the PE is already suspect, i.e. this failure was reported.
    pub fn report_unreachable(
        &mut self,
        now: Instant,
        handle: PoolHandle,
        pe_id: PeIdentifier,
    ) -> bool {
        self.purge(now);
        if self.is_suspect(now, &handle, pe_id) {
            return false;
        }
        self.cache.deregister(&handle, pe_id);
        self.suspects
            .insert((handle.clone(), pe_id), now + self.config.suspect_timeout);
        self.reports
            .push_back(EndpointUnreachable::new(handle, pe_id));
        self.pump(now);
        true
    }

    /// Clears the suspicion of every PE of `handle`: later answers naming them bring them
    /// back into the cache. For a caller whose every candidate is suspect and that would
    /// rather try one of them again than wait (a PE that ended one session may serve the
    /// next: the registrar, which verifies reported PEs, still names it).
    pub fn forget_suspects(&mut self, handle: &PoolHandle) {
        self.suspects.retain(|(h, _), _| h != handle);
    }

    // ------------------------------------------------------------------------------------
    // internals

    fn drain_table(&mut self) {
        while let Some(a) = self.table.poll_action() {
            self.out.push_back(a.into_output());
        }
    }

    fn fail(&mut self, r: Request, cause: ResolutionFailure) {
        self.out
            .push_back(Output::Event(PoolUserEvent::ResolutionFailed {
                request: r.id,
                handle: r.handle,
                cause,
            }));
    }

    /// Drops expired cache entries and suspects.
    fn purge(&mut self, now: Instant) {
        self.scratch.clear();
        self.cache.expired(now, &mut self.scratch);
        for t in core::mem::take(&mut self.scratch) {
            if t.kind == TimerKind::Expiry {
                self.cache.deregister(&t.pool_handle, t.pe_id);
            }
        }
        self.suspects.retain(|_, until| *until > now);
    }

    fn select(&mut self, handle: &PoolHandle, items: u32) -> Vec<ResolvedElement> {
        let Some(len) = self.cache.pool(handle).map(|p| p.len()) else {
            return Vec::new();
        };
        let max = usize::try_from(items).unwrap_or(usize::MAX).min(len);
        match self
            .cache
            .select_elements(handle, max, u32::MAX, &mut self.rng)
        {
            Ok(sel) => sel
                .elements()
                .map(|e| ResolvedElement {
                    pe_id: e.pe_id(),
                    user_transport: e.user_transport(),
                    policy: e.policy(),
                    home_registrar: e.home_registrar(),
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn remove_pool(&mut self, handle: &PoolHandle) {
        let ids: Vec<PeIdentifier> = self
            .cache
            .pool(handle)
            .map(|p| p.elements().map(|e| e.pe_id()).collect())
            .unwrap_or_default();
        for id in ids {
            self.cache.deregister(handle, id);
        }
    }

    /// Merges a positive answer into the cache. Returns how many named PEs were suspect.
    fn merge(&mut self, now: Instant, m: &HandleResolutionResponse, complete: bool) -> usize {
        let handle = &m.pool_handle;
        let overall = m.policy.unwrap_or(Policy::RoundRobin).policy_type();
        if self
            .cache
            .pool(handle)
            .is_some_and(|p| p.policy_type() != overall)
        {
            self.remove_pool(handle);
        }
        let expiry = now + self.config.stale_cache_value;
        let mut suspect = 0;
        for pe in &m.pool_elements {
            if self.is_suspect(now, handle, pe.pe_id) {
                suspect += 1;
                continue;
            }
            let info = PoolElementInfo {
                pe_id: pe.pe_id,
                home_registrar: pe.home_server_id,
                registration_life: pe.registration_life,
                policy: pe.policy,
                user_transport: pe.user_transport.clone(),
                asap_transport: None,
            };
            let mut r = self.cache.register(handle, &info, None);
            if matches!(
                r,
                Err(RegistrationError::InconsistentPolicy { .. }
                    | RegistrationError::InconsistentTransport { .. }
                    | RegistrationError::InconsistentDataControl { .. })
            ) {
                // The pool was re-created with other settings: the old entries are stale.
                self.remove_pool(handle);
                r = self.cache.register(handle, &info, None);
            }
            if r.is_ok() {
                self.cache
                    .set_timer(handle, pe.pe_id, TimerKind::Expiry, Some(expiry));
            }
        }
        if complete {
            let named: Vec<PeIdentifier> = m.pool_elements.iter().map(|p| p.pe_id).collect();
            self.suspects
                .retain(|(h, id), _| h != handle || named.contains(id));
        }
        suspect
    }

    /// Sends unsent requests and reports on the home association, or hunts for one.
    fn pump(&mut self, now: Instant) {
        let Some(h) = self.home else {
            if !self.reports.is_empty() || self.requests.iter().any(|r| r.sent.is_none()) {
                self.table.start_hunt(now, &mut self.rng);
                self.drain_table();
            }
            return;
        };
        while let Some(rep) = self.reports.pop_front() {
            self.out.push_back(Output::Transmit(Transmit::assoc(
                h.assoc,
                Protocol::Asap,
                encode(rep),
            )));
        }
        let deadline = now + self.config.request_timeout;
        let no_cache = self.config.stale_cache_value.is_zero();
        for r in self.requests.iter_mut().filter(|r| r.sent.is_none()) {
            let option = (no_cache || r.items == HandleResolutionOption::ALL)
                .then_some(HandleResolutionOption { items: r.items });
            let m = HandleResolution {
                subscribe: false,
                reserved_flags: 0,
                pool_handle: r.handle.clone(),
                option,
                skipped: Vec::new(),
            };
            self.out.push_back(Output::Transmit(Transmit::assoc(
                h.assoc,
                Protocol::Asap,
                encode(m),
            )));
            r.sent = Some(Sent {
                assoc: h.assoc,
                deadline,
            });
        }
    }

    /// The registrar failed the oldest request sent on the home association (`expired`
    /// requests) — abort it, hunt, resend or fail.
    fn registrar_failed(
        &mut self,
        now: Instant,
        failed: &[RequestId],
        error: Option<OperationError>,
    ) {
        if let Some(h) = self.home.take() {
            self.out.push_back(Output::Close {
                assoc: h.assoc,
                abort: true,
            });
        }
        let max = self.config.request_max_trials;
        let mut keep = VecDeque::with_capacity(self.requests.len());
        for mut r in core::mem::take(&mut self.requests) {
            r.sent = None;
            if failed.contains(&r.id) {
                r.retransmits += 1;
                if r.retransmits > max {
                    let cause = match &error {
                        Some(e) => ResolutionFailure::Error(e.clone()),
                        None => ResolutionFailure::Timeout,
                    };
                    self.fail(r, cause);
                    continue;
                }
            }
            keep.push_back(r);
        }
        self.requests = keep;
        self.pump(now);
    }

    fn on_response(&mut self, now: Instant, assoc: AssocId, m: HandleResolutionResponse) {
        let pos = self
            .requests
            .iter()
            .position(|r| r.handle == m.pool_handle && r.sent.is_some_and(|s| s.assoc == assoc));
        let positive = m.error.is_none() && !m.pool_elements.is_empty();
        let Some(r) = pos.and_then(|p| self.requests.remove(p)) else {
            // Unsolicited (e.g. a subscription update): keep what it says.
            if positive {
                self.purge(now);
                self.merge(now, &m, false);
            }
            return;
        };
        self.purge(now);
        if !positive {
            self.remove_pool(&m.pool_handle);
            self.suspects.retain(|(h, _), _| *h != m.pool_handle);
            let cause = match m.error {
                Some(e)
                    if e.causes
                        .first()
                        .is_none_or(|c| c.code != cause::UNKNOWN_POOL_HANDLE) =>
                {
                    ResolutionFailure::Error(e)
                }
                _ => ResolutionFailure::NotFound,
            };
            self.fail(r, cause);
            return;
        }
        // An answer lists the whole pool when it holds fewer PEs than were asked for.
        let asked = (self.config.stale_cache_value.is_zero()
            || r.items == HandleResolutionOption::ALL)
            .then_some(r.items.min(MAX_ITEMS));
        let complete = asked.is_some_and(|n| m.pool_elements.len() < n as usize);
        let suspect = self.merge(now, &m, complete);
        let elements = self.select(&m.pool_handle, r.items);
        if elements.is_empty() {
            let cause = if suspect > 0 {
                ResolutionFailure::OnlySuspects
            } else {
                ResolutionFailure::NotFound
            };
            self.fail(r, cause);
        } else {
            self.out.push_back(Output::Event(PoolUserEvent::Resolved {
                request: r.id,
                handle: r.handle,
                elements,
            }));
        }
    }

    fn hunt_outcome(&mut self, now: Instant, o: HuntOutcome) {
        match o {
            HuntOutcome::Connected {
                assoc, server_id, ..
            } => {
                if self.home.is_some() {
                    self.out.push_back(Output::Close {
                        assoc,
                        abort: false,
                    });
                } else {
                    self.home = Some(Home { assoc, server_id });
                }
                self.pump(now);
            }
            HuntOutcome::Failed => {
                self.reports.clear();
                let (unsent, sent): (VecDeque<Request>, VecDeque<Request>) =
                    core::mem::take(&mut self.requests)
                        .into_iter()
                        .partition(|r| r.sent.is_none());
                self.requests = sent;
                for r in unsent {
                    self.fail(r, ResolutionFailure::NoRegistrar);
                }
            }
        }
    }
}

impl<R: rand_core::Rng> Machine for PoolUser<R> {
    type Event = PoolUserEvent;

    fn handle_assoc_up(&mut self, now: Instant, assoc: AssocId, _peer_addrs: &[SocketAddr]) {
        if AssocIdAllocator::is_machine_chosen(assoc)
            && let Some(o) = self.table.handle_assoc_up(assoc)
        {
            self.drain_table();
            self.hunt_outcome(now, o);
        }
    }

    fn handle_assoc_down(&mut self, now: Instant, assoc: AssocId, _reason: AssocDownReason) {
        if self.table.handle_assoc_down(assoc) {
            self.drain_table();
            return;
        }
        if self.home.is_some_and(|h| h.assoc == assoc) {
            self.home = None;
            for r in &mut self.requests {
                r.sent = None;
            }
            self.pump(now);
        }
    }

    fn handle_message(&mut self, now: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
        if ppid != Protocol::PPID_ASAP || self.home.is_none_or(|h| h.assoc != assoc) {
            return;
        }
        let mut reply = None;
        let msg = decode_inbound(&data, &mut reply);
        if let Some(r) = reply {
            self.out
                .push_back(Output::Transmit(Transmit::assoc(assoc, Protocol::Asap, r)));
        }
        match msg {
            Some(AsapMessage::HandleResolutionResponse(m)) => self.on_response(now, assoc, m),
            Some(AsapMessage::Error(e)) => {
                let oldest = self
                    .requests
                    .iter()
                    .find(|r| r.sent.is_some_and(|s| s.assoc == assoc))
                    .map(|r| r.id);
                if let Some(id) = oldest {
                    self.registrar_failed(now, &[id], Some(e.error));
                }
            }
            Some(AsapMessage::EndpointKeepAlive(ka)) => {
                // Only PEs get keep-alives; learn the registrar id if it is offered anyway.
                if let Some(h) = self.home.as_mut() {
                    h.server_id.get_or_insert(ka.server_id);
                }
            }
            _ => {}
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ppid: u32, data: Bytes) {
        if ppid == Protocol::PPID_ASAP {
            self.table.handle_datagram(now, from, &data, &mut self.rng);
            self.drain_table();
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(o) = self.table.handle_timeout(now, &mut self.rng) {
            self.drain_table();
            self.hunt_outcome(now, o);
        }
        self.drain_table();
        let expired: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|r| r.sent.is_some_and(|s| s.deadline <= now))
            .map(|r| r.id)
            .collect();
        if !expired.is_empty() {
            self.registrar_failed(now, &expired, None);
        }
    }

    fn poll_output(&mut self) -> Option<Output<PoolUserEvent>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let req = self
            .requests
            .iter()
            .filter_map(|r| r.sent.map(|s| s.deadline))
            .min();
        match (req, self.table.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
