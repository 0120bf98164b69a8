//! Admission-time validation of built-in kinds, reported as `Cause`s with Kubernetes field paths
//! so that kubectl prints its usual `The Pod "x" is invalid: * spec.containers: Required value`.

use crate::dependencies;
use crate::error::Cause;
use crate::meta::{dns_label_error, dns_subdomain_error, label_value_error, qualified_name_error};
use crate::selector::LabelSelector;
use serde_json::Value;
use std::collections::BTreeSet;

/// Metadata checks every kind shares. `label_names`: whether names must be DNS labels
/// (namespaces, services) rather than subdomains.
pub fn validate_metadata(kind: &str, obj: &Value, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = &obj["metadata"];
    match meta["name"].as_str() {
        None | Some("") => causes.push(Cause::required("metadata.name")),
        Some(name) => {
            let why = match kind {
                "Namespace" | "Service" => dns_label_error(name),
                // As Kubernetes: RBAC objects need only be valid path segments (system roles
                // have colons in their names).
                "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => path_segment_error(name),
                _ => dns_subdomain_error(name),
            };
            if let Some(why) = why {
                causes.push(Cause::invalid("metadata.name", &meta["name"], why));
            }
        }
    }
    if namespaced && meta["namespace"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("metadata.namespace"));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (key, value) in labels {
            if let Some(why) = qualified_name_error(key) {
                causes.push(Cause::invalid("metadata.labels", &Value::String(key.clone()), why));
            }
            match value.as_str() {
                Some(v) => {
                    if let Some(why) = label_value_error(v) {
                        causes.push(Cause::invalid(format!("metadata.labels.{key}"), value, why));
                    }
                }
                None => causes.push(Cause::invalid(format!("metadata.labels.{key}"), value, "must be a string")),
            }
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        let mut total = 0;
        for (key, value) in annotations {
            total += key.len() + value.as_str().map_or(0, str::len);
            if let Some(why) = qualified_name_error(key) {
                causes.push(Cause::invalid("metadata.annotations", &Value::String(key.clone()), why));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: "Too long: must have at most 262144 bytes".into(),
                field: "metadata.annotations".into(),
            });
        }
        if let Some(deps) = annotations.get(dependencies::ANNOTATION).and_then(Value::as_str) {
            if let Err(why) = dependencies::parse(deps) {
                causes.push(Cause::invalid(
                    format!("metadata.annotations[{}]", dependencies::ANNOTATION),
                    &Value::String(deps.into()),
                    why,
                ));
            }
        }
    }
    causes
}

/// Kind-specific checks of a new or updated object.
pub fn validate(kind: &str, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        "Pod" => validate_pod_spec(&obj["spec"], "spec", &mut causes),
        "Deployment" | "ReplicaSet" | "DaemonSet" => validate_workload(kind, obj, &mut causes),
        "Service" => validate_service(&obj["spec"], &mut causes),
        "Job" => crate::batch::validate_job_spec(&obj["spec"], "spec", &mut causes),
        "CronJob" => crate::batch::validate_cron_job(obj, &mut causes),
        "ConfigMap" => {
            for field in ["data", "binaryData"] {
                for key in obj[field].as_object().into_iter().flat_map(|m| m.keys()) {
                    if !valid_config_key(key) {
                        causes.push(Cause::invalid(
                            format!("{field}[{key}]"),
                            &Value::String(key.clone()),
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                        ));
                    }
                }
            }
        }
        "Event" if !obj["involvedObject"].is_object() => causes.push(Cause::required("involvedObject")),
        "CustomResourceDefinition" => validate_crd(obj, &mut causes),
        _ => {}
    }
    causes
}

/// Checks of an update against the stored object (immutable fields).
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet"
            if !old["spec"]["selector"].is_null() && old["spec"]["selector"] != new["spec"]["selector"] =>
        {
            causes.push(Cause::invalid("spec.selector", &new["spec"]["selector"], "field is immutable"));
        }
        "Job" => {
            // What a Job runs is fixed once it exists (upstream allows a few scheduling fields).
            for field in ["selector", "template", "completions", "completionMode", "podFailurePolicy"] {
                if old["spec"][field] != new["spec"][field] {
                    causes.push(Cause::invalid(format!("spec.{field}"), &new["spec"][field], "field is immutable"));
                }
            }
        }
        "Pod"
            if mutable_pod_spec_view(&old["spec"], &old["spec"])
                != mutable_pod_spec_view(&new["spec"], &old["spec"]) =>
        {
            causes.push(Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`, \
                     `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` \
                     (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`",
            ));
        }
        "CustomResourceDefinition" => {
            for field in ["group", "scope"] {
                if old["spec"][field] != new["spec"][field] {
                    causes.push(Cause::invalid(format!("spec.{field}"), &new["spec"][field], "field is immutable"));
                }
            }
        }
        "Secret" | "ConfigMap" if old["immutable"] == Value::Bool(true) && old["data"] != new["data"] => {
            causes.push(Cause::forbidden("data", "field is immutable when `immutable` is set"));
        }
        _ => {}
    }
    causes
}

