//! The car's own image registry: the OCI Distribution API (`/v2/`) over the content store,
//! so that `skopeo`, `axle image import` and the agents push and pull without the internet.
//!
//! Pull (manifests and blobs, GET and HEAD), push (monolithic `POST ?digest=`, chunked
//! `POST` + `PATCH`… + `PUT ?digest=`, cross-repository mount), tag listing, catalog and
//! manifest deletion, with the spec's error codes. Request bodies of blobs are streamed to
//! disk, never held in memory; a blob becomes visible only once its digest checks out.

use crate::http::{bytes_reply, stream_reply, Query, Reply};
use crate::State;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use images::{ContentStore, ImagesError};
use serde_json::json;
use std::io::{Read, Write};

/// Manifests are small; anything larger is refused before it is read.
const MAX_MANIFEST: usize = 4 << 20;

/// What a `/v2/…` path addresses.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Uploads(&'a str, Option<&'a str>),
}

fn target(rest: &str) -> Option<Target<'_>> {
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return Some(Target::Base);
    }
    if rest.trim_end_matches('/') == "_catalog" {
        return Some(Target::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Target::Tags(name));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads") {
        let id = id.trim_matches('/');
        return Some(Target::Uploads(name, (!id.is_empty()).then_some(id)));
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Some(Target::Manifest(name, reference));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Some(Target::Blob(name, digest));
    }
    None
}

/// A distribution-spec error reply.
fn error(status: u16, code: &str, message: impl std::fmt::Display) -> Reply {
    let body = json!({"errors": [{"code": code, "message": message.to_string(), "detail": null}]});
    with_api_version(bytes_reply(status, "application/json", serde_json::to_vec(&body).unwrap_or_default()))
}

fn store_error(e: ImagesError) -> Reply {
    match e {
        ImagesError::BlobUnknown(_) => error(404, "BLOB_UNKNOWN", e),
        ImagesError::ManifestUnknown(_) => error(404, "MANIFEST_UNKNOWN", e),
        ImagesError::InvalidDigest(_) | ImagesError::DigestMismatch { .. } => error(400, "DIGEST_INVALID", e),
        ImagesError::ManifestInvalid(_) => error(400, "MANIFEST_INVALID", e),
        ImagesError::UploadUnknown(_) => error(404, "BLOB_UPLOAD_UNKNOWN", e),
        ImagesError::InvalidReference { .. } => error(400, "NAME_INVALID", e),
        other => {
            tracing::warn!(error = %other, "registry storage error");
            error(500, "UNKNOWN", other)
        }
    }
}

fn with_api_version(mut reply: Reply) -> Reply {
    reply.headers_mut().insert("Docker-Distribution-API-Version", HeaderValue::from_static("registry/2.0"));
    reply
}

fn header(reply: &mut Reply, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        reply.headers_mut().insert(name, v);
    }
}

fn empty(status: u16) -> Reply {
    let mut reply = bytes_reply(status, "application/json", Bytes::new());
    reply.headers_mut().remove(CONTENT_TYPE);
    with_api_version(reply)
}

