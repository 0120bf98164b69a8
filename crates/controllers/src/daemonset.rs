//! DaemonSets: one pod on every node that matches (nodeSelector, required node affinity,
//! tolerated taints), updated node by node (RollingUpdate with maxUnavailable) or when the old
//! pod goes (OnDelete), with the status counts `kubectl rollout status ds` reads.

use crate::deployment::template_hash;
use crate::placement::{fits, node_is_ready};
use crate::workloads::{controller_ref, is_active, is_available, is_ready, tolerate, Outcome, Snapshot};
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::time::Duration;

const REVISION_HASH: &str = "controller-revision-hash";

pub async fn reconcile(client: &Client, snapshot: &Snapshot) -> Result<Outcome, ClientError> {
    let mut outcome = Outcome::default();
    for ds in &snapshot.daemonsets {
        if ds["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        outcome = outcome.merge(sync(client, snapshot, ds).await?);
    }
    Ok(outcome)
}

async fn sync(client: &Client, snapshot: &Snapshot, ds: &Value) -> Result<Outcome, ClientError> {
    let namespace = api::meta::namespace_of(ds);
    let template = &ds["spec"]["template"];
    let hash = template_hash(template);
    let min_ready = Duration::from_secs(ds["spec"]["minReadySeconds"].as_u64().unwrap_or(0));
    let pods = snapshot.pods_of(api::meta::uid_of(ds));
    let pod_path = |p: &Value| format!("/api/v1/namespaces/{namespace}/pods/{}", api::meta::name_of(p));
    let eligible: Vec<&Value> = snapshot.nodes.iter().filter(|n| fits(&template["spec"], n)).collect();
    let on = |node: &str| -> Vec<&Value> {
        pods.iter().copied().filter(|p| p["spec"]["nodeName"] == node && is_active(p)).collect()
    };
    let current = |p: &Value| p["metadata"]["labels"][REVISION_HASH] == hash.as_str();
    let on_delete = ds["spec"]["updateStrategy"]["type"] == "OnDelete";
    let desired = eligible.len() as u64;
    let max_unavailable = match &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] {
        Value::Number(n) => n.as_u64().unwrap_or(1),
        Value::String(p) => {
            p.strip_suffix('%').and_then(|p| p.parse::<u64>().ok()).map(|p| (desired * p / 100).max(1)).unwrap_or(1)
        }
        _ => 1,
    };
    // Nodes whose pod is missing or not available count against the update budget.
    let mut unavailable =
        eligible.iter().filter(|n| !on(api::meta::name_of(n)).iter().any(|p| is_available(p, min_ready))).count()
            as u64;
    for node in &eligible {
        let name = api::meta::name_of(node);
        let here = on(name);
        match here.as_slice() {
            [] => create_pod(client, ds, &hash, name).await?,
            [pod] if !current(pod) && !on_delete => {
                // Replace one at a time within maxUnavailable; an unavailable pod costs nothing.
                let pod_unavailable = !is_available(pod, min_ready);
                if pod_unavailable || unavailable < max_unavailable {
                    tolerate(client.delete(&pod_path(pod)).await)?;
                    if !pod_unavailable {
                        unavailable += 1;
                    }
                }
            }
            [_] => {}
            [keep, extra @ ..] => {
                let _ = keep;
                for pod in extra {
                    tolerate(client.delete(&pod_path(pod)).await)?;
                }
            }
        }
    }
    // Pods on nodes that no longer match go.
    let misplaced: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|p| is_active(p) && !eligible.iter().any(|n| p["spec"]["nodeName"] == api::meta::name_of(n)))
        .collect();
    for pod in &misplaced {
        tolerate(client.delete(&pod_path(pod)).await)?;
    }
    let scheduled: Vec<&Value> = eligible.iter().flat_map(|n| on(api::meta::name_of(n))).collect();
    let status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": scheduled.len(),
        "numberMisscheduled": misplaced.len(),
        "numberReady": scheduled.iter().filter(|p| is_ready(p)).count(),
        "numberAvailable": scheduled.iter().filter(|p| is_available(p, min_ready)).count(),
        "numberUnavailable": desired.saturating_sub(scheduled.iter().filter(|p| is_available(p, min_ready)).count() as u64),
        "updatedNumberScheduled": scheduled.iter().filter(|p| current(p)).count(),
        "observedGeneration": ds["metadata"]["generation"],
    });
    let keys = [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberMisscheduled",
        "numberReady",
        "numberAvailable",
        "numberUnavailable",
        "updatedNumberScheduled",
        "observedGeneration",
    ];
    if keys.iter().any(|k| ds["status"][*k].as_u64().unwrap_or(0) != status[*k].as_u64().unwrap_or(0)) {
        let path = format!("/apis/apps/v1/namespaces/{namespace}/daemonsets/{}/status", api::meta::name_of(ds));
        tolerate(client.merge_patch(&path, &json!({"status": status})).await)?;
    }
    let settled = status["updatedNumberScheduled"] == desired && status["numberAvailable"] == desired;
    let waiting_on_ready_nodes = eligible.iter().all(|n| node_is_ready(n));
    Ok(if settled || !waiting_on_ready_nodes { Outcome::default() } else { Outcome::after(Duration::from_secs(1)) })
}

async fn create_pod(client: &Client, ds: &Value, hash: &str, node: &str) -> Result<(), ClientError> {
    let namespace = api::meta::namespace_of(ds);
    let template = &ds["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    labels[REVISION_HASH] = json!(hash);
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-", api::meta::name_of(ds)),
            "namespace": namespace, "labels": labels,
            "ownerReferences": controller_ref(ds, "DaemonSet"),
        },
        "spec": template["spec"],
    });
    pod["spec"]["nodeName"] = json!(node);
    if let Some(annotations) = template["metadata"]["annotations"].as_object() {
        pod["metadata"]["annotations"] = json!(annotations);
    }
    tolerate(client.post(&format!("/api/v1/namespaces/{namespace}/pods"), &pod).await)
}
