//! A registrar on the embedding API.
//!
//! ```text
//! cargo run -p rserpool-async-std --example registrar -- [--asap 127.0.0.1:3863]
//!     [--enrp 127.0.0.1:9901] [--peer ENRP-ADDR]... [--tcp]
//! ```
//! Listens for PEs and PUs on `--asap`, for peer registrars on `--enrp`, peers with every
//! `--peer` (their ENRP addresses), and prints its events until killed. Addresses of loopback
//! scope are accepted when it listens on a loopback address. `--tcp` uses the TCP mapping
//! only (the default is kernel SCTP where available, plus the TCP mapping on the same port).

use futures_lite::StreamExt;
use rserpool_async_std::{Registrar, RegistrarConfig, TransportMode};
use std::net::SocketAddr;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut asap: SocketAddr = "127.0.0.1:3863".parse()?;
    let mut enrp: SocketAddr = "127.0.0.1:9901".parse()?;
    let mut peers = Vec::new();
    let mut mode = TransportMode::Auto;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--asap" => asap = args.next().ok_or("--asap ADDR")?.parse()?,
            "--enrp" => enrp = args.next().ok_or("--enrp ADDR")?.parse()?,
            "--peer" => peers.push(args.next().ok_or("--peer ADDR")?.parse()?),
            "--tcp" => mode = TransportMode::Tcp,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    async_std::task::block_on(async {
        let mut config = RegistrarConfig::local(asap.ip());
        config.asap_listen = asap;
        config.enrp_listen = enrp;
        config.mode = mode;
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
