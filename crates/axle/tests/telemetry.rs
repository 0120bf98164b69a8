//! OpenTelemetry export against a receiver that decodes with the official protobuf definitions
//! (`tests/python/otlp_receiver.py`): the server's and the agent's logs and metrics and a
//! container's log lines arrive; while the receiver is down the car keeps logging into the
//! offline buffer, and when it is back everything arrives once, in order; beyond the buffer's
//! limit the oldest is dropped and counted.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{free_port, wait_for, Agent, Killed, Server};

fn received(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The numbers of the counter pod's lines, in the order they arrived.
fn counter_lines(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r["signal"] == "logs" && r["resource"]["k8s.pod.name"] == "counter")
        .filter_map(|r| r["body"].as_str()?.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// A process pod printing `line N <payload>` every 50 ms; `payload` is shell that prints more.
fn counter_pod(payload: &str) -> Value {
    let script = format!("i=0; while :; do echo \"line $i $({payload})\"; i=$((i+1)); sleep 0.05; done");
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "counter", "namespace": "default"},
           "spec": {"nodeName": "hpc-1", "runtimeClassName": "process", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": "none", "command": ["/bin/sh", "-c", script]}]}})
}

fn otlp_flags(url: &str, buffer_kib: &str) -> Vec<String> {
    ["--otlp-endpoint", url, "--otlp-interval-seconds", "1", "--otlp-metrics-interval-seconds", "1"]
        .iter()
        .chain(&["--otlp-buffer-kib", buffer_kib, "--vehicle-id", "WVW-TEST-1"])
        .map(|s| s.to_string())
        .collect()
}

/// A metric of the agent's own `/metrics`, summed over its series.
fn agent_metric(server: &Server, name: &str) -> f64 {
    let (_, text) = server.agent_get("hpc-1", "/metrics").expect("agent metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn start(buffer_kib: &str, server_exports: bool) -> (Server, Agent, u16, PathBuf, Killed, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("received.jsonl");
    let port = free_port();
    let receiver = support::start_otlp_receiver(port, &out);
    let url = format!("http://127.0.0.1:{port}");
    let flags = otlp_flags(&url, buffer_kib);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = if server_exports { Server::start_with(&flags) } else { Server::start() };
    let agent = Agent::start_with(&server, "hpc-1", 1, &flags);
    (server, agent, port, out, receiver, dir)
}

#[test]
fn logs_and_metrics_arrive_and_an_outage_is_bridged_in_order() {
    let (server, _agent, port, out, receiver, _dir) = start("65536", true);
    server.create_pod(&counter_pod("echo x"));
    wait_for("logs and metrics of server, agent and container", Duration::from_secs(60), || {
        let records = received(&out);
        let service = |r: &Value, s: &str| r["resource"]["service.name"] == s;
        let has = |f: &dyn Fn(&Value) -> bool| records.iter().any(f);
        let ready = has(&|r| r["signal"] == "metrics" && service(r, "axle-server") && r["name"] == "axle_pods")
            && has(&|r| {
                r["signal"] == "metrics" && service(r, "axle-agent") && r["name"] == "container_cpu_usage_seconds_total"
            })
            && has(&|r| r["signal"] == "logs" && service(r, "axle-agent") && r["severity"] == "INFO")
            && has(&|r| r["signal"] == "logs" && service(r, "axle-server") && r["severity"] == "INFO")
            && counter_lines(&records).len() > 20;
        ready.then_some(())
    });
    let records = received(&out);
    let line = records.iter().find(|r| r["resource"]["k8s.pod.name"] == "counter").expect("a container line");
    assert_eq!(line["resource"]["k8s.namespace.name"], "default");
    assert_eq!(line["resource"]["k8s.container.name"], "app");
    assert_eq!(line["resource"]["k8s.node.name"], "hpc-1");
    assert_eq!(line["resource"]["vehicle.id"], "WVW-TEST-1");
    assert_eq!(line["attributes"]["log.iostream"], "stdout");

    // The link goes: the receiver stops while the container keeps logging.
    drop(receiver);
    let before_outage = counter_lines(&received(&out)).into_iter().max().unwrap_or(0);
    wait_for("the agent to buffer on disk", Duration::from_secs(30), || {
        (agent_metric(&server, "axle_telemetry_buffer_batches") >= 5.0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let during = server.kubectl_ok(&["logs", "counter", "--tail", "1"]);
    let last_during: u64 = during.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("line number");
    assert!(last_during > before_outage + 40, "the container kept logging: {before_outage} → {last_during}");

    // The link is back: everything buffered arrives, once each, in order.
    let _receiver = support::start_otlp_receiver(port, &out);
    let lines = wait_for("the buffered lines to arrive", Duration::from_secs(90), || {
        let lines = counter_lines(&received(&out));
        lines.iter().any(|&n| n > last_during + 20).then_some(lines)
    });
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for &n in &lines {
        *counts.entry(n).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).collect();
    assert!(duplicated.is_empty(), "lines delivered twice: {duplicated:?}");
    let max = lines.iter().copied().max().unwrap_or(0);
    let missing: Vec<u64> = (0..=max).filter(|n| !counts.contains_key(n)).collect();
    assert!(missing.is_empty(), "lines lost: {missing:?}");
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "lines arrived out of order");
    assert_eq!(agent_metric(&server, "axle_telemetry_dropped_total"), 0.0);
}

#[test]
fn beyond_the_buffer_limit_the_oldest_is_dropped_and_counted() {
    let (server, _agent, port, out, receiver, _dir) = start("16", false);
    // Lines of random hex: they do not compress away, so the 16 KiB buffer fills in seconds.
    server.create_pod(&counter_pod("od -An -N100 -tx1 /dev/urandom | tr -d ' \\n'"));
    wait_for("the first lines", Duration::from_secs(60), || (counter_lines(&received(&out)).len() > 10).then_some(()));
    drop(receiver);
    wait_for("the buffer to overflow", Duration::from_secs(60), || {
        (agent_metric(&server, "axle_telemetry_dropped_total") > 50.0).then_some(())
    });
    assert!(agent_metric(&server, "axle_telemetry_buffer_bytes") <= 16.0 * 1024.0);
    let _receiver = support::start_otlp_receiver(port, &out);
    let during = server.kubectl_ok(&["logs", "counter", "--tail", "1"]);
    let last_during: u64 = during.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("line number");
    let lines = wait_for("the newest lines to arrive", Duration::from_secs(90), || {
        let lines = counter_lines(&received(&out));
        lines.iter().any(|&n| n > last_during + 20).then_some(lines)
    });
    let max = lines.iter().copied().max().unwrap_or(0);
    let missing: Vec<u64> = (0..=max).filter(|n| !lines.contains(n)).collect();
    // What is missing is one run of the oldest buffered lines; what came is each once.
    assert!(!missing.is_empty(), "nothing was dropped");
    let (first, last) = (missing[0], missing[missing.len() - 1]);
    assert_eq!(missing.len() as u64, last - first + 1, "the dropped lines are one run: {missing:?}");
    let mut unique = lines.clone();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "no line arrives twice");
    let dropped = agent_metric(&server, "axle_telemetry_dropped_total{signal=\"logs\"}");
    assert!(dropped >= missing.len() as f64, "dropped {dropped} counted for {} lines missing", missing.len());
}
