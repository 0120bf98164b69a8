//! Deployments: one ReplicaSet per template revision, rolled from old to new by the strategy
//! (RollingUpdate with maxSurge/maxUnavailable and minReadySeconds, or Recreate), paused on
//! request, with the revision history `kubectl rollout history|undo` reads and the status and
//! conditions `kubectl rollout status` follows (Progressing, Available, ProgressDeadlineExceeded).
//!
//! Beyond Kubernetes, with `axle.dev/auto-rollback: "true"`: a rollout whose new pods
//! crash-loop or that exceeds its progress deadline is rolled back to the last revision that was
//! fully available, with an Event and an `AutoRolledBack` condition saying why.

use crate::workloads::{controller_ref, controller_uid, event, is_active, tolerate, Outcome, Snapshot};
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::time::Duration;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations that stay on the Deployment (Kubernetes' list, and Axle's own state).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    LAST_AVAILABLE,
];
const TEMPLATE_HASH: &str = "pod-template-hash";
pub const AUTO_ROLLBACK: &str = "axle.dev/auto-rollback";
const LAST_AVAILABLE: &str = "axle.dev/last-available-revision";
/// Restarts of one container of a new pod after which the rollout counts as crash-looping.
const CRASH_LOOP_RESTARTS: u64 = 2;

pub async fn reconcile(client: &Client, snapshot: &Snapshot) -> Result<Outcome, ClientError> {
    let mut outcome = Outcome::default();
    for deployment in &snapshot.deployments {
        if deployment["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        outcome = outcome.merge(sync(client, snapshot, deployment).await?);
    }
    Ok(outcome)
}

fn revision(rs: &Value) -> u64 {
    rs["metadata"]["annotations"][REVISION].as_str().and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn rs_path(rs: &Value) -> String {
    format!("/apis/apps/v1/namespaces/{}/replicasets/{}", api::meta::namespace_of(rs), api::meta::name_of(rs))
}

fn spec_replicas(obj: &Value) -> u64 {
    obj["spec"]["replicas"].as_u64().unwrap_or(1)
}

fn status_count(obj: &Value, field: &str) -> u64 {
    obj["status"][field].as_u64().unwrap_or(0)
}

/// The annotations a Deployment passes on to its new ReplicaSet.
fn copied_annotations(deployment: &Value) -> serde_json::Map<String, Value> {
    deployment["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A template as a Deployment holds it: the ReplicaSet's, without its hash label.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(TEMPLATE_HASH);
    }
    if t["metadata"]["labels"].as_object().is_some_and(|l| l.is_empty()) {
        if let Some(meta) = t["metadata"].as_object_mut() {
            meta.remove("labels");
        }
    }
    t
}

/// Kubernetes' pod-template-hash: FNV-1a of the template, its decimal digits mapped onto the
/// alphabet Kubernetes uses for generated names (no vowels, no look-alikes).
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    for byte in serde_json::to_vec(template).unwrap_or_default() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string().bytes().map(|b| ALPHABET[b as usize % ALPHABET.len()] as char).collect()
}

/// `maxSurge`/`maxUnavailable`: an absolute number or a percentage of `replicas`.
fn resolve(value: &Value, replicas: u64, round_up: bool, default_percent: u64) -> u64 {
    let percent = |p: u64| {
        let scaled = replicas * p;
        if round_up {
            scaled.div_ceil(100)
        } else {
            scaled / 100
        }
    };
    match value {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse().ok()).map(percent).unwrap_or(0),
        _ => percent(default_percent),
    }
}

struct Strategy {
    recreate: bool,
    max_surge: u64,
    max_unavailable: u64,
}

fn strategy(deployment: &Value) -> Strategy {
    let replicas = spec_replicas(deployment);
    let spec = &deployment["spec"]["strategy"];
    if spec["type"] == "Recreate" {
        return Strategy { recreate: true, max_surge: 0, max_unavailable: 0 };
    }
    let rolling = &spec["rollingUpdate"];
    let max_surge = resolve(&rolling["maxSurge"], replicas, true, 25);
    let mut max_unavailable = resolve(&rolling["maxUnavailable"], replicas, false, 25);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Strategy { recreate: false, max_surge, max_unavailable: max_unavailable.min(replicas) }
}

