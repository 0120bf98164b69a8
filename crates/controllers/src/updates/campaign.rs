//! The campaign state machine.
//!
//! ```text
//!   (new) → Staging → Activating → Verifying → Committing → Committed
//!              │           │            │
//!              └───────────┴────────────┴──→ RollingBack → RolledBack
//!                                                  │
//!                                                  └──→ Failed (the rollback itself cannot finish)
//! ```
//!
//! The phase lives in the Campaign's status and changes only after the work of the phase is
//! done and durable; each phase's work is idempotent. So after a kill -9 the controller runs
//! the current phase again and the campaign ends Committed or RolledBack, never between:
//! Activating always starts from the remembered previous state (`previous.json`, written
//! before the first change), RollingBack always returns to it.

use super::targets::{self, Health, Target};
use super::{patch_status, write_durably, Config, UpdateError, ABORT_ANNOTATION, CAMPAIGNS, INVENTORIES};
use crate::workloads::event;
use client::Client;
use serde_json::{json, Value};
use std::time::Duration;

const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
/// How long every target must stay healthy before a campaign commits.
const HEALTHY_FOR: Duration = Duration::from_secs(5);
/// How long ready nodes have to pull a campaign's images before it is rolled back.
const NODE_STAGING_TIMEOUT: Duration = Duration::from_secs(600);
/// A container restarted this often in a new revision fails the campaign without waiting
/// for the health deadline.
const CRASH_RESTARTS: i64 = 2;
const FAILING_WAIT_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
    "RunContainerError",
];

pub fn phase(campaign: &Value) -> &str {
    campaign["status"]["phase"].as_str().unwrap_or("")
}

/// The record of what intake verified for a campaign (`DATA_DIR/updates/campaigns/NAME/`).
pub fn verified_path(config: &Config, campaign: &str) -> std::path::PathBuf {
    config.campaign_dir(campaign).join("verified.json")
}

/// Why a campaign is not one intake verified and staged: no bundle of it was staged on this car
/// (someone wrote the Campaign), or its version or targets differ from what was verified
/// (someone edited it). A campaign staged by an Axle before the record existed has none: its
/// staged targets stand for it.
fn unverified(config: &Config, campaign: &Value) -> Option<String> {
    let name = api::meta::name_of(campaign);
    let record = match std::fs::read(verified_path(config, name)) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
        Err(_) if config.campaign_dir(name).join("staged").is_dir() => return None,
        Err(_) => return Some("no verified bundle was staged for this campaign on this car".into()),
    };
    // What decides what is installed, whatever else the API's schema keeps of a target.
    let essentials = |targets: &Value| -> Vec<(Value, Value, Value, Value)> {
        let targets = targets.as_array().map(Vec::as_slice).unwrap_or_default();
        targets
            .iter()
            .map(|t| (t["name"].clone(), t["kind"].clone(), t["sha256"].clone(), t["length"].clone()))
            .collect()
    };
    let spec = &campaign["spec"];
    (record["version"] != spec["version"] || essentials(&record["targets"]) != essentials(&spec["targets"]))
        .then(|| "the campaign's version or targets differ from the bundle verified for it".into())
}

pub fn is_finished(campaign: &Value) -> bool {
    matches!(phase(campaign), "Committed" | "RolledBack" | "Failed")
}

/// How often a rollback step that fails (other than an outage of the API) is tried, with
/// waits of 1, 2, 4, 8 s between, before the campaign ends `Failed`: a rollback that cannot
/// finish must not keep every later bundle, the fix included, waiting.
const ROLLBACK_ATTEMPTS: u64 = 5;

fn seconds_since(timestamp: &Value) -> Option<u64> {
    let then = chrono::DateTime::parse_from_rfc3339(timestamp.as_str()?).ok()?;
    u64::try_from((chrono::Utc::now() - then.with_timezone(&chrono::Utc)).num_seconds()).ok()
}