/// Serves one `/v2/…` request; `rest` is the path after `/v2`.
pub async fn handle(state: &State, req: Request<hyper::body::Incoming>, rest: &str) -> Reply {
    let store = &state.content;
    let method = req.method().clone();
    let Some(target) = target(rest) else {
        return error(404, "NAME_UNKNOWN", format!("no registry route for /v2{rest}"));
    };
    if let Target::Tags(name) | Target::Manifest(name, _) | Target::Blob(name, _) | Target::Uploads(name, _) = target {
        if let Err(e) = images::Reference::parse(name) {
            return store_error(e);
        }
    }
    let query = Query::parse(req.uri().query());
    match (method, target) {
        (Method::GET | Method::HEAD, Target::Base) => with_api_version(bytes_reply(200, "application/json", "{}")),
        (Method::GET, Target::Catalog) => match store.repositories() {
            Ok(repos) => json_reply(&json!({"repositories": paginate(repos, &query)})),
            Err(e) => store_error(e),
        },
        (Method::GET, Target::Tags(name)) => match store.tags(name) {
            Ok(tags) if tags.is_empty() => error(404, "NAME_UNKNOWN", format!("repository {name} is not known")),
            Ok(tags) => json_reply(&json!({"name": name, "tags": paginate(tags, &query)})),
            Err(e) => store_error(e),
        },
        (m @ (Method::GET | Method::HEAD), Target::Manifest(name, reference)) => {
            get_manifest(store, name, reference, m == Method::HEAD)
        }
        (Method::PUT, Target::Manifest(name, reference)) => put_manifest(store, req, name, reference).await,
        (Method::DELETE, Target::Manifest(name, reference)) => match store.delete_manifest(name, reference) {
            Ok(()) => empty(202),
            Err(e) => store_error(e),
        },
        (m @ (Method::GET | Method::HEAD), Target::Blob(_, digest)) => get_blob(store, digest, m == Method::HEAD),
        (Method::POST, Target::Uploads(name, None)) => start_upload(store, req, name, &query).await,
        (Method::PATCH, Target::Uploads(name, Some(id))) => patch_upload(store, req, name, id).await,
        (Method::PUT, Target::Uploads(name, Some(id))) => finish_upload(store, req, name, id, &query).await,
        (Method::GET, Target::Uploads(name, Some(id))) => match store.upload_size(id) {
            Ok(size) => upload_progress(204, name, id, size),
            Err(e) => store_error(e),
        },
        (Method::DELETE, Target::Uploads(_, Some(id))) => match store.upload_cancel(id) {
            Ok(()) => empty(204),
            Err(e) => store_error(e),
        },
        (method, _) => error(405, "UNSUPPORTED", format!("{method} is not supported here")),
    }
}

fn json_reply(value: &serde_json::Value) -> Reply {
    with_api_version(bytes_reply(200, "application/json", serde_json::to_vec(value).unwrap_or_default()))
}

/// `?n=` and `?last=` pagination of a sorted list.
fn paginate(items: Vec<String>, query: &Query) -> Vec<String> {
    let after = query.get("last").unwrap_or("");
    let n = query.get("n").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
    items.into_iter().filter(|i| i.as_str() > after).take(n).collect()
}

fn get_manifest(store: &ContentStore, name: &str, reference: &str, head: bool) -> Reply {
    let manifest = match store.resolve(name, reference) {
        Ok(m) => m,
        Err(e) => return store_error(e),
    };
    let bytes = match store.read_blob(&manifest.digest) {
        Ok(b) => b,
        Err(e) => return store_error(e),
    };
    let length = bytes.len();
    let mut reply = with_api_version(bytes_reply(200, "application/json", if head { Vec::new() } else { bytes }));
    header(&mut reply, "Content-Type", &manifest.media_type);
    header(&mut reply, "Docker-Content-Digest", &manifest.digest);
    header(&mut reply, "Content-Length", &length.to_string());
    reply
}

async fn put_manifest(store: &ContentStore, req: Request<hyper::body::Incoming>, name: &str, reference: &str) -> Reply {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_MANIFEST);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return error(400, "MANIFEST_INVALID", format!("cannot read the manifest: {e}")),
    };
    match store.put_manifest(name, reference, &bytes) {
        Ok(manifest) => {
            tracing::info!(repository = name, reference, digest = %manifest.digest, "image manifest stored");
            let mut reply = empty(201);
            header(&mut reply, "Location", &format!("/v2/{name}/manifests/{}", manifest.digest));
            header(&mut reply, "Docker-Content-Digest", &manifest.digest);
            reply
        }
        Err(ImagesError::BlobUnknown(digest)) => {
            error(400, "MANIFEST_BLOB_UNKNOWN", format!("the manifest references blob {digest}, which was not pushed"))
        }
        Err(e) => store_error(e),
    }
}

