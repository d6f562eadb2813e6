//! Lists the RSerPool messages in capture files and prints the reader's throughput.
//!
//! `cargo run --release -p rserpool-mio --example pcap_dump -- [-q] FILE...`
//! (`-q`: figures only).

use rserpool_mio::pcap::{Capture, CaptureConfig, Transport};
use std::io::Write;
use std::time::Instant;

fn main() {
    let mut quiet = false;
    let mut files = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "-q" {
            quiet = true;
        } else {
            files.push(a);
        }
    }
    if files.is_empty() {
        eprintln!("usage: pcap_dump [-q] FILE...");
        std::process::exit(2);
    }
    let cfg = CaptureConfig::default();
    for path in files {
        let data = match std::fs::read(&path) {
            Ok(d) => bytes::Bytes::from(d),
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        let cap = match Capture::read(data.clone(), &cfg) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        if !quiet {
            for m in &cap.messages {
                let what = match m.transport {
                    Transport::Sctp { ppid, stream } => format!("SCTP ppid {ppid} stream {stream}"),
                    Transport::Udp => "UDP".to_owned(),
                    Transport::TcpStream => "TCP".to_owned(),
                };
                let head: String = m
                    .payload
                    .iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let line = writeln!(
                    out,
                    "{:>6} {:>17.6} {} -> {} {what} {} bytes {head}",
                    m.frame_no,
                    m.timestamp.as_secs_f64(),
                    m.src,
                    m.dst,
                    m.payload.len()
                );
                if line.is_err() {
                    return; // stdout closed (e.g. piped into head)
                }
            }
            for e in &cap.errors {
                let _ = writeln!(out, "MALFORMED {e}");
            }
            for s in &cap.skipped {
                let _ = writeln!(out, "SKIPPED frame {}: {:?}", s.frame_no, s.reason);
            }
        }
        // Throughput: repeat the whole dissection for at least 0.5 s.
        let start = Instant::now();
        let mut rounds = 0u64;
        while start.elapsed().as_secs_f64() < 0.5 {
            let c = Capture::read(data.clone(), &cfg).expect("read once already");
            assert_eq!(c.messages.len(), cap.messages.len());
            rounds += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let _ = writeln!(
            out,
            "{path}: {} frames, {} messages, {} malformed, {} skipped; {:.0} MB/s, {:.2} M frames/s",
            cap.stats.frames,
            cap.messages.len(),
            cap.errors.len(),
            cap.skipped.len(),
            (data.len() as f64 * rounds as f64) / secs / 1e6,
            (cap.stats.frames as f64 * rounds as f64) / secs / 1e6,
        );
    }
}
