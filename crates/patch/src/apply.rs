//! Server-side apply: which fields an applied configuration owns, how it merges into the live
//! object, and which fields it would take from another manager.
//!
//! The API server keeps one [`FieldSet`] per field manager in `metadata.managedFields`. An apply
//! request then runs in three steps, all pure and here:
//! 1. [`field_set`] of the applied configuration: what this manager now owns;
//! 2. [`conflicts`] against every other manager's set: fields both own whose values differ
//!    (the server answers 409 unless `force=true`, in which case the others lose them);
//! 3. [`apply`]: the configuration merged into the live object (applied values win, keyed
//!    lists merge element by element, other lists are replaced), minus the fields this manager
//!    applied last time and no longer does.
//!
//! Lists follow the same [`MergeSchema`] as strategic merge patch; without one (custom
//! resources) every list is atomic. Multi-field list keys (`containerPort` + `protocol`
//! upstream) are simplified to the single strategic merge key.

use crate::fieldset::{canonical, display, FieldSet, Path, PathElement};
use crate::strategic::{ListStrategy, MergeSchema};
use crate::PatchError;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Metadata fields the server owns, never a manager (as upstream strips them).
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// Whether a top-level path is the server's (type fields and server-owned metadata).
fn server_owned(path: &[PathElement]) -> bool {
    match path {
        [PathElement::Field(f), ..] if f == "apiVersion" || f == "kind" => true,
        [PathElement::Field(m), PathElement::Field(f), ..] if m == "metadata" => SERVER_METADATA.contains(&f.as_str()),
        _ => false,
    }
}

fn strategy_at(schema: Option<&dyn MergeSchema>, names: &[String]) -> ListStrategy {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    schema.map_or(ListStrategy::Replace, |s| s.list_strategy(&names))
}

/// The keyed strategy of a list, when its elements can be merged by key.
fn merge_key(strategy: ListStrategy, items: &[Value]) -> Option<&'static str> {
    match strategy {
        ListStrategy::MergeByKey(key) if items.iter().all(Value::is_object) => Some(key),
        _ => None,
    }
}

/// The fields an applied configuration sets: every leaf (scalars, empty objects and lists,
/// atomic lists), every element of a keyed list (`k:`, with its fields) and every member of a
/// set-like list (`v:`). `null` sets nothing; `apiVersion`, `kind` and server-owned metadata
/// (`name`, `uid`, `resourceVersion`, …) are never owned. Keyed elements without their key are
/// skipped ([`apply`] rejects them).
pub fn field_set(obj: &Value, schema: Option<&dyn MergeSchema>) -> FieldSet {
    struct Walker<'s> {
        schema: Option<&'s dyn MergeSchema>,
        names: Vec<String>,
        path: Path,
        out: BTreeSet<Path>,
    }
    impl Walker<'_> {
        fn visit(&mut self, value: &Value) {
            match value {
                Value::Null => {}
                Value::Object(map) if !map.is_empty() => {
                    for (name, child) in map {
                        self.path.push(PathElement::Field(name.clone()));
                        if !server_owned(&self.path) {
                            self.names.push(name.clone());
                            self.visit(child);
                            self.names.pop();
                        }
                        self.path.pop();
                    }
                }
                Value::Array(items) if !items.is_empty() => {
                    let strategy = strategy_at(self.schema, &self.names);
                    if let Some(key) = merge_key(strategy, items) {
                        for item in items {
                            let Some(key_value) = item.get(key).filter(|v| !v.is_null()) else { continue };
                            self.path.push(PathElement::key(key, key_value));
                            self.out.insert(self.path.clone());
                            self.visit(item);
                            self.path.pop();
                        }
                    } else if strategy == ListStrategy::Replace {
                        self.out.insert(self.path.clone());
                    } else {
                        for item in items {
                            self.path.push(PathElement::value(item));
                            self.out.insert(self.path.clone());
                            self.path.pop();
                        }
                    }
                }
                _ => {
                    self.out.insert(self.path.clone());
                }
            }
        }
    }
    if !obj.is_object() {
        return FieldSet::default();
    }
    let mut walker = Walker { schema, names: Vec::new(), path: Vec::new(), out: BTreeSet::new() };
    walker.visit(obj);
    FieldSet::from_paths(walker.out)
}

