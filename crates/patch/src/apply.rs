//! Server-side apply: the set of fields an applied configuration owns (`FieldsV1`), the merge
//! of an applied configuration into the live object, and conflict detection between managers.

use crate::strategic::{ListStrategy, MergeSchema};
use crate::PatchError;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// One step of a field path, as `FieldsV1` names them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Element {
    /// `f:name` — a field of an object.
    Field(String),
    /// `k:{"name":"web"}` — a list element identified by its merge key (JSON of the key object).
    Key(String),
    /// `v:"value"` — a member of a set-like list of scalars (JSON of the value).
    Value(String),
    /// `.` — the list element itself (as opposed to its fields).
    Itself,
}

/// A set of owned field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    paths: BTreeSet<Vec<Element>>,
}

/// Metadata fields owned by the server, never by a manager.
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

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet { paths: self.paths.union(&other.paths).cloned().collect() }
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet { paths: self.paths.difference(&other.paths).cloned().collect() }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet { paths: self.paths.intersection(&other.paths).cloned().collect() }
    }

    /// The `FieldsV1` JSON form (`{"f:spec":{"f:replicas":{}}}`).
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.paths {
            let mut node = &mut root;
            for element in path {
                let key = match element {
                    Element::Field(name) => format!("f:{name}"),
                    Element::Key(k) => format!("k:{k}"),
                    Element::Value(v) => format!("v:{v}"),
                    Element::Itself => ".".to_string(),
                };
                let entry = node.entry(key).or_insert_with(|| json!({}));
                let Value::Object(next) = entry else { break };
                node = next;
            }
        }
        Value::Object(root)
    }

    /// Parses the `FieldsV1` form; leaves (`{}`) become owned paths.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, PatchError> {
        fn walk(
            node: &Map<String, Value>,
            prefix: &mut Vec<Element>,
            out: &mut BTreeSet<Vec<Element>>,
        ) -> Result<(), PatchError> {
            for (key, child) in node {
                let element = if key == "." {
                    Element::Itself
                } else if let Some(name) = key.strip_prefix("f:") {
                    Element::Field(name.to_string())
                } else if let Some(k) = key.strip_prefix("k:") {
                    Element::Key(k.to_string())
                } else if let Some(v) = key.strip_prefix("v:") {
                    Element::Value(v.to_string())
                } else {
                    return Err(PatchError::Invalid(format!("unknown FieldsV1 key {key:?}")));
                };
                prefix.push(element);
                match child.as_object() {
                    Some(m) if !m.is_empty() => walk(m, prefix, out)?,
                    _ => {
                        out.insert(prefix.clone());
                    }
                }
                prefix.pop();
            }
            Ok(())
        }
        let mut paths = BTreeSet::new();
        if let Some(map) = value.as_object() {
            walk(map, &mut Vec::new(), &mut paths)?;
        }
        Ok(FieldSet { paths })
    }
}

fn strategy_at(schema: Option<&dyn MergeSchema>, names: &[String]) -> ListStrategy {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    schema.map_or(ListStrategy::Replace, |s| s.list_strategy(&refs))
}

/// The fields an applied configuration sets.
pub fn field_set(obj: &Value, schema: Option<&dyn MergeSchema>) -> FieldSet {
    let mut paths = BTreeSet::new();
    let Some(map) = obj.as_object() else { return FieldSet::default() };
    for (key, value) in map {
        if key == "apiVersion" || key == "kind" {
            continue;
        }
        let mut prefix = vec![Element::Field(key.clone())];
        let mut names = vec![key.clone()];
        if key == "metadata" {
            if let Some(meta) = value.as_object() {
                for (mk, mv) in meta.iter().filter(|(k, _)| !SERVER_METADATA.contains(&k.as_str())) {
                    prefix.push(Element::Field(mk.clone()));
                    names.push(mk.clone());
                    collect(mv, &mut prefix, &mut names, schema, &mut paths);
                    prefix.pop();
                    names.pop();
                }
            }
            continue;
        }
        collect(value, &mut prefix, &mut names, schema, &mut paths);
    }
    FieldSet { paths }
}

