//! The kinds of update targets, and the five things a campaign asks of each: stage (make the
//! content ready without changing what runs), remember (the state to go back to), activate,
//! check health, and restore. Every step is idempotent, so a campaign resumed after a crash
//! simply runs its current step again.
//!
//! - `manifest`: Kubernetes objects (any kind the API serves), applied server-side in
//!   dependency order (namespaces and definitions, then configuration, then workloads); healthy
//!   when their rollouts are complete and their pods ready; restored to the exact previous
//!   objects (or deleted, if they are new).
//! - `image`: an OCI image (layout tar or `docker save`): its blobs and manifest go to the
//!   car's registry while staging (by digest, no tag moves), the tag moves on activation and
//!   moves back on rollback.
//! - `file`: a file installed below the files directory (`custom.path`, else the target's
//!   name), atomically; the previous content is kept until the campaign ends.
//!
//! - `axle`: Axle's own binary (`custom.version` is the version it reports), installed A/B in
//!   the server and/or the agents (`custom.components`: `server` (default), `agent`). For the
//!   server it goes to the inactive slot while staging, activation puts it on trial in the boot
//!   record, and the health check hands over to it (the server restarts through its
//!   launcher); healthy once the launcher committed it; a trial that failed is reported by the
//!   old version, which the launcher went back to; restoring makes the previous slot active
//!   again. For agents it goes to the car's registry (`axle/axle:VERSION`, an OCI artifact)
//!   while staging; each agent pulls it into its own inactive slot and, once the campaign
//!   verifies, tries it the same way and reports in `status.agents`; they go back by
//!   themselves when the campaign rolls back (see the agent's `self_update`).
//!
//! ECU firmware reaches ECUs through the `image` and `manifest` kinds (a firmware image and
//! its `runtimeClassName: ecu` pod, flashed by the ECU gateway and healthy when the ECU runs
//! the version).

use super::{io_error, write_durably, Config, UpdateError, FIELD_MANAGER};
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Image,
    File,
    Manifest,
    /// Last: the hand-over restarts the server.
    Axle,
}

impl Kind {
    pub fn parse(kind: &str) -> Option<Kind> {
        match kind {
            "image" => Some(Kind::Image),
            "file" => Some(Kind::File),
            "manifest" => Some(Kind::Manifest),
            "axle" => Some(Kind::Axle),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::File => "file",
            Kind::Manifest => "manifest",
            Kind::Axle => "axle",
        }
    }
}

/// One target of a campaign, with its verified staged content.
#[derive(Debug, Clone)]
pub struct Target {
    /// The campaign it belongs to.
    pub campaign: String,
    pub name: String,
    pub kind: Kind,
    pub sha256: String,
    pub length: u64,
    pub custom: Value,
    pub staged: PathBuf,
    /// For image targets once staged: what the registry holds of them (from the campaign's
    /// status), so later steps need not read the image archive again.
    pub images: Vec<StagedImage>,
}

/// An image of an image target, pushed by digest while staging; its tag moves on activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedImage {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl StagedImage {
    fn to_json(&self) -> Value {
        json!({"repository": self.repository, "tag": self.tag, "digest": self.digest})
    }

    /// `repository:tag`.
    fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    fn from_json(value: &Value) -> Option<StagedImage> {
        let field = |name: &str| value[name].as_str().map(String::from);
        Some(StagedImage { repository: field("repository")?, tag: field("tag")?, digest: field("digest")? })
    }
}

/// What a health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Waiting(String),
    Failed(String),
}

