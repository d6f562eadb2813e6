//! The hostile-input suite: deterministic (seeded) sets of malformed, forged and flooding
//! ASAP/ENRP messages, and a runner that plays them against any registrar (ours in-process,
//! `rsphostile` against a remote one, RSPLIB's `rspregistrar` over kernel SCTP) next to one
//! legitimate echo PE it registers and keeps alive itself.
//!
//! # The six classes
//! | class | what | generator |
//! | --- | --- | --- |
//! | a | truncations and length lies at every nesting level of every captured RSPLIB message and of our own encodings | [`generate::truncations`] |
//! | b | unknown message types and parameters with the four action-bit combinations, wrong PPIDs | [`generate::unknowns`] |
//! | c | invalid registrations (pool handle, transports, addresses, port, policy, life, PE id, duplicates, mismatches with the pool) | [`generate::invalid_registrations`] |
//! | d | forged ASAP from strangers and forged ENRP from non-peers and from peers that are not the home | [`generate::forged`] |
//! | e | floods: 20,000 registrations over one association, 5,000 pools, handle resolutions (read and unread), Endpoint Unreachable reports, association churn | [`suite`] |
//! | f | seeded byte-level mutations of valid messages | [`generate::mutations`] |
//!
//! Every case of classes b, c and d carries the reply an RFC 5352-5354 registrar with our
//! ownership rules sends ([`Case::expect`]); the runner counts the differences as
//! deviations. After every class (and every [`suite::SuiteConfig::probe_interval`]) a probe
//! Handle Resolution from a clean association must name exactly the legitimate PE, with its
//! transport and its home registrar: anything else is a probe failure (removed, hijacked,
//! re-homed, injected).
//!
//! # Who sends what
//! The runner plays several parties ([`Sender`]): the attacker's ASAP associations, a
//! stranger's ENRP association that never announced itself, a legitimate ENRP peer `P` (a
//! registrar with no PEs that answers Presences and table requests) that forges updates for
//! PEs it does not own, and a second stranger that sends a Presence first.
//!
//! [`wire`] has the raw builders and the TLV walker, [`net`] the blocking wrapper around
//! [`crate::transport::Transports`] (kernel SCTP or RTF over TCP) the runner uses.

pub mod generate;
pub mod net;
pub mod suite;
pub mod wire;

use bytes::Bytes;
use std::fmt;

use rserpool_core::Protocol;
use rserpool_proto::{AsapMessage, EnrpMessage};

/// The six classes of hostile input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// (a) Truncations and length lies.
    Truncation,
    /// (b) Unknown message types and parameters (action bits), wrong PPIDs.
    Unknown,
    /// (c) Invalid registrations.
    InvalidRegistration,
    /// (d) Forged ASAP and ENRP.
    Forged,
    /// (e) Floods.
    Flood,
    /// (f) Byte-level mutations.
    Mutation,
}

impl Class {
    /// Every class, in the order the suite plays them.
    pub const ALL: [Class; 6] = [
        Class::Truncation,
        Class::Unknown,
        Class::InvalidRegistration,
        Class::Forged,
        Class::Flood,
        Class::Mutation,
    ];

    /// The letter of the class in the task description (a-f).
    pub fn letter(self) -> char {
        match self {
            Class::Truncation => 'a',
            Class::Unknown => 'b',
            Class::InvalidRegistration => 'c',
            Class::Forged => 'd',
            Class::Flood => 'e',
            Class::Mutation => 'f',
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Class::Truncation => "truncation",
            Class::Unknown => "unknown",
            Class::InvalidRegistration => "invalid-registration",
            Class::Forged => "forged",
            Class::Flood => "flood",
            Class::Mutation => "mutation",
        }
    }

    /// The class named by a letter (`a`-`f`) or by its name.
    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL
            .into_iter()
            .find(|c| s.eq_ignore_ascii_case(c.name()) || s == c.letter().to_string())
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.letter(), self.name())
    }
}

