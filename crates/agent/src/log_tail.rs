//! Workload logs for OpenTelemetry export: every period the containers' log files
//! (`pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`, CRI format) are read from where
//! the last pass stopped, and each whole line becomes a log record, its resource naming the
//! container (`k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name`,
//! `k8s.container.restart_count`) and its stream in `log.iostream`.
//!
//! Where each file was read up to is kept in `DATA_DIR/telemetry/tail.json`, so an agent
//! restart neither repeats nor skips lines (short of a power cut between a pass and the save).
//! A file rotated meanwhile (`.log` → `.log.1`) is finished from the rotated part first.

use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;
use telemetry::export::LogSink;
use telemetry::otlp::{Log, Severity};

/// Tails the container logs under `log_dir`; how far it got is kept beside them (in memory
/// when the logs are), so a restarted agent sends no line twice.
pub async fn run(log_dir: PathBuf, sink: LogSink, period: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let state_file = log_dir.join("telemetry").join("tail.json");
    let mut offsets: BTreeMap<PathBuf, u64> =
        std::fs::read(&state_file).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
    loop {
        let before = offsets.clone();
        let pods = log_dir.join("pods");
        let paths = tokio::task::spawn_blocking(move || current_logs(&pods)).await.unwrap_or_default();
        offsets.retain(|path, _| paths.contains(path));
        for path in paths {
            let offset = offsets.entry(path.clone()).or_insert(0);
            let Some(container) = Container::of(&path) else { continue };
            *offset = read_new_lines(&path, *offset, |line| {
                if let Some(log) = container.record(line) {
                    sink.push(log);
                }
            });
        }
        if offsets != before {
            save(&state_file, &offsets);
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The current log file of every container start on the node.
fn current_logs(pods: &Path) -> Vec<PathBuf> {
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok).map(|e| e.path()).collect()
    };
    let mut logs: Vec<PathBuf> = dirs(pods)
        .iter()
        .flat_map(|pod| dirs(pod))
        .flat_map(|container| dirs(&container))
        .filter(|f| f.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

/// Calls `each` for every whole line past `offset`, the rotated part first if the file was
/// rotated since; returns the new offset.
fn read_new_lines(path: &Path, offset: u64, mut each: impl FnMut(&str)) -> u64 {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut offset = offset;
    if size < offset {
        let rotated = path.with_extension("log.1");
        read_from(&rotated, offset, &mut each);
        offset = 0;
    }
    offset + read_from(path, offset, &mut each)
}

/// The whole lines from `offset`; returns the bytes consumed (up to the last newline).
fn read_from(path: &Path, offset: u64, each: &mut impl FnMut(&str)) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else { return 0 };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return 0;
    }
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return 0 };
    for line in String::from_utf8_lossy(&bytes[..end]).lines() {
        each(line);
    }
    end as u64 + 1
}

fn save(path: &Path, offsets: &BTreeMap<PathBuf, u64>) {
    let tmp = path.with_extension("json.tmp");
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, json!(offsets).to_string()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::debug!(error = %e, "cannot save where the log export stands");
    }
}

/// Whose log a file is, as resource attributes.
struct Container {
    resource: Vec<(String, String)>,
}

impl Container {
    fn of(path: &Path) -> Option<Container> {
        let restart = path.file_stem()?.to_str()?;
        let container_dir = path.parent()?;
        let container = container_dir.file_name()?.to_str()?;
        let pod_dir = container_dir.parent()?.file_name()?.to_str()?;
        let mut parts = pod_dir.splitn(3, '_');
        let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
        let pairs = [
            ("k8s.namespace.name", namespace),
            ("k8s.pod.name", pod),
            ("k8s.pod.uid", uid),
            ("k8s.container.name", container),
            ("k8s.container.restart_count", restart),
        ];
        Some(Container { resource: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() })
    }

    /// A CRI line (`<time> <stream> <tag> <text>`) as a record.
    fn record(&self, line: &str) -> Option<Log> {
        let mut fields = line.splitn(4, ' ');
        let (time, stream, _tag, text) = (fields.next()?, fields.next()?, fields.next()?, fields.next().unwrap_or(""));
        let nanos = api::meta::parse_time(time)?.timestamp_nanos_opt()?;
        Some(Log {
            time_unix_nano: u64::try_from(nanos).ok()?,
            severity: Severity::Unspecified,
            body: text.to_string(),
            attributes: vec![("log.iostream".into(), stream.to_string())],
            resource: self.resource.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_once_across_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("pods/car_nav_u1/app/0.log");
        std::fs::create_dir_all(log.parent().expect("parent")).expect("dirs");
        let line = |n: u32| format!("2026-01-01T00:00:00.{n:09}Z stdout F line {n}\n");
        std::fs::write(&log, format!("{}{}partial", line(1), line(2))).expect("write");
        let container = Container::of(&log).expect("container");
        let mut seen = Vec::new();
        let mut collect = |l: &str| seen.push(container.record(l).expect("record").body);
        let offset = read_new_lines(&log, 0, &mut collect);
        // Rotation: the rest of the old file (with the partial line finished) moves to .log.1.
        std::fs::write(log.with_extension("log.1"), format!("{}{}{}", line(1), line(2), line(3))).expect("rotate");
        std::fs::write(&log, line(4)).expect("new");
        let offset = read_new_lines(&log, offset, &mut collect);
        let again = read_new_lines(&log, offset, &mut collect);
        assert_eq!(offset, again);
        assert_eq!(seen, vec!["line 1", "line 2", "line 3", "line 4"]);
        assert_eq!(current_logs(&dir.path().join("pods")), vec![log.clone()]);
        let resource = container.resource;
        assert!(resource.contains(&("k8s.pod.name".into(), "nav".into())));
        assert!(resource.contains(&("k8s.container.restart_count".into(), "0".into())));
    }
}
