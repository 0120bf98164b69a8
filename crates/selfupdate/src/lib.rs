//! Axle updates itself A/B, on trial, with automatic fallback.
//!
//! - [`stamp`]: the version a binary reports, stamped into it at release (like Go's
//!   `-ldflags -X`), readable from a file without running it;
//! - [`slots`]: the two slots under `DATA_DIR/selfupdate` and the boot record that says which
//!   one is active and which one is on trial, replaced atomically;
//! - [`launcher`]: `axle launch`, the small parent process that starts the right slot, lets a
//!   trial version run until it reports healthy (then commits it) and falls back to the active
//!   slot when the trial exits, hangs past its deadline or fails its self-check too often.

pub mod launcher;
pub mod slots;
pub mod stamp;

pub use slots::{BootRecord, Slot, Slots, Trial, TrialOutcome};

#[derive(Debug, thiserror::Error)]
pub enum SelfUpdateError {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SelfUpdateError + '_ {
    move |source| SelfUpdateError::Io { path: path.to_path_buf(), source }
}
