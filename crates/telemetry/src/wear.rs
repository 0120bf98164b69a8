//! Storage writes as a budget: every place in a process that writes to storage counts what it
//! wrote here, by cause, and the process's `/metrics` shows it as
//! `axle_storage_bytes_written_total{component,reason}` (see `exposition::ProcessMetrics`).
//!
//! Bytes are the kernel's own count for the writing thread (`/proc/thread-self/io`
//! `write_bytes`, pages dirtied), taken around the write, so page granularity and metadata
//! blocks written on the thread's behalf are included; where the kernel does not say, the
//! bytes handed to `write` are counted. Axle's processes run one tokio thread, so a
//! synchronous write measured there is the write alone. Whatever a process wrote that no cause
//! claimed shows as `reason="other"`, so the causes always add up to `/proc/PID/io`.

use std::collections::BTreeMap;
use std::sync::Mutex;

static LEDGER: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// The calling thread's bytes sent to storage so far, as the kernel counts them.
pub fn thread_bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// Counts `bytes` written for `reason`.
pub fn add(reason: &'static str, bytes: u64) {
    if bytes == 0 {
        return;
    }
    if let Ok(mut ledger) = LEDGER.lock() {
        *ledger.entry(reason).or_default() += bytes;
    }
}

/// Runs `write` (synchronous storage writes on this thread) and counts what the kernel saw it
/// write for `reason`; `fallback` is counted where the kernel does not say.
pub fn measured<T>(reason: &'static str, fallback: u64, write: impl FnOnce() -> T) -> T {
    let before = thread_bytes_written();
    let out = write();
    let written = thread_bytes_written().zip(before).map_or(fallback, |(after, before)| after.saturating_sub(before));
    add(reason, written);
    out
}

/// Bytes written so far, by reason.
pub fn snapshot() -> BTreeMap<&'static str, u64> {
    LEDGER.lock().map(|l| l.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_measured_write_counts_the_pages_the_kernel_wrote() {
        // On the build's own disk: a tmpfs (often /tmp) writes nothing to storage.
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
        let dir = tempfile::tempdir_in(target).expect("tempdir");
        let path = dir.path().join("f");
        measured("test-file", 10, || {
            let mut f = std::fs::File::create(&path).expect("create");
            f.write_all(&[7u8; 10]).expect("write");
            f.sync_data().expect("sync");
        });
        let counted = snapshot().get("test-file").copied().unwrap_or(0);
        assert!(counted >= 4096, "a 10-byte write made durable costs at least a page: {counted}");
    }
}
