//! The failure-test mode (`-uptime=`/`-downtime=`) of `rspregistrar` and `rspserver` over
//! real processes on 127.0.0.1 (TCP mapping): SIGTERM ends the program also when it
//! arrives while the program is down between two lives, where no driver catches signals.
//! (Before the fix such a signal was lost and the program lived on.)

mod common;

use common::bin_dir;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rserpool_mio::programs::cluster::{Proc, Programs, free_ports};

fn log_file(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rserpool-{test}-{}.log", std::process::id()))
}

/// The down time of the newest "down for" line of `log` (seconds) and how many there are.
fn last_down(log: &Path) -> Option<(f64, usize)> {
    let text = std::fs::read_to_string(log).ok()?;
    let downs: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("failure-test mode: down for ").nth(1))
        .filter_map(|r| r.trim_end_matches(" s").parse().ok())
        .collect();
    downs.last().map(|d| (*d, downs.len()))
}

/// Starts `program` with `args`, waits for a down time of at least 2 s, sends SIGTERM in
/// it and expects a clean exit at once.
fn sigterm_while_down(program: &str, args: Vec<String>, test: &str) {
    let log = log_file(test);
    let mut p = Proc::spawn(
        Programs::in_dir(bin_dir()),
        program,
        &args,
        program,
        Some(&log),
    )
    .expect("start");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        // A fresh "down for" line of ≥ 2 s: the program has just gone down for that long.
        if let Some((down, _)) = last_down(&log)
            && down >= 2.0
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "no long down time: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = Instant::now();
    let code = p.stop(Duration::from_secs(1));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(0), "clean exit within 1 s of SIGTERM: {text}");
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert!(text.contains("terminated while down"), "{text}");
    let _ = std::fs::remove_file(&log);
}

#[test]
fn registrar_stops_on_sigterm_between_lives() {
    let ports = free_ports(2).unwrap();
    let args = vec![
        "-transport=tcp".to_owned(),
        format!("-asap=127.0.0.1:{}", ports[0]),
        format!("-enrp=127.0.0.1:{}", ports[1]),
        "-asapannounce=off".into(),
        "-enrpannounce=off".into(),
        "-minaddressscope=loopback".into(),
        "-loglevel=3".into(),
        "-quiet".into(),
        // Short lives, long down times (means; exponentially distributed).
        "-uptime=0.05".into(),
        "-downtime=10".into(),
    ];
    sigterm_while_down("rspregistrar", args, "ft-registrar");
}

#[test]
fn server_stops_on_sigterm_between_lives() {
    // No registrar: the PE hunts during its short lives.
    let ports = free_ports(1).unwrap();
    let args = vec![
        "-echo".to_owned(),
        "-transport=tcp".into(),
        format!("-registrar=127.0.0.1:{}", ports[0]),
        "-asapannounce=off".into(),
        "-local=127.0.0.1:0".into(),
        "-loglevel=3".into(),
        "-quiet".into(),
        "-uptime=0.05".into(),
        "-downtime=10".into(),
    ];
    sigterm_while_down("rspserver", args, "ft-server");
}
