//! mio driver for the rserpool core machines.
#![warn(missing_docs)]
pub mod transport;
