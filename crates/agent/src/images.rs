//! Images on this node: pulled from the car's registry into the node's own content store
//! (every blob verified against its digest), unpacked once into a rootfs cache, and resolved
//! from the local store when the server cannot be reached (edge autonomy).

use client::{Client, ClientError};
use images::unpack::UnpackedImage;
use images::{ContentStore, Manifest, Reference};
use std::path::PathBuf;
use std::sync::Arc;

/// Why an image cannot be had; the reason and message go into the container's waiting state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullError {
    /// `ErrImagePull` or `InvalidImageName`.
    pub reason: &'static str,
    pub message: String,
}

pub struct ImageCache {
    client: Arc<Client>,
    store: ContentStore,
    rootfs_dir: PathBuf,
    /// One pull at a time: layers are large, the link is shared and unpacking is per image.
    pulling: tokio::sync::Mutex<()>,
}

/// What a pod's container runs from.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub unpacked: UnpackedImage,
    /// `repository@sha256:…` of the manifest, as `imageID` in the container status.
    pub image_id: String,
}

impl ImageCache {
    pub fn open(client: Arc<Client>, data_dir: &std::path::Path) -> Result<ImageCache, images::ImagesError> {
        let store = ContentStore::open(&data_dir.join("content"))?;
        let rootfs_dir = data_dir.join("images").join("rootfs");
        std::fs::create_dir_all(&rootfs_dir)
            .map_err(|cause| images::ImagesError::Io { path: rootfs_dir.clone(), cause })?;
        Ok(ImageCache { client, store, rootfs_dir, pulling: tokio::sync::Mutex::new(()) })
    }

    /// The image named by a pod's `image:`, pulled and unpacked if needed.
    pub async fn ensure(&self, image: &str) -> Result<PulledImage, PullError> {
        let reference =
            Reference::parse(image).map_err(|e| PullError { reason: "InvalidImageName", message: e.to_string() })?;
        let _one_at_a_time = self.pulling.lock().await;
        let manifest = match self.pull(&reference).await {
            Ok(manifest) => manifest,
            // Offline: what was pulled before still runs.
            Err(PullFailure::Unreachable(why)) => {
                self.store.resolve(&reference.repository, reference.lookup()).map_err(|_| PullError {
                    reason: "ErrImagePull",
                    message: format!("{image} is not on this node and the registry cannot be reached: {why}"),
                })?
            }
            Err(PullFailure::Failed(message)) => return Err(PullError { reason: "ErrImagePull", message }),
        };
        let manifest = images::unpack::select_platform(&self.store, manifest, "linux", api::meta::go_arch())
            .map_err(|e| PullError { reason: "ErrImagePull", message: format!("{image}: {e}") })?;
        let image_id = format!("{}@{}", reference.repository, manifest.digest);
        let store_root = self.store.root().to_path_buf();
        let rootfs_dir = self.rootfs_dir.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            let store = ContentStore::open(&store_root)?;
            images::unpack::rootfs(&store, &rootfs_dir, &manifest)
        })
        .await
        .map_err(|e| PullError { reason: "ErrImagePull", message: e.to_string() })?
        .map_err(|e| PullError { reason: "ErrImagePull", message: format!("cannot unpack {image}: {e}") })?;
        Ok(PulledImage { unpacked, image_id })
    }

    /// Fetches the manifest (and, for an index, this platform's child) and every blob this
    /// node lacks, then records them locally (the tag last, once everything is there).
    async fn pull(&self, reference: &Reference) -> Result<Manifest, PullFailure> {
        let repository = &reference.repository;
        let (top, top_bytes) = self.fetch_manifest(repository, reference.lookup()).await?;
        if let Some(pinned) = &reference.digest {
            if &top.digest != pinned {
                return Err(PullFailure::Failed(format!("{reference}: the registry sent {} instead", top.digest)));
            }
        }
        let failed = |e: images::ImagesError| PullFailure::Failed(format!("{reference}: {e}"));
        let mut chain = Vec::new();
        if let Some(child) = images::unpack::child_for_platform(&top, "linux", api::meta::go_arch()).map_err(failed)? {
            let (manifest, bytes) = self.fetch_manifest(repository, &child).await?;
            chain.push((manifest.digest.clone(), manifest, bytes));
        }
        chain.push((reference.lookup().to_string(), top.clone(), top_bytes));
        for (tag, manifest, bytes) in &chain {
            if let images::ManifestKind::Image(_) = &manifest.kind {
                for digest in manifest.references() {
                    if self.store.blob_size(&digest).is_some() {
                        continue;
                    }
                    let mut writer = self.store.writer().map_err(failed)?;
                    self.client.fetch_blob(repository, &digest, &mut writer).await.map_err(PullFailure::from)?;
                    writer.commit(Some(&digest)).map_err(failed)?;
                }
            }
            self.store.put_manifest(repository, tag, bytes).map_err(failed)?;
        }
        tracing::info!(image = %reference, digest = %top.digest, "image pulled");
        Ok(top)
    }

    async fn fetch_manifest(&self, repository: &str, reference: &str) -> Result<(Manifest, Vec<u8>), PullFailure> {
        let fetched = self.client.fetch_manifest(repository, reference).await.map_err(PullFailure::from)?;
        // The digest is recomputed from the bytes: the registry's header is not trusted.
        let manifest = Manifest::parse(&fetched.bytes)
            .map_err(|e| PullFailure::Failed(format!("{repository}:{reference}: {e}")))?;
        if reference.starts_with("sha256:") && manifest.digest != reference {
            return Err(PullFailure::Failed(format!(
                "{repository}@{reference}: the registry sent {}",
                manifest.digest
            )));
        }
        Ok((manifest, fetched.bytes))
    }
}

enum PullFailure {
    Unreachable(String),
    Failed(String),
}

impl From<ClientError> for PullFailure {
    fn from(e: ClientError) -> PullFailure {
        match e {
            ClientError::Connect { .. } => PullFailure::Unreachable(e.to_string()),
            ClientError::Api { code: 404, .. } => {
                PullFailure::Failed(format!("not found in the car's registry ({e}); push it with `axle image import`"))
            }
            other => PullFailure::Failed(other.to_string()),
        }
    }
}
