//! Any `labelSelector` or `fieldSelector` text: parsing never panics, and a selector that parses
//! can be matched against an object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let object = serde_json::json!({"metadata": {"name": "nav", "namespace": "car", "labels": {"app": "nav", "tier": "hmi"}},
                                    "spec": {"nodeName": "hpc-1"}, "status": {"phase": "Running"}});
    if let Ok(selector) = api::selector::LabelSelector::parse(text) {
        let _ = selector.matches_object(&object);
    }
    if let Ok(selector) = api::selector::FieldSelector::parse(text) {
        let _ = selector.matches(&object);
    }
});
