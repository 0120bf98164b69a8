//! Rebuilding a damaged store from what can still be read of it (`axle server --recover`).
//!
//! A store that fails its checks (a flipped bit in redb, a damaged log segment) is refused at
//! open, never served as garbage. Recovery keeps the damaged files aside, untouched but for
//! redb's own repair, and writes a new store from every object and logged change that still
//! reads back whole: for each key the newest version found wins, so a log newer than the
//! database, or a database newer than what is left of the log, each give what they know. What
//! could not be read is named in the report, so the operator knows what to re-apply.

use crate::hub::decode_change;
use crate::recent::Slot;
use crate::seal::Codec;
use crate::wal::Wal;
use crate::{decode, log_dir, read_table, writer, Options, StoreError, META, OBJECTS};
use redb::{Database, ReadableDatabase, ReadableTable as _};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a recovery found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Where the damaged files were moved.
    pub kept_aside: Vec<PathBuf>,
    /// Objects in the new store.
    pub objects: usize,
    /// Objects read from the old database, and changes taken from its log over them.
    pub from_database: usize,
    pub from_log: usize,
    /// What could not be read: keys, log segments, the database as a whole.
    pub lost: Vec<String>,
    /// The new store's resourceVersion (the newest one found).
    pub resource_version: u64,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rebuilt the store with {} objects ({} read from the database, {} changes from its log) at resourceVersion {}",
            self.objects, self.from_database, self.from_log, self.resource_version
        )?;
        for aside in &self.kept_aside {
            write!(f, "\n  damaged files kept at {}", aside.display())?;
        }
        for lost in &self.lost {
            write!(f, "\n  could not read: {lost}")?;
        }
        Ok(())
    }
}

/// Moves the store at `path` (and its log) aside and writes a new one from what reads back
/// of them. Run with no store open on `path`.
pub fn recover(path: &Path, options: &Options) -> Result<Recovery, StoreError> {
    let codec = Codec::new(options.sealing.as_ref());
    let log = log_dir(path);
    if !path.exists() && !log.exists() {
        return Err(StoreError::Database(format!("there is no store at {} to recover", path.display())));
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut recovery = Recovery::default();
    let mut newest: BTreeMap<String, (u64, Slot)> = BTreeMap::new();
    let mut resource_version = 0;

    if path.exists() {
        let aside = aside(path, stamp)?;
        match salvage_database(&aside, &codec, &mut newest, &mut recovery.lost) {
            Ok(rv) => resource_version = rv,
            Err(e) => recovery.lost.push(format!("the database {}: {e}", aside.display())),
        }
        recovery.from_database = newest.len();
        recovery.kept_aside.push(aside);
    }
    if log.exists() {
        let aside = aside(&log, stamp)?;
        let (records, damaged) = Wal::salvage(&aside);
        recovery.lost.extend(damaged.into_iter().map(|segment| format!("the rest of log segment {segment}")));
        for record in records {
            resource_version = resource_version.max(record.rv);
            for (rv, bytes) in record.changes {
                let event = match decode_change(&codec, rv, &bytes) {
                    Ok(event) => event,
                    Err(e) => {
                        recovery.lost.push(format!("logged change {rv}: {e}"));
                        continue;
                    }
                };
                if newest.get(&event.key).is_some_and(|(known, _)| *known >= rv) {
                    continue;
                }
                let slot = crate::durable_slot(&codec, &event)?;
                newest.insert(event.key.clone(), (rv, slot));
                recovery.from_log += 1;
            }
        }
        recovery.kept_aside.push(aside);
    }
    resource_version = newest.values().map(|(rv, _)| *rv).fold(resource_version, u64::max);

    let db = Database::builder().set_cache_size(options.cache_bytes).create(path)?;
    let wtx = db.begin_write()?;
    {
        let mut objects = wtx.open_table(OBJECTS)?;
        for (key, (_, slot)) in &newest {
            if let Some(bytes) = slot {
                objects.insert(key.as_str(), &bytes[..])?;
                recovery.objects += 1;
            }
        }
        let mut meta = wtx.open_table(META)?;
        meta.insert(writer::META_RV, resource_version)?;
        // Not clean: the next open starts beyond any resourceVersion the old store handed out.
        meta.insert(writer::META_CLEAN, 0)?;
    }
    wtx.commit()?;
    recovery.resource_version = resource_version;
    Ok(recovery)
}

/// Renames `path` to `path.damaged-STAMP` and returns the new name.
fn aside(path: &Path, stamp: u64) -> Result<PathBuf, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{stamp}"));
    let aside = PathBuf::from(name);
    std::fs::rename(path, &aside)
        .map_err(|e| StoreError::Database(format!("cannot move {} aside: {e}", path.display())))?;
    Ok(aside)
}

/// Reads every object of the database at `path` that decodes, into `newest` by the
/// resourceVersion in its metadata; returns the resourceVersion the database was complete up to.
fn salvage_database(
    path: &Path,
    codec: &Codec,
    newest: &mut BTreeMap<String, (u64, Slot)>,
    lost: &mut Vec<String>,
) -> Result<u64, StoreError> {
    // Checked and repaired as it opens (on the copy set aside: redb falls back to its previous
    // commit when the last one fails its checksums); a file beyond repair is read as it is.
    let db: Box<dyn ReadableDatabase> = match Database::builder().set_check_integrity_on_open(true).open(path) {
        Ok(db) => Box::new(db),
        Err(e) => {
            tracing::warn!(error = %e, "the damaged database cannot be repaired; reading it as it is");
            lost.push(format!("the database's last commit: {e}"));
            Box::new(Database::builder().open(path)?)
        }
    };
    let rtx = db.begin_read()?;
    let checkpointed = match read_table(&rtx, META) {
        Ok(Some(meta)) => meta.get(writer::META_RV).ok().flatten().map_or(0, |v| v.value()),
        Ok(None) => 0,
        Err(e) => {
            lost.push(format!("the database's resourceVersion: {e}"));
            0
        }
    };
    let Some(objects) = read_table(&rtx, OBJECTS)? else { return Ok(checkpointed) };
    for entry in objects.iter()? {
        let (key, value) = match entry {
            Ok((key, value)) => (key.value().to_string(), value.value().to_vec()),
            Err(e) => {
                lost.push(format!("the database's objects after {:?}: {e}", newest.keys().next_back()));
                break;
            }
        };
        match decode(codec, &key, &value) {
            Ok(object) => {
                let rv = object["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
                newest.insert(key, (rv, Some(value.into())));
            }
            Err(e) => lost.push(format!("{key}: {e}")),
        }
    }
    Ok(checkpointed)
}
