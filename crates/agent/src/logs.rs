//! Container logs for `kubectl logs`: the API server fetches them from the agent's endpoint
//! (`GET /containerLogs/{namespace}/{pod}/{container}` with `tailLines`, `timestamps`,
//! `follow`, `sinceSeconds`, `previous`), as it does from a kubelet.
//!
//! Logs are stored per container start (`<restart>.log`, rotated to `.log.1`) in the CRI
//! format `<timestamp> <stream> F <text>`; this turns them back into the text the workload
//! wrote.

use crate::endpoint::reply;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Answers one log request.
pub async fn container_logs(
    stream: &mut (impl AsyncWrite + Unpin),
    data_dir: &Path,
    [namespace, pod, container]: [&str; 3],
    query: &HashMap<&str, &str>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let flag = |k: &str| matches!(query.get(k), Some(&("true" | "1" | "True")));
    let Some(files) = log_files(data_dir, namespace, pod, container, flag("previous")) else {
        let what = if flag("previous") { "previous terminated container" } else { "container" };
        return reply(
            stream,
            "404 Not Found",
            "text/plain",
            &format!("{what} {container:?} in pod {namespace}/{pod} has no logs on this node\n"),
        )
        .await;
    };
    let since = query.get("sinceSeconds").and_then(|s| s.parse::<i64>().ok()).map(api::meta::nanos_timestamp_ago);
    let tail = query.get("tailLines").and_then(|s| s.parse::<usize>().ok());
    let timestamps = flag("timestamps");
    let mut lines: Vec<String> = Vec::new();
    for file in &files {
        let text = tokio::fs::read_to_string(file).await.unwrap_or_default();
        lines.extend(text.lines().filter_map(|l| render(l, timestamps, since.as_deref())));
    }
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").await?;
    for line in &lines {
        stream.write_all(line.as_bytes()).await?;
    }
    if !flag("follow") {
        return Ok(());
    }
    // Follow the current file: poll for growth until the client leaves, the container's log
    // directory disappears (pod deleted) or the agent stops.
    let Some(current) = files.last().cloned() else { return Ok(()) };
    let mut offset = tokio::fs::metadata(&current).await.map(|m| m.len()).unwrap_or(0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        let Ok(meta) = tokio::fs::metadata(&current).await else { return Ok(()) };
        if meta.len() < offset {
            offset = 0; // rotated
        }
        if meta.len() == offset {
            continue;
        }
        let mut file = tokio::fs::File::open(&current).await?;
        let mut fresh = Vec::new();
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(offset)).await?;
        file.read_to_end(&mut fresh).await?;
        offset += fresh.len() as u64;
        for line in String::from_utf8_lossy(&fresh).lines() {
            if let Some(text) = render(line, timestamps, None) {
                stream.write_all(text.as_bytes()).await?;
            }
        }
    }
}

/// A CRI log line as the workload wrote it (with its timestamp if asked), if it is not older
/// than `since`.
fn render(line: &str, timestamps: bool, since: Option<&str>) -> Option<String> {
    let mut fields = line.splitn(4, ' ');
    let (ts, _stream, _tag, text) = (fields.next()?, fields.next()?, fields.next()?, fields.next().unwrap_or(""));
    if since.is_some_and(|s| ts < s) {
        return None;
    }
    Some(if timestamps { format!("{ts} {text}\n") } else { format!("{text}\n") })
}

/// The log files of a container, oldest first: the latest start's (or with `previous`, the
/// last one that ended, as in `lastState`), its rotated part first. A start that ended has an
/// `<n>.exited` marker: while a container waits in back-off, its latest start is the previous.
pub fn log_files(data_dir: &Path, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<Vec<PathBuf>> {
    let prefix = format!("{namespace}_{pod}_");
    let pod_dir = std::fs::read_dir(data_dir.join("pods"))
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?
        .path();
    let dir = pod_dir.join(container);
    let mut starts: Vec<u32> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".log").and_then(|n| n.parse().ok()))
        .collect();
    starts.sort_unstable();
    let latest = starts.last().copied()?;
    let chosen = match previous {
        false => latest,
        true if dir.join(format!("{latest}.exited")).exists() => latest,
        true => starts.len().checked_sub(2).map(|i| starts[i])?,
    };
    let current = dir.join(format!("{chosen}.log"));
    let rotated = current.with_extension("log.1");
    Some([rotated, current].into_iter().filter(|p| p.exists()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_strips_the_cri_prefix_and_filters_by_time() {
        let line = "2026-01-01T00:00:00.000000000Z stdout F hello world";
        assert_eq!(render(line, false, None).as_deref(), Some("hello world\n"));
        assert_eq!(render(line, true, None).as_deref(), Some("2026-01-01T00:00:00.000000000Z hello world\n"));
        assert_eq!(render(line, false, Some("2026-01-02T00:00:00.000000000Z")), None);
        assert_eq!(render("garbage", false, None), None);
    }

    #[test]
    fn log_files_pick_current_and_previous_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = dir.path().join("pods/default_web_uid1/app");
        std::fs::create_dir_all(&c).expect("dirs");
        for f in ["0.log", "1.log", "1.log.1", "2.log"] {
            std::fs::write(c.join(f), "x").expect("write");
        }
        let current = log_files(dir.path(), "default", "web", "app", false).expect("current");
        assert_eq!(current, vec![c.join("2.log")]);
        let previous = log_files(dir.path(), "default", "web", "app", true).expect("previous");
        assert_eq!(previous, vec![c.join("1.log.1"), c.join("1.log")]);
        // In back-off the latest start has ended: it is the previous one.
        std::fs::write(c.join("2.exited"), "").expect("marker");
        assert_eq!(log_files(dir.path(), "default", "web", "app", true).expect("previous"), vec![c.join("2.log")]);
        assert!(log_files(dir.path(), "default", "nope", "app", false).is_none());
    }
}
