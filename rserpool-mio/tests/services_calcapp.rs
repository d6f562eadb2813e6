//! CalcApp over real processes on 127.0.0.1 (TCP mapping): `rspserver -calcapp` PEs and
//! `calcappclient` with its statistics files; failover by the PE's failure tester
//! (`-capfailureafter=`) and by SIGKILL of the PE processing a job. Jobs must complete with
//! their full size, and the files must agree with each other.

mod common;

use common::bin_dir;

use std::path::PathBuf;
use std::time::Duration;

use rserpool_mio::programs::services::pool::{ClientProc, ServicePool};

const LIMIT: Duration = Duration::from_secs(40);

fn logs(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rserpool-{test}-{}", std::process::id()))
}

/// The value of a `scalar "obj" "CalcAppPU <name>" <value>` line.
fn scalar(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.split_once(&format!("\"CalcAppPU {name}\""))?.1;
            rest.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no scalar {name} in {text}"))
}

struct Run {
    completed_lines: Vec<(u32, f64)>,
    sca: String,
    stdout: Vec<String>,
}

fn run_client(
    pool: &mut ServicePool,
    name: &str,
    runtime: &str,
    during: impl FnOnce(&mut ServicePool),
) -> Run {
    let vec = pool.logs.join(format!("{name}.vec"));
    let sca = pool.logs.join(format!("{name}.sca"));
    let mut args = pool.client_args();
    args.extend([
        "-jobinterval=0.25".to_owned(),
        "-jobsize=300000".into(),
        format!("-runtime={runtime}"),
        "-keepalivetransmissioninterval=200".into(),
        "-keepalivetimeoutinterval=300".into(),
        format!("-vector={}", vec.display()),
        format!("-scalar={}", sca.display()),
    ]);
    let c = ClientProc::spawn(
        &pool.bin_dir,
        "calcappclient",
        &args,
        &pool.logs.join(format!("{name}.log")),
    )
    .expect("start calcappclient");
    during(pool);
    let (lines, code) = c.finish(LIMIT);
    let stdout: Vec<String> = lines.into_iter().map(|l| l.text).collect();
    assert_eq!(code, Some(0), "calcappclient: {stdout:#?}");
    let vec_text = std::fs::read_to_string(&vec).expect("vector file");
    let mut vl = vec_text.lines();
    assert!(
        vl.next()
            .is_some_and(|h| h.starts_with("ObjectName PID JobID JobSize"))
    );
    let completed_lines = vl
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[3].parse().expect("job id"),
                f[4].parse().expect("job size"),
            )
        })
        .collect();
    Run {
        completed_lines,
        sca: std::fs::read_to_string(&sca).expect("scalar file"),
        stdout,
    }
}

/// Jobs complete in order 1, 2, 3, …; the files agree; returns the number completed.
fn check(run: &Run) -> usize {
    let n = run.completed_lines.len();
    for (i, (id, size)) in run.completed_lines.iter().enumerate() {
        assert_eq!(
            *id,
            i as u32 + 1,
            "jobs complete in order: {:?}",
            run.completed_lines
        );
        assert!(*size >= 0.0);
    }
    assert_eq!(scalar(&run.sca, "Total Jobs Completed") as usize, n);
    assert_eq!(scalar(&run.sca, "Total CalcAppCompletes") as usize, n);
    let started = scalar(&run.sca, "Total Jobs Started") as usize;
    // At the end of the run time at most the job in progress is unfinished.
    assert!(
        started == n || started == n + 1,
        "started {started}, completed {n}"
    );
    let size: f64 = run.completed_lines.iter().map(|(_, s)| s).sum();
    assert_eq!(scalar(&run.sca, "Total Job Size Completed"), size);
    n
}

#[test]
fn jobs_complete_across_failure_tester_and_killed_pe() {
    let mut pool = ServicePool::start(&bin_dir(), &logs("calcapp"), &[]).expect("registrar");
    let pe_args = |name: &str| -> Vec<String> {
        vec![
            "-calcapp".into(),
            "-capcapacity=2000000".into(),
            "-capcookiemaxcalculations=100000".into(),
            "-capkeepalivetransmissioninterval=200".into(),
            "-capkeepalivetimeoutinterval=300".into(),
            format!("-capvector={}", pool_log(name, "vec")),
            format!("-capscalar={}", pool_log(name, "sca")),
        ]
    };
    fn pool_log(name: &str, ext: &str) -> String {
        std::env::temp_dir()
            .join(format!(
                "rserpool-calcapp-{}-{name}.{ext}",
                std::process::id()
            ))
            .display()
            .to_string()
    }
    // Failure tester: each job's session is aborted after its 3rd cookie.
    for id in [0x41u32, 0x42] {
        let mut a = pe_args(&format!("{id:x}"));
        a.push("-capfailureafter=3".into());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        pool.start_pe_registered(id, &a).expect("PE");
    }
    let run = run_client(&mut pool, "tester", "6", |_| {});
    let n = check(&run);
    assert!(n >= 3, "jobs completed: {n}, {:#?}", run.stdout);
    assert!(
        scalar(&run.sca, "Total CalcAppAccepts") as usize > n,
        "jobs resumed on other PEs: {}",
        run.sca
    );
    pool.kill_pe(0x41);
    pool.kill_pe(0x42);

    // SIGKILL: two plain PEs; the one that accepted the first job dies with it.
    for id in [0x43u32, 0x44] {
        let a = pe_args(&format!("{id:x}"));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        pool.start_pe_registered(id, &a).expect("PE");
    }
    let run = run_client(&mut pool, "killed", "5", |pool| {
        // Kill 0x43 while it processes a job (its log has more accepted than finished jobs).
        let busy = |pool: &ServicePool| {
            let log = std::fs::read_to_string(pool.pe_log(0x43)).unwrap_or_default();
            let accepted = log.matches(" accepted (").count();
            let ended = log.matches(" is complete").count() + log.matches(" removed").count();
            accepted > ended
        };
        let end = std::time::Instant::now() + Duration::from_secs(4);
        while !busy(pool) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(busy(pool), "PE 0x43 never got a job");
        assert!(pool.kill_pe(0x43));
    });
    let n = check(&run);
    assert!(
        n >= 3,
        "jobs completed after a PE was killed: {n}, {:#?}",
        run.stdout
    );
    let summary = std::fs::read_to_string(pool.logs.join("killed.log")).expect("client log");
    assert!(
        !summary.contains(" 0 failover(s)") && summary.contains("failover(s)"),
        "the job on the killed PE failed over: {summary}"
    );
}
