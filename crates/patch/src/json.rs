//! RFC 6902 JSON patch: an ordered list of `add`, `remove`, `replace`, `move`, `copy` and
//! `test` operations addressed by RFC 6901 JSON pointers.
//!
//! `kubectl rollout undo` replaces `/spec/template` and `/metadata/annotations` this way, and
//! clients guard a patch with a `test` of `/metadata/resourceVersion`. That is why a failed
//! `test` is its own error ([`PatchError::TestFailed`]): the API server answers it with
//! 409 Conflict rather than 422. The patch applies all or nothing: it runs on a copy, and the
//! target changes only when every operation succeeded.

use crate::PatchError;
use serde_json::Value;

/// Applies an RFC 6902 patch (a JSON array of operations) to `target`, atomically.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), PatchError> {
    let ops = ops.as_array().ok_or_else(|| PatchError::invalid("", "a JSON patch must be an array of operations"))?;
    let mut doc = target.clone();
    for (index, op) in ops.iter().enumerate() {
        apply_operation(&mut doc, index, op)?;
    }
    *target = doc;
    Ok(())
}

fn apply_operation(doc: &mut Value, index: usize, op: &Value) -> Result<(), PatchError> {
    let where_ = format!("operation {index}");
    let Value::Object(fields) = op else {
        return Err(PatchError::invalid(where_, "an operation must be an object"));
    };
    let member = |name: &str| -> Result<&str, PatchError> {
        fields
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::invalid(where_.as_str(), format!("missing string member {name:?}")))
    };
    let value =
        || fields.get("value").cloned().ok_or_else(|| PatchError::invalid(where_.as_str(), "missing \"value\""));
    let name = member("op")?;
    let path = member("path")?;
    let pointer = Pointer::parse(path)?;
    match name {
        "add" => add(doc, &pointer, value()?),
        "remove" => remove(doc, &pointer).map(drop),
        "replace" => replace(doc, &pointer, value()?),
        "move" => {
            let from = Pointer::parse(member("from")?)?;
            if from.tokens == pointer.tokens {
                return get(doc, &from).map(drop);
            }
            if pointer.tokens.starts_with(&from.tokens) {
                return Err(PatchError::invalid(
                    path,
                    format!("cannot move '{}' into one of its own children", from.raw),
                ));
            }
            let moved = remove(doc, &from)?;
            add(doc, &pointer, moved)
        }
        "copy" => {
            let from = Pointer::parse(member("from")?)?;
            let copied = get(doc, &from)?.clone();
            add(doc, &pointer, copied)
        }
        "test" => {
            let expected = value()?;
            match get(doc, &pointer) {
                Ok(actual) if json_equal(actual, &expected) => Ok(()),
                _ => Err(PatchError::TestFailed { path: path.to_string() }),
            }
        }
        other => Err(PatchError::invalid(where_, format!("unknown operation {other:?}"))),
    }
}

/// A parsed RFC 6901 pointer: the raw text (for messages) and its unescaped reference tokens.
struct Pointer<'a> {
    raw: &'a str,
    tokens: Vec<String>,
}

impl<'a> Pointer<'a> {
    fn parse(raw: &'a str) -> Result<Pointer<'a>, PatchError> {
        if raw.is_empty() {
            return Ok(Pointer { raw, tokens: Vec::new() });
        }
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(PatchError::invalid(raw, "a JSON pointer must be empty or start with '/'"));
        };
        let tokens = rest.split('/').map(|t| unescape(t).ok_or_else(|| bad_escape(raw))).collect::<Result<_, _>>()?;
        Ok(Pointer { raw, tokens })
    }

    fn missing(&self) -> PatchError {
        PatchError::MissingPath { path: self.raw.to_string() }
    }

    fn split_last(&self) -> Option<(&String, &[String])> {
        self.tokens.split_last()
    }
}

fn bad_escape(raw: &str) -> PatchError {
    PatchError::invalid(raw, "'~' must be followed by '0' or '1'")
}

/// `~1` is `/` and `~0` is `~`; any other `~` sequence is malformed.
fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// An array index as RFC 6901 spells it: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn get<'v>(doc: &'v Value, pointer: &Pointer) -> Result<&'v Value, PatchError> {
    let mut current = doc;
    for token in &pointer.tokens {
        current = match current {
            Value::Object(map) => map.get(token),
            Value::Array(items) => array_index(token).and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| pointer.missing())?;
    }
    Ok(current)
}

