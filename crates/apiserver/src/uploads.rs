//! `bundles/{name}/upload`: the byte stream of an offline update bundle, resumable by offset.
//!
//! A Bundle object (`axle.dev/v1alpha1`, created by the client with `spec.length`) names an
//! upload; its bytes go to `DATA_DIR/bundles/{name}.axb`. `GET` answers how many bytes are
//! there; `POST ?offset=N` appends a chunk that must start exactly there (a client whose link
//! broke asks, then resumes). Every chunk is fsynced before it is acknowledged. With the last
//! byte the Bundle's status becomes `Received`, which is the campaign controller's cue to verify
//! it. This is the API's only non-Kubernetes subresource: bundles are too large for an object.

use crate::http::json_reply;
use crate::objects::{load, update_object, Ctx};
use crate::Reply;
use api::ApiError;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

pub fn file_of(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.state.data_dir.join("bundles").join(format!("{name}.axb"))
}

fn received(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

pub async fn handle(ctx: &Ctx, name: &str, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let bundle = load(ctx, name)?;
    let length =
        bundle["spec"]["length"].as_u64().ok_or_else(|| ApiError::bad_request("the Bundle has no spec.length"))?;
    let path = file_of(ctx, name);
    let offset_reply = |offset: u64| json_reply(200, &json!({"offset": offset, "length": length}));
    match *req.method() {
        Method::GET => Ok(offset_reply(received(&path))),
        Method::POST | Method::PUT => {
            let phase = bundle["status"]["phase"].as_str().unwrap_or("Uploading");
            if phase != "Uploading" {
                let message = format!("bundle {name} is {phase}; its upload is closed");
                return Err(ApiError::conflict_with("axle.dev", "bundles", name, message, Vec::new()));
            }
            let offset: u64 = ctx
                .query
                .get("offset")
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| ApiError::bad_request("an upload chunk names its ?offset="))?;
            let have = received(&path);
            if offset != have {
                let message = format!("the upload of bundle {name} is at byte {have}, not {offset}: resume from there");
                return Err(ApiError::conflict_with("axle.dev", "bundles", name, message, Vec::new()));
            }
            let total = append(&path, offset, length, req.into_body()).await?;
            if total == length {
                let complete = update_object(ctx, name, Some("status".into()), move |old| {
                    let mut new = old.clone();
                    new["status"] = json!({"phase": "Received", "receivedBytes": total});
                    Ok(new)
                });
                complete.await?;
                crate::objects::after_write(ctx);
            }
            Ok(offset_reply(total))
        }
        _ => Err(ApiError::method_not_allowed("bundle uploads take GET (offset) and POST (a chunk)")),
    }
}

/// Appends a body at `offset`, never past `length`; a chunk that breaks off or overflows is
/// cut back so the file always ends at an acknowledged byte.
async fn append(path: &std::path::Path, offset: u64, length: u64, mut body: Incoming) -> Result<u64, ApiError> {
    let io_error = |e: std::io::Error| ApiError::internal(format!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io_error)?;
    let mut written = offset;
    let outcome: Result<(), ApiError> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            if written + data.len() as u64 > length {
                return Err(ApiError::bad_request(format!("the bundle is longer than its declared {length} bytes")));
            }
            file.write_all(&data).map_err(io_error)?;
            written += data.len() as u64;
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        let _ = file.set_len(offset);
        return Err(e);
    }
    file.sync_all().map_err(io_error)?;
    Ok(written)
}
