//! Any target and patch documents: JSON merge patch, JSON patch and strategic merge patch (with
//! the Pod's merge keys) never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Two JSON documents separated by a NUL byte.
    let Some(split) = data.iter().position(|b| *b == 0) else { return };
    let (Ok(target), Ok(patch)) =
        (serde_json::from_slice::<serde_json::Value>(&data[..split]), serde_json::from_slice(&data[split + 1..]))
    else {
        return;
    };
    let mut merged = target.clone();
    patch::merge_patch(&mut merged, &patch);
    let mut patched = target.clone();
    let _ = patch::json_patch(&mut patched, &patch);
    if let Some(schema) = patch::BuiltinSchema::for_kind("Pod") {
        let mut strategic = target;
        let _ = patch::strategic_merge_patch(&mut strategic, &patch, &schema);
    }
});
