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
use redb::{ReadableDatabase as _, TableDefinition};
use std::path::Path;
use std::time::UNIX_EPOCH;

/// The state of the legacy file a migrated store was made from.
const SOURCE: TableDefinition<&str, &[u8]> = TableDefinition::new("legacy_source");
const SOURCE_KEY: &str = "store.redb";

/// Makes `target` from the legacy store `legacy` when there is one that `target` does not hold
/// yet; returns whether it did. Without a legacy file this does nothing.
pub fn migrate_legacy(legacy: &Path, target: &Path) -> Result<bool, StoreError> {
    let io =
        |what: &str, path: &Path, e: std::io::Error| StoreError::Database(format!("{what} {}: {e}", path.display()));
    let source = match std::fs::metadata(legacy) {
        Ok(metadata) => fingerprint(&metadata),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("cannot read", legacy, e)),
    };
    if target.exists() && made_from(target)?.as_deref() == Some(source.as_bytes()) {
        return Ok(false);
    }
    tracing::info!(legacy = %legacy.display(), store = %target.display(), "migrating the store from redb file format 2");
    let staging = target.with_extension("migrating");
    std::fs::copy(legacy, &staging).map_err(|e| io("cannot copy the store to", &staging, e))?;
    {
        let mut db = redb2::Database::create(&staging).map_err(legacy_error)?;
        db.upgrade().map_err(legacy_error)?;
    }
    {
        let db = redb::Database::create(&staging)?;
        let txn = db.begin_write()?;
        txn.open_table(SOURCE)?.insert(SOURCE_KEY, source.as_bytes())?;
        txn.commit()?;
    }
    std::fs::rename(&staging, target).map_err(|e| io("cannot move the migrated store to", target, e))?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("cannot sync", dir, e))?;
    }
    Ok(true)
}

/// Which state of the legacy file `target` was made from; None for a store created afresh.
fn made_from(target: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let db = redb::Database::create(target)?;
    let txn = db.begin_read()?;
    let Some(table) = crate::read_table(&txn, SOURCE)? else { return Ok(None) };
    Ok(table.get(SOURCE_KEY)?.map(|v| v.value().to_vec()))
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
    use crate::{Options, Store, CHANGES, OBJECTS};
    use redb::ReadableTable as _;
    use serde_json::json;

    const LEGACY_OBJECTS: redb2::TableDefinition<&str, &[u8]> = redb2::TableDefinition::new("objects");
    const LEGACY_CHANGES: redb2::TableDefinition<u64, &[u8]> = redb2::TableDefinition::new("changes");

    /// Writes `pods` with this version's store (in `scratch`), then copies its tables into a
    /// redb 2 file at `legacy`: the bytes an Axle before redb 4 kept for the same writes.
    async fn write_legacy(scratch: &Path, legacy: &Path, pods: &[&'static str]) {
        let store = Store::open(scratch, Options::default()).expect("scratch store");
        for &pod in pods {
            let key = format!("core/pods/car/{pod}");
            store
                .transact(move |txn| txn.put(&key, json!({"metadata": {"name": pod}})))
                .await
                .expect("store")
                .expect("put");
        }
        drop(store);
        let source = crate::tests::when_released(|| Ok(redb::Database::create(scratch)?)).await;
        let read = source.begin_read().expect("read");
        let legacy_db = redb2::Database::create(legacy).expect("redb 2 file");
        let write = legacy_db.begin_write().expect("write");
        {
            let mut objects = write.open_table(LEGACY_OBJECTS).expect("objects");
            for entry in read.open_table(OBJECTS).expect("objects").iter().expect("iter") {
                let (k, v) = entry.expect("entry");
                objects.insert(k.value(), v.value()).expect("insert");
            }
            let mut changes = write.open_table(LEGACY_CHANGES).expect("changes");
            for entry in read.open_table(CHANGES).expect("changes").iter().expect("iter") {
                let (k, v) = entry.expect("entry");
                changes.insert(k.value(), v.value()).expect("insert");
            }
        }
        write.commit().expect("commit");
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
        assert!(matches!(Store::open(&legacy, Options::default()), Err(StoreError::Database(_))), "redb 4 refuses it");
        let legacy_bytes = std::fs::read(&legacy).expect("legacy");

        assert!(migrate_legacy(&legacy, &target).expect("migrates"));
        assert_eq!(std::fs::read(&legacy).expect("legacy"), legacy_bytes, "the legacy file is not written");
        let store = Store::open(&target, Options::default()).expect("opens");
        assert_eq!(names(&store), ["media", "nav"]);
        assert_eq!(store.resource_version(), 2);
        assert_eq!(store.events_after(0).expect("the log").len(), 2, "the change log came along");
        let put = store.transact(|txn| txn.put("core/pods/car/diag", json!({"metadata": {"name": "diag"}}))).await;
        assert_eq!(put.expect("store").expect("put")["metadata"]["resourceVersion"], "3");
        drop(store);

        // Started again: the store already holds the legacy file's state.
        assert!(!crate::tests::when_released(|| migrate_legacy(&legacy, &target)).await);
        let store = crate::tests::reopen(&target, Options::default()).await;
        assert_eq!(names(&store), ["diag", "media", "nav"]);
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
        let store = Store::open(&target, Options::default()).expect("opens");
        assert_eq!(names(&store), ["nav", "radio"]);
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
        assert_eq!(names(&Store::open(&target, Options::default()).expect("opens")), ["nav"]);
        assert!(!target.with_extension("migrating").exists());
    }
}
