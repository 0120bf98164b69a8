//! Significant transitions are Kubernetes Events, as `kubectl get events` and `kubectl
//! describe` show them: a rollout (ScalingReplicaSet, SuccessfulCreate, Scheduled), containers
//! (Started, Failed, BackOff, Killing), nodes (NodeReady, NodeNotReady). Repeats of one
//! event aggregate into its count.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{wait_for, Agent, Server};

const MANIFESTS: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: nav, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: nav}}
  template:
    metadata: {labels: {app: nav}}
    spec:
      runtimeClassName: process
      terminationGracePeriodSeconds: 1
      nodeSelector: {kubernetes.io/hostname: hpc-1}
      containers: [{name: app, image: none, command: [/bin/sleep, '3600']}]
---
apiVersion: v1
kind: Pod
metadata: {name: crasher, namespace: default}
spec:
  nodeName: hpc-1
  runtimeClassName: process
  containers: [{name: app, image: none, command: [/bin/sh, -c, 'exit 3']}]
";

fn events(server: &Server) -> Vec<Value> {
    let list: Value = serde_json::from_str(&server.kubectl_ok(&["get", "events", "-A", "-o", "json"])).expect("json");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The event with this reason about an object of this kind whose name starts with `name`.
fn find<'a>(events: &'a [Value], kind: &str, name: &str, reason: &str) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["involvedObject"]["kind"] == kind
            && e["involvedObject"]["name"].as_str().is_some_and(|n| n.starts_with(name))
            && e["reason"] == reason
    })
}

#[test]
fn transitions_are_events_in_kubectl() {
    let server = Server::start_with(&["--node-grace-seconds", "3"]);
    let mut agent = Agent::start(&server, "hpc-1", 1);
    wait_for("the node to be ready", Duration::from_secs(30), || {
        let node: Value = serde_json::from_str(&server.http("GET", "/api/v1/nodes/hpc-1", None).1).ok()?;
        let conditions = node["status"]["conditions"].as_array()?.clone();
        conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True").then_some(())
    });
    server.apply_stdin(MANIFESTS, &[]);

    // The crasher exits twice (10 s back-off between): its Failed event counts 2.
    let seen = wait_for("the rollout, container and node events", Duration::from_secs(60), || {
        let events = events(&server);
        let failed = find(&events, "Pod", "crasher", "Failed")?;
        let wanted = [
            ("Deployment", "nav", "ScalingReplicaSet"),
            ("ReplicaSet", "nav-", "SuccessfulCreate"),
            ("Pod", "nav-", "Scheduled"),
            ("Pod", "nav-", "Started"),
            ("Pod", "crasher", "BackOff"),
            ("Node", "hpc-1", "NodeReady"),
        ];
        let all = wanted.iter().all(|(kind, name, reason)| find(&events, kind, name, reason).is_some());
        (all && failed["count"].as_u64() >= Some(2)).then_some(events)
    });
    let failed = find(&seen, "Pod", "crasher", "Failed").expect("failed");
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["message"], "Container app exited with code 3 (Error)");
    assert_eq!(failed["source"]["component"], "axle-agent");
    let table = server.kubectl_ok(&["get", "events"]);
    assert!(table.contains("BackOff") && table.contains("Back-off restarting failed container app"), "{table}");
    let described = server.kubectl_ok(&["describe", "pod", "crasher"]);
    assert!(described.contains("Events:") && described.contains("BackOff"), "{described}");
    let described = server.kubectl_ok(&["describe", "deployment", "nav"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");

    // Deleting the Deployment's pod stops its container (Killing).
    server.kubectl_ok(&["delete", "pods", "-l", "app=nav", "--wait=false"]);
    wait_for("the Killing event", Duration::from_secs(30), || {
        find(&events(&server), "Pod", "nav-", "Killing").map(|_| ())
    });

    // The agent goes silent: the node lifecycle controller records NodeNotReady.
    agent.kill9();
    let not_ready = wait_for("the NodeNotReady event", Duration::from_secs(30), || {
        find(&events(&server), "Node", "hpc-1", "NodeNotReady").cloned()
    });
    assert!(not_ready["message"].as_str().is_some_and(|m| m.contains("NodeNotReady")));
    let described = server.kubectl_ok(&["describe", "node", "hpc-1"]);
    assert!(described.contains("NodeNotReady") && described.contains("NodeReady"), "{described}");
}
