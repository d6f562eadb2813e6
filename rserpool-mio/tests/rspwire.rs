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

fn capture_files() -> Vec<PathBuf> {
    let dir = vectors_dir().parent().unwrap().to_path_buf();
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    v.sort();
    v
}

fn tally(out: &str) -> (u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("rspwire pcap:"))
        .expect("summary line");
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[1], nums[2])
}

#[test]
fn pcap_lists_every_message_of_every_capture_without_malformed_ones() {
    let files = capture_files();
    assert!(files.len() >= 5, "captures missing: {files:?}");
    for f in &files {
        let (code, out) = rspwire(&["pcap"], std::slice::from_ref(f));
        assert_eq!(code, 0, "{}:\n{out}", f.display());
        let (ok, rejected, bad) = tally(&out);
        assert!(ok > 20, "{}: only {ok} messages", f.display());
        assert_eq!(bad, 0, "{}", f.display());
        let name = f.file_name().unwrap().to_string_lossy();
        if name.starts_with("07") {
            // The forged messages: three ASAP/ENRP messages with unknown parameter 0x4fff
            // ("stop and report"), the ENRP request with an extra one, and message type 0x7e.
            assert_eq!(rejected, 5, "{out}");
            assert!(out.contains("unknown message type 0x7e (answered with cause 0x0002)"));
        } else {
            assert_eq!(rejected, 0, "{}:\n{out}", f.display());
        }
    }
}

#[test]
fn pcap_flags_a_capture_with_a_broken_message() {
    use bytes::Bytes;
    use rserpool_mio::pcap::PcapWriter;
    let dir = std::env::temp_dir().join(format!("rspwire-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.pcap");
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let good = Bytes::from_static(&[
        0x05, 0x00, 0x00, 0x10, 0x00, 0x09, 0x00, 0x0c, b'E', b'c', b'h', b'o', b'P', b'o', b'o',
        b'l',
    ]);
    // The same Handle Resolution with a Pool Handle TLV whose length runs past the message.
    let mut broken = good.to_vec();
    broken[7] = 0x40;
    let a = "10.0.0.1:40000".parse().unwrap();
    let b = "10.0.0.2:3863".parse().unwrap();
    let ts = std::time::Duration::from_secs(1);
    w.write_sctp_data(ts, a, b, 1, 1, 0, 11, &good).unwrap();
    w.write_sctp_data(ts, a, b, 1, 2, 0, 11, &broken).unwrap();
    std::fs::write(&path, w.into_inner().unwrap()).unwrap();
    let (code, out) = rspwire(&["pcap"], std::slice::from_ref(&path));
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 1, "{out}");
    assert_eq!(tally(&out), (1, 0, 1), "{out}");
}
