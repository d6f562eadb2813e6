//! Ping Pong over real processes on 127.0.0.1 (TCP mapping): `rspserver -pingpong` PEs and
//! `pingpongclient`; failover by the PE's failure tester and by SIGKILL. The ReplyNo
//! sequence must continue without a gap across PEs (the cookie carries it).

mod common;

use common::bin_dir;

use std::path::PathBuf;
use std::time::Duration;

use rserpool_mio::programs::services::pool::{ClientProc, ServicePool, parse_ack};

const LIMIT: Duration = Duration::from_secs(40);

fn logs(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rserpool-{test}-{}", std::process::id()))
}

fn client(pool: &ServicePool, extra: &[&str]) -> ClientProc {
    let mut args = pool.client_args();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    ClientProc::spawn(
        &pool.bin_dir,
        "pingpongclient",
        &args,
        &pool.logs.join("client.log"),
    )
    .expect("start pingpongclient")
}

/// Checks the Acks: reply numbers 1, 2, 3, … without a gap; returns the PEs in order.
fn check_acks(lines: &[String], count: usize) -> Vec<u32> {
    let acks: Vec<(u64, u32, u64)> = lines.iter().filter_map(|l| parse_ack(l)).collect();
    assert_eq!(acks.len(), count, "acks: {lines:#?}");
    let mut pes = Vec::new();
    let mut last_message = 0;
    for (i, (m, pe, r)) in acks.iter().enumerate() {
        assert_eq!(*r, i as u64 + 1, "reply numbers continue: {lines:#?}");
        assert!(*m > last_message, "message numbers increase: {lines:#?}");
        last_message = *m;
        if pes.last() != Some(pe) {
            pes.push(*pe);
        }
    }
    assert!(
        !lines.iter().any(|l| l.contains("gap")),
        "no gap: {lines:#?}"
    );
    pes
}

#[test]
fn failure_tester_moves_the_session_between_pes() {
    let mut pool = ServicePool::start(&bin_dir(), &logs("pp-tester"), &[]).expect("registrar");
    for id in [0x11, 0x12] {
        pool.start_pe_registered(id, &["-pingpong", "-pppfailureafter=5"])
            .expect("PE");
    }
    let c = client(&pool, &["-interval=20", "-messages=30"]);
    let (lines, code) = c.finish(LIMIT);
    let lines: Vec<String> = lines.into_iter().map(|l| l.text).collect();
    assert_eq!(code, Some(0), "client exit: {lines:#?}");
    let pes = check_acks(&lines, 30);
    // Every PE aborts each session after 5 replies: at least 5 failovers, both PEs used.
    let failovers = lines
        .iter()
        .filter(|l| l.starts_with("*** Failover complete, cookie echoed"))
        .count();
    assert!(failovers >= 5, "failovers: {lines:#?}");
    assert!(pes.contains(&0x11) && pes.contains(&0x12), "{pes:x?}");
}

#[test]
fn killed_pe_is_replaced_and_reply_numbers_continue() {
    let mut pool = ServicePool::start(&bin_dir(), &logs("pp-kill"), &[]).expect("registrar");
    for id in [0x21, 0x22] {
        pool.start_pe_registered(id, &["-pingpong"]).expect("PE");
    }
    let c = client(&pool, &["-interval=50", "-messages=40"]);
    let tenth = c
        .wait_for(LIMIT, |l| parse_ack(l).is_some_and(|(_, _, r)| r == 10))
        .expect("ten pongs");
    let (_, serving, _) = parse_ack(&tenth.text).expect("ack");
    // The PE's cookie (next ReplyNo) follows its Pong: let it arrive, then kill the PE
    // between two Pings. (A PE killed between its Pong and its cookie makes the new PE
    // repeat that ReplyNo: the state the client holds is one reply old.)
    std::thread::sleep(Duration::from_millis(10));
    assert!(pool.kill_pe(serving), "kill the serving PE {serving:#x}");
    let (rest, code) = c.finish(LIMIT);
    let rest: Vec<String> = rest.into_iter().map(|l| l.text).collect();
    assert_eq!(code, Some(0), "client exit: {rest:#?}");
    let mut all: Vec<String> = (1..=10)
        .map(|r| format!("Ack #{r} from PE ${serving:08x} (reply #{r})"))
        .collect();
    all.extend(rest.iter().cloned());
    let pes = check_acks(&all, 40);
    let survivor = if serving == 0x21 { 0x22 } else { 0x21 };
    assert_eq!(pes, vec![serving, survivor], "{rest:#?}");
}

/// `rsplib-measured.md` defect 7: RSPLIB's pingpongclient never leaves a hung PE (no
/// application keep-alive). Ours: the session layer's response timeout fails over, and the
/// reply numbers continue on the other PE from the cookie.
#[test]
fn hung_pe_is_left_and_reply_numbers_continue() {
    let mut pool = ServicePool::start(&bin_dir(), &logs("pp-stop"), &[]).expect("registrar");
    for id in [0x31, 0x32] {
        pool.start_pe_registered(id, &["-pingpong"]).expect("PE");
    }
    let c = client(
        &pool,
        &["-interval=50", "-messages=30", "-responsetimeout=300"],
    );
    let tenth = c
        .wait_for(LIMIT, |l| parse_ack(l).is_some_and(|(_, _, r)| r == 10))
        .expect("ten pongs");
    let (_, serving, _) = parse_ack(&tenth.text).expect("ack");
    std::thread::sleep(Duration::from_millis(10));
    let pe = pool.pe(serving).expect("serving PE");
    pe.signal("STOP").expect("SIGSTOP");
    let (rest, code) = c.finish(LIMIT);
    if let Some(pe) = pool.pe(serving) {
        let _ = pe.signal("CONT");
    }
    let rest: Vec<String> = rest.into_iter().map(|l| l.text).collect();
    assert_eq!(code, Some(0), "client exit: {rest:#?}");
    let mut all: Vec<String> = (1..=10)
        .map(|r| format!("Ack #{r} from PE ${serving:08x} (reply #{r})"))
        .collect();
    all.extend(rest.iter().cloned());
    let pes = check_acks(&all, 30);
    let survivor = if serving == 0x31 { 0x32 } else { 0x31 };
    assert_eq!(pes, vec![serving, survivor], "{rest:#?}");
}
