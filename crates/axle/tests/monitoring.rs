//! Monitoring with the real tools: `promtool check metrics` passes on the server's and the
//! agent's `/metrics`, a real Prometheus server scrapes both and answers PromQL queries for the
//! pod count and a container's CPU, and `kubectl top` shows a running container's usage.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{free_port, wait_for, Agent, Killed, Server};

/// A container that keeps one CPU busy, and one that idles.
fn pod(name: &str, script: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
           "spec": {"nodeName": "hpc-1", "runtimeClassName": "runc", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": "sample:1.0", "command": ["/bin/sh", "-c", script]}]}})
}

fn promtool_check(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus)");
    std::io::Write::write_all(promtool.stdin.as_mut().expect("stdin"), text.as_bytes()).expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// `host:port` of a node's agent endpoint, from its Node.
fn agent_endpoint(server: &Server, node: &str) -> String {
    wait_for("the agent to register", Duration::from_secs(30), || {
        let node: Value = serde_json::from_str(&server.http("GET", &format!("/api/v1/nodes/{node}"), None).1).ok()?;
        let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
        let ip = node["status"]["addresses"][0]["address"].as_str()?;
        Some(format!("{ip}:{port}"))
    })
}

/// A Prometheus scrape config for TLS targets, authenticated as the server's admin.
fn tls_job(name: &str, target: &str, server_name: &str, (ca, cert, key): &(PathBuf, PathBuf, PathBuf)) -> String {
    format!(
        "- job_name: {name}\n  scheme: https\n  tls_config: {{ca_file: '{}', cert_file: '{}', key_file: '{}', server_name: '{server_name}'}}\n  static_configs: [{{targets: ['{target}']}}]\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

#[test]
fn prometheus_scrapes_server_and_agent_and_kubectl_top_shows_usage() {
    let server = Server::start();
    support::import_sample_image(&server, "sample:1.0");
    let _agent = Agent::start(&server, "hpc-1", 1);
    let agent = agent_endpoint(&server, "hpc-1");
    server.create_pod(&pod("burner", "while :; do :; done"));
    server.create_pod(&pod("idler", "exec sleep 3600"));
    wait_for("both pods to run", Duration::from_secs(60), || {
        let running =
            ["burner", "idler"].iter().all(|p| server.pod(p).is_some_and(|p| p["status"]["phase"] == "Running"));
        running.then_some(())
    });

    let (status, text) = server.http("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(text.contains("apiserver_request_total{"), "{text}");
    assert!(text.contains("axle_controller_reconcile_total{controller=\"placement\",result=\"success\"}"), "{text}");
    assert!(text.contains("axle_controller_reconcile_duration_seconds_count{controller=\"deployment\"}"), "{text}");
    promtool_check(&text);
    let (status, text) = server.agent_get("hpc-1", "/metrics").expect("agent metrics");
    assert_eq!(status, 200);
    // Over mutual TLS only: without a client certificate the endpoint answers nothing.
    assert!(support::http(&agent, "GET", "/metrics", None).map_or(true, |(status, _)| status != 200));
    let burner_cpu = "container_cpu_usage_seconds_total{namespace=\"default\",pod=\"burner\",container=\"app\"}";
    assert!(text.contains(burner_cpu), "{text}");
    assert!(text.contains("axle_container_restarts_total{namespace=\"default\",pod=\"idler\",container=\"app\"} 0"));
    promtool_check(&text);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    let pem = server.admin_pem_files(dir.path());
    let jobs = tls_job("axle", &server.addr, "127.0.0.1", &pem) + &tls_job("agents", &agent, "hpc-1", &pem);
    std::fs::write(&config, format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n{jobs}")).expect("config");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus runs (Debian package prometheus)"),
    );
    let query = |promql: &str| -> Option<f64> {
        let path = format!("/api/v1/query?query={promql}");
        let (status, body) = support::http(&listen, "GET", &path, None).ok()?;
        let answer: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let pods = wait_for("Prometheus to scrape the pod count", Duration::from_secs(60), || query("sum(axle_pods)"));
    assert_eq!(pods, 2.0);
    // The burner keeps a core busy: its CPU rate over a few scrapes is well above the idler's.
    let busy = wait_for("Prometheus to see the burner's CPU", Duration::from_secs(60), || {
        query("rate(container_cpu_usage_seconds_total%7Bpod%3D%22burner%22%7D%5B5s%5D)").filter(|r| *r > 0.2)
    });
    let idle = query("rate(container_cpu_usage_seconds_total%7Bpod%3D%22idler%22%7D%5B5s%5D)").expect("idler rate");
    assert!(busy > 10.0 * idle, "burner {busy} vs idler {idle}");
    assert_eq!(query("sum(up)"), Some(2.0), "the server and the agent are up as targets");

    // kubectl top: the burner near one core, both with memory; the node with its usage.
    let top = wait_for("kubectl top pods to have figures", Duration::from_secs(60), || {
        let out = server.kubectl(&["top", "pods", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.contains("burner") && text.contains("idler")).then_some(text)
    });
    let burner: Vec<&str> = top.lines().find(|l| l.starts_with("burner")).expect("burner").split_whitespace().collect();
    let millicores: u64 = burner[1].trim_end_matches('m').parse().expect("cpu in millicores");
    assert!(millicores >= 200, "the burner's CPU: {top}");
    assert!(burner[2].ends_with("Mi"), "{top}");
    let by_label = server.kubectl_ok(&["top", "pods", "-l", "app=idler", "--no-headers"]);
    assert!(by_label.starts_with("idler") && !by_label.contains("burner"), "{by_label}");
    let nodes = server.kubectl_ok(&["top", "nodes", "--no-headers"]);
    assert!(nodes.starts_with("hpc-1 "), "{nodes}");
    let err = server.kubectl_err(&["top", "pods", "nothing-here"]);
    assert!(err.contains("not found"), "{err}");
}
