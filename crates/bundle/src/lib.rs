//! Offline update bundles: what a workshop laptop or a USB stick brings to a parked car.
//!
//! A bundle is one uncompressed tar that streams: `bundle.json` first (the `targets` metadata
//! — what may be installed, with hashes, lengths and custom fields — and the `bundle` record —
//! a monotonic version and an expiry binding those targets and their encodings — each signed by
//! its role's threshold of keys, see [`trust`]), then `payloads/<sha256>`: each target full
//! (zstd) or as a delta against the version the car has (`zstd-patch/1`), whichever is smaller.
//!
//! Verification refuses, before anything is staged: too few signatures, expired metadata, a
//! version not above the installed one (replay and rollback), a payload longer or other than
//! declared, a delta whose base the car does not have. Payloads are hashed as they stream and
//! decoded into a staging directory; the result of every target is checked against its signed
//! hash and length before it counts.

pub mod delta;
pub mod trust;

use serde_json::{json, Value};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use trust::{canonical, sha256_hex, KeyPair, Root};

/// The largest `bundle.json` accepted (endless-data protection for the metadata itself).
const MAX_METADATA: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("key: {0}")]
    Key(String),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("{role} metadata has {valid} valid signature(s) of the {threshold} required")]
    Signatures { role: String, valid: usize, threshold: usize },
    #[error("{what} expired at {expires} (now {now})")]
    Expired { what: String, expires: String, now: String },
    #[error("{what} version {offered} is not newer than the installed {trusted} (replay or rollback)")]
    Rollback { what: String, trusted: u64, offered: u64 },
    #[error("target {name}: {why}")]
    Target { name: String, why: String },
    #[error("target {name} is a delta against {base}, which this car does not have")]
    WrongBase { name: String, base: String },
}

impl BundleError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BundleError {
        let path = path.into();
        move |cause| BundleError::Io { path, cause }
    }
}

/// How a bundle is made.
pub struct CreateOptions<'a> {
    pub version: u64,
    /// RFC 3339.
    pub expires: String,
    /// The files the car has (same relative names): targets become deltas against them.
    pub base: Option<PathBuf>,
    pub targets_keys: Vec<&'a KeyPair>,
    pub bundle_keys: Vec<&'a KeyPair>,
    /// How long the car waits for the installed targets to become healthy before it rolls
    /// the campaign back.
    pub health_timeout_seconds: Option<u64>,
    /// Called before each target is encoded: (index, count, name).
    pub progress: &'a dyn Fn(usize, usize, &str),
    pub effort: delta::Effort,
}

/// What went into a bundle, per target: (name, length, payload codec, payload length).
#[derive(Debug, Clone)]
pub struct Created {
    pub targets: Vec<(String, u64, String, u64)>,
    pub bytes: u64,
}

/// The most targets one bundle may hold (a campaign lists them all in one object).
pub const MAX_TARGETS: usize = 1_000;

/// The files of a source directory, sorted, with their custom metadata (`<file>.meta.json`).
/// A symbolic link is followed only when it stays inside the directory (so no file of the
/// building machine is packaged by mistake), and a directory is read once (no loops).
fn sources(dir: &Path) -> Result<Vec<(String, PathBuf)>, BundleError> {
    let root = dir.canonicalize().map_err(BundleError::io(dir))?;
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let real = current.canonicalize().map_err(BundleError::io(&current))?;
        if !seen.insert(real) {
            continue;
        }
        for entry in std::fs::read_dir(&current).map_err(BundleError::io(&current))?.flatten() {
            let path = entry.path();
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if is_link && !path.canonicalize().is_ok_and(|target| target.starts_with(&root)) {
                return Err(BundleError::Metadata(format!(
                    "{} is a symbolic link out of the source directory (or to nothing)",
                    path.display()
                )));
            }
            if path.is_dir() {
                pending.push(path);
            } else if !path.to_string_lossy().ends_with(".meta.json") {
                let name = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().to_string();
                found.push((name, path));
            }
        }
    }
    if found.len() > MAX_TARGETS {
        return Err(BundleError::Metadata(format!(
            "{} has {} files; a bundle holds at most {MAX_TARGETS} targets",
            dir.display(),
            found.len()
        )));
    }
    found.sort();
    Ok(found)
}

