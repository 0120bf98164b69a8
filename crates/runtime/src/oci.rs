//! The OCI runtimes (`runc`, `crun`): a container is an OCI bundle (a `config.json` generated
//! from the resolved container, and a root filesystem) run by the real runtime binary.
//!
//! No runtime process stays behind per container (runc alone holds ~10 MB): the agent is a
//! child subreaper, `<runtime> create` starts the container's init with the agent's log pipes
//! as its stdout/stderr and exits, the init is re-parented to the agent, which `start`s it and
//! waits for it through a pidfd. After it exits, the OOM-kill counter of its cgroup tells
//! OOMKilled from other deaths before `delete` removes the cgroup.
//!
//! The root filesystem is an overlay: the image's cached rootfs below (shared, never written),
//! a fresh writable layer per start above; no copy of the image is made.

use crate::logs::{pump, LogFile};
use crate::{ContainerSpec, Exit, Mount, OciOptions, RuntimeError};
use serde_json::{json, Value};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::process::Command;

/// What Kubernetes (containerd's default) gives a container unless told otherwise.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, for `privileged` and for `drop: [ALL]`.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

/// A container run by an OCI runtime.
pub struct OciContainer {
    options: OciOptions,
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    /// The init's exit status, once collected.
    reaped: Option<Exit>,
    /// The same, once the container is also removed.
    exit: Option<Exit>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) attach: crate::AttachTarget,
}

/// The agent adopts the containers' init processes (see the module docs).
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(2) with integer arguments; affects only this process.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper; containers cannot be waited for");
        }
    });
}

impl OciContainer {
    pub async fn start(spec: &ContainerSpec, options: &OciOptions) -> Result<OciContainer, RuntimeError> {
        let fail = |cause: String| RuntimeError::Start {
            container: spec.name.clone(),
            command: format!("{} create {}", options.binary, options.id),
            cause,
        };
        become_subreaper();
        // Whatever an earlier start (or an agent that crashed) left goes first.
        cleanup(options).await;
        let rootfs = prepare_rootfs(options).map_err(|e| fail(format!("cannot prepare the root filesystem: {e}")))?;
        let config = runtime_config(spec, options, &rootfs);
        let config_path = options.bundle.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap_or_default())
            .map_err(|e| fail(format!("cannot write {}: {e}", config_path.display())))?;
        let log = Arc::new(tokio::sync::Mutex::new(LogFile::open(&spec.log_path, spec.log_max_bytes).await?));
        let pid_file = options.bundle.join("pid");
        let runtime_log = options.bundle.join("runtime.log");
        let _ = std::fs::remove_file(&runtime_log);
        let mut create = Command::new(&options.binary);
        create
            .arg("--root")
            .arg(&options.state_root)
            .arg("--log")
            .arg(&runtime_log)
            .arg("--log-format")
            .arg("json")
            .arg("create")
            .arg("--bundle")
            .arg(&options.bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&options.id)
            // The container's init inherits these pipes: its output flows to the log directly.
            .stdin(if spec.stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = create.spawn().map_err(|e| fail(format!("cannot run {}: {e}", options.binary)))?;
        let attach = crate::AttachTarget::new(child.stdin.take());
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, "stdout", log.clone(), attach.output.clone())));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, "stderr", log, attach.output.clone())));
        }
        let status = child.wait().await.map_err(|e| fail(e.to_string()))?;
        if !status.success() {
            let why = runtime_error(&runtime_log).unwrap_or_else(|| format!("exited with {status}"));
            cleanup(options).await;
            return Err(fail(why));
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| fail(format!("{} wrote no pid file", options.binary)))?;
        let pidfd = pidfd_open(pid).map_err(|e| fail(format!("cannot watch process {pid}: {e}")))?;
        let started = Command::new(&options.binary)
            .arg("--root")
            .arg(&options.state_root)
            .arg("start")
            .arg(&options.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !started.status.success() {
            cleanup(options).await;
            return Err(fail(String::from_utf8_lossy(&started.stderr).trim().to_string()));
        }
        Ok(OciContainer { options: options.clone(), pid, pidfd, reaped: None, exit: None, pumps, attach })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn cgroup_path(&self) -> &str {
        &self.options.cgroup_path
    }

    pub fn id(&self) -> &str {
        &self.options.id
    }

    pub fn exec_target(&self) -> crate::ExecTarget {
        crate::ExecTarget::Oci {
            binary: self.options.binary.clone(),
            state_root: self.options.state_root.clone(),
            id: self.options.id.clone(),
            pid: self.pid,
        }
    }

    /// Waits until the container's init exits, then removes the container. Cancel-safe: the
    /// supervisor races this against stop requests, and a process's exit status can be
    /// collected only once, so it is kept the moment it is reaped. (Before, a wait cancelled
    /// after reaping lost the status, and the next wait met ECHILD: exit code -1.)
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let exit = match self.reaped {
            Some(exit) => exit,
            None => {
                let mut exit = loop {
                    match self.pidfd.readable().await {
                        Ok(mut guard) => match reap(self.pidfd.get_ref()) {
                            Some(exit) => break exit,
                            None => guard.clear_ready(),
                        },
                        Err(_) => break Exit { code: -1, signal: None, oom_killed: false },
                    }
                };
                // Read before `cleanup` removes the cgroup, with no await in between.
                exit.oom_killed = oom_kills(&self.options.cgroup_path) > 0;
                self.reaped = Some(exit);
                exit
            }
        };
        while let Some(pump) = self.pumps.last_mut() {
            let _ = pump.await;
            self.pumps.pop();
        }
        cleanup(&self.options).await;
        self.exit = Some(exit);
        exit
    }

    /// Graceful stop: SIGTERM through the runtime, SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        if self.exit.is_some() || self.reaped.is_some() {
            return self.wait().await;
        }
        self.kill("TERM").await;
        if tokio::time::timeout(grace, self.pidfd.readable()).await.is_err() {
            tracing::info!(container = %self.options.id, "container ignored SIGTERM for its grace period; killing it");
            self.kill("KILL").await;
        }
        self.wait().await
    }

    async fn kill(&self, signal: &str) {
        let result = Command::new(&self.options.binary)
            .arg("--root")
            .arg(&self.options.state_root)
            .args(["kill", &self.options.id, signal])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !matches!(result, Ok(s) if s.success()) {
            // The runtime lost track (its state is gone): signal the init directly.
            let number = if signal == "KILL" { libc::SIGKILL } else { libc::SIGTERM };
            pidfd_signal(self.pidfd.get_ref(), number);
        }
    }
}

