//! `cargo bench -p axle --bench agent`: the node agent's figures against the budgets of
//! `shared/design/SYSTEM.md` §9 and the agent issue. Prints a table for people and one JSON
//! line for machines. Needs root, runc and a static busybox (`.ci/run` installs them).
//!
//! Figures: agent idle PSS; create pod → container Running (as the API reports it) and → first
//! TCP answer, for runc (image already on the node; and the first time, with pull and unpack)
//! and for a native process; 100 runc pods on one node: time until all are Running, and the
//! agent's PSS then.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{free_port, median, pss_kib, Agent, Server};

fn running(server: &Server, name: &str) -> bool {
    server.pod(name).is_some_and(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
}

fn delete_now(server: &Server, name: &str) {
    server.http("DELETE", &format!("/api/v1/namespaces/default/pods/{name}?gracePeriodSeconds=0"), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.pod(name).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates a pod serving `port` and returns (ms until the API reports it Running, ms until
/// the port answers), both from the create request.
fn serve_once(server: &Server, name: &str, runtime: &str, port: u16) -> (f64, f64) {
    let (image, command) = match runtime {
        "process" => ("busybox", json!(["/bin/busybox", "httpd", "-f", "-p", port.to_string()])),
        _ => ("axle/sample:1.0", json!(["/bin/httpd", "-f", "-p", port.to_string()])),
    };
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": runtime, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "web", "image": image, "command": command}]}});
    let started = Instant::now();
    server.create_pod(&pod);
    let (mut to_running, mut to_answer) = (None, None);
    while to_running.is_none() || to_answer.is_none() {
        if to_answer.is_none() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            to_answer = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        if to_running.is_none() && running(server, name) {
            to_running = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{name} never ran: {:?}", server.pod(name));
        std::thread::sleep(Duration::from_millis(1));
    }
    delete_now(server, name);
    (to_running.unwrap_or(f64::NAN), to_answer.unwrap_or(f64::NAN))
}

fn medians(server: &Server, runtime: &str, runs: usize) -> (f64, f64) {
    let (mut running, mut answer) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (r, a) = serve_once(server, &format!("{runtime}-{i}"), runtime, free_port());
        running.push(r);
        answer.push(a);
    }
    (median(running), median(answer))
}

fn main() {
    let server = Server::start();
    let agent = Agent::start(&server, "hpc-1", 10);
    support::import_sample_image(&server, "axle/sample:1.0");
    let agent_pid = agent.child.id();
    // Idle: registered, no pods, a few heartbeats.
    support::wait_for("the node to register", Duration::from_secs(20), || {
        (server.http("GET", "/api/v1/nodes/hpc-1", None).0 == 200).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    let idle_pss_mb = pss_kib(agent_pid) as f64 / 1024.0;

    let (first_running, first_answer) = serve_once(&server, "first", "runc", free_port());
    let (runc_running, runc_answer) = medians(&server, "runc", 7);
    let (process_running, process_answer) = medians(&server, "process", 7);

    let pods = 100;
    let started = Instant::now();
    for i in 0..pods {
        server.create_pod(
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("many-{i}")},
                "spec": {"nodeName": "hpc-1", "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "c", "image": "axle/sample:1.0", "command": ["/bin/sleep", "3600"]}]}}),
        );
    }
    let mut pending: Vec<usize> = (0..pods).collect();
    while !pending.is_empty() {
        pending.retain(|i| !running(&server, &format!("many-{i}")));
        assert!(started.elapsed() < Duration::from_secs(300), "{} pods never ran", pending.len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_running_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let loaded_pss_mb = pss_kib(agent_pid) as f64 / 1024.0;
    // What else runs per container: nothing but the container's own process.
    let runtime_processes = Command::new("pgrep")
        .args(["-c", "-x", "runc"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().unwrap_or(0));

    println!("| figure | value | bar |");
    println!("|---|--:|---|");
    println!("| agent idle PSS (registered, no pods, 5 s) | {idle_pss_mb:.2} MB | ≤ 4 MB |");
    println!("| create → Running, runc, image on the node (median of 7) | {runc_running:.0} ms | ≤ 150 ms |");
    println!("| create → first TCP answer, runc (median of 7) | {runc_answer:.0} ms | — |");
    println!("| create → Running, runc, first time (pull + unpack) | {first_running:.0} ms | — |");
    println!("| create → first TCP answer, runc, first time | {first_answer:.0} ms | — |");
    println!("| create → Running, process (median of 7) | {process_running:.0} ms | — |");
    println!("| create → first TCP answer, process (median of 7) | {process_answer:.0} ms | — |");
    println!("| {pods} runc pods on one node: create → all Running | {all_running_s:.1} s | — |");
    println!("| agent PSS with {pods} pods running | {loaded_pss_mb:.2} MB | — |");
    println!("| runtime processes left running with {pods} containers | {} | 0 |", runtime_processes.unwrap_or(0));
    println!(
        "{}",
        json!({"agent_idle_pss_mb": idle_pss_mb, "runc_running_ms": runc_running, "runc_answer_ms": runc_answer,
            "runc_first_running_ms": first_running, "runc_first_answer_ms": first_answer,
            "process_running_ms": process_running, "process_answer_ms": process_answer,
            "pods": pods, "all_running_s": all_running_s, "agent_loaded_pss_mb": loaded_pss_mb})
    );
    for i in 0..pods {
        server.http("DELETE", &format!("/api/v1/namespaces/default/pods/many-{i}?gracePeriodSeconds=0"), None);
    }
    drop(agent);
}
