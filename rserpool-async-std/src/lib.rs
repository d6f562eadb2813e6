//! async driver for the rserpool core machines, on **async-io 2 + futures-lite 2**.
//!
//! The crate keeps the name the design gave it, but async-std itself is discontinued
//! upstream: the driver is built on the reactor async-std runs on (async-io), so it runs
//! unchanged under async-std's executor, smol, or `futures_lite::future::block_on`. It
//! contains no protocol logic: everything RSerPool lives in the sans-IO machines of
//! `rserpool-core`; this crate moves bytes and time.
//!
//! # Embedding API
//! What applications use (every call `async`, every error an [`Error`]):
//! * [`PoolElement::register`]`(`[`PoolElementConfig`]`)` — registered when it returns;
//!   [`PoolElement::incoming`] is a `Stream` of [`ServerSession`]s
//!   ([`recv`](ServerSession::recv) → [`Message`] `{ppid, data}`,
//!   [`send`](ServerSession::send), [`cookie_echo`](ServerSession::cookie_echo) — the state a
//!   failed-over pool user brings, there before its first message —
//!   [`send_cookie`](ServerSession::send_cookie), [`close`](ServerSession::close));
//!   [`set_load`](PoolElement::set_load), [`deregister`](PoolElement::deregister),
//!   [`events`](PoolElement::events).
//! * [`PoolUser::connect`]`("EchoPool", `[`PoolUserConfig`]`)` → [`Session`]: a byte stream
//!   (`futures_lite::AsyncRead` / `AsyncWrite`: each write one message with
//!   [`PoolUserConfig::ppid`], reads concatenate payloads) and messages
//!   ([`send_msg`](Session::send_msg) / [`recv_msg`](Session::recv_msg)); it fails over by
//!   itself and tells ([`events`](Session::events), [`failovers`](Session::failovers),
//!   [`cookie`](Session::cookie), [`force_failover`](Session::force_failover)).
//! * [`resolve`]`(handle, config)` and [`PoolUser::start`] for basic mode: handle resolution
//!   ([`ResolvedElement`]s) and unreachability reports.
//! * [`Registrar::start`]`(`[`RegistrarConfig`]`)`: a registrar (tests, examples, small
//!   deployments).
//!
//! Each of them runs one core machine in a driver task, spawned by its config's [`Spawner`]
//! (a thread per driver by default, or the application's executor). Sends wait while more
//! than a send buffer is queued towards a peer that does not read (backpressure, instead of
//! the transport aborting the association). Examples: `examples/echo_pe.rs`,
//! `examples/echo_client.rs` (survives killing the PE serving it), `examples/registrar.rs`.
//!
//! # Underneath
//! * [`transport`]: RTF over TCP, kernel SCTP (through `rserpool-mio`'s FFI module) and UDP:
//!   the mio driver's transport layer on a private `mio::Poll` whose descriptor waits in
//!   async-io's reactor, polled from one task.
//! * [`driver`]: [`Driver`] / [`run_machine`], the task that owns a
//!   [`Machine`](rserpool_core::Machine), with a command channel ([`Handle`]) and an event
//!   stream ([`Events`]); for custom machines and drivers.
//! * [`Clock`]: `std::time::Instant` ↔ [`rserpool_core::Instant`] (µs since start).
//!
//! # Example: an echo machine on RTF/TCP, and a command
//!
//! ```
//! use bytes::Bytes;
//! use rserpool_async_std::{Driver, DriverConfig, Listen};
//! use rserpool_core::{AssocDownReason, AssocId, Destination, Instant, Machine, Output, Transmit};
//! use rserpool_proto::rtf::ChannelKind;
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//!
//! /// Sends every message back on the association it came from.
//! #[derive(Default)]
//! struct Echo {
//!     out: VecDeque<Output<String>>,
//!     echoed: usize,
//! }
//!
//! impl Machine for Echo {
//!     type Event = String;
//!     fn handle_assoc_up(&mut self, _: Instant, assoc: AssocId, _: &[SocketAddr]) {
//!         self.out.push_back(Output::Event(format!("{assoc:?} up")));
//!     }
//!     fn handle_assoc_down(&mut self, _: Instant, _: AssocId, _: AssocDownReason) {}
//!     fn handle_message(&mut self, _: Instant, assoc: AssocId, ppid: u32, data: Bytes) {
//!         self.echoed += 1;
//!         self.out.push_back(Output::Transmit(Transmit {
//!             dest: Destination::Assoc(assoc),
//!             ppid,
//!             stream: 0,
//!             payload: data,
//!         }));
//!     }
//!     fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: u32, _: Bytes) {}
//!     fn handle_timeout(&mut self, _: Instant) {}
//!     fn poll_output(&mut self) -> Option<Output<String>> {
//!         self.out.pop_front()
//!     }
//!     fn poll_timeout(&self) -> Option<Instant> {
//!         None
//!     }
//! }
//!
//! futures_lite::future::block_on(async {
//!     let config = DriverConfig {
//!         listen: vec![Listen::tcp("127.0.0.1:0".parse().unwrap(), ChannelKind::Session)],
//!         ..DriverConfig::default()
//!     };
//!     let mut driver = Driver::new(Echo::default(), config).unwrap();
//!     let handle = driver.handle();
//!     let mut events = driver.events().unwrap();
//!     let addr = handle.listen_addr(0).unwrap();
//!
//!     // A bare RTF peer: HELLO, one DATA frame with PPID 33, then read the echo.
//!     let peer = async {
//!         use futures_lite::{AsyncReadExt, AsyncWriteExt};
//!         use rserpool_proto::rtf::{Frame, FrameDecoder, Hello};
//!         let mut s = async_io::Async::<std::net::TcpStream>::connect(addr).await.unwrap();
//!         let hello = Frame::Hello(Hello { channel_kind: ChannelKind::Session, heartbeat_interval_ms: 5000 });
//!         let data = Frame::Data { unordered: false, stream: 0, ppid: 33, payload: Bytes::from_static(b"ping") };
//!         s.write_all(&[hello.to_bytes(), data.to_bytes()].concat()).await.unwrap();
//!         let (mut decoder, mut frames, mut buf) = (FrameDecoder::default(), Vec::new(), [0u8; 1024]);
//!         loop {
//!             let n = s.read(&mut buf).await.unwrap();
//!             decoder.decode_into(&buf[..n], &mut frames).unwrap();
//!             if let Some(Frame::Data { ppid, payload, .. }) = frames.iter().find(|f| matches!(f, Frame::Data { .. })) {
//!                 return (*ppid, payload.clone());
//!             }
//!         }
//!     };
//!     let app = async {
//!         let echo = peer.await;
//!         let up = events.recv().await.unwrap(); // "assoc#1 up"
//!         // A command: runs on the machine inside the driver task.
//!         let echoed = handle.call(|m: &mut Echo, _now| m.echoed).await.unwrap();
//!         handle.shutdown().await.unwrap();
//!         (echo, up, echoed)
//!     };
//!     // The driver is a future: spawn it on any executor, or run it beside the app as here.
//!     let (machine, (echo, up, echoed)) = futures_lite::future::zip(driver.run(), app).await;
//!     assert_eq!(echo, (33, Bytes::from_static(b"ping")));
//!     assert!(up.ends_with("up"));
//!     assert_eq!((echoed, machine.echoed), (1, 1));
//! });
//! ```
#![warn(missing_docs)]
// `unsafe` lives only in rserpool-mio's SCTP FFI module.
#![deny(unsafe_code)]

pub mod clock;
mod common;
pub mod driver;
pub mod element;
mod error;
pub mod registrar;
mod runtime;
pub mod transport;
pub mod user;
mod watch;

pub use clock::Clock;
pub use common::Message;
pub use driver::{
    Accepted, BoundListener, BoundUdp, Driver, DriverConfig, DriverCtx, Events, Handle, Listen,
    QueueBelow, Stopped, UdpEndpoint, run_machine,
};
pub use element::{
    Incoming, PoolElement, PoolElementConfig, ServerEvent, ServerSession, SessionSender,
};
pub use error::{ConfigError, Error};
pub use registrar::{ListedElement, Registrar, RegistrarConfig};
pub use rserpool_core::pool_user::ResolvedElement;
pub use rserpool_proto::ids::{PeIdentifier, PoolHandle, ServerId};
pub use rserpool_proto::policy::Policy;
pub use runtime::{BoxTask, Spawner};
pub use transport::{
    TlsPolicy, TlsSettings, TransportConfig, TransportKind, TransportMode, Transports,
};
pub use user::{Notification, PoolUser, PoolUserConfig, Session, resolve};
