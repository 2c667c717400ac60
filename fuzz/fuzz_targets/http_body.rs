//! Arbitrary bytes as an HTTP body in each framing (one object, an array,
//! JSON lines / RFC 7464): never panics, all or nothing, and its elements
//! decode to the same events as the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ripcord_fuzz::check_http_body(data);
});