/// The kind of a target from its file name, where its `.meta.json` does not say (`kind`):
/// `axle` is Axle's own binary, OCI layout or `docker save` tars are images, YAML and JSON are
/// Kubernetes manifests, anything else is a file.
pub fn kind_of(name: &str) -> &'static str {
    if name == "axle" {
        "axle"
    } else if name.ends_with(".oci.tar") || name.ends_with(".docker.tar") {
        "image"
    } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
        "manifest"
    } else {
        "file"
    }
}

/// The sha256 (hex) and length of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64), BundleError> {
    let mut file = std::fs::File::open(path).map_err(BundleError::io(path))?;
    let mut hasher = sha2::Sha256::new();
    let length = std::io::copy(&mut file, &mut hasher).map_err(BundleError::io(path))?;
    Ok((format!("{:x}", hasher.finalize()), length))
}

/// Encodes one target into `out`: full (zstd) or, with a base, the smallest delta when it is
/// smaller than the full encoding.
fn encode(
    path: &Path,
    base: Option<&Path>,
    out: &Path,
    effort: delta::Effort,
) -> Result<(String, Option<Value>), BundleError> {
    let full_length = {
        let input = std::fs::File::open(path).map_err(BundleError::io(path))?;
        let output = std::fs::File::create(out).map_err(BundleError::io(out))?;
        let mut encoder =
            zstd::stream::write::Encoder::new(output, effort.zstd_level()).map_err(BundleError::io(out))?;
        encoder.include_checksum(true).map_err(BundleError::io(out))?;
        std::io::copy(&mut std::io::BufReader::new(input), &mut encoder).map_err(BundleError::io(out))?;
        let file = encoder.finish().map_err(BundleError::io(out))?;
        file.metadata().map(|m| m.len()).unwrap_or(u64::MAX)
    };
    let Some(base) = base.filter(|b| b.is_file()) else { return Ok(("full/zstd".into(), None)) };
    // Deltas hold the base and the target in memory (sizes of firmware, binaries, layers).
    let old = std::fs::read(base).map_err(BundleError::io(base))?;
    let new = std::fs::read(path).map_err(BundleError::io(path))?;
    let mut best: Option<(&str, Vec<u8>)> = None;
    for codec in delta::CODECS {
        let Some(patch) = delta::encode(codec, &old, &new, effort).map_err(BundleError::io(path))? else { continue };
        if best.as_ref().is_none_or(|(_, b)| patch.len() < b.len()) {
            best = Some((codec, patch));
        }
    }
    match best {
        Some((codec, patch)) if (patch.len() as u64) < full_length => {
            std::fs::write(out, &patch).map_err(BundleError::io(out))?;
            let base_ref = json!({"sha256": sha256_hex(&old), "length": old.len()});
            Ok((codec.to_string(), Some(base_ref)))
        }
        _ => Ok(("full/zstd".into(), None)),
    }
}

