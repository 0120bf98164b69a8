//! The single writer thread: group commit of queued transactions, resourceVersion assignment,
//! one log append per batch, then publication to readers and watchers — in that order, so
//! nothing is visible or acknowledged before it is durable. Checkpoints into redb run here too,
//! between batches.
//!
//! Volatile writes (`Txn::put_volatile`) get resourceVersions and events like any other but are
//! never logged. So that a resourceVersion is never handed out twice across a power cut, a
//! store opens `VOLATILE_SPAN` above the newest durable one unless it was closed cleanly, and
//! the first volatile write of a run (and one every half span after) is preceded by a log
//! record that makes the current resourceVersion durable.

use crate::database::SharedDatabase;
use crate::hub::{Event, EventType, Hub};
use crate::recent::{Bytes, Found, Merge, Recent, Slot};
use crate::seal::Codec;
use crate::wal::{Change, Wal};
use crate::{decode, poisoned, read_table, Counters, StoreError, META, OBJECTS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most jobs folded into one commit.
const MAX_BATCH: usize = 256;
/// How far above the newest durable resourceVersion volatile writes may go before one is made
/// durable; a store that was not closed cleanly opens this far above it.
pub(crate) const VOLATILE_SPAN: u64 = 1 << 30;

/// Keys of the meta table.
pub(crate) const META_RV: &str = "rv";
pub(crate) const META_CLEAN: &str = "clean";

/// A key's pending state in a batch: its durable and its volatile layer (None: untouched).
#[derive(Clone, Default)]
struct Staged {
    durable: Option<Slot>,
    volatile: Option<Slot>,
}

/// What a batch reads beneath its own writes.
struct Layers<'a> {
    recent: &'a Recent,
    objects: Option<&'a redb::ReadOnlyTable<&'static str, &'static [u8]>>,
    codec: &'a Codec,
    max_object_bytes: usize,
}

impl Layers<'_> {
    fn durable(&self, key: &str) -> Result<Slot, StoreError> {
        match self.recent.durable(key) {
            Found::Value(bytes) => Ok(Some(bytes)),
            Found::Deleted => Ok(None),
            Found::Unknown => {
                let Some(objects) = self.objects else { return Ok(None) };
                Ok(objects.get(key)?.map(|v| Bytes::from(v.value())))
            }
        }
    }
}

/// The view of the store one transaction function gets.
pub struct Txn<'a> {
    layers: &'a Layers<'a>,
    staged: &'a mut BTreeMap<String, Staged>,
    next_rv: u64,
    undo: Vec<(String, Option<Staged>)>,
    events: Vec<Event>,
}

impl<'a> Txn<'a> {
    /// The durable version of `key` as this batch left it.
    fn durable_raw(&self, key: &str) -> Result<Slot, StoreError> {
        match self.staged.get(key).and_then(|s| s.durable.clone()) {
            Some(slot) => Ok(slot),
            None => self.layers.durable(key),
        }
    }

    /// The version of `key` a reader sees: volatile over durable.
    fn raw(&self, key: &str) -> Result<Slot, StoreError> {
        let volatile = match self.staged.get(key).and_then(|s| s.volatile.clone()) {
            Some(slot) => slot,
            None => self.layers.recent.volatile.get(key).cloned(),
        };
        match volatile {
            Some(bytes) => Ok(Some(bytes)),
            None => self.durable_raw(key),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.raw(key)?.map(|b| decode(self.layers.codec, key, &b)).transpose()
    }

    /// Every object whose key starts with `prefix`, with its key.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let mut overlay = self.layers.recent.range(prefix, prefix);
        for key in self
            .staged
            .range::<str, _>(crate::recent::from(prefix))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
        {
            overlay.insert(key.clone(), self.raw(key)?);
        }
        let mut base = Vec::new();
        if let Some(objects) = self.layers.objects {
            for entry in objects.range(prefix..)? {
                let (k, v) = entry?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                base.push((k.value().to_string(), Bytes::from(v.value())));
            }
        }
        Merge::new(base.into_iter(), overlay)
            .map(|(k, bytes)| decode(self.layers.codec, &k, &bytes).map(|v| (k, v)))
            .collect()
    }

