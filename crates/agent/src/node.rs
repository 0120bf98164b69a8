//! Node registration and heartbeat.

use crate::machine::{address_towards, Machine};
use crate::AgentError;
use api::meta::{now_micro_rfc3339, now_rfc3339};
use client::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where the agent stands. These names are a contract with tools outside this repository.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub data_dir: std::path::PathBuf,
    /// Where container logs are kept (see [`crate::LogStorage`]).
    pub log_dir: std::path::PathBuf,
    /// How often the Lease is renewed.
    pub heartbeat: Duration,
    /// OpenTelemetry export of the agent's logs and metrics and its containers' logs.
    pub telemetry: Option<Telemetry>,
    /// How the agent replaces itself (when `axle launch` runs it).
    pub self_update: Option<crate::SelfUpdate>,
    /// TLS of the agent's endpoint (the node's certificate; clients from the car's CA).
    pub endpoint_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Where the agent exports to, and the sink its own logs are captured into.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub export: telemetry::export::ExportConfig,
    pub sink: telemetry::export::LogSink,
}

/// The lease duration announced to the server: how long the node counts as alive after a renewal.
const LEASE_DURATION_SECONDS: u64 = 40;
const FIELD_MANAGER: &str = "axle-agent";
/// How often the agent reads back whether the server still counts its node Ready.
const NODE_CHECK_PERIOD: Duration = Duration::from_secs(10);

pub struct Agent {
    config: Config,
    client: Arc<Client>,
    machine: Machine,
}

impl Agent {
    pub fn new(config: Config, client: Arc<Client>) -> Result<Agent, AgentError> {
        if let Some(why) = api::meta::dns_subdomain_error(&config.node_name) {
            return Err(AgentError::Config(format!("invalid node name {:?}: {why}", config.node_name)));
        }
        Ok(Agent { config, client, machine: Machine::probe() })
    }

