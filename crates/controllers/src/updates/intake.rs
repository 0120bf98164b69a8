//! Bundle intake: a received bundle is verified against the car's pinned trust root and its
//! installed state, and its targets are staged, before anything else happens. A bundle that
//! fails any check is `Rejected` (with an Event saying why) and leaves nothing behind; one
//! that passes becomes a Campaign.

use super::{io_error, patch_status, targets, Config, UpdateError, BUNDLES, CAMPAIGNS, GROUP_VERSION};
use crate::workloads::event;
use bundle::BundleError;
use client::Client;
use serde_json::{json, Value};
use std::path::Path;

/// The reason a bundle was refused, as a CamelCase word for its status and Event.
fn reason(error: &UpdateError) -> &'static str {
    match error {
        UpdateError::Bundle(e) => match e {
            BundleError::Signatures { .. } => "SignatureThresholdNotMet",
            BundleError::Expired { .. } => "Expired",
            BundleError::Rollback { .. } => "NotNewer",
            BundleError::Target { .. } => "TargetMismatch",
            BundleError::WrongBase { .. } => "WrongBase",
            BundleError::Metadata(_) | BundleError::Key(_) => "InvalidMetadata",
            BundleError::Io { .. } => "Unreadable",
        },
        UpdateError::Target(_) => "InvalidTarget",
        UpdateError::NoTrustRoot(_) => "NoTrustRoot",
        UpdateError::Io { .. } => "Unreadable",
        UpdateError::Api(_) => "ApiError",
    }
}

/// The car's pinned trust root.
pub fn load_root(config: &Config) -> Result<bundle::trust::Root, UpdateError> {
    let path = config.root_path();
    if !path.is_file() {
        return Err(UpdateError::NoTrustRoot(path));
    }
    Ok(bundle::trust::Root::trust_initial(bundle::trust::read_json(&path)?)?)
}

/// Verifies and stages a `Received` bundle; it becomes a Campaign or is rejected.
pub async fn verify(client: &Client, config: &Config, bundle_obj: &Value) -> Result<(), UpdateError> {
    let name = api::meta::name_of(bundle_obj).to_string();
    // Verified before a crash that came between its campaign and its own status: done.
    if let Ok(campaign) = client.get(&format!("{CAMPAIGNS}/{name}")).await {
        let status = json!({"phase": "Verified", "version": campaign["spec"]["version"], "campaign": name});
        patch_status(client, BUNDLES, &name, status).await?;
        remove_upload(&config.upload_path(&name));
        return Ok(());
    }
    let upload = config.upload_path(&name);
    let staging = config.campaign_dir(&name).join("staged");
    let installed = targets::read_installed(config);
    let work_config = config.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<bundle::Verified, UpdateError> {
        let root = load_root(&work_config)?;
        let state = bundle::Installed {
            version: installed["version"].as_u64().unwrap_or(0),
            latest_time: installed["latestTime"].as_str().map(String::from),
        };
        super::targets::link_active_binary(&work_config)?;
        Ok(bundle::verify_and_stage(&upload, &root, &state, Some(&work_config.installed_dir()), &staging)?)
    });
    let outcome = work.await.map_err(|e| UpdateError::Target(format!("verification stopped: {e}")))?;
    let verified = match outcome.and_then(|verified| targets::check_verified(&verified).map(|()| verified)) {
        Ok(verified) => verified,
        Err(e) => {
            let _ = std::fs::remove_dir_all(config.campaign_dir(&name));
            return reject(client, config, bundle_obj, &e).await;
        }
    };
    let targets: Vec<Value> = verified
        .targets
        .iter()
        .map(|t| {
            let kind = t.custom["kind"].as_str().unwrap_or_else(|| bundle::kind_of(&t.name));
            json!({"name": t.name, "kind": kind, "sha256": t.sha256, "length": t.length, "custom": t.custom})
        })
        .collect();
    // What was verified, kept beside the staged targets: the campaign must say the same.
    let record = json!({"version": verified.version, "targets": targets});
    super::write_durably(
        &super::campaign::verified_path(config, &name),
        &serde_json::to_vec(&record).unwrap_or_default(),
    )?;
    let mut spec =
        json!({"bundle": name, "version": verified.version, "expires": verified.expires, "targets": targets});
    if let Some(seconds) = verified.campaign["healthTimeoutSeconds"].as_u64() {
        spec["healthTimeoutSeconds"] = json!(seconds);
    }
    let campaign = json!({"apiVersion": GROUP_VERSION, "kind": "Campaign", "metadata": {"name": name}, "spec": spec});
    match client.post(CAMPAIGNS, &campaign).await {
        Err(e) if e.code() != Some(409) => return Err(e.into()),
        _ => {}
    }
    patch_status(client, BUNDLES, &name, json!({"phase": "Verified", "version": verified.version, "campaign": name}))
        .await?;
    let message =
        format!("version {}, {} target(s): campaign {name} started", verified.version, verified.targets.len());
    event(client, bundle_obj, "Bundle", "Normal", "Verified", &message).await;
    remove_upload(&config.upload_path(&name));
    Ok(())
}

