//! Kubernetes strategic merge patch: a JSON merge patch where lists of objects merge element by
//! element (by a merge key such as `name`), plus the directives `$patch`, `$setElementOrder/`,
//! `$retainKeys` and `$deleteFromPrimitiveList/` that `kubectl apply` sends.

use crate::PatchError;
use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the whole list (atomic lists).
    Replace,
    /// Object elements merge by the named key field.
    MergeByKey(&'static str),
    /// Scalars merge as a set (e.g. `metadata.finalizers`).
    MergePrimitives,
}

/// The merge strategy of list fields, by their path of field names from the object root
/// (list indices are not part of the path).
pub trait MergeSchema {
    fn list_strategy(&self, path: &[&str]) -> ListStrategy;
}

/// Upstream's merge keys (`patchMergeKey`/`patchStrategy` tags of k8s.io/api) for the built-in
/// kinds Axle serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinSchema {
    /// Where the pod spec sits: `spec` for pods, `spec.template.spec` for workloads.
    pod_spec: Option<&'static [&'static str]>,
    kind: &'static str,
}

const POD_SPEC: &[&str] = &["spec"];
const TEMPLATE_POD_SPEC: &[&str] = &["spec", "template", "spec"];

impl BuiltinSchema {
    /// The schema of a built-in kind; None for kinds without strategic merge (custom resources).
    pub fn for_kind(kind: &str) -> Option<BuiltinSchema> {
        let (kind, pod_spec): (&'static str, Option<&'static [&'static str]>) = match kind {
            "Pod" => ("Pod", Some(POD_SPEC)),
            "Deployment" => ("Deployment", Some(TEMPLATE_POD_SPEC)),
            "ReplicaSet" => ("ReplicaSet", Some(TEMPLATE_POD_SPEC)),
            "DaemonSet" => ("DaemonSet", Some(TEMPLATE_POD_SPEC)),
            "Service" => ("Service", None),
            "ConfigMap" => ("ConfigMap", None),
            "Secret" => ("Secret", None),
            "Node" => ("Node", None),
            "Namespace" => ("Namespace", None),
            "Event" => ("Event", None),
            "ServiceAccount" => ("ServiceAccount", None),
            "Lease" => ("Lease", None),
            _ => return None,
        };
        Some(BuiltinSchema { pod_spec, kind })
    }
}

impl MergeSchema for BuiltinSchema {
    fn list_strategy(&self, path: &[&str]) -> ListStrategy {
        use ListStrategy::*;
        // Metadata lists, wherever an object's metadata sits (also pod templates).
        match path {
            [.., "metadata", "finalizers"] => return MergePrimitives,
            [.., "metadata", "ownerReferences"] => return MergeByKey("uid"),
            [.., "status", "conditions"] => return MergeByKey("type"),
            _ => {}
        }
        if let Some(prefix) = self.pod_spec {
            if let Some(rel) = path.strip_prefix(prefix) {
                return match rel {
                    ["containers" | "initContainers" | "ephemeralContainers"] => MergeByKey("name"),
                    ["containers" | "initContainers" | "ephemeralContainers", "env"] => MergeByKey("name"),
                    ["containers" | "initContainers" | "ephemeralContainers", "ports"] => MergeByKey("containerPort"),
                    ["containers" | "initContainers" | "ephemeralContainers", "volumeMounts"] => {
                        MergeByKey("mountPath")
                    }
                    ["containers" | "initContainers" | "ephemeralContainers", "volumeDevices"] => {
                        MergeByKey("devicePath")
                    }
                    ["containers" | "initContainers" | "ephemeralContainers", "resizePolicy"] => Replace,
                    ["volumes"] | ["imagePullSecrets"] | ["resourceClaims"] | ["schedulingGates"] => MergeByKey("name"),
                    ["hostAliases"] => MergeByKey("ip"),
                    ["topologySpreadConstraints"] => MergeByKey("topologyKey"),
                    _ => Replace,
                };
            }
        }
        match (self.kind, path) {
            ("Pod", ["status", "containerStatuses" | "initContainerStatuses"]) => Replace,
            ("Service", ["spec", "ports"]) => MergeByKey("port"),
            ("Node", ["status", "addresses"]) => MergeByKey("type"),
            ("Node", ["spec", "podCIDRs"]) => MergePrimitives,
            ("ServiceAccount", ["secrets"]) => MergeByKey("name"),
            _ => Replace,
        }
    }
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value, schema: &dyn MergeSchema) -> Result<(), PatchError> {
    let Value::Object(patch_map) = patch else {
        return Err(PatchError::Invalid("a strategic merge patch must be an object".into()));
    };
    let mut path = Vec::new();
    merge_value_map(target, patch_map, &mut path, schema)
}

fn merge_value_map(
    target: &mut Value,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    schema: &dyn MergeSchema,
) -> Result<(), PatchError> {
    match patch.get("$patch").map(|d| d.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            *target = strip_directives(&Value::Object(patch.clone()));
            return Ok(());
        }
        Some(Some("delete")) => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => return Err(PatchError::UnknownDirective(format!("{other:?}"))),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return Ok(()) };
    merge_map(map, patch, path, schema)
}

