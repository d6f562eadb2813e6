//! `rspregistrar`'s RSPLIB statistics files over real processes on 127.0.0.1 (TCP mapping):
//! `-statsfile=`/`-statsinterval=`, `-actionlogfile=` (bzip2-compressed), `-scalar=`/
//! `-object=` after a known sequence (one PE registers, then deregisters), and
//! `-autoclosetimeout=` closing an idle association.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Net, bin_dir};
use rserpool_core::Protocol;
use rserpool_mio::programs::registrar_stats::{ACTION_LOG_HEADER, STATS_HEADER};
use rserpool_mio::programs::services::pool::ServicePool;
use rserpool_mio::transport::{TransportConfig, TransportEvent, TransportKind};
use rserpool_proto::rtf::ChannelKind;

fn logs(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rserpool-{test}-{}", std::process::id()))
}

/// Waits until `f` returns something (at most `limit`).
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The counter columns (after the 10 leading columns) of the last statistics line.
fn last_counters(stats: &str) -> Option<Vec<u64>> {
    let line = stats.lines().last()?;
    let cols: Vec<&str> = line.split_whitespace().collect();
    if cols.len() != 18 {
        return None;
    }
    cols[6..].iter().map(|c| c.parse().ok()).collect()
}

#[test]
fn statistics_action_log_and_scalar_files() {
    let dir = logs("regstats");
    std::fs::create_dir_all(&dir).unwrap();
    let stats = dir.join("stats.txt");
    let actions = dir.join("actions.txt.bz2");
    let scalar = dir.join("scalar.sca");
    let mut pool = ServicePool::start(
        &bin_dir(),
        &dir,
        &[
            &format!("-statsfile={}", stats.display()),
            "-statsinterval=100",
            &format!("-actionlogfile={}", actions.display()),
            &format!("-scalar={}", scalar.display()),
            "-object=pr1",
        ],
    )
    .expect("registrar");
    // The first line comes at start: all zero.
    let first = wait_for(Duration::from_secs(10), || {
        let s = std::fs::read_to_string(&stats).ok()?;
        (s.lines().count() >= 2).then_some(s)
    })
    .expect("statistics lines");
    assert!(first.starts_with(STATS_HEADER), "{first}");
    let line1 = first.lines().nth(1).unwrap();
    assert!(line1.starts_with("000001 "), "{line1}");
    assert_eq!(last_counters(line1), Some(vec![0; 12]), "{line1}");

    pool.start_pe_registered(0x11, &["-pingpong"]).expect("PE");
    // The PE leaves cleanly (deregistration).
    let code = pool.pe(0x11).expect("PE").stop(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    // A line with: no peers, no pools/PEs left; 1 registration, 0 re-, 1 deregistration,
    // no handle resolutions, failure reports, synchronisations or handle updates.
    let counters = wait_for(Duration::from_secs(10), || {
        let s = std::fs::read_to_string(&stats).ok()?;
        let c = last_counters(&s)?;
        (c[0..4] == [0, 0, 0, 0] && c[4] == 1 && c[6] == 1).then_some(c)
    })
    .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&stats).unwrap_or_default()));
    assert_eq!(
        &counters[..11],
        &[0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0],
        "{counters:?}"
    );
    // A few more lines (every 100 ms).
    let n = std::fs::read_to_string(&stats).unwrap().lines().count();
    wait_for(Duration::from_secs(10), || {
        let s = std::fs::read_to_string(&stats).ok()?;
        (s.lines().count() >= n + 2).then_some(())
    })
    .expect("periodic lines");

    let code = pool.registrar_proc().stop(Duration::from_secs(10));
    assert_eq!(code, Some(0));

    // Statistics lines are numbered 1, 2, 3, ... with increasing times.
    let s = std::fs::read_to_string(&stats).unwrap();
    let mut last_rel = -1.0;
    for (i, l) in s.lines().skip(1).enumerate() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols[0], format!("{:06}", i + 1));
        let rel: f64 = cols[2].parse().unwrap();
        assert!(rel >= last_rel, "{l}");
        last_rel = rel;
    }
    assert!(s.lines().count() >= 4, "{s}");

    // The action log is a complete bzip2 stream.
    let raw = std::fs::read(&actions).unwrap();
    let mut text = String::new();
    bzip2::read::BzDecoder::new(&raw[..])
        .read_to_string(&mut text)
        .expect("bzip2 action log");
    assert!(text.starts_with(ACTION_LOG_HEADER), "{text}");
    let find = |what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what} in {text}"))
            .to_owned()
    };
    let reg = find("\"Recv\" \"ASAP\" \"Registration\" \"Requested\"");
    assert!(reg.contains("\"PingPongPool\" 0x11 "), "{reg}");
    let resp = find("\"RegistrationResponse\"");
    assert!(resp.ends_with("   0"), "{resp}");
    find("\"Send\" \"ASAP\" \"Deregistration\" \"Requested\"");
    find("\"DeregistrationResponse\"");
    for (i, l) in text.lines().skip(1).enumerate() {
        assert!(l.starts_with(&format!("{:06}   ", i + 1)), "{l}");
    }

    // The scalar file.
    let sca = std::fs::read_to_string(&scalar).unwrap();
    let lines: Vec<&str> = sca.lines().collect();
    assert_eq!(lines[0], "run 1 \"scenario\"");
    assert_eq!(
        lines[1],
        "scalar \"pr1\" \"Registrar Total Registrations\"               1"
    );
    assert_eq!(
        lines[3],
        "scalar \"pr1\" \"Registrar Total Deregistrations\"             1"
    );
    let avg: f64 = lines[10].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        lines[10].starts_with("scalar \"pr1\" \"Registrar Average Number Of Pool Elements\"")
            && avg > 0.0
            && avg < 1.0,
        "{sca}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idle_association_is_autoclosed() {
    let dir = logs("regautoclose");
    let mut pool =
        ServicePool::start(&bin_dir(), &dir, &["-autoclosetimeout=5"]).expect("registrar");
    // A pool user's association (TCP mapping, heartbeats running) that carries no message.
    let mut net = Net::new(TransportConfig::default(), TransportConfig::default());
    let a = net
        .a
        .connect(
            &[pool.registrar],
            TransportKind::Tcp,
            ChannelKind::AsapToRegistrar,
            Protocol::Asap,
        )
        .expect("connect");
    net.wait_for("up", Duration::from_secs(10), |n| {
        n.ea.iter()
            .any(|e| matches!(e, TransportEvent::Up { assoc, .. } if *assoc == a))
            .then_some(())
    });
    let t0 = Instant::now();
    // The registrar closes it after 5 s without a message (at most 4/3 of that, plus the
    // round trip).
    net.wait_for("closed by the registrar", Duration::from_secs(15), |n| {
        n.ea.iter()
            .any(|e| matches!(e, TransportEvent::Down { assoc, .. } if *assoc == a))
            .then_some(())
    });
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(4_900) && waited < Duration::from_secs(9),
        "{waited:?}"
    );
    assert_eq!(pool.registrar_proc().stop(Duration::from_secs(10)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The registration counter of a statistics line (its 11th column).
fn registrations_in(line: &str) -> Option<u64> {
    line.split_whitespace().nth(10)?.parse().ok()
}

/// A scalar line's value.
fn scalar_value(sca: &str, name: &str) -> Option<f64> {
    let line = sca.lines().find(|l| l.contains(&format!("\"{name}\"")))?;
    line.rsplit(' ').next()?.parse().ok()
}

#[test]
fn failure_test_mode_statistics_cover_every_life() {
    let dir = logs("regstats-lives");
    std::fs::create_dir_all(&dir).unwrap();
    let stats = dir.join("stats.txt");
    let scalar = dir.join("scalar.sca");
    // Up for 1 s on average, down for 0.1 s (both exponentially distributed).
    let mut pool = ServicePool::start(
        &bin_dir(),
        &dir,
        &[
            &format!("-statsfile={}", stats.display()),
            "-statsinterval=50",
            &format!("-scalar={}", scalar.display()),
            "-uptime=1",
            "-downtime=0.1",
        ],
    )
    .expect("registrar");
    // The PE registers again in every life it finds the registrar up.
    pool.start_pe(0x21, &["-pingpong"]).expect("PE");
    let log = dir.join("registrar.log");
    let mut restarts = 0;
    let sca = wait_for(Duration::from_secs(60), || {
        // A PE whose first server hunt (one 7.5 s round, as RSPLIB's) fell into a down time
        // or a life of milliseconds ends, as RSPLIB's rspserver does: start it again.
        if pool.pe(0x21).is_some_and(|p| p.has_ended()) && restarts < 5 {
            restarts += 1;
            pool.kill_pe(0x21);
            pool.start_pe(0x21, &["-pingpong"]).expect("PE");
        }
        let lives = std::fs::read_to_string(&log)
            .ok()?
            .matches("failure-test mode: down for")
            .count();
        let sca = std::fs::read_to_string(&scalar).ok()?;
        let registrations = scalar_value(&sca, "Registrar Total Registrations")?;
        // The statistics file gets a line every 50 ms while the registrar is up (none at
        // the end of a life): wait until one counts both registrations too.
        let text = std::fs::read_to_string(&stats).ok()?;
        let in_stats = registrations_in(text.lines().last()?)?;
        (lives >= 2 && registrations >= 2.0 && in_stats >= 2).then_some(sca)
    })
    .unwrap_or_else(|| {
        panic!(
            "two lives with a registration each: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    // Averages over every life so far: the PE was registered for part of the time.
    let pes = scalar_value(&sca, "Registrar Average Number Of Pool Elements").unwrap();
    assert!(pes > 0.0 && pes < 1.0, "{sca}");
    assert_eq!(
        scalar_value(&sca, "Registrar Average Number Of Pools").unwrap(),
        pes,
        "one pool, present exactly while its PE is: {sca}"
    );
    let code = pool.registrar_proc().stop(Duration::from_secs(10));
    assert_eq!(code, Some(0));

    // One statistics file for the whole process: one header, lines numbered on across
    // the lives, the registration counter never going back.
    let text = std::fs::read_to_string(&stats).unwrap();
    assert_eq!(text.matches(STATS_HEADER.trim_end()).count(), 1, "{text}");
    let mut last_registrations = 0;
    for (i, l) in text.lines().skip(1).enumerate() {
        assert!(l.starts_with(&format!("{:06} ", i + 1)), "{l}");
        let registrations = registrations_in(l).expect("a registration count");
        assert!(registrations >= last_registrations, "{l}");
        last_registrations = registrations;
    }
    assert!(last_registrations >= 2, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
