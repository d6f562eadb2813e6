//! The embedding API end to end over RTF/TCP on 127.0.0.1: a registrar, echo PEs, a pool
//! user session (byte stream and messages), failover with cookie echo, resolution,
//! deregistration, load updates. Every scenario runs under async-std's executor and under
//! `futures_lite::future::block_on`, bounded in time.

mod common;

use bytes::Bytes;
use futures_lite::io::BufReader;
use futures_lite::{AsyncBufReadExt, AsyncWriteExt, StreamExt};
use rserpool_async_std::{
    Error, Notification, Policy, PoolElement, PoolElementConfig, PoolUser, PoolUserConfig,
    Registrar, RegistrarConfig, ServerEvent, TransportMode, resolve,
};
use rserpool_core::session::FailoverReason;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PPID: u32 = 4242;

async fn registrar() -> Registrar {
    registrar_in(TransportMode::Tcp).await
}

/// A registrar; under `Auto` on SCTP and the TCP mapping at one port.
async fn registrar_in(mode: TransportMode) -> Registrar {
    let mut c = RegistrarConfig {
        mode,
        ..RegistrarConfig::local(LOCALHOST)
    };
    c.core.timers.keep_alive_transmission_interval = Duration::from_millis(100);
    Registrar::start(c).await.unwrap()
}

fn pe_config(pool: &str, registrar: SocketAddr) -> PoolElementConfig {
    pe_config_in(pool, registrar, TransportMode::Tcp)
}

fn pe_config_in(pool: &str, registrar: SocketAddr, mode: TransportMode) -> PoolElementConfig {
    PoolElementConfig::new(pool)
        .registrar(registrar)
        .listen(SocketAddr::new(LOCALHOST, 0))
        .mode(mode)
}

fn pu_config(registrar: SocketAddr) -> PoolUserConfig {
    pu_config_in(registrar, TransportMode::Tcp)
}

fn pu_config_in(registrar: SocketAddr, mode: TransportMode) -> PoolUserConfig {
    let mut c = PoolUserConfig::default().registrar(registrar).mode(mode);
    c.ppid = PPID;
    c
}

/// Cookie echoes the echo PEs received: (PE id, cookie).
type Echoes = Arc<Mutex<Vec<(u32, Bytes)>>>;

/// An echo PE: every session gets the cookie "pe=<id>" first; each message is echoed.
async fn echo_pe(pool: &str, registrar: SocketAddr, echoes: Echoes) -> PoolElement {
    echo_pe_in(pool, registrar, echoes, TransportMode::Tcp).await
}

