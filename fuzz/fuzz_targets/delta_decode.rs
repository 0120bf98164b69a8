//! Any patch against a base, for each delta codec: decoding never panics, and never writes
//! more than a writer allows (the bundle's signed-length bound).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

/// Refuses to take more than 1 MiB, as the bundle reader's bound does for a signed length.
struct Bounded(usize);

impl Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() > self.0 {
            return Err(std::io::Error::other("past the bound"));
        }
        self.0 -= bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let codec = bundle::delta::CODECS[usize::from(which) % bundle::delta::CODECS.len()];
    let base: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let _ = bundle::delta::decode(codec, &base, rest, &mut Bounded(1 << 20));
});
