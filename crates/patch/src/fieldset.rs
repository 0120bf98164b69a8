//! Sets of field paths, the currency of server-side apply ownership, and their `FieldsV1`
//! encoding.
//!
//! Every `metadata.managedFields` entry records, per field manager, the fields it owns as a
//! `FieldsV1` trie: `{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{}}}}}`.
//! Here such a trie is a flat set of paths so that ownership questions become set algebra:
//! what a manager stopped applying is `previous − current`, a conflict candidate is
//! `mine ∩ theirs`. Path elements are the four `FieldsV1` prefixes: `f:` a field, `k:` a list
//! element by its key fields, `v:` a member of a set of scalars, `i:` a list index. A path in
//! the set means its node is owned; in the trie that is a leaf `{}`, or `"."` for a node that
//! also has owned children.

use crate::PatchError;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PathElement {
    /// `f:name`: a field of an object.
    Field(String),
    /// `k:{"name":"web"}`: a list element, by the canonical JSON of its key fields.
    Key(String),
    /// `v:"value"`: a member of a set-like list of scalars, by its canonical JSON.
    Value(String),
    /// `i:0`: a list element by position (lists without keys that are not atomic).
    Index(usize),
}

/// A path from the object root.
pub(crate) type Path = Vec<PathElement>;

impl PathElement {
    /// The element of a list item identified by `key` having `value`.
    pub(crate) fn key(key: &str, value: &Value) -> PathElement {
        PathElement::Key(canonical(&Value::Object(Map::from_iter([(key.to_string(), value.clone())]))))
    }

    pub(crate) fn value(value: &Value) -> PathElement {
        PathElement::Value(canonical(value))
    }

    /// The key fields of a `k:` element.
    pub(crate) fn key_fields(&self) -> Option<Map<String, Value>> {
        match self {
            PathElement::Key(json) => match serde_json::from_str(json) {
                Ok(Value::Object(fields)) => Some(fields),
                _ => None,
            },
            _ => None,
        }
    }

    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(encoded: &str) -> Result<PathElement, String> {
        let json = |text: &str| serde_json::from_str::<Value>(text).map_err(|e| format!("{encoded:?}: {e}"));
        if let Some(name) = encoded.strip_prefix("f:") {
            Ok(PathElement::Field(name.to_string()))
        } else if let Some(text) = encoded.strip_prefix("k:") {
            match json(text)? {
                key @ Value::Object(_) => Ok(PathElement::Key(canonical(&key))),
                _ => Err(format!("{encoded:?}: a k: element must be a JSON object")),
            }
        } else if let Some(text) = encoded.strip_prefix("v:") {
            Ok(PathElement::Value(canonical(&json(text)?)))
        } else if let Some(index) = encoded.strip_prefix("i:") {
            index.parse().map(PathElement::Index).map_err(|_| format!("{encoded:?}: bad list index"))
        } else {
            Err(format!("{encoded:?} is not a FieldsV1 key (f:, k:, v:, i: or .)"))
        }
    }
}

/// JSON with object members sorted by name, so equal keys and values encode equally.
pub(crate) fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            let members: Vec<String> =
                sorted.into_iter().map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v))).collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        scalar => scalar.to_string(),
    }
}

/// The path as people (and upstream's conflict messages) write it:
/// `.spec.template.spec.containers[name="web"].image`.
pub(crate) fn display(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathElement::Key(_) => {
                let fields = element.key_fields().unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = write!(out, "[{}]", parts.join(","));
            }
            PathElement::Value(json) => {
                let _ = write!(out, "[={json}]");
            }
            PathElement::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// A set of owned field paths, convertible to and from the `FieldsV1` JSON form (also through
/// serde).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    paths: BTreeSet<Path>,
}

impl FieldSet {
    pub(crate) fn from_paths(paths: BTreeSet<Path>) -> FieldSet {
        let mut paths = paths;
        paths.remove(&Vec::new());
        FieldSet { paths }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter()
    }

