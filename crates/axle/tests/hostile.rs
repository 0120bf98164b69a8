//! Hostile conditions against a real server: requests and connections meant to stall it. After
//! each, the server answers `kubectl get` and a known object is unchanged.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use support::{python, Server};

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
