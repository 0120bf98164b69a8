//! OCI containers end to end: an image built by a third-party tool (`umoci`, packing Debian's
//! static busybox) is pushed to the car's registry with `axle image import` and with `skopeo`,
//! and real `runc`/`crun` run it: it serves a port, reads its ConfigMap/Secret, logs, restarts
//! after crashes, is OOM-killed at its limit and leaves nothing behind once deleted. Bad pods
//! get clear reasons while the rest of the node carries on.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{busybox_layout, free_port, import, wait_for, Agent, Server};

fn skopeo_copy(server: &Server, layout: &Path, destination: &str) {
    // The registry is served with the API: TLS from the car's CA, the admin's certificate.
    let certs = tempfile::tempdir().expect("tempdir");
    // skopeo's certificate directory: `*.crt` CAs, a client pair `NAME.cert` + `NAME.key`.
    let (_, cert, _) = server.admin_pem_files(certs.path());
    std::fs::rename(cert, certs.path().join("admin.cert")).expect("client cert");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-cert-dir"])
        .arg(certs.path())
        .arg(format!("oci:{}:bb", layout.display()))
        .arg(format!("docker://{}/{destination}", server.addr))
        .output()
        .expect("skopeo runs (Debian package skopeo)");
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
}

fn container_state(server: &Server, pod: &str) -> Option<Value> {
    server.pod(pod)?["status"]["containerStatuses"].get(0).cloned()
}

fn waiting_reason(server: &Server, pod: &str) -> Option<(String, String)> {
    let status = container_state(server, pod)?;
    let waiting = &status["state"]["waiting"];
    Some((waiting["reason"].as_str()?.to_string(), waiting["message"].as_str().unwrap_or("").to_string()))
}

fn http_get(port: u16, path: &str) -> Option<String> {
    support::http(&format!("127.0.0.1:{port}"), "GET", path, None).ok().map(|(_, body)| body)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        found.push(entry.path());
        if entry.path().is_dir() {
            found.extend(walk(&entry.path()));
        }
    }
    found
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_string_lossy().to_string();
    info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&dir)).map(String::from).collect()
}

#[test]
fn oci_containers_run_from_the_cars_registry() {
    let server = Server::start();
    let agent = Agent::start(&server, "hpc-1", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    skopeo_copy(&server, &layout, "mirror/busybox:1");
    let images = Command::new(support::axle_bin())
        .args(["image", "ls", "--kubeconfig"])
        .arg(&server.kubeconfig)
        .output()
        .expect("axle image ls");
    let listing = String::from_utf8_lossy(&images.stdout);
    assert!(listing.contains("busybox") && listing.contains("mirror/busybox"), "{listing}");

    let port = free_port();
    server.apply_stdin(
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-content}}
data: {{index.html: "hello from a configMap"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: web-secret}}
stringData: {{token: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: hpc-1
  terminationGracePeriodSeconds: 2
  securityContext: {{runAsUser: 65534, runAsGroup: 65534}}
  containers:
  - name: web
    image: busybox:1
    command: ["/bin/sh", "-c", "echo token=$TOKEN; id; hostname; touch /scratch/ok && echo scratch writable; touch /rootfs-file || echo rootfs read-only; exec httpd -f -p {port} -h /www"]
    env:
    - name: TOKEN
      valueFrom: {{secretKeyRef: {{name: web-secret, key: token}}}}
    securityContext: {{readOnlyRootFilesystem: true}}
    readinessProbe:
      tcpSocket: {{port: {port}}}
      periodSeconds: 1
    volumeMounts:
    - {{name: content, mountPath: /www, readOnly: true}}
    - {{name: scratch, mountPath: /scratch}}
  volumes:
  - name: content
    configMap: {{name: web-content}}
  - name: scratch
    emptyDir: {{}}
"#
        ),
        &[],
    );
    let status = wait_for("the runc container to be Running and Ready", Duration::from_secs(60), || {
        container_state(&server, "web").filter(|s| s["ready"] == true)
    });
    assert!(status["containerID"].as_str().unwrap_or("").starts_with("oci://"), "{status}");
    assert!(status["imageID"].as_str().unwrap_or("").starts_with("busybox@sha256:"), "{status}");
    assert_eq!(http_get(port, "/index.html").as_deref(), Some("hello from a configMap"));
    let logs = wait_for("the container's output in kubectl logs", Duration::from_secs(10), || {
        let logs = server.kubectl_ok(&["logs", "web"]);
        logs.contains("rootfs read-only").then_some(logs)
    });
    for expected in ["token=s3cret", "uid=65534", "\nweb\n", "scratch writable"] {
        assert!(logs.contains(expected), "{expected:?} missing from:\n{logs}");
    }

    // crun, from the image skopeo pushed: restarted after each crash, with its previous logs.
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crashy"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "crun", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "mirror/busybox:1", "args": ["-c", "echo attempt; sleep 0.3; exit 3"]}]}}));
    let status = wait_for("crashy to be restarted", Duration::from_secs(60), || {
        container_state(&server, "crashy").filter(|s| s["restartCount"].as_u64() >= Some(1))
    });
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status}");
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error", "{status}");
    let previous = server.kubectl_ok(&["logs", "crashy", "--previous"]);
    assert!(previous.contains("attempt"), "{previous}");

    // The kernel kills a container at its memory limit: OOMKilled, as Kubernetes says it.
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"},
        "spec": {"nodeName": "hpc-1", "restartPolicy": "Never",
                 "containers": [{"name": "hog", "image": "busybox:1",
                                 "command": ["/bin/sh", "-c", "a=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived"],
                                 "resources": {"limits": {"memory": "32Mi"}}}]}}));
    let status = wait_for("hog to be OOM-killed", Duration::from_secs(60), || {
        container_state(&server, "hog").filter(|s| s["state"]["terminated"].is_object())
    });
    assert_eq!(status["state"]["terminated"]["reason"], "OOMKilled", "{status}");
    assert_eq!(status["state"]["terminated"]["exitCode"], 137, "{status}");

    // Deleted pods leave no process, mount, cgroup or runtime state behind.
    let agent_dir = server.data_dir().join("agent-hpc-1");
    server.kubectl_ok(&["delete", "pod", "web", "crashy", "hog", "--wait=true", "--timeout=60s"]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "httpd still serves");
    assert_eq!(mounts_under(&agent_dir), Vec::<String>::new());
    for runtime in ["runc", "crun"] {
        let listed = Command::new(runtime)
            .arg("--root")
            .arg(agent_dir.join("run").join(runtime))
            .args(["list", "-q"])
            .output()
            .expect("runtime list");
        assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "", "{runtime} still has containers");
    }
    // A terminal pod (hog) is deleted at once by the API; the agent cleans up right after.
    wait_for("the pods' files to be removed", Duration::from_secs(10), || {
        walk(&agent_dir.join("pods")).is_empty().then_some(())
    });
    drop(agent);
}

