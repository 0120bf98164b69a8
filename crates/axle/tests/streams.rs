//! `kubectl exec`, `kubectl cp` and `kubectl port-forward` end to end: the real kubectl, new
//! (WebSocket, v5.channel.k8s.io; SPDY in a WebSocket for port-forward) and old (SPDY) and
//! the official Python client (v4.channel.k8s.io) reach a runc container and a process
//! container through the API server and the node's agent: output, stderr, stdin, exit codes, a
//! terminal with its size, files both ways, a pod's ports. Viewers may not exec; bad requests get
//! clear errors and the agent keeps serving.

mod support;

use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::identities::{kubectl_as, node_kubeconfig, stderr, user_kubeconfig};
use support::{busybox_layout, import, python, wait_for, Agent, Server};

fn car() -> (Server, Agent) {
    let server = Server::start();
    let agent = Agent::start(&server, "hpc-1", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    for (name, runtime) in [("box", "runc"), ("proc", "process")] {
        server.create_pod(&json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "hpc-1", "runtimeClassName": runtime, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "busybox:1", "command": ["sleep", "3600"]}]},
        }));
    }
    server.kubectl_ok(&["wait", "--for=condition=Ready", "pod/box", "pod/proc", "--timeout=60s"]);
    (server, agent)
}

/// kubectl with `stdin`, returning (exit code, stdout, stderr).
fn kubectl(server: &Server, args: &[&str], stdin: &str) -> (i32, String, String) {
    let out = server.kubectl_with_stdin(args, Some(stdin));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn kubectl_exec_and_cp_reach_runc_and_process_containers() {
    let (server, _agent) = car();
    for pod in ["box", "proc"] {
        let (code, out, err) = kubectl(&server, &["exec", pod, "--", "sh", "-c", "echo out; echo err >&2; exit 7"], "");
        assert_eq!((code, out.as_str()), (7, "out\n"), "{pod}: {err}");
        assert!(err.contains("err\n") && err.contains("command terminated with exit code 7"), "{pod}: {err}");
        let (code, out, err) =
            kubectl(&server, &["exec", "-i", pod, "--", "sh", "-c", "cat; echo done"], "from stdin\n");
        assert_eq!((code, out.as_str()), (0, "from stdin\ndone\n"), "{pod}: {err}");
    }
    // kubectl before 1.30 speaks SPDY: the same, a stream per channel.
    let old = support::kubectl_release("1.27");
    let mut child = Command::new(&old)
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(["exec", "-i", "box", "--", "sh", "-c", "cat; echo err >&2; exit 5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl 1.27 runs");
    use std::io::Write as _;
    child.stdin.take().expect("stdin").write_all(b"over spdy\n").expect("stdin");
    let out = child.wait_with_output().expect("kubectl 1.27 ends");
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over spdy\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));

    // The runc container's own view: its hostname is the pod's, its root is the image's.
    let (_, out, _) = kubectl(&server, &["exec", "box", "--", "sh", "-c", "hostname; ls /bin/busybox"], "");
    assert_eq!(out, "box\n/bin/busybox\n");

    // A terminal, sized as the caller's (`script` gives kubectl one).
    let terminal = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "stty cols 91 rows 27; kubectl --kubeconfig {} exec -it box -- sh -c 'tty; stty size; exit 3'",
            server.kubeconfig.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("script runs (util-linux)");
    let shown = String::from_utf8_lossy(&terminal.stdout).replace('\r', "");
    assert!(shown.contains("/dev/pts/") && shown.contains("27 91"), "{shown}");
    assert_eq!(terminal.status.code(), Some(3), "{shown}");

    // kubectl cp both ways (tar through exec).
    let scratch = tempfile::tempdir().expect("tempdir");
    let local = scratch.path().join("settings.txt");
    std::fs::write(&local, "speed=limited\n").expect("write");
    server.kubectl_ok(&["cp", &local.to_string_lossy(), "box:/settings.txt"]);
    let (_, out, _) = kubectl(&server, &["exec", "box", "--", "cat", "/settings.txt"], "");
    assert_eq!(out, "speed=limited\n");
    let back = scratch.path().join("back.txt");
    server.kubectl_ok(&["cp", "box:/settings.txt", &back.to_string_lossy()]);
    assert_eq!(std::fs::read_to_string(&back).expect("copied back"), "speed=limited\n");

    // The official Python client's stream() (v4.channel.k8s.io).
    let script = r#"
import os, sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config(config_file=os.environ["KUBECONFIG"])
core = client.CoreV1Api()
out = stream(core.connect_get_namespaced_pod_exec, "box", "default", command=["sh", "-c", "echo from-python"],
             stderr=True, stdin=False, stdout=True, tty=False)
print(out.strip())
"#;
    let out =
        Command::new(python()).args(["-c", script]).env("KUBECONFIG", &server.kubeconfig).output().expect("python");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from-python", "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn exec_is_authorized_and_bad_requests_get_clear_errors() {
    let (server, _agent) = car();
    let dir = tempfile::tempdir().expect("tempdir");
    let viewer = user_kubeconfig(&server, dir.path(), "vera", &["axle:viewers"], 3600);
    let out = kubectl_as(&viewer, &["exec", "box", "--", "true"]);
    assert!(stderr(&out).contains("cannot create resource \"pods/exec\""), "{}", stderr(&out));
    // A node's own identity may not exec, not even into its own pods (as upstream's node
    // authorizer): only people and tools with RBAC for pods/exec may.
    let node = node_kubeconfig(&server, dir.path(), "hpc-1");
    let out = kubectl_as(&node, &["exec", "box", "--", "true"]);
    assert!(stderr(&out).contains("forbidden") || stderr(&out).contains("Forbidden"), "{}", stderr(&out));

    let (_, _, err) = kubectl(&server, &["exec", "box", "-c", "nope", "--", "true"], "");
    assert!(err.contains("container nope is not valid for pod box"), "{err}");
    server.create_pod(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done"},
        "spec": {"nodeName": "hpc-1", "restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "busybox:1", "command": ["sh", "-c", "true"]}]},
    }));
    wait_for("the pod to finish", Duration::from_secs(60), || {
        (server.pod("done")?["status"]["phase"] == "Succeeded").then_some(())
    });
    let (_, _, err) = kubectl(&server, &["exec", "done", "--", "true"], "");
    assert!(err.contains("cannot exec into a container in a completed pod; current phase is Succeeded"), "{err}");
    server.create_pod(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "brake-fw"},
        "spec": {"nodeName": "brake-ecu", "runtimeClassName": "ecu",
                 "containers": [{"name": "firmware", "image": "busybox:1"}]},
    }));
    let (_, _, err) = kubectl(&server, &["exec", "brake-fw", "--", "true"], "");
    assert!(err.contains("runs on an ECU"), "{err}");
    // A command that does not exist fails as upstream's does; the agent serves on.
    let (code, _, err) = kubectl(&server, &["exec", "box", "--", "no-such-command"], "");
    assert_ne!(code, 0, "{err}");
    let (code, out, _) = kubectl(&server, &["exec", "box", "--", "echo", "still here"], "");
    assert_eq!((code, out.as_str()), (0, "still here\n"));
}

