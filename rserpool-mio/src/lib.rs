//! mio driver for the rserpool core machines.
#![warn(missing_docs)]
// `unsafe` is allowed in exactly one module: transport::sctp::sys (kernel SCTP FFI).
#![deny(unsafe_code)]

pub mod cli;
pub mod driver;
pub mod hostile;
pub mod pcap;
pub mod programs;
pub mod tools;
pub mod transport;
