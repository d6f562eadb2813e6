//! The rspwire binary on the shared RSPLIB vectors and on broken input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn vectors_dir() -> PathBuf {
    if let Ok(v) = std::env::var("RSERPOOL_VECTORS") {
        return Path::new(&v).join("rsplib-captures/messages");
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|d| d.join("shared/vectors/rsplib-captures/messages"))
        .find(|p| p.exists())
        .expect("shared/vectors not found (set RSERPOOL_VECTORS)")
}

fn rspwire(args: &[&str], files: &[PathBuf]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rspwire"))
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn vector_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    v.sort();
    v
}

#[test]
fn roundtrip_and_decode_every_vector() {
    let files = vector_files();
    assert!(files.len() >= 29);
    let (code, out) = rspwire(&["roundtrip"], &files);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("OK ")).count(),
        files.len()
    );
    let (code, out) = rspwire(&["decode"], &files);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ENRP_HANDLE_TABLE_RESPONSE (type 0x03, flags 0x00, 80 bytes)"));
    assert!(out.contains("pool_handle: PoolHandle(\"EchoPool\")"));
}

#[test]
fn malformed_and_binary_files() {
    let dir = std::env::temp_dir().join(format!("rspwire-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Binary form of a valid ENRP message, and a Handle Resolution with a stop-and-report TLV.
    let good = dir.join("enrp-list-request.bin");
    std::fs::write(&good, [5u8, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2]).unwrap();
    let bad = dir.join("msg.hex");
    std::fs::write(
        &bad,
        "# unknown parameter\n05000018 0009000c 4563686f 506f6f6c 4fff0008 00000000\n",
    )
    .unwrap();
    let (code, out) = rspwire(&["decode"], std::slice::from_ref(&good));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ENRP_LIST_REQUEST"));
    let (code, out) = rspwire(&["decode", "--proto", "asap"], std::slice::from_ref(&bad));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown parameter type 0x4fff"), "{out}");
    assert!(out.contains("Unrecognized Parameter"), "{out}");
    let (code, out) = rspwire(&["roundtrip", "--proto=asap"], &[good.clone(), bad.clone()]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL"));
    // No protocol from the name and no --proto.
    let (code, _) = rspwire(&["decode"], std::slice::from_ref(&bad));
    assert_eq!(code, 1);
    let (code, _) = rspwire(&["nonsense"], &[]);
    assert_eq!(code, 2);
    std::fs::remove_dir_all(&dir).ok();
}
