//! Test support: start real `axle` processes, drive them with the real `kubectl`, and talk raw
//! HTTP to them (over TLS, as the admin, for servers started here). Every process a test starts
//! is killed when its handle drops, also when the test fails.

#![allow(dead_code)]

pub mod flood;
pub mod identities;
pub mod launched;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The median of measurements (benches).
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A numeric field (`Pss:`, `write_bytes:`) of a /proc file of a process; 0 if absent.
fn proc_field(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Proportional set size of a process, KiB.
pub fn pss_kib(pid: u32) -> u64 {
    proc_field(pid, "smaps_rollup", "Pss:")
}

/// Bytes a process caused to be written to storage so far.
pub fn write_bytes(pid: u32) -> u64 {
    proc_field(pid, "io", "write_bytes:")
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    // utime and stime are fields 14 and 15, in clock ticks (100 per second).
    let ticks: u64 = after_name.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

/// An OTLP/HTTP receiver (`tests/python/otlp_receiver.py`, decoding with the official
/// protobuf definitions) on `port`, appending what it receives to `out` as JSON lines.
pub fn start_otlp_receiver(port: u16, out: &Path) -> Killed {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/otlp_receiver.py");
    let (child, lines) = spawn_with_lines(Command::new(python()).arg(script).arg(port.to_string()).arg(out));
    let child = Killed(child);
    let ready = lines.recv_timeout(Duration::from_secs(30)).expect("the receiver starts");
    assert_eq!(ready, "ready");
    child
}

pub fn axle_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_axle"))
}

/// A running `axle server` in its own data directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub addr: String,
    pub kubeconfig: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra `axle server` flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Server::launch(dir, extra)
    }

    /// Starts a server on an existing data directory (restart after a crash), at the address
    /// it had, so that its agents find it again.
    pub fn start_in(dir: tempfile::TempDir) -> Server {
        Server::start_in_with(dir, &[])
    }

    /// Like [`Server::start_in`], with extra `axle server` flags.
    pub fn start_in_with(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let previous = std::fs::read_to_string(dir.path().join("admin.kubeconfig")).ok().and_then(|k| {
            k.lines().find_map(|l| {
                let url = l.trim().strip_prefix("server: ")?;
                url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).map(String::from)
            })
        });
        match previous {
            Some(addr) => Server::launch(dir, &[&["--listen", addr.as_str()][..], extra].concat()),
            None => Server::launch(dir, extra),
        }
    }

    fn launch(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        let log =
            std::fs::File::create(dir.path().join(format!("server-{}.log", std::process::id()))).expect("log file");
        // Loopback on a free port, unless the test picks the address.
        let listen: &[&str] = if extra.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
        let child = Command::new(axle_bin())
            .arg("server")
            .args(listen)
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .env("AXLE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("axle server starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&kubeconfig) {
                if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("server:")) {
                    let url = line.trim().trim_start_matches("server:").trim();
                    break url.trim_start_matches("https://").trim_start_matches("http://").to_string();
                }
            }
            assert!(Instant::now() < deadline, "server did not write its kubeconfig in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        register_kubeconfig(&addr, &kubeconfig);
        let server = Server { dir, child, addr, kubeconfig };
        let (status, _) = server.http("GET", "/version", None);
        assert_eq!(status, 200, "server answers /version");
        server
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The API's URL as agents use it.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The car's CA certificate (what agents trust).
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("pki/ca.crt")
    }

    /// `GET path` on a node's agent endpoint over mutual TLS, as the admin (the endpoint
    /// serves `system:masters`); (status, body), None until the node publishes its endpoint.
    pub fn agent_get(&self, node: &str, path: &str) -> Option<(u16, String)> {
        let (status, body) = self.http("GET", &format!("/api/v1/nodes/{node}"), None);
        let node_object: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        let port = node_object["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
        let ip = node_object["status"]["addresses"][0]["address"].as_str()?;
        let tls = self.admin_tls();
        http_over_tls(&format!("{ip}:{port}"), node, tls, "GET", path, None).ok()
    }

    /// TLS as the admin of this server's kubeconfig.
    pub fn admin_tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        client::Config::from_kubeconfig(&self.kubeconfig).expect("admin kubeconfig").tls.expect("a TLS kubeconfig")
    }

    /// Writes the admin's certificate and key and the CA as PEM files (for tools such as
    /// Prometheus and skopeo): (ca, cert, key).
    pub fn admin_pem_files(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        use base64::Engine as _;
        let text = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let field = |name: &str| -> Vec<u8> {
            let line = text.lines().find_map(|l| l.trim().strip_prefix(&format!("{name}: "))).expect(name);
            base64::engine::general_purpose::STANDARD.decode(line).expect("base64")
        };
        let files = (dir.join("ca.crt"), dir.join("admin.crt"), dir.join("admin.key"));
        std::fs::write(&files.0, field("certificate-authority-data")).expect("ca");
        std::fs::write(&files.1, field("client-certificate-data")).expect("cert");
        std::fs::write(&files.2, field("client-key-data")).expect("key");
        files
    }

    /// Runs the real kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs (it is installed on every machine; `kubectl version --client`)");
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    /// A release of kubectl that must succeed (`1.27` … `1.33` stand beside the default one in
    /// the Google Cloud SDK's `bin`); returns stdout.
    pub fn kubectl_release_ok(&self, release: &str, args: &[&str]) -> String {
        let out = Command::new(kubectl_release(release))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {release} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl that must fail; returns stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn apply_stdin(&self, yaml: &str, extra: &[&str]) -> String {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        let out = self.kubectl_with_stdin(&args, Some(yaml));
        assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a pod in `default` (raw POST; the answer must be 201).
    pub fn create_pod(&self, pod: &serde_json::Value) {
        self.create_object("/api/v1/namespaces/default/pods", pod);
    }

    /// Creates an object in a collection (raw POST; the answer must be 201).
    pub fn create_object(&self, collection: &str, object: &serde_json::Value) {
        let (status, body) = self.http("POST", collection, Some(("application/json", &object.to_string())));
        assert_eq!(status, 201, "{body}");
    }

    /// A pod of `default`, if it exists.
    pub fn pod(&self, name: &str) -> Option<serde_json::Value> {
        let (status, body) = self.http("GET", &format!("/api/v1/namespaces/default/pods/{name}"), None);
        (status == 200).then(|| serde_json::from_str(&body).expect("pod JSON"))
    }

    /// One HTTP/1.1 request; returns status and body.
    pub fn http(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, String) {
        http(&self.addr, method, path, body).expect("HTTP request")
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILLs the server and returns its data directory for a restart.
    pub fn crash(mut self) -> tempfile::TempDir {
        self.kill9();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// SIGKILLs the server and starts it again on its data directory, at its address.
    pub fn crash_and_restart(&mut self) {
        self.kill9();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        *self = Server::start_in(dir);
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().expect("server exits")
    }
}

impl Drop for Server {
    /// Also removes the in-memory container logs of the agents whose directories lie in the
    /// server's (they live in /dev/shm, outside the temporary directory).
    fn drop(&mut self) {
        self.kill9();
        for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with("agent-") && entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(agent::memory_dir(&entry.path()));
            }
        }
    }
}

/// The kubectl of `release` (`1.27`), beside the default kubectl.
pub fn kubectl_release(release: &str) -> PathBuf {
    let default = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("kubectl"))
        .find(|path| path.is_file())
        .expect("kubectl is installed on every machine");
    let dir = std::fs::canonicalize(&default).expect("kubectl resolves");
    let path = dir.with_file_name(format!("kubectl.{release}"));
    assert!(path.is_file(), "{} is installed beside kubectl", path.display());
    path
}