/// The party that sends a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    /// The attacker's ASAP association to the registrar.
    Asap,
    /// A second attacker ASAP association (a stranger to the first one's PEs too).
    AsapOther,
    /// The stranger's ENRP association: a server that never sent a Presence.
    Stranger,
    /// The legitimate peer `P`'s ENRP association (a peer, but not the home of the PE).
    Peer,
    /// A second stranger that introduces itself with a Presence before forging.
    Announcer,
}

impl Sender {
    /// The protocol this party speaks.
    pub fn protocol(self) -> Protocol {
        match self {
            Sender::Asap | Sender::AsapOther => Protocol::Asap,
            _ => Protocol::Enrp,
        }
    }
}

/// What a registrar answered, as far as the suite tells answers apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reply {
    /// ASAP Error with this (first) cause.
    AsapError(u16),
    /// Registration Response, accepted (R = 0, no error).
    RegistrationOk,
    /// Registration Response, rejected (R = 1 or an error), with the first cause if any.
    RegistrationReject(Option<u16>),
    /// Deregistration Response without error.
    DeregistrationOk,
    /// Deregistration Response with this cause.
    DeregistrationError(u16),
    /// Handle Resolution Response naming PEs.
    ResolutionOk,
    /// Handle Resolution Response with this cause (or none: 0xffff).
    ResolutionError(u16),
    /// Another ASAP message, by type.
    Asap(u8),
    /// ENRP Error with this (first) cause.
    EnrpError(u16),
    /// Handle Table Response (reject flag).
    TableResponse(bool),
    /// List Response (reject flag).
    ListResponse(bool),
    /// Another ENRP message, by type.
    Enrp(u8),
    /// Something that did not decode (a registrar must never send that).
    Undecodable(Protocol),
}

/// The first cause of an Operation Error, or 0xffff for none.
fn first_cause(e: Option<&rserpool_proto::param::OperationError>) -> Option<u16> {
    e.and_then(|e| e.causes.first()).map(|c| c.code)
}

impl Reply {
    /// Classifies a message received from the registrar.
    pub fn classify(protocol: Protocol, data: &Bytes) -> Reply {
        match protocol {
            Protocol::Asap => match AsapMessage::decode_bytes(data) {
                Err(_) => Reply::Undecodable(protocol),
                Ok(m) => match m {
                    AsapMessage::Error(e) => {
                        Reply::AsapError(first_cause(Some(&e.error)).unwrap_or(0xffff))
                    }
                    AsapMessage::RegistrationResponse(r) => {
                        if r.reject || r.error.is_some() {
                            Reply::RegistrationReject(first_cause(r.error.as_ref()))
                        } else {
                            Reply::RegistrationOk
                        }
                    }
                    AsapMessage::DeregistrationResponse(r) => match first_cause(r.error.as_ref()) {
                        None => Reply::DeregistrationOk,
                        Some(c) => Reply::DeregistrationError(c),
                    },
                    AsapMessage::HandleResolutionResponse(r) => {
                        match (first_cause(r.error.as_ref()), r.pool_elements.is_empty()) {
                            (None, false) => Reply::ResolutionOk,
                            (c, _) => Reply::ResolutionError(c.unwrap_or(0xffff)),
                        }
                    }
                    other => Reply::Asap(other.message_type()),
                },
            },
            Protocol::Enrp => match EnrpMessage::decode_bytes(data) {
                Err(_) => Reply::Undecodable(protocol),
                Ok(m) => match m {
                    EnrpMessage::Error(e) => {
                        Reply::EnrpError(first_cause(Some(&e.error)).unwrap_or(0xffff))
                    }
                    EnrpMessage::HandleTableResponse(r) => Reply::TableResponse(r.reject),
                    EnrpMessage::ListResponse(r) => Reply::ListResponse(r.reject),
                    other => Reply::Enrp(other.message_type()),
                },
            },
        }
    }