    pub(crate) fn contains(&self, path: &[PathElement]) -> bool {
        self.paths.contains(path)
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The number of owned paths (leaves and list elements alike).
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

    /// The paths of `self` that no one in `others` still needs: those `others` do not own and
    /// that are not ancestors of paths `others` own (a list element someone else has fields in
    /// stays). This is what [`crate::apply`] should prune: pass
    /// `my_previous_set.without_shared(&union_of_other_managers)`.
    pub fn without_shared(&self, others: &FieldSet) -> FieldSet {
        let paths = self
            .paths
            .iter()
            .filter(|path| {
                let mut after = others.paths.range::<Path, _>((*path).clone()..);
                !after.next().is_some_and(|first| first.starts_with(path))
            })
            .cloned()
            .collect();
        FieldSet { paths }
    }

    /// Every owned path, as people write it (`.spec.replicas`, `.spec.containers[name="web"]`).
    pub fn paths(&self) -> Vec<String> {
        self.paths.iter().map(|p| display(p)).collect()
    }

    /// The `FieldsV1` JSON form.
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            children: BTreeMap<PathElement, Node>,
        }
        fn to_json(node: &Node) -> Value {
            let mut out = Map::new();
            if node.member && !node.children.is_empty() {
                out.insert(".".to_string(), Value::Object(Map::new()));
            }
            for (element, child) in &node.children {
                out.insert(element.encode(), to_json(child));
            }
            Value::Object(out)
        }
        let mut root = Node::default();
        for path in &self.paths {
            let mut node = &mut root;
            for element in path {
                node = node.children.entry(element.clone()).or_default();
            }
            node.member = true;
        }
        to_json(&root)
    }

    /// Parses the `FieldsV1` JSON form; `null` (no `fieldsV1`) is the empty set.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, PatchError> {
        fn walk(node: &Map<String, Value>, prefix: &mut Path, out: &mut BTreeSet<Path>) -> Result<(), PatchError> {
            for (key, child) in node {
                if key == "." {
                    if !prefix.is_empty() {
                        out.insert(prefix.clone());
                    }
                    continue;
                }
                let element = PathElement::decode(key).map_err(|reason| invalid(prefix, reason))?;
                let Value::Object(grandchildren) = child else {
                    return Err(invalid(prefix, format!("the value of {key:?} must be an object")));
                };
                prefix.push(element);
                if grandchildren.is_empty() {
                    out.insert(prefix.clone());
                } else {
                    walk(grandchildren, prefix, out)?;
                }
                prefix.pop();
            }
            Ok(())
        }
        fn invalid(prefix: &[PathElement], reason: String) -> PatchError {
            PatchError::invalid(format!("fieldsV1 {}", display(prefix)), reason)
        }
        let mut paths = BTreeSet::new();
        match value {
            Value::Null => {}
            Value::Object(map) => walk(map, &mut Vec::new(), &mut paths)?,
            _ => return Err(PatchError::invalid("fieldsV1", "FieldsV1 must be a JSON object")),
        }
        Ok(FieldSet { paths })
    }
}

impl serde::Serialize for FieldSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_fields_v1().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for FieldSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<FieldSet, D::Error> {
        let value = Value::deserialize(deserializer)?;
        FieldSet::from_fields_v1(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v1: Value) -> FieldSet {
        FieldSet::from_fields_v1(&v1).expect("valid FieldsV1")
    }

    #[test]
    fn fields_v1_round_trips_exactly() {
        let v1 = json!({"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{}}}}});
        let parsed = set(v1.clone());
        assert_eq!(parsed.len(), 3, "{:?}", parsed.paths());
        assert_eq!(parsed.to_fields_v1(), v1);
        assert_eq!(
            parsed.paths(),
            [".metadata.labels.app", ".spec.containers[name=\"nginx\"]", ".spec.containers[name=\"nginx\"].image"]
        );
    }

    #[test]
    fn fields_v1_canonicalizes_keys_and_values() {
        let a = set(
            json!({"f:ports": {"k:{\"protocol\":\"TCP\",\"containerPort\":80}": {}}, "f:finalizers": {"v:\"x\"": {}}}),
        );
        let b = set(
            json!({"f:ports": {"k:{\"containerPort\": 80, \"protocol\": \"TCP\"}": {}}, "f:finalizers": {"v: \"x\"": {}}}),
        );
        assert_eq!(a, b);
        assert_eq!(a.paths(), [".finalizers[=\"x\"]", ".ports[containerPort=80,protocol=\"TCP\"]"]);
        let indexed = set(json!({"f:list": {"i:0": {}}}));
        assert_eq!(indexed.to_fields_v1(), json!({"f:list": {"i:0": {}}}));
    }

    #[test]
    fn fields_v1_rejects_malformed_entries() {
        for bad in [
            json!({"x:bad": {}}),
            json!({"f:a": 1}),
            json!({"k:[1]": {}}),
            json!({"k:{oops": {}}),
            json!({"i:-1": {}}),
            json!("f:a"),
        ] {
            let err = FieldSet::from_fields_v1(&bad).expect_err("malformed");
            assert!(matches!(err, PatchError::Invalid { .. }), "{bad}: {err}");
        }
        assert_eq!(FieldSet::from_fields_v1(&Value::Null), Ok(FieldSet::default()));
    }

    #[test]
    fn fieldset_set_operations() {
        let a = set(json!({"f:spec": {"f:replicas": {}, "f:paused": {}}}));
        let b = set(json!({"f:spec": {"f:replicas": {}, "f:minReadySeconds": {}}}));
        assert_eq!(a.union(&b).len(), 3);
        assert_eq!(a.intersection(&b), set(json!({"f:spec": {"f:replicas": {}}})));
        assert_eq!(a.difference(&b), set(json!({"f:spec": {"f:paused": {}}})));
        assert!(a.difference(&a).is_empty());
        assert!(!a.is_empty());
    }

    #[test]
    fn fieldset_without_shared_keeps_what_others_need() {
        let mine = set(
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}}}, "f:paused": {}}}),
        );
        let theirs = set(json!({"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:env": {}}}, "f:paused": {}}}));
        assert_eq!(
            mine.without_shared(&theirs),
            set(json!({"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:name": {}, "f:image": {}}}}}))
        );
    }

    #[test]
    fn fieldset_serde_uses_fields_v1() {
        let v1 = json!({"f:data": {"f:key": {}}});
        let parsed: FieldSet = serde_json::from_value(v1.clone()).expect("deserializes");
        assert_eq!(serde_json::to_value(&parsed).expect("serializes"), v1);
        assert!(serde_json::from_value::<FieldSet>(json!({"nope": {}})).is_err());
    }
}
