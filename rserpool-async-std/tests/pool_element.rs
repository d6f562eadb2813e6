//! A real core machine through the async driver: `rserpool_core::pool_element::PoolElement`
//! registers over RTF/TCP with a bare test registrar (written here with rserpool-proto:
//! HELLO kind 1, then ASAP messages with PPID 11), then deregisters. Both executors.

mod common;

use async_io::{Async, Timer};
use bytes::Bytes;
use futures_lite::future::{or, zip};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rserpool_async_std::{DriverConfig, TransportMode, run_machine};
use rserpool_core::pool_element::{PoolElement, PoolElementConfig, PoolElementEvent};
use rserpool_core::registrar_table::StaticRegistrar;
use rserpool_proto::AsapMessage;
use rserpool_proto::asap::{DeregistrationResponse, RegistrationResponse};
use rserpool_proto::rtf::{ChannelKind, Frame, FrameDecoder, Hello};
use rserpool_proto::transport::TransportProtocol;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};

/// Reads frames until a DATA frame arrives; its PPID and payload (`None` at EOF).
async fn next_data(
    s: &mut Async<TcpStream>,
    dec: &mut FrameDecoder,
    frames: &mut Vec<Frame>,
) -> Option<(u32, Bytes, Vec<Frame>)> {
    let mut others = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while !frames.is_empty() {
            match frames.remove(0) {
                Frame::Data { ppid, payload, .. } => return Some((ppid, payload, others)),
                f => others.push(f),
            }
        }
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        dec.decode_into(&buf[..n], frames).ok()?;
    }
}

async fn send_asap(s: &mut Async<TcpStream>, m: AsapMessage) {
    let f = Frame::Data {
        unordered: false,
        stream: 0,
        ppid: 11,
        payload: m.to_bytes(),
    };
    s.write_all(&f.to_bytes()).await.unwrap();
}

async fn pe_registers_and_deregisters() {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let registrar = listener.get_ref().local_addr().unwrap();
    let mut cfg = PoolElementConfig::new(
        "async-pool",
        TransportProtocol::Tcp,
        4711,
        [IpAddr::V4(Ipv4Addr::LOCALHOST)],
    );
    cfg.registrar_table.static_registrars = vec![StaticRegistrar {
        addrs: [registrar].into_iter().collect(),
        protocol: TransportProtocol::Tcp,
    }];
    cfg.registrar_table.use_announces = false;
    let pe = PoolElement::new(cfg, Xoshiro256PlusPlus::seed_from_u64(7)).unwrap();
    let config = DriverConfig {
        mode: TransportMode::Tcp,
        ..DriverConfig::default()
    };
    let (h, mut events, run) = run_machine(pe, config).unwrap();

    let peer = async {
        let (mut s, _) = listener.accept().await.unwrap();
        let (mut dec, mut frames) = (FrameDecoder::default(), Vec::new());
        s.write_all(
            &Frame::Hello(Hello {
                channel_kind: ChannelKind::AsapToRegistrar,
                heartbeat_interval_ms: 5000,
            })
            .to_bytes(),
        )
        .await
        .unwrap();
        let (ppid, data, before) = next_data(&mut s, &mut dec, &mut frames).await.unwrap();
        // The connector's HELLO names the ASAP-to-registrar channel.
        assert!(matches!(
            before.first(),
            Some(Frame::Hello(Hello {
                channel_kind: ChannelKind::AsapToRegistrar,
                ..
            }))
        ));
        assert_eq!(ppid, 11);
        let AsapMessage::Registration(reg) = AsapMessage::decode(&data).unwrap() else {
            panic!("not a registration")
        };
        assert_eq!(reg.pool_handle, "async-pool".into());
        let pe_id = reg.pool_element.pe_id;
        send_asap(
            &mut s,
            AsapMessage::RegistrationResponse(RegistrationResponse {
                pool_handle: reg.pool_handle.clone(),
                pe_id,
                ..RegistrationResponse::default()
            }),
        )
        .await;
        let (ppid, data, _) = next_data(&mut s, &mut dec, &mut frames).await.unwrap();
        assert_eq!(ppid, 11);
        let AsapMessage::Deregistration(d) = AsapMessage::decode(&data).unwrap() else {
            panic!("not a deregistration")
        };
        assert_eq!(d.pe_id, pe_id);
        send_asap(
            &mut s,
            AsapMessage::DeregistrationResponse(DeregistrationResponse {
                pool_handle: d.pool_handle,
                pe_id,
                ..DeregistrationResponse::default()
            }),
        )
        .await;
        // The PE closes the registrar association: EOF.
        assert!(next_data(&mut s, &mut dec, &mut frames).await.is_none());
        pe_id
    };
    let app = async {
        h.call(|pe: &mut PoolElement<Xoshiro256PlusPlus>, now| pe.register(now))
            .await
            .unwrap();
        let registered = events.recv().await.unwrap();
        let PoolElementEvent::Registered { pe_id, .. } = registered else {
            panic!("{registered:?}")
        };
        assert!(
            h.call(|pe: &mut PoolElement<Xoshiro256PlusPlus>, _| pe.is_registered())
                .await
                .unwrap()
        );
        h.call(|pe: &mut PoolElement<Xoshiro256PlusPlus>, now| pe.deregister(now))
            .await
            .unwrap();
        let ev = events.recv().await.unwrap();
        assert_eq!(ev, PoolElementEvent::Deregistered { acknowledged: true });
        // Give the close a moment to reach the peer before stopping.
        Timer::after(std::time::Duration::from_millis(20)).await;
        h.shutdown().await.unwrap();
        pe_id
    };
    let (pe, (peer_id, app_id)) = zip(
        run,
        or(zip(peer, app), async {
            Timer::after(common::LIMIT).await;
            panic!("timeout")
        }),
    )
    .await;
    assert_eq!(peer_id, app_id);
    assert_eq!(pe.pe_id(), app_id);
    assert!(!pe.is_registered());
}
on_both!(pe_registers_and_deregisters);