/// The targets of a campaign in activation order: `custom.order` first, then images, files,
/// manifests, then by name.
pub fn of_campaign(config: &Config, campaign: &Value) -> Result<Vec<Target>, UpdateError> {
    let name = api::meta::name_of(campaign);
    let staged = config.campaign_dir(name).join("staged");
    let mut targets = Vec::new();
    for spec in campaign["spec"]["targets"].as_array().into_iter().flatten() {
        let target_name = spec["name"].as_str().unwrap_or("").to_string();
        let kind = spec["kind"]
            .as_str()
            .and_then(Kind::parse)
            .ok_or_else(|| UpdateError::Target(format!("target {target_name}: unknown kind {}", spec["kind"])))?;
        let images = campaign["status"]["staging"]["tags"][&target_name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(StagedImage::from_json)
            .collect();
        targets.push(Target {
            campaign: name.to_string(),
            images,
            staged: staged.join(&target_name),
            name: target_name,
            kind,
            sha256: spec["sha256"].as_str().unwrap_or("").to_string(),
            length: spec["length"].as_u64().unwrap_or(0),
            custom: spec["custom"].clone(),
        });
    }
    targets.sort_by_key(|t| (t.custom["order"].as_i64().unwrap_or(0), t.kind, t.name.clone()));
    Ok(targets)
}

// ---------------------------------------------------------------------------------------------
// manifests

/// The objects of a manifest target, in apply order (namespaces and definitions first).
fn objects(target: &Target) -> Result<Vec<Value>, UpdateError> {
    let text = std::fs::read_to_string(&target.staged).map_err(io_error(&target.staged))?;
    let mut objects =
        client::parse_manifests(&text).map_err(|e| UpdateError::Target(format!("target {}: {e}", target.name)))?;
    let rank = |obj: &Value| match obj["kind"].as_str().unwrap_or("") {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" | "ConfigMap" | "Secret" | "RuntimeClass" => 2,
        "Service" => 3,
        _ => 4,
    };
    objects.sort_by_key(rank);
    Ok(objects)
}

/// The API path of a manifest object (namespaced objects default to `default`).
async fn object_path(client: &Client, obj: &Value) -> Result<String, ClientError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    let namespace = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let collection = client.collection_path(api_version, kind, Some(namespace)).await?;
    Ok(format!("{collection}/{}", api::meta::name_of(obj)))
}