    /// The resourceVersion the next write of this transaction will get.
    pub fn next_resource_version(&self) -> u64 {
        self.next_rv
    }

    /// Stores `obj` under `key` durably, stamping `metadata.resourceVersion`; returns the
    /// stored object. A volatile version of the key is replaced.
    pub fn put(&mut self, key: &str, obj: Value) -> Result<Value, StoreError> {
        self.write(key, obj, false)
    }

    /// Stores `obj` under `key` in memory only: readers and watchers see it like any write, but
    /// nothing reaches the disk, and after a restart the key is back at its last durable
    /// version (or absent). For liveness (lease renewals, heartbeats) and Events.
    pub fn put_volatile(&mut self, key: &str, obj: Value) -> Result<Value, StoreError> {
        self.write(key, obj, true)
    }

    fn write(&mut self, key: &str, mut obj: Value, volatile: bool) -> Result<Value, StoreError> {
        let rv = self.next_rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let json = serde_json::to_vec(&obj).map_err(|source| StoreError::Corrupt { key: key.to_string(), source })?;
        if json.len() > self.layers.max_object_bytes {
            return Err(StoreError::TooLarge {
                key: key.to_string(),
                bytes: json.len(),
                limit: self.layers.max_object_bytes,
            });
        }
        let size = json.len();
        let bytes: Bytes = self.layers.codec.seal(key, key, json).into();
        let kind = if self.raw(key)?.is_some() { EventType::Modified } else { EventType::Added };
        let staged = self.stage(key);
        if volatile {
            staged.volatile = Some(Some(bytes));
        } else {
            staged.durable = Some(Some(bytes));
            staged.volatile = Some(None);
        }
        self.next_rv += 1;
        self.events.push(Event {
            resource_version: rv,
            kind,
            key: key.to_string(),
            object: Arc::new(obj.clone()),
            volatile,
            size,
        });
        Ok(obj)
    }

    /// Removes the object under `key`; returns its last state stamped with the deletion's
    /// resourceVersion, or None when there was nothing to delete. The deletion is durable when
    /// the key had a durable version.
    pub fn delete(&mut self, key: &str) -> Result<Option<Value>, StoreError> {
        let Some(previous) = self.raw(key)? else { return Ok(None) };
        let mut obj = decode(self.layers.codec, key, &previous)?;
        let durable = self.durable_raw(key)?.is_some();
        let size = previous.len();
        let staged = self.stage(key);
        if durable {
            staged.durable = Some(None);
        }
        staged.volatile = Some(None);
        let rv = self.next_rv;
        self.next_rv += 1;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        self.events.push(Event {
            resource_version: rv,
            kind: EventType::Deleted,
            key: key.to_string(),
            object: Arc::new(obj.clone()),
            volatile: !durable,
            size,
        });
        Ok(Some(obj))
    }

    /// The batch's entry for `key`, its state before remembered for a roll-back.
    fn stage(&mut self, key: &str) -> &mut Staged {
        self.undo.push((key.to_string(), self.staged.get(key).cloned()));
        self.staged.entry(key.to_string()).or_default()
    }

    /// Reverts this job's writes (the function returned an error).
    fn roll_back(&mut self) {
        while let Some((key, previous)) = self.undo.pop() {
            match previous {
                Some(staged) => self.staged.insert(key, staged),
                None => self.staged.remove(&key),
            };
        }
        self.events.clear();
    }
}

