//! Images built elsewhere, read from what real tools write: an OCI image layout (a directory,
//! or a tar of one, from `umoci`, `skopeo copy … oci:`, `buildah push … oci-archive:`, recent
//! `docker save`) or a classic `docker save` archive (`manifest.json` + layer tars).
//!
//! The result names each image's manifest and the files holding its blobs; the caller pushes
//! them where they belong (the CLI to the car's registry). Nothing here trusts the source: every
//! blob's digest is recomputed by whoever stores it.

use crate::store::Manifest;
use crate::{sha256_of, ImagesError, Reference};
use serde_json::{json, Value};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// One image found in the source.
#[derive(Debug)]
pub struct SourceImage {
    /// Where it goes: repository and tag.
    pub reference: Reference,
    pub manifest: Vec<u8>,
    /// Blobs the manifest reaches (for an index: its children's too), with their files.
    pub blobs: Vec<SourceBlob>,
}

#[derive(Debug, Clone)]
pub struct SourceBlob {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
    /// A child manifest of an index (pushed as a manifest, after its own blobs).
    pub manifest: bool,
}

/// What was read; holds the scratch directory a tar was unpacked into until dropped.
pub struct Source {
    pub images: Vec<SourceImage>,
    _scratch: Option<Scratch>,
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Reads the images in `path`. `name` (a reference, e.g. `nav` or `nav:2.1`) names images whose
/// source does not (an OCI layout tags with bare tags like `latest`); without it the file's
/// name is used.
pub fn read(path: &Path, name: Option<&str>) -> Result<Source, ImagesError> {
    let meta = fs::metadata(path).map_err(ImagesError::io(path))?;
    let fallback_name = match name {
        Some(n) => n.to_string(),
        None => {
            let stem = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let stem = stem.split('.').next().unwrap_or("").to_ascii_lowercase();
            stem.chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect()
        }
    };
    if meta.is_dir() {
        return Ok(Source { images: read_dir(path, &fallback_name)?, _scratch: None });
    }
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "axle-import-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    )));
    fs::create_dir_all(&scratch.0).map_err(ImagesError::io(&scratch.0))?;
    let file = File::open(path).map_err(ImagesError::io(path))?;
    let mut archive = tar::Archive::new(crate::unpack::decompressed(file).map_err(ImagesError::io(path))?);
    archive.unpack(&scratch.0).map_err(|e| ImagesError::UnknownFormat {
        path: path.to_path_buf(),
        why: format!("not a readable tar archive: {e}"),
    })?;
    let images = read_dir(&scratch.0, &fallback_name).map_err(|e| match e {
        ImagesError::UnknownFormat { why, .. } => ImagesError::UnknownFormat { path: path.to_path_buf(), why },
        other => other,
    })?;
    Ok(Source { images, _scratch: Some(scratch) })
}

fn read_dir(dir: &Path, fallback_name: &str) -> Result<Vec<SourceImage>, ImagesError> {
    let images = if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        read_layout(dir, fallback_name)?
    } else if dir.join("manifest.json").is_file() {
        read_docker_archive(dir)?
    } else {
        return Err(ImagesError::UnknownFormat {
            path: dir.to_path_buf(),
            why: "neither oci-layout + index.json nor manifest.json found".into(),
        });
    };
    if images.is_empty() {
        return Err(ImagesError::UnknownFormat { path: dir.to_path_buf(), why: "it holds no image".into() });
    }
    Ok(images)
}

fn read_json(path: &Path) -> Result<Value, ImagesError> {
    let bytes = fs::read(path).map_err(ImagesError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| ImagesError::ManifestInvalid(format!("{}: {e}", path.display())))
}

/// The reference an image of a layout is imported as. A name given with a tag wins; else
/// `ref.name` may be a full reference (containerd, docker) or a bare tag (umoci, skopeo).
fn layout_reference(ref_name: Option<&str>, fallback_name: &str) -> Result<Reference, ImagesError> {
    let fallback = Reference::parse(fallback_name)?;
    let explicit_tag = fallback_name.rsplit('/').next().is_some_and(|last| last.contains(':'));
    if explicit_tag {
        return Ok(fallback);
    }
    match ref_name {
        Some(name) if name.contains(['/', ':']) => Reference::parse(name),
        Some(tag) => Reference::parse(&format!("{}:{tag}", fallback.repository)),
        None => Ok(fallback),
    }
}

