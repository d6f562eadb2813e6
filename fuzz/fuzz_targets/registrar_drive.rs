//! Fuzzes the registrar machine: the bytes are a seed, configuration flags and a sequence
//! of inputs (associations, ASAP/ENRP messages raw or from templates, datagrams, time);
//! the harness checks its invariants (checksums, ownership, bounded state) after every
//! step and panics on a violation (`rserpool_core::registrar::fuzzing::drive`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rserpool_core::registrar::fuzzing::drive(data);
});
