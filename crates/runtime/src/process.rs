//! The `process` runtime: a container is a native process (and its children) in a process group
//! of its own, supervised directly by the agent.

use crate::logs::{pump, LogFile};
use crate::{ContainerSpec, Exit, RuntimeError};
use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

fn exit_of(status: std::process::ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit { code, signal: None, oom_killed: false },
        (None, Some(sig)) => Exit { code: 128 + sig, signal: Some(sig), oom_killed: false },
        (None, None) => Exit { code: -1, signal: None, oom_killed: false },
    }
}

/// A running native process container.
pub struct ProcessContainer {
    child: Child,
    pid: i32,
    exit: Option<Exit>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) attach: crate::AttachTarget,
}

impl ProcessContainer {
    /// Starts the container's process in its own process group, its output going to its log.
    pub async fn start(spec: &ContainerSpec) -> Result<ProcessContainer, RuntimeError> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(RuntimeError::NoCommand { container: spec.name.clone() });
        };
        let log = Arc::new(tokio::sync::Mutex::new(LogFile::open(&spec.log_path, spec.log_max_bytes).await?));
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(if spec.stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.working_dir {
            command.current_dir(dir);
        }
        let binds = prepare_binds(spec)?;
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // (prctl, unshare, mount) on memory prepared before the fork: async-signal-safe.
        // PDEATHSIG ties the container's life to the agent's: if the agent is killed, the
        // container is too, and the restarted agent starts it again instead of finding an
        // orphan it cannot supervise.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if !binds.is_empty() {
                    mount_volumes(&binds)?;
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| RuntimeError::Start {
            container: spec.name.clone(),
            command: spec.argv.join(" "),
            cause: e.to_string(),
        })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let attach = crate::AttachTarget::new(child.stdin.take());
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, "stdout", log.clone(), attach.output.clone())));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, "stderr", log, attach.output.clone())));
        }
        Ok(ProcessContainer { child, pid, exit: None, pumps, attach })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until the container's process exits (its last log lines are written first).
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let exit = match self.child.wait().await {
            Ok(status) => exit_of(status),
            Err(_) => Exit { code: -1, signal: None, oom_killed: false },
        };
        for pump in self.pumps.drain(..) {
            let _ = pump.await;
        }
        self.exit = Some(exit);
        exit
    }

    /// Graceful stop: SIGTERM to the whole process group, SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        self.signal(libc::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::info!(pid = self.pid, "container ignored SIGTERM for its grace period; killing it");
                self.signal(libc::SIGKILL);
            }
        }
        let exit = self.wait().await;
        // Children that outlived the leader go with the group.
        self.signal(libc::SIGKILL);
        exit
    }

    fn signal(&self, signal: i32) {
        if self.pid > 0 {
            // SAFETY: kill(2) on our own child's process group; no memory is involved.
            unsafe { libc::kill(-self.pid, signal) };
        }
    }
}

/// A volume mount prepared for the child: C strings made before the fork.
struct Bind {
    source: CString,
    destination: CString,
    read_only: bool,
}

/// Volumes of a process container appear at their mount paths in a mount namespace of the
/// process's own (the host's view is untouched). Mount points are created on the host if
/// missing, as kubelet does for hostPath; this needs root, as a car's agent is.
fn prepare_binds(spec: &ContainerSpec) -> Result<Vec<Bind>, RuntimeError> {
    if spec.mounts.is_empty() {
        return Ok(Vec::new());
    }
    let fail =
        |cause: String| RuntimeError::Start { container: spec.name.clone(), command: spec.argv.join(" "), cause };
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(fail("volumes of process containers are mounted in a private mount namespace, which needs the agent to run as root".into()));
    }
    spec.mounts
        .iter()
        .map(|m| {
            let create = if m.source.is_dir() {
                std::fs::create_dir_all(&m.destination)
            } else {
                m.destination.parent().map(std::fs::create_dir_all).unwrap_or(Ok(())).and_then(|_| {
                    std::fs::OpenOptions::new().create(true).append(true).open(&m.destination).map(|_| ())
                })
            };
            create.map_err(|e| fail(format!("cannot create mount point {}: {e}", m.destination.display())))?;
            let c = |p: &std::path::Path| {
                CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| fail(format!("bad path {}", p.display())))
            };
            Ok(Bind { source: c(&m.source)?, destination: c(&m.destination)?, read_only: m.read_only })
        })
        .collect()
}

