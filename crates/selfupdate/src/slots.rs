//! The slots and the boot record, under `DATA_DIR/selfupdate/`:
//!
//! ```text
//! slot-a/axle      a complete Axle binary
//! slot-b/axle      the other one
//! boot.json        {"active": "a", "trial": {...} | null, "last_trial": {...} | null}
//! trial-b.json     what the trial process found in its self-check: {"healthy": bool, "reason"}
//! ```
//!
//! Every change is durable before anyone relies on it: a slot's binary is written to a
//! temporary file, synced and renamed; the boot record likewise, then its directory is
//! synced. So a power cut at any moment leaves either the old or the new record, and the
//! record only ever names a complete binary.

use crate::{io_error, SelfUpdateError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    #[serde(rename = "a")]
    A,
    #[serde(rename = "b")]
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn parse(name: &str) -> Option<Slot> {
        match name {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

/// A version on trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub slot: Slot,
    pub version: String,
    /// Starts so far (each start counts before it happens, so a power cut counts too).
    pub attempts: u32,
    pub max_attempts: u32,
    /// Seconds a start has to report healthy.
    pub deadline_seconds: u64,
    /// The update campaign that installs it.
    #[serde(default)]
    pub campaign: String,
    /// Why the last start failed.
    #[serde(default)]
    pub last_failure: String,
}

/// How the last trial ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialOutcome {
    pub slot: Slot,
    pub version: String,
    pub campaign: String,
    pub committed: bool,
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    pub active: Slot,
    /// The version in the active slot.
    pub active_version: String,
    #[serde(default)]
    pub trial: Option<Trial>,
    #[serde(default)]
    pub last_trial: Option<TrialOutcome>,
}

/// What a trial process found in its self-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub healthy: bool,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Slots {
    dir: PathBuf,
}

impl Slots {
    pub fn new(data_dir: &Path) -> Slots {
        Slots { dir: data_dir.join("selfupdate") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn binary(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("slot-{}", slot.name())).join("axle")
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("boot.json")
    }

    fn check_path(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("trial-{}.json", slot.name()))
    }

    /// The boot record, if the slots were set up.
    pub fn load(&self) -> Result<Option<BootRecord>, SelfUpdateError> {
        let path = self.record_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SelfUpdateError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    pub fn save(&self, record: &BootRecord) -> Result<(), SelfUpdateError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| SelfUpdateError::Invalid(e.to_string()))?;
        write_durably(&self.record_path(), &bytes, false)
    }

    /// Puts a complete binary into `slot` (durably; the slot's old binary stays until the
    /// rename).
    pub fn install(&self, slot: Slot, binary: &Path) -> Result<(), SelfUpdateError> {
        let bytes = std::fs::read(binary).map_err(io_error(binary))?;
        write_durably(&self.binary(slot), &bytes, true)
    }

    /// Sets the slots up from the running binary on first use: it becomes slot A, active.
    pub fn ensure(&self, running: &Path, version: &str) -> Result<BootRecord, SelfUpdateError> {
        if let Some(record) = self.load()? {
            return Ok(record);
        }
        self.install(Slot::A, running)?;
        let record = BootRecord { active: Slot::A, active_version: version.to_string(), trial: None, last_trial: None };
        self.save(&record)?;
        Ok(record)
    }

    /// Records a trial process's self-check result (read by the launcher).
    pub fn report_check(&self, slot: Slot, result: &CheckResult) -> Result<(), SelfUpdateError> {
        let bytes = serde_json::to_vec(result).map_err(|e| SelfUpdateError::Invalid(e.to_string()))?;
        write_durably(&self.check_path(slot), &bytes, false)
    }

    pub fn check(&self, slot: Slot) -> Option<CheckResult> {
        serde_json::from_slice(&std::fs::read(self.check_path(slot)).ok()?).ok()
    }

    pub fn clear_check(&self, slot: Slot) -> Result<(), SelfUpdateError> {
        let path = self.check_path(slot);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path)(e)),
            _ => Ok(()),
        }
    }
}

/// Replaces a file so that after a power cut it holds either the old or the new content:
/// temp file, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, bytes: &[u8], executable: bool) -> Result<(), SelfUpdateError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error(&tmp))?;
    }
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io_error(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_and_slots_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = Slots::new(dir.path());
        assert_eq!(slots.load().expect("load"), None);
        let exe = dir.path().join("exe");
        std::fs::write(&exe, b"binary v1").expect("write");
        let record = slots.ensure(&exe, "1.0.0").expect("ensure");
        assert_eq!(record.active, Slot::A);
        assert_eq!(std::fs::read(slots.binary(Slot::A)).expect("slot"), b"binary v1");
        let mut record = record;
        record.trial = Some(Trial {
            slot: Slot::B,
            version: "2.0.0".into(),
            attempts: 1,
            max_attempts: 2,
            deadline_seconds: 30,
            campaign: "c".into(),
            last_failure: String::new(),
        });
        slots.save(&record).expect("save");
        assert_eq!(Slots::new(dir.path()).load().expect("load"), Some(record));
        slots.report_check(Slot::B, &CheckResult { healthy: true, reason: String::new() }).expect("check");
        assert!(slots.check(Slot::B).is_some_and(|c| c.healthy));
        slots.clear_check(Slot::B).expect("clear");
        assert!(slots.check(Slot::B).is_none());
    }
}
