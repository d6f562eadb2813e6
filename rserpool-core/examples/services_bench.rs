//! Throughput of the service codecs and machines (prints figures; run with `--release`).
//!
//! `cargo run --release -p rserpool-core --example services_bench`
// A benchmark measures wall-clock time; the machines it drives still get explicit time.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use core::time::Duration;
use std::hint::black_box;
use std::time::Instant as Clock;

use rserpool_core::Instant;
use rserpool_core::services::calcapp::{CalcAppServer, CalcAppServerConfig, CalcAppServerOutput};
use rserpool_core::services::fractal::{FractalServer, FractalServerConfig};
use rserpool_core::services::pingpong::{PingPongServer, PingPongServerConfig};
use rserpool_core::services::sha1::Sha1;
use rserpool_core::services::{ServiceOutput, ServiceSession, SessionEvent};
use rserpool_proto::services::calcapp::{CalcAppMessage, CalcAppType};
use rserpool_proto::services::fractal::{FgpData, FgpParameter};
use rserpool_proto::services::pingpong::PingPongMessage;
use rserpool_proto::services::scripting::ScriptingMessage;

fn rate(what: &str, n: u64, t: Duration, unit: &str) {
    println!(
        "{what:<44} {:>12.0} {unit}/s   ({n} in {:.3} s)",
        n as f64 / t.as_secs_f64(),
        t.as_secs_f64()
    );
}

fn main() {
    // ---- codecs ----
    let ping = PingPongMessage::Ping {
        message_no: 1,
        data: Bytes::from_static(b"Nachricht: 1, Zeitstempel: 1795486626863199"),
    };
    let n = 2_000_000u64;
    let t = Clock::now();
    for _ in 0..n {
        let b = black_box(&ping).encode();
        black_box(PingPongMessage::decode_bytes(&b).ok());
    }
    rate("Ping encode+decode", n, t.elapsed(), "msg");

    let m = CalcAppMessage::request(7, 5_000_000);
    let t = Clock::now();
    for _ in 0..n {
        let b = black_box(&m).encode();
        black_box(CalcAppMessage::decode(&b).ok());
    }
    rate("CalcApp encode+decode", n, t.elapsed(), "msg");

    let data = FgpData {
        start_x: 10,
        start_y: 20,
        points: (0..324).collect(),
    };
    let n = 300_000u64;
    let t = Clock::now();
    for _ in 0..n {
        let b = black_box(&data).encode();
        black_box(FgpData::decode(&b).ok());
    }
    rate("FGP DATA (324 points) encode+decode", n, t.elapsed(), "msg");

    let upload = ScriptingMessage::Upload(Bytes::from(vec![0xabu8; 16_384]));
    let n = 200_000u64;
    let t = Clock::now();
    for _ in 0..n {
        let b = black_box(&upload).encode();
        black_box(ScriptingMessage::decode_bytes(&b).ok());
    }
    rate("SSP UPLOAD (16 KiB) encode+decode", n, t.elapsed(), "msg");

    let buf = vec![0x5au8; 64 << 20];
    let t = Clock::now();
    black_box(Sha1::digest(&buf));
    rate("SHA-1", (buf.len() >> 20) as u64, t.elapsed(), "MiB");

    // ---- Ping Pong PE ----
    let mut s = PingPongServer::new(PingPongServerConfig::default());
    let ping = ping.encode();
    let n = 1_000_000u64;
    let t = Clock::now();
    for _ in 0..n {
        s.handle_data(Instant::ZERO, 33, 0, ping.clone());
        while let Some(o) = s.poll_output() {
            black_box(o);
        }
    }
    rate("Ping Pong PE: Ping → Pong + cookie", n, t.elapsed(), "ping");

    // ---- CalcApp PE: 1000 sessions with keep-alives ----
    let config = CalcAppServerConfig {
        max_jobs: 1000,
        capacity: 1e9,
        ..Default::default()
    };
    let mut s: CalcAppServer<u32> = CalcAppServer::new(config, Instant::ZERO);
    for i in 0..1000u32 {
        s.handle_data(
            Instant::ZERO,
            i,
            &CalcAppMessage::request(1, 1_000_000_000_000).encode(),
        );
    }
    while s.poll_output().is_some() {}
    let ka = CalcAppMessage::new(CalcAppType::KeepAlive, 1).encode();
    let n = 200_000u64;
    let t = Clock::now();
    for i in 0..n {
        s.handle_data(Instant::from_micros(i), (i % 1000) as u32, &ka);
        while let Some(o) = s.poll_output() {
            black_box(o);
        }
    }
    rate(
        "CalcApp PE (1000 jobs): KEEPALIVE → ACK",
        n,
        t.elapsed(),
        "msg",
    );
    // Timers: keep-alives (answered at once), cookies; a simulated minute.
    let t = Clock::now();
    let mut fired = 0u64;
    let mut now = Instant::from_micros(n);
    let end = now + Duration::from_secs(60);
    let ack = CalcAppMessage::new(CalcAppType::KeepAliveAck, 1).encode();
    while let Some(due) = s.poll_timeout() {
        if due > end {
            break;
        }
        now = now.max(due);
        s.handle_timeout(now);
        let mut acks = Vec::new();
        while let Some(o) = s.poll_output() {
            if let CalcAppServerOutput::Send { session, .. } = &o {
                acks.push(*session);
            }
            black_box(o);
            fired += 1;
        }
        for session in acks {
            s.handle_data(now, session, &ack);
        }
    }
    assert_eq!(s.jobs(), 1000);
    rate(
        "CalcApp PE (1000 jobs): timer outputs",
        fired,
        t.elapsed(),
        "output",
    );

    // ---- Fractal PE: 400 × 250 Mandelbrot, 1024 iterations ----
    let p = FgpParameter::rsplib_default(400, 250);
    let mut s = FractalServer::new(FractalServerConfig::default());
    s.handle_data(Instant::ZERO, 32, 0, p.encode());
    let t = Clock::now();
    let mut messages = 0u64;
    let mut now = Instant::ZERO;
    while let Some(due) = s.poll_timeout() {
        now = now.max(due) + Duration::from_micros(100);
        s.handle_timeout(now);
        while let Some(o) = s.poll_output() {
            if let ServiceOutput::Send { .. } = o {
                messages += 1;
            }
        }
    }
    let e = t.elapsed();
    rate("Fractal PE 400×250×1024 (default job)", 100_000, e, "pixel");
    println!("{:<44} {messages} DATA messages incl. end marker", "");
    s.handle_event(now, SessionEvent::PeerClosed);
}