/// `GET path` over plain HTTP/1.0 to 127.0.0.1:`port`: the whole answer's body, as bytes.
fn get_bytes(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    let body = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
    answer.split_off(body)
}

#[test]
fn kubectl_port_forward_old_and_new_reaches_a_pods_ports() {
    let (server, _agent) = car();
    // Pods share the node's network here, so the server takes a port nobody else has.
    let pod_port = support::free_port().to_string();
    server.create_pod(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"nodeName": "hpc-1", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "web", "image": "busybox:1", "command": ["httpd", "-f", "-p", pod_port, "-h", "/bin"]}]},
    }));
    server.kubectl_ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let busybox = std::fs::read("/bin/busybox").expect("the image's busybox is Debian's");
    // 1.27 speaks SPDY; 1.33 tunnels SPDY in a WebSocket.
    for release in ["1.27", "1.33"] {
        let (first, second) = (support::free_port(), support::free_port());
        let errors = server.data_dir().join(format!("port-forward-{release}.log"));
        let (mut forwarding, lines) = support::spawn_with_lines(Command::new("sh").arg("-c").arg(format!(
            "exec {} --kubeconfig {} port-forward pod/web {first}:{pod_port} {second}:{pod_port} 2>{}",
            support::kubectl_release(release).display(),
            server.kubeconfig.display(),
            errors.display()
        )));
        for _ in 0..4 {
            let line = lines.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|e| {
                panic!(
                    "{release}: kubectl port-forward ended ({e}): {}",
                    std::fs::read_to_string(&errors).unwrap_or_default()
                )
            });
            assert!(line.contains("Forwarding from"), "{release}: {line}");
        }
        // Several connections, through both ports; a 2 MB file arrives whole.
        for port in [first, first, second] {
            assert!(get_bytes(port, "/busybox") == busybox, "{release}: port {port}");
        }
        let _ = forwarding.kill();
        let _ = forwarding.wait();
    }
    // Nobody listens on the port: the error reaches kubectl; the agent serves on.
    let (port, closed) = (support::free_port(), support::free_port());
    let (mut forwarding, lines) =
        support::spawn_with_lines(Command::new("kubectl").arg("--kubeconfig").arg(&server.kubeconfig).args([
            "port-forward",
            "pod/web",
            &format!("{port}:{closed}"),
        ]));
    lines.recv_timeout(Duration::from_secs(20)).expect("forwarding");
    assert!(get_bytes(port, "/").is_empty());
    let _ = forwarding.kill();
    let _ = forwarding.wait();
    let (code, out, _) = kubectl(&server, &["exec", "web", "--", "echo", "still here"], "");
    assert_eq!((code, out.as_str()), (0, "still here\n"));
}