    /// The cause code the reply carries, if any.
    pub fn cause(self) -> Option<u16> {
        match self {
            Reply::AsapError(c)
            | Reply::DeregistrationError(c)
            | Reply::ResolutionError(c)
            | Reply::EnrpError(c) => Some(c),
            Reply::RegistrationReject(c) => c,
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::AsapError(c) => write!(f, "asap-error {c:#06x}"),
            Reply::RegistrationOk => write!(f, "registration-ok"),
            Reply::RegistrationReject(Some(c)) => write!(f, "registration-reject {c:#06x}"),
            Reply::RegistrationReject(None) => write!(f, "registration-reject -"),
            Reply::DeregistrationOk => write!(f, "deregistration-ok"),
            Reply::DeregistrationError(c) => write!(f, "deregistration-error {c:#06x}"),
            Reply::ResolutionOk => write!(f, "resolution-ok"),
            Reply::ResolutionError(c) => write!(f, "resolution-error {c:#06x}"),
            Reply::Asap(t) => write!(f, "asap {}", rserpool_proto::asap::message_name(*t)),
            Reply::EnrpError(c) => write!(f, "enrp-error {c:#06x}"),
            Reply::TableResponse(r) => {
                write!(f, "table-response{}", if *r { " reject" } else { "" })
            }
            Reply::ListResponse(r) => write!(f, "list-response{}", if *r { " reject" } else { "" }),
            Reply::Enrp(t) => write!(f, "enrp {}", rserpool_proto::enrp::message_name(*t)),
            Reply::Undecodable(p) => write!(f, "undecodable {p:?}"),
        }
    }
}

/// One hostile message.
#[derive(Clone, Debug)]
pub struct Case {
    /// Its class.
    pub class: Class,
    /// A name that says what it is (stable across runs with the same seed).
    pub name: String,
    /// Who sends it.
    pub sender: Sender,
    /// The SCTP PPID it travels with (11 ASAP, 12 ENRP, or a wrong one).
    pub ppid: u32,
    /// The message.
    pub data: Bytes,
    /// The replies (in order) an RFC-conforming registrar with our ownership rules sends,
    /// for the cases where the RFCs fix them; several alternatives where the RFCs leave a
    /// choice (`None`: anything but a crash will do).
    pub expect: Option<Vec<Vec<Reply>>>,
    /// Close the sender's association after the case (and probe): shows whether the case
    /// moved a PE onto that association (closing it deregisters what it owns).
    pub then_close: bool,
}

impl Case {
    /// A case sent with its sender's protocol's PPID.
    pub fn new(class: Class, name: impl Into<String>, sender: Sender, data: Bytes) -> Case {
        Case {
            class,
            name: name.into(),
            sender,
            ppid: sender.protocol().ppid(),
            data,
            expect: None,
            then_close: false,
        }
    }

    /// The same case, closing its sender's association afterwards.
    pub fn then_close(mut self) -> Case {
        self.then_close = true;
        self
    }

    /// The same case with an expectation.
    pub fn expect(mut self, replies: &[Reply]) -> Case {
        self.expect = Some(vec![replies.to_vec()]);
        self
    }

    /// The same case with alternative expectations (any one of them is right).
    pub fn expect_any(mut self, alternatives: &[&[Reply]]) -> Case {
        let mut alts: Vec<Vec<Reply>> = Vec::new();
        for a in alternatives {
            if !alts.iter().any(|x| x == a) {
                alts.push(a.to_vec());
            }
        }
        self.expect = Some(alts);
        self
    }

    /// True if `got` is (one of) the expected replies; true without an expectation.
    pub fn matches(&self, got: &[Reply]) -> bool {
        self.expect
            .as_ref()
            .is_none_or(|alts| alts.iter().any(|a| a == got))
    }
}

/// The RFC 5354 cause codes (0x0-0xa): everything else is an RSPLIB-internal code.
pub fn is_rfc_cause(code: u16) -> bool {
    code <= 0x000a
}