fn collect(
    value: &Value,
    prefix: &mut Vec<Element>,
    names: &mut Vec<String>,
    schema: Option<&dyn MergeSchema>,
    out: &mut BTreeSet<Vec<Element>>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(Element::Field(k.clone()));
                names.push(k.clone());
                collect(v, prefix, names, schema, out);
                prefix.pop();
                names.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match strategy_at(schema, names) {
            ListStrategy::MergeByKey(key) => {
                for item in items {
                    let Some(key_value) = item.get(key) else { continue };
                    prefix.push(Element::Key(json!({ key: key_value }).to_string()));
                    let mut itself = prefix.clone();
                    itself.push(Element::Itself);
                    out.insert(itself);
                    collect(item, prefix, names, schema, out);
                    prefix.pop();
                }
            }
            ListStrategy::MergePrimitives => {
                for item in items {
                    prefix.push(Element::Value(item.to_string()));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            ListStrategy::Replace => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// Merges `applied` into `live`: applied values win, keyed lists merge element by element,
/// atomic lists are replaced; then fields in `previously_owned` that the applied configuration
/// no longer sets are removed.
pub fn apply(
    live: &Value,
    applied: &Value,
    previously_owned: &FieldSet,
    schema: Option<&dyn MergeSchema>,
) -> Result<Value, PatchError> {
    let mut result = live.clone();
    let mut names = Vec::new();
    merge_applied(&mut result, applied, &mut names, schema);
    let now_owned = field_set(applied, schema);
    for path in previously_owned.difference(&now_owned).paths {
        remove_path(&mut result, &path);
    }
    Ok(result)
}

fn merge_applied(target: &mut Value, applied: &Value, names: &mut Vec<String>, schema: Option<&dyn MergeSchema>) {
    match applied {
        Value::Object(map) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(target_map) = target else { return };
            for (k, v) in map {
                names.push(k.clone());
                merge_applied(target_map.entry(k.clone()).or_insert(Value::Null), v, names, schema);
                names.pop();
            }
        }
        Value::Array(items) => match strategy_at(schema, names) {
            ListStrategy::MergeByKey(key) => {
                if !target.is_array() {
                    *target = Value::Array(Vec::new());
                }
                let Value::Array(list) = target else { return };
                for item in items {
                    match item.get(key).and_then(|kv| list.iter().position(|e| e.get(key) == Some(kv))) {
                        Some(i) => merge_applied(&mut list[i], item, names, schema),
                        None => list.push(item.clone()),
                    }
                }
            }
            ListStrategy::MergePrimitives => {
                if !target.is_array() {
                    *target = Value::Array(Vec::new());
                }
                let Value::Array(list) = target else { return };
                for item in items {
                    if !list.contains(item) {
                        list.push(item.clone());
                    }
                }
            }
            ListStrategy::Replace => *target = applied.clone(),
        },
        scalar => *target = scalar.clone(),
    }
}

fn remove_path(target: &mut Value, path: &[Element]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut current = target;
    for (i, element) in parents.iter().enumerate() {
        let next_is_itself = parents.get(i + 1).is_none() && *last == Element::Itself;
        match element {
            Element::Field(name) => match current.get_mut(name) {
                Some(v) => current = v,
                None => return,
            },
            Element::Key(key_json) => {
                let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key_json) else { return };
                let Value::Array(list) = current else { return };
                let matches = |e: &Value| key.iter().all(|(k, v)| e.get(k) == Some(v));
                if next_is_itself {
                    list.retain(|e| !matches(e));
                    return;
                }
                match list.iter_mut().find(|e| matches(e)) {
                    Some(e) => current = e,
                    None => return,
                }
            }
            Element::Value(_) | Element::Itself => return,
        }
    }
    match last {
        Element::Field(name) => {
            if let Value::Object(map) = current {
                map.remove(name);
            }
        }
        Element::Value(v_json) => {
            if let (Value::Array(list), Ok(v)) = (current, serde_json::from_str::<Value>(v_json)) {
                list.retain(|e| *e != v);
            }
        }
        Element::Key(_) | Element::Itself => {}
    }
}

fn lookup<'a>(value: &'a Value, path: &[Element]) -> Option<&'a Value> {
    let mut current = value;
    for element in path {
        current = match element {
            Element::Field(name) => current.get(name)?,
            Element::Key(key_json) => {
                let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key_json) else { return None };
                current.as_array()?.iter().find(|e| key.iter().all(|(k, v)| e.get(k) == Some(v)))?
            }
            Element::Value(_) | Element::Itself => return Some(current),
        };
    }
    Some(current)
}

fn display(path: &[Element]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            Element::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Element::Key(k) => out.push_str(&format!("[{k}]")),
            Element::Value(v) => out.push_str(&format!("[={v}]")),
            Element::Itself => {}
        }
    }
    out
}

/// Fields both sets own whose live value differs from the applied one (`.spec.replicas`).
pub fn conflicts(applied_set: &FieldSet, other_set: &FieldSet, live: &Value, applied: &Value) -> Vec<String> {
    applied_set
        .intersection(other_set)
        .paths
        .iter()
        .filter(|path| path.last() != Some(&Element::Itself) && !matches!(path.last(), Some(Element::Value(_))))
        .filter(|path| lookup(live, path) != lookup(applied, path))
        .map(|path| display(path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuiltinSchema;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn field_set_round_trips_through_fields_v1() {
        let schema = BuiltinSchema::for_kind("Deployment").expect("schema");
        let set = field_set(&deploy(2, "a:1"), Some(&schema));
        let v1 = set.to_fields_v1();
        assert!(v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."].is_object());
        assert!(v1["f:metadata"]["f:labels"]["f:app"].is_object());
        assert!(v1["f:metadata"].get("f:name").is_none());
        assert_eq!(FieldSet::from_fields_v1(&v1).expect("parses"), set);
        assert!(FieldSet::from_fields_v1(&json!({"x:bad": {}})).is_err());
    }

    #[test]
    fn apply_merges_and_removes_fields_no_longer_applied() {
        let schema = BuiltinSchema::for_kind("Deployment").expect("schema");
        let mut first = deploy(2, "a:1");
        first["metadata"]["labels"]["tier"] = json!("x");
        let owned = field_set(&first, Some(&schema));
        let mut live = first.clone();
        live["status"] = json!({"replicas": 2});
        let second = deploy(3, "a:2");
        let merged = apply(&live, &second, &owned, Some(&schema)).expect("applies");
        assert_eq!(merged["spec"]["replicas"], 3);
        assert_eq!(merged["spec"]["template"]["spec"]["containers"][0]["image"], "a:2");
        assert!(merged["metadata"]["labels"].get("tier").is_none(), "dropped label removed");
        assert_eq!(merged["status"]["replicas"], 2, "fields nobody applied stay");
    }

    #[test]
    fn conflicts_name_fields_with_differing_values() {
        let schema = BuiltinSchema::for_kind("Deployment").expect("schema");
        let live = deploy(2, "a:1");
        let mine = field_set(&live, Some(&schema));
        let theirs_applied = deploy(5, "a:1");
        let theirs = field_set(&theirs_applied, Some(&schema));
        assert_eq!(conflicts(&theirs, &mine, &live, &theirs_applied), vec![".spec.replicas"]);
        assert!(conflicts(&mine, &mine, &live, &live).is_empty());
    }
}
