//! The agent updating itself, when `axle launch` runs it and a campaign's `axle` target names
//! the `agent` component (see the server's `targets`):
//! - **staging**: pull the binary from the car's registry (`status.staging.agentBinary`) into
//!   the inactive slot, checking its digest and its stamp;
//! - **verifying**: put it on trial in the agent's boot record and hand over (exit with the
//!   launcher's restart code); the trial agent checks itself once it has registered its Node,
//!   and the launcher commits it or falls back, as for the server. The agent that runs then
//!   reports in `status.agents.NODE`: `Committed VERSION` or `FellBack: why`;
//! - **rolling back**: an agent that committed this campaign's version makes its previous slot
//!   active again and hands over (`RolledBack`).
//!
//! Handing over restarts the agent, and with it the node's containers (as any agent restart
//! does); they are started again at once from the node's state.

use crate::AgentError;
use client::Client;
use selfupdate::slots::CheckResult;
use selfupdate::{Slot, Slots, Trial};
use serde_json::{json, Value};
use std::sync::Arc;

const CAMPAIGNS: &str = "/apis/axle.dev/v1alpha1/campaigns";

/// How this agent replaces itself: set when `axle launch` started it.
#[derive(Debug, Clone)]
pub struct SelfUpdate {
    pub slots: Slots,
    /// The slot this process runs from.
    pub slot: Slot,
    /// Started as a trial: it checks itself once registered.
    pub trial: bool,
    /// Asks the agent to stop and exit with the launcher's restart code.
    pub restart: Arc<tokio::sync::Notify>,
}

/// The campaign's `axle` target for agents: (binary location, trial settings).
fn agent_target(campaign: &Value) -> Option<(&Value, &Value)> {
    let binary = &campaign["status"]["staging"]["agentBinary"];
    if !binary.is_object() {
        return None;
    }
    let target = campaign["spec"]["targets"].as_array()?.iter().find(|t| t["name"] == binary["target"])?;
    Some((binary, &target["custom"]))
}

/// Pulls the agents' binary of a staging campaign into the inactive slot.
pub async fn stage(client: &Client, update: Option<&SelfUpdate>, binary: &Value) -> Result<(), String> {
    let update = update.ok_or("this agent is not run by `axle launch`, so it cannot replace itself")?;
    let (repository, digest, version) = (
        binary["repository"].as_str().unwrap_or(""),
        binary["digest"].as_str().unwrap_or(""),
        binary["version"].as_str().unwrap_or(""),
    );
    let download = update.slots.dir().join("download.tmp");
    std::fs::create_dir_all(update.slots.dir()).map_err(|e| e.to_string())?;
    let mut file = std::fs::File::create(&download).map_err(|e| format!("{}: {e}", download.display()))?;
    client.fetch_blob(repository, digest, &mut file).await.map_err(|e| format!("cannot pull Axle {version}: {e}"))?;
    drop(file);
    let reader = std::fs::File::open(&download).map_err(|e| e.to_string())?;
    let (actual, _) = images::sha256_of(reader).map_err(|e| e.to_string())?;
    if actual != digest {
        return Err(format!("Axle {version} arrived as {actual}, not {digest}"));
    }
    let stamp = selfupdate::stamp::read(&download).map_err(|e| e.to_string())?;
    if stamp.version != version {
        return Err(format!("the binary reports version {}, the update declares {version}", stamp.version));
    }
    update.slots.install(update.slot.other(), &download).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&download);
    Ok(())
}

