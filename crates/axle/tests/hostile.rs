//! Hostile conditions against a real server: requests and connections meant to stall it. After
//! each, the server answers `kubectl get` and a known object is unchanged.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use support::flood::Flood;
use support::{axle_bin, python, Server};

/// The known object, and whether the server still answers and still holds it.
fn still_serving(server: &Server) {
    let out = server.kubectl(&["get", "configmap", "canary", "-o", "jsonpath={.data.k}", "--request-timeout=10s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v");
}

#[test]
fn a_yaml_body_nested_100k_deep_is_refused_at_once() {
    let server = Server::start();
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, body) =
        server.http("POST", "/api/v1/namespaces/default/configmaps", Some(("application/yaml", &deep)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nests deeper than 1000 levels"), "{body}");
    still_serving(&server);
}

/// Opens `count` TCP connections to `addr` from 127.0.0.2 that send nothing; prints how many
/// the server closed at once, then, once all are closed (or after 60 s), how many it closed
/// in all.
const IDLE_FLOOD: &str = r#"
import socket, sys, time, select
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
for _ in range(count):
    s = socket.create_connection((host, port), source_address=("127.0.0.2", 0))
    conns.append(s)
time.sleep(0.5)
def closed(s):
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return False
    try:
        return s.recv(1) == b""
    except OSError:
        return True
print(sum(1 for s in conns if closed(s)), flush=True)
sys.stdin.readline()
deadline = time.time() + 60
while time.time() < deadline and not all(closed(s) for s in conns):
    time.sleep(0.5)
print(sum(1 for s in conns if closed(s)), flush=True)
"#;

#[test]
fn a_flood_of_idle_connections_is_capped_and_timed_out_while_the_server_serves() {
    let server = Server::start();
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    let (host, port) = server.addr.rsplit_once(':').expect("host:port");
    let mut flood = Command::new(python())
        .args(["-c", IDLE_FLOOD, host, port, "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs (.venv: bash .ci/run)");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(flood.stdout.take().expect("stdout")));
    let refused_at_once: usize =
        lines.next().and_then(Result::ok).and_then(|l| l.trim().parse().ok()).expect("a count");
    // 128 connections from one address are admitted; the others are closed at once.
    assert_eq!(refused_at_once, 300 - 128, "connections beyond the per-address cap");
    // The server serves others meanwhile (kubectl comes from 127.0.0.1).
    still_serving(&server);
    flood.stdin.take().expect("stdin").write_all(b"\n").expect("go on");
    let closed: usize = lines.next().and_then(Result::ok).and_then(|l| l.trim().parse().ok()).expect("a count");
    assert_eq!(closed, 300, "idle connections that never start TLS are closed");
    let _ = flood.wait();
    still_serving(&server);
}

/// A tmpfs of `size` mounted on a new temporary directory, unmounted when dropped.
struct SmallDisk(Option<tempfile::TempDir>);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs (the tests run as root)");
        assert!(status.success(), "cannot mount a tmpfs");
        SmallDisk(Some(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        }
    }
}

/// Fills the file system holding `dir` (a file written until it no longer grows).
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
fn a_full_disk_fails_writes_clearly_keeps_reads_and_heartbeats_and_recovers_when_space_returns() {
    let disk = SmallDisk::mount("48m");
    let dir = disk.0.as_ref().expect("mounted").path().to_path_buf();
    // The server's data directory on the small disk (a tempdir whose files live on the tmpfs).
    let data = tempfile::tempdir_in(&dir).expect("data dir");
    let mut server = Server::start_in(data);
    let _agent = support::Agent::start(&server, "hpc-1", 1);
    support::wait_for("hpc-1 to be Ready", std::time::Duration::from_secs(30), || {
        let (_, node) = server.http("GET", "/api/v1/nodes/hpc-1", None);
        node.contains("\"type\":\"Ready\",\"status\":\"True\"")
            .then_some(())
            .or_else(|| node.contains("\"status\":\"True\",\"type\":\"Ready\"").then_some(()))
    });
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    let filler = fill(&dir);

    // Writes go on into the log's reserve, then fail with the cause; nothing half-written.
    // Incompressible, so that the log's reserve fills in a few hundred writes.
    let payload: String = support::random_bytes(7, 3000).iter().map(|b| format!("{b:02x}")).collect();
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..3000 {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"full-{i}"}},"data":{{"p":"{payload}"}}}}"#
        );
        let (status, reply) =
            server.http("POST", "/api/v1/namespaces/default/configmaps", Some(("application/json", &body)));
        match status {
            201 => acknowledged.push(format!("full-{i}")),
            _ => {
                refusal = Some((status, reply));
                break;
            }
        }
    }
    let (status, reply) = refusal.expect("the disk filled up");
    assert_eq!(status, 507, "{reply}");
    assert!(reply.contains("InsufficientStorage") && reply.contains("disk is full"), "{reply}");
    let (status, ready) = server.http("GET", "/readyz", None);
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("store failed"), "{ready}");
    still_serving(&server);
    // Heartbeats are kept in memory: the node stays Ready while nothing can be written.
    let renewed = || {
        let (_, lease) =
            server.http("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hpc-1", None);
        serde_json::from_str::<serde_json::Value>(&lease).ok().map(|l| l["spec"]["renewTime"].clone())
    };
    let before = renewed();
    support::wait_for("a lease renewal on the full disk", std::time::Duration::from_secs(10), || {
        (renewed() != before).then_some(())
    });

    // Space returns: writes succeed again, without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"},"data":{"k":"v"}}"#;
    let (status, reply) =
        server.http("POST", "/api/v1/namespaces/default/configmaps", Some(("application/json", body)));
    assert_eq!(status, 201, "{reply}");
    acknowledged.push("after".into());
    assert_eq!(server.http("GET", "/readyz", None), (200, "ok".to_string()));

    // Every acknowledged write is there after a kill -9.
    server.crash_and_restart();
    let (_, list) = server.http("GET", "/api/v1/namespaces/default/configmaps", None);
    for name in &acknowledged {
        assert!(list.contains(&format!("\"name\":\"{name}\"")), "{name} lost after the restart");
    }
    still_serving(&server);
    drop(server);
}

