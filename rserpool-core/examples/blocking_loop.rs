//! Driving the core yourself: a plain blocking loop (std `TcpStream`/`TcpListener`, the RTF
//! codec from `rserpool_proto::rtf`, `std::time`; no mio, no async) runs any sans-IO
//! [`Machine`] over the TCP mapping. Here three of them talk over 127.0.0.1: a registrar, a
//! pool element registering with it, and a pool user resolving the pool.
//!
//! ```text
//! cargo run -p rserpool-core --example blocking_loop
//! ```
//!
//! The loop ([`BlockingLoop::run`]): reader threads turn socket bytes into messages on one
//! channel; the loop blocks on that channel until the earliest deadline (the machine's
//! `poll_timeout` and the RTF heartbeats), feeds what arrived to the RTF connections and
//! their events to the machine (`handle_assoc_up` / `handle_message` /
//! `handle_assoc_down`, each with the current time), calls `handle_timeout` when due, and
//! carries out every `poll_output`: `Transmit` → RTF DATA frame, `Connect` → a TCP
//! connection under the **machine's** association id, `Close` → shut the socket and report
//! `Closed`, `Event` → the application callback.

// A driver owns the clock (the core's clippy.toml forbids reading it inside the core).
#![allow(clippy::disallowed_methods)]

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use rserpool_core::io::Destination;
use rserpool_core::pool_element::{PoolElement, PoolElementConfig, PoolElementEvent};
use rserpool_core::pool_user::{PoolUser, PoolUserConfig, PoolUserEvent};
use rserpool_core::registrar::{AddressScope, Registrar, RegistrarConfig};
use rserpool_core::registrar_table::{RegistrarTableConfig, StaticRegistrar};
use rserpool_core::{AssocDownReason, AssocId, ChannelKind, Instant, Machine, Output};
use rserpool_proto::rtf::{self, ChannelKinds, RtfConfig, RtfConnection, RtfEvent};
use rserpool_proto::transport::TransportProtocol;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

enum Input {
    Accepted(TcpStream),
    Bytes(AssocId, Vec<u8>),
    Eof(AssocId),
}

struct Link {
    stream: TcpStream,
    rtf: RtfConnection,
}

/// One machine, driven by blocking I/O.
struct BlockingLoop<M> {
    machine: M,
    epoch: std::time::Instant,
    links: HashMap<AssocId, Link>,
    next_id: u64,
    tx: Sender<Input>,
    rx: Receiver<Input>,
    downs: Vec<(AssocId, AssocDownReason)>,
}

fn kind(c: ChannelKind) -> rtf::ChannelKind {
    match c {
        ChannelKind::AsapToRegistrar => rtf::ChannelKind::AsapToRegistrar,
        ChannelKind::AsapToPoolElement => rtf::ChannelKind::AsapFromRegistrar,
        ChannelKind::Enrp => rtf::ChannelKind::Enrp,
        ChannelKind::Session => rtf::ChannelKind::Session,
    }
}