async fn sync(client: &Client, snapshot: &Snapshot, deployment: &Value) -> Result<Outcome, ClientError> {
    let namespace = api::meta::namespace_of(deployment);
    let uid = api::meta::uid_of(deployment);
    let mut owned: Vec<&Value> = snapshot
        .replicasets
        .iter()
        .filter(|rs| controller_uid(rs) == Some(uid) && rs["metadata"]["deletionTimestamp"].is_null())
        .collect();
    owned.sort_by_key(|rs| revision(rs));
    let template = &deployment["spec"]["template"];
    let new_rs = owned.iter().copied().find(|rs| without_hash(&rs["spec"]["template"]) == *template);
    let old: Vec<&Value> = owned.iter().copied().filter(|rs| Some(*rs) != new_rs).collect();
    let max_revision = owned.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let paused = deployment["spec"]["paused"] == true;
    let replicas = spec_replicas(deployment);

    if !paused && deployment["metadata"]["annotations"][AUTO_ROLLBACK] == "true" {
        if let Some(rolled_back) = auto_rollback(client, snapshot, deployment, new_rs, &owned).await? {
            return Ok(rolled_back);
        }
    }

    let Some(new_rs) = new_rs else {
        if paused {
            return write_status(client, deployment, None, &old, false).await;
        }
        create_replicaset(client, deployment, max_revision + 1, &old).await?;
        return Ok(Outcome::default());
    };
    // A template that returns to an older revision (rollout undo) makes it the newest again.
    if revision(new_rs) < max_revision && !paused {
        let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
        tolerate(client.merge_patch(&rs_path(new_rs), &patch).await)?;
        return Ok(Outcome::default());
    }
    // The new ReplicaSet carries the deployment's annotations (change cause, auto-rollback…),
    // as in Kubernetes: `rollout undo` copies them back from the ReplicaSet it returns to.
    let copied = copied_annotations(deployment);
    if copied.iter().any(|(k, v)| new_rs["metadata"]["annotations"][k] != *v) {
        let patch = json!({"metadata": {"annotations": copied}});
        tolerate(client.merge_patch(&rs_path(new_rs), &patch).await)?;
    }
    let mut progressed = false;
    if paused {
        // Paused: only the scale follows the spec, on the newest ReplicaSet.
        if spec_replicas(new_rs) != replicas && old.iter().all(|rs| spec_replicas(rs) == 0) {
            scale(client, deployment, new_rs, replicas).await?;
        }
    } else {
        let s = strategy(deployment);
        progressed = if s.recreate {
            recreate(client, snapshot, deployment, new_rs, &old, replicas).await?
        } else {
            roll(client, deployment, new_rs, &old, replicas, &s).await?
        };
        cleanup_history(client, deployment, &old).await?;
    }
    let deployment_revision = revision(new_rs).max(max_revision).to_string();
    if deployment["metadata"]["annotations"][REVISION].as_str() != Some(deployment_revision.as_str()) {
        let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{}", api::meta::name_of(deployment));
        let patch = json!({"metadata": {"annotations": {REVISION: deployment_revision}}});
        tolerate(client.merge_patch(&path, &patch).await)?;
    }
    write_status(client, deployment, Some(new_rs), &old, progressed).await
}

