//! `axle ecu-gateway`: the virtual kubelet of the car's ECUs. Each configured ECU is a Node
//! (`axle.dev/ecu=true`, its hardware id, and the taint `axle.dev/ecu:NoSchedule` so that
//! containers never land there), alive as long as it answers over DoIP. A Pod bound to it with
//! `runtimeClassName: ecu` is "run" by flashing the firmware its image names, pulled from the
//! car's registry: the Pod reports the progress, is Running once the ECU reads back the
//! expected version, Failed with the NRC or timeout otherwise; deleting it reflashes the
//! previous firmware. The Node carries the inventory: software version, serial, VIN.
//!
//! Like the agent, the gateway only talks to the API: it reads pods and writes nodes, leases,
//! pod status and events.

use client::{Client, ClientError};
use ecu::flasher::{self, Progress, Target, Timing};
use ecu::keys::DemoKey;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const FIELD_MANAGER: &str = "axle-ecu-gateway";
const LEASE_SECONDS: u64 = 40;
/// Annotations of the inventory on the ECU's Node.
pub const SW_VERSION: &str = "axle.dev/sw-version";
pub const SERIAL: &str = "axle.dev/serial";
pub const VIN: &str = "axle.dev/vin";
/// A pod may name the version its firmware reports; else the image's tag is expected.
pub const FIRMWARE_VERSION: &str = "axle.dev/firmware-version";

/// One ECU of `ecus.yaml`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcuConfig {
    /// The Node's name.
    pub name: String,
    /// The DoIP entity, host:port.
    pub address: SocketAddr,
    /// The ECU's logical address.
    pub logical_address: u16,
    #[serde(default = "default_tester")]
    pub tester_address: u16,
    #[serde(default)]
    pub hardware_id: String,
}

fn default_tester() -> u16 {
    0x0E80
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Config {
    pub ecus: Vec<EcuConfig>,
    /// Where the gateway remembers which firmware each ECU runs (and ran before).
    #[serde(skip)]
    pub data_dir: PathBuf,
    #[serde(skip)]
    pub heartbeat: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{path}: {why}")]
    Config { path: String, why: String },
    #[error(transparent)]
    Api(#[from] ClientError),
}

impl Config {
    /// Reads `ecus.yaml`: `ecus: [{name, address, logicalAddress, testerAddress?, hardwareId?}]`.
    pub fn from_file(path: &std::path::Path, data_dir: PathBuf, heartbeat: Duration) -> Result<Config, GatewayError> {
        let error = |why: String| GatewayError::Config { path: path.display().to_string(), why };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let mut config: Config = serde_yaml_ng::from_str(&text).map_err(|e| error(e.to_string()))?;
        for ecu in &config.ecus {
            if let Some(why) = api::meta::dns_subdomain_error(&ecu.name) {
                return Err(error(format!("ECU name {:?}: {why}", ecu.name)));
            }
        }
        config.data_dir = data_dir;
        config.heartbeat = heartbeat;
        Ok(config)
    }
}

/// How the gateway talks to the API for each ECU's node.
pub enum Connection {
    /// Each ECU node joins with its own node certificate (`system:node:ECU`), so node
    /// restriction holds per ECU: the gateway can touch only the ECUs it serves.
    PerNode(client::join::Join),
    /// One client for all (a kubeconfig, or a server without TLS).
    Shared(Arc<Client>),
}

impl Connection {
    fn client_for(&self, ecu: &str, shutdown: &tokio::sync::watch::Receiver<bool>) -> Result<Arc<Client>, ClientError> {
        match self {
            Connection::Shared(client) => Ok(client.clone()),
            Connection::PerNode(join) => {
                let node = join.node_client(ecu, false)?;
                if let Some(renewal) = node.renewal {
                    tokio::spawn(renewal.run(shutdown.clone()));
                }
                Ok(node.client)
            }
        }
    }
}

/// Runs one task per ECU until `shutdown`.
pub async fn run(config: Config, connection: Connection, shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tasks = Vec::new();
    for ecu in &config.ecus {
        let client = match connection.client_for(&ecu.name, &shutdown) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(ecu = %ecu.name, error = %e, "cannot connect the ECU's node to the API");
                continue;
            }
        };
        let state = config.data_dir.join(format!("{}.json", ecu.name));
        tasks.push(tokio::spawn(serve_ecu(ecu.clone(), client, state, config.heartbeat, shutdown.clone())));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// What the gateway flashed on an ECU: the image it runs and the one before.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Flashed {
    current: Option<String>,
    previous: Option<String>,
}

fn load(path: &std::path::Path) -> Flashed {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save(path: &std::path::Path, state: &Flashed) {
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default())
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot record the flashed firmware");
    }
}

