//! An echo client with failover, on the embedding API.
//!
//! ```text
//! cargo run -p rserpool-async-std --example echo_client -- [--registrar 127.0.0.1:3863]...
//!     [--pool EchoPool] [--count 100] [--interval-ms 200] [--tcp]
//! ```
//! Opens a session to the pool and sends a numbered line every `--interval-ms` (or the lines
//! of stdin with `--stdin`), printing each echo with the PE that answered and how long it
//! took. Kill the serving `echo_pe`: the session fails over by itself to another PE (cookie
//! echo and replay of the unanswered line included) and the client keeps going; the
//! notifications are printed as they happen.

use futures_lite::{AsyncBufReadExt, StreamExt};
use rserpool_async_std::{PoolUser, PoolUserConfig, TransportMode};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = PoolUserConfig::default();
    let mut pool = String::from("EchoPool");
    let mut count = 100u64;
    let mut interval = Duration::from_millis(200);
    let mut stdin = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--registrar" => {
                let addr: SocketAddr = args.next().ok_or("--registrar ADDR")?.parse()?;
                config = config.registrar(addr);
            }
            "--pool" => pool = args.next().ok_or("--pool NAME")?,
            "--count" => count = args.next().ok_or("--count N")?.parse()?,
            "--interval-ms" => {
                interval = Duration::from_millis(args.next().ok_or("--interval-ms MS")?.parse()?)
            }
            "--stdin" => stdin = true,
            "--tcp" => config.mode = TransportMode::Tcp,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if config.registrars.is_empty() {
        config = config.registrar("127.0.0.1:3863".parse()?);
    }
    async_std::task::block_on(async {
        let mut session = PoolUser::connect(pool.as_str(), config).await?;
        println!("connected to PE {:?}", session.pe_id());
        let mut notices = session.events();
        async_std::task::spawn(async move {
            while let Some(n) = notices.next().await {
                println!("  [{n:?}]");
            }
        });
        let mut lines = futures_lite::io::BufReader::new(async_std::io::stdin()).lines();
        let mut i = 0u64;
        loop {
            let line = if stdin {
                match lines.next().await {
                    Some(l) => l?,
                    None => break,
                }
            } else {
                if i == count {
                    break;
                }
                async_io::Timer::after(interval).await;
                format!("line {i}")
            };
            i += 1;
            let sent = Instant::now();
            session.send_msg(1, line.clone()).await?;
            let echo = session.recv_msg().await?;
            println!(
                "{:?} from PE {:?} in {:?} (failovers: {}, cookie: {:?})",
                String::from_utf8_lossy(&echo.data),
                session.pe_id(),
                sent.elapsed(),
                session.failovers(),
                session
                    .cookie()
                    .map(|c| String::from_utf8_lossy(&c).into_owned()),
            );
        }
        session.close().await?;
        Ok(())
    })
}
