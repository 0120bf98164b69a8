//! Any request body, as JSON, YAML or a protobuf envelope: decoding never panics, and what it
//! accepts is an object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    let content_type = match kind % 4 {
        0 => "application/json",
        1 => "application/yaml",
        2 => "application/vnd.kubernetes.protobuf",
        _ => "application/apply-patch+yaml",
    };
    if let Ok(value) = apiserver::decode_body(body, Some(content_type)) {
        assert!(value.is_object());
    }
});
