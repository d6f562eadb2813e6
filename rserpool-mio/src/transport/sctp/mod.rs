//! Kernel SCTP: the FFI module ([`sys`], the project's only `unsafe`) and the socket type.

pub mod socket;
pub mod sys;