/// Takes the next step of an unfinished campaign; returns when to look again. A step that
/// fails the same way twice (not an outage of the API, which is retried) fails the campaign:
/// nothing waits forever on a step that cannot succeed. A rollback step is tried
/// `ROLLBACK_ATTEMPTS` times, backing off, and then the campaign ends `Failed`.
pub async fn step(client: &Client, config: &Config, campaign: &Value) -> Result<Option<Duration>, UpdateError> {
    if let Some(wait) = until(&campaign["status"]["retryAt"]).filter(|_| phase(campaign) == "RollingBack") {
        return Ok(Some(wait));
    }
    match advance(client, config, campaign).await {
        Err(UpdateError::Api(e)) => Err(UpdateError::Api(e)),
        Err(e) if phase(campaign) == "RollingBack" => retry_rollback(client, campaign, &e.to_string()).await,
        Err(e) => {
            let message = e.to_string();
            if campaign["status"]["stepError"].as_str() == Some(message.as_str()) {
                fail(client, campaign, "", "StepFailed", &format!("{message} (twice)")).await?;
                return Ok(Some(Duration::ZERO));
            }
            tracing::warn!(campaign = api::meta::name_of(campaign), error = %message, "campaign step failed; trying once more");
            patch_status(client, CAMPAIGNS, api::meta::name_of(campaign), json!({"stepError": message})).await?;
            Ok(Some(Duration::from_secs(1)))
        }
        other => other,
    }
}

