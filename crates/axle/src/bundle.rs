//! `axle bundle …` and `axle inventory`: make, sign, check and deliver offline update bundles,
//! and show what the car has installed.

use anyhow::{bail, Context as _};
use bundle::trust::{KeyPair, PublicKey, Root, ROLES};
use client::Client;
use serde_json::{json, Value};
use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum BundleCommand {
    /// Generate an ed25519 key pair: NAME.key (private, mode 0600) and NAME.pub.
    Keygen {
        /// Path and stem of the key files.
        name: PathBuf,
    },
    /// Write signed root metadata: the keys and thresholds of every role. With --previous,
    /// the successor of a pinned root (sign with a threshold of the old and of the new keys).
    Root(RootArgs),
    /// Build and sign a bundle from a directory: manifests (*.yaml, *.json), images
    /// (*.oci.tar, *.docker.tar) and files; `FILE.meta.json` adds custom metadata.
    Create(CreateArgs),
    /// Add signatures to a bundle (threshold signing by several key holders).
    Sign {
        bundle: PathBuf,
        /// Which metadata the keys sign: targets or bundle.
        #[arg(long)]
        role: String,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Where to write the signed bundle. [default: in place]
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check a bundle as a car would (signatures, expiry, version, every byte) without installing.
    Verify {
        bundle: PathBuf,
        /// The root metadata the car trusts.
        #[arg(long)]
        root: PathBuf,
        /// The bundle version the car has installed (the bundle must be newer).
        #[arg(long, default_value_t = 0)]
        installed_version: u64,
        /// The files the car has, for delta targets.
        #[arg(long)]
        base: Option<PathBuf>,
    },
    /// Show a bundle's targets, encodings and signatures (unverified).
    Inspect {
        bundle: PathBuf,
        /// `json` for the metadata as is.
        #[arg(short, long)]
        output: Option<String>,
    },
    /// Deliver a bundle to the car through the API (resumable), then follow its campaign.
    Apply {
        bundle: PathBuf,
        /// The kubeconfig to use. [default: $KUBECONFIG]
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Return once the bundle is verified, without following the campaign.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to follow the campaign before giving up (it goes on in the car).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
}

#[derive(clap::Args)]
pub struct RootArgs {
    /// Private keys that sign this root (its root keys; for a rotation also the old ones).
    #[arg(long = "sign", required = true)]
    sign: Vec<PathBuf>,
    /// Public keys of the root role. [default: the public halves of --sign]
    #[arg(long = "root-key")]
    root_keys: Vec<PathBuf>,
    /// Public keys of the targets role. [default: the root keys]
    #[arg(long = "targets-key")]
    targets_keys: Vec<PathBuf>,
    /// Public keys of the bundle role. [default: the root keys]
    #[arg(long = "bundle-key")]
    bundle_keys: Vec<PathBuf>,
    /// Signatures each role needs.
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Days until the root expires.
    #[arg(long, default_value_t = 3650)]
    expires_days: i64,
    /// The root this one succeeds (version + 1).
    #[arg(long)]
    previous: Option<PathBuf>,
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The directory with the targets.
    source: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    /// The bundle's version; a car installs only versions above the one it has.
    #[arg(long)]
    version: u64,
    /// Private key(s) that sign both the targets and the bundle metadata.
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    /// Private key(s) for the targets metadata only.
    #[arg(long = "targets-key")]
    targets_keys: Vec<PathBuf>,
    /// Private key(s) for the bundle metadata only.
    #[arg(long = "bundle-key")]
    bundle_keys: Vec<PathBuf>,
    /// Days until the bundle expires (a car refuses it afterwards).
    #[arg(long, default_value_t = 30)]
    expires_days: i64,
    /// What the car has: a directory with the same file names, or the bundle it installed
    /// last. Targets become deltas against it where that is smaller.
    #[arg(long)]
    base: Option<PathBuf>,
    /// The car's inventory (`axle inventory -o json`): only base files the car has, by
    /// sha256, become delta bases; other targets ship in full.
    #[arg(long, requires = "base")]
    inventory: Option<PathBuf>,
    /// Seconds the car waits for the new version to become healthy before rolling back.
    #[arg(long)]
    health_timeout: Option<u64>,
    /// Encode for speed (quick zstd level, no bsdiff): larger bundles of large targets in
    /// seconds instead of minutes.
    #[arg(long)]
    fast: bool,
}

fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<KeyPair>> {
    paths.iter().map(|p| KeyPair::load(p).with_context(|| format!("cannot load the key {}", p.display()))).collect()
}

fn load_publics(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths.iter().map(|p| PublicKey::load(p).with_context(|| format!("cannot load the key {}", p.display()))).collect()
}

fn expiry(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

pub async fn run(command: BundleCommand) -> anyhow::Result<()> {
    match command {
        BundleCommand::Keygen { name } => {
            let key = KeyPair::generate()?;
            key.save(&name).with_context(|| format!("cannot write the key {}", name.display()))?;
            println!("{}.key and {}.pub written (key id {})", name.display(), name.display(), key.public().id());
            Ok(())
        }
        BundleCommand::Root(args) => root(args),
        BundleCommand::Create(args) => create(args),
        BundleCommand::Sign { bundle, role, keys, output } => {
            let keys = load_keys(&keys)?;
            let out = output.unwrap_or_else(|| bundle.clone());
            let refs: Vec<&KeyPair> = keys.iter().collect();
            bundle::add_signatures(&bundle, &role, &refs, &out)?;
            println!("{} signed by {} more key(s) for {role}", out.display(), keys.len());
            Ok(())
        }
        BundleCommand::Verify { bundle, root, installed_version, base } => {
            let root = Root::trust_initial(bundle::trust::read_json(&root)?).context("the root is not valid")?;
            let staging = std::env::temp_dir().join(format!("axle-verify-{}", std::process::id()));
            let installed = bundle::Installed { version: installed_version, latest_time: None };
            let result = bundle::verify_and_stage(&bundle, &root, &installed, base.as_deref(), &staging);
            let _ = std::fs::remove_dir_all(&staging);
            let verified = result.with_context(|| format!("{} is not valid", bundle.display()))?;
            println!(
                "{}: valid, version {}, {} target(s), expires {}",
                bundle.display(),
                verified.version,
                verified.targets.len(),
                verified.expires
            );
            Ok(())
        }
        BundleCommand::Inspect { bundle, output } => inspect(&bundle, output.as_deref()),
        BundleCommand::Apply { bundle, kubeconfig, no_wait, timeout } => {
            let client = Client::new(client::Config::from_kubeconfig(&crate::kubeconfig_path(kubeconfig)?)?);
            apply(&client, &bundle, no_wait, Duration::from_secs(timeout)).await
        }
    }
}

fn root(args: RootArgs) -> anyhow::Result<()> {
    let signers = load_keys(&args.sign)?;
    let root_keys = if args.root_keys.is_empty() {
        signers.iter().map(KeyPair::public).collect()
    } else {
        load_publics(&args.root_keys)?
    };
    let or_root = |keys: Vec<PublicKey>| if keys.is_empty() { root_keys.clone() } else { keys };
    let targets = or_root(load_publics(&args.targets_keys)?);
    let bundle_keys = or_root(load_publics(&args.bundle_keys)?);
    let version = match &args.previous {
        Some(previous) => bundle::trust::read_json(previous)?["signed"]["version"].as_u64().unwrap_or(0) + 1,
        None => 1,
    };
    let roles: Vec<(&str, Vec<PublicKey>, usize)> = ROLES
        .iter()
        .map(|role| {
            let keys = match *role {
                "targets" => targets.clone(),
                "bundle" => bundle_keys.clone(),
                _ => root_keys.clone(),
            };
            (*role, keys, args.threshold)
        })
        .collect();
    let signed = Root::metadata(version, &expiry(args.expires_days), &roles);
    let refs: Vec<&KeyPair> = signers.iter().collect();
    let envelope = bundle::trust::sign(signed, &refs);
    // Check what a car will check before anyone ships it.
    match &args.previous {
        Some(previous) => {
            Root::trust_initial(bundle::trust::read_json(previous)?)?
                .rotate(envelope.clone())
                .context("the new root is not a valid successor")?;
        }
        None => {
            Root::trust_initial(envelope.clone()).context("the root does not meet its own threshold")?;
        }
    }
    std::fs::write(&args.output, serde_json::to_vec_pretty(&envelope)?)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("{}: root version {version}, threshold {} per role", args.output.display(), args.threshold);
    Ok(())
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let both = load_keys(&args.keys)?;
    let targets_only = load_keys(&args.targets_keys)?;
    let bundle_only = load_keys(&args.bundle_keys)?;
    let targets_keys: Vec<&KeyPair> = both.iter().chain(&targets_only).collect();
    let bundle_keys: Vec<&KeyPair> = both.iter().chain(&bundle_only).collect();
    if targets_keys.is_empty() || bundle_keys.is_empty() {
        bail!("a bundle needs signing keys: pass --key (or --targets-key and --bundle-key)");
    }
    // An older bundle as base: its targets, decoded.
    let extracted = std::env::temp_dir().join(format!("axle-base-{}", std::process::id()));
    let base = match &args.base {
        Some(path) if path.is_file() => {
            bundle::extract(path, None, &extracted)
                .with_context(|| format!("cannot read the base bundle {}", path.display()))?;
            Some(extracted.clone())
        }
        other => other.clone(),
    };
    let filtered = std::env::temp_dir().join(format!("axle-inventory-base-{}", std::process::id()));
    let base = match (&args.inventory, base) {
        (Some(inventory), Some(base)) => {
            let kept = bases_the_car_has(inventory, &base, &filtered)?;
            eprintln!("{kept} base file(s) match the car's inventory");
            Some(filtered.clone())
        }
        (_, base) => base,
    };
    let terminal = std::io::stderr().is_terminal();
    let progress = move |index: usize, count: usize, name: &str| {
        if terminal {
            eprint!("\r\x1b[2K[{}/{count}] {name}", index + 1);
        }
    };
    let options = bundle::CreateOptions {
        version: args.version,
        expires: expiry(args.expires_days),
        base,
        targets_keys,
        bundle_keys,
        health_timeout_seconds: args.health_timeout,
        progress: &progress,
        effort: if args.fast { bundle::delta::Effort::Fast } else { bundle::delta::Effort::Best },
    };
    let created = bundle::create(&args.source, &args.output, &options);
    let _ = std::fs::remove_dir_all(&extracted);
    let _ = std::fs::remove_dir_all(&filtered);
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let created = created.with_context(|| format!("cannot create {}", args.output.display()))?;
    for (name, length, codec, payload) in &created.targets {
        println!("{name:40} {:>10} → {codec:13} {:>10}", human_bytes(*length), human_bytes(*payload));
    }
    println!(
        "{}: version {}, {} target(s), {}",
        args.output.display(),
        args.version,
        created.targets.len(),
        human_bytes(created.bytes)
    );
    Ok(())
}

/// Links into `out` the files of `base` whose sha256 the car's inventory lists under the same
/// target name; returns how many.
fn bases_the_car_has(inventory: &Path, base: &Path, out: &Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(inventory).with_context(|| format!("cannot read {}", inventory.display()))?;
    let inventory: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", inventory.display()))?;
    let mut kept = 0;
    for target in inventory["targets"].as_array().into_iter().flatten() {
        let (Some(name), Some(sha256)) = (target["name"].as_str(), target["sha256"].as_str()) else { continue };
        let candidate = base.join(name);
        let Ok((digest, _)) = bundle::sha256_file(&candidate) else { continue };
        if digest == sha256 && !name.split('/').any(|part| part == ".." || part.is_empty()) {
            let link = out.join(name);
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&candidate, &link).with_context(|| format!("cannot copy {}", candidate.display()))?;
            kept += 1;
        }
    }
    Ok(kept)
}

fn inspect(path: &Path, output: Option<&str>) -> anyhow::Result<()> {
    let metadata = bundle::read_metadata(path)?;
    if output == Some("json") {
        println!("{}", serde_json::to_string_pretty(&metadata)?);
        return Ok(());
    }
    if let Some(other) = output {
        bail!("unknown output format {other:?} (json, or none for a table)");
    }
    let (targets, record) = (&metadata["targets"]["signed"], &metadata["bundle"]["signed"]);
    let signatures = |role: &str| metadata[role]["signatures"].as_array().map(Vec::len).unwrap_or(0);
    println!("version:    {}", record["version"]);
    println!("expires:    {}", record["expires"].as_str().unwrap_or("?"));
    println!("signatures: targets {}, bundle {}", signatures("targets"), signatures("bundle"));
    println!("{:40} {:9} {:>10} {:14} {:>10}  SHA256", "TARGET", "KIND", "LENGTH", "ENCODING", "PAYLOAD");
    for (name, target) in targets["targets"].as_object().into_iter().flatten() {
        let payload = &record["payloads"][name];
        let kind = target["custom"]["kind"].as_str().unwrap_or_else(|| bundle::kind_of(name));
        let sha = target["hashes"]["sha256"].as_str().unwrap_or("");
        println!(
            "{name:40} {kind:9} {:>10} {:14} {:>10}  {}",
            human_bytes(target["length"].as_u64().unwrap_or(0)),
            payload["codec"].as_str().unwrap_or("?"),
            human_bytes(payload["length"].as_u64().unwrap_or(0)),
            &sha[..sha.len().min(16)]
        );
    }
    Ok(())
}

/// Chunk size of bundle uploads: each chunk is one request, fsynced by the server.
const UPLOAD_CHUNK: usize = 8 << 20;
const BUNDLES: &str = "/apis/axle.dev/v1alpha1/bundles";
const CAMPAIGNS: &str = "/apis/axle.dev/v1alpha1/campaigns";

async fn apply(client: &Client, path: &Path, no_wait: bool, timeout: Duration) -> anyhow::Result<()> {
    // The car decides what it accepts: an unreadable bundle is still delivered (and refused
    // there, with an Event), only its name lacks the version.
    let version = bundle::read_metadata(path).ok().and_then(|m| m["bundle"]["signed"]["version"].as_u64());
    let length = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    let (digest, _) = bundle::sha256_file(path)?;
    let stem = match version {
        Some(version) => format!("v{version}-{}", &digest[..12]),
        None => format!("bundle-{}", &digest[..12]),
    };
    let name = delivery_name(client, &stem, length).await?;
    upload(client, path, &name, length).await?;
    let verified = wait_for(client, &format!("{BUNDLES}/{name}"), Duration::from_secs(600), |b| {
        matches!(b["status"]["phase"].as_str(), Some("Verified" | "Rejected"))
    })
    .await?;
    if verified["status"]["phase"] == "Rejected" {
        bail!(
            "bundle {name} rejected ({}): {}",
            verified["status"]["reason"].as_str().unwrap_or(""),
            verified["status"]["message"].as_str().unwrap_or("")
        );
    }
    let campaign = verified["status"]["campaign"].as_str().unwrap_or(&name).to_string();
    let version = verified["status"]["version"].as_u64().unwrap_or(0);
    println!("bundle {name} verified: campaign {campaign} (version {version})");
    if no_wait {
        return Ok(());
    }
    let mut last = String::new();
    let finished = wait_for(client, &format!("{CAMPAIGNS}/{campaign}"), timeout, |c| {
        let phase = c["status"]["phase"].as_str().unwrap_or("Pending");
        let line = format!("{phase} {}", c["status"]["progress"].as_str().unwrap_or(""));
        if line != last {
            eprintln!("campaign {campaign}: {line}");
            last = line;
        }
        matches!(phase, "Committed" | "RolledBack" | "Failed")
    })
    .await?;
    let status = &finished["status"];
    if status["phase"] != "Committed" {
        let outcome = if status["phase"] == "Failed" { "failed" } else { "rolled back" };
        bail!(
            "campaign {campaign} {outcome} ({}{}): {}",
            status["reason"].as_str().unwrap_or(""),
            status["failedTarget"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(|t| format!(", target {t}"))
                .unwrap_or_default(),
            status["message"].as_str().unwrap_or("")
        );
    }
    println!("campaign {campaign} committed: version {version} installed");
    Ok(())
}

/// The Bundle this delivery uploads to: an unfinished upload of the same bytes is resumed;
/// otherwise a new Bundle, so that the car judges every delivery (a replay is refused there).
async fn delivery_name(client: &Client, stem: &str, length: u64) -> anyhow::Result<String> {
    let mut attempt = 1;
    loop {
        let name = if attempt == 1 { stem.to_string() } else { format!("{stem}-{attempt}") };
        attempt += 1;
        let bundle = json!({"apiVersion": "axle.dev/v1alpha1", "kind": "Bundle", "metadata": {"name": name},
                            "spec": {"length": length, "source": "upload"}});
        match client.post(BUNDLES, &bundle).await {
            Ok(_) => return Ok(name),
            Err(e) if e.code() == Some(409) => {
                let existing = client.get(&format!("{BUNDLES}/{name}")).await?;
                if existing["status"]["phase"].as_str().unwrap_or("Uploading") == "Uploading" {
                    return Ok(name);
                }
            }
            Err(e) => return Err(e).context("cannot create the Bundle"),
        }
    }
}

/// Sends the bundle's bytes from wherever the car's copy ends (a broken upload resumes).
async fn upload(client: &Client, path: &Path, name: &str, length: u64) -> anyhow::Result<()> {
    let endpoint = format!("{BUNDLES}/{name}/upload");
    let terminal = std::io::stderr().is_terminal();
    let mut offset =
        client.get(&endpoint).await.context("cannot ask where the upload stands")?["offset"].as_u64().unwrap_or(0);
    let current = client.get(&format!("{BUNDLES}/{name}")).await?;
    if current["status"]["phase"].as_str().is_some_and(|p| p != "Uploading") {
        return Ok(());
    }
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut chunk = vec![0u8; UPLOAD_CHUNK];
    while offset < length {
        use std::io::Seek as _;
        file.seek(std::io::SeekFrom::Start(offset))?;
        let want = UPLOAD_CHUNK.min((length - offset) as usize);
        file.read_exact(&mut chunk[..want]).with_context(|| format!("cannot read {}", path.display()))?;
        let reply = client
            .request(
                hyper::Method::POST,
                &format!("{endpoint}?offset={offset}"),
                "application/octet-stream",
                Some(chunk[..want].to_vec()),
            )
            .await
            .with_context(|| {
                format!("the upload of {name} stopped at byte {offset}; run the command again to resume")
            })?;
        let answer: Value = serde_json::from_slice(&reply).unwrap_or_default();
        offset = answer["offset"].as_u64().unwrap_or(offset + want as u64);
        if terminal {
            eprint!("\r\x1b[2Kuploading {name}: {}%", offset * 100 / length.max(1));
        }
    }
    if terminal {
        eprintln!();
    }
    Ok(())
}

/// Polls an object until `done` says so. A server that does not answer for a while is waited
/// for: during a self-update it hands over to the new version.
async fn wait_for(
    client: &Client,
    path: &str,
    timeout: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match client.get(path).await {
            Ok(obj) if done(&obj) => return Ok(obj),
            Ok(_) | Err(client::ClientError::Connect { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{path} did not finish within {} s (it goes on in the car)", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `axle inventory`: what the car runs and has installed — bundle targets, images per node,
/// ECU firmware.
pub async fn inventory(client: &Client, output: Option<&str>) -> anyhow::Result<()> {
    let installed = match client.get("/apis/axle.dev/v1alpha1/inventories/car").await {
        Ok(inv) => inv["status"].clone(),
        Err(e) if e.is_not_found() => json!({}),
        Err(e) => return Err(e.into()),
    };
    let pods = client.get("/api/v1/pods").await?;
    let nodes = client.get("/api/v1/nodes").await?;
    let mut workloads = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let status = statuses.iter().find(|s| s["name"] == container["name"]);
            workloads.push(json!({
                "node": pod["spec"]["nodeName"], "namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"],
                "container": container["name"], "image": container["image"],
                "imageID": status.map(|s| s["imageID"].clone()).unwrap_or(Value::Null),
            }));
        }
    }
    let ecus: Vec<Value> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["metadata"]["annotations"]["axle.dev/sw-version"].is_string())
        .map(|n| {
            let annotations = &n["metadata"]["annotations"];
            json!({"node": n["metadata"]["name"], "hardwareId": n["metadata"]["labels"]["axle.dev/hardware-id"],
                   "swVersion": annotations["axle.dev/sw-version"], "serial": annotations["axle.dev/serial"]})
        })
        .collect();
    let all = json!({"bundleVersion": installed["bundleVersion"], "targets": installed["targets"], "workloads": workloads, "ecus": ecus});
    match output {
        Some("json") => {
            println!("{}", serde_json::to_string_pretty(&all)?);
            return Ok(());
        }
        Some(other) => bail!("unknown output format {other:?} (json, or none for tables)"),
        None => {}
    }
    println!("BUNDLE VERSION {}", installed["bundleVersion"].as_u64().unwrap_or(0));
    println!("{:40} {:9} {:12} {:>10}  SHA256", "TARGET", "KIND", "VERSION", "LENGTH");
    for target in installed["targets"].as_array().into_iter().flatten() {
        let sha = target["sha256"].as_str().unwrap_or("");
        println!(
            "{:40} {:9} {:12} {:>10}  {}",
            target["name"].as_str().unwrap_or(""),
            target["kind"].as_str().unwrap_or(""),
            target["version"].as_str().unwrap_or("-"),
            human_bytes(target["length"].as_u64().unwrap_or(0)),
            &sha[..sha.len().min(16)]
        );
    }
    println!();
    println!("{:12} {:40} {:24} IMAGE", "NODE", "POD", "CONTAINER");
    for w in &workloads {
        let pod = format!("{}/{}", w["namespace"].as_str().unwrap_or(""), w["pod"].as_str().unwrap_or(""));
        println!(
            "{:12} {pod:40} {:24} {}",
            w["node"].as_str().unwrap_or("-"),
            w["container"].as_str().unwrap_or(""),
            w["image"].as_str().unwrap_or("")
        );
    }
    if !ecus.is_empty() {
        println!();
        println!("{:16} {:16} {:12} SERIAL", "ECU", "HARDWARE", "SOFTWARE");
        for ecu in &ecus {
            println!(
                "{:16} {:16} {:12} {}",
                ecu["node"].as_str().unwrap_or(""),
                ecu["hardwareId"].as_str().unwrap_or("-"),
                ecu["swVersion"].as_str().unwrap_or(""),
                ecu["serial"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}
