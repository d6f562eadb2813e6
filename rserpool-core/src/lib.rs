//! Sans-IO RSerPool state machines.
//!
//! The core does no I/O, reads no clock and owns no global RNG: time comes in as an
//! argument ([`time::Instant`]), randomness through an injected `rand_core` RNG.
#![warn(missing_docs)]

pub mod assoc;
pub mod handlespace;
pub mod io;
pub mod pool_element;
pub mod pool_user;
pub mod registrar;
pub mod registrar_table;
pub mod services;
pub mod session;
pub mod time;

pub use assoc::{AssocId, Protocol};
pub use io::{AssocDownReason, ChannelKind, Destination, Machine, Output, Transmit};
pub use time::Instant;
