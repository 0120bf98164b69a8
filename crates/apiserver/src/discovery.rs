//! Discovery (`/version`, `/api`, `/apis`, resource lists) and the OpenAPI v3 documents that
//! `kubectl explain` and kubectl's server-side validation read.

use crate::http::{bytes_reply, error_reply, json_reply, Reply};
use crate::{resource_metrics, State};
use api::resource::BUILTIN_GROUPS;
use api::ApiError;
use serde_json::{json, Value};

/// The Kubernetes minor version whose behaviour we serve. The `kubectl` dispatcher on the
/// machine picks its client by this number.
pub const KUBE_MINOR: &str = "32";

pub fn version() -> Reply {
    json_reply(
        200,
        &json!({
            "major": "1",
            "minor": KUBE_MINOR,
            "gitVersion": format!("v1.{KUBE_MINOR}.0+axle-{}", selfupdate::stamp::version()),
            "gitCommit": option_env!("AXLE_GIT_COMMIT").unwrap_or("unknown"),
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "n/a (axle is written in Rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, api::meta::go_arch()),
        }),
    )
}

pub fn core_versions(state: &State) -> Reply {
    json_reply(
        200,
        &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.server_address}]}),
    )
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": entries, "preferredVersion": entries.first().cloned().unwrap_or(Value::Null)})
}

pub fn groups(state: &State) -> Reply {
    let registry = state.registry();
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .map(|g| group_entry(g, &registry.group_versions(g)))
        .filter(|g| g["preferredVersion"].is_object())
        .chain([group_entry(resource_metrics::GROUP, &[resource_metrics::VERSION.to_string()])])
        .collect();
    json_reply(200, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

pub fn group(state: &State, group: &str) -> Reply {
    let registry = state.registry();
    let mut versions = registry.group_versions(group);
    if group == resource_metrics::GROUP {
        versions = vec![resource_metrics::VERSION.to_string()];
    }
    if versions.is_empty() {
        return error_reply(&ApiError::no_route());
    }
    let mut entry = group_entry(group, &versions);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    json_reply(200, &entry)
}

pub fn resources(state: &State, group: &str, version: &str) -> Reply {
    let registry = state.registry();
    let mut resources: Vec<Value> =
        registry.in_group_version(group, version).flat_map(|t| t.discovery_entries()).collect();
    for (_, _, plural, kind) in api::resource::REVIEWS.iter().filter(|r| r.0 == group && r.1 == version) {
        resources.push(json!({"name": plural, "singularName": plural.trim_end_matches('s'),
            "namespaced": false, "kind": kind, "verbs": ["create"]}));
    }
    if group == resource_metrics::GROUP && version == resource_metrics::VERSION {
        resources = resource_metrics::discovery_entries();
    }
    if resources.is_empty() {
        return error_reply(&ApiError::no_route());
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json_reply(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_index(state: &State) -> Reply {
    let mut paths = serde_json::Map::new();
    for path in openapi::group_versions() {
        let hash = openapi::hash(path).unwrap_or("0");
        paths.insert(path.to_string(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}));
    }
    let registry = state.registry();
    for t in registry.types().iter().filter(|t| t.custom) {
        let path = format!("apis/{}/{}", t.group, t.version);
        if !paths.contains_key(&path) {
            let hash = custom_document_hash(&registry, &t.group, &t.version);
            paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}));
        }
    }
    let _ = BUILTIN_GROUPS;
    json_reply(200, &json!({"paths": paths}))
}

pub fn openapi_document(state: &State, path: &str) -> Reply {
    if let Some(document) = openapi::document(path) {
        return bytes_reply(200, "application/json", document);
    }
    let registry = state.registry();
    if let Some(rest) = path.strip_prefix("apis/") {
        if let Some((group, version)) = rest.split_once('/') {
            if registry.in_group_version(group, version).any(|t| t.custom) {
                return json_reply(200, &crate::schemas::custom_document(&registry, group, version));
            }
        }
    }
    error_reply(&ApiError::no_route())
}

fn custom_document_hash(registry: &api::Registry, group: &str, version: &str) -> String {
    let doc = crate::schemas::custom_document(registry, group, version);
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    // FNV-1a: a stable, dependency-free content hash; clients only compare it for caching.
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
    format!("{hash:016X}")
}