fn merge_map(
    map: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    schema: &dyn MergeSchema,
) -> Result<(), PatchError> {
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        path.push(key.clone());
        let result = merge_field(map, key, value, path, schema);
        path.pop();
        result?;
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVES) {
            if let (Some(Value::Array(list)), Some(remove)) = (map.get_mut(field), value.as_array()) {
                list.retain(|v| !remove.contains(v));
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(SET_ORDER) {
            path.push(field.to_string());
            let strategy = list_strategy(schema, path);
            path.pop();
            if let (Some(Value::Array(list)), Some(order)) = (map.get_mut(field), value.as_array()) {
                reorder(list, order, strategy);
            }
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        map.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn list_strategy(schema: &dyn MergeSchema, path: &[String]) -> ListStrategy {
    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
    schema.list_strategy(&refs)
}

fn merge_field(
    map: &mut Map<String, Value>,
    key: &str,
    value: &Value,
    path: &mut Vec<String>,
    schema: &dyn MergeSchema,
) -> Result<(), PatchError> {
    match value {
        Value::Null => {
            map.remove(key);
        }
        Value::Object(patch_obj) => {
            if patch_obj.get("$patch").and_then(Value::as_str) == Some("delete") {
                map.remove(key);
            } else {
                merge_value_map(map.entry(key.to_string()).or_insert(Value::Null), patch_obj, path, schema)?;
            }
        }
        Value::Array(items) => {
            let strategy = list_strategy(schema, path);
            let current = map.entry(key.to_string()).or_insert(Value::Null);
            match strategy {
                ListStrategy::Replace => *current = strip_directives(value),
                ListStrategy::MergePrimitives => {
                    if !current.is_array() {
                        *current = Value::Array(Vec::new());
                    }
                    if let Value::Array(list) = current {
                        for item in items {
                            if !list.contains(item) {
                                list.push(item.clone());
                            }
                        }
                    }
                }
                ListStrategy::MergeByKey(merge_key) => {
                    if !current.is_array() {
                        *current = Value::Array(Vec::new());
                    }
                    if let Value::Array(list) = current {
                        merge_list(list, items, merge_key, path, schema)?;
                    }
                }
            }
        }
        scalar => {
            map.insert(key.to_string(), scalar.clone());
        }
    }
    Ok(())
}

fn merge_list(
    list: &mut Vec<Value>,
    items: &[Value],
    merge_key: &str,
    path: &mut Vec<String>,
    schema: &dyn MergeSchema,
) -> Result<(), PatchError> {
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        *list = items.iter().filter(|i| i.get("$patch").is_none()).map(strip_directives).collect();
        return Ok(());
    }
    for item in items {
        let Value::Object(patch_obj) = item else {
            list.push(item.clone());
            continue;
        };
        let key_value = patch_obj.get(merge_key);
        let position = key_value.and_then(|kv| list.iter().position(|e| e.get(merge_key) == Some(kv)));
        match patch_obj.get("$patch").and_then(Value::as_str) {
            Some("delete") => {
                if let Some(kv) = key_value {
                    list.retain(|e| e.get(merge_key) != Some(kv));
                }
            }
            Some("replace") | Some("merge") | None => match position {
                Some(i) => merge_value_map(&mut list[i], patch_obj, path, schema)?,
                None => list.push(strip_directives(item)),
            },
            Some(other) => return Err(PatchError::UnknownDirective(other.to_string())),
        }
    }
    Ok(())
}

/// Orders `list` by `order` (elements or `{mergeKey: value}` stubs); elements the order does
/// not mention keep their relative position after the ordered ones.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let matches = |element: &Value, entry: &Value| match (strategy, entry) {
        (ListStrategy::MergeByKey(key), Value::Object(stub)) => {
            stub.get(key).is_some() && element.get(key) == stub.get(key)
        }
        _ => element == entry,
    };
    let mut ordered = Vec::with_capacity(list.len());
    let mut rest: Vec<Value> = std::mem::take(list);
    for entry in order {
        if let Some(i) = rest.iter().position(|e| matches(e, entry)) {
            ordered.push(rest.remove(i));
        }
    }
    ordered.extend(rest);
    *list = ordered;
}