/// How long until `timestamp` (None once it passed, or without one).
fn until(timestamp: &Value) -> Option<Duration> {
    let then = chrono::DateTime::parse_from_rfc3339(timestamp.as_str()?).ok()?;
    (then.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok().filter(|d| !d.is_zero())
}

/// A rollback step failed: try again after a wait that doubles, or end the campaign `Failed`
/// once it failed `ROLLBACK_ATTEMPTS` times. The wait is kept in the status, so the watch
/// events of the campaign's own changes do not hurry it.
async fn retry_rollback(client: &Client, campaign: &Value, error: &str) -> Result<Option<Duration>, UpdateError> {
    let name = api::meta::name_of(campaign);
    let attempts = campaign["status"]["rollbackAttempts"].as_u64().unwrap_or(0) + 1;
    if attempts >= ROLLBACK_ATTEMPTS {
        let message = format!(
            "rolling back failed {attempts} times, last: {error} (was rolling back because: {})",
            campaign["status"]["message"].as_str().unwrap_or("")
        );
        let status = json!({"phase": "Failed", "reason": "RollbackFailed", "message": message, "retryAt": null,
                            "rollbackAttempts": attempts, "finishedAt": api::meta::now_rfc3339()});
        let told = format!("{message}; the car may hold parts of both versions until a bundle installs over them");
        record(client, campaign, status, "Warning", "RollbackFailed", &told).await?;
        return Ok(Some(Duration::ZERO));
    }
    let wait = Duration::from_secs(1 << (attempts - 1));
    tracing::warn!(campaign = name, error, attempts, ?wait, "rollback step failed; trying again");
    let retry_at = (chrono::Utc::now() + chrono::Duration::seconds(1 << (attempts - 1)))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = json!({"stepError": error, "rollbackAttempts": attempts, "retryAt": retry_at});
    patch_status(client, CAMPAIGNS, name, status).await?;
    Ok(Some(wait))
}

async fn advance(client: &Client, config: &Config, campaign: &Value) -> Result<Option<Duration>, UpdateError> {
    let name = api::meta::name_of(campaign);
    let aborted = campaign["metadata"]["annotations"][ABORT_ANNOTATION] == "true";
    let phase = phase(campaign);
    // Before anything that reads the targets: an abort works, and an unverified campaign ends,
    // whatever its targets say.
    if phase != "RollingBack" {
        if let Some(why) = unverified(config, campaign) {
            fail(client, campaign, "", "NotVerified", &why).await?;
            return Ok(Some(Duration::ZERO));
        }
    }
    if aborted && matches!(phase, "" | "Staging" | "Activating" | "Verifying") {
        fail(client, campaign, "", "Aborted", &format!("{ABORT_ANNOTATION}=true")).await?;
        return Ok(Some(Duration::ZERO));
    }
    let targets = targets::of_campaign(config, campaign)?;
    let total = targets.len();
    match phase {
        "" => {
            let now = api::meta::now_rfc3339();
            let status =
                json!({"phase": "Staging", "progress": format!("0/{total}"), "startedAt": now, "phaseStartedAt": now});
            let message = format!("staging {total} target(s) of bundle version {}", campaign["spec"]["version"]);
            record(client, campaign, status, "Normal", "Staging", &message).await?;
        }
        "Staging" => {
            if campaign["status"]["staging"]["pushed"] != true {
                let mut prefetch = targets::Prefetch::default();
                for (done, target) in targets.iter().enumerate() {
                    match targets::stage(client, config, target).await {
                        Ok(more) => prefetch.merge(more),
                        Err(e) => return fail_on(client, campaign, target, "StagingFailed", e).await,
                    }
                    progress(client, name, done + 1, total).await?;
                }
                let staging = json!({"pushed": true, "tags": prefetch.tags(), "agentBinary": prefetch.agent_binary(),
                    "images": prefetch.into_images(), "startedAt": api::meta::now_rfc3339()});
                patch_status(client, CAMPAIGNS, name, json!({"staging": staging})).await?;
                return Ok(Some(Duration::ZERO));
            }
            match nodes_staged(client, campaign).await? {
                NodeStaging::Done => {
                    enter(client, campaign, "Activating", total, "every target staged, on every node").await?
                }
                NodeStaging::Failed(node, why) => {
                    fail(client, campaign, "", "StagingFailed", &format!("node {node}: {why}")).await?;
                }
                NodeStaging::Waiting(nodes) => {
                    let waited = seconds_since(&campaign["status"]["staging"]["startedAt"]).unwrap_or(0);
                    if waited >= NODE_STAGING_TIMEOUT.as_secs() {
                        let message =
                            format!("{} did not stage within {} s", nodes.join(", "), NODE_STAGING_TIMEOUT.as_secs());
                        fail(client, campaign, "", "StagingTimeout", &message).await?;
                    } else {
                        return Ok(Some(Duration::from_secs(1)));
                    }
                }
            }
        }
        "Activating" => {
            let previous_path = config.campaign_dir(name).join("previous.json");
            if !previous_path.is_file() {
                let previous = targets::remember(client, config, name, &targets).await?;
                write_durably(&previous_path, &serde_json::to_vec(&previous).unwrap_or_default())?;
            }
            for (done, target) in targets.iter().enumerate() {
                if let Err(e) = targets::activate(client, config, target).await {
                    return fail_on(client, campaign, target, "ActivationFailed", e).await;
                }
                progress(client, name, done + 1, total).await?;
            }
            enter(client, campaign, "Verifying", total, "every target activated").await?;
        }
        "Verifying" => return verify(client, config, campaign, &targets).await,
        "Committing" => {
            // Every target is checked again, whatever the status says: what becomes the
            // installed state (and the inventory) must be what is really in place.
            for target in &targets {
                match targets::health(client, config, target).await? {
                    Health::Healthy => {}
                    Health::Failed(why) => {
                        fail(client, campaign, &target.name, "NotInPlace", &format!("not in place at commit: {why}"))
                            .await?;
                        return Ok(Some(Duration::ZERO));
                    }
                    Health::Waiting(why) => {
                        enter(client, campaign, "Verifying", total, &format!("not healthy at commit: {why}")).await?;
                        return Ok(Some(Duration::ZERO));
                    }
                }
            }
            commit(client, config, campaign, &targets).await?;
            let status = json!({"phase": "Committed", "progress": format!("{total}/{total}"), "finishedAt": api::meta::now_rfc3339()});
            let message = format!("bundle version {} is installed", campaign["spec"]["version"]);
            record(client, campaign, status, "Normal", "Committed", &message).await?;
            remove_work(config, name);
        }
        "RollingBack" => {
            let previous_path = config.campaign_dir(name).join("previous.json");
            if let Ok(bytes) = std::fs::read(&previous_path) {
                let previous: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                targets::restore(client, config, name, &previous).await?;
            }
            let why = campaign["status"]["message"].as_str().unwrap_or("");
            let status = json!({"phase": "RolledBack", "finishedAt": api::meta::now_rfc3339(), "retryAt": null});
            record(client, campaign, status, "Warning", "RolledBack", &format!("everything is back as before: {why}"))
                .await?;
            remove_work(config, name);
        }
        _ => {}
    }
    Ok(Some(Duration::ZERO))
}

enum NodeStaging {
    Done,
    Waiting(Vec<String>),
    Failed(String, String),
}

/// Whether every ready node with an agent has the campaign's images (ECU nodes have none;
/// a node that is not ready pulls what it misses when it comes back).
async fn nodes_staged(client: &Client, campaign: &Value) -> Result<NodeStaging, UpdateError> {
    let staging = &campaign["status"]["staging"];
    if staging["images"].as_array().is_none_or(Vec::is_empty) && staging["agentBinary"].is_null() {
        return Ok(NodeStaging::Done);
    }
    let mut waiting = Vec::new();
    for name in super::ready_agent_nodes(client).await? {
        match staging["nodes"][&name].as_str() {
            Some("Staged") => {}
            Some(failure) => return Ok(NodeStaging::Failed(name, failure.to_string())),
            None => waiting.push(name),
        }
    }
    Ok(if waiting.is_empty() { NodeStaging::Done } else { NodeStaging::Waiting(waiting) })
}

fn remove_work(config: &Config, name: &str) {
    let dir = config.campaign_dir(name);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a finished campaign's files");
        }
    }
}

