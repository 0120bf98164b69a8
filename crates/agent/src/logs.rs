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
    log_dir: &Path,
    [namespace, pod, container]: [&str; 3],
    query: &HashMap<&str, &str>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let flag = |k: &str| matches!(query.get(k), Some(&("true" | "1" | "True")));
    let Some(files) = log_files(log_dir, namespace, pod, container, flag("previous")) else {
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

/// Where a node keeps its containers' logs. A node setting (`axle agent --log-storage`):
///
/// - `memory` (the default): in a directory on a RAM file system (`/dev/shm`), bounded per
///   container like on disk. Nothing reaches flash however chatty a workload is; the logs are
///   gone after a reboot (not after an agent restart). Logs that must outlive the car's power
///   go out through OpenTelemetry, whose buffer writes only while offline.
/// - `disk`: under the data directory; they survive a reboot, and every line costs flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStorage {
    Memory,
    Disk,
}

impl std::str::FromStr for LogStorage {
    type Err = String;

    fn from_str(s: &str) -> Result<LogStorage, String> {
        match s {
            "memory" => Ok(LogStorage::Memory),
            "disk" => Ok(LogStorage::Disk),
            other => Err(format!("log storage {other:?} is neither memory nor disk")),
        }
    }
}

/// The RAM file system memory logs go to.
const MEMORY_ROOT: &str = "/dev/shm";

impl LogStorage {
    /// The directory the logs of the node whose data directory is `data_dir` go to; for
    /// memory, one per data directory (several agents can share a machine), checked to be on
    /// a RAM file system.
    pub fn dir(self, data_dir: &Path) -> Result<PathBuf, String> {
        match self {
            LogStorage::Disk => Ok(data_dir.to_path_buf()),
            LogStorage::Memory => {
                let fstype = filesystem_type(Path::new(MEMORY_ROOT))
                    .ok_or_else(|| format!("{MEMORY_ROOT} is not mounted; use --log-storage disk"))?;
                if fstype != "tmpfs" && fstype != "ramfs" {
                    return Err(format!("{MEMORY_ROOT} is not in memory (it is {fstype}); use --log-storage disk"));
                }
                Ok(memory_dir(data_dir))
            }
        }
    }
}

/// The memory log directory of the node whose data directory is `data_dir`.
pub fn memory_dir(data_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // FNV-1a: stable across builds, so a new Axle finds the logs an older one wrote.
    let hash = absolute
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3));
    Path::new(MEMORY_ROOT).join(format!("axle-logs-{hash:016x}"))
}

/// The type of the file system `path` is on, from the longest mount point above it.
fn filesystem_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount_point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point).then(|| (mount_point.len(), fstype.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fstype)| fstype)
}

/// The log files of a container, oldest first: the latest start's (or with `previous`, the
/// last one that ended, as in `lastState`), its rotated part first. A start that ended has an
/// `<n>.exited` marker: while a container waits in back-off, its latest start is the previous.
pub fn log_files(log_dir: &Path, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<Vec<PathBuf>> {
    let prefix = format!("{namespace}_{pod}_");
    let pod_dir = std::fs::read_dir(log_dir.join("pods"))
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
    fn memory_logs_go_to_a_ram_file_system_one_directory_per_data_directory() {
        let a = LogStorage::Memory.dir(Path::new("/var/lib/axle/hpc-1")).expect("/dev/shm is a tmpfs here");
        let b = LogStorage::Memory.dir(Path::new("/var/lib/axle/hpc-2")).expect("tmpfs");
        assert!(a.starts_with("/dev/shm") && a != b);
        assert_eq!(a, memory_dir(Path::new("/var/lib/axle/hpc-1")), "stable");
        assert_eq!(LogStorage::Disk.dir(Path::new("/data")).expect("disk"), Path::new("/data"));
        assert!("flash".parse::<LogStorage>().is_err());
    }

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
