//! Fuzzes `rserpool_proto::fuzzing::csp`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rserpool_proto::fuzzing::csp(data);
});
