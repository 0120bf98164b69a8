//! `cargo bench -p axle --bench wear`: what Axle writes to storage (flash wear), from
//! `/proc/PID/io` `write_bytes` of every Axle process. Prints a table for people and one JSON
//! line for machines. Needs root (`.ci/run` readies the machine).
//!
//! Figures:
//! - an idle car (server, agents hpc-1 and hpc-2 heartbeating at their default 10 s, the ECU
//!   gateway renewing two simulated ECUs every second, one quiet pod per agent) over a window
//!   (`AXLE_BENCH_WEAR_SECONDS`, default 120): bytes per process, per day for the whole car,
//!   and the share of an 8 GiB, 3,000-cycle eMMC's 15-year endurance;
//! - bytes per container log line with `--log-storage memory` and `disk`, for a burst (10,000
//!   lines as fast as they come) and for a slow logger (a line a second: each line may find its
//!   page already written back, and cost a page); what a pod that logs nothing makes the agent
//!   write (its pod state) is measured alone and taken off.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{is_ready, wait_for, write_bytes, Agent, IdleCar, Server};

const DAY: f64 = 86_400.0;
/// An 8 GiB eMMC rated 3,000 P/E cycles, over 15 years.
const ENDURANCE: f64 = 8.0 * 1024.0 * 1024.0 * 1024.0 * 3000.0;
const YEARS: f64 = 15.0;

fn wait_ready(server: &Server, path: &str) {
    wait_for(path, Duration::from_secs(60), || {
        let (status, body) = server.http("GET", path, None);
        (status == 200 && serde_json::from_str::<Value>(&body).is_ok_and(|o| is_ready(&o))).then_some(())
    });
}

fn process_pod(name: &str, node: &str, script: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": node, "runtimeClassName": "process", "terminationGracePeriodSeconds": 1,
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "sh", "command": ["sh", "-c", script]}]}})
}

/// Bytes the agent wrote while a pod ran `script` to its end, per line it logged.
fn bytes_per_line(storage: &str, lines: u64, script: &str) -> f64 {
    let server = Server::start();
    let agent = Agent::start_with(&server, "hpc-1", 10, &["--log-storage", storage]);
    wait_ready(&server, "/api/v1/nodes/hpc-1");
    std::thread::sleep(Duration::from_secs(2));
    let before = write_bytes(agent.child.id());
    server.create_pod(&process_pod("logger", "hpc-1", script));
    wait_for("the logger to finish", Duration::from_secs(300), || {
        server.pod("logger").filter(|p| p["status"]["phase"] == "Succeeded").map(|_| ())
    });
    // Status writes are the server's; what the agent wrote is its log and pod state.
    (write_bytes(agent.child.id()) - before) as f64 / lines as f64
}

fn main() {
    let window = std::env::var("AXLE_BENCH_WEAR_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(120u64);
    let car = IdleCar::start(10);
    std::thread::sleep(Duration::from_secs(5));
    let processes = car.processes();
    let before: Vec<u64> = processes.iter().map(|(_, pid)| write_bytes(*pid)).collect();
    std::thread::sleep(Duration::from_secs(window));
    let written: Vec<u64> = processes.iter().zip(&before).map(|((_, pid), b)| write_bytes(*pid) - b).collect();
    let total: u64 = written.iter().sum();
    let per_day = total as f64 * DAY / window as f64;
    let share = per_day * 365.25 * YEARS / ENDURANCE;
    drop(car);

    let burst = "i=0; while [ $i -lt 10000 ]; do echo \"line $i of a chatty workload, about a hundred bytes long........\"; i=$((i+1)); done";
    let slow = "i=0; while [ $i -lt 30 ]; do echo \"line $i of a slow workload, about a hundred bytes long.........\"; i=$((i+1)); sleep 1; done";
    let mut per_line = Vec::new();
    for storage in ["memory", "disk"] {
        // What running a pod writes without logging (the agent's pod state): not the lines'.
        let pod_alone = bytes_per_line(storage, 1, "true");
        per_line.push((storage, "burst", bytes_per_line(storage, 10_000, burst) - pod_alone / 10_000.0));
        per_line.push((storage, "1 line/s", bytes_per_line(storage, 30, slow) - pod_alone / 30.0));
    }

    println!("Idle car over {window} s (server, 2 agents, ECU gateway with 2 ECUs, a quiet pod per agent):");
    println!("{:<16} {:>14}", "PROCESS", "BYTES WRITTEN");
    for ((name, _), bytes) in processes.iter().zip(&written) {
        println!("{name:<16} {bytes:>14}");
    }
    println!("{:<16} {total:>14}", "all");
    println!("per day: {per_day:.0} bytes (goal ≤ 1 MiB); share of an 8 GiB / 3,000-cycle eMMC's 15-year endurance: {:.6} % (goal < 0.1 %)", share * 100.0);
    println!();
    println!("{:<12} {:<10} {:>16}", "LOG STORAGE", "LOGGING", "BYTES PER LINE");
    for (storage, pace, bytes) in &per_line {
        println!("{storage:<12} {pace:<10} {bytes:>16.1}");
    }
    let lines: Vec<Value> =
        per_line.iter().map(|(s, p, b)| json!({"logStorage": s, "logging": p, "bytesPerLine": b})).collect();
    println!(
        "{}",
        json!({"idleWindowSeconds": window, "idleBytes": total, "idleBytesPerDay": per_day.round(),
               "enduranceShare": share, "logLines": lines})
    );
}
