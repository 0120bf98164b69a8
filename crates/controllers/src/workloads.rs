//! The workload controllers' loop: Deployments → ReplicaSets → Pods, DaemonSets → Pods,
//! CronJobs → Jobs → Pods, static placement of unbound pods, and the dependency gates between
//! workloads.
//!
//! Level-triggered and stateless: every pass lists what it needs (one [`Snapshot`]), compares
//! desired with observed state and takes the next idempotent steps through the API. Passes run
//! when a watched collection changes (a burst of changes makes one pass) and, while something
//! waits on time (minReadySeconds, progress deadlines, back-offs), after a short delay. A car
//! at rest causes no pass and no write. A controller killed mid-rollout resumes from what the
//! API says, because nothing it knows lives anywhere else.

use crate::metrics::ReconcileMetrics;
use crate::{cronjob, daemonset, dependencies, deployment, job, placement, replicaset};
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The collections a pass reads, and that wake the loop when they change.
const WATCHED: &[&str] = &[
    "/apis/apps/v1/deployments",
    "/apis/apps/v1/replicasets",
    "/apis/apps/v1/daemonsets",
    "/api/v1/pods",
    "/api/v1/nodes",
    "/apis/batch/v1/jobs",
    "/apis/batch/v1/cronjobs",
];

/// Everything one pass looks at, read at its start.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub deployments: Vec<Value>,
    pub replicasets: Vec<Value>,
    pub daemonsets: Vec<Value>,
    pub pods: Vec<Value>,
    pub nodes: Vec<Value>,
    pub jobs: Vec<Value>,
    pub cronjobs: Vec<Value>,
}

impl Snapshot {
    pub async fn read(client: &Client) -> Result<Snapshot, ClientError> {
        let items = |v: Value| v["items"].as_array().cloned().unwrap_or_default();
        Ok(Snapshot {
            deployments: items(client.get(WATCHED[0]).await?),
            replicasets: items(client.get(WATCHED[1]).await?),
            daemonsets: items(client.get(WATCHED[2]).await?),
            pods: items(client.get(WATCHED[3]).await?),
            nodes: items(client.get(WATCHED[4]).await?),
            jobs: items(client.get(WATCHED[5]).await?),
            cronjobs: items(client.get(WATCHED[6]).await?),
        })
    }

    /// Pods controlled by the object with `uid` (owner reference with `controller: true`).
    pub fn pods_of(&self, uid: &str) -> Vec<&Value> {
        self.pods.iter().filter(|p| controller_uid(p) == Some(uid)).collect()
    }
}

/// The uid of an object's controlling owner.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"].as_array()?.iter().find(|r| r["controller"] == true)?["uid"].as_str()
}

/// An owner reference making `owner` the controller of what carries it.
pub fn controller_ref(owner: &Value, kind: &str) -> Value {
    let default_version = match kind {
        "Job" | "CronJob" => "batch/v1",
        _ => "apps/v1",
    };
    json!([{
        "apiVersion": owner["apiVersion"].as_str().unwrap_or(default_version), "kind": kind,
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    }])
}

/// What a pass decided: when to look again even if nothing changes (time-based waits).
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub requeue: Option<Duration>,
}

impl Outcome {
    pub fn after(delay: Duration) -> Outcome {
        Outcome { requeue: Some(delay) }
    }

    pub fn merge(self, other: Outcome) -> Outcome {
        let requeue = match (self.requeue, other.requeue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Outcome { requeue }
    }
}

/// Runs the workload controllers until `shutdown` fires.
pub async fn run(client: Client, metrics: ReconcileMetrics, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let client = Arc::new(client);
    let changed = Arc::new(Notify::new());
    let watchers: Vec<_> = WATCHED
        .iter()
        .map(|collection| tokio::spawn(watch_changes(client.clone(), collection, changed.clone())))
        .collect();
    let mut requeue: Option<Duration> = None;
    loop {
        let wake = async {
            match requeue {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed.notified() => {
                // Let a burst of changes (a rollout step writes several objects) settle into one pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ = wake => {}
            _ = shutdown.changed() => break,
        }
        let started = std::time::Instant::now();
        match pass(&client, &metrics).await {
            Ok(outcome) => requeue = outcome.requeue,
            Err(e) => {
                tracing::warn!(error = %e, "workload controllers' pass failed; retrying");
                requeue = Some(Duration::from_secs(1));
            }
        }
        tracing::debug!(micros = started.elapsed().as_micros() as u64, "workload pass");
    }
    for watcher in watchers {
        watcher.abort();
    }
}

/// One pass of every workload controller over one snapshot.
pub async fn pass(client: &Client, metrics: &ReconcileMetrics) -> Result<Outcome, ClientError> {
    let snapshot = Snapshot::read(client).await?;
    let snapshot = &snapshot;
    let mut outcome = Outcome::default();
    outcome = outcome.merge(metrics.measure("deployment", deployment::reconcile(client, snapshot)).await?);
    outcome = outcome.merge(metrics.measure("replicaset", replicaset::reconcile(client, snapshot)).await?);
    outcome = outcome.merge(metrics.measure("daemonset", daemonset::reconcile(client, snapshot)).await?);
    outcome = outcome.merge(metrics.measure("job", job::reconcile(client, snapshot)).await?);
    outcome = outcome.merge(metrics.measure("cronjob", cronjob::reconcile(client, snapshot)).await?);
    outcome = outcome.merge(metrics.measure("placement", placement::reconcile(client, snapshot)).await?);
    outcome = outcome.merge(metrics.measure("dependencies", dependencies::reconcile(client, snapshot)).await?);
    Ok(outcome)
}

/// Notifies `changed` on every event of a collection, re-watching as needed.
pub(crate) async fn watch_changes(client: Arc<Client>, collection: &'static str, changed: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result: Result<(), ClientError> = async {
            let list = client.get(&format!("{collection}?limit=1")).await?;
            let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
            // The list may have missed changes since the last watch: look again.
            changed.notify_one();
            let mut watch = client.watch(collection, &rv).await?;
            while let Some(event) = watch.next().await {
                if event?["type"] != "BOOKMARK" {
                    changed.notify_one();
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::debug!(%collection, error = %e, "watch ended; watching again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Records a Kubernetes Event about `object` (see `client::events`).
pub async fn event(client: &Client, object: &Value, kind: &str, event_type: &str, reason: &str, message: &str) {
    client::events::record(client, "axle-controllers", object, kind, event_type, reason, message).await;
    tracing::info!(object = %format!("{}/{}", api::meta::namespace_of(object), api::meta::name_of(object)), kind, reason, message);
}

/// Ignores "already gone" and "changed meanwhile" answers: the next pass sees the new state.
pub fn tolerate(result: Result<Value, ClientError>) -> Result<(), ClientError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.code(), Some(404 | 409)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A pod's condition status (`True`/`False`), if it has the condition.
pub fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

/// Whether a pod counts: not being deleted and not finished.
pub fn is_active(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && !matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

pub fn is_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

/// Ready for at least `min_ready` (Kubernetes' "available").
pub fn is_available(pod: &Value, min_ready: Duration) -> bool {
    let Some(ready) = condition(pod, "Ready").filter(|c| c["status"] == "True") else { return false };
    if min_ready.is_zero() {
        return true;
    }
    let since = ready["lastTransitionTime"].as_str().and_then(api::meta::millis_since).unwrap_or(0);
    since >= min_ready.as_millis() as i64
}