async fn create_replicaset(
    client: &Client,
    deployment: &Value,
    revision: u64,
    old: &[&Value],
) -> Result<(), ClientError> {
    let namespace = api::meta::namespace_of(deployment);
    let name = api::meta::name_of(deployment);
    let template = &deployment["spec"]["template"];
    let hash = template_hash(template);
    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"][TEMPLATE_HASH] = json!(hash);
    let mut selector = deployment["spec"]["selector"].clone();
    selector["matchLabels"][TEMPLATE_HASH] = json!(hash);
    let replicas = spec_replicas(deployment);
    let s = strategy(deployment);
    // Recreate starts the new pods once the old ones are gone; a rolling update surges.
    let old_total: u64 = old.iter().map(|rs| spec_replicas(rs)).sum();
    let initial = match (s.recreate, old_total) {
        (_, 0) => replicas,
        (true, _) => 0,
        (false, _) => (replicas + s.max_surge).saturating_sub(old_total).min(replicas),
    };
    let mut annotations = json!(copied_annotations(deployment));
    annotations[REVISION] = json!(revision.to_string());
    annotations[DESIRED_REPLICAS] = json!(replicas.to_string());
    annotations[MAX_REPLICAS] = json!((replicas + s.max_surge).to_string());
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"), "namespace": namespace,
            "labels": rs_template["metadata"]["labels"], "annotations": annotations,
            "ownerReferences": controller_ref(deployment, "Deployment"),
        },
        "spec": {
            "replicas": initial, "minReadySeconds": deployment["spec"]["minReadySeconds"].as_u64().unwrap_or(0),
            "selector": selector, "template": rs_template,
        },
    });
    let created = client.post(&format!("/apis/apps/v1/namespaces/{namespace}/replicasets"), &rs).await;
    match created {
        Ok(_) => {
            let message = format!("Scaled up replica set {name}-{hash} to {initial}");
            event(client, deployment, "Deployment", "Normal", "ScalingReplicaSet", &message).await;
            Ok(())
        }
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn scale(client: &Client, deployment: &Value, rs: &Value, replicas: u64) -> Result<(), ClientError> {
    let current = spec_replicas(rs);
    if current == replicas {
        return Ok(());
    }
    let path = rs_path(rs);
    let patch = json!({
        "metadata": {"annotations": {DESIRED_REPLICAS: spec_replicas(deployment).to_string()}},
        "spec": {"replicas": replicas},
    });
    tolerate(client.merge_patch(&path, &patch).await)?;
    let direction = if replicas > current { "up" } else { "down" };
    let message = format!("Scaled {direction} replica set {} from {current} to {replicas}", api::meta::name_of(rs));
    event(client, deployment, "Deployment", "Normal", "ScalingReplicaSet", &message).await;
    Ok(())
}

/// Recreate: every old pod goes first, then the new ones start.
async fn recreate(
    client: &Client,
    snapshot: &Snapshot,
    deployment: &Value,
    new_rs: &Value,
    old: &[&Value],
    replicas: u64,
) -> Result<bool, ClientError> {
    let mut progressed = false;
    for rs in old {
        if spec_replicas(rs) > 0 {
            scale(client, deployment, rs, 0).await?;
            progressed = true;
        }
    }
    let old_pods_left = old.iter().any(|rs| {
        snapshot
            .pods_of(api::meta::uid_of(rs))
            .iter()
            .any(|p| is_active(p) || p["metadata"]["deletionTimestamp"].is_string())
    });
    if !progressed && !old_pods_left && spec_replicas(new_rs) != replicas {
        scale(client, deployment, new_rs, replicas).await?;
        progressed = true;
    }
    Ok(progressed)
}

/// RollingUpdate: surge the new ReplicaSet within maxSurge, then retire old pods as long as
/// `replicas - maxUnavailable` stay available.
async fn roll(
    client: &Client,
    deployment: &Value,
    new_rs: &Value,
    old: &[&Value],
    replicas: u64,
    s: &Strategy,
) -> Result<bool, ClientError> {
    let new_spec = spec_replicas(new_rs);
    let total_spec: u64 = new_spec + old.iter().map(|rs| spec_replicas(rs)).sum::<u64>();
    if new_spec > replicas {
        scale(client, deployment, new_rs, replicas).await?;
        return Ok(true);
    }
    if new_spec < replicas {
        let room = (replicas + s.max_surge).saturating_sub(total_spec);
        let up = room.min(replicas - new_spec);
        if up > 0 {
            scale(client, deployment, new_rs, new_spec + up).await?;
            return Ok(true);
        }
    }
    let min_available = replicas.saturating_sub(s.max_unavailable);
    let new_available = status_count(new_rs, "availableReplicas");
    let mut available: u64 = new_available + old.iter().map(|rs| status_count(rs, "availableReplicas")).sum::<u64>();
    let mut progressed = false;
    let mut old_sorted: Vec<&Value> = old.to_vec();
    old_sorted.sort_by_key(|rs| revision(rs));
    // Unavailable old pods go first: removing them costs no availability.
    let mut budget = total_spec.saturating_sub(min_available).saturating_sub(new_spec.saturating_sub(new_available));
    for rs in &old_sorted {
        let unhealthy = spec_replicas(rs).saturating_sub(status_count(rs, "availableReplicas")).min(budget);
        if unhealthy > 0 {
            scale(client, deployment, rs, spec_replicas(rs) - unhealthy).await?;
            budget -= unhealthy;
            progressed = true;
        }
    }
    if progressed {
        return Ok(true);
    }
    for rs in &old_sorted {
        let can = available.saturating_sub(min_available);
        let down = spec_replicas(rs).min(can);
        if down > 0 {
            scale(client, deployment, rs, spec_replicas(rs) - down).await?;
            available -= down;
            progressed = true;
        }
    }
    Ok(progressed)
}

/// Deletes old, scaled-down ReplicaSets beyond `revisionHistoryLimit` (oldest first).
async fn cleanup_history(client: &Client, deployment: &Value, old: &[&Value]) -> Result<(), ClientError> {
    let limit = deployment["spec"]["revisionHistoryLimit"].as_u64().unwrap_or(10) as usize;
    let mut idle: Vec<&Value> =
        old.iter().copied().filter(|rs| spec_replicas(rs) == 0 && status_count(rs, "replicas") == 0).collect();
    if idle.len() <= limit {
        return Ok(());
    }
    idle.sort_by_key(|rs| revision(rs));
    for rs in &idle[..idle.len() - limit] {
        tolerate(client.delete(&rs_path(rs)).await)?;
    }
    Ok(())
}

fn find_condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    crate::workloads::condition(obj, kind)
}

