//! Replays the registrar fuzz corpus (`fuzz/corpus/registrar_drive/*`) through
//! `registrar::fuzzing::drive`, so that the normal test suite covers it without libFuzzer,
//! and checks that the seeds do what they are for: each registers at least one PE (the
//! seeds use only time, association-down and templated records, re-run here through the
//! typed harness to read its event counts).

use std::path::Path;

use rserpool_core::registrar::fuzzing::{Harness, INITIAL_ASSOCS, Input, drive};

/// Runs a seed made of kind 0 (advance), 2 (association down) and 6 (template) records
/// through the typed harness; returns how many PE registrations it saw.
fn registrations(data: &[u8]) -> u64 {
    let (head, mut rest) = data.split_at(9);
    let seed = u64::from_le_bytes(head[..8].try_into().unwrap());
    let mut h = Harness::new(seed, head[8]);
    for (assoc, host) in INITIAL_ASSOCS {
        h.step(&Input::AssocUp { assoc, host }).unwrap();
    }
    while let [kind, a, b, len, tail @ ..] = rest {
        let (payload, next) = tail.split_at(usize::from(*len));
        match kind {
            0 => h.step(&Input::Advance(u32::from(*a) * 40 + u32::from(*b))),
            2 => h.step(&Input::AssocDown {
                assoc: *a,
                reason: *b,
            }),
            6 => h.step_templated(*a, *b, payload),
            k => panic!("seed uses record kind {k}"),
        }
        .unwrap();
        rest = next;
    }
    assert!(rest.is_empty(), "trailing bytes");
    h.event_counts.get("PeRegistered").copied().unwrap_or(0)
}

#[test]
fn replay_registrar_drive_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/registrar_drive");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        drive(&data);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("reg-") {
            assert!(registrations(&data) >= 1, "seed {name} registers no PE");
        }
        replayed += 1;
    }
    assert!(replayed >= 8, "only {replayed} corpus files");
}
