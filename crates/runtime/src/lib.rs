//! Workload runtimes: what turns a container of a pod into running processes on this computer.
//!
//! A runtime starts a container from a [`ContainerSpec`] (already resolved: command, env,
//! working directory, where its logs go), reports when it exits and stops it gracefully
//! (SIGTERM, then SIGKILL after the grace period). It knows nothing about Kubernetes objects or
//! the API server: the agent's pod loop decides what runs and reports what it sees.
//!
//! Runtimes: `process` (a native executable, supervised directly) and the OCI runtimes `runc`
//! and `crun` (a container from an image, see [`oci`]), behind one interface.

mod exec;
mod logs;
mod oci;
mod process;
mod usage;

pub use exec::{connect_in_network_of, ExecSession, ExecTarget, Streams};
pub use logs::LogFile;
pub use usage::{node_usage, Usage, UsageSource};

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {container:?}: {command:?} cannot start: {cause}")]
    Start { container: String, command: String, cause: String },
    #[error("container {container:?}: no command given (a process container needs `command`)")]
    NoCommand { container: String },
    #[error("log file {path}: {cause}")]
    Log { path: PathBuf, cause: String },
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; 128 + signal for a killed process, as shells and Kubernetes report it.
    pub code: i32,
    pub signal: Option<i32>,
    /// The kernel killed it for reaching its memory limit.
    pub oom_killed: bool,
}

impl Exit {
    /// Kubernetes' reason for a terminated container.
    pub fn reason(&self) -> &'static str {
        match (self.oom_killed, self.code) {
            (true, _) => "OOMKilled",
            (false, 0) => "Completed",
            _ => "Error",
        }
    }
}

/// A volume as a container sees it: a host directory or file at a path inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub read_only: bool,
}

/// How a container is isolated from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// A native process of the host (its volumes bind-mounted in a mount namespace of its own).
    Process,
    /// An OCI container run by `runc` or `crun`.
    Oci(Box<OciOptions>),
}

/// Everything an OCI container needs beyond the common [`ContainerSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciOptions {
    /// `runc` or `crun` (a name on PATH or a path).
    pub binary: String,
    /// The runtime's state directory (`--root`).
    pub state_root: PathBuf,
    /// The container id, unique on this node.
    pub id: String,
    /// The bundle directory (config.json, the rootfs mount point, the writable layer).
    pub bundle: PathBuf,
    /// The image's unpacked rootfs (the read-only lower layer).
    pub image_rootfs: PathBuf,
    pub hostname: String,
    /// Share the host's hostname (hostNetwork pods) instead of the pod's own.
    pub host_uts: bool,
    pub uid: u32,
    pub gid: u32,
    pub supplemental_gids: Vec<u32>,
    pub read_only_root: bool,
    pub privileged: bool,
    pub no_new_privileges: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub memory_limit: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    pub cpu_request_millis: Option<u64>,
    /// The container's cgroup, relative to the cgroup root (e.g. `/axle/<id>`).
    pub cgroup_path: String,
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
    pub mounts: Vec<Mount>,
    pub isolation: Isolation,
    /// The container keeps a standard input that `kubectl attach -i` writes to (`stdin: true`).
    pub stdin: bool,
}

/// What `kubectl attach` reaches of a running container: its output as it is written
/// (`true` for stderr), and its standard input when it keeps one.
#[derive(Clone)]
pub struct AttachTarget {
    pub output: tokio::sync::broadcast::Sender<(bool, Vec<u8>)>,
    pub stdin: Option<std::sync::Arc<tokio::sync::Mutex<Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>>>>,
}

impl std::fmt::Debug for AttachTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachTarget").field("stdin", &self.stdin.is_some()).finish()
    }
}

impl AttachTarget {
    /// A target with no stdin whose output nobody feeds (tests of what holds targets).
    pub fn detached() -> AttachTarget {
        AttachTarget { output: tokio::sync::broadcast::channel(1).0, stdin: None }
    }

    /// A target whose output `pump`s feed, with the container's standard input if any.
    pub(crate) fn new(stdin: Option<impl tokio::io::AsyncWrite + Send + Sync + Unpin + 'static>) -> AttachTarget {
        let (output, _) = tokio::sync::broadcast::channel(256);
        let stdin = stdin.map(|s| {
            let boxed: Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin> = Box::new(s);
            std::sync::Arc::new(tokio::sync::Mutex::new(boxed))
        });
        AttachTarget { output, stdin }
    }
}

/// A running container, whatever its runtime.
pub enum Container {
    Process(process::ProcessContainer),
    Oci(oci::OciContainer),
}

impl Container {
    /// Starts the container; its output goes to its log.
    pub async fn start(spec: &ContainerSpec) -> Result<Container, RuntimeError> {
        match &spec.isolation {
            Isolation::Process => process::ProcessContainer::start(spec).await.map(Container::Process),
            Isolation::Oci(options) => oci::OciContainer::start(spec, options).await.map(Container::Oci),
        }
    }

    pub fn pid(&self) -> i32 {
        match self {
            Container::Process(c) => c.pid(),
            Container::Oci(c) => c.pid(),
        }
    }

    /// Where this container's CPU and memory usage is read.
    pub fn usage_source(&self) -> UsageSource {
        match self {
            // Started as the leader of its own process group.
            Container::Process(c) => UsageSource::ProcessGroup(c.pid()),
            Container::Oci(c) => UsageSource::Cgroup(c.cgroup_path().to_string()),
        }
    }

    /// The id Kubernetes shows (`<runtime>://<id>`).
    /// Where `kubectl attach` reaches this container.
    pub fn attach_target(&self) -> AttachTarget {
        match self {
            Container::Process(c) => c.attach.clone(),
            Container::Oci(c) => c.attach.clone(),
        }
    }

    /// Where `kubectl exec` enters this container.
    pub fn exec_target(&self) -> ExecTarget {
        match self {
            Container::Process(c) => ExecTarget::Process { pid: c.pid() },
            Container::Oci(c) => c.exec_target(),
        }
    }

    pub fn container_id(&self) -> String {
        match self {
            Container::Process(c) => format!("process://{}", c.pid()),
            Container::Oci(c) => format!("oci://{}", c.id()),
        }
    }

    /// Waits until the container exits (its last log lines are written first).
    pub async fn wait(&mut self) -> Exit {
        match self {
            Container::Process(c) => c.wait().await,
            Container::Oci(c) => c.wait().await,
        }
    }

    /// Graceful stop: SIGTERM, SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        match self {
            Container::Process(c) => c.stop(grace).await,
            Container::Oci(c) => c.stop(grace).await,
        }
    }
}

pub use oci::{remove_containers, unmount_under};