/// Writes status and conditions when they changed; asks to be looked at again while a rollout
/// is in progress (minReadySeconds and the progress deadline are times, not events).
async fn write_status(
    client: &Client,
    deployment: &Value,
    new_rs: Option<&Value>,
    old: &[&Value],
    progressed: bool,
) -> Result<Outcome, ClientError> {
    let all: Vec<&Value> = new_rs.into_iter().chain(old.iter().copied()).collect();
    let sum = |field: &str| all.iter().map(|rs| status_count(rs, field)).sum::<u64>();
    let replicas = spec_replicas(deployment);
    let total_spec: u64 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let (current, ready, available) = (sum("replicas"), sum("readyReplicas"), sum("availableReplicas"));
    let updated = new_rs.map(|rs| status_count(rs, "replicas")).unwrap_or(0);
    let s = strategy(deployment);
    let now = api::meta::now_rfc3339();
    let old_status = &deployment["status"];
    let counts_changed = ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"]
        .iter()
        .zip([current, updated, ready, available])
        .any(|(k, v)| old_status[*k].as_u64().unwrap_or(0) != v);
    let complete = new_rs.is_some_and(|rs| spec_replicas(rs) == replicas)
        && updated == replicas
        && current == replicas
        && available >= replicas
        && old.iter().all(|rs| status_count(rs, "replicas") == 0);
    let rs_name = new_rs.map(|rs| api::meta::name_of(rs).to_string()).unwrap_or_default();
    let previous = find_condition(deployment, "Progressing").cloned().unwrap_or(Value::Null);
    let deadline = Duration::from_secs(deployment["spec"]["progressDeadlineSeconds"].as_u64().unwrap_or(600));
    let since_update = previous["lastUpdateTime"].as_str().and_then(api::meta::millis_since).unwrap_or(0);
    let paused = deployment["spec"]["paused"] == true;
    let (status, reason, message) = if paused {
        ("Unknown", "DeploymentPaused", "Deployment is paused".to_string())
    } else if complete {
        ("True", "NewReplicaSetAvailable", format!("ReplicaSet \"{rs_name}\" has successfully progressed."))
    } else if timed_out(&previous, &rs_name, progressed || counts_changed, since_update, deadline) {
        ("False", "ProgressDeadlineExceeded", format!("ReplicaSet \"{rs_name}\" has timed out progressing."))
    } else if previous.is_null() || previous["reason"] == "DeploymentPaused" {
        ("True", "NewReplicaSetCreated", format!("Created new replica set \"{rs_name}\""))
    } else {
        ("True", "ReplicaSetUpdated", format!("ReplicaSet \"{rs_name}\" is progressing."))
    };
    let same = previous["status"] == status && previous["reason"] == reason && previous["message"] == message.as_str();
    let touched = progressed || counts_changed || !same;
    let progressing = json!({
        "type": "Progressing", "status": status, "reason": reason, "message": message,
        "lastUpdateTime": if touched { json!(now) } else { previous["lastUpdateTime"].clone() },
        "lastTransitionTime": if previous["status"] == status { previous["lastTransitionTime"].clone() } else { json!(now) },
    });
    let min_available = if s.recreate { replicas } else { replicas.saturating_sub(s.max_unavailable) };
    let is_available = available >= min_available;
    let previous_available = find_condition(deployment, "Available").cloned().unwrap_or(Value::Null);
    let available_status = if is_available { "True" } else { "False" };
    let available_condition = json!({
        "type": "Available", "status": available_status,
        "reason": if is_available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
        "message": if is_available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
        "lastUpdateTime": if previous_available["status"] == available_status { previous_available["lastUpdateTime"].clone() } else { json!(now) },
        "lastTransitionTime": if previous_available["status"] == available_status { previous_available["lastTransitionTime"].clone() } else { json!(now) },
    });
    // Conditions of Axle's own (AutoRolledBack) are kept as they are.
    let mut conditions = vec![available_condition, progressing];
    conditions.extend(
        old_status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["type"] != "Available" && c["type"] != "Progressing")
            .cloned(),
    );
    let status = json!({
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": current, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": total_spec.max(replicas).saturating_sub(available),
        "conditions": conditions,
    });
    let changed = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .any(|k| old_status[*k].as_u64().unwrap_or(0) != status[*k].as_u64().unwrap_or(0))
        || old_status["conditions"] != status["conditions"];
    let namespace = api::meta::namespace_of(deployment);
    let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{}", api::meta::name_of(deployment));
    if changed {
        tolerate(client.merge_patch(&format!("{path}/status"), &json!({"status": status})).await)?;
        if reason == "ProgressDeadlineExceeded" && previous["reason"] != "ProgressDeadlineExceeded" {
            event(client, deployment, "Deployment", "Warning", "ProgressDeadlineExceeded", &message).await;
        }
    }
    // The last revision that was fully available is where an automatic rollback returns.
    if complete && !paused {
        if let Some(rs) = new_rs {
            let rev = revision(rs).to_string();
            if deployment["metadata"]["annotations"][LAST_AVAILABLE].as_str() != Some(rev.as_str()) {
                let patch = json!({"metadata": {"annotations": {LAST_AVAILABLE: rev}}});
                tolerate(client.merge_patch(&path, &patch).await)?;
            }
        }
    }
    Ok(if complete || paused || reason == "ProgressDeadlineExceeded" {
        Outcome::default()
    } else {
        Outcome::after(Duration::from_secs(1))
    })
}

