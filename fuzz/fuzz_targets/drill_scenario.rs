//! Arbitrary bytes as a `ripcord drill --scenario` file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ripcord_fuzz::check_drill_scenario(data);
});