impl Drop for OciContainer {
    fn drop(&mut self) {
        if self.exit.is_none() {
            if self.reaped.is_none() {
                pidfd_signal(self.pidfd.get_ref(), libc::SIGKILL);
            }
            let options = self.options.clone();
            // Best effort: the next start of this container cleans up as well.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { cleanup(&options).await });
            }
        }
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open(2) returns a new file descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open for its whole life.
    unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

fn pidfd_signal(pidfd: &OwnedFd, signal: i32) {
    // SAFETY: pidfd_send_signal(2) on a pidfd we own; a null siginfo is allowed.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<u8>(), 0) };
}

/// Collects the exit status of the (adopted) init, if it has exited.
fn reap(pidfd: &OwnedFd) -> Option<Exit> {
    // SAFETY: siginfo_t is plain data; waitid(2) fills it for the process of the pidfd.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG)
    };
    if rc != 0 {
        // ECHILD: not (or no longer) our child; nothing more will come.
        return Some(Exit { code: -1, signal: None, oom_killed: false });
    }
    // SAFETY: after a successful waitid the status fields are initialized.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return None;
    }
    Some(match info.si_code {
        libc::CLD_EXITED => Exit { code: status, signal: None, oom_killed: false },
        _ => Exit { code: 128 + status, signal: Some(status), oom_killed: false },
    })
}

/// The runtime's last error message from its JSON log.
fn runtime_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .find_map(|v| v["msg"].as_str().map(String::from))
}

/// Times the kernel OOM-killed a process of the container's cgroup (v2 or v1).
fn oom_kills(cgroup_path: &str) -> u64 {
    let relative = cgroup_path.trim_start_matches('/');
    let unified = Path::new("/sys/fs/cgroup").join(relative).join("memory.events");
    let v1 = Path::new("/sys/fs/cgroup/memory").join(relative).join("memory.oom_control");
    [unified, v1]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()))
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

