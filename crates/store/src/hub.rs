//! The in-memory side of the change log: a ring of recent events and a notifier, so live
//! watchers never touch the disk.

use crate::seal::Codec;
use crate::StoreError;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    fn parse(s: &str) -> Option<EventType> {
        match s {
            "ADDED" => Some(EventType::Added),
            "MODIFIED" => Some(EventType::Modified),
            "DELETED" => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// One committed change. For `Deleted`, `object` is the last state, stamped with the
/// resourceVersion of the deletion (as Kubernetes does).
#[derive(Debug, Clone)]
pub struct Event {
    pub resource_version: u64,
    pub kind: EventType,
    pub key: String,
    pub object: Arc<Value>,
    /// Kept in memory only (see `Txn::put_volatile`).
    pub volatile: bool,
    /// The object's size as stored (JSON bytes): what the ring budgets.
    pub size: usize,
}

impl Event {
    /// The persisted form in the change log (sealed where the object is).
    pub(crate) fn encode(&self, codec: &Codec) -> Vec<u8> {
        let json = serde_json::to_vec(&json!({"type": self.kind.as_str(), "key": self.key, "object": &*self.object}))
            .unwrap_or_default();
        codec.seal(&self.key, &change_place(self.resource_version), json)
    }
}

/// Where a change-log entry is stored, for sealing.
fn change_place(rv: u64) -> String {
    format!("change {rv}")
}

pub(crate) fn decode_change(codec: &Codec, rv: u64, bytes: &[u8]) -> Result<Event, StoreError> {
    let key = change_place(rv);
    let json = codec.open(&key, bytes)?;
    let mut value: Value =
        serde_json::from_slice(&json).map_err(|source| StoreError::Corrupt { key: key.clone(), source })?;
    let kind = value["type"]
        .as_str()
        .and_then(EventType::parse)
        .ok_or_else(|| StoreError::Database(format!("{key}: bad event type")))?;
    let object_key = value["key"].as_str().unwrap_or("").to_string();
    let size = json.len();
    Ok(Event {
        resource_version: rv,
        kind,
        key: object_key,
        object: Arc::new(value["object"].take()),
        volatile: false,
        size,
    })
}

pub(crate) struct Hub {
    ring: Mutex<Ring>,
    capacity: usize,
    max_bytes: usize,
    latest: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    /// The stored size of the events held.
    bytes: usize,
    /// The newest volatile event that left the ring: the persisted log cannot stand in for
    /// the ring at or before it.
    evicted_volatile: u64,
}

/// The ring's events after a resourceVersion, and what the log must supply before them.
pub(crate) struct RingTail {
    pub(crate) events: Vec<Arc<Event>>,
    /// The oldest resourceVersion the ring holds (None: empty).
    pub(crate) first: Option<u64>,
    pub(crate) evicted_volatile: u64,
}

impl Hub {
    pub(crate) fn new(current_rv: u64, capacity: usize, max_bytes: usize) -> Hub {
        let (latest, _) = tokio::sync::watch::channel(current_rv);
        Hub { ring: Mutex::new(Ring::default()), capacity: capacity.max(1), max_bytes, latest }
    }

    pub(crate) fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Appends committed events and wakes the watchers.
    pub(crate) fn publish(&self, events: Vec<Arc<Event>>, new_rv: u64) {
        if let Ok(mut ring) = self.ring.lock() {
            for event in events {
                ring.bytes += event.size;
                ring.events.push_back(event);
                // Bounded in count and in bytes (parsed objects take several times their JSON),
                // always keeping the newest event.
                while ring.events.len() > self.capacity || (ring.bytes > self.max_bytes && ring.events.len() > 1) {
                    let Some(evicted) = ring.events.pop_front() else { break };
                    ring.bytes -= evicted.size;
                    if evicted.volatile {
                        ring.evicted_volatile = evicted.resource_version;
                    }
                }
            }
        }
        self.latest.send_replace(new_rv);
    }

    /// Events after `rv` if the ring covers them all (None: ask the persisted log).
    pub(crate) fn events_after(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        let ring = self.ring.lock().ok()?;
        let latest = self.latest();
        if rv >= latest {
            return Some(Vec::new());
        }
        let first = ring.events.front()?.resource_version;
        if rv + 1 < first {
            return None;
        }
        let start = ring.events.partition_point(|e| e.resource_version <= rv);
        Some(ring.events.range(start..).cloned().collect())
    }

    /// Everything the ring holds, for a reader going back to the log for older events.
    pub(crate) fn tail(&self) -> RingTail {
        match self.ring.lock() {
            Ok(ring) => RingTail {
                events: ring.events.iter().cloned().collect(),
                first: ring.events.front().map(|e| e.resource_version),
                evicted_volatile: ring.evicted_volatile,
            },
            Err(_) => RingTail { events: Vec::new(), first: None, evicted_volatile: u64::MAX },
        }
    }
}
