//! Node lifecycle with real agent processes: registration, lease heartbeats, NotReady after the
//! grace period when an agent dies or its link is cut (a network namespace), and recovery
//! without duplicates when it returns.

mod support;

use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use support::{wait_for, Agent, Server};

fn node_ready(server: &Server, node: &str) -> Option<String> {
    let (status, body) = server.http("GET", &format!("/api/v1/nodes/{node}"), None);
    if status != 200 {
        return None;
    }
    let node: Value = serde_json::from_str(&body).ok()?;
    node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?["status"].as_str().map(String::from)
}

#[test]
fn agents_register_nodes_that_go_not_ready_when_they_die_and_recover_when_back() {
    let server = Server::start_with(&["--node-grace-seconds", "3"]);
    let mut hpc1 = Agent::start(&server, "hpc-1", 1);
    let _hpc2 = Agent::start(&server, "hpc-2", 1);
    for node in ["hpc-1", "hpc-2"] {
        wait_for(&format!("{node} to be Ready"), Duration::from_secs(20), || {
            (node_ready(&server, node).as_deref() == Some("True")).then_some(())
        });
    }
    let table = server.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    assert!(table.contains("hpc-1") && table.contains("hpc-2") && table.contains("Ready"), "{table}");
    let (status, lease) =
        server.http("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hpc-1", None);
    assert_eq!(status, 200, "{lease}");
    let lease: Value = serde_json::from_str(&lease).expect("lease JSON");
    assert_eq!(lease["spec"]["holderIdentity"], "hpc-1");

    // A pod placed on hpc-1 loses readiness with its node.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nav"},
        "spec": {"nodeName": "hpc-1", "containers": [{"name": "nav", "image": "busybox:1.36"}]}});
    let (status, _) =
        server.http("POST", "/api/v1/namespaces/default/pods", Some(("application/json", &pod.to_string())));
    assert_eq!(status, 201);

    hpc1.kill9();
    wait_for("hpc-1 to be marked NotReady", Duration::from_secs(20), || {
        (node_ready(&server, "hpc-1").as_deref() == Some("Unknown")).then_some(())
    });
    let table = server.kubectl_ok(&["get", "nodes"]);
    assert!(table.lines().any(|l| l.starts_with("hpc-1") && l.contains("NotReady")), "{table}");
    assert_eq!(node_ready(&server, "hpc-2").as_deref(), Some("True"), "the other node is unaffected");
    let (_, pod) = server.http("GET", "/api/v1/namespaces/default/pods/nav", None);
    let pod: Value = serde_json::from_str(&pod).expect("pod JSON");
    let ready = pod["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
    assert_eq!(ready.map(|r| r["status"].clone()), Some(json!("False")), "{pod}");
    assert_eq!(pod["spec"]["nodeName"], "hpc-1", "nothing is moved: placement is static");

    let _hpc1 = Agent::start(&server, "hpc-1", 1);
    wait_for("hpc-1 to be Ready again", Duration::from_secs(20), || {
        (node_ready(&server, "hpc-1").as_deref() == Some("True")).then_some(())
    });
    let names = server.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(names.lines().filter(|l| *l == "node/hpc-1").count(), 1, "no duplicate node: {names}");
}

/// A network namespace joined to the host by a veth pair, removed when dropped.
struct Link {
    netns: String,
    inside: String,
    host_ip: String,
}

impl Link {
    fn create() -> Link {
        let id = std::process::id() % 100_000;
        let (netns, host_if, inside) = (format!("axle-test-{id}"), format!("axh{id}"), format!("axn{id}"));
        let subnet = format!("10.231.{}", id % 250);
        let host_ip = format!("{subnet}.1");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip runs (iproute2)");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        ip(&["netns", "add", &netns]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &inside]);
        ip(&["link", "set", &inside, "netns", &netns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        exec(&["addr", "add", &format!("{subnet}.2/30"), "dev", &inside]);
        exec(&["link", "set", &inside, "up"]);
        exec(&["link", "set", "lo", "up"]);
        Link { netns, inside, host_ip }
    }

    fn set(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "ip", "link", "set", &self.inside, state])
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the host's end.
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
    }
}

fn pod_ready(server: &Server, name: &str) -> Option<String> {
    let pod = server.pod(name)?;
    let ready = pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
    ready["status"].as_str().map(String::from)
}

#[test]
fn a_node_cut_off_goes_not_ready_keeps_running_its_pods_and_recovers() {
    let link = Link::create();
    let server = Server::start_with(&["--node-grace-seconds", "3", "--listen", &format!("{}:0", link.host_ip)]);
    let url = server.url();
    let agent = Agent::start_in_netns(&server, "hpc-1", &link.netns, &url);
    wait_for("hpc-1 to be Ready over its link", Duration::from_secs(20), || {
        (node_ready(&server, "hpc-1").as_deref() == Some("True")).then_some(())
    });
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ticker"},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "sh", "command": ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]}]}}));
    wait_for("ticker to be Ready", Duration::from_secs(30), || {
        (pod_ready(&server, "ticker").as_deref() == Some("True")).then_some(())
    });
    let agent_dir = server.data_dir().join("agent-hpc-1");
    let log_size = || -> u64 {
        let pods = std::fs::read_dir(agent::memory_dir(&agent_dir).join("pods")).into_iter().flatten().flatten();
        pods.filter_map(|p| std::fs::metadata(p.path().join("c/0.log")).ok()).map(|m| m.len()).sum()
    };

    link.set(false);
    wait_for("hpc-1 to be marked NotReady", Duration::from_secs(20), || {
        (node_ready(&server, "hpc-1").as_deref() == Some("Unknown")).then_some(())
    });
    wait_for("ticker to lose Ready with its node", Duration::from_secs(10), || {
        (pod_ready(&server, "ticker").as_deref() == Some("False")).then_some(())
    });
    // Cut off, the computer keeps running its workload.
    let before = log_size();
    std::thread::sleep(Duration::from_secs(1));
    assert!(log_size() > before, "the pod stopped running while its node was cut off");

    link.set(true);
    wait_for("hpc-1 to be Ready again", Duration::from_secs(30), || {
        (node_ready(&server, "hpc-1").as_deref() == Some("True")).then_some(())
    });
    wait_for("ticker to be Ready again", Duration::from_secs(30), || {
        (pod_ready(&server, "ticker").as_deref() == Some("True")).then_some(())
    });
    let pod = server.pod("ticker").expect("pod");
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "the pod ran on, never restarted: {pod}");
    drop(agent);
}
