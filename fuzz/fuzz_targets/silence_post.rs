//! Arbitrary bytes as a `POST /api/v1/silences` body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ripcord_fuzz::check_silence_post(data);
});