async fn get_optional(client: &Client, path: &str) -> Result<Option<Value>, ClientError> {
    match client.get(path).await {
        Ok(obj) => Ok(Some(obj)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// images

/// The images staging recorded for an image target.
fn staged_images(target: &Target) -> Result<&[StagedImage], UpdateError> {
    if target.images.is_empty() {
        return Err(UpdateError::Target(format!("image target {} was not staged", target.name)));
    }
    Ok(&target.images)
}

fn images_of(target: &Target) -> Result<images::import::Source, UpdateError> {
    images::import::read(&target.staged, target.custom["reference"].as_str())
        .map_err(|e| UpdateError::Target(format!("target {}: {e}", target.name)))
}

// ---------------------------------------------------------------------------------------------
// files

fn install_path(config: &Config, target: &Target) -> Result<PathBuf, UpdateError> {
    Ok(config.files_dir.join(relative_install_path(&target.name, &target.custom)?))
}

/// Where a file target goes inside the files directory (`custom.path`, else its name): a
/// relative path of plain components, or an error naming the target.
fn relative_install_path<'a>(name: &'a str, custom: &'a Value) -> Result<&'a Path, UpdateError> {
    let relative = custom["path"].as_str().unwrap_or(name);
    let path = Path::new(relative);
    if relative.is_empty() || path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(UpdateError::Target(format!(
            "target {name}: install path {relative:?} leaves the files directory"
        )));
    }
    Ok(path)
}

/// What can be decided from a verified bundle before anything is staged for good: every target
/// has a known kind, and every file target's install path stays inside the files directory.
pub fn check_verified(verified: &bundle::Verified) -> Result<(), UpdateError> {
    for target in &verified.targets {
        let kind = target.custom["kind"].as_str().unwrap_or_else(|| bundle::kind_of(&target.name));
        match Kind::parse(kind) {
            Some(Kind::File) => {
                relative_install_path(&target.name, &target.custom)?;
            }
            Some(_) => {}
            None => return Err(UpdateError::Target(format!("target {}: unknown kind {kind:?}", target.name))),
        }
    }
    Ok(())
}

fn previous_file(config: &Config, campaign: &str, target: &Target) -> PathBuf {
    config.campaign_dir(campaign).join("previous-files").join(&target.name)
}

/// Copies `from` to `to` atomically (temp file, fsync, rename).
fn install_file(from: &Path, to: &Path) -> Result<(), UpdateError> {
    let parent = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let tmp = to.with_extension("axle-tmp");
    std::fs::copy(from, &tmp).map_err(io_error(&tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, to).map_err(io_error(to))?;
    super::sync_dir(parent)
}

// ---------------------------------------------------------------------------------------------
// Axle itself

/// Trial defaults: starts allowed, and seconds each has to report healthy.
const TRIAL_ATTEMPTS: u32 = 2;
const TRIAL_SECONDS: u64 = 60;

fn self_update(config: &Config) -> Result<&super::SelfUpdate, UpdateError> {
    config.self_update.as_ref().ok_or_else(|| {
        UpdateError::Target("this server was not started by `axle launch`, so it cannot replace itself".into())
    })
}

/// The repository agents pull Axle's binary from.
pub const AGENT_BINARY_REPOSITORY: &str = "axle/axle";
const BINARY_MEDIA_TYPE: &str = "application/vnd.axle.binary.v1";

/// Whether the target updates the server, and the agents.
fn components(target: &Target) -> (bool, bool) {
    match target.custom["components"].as_array() {
        None => (true, false),
        Some(list) => (list.iter().any(|c| c == "server"), list.iter().any(|c| c == "agent")),
    }
}

/// Pushes the binary as an OCI artifact (`axle/axle:VERSION`): the agents pull its layer by
/// digest, and the manifest keeps it from garbage collection.
async fn push_agent_binary(client: &Client, target: &Target, version: &str) -> Result<Value, UpdateError> {
    let digest = format!("sha256:{}", target.sha256);
    let file = std::fs::File::open(&target.staged).map_err(io_error(&target.staged))?;
    client.push_blob(AGENT_BINARY_REPOSITORY, &digest, file).await?;
    let empty = b"{}";
    let (empty_digest, _) = images::sha256_of(&empty[..]).map_err(io_error(&target.staged))?;
    client.push_blob(AGENT_BINARY_REPOSITORY, &empty_digest, &empty[..]).await?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": BINARY_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": BINARY_MEDIA_TYPE, "digest": digest, "size": target.length}],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    client
        .push_manifest(AGENT_BINARY_REPOSITORY, version, &bytes, "application/vnd.oci.image.manifest.v1+json")
        .await?;
    Ok(json!({"repository": AGENT_BINARY_REPOSITORY, "digest": digest, "version": version, "target": target.name}))
}

/// How the agents took the target: healthy when every ready agent committed it.
async fn agents_health(client: &Client, target: &Target, version: &str) -> Result<Health, UpdateError> {
    let campaign = client.get(&format!("{}/{}", super::CAMPAIGNS, target.campaign)).await?;
    let mut waiting = Vec::new();
    for name in super::ready_agent_nodes(client).await? {
        match campaign["status"]["agents"][&name].as_str() {
            Some(report) if report == format!("Committed {version}") => {}
            Some(report) if report.starts_with("FellBack") => {
                return Ok(Health::Failed(format!("the agent of {name} {}", report.trim_start_matches("FellBack: "))))
            }
            _ => waiting.push(name),
        }
    }
    Ok(if waiting.is_empty() {
        Health::Healthy
    } else {
        Health::Waiting(format!("agents of {} not on version {version} yet", waiting.join(", ")))
    })
}

fn axle_version(target: &Target) -> Result<&str, UpdateError> {
    target.custom["version"]
        .as_str()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| UpdateError::Target(format!("axle target {} declares no custom.version", target.name)))
}

fn boot_record(update: &super::SelfUpdate) -> Result<selfupdate::BootRecord, UpdateError> {
    let slots = &update.slots;
    slots
        .load()
        .map_err(|e| UpdateError::Target(e.to_string()))?
        .ok_or_else(|| UpdateError::Target(format!("no boot record in {}", slots.dir().display())))
}

/// Checks the binary's stamp says the declared version; the server's part goes to the slot
/// that is not running, the agents' to the registry (returned for the campaign's status).
async fn stage_axle(client: &Client, config: &Config, target: &Target) -> Result<Option<Value>, UpdateError> {
    let version = axle_version(target)?;
    let stamp = selfupdate::stamp::read(&target.staged).map_err(|e| UpdateError::Target(e.to_string()))?;
    if stamp.version != version {
        return Err(UpdateError::Target(format!(
            "axle target {}: the binary reports version {}, the bundle declares {version}",
            target.name, stamp.version
        )));
    }
    let (server, agents) = components(target);
    let agent_binary = if agents { Some(push_agent_binary(client, target, version).await?) } else { None };
    if server {
        stage_server_binary(config, target, version)?;
    }
    Ok(agent_binary)
}

