//! Axle's object store: every API object, durably, with one global resourceVersion and a
//! bounded change history that watches read from — written so that flash lasts the car's life.
//!
//! - Objects are JSON documents keyed `group/plural/namespace/name` (namespace empty for
//!   cluster-scoped objects). Opening the store writes nothing.
//! - All writes go through one writer thread. Requests queued while a write is in flight are
//!   applied together (group commit): N concurrent writes cost one append and one fsync.
//! - A durable write is acknowledged only after its batch is appended to the write-ahead log
//!   (`wal`) and fsynced: a `kill -9` or power cut at any point loses no acknowledged write and
//!   exposes no unacknowledged one. Appends cost a page or two, where a redb commit rewrote
//!   about ten; redb (the B-tree that reads go to) is brought up to date by checkpoints that
//!   fold many changes into one commit, and the log's records newer than redb are replayed at
//!   open.
//! - Volatile writes (`Txn::put_volatile`: lease renewals, heartbeats, Events) are served and
//!   watched like any other but live in memory only (`recent`); after a restart their keys are
//!   back at their last durable version. An idle car that only says "still here" writes nothing.
//! - Recent events are kept in an in-memory ring; watchers read from it, fall back to the log,
//!   and get [`StoreError::Expired`] beyond it (HTTP 410).
//! - Objects under the key prefixes of [`Options::sealing`] (the server's Secrets) are stored
//!   encrypted, also in the log (see `seal`).
//!
//! The store knows nothing about HTTP or Kubernetes semantics beyond `metadata.resourceVersion`,
//! which it owns: callers never choose resource versions; which writes may be volatile is the
//! caller's decision.

mod database;
mod hub;
mod legacy;
mod recent;
mod recover;
mod seal;
mod wal;
mod writer;

pub use hub::{Event, EventType};
pub use legacy::{migrate_legacy, migrate_v3};
pub use recover::{recover, Recovery};
pub use seal::Sealing;
pub use writer::Txn;

use database::SharedDatabase;
use hub::Hub;
use recent::{Bytes, Merge, Recent};
use redb::{Database, TableDefinition};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use wal::Wal;
use writer::{Request, TypedJob, Writer, VOLATILE_SPAN};

/// The store's file in the server's data directory (its log is `store-v4.wal/` beside it).
pub const FILE_NAME: &str = "store-v4.redb";
/// The file of the store before the write-ahead log (redb 4 with a change-log table), kept
/// for an older Axle (see [`migrate_v3`]).
pub const V3_FILE_NAME: &str = "store-v3.redb";
/// The file of a store written before redb 4, kept for an older Axle (see [`migrate_legacy`]).
pub const LEGACY_FILE_NAME: &str = "store.redb";

pub(crate) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// What redb holds: the resourceVersion it is complete up to, and whether the store was closed
/// cleanly at it.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Database(String),
    /// redb itself failed (an I/O error underneath, or a damaged file): the writer reopens it.
    #[error("store database error: {0}")]
    Redb(String),
    #[error("stored object {key:?} is not valid JSON: {source}")]
    Corrupt { key: String, source: serde_json::Error },
    #[error("resource version {requested} is too old (oldest retained change is {oldest})")]
    Expired { requested: u64, oldest: u64 },
    #[error("the store is shut down")]
    Closed,
    #[error("stored object {key:?} cannot be read: {why}")]
    Sealed { key: String, why: String },
    #[error("object {key:?} is {bytes} bytes, more than the {limit} an object may take")]
    TooLarge { key: String, bytes: usize, limit: usize },
    /// The disk is full: the write was not made, and the store goes on when space returns.
    #[error("the store's disk is full: {0}")]
    Full(String),
    /// Part of the store cannot be read back as it was written ([`recover`] salvages the rest).
    #[error("the store is damaged: {0}")]
    Damaged(String),
}

impl StoreError {
    /// Whether the error says the files are damaged (rather than busy, full or unreachable):
    /// what [`recover`] is for.
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Damaged(_) | StoreError::Corrupt { .. })
    }
}

