//! Axle's object store: every API object, durably, with one global resourceVersion and a
//! bounded change log that watches read from.
//!
//! - Objects are JSON documents keyed `group/plural/namespace/name` (namespace empty for
//!   cluster-scoped objects) in one redb table; redb gives atomic, crash-safe commits. Opening
//!   the store writes nothing; tables are created by the first write.
//! - All writes go through one writer thread. Requests queued while a commit is in flight are
//!   applied together in the next transaction (group commit), so N concurrent writes cost one
//!   fsync, and nothing is written while nothing changes.
//! - A write is acknowledged only after its transaction is committed (fsynced): a `kill -9` at
//!   any point loses no acknowledged write and exposes no unacknowledged one.
//! - Each committed change is appended to a persisted change log (bounded, oldest pruned in the
//!   same transaction) and to an in-memory ring of recent events; watchers read from the ring,
//!   fall back to the persisted log, and get [`StoreError::Expired`] beyond it (HTTP 410).
//!
//! - Objects under the key prefixes of [`Options::sealing`] (the server's Secrets) are stored
//!   encrypted, also in the change log (see `seal`).
//!
//! The store knows nothing about HTTP or Kubernetes semantics beyond `metadata.resourceVersion`,
//! which it owns: callers never choose resource versions.

mod hub;
mod legacy;
mod seal;
mod writer;

pub use hub::{Event, EventType};
pub use legacy::migrate_legacy;
pub use seal::Sealing;
pub use writer::Txn;

use hub::Hub;
use redb::{Database, ReadableDatabase as _, ReadableTable, TableDefinition};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use writer::{Job, TypedJob};

/// The store's file in the server's data directory.
pub const FILE_NAME: &str = "store-v3.redb";
/// The file of a store written before redb 4, kept for an older Axle (see [`migrate_legacy`]).
pub const LEGACY_FILE_NAME: &str = "store.redb";

pub(crate) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// The change log. Its last key is the store's current resourceVersion (the log always keeps
/// its newest entry), so no separate counter is written per commit.
pub(crate) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Database(String),
    #[error("stored object {key:?} is not valid JSON: {source}")]
    Corrupt { key: String, source: serde_json::Error },
    #[error("resource version {requested} is too old (oldest retained change is {oldest})")]
    Expired { requested: u64, oldest: u64 },
    #[error("the store is shut down")]
    Closed,
    #[error("stored object {key:?} cannot be read: {why}")]
    Sealed { key: String, why: String },
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Database(e.to_string()) }
        }
    )*};
}
db_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Opens a table for reading; a table that does not exist yet (nothing written so far) is None.
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    rtx: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match rtx.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The current resourceVersion: the last key of the change log (0 before the first write).
fn current_rv(rtx: &redb::ReadTransaction) -> Result<u64, StoreError> {
    Ok(match read_table(rtx, CHANGES)? {
        Some(changes) => changes.last()?.map(|(k, _)| k.value()).unwrap_or(0),
        None => 0,
    })
}

/// Tuning knobs, with defaults that suit a car's HPC.
#[derive(Debug, Clone)]
pub struct Options {
    /// Changes kept in the persisted log for watch resume.
    pub change_log_capacity: u64,
    /// Recent changes kept in memory for live watchers.
    pub ring_capacity: usize,
    /// redb page cache in bytes. Small by default: pages it does not hold are read from the
    /// kernel's page cache, which holds the file anyway, so a large one mostly holds the same
    /// pages twice (in this process's PSS).
    pub cache_bytes: usize,
    /// Encryption at rest of some kinds of objects.
    pub sealing: Option<Sealing>,
}

impl Default for Options {
    fn default() -> Self {
        Options { change_log_capacity: 10_000, ring_capacity: 1_024, cache_bytes: 256 << 10, sealing: None }
    }
}

/// A page of a list.
#[derive(Debug, Default)]
pub struct ListPage {
    pub items: Vec<Value>,
    /// The store's resourceVersion at the time of the read.
    pub resource_version: u64,
    /// The last key returned when the page was cut by `limit` and more items remain.
    pub continue_after: Option<String>,
}

/// A page of a list as stored JSON documents.
#[derive(Debug, Default)]
pub struct RawListPage {
    pub items: Vec<Vec<u8>>,
    pub resource_version: u64,
    pub continue_after: Option<String>,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    jobs: std::sync::mpsc::Sender<Box<dyn Job>>,
    hub: Arc<Hub>,
    codec: Arc<seal::Codec>,
}