/// Removes the runtime's container and unmounts the rootfs; absent things are fine.
pub(crate) async fn cleanup(options: &OciOptions) {
    let _ = Command::new(&options.binary)
        .arg("--root")
        .arg(&options.state_root)
        .args(["delete", "--force", &options.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    let rootfs = options.bundle.join("rootfs");
    if let Ok(path) = std::ffi::CString::new(rootfs.as_os_str().as_encoded_bytes()) {
        // SAFETY: umount2(2) with a valid C string; failure (not mounted) is ignored.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Kills and deletes every container in a runtime's state directory (those an agent that
/// died left behind). A runtime that is not installed has none.
pub async fn remove_containers(binary: &str, state_root: &Path) {
    if !state_root.is_dir() {
        return;
    }
    let listed =
        Command::new(binary).arg("--root").arg(state_root).args(["list", "-q"]).stdin(Stdio::null()).output().await;
    let Ok(listed) = listed else { return };
    for id in String::from_utf8_lossy(&listed.stdout).lines().filter(|l| !l.is_empty()) {
        tracing::info!(container = id, runtime = binary, "removing a container left from before");
        let _ = Command::new(binary)
            .arg("--root")
            .arg(state_root)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

/// Unmounts every mount below `dir` (rootfs overlays of containers of a dead agent), deepest
/// first.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        if let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2(2) with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Mounts the overlay rootfs: the image below, a fresh writable layer above. Without an
/// image (not expected for OCI pods) the bundle's `rootfs` directory is used as is.
fn prepare_rootfs(options: &OciOptions) -> std::io::Result<PathBuf> {
    let merged = options.bundle.join("rootfs");
    let upper = options.bundle.join("upper");
    let work = options.bundle.join("work");
    for dir in [&upper, &work] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
    }
    for dir in [&merged, &upper, &work] {
        std::fs::create_dir_all(dir)?;
    }
    let data =
        format!("lowerdir={},upperdir={},workdir={}", options.image_rootfs.display(), upper.display(), work.display());
    let c = |s: &str| std::ffi::CString::new(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
    let (source, target, fstype, data) = (c("overlay")?, c(&merged.to_string_lossy())?, c("overlay")?, c(&data)?);
    // SAFETY: mount(2) with valid C strings that outlive the call.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(merged)
}

/// The OCI runtime spec (`config.json`) for a container.
pub(crate) fn runtime_config(spec: &ContainerSpec, options: &OciOptions, rootfs: &Path) -> Value {
    let capabilities = capabilities(options);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    // Host networking: the host's name resolution applies inside too.
    for file in ["/etc/resolv.conf", "/etc/hosts"] {
        if Path::new(file).is_file() && !spec.mounts.iter().any(|m| m.destination == Path::new(file)) {
            mounts.push(
                json!({"destination": file, "type": "bind", "source": file, "options": ["rbind", "rprivate", "ro"]}),
            );
        }
    }
    mounts.extend(spec.mounts.iter().map(bind_mount));
    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "mount"})];
    if !options.host_uts {
        namespaces.push(json!({"type": "uts"}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = options.memory_limit {
        resources["memory"] = json!({"limit": limit});
    }
    if let Some(millis) = options.cpu_limit_millis {
        resources["cpu"] = json!({"quota": millis as i64 * 100, "period": 100_000});
    }
    if let Some(millis) = options.cpu_request_millis {
        let shares = (millis * 1024 / 1000).max(2);
        resources["cpu"]["shares"] = json!(shares);
    }
    let mut process = json!({
        "terminal": false,
        "user": {"uid": options.uid, "gid": options.gid, "additionalGids": options.supplemental_gids},
        "args": spec.argv,
        "env": spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "cwd": spec.working_dir.as_deref().map(|d| d.to_string_lossy().to_string()).unwrap_or_else(|| "/".into()),
        "capabilities": {
            "bounding": capabilities, "effective": capabilities, "permitted": capabilities,
        },
        "noNewPrivileges": options.no_new_privileges,
    });
    // Ambient capabilities let a non-root user keep what it was granted.
    if options.uid != 0 {
        process["capabilities"]["ambient"] = json!(capabilities);
        process["capabilities"]["inheritable"] = json!(capabilities);
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": options.cgroup_path,
        "resources": resources,
    });
    if !options.privileged {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ]);
        linux["readonlyPaths"] = json!(["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": options.read_only_root},
        "hostname": if options.host_uts { Value::Null } else { json!(options.hostname) },
        "mounts": mounts,
        "linux": linux,
    })
}

fn bind_mount(mount: &Mount) -> Value {
    let mut options = vec!["rbind", "rprivate"];
    if mount.read_only {
        options.push("ro");
    }
    json!({"destination": mount.destination, "type": "bind", "source": mount.source, "options": options})
}

/// The capability set: Kubernetes' default (all for privileged), `drop` then `add` applied
/// (`ALL` allowed in both; names with or without `CAP_`).
fn capabilities(options: &OciOptions) -> Vec<String> {
    let normalize = |c: &String| {
        let upper = c.to_ascii_uppercase();
        if upper.starts_with("CAP_") || upper == "ALL" {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let base = if options.privileged { ALL_CAPABILITIES } else { DEFAULT_CAPABILITIES };
    let drop: Vec<String> = options.capabilities_drop.iter().map(normalize).collect();
    let add: Vec<String> = options.capabilities_add.iter().map(normalize).collect();
    let mut set: Vec<String> = if drop.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        base.iter().map(|c| c.to_string()).filter(|c| !drop.contains(c)).collect()
    };
    for cap in add {
        if cap == "ALL" {
            set = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        } else if !set.contains(&cap) {
            set.push(cap);
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> OciOptions {
        OciOptions {
            binary: "runc".into(),
            state_root: "/run/axle".into(),
            id: "pod-c".into(),
            bundle: "/var/lib/axle/pods/p/c".into(),
            image_rootfs: "/var/lib/axle/images/rootfs/abc".into(),
            hostname: "nav-0".into(),
            host_uts: false,
            uid: 1000,
            gid: 1000,
            supplemental_gids: vec![],
            read_only_root: true,
            privileged: false,
            no_new_privileges: true,
            capabilities_add: vec!["net_admin".into()],
            capabilities_drop: vec!["ALL".into()],
            memory_limit: Some(64 << 20),
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            cgroup_path: "/axle/pod-c".into(),
        }
    }

    #[test]
    fn the_runtime_spec_follows_the_pod_spec_and_parses_as_oci() {
        let spec = ContainerSpec {
            name: "c".into(),
            argv: vec!["/bin/app".into(), "--fast".into()],
            env: vec![("A".into(), "1".into())],
            working_dir: Some("/srv".into()),
            log_path: "/tmp/c.log".into(),
            log_max_bytes: 1 << 20,
            mounts: vec![Mount { source: "/data/x".into(), destination: "/etc/app".into(), read_only: true }],
            isolation: crate::Isolation::Oci(Box::new(options())),
            stdin: false,
        };
        let config = runtime_config(&spec, &options(), Path::new("/b/rootfs"));
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(config.clone()).expect("a valid OCI runtime spec");
        assert_eq!(parsed.hostname().as_deref(), Some("nav-0"));
        assert_eq!(config["process"]["capabilities"]["bounding"], json!(["CAP_NET_ADMIN"]));
        assert_eq!(config["process"]["user"]["uid"], 1000);
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(config["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(config["linux"]["resources"]["cpu"], json!({"quota": 50_000, "period": 100_000, "shares": 256}));
        let app_mount = config["mounts"].as_array().and_then(|m| m.iter().find(|m| m["destination"] == "/etc/app"));
        assert_eq!(app_mount.map(|m| m["options"].clone()), Some(json!(["rbind", "rprivate", "ro"])));
        assert!(
            !config["linux"]["namespaces"].as_array().into_iter().flatten().any(|n| n["type"] == "network"),
            "host networking"
        );
    }

    #[test]
    fn capabilities_follow_kubernetes_rules() {
        let mut o = options();
        o.capabilities_drop = vec!["NET_RAW".into()];
        o.capabilities_add = vec![];
        let caps = capabilities(&o);
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()) && caps.contains(&"CAP_CHOWN".to_string()));
        o.privileged = true;
        o.capabilities_drop = vec![];
        assert_eq!(capabilities(&o).len(), ALL_CAPABILITIES.len());
    }
}
