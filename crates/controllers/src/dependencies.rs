//! Dependencies between workloads (`axle.dev/depends-on: "storage=Ready, init-db=Succeeded"`).
//!
//! The API server gives every pod that carries the annotation the scheduling gate
//! [`api::dependencies::GATE`]; agents do not start gated pods. This controller removes the gate
//! once every dependency holds — across nodes — and until then says which ones do not, as the
//! pod's `PodScheduled=False` condition with reason `WaitingForDependencies`.
//!
//! A dependency names a pod, or a Deployment or DaemonSet (meaning all of its pods, at least
//! one), or a Job (`Succeeded`/`Failed` as its Complete/Failed condition says), in the pod's
//! namespace; the condition is the pod phase `Running`, `Succeeded`, `Failed`, or `Ready` (the
//! Ready condition).

use crate::workloads::{condition, controller_uid, is_active, tolerate, Outcome, Snapshot};
use api::dependencies::{parse, Dependency, ANNOTATION, GATE};
use client::{Client, ClientError};
use serde_json::{json, Value};

pub async fn reconcile(client: &Client, snapshot: &Snapshot) -> Result<Outcome, ClientError> {
    for pod in &snapshot.pods {
        let gates = pod["spec"]["schedulingGates"].as_array().cloned().unwrap_or_default();
        if !gates.iter().any(|g| g["name"] == GATE) || pod["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let path = format!("/api/v1/namespaces/{}/pods/{}", api::meta::namespace_of(pod), api::meta::name_of(pod));
        let wanted = pod["metadata"]["annotations"][ANNOTATION].as_str().unwrap_or("");
        let missing: Vec<String> = match parse(wanted) {
            Ok(deps) => deps.iter().filter_map(|d| unmet(snapshot, pod, d)).collect(),
            // Admission rejects bad annotations; one that slipped through never opens the gate.
            Err(why) => vec![why],
        };
        if missing.is_empty() {
            let remaining: Vec<Value> = gates.into_iter().filter(|g| g["name"] != GATE).collect();
            let patch = json!({"metadata": {"resourceVersion": pod["metadata"]["resourceVersion"]},
                               "spec": {"schedulingGates": remaining}});
            tolerate(client.merge_patch(&path, &patch).await)?;
            tracing::info!(pod = %format!("{}/{}", api::meta::namespace_of(pod), api::meta::name_of(pod)), "dependencies met; the pod may start");
            continue;
        }
        let message = format!("waiting for {}", missing.join(", "));
        let current = condition(pod, "PodScheduled");
        if current.is_some_and(|c| c["reason"] == "WaitingForDependencies" && c["message"] == message.as_str()) {
            continue;
        }
        let patch = json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "WaitingForDependencies", "message": message, "lastTransitionTime": api::meta::now_rfc3339()}]}});
        tolerate(client.strategic_patch(&format!("{path}/status"), &patch).await)?;
    }
    Ok(Outcome::default())
}

/// Whether one pod meets a condition.
fn holds(pod: &Value, wanted: &str) -> bool {
    match wanted {
        "Ready" => condition(pod, "Ready").is_some_and(|c| c["status"] == "True"),
        phase => pod["status"]["phase"] == phase,
    }
}

/// The pod's own state, for messages: `Running, not Ready`, `Pending`, …
fn describe(pod: &Value) -> String {
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let ready = condition(pod, "Ready").is_some_and(|c| c["status"] == "True");
    if phase == "Running" && !ready {
        "Running, not Ready".into()
    } else {
        phase.into()
    }
}

/// None if the dependency holds, else what is missing (`storage=Ready (storage-x: Pending)`).
fn unmet(snapshot: &Snapshot, dependent: &Value, dep: &Dependency) -> Option<String> {
    let namespace = api::meta::namespace_of(dependent);
    let in_namespace = |o: &&Value| api::meta::namespace_of(o) == namespace && api::meta::name_of(o) == dep.name;
    let wanted = format!("{}={}", dep.name, dep.condition);
    if let Some(pod) = snapshot.pods.iter().find(in_namespace) {
        return (!holds(pod, &dep.condition)).then(|| format!("{wanted} ({}: {})", dep.name, describe(pod)));
    }
    // A Job succeeds or fails as a whole (its conditions); it runs while one of its pods does.
    if let Some(job) = snapshot.jobs.iter().find(in_namespace) {
        let ended = crate::job::finished(job).map(|(kind, _)| kind);
        let state = match ended {
            Some("Complete") => "Succeeded",
            Some(_) => "Failed",
            None => "Running",
        };
        let met = match dep.condition.as_str() {
            "Succeeded" | "Failed" => state == dep.condition,
            wanted_state => {
                snapshot.pods_of(api::meta::uid_of(job)).iter().any(|p| is_active(p) && holds(p, wanted_state))
            }
        };
        return (!met).then(|| format!("{wanted} (Job {}: {state})", dep.name));
    }
    let owner_uid = snapshot
        .deployments
        .iter()
        .chain(&snapshot.daemonsets)
        .find(in_namespace)
        .map(|o| api::meta::uid_of(o).to_string());
    let Some(owner_uid) = owner_uid else {
        return Some(format!("{wanted} (no pod, Deployment, DaemonSet or Job named {:?})", dep.name));
    };
    // A Deployment's pods belong to its ReplicaSets.
    let replicasets: Vec<&str> = snapshot
        .replicasets
        .iter()
        .filter(|rs| controller_uid(rs) == Some(owner_uid.as_str()))
        .map(api::meta::uid_of)
        .collect();
    let pods: Vec<&Value> = snapshot
        .pods
        .iter()
        .filter(|p| controller_uid(p).is_some_and(|u| u == owner_uid || replicasets.contains(&u)))
        .filter(|p| is_active(p) || matches!(dep.condition.as_str(), "Succeeded" | "Failed"))
        .collect();
    match pods.iter().find(|p| !holds(p, &dep.condition)) {
        None if !pods.is_empty() => None,
        None => Some(format!("{wanted} (it has no pods yet)")),
        Some(pod) => Some(format!("{wanted} ({}: {})", api::meta::name_of(pod), describe(pod))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "car", "uid": format!("uid-{name}")},
               "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn dependencies_hold_on_pods_and_on_deployments_pods() {
        let app = pod("app", "Pending", false);
        let mut storage_pod = pod("storage-abc", "Running", false);
        storage_pod["metadata"]["ownerReferences"] = json!([{"uid": "rs-1", "controller": true}]);
        let snapshot = Snapshot {
            pods: vec![app.clone(), pod("init-db", "Succeeded", false), storage_pod],
            deployments: vec![json!({"metadata": {"name": "storage", "namespace": "car", "uid": "dep-1"}})],
            replicasets: vec![
                json!({"metadata": {"uid": "rs-1", "ownerReferences": [{"uid": "dep-1", "controller": true}]}}),
            ],
            ..Snapshot::default()
        };
        let dep = |s: &str| parse(s).expect("valid").remove(0);
        assert_eq!(unmet(&snapshot, &app, &dep("init-db=Succeeded")), None);
        assert_eq!(unmet(&snapshot, &app, &dep("storage=Running")), None);
        assert_eq!(
            unmet(&snapshot, &app, &dep("storage=Ready")).as_deref(),
            Some("storage=Ready (storage-abc: Running, not Ready)")
        );
        assert!(unmet(&snapshot, &app, &dep("ghost=Running")).is_some_and(|m| m.contains("no pod")));
    }
}