    /// Runs the node heartbeat and the pod loop until `shutdown` fires; then stops the pods.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<(), AgentError> {
        let node_ip =
            address_towards(&self.client.config().server).map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string());
        // The agent's endpoint (logs, metrics, stats) listens on the node's address; its port is
        // published in the Node's `daemonEndpoints`, where the API server looks for it.
        let listener = tokio::net::TcpListener::bind((node_ip.as_str(), 0))
            .await
            .map_err(|e| AgentError::Config(format!("cannot listen for log and metrics requests on {node_ip}: {e}")))?;
        let log_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let images = crate::images::ImageCache::open(self.client.clone(), &self.config.data_dir)
            .map_err(|e| AgentError::Config(format!("cannot open the node's content store: {e}")))?;
        let images = Arc::new(images);
        let export_metrics = self.config.telemetry.as_ref().map(|_| telemetry::export::ExportMetrics::default());
        let stats = Arc::new(crate::stats::Stats::new(&self.config.node_name, export_metrics.as_ref()));
        let pods = crate::pods::PodLoop::new(
            self.client.clone(),
            self.config.node_name.clone(),
            (self.config.data_dir.clone(), self.config.log_dir.clone()),
            node_ip,
            images.clone(),
            stats.clone(),
        );
        let endpoint = crate::endpoint::serve(
            listener,
            self.config.endpoint_tls.clone(),
            self.config.log_dir.clone(),
            stats.clone(),
            shutdown.clone(),
        );
        let sampler = stats.sample(shutdown.clone());
        let prestage = crate::prestage::run(
            self.client.clone(),
            self.config.node_name.clone(),
            images,
            self.config.self_update.clone(),
            shutdown.clone(),
        );
        let export = self.export(stats.clone(), export_metrics, shutdown.clone());
        let (heartbeat, (), (), (), (), ()) = tokio::join!(
            self.heartbeat(shutdown.clone(), log_port),
            pods.run(shutdown),
            endpoint,
            sampler,
            prestage,
            export
        );
        heartbeat
    }

    /// Exports the agent's logs and metrics and the containers' logs, if configured.
    async fn export(
        &self,
        stats: Arc<crate::stats::Stats>,
        metrics: Option<telemetry::export::ExportMetrics>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let (Some(config), Some(metrics)) = (&self.config.telemetry, metrics) else { return };
        let source: telemetry::export::MetricsSource = Box::new(move || stats.metrics("text/plain").1);
        let exporter =
            telemetry::export::run(config.export.clone(), config.sink.clone(), metrics, source, shutdown.clone());
        let tail =
            crate::log_tail::run(self.config.log_dir.clone(), config.sink.clone(), config.export.interval, shutdown);
        tokio::join!(exporter, tail);
    }

    /// Registers the node and keeps its lease fresh until `shutdown` fires. Connection losses
    /// are retried with back-off: a car's agent outlives its server.
    async fn heartbeat(
        &self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        log_port: u16,
    ) -> Result<(), AgentError> {
        let mut registered = false;
        let mut backoff = Duration::from_millis(200);
        let mut last_check = tokio::time::Instant::now();
        loop {
            // Registration returns the Node as stored; renewal nothing.
            let step = if registered {
                self.renew_lease().await.map(|()| None)
            } else {
                self.register(log_port).await.map(Some)
            };
            match step {
                Ok(registered_node) => {
                    if let Some(node) = registered_node {
                        tracing::info!(node = %self.config.node_name, "node registered and ready");
                        last_check = tokio::time::Instant::now();
                        let message = format!("Node {} status is now: NodeReady", self.config.node_name);
                        client::events::record(
                            &self.client,
                            "axle-agent",
                            &node,
                            "Node",
                            "Normal",
                            "NodeReady",
                            &message,
                        )
                        .await;
                        if let Some(update) = self.config.self_update.as_ref().filter(|u| u.trial) {
                            crate::self_update::check_trial(update);
                        }
                    }
                    registered = true;
                    backoff = Duration::from_millis(200);
                    // A link that went silent and came back looks like no loss at all from
                    // here, but the server may have marked the node NotReady meanwhile.
                    if last_check.elapsed() >= NODE_CHECK_PERIOD {
                        last_check = tokio::time::Instant::now();
                        if let Ok(false) = self.marked_ready().await {
                            tracing::info!(node = %self.config.node_name, "the server marked this node not ready; reporting it again");
                            registered = false;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    if registered {
                        tracing::warn!(node = %self.config.node_name, error = %e, "lost the API server; retrying");
                    } else {
                        tracing::debug!(error = %e, "cannot register yet; retrying");
                    }
                    // After a loss, report the node again: the server may have marked it NotReady.
                    registered = false;
                }
            }
            let wait = if registered { self.config.heartbeat } else { backoff };
            backoff = (backoff * 2).min(self.config.heartbeat);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Writes the Node (server-side apply: only the fields the agent owns) and its Lease;
    /// returns the Node.
    async fn register(&self, log_port: u16) -> Result<Value, AgentError> {
        let node = self.client.apply(&self.node_object(log_port), FIELD_MANAGER).await?;
        let uid = node["metadata"]["uid"].clone();
        self.client.apply(&self.lease_object(Some(uid)), FIELD_MANAGER).await?;
        Ok(node)
    }

    /// Whether the server's Node says Ready=True.
    async fn marked_ready(&self) -> Result<bool, AgentError> {
        let node = self.client.get(&format!("/api/v1/nodes/{}", self.config.node_name)).await?;
        let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
        Ok(conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    }

    async fn renew_lease(&self) -> Result<(), AgentError> {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}", self.config.node_name);
        self.client.merge_patch(&path, &json!({"spec": {"renewTime": now_micro_rfc3339()}})).await?;
        Ok(())
    }

    fn lease_object(&self, node_uid: Option<Value>) -> Value {
        let name = &self.config.node_name;
        let mut lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now_micro_rfc3339()},
        });
        if let Some(uid) = node_uid {
            lease["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
        }
        lease
    }

    fn node_object(&self, log_port: u16) -> Value {
        let name = &self.config.node_name;
        let m = &self.machine;
        let arch = api::meta::go_arch();
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        labels.insert("kubernetes.io/hostname".into(), name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), arch.into());
        labels.extend(self.config.labels.clone());
        let capacity = json!({"cpu": m.cpus.to_string(), "memory": format!("{}Ki", m.memory_kib), "pods": "110"});
        let mut addresses = vec![json!({"type": "Hostname", "address": name})];
        if let Some(ip) = address_towards(&self.client.config().server) {
            addresses.insert(0, json!({"type": "InternalIP", "address": ip.to_string()}));
        }
        let now = now_rfc3339();
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": addresses,
                "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                                "message": "axle agent is posting ready status",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "nodeInfo": {
                    "machineID": m.machine_id, "systemUUID": m.machine_id, "bootID": m.boot_id,
                    "kernelVersion": m.kernel_version, "osImage": m.os_image,
                    "containerRuntimeVersion": format!("axle://{}", selfupdate::stamp::version()),
                    "kubeletVersion": format!("v1.32.0-axle.{}", selfupdate::stamp::version()),
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch,
                },
                "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
            },
        })
    }
}
