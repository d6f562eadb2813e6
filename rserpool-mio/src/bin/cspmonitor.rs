//! `cspmonitor`: console view of the Component Status Protocol reports that registrars, pool
//! elements and pool users send (RSPLIB's `cspmonitor`, `shared/spec/csp.md` §6).
//!
//! ```text
//! cspmonitor [-localaddress=ADDR[:PORT]] [-updateinterval=MS] [-purgeinterval=MS]
//!            [-compact|-full] [-maxpr=N] [-maxpe=N] [-maxpu=N] [-maxlocationsize=N]
//!            [-once] [-runtime=S] [-plain]
//! ```
//!
//! Listens on UDP (default `[::]:2960`, dual-stack), keeps the latest report of every
//! component and redraws the screen every update interval (the first one a second after the
//! start, as RSPLIB does). Our additions: `-once` prints one screen and exits, `-runtime=S`
//! exits after S seconds with a last screen, `-plain` prints text without escape sequences.
//! The bound address is printed on stderr (`cspmonitor: listening on ADDR`).

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use rserpool_core::Instant;
use rserpool_mio::cli::{self, CspMonitorOptions, TerminationSignals};
use rserpool_mio::tools::cspmonitor::{CspTable, MonitorView, timestamp_text};
use socket2::{Domain, Socket, Type};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use tracing::debug;

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // Dual-stack, as RSPLIB's monitor on [::]; ignore systems that refuse.
        let _ = s.set_only_v6(false);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

fn run(opts: &CspMonitorOptions) -> io::Result<()> {
    let mut socket = match bind(opts.listen_address()) {
        Ok(s) => s,
        Err(e) if opts.local_address.is_none() => {
            // No IPv6 on this host: RSPLIB falls back to 0.0.0.0.
            debug!("binding {}: {e}", opts.listen_address());
            bind(SocketAddr::from((
                [0, 0, 0, 0],
                opts.listen_address().port(),
            )))?
        }
        Err(e) => return Err(e),
    };
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE)?;
    let mut signals = TerminationSignals::new()?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    eprintln!("cspmonitor: listening on {}", socket.local_addr()?);

    let view = MonitorView {
        full: opts.full_mode(),
        max_pr: opts.max_pr,
        max_pe: opts.max_pe,
        max_pu: opts.max_pu,
        max_location_size: opts.max_location_size,
        color: !opts.plain,
    };
    let mut out = io::stdout().lock();
    if !opts.plain {
        out.write_all(b"Component Status Monitor - Version 1.0\n")?;
        out.write_all(b"======================================\n\n")?;
        out.write_all(b"\x1b[;H\x1b[2J")?;
        out.flush()?;
    }

    let epoch = std::time::Instant::now();
    let now_core = || Instant::from_micros(epoch.elapsed().as_micros() as u64);
    let stop_at = opts.runtime.map(|r| epoch + r);
    let mut next_update = epoch + Duration::from_secs(1);
    let mut table = CspTable::new();
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 65_536];
    let mut last_count = usize::MAX;
    loop {
        let now = std::time::Instant::now();
        let mut due = next_update;
        if let Some(s) = stop_at {
            due = due.min(s);
        }
        match poll.poll(&mut events, Some(due.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            match ev.token() {
                SOCKET => loop {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let data = buf.get(..n).unwrap_or_default();
                            if let Err(e) = table.handle_datagram(now_core(), data) {
                                debug!("{from}: {e}");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            debug!("receive: {e}");
                            break;
                        }
                    }
                },
                SIGNALS if signals.pending().count() > 0 => {
                    out.write_all(b"\nTerminated!\n")?;
                    return Ok(());
                }
                _ => {}
            }
        }
        let now = std::time::Instant::now();
        let stopping = stop_at.is_some_and(|s| now >= s);
        if now >= next_update || stopping {
            table.purge(now_core(), opts.purge_interval);
            if table.len() != last_count || !table.is_empty() || opts.once || stopping {
                let screen = table.render(now_core(), &timestamp_text(SystemTime::now()), &view);
                out.write_all(screen.as_bytes())?;
                if opts.plain {
                    out.write_all(b"\n")?;
                }
                out.flush()?;
            }
            last_count = table.len();
            next_update = now + opts.update_interval;
            if opts.once || stopping {
                return Ok(());
            }
        }
    }
}

fn main() -> ExitCode {
    let opts: CspMonitorOptions = cli::parse_or_exit();
    if let Err(e) = cli::init_logging(&opts.log) {
        eprintln!("cspmonitor: {e}");
        return ExitCode::FAILURE;
    }
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cspmonitor: {e}");
            ExitCode::FAILURE
        }
    }
}