/// Merges the applied configuration `applied` into `live` and removes what this manager owned
/// before (`previously_owned`) but no longer applies.
///
/// Applied values win; objects merge field by field; lists with a merge key merge element by
/// element (new elements appended); set-like lists gain the applied members; atomic lists are
/// replaced; `null` sets nothing. Pruning removes fields, keyed elements and set members, and
/// objects the pruning left empty (unless the configuration sets them). Upstream keeps what
/// another manager still owns: pass `previously_owned.without_shared(&others)` for that.
/// Errors: `applied` is not an object, or an element of a keyed list has no key or repeats one.
pub fn apply(
    live: &Value,
    applied: &Value,
    previously_owned: &FieldSet,
    schema: Option<&dyn MergeSchema>,
) -> Result<Value, PatchError> {
    if !applied.is_object() {
        return Err(PatchError::invalid(".", "an applied configuration must be a JSON object"));
    }
    let mut result = if live.is_object() { live.clone() } else { Value::Object(Map::new()) };
    let mut merger = Merger { schema, names: Vec::new(), path: Vec::new() };
    merger.merge(&mut result, applied)?;
    let now_owned = field_set(applied, schema);
    for path in previously_owned.difference(&now_owned).iter() {
        if !server_owned(path) {
            prune(&mut result, path, &now_owned, &mut Vec::new());
        }
    }
    Ok(result)
}

struct Merger<'s> {
    schema: Option<&'s dyn MergeSchema>,
    names: Vec<String>,
    path: Path,
}

impl Merger<'_> {
    fn merge(&mut self, target: &mut Value, applied: &Value) -> Result<(), PatchError> {
        match applied {
            Value::Null => Ok(()),
            Value::Object(map) => {
                if !target.is_object() {
                    *target = Value::Object(Map::new());
                }
                let Value::Object(target_map) = target else { return Ok(()) };
                for (name, value) in map.iter().filter(|(_, v)| !v.is_null()) {
                    self.names.push(name.clone());
                    self.path.push(PathElement::Field(name.clone()));
                    let result = self.merge(target_map.entry(name.clone()).or_insert(Value::Null), value);
                    self.path.pop();
                    self.names.pop();
                    result?;
                }
                Ok(())
            }
            Value::Array(items) => {
                let strategy = strategy_at(self.schema, &self.names);
                match merge_key(strategy, items) {
                    Some(key) => self.merge_keyed(target, items, key),
                    None if strategy == ListStrategy::Replace => {
                        *target = without_nulls(applied);
                        Ok(())
                    }
                    None => {
                        if !target.is_array() {
                            *target = Value::Array(Vec::new());
                        }
                        if let Value::Array(list) = target {
                            for item in items {
                                if !list.contains(item) {
                                    list.push(item.clone());
                                }
                            }
                        }
                        Ok(())
                    }
                }
            }
            scalar => {
                *target = scalar.clone();
                Ok(())
            }
        }
    }

    fn merge_keyed(&mut self, target: &mut Value, items: &[Value], key: &str) -> Result<(), PatchError> {
        let mut seen: Vec<&Value> = Vec::with_capacity(items.len());
        for item in items {
            let Some(key_value) = item.get(key).filter(|v| !v.is_null()) else {
                return Err(PatchError::MissingMergeKey { path: display(&self.path), key: key.to_string() });
            };
            if seen.contains(&key_value) {
                return Err(PatchError::invalid(
                    display(&self.path),
                    format!("duplicate entries for key {key}={key_value}"),
                ));
            }
            seen.push(key_value);
        }
        if !target.is_array() {
            *target = Value::Array(Vec::new());
        }
        let Value::Array(list) = target else { return Ok(()) };
        for (item, key_value) in items.iter().zip(seen) {
            match list.iter_mut().find(|e| e.get(key) == Some(key_value)) {
                Some(existing) => {
                    self.path.push(PathElement::key(key, key_value));
                    let result = self.merge(existing, item);
                    self.path.pop();
                    result?;
                }
                None => list.push(without_nulls(item)),
            }
        }
        Ok(())
    }
}

/// A copy of `value` without `null` object members (they set nothing).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Removes the node at `path` (relative to `value`, which sits at `at`). Returns whether
/// `value` is an object the removal left empty, so the caller can drop it unless the applied
/// configuration (`now_owned`) sets it.
fn prune(value: &mut Value, path: &[PathElement], now_owned: &FieldSet, at: &mut Path) -> bool {
    let Some((first, rest)) = path.split_first() else { return false };
    match (first, value) {
        (PathElement::Field(name), Value::Object(map)) => {
            if rest.is_empty() {
                if map.remove(name).is_none() {
                    return false;
                }
            } else {
                let Some(child) = map.get_mut(name) else { return false };
                at.push(first.clone());
                let emptied = prune(child, rest, now_owned, at);
                let still_set = now_owned.contains(at);
                at.pop();
                if !emptied || still_set {
                    return false;
                }
                map.remove(name);
            }
            map.is_empty()
        }
        (PathElement::Key(_), Value::Array(items)) => {
            let Some(fields) = first.key_fields() else { return false };
            let matches = |e: &Value| fields.iter().all(|(k, v)| e.get(k) == Some(v));
            if rest.is_empty() {
                items.retain(|e| !matches(e));
            } else if let Some(item) = items.iter_mut().find(|e| matches(e)) {
                at.push(first.clone());
                prune(item, rest, now_owned, at);
                at.pop();
            }
            false
        }
        (PathElement::Value(member), Value::Array(items)) if rest.is_empty() => {
            items.retain(|e| canonical(e) != *member);
            false
        }
        _ => false,
    }
}

