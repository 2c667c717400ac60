//! Arbitrary bytes as an alert's `generatorURL`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ripcord_fuzz::check_alert_chart(data);
});
