//! Admission: what happens to an object between the request and the store. Metadata the
//! server owns (uid, timestamps, generation), status/spec separation for the `status`
//! subresource, defaults, validation, and the checks that need other objects (namespace
//! lifecycle, dependency cycles, service IPs). Runs inside the store transaction, so what it
//! reads is consistent with what it writes.

use crate::lifecycle::namespace_key;
use api::dependencies;
use api::meta::{name_of, now_rfc3339, random_suffix};
use api::resource::ResourceType;
use api::validation::{validate, validate_metadata, validate_update};
use api::{ApiError, Cause};
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use store::{StoreError, Txn};

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        // Nothing was written; the same request succeeds once there is room again.
        StoreError::Full(why) => ApiError::insufficient_storage(format!("storage error: the disk is full: {why}")),
        StoreError::TooLarge { bytes, limit, .. } => {
            ApiError::too_large(format!("the object is {bytes} bytes; an object may take at most {limit}"))
        }
        e => ApiError::internal(format!("storage error: {e}")),
    }
}

/// Kinds whose status the main resource may not set (it belongs to the `status` subresource).
fn status_is_subresource(rt: &ResourceType) -> bool {
    rt.subresources.status && rt.kind != "Node" && rt.kind != "Namespace"
}

/// Prepares a new object: server-owned metadata, defaults, validation, cross-object checks.
pub fn prepare_create(
    rt: &ResourceType,
    obj: &mut Value,
    namespace: Option<&str>,
    txn: &Txn<'_>,
) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else { return Err(ApiError::bad_request("the body must be an object")) };
    map.insert("apiVersion".into(), json!(rt.api_version()));
    map.insert("kind".into(), json!(rt.kind));
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    if meta["name"].as_str().is_none_or(str::is_empty) {
        if let Some(prefix) = meta["generateName"].as_str().filter(|p| !p.is_empty()) {
            meta["name"] = json!(format!("{prefix}{}", random_suffix()));
        }
    }
    if let Some(m) = meta.as_object_mut() {
        for server_owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            m.remove(server_owned);
        }
        m.insert("uid".into(), json!(api::meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.insert("generation".into(), json!(1));
        match namespace {
            Some(ns) => m.insert("namespace".into(), json!(ns)),
            None => m.remove("namespace"),
        };
    }
    if status_is_subresource(rt) {
        map.remove("status");
    }
    mutate_kind(rt, obj, txn)?;
    if !rt.custom && rt.kind == "Job" {
        api::batch::generate_selector(obj);
    }
    api::defaults::apply_defaults(&rt.kind, obj);
    check(rt, obj, None)?;
    if let Some(ns) = namespace {
        check_namespace_open(ns, txn)?;
    }
    check_dependency_cycle(rt, obj, txn)?;
    gate_on_dependencies(rt, obj);
    Ok(())
}

/// A pod with dependencies is created gated: its node's agent starts it only once the
/// dependency controller has seen every dependency hold and removed the gate.
fn gate_on_dependencies(rt: &ResourceType, obj: &mut Value) {
    if rt.custom || rt.kind != "Pod" || obj["metadata"]["annotations"][dependencies::ANNOTATION].as_str().is_none() {
        return;
    }
    let gate = json!({"name": dependencies::GATE});
    match obj["spec"]["schedulingGates"].as_array_mut() {
        Some(gates) if gates.contains(&gate) => {}
        Some(gates) => gates.push(gate),
        None => obj["spec"]["schedulingGates"] = json!([gate]),
    }
}

