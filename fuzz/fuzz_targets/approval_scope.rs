//! Arbitrary bytes as a batch incident's approval scope (API JSON, CLI or
//! form text), resolved against a batch.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ripcord_fuzz::check_approval_scope(data);
});