#[test]
fn kubectl_attach_follows_a_containers_output_and_feeds_its_stdin() {
    let (server, _agent) = car();
    server.create_pod(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker"},
        "spec": {"nodeName": "hpc-1", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "busybox:1", "stdin": true,
                                 "command": ["sh", "-c", "echo ready; while read line; do echo got $line; done"]}]},
    }));
    server.kubectl_ok(&["wait", "--for=condition=Ready", "pod/talker", "--timeout=60s"]);
    for release in ["1.27", "1.33"] {
        // Attached, kubectl stays until it is stopped: what it printed by then is what counts.
        let mut attached = Command::new(support::kubectl_release(release))
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args(["attach", "-i", "talker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl attach runs");
        let mut input = attached.stdin.take().expect("stdin");
        std::thread::sleep(Duration::from_secs(2));
        use std::io::Write as _;
        input.write_all(format!("hello-{release}\n").as_bytes()).expect("typed");
        input.flush().expect("flushed");
        std::thread::sleep(Duration::from_secs(2));
        let _ = attached.kill();
        let out = attached.wait_with_output().expect("kubectl ends");
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            shown.contains(&format!("got hello-{release}")),
            "{release}: {shown} / {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Its log has it all, attached or not.
    let logs = server.kubectl_ok(&["logs", "talker"]);
    assert!(logs.contains("got hello-1.27") && logs.contains("got hello-1.33"), "{logs}");
    // -i into a container that keeps no stdin is refused with the reason.
    let (code, _, err) = kubectl(&server, &["attach", "-i", "box"], "");
    assert_ne!(code, 0);
    assert!(err.contains("keeps no standard input"), "{err}");
}