impl StoreError {
    /// A clone for every job of a failed batch (the database's own errors are not `Clone`).
    pub(crate) fn for_each_job(&self) -> StoreError {
        match self {
            StoreError::Full(why) => StoreError::Full(why.clone()),
            StoreError::TooLarge { key, bytes, limit } => {
                StoreError::TooLarge { key: key.clone(), bytes: *bytes, limit: *limit }
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.to_string()) }
        }
    )*};
}
db_error_from!(redb::Error, redb::TransactionError, redb::TableError, redb::CommitError);

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        match &e {
            // A file that fails redb's checks, or is not a redb file at all.
            redb::StorageError::Corrupted(_) => StoreError::Damaged(e.to_string()),
            redb::StorageError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                StoreError::Damaged(e.to_string())
            }
            _ => StoreError::Redb(e.to_string()),
        }
    }
}

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::Storage(e) => e.into(),
            e => StoreError::Redb(e.to_string()),
        }
    }
}

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

/// Tuning knobs, with defaults that suit a car's HPC.
#[derive(Debug, Clone)]
pub struct Options {
    /// Durable changes kept in the log for watch resume.
    pub change_log_capacity: u64,
    /// Recent changes kept in memory for live watchers, at most this many...
    pub ring_capacity: usize,
    /// ...and at most this many bytes of them (as stored; parsed they take several times that).
    pub ring_bytes: usize,
    /// The largest object the store takes, in JSON bytes (etcd's default request limit, as
    /// upstream Kubernetes has it).
    pub max_object_bytes: usize,
    /// redb page cache in bytes. Small by default: pages it does not hold are read from the
    /// kernel's page cache, which holds the file anyway, so a large one mostly holds the same
    /// pages twice (in this process's PSS).
    pub cache_bytes: usize,
    /// Changes held in memory (and in the log) before a checkpoint writes them into redb; the
    /// log past four times this also triggers one. Larger: fewer, cheaper-per-change
    /// checkpoints, more memory.
    pub checkpoint_bytes: usize,
    /// Encryption at rest of some kinds of objects.
    pub sealing: Option<Sealing>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            change_log_capacity: 10_000,
            ring_capacity: 1_024,
            ring_bytes: 4 << 20,
            max_object_bytes: 1_572_864,
            cache_bytes: 256 << 10,
            checkpoint_bytes: 1 << 20,
            sealing: None,
        }
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

/// What the store wrote, for the wear figures: bytes as the kernel counted them for the
/// writer thread (`/proc/thread-self/io`), so the filesystem's page granularity is included.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    log_bytes: AtomicU64,
    log_records: AtomicU64,
    checkpoint_bytes: AtomicU64,
    checkpoints: AtomicU64,
    durable_changes: AtomicU64,
    volatile_changes: AtomicU64,
    /// Why the last durable write or checkpoint failed, until one succeeds again.
    failing: std::sync::Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn set_failing(&self, why: Option<String>) {
        if let Ok(mut failing) = self.failing.lock() {
            *failing = why;
        }
    }
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Bytes written by log appends.
    pub log_bytes: u64,
    pub log_records: u64,
    /// Bytes written by checkpoints into redb.
    pub checkpoint_bytes: u64,
    pub checkpoints: u64,
    pub durable_changes: u64,
    /// Changes served from memory only.
    pub volatile_changes: u64,
}

/// Free bytes for unprivileged writers on the file system holding `path`.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs fills `stat` when it returns 0; the path is a valid C string.
    if unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let stat = unsafe { stat.assume_init() };
    // The fields are 32 bits wide on some targets.
    #[allow(clippy::unnecessary_cast)]
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// This thread's bytes sent to storage so far, as the kernel counts them (None where the
/// kernel does not say).
pub(crate) fn thread_bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// Where the store reopened: resourceVersions after `durable` and before `base` may have been
/// handed out by volatile writes of the previous run, which are gone.
#[derive(Debug, Clone, Copy)]
struct Reopened {
    durable: u64,
    base: u64,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<SharedDatabase>,
    jobs: std::sync::mpsc::Sender<Request>,
    hub: Arc<Hub>,
    codec: Arc<seal::Codec>,
    recent: Arc<RwLock<Recent>>,
    wal: Arc<Mutex<Wal>>,
    counters: Arc<Counters>,
    reopened: Reopened,
}

/// The log directory of the store file at `path`.
pub fn log_dir(path: &Path) -> PathBuf {
    path.with_extension("wal")
}

impl Store {
    /// Opens (or creates) the store at `path` (and its log beside it), replays the log into
    /// memory and starts the writer thread. Writes nothing.
    pub fn open(path: &Path, options: Options) -> Result<Store, StoreError> {
        let (file, cache) = (path.to_path_buf(), options.cache_bytes);
        // The check reads the whole file (about 1 ms for 300 KB): a flipped bit is refused at
        // open rather than served, or met by a panic deep in a read.
        let opener = move || Database::builder().set_cache_size(cache).set_check_integrity_on_open(true).create(&file);
        Store::open_with(path, options, Box::new(opener))
    }