fn stage_server_binary(config: &Config, target: &Target, version: &str) -> Result<(), UpdateError> {
    let update = self_update(config)?;
    let record = boot_record(update)?;
    if record.active_version == version && record.active != update.slot {
        return Ok(()); // committed meanwhile; nothing to stage
    }
    update.slots.install(update.slot.other(), &target.staged).map_err(|e| UpdateError::Target(e.to_string()))
}

/// Puts the staged slot on trial (the launcher starts it when the server hands over).
fn activate_axle(config: &Config, target: &Target) -> Result<(), UpdateError> {
    if !components(target).0 {
        return Ok(());
    }
    let update = self_update(config)?;
    let version = axle_version(target)?;
    let mut record = boot_record(update)?;
    let committed = record.active_version == version;
    let armed = record.trial.as_ref().is_some_and(|t| t.campaign == target.campaign);
    let tried = record.last_trial.as_ref().is_some_and(|t| t.campaign == target.campaign);
    if committed || armed || tried {
        return Ok(());
    }
    record.trial = Some(selfupdate::Trial {
        slot: update.slot.other(),
        version: version.to_string(),
        attempts: 0,
        max_attempts: target.custom["attempts"].as_u64().map_or(TRIAL_ATTEMPTS, |n| n.clamp(1, 10) as u32),
        deadline_seconds: target.custom["trialSeconds"].as_u64().unwrap_or(TRIAL_SECONDS).max(1),
        campaign: target.campaign.clone(),
        last_failure: String::new(),
    });
    update.slots.save(&record).map_err(|e| UpdateError::Target(e.to_string()))
}

/// The agents' part first (they try the new version while the server still runs the old
/// one), then the server's.
async fn axle_health(client: &Client, config: &Config, target: &Target) -> Result<Health, UpdateError> {
    let (server, agents) = components(target);
    if agents {
        match agents_health(client, target, axle_version(target)?).await? {
            Health::Healthy => {}
            other => return Ok(other),
        }
    }
    if !server {
        return Ok(Health::Healthy);
    }
    server_health(config, target)
}

/// Healthy once the new version is committed and runs; a fallback is a failure with the
/// launcher's reason; an armed trial makes this server hand over.
fn server_health(config: &Config, target: &Target) -> Result<Health, UpdateError> {
    let update = self_update(config)?;
    let version = axle_version(target)?;
    let record = boot_record(update)?;
    if let Some(trial) = record.trial.as_ref().filter(|t| t.campaign == target.campaign) {
        if trial.slot != update.slot {
            tracing::info!(version = %trial.version, "handing over to the new version");
            update.restart.notify_one();
        }
        return Ok(Health::Waiting(format!("version {} is on trial", trial.version)));
    }
    if let Some(last) = record.last_trial.as_ref().filter(|t| t.campaign == target.campaign && !t.committed) {
        return Ok(Health::Failed(format!(
            "version {} fell back to {}: it {}",
            last.version, record.active_version, last.reason
        )));
    }
    if record.active_version == version && record.active == update.slot {
        return Ok(Health::Healthy);
    }
    Ok(Health::Waiting(format!("version {version} is not running yet")))
}

/// The base of the next delta of Axle's binary is what runs: `installed/axle` is made a hard
/// link to the active slot's binary before a bundle is verified.
pub fn link_active_binary(config: &Config) -> Result<(), UpdateError> {
    let Some(update) = &config.self_update else { return Ok(()) };
    let record = boot_record(update)?;
    let active = update.slots.binary(record.active);
    let installed = config.installed_dir().join("axle");
    let tmp = installed.with_extension("link-tmp");
    std::fs::create_dir_all(config.installed_dir()).map_err(io_error(&config.installed_dir()))?;
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&active, &tmp).is_err() {
        std::fs::copy(&active, &tmp).map_err(io_error(&tmp))?;
    }
    std::fs::rename(&tmp, &installed).map_err(io_error(&installed))
}