fn get_blob(store: &ContentStore, digest: &str, head: bool) -> Reply {
    let mut file = match store.open_blob(digest) {
        Ok(f) => f,
        Err(e) => return store_error(e),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reply = if head {
        with_api_version(bytes_reply(200, "application/octet-stream", Bytes::new()))
    } else {
        // Streamed in chunks from a blocking reader: a layer never sits in memory whole.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::task::spawn_blocking(move || {
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                match file.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(Bytes::copy_from_slice(&buffer[..n])).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        with_api_version(stream_reply("application/octet-stream", rx))
    };
    header(&mut reply, "Docker-Content-Digest", digest);
    header(&mut reply, "Content-Length", &size.to_string());
    reply
}

fn upload_progress(status: u16, name: &str, id: &str, size: u64) -> Reply {
    let mut reply = empty(status);
    header(&mut reply, "Location", &format!("/v2/{name}/blobs/uploads/{id}"));
    header(&mut reply, "Docker-Upload-UUID", id);
    // An empty upload has no byte range; "0-0" is what registries send for it.
    header(&mut reply, "Range", &format!("0-{}", size.saturating_sub(1)));
    reply
}

fn blob_created(name: &str, digest: &str) -> Reply {
    let mut reply = empty(201);
    header(&mut reply, "Location", &format!("/v2/{name}/blobs/{digest}"));
    header(&mut reply, "Docker-Content-Digest", digest);
    reply
}

async fn start_upload(store: &ContentStore, req: Request<hyper::body::Incoming>, name: &str, query: &Query) -> Reply {
    if let Some(digest) = query.get("mount") {
        if store.blob_size(digest).is_some() {
            return blob_created(name, digest);
        }
    }
    let id = match store.upload_start() {
        Ok(id) => id,
        Err(e) => return store_error(e),
    };
    match query.get("digest") {
        // Monolithic: the whole blob is this request's body.
        Some(digest) => {
            if let Err(reply) = append_body(store, &id, req.into_body()).await {
                let _ = store.upload_cancel(&id);
                return reply;
            }
            match store.upload_finish(&id, digest) {
                Ok(_) => blob_created(name, digest),
                Err(e) => store_error(e),
            }
        }
        None => upload_progress(202, name, &id, 0),
    }
}

async fn patch_upload(store: &ContentStore, req: Request<hyper::body::Incoming>, name: &str, id: &str) -> Reply {
    let size = match store.upload_size(id) {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    // A chunk must continue where the upload stands (Content-Range: <start>-<end>).
    let start = req
        .headers()
        .get("Content-Range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if start.is_some_and(|s| s != size) {
        let mut reply = upload_progress(416, name, id, size);
        *reply.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
        return reply;
    }
    if let Err(reply) = append_body(store, id, req.into_body()).await {
        return reply;
    }
    match store.upload_size(id) {
        Ok(size) => upload_progress(202, name, id, size),
        Err(e) => store_error(e),
    }
}

async fn finish_upload(
    store: &ContentStore,
    req: Request<hyper::body::Incoming>,
    name: &str,
    id: &str,
    query: &Query,
) -> Reply {
    let Some(digest) = query.get("digest").map(String::from) else {
        return error(400, "DIGEST_INVALID", "the final PUT of an upload needs ?digest=");
    };
    if let Err(reply) = append_body(store, id, req.into_body()).await {
        return reply;
    }
    match store.upload_finish(id, &digest) {
        Ok(_) => blob_created(name, &digest),
        Err(e) => store_error(e),
    }
}

/// Appends a request body to an upload, frame by frame.
async fn append_body(store: &ContentStore, id: &str, mut body: hyper::body::Incoming) -> Result<(), Reply> {
    let mut file = store.upload_append(id).map_err(store_error)?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error(400, "BLOB_UPLOAD_INVALID", format!("the upload broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            // Frames are small (tens of KiB): a blocking write is shorter than a thread hop.
            file.write_all(&data).map_err(|e| error(500, "UNKNOWN", format!("cannot store the upload: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_targets_with_slashes_in_names() {
        assert_eq!(target(""), Some(Target::Base));
        assert_eq!(target("/"), Some(Target::Base));
        assert_eq!(target("/_catalog"), Some(Target::Catalog));
        assert_eq!(target("/apps/nav/tags/list"), Some(Target::Tags("apps/nav")));
        assert_eq!(target("/apps/nav/manifests/2.1"), Some(Target::Manifest("apps/nav", "2.1")));
        assert_eq!(target("/nav/blobs/sha256:ab"), Some(Target::Blob("nav", "sha256:ab")));
        assert_eq!(target("/a/b/blobs/uploads/"), Some(Target::Uploads("a/b", None)));
        assert_eq!(target("/a/b/blobs/uploads/0f"), Some(Target::Uploads("a/b", Some("0f"))));
        assert_eq!(target("/nav/other"), None);
    }
}
