//! Floods of connections held open by a Python helper (from 127.0.0.2 … 127.0.0.6, so that
//! requests of the test from 127.0.0.1 do not count against the same address): idle TCP
//! connections, or TLS watches that count the events they read.

use super::{python, Server};
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};

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

pub struct Flood {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Flood {
    pub fn start(
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
    pub fn stop(mut self) -> usize {
        let _ = self.child.stdin.take().expect("stdin").write_all(b"\n");
        let seen = self.lines.next().and_then(Result::ok).and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        let _ = self.child.kill();
        let _ = self.child.wait();
        seen
    }
}
