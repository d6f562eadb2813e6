//! A registrar on the embedding API.
//!
//! ```text
//! cargo run -p rserpool-async-std --example registrar -- [--asap 127.0.0.1:3863]
//!     [--enrp 127.0.0.1:9901] [--peer ENRP-ADDR]... [--identifier HEX] [--fast-timers] [--tcp]
//! ```
//! Listens for PEs and PUs on `--asap`, for peer registrars on `--enrp`, peers with every
//! `--peer` (their ENRP addresses), and prints its events until killed. Addresses of loopback
//! scope are accepted when it listens on a loopback address. `--tcp` uses the TCP mapping
//! only (the default is kernel SCTP where available, plus the TCP mapping on the same port).
//! `--identifier` sets the server identifier (default: random); `--fast-timers` uses the fast
//! timers of the RSPLIB reference captures (keep-alives every 2 s, peers dead after 3 s,
//! takeover expiry 3 s), as the interoperability scenarios do.

use futures_lite::StreamExt;
use rserpool_async_std::{Registrar, RegistrarConfig, ServerId, TransportMode};
use std::net::SocketAddr;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut asap: SocketAddr = "127.0.0.1:3863".parse()?;
    let mut enrp: SocketAddr = "127.0.0.1:9901".parse()?;
    let mut peers = Vec::new();
    let mut mode = TransportMode::Auto;
    let mut server_id = None;
    let mut fast = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--asap" => asap = args.next().ok_or("--asap ADDR")?.parse()?,
            "--enrp" => enrp = args.next().ok_or("--enrp ADDR")?.parse()?,
            "--peer" => peers.push(args.next().ok_or("--peer ADDR")?.parse()?),
            "--identifier" => {
                let hex = args.next().ok_or("--identifier HEX")?;
                let hex = hex.trim_start_matches("0x");
                server_id = Some(ServerId(u32::from_str_radix(hex, 16)?));
            }
            "--fast-timers" => fast = true,
            "--tcp" => mode = TransportMode::Tcp,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    async_std::task::block_on(async {
        let mut config = RegistrarConfig::local(asap.ip());
        config.asap_listen = asap;
        config.enrp_listen = enrp;
        config.mode = mode;
        config.core.server_id = server_id;
        if fast {
            let t = &mut config.core.timers;
            t.server_announce_cycle = Duration::from_millis(1000);
            t.keep_alive_transmission_interval = Duration::from_millis(2000);
            t.keep_alive_timeout_interval = Duration::from_millis(2000);
            t.peer_heartbeat_cycle = Duration::from_millis(1000);
            t.peer_max_time_last_heard = Duration::from_millis(3000);
            t.peer_max_time_no_response = Duration::from_millis(2000);
            t.takeover_expiry_interval = Duration::from_millis(3000);
            t.mentor_discovery_timeout = Duration::from_millis(2000);
            config.core.max_bad_pe_reports = 1;
        }
        for p in peers {
            config = config.peer(p);
        }
        let registrar = Registrar::start(config).await?;
        println!(
            "registrar {:?}: ASAP {:?}, ENRP {:?}",
            registrar.server_id(),
            registrar.asap_addrs(),
            registrar.enrp_addrs()
        );
        let mut events = registrar.events();
        while let Some(e) = events.next().await {
            println!("{e:?}");
        }
        Ok(())
    })
}
