//! Mutually authenticated TLS over the TCP mapping with the async embedding API, on
//! 127.0.0.1: a registrar that requires TLS for ASAP, a PE and a pool user with
//! certificates of the deployment's CA (registration, resolution, a session over TLS that
//! fails over to the second PE when the first goes), a plain PE and one with a stranger's
//! certificate that never get registered while the registrar keeps serving. Certificates are
//! made at test time with rcgen. Every scenario runs under async-std's executor and under
//! `futures_lite::future::block_on`, bounded in time.

mod common;
#[path = "../../rserpool-mio/tests/pki/mod.rs"]
mod pki;

use async_io::Timer;
use futures_lite::StreamExt;
use pki::{leaf, new_ca};
use rcgen::{Issuer, KeyPair};
use rserpool_async_std::{
    PoolElement, PoolElementConfig, PoolUser, PoolUserConfig, Registrar, RegistrarConfig,
    ServerEvent, TlsPolicy, TlsSettings, TransportConfig, TransportMode, resolve,
};
use rserpool_proto::rtf::{ChannelKind, ChannelKinds};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// TLS settings of a party with a certificate by `issuer`, trusting `ca_pem`.
fn party(name: &str, issuer: &Issuer<'static, KeyPair>, ca_pem: &str) -> Arc<TlsSettings> {
    let (cert, key) = leaf(name, issuer);
    Arc::new(
        TlsSettings::from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            ca_pem.as_bytes(),
            "rserpool",
        )
        .unwrap(),
    )
}

/// ASAP to registrars and sessions over TLS.
fn tls(settings: &Arc<TlsSettings>) -> TransportConfig {
    TransportConfig {
        tls: Some(TlsPolicy::new(
            settings.clone(),
            ChannelKinds::from(ChannelKind::AsapToRegistrar).with(ChannelKind::Session),
        )),
        ..TransportConfig::default()
    }
}

fn pe_config(registrar: SocketAddr, transport: TransportConfig) -> PoolElementConfig {
    let mut c = PoolElementConfig::new("TlsPool")
        .registrar(registrar)
        .listen(SocketAddr::new(LOCALHOST, 0))
        .mode(TransportMode::Tcp);
    c.transport = transport;
    c
}

fn pu_config(registrar: SocketAddr, transport: TransportConfig) -> PoolUserConfig {
    let mut c = PoolUserConfig::default()
        .registrar(registrar)
        .mode(TransportMode::Tcp);
    c.transport = transport;
    c.ppid = 4242;
    c
}

/// An echo PE: every message of every session goes back.
async fn echo_pe(config: PoolElementConfig) -> PoolElement {
    let pe = PoolElement::register(config).await.unwrap();
    let mut incoming = pe.incoming();
    std::thread::spawn(move || {
        futures_lite::future::block_on(async move {
            while let Some(mut s) = incoming.next().await {
                std::thread::spawn(move || {
                    futures_lite::future::block_on(async move {
                        while let Ok(ev) = s.recv_event().await {
                            if let ServerEvent::Message(m) = ev
                                && s.send(m.ppid, m.data).await.is_err()
                            {
                                return;
                            }
                        }
                    })
                });
            }
        })
    });
    pe
}

/// True when `op` succeeds within one second (false when it fails or takes longer).
async fn succeeds_within_a_second<T, E>(op: impl Future<Output = Result<T, E>>) -> bool {
    // Boxed: a registration's future is large, and the scenario's own future holds this one.
    let op = Box::pin(op);
    futures_lite::future::or(async { op.await.is_ok() }, async {
        Timer::after(Duration::from_secs(1)).await;
        false
    })
    .await
}

async fn tls_registration_session_and_failover() {
    let (ca_pem, ca) = new_ca("rserpool test CA");
    let (_, other) = new_ca("stranger CA");
    let registrar_tls = party("registrar", &ca, &ca_pem);
    let pe_tls = party("pe", &ca, &ca_pem);
    let pu_tls = party("pu", &ca, &ca_pem);
    let stranger_tls = party("stranger", &other, &ca_pem);

    let mut rc = RegistrarConfig {
        mode: TransportMode::Tcp,
        ..RegistrarConfig::local(LOCALHOST)
    };
    rc.transport = tls(&registrar_tls);
    rc.core.timers.keep_alive_transmission_interval = Duration::from_millis(100);
    let r = Registrar::start(rc).await.unwrap();
    let at = r.asap_addr();

    // A plain PE and a stranger's never get registered.
    let plain_pe = PoolElement::register(pe_config(at, TransportConfig::default()));
    assert!(!succeeds_within_a_second(plain_pe).await);
    let stranger_pe = PoolElement::register(pe_config(at, tls(&stranger_tls)));
    assert!(!succeeds_within_a_second(stranger_pe).await);
    assert!(r.pool_elements("TlsPool").await.unwrap().is_empty());

    // Two PEs over TLS; a pool user over TLS resolves them and echoes through one.
    let pe1 = echo_pe(pe_config(at, tls(&pe_tls))).await;
    let pe2 = echo_pe(pe_config(at, tls(&pe_tls))).await;
    let mut want = vec![pe1.pe_id().0, pe2.pe_id().0];
    want.sort_unstable();
    let mut got: Vec<u32> = resolve("TlsPool", pu_config(at, tls(&pu_tls)))
        .await
        .unwrap()
        .iter()
        .map(|e| e.pe_id.0)
        .collect();
    got.sort_unstable();
    assert_eq!(got, want);
    // A plain pool user is not served.
    let plain = resolve("TlsPool", pu_config(at, TransportConfig::default()));
    assert!(
        !succeeds_within_a_second(plain).await,
        "a plain pool user resolved at a TLS-only registrar"
    );

    let mut session = PoolUser::connect("TlsPool", pu_config(at, tls(&pu_tls)))
        .await
        .unwrap();
    let first = session.pe_id().unwrap();
    for i in 0..5u32 {
        let m = format!("before {i}");
        session.send_msg(4242, m.clone()).await.unwrap();
        assert_eq!(session.recv_msg().await.unwrap().data, m.as_bytes());
    }
    // The serving PE goes away: the session fails over to the other one, over TLS too.
    let (gone, stays) = if first == pe1.pe_id() {
        (pe1, pe2)
    } else {
        (pe2, pe1)
    };
    gone.shutdown().await.unwrap();
    for i in 0..5u32 {
        let m = format!("after {i}");
        session.send_msg(4242, m.clone()).await.unwrap();
        assert_eq!(session.recv_msg().await.unwrap().data, m.as_bytes());
    }
    assert_eq!(session.pe_id(), Some(stays.pe_id()));
    assert!(session.failovers() >= 1);
    stays.shutdown().await.unwrap();
    r.shutdown().await;
}
on_both!(tls_registration_session_and_failover);