/// Completes TLS, then trickles a request's headers a byte a second; prints whether the server
/// closed the connection before the trickle's 90 s were over.
const SLOWLORIS: &str = r#"
import socket, ssl, sys, time
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
s = context.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost")
s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Slow: ")
for _ in range(90):
    try:
        s.sendall(b"a")
        s.settimeout(1)
        if s.recv(1) == b"":
            print("closed", flush=True)
            sys.exit(0)
    except socket.timeout:
        continue
    except OSError:
        print("closed", flush=True)
        sys.exit(0)
print("open", flush=True)
"#;

#[test]
fn a_request_whose_headers_trickle_in_is_cut_off() {
    let server = Server::start();
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    let (host, port) = server.addr.rsplit_once(':').expect("host:port");
    let slow = Command::new(python())
        .args(["-c", SLOWLORIS, host, port])
        .arg(server.ca_file())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs (.venv: bash .ci/run)");
    // Meanwhile the server serves everyone else.
    still_serving(&server);
    let out = slow.wait_with_output().expect("python ends");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "closed", "headers must arrive within 30 s");
    still_serving(&server);
}

#[test]
fn a_damaged_store_is_refused_with_the_way_out_and_recover_rebuilds_it() {
    let mut server = Server::start();
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    assert!(server.terminate().success(), "a clean stop");
    let dir = server.crash();
    // A damaged header: the file is no longer recognisably the store.
    let store = dir.path().join("store-v4.redb");
    let mut bytes = std::fs::read(&store).expect("read the store");
    bytes[..4].iter_mut().for_each(|b| *b ^= 0xff);
    std::fs::write(&store, &bytes).expect("damage the store");

    let refused = Command::new(axle_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("axle server runs");
    assert!(!refused.status.success(), "a damaged store is not served");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("damaged") && stderr.contains("axle server --recover"), "{stderr}");

    let server = Server::start_in_with(dir, &["--recover"]);
    let log = std::fs::read_to_string(server.data_dir().join(format!("server-{}.log", std::process::id())))
        .expect("server log");
    assert!(log.contains("rebuilt the store with") && log.contains("damaged files kept at"), "{log}");
    // What the log still held is back.
    still_serving(&server);
    assert!(std::fs::read_dir(server.data_dir())
        .expect("data dir")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("store-v4.redb.damaged-")));
}