/// Makes the slot that was active before the campaign active again; hands over if this
/// process runs the other one.
fn restore_axle(config: &Config, entry: &Value) -> Result<(), UpdateError> {
    let update = self_update(config)?;
    let (Some(slot), Some(version)) =
        (entry["slot"].as_str().and_then(selfupdate::Slot::parse), entry["version"].as_str())
    else {
        return Ok(());
    };
    let mut record = boot_record(update)?;
    if record.active != slot || record.trial.is_some() {
        record.active = slot;
        record.active_version = version.to_string();
        record.trial = None;
        update.slots.save(&record).map_err(|e| UpdateError::Target(e.to_string()))?;
    }
    if update.slot != slot {
        tracing::info!(%version, "handing back to the previous version");
        update.restart.notify_one();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the five steps

/// Makes a target's content ready without changing what runs: images into the registry by
/// digest; manifests checked by a server-side dry run. Returns the images the nodes should
/// pull ahead (an image target by digest — its tag moves on activation — and the images a
/// manifest's pods name).
pub async fn stage(client: &Client, config: &Config, target: &Target) -> Result<Prefetch, UpdateError> {
    let mut prefetch = Prefetch::default();
    match target.kind {
        Kind::Image => {
            let source = images_of(target)?;
            for image in &source.images {
                let digest = client.push_image_content(image).await?;
                let repository = image.reference.repository.clone();
                let tag = image.reference.tag.clone().unwrap_or_else(|| "latest".into());
                prefetch.brought.push((target.name.clone(), StagedImage { repository, tag, digest }));
            }
        }
        Kind::Manifest => {
            for obj in objects(target)? {
                let path =
                    format!("{}?dryRun=All&fieldManager={FIELD_MANAGER}&force=true", object_path(client, &obj).await?);
                let dry_run = client
                    .request(
                        hyper::Method::PATCH,
                        &path,
                        "application/apply-patch+yaml",
                        Some(obj.to_string().into_bytes()),
                    )
                    .await;
                match dry_run {
                    // A namespace the bundle itself brings does not exist yet.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        return Err(UpdateError::Target(format!(
                            "{} {}: {e}",
                            obj["kind"].as_str().unwrap_or(""),
                            api::meta::name_of(&obj)
                        )))
                    }
                    Ok(_) => {}
                }
                let (images, firmware) = pod_images(&obj);
                prefetch.images.extend(images);
                prefetch.firmware.extend(firmware);
            }
        }
        Kind::File => {}
        Kind::Axle => prefetch.agent_binary = stage_axle(client, config, target).await?,
    }
    Ok(prefetch)
}

/// What nodes pull while a campaign stages.
#[derive(Debug, Default)]
pub struct Prefetch {
    /// Images the bundle's pods name (ECU firmware aside).
    images: Vec<String>,
    /// Images ECU pods name: the gateway's to pull, not the agents'.
    firmware: Vec<String>,
    /// The bundle's own images, by target. Their tags still name the old image until
    /// activation, so they are pulled by digest.
    brought: Vec<(String, StagedImage)>,
    /// Axle's binary for the agents: where they pull it (`status.staging.agentBinary`).
    agent_binary: Option<Value>,
}

impl Prefetch {
    pub fn merge(&mut self, other: Prefetch) {
        self.agent_binary = self.agent_binary.take().or(other.agent_binary);
        self.images.extend(other.images);
        self.firmware.extend(other.firmware);
        self.brought.extend(other.brought);
    }

    /// Where agents pull Axle's binary, if the campaign updates them.
    pub fn agent_binary(&self) -> Value {
        self.agent_binary.clone().unwrap_or(Value::Null)
    }

    /// What each image target put into the registry (`status.staging.tags`).
    pub fn tags(&self) -> Value {
        let mut tags = serde_json::Map::new();
        for (target, image) in &self.brought {
            let entry = tags.entry(target.clone()).or_insert_with(|| json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(image.to_json());
            }
        }
        Value::Object(tags)
    }

    /// The images agents pull: the bundle's own by digest (unless they are ECU firmware), the
    /// others its pods name by reference.
    pub fn into_images(self) -> Vec<String> {
        let key = |image: &str| {
            images::Reference::parse(image)
                .ok()
                .map(|r| format!("{}:{}", r.repository, r.tag.as_deref().unwrap_or("latest")))
        };
        let firmware: Vec<Option<String>> = self.firmware.iter().map(|f| key(f)).collect();
        let mut pulled: Vec<String> = self
            .brought
            .iter()
            .filter(|(_, image)| !firmware.contains(&Some(image.reference())))
            .map(|(_, image)| format!("{}@{}", image.repository, image.digest))
            .collect();
        pulled.extend(
            self.images
                .iter()
                .filter(|image| match key(image) {
                    Some(tag) => !self.brought.iter().any(|(_, brought)| brought.reference() == tag),
                    None => false,
                })
                .cloned(),
        );
        pulled.sort();
        pulled.dedup();
        pulled
    }
}

