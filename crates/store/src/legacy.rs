//! Stores written before Axle moved to redb 4: redb 2's file format 2, in `store.redb`, which
//! redb 4 cannot open. [`migrate_legacy`] makes the store's current file from such a file with
//! redb 2.6's own upgrade, on a copy:
//!
//! - The legacy file is never written. An older Axle that takes over again (a self-update
//!   falling back to the version it replaced) opens it and carries on where it was: redb 2 can
//!   not open what redb 4 writes.
//! - The new file records which state of the legacy file it was made from (length and
//!   modification time). When the legacy file changed since, an older Axle ran on it after
//!   the migration, and its state is the newer one: the new file is made again from it, as the
//!   rollback it was meant.
//! - The new file appears by an atomic rename once complete: a `kill -9` during a migration
//!   leaves the legacy file as it was and no new file, and the next start migrates again.

use crate::StoreError;
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use std::path::Path;
use std::time::UNIX_EPOCH;

/// The state of the legacy file a migrated store was made from.
/// Keyed by the source's file name (`store.redb`, `store-v3.redb`): a store migrated twice
/// remembers both.
const SOURCE: TableDefinition<&str, &[u8]> = TableDefinition::new("legacy_source");

/// Makes `target` from the legacy store `legacy` when there is one that `target` does not hold
/// yet; returns whether it did. Without a legacy file this does nothing.
pub fn migrate_legacy(legacy: &Path, target: &Path) -> Result<bool, StoreError> {
    migrate_from(legacy, target, "redb file format 2", |staging| {
        let mut db = redb2::Database::create(staging).map_err(legacy_error)?;
        db.upgrade().map_err(legacy_error)?;
        Ok(())
    })
}

/// The change-log table of a store before the write-ahead log; its last key was the store's
/// resourceVersion.
const V3_CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

/// Makes `target` (objects in redb, changes in the log) from a store of the format before the
/// write-ahead log (`store-v3.redb`: objects and a change-log table in redb), on the same terms
/// as [`migrate_legacy`]: the old file is never written and is migrated again when an older
/// Axle wrote to it since. The change history is not carried over: watches from before the
/// migration get 410 and list again.
pub fn migrate_v3(v3: &Path, target: &Path) -> Result<bool, StoreError> {
    migrate_from(v3, target, "the format before the write-ahead log", |staging| {
        let db = redb::Database::create(staging)?;
        let txn = db.begin_write()?;
        let rv = match txn.open_table(V3_CHANGES) {
            Ok(changes) => changes.last()?.map_or(0, |(k, _)| k.value()),
            Err(e) => return Err(e.into()),
        };
        txn.delete_table(V3_CHANGES)?;
        {
            let mut meta = txn.open_table(crate::META)?;
            meta.insert(crate::writer::META_RV, rv)?;
            meta.insert(crate::writer::META_CLEAN, 1)?;
        }
        txn.commit()?;
        Ok(())
    })
}

/// The common part of both migrations: a copy of `source` becomes `target` once `convert` has
/// made it the current format, recording which state of `source` it was made from.
fn migrate_from(
    source: &Path,
    target: &Path,
    format: &str,
    convert: impl FnOnce(&Path) -> Result<(), StoreError>,
) -> Result<bool, StoreError> {
    let io =
        |what: &str, path: &Path, e: std::io::Error| StoreError::Database(format!("{what} {}: {e}", path.display()));
    let fingerprint = match std::fs::metadata(source) {
        Ok(metadata) => fingerprint(&metadata),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("cannot read", source, e)),
    };
    let source_name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if target.exists() && made_from(target, &source_name)?.as_deref() == Some(fingerprint.as_bytes()) {
        return Ok(false);
    }
    tracing::info!(from = %source.display(), store = %target.display(), "migrating the store from {format}");
    let staging = target.with_extension("migrating");
    std::fs::copy(source, &staging).map_err(|e| io("cannot copy the store to", &staging, e))?;
    convert(&staging)?;
    {
        let db = redb::Database::create(&staging)?;
        let txn = db.begin_write()?;
        txn.open_table(SOURCE)?.insert(source_name.as_str(), fingerprint.as_bytes())?;
        txn.commit()?;
    }
    // The log of a store being replaced belongs to it, not to the migrated state.
    let log = crate::log_dir(target);
    if log.exists() {
        std::fs::remove_dir_all(&log).map_err(|e| io("cannot remove", &log, e))?;
    }
    std::fs::rename(&staging, target).map_err(|e| io("cannot move the migrated store to", target, e))?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("cannot sync", dir, e))?;
    }
    Ok(true)
}