impl<M: Machine> BlockingLoop<M> {
    fn new(machine: M, epoch: std::time::Instant, listener: Option<TcpListener>) -> Self {
        let (tx, rx) = channel();
        if let Some(l) = listener {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for s in l.incoming().flatten() {
                    if tx.send(Input::Accepted(s)).is_err() {
                        break;
                    }
                }
            });
        }
        BlockingLoop {
            machine,
            epoch,
            links: HashMap::new(),
            next_id: 1,
            tx,
            rx,
            downs: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn add_link(&mut self, id: AssocId, stream: TcpStream, rtf: RtfConnection) {
        let (mut reader, tx) = (stream.try_clone().expect("clone"), self.tx.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(Input::Bytes(id, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            let _ = tx.send(Input::Eof(id));
        });
        self.links.insert(id, Link { stream, rtf });
    }

    fn output(&mut self, now: Instant, o: Output<M::Event>) {
        match o {
            Output::Transmit(t) => {
                // UDP (announces, presences) is not used in this example.
                if let Destination::Assoc(a) = t.dest
                    && let Some(l) = self.links.get_mut(&a)
                {
                    let _ = l
                        .rtf
                        .send(&RtfConfig::default(), t.ppid, t.stream, false, t.payload);
                }
            }
            Output::Connect {
                assoc,
                addrs,
                channel,
                ..
            } => {
                // The association gets the id the machine chose; addresses tried in order.
                let connected = addrs
                    .iter()
                    .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).ok())
                    .ok_or(());
                match connected {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        let rtf = RtfConnection::connector(
                            kind(channel),
                            RtfConfig::default(),
                            now.as_micros(),
                        );
                        self.add_link(assoc, s, rtf);
                    }
                    Err(_) => self.downs.push((assoc, AssocDownReason::ConnectFailed)),
                }
            }
            Output::Close { assoc, .. } => {
                if let Some(l) = self.links.remove(&assoc) {
                    let _ = l.stream.shutdown(Shutdown::Both);
                    self.downs.push((assoc, AssocDownReason::Closed));
                }
            }
            Output::Event(_) => unreachable!("events go to the application"),
        }
    }

    /// Carries out outputs and feeds RTF events until nothing moves; false once the
    /// application asked to stop.
    fn settle(&mut self, on_event: &mut impl FnMut(&mut M, M::Event) -> bool) -> bool {
        let (now, mut go) = (self.now(), true);
        loop {
            let mut progress = false;
            while let Some(o) = self.machine.poll_output() {
                progress = true;
                match o {
                    Output::Event(e) => go &= on_event(&mut self.machine, e),
                    o => self.output(now, o),
                }
            }
            if let Some((a, r)) = self.downs.pop() {
                self.machine.handle_assoc_down(now, a, r);
                continue;
            }
            let mut rtf_events = Vec::new();
            for (id, l) in &mut self.links {
                while let Some(chunk) = l.rtf.poll_transmit(now.as_micros()) {
                    let _ = l.stream.write_all(&chunk);
                }
                while let Some(e) = l.rtf.poll_event() {
                    rtf_events.push((*id, e, l.stream.peer_addr().ok()));
                }
            }
            for (id, e, peer) in rtf_events {
                progress = true;
                match e {
                    RtfEvent::Up { .. } => {
                        let peer: Vec<SocketAddr> = peer.into_iter().collect();
                        self.machine.handle_assoc_up(now, id, &peer)
                    }
                    RtfEvent::Data { ppid, payload, .. } => {
                        self.machine.handle_message(now, id, ppid, payload)
                    }
                    RtfEvent::PeerShutdown | RtfEvent::Dead | RtfEvent::ProtocolError(_) => {
                        self.links.remove(&id);
                        self.machine
                            .handle_assoc_down(now, id, AssocDownReason::Lost);
                    }
                }
            }
            if !progress {
                return go;
            }
        }
    }

    /// Runs until `on_event` returns false.
    fn run(&mut self, mut on_event: impl FnMut(&mut M, M::Event) -> bool) {
        while self.settle(&mut on_event) {
            // Block until input or the earliest deadline (machine, RTF heartbeats).
            let (cfg, before) = (RtfConfig::default(), self.now().as_micros());
            let rtf = self
                .links
                .values()
                .filter_map(|l| l.rtf.poll_timeout(&cfg, before))
                .min();
            let machine = self.machine.poll_timeout().map(Instant::as_micros);
            let deadline = rtf.into_iter().chain(machine).min().unwrap_or(u64::MAX);
            let wait = Duration::from_micros(deadline.saturating_sub(self.now().as_micros()));
            let input = self.rx.recv_timeout(wait.min(Duration::from_secs(1)));
            let now = self.now();
            match input {
                Ok(Input::Accepted(s)) => {
                    let id = AssocId(self.next_id); // driver-chosen ids: top bit clear
                    self.next_id += 1;
                    let rtf = RtfConnection::acceptor(
                        ChannelKinds::all(),
                        RtfConfig::default(),
                        now.as_micros(),
                    );
                    self.add_link(id, s, rtf);
                }
                Ok(Input::Bytes(id, b)) => {
                    if let Some(l) = self.links.get_mut(&id) {
                        l.rtf.handle_input(&cfg, now.as_micros(), &b);
                    }
                }
                Ok(Input::Eof(id)) => {
                    if let Some(l) = self.links.get_mut(&id) {
                        l.rtf.handle_eof(now.as_micros());
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            // Timers: RTF heartbeats and dead peers, then the machine's.
            self.links
                .values_mut()
                .for_each(|l| l.rtf.handle_timeout(&cfg, now.as_micros()));
            if self.machine.poll_timeout().is_some_and(|t| t <= now) {
                self.machine.handle_timeout(now);
            }
        }
    }
}

fn main() {
    let epoch = std::time::Instant::now();
    let localhost = "127.0.0.1:0".parse::<SocketAddr>().unwrap();

    // The registrar: ASAP over the TCP mapping, loopback addresses accepted, no multicast.
    let asap = TcpListener::bind(localhost).unwrap();
    let asap_addr = asap.local_addr().unwrap();
    let config = RegistrarConfig {
        min_address_scope: AddressScope::Loopback,
        asap_announce: None,
        enrp_announce: None,
        ..RegistrarConfig::default()
    };
    let rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let registrar = Registrar::new(config, Instant::ZERO, rng);
    std::thread::spawn(move || {
        BlockingLoop::new(registrar, epoch, Some(asap)).run(|_, e| {
            println!("registrar: {e:?}");
            true
        })
    });

    let table = RegistrarTableConfig {
        static_registrars: vec![StaticRegistrar::tcp([asap_addr])],
        use_announces: false,
        ..RegistrarTableConfig::default()
    };

    // The pool element: registers its (here idle) session listener's port.
    let sessions = TcpListener::bind(localhost).unwrap();
    let port = sessions.local_addr().unwrap().port();
    let mut pe_config = PoolElementConfig::new(
        "BlockingPool",
        TransportProtocol::Tcp,
        port,
        [localhost.ip()],
    );
    pe_config.registrar_table = table.clone();
    let mut pe = PoolElement::new(pe_config, Xoshiro256PlusPlus::seed_from_u64(2)).unwrap();
    let pe_id = pe.pe_id();
    pe.register(Instant::ZERO);
    let (registered_tx, registered) = channel();
    std::thread::spawn(move || {
        BlockingLoop::new(pe, epoch, Some(sessions)).run(|_, e| {
            println!("pool element: {e:?}");
            if matches!(e, PoolElementEvent::Registered { .. }) {
                let _ = registered_tx.send(());
            }
            true
        })
    });
    registered
        .recv_timeout(Duration::from_secs(10))
        .expect("registered in time");

    // The pool user, on this thread: resolve the pool, then stop.
    let pu_config = PoolUserConfig {
        registrar_table: table,
        ..PoolUserConfig::default()
    };
    let mut pu = PoolUser::new(pu_config, Xoshiro256PlusPlus::seed_from_u64(3));
    let start = std::time::Instant::now();
    pu.resolve(
        Instant::from_micros(epoch.elapsed().as_micros() as u64),
        "BlockingPool".into(),
        4,
    );
    let mut found = Vec::new();
    BlockingLoop::new(pu, epoch, None).run(|_, e| {
        println!("pool user: {e:?}");
        if let PoolUserEvent::Resolved { elements, .. } = e {
            found = elements.iter().map(|e| e.pe_id).collect();
        }
        false
    });
    println!("resolved in {:?}: {found:?}", start.elapsed());
    assert_eq!(found, vec![pe_id], "the pool user found the pool element");
}