async fn echo_pe_in(
    pool: &str,
    registrar: SocketAddr,
    echoes: Echoes,
    mode: TransportMode,
) -> PoolElement {
    let pe = PoolElement::register(pe_config_in(pool, registrar, mode))
        .await
        .unwrap();
    let id = pe.pe_id().0;
    let mut incoming = pe.incoming();
    std::thread::spawn(move || {
        futures_lite::future::block_on(async move {
            while let Some(mut s) = incoming.next().await {
                let echoes = echoes.clone();
                std::thread::spawn(move || {
                    futures_lite::future::block_on(async move {
                        if s.send_cookie(format!("pe={id}")).await.is_err() {
                            return;
                        }
                        loop {
                            match s.recv_event().await {
                                Ok(ServerEvent::CookieEcho(c)) => {
                                    echoes.lock().unwrap().push((id, c))
                                }
                                Ok(ServerEvent::Message(m)) => {
                                    if s.send(m.ppid, m.data).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(ServerEvent::BusinessCard(_)) => {}
                                Err(_) => return,
                            }
                        }
                    })
                });
            }
        })
    });
    pe
}

async fn registration_resolution_and_byte_stream() {
    let r = registrar().await;
    let echoes = Echoes::default();
    let pe1 = echo_pe("EchoPool", r.asap_addr(), echoes.clone()).await;
    let pe2 = echo_pe("EchoPool", r.asap_addr(), echoes.clone()).await;
    assert!(pe1.is_registered() && pe2.is_registered());
    // Known with the first keep-alive.
    assert_eq!(pe1.wait_home(None).await, r.server_id());
    assert_eq!(pe1.home_registrar(), Some(r.server_id()));
    let listed = r.pool_elements("EchoPool").await.unwrap();
    let mut ids: Vec<u32> = listed.iter().map(|e| e.pe_id.0).collect();
    ids.sort_unstable();
    let mut want = vec![pe1.pe_id().0, pe2.pe_id().0];
    want.sort_unstable();
    assert_eq!(ids, want);

    // Basic mode.
    let resolved = resolve("EchoPool", pu_config(r.asap_addr())).await.unwrap();
    let mut got: Vec<u32> = resolved.iter().map(|e| e.pe_id.0).collect();
    got.sort_unstable();
    assert_eq!(got, want);
    match resolve("NoSuchPool", pu_config(r.asap_addr())).await {
        Err(Error::Resolution(_)) => {}
        other => panic!("expected a resolution failure, got {other:?}"),
    }

    // A session as a byte stream.
    let session = PoolUser::connect("EchoPool", pu_config(r.asap_addr()))
        .await
        .unwrap();
    let first = session.pe_id().unwrap();
    assert!(want.contains(&first.0));
    let (reader, mut writer) = futures_lite::io::split(session);
    let mut reader = BufReader::new(reader);
    for i in 0..20 {
        writer
            .write_all(format!("line {i}\n").as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        assert_eq!(line, format!("line {i}\n"));
    }
    writer.close().await.unwrap();
    let mut rest = String::new();
    assert_eq!(
        reader.read_line(&mut rest).await.unwrap(),
        0,
        "EOF after close"
    );

    // Deregistration (Round Robin has no load).
    assert!(matches!(pe1.set_load(5).await, Err(Error::NoLoad)));
    assert!(
        pe1.deregister().await.unwrap(),
        "deregistration acknowledged"
    );
    assert!(!pe1.is_registered());
    let listed = r.pool_elements("EchoPool").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].pe_id, pe2.pe_id());
    pe1.shutdown().await.unwrap();
    pe2.shutdown().await.unwrap();
    assert!(r.pool_elements("EchoPool").await.unwrap().is_empty());
    r.shutdown().await;
}
on_both!(registration_resolution_and_byte_stream);

/// Load updates reach the registrar (a pool of Least Used PEs).
async fn load_updates() {
    let r = registrar().await;
    let mut config = pe_config("LoadPool", r.asap_addr());
    config.policy = Policy::LeastUsed { load: 0 };
    let pe = PoolElement::register(config).await.unwrap();
    let id = pe.pe_id();
    let policy_at_registrar = || {
        r.inspect(move |r| {
            r.handlespace()
                .get(&"LoadPool".into(), id)
                .map(|e| e.policy())
        })
    };
    assert_eq!(
        policy_at_registrar().await.unwrap(),
        Some(Policy::LeastUsed { load: 0 })
    );
    // Returns once the registrar accepted the new load.
    pe.set_load(0x1000).await.unwrap();
    assert_eq!(
        policy_at_registrar().await.unwrap(),
        Some(Policy::LeastUsed { load: 0x1000 })
    );
    pe.set_policy(Policy::LeastUsed { load: 7 }).await.unwrap();
    assert!(
        pe.deregister().await.unwrap(),
        "deregistration acknowledged"
    );
    assert_eq!(policy_at_registrar().await.unwrap(), None);
    pe.shutdown().await.unwrap();
    r.shutdown().await;
}
on_both!(load_updates);

async fn failover_after_pe_kill() {
    failover_in(TransportMode::Tcp).await;
}
on_both!(failover_after_pe_kill);

