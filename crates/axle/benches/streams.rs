//! `cargo bench -p axle --bench streams`: what `kubectl exec` and `kubectl port-forward` cost.
//! Prints a table for people and one JSON line for machines.
//!
//! Figures: the median `kubectl exec POD -- sh -c true` round trip into a runc and a process
//! container, beside `kubectl get pod` over the same kubeconfig (kubectl's own start and TLS
//! handshake, the floor every kubectl command pays); port-forward throughput (one connection,
//! 64 MiB through kubectl port-forward); the agent's PSS idle and with 10 exec sessions open.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{busybox_layout, free_port, import, median, pss_kib, Agent, Server};

fn timed(server: &Server, args: &[&str], runs: usize) -> f64 {
    let samples: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            server.kubectl_ok(args);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    median(samples)
}

fn main() {
    let server = Server::start();
    let agent = Agent::start(&server, "hpc-1", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    let port = free_port().to_string();
    for (name, runtime, command) in [
        ("box", "runc", vec!["sleep", "3600"]),
        ("proc", "process", vec!["sleep", "3600"]),
        ("web", "runc", vec!["httpd", "-f", "-p", port.as_str(), "-h", "/"]),
    ] {
        server.create_pod(&json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "hpc-1", "runtimeClassName": runtime, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "busybox:1", "command": command}]},
        }));
    }
    server.kubectl_ok(&["wait", "--for=condition=Ready", "pod/box", "pod/proc", "pod/web", "--timeout=60s"]);
    let floor = timed(&server, &["get", "pod", "box", "-o", "name"], 15);
    let runc = timed(&server, &["exec", "box", "--", "sh", "-c", "true"], 15);
    let process = timed(&server, &["exec", "proc", "--", "sh", "-c", "true"], 15);

    // 64 MiB through one forwarded connection.
    server.kubectl_ok(&["exec", "web", "--", "sh", "-c", "head -c 67108864 /dev/zero > /big"]);
    let local = free_port();
    let (mut forwarding, lines) =
        support::spawn_with_lines(Command::new("kubectl").arg("--kubeconfig").arg(&server.kubeconfig).args([
            "port-forward",
            "pod/web",
            &format!("{local}:{port}"),
        ]));
    lines.recv_timeout(Duration::from_secs(20)).expect("port-forward starts");
    let throughput: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", local)).expect("connects");
            stream.write_all(b"GET /big HTTP/1.0\r\n\r\n").expect("request");
            let mut total = 0usize;
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                total += n;
            }
            assert!(total >= 64 << 20, "the whole file came: {total} bytes");
            (total as f64 / (1 << 20) as f64) / started.elapsed().as_secs_f64()
        })
        .collect();
    let throughput = median(throughput);
    let _ = forwarding.kill();
    let _ = forwarding.wait();

    std::thread::sleep(Duration::from_secs(2));
    let idle = pss_kib(agent.child.id()) as f64 / 1024.0;
    let sessions: Vec<_> = (0..10)
        .map(|_| {
            Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&server.kubeconfig)
                .args(["exec", "box", "--", "sleep", "30"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("kubectl exec")
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let busy = pss_kib(agent.child.id()) as f64 / 1024.0;
    for mut session in sessions {
        let _ = session.kill();
        let _ = session.wait();
    }

    println!("{:<58} {:>10}", "FIGURE", "VALUE");
    println!("{:<58} {:>7.1} ms", "kubectl get pod (kubectl's own floor), median", floor);
    println!("{:<58} {:>7.1} ms", "kubectl exec POD -- sh -c true, runc container, median", runc);
    println!("{:<58} {:>7.1} ms", "kubectl exec POD -- sh -c true, process container, median", process);
    println!("{:<58} {:>7.1} MB/s", "port-forward, one connection, 64 MiB", throughput);
    println!("{:<58} {:>7.1} MB", "agent PSS, idle with 3 pods", idle);
    println!("{:<58} {:>7.1} MB", "agent PSS, 10 exec sessions open", busy);
    println!(
        "{}",
        json!({"kubectlGetMs": floor, "execRuncMs": runc, "execProcessMs": process,
               "portForwardMBps": throughput, "agentPssIdleMb": idle, "agentPss10ExecMb": busy})
    );
}