/// Takes the next step of a verifying or rolling-back campaign for this agent.
pub async fn follow(
    client: &Client,
    node: &str,
    update: Option<&SelfUpdate>,
    campaign: &Value,
) -> Result<(), AgentError> {
    let (Some(update), Some((binary, custom))) = (update, agent_target(campaign)) else { return Ok(()) };
    let name = campaign["metadata"]["name"].as_str().unwrap_or("");
    let version = binary["version"].as_str().unwrap_or("");
    let reported = campaign["status"]["agents"][node].as_str().unwrap_or("");
    let slots = &update.slots;
    let failed = |e: selfupdate::SelfUpdateError| AgentError::Config(e.to_string());
    let Some(mut record) = slots.load().map_err(failed)? else { return Ok(()) };
    let report = |text: String| async move {
        if reported != text {
            let patch = json!({"status": {"agents": {node: text}}});
            client.merge_patch(&format!("{CAMPAIGNS}/{name}/status"), &patch).await?;
        }
        Ok::<(), AgentError>(())
    };
    let ours = |campaign: &str| campaign == name;
    // This process is the trial of this campaign: wait for the launcher's verdict first.
    if let Some(trial) = record.trial.clone().filter(|t| ours(&t.campaign) && t.slot == update.slot) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(trial.deadline_seconds);
        while std::time::Instant::now() < deadline {
            match slots.load().map_err(failed)? {
                Some(now) if now.trial.is_none() => {
                    record = now;
                    break;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
    match campaign["status"]["phase"].as_str().unwrap_or("") {
        "Verifying" | "Committing" | "Committed" => {
            if record.active_version == version && record.active == update.slot {
                return report(format!("Committed {version}")).await;
            }
            if let Some(trial) = record.trial.as_ref().filter(|t| ours(&t.campaign)) {
                if trial.slot != update.slot {
                    update.restart.notify_one();
                }
                return Ok(());
            }
            if let Some(last) = record.last_trial.as_ref().filter(|t| ours(&t.campaign) && !t.committed) {
                return report(format!("FellBack: version {} fell back: it {}", last.version, last.reason)).await;
            }
            if campaign["status"]["phase"] == "Verifying" {
                record.trial = Some(Trial {
                    slot: update.slot.other(),
                    version: version.to_string(),
                    attempts: 0,
                    max_attempts: custom["attempts"].as_u64().map_or(2, |n| n.clamp(1, 10) as u32),
                    deadline_seconds: custom["trialSeconds"].as_u64().unwrap_or(60).max(1),
                    campaign: name.to_string(),
                    last_failure: String::new(),
                });
                slots.save(&record).map_err(failed)?;
                tracing::info!(%version, "handing over to the new agent version");
                update.restart.notify_one();
            }
        }
        "RollingBack" | "RolledBack" | "Failed" => {
            let committed_here = record.last_trial.as_ref().is_some_and(|t| ours(&t.campaign) && t.committed);
            if committed_here && record.active_version == version && record.active == update.slot {
                let previous = update.slot.other();
                let previous_version =
                    selfupdate::stamp::read(&slots.binary(previous)).map(|s| s.version).map_err(failed)?;
                record.active = previous;
                record.active_version = previous_version.clone();
                record.trial = None;
                slots.save(&record).map_err(failed)?;
                report(format!("RolledBack to {previous_version}")).await?;
                tracing::info!(version = %previous_version, "handing back to the previous agent version");
                update.restart.notify_one();
            }
        }
        _ => {}
    }
    Ok(())
}

/// A trial agent, once registered: its stamp must be the version on trial. Reports to the
/// launcher; an unhealthy agent ends.
pub fn check_trial(update: &SelfUpdate) {
    let result = match trial_problem(&update.slots) {
        None => CheckResult { healthy: true, reason: String::new() },
        Some(why) => CheckResult { healthy: false, reason: why },
    };
    if let Err(e) = update.slots.report_check(update.slot, &result) {
        tracing::error!(error = %e, "cannot report the self-check");
    }
    if !result.healthy {
        tracing::error!(reason = %result.reason, "self-check failed");
        std::process::exit(selfupdate::launcher::SELF_CHECK_FAILED);
    }
    tracing::info!("self-check passed; the launcher commits this version");
}

fn trial_problem(slots: &Slots) -> Option<String> {
    let stamp = selfupdate::stamp::current();
    if stamp.faults.contains(&selfupdate::stamp::Fault::FailSelfCheck) {
        return Some("this build is stamped to fail its self-check".into());
    }
    let trial = match slots.load() {
        Ok(Some(record)) => record.trial?,
        Ok(None) => return Some("the boot record is gone".into()),
        Err(e) => return Some(e.to_string()),
    };
    (stamp.version != trial.version)
        .then(|| format!("this binary reports version {}, the update declared {}", stamp.version, trial.version))
}