/// What the writer thread is asked to do.
pub(crate) enum Request {
    Transact(Box<dyn Job>),
    /// Checkpoint cleanly (the process is about to end); reply when done.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// A queued transaction function with its reply channel, erased over its types.
pub(crate) trait Job: Send {
    /// Runs the function; true if it succeeded (its writes stay).
    fn run(&mut self, txn: &mut Txn<'_>) -> bool;
    /// Delivers the outcome once the batch's commit has finished (or failed).
    fn complete(self: Box<Self>, commit: Result<(), StoreError>);
}

/// What a transaction function's caller receives: the store's verdict, then the function's.
type Outcome<T, E> = Result<Result<T, E>, StoreError>;
type Reply<T, E> = oneshot::Sender<Outcome<T, E>>;

pub(crate) struct TypedJob<F, T, E> {
    f: Option<F>,
    result: Option<Result<T, E>>,
    reply: Reply<T, E>,
}

impl<F, T, E> TypedJob<F, T, E> {
    pub(crate) fn new(f: F) -> (TypedJob<F, T, E>, oneshot::Receiver<Outcome<T, E>>) {
        let (reply, rx) = oneshot::channel();
        (TypedJob { f: Some(f), result: None, reply }, rx)
    }
}

impl<F, T, E> Job for TypedJob<F, T, E>
where
    F: FnOnce(&mut Txn<'_>) -> Result<T, E> + Send,
    T: Send,
    E: Send,
{
    fn run(&mut self, txn: &mut Txn<'_>) -> bool {
        let Some(f) = self.f.take() else { return false };
        let result = f(txn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn complete(self: Box<Self>, commit: Result<(), StoreError>) {
        let outcome = match (commit, self.result) {
            (Ok(()), Some(result)) => Ok(result),
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(StoreError::Database("transaction function never ran".into())),
        };
        // The requester may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(outcome);
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) db: Arc<SharedDatabase>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) codec: Arc<Codec>,
    pub(crate) recent: Arc<RwLock<Recent>>,
    pub(crate) wal: Arc<Mutex<Wal>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) current_rv: u64,
    /// The resourceVersion the newest log record made durable.
    pub(crate) logged_rv: u64,
    /// The resourceVersion redb holds everything up to.
    pub(crate) checkpointed_rv: u64,
    /// The resourceVersion at open: a clean close needs no checkpoint when nothing happened.
    pub(crate) opened_rv: u64,
    /// No log record yet in this run: one must precede the first volatile write.
    pub(crate) fresh_run: bool,
    /// Unflushed bytes, or log bytes since the checkpoint, that trigger a checkpoint.
    pub(crate) checkpoint_bytes: usize,
    /// The redb file (its file system's free space decides whether a checkpoint may run).
    pub(crate) db_path: std::path::PathBuf,
    /// A checkpoint is waiting for room (said once).
    pub(crate) checkpoint_postponed: bool,
    /// The largest object a write may store (JSON bytes).
    pub(crate) max_object_bytes: usize,
    /// After redb failed: when to reopen it or checkpoint again, and the wait after that.
    pub(crate) redb_retry: Option<(Instant, Duration)>,
}

/// The first wait before redb is reopened or checkpointed again after it failed; doubled
/// each time it fails again, up to `REDB_RETRY_MAX`.
const REDB_RETRY_FIRST: Duration = Duration::from_secs(1);
const REDB_RETRY_MAX: Duration = Duration::from_secs(300);

pub(crate) fn spawn(writer: Writer) -> Result<Sender<Request>, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::Database(format!("cannot start the store writer thread: {e}")))?;
    Ok(tx)
}

impl Writer {
    fn run(mut self, rx: Receiver<Request>) {
        let mut closing = None;
        loop {
            // While redb could not be reopened, its next try is due even if nothing is asked.
            let reopen_at = self.redb_retry.filter(|_| !self.db.is_open()).map(|(at, _)| at);
            let next = match (closing.take(), reopen_at) {
                (Some(request), _) => Some(request),
                (None, None) => rx.recv().ok(),
                (None, Some(at)) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(request) => Some(request),
                    Err(RecvTimeoutError::Timeout) => {
                        self.redb_failed();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            let first = match next {
                Some(Request::Transact(job)) => job,
                Some(Request::Close(reply)) => {
                    let _ = reply.send(self.close());
                    continue;
                }
                None => break,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Request::Transact(job)) => batch.push(job),
                    Ok(close) => {
                        closing = Some(close);
                        break;
                    }
                    Err(_) => break,
                }
            }
            match self.commit_batch(&mut batch) {
                Ok(events) => {
                    if !events.is_empty() {
                        self.hub.publish(events, self.current_rv);
                    }
                    batch.into_iter().for_each(|job| job.complete(Ok(())));
                }
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "store commit failed; the batch is rejected");
                    self.counters.set_failing(Some(e.to_string()));
                    batch.into_iter().for_each(|job| job.complete(Err(e.for_each_job())));
                    if matches!(e, StoreError::Redb(_)) {
                        self.redb_failed();
                    }
                }
            }
            if self.checkpoint_due() {
                if let Err(e) = self.checkpoint(false) {
                    tracing::warn!(error = %e, "store checkpoint failed; the log keeps the changes");
                    self.counters.set_failing(Some(e.to_string()));
                    if matches!(e, StoreError::Redb(_)) {
                        self.redb_failed();
                    }
                }
            }
        }
        // Every handle is gone.
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "store checkpoint at close failed; the log keeps the changes");
        }
    }

    /// redb refuses everything after an I/O error until it is opened again: reopen it now
    /// (readers wait for it, a few milliseconds) and hold checkpoints back for a while, longer
    /// each time it fails again. Also the retry of a reopen that failed.
    fn redb_failed(&mut self) {
        let wait = self.redb_retry.map_or(REDB_RETRY_FIRST, |(_, wait)| (wait * 2).min(REDB_RETRY_MAX));
        self.redb_retry = Some((Instant::now() + wait, wait));
        match self.db.reopen() {
            Ok(()) => tracing::info!("store database reopened; its last complete checkpoint stands"),
            Err(e) => tracing::warn!(error = %e, retry_in = ?wait, "store database cannot be reopened yet"),
        }
    }

    /// A clean close leaves redb complete and says so (nothing is written when nothing
    /// happened since the last one). Writes after it are logged as usual, and the first
    /// volatile one is again preceded by a record.
    fn close(&mut self) -> Result<(), StoreError> {
        if self.current_rv == self.opened_rv && self.logged_rv <= self.checkpointed_rv {
            return Ok(());
        }
        self.checkpoint(true)?;
        self.opened_rv = self.current_rv;
        self.fresh_run = true;
        Ok(())
    }

    /// Runs a batch against the layers, logs its durable changes (one append, fsynced) and
    /// applies it to memory; returns its events.
    fn commit_batch(&mut self, batch: &mut [Box<dyn Job>]) -> Result<Vec<Arc<Event>>, StoreError> {
        let mut staged: BTreeMap<String, Staged> = BTreeMap::new();
        let mut events = Vec::new();
        let mut next_rv = self.current_rv + 1;
        {
            let db = self.db.hold()?;
            let recent = self.recent.read().map_err(|_| poisoned())?;
            let rtx = db.begin_read()?;
            let objects = read_table(&rtx, OBJECTS)?;
            let layers = Layers {
                recent: &recent,
                objects: objects.as_ref(),
                codec: &self.codec,
                max_object_bytes: self.max_object_bytes,
            };
            for job in batch.iter_mut() {
                let mut txn =
                    Txn { layers: &layers, staged: &mut staged, next_rv, undo: Vec::new(), events: Vec::new() };
                if job.run(&mut txn) {
                    next_rv = txn.next_rv;
                    events.append(&mut txn.events);
                } else {
                    txn.roll_back();
                }
            }
        }
        if events.is_empty() {
            // Nothing changed (reads, rejected writes): nothing is written.
            return Ok(Vec::new());
        }
        let new_rv = next_rv - 1;
        let durable: Vec<Change> =
            events.iter().filter(|e| !e.volatile).map(|e| (e.resource_version, e.encode(&self.codec))).collect();
        let volatile = durable.len() < events.len();
        let mark = volatile && (self.fresh_run || new_rv - self.logged_rv >= VOLATILE_SPAN / 2);
        if !durable.is_empty() || mark {
            let before = crate::thread_bytes_written();
            let appended = self.wal.lock().map_err(|_| poisoned())?.append(self.current_rv, new_rv, &durable)?;
            self.counters.set_failing(None);
            let written = crate::thread_bytes_written().zip(before).map_or(appended, |(after, before)| after - before);
            self.counters.log_bytes.fetch_add(written, Ordering::Relaxed);
            self.counters.log_records.fetch_add(1, Ordering::Relaxed);
            self.counters.durable_changes.fetch_add(durable.len() as u64, Ordering::Relaxed);
            self.logged_rv = new_rv;
            self.fresh_run = false;
        }
        let mut recent = self.recent.write().map_err(|_| poisoned())?;
        for (key, entry) in staged {
            if let Some(slot) = entry.durable {
                recent.set_durable(&key, slot);
            }
            match entry.volatile {
                Some(Some(bytes)) => {
                    recent.volatile.insert(key, bytes);
                }
                Some(None) => {
                    recent.volatile.remove(&key);
                }
                None => {}
            }
        }
        recent.rv = new_rv;
        self.current_rv = new_rv;
        self.counters.volatile_changes.fetch_add((events.len() - durable.len()) as u64, Ordering::Relaxed);
        Ok(events.into_iter().map(Arc::new).collect())
    }

    fn checkpoint_due(&mut self) -> bool {
        if self.redb_retry.is_some_and(|(at, _)| Instant::now() < at) {
            return false;
        }
        let unflushed = self.recent.read().map(|r| r.unflushed_bytes).unwrap_or(0);
        let logged = self.wal.lock().map(|w| w.bytes_after(self.checkpointed_rv)).unwrap_or(0);
        if unflushed < self.checkpoint_bytes && logged < 4 * self.checkpoint_bytes as u64 {
            return false;
        }
        // redb must never meet a full disk mid-commit (it then refuses everything until it is
        // reopened): with too little room the changes wait in the log, and in memory.
        let needed = 4 * unflushed as u64 + (4 << 20);
        match crate::free_bytes(&self.db_path) {
            Some(free) if free < needed => {
                if !self.checkpoint_postponed {
                    tracing::warn!(free, needed, "store checkpoint postponed: the disk is nearly full");
                    self.checkpoint_postponed = true;
                }
                false
            }
            _ => {
                self.checkpoint_postponed = false;
                true
            }
        }
    }

    /// Writes the unflushed changes into redb in one durable commit, then lets them go from
    /// memory and prunes the log. `clean`: the store is closing, and redb records the exact
    /// current resourceVersion, so the next open needs no gap for volatile writes.
    fn checkpoint(&mut self, clean: bool) -> Result<(), StoreError> {
        let unflushed: Vec<(String, Slot)> = {
            let recent = self.recent.read().map_err(|_| poisoned())?;
            recent.unflushed.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let rv = if clean { self.current_rv } else { self.logged_rv };
        let before = crate::thread_bytes_written();
        let db = self.db.hold()?;
        let wtx = db.begin_write()?;
        {
            let mut objects = wtx.open_table(OBJECTS)?;
            for (key, slot) in &unflushed {
                match slot {
                    Some(bytes) => {
                        objects.insert(key.as_str(), &bytes[..])?;
                    }
                    None => {
                        objects.remove(key.as_str())?;
                    }
                }
            }
            let mut meta = wtx.open_table(META)?;
            meta.insert(META_RV, rv)?;
            meta.insert(META_CLEAN, u64::from(clean))?;
        }
        wtx.commit()?;
        if let Some((after, before)) = crate::thread_bytes_written().zip(before) {
            self.counters.checkpoint_bytes.fetch_add(after - before, Ordering::Relaxed);
        }
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.counters.set_failing(None);
        self.redb_retry = None;
        {
            let mut recent = self.recent.write().map_err(|_| poisoned())?;
            // Only this thread adds to `unflushed`, so it holds exactly what was just written.
            recent.unflushed.clear();
            recent.unflushed_bytes = 0;
        }
        self.checkpointed_rv = self.logged_rv;
        self.wal.lock().map_err(|_| poisoned())?.prune(self.checkpointed_rv);
        Ok(())
    }
}
