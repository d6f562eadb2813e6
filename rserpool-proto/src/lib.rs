//! RSerPool wire format: every parameter of RFC 5354, every ASAP (RFC 5352) and ENRP
//! (RFC 5353) message, the selection policies of RFC 5356 and RSPLIB, RSPLIB's Component
//! Status Protocol, and the project's TCP mapping frame (RTF).
//!
//! # Contract
//! Decoding never panics: every decoder takes untrusted bytes and returns either a typed
//! value or a [`DecodeError`] that says where and what went wrong and which Operation Error
//! cause a registrar should answer with. Encoding writes what RSPLIB writes (TLVs padded
//! as they are closed, message length = full padded size).
//!
//! # Modules
//! * [`param`]: parameters (TLVs), error causes, the [`Encode`] trait;
//! * [`asap`]: [`AsapMessage`] and its 14 message types;
//! * [`enrp`]: [`EnrpMessage`] and its 10 message types;
//! * [`csp`]: RSPLIB's Component Status Protocol;
//! * [`rtf`]: the TCP mapping frame and its sans-IO connection;
//! * [`fuzzing`]: entry points for fuzzers;
//! * [`ids`], [`policy`], [`transport`]: the value types the parameters carry.
#![warn(missing_docs)]

pub mod asap;
pub mod csp;
pub mod enrp;
pub mod error;
pub mod fuzzing;
pub mod ids;
pub mod param;
pub mod policy;
pub mod rtf;
pub mod services;
mod tlv;
pub mod transport;

pub use asap::AsapMessage;
pub use enrp::EnrpMessage;
pub use error::{DecodeError, DecodeErrorKind};
pub use param::Encode;
