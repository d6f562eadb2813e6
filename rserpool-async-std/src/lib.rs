//! async driver for the rserpool core machines, on **async-io 2 + futures-lite 2**.
//!
//! The crate keeps the name the design gave it, but async-std itself is discontinued
//! upstream: the driver is built on the reactor async-std runs on (async-io), so it runs
//! unchanged under async-std's executor, smol, or `futures_lite::future::block_on`. It
//! contains no protocol logic: everything RSerPool lives in the sans-IO machines of
//! `rserpool-core`; this crate moves bytes and time.
//!
//! * [`transport`]: RTF over TCP, kernel SCTP (through `rserpool-mio`'s FFI module) and UDP
//!   on `async_io::Async`, polled from one task, with the mio driver's behaviour and types.
//! * [`driver`]: [`Driver`] / [`run_machine`], the task that owns a
//!   [`Machine`](rserpool_core::Machine), with a command channel ([`Handle`]) and an event
//!   stream ([`Events`]). The embedding API (pool element registration, pool user
//!   connections, sessions as `AsyncRead`/`AsyncWrite`) is built on these.
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
pub mod driver;
pub mod transport;

pub use clock::Clock;
pub use driver::{
    BoundListener, BoundUdp, Driver, DriverConfig, DriverCtx, Events, Handle, Listen, Stopped,
    UdpEndpoint, run_machine,
};
pub use transport::{TransportConfig, TransportKind, TransportMode, Transports};
