//! Arbitrary text as `ripcord.yaml` -> `Config::parse`: never panics, and
//! every error names a line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ripcord::settings::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("fuzz.yaml"), text) {
        Ok(cfg) => {
            let _ = format!("{cfg:?}");
        }
        Err(errs) => {
            assert!(!errs.is_empty(), "Err with no errors");
            let _ = errs.to_string();
        }
    }
});
