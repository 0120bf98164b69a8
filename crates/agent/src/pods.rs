//! The pod loop: makes the pods bound to this node real and reports what they do.
//!
//! Level-triggered: it lists the node's pods, starts a supervisor for each pod it does not run
//! yet, stops those no longer wanted, then follows a watch; any watch failure leads to a fresh
//! list. The desired pods are kept on disk, so after a reboot with no server reachable the agent
//! starts what it ran before (edge autonomy) and reconciles once the server is back.

use crate::images::ImageCache;
use crate::stats::Stats;
use crate::supervisor::{Supervisor, SupervisorHandle};
use crate::AgentError;
use client::Client;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct PodLoop {
    client: Arc<Client>,
    node: String,
    data_dir: PathBuf,
    log_dir: PathBuf,
    node_ip: String,
    images: Arc<ImageCache>,
    stats: Arc<Stats>,
    running: HashMap<String, SupervisorHandle>,
    /// What was last persisted (pods' identities and specs), so status changes write nothing.
    persisted: String,
}

fn uid(pod: &Value) -> String {
    api::meta::uid_of(pod).to_string()
}

impl PodLoop {
    pub fn new(
        client: Arc<Client>,
        node: String,
        dirs: (PathBuf, PathBuf),
        node_ip: String,
        images: Arc<ImageCache>,
        stats: Arc<Stats>,
    ) -> PodLoop {
        let (data_dir, log_dir) = dirs;
        PodLoop {
            client,
            node,
            data_dir,
            log_dir,
            node_ip,
            images,
            stats,
            running: HashMap::new(),
            persisted: String::new(),
        }
    }

    fn state_file(&self) -> PathBuf {
        self.data_dir.join("pods.json")
    }

    /// Runs until `shutdown`; pods keep running across API outages.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        // Containers of an agent that died (kill -9, power cut) are gone or orphaned: clear
        // them away so that the pods below start once each, cleanly.
        for binary in ["runc", "crun"] {
            runtime::remove_containers(binary, &self.data_dir.join("run").join(binary)).await;
        }
        runtime::unmount_under(&self.data_dir.join("pods"));
        // Edge autonomy: start what ran before, whether or not the server answers.
        if let Some(pods) = load_state(&self.state_file()) {
            tracing::info!(pods = pods.len(), "restarting the pods this node ran before");
            self.reconcile(&pods);
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            let result = tokio::select! {
                r = self.list_and_watch() => r,
                _ = shutdown.changed() => break,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "pod watch ended; listing again");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        // Shutdown of the agent leaves the workloads to the next agent start only on reboot:
        // an agent that stops (update, restart) takes its pods down cleanly.
        // All at once: each pod gets its own grace period, not the sum of everyone's.
        let handles: Vec<SupervisorHandle> = self.running.drain().map(|(_, handle)| handle).collect();
        for handle in &handles {
            handle.stop();
        }
        for handle in handles {
            handle.stop_and_wait().await;
        }
    }

    async fn list_and_watch(&mut self) -> Result<(), AgentError> {
        let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", self.node);
        let list = self.client.get(&path).await?;
        let mut pods: HashMap<String, Value> =
            list["items"].as_array().into_iter().flatten().map(|p| (uid(p), p.clone())).collect();
        self.apply(&pods).await;
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
        let mut watch = self.client.watch(&path, &rv).await?;
        while let Some(event) = watch.next().await {
            let event = event?;
            let object = &event["object"];
            match event["type"].as_str() {
                Some("ADDED" | "MODIFIED") => {
                    pods.insert(uid(object), object.clone());
                }
                Some("DELETED") => {
                    pods.remove(&uid(object));
                }
                Some("ERROR") => return Err(AgentError::Config(format!("watch error: {}", object["message"]))),
                _ => continue,
            }
            self.apply(&pods).await;
        }
        Ok(())
    }

    /// Persists the desired pods when their identities or specs changed, then reconciles.
    async fn apply(&mut self, pods: &HashMap<String, Value>) {
        let mut desired: Vec<Value> = pods.values().cloned().collect();
        desired.sort_by_key(uid);
        let identity: Vec<(&str, &Value, &Value)> =
            desired.iter().map(|p| (api::meta::uid_of(p), &p["spec"], &p["metadata"]["deletionTimestamp"])).collect();
        let fingerprint = serde_json::to_string(&identity).unwrap_or_default();
        if fingerprint != self.persisted {
            let saved = telemetry::wear::measured("pod-state", 0, || save_state(&self.state_file(), &desired));
            match saved {
                Ok(()) => self.persisted = fingerprint,
                Err(e) => tracing::warn!(error = %e, "cannot persist the desired pods; edge autonomy is degraded"),
            }
        }
        self.reconcile(&desired);
    }

    fn reconcile(&mut self, desired: &[Value]) {
        let wanted: HashMap<String, &Value> = desired.iter().map(|p| (uid(p), p)).collect();
        self.running.retain(|uid, handle| {
            let keep = wanted.contains_key(uid) && !handle.is_finished();
            if !wanted.contains_key(uid) {
                handle.stop();
            }
            keep
        });
        for (uid, pod) in wanted {
            match self.running.get(&uid) {
                Some(handle) => handle.update((*pod).clone()),
                None if pod["metadata"]["deletionTimestamp"].is_string() && pod["status"]["phase"].is_null() => {}
                // Gated (dependencies not met yet): the dependency controller opens the gate.
                None if pod["spec"]["schedulingGates"].as_array().is_some_and(|g| !g.is_empty()) => {}
                None => {
                    let supervisor = Supervisor::new(
                        self.client.clone(),
                        (*pod).clone(),
                        (self.data_dir.clone(), self.log_dir.clone()),
                        self.node_ip.clone(),
                        self.images.clone(),
                        self.stats.clone(),
                    );
                    self.running.insert(uid, supervisor.spawn());
                }
            }
        }
    }
}

fn load_state(path: &Path) -> Option<Vec<Value>> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes atomically: temp file, fsync, rename — a power cut leaves the old or the new list.
fn save_state(path: &Path, pods: &[Value]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(pods).unwrap_or_default())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