/// In the forked child: a private mount namespace with the volumes bound in.
fn mount_volumes(binds: &[Bind]) -> std::io::Result<()> {
    let check = |rc: i32| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    let none = std::ptr::null();
    // SAFETY: unshare(2) and mount(2) with C strings that live in `binds` across the calls.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, none.cast()))?;
        for bind in binds {
            let flags = libc::MS_BIND | libc::MS_REC;
            check(libc::mount(bind.source.as_ptr(), bind.destination.as_ptr(), none, flags, none.cast()))?;
            if bind.read_only {
                let flags = flags | libc::MS_REMOUNT | libc::MS_RDONLY;
                check(libc::mount(none, bind.destination.as_ptr(), none, flags, none.cast()))?;
            }
        }
    }
    Ok(())
}

impl Drop for ProcessContainer {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, argv: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: "c".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: Some(dir.to_path_buf()),
            log_path: dir.join("c.log"),
            log_max_bytes: 1 << 20,
            mounts: vec![],
            isolation: crate::Isolation::Process,
            stdin: false,
        }
    }

    #[tokio::test]
    async fn container_start_logs_output_and_reports_exit_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c =
            ProcessContainer::start(&spec(dir.path(), &["/bin/sh", "-c", "echo $GREETING; echo oops >&2; exit 3"]))
                .await
                .expect("starts");
        assert_eq!(c.wait().await, Exit { code: 3, signal: None, oom_killed: false });
        let log = std::fs::read_to_string(dir.path().join("c.log")).expect("log");
        assert!(log.contains(" stdout F hello") && log.contains(" stderr F oops"), "{log}");
    }

    #[tokio::test]
    async fn container_stop_terminates_then_kills() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut polite = ProcessContainer::start(&spec(dir.path(), &["/bin/sleep", "60"])).await.expect("starts");
        assert_eq!(polite.stop(Duration::from_secs(5)).await.signal, Some(libc::SIGTERM));
        let mut stubborn =
            ProcessContainer::start(&spec(dir.path(), &["/bin/sh", "-c", "trap '' TERM; echo armed; sleep 60 & wait"]))
                .await
                .expect("starts");
        // Signal only once the trap is set.
        while !std::fs::read_to_string(dir.path().join("c.log")).unwrap_or_default().contains("armed") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let exit = stubborn.stop(Duration::from_millis(300)).await;
        assert_eq!(exit.signal, Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn volumes_appear_at_their_mount_paths_only_for_the_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).expect("volume");
        std::fs::write(volume.join("config"), "from the volume").expect("file");
        let inside = dir.path().join("etc-app");
        let mut spec = spec(dir.path(), &["/bin/sh", "-c", "cat etc-app/config; touch etc-app/new"]);
        spec.mounts = vec![crate::Mount { source: volume.clone(), destination: inside.clone(), read_only: true }];
        let mut c = ProcessContainer::start(&spec).await.expect("starts");
        assert_eq!(c.wait().await.code, 1, "the read-only volume refuses writes");
        let log = std::fs::read_to_string(dir.path().join("c.log")).expect("log");
        assert!(log.contains("from the volume"), "{log}");
        assert!(!inside.join("config").exists(), "the host does not see the mount");
    }

    #[tokio::test]
    async fn container_start_fails_clearly_for_a_missing_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ProcessContainer::start(&spec(dir.path(), &["/nonexistent/app"])).await.err().expect("fails");
        assert!(err.to_string().contains("/nonexistent/app"), "{err}");
        let err = ProcessContainer::start(&spec(dir.path(), &[])).await.err().expect("fails");
        assert!(matches!(err, RuntimeError::NoCommand { .. }));
    }
}
