//! Node lifecycle: a node whose agent stopped renewing its Lease for longer than the grace
//! period is marked `Ready=Unknown` (reason `NodeStatusUnknown`) and the pods bound to it lose
//! their `Ready` condition. Nothing is moved: placement in a car is static. When the agent
//! comes back it reports the node Ready again itself.
//!
//! Lease renewals are kept in memory only (flash wear), so after a restart of the server a
//! lease says when its node was last heard from before the previous run's last durable
//! write. Every node is therefore counted as heard from when this controller started: it gets
//! one grace period to renew, and is marked lost if it does not.

use api::meta::{millis_since, name_of, now_rfc3339};
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Options {
    /// How long after its last lease renewal a node is considered lost.
    pub grace: Duration,
    /// How often nodes are checked.
    pub period: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { grace: Duration::from_secs(40), period: Duration::from_secs(5) }
    }
}

/// Runs until `shutdown` fires.
pub async fn run(
    client: Client,
    options: Options,
    metrics: crate::metrics::ReconcileMetrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let started = std::time::Instant::now();
    loop {
        if let Err(e) = metrics.measure("node-lifecycle", reconcile(&client, &options, started.elapsed())).await {
            tracing::warn!(error = %e, "node lifecycle pass failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(options.period) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn ready_status(node: &Value) -> Option<&str> {
    node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?["status"].as_str()
}

/// One pass: marks lost nodes. Writes nothing when every node is as it should be. `running`:
/// how long the controller has run; no node is silent for longer than that.
pub async fn reconcile(client: &Client, options: &Options, running: Duration) -> Result<(), ClientError> {
    let nodes = client.get("/api/v1/nodes").await?;
    let leases = client.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases").await?;
    for node in nodes["items"].as_array().into_iter().flatten() {
        let name = name_of(node);
        if ready_status(node) != Some("True") {
            continue;
        }
        let lease = leases["items"].as_array().into_iter().flatten().find(|l| name_of(l) == name);
        let last_alive = lease
            .and_then(|l| l["spec"]["renewTime"].as_str())
            .or(node["metadata"]["creationTimestamp"].as_str())
            .and_then(millis_since);
        let Some(silent_ms) = last_alive else { continue };
        let silent = Duration::from_millis(silent_ms.max(0) as u64).min(running);
        if silent <= options.grace {
            continue;
        }
        tracing::warn!(node = %name, silent_seconds = silent.as_secs(), "node stopped renewing its lease; marking it NotReady");
        mark_lost(client, name).await?;
        let message = format!("Node {name} status is now: NodeNotReady (no lease renewal for {} s)", silent.as_secs());
        crate::workloads::event(client, node, "Node", "Normal", "NodeNotReady", &message).await;
    }
    Ok(())
}

/// Marks the node's conditions Unknown and its pods not ready.
async fn mark_lost(client: &Client, node: &str) -> Result<(), ClientError> {
    let now = now_rfc3339();
    let conditions: Vec<Value> = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
        .iter()
        .map(|t| {
            json!({"type": t, "status": "Unknown", "reason": "NodeStatusUnknown",
                   "message": "Axle agent stopped posting node status.", "lastTransitionTime": now})
        })
        .collect();
    client
        .strategic_patch(&format!("/api/v1/nodes/{node}/status"), &json!({"status": {"conditions": conditions}}))
        .await?;
    let pods = client.get(&format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")).await?;
    for pod in pods["items"].as_array().into_iter().flatten() {
        let path = format!("/api/v1/namespaces/{}/pods/{}/status", api::meta::namespace_of(pod), name_of(pod));
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "NodeNotReady", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "NodeNotReady", "lastTransitionTime": now}]}});
        match client.strategic_patch(&path, &patch).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