fn read_layout(dir: &Path, fallback_name: &str) -> Result<Vec<SourceImage>, ImagesError> {
    let index = read_json(&dir.join("index.json"))?;
    let blob = |digest: &str| -> Result<PathBuf, ImagesError> {
        let hex = crate::digest_hex(digest)?;
        Ok(dir.join("blobs").join("sha256").join(hex))
    };
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    if entries.len() > 1 && fallback_name.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        return Err(ImagesError::ManifestInvalid(format!(
            "the layout holds {} images: give --name without a tag, each keeps its own",
            entries.len()
        )));
    }
    let mut images = Vec::new();
    for entry in &entries {
        let digest = entry["digest"].as_str().unwrap_or("");
        let path = blob(digest)?;
        let manifest = fs::read(&path).map_err(ImagesError::io(&path))?;
        let parsed = Manifest::parse(&manifest)?;
        let reference =
            layout_reference(entry["annotations"]["org.opencontainers.image.ref.name"].as_str(), fallback_name)?;
        let mut blobs = Vec::new();
        let mut children = vec![parsed];
        while let Some(m) = children.pop() {
            let is_index = matches!(m.kind, crate::ManifestKind::Index(_));
            for reference in m.references() {
                let path = blob(&reference)?;
                let size = fs::metadata(&path).map_err(ImagesError::io(&path))?.len();
                if is_index {
                    let bytes = fs::read(&path).map_err(ImagesError::io(&path))?;
                    children.push(Manifest::parse(&bytes)?);
                }
                blobs.push(SourceBlob { digest: reference, size, path, manifest: is_index });
            }
        }
        // Children before the index that names them, blobs before the manifests.
        blobs.sort_by_key(|b| b.manifest);
        images.push(SourceImage { reference, manifest, blobs });
    }
    Ok(images)
}

/// A classic `docker save` archive: `manifest.json` lists per image its config file, its tags
/// and its (uncompressed) layer tars. Each becomes an OCI image manifest.
fn read_docker_archive(dir: &Path) -> Result<Vec<SourceImage>, ImagesError> {
    let listing = read_json(&dir.join("manifest.json"))?;
    let mut images = Vec::new();
    for item in listing.as_array().into_iter().flatten() {
        let file = |name: &str| -> Result<SourceBlob, ImagesError> {
            // Names come from the archive: keep them inside it.
            if name.split('/').any(|part| part == "..") || name.starts_with('/') {
                return Err(ImagesError::ManifestInvalid(format!("manifest.json names a file outside: {name}")));
            }
            let path = dir.join(name);
            let f = File::open(&path).map_err(ImagesError::io(&path))?;
            let (digest, size) = sha256_of(f).map_err(ImagesError::io(&path))?;
            Ok(SourceBlob { digest, size, path, manifest: false })
        };
        let config = file(item["Config"].as_str().unwrap_or(""))?;
        let layers: Vec<SourceBlob> = item["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| file(l.as_str().unwrap_or("")))
            .collect::<Result<_, _>>()?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.size},
            "layers": layers.iter().map(|l| json!({
                "mediaType": layer_media_type(&l.path), "digest": l.digest, "size": l.size,
            })).collect::<Vec<_>>(),
        }))
        .map_err(|e| ImagesError::ManifestInvalid(e.to_string()))?;
        let blobs: Vec<SourceBlob> = std::iter::once(config).chain(layers).collect();
        let tags: Vec<&str> = item["RepoTags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if tags.is_empty() {
            return Err(ImagesError::ManifestInvalid(
                "an image in manifest.json has no RepoTags to import it as".into(),
            ));
        }
        for tag in tags {
            images.push(SourceImage {
                reference: Reference::parse(tag)?,
                manifest: manifest.clone(),
                blobs: blobs.clone(),
            });
        }
    }
    Ok(images)
}

/// Docker writes layers as plain tars, some tools gzip them: tell by their first bytes.
fn layer_media_type(path: &Path) -> &'static str {
    let mut magic = [0u8; 2];
    let gzip = File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && magic == [0x1f, 0x8b];
    if gzip {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_save_archive_becomes_an_oci_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("abc")).expect("dir");
        fs::write(dir.path().join("abc/layer.tar"), vec![0u8; 1024]).expect("layer");
        fs::write(
            dir.path().join("cfg.json"),
            br#"{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .expect("config");
        fs::write(
            dir.path().join("manifest.json"),
            br#"[{"Config":"cfg.json","RepoTags":["docker.io/library/nav:2"],"Layers":["abc/layer.tar"]}]"#,
        )
        .expect("manifest");
        let source = read(dir.path(), None).expect("read");
        let image = &source.images[0];
        assert_eq!(image.reference.to_string(), "nav:2");
        let manifest = Manifest::parse(&image.manifest).expect("valid manifest");
        assert_eq!(manifest.references().len(), 2);
        assert_eq!(image.blobs.len(), 2);
        fs::write(
            dir.path().join("manifest.json"),
            br#"[{"Config":"../../etc/passwd","RepoTags":["x:1"],"Layers":[]}]"#,
        )
        .expect("manifest");
        assert!(read(dir.path(), None).is_err());
    }

    #[test]
    fn layout_names_fall_back_to_the_given_name() {
        assert_eq!(layout_reference(Some("1.0"), "nav").expect("ok").to_string(), "nav:1.0");
        assert_eq!(layout_reference(Some("docker.io/library/bb:2"), "nav").expect("ok").to_string(), "bb:2");
        assert_eq!(layout_reference(None, "nav:3").expect("ok").to_string(), "nav:3");
        assert_eq!(layout_reference(Some("latest"), "apps/nav:3").expect("ok").to_string(), "apps/nav:3");
    }

    #[test]
    fn unknown_sources_are_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read(dir.path(), Some("x")).err().expect("refused");
        assert!(err.to_string().contains("neither oci-layout"), "{err}");
        let file = dir.path().join("junk.tar");
        fs::write(&file, b"this is not a tar").expect("write");
        assert!(read(&file, Some("x")).is_err());
    }
}
