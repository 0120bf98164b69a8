//! Orchestration end to end, driven by the real kubectl against real agents: Deployments roll
//! out (runc), `kubectl rollout status|history|undo` work, a crash-looping update rolls back by
//! itself; dependency chains start in order across nodes and stop in reverse; a server killed
//! mid-rollout finishes it after restart without extra pods; DaemonSets cover every node.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{busybox_layout, import, wait_for, Agent, Server};

fn pods(server: &Server, selector: &str) -> Vec<Value> {
    let (_, body) = server.http("GET", &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"), None);
    let list: Value = serde_json::from_str(&body).expect("pod list");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn running_images(server: &Server, selector: &str) -> Vec<String> {
    let mut images: Vec<String> = pods(server, selector)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running")
        .filter_map(|p| p["spec"]["containers"][0]["image"].as_str().map(String::from))
        .collect();
    images.sort();
    images
}

fn rollout_status(server: &Server, what: &str) -> String {
    server.kubectl_ok(&["rollout", "status", what, "--timeout=90s"])
}

const NAV: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: nav}
spec:
  replicas: 2
  selector: {matchLabels: {app: nav}}
  template:
    metadata: {labels: {app: nav}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [hpc-1, hpc-2]}]
      containers:
      - name: nav
        image: busybox:1
        command: ["/bin/sh", "-c", "echo navigating; exec sleep 1000"]
"#;

