//! The car's registry (OCI Distribution API at `/v2/`), as Axle's CLI pushes to it and agents
//! pull from it. Blobs move in bounded chunks: nothing the size of a layer is held in memory.

use crate::{error_chain, Client, ClientError};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use std::io::{Read, Write};

/// Chunk size of blob uploads (`PATCH` requests).
const UPLOAD_CHUNK: usize = 8 << 20;

/// What a manifest request returns.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// `Docker-Content-Digest` as the registry sent it (the caller verifies the bytes).
    pub digest: Option<String>,
}

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A registry error reply (`{"errors": [{"code", "message"}]}`) as a client error.
fn registry_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let parsed: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let first = &parsed["errors"][0];
    ClientError::Api {
        code: status.as_u16(),
        reason: first["code"].as_str().unwrap_or(status.canonical_reason().unwrap_or("")).to_string(),
        message: first["message"].as_str().map(String::from).unwrap_or_else(|| String::from_utf8_lossy(bytes).into()),
    }
}

impl Client {
    /// Pushes an image's blobs and its manifest, by digest only (a tag is a separate, later
    /// step: an update stages content before it moves any tag). Blobs the registry has are
    /// skipped. Returns the manifest digest.
    pub async fn push_image_content(&self, image: &images::import::SourceImage) -> Result<String, ClientError> {
        let repository = &image.reference.repository;
        let read = |path: &std::path::Path| {
            std::fs::File::open(path).map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))
        };
        for blob in &image.blobs {
            if blob.manifest {
                // A child of an index: pushed as a manifest, by digest.
                let mut bytes = Vec::new();
                read(&blob.path)?
                    .read_to_end(&mut bytes)
                    .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", blob.path.display())))?;
                let parsed = images::Manifest::parse(&bytes).map_err(|e| ClientError::Usage(e.to_string()))?;
                self.push_manifest(repository, &blob.digest, &bytes, &parsed.media_type).await?;
            } else if !self.blob_exists(repository, &blob.digest).await? {
                self.push_blob(repository, &blob.digest, read(&blob.path)?).await?;
            }
        }
        let manifest = images::Manifest::parse(&image.manifest).map_err(|e| ClientError::Usage(e.to_string()))?;
        self.push_manifest(repository, &manifest.digest, &image.manifest, &manifest.media_type).await?;
        Ok(manifest.digest)
    }

    /// Pushes an image and tags it as its reference names (`latest` without a tag).
    pub async fn push_image(&self, image: &images::import::SourceImage) -> Result<String, ClientError> {
        let digest = self.push_image_content(image).await?;
        let manifest = images::Manifest::parse(&image.manifest).map_err(|e| ClientError::Usage(e.to_string()))?;
        let tag = image.reference.tag.as_deref().unwrap_or("latest");
        self.push_manifest(&image.reference.repository, tag, &image.manifest, &manifest.media_type).await?;
        Ok(digest)
    }

    async fn registry_call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Vec<u8>), ClientError> {
        let content_type = body.as_ref().map(|_| ("Content-Type", "application/octet-stream"));
        let response = self.send_with_headers(method, path, headers, content_type, body).await?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|e| ClientError::Protocol(error_chain(&e)))?.to_bytes();
        if !parts.status.is_success() {
            return Err(registry_error(parts.status, &bytes));
        }
        Ok((parts.status, parts.headers, bytes.to_vec()))
    }

    /// Whether the registry has a blob.
    pub async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, ClientError> {
        match self.registry_call(Method::HEAD, &format!("/v2/{repository}/blobs/{digest}"), &[], None).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads a blob from a reader in chunks (`POST`, `PATCH`…, `PUT ?digest=`); the registry
    /// verifies the digest before the blob exists.
    pub async fn push_blob(&self, repository: &str, digest: &str, mut content: impl Read) -> Result<(), ClientError> {
        let (_, headers, _) =
            self.registry_call(Method::POST, &format!("/v2/{repository}/blobs/uploads/"), &[], None).await?;
        let mut location = location(&headers)?;
        let mut offset = 0u64;
        let mut chunk = vec![0u8; UPLOAD_CHUNK];
        loop {
            let n = read_full(&mut content, &mut chunk)
                .map_err(|e| ClientError::Usage(format!("cannot read blob {digest}: {e}")))?;
            if n == 0 {
                break;
            }
            let range = format!("{offset}-{}", offset + n as u64 - 1);
            let (_, headers, _) = self
                .registry_call(Method::PATCH, &location, &[("Content-Range", &range)], Some(chunk[..n].to_vec()))
                .await?;
            location = location_or(&headers, location);
            offset += n as u64;
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        self.registry_call(Method::PUT, &format!("{location}{sep}digest={digest}"), &[], None).await?;
        Ok(())
    }

    /// Stores a manifest under `repository:reference`.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, ClientError> {
        let response = self
            .send_with_headers(
                Method::PUT,
                &format!("/v2/{repository}/manifests/{reference}"),
                &[],
                Some(("Content-Type", media_type)),
                Some(bytes.to_vec()),
            )
            .await?;
        let (parts, body) = response.into_parts();
        let reply = body.collect().await.map_err(|e| ClientError::Protocol(error_chain(&e)))?.to_bytes();
        if !parts.status.is_success() {
            return Err(registry_error(parts.status, &reply));
        }
        Ok(header(&parts.headers, "Docker-Content-Digest").unwrap_or_default())
    }

    pub async fn fetch_manifest(&self, repository: &str, reference: &str) -> Result<FetchedManifest, ClientError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let (_, headers, bytes) = self.registry_call(Method::GET, &path, &[("Accept", MANIFEST_ACCEPT)], None).await?;
        Ok(FetchedManifest {
            media_type: header(&headers, "Content-Type").unwrap_or_default(),
            digest: header(&headers, "Docker-Content-Digest"),
            bytes,
        })
    }

    /// Streams a blob into `sink` frame by frame; returns the bytes written.
    pub async fn fetch_blob(&self, repository: &str, digest: &str, sink: &mut impl Write) -> Result<u64, ClientError> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let response = self.send_with_headers(Method::GET, &path, &[], None, None).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await.map_err(|e| ClientError::Protocol(error_chain(&e)))?.to_bytes();
            return Err(registry_error(status, &bytes));
        }
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(format!("blob {digest}: {}", error_chain(&e))))?;
            if let Ok(data) = frame.into_data() {
                sink.write_all(&data).map_err(|e| ClientError::Usage(format!("cannot store blob {digest}: {e}")))?;
                written += data.len() as u64;
            }
        }
        Ok(written)
    }
}

fn header(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

/// The upload location a registry answered with, as a path on the same server.
fn location(headers: &hyper::HeaderMap) -> Result<String, ClientError> {
    let raw = header(headers, "Location")
        .ok_or_else(|| ClientError::Protocol("the registry started an upload without a Location".into()))?;
    Ok(path_of(&raw))
}

fn location_or(headers: &hyper::HeaderMap, current: String) -> String {
    header(headers, "Location").map(|l| path_of(&l)).unwrap_or(current)
}

/// `http://host:port/v2/…` → `/v2/…` (registries may answer with absolute URLs).
fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".into()),
        None => location.to_string(),
    }
}

/// Reads until `buffer` is full or the reader ends.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations_become_paths() {
        assert_eq!(path_of("http://10.0.0.1:6443/v2/nav/blobs/uploads/ab?x=1"), "/v2/nav/blobs/uploads/ab?x=1");
        assert_eq!(path_of("/v2/nav/blobs/uploads/ab"), "/v2/nav/blobs/uploads/ab");
    }
}
