//! The single writer thread: group commit of queued transactions, resourceVersion assignment,
//! change-log append and pruning, then publication to watchers — in that order, so nothing is
//! visible or acknowledged before it is durable.

use crate::hub::{Event, EventType, Hub};
use crate::seal::Codec;
use crate::{decode, StoreError, CHANGES, OBJECTS};
use redb::{Database, ReadableTable, WriteTransaction};
use serde_json::Value;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most jobs folded into one commit.
const MAX_BATCH: usize = 256;

/// The view of the store one transaction function gets.
pub struct Txn<'a> {
    wtx: &'a WriteTransaction,
    codec: &'a Codec,
    next_rv: u64,
    undo: Vec<(String, Option<Vec<u8>>)>,
    events: Vec<Event>,
}

impl<'a> Txn<'a> {
    pub fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let table = self.wtx.open_table(OBJECTS)?;
        let bytes = table.get(key)?;
        bytes.map(|b| decode(self.codec, key, b.value())).transpose()
    }

    /// Every object whose key starts with `prefix`, with its key.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let table = self.wtx.open_table(OBJECTS)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..)? {
            let (k, v) = entry?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_string(), decode(self.codec, k, v.value())?));
        }
        Ok(out)
    }

    /// The resourceVersion the next write of this transaction will get.
    pub fn next_resource_version(&self) -> u64 {
        self.next_rv
    }

    /// Stores `obj` under `key`, stamping `metadata.resourceVersion`; returns the stored object.
    pub fn put(&mut self, key: &str, mut obj: Value) -> Result<Value, StoreError> {
        let rv = self.next_rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let json = serde_json::to_vec(&obj).map_err(|source| StoreError::Corrupt { key: key.to_string(), source })?;
        let bytes = self.codec.seal(key, key, json);
        let previous = {
            let mut table = self.wtx.open_table(OBJECTS)?;
            let previous = table.insert(key, bytes.as_slice())?.map(|g| g.value().to_vec());
            previous
        };
        let kind = if previous.is_some() { EventType::Modified } else { EventType::Added };
        self.undo.push((key.to_string(), previous));
        self.next_rv += 1;
        self.events.push(Event { resource_version: rv, kind, key: key.to_string(), object: Arc::new(obj.clone()) });
        Ok(obj)
    }

    /// Removes the object under `key`; returns its last state stamped with the deletion's
    /// resourceVersion, or None when there was nothing to delete.
    pub fn delete(&mut self, key: &str) -> Result<Option<Value>, StoreError> {
        let previous = {
            let mut table = self.wtx.open_table(OBJECTS)?;
            let previous = table.remove(key)?.map(|g| g.value().to_vec());
            previous
        };
        let Some(bytes) = previous else { return Ok(None) };
        let mut obj = decode(self.codec, key, &bytes)?;
        self.undo.push((key.to_string(), Some(bytes)));
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
        });
        Ok(Some(obj))
    }

    /// Reverts this job's writes (the function returned an error).
    fn roll_back(&mut self) -> Result<(), StoreError> {
        let mut table = self.wtx.open_table(OBJECTS)?;
        while let Some((key, previous)) = self.undo.pop() {
            match previous {
                Some(bytes) => {
                    table.insert(key.as_str(), bytes.as_slice())?;
                }
                None => {
                    table.remove(key.as_str())?;
                }
            }
        }
        self.events.clear();
        Ok(())
    }
}

/// A queued transaction function with its reply channel, erased over its types.
pub(crate) trait Job: Send {
    /// Runs the function; true if it succeeded (its writes stay).
    fn run(&mut self, txn: &mut Txn<'_>) -> bool;
    /// Delivers the outcome once the batch's commit has finished (or failed).
    fn complete(self: Box<Self>, commit: Result<(), String>);
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

    fn complete(self: Box<Self>, commit: Result<(), String>) {
        let outcome = match (commit, self.result) {
            (Ok(()), Some(result)) => Ok(result),
            (Err(e), _) => Err(StoreError::Database(e)),
            (Ok(()), None) => Err(StoreError::Database("transaction function never ran".into())),
        };
        // The requester may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(outcome);
    }
}

pub(crate) fn spawn(
    db: Arc<Database>,
    hub: Arc<Hub>,
    codec: Arc<Codec>,
    current_rv: u64,
    log_capacity: u64,
) -> Result<Sender<Box<dyn Job>>, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel::<Box<dyn Job>>();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer_loop(&db, &hub, &codec, rx, current_rv, log_capacity))
        .map_err(|e| StoreError::Database(format!("cannot start the store writer thread: {e}")))?;
    Ok(tx)
}

fn writer_loop(
    db: &Database,
    hub: &Hub,
    codec: &Codec,
    rx: Receiver<Box<dyn Job>>,
    mut current_rv: u64,
    log_capacity: u64,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit_batch(db, codec, &mut batch, current_rv, log_capacity) {
            Ok((new_rv, events)) => {
                current_rv = new_rv;
                if !events.is_empty() {
                    hub.publish(events, new_rv);
                }
                batch.into_iter().for_each(|job| job.complete(Ok(())));
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "store commit failed; the batch is rejected");
                let message = e.to_string();
                batch.into_iter().for_each(|job| job.complete(Err(message.clone())));
            }
        }
    }
}

/// Runs a batch in one redb transaction; returns the new resourceVersion and its events.
fn commit_batch(
    db: &Database,
    codec: &Codec,
    batch: &mut [Box<dyn Job>],
    current_rv: u64,
    log_capacity: u64,
) -> Result<(u64, Vec<Arc<Event>>), StoreError> {
    let wtx = db.begin_write()?;
    let mut events = Vec::new();
    let mut next_rv = current_rv + 1;
    for job in batch.iter_mut() {
        let mut txn = Txn { wtx: &wtx, codec, next_rv, undo: Vec::new(), events: Vec::new() };
        if job.run(&mut txn) {
            next_rv = txn.next_rv;
            events.append(&mut txn.events);
        } else {
            txn.roll_back()?;
        }
    }
    if events.is_empty() {
        // Nothing changed (reads, rejected writes): no commit, no disk write.
        wtx.abort()?;
        return Ok((current_rv, Vec::new()));
    }
    let new_rv = next_rv - 1;
    {
        let mut changes = wtx.open_table(CHANGES)?;
        for event in &events {
            changes.insert(event.resource_version, event.encode(codec).as_slice())?;
        }
        // Pruning keeps at least the newest entry: its key is the current resourceVersion.
        let cutoff = new_rv.saturating_sub(log_capacity.max(1));
        loop {
            let first = changes.first()?.map(|(k, _)| k.value());
            match first {
                Some(first) if first <= cutoff => {
                    changes.remove(first)?;
                }
                _ => break,
            }
        }
    }
    wtx.commit()?;
    Ok((new_rv, events.into_iter().map(Arc::new).collect()))
}
