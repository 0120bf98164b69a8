//! Kubernetes patch algebra over `serde_json::Value`, pure and synchronous:
//! - [`merge_patch`]: RFC 7386 JSON merge patch (custom resources, `kubectl scale`);
//! - [`json_patch`]: RFC 6902 JSON patch (`kubectl rollout undo`, list patches);
//! - [`strategic_merge_patch`]: Kubernetes' strategic merge patch for built-in kinds, with the
//!   upstream merge keys in [`BuiltinSchema`] (client-side `kubectl apply`, `rollout restart`);
//! - [`field_set`], [`apply`], [`conflicts`]: the field ownership and merge of server-side apply.
//!
//! No function here panics on any input; errors name the path that failed.

mod apply;
mod json;
mod strategic;

pub use apply::{apply, conflicts, field_set, FieldSet};
pub use json::json_patch;
pub use strategic::{strategic_merge_patch, BuiltinSchema, ListStrategy, MergeSchema};

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the patch is invalid: {0}")]
    Invalid(String),
    #[error("path {path:?} does not exist")]
    MissingPath { path: String },
    #[error("test operation failed at {path:?}")]
    TestFailed { path: String },
    #[error("unknown patch directive $patch: {0:?}")]
    UnknownDirective(String),
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_null_deletes_and_objects_merge() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        merge_patch(&mut target, &json!({"a": {"b": null, "e": 3}, "d": [3]}));
        assert_eq!(target, json!({"a": {"c": 2, "e": 3}, "d": [3]}));
    }
}