/// The same over kernel SCTP (PEs and the pool user on SCTP; the registrar on both): runs in
/// `shared/tools/sctp-vm`, skipped on hosts without SCTP.
async fn failover_over_sctp() {
    if !rserpool_async_std::transport::sctp_available() {
        eprintln!("no kernel SCTP here: skipped");
        return;
    }
    failover_in(TransportMode::Sctp).await;
}
on_both!(failover_over_sctp);

/// A registrar with fast ENRP and keep-alive timers (takeover within about a second),
/// statically peered with the registrars at `peers` (ENRP addresses).
async fn fast_registrar(mode: TransportMode, peers: &[SocketAddr]) -> Registrar {
    let mut c = RegistrarConfig {
        mode,
        ..RegistrarConfig::local(LOCALHOST)
    };
    for p in peers {
        c = c.peer(*p);
    }
    let t = &mut c.core.timers;
    t.keep_alive_transmission_interval = Duration::from_millis(200);
    t.keep_alive_timeout_interval = Duration::from_millis(300);
    t.peer_heartbeat_cycle = Duration::from_millis(200);
    t.peer_max_time_last_heard = Duration::from_millis(500);
    t.peer_max_time_no_response = Duration::from_millis(300);
    t.mentor_discovery_timeout = Duration::from_millis(200);
    t.takeover_expiry_interval = Duration::from_millis(500);
    Registrar::start(c).await.unwrap()
}

