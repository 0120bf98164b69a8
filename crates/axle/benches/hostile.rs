//! `cargo bench -p axle --bench hostile`: the server's memory and answer time under floods. Prints
//! a table for people and one JSON line for machines. Needs the `.venv` of `.ci/run` (Python
//! opens the flood's connections, from 127.0.0.2 … 127.0.0.6, so that kubectl-like requests from
//! 127.0.0.1 are not counted against the same address).
//!
//! Figures: PSS and median `GET` of one ConfigMap (a new TLS connection each) when idle, while
//! 600 idle TCP connections are held (512 admitted: the caps), and while 500 watches are open
//! (and how many of them see one write).

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{median, pss_kib, python, Server};

/// Holds connections until told to stop; prints a line once they are open. `watch`: each sends
/// a TLS watch request and counts the events it reads (printed at the end).
const FLOOD: &str = r#"
import socket, ssl, sys, threading, time
host, port, count, mode, ca, cert, key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
seen = [0] * count
conns = []
def source(i):
    return ("127.0.0.%d" % (2 + i % 5), 0)
if mode == "idle":
    for i in range(count):
        conns.append(socket.create_connection((host, port), source_address=source(i)))
else:
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    context.check_hostname = False
    def watch(i):
        raw = socket.create_connection((host, port), source_address=source(i))
        s = context.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        conns.append(s)
        s.settimeout(None)
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            seen[i] += data.count(b'"type":"MODIFIED"')
    for i in range(count):
        threading.Thread(target=watch, args=(i,), daemon=True).start()
    time.sleep(3)
print("open", flush=True)
sys.stdin.readline()
time.sleep(2)
print(sum(1 for n in seen if n > 0), flush=True)
"#;

struct Flood {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Flood {
    fn start(
        server: &Server,
        mode: &str,
        count: usize,
        pems: &(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf),
    ) -> Flood {
        let (host, port) = server.addr.rsplit_once(':').expect("host:port");
        let mut child = Command::new(python())
            .args(["-c", FLOOD, host, port, &count.to_string(), mode])
            .arg(&pems.0)
            .arg(&pems.1)
            .arg(&pems.2)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs (.venv: bash .ci/run)");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("open"));
        Flood { child, lines }
    }

    /// Ends the flood; the number of connections that saw an event.
    fn stop(mut self) -> usize {
        let _ = self.child.stdin.take().expect("stdin").write_all(b"\n");
        let seen = self.lines.next().and_then(Result::ok).and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        let _ = self.child.kill();
        let _ = self.child.wait();
        seen
    }
}

/// PSS in MB and the median GET in ms, now.
fn measure(server: &Server) -> (f64, f64) {
    let samples: Vec<f64> = (0..15)
        .map(|_| {
            let started = Instant::now();
            let (status, _) = server.http("GET", "/api/v1/namespaces/default/configmaps/canary", None);
            assert_eq!(status, 200);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (pss_kib(server.child.id()) as f64 / 1024.0, median(samples))
}

fn main() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pems = server.admin_pem_files(dir.path());
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    std::thread::sleep(Duration::from_secs(3));
    let idle = measure(&server);

    let connections = Flood::start(&server, "idle", 600, &pems);
    let under_connections = measure(&server);
    connections.stop();
    std::thread::sleep(Duration::from_secs(12)); // the handshake timeout closes the rest

    let watches = Flood::start(&server, "watch", 500, &pems);
    let under_watches = measure(&server);
    server.kubectl_ok(&["patch", "configmap", "canary", "--type", "merge", "-p", r#"{"data":{"k":"w"}}"#]);
    let saw_the_write = watches.stop();

    println!("{:<46} {:>10} {:>16}", "CONDITION", "PSS (MB)", "GET median (ms)");
    for (name, (pss, ms)) in
        [("idle", idle), ("600 idle connections (512 admitted)", under_connections), ("500 watches", under_watches)]
    {
        println!("{name:<46} {pss:>10.1} {ms:>16.2}");
    }
    println!("watches that saw one write: {saw_the_write} of 500 (128 per source address admitted, 5 addresses)");
    println!(
        "{}",
        json!({"idle": {"pssMb": idle.0, "getMs": idle.1},
               "idleConnections": {"pssMb": under_connections.0, "getMs": under_connections.1},
               "watches": {"pssMb": under_watches.0, "getMs": under_watches.1, "sawWrite": saw_the_write}})
    );
}
