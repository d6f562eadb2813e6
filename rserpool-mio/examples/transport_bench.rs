//! Prints transport figures: association set-up rate and echo round trips per second with
//! many associations, over RTF/TCP (or kernel SCTP with `--sctp`), on 127.0.0.1.
//!
//! `cargo run --release -p rserpool-mio --example transport_bench -- [ASSOCS] [ROUNDS] [--sctp]`

use bytes::Bytes;
use mio::{Events, Poll};
use rserpool_core::Protocol;
use rserpool_mio::transport::{
    TransportConfig, TransportEvent, TransportKind, Transports, raise_nofile_limit,
};
use rserpool_proto::rtf::ChannelKind;
use std::time::{Duration, Instant};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let assocs = nums.first().copied().unwrap_or(2000);
    let rounds = nums.get(1).copied().unwrap_or(20);
    let kind = if args.iter().any(|a| a == "--sctp") {
        TransportKind::Sctp
    } else {
        TransportKind::Tcp
    };
    let limit = raise_nofile_limit()?;
    println!("{kind:?}: {assocs} associations, {rounds} echo rounds each (fd limit {limit})");

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let cap = assocs + 16;
    let mut server = Transports::new(poll.registry(), 1..cap + 1, TransportConfig::default())?;
    let mut client = Transports::new(
        poll.registry(),
        cap + 1..2 * cap + 1,
        TransportConfig::default(),
    )?;
    let l = server.listen(
        &["127.0.0.1:0".parse().unwrap()],
        kind,
        ChannelKind::AsapToRegistrar,
    )?;
    let addr = server.socket_local_addrs(l)?[0];

    let (mut se, mut ce) = (Vec::new(), Vec::new());
    let mut turn = |poll: &mut Poll,
                    server: &mut Transports,
                    client: &mut Transports,
                    se: &mut Vec<TransportEvent>,
                    ce: &mut Vec<TransportEvent>|
     -> std::io::Result<()> {
        poll.poll(&mut events, Some(Duration::from_millis(5)))?;
        let now = Instant::now();
        for ev in events.iter() {
            if server.owns(ev.token()) {
                server.handle_event(ev, now, se);
            } else {
                client.handle_event(ev, now, ce);
            }
        }
        server.handle_timeout(now, se);
        client.handle_timeout(now, ce);
        Ok(())
    };

    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(assocs);
    for _ in 0..assocs {
        ids.push(client.connect(&[addr], kind, ChannelKind::AsapToRegistrar, Protocol::Asap)?);
    }
    let mut up = 0;
    while up < assocs {
        turn(&mut poll, &mut server, &mut client, &mut se, &mut ce)?;
        up += ce
            .iter()
            .filter(|e| matches!(e, TransportEvent::Up { .. }))
            .count();
        assert!(
            !ce.iter().any(|e| matches!(e, TransportEvent::Down { .. })),
            "{ce:?}"
        );
        ce.clear();
        se.clear();
        assert!(t0.elapsed() < Duration::from_secs(120), "set-up too slow");
    }
    let setup = t0.elapsed();
    println!(
        "set-up: {assocs} associations in {:.3} s = {:.0}/s",
        setup.as_secs_f64(),
        assocs as f64 / setup.as_secs_f64()
    );

    let msg = Bytes::from(vec![0x5a; 100]);
    let t0 = Instant::now();
    for id in &ids {
        client.send(*id, 11, 0, msg.clone()).expect("send");
    }
    let mut done = 0usize;
    let total = assocs * rounds;
    while done < total {
        turn(&mut poll, &mut server, &mut client, &mut se, &mut ce)?;
        for e in se.drain(..) {
            if let TransportEvent::Message {
                assoc,
                ppid,
                stream,
                data,
            } = e
            {
                server.send(assoc, ppid, stream, data).expect("echo");
            }
        }
        for e in ce.drain(..) {
            if let TransportEvent::Message { assoc, data, .. } = e {
                done += 1;
                if done + assocs <= total {
                    client.send(assoc, 11, 0, data).expect("send");
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "echo too slow");
    }
    let el = t0.elapsed();
    println!(
        "echo: {total} round trips of 100 bytes in {:.3} s = {:.0} round trips/s ({:.1} µs each, one thread for both ends)",
        el.as_secs_f64(),
        total as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / total as f64
    );
    Ok(())
}
