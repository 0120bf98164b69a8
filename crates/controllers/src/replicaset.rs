//! ReplicaSets: keep `spec.replicas` active pods of the template, placed statically, and
//! report how many exist, are ready and available.

use crate::placement;
use crate::workloads::{controller_ref, event, is_active, is_available, is_ready, tolerate, Outcome, Snapshot};
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::time::Duration;

pub async fn reconcile(client: &Client, snapshot: &Snapshot) -> Result<Outcome, ClientError> {
    let mut outcome = Outcome::default();
    for rs in &snapshot.replicasets {
        if rs["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        outcome = outcome.merge(sync(client, snapshot, rs).await?);
    }
    Ok(outcome)
}

fn min_ready(obj: &Value) -> Duration {
    Duration::from_secs(obj["spec"]["minReadySeconds"].as_u64().unwrap_or(0))
}

async fn sync(client: &Client, snapshot: &Snapshot, rs: &Value) -> Result<Outcome, ClientError> {
    let namespace = api::meta::namespace_of(rs);
    let uid = api::meta::uid_of(rs);
    let pods = snapshot.pods_of(uid);
    let active: Vec<&Value> = pods.iter().copied().filter(|p| is_active(p)).collect();
    let wanted = rs["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let mut outcome = Outcome::default();
    if active.len() < wanted {
        // Pods placed in this pass count as peers of the next, so replicas spread.
        let mut placed: Vec<Value> = Vec::new();
        for _ in active.len()..wanted {
            let peers: Vec<&Value> = pods.iter().copied().chain(placed.iter()).collect();
            let node = create_pod(client, snapshot, rs, "ReplicaSet", &peers).await?;
            placed.push(json!({"spec": {"nodeName": node}}));
        }
    } else if active.len() > wanted {
        // Kubernetes' order: unplaced first, then not ready, then the newest.
        let mut victims = active.clone();
        victims.sort_by_key(|p| {
            let placed = p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
            (
                placed,
                is_ready(p),
                std::cmp::Reverse(p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string()),
            )
        });
        for pod in victims.iter().take(active.len() - wanted) {
            let path = format!("/api/v1/namespaces/{namespace}/pods/{}", api::meta::name_of(pod));
            tolerate(client.delete(&path).await)?;
            let message = format!("Deleted pod: {}", api::meta::name_of(pod));
            event(client, rs, "ReplicaSet", "Normal", "SuccessfulDelete", &message).await;
        }
    }
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let available = active.iter().filter(|p| is_available(p, min_ready(rs))).count();
    if ready > available {
        // Pods that become available once minReadySeconds pass.
        outcome = outcome.merge(Outcome::after(Duration::from_secs(1)));
    }
    let labeled = match api::selector::LabelSelector::from_object(&rs["spec"]["selector"]) {
        Ok(Some(selector)) => active.iter().filter(|p| selector.matches(&p["metadata"]["labels"])).count(),
        _ => active.len(),
    };
    let status = json!({
        "replicas": active.len(), "fullyLabeledReplicas": labeled, "readyReplicas": ready,
        "availableReplicas": available, "observedGeneration": rs["metadata"]["generation"],
    });
    let current = &rs["status"];
    let unchanged = ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"]
        .iter()
        .all(|k| current[k].as_u64().unwrap_or(0) == status[k].as_u64().unwrap_or(0));
    if !unchanged {
        let path = format!("/apis/apps/v1/namespaces/{namespace}/replicasets/{}/status", api::meta::name_of(rs));
        tolerate(client.merge_patch(&path, &json!({"status": status})).await)?;
    }
    Ok(outcome)
}

/// Creates one pod of `owner`'s template (a ReplicaSet's or a Job's); returns the node it was
/// placed on, if any.
pub(crate) async fn create_pod(
    client: &Client,
    snapshot: &Snapshot,
    owner: &Value,
    kind: &str,
    peers: &[&Value],
) -> Result<Option<String>, ClientError> {
    let namespace = api::meta::namespace_of(owner);
    let template = &owner["spec"]["template"];
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-", api::meta::name_of(owner)),
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
            "ownerReferences": controller_ref(owner, kind),
        },
        "spec": template["spec"],
    });
    if let Some(annotations) = template["metadata"]["annotations"].as_object() {
        pod["metadata"]["annotations"] = json!(annotations);
    }
    // Placed now when a node fits; else the placement controller binds it later.
    let node = placement::choose(&template["spec"], snapshot, peers).ok();
    if let Some(node) = &node {
        pod["spec"]["nodeName"] = json!(node);
    }
    match client.post(&format!("/api/v1/namespaces/{namespace}/pods"), &pod).await {
        Ok(created) => {
            let message = format!("Created pod: {}", api::meta::name_of(&created));
            event(client, owner, kind, "Normal", "SuccessfulCreate", &message).await;
            if let Some(node) = &node {
                placement::scheduled(client, &created, node).await;
            }
        }
        Err(e) if matches!(e.code(), Some(404 | 409)) => {}
        Err(e) => return Err(e),
    }
    Ok(node)
}