/// Prepares an update of `old` into `new`. `subresource` is `Some("status")` for status writes.
pub fn prepare_update(
    rt: &ResourceType,
    old: &Value,
    new: &mut Value,
    subresource: Option<&str>,
    txn: &Txn<'_>,
) -> Result<(), ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request("the body must be an object"));
    }
    let name = name_of(old).to_string();
    if let Some(body_name) = new["metadata"]["name"].as_str() {
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    if let Some(uid) = new["metadata"]["uid"].as_str() {
        if !uid.is_empty() && uid != api::meta::uid_of(old) {
            return Err(ApiError::conflict_with(
                &rt.group,
                &rt.plural,
                &name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    api::meta::uid_of(old)
                ),
                Vec::new(),
            ));
        }
    }
    new["apiVersion"] = json!(rt.api_version());
    new["kind"] = json!(rt.kind);
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    for kept in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old["metadata"].get(kept) {
            Some(v) => new["metadata"][kept] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(kept);
                }
            }
        }
    }
    if new["metadata"].get("managedFields").is_none() {
        // Writers that do not send managedFields (most clients) keep the recorded ownership.
        if let Some(fields) = old["metadata"].get("managedFields") {
            new["metadata"]["managedFields"] = fields.clone();
        }
    }
    if status_is_subresource(rt) {
        if subresource == Some("status") {
            // A status write changes status, never the spec, and of the metadata neither
            // labels, annotations, finalizers nor owners (upstream's ResetObjectMetaForStatus):
            // a node that may report its pods' status cannot relabel them through it.
            let status = new.get("status").cloned();
            let mut metadata = new["metadata"].clone();
            for reset in ["labels", "annotations", "finalizers", "ownerReferences"] {
                match old["metadata"].get(reset) {
                    Some(v) => metadata[reset] = v.clone(),
                    None => {
                        if let Some(m) = metadata.as_object_mut() {
                            m.remove(reset);
                        }
                    }
                }
            }
            *new = old.clone();
            new["metadata"] = metadata;
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        } else {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
    }
    if old["metadata"]["deletionTimestamp"].is_string() {
        // A terminating object may only lose finalizers, never gain new ones.
        let before: Vec<&Value> =
            old["metadata"]["finalizers"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        let added = new["metadata"]["finalizers"].as_array().into_iter().flatten().any(|f| !before.contains(&f));
        if added {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                &name,
                vec![Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    mutate_kind(rt, new, txn)?;
    api::defaults::apply_defaults(&rt.kind, new);
    if spec_of(old) != spec_of(new) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(generation);
    }
    check(rt, new, Some(old))?;
    check_dependency_cycle(rt, new, txn)?;
    Ok(())
}

/// Everything but metadata and status: a change here bumps `metadata.generation`.
fn spec_of(obj: &Value) -> Value {
    let mut view = obj.clone();
    if let Some(m) = view.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    view
}

fn check(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = validate_metadata(&rt.kind, obj, rt.namespaced());
    if !rt.custom {
        causes.extend(validate(&rt.kind, obj));
        if let Some(old) = old {
            causes.extend(validate_update(&rt.kind, old, obj));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&rt.group, &rt.kind, name_of(obj), causes))
    }
}

/// Kind-specific mutations the API server performs.
fn mutate_kind(rt: &ResourceType, obj: &mut Value, txn: &Txn<'_>) -> Result<(), ApiError> {
    if rt.custom {
        return Ok(());
    }
    match rt.kind.as_str() {
        "Secret" => {
            // stringData is a write-only convenience: merged into data, base64-encoded.
            if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                if !obj["data"].is_object() {
                    obj["data"] = json!({});
                }
                for (k, v) in string_data {
                    let text = v.as_str().unwrap_or_default();
                    obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
            for (k, v) in obj["data"].as_object().into_iter().flatten() {
                let valid = v.as_str().is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
                if !valid {
                    return Err(ApiError::bad_request(format!(
                        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k:?}]"
                    )));
                }
            }
        }
        "Service" => assign_cluster_ip(obj, txn)?,
        "Namespace" if obj["metadata"]["deletionTimestamp"].is_string() => {
            obj["status"] = json!({"phase": "Terminating"});
        }
        "CustomResourceDefinition" => {
            let names = obj["spec"]["names"].clone();
            let mut accepted = names.clone();
            if accepted["singular"].is_null() {
                accepted["singular"] = json!(names["kind"].as_str().unwrap_or("").to_lowercase());
            }
            if accepted["listKind"].is_null() {
                accepted["listKind"] = json!(format!("{}List", names["kind"].as_str().unwrap_or("")));
            }
            let stored: Vec<Value> = obj["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect();
            let now = now_rfc3339();
            obj["status"] = json!({
                "acceptedNames": accepted,
                "storedVersions": stored,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}
                ]
            });
        }
        _ => {}
    }
    Ok(())
}

