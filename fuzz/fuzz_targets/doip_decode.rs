//! Any bytes from the network: decoding a DoIP stream never panics, and every message it
//! yields survives its own encoding (decode ∘ encode is the identity on decoded messages).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((message, used))) = diag::doip::decode(rest, 64 * 1024) {
        let again = diag::doip::decode(&message.encode(rest[0]), 64 * 1024);
        assert_eq!(again.ok().flatten().map(|(m, _)| m), Some(message));
        rest = &rest[used..];
    }
});