/// ENRP takeover of an async PE over kernel SCTP: the PE's association to its registrar
/// leaves from its ASAP endpoint, so the ASAP transport the registrars record for it is
/// that listening port; when the home registrar dies, the survivor takes the PE over and
/// reaches it there (keep-alive with the H bit), and the PE adopts the new home. Runs in
/// `shared/tools/sctp-vm`, skipped on hosts without SCTP.
async fn takeover_over_sctp() {
    if !rserpool_async_std::transport::sctp_available() {
        eprintln!("no kernel SCTP here: skipped");
        return;
    }
    let r1 = fast_registrar(TransportMode::Sctp, &[]).await;
    let r2 = fast_registrar(TransportMode::Sctp, &[r1.enrp_addr()]).await;
    let pe = echo_pe_in(
        "TakePool",
        r1.asap_addr(),
        Echoes::default(),
        TransportMode::Sctp,
    )
    .await;
    let asap = pe.asap_addrs().to_vec();
    assert_eq!(asap.len(), 1, "one ASAP endpoint over SCTP: {asap:?}");
    assert_ne!(asap[0].port(), 0);
    assert_ne!(asap[0].port(), pe.local_addrs()[0].port());
    let id = pe.pe_id();
    let recorded = r1
        .inspect(move |r| {
            r.handlespace()
                .pool(&"TakePool".into())
                .and_then(|p| p.elements().find(|e| e.pe_id() == id))
                .and_then(|e| e.asap_transport())
        })
        .await
        .unwrap()
        .expect("the registrar records the PE's ASAP transport");
    assert_eq!(
        recorded.port,
        asap[0].port(),
        "the registration came from the ASAP endpoint's port"
    );
    // Both registrars list the PE, homed at r1.
    loop {
        let l2 = r2.pool_elements("TakePool").await.unwrap();
        if l2.len() == 1 && l2[0].home == r1.server_id() {
            break;
        }
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
    let (r1_id, r2_id) = (r1.server_id(), r2.server_id());
    assert_eq!(pe.wait_home(None).await, r1_id);
    let killed = std::time::Instant::now();
    r1.kill().await;
    assert_eq!(pe.wait_home(Some(r1_id)).await, r2_id);
    eprintln!("SCTP takeover: kill -> PE re-homed {:?}", killed.elapsed());
    let l2 = r2.pool_elements("TakePool").await.unwrap();
    assert_eq!(l2.len(), 1);
    assert_eq!((l2[0].pe_id, l2[0].home), (id, r2_id));
    // Still served through the new home.
    let mut session = PoolUser::connect(
        "TakePool",
        pu_config_in(r2.asap_addr(), TransportMode::Sctp),
    )
    .await
    .unwrap();
    session.send_msg(PPID, "taken over").await.unwrap();
    assert_eq!(&session.recv_msg().await.unwrap().data[..], b"taken over");
    session.close().await.unwrap();
    pe.shutdown().await.unwrap();
    r2.shutdown().await;
}
on_both!(takeover_over_sctp);

async fn failover_in(mode: TransportMode) {
    let r = registrar_in(TransportMode::Auto).await;
    let echoes = Echoes::default();
    let pe1 = echo_pe_in("FailPool", r.asap_addr(), echoes.clone(), mode).await;
    let pe2 = echo_pe_in("FailPool", r.asap_addr(), echoes.clone(), mode).await;
    let mut session = PoolUser::connect("FailPool", pu_config_in(r.asap_addr(), mode))
        .await
        .unwrap();
    let mut notices = session.events();
    session.send_msg(PPID, "one").await.unwrap();
    let m = session.recv_msg().await.unwrap();
    assert_eq!((m.ppid, &m.data[..]), (PPID, &b"one"[..]));
    let serving = session.pe_id().unwrap();
    let cookie = session.cookie().expect("the PE sent a cookie");
    assert_eq!(cookie, Bytes::from(format!("pe={}", serving.0)));
    let (victim, survivor) = if serving == pe1.pe_id() {
        (pe1, pe2)
    } else {
        (pe2, pe1)
    };
    let killed = std::time::Instant::now();
    victim.kill().await;
    // Sent right after the kill: queued or replayed, never lost.
    session.send_msg(PPID, "two").await.unwrap();
    let m = session.recv_msg().await.unwrap();
    assert_eq!(&m.data[..], b"two");
    eprintln!("{mode:?}: kill -> first echo {:?}", killed.elapsed());
    assert_eq!(session.pe_id(), Some(survivor.pe_id()));
    assert_eq!(session.failovers(), 1);
    let mut seen = Vec::new();
    while let Some(n) = notices.next().await {
        let done = matches!(n, Notification::FailoverComplete { .. });
        seen.push(n);
        if done {
            break;
        }
    }
    assert!(seen.iter().any(|n| matches!(
        n,
        Notification::FailoverStarted { pe_id, reason: FailoverReason::Shutdown | FailoverReason::AssociationLost }
            if *pe_id == serving
    )));
    assert!(seen.iter().any(|n| matches!(
        n,
        Notification::FailoverComplete { pe_id, has_cookie: true, .. } if *pe_id == survivor.pe_id()
    )));
    assert_eq!(
        echoes.lock().unwrap().as_slice(),
        &[(survivor.pe_id().0, cookie)],
        "the survivor got the victim's cookie"
    );
    session.close().await.unwrap();
    survivor.shutdown().await.unwrap();
    r.shutdown().await;
}

async fn configuration_errors() {
    let e = PoolElement::register(PoolElementConfig::new("X")).await;
    assert!(matches!(e, Err(Error::Config(_))), "{e:?}");
    let e = PoolUser::connect("X", PoolUserConfig::default()).await;
    assert!(matches!(e, Err(Error::Config(_))), "{e:?}");
    let e =
        PoolElement::register(PoolElementConfig::new("").registrar("127.0.0.1:1".parse().unwrap()))
            .await;
    assert!(matches!(e, Err(Error::Config(_))), "{e:?}");
    // Nobody listens there: the hunt fails.
    let mut c = pe_config("X", "127.0.0.1:1".parse().unwrap());
    c.registrar_table.connect_timeout = Duration::from_millis(300);
    let e = PoolElement::register(c).await;
    assert!(matches!(e, Err(Error::Registration(_))), "{e:?}");
    let mut c = pu_config("127.0.0.1:1".parse().unwrap());
    c.establish_timeout = Duration::from_millis(500);
    let e = PoolUser::connect("X", c).await;
    assert!(matches!(e, Err(Error::Timeout(_))), "{e:?}");
}
on_both!(configuration_errors);

/// A pool user that stops reading: the PE's sends wait once its send buffer is queued,
/// instead of overflowing the transport queue (which would abort the association), and
/// every message arrives once the peer reads again.
async fn send_waits_for_a_slow_reader() {
    use rserpool_proto::rtf::{ChannelKind, Frame, FrameDecoder, Hello};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    const N: usize = 512;
    const SIZE: usize = 32 * 1024;

    let r = registrar().await;
    let mut config = pe_config("SlowPool", r.asap_addr());
    config.send_buffer = 64 * 1024;
    let pe = PoolElement::register(config).await.unwrap();
    // A bare TCP-mapping peer: HELLO for a session, then nothing read for a while.
    let mut peer = std::net::TcpStream::connect(pe.local_addrs()[0]).unwrap();
    let hello = Frame::Hello(Hello {
        channel_kind: ChannelKind::Session,
        heartbeat_interval_ms: 60_000,
    });
    peer.write_all(&hello.to_bytes()).unwrap();
    let session = pe.accept().await.unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent2 = sent.clone();
    let sender = session.sender();
    let (pushed_tx, pushed) = async_channel::bounded(1);
    std::thread::spawn(move || {
        futures_lite::future::block_on(async move {
            for i in 0..N {
                let mut m = vec![0u8; SIZE];
                m[..8].copy_from_slice(&(i as u64).to_be_bytes());
                sender.send(PPID, m).await.unwrap();
                sent2.fetch_add(1, Ordering::SeqCst);
            }
        });
        pushed_tx.send_blocking(()).unwrap();
    });
    async_io::Timer::after(Duration::from_millis(500)).await;
    let stalled_at = sent.load(Ordering::SeqCst);
    assert!(
        stalled_at < N,
        "sends wait for the reader (all {N} were accepted)"
    );
    // Now read everything: every message, in order, on an association that stayed up.
    let (read_tx, read) = async_channel::bounded(1);
    std::thread::spawn(move || {
        let (mut dec, mut frames, mut buf) =
            (FrameDecoder::default(), Vec::new(), vec![0u8; 1 << 16]);
        let mut next = 0u64;
        while next < N as u64 {
            let n = peer.read(&mut buf).unwrap();
            assert!(n > 0, "the PE closed the session after {next} messages");
            dec.decode_into(&buf[..n], &mut frames).unwrap();
            for f in frames.drain(..) {
                if let Frame::Data { ppid, payload, .. } = f {
                    assert_eq!(ppid, PPID);
                    assert_eq!(payload.len(), SIZE);
                    assert_eq!(payload[..8], next.to_be_bytes());
                    next += 1;
                }
            }
        }
        read_tx.send_blocking(next).unwrap();
    });
    let received = read.recv().await.unwrap();
    pushed.recv().await.unwrap();
    assert_eq!(received, N as u64);
    assert_eq!(sent.load(Ordering::SeqCst), N);
    eprintln!("sender stalled at {stalled_at} of {N} messages of {SIZE} bytes");
    drop(session);
    pe.shutdown().await.unwrap();
    r.shutdown().await;
}
on_both!(send_waits_for_a_slow_reader);

/// Dropping a `PoolElement` deregisters it.
async fn dropping_a_pe_deregisters() {
    let r = registrar().await;
    let pe = PoolElement::register(pe_config("DropPool", r.asap_addr()))
        .await
        .unwrap();
    assert_eq!(r.pool_elements("DropPool").await.unwrap().len(), 1);
    let mut events = r.events();
    drop(pe);
    loop {
        if r.pool_elements("DropPool").await.unwrap().is_empty() {
            break;
        }
        let _ = futures_lite::future::or(
            async {
                events.next().await;
            },
            async {
                async_io::Timer::after(Duration::from_millis(20)).await;
            },
        )
        .await;
    }
    r.shutdown().await;
}
on_both!(dropping_a_pe_deregisters);