/// Gives a ClusterIP Service a stable address from 10.43.0.0/16 (Axle does not proxy
/// services; the address is what kubectl and DNS-less clients expect to see).
fn assign_cluster_ip(obj: &mut Value, txn: &Txn<'_>) -> Result<(), ApiError> {
    let spec_type = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if spec_type == "ExternalName" || obj["spec"]["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty()) {
        return Ok(());
    }
    let used: Vec<String> = txn
        .list("core/services/")
        .map_err(store_error)?
        .into_iter()
        .filter_map(|(_, s)| s["spec"]["clusterIP"].as_str().map(String::from))
        .collect();
    let seed = format!("{}/{}", api::meta::namespace_of(obj), name_of(obj));
    let start = seed.bytes().fold(2166136261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619)) % 65_000;
    for offset in 0..65_000u32 {
        let n = (start + offset) % 65_000 + 10;
        let ip = format!("10.43.{}.{}", n / 256, n % 256);
        if n % 256 != 0 && n % 256 != 255 && !used.contains(&ip) {
            obj["spec"]["clusterIP"] = json!(ip);
            obj["spec"]["clusterIPs"] = json!([ip]);
            return Ok(());
        }
    }
    Err(ApiError::internal("no free ClusterIP address left in 10.43.0.0/16"))
}

fn check_namespace_open(namespace: &str, txn: &Txn<'_>) -> Result<(), ApiError> {
    match txn.get(&namespace_key(namespace)).map_err(store_error)? {
        None => Err(ApiError::not_found("", "namespaces", namespace)),
        Some(ns) if ns["metadata"]["deletionTimestamp"].is_string() => Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        ))),
        Some(_) => Ok(()),
    }
}

/// The dependency annotation of a workload (pods: their own; controllers: the pod template's).
pub fn dependency_annotation(obj: &Value) -> Option<&str> {
    obj["metadata"]["annotations"][dependencies::ANNOTATION]
        .as_str()
        .or_else(|| obj["spec"]["template"]["metadata"]["annotations"][dependencies::ANNOTATION].as_str())
}

/// Rejects a workload whose dependencies would close a cycle with the stored workloads of its
/// namespace (pods not owned by a controller, Deployments, DaemonSets).
fn check_dependency_cycle(rt: &ResourceType, obj: &Value, txn: &Txn<'_>) -> Result<(), ApiError> {
    if rt.custom || !matches!(rt.kind.as_str(), "Pod" | "Deployment" | "DaemonSet") {
        return Ok(());
    }
    let Some(annotation) = dependency_annotation(obj) else { return Ok(()) };
    let Ok(own) = dependencies::parse(annotation) else { return Ok(()) };
    let name = name_of(obj).to_string();
    let namespace = api::meta::namespace_of(obj);
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for prefix in ["core/pods", "apps/deployments", "apps/daemonsets"] {
        for (_, other) in txn.list(&format!("{prefix}/{namespace}/")).map_err(store_error)? {
            let standalone = other["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty);
            if !standalone {
                continue;
            }
            if let Some(deps) = dependency_annotation(&other).and_then(|a| dependencies::parse(a).ok()) {
                edges.entry(name_of(&other).to_string()).or_default().extend(deps.into_iter().map(|d| d.name));
            }
        }
    }
    edges.insert(name.clone(), own.into_iter().map(|d| d.name).collect());
    match dependencies::find_cycle(&name, &edges) {
        None => Ok(()),
        Some(cycle) => {
            let field = if rt.kind == "Pod" {
                format!("metadata.annotations[{}]", dependencies::ANNOTATION)
            } else {
                format!("spec.template.metadata.annotations[{}]", dependencies::ANNOTATION)
            };
            let value = Value::String(annotation.to_string());
            Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                &name,
                vec![Cause::invalid(field, &value, format!("dependency cycle {}", cycle.join(" -> ")))],
            ))
        }
    }
}
