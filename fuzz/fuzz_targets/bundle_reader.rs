//! Any bytes as a bundle file: reading its metadata never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("axle-fuzz-bundle-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("input.axb");
    if std::fs::write(&path, data).is_ok() {
        let _ = bundle::read_metadata(&path);
    }
});