/// The value at `path`, if `value` has one.
fn lookup<'v>(value: &'v Value, path: &[PathElement]) -> Option<&'v Value> {
    let mut current = value;
    for element in path {
        current = match element {
            PathElement::Field(name) => current.get(name)?,
            PathElement::Key(_) => {
                let fields = element.key_fields()?;
                current.as_array()?.iter().find(|e| fields.iter().all(|(k, v)| e.get(k) == Some(v)))?
            }
            PathElement::Value(member) => current.as_array()?.iter().find(|e| canonical(e) == *member)?,
            PathElement::Index(i) => current.as_array()?.get(*i)?,
        };
    }
    Some(current)
}

/// The fields an apply would take from another manager: owned by both `applied_set` (the
/// applying manager's [`field_set`]) and `other_set`, present in `live`, with a different value
/// in `applied`. List elements and set members are not values and never conflict by
/// themselves. Paths read as upstream prints them: `.spec.replicas`,
/// `.spec.template.spec.containers[name="web"].image`.
pub fn conflicts(applied_set: &FieldSet, other_set: &FieldSet, live: &Value, applied: &Value) -> Vec<String> {
    applied_set
        .intersection(other_set)
        .iter()
        .filter(|path| matches!(path.last(), Some(PathElement::Field(_))))
        .filter(|path| matches!((lookup(live, path), lookup(applied, path)), (Some(l), Some(a)) if l != a))
        .map(|path| display(path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuiltinSchema;
    use serde_json::json;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn schema() -> BuiltinSchema {
        BuiltinSchema::for_kind("Deployment").expect("built-in kind")
    }

    fn set_of(obj: &Value) -> FieldSet {
        field_set(obj, Some(&schema()))
    }

    #[test]
    fn field_set_matches_upstream_fields_v1() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "nginx", "labels": {"app": "nginx"}, "resourceVersion": "1"},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}});
        let set = field_set(&pod, Some(&BuiltinSchema::for_kind("Pod").expect("built-in kind")));
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}}})
        );
    }

    #[test]
    fn field_set_round_trips_through_fields_v1() {
        let set = set_of(&deploy(2, "a:1"));
        let v1 = set.to_fields_v1();
        assert_eq!(FieldSet::from_fields_v1(&v1), Ok(set.clone()));
        let text = serde_json::to_string(&v1).expect("serializes");
        let reparsed: Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(FieldSet::from_fields_v1(&reparsed), Ok(set));
    }

    #[test]
    fn field_set_owns_set_members_atomic_lists_and_empty_leaves() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"], "annotations": {}},
                         "spec": {"template": {"spec": {"tolerations": [{"key": "k"}], "volumes": [],
                                                        "nodeName": null}}}});
        assert_eq!(
            set_of(&obj).paths(),
            [
                ".metadata.annotations",
                ".metadata.finalizers[=\"a\"]",
                ".metadata.finalizers[=\"b\"]",
                ".spec.template.spec.tolerations",
                ".spec.template.spec.volumes",
            ]
        );
        assert_eq!(field_set(&obj, None).paths()[1], ".metadata.finalizers", "no schema: atomic lists");
        assert!(field_set(&json!([1]), None).is_empty());
    }

    #[test]
    fn apply_merges_applied_values_and_keeps_the_rest() {
        let mut live = deploy(2, "a:1");
        live["metadata"]["uid"] = json!("u1");
        live["status"] = json!({"replicas": 2});
        live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "sidecar", "image": "s:1"}));
        let applied = deploy(3, "a:2");
        let owned = set_of(&applied);
        let merged = apply(&live, &applied, &owned, Some(&schema())).expect("applies");
        assert_eq!(merged["spec"]["replicas"], 3);
        assert_eq!(merged["metadata"]["uid"], "u1");
        assert_eq!(merged["status"]["replicas"], 2);
        let containers = &merged["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "a:2");
        assert_eq!(containers[0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(containers[1]["name"], "sidecar");
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let mut first = deploy(2, "a:1");
        first["metadata"]["labels"]["tier"] = json!("x");
        first["metadata"]["annotations"] = json!({"note": "n"});
        first["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "log", "image": "l:1"}));
        let owned = set_of(&first);
        let live = apply(&json!({}), &first, &FieldSet::default(), Some(&schema())).expect("applies");
        let second = deploy(2, "a:1");
        let merged = apply(&live, &second, &owned, Some(&schema())).expect("applies");
        assert_eq!(merged["metadata"]["labels"], json!({"app": "web"}), "dropped label removed");
        assert!(merged["metadata"].get("annotations").is_none(), "emptied map removed");
        assert_eq!(merged["metadata"]["name"], "web", "server metadata is never pruned");
        assert_eq!(merged["spec"]["template"]["spec"]["containers"], json!([{"name": "web", "image": "a:1"}]));
    }

    #[test]
    fn apply_keeps_fields_other_managers_still_own() {
        let mine_before = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "a:1"}]}}}});
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "a:1", "env": [{"name": "X", "value": "1"}]}]}}}});
        let theirs = set_of(&json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "X", "value": "1"}]}]}}}}));
        let prune_set = set_of(&mine_before).without_shared(&theirs);
        let merged = apply(&live, &json!({"spec": {}}), &prune_set, Some(&schema())).expect("applies");
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "env": [{"name": "X", "value": "1"}]}])
        );
    }

    #[test]
    fn apply_replaces_atomic_lists_and_unions_sets() {
        let live =
            json!({"metadata": {"finalizers": ["x"]}, "spec": {"template": {"spec": {"tolerations": [{"key": "a"}]}}}});
        let applied =
            json!({"metadata": {"finalizers": ["y"]}, "spec": {"template": {"spec": {"tolerations": [{"key": "b"}]}}}});
        let merged = apply(&live, &applied, &FieldSet::default(), Some(&schema())).expect("applies");
        assert_eq!(merged["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(merged["spec"]["template"]["spec"]["tolerations"], json!([{"key": "b"}]));
        let owned = set_of(&applied);
        let merged =
            apply(&merged, &json!({"metadata": {"finalizers": []}}), &owned, Some(&schema())).expect("applies");
        assert_eq!(merged["metadata"]["finalizers"], json!(["x"]), "only the member this manager applied goes");
        assert!(merged["spec"]["template"]["spec"].get("tolerations").is_none());
    }

    #[test]
    fn apply_without_schema_treats_lists_as_atomic() {
        let live = json!({"spec": {"items": [{"name": "a"}, {"name": "b"}]}});
        let merged = apply(&live, &json!({"spec": {"items": [{"name": "c", "x": null}]}}), &FieldSet::default(), None)
            .expect("applies");
        assert_eq!(merged, json!({"spec": {"items": [{"name": "c"}]}}));
    }

    #[test]
    fn apply_rejects_missing_and_duplicate_merge_keys() {
        let missing = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert_eq!(
            apply(&json!({}), &missing, &FieldSet::default(), Some(&schema())),
            Err(PatchError::MissingMergeKey { path: ".spec.template.spec.containers".into(), key: "name".into() })
        );
        let duplicate = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
        let err = apply(&json!({}), &duplicate, &FieldSet::default(), Some(&schema())).expect_err("duplicate");
        assert!(err.to_string().contains("duplicate entries for key name=\"a\""), "{err}");
        assert!(apply(&json!({}), &json!([]), &FieldSet::default(), None).is_err());
    }

    #[test]
    fn conflicts_name_fields_with_differing_values() {
        let live = deploy(2, "a:1");
        let mine = set_of(&live);
        let theirs_applied = deploy(5, "a:2");
        let theirs = set_of(&theirs_applied);
        assert_eq!(
            conflicts(&theirs, &mine, &live, &theirs_applied),
            [".spec.replicas", ".spec.template.spec.containers[name=\"web\"].image"]
        );
    }

    #[test]
    fn conflicts_ignore_equal_values_and_unowned_fields() {
        let live = deploy(2, "a:1");
        let mine = set_of(&live);
        assert!(conflicts(&mine, &mine, &live, &live).is_empty());
        let scaler = set_of(&json!({"spec": {"replicas": 2}}));
        let applied = json!({"metadata": {"labels": {"app": "other"}}});
        assert!(conflicts(&set_of(&applied), &scaler, &live, &applied).is_empty());
    }
}