async fn progress(client: &Client, name: &str, done: usize, total: usize) -> Result<(), UpdateError> {
    Ok(patch_status(client, CAMPAIGNS, name, json!({"progress": format!("{done}/{total}")})).await?)
}

/// Writes a step of the campaign into its status, then tells it as an Event.
async fn record(
    client: &Client,
    campaign: &Value,
    status: Value,
    event_type: &str,
    reason: &str,
    message: &str,
) -> Result<(), UpdateError> {
    patch_status(client, CAMPAIGNS, api::meta::name_of(campaign), status).await?;
    event(client, campaign, "Campaign", event_type, reason, message).await;
    Ok(())
}

async fn enter(client: &Client, campaign: &Value, phase: &str, total: usize, why: &str) -> Result<(), UpdateError> {
    let status = json!({"phase": phase, "progress": format!("0/{total}"), "phaseStartedAt": api::meta::now_rfc3339()});
    record(client, campaign, status, "Normal", phase, why).await
}

async fn fail(client: &Client, campaign: &Value, target: &str, reason: &str, message: &str) -> Result<(), UpdateError> {
    let status = json!({"phase": "RollingBack", "failedTarget": target, "reason": reason, "message": message,
                        "phaseStartedAt": api::meta::now_rfc3339()});
    let about = if target.is_empty() { String::new() } else { format!("target {target}: ") };
    record(client, campaign, status, "Warning", reason, &format!("{about}{message}; rolling back")).await
}

/// A target's step failed: API outages are retried (the step is idempotent), anything else
/// rolls the campaign back.
async fn fail_on(
    client: &Client,
    campaign: &Value,
    target: &Target,
    reason: &str,
    error: UpdateError,
) -> Result<Option<Duration>, UpdateError> {
    if let UpdateError::Api(e) = &error {
        if e.code().is_none() || matches!(e.code(), Some(409 | 429 | 500..=599)) {
            return Err(error);
        }
    }
    fail(client, campaign, &target.name, reason, &error.to_string()).await?;
    Ok(Some(Duration::ZERO))
}

