//! Kubernetes Events, as every Axle component records them: best effort (an Event that cannot
//! be written never stops the work it reports on), and aggregated like the kubelet's — the
//! same reason and message about the same object is one Event whose `count` grows, so a
//! crash-looping container does not fill the store.
//!
//! An Event's name is the object's name and a hash of (object uid, reason, message): a second
//! occurrence finds it (409 on create) and bumps its count and `lastTimestamp`, also after the
//! component restarted.

use crate::Client;
use serde_json::{json, Value};

/// Who reports (`source.component`): `axle-agent`, `axle-controllers`, `axle-ecu-gateway`.
pub async fn record(
    client: &Client,
    component: &str,
    object: &Value,
    kind: &str,
    event_type: &str,
    reason: &str,
    message: &str,
) {
    let name = api::meta::name_of(object);
    // Events about cluster-scoped objects (Nodes) live in `default`, as in Kubernetes.
    let object_namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
    let namespace = if object_namespace.is_empty() { "default" } else { object_namespace };
    let uid = object["metadata"]["uid"].as_str().unwrap_or(name);
    let event_name = format!("{name}.{:016x}", fnv1a(&[uid, reason, message]));
    let now = api::meta::now_rfc3339();
    let collection = format!("/api/v1/namespaces/{namespace}/events");
    let mut involved = json!({"apiVersion": object["apiVersion"], "kind": kind, "name": name, "uid": uid});
    if !object_namespace.is_empty() {
        involved["namespace"] = json!(object_namespace);
    }
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name, "namespace": namespace},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": event_type,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let result = match client.post(&collection, &event).await {
        Err(e) if e.code() == Some(409) => {
            let path = format!("{collection}/{event_name}");
            match client.get(&path).await {
                Ok(existing) => {
                    let count = existing["count"].as_u64().unwrap_or(1) + 1;
                    client.merge_patch(&path, &json!({"count": count, "lastTimestamp": now})).await.map(|_| ())
                }
                Err(e) => Err(e),
            }
        }
        other => other.map(|_| ()),
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, reason, "cannot record an event");
    }
}

/// FNV-1a over the parts (with a separator): stable across processes and versions.
fn fnv1a(parts: &[&str]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.bytes().chain([0u8]))
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