#[test]
fn deployments_roll_out_undo_and_roll_back_by_themselves() {
    let server = Server::start();
    let _hpc1 = Agent::start(&server, "hpc-1", 1);
    let _hpc2 = Agent::start(&server, "hpc-2", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    import(&server, &layout, "busybox:2");
    wait_for("both nodes to register", Duration::from_secs(20), || {
        (server.kubectl_ok(&["get", "nodes", "--no-headers"]).matches(" Ready ").count() == 2).then_some(())
    });

    server.apply_stdin(NAV, &[]);
    assert!(rollout_status(&server, "deployment/nav").contains("successfully rolled out"));
    let placed: Vec<String> =
        pods(&server, "app%3Dnav").iter().filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from)).collect();
    assert!(
        placed.contains(&"hpc-1".to_string()) && placed.contains(&"hpc-2".to_string()),
        "one replica per node: {placed:?}"
    );

    // A rolling update, watched by kubectl.
    server.kubectl_ok(&["set", "image", "deployment/nav", "nav=busybox:2"]);
    server.kubectl_ok(&["annotate", "deployment/nav", "kubernetes.io/change-cause=nav 2"]);
    assert!(rollout_status(&server, "deployment/nav").contains("successfully rolled out"));
    wait_for("only busybox:2 pods to run", Duration::from_secs(30), || {
        (running_images(&server, "app%3Dnav") == ["busybox:2", "busybox:2"]).then_some(())
    });
    let history = server.kubectl_ok(&["rollout", "history", "deployment/nav"]);
    assert!(history.contains("1 ") && history.contains("2 ") && history.contains("nav 2"), "{history}");

    // Undo returns the old pods.
    server.kubectl_ok(&["rollout", "undo", "deployment/nav"]);
    assert!(rollout_status(&server, "deployment/nav").contains("successfully rolled out"));
    wait_for("busybox:1 pods to be back", Duration::from_secs(30), || {
        (running_images(&server, "app%3Dnav") == ["busybox:1", "busybox:1"]).then_some(())
    });

    // An update that crash-loops is rolled back by the controller, which says why.
    server.kubectl_ok(&["annotate", "deployment/nav", "axle.dev/auto-rollback=true"]);
    let patch = r#"[{"op": "replace", "path": "/spec/template/spec/containers/0/command", "value": ["/bin/sh", "-c", "echo broken; exit 3"]}]"#;
    server.kubectl_ok(&["patch", "deployment/nav", "--type=json", "-p", patch]);
    let condition = wait_for("the automatic rollback", Duration::from_secs(90), || {
        let out = server.kubectl_ok(&[
            "get",
            "deployment/nav",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"AutoRolledBack\")].message}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    assert!(condition.contains("crash-loops") && condition.contains("rolled back from revision"), "{condition}");
    let events = server.kubectl_ok(&["get", "events", "--field-selector", "reason=AutoRolledBack"]);
    assert!(events.contains("deployment/nav") && events.contains("crash-loops"), "{events}");
    assert!(rollout_status(&server, "deployment/nav").contains("successfully rolled out"));
    let template =
        server.kubectl_ok(&["get", "deployment/nav", "-o", "jsonpath={.spec.template.spec.containers[0].command}"]);
    assert!(template.contains("navigating"), "the template is the last available one again: {template}");
    wait_for("the broken pods to be gone", Duration::from_secs(30), || {
        let all = pods(&server, "app%3Dnav");
        let broken = all.iter().any(|p| p["spec"]["containers"][0]["command"].to_string().contains("broken"));
        (!broken && running_images(&server, "app%3Dnav").len() == 2).then_some(())
    });
}

#[test]
fn dependency_chains_start_in_order_across_nodes_and_stop_in_reverse() {
    let server = Server::start();
    let _hpc1 = Agent::start(&server, "hpc-1", 1);
    let _hpc2 = Agent::start(&server, "hpc-2", 1);
    let order = server.data_dir().join("order.log");
    let log = |what: &str| format!("echo {what} >> {}", order.display());
    let chain = format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: app
  annotations: {{axle.dev/depends-on: "storage=Ready"}}
spec:
  nodeName: hpc-2
  runtimeClassName: process
  terminationGracePeriodSeconds: 5
  containers: [{{name: app, image: app, command: ["sh", "-c", "{app_up}; trap '{app_down}; exit 0' TERM; while true; do sleep 0.1; done"]}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: storage}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: storage}}}}
  template:
    metadata:
      labels: {{app: storage}}
      annotations: {{axle.dev/depends-on: "init-db=Succeeded"}}
    spec:
      nodeName: hpc-1
      runtimeClassName: process
      terminationGracePeriodSeconds: 5
      containers:
      - name: storage
        image: storage
        command: ["sh", "-c", "sleep 1; {storage_up}; trap '{storage_down}; exit 0' TERM; while true; do sleep 0.1; done"]
        readinessProbe: {{exec: {{command: ["grep", "-q", "storage-started", "{order}"]}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: init-db}}
spec:
  nodeName: hpc-2
  runtimeClassName: process
  restartPolicy: Never
  containers: [{{name: init, image: init, command: ["sh", "-c", "sleep 1; {init_done}"]}}]
"#,
        app_up = log("app-started"),
        app_down = log("app-stopped"),
        storage_up = log("storage-started"),
        storage_down = log("storage-stopped"),
        init_done = log("init-done"),
        order = order.display(),
    );
    server.apply_stdin(&chain, &[]);
    let waiting = wait_for("app to wait for its dependencies", Duration::from_secs(10), || {
        let out = server.kubectl_ok(&[
            "get",
            "pod",
            "app",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    assert!(waiting.contains("storage=Ready"), "{waiting}");
    let table = server.kubectl_ok(&["get", "pod", "app"]);
    assert!(table.contains("WaitingForDependencies"), "{table}");
    wait_for("the whole chain to run", Duration::from_secs(60), || {
        std::fs::read_to_string(&order).ok().filter(|o| o.contains("app-started"))
    });
    let started = std::fs::read_to_string(&order).expect("order");
    assert_eq!(started.lines().collect::<Vec<_>>(), ["init-done", "storage-started", "app-started"], "{started}");

    // A cycle is refused at admission, naming it.
    let refused = server.kubectl_err(&["annotate", "pod", "init-db", "axle.dev/depends-on=app=Running"]);
    assert!(refused.contains("dependency cycle init-db -> app -> storage -> init-db"), "{refused}");

    // Deleting the set stops the dependent first, even when named last.
    server.kubectl_ok(&["delete", "deployment/storage", "pod/app", "--wait=false"]);
    wait_for("both to stop", Duration::from_secs(30), || {
        std::fs::read_to_string(&order).ok().filter(|o| o.contains("app-stopped") && o.contains("storage-stopped"))
    });
    let stopped = std::fs::read_to_string(&order).expect("order");
    let position = |what: &str| stopped.find(what).unwrap_or(usize::MAX);
    assert!(position("app-stopped") < position("storage-stopped"), "{stopped}");
}

#[test]
fn a_server_killed_mid_rollout_finishes_it_without_extra_pods() {
    let server = Server::start();
    let _hpc1 = Agent::start(&server, "hpc-1", 1);
    let deployment = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: slow}
spec:
  replicas: 3
  minReadySeconds: 2
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: slow}}
  template:
    metadata: {labels: {app: slow}}
    spec:
      nodeName: hpc-1
      runtimeClassName: process
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: v1, command: ["sh", "-c", "exec sleep 1000"]}]
"#;
    server.apply_stdin(deployment, &[]);
    assert!(rollout_status(&server, "deployment/slow").contains("successfully rolled out"));
    server.kubectl_ok(&["set", "image", "deployment/slow", "c=v2"]);
    wait_for("the rollout to be under way", Duration::from_secs(20), || {
        pods(&server, "app%3Dslow").iter().any(|p| p["spec"]["containers"][0]["image"] == "v2").then_some(())
    });
    let dir = server.crash();
    let server = Server::start_in(dir);
    assert!(rollout_status(&server, "deployment/slow").contains("successfully rolled out"));
    wait_for("exactly three new pods", Duration::from_secs(30), || {
        let all = pods(&server, "app%3Dslow");
        (all.len() == 3 && all.iter().all(|p| p["spec"]["containers"][0]["image"] == "v2")).then_some(())
    });
    let replicasets = server.kubectl_ok(&["get", "rs", "-o", "jsonpath={range .items[*]}{.spec.replicas} {end}"]);
    let mut counts: Vec<&str> = replicasets.split_whitespace().collect();
    counts.sort();
    assert_eq!(counts, ["0", "3"], "one ReplicaSet per revision, the old one scaled to zero");
}