fn get_mut<'v>(doc: &'v mut Value, tokens: &[String], pointer: &Pointer) -> Result<&'v mut Value, PatchError> {
    let mut current = doc;
    for token in tokens {
        current = match current {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => array_index(token).and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| pointer.missing())?;
    }
    Ok(current)
}

fn add(doc: &mut Value, pointer: &Pointer, value: Value) -> Result<(), PatchError> {
    let Some((last, parents)) = pointer.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parents, pointer)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" { Some(items.len()) } else { array_index(last) };
            match index {
                Some(i) if i <= items.len() => {
                    items.insert(i, value);
                    Ok(())
                }
                _ => Err(pointer.missing()),
            }
        }
        _ => Err(pointer.missing()),
    }
}

fn remove(doc: &mut Value, pointer: &Pointer) -> Result<Value, PatchError> {
    let Some((last, parents)) = pointer.split_last() else {
        return Err(PatchError::invalid(pointer.raw, "the whole document cannot be removed"));
    };
    match get_mut(doc, parents, pointer)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| pointer.missing()),
        Value::Array(items) => match array_index(last) {
            Some(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(pointer.missing()),
        },
        _ => Err(pointer.missing()),
    }
}

fn replace(doc: &mut Value, pointer: &Pointer, value: Value) -> Result<(), PatchError> {
    let Some((last, parents)) = pointer.split_last() else {
        *doc = value;
        return Ok(());
    };
    let slot = match get_mut(doc, parents, pointer)? {
        Value::Object(map) => map.get_mut(last),
        Value::Array(items) => array_index(last).and_then(|i| items.get_mut(i)),
        _ => None,
    };
    *slot.ok_or_else(|| pointer.missing())? = value;
    Ok(())
}

