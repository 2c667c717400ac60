//! Arbitrary bytes as a `POST /api/v2/alerts` body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ripcord_fuzz::check_postable_alerts(data);
});
