//! The content store: an OCI image layout on disk.
//!
//! Invariants:
//! - a file under `blobs/sha256/` always holds exactly the bytes of its name's digest: content
//!   is written to a temporary file, verified, fsynced and only then renamed into place (and the
//!   directory fsynced), so a crash leaves either the whole blob or none;
//! - `index.json` is replaced atomically the same way and names every manifest the store keeps
//!   (tagged: annotation `org.opencontainers.image.ref.name` = `repository:tag`; untagged ones
//!   pushed by digest: `dev.axle.repository` only);
//! - a manifest is only recorded once every blob it references is present;
//! - garbage collection removes blobs that nothing recorded reaches, sparing recent ones (a
//!   client may be between pushing a layer and pushing the manifest that names it).

use crate::{digest_hex, sha256_of, ImagesError};
use oci_spec::image::{ImageIndex, ImageManifest};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const REPOSITORY: &str = "dev.axle.repository";
/// Blobs younger than this survive garbage collection even when unreferenced.
const GC_GRACE: Duration = Duration::from_secs(600);

/// A parsed manifest: an image (config + layers) or an index of per-platform manifests.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub kind: ManifestKind,
}

#[derive(Debug, Clone)]
pub enum ManifestKind {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

impl Manifest {
    /// Parses manifest bytes (OCI or Docker schema 2, image or index).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ImagesError> {
        let invalid = |e: &dyn std::fmt::Display| ImagesError::ManifestInvalid(e.to_string());
        let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(&e))?;
        if value["schemaVersion"] != 2 {
            return Err(ImagesError::ManifestInvalid("only schemaVersion 2 manifests are supported".into()));
        }
        let kind = if value.get("manifests").is_some() {
            ManifestKind::Index(Box::new(ImageIndex::from_reader(bytes).map_err(|e| invalid(&e))?))
        } else {
            ManifestKind::Image(Box::new(ImageManifest::from_reader(bytes).map_err(|e| invalid(&e))?))
        };
        let media_type = match value["mediaType"].as_str() {
            Some(t) => t.to_string(),
            None if matches!(kind, ManifestKind::Index(_)) => "application/vnd.oci.image.index.v1+json".into(),
            None => "application/vnd.oci.image.manifest.v1+json".into(),
        };
        let (digest, size) = sha256_of(bytes).map_err(|e| invalid(&e))?;
        Ok(Manifest { digest, media_type, size, kind })
    }

    /// Every blob this manifest names directly (config and layers, or child manifests).
    pub fn references(&self) -> Vec<String> {
        match &self.kind {
            ManifestKind::Image(m) => std::iter::once(m.config().digest().to_string())
                .chain(m.layers().iter().map(|l| l.digest().to_string()))
                .collect(),
            ManifestKind::Index(i) => i.manifests().iter().map(|m| m.digest().to_string()).collect(),
        }
    }
}

/// An OCI image layout directory.
pub struct ContentStore {
    root: PathBuf,
    /// Serializes read-modify-write of `index.json`.
    index_lock: Mutex<()>,
    counter: AtomicU64,
}

