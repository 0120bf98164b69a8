//! Images and content in the car, without a network: the content store, image references,
//! import of images built elsewhere, and root filesystems unpacked from their layers.
//!
//! - [`ContentStore`]: an [OCI image layout] on disk (`oci-layout`, `index.json`,
//!   `blobs/sha256/…`). Every blob is verified against its digest before it becomes visible,
//!   written durably (fsync, rename, fsync of the directory), and garbage-collected once nothing
//!   tagged references it. The server's registry (`/v2/`) and every agent keep one; bundles and
//!   firmware share it later.
//! - [`Reference`]: `name[:tag][@sha256:…]`, normalized so that `docker.io/library/busybox` and
//!   `busybox` name the same image in the car.
//! - [`import`]: reads an OCI image layout (directory or tar, as `umoci` or `skopeo copy … oci:`
//!   write them) or a `docker save` archive into manifests plus the files of their blobs.
//! - [`unpack`]: applies an image's layers in order (gzip, zstd or plain tar, with whiteouts)
//!   into a root filesystem cached per image.
//!
//! No HTTP here: the API server serves the store, the agent pulls into its own.
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

pub mod import;
mod reference;
pub mod sample;
mod store;
pub mod unpack;

pub use reference::Reference;
pub use store::{BlobWriter, ContentStore, Manifest, ManifestKind};

use std::path::PathBuf;

/// Media types of the manifests Axle accepts (OCI and Docker schema 2).
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("invalid digest {0:?} (expected sha256:<64 hex digits>)")]
    InvalidDigest(String),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {0} is not in the content store")]
    BlobUnknown(String),
    #[error("manifest {0} is not in the content store")]
    ManifestUnknown(String),
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    #[error("invalid image reference {reference:?}: {why}")]
    InvalidReference { reference: String, why: String },
    #[error("upload {0} is unknown (never started, finished or cancelled)")]
    UploadUnknown(String),
    #[error("{path}: not an OCI image layout nor a docker-save archive: {why}")]
    UnknownFormat { path: PathBuf, why: String },
    #[error("layer {digest}: {cause}")]
    Layer { digest: String, cause: String },
}

impl ImagesError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImagesError {
        let path = path.into();
        move |cause| ImagesError::Io { path, cause }
    }
}

/// Checks `sha256:<64 lowercase hex>` and returns the hex part.
pub fn digest_hex(digest: &str) -> Result<&str, ImagesError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(hex)
        }
        _ => Err(ImagesError::InvalidDigest(digest.to_string())),
    }
}

/// Streams a reader through SHA-256: (`sha256:<hex>`, length).
pub fn sha256_of(mut reader: impl std::io::Read) -> std::io::Result<(String, u64)> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{:x}", hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&ok).ok(), Some("a".repeat(64).as_str()));
        for bad in ["sha256:abc", "md5:00", &format!("sha256:{}", "A".repeat(64)), "sha256:../../etc/passwd"] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
        let (digest, size) = sha256_of(&b"hello"[..]).expect("hash");
        assert_eq!(digest, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(size, 5);
    }
}
