//! Arbitrary text -> `expand_values` (promtool's `values:` notation in
//! rule tests): never panics, never allocates past its million-sample cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ripcord::rule::load::expand_values;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = expand_values(text) {
        assert!(!v.is_empty());
        assert!(
            v.len() <= 1_000_000 + 1,
            "{} samples from {text:?}",
            v.len()
        );
    }
});
