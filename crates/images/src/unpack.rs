//! Root filesystems from image layers.
//!
//! Layers are applied in order into a fresh directory, honouring the OCI whiteouts (`.wh.NAME`
//! deletes NAME from the layers below, `.wh..wh..opq` empties its directory of them), and the
//! result is renamed into the cache under the image's config digest: a rootfs in the cache is
//! always complete, and every container of that image shares it (read-only, below its own
//! writable layer).

use crate::store::{ContentStore, Manifest, ManifestKind};
use crate::{digest_hex, ImagesError};
use oci_spec::image::ImageConfiguration;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// What an image says about how to run it (the pod spec overrides it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// A runnable image: its rootfs in the cache and its defaults.
#[derive(Debug, Clone)]
pub struct UnpackedImage {
    /// The config digest (the image id, as `docker images` shows it).
    pub id: String,
    pub rootfs: PathBuf,
    pub defaults: ImageDefaults,
}

/// Wraps a reader in the decompressor its first bytes call for (gzip, zstd), or none.
pub fn decompressed<R: Read + 'static>(reader: R) -> std::io::Result<Box<dyn Read>> {
    let mut reader = BufReader::new(reader);
    let magic = reader.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::GzDecoder::new(reader)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

/// For an index: the digest of its manifest for `os`/`arch` (or of one that names no
/// platform). None for an image manifest.
pub fn child_for_platform(manifest: &Manifest, os: &str, arch: &str) -> Result<Option<String>, ImagesError> {
    let ManifestKind::Index(index) = &manifest.kind else { return Ok(None) };
    let matches = |m: &&oci_spec::image::Descriptor| {
        m.platform().as_ref().is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
    };
    let chosen = index
        .manifests()
        .iter()
        .find(matches)
        .or_else(|| index.manifests().iter().find(|m| m.platform().is_none()))
        .ok_or_else(|| ImagesError::ManifestUnknown(format!("{} has no manifest for {os}/{arch}", manifest.digest)))?;
    Ok(Some(chosen.digest().to_string()))
}

/// Picks the manifest for `os`/`arch` out of an index (an image manifest is returned as is).
pub fn select_platform(
    store: &ContentStore,
    manifest: Manifest,
    os: &str,
    arch: &str,
) -> Result<Manifest, ImagesError> {
    match child_for_platform(&manifest, os, arch)? {
        None => Ok(manifest),
        Some(digest) => Manifest::parse(&store.read_blob(&digest)?),
    }
}

/// The image's rootfs, unpacked into `cache_dir` if it is not there yet. Every blob must be
/// in `store` (and was verified when it was stored).
pub fn rootfs(store: &ContentStore, cache_dir: &Path, manifest: &Manifest) -> Result<UnpackedImage, ImagesError> {
    let ManifestKind::Image(image) = &manifest.kind else {
        return Err(ImagesError::ManifestInvalid(format!("{} is an index, not an image", manifest.digest)));
    };
    let id = image.config().digest().to_string();
    let config_bytes = store.read_blob(&id)?;
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| ImagesError::ManifestInvalid(format!("image config {id}: {e}")))?;
    let defaults = defaults_of(&config);
    let target = cache_dir.join(digest_hex(&id)?);
    if target.is_dir() {
        return Ok(UnpackedImage { id, rootfs: target, defaults });
    }
    let work = cache_dir.join(format!(".unpacking-{}", digest_hex(&id)?));
    let _ = remove_all(&work);
    fs::create_dir_all(&work).map_err(ImagesError::io(&work))?;
    for layer in image.layers() {
        let digest = layer.digest().to_string();
        let file = store.open_blob(&digest)?;
        apply_layer(file, &work).map_err(|cause| ImagesError::Layer { digest: digest.clone(), cause })?;
    }
    crate::store::sync_dir(&work)?;
    fs::rename(&work, &target).map_err(ImagesError::io(&target))?;
    crate::store::sync_dir(cache_dir)?;
    tracing::info!(image = %id, rootfs = %target.display(), "image unpacked");
    Ok(UnpackedImage { id, rootfs: target, defaults })
}

fn defaults_of(config: &ImageConfiguration) -> ImageDefaults {
    let Some(c) = config.config() else { return ImageDefaults::default() };
    ImageDefaults {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c
            .env()
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
    }
}