    /// [`Store::open`] with the database opened by `opener` (the tests' failing disks).
    fn open_with(path: &Path, options: Options, opener: database::Opener) -> Result<Store, StoreError> {
        let db = Arc::new(SharedDatabase::open(opener)?);
        let codec = Arc::new(seal::Codec::new(options.sealing.as_ref()));
        let (checkpointed, clean) = {
            let rtx = db.hold()?.begin_read()?;
            match read_table(&rtx, META)? {
                Some(meta) => (
                    meta.get(writer::META_RV)?.map_or(0, |v| v.value()),
                    meta.get(writer::META_CLEAN)?.is_some_and(|v| v.value() == 1),
                ),
                None => (0, true),
            }
        };
        let (wal, records) = Wal::open(&log_dir(path), options.change_log_capacity, checkpointed)?;
        let mut recent = Recent::default();
        for record in &records {
            for (rv, bytes) in &record.changes {
                let event = hub::decode_change(&codec, *rv, bytes)?;
                recent.set_durable(&event.key, durable_slot(&codec, &event)?);
            }
        }
        // The newest durable resourceVersion: the last record newer than redb, else redb's.
        let durable = records.last().map_or(checkpointed, |r| r.rv).max(checkpointed);
        // A store closed cleanly (and logged nothing since) knows its exact resourceVersion;
        // otherwise volatile writes may have gone past the newest durable one, and this run
        // starts beyond where they can be.
        let base = if clean && records.is_empty() { checkpointed } else { durable + VOLATILE_SPAN };
        recent.rv = base;
        // The ring never reaches further back than the persisted log, so whether a version has
        // expired does not depend on which of the two serves it.
        let ring_capacity = options.ring_capacity.min(options.change_log_capacity.try_into().unwrap_or(usize::MAX));
        let hub = Arc::new(Hub::new(base, ring_capacity, options.ring_bytes));
        let recent = Arc::new(RwLock::new(recent));
        let wal = Arc::new(Mutex::new(wal));
        let counters = Arc::new(Counters::default());
        let jobs = writer::spawn(Writer {
            db: db.clone(),
            hub: hub.clone(),
            codec: codec.clone(),
            recent: recent.clone(),
            wal: wal.clone(),
            counters: counters.clone(),
            current_rv: base,
            logged_rv: durable,
            checkpointed_rv: checkpointed,
            opened_rv: base,
            fresh_run: true,
            checkpoint_bytes: options.checkpoint_bytes.max(1),
            db_path: path.to_path_buf(),
            checkpoint_postponed: false,
            max_object_bytes: options.max_object_bytes,
            redb_retry: None,
        })?;
        Ok(Store { db, jobs, hub, codec, recent, wal, counters, reopened: Reopened { durable, base } })
    }