async fn verify(
    client: &Client,
    config: &Config,
    campaign: &Value,
    targets: &[Target],
) -> Result<Option<Duration>, UpdateError> {
    let name = api::meta::name_of(campaign);
    let mut healthy = 0;
    let mut first_waiting: Option<(&Target, String)> = None;
    for target in targets {
        match targets::health(client, config, target).await? {
            Health::Healthy => healthy += 1,
            Health::Failed(why) => {
                fail(client, campaign, &target.name, "Unhealthy", &why).await?;
                return Ok(Some(Duration::ZERO));
            }
            Health::Waiting(why) => {
                first_waiting.get_or_insert((target, why));
            }
        }
    }
    let total = targets.len();
    let Some((target, why)) = first_waiting else {
        // Healthy must last: a container that crashes a moment after it started is Ready for
        // that moment.
        let Some(since) = seconds_since(&campaign["status"]["healthySince"]) else {
            patch_status(client, CAMPAIGNS, name, json!({"healthySince": api::meta::now_rfc3339()})).await?;
            return Ok(Some(Duration::from_secs(1)));
        };
        if since < HEALTHY_FOR.as_secs() {
            return Ok(Some(Duration::from_secs(1)));
        }
        enter(client, campaign, "Committing", total, "every target is healthy").await?;
        return Ok(Some(Duration::ZERO));
    };
    if !campaign["status"]["healthySince"].is_null() {
        patch_status(client, CAMPAIGNS, name, json!({"healthySince": null})).await?;
    }
    if campaign["status"]["progress"] != format!("{healthy}/{total}") {
        progress(client, name, healthy, total).await?;
    }
    let timeout =
        campaign["spec"]["healthTimeoutSeconds"].as_u64().map(Duration::from_secs).unwrap_or(DEFAULT_HEALTH_TIMEOUT);
    let waited = seconds_since(&campaign["status"]["phaseStartedAt"]).unwrap_or(0);
    if waited >= timeout.as_secs() {
        fail(
            client,
            campaign,
            &target.name,
            "HealthTimeout",
            &format!("not healthy within {} s: {why}", timeout.as_secs()),
        )
        .await?;
        return Ok(Some(Duration::ZERO));
    }
    Ok(Some(Duration::from_secs(1)))
}

/// Commits: the targets become the installed state (and the next deltas' bases), the version
/// becomes the floor for the next bundle, the Inventory shows it.
async fn commit(client: &Client, config: &Config, campaign: &Value, targets: &[Target]) -> Result<(), UpdateError> {
    for target in targets {
        targets::commit(config, target)?;
    }
    let mut installed = targets::read_installed(config);
    let version = campaign["spec"]["version"].as_u64().unwrap_or(0);
    if installed["version"].as_u64().unwrap_or(0) < version {
        installed["version"] = json!(version);
    }
    let now = api::meta::now_rfc3339();
    let later = |a: &str, b: &str| if a > b { a.to_string() } else { b.to_string() };
    installed["latestTime"] = json!(later(installed["latestTime"].as_str().unwrap_or(""), &now));
    for target in targets {
        let kind = target.kind.name();
        installed["targets"][&target.name] = json!({
            "kind": kind, "sha256": target.sha256, "length": target.length, "custom": target.custom,
            "campaign": api::meta::name_of(campaign), "bundleVersion": version, "installedAt": now,
        });
    }
    targets::write_installed(config, &installed)?;
    publish_inventory(client, &installed).await
}

/// Mirrors the installed state into the `Inventory` object `car`.
pub async fn publish_inventory(client: &Client, installed: &Value) -> Result<(), UpdateError> {
    let inventory = json!({"apiVersion": super::GROUP_VERSION, "kind": "Inventory", "metadata": {"name": "car"}});
    match client.post(INVENTORIES, &inventory).await {
        Err(e) if e.code() != Some(409) => return Err(e.into()),
        _ => {}
    }
    let targets: Vec<Value> = installed["targets"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, t)| {
            json!({"name": name, "kind": t["kind"], "sha256": t["sha256"], "length": t["length"],
                   "version": t["custom"]["version"], "hardwareId": t["custom"]["hardwareId"],
                   "bundleVersion": t["bundleVersion"], "installedAt": t["installedAt"]})
        })
        .collect();
    let status = json!({"bundleVersion": installed["version"], "targetCount": targets.len(), "updatedAt": api::meta::now_rfc3339(), "targets": targets});
    Ok(patch_status(client, INVENTORIES, "car", status).await?)
}