/// Applies one layer (a possibly compressed tar) onto `root`.
fn apply_layer(blob: File, root: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(decompressed(blob).map_err(|e| e.to_string())?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    // Ownership is kept when we may set it (the agent runs as root in a car).
    // SAFETY: geteuid(2) has no preconditions.
    archive.set_preserve_ownerships(unsafe { libc::geteuid() } == 0);
    // Paths this layer wrote: an opaque whiteout only hides what the layers below left.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let relative = normalized(&path).ok_or_else(|| format!("entry {} leaves the root", path.display()))?;
        let name = relative.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let parent = relative.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == OPAQUE_WHITEOUT {
            let Some(dir) = inside(root, &parent)? else { continue };
            for child in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if !written.contains(&parent.join(child.file_name())) {
                    remove_all(&child.path()).map_err(|e| e.to_string())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if let Some(dir) = inside(root, &parent)? {
                // remove_all unlinks a symlink itself, never what it points to.
                remove_all(&dir.join(hidden)).map_err(|e| e.to_string())?;
            }
            continue;
        }
        // An entry replacing a directory with a file (or the reverse) removes what was there.
        let target = root.join(&relative);
        if let Ok(existing) = fs::symlink_metadata(&target) {
            let entry_is_dir = entry.header().entry_type().is_dir();
            if existing.is_dir() != entry_is_dir || !entry_is_dir {
                remove_all(&target).map_err(|e| e.to_string())?;
            }
        }
        entry.unpack_in(root).map_err(|e| format!("{}: {}", relative.display(), with_causes(&e)))?;
        written.insert(relative);
    }
    Ok(())
}

/// An error and its sources, as one line (tar's errors hide the cause in their source).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `root/relative` with symlinks resolved, if it exists; an error if a symlink of an earlier
/// layer leads it out of the root (a whiteout must never delete a file of the host).
fn inside(root: &Path, relative: &Path) -> Result<Option<PathBuf>, String> {
    let Ok(resolved) = root.join(relative).canonicalize() else { return Ok(None) };
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    if resolved.starts_with(&root) {
        Ok(Some(resolved))
    } else {
        Err(format!("whiteout in {} points outside the root", relative.display()))
    }
}

/// The path without `.`/leading `/`, or None if it climbs out with `..`.
fn normalized(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Removes a file, link or directory tree; absent is fine.
pub fn remove_all(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tar_layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match content {
                Some(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    header.set_mode(0o644);
                    header.set_cksum();
                    builder.append_data(&mut header, path, *bytes).expect("file");
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    header.set_cksum();
                    builder.append_data(&mut header, path, &[][..]).expect("dir");
                }
            }
        }
        builder.into_inner().expect("tar")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(&dir.path().join("store")).expect("store");
        let lower = tar_layer(&[
            ("etc/", None),
            ("etc/keep", Some(b"keep")),
            ("etc/gone", Some(b"gone")),
            ("opt/", None),
            ("opt/old", Some(b"old")),
        ]);
        let upper = tar_layer(&[
            ("etc/.wh.gone", Some(b"")),
            ("opt/", None),
            ("opt/new", Some(b"new")),
            ("opt/.wh..wh..opq", Some(b"")),
            ("bin/", None),
            ("bin/app", Some(b"v2")),
        ]);
        let config = store
            .put_blob(
                br#"{"os":"linux","architecture":"amd64","config":{"Entrypoint":["/bin/app"],"Env":["A=1"],"WorkingDir":"/opt"},"rootfs":{"type":"layers","diff_ids":[]}}"#,
                None,
            )
            .expect("config");
        let (l1, l2) = (store.put_blob(&gzip(&lower), None).expect("l1"), store.put_blob(&upper, None).expect("l2"));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l1, "size": 1},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l2, "size": 1},
            ],
        }))
        .expect("json");
        let manifest = Manifest::parse(&manifest).expect("manifest");
        let image = rootfs(&store, &dir.path().join("rootfs"), &manifest).expect("unpacked");
        let read = |p: &str| fs::read_to_string(image.rootfs.join(p)).ok();
        assert_eq!(read("etc/keep").as_deref(), Some("keep"));
        assert_eq!(read("etc/gone"), None, "whiteout removes the lower file");
        assert_eq!(read("opt/old"), None, "opaque directory hides the lower layer");
        assert_eq!(read("opt/new").as_deref(), Some("new"), "but not what its own layer wrote");
        assert_eq!(read("bin/app").as_deref(), Some("v2"));
        assert_eq!(image.defaults.entrypoint, vec!["/bin/app"]);
        assert_eq!(image.defaults.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(image.defaults.working_dir.as_deref(), Some("/opt"));
        // Cached: a second call does not unpack again.
        fs::write(image.rootfs.join("marker"), b"").expect("marker");
        assert!(rootfs(&store, &dir.path().join("rootfs"), &manifest).expect("cached").rootfs.join("marker").exists());
    }

    #[test]
    fn layers_cannot_escape_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(1);
        header.set_mode(0o644);
        // tar::Builder refuses to write `..`; forge the name in the raw header.
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'x'; 512]);
        bytes.extend_from_slice(&[0u8; 1024]);
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("root");
        let blob = dir.path().join("layer");
        fs::write(&blob, bytes).expect("layer");
        let err = apply_layer(File::open(&blob).expect("open"), &root).expect_err("refused");
        assert!(err.contains("leaves the root"), "{err}");
        assert!(!dir.path().join("escape").exists());
    }
}
