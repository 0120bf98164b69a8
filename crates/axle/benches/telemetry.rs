//! `cargo bench -p axle --bench telemetry`: what OpenTelemetry export costs a car. Prints a
//! table for people and one JSON line for machines. Needs the test virtualenv (`.ci/run`) for
//! the OTLP receiver.
//!
//! An idle car (server, one agent, two idle pods) is measured over the same window three ways:
//! without export, exporting to a live receiver, and exporting to an endpoint that is down
//! (everything goes to the offline buffer). Figures: CPU time and PSS of server and agent. Then
//! a pod writes log lines for a while with the endpoint down: the agent's bytes written to disk
//! beyond what the same workload writes without export, per MB of log text buffered.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::{cpu_seconds, free_port, pss_kib, write_bytes, Agent, Server};

const WINDOW: Duration = Duration::from_secs(30);

/// How the car exports.
#[derive(Clone, Copy, PartialEq)]
enum Export {
    Off,
    Online,
    Offline,
}

struct Figures {
    server_cpu_s: f64,
    agent_cpu_s: f64,
    server_pss_mb: f64,
    agent_pss_mb: f64,
    agent_written: u64,
    log_text: u64,
}

fn pod(name: &str, script: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"nodeName": "hpc-1", "runtimeClassName": "process", "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": "none", "command": ["/bin/sh", "-c", script]}]}})
}

/// Bytes the pod's container wrote to stdout (its log lines' text).
fn log_text_bytes(server: &Server, name: &str) -> u64 {
    server.kubectl_ok(&["logs", name]).len() as u64
}

fn run(export: Export, logging: bool) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _receiver = (export == Export::Online).then(|| support::start_otlp_receiver(port, &dir.path().join("out")));
    let url = format!("http://127.0.0.1:{port}");
    let flags: Vec<&str> = match export {
        Export::Off => vec![],
        // Metrics every 10 s (the default is 60 s): an upper bound of the cost.
        _ => vec!["--otlp-endpoint", &url, "--otlp-metrics-interval-seconds", "10"],
    };
    let server = Server::start_with(&flags);
    let agent = Agent::start_with(&server, "hpc-1", 10, &flags);
    support::wait_for("the node to register", Duration::from_secs(20), || {
        (server.http("GET", "/api/v1/nodes/hpc-1", None).0 == 200).then_some(())
    });
    server.create_pod(&pod("idle-1", "exec sleep 3600"));
    server.create_pod(&pod("idle-2", "exec sleep 3600"));
    if logging {
        // 100 lines of 100 characters a second.
        let line = "x".repeat(90);
        server
            .create_pod(&pod("chatty", &format!("i=0; while :; do echo \"$i {line}\"; i=$((i+1)); sleep 0.01; done")));
    }
    std::thread::sleep(Duration::from_secs(5));
    let (server_pid, agent_pid) = (server.child.id(), agent.child.id());
    let (server_cpu, agent_cpu, written) = (cpu_seconds(server_pid), cpu_seconds(agent_pid), write_bytes(agent_pid));
    let text_before = if logging { log_text_bytes(&server, "chatty") } else { 0 };
    std::thread::sleep(WINDOW);
    let text_after = if logging { log_text_bytes(&server, "chatty") } else { 0 };
    Figures {
        server_cpu_s: cpu_seconds(server_pid) - server_cpu,
        agent_cpu_s: cpu_seconds(agent_pid) - agent_cpu,
        server_pss_mb: pss_kib(server_pid) as f64 / 1024.0,
        agent_pss_mb: pss_kib(agent_pid) as f64 / 1024.0,
        agent_written: write_bytes(agent_pid) - written,
        log_text: text_after - text_before,
    }
}

fn main() {
    let off = run(Export::Off, false);
    let online = run(Export::Online, false);
    let offline = run(Export::Offline, false);
    let logging_off = run(Export::Off, true);
    let logging_offline = run(Export::Offline, true);
    let telemetry_written = logging_offline.agent_written.saturating_sub(logging_off.agent_written);
    let text_mb = logging_offline.log_text as f64 / 1e6;
    let written_per_mb = telemetry_written as f64 / 1e6 / text_mb.max(1e-9);
    let percent = |seconds: f64| seconds / WINDOW.as_secs_f64() * 100.0;

    println!("| idle car, {} s | CPU server | CPU agent | PSS server | PSS agent |", WINDOW.as_secs());
    println!("|---|--:|--:|--:|--:|");
    for (name, f) in [("no export", &off), ("export, endpoint up", &online), ("export, endpoint down", &offline)] {
        println!(
            "| {name} | {:.2} % | {:.2} % | {:.1} MB | {:.1} MB |",
            percent(f.server_cpu_s),
            percent(f.agent_cpu_s),
            f.server_pss_mb,
            f.agent_pss_mb
        );
    }
    println!();
    println!("| offline buffering ({} s, a pod logging 10 kB/s) | value |", WINDOW.as_secs());
    println!("|---|--:|");
    println!("| log text buffered | {:.2} MB |", text_mb);
    println!("| agent bytes written, no export | {:.2} MB |", logging_off.agent_written as f64 / 1e6);
    println!("| agent bytes written, export down | {:.2} MB |", logging_offline.agent_written as f64 / 1e6);
    println!("| written to disk for telemetry per MB of log text buffered | {written_per_mb:.3} MB |");
    println!(
        "{}",
        json!({
            "idle_cpu_percent": {"off": [percent(off.server_cpu_s), percent(off.agent_cpu_s)],
                                 "online": [percent(online.server_cpu_s), percent(online.agent_cpu_s)],
                                 "offline": [percent(offline.server_cpu_s), percent(offline.agent_cpu_s)]},
            "idle_pss_mb": {"off": [off.server_pss_mb, off.agent_pss_mb],
                            "online": [online.server_pss_mb, online.agent_pss_mb],
                            "offline": [offline.server_pss_mb, offline.agent_pss_mb]},
            "buffered_log_text_mb": text_mb, "telemetry_written_mb": telemetry_written as f64 / 1e6,
            "written_per_buffered_mb": written_per_mb,
        })
    );
}
