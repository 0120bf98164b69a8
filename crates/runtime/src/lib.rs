//! Workload runtimes: what turns a container of a pod into running processes on this computer.
//!
//! A runtime starts a container from a [`ContainerSpec`] (already resolved: command, env,
//! working directory, where its logs go), reports when it exits and stops it gracefully
//! (SIGTERM, then SIGKILL after the grace period). It knows nothing about Kubernetes objects or
//! the API server: the agent's pod loop decides what runs and reports what it sees.
//!
//! Runtimes: `process` (a native executable, supervised directly) today; OCI runtimes (runc,
//! crun) plug in behind the same interface.

mod logs;
mod process;

pub use logs::LogFile;
pub use process::{Container, Exit};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {container:?}: {command:?} cannot start: {cause}")]
    Start { container: String, command: String, cause: String },
    #[error("container {container:?}: no command given (a process container needs `command`)")]
    NoCommand { container: String },
    #[error("log file {path}: {cause}")]
    Log { path: PathBuf, cause: String },
}

/// A container, resolved for starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    /// Executable and arguments (`command` + `args`).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// Where stdout and stderr go (size-bounded, rotated once).
    pub log_path: PathBuf,
    /// Bytes a log file may reach before it is rotated to `<log>.1`.
    pub log_max_bytes: u64,
}
