//! Structure-aware: near-valid native samples built by `arbitrary` (odd
//! metric names, label maps with escapes, duplicates and wrong types, ts
//! as string, integer or float, value as number or string, unknown and
//! other forms' fields, the array form), written out as JSON, then through
//! the same checks as `decode` and `decode_differential`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ripcord_fuzz::structured::Doc;

fuzz_target!(|doc: Doc| {
    let json = doc.to_json();
    let _ = ripcord_fuzz::check_decode(json.as_bytes());
    ripcord_fuzz::check_differential(json.as_bytes());
});
