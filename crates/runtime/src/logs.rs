//! Container logs: stdout and stderr lines with RFC 3339 timestamps, in a file that is rotated
//! to `<file>.1` when it reaches its size limit, so a chatty workload never fills the disk.

use crate::RuntimeError;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// The log file of one container.
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    file: tokio::fs::File,
    written: u64,
}

impl LogFile {
    pub async fn open(path: &Path, max_bytes: u64) -> Result<LogFile, RuntimeError> {
        let error = |e: std::io::Error| RuntimeError::Log { path: path.to_path_buf(), cause: e.to_string() };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(error)?;
        }
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await.map_err(error)?;
        let written = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        Ok(LogFile { path: path.to_path_buf(), max_bytes: max_bytes.max(1024), file, written })
    }

    /// Appends one line as `<timestamp> <stream> <text>` (the CRI log format).
    pub async fn append(&mut self, stream: &str, line: &str) -> std::io::Result<()> {
        let record = format!("{} {stream} F {line}\n", timestamp());
        if self.written + record.len() as u64 > self.max_bytes {
            self.rotate().await?;
        }
        self.file.write_all(record.as_bytes()).await?;
        // Readers (`kubectl logs -f`) see each line as soon as it is written.
        self.file.flush().await?;
        self.written += record.len() as u64;
        Ok(())
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush().await?;
        let rotated = self.path.with_extension("log.1");
        tokio::fs::rename(&self.path, &rotated).await?;
        self.file = tokio::fs::OpenOptions::new().create(true).append(true).open(&self.path).await?;
        self.written = 0;
        Ok(())
    }
}

/// Copies a child's stream into the log, line by line, until it closes.
pub(crate) async fn pump(
    stream: impl AsyncRead + Unpin,
    name: &'static str,
    log: std::sync::Arc<tokio::sync::Mutex<LogFile>>,
    attached: tokio::sync::broadcast::Sender<(bool, Vec<u8>)>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Err(e) = log.lock().await.append(name, &line).await {
            tracing::warn!(error = %e, "cannot write a container log line");
        }
        // Whoever is attached gets the line too (nobody: nothing to do).
        if attached.receiver_count() > 0 {
            let _ = attached.send((name == "stderr", format!("{line}\n").into_bytes()));
        }
    }
}

/// Now as RFC 3339 with nanoseconds, computed without a date library.
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_file_rotates_at_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let mut log = LogFile::open(&path, 1024).await.expect("opens");
        for i in 0..40 {
            log.append("stdout", &format!("line {i} {}", "x".repeat(20))).await.expect("writes");
        }
        let current = std::fs::read_to_string(&path).expect("current");
        let rotated = std::fs::read_to_string(path.with_extension("log.1")).expect("rotated");
        assert!(current.len() <= 1024 && rotated.len() <= 1024);
        assert!(current.contains("line 39"));
        assert!(current.lines().all(|l| l.contains(" stdout F line ")));
    }

    #[test]
    fn timestamp_is_rfc3339() {
        let t = timestamp();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T");
    }
}
