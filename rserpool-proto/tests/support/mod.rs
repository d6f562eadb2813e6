//! Shared test support: locating the shared vectors and tools, hex files, and proptest
//! strategies for every parameter and message type.
#![allow(dead_code)]

pub mod strategies;

use std::path::{Path, PathBuf};

/// Finds `shared/<rel>` next to the checkout: `RSERPOOL_VECTORS` (for `vectors/...`), then
/// every ancestor of the manifest directory (`../../shared` from /work/main/rserpool-proto,
/// `../../../shared` from a worktree under /work/wt).
pub fn shared_path(rel: &str) -> PathBuf {
    if let (Some(rest), Ok(v)) = (
        rel.strip_prefix("vectors/"),
        std::env::var("RSERPOOL_VECTORS"),
    ) {
        return Path::new(&v).join(rest);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors().skip(1) {
        let p = dir.join("shared").join(rel);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "shared/{rel} not found above {} (set RSERPOOL_VECTORS for the vectors)",
        manifest.display()
    );
}

/// Decodes a hex text file: '#' starts a comment, everything but hex digits is ignored.
pub fn parse_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.bytes())
        .filter(u8::is_ascii_hexdigit)
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

/// Every `*.hex` message vector: (file name, bytes), sorted by name.
pub fn vectors() -> Vec<(String, Vec<u8>)> {
    let dir = shared_path("vectors/rsplib-captures/messages");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, parse_hex(&std::fs::read_to_string(&p).unwrap()))
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 29,
        "expected the 29 RSPLIB vectors, found {}",
        v.len()
    );
    v
}

/// Parses a hex string literal (spaces allowed).
pub fn hex(s: &str) -> Vec<u8> {
    parse_hex(s)
}
