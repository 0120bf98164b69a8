//! `axle image …`: images into the car's registry and what it holds.

use anyhow::Context as _;
use client::Client;
use std::path::Path;

/// Pushes every image found in `path` (an OCI layout directory or tar, or a `docker save`
/// archive) to the registry; blobs it already has are skipped. Prints one line per image.
pub async fn import(client: &Client, path: &Path, name: Option<&str>) -> anyhow::Result<()> {
    let source = images::import::read(path, name).with_context(|| format!("cannot import {}", path.display()))?;
    for image in &source.images {
        let digest = client.push_image(image).await.with_context(|| format!("cannot push {}", image.reference))?;
        println!("{} imported ({digest})", image.reference);
    }
    Ok(())
}

/// `axle image list`: repository, tag and digest of every image in the registry.
pub async fn list(client: &Client) -> anyhow::Result<()> {
    let catalog = client.get("/v2/_catalog").await?;
    let mut rows = vec![["REPOSITORY".to_string(), "TAG".into(), "DIGEST".into()]];
    for repository in catalog["repositories"].as_array().into_iter().flatten().filter_map(|r| r.as_str()) {
        let tags = client.get(&format!("/v2/{repository}/tags/list")).await?;
        for tag in tags["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
            let manifest = client.fetch_manifest(repository, tag).await?;
            rows.push([repository.to_string(), tag.to_string(), manifest.digest.unwrap_or_default()]);
        }
    }
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0) + 3;
    let (w0, w1) = (width(0), width(1));
    for row in &rows {
        println!("{:w0$}{:w1$}{}", row[0], row[1], row[2]);
    }
    Ok(())
}
