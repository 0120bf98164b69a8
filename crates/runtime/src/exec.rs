//! Another process in a running container (`kubectl exec`, `kubectl cp`): for OCI containers
//! through the runtime's own `exec` (the container's namespaces, cgroup, user and environment),
//! for `process` containers as a process in the container's mount namespace, working
//! directory and environment.
//!
//! With a terminal (`-t`) the process gets a pseudo-terminal whose other end the agent holds:
//! `runc exec -t` runs with that terminal as its controlling terminal, so when the agent sets
//! the window size (`resize`), the kernel tells runc (SIGWINCH) and runc resizes the
//! container's own terminal.

use crate::{Exit, RuntimeError};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};

/// Where a running container can be entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecTarget {
    Oci { binary: String, state_root: PathBuf, id: String, pid: i32 },
    Process { pid: i32 },
}

impl ExecTarget {
    /// The container's main process (its namespaces are the container's).
    pub fn pid(&self) -> i32 {
        match self {
            ExecTarget::Oci { pid, .. } | ExecTarget::Process { pid } => *pid,
        }
    }
}

/// Connects to `port` on the loopback of the network namespace of process `pid` (a pod's
/// `localhost`, for `kubectl port-forward`). The socket is made on a thread of its own that
/// joins the namespace and then ends, so nothing else of the agent ever runs in it.
pub async fn connect_in_network_of(pid: i32, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("port-forward".into()).spawn(move || {
        // SAFETY: setns(2) on this thread only, with a descriptor it holds open.
        let joined = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
        let socket = match joined {
            true => std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                std::time::Duration::from_secs(5),
            ),
            false => Err(std::io::Error::last_os_error()),
        };
        let _ = tx.send(socket);
    })?;
    let socket = rx.await.map_err(std::io::Error::other)??;
    socket.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(socket)
}

/// A process started in a container.
pub struct ExecSession {
    child: Child,
    pub stdin: Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>,
    pub stdout: Option<Box<dyn AsyncRead + Send + Sync + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Sync + Unpin>>,
    /// The agent's end of the terminal, when there is one (window size).
    terminal: Option<OwnedFd>,
}

/// Which standard streams the caller wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecSession {
    /// Starts `argv` in the container.
    pub fn start(target: &ExecTarget, argv: &[String], streams: Streams) -> Result<ExecSession, RuntimeError> {
        let fail =
            |cause: String| RuntimeError::Start { container: format!("{target:?}"), command: argv.join(" "), cause };
        if argv.is_empty() {
            return Err(fail("no command given".into()));
        }
        let mut command = match target {
            ExecTarget::Oci { binary, state_root, id, .. } => {
                let mut command = Command::new(binary);
                command.arg("--root").arg(state_root).arg("exec");
                if streams.tty {
                    command.arg("--tty");
                }
                command.arg(id).args(argv);
                command
            }
            ExecTarget::Process { pid } => process_command(*pid, argv).map_err(|e| fail(e.to_string()))?,
        };
        command.kill_on_drop(true);
        let terminal = if streams.tty { Some(open_terminal().map_err(|e| fail(e.to_string()))?) } else { None };
        match &terminal {
            Some((_, follower)) => {
                let copy = || follower.try_clone().map(Stdio::from).map_err(|e| fail(e.to_string()));
                command.stdin(copy()?).stdout(copy()?).stderr(copy()?);
                // SAFETY: setsid(2) and ioctl(2) in the forked child before exec, on its own
                // standard input: async-signal-safe.
                unsafe {
                    command.pre_exec(|| {
                        if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            None => {
                let piped = |wanted: bool| if wanted { Stdio::piped() } else { Stdio::null() };
                command.stdin(piped(streams.stdin)).stdout(piped(streams.stdout)).stderr(piped(streams.stderr));
            }
        }
        let child = command.spawn().map_err(|e| fail(e.to_string()))?;
        let mut session = ExecSession { stdin: None, stdout: None, stderr: None, terminal: None, child };
        match terminal {
            Some((leader, follower)) => {
                drop(follower);
                let reader = leader.try_clone().map_err(|e| fail(e.to_string()))?;
                let writer = leader.try_clone().map_err(|e| fail(e.to_string()))?;
                session.stdout = Some(Box::new(tokio::fs::File::from_std(std::fs::File::from(reader))));
                if streams.stdin {
                    session.stdin = Some(Box::new(tokio::fs::File::from_std(std::fs::File::from(writer))));
                }
                session.terminal = Some(leader);
            }
            None => {
                session.stdin =
                    session.child.stdin.take().map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Sync + Unpin>);
                session.stdout =
                    session.child.stdout.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Sync + Unpin>);
                session.stderr =
                    session.child.stderr.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Sync + Unpin>);
            }
        }
        Ok(session)
    }

    /// Sets the terminal's window size (no terminal: nothing to do).
    pub fn resize(&self, columns: u16, rows: u16) {
        if let Some(terminal) = &self.terminal {
            let size = libc::winsize { ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
            // SAFETY: TIOCSWINSZ reads a winsize from a pointer that is valid for the call.
            unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        }
    }

    /// Waits for the process; its exit code, or 128 + the signal that ended it.
    pub async fn wait(&mut self) -> Exit {
        match self.child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Exit { code, signal: None, oom_killed: false },
                (None, Some(signal)) => Exit { code: 128 + signal, signal: Some(signal), oom_killed: false },
                (None, None) => Exit { code: -1, signal: None, oom_killed: false },
            },
            Err(_) => Exit { code: -1, signal: None, oom_killed: false },
        }
    }
}

/// A pseudo-terminal: (the agent's end, the process's end).
fn open_terminal() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut leader, mut follower) = (-1, -1);
    // SAFETY: openpty(3) writes two descriptors; null name, termios and winsize are allowed.
    let rc =
        unsafe { libc::openpty(&mut leader, &mut follower, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened for us and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(leader), OwnedFd::from_raw_fd(follower)) })
}

/// `argv` as a process in the mount namespace, working directory and environment of the
/// process container whose leader is `pid`.
fn process_command(pid: i32, argv: &[String]) -> std::io::Result<Command> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let environ = std::fs::read(proc.join("environ"))?;
    let cwd = std::fs::read_link(proc.join("cwd")).unwrap_or_else(|_| PathBuf::from("/"));
    let mount_ns = std::fs::File::open(proc.join("ns/mnt"))?;
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]).env_clear();
    for pair in environ.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let pair = String::from_utf8_lossy(pair);
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
    }
    let cwd = CString::new(cwd.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let ns = OwnedFd::from(mount_ns);
    // SAFETY: setns(2) and chdir(2) in the forked child before exec, on a descriptor and a C
    // string prepared before the fork: async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::chdir(cwd.as_ptr());
            Ok(())
        });
    }
    Ok(command)
}