/// RFC 6902 §4.6 equality: numbers compare by value (`1` equals `1.0`), objects ignore member
/// order, arrays compare element-wise.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                    (Some(p), Some(q), _, _) => p == q,
                    (_, _, Some(p), Some(q)) => p == q,
                    _ => x.as_f64().is_some() && x.as_f64() == y.as_f64(),
                }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_applies_every_operation() {
        let mut doc = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "add", "path": "/a/0", "value": 0},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "copy", "from": "/b", "path": "/d"},
                {"op": "move", "from": "/d/c", "path": "/e"},
                {"op": "remove", "path": "/a/1"},
                {"op": "test", "path": "/e", "value": 2},
                {"op": "add", "path": "/n", "value": null}
            ]),
        )
        .expect("applies");
        assert_eq!(doc, json!({"a": [0, 2, 3], "b": {"c": 2}, "d": {}, "e": 2, "n": null}));
    }

    #[test]
    fn json_patch_test_failure_is_distinguishable() {
        let mut doc = json!({"metadata": {"resourceVersion": "5"}});
        let stale = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]);
        assert_eq!(
            json_patch(&mut doc, &stale),
            Err(PatchError::TestFailed { path: "/metadata/resourceVersion".into() })
        );
        let missing = json!([{"op": "test", "path": "/metadata/uid", "value": "x"}]);
        assert_eq!(json_patch(&mut doc, &missing), Err(PatchError::TestFailed { path: "/metadata/uid".into() }));
        let current = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "5"}]);
        assert_eq!(json_patch(&mut doc, &current), Ok(()));
    }

    /// The exact body `kubectl rollout undo deployment/web` sends.
    #[test]
    fn json_patch_rollout_undo_replaces_template_and_annotations() {
        let mut deploy = json!({
            "metadata": {"name": "web", "resourceVersion": "7",
                         "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}}}
        });
        let undo = json!([
            {"op": "replace", "path": "/spec/template", "value": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}},
            {"op": "replace", "path": "/metadata/annotations", "value": {
                "deployment.kubernetes.io/revision": "2"}}
        ]);
        json_patch(&mut deploy, &undo).expect("applies");
        assert_eq!(deploy["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25");
        assert_eq!(deploy["spec"]["replicas"], 2);
        assert_eq!(deploy["metadata"]["annotations"], json!({"deployment.kubernetes.io/revision": "2"}));
    }

    #[test]
    fn json_patch_is_atomic_on_error() {
        let original = json!({"a": 1});
        let mut doc = original.clone();
        let ops = json!([{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/nope"}]);
        assert_eq!(json_patch(&mut doc, &ops), Err(PatchError::MissingPath { path: "/nope".into() }));
        assert_eq!(doc, original);
    }

    #[test]
    fn json_patch_unescapes_pointer_tokens() {
        let mut doc = json!({"metadata": {"annotations": {}}});
        let ops = json!([
            {"op": "add", "path": "/metadata/annotations/kubectl.kubernetes.io~1restartedAt", "value": "now"},
            {"op": "add", "path": "/metadata/annotations/a~0b", "value": "tilde"}
        ]);
        json_patch(&mut doc, &ops).expect("applies");
        assert_eq!(doc["metadata"]["annotations"], json!({"kubectl.kubernetes.io/restartedAt": "now", "a~b": "tilde"}));
    }

    #[test]
    fn json_patch_rejects_malformed_pointers_and_indices() {
        let mut doc = json!({"a": [1, 2]});
        for path in ["a", "/a/~2"] {
            let err = json_patch(&mut doc, &json!([{"op": "remove", "path": path}]));
            assert!(matches!(err, Err(PatchError::Invalid { .. })), "{path}: {err:?}");
        }
        for path in ["/a/01", "/a/+1", "/a/2", "/a/-"] {
            let err = json_patch(&mut doc, &json!([{"op": "remove", "path": path}]));
            assert_eq!(err, Err(PatchError::MissingPath { path: path.into() }));
        }
        let err = json_patch(&mut doc, &json!([{"op": "add", "path": "/a/3", "value": 0}]));
        assert_eq!(err, Err(PatchError::MissingPath { path: "/a/3".into() }));
    }

    #[test]
    fn json_patch_rejects_malformed_operations() {
        let mut doc = json!({});
        for ops in [
            json!({"op": "add"}),
            json!([1]),
            json!([{"path": "/a"}]),
            json!([{"op": "add", "path": "/a"}]),
            json!([{"op": "copy", "path": "/a"}]),
            json!([{"op": "frobnicate", "path": "/a"}]),
            json!([{"op": "remove", "path": ""}]),
        ] {
            assert!(matches!(json_patch(&mut doc, &ops), Err(PatchError::Invalid { .. })), "{ops}");
        }
    }

    #[test]
    fn json_patch_move_into_own_child_is_rejected() {
        let mut doc = json!({"a": {"b": {}}});
        let err = json_patch(&mut doc, &json!([{"op": "move", "from": "/a", "path": "/a/b/c"}]));
        assert!(matches!(err, Err(PatchError::Invalid { .. })));
        json_patch(&mut doc, &json!([{"op": "move", "from": "/a", "path": "/a"}])).expect("no-op move");
        assert_eq!(doc, json!({"a": {"b": {}}}));
    }

    #[test]
    fn json_patch_replace_requires_existing_target() {
        let mut doc = json!({"metadata": {}});
        let err = json_patch(&mut doc, &json!([{"op": "replace", "path": "/metadata/annotations", "value": {}}]));
        assert_eq!(err, Err(PatchError::MissingPath { path: "/metadata/annotations".into() }));
        json_patch(&mut doc, &json!([{"op": "replace", "path": "", "value": [1]}])).expect("replaces root");
        assert_eq!(doc, json!([1]));
    }

    #[test]
    fn json_patch_test_compares_numbers_by_value() {
        let mut doc = json!({"n": 1, "o": {"a": 1, "b": [2.0]}});
        let ops = json!([{"op": "test", "path": "/n", "value": 1.0}, {"op": "test", "path": "/o", "value": {"b": [2], "a": 1}}]);
        assert_eq!(json_patch(&mut doc, &ops), Ok(()));
    }

    #[test]
    fn json_patch_errors_name_the_operation_or_path() {
        let mut doc = json!({});
        let err =
            json_patch(&mut doc, &json!([{"op": "add", "path": "/a", "value": 1}, {"op": "bogus", "path": "/a"}]))
                .expect_err("fails");
        assert_eq!(err.to_string(), "invalid patch at 'operation 1': unknown operation \"bogus\"");
        let err = json_patch(&mut doc, &json!([{"op": "remove", "path": "/spec/x"}])).expect_err("fails");
        assert_eq!(err.to_string(), "path '/spec/x' does not exist");
    }
}
