//! Node lifecycle with real agent processes: registration, lease heartbeats, NotReady after the
//! grace period when an agent dies, and recovery without duplicates when it returns.

mod support;

use serde_json::{json, Value};
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