#[test]
fn bad_oci_pods_get_clear_reasons_while_others_run() {
    let server = Server::start();
    let _agent = Agent::start(&server, "hpc-1", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    let pod = |name: &str, container: Value, volumes: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"nodeName": "hpc-1", "terminationGracePeriodSeconds": 1, "containers": [container], "volumes": volumes}})
    };
    // Pinned by digest, as `axle image ls` shows it.
    let listing = Command::new(support::axle_bin())
        .args(["image", "ls", "--kubeconfig"])
        .arg(&server.kubeconfig)
        .output()
        .expect("axle image ls");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let digest = listing.lines().find(|l| l.starts_with("busybox ")).and_then(|l| l.split_whitespace().nth(2));
    let pinned = format!("busybox@{}", digest.expect("busybox in the listing"));
    let sleeper = json!({"name": "c", "image": pinned, "command": ["/bin/sh", "-c", "echo up; exec sleep 600"]});
    server.create_pod(&pod("missing-image", json!({"name": "c", "image": "nav/absent:9"}), json!([])));
    let mut nfs = sleeper.clone();
    nfs["volumeMounts"] = json!([{"name": "remote", "mountPath": "/remote"}]);
    server.create_pod(&pod("bad-volume", nfs, json!([{"name": "remote", "nfs": {"server": "x", "path": "/"}}])));
    let mut as_root = sleeper.clone();
    as_root["securityContext"] = json!({"runAsNonRoot": true});
    server.create_pod(&pod("non-root", as_root, json!([])));
    server.create_pod(&pod("fine", sleeper, json!([])));

    let (reason, message) = wait_for("missing-image to report the pull failure", Duration::from_secs(30), || {
        waiting_reason(&server, "missing-image").filter(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
    assert!(message.contains("nav/absent:9") || message.contains("not found"), "{reason}: {message}");
    let (_, message) = wait_for("bad-volume to report its volume", Duration::from_secs(30), || {
        waiting_reason(&server, "bad-volume").filter(|(r, _)| r == "CreateContainerConfigError")
    });
    assert!(message.contains("\"remote\"") && message.contains("nfs"), "{message}");
    let (_, message) = wait_for("non-root to refuse running as root", Duration::from_secs(30), || {
        waiting_reason(&server, "non-root").filter(|(r, _)| r == "CreateContainerConfigError")
    });
    assert!(message.contains("runAsNonRoot"), "{message}");
    let fine = wait_for("the good pod to run meanwhile", Duration::from_secs(30), || {
        container_state(&server, "fine").filter(|s| s["state"]["running"].is_object())
    });
    assert!(fine["imageID"].as_str().is_some_and(|id| pinned.ends_with(id.trim_start_matches("busybox@"))), "{fine}");
    let table = server.kubectl_ok(&["get", "pods"]);
    assert!(table.contains("ErrImagePull") || table.contains("ImagePullBackOff"), "{table}");
    assert!(table.contains("CreateContainerConfigError"), "{table}");
}

#[test]
fn oci_pods_come_back_after_an_agent_crash_without_the_server() {
    let server = Server::start();
    let mut agent = Agent::start(&server, "hpc-1", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    let port = free_port();
    server.apply_stdin(
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: site}}
data: {{index.html: "served offline"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nav}}
spec:
  nodeName: hpc-1
  terminationGracePeriodSeconds: 1
  containers:
  - name: nav
    image: busybox:1
    command: ["/bin/httpd", "-f", "-p", "{port}", "-h", "/www"]
    volumeMounts: [{{name: site, mountPath: /www}}]
  volumes: [{{name: site, configMap: {{name: site}}}}]
"#
        ),
        &[],
    );
    wait_for("nav to serve", Duration::from_secs(60), || {
        http_get(port, "/index.html").filter(|b| b == "served offline")
    });

    // The agent dies hard and the control plane is gone; the computer comes back up.
    let dir = server.crash();
    agent.kill9();
    let agent_dir = dir.path().join("agent-hpc-1");
    let restarted = Agent::restart_without_server(&agent_dir, "hpc-1");
    // The orphaned container is removed and the pod started again: one httpd, serving the
    // ConfigMap it had, from the image already on the node.
    let restart_log = agent_dir.with_extension("restart.log");
    wait_for("the orphaned container to be removed", Duration::from_secs(30), || {
        std::fs::read_to_string(&restart_log).ok().filter(|l| l.contains("removing a container left from before"))
    });
    // Only once the orphan is gone does the agent start the pods again (until then the old
    // container may still answer below).
    wait_for("the agent to restart the pods it ran", Duration::from_secs(30), || {
        std::fs::read_to_string(&restart_log).ok().filter(|l| l.contains("restarting the pods this node ran before"))
    });
    wait_for("nav to serve again with no server", Duration::from_secs(60), || {
        let listed =
            Command::new("runc").arg("--root").arg(agent_dir.join("run/runc")).args(["list", "-q"]).output().ok()?;
        let containers = String::from_utf8_lossy(&listed.stdout).lines().count();
        (containers == 1 && http_get(port, "/index.html").as_deref() == Some("served offline")).then_some(())
    });
    drop(restarted);
    assert_eq!(mounts_under(&agent_dir), Vec::<String>::new(), "the stopped agent left mounts");
}

