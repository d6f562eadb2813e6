//! An echo pool element on the embedding API, on async-std's executor.
//!
//! ```text
//! cargo run -p rserpool-async-std --example echo_pe -- [--registrar 127.0.0.1:3863]...
//!     [--pool EchoPool] [--listen 127.0.0.1:0] [--identifier HEX] [--tcp]
//! ```
//! Registers in the pool, then echoes every message of every session. Each session first
//! gets a state cookie ("echo PE <id>, message <n>", renewed with every message): a client
//! that fails over to another PE echoes it there, and this PE prints the cookies it is
//! handed. Kill it (Ctrl-C, or `kill -9`) while `echo_client` runs to watch the failover.

use futures_lite::StreamExt;
use rserpool_async_std::{
    PeIdentifier, PoolElement, PoolElementConfig, ServerEvent, Spawner, TransportMode,
};
use std::net::SocketAddr;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = PoolElementConfig::new("EchoPool");
    config.listen = "127.0.0.1:0".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--registrar" => {
                let addr: SocketAddr = args.next().ok_or("--registrar ADDR")?.parse()?;
                config = config.registrar(addr);
            }
            "--pool" => config.pool_handle = args.next().ok_or("--pool NAME")?.as_str().into(),
            "--listen" => config.listen = args.next().ok_or("--listen ADDR")?.parse()?,
            "--identifier" => {
                let hex = args.next().ok_or("--identifier HEX")?;
                let hex = hex.trim_start_matches("0x");
                config.pe_id = Some(PeIdentifier(u32::from_str_radix(hex, 16)?));
            }
            "--tcp" => config.mode = TransportMode::Tcp,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if config.registrars.is_empty() {
        config = config.registrar("127.0.0.1:3863".parse()?);
    }
    // The driver runs as a task of the application's executor.
    config.spawner = Spawner::new(|task| {
        async_std::task::spawn(task);
    });
    async_std::task::block_on(async {
        let pe = PoolElement::register(config).await?;
        let id = pe.pe_id();
        println!(
            "PE {id:?} registered in {:?}, serving on {:?}",
            pe.pool_handle(),
            pe.local_addrs()
        );
        let mut events = pe.events();
        async_std::task::spawn(async move {
            while let Some(e) = events.next().await {
                println!("registration: {e:?}");
            }
        });
        let mut incoming = pe.incoming();
        while let Some(mut session) = incoming.next().await {
            async_std::task::spawn(async move {
                let sid = session.id();
                println!("session {sid:?} opened");
                let mut n = 0u64;
                let result: Result<(), rserpool_async_std::Error> = async {
                    session
                        .send_cookie(format!("echo PE {id:?}, message 0"))
                        .await?;
                    loop {
                        match session.recv_event().await? {
                            ServerEvent::CookieEcho(c) => println!(
                                "session {sid:?} restored from cookie {:?}",
                                String::from_utf8_lossy(&c)
                            ),
                            ServerEvent::Message(m) => {
                                n += 1;
                                session.send(m.ppid, m.data).await?;
                                session
                                    .send_cookie(format!("echo PE {id:?}, message {n}"))
                                    .await?;
                            }
                            ServerEvent::BusinessCard(_) => {}
                        }
                    }
                }
                .await;
                println!("session {sid:?} ended after {n} messages: {result:?}");
            });
        }
        Ok(())
    })
}
