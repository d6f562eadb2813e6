//! Replays the fuzz corpora (fuzz/corpus/<target>/*) through the fuzzing entry points, so that
//! the suite covers them without libFuzzer. Every seed is a real RSPLIB message and must also
//! decode.

use std::path::Path;

use rserpool_proto::{AsapMessage, EnrpMessage, fuzzing};

#[test]
fn replay_fuzz_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = 0;
    for (target, run, decodes) in [
        (
            "asap_decode",
            fuzzing::asap as fn(&[u8]),
            (|d: &[u8]| AsapMessage::decode(d).is_ok()) as fn(&[u8]) -> bool,
        ),
        ("enrp_decode", fuzzing::enrp, |d: &[u8]| {
            EnrpMessage::decode(d).is_ok()
        }),
        ("csp_decode", fuzzing::csp, |d: &[u8]| {
            rserpool_proto::csp::CspReport::decode(d).is_ok()
        }),
        ("rtf_stream", fuzzing::rtf, |_d: &[u8]| true),
    ] {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            run(&data);
            let name = path.file_name().unwrap().to_string_lossy();
            if name.starts_with("asap-") || name.starts_with("enrp-") || name.starts_with("report-")
            {
                assert!(decodes(&data), "seed {name} does not decode");
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 34, "only {replayed} corpus files");
}