/// The pod spec with the fields a pod update may change blanked out, given the stored spec:
/// `nodeName` may be set once (binding), `schedulingGates` may only shrink.
fn mutable_pod_spec_view(spec: &Value, stored: &Value) -> Value {
    let mut view = spec.clone();
    for list in ["containers", "initContainers"] {
        if let Some(containers) = view[list].as_array_mut() {
            for c in containers {
                c["image"] = Value::Null;
            }
        }
    }
    let gates = |s: &Value| -> Vec<Value> { s["schedulingGates"].as_array().cloned().unwrap_or_default() };
    let stored_gates = gates(stored);
    if let Some(o) = view.as_object_mut() {
        for field in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"] {
            o.remove(field);
        }
        if stored["nodeName"].as_str().is_none_or(str::is_empty) {
            o.remove("nodeName");
        }
        if gates(spec).iter().all(|g| stored_gates.contains(g)) {
            o.remove("schedulingGates");
        }
    }
    view
}

fn valid_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Pod spec checks; `path` is where the spec sits (`spec` or `spec.template.spec`).
pub fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    if !spec.is_object() {
        causes.push(Cause::required(path));
        return;
    }
    let mut volume_names = BTreeSet::new();
    for (i, volume) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let field = format!("{path}.volumes[{i}].name");
        match volume["name"].as_str() {
            None | Some("") => causes.push(Cause::required(field)),
            Some(name) => {
                if let Some(why) = dns_label_error(name) {
                    causes.push(Cause::invalid(field, &volume["name"], why));
                } else if !volume_names.insert(name.to_string()) {
                    causes.push(Cause::duplicate(field, &volume["name"]));
                }
            }
        }
        let sources = volume.as_object().map_or(0, |o| o.keys().filter(|k| k.as_str() != "name").count());
        if sources == 0 {
            causes.push(Cause::required(format!("{path}.volumes[{i}]")).with_message("must specify a volume type"));
        } else if sources > 1 {
            causes.push(Cause::forbidden(format!("{path}.volumes[{i}]"), "may not specify more than 1 volume type"));
        }
        if let Some(host) = volume.get("hostPath") {
            if host["path"].as_str().is_none_or(|p| !p.starts_with('/')) {
                causes.push(Cause::invalid(
                    format!("{path}.volumes[{i}].hostPath.path"),
                    &host["path"],
                    "must be an absolute path",
                ));
            }
        }
    }
    let containers = spec["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    let mut container_names = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => causes.push(Cause::required(format!("{at}.name"))),
                Some(name) => {
                    if let Some(why) = dns_label_error(name) {
                        causes.push(Cause::invalid(format!("{at}.name"), &c["name"], why));
                    } else if !container_names.insert(name.to_string()) {
                        causes.push(Cause::duplicate(format!("{at}.name"), &c["name"]));
                    }
                }
            }
            if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                causes.push(Cause::required(format!("{at}.image")));
            }
            for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let n = port["containerPort"].as_i64();
                if n.is_none_or(|n| !(1..=65535).contains(&n)) {
                    causes.push(Cause::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        &port["containerPort"],
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            for (j, mount) in c["volumeMounts"].as_array().into_iter().flatten().enumerate() {
                let name = mount["name"].as_str().unwrap_or("");
                if !volume_names.contains(name) {
                    causes.push(Cause {
                        reason: "FieldValueNotFound",
                        message: format!("Not found: {name:?}"),
                        field: format!("{at}.volumeMounts[{j}].name"),
                    });
                }
                if mount["mountPath"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{at}.volumeMounts[{j}].mountPath")));
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy") {
        if !matches!(policy.as_str(), Some("Always" | "OnFailure" | "Never")) {
            causes.push(Cause::unsupported(format!("{path}.restartPolicy"), policy, &["Always", "OnFailure", "Never"]));
        }
    }
    if let Some(grace) = spec.get("terminationGracePeriodSeconds") {
        if grace.as_i64().is_none_or(|g| g < 0) {
            causes.push(Cause::invalid(format!("{path}.terminationGracePeriodSeconds"), grace, "must be >= 0"));
        }
    }
}

fn validate_workload(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let selector = match LabelSelector::from_object(&spec["selector"]) {
        Ok(Some(sel)) if !sel.is_empty() => Some(sel),
        Ok(_) => {
            causes.push(Cause::required("spec.selector"));
            None
        }
        Err(e) => {
            causes.push(Cause::invalid("spec.selector", &spec["selector"], e.to_string()));
            None
        }
    };
    let template = &spec["template"];
    if !template.is_object() {
        causes.push(Cause::required("spec.template"));
        return;
    }
    let labels = &template["metadata"]["labels"];
    if let Some(sel) = selector {
        if !sel.matches(labels) {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(deps) = template["metadata"]["annotations"][dependencies::ANNOTATION].as_str() {
        if let Err(why) = dependencies::parse(deps) {
            causes.push(Cause::invalid(
                format!("spec.template.metadata.annotations[{}]", dependencies::ANNOTATION),
                &Value::String(deps.into()),
                why,
            ));
        }
    }
    validate_pod_spec(&template["spec"], "spec.template.spec", causes);
    if let Some(replicas) = spec.get("replicas") {
        if replicas.as_i64().is_none_or(|r| r < 0) {
            causes.push(Cause::invalid("spec.replicas", replicas, "must be greater than or equal to 0"));
        }
    }
    if kind == "Deployment" {
        if let Some(t) = spec["strategy"].get("type") {
            if !matches!(t.as_str(), Some("RollingUpdate" | "Recreate")) {
                causes.push(Cause::unsupported("spec.strategy.type", t, &["Recreate", "RollingUpdate"]));
            }
        }
    }
    let policy = &template["spec"]["restartPolicy"];
    if !policy.is_null() && policy.as_str() != Some("Always") {
        causes.push(Cause::unsupported("spec.template.spec.restartPolicy", policy, &["Always"]));
    }
}

fn validate_service(spec: &Value, causes: &mut Vec<Cause>) {
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(kind, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        causes.push(Cause::unsupported(
            "spec.type",
            &spec["type"],
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"].as_array();
    if kind != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
        causes.push(Cause::required("spec.ports"));
    }
    for (i, port) in ports.into_iter().flatten().enumerate() {
        if port["port"].as_i64().is_none_or(|n| !(1..=65535).contains(&n)) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &port["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}

fn validate_crd(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if !group.contains('.') {
        causes.push(Cause::invalid("spec.group", &spec["group"], "should be a domain with at least one dot"));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural"));
    }
    if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.names.kind"));
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            &obj["metadata"]["name"],
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        causes.push(Cause::unsupported("spec.scope", &spec["scope"], &["Cluster", "Namespaced"]));
    }
    let versions = spec["versions"].as_array();
    match versions {
        None => causes.push(Cause::required("spec.versions")),
        Some(versions) => {
            let storage = versions.iter().filter(|v| v["storage"].as_bool() == Some(true)).count();
            if storage != 1 {
                causes.push(Cause::invalid(
                    "spec.versions",
                    &Value::from(storage),
                    "must have exactly one version marked as storage version",
                ));
            }
            for (i, v) in versions.iter().enumerate() {
                if v["name"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("spec.versions[{i}].name")));
                }
                if v["schema"]["openAPIV3Schema"].is_null() {
                    causes.push(Cause::required(format!("spec.versions[{i}].schema.openAPIV3Schema")));
                }
            }
        }
    }
}

impl Cause {
    /// Replaces the message, keeping reason and field.
    pub fn with_message(mut self, message: impl Into<String>) -> Cause {
        self.message = message.into();
        self
    }
}

/// Why a name cannot be one path segment of a URL (`.`, `..`, `/` or `%`), if it cannot.
fn path_segment_error(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    name.contains(['/', '%']).then(|| "may not contain '/' or '%'".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_without_containers_is_invalid() {
        let causes = validate("Pod", &json!({"spec": {}}));
        assert_eq!(causes, vec![Cause::required("spec.containers")]);
    }

    #[test]
    fn pod_with_duplicate_container_names_and_missing_volume_is_invalid() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
            {"name": "a", "image": "y"}]}});
        let fields: Vec<String> = validate("Pod", &pod).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["spec.containers[0].volumeMounts[0].name", "spec.containers[1].name"]);
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let deploy = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate("Deployment", &deploy);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn metadata_rejects_bad_names_and_dependency_annotations() {
        let obj = json!({"metadata": {"name": "Bad_Name", "namespace": "default",
            "annotations": {"axle.dev/depends-on": "x=Sleeping"}}});
        let fields: Vec<String> = validate_metadata("Pod", &obj, true).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["metadata.name", "metadata.annotations[axle.dev/depends-on]"]);
    }

    #[test]
    fn pod_update_may_change_only_images() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a:1"}], "nodeName": "n"}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("a:2");
        assert!(validate_update("Pod", &old, &new).is_empty());
        new["spec"]["containers"][0]["name"] = json!("d");
        assert_eq!(validate_update("Pod", &old, &new).len(), 1);
    }
}
