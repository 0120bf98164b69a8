//! Pods run by a real agent: native `process` pods serve, restart with back-off, report their
//! status, stop on deletion leaving nothing behind, survive an agent restart without the
//! server, and bad pods get clear reasons without disturbing the others.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{free_port, wait_for, Agent, Server};

fn http_server_pod(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process", "terminationGracePeriodSeconds": 5,
                 "containers": [{"name": "web", "image": "python3",
                                 "command": ["python3", "-m", "http.server", port.to_string(), "--bind", "127.0.0.1"]}]}})
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn process_pods_run_restart_report_and_clean_up() {
    let server = Server::start_with(&["--node-grace-seconds", "3"]);
    let _agent = Agent::start(&server, "hpc-1", 1);
    let port = free_port();
    server.create_pod(&http_server_pod("web", port));
    let pod = wait_for("the web pod to be Running and Ready", Duration::from_secs(30), || {
        let pod = server.pod("web")?;
        let ready =
            pod["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        (pod["status"]["phase"] == "Running" && ready).then_some(pod)
    });
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    wait_for("the pod to serve its port", Duration::from_secs(10), || answers(port).then_some(()));
    let table = server.kubectl_ok(&["get", "pod", "web"]);
    assert!(table.contains("1/1") && table.contains("Running"), "{table}");

    // A crashing container is restarted with back-off and says so.
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process",
                 "containers": [{"name": "c", "image": "sh", "command": ["sh", "-c", "echo starting; exit 3"]}]}}));
    let crashed = wait_for("the crasher to be restarted", Duration::from_secs(40), || {
        let pod = server.pod("crasher")?;
        (pod["status"]["containerStatuses"][0]["restartCount"].as_u64()? >= 1).then_some(pod)
    });
    let status = &crashed["status"]["containerStatuses"][0];
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status}");

    // Logs through the API server, from the agent that keeps them.
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process",
                 "containers": [{"name": "c", "image": "sh", "command": ["sh", "-c", "echo one; echo two; exec sleep 3600"]}]}}),
    );
    let logs = wait_for("the talker's logs", Duration::from_secs(30), || {
        let out = server.kubectl(&["logs", "talker"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text == "one\ntwo\n").then_some(text)
    });
    assert_eq!(logs, "one\ntwo\n");
    assert_eq!(server.kubectl_ok(&["logs", "talker", "--tail=1"]), "two\n");
    let stamped = server.kubectl_ok(&["logs", "talker", "--timestamps"]);
    assert!(stamped.lines().all(|l| l.len() > 31 && l.as_bytes()[4] == b'-'), "{stamped}");
    assert!(server.kubectl_ok(&["logs", "crasher"]).contains("starting"));
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ticker"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process",
                 "containers": [{"name": "c", "image": "sh", "command": ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]}]}}),
    );
    let (mut follow, lines) = support::spawn_with_lines(
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args(["logs", "-f", "ticker"]),
    );
    let mut ticks = 0;
    wait_for("kubectl logs -f to stream new lines", Duration::from_secs(30), || {
        while let Ok(line) = lines.try_recv() {
            ticks += usize::from(line == "tick");
        }
        (ticks >= 10).then_some(())
    });
    let _ = follow.kill();
    let _ = follow.wait();
    let err = server.kubectl_err(&["logs", "talker", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod talker"), "{err}");

    // Bad input gets a clear reason; the other pods keep running.
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "odd"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "warp-drive", "containers": [{"name": "c", "image": "x"}]}}));
    wait_for("the odd pod to report its runtime class", Duration::from_secs(20), || {
        let pod = server.pod("odd")?;
        (pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "RuntimeClassNotFound").then_some(())
    });
    assert!(answers(port), "the web pod still serves");

    // Deletion stops the process and removes the pod.
    let out = server.kubectl_ok(&["delete", "pod", "web", "--wait=true", "--timeout=30s"]);
    assert!(out.contains("deleted"), "{out}");
    assert!(server.pod("web").is_none());
    wait_for("the port to close", Duration::from_secs(10), || (!answers(port)).then_some(()));
}

#[test]
fn agent_restarted_without_server_brings_its_pods_back() {
    let server = Server::start();
    let mut agent = Agent::start(&server, "hpc-1", 1);
    let port = free_port();
    server.create_pod(&http_server_pod("nav", port));
    wait_for("the nav pod to serve", Duration::from_secs(30), || answers(port).then_some(()));

    // The control plane goes away; the agent restarts (a reboot of the computer).
    let dir = server.crash();
    agent.kill9();
    wait_for("the pod to stop with its agent", Duration::from_secs(10), || (!answers(port)).then_some(()));
    let agent_dir = dir.path().join("agent-hpc-1");
    assert!(agent_dir.join("pods.json").exists(), "the agent kept the desired pods on disk");
    let _restarted = Agent::restart_without_server(&agent_dir, "hpc-1");
    wait_for("the pod to come back with no server", Duration::from_secs(30), || answers(port).then_some(()));
}