/// Builds and signs a bundle of every file under `source` into `out`.
pub fn create(source: &Path, out: &Path, options: &CreateOptions<'_>) -> Result<Created, BundleError> {
    let work = out.with_extension("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(BundleError::io(&work))?;
    let result = create_in(source, out, options, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn create_in(source: &Path, out: &Path, options: &CreateOptions<'_>, work: &Path) -> Result<Created, BundleError> {
    let mut targets = serde_json::Map::new();
    let mut payloads = serde_json::Map::new();
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut report = Vec::new();
    let sources = sources(source)?;
    let count = sources.len();
    for (index, (name, path)) in sources.into_iter().enumerate() {
        (options.progress)(index, count, &name);
        let (sha256, length) = sha256_file(&path)?;
        let mut custom =
            trust::read_json(&PathBuf::from(format!("{}.meta.json", path.display()))).unwrap_or_else(|_| json!({}));
        if custom.get("kind").is_none() {
            custom["kind"] = json!(kind_of(&name));
        }
        // Axle's binary says its version in its stamp; the car checks it on trial.
        if custom["kind"] == "axle" && custom.get("version").is_none() {
            let stamp = selfupdate::stamp::read(&path)
                .map_err(|e| BundleError::Target { name: name.clone(), why: e.to_string() })?;
            custom["version"] = json!(stamp.version);
        }
        targets.insert(name.clone(), json!({"length": length, "hashes": {"sha256": sha256}, "custom": custom}));
        let payload_path = work.join(index.to_string());
        let base = options.base.as_ref().map(|b| b.join(&name));
        let (codec, base_ref) = encode(&path, base.as_deref(), &payload_path, options.effort)?;
        let (payload_sha, payload_length) = sha256_file(&payload_path)?;
        let mut payload = json!({"codec": codec, "sha256": payload_sha, "length": payload_length});
        if let Some(base_ref) = base_ref {
            payload["base"] = base_ref;
        }
        payloads.insert(name.clone(), payload);
        report.push((name, length, codec, payload_length));
        files.insert(payload_sha, payload_path);
    }
    let targets_signed =
        json!({"_type": "targets", "version": options.version, "expires": options.expires, "targets": targets});
    let mut campaign = json!({});
    if let Some(seconds) = options.health_timeout_seconds {
        campaign["healthTimeoutSeconds"] = json!(seconds);
    }
    let bundle_signed = json!({
        "_type": "bundle", "version": options.version, "expires": options.expires, "campaign": campaign,
        "targets": {"version": options.version, "sha256": sha256_hex(&canonical(&targets_signed))},
        "payloads": payloads,
    });
    let metadata = json!({
        "targets": trust::sign(targets_signed, &options.targets_keys),
        "bundle": trust::sign(bundle_signed, &options.bundle_keys),
    });
    write_bundle(out, &metadata, &files)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Created { targets: report, bytes })
}

/// Writes the tar: metadata first, then the payloads (atomically: temp file, rename).
fn write_bundle(out: &Path, metadata: &Value, payloads: &BTreeMap<String, PathBuf>) -> Result<(), BundleError> {
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(BundleError::io(&tmp))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let json = serde_json::to_vec_pretty(metadata).unwrap_or_default();
    let mut header = tar::Header::new_ustar();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "bundle.json", &json[..]).map_err(BundleError::io(&tmp))?;
    for (sha, path) in payloads {
        let mut file = std::fs::File::open(path).map_err(BundleError::io(path))?;
        let mut header = tar::Header::new_ustar();
        header.set_size(file.metadata().map(|m| m.len()).unwrap_or(0));
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("payloads/{sha}"), &mut file).map_err(BundleError::io(&tmp))?;
    }
    let writer = tar.into_inner().map_err(BundleError::io(&tmp))?;
    let file = writer.into_inner().map_err(|e| BundleError::Io { path: tmp.clone(), cause: e.into_error() })?;
    file.sync_all().map_err(BundleError::io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(BundleError::io(out))
}

/// Adds signatures of `role` (`targets` or `bundle`) to a bundle (threshold signing by
/// several key holders), rewriting it.
pub fn add_signatures(bundle: &Path, role: &str, keys: &[&KeyPair], out: &Path) -> Result<(), BundleError> {
    if role != "targets" && role != "bundle" {
        return Err(BundleError::Metadata(format!("a bundle carries targets and bundle metadata, not {role}")));
    }
    let work = out.with_extension("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(BundleError::io(&work))?;
    let result = (|| {
        let file = std::fs::File::open(bundle).map_err(BundleError::io(bundle))?;
        let mut archive = tar::Archive::new(file);
        let mut metadata = Value::Null;
        let mut payloads = BTreeMap::new();
        for entry in archive.entries().map_err(BundleError::io(bundle))? {
            let mut entry = entry.map_err(BundleError::io(bundle))?;
            let path = entry.path().map_err(BundleError::io(bundle))?.to_string_lossy().to_string();
            if path == "bundle.json" {
                let mut bytes = Vec::new();
                entry.by_ref().take(MAX_METADATA).read_to_end(&mut bytes).map_err(BundleError::io(bundle))?;
                metadata = serde_json::from_slice(&bytes).map_err(|e| BundleError::Metadata(e.to_string()))?;
            } else if let Some(sha) = path.strip_prefix("payloads/") {
                let target = work.join(sha);
                let mut file = std::fs::File::create(&target).map_err(BundleError::io(&target))?;
                std::io::copy(&mut entry, &mut file).map_err(BundleError::io(&target))?;
                payloads.insert(sha.to_string(), target);
            }
        }
        trust::add_signatures(&mut metadata[role], keys);
        write_bundle(out, &metadata, &payloads)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Reads a bundle's metadata (unverified: for `inspect` and before verification).
pub fn read_metadata(bundle: &Path) -> Result<Value, BundleError> {
    let file = std::fs::File::open(bundle).map_err(BundleError::io(bundle))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries().map_err(BundleError::io(bundle))?;
    let mut first =
        entries.next().ok_or_else(|| BundleError::Metadata("empty bundle".into()))?.map_err(BundleError::io(bundle))?;
    let name = first.path().map_err(BundleError::io(bundle))?.to_string_lossy().to_string();
    if name != "bundle.json" || first.size() > MAX_METADATA {
        return Err(BundleError::Metadata("a bundle starts with bundle.json (at most 16 MiB)".into()));
    }
    let mut bytes = Vec::new();
    first.read_to_end(&mut bytes).map_err(BundleError::io(bundle))?;
    serde_json::from_slice(&bytes).map_err(|e| BundleError::Metadata(format!("bundle.json: {e}")))
}

/// What the car holds about bundles it installed.
#[derive(Debug, Clone)]
pub struct Installed {
    pub version: u64,
    /// The latest time the car has trusted (expiry is checked against the later of this and
    /// the clock: a clock set back does not revive expired metadata).
    pub latest_time: Option<String>,
}

/// One verified, staged target.
#[derive(Debug, Clone)]
pub struct Staged {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub length: u64,
    pub custom: Value,
}

fn check_expiry(what: &str, expires: &str, now: &chrono::DateTime<chrono::Utc>) -> Result<(), BundleError> {
    let parsed = chrono::DateTime::parse_from_rfc3339(expires)
        .map_err(|_| BundleError::Metadata(format!("{what} has no valid expiry ({expires:?})")))?;
    if parsed < *now {
        return Err(BundleError::Expired { what: what.into(), expires: expires.into(), now: now.to_rfc3339() });
    }
    Ok(())
}

/// A verified and staged bundle.
#[derive(Debug, Clone)]
pub struct Verified {
    pub version: u64,
    pub expires: String,
    /// Campaign settings the bundle's signers chose (`healthTimeoutSeconds`).
    pub campaign: Value,
    pub targets: Vec<Staged>,
}

/// Verifies a bundle against the trusted root and the installed state, then streams its
/// payloads into `staging` (`<staging>/<target name>`), checking every byte. `base` holds the
/// files the car has, for deltas. On any error `staging` is removed.
pub fn verify_and_stage(
    bundle: &Path,
    root: &Root,
    installed: &Installed,
    base: Option<&Path>,
    staging: &Path,
) -> Result<Verified, BundleError> {
    let metadata = read_metadata(bundle)?;
    let now = {
        let clock = chrono::Utc::now();
        let latest = installed.latest_time.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        latest.map(|l| l.with_timezone(&chrono::Utc)).filter(|l| *l > clock).unwrap_or(clock)
    };
    check_expiry("root metadata", root.expires(), &now)?;
    let (targets, record) = (&metadata["targets"], &metadata["bundle"]);
    root.check(targets, "targets")?;
    root.check(record, "bundle")?;
    let (targets, record) = (&targets["signed"], &record["signed"]);
    if targets["_type"] != "targets" || record["_type"] != "bundle" {
        return Err(BundleError::Metadata("wrong metadata types".into()));
    }
    // Mix-and-match: the bundle record binds exactly these targets.
    if record["targets"]["sha256"].as_str() != Some(sha256_hex(&canonical(targets)).as_str())
        || record["targets"]["version"] != targets["version"]
    {
        return Err(BundleError::Metadata("the bundle record does not bind these targets".into()));
    }
    let count = targets["targets"].as_object().map_or(0, serde_json::Map::len);
    if count > MAX_TARGETS {
        // Even signed, more than a car's update holds: refused before any work scales with it.
        return Err(BundleError::Metadata(format!("{count} targets; a bundle holds at most {MAX_TARGETS}")));
    }
    check_expiry("bundle metadata", record["expires"].as_str().unwrap_or(""), &now)?;
    check_expiry("targets metadata", targets["expires"].as_str().unwrap_or(""), &now)?;
    let version = record["version"].as_u64().unwrap_or(0);
    if version <= installed.version {
        return Err(BundleError::Rollback { what: "bundle".into(), trusted: installed.version, offered: version });
    }
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging).map_err(BundleError::io(staging))?;
    match stage(bundle, targets, record, base, staging) {
        Ok(staged) => Ok(Verified {
            version,
            expires: record["expires"].as_str().unwrap_or("").to_string(),
            campaign: record["campaign"].clone(),
            targets: staged,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(staging);
            Err(e)
        }
    }
}

fn stage(
    bundle: &Path,
    targets: &Value,
    record: &Value,
    base: Option<&Path>,
    staging: &Path,
) -> Result<Vec<Staged>, BundleError> {
    let declared = targets["targets"].as_object().cloned().unwrap_or_default();
    let payloads = record["payloads"].as_object().cloned().unwrap_or_default();
    // Every delta's base must be here before a byte is staged.
    for (name, payload) in &payloads {
        if let Some(base_ref) = payload.get("base") {
            let want = base_ref["sha256"].as_str().unwrap_or("");
            let have = base.map(|b| b.join(name)).filter(|p| p.is_file()).map(|p| sha256_file(&p)).transpose()?;
            if have.as_ref().map(|(h, _)| h.as_str()) != Some(want) {
                return Err(BundleError::WrongBase { name: name.clone(), base: format!("sha256:{want}") });
            }
        }
    }
    let by_payload: BTreeMap<String, (String, Value)> = payloads
        .iter()
        .map(|(name, p)| (p["sha256"].as_str().unwrap_or("").to_string(), (name.clone(), p.clone())))
        .collect();
    let file = std::fs::File::open(bundle).map_err(BundleError::io(bundle))?;
    let mut archive = tar::Archive::new(file);
    let mut staged = Vec::new();
    for entry in archive.entries().map_err(BundleError::io(bundle))? {
        let entry = entry.map_err(BundleError::io(bundle))?;
        let path = entry.path().map_err(BundleError::io(bundle))?.to_string_lossy().to_string();
        let Some(sha) = path.strip_prefix("payloads/") else { continue };
        let Some((name, payload)) = by_payload.get(sha) else {
            return Err(BundleError::Target { name: path, why: "not declared by the signed metadata".into() });
        };
        let length = payload["length"].as_u64().unwrap_or(0);
        if entry.size() != length {
            return Err(BundleError::Target {
                name: name.clone(),
                why: format!("payload of {} bytes, {length} declared", entry.size()),
            });
        }
        let raw = staging.join(format!(".payload-{sha}"));
        let mut hasher = sha2::Sha256::new();
        {
            let mut file = std::fs::File::create(&raw).map_err(BundleError::io(&raw))?;
            let mut limited = entry.take(length);
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = limited.read(&mut buffer).map_err(BundleError::io(bundle))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                file.write_all(&buffer[..n]).map_err(BundleError::io(&raw))?;
            }
        }
        if format!("{:x}", hasher.finalize()) != *sha {
            return Err(BundleError::Target {
                name: name.clone(),
                why: "payload does not match its signed hash".into(),
            });
        }
        let target = &declared[name];
        let result = safe_join(staging, name)?;
        if let Some(parent) = result.parent() {
            std::fs::create_dir_all(parent).map_err(BundleError::io(parent))?;
        }
        decode(&raw, payload, base.map(|b| b.join(name)).as_deref(), &result, target["length"].as_u64().unwrap_or(0))?;
        let _ = std::fs::remove_file(&raw);
        let (actual, actual_length) = sha256_file(&result)?;
        let wanted = target["hashes"]["sha256"].as_str().unwrap_or("");
        if actual != wanted || Some(actual_length) != target["length"].as_u64() {
            return Err(BundleError::Target {
                name: name.clone(),
                why: "decoded content does not match its signed hash and length".into(),
            });
        }
        staged.push(Staged {
            name: name.clone(),
            path: result,
            sha256: actual,
            length: actual_length,
            custom: target["custom"].clone(),
        });
    }
    if let Some(missing) = declared.keys().find(|n| !staged.iter().any(|s| &s.name == *n)) {
        return Err(BundleError::Target { name: missing.clone(), why: "declared but not in the bundle".into() });
    }
    Ok(staged)
}

/// Decodes a bundle's targets into `out` without checking signatures (the builder reading its
/// own older bundle as a delta base); every target is still checked against its hash.
pub fn extract(bundle: &Path, base: Option<&Path>, out: &Path) -> Result<Vec<Staged>, BundleError> {
    let metadata = read_metadata(bundle)?;
    std::fs::create_dir_all(out).map_err(BundleError::io(out))?;
    stage(bundle, &metadata["targets"]["signed"], &metadata["bundle"]["signed"], base, out)
}

/// A target name as a path inside the staging directory (no `..`, no absolute paths).
fn safe_join(root: &Path, name: &str) -> Result<PathBuf, BundleError> {
    let path = Path::new(name);
    if name.is_empty() || path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(BundleError::Target {
            name: name.into(),
            why: "a target name is a relative path inside the bundle".into(),
        });
    }
    Ok(root.join(path))
}

/// A decoding error: the car's disk's when writing the output failed (worth another try), else
/// the payload's (it does not decode, or decodes past its signed length: the bundle is refused).
fn payload_or_disk(out: &Path, cause: std::io::Error) -> BundleError {
    if cause.get_ref().is_some_and(|inner| inner.is::<DiskFailure>()) {
        return BundleError::Io { path: out.to_path_buf(), cause };
    }
    BundleError::Target { name: out.display().to_string(), why: format!("does not decode: {cause}") }
}

/// The output file's own write error, told apart from the decoder's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DiskFailure(std::io::Error);

/// Tags the errors of writing the decoded bytes as the disk's.
struct Disk<W>(W);

impl<W: Write> Write for Disk<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes).map_err(|e| std::io::Error::new(e.kind(), DiskFailure(e)))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(|e| std::io::Error::new(e.kind(), DiskFailure(e)))
    }
}