async fn reject(client: &Client, config: &Config, bundle_obj: &Value, error: &UpdateError) -> Result<(), UpdateError> {
    // A problem of the car's own disk, not of the bundle: try again rather than blame it.
    let upload = config.upload_path(api::meta::name_of(bundle_obj));
    let car_side = match error {
        UpdateError::Bundle(BundleError::Io { path, .. }) => *path != upload,
        UpdateError::Io { .. } => true,
        _ => false,
    };
    if car_side {
        return Err(UpdateError::Target(error.to_string()));
    }
    let name = api::meta::name_of(bundle_obj);
    let message = error.to_string();
    patch_status(client, BUNDLES, name, json!({"phase": "Rejected", "reason": reason(error), "message": message}))
        .await?;
    event(client, bundle_obj, "Bundle", "Warning", "Rejected", &message).await;
    remove_upload(&config.upload_path(name));
    Ok(())
}

fn remove_upload(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an uploaded bundle");
        }
    }
}

/// Picks up `*.axb` files from a watched directory (a mounted stick): each new one is copied
/// into the car and becomes a received Bundle named after its content (`media-<sha256 prefix>`),
/// so a stick left in place is taken once and a stick pulled out mid-way leaves nothing.
pub async fn scan_directory(client: &Client, config: &Config, dir: &Path) -> Result<(), UpdateError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let seen_path = config.updates_dir().join("media-seen.json");
    let mut seen: Value =
        std::fs::read(&seen_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(|| json!({}));
    let mut changed = false;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("axb") {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = format!("{}|{}|{modified}", path.display(), meta.len());
        if seen.get(&key).is_some() {
            continue;
        }
        let name = match take_from_medium(client, config, &path, meta.len()).await {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!(bundle = %path.display(), error = %e, "cannot take a bundle from the medium; trying again");
                continue;
            }
        };
        seen[key] = json!(name);
        changed = true;
    }
    if changed {
        super::write_durably(&seen_path, &serde_json::to_vec(&seen).unwrap_or_default())?;
    }
    Ok(())
}

async fn take_from_medium(client: &Client, config: &Config, path: &Path, length: u64) -> Result<String, UpdateError> {
    let hashed = path.to_path_buf();
    let (sha, _) = tokio::task::spawn_blocking(move || bundle::sha256_file(&hashed))
        .await
        .map_err(|e| UpdateError::Target(e.to_string()))??;
    let name = format!("media-{}", &sha[..16]);
    match client.get(&format!("{BUNDLES}/{name}")).await {
        Ok(existing) if existing["status"]["phase"].as_str().unwrap_or("Uploading") != "Uploading" => return Ok(name),
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            let bundle = json!({"apiVersion": GROUP_VERSION, "kind": "Bundle", "metadata": {"name": name},
                                "spec": {"length": length, "source": format!("dir:{}", path.display())}});
            client.post(BUNDLES, &bundle).await?;
        }
        Err(e) => return Err(e.into()),
    }
    let upload = config.upload_path(&name);
    if let Some(parent) = upload.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let tmp = upload.with_extension("copying");
    std::fs::copy(path, &tmp).map_err(io_error(&tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, &upload).map_err(io_error(&upload))?;
    patch_status(client, BUNDLES, &name, json!({"phase": "Received", "receivedBytes": length})).await?;
    Ok(name)
}

/// Pins `offered` as the car's trust root: on first use it must be signed by its own root
/// threshold; over a pinned root it must be the pinned one or its valid successor (next
/// version, signed by both root thresholds). Anything else is refused and the pin stays.
pub fn pin_root(config: &Config, offered: &Path) -> Result<(), UpdateError> {
    let envelope = bundle::trust::read_json(offered)?;
    let pinned_path = config.root_path();
    let next = if pinned_path.is_file() {
        let pinned = bundle::trust::Root::trust_initial(bundle::trust::read_json(&pinned_path)?)?;
        let offered_version = envelope["signed"]["version"].as_u64().unwrap_or(0);
        if offered_version == pinned.version() && envelope == pinned.envelope {
            return Ok(());
        }
        pinned.rotate(envelope)?
    } else {
        bundle::trust::Root::trust_initial(envelope)?
    };
    super::write_durably(&pinned_path, &serde_json::to_vec_pretty(&next.envelope).unwrap_or_default())
}
