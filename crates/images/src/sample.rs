//! A small image made from this machine's own programs, so that `axle up` has a container
//! image to run on a fresh machine with no registry, no internet and no image tools.
//!
//! The image holds the named executables and the shared libraries `ldd` says they need (or
//! busybox alone, where a static one is installed), in one gzip layer, written as an OCI image
//! layout that [`crate::import::read`] takes like any other.

use crate::{sha256_of, ImagesError};
use serde_json::json;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Programs of the sample image (those present on this machine are taken).
const PROGRAMS: &[&str] = &["sh", "sleep", "date", "cat", "echo", "ls", "hostname", "id", "env", "uname"];

/// Writes the sample image as an OCI layout in `dir` (tag `tag`, for the OCI architecture
/// `arch` of this machine); returns the layout dir.
pub fn write_host_image(dir: &Path, tag: &str, arch: &str) -> Result<PathBuf, ImagesError> {
    let layout = dir.join("sample-image");
    let _ = fs::remove_dir_all(&layout);
    let blobs = layout.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(ImagesError::io(&blobs))?;
    let files = host_files();
    if files.is_empty() {
        return Err(ImagesError::UnknownFormat {
            path: "/bin".into(),
            why: "no shell found to build a sample image".into(),
        });
    }
    let layer_tmp = layout.join("layer.tmp");
    {
        let file = File::create(&layer_tmp).map_err(ImagesError::io(&layer_tmp))?;
        let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gzip);
        tar.follow_symlinks(true);
        for (inside, source) in &files {
            tar.append_path_with_name(source, inside).map_err(ImagesError::io(source))?;
        }
        // Programs find each other in /bin and /usr/bin alike; /tmp is where they may write.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o1777);
        header.set_size(0);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_data(&mut header, "tmp", std::io::empty()).map_err(ImagesError::io(&layer_tmp))?;
        let gzip = tar.into_inner().map_err(ImagesError::io(&layer_tmp))?;
        gzip.finish().and_then(|f| f.sync_all()).map_err(ImagesError::io(&layer_tmp))?;
    }
    let diff_id = {
        let file = File::open(&layer_tmp).map_err(ImagesError::io(&layer_tmp))?;
        sha256_of(flate2::read::GzDecoder::new(file)).map_err(ImagesError::io(&layer_tmp))?.0
    };
    let (layer_digest, layer_size) = {
        let file = File::open(&layer_tmp).map_err(ImagesError::io(&layer_tmp))?;
        sha256_of(file).map_err(ImagesError::io(&layer_tmp))?
    };
    let layer_path = blobs.join(crate::digest_hex(&layer_digest)?);
    fs::rename(&layer_tmp, &layer_path).map_err(ImagesError::io(&layer_path))?;
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let put = |bytes: Vec<u8>| -> Result<(String, u64), ImagesError> {
        let (digest, size) = sha256_of(&bytes[..]).map_err(ImagesError::io(&blobs))?;
        let path = blobs.join(crate::digest_hex(&digest)?);
        fs::write(&path, &bytes).map_err(ImagesError::io(&path))?;
        Ok((digest, size))
    };
    let (config_digest, config_size) = put(serde_json::to_vec(&config).unwrap_or_default())?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(serde_json::to_vec(&manifest).unwrap_or_default())?;
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    let write = |name: &str, bytes: &[u8]| -> Result<(), ImagesError> {
        let path = layout.join(name);
        File::create(&path).and_then(|mut f| f.write_all(bytes)).map_err(ImagesError::io(&path))
    };
    write("index.json", &serde_json::to_vec(&index).unwrap_or_default())?;
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(layout)
}

/// Writes a firmware image as an OCI layout in `dir` (tag `tag`): one layer, the firmware
/// bytes as they are (media type `application/vnd.axle.firmware.v1`), as the ECU gateway
/// expects. Returns the layout dir.
pub fn write_firmware_image(dir: &Path, tag: &str, firmware: &[u8]) -> Result<PathBuf, ImagesError> {
    let layout = dir.join(format!("firmware-{tag}"));
    let blobs = layout.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(ImagesError::io(&blobs))?;
    let put = |bytes: &[u8]| -> Result<(String, u64), ImagesError> {
        let (digest, size) = sha256_of(bytes).map_err(ImagesError::io(&blobs))?;
        let path = blobs.join(crate::digest_hex(&digest)?);
        fs::write(&path, bytes).map_err(ImagesError::io(&path))?;
        Ok((digest, size))
    };
    let (config, config_size) = put(br#"{"architecture":"ecu","os":"ecu","rootfs":{"type":"layers","diff_ids":[]}}"#)?;
    let (layer, layer_size) = put(firmware)?;
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.axle.firmware.v1", "digest": layer, "size": layer_size}]});
    let (manifest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap_or_default())?;
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    let write = |name: &str, bytes: &[u8]| -> Result<(), ImagesError> {
        let path = layout.join(name);
        fs::write(&path, bytes).map_err(ImagesError::io(&path))
    };
    write("index.json", &serde_json::to_vec(&index).unwrap_or_default())?;
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(layout)
}

/// (path inside the image, file on this machine): a static busybox and its applets if there
/// is one, else the programs and their libraries.
fn host_files() -> Vec<(PathBuf, PathBuf)> {
    let busybox = Path::new("/bin/busybox");
    if busybox.is_file() && needed_libraries(busybox).is_empty() {
        // Every applet is busybox itself under another name.
        return PROGRAMS
            .iter()
            .chain(["busybox", "httpd", "nc", "wget"].iter())
            .map(|p| (PathBuf::from("bin").join(p), busybox.to_path_buf()))
            .collect();
    }
    let mut files = Vec::new();
    let mut libraries = BTreeSet::new();
    for program in PROGRAMS {
        let Some(path) = ["/bin", "/usr/bin"].iter().map(|d| Path::new(d).join(program)).find(|p| p.is_file()) else {
            continue;
        };
        libraries.extend(needed_libraries(&path));
        files.push((PathBuf::from("bin").join(program), path));
    }
    for library in libraries {
        let inside = library.strip_prefix("/").unwrap_or(&library).to_path_buf();
        files.push((inside, library));
    }
    files
}

/// The shared libraries (and loader) an executable needs, as `ldd` lists them.
fn needed_libraries(executable: &Path) -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldd").arg(executable).output() else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_image_is_a_valid_layout_with_a_shell() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = write_host_image(dir.path(), "1.0", "amd64").expect("sample image");
        let source = crate::import::read(&layout, Some("axle/sample")).expect("importable");
        assert_eq!(source.images[0].reference.to_string(), "axle/sample:1.0");
        let store = crate::ContentStore::open(&dir.path().join("store")).expect("store");
        for blob in &source.images[0].blobs {
            let bytes = fs::read(&blob.path).expect("blob");
            store.put_blob(&bytes, Some(&blob.digest)).expect("digest matches");
        }
        let manifest = crate::Manifest::parse(&source.images[0].manifest).expect("manifest");
        let image = crate::unpack::rootfs(&store, &dir.path().join("rootfs"), &manifest).expect("unpacks");
        assert!(image.rootfs.join("bin/sh").is_file());
    }
}