/// A rollout times out when it made no progress for `progressDeadlineSeconds`; it stays timed
/// out (as in Kubernetes) until a new ReplicaSet starts or it completes.
fn timed_out(previous: &Value, rs_name: &str, progressing_now: bool, since_update_ms: i64, deadline: Duration) -> bool {
    let same_rollout = previous["message"].as_str().is_some_and(|m| m.contains(&format!("\"{rs_name}\"")));
    if previous["reason"] == "ProgressDeadlineExceeded" {
        return same_rollout;
    }
    !progressing_now && previous["status"] == "True" && since_update_ms >= deadline.as_millis() as i64
}

/// Why the new ReplicaSet's rollout failed, if it did: a pod crash-loops, or the progress
/// deadline passed.
fn failure(snapshot: &Snapshot, deployment: &Value, new_rs: &Value) -> Option<(&'static str, String)> {
    if find_condition(deployment, "Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
        return Some(("ProgressDeadlineExceeded", "the rollout exceeded its progress deadline".into()));
    }
    for pod in snapshot.pods_of(api::meta::uid_of(new_rs)) {
        let statuses = pod["status"]["containerStatuses"].as_array().into_iter().flatten();
        let init = pod["status"]["initContainerStatuses"].as_array().into_iter().flatten();
        for c in statuses.chain(init) {
            let restarts = c["restartCount"].as_u64().unwrap_or(0);
            if restarts >= CRASH_LOOP_RESTARTS {
                return Some((
                    "CrashLoopBackOff",
                    format!(
                        "pod {} crash-loops (container {} restarted {restarts} times, last exit code {})",
                        api::meta::name_of(pod),
                        c["name"].as_str().unwrap_or(""),
                        c["lastState"]["terminated"]["exitCode"]
                    ),
                ));
            }
        }
    }
    None
}

