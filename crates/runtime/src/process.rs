//! The `process` runtime: a container is a native process (and its children) in a process group
//! of its own, supervised directly by the agent.

use crate::logs::{pump, LogFile};
use crate::{ContainerSpec, RuntimeError};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; 128 + signal for a killed process, as shells and Kubernetes report it.
    pub code: i32,
    pub signal: Option<i32>,
}

impl Exit {
    fn from_status(status: std::process::ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit { code, signal: None },
            (None, Some(sig)) => Exit { code: 128 + sig, signal: Some(sig) },
            (None, None) => Exit { code: -1, signal: None },
        }
    }
}

/// A running container.
pub struct Container {
    child: Child,
    pid: i32,
    exit: Option<Exit>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

impl Container {
    /// Starts the container's process in its own process group, its output going to its log.
    pub async fn start(spec: &ContainerSpec) -> Result<Container, RuntimeError> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(RuntimeError::NoCommand { container: spec.name.clone() });
        };
        let log = Arc::new(tokio::sync::Mutex::new(LogFile::open(&spec.log_path, spec.log_max_bytes).await?));
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.working_dir {
            command.current_dir(dir);
        }
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe. It ties the container's life to the agent's: if the agent
        // is killed, the container is too, and the restarted agent starts it again instead of
        // finding an orphan it cannot supervise.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
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
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, "stdout", log.clone())));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, "stderr", log)));
        }
        Ok(Container { child, pid, exit: None, pumps })
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
            Ok(status) => Exit::from_status(status),
            Err(_) => Exit { code: -1, signal: None },
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

impl Drop for Container {
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
        }
    }

    #[tokio::test]
    async fn container_start_logs_output_and_reports_exit_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Container::start(&spec(dir.path(), &["/bin/sh", "-c", "echo $GREETING; echo oops >&2; exit 3"]))
            .await
            .expect("starts");
        assert_eq!(c.wait().await, Exit { code: 3, signal: None });
        let log = std::fs::read_to_string(dir.path().join("c.log")).expect("log");
        assert!(log.contains(" stdout F hello") && log.contains(" stderr F oops"), "{log}");
    }

    #[tokio::test]
    async fn container_stop_terminates_then_kills() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut polite = Container::start(&spec(dir.path(), &["/bin/sleep", "60"])).await.expect("starts");
        assert_eq!(polite.stop(Duration::from_secs(5)).await.signal, Some(libc::SIGTERM));
        let mut stubborn =
            Container::start(&spec(dir.path(), &["/bin/sh", "-c", "trap '' TERM; echo armed; sleep 60 & wait"]))
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
    async fn container_start_fails_clearly_for_a_missing_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Container::start(&spec(dir.path(), &["/nonexistent/app"])).await.err().expect("fails");
        assert!(err.to_string().contains("/nonexistent/app"), "{err}");
        let err = Container::start(&spec(dir.path(), &[])).await.err().expect("fails");
        assert!(matches!(err, RuntimeError::NoCommand { .. }));
    }
}