#[test]
fn short_lived_containers_report_their_true_exit_codes() {
    let server = Server::start();
    let _agent = Agent::start(&server, "hpc-1", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    let mut expected = Vec::new();
    for (i, runtime) in ["runc", "crun"].iter().cycle().take(20).enumerate() {
        let code = [0, 3, 0, 7, 42][i % 5];
        let name = format!("quick-{i}");
        server.create_pod(&json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "hpc-1", "restartPolicy": "Never", "runtimeClassName": runtime,
                     "containers": [{"name": "c", "image": "busybox:1",
                                     "command": ["sh", "-c", format!("echo hi; exit {code}")]}]},
        }));
        expected.push((name, code));
    }
    // A process killed by a signal: 128 + the signal's number. (Not in a container: the PID 1
    // of a PID namespace ignores signals it has no handler for, even SIGKILL from inside.)
    server.create_pod(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "killed"},
        "spec": {"nodeName": "hpc-1", "restartPolicy": "Never", "runtimeClassName": "process",
                 "containers": [{"name": "c", "image": "busybox:1", "command": ["sh", "-c", "kill -9 $$"]}]},
    }));
    expected.push(("killed".into(), 137));
    for (name, code) in expected {
        let terminated = wait_for(&format!("{name} to end"), Duration::from_secs(60), || {
            container_state(&server, &name).and_then(|s| s["state"]["terminated"].as_object().cloned())
        });
        assert_eq!(terminated["exitCode"], code, "{name}: {terminated:?}");
        let (phase, reason) = if code == 0 { ("Succeeded", "Completed") } else { ("Failed", "Error") };
        assert_eq!(terminated["reason"], reason, "{name}");
        assert_eq!(server.pod(&name).expect("pod")["status"]["phase"], phase, "{name}");
    }
}
