//! Update staging on the node: while a campaign stages, the agent pulls the campaign's images
//! (by digest: their tags move only when the campaign activates) into the node's content store
//! and unpacks them, then reports `Staged` (or why not) in the campaign's status. Activation
//! then finds everything it needs already on the node, even if the link to the server is slow
//! or goes away.

use crate::images::ImageCache;
use crate::AgentError;
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const CAMPAIGNS: &str = "/apis/axle.dev/v1alpha1/campaigns";

/// Stages the images of staging campaigns until `shutdown` fires.
pub async fn run(
    client: Arc<Client>,
    node: String,
    images: Arc<ImageCache>,
    update: Option<crate::SelfUpdate>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let result = tokio::select! {
            result = follow(&client, &node, &images, update.as_ref()) => result,
            _ = shutdown.changed() => return,
        };
        match result {
            Ok(()) => backoff = Duration::from_secs(1),
            // Before the server installed the update resources (or while it is away).
            Err(e) => {
                tracing::debug!(error = %e, "cannot follow campaigns; trying again");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Lists the campaigns, stages what waits for this node, then watches until the watch ends.
async fn follow(
    client: &Client,
    node: &str,
    images: &ImageCache,
    update: Option<&crate::SelfUpdate>,
) -> Result<(), AgentError> {
    let list = client.get(CAMPAIGNS).await?;
    for campaign in list["items"].as_array().into_iter().flatten() {
        stage_if_asked(client, node, images, update, campaign).await?;
        crate::self_update::follow(client, node, update, campaign).await?;
    }
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let mut watch = client.watch(CAMPAIGNS, &rv).await?;
    while let Some(event) = watch.next().await {
        let event = event?;
        if matches!(event["type"].as_str(), Some("ADDED" | "MODIFIED")) {
            stage_if_asked(client, node, images, update, &event["object"]).await?;
            crate::self_update::follow(client, node, update, &event["object"]).await?;
        }
    }
    Ok(())
}

async fn stage_if_asked(
    client: &Client,
    node: &str,
    images: &ImageCache,
    update: Option<&crate::SelfUpdate>,
    campaign: &Value,
) -> Result<(), ClientError> {
    let staging = &campaign["status"]["staging"];
    if campaign["status"]["phase"] != "Staging" || !staging["images"].is_array() || !staging["nodes"][node].is_null() {
        return Ok(());
    }
    let name = campaign["metadata"]["name"].as_str().unwrap_or("");
    let mut outcome = "Staged".to_string();
    for image in staging["images"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if let Err(e) = images.ensure(image).await {
            outcome = format!("Failed: {image}: {}", e.message);
            break;
        }
    }
    if staging["agentBinary"].is_object() && outcome == "Staged" {
        if let Err(why) = crate::self_update::stage(client, update, &staging["agentBinary"]).await {
            outcome = format!("Failed: {why}");
        }
    }
    tracing::info!(campaign = name, %outcome, "update staged on this node");
    let patch = json!({"status": {"staging": {"nodes": {node: outcome}}}});
    match client.merge_patch(&format!("{CAMPAIGNS}/{name}/status"), &patch).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}