async fn serve_ecu(
    ecu: EcuConfig,
    client: Arc<Client>,
    state_path: PathBuf,
    heartbeat: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let target = Target { address: ecu.address, tester_address: ecu.tester_address, ecu_address: ecu.logical_address };
    let timing = Timing::default();
    let mut reported: Option<(String, String, String)> = None;
    loop {
        match flasher::identify(&target, &timing).await {
            Ok(inventory) => {
                if reported.as_ref() != Some(&inventory) {
                    match register(&client, &ecu, &inventory).await {
                        Ok(()) => reported = Some(inventory),
                        Err(e) => tracing::debug!(ecu = %ecu.name, error = %e, "cannot report the ECU yet"),
                    }
                } else if let Err(e) = renew(&client, &ecu.name).await {
                    tracing::debug!(ecu = %ecu.name, error = %e, "cannot renew the ECU's lease");
                    reported = None;
                }
                if let Err(e) = sync_pods(&client, &ecu, &target, &state_path).await {
                    tracing::debug!(ecu = %ecu.name, error = %e, "pod sync failed; retrying");
                }
            }
            Err(e) => {
                // Silent ECU: no renewal, so the server marks its node NotReady.
                if reported.take().is_some() {
                    tracing::warn!(ecu = %ecu.name, error = %e, "ECU does not answer over DoIP");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(heartbeat) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn register(client: &Client, ecu: &EcuConfig, inventory: &(String, String, String)) -> Result<(), ClientError> {
    let (version, serial, vin) = inventory;
    let now = api::meta::now_rfc3339();
    let mut labels = json!({"axle.dev/ecu": "true", "kubernetes.io/hostname": ecu.name, "kubernetes.io/os": "ecu"});
    if !ecu.hardware_id.is_empty() {
        labels["axle.dev/hardware-id"] = json!(ecu.hardware_id);
    }
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": ecu.name, "labels": labels,
                     "annotations": {SW_VERSION: version, SERIAL: serial, VIN: vin}},
        "spec": {"taints": [{"key": "axle.dev/ecu", "value": "true", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"pods": "1"}, "allocatable": {"pods": "1"},
            "addresses": [{"type": "InternalIP", "address": ecu.address.ip().to_string()}, {"type": "Hostname", "address": ecu.name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "EcuAnswers",
                            "message": "the ECU answers over DoIP", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"osImage": format!("ECU firmware {version}"), "operatingSystem": "ecu", "architecture": "ecu",
                         "kernelVersion": "", "containerRuntimeVersion": "uds-doip://iso14229",
                         "kubeletVersion": format!("v1.32.0-axle.{}", env!("CARGO_PKG_VERSION")),
                         "kubeProxyVersion": "", "machineID": serial, "systemUUID": serial, "bootID": ""},
        },
    });
    let node = client.apply(&node, FIELD_MANAGER).await?;
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": ecu.name, "namespace": "kube-node-lease",
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": ecu.name, "uid": node["metadata"]["uid"]}]},
        "spec": {"holderIdentity": ecu.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": api::meta::now_micro_rfc3339()},
    });
    client.apply(&lease, FIELD_MANAGER).await?;
    tracing::info!(ecu = %ecu.name, %version, "ECU node reported");
    Ok(())
}

async fn renew(client: &Client, name: &str) -> Result<(), ClientError> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
    client.merge_patch(&path, &json!({"spec": {"renewTime": api::meta::now_micro_rfc3339()}})).await?;
    Ok(())
}

/// The firmware bytes an image names: the first layer of its manifest in the car's registry.
async fn pull_firmware(client: &Client, image: &str) -> Result<Vec<u8>, String> {
    let reference = images::Reference::parse(image).map_err(|e| e.to_string())?;
    let fetched = client.fetch_manifest(&reference.repository, reference.lookup()).await.map_err(|e| e.to_string())?;
    let manifest = images::Manifest::parse(&fetched.bytes).map_err(|e| e.to_string())?;
    let images::ManifestKind::Image(image_manifest) = &manifest.kind else {
        return Err(format!("{image} is an index; a firmware image has one manifest"));
    };
    let layer = image_manifest.layers().first().ok_or_else(|| format!("{image} has no layer"))?;
    let digest = layer.digest().to_string();
    let mut bytes = Vec::new();
    client.fetch_blob(&reference.repository, &digest, &mut bytes).await.map_err(|e| e.to_string())?;
    let (actual, _) = images::sha256_of(&bytes[..]).map_err(|e| e.to_string())?;
    if actual != digest {
        return Err(format!("firmware blob {digest} arrived as {actual}"));
    }
    Ok(bytes)
}

/// The version a pod's firmware must report: its annotation, else the image's tag.
fn expected_version(pod: &Value) -> Option<String> {
    if let Some(v) = pod["metadata"]["annotations"][FIRMWARE_VERSION].as_str() {
        return Some(v.to_string());
    }
    let image = pod["spec"]["containers"][0]["image"].as_str()?;
    images::Reference::parse(image).ok()?.tag.filter(|t| t != "latest")
}

fn pod_path(pod: &Value) -> String {
    format!("/api/v1/namespaces/{}/pods/{}", api::meta::namespace_of(pod), api::meta::name_of(pod))
}

async fn write_status(client: &Client, pod: &Value, phase: &str, state: Value, reason: &str, message: &str) {
    let now = api::meta::now_rfc3339();
    let ready = phase == "Running";
    let status = json!({"status": {
        "phase": phase, "reason": reason, "message": message, "startTime": pod["status"]["startTime"].as_str().unwrap_or(&now),
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": reason, "message": message, "lastTransitionTime": now},
        ],
        "containerStatuses": [{"name": pod["spec"]["containers"][0]["name"], "image": pod["spec"]["containers"][0]["image"],
            "imageID": "", "ready": ready, "started": ready, "restartCount": 0, "state": state}],
    }});
    if let Err(e) = client.merge_patch(&format!("{}/status", pod_path(pod)), &status).await {
        tracing::debug!(error = %e, "cannot write the firmware pod's status");
    }
}

async fn event(client: &Client, pod: &Value, event_type: &str, reason: &str, message: &str) {
    client::events::record(client, "axle-ecu-gateway", pod, "Pod", event_type, reason, message).await;
}

/// Flashes what the ECU's pod wants, reflashes the previous firmware when it goes.
async fn sync_pods(
    client: &Client,
    ecu: &EcuConfig,
    target: &Target,
    state_path: &std::path::Path,
) -> Result<(), ClientError> {
    let pods = client.get(&format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", ecu.name)).await?;
    let mut state = load(state_path);
    for pod in pods["items"].as_array().into_iter().flatten() {
        let image = pod["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string();
        if pod["metadata"]["deletionTimestamp"].is_string() {
            // Deleting the firmware pod returns the ECU to the firmware it had before.
            if state.current.as_deref() == Some(image.as_str()) {
                if let Some(previous) = state.previous.clone() {
                    event(client, pod, "Normal", "Reflashing", &format!("returning {} to {previous}", ecu.name)).await;
                    if let Ok(firmware) = pull_firmware(client, &previous).await {
                        let version = images::Reference::parse(&previous).ok().and_then(|r| r.tag);
                        if flasher::flash(
                            target,
                            &Timing::default(),
                            &DemoKey,
                            &firmware,
                            version.as_deref(),
                            &mut |_| {},
                        )
                        .await
                        .is_ok()
                        {
                            state = Flashed { current: Some(previous), previous: None };
                            save(state_path, &state);
                        }
                    }
                }
            }
            let _ = client.delete(&format!("{}?gracePeriodSeconds=0", pod_path(pod))).await;
            continue;
        }
        if pod["spec"]["runtimeClassName"] != "ecu" {
            write_status(
                client,
                pod,
                "Pending",
                json!({"waiting": {"reason": "RuntimeClassNotFound",
                "message": "an ECU node runs only runtimeClassName: ecu pods"}}),
                "RuntimeClassNotFound",
                "only firmware runs on an ECU",
            )
            .await;
            continue;
        }
        // The status speaks of the image it was written for; a changed image (an update, or a
        // campaign rolling back) is flashed anew, whatever happened to the one before.
        let status_image = pod["status"]["containerStatuses"][0]["image"].as_str();
        let settled = match pod["status"]["phase"].as_str() {
            Some("Running") => state.current.as_deref() == Some(image.as_str()),
            Some("Failed") => status_image.is_none_or(|i| i == image),
            _ => false,
        };
        if settled && status_image.is_none_or(|i| i == image) {
            continue;
        }
        flash_pod(client, ecu, target, pod, &image, &mut state, state_path).await;
    }
    Ok(())
}

async fn flash_pod(
    client: &Client,
    ecu: &EcuConfig,
    target: &Target,
    pod: &Value,
    image: &str,
    state: &mut Flashed,
    state_path: &std::path::Path,
) {
    let firmware = match pull_firmware(client, image).await {
        Ok(f) => f,
        Err(why) => {
            write_status(
                client,
                pod,
                "Pending",
                json!({"waiting": {"reason": "ErrImagePull", "message": why}}),
                "ErrImagePull",
                &why,
            )
            .await;
            return;
        }
    };
    let expected = expected_version(pod);
    event(client, pod, "Normal", "Flashing", &format!("flashing {image} ({} bytes) onto {}", firmware.len(), ecu.name))
        .await;
    let started = std::time::Instant::now();
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let mut report_progress = move |p: Progress| {
        let _ = progress_tx.send(p);
    };
    let timing = Timing::default();
    let flash = flasher::flash(target, &timing, &DemoKey, &firmware, expected.as_deref(), &mut report_progress);
    tokio::pin!(flash);
    let mut last_report = std::time::Instant::now() - Duration::from_secs(10);
    let result = loop {
        tokio::select! {
            result = &mut flash => break result,
            Some(progress) = progress_rx.recv() => {
                // Progress as the pod's message, at most twice a second.
                if last_report.elapsed() >= Duration::from_millis(500) {
                    last_report = std::time::Instant::now();
                    let message = match progress {
                        Progress::Phase(phase) => format!("flashing: {phase}"),
                        Progress::Bytes { sent, total } => api::firmware::progress_message(sent, total),
                    };
                    let waiting = json!({"waiting": {"reason": api::firmware::FLASHING, "message": message}});
                    write_status(client, pod, "Pending", waiting, api::firmware::FLASHING, &message).await;
                }
            }
        }
    };
    match result {
        Ok(report) => {
            let message = format!(
                "{} now runs {} ({} bytes in {:.1} s)",
                ecu.name,
                report.version_after,
                report.payload_bytes,
                started.elapsed().as_secs_f64()
            );
            if state.current.as_deref() != Some(image) {
                state.previous = state.current.take();
                state.current = Some(image.to_string());
                save(state_path, state);
            }
            write_status(
                client,
                pod,
                "Running",
                json!({"running": {"startedAt": api::meta::now_rfc3339()}}),
                "Flashed",
                &message,
            )
            .await;
            event(client, pod, "Normal", "Flashed", &message).await;
        }
        Err(e) => {
            let message = format!("flashing {image} onto {} failed: {e}", ecu.name);
            let terminated = json!({"terminated": {"exitCode": 1, "reason": e.reason(), "message": message,
                                                   "finishedAt": api::meta::now_rfc3339()}});
            write_status(client, pod, "Failed", terminated, &e.reason(), &message).await;
            event(client, pod, "Warning", "FlashFailed", &message).await;
        }
    }
}