/// Sends `request` as it is over one connection (TLS as the admin) and returns what comes
/// back until the server closes it or 10 s pass.
fn raw_exchange(server: &Server, request: &[u8]) -> String {
    let mut stream = support::connect(&server.addr, Some(std::time::Duration::from_secs(10))).expect("connects");
    stream.write_all(request).expect("sends");
    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match std::io::Read::read(&mut stream, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: axle\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

fn status_of(reply: &str) -> u16 {
    reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn malformed_requests_are_refused_and_the_server_serves_on() {
    let server = Server::start();
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    let configmaps = "/api/v1/namespaces/default/configmaps";

    // A billion laughs: nine levels of nine aliases, 387 million strings from 1 KB.
    let mut laughs = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: laughs}\nlol:\n  l0: &l0 lol\n");
    for level in 1..=9 {
        let aliases = vec![format!("*l{}", level - 1); 9].join(", ");
        laughs.push_str(&format!("  l{level}: &l{level} [{aliases}]\n"));
    }
    let reply = raw_exchange(&server, &post(configmaps, "application/yaml", laughs.as_bytes()));
    assert_eq!(status_of(&reply), 400, "{reply}");
    assert!(reply.contains("repetition limit exceeded"), "{reply}");
    still_serving(&server);

    // Invalid UTF-8, in JSON and in YAML.
    let json =
        b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"bad\"},\"data\":{\"k\":\"\xff\xfe\"}}";
    let reply = raw_exchange(&server, &post(configmaps, "application/json", json));
    assert_eq!(status_of(&reply), 400, "{reply}");
    assert!(reply.contains("invalid unicode code point"), "{reply}");
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {k: \"\xc3\x28\"}\n";
    let reply = raw_exchange(&server, &post(configmaps, "application/yaml", yaml));
    assert_eq!(status_of(&reply), 400, "{reply}");
    assert!(reply.contains("invalid trailing UTF-8 octet"), "{reply}");

    // Content-Length and Transfer-Encoding at once, and two Content-Lengths that disagree:
    // the framing is ambiguous, so a request hidden behind it must never run.
    let smuggled = "GET /api/v1/namespaces/default/configmaps/canary HTTP/1.1\r\nHost: axle\r\n\r\n";
    let both = format!(
        "POST {configmaps} HTTP/1.1\r\nHost: axle\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let reply = raw_exchange(&server, both.as_bytes());
    // Chunked wins (RFC 9112 §6.3): an empty body, refused, and the connection is closed.
    assert_eq!(status_of(&reply), 400, "{reply}");
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "nothing behind the body is served: {reply}");
    let twice = format!(
        "POST {configmaps} HTTP/1.1\r\nHost: axle\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 70\r\n\r\n{{}}{smuggled}"
    );
    let reply = raw_exchange(&server, twice.as_bytes());
    assert_eq!(status_of(&reply), 400, "{reply}");
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "nothing behind the body is served: {reply}");
    still_serving(&server);
}

#[test]
fn two_thousand_idle_connections_and_five_hundred_watches_leave_the_car_serving() {
    let server = Server::start();
    let agent = support::Agent::start(&server, "hpc-1", 1);
    let node_ready = || {
        support::wait_for("the node to be Ready", std::time::Duration::from_secs(30), || {
            let nodes = server.kubectl(&["get", "node", "hpc-1", "--no-headers"]);
            String::from_utf8_lossy(&nodes.stdout).contains(" Ready ").then_some(())
        })
    };
    node_ready();
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    let scratch = tempfile::tempdir().expect("tempdir");
    let pems = server.admin_pem_files(scratch.path());

    let idle = Flood::start(&server, "idle", 2000, &pems);
    still_serving(&server);
    node_ready();
    idle.stop();

    let watches = Flood::start(&server, "watch", 500, &pems);
    still_serving(&server);
    server.kubectl_ok(&["patch", "configmap", "canary", "--type", "merge", "-p", r#"{"data":{"k":"w"}}"#]);
    assert_eq!(watches.stop(), 500, "every watch sees the write");
    server.kubectl_ok(&["patch", "configmap", "canary", "--type", "merge", "-p", r#"{"data":{"k":"v"}}"#]);
    still_serving(&server);
    node_ready();
    drop(agent);
}