/// A writer that refuses to write past `left` bytes (a decoder never outgrows a signed length).
struct Bounded<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() as u64 > self.left {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "decodes to more than its signed length"));
        }
        let written = self.inner.write(bytes)?;
        self.left -= written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decodes a payload into `out`, never writing more than `limit` bytes.
fn decode(raw: &Path, payload: &Value, base: Option<&Path>, out: &Path, limit: u64) -> Result<(), BundleError> {
    let input = std::fs::File::open(raw).map_err(BundleError::io(raw))?;
    let mut output = std::fs::File::create(out).map_err(BundleError::io(out))?;
    let is_delta = payload.get("base").is_some();
    let base_bytes = match (is_delta, base) {
        (true, Some(base)) => std::fs::read(base).map_err(BundleError::io(base))?,
        (true, None) => return Err(BundleError::Metadata("a delta needs its base".into())),
        (false, _) => Vec::new(),
    };
    let codec = payload["codec"].as_str().unwrap_or("");
    let copied = match codec {
        "full/zstd" => {
            let decoder = zstd::stream::read::Decoder::new(input).map_err(BundleError::io(raw))?;
            std::io::copy(&mut decoder.take(limit + 1), &mut Disk(&mut output))
        }
        codec if delta::CODECS.contains(&codec) => {
            let mut bounded = Bounded { inner: std::io::BufWriter::new(Disk(&mut output)), left: limit };
            delta::decode(codec, &base_bytes, input, &mut bounded).and_then(|n| bounded.flush().map(|()| n))
        }
        other => return Err(BundleError::Metadata(format!("unknown codec {other:?}"))),
    }
    .map_err(|cause| payload_or_disk(out, cause))?;
    if copied > limit {
        return Err(BundleError::Target {
            name: out.display().to_string(),
            why: "decodes to more than its signed length".into(),
        });
    }
    output.sync_all().map_err(BundleError::io(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trust::{PublicKey, ROLES};

    #[test]
    fn sources_refuse_links_out_of_the_directory_and_read_a_looping_directory_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("src");
        std::fs::create_dir_all(source.join("fw")).expect("mkdir");
        std::fs::write(source.join("fw/a.bin"), b"a").expect("write");
        std::os::unix::fs::symlink(&source, source.join("fw/loop")).expect("a loop");
        std::os::unix::fs::symlink(source.join("fw/a.bin"), source.join("alias.bin")).expect("an inner link");
        let names: Vec<String> = sources(&source).expect("listed").into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"fw/a.bin".to_string()) && names.contains(&"alias.bin".to_string()), "{names:?}");
        std::fs::write(dir.path().join("host-secret"), b"s").expect("write");
        std::os::unix::fs::symlink(dir.path().join("host-secret"), source.join("leak.bin")).expect("an outer link");
        let error = sources(&source).expect_err("refused");
        assert!(error.to_string().contains("out of the source directory"), "{error}");
    }

    #[test]
    fn a_source_with_more_targets_than_a_bundle_holds_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..=MAX_TARGETS {
            std::fs::write(dir.path().join(format!("f{i}.bin")), b"x").expect("write");
        }
        let error = sources(dir.path()).expect_err("too many");
        assert!(error.to_string().contains("at most 1000 targets"), "{error}");
        std::fs::remove_file(dir.path().join("f0.bin")).expect("rm");
        assert_eq!(sources(dir.path()).expect("at the limit").len(), MAX_TARGETS);
    }

    #[test]
    fn a_payload_that_does_not_decode_is_the_bundles_fault_and_a_failing_disk_is_not() {
        let out = Path::new("/staging/fw.bin");
        let past = std::io::Error::new(std::io::ErrorKind::InvalidData, "decodes to more than its signed length");
        assert!(matches!(payload_or_disk(out, past), BundleError::Target { .. }));
        assert!(matches!(payload_or_disk(out, std::io::Error::other("corrupt frame")), BundleError::Target { .. }));
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let disk = Disk(Full).write(b"x").expect_err("the disk is full");
        assert!(matches!(payload_or_disk(out, disk), BundleError::Io { .. }), "worth another try");
    }

    struct Fixture {
        dir: tempfile::TempDir,
        key: KeyPair,
        second: KeyPair,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let source = dir.path().join("v1");
            std::fs::create_dir_all(source.join("fw")).expect("mkdir");
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let firmware: Vec<u8> = (0..300_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            std::fs::write(source.join("fw/brake.bin"), &firmware).expect("write");
            std::fs::write(source.join("fw/brake.bin.meta.json"), r#"{"hardwareId": "brake"}"#).expect("write");
            std::fs::write(source.join("app.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
                .expect("write");
            Fixture { dir, key: KeyPair::generate().expect("key"), second: KeyPair::generate().expect("key") }
        }

        fn root(&self, threshold: usize) -> Root {
            let publics: Vec<PublicKey> = vec![self.key.public(), self.second.public()];
            let roles: Vec<(&str, Vec<PublicKey>, usize)> =
                ROLES.iter().map(|r| (*r, publics.clone(), threshold)).collect();
            let envelope = trust::sign(Root::metadata(1, "2099-01-01T00:00:00Z", &roles), &[&self.key, &self.second]);
            Root::trust_initial(envelope).expect("root")
        }

        fn create(
            &self,
            source: &str,
            version: u64,
            expires: &str,
            base: Option<&str>,
            keys: Vec<&KeyPair>,
        ) -> PathBuf {
            let out = self.dir.path().join(format!("{source}-{version}.axb"));
            let options = CreateOptions {
                version,
                expires: expires.into(),
                base: base.map(|b| self.dir.path().join(b)),
                targets_keys: keys.clone(),
                bundle_keys: keys,
                health_timeout_seconds: None,
                progress: &|_, _, _| {},
                effort: delta::Effort::Best,
            };
            create(&self.dir.path().join(source), &out, &options).expect("created");
            out
        }

        fn stage(
            &self,
            bundle: &Path,
            root: &Root,
            installed: u64,
            base: Option<&str>,
        ) -> Result<Verified, BundleError> {
            let staging = self.dir.path().join("staging");
            let installed = Installed { version: installed, latest_time: None };
            verify_and_stage(bundle, root, &installed, base.map(|b| self.dir.path().join(b)).as_deref(), &staging)
        }
    }

    fn flip_byte(path: &Path, offset: usize) -> PathBuf {
        let mut bytes = std::fs::read(path).expect("read");
        bytes[offset] ^= 0x01;
        let out = path.with_extension("flipped");
        std::fs::write(&out, bytes).expect("write");
        out
    }

    #[test]
    fn a_bundle_stages_its_targets_and_a_delta_needs_the_right_base() {
        let f = Fixture::new();
        let root = f.root(1);
        let v1 = f.create("v1", 1, "2099-01-01T00:00:00Z", None, vec![&f.key]);
        let staged = f.stage(&v1, &root, 0, None).expect("valid bundle").targets;
        assert_eq!(staged.len(), 2);
        let firmware = staged.iter().find(|s| s.name == "fw/brake.bin").expect("firmware staged");
        assert_eq!(firmware.custom["hardwareId"], "brake");
        assert_eq!(
            std::fs::read(&firmware.path).expect("read"),
            std::fs::read(f.dir.path().join("v1/fw/brake.bin")).expect("read")
        );

        let v2_dir = f.dir.path().join("v2");
        std::fs::create_dir_all(v2_dir.join("fw")).expect("mkdir");
        let mut firmware = std::fs::read(f.dir.path().join("v1/fw/brake.bin")).expect("read");
        firmware[1000..1010].copy_from_slice(b"patched!!!");
        std::fs::write(v2_dir.join("fw/brake.bin"), &firmware).expect("write");
        std::fs::copy(f.dir.path().join("v1/app.yaml"), v2_dir.join("app.yaml")).expect("copy");
        let v2 = f.create("v2", 2, "2099-01-01T00:00:00Z", Some("v1"), vec![&f.key]);
        let full = f.create("v2", 3, "2099-01-01T00:00:00Z", None, vec![&f.key]);
        let (delta_len, full_len) =
            (std::fs::metadata(&v2).expect("meta").len(), std::fs::metadata(&full).expect("meta").len());
        assert!(delta_len * 5 < full_len, "delta {delta_len} vs full {full_len}");
        let staged = f.stage(&v2, &root, 1, Some("v1")).expect("delta applies on its base").targets;
        let firmware_staged = staged.iter().find(|s| s.name == "fw/brake.bin").expect("staged");
        assert_eq!(std::fs::read(&firmware_staged.path).expect("read"), firmware);
        assert!(matches!(f.stage(&v2, &root, 1, Some("v2")), Err(BundleError::WrongBase { .. })));
        assert!(matches!(f.stage(&v2, &root, 1, None), Err(BundleError::WrongBase { .. })));
    }

    #[test]
    fn the_smallest_delta_codec_wins_and_round_trips() {
        let f = Fixture::new();
        // Code-like data: a table of addresses that all moved by a few bytes (a relinked
        // binary) plus an insertion — what bsdiff's byte-wise differences are made for.
        let table = |shift: u32| -> Vec<u8> { (0..200_000u32).flat_map(|i| (i * 7 + shift).to_le_bytes()).collect() };
        let (old, mut new) = (table(0), table(3));
        new.splice(400_000..400_000, vec![0x90; 1024]);
        for (dir, bytes) in [("old", &old), ("new", &new)] {
            std::fs::create_dir_all(f.dir.path().join(dir)).expect("mkdir");
            std::fs::write(f.dir.path().join(dir).join("app.bin"), bytes).expect("write");
        }
        let root = f.root(1);
        let out = f.dir.path().join("code.axb");
        let options = CreateOptions {
            version: 2,
            expires: "2099-01-01T00:00:00Z".into(),
            base: Some(f.dir.path().join("old")),
            targets_keys: vec![&f.key],
            bundle_keys: vec![&f.key],
            health_timeout_seconds: None,
            progress: &|_, _, _| {},
            effort: delta::Effort::Best,
        };
        let created = create(&f.dir.path().join("new"), &out, &options).expect("created");
        assert_eq!(created.targets[0].2, "bsdiff/1", "{:?}", created.targets);
        let staged = f.stage(&out, &root, 1, Some("old")).expect("applies").targets;
        assert_eq!(std::fs::read(&staged[0].path).expect("read"), new);
    }

    #[test]
    fn attacks_are_refused_and_nothing_stays_staged() {
        let f = Fixture::new();
        let root = f.root(1);
        let good = f.create("v1", 5, "2099-01-01T00:00:00Z", None, vec![&f.key]);
        let bytes = std::fs::read(&good).expect("read");
        let metadata_at = bytes.windows(8).position(|w| w == b"\"length\"").expect("metadata") + 12;
        let payload_at = bytes.len() - 2048;
        let stranger = KeyPair::generate().expect("key");
        let cases: Vec<(&str, PathBuf, Root, u64)> = vec![
            ("flipped payload byte", flip_byte(&good, payload_at), root.clone(), 0),
            ("flipped metadata byte", flip_byte(&good, metadata_at), root.clone(), 0),
            ("replay of an installed version", good.clone(), root.clone(), 5),
            ("older than installed", good.clone(), root.clone(), 9),
            ("expired", f.create("v1", 6, "2020-01-01T00:00:00Z", None, vec![&f.key]), root.clone(), 0),
            ("unknown key", f.create("v1", 7, "2099-01-01T00:00:00Z", None, vec![&stranger]), root.clone(), 0),
            ("threshold not met", good.clone(), f.root(2), 0),
        ];
        for (attack, bundle, root, installed) in cases {
            let result = f.stage(&bundle, &root, installed, None);
            assert!(result.is_err(), "{attack} was accepted");
            assert!(!f.dir.path().join("staging").exists(), "{attack} left staged files");
        }
        let mut both = good.with_extension("both");
        add_signatures(&good, "targets", &[&f.second], &both).expect("signed");
        let again = both.with_extension("again");
        add_signatures(&both, "bundle", &[&f.second], &again).expect("signed");
        both = again;
        f.stage(&both, &f.root(2), 0, None).expect("threshold of two met after the second holder signed");
    }
}
