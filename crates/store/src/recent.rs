//! What the store holds in memory above redb: durable changes logged but not yet checkpointed
//! into redb, and volatile objects (liveness that is served but never written to flash).
//!
//! A read looks at the volatile version of a key first, then at its unflushed durable version,
//! then at redb. The writer thread is the only one to change this; readers take the lock while
//! they open their redb snapshot, and a checkpoint empties `unflushed` only after redb has
//! committed the same changes, so a reader always sees every acknowledged change.

use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) type Bytes = Arc<[u8]>;

/// A key's state in one layer: a stored value, or deleted (None).
pub(crate) type Slot = Option<Bytes>;

#[derive(Default)]
pub(crate) struct Recent {
    /// Durable changes since the last checkpoint, by key (None: deleted).
    pub(crate) unflushed: BTreeMap<String, Slot>,
    pub(crate) unflushed_bytes: usize,
    /// Volatile versions, over whatever durable version a key has.
    pub(crate) volatile: BTreeMap<String, Bytes>,
    /// The store's resourceVersion as of these contents (a list's resourceVersion).
    pub(crate) rv: u64,
}

/// What a layer says about a key: its value, that it was deleted, or nothing (look below).
pub(crate) enum Found {
    Value(Bytes),
    Deleted,
    Unknown,
}

impl Recent {
    pub(crate) fn durable(&self, key: &str) -> Found {
        match self.unflushed.get(key) {
            Some(Some(bytes)) => Found::Value(bytes.clone()),
            Some(None) => Found::Deleted,
            None => Found::Unknown,
        }
    }

    pub(crate) fn set_durable(&mut self, key: &str, slot: Slot) {
        let size = |slot: &Slot| key.len() + slot.as_ref().map_or(0, |b| b.len());
        self.unflushed_bytes += size(&slot);
        if let Some(replaced) = self.unflushed.insert(key.to_string(), slot) {
            self.unflushed_bytes -= size(&replaced);
        }
    }

    /// The entries under `prefix` from `start` on, volatile over unflushed, in key order.
    pub(crate) fn range(&self, prefix: &str, start: &str) -> BTreeMap<String, Slot> {
        let in_prefix = |k: &&String| k.starts_with(prefix);
        let mut out: BTreeMap<String, Slot> = self
            .unflushed
            .range::<str, _>(from(start))
            .take_while(|(k, _)| in_prefix(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in self.volatile.range::<str, _>(from(start)).take_while(|(k, _)| in_prefix(k)) {
            out.insert(k.clone(), Some(v.clone()));
        }
        out
    }
}

/// The keys from `start` on, as a range over `String` keys.
pub(crate) fn from(start: &str) -> (std::ops::Bound<&str>, std::ops::Bound<&str>) {
    (std::ops::Bound::Included(start), std::ops::Bound::Unbounded)
}

/// Merges redb's entries (in key order) with the layers' (`overlay`, in key order) into one
/// walk in key order; the overlay wins on equal keys and its `None` hides redb's entry.
pub(crate) struct Merge<I: Iterator<Item = (String, Bytes)>> {
    base: std::iter::Peekable<I>,
    overlay: std::iter::Peekable<std::collections::btree_map::IntoIter<String, Slot>>,
}

impl<I: Iterator<Item = (String, Bytes)>> Merge<I> {
    pub(crate) fn new(base: I, overlay: BTreeMap<String, Slot>) -> Self {
        Merge { base: base.peekable(), overlay: overlay.into_iter().peekable() }
    }
}

impl<I: Iterator<Item = (String, Bytes)>> Iterator for Merge<I> {
    type Item = (String, Bytes);

    fn next(&mut self) -> Option<(String, Bytes)> {
        loop {
            let order = match (self.base.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((b, _)), Some((o, _))) => b.cmp(o),
            };
            if order == std::cmp::Ordering::Equal {
                // The overlay's version replaces redb's.
                self.base.next();
            }
            let take_overlay = order != std::cmp::Ordering::Less;
            if !take_overlay {
                return self.base.next();
            }
            match self.overlay.next() {
                Some((k, Some(v))) => return Some((k, v)),
                Some((_, None)) => continue,
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Bytes {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn merge_overlays_replace_hide_and_add_in_key_order() {
        let base = vec![("a".to_string(), bytes("a0")), ("b".to_string(), bytes("b0")), ("d".to_string(), bytes("d0"))];
        let overlay: BTreeMap<String, Slot> =
            [("b".to_string(), None), ("c".to_string(), Some(bytes("c1"))), ("d".to_string(), Some(bytes("d1")))]
                .into_iter()
                .collect();
        let merged: Vec<(String, String)> =
            Merge::new(base.into_iter(), overlay).map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
        assert_eq!(
            merged,
            [
                ("a".to_string(), "a0".to_string()),
                ("c".to_string(), "c1".to_string()),
                ("d".to_string(), "d1".to_string())
            ]
        );
    }
}
