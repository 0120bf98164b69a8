//! Watch: a chunked stream of `{"type":…,"object":…}` lines, one per change, in order.
//!
//! A watch starts from the resourceVersion the client names (or from a snapshot of the current
//! objects, sent as ADDED events), then follows the store's change log. It never ends on its own
//! unless the client asked for `timeoutSeconds` or the server shuts down — kubectl treats a closed
//! stream as "done". A resourceVersion older than the change log yields an ERROR event with a
//! 410 `Expired` Status, which clients answer with a fresh list.

use crate::http::{stream_reply, Reply, Shape};
use crate::objects::{table, Ctx, Selectors};
use api::ApiError;
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;
use store::{EventType, StoreError};
use tokio::sync::mpsc;

/// How often a watch that asked for bookmarks gets one while nothing changes.
const BOOKMARK_PERIOD: Duration = Duration::from_secs(30);

pub async fn serve(ctx: Ctx) -> Result<Reply, ApiError> {
    let selectors = Selectors::from_query(&ctx.query)?;
    let rv_param = ctx.query.get("resourceVersion").unwrap_or("").to_string();
    let send_initial = ctx.query.get("sendInitialEvents").map(|_| ctx.query.flag("sendInitialEvents"));
    if send_initial == Some(true) && ctx.query.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![api::Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let timeout = ctx.query.number("timeoutSeconds")?.filter(|t| *t > 0).map(|t| Duration::from_secs(t as u64));
    let prefix = ctx.prefix();
    let snapshot = rv_param.is_empty() || rv_param == "0" || send_initial == Some(true);
    let (initial, start_rv) = if snapshot {
        let page =
            ctx.state.store.list(&prefix, None, 0, &|o| selectors.matches(o)).map_err(crate::admission::store_error)?;
        (page.items, page.resource_version)
    } else {
        let rv = rv_param
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}")))?;
        (Vec::new(), rv)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _watching = ctx.state.metrics.watching(&ctx.rt.group, &ctx.rt.plural);
        let mut stream = Stream { ctx, tx, selectors, prefix, first_table: true };
        stream.run(initial, start_rv, send_initial == Some(true), bookmarks, timeout).await;
    });
    Ok(stream_reply("application/json", rx))
}

struct Stream {
    ctx: Ctx,
    tx: mpsc::Sender<Bytes>,
    selectors: Selectors,
    prefix: String,
    first_table: bool,
}

impl Stream {
    async fn run(
        &mut self,
        initial: Vec<Value>,
        start_rv: u64,
        initial_end_bookmark: bool,
        bookmarks: bool,
        timeout: Option<Duration>,
    ) {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut notify = self.ctx.state.store.subscribe();
        let mut shutdown = self.ctx.state.shutdown.clone();
        for obj in initial {
            if !self.send("ADDED", &obj).await {
                return;
            }
        }
        if initial_end_bookmark && !self.bookmark(start_rv, true).await {
            return;
        }
        let mut cursor = start_rv;
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_PERIOD;
        loop {
            notify.borrow_and_update();
            match self.ctx.state.store.events_after(cursor) {
                Ok(events) => {
                    for event in events {
                        cursor = event.resource_version;
                        if !event.key.starts_with(&self.prefix) || !self.selectors.matches(&event.object) {
                            continue;
                        }
                        let kind = match event.kind {
                            EventType::Added => "ADDED",
                            EventType::Modified => "MODIFIED",
                            EventType::Deleted => "DELETED",
                        };
                        if !self.send(kind, &event.object).await {
                            return;
                        }
                    }
                }
                Err(StoreError::Expired { requested, oldest }) => {
                    let status =
                        ApiError::gone(format!("too old resource version: {requested} ({oldest})")).to_status();
                    self.line("ERROR", &status).await;
                    return;
                }
                Err(e) => {
                    let status = ApiError::internal(format!("storage error: {e}")).to_status();
                    self.line("ERROR", &status).await;
                    return;
                }
            }
            let sleep_until = match deadline {
                Some(d) if !bookmarks || d < next_bookmark => d,
                _ if bookmarks => next_bookmark,
                _ => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                changed = notify.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep_until(sleep_until) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return;
                    }
                    if bookmarks {
                        next_bookmark = tokio::time::Instant::now() + BOOKMARK_PERIOD;
                        if !self.bookmark(cursor.max(start_rv), false).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn send(&mut self, kind: &str, obj: &Value) -> bool {
        if self.ctx.shape == Shape::Object {
            return self.line(kind, obj).await;
        }
        let rv = obj["metadata"]["resourceVersion"].clone();
        let mut table = table(&self.ctx.rt, vec![obj.clone()], &self.ctx.query, rv, None);
        if !self.first_table {
            // Column definitions travel with the first event only, as upstream does.
            table["columnDefinitions"] = json!([]);
        }
        self.first_table = false;
        self.line(kind, &table).await
    }

    async fn bookmark(&mut self, rv: u64, initial_events_end: bool) -> bool {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.ctx.rt.kind, "apiVersion": self.ctx.rt.api_version(), "metadata": metadata});
        self.line("BOOKMARK", &object).await
    }

    /// Sends one event line, `type` first as Kubernetes writes it; the object is serialized
    /// straight from the stored value, never copied.
    async fn line(&mut self, kind: &str, object: &Value) -> bool {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(b"{\"type\":\"");
        bytes.extend_from_slice(kind.as_bytes());
        bytes.extend_from_slice(b"\",\"object\":");
        if serde_json::to_writer(&mut bytes, object).is_err() {
            return false;
        }
        bytes.extend_from_slice(b"}\n");
        self.tx.send(Bytes::from(bytes)).await.is_ok()
    }
}
