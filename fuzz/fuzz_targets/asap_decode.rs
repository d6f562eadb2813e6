//! Fuzzes the ASAP decoder and the decode/encode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rserpool_proto::fuzzing::asap(data);
});
