//! The `meta.k8s.io/v1 Table` rendering that `kubectl get` prints: per-kind columns and cells,
//! with ages humanised by the server (kubectl prints cells verbatim).

use crate::meta::{age, name_of};
use crate::resource::ResourceType;
use serde_json::{json, Value};

fn column(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let mut col = json!({"name": name, "type": kind, "format": "", "description": description, "priority": priority});
    if name == "Name" {
        col["format"] = json!("name");
    }
    col
}

/// Column definitions for a resource type.
pub fn columns(rt: &ResourceType) -> Vec<Value> {
    let s = |name: &str, p: u8| column(name, "string", p, name);
    let i = |name: &str, p: u8| column(name, "integer", p, name);
    match (rt.custom, rt.kind.as_str()) {
        (false, "Pod") => vec![
            s("Name", 0),
            s("Ready", 0),
            s("Status", 0),
            i("Restarts", 0),
            s("Age", 0),
            s("IP", 1),
            s("Node", 1),
            s("Nominated Node", 1),
            s("Readiness Gates", 1),
        ],
        (false, "Node") => vec![
            s("Name", 0),
            s("Status", 0),
            s("Roles", 0),
            s("Age", 0),
            s("Version", 0),
            s("Internal-IP", 1),
            s("External-IP", 1),
            s("OS-Image", 1),
            s("Kernel-Version", 1),
            s("Container-Runtime", 1),
        ],
        (false, "Deployment") => vec![
            s("Name", 0),
            s("Ready", 0),
            i("Up-to-date", 0),
            i("Available", 0),
            s("Age", 0),
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        (false, "ReplicaSet") => vec![
            s("Name", 0),
            i("Desired", 0),
            i("Current", 0),
            i("Ready", 0),
            s("Age", 0),
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        (false, "DaemonSet") => vec![
            s("Name", 0),
            i("Desired", 0),
            i("Current", 0),
            i("Ready", 0),
            i("Up-to-date", 0),
            i("Available", 0),
            s("Node Selector", 0),
            s("Age", 0),
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        (false, "Job") => vec![
            s("Name", 0),
            s("Status", 0),
            s("Completions", 0),
            s("Duration", 0),
            s("Age", 0),
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        (false, "CronJob") => vec![
            s("Name", 0),
            s("Schedule", 0),
            s("Timezone", 0),
            s("Suspend", 0),
            i("Active", 0),
            s("Last Schedule", 0),
            s("Age", 0),
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        (false, "Service") => vec![
            s("Name", 0),
            s("Type", 0),
            s("Cluster-IP", 0),
            s("External-IP", 0),
            s("Port(s)", 0),
            s("Age", 0),
            s("Selector", 1),
        ],
        (false, "Namespace") => vec![s("Name", 0), s("Status", 0), s("Age", 0)],
        (false, "ConfigMap") => vec![s("Name", 0), i("Data", 0), s("Age", 0)],
        (false, "Secret") => vec![s("Name", 0), s("Type", 0), i("Data", 0), s("Age", 0)],
        (false, "ServiceAccount") => vec![s("Name", 0), i("Secrets", 0), s("Age", 0)],
        (false, "Event") => vec![
            s("Last Seen", 0),
            s("Type", 0),
            s("Reason", 0),
            s("Object", 0),
            s("Subobject", 1),
            s("Source", 1),
            s("Message", 0),
            s("First Seen", 1),
            i("Count", 1),
            s("Name", 1),
        ],
        (false, "Lease") => vec![s("Name", 0), s("Holder", 0), s("Age", 0)],
        (false, "CertificateSigningRequest") => {
            vec![s("Name", 0), s("Age", 0), s("SignerName", 0), s("Requestor", 0), s("Condition", 0)]
        }
        (false, "CustomResourceDefinition") => vec![s("Name", 0), s("Created At", 0)],
        (true, _) if !rt.printer_columns.is_empty() => {
            let mut cols = vec![s("Name", 0)];
            for pc in &rt.printer_columns {
                let name = pc["name"].as_str().unwrap_or("");
                let kind = pc["type"].as_str().unwrap_or("string");
                let kind = if kind == "date" { "string" } else { kind };
                let priority = pc["priority"].as_u64().unwrap_or(0).min(255) as u8;
                cols.push(column(name, kind, priority, pc["description"].as_str().unwrap_or(name)));
            }
            if !rt.printer_columns.iter().any(|pc| pc["jsonPath"] == ".metadata.creationTimestamp") {
                cols.push(s("Age", 0));
            }
            cols
        }
        _ => vec![s("Name", 0), s("Age", 0)],
    }
}

/// The cells of one row, in the order of [`columns`].
pub fn cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
    let name = json!(name_of(obj));
    let created = age(&obj["metadata"]["creationTimestamp"]);
    let spec = &obj["spec"];
    let status = &obj["status"];
    let num = |v: &Value| json!(v.as_i64().unwrap_or(0));
    match (rt.custom, rt.kind.as_str()) {
        (false, "Pod") => pod_cells(obj, name, created),
        (false, "Node") => node_cells(obj, name, created),
        (false, "Deployment") => {
            let ready =
                format!("{}/{}", status["readyReplicas"].as_i64().unwrap_or(0), spec["replicas"].as_i64().unwrap_or(0));
            let mut row = vec![name, json!(ready), num(&status["updatedReplicas"]), num(&status["availableReplicas"])];
            row.extend(workload_tail(spec, created));
            row
        }
        (false, "ReplicaSet") => {
            let mut row = vec![name, num(&spec["replicas"]), num(&status["replicas"]), num(&status["readyReplicas"])];
            row.extend(workload_tail(spec, created));
            row
        }
        (false, "DaemonSet") => {
            let mut row = vec![
                name,
                num(&status["desiredNumberScheduled"]),
                num(&status["currentNumberScheduled"]),
                num(&status["numberReady"]),
                num(&status["updatedNumberScheduled"]),
                num(&status["numberAvailable"]),
                json!(map_string(&spec["template"]["spec"]["nodeSelector"])),
            ];
            row.extend(workload_tail(spec, created));
            row
        }
        (false, "Job") => {
            let mut row = vec![name, json!(job_status(obj)), json!(job_completions(spec, status))];
            let started = status["startTime"].as_str().and_then(crate::meta::parse_time);
            let ended = status["completionTime"].as_str().and_then(crate::meta::parse_time);
            row.push(json!(match (started, ended) {
                (Some(start), Some(end)) => crate::meta::human_duration((end - start).num_seconds()),
                (Some(start), None) => crate::meta::human_duration((chrono::Utc::now() - start).num_seconds()),
                _ => String::new(),
            }));
            row.extend(workload_tail(spec, created));
            row
        }
        (false, "CronJob") => {
            let job_spec = &spec["jobTemplate"]["spec"];
            let (containers, images) = containers_and_images(&job_spec["template"]["spec"]);
            let last = match status["lastScheduleTime"].as_str() {
                Some(_) => age(&status["lastScheduleTime"]),
                None => "<none>".into(),
            };
            vec![
                name,
                json!(spec["schedule"].as_str().unwrap_or("")),
                json!(spec["timeZone"].as_str().unwrap_or("<none>")),
                json!(if spec["suspend"] == true { "True" } else { "False" }),
                json!(status["active"].as_array().map_or(0, Vec::len)),
                json!(last),
                json!(created),
                json!(containers),
                json!(images),
                json!(selector_string(&job_spec["selector"])),
            ]
        }
        (false, "Service") => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let port = p["port"].as_i64().unwrap_or(0);
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(node_port) => format!("{port}:{node_port}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect();
            let selector = map_string(&spec["selector"]);
            vec![
                name,
                json!(spec["type"].as_str().unwrap_or("ClusterIP")),
                json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
                json!("<none>"),
                json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
                json!(created),
                json!(selector),
            ]
        }
        (false, "Namespace") => vec![name, json!(status["phase"].as_str().unwrap_or("Active")), json!(created)],
        (false, "ConfigMap") => {
            let count =
                obj["data"].as_object().map_or(0, |m| m.len()) + obj["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(count), json!(created)]
        }
        (false, "Secret") => {
            vec![
                name,
                json!(obj["type"].as_str().unwrap_or("Opaque")),
                json!(obj["data"].as_object().map_or(0, |m| m.len())),
                json!(created),
            ]
        }
        (false, "ServiceAccount") => vec![name, json!(obj["secrets"].as_array().map_or(0, Vec::len)), json!(created)],
        (false, "Event") => event_cells(obj),
        (false, "Lease") => vec![name, json!(spec["holderIdentity"].as_str().unwrap_or("<none>")), json!(created)],
        (false, "CertificateSigningRequest") => {
            let conditions: Vec<&str> = obj["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["type"].as_str())
                .collect();
            let signed = obj["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty());
            let condition = match (conditions.is_empty(), signed) {
                (true, _) => "Pending".to_string(),
                (false, true) => format!("{},Issued", conditions.join(",")),
                (false, false) => conditions.join(","),
            };
            vec![
                name,
                json!(created),
                json!(spec["signerName"].as_str().unwrap_or("")),
                json!(spec["username"].as_str().unwrap_or("")),
                json!(condition),
            ]
        }
        (false, "CustomResourceDefinition") => vec![name, obj["metadata"]["creationTimestamp"].clone()],
        (true, _) if !rt.printer_columns.is_empty() => {
            let mut row = vec![name];
            for pc in &rt.printer_columns {
                let path = pc["jsonPath"].as_str().unwrap_or("");
                let value = simple_json_path(obj, path);
                let cell = match (pc["type"].as_str(), &value) {
                    (Some("date"), v) => json!(age(v)),
                    (_, Value::Null) => json!("<none>"),
                    (_, v) => v.clone(),
                };
                row.push(cell);
            }
            if !rt.printer_columns.iter().any(|pc| pc["jsonPath"] == ".metadata.creationTimestamp") {
                row.push(json!(created));
            }
            row
        }
        _ => vec![name, json!(created)],
    }
}

/// Evaluates the simple JSONPath subset CRDs use in printer columns: `.a.b`, `.a[0].b`, `.a['x.y']`.
pub fn simple_json_path(obj: &Value, path: &str) -> Value {
    let mut current = obj;
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            current = &current[&after[..end]];
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { return Value::Null };
            let inner = after[..end].trim_matches(|c| c == '\'' || c == '"');
            current = match inner.parse::<usize>() {
                Ok(index) => &current[index],
                Err(_) => &current[inner],
            };
            rest = &after[end + 1..];
        } else {
            return Value::Null;
        }
    }
    current.clone()
}

/// The AGE, CONTAINERS, IMAGES and SELECTOR cells that end the rows of workload controllers.
fn workload_tail(spec: &Value, created: String) -> [Value; 4] {
    let (containers, images) = containers_and_images(&spec["template"]["spec"]);
    [json!(created), json!(containers), json!(images), json!(selector_string(&spec["selector"]))]
}

/// A Job's STATUS column, as kubectl 1.30+ prints it.
fn job_status(job: &Value) -> &'static str {
    let holds = |kind: &str| {
        job["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == kind && c["status"] == "True")
    };
    if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if job["spec"]["suspend"] == true {
        "Suspended"
    } else {
        "Running"
    }
}

/// `succeeded/completions` (`1/1`; `0/1 of 3` is upstream's form for parallel work queues).
fn job_completions(spec: &Value, status: &Value) -> String {
    let succeeded = status["succeeded"].as_i64().unwrap_or(0);
    match spec["completions"].as_i64() {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => format!("{succeeded}/1 of {}", spec["parallelism"].as_i64().unwrap_or(1)),
    }
}

/// A string map as kubectl prints it (`a=1,b=2`), `<none>` when empty.
fn map_string(map: &Value) -> String {
    map.as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn containers_and_images(pod_spec: &Value) -> (String, String) {
    let containers = pod_spec["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = containers.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

/// A `LabelSelector` object as kubectl prints it: `app=web,tier in (a,b)`.
pub fn selector_string(selector: &Value) -> String {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for expr in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = expr["key"].as_str().unwrap_or("");
        let values: Vec<&str> = expr["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(match expr["operator"].as_str() {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// The STATUS column of a pod, following kubectl's printer: init progress, the waiting or
/// terminated reason of a container, `Terminating`, `Unknown` on a lost node, else the phase.
pub fn pod_status(obj: &Value) -> String {
    let status = &obj["status"];
    let mut reason = status["reason"].as_str().or(status["phase"].as_str()).unwrap_or("Pending").to_string();
    // A gated pod says why it waits (kubectl prints SchedulingGated; Axle's gate has a name).
    if obj["spec"]["schedulingGates"].as_array().is_some_and(|g| !g.is_empty()) {
        let scheduled = status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"));
        let why = scheduled.and_then(|c| c["reason"].as_str()).filter(|r| !r.is_empty());
        reason = why.unwrap_or("SchedulingGated").to_string();
    }
    let init_statuses = status["initContainerStatuses"].as_array().cloned().unwrap_or_default();
    let init_total = obj["spec"]["initContainers"].as_array().map_or(0, Vec::len);
    let mut initializing = false;
    for (i, cs) in init_statuses.iter().enumerate() {
        let state = &cs["state"];
        if state["terminated"]["exitCode"].as_i64() == Some(0) {
            continue;
        }
        initializing = true;
        reason = if let Some(r) = state["terminated"]["reason"].as_str() {
            format!("Init:{r}")
        } else if let Some(r) = state["waiting"]["reason"].as_str().filter(|r| *r != "PodInitializing") {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for cs in status["containerStatuses"].as_array().into_iter().flatten().rev() {
            let state = &cs["state"];
            if let Some(r) = state["waiting"]["reason"].as_str() {
                reason = r.to_string();
            } else if let Some(r) = state["terminated"]["reason"].as_str() {
                reason = r.to_string();
            } else if state["terminated"].is_object() {
                let code = state["terminated"]["exitCode"].as_i64().unwrap_or(0);
                reason = match state["terminated"]["signal"].as_i64() {
                    Some(sig) if sig != 0 => format!("Signal:{sig}"),
                    _ => format!("ExitCode:{code}"),
                };
            } else if cs["ready"].as_bool() == Some(true) && state["running"].is_object() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if obj["metadata"]["deletionTimestamp"].is_string() {
        reason = if status["reason"].as_str() == Some("NodeLost") { "Unknown".into() } else { "Terminating".into() };
    }
    reason
}

fn pod_cells(obj: &Value, name: Value, created: String) -> Vec<Value> {
    let statuses = obj["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses.iter().filter(|c| c["ready"].as_bool() == Some(true)).count();
    let restarts: i64 = statuses.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum();
    let gates = obj["spec"]["readinessGates"].as_array().map_or(0, Vec::len);
    vec![
        name,
        json!(format!("{ready}/{total}")),
        json!(pod_status(obj)),
        json!(restarts),
        json!(created),
        json!(obj["status"]["podIP"].as_str().unwrap_or("<none>")),
        json!(obj["spec"]["nodeName"].as_str().unwrap_or("<none>")),
        json!(obj["status"]["nominatedNodeName"].as_str().unwrap_or("<none>")),
        json!(if gates == 0 { "<none>".to_string() } else { format!("0/{gates}") }),
    ]
}

fn node_cells(obj: &Value, name: Value, created: String) -> Vec<Value> {
    let status = &obj["status"];
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| if c["status"] == "True" { "Ready" } else { "NotReady" })
        .unwrap_or("Unknown");
    let mut state = ready.to_string();
    if obj["spec"]["unschedulable"].as_bool() == Some(true) {
        state.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = obj["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
        .collect();
    roles.sort();
    let address = |kind: &str| {
        status["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = &status["nodeInfo"];
    vec![
        name,
        json!(state),
        json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
        json!(created),
        json!(info["kubeletVersion"].as_str().unwrap_or("")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info["osImage"].as_str().unwrap_or("<unknown>")),
        json!(info["kernelVersion"].as_str().unwrap_or("<unknown>")),
        json!(info["containerRuntimeVersion"].as_str().unwrap_or("<unknown>")),
    ]
}

fn event_cells(obj: &Value) -> Vec<Value> {
    let last = if obj["lastTimestamp"].is_string() { &obj["lastTimestamp"] } else { &obj["eventTime"] };
    let first = if obj["firstTimestamp"].is_string() { &obj["firstTimestamp"] } else { &obj["eventTime"] };
    let involved = &obj["involvedObject"];
    let object = format!(
        "{}/{}",
        involved["kind"].as_str().unwrap_or("").to_lowercase(),
        involved["name"].as_str().unwrap_or("")
    );
    let source = obj["source"]["component"].as_str().or(obj["reportingComponent"].as_str()).unwrap_or("");
    vec![
        json!(age(last)),
        json!(obj["type"].as_str().unwrap_or("Normal")),
        json!(obj["reason"].as_str().unwrap_or("")),
        json!(object),
        json!(involved["fieldPath"].as_str().unwrap_or("")),
        json!(source),
        json!(obj["message"].as_str().unwrap_or("").trim()),
        json!(age(first)),
        json!(obj["count"].as_i64().unwrap_or(1)),
        json!(name_of(obj)),
    ]
}

/// One table row: cells plus the object reference kubectl uses for `-A`, `--show-labels`, `-L`.
/// Takes the object by value: its metadata moves into the row instead of being copied. (The
/// rows are built with maps, not `json!`, which would deep-copy every interpolated value.)
pub fn row(rt: &ResourceType, mut obj: Value, include_object: &str) -> Value {
    let cells = cells(rt, &obj);
    let object = match include_object {
        "None" => Value::Null,
        "Object" => obj,
        _ => {
            let mut partial = serde_json::Map::new();
            partial.insert("kind".into(), Value::from("PartialObjectMetadata"));
            partial.insert("apiVersion".into(), Value::from("meta.k8s.io/v1"));
            partial.insert("metadata".into(), obj["metadata"].take());
            Value::Object(partial)
        }
    };
    let mut row = serde_json::Map::new();
    row.insert("cells".into(), Value::Array(cells));
    row.insert("object".into(), object);
    Value::Object(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Registry;

    #[test]
    fn pod_row_shows_ready_status_and_restarts() {
        let registry = Registry::builtin();
        let pods = registry.lookup("", "v1", "pods").expect("pods");
        let pod = json!({"metadata": {"name": "nav", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "hpc-1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let cells = cells(pods, &pod);
        assert_eq!(cells[0], "nav");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], 3);
        assert_eq!(cells[6], "hpc-1");
        assert_eq!(columns(pods).len(), cells.len());
    }

    #[test]
    fn every_builtin_kind_has_matching_columns_and_cells() {
        let registry = Registry::builtin();
        for rt in registry.types() {
            assert_eq!(columns(rt).len(), cells(rt, &json!({})).len(), "{}", rt.kind);
        }
    }

    #[test]
    fn json_path_subset_reads_nested_fields() {
        let obj = json!({"spec": {"items": [{"x": 1}], "a.b": "dotted"}});
        assert_eq!(simple_json_path(&obj, ".spec.items[0].x"), json!(1));
        assert_eq!(simple_json_path(&obj, ".spec['a.b']"), json!("dotted"));
        assert_eq!(simple_json_path(&obj, ".missing"), Value::Null);
    }

    #[test]
    fn terminating_pods_say_so() {
        let pod = json!({"metadata": {"deletionTimestamp": "2020-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&pod), "Terminating");
    }
}
