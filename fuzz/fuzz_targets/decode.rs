//! Arbitrary bytes -> `decode`: never panics; accepted events are valid
//! (label and metric names, times within 1970..9999, limits); a rejected
//! input appends nothing; `decode_each` agrees with `decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ripcord_fuzz::check_decode(data);
});
