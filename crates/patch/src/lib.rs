//! Kubernetes patch algebra over `serde_json::Value`.
//!
//! The API server accepts four kinds of PATCH body, and each one is a pure function from
//! (current object, patch document) to a new object. They live here, apart from HTTP and the
//! store, so they can be tested with literal JSON and reused by any client that needs to
//! predict what the server will do:
//!
//! - [`merge_patch`]: RFC 7386 JSON merge patch (custom resources, `kubectl scale`,
//!   `CustomObjectsApi`);
//! - [`json_patch`]: RFC 6902 JSON patch (`kubectl rollout undo`, list-shaped patches); a
//!   failed `test` is the distinct [`PatchError::TestFailed`] so the server can answer 409;
//! - [`strategic_merge_patch`]: Kubernetes' strategic merge patch for built-in kinds, driven by
//!   a [`MergeSchema`]; [`BuiltinSchema`] carries upstream's merge keys (client-side
//!   `kubectl apply`, `kubectl rollout restart`);
//! - [`field_set`], [`FieldSet`], [`apply`], [`conflicts`]: the field ownership (`FieldsV1`),
//!   merge and conflict detection of server-side apply.
//!
//! **Invariants:** everything here is synchronous and does no I/O; no function panics on any
//! input; a function that fails leaves its target untouched; every error names the path (or
//! operation) that failed and why. Directive keys (`$patch`, `$setElementOrder/…`, …) never
//! reach a result.

mod apply;
mod builtin;
mod fieldset;
mod json;
mod strategic;

pub use apply::{apply, conflicts, field_set};
pub use builtin::BuiltinSchema;
pub use fieldset::FieldSet;
pub use json::json_patch;
pub use strategic::{strategic_merge_patch, ListStrategy, MergeSchema};

use serde_json::Value;

/// Why a patch could not be applied. The API server maps [`PatchError::TestFailed`] to
/// 409 Conflict and everything else to 422 Invalid, quoting the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed: not the expected shape, a bad JSON pointer, a
    /// directive with a value of the wrong type, an ordering that contradicts itself.
    #[error("invalid patch at '{path}': {reason}")]
    Invalid { path: String, reason: String },
    /// A JSON patch operation addresses a location the target does not have.
    #[error("path '{path}' does not exist")]
    MissingPath { path: String },
    /// A JSON patch `test` operation found a different value (or none) at `path`.
    #[error("test operation failed: the value at '{path}' is not the expected one")]
    TestFailed { path: String },
    /// A strategic merge patch carries `$patch` with a value other than merge, replace, delete.
    #[error("unknown patch directive $patch: {directive:?} at '{path}'")]
    UnknownDirective { path: String, directive: String },
    /// An element of a list merged by key lacks the key (in the patch, the live list or an
    /// applied configuration).
    #[error("an element of the list at '{path}' has no merge key {key:?}")]
    MissingMergeKey { path: String, key: String },
}

impl PatchError {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> PatchError {
        PatchError::Invalid { path: path.into(), reason: reason.into() }
    }
}

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null` deletes a member,
/// anything else (arrays included) replaces. Infallible: every JSON value is a merge patch.
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
    fn merge_patch_null_deletes() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": 1});
        merge_patch(&mut target, &json!({"a": {"b": null}, "d": null, "missing": null}));
        assert_eq!(target, json!({"a": {"c": 2}}));
    }

    #[test]
    fn merge_patch_merges_objects_and_replaces_arrays() {
        let mut target = json!({"a": {"b": 1}, "list": [1, 2]});
        merge_patch(&mut target, &json!({"a": {"e": {"f": null, "g": 3}}, "list": [3]}));
        assert_eq!(target, json!({"a": {"b": 1, "e": {"g": 3}}, "list": [3]}));
    }

    #[test]
    fn merge_patch_scale_shape_sets_replicas() {
        let mut scale = json!({"kind": "Scale", "spec": {"replicas": 1}, "status": {"replicas": 1}});
        merge_patch(&mut scale, &json!({"spec": {"replicas": 3}}));
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 1);
    }

    /// A tiny deterministic generator of JSON documents biased towards Kubernetes field names
    /// and patch directives.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() as usize) % items.len()]
        }

        fn value(&mut self, depth: u32) -> Value {
            const KEYS: &[&str] = &[
                "spec",
                "metadata",
                "containers",
                "name",
                "image",
                "env",
                "finalizers",
                "ports",
                "containerPort",
                "labels",
                "template",
                "$patch",
                "$retainKeys",
                "$setElementOrder/containers",
                "$setElementOrder/env",
                "$deleteFromPrimitiveList/finalizers",
                "$setElementOrder",
                "value",
            ];
            const STRINGS: &[&str] = &["a", "b", "web", "replace", "delete", "merge", "bogus", "name"];
            match self.next() % if depth == 0 { 4 } else { 7 } {
                0 => Value::Null,
                1 => Value::from(self.next() % 3),
                2 => Value::from(self.pick(STRINGS)),
                3 => Value::Bool(self.next() & 1 == 0),
                4 | 5 => {
                    let len = self.next() % 4;
                    let mut map = serde_json::Map::new();
                    for _ in 0..len {
                        let key = self.pick(KEYS).to_string();
                        map.insert(key, self.value(depth - 1));
                    }
                    Value::Object(map)
                }
                _ => Value::Array((0..self.next() % 4).map(|_| self.value(depth - 1)).collect()),
            }
        }
    }

    fn has_directive(value: &Value) -> bool {
        match value {
            Value::Object(map) => map.iter().any(|(k, v)| {
                k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") || k.starts_with("$deleteFrom")
            } || has_directive(v)),
            Value::Array(items) => items.iter().any(has_directive),
            _ => false,
        }
    }

    #[test]
    fn every_function_survives_arbitrary_input() {
        let pod = BuiltinSchema::for_kind("Pod").expect("built-in kind");
        let mut gen = Gen(7);
        for _ in 0..3000 {
            let original = gen.value(4);
            let patch = gen.value(4);

            let mut target = original.clone();
            merge_patch(&mut target, &patch);

            let mut target = original.clone();
            if json_patch(&mut target, &patch).is_err() {
                assert_eq!(target, original, "json_patch is atomic");
            }

            let mut target = original.clone();
            match strategic_merge_patch(&mut target, &patch, &pod) {
                Ok(()) if !has_directive(&original) => assert!(!has_directive(&target), "{original} + {patch}"),
                Ok(()) => {}
                Err(_) => assert_eq!(target, original, "strategic_merge_patch is atomic"),
            }

            let owned = field_set(&original, Some(&pod));
            assert_eq!(FieldSet::from_fields_v1(&owned.to_fields_v1()).as_ref(), Ok(&owned), "{original}");
            let _ = apply(&original, &patch, &owned, Some(&pod));
            let _ = apply(&patch, &original, &owned, None);
            let _ = conflicts(&owned, &field_set(&patch, Some(&pod)), &original, &patch);
            let _ = FieldSet::from_fields_v1(&patch);
        }
    }

    /// RFC 7386 appendix A, every example.
    #[test]
    fn merge_patch_follows_rfc7386_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (original, patch, expected) in cases {
            let mut target = original.clone();
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "{original} + {patch}");
        }
    }
}