/// Whether one live object does its job: rollouts complete, pods ready (check pods: succeeded).
pub async fn object_health(client: &Client, live: &Value) -> Result<Health, UpdateError> {
    let kind = live["kind"].as_str().unwrap_or("");
    let name = format!("{} {}", kind, api::meta::name_of(live));
    let observed = live["status"]["observedGeneration"].as_i64().unwrap_or(0)
        >= live["metadata"]["generation"].as_i64().unwrap_or(0);
    match kind {
        "Deployment" => {
            let status = &live["status"];
            if let Some(rolled_back) =
                crate::workloads::condition(live, "AutoRolledBack").filter(|c| c["status"] == "True")
            {
                let why = rolled_back["message"].as_str().unwrap_or("");
                return Ok(Health::Failed(format!("{name} rolled itself back: {why}")));
            }
            if let Some(failing) = failing_pod(client, live).await? {
                return Ok(Health::Failed(format!("{name}: {failing}")));
            }
            let want = live["spec"]["replicas"].as_i64().unwrap_or(1);
            let count = |field: &str| status[field].as_i64().unwrap_or(0);
            if observed
                && count("updatedReplicas") == want
                && count("availableReplicas") >= want
                && count("replicas") == want
            {
                Ok(Health::Healthy)
            } else {
                Ok(Health::Waiting(format!(
                    "{name}: {}/{want} updated and available",
                    count("availableReplicas").min(count("updatedReplicas"))
                )))
            }
        }
        "DaemonSet" => {
            let status = &live["status"];
            let want = status["desiredNumberScheduled"].as_i64().unwrap_or(0);
            let count = |field: &str| status[field].as_i64().unwrap_or(0);
            if observed && count("updatedNumberScheduled") == want && count("numberAvailable") == want {
                Ok(Health::Healthy)
            } else {
                Ok(Health::Waiting(format!("{name}: {}/{want} updated and available", count("numberAvailable"))))
            }
        }
        "Pod" => Ok(pod_health(live)),
        _ => Ok(Health::Healthy),
    }
}

/// A pod's health: Ready, or Succeeded for a check pod (`restartPolicy: Never`).
fn pod_health(pod: &Value) -> Health {
    let name = format!("pod {}", api::meta::name_of(pod));
    if let Some(why) = pod_failure(pod) {
        return Health::Failed(format!("{name}: {why}"));
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    // A status written for another image (a pod whose image was just changed) says nothing yet.
    let spec_images: Vec<&Value> =
        pod["spec"]["containers"].as_array().into_iter().flatten().map(|c| &c["image"]).collect();
    let stale = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| !spec_images.contains(&&s["image"]));
    if stale {
        return Health::Waiting(format!("{name} still reports its previous image"));
    }
    if phase == "Failed" {
        let why = pod["status"]["message"].as_str().or(pod["status"]["reason"].as_str()).unwrap_or("");
        return Health::Failed(format!("{name} failed: {why}"));
    }
    let runs_once = pod["spec"]["restartPolicy"] == "Never";
    let ready = crate::workloads::is_ready(pod);
    if runs_once {
        match phase {
            "Succeeded" => Health::Healthy,
            _ => Health::Waiting(format!("{name} is {phase}")),
        }
    } else if ready {
        Health::Healthy
    } else {
        Health::Waiting(format!("{name} is not ready ({phase})"))
    }
}

fn pod_failure(pod: &Value) -> Option<String> {
    for status in pod["status"]["containerStatuses"].as_array().into_iter().flatten() {
        let waiting = status["state"]["waiting"]["reason"].as_str().unwrap_or("");
        if FAILING_WAIT_REASONS.contains(&waiting) {
            return Some(format!("container {} is {waiting}", status["name"].as_str().unwrap_or("")));
        }
        let restarts = status["restartCount"].as_i64().unwrap_or(0);
        if restarts >= CRASH_RESTARTS {
            return Some(format!("container {} restarted {restarts} times", status["name"].as_str().unwrap_or("")));
        }
    }
    None
}

/// A failing pod of a Deployment's current revision, if any.
async fn failing_pod(client: &Client, deployment: &Value) -> Result<Option<String>, UpdateError> {
    let namespace = api::meta::namespace_of(deployment);
    let revision = deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str().unwrap_or("");
    let sets = client.get(&format!("/apis/apps/v1/namespaces/{namespace}/replicasets")).await?;
    let uid = api::meta::uid_of(deployment);
    let current = sets["items"].as_array().into_iter().flatten().find(|rs| {
        crate::workloads::controller_uid(rs) == Some(uid)
            && rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == revision
    });
    let Some(hash) = current.and_then(|rs| rs["metadata"]["labels"]["pod-template-hash"].as_str()) else {
        return Ok(None);
    };
    let pods =
        client.get(&format!("/api/v1/namespaces/{namespace}/pods?labelSelector=pod-template-hash%3D{hash}")).await?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .find_map(|p| pod_failure(p).map(|why| format!("pod {}: {why}", api::meta::name_of(p)))))
}
