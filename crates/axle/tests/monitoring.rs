//! Monitoring with the real tools: `promtool check metrics` passes on the server's `/metrics`,
//! and a real Prometheus server scrapes it and answers a PromQL query for the pod count.

mod support;

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{free_port, wait_for, Killed, Server};

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"nodeName": "hpc-1", "containers": [{"name": "app", "image": "busybox:1"}]}})
}

#[test]
fn promtool_accepts_the_metrics_and_prometheus_counts_the_pods() {
    let server = Server::start();
    server.create_pod(&pod("nav"));
    server.create_pod(&pod("maps"));
    let (status, text) = server.http("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(text.contains("apiserver_request_total{"), "{text}");
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
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: axle\n  static_configs: [{{targets: ['{}']}}]\n", server.addr),
    )
    .expect("config");
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
    let pods = wait_for("Prometheus to scrape the pod count", Duration::from_secs(60), || {
        let (status, body) = support::http(&listen, "GET", "/api/v1/query?query=sum(axle_pods)", None).ok()?;
        let answer: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        answer["data"]["result"][0]["value"][1].as_str().map(String::from)
    });
    assert_eq!(pods, "2");
    let (_, body) = support::http(&listen, "GET", "/api/v1/query?query=up", None).expect("query");
    let up: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "the server is up as a target: {body}");
}
