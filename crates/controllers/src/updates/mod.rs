//! Offline updates on the car: bundles in, campaigns through, an inventory out.
//!
//! A bundle reaches the car three ways — `axle bundle apply` (an upload through the API),
//! `POST …/bundles/{name}/upload` by any client, or a file on a mounted medium (`--bundle-dir`)
//! — and each becomes a `Bundle` object whose status turns `Received` once every byte is on
//! disk. [`intake`] then verifies it against the car's pinned trust root and installed state
//! (the `bundle` crate) and stages its targets; only a bundle that passes becomes a `Campaign`.
//! [`campaign`] drives each campaign Staging → Activating → Verifying → Committing →
//! Committed, or RollingBack → RolledBack, with every step's outcome in the Campaign's status
//! and every byte it needs to go back on disk before it moves forward: a kill -9 anywhere
//! resumes where the status says. [`targets`] installs and restores each kind of target.
//!
//! On disk (`DATA_DIR`): `trust/root.json` (the pinned root), `bundles/NAME.axb` (uploads),
//! `updates/installed.json` and `updates/installed/` (what is committed: the inventory and the
//! bases of the next deltas), `updates/campaigns/NAME/` (staged targets, the previous state).

pub mod campaign;
pub mod intake;
pub mod targets;

use crate::workloads::tolerate;
use client::{Client, ClientError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub const GROUP_VERSION: &str = "axle.dev/v1alpha1";
pub const BUNDLES: &str = "/apis/axle.dev/v1alpha1/bundles";
pub const CAMPAIGNS: &str = "/apis/axle.dev/v1alpha1/campaigns";
pub const INVENTORIES: &str = "/apis/axle.dev/v1alpha1/inventories";
/// The field manager of everything a campaign applies.
pub const FIELD_MANAGER: &str = "axle-campaign";
/// Annotating a campaign with this (`true`) rolls it back unless it already committed.
pub const ABORT_ANNOTATION: &str = "axle.dev/abort";

const CRDS: &str = include_str!("crds.yaml");

/// Where the update controller keeps its state, and where it looks for bundles.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// A directory watched for `*.axb` files (a mounted USB stick).
    pub bundle_dir: Option<PathBuf>,
    /// Where `file` targets are installed (`custom.path`, else their name, below it).
    pub files_dir: PathBuf,
    /// How this server replaces itself: set when `axle launch` started it.
    pub self_update: Option<SelfUpdate>,
}

/// The slots of a server started by `axle launch`, and how to hand over to a new version.
#[derive(Debug, Clone)]
pub struct SelfUpdate {
    pub slots: selfupdate::Slots,
    /// The slot this process runs from.
    pub slot: selfupdate::Slot,
    /// Asks the server to stop cleanly and exit with `selfupdate::launcher::RESTART`.
    pub restart: Arc<Notify>,
}

impl Config {
    pub fn new(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            bundle_dir: None,
            files_dir: data_dir.join("files"),
            self_update: None,
        }
    }

    pub fn root_path(&self) -> PathBuf {
        self.data_dir.join("trust").join("root.json")
    }

    pub fn upload_path(&self, bundle: &str) -> PathBuf {
        self.data_dir.join("bundles").join(format!("{bundle}.axb"))
    }

    pub fn updates_dir(&self) -> PathBuf {
        self.data_dir.join("updates")
    }

    pub fn installed_dir(&self) -> PathBuf {
        self.updates_dir().join("installed")
    }

    pub fn campaign_dir(&self, campaign: &str) -> PathBuf {
        self.updates_dir().join("campaigns").join(campaign)
    }
}

/// Errors of the update controller's steps; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Api(#[from] ClientError),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{0}")]
    Target(String),
    #[error("this car has no trust root ({}): start the server with --trust-root", .0.display())]
    NoTrustRoot(PathBuf),
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> UpdateError + '_ {
    move |cause| UpdateError::Io { path: path.to_path_buf(), cause }
}

