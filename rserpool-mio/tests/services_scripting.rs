//! Scripting over real processes on 127.0.0.1 (TCP mapping): `rspserver -scripting` PEs
//! running the example work package (`examples/scripting`, packed with
//! `pack_work_package`) for `scriptingclient`. The downloaded output must be exactly the
//! script's output, also when the PE running it is killed (the client starts again on
//! another PE). With `-sskeyring=` only OpenPGP-signed environments and work packages are
//! accepted.

mod common;

use common::bin_dir;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rserpool_mio::programs::services::pool::{ClientProc, ServicePool};
use rserpool_mio::programs::services::scripting_host::pack_work_package;

const LIMIT: Duration = Duration::from_secs(40);

fn logs(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rserpool-{test}-{}", std::process::id()))
}

fn test_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The example package with `delay` seconds of "work", packed into `dir/name`.
fn package(dir: &Path, name: &str, delay: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scripting");
    let work = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&work).unwrap();
    for f in ["ssrun", "data.txt"] {
        std::fs::copy(src.join(f), work.join(f)).unwrap();
    }
    std::fs::write(work.join("delay.txt"), delay).unwrap();
    let out = dir.join(name);
    assert_eq!(pack_work_package(&work, &out).unwrap(), 3);
    out
}

fn expected(environment_bytes: Option<usize>) -> String {
    let mut s =
        String::from("rserpool scripting example\nlines: 5\napple\nbanana\ncherry\nfig\npear\n");
    if let Some(n) = environment_bytes {
        s.push_str(&format!("environment: {n} bytes\n"));
    }
    s
}

fn client(pool: &ServicePool, name: &str, input: &Path, extra: &[String]) -> (ClientProc, PathBuf) {
    let output = pool.logs.join(format!("{name}.out"));
    let mut args = pool.client_args();
    args.extend([
        format!("-input={}", input.display()),
        format!("-output={}", output.display()),
        "-retrydelay=100".into(),
        "-keepaliveinterval=300".into(),
        "-keepalivetimeout=600".into(),
        "-transmittimeout=5000".into(),
    ]);
    args.extend(extra.iter().cloned());
    let c = ClientProc::spawn(
        &pool.bin_dir,
        "scriptingclient",
        &args,
        &pool.logs.join(format!("{name}.log")),
    )
    .expect("start scriptingclient");
    (c, output)
}

const PE: [&str; 4] = [
    "-scripting",
    "-ssmaxthreads=2",
    "-sskeepaliveinterval=300",
    "-sskeepalivetimeout=600",
];

#[test]
fn work_runs_and_survives_a_killed_pe() {
    let mut pool = ServicePool::start(&bin_dir(), &logs("ss"), &[]).expect("registrar");
    let quick = package(&pool.logs, "quick.tar.gz", "0");
    pool.start_pe_registered(0x51, &PE).expect("PE");

    // Plain run, with an environment (uploaded, then cached by the PE).
    let env = test_data("environment.txt");
    let env_arg = format!("-environment={}", env.display());
    for round in 0..2 {
        let (c, out) = client(
            &pool,
            &format!("plain{round}"),
            &quick,
            std::slice::from_ref(&env_arg),
        );
        let (lines, code) = c.finish(LIMIT);
        assert_eq!(code, Some(0), "round {round}: {lines:?}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), expected(Some(36)));
    }
    let log = std::fs::read_to_string(pool.pe_log(0x51)).unwrap();
    assert!(
        log.contains("(upload needed)") && log.contains("(cached)"),
        "{log}"
    );

    // Failover: the PE running the work (2 s) is killed; another one starts it again.
    let slow = package(&pool.logs, "slow.tar.gz", "2");
    pool.start_pe_registered(0x52, &PE).expect("PE");
    let (c, out) = client(&pool, "killed", &slow, &[]);
    let end = Instant::now() + LIMIT;
    let victim = loop {
        let working = [0x51u32, 0x52].into_iter().find(|id| {
            std::fs::read_to_string(pool.pe_log(*id))
                .unwrap_or_default()
                .matches("WorkStarted")
                .count()
                > usize::from(*id == 0x51) * 2
        });
        if let Some(id) = working {
            break id;
        }
        assert!(Instant::now() < end, "no PE started the work");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(pool.kill_pe(victim));
    let (lines, code) = c.finish(LIMIT);
    assert_eq!(code, Some(0), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.text.starts_with("Failover")),
        "the client started again: {lines:?}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected(None));
}

#[test]
fn keyring_accepts_only_signed_environments_and_work_packages() {
    let mut pool = ServicePool::start(&bin_dir(), &logs("ss-keyring"), &[]).expect("registrar");
    // The environments' signer (public key) and the work packages' signer (secret key: it
    // also decrypts) in one keyring file.
    let keyring_file = pool.logs.join("keyring.gpg");
    let mut keys = std::fs::read(test_data("keyring.gpg")).unwrap();
    keys.extend(std::fs::read(test_data("work-signer-secret.gpg")).unwrap());
    std::fs::write(&keyring_file, keys).unwrap();
    let keyring = format!("-sskeyring={}", keyring_file.display());
    let mut args = PE.to_vec();
    args.push(&keyring);
    pool.start_pe_registered(0x61, &args).expect("PE");

    // The example package (delay 0), signed and encrypted with gpg, and a signed
    // environment.
    let work = test_data("work.tar.gz.enc.gpg");
    let signed = test_data("environment.txt.gpg");
    let (c, out) = client(
        &pool,
        "signed",
        &work,
        &[format!("-environment={}", signed.display())],
    );
    let (lines, code) = c.finish(LIMIT);
    assert_eq!(code, Some(0), "{lines:?}");
    let size = std::fs::metadata(&signed).unwrap().len() as usize;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected(Some(size)));

    // Unsigned environment: the PE refuses it and aborts; the client keeps retrying.
    let plain = test_data("environment.txt");
    let (c, out) = client(
        &pool,
        "unsigned-environment",
        &work,
        &[format!("-environment={}", plain.display())],
    );
    let (lines, code) = c.finish(Duration::from_secs(3));
    assert_eq!(code, None, "still retrying after 3 s: {lines:?}");
    assert!(!out.exists(), "no output");
    let log = std::fs::read_to_string(pool.pe_log(0x61)).unwrap();
    assert!(log.contains("invalid environment"), "{log}");

    // Unsigned work package (the same archive, as packed): refused, nothing runs.
    let (c, out) = client(&pool, "unsigned-input", &test_data("work.tar.gz"), &[]);
    let (lines, code) = c.finish(Duration::from_secs(3));
    assert_eq!(code, None, "still retrying after 3 s: {lines:?}");
    assert!(!out.exists(), "no output");
    let log = std::fs::read_to_string(pool.pe_log(0x61)).unwrap();
    assert!(log.contains("invalid input"), "{log}");
}