/// A copy of `value` with every `$`-directive key removed.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_schema() -> BuiltinSchema {
        BuiltinSchema::for_kind("Pod").expect("pods have a schema")
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        strategic_merge_patch(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}),
            &pod_schema(),
        )
        .expect("patch");
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
        );
    }

    #[test]
    fn strategic_merge_set_element_order_reorders_and_delete_directive_removes() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                                    "containers": [{"name": "b", "$patch": "delete"}]}});
        strategic_merge_patch(&mut pod, &patch, &pod_schema()).expect("patch");
        assert_eq!(pod["spec"]["containers"], json!([{"name": "c"}, {"name": "a"}]));
    }

    #[test]
    fn strategic_merge_kubectl_apply_update_shape() {
        let mut deploy = json!({"metadata": {"annotations": {"x": "1"}}, "spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "web", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}]}]}}}});
        let patch = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": 3, "template": {"spec": {"$setElementOrder/containers": [{"name": "web"}],
                "containers": [{"name": "web", "image": "busybox:1.37", "$setElementOrder/env": [{"name": "A"}, {"name": "B"}], "env": [{"name": "B", "value": "2"}]}]}}}});
        strategic_merge_patch(&mut deploy, &patch, &BuiltinSchema::for_kind("Deployment").expect("schema"))
            .expect("patch");
        assert_eq!(deploy["spec"]["replicas"], 3);
        let c = &deploy["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "busybox:1.37");
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
        assert_eq!(deploy["metadata"]["annotations"]["x"], "1");
        assert!(!deploy.to_string().contains('$'));
    }

    #[test]
    fn strategic_merge_rollout_restart_adds_annotation() {
        let mut deploy = json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}});
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
        strategic_merge_patch(&mut deploy, &patch, &BuiltinSchema::for_kind("Deployment").expect("schema"))
            .expect("patch");
        assert_eq!(deploy["spec"]["template"]["metadata"]["labels"]["a"], "b");
        assert!(deploy["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());
    }

    #[test]
    fn strategic_merge_primitives_retain_keys_and_bad_directives() {
        let mut pod = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"strategy": {"type": "Recreate", "rollingUpdate": {"x": 1}}}});
        let patch = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
                           "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        strategic_merge_patch(&mut pod, &patch, &pod_schema()).expect("patch");
        assert_eq!(pod["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(pod["spec"]["strategy"], json!({"type": "Recreate"}));
        assert!(strategic_merge_patch(&mut pod, &json!({"spec": {"$patch": "explode"}}), &pod_schema()).is_err());
        assert!(strategic_merge_patch(&mut pod, &json!([1]), &pod_schema()).is_err());
        assert!(BuiltinSchema::for_kind("Widget").is_none());
    }
}