impl ContentStore {
    /// Opens (creating if needed) the layout at `root`. Leftover temporary files of an
    /// interrupted write are removed.
    pub fn open(root: &Path) -> Result<ContentStore, ImagesError> {
        let store = ContentStore { root: root.to_path_buf(), index_lock: Mutex::new(()), counter: AtomicU64::new(0) };
        for dir in [store.blobs_dir(), store.tmp_dir(), store.uploads_dir()] {
            fs::create_dir_all(&dir).map_err(ImagesError::io(&dir))?;
        }
        if let Ok(entries) = fs::read_dir(store.tmp_dir()) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomically(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            write_atomically(&index, &serde_json::to_vec(&empty_index()).unwrap_or_default())?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Where a blob lives (whether or not it is present).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImagesError> {
        Ok(self.blobs_dir().join(digest_hex(digest)?))
    }

    /// The size of a blob that is present.
    pub fn blob_size(&self, digest: &str) -> Option<u64> {
        let path = self.blob_path(digest).ok()?;
        fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    pub fn open_blob(&self, digest: &str) -> Result<File, ImagesError> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImagesError::BlobUnknown(digest.to_string()),
            _ => ImagesError::Io { path, cause: e },
        })
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImagesError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImagesError::BlobUnknown(digest.to_string()),
            _ => ImagesError::Io { path, cause: e },
        })
    }

    fn unique_name(&self) -> String {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut hasher = sha2::Sha256::new();
        hasher.update(format!("{nanos}-{}-{n}", std::process::id()));
        format!("{:x}", hasher.finalize())[..32].to_string()
    }

    /// A writer for a new blob, hashed as it is written; [`BlobWriter::commit`] makes it visible.
    pub fn writer(&self) -> Result<BlobWriter<'_>, ImagesError> {
        let tmp = self.tmp_dir().join(self.unique_name());
        let file = File::create(&tmp).map_err(ImagesError::io(&tmp))?;
        Ok(BlobWriter { store: self, file, tmp, hasher: sha2::Sha256::new(), size: 0 })
    }

    /// Stores bytes as a blob, checking them against `expected` if given.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&str>) -> Result<String, ImagesError> {
        let mut writer = self.writer()?;
        writer.write_all(bytes).map_err(ImagesError::io(&writer.tmp))?;
        writer.commit(expected).map(|(digest, _)| digest)
    }

    /// Moves a verified temporary file into `blobs/`.
    fn publish(&self, tmp: &Path, digest: &str) -> Result<(), ImagesError> {
        let target = self.blob_path(digest)?;
        if target.exists() {
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
        fs::rename(tmp, &target).map_err(ImagesError::io(&target))?;
        sync_dir(&self.blobs_dir())
    }

    // ---- resumable uploads (the registry's upload sessions) ----

    /// Starts an upload session; its id names a file that grows with every chunk.
    pub fn upload_start(&self) -> Result<String, ImagesError> {
        let id = self.unique_name();
        let path = self.uploads_dir().join(&id);
        File::create(&path).map_err(ImagesError::io(&path))?;
        Ok(id)
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, ImagesError> {
        let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let path = self.uploads_dir().join(id);
        if !valid || !path.is_file() {
            return Err(ImagesError::UploadUnknown(id.to_string()));
        }
        Ok(path)
    }

    /// Bytes received so far.
    pub fn upload_size(&self, id: &str) -> Result<u64, ImagesError> {
        let path = self.upload_path(id)?;
        fs::metadata(&path).map(|m| m.len()).map_err(ImagesError::io(&path))
    }

    /// The upload's file, opened for appending a chunk.
    pub fn upload_append(&self, id: &str) -> Result<File, ImagesError> {
        let path = self.upload_path(id)?;
        fs::OpenOptions::new().append(true).open(&path).map_err(ImagesError::io(&path))
    }

    /// Ends an upload: the content must hash to `expected`; it then becomes a blob.
    pub fn upload_finish(&self, id: &str, expected: &str) -> Result<u64, ImagesError> {
        digest_hex(expected)?;
        let path = self.upload_path(id)?;
        let file = File::open(&path).map_err(ImagesError::io(&path))?;
        let (actual, size) = sha256_of(&file).map_err(ImagesError::io(&path))?;
        if actual != expected {
            let _ = fs::remove_file(&path);
            return Err(ImagesError::DigestMismatch { expected: expected.to_string(), actual });
        }
        file.sync_all().map_err(ImagesError::io(&path))?;
        self.publish(&path, expected)?;
        Ok(size)
    }

    pub fn upload_cancel(&self, id: &str) -> Result<(), ImagesError> {
        let path = self.upload_path(id)?;
        fs::remove_file(&path).map_err(ImagesError::io(&path))
    }

    // ---- manifests and tags ----

    fn read_index(&self) -> Result<Value, ImagesError> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(ImagesError::io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| ImagesError::ManifestInvalid(format!("{}: {e}", path.display())))
    }

    fn entries(&self) -> Result<Vec<Value>, ImagesError> {
        Ok(self.read_index()?["manifests"].as_array().cloned().unwrap_or_default())
    }

    fn write_entries(&self, entries: Vec<Value>) -> Result<(), ImagesError> {
        let mut index = self.read_index()?;
        index["manifests"] = Value::Array(entries);
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| ImagesError::ManifestInvalid(e.to_string()))?;
        write_atomically(&self.root.join("index.json"), &bytes)
    }

    /// Stores a manifest under `repository`, tagged if `reference` is a tag (a digest reference
    /// must match the content). Every blob it references must already be present.
    pub fn put_manifest(&self, repository: &str, reference: &str, bytes: &[u8]) -> Result<Manifest, ImagesError> {
        let manifest = Manifest::parse(bytes)?;
        if reference.starts_with("sha256:") && reference != manifest.digest {
            return Err(ImagesError::DigestMismatch { expected: reference.to_string(), actual: manifest.digest });
        }
        if let Some(missing) = manifest.references().into_iter().find(|d| self.blob_size(d).is_none()) {
            return Err(ImagesError::BlobUnknown(missing));
        }
        self.put_blob(bytes, Some(&manifest.digest))?;
        let tag = (!reference.starts_with("sha256:")).then_some(reference);
        let mut annotations = json!({REPOSITORY: repository});
        if let Some(tag) = tag {
            annotations[REF_NAME] = json!(format!("{repository}:{tag}"));
        }
        let entry = json!({
            "mediaType": manifest.media_type, "digest": manifest.digest, "size": manifest.size,
            "annotations": annotations,
        });
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = self.entries()?;
        let same_manifest = |e: &Value| e["digest"] == entry["digest"] && e["annotations"][REPOSITORY] == repository;
        match tag {
            // A tag moves to the new manifest, which needs no untagged entry any more.
            Some(_) => entries.retain(|e| {
                e["annotations"][REF_NAME] != entry["annotations"][REF_NAME]
                    && !(same_manifest(e) && e["annotations"][REF_NAME].is_null())
            }),
            // A push by digest adds the manifest to the repository once, leaving its tags be.
            None if entries.iter().any(same_manifest) => return Ok(manifest),
            None => {}
        }
        entries.push(entry);
        self.write_entries(entries)?;
        Ok(manifest)
    }

    /// Finds a manifest by tag or digest in `repository`.
    pub fn resolve(&self, repository: &str, reference: &str) -> Result<Manifest, ImagesError> {
        let unknown = || ImagesError::ManifestUnknown(format!("{repository}:{reference}"));
        let digest = if reference.starts_with("sha256:") {
            digest_hex(reference)?;
            reference.to_string()
        } else {
            let wanted = format!("{repository}:{reference}");
            self.entries()?
                .iter()
                .find(|e| e["annotations"][REF_NAME] == wanted.as_str())
                .and_then(|e| e["digest"].as_str().map(String::from))
                .ok_or_else(unknown)?
        };
        let bytes = self.read_blob(&digest).map_err(|_| unknown())?;
        Manifest::parse(&bytes)
    }

    /// Tags of a repository, sorted.
    pub fn tags(&self, repository: &str) -> Result<Vec<String>, ImagesError> {
        let prefix = format!("{repository}:");
        let mut tags: Vec<String> = self
            .entries()?
            .iter()
            .filter_map(|e| e["annotations"][REF_NAME].as_str()?.strip_prefix(&prefix).map(String::from))
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// Repositories with at least one manifest, sorted.
    pub fn repositories(&self) -> Result<Vec<String>, ImagesError> {
        let mut repos: Vec<String> =
            self.entries()?.iter().filter_map(|e| e["annotations"][REPOSITORY].as_str().map(String::from)).collect();
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    /// Forgets a manifest of a repository (by digest: all its tags; by tag: that tag). Its
    /// blobs go at the next garbage collection.
    pub fn delete_manifest(&self, repository: &str, reference: &str) -> Result<(), ImagesError> {
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = self.entries()?;
        let before = entries.len();
        let tag_name = format!("{repository}:{reference}");
        entries.retain(|e| {
            let in_repo = e["annotations"][REPOSITORY] == repository;
            !(in_repo && (e["digest"] == reference || e["annotations"][REF_NAME] == tag_name.as_str()))
        });
        if entries.len() == before {
            return Err(ImagesError::ManifestUnknown(tag_name));
        }
        self.write_entries(entries)
    }

    /// Removes blobs that no recorded manifest reaches (older than a grace period) and stale
    /// uploads. Returns (blobs removed, bytes freed).
    pub fn collect_garbage(&self) -> Result<(usize, u64), ImagesError> {
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut reachable = std::collections::HashSet::new();
        let mut pending: Vec<String> =
            self.entries()?.iter().filter_map(|e| e["digest"].as_str().map(String::from)).collect();
        while let Some(digest) = pending.pop() {
            if !reachable.insert(digest.clone()) {
                continue;
            }
            // Manifests are small JSON; layers are not parsed (they fail `parse` at once).
            let Ok(path) = self.blob_path(&digest) else { continue };
            let looks_like_manifest = fs::metadata(&path).map(|m| m.len() < (4 << 20)).unwrap_or(false);
            if looks_like_manifest {
                if let Ok(manifest) = fs::read(&path).map_err(|_| ()).and_then(|b| Manifest::parse(&b).map_err(|_| ()))
                {
                    pending.extend(manifest.references());
                }
            }
        }
        let now = SystemTime::now();
        let old = |meta: &fs::Metadata| meta.modified().ok().and_then(|m| now.duration_since(m).ok()) > Some(GC_GRACE);
        let (mut removed, mut freed) = (0, 0);
        let dir = self.blobs_dir();
        for entry in fs::read_dir(&dir).map_err(ImagesError::io(&dir))?.flatten() {
            let name = format!("sha256:{}", entry.file_name().to_string_lossy());
            let Ok(meta) = entry.metadata() else { continue };
            if !reachable.contains(&name) && old(&meta) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
                freed += meta.len();
            }
        }
        for entry in fs::read_dir(self.uploads_dir()).into_iter().flatten().flatten() {
            if entry.metadata().is_ok_and(|m| old(&m) && m.modified().ok() < now.checked_sub(GC_GRACE * 6)) {
                let _ = fs::remove_file(entry.path());
            }
        }
        if removed > 0 {
            tracing::info!(blobs = removed, bytes = freed, store = %self.root.display(), "garbage-collected unreferenced blobs");
        }
        Ok((removed, freed))
    }
}