impl Store {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path, options: Options) -> Result<Store, StoreError> {
        let db = Database::builder().set_cache_size(options.cache_bytes).create(path)?;
        let db = Arc::new(db);
        let current_rv = current_rv(&db.begin_read()?)?;
        // The ring never reaches further back than the persisted log, so whether a version has
        // expired does not depend on which of the two serves it.
        let ring_capacity = options.ring_capacity.min(options.change_log_capacity.try_into().unwrap_or(usize::MAX));
        let hub = Arc::new(Hub::new(current_rv, ring_capacity));
        let codec = Arc::new(seal::Codec::new(options.sealing.as_ref()));
        let jobs = writer::spawn(db.clone(), hub.clone(), codec.clone(), current_rv, options.change_log_capacity)?;
        Ok(Store { db, jobs, hub, codec })
    }

    /// Runs `f` atomically in the writer thread and waits until its changes are durable.
    /// If `f` returns `Err`, none of its writes take effect.
    pub async fn transact<T, E, F>(&self, f: F) -> Result<Result<T, E>, StoreError>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (job, reply) = TypedJob::new(f);
        self.jobs.send(Box::new(job)).map_err(|_| StoreError::Closed)?;
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.hub.latest()
    }

    pub fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let rtx = self.db.begin_read()?;
        let Some(table) = read_table(&rtx, OBJECTS)? else { return Ok(None) };
        let bytes = table.get(key)?;
        bytes.map(|b| decode(&self.codec, key, b.value())).transpose()
    }

    /// Lists objects whose key starts with `prefix`, after `start_after` (exclusive), keeping
    /// those `keep` accepts, at most `limit` of them (0 = no limit).
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&Value) -> bool,
    ) -> Result<ListPage, StoreError> {
        let (items, resource_version, continue_after) = self.scan(prefix, start_after, limit, |key, bytes| {
            let obj = decode(&self.codec, key, bytes)?;
            Ok(keep(&obj).then_some(obj))
        })?;
        Ok(ListPage { items, resource_version, continue_after })
    }

    /// Like [`Store::list`] without a filter, returning the stored JSON bytes as they are: a list
    /// reply can be assembled without parsing a single object.
    pub fn list_raw(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<RawListPage, StoreError> {
        let (items, resource_version, continue_after) =
            self.scan(prefix, start_after, limit, |key, bytes| Ok(Some(self.codec.open(key, bytes)?.into_owned())))?;
        Ok(RawListPage { items, resource_version, continue_after })
    }

    /// Walks the keys under `prefix` in one read snapshot; `take` maps an entry to an item or
    /// skips it. Returns the items, the snapshot's resourceVersion and the continue key.
    fn scan<T>(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        mut take: impl FnMut(&str, &[u8]) -> Result<Option<T>, StoreError>,
    ) -> Result<(Vec<T>, u64, Option<String>), StoreError> {
        let rtx = self.db.begin_read()?;
        let rv = current_rv(&rtx)?;
        let Some(table) = read_table(&rtx, OBJECTS)? else { return Ok((Vec::new(), rv, None)) };
        let mut items = Vec::new();
        let mut last_taken: Option<String> = None;
        let start = start_after.unwrap_or(prefix);
        for entry in table.range(start..)? {
            let (key, value) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            if Some(key) == start_after {
                continue;
            }
            let Some(item) = take(key, value.value())? else { continue };
            if limit > 0 && items.len() == limit {
                // A further match exists: the page is cut after the last item it holds.
                return Ok((items, rv, last_taken));
            }
            items.push(item);
            last_taken = Some(key.to_string());
        }
        Ok((items, rv, None))
    }

    /// Changes committed after `rv`, oldest first. `Expired` when they left the log.
    pub fn events_after(&self, rv: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        if let Some(events) = self.hub.events_after(rv) {
            return Ok(events);
        }
        let rtx = self.db.begin_read()?;
        let Some(table) = read_table(&rtx, CHANGES)? else {
            return if rv >= self.hub.latest() {
                Ok(Vec::new())
            } else {
                Err(StoreError::Expired { requested: rv, oldest: 1 })
            };
        };
        let oldest = table.first()?.map(|(k, _)| k.value());
        let latest = self.hub.latest();
        match oldest {
            Some(oldest) if rv + 1 >= oldest => {}
            None if rv >= latest => return Ok(Vec::new()),
            other => return Err(StoreError::Expired { requested: rv, oldest: other.unwrap_or(latest + 1) }),
        }
        let mut events = Vec::new();
        for entry in table.range(rv + 1..)? {
            let (k, v) = entry?;
            events.push(Arc::new(hub::decode_change(&self.codec, k.value(), v.value())?));
        }
        Ok(events)
    }

    /// A receiver that changes whenever a new resourceVersion is committed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.hub.subscribe()
    }
}

pub(crate) fn decode(codec: &seal::Codec, key: &str, bytes: &[u8]) -> Result<Value, StoreError> {
    let json = codec.open(key, bytes)?;
    serde_json::from_slice(&json).map_err(|source| StoreError::Corrupt { key: key.to_string(), source })
}

/// The storage key of an object: `prefix/namespace/name`.
pub fn key(prefix: &str, namespace: &str, name: &str) -> String {
    format!("{prefix}/{namespace}/{name}")
}

#[cfg(test)]
mod tests;
