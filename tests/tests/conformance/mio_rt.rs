//! The mio driver as a [`Runtime`]: every machine runs in a thread of its own driving
//! `rserpool_mio::driver::Driver`; commands reach it through a channel and a `mio::Waker`.
//! Killing a component stops the loop and drops the driver: its sockets are closed by the
//! kernel, as after `kill -9`.

use super::*;
use rserpool_mio::driver::{Bound, Driver, DriverConfig, ListenerConfig};
use rserpool_mio::transport::{TransportKind, TransportMode};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

type Command<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

/// A machine running on a mio driver in its own thread.
struct Host<M> {
    commands: mpsc::Sender<Command<M>>,
    waker: Arc<mio::Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<M: Machine + 'static> Host<M> {
    /// Starts the driver; returns the host and the sockets it bound.
    fn spawn(
        config: DriverConfig,
        make: impl FnOnce(&Bound, Instant) -> M + Send + 'static,
        setup: impl FnOnce(&mut Driver<M>) + Send + 'static,
        mut on_event: impl FnMut(&mut M, Instant, M::Event) + Send + 'static,
    ) -> (Host<M>, Bound)
    where
        M::Event: Send,
    {
        let (tx, rx) = mpsc::channel::<Command<M>>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut driver = Driver::new(config, make).expect("mio driver");
            setup(&mut driver);
            let token = driver.app_token(0).expect("an application token");
            let waker = Arc::new(mio::Waker::new(driver.registry(), token).expect("waker"));
            ready_tx.send((waker, driver.bound().clone())).unwrap();
            let _ = driver.run(|step| {
                if stop2.load(Ordering::Acquire) {
                    return ControlFlow::Break(());
                }
                while let Ok(c) = rx.try_recv() {
                    c(step.machine, step.now);
                }
                for e in step.events.drain(..) {
                    on_event(step.machine, step.now, e);
                }
                ControlFlow::Continue(())
            });
            // The driver is dropped here: every socket closes at once.
        });
        let (waker, bound) = ready_rx.recv_timeout(LIMIT).expect("driver started");
        (
            Host {
                commands: tx,
                waker,
                stop,
                thread: Some(thread),
            },
            bound,
        )
    }

    /// Runs `f` on the machine in the driver thread and returns its result.
    fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut M, Instant) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Box::new(move |m, now| {
                let _ = tx.send(f(m, now));
            }))
            .expect("driver running");
        self.waker.wake().unwrap();
        rx.recv_timeout(LIMIT).expect("driver answered")
    }

    fn kill(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl<M> Drop for Host<M> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tcp_listener(channels: impl Into<ChannelKinds>) -> ListenerConfig {
    ListenerConfig::new(vec![SocketAddr::new(LOCALHOST, 0)], channels).with_kind(TransportKind::Tcp)
}

fn driver_config(listeners: Vec<ListenerConfig>) -> DriverConfig {
    DriverConfig {
        mode: TransportMode::Tcp,
        listeners,
        ..DriverConfig::default()
    }
}

/// The mio runtime.
pub struct Mio;

struct MioRegistrar {
    host: Host<Registrar>,
    asap: SocketAddr,
    enrp: SocketAddr,
    id: ServerId,
}

impl RegistrarHandle for MioRegistrar {
    fn asap_addr(&self) -> SocketAddr {
        self.asap
    }
    fn enrp_addr(&self) -> SocketAddr {
        self.enrp
    }
    fn server_id(&self) -> ServerId {
        self.id
    }
    fn elements(&self, pool: &str) -> Vec<(PeIdentifier, ServerId)> {
        let pool = PoolHandle::from(pool);
        self.host.call(move |r, _| listed(r, &pool))
    }
    fn kill(mut self: Box<Self>) {
        self.host.kill();
    }
}

struct MioPe {
    host: Host<PoolElementSessions<Xoshiro256PlusPlus>>,
    pe_id: PeIdentifier,
    echoes: Echoes,
}

impl PeHandle for MioPe {
    fn pe_id(&self) -> PeIdentifier {
        self.pe_id
    }
    fn home(&self) -> Option<ServerId> {
        self.host.call(|m, _| {
            let e = m.element();
            e.is_registered()
                .then(|| e.home_registrar().and_then(|h| h.server_id))
                .flatten()
        })
    }
    fn cookie_echoes(&self) -> Vec<Bytes> {
        self.echoes.lock().unwrap().clone()
    }
    fn kill(mut self: Box<Self>) {
        self.host.kill();
    }
}

struct MioClient {
    host: Host<PoolUserSession<Xoshiro256PlusPlus>>,
    data: mpsc::Receiver<Bytes>,
    failovers: Arc<Mutex<u64>>,
}

impl ClientHandle for MioClient {
    fn send(&mut self, data: &[u8]) {
        let data = Bytes::copy_from_slice(data);
        self.host
            .call(move |s, now| s.send(now, PPID, data))
            .expect("session accepts the message");
    }
    fn recv(&mut self, timeout: Duration) -> Option<Bytes> {
        self.data.recv_timeout(timeout).ok()
    }
    fn pe_id(&self) -> Option<PeIdentifier> {
        self.host.call(|s, _| {
            (s.state() == rserpool_core::session::SessionState::Connected)
                .then(|| s.pe_id())
                .flatten()
        })
    }
    fn failovers(&self) -> u64 {
        *self.failovers.lock().unwrap()
    }
    fn close(mut self: Box<Self>) {
        self.host.call(|s, now| s.close(now));
        self.host.kill();
    }
}

impl Runtime for Mio {
    fn name(&self) -> &'static str {
        "mio"
    }

    fn start_registrar(&self, peers: &[SocketAddr]) -> Box<dyn RegistrarHandle> {
        let peers = peers.to_vec();
        let config = driver_config(vec![
            tcp_listener(ChannelKind::AsapToRegistrar),
            tcp_listener(ChannelKind::Enrp),
        ]);
        let (id_tx, id_rx) = mpsc::channel();
        let (host, bound) = Host::spawn(
            config,
            move |bound, now| {
                let port = |i: usize| bound.listeners[i].local_addrs[0].port();
                let r = Registrar::new(
                    registrar_config(port(0), port(1), peers),
                    now,
                    Xoshiro256PlusPlus::seed_from_u64(seed()),
                );
                let _ = id_tx.send(r.server_id());
                r
            },
            |_| {},
            |_, _, _| {},
        );
        Box::new(MioRegistrar {
            host,
            asap: bound.listeners[0].local_addrs[0],
            enrp: bound.listeners[1].local_addrs[0],
            id: id_rx.recv().unwrap(),
        })
    }

    fn start_echo_pe(&self, pool: &str, registrars: &[SocketAddr]) -> Box<dyn PeHandle> {
        let (pool, registrars) = (pool.to_owned(), registrars.to_vec());
        let echoes = Echoes::default();
        let echoes2 = echoes.clone();
        let (registered_tx, registered_rx) = mpsc::channel();
        let channels =
            ChannelKinds::from(ChannelKind::Session).with(ChannelKind::AsapFromRegistrar);
        let (host, _) = Host::spawn(
            driver_config(vec![tcp_listener(channels)]),
            move |bound, now| {
                let port = bound.listeners[0].local_addrs[0].port();
                let mut pe = PoolElementSessions::new(
                    pe_config(&pool, port, &registrars),
                    Xoshiro256PlusPlus::seed_from_u64(seed()),
                )
                .unwrap();
                pe.register(now);
                pe
            },
            |driver| {
                // Registrars taking the PE over come in on channel kind 2.
                driver.route_accepted(|pe, now, assoc, info, peer_addrs| {
                    if info.channel == Some(rserpool_core::ChannelKind::AsapToPoolElement) {
                        pe.handle_registrar_assoc_up(now, assoc, peer_addrs);
                    } else {
                        pe.handle_assoc_up(now, assoc, peer_addrs);
                    }
                });
            },
            move |pe, _, e| match e {
                PeSessionEvent::SessionOpened { session } => {
                    let cookie = cookie_of(pe.element().pe_id());
                    let _ = pe.send_cookie(session, cookie);
                }
                PeSessionEvent::Data {
                    session,
                    ppid,
                    data,
                } => {
                    let _ = pe.send(session, ppid, data);
                }
                PeSessionEvent::CookieEcho { cookie, .. } => {
                    echoes2.lock().unwrap().push(cookie);
                }
                PeSessionEvent::Registration(PoolElementEvent::Registered { pe_id, .. }) => {
                    let _ = registered_tx.send(pe_id);
                }
                _ => {}
            },
        );
        let pe_id = registered_rx
            .recv_timeout(LIMIT)
            .expect("mio PE registered");
        Box::new(MioPe {
            host,
            pe_id,
            echoes,
        })
    }

    fn connect_client(&self, pool: &str, registrars: &[SocketAddr]) -> Box<dyn ClientHandle> {
        let (pool, registrars) = (PoolHandle::from(pool), registrars.to_vec());
        let (data_tx, data_rx) = mpsc::channel();
        let (up_tx, up_rx) = mpsc::channel();
        let failovers = Arc::new(Mutex::new(0u64));
        let f2 = failovers.clone();
        let (host, _) = Host::spawn(
            driver_config(Vec::new()),
            move |_, now| {
                let mut s = PoolUserSession::new(
                    session_config(&registrars),
                    Xoshiro256PlusPlus::seed_from_u64(seed()),
                );
                s.connect(now, pool);
                s
            },
            |_| {},
            move |_, _, e| match e {
                SessionEvent::Connected { pe_id } => {
                    let _ = up_tx.send(pe_id);
                }
                SessionEvent::Data { data, .. } => {
                    let _ = data_tx.send(data);
                }
                SessionEvent::FailoverComplete { .. } => *f2.lock().unwrap() += 1,
                _ => {}
            },
        );
        up_rx.recv_timeout(LIMIT).expect("mio session connected");
        Box::new(MioClient {
            host,
            data: data_rx,
            failovers,
        })
    }

    fn resolve(&self, pool: &str, registrars: &[SocketAddr]) -> Vec<PeIdentifier> {
        let (pool, registrars) = (PoolHandle::from(pool), registrars.to_vec());
        let (tx, rx) = mpsc::channel();
        let (mut host, _) = Host::spawn(
            driver_config(Vec::new()),
            move |_, now| {
                let mut pu = PoolUser::new(
                    session_config(&registrars).pool_user,
                    Xoshiro256PlusPlus::seed_from_u64(seed()),
                );
                pu.resolve(now, pool, ALL_ITEMS);
                pu
            },
            |_| {},
            move |_, _, e| {
                let ids = match e {
                    PoolUserEvent::Resolved { elements, .. } => {
                        elements.iter().map(|e| e.pe_id).collect()
                    }
                    PoolUserEvent::ResolutionFailed { .. } => Vec::new(),
                };
                let _ = tx.send(ids);
            },
        );
        let ids = rx.recv_timeout(LIMIT).expect("mio resolution answered");
        host.kill();
        ids
    }
}