#[test]
fn init_containers_run_in_order_before_the_containers() {
    let server = Server::start();
    let _agent = Agent::start(&server, "hpc-1", 1);
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = scratch.path().join("order").display().to_string();
    let step = |name: &str, script: String| json!({"name": name, "image": "sh", "command": ["sh", "-c", script]});
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "staged"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process",
                 "initContainers": [step("first", format!("sleep 0.3; echo first >> {file}")), step("second", format!("echo second >> {file}"))],
                 "containers": [step("main", format!("cat {file}; exec sleep 3600"))]}}),
    );
    let pod = wait_for("the staged pod to run", Duration::from_secs(30), || {
        let pod = server.pod("staged")?;
        (pod["status"]["phase"] == "Running").then_some(pod)
    });
    let initialized = pod["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    assert!(initialized, "{pod}");
    assert_eq!(pod["status"]["initContainerStatuses"][1]["state"]["terminated"]["reason"], "Completed");
    let logs = wait_for("main's output", Duration::from_secs(20), || {
        let out = server.kubectl(&["logs", "staged", "-c", "main"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(logs, "first\nsecond\n", "init containers ran in order, before main");

    // A failing init container of a Never pod fails the pod; main never starts.
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "doomed"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process", "restartPolicy": "Never",
                 "initContainers": [step("check", "exit 7".into())],
                 "containers": [step("main", "exec sleep 3600".into())]}}));
    let pod = wait_for("the doomed pod to fail", Duration::from_secs(30), || {
        let pod = server.pod("doomed")?;
        (pod["status"]["phase"] == "Failed").then_some(pod)
    });
    assert_eq!(pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 7);
    assert!(pod["status"]["containerStatuses"][0]["state"]["waiting"].is_object(), "{pod}");
    let table = server.kubectl_ok(&["get", "pod", "doomed"]);
    assert!(table.contains("Init:Error"), "{table}");
}

fn ready_condition(pod: &Value) -> Option<String> {
    pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?["status"].as_str().map(String::from)
}

#[test]
fn probes_drive_readiness_and_restarts() {
    let server = Server::start();
    let _agent = Agent::start(&server, "hpc-1", 1);
    let flags = tempfile::tempdir().expect("tempdir");
    let ready_flag = flags.path().join("ready");
    let alive_flag = flags.path().join("alive");
    std::fs::write(&alive_flag, "").expect("flag");
    let port = free_port();
    let check = |path: &std::path::Path| json!({"exec": {"command": ["test", "-f", path.display().to_string()]}, "periodSeconds": 1, "failureThreshold": 1});
    let mut liveness = check(&alive_flag);
    liveness["initialDelaySeconds"] = json!(1);
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process", "containers": [{
            "name": "web", "image": "python3",
            "command": ["python3", "-m", "http.server", port.to_string(), "--bind", "127.0.0.1"],
            "ports": [{"name": "http", "containerPort": port}],
            "startupProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 30},
            "readinessProbe": check(&ready_flag),
            "livenessProbe": liveness}]}}));
    // Started and serving, but not ready until the readiness check passes.
    wait_for("the probed pod to run", Duration::from_secs(30), || {
        let pod = server.pod("probed")?;
        (pod["status"]["phase"] == "Running" && answers(port)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let pod = server.pod("probed").expect("pod");
    assert_eq!(ready_condition(&pod).as_deref(), Some("False"), "{}", pod["status"]);
    let scheduled_at = |pod: &Value| pod["status"]["conditions"][0]["lastTransitionTime"].clone();
    std::fs::write(&ready_flag, "").expect("flag");
    let ready = wait_for("readiness to turn the pod Ready", Duration::from_secs(20), || {
        let pod = server.pod("probed")?;
        (ready_condition(&pod).as_deref() == Some("True")).then_some(pod)
    });
    // Conditions keep the time they last changed; only Ready moved.
    assert_eq!(scheduled_at(&ready), scheduled_at(&pod), "{}", ready["status"]);
    std::fs::remove_file(&ready_flag).expect("unflag");
    wait_for("a failing readiness check to take Ready away", Duration::from_secs(20), || {
        (server.pod("probed").and_then(|p| ready_condition(&p)).as_deref() == Some("False")).then_some(())
    });
    // A failing liveness check restarts the container.
    std::fs::remove_file(&alive_flag).expect("unflag");
    let pod = wait_for("the liveness failure to restart the container", Duration::from_secs(30), || {
        let pod = server.pod("probed")?;
        (pod["status"]["containerStatuses"][0]["restartCount"].as_u64()? >= 1).then_some(pod)
    });
    assert!(pod["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object(), "{pod}");
}

#[test]
fn a_steady_pod_causes_no_status_writes() {
    let server = Server::start();
    let _agent = Agent::start(&server, "hpc-1", 1);
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "steady"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process",
                 "containers": [{"name": "c", "image": "sleep", "command": ["sleep", "3600"]}]}}));
    let before = wait_for("the steady pod to be Ready", Duration::from_secs(30), || {
        let pod = server.pod("steady")?;
        (ready_condition(&pod).as_deref() == Some("True")).then_some(pod)
    });
    // Across several seconds (and lease renewals) the pod's stored version does not move.
    std::thread::sleep(Duration::from_millis(2500));
    let after = server.pod("steady").expect("pod");
    assert_eq!(before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"], "{}", after["status"]);
}