    /// Runs `f` atomically in the writer thread and waits until its durable changes are.
    /// If `f` returns `Err`, none of its writes take effect.
    pub async fn transact<T, E, F>(&self, f: F) -> Result<Result<T, E>, StoreError>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (job, reply) = TypedJob::new(f);
        self.jobs.send(Request::Transact(Box::new(job))).map_err(|_| StoreError::Closed)?;
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes everything into redb and marks it closed cleanly, so the next open replays
    /// nothing and continues at the exact resourceVersion. For a process about to exit; the
    /// store stays usable.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.jobs.send(Request::Close(reply)).map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.hub.latest()
    }

    /// Whether the store can write now: the cause of its last failed write or checkpoint,
    /// until one succeeds again (for `/readyz`).
    pub fn health(&self) -> Result<(), String> {
        match self.counters.failing.lock().ok().and_then(|f| f.clone()) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// What the store has written since it opened.
    pub fn write_stats(&self) -> WriteStats {
        let c = &self.counters;
        WriteStats {
            log_bytes: c.log_bytes.load(Ordering::Relaxed),
            log_records: c.log_records.load(Ordering::Relaxed),
            checkpoint_bytes: c.checkpoint_bytes.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            durable_changes: c.durable_changes.load(Ordering::Relaxed),
            volatile_changes: c.volatile_changes.load(Ordering::Relaxed),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let bytes = {
            let recent = self.recent.read().map_err(|_| poisoned())?;
            match recent.volatile.get(key) {
                Some(bytes) => Some(bytes.clone()),
                None => match recent.durable(key) {
                    recent::Found::Value(bytes) => Some(bytes),
                    recent::Found::Deleted => None,
                    recent::Found::Unknown => {
                        // Opened under the lock: a checkpoint cannot slip between the two looks.
                        let db = self.db.hold()?;
                        let rtx = db.begin_read()?;
                        drop(recent);
                        let Some(table) = read_table(&rtx, OBJECTS)? else { return Ok(None) };
                        let bytes = table.get(key)?;
                        return bytes.map(|b| decode(&self.codec, key, b.value())).transpose();
                    }
                },
            }
        };
        bytes.map(|b| decode(&self.codec, key, &b)).transpose()
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

    /// Walks the keys under `prefix` in one consistent snapshot (memory and redb); `take` maps
    /// an entry to an item or skips it. Returns the items, the snapshot's resourceVersion and
    /// the continue key.
    fn scan<T>(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        mut take: impl FnMut(&str, &[u8]) -> Result<Option<T>, StoreError>,
    ) -> Result<(Vec<T>, u64, Option<String>), StoreError> {
        let start = start_after.unwrap_or(prefix);
        let db = self.db.hold()?;
        let (rtx, overlay, rv) = {
            let recent = self.recent.read().map_err(|_| poisoned())?;
            (db.begin_read()?, recent.range(prefix, start), recent.rv)
        };
        let table = read_table(&rtx, OBJECTS)?;
        let base = match &table {
            Some(table) => Some(table.range(start..)?),
            None => None,
        };
        let base = base.into_iter().flatten().map_while(|entry| match entry {
            Ok((k, v)) if k.value().starts_with(prefix) => Some(Ok((k.value().to_string(), Bytes::from(v.value())))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        });
        let mut failure = None;
        let base = base.map_while(|entry| entry.map_err(|e| failure = Some(e)).ok());
        let mut items = Vec::new();
        let mut last_taken: Option<String> = None;
        for (key, value) in Merge::new(base, overlay) {
            if Some(key.as_str()) == start_after {
                continue;
            }
            let Some(item) = take(&key, &value)? else { continue };
            if limit > 0 && items.len() == limit {
                // A further match exists: the page is cut after the last item it holds.
                return Ok((items, rv, last_taken));
            }
            items.push(item);
            last_taken = Some(key);
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        Ok((items, rv, None))
    }

    /// Changes committed after `rv`, oldest first. `Expired` when they left the history (or
    /// were volatile changes of a previous run).
    pub fn events_after(&self, rv: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        if let Some(events) = self.hub.events_after(rv) {
            return Ok(events);
        }
        let latest = self.hub.latest();
        if rv >= latest {
            return Ok(Vec::new());
        }
        let ring = self.hub.tail();
        let lost_run = rv > self.reopened.durable && rv < self.reopened.base;
        if lost_run || rv < ring.evicted_volatile {
            let oldest = ring.first.unwrap_or(latest + 1);
            return Err(StoreError::Expired { requested: rv, oldest });
        }
        let view = self.wal.lock().map_err(|_| poisoned())?.view();
        let up_to = ring.first.map_or(latest, |first| first - 1);
        let Some(changes) = view.changes_after(rv, up_to) else {
            let oldest = ring.first.unwrap_or(latest + 1);
            return Err(StoreError::Expired { requested: rv, oldest });
        };
        let mut events = changes
            .iter()
            .map(|(change_rv, bytes)| hub::decode_change(&self.codec, *change_rv, bytes).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        events.extend(ring.events.into_iter().filter(|e| e.resource_version > rv));
        Ok(events)
    }

    /// A receiver that changes whenever a new resourceVersion is committed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.hub.subscribe()
    }
}

/// What a logged change leaves under its key: the object as stored, or nothing.
fn durable_slot(codec: &seal::Codec, event: &Event) -> Result<recent::Slot, StoreError> {
    Ok(match event.kind {
        EventType::Deleted => None,
        _ => {
            let json = serde_json::to_vec(&*event.object)
                .map_err(|source| StoreError::Corrupt { key: event.key.clone(), source })?;
            Some(Bytes::from(codec.seal(&event.key, &event.key, json)))
        }
    })
}

fn poisoned() -> StoreError {
    StoreError::Database("the store's memory was left inconsistent by a panic".into())
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
