//! RFC 6902 JSON patch.

use crate::PatchError;
use serde_json::Value;

/// Splits a JSON pointer into unescaped tokens.
fn tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(PatchError::Invalid(format!("path {pointer:?} must start with '/'")));
    };
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn parent_and_last<'a>(target: &'a mut Value, pointer: &str) -> Result<(&'a mut Value, String), PatchError> {
    let mut toks = tokens(pointer)?;
    let last =
        toks.pop().ok_or_else(|| PatchError::Invalid("the root cannot be the target of this operation".into()))?;
    let mut current = target;
    for tok in &toks {
        current = step(current, tok).ok_or_else(|| PatchError::MissingPath { path: pointer.to_string() })?;
    }
    Ok((current, last))
}

fn step<'a>(value: &'a mut Value, tok: &str) -> Option<&'a mut Value> {
    match value {
        Value::Object(m) => m.get_mut(tok),
        Value::Array(a) => tok.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
        _ => None,
    }
}

fn get<'a>(target: &'a Value, pointer: &str) -> Result<&'a Value, PatchError> {
    target.pointer(pointer).ok_or_else(|| PatchError::MissingPath { path: pointer.to_string() })
}

fn add(target: &mut Value, pointer: &str, value: Value) -> Result<(), PatchError> {
    if pointer.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = parent_and_last(target, pointer)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let index = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().map_err(|_| PatchError::MissingPath { path: pointer.into() })?
            };
            if index > a.len() {
                return Err(PatchError::MissingPath { path: pointer.into() });
            }
            a.insert(index, value);
            Ok(())
        }
        _ => Err(PatchError::MissingPath { path: pointer.into() }),
    }
}

fn remove(target: &mut Value, pointer: &str) -> Result<Value, PatchError> {
    let (parent, last) = parent_and_last(target, pointer)?;
    let missing = || PatchError::MissingPath { path: pointer.to_string() };
    match parent {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let index = last.parse::<usize>().map_err(|_| missing())?;
            if index >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(index))
        }
        _ => Err(missing()),
    }
}

/// Applies an RFC 6902 patch (an array of operations). On error the target may be partly
/// patched: callers patch a copy.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), PatchError> {
    let ops =
        ops.as_array().ok_or_else(|| PatchError::Invalid("a JSON patch must be an array of operations".into()))?;
    for op in ops {
        let path = op["path"].as_str().ok_or_else(|| PatchError::Invalid(format!("operation without path: {op}")))?;
        let value =
            || op.get("value").cloned().ok_or_else(|| PatchError::Invalid(format!("operation without value: {op}")));
        let from = || op["from"].as_str().ok_or_else(|| PatchError::Invalid(format!("operation without from: {op}")));
        match op["op"].as_str() {
            Some("add") => add(target, path, value()?)?,
            Some("remove") => {
                remove(target, path)?;
            }
            Some("replace") => {
                let v = value()?;
                if path.is_empty() {
                    *target = v;
                } else {
                    remove(target, path)?;
                    add(target, path, v)?;
                }
            }
            Some("move") => {
                let moved = remove(target, from()?)?;
                add(target, path, moved)?;
            }
            Some("copy") => {
                let copied = get(target, from()?)?.clone();
                add(target, path, copied)?;
            }
            Some("test") => {
                let expected = value()?;
                if target.pointer(path) != Some(&expected) {
                    return Err(PatchError::TestFailed { path: path.to_string() });
                }
            }
            other => return Err(PatchError::Invalid(format!("unknown operation {other:?}"))),
        }
    }
    Ok(())
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
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "copy", "from": "/b", "path": "/d"},
                {"op": "move", "from": "/d/c", "path": "/e"},
                {"op": "remove", "path": "/a/0"},
                {"op": "test", "path": "/e", "value": 2}
            ]),
        )
        .expect("applies");
        assert_eq!(doc, json!({"a": [2, 3], "b": {"c": 2}, "d": {}, "e": 2}));
    }

    #[test]
    fn json_patch_test_failure_is_distinguishable() {
        let mut doc = json!({"metadata": {"resourceVersion": "5"}});
        let err = json_patch(&mut doc, &json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]));
        assert_eq!(err, Err(PatchError::TestFailed { path: "/metadata/resourceVersion".into() }));
    }

    #[test]
    fn json_patch_rollout_undo_shape_replaces_template() {
        let mut doc = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"template": {"x": 1}}});
        json_patch(&mut doc, &json!([
            {"op": "replace", "path": "/spec/template", "value": {"metadata": {"creationTimestamp": null}, "spec": {}}},
            {"op": "replace", "path": "/metadata/annotations", "value": {"b": "2"}}
        ])).expect("applies");
        assert_eq!(doc["metadata"]["annotations"], json!({"b": "2"}));
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut doc, &json!({"op": "add"})).is_err());
    }
}