/// Rolls back to the last fully available revision when the current rollout failed.
async fn auto_rollback(
    client: &Client,
    snapshot: &Snapshot,
    deployment: &Value,
    new_rs: Option<&Value>,
    owned: &[&Value],
) -> Result<Option<Outcome>, ClientError> {
    let Some(new_rs) = new_rs else { return Ok(None) };
    let Some(last_good) = deployment["metadata"]["annotations"][LAST_AVAILABLE].as_str() else { return Ok(None) };
    let from = revision(new_rs);
    if from.to_string() == last_good {
        return Ok(None);
    }
    let Some(target) = owned.iter().find(|rs| revision(rs).to_string() == last_good) else { return Ok(None) };
    let Some((reason, why)) = failure(snapshot, deployment, new_rs) else { return Ok(None) };
    let message = format!("rolled back from revision {from} to {last_good}: {why}");
    let namespace = api::meta::namespace_of(deployment);
    let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{}", api::meta::name_of(deployment));
    // The resourceVersion makes this a compare-and-swap: a user's change in between wins.
    let patch = json!({
        "metadata": {"resourceVersion": deployment["metadata"]["resourceVersion"]},
        "spec": {"template": without_hash(&target["spec"]["template"])},
    });
    match client.merge_patch(&path, &patch).await {
        Ok(_) => {}
        Err(e) if matches!(e.code(), Some(404 | 409)) => return Ok(Some(Outcome::default())),
        Err(e) => return Err(e),
    }
    let now = api::meta::now_rfc3339();
    let mut conditions: Vec<Value> = deployment["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] != "AutoRolledBack")
        .cloned()
        .collect();
    conditions.push(json!({"type": "AutoRolledBack", "status": "True", "reason": reason, "message": message,
                           "lastUpdateTime": now, "lastTransitionTime": now}));
    tolerate(client.merge_patch(&format!("{path}/status"), &json!({"status": {"conditions": conditions}})).await)?;
    event(client, deployment, "Deployment", "Warning", "AutoRolledBack", &message).await;
    Ok(Some(Outcome::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailability_resolve_like_kubernetes() {
        assert_eq!(resolve(&Value::Null, 4, true, 25), 1);
        assert_eq!(resolve(&Value::Null, 1, true, 25), 1, "25% of 1 rounds up for surge");
        assert_eq!(resolve(&Value::Null, 1, false, 25), 0, "and down for unavailability");
        assert_eq!(resolve(&json!("50%"), 3, true, 25), 2);
        assert_eq!(resolve(&json!(2), 3, true, 25), 2);
        let d = json!({"spec": {"replicas": 1, "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}});
        assert_eq!(strategy(&d).max_unavailable, 1, "both zero would never progress");
    }

    #[test]
    fn template_hashes_are_stable_label_values() {
        let t =
            json!({"metadata": {"labels": {"app": "nav"}}, "spec": {"containers": [{"name": "c", "image": "nav:1"}]}});
        let hash = template_hash(&t);
        assert_eq!(hash, template_hash(&t.clone()));
        assert!(api::meta::label_value_error(&hash).is_none(), "{hash}");
        let mut other = t.clone();
        other["spec"]["containers"][0]["image"] = json!("nav:2");
        assert_ne!(hash, template_hash(&other));
        let mut labeled = t.clone();
        labeled["metadata"]["labels"][TEMPLATE_HASH] = json!(hash);
        assert_eq!(without_hash(&labeled), t);
    }
}