/// The images a Pod or a workload's pod template names: (container images, ECU firmware).
fn pod_images(obj: &Value) -> (Vec<String>, Vec<String>) {
    let spec = if obj["kind"] == "Pod" { &obj["spec"] } else { &obj["spec"]["template"]["spec"] };
    let named: Vec<String> = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| spec[*list].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str().map(String::from))
        .collect();
    // ECU firmware is pulled by the ECU gateway when it flashes, not by agents; native
    // process pods run host programs and pull nothing.
    match spec["runtimeClassName"].as_str() {
        Some("ecu") => (Vec::new(), named),
        Some("process") => (Vec::new(), Vec::new()),
        _ => (named, Vec::new()),
    }
}

/// The state a campaign returns to on rollback, for all its targets (written before the first
/// activation; file contents are copied aside).
pub async fn remember(
    client: &Client,
    config: &Config,
    campaign: &str,
    targets: &[Target],
) -> Result<Value, UpdateError> {
    let mut previous = Vec::new();
    for target in targets {
        match target.kind {
            Kind::Manifest => {
                for obj in objects(target)? {
                    let path = object_path(client, &obj).await?;
                    let before = get_optional(client, &path).await?;
                    previous.push(json!({"target": target.name, "kind": "manifest", "path": path, "object": obj, "previous": before}));
                }
            }
            Kind::Image => {
                for StagedImage { repository, tag, .. } in staged_images(target)? {
                    let before = match client.fetch_manifest(repository, tag).await {
                        Ok(m) => json!({"manifest": String::from_utf8_lossy(&m.bytes), "mediaType": m.media_type}),
                        Err(e) if e.is_not_found() => Value::Null,
                        Err(e) => return Err(e.into()),
                    };
                    previous.push(json!({"target": target.name, "kind": "image", "repository": repository, "tag": tag, "previous": before}));
                }
            }
            Kind::File => {
                let path = install_path(config, target)?;
                let existed = path.is_file();
                if existed {
                    install_file(&path, &previous_file(config, campaign, target))?;
                }
                previous.push(json!({"target": target.name, "kind": "file", "path": path, "existed": existed}));
            }
            Kind::Axle if components(target).0 => {
                let record = boot_record(self_update(config)?)?;
                previous.push(json!({"target": target.name, "kind": "axle",
                    "slot": record.active.name(), "version": record.active_version}));
            }
            // Agents remember their previous slot themselves.
            Kind::Axle => {}
        }
    }
    Ok(Value::Array(previous))
}