#[test]
fn daemonsets_run_one_pod_per_matching_node_and_roll() {
    let server = Server::start();
    let _hpc1 = Agent::start(&server, "hpc-1", 1);
    let _hpc2 = Agent::start(&server, "hpc-2", 1);
    wait_for("both nodes to register", Duration::from_secs(20), || {
        (server.kubectl_ok(&["get", "nodes", "--no-headers"]).matches(" Ready ").count() == 2).then_some(())
    });
    server.kubectl_ok(&["taint", "node", "hpc-2", "dedicated=adas:NoSchedule"]);
    let ds = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: logger}
spec:
  selector: {matchLabels: {app: logger}}
  template:
    metadata: {labels: {app: logger}}
    spec:
      runtimeClassName: process
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: v1, command: ["sh", "-c", "exec sleep 1000"]}]
"#;
    server.apply_stdin(ds, &[]);
    assert!(rollout_status(&server, "daemonset/logger").contains("successfully rolled out"));
    let nodes: Vec<String> =
        pods(&server, "app%3Dlogger").iter().filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from)).collect();
    assert_eq!(nodes, ["hpc-1"], "the tainted node gets no pod");
    // Tolerating the taint adds the second node; the update rolls every pod.
    server.kubectl_ok(&[
        "patch",
        "daemonset/logger",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]}}}}"#,
    ]);
    assert!(rollout_status(&server, "daemonset/logger").contains("successfully rolled out"));
    wait_for("one updated pod per node", Duration::from_secs(30), || {
        let mut nodes: Vec<String> = pods(&server, "app%3Dlogger")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| p["spec"]["tolerations"].to_string().contains("dedicated"))
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from))
            .collect();
        nodes.sort();
        (nodes == ["hpc-1", "hpc-2"]).then_some(())
    });
}