/// A blob being written; nothing is visible until [`BlobWriter::commit`].
pub struct BlobWriter<'a> {
    store: &'a ContentStore,
    file: File,
    tmp: PathBuf,
    hasher: sha2::Sha256,
    size: u64,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter<'_> {
    /// Verifies the content against `expected` (if given), makes it durable and visible.
    /// Returns its digest and size. On a mismatch nothing is kept.
    pub fn commit(mut self, expected: Option<&str>) -> Result<(String, u64), ImagesError> {
        let hasher = std::mem::replace(&mut self.hasher, sha2::Sha256::new());
        let actual = format!("sha256:{:x}", hasher.finalize());
        if let Some(expected) = expected {
            if expected != actual {
                return Err(ImagesError::DigestMismatch { expected: expected.to_string(), actual });
            }
        }
        self.file.sync_all().map_err(ImagesError::io(&self.tmp))?;
        self.store.publish(&self.tmp, &actual)?;
        Ok((actual, self.size))
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        // Uncommitted or already renamed: either way the temporary name must not linger.
        let _ = fs::remove_file(&self.tmp);
    }
}

fn empty_index() -> Value {
    json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
}

/// Replaces a file atomically and durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImagesError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(ImagesError::io(&tmp))?;
    file.write_all(bytes).map_err(ImagesError::io(&tmp))?;
    file.sync_all().map_err(ImagesError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(ImagesError::io(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImagesError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ImagesError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_manifest(store: &ContentStore, layer: &[u8]) -> Vec<u8> {
        let config = store
            .put_blob(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#, None)
            .expect("config");
        let layer_digest = store.put_blob(layer, None).expect("layer");
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("json")
    }

    fn age_all_blobs(store: &ContentStore) {
        let old = SystemTime::now() - GC_GRACE * 2;
        for entry in fs::read_dir(store.blobs_dir()).expect("dir").flatten() {
            File::options().write(true).open(entry.path()).and_then(|f| f.set_modified(old)).expect("age");
        }
    }

    #[test]
    fn blobs_are_verified_before_they_become_visible() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("open");
        let wrong = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(store.put_blob(b"data", Some(&wrong)), Err(ImagesError::DigestMismatch { .. })));
        assert_eq!(store.blob_size(&wrong), None);
        assert_eq!(fs::read_dir(store.tmp_dir()).expect("tmp").count(), 0, "no temporary file lingers");
        let digest = store.put_blob(b"data", None).expect("put");
        assert_eq!(store.read_blob(&digest).expect("read"), b"data");
    }

    #[test]
    fn uploads_resume_and_finish_into_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("open");
        let id = store.upload_start().expect("start");
        store.upload_append(&id).expect("append").write_all(b"hello ").expect("chunk");
        assert_eq!(store.upload_size(&id).expect("size"), 6);
        store.upload_append(&id).expect("append").write_all(b"world").expect("chunk");
        let (digest, _) = sha256_of(&b"hello world"[..]).expect("hash");
        assert_eq!(store.upload_finish(&id, &digest).expect("finish"), 11);
        assert!(matches!(store.upload_size(&id), Err(ImagesError::UploadUnknown(_))));
        assert!(matches!(store.upload_size("../../etc"), Err(ImagesError::UploadUnknown(_))));
        assert_eq!(store.blob_size(&digest), Some(11));
    }

    #[test]
    fn manifests_need_their_blobs_and_tags_move() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("open");
        let dangling = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "1".repeat(64)), "size": 1},
            "layers": [],
        }))
        .expect("json");
        assert!(matches!(store.put_manifest("nav", "1.0", &dangling), Err(ImagesError::BlobUnknown(_))));
        let v1 = store.put_manifest("nav", "1.0", &image_manifest(&store, b"layer one")).expect("v1");
        let v2 = store.put_manifest("nav", "1.0", &image_manifest(&store, b"layer two")).expect("v2");
        assert_eq!(store.resolve("nav", "1.0").expect("tag").digest, v2.digest);
        assert_eq!(store.resolve("nav", &v1.digest).expect("digest").digest, v1.digest);
        assert_eq!(store.tags("nav").expect("tags"), vec!["1.0"]);
        assert_eq!(store.repositories().expect("repos"), vec!["nav"]);
        assert!(store.resolve("nav", "2.0").is_err());
        // Only v2 and its blobs are reachable now.
        age_all_blobs(&store);
        let (removed, _) = store.collect_garbage().expect("gc");
        assert_eq!(removed, 2, "v1's manifest and its layer");
        assert!(store.resolve("nav", "1.0").is_ok());
        store.delete_manifest("nav", "1.0").expect("delete");
        age_all_blobs(&store);
        assert_eq!(store.collect_garbage().expect("gc").0, 3);
        assert!(store.repositories().expect("repos").is_empty());
    }

    #[test]
    fn a_push_by_digest_leaves_the_tags_of_the_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("open");
        let manifest = image_manifest(&store, b"layer");
        let pushed = store.put_manifest("nav", "1.0", &manifest).expect("tagged");
        store.put_manifest("nav", "2.0", &manifest).expect("second tag");
        store.put_manifest("nav", &pushed.digest, &manifest).expect("by digest");
        assert_eq!(store.tags("nav").expect("tags"), vec!["1.0", "2.0"]);
        let staged = store.put_manifest("maps", &pushed.digest, &manifest).expect("untagged elsewhere");
        store.put_manifest("maps", "3.0", &manifest).expect("then tagged");
        assert_eq!(store.resolve("maps", "3.0").expect("tag").digest, staged.digest);
        assert_eq!(store.entries().expect("entries").len(), 3, "the untagged entry gave way to the tag");
    }
}