/// Puts a target in place.
pub async fn activate(client: &Client, config: &Config, target: &Target) -> Result<(), UpdateError> {
    match target.kind {
        Kind::Image => {
            for image in staged_images(target)? {
                let manifest = client.fetch_manifest(&image.repository, &image.digest).await?;
                client.push_manifest(&image.repository, &image.tag, &manifest.bytes, &manifest.media_type).await?;
            }
        }
        Kind::File => install_file(&target.staged, &install_path(config, target)?)?,
        Kind::Axle => activate_axle(config, target)?,
        Kind::Manifest => {
            for obj in objects(target)? {
                client.apply(&obj, FIELD_MANAGER).await.map_err(|e| {
                    UpdateError::Target(format!(
                        "{} {}: {e}",
                        obj["kind"].as_str().unwrap_or(""),
                        api::meta::name_of(&obj)
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// Whether an activated target does its job.
pub async fn health(client: &Client, config: &Config, target: &Target) -> Result<Health, UpdateError> {
    match target.kind {
        Kind::Image => {
            for image in staged_images(target)? {
                let found = client.fetch_manifest(&image.repository, &image.tag).await?;
                if found.digest.as_deref() != Some(image.digest.as_str()) {
                    let (repository, tag, digest) = (&image.repository, &image.tag, &image.digest);
                    return Ok(Health::Failed(format!("{repository}:{tag} does not resolve to {digest}")));
                }
            }
            Ok(Health::Healthy)
        }
        Kind::Axle => axle_health(client, config, target).await,
        Kind::File => {
            let path = install_path(config, target)?;
            Ok(match bundle::sha256_file(&path) {
                Ok((sha, _)) if sha == target.sha256 => Health::Healthy,
                _ => Health::Failed(format!("{} does not hold the installed content", path.display())),
            })
        }
        Kind::Manifest => {
            let mut waiting = Vec::new();
            for obj in objects(target)? {
                let Some(live) = get_optional(client, &object_path(client, &obj).await?).await? else {
                    return Ok(Health::Failed(format!(
                        "{} {} is gone",
                        obj["kind"].as_str().unwrap_or(""),
                        api::meta::name_of(&obj)
                    )));
                };
                match super::campaign::object_health(client, &live).await? {
                    Health::Healthy => {}
                    Health::Waiting(why) => waiting.push(why),
                    failed => return Ok(failed),
                }
            }
            Ok(if waiting.is_empty() { Health::Healthy } else { Health::Waiting(waiting.join("; ")) })
        }
    }
}

/// Returns everything `remember` recorded to its previous state (in reverse order).
pub async fn restore(client: &Client, config: &Config, campaign: &str, previous: &Value) -> Result<(), UpdateError> {
    for entry in previous.as_array().into_iter().flatten().rev() {
        match entry["kind"].as_str() {
            Some("manifest") => restore_object(client, entry).await?,
            Some("image") => {
                if let Some(manifest) = entry["previous"]["manifest"].as_str() {
                    let (repository, tag) =
                        (entry["repository"].as_str().unwrap_or(""), entry["tag"].as_str().unwrap_or(""));
                    let media_type = entry["previous"]["mediaType"].as_str().unwrap_or("");
                    client.push_manifest(repository, tag, manifest.as_bytes(), media_type).await?;
                }
                // A tag that did not exist before stays: nothing restored refers to it.
            }
            Some("axle") => restore_axle(config, entry)?,
            Some("file") => {
                let path = PathBuf::from(entry["path"].as_str().unwrap_or(""));
                let target_name = entry["target"].as_str().unwrap_or("");
                let saved = config.campaign_dir(campaign).join("previous-files").join(target_name);
                if entry["existed"] == true {
                    install_file(&saved, &path)?;
                } else if path.exists() {
                    std::fs::remove_file(&path).map_err(io_error(&path))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Puts one object back as it was (or deletes it, if the campaign created it).
async fn restore_object(client: &Client, entry: &Value) -> Result<(), UpdateError> {
    let path = entry["path"].as_str().unwrap_or("");
    let Some(before) = entry["previous"].as_object().map(|_| entry["previous"].clone()) else {
        return match client.delete(path).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        };
    };
    let mut restored = before;
    if let Some(meta) = restored["metadata"].as_object_mut() {
        for field in ["managedFields", "generation", "creationTimestamp", "deletionTimestamp"] {
            meta.remove(field);
        }
    }
    if let Some(obj) = restored.as_object_mut() {
        obj.remove("status");
    }
    match get_optional(client, path).await? {
        Some(current) => {
            restored["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            restored["metadata"]["uid"] = current["metadata"]["uid"].clone();
            client.put(path, &restored).await?;
        }
        None => {
            if let Some(meta) = restored["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
                meta.remove("uid");
            }
            let collection = path.rsplit_once('/').map(|(c, _)| c).unwrap_or(path);
            client.post(collection, &restored).await?;
        }
    }
    Ok(())
}

/// Records a committed target as installed: its content becomes the base of the next delta.
pub fn commit(config: &Config, target: &Target) -> Result<(), UpdateError> {
    let installed = config.installed_dir().join(&target.name);
    // Axle's binary is in its slot; the base of the next delta is linked from there.
    if target.staged.is_file() && target.kind != Kind::Axle {
        install_file(&target.staged, &installed)?;
    }
    Ok(())
}

/// What the car has installed through bundles: the monotonic version, the latest trusted time
/// and every committed target.
pub fn read_installed(config: &Config) -> Value {
    let path = config.updates_dir().join("installed.json");
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"version": 0, "targets": {}}))
}

pub fn write_installed(config: &Config, installed: &Value) -> Result<(), UpdateError> {
    let bytes = serde_json::to_vec_pretty(installed).unwrap_or_default();
    write_durably(&config.updates_dir().join("installed.json"), &bytes)
}
