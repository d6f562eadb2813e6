//! Sans-IO RSerPool state machines.
//!
//! The core does no I/O, reads no clock and owns no global RNG: time comes in as an
//! argument ([`time::Instant`]), randomness through an injected `rand_core` RNG.
//!
//! # Driving the core yourself
//! Every machine — [`registrar::Registrar`], [`pool_element::PoolElement`],
//! [`pool_user::PoolUser`], [`session::PoolUserSession`], [`session::PoolElementSessions`] —
//! implements [`Machine`], the whole contract between it and whatever moves its bytes:
//!
//! * **Inputs** are `handle_*` calls: [`Machine::handle_assoc_up`] /
//!   [`Machine::handle_assoc_down`] / [`Machine::handle_message`] (an association and its
//!   messages with their SCTP PPID: 11 ASAP, 12 ENRP, others session data),
//!   [`Machine::handle_datagram`] (UDP announces and presences), and
//!   [`Machine::handle_timeout`]. Application commands are methods of each machine
//!   (`register`, `resolve`, `connect`, `send`, ...), also taking the time.
//! * **Outputs**: after every input or command, drain [`Machine::poll_output`] until `None`
//!   and carry out each [`Output`]: `Transmit` (to an association or a UDP address), `Connect`,
//!   `Close` (then report `handle_assoc_down(Closed)`), `Event` (for the application).
//! * **Time is an argument.** Every call takes `now` ([`Instant`]: microseconds since an
//!   epoch of your choice, never going backwards). [`Machine::poll_timeout`] is the next
//!   instant at which to call `handle_timeout(now)`; sleep until then or until input
//!   arrives. Nothing in the core reads a clock, so tests and simulations run on made-up
//!   time.
//! * **Association ids.** You name the associations you accept with [`AssocId`]s whose top
//!   bit is clear. A machine that wants an association picks the id itself (top bit set,
//!   [`io::AssocIdAllocator`]) in `Output::Connect`; you open it and report
//!   `handle_assoc_up` or `handle_assoc_down(ConnectFailed)` under that same id. Messages
//!   the machine transmits on it before it is up are queued by you (or sent behind the
//!   TCP mapping's HELLO).
//!   If your ids for accepted associations hold a small reused index (a socket slot) in their
//!   low bits, say so once with [`Machine::handle_assoc_id_slot_bits`]: the registrar then
//!   keeps its per-association entries, and its handlespace the heads of each association's
//!   PE list, in vectors by that index (less memory per PE); the default ignores it, and ids
//!   that do not fit still work.
//!
//! Drivers in this workspace: `rserpool-mio` (a mio event loop), `rserpool-async-std`
//! (async-io tasks), the simulator in `rserpool-tests`, and `examples/blocking_loop.rs`: a
//! plain blocking loop with std sockets and the RTF codec that runs a registrar, a pool
//! element and a pool user over 127.0.0.1.
//!
//! The exchange below is a pool element's registration with the driver played by hand:
//!
//! ```
//! use rand_xoshiro::{Xoshiro256PlusPlus, rand_core::SeedableRng};
//! use rserpool_core::pool_element::{PoolElement, PoolElementConfig, PoolElementEvent};
//! use rserpool_core::registrar_table::StaticRegistrar;
//! use rserpool_core::{Destination, Instant, Machine, Output};
//! use rserpool_proto::AsapMessage;
//! use rserpool_proto::asap::RegistrationResponse;
//! use rserpool_proto::transport::TransportProtocol;
//! use std::net::{IpAddr, Ipv4Addr, SocketAddr};
//!
//! let registrar: SocketAddr = "127.0.0.1:3863".parse().unwrap();
//! let mut config = PoolElementConfig::new(
//!     "EchoPool", TransportProtocol::Tcp, 7000, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
//! config.registrar_table.static_registrars = vec![StaticRegistrar::tcp([registrar])];
//! config.registrar_table.use_announces = false;
//! let mut pe = PoolElement::new(config, Xoshiro256PlusPlus::seed_from_u64(7)).unwrap();
//!
//! // A command, at time zero: the PE asks for an association to the registrar, with an id
//! // it chose itself.
//! pe.register(Instant::ZERO);
//! let Some(Output::Connect { assoc, addrs, .. }) = pe.poll_output() else { panic!() };
//! assert_eq!(addrs[0], registrar);
//! assert!(pe.poll_output().is_none());
//!
//! // The driver connected it: same id. The PE sends its ASAP_REGISTRATION (PPID 11).
//! let t = Instant::from_millis(3);
//! pe.handle_assoc_up(t, assoc, &[registrar]);
//! let Some(Output::Transmit(tx)) = pe.poll_output() else { panic!() };
//! assert_eq!((tx.dest, tx.ppid), (Destination::Assoc(assoc), 11));
//! let Ok(AsapMessage::Registration(reg)) = AsapMessage::decode(&tx.payload) else { panic!() };
//!
//! // Until the answer, the next deadline is the request timeout (3 s after sending).
//! assert_eq!(pe.poll_timeout(), Some(t + std::time::Duration::from_secs(3)));
//!
//! // The registrar's answer arrives as a message on that association.
//! let answer = AsapMessage::from(RegistrationResponse {
//!     pool_handle: reg.pool_handle.clone(),
//!     pe_id: reg.pool_element.pe_id,
//!     ..RegistrationResponse::default()
//! });
//! let t = Instant::from_millis(5);
//! pe.handle_message(t, assoc, 11, answer.to_bytes());
//! let Some(Output::Event(PoolElementEvent::Registered { pe_id, .. })) = pe.poll_output()
//! else { panic!() };
//! assert_eq!(pe_id, pe.pe_id());
//! // Now the deadline is the re-registration, 30 s later; call handle_timeout then.
//! assert_eq!(pe.poll_timeout(), Some(t + std::time::Duration::from_secs(30)));
//! ```
#![warn(missing_docs)]

pub mod assoc;
pub mod handlespace;
pub mod io;
pub mod paged;
pub mod pool_element;
pub mod pool_user;
pub mod registrar;
pub mod registrar_table;
pub mod services;
pub mod session;
pub mod time;

pub use assoc::{AssocId, Protocol};
pub use io::{AssocDownReason, BulkTransfer, ChannelKind, Destination, Machine, Output, Transmit};
pub use time::Instant;