/// Servers started by the tests, by address: requests to them go over TLS as their admin.
fn tls_servers() -> &'static std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<rustls::ClientConfig>>> {
    static SERVERS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<rustls::ClientConfig>>>,
    > = std::sync::OnceLock::new();
    SERVERS.get_or_init(Default::default)
}

/// Makes [`http`] to `addr` use the TLS settings and admin identity of `kubeconfig` (when it
/// is a TLS kubeconfig).
pub fn register_kubeconfig(addr: &str, kubeconfig: &Path) {
    if let Some(tls) = client::Config::from_kubeconfig(kubeconfig).ok().and_then(|c| c.tls) {
        tls_servers().lock().expect("lock").insert(addr.to_string(), tls);
    }
}

/// A minimal blocking HTTP/1.1 client (Connection: close), enough for tests; over TLS as the
/// admin to the servers the tests started.
pub fn http(addr: &str, method: &str, path: &str, body: Option<(&str, &str)>) -> std::io::Result<(u16, String)> {
    let tls = tls_servers().lock().expect("lock").get(addr).cloned();
    match tls {
        Some(tls) => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
            http_over_tls(addr, host, tls, method, path, body)
        }
        None => exchange(TcpStream::connect(addr)?, addr, method, path, body),
    }
}

/// A byte stream to a server: TLS for the servers the tests started, else plain TCP.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Connects to `addr` as [`http`] would, for tests that speak HTTP by hand (watches).
pub fn connect(addr: &str, read_timeout: Option<Duration>) -> std::io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(read_timeout)?;
    let tls = tls_servers().lock().expect("lock").get(addr).cloned();
    Ok(match tls {
        None => Box::new(tcp),
        Some(tls) => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let connection = rustls::ClientConnection::new(tls, name).map_err(std::io::Error::other)?;
            Box::new(rustls::StreamOwned::new(connection, tcp))
        }
    })
}

