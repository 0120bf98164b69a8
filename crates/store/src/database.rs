//! The redb handle that readers and the writer share, and its reopening.
//!
//! Why reopening: after one failed I/O (EIO from a failing flash block, EPERM from a file made
//! immutable underneath) redb refuses every further transaction, reads included, with "Previous
//! I/O error", until the file is opened again. The store's log keeps every change redb has not
//! taken yet, so the writer may drop the handle and open the file anew once the cause is gone:
//! redb rolls back to its last complete commit and the next checkpoint writes the rest again.

use crate::StoreError;
use redb::Database;
use std::sync::{RwLock, RwLockReadGuard};

/// Opens the database file; called at open and at every reopen.
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

pub(crate) struct SharedDatabase {
    /// None while a reopen failed (the cause is still there); the next one tries again.
    current: RwLock<Option<Database>>,
    opener: Opener,
}

/// A reader's hold on the database: a reopen waits until every hold is released, so no read
/// transaction outlives the handle it was begun from.
pub(crate) struct Held<'a>(RwLockReadGuard<'a, Option<Database>>);

impl Held<'_> {
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        use redb::ReadableDatabase as _;
        let db = self.0.as_ref().ok_or_else(unavailable)?;
        Ok(db.begin_read()?)
    }

    pub(crate) fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let db = self.0.as_ref().ok_or_else(unavailable)?;
        Ok(db.begin_write()?)
    }
}

fn unavailable() -> StoreError {
    StoreError::Database("the store's database could not be reopened after an I/O error; it is retried".into())
}

impl SharedDatabase {
    pub(crate) fn open(opener: Opener) -> Result<SharedDatabase, StoreError> {
        let db = opener()?;
        Ok(SharedDatabase { current: RwLock::new(Some(db)), opener })
    }

    pub(crate) fn hold(&self) -> Result<Held<'_>, StoreError> {
        self.current.read().map(Held).map_err(|_| crate::poisoned())
    }

    /// Whether a handle is open (false after a reopen failed).
    pub(crate) fn is_open(&self) -> bool {
        self.current.read().is_ok_and(|current| current.is_some())
    }

    /// Closes the handle and opens the file again (waiting for readers to finish).
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let mut current = self.current.write().map_err(|_| crate::poisoned())?;
        // The old handle must be gone first: redb locks its file against a second opener.
        drop(current.take());
        *current = Some((self.opener)()?);
        Ok(())
    }
}
