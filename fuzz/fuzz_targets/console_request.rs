//! Arbitrary bytes as a console request's credentials and silence form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ripcord_fuzz::check_console_request(data);
});
