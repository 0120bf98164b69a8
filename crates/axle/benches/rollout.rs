//! `cargo bench -p axle --bench rollout`: the workload controllers' figures against
//! `shared/design/SYSTEM.md` §9. Prints a table and one JSON line. Needs root, runc and a
//! static busybox (as `.ci/run` sets up).
//!
//! Figures: apply a Deployment (3 replicas, runc) → all pods Running; rolling update of a
//! 1-replica Deployment → new pod Ready and the old one gone (median of 5); a Deployment of
//! 1,000 replicas over 10 simulated nodes → all pods created, one more replica after a scale
//! (a pass over 1,000 pods), and the server's PSS.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{median, pss_kib, Agent, Server};

fn deployment(name: &str, replicas: u64, node_selector: Value, runtime: &str, generation_marker: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": node_selector, "runtimeClassName": runtime, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "axle/sample:1.0",
                        "env": [{"name": "MARK", "value": generation_marker.to_string()}],
                        "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]}]}}}})
}

fn list(server: &Server, path: &str) -> Vec<Value> {
    let (_, body) = server.http("GET", path, None);
    serde_json::from_str::<Value>(&body).ok().and_then(|v| v["items"].as_array().cloned()).unwrap_or_default()
}

fn pods_of(server: &Server, app: &str) -> Vec<Value> {
    list(server, &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"))
}

fn running(pod: &Value) -> bool {
    pod["status"]["containerStatuses"][0]["state"]["running"].is_object()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> f64 {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let server = Server::start();
    let agent = Agent::start(&server, "hpc-1", 10);
    support::import_sample_image(&server, "axle/sample:1.0");
    support::wait_for("hpc-1", Duration::from_secs(20), || {
        (server.http("GET", "/api/v1/nodes/hpc-1", None).0 == 200).then_some(())
    });
    let hpc1 = json!({"kubernetes.io/hostname": "hpc-1"});

    // Apply → all Running (the image is pulled and unpacked on the first pod).
    let started = Instant::now();
    server
        .create_object("/apis/apps/v1/namespaces/default/deployments", &deployment("web", 3, hpc1.clone(), "runc", 0));
    until("3 pods Running", Duration::from_secs(60), || {
        let pods = pods_of(&server, "web");
        pods.len() == 3 && pods.iter().all(running)
    });
    let apply_all_running_ms = started.elapsed().as_secs_f64() * 1000.0;

    // Rolling update of one replica: new pod Ready, old pod gone.
    server
        .create_object("/apis/apps/v1/namespaces/default/deployments", &deployment("roll", 1, hpc1.clone(), "runc", 0));
    until("roll Ready", Duration::from_secs(60), || pods_of(&server, "roll").iter().any(ready));
    let mut rolls = Vec::new();
    for mark in 1..=5 {
        let before: Vec<String> =
            pods_of(&server, "roll").iter().filter_map(|p| p["metadata"]["name"].as_str().map(String::from)).collect();
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": "MARK", "value": mark.to_string()}]}]}}}});
        let started = Instant::now();
        let (status, body) = server.http(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/roll",
            Some(("application/strategic-merge-patch+json", &patch.to_string())),
        );
        assert_eq!(status, 200, "{body}");
        until("the new pod Ready and the old gone", Duration::from_secs(60), || {
            let pods = pods_of(&server, "roll");
            pods.len() == 1
                && pods
                    .iter()
                    .all(|p| ready(p) && !before.contains(&p["metadata"]["name"].as_str().unwrap_or("").to_string()))
        });
        rolls.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let rolling_update_ms = median(rolls);

    // 1,000 pods over 10 simulated nodes (no agents: the controllers' and server's work alone).
    for i in 0..10 {
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("sim-{i}"), "labels": {"sim": "true"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        server.create_object("/api/v1/nodes", &node);
    }
    let started = Instant::now();
    server.create_object(
        "/apis/apps/v1/namespaces/default/deployments",
        &deployment("fleet", 1000, json!({"sim": "true"}), "runc", 0),
    );
    until("1,000 pods created", Duration::from_secs(300), || pods_of(&server, "fleet").len() == 1000);
    let thousand_created_ms = started.elapsed().as_secs_f64() * 1000.0;
    let spread: std::collections::BTreeMap<String, usize> =
        pods_of(&server, "fleet").iter().fold(Default::default(), |mut m, p| {
            *m.entry(p["spec"]["nodeName"].as_str().unwrap_or("").to_string()).or_default() += 1;
            m
        });
    let started = Instant::now();
    let (status, _) = server.http(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/fleet/scale",
        Some(("application/merge-patch+json", r#"{"spec":{"replicas":1001}}"#)),
    );
    assert_eq!(status, 200);
    until("the 1,001st pod", Duration::from_secs(60), || pods_of(&server, "fleet").len() == 1001);
    let scale_pass_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_secs(2));
    let server_pss_mb = pss_kib(server.child.id()) as f64 / 1024.0;

    println!("| figure | value | bar |");
    println!("|---|--:|---|");
    println!("| apply Deployment (3 replicas, runc) → all pods Running, first image use | {apply_all_running_ms:.0} ms | — |");
    println!("| rolling update, 1 replica → new pod Ready and old gone (median of 5) | {rolling_update_ms:.0} ms | ≤ 400 ms |");
    println!("| 1,000 replicas over 10 simulated nodes → all pods created | {thousand_created_ms:.0} ms | — |");
    println!(
        "| pods per simulated node | {} | 100 each |",
        spread.values().map(|n| n.to_string()).collect::<Vec<_>>().join(" ")
    );
    println!("| scale 1,000 → 1,001 (one pass over 1,000 pods) → pod created | {scale_pass_ms:.0} ms | — |");
    println!("| server PSS with 1,001 pods and the controllers | {server_pss_mb:.2} MB | — |");
    println!(
        "{}",
        json!({"apply_all_running_ms": apply_all_running_ms, "rolling_update_ms": rolling_update_ms,
               "thousand_pods_created_ms": thousand_created_ms, "scale_pass_ms": scale_pass_ms, "server_pss_mb": server_pss_mb})
    );
    drop(agent);
}