/// Writes a file so that after a crash it holds either the old or the new content: temp file,
/// fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, contents: &[u8]) -> Result<(), UpdateError> {
    selfupdate::slots::write_durably(path, contents, false).map_err(|e| match e {
        selfupdate::SelfUpdateError::Io { path, source } => UpdateError::Io { path, cause: source },
        other => UpdateError::Target(other.to_string()),
    })
}

pub fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// The nodes whose agents take part in an update now: ready, and not ECUs (a node that is not
/// ready catches up when it comes back).
pub async fn ready_agent_nodes(client: &Client) -> Result<Vec<String>, ClientError> {
    let nodes = client.get("/api/v1/nodes").await?;
    Ok(nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| crate::placement::node_is_ready(n) && n["metadata"]["labels"]["axle.dev/ecu"] != "true")
        .map(|n| api::meta::name_of(n).to_string())
        .collect())
}

/// Installs the update resources' definitions (creates them, or updates them to this version).
pub async fn ensure_definitions(client: &Client) -> Result<(), ClientError> {
    for crd in client::parse_manifests(CRDS).map_err(ClientError::Usage)? {
        client.apply(&crd, "axle-server").await?;
    }
    Ok(())
}

/// Runs the update controller until `shutdown` fires: bundle intake, the bundle directory,
/// and the campaigns, one pass whenever a Bundle or Campaign changes (and every second while
/// a campaign waits on something, every few seconds while a bundle directory is watched).
pub async fn run(
    client: Client,
    config: Config,
    metrics: crate::metrics::ReconcileMetrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let client = Arc::new(client);
    let mut delay = Duration::from_millis(200);
    while let Err(e) = ensure_definitions(&client).await {
        tracing::warn!(error = %e, "cannot install the update resources; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(5)),
            _ = shutdown.changed() => return,
        }
    }
    let changed = Arc::new(Notify::new());
    let watchers: Vec<_> = [BUNDLES, CAMPAIGNS]
        .into_iter()
        .map(|collection| tokio::spawn(crate::workloads::watch_changes(client.clone(), collection, changed.clone())))
        .collect();
    let mut requeue: Option<Duration> = Some(Duration::ZERO);
    loop {
        let poll = config.bundle_dir.as_ref().map(|_| Duration::from_secs(2));
        let wake = match (requeue, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = async { match wake { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
            _ = shutdown.changed() => break,
        }
        requeue = match metrics.measure("updates", pass(&client, &config)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "update controller pass failed; retrying");
                Some(Duration::from_secs(1))
            }
        };
    }
    for watcher in watchers {
        watcher.abort();
    }
}

/// One pass: pick up bundles from the directory, verify received bundles, drive campaigns.
/// Returns when to look again while something waits on time.
pub async fn pass(client: &Client, config: &Config) -> Result<Option<Duration>, UpdateError> {
    if let Some(dir) = &config.bundle_dir {
        intake::scan_directory(client, config, dir).await?;
    }
    let campaigns = items(client.get(CAMPAIGNS).await?);
    let active = campaigns.iter().find(|c| !campaign::is_finished(c));
    if let Some(active) = active {
        return campaign::step(client, config, active).await;
    }
    for bundle in items(client.get(BUNDLES).await?) {
        if bundle["status"]["phase"] == "Received" {
            intake::verify(client, config, &bundle).await?;
            // One campaign at a time: the next bundle waits until this one finished.
            return Ok(Some(Duration::ZERO));
        }
    }
    Ok(None)
}

fn items(list: Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Sets fields of an update object's status (a merge patch of the status subresource).
pub(crate) async fn patch_status(
    client: &Client,
    collection: &str,
    name: &str,
    status: Value,
) -> Result<(), ClientError> {
    tolerate(client.merge_patch(&format!("{collection}/{name}/status"), &json!({"status": status})).await)
}