/// One HTTP/1.1 exchange over TLS with `server_name` checked against the certificate.
pub fn http_over_tls(
    addr: &str,
    server_name: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> std::io::Result<(u16, String)> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let connection = rustls::ClientConnection::new(tls, name).map_err(std::io::Error::other)?;
    let stream = rustls::StreamOwned::new(connection, TcpStream::connect(addr)?);
    exchange(stream, addr, method, path, body)
}

fn exchange(
    mut stream: impl Read + Write,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> std::io::Result<(u16, String)> {
    let (content_type, payload) = body.unwrap_or(("application/json", ""));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after a complete reply.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Spawns `command` with its stdout piped into a channel of lines (read on a thread), so a test
/// can wait for a line without blocking on the process.
pub fn spawn_with_lines(command: &mut Command) -> (Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("process starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Polls `check` until it returns Some or the timeout passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Python interpreter of the test virtualenv (made by `.ci/run`), or `$AXLE_PYTHON`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("AXLE_PYTHON") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join(".venv/bin/python3")
}

/// A running `axle agent` process for one node.
pub struct Agent {
    pub child: Child,
    pub node: String,
}

impl Agent {
    /// Starts an agent against `server` with a fast heartbeat (tests run with short grace periods).
    pub fn start(server: &Server, node: &str, heartbeat_seconds: u32) -> Agent {
        Agent::start_with(server, node, heartbeat_seconds, &[])
    }

    /// Starts an agent with extra `axle agent` flags.
    pub fn start_with(server: &Server, node: &str, heartbeat_seconds: u32, extra: &[&str]) -> Agent {
        let dir = server.data_dir().join(format!("agent-{node}"));
        Agent::launch(&[], &server.url(), Some(server), node, heartbeat_seconds, &dir, extra)
    }

    /// Starts an agent inside a network namespace (`ip netns exec`), reaching the server at
    /// `server_url` over the namespace's link.
    pub fn start_in_netns(server: &Server, node: &str, netns: &str, server_url: &str) -> Agent {
        let dir = server.data_dir().join(format!("agent-{node}"));
        Agent::launch(&["ip", "netns", "exec", netns], server_url, Some(server), node, 1, &dir, &[])
    }

    /// Restarts an agent on its data directory with no server to reach (a reboot of the
    /// computer while the control plane is gone). Its log goes to `<dir>.restart.log`.
    pub fn restart_without_server(agent_dir: &Path, node: &str) -> Agent {
        Agent::launch(&[], "https://127.0.0.1:9", None, node, 1, agent_dir, &[])
    }

    /// `[wrapper…] axle agent …`, logging to `<dir>.log` (`<dir>.restart.log` without a server).
    fn launch(
        wrapper: &[&str],
        url: &str,
        server: Option<&Server>,
        node: &str,
        heartbeat: u32,
        dir: &Path,
        extra: &[&str],
    ) -> Agent {
        let log_path = dir.with_extension(if server.is_some() { "log" } else { "restart.log" });
        let log = std::fs::File::create(log_path).expect("log file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(axle_bin());
                c
            }
            None => Command::new(axle_bin()),
        };
        command.args(["agent", "--server", url, "--node-name", node, "--heartbeat-seconds", &heartbeat.to_string()]);
        // The CA is where every test server keeps it; a restart without a server finds it there
        // too (the agent's directory lies in the server's).
        let ca = match server {
            Some(server) => server.ca_file(),
            None => dir.parent().expect("agent dir in the server's").join("pki/ca.crt"),
        };
        command.arg("--ca-file").arg(ca);
        if let Some(server) = server {
            command.arg("--token-file").arg(server.data_dir().join("node-token"));
        }
        let child = command
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("AXLE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("axle agent starts");
        Agent { child, node: node.to_string() }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the agent stops its pods (containers, mounts) and exits.
    pub fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(40);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill9();
    }
}

impl Drop for Agent {
    /// A clean stop, so that no container or mount of the test outlives it.
    fn drop(&mut self) {
        self.terminate();
    }
}

/// An OCI image layout (tag `bb`) with busybox and a few applets, built by umoci.
pub fn busybox_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let run = |args: &[&str]| {
        let out = Command::new("umoci").args(args).output().expect("umoci runs (Debian package umoci)");
        assert!(out.status.success(), "umoci {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let image = format!("{}:bb", layout.display());
    run(&["init", "--layout", &layout.to_string_lossy()]);
    run(&["new", "--image", &image]);
    let bundle = dir.join("bundle");
    run(&["unpack", "--image", &image, &bundle.to_string_lossy()]);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("bin");
    std::fs::create_dir_all(rootfs.join("etc")).expect("etc");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox (Debian package busybox-static)");
    for applet in ["sh", "httpd", "sleep", "cat", "echo", "id", "head", "tr", "hostname", "touch", "ls", "tar"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet");
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        .expect("passwd");
    run(&["repack", "--image", &image, &bundle.to_string_lossy()]);
    run(&["config", "--image", &image, "--config.entrypoint", "/bin/sh"]);
    layout
}

pub fn import(server: &Server, layout: &Path, name: &str) {
    let out = Command::new(axle_bin())
        .args(["image", "import"])
        .arg(layout)
        .args(["--name", name, "--kubeconfig"])
        .arg(&server.kubeconfig)
        .output()
        .expect("axle image import runs");
    assert!(out.status.success(), "axle image import: {}", String::from_utf8_lossy(&out.stderr));
}

/// Builds the sample image `axle up` uses (from this machine's programs) and pushes it.
pub fn import_sample_image(server: &Server, name: &str) {
    let layout =
        images::sample::write_host_image(server.data_dir(), "1.0", api::meta::go_arch()).expect("sample image");
    import(server, &layout, name);
}

pub fn axle(args: &[&str]) -> Output {
    Command::new(axle_bin()).args(args).output().expect("axle runs")
}

pub fn axle_ok(args: &[&str]) -> String {
    let out = axle(args);
    assert!(out.status.success(), "axle {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Update signing for tests: keys and a trust root in a directory of their own (the update server's side).
pub struct Signing {
    dir: tempfile::TempDir,
}

impl Signing {
    /// Keys `a` and `b`; the root needs `threshold` signatures per role.
    pub fn new(threshold: usize) -> Signing {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a", "b", "stranger"] {
            axle_ok(&["bundle", "keygen", path(&dir.path().join(name))]);
        }
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
        let root = dir.path().join("root.json");
        let threshold = threshold.to_string();
        axle_ok(&[
            "bundle",
            "root",
            "--sign",
            path(&a),
            "--sign",
            path(&b),
            "--threshold",
            &threshold,
            "-o",
            path(&root),
        ]);
        Signing { dir }
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root.json")
    }

    /// `axle bundle create SOURCE` signed by `keys`, into `OUT`.
    pub fn create(&self, source: &Path, out: &Path, version: u64, keys: &[&str], extra: &[&str]) -> u64 {
        let version = version.to_string();
        let mut args = vec!["bundle", "create", path(source), "-o", path(out), "--version", &version];
        let key_paths: Vec<PathBuf> = keys.iter().map(|k| self.key(k)).collect();
        for key in &key_paths {
            args.extend(["--key", path(key)]);
        }
        args.extend(extra);
        axle_ok(&args);
        std::fs::metadata(out).expect("bundle written").len()
    }
}

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A simulated ECU on 127.0.0.1:`port`, its bank in `dir/bank-<port>.bin`.
pub fn start_sim(dir: &Path, port: u16, extra: &[&str]) -> Killed {
    let child = Command::new(axle_bin())
        .args(["ecu-sim", "--listen", &format!("127.0.0.1:{port}"), "--logical-address", "0x00E0", "--flash"])
        .arg(dir.join(format!("bank-{port}.bin")))
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .expect("axle ecu-sim starts");
    wait_for("the simulated ECU to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
    Killed(child)
}

/// `axle ecu-gateway` for simulated ECUs on loopback ports (`name`, port).
pub fn start_gateway(server: &Server, ecus: &[(&str, u16)], dir: &Path) -> Killed {
    let mut config = String::from("ecus:\n");
    for (name, port) in ecus {
        config.push_str(&format!(
            "- {{name: {name}, address: \"127.0.0.1:{port}\", logicalAddress: 0x00E0, hardwareId: HW-{name}}}\n"
        ));
    }
    let path = dir.join("ecus.yaml");
    std::fs::write(&path, config).expect("config");
    let child = Command::new(axle_bin())
        .args(["ecu-gateway", "--server", &server.url(), "--ca-file"])
        .arg(server.ca_file())
        .arg("--token-file")
        .arg(server.data_dir().join("node-token"))
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("gateway"))
        .args(["--heartbeat-seconds", "1"])
        .stderr(std::fs::File::create(dir.join("gateway.log")).expect("log"))
        .spawn()
        .expect("axle ecu-gateway starts");
    Killed(child)
}

/// Deterministic incompressible bytes (xorshift), for firmware and files of tests and benches.
pub fn random_bytes(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A pod on `node` that runs and says nothing (a native `sleep`).
pub fn quiet_pod(name: &str, node: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "runtimeClassName": "process", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "sh", "command": ["sleep", "100000"]}]}})
}

/// Whether an object's `Ready` condition is True.
pub fn is_ready(obj: &serde_json::Value) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// A car that has started and now only says "still here": agents `hpc-1` and `hpc-2` with a
/// quiet pod each, the ECU gateway with two simulated ECUs (renewing every second), and the
/// server. Fields drop in order: the agents stop their pods while the server still answers.
pub struct IdleCar {
    pub agents: [Agent; 2],
    pub gateway: Killed,
    pub sims: [Killed; 2],
    pub server: Server,
}

impl IdleCar {
    /// Starts it (agents renewing every `agent_heartbeat` seconds) and waits until every node
    /// and pod is Ready.
    pub fn start(agent_heartbeat: u32) -> IdleCar {
        let server = Server::start();
        let dir = server.data_dir().to_path_buf();
        let agents = [Agent::start(&server, "hpc-1", agent_heartbeat), Agent::start(&server, "hpc-2", agent_heartbeat)];
        let (brake, door) = (free_port(), free_port());
        let sims = [start_sim(&dir, brake, &[]), start_sim(&dir, door, &[])];
        let gateway = start_gateway(&server, &[("brake-ecu", brake), ("door-ecu", door)], &dir);
        for node in ["hpc-1", "hpc-2"] {
            server.create_pod(&quiet_pod(&format!("quiet-{node}"), node));
        }
        let paths = ["hpc-1", "hpc-2", "brake-ecu", "door-ecu"]
            .map(|n| format!("/api/v1/nodes/{n}"))
            .into_iter()
            .chain(["hpc-1", "hpc-2"].map(|n| format!("/api/v1/namespaces/default/pods/quiet-{n}")));
        for path in paths {
            wait_for(&format!("{path} to be Ready"), Duration::from_secs(60), || {
                let (status, body) = server.http("GET", &path, None);
                (status == 200 && serde_json::from_str(&body).is_ok_and(|o| is_ready(&o))).then_some(())
            });
        }
        IdleCar { agents, gateway, sims, server }
    }

    /// Every Axle process of the car, by name.
    pub fn processes(&self) -> Vec<(String, u32)> {
        [("server".to_string(), self.server.child.id())]
            .into_iter()
            .chain(self.agents.iter().map(|a| (format!("agent {}", a.node), a.child.id())))
            .chain([("ecu-gateway".to_string(), self.gateway.0.id())])
            .chain(self.sims.iter().enumerate().map(|(i, s)| (format!("ecu-sim {i}"), s.0.id())))
            .collect()
    }
}
