//! Flash wear: an idle car (server, two agents with a quiet pod each, the ECU gateway with two
//! simulated ECUs) writes nothing to storage, as the kernel counts it for every Axle process
//! (`/proc/PID/io`), while its nodes keep renewing their leases; `axle wear` reports the same.
//! And kill -9 of server and agents at seeded random moments loses nothing acknowledged, brings
//! every node back Ready, and reports no pod Ready on a node that was not heard from since.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{axle_bin, http, quiet_pod, wait_for, write_bytes, Agent, IdleCar, Server};

/// The goal: all Axle processes together write at most 1 MiB a day while idle.
const BUDGET_PER_DAY: f64 = 1024.0 * 1024.0;

fn condition(obj: &Value, kind: &str) -> Option<String> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)?["status"].as_str().map(String::from)
}

fn get(server: &Server, path: &str) -> Option<Value> {
    let (status, body) = server.http("GET", path, None);
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

fn node_ready(server: &Server, node: &str) -> Option<String> {
    condition(&get(server, &format!("/api/v1/nodes/{node}"))?, "Ready")
}

fn renew_time(server: &Server, node: &str) -> String {
    let lease = get(server, &format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"));
    lease.and_then(|l| l["spec"]["renewTime"].as_str().map(String::from)).unwrap_or_default()
}

#[test]
fn an_idle_car_writes_nothing_to_storage() {
    let car = IdleCar::start(1);
    let server = &car.server;
    // What starting wrote is done; from here on the car only says "still here".
    std::thread::sleep(Duration::from_secs(3));
    let pids = car.processes();
    let renewed_before: Vec<String> = ["hpc-1", "brake-ecu"].iter().map(|n| renew_time(server, n)).collect();
    let before: Vec<u64> = pids.iter().map(|(_, pid)| write_bytes(*pid)).collect();
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let written: Vec<(String, u64)> =
        pids.iter().zip(&before).map(|((name, pid), before)| (name.clone(), write_bytes(*pid) - before)).collect();
    let renewed_after: Vec<String> = ["hpc-1", "brake-ecu"].iter().map(|n| renew_time(server, n)).collect();

    assert!(
        renewed_before.iter().zip(&renewed_after).all(|(b, a)| !b.is_empty() && b != a),
        "the car was not idle in the sense that matters: leases kept being renewed ({renewed_before:?} → {renewed_after:?})"
    );
    let total: u64 = written.iter().map(|(_, w)| w).sum();
    let budget = BUDGET_PER_DAY * window.as_secs_f64() / 86_400.0;
    assert!(total as f64 <= budget, "an idle car wrote {total} bytes in {window:?} (budget {budget:.0}): {written:?}");

    // `axle wear` sees the same from the car's own counters, the agents' through the API.
    let out = std::process::Command::new(axle_bin())
        .args(["wear", "--window-seconds", "3", "-o", "json", "--kubeconfig"])
        .arg(&server.kubeconfig)
        .output()
        .expect("axle wear runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert!(report["bytesPerDay"].as_f64().is_some_and(|b| b <= BUDGET_PER_DAY), "{report}");
    assert!(report["enduranceShare"].as_f64().is_some_and(|s| s < 0.001), "{report}");
    let causes = report["causes"].as_array().expect("causes");
    let components: BTreeSet<(&str, &str)> =
        causes.iter().map(|c| (c["component"].as_str().unwrap_or(""), c["node"].as_str().unwrap_or(""))).collect();
    for expected in [("server", ""), ("agent", "hpc-1"), ("agent", "hpc-2")] {
        assert!(components.contains(&expected), "{expected:?} missing in {report}");
    }
    assert!(causes.iter().any(|c| c["reason"] == "store-log"), "the store's log is a cause: {report}");
}

/// xorshift64*, so every run makes the same choices.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn kill9_of_server_and_agents_at_random_moments_loses_nothing_durable() {
    let grace = ["--node-grace-seconds", "3"];
    let mut server = Server::start_with(&grace);
    let nodes = ["hpc-1", "hpc-2"];
    let mut agents: Vec<Agent> = nodes.iter().map(|n| Agent::start(&server, n, 1)).collect();
    for node in nodes {
        server.create_pod(&quiet_pod(&format!("quiet-{node}"), node));
    }
    let all_ready = |server: &Server| {
        for node in nodes {
            wait_for(&format!("{node} and its pod to be Ready"), Duration::from_secs(40), || {
                let pod = get(server, &format!("/api/v1/namespaces/default/pods/quiet-{node}"))?;
                let ready = node_ready(server, node).as_deref() == Some("True")
                    && condition(&pod, "Ready").as_deref() == Some("True");
                ready.then_some(())
            });
        }
    };
    all_ready(&server);

    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut rng = Seeded(0x5eed_f1a5);
    for trial in 0..20 {
        // A burst of durable writes, cut at a random moment by a kill -9 of the server, an
        // agent, or both.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (addr, acknowledged, stop) = (server.addr.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("t{trial}-{i}");
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                      "data": {"trial": trial.to_string()}});
                    let path = "/api/v1/namespaces/default/configmaps";
                    match http(&addr, "POST", path, Some(("application/json", &body.to_string()))) {
                        Ok((201, _)) => {
                            acknowledged.lock().expect("lock").insert(name);
                        }
                        _ => break,
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        let victim = rng.below(4); // 0, 1: that agent; 2: the server; 3: the server and hpc-1
        let agent_killed: Option<usize> = match victim {
            0 | 3 => Some(0),
            1 => Some(1),
            _ => None,
        };
        if victim >= 2 {
            server.kill9();
        }
        if let Some(i) = agent_killed {
            agents[i].kill9();
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        if victim >= 2 {
            let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("tempdir"));
            server = Server::start_in_with(dir, &grace);
        }
        if victim == 3 {
            // hpc-1 was not heard from since the restart: within a grace period it is lost, and
            // so is its pod's readiness.
            let started = Instant::now();
            let lost = || {
                let pod = get(&server, "/api/v1/namespaces/default/pods/quiet-hpc-1");
                let state = (node_ready(&server, "hpc-1"), pod.as_ref().and_then(|p| condition(p, "Ready")));
                (state == (Some("Unknown".into()), Some("False".into())), state)
            };
            while !lost().0 && started.elapsed() < Duration::from_secs(15) {
                std::thread::sleep(Duration::from_millis(200));
            }
            let log = std::fs::read_dir(server.data_dir())
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("server-"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<String>();
            assert!(
                lost().0,
                "trial {trial}: hpc-1 and its pod are lost within one grace period: {:?}\n{log}",
                lost().1
            );
        }
        if let Some(i) = agent_killed {
            agents[i] = Agent::start(&server, nodes[i], 1);
        }
        all_ready(&server);

        let (status, list) = server.http("GET", "/api/v1/namespaces/default/configmaps", None);
        assert_eq!(status, 200);
        let list: Value = serde_json::from_str(&list).expect("list");
        let stored: BTreeSet<String> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
            .collect();
        let lost: Vec<String> = acknowledged.lock().expect("lock").difference(&stored).cloned().collect();
        assert!(lost.is_empty(), "trial {trial} (victim {victim}): acknowledged writes lost: {lost:?}");
    }
    assert!(acknowledged.lock().expect("lock").len() > 100, "the bursts wrote");
}
