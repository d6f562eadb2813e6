//! The async driver as a [`Runtime`], through its embedding API (`rserpool_async_std`):
//! each component's driver runs in a thread of its own (the default spawner), the test
//! thread blocks on the API's futures. Killing a component drops its driver task at once.

use super::*;
use futures_lite::StreamExt;
use futures_lite::future::block_on;
use rserpool_async_std as rsp;

/// Runs `f` to completion on this thread, failing after [`LIMIT`].
fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    block_on(futures_lite::future::or(f, async {
        async_io::Timer::after(LIMIT).await;
        panic!("async operation did not finish within {LIMIT:?}");
    }))
}

/// The async-io runtime.
pub struct Async;

struct AsyncRegistrar {
    r: rsp::Registrar,
}

impl RegistrarHandle for AsyncRegistrar {
    fn asap_addr(&self) -> SocketAddr {
        self.r.asap_addr()
    }
    fn enrp_addr(&self) -> SocketAddr {
        self.r.enrp_addr()
    }
    fn server_id(&self) -> ServerId {
        self.r.server_id()
    }
    fn elements(&self, pool: &str) -> Vec<(PeIdentifier, ServerId)> {
        let pool = PoolHandle::from(pool);
        run(self.r.inspect(move |r| listed(r, &pool))).unwrap()
    }
    fn kill(self: Box<Self>) {
        run(self.r.kill());
    }
}

struct AsyncPe {
    pe: rsp::PoolElement,
    echoes: Echoes,
}

impl PeHandle for AsyncPe {
    fn pe_id(&self) -> PeIdentifier {
        self.pe.pe_id()
    }
    fn home(&self) -> Option<ServerId> {
        self.pe
            .is_registered()
            .then(|| self.pe.home_registrar())
            .flatten()
    }
    fn cookie_echoes(&self) -> Vec<Bytes> {
        self.echoes.lock().unwrap().clone()
    }
    fn kill(self: Box<Self>) {
        run(self.pe.kill());
    }
}

struct AsyncClient {
    s: rsp::Session,
}

impl ClientHandle for AsyncClient {
    fn send(&mut self, data: &[u8]) {
        run(self.s.send_msg(PPID, Bytes::copy_from_slice(data))).expect("message sent");
    }
    fn recv(&mut self, timeout: Duration) -> Option<Bytes> {
        block_on(futures_lite::future::or(
            async { self.s.recv_msg().await.ok().map(|m| m.data) },
            async {
                async_io::Timer::after(timeout).await;
                None
            },
        ))
    }
    fn pe_id(&self) -> Option<PeIdentifier> {
        self.s.pe_id()
    }
    fn failovers(&self) -> u64 {
        self.s.failovers()
    }
    fn close(self: Box<Self>) {
        run(self.s.close()).unwrap();
    }
}

fn user_config(registrars: &[SocketAddr]) -> rsp::PoolUserConfig {
    rsp::PoolUserConfig {
        registrars: registrars.to_vec(),
        mode: rsp::TransportMode::Tcp,
        session: session_config(registrars),
        ppid: PPID,
        establish_timeout: LIMIT,
        seed: Some(seed()),
        ..rsp::PoolUserConfig::default()
    }
}

impl Runtime for Async {
    fn name(&self) -> &'static str {
        "async"
    }

    fn start_registrar(&self, peers: &[SocketAddr]) -> Box<dyn RegistrarHandle> {
        let mut config = rsp::RegistrarConfig::local(LOCALHOST);
        config.mode = rsp::TransportMode::Tcp;
        config.core = registrar_config(0, 0, peers.to_vec());
        config.seed = Some(seed());
        Box::new(AsyncRegistrar {
            r: run(rsp::Registrar::start(config)).unwrap(),
        })
    }

    fn start_echo_pe(&self, pool: &str, registrars: &[SocketAddr]) -> Box<dyn PeHandle> {
        let core = pe_config(pool, 1, registrars);
        let mut config = rsp::PoolElementConfig::new(pool)
            .listen(SocketAddr::new(LOCALHOST, 0))
            .mode(rsp::TransportMode::Tcp);
        config.registrars = registrars.to_vec();
        config.request_timeout = core.request_timeout;
        config.registrar_table = core.registrar_table;
        config.seed = Some(seed());
        let pe = run(rsp::PoolElement::register(config)).unwrap();
        let echoes = Echoes::default();
        let (cookie, mut incoming, echoes2) =
            (cookie_of(pe.pe_id()), pe.incoming(), echoes.clone());
        std::thread::spawn(move || {
            block_on(async move {
                while let Some(mut s) = incoming.next().await {
                    let (cookie, echoes) = (cookie.clone(), echoes2.clone());
                    std::thread::spawn(move || {
                        block_on(async move {
                            if s.send_cookie(cookie).await.is_err() {
                                return;
                            }
                            loop {
                                match s.recv_event().await {
                                    Ok(rsp::ServerEvent::CookieEcho(c)) => {
                                        echoes.lock().unwrap().push(c)
                                    }
                                    Ok(rsp::ServerEvent::Message(m)) => {
                                        if s.send(m.ppid, m.data).await.is_err() {
                                            return;
                                        }
                                    }
                                    Ok(rsp::ServerEvent::BusinessCard(_)) => {}
                                    Err(_) => return,
                                }
                            }
                        })
                    });
                }
            })
        });
        Box::new(AsyncPe { pe, echoes })
    }

    fn connect_client(&self, pool: &str, registrars: &[SocketAddr]) -> Box<dyn ClientHandle> {
        let s = run(rsp::PoolUser::connect(pool, user_config(registrars))).unwrap();
        Box::new(AsyncClient { s })
    }

    fn resolve(&self, pool: &str, registrars: &[SocketAddr]) -> Vec<PeIdentifier> {
        let mut config = user_config(registrars);
        config.resolve_items = ALL_ITEMS;
        match run(rsp::resolve(pool, config)) {
            Ok(elements) => elements.iter().map(|e| e.pe_id).collect(),
            Err(rsp::Error::Resolution(_)) => Vec::new(),
            Err(e) => panic!("resolution: {e}"),
        }
    }
}
