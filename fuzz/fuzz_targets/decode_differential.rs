//! Arbitrary bytes -> `decode` (typed fast path first) and `decode_slow`
//! (schema-free tree only): both accept or both reject, with the same
//! events (sample values compared bit for bit, so NaN equals NaN); quoted
//! pieces parse to the same timestamp with and without the RFC 3339 fast path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ripcord_fuzz::check_differential(data);
});