/// Which state of the legacy file `target` was made from; None for a store created afresh.
fn made_from(target: &Path, source_name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    // Read-only: opening for writing marks the file (and its modification time), which would
    // look like a change to the next migration that takes this file as its source.
    let db = redb::Builder::new().open_read_only(target)?;
    let txn = db.begin_read()?;
    let Some(table) = crate::read_table(&txn, SOURCE)? else { return Ok(None) };
    Ok(table.get(source_name)?.map(|v| v.value().to_vec()))
}

/// Length and modification time: any commit by an older Axle changes both or the latter.
fn fingerprint(metadata: &std::fs::Metadata) -> String {
    let modified = metadata.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    format!("{} bytes, modified {}.{:09}", metadata.len(), modified.as_secs(), modified.subsec_nanos())
}

fn legacy_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("cannot migrate the redb 2 store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, Store, OBJECTS};
    use serde_json::json;

    const LEGACY_OBJECTS: redb2::TableDefinition<&str, &[u8]> = redb2::TableDefinition::new("objects");
    const LEGACY_CHANGES: redb2::TableDefinition<u64, &[u8]> = redb2::TableDefinition::new("changes");

    /// The tables an Axle of the store format before the log kept for `pods` (written one
    /// after the other): objects, and a change-log table whose last key is the resourceVersion.
    fn old_tables(pods: &[&str]) -> Vec<(String, Vec<u8>, u64, Vec<u8>)> {
        pods.iter()
            .enumerate()
            .map(|(i, pod)| {
                let rv = i as u64 + 1;
                let object = json!({"metadata": {"name": pod, "resourceVersion": rv.to_string()}});
                let change = json!({"type": "ADDED", "key": format!("core/pods/car/{pod}"), "object": object});
                (format!("core/pods/car/{pod}"), object.to_string().into_bytes(), rv, change.to_string().into_bytes())
            })
            .collect()
    }

    /// A redb 2 file at `legacy` as an Axle before redb 4 kept it for `pods`.
    async fn write_legacy(_scratch: &Path, legacy: &Path, pods: &[&'static str]) {
        let legacy_db = redb2::Database::create(legacy).expect("redb 2 file");
        let write = legacy_db.begin_write().expect("write");
        {
            let mut objects = write.open_table(LEGACY_OBJECTS).expect("objects");
            let mut changes = write.open_table(LEGACY_CHANGES).expect("changes");
            for (key, object, rv, change) in old_tables(pods) {
                objects.insert(key.as_str(), object.as_slice()).expect("insert");
                changes.insert(rv, change.as_slice()).expect("insert");
            }
        }
        write.commit().expect("commit");
    }

    /// A redb 4 file at `path` as an Axle before the write-ahead log kept it for `pods`.
    fn write_v3(path: &Path, pods: &[&str]) {
        let db = redb::Database::create(path).expect("redb 4 file");
        let write = db.begin_write().expect("write");
        {
            let mut objects = write.open_table(OBJECTS).expect("objects");
            let mut changes = write.open_table(V3_CHANGES).expect("changes");
            for (key, object, rv, change) in old_tables(pods) {
                objects.insert(key.as_str(), object.as_slice()).expect("insert");
                changes.insert(rv, change.as_slice()).expect("insert");
            }
        }
        write.commit().expect("commit");
    }

    #[tokio::test]
    async fn a_v3_store_is_migrated_with_its_resource_version_and_left_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (v3, target) = (dir.path().join("store-v3.redb"), dir.path().join("store-v4.redb"));
        write_v3(&v3, &["nav", "media"]);
        let v3_bytes = std::fs::read(&v3).expect("v3");
        assert!(migrate_v3(&v3, &target).expect("migrates"));
        assert_eq!(std::fs::read(&v3).expect("v3"), v3_bytes, "the old file is not written");
        let store = Store::open(&target, Options::default()).expect("opens");
        assert_eq!(names(&store), ["media", "nav"]);
        assert_eq!(store.resource_version(), 2);
        let put = store.transact(|txn| txn.put("core/pods/car/diag", json!({"metadata": {"name": "diag"}}))).await;
        assert_eq!(put.expect("store").expect("put")["metadata"]["resourceVersion"], "3");
        drop(store);
        assert!(!crate::tests::when_released(|| migrate_v3(&v3, &target)).await, "done once");
        assert_eq!(names(&crate::tests::reopen(&target, Options::default()).await), ["diag", "media", "nav"]);

        // An older Axle takes over again and writes on: its state is migrated again, and the
        // log of the replaced store goes with it.
        std::fs::remove_file(&v3).expect("rm");
        write_v3(&v3, &["nav", "radio"]);
        assert!(crate::tests::when_released(|| migrate_v3(&v3, &target)).await);
        assert_eq!(names(&Store::open(&target, Options::default()).expect("opens")), ["nav", "radio"]);
    }

    fn names(store: &Store) -> Vec<String> {
        let page = store.list("core/pods/", None, 0, &|_| true).expect("lists");
        page.items.iter().map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect()
    }

    #[tokio::test]
    async fn a_redb2_store_is_migrated_and_left_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (legacy, target) = (dir.path().join("store.redb"), dir.path().join("store-v3.redb"));
        write_legacy(&dir.path().join("scratch.redb"), &legacy, &["nav", "media"]).await;
        assert!(
            matches!(Store::open(&legacy, Options::default()), Err(StoreError::Redb(_))),
            "redb 4 refuses it, not as damage"
        );
        let legacy_bytes = std::fs::read(&legacy).expect("legacy");

        assert!(migrate_legacy(&legacy, &target).expect("migrates"));
        assert_eq!(std::fs::read(&legacy).expect("legacy"), legacy_bytes, "the legacy file is not written");
        let v4 = dir.path().join("store-v4.redb");
        assert!(migrate_v3(&target, &v4).expect("migrates on"));
        let store = Store::open(&v4, Options::default()).expect("opens");
        assert_eq!(names(&store), ["media", "nav"]);
        assert_eq!(store.resource_version(), 2);
        drop(store);

        // Started again: both steps are done already.
        assert!(!crate::tests::when_released(|| migrate_legacy(&legacy, &target)).await);
        assert!(!crate::tests::when_released(|| migrate_v3(&target, &v4)).await);
    }

    #[tokio::test]
    async fn a_legacy_store_written_after_the_migration_is_migrated_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (legacy, target) = (dir.path().join("store.redb"), dir.path().join("store-v3.redb"));
        write_legacy(&dir.path().join("scratch.redb"), &legacy, &["nav"]).await;
        assert!(migrate_legacy(&legacy, &target).expect("migrates"));
        // The older Axle takes over again (a fallback) and writes on.
        std::fs::remove_file(&legacy).expect("rm");
        write_legacy(&dir.path().join("scratch2.redb"), &legacy, &["nav", "radio"]).await;

        assert!(migrate_legacy(&legacy, &target).expect("migrates again"));
        let v4 = dir.path().join("store-v4.redb");
        assert!(migrate_v3(&target, &v4).expect("migrates on"));
        assert_eq!(names(&Store::open(&v4, Options::default()).expect("opens")), ["nav", "radio"]);
    }

    #[tokio::test]
    async fn an_interrupted_migration_is_redone_and_no_legacy_file_means_nothing_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (legacy, target) = (dir.path().join("store.redb"), dir.path().join("store-v3.redb"));
        assert!(!migrate_legacy(&legacy, &target).expect("nothing to migrate"));
        assert!(!target.exists());

        write_legacy(&dir.path().join("scratch.redb"), &legacy, &["nav"]).await;
        // A kill -9 mid-copy left half a staging file; the store itself never appeared.
        std::fs::write(target.with_extension("migrating"), b"half a copy").expect("staging");
        assert!(migrate_legacy(&legacy, &target).expect("migrates"));
        let v4 = dir.path().join("store-v4.redb");
        assert!(migrate_v3(&target, &v4).expect("migrates on"));
        assert_eq!(names(&Store::open(&v4, Options::default()).expect("opens")), ["nav"]);
        assert!(!target.with_extension("migrating").exists());
    }
}
